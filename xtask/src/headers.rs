//! `headers`: the C headers BPF program authors include, generated from each sample's
//! program information by `sample-harness`'s `gen-headers` (written under
//! `drivers/<sample>/bpf/include/`, or only checked with `write == false`).

use anyhow::Result;

use crate::exec;
use crate::prereqs::{Tool, command};

/// Writes the samples' generated headers (`write`), or fails if a checked-in one differs
/// from what the samples' program information gives.
///
/// # Errors
/// If `gen-headers` fails to build or run, or (when checking) a header is out of date.
pub(crate) fn headers(write: bool) -> Result<()> {
    let mut cmd = command(Tool::Cargo);
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "sample-harness",
        "--bin",
        "gen-headers",
    ]);
    if !write {
        cmd.args(["--", "--check"]);
    }
    exec::run(&mut cmd)
}
