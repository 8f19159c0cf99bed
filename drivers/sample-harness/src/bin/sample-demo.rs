//! Runs every sample scenario on the host and prints what happened.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host binary"
)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let kernel = ebpf_ext_usersim::Kernel::new();
    let mut say = |line: &str| println!("  {line}");
    println!("sample-netebpf-ext (linked into this process, on usersim):");
    match sample_harness::net::scenario(&kernel, sample_netebpf_ext::driver_entry, &mut say) {
        Ok(report) => {
            println!("  trace events ({}):", report.traces.len());
            for line in report
                .traces
                .iter()
                .filter(|l| !l.contains("Enter=") && !l.contains("Exit="))
            {
                println!("    {line}");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}
