//! Write eBPF for Windows extension drivers in Rust.
//!
//! This crate re-exports the SDK and adds the driver glue every extension needs:
//!
//! - [`sys`] (raw ABI), [`pool`], [`rundown`], [`trace`], [`program_info`], [`hook`];
//! - [`prelude`]: the names an extension uses day to day;
//! - [`control`]: a named control device restricted to SYSTEM and Administrators, and
//!   `METHOD_BUFFERED` IOCTL plumbing; [`global`]: a driver's state between `DriverEntry` and
//!   unload, borrowed under rundown protection;
//! - [`driver`]: [`driver::ExtensionDriver`] and [`driver_entry!`], which turn an extension
//!   into `DriverEntry`, unload and the dispatch table and keep it running in between, starting
//!   up to [`driver::MAX_PROGRAM_TYPES`] program types and any number of hooks in order;
//!   [`ioctl`](mod@ioctl): typed buffered IOCTLs, refused by the SDK when malformed;
//!   [`irql`]: scoped IRQL raises and a performance-counter stopwatch;
//!   [`process`]: a safe process-creation notify routine; [`profile`]: a control code that
//!   fires the hook N times from user mode and replies with how long it took;
//! - [`helpers!`]: one declaration per helper; [`btf_functions!`]: functions exported to
//!   programs of any type by name (BTF-resolved functions), registered with
//!   [`driver::Start::btf_functions`]; [`program_info::TestRun`]: safe test-run
//!   contexts, with [`any_bit_pattern!`] to read them from the caller's bytes;
//! - also in [`driver`]: an RAII [`driver::Device`] and [`driver::Extension`], which starts tracing,
//!   the program-information provider and a hook provider in order, stops them in reverse and
//!   undoes partial work when a step fails;
//! - with the `driver` feature, on the Windows target: `driver::panic` (a panic handler that
//!   prints the panic with `DbgPrintEx` and bug-checks with [`driver::RUST_PANIC_BUGCHECK`]);
//!   always: the [`global_allocator!`] macro for a pool-backed global allocator, meant for
//!   driver builds.
#![no_std]

// Host builds of an extension's `cdylib` need a panic handler and unwinding: the host's
// `std`'s, linked through this crate so that no extension declares it. The driver build
// (the Windows target) has the SDK's panic handler and no `std`.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub use ebpf_ext_hook as hook;
pub use ebpf_ext_nmr as nmr;
pub use ebpf_ext_pool as pool;
pub use ebpf_ext_program_info as program_info;
pub use ebpf_ext_program_info::{
    any_bit_pattern, btf_functions, helpers, no_padding, program_type,
};
pub use ebpf_ext_rundown as rundown;
pub use ebpf_ext_sys as sys;
pub use ebpf_ext_trace as trace;

pub mod control;
pub mod driver;
pub mod global;
pub mod ioctl;
pub mod irql;
pub mod process;
pub mod profile;

/// The names an extension uses day to day.
pub mod prelude {
    pub use ebpf_ext_hook::{
        AttachParameter, AttachPolicy, AttachRequest, Attached, ContextData, Flow, HookConfig,
        HookExtension, HookProvider, Invocation, ProgramContext,
    };
    pub use ebpf_ext_pool::{PoolArray, PoolBox, PoolTag};
    pub use ebpf_ext_program_info::{
        AnyBitPattern, Anything, BtfFunctionPrototype, BtfFunctionProvider, BtfFunctions, Bytes,
        BytesMut, Cells, CellsMut, Context, ContextDescriptor, ContextMut, CopyTestRun,
        CountedString, DataPointer, DontCare, HelperAddresses, HelperFunction, HelperPrototype,
        Input, Map, MapAndKey, MapKey, MapValueOrNull, NoPadding, Output, PackedStrings,
        ProgramData, ProgramInfo, ProgramInfoProvider, ProgramMap, ProgramTypeDescriptor,
        ReadableCells, SharedBytes, SharedOutput, TestRun, TestRunContext, TestRunData,
        TestRunInput, TestRunOutput, TypedProgramData,
    };
    pub use ebpf_ext_rundown::{CacheAwareRundown, Rundown};
    pub use ebpf_ext_sys::ntdef::GUID;
    pub use ebpf_ext_sys::{Error, Result};

    pub use ebpf_ext_trace::{Level, Tracing, keyword};

    pub use crate::control::{ControlDevice, DeviceControl, complete_request};
    pub use crate::driver::{
        ControlDeviceNames, Device, Extension, ExtensionConfig, ExtensionDriver, ProgramType, Start,
    };
    pub use crate::global::DriverGlobal;
    pub use crate::ioctl::{Call, Completion, Ioctl, Refusal, Request};
    pub use crate::irql::{Stopwatch, at_dispatch, current_processor, repeat};
    pub use crate::{
        any_bit_pattern, btf_functions, driver_entry, helpers, ioctl, no_padding, program_type,
        utf16, wire,
    };
}
