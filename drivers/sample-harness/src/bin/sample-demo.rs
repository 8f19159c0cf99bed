//! Runs both samples end to end on the host and prints what happened.
//!
//! `sample-demo --binary` (what `cargo xtask demo` runs) loads the signed images (from
//! `$EBPF_EXT_DRIVER_DIR`, else the workspace's `target/driver/`) with the PE loader and drives
//! them, then runs the same scenarios against the sample crates linked into this process and
//! checks that both reports are identical. Each loaded image's absolute path and SHA-256 are
//! printed; `--expect PATH=SHA256` (repeatable) makes the run fail unless the image loaded
//! from `PATH` has that hash and every expected image was loaded. Without `--binary` only the
//! linked crates run. `--all-traces` lists every trace event. Each sample then runs its BPF
//! program (`drivers/<sample>/bpf/`, compiled with clang) through core-sim, in one line;
//! sample-ext (the port of eBPF for Windows' sample extension) runs only its BPF scenario.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host binary"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use ebpf_ext_core_sim::bpf::BpfObject;
use ebpf_ext_usersim::Kernel;
use sample_harness::bpf::BpfReport;
use sample_harness::{Target, binary, bpf, ext, net, ntos};

/// The trace events: all of them with `--all-traces`; otherwise the counts, and each distinct
/// event that carries a status (the refusals and failures), once, with how often it came.
fn print_traces(traces: &[String], all: bool) {
    let entry_exit = traces
        .iter()
        .filter(|l| l.contains("Enter=") || l.contains("Exit="))
        .count();
    let mut with_status: Vec<(&String, usize)> = Vec::new();
    for line in traces.iter().filter(|l| l.contains(" status=")) {
        match with_status.iter_mut().find(|(l, _)| *l == line) {
            Some((_, count)) => *count += 1,
            None => with_status.push((line, 1)),
        }
    }
    let shown: usize = with_status.iter().map(|(_, n)| n).sum();
    println!(
        "  trace events: {} ({entry_exit} function entry/exit, {} informational, {shown} with a status{})",
        traces.len(),
        traces.len() - entry_exit - shown,
        if all { "" } else { ", listed below" }
    );
    if all {
        for line in traces {
            println!("    {line}");
        }
        return;
    }
    for (line, count) in with_status {
        let line = line.strip_prefix("EbpfExtGenericMessage ").unwrap_or(line);
        if count > 1 {
            println!("    {count}x {line}");
        } else {
            println!("    {line}");
        }
    }
}

fn quiet(_: &str) {}

/// A scenario of the harness: (kernel, target, narrator) to report.
type Scenario<R> = fn(&Kernel, Target<'_>, sample_harness::Narrator<'_>) -> Result<R, String>;

/// A BPF scenario of the harness: (kernel, target, object, narrator) to report.
type BpfScenario =
    fn(&Kernel, Target<'_>, &BpfObject, sample_harness::Narrator<'_>) -> Result<BpfReport, String>;

/// A sample's BPF program: its index in [`bpf::samples`], its source, its scenario.
type BpfProgram = (usize, &'static str, BpfScenario);

/// Runs the BPF scenario and returns its report and its one summary line (the `BPF` line it
/// narrates).
fn run_bpf(
    kernel: &Kernel,
    target: Target<'_>,
    object: &BpfObject,
    scenario: BpfScenario,
) -> Result<(BpfReport, String), String> {
    let mut summary = String::new();
    let report = scenario(kernel, target, object, &mut |line: &str| {
        if line.starts_with("BPF") {
            line.clone_into(&mut summary);
        }
    })?;
    Ok((report, summary))
}

/// The hashes `--expect` asked for, by absolute path; each is removed when its image loads.
type Expected = BTreeMap<PathBuf, String>;

/// Runs one sample: against its image in binary mode (then against the linked crate, which
/// must give the same report), else against the linked crate.
fn sample<R: PartialEq + core::fmt::Debug>(
    package: &str,
    image_name: &str,
    native: sample_harness::DriverEntry,
    scenario: Scenario<R>,
    traces: fn(&R) -> &[String],
    program: BpfProgram,
    expected: Option<&mut Expected>,
) -> Result<(), String> {
    let (index, source, bpf_scenario) = program;
    let object = bpf::build(&bpf::samples()[index], source)?;
    // The next line (program type and helpers) says DriverEntry ran; the BPF line takes the
    // place of "load: DriverEntry", so the demo stays one screen.
    let mut say = |line: &str| {
        if line != "load: DriverEntry" {
            println!("  {line}");
        }
    };
    let kernel = Kernel::new();
    let loaded = expected
        .is_some()
        .then(|| binary::load_sample_file(&kernel, image_name))
        .transpose()?;
    if let (Some(loaded), Some(expected)) = (&loaded, expected) {
        print!(
            "{package}: loaded {}\n  sha256 {}",
            loaded.path.display(),
            loaded.sha256
        );
        match expected.remove(&loaded.path) {
            Some(sha) if sha == loaded.sha256 => println!(" = the image built and signed above"),
            Some(sha) => {
                return Err(format!(
                    "{} was built with sha256 {sha} but {} was loaded",
                    loaded.path.display(),
                    loaded.sha256
                ));
            }
            None if expected.is_empty() => println!(),
            None => {
                return Err(format!(
                    "{} is not one of the images built: {:?}",
                    loaded.path.display(),
                    expected.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    let target = loaded
        .as_ref()
        .map_or(Target::Native(native), |l| Target::Image(&l.image));
    println!("{package}: {}, on usersim", target.describe());
    let report = scenario(&kernel, target, &mut say)?;
    print_traces(
        traces(&report),
        std::env::args().any(|a| a == "--all-traces"),
    );
    let (bpf_report, summary) = run_bpf(&kernel, target, &object, bpf_scenario)?;
    drop(kernel);
    if let Some(loaded) = loaded {
        loaded.image.unload();
        let kernel = Kernel::new();
        let linked = scenario(&kernel, Target::Native(native), &mut quiet)?;
        if linked != report {
            return Err(format!(
                "the image and the linked crate differ:\n image:  {report:?}\n linked: {linked:?}"
            ));
        }
        let (linked_bpf, _) = run_bpf(&kernel, Target::Native(native), &object, bpf_scenario)?;
        if linked_bpf != bpf_report {
            return Err(format!(
                "the image's and the linked crate's BPF runs differ:\n image:  {bpf_report:?}\n linked: {linked_bpf:?}"
            ));
        }
        println!(
            "  {summary}\n  the linked crate gives identical reports (every result, trace event, BPF observation)"
        );
    } else {
        println!("  {summary}");
    }
    Ok(())
}

/// `--expect PATH=SHA256` arguments.
fn expected_images() -> Result<Expected, String> {
    let mut expected = Expected::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--expect" {
            let value = args.next().ok_or("--expect needs PATH=SHA256")?;
            let (path, sha) = value
                .rsplit_once('=')
                .ok_or_else(|| format!("--expect {value}: not PATH=SHA256"))?;
            expected.insert(PathBuf::from(path), sha.to_owned());
        }
    }
    Ok(expected)
}

fn run() -> Result<(), String> {
    let binary_mode = std::env::args().any(|a| a == "--binary");
    let mut expected = expected_images()?;
    let checking = !expected.is_empty();
    sample(
        "sample-netebpf-ext",
        "sample_netebpf_ext",
        sample_netebpf_ext::driver_entry,
        net::scenario,
        |r| &r.traces,
        (0, "sample_net.c", bpf::net_scenario),
        binary_mode.then_some(&mut expected),
    )?;
    sample(
        "sample-ntos-ext",
        "sample_ntos_ext",
        sample_ntos_ext::driver_entry,
        ntos::scenario,
        |r| &r.traces,
        (1, "sample_process.c", ntos::bpf_scenario),
        binary_mode.then_some(&mut expected),
    )?;
    // sample-ext (eBPF for Windows' sample extension): its BPF scenario, image = linked crate.
    println!("{}", ext::demo(binary_mode.then_some(&mut expected))?);
    if checking && !expected.is_empty() {
        return Err(format!(
            "built but never loaded: {:?}",
            expected.keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}
