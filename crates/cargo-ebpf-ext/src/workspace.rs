//! The workspace and its driver packages, found at run time with `cargo metadata`: never a
//! path compiled in, so the tool works on any workspace (and on a moved or copied one).

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::prereqs::{Tool, command};

/// The manifest table that marks a package as a driver.
pub const DRIVER_MARKER: &str = "[package.metadata.wdk.driver-model]";

/// A workspace package that is a driver (its manifest has [`DRIVER_MARKER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// Cargo package name (`sample-netebpf-ext`).
    pub package: String,
    /// Library name (`sample_netebpf_ext`): the image is `<name>.sys`.
    pub name: String,
    /// Package version (stamped into the INF's `DriverVer`).
    pub version: String,
    /// Its folder (where its `.inx`, `.wprp` and `.guid` are).
    pub dir: PathBuf,
    /// Its `[package.metadata]` table (`cargo metadata`'s JSON).
    pub metadata: Value,
}

/// A workspace, as `cargo metadata` describes it.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// Every member package's name, in order.
    pub members: Vec<String>,
    /// The driver packages, by package name.
    pub drivers: Vec<Driver>,
    /// How its members pin the SDK (a git URL and tag, or a checkout), if they depend on it.
    pub sdk: Option<crate::new::Sdk>,
}

/// A command's hold on a workspace's driver outputs ([`Workspace::lock_output`]); dropping it
/// lets the next command in.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

impl Workspace {
    /// The workspace of `manifest_path` (a `Cargo.toml`), else of the current directory.
    ///
    /// # Errors
    /// If `cargo metadata` fails there (the message names where it looked).
    pub fn find(manifest_path: Option<&Path>) -> Result<Workspace> {
        let mut cmd = command(Tool::Cargo);
        cmd.args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(Stdio::inherit());
        let looked = match manifest_path {
            Some(path) => {
                cmd.arg("--manifest-path").arg(path);
                format!("--manifest-path {}", path.display())
            }
            None => std::env::current_dir().map_or_else(
                |_| "the current directory".to_owned(),
                |d| format!("the current directory {}", d.display()),
            ),
        };
        let output = cmd.output().context("run cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata found no workspace from {looked}; run inside a workspace or pass --manifest-path"
            );
        }
        let json: Value =
            serde_json::from_slice(&output.stdout).context("cargo metadata's output")?;
        Self::from_metadata(&json)
    }

    /// Reads `cargo metadata --format-version 1 --no-deps` output.
    ///
    /// # Errors
    /// If it lacks the fields cargo always writes.
    pub fn from_metadata(json: &Value) -> Result<Workspace> {
        let root = PathBuf::from(
            json["workspace_root"]
                .as_str()
                .context("cargo metadata without workspace_root")?,
        );
        let members: Vec<&str> = json["workspace_members"]
            .as_array()
            .context("cargo metadata without workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut names = Vec::new();
        let mut drivers = Vec::new();
        for package in json["packages"].as_array().into_iter().flatten() {
            let id = package["id"].as_str().unwrap_or_default();
            if !members.contains(&id) {
                continue;
            }
            let name = package["name"].as_str().context("package without a name")?;
            names.push(name.to_owned());
            if package["metadata"]["wdk"]["driver-model"].is_null() {
                continue;
            }
            let manifest = PathBuf::from(
                package["manifest_path"]
                    .as_str()
                    .context("package without manifest_path")?,
            );
            let lib = package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "cdylib"))
                })
                .and_then(|t| t["name"].as_str())
                .map_or_else(|| name.replace('-', "_"), |n| n.replace('-', "_"));
            drivers.push(Driver {
                package: name.to_owned(),
                name: lib,
                version: package["version"].as_str().unwrap_or("0.0.0").to_owned(),
                dir: manifest
                    .parent()
                    .context("manifest without a folder")?
                    .to_path_buf(),
                metadata: package["metadata"].clone(),
            });
        }
        drivers.sort_by(|a, b| a.package.cmp(&b.package));
        Ok(Workspace {
            root,
            members: names,
            drivers,
            sdk: crate::new::Sdk::from_workspace(json),
        })
    }

    /// Where driver outputs go: `<root>/target/driver/`.
    #[must_use]
    pub fn output_dir(&self) -> PathBuf {
        self.root.join("target").join(crate::drivers::PROFILE)
    }

    /// Holds the workspace's driver outputs (`<root>/target/driver/`) for one command: every
    /// command that reads or writes them (build, sign, package, check, test, export) takes this
    /// first, so two of them on one workspace run one after the other instead of interleaving
    /// their writes (the import libraries, `pecheck.py`, the test certificate and key, the
    /// images). A command that finds the outputs held says so on stderr and waits, as cargo
    /// does for its own build folder. The hold is an advisory lock on
    /// `target/driver/.lock`, released when the returned value drops (or the process ends).
    ///
    /// # Errors
    /// If the folder or the lock file cannot be made, or the lock cannot be taken.
    pub fn lock_output(&self) -> Result<OutputLock> {
        let dir = self.output_dir();
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                eprintln!(
                    "cargo-ebpf-ext: waiting for another command on this workspace's driver outputs to finish (lock {})",
                    path.display()
                );
                file.lock()
                    .with_context(|| format!("lock {}", path.display()))?;
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("lock {}", path.display()));
            }
        }
        Ok(OutputLock { _file: file })
    }

    /// The drivers `only` names (all when empty).
    ///
    /// # Errors
    /// If a name is not a driver package of this workspace, or the workspace has none; the
    /// message says where it looked and what makes a package a driver.
    pub fn select(&self, only: &[String]) -> Result<Vec<&Driver>> {
        if self.drivers.is_empty() {
            bail!(
                "no driver package in the workspace at {} (looked at its members: {}); a driver package's Cargo.toml has {DRIVER_MARKER}",
                self.root.display(),
                self.members.join(", ")
            );
        }
        for name in only {
            if !self.drivers.iter().any(|d| &d.package == name) {
                bail!(
                    "{name} is not a driver package of the workspace at {} (its drivers: {}; a driver package's Cargo.toml has {DRIVER_MARKER})",
                    self.root.display(),
                    self.drivers
                        .iter()
                        .map(|d| d.package.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(self
            .drivers
            .iter()
            .filter(|d| only.is_empty() || only.contains(&d.package))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("dirs");
        std::fs::write(path, text).expect("write");
    }

    /// A workspace outside this one: a driver and a plain crate.
    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = dir.path();
        write(
            &root.join("Cargo.toml"),
            "[workspace]\nmembers = [\"my-ext\", \"tool\"]\nresolver = \"2\"\n",
        );
        write(
            &root.join("my-ext/Cargo.toml"),
            "[package]\nname = \"my-ext\"\nversion = \"1.2.3\"\nedition = \"2021\"\n\n[package.metadata.wdk.driver-model]\ndriver-type = \"WDM\"\n",
        );
        write(&root.join("my-ext/src/lib.rs"), "");
        write(
            &root.join("tool/Cargo.toml"),
            "[package]\nname = \"tool\"\nversion = \"0.0.0\"\nedition = \"2021\"\n",
        );
        write(&root.join("tool/src/lib.rs"), "");
        dir
    }

    #[test]
    fn drivers_are_found_in_any_workspace_at_run_time() {
        let dir = workspace();
        let ws = Workspace::find(Some(&dir.path().join("tool/Cargo.toml"))).expect("found");
        assert_eq!(
            ws.root.canonicalize().expect("root"),
            dir.path().canonicalize().expect("dir")
        );
        assert_eq!(ws.drivers.len(), 1);
        let driver = &ws.drivers[0];
        assert_eq!(
            (driver.package.as_str(), driver.name.as_str()),
            ("my-ext", "my_ext")
        );
        assert_eq!(driver.version, "1.2.3");
        assert_eq!(ws.select(&[]).expect("all").len(), 1);
        assert_eq!(
            ws.output_dir(),
            ws.root.join("target").join("driver"),
            "images go to <workspace>/target/driver"
        );
    }

    #[test]
    fn errors_say_where_they_looked() {
        let dir = workspace();
        let ws = Workspace::find(Some(&dir.path().join("Cargo.toml"))).expect("found");
        let error = ws
            .select(&["tool".to_owned()])
            .expect_err("not a driver")
            .to_string();
        assert!(error.contains("tool is not a driver package"), "{error}");
        assert!(error.contains(&ws.root.display().to_string()), "{error}");
        assert!(error.contains(DRIVER_MARKER), "{error}");
        let missing = dir.path().join("nowhere/Cargo.toml");
        let error = Workspace::find(Some(&missing))
            .expect_err("no workspace")
            .to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }
}
