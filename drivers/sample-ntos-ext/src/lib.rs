//! A port of ntosebpfext's process extension on `ebpf-extension-common`, binary compatible with
//! it: programs built for ntosebpfext's `process` program type run against this driver unchanged.
//!
//! - **Program type** `process` ([`program`]): programs see ntosebpfext's `process_md_t`
//!   ([`ProcessContext`]) and may call `bpf_process_get_image_path`,
//!   `bpf_process_get_account_name` and `bpf_process_get_account_domain`; `context_create`
//!   accepts the notify routine's whole context for test runs.
//! - **Hook** ([`hook`]): any number of programs, no parameter. The process notify routine
//!   is registered when the first program attaches and removed when the last detaches (the
//!   kernel accepts it only from an image linked with `/INTEGRITYCHECK`, which
//!   `cargo xtask build-drivers` sets).
//! - **Verdict**: on creation, the first program returning a failure `NTSTATUS` denies the
//!   creation with that status and later programs do not run; on delete results are ignored.
//!
//! # Where this port differs from ntosebpfext, and why
//!
//! - `creation_time`, `exit_time`, `process_exit_code` and the token SID are 0 at notify time,
//!   and the account helpers return `-ENOENT` unless a test run supplies the strings: the SDK
//!   does not yet declare the kernel routines that read them (`PsGetProcessCreateTimeQuadPart`,
//!   `PsGetProcessExitTime`, `PsGetProcessExitStatus`, the primary-token and SID routines,
//!   `SecLookupAccountSid`).
//! - A program whose invoke fails stops the chain (the SDK's `invoke_with`); ntosebpfext counts
//!   it as status 0 and runs the rest.
//! - The `process` and `create_info` pointers of the notify context are NULL (programs cannot
//!   see them), and the command line's `MaximumLength` equals its `Length`.
//! - Bytes 16–63 of the context header in a test run's `ctx_out` are zero; ntosebpfext echoes
//!   the caller's.
//! - The generated header declares `operation` as a `uint32_t` (a bit-field has no offset to
//!   check); the value and the bytes programs read are the same.
#![no_std]

// Host builds of the `cdylib` need a panic handler and unwinding: the host's `std`'s.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod hook;
pub mod program;
mod test_run;

pub use hook::driver_entry;
pub use program::{NotifyContext, OPERATION_CREATE, OPERATION_DELETE, ProcessContext};

tracelogging::define_provider!(
    TRACE_PROVIDER,
    "SampleNtosEbpfExtProvider",
    id("32dc5ea0-f310-45e9-87bd-78229f07bdf2")
);
