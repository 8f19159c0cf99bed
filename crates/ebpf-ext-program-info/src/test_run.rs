//! Test runs (`bpf_prog_test_run`): the extension builds its program context from the
//! caller's buffers and writes it back, safely, through [`TestRun`]; the SDK's
//! `context_create` / `context_destroy` trampolines (`test run T;` in
//! [`program_type!`](crate::program_type), or by hand [`ProgramData::with_test_run`] and
//! [`ProgramData::with_test_run_data`]) do all the pointer work once.
//!
//! The core's side (eBPF for Windows `_ebpf_program_test_run_work_item`): an input of size 0
//! arrives as NULL; `context_create` must return a pointer with 64 writable bytes in front
//! (the context header, of which the core writes slots 0 and 1 once per run); after the run
//! `context_destroy` gets output buffers with their capacities in the size slots and reports
//! the sizes it wrote there (0 when a buffer is missing or too small). Both run at the program
//! type's `required_irql`.
//!
//! [`ProgramData::with_test_run`]: crate::ProgramData::with_test_run

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::ops::Range;
use core::ptr::{self, NonNull};
use core::slice;

use ebpf_ext_nmr::foreign::write_pointer_fields;
use ebpf_ext_pool::{PoolArray, PoolBox, PoolTag};
use ebpf_ext_sys::ebpf_extension::{EBPF_CONTEXT_HEADER, EBPF_CONTEXT_HEADER_SIZE};
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_program_context_create_t, ebpf_program_context_destroy_t,
};
use ebpf_ext_sys::ebpf_result::{
    EBPF_FAILED, EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ntdef::UNICODE_STRING;

/// A type for which every bit pattern of its size is a valid value, so it can be read from
/// the caller's bytes ([`TestRunInput::context`]).
///
/// Implement it for a struct with [`any_bit_pattern!`](crate::any_bit_pattern), which checks
/// every field.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid `Self` (integers, raw
/// pointers, arrays and structs of them; not `bool`, `char`, references or enums).
pub unsafe trait AnyBitPattern: Copy + 'static {}

// SAFETY: a raw pointer may hold any address; it is only dereferenced by unsafe code that
// checks it.
unsafe impl<T: 'static> AnyBitPattern for *const T {}
// SAFETY: as above.
unsafe impl<T: 'static> AnyBitPattern for *mut T {}
// SAFETY: an array of values that accept any bits accepts any bits.
unsafe impl<T: AnyBitPattern, const N: usize> AnyBitPattern for [T; N] {}
// SAFETY: two `u16`s and a raw pointer (padding accepts anything).
unsafe impl AnyBitPattern for UNICODE_STRING {}
// SAFETY: a header and a context that both accept any bits (`repr(C)`; padding accepts
// anything).
unsafe impl<T: AnyBitPattern> AnyBitPattern for TestRunContext<T> {}

/// Implements [`AnyBitPattern`] for a struct after checking that every field's type does.
///
/// Either around the struct's definition, or, for a struct defined elsewhere,
/// `any_bit_pattern!(Type { field, … })` listing all its fields (the list is matched as a
/// pattern without `..`, so a missing field does not compile):
///
/// ```
/// # use ebpf_ext_program_info::{any_bit_pattern, AnyBitPattern};
/// any_bit_pattern! {
///     /// A context.
///     #[repr(C)]
///     #[derive(Clone, Copy)]
///     pub struct Context { pub data_start: *mut u8, pub data_end: *mut u8, pub value: u32 }
/// }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::any_bit_pattern;
/// any_bit_pattern! {
///     #[derive(Clone, Copy)]
///     struct Flag { set: bool }
/// }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::{any_bit_pattern, AnyBitPattern};
/// #[derive(Clone, Copy)]
/// struct Pair { a: u32, b: *const u8 }
/// any_bit_pattern!(Pair { a, b });
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::any_bit_pattern;
/// #[derive(Clone, Copy)]
/// struct Flag { set: bool } // a bool accepts only 0 and 1
/// any_bit_pattern!(Flag { set });
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::any_bit_pattern;
/// #[derive(Clone, Copy)]
/// struct Pair { a: u32, b: bool }
/// any_bit_pattern!(Pair { a }); // `b` left out
/// ```
///
/// A constant named like a field does not stand in for the field's type:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::any_bit_pattern;
/// #[derive(Clone, Copy, PartialEq, Eq)]
/// struct Unit;
/// any_bit_pattern!(Unit {});
/// #[derive(Clone, Copy)]
/// struct Holder { a: &'static Unit } // a reference: never NULL
/// #[allow(non_upper_case_globals)]
/// const a: &'static Unit = &Unit;
/// any_bit_pattern!(Holder { a });
/// ```
#[macro_export]
macro_rules! any_bit_pattern {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $field_ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $field_ty ),*
        }
        $crate::any_bit_pattern!($name { $($field),* });
    };
    ($ty:ident { $($field:ident),* $(,)? }) => {
        const _: () = {
            #[allow(dead_code, reason = "only type-checked")]
            fn every_field_accepts_any_bits(value: &$ty) {
                fn check<T: $crate::AnyBitPattern>(_: &T) {}
                // Every field listed (no `..`), none bound: a name in a pattern can be a
                // constant's, so each field is checked through the value instead.
                let $ty { $($field: _),* } = value;
                $( check(&value.$field); )*
            }
        };
        // SAFETY: every field's type is `AnyBitPattern` (checked just above, all fields
        // named), so every bit pattern of the struct is a valid value.
        unsafe impl $crate::AnyBitPattern for $ty {}
    };
}

/// A type whose every byte is initialised in every value (no padding), so a value can be
/// copied to the caller's bytes ([`TestRunOutput::write_context`]) without handing out
/// uninitialised memory (in the kernel: stale kernel data, to user mode).
///
/// Implement it for a struct with [`no_padding!`](crate::no_padding), which checks every field
/// and the size, and implements [`AnyBitPattern`] too: a type made only of integers and raw
/// pointers, with no padding, accepts every bit pattern, so it can be read from the caller's
/// bytes as well.
///
/// # Safety
/// No value of `Self` may have an uninitialised byte: no padding between or after fields, no
/// `MaybeUninit`, no unions (integers, raw pointers, arrays and structs of them whose field
/// sizes add up to the struct's size).
pub unsafe trait NoPadding: AnyBitPattern {}

macro_rules! integer_primitives {
    ($($t:ty),*) => {$(
        // SAFETY: every bit pattern is a valid value of a primitive integer.
        unsafe impl AnyBitPattern for $t {}
        // SAFETY: a primitive integer has no padding.
        unsafe impl NoPadding for $t {}
    )*};
}
integer_primitives!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

// SAFETY: a thin raw pointer is one initialised address-sized value.
unsafe impl<T: 'static> NoPadding for *const T {}
// SAFETY: as above.
unsafe impl<T: 'static> NoPadding for *mut T {}
// SAFETY: an array's elements lie back to back (an element's size is a multiple of its
// alignment), so an array of values without padding has none.
unsafe impl<T: NoPadding, const N: usize> NoPadding for [T; N] {}

/// A data pointer in a program context: one of the two fields ([`program_type!`]'s `data
/// start..end`) through which programs reach the bytes of an invocation (a packet, a command
/// line). A pointer in the ABI (`uint8_t*`), but not the extension's to set: before programs
/// run, the SDK writes both from what the invocation lends (a hook's `ContextData`, a test
/// run's [`TestRunData`]), so programs, which the verifier lets access anything between
/// them, see only bytes that live while they run. Whatever the fields held before is
/// overwritten: `NULL`, or a value read from bytes (`AnyBitPattern`, as a test run's
/// `ctx_in`), is never what programs see. A helper that receives the context mutably
/// ([`ContextMut`](crate::ContextMut)) may change them, but the SDK puts back what they held
/// when it returns ([`DataPointerOffsets`](crate::DataPointerOffsets)), so no helper can move
/// the range either (a helper that should, as netebpfext's `bpf_xdp_adjust_head` does, needs
/// hand-built tables and their `unsafe` contracts). After a test run the SDK sets them to NULL
/// before [`TestRun::destroy`], so these two fields never carry a kernel address to `ctx_out`
/// (what other fields carry is the extension's). All of this holds for program types
/// declared with [`program_type!`] and started through the facade; hand-built program data
/// and `HookProvider::register` leave it to their `unsafe` contracts.
///
/// [`program_type!`]: crate::program_type!
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataPointer(*mut u8);

impl DataPointer {
    /// NULL: the value of a context built by the extension.
    pub const NULL: Self = DataPointer(ptr::null_mut());

    /// The address (for tracing or comparison; reading through it needs the invocation's
    /// own view of the bytes).
    #[must_use]
    pub const fn as_ptr(self) -> *const u8 {
        self.0.cast_const()
    }

    /// Whether the pointer is NULL.
    #[must_use]
    pub const fn is_null(self) -> bool {
        self.0.is_null()
    }
}

impl Default for DataPointer {
    fn default() -> Self {
        DataPointer::NULL
    }
}

impl core::fmt::Debug for DataPointer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

// SAFETY: a raw pointer in a transparent wrapper: every bit pattern is a value (the SDK
// overwrites it before programs could use it), and there is no padding.
unsafe impl AnyBitPattern for DataPointer {}
// SAFETY: as above.
unsafe impl NoPadding for DataPointer {}

/// Implements [`NoPadding`] (and [`AnyBitPattern`]) for a struct after checking that every
/// field's type is `NoPadding` and that the fields' sizes add up to the struct's (so no byte
/// is padding, in whatever order the fields lie).
///
/// Either around the struct's definition, or, for a struct defined elsewhere,
/// `no_padding!(Type { field: FieldType, … })` listing all its fields with their types (the
/// list is matched as a pattern without `..`, so a missing field or a wrong type does not
/// compile):
///
/// ```
/// # use ebpf_ext_program_info::{no_padding, NoPadding};
/// no_padding! {
///     /// A context.
///     #[repr(C)]
///     #[derive(Clone, Copy)]
///     pub struct Context { pub data_start: *mut u8, pub value: u32, pub reserved: u32 }
/// }
/// #[derive(Clone, Copy)]
/// struct Pair { a: u32, b: [u8; 4] }
/// no_padding!(Pair { a: u32, b: [u8; 4] });
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::no_padding;
/// no_padding! {
///     #[repr(C)]
///     #[derive(Clone, Copy)]
///     struct Padded { a: u16, b: u32 } // two bytes of padding after `a`
/// }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::no_padding;
/// #[repr(C)]
/// #[derive(Clone, Copy)]
/// struct Tail { a: u64, b: u8 } // seven bytes of padding at the end
/// no_padding!(Tail { a: u64, b: u8 });
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::no_padding;
/// #[repr(C)]
/// #[derive(Clone, Copy)]
/// struct Pair { a: u32, b: u16, c: u16 }
/// no_padding!(Pair { a: u32, b: u32 }); // `c` left out, `b`'s type wrong
/// ```
///
/// A constant named like a field does not stand in for it:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::{any_bit_pattern, no_padding};
/// #[derive(Clone, Copy, PartialEq, Eq)]
/// struct Unit;
/// any_bit_pattern!(Unit {});
/// no_padding!(Unit {});
/// #[derive(Clone, Copy)]
/// struct Holder { a: &'static Unit, b: u64 } // a reference: never NULL
/// #[allow(non_upper_case_globals)]
/// const a: &'static Unit = &Unit;
/// no_padding!(Holder { a: &'static Unit, b: u64 });
/// ```
///
/// A field is listed with its own type, not one it dereferences to:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::no_padding;
/// # use core::ops::Deref;
/// no_padding! {
///     #[derive(Clone, Copy)]
///     struct Word { x: u64 }
/// }
/// impl Deref for Word {
///     type Target = [u8; 15];
///     fn deref(&self) -> &[u8; 15] { &[0; 15] }
/// }
/// #[repr(C)]
/// #[derive(Clone, Copy)]
/// struct Padded { a: Word, b: u8 } // seven bytes of padding at the end
/// no_padding!(Padded { a: [u8; 15], b: u8 }); // 15 + 1 = 16 would pass the size check
/// ```
#[macro_export]
macro_rules! no_padding {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $field_ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $field_ty ),*
        }
        $crate::no_padding!($name { $($field: $field_ty),* });
    };
    ($ty:ident { $($field:ident : $field_ty:ty),* $(,)? }) => {
        const _: () = {
            #[allow(dead_code, reason = "only type-checked")]
            fn every_field_is_listed_with_its_type(value: &$ty) {
                fn check<T: $crate::NoPadding>(_: &T) {}
                // The field's own type, fixed before it is compared with the listed one (a
                // `&$field_ty` annotation would accept a field that derefs to that type).
                fn type_of<T>(_: &T) -> ::core::marker::PhantomData<T> {
                    ::core::marker::PhantomData
                }
                // Every field listed (no `..`), none bound: a name in a pattern can be a
                // constant's, so each field is read through the value instead.
                let $ty { $($field: _),* } = value;
                $(
                    let field_type = type_of(&value.$field);
                    let _: ::core::marker::PhantomData<$field_ty> = field_type;
                    check(&value.$field);
                )*
            }
            ::core::assert!(
                0 $(+ ::core::mem::size_of::<$field_ty>())* == ::core::mem::size_of::<$ty>(),
                "the struct has padding: name it as a field (a reserved one)"
            );
        };
        // SAFETY: every field's type is `NoPadding` and the fields' sizes add up to the
        // struct's (both checked just above, all fields named with their types), so no byte
        // of a value is padding.
        unsafe impl $crate::NoPadding for $ty {}
        // SAFETY: every field's type is `NoPadding`, so `AnyBitPattern` (its supertrait), and
        // there is no padding: every bit pattern of the struct is a valid value.
        unsafe impl $crate::AnyBitPattern for $ty {}
    };
}

/// A test-run context as the core sees it: the 64-byte header the core owns (the
/// `EBPF_CONTEXT_HEADER` in front of every program context), then what programs see.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TestRunContext<T> {
    /// The header: slot 0 the core's execution state, slot 1 its context descriptor (written
    /// once per run; [`TestRun::destroy`] sees both as zero, so they cannot reach the caller);
    /// the rest is left as the extension set it.
    pub header: EBPF_CONTEXT_HEADER,
    /// The program's context: programs receive a pointer to it.
    pub context: T,
}

impl<T> TestRunContext<T> {
    /// Where the program's context lies: right after the 64-byte header, where the core
    /// expects the header to end (`EBPF_CONTEXT_HEADER_SIZE` before the context pointer).
    ///
    /// # Panics
    /// At compile time if `T` is aligned to more than 64 bytes (the context would move away
    /// from the header).
    const CONTEXT_OFFSET: usize = {
        let offset = offset_of!(TestRunContext<T>, context);
        assert!(
            offset == EBPF_CONTEXT_HEADER_SIZE,
            "a test-run context must follow its 64-byte header directly (alignment above 64)"
        );
        offset
    };

    /// A context with a zeroed header.
    ///
    /// # Panics
    /// At compile time if `T` is aligned to more than 64 bytes.
    pub const fn new(context: T) -> Self {
        let _ = Self::CONTEXT_OFFSET;
        TestRunContext {
            header: [0; 8],
            context,
        }
    }
}

/// A program type's test runs: how `context_create` builds the context from the caller's
/// buffers and `context_destroy` writes it back. Plug it in with
/// [`ProgramData::with_test_run`](crate::ProgramData::with_test_run).
///
/// `Self` is what the run owns besides the context (copies the context points into); it is
/// dropped after [`TestRun::destroy`], or at once if `context_create` fails after
/// [`TestRun::create`] succeeded.
///
/// # IRQL
/// Both functions run at the program type's `required_irql` (up to DISPATCH_LEVEL), on the
/// core's test-run thread: allocate only from non-paged pool. They must not panic (in a
/// driver a panic is a bugcheck).
pub trait TestRun: Sized + Send + 'static {
    /// What programs (and helpers) see: the context descriptor's type, or a struct that
    /// starts with it.
    type Context: 'static;
    /// Pool tag of the run's allocation.
    const TAG: PoolTag;

    /// Builds the context (with its header) and what it owns from the caller's buffers.
    ///
    /// # Errors
    /// What `context_create` is to return (`EBPF_INVALID_ARGUMENT` for malformed input,
    /// `EBPF_NO_MEMORY` when an allocation fails).
    fn create(
        input: &TestRunInput<'_>,
    ) -> Result<(TestRunContext<Self::Context>, Self), ebpf_result_t>;

    /// Writes the context after the run (`context` as programs left it, header included,
    /// with NULL data pointers where the SDK set them) and the data to `output`; what is not
    /// written is reported with size 0.
    fn destroy(self, context: &mut TestRunContext<Self::Context>, output: &mut TestRunOutput);

    /// The bytes the context's data pointers cover while the run lasts, asked once after
    /// [`TestRun::create`], with the run in its final place: by default the caller's
    /// `data_in`, in place. Used where the SDK knows where the pointers lie ([`program_type!`]
    /// with a `data` clause, [`ProgramData::with_test_run_data`]); ignored otherwise.
    ///
    /// [`program_type!`]: crate::program_type!
    /// [`ProgramData::with_test_run_data`]: crate::ProgramData::with_test_run_data
    fn data(&mut self) -> TestRunData<'_> {
        TestRunData::Input
    }
}

/// What a test run's data pointers cover ([`TestRun::data`]). Programs may write the bytes.
#[derive(Debug)]
pub enum TestRunData<'a> {
    /// The caller's `data_in`, in place (both pointers NULL if it is NULL or empty); the core
    /// keeps it until `context_destroy`, where [`TestRunOutput::copy_input_data`] copies it
    /// out.
    Input,
    /// Bytes the run owns (a copy it made of part of `data_in`; both pointers NULL if empty).
    Owned(&'a mut [u8]),
    /// No bytes: both pointers NULL.
    None,
}

/// The simplest test run, upstream's sample extension's: the context is the first
/// `size_of::<C>()` bytes of `ctx_in` (`EBPF_INVALID_ARGUMENT` if shorter), and afterwards it
/// goes back to `ctx_out` (without the header, which stays the kernel's) with the data to
/// `data_out`. Where the SDK knows the context's data pointers ([`program_type!`]'s `data`
/// clause) programs work on `data_in` in place ([`TestRunData::Input`]) and `ctx_out` gets
/// the two pointers NULL; any other field, pointers included, reaches programs and helpers as
/// `ctx_in` had it, so use it only for contexts whose other fields are plain values.
///
/// The run is allocated with pool tag `TAG` (by default `EbTr`, the SDK's); name your
/// driver's to tell its allocations apart (`CopyTestRun<Ctx, { TAG.value() }>`).
///
/// ```ignore
/// program_type! {
///     pub static PROGRAM_DATA = c"sample", PROGRAM_TYPE, BPF_PROG_TYPE;
///     context SampleContext, data data_start..data_end;
///     helpers { /* … */ }
///     test run CopyTestRun<SampleContext, { TAG.value() }>;
/// }
/// ```
///
/// A context with padding must name it as reserved fields ([`no_padding!`](crate::no_padding!)):
/// they come back to `ctx_out` as `ctx_in` had them.
///
/// [`program_type!`]: crate::program_type!
pub struct CopyTestRun<C, const TAG: u32 = COPY_TEST_RUN_TAG>(PhantomData<fn() -> C>);

/// [`CopyTestRun`]'s default pool tag, `EbTr`.
pub const COPY_TEST_RUN_TAG: u32 = u32::from_le_bytes(*b"EbTr");

impl<C, const TAG: u32> core::fmt::Debug for CopyTestRun<C, TAG> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CopyTestRun")
    }
}

impl<C: NoPadding, const TAG: u32> TestRun for CopyTestRun<C, TAG> {
    type Context = C;
    const TAG: PoolTag = PoolTag::new(TAG.to_le_bytes());

    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<C>, Self), ebpf_result_t> {
        let context: C = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        Ok((TestRunContext::new(context), CopyTestRun(PhantomData)))
    }

    fn destroy(self, context: &mut TestRunContext<C>, output: &mut TestRunOutput) {
        // The data first: `data_in` may share the request's buffer with `ctx_out`, and the
        // context comes from pool.
        output.copy_input_data();
        output.write_context(&context.context);
    }
}

/// The caller's buffers at `context_create`.
///
/// # Invariants
/// `data` is `None` or the core's `data_in` pointer, as the core passed it, and its non-zero
/// size: readable and writable for that many bytes until `context_destroy`, not covered by any
/// Rust reference but those [`TestRunInput::data`] lends for `'a`.
#[derive(Debug)]
pub struct TestRunInput<'a> {
    data: Option<(NonNull<u8>, usize)>,
    context: Option<&'a [u8]>,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> TestRunInput<'a> {
    /// The caller's `data_in`; `None` if NULL or empty.
    #[must_use]
    pub fn data(&self) -> Option<&'a [u8]> {
        let (data, len) = self.data?;
        // SAFETY: `len` readable bytes, written by no one during `context_create` ('a): the
        // type's invariant.
        Some(unsafe { slice::from_raw_parts(data.as_ptr(), len) })
    }

    /// The caller's `data_in` as raw pointers, for program data built by hand whose test runs
    /// set their context's data pointers themselves (with [`program_type!`]'s `data` clause
    /// the SDK sets them: [`TestRunData::Input`]); `None` if NULL or empty. The core keeps the
    /// buffer until `context_destroy`, where [`TestRunOutput::copy_input_data`] copies it out.
    ///
    /// [`program_type!`]: crate::program_type!
    ///
    /// The pointers are the core's own (not derived from a shared slice), so programs may
    /// write through them.
    #[must_use]
    pub fn data_range(&self) -> Option<Range<*mut u8>> {
        let (data, len) = self.data?;
        let start = data.as_ptr();
        Some(start..start.wrapping_add(len))
    }

    /// The caller's `ctx_in`; `None` if NULL or empty.
    #[must_use]
    pub fn context_bytes(&self) -> Option<&'a [u8]> {
        self.context
    }

    /// The first `size_of::<T>()` bytes of `ctx_in` as a `T`; `None` if `ctx_in` is NULL or
    /// shorter.
    #[must_use]
    pub fn context<T: AnyBitPattern>(&self) -> Option<T> {
        let bytes = self.context?.get(..size_of::<T>())?;
        // SAFETY: `size_of::<T>()` readable bytes (just checked), read unaligned; every bit
        // pattern is a valid `T` (`AnyBitPattern`).
        Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
    }
}

/// The caller's output buffers at `context_destroy`.
///
/// Each write either fits (the size reported is what was written) or writes nothing (size
/// 0), as upstream's extensions do.
///
/// # Invariants
/// `data_out` and `context_out` are `None` or a buffer of the core writable for its capacity;
/// `data_in` is `None` or the core's `data_in` pointer and size ([`TestRunInput`]); no Rust
/// reference covers any of them.
#[derive(Debug)]
pub struct TestRunOutput {
    data_in: Option<(NonNull<u8>, usize)>,
    data_out: Option<(NonNull<u8>, usize)>,
    context_out: Option<(NonNull<u8>, usize)>,
    data_written: usize,
    context_written: usize,
}

impl TestRunOutput {
    /// Writes `value` to `ctx_out`; `false` (size 0) if there is no buffer or it is smaller.
    ///
    /// `T` has no padding ([`NoPadding`]), so every byte written is one of `value`'s: a struct
    /// with padding names it as a reserved field, which `create` fills from `ctx_in` to give
    /// the caller back its own bytes there.
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::TestRunOutput;
    /// // Three padding bytes after the flag: they would reach user mode uninitialised.
    /// fn write(output: &mut TestRunOutput, context: &(u8, u32)) {
    ///     output.write_context(context);
    /// }
    /// ```
    pub fn write_context<T: NoPadding>(&mut self, value: &T) -> bool {
        self.write_context_parts(&[bytes_of(value)])
    }

    /// Writes the run's header (64 bytes) and then its context to `ctx_out`, back to back;
    /// `false` (size 0) if there is no buffer or it is smaller.
    ///
    /// The header's first two slots, which the core writes (its execution state and its copy
    /// of the context descriptor: kernel addresses), go out as zero; the other six as the
    /// run left them. (ntosebpfext copies the core's two as well.)
    pub fn write_header_and_context<T: NoPadding>(&mut self, run: &TestRunContext<T>) -> bool {
        const CORE_SLOTS: usize = CORE_HEADER_SLOTS * size_of::<u64>();
        self.write_context_parts(&[
            &[0; CORE_SLOTS],
            &bytes_of(&run.header)[CORE_SLOTS..],
            bytes_of(&run.context),
        ])
    }

    /// Writes `parts` back to back to `ctx_out`.
    fn write_context_parts(&mut self, parts: &[&[u8]]) -> bool {
        self.context_written = 0;
        let Some((out, capacity)) = self.context_out else {
            return false;
        };
        // SAFETY: `ctx_out`, writable for `capacity` bytes and not borrowed (the invariant).
        match unsafe { write_parts(out, capacity, parts) } {
            Some(len) => {
                self.context_written = len;
                true
            }
            None => false,
        }
    }

    /// Writes `len` bytes to `data_out` through `fill`, which gets them zeroed; `false`
    /// (size 0, `fill` not called) if there is no buffer or it is smaller.
    pub fn write_data_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.data_written = 0;
        match self.data_out {
            Some((out, capacity)) if capacity >= len => {
                // SAFETY: `capacity` ≥ `len` writable bytes (the core's contract for
                // `data_out`), not covered by any other reference while `fill` runs (the
                // input slices ended with `context_create`).
                unsafe { ptr::write_bytes(out.as_ptr(), 0, len) };
                // SAFETY: as above, now initialised.
                fill(unsafe { slice::from_raw_parts_mut(out.as_ptr(), len) });
                self.data_written = len;
                true
            }
            _ => false,
        }
    }

    /// Writes `bytes` to `data_out`; `false` (size 0) if there is no buffer or it is smaller.
    pub fn write_data(&mut self, bytes: &[u8]) -> bool {
        self.write_data_with(bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// Writes `parts` back to back to `data_out` (strings packed as [`PackedStrings`] reads
    /// them); `false` (size 0) if there is no buffer or it is smaller, or the lengths add up
    /// to more than `usize` holds.
    pub fn write_data_parts(&mut self, parts: &[&[u8]]) -> bool {
        self.data_written = 0;
        let Some((out, capacity)) = self.data_out else {
            return false;
        };
        // SAFETY: `data_out`, writable for `capacity` bytes and not borrowed (the invariant).
        match unsafe { write_parts(out, capacity, parts) } {
            Some(len) => {
                self.data_written = len;
                true
            }
            None => false,
        }
    }

    /// Copies the caller's `data_in`, as programs left it, to `data_out`; `false` (size 0) if
    /// there was no input data, or no output buffer or it is smaller.
    pub fn copy_input_data(&mut self) -> bool {
        self.data_written = 0;
        match (self.data_in, self.data_out) {
            (Some((input, len)), Some((out, capacity))) if capacity >= len => {
                // SAFETY: `len` bytes of the caller's data, which the core keeps until the run
                // ends, into `capacity` ≥ `len` writable bytes; `copy` allows the two to
                // overlap (they may share the request's buffer).
                unsafe { ptr::copy(input.as_ptr(), out.as_ptr(), len) };
                self.data_written = len;
                true
            }
            _ => false,
        }
    }
}

/// The bytes of `value`: all initialised, as `T` has no padding.
fn bytes_of<T: NoPadding>(value: &T) -> &[u8] {
    // SAFETY: `size_of::<T>()` bytes of a live `T`, every one initialised (`NoPadding`),
    // borrowed as long as `value`.
    unsafe { slice::from_raw_parts(ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

/// The sum of `lengths`; `None` if it overflows.
fn total_len(lengths: impl IntoIterator<Item = usize>) -> Option<usize> {
    lengths.into_iter().try_fold(0usize, usize::checked_add)
}

/// Copies `parts` back to back to the `capacity` bytes at `out`; their total length, or
/// `None` (nothing written) if it overflows or exceeds `capacity`.
///
/// # Safety
/// `out` is writable for `capacity` bytes and no Rust reference covers them (one of
/// [`TestRunOutput`]'s buffers).
unsafe fn write_parts(out: NonNull<u8>, capacity: usize, parts: &[&[u8]]) -> Option<usize> {
    let len = total_len(parts.iter().map(|part| part.len()))?;
    if len > capacity {
        return None;
    }
    let mut at = 0;
    for part in parts {
        // SAFETY: `at + part.len()` ≤ `len` ≤ `capacity` writable bytes at `out` (the caller's
        // precondition and the check above); `copy` would allow `part` to overlap them.
        unsafe { ptr::copy(part.as_ptr(), out.as_ptr().wrapping_add(at), part.len()) };
        at += part.len();
    }
    Some(len)
}

no_padding! {
    /// A `UNICODE_STRING` in a context the caller's bytes fill: the same 16 bytes, with the
    /// four C leaves as padding after `MaximumLength` named (`reserved`), so that a test run's
    /// `ctx_out` gives back the bytes `ctx_in` had there (as a byte copy does) and the context
    /// can be written with [`TestRunOutput::write_context`].
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CountedString {
        /// `Length`: bytes in use.
        pub length: u16,
        /// `MaximumLength`: bytes the buffer holds.
        pub maximum_length: u16,
        /// The padding bytes, kept as they came.
        pub reserved: u32,
        /// `Buffer`.
        pub buffer: *mut u16,
    }
}

const _: () = assert!(
    size_of::<CountedString>() == size_of::<UNICODE_STRING>()
        && offset_of!(CountedString, buffer) == offset_of!(UNICODE_STRING, Buffer),
    "CountedString has UNICODE_STRING's 64-bit layout"
);

impl CountedString {
    /// No string: lengths 0, `buffer` NULL.
    pub const EMPTY: CountedString = CountedString {
        length: 0,
        maximum_length: 0,
        reserved: 0,
        buffer: ptr::null_mut(),
    };

    /// Takes `string`'s lengths and buffer, keeping `reserved`.
    pub fn set(&mut self, string: &UNICODE_STRING) {
        (self.length, self.maximum_length, self.buffer) =
            (string.Length, string.MaximumLength, string.Buffer);
    }

    /// The same lengths and `reserved` bytes, `buffer` NULL: what a test run hands back.
    #[must_use]
    pub const fn without_buffer(self) -> CountedString {
        CountedString {
            buffer: ptr::null_mut(),
            ..self
        }
    }
}

impl From<UNICODE_STRING> for CountedString {
    fn from(string: UNICODE_STRING) -> Self {
        let mut counted = CountedString::EMPTY;
        counted.set(&string);
        counted
    }
}

/// Strings a test-run context describes with `UNICODE_STRING`s ([`CountedString`]s) while the
/// caller packs their bytes back to back in `data_in` (ntosebpfext's process context): the
/// run's copies, each in a pool buffer of its `MaximumLength` bytes.
pub struct PackedStrings<const N: usize> {
    copies: [Option<(PoolArray<u8>, usize)>; N],
}

impl<const N: usize> PackedStrings<N> {
    /// Copies the strings packed in `data`, in the order of `strings`, and points each of
    /// `strings` at its copy (an empty one: `buffer` NULL, `maximum_length` 0).
    ///
    /// # Errors
    /// `EBPF_INVALID_ARGUMENT` if `data` is shorter than the `Length`s together or a `Length`
    /// exceeds its `MaximumLength`, `EBPF_NO_MEMORY` if a copy cannot be allocated. On error
    /// every `buffer` of `strings` is NULL (none points at a copy, which is freed, nor at what
    /// the caller put there) and their lengths are left as they were.
    pub fn copy_in(
        data: &[u8],
        mut strings: [&mut CountedString; N],
        tag: PoolTag,
    ) -> Result<Self, ebpf_result_t> {
        for string in &mut strings {
            string.buffer = ptr::null_mut();
        }
        let total = total_len(strings.iter().map(|s| usize::from(s.length)));
        if total.is_none_or(|total| data.len() < total)
            || strings.iter().any(|s| s.length > s.maximum_length)
        {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        // Every copy first, so that a failure leaves no string pointing at a freed one.
        let mut copies = [const { None }; N];
        let mut data = data;
        for (string, slot) in strings.iter().zip(&mut copies) {
            let len = usize::from(string.length);
            if len == 0 {
                continue;
            }
            let mut copy = PoolArray::try_new(usize::from(string.maximum_length), tag)
                .map_err(|_| EBPF_NO_MEMORY)?;
            let (Some(bytes), Some(rest), Some(to)) =
                (data.get(..len), data.get(len..), copy.get_mut(..len))
            else {
                return Err(EBPF_INVALID_ARGUMENT);
            };
            to.copy_from_slice(bytes);
            data = rest;
            *slot = Some((copy, len));
        }
        for (string, slot) in strings.into_iter().zip(&mut copies) {
            match slot {
                Some((copy, _)) => string.buffer = copy.as_mut_ptr().cast(),
                None => string.maximum_length = 0,
            }
        }
        Ok(PackedStrings { copies })
    }

    /// The bytes string `i` had in `data_in` (as programs may have changed them since); empty
    /// if it was empty, taken, or `i` is out of range.
    #[must_use]
    pub fn get(&self, i: usize) -> &[u8] {
        match self.copies.get(i) {
            Some(Some((copy, len))) => copy.get(..*len).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The bytes of string `i`'s copy, to change or to lend programs ([`TestRun::data`]);
    /// empty as [`PackedStrings::get`].
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        match self.copies.get_mut(i) {
            Some(Some((copy, len))) => copy.get_mut(..*len).unwrap_or(&mut []),
            _ => &mut [],
        }
    }

    /// Gives up string `i`'s copy (its whole buffer, and the length it had), for a context
    /// that owns it otherwise; `None` if it was empty, taken, or `i` is out of range.
    pub fn take(&mut self, i: usize) -> Option<(PoolArray<u8>, usize)> {
        self.copies.get_mut(i)?.take()
    }
}

/// The SDK's `context_create` and `context_destroy` for test runs through `R`, for program
/// data built by hand (prefer [`ProgramData::with_test_run`](crate::ProgramData::with_test_run)).
#[must_use]
///
/// # Panics
/// At compile time if `R::Context` is aligned to more than 64 bytes (its header would not end
/// where the context begins), or the run as a whole needs an alignment the pool cannot give
/// it (above 64 bytes for a run smaller than a page).
pub const fn test_run_functions<R: TestRun>() -> (
    ebpf_program_context_create_t,
    ebpf_program_context_destroy_t,
) {
    let () = Run::<R>::LAYOUT;
    (
        context_create::<R, NO_FIELD, NO_FIELD>,
        context_destroy::<R, NO_FIELD, NO_FIELD>,
    )
}

/// The header slots the core writes (0: its execution state, 1: its context descriptor).
const CORE_HEADER_SLOTS: usize = 2;

/// An offset that names no data field: the SDK writes no data pointers.
pub(crate) const NO_FIELD: usize = usize::MAX;

/// [`test_run_functions`] for a context whose data pointers lie at byte offsets `START` and
/// `END` of `R::Context`: `context_create` sets them to what [`TestRun::data`] chooses.
///
/// # Safety
/// `START` and `END` are the offsets of two pointer fields of `R::Context` that programs
/// read as their data range, or both `usize::MAX` (none: nothing is written).
///
/// # Panics
/// If a field would not lie within `R::Context` (at compile time in a `static`), or as
/// [`test_run_functions`].
#[must_use]
pub(crate) const unsafe fn test_run_data_functions<
    R: TestRun,
    const START: usize,
    const END: usize,
>() -> (
    ebpf_program_context_create_t,
    ebpf_program_context_destroy_t,
) {
    const fn fits(offset: usize, size: usize) -> bool {
        offset < size && size - offset >= size_of::<*mut u8>()
    }
    let () = Run::<R>::LAYOUT;
    let size = size_of::<R::Context>();
    assert!(
        (START == NO_FIELD && END == NO_FIELD) || (fits(START, size) && fits(END, size)),
        "a data field lies outside the test run's context"
    );
    (
        context_create::<R, START, END>,
        context_destroy::<R, START, END>,
    )
}

/// What `context_create` allocates: the context (header first) and what the run owns.
///
/// # Invariants
/// `data_in` is `None` or the core's `data_in` pointer as the core passed it (programs write
/// through the context's copies of it) and its size, valid until `context_destroy`.
#[repr(C)]
struct Run<R: TestRun> {
    context: TestRunContext<R::Context>,
    data_in: Option<(NonNull<u8>, usize)>,
    state: R,
}

impl<R: TestRun> Run<R> {
    /// Fails to compile if the context does not follow its 64-byte header directly
    /// ([`TestRunContext::CONTEXT_OFFSET`]), the pool cannot align the run as it needs
    /// (every `context_create` would fail with `EBPF_NO_MEMORY`), or the run is larger than
    /// [`MAX_TEST_RUN_SIZE`]: `context_create` and `context_destroy` move it by value on the
    /// kernel stack, at DISPATCH_LEVEL, where overflowing the stack is a bug check.
    const LAYOUT: () = {
        let _ = TestRunContext::<R::Context>::CONTEXT_OFFSET;
        assert!(
            ebpf_ext_pool::pool_can_align(size_of::<Run<R>>(), align_of::<Run<R>>()),
            "a test run's state needs an alignment the pool cannot give it"
        );
        assert!(
            size_of::<Run<R>>() <= MAX_TEST_RUN_SIZE,
            "a test run's context and state exceed MAX_TEST_RUN_SIZE: keep what is large in pool (PoolArray, PoolBox)"
        );
    };
}

/// Most bytes a test run (its [`TestRunContext`], header included, and its [`TestRun`] state)
/// may take: the SDK moves it by value on the kernel stack (24 KiB on x64, shared with the
/// core's frames) while it creates and destroys it. A frame above one page would also need
/// stack probes (`__chkstk`), which a driver image does not link.
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_pool::PoolTag;
/// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
/// # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
/// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
/// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
/// // A 4 KiB buffer inline in the run's state: too large for the stack.
/// struct Run { buffer: [u8; 4096] }
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
/// The same run with its buffer in pool compiles:
///
/// ```
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_pool::{PoolArray, PoolTag};
/// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
/// # static CONTEXT: ContextDescriptor = ContextDescriptor::new(16, None, None, None);
/// # static DESCRIPTOR: ProgramTypeDescriptor = ProgramTypeDescriptor::new(c"x", &CONTEXT, ebpf_ext_sys::ntdef::GUID::from_u128(1), 1, false);
/// # static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
/// struct Run { buffer: PoolArray<u8> }
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
pub const MAX_TEST_RUN_SIZE: usize = 2048;

/// Where the program's context lies in a [`Run`].
const fn program_offset<R: TestRun>() -> usize {
    offset_of!(Run<R>, context) + TestRunContext::<R::Context>::CONTEXT_OFFSET
}

/// A slice over `size` bytes at `pointer`; `None` if NULL or empty.
///
/// # Safety
/// `pointer` is NULL or readable for `size` bytes for `'a`.
unsafe fn input<'a>(pointer: *const u8, size: usize) -> Option<&'a [u8]> {
    if pointer.is_null() || size == 0 {
        return None;
    }
    // SAFETY: the caller's precondition.
    Some(unsafe { slice::from_raw_parts(pointer, size) })
}

/// The core's `data_in` pointer (kept raw: programs write through it) and size; `None` if
/// NULL or empty.
fn raw_input(pointer: *const u8, size: usize) -> Option<(NonNull<u8>, usize)> {
    match NonNull::new(pointer.cast_mut()) {
        Some(pointer) if size > 0 => Some((pointer, size)),
        _ => None,
    }
}

/// `context_create` of a program type whose test runs are `R`.
///
/// # Safety
/// The core's contract: each input is NULL or readable for its size (`data_in` stays valid,
/// and writable by programs, until `context_destroy`); `context` is NULL or writable.
pub(crate) unsafe extern "win64" fn context_create<
    R: TestRun,
    const START: usize,
    const END: usize,
>(
    data_in: *const u8,
    data_size: usize,
    context_in: *const u8,
    context_size: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    let Some(slot) = NonNull::new(context) else {
        return EBPF_INVALID_ARGUMENT;
    };
    // SAFETY: a writable out slot (the caller's contract).
    unsafe { slot.write(ptr::null_mut()) };
    // INVARIANT: the core's `data_in`, readable and writable for `data_size` bytes until
    // `context_destroy` (the caller's contract), borrowed only through `TestRunInput::data`.
    let input = TestRunInput {
        data: raw_input(data_in, data_size),
        // SAFETY: NULL or `context_size` readable bytes, for this call (the caller's
        // contract).
        context: unsafe { input(context_in, context_size) },
        _data: PhantomData,
    };
    let (context, state) = match R::create(&input) {
        Ok(created) => created,
        Err(EBPF_SUCCESS) => {
            // A refusal that claims success would leave the core with a NULL context.
            ebpf_ext_trace::trace_message!(
                ebpf_ext_trace::Level::Error,
                ebpf_ext_trace::keyword::EXTENSION,
                "test run context_create failed with EBPF_SUCCESS: reported as EBPF_FAILED"
            );
            return EBPF_FAILED;
        }
        Err(error) => return error,
    };
    let data_in = input.data;
    let run = Run::<R> {
        context,
        data_in,
        state,
    };
    // On failure the run (and whatever it owns) is dropped here.
    let Ok(mut run) = PoolBox::try_new(run, R::TAG) else {
        return EBPF_NO_MEMORY;
    };
    if START != NO_FIELD && END != NO_FIELD {
        // Asked with the run in its pool block, where it stays until `context_destroy`: owned
        // bytes stay put while programs run, and nothing touches the run until then. One
        // borrow of the run, split, so that the owned bytes' pointers stay valid.
        let Run { context, state, .. } = &mut *run;
        let range = match state.data() {
            TestRunData::Input => data_in.map(|(start, len)| {
                let start = start.as_ptr();
                [start, start.wrapping_add(len)]
            }),
            TestRunData::Owned(bytes) if !bytes.is_empty() => {
                let range = bytes.as_mut_ptr_range();
                Some([range.start, range.end])
            }
            TestRunData::Owned(_) | TestRunData::None => None,
        };
        let values = range.unwrap_or([ptr::null_mut(); 2]);
        // SAFETY: `START` and `END` are offsets of pointer fields inside `R::Context` (the
        // contract of `test_run_data_functions`, the only place these functions are made with
        // offsets), in the run's context, borrowed mutably here.
        unsafe {
            write_pointer_fields(
                ptr::from_mut(&mut context.context).cast(),
                [START, END],
                values,
            );
        }
    }
    let program = run
        .into_raw()
        .as_ptr()
        .cast::<u8>()
        .wrapping_add(program_offset::<R>());
    // SAFETY: the out slot, as above; `program` stays valid until `context_destroy`, which
    // takes the run back.
    unsafe { slot.write(program.cast()) };
    EBPF_SUCCESS
}

/// A writable buffer and its capacity from `context_destroy`'s arguments, and the size slot
/// set to 0; `None` if the buffer or the slot is NULL.
///
/// # Safety
/// `size` is NULL or readable and writable; `buffer` is NULL or writable for `*size` bytes.
unsafe fn output(buffer: *mut u8, size: *mut usize) -> Option<(NonNull<u8>, usize)> {
    if size.is_null() {
        return None;
    }
    // SAFETY: readable (the caller's precondition).
    let capacity = unsafe { size.read() };
    // SAFETY: writable (the caller's precondition).
    unsafe { size.write(0) };
    NonNull::new(buffer).map(|b| (b, capacity))
}

/// `context_destroy` of a program type whose test runs are `R`.
///
/// # Safety
/// `context` is NULL or from [`context_create::<R>`], destroyed once; each size slot is NULL
/// or readable and writable, holding the capacity of its buffer, which is NULL or writable
/// for that many bytes.
pub(crate) unsafe extern "win64" fn context_destroy<
    R: TestRun,
    const START: usize,
    const END: usize,
>(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    // SAFETY: the caller's contract for the data slot and buffer.
    let data_out_buffer = unsafe { output(data_out, data_size_out) };
    // SAFETY: as above, for the context.
    let context_out_buffer = unsafe { output(context_out, context_size_out) };
    if context.is_null() {
        return;
    }
    let Some(run) = NonNull::new(
        context
            .cast::<u8>()
            .wrapping_sub(program_offset::<R>())
            .cast::<Run<R>>(),
    ) else {
        return;
    };
    // SAFETY: `context_create::<R>` made this address from a `PoolBox<Run<R>>` with `R::TAG`,
    // handed back once.
    let run = unsafe { PoolBox::from_raw(run, R::TAG) }.into_inner();
    let Run {
        mut context,
        data_in,
        state,
    } = run;
    // INVARIANT: the core's output buffers with their capacities (the caller's contract) and
    // its `data_in` (kept from `context_create`); no reference covers them.
    let mut output = TestRunOutput {
        data_in,
        data_out: data_out_buffer,
        context_out: context_out_buffer,
        data_written: 0,
        context_written: 0,
    };
    if START != NO_FIELD && END != NO_FIELD {
        // The addresses programs worked on are the kernel's: they never reach `ctx_out`.
        // SAFETY: as in `context_create`: pointer fields of the context, borrowed mutably.
        unsafe {
            write_pointer_fields(
                ptr::from_mut(&mut context.context).cast(),
                [START, END],
                [ptr::null_mut(); 2],
            );
        }
    }
    // The header slots the core wrote (its execution state, on its stack, and its copy of
    // the context descriptor) are kernel addresses: `destroy` sees them as zero, so no way of
    // writing the header sends them to the caller. The core reads neither after the run.
    context.header[..CORE_HEADER_SLOTS].fill(0);
    state.destroy(&mut context, &mut output);
    if !data_size_out.is_null() {
        // SAFETY: writable (the caller's contract).
        unsafe { data_size_out.write(output.data_written) };
    }
    if !context_size_out.is_null() {
        // SAFETY: as above.
        unsafe { context_size_out.write(output.context_written) };
    }
}

#[cfg(test)]
mod tests {
    use super::total_len;

    #[test]
    fn lengths_that_overflow_have_no_total() {
        assert_eq!(total_len([3, 4, 0]), Some(7));
        assert_eq!(total_len([]), Some(0));
        assert_eq!(total_len([usize::MAX, 0]), Some(usize::MAX));
        assert_eq!(total_len([usize::MAX, 1]), None);
        assert_eq!(total_len([usize::MAX / 2 + 1, usize::MAX / 2 + 1]), None);
    }
}
