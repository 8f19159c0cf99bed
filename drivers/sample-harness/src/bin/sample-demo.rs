//! Runs both samples end to end on the host and prints what happened.
//!
//! `sample-demo --binary` (what `cargo xtask demo` runs) loads the signed images from
//! `target/driver/` with the PE loader and drives them, then runs the same scenarios against
//! the sample crates linked into this process and checks that both reports are identical.
//! Without `--binary` only the linked crates run.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host binary"
)]

use std::process::ExitCode;

use ebpf_ext_usersim::Kernel;
use sample_harness::{Target, binary, net, ntos};

fn print_traces(traces: &[String]) {
    let shown: Vec<&String> = traces
        .iter()
        .filter(|l| !l.contains("Enter=") && !l.contains("Exit="))
        .collect();
    println!(
        "  trace events: {} ({} function entry/exit events not shown)",
        traces.len(),
        traces.len() - shown.len()
    );
    for line in shown {
        println!("    {line}");
    }
}

fn quiet(_: &str) {}

/// A scenario of the harness: (kernel, target, narrator) to report.
type Scenario<R> = fn(&Kernel, Target<'_>, sample_harness::Narrator<'_>) -> Result<R, String>;

/// Runs one sample: against its image in binary mode (then against the linked crate, which
/// must give the same report), else against the linked crate.
fn sample<R: PartialEq + core::fmt::Debug>(
    package: &str,
    image_name: &str,
    native: sample_harness::DriverEntry,
    scenario: Scenario<R>,
    traces: fn(&R) -> &[String],
    binary_mode: bool,
) -> Result<(), String> {
    let mut say = |line: &str| println!("  {line}");
    let kernel = Kernel::new();
    let image = binary_mode
        .then(|| binary::load_sample(&kernel, image_name))
        .transpose()?;
    let target = image.as_ref().map_or(Target::Native(native), Target::Image);
    println!("{package}: {}, on usersim", target.describe());
    let report = scenario(&kernel, target, &mut say)?;
    print_traces(traces(&report));
    drop(kernel);
    if let Some(image) = image {
        image.unload();
        let kernel = Kernel::new();
        let linked = scenario(&kernel, Target::Native(native), &mut quiet)?;
        if linked != report {
            return Err(format!(
                "the image and the linked crate differ:\n image:  {report:?}\n linked: {linked:?}"
            ));
        }
        println!(
            "  the linked crate gives an identical report (every result and trace event above)"
        );
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let binary_mode = std::env::args().any(|a| a == "--binary");
    sample(
        "sample-netebpf-ext",
        "sample_netebpf_ext",
        sample_netebpf_ext::driver_entry,
        net::scenario,
        |r| &r.traces,
        binary_mode,
    )?;
    sample(
        "sample-ntos-ext",
        "sample_ntos_ext",
        sample_ntos_ext::driver_entry,
        ntos::scenario,
        |r| &r.traces,
        binary_mode,
    )
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
