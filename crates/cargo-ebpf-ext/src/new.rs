//! `new NAME`: a new extension repository (its own workspace): a program type with a helper,
//! a hook, the driver glue, host tests in both modes, `.inx`, `.wprp` and `.guid`, fresh GUIDs,
//! a README, the lints for `unsafe` code and the SDK's minimum Rust version, and the SDK
//! pinned by the tag this tool was installed from. Inside an existing workspace, the same
//! driver crate becomes a member of it instead ([`add_member`]): listed in the root manifest's
//! `members`, the SDK pinned as the workspace already pins it, and no file of its own that
//! belongs to the workspace (`.gitignore`, `[workspace]`, the README).

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::drivers::toml_string;
use crate::prereqs::{Tool, command};

/// Where the SDK crates come from in the new repository's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// `git = URL, tag = TAG`: what a repository that pins the SDK uses.
    Git {
        /// Repository URL.
        url: String,
        /// Tag.
        tag: String,
    },
    /// `path = ROOT/crates/<crate>`: a checkout of the SDK (for trying the SDK itself).
    Path(PathBuf),
}

impl Sdk {
    /// This SDK as the manifest in `dir` names it: a checkout by a path relative to `dir` (a
    /// manifest holds no machine's absolute paths), a git pin as it is.
    /// The path goes between the two folders as they lie on disk (symbolic links resolved),
    /// which is how cargo follows it: worked out from the names as typed, `link/ext` with
    /// `link` a link to `/a/b` would get `../../sdk`, read from `/a/b/ext` as `/a/sdk`.
    fn seen_from(&self, dir: &Path) -> Sdk {
        match (self, std::path::absolute(dir)) {
            (Sdk::Path(root), Ok(dir)) if root.is_absolute() => {
                Sdk::Path(relative_path(&physical(&dir), &physical(root)))
            }
            _ => self.clone(),
        }
    }

    /// A checkout of the SDK at `root` (absolute): refused unless it holds the facade
    /// crate's manifest, so a mistyped `--sdk-path` fails here rather than at the first build.
    ///
    /// # Errors
    /// If `root/crates/ebpf-extension-common/Cargo.toml` is not a file.
    pub fn checkout(root: PathBuf) -> Result<Sdk> {
        let facade = root
            .join("crates")
            .join("ebpf-extension-common")
            .join("Cargo.toml");
        if !facade.is_file() {
            bail!(
                "--sdk-path {}: not a checkout of the SDK (it has no {})",
                root.display(),
                facade.display()
            );
        }
        Ok(Sdk::Path(root))
    }

    /// The dependency table of `krate`.
    fn dependency(&self, krate: &str) -> String {
        match self {
            Sdk::Git { url, tag } => format!(
                "{{ git = {}, tag = {} }}",
                toml_string(url),
                toml_string(tag)
            ),
            Sdk::Path(root) => format!(
                "{{ path = {} }}",
                toml_string(&root.join("crates").join(krate).display().to_string())
            ),
        }
    }

    /// The command that installs the `cargo ebpf-ext` of this SDK.
    fn install_line(&self) -> String {
        match self {
            Sdk::Git { url, tag } => {
                format!("cargo install --locked --git {url} --tag {tag} cargo-ebpf-ext")
            }
            Sdk::Path(root) => format!(
                "cargo install --locked --path {}",
                root.join("crates").join("cargo-ebpf-ext").display()
            ),
        }
    }

    /// The SDK this tool was installed from: `cargo install --git URL --tag TAG` records
    /// `(git+URL?tag=TAG#commit)` in `$CARGO_HOME/.crates2.json`.
    ///
    /// # Errors
    /// If the record is missing or not a tagged git install; the message says where it
    /// looked and which options to pass instead.
    pub fn installed() -> Result<Sdk> {
        let beside = Self::record_beside_exe();
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|h| h.join(".crates2.json"));
        let records: Vec<PathBuf> = beside.into_iter().chain(home).collect();
        records
            .iter()
            .find_map(|r| Self::from_crates2(&fs::read_to_string(r).unwrap_or_default()))
            .with_context(|| {
                format!(
                    "no tagged git install of cargo-ebpf-ext recorded in {}; pass --sdk-git URL --sdk-tag TAG (or --sdk-path for a checkout)",
                    records
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )
            })
    }

    /// Cargo's install record of the running executable: the install root is the folder
    /// above `bin/cargo-ebpf-ext` (`--root`, or CARGO_HOME).
    fn record_beside_exe() -> Option<PathBuf> {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join(".crates2.json")))
    }

    /// The SDK the running executable was installed from, by the install record beside it
    /// only: `None` for a tool run from a build folder, whatever else is installed.
    #[must_use]
    pub fn of_this_tool() -> Option<Sdk> {
        Self::from_crates2(&fs::read_to_string(Self::record_beside_exe()?).ok()?)
    }

    /// Reads the source of `cargo-ebpf-ext` from `.crates2.json`'s text.
    #[must_use]
    pub fn from_crates2(text: &str) -> Option<Sdk> {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        json["installs"].as_object()?.keys().find_map(|key| {
            let source = key.strip_prefix("cargo-ebpf-ext ")?;
            let source = source.split_once("(git+")?.1.trim_end_matches(')');
            let (url, rest) = source.split_once("?tag=")?;
            let tag = rest.split('#').next()?;
            Some(Sdk::Git {
                url: url.to_owned(),
                tag: tag.to_owned(),
            })
        })
    }
}

impl Sdk {
    /// Why this tool, installed from `installed`, must not build a workspace that pins the SDK
    /// as `pinned`: the import libraries it generates come from its own copy of the kernel
    /// declarations (`ebpf-ext-sys`), and its image loading and export from its own usersim and
    /// core-sim, so a tool of another tag would build and check the drivers against another
    /// SDK than the one they link. `None` when both are the same git URL and tag (a trailing
    /// `/` or `.git` aside), or either is not a git pin (a checkout is the user's to keep in
    /// step).
    #[must_use]
    pub fn mismatch(installed: &Sdk, pinned: &Sdk) -> Option<String> {
        let (
            Sdk::Git {
                url: tool_url,
                tag: tool_tag,
            },
            Sdk::Git { url, tag },
        ) = (installed, pinned)
        else {
            return None;
        };
        let same = |a: &str, b: &str| {
            let plain = |u: &str| u.trim_end_matches('/').trim_end_matches(".git").to_owned();
            plain(a) == plain(b)
        };
        (tool_tag != tag || !same(tool_url, url)).then(|| {
            format!(
                "this workspace pins the SDK at {url} tag {tag}, but cargo-ebpf-ext was \
                 installed from {tool_url} tag {tool_tag}; install the tool of the same tag:\n    \
                 cargo install --locked --git {url} --tag {tag} cargo-ebpf-ext"
            )
        })
    }

    /// How a workspace already pins the SDK, from `cargo metadata --no-deps`'s JSON: the git
    /// URL and tag, or the checkout, of the first SDK crate a member depends on (or the
    /// workspace's own `ebpf-extension-common`, in a checkout of the SDK).
    #[must_use]
    pub fn from_workspace(metadata: &Value) -> Option<Sdk> {
        let packages = metadata["packages"].as_array()?;
        let own = packages.iter().find_map(|p| {
            (p["name"] == "ebpf-extension-common")
                .then(|| {
                    Path::new(p["manifest_path"].as_str()?)
                        .parent()?
                        .parent()?
                        .parent()
                })
                .flatten()
                .map(|root| Sdk::Path(root.to_path_buf()))
        });
        if own.is_some() {
            return own;
        }
        packages
            .iter()
            .flat_map(|p| p["dependencies"].as_array().into_iter().flatten())
            .filter(|d| {
                d["name"]
                    .as_str()
                    .is_some_and(|n| n == "ebpf-extension-common" || n.starts_with("ebpf-ext-"))
            })
            .find_map(|d| {
                if let Some(path) = d["path"].as_str() {
                    // `ROOT/crates/<crate>`.
                    return Some(Sdk::Path(Path::new(path).parent()?.parent()?.to_path_buf()));
                }
                let source = d["source"].as_str()?.strip_prefix("git+")?;
                let (url, rest) = source.split_once("?tag=")?;
                Some(Sdk::Git {
                    url: url.to_owned(),
                    tag: rest.split('#').next()?.to_owned(),
                })
            })
    }
}

/// The workspace around `dir`: its root and `cargo metadata --no-deps`'s JSON, or `None`
/// where cargo finds none.
#[must_use]
pub fn enclosing_workspace(dir: &Path) -> Option<(PathBuf, Value)> {
    let output = command(Tool::Cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let json: Value = serde_json::from_slice(&output.stdout).ok()?;
    let root = PathBuf::from(json["workspace_root"].as_str()?);
    Some((root, json))
}

/// 16 random bytes from the operating system.
fn random_bytes() -> Result<[u8; 16]> {
    let mut bytes = [0; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes)
}

/// A fresh random (version 4) GUID as a `u128`.
fn fresh_guid() -> Result<u128> {
    let mut bytes = random_bytes()?;
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    Ok(u128::from_be_bytes(bytes))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn hyphenated(g: u128) -> String {
    let h = format!("{g:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `0x0123_4567_..._u128`-style literal for `GUID::from_u128`.
fn literal(g: u128) -> String {
    let h = format!("{g:032x}");
    format!(
        "0x{}_{}_{}_{}_{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `my-ext` → `MyExt`.
fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Library names the generated code could not use in paths (`{{lib}}::…`): the keywords of
/// Rust 2024, the crates every crate can name, and the template's own dependencies.
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "core",
    "std",
    "alloc",
    "test",
    "proc_macro",
    "tracelogging",
    "ebpf_extension_common",
    "ebpf_ext_map",
    "ebpf_ext_usersim",
    "ebpf_ext_core_sim",
    "ebpf_ext_testing",
];

/// The files of a new extension called `name` (package name), relative to its folder.
///
/// # Errors
/// If `name` is not a usable package name, or no randomness is available.
pub fn files(name: &str, sdk: &Sdk) -> Result<Vec<(PathBuf, String)>> {
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        bail!("{name:?}: use lower-case letters, digits, - and _, starting with a letter");
    }
    let lib = name.replace('-', "_");
    if lib.len() > crate::store::MAX_SECTION_NAME {
        bail!(
            "{name:?}: at most {} characters: the library name is also the program type's \
             section name in the eBPF store, whose reader skips longer ones",
            crate::store::MAX_SECTION_NAME
        );
    }
    if RESERVED.contains(&lib.as_str()) {
        bail!("{name:?}: a Rust keyword or standard crate's name cannot name the library");
    }
    let service = camel(name);
    let (program_type, attach_type, etw) = (fresh_guid()?, fresh_guid()?, fresh_guid()?);
    let random = random_bytes()?;
    // Numbers above upstream's, random so two new extensions rarely clash (`check` finds it
    // when two drivers of one workspace do).
    let bpf_prog_type = 10_000 + u32::from(u16::from_le_bytes([random[0], random[1]]));
    let bpf_attach_type = 10_000 + u32::from(u16::from_le_bytes([random[2], random[3]]));
    let tag: String = format!("{service}XXXX").chars().take(4).collect();
    let fill = |template: &str| {
        let mut text = template
            .replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{Service}}", &service)
            .replace("{{tag}}", &tag)
            .replace(
                "{{program_type}}",
                &format!("{{{}}}", hyphenated(program_type)),
            )
            .replace(
                "{{attach_type}}",
                &format!("{{{}}}", hyphenated(attach_type)),
            )
            .replace("{{program_type_u128}}", &literal(program_type))
            .replace("{{attach_type_u128}}", &literal(attach_type))
            .replace("{{etw_guid}}", &hyphenated(etw))
            .replace("{{bpf_prog_type}}", &bpf_prog_type.to_string())
            .replace("{{bpf_attach_type}}", &bpf_attach_type.to_string())
            .replace("{{rust_version}}", env!("CARGO_PKG_RUST_VERSION"))
            .replace("{{sdk_pin}}", &sdk.dependency("ebpf-extension-common"))
            .replace("{{install_tool}}", &sdk.install_line());
        for krate in [
            "ebpf-extension-common",
            "ebpf-ext-usersim",
            "ebpf-ext-core-sim",
            "ebpf-ext-testing",
        ] {
            text = text.replace(&format!("{{{{sdk:{krate}}}}}"), &sdk.dependency(krate));
        }
        text
    };
    Ok(vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("../template/Cargo.toml.in")),
        ),
        (
            "src/lib.rs".into(),
            fill(include_str!("../template/lib.rs.in")),
        ),
        (
            "tests/both_modes.rs".into(),
            fill(include_str!("../template/both_modes.rs.in")),
        ),
        (
            format!("{lib}.inx").into(),
            fill(include_str!("../template/inx.in")),
        ),
        (
            format!("{lib}.wprp").into(),
            fill(include_str!("../template/wprp.in")),
        ),
        (
            format!("{lib}.guid").into(),
            format!("{}\n", hyphenated(etw)),
        ),
        (".gitignore".into(), "/target\n".into()),
        (
            "README.md".into(),
            fill(include_str!("../template/README.md.in")),
        ),
    ])
}

/// What the template's manifest says to be a workspace of its own.
const OWN_WORKSPACE: &str =
    "\n# Its own workspace (`cargo ebpf-ext` finds it with cargo metadata).\n[workspace]\n";

/// The files of a new extension called `name` as a member of an existing workspace: those of
/// [`files`] without what belongs to the workspace (the manifest's `[workspace]`, `.gitignore`,
/// and the README, which speaks of the repository and its SDK pin).
///
/// # Errors
/// As [`files`].
pub fn member_files(name: &str, sdk: &Sdk) -> Result<Vec<(PathBuf, String)>> {
    let mut files = files(name, sdk)?;
    files.retain(|(path, _)| path != Path::new(".gitignore") && path != Path::new("README.md"));
    for (path, text) in &mut files {
        if path == Path::new("Cargo.toml") {
            let Some(at) = text.find(OWN_WORKSPACE) else {
                bail!("the template's Cargo.toml no longer ends with its own [workspace]");
            };
            text.truncate(at);
        }
    }
    Ok(files)
}

/// `text` (a root `Cargo.toml`) with `member` (a `/`-separated path relative to the root)
/// in `[workspace] members`, or `None` where a member pattern already covers it (`drivers/*`).
///
/// # Errors
/// If the manifest has no `[workspace]` table or a `members` array this cannot read.
pub fn with_member(text: &str, member: &str) -> Result<Option<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(table) = lines
        .iter()
        .position(|l| strip_comment(l).trim() == "[workspace]")
    else {
        bail!(
            "the workspace's Cargo.toml has no [workspace] table: it is a package of its own; \
             run `cargo ebpf-ext new --standalone` for a repository of the extension's own, or \
             add a [workspace] table to make the new extension its member"
        );
    };
    let end = lines[table + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| table + 1 + i);
    let entry = toml_string(member);
    let Some(start) = (table + 1..end).find(|&i| {
        let l = lines[i].trim_start();
        l.starts_with("members") && l["members".len()..].trim_start().starts_with('=')
    }) else {
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        out.insert(table + 1, format!("members = [{entry}]"));
        return Ok(Some(out.join("\n") + "\n"));
    };
    // The array, from `members = [` to its `]` (one line or several).
    let Some(close) = (start..end).find(|&i| strip_comment(lines[i]).contains(']')) else {
        bail!("the workspace's `members` array has no closing `]`");
    };
    let array: String = (start..=close)
        .map(|i| strip_comment(lines[i]))
        .collect::<Vec<_>>()
        .join(" ");
    let inner = array
        .split_once('[')
        .and_then(|(_, rest)| rest.rsplit_once(']'))
        .map(|(inner, _)| inner)
        .context("the workspace's `members` is not an array")?;
    let patterns: Vec<&str> = inner
        .split(',')
        .map(|p| p.trim().trim_matches('"'))
        .filter(|p| !p.is_empty())
        .collect();
    if patterns.iter().any(|p| covers(p, member)) {
        return Ok(None);
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    if start == close {
        let line = &out[close];
        // The array's `]`, not one in a comment after it.
        let at = strip_comment(line)
            .rfind(']')
            .context("the workspace's `members` has no `]`")?;
        let before = line[..at].trim_end();
        let separator = if before.ends_with('[') || before.ends_with(',') {
            ""
        } else {
            ", "
        };
        out[close] = format!("{before}{separator}{entry}{}", &line[at..]);
    } else {
        let indent: String = lines[start + 1]
            .chars()
            .take_while(|c| c.is_whitespace())
            .collect();
        let indent = if indent.is_empty() {
            "    ".to_owned()
        } else {
            indent
        };
        // The last entry before the `]` line gets its comma if it lacks one.
        if let Some(last) = (start + 1..close)
            .rev()
            .find(|&i| !strip_comment(lines[i]).trim().is_empty())
        {
            let kept = strip_comment(lines[last]).trim_end().to_owned();
            if !kept.ends_with(',') && !kept.ends_with('[') {
                out[last] = format!("{kept},{}", &lines[last][kept.len()..]);
            }
        }
        out.insert(close, format!("{indent}{entry},"));
    }
    Ok(Some(out.join("\n") + "\n"))
}

/// A TOML line without its comment (no `#` inside the strings this reads).
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(code, _)| code)
}

/// Whether the member pattern `pattern` (cargo's: a path, `*` for one component) names
/// `member`.
fn covers(pattern: &str, member: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let member: Vec<&str> = member.split('/').collect();
    pattern.len() == member.len()
        && pattern.iter().zip(&member).all(|(p, m)| {
            p == m
                || p.split_once('*').is_some_and(|(prefix, suffix)| {
                    !suffix.contains('*')
                        && m.len() >= prefix.len() + suffix.len()
                        && m.starts_with(prefix)
                        && m.ends_with(suffix)
                })
        })
}

/// Writes a new extension called `name` into `dir`, under the workspace `root`, and lists
/// it in the root manifest's `members` (unless a pattern there covers it already).
///
/// # Errors
/// If `dir` holds anything (as [`create`]) or is not under `root`, if the root manifest
/// cannot be read or edited, or as [`files`].
pub fn add_member(name: &str, root: &Path, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>> {
    fresh_folder(dir)?;
    let relative = physical(dir)
        .strip_prefix(physical(root))
        .map(Path::to_path_buf);
    let relative = relative.with_context(|| {
        format!(
            "{} is not under the workspace root {}; a member must be",
            dir.display(),
            root.display()
        )
    })?;
    let member = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let manifest = root.join("Cargo.toml");
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("read {}", manifest.display()))?;
    // Checked before any file is written, so a manifest this cannot edit changes nothing.
    let edited = with_member(&text, &member)
        .with_context(|| format!("add {member} to {}", manifest.display()))?;
    let mut written = write_files(dir, member_files(name, &sdk.seen_from(dir))?)?;
    if let Some(edited) = edited {
        fs::write(&manifest, edited).with_context(|| format!("write {}", manifest.display()))?;
        written.push(manifest);
    }
    Ok(written)
}

fn write_files(dir: &Path, files: Vec<(PathBuf, String)>) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes a new extension called `name` into `dir` (which must not exist yet, or hold nothing
/// but a `.git`: a clone of an empty repository).
///
/// # Errors
/// If `dir` holds anything else, or as [`files`].
pub fn create(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>> {
    fresh_folder(dir)?;
    write_files(dir, files(name, &sdk.seen_from(dir))?)
}

/// Refuses a `dir` that exists and holds anything but a `.git` (so nothing is overwritten):
/// a missing folder, an empty one and a clone of an empty repository are fresh.
fn fresh_folder(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let entries = fs::read_dir(dir).with_context(|| format!("{} exists", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        if entry.file_name() != ".git" {
            bail!(
                "{} exists and holds {}; pick a new folder (an empty one, or a clone of an empty repository, will do)",
                dir.display(),
                entry.file_name().to_string_lossy()
            );
        }
    }
    Ok(())
}

/// `path` with `.` dropped and each `..` taking back the folder before it, or staying at the
/// root (lexically: as the path reads, symbolic links not followed).
fn normalised(path: &Path) -> Vec<std::path::Component<'_>> {
    use std::path::Component;
    let mut parts: Vec<Component<'_>> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            Component::ParentDir if matches!(parts.last(), Some(Component::RootDir)) => {}
            other => parts.push(other),
        }
    }
    parts
}

/// `path` (absolute) as it lies on disk: its nearest existing ancestor with symbolic links
/// resolved, then the rest of it (a folder `new` is about to create does not exist yet);
/// `path` itself if not even the root resolves.
#[must_use]
pub fn physical(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |path, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// `target` as a path from the folder `from` (both absolute): `..` up to their closest common
/// folder, then down to `target`.
fn relative_path(from: &Path, target: &Path) -> PathBuf {
    let from = normalised(from);
    let target = normalised(target);
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| "..").collect();
    path.extend(&target[common..]);
    path
}

/// `path` made absolute (against the current folder) with its `.` and `..` resolved by name,
/// as a user means `--path ../x`: `Path::starts_with` compares components, so
/// `/ws/../x` would pass for a folder inside `/ws`.
///
/// # Errors
/// If the current folder cannot be read.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    Ok(normalised(&absolute).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_installed_from_is_read_from_cargos_record() {
        let text = r#"{"installs":{"cargo-ebpf-ext 0.1.0 (git+file:///srv/git/sdk.git?tag=v0.1.0#0123abcd)":{}}}"#;
        assert_eq!(
            Sdk::from_crates2(text),
            Some(Sdk::Git {
                url: "file:///srv/git/sdk.git".into(),
                tag: "v0.1.0".into()
            })
        );
        assert_eq!(
            Sdk::from_crates2(r#"{"installs":{"cargo-ebpf-ext 0.1.0 (path+file:///x)":{}}}"#),
            None
        );
    }

    #[test]
    fn a_member_is_added_to_the_workspace_members_once() {
        let one_line = "[workspace]\nmembers = [\"crates/a\"]\nresolver = \"3\"\n";
        assert_eq!(
            with_member(one_line, "drivers/x").expect("edit").as_deref(),
            Some("[workspace]\nmembers = [\"crates/a\", \"drivers/x\"]\nresolver = \"3\"\n")
        );
        let several = "[package]\nname = \"p\"\n\n[workspace]\nmembers = [\n    \"crates/a\" # first\n]\n\n[workspace.dependencies]\n";
        assert_eq!(
            with_member(several, "drivers/x").expect("edit").as_deref(),
            Some(
                "[package]\nname = \"p\"\n\n[workspace]\nmembers = [\n    \"crates/a\", # first\n    \"drivers/x\",\n]\n\n[workspace.dependencies]\n"
            )
        );
        let none = "[package]\nname = \"p\"\n[workspace]\n";
        assert_eq!(
            with_member(none, "drivers/x").expect("edit").as_deref(),
            Some("[package]\nname = \"p\"\n[workspace]\nmembers = [\"drivers/x\"]\n")
        );
        let glob = "[workspace]\nmembers = [\"crates/*\", \"drivers/*\"]\n";
        assert_eq!(with_member(glob, "drivers/x").expect("edit"), None);
        let own_package = with_member("[package]\nname = \"p\"\n", "drivers/x")
            .expect_err("no workspace to add to");
        assert!(
            own_package.to_string().contains("--standalone"),
            "{own_package}"
        );
        // A comment after the array or the table header is not part of them.
        let commented = "[workspace] # the root\nmembers = [\"crates/a\"] # see [notes]\n";
        assert_eq!(
            with_member(commented, "drivers/x")
                .expect("edit")
                .as_deref(),
            Some("[workspace] # the root\nmembers = [\"crates/a\", \"drivers/x\"] # see [notes]\n")
        );
        assert!(covers("drivers/sample-*", "drivers/sample-x"));
        assert!(!covers("drivers/*", "drivers/x/y"));
    }

    #[test]
    fn a_member_pins_the_sdk_as_its_workspace_does_and_has_no_workspace_files() {
        let metadata: Value = serde_json::from_str(
            r#"{"packages": [{"name": "a", "manifest_path": "/w/crates/a/Cargo.toml",
                "dependencies": [{"name": "tracelogging", "source": "registry+https://github.com/rust-lang/crates.io-index"},
                                 {"name": "ebpf-extension-common", "source": "git+https://example.invalid/sdk?tag=v1.2.3"}]}]}"#,
        )
        .expect("metadata");
        let sdk = Sdk::from_workspace(&metadata).expect("the workspace's pin");
        assert_eq!(
            sdk,
            Sdk::Git {
                url: "https://example.invalid/sdk".into(),
                tag: "v1.2.3".into()
            }
        );
        let files = member_files("my-ext", &sdk).expect("files");
        assert!(files.iter().all(|(p, _)| p != Path::new(".gitignore")));
        let manifest = &files
            .iter()
            .find(|(p, _)| p == Path::new("Cargo.toml"))
            .expect("manifest")
            .1;
        assert!(!manifest.contains("[workspace]"), "{manifest}");
        assert!(manifest.contains(r#"tag = "v1.2.3""#));
        let checkout: Value = serde_json::from_str(
            r#"{"packages": [{"name": "ebpf-extension-common", "manifest_path": "/sdk/crates/ebpf-extension-common/Cargo.toml", "dependencies": []}]}"#,
        )
        .expect("metadata");
        assert_eq!(
            Sdk::from_workspace(&checkout),
            Some(Sdk::Path("/sdk".into()))
        );
    }

    #[test]
    fn a_new_repository_has_a_readme_naming_its_pin_and_the_kernel_lints() {
        let sdk = Sdk::Git {
            url: "https://example.invalid/sdk".into(),
            tag: "v9.9.9".into(),
        };
        let all = files("my-ext", &sdk).expect("files");
        let file = |name: &str| {
            all.iter()
                .find(|(p, _)| p == Path::new(name))
                .map(|(_, t)| t)
        };
        let readme = file("README.md").expect("a README");
        assert!(
            readme.contains(
                "cargo install --locked --git https://example.invalid/sdk --tag v9.9.9 cargo-ebpf-ext"
            ) && readme.contains(r#"`{ git = "https://example.invalid/sdk", tag = "v9.9.9" }`"#)
                && readme.contains("target/driver/my_ext.sys"),
            "{readme}"
        );
        let manifest = file("Cargo.toml").expect("a manifest");
        for line in [
            "undocumented_unsafe_blocks = \"deny\"",
            "unsafe_op_in_unsafe_fn = \"deny\"",
            &format!("rust-version = \"{}\"", env!("CARGO_PKG_RUST_VERSION")),
        ] {
            assert!(manifest.contains(line), "{line}: {manifest}");
        }
        let checkout = Sdk::Path("/home/b/sdk".into()).seen_from(Path::new("/home/a/ext"));
        let from_checkout = files("my-ext", &checkout).expect("files");
        assert!(
            from_checkout
                .iter()
                .any(|(p, t)| p == Path::new("README.md")
                    && t.contains(
                        "cargo install --locked --path ../../b/sdk/crates/cargo-ebpf-ext"
                    ))
        );
        let member = member_files("my-ext", &sdk).expect("member files");
        assert!(
            member.iter().all(|(p, _)| p != Path::new("README.md")),
            "a member's workspace has its own README"
        );
        assert!(
            member
                .iter()
                .any(|(p, t)| p == Path::new("Cargo.toml") && t.contains("[lints.clippy]")),
            "a member keeps its lints"
        );
    }

    #[test]
    fn a_new_extension_has_fresh_guids_and_no_placeholder_left() {
        let sdk = Sdk::Git {
            url: "https://example.invalid/sdk".into(),
            tag: "v9.9.9".into(),
        };
        let a = files("my-ext", &sdk).expect("files");
        let b = files("my-ext", &sdk).expect("files");
        for (path, text) in &a {
            assert!(!text.contains("{{"), "{}: {text}", path.display());
        }
        let manifest = &a[0].1;
        assert!(manifest.contains(
            r#"ebpf-extension-common = { git = "https://example.invalid/sdk", tag = "v9.9.9" }"#
        ));
        assert_ne!(a[0].1, b[0].1, "fresh GUIDs each time");
        let names: Vec<String> = a.iter().map(|(p, _)| p.display().to_string()).collect();
        for file in ["my_ext.inx", "my_ext.wprp", "my_ext.guid", "src/lib.rs"] {
            assert!(names.iter().any(|n| n == file), "{names:?}");
        }
        assert!(files("My Ext", &sdk).is_err());
        let git = |url: &str, tag: &str| Sdk::Git {
            url: url.into(),
            tag: tag.into(),
        };
        let tool = git("https://example.invalid/sdk.git", "v1.2.0");
        assert_eq!(
            Sdk::mismatch(&tool, &git("https://example.invalid/sdk/", "v1.2.0")),
            None
        );
        let other = Sdk::mismatch(&tool, &git("https://example.invalid/sdk", "v1.3.0"))
            .expect("another tag");
        assert!(
            other.contains("--tag v1.3.0 cargo-ebpf-ext") && other.contains("tag v1.2.0"),
            "{other}"
        );
        assert!(Sdk::mismatch(&tool, &git("https://example.invalid/fork", "v1.2.0")).is_some());
        assert_eq!(Sdk::mismatch(&tool, &Sdk::Path("/sdk".into())), None);
        assert_eq!(
            relative_path(Path::new("/ws/drivers/my-ext"), Path::new("/ws")),
            Path::new("../..")
        );
        assert_eq!(
            relative_path(Path::new("/home/a/ext"), Path::new("/home/b/sdk")),
            Path::new("../../b/sdk")
        );
        assert_eq!(
            relative_path(Path::new("/home/u/work/../ext"), Path::new("/home/u/./sdk")),
            Path::new("../sdk"),
            "`..` and `.` as the path reads"
        );
        let checkout = Sdk::Path("/home/b/sdk".into()).seen_from(Path::new("/home/a/ext"));
        assert_eq!(
            checkout.dependency("ebpf-ext-map"),
            r#"{ path = "../../b/sdk/crates/ebpf-ext-map" }"#
        );
        let odd = Sdk::Git {
            url: r#"file:///a "b"\c"#.into(),
            tag: "v1".into(),
        };
        assert_eq!(
            odd.dependency("ebpf-ext-map"),
            r#"{ git = "file:///a \"b\"\\c", tag = "v1" }"#,
            "TOML escapes"
        );
        assert_eq!(camel("my-ext_two"), "MyExtTwo");
        let longest = "e".repeat(crate::store::MAX_SECTION_NAME);
        assert!(files(&longest, &sdk).is_ok());
        let error = files(&format!("{longest}x"), &sdk).expect_err("too long");
        assert!(error.to_string().contains("section name"), "{error}");
        for reserved in ["core", "std", "test", "async", "self"] {
            assert!(files(reserved, &sdk).is_err(), "{reserved}");
        }
    }

    #[test]
    fn a_path_with_dot_dot_is_resolved_before_it_is_compared() {
        let ws = Path::new("/ws");
        let outside = super::absolute(Path::new("/ws/../my-ext")).expect("absolute");
        assert_eq!(outside, Path::new("/my-ext"));
        assert!(!outside.starts_with(ws), "outside the workspace");
        let inside = super::absolute(Path::new("/ws/./drivers/../drivers/x")).expect("absolute");
        assert_eq!(inside, Path::new("/ws/drivers/x"));
        assert!(
            Path::new("/ws/../my-ext").starts_with(ws),
            "what the check compared before"
        );
        assert_eq!(
            super::absolute(Path::new("/../x")).expect("absolute"),
            Path::new("/x"),
            "`..` at the root stays there"
        );
    }
}
