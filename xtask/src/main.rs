//! Project tasks: `cargo xtask <command>`.

mod ci;
mod drivers;
mod e2e;
mod exec;
mod fuzz;
mod headers;
mod prereqs;
mod public_api;
mod samples;

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
    /// Builds, signs and packages the three sample drivers, then runs them end to end on the host
    /// with a readable report: the project's main job.
    Demo(samples::DemoOptions),
    /// Everything CI checks: formatting, clippy, rustdoc, every test (one process per test),
    /// the no_std crates checked for the driver target, the sample drivers built, checked,
    /// signed and packaged, and the out-of-tree end-to-end test.
    Ci(ci::Options),
    /// Builds the sample drivers into `.sys` images (target/driver/) and checks them.
    BuildDrivers {
        /// Only this driver package.
        #[arg(long)]
        package: Option<String>,
    },
    /// Test-signs the built drivers (a certificate made once per checkout) and verifies them.
    Sign,
    /// Lays out `target/driver/<name>_package/` for each signed driver.
    Package,
    /// Runs the sample scenarios on the host; `--vm NAME` deploys to a Hyper-V VM (Windows).
    TestSample(samples::TestOptions),
    /// Checks every no_std crate for the driver target (x86_64-pc-windows-msvc).
    CheckDriverTarget,
    /// Coverage-guided fuzzing (cargo-fuzz) of the targets in `fuzz/`.
    Fuzz(fuzz::FuzzOptions),
    /// Regenerates the C headers BPF programs include (`drivers/<sample>/bpf/include/`) from
    /// each sample's program information; `--check` only fails if one is out of date.
    Headers {
        /// Check instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// The out-of-tree end-to-end test: a tagged bare repository of this checkout,
    /// `cargo install` of cargo-ebpf-ext from it, and a new extension outside the workspace
    /// built, signed, packaged, exported and tested in both modes (under `target/e2e/`).
    E2e,
    /// The SDK crates' public API (from rustdoc's JSON) compared with `api/<crate>.txt`;
    /// `--bless` rewrites the files after an intended change (see docs/RELEASING.md).
    PublicApi {
        /// Write `api/` instead of comparing.
        #[arg(long)]
        bless: bool,
    },
    /// The prerequisites (`crates/cargo-ebpf-ext/prerequisites.tsv`): what is installed, and
    /// `--install` for what is missing.
    Prereqs(prereqs::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(options) => samples::demo(&options),
        Command::Prereqs(options) => prereqs::prereqs(&options),
        Command::Fuzz(options) => fuzz::fuzz(&options),
        Command::Headers { check } => headers::headers(!check),
        Command::Ci(options) => ci::run_ci(&options),
        Command::BuildDrivers { package } => drivers::build_drivers(package.as_deref()).map(drop),
        Command::Sign => drivers::sign().map(drop),
        Command::Package => drivers::package().map(drop),
        Command::TestSample(options) => samples::test_sample(&options),
        Command::CheckDriverTarget => ci::check_driver_target(),
        Command::E2e => e2e::out_of_tree(),
        Command::PublicApi { bless } => public_api::public_api(bless),
    }
}
