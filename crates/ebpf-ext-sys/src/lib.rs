//! Raw declarations of the Windows kernel and eBPF for Windows extension ABI, as the SDK uses
//! them: C names, exact x64 layouts, one module per header.
//!
//! - Kernel routines are declared with their real export names in the kernel calling
//!   convention, spelled `extern "win64"` (on Linux `extern "system"` would mean System V). In a
//!   driver they resolve to `ntoskrnl.exe`, `NETIO.SYS` and `ksecdd.sys`; in host tests `ebpf-ext-usersim`
//!   defines the same symbols, so the code under test is the code that ships.
//! - Every `#[repr(C)]` type has its size, alignment and field offsets asserted at compile time
//!   (see [`layout`]), and the types the mingw-w64 DDK headers also define are checked against
//!   those headers by a test.
//! - [`error`] holds the SDK's one error type and the eBPF core's status mapping.
//!
//! The only platform `cfg`s in this crate are the IRQL intrinsic in [`intrin`] and the
//! host-only `host` module (per-kernel storage in host tests).
#![no_std]
#![expect(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    reason = "C names are kept"
)]

#[macro_use]
mod macros;

pub mod ebpf_base;
pub mod ebpf_extension;
pub mod ebpf_extension_uuids;
pub mod ebpf_general_helpers;
pub mod ebpf_program_attach_type_guids;
pub mod ebpf_program_types;
pub mod ebpf_result;
pub mod ebpf_structs;
pub mod ebpf_windows;
pub mod error;
#[cfg(not(target_os = "windows"))]
pub mod host;
pub mod intrin;
pub mod ksecdd;
pub mod layout;
pub mod netioddk;
pub mod ntddk;
pub mod ntdef;
pub mod ntifs;
pub mod ntstatus;
pub mod wdm;

pub use error::{Error, Result};

/// One kernel routine the SDK imports: the module that exports it and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Import {
    /// Exporting module, as a driver's import table names it (`ntoskrnl.exe`, `NETIO.SYS`).
    pub module: &'static str,
    /// Export name.
    pub name: &'static str,
}

/// `DbgPrintEx` is declared by hand (it is variadic), so it is listed here.
const VARIADIC_IMPORTS: &[Import] = &[Import {
    module: "ntoskrnl.exe",
    name: "DbgPrintEx",
}];

/// Every kernel routine declared in this crate, grouped by declaring module. This is the list
/// a driver may import, the list usersim must implement, and the source of the `.def` files.
pub const IMPORTS: &[&[Import]] = &[
    wdm::IMPORTS,
    VARIADIC_IMPORTS,
    ntddk::IMPORTS,
    netioddk::IMPORTS,
    ntifs::IMPORTS,
    ksecdd::IMPORTS,
];

/// Iterates over [`IMPORTS`].
pub fn imports() -> impl Iterator<Item = &'static Import> {
    IMPORTS.iter().flat_map(|group| group.iter())
}
