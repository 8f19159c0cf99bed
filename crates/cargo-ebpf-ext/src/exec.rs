//! Running commands with a clear account of what failed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The log of tool output for the current command, when quiet.
static LOG: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);

/// Sends the output of every later [`run`] to `path` instead of the terminal.
///
/// # Errors
/// If the file cannot be created.
pub fn log_to(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    *LOG.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((path.to_path_buf(), file));
    Ok(())
}

/// The log file, if output goes to one.
#[must_use]
pub fn log_path() -> Option<PathBuf> {
    LOG.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|(p, _)| p.clone())
}

/// Runs a command (in the folder it names, else the current one); an error names the command
/// and its status. Its output goes to the terminal, or to the log (see [`log_to`]), whose path
/// the error then names.
///
/// # Errors
/// If the command cannot be started or fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let logged = {
        let mut log = LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
pub fn note(line: &str) {
    let mut log = LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match log.as_mut() {
        Some((_, file)) => {
            let _ = writeln!(file, "{line}");
        }
        None => eprintln!("{line}"),
    }
}
