//! The `process` program type of ntosebpfext: `process_md_t`, the three process helpers, the
//! notify routine's internal context and the `context_create`/`context_destroy` pair that
//! builds it for test runs (`bpf_prog_test_run`).

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;
use ebpf_extension_common::sys::wdm::PASSIVE_LEVEL;

use crate::hook::TAG;

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
fn copy_string(source: &UNICODE_STRING, out: &mut [u8]) -> u64 {
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

/// What `context_create` allocates: the context and the copies its strings point to.
struct TestRun {
    context: ProgramContext<NotifyContext>,
    _strings: [Option<PoolArray<u8>>; 4],
}

/// Where the program's context lies in a [`TestRun`].
const PUBLIC_OFFSET: usize = offset_of!(TestRun, context)
    + offset_of!(ProgramContext<NotifyContext>, context)
    + offset_of!(NotifyContext, public);

fn strings(context: &mut NotifyContext) -> [&mut UNICODE_STRING; 4] {
    [
        &mut context.command_line,
        &mut context.image_file_name,
        &mut context.account_name,
        &mut context.account_domain,
    ]
}

/// Builds a test-run context from `process_notify_context_t` and the four strings packed in
/// `data` (command line, image, account name, account domain).
fn create(
    mut context: NotifyContext,
    data: Option<&[u8]>,
) -> Result<PoolBox<TestRun>, ebpf_result_t> {
    let mut data = data.ok_or(EBPF_INVALID_ARGUMENT)?;
    let strings_in = strings(&mut context);
    let total: usize = strings_in.iter().map(|s| usize::from(s.Length)).sum();
    if data.len() < total || strings_in.iter().any(|s| s.Length > s.MaximumLength) {
        return Err(EBPF_INVALID_ARGUMENT);
    }
    let mut owned = [None, None, None, None];
    for (string, slot) in strings_in.into_iter().zip(&mut owned) {
        let (len, max) = (
            usize::from(string.Length),
            usize::from(string.MaximumLength),
        );
        string.Buffer = ptr::null_mut();
        if len == 0 {
            string.MaximumLength = 0;
            continue;
        }
        let mut copy = PoolArray::try_new(max, TAG).map_err(|_| EBPF_NO_MEMORY)?;
        let (bytes, rest) = data.split_at(len);
        copy[..len].copy_from_slice(bytes);
        data = rest;
        string.Buffer = copy.as_mut_ptr().cast();
        *slot = Some(copy);
    }
    let command = &context.command_line;
    context.public.command_start = command.Buffer.cast();
    context.public.command_end = command
        .Buffer
        .cast::<u8>()
        .wrapping_add(command.Length.into());
    (context.process, context.create_info) = (ptr::null_mut(), ptr::null_mut());
    let run = TestRun {
        context: ProgramContext::new(context),
        _strings: owned,
    };
    PoolBox::try_new(run, TAG).map_err(|_| EBPF_NO_MEMORY)
}

unsafe extern "win64" fn context_create(
    data: *const u8,
    data_size: usize,
    context_in: *const u8,
    context_size: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    // SAFETY: the core passes a writable out slot.
    unsafe { context.write(ptr::null_mut()) };
    if context_in.is_null() || context_size < NOTIFY_CONTEXT_SIZE {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: `context_size` readable bytes (checked ≥ the struct); every field is an integer
    // or a raw pointer, valid for any bits, and the pointers are replaced before any use.
    let input = unsafe {
        context_in
            .wrapping_add(64)
            .cast::<NotifyContext>()
            .read_unaligned()
    };
    // SAFETY: NULL or `data_size` readable bytes, for the duration of the call.
    let data = (!data.is_null()).then(|| unsafe { core::slice::from_raw_parts(data, data_size) });
    match create(input, data) {
        Ok(run) => {
            let public = run
                .into_raw()
                .as_ptr()
                .cast::<u8>()
                .wrapping_add(PUBLIC_OFFSET);
            // SAFETY: as above.
            unsafe { context.write(public.cast()) };
            EBPF_SUCCESS
        }
        Err(error) => error,
    }
}

unsafe extern "win64" fn context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size: *mut usize,
    context_out: *mut u8,
    context_size: *mut usize,
) {
    let public = context.cast::<u8>();
    let Some(start) =
        ptr::NonNull::new(public.wrapping_sub(PUBLIC_OFFSET)).filter(|_| !public.is_null())
    else {
        return;
    };
    // SAFETY: a context `context_create` made (`start` is its box), handed back once.
    let run = unsafe { PoolBox::from_raw(start.cast::<TestRun>(), TAG) };
    let mut out = run.context.context;
    // SAFETY: the core passes the capacities in both size slots, NULL buffers with any size.
    let data_capacity = unsafe { *data_size };
    // SAFETY: as above.
    let context_capacity = unsafe { *context_size };
    let total: usize = strings(&mut out)
        .iter()
        .map(|s| usize::from(s.Length))
        .sum();
    let mut written = 0;
    if !data_out.is_null() && data_capacity >= total {
        // SAFETY: `data_capacity` writable bytes.
        let mut rest = unsafe { core::slice::from_raw_parts_mut(data_out, data_capacity) };
        for string in strings(&mut out) {
            let (head, tail) = rest.split_at_mut(usize::from(string.Length));
            copy_string(string, head);
            rest = tail;
        }
        written = total;
    }
    for string in strings(&mut out) {
        string.Buffer = ptr::null_mut();
    }
    (out.public.command_start, out.public.command_end) = (ptr::null_mut(), ptr::null_mut());
    let fits = !context_out.is_null() && context_capacity >= NOTIFY_CONTEXT_SIZE;
    if fits {
        // SAFETY: `NOTIFY_CONTEXT_SIZE` writable bytes: the header as the core left it...
        unsafe { ptr::copy_nonoverlapping(public.wrapping_sub(64), context_out, 64) };
        // SAFETY: ...then the context with its pointers cleared.
        unsafe {
            context_out
                .wrapping_add(64)
                .cast::<NotifyContext>()
                .write_unaligned(out);
        }
    }
    // SAFETY: the size slots are writable.
    unsafe { *data_size = written };
    // SAFETY: as above.
    unsafe { *context_size = if fits { NOTIFY_CONTEXT_SIZE } else { 0 } };
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
    .with_context_functions(context_create, context_destroy)
    .with_required_irql(PASSIVE_LEVEL)
    .checked();
