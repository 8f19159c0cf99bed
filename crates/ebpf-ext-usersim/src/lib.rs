//! A user-mode implementation of the Windows kernel routines that `ebpf-ext-sys` declares, so
//! the SDK's kernel code runs unchanged in host tests.
//!
//! This is a simulation, not a mock: pool allocations are tagged, counted and poisoned on
//! free; rundown references block and release like `EX_RUNDOWN_REF`; work items run on real
//! worker threads and reference their device object (so its driver object, and the image a
//! [`DriverObject`] keeps alive) until their routine has returned; NMR matches providers and
//! clients by NPI id and honours pending detaches; every thread has a simulated IRQL, and a
//! routine called above its documented IRQL is a bug check. ETW events are captured and decoded from their TraceLogging metadata.
//!
//! # Runtime contract
//!
//! - A test creates a [`Kernel`], which binds itself to the creating thread. Threads usersim
//!   starts inherit the binding; threads a test starts use [`Kernel::spawn`] or
//!   [`Kernel::bind_current_thread`]. A kernel routine called on an unbound thread aborts the
//!   process naming the routine.
//! - A bug check prints the stop code, the routine and the IRQL, then aborts the process, as
//!   it would halt a machine. Run tests one process per test (`cargo nextest`); a test that
//!   expects a bug check runs the scenario in a child process with [`expect_bugcheck`].
//! - Test binaries must reference this crate (`use ebpf_ext_usersim as _;`) or the linker
//!   drops it and the kernel symbols are missing.
//! - Only routines that can fail on Windows can be fault-injected ([`Fault`],
//!   [`FAULTABLE_APIS`]); some with a failure status the test chooses
//!   ([`STATUS_FAULTABLE_APIS`]); a few, whose failure a driver cannot recover from, only
//!   one call at a time and never in a sweep ([`UNRECOVERABLE_FAULTABLE_APIS`]).
//!
//! Every export is listed in [`exports::EXPORTS`] by module and name, so a loader can bind a
//! driver image's imports to this implementation.
#![expect(non_snake_case, reason = "kernel routines keep their parameter names")]
#![allow(
    clippy::std_instead_of_alloc,
    reason = "host-only crate: std is its allocator and runtime"
)]

mod cpu;
mod devices;
mod etw;
pub mod exports;
mod io;
mod kernel;
mod locals;
mod locks;
mod misc;
mod nmr;
mod pool;
mod process;
mod rundown;
mod security;
pub mod tracelogging;
mod unload;
mod workitem;

pub use cpu::{critical_region_depth, set_current_irql};
pub use devices::DriverObject;
pub use etw::{CapturedEvent, Enablement};
pub use io::{Caller, FileHandle, IoResult, STALE_BYTE};
pub use kernel::{
    BugCheck, CallbackStack, Config, DebugMessage, FAULTABLE_APIS, Fault, Kernel, NO_KERNEL_BOUND,
    STATUS_FAULTABLE_APIS, UNRECOVERABLE_FAULTABLE_APIS, component, expect_bugcheck, kernel_id,
    run_dying_child, set_callback_stack, sweep_allocation_failures, sweep_call_failures,
};
pub use locals::ebpf_ext_usersim_kernel_local;
pub use nmr::{
    MAX_DECLINES, MAX_DEREGISTRATIONS, NmrDecline, NmrDeregistration, NmrRegistration, TestClient,
    attach_client_once, nmr_provider_holds_client,
};
pub use pool::{FREED_POISON, TagUsage, UNINITIALIZED_FILL, pool_allocation_containing, tag_name};
pub use process::{
    ImageFlagsLookup, NewProcess, PROCESS_CLOCK_START, ProcessExit, ProcessIdentity,
    set_loader_image_flags,
};
pub use unload::image_unloaded;
pub use workitem::queue_system_work;
