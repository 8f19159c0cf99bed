//! A netebpfext-style eBPF extension, written on `ebpf-extension-common` only: copy it to
//! start your own.
//!
//! - **Program type** `sample_net` ([`program`]): programs see a [`PacketContext`] (the packet
//!   bytes, the interface it arrived on, its protocol) and may call two helpers:
//!   `sample_net_get_interface_id` (reads the context) and `sample_net_checksum` (the internet
//!   checksum of a buffer).
//! - **Hook** ([`hook`]): programs attach with an interface id (a `u32`; 0 or no parameter is
//!   the wildcard), many per interface. An event runs the interface's programs, then the
//!   wildcard ones, and stops at the first that returns [`VERDICT_BLOCK`].
//! - **Control device** `\\.\SampleNetEbpfExt` ([`protocol`], [`control`]):
//!   `IOCTL_SAMPLE_NET_RUN` fires the hook once with a caller-supplied packet and returns the
//!   verdict; `IOCTL_SAMPLE_NET_PROFILE` fires it N times and returns the duration. Both are
//!   typed IOCTLs: the SDK refuses bad lengths, versions and alignment before the handlers
//!   run. Only SYSTEM and Administrators can open the device.
//! - **Driver** ([`driver`]): what `DriverEntry` starts, declared with the SDK's
//!   `ExtensionDriver` and `driver_entry!`.
//!
//! Everything else — `DriverEntry`, unload, the dispatch table, NMR, client validation,
//! rundown, ETW, the device's security — is the SDK's, and the sample has no `unsafe` code.
#![no_std]

// Host builds of the `cdylib` target need a panic handler and unwinding support: the host's
// `std` provides them. Driver builds use the SDK's bug-checking panic handler instead.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod control;
pub mod driver;
pub mod hook;
pub mod program;
pub mod protocol;

pub use driver::driver_entry;
pub use hook::{VERDICT_BLOCK, VERDICT_PERMIT};
pub use program::PacketContext;

tracelogging::define_provider!(
    TRACE_PROVIDER,
    "SampleNetEbpfExtProvider",
    id("e7146841-4832-4f95-8a91-ee61266825a7")
);
