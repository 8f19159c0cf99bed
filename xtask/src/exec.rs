//! Finding the workspace, and running commands in it (cargo-ebpf-ext's runner, which gives a
//! clear account of what failed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::prereqs::{Tool, command};

/// The variable that names the workspace explicitly (otherwise it is found at run time).
pub(crate) const WORKSPACE_VAR: &str = "EBPF_EXT_WORKSPACE";

/// The workspace root, found at run time: `$EBPF_EXT_WORKSPACE`, else `cargo locate-project
/// --workspace` from the current directory. Never a path compiled into xtask, so a checkout
/// that is moved or copied with its `target/` works on its own tree.
///
/// # Panics
/// If neither names a workspace; xtask cannot do anything without one.
pub(crate) fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| match locate_workspace() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(2);
        }
    })
}

fn locate_workspace() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os(WORKSPACE_VAR) {
        let root = PathBuf::from(root);
        if !root.join("Cargo.toml").is_file() {
            bail!("{WORKSPACE_VAR}={} has no Cargo.toml", root.display());
        }
        return Ok(root);
    }
    let here = std::env::current_dir().context("current directory")?;
    locate_workspace_from(&here)
}

/// The workspace that contains `dir`, as cargo sees it.
fn locate_workspace_from(dir: &Path) -> Result<PathBuf> {
    let output = command(Tool::Cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo locate-project")?;
    if !output.status.success() {
        bail!(
            "cargo locate-project found no workspace here; run xtask inside the checkout or set {WORKSPACE_VAR}"
        );
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(manifest
        .parent()
        .context("workspace manifest without a folder")?
        .to_path_buf())
}

pub(crate) use cargo_ebpf_ext::exec::{log_path, log_to};

/// Runs a command in the workspace root, unless it names its own folder; an error names the
/// command and its status (see `cargo_ebpf_ext::exec::run`).
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(workspace_root());
    }
    cargo_ebpf_ext::exec::run(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_one_around_the_directory_at_run_time() {
        // A second workspace, as a copied checkout would be: cargo finds it, not this one.
        let temporary = tempfile::tempdir().expect("a temporary folder");
        let dir = temporary.path();
        let inner = dir.join("crates").join("a");
        std::fs::create_dir_all(inner.join("src")).expect("dirs");
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/a\"]\nresolver = \"2\"\n",
        )
        .expect("workspace manifest");
        std::fs::write(
            inner.join("Cargo.toml"),
            "[package]\nname = \"a\"\nversion = \"0.0.0\"\nedition = \"2021\"\n",
        )
        .expect("package manifest");
        std::fs::write(inner.join("src").join("lib.rs"), "").expect("lib.rs");
        let found = locate_workspace_from(&inner).and_then(|f| Ok(f.canonicalize()?));
        let expected = dir.canonicalize().expect("the temporary workspace");
        assert_eq!(found.expect("a workspace"), expected);
    }
}
