//! Fallible, tagged kernel pool allocations.
//!
//! Nothing on a kernel path may allocate infallibly: [`PoolBox::try_new`] returns
//! [`Error::InsufficientResources`] when `ExAllocatePool2` fails, and [`PoolAllocator`] is a
//! `GlobalAlloc` over the same pool for drivers that want `alloc` collections (whose failure
//! handling is then the allocation-error handler's).
//!
//! All memory is non-paged, non-executable (`POOL_FLAG_NON_PAGED`): the SDK's objects are
//! touched at DISPATCH_LEVEL.
//!
//! # IRQL
//! Allocation and free: ≤ DISPATCH_LEVEL.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use ebpf_ext_sys::wdm::{
    ExAllocatePool2, ExFreePoolWithTag, PAGE_SIZE, POOL_FLAG_CACHE_ALIGNED, POOL_FLAG_NON_PAGED,
};
use ebpf_ext_sys::{Error, Result};

/// A pool tag: four characters, stored so that they read in order in a debugger
/// (`PoolTag::new(*b"Nfbe")` is the C literal `'ebfN'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolTag(u32);

impl PoolTag {
    /// A tag from its four characters in memory order.
    ///
    /// # Panics
    /// At compile time (in a `const`) if the tag is zero, which `ExAllocatePool2` rejects.
    #[must_use]
    pub const fn new(chars: [u8; 4]) -> PoolTag {
        let value = u32::from_le_bytes(chars);
        assert!(value != 0, "a pool tag must not be zero");
        PoolTag(value)
    }

    /// The raw `ULONG` tag.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }
}

/// Whether non-paged pool returns blocks of `size` bytes aligned to `align`: every block is
/// aligned to 16 bytes (to 64 with `POOL_FLAG_CACHE_ALIGNED`), and one of a page or more to a
/// page. A layout it cannot honour is refused rather than returned misaligned.
#[must_use]
pub const fn pool_can_align(size: usize, align: usize) -> bool {
    align <= 64 || (size >= PAGE_SIZE && align <= PAGE_SIZE)
}

/// Allocates `layout` from non-paged pool; NULL on failure.
fn allocate(layout: Layout, tag: PoolTag) -> *mut u8 {
    // ExAllocatePool2 aligns small blocks to 16 bytes and page-sized ones to a page; ask for
    // cache alignment for anything between.
    let flags = if layout.align() > 16 {
        POOL_FLAG_NON_PAGED | POOL_FLAG_CACHE_ALIGNED
    } else {
        POOL_FLAG_NON_PAGED
    };
    if !pool_can_align(layout.size(), layout.align()) {
        return core::ptr::null_mut();
    }
    // SAFETY: no preconditions beyond the IRQL documented on the callers; zero-size requests
    // are rounded up so the pool never sees 0.
    let p = unsafe { ExAllocatePool2(flags, layout.size().max(1), tag.value()) };
    p.cast()
}

/// An owned `T` in non-paged pool, freed (with its tag) on drop.
///
/// # Invariants
/// `ptr` is a live pool allocation of `size_of::<T>()` bytes with tag `tag`, holding an
/// initialised `T` that this box owns.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
    tag: PoolTag,
    _owns: PhantomData<T>,
}

// SAFETY: a PoolBox owns its T like Box does.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

impl<T> PoolBox<T> {
    /// Moves `value` into a new pool allocation.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] if the allocation fails (the value is dropped).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn try_new(value: T, tag: PoolTag) -> Result<Self> {
        let p = allocate(Layout::new::<T>(), tag).cast::<T>();
        let ptr = NonNull::new(p).ok_or(Error::InsufficientResources)?;
        // SAFETY: a fresh allocation of the right size and alignment (checked in `allocate`).
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: initialised above.
        Ok(PoolBox {
            ptr,
            tag,
            _owns: PhantomData,
        })
    }

    /// Like [`PoolBox::try_new`], but hands the value back when the allocation fails, for
    /// callers that must undo something the value stands for.
    ///
    /// # Errors
    /// The value, if the allocation fails.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn try_new_or_return(value: T, tag: PoolTag) -> core::result::Result<Self, T> {
        let p = allocate(Layout::new::<T>(), tag).cast::<T>();
        let Some(ptr) = NonNull::new(p) else {
            return Err(value);
        };
        // SAFETY: a fresh allocation of the right size and alignment (checked in `allocate`).
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: initialised above.
        Ok(PoolBox {
            ptr,
            tag,
            _owns: PhantomData,
        })
    }

    /// The pointer, for handing to the kernel as a context. It stays valid until the box is
    /// dropped (or reclaimed with [`PoolBox::from_raw`]).
    #[must_use]
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Moves the value out and frees the allocation.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn into_inner(self) -> T {
        let (ptr, tag) = (self.ptr, self.tag);
        core::mem::forget(self);
        // SAFETY: the box owned an initialised T, read once here; `self` was forgotten so it
        // is neither dropped nor freed twice.
        let value = unsafe { ptr.as_ptr().read() };
        // SAFETY: a live allocation with this tag, freed once.
        unsafe { ExFreePoolWithTag(ptr.as_ptr().cast::<c_void>(), tag.value()) };
        value
    }

    /// Gives up ownership; the pointer must come back through [`PoolBox::from_raw`].
    #[must_use]
    pub fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }

    /// Takes ownership back.
    ///
    /// # Safety
    /// `ptr` came from [`PoolBox::into_raw`] with the same tag and is not owned elsewhere.
    #[must_use]
    pub unsafe fn from_raw(ptr: NonNull<T>, tag: PoolTag) -> Self {
        // INVARIANT: the caller guarantees `ptr` was a PoolBox<T> with this tag.
        PoolBox {
            ptr,
            tag,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised T (type invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns an initialised T and `&mut self` is exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: the box owns an initialised T (type invariant), dropped once here.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        // SAFETY: a live allocation with this tag, freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast::<c_void>(), self.tag.value()) };
    }
}

impl<T: fmt::Debug> fmt::Debug for PoolBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A fixed-length array of `T` in non-paged pool, every element initialised to
/// `T::default()`, freed on drop.
///
/// # Invariants
/// `ptr` is a live pool allocation with tag `tag` holding `len` initialised `T`s owned here.
pub struct PoolArray<T> {
    ptr: NonNull<T>,
    len: usize,
    tag: PoolTag,
    _owns: PhantomData<T>,
}

// SAFETY: owns its elements like Box<[T]>.
unsafe impl<T: Send> Send for PoolArray<T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Sync> Sync for PoolArray<T> {}

impl<T: Default> PoolArray<T> {
    /// `len` default elements.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] if the allocation fails or the size overflows.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn try_new(len: usize, tag: PoolTag) -> Result<Self> {
        let layout = Layout::array::<T>(len.max(1)).map_err(|_| Error::InsufficientResources)?;
        let ptr =
            NonNull::new(allocate(layout, tag).cast::<T>()).ok_or(Error::InsufficientResources)?;
        // INVARIANT: no element yet; each counts once written, so a `T::default()` that
        // unwinds (host builds; drivers abort) drops those before it and frees the block.
        let mut array = PoolArray {
            ptr,
            len: 0,
            tag,
            _owns: PhantomData,
        };
        while array.len < len {
            // SAFETY: `array.len < len` lies inside the fresh allocation of `len` elements.
            let slot = unsafe { ptr.as_ptr().add(array.len) };
            // SAFETY: as above; the slot is uninitialised and suitably aligned.
            unsafe { slot.write(T::default()) };
            array.len += 1;
        }
        Ok(array)
    }
}

impl<T> PoolArray<T> {
    /// Gives up ownership: the first element and the length, which must come back through
    /// [`PoolArray::from_raw`] (for example a buffer the kernel or a C structure holds by
    /// pointer for a while).
    #[must_use]
    pub fn into_raw(self) -> (NonNull<T>, usize) {
        let raw = (self.ptr, self.len);
        core::mem::forget(self);
        raw
    }

    /// Takes ownership back.
    ///
    /// # Safety
    /// `ptr` and `len` came from [`PoolArray::into_raw`] of an array with tag `tag`, and the
    /// array is not owned elsewhere.
    #[must_use]
    pub unsafe fn from_raw(ptr: NonNull<T>, len: usize, tag: PoolTag) -> Self {
        // INVARIANT: the caller guarantees these were a PoolArray<T>'s with this tag.
        PoolArray {
            ptr,
            len,
            tag,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for PoolArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements (type invariant).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for PoolArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: `len` initialised elements, exclusively borrowed.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for PoolArray<T> {
    fn drop(&mut self) {
        // SAFETY: the elements are initialised and dropped once here.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        // SAFETY: a live allocation with this tag, freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast::<c_void>(), self.tag.value()) };
    }
}

/// A `GlobalAlloc` over non-paged pool with one tag, for a driver's `#[global_allocator]`.
/// Allocation failure returns NULL, as `GlobalAlloc` requires.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL for every operation.
#[derive(Debug)]
pub struct PoolAllocator {
    tag: PoolTag,
}

impl PoolAllocator {
    /// An allocator tagging its blocks with `tag`.
    #[must_use]
    pub const fn new(tag: PoolTag) -> Self {
        PoolAllocator { tag }
    }
}

// SAFETY: blocks come from ExAllocatePool2 with at least the requested size and alignment
// (larger alignments than the pool gives are refused with NULL), and are freed with the same
// tag.
unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout, self.tag)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block from `alloc` of this allocator (same tag).
        unsafe { ExFreePoolWithTag(ptr.cast(), self.tag.value()) };
    }
}

const _: () = assert!(size_of::<PoolTag>() == 4 && align_of::<PoolTag>() == 4);
