//! The `sample` program type as upstream's sample extension publishes it
//! (`sample_ext_program_info.h`, `sample_ext.c`): context layout and descriptor, the seven
//! type-specific helpers, the two global-helper overrides, and `context_create` /
//! `context_destroy` for test runs.
//!
//! Deliberate differences from upstream, all where upstream reads or writes memory it was
//! not given:
//! - `sample_ebpf_extension_find` searches only the `size` bytes it was given (upstream reads
//!   until a NUL, past `data_end` if there is none) and the `find_size` bytes of the string
//!   to find; results, including the no-match value `0 - buffer`, are upstream's.
//! - `sample_ebpf_extension_replace` reads at most `replace_size` bytes of the replacement
//!   (upstream reads until a NUL).
//! - `sample_ext_helper_map_get_value` copies at most the 4 bytes the custom map's object
//!   holds and leaves the rest of the output alone (upstream copies `size` bytes from the
//!   4-byte object).
//! - `context_create` without data sets both data pointers to NULL (upstream keeps the
//!   caller's pointer values, which `context_destroy` then reads through).

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr::{self, NonNull};

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    EBPF_RETURN_TYPE_INTEGER, EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL, ebpf_argument_type_t,
    ebpf_return_type_t,
};
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_PROGRAM_TYPE_SAMPLE;
use ebpf_extension_common::sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_extension_common::sys::ebpf_structs::BPF_PROG_TYPE_SAMPLE;
use ebpf_extension_common::sys::wdm::DISPATCH_LEVEL;

use crate::hook::TAG;

/// Program type GUID of `sample` (`EBPF_PROGRAM_TYPE_SAMPLE`).
pub const PROGRAM_TYPE: GUID = EBPF_PROGRAM_TYPE_SAMPLE;
/// `bpf_prog_type` number of `sample` (`BPF_PROG_TYPE_SAMPLE`).
pub const BPF_PROG_TYPE: u32 = BPF_PROG_TYPE_SAMPLE;
/// The section programs of this type go in (prefix-matched: `sample_ext/0` too).
pub const SECTION: &str = "sample_ext";

/// Helper id of `sample_ebpf_extension_helper_function1(ctx)`: returns 0.
pub const HELPER_FUNCTION1: u32 = 0x1_0000;
/// Helper id of `sample_ebpf_extension_find(buffer, size, find, find_size)`.
pub const HELPER_FIND: u32 = 0x1_0001;
/// Helper id of `sample_ebpf_extension_replace(buffer, size, position, replace, replace_size)`.
pub const HELPER_REPLACE: u32 = 0x1_0002;
/// Helper id of `sample_ebpf_extension_helper_implicit_1()`: the context's `helper_data_1`.
pub const HELPER_IMPLICIT_1: u32 = 0x1_0003;
/// Helper id of `sample_ebpf_extension_helper_implicit_2(value)`: `helper_data_2 + value`.
pub const HELPER_IMPLICIT_2: u32 = 0x1_0004;
/// Helper id of `sample_ext_helper_map_lookup_element(map, key)`: always NULL.
pub const HELPER_MAP_LOOKUP_ELEMENT: u32 = 0x1_0005;
/// Helper id of `sample_ext_helper_map_get_value(map, key, value, size)`.
pub const HELPER_MAP_GET_VALUE: u32 = 0x1_0006;
/// What the `bpf_get_current_pid_tgid` override returns (`SAMPLE_PID_TGID_VALUE`).
pub const PID_TGID_VALUE: u64 = 9999;

/// What a `sample` program sees (`sample_program_context_t`, 32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SampleContext {
    /// First byte of the data.
    pub data_start: *mut u8,
    /// One past its last byte.
    pub data_end: *mut u8,
    /// A 32-bit value (the run's processor number in upstream's profile run).
    pub uint32_data: u32,
    /// A 16-bit value.
    pub uint16_data: u16,
    /// What `sample_ebpf_extension_helper_implicit_1` returns.
    pub helper_data_1: u32,
    /// What `sample_ebpf_extension_helper_implicit_2` adds its argument to.
    pub helper_data_2: u32,
}

const _: () = assert!(size_of::<SampleContext>() == 32);
const _: () = assert!(offset_of!(SampleContext, uint16_data) == 20);
const _: () = assert!(offset_of!(SampleContext, helper_data_1) == 24);
const _: () = assert!(offset_of!(SampleContext, helper_data_2) == 28);

impl SampleContext {
    /// A context over `data` with the helper values the control device sets (1 and 2, as
    /// upstream's RUN).
    #[must_use]
    pub fn new(data: &mut [u8]) -> Self {
        let range = data.as_mut_ptr_range();
        SampleContext {
            data_start: range.start,
            data_end: range.end,
            uint32_data: 0,
            uint16_data: 0,
            helper_data_1: 1,
            helper_data_2: 2,
        }
    }
}

/// `sample_ebpf_extension_helper_function1(ctx)`: 0.
extern "win64" fn helper_function1(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

/// The bytes of `[address, address + size)`, up to the first NUL.
///
/// # Safety
/// `size` readable bytes at `address` (or `size` 0), valid for `'a`.
unsafe fn c_string<'a>(address: u64, size: u64) -> &'a [u8] {
    let size = usize::try_from(size).unwrap_or(0);
    if address == 0 || size == 0 {
        return &[];
    }
    // SAFETY: the caller's precondition.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    bytes.split(|&b| b == 0).next().unwrap_or(&[])
}

/// `sample_ebpf_extension_find(buffer, size, find, find_size)`: the offset of the first
/// occurrence of the NUL-terminated `find` in the NUL-terminated `buffer`; `0 - buffer` if
/// there is none (upstream's value: a NULL match minus the buffer).
extern "win64" fn find(buffer: u64, size: u64, needle: u64, needle_size: u64, _: u64) -> u64 {
    // SAFETY: the prototype declares readable memory of `size` and `needle_size` bytes, which
    // the verifier checked.
    let haystack = unsafe { c_string(buffer, size & 0xFFFF_FFFF) };
    // SAFETY: as above.
    let needle = unsafe { c_string(needle, needle_size & 0xFFFF_FFFF) };
    if needle.is_empty() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .map_or(0u64.wrapping_sub(buffer), |at| at as u64)
}

/// `sample_ebpf_extension_replace(buffer, size, position, replace, replace_size)`: copies
/// the NUL-terminated `replace` over `buffer` from `position`, never writing its last byte;
/// 0, or -1 if `position` is negative or not below `size` (its low 32 bits).
extern "win64" fn replace(buffer: u64, size: u64, position: u64, with: u64, with_size: u64) -> u64 {
    let size = size & 0xFFFF_FFFF;
    let position = position.cast_signed();
    if position < 0 || position.cast_unsigned() >= size {
        return u64::MAX;
    }
    // SAFETY: readable memory of `with_size` bytes, checked by the verifier.
    let with = unsafe { c_string(with, with_size & 0xFFFF_FFFF) };
    let (Ok(size), Ok(position)) = (usize::try_from(size), usize::try_from(position)) else {
        return u64::MAX;
    };
    // SAFETY: the prototype declares readable memory of `size` bytes at `buffer` (the
    // program's data, which the extension lets it write); `position < size`.
    let target = unsafe { core::slice::from_raw_parts_mut(buffer as *mut u8, size) };
    let room = &mut target[position..size - 1];
    let n = with.len().min(room.len());
    room[..n].copy_from_slice(&with[..n]);
    0
}

/// The context a helper with the implicit context receives sixth.
///
/// # Safety
/// `context` is the program's context: a live [`SampleContext`] for the call.
unsafe fn implicit<'a>(context: *const c_void) -> &'a SampleContext {
    // SAFETY: the caller's precondition.
    unsafe { &*context.cast::<SampleContext>() }
}

/// `sample_ebpf_extension_helper_implicit_1()`: the context's `helper_data_1`.
extern "win64" fn helper_implicit_1(
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    context: *const c_void,
) -> u64 {
    // SAFETY: the core passes the program's context sixth to a helper declared with
    // `implicit_context`; programs of this type run only with a `SampleContext`.
    u64::from(unsafe { implicit(context) }.helper_data_1)
}

/// `sample_ebpf_extension_helper_implicit_2(value)`: `helper_data_2 + (uint32)value`.
extern "win64" fn helper_implicit_2(
    value: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    context: *const c_void,
) -> u64 {
    // SAFETY: as in `helper_implicit_1`.
    let data = unsafe { implicit(context) }.helper_data_2;
    u64::from(data) + (value & 0xFFFF_FFFF)
}

/// `sample_ext_helper_map_lookup_element(map, key)`: NULL (the sample's custom map holds
/// objects programs may not see).
extern "win64" fn map_lookup_element(
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: *const c_void,
) -> u64 {
    0
}

/// `sample_ext_helper_map_get_value(map, key, value, size)`: copies the value the custom
/// map holds for `key`; 0, or -1 if `map` is not a custom map or has no such key.
extern "win64" fn map_get_value(
    map: u64,
    key: u64,
    value: u64,
    size: u64,
    _: u64,
    _: *const c_void,
) -> u64 {
    let Ok(size) = usize::try_from(size) else {
        return u64::MAX;
    };
    if value == 0 || size == 0 {
        return u64::MAX;
    }
    // SAFETY: writable memory of `size` bytes, checked by the verifier.
    let out = unsafe { core::slice::from_raw_parts_mut(value as *mut u8, size) };
    // SAFETY: the map object and key the program passed (prototype PTR_TO_MAP,
    // PTR_TO_MAP_KEY, checked by the verifier), during this call.
    match unsafe { crate::hook::map_get_value(map as *const c_void, key as *const u8, out) } {
        Some(()) => 0,
        None => u64::MAX,
    }
}

/// The `bpf_get_current_pid_tgid` override: [`PID_TGID_VALUE`].
extern "win64" fn get_current_pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    PID_TGID_VALUE
}

/// The `bpf_redirect_map` override: 1, whatever the arguments.
extern "win64" fn redirect_map(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    1
}

const INT: ebpf_return_type_t = EBPF_RETURN_TYPE_INTEGER;
const MAP: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_MAP;
const KEY: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY;
const READ: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM;
const SIZE: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_CONST_SIZE;

static HELPERS: [HelperPrototype; 7] = [
    HelperPrototype::new(
        HELPER_FUNCTION1,
        c"sample_ebpf_extension_helper_function1",
        INT,
        &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX],
    ),
    HelperPrototype::new(
        HELPER_FIND,
        c"sample_ebpf_extension_find",
        INT,
        &[READ, SIZE, READ, SIZE],
    ),
    HelperPrototype::new(
        HELPER_REPLACE,
        c"sample_ebpf_extension_replace",
        INT,
        &[READ, SIZE, EBPF_ARGUMENT_TYPE_ANYTHING, READ, SIZE],
    ),
    HelperPrototype::new(
        HELPER_IMPLICIT_1,
        c"sample_ebpf_extension_helper_implicit_1",
        INT,
        &[],
    )
    .with_implicit_context(),
    HelperPrototype::new(
        HELPER_IMPLICIT_2,
        c"sample_ebpf_extension_helper_implicit_2",
        INT,
        &[],
    )
    .with_implicit_context(),
    HelperPrototype::new(
        HELPER_MAP_LOOKUP_ELEMENT,
        c"sample_ext_helper_map_lookup_element",
        EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL,
        &[MAP, KEY],
    )
    .with_implicit_context(),
    HelperPrototype::new(
        HELPER_MAP_GET_VALUE,
        c"sample_ext_helper_map_get_value",
        INT,
        &[MAP, KEY, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, SIZE],
    )
    .with_implicit_context(),
];
static FUNCTIONS: [HelperFunction; 7] = [
    HelperFunction::new(helper_function1),
    HelperFunction::new(find),
    HelperFunction::new(replace),
    HelperFunction::with_context(helper_implicit_1),
    HelperFunction::with_context(helper_implicit_2),
    HelperFunction::with_context(map_lookup_element),
    HelperFunction::with_context(map_get_value),
];
static ADDRESSES: HelperAddresses = HelperAddresses::new(&FUNCTIONS);

static GLOBAL_HELPERS: [HelperPrototype; 2] = [
    HelperPrototype::new(19, c"bpf_get_current_pid_tgid", INT, &[]),
    HelperPrototype::new(
        35,
        c"bpf_redirect_map",
        INT,
        &[
            MAP,
            EBPF_ARGUMENT_TYPE_ANYTHING,
            EBPF_ARGUMENT_TYPE_ANYTHING,
        ],
    ),
];
static GLOBAL_FUNCTIONS: [HelperFunction; 2] = [
    HelperFunction::new(get_current_pid_tgid),
    HelperFunction::new(redirect_map),
];
static GLOBAL_ADDRESSES: HelperAddresses = HelperAddresses::new(&GLOBAL_FUNCTIONS);

/// The test-run context: the 64-byte header the core owns, then the program's view.
type Wrapper = ProgramContext<SampleContext>;

/// `context_create` for `bpf_prog_test_run`: a context copied from the first 32 bytes of
/// `context_in`, over `data_in` (not copied: programs edit the caller's buffer in place).
///
/// # Safety
/// The core's contract: each input is NULL or readable for its size, `data_in` writable;
/// `context` is writable.
unsafe extern "win64" fn context_create(
    data_in: *const u8,
    data_size: usize,
    context_in: *const u8,
    context_size: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    if context.is_null() {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: writable (the core's contract).
    unsafe { context.write(ptr::null_mut()) };
    if context_in.is_null() || context_size < size_of::<SampleContext>() {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: at least 32 readable bytes (checked); every bit pattern is a valid context.
    let mut view = unsafe { context_in.cast::<SampleContext>().read_unaligned() };
    let (start, end) = if data_in.is_null() || data_size == 0 {
        (ptr::null_mut(), ptr::null_mut())
    } else {
        let start = data_in.cast_mut();
        (start, start.wrapping_add(data_size))
    };
    view.data_start = start;
    view.data_end = end;
    let Ok(wrapper) = PoolBox::try_new(Wrapper::new(view), TAG) else {
        return EBPF_NO_MEMORY;
    };
    let wrapper = wrapper.into_raw();
    let view = wrapper
        .as_ptr()
        .wrapping_byte_add(offset_of!(Wrapper, context));
    // SAFETY: the core's out slot; `view` is the wrapper's context, 64 bytes in, freed by
    // `context_destroy`.
    unsafe { context.write(view.cast()) };
    EBPF_SUCCESS
}

/// `context_destroy` for `bpf_prog_test_run`: copies the context and its data out where the
/// capacities allow (else reports size 0) and frees the context.
///
/// # Safety
/// `context` is NULL or from [`context_create`], destroyed once; each output is NULL or
/// writable for the capacity in its size slot.
unsafe extern "win64" fn context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    if context.is_null() {
        return;
    }
    let Some(wrapper) = NonNull::new(
        context
            .wrapping_byte_sub(offset_of!(Wrapper, context))
            .cast::<Wrapper>(),
    ) else {
        return;
    };
    // SAFETY: `context_create` made this address from a `PoolBox` with `TAG`.
    let wrapper = unsafe { PoolBox::from_raw(wrapper, TAG) };
    let view = wrapper.context;
    if !context_size_out.is_null() {
        // SAFETY: the core's size slot, readable and writable.
        let capacity = unsafe { context_size_out.read() };
        let written = if !context_out.is_null() && capacity >= size_of::<SampleContext>() {
            // SAFETY: `capacity` ≥ 32 writable bytes.
            unsafe { context_out.cast::<SampleContext>().write_unaligned(view) };
            size_of::<SampleContext>()
        } else {
            0
        };
        // SAFETY: as above.
        unsafe { context_size_out.write(written) };
    }
    if !data_size_out.is_null() {
        let length = (view.data_end as usize).saturating_sub(view.data_start as usize);
        // SAFETY: the core's size slot.
        let capacity = unsafe { data_size_out.read() };
        let written = if !data_out.is_null() && !view.data_start.is_null() && capacity >= length {
            // SAFETY: `length` bytes of the caller's data (still valid: the core owns it
            // until the run ends) into `capacity` ≥ `length` writable bytes.
            unsafe { ptr::copy(view.data_start, data_out, length) };
            length
        } else {
            0
        };
        // SAFETY: as above.
        unsafe { data_size_out.write(written) };
    }
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<SampleContext>(
    Some(offset_of!(SampleContext, data_start)),
    Some(offset_of!(SampleContext, data_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"sample", &CONTEXT, PROGRAM_TYPE, BPF_PROG_TYPE, false);
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &GLOBAL_HELPERS);

/// The program data the program-information provider publishes: both address tables,
/// the test-run context functions, and `required_irql` DISPATCH_LEVEL.
pub static PROGRAM_DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_global_helpers(&GLOBAL_ADDRESSES)
    .with_context_functions(context_create, context_destroy)
    .with_required_irql(DISPATCH_LEVEL)
    .checked();
