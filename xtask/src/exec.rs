//! Running commands with a clear account of what failed, and finding the workspace.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

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

/// The log of tool output for the current command (`target/xtask.log`), when quiet.
static LOG: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);

/// Sends the output of every later [`run`] to `path` instead of the terminal.
pub(crate) fn log_to(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    *LOG.lock().expect("log lock") = Some((path.to_path_buf(), file));
    Ok(())
}

/// The log file, if output goes to one.
pub(crate) fn log_path() -> Option<PathBuf> {
    LOG.lock()
        .expect("log lock")
        .as_ref()
        .map(|(p, _)| p.clone())
}

/// Runs a command in the workspace root; an error names the command and its status. Its
/// output goes to the terminal, or to the log (see [`log_to`]), whose path the error then
/// names.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    let shown = format!("{cmd:?}");
    let logged = {
        let mut log = LOG.lock().expect("log lock");
        if let Some((path, file)) = log.as_mut() {
            writeln!(file, "\n==> {shown}")?;
            cmd.stdout(file.try_clone()?).stderr(file.try_clone()?);
            Some(path.clone())
        } else {
            eprintln!("\n==> {shown}");
            None
        }
    };
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        match logged {
            Some(path) => bail!(
                "{shown} failed ({status}); its output is in {}",
                path.display()
            ),
            None => bail!("{shown} failed ({status})"),
        }
    }
    Ok(())
}

/// Notes a line in the log (or on the terminal when not logging).
pub(crate) fn note(line: &str) {
    let mut log = LOG.lock().expect("log lock");
    match log.as_mut() {
        Some((_, file)) => {
            let _ = writeln!(file, "{line}");
        }
        None => eprintln!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_one_around_the_directory_at_run_time() {
        // A second workspace, as a copied checkout would be: cargo finds it, not this one.
        let dir = std::env::temp_dir().join(format!(
            "xtask-locate-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
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
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.expect("a workspace"), expected);
    }
}
