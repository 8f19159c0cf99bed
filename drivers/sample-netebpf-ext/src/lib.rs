//! A netebpfext-style eBPF extension on `ebpf-extension-common` only: a reference for your
//! own, which `cargo ebpf-ext new` starts (a copy of this one builds only in this workspace).
//!
//! - **Program type** `sample_net` ([`program`]): programs see a [`PacketContext`] and may
//!   call `sample_net_get_interface_id` and `sample_net_checksum`.
//! - **Hook** ([`hook`]): programs attach with an interface id (0 or none: every
//!   interface), many per interface; an event runs the interface's programs, then the
//!   wildcard ones, and stops at the first that returns [`VERDICT_BLOCK`].
//! - **Control device** `\\.\SampleNetEbpfExt` ([`protocol`], [`control`]): typed IOCTLs
//!   that fire the hook once, or N times to profile it.
//!
//! `DriverEntry`, unload, the dispatch table, NMR, client validation, rundown, ETW, request
//! validation and the device's security are the SDK's; the sample has no `unsafe` code.
#![no_std]

pub mod control;
pub mod hook;
pub mod program;
pub mod protocol;

pub use control::driver_entry;
pub use hook::{VERDICT_BLOCK, VERDICT_PERMIT};
pub use program::PacketContext;

tracelogging::define_provider!(
    TRACE_PROVIDER,
    "SampleNetEbpfExtProvider",
    id("e7146841-4832-4f95-8a91-ee61266825a7")
);
