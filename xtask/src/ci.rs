//! `cargo xtask ci` and the driver-target check.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::exec::{run, workspace_root};

/// The target Windows kernel drivers are built for.
pub(crate) const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";
/// Features that turn a crate's driver build on, per crate.
const DRIVER_FEATURES: &[(&str, &str)] = &[
    ("ebpf-ext-trace", "kernel_mode"),
    ("ebpf-extension-common", "driver"),
];

/// Options of `cargo xtask ci`.
#[derive(Args)]
pub(crate) struct Options {
    /// Skip `cargo fmt --check`, clippy and rustdoc (tests and the driver-target check still
    /// run).
    #[arg(long)]
    pub(crate) tests_only: bool,
}

pub(crate) fn run_ci(options: &Options) -> Result<()> {
    crate::prereqs::ensure()?;
    let cargo = crate::exec::cargo();
    if !options.tests_only {
        run(Command::new(&cargo).args(["fmt", "--all", "--", "--check"]))?;
        run(Command::new(&cargo).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(Command::new(&cargo)
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))?;
    }
    // Doctests (nextest does not run them): the compile-fail examples prove the compile-time
    // checks of the program-information description.
    run(Command::new(&cargo).args(["test", "--workspace", "--doc"]))?;
    run_loom_models(&cargo)?;
    check_driver_target()?;
    // The signed images, which the binary-mode tests load.
    crate::drivers::build_drivers(None)?;
    crate::drivers::sign()?;
    crate::drivers::package()?;
    // Last, so its summary is the closing test line of CI's output.
    run(Command::new(&cargo).args(["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    eprintln!("\nci: all checks passed");
    Ok(())
}

/// The `loom` models of lock-free protocols (built with `--cfg loom`, in their own target
/// directory so the normal build is not invalidated).
fn run_loom_models(cargo: &str) -> Result<()> {
    let target_dir = workspace_root().join("target").join("loom");
    run(Command::new(cargo)
        .args([
            "test",
            "--release",
            "--package",
            "ebpf-ext-hook",
            "--test",
            "loom_snapshot",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", target_dir))
}

/// Crates under `crates/` whose `src/lib.rs` is `#![no_std]`.
fn no_std_crates(root: &Path) -> Result<Vec<String>> {
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).context("list crates/")? {
        let dir = entry?.path();
        let lib = dir.join("src").join("lib.rs");
        let Ok(source) = std::fs::read_to_string(&lib) else {
            continue;
        };
        if source.lines().any(|l| l.trim() == "#![no_std]") {
            crates.push(
                dir.file_name()
                    .expect("crate dir")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    crates.sort();
    Ok(crates)
}

/// A toolchain that can build `core`/`alloc` for the driver target from source: Debian's
/// `rustc-web` (system `cargo`/`rustc`) with `rust-web-src`. The rustup toolchain has no
/// Windows target and cannot fetch one here.
pub(crate) fn driver_toolchain() -> Result<(PathBuf, PathBuf)> {
    let cargo = PathBuf::from("/usr/bin/cargo");
    let rustc = PathBuf::from("/usr/bin/rustc");
    let hint = "install it with: sudo apt-get install rustc-web rust-web-src (Debian/Ubuntu)";
    if !cargo.is_file() || !rustc.is_file() {
        bail!("no system Rust toolchain at /usr/bin; {hint}");
    }
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("run rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!("the system Rust toolchain has no library sources (needed for -Zbuild-std); {hint}");
    }
    Ok((cargo, rustc))
}

/// `cargo check --target x86_64-pc-windows-msvc -Zbuild-std=core,alloc` for every no_std crate.
pub(crate) fn check_driver_target() -> Result<()> {
    crate::prereqs::ensure()?;
    let root = workspace_root();
    let (cargo, rustc) = driver_toolchain()?;
    let target_dir = root.join("target").join("driver-check");
    for krate in no_std_crates(&root)? {
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "check",
            "--target",
            DRIVER_TARGET,
            "-Zbuild-std=core,alloc",
            "--package",
            &krate,
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", &rustc)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env("CARGO_TARGET_DIR", &target_dir);
        if let Some((_, features)) = DRIVER_FEATURES.iter().find(|(name, _)| *name == krate) {
            cmd.args(["--features", features]);
        }
        run(&mut cmd)?;
    }
    Ok(())
}
