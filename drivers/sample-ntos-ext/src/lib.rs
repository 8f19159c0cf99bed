//! An ntosebpfext-style eBPF extension, written on `ebpf-extension-common` only: process
//! creation and exit run `sample_process` programs, which can deny a creation.
//!
//! - **Program type** `sample_process` ([`program`]): programs see a [`ProcessContext`]
//!   (process, parent and creating ids, the operation, and the command line as their data)
//!   and may call `sample_process_get_image_path` to copy the image path.
//! - **Hook** ([`hook`]): any number of programs attach, with no parameter (ntosebpfext's
//!   process hook policy). The process notify routine (`PsSetCreateProcessNotifyRoutineEx`)
//!   is registered when the first program attaches and removed when the last detaches; the
//!   kernel accepts it only from an image linked with `/INTEGRITYCHECK`, which
//!   `cargo xtask build-drivers` sets.
//! - **Verdict**: on creation, a program returning a failure `NTSTATUS` (negative) denies the
//!   creation with that status; later programs do not run. On exit the return is ignored.
//!
//! Everything else — `DriverEntry`, unload, NMR, client validation, rundown, ETW, the notify
//! routine's registration — is the SDK's; the only `unsafe` is in the helper.
#![no_std]

// Host builds of the `cdylib` need a panic handler and unwinding: the host's `std`'s.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod hook;
pub mod program;

pub use hook::driver_entry;
pub use program::{OPERATION_CREATE, OPERATION_EXIT, ProcessContext};

tracelogging::define_provider!(
    TRACE_PROVIDER,
    "SampleNtosEbpfExtProvider",
    id("32dc5ea0-f310-45e9-87bd-78229f07bdf2")
);
