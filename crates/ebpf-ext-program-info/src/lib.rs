//! A program-information NPI provider: hands the eBPF core the description of one program
//! type (type descriptor, context descriptor, helper prototypes and addresses, context
//! create/destroy for `bpf_prog_test_run`).
//!
//! An extension describes its program type once, as `static` data built by `const fn`s that
//! check at compile time what can be checked: header versions and sizes are filled in by the
//! constructors; helper ids are in range and unique; the number of helper addresses equals
//! the number of prototypes; the context descriptor's offsets lie inside the context. Then
//! [`ProgramInfoProvider::register`] publishes it.
//!
//! ```ignore
//! static CONTEXT: ContextDescriptor = ContextDescriptor::of::<SampleContext>(
//!     Some(offset_of!(SampleContext, data_start)), Some(offset_of!(SampleContext, data_end)), None);
//! static DESCRIPTOR: ProgramTypeDescriptor =
//!     ProgramTypeDescriptor::new(c"sample", &CONTEXT, MY_PROGRAM_TYPE, 999, false);
//! static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(0x10001, c"sample_get_pid",
//!     EBPF_RETURN_TYPE_INTEGER, &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX])];
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
//! static HELPER_FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(sample_get_pid)];
//! static ADDRESSES: HelperAddresses = HelperAddresses::new(&HELPER_FUNCTIONS);
//! static DATA: ProgramData = ProgramData::new(&INFO).with_helpers(&ADDRESSES);
//! // Sound: the hooks of this type invoke programs with a `SampleContext`, and this image
//! // registers no other provider of it (the facade's `Start::program_type` checks both).
//! let provider = unsafe { ProgramInfoProvider::register(&DATA, TAG) }?;
//! ```
//!
//! Mistakes that fail to compile:
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_base::*;
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! # unsafe extern "win64" fn f(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 { 0 }
//! static HELPERS: [HelperPrototype; 2] = [
//!     HelperPrototype::new(0x10001, c"a", EBPF_RETURN_TYPE_INTEGER, &[]),
//!     HelperPrototype::new(0x10002, c"b", EBPF_RETURN_TYPE_INTEGER, &[]),
//! ];
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
//! static FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(f)];
//! static ADDRESSES: HelperAddresses = HelperAddresses::new(&FUNCTIONS);
//! // Two prototypes, one address: does not compile.
//! static DATA: ProgramData = ProgramData::new(&INFO).with_helpers(&ADDRESSES);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_base::*;
//! // A program-type specific helper id must be above 0xFFFF.
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(5, c"a", EBPF_RETURN_TYPE_INTEGER, &[])];
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_base::*;
//! // A helper's name must be shorter than 256 bytes (its terminator included): this one is 256.
//! static HELPER: HelperPrototype = HelperPrototype::new(0x10000, c"hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", EBPF_RETURN_TYPE_INTEGER, &[]);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! // So must a program type's name.
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_base::*;
//! // An override of a global helper must be below 0xFFFF: the core looks 0xFFFF up among the
//! // program-type specific helpers only.
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! static GLOBAL: [HelperPrototype; 1] = [HelperPrototype::new(0xFFFF, c"a", EBPF_RETURN_TYPE_INTEGER, &[])];
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &GLOBAL);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! #[repr(C)]
//! struct Ctx { a: u64, b: u64 }
//! // The data pointer would lie outside the 16-byte context.
//! static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(Some(12), None, None);
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_base::*;
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! // Prototypes declared, no address table supplied.
//! static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(0x10001, c"a", EBPF_RETURN_TYPE_INTEGER, &[])];
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
//! static DATA: ProgramData = ProgramData::new(&INFO).checked();
//! ```
//!
//! ```compile_fail
//! # use ebpf_ext_program_info::*;
//! # use ebpf_ext_sys::ebpf_program_types::{ebpf_program_context_create_t, ebpf_program_context_destroy_t};
//! # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
//! # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
//! # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
//! # const CREATE: ebpf_program_context_create_t = { unsafe extern "win64" fn c(_: *const u8, _: usize, _: *const u8, _: usize, _: *mut *mut core::ffi::c_void) -> i32 { 0 } c };
//! # const DESTROY: ebpf_program_context_destroy_t = { unsafe extern "win64" fn d(_: *mut core::ffi::c_void, _: *mut u8, _: *mut usize, _: *mut u8, _: *mut usize) {} d };
//! // Context functions called at HIGH_LEVEL (they allocate and free pool): refused whatever
//! // the order of the builder's calls, `checked()` first included.
//! static DATA: ProgramData = ProgramData::new(&INFO)
//!     .with_context_functions(CREATE, DESTROY)
//!     .checked()
//!     .with_required_irql(15);
//! ```
//!
//! With [`helpers!`] each helper is declared once — id, name, argument kinds and the Rust
//! function together — and the prototype table and address table are generated from that one
//! list, so they cannot disagree or be misordered:
//!
//! ```ignore
//! fn get_pid(context: &SampleContext) -> u64 { context.pid }
//! helpers! {
//!     context SampleContext;
//!     /// The prototypes.
//!     pub static HELPERS;
//!     /// Their addresses.
//!     pub static ADDRESSES;
//!     0x10001, c"sample_get_pid" => get_pid(Context);
//! }
//! static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
//! static DATA: ProgramData = ProgramData::new(&INFO).with_helpers(&ADDRESSES).checked();
//! ```
//!
//! Test runs (`bpf_prog_test_run`): implement [`TestRun`] — build the context from the
//! caller's buffers, write it back afterwards — and plug it in with `test run T;` in
//! [`program_type!`] (by hand: [`ProgramData::with_test_run`] for a context without data
//! pointers, [`ProgramData::with_test_run_data`] for one with them); the SDK's
//! `context_create` / `context_destroy` do the pointer work, the allocation (the 64-byte
//! context header included) and the size reporting.
//!
//! This replaces netebpfext's `net_ebpf_extension_program_info_provider_register` /
//! `_unregister` and ntosebpfext's `ebpf_extension_program_info_provider_register`.
#![no_std]

mod helpers;
mod test_run;

use core::ffi::{CStr, c_void};
use core::marker::PhantomData;
use core::ptr;

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::Result;
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_DONTCARE, ebpf_argument_type_t, ebpf_return_type_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_PROGRAM_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_context_descriptor_t, ebpf_helper_function_addresses_t,
    ebpf_helper_function_prototype_flags_t, ebpf_helper_function_prototype_t,
    ebpf_program_context_create_t, ebpf_program_context_destroy_t, ebpf_program_data_t,
    ebpf_program_info_t, ebpf_program_type_descriptor_t, program_data_capabilities_t,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_HELPER_FUNCTION_ADDRESSES_HEADER, EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER,
    EBPF_MAX_GENERAL_HELPER_FUNCTION, EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
    EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH, EBPF_PROGRAM_DATA_HEADER,
    EBPF_PROGRAM_INFORMATION_HEADER, EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER,
};
use ebpf_ext_sys::netioddk::NPIID;
use ebpf_ext_sys::ntdef::{GUID, KIRQL, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_INSUFFICIENT_RESOURCES;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// The five argument types of a prototype: `arguments`, then `DONTCARE` (0).
///
/// # Panics
/// At compile time for more than five, or if a `DONTCARE` comes before another type: the
/// verifier reads a prototype only up to its first `DONTCARE`, so it would check nothing a
/// program passes in the registers after it, and a memory, context or map argument there
/// would reach the function unchecked.
const fn five_arguments(arguments: &[ebpf_argument_type_t]) -> [ebpf_argument_type_t; 5] {
    assert!(
        arguments.len() <= 5,
        "a function takes at most five arguments"
    );
    let mut args = [EBPF_ARGUMENT_TYPE_DONTCARE; 5];
    let mut i = 0;
    while i < arguments.len() {
        assert!(
            i == 0
                || arguments[i - 1] != EBPF_ARGUMENT_TYPE_DONTCARE
                || arguments[i] == EBPF_ARGUMENT_TYPE_DONTCARE,
            "DontCare only after every other argument: the verifier checks no argument after a DONTCARE"
        );
        args[i] = arguments[i];
        i += 1;
    }
    args
}

/// Marks a wrapper around ABI data that only ever points to `'static` immutable data.
macro_rules! static_abi {
    ($name:ident) => {
        // SAFETY: the wrapped ABI struct is immutable after construction and its pointers
        // refer only to `'static` immutable data, so sharing it across threads is sound.
        unsafe impl Sync for $name {}
        // SAFETY: as above.
        unsafe impl Send for $name {}
    };
}

mod btf;

pub use btf::{BtfFunctionPrototype, BtfFunctionProvider, BtfFunctions, btf_argument_types};

/// Where the verifier finds the data pointers in a program context
/// (`ebpf_context_descriptor_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct ContextDescriptor(ebpf_context_descriptor_t);

impl ContextDescriptor {
    /// The descriptor of a context of type `T`, with the offsets of its data-start, data-end
    /// and metadata pointers (each `None` if absent).
    ///
    /// # Panics
    /// At compile time if an offset does not leave room for a pointer inside `T`, or `T` is
    /// smaller than the 16 bytes the core requires.
    #[must_use]
    pub const fn of<T>(data: Option<usize>, end: Option<usize>, meta: Option<usize>) -> Self {
        Self::new(size_of::<T>(), data, end, meta)
    }

    /// A descriptor for a context of `size` bytes.
    ///
    /// # Panics
    /// At compile time if an offset does not leave room for a pointer inside the context, or
    /// the context is smaller than 16 bytes or larger than `i32::MAX`.
    #[must_use]
    pub const fn new(
        size: usize,
        data: Option<usize>,
        end: Option<usize>,
        meta: Option<usize>,
    ) -> Self {
        assert!(
            size >= 16,
            "the eBPF core requires a context of at least 16 bytes"
        );
        assert!(size <= i32::MAX as usize, "context too large");
        ContextDescriptor(ebpf_context_descriptor_t {
            size: to_i32(size),
            data: offset(data, size),
            end: offset(end, size),
            meta: offset(meta, size),
        })
    }

    /// The raw descriptor.
    #[must_use]
    pub const fn raw(&self) -> &ebpf_context_descriptor_t {
        &self.0
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "checked ≤ i32::MAX by callers"
)]
const fn to_i32(v: usize) -> i32 {
    v as i32
}

const fn offset(field: Option<usize>, size: usize) -> i32 {
    match field {
        None => -1,
        Some(o) => {
            assert!(
                o + size_of::<usize>() <= size,
                "a context pointer offset lies outside the context"
            );
            assert!(
                o % align_of::<usize>() == 0,
                "a context pointer offset is not pointer-aligned"
            );
            to_i32(o)
        }
    }
}

/// A program type's descriptor (`ebpf_program_type_descriptor_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct ProgramTypeDescriptor(ebpf_program_type_descriptor_t);
static_abi!(ProgramTypeDescriptor);

impl ProgramTypeDescriptor {
    /// A descriptor: name, context, program type GUID, `bpf_prog_type` number, privilege.
    ///
    /// # Panics
    /// At compile time if the name is empty or not shorter than
    /// `EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH` (256, its terminator included), or the
    /// program type is the all-zero GUID.
    #[must_use]
    pub const fn new(
        name: &'static CStr,
        context: &'static ContextDescriptor,
        program_type: GUID,
        bpf_prog_type: u32,
        is_privileged: bool,
    ) -> Self {
        assert!(!name.is_empty(), "a program type needs a name");
        assert!(
            name.count_bytes() < EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH,
            "the program type's name is too long"
        );
        assert!(
            program_type.to_u128() != 0,
            "the program type must not be GUID_NULL"
        );
        ProgramTypeDescriptor(ebpf_program_type_descriptor_t {
            header: EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER,
            name: name.as_ptr(),
            context_descriptor: &raw const context.0,
            program_type,
            bpf_prog_type,
            is_privileged: if is_privileged { 1 } else { 0 },
        })
    }

    /// The program type GUID.
    #[must_use]
    pub const fn program_type(&self) -> GUID {
        self.0.program_type
    }
}

/// One helper's prototype (`ebpf_helper_function_prototype_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct HelperPrototype(ebpf_helper_function_prototype_t);
static_abi!(HelperPrototype);

impl HelperPrototype {
    /// A prototype: id, name, return type and up to five argument types.
    ///
    /// # Panics
    /// At compile time if there are more than five arguments, a `DONTCARE` comes before
    /// another type, or the name is empty or not shorter than
    /// `EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH` (256, its terminator included).
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::HelperPrototype;
    /// # use ebpf_ext_sys::ebpf_base::*;
    /// // The verifier stops at the DONTCARE: the buffer and size after it go unchecked.
    /// static P: HelperPrototype = HelperPrototype::new(
    ///     0x10000,
    ///     c"f",
    ///     EBPF_RETURN_TYPE_INTEGER,
    ///     &[
    ///         EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    ///         EBPF_ARGUMENT_TYPE_DONTCARE,
    ///         EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    ///         EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ///     ],
    /// );
    /// ```
    ///
    /// The same types with the `DONTCARE` last are accepted:
    ///
    /// ```
    /// # use ebpf_ext_program_info::HelperPrototype;
    /// # use ebpf_ext_sys::ebpf_base::*;
    /// static P: HelperPrototype = HelperPrototype::new(
    ///     0x10000,
    ///     c"f",
    ///     EBPF_RETURN_TYPE_INTEGER,
    ///     &[
    ///         EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    ///         EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    ///         EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ///         EBPF_ARGUMENT_TYPE_DONTCARE,
    ///     ],
    /// );
    /// ```
    #[must_use]
    pub const fn new(
        helper_id: u32,
        name: &'static CStr,
        return_type: ebpf_return_type_t,
        arguments: &[ebpf_argument_type_t],
    ) -> Self {
        assert!(!name.is_empty(), "a helper needs a name");
        assert!(
            name.count_bytes() < EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
            "the helper's name is too long"
        );
        HelperPrototype(ebpf_helper_function_prototype_t {
            header: EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER,
            helper_id,
            name: name.as_ptr(),
            return_type,
            arguments: five_arguments(arguments),
            flags: ebpf_helper_function_prototype_flags_t { bits: 0 },
            implicit_context: false,
        })
    }

    /// The helper also receives the program context as an implicit sixth argument.
    #[must_use]
    pub const fn with_implicit_context(mut self) -> Self {
        self.0.implicit_context = true;
        self
    }

    /// The helper may reallocate the packet (`reallocate_packet` flag).
    #[must_use]
    pub const fn with_reallocate_packet(mut self) -> Self {
        self.0.flags.bits |= 1;
        self
    }

    /// The helper id.
    #[must_use]
    pub const fn id(&self) -> u32 {
        self.0.helper_id
    }

    /// The raw prototype.
    #[must_use]
    pub const fn raw(&self) -> &ebpf_helper_function_prototype_t {
        &self.0
    }
}

#[doc(hidden)]
pub use ebpf_ext_sys as __sys;
#[doc(hidden)]
pub use helpers::implicit_context as __implicit_context;
pub use helpers::{
    Anything, Bytes, BytesMut, Cells, CellsMut, Context, ContextMut, DataPointerOffsets, DontCare,
    HelperArgument, HelperReturn, Input, Map, MapAndKey, MapKey, MapValueOrNull, Memory, Output,
    ProgramMap, ReadableCells, SharedBytes, SharedOutput, argument_types, check_global_override,
    check_overlap, check_return,
};
#[doc(hidden)]
pub use helpers::{
    KeptDataPointers as __KeptDataPointers, context_mut_register as __context_mut_register,
};
pub use test_run::{
    AnyBitPattern, COPY_TEST_RUN_TAG, CopyTestRun, CountedString, DataPointer, MAX_TEST_RUN_SIZE,
    NoPadding, PackedStrings, TestRun, TestRunContext, TestRunData, TestRunInput, TestRunOutput,
    test_run_functions,
};

/// The eBPF helper calling shape: five 64-bit arguments, a 64-bit result, kernel convention.
pub type HelperFn = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;
/// A helper with `implicit_context`: the program context arrives as a sixth argument.
pub type HelperWithContextFn =
    unsafe extern "win64" fn(u64, u64, u64, u64, u64, *const c_void) -> u64;

/// A helper's address, as the core's address table holds it.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct HelperFunction(*const c_void);
static_abi!(HelperFunction);

impl HelperFunction {
    /// A helper implementation.
    #[must_use]
    pub const fn new(f: HelperFn) -> Self {
        HelperFunction(f as *const c_void)
    }

    /// A helper implementation that takes the program context (pair it with
    /// [`HelperPrototype::with_implicit_context`]).
    #[must_use]
    pub const fn with_context(f: HelperWithContextFn) -> Self {
        HelperFunction(f as *const c_void)
    }
}

const _: () = assert!(size_of::<HelperFunction>() == size_of::<u64>());

/// A helper address table (`ebpf_helper_function_addresses_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct HelperAddresses(ebpf_helper_function_addresses_t);
static_abi!(HelperAddresses);

impl HelperAddresses {
    /// A table over `functions` (in the order of the matching prototypes).
    ///
    /// # Panics
    /// At compile time if `functions` is empty (the core rejects an empty table; pass no table
    /// instead) or too long.
    #[must_use]
    pub const fn new(functions: &'static [HelperFunction]) -> Self {
        assert!(!functions.is_empty(), "an address table must not be empty");
        assert!(functions.len() <= u32::MAX as usize, "too many helpers");
        HelperAddresses(ebpf_helper_function_addresses_t {
            header: EBPF_HELPER_FUNCTION_ADDRESSES_HEADER,
            #[expect(clippy::cast_possible_truncation, reason = "checked above")]
            helper_function_count: functions.len() as u32,
            // HelperFunction is a transparent pointer, laid out like the core's uint64_t array.
            helper_function_address: functions.as_ptr().cast::<u64>(),
        })
    }

    const fn count(&self) -> u32 {
        self.0.helper_function_count
    }
}

/// Program information (`ebpf_program_info_t`): descriptor and helper prototypes.
#[repr(transparent)]
#[derive(Debug)]
pub struct ProgramInfo(ebpf_program_info_t);
static_abi!(ProgramInfo);

impl ProgramInfo {
    /// Program information with program-type specific helpers (ids above 0xFFFF) and overrides
    /// of global helpers (ids below 0xFFFF: the core looks 0xFFFF itself up among the
    /// program-type specific helpers only).
    ///
    /// # Panics
    /// At compile time if an id is out of its range or appears twice, or if an override does
    /// not declare the core's prototype for its id ([`check_global_override`]).
    #[must_use]
    pub const fn new(
        descriptor: &'static ProgramTypeDescriptor,
        helpers: &'static [HelperPrototype],
        global_helpers: &'static [HelperPrototype],
    ) -> Self {
        check_ids(helpers, true);
        check_ids(global_helpers, false);
        ProgramInfo(ebpf_program_info_t {
            header: EBPF_PROGRAM_INFORMATION_HEADER,
            program_type_descriptor: &raw const descriptor.0,
            count_of_program_type_specific_helpers: len_u32(helpers),
            program_type_specific_helper_prototype: if helpers.is_empty() {
                ptr::null()
            } else {
                helpers.as_ptr().cast()
            },
            count_of_global_helpers: len_u32(global_helpers),
            global_helper_prototype: if global_helpers.is_empty() {
                ptr::null()
            } else {
                global_helpers.as_ptr().cast()
            },
        })
    }

    /// The program type GUID.
    #[must_use]
    pub const fn program_type(&self) -> GUID {
        // SAFETY: the descriptor pointer was made from a `&'static ProgramTypeDescriptor`.
        unsafe { (*self.0.program_type_descriptor).program_type }
    }
}

const fn len_u32(s: &[HelperPrototype]) -> u32 {
    assert!(s.len() <= u32::MAX as usize, "too many helpers");
    #[expect(clippy::cast_possible_truncation, reason = "checked above")]
    let n = s.len() as u32;
    n
}

const fn check_ids(helpers: &[HelperPrototype], type_specific: bool) {
    let mut i = 0;
    while i < helpers.len() {
        let id = helpers[i].0.helper_id;
        if type_specific {
            assert!(
                id > EBPF_MAX_GENERAL_HELPER_FUNCTION,
                "program-type specific helper ids must be above 0xFFFF"
            );
        } else {
            assert!(
                id < EBPF_MAX_GENERAL_HELPER_FUNCTION,
                "global helper ids must be below 0xFFFF"
            );
            // The verifier checks calls to this id against the core's prototype only.
            check_global_override(id, helpers[i].0.return_type, &helpers[i].0.arguments);
        }
        let mut j = i + 1;
        while j < helpers.len() {
            assert!(helpers[j].0.helper_id != id, "duplicate helper id");
            j += 1;
        }
        i += 1;
    }
}

/// Everything the provider publishes (`ebpf_program_data_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct ProgramData(ebpf_program_data_t);
static_abi!(ProgramData);

impl ProgramData {
    /// Program data with no helper address tables, no context functions, `required_irql`
    /// PASSIVE_LEVEL and no capabilities.
    ///
    /// If `info` declares helpers, supply their addresses with [`ProgramData::with_helpers`] /
    /// [`ProgramData::with_global_helpers`], and end with [`ProgramData::checked`], which
    /// fails to compile (in a `static`) while prototypes lack their addresses:
    /// [`program_type!`] does all of this.
    #[must_use]
    pub const fn new(info: &'static ProgramInfo) -> Self {
        ProgramData(ebpf_program_data_t {
            header: EBPF_PROGRAM_DATA_HEADER,
            program_info: &raw const info.0,
            program_type_specific_helper_function_addresses: ptr::null(),
            global_helper_function_addresses: ptr::null(),
            context_create: None,
            context_destroy: None,
            required_irql: PASSIVE_LEVEL,
            capabilities: program_data_capabilities_t { value: 0 },
        })
    }

    const fn info(&self) -> &ebpf_program_info_t {
        // SAFETY: made from a `&'static ProgramInfo` in `new`.
        unsafe { &*self.0.program_info }
    }

    /// Addresses of the program-type specific helpers.
    ///
    /// # Panics
    /// At compile time if the count differs from the number of prototypes.
    #[must_use]
    pub const fn with_helpers(mut self, addresses: &'static HelperAddresses) -> Self {
        assert!(
            addresses.count() == self.info().count_of_program_type_specific_helpers,
            "helper address count differs from the number of helper prototypes"
        );
        self.0.program_type_specific_helper_function_addresses = &raw const addresses.0;
        self
    }

    /// Addresses of the global helper overrides.
    ///
    /// # Panics
    /// At compile time if the count differs from the number of global prototypes.
    #[must_use]
    pub const fn with_global_helpers(mut self, addresses: &'static HelperAddresses) -> Self {
        assert!(
            addresses.count() == self.info().count_of_global_helpers,
            "global helper address count differs from the number of global helper prototypes"
        );
        self.0.global_helper_function_addresses = &raw const addresses.0;
        self
    }

    /// Context create/destroy for `bpf_prog_test_run`.
    ///
    /// # Panics
    /// At compile time if `required_irql` is already above DISPATCH_LEVEL (see
    /// [`ProgramData::checked`]).
    #[must_use]
    pub const fn with_context_functions(
        mut self,
        create: ebpf_program_context_create_t,
        destroy: ebpf_program_context_destroy_t,
    ) -> Self {
        assert!(
            self.0.required_irql <= DISPATCH_LEVEL,
            "context functions with required_irql above DISPATCH_LEVEL"
        );
        self.0.context_create = Some(create);
        self.0.context_destroy = Some(destroy);
        self
    }

    /// Test runs of this program type through `R`: the SDK's `context_create` and
    /// `context_destroy`, which check the core's pointers and sizes, build the context with
    /// [`TestRun::create`] in a pool allocation tagged `R::TAG`, and hand it back to
    /// [`TestRun::destroy`] with the output buffers. [`TestRun::data`] is not asked: this is
    /// for a context without data pointers; for one with them use
    /// [`ProgramData::with_test_run_data`] (as [`program_type!`] does).
    ///
    /// # Panics
    /// At compile time if `R::Context` is smaller than the program type's context descriptor
    /// says (programs and the verifier would access past it), or aligned to more than 64 bytes;
    /// or if the run (context and `R`) needs an alignment the pool cannot give it, or is larger
    /// than [`MAX_TEST_RUN_SIZE`].
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::new(24, None, None, None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// struct Run;
    /// impl TestRun for Run {
    ///     type Context = [u64; 2]; // 16 bytes, for a 24-byte context
    ///     const TAG: PoolTag = PoolTag::new(*b"Test");
    ///     fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<[u64; 2]>, Self), ebpf_result_t> {
    ///         Ok((TestRunContext::new([0; 2]), Run))
    ///     }
    ///     fn destroy(self, _: &mut TestRunContext<[u64; 2]>, _: &mut TestRunOutput) {}
    /// }
    /// static DATA: ProgramData = ProgramData::new(&INFO).with_test_run::<Run>();
    /// ```
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
    /// # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// // Aligned to 128: the context would not follow its 64-byte header directly.
    /// #[repr(C, align(128))]
    /// struct Ctx { a: u64, b: u64 }
    /// struct Run;
    /// impl TestRun for Run {
    ///     type Context = Ctx;
    ///     const TAG: PoolTag = PoolTag::new(*b"Test");
    ///     fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<Ctx>, Self), ebpf_result_t> {
    ///         Err(0)
    ///     }
    ///     fn destroy(self, _: &mut TestRunContext<Ctx>, _: &mut TestRunOutput) {}
    /// }
    /// static DATA: ProgramData = ProgramData::new(&INFO).with_test_run::<Run>();
    /// ```
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
    /// # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// // The run's own state aligned to 128 in a run smaller than a page: the pool cannot
    /// // align it, so every context_create would fail.
    /// #[repr(C, align(128))]
    /// struct Run { state: u64 }
    /// impl TestRun for Run {
    ///     type Context = [u64; 2];
    ///     const TAG: PoolTag = PoolTag::new(*b"Test");
    ///     fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<[u64; 2]>, Self), ebpf_result_t> {
    ///         Err(0)
    ///     }
    ///     fn destroy(self, _: &mut TestRunContext<[u64; 2]>, _: &mut TestRunOutput) {}
    /// }
    /// static DATA: ProgramData = ProgramData::new(&INFO).with_test_run::<Run>();
    /// ```
    ///
    /// A context with data pointers is refused (use [`ProgramData::with_test_run_data`]):
    /// `create` would copy them from `ctx_in`, which the caller of `bpf_prog_test_run`
    /// chooses, and programs would read and write wherever it pointed them.
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data: DataPointer, end: DataPointer, value: u64 } }
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(Some(0), Some(8), None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// static DATA: ProgramData =
    ///     ProgramData::new(&INFO).with_test_run::<CopyTestRun<Ctx, { PoolTag::new(*b"Test").value() }>>();
    /// ```
    ///
    /// The same context described without data pointers is accepted:
    ///
    /// ```
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data: DataPointer, end: DataPointer, value: u64 } }
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(None, None, None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// static DATA: ProgramData =
    ///     ProgramData::new(&INFO).with_test_run::<CopyTestRun<Ctx, { PoolTag::new(*b"Test").value() }>>();
    /// ```
    ///
    /// # IRQL
    /// The core calls both at [`ProgramData::with_required_irql`]'s level.
    #[must_use]
    pub const fn with_test_run<R: TestRun>(self) -> Self {
        let context = self.test_run_context::<R>();
        assert!(
            context.data < 0 && context.end < 0 && context.meta < 0,
            "the context has data pointers: plug the test run in with with_test_run_data, so that they are set for each run and never copied from ctx_in"
        );
        let (create, destroy) = test_run_functions::<R>();
        self.with_context_functions(create, destroy)
    }

    /// The program type's context descriptor, checked against `R::Context`.
    ///
    /// # Panics
    /// At compile time if `R::Context` is smaller than the descriptor says.
    const fn test_run_context<R: TestRun>(&self) -> &ebpf_context_descriptor_t {
        // SAFETY: the descriptor pointer was made from a `&'static ProgramTypeDescriptor`.
        let descriptor = unsafe { &*self.info().program_type_descriptor };
        // SAFETY: made from a `&'static ContextDescriptor` in `ProgramTypeDescriptor::new`.
        let context = unsafe { &*descriptor.context_descriptor };
        // `ContextDescriptor::new` keeps the size between 16 and `i32::MAX`.
        assert!(
            size_of::<R::Context>() >= context.size.unsigned_abs() as usize,
            "the test run's context type is smaller than the program type's context descriptor"
        );
        context
    }

    /// [`ProgramData::with_test_run`] for a context whose data pointers lie at byte offsets
    /// `START` and `END` of `R::Context`: the SDK's `context_create` points them at what
    /// [`TestRun::data`] chooses, whatever [`TestRun::create`] left there. [`program_type!`]
    /// calls it for every `test run` (with `usize::MAX` offsets, none, without a `data`
    /// clause).
    ///
    /// # Safety
    /// `START` and `END` are the offsets of two pointer fields of `R::Context` that programs
    /// read as their data range (`DataPointer`s), or both `usize::MAX`: then the context has no
    /// data pointers, or [`TestRun::create`] points them, for every run, at memory the run
    /// owns (never where `ctx_in` says).
    ///
    /// # Panics
    /// If a field would not lie within `R::Context` (at compile time in a `static`),
    /// `R::Context` is smaller than the context descriptor says, the descriptor has a
    /// metadata pointer (the SDK's test runs never set one, so `ctx_in` would choose it), or
    /// `START` and `END` are offsets other than the descriptor's data pointers (unless both
    /// are `usize::MAX`: then [`TestRun::create`] sets them, by the contract above).
    ///
    /// ```
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data: DataPointer, end: DataPointer, meta: DataPointer } }
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(Some(0), Some(8), None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// // SAFETY: `data` and `end` are the data pointers, at 0 and 8.
    /// static DATA: ProgramData = unsafe {
    ///     ProgramData::new(&INFO).with_test_run_data::<CopyTestRun<Ctx, { PoolTag::new(*b"Test").value() }>, 0, 8>()
    /// };
    /// ```
    ///
    /// The same with a metadata pointer in the descriptor is refused (`ctx_in` would choose it):
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data: DataPointer, end: DataPointer, meta: DataPointer } }
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(Some(0), Some(8), Some(16));
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// // SAFETY: `data` and `end` are the data pointers, at 0 and 8.
    /// static DATA: ProgramData = unsafe {
    ///     ProgramData::new(&INFO).with_test_run_data::<CopyTestRun<Ctx, { PoolTag::new(*b"Test").value() }>, 0, 8>()
    /// };
    /// ```
    ///
    /// And so is a run that sets other fields than the descriptor's data pointers:
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_pool::PoolTag;
    /// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data: DataPointer, end: DataPointer, meta: DataPointer } }
    /// static CONTEXT: ContextDescriptor = ContextDescriptor::of::<Ctx>(Some(0), Some(8), None);
    /// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
    /// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
    /// // SAFETY: (wrongly) `end` and `meta` are the data pointers.
    /// static DATA: ProgramData = unsafe {
    ///     ProgramData::new(&INFO).with_test_run_data::<CopyTestRun<Ctx, { PoolTag::new(*b"Test").value() }>, 8, 16>()
    /// };
    /// ```
    #[must_use]
    pub const unsafe fn with_test_run_data<R: TestRun, const START: usize, const END: usize>(
        self,
    ) -> Self {
        let context = self.test_run_context::<R>();
        assert!(
            context.meta < 0,
            "the context has a metadata pointer, which the SDK's test runs never set: ctx_in would choose it"
        );
        assert!(
            START == usize::MAX
                || (context.data >= 0
                    && context.data.unsigned_abs() as usize == START
                    && context.end >= 0
                    && context.end.unsigned_abs() as usize == END),
            "the data pointers the test run sets are not the ones the context descriptor declares"
        );
        // SAFETY: the caller's contract.
        let (create, destroy) = unsafe { test_run::test_run_data_functions::<R, START, END>() };
        self.with_context_functions(create, destroy)
    }

    /// The IRQL `bpf_prog_test_run` runs the program at. Write the context functions to work
    /// at it too: the core's test run calls them raised to it in the version the reference
    /// sheets describe, and at PASSIVE_LEVEL in others (core-sim raises).
    ///
    /// # Panics
    /// At compile time if above HIGH_LEVEL, or above DISPATCH_LEVEL with context functions
    /// (set before or after this: [`ProgramData::with_context_functions`] refuses them at such
    /// a level, and [`ProgramData::checked`] checks the pair again).
    #[must_use]
    pub const fn with_required_irql(mut self, irql: KIRQL) -> Self {
        assert!(irql <= HIGH_LEVEL, "required_irql above HIGH_LEVEL");
        assert!(
            (self.0.context_create.is_none() && self.0.context_destroy.is_none())
                || irql <= DISPATCH_LEVEL,
            "context functions with required_irql above DISPATCH_LEVEL"
        );
        self.0.required_irql = irql;
        self
    }

    /// Final check, for a `static` initialiser: every declared helper has its address table,
    /// and context functions run at a level where they may allocate and free pool.
    ///
    /// # Panics
    /// At compile time (in a `static`) if prototypes are declared without addresses, or if
    /// there are context functions and `required_irql` is above DISPATCH_LEVEL: the core
    /// raises to it before `context_create` and `context_destroy`, and the SDK's test runs
    /// (like most) allocate and free pool there, which above DISPATCH_LEVEL bug-checks.
    #[must_use]
    pub const fn checked(self) -> Self {
        assert!(
            (self.0.context_create.is_none() && self.0.context_destroy.is_none())
                || self.0.required_irql <= DISPATCH_LEVEL,
            "context functions with required_irql above DISPATCH_LEVEL"
        );
        let info = self.info();
        assert!(
            info.count_of_program_type_specific_helpers == 0
                || !self
                    .0
                    .program_type_specific_helper_function_addresses
                    .is_null(),
            "helper prototypes declared without helper addresses"
        );
        assert!(
            info.count_of_global_helpers == 0 || !self.0.global_helper_function_addresses.is_null(),
            "global helper prototypes declared without addresses"
        );
        self
    }

    /// The program type GUID (the provider's NMR module id).
    #[must_use]
    pub const fn program_type(&self) -> GUID {
        // SAFETY: the descriptor pointer was made from a `&'static ProgramTypeDescriptor`.
        unsafe { (*self.info().program_type_descriptor).program_type }
    }

    /// The raw program data.
    #[must_use]
    pub const fn raw(&self) -> &ebpf_program_data_t {
        &self.0
    }

    /// The byte offsets of the context's data-start and data-end pointers, as its context
    /// descriptor gives them; `None` unless it names both.
    #[must_use]
    pub fn data_fields(&self) -> Option<(usize, usize)> {
        // SAFETY: the descriptor pointer was made from a `&'static ProgramTypeDescriptor`.
        let descriptor = unsafe { &*self.info().program_type_descriptor };
        // SAFETY: made from a `&'static ContextDescriptor` in `ProgramTypeDescriptor::new`.
        let context = unsafe { &*descriptor.context_descriptor };
        Some((
            usize::try_from(context.data).ok()?,
            usize::try_from(context.end).ok()?,
        ))
    }
}

/// Compiles only for a `T` programs may see as their context ([`NoPadding`]: every bit
/// pattern a value, no padding); [`program_type!`] calls it for its `context`.
#[doc(hidden)]
pub const fn program_context_is_any_bit_pattern<T: NoPadding>() {}

/// [`ProgramData`] whose helpers (type-specific and global overrides) and test runs read the
/// program context as `C`: what [`program_type!`] declares. A hook takes one to prove that
/// it invokes the type's programs with the context their helpers read (the facade's
/// `Start::program_type` and `Start::hook`). Dereferences to the [`ProgramData`].
#[repr(transparent)]
pub struct TypedProgramData<C> {
    data: ProgramData,
    _context: PhantomData<fn(C) -> C>,
}

impl<C> TypedProgramData<C> {
    /// Declares that `data`'s helpers read the context as `C`.
    ///
    /// # Safety
    /// Every helper in `data`'s tables (type-specific and global overrides) and its test-run
    /// context functions treat the program context as a `C` (as [`helpers!`] declared with
    /// `context C` and a [`TestRun`] with `Context = C` do; [`program_type!`] checks both).
    /// The bytes of `C` programs may write (the context descriptor's size) are a
    /// [`NoPadding`] type: any bytes a program writes there leave `C` valid.
    /// If its context descriptor names data pointers ([`ProgramData::data_fields`]), they are
    /// two [`DataPointer`] fields of `C`, which hooks write before every invocation; its test
    /// runs set them as [`ProgramData::with_test_run_data`] does, and its `ContextMut` helpers
    /// put them back as [`helpers!`]'s `data` clause does.
    /// Every global override's prototype is the core's for its id
    /// ([`check_global_override`]: the verifier checks calls to those ids against the core's
    /// prototypes only; [`program_type!`] checks this too).
    #[must_use]
    pub const unsafe fn new(data: ProgramData) -> Self {
        TypedProgramData {
            data,
            _context: PhantomData,
        }
    }
}

impl<C> core::ops::Deref for TypedProgramData<C> {
    type Target = ProgramData;

    fn deref(&self) -> &ProgramData {
        &self.data
    }
}

impl<C> core::fmt::Debug for TypedProgramData<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.data.fmt(f)
    }
}

/// Static data an NMR provider publishes as its characteristics, whose clients (the core)
/// need nothing from the provider: the program-information and BTF-resolved function NPIs.
///
/// # Safety
/// The characteristics are valid for `NPI_ID` and uphold its rules (as [`NpiProvider`]).
unsafe trait PublishedData: Sync + 'static {
    /// The NPI-specific characteristics.
    type Characteristics: 'static;
    /// The NPI.
    const NPI_ID: &'static NPIID;
    /// What is published.
    fn characteristics(&self) -> &Self::Characteristics;
}

/// An NPI whose provider publishes `D` and keeps nothing per client but its module id.
struct StaticNpi<D: 'static> {
    data: &'static D,
}

/// What the provider keeps per attached core client.
struct CoreClient {
    _module: GUID,
}

// SAFETY: `PublishedData`'s contract: the characteristics are valid for the NPI.
unsafe impl<D: PublishedData> NpiProvider for StaticNpi<D> {
    type Characteristics = D::Characteristics;
    type Binding = CoreClient;
    const NPI_ID: &'static NPIID = D::NPI_ID;

    fn characteristics(&self) -> &D::Characteristics {
        self.data.characteristics()
    }

    fn attach(
        &self,
        client: &AttachingClient<'_>,
    ) -> core::result::Result<Bound<CoreClient>, NTSTATUS> {
        client
            .allocate(CoreClient {
                _module: client.module_id(),
            })
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)
    }

    fn detach(_: &CoreClient) -> Detach {
        // The provider never calls into the core; the core stops using what it published
        // (for BTF-resolved functions, waiting for running programs) before its detach
        // returns.
        Detach::Complete
    }
}

// SAFETY: the program data `ProgramInfoProvider::register`'s caller vouched for (its
// contract: helpers read the context the program type's hooks pass).
unsafe impl PublishedData for ProgramData {
    type Characteristics = ebpf_program_data_t;
    const NPI_ID: &'static NPIID = &EBPF_PROGRAM_INFO_EXTENSION_IID;

    fn characteristics(&self) -> &ebpf_program_data_t {
        &self.0
    }
}

/// A registered program-information provider; dropping it unregisters and waits until the
/// core has detached.
///
/// # IRQL
/// Register and drop at PASSIVE_LEVEL.
///
/// # Locking
/// Takes no lock of its own; NMR serialises the callbacks per binding.
pub struct ProgramInfoProvider {
    _provider: Provider<StaticNpi<ProgramData>>,
}

impl ProgramInfoProvider {
    /// Registers the provider for `data`'s program type (NMR module id = the program type).
    /// The facade's `Start::program_type` is the safe way to call it.
    ///
    /// # Safety
    /// Every hook that invokes programs of this type hands them the context `data`'s helpers
    /// and test runs read, and while this provider is registered the image registers no other
    /// provider of the same program type whose helpers read another (the core may bind
    /// either). If the context descriptor names data pointers, every value they hold while a
    /// program runs bounds live memory the program may read and write: hooks and test runs
    /// set them, and each `ContextMut` helper leaves them as it found them. The bytes programs
    /// may write (the context descriptor's size) are a [`NoPadding`] type. Every global
    /// override's prototype is the core's for its id ([`check_global_override`]). (A
    /// [`TypedProgramData`] from [`program_type!`] ensures all of this for the SDK's hooks.)
    ///
    /// # Errors
    /// [`ebpf_ext_sys::Error::InsufficientResources`] if the context cannot be allocated; the status of
    /// `NmrRegisterProvider` as [`ebpf_ext_sys::Error::Api`] if it fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub unsafe fn register(data: &'static ProgramData, tag: PoolTag) -> Result<Self> {
        let provider = Provider::register(data.program_type(), StaticNpi { data }, tag)?;
        Ok(ProgramInfoProvider {
            _provider: provider,
        })
    }
}
