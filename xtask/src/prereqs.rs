//! Installs what the checks need on a fresh Debian/Ubuntu machine, or says exactly how.

use std::process::Command;

use anyhow::{Result, bail};

use crate::exec::run;

/// Debian packages the checks use: the system Rust toolchain with library sources (driver
/// builds), the mingw-w64 DDK headers and compiler (layout test), the driver link and
/// signing tools (lld, llvm, osslsigncode, openssl) and Python's venv (for the independent
/// `pefile` check).
const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "lld",
    "llvm",
    "osslsigncode",
    "mingw-w64-x86-64-dev",
    "gcc-mingw-w64-x86-64",
    "openssl",
    "python3-venv",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Ensures the Debian packages and `cargo-nextest` are present: installs them when running as
/// root on a Debian-like system, otherwise fails with the command to run.
pub(crate) fn ensure() -> Result<()> {
    let has_dpkg = Command::new("dpkg-query").arg("--version").output().is_ok();
    if has_dpkg {
        let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
        if !missing.is_empty() {
            if is_root() {
                run(Command::new("apt-get").args(["update", "-qq"]))?;
                run(Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
            } else {
                bail!(
                    "missing Debian packages; install them with:\n    sudo apt-get install {}",
                    missing.join(" ")
                );
            }
        }
    } else {
        eprintln!(
            "xtask: not a Debian-like system; make sure these are installed: {}",
            PACKAGES.join(" ")
        );
    }
    let cargo = crate::exec::cargo();
    let has_nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nextest {
        run(Command::new(&cargo).args(["install", "cargo-nextest", "--locked"]))?;
    }
    Ok(())
}
