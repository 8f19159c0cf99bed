//! `cargo xtask ci` and the driver-target check.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use crate::exec::{run, workspace_root};
use crate::prereqs::{Tool, command};

pub(crate) use cargo_ebpf_ext::drivers::{DRIVER_TARGET, driver_toolchain};
/// Features that turn a crate's driver build on, per crate.
const DRIVER_FEATURES: &[(&str, &str)] = &[
    ("ebpf-ext-trace", "kernel_mode"),
    ("ebpf-extension-common", "driver"),
];

/// Options of `cargo xtask ci`.
#[derive(Args)]
pub(crate) struct Options {
    /// Skip `cargo fmt --check` (of the workspace and the fuzz targets), clippy, rustdoc and the public-API check (tests and the
    /// driver-target check still run).
    #[arg(long)]
    pub(crate) tests_only: bool,
}

pub(crate) fn run_ci(options: &Options) -> Result<()> {
    crate::prereqs::ensure(crate::prereqs::Scope::Sdk)?;
    if !options.tests_only {
        run(command(Tool::Cargo).args(["fmt", "--all", "--", "--check"]))?;
        // The fuzz targets are a workspace of their own, which `--all` does not reach.
        let fuzz_manifest = workspace_root().join("fuzz").join("Cargo.toml");
        run(command(Tool::Cargo)
            .args(["fmt", "--all", "--manifest-path"])
            .arg(&fuzz_manifest)
            .args(["--", "--check"]))?;
        run(command(Tool::Cargo).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(command(Tool::Cargo)
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))?;
        // A change to the SDK's public API shows as a difference to `api/`.
        crate::public_api::public_api(false)?;
    }
    run_loom_models()?;
    run_optimised_tests()?;
    check_driver_target()?;
    // The signed images, which the binary-mode tests load.
    crate::drivers::build_drivers(None)?;
    crate::drivers::sign()?;
    crate::drivers::package()?;
    // What a user does: the SDK from a tag, a new extension outside this workspace, built,
    // signed, packaged, exported and tested in both modes (`cargo xtask e2e`).
    crate::e2e::out_of_tree()?;
    // What a newcomer types first: every test as threads of one process (no test may lean on
    // having a process of its own), and the doctests, which nextest does not run (the
    // compile-fail examples prove the compile-time checks of the program-information
    // description).
    run(command(Tool::Cargo)
        .args(["test", "--workspace"])
        .env_remove(crate::drivers::NATIVE_ONLY_VAR))?;
    // A few seconds of each fuzz target (`cargo xtask fuzz` runs them for long).
    crate::fuzz::smoke()?;
    // Last, so its summary is the closing test line of CI's output.
    run(command(Tool::Cargo)
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .env_remove(crate::drivers::NATIVE_ONLY_VAR))?;
    eprintln!("\nci: all checks passed");
    Ok(())
}

/// The `loom` models of lock-free protocols (built with `--cfg loom`, in their own target
/// directory so the normal build is not invalidated): the hook provider's snapshots,
/// core-sim's link, whose invocations read its program without a lock, the rundown
/// wrappers' wait state, and the facade's driver global.
fn run_loom_models() -> Result<()> {
    let target_dir = workspace_root().join("target").join("loom");
    for (package, test) in [
        ("ebpf-ext-hook", "loom_snapshot"),
        ("ebpf-ext-core-sim", "loom_link"),
        ("ebpf-ext-rundown", "loom_wait_state"),
        ("ebpf-extension-common", "loom_global"),
    ] {
        run(command(Tool::Cargo)
            .args(["test", "--release", "--package", package, "--test", test])
            .env("RUSTFLAGS", "--cfg loom")
            .env("CARGO_TARGET_DIR", &target_dir))?;
    }
    Ok(())
}

/// Tests of behaviour that only an optimised build can break, run in the release profile:
/// each process notify routine must stay a function of its own when the optimiser folds
/// functions whose code is the same (a debug build never folds them).
fn run_optimised_tests() -> Result<()> {
    run(command(Tool::Cargo)
        .args(["test", "--release", "--package", "ebpf-extension-common"])
        .args(["--test", "leaked_notify_routine"])
        .env_remove(crate::drivers::NATIVE_ONLY_VAR))
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

/// `cargo check --target x86_64-pc-windows-msvc -Zbuild-std=core,alloc` for every no_std crate.
pub(crate) fn check_driver_target() -> Result<()> {
    crate::prereqs::ensure(crate::prereqs::Scope::Sdk)?;
    let root = workspace_root();
    driver_toolchain()?;
    let target_dir = root.join("target").join("driver-check");
    for krate in no_std_crates(root)? {
        let mut cmd = command(Tool::SystemCargo);
        cmd.args([
            "check",
            "--target",
            DRIVER_TARGET,
            "-Zbuild-std=core,alloc",
            "--package",
            &krate,
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", Tool::SystemRustc.program())
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
