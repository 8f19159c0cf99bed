//! One declaration per helper: [`helpers!`](crate::helpers) and the argument kinds it knows.
//!
//! A helper is called by JIT-compiled or interpreted programs with five 64-bit registers. Its
//! prototype tells the verifier what each register holds; the function must then read the
//! registers the same way. `helpers!` generates both from one list — the prototype from each
//! argument kind's [`HelperArgument::TYPES`], and a trampoline in the eBPF calling convention
//! that turns the registers into the kind's typed value ([`HelperArgument::Value`]) and calls
//! the extension's safe Rust function with them — so a function whose parameters differ from
//! its prototype does not compile, and the two tables are in the same order by construction.

use core::cell::Cell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_DONTCARE,
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_ARGUMENT_TYPE_PTR_TO_MAP,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_RETURN_TYPE_INTEGER,
    EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL, ebpf_argument_type_t, ebpf_return_type_t,
};

/// A kind of helper argument: which prototype entries it stands for and what the helper
/// function receives for them.
///
/// # Safety
/// [`HelperArgument::take`] must read exactly `TYPES.len()` registers, and only as the
/// verifier guarantees them for `TYPES` (for example a pointer to readable memory followed by
/// its size). A kind whose value gives mutable access to the context must declare
/// `MEMORY = Memory::ContextMut` (the trampoline puts the data pointers back only around
/// those).
pub unsafe trait HelperArgument<C: 'static> {
    /// The prototype's argument types for this kind (one or two registers).
    const TYPES: &'static [ebpf_argument_type_t];
    /// What the helper function receives.
    type Value<'a>;
    /// How the function accesses program memory through this argument (none by default).
    const MEMORY: Memory = Memory::None;

    /// Reads this argument from `registers`, starting at `*at`, and advances `*at` past it.
    ///
    /// # Safety
    /// The registers are a program's call of a helper whose prototype has `TYPES` at `*at`,
    /// checked by the verifier; a context pointer points to a `C` (the extension invokes
    /// programs of this type only with a `C`); what they point to stays valid and unaliased
    /// for `'a` (the duration of the call).
    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a>;
}

/// The register at `*at`, advancing `*at` past it.
fn next(registers: &[u64; 5], at: &mut usize) -> u64 {
    let value = registers[*at];
    *at += 1;
    value
}

/// A memory argument, the two registers at `*at` (address, then size), advancing `*at` past
/// them: `None` for a NULL address or a size beyond `usize`, which every memory kind receives
/// as an empty view.
fn next_memory(registers: &[u64; 5], at: &mut usize) -> Option<(u64, usize)> {
    let (address, size) = (next(registers, at), next(registers, at));
    usize::try_from(size)
        .ok()
        .filter(|_| address != 0)
        .map(|size| (address, size))
}

/// A memory argument's start and size (every view: [`Input`], [`SharedBytes`], [`Output`],
/// [`SharedOutput`]), advancing `*at` past its two registers: an empty one (as
/// [`next_memory`] says) is dangling, since reads and writes need a non-NULL pointer even for
/// 0 bytes.
fn next_view(registers: &[u64; 5], at: &mut usize) -> (*mut u8, usize) {
    next_memory(registers, at).map_or((ptr::NonNull::dangling().as_ptr(), 0), |(pointer, size)| {
        (pointer as *mut u8, size)
    })
}

/// The program's context (`PTR_TO_CTX`), received as `&C`.
#[derive(Debug)]
pub enum Context {}

// SAFETY: reads one register, a context pointer the verifier guarantees.
unsafe impl<C: 'static> HelperArgument<C> for Context {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX];
    type Value<'a> = &'a C;
    const MEMORY: Memory = Memory::Context;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let pointer = next(registers, at) as *const C;
        // SAFETY: the verifier passes this program's context, which is a live `C` for the call
        // (the caller's contract).
        unsafe { &*pointer }
    }
}

/// The program's context (`PTR_TO_CTX`), received as `&mut C`: for a helper that keeps
/// state in the context (ntosebpfext's account helpers cache their lookup there).
///
/// It must be the helper's only view of the context: no [`Context`] argument and no
/// `with context` beside it ([`check_overlap`]). It may share a helper with memory arguments
/// ([`Bytes`], [`BytesMut`], [`Cells`]): the verifier accepts only stack, packet or map memory
/// for `PTR_TO_READABLE_MEM` / `PTR_TO_WRITABLE_MEM`, never a `PTR_TO_CTX`, so a buffer the
/// program passes cannot overlap the context (as for [`Context`] beside [`BytesMut`], this
/// relies on the context's data range lying outside `C`: it does where the SDK sets the data
/// pointers, from bytes borrowed apart from the context). With `helpers!`'s `data` clause (as
/// [`program_type!`](crate::program_type!) declares it), the data pointers are put back when
/// the helper returns.
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { calls: u64, b: u64 }
/// fn count(context: &mut Ctx, mut out: Output<'_>) -> u64 {
///     context.calls += 1;
///     out.fill(0);
///     context.calls
/// }
/// helpers! { context Ctx; static H; static A; 0x10000, c"count" => count(ContextMut, BytesMut); }
/// ```
#[derive(Debug)]
pub enum ContextMut {}

// SAFETY: reads one register, a context pointer the verifier guarantees. Nothing else accesses
// the context during the call: the program is stopped in it, the invoker lent the context for
// the invocation, a memory argument cannot point into it (see the type's docs), and
// `check_overlap` refuses any other view of it in the same helper.
unsafe impl<C: 'static> HelperArgument<C> for ContextMut {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX];
    type Value<'a> = &'a mut C;
    const MEMORY: Memory = Memory::ContextMut;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let pointer = next(registers, at) as *mut C;
        // SAFETY: the verifier passes this program's context, a live `C` for the call (the
        // caller's contract), not otherwise accessed during it (see the impl).
        unsafe { &mut *pointer }
    }
}

/// One atomic byte load (`Relaxed`) of program memory: what every view reads with.
///
/// # Safety
/// `at` is valid for reads and writes for the call (`AtomicU8::from_ptr`'s condition, though
/// this only reads: not a `&[u8]`'s byte), and no `&[u8]` or `&mut [u8]` to it is in use
/// meanwhile.
unsafe fn load(at: *const u8) -> u8 {
    // SAFETY: the caller's precondition; a byte is always aligned.
    unsafe { AtomicU8::from_ptr(at.cast_mut()) }.load(Ordering::Relaxed)
}

/// Whether `count` bytes from `offset` on lie within a view of `len` bytes.
fn fits(offset: usize, count: usize, len: usize) -> bool {
    offset.checked_add(count).is_some_and(|end| end <= len)
}

/// One atomic byte store (`Relaxed`) to program memory: what every view writes with.
///
/// # Safety
/// `at` is valid for reads and writes for the call, and no `&[u8]` or `&mut [u8]` to it is in
/// use meanwhile.
unsafe fn store(at: *mut u8, byte: u8) {
    // SAFETY: the caller's precondition; a byte is always aligned.
    unsafe { AtomicU8::from_ptr(at) }.store(byte, Ordering::Relaxed);
}

/// Program memory a helper reads (a [`Bytes`] argument; [`SharedBytes`] derefs to it), for
/// the call.
///
/// The bytes may change while the helper runs: they may be a map value that another
/// processor's program, the core or user mode writes meanwhile (the core takes no lock for it,
/// as for C extensions). So a helper never receives them as `&[u8]`, whose bytes Rust (and the
/// compiler) assume fixed for the borrow. Each read here is one atomic byte load (`Relaxed`),
/// which the compiler neither repeats nor merges with another: a byte the helper checked is
/// the byte it uses. A decision that depends on several bytes should copy them out once
/// ([`Input::read_at`]) and decide on the copy.
///
/// Between two Rust views (two helpers on two processors, say) the accesses are atomic, so
/// defined. The program's own stores, and the core's, are not Rust's: on x64 they are the same
/// single-byte moves, so a read sees a byte that was written, but Rust's memory model says
/// nothing of them. Every view's access is of this kind ([`SharedBytes`], [`Output`],
/// [`SharedOutput`] too).
///
/// Reads go one byte at a time, so a helper that scans much memory pays for it (the compiler
/// cannot vectorise atomic loads). A view is neither `Send` nor `Sync`: it is for the helper
/// call, on the processor that runs it.
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The bytes may change during the call, so no helper receives them as `&[u8]`.
/// fn sum(bytes: &[u8]) -> u64 { bytes.iter().map(|&b| u64::from(b)).sum() }
/// helpers! { context Ctx; static H; static A; 0x10000, c"sum" => sum(Bytes); }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn sum(bytes: Input<'_>) -> u64 { bytes.iter().map(u64::from).sum() }
/// helpers! { context Ctx; static H; static A; 0x10000, c"sum" => sum(Bytes); }
/// ```
#[derive(Clone, Copy)]
pub struct Input<'a> {
    start: *const u8,
    len: usize,
    _memory: PhantomData<&'a [u8]>,
}

impl<'a> Input<'a> {
    /// A view of `len` bytes at `start`.
    ///
    /// # Safety
    /// `start` is non-NULL and the `len` bytes at it stay valid for reads and writes for `'a`
    /// (the view only reads, but with atomic loads, which need memory that may be written:
    /// not a `&[u8]`'s). Other code may write them meanwhile (that is what the view is for),
    /// through atomic accesses, cells or outside Rust (a program), but no `&[u8]` or
    /// `&mut [u8]` to them may be in use.
    #[must_use]
    pub const unsafe fn from_raw_parts(start: *const u8, len: usize) -> Self {
        Input {
            start,
            len,
            _memory: PhantomData,
        }
    }

    /// Bytes the program passed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it passed none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address the program passed (a dangling one for NULL): for results computed from
    /// it, never to read through.
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.start
    }

    /// The byte at `index`, read once; `None` past the end.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<u8> {
        // SAFETY: `index` is within the `len` readable bytes at `start` (checked; the type's
        // invariant).
        (index < self.len).then(|| unsafe { load(self.start.wrapping_add(index)) })
    }

    /// Copies `to.len()` bytes from `offset` on into `to`, each read once; `false`, copying
    /// nothing, if they are not all there.
    #[must_use = "false: the bytes are not all there, and nothing was copied"]
    pub fn read_at(&self, offset: usize, to: &mut [u8]) -> bool {
        if !fits(offset, to.len(), self.len) {
            return false;
        }
        for (index, slot) in (offset..).zip(to.iter_mut()) {
            // SAFETY: `offset..offset + to.len()` lies within the `len` readable bytes
            // (checked above; the type's invariant).
            *slot = unsafe { load(self.start.wrapping_add(index)) };
        }
        true
    }

    /// The bytes in order, each read once, when the iterator reaches it.
    pub fn iter(&self) -> impl Iterator<Item = u8> + use<'a> {
        let view = *self;
        // SAFETY: each index is below `len` (the range), within the readable bytes.
        (0..view.len).map(move |index| unsafe { load(view.start.wrapping_add(index)) })
    }

    /// The first `len` bytes (all of them if there are fewer).
    #[must_use]
    pub fn first(&self, len: usize) -> Input<'a> {
        Input {
            len: self.len.min(len),
            ..*self
        }
    }
}

impl<'a> From<&'a [Cell<u8>]> for Input<'a> {
    /// A view of cells (host code, tests: `Cell::from_mut(bytes).as_slice_of_cells()`).
    fn from(cells: &'a [Cell<u8>]) -> Self {
        // SAFETY: cells are valid for reads and writes through a shared borrow for `'a`; only
        // this thread reaches them (`Cell` is not `Sync`), and never as a `&[u8]`.
        unsafe { Input::from_raw_parts(cells.as_ptr().cast::<u8>(), cells.len()) }
    }
}

impl Default for Input<'_> {
    /// No bytes.
    fn default() -> Self {
        // SAFETY: no byte is ever read through an empty view.
        unsafe { Input::from_raw_parts(ptr::NonNull::dangling().as_ptr(), 0) }
    }
}

impl core::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Input").field("len", &self.len).finish()
    }
}

/// Memory a helper reads and writes (a custom map's stored value; through [`ReadableCells`],
/// a [`Cells`] argument), which the helper's other memory arguments may overlap, for the
/// call: an [`Input`]
/// (which it derefs to) that also writes. A shared view, as `&[Cell<u8>]` is (so `Copy`, and
/// neither `Send` nor `Sync`), but every access is an atomic byte access: other processors may
/// write the bytes meanwhile, as for an [`Input`].
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    input: Input<'a>,
    _memory: PhantomData<&'a [Cell<u8>]>,
}

impl<'a> SharedBytes<'a> {
    /// A view of `len` bytes at `start`.
    ///
    /// # Safety
    /// `start` is non-NULL and the `len` bytes at it stay readable and writable for `'a`;
    /// meanwhile other code may read and write them through atomic accesses, cells (on this
    /// thread: `Cell` is not `Sync`) or outside Rust (a program), but nothing may hold a
    /// `&[u8]` or `&mut [u8]` to them.
    #[must_use]
    pub const unsafe fn from_raw_parts(start: *mut u8, len: usize) -> Self {
        SharedBytes {
            // SAFETY: valid for reads and writes for `'a`, no `&[u8]` or `&mut [u8]` in use
            // (the caller's precondition).
            input: unsafe { Input::from_raw_parts(start, len) },
            _memory: PhantomData,
        }
    }

    /// Sets the byte at `index` to `byte` (one atomic byte store); past the end, writes
    /// nothing.
    pub fn set(&self, index: usize, byte: u8) {
        if index < self.input.len {
            let to = self.input.start.cast_mut().wrapping_add(index);
            // SAFETY: `index` is within the `len` writable bytes at `start` (checked; the
            // type's invariant).
            unsafe { store(to, byte) };
        }
    }

    /// The read-only view of the same bytes.
    #[must_use]
    pub fn input(&self) -> Input<'a> {
        self.input
    }
}

impl<'a> From<&'a [Cell<u8>]> for SharedBytes<'a> {
    /// A view of cells (host code, tests).
    fn from(cells: &'a [Cell<u8>]) -> Self {
        // SAFETY: cells are readable for `'a` and writable through a shared borrow (a pointer
        // from it may write them); only this thread reaches them (`Cell` is not `Sync`), as
        // cells or through this view.
        unsafe { SharedBytes::from_raw_parts(cells.as_ptr().cast::<u8>().cast_mut(), cells.len()) }
    }
}

impl<'a> core::ops::Deref for SharedBytes<'a> {
    type Target = Input<'a>;

    fn deref(&self) -> &Input<'a> {
        &self.input
    }
}

impl core::fmt::Debug for SharedBytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.input.len)
            .finish()
    }
}

/// Memory a [`Cells`] argument's prototype declares readable (`PTR_TO_READABLE_MEM`), which
/// the helper's other memory arguments may overlap: an [`Input`] (which it derefs to) whose
/// writes are `unsafe`.
///
/// The verifier assumes a helper leaves readable memory as it was: what it knew of those
/// bytes before the call (the contents of the program's stack, which it tracks) it still
/// believes after it, so a program may go on to act on values that are no longer there (an
/// index it proved in bounds, say). Writing is therefore the helper's promise, not Rust's:
/// see [`ReadableCells::set`].
#[derive(Clone, Copy)]
pub struct ReadableCells<'a> {
    bytes: SharedBytes<'a>,
}

impl<'a> ReadableCells<'a> {
    /// A view of `len` bytes at `start`.
    ///
    /// # Safety
    /// As [`SharedBytes::from_raw_parts`].
    #[must_use]
    pub const unsafe fn from_raw_parts(start: *mut u8, len: usize) -> Self {
        ReadableCells {
            // SAFETY: the caller's precondition.
            bytes: unsafe { SharedBytes::from_raw_parts(start, len) },
        }
    }

    /// Sets the byte at `index` to `byte` (one atomic byte store); past the end, writes
    /// nothing.
    ///
    /// # Safety
    /// The program's verifier was told this memory is only read (the helper's prototype), and
    /// keeps what it knew of these bytes past the call: the caller promises the program relies
    /// on nothing the write changes. That is a contract between a helper and the programs
    /// that call it, as upstream's sample extension has for `sample_ebpf_extension_replace`,
    /// whose prototype declares a buffer readable that the helper rewrites: prefer
    /// [`CellsMut`] (declared writable) unless such a prototype must be reproduced.
    pub unsafe fn set(&self, index: usize, byte: u8) {
        self.bytes.set(index, byte);
    }

    /// The read-only view of the same bytes.
    #[must_use]
    pub fn input(&self) -> Input<'a> {
        self.bytes.input()
    }
}

impl<'a> From<&'a [Cell<u8>]> for ReadableCells<'a> {
    /// A view of cells (host code, tests).
    fn from(cells: &'a [Cell<u8>]) -> Self {
        ReadableCells {
            bytes: SharedBytes::from(cells),
        }
    }
}

impl<'a> core::ops::Deref for ReadableCells<'a> {
    type Target = Input<'a>;

    fn deref(&self) -> &Input<'a> {
        &self.bytes.input
    }
}

impl core::fmt::Debug for ReadableCells<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadableCells")
            .field("len", &self.bytes.input.len)
            .finish()
    }
}

/// Readable memory and its size (`PTR_TO_READABLE_MEM`, `CONST_SIZE`), received as an
/// [`Input`]: bytes read one at a time, since they may change during the call.
#[derive(Debug)]
pub enum Bytes {}

// SAFETY: reads two registers, a pointer and the size of readable memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for Bytes {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = Input<'a>;
    const MEMORY: Memory = Memory::Shared;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (start, len) = next_view(registers, at);
        // SAFETY: the verifier guarantees `size` readable bytes at the pointer for the call
        // `'a` (a dangling non-NULL pointer for none), and every memory a program can pass
        // (its stack, a map value, its context's data) is writable kernel memory, so valid
        // for writes too. No reference in use reaches them: other arguments are views, raw
        // pointers or an `Output` apart (`check_overlap`); the context is never passed as
        // memory; its data is reached through raw pointers while the invoker's `&mut [u8]`
        // behind it is lent.
        unsafe { Input::from_raw_parts(start, len) }
    }
}

/// Memory a program passed for a helper to write (`PTR_TO_WRITABLE_MEM`, a [`BytesMut`]
/// argument), for the call. The verifier lets a program pass bytes it has not initialised
/// (its stack), so the helper may write them but never read them; what it leaves unwritten
/// keeps what the program had there.
pub struct Output<'a> {
    start: *mut u8,
    len: usize,
    _memory: PhantomData<&'a mut [u8]>,
}

impl Output<'_> {
    /// Bytes the program passed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it passed none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `bytes` from `offset` on; `false`, writing nothing, if they do not fit.
    #[must_use = "false: they did not fit, and nothing was written"]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if !fits(offset, bytes.len(), self.len) {
            return false;
        }
        for (index, &byte) in (offset..).zip(bytes) {
            // SAFETY: `offset..offset + bytes.len()` lies within the `len` writable bytes at
            // `start` (checked above; the type's invariant). No reference in use reaches
            // them, `bytes` included: the helper's other memory arguments are no references
            // and cannot be a `MapAndKey` (`check_overlap` leaves the `Output` alone); the
            // context (`&C`, maybe the source of `bytes`) is never passed as memory; the data
            // it points to is reached only through raw pointers (`DataPointer`), and the
            // invoker's `&mut [u8]` behind it is lent, not used, during the invocation.
            unsafe { store(self.start.wrapping_add(index), byte) };
        }
        true
    }

    /// Sets every byte to `byte`.
    pub fn fill(&mut self, byte: u8) {
        for index in 0..self.len {
            // SAFETY: within the `len` writable bytes at `start` (the type's invariant).
            unsafe { store(self.start.wrapping_add(index), byte) };
        }
    }
}

// SAFETY: an `Output` is the helper's only view of its bytes (`check_overlap`), as a
// `&'a mut [u8]` (which is `Send` and `Sync`) would be; what else writes or reads them (another
// processor's program or user mode, for a map value) does so concurrently whichever thread
// holds the `Output`, and its writes are atomic byte stores. `&self` methods only read its
// length.
unsafe impl Send for Output<'_> {}
// SAFETY: as above.
unsafe impl Sync for Output<'_> {}

impl core::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Output").field("len", &self.len).finish()
    }
}

/// Memory a program passed for a helper to write (`PTR_TO_WRITABLE_MEM`, a [`CellsMut`]
/// argument) that may overlap the helper's other memory arguments (a [`MapAndKey`] key,
/// [`Cells`]), for the call: like [`Output`], written but never read, one atomic byte store at
/// a time. A shared view, as `&[Cell<u8>]` is (so `Copy`).
#[derive(Clone, Copy)]
pub struct SharedOutput<'a> {
    start: *mut u8,
    len: usize,
    _memory: PhantomData<&'a [Cell<u8>]>,
}

impl SharedOutput<'_> {
    /// Bytes the program passed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it passed none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the byte at `index` to `byte`; past the end, writes nothing.
    pub fn set(&self, index: usize, byte: u8) {
        if index >= self.len {
            return;
        }
        let to = self.start.wrapping_add(index);
        // SAFETY: `index` is within the `len` writable bytes at `start` (checked; the type's
        // invariant); other arguments reach these bytes only through views or raw pointers
        // (`check_overlap`), never references.
        unsafe { store(to, byte) };
    }
}

impl core::fmt::Debug for SharedOutput<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedOutput")
            .field("len", &self.len)
            .finish()
    }
}

/// Writable memory and its size (`PTR_TO_WRITABLE_MEM`, `CONST_SIZE`), received as an
/// [`Output`]: bytes to write, not to read (the program need not have initialised them).
#[derive(Debug)]
pub enum BytesMut {}

// SAFETY: reads two registers, a pointer and the size of writable memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for BytesMut {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = Output<'a>;
    const MEMORY: Memory = Memory::Unique;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (start, len) = next_view(registers, at);
        // INVARIANT: the verifier guarantees `size` writable bytes at `pointer` (program stack
        // or map memory, not aliased by the context or, `Unique`, any other argument) for the
        // call `'a`; none for NULL.
        Output {
            start,
            len,
            _memory: PhantomData,
        }
    }
}

/// Any 64-bit value (`ANYTHING`), received as `u64`.
#[derive(Debug)]
pub enum Anything {}

// SAFETY: reads one register as a plain number.
unsafe impl<C: 'static> HelperArgument<C> for Anything {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_ANYTHING];
    type Value<'a> = u64;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        next(registers, at)
    }
}

/// A register the prototype leaves undeclared (`DONTCARE`) that the helper reads anyway,
/// received as `u64`: the verifier checks nothing about it (upstream's
/// `sample_ebpf_extension_helper_implicit_2` reads `r1` so). Only other `DontCare`s may follow
/// it ([`argument_types`]): the verifier reads a prototype up to its first `DONTCARE`.
#[derive(Debug)]
pub enum DontCare {}

// SAFETY: reads one register as a plain number.
unsafe impl<C: 'static> HelperArgument<C> for DontCare {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_DONTCARE];
    type Value<'a> = u64;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        next(registers, at)
    }
}

/// Readable memory and its size (`PTR_TO_READABLE_MEM`, `CONST_SIZE`), received as
/// [`ReadableCells`]: read like [`Bytes`], and written only under `unsafe`, for a helper that
/// reproduces a prototype declaring readable memory it writes (upstream's
/// `sample_ebpf_extension_replace` rewrites its buffer; every memory a program can pass is
/// writable kernel memory, but the verifier assumes the helper leaves it unchanged). A
/// program may pass overlapping buffers, so an output beside it must be [`CellsMut`], not
/// [`BytesMut`] ([`check_overlap`]).
#[derive(Debug)]
pub enum Cells {}

// SAFETY: reads two registers, a pointer and the size of memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for Cells {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = ReadableCells<'a>;
    const MEMORY: Memory = Memory::Shared;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (start, len) = next_view(registers, at);
        // SAFETY: the verifier guarantees `size` bytes at the pointer for the call `'a`, all
        // writable kernel memory (a dangling non-NULL pointer for none); the helper's other
        // arguments that may overlap them are views or raw pointers too (`check_overlap`).
        // Writing them is `unsafe` in the view (the verifier's view of them).
        unsafe { ReadableCells::from_raw_parts(start, len) }
    }
}

/// Writable memory and its size (`PTR_TO_WRITABLE_MEM`, `CONST_SIZE`), received as a
/// [`SharedOutput`]: an output buffer for a helper whose other memory arguments may overlap it
/// (a [`MapAndKey`] key, [`Cells`]); the prototype declares it writable as [`BytesMut`] does.
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn get(key: MapKey<'_>, out: SharedOutput<'_>) -> u64 {
///     (0..out.len()).for_each(|i| out.set(i, 0));
///     0
/// }
/// helpers! { context Ctx; static H; static A; 0x10000, c"get" => get(MapAndKey, CellsMut); }
/// ```
#[derive(Debug)]
pub enum CellsMut {}

// SAFETY: reads two registers, a pointer and the size of writable memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for CellsMut {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = SharedOutput<'a>;
    const MEMORY: Memory = Memory::Shared;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (start, len) = next_view(registers, at);
        // INVARIANT: the verifier guarantees `size` writable bytes at `pointer` for the call
        // `'a`; other arguments that may overlap them are views or raw pointers
        // (`check_overlap`); none for NULL.
        SharedOutput {
            start,
            len,
            _memory: PhantomData,
        }
    }
}

/// A map object a program passed to a helper, valid for the helper call `'a`.
///
/// # Invariants
/// `map` is a map object of the core, passed by a program as a `PTR_TO_MAP` argument that
/// the verifier checked, and stays alive for `'a`.
#[derive(Debug, Clone, Copy)]
pub struct ProgramMap<'a> {
    map: *const c_void,
    _call: PhantomData<&'a ()>,
}

impl ProgramMap<'_> {
    /// The map object's address, as the core passes it to helpers.
    #[must_use]
    pub fn as_ptr(&self) -> *const c_void {
        self.map
    }
}

/// A map and a key of it a program passed to a helper, valid for the helper call `'a`.
///
/// # Invariants
/// `map` as in [`ProgramMap`]; `key` points to that map's key size in readable bytes, for
/// `'a` (a `PTR_TO_MAP_KEY` argument the verifier checked against the map).
#[derive(Debug, Clone, Copy)]
pub struct MapKey<'a> {
    map: ProgramMap<'a>,
    key: *const u8,
}

impl<'a> MapKey<'a> {
    /// A map and key from raw pointers.
    ///
    /// # Safety
    /// `map` is a map object of the core and `key` points to that map's key size in readable
    /// bytes, both alive for `'a`: what a program passes to a helper declared `PTR_TO_MAP`,
    /// `PTR_TO_MAP_KEY`, during the call.
    #[must_use]
    pub unsafe fn from_raw(map: *const c_void, key: *const u8) -> Self {
        // INVARIANT: the caller's precondition.
        MapKey {
            map: ProgramMap {
                map,
                _call: PhantomData,
            },
            key,
        }
    }

    /// The map.
    #[must_use]
    pub fn map(&self) -> ProgramMap<'a> {
        self.map
    }

    /// The key's address (the map's key size in bytes).
    #[must_use]
    pub fn key_ptr(&self) -> *const u8 {
        self.key
    }
}

/// A map object (`PTR_TO_MAP`), received as [`ProgramMap`].
///
/// Through the map a helper may reach map values a program also passes as buffers, so it
/// counts as memory other arguments may overlap, as [`MapAndKey`] does: an output beside it
/// must be [`CellsMut`], not [`BytesMut`] ([`check_overlap`]).
#[derive(Debug)]
pub enum Map {}

// SAFETY: reads one register, a map pointer the verifier checked.
unsafe impl<C: 'static> HelperArgument<C> for Map {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_PTR_TO_MAP];
    type Value<'a> = ProgramMap<'a>;
    const MEMORY: Memory = Memory::Shared;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let map = next(registers, at) as *const c_void;
        // INVARIANT: a verified `PTR_TO_MAP` argument, alive for the call (the caller's
        // contract).
        ProgramMap {
            map,
            _call: PhantomData,
        }
    }
}

/// A map object and a key of it (`PTR_TO_MAP`, `PTR_TO_MAP_KEY`), received as [`MapKey`].
///
/// The key is program memory (the program's stack, or a map value) that the helper reads, and
/// through the map the helper reaches map values a program may hold pointers to as well, so it
/// counts as memory that other arguments may overlap ([`Memory::Shared`]): an output beside it
/// must be [`CellsMut`], not [`BytesMut`] ([`check_overlap`]); a program may pass the same
/// stack buffer as key and output.
#[derive(Debug)]
pub enum MapAndKey {}

// SAFETY: reads two registers, a map pointer and a key pointer the verifier checked.
unsafe impl<C: 'static> HelperArgument<C> for MapAndKey {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_MAP,
        EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY,
    ];
    type Value<'a> = MapKey<'a>;
    const MEMORY: Memory = Memory::Shared;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (map, key) = (
            next(registers, at) as *const c_void,
            next(registers, at) as *const u8,
        );
        // SAFETY: verified `PTR_TO_MAP` and `PTR_TO_MAP_KEY` arguments, alive for the call
        // (the caller's contract).
        unsafe { MapKey::from_raw(map, key) }
    }
}

/// What a helper returns: its prototype's return type and the value in `r0`.
///
/// # Safety
/// Every value [`HelperReturn::into_register`] gives must be what the verifier assumes of
/// [`HelperReturn::TYPE`]: any number for `EBPF_RETURN_TYPE_INTEGER`; NULL or the address of
/// a value of the map argument's value size for `EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL`.
/// A program accesses what the verifier believes is there, so a wrong type or value gives it
/// arbitrary kernel memory.
pub unsafe trait HelperReturn {
    /// The prototype's return type.
    const TYPE: ebpf_return_type_t;
    /// The value for `r0`.
    fn into_register(self) -> u64;
}

// SAFETY: any number is an integer.
unsafe impl HelperReturn for u64 {
    const TYPE: ebpf_return_type_t = EBPF_RETURN_TYPE_INTEGER;
    fn into_register(self) -> u64 {
        self
    }
}

/// A `PTR_TO_MAP_VALUE_OR_NULL` result. Only NULL can be made: the SDK has no map value of
/// the right size to return yet (the verifier lets the program access the map's value size
/// behind a non-NULL result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapValueOrNull(*mut u8);

impl MapValueOrNull {
    /// NULL: no value.
    pub const NULL: MapValueOrNull = MapValueOrNull(ptr::null_mut());
}

// SAFETY: only NULL can be made (the type's one constructor is `NULL`).
unsafe impl HelperReturn for MapValueOrNull {
    const TYPE: ebpf_return_type_t = EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL;
    fn into_register(self) -> u64 {
        self.0 as u64
    }
}

/// The program context a helper declared `with context` receives as its sixth argument.
///
/// # Safety
/// `context` is the program's context, a live `C` for `'a` (the core passes it so, C.8 of the
/// reference; the extension invokes programs of this type only with a `C`).
#[doc(hidden)]
#[must_use]
pub unsafe fn implicit_context<'a, C>(context: *const c_void) -> &'a C {
    // SAFETY: the caller's precondition.
    unsafe { &*context.cast::<C>() }
}

/// Where a context `C`'s two data pointers lie (byte offsets), for `helpers!`'s `data`
/// clause: a helper that receives the context mutably ([`ContextMut`]) could otherwise point
/// them elsewhere while a program runs, so the SDK puts back around every such call what they
/// held before it. [`program_type!`](crate::program_type!) passes its `data` fields.
pub struct DataPointerOffsets<C> {
    start: usize,
    end: usize,
    _context: PhantomData<fn(C) -> C>,
}

impl<C> DataPointerOffsets<C> {
    /// No data pointers: nothing is kept.
    pub const NONE: Self = DataPointerOffsets {
        start: usize::MAX,
        end: usize::MAX,
        _context: PhantomData,
    };

    /// Data pointers at byte offsets `start` and `end` of `C`.
    ///
    /// # Safety
    /// They are the offsets of two [`DataPointer`](crate::DataPointer) fields of `C` (which
    /// the SDK reads and writes around [`ContextMut`] helpers).
    #[must_use]
    pub const unsafe fn new(start: usize, end: usize) -> Self {
        DataPointerOffsets {
            start,
            end,
            _context: PhantomData,
        }
    }

    /// Whether this names no data pointers.
    #[must_use]
    pub const fn is_none(&self) -> bool {
        self.start == usize::MAX
    }
}

impl<C> Clone for DataPointerOffsets<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for DataPointerOffsets<C> {}

impl<C> core::fmt::Debug for DataPointerOffsets<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DataPointerOffsets")
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

/// The argument register of a helper's [`ContextMut`] argument, given each argument's memory
/// access and register count in order; `None` if it takes none.
#[doc(hidden)]
#[must_use]
#[inline]
pub const fn context_mut_register(kinds: &[(Memory, usize)]) -> Option<usize> {
    let (mut i, mut register) = (0, 0);
    while i < kinds.len() {
        if matches!(kinds[i].0, Memory::ContextMut) {
            return Some(register);
        }
        register += kinds[i].1;
        i += 1;
    }
    None
}

/// A context's data pointers as they were before a [`ContextMut`] helper ran, put back when
/// dropped (`helpers!`'s trampolines drop it once the function has returned).
#[doc(hidden)]
#[derive(Debug)]
pub struct KeptDataPointers {
    context: *mut u8,
    offsets: [usize; 2],
    values: [*mut u8; 2],
}

impl KeptDataPointers {
    /// Reads the data pointers of the context in `registers[register]`; keeps nothing if
    /// `register` is `None` or `offsets` is [`DataPointerOffsets::NONE`].
    ///
    /// # Safety
    /// If `register` is `Some(r)` and `offsets` is not `NONE`: `registers[r]` is the address of
    /// a live `C` whose data pointers lie at `offsets`, and no reference to it but the one that
    /// address comes from (the invoker's) is in use when this is called or the value dropped.
    #[must_use]
    #[inline]
    pub unsafe fn read<C>(
        registers: &[u64; 5],
        register: Option<usize>,
        offsets: DataPointerOffsets<C>,
    ) -> Self {
        let context = match register {
            Some(r) if !offsets.is_none() => registers[r] as *mut u8,
            _ => core::ptr::null_mut(),
        };
        let values = if context.is_null() {
            [core::ptr::null_mut(); 2]
        } else {
            // SAFETY: the live context's data pointers (the caller's contract).
            unsafe {
                ebpf_ext_nmr::foreign::read_pointer_fields(context, [offsets.start, offsets.end])
            }
        };
        KeptDataPointers {
            context,
            offsets: [offsets.start, offsets.end],
            values,
        }
    }
}

impl Drop for KeptDataPointers {
    #[inline]
    fn drop(&mut self) {
        if !self.context.is_null() {
            // SAFETY: the fields `read` read (its contract covers the drop).
            unsafe {
                ebpf_ext_nmr::foreign::write_pointer_fields(
                    self.context,
                    self.offsets,
                    self.values,
                );
            }
        }
    }
}

/// How a helper function accesses program memory through an argument
/// ([`HelperArgument::MEMORY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Not at all (numbers, map handles).
    None,
    /// The program's context, shared (`&C`: [`Context`], and the implicit context).
    Context,
    /// The program's context, exclusively (`&mut C`: [`ContextMut`]).
    ContextMut,
    /// Through a view that holds no reference to the bytes, so other arguments' views may
    /// overlap it: reads ([`Input`], a [`MapAndKey`] key, a [`Map`]'s values) or reads and
    /// writes ([`ReadableCells`], [`SharedOutput`]).
    Shared,
    /// Exclusive access ([`Output`]).
    Unique,
}

/// Checks that a helper whose arguments access memory as `kinds` (and, with
/// `implicit_context`, the context as a last `&C`) cannot receive memory that Rust's aliasing
/// rules forbid: the verifier lets a program pass overlapping buffers (a map key among them),
/// so an [`Output`], which writes as a `&mut [u8]` would, must be the only memory argument
/// (the other views, [`Input`], [`ReadableCells`] and [`SharedOutput`], hold no reference to
/// the bytes and may overlap one another); the context is one object, so a `&mut C` must be
/// the helper's only view of it. The context never overlaps
/// a memory argument (the verifier passes no `PTR_TO_CTX` as memory: [`ContextMut`]).
///
/// # Panics
/// At compile time (`helpers!` calls it in a `static`) if they could alias.
pub const fn check_overlap(kinds: &[Memory], implicit_context: bool) {
    let (mut memory, mut unique) = (0, false);
    let mut contexts = if implicit_context { 1 } else { 0 };
    let mut context_mut = false;
    let mut i = 0;
    while i < kinds.len() {
        match kinds[i] {
            Memory::Context => contexts += 1,
            Memory::ContextMut => {
                contexts += 1;
                context_mut = true;
            }
            Memory::None | Memory::Shared => {}
            Memory::Unique => unique = true,
        }
        if matches!(kinds[i], Memory::Shared | Memory::Unique) {
            memory += 1;
        }
        i += 1;
    }
    assert!(
        !unique || memory == 1,
        "a helper with a BytesMut argument can take no other memory argument (the program may pass overlapping buffers): take the output as CellsMut"
    );
    assert!(
        !context_mut || contexts == 1,
        "a helper with a ContextMut argument can have no other view of the context (no Context argument, no `with context`)"
    );
}

/// Checks that a helper returning a map value or NULL takes a map (`PTR_TO_MAP`): the
/// verifier sizes the value a program may access behind `r0` by that map.
///
/// # Panics
/// At compile time (`helpers!` calls it in a `static`) if it takes none.
pub const fn check_return(return_type: ebpf_return_type_t, arguments: &[ebpf_argument_type_t; 5]) {
    if return_type != EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL {
        return;
    }
    let mut i = 0;
    while i < arguments.len() {
        if arguments[i] == EBPF_ARGUMENT_TYPE_PTR_TO_MAP {
            return;
        }
        i += 1;
    }
    panic!("a helper that returns a map value (MapValueOrNull) must take a map (Map or MapAndKey)");
}

/// Refuses, at compile time, a global-helper override whose prototype is not the one the core
/// gives its id ([`ebpf_ext_sys::ebpf_general_helpers`]): the verifier checks a program's
/// calls to an id below `0xFFFF` against the core's prototype only, never the extension's, so
/// an override of other kinds would receive registers its wrapper trusts and nothing
/// checked. [`ProgramInfo::new`](crate::ProgramInfo::new) calls it for every override (those
/// of [`program_type!`](crate::program_type!)'s `global helpers` included).
///
/// An override may take the implicit context (`implicit_context` is not part of what the
/// verifier checks: the core passes the program context sixth to every helper, and
/// netebpfext's overrides of `bpf_get_current_pid_tgid` read it that way).
///
/// # Panics
/// At compile time if `id` is not one of the core's general helpers, or if its return type
/// or any of its five argument types differs from the core's.
pub const fn check_global_override(
    id: u32,
    return_type: ebpf_return_type_t,
    arguments: &[ebpf_argument_type_t; 5],
) {
    let Some(core) = ebpf_ext_sys::ebpf_general_helpers::general_helper_prototype(id) else {
        panic!(
            "a global helper override must have the id of one of the core's general helpers (1..=35)"
        );
    };
    assert!(
        return_type == core.return_type,
        "a global helper override must return what the core's prototype for its id returns"
    );
    let mut i = 0;
    while i < arguments.len() {
        assert!(
            arguments[i] == core.arguments[i],
            "a global helper override must take exactly the argument kinds of the core's prototype for its id: the verifier checks calls against that prototype only"
        );
        i += 1;
    }
}

/// The five prototype argument types of a helper whose arguments are `kinds` (their
/// [`HelperArgument::TYPES`] in order), unused ones `DONTCARE`.
///
/// # Panics
/// At compile time if the kinds need more than five registers. (A [`DontCare`] before another
/// kind is refused by the prototype the types go into,
/// [`HelperPrototype::new`](crate::HelperPrototype::new).)
#[must_use]
pub const fn argument_types(kinds: &[&[ebpf_argument_type_t]]) -> [ebpf_argument_type_t; 5] {
    let mut types = [EBPF_ARGUMENT_TYPE_DONTCARE; 5];
    let mut n = 0;
    let mut k = 0;
    while k < kinds.len() {
        let mut i = 0;
        while i < kinds[k].len() {
            assert!(n < 5, "a helper takes at most five argument registers");
            types[n] = kinds[k][i];
            n += 1;
            i += 1;
        }
        k += 1;
    }
    types
}

/// Declares a program type's helpers once each: generates the prototype table and the
/// address table (with a trampoline per helper) from one list.
///
/// ```ignore
/// helpers! {
///     context PacketContext;
///     /// Prototypes, for `ProgramInfo::new`.
///     pub static HELPERS;
///     /// Addresses, for `ProgramData::with_helpers`.
///     pub static ADDRESSES;
///     HELPER_GET_INTERFACE_ID, c"sample_net_get_interface_id" => get_interface_id(Context);
///     HELPER_CHECKSUM, c"sample_net_checksum" => checksum(Bytes);
///     HELPER_LOOKUP, c"sample_net_lookup" => lookup(MapAndKey) with context -> MapValueOrNull;
/// }
/// fn get_interface_id(context: &PacketContext) -> u64 { u64::from(context.interface_id) }
/// fn checksum(data: Input<'_>) -> u64 { u64::from(internet_checksum(data)) }
/// fn lookup(_: MapKey<'_>, _: &PacketContext) -> MapValueOrNull { MapValueOrNull::NULL }
/// ```
///
/// `context C, data OFFSETS;` (a [`DataPointerOffsets`]) names where `C`'s data pointers lie:
/// around each [`ContextMut`] helper the trampoline puts back what they held, so a helper
/// cannot move the range programs access. [`program_type!`](crate::program_type!) fills it in.
///
/// Each line is `id, name => function(kinds…)`, then optionally `with context` and `-> R`:
/// - the kinds ([`Context`], [`ContextMut`], [`Bytes`], [`BytesMut`], [`Cells`], [`CellsMut`],
///   [`Anything`], [`DontCare`], [`Map`], [`MapAndKey`]) say what the prototype declares and what the
///   function receives;
/// - `with context` sets the prototype's `implicit_context`: the core passes the program
///   context as a sixth argument, and the function receives it last, as `&T`;
/// - `R` ([`HelperReturn`]: `u64`, the default, or [`MapValueOrNull`]) is the prototype's
///   return type and what the function returns.
///
/// `context` names the type the extension invokes programs of this type with (the `T` of its
/// `ProgramContext<T>`): a [`Context`] argument and the implicit context are received as `&T`.
/// Ids are checked by `ProgramInfo::new` (range: above 0xFFFF for program-type specific
/// helpers, below 0xFFFF for global-helper overrides; duplicates), and the address count by
/// `ProgramData::with_helpers` / `with_global_helpers`: declare a type's overrides of global
/// helpers with a second `helpers!`. `ProgramInfo::new` also checks that every override
/// declares the core's prototype for its id ([`check_global_override`]), since the verifier
/// checks calls to those ids against the core's prototypes only.
///
/// A function whose parameters or result differ from the declaration does not compile:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn f(size: u64) -> u64 { size } // the kind says `Input<'_>`
/// helpers! { context Ctx; static H; static A; 0x10000, c"f" => f(Bytes); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn g(value: u64) -> u64 { value } // `with context`: the context must come last
/// helpers! { context Ctx; static H; static A; 0x10000, c"g" => g(Anything) with context; }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The program may pass one buffer twice: the `Input` would read what the `Output` writes.
/// fn copy(from: Input<'_>, to: Output<'_>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"copy" => copy(Bytes, BytesMut); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // Both arguments are the program's context: `&mut Ctx` and `&Ctx` would alias.
/// fn both(context: &mut Ctx, again: &Ctx) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"both" => both(ContextMut, Context); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The implicit context is the same object as the `&mut Ctx`.
/// fn both(context: &mut Ctx, again: &Ctx) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"both" => both(ContextMut) with context; }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn h(_: MapKey<'_>) -> u64 { 0 } // declared to return a map value or NULL
/// helpers! { context Ctx; static H; static A; 0x10000, c"h" => h(MapAndKey) -> MapValueOrNull; }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // A map value of which map? The verifier sizes it by the helper's map argument.
/// fn h(_: u64) -> MapValueOrNull { MapValueOrNull::NULL }
/// helpers! { context Ctx; static H; static A; 0x10000, c"h" => h(Anything) -> MapValueOrNull; }
/// ```
///
/// Writing memory a prototype declares readable is the helper's promise, not Rust's, and a
/// map's values may be the buffer the program passes beside it:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn zero(bytes: ReadableCells<'_>) -> u64 { bytes.set(0, 0); 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"zero" => zero(Cells); }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // SAFETY: this helper's programs rely on nothing the verifier knew of the first byte.
/// fn zero(bytes: ReadableCells<'_>) -> u64 { unsafe { bytes.set(0, 0) }; 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"zero" => zero(Cells); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn f(_: ProgramMap<'_>, _: Output<'_>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"f" => f(Map, BytesMut); }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn f(_: ProgramMap<'_>, _: SharedOutput<'_>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"f" => f(Map, CellsMut); }
/// ```
///
/// A return kind decides what the verifier lets the program do with `r0`, so making one is
/// `unsafe`:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// struct Anywhere(u64);
/// impl HelperReturn for Anywhere {
///     const TYPE: i32 = <MapValueOrNull as HelperReturn>::TYPE;
///     fn into_register(self) -> u64 { self.0 }
/// }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::*;
/// struct Count(u32);
/// // SAFETY: any number is an integer.
/// unsafe impl HelperReturn for Count {
///     const TYPE: i32 = <u64 as HelperReturn>::TYPE;
///     fn into_register(self) -> u64 { u64::from(self.0) }
/// }
/// ```
///
/// The values live for the helper call only: a function that would keep one longer does not
/// compile.
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The program's stack buffer, kept past the call.
/// fn keep(out: Output<'static>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(BytesMut); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn keep(context: &'static Ctx) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(Context); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn keep(bytes: Input<'static>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(Bytes); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn keep(bytes: SharedBytes<'static>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(Cells); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn keep(key: MapKey<'static>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(MapAndKey); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn keep(value: u64, context: &'static Ctx) -> u64 { value }
/// helpers! { context Ctx; static H; static A; 0x10000, c"keep" => keep(Anything) with context; }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The verifier stops at the DONTCARE: the buffer after it would reach `f` unchecked.
/// fn f(_: u64, out: Output<'_>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"f" => f(DontCare, BytesMut); }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// // The key may be the output buffer: the program may pass one stack buffer as both.
/// fn get(key: MapKey<'_>, out: Output<'_>) -> u64 { 0 }
/// helpers! { context Ctx; static H; static A; 0x10000, c"get" => get(MapAndKey, BytesMut); }
/// ```
///
/// ```
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] struct Ctx { a: u64, b: u64 }
/// fn g(value: u64, context: &Ctx) -> u64 { value + context.a }
/// fn h(_: MapKey<'_>) -> MapValueOrNull { MapValueOrNull::NULL }
/// helpers! {
///     context Ctx; static H; static A;
///     0x10000, c"g" => g(Anything) with context;
///     0x10001, c"h" => h(MapAndKey) -> MapValueOrNull;
/// }
/// assert!(H[0].raw().implicit_context && !H[1].raw().implicit_context);
/// ```
#[macro_export]
macro_rules! helpers {
    (
        context $ctx:ty $(, data $data:expr)?;
        $(#[$prototypes_meta:meta])* $prototypes_vis:vis static $prototypes:ident;
        $(#[$addresses_meta:meta])* $addresses_vis:vis static $addresses:ident;
        $(
            $id:expr, $name:literal => $function:ident ( $($kind:ty),* $(,)? )
            $(with $implicit:ident)? $(-> $ret:ty)? ;
        )+
    ) => {
        $(#[$prototypes_meta])*
        $prototypes_vis static $prototypes: [$crate::HelperPrototype; [$($id),+].len()] = [
            $(
                $crate::helpers!(@implicit_prototype [$($implicit)?] {
                    $crate::check_overlap(
                        &[$(<$kind as $crate::HelperArgument<$ctx>>::MEMORY),*],
                        $crate::helpers!(@has_implicit [$($implicit)?]),
                    );
                    $crate::check_return(
                        <$crate::helpers!(@return $($ret)?) as $crate::HelperReturn>::TYPE,
                        &$crate::argument_types(
                            &[$(<$kind as $crate::HelperArgument<$ctx>>::TYPES),*]
                        ),
                    );
                    $crate::HelperPrototype::new(
                        $id,
                        $name,
                        <$crate::helpers!(@return $($ret)?) as $crate::HelperReturn>::TYPE,
                        &$crate::argument_types(
                            &[$(<$kind as $crate::HelperArgument<$ctx>>::TYPES),*]
                        ),
                    )
                })
            ),+
        ];
        $(#[$addresses_meta])*
        $addresses_vis static $addresses: $crate::HelperAddresses = {
            // Where the context's data pointers lie: kept across `ContextMut` helpers.
            #[allow(dead_code, reason = "unused when every helper takes the implicit context")]
            const __EBPF_EXT_DATA_POINTERS: $crate::DataPointerOffsets<$ctx> =
                $crate::helpers!(@data $($data)?);
            static FUNCTIONS: [$crate::HelperFunction; [$($id),+].len()] = [
                $(
                    $crate::helpers!(@trampoline [$($implicit)?] $ctx;
                        $crate::helpers!(@return $($ret)?); $function; $($kind),*)
                ),+
            ];
            $crate::HelperAddresses::new(&FUNCTIONS)
        };
    };
    (@data) => { $crate::DataPointerOffsets::NONE };
    (@data $data:expr) => { $data };
    (@return) => { ::core::primitive::u64 };
    (@return $ret:ty) => { $ret };
    (@has_implicit []) => { false };
    (@has_implicit [context]) => { true };
    (@implicit_prototype [] $prototype:expr) => { $prototype };
    (@implicit_prototype [context] $prototype:expr) => { $prototype.with_implicit_context() };
    (@trampoline [] $ctx:ty; $ret:ty; $function:ident; $($kind:ty),*) => {{
        unsafe extern "win64" fn trampoline(
            r1: ::core::primitive::u64,
            r2: ::core::primitive::u64,
            r3: ::core::primitive::u64,
            r4: ::core::primitive::u64,
            r5: ::core::primitive::u64,
        ) -> ::core::primitive::u64 {
            // The function must take its arguments for any lifetime: they are valid for this
            // call only, so it may not ask for longer ones (`Output<'static>`).
            let function: for<'call> fn(
                $(<$kind as $crate::HelperArgument<$ctx>>::Value<'call>),*
            ) -> $ret = $function;
            let registers = [r1, r2, r3, r4, r5];
            let mut at = 0usize;
            let _ = (&registers, &mut at);
            // SAFETY: the register of a `ContextMut` argument holds the program's context (the
            // verifier checked it), a `$ctx` with its data pointers where the declaration says;
            // the `&mut` to it is made by `take` below and gone before `kept` drops.
            let kept = unsafe {
                $crate::__KeptDataPointers::read(
                    &registers,
                    $crate::helpers!(@context_mut $ctx; $($kind),*),
                    __EBPF_EXT_DATA_POINTERS,
                )
            };
            let result: $ret = function($(
                // SAFETY: the core calls this helper only as its prototype, built from the
                // same kinds above, declares, with what the verifier checked; a context is the
                // `$ctx` the extension invokes with.
                unsafe { <$kind as $crate::HelperArgument<$ctx>>::take(&registers, &mut at) }
            ),*);
            ::core::mem::drop(kept);
            $crate::HelperReturn::into_register(result)
        }
        $crate::HelperFunction::new(trampoline)
    }};
    (@context_mut $ctx:ty; $($kind:ty),*) => {
        const {
            $crate::__context_mut_register(&[$((
                <$kind as $crate::HelperArgument<$ctx>>::MEMORY,
                <$kind as $crate::HelperArgument<$ctx>>::TYPES.len(),
            )),*])
        }
    };
    (@trampoline [context] $ctx:ty; $ret:ty; $function:ident; $($kind:ty),*) => {{
        unsafe extern "win64" fn trampoline(
            r1: ::core::primitive::u64,
            r2: ::core::primitive::u64,
            r3: ::core::primitive::u64,
            r4: ::core::primitive::u64,
            r5: ::core::primitive::u64,
            context: *const ::core::ffi::c_void,
        ) -> ::core::primitive::u64 {
            // As for a helper without the implicit context, which is valid for the call too.
            let function: for<'call> fn(
                $(<$kind as $crate::HelperArgument<$ctx>>::Value<'call>,)*
                &'call $ctx,
            ) -> $ret = $function;
            let registers = [r1, r2, r3, r4, r5];
            let mut at = 0usize;
            let _ = (&registers, &mut at);
            let result: $ret = function(
                $(
                    // SAFETY: as for a helper without the implicit context.
                    unsafe { <$kind as $crate::HelperArgument<$ctx>>::take(&registers, &mut at) },
                )*
                // SAFETY: the prototype declares `implicit_context`, so the core passes the
                // program's context sixth: the `$ctx` the extension invokes with.
                unsafe { $crate::__implicit_context::<$ctx>(context) },
            );
            $crate::HelperReturn::into_register(result)
        }
        $crate::HelperFunction::with_context(trampoline)
    }};
}

/// Declares a program type's whole [`ProgramData`](crate::ProgramData) in one `static` (a
/// [`TypedProgramData`](crate::TypedProgramData) of the helpers' context): its context
/// descriptor, program-type descriptor, helpers (through [`helpers!`]), optional global-helper
/// overrides, its test runs and `required_irql`; then
/// [`ProgramData::checked`](crate::ProgramData::checked). It takes no other builder call
/// (one could replace the helper tables or test run it checked).
///
/// ```text
/// program_type! {
///     /// docs
///     pub static NAME = c"type name", PROGRAM_TYPE_GUID, BPF_PROG_TYPE;
///     context ContextType, data data_start..data_end;   // `, data …` optional
///     helpers { <helpers! lines> }          // or helpers<HelperContext, field.path> { … }
///     global helpers { <helpers! lines> }                // optional
///     test run Run;                                      // optional: `TestRun` for test runs
///     .with_required_irql(DISPATCH_LEVEL)                // optional
/// }
/// ```
///
/// Helpers receive `ContextType`, or `HelperContext` where the extension runs programs with a
/// larger context that begins with what programs see: `field.path` names the `ContextType`
/// inside it (named fields only, not tuple fields), which must lie at offset 0 and be of that
/// very type (checked at compile time; the descriptor's size stays `ContextType`'s). The static is a [`TypedProgramData`](crate::TypedProgramData) of that
/// context: the facade's `Start::program_type` registers it and `Start::hook` only admits a
/// hook whose `HookExtension::Context` it is. `test run` checks it for test runs:
/// `Run::Context` must be the helpers' context, or the declaration does not compile. The
/// program type is not privileged and its context has no metadata pointer; for those, build
/// the statics by hand (registering them is then `unsafe`: nothing checks the contexts).
///
/// The `data` clause names the context's two data pointers, which must be [`DataPointer`]s
/// (that very type): hooks and test runs set them for each invocation, so programs see only
/// bytes that live while they run (see [`TestRun::data`]).
///
/// `global helpers` override some of the core's general helpers (ids 1 to 35) for programs of
/// this type. The verifier checks a program's calls to those ids against the core's
/// prototypes ([`ebpf_ext_sys::ebpf_general_helpers`]), never the extension's, so each
/// override must declare exactly the core's prototype for its id (return type and argument
/// kinds; `with context` is allowed), or the declaration does not compile
/// ([`check_global_override`](crate::check_global_override)).
///
/// [`DataPointer`]: crate::DataPointer
/// [`TestRun::data`]: crate::TestRun::data
///
/// ```
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data_start: DataPointer, data_end: DataPointer, value: u64 } }
/// fn value(context: &Ctx) -> u64 { u64::from(context.value) }
/// fn pid() -> u64 { 7 }
/// const INFO: u32 = 1000; // the macro's own names hide nothing of the caller's
/// program_type! {
///     /// The program data.
///     pub static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), INFO;
///     context Ctx, data data_start..data_end;
///     helpers { 0x10000, c"example_value" => value(Context); }
///     global helpers { 19, c"bpf_get_current_pid_tgid" => pid(); }
///     .with_required_irql(2)
/// }
/// let info = unsafe { &*DATA.raw().program_info };
/// let context = unsafe { &*(*info.program_type_descriptor).context_descriptor };
/// assert_eq!((context.size, context.data, context.end, context.meta), (24, 0, 8, -1));
/// assert_eq!(
///     (info.count_of_program_type_specific_helpers, info.count_of_global_helpers),
///     (1, 1)
/// );
/// assert_eq!(DATA.raw().required_irql, 2);
/// ```
///
/// An override with the core's prototype (`bpf_redirect_map`: a map and two values;
/// `bpf_get_current_pid_tgid`: nothing, here reading the implicit context as netebpfext's
/// does) compiles; one with other kinds, or of an id the core has no general helper of, does
/// not:
///
/// ```
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { value: u64, other: u64 } }
/// fn value(context: &Ctx) -> u64 { context.value }
/// fn redirect(_: ProgramMap<'_>, key: u64, _: u64) -> u64 { key }
/// fn pid(context: &Ctx) -> u64 { context.other }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx;
///     helpers { 0x10000, c"example_value" => value(Context); }
///     global helpers {
///         19, c"bpf_get_current_pid_tgid" => pid() with context;
///         35, c"bpf_redirect_map" => redirect(Map, Anything, Anything);
///     }
/// }
/// # let _ = &DATA;
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { value: u64, other: u64 } }
/// fn value(context: &Ctx) -> u64 { context.value }
/// // The core's 19 takes nothing: any registers would reach the output unchecked.
/// fn pid(mut out: Output<'_>) -> u64 { out.write_at(0, &[1]); 7 }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx;
///     helpers { 0x10000, c"example_value" => value(Context); }
///     global helpers { 19, c"bpf_get_current_pid_tgid" => pid(BytesMut); }
/// }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { value: u64, other: u64 } }
/// fn value(context: &Ctx) -> u64 { context.value }
/// fn other() -> u64 { 7 }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx;
///     helpers { 0x10000, c"example_value" => value(Context); }
///     global helpers { 100, c"not_a_general_helper" => other(); }
/// }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { value: u64, other: u64 } }
/// fn value(context: &Ctx) -> u64 { context.value }
/// // The core's 1 returns a map value or NULL: the program would dereference this integer.
/// fn lookup(_: MapKey<'_>) -> u64 { 1 }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx;
///     helpers { 0x10000, c"example_value" => value(Context); }
///     global helpers { 1, c"bpf_map_lookup_elem" => lookup(MapAndKey); }
/// }
/// ```
///
/// Programs may write any bytes of their context, so a context some bytes of which are no
/// value of its type (a `bool`, an enum, a reference) or are padding does not compile: declare
/// it with [`no_padding!`](crate::no_padding).
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// #[repr(C)] #[derive(Clone, Copy)] struct Ctx { value: u64, flag: bool }
/// fn value(context: &Ctx) -> u64 { context.value }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx;
///     helpers { 0x10000, c"example_value" => value(Context); }
/// }
/// ```
///
/// Data pointers the extension could set itself do not compile:
///
/// ```compile_fail,E0308
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Ctx { data_start: *mut u8, data_end: *mut u8, value: u64 } }
/// fn value(context: &Ctx) -> u64 { u64::from(context.value) }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx, data data_start..data_end;
///     helpers { 0x10000, c"example_value" => value(Context); }
/// }
/// ```
///
/// Nor do fields that only dereference to a `DataPointer`: the SDK would write a pointer
/// over the reference.
///
/// ```compile_fail,E0308
/// # use ebpf_ext_program_info::*;
/// #[repr(C)]
/// struct Ctx { data_start: &'static DataPointer, data_end: &'static DataPointer, value: u32 }
/// fn value(context: &Ctx) -> u64 { u64::from(context.value) }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Ctx, data data_start..data_end;
///     helpers { 0x10000, c"example_value" => value(Context); }
/// }
/// ```
///
/// A larger helper context must begin with the program's context, named by its path:
///
/// ```
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
/// #[repr(C)] struct Hooked { seen: Seen, extra: u64 }
/// fn extra(context: &Hooked) -> u64 { context.extra + context.seen.a }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Seen;
///     helpers<Hooked, seen> { 0x10000, c"example_extra" => extra(Context); }
/// }
/// # let _ = &DATA;
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
/// #[repr(C)] struct Hooked { extra: u64, seen: Seen } // programs would read `extra` as `a`
/// fn extra(context: &Hooked) -> u64 { context.extra }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Seen;
///     helpers<Hooked, seen> { 0x10000, c"example_extra" => extra(Context); }
/// }
/// ```
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64, c: u64 } }
/// #[repr(C)] struct Small { a: u64, b: u64 }
/// #[repr(C)] struct Hooked { small: Small, extra: u64 } // 16 bytes where programs see 24
/// fn extra(context: &Hooked) -> u64 { context.extra }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Seen;
///     helpers<Hooked, small> { 0x10000, c"example_extra" => extra(Context); }
/// }
/// ```
///
/// A test run whose context is not the helpers' does not compile:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_pool::PoolTag;
/// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
/// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
/// #[repr(C)] #[derive(Clone, Copy)] struct Hooked { seen: Seen, extra: u64 }
/// fn a(context: &Hooked) -> u64 { context.extra }
/// struct Run; // builds only what programs see: a helper would read `extra` past it
/// impl TestRun for Run {
///     type Context = Seen;
///     const TAG: PoolTag = PoolTag::new(*b"Test");
///     fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<Seen>, Self), ebpf_result_t> {
///         Err(0)
///     }
///     fn destroy(self, _: &mut TestRunContext<Seen>, _: &mut TestRunOutput) {}
/// }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Seen;
///     helpers<Hooked, seen> { 0x10000, c"example_extra" => a(Context); }
///     test run Run;
/// }
/// ```
///
/// Nor does one that plugs its test run in with the builder call instead (the macro takes no
/// builder call but `with_required_irql`):
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_pool::PoolTag;
/// # use ebpf_ext_sys::ebpf_result::ebpf_result_t;
/// # no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
/// # #[repr(C)] #[derive(Clone, Copy)] struct Hooked { seen: Seen, extra: u64 }
/// # fn a(context: &Hooked) -> u64 { context.extra }
/// # struct Run;
/// # impl TestRun for Run {
/// #     type Context = Seen;
/// #     const TAG: PoolTag = PoolTag::new(*b"Test");
/// #     fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<Seen>, Self), ebpf_result_t> {
/// #         Err(0)
/// #     }
/// #     fn destroy(self, _: &mut TestRunContext<Seen>, _: &mut TestRunOutput) {}
/// # }
/// program_type! {
///     static DATA = c"example", ebpf_ext_sys::ntdef::GUID::from_u128(1), 1000;
///     context Seen;
///     helpers<Hooked, seen> { 0x10000, c"example_extra" => a(Context); }
///     .with_test_run::<Run>()
/// }
/// ```
#[macro_export]
macro_rules! program_type {
    (
        $(#[$meta:meta])*
        $vis:vis static $name:ident = $type_name:literal, $guid:expr, $bpf_prog_type:expr;
        context $ctx:ty $(, data $start:ident .. $end:ident)?;
        helpers $(<$helper_ctx:ty, $($prefix:ident).+>)? { $($helpers:tt)* }
        $(global helpers { $($globals:tt)+ })?
        $(test run $run:ty;)?
        $(.with_required_irql($irql:expr))?
    ) => {
        $(#[$meta])*
        $vis static $name: $crate::TypedProgramData<
            $crate::program_type!(@helper_context $ctx $(, $helper_ctx)?)
        > = {
            // Every name declared here starts with `__EBPF_EXT` (`__ebpf_ext` for functions)
            // so that it hides nothing the
            // arguments above may name.
            static __EBPF_EXT_CONTEXT: $crate::ContextDescriptor =
                $crate::ContextDescriptor::of::<$ctx>(
                    $crate::program_type!(@offset $ctx $(, $start)?),
                    $crate::program_type!(@offset $ctx $(, $end)?),
                    ::core::option::Option::None,
                );
            static __EBPF_EXT_DESCRIPTOR: $crate::ProgramTypeDescriptor =
                $crate::ProgramTypeDescriptor::new(
                    $type_name, &__EBPF_EXT_CONTEXT, $guid, $bpf_prog_type, false,
                );
            type __EBPF_EXT_HELPER_CONTEXT =
                $crate::program_type!(@helper_context $ctx $(, $helper_ctx)?);
            // Programs may write any bytes of what they see, and read all of them: a bit
            // pattern they write must be a value of the type (no `bool`, enum or reference),
            // and no byte may be padding (uninitialised kernel memory).
            const _: () = $crate::program_context_is_any_bit_pattern::<$ctx>();
            $(
                // The data pointers are `DataPointer`s (that very type): fields the SDK writes
                // before programs run, and that safe code cannot point anywhere else.
                #[allow(dead_code, reason = "only type-checked")]
                fn __ebpf_ext_data_fields_are_data_pointers(context: &$ctx) {
                    fn type_of<T>(_: &T) -> ::core::marker::PhantomData<T> {
                        ::core::marker::PhantomData
                    }
                    // Bound before the type is named: a field that only dereferences to a
                    // `DataPointer` does not coerce here.
                    let (start, end) = (type_of(&context.$start), type_of(&context.$end));
                    let _: ::core::marker::PhantomData<$crate::DataPointer> = start;
                    let _: ::core::marker::PhantomData<$crate::DataPointer> = end;
                }
                const _: () = ::core::assert!(
                    ::core::mem::offset_of!($ctx, $start) != ::core::mem::offset_of!($ctx, $end),
                    "the data start and end are two fields"
                );
            )?
            // Where the data pointers lie (`usize::MAX`: nowhere): in `$ctx`, and so in the
            // helpers' context, which begins with it.
            const __EBPF_EXT_DATA_START: ::core::primitive::usize =
                $crate::program_type!(@field_offset $ctx $(, $start)?);
            const __EBPF_EXT_DATA_END: ::core::primitive::usize =
                $crate::program_type!(@field_offset $ctx $(, $end)?);
            const __EBPF_EXT_DATA_OFFSETS: $crate::DataPointerOffsets<__EBPF_EXT_HELPER_CONTEXT> =
                if __EBPF_EXT_DATA_START == ::core::primitive::usize::MAX {
                    $crate::DataPointerOffsets::NONE
                } else {
                    // SAFETY: the offsets of `$ctx`'s two `DataPointer` fields (checked above),
                    // which lie at the same offsets of the helpers' context: `$ctx` itself or a
                    // type that begins with it (checked below).
                    unsafe {
                        $crate::DataPointerOffsets::new(__EBPF_EXT_DATA_START, __EBPF_EXT_DATA_END)
                    }
                };
            $(
                // The helpers' context begins with what programs see: its field `$prefix` is
                // a `$ctx` (that very type) at offset 0.
                const _: () = ::core::assert!(
                    ::core::mem::offset_of!($helper_ctx, $($prefix).+) == 0,
                    "the helpers' context must begin with the program's context"
                );
                #[allow(dead_code, reason = "only type-checked")]
                fn __ebpf_ext_prefix_is_the_program_context(context: &$helper_ctx) {
                    fn type_of<T>(_: &T) -> ::core::marker::PhantomData<T> {
                        ::core::marker::PhantomData
                    }
                    let prefix = type_of(&context.$($prefix).+);
                    let _: ::core::marker::PhantomData<$ctx> = prefix;
                }
            )?
            $crate::program_type!(@type_specific_helpers [$($helpers)*]);
            $(
                // Overrides of the core's general helpers: `ProgramInfo::new` checks each
                // declares the core's prototype for its id.
                $crate::helpers! {
                    context __EBPF_EXT_HELPER_CONTEXT, data __EBPF_EXT_DATA_OFFSETS;
                    static __EBPF_EXT_GLOBAL_HELPERS; static __EBPF_EXT_GLOBAL_ADDRESSES;
                    $($globals)+
                }
            )?
            $(
                // Compiles only if test runs give helpers the very type they are declared with
                // (no coercion: `PhantomData`s of two types are never one another).
                const _: ::core::marker::PhantomData<__EBPF_EXT_HELPER_CONTEXT> =
                    ::core::marker::PhantomData::<<$run as $crate::TestRun>::Context>;
            )?
            static __EBPF_EXT_INFO: $crate::ProgramInfo = $crate::ProgramInfo::new(
                &__EBPF_EXT_DESCRIPTOR,
                &__EBPF_EXT_HELPERS,
                $crate::program_type!(@global_prototypes $([$($globals)+])?),
            );
            let data = $crate::ProgramData::new(&__EBPF_EXT_INFO);
            let data = $crate::program_type!(@with_helpers data [$($helpers)*])
                $(.with_global_helpers($crate::program_type!(@global_addresses [$($globals)+])))?;
            $(
                // SAFETY: the offsets are `usize::MAX` (no data clause: none is written) or
                // those of `$ctx`'s two `DataPointer` fields (checked above), which lie at the
                // same offsets of `$run`'s context: `$ctx` itself or a type that begins with it
                // (checked above and below).
                let data = unsafe {
                    data.with_test_run_data::<$run, __EBPF_EXT_DATA_START, __EBPF_EXT_DATA_END>()
                };
            )?
            let data = data $(.with_required_irql($irql))?.checked();
            // SAFETY: the data's only helper tables are those declared with `context
            // __EBPF_EXT_HELPER_CONTEXT` just above (none, one or two), and its only test run
            // is `$run`, whose context is checked to be that very type (the macro accepts no
            // other builder call that could replace them); its data pointers, if any, are
            // `$ctx`'s two `DataPointer` fields (checked above), and its test runs set them;
            // its global overrides declare the core's prototypes for their ids
            // (`ProgramInfo::new`).
            unsafe { $crate::TypedProgramData::new(data) }
        };
    };
    // No type-specific helpers (netebpfext's `bind` has none): no prototypes, and no address
    // table (the core accepts a NULL one only with a count of 0).
    (@type_specific_helpers []) => {
        static __EBPF_EXT_HELPERS: [$crate::HelperPrototype; 0] = [];
    };
    (@type_specific_helpers [$($helpers:tt)+]) => {
        $crate::helpers! {
            context __EBPF_EXT_HELPER_CONTEXT, data __EBPF_EXT_DATA_OFFSETS;
            static __EBPF_EXT_HELPERS; static __EBPF_EXT_ADDRESSES; $($helpers)+
        }
    };
    (@with_helpers $data:ident []) => { $data };
    (@with_helpers $data:ident [$($helpers:tt)+]) => { $data.with_helpers(&__EBPF_EXT_ADDRESSES) };
    (@helper_context $ctx:ty) => { $ctx };
    (@helper_context $ctx:ty, $helper_ctx:ty) => { $helper_ctx };
    (@offset $ctx:ty) => { ::core::option::Option::None };
    (@offset $ctx:ty, $field:ident) => {
        ::core::option::Option::Some(::core::mem::offset_of!($ctx, $field))
    };
    (@field_offset $ctx:ty) => { ::core::primitive::usize::MAX };
    (@field_offset $ctx:ty, $field:ident) => { ::core::mem::offset_of!($ctx, $field) };
    (@global_prototypes) => { &[] };
    (@global_prototypes [$($globals:tt)+]) => { &__EBPF_EXT_GLOBAL_HELPERS };
    (@global_addresses [$($globals:tt)+]) => { &__EBPF_EXT_GLOBAL_ADDRESSES };
}

#[cfg(test)]
mod tests {
    use super::{
        Bytes, BytesMut, Cells, CellsMut, HelperArgument, Input, MapAndKey, Memory, SharedBytes,
        check_overlap,
    };

    fn memory<K: HelperArgument<()>>() -> Memory {
        K::MEMORY
    }

    #[test]
    fn a_map_key_is_memory_that_cells_may_share() {
        check_overlap(&[memory::<MapAndKey>(), memory::<CellsMut>()], true);
        check_overlap(&[memory::<MapAndKey>(), memory::<Cells>()], false);
    }

    #[test]
    #[should_panic(expected = "a helper with a BytesMut argument can take no other memory")]
    fn a_map_key_beside_a_mutable_buffer_is_refused() {
        check_overlap(&[memory::<MapAndKey>(), memory::<BytesMut>()], false);
    }

    #[test]
    fn views_that_hold_no_reference_may_overlap() {
        check_overlap(&[memory::<MapAndKey>(), memory::<Bytes>()], false);
        check_overlap(
            &[memory::<Bytes>(), memory::<Cells>(), memory::<CellsMut>()],
            true,
        );
    }

    #[test]
    fn an_input_reads_only_its_bytes() {
        let mut bytes = [1u8, 2, 3, 4, 5];
        // SAFETY: the array outlives the view, which is its only use meanwhile.
        let input = unsafe { Input::from_raw_parts(bytes.as_mut_ptr(), bytes.len()) };
        assert_eq!((input.len(), input.is_empty()), (5, false));
        assert_eq!(
            (input.get(0), input.get(4), input.get(5)),
            (Some(1), Some(5), None)
        );
        assert!(input.iter().eq(bytes));
        assert!(input.first(2).iter().eq([1, 2]));
        assert_eq!(input.first(9).len(), 5, "no further than the end");
        assert!(input.first(0).is_empty());
        let mut out = [0u8; 3];
        assert!(input.read_at(2, &mut out));
        assert_eq!(out, [3, 4, 5]);
        assert!(!input.read_at(3, &mut out), "one byte past the end");
        assert!(
            !input.read_at(usize::MAX, &mut out),
            "an offset that overflows"
        );
        assert_eq!(out, [3, 4, 5], "a refused read copies nothing");
        assert!(input.read_at(5, &mut []), "nothing at the end");
        assert!(Input::default().is_empty() && Input::default().get(0).is_none());
    }

    #[test]
    fn shared_bytes_write_within_bounds_and_see_other_views_writes() {
        let mut bytes = [0u8; 4];
        let start = bytes.as_mut_ptr();
        // SAFETY: the array outlives both views; no reference to it exists meanwhile.
        let a = unsafe { SharedBytes::from_raw_parts(start, 4) };
        // SAFETY: as above (its last two bytes).
        let b = unsafe { SharedBytes::from_raw_parts(start.wrapping_add(2), 2) };
        a.set(3, 7);
        assert_eq!(b.get(1), Some(7), "the overlapping view reads the write");
        b.set(0, 9);
        b.set(2, 1); // past `b`'s end: nothing
        assert!(a.input().iter().eq([0, 0, 9, 7]));
        a.set(4, 1); // past `a`'s end: nothing
        assert_eq!(bytes, [0, 0, 9, 7]);
    }

    #[test]
    fn a_mutable_context_beside_memory_arguments_is_accepted() {
        check_overlap(&[Memory::ContextMut, Memory::Unique], false);
        check_overlap(&[Memory::ContextMut, Memory::Shared, Memory::Shared], false);
        check_overlap(&[Memory::Shared, Memory::ContextMut, Memory::Shared], false);
        check_overlap(&[Memory::Context, Memory::Context, Memory::Unique], true);
    }

    #[test]
    #[should_panic(expected = "no other view of the context")]
    fn a_mutable_context_beside_a_shared_one_is_refused() {
        check_overlap(&[Memory::ContextMut, Memory::Context], false);
    }

    #[test]
    #[should_panic(expected = "no other view of the context")]
    fn a_mutable_context_beside_the_implicit_context_is_refused() {
        check_overlap(&[Memory::ContextMut, Memory::Unique], true);
    }

    #[test]
    #[should_panic(expected = "no other view of the context")]
    fn two_mutable_contexts_are_refused() {
        check_overlap(&[Memory::ContextMut, Memory::ContextMut], false);
    }
}
