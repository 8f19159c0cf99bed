//! The `process` program type of ntosebpfext: `process_md_t`, the three process helpers
//! (the account ones resolving the token's SID lazily, once per notification), the notify
//! routine's internal context and the `context_create`/`context_destroy` pair that builds it
//! for test runs (`bpf_prog_test_run`).

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::{self, NonNull};

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::{AccountLookupError, lookup_account};
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;
use ebpf_extension_common::sys::ntstatus::{
    STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_SID,
};
use ebpf_extension_common::sys::wdm::PASSIVE_LEVEL;
use ebpf_extension_common::trace::trace_message_status;

use crate::hook::TAG;
use crate::test_run;

/// `EBPF_PROGRAM_TYPE_PROCESS`.
pub const PROGRAM_TYPE: GUID = GUID::from_u128(0x22ea7b37_1043_4d0d_b60d_cafa1c7b638e);
/// `BPF_PROG_TYPE_PROCESS`.
pub const BPF_PROG_TYPE: u32 = 6;
/// `BPF_FUNC_process_get_image_path`.
pub const HELPER_GET_IMAGE_PATH: u32 = 0x1_0000;
/// `BPF_FUNC_process_get_account_name`.
pub const HELPER_GET_ACCOUNT_NAME: u32 = 0x1_0001;
/// `BPF_FUNC_process_get_account_domain`.
pub const HELPER_GET_ACCOUNT_DOMAIN: u32 = 0x1_0002;
/// `PROCESS_OPERATION_CREATE`.
pub const OPERATION_CREATE: u32 = 0;
/// `PROCESS_OPERATION_DELETE`.
pub const OPERATION_DELETE: u32 = 1;
/// `TOKEN_SID_MAX_SIZE`.
pub const TOKEN_SID_MAX_SIZE: usize = 68;
/// Size of the test-run context (`process_notify_context_t`, its 64-byte header included).
pub const NOTIFY_CONTEXT_SIZE: usize = size_of::<ProgramContext<NotifyContext>>();

/// What a `process` program sees: ntosebpfext's `process_md_t` (144 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcessContext {
    /// First byte of the command line (UTF-16LE, no terminator); NULL on delete.
    pub command_start: *mut u8,
    /// One past its last byte.
    pub command_end: *mut u8,
    /// The process.
    pub process_id: u64,
    /// Its parent (creation only).
    pub parent_process_id: u64,
    /// The creating process (creation only).
    pub creating_process_id: u64,
    /// The creating thread (creation only).
    pub creating_thread_id: u64,
    /// Creation time (FILETIME).
    pub creation_time: u64,
    /// Exit time (FILETIME; delete only).
    pub exit_time: u64,
    /// Exit status (delete only).
    pub process_exit_code: u32,
    /// [`OPERATION_CREATE`] or [`OPERATION_DELETE`] (upstream: an 8-bit bit-field here).
    pub operation: u32,
    /// Bytes of `token_sid` in use; 0 if not captured.
    pub token_sid_size: u32,
    /// The primary token's user SID (creation only).
    pub token_sid: [u8; TOKEN_SID_MAX_SIZE],
}

/// The notify routine's context (`process_notify_context_t` after its header): the program's
/// view first, then what only helpers read.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NotifyContext {
    /// What programs see.
    pub public: ProcessContext,
    /// The `PEPROCESS` (NULL in test runs).
    pub process: *mut c_void,
    /// The `PPS_CREATE_NOTIFY_INFO` (NULL in test runs).
    pub create_info: *mut c_void,
    /// The command line.
    pub command_line: UNICODE_STRING,
    /// The image file name.
    pub image_file_name: UNICODE_STRING,
    /// The account name, once looked up.
    pub account_name: UNICODE_STRING,
    /// The account domain, once looked up.
    pub account_domain: UNICODE_STRING,
    /// Whether the account strings are final (test runs may supply them).
    pub account_lookup_done: u8,
}

const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

/// Copies `source` into `out`: its length in bytes; `-EINVAL` if `out` is shorter; 0 if empty.
pub(crate) fn copy_string(source: &UNICODE_STRING, out: &mut [u8]) -> u64 {
    let len = usize::from(source.Length);
    let result = match out.get_mut(..len) {
        None => -EINVAL,
        Some(_) if source.Buffer.is_null() || len == 0 => 0,
        Some(out) => {
            // SAFETY: the context's strings hold `Length` readable bytes during the call: the
            // kernel's (notify routine) or context_create's copies (test runs).
            out.copy_from_slice(unsafe { core::slice::from_raw_parts(source.Buffer.cast(), len) });
            i32::from(source.Length)
        }
    };
    i64::from(result).cast_unsigned()
}

fn get_image_path(context: &NotifyContext, out: &mut [u8]) -> u64 {
    copy_string(&context.image_file_name, out)
}

/// The longest account string `SecLookupAccountSid` may return (a `UNICODE_STRING`'s size).
const MAX_ACCOUNT_STRING: u32 = 0xFFFF;

/// Bytes of each inline account buffer the notify routine lends (`ACCOUNT_STRING_INLINE_BYTES`
/// upstream).
pub const ACCOUNT_INLINE_BYTES: usize = 80;

/// The notify routine's inline buffers for the account strings: the lookup tries them first;
/// a retry that needs more puts pool buffers in the context, which [`AccountStrings::reclaim`]
/// frees once the programs have run.
pub(crate) struct AccountStrings {
    name: [u16; ACCOUNT_INLINE_BYTES / 2],
    domain: [u16; ACCOUNT_INLINE_BYTES / 2],
}

impl AccountStrings {
    pub(crate) const fn new() -> Self {
        AccountStrings {
            name: [0; ACCOUNT_INLINE_BYTES / 2],
            domain: [0; ACCOUNT_INLINE_BYTES / 2],
        }
    }

    /// Points `context`'s account strings at the inline buffers, empty, lookup not done.
    /// `self` must stay in place, untouched, until [`AccountStrings::reclaim`].
    pub(crate) fn lend(&mut self, context: &mut NotifyContext) {
        #[expect(clippy::cast_possible_truncation, reason = "80 bytes")]
        let inline = |buffer: &mut [u16]| UNICODE_STRING {
            Length: 0,
            MaximumLength: ACCOUNT_INLINE_BYTES as u16,
            Buffer: buffer.as_mut_ptr(),
        };
        context.account_name = inline(&mut self.name);
        context.account_domain = inline(&mut self.domain);
        context.account_lookup_done = 0;
    }

    /// Frees the pool buffers a lookup left in `context` (those that are not the inline ones)
    /// and clears its account strings.
    pub(crate) fn reclaim(&self, context: &mut NotifyContext) {
        for (string, inline) in [
            (&mut context.account_name, self.name.as_ptr()),
            (&mut context.account_domain, self.domain.as_ptr()),
        ] {
            if string.Buffer.cast_const() != inline {
                // SAFETY: not the inline buffer: NULL or a pool buffer `resolve_account` put
                // there (`MaximumLength` bytes, TAG), not freed yet.
                drop(unsafe { take_pool_buffer(string) });
            }
            *string = EMPTY;
        }
    }
}

const EMPTY: UNICODE_STRING = UNICODE_STRING {
    Length: 0,
    MaximumLength: 0,
    Buffer: ptr::null_mut(),
};

/// Takes back the pool buffer `string` holds (`None` if NULL).
///
/// # Safety
/// `string.Buffer` is NULL or the pointer of a `PoolArray<u8>` of `MaximumLength` bytes with
/// [`TAG`], given up with `into_raw` and not taken back since.
unsafe fn take_pool_buffer(string: &UNICODE_STRING) -> Option<PoolArray<u8>> {
    let buffer = NonNull::new(string.Buffer.cast::<u8>())?;
    // SAFETY: the caller's contract.
    Some(unsafe { PoolArray::from_raw(buffer, usize::from(string.MaximumLength), TAG) })
}

/// Gives `string` a pool buffer of `size` bytes, empty.
fn give_pool_buffer(string: &mut UNICODE_STRING, size: u32) -> Result<()> {
    let size = u16::try_from(size).map_err(|_| Error::InsufficientResources)?;
    let (buffer, _) = PoolArray::<u8>::try_new(usize::from(size), TAG)?.into_raw();
    *string = UNICODE_STRING {
        Length: 0,
        MaximumLength: size,
        Buffer: buffer.as_ptr().cast(),
    };
    Ok(())
}

/// ntosebpfext's lazy account resolution, once per notification: the token SID's account
/// name and domain into the context's strings (the inline buffers first, then, if they are
/// too small, pool buffers and one retry). On failure both strings are cleared, and every
/// later call fails too. Test runs (no process object) resolve nothing: only strings the
/// caller supplied are returned.
fn resolve_account(context: &mut NotifyContext) -> bool {
    let has_both =
        |c: &NotifyContext| !c.account_name.Buffer.is_null() && !c.account_domain.Buffer.is_null();
    if context.account_lookup_done != 0 || context.process.is_null() {
        return context.account_lookup_done != 0 && has_both(context);
    }
    context.account_lookup_done = 1;
    let sid = context.public.token_sid;
    let resolved = match sid.get(..context.public.token_sid_size as usize) {
        Some(sid) if !sid.is_empty() => lookup_with_retry(context, sid),
        _ => Err(STATUS_INVALID_SID),
    };
    if let Err(status) = resolved {
        trace_message_status!(
            Level::Warning,
            keyword::PROCESS,
            "account lookup failed",
            status
        );
        (context.account_name, context.account_domain) = (EMPTY, EMPTY);
    }
    resolved.is_ok()
}

/// Looks `sid` up into the context's strings, retrying once with pool buffers; on failure
/// the pool buffers it gave the strings are freed again (the strings are then cleared).
fn lookup_with_retry(context: &mut NotifyContext, sid: &[u8]) -> core::result::Result<(), i32> {
    // SAFETY: the strings are the notify routine's inline buffers (`AccountStrings::lend`:
    // MaximumLength writable bytes each, alive while the programs run).
    let first =
        unsafe { lookup_account(sid, &mut context.account_name, &mut context.account_domain) };
    let needed = match first {
        Ok(()) => return Ok(()),
        Err(AccountLookupError::Failed(status)) => return Err(status),
        Err(AccountLookupError::BufferTooSmall { name, domain }) => [name, domain],
    };
    let mut pooled = [false; 2];
    let retried = retry(context, sid, needed, &mut pooled);
    if retried.is_err() {
        for (string, pooled) in [&context.account_name, &context.account_domain]
            .into_iter()
            .zip(pooled)
        {
            if pooled {
                // SAFETY: `retry` gave this string a pool buffer (give_pool_buffer), not
                // taken back since.
                drop(unsafe { take_pool_buffer(string) });
            }
        }
    }
    retried
}

/// The retry: pool buffers of the `needed` sizes for the strings whose buffer is smaller
/// (marked in `pooled`), then the lookup again.
fn retry(
    context: &mut NotifyContext,
    sid: &[u8],
    needed: [u32; 2],
    pooled: &mut [bool; 2],
) -> core::result::Result<(), i32> {
    if needed.iter().any(|&size| size > MAX_ACCOUNT_STRING) {
        return Err(STATUS_BUFFER_OVERFLOW);
    }
    let strings = [&mut context.account_name, &mut context.account_domain];
    for ((string, size), pooled) in strings.into_iter().zip(needed).zip(pooled) {
        if size > u32::from(string.MaximumLength) {
            give_pool_buffer(string, size).map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
            *pooled = true;
        }
    }
    // SAFETY: each string is an inline buffer or a pool buffer of MaximumLength bytes.
    unsafe { lookup_account(sid, &mut context.account_name, &mut context.account_domain) }.map_err(
        |error| match error {
            AccountLookupError::Failed(status) => status,
            AccountLookupError::BufferTooSmall { .. } => STATUS_BUFFER_TOO_SMALL,
        },
    )
}

/// The account string, or `-ENOENT` if the account cannot be resolved.
fn account(context: &mut NotifyContext, domain: bool, out: &mut [u8]) -> u64 {
    if !resolve_account(context) {
        return i64::from(-ENOENT).cast_unsigned();
    }
    copy_string(
        if domain {
            &context.account_domain
        } else {
            &context.account_name
        },
        out,
    )
}

fn get_account_name(context: &mut NotifyContext, out: &mut [u8]) -> u64 {
    account(context, false, out)
}

fn get_account_domain(context: &mut NotifyContext, out: &mut [u8]) -> u64 {
    account(context, true, out)
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<ProcessContext>(
    Some(offset_of!(ProcessContext, command_start)),
    Some(offset_of!(ProcessContext, command_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"process", &CONTEXT, PROGRAM_TYPE, BPF_PROG_TYPE, false);
helpers! {
    context NotifyContext;
    /// The helpers' prototypes.
    static HELPERS;
    /// Their addresses.
    static ADDRESSES;
    HELPER_GET_IMAGE_PATH, c"bpf_process_get_image_path" => get_image_path(Context, BytesMut);
    HELPER_GET_ACCOUNT_NAME, c"bpf_process_get_account_name" => get_account_name(ContextMut, BytesMut);
    HELPER_GET_ACCOUNT_DOMAIN, c"bpf_process_get_account_domain" => get_account_domain(ContextMut, BytesMut);
}
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);

/// The program data the program-information provider publishes.
pub static PROGRAM_DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_test_run::<test_run::ProcessTestRun>()
    .with_required_irql(PASSIVE_LEVEL)
    .checked();
