//! Test runs (`bpf_prog_test_run`): the extension builds its program context from the
//! caller's buffers and writes it back, safely, through [`TestRun`]; the SDK's
//! `context_create` / `context_destroy` trampolines ([`ProgramData::with_test_run`]) do all
//! the pointer work once.
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
use core::mem::offset_of;
use core::ops::Range;
use core::ptr::{self, NonNull};
use core::slice;

use ebpf_ext_pool::{PoolArray, PoolBox, PoolTag};
use ebpf_ext_sys::ebpf_extension::EBPF_CONTEXT_HEADER;
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

macro_rules! any_bit_pattern_primitives {
    ($($t:ty),*) => {$(
        // SAFETY: every bit pattern is a valid value of a primitive integer.
        unsafe impl AnyBitPattern for $t {}
    )*};
}
any_bit_pattern_primitives!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

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
                let $ty { $($field),* } = value;
                $( check($field); )*
            }
        };
        // SAFETY: every field's type is `AnyBitPattern` (checked just above, all fields
        // named), so every bit pattern of the struct is a valid value.
        unsafe impl $crate::AnyBitPattern for $ty {}
    };
}

/// A test-run context as the core sees it: the 64-byte header the core owns (the
/// `EBPF_CONTEXT_HEADER` in front of every program context), then what programs see.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TestRunContext<T> {
    /// The header: slot 0 the core's execution state, slot 1 its context descriptor (written
    /// once per run); the rest is left as the extension set it.
    pub header: EBPF_CONTEXT_HEADER,
    /// The program's context: programs receive a pointer to it.
    pub context: T,
}

impl<T> TestRunContext<T> {
    /// A context with a zeroed header.
    pub const fn new(context: T) -> Self {
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

    /// Writes the context after the run (`context` as programs left it, header included)
    /// and the data to `output`; what is not written is reported with size 0.
    fn destroy(self, context: &mut TestRunContext<Self::Context>, output: &mut TestRunOutput);
}

/// The caller's buffers at `context_create`.
#[derive(Debug)]
pub struct TestRunInput<'a> {
    data: Option<&'a [u8]>,
    context: Option<&'a [u8]>,
}

impl<'a> TestRunInput<'a> {
    /// The caller's `data_in`; `None` if NULL or empty.
    #[must_use]
    pub fn data(&self) -> Option<&'a [u8]> {
        self.data
    }

    /// The range a context's data pointers take to let programs work on the caller's
    /// `data_in` in place (no copy); `None` if NULL or empty. The core keeps the buffer
    /// until `context_destroy`, where [`TestRunOutput::copy_input_data`] copies it out.
    #[must_use]
    pub fn data_range(&self) -> Option<Range<*mut u8>> {
        self.data
            .map(<[u8]>::as_ptr_range)
            .map(|r| r.start.cast_mut()..r.end.cast_mut())
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
    pub fn write_context<T: Copy>(&mut self, value: &T) -> bool {
        self.context_written = 0;
        match self.context_out {
            Some((out, capacity)) if capacity >= size_of::<T>() => {
                // SAFETY: `capacity` ≥ `size_of::<T>()` writable bytes (the core's contract
                // for `ctx_out`), written unaligned; no Rust reference covers them.
                unsafe { out.as_ptr().cast::<T>().write_unaligned(*value) };
                self.context_written = size_of::<T>();
                true
            }
            _ => false,
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
    /// them); `false` (size 0) if there is no buffer or it is smaller.
    pub fn write_data_parts(&mut self, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|part| part.len()).sum();
        self.write_data_with(len, |mut rest| {
            for part in parts {
                let (head, tail) = rest.split_at_mut(part.len());
                head.copy_from_slice(part);
                rest = tail;
            }
        })
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

/// Strings a test-run context describes with `UNICODE_STRING`s while the caller packs their
/// bytes back to back in `data_in` (ntosebpfext's process context): the run's copies, each in a
/// pool buffer of its `MaximumLength` bytes.
pub struct PackedStrings<const N: usize> {
    copies: [Option<(PoolArray<u8>, usize)>; N],
}

impl<const N: usize> PackedStrings<N> {
    /// Copies the strings packed in `data`, in the order of `strings`, and points each of
    /// `strings` at its copy (an empty one: `Buffer` NULL, `MaximumLength` 0).
    ///
    /// # Errors
    /// `EBPF_INVALID_ARGUMENT` if `data` is shorter than the `Length`s together or a `Length`
    /// exceeds its `MaximumLength` (`strings` are then left as they were), `EBPF_NO_MEMORY`
    /// if a copy cannot be allocated.
    pub fn copy_in(
        data: &[u8],
        strings: [&mut UNICODE_STRING; N],
        tag: PoolTag,
    ) -> Result<Self, ebpf_result_t> {
        let total: usize = strings.iter().map(|s| usize::from(s.Length)).sum();
        if data.len() < total || strings.iter().any(|s| s.Length > s.MaximumLength) {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        let mut copies = [const { None }; N];
        let mut data = data;
        for (string, slot) in strings.into_iter().zip(&mut copies) {
            let len = usize::from(string.Length);
            string.Buffer = ptr::null_mut();
            if len == 0 {
                string.MaximumLength = 0;
                continue;
            }
            let mut copy = PoolArray::try_new(usize::from(string.MaximumLength), tag)
                .map_err(|_| EBPF_NO_MEMORY)?;
            let (bytes, rest) = data.split_at(len);
            copy[..len].copy_from_slice(bytes);
            data = rest;
            string.Buffer = copy.as_mut_ptr().cast();
            *slot = Some((copy, len));
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

    /// Gives up string `i`'s copy (its whole buffer, and the length it had), for a context
    /// that owns it otherwise; `None` if it was empty, taken, or `i` is out of range.
    pub fn take(&mut self, i: usize) -> Option<(PoolArray<u8>, usize)> {
        self.copies.get_mut(i)?.take()
    }
}

/// The SDK's `context_create` and `context_destroy` for test runs through `R`, for program
/// data built by hand (prefer [`ProgramData::with_test_run`](crate::ProgramData::with_test_run)).
#[must_use]
pub const fn test_run_functions<R: TestRun>() -> (
    ebpf_program_context_create_t,
    ebpf_program_context_destroy_t,
) {
    (context_create::<R>, context_destroy::<R>)
}

/// What `context_create` allocates: the context (header first) and what the run owns.
#[repr(C)]
struct Run<R: TestRun> {
    context: TestRunContext<R::Context>,
    data_in: Option<(NonNull<u8>, usize)>,
    state: R,
}

/// Where the program's context lies in a [`Run`].
const fn program_offset<R: TestRun>() -> usize {
    offset_of!(Run<R>, context) + offset_of!(TestRunContext<R::Context>, context)
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

/// `context_create` of a program type whose test runs are `R`.
///
/// # Safety
/// The core's contract: each input is NULL or readable for its size (`data_in` stays valid,
/// and writable by programs, until `context_destroy`); `context` is NULL or writable.
pub(crate) unsafe extern "win64" fn context_create<R: TestRun>(
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
    let input = TestRunInput {
        // SAFETY: NULL or `data_size` readable bytes, for this call (the caller's contract).
        data: unsafe { input(data_in, data_size) },
        // SAFETY: as above.
        context: unsafe { input(context_in, context_size) },
    };
    let (context, state) = match R::create(&input) {
        Ok(created) => created,
        Err(EBPF_SUCCESS) => return EBPF_FAILED,
        Err(error) => return error,
    };
    let data_in = input.data.map(|d| (NonNull::from(d).cast::<u8>(), d.len()));
    let run = Run::<R> {
        context,
        data_in,
        state,
    };
    // On failure the run (and whatever it owns) is dropped here.
    let Ok(run) = PoolBox::try_new(run, R::TAG) else {
        return EBPF_NO_MEMORY;
    };
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
pub(crate) unsafe extern "win64" fn context_destroy<R: TestRun>(
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
    let mut output = TestRunOutput {
        data_in,
        data_out: data_out_buffer,
        context_out: context_out_buffer,
        data_written: 0,
        context_written: 0,
    };
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
