//! Drives the sample extension drivers end to end on the host, as the eBPF core and a
//! user-mode client would: load (`DriverEntry`), attach programs with parameters through
//! core-sim, fire events, check verdicts, helper results and trace events, detach, unload,
//! and check that nothing leaked.
//!
//! A scenario takes a [`Target`], so the same scenario runs against the sample crates linked
//! into this process and against their built, signed images loaded by `ebpf-ext-pe-loader`
//! ([`binary`]). The driver-generic parts (loading either target, opening the program type,
//! traces, helper calls, statuses) are `ebpf-ext-testing`'s, re-exported here. Each scenario
//! checks its own expectations and returns a report ([`net::NetReport`]) whose equality
//! across runs is what "the same behaviour" means; `cargo xtask demo` prints it.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host-only crate"
)]

pub use ebpf_ext_testing::{
    DriverEntry, Failure, LoadedDriver, Narrator, Opened, Target, call_helper, expect, open,
    status, trace_lines,
};

pub mod binary;
pub mod bpf;
pub mod ext;
pub mod net;
pub mod ntos;
