//! The `sample_process` program type: context layout, the image-path helper and the program
//! data the SDK publishes.

use core::mem::offset_of;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_RETURN_TYPE_INTEGER,
};
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
///
/// # Safety
/// `ctx` is a `sample_process` program's context and `buffer` holds `size` writable bytes
/// (the verifier guarantees both).
#[must_use]
pub unsafe extern "win64" fn get_image_path(
    ctx: u64,
    buffer: u64,
    size: u64,
    _: u64,
    _: u64,
) -> u64 {
    // SAFETY: programs of this type get a pointer to `NotifyContext::public`, the first field
    // of a live NotifyContext: the notify routine builds every context they see, because the
    // program data offers no `context_create` (a test-run context would be only the public
    // part, and this read would overrun it; add `context_create` only with a NotifyContext).
    let context = unsafe { &*(ctx as *const NotifyContext) };
    // SAFETY: NULL or the notify routine's image name, valid during the invocation.
    let Some(image) = (unsafe { context.image.as_ref() }) else {
        return 0;
    };
    let len = usize::from(image.Length);
    if image.Buffer.is_null() || len == 0 {
        return 0;
    }
    if size < len as u64 || buffer == 0 {
        return u64::MAX; // -1
    }
    // SAFETY: `len` readable bytes in the string, `size ≥ len` writable bytes in `buffer`.
    unsafe { core::ptr::copy_nonoverlapping(image.Buffer.cast::<u8>(), buffer as *mut u8, len) };
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
static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(
    HELPER_GET_IMAGE_PATH,
    c"sample_process_get_image_path",
    EBPF_RETURN_TYPE_INTEGER,
    &[
        EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ],
)];
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
static FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(get_image_path)];
static ADDRESSES: HelperAddresses = HelperAddresses::new(&FUNCTIONS);

/// The program data the program-information provider publishes.
pub static PROGRAM_DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_required_irql(PASSIVE_LEVEL)
    .checked();
