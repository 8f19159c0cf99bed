//! `test-sample` and `demo`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::drivers::{
    DRIVER_DIR_VAR, NATIVE_ONLY_VAR, build_drivers, output_dir, package, sha256_hex, sign,
};
use crate::exec::{run, workspace_root};
use crate::prereqs::{Tool, command};

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
    let mut cmd = command(Tool::Cargo);
    cmd.args(["nextest", "run", "--no-fail-fast"]);
    cmd.args([
        "--package",
        "sample-netebpf-ext",
        "--package",
        "sample-ntos-ext",
        "--package",
        "sample-ext",
    ]);
    if binary {
        cmd.args(["--package", "sample-harness"]);
        cmd.env_remove(NATIVE_ONLY_VAR);
    } else {
        // The tests that would load an image run the linked crate only.
        cmd.env(NATIVE_ONLY_VAR, "1");
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
the test certificate (and the eBPF store entries), starts the service under an ETW trace,
stops and deletes it, and copies the trace back into the package folder (NAME.vm.etl). It
loads no program. This host is not Windows, so nothing was built or deployed.";

/// `cargo xtask test-sample [--vm NAME]`.
pub(crate) fn test_sample(options: &TestOptions) -> Result<()> {
    if options.vm.is_some() && !cfg!(windows) {
        bail!("{VM_NEEDS}");
    }
    crate::prereqs::ensure(crate::prereqs::Scope::Sdk)?;
    let binary = !options.native_only;
    if binary {
        build_drivers(None)?;
        sign()?;
    }
    host_tests(binary)?;
    if let Some(vm) = &options.vm {
        let script = workspace_root()
            .join("scripts")
            .join("Deploy-SampleToVm.ps1");
        for dir in package_dirs()? {
            run(command(Tool::Powershell)
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

/// Options of `cargo xtask demo`.
#[derive(Args)]
pub(crate) struct DemoOptions {
    /// Show every tool's output inline instead of writing it to `target/driver/demo.log`.
    #[arg(long)]
    pub(crate) verbose: bool,
}

/// What the demo does not prove, said plainly every time.
const NOT_PROVEN: &str = "\
Not proven by this run:
  - Windows itself: the kernel is usersim, a user-mode simulation (pool, IRQL, NMR, ETW, IRPs);
    IRQL is simulated per thread, there is no real preemption, DPC or interrupt.
  - The eBPF core: core-sim stands in for ebpfcore.sys; BPF programs run in core-sim's own
    interpreter with a few load-time checks, not the PREVAIL verifier; no JIT, no bpf2c native
    images; the eBPF store entries are exported (.reg, script) but never read by eBPF for Windows.
  - Loading by Windows: the images are loaded by our PE loader, not the Windows loader; the
    signature is a self-made test certificate, verified by osslsigncode only.
  - Performance: nothing here is timed on a kernel; host timings say nothing about it.";

/// `cargo xtask demo`: build, sign and package the three samples, then run the signed images end
/// to end, with a report that fits a screen and says what it proves and what it does not.
pub(crate) fn demo(options: &DemoOptions) -> Result<()> {
    let root = workspace_root();
    println!(
        "cargo xtask demo: the sample drivers, built as real .sys images, then run on the host"
    );
    println!("  workspace {}", root.display());
    if !options.verbose {
        let log = output_dir().join("demo.log");
        crate::exec::log_to(&log)?;
        println!(
            "  full tool output: {} (--verbose shows it here)",
            log.display()
        );
    }
    crate::prereqs::ensure(crate::prereqs::Scope::Sdk)?;
    println!(
        "[1/4] build: core/alloc from source for x86_64-pc-windows-msvc, fat-LTO link, checks (xtask + pefile)"
    );
    let built = build_drivers(None)?;
    println!("[2/4] test-sign (osslsigncode, SHA-256) and verify; checks again");
    let signed = sign()?;
    println!("[3/4] package (.sys .pdb .map .inf .wprp .guid .cer)");
    let packages = package()?;
    let mut images = Vec::new();
    for sys in &signed {
        let bytes = std::fs::read(sys).with_context(|| format!("read {}", sys.display()))?;
        let sha = sha256_hex(&bytes);
        println!(
            "  image  {} sha256 {sha} ({} bytes)",
            sys.display(),
            bytes.len()
        );
        images.push((sys.clone(), sha));
    }
    println!(
        "[4/4] run: the signed images loaded by ebpf-ext-pe-loader, imports bound to usersim, driven by core-sim"
    );
    run(command(Tool::Cargo).args([
        "build",
        "--quiet",
        "--package",
        "sample-harness",
        "--bin",
        "sample-demo",
    ]))?;
    let mut demo = command(Tool::Cargo);
    demo.args([
        "run",
        "--quiet",
        "--package",
        "sample-harness",
        "--bin",
        "sample-demo",
        "--",
        "--binary",
    ])
    .env(DRIVER_DIR_VAR, output_dir())
    .current_dir(root);
    for (sys, sha) in &images {
        demo.arg("--expect").arg(format!("{}={sha}", sys.display()));
    }
    if options.verbose {
        demo.arg("--all-traces");
    }
    let status = demo.status().context("start sample-demo")?;
    if !status.success() {
        bail!("the end-to-end run failed ({status})");
    }
    println!("\nProven by this run:");
    println!(
        "  - {} driver images built for x86_64-pc-windows-msvc and checked: native subsystem,",
        built.len()
    );
    println!(
        "    entry DriverEntry, FORCE_INTEGRITY, no W+X section, correct checksum (xtask and pefile);"
    );
    println!(
        "    Authenticode-signed and verified; {} packages laid out.",
        packages.len()
    );
    println!(
        "  - The very bytes signed (SHA-256 above) were loaded and ran: DriverEntry, program-info and"
    );
    println!(
        "    hook providers over NMR, attach, events, verdicts, helpers, IOCTLs, detach, unload."
    );
    println!(
        "  - The linked crates gave reports identical to the images', trace events and BPF runs"
    );
    println!("    (clang-built C programs calling the drivers' helpers by id) included;");
    println!("    no pool allocation was left behind.");
    println!("{NOT_PROVEN}");
    if let Some(log) = crate::exec::log_path() {
        println!("Tool output: {}", log.display());
    }
    Ok(())
}
