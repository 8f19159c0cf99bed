//! The `sample_process` program type: context layout, the image-path helper and the program
//! data the SDK publishes.

use core::mem::offset_of;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;
use ebpf_extension_common::sys::wdm::PASSIVE_LEVEL;

/// Program type GUID of `sample_process`.
pub const PROGRAM_TYPE: GUID = GUID::from_u128(0x48e0b74c_b344_447d_b7a3_906268a0e90a);
/// `bpf_prog_type` number of `sample_process`.
pub const BPF_PROG_TYPE: u32 = 1001;
/// Helper id of `sample_process_get_image_path(ctx, buffer, size)`.
pub const HELPER_GET_IMAGE_PATH: u32 = 0x1_0000;
/// [`ProcessContext::operation`] for a creation.
pub const OPERATION_CREATE: u32 = 0;
/// [`ProcessContext::operation`] for an exit.
pub const OPERATION_EXIT: u32 = 1;

/// What a `sample_process` program sees.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcessContext {
    /// First byte of the command line (UTF-16LE), or NULL when unknown (and on exit).
    pub command_start: *mut u8,
    /// One past its last byte.
    pub command_end: *mut u8,
    /// The process.
    pub process_id: u64,
    /// Its parent (0 on exit).
    pub parent_process_id: u64,
    /// The process whose thread created it (0 on exit).
    pub creating_process_id: u64,
    /// The creating thread (0 on exit).
    pub creating_thread_id: u64,
    /// [`OPERATION_CREATE`] or [`OPERATION_EXIT`].
    pub operation: u32,
    /// Zero.
    pub reserved: u32,
}

/// The context as the extension builds it: the program's view first, then what only helpers
/// read.
#[repr(C)]
pub(crate) struct NotifyContext {
    pub(crate) public: ProcessContext,
    /// The image path (NULL on exit).
    pub(crate) image: *const UNICODE_STRING,
}

/// `sample_process_get_image_path(ctx, buffer, size)`: copies the image path (UTF-16LE, no
/// terminator) into `buffer` and returns its length in bytes; 0 if there is none (on exit);
/// -1 if `size` is too small (nothing is copied).
fn get_image_path(context: &NotifyContext, buffer: &mut [u8]) -> u64 {
    // SAFETY: NULL or the notify routine's image name, valid during the invocation. Programs
    // of this type see only contexts the notify routine builds (the program data offers no
    // `context_create`, whose test-run context would be only the public part).
    let Some(image) = (unsafe { context.image.as_ref() }) else {
        return 0;
    };
    let len = usize::from(image.Length);
    if image.Buffer.is_null() || len == 0 {
        return 0;
    }
    let Some(out) = buffer.get_mut(..len) else {
        return u64::MAX; // -1
    };
    // SAFETY: `len` readable bytes in the string, valid during the invocation.
    out.copy_from_slice(unsafe { core::slice::from_raw_parts(image.Buffer.cast::<u8>(), len) });
    len as u64
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<ProcessContext>(
    Some(offset_of!(ProcessContext, command_start)),
    Some(offset_of!(ProcessContext, command_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(
    c"sample_process",
    &CONTEXT,
    PROGRAM_TYPE,
    BPF_PROG_TYPE,
    false,
);
helpers! {
    context NotifyContext;
    /// The helper's prototype.
    static HELPERS;
    /// Its address.
    static ADDRESSES;
    HELPER_GET_IMAGE_PATH, c"sample_process_get_image_path" => get_image_path(Context, BytesMut);
}
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);

/// The program data the program-information provider publishes.
pub static PROGRAM_DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_required_irql(PASSIVE_LEVEL)
    .checked();
