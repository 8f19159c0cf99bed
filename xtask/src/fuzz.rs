//! `cargo xtask fuzz` and CI's fuzz smoke run: coverage-guided fuzzing with cargo-fuzz
//! (libFuzzer, AddressSanitizer) of the targets in `fuzz/`, a cargo workspace of its own.
//!
//! Each target keeps its corpus in `fuzz/corpus/<target>/` and its reproducers in
//! `fuzz/artifacts/<target>/` (both git-ignored; cargo-fuzz's defaults), starts from the small
//! committed seeds in `fuzz/seeds/<target>/`, and is built in `target/fuzz/`. cargo-fuzz needs
//! nightly flags (`-Zsanitizer=address`); `RUSTC_BOOTSTRAP=1` lets the stable toolchain take
//! them.
//!
//! LeakSanitizer is off (`-detect_leaks=0`, and `detect_leaks=0` in `ASAN_OPTIONS` for its
//! check at exit): usersim keeps freed pool in quarantine and core-sim deliberately keeps a
//! detached link's state, so LSan would re-run most inputs looking for leaks and report those.
//! The targets check leaks themselves: after every input, usersim must hold exactly the pool,
//! NMR registrations and bindings it held before.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::exec::{run, workspace_root};
use crate::prereqs::{Tool, command};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
pub(crate) const TARGETS: &[&str] = &[
    "hook_attach",
    "map_attach",
    "program_info",
    "sample_ioctl",
    "sample_ext_ioctl",
    "sample_process",
    "test_run",
    "pe_parse",
    "pdb_read",
    "btf_externs",
    "bpf_interpret",
];

/// What fuzzing needs, as the `name` column of `crates/cargo-ebpf-ext/prerequisites.tsv`: the rustup
/// toolchain (its cargo runs `cargo fuzz`; its compiler brings the AddressSanitizer runtime),
/// cargo-fuzz from crates.io, and g++ for libFuzzer's C++ sources. Every program is started
/// as `cargo fuzz …` through [`Tool::Cargo`].
pub(crate) const TOOLS: &[&str] = &["rustup", "cargo-fuzz", "g++"];

/// Seconds each target runs in CI's smoke run.
const SMOKE_SECONDS: u64 = 10;

/// Options of `cargo xtask fuzz`.
#[derive(Args)]
pub(crate) struct FuzzOptions {
    /// Seconds to fuzz each target.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub(crate) time: u64,
    /// Only this target (default: all of them, one after the other).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub(crate) target: Option<String>,
    /// libFuzzer processes per target (`-fork=N`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) jobs: u32,
}

/// `cargo xtask fuzz`: builds every target, then fuzzes the chosen ones for `--time` seconds
/// each, keeping their corpora. Fails on the first crash, leak or failed check; the
/// reproducer is then in `fuzz/artifacts/<target>/` and cargo-fuzz prints how to rerun it.
pub(crate) fn fuzz(options: &FuzzOptions) -> Result<()> {
    if options.time == 0 || options.jobs == 0 {
        bail!("--time and --jobs must be at least 1");
    }
    ensure_cargo_fuzz()?;
    build()?;
    let targets: Vec<&str> = match &options.target {
        Some(name) => vec![name.as_str()],
        None => TARGETS.to_vec(),
    };
    for target in targets {
        let corpus = fuzz_dir().join("corpus").join(target);
        fuzz_target(target, &corpus, options.time, options.jobs)?;
    }
    eprintln!(
        "\nfuzz: no crash; corpora in fuzz/corpus/, to rerun a reproducer: \
         RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <file>"
    );
    Ok(())
}

/// CI's smoke run: every target for a few seconds from its seeds (in a fresh corpus under
/// `target/fuzz/smoke/`), failing on a crash, leak or failed check.
pub(crate) fn smoke() -> Result<()> {
    ensure_cargo_fuzz()?;
    build()?;
    for target in TARGETS {
        let corpus = build_dir().join("smoke").join(target);
        if corpus.exists() {
            std::fs::remove_dir_all(&corpus)
                .with_context(|| format!("remove {}", corpus.display()))?;
        }
        fuzz_target(target, &corpus, SMOKE_SECONDS, 1)?;
    }
    eprintln!("\nfuzz smoke: every target ran {SMOKE_SECONDS} s without a crash");
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// Where cargo-fuzz builds (its own target directory, so fuzzing never invalidates the
/// workspace's build).
fn build_dir() -> PathBuf {
    workspace_root().join("target").join("fuzz")
}

/// `cargo fuzz <subcommand> --fuzz-dir fuzz` with the environment every fuzz command needs.
fn cargo_fuzz(subcommand: &str) -> Command {
    // LeakSanitizer off at exit too (see the module docs); the user's own options come after
    // ours, so they win.
    let asan = match std::env::var("ASAN_OPTIONS") {
        Ok(user) if !user.is_empty() => format!("detect_leaks=0:{user}"),
        _ => "detect_leaks=0".to_owned(),
    };
    let mut cmd = command(Tool::Cargo);
    cmd.args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", build_dir())
        .env("ASAN_OPTIONS", asan);
    cmd
}

/// Fails with how to install cargo-fuzz if `cargo fuzz` is missing (`cargo xtask prereqs
/// --install` installs every line of the list).
fn ensure_cargo_fuzz() -> Result<()> {
    let present = command(Tool::Cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let line = cargo_ebpf_ext::prereqs::list()
            .into_iter()
            .find(|p| p.provides == "cargo-fuzz")
            .map_or("cargo-fuzz", |p| p.name);
        bail!(
            "cargo fuzz is missing: install it with `cargo install --locked {line}`, or every \
             prerequisite with `cargo xtask prereqs --install` (fuzzing needs {})",
            TOOLS.join(", ")
        );
    }
    Ok(())
}

/// Builds every target (one cargo invocation).
fn build() -> Result<()> {
    run(&mut cargo_fuzz("build"))
}

/// Fuzzes one target for `seconds`, its corpus in `corpus`, starting from its seeds too.
fn fuzz_target(target: &str, corpus: &Path, seconds: u64, jobs: u32) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("create {}", corpus.display()))?;
    let mut cmd = cargo_fuzz("run");
    if jobs > 1 {
        cmd.args(["--jobs", &jobs.to_string()]);
    }
    cmd.arg(target).arg(corpus);
    let seeds = fuzz_dir().join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(seeds);
    }
    if target == "pe_parse"
        && let Some(images) = driver_images()?
    {
        cmd.arg(images);
    }
    cmd.arg("--").args([
        format!("-max_total_time={seconds}"),
        "-detect_leaks=0".into(),
        "-rss_limit_mb=4096".into(),
        "-print_final_stats=1".into(),
    ]);
    // core-sim keeps every detached link's state for the rest of the process (about 1 KiB per
    // input of the three sample targets), so a long run in one process would reach the RSS
    // limit: fork mode restarts the fuzzing process every few minutes.
    if matches!(
        target,
        "sample_ioctl" | "sample_ext_ioctl" | "sample_process"
    ) && jobs == 1
    {
        cmd.arg("-fork=1");
    }
    run(&mut cmd)
}

/// The sample drivers' built images (`target/driver/*.sys`, from `cargo xtask
/// build-drivers`), copied into a seed directory of their own (libFuzzer reads every file of
/// a corpus directory, and the PDBs beside the images are large); `None` if none is built.
fn driver_images() -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(workspace_root().join("target").join("driver")) else {
        return Ok(None);
    };
    let images: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sys") && p.is_file())
        .collect();
    if images.is_empty() {
        return Ok(None);
    }
    let seeds = build_dir().join("seeds").join("pe_parse-drivers");
    std::fs::create_dir_all(&seeds).with_context(|| format!("create {}", seeds.display()))?;
    for image in images {
        let name = image.file_name().context("image file name")?;
        std::fs::copy(&image, seeds.join(name))
            .with_context(|| format!("copy {}", image.display()))?;
    }
    Ok(Some(seeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_a_line_of_the_prerequisite_list() {
        let list = cargo_ebpf_ext::prereqs::list();
        for tool in TOOLS {
            assert!(
                // A crate's line may pin its version (`cargo-fuzz@0.13.2`).
                list.iter().any(|p| p.name.split('@').next() == Some(*tool)),
                "{tool} is not in crates/cargo-ebpf-ext/prerequisites.tsv"
            );
        }
    }

    #[test]
    fn every_target_has_its_source_and_seeds() {
        let fuzz = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        for target in TARGETS {
            let source = fuzz.join("fuzz_targets").join(format!("{target}.rs"));
            assert!(source.is_file(), "{} is missing", source.display());
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "fuzz/Cargo.toml has no [[bin]] {target}"
            );
            assert!(
                fuzz.join("seeds").join(target).is_dir(),
                "fuzz/seeds/{target} is missing"
            );
        }
    }
}
