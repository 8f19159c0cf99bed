//! `new NAME`: a new extension repository (its own workspace): a program type with a helper,
//! a hook, the driver glue, host tests in both modes, `.inx`, `.wprp` and `.guid`, fresh GUIDs,
//! and the SDK pinned by the tag this tool was installed from.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

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
    /// The dependency table of `krate`.
    fn dependency(&self, krate: &str) -> String {
        match self {
            Sdk::Git { url, tag } => format!("{{ git = \"{url}\", tag = \"{tag}\" }}"),
            Sdk::Path(root) => format!(
                "{{ path = \"{}\" }}",
                root.join("crates").join(krate).display()
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
        // The install root is the folder above `bin/cargo-ebpf-ext` (`--root`, or CARGO_HOME).
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join(".crates2.json")));
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
            .replace("{{bpf_attach_type}}", &bpf_attach_type.to_string());
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
    ])
}

/// Writes a new extension called `name` into `dir` (which must not exist yet).
///
/// # Errors
/// If `dir` exists, or as [`files`].
pub fn create(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>> {
    if dir.exists() {
        bail!("{} exists; pick a new folder", dir.display());
    }
    let mut written = Vec::new();
    for (path, text) in files(name, sdk)? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_installed_from_is_read_from_cargos_record() {
        let text = r#"{"installs":{"cargo-ebpf-ext 0.1.0 (git+file:///tmp/sdk.git?tag=v0.1.0#0123abcd)":{}}}"#;
        assert_eq!(
            Sdk::from_crates2(text),
            Some(Sdk::Git {
                url: "file:///tmp/sdk.git".into(),
                tag: "v0.1.0".into()
            })
        );
        assert_eq!(
            Sdk::from_crates2(r#"{"installs":{"cargo-ebpf-ext 0.1.0 (path+file:///x)":{}}}"#),
            None
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
        assert_eq!(camel("my-ext_two"), "MyExtTwo");
    }
}
