//! Project tasks: `cargo xtask <command>`.

mod ci;
mod exec;
mod prereqs;

use clap::{Parser, Subcommand};

/// ebpf-extension-common project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything CI checks: formatting, clippy, rustdoc, every test (one process per test),
    /// and the no_std crates checked for the driver target.
    Ci(ci::Options),
    /// Checks every no_std crate for the driver target (x86_64-pc-windows-msvc).
    CheckDriverTarget,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ci(options) => ci::run_ci(&options),
        Command::CheckDriverTarget => ci::check_driver_target(),
    }
}
