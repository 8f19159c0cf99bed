//! The one list of prerequisites (`crates/cargo-ebpf-ext/prerequisites.tsv`) and the only
//! place cargo-ebpf-ext (and xtask, its client) starts a program.
//!
//! Every program either runs is a [`Tool`], and every `Tool` names its line of the list, so a
//! program cannot be run without saying which package brings it. `.ci/run` installs the list's
//! Debian lines before xtask is built (xtask itself needs the host C linker); `cargo xtask
//! prereqs --install` (or `cargo ebpf-ext prereqs --install`) installs the rest; the README's
//! table is rendered from the same lines.

use core::fmt::Write as _;
use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::exec::run;
use std::path::Path;

/// The list itself, compiled in (the build reruns when it changes).
const LIST: &str = include_str!("../prerequisites.tsv");

/// Where a prerequisite comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Debian package (`apt-get install`).
    Debian,
    /// A rustup toolchain component (`rustup component add`).
    Rustup,
    /// A crate with a binary (`cargo install --locked`).
    Crate,
    /// A Python package, installed into the image check's virtual environment.
    Pypi,
    /// Only on a Windows host (or from its WDK); never needed on Linux.
    Windows,
}

impl Source {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "debian" => Self::Debian,
            "rustup" => Self::Rustup,
            "crate" => Self::Crate,
            "pypi" => Self::Pypi,
            "windows" => Self::Windows,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Debian => "Debian package",
            Self::Rustup => "rustup",
            Self::Crate => "crates.io (`cargo install --locked`)",
            Self::Pypi => "PyPI (venv under `target/driver/pyenv`)",
            Self::Windows => "Windows only",
        }
    }
}

/// Who needs a line of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Building, signing, packaging and testing any extension's drivers (what
    /// `cargo ebpf-ext build` needs).
    Drivers,
    /// This SDK workspace's own tests and tools too (fuzzing, lints, the layout test, the
    /// samples' BPF programs, the fresh-machine check).
    Sdk,
}

impl Scope {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "drivers" => Self::Drivers,
            "sdk" => Self::Sdk,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Drivers => "every extension",
            Self::Sdk => "this workspace",
        }
    }
}

/// One line of the list.
#[derive(Debug, Clone, Copy)]
pub struct Prerequisite {
    /// Where it comes from.
    pub source: Source,
    /// What to install: a package, component or crate name (`cargo-web`).
    pub name: &'static str,
    /// The file or program the project uses from it (`/usr/bin/cargo`).
    pub provides: &'static str,
    /// What uses it.
    pub purpose: &'static str,
    /// Who needs it.
    pub scope: Scope,
}

/// Every line of the list, in order.
///
/// # Panics
/// If the list is malformed; a unit test parses it, so a malformed list never ships.
#[must_use]
pub fn list() -> Vec<Prerequisite> {
    LIST.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            let [source, name, provides, purpose, scope] = fields[..] else {
                panic!("prerequisites.tsv: not five tab-separated fields: {line:?}");
            };
            Prerequisite {
                source: Source::parse(source)
                    .unwrap_or_else(|| panic!("prerequisites.tsv: unknown source {source:?}")),
                name,
                provides,
                purpose,
                scope: Scope::parse(scope)
                    .unwrap_or_else(|| panic!("prerequisites.tsv: unknown scope {scope:?}")),
            }
        })
        .collect()
}

/// A program cargo-ebpf-ext or xtask runs. Each names the line of the list that brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The cargo running this tool (`$CARGO`), from the rustup toolchain.
    Cargo,
    /// `rustup` itself (adds components).
    Rustup,
    /// Debian's `/usr/bin/cargo`, for the driver builds.
    SystemCargo,
    /// Debian's `/usr/bin/rustc`, for the driver builds.
    SystemRustc,
    /// `llvm-dlltool`.
    Dlltool,
    /// `osslsigncode`.
    Osslsigncode,
    /// `openssl`.
    Openssl,
    /// Debian's `python3` (makes the image check's virtual environment).
    Python3,
    /// The Python of the image check's virtual environment, with `pefile`.
    PefilePython,
    /// `dpkg-query`.
    DpkgQuery,
    /// `apt-get`.
    AptGet,
    /// `id`.
    Id,
    /// `git`.
    Git,
    /// `powershell` (Windows hosts only).
    Powershell,
    /// `inf2cat` (Windows WDK only).
    Inf2cat,
}

impl Tool {
    /// Every tool, for the test that each has its line.
    #[cfg(test)]
    const ALL: [Self; 15] = [
        Self::Cargo,
        Self::Rustup,
        Self::SystemCargo,
        Self::SystemRustc,
        Self::Dlltool,
        Self::Osslsigncode,
        Self::Openssl,
        Self::Python3,
        Self::PefilePython,
        Self::DpkgQuery,
        Self::AptGet,
        Self::Id,
        Self::Git,
        Self::Powershell,
        Self::Inf2cat,
    ];

    /// The `name` column of the list's line that brings this tool.
    #[must_use]
    pub fn package(self) -> &'static str {
        match self {
            Self::Cargo | Self::Rustup => "rustup",
            Self::SystemCargo => "cargo-web",
            Self::SystemRustc => "rustc-web",
            Self::Dlltool => "llvm",
            Self::Osslsigncode => "osslsigncode",
            Self::Openssl => "openssl",
            Self::Python3 => "python3-venv",
            Self::PefilePython => PEFILE,
            Self::DpkgQuery => "dpkg",
            Self::AptGet => "apt",
            Self::Id => "coreutils",
            Self::Git => "git",
            Self::Powershell => "powershell",
            Self::Inf2cat => "WDK",
        }
    }

    /// The program to start.
    #[must_use]
    pub fn program(self) -> OsString {
        match self {
            Self::Cargo => std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            Self::Rustup => "rustup".into(),
            Self::SystemCargo => "/usr/bin/cargo".into(),
            Self::SystemRustc => "/usr/bin/rustc".into(),
            Self::Dlltool => "llvm-dlltool".into(),
            Self::Osslsigncode => "osslsigncode".into(),
            Self::Openssl => "openssl".into(),
            // Debian's, which the list installs, not whichever python3 is first on PATH.
            Self::Python3 if !cfg!(windows) => "/usr/bin/python3".into(),
            Self::Python3 => "python3".into(),
            // The venv's own: see [`pefile_python`].
            Self::PefilePython => "python".into(),
            Self::DpkgQuery => "dpkg-query".into(),
            Self::AptGet => "apt-get".into(),
            Self::Id => "id".into(),
            Self::Git => "git".into(),
            Self::Powershell => "powershell".into(),
            Self::Inf2cat => "inf2cat".into(),
        }
    }

    /// Its line of the list.
    ///
    /// # Panics
    /// If the list lacks it (a unit test checks every tool has its line).
    #[must_use]
    pub fn prerequisite(self) -> Prerequisite {
        list()
            .into_iter()
            .find(|p| p.name == self.package())
            .unwrap_or_else(|| {
                panic!(
                    "{self:?}: no line {:?} in prerequisites.tsv",
                    self.package()
                )
            })
    }

    /// How to get it, for error messages.
    #[must_use]
    pub fn hint(self) -> String {
        install_hint(&self.prerequisite())
    }
}

/// The pefile version the image check installs (its line of the list).
pub const PEFILE: &str = "pefile==2024.8.26";

/// A command for `tool`: with [`pefile_python`], the only `Command::new` in cargo-ebpf-ext and
/// xtask, so every program they run is on the list (a unit test checks there is no other).
#[must_use]
pub fn command(tool: Tool) -> Command {
    Command::new(tool.program())
}

/// [`Tool::PefilePython`]: the Python of the image check's virtual environment `venv`.
#[must_use]
pub fn pefile_python(venv: &Path) -> Command {
    Command::new(venv.join("bin").join("python"))
}

fn install_hint(p: &Prerequisite) -> String {
    match p.source {
        Source::Debian => format!("sudo apt-get install {}", p.name),
        Source::Rustup => format!("rustup component add {}", p.name),
        Source::Crate => format!("cargo install --locked {}", p.name),
        Source::Pypi => format!(
            "pip install {} (the image check does this in its venv)",
            p.name
        ),
        Source::Windows => format!("{} on a Windows host", p.name),
    }
}

fn debian_installed(package: &str) -> bool {
    command(Tool::DpkgQuery)
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn runs(program: impl Into<OsString>, arg: &str) -> bool {
    // Not `command`: probing for a program by name before the list says how to get it.
    let mut probe = Command::new(program.into());
    probe.arg(arg).output().is_ok_and(|o| o.status.success())
}

fn cargo_subcommand_present(name: &str) -> bool {
    cargo_subcommand_version(name).is_some()
}

/// What `cargo <sub> --version` prints, `None` if it does not run.
fn cargo_subcommand_version(name: &str) -> Option<String> {
    let sub = name.strip_prefix("cargo-").unwrap_or(name);
    command(Tool::Cargo)
        .args([sub, "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Whether a crate line is satisfied by what `cargo <sub> --version` printed: any version for
/// a line without one (`cargo-fuzz`), else exactly the pinned one (`cargo-nextest@0.9.143`
/// against `cargo-nextest 0.9.143 (...)`), so that `--install` replaces another.
fn crate_version_matches(line: &str, printed: &str) -> bool {
    line.split_once('@').is_none_or(|(_, version)| {
        printed
            .lines()
            .next()
            .is_some_and(|first| first.split_whitespace().any(|word| word == version))
    })
}

fn is_root() -> bool {
    command(Tool::Id)
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether a line is satisfied here. `None` when it does not apply to this host.
fn present(p: &Prerequisite) -> Option<bool> {
    match p.source {
        Source::Debian => Some(if has_dpkg() {
            debian_installed(p.name)
        } else {
            std::path::Path::new(p.provides).exists() || runs(p.provides, "--version")
        }),
        Source::Rustup if p.name == "rustup" => Some(runs("rustup", "--version")),
        Source::Rustup => Some(cargo_subcommand_present(p.provides)),
        Source::Crate => Some(
            cargo_subcommand_version(p.provides)
                .is_some_and(|printed| crate_version_matches(p.name, &printed)),
        ),
        // Installed on first use, into the venv under target/driver.
        Source::Pypi => None,
        Source::Windows => cfg!(windows).then(|| runs(p.provides, "/?")),
    }
}

fn has_dpkg() -> bool {
    runs("dpkg-query", "--version")
}

/// Options of `prereqs`.
#[derive(Args)]
pub struct Options {
    /// Install what is missing (Debian packages need root).
    #[arg(long)]
    pub install: bool,
    /// Include what only this SDK's own workspace needs (its tests, fuzzing, lints), not only
    /// what building and testing an extension's drivers needs. `cargo xtask prereqs` always
    /// does.
    #[arg(long)]
    pub sdk: bool,
    /// Print the list as the README's Markdown table.
    #[arg(long, conflicts_with = "install")]
    pub markdown: bool,
}

/// `prereqs [--install | --markdown]`: the state of each line, or install, or the table.
///
/// # Errors
/// As [`ensure`].
pub fn prereqs(options: &Options) -> Result<()> {
    if options.markdown {
        print!("{}", markdown());
        return Ok(());
    }
    let scope = if options.sdk {
        Scope::Sdk
    } else {
        Scope::Drivers
    };
    if options.install {
        return ensure(scope);
    }
    for p in list().into_iter().filter(|p| p.scope <= scope) {
        let state = match present(&p) {
            Some(true) => "ok",
            Some(false) => "MISSING",
            None => "n/a",
        };
        println!(
            "{state:<8} {:<8} {:<24} {:<40} {}",
            format!("{:?}", p.source).to_lowercase(),
            p.name,
            p.provides,
            p.purpose
        );
    }
    Ok(())
}

/// The README's table of the list.
#[must_use]
pub fn markdown() -> String {
    let mut table = String::from(
        "| From | Install | Used from it | For | Needed by |\n|---|---|---|---|---|\n",
    );
    for p in list() {
        let _ = writeln!(
            table,
            "| {} | `{}` | `{}` | {} | {} |",
            p.source.describe(),
            p.name,
            p.provides,
            p.purpose,
            p.scope.describe()
        );
    }
    table
}

/// Ensures every line of `scope` (and narrower: [`Scope::Sdk`] includes [`Scope::Drivers`])
/// that applies to this host is present: installs what is missing (Debian packages only as
/// root), otherwise fails naming each missing line and how to get it.
///
/// # Errors
/// A missing line it cannot install, or a failed install.
pub fn ensure(scope: Scope) -> Result<()> {
    let missing: Vec<Prerequisite> = list()
        .into_iter()
        .filter(|p| p.scope <= scope && present(p) == Some(false))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let debian: Vec<&str> = missing
        .iter()
        .filter(|p| p.source == Source::Debian)
        .map(|p| p.name)
        .collect();
    if !debian.is_empty() {
        if !has_dpkg() {
            bail!(
                "not a Debian-like system and these are missing: {}",
                debian.join(" ")
            );
        }
        if !is_root() {
            bail!(
                "missing Debian packages; install them with:\n    sudo apt-get install {}",
                debian.join(" ")
            );
        }
        run(command(Tool::AptGet).args(["update", "-qq"]))?;
        run(command(Tool::AptGet)
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&debian)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    for p in &missing {
        match p.source {
            Source::Rustup if p.name == "rustup" => {
                bail!("rustup is missing: install the Rust toolchain from rustup first")
            }
            Source::Rustup => run(command(Tool::Rustup).args(["component", "add", p.name]))
                .with_context(|| format!("add the {} component", p.name))?,
            Source::Crate => run(command(Tool::Cargo).args(["install", "--locked", p.name]))?,
            Source::Debian | Source::Pypi | Source::Windows => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate's folder, as cargo tells the running test (not compiled in).
    fn manifest_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR for tests")
            .into()
    }

    /// The SDK's workspace root.
    fn root() -> std::path::PathBuf {
        manifest_dir().join("..").join("..")
    }

    #[test]
    fn a_crate_line_with_a_version_wants_that_version() {
        let nextest = "cargo-nextest 0.9.143 (60fa45f63 2026-08-04)\nrelease: 0.9.143\n";
        assert!(crate_version_matches("cargo-nextest@0.9.143", nextest));
        assert!(!crate_version_matches(
            "cargo-nextest@0.9.143",
            "cargo-nextest 0.9.1 (0 2020-01-01)\nrelease: 0.9.143\n"
        ));
        assert!(!crate_version_matches("cargo-nextest@0.9.14", nextest));
        assert!(crate_version_matches(
            "cargo-fuzz@0.13.2",
            "cargo-fuzz 0.13.2\n"
        ));
        assert!(crate_version_matches("cargo-fuzz", "cargo-fuzz 0.11.0\n"));
        assert!(!crate_version_matches("cargo-fuzz@0.13.2", ""));
    }

    #[test]
    fn every_tool_has_its_line() {
        let list = list();
        for tool in Tool::ALL {
            assert!(
                list.iter().any(|p| p.name == tool.package()),
                "{tool:?} names {:?}, which is not in prerequisites.tsv",
                tool.package()
            );
        }
        let mut names: Vec<&str> = list.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "a name appears twice in prerequisites.tsv"
        );
    }

    /// What cargo-ebpf-ext itself runs for an extension is on a line every extension gets
    /// (`cargo ebpf-ext build` checks only those).
    #[test]
    fn every_tool_the_extension_commands_run_is_a_drivers_line() {
        let mut sources = String::new();
        for entry in std::fs::read_dir(manifest_dir().join("src")).expect("src") {
            let path = entry.expect("entry").path();
            if !path.ends_with("prereqs.rs") && path.extension().is_some_and(|e| e == "rs") {
                sources += &std::fs::read_to_string(&path).expect("source");
            }
        }
        let list = list();
        let mut used = 0;
        for tool in Tool::ALL {
            if !sources.contains(&format!("Tool::{tool:?}")) {
                continue;
            }
            used += 1;
            let line = list
                .iter()
                .find(|p| p.name == tool.package())
                .expect("every tool has its line");
            assert_eq!(
                line.scope,
                Scope::Drivers,
                "cargo-ebpf-ext runs {tool:?}, but its line {:?} is for this workspace only",
                line.name
            );
        }
        assert!(
            used >= 8,
            "found only {used} tools in cargo-ebpf-ext's sources"
        );
        assert!(
            list.iter()
                .any(|p| p.scope == Scope::Sdk && p.provides == "cargo-fuzz"),
            "fuzzing is this workspace's"
        );
    }

    /// The tools a Debian package provides at a path are started at that path, so a program
    /// of the same name earlier on PATH (a rustup cargo, a pyenv python3) never stands in
    /// for the package the list installs.
    #[test]
    #[cfg(not(windows))]
    fn tools_listed_at_a_path_are_started_there() {
        for tool in [Tool::SystemCargo, Tool::SystemRustc, Tool::Python3] {
            assert_eq!(tool.program(), tool.prerequisite().provides, "{tool:?}");
        }
    }

    #[test]
    fn the_driver_toolchain_packages_are_listed() {
        // The packages whose absence broke CI on fresh machines, each with what it provides.
        let list = list();
        for (package, provides) in [
            ("cargo-web", "/usr/bin/cargo"),
            ("rustc-web", "/usr/bin/rustc"),
            ("rust-web-src", "/usr/lib/rustlib/src/rust/library"),
            ("lld", "lld-link"),
            ("llvm", "llvm-dlltool"),
            ("gcc", "cc"),
            ("python3-venv", "/usr/bin/python3"),
        ] {
            assert!(
                list.iter().any(|p| p.source == Source::Debian
                    && p.name == package
                    && p.provides == provides),
                "{package} -> {provides} missing from prerequisites.tsv"
            );
        }
    }

    /// cargo-ebpf-ext and xtask start programs only through [`command`] and
    /// [`pefile_python`] (or the probe in this module), so no program escapes the list.
    #[test]
    fn programs_start_only_through_the_list() {
        let mut offenders = Vec::new();
        let mut sources = Vec::new();
        for src in [manifest_dir().join("src"), root().join("xtask").join("src")] {
            rust_files(&src, &mut sources);
        }
        assert!(sources.len() > 5, "{sources:?}");
        for path in sources {
            let text = std::fs::read_to_string(&path).expect("source");
            let allowed = if path.ends_with("cargo-ebpf-ext/src/prereqs.rs") {
                3
            } else {
                0
            };
            let found = text.matches(concat!("Command", "::new(")).count();
            if found != allowed {
                offenders.push(format!("{}: {found}", path.display()));
            }
        }
        assert!(
            offenders.is_empty(),
            "programs started outside prereqs::command: {offenders:?}"
        );
    }

    /// `path` if it is a `.rs` file, else every `.rs` file under it, recursively.
    fn rust_files(path: &std::path::Path, into: &mut Vec<std::path::PathBuf>) {
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "rs") {
                into.push(path.to_path_buf());
            }
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// What a program start with `argument` in `text` starts: `Ok(None)` for the running test or
    /// one of the workspace's own binaries, `Ok(Some(program))` for a program named by a
    /// literal or a `&str` constant of the file, `Err` for what this test cannot resolve.
    fn started_program(text: &str, argument: &str) -> Result<Option<String>, String> {
        let argument = argument.trim();
        if argument.contains("CARGO_BIN_EXE_") || argument.contains("current_exe") {
            return Ok(None);
        }
        if let Some(literal) = argument.strip_prefix('"') {
            return Ok(Some(literal.trim_end_matches('"').to_owned()));
        }
        if let Some(rest) = text.split(&format!("const {argument}: &str = \"")).nth(1) {
            return Ok(rest.split('"').next().map(str::to_owned));
        }
        let binding = format!("let {argument} = ");
        if text
            .lines()
            .any(|l| l.contains(&binding) && l.contains("current_exe"))
        {
            return Ok(None);
        }
        Err(argument.to_owned())
    }

    /// Outside cargo-ebpf-ext and xtask (which start programs only through [`command`]), the
    /// workspace's crates, drivers and fuzz targets start only listed programs (named by a
    /// literal or a constant, so this test can check them) or their own binaries.
    #[test]
    fn programs_started_anywhere_else_are_listed() {
        let root = root().canonicalize().expect("the workspace root");
        let mut files = Vec::new();
        for group in ["crates", "drivers"] {
            for member in std::fs::read_dir(root.join(group)).expect("a workspace folder") {
                let member = member.expect("entry").path();
                for part in ["src", "tests", "benches", "examples"] {
                    rust_files(&member.join(part), &mut files);
                }
                rust_files(&member.join("build.rs"), &mut files);
            }
        }
        rust_files(&root.join("fuzz").join("fuzz_targets"), &mut files);
        let own = [
            root.join("crates").join("cargo-ebpf-ext").join("src"),
            root.join("xtask").join("src"),
        ];
        files.retain(|f| !own.iter().any(|o| f.starts_with(o)));
        assert!(files.len() > 50, "{} files", files.len());
        let listed: Vec<&str> = list().iter().map(|p| p.provides).collect();
        let (mut starts, mut offenders) = (0, Vec::new());
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            for (at, _) in text.match_indices(concat!("Command", "::new(")) {
                starts += 1;
                let rest = &text[at + concat!("Command", "::new(").len()..];
                let mut depth = 0;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' if depth == 0 => return true,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        false
                    })
                    .map_or(rest.len(), |(i, _)| i);
                match started_program(&text, &rest[..end]) {
                    Ok(None) => {}
                    Ok(Some(program)) if listed.contains(&program.as_str()) => {}
                    Ok(Some(program)) => {
                        offenders.push(format!("{}: {program} is not listed", file.display()));
                    }
                    Err(argument) => offenders.push(format!(
                        "{}: a program start from `{argument}` names no literal or constant",
                        file.display()
                    )),
                }
            }
        }
        assert!(starts >= 5, "found only {starts} program starts");
        assert!(
            offenders.is_empty(),
            "programs started outside prerequisites.tsv: {offenders:?}"
        );
    }

    #[test]
    fn the_readme_shows_the_list() {
        let readme = root().join("README.md");
        let readme = std::fs::read_to_string(readme).expect("README.md");
        assert!(
            readme.contains(&markdown()),
            "README.md's prerequisite table differs from prerequisites.tsv; paste the output of \
             cargo xtask prereqs --markdown"
        );
    }

    #[test]
    fn ci_installs_from_the_list() {
        let root = root();
        let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
        assert!(
            ci.contains("crates/cargo-ebpf-ext/prerequisites.tsv")
                && ci.contains("cargo xtask prereqs --install")
        );
        let workflow =
            std::fs::read_to_string(root.join(".github/workflows/ci.yml")).expect("ci.yml");
        assert!(workflow.contains("bash .ci/run"));
    }
}
