//! The `process` program type of ntosebpfext: `process_md_t`, the three process helpers, the
//! notify routine's internal context and the `context_create`/`context_destroy` pair that
//! builds it for test runs (`bpf_prog_test_run`).

use core::ffi::c_void;
use core::mem::{offset_of, size_of};

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;
use ebpf_extension_common::sys::wdm::PASSIVE_LEVEL;

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

/// The account strings, or `-ENOENT` if they cannot be had: supplied ones only (the SDK has
/// no `SecLookupAccountSid`, so a captured SID is not resolved).
fn account(context: &NotifyContext, string: &UNICODE_STRING, out: &mut [u8]) -> u64 {
    let resolved = context.account_lookup_done != 0
        && !context.account_name.Buffer.is_null()
        && !context.account_domain.Buffer.is_null();
    if resolved {
        copy_string(string, out)
    } else {
        i64::from(-ENOENT).cast_unsigned()
    }
}

fn get_account_name(context: &NotifyContext, out: &mut [u8]) -> u64 {
    account(context, &context.account_name, out)
}

fn get_account_domain(context: &NotifyContext, out: &mut [u8]) -> u64 {
    account(context, &context.account_domain, out)
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
    HELPER_GET_ACCOUNT_NAME, c"bpf_process_get_account_name" => get_account_name(Context, BytesMut);
    HELPER_GET_ACCOUNT_DOMAIN, c"bpf_process_get_account_domain" => get_account_domain(Context, BytesMut);
}
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);

/// The program data the program-information provider publishes.
pub static PROGRAM_DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_context_functions(test_run::context_create, test_run::context_destroy)
    .with_required_irql(PASSIVE_LEVEL)
    .checked();
