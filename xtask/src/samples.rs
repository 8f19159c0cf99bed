//! `test-sample` and `demo`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

use crate::drivers::{build_drivers, output_dir, package, sign};
use crate::exec::{cargo, run, workspace_root};

/// Options of `cargo xtask test-sample`.
#[derive(Args)]
pub(crate) struct TestOptions {
    /// Skip binary mode (building, signing and loading the `.sys` images): run the scenarios
    /// against the linked crates only.
    #[arg(long)]
    pub(crate) native_only: bool,
    /// Also deploy the signed packages to this Hyper-V VM and run them there (Windows host
    /// only; see `scripts/Deploy-SampleToVm.ps1`).
    #[arg(long, value_name = "NAME")]
    pub(crate) vm: Option<String>,
}

/// The sample scenario tests on the host (one process per test): the scenarios against the
/// linked crates, and (binary mode) against the signed images, compared.
fn host_tests(binary: bool) -> Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.args(["nextest", "run", "--no-fail-fast"]);
    cmd.args([
        "--package",
        "sample-netebpf-ext",
        "--package",
        "sample-ntos-ext",
    ]);
    if binary {
        cmd.args(["--package", "sample-harness"]);
    }
    run(&mut cmd)
}

const VM_NEEDS: &str = "\
--vm deploys the signed packages to a Hyper-V virtual machine, which needs a Windows host with:
  - Hyper-V and its PowerShell module, and a Windows VM with test signing on
    (bcdedit /set TESTSIGNING ON, Secure Boot off) and the eBPF for Windows runtime installed;
  - the VM's Guest Service Interface enabled (Copy-VMFile) and PowerShell Direct access;
  - the packages from cargo xtask package (target/driver/*_package).
It runs scripts/Deploy-SampleToVm.ps1 -VMName NAME for each package: copies it, installs
the test certificate, sc create / start, runs the sample's checks, stops and deletes the
service, and collects the ETW log. This host is not Windows, so nothing was deployed.";

/// `cargo xtask test-sample [--vm NAME]`.
pub(crate) fn test_sample(options: &TestOptions) -> Result<()> {
    crate::prereqs::ensure()?;
    let binary = !options.native_only;
    if binary {
        build_drivers(None)?;
        sign()?;
    }
    host_tests(binary)?;
    if let Some(vm) = &options.vm {
        if !cfg!(windows) {
            bail!("{VM_NEEDS}");
        }
        let script = workspace_root()
            .join("scripts")
            .join("Deploy-SampleToVm.ps1");
        for dir in package_dirs()? {
            run(Command::new("powershell")
                .args(["-NoProfile", "-ExecutionPolicy", "Bypass", "-File"])
                .arg(&script)
                .args(["-VMName", vm, "-PackageDir"])
                .arg(dir))?;
        }
    }
    Ok(())
}

fn package_dirs() -> Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(output_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.to_string_lossy().ends_with("_package"))
        .collect();
    if dirs.is_empty() {
        bail!("no packages; run cargo xtask package first");
    }
    Ok(dirs)
}

/// `cargo xtask demo`: build, sign and package both samples, then run them end to end.
pub(crate) fn demo() -> Result<()> {
    println!("==> 1/4 building the sample drivers (x86_64-pc-windows-msvc, lld-link)");
    let built = build_drivers(None)?;
    println!("==> 2/4 test-signing them (osslsigncode)");
    let signed = sign()?;
    println!("==> 3/4 packaging");
    let packages = package()?;
    println!(
        "==> 4/4 running the signed images end to end on the host (PE loader + usersim + core-sim)"
    );
    run(Command::new(cargo()).args([
        "run",
        "--quiet",
        "--package",
        "sample-harness",
        "--bin",
        "sample-demo",
        "--",
        "--binary",
    ]))?;
    println!("\nSummary");
    let root = workspace_root();
    let show = |p: &std::path::Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
    for sys in &built {
        let size = std::fs::metadata(sys).map_or(0, |m| m.len());
        println!(
            "  built    {} ({size} bytes): native subsystem, DriverEntry, FORCE_INTEGRITY, no W+X, checksum ok (xtask and pefile)",
            show(sys)
        );
    }
    for sys in &signed {
        println!(
            "  signed   {} (Authenticode, test certificate; osslsigncode verify ok)",
            show(sys)
        );
    }
    for dir in &packages {
        let mut files: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        files.sort();
        println!("  package  {}: {}", show(dir), files.join(", "));
    }
    println!(
        "  ran      the signed .sys images, loaded by ebpf-ext-pe-loader with their imports bound to\n           \
         usersim: load, attach, events, verdicts, helpers, traces, detach, unload, no leaks;\n           \
         the sample crates linked natively gave identical reports"
    );
    Ok(())
}
