//! A port of ntosebpfext's process extension on `ebpf-extension-common`, binary compatible with
//! it: programs built for ntosebpfext's `process` program type run against this driver unchanged.
//!
//! - **Program type** `process` ([`program`]): programs see ntosebpfext's `process_md_t`
//!   ([`ProcessContext`]) and may call `bpf_process_get_image_path`,
//!   `bpf_process_get_account_name` and `bpf_process_get_account_domain`; `context_create`
//!   accepts the notify routine's whole context for test runs.
//! - **Hook** ([`hook`]): up to 64 programs at once (the capacity of the SDK hook's published
//!   snapshot; ntosebpfext keeps a list and has no limit, so a 65th attach is refused here
//!   with `STATUS_INSUFFICIENT_RESOURCES`), no parameter. The process notify routine
//!   is registered when the first program attaches and removed when the last detaches (the
//!   kernel accepts it only from an image linked with `/INTEGRITYCHECK`, which
//!   `cargo xtask build-drivers` sets).
//! - **Verdict**: programs run in attach order; one whose invoke fails counts as returning 0
//!   and the next runs. On creation the first program returning a failure `NTSTATUS` denies
//!   the creation with that status and later programs do not run; on delete results are
//!   ignored.
//! - **Notify time**: the context carries the creation time (`PsGetProcessCreateTimeQuadPart`),
//!   on delete the exit time and status, on creation the user SID of the primary token, the
//!   kernel's `PEPROCESS` and `PS_CREATE_NOTIFY_INFO` pointers and the kernel's command-line
//!   string. The account helpers resolve the SID lazily, once per notification and for every
//!   program, through the SDK's `AccountNames` (`SecLookupAccountSid` into two 80-byte
//!   buffers, one retry with pool buffers, freed when the notification ends); a failure is
//!   `-ENOENT` for every later call too.
//! - **Test runs** resolve the account the same way when the caller supplies no result
//!   (`account_lookup_done` 0), into the strings it supplied; the pool buffers a lookup takes
//!   are freed by `context_destroy`.
//!
//! # Where this port differs from ntosebpfext, and why
//!
//! - The generated header declares `operation` as a `uint32_t` (a bit-field has no offset to
//!   check); the value and the bytes programs read are the same.
//! - Programs run with the notify context followed by the account strings' owner
//!   ([`program::Notification`]); its first 296 bytes (header included) are upstream's layout,
//!   and its account `UNICODE_STRING`s copy the owner's, refreshed before the notify routine
//!   runs programs and by each account helper call (in a test run, until a helper runs, only
//!   their lengths are meaningful: the owner moved). Programs see only `process_md_t`, and
//!   `ctx_out` clears the pointers, so nothing observable changes.
//! - A test run's `ctx_out` has zero in the two header slots the core writes; ntosebpfext
//!   copies the core's kernel addresses there out to the caller. Its `account_lookup_done`
//!   is 0 or 1; ntosebpfext gives back a non-zero byte other than 1 as the caller wrote it
//!   when no account helper ran.
//!
//! Not confirmed against Windows (usersim's choices, which these tests rely on): whether
//! `SecLookupAccountSid`'s sizes count a terminator, and the status it returns for a SID it
//! cannot parse.
#![no_std]

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
