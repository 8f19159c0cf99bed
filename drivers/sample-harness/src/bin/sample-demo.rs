//! Runs every sample scenario on the host and prints what happened.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host binary"
)]

use std::process::ExitCode;

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

fn main() -> ExitCode {
    let mut say = |line: &str| println!("  {line}");
    {
        let kernel = ebpf_ext_usersim::Kernel::new();
        println!("sample-netebpf-ext (linked into this process, on usersim):");
        match sample_harness::net::scenario(&kernel, sample_netebpf_ext::driver_entry, &mut say) {
            Ok(report) => print_traces(&report.traces),
            Err(failure) => {
                eprintln!("FAILED: {failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    let kernel = ebpf_ext_usersim::Kernel::new();
    println!("sample-ntos-ext (linked into this process, on usersim):");
    match sample_harness::ntos::scenario(&kernel, sample_ntos_ext::driver_entry, &mut say) {
        Ok(report) => print_traces(&report.traces),
        Err(failure) => {
            eprintln!("FAILED: {failure}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
