//! `cargo ebpf-ext`: the driver pipeline of eBPF-for-Windows extension drivers, on Linux, for
//! any workspace.
//!
//! - [`workspace`]: the workspace and its driver packages, found at run time with
//!   `cargo metadata` (`--manifest-path`, else the current directory);
//! - [`imports`]: the import libraries' `.def` files, generated from `ebpf-ext-sys`'s
//!   declarations at build time;
//! - [`drivers`]: `build`, `sign`, `package`, `check` and `test`, per package;
//! - [`export`]: `export-program-info`, the store entries read from a driver's signed image;
//! - [`store`]: the eBPF store entries (`.reg` file, install script) from a driver's
//!   published program data;
//! - [`new`]: a new extension repository from the template;
//! - [`prereqs`]: the one list of prerequisites and the only place a program is started;
//! - [`exec`]: running those programs with a clear account of what failed.
//!
//! The SDK's own `cargo xtask` is a client of this library, so there is one implementation.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host-only tool"
)]

pub mod drivers;
pub mod exec;
pub mod export;
pub mod imports;
pub mod new;
mod pe;
pub mod prereqs;
pub mod store;
pub mod workspace;
