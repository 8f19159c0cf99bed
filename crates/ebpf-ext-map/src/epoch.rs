//! The core's epoch, as the map client's dispatch table offers it to a map provider: regions
//! that keep epoch memory alive, and objects in that memory which go back to the pool only
//! once no region that could see them remains.
//!
//! The use it is for: a custom map whose stored values point at objects of the provider's
//! (upstream's sample keeps a pointer to a 4-byte object per key; XDP's XSKMAP a socket,
//! which needs releasing as well as freeing: [`crate::Objects`] frees plain `Copy` objects
//! only, so such a map implements [`crate::CustomMap`] over this module itself).
//! The provider allocates the object on update, stores its address in the value the core
//! keeps, reads it on lookup or from a helper, and drops it when the core deletes or replaces
//! the value: a program that found the object before may go on reading it until its run ends,
//! because the memory is freed under epoch control.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_extension::{
    EBPF_EPOCH_STATE_SIZE, ebpf_base_map_client_dispatch_table_t, ebpf_epoch_allocate_with_tag_t,
    ebpf_epoch_enter_t, ebpf_epoch_exit_t, ebpf_epoch_free_t,
};

/// Alignment of what the core's plain epoch allocator returns (pool alignment past its
/// 32-byte header); objects aligned more come from the cache-aligned one.
const PLAIN_ALIGN: usize = 16;
/// Alignment of the core's cache-aligned epoch allocator.
const CACHE_LINE: usize = 64;

/// The core's epoch functions, from the dispatch table it presents to a map provider (the
/// 80-byte table, with all six set). Valid while the core is loaded, which it stays while any
/// map of the provider's type lives: only a map's state keeps it (crate-private, so no
/// extension can call through it after the core is gone).
#[derive(Clone, Copy)]
pub struct Epoch {
    enter: ebpf_epoch_enter_t,
    exit: ebpf_epoch_exit_t,
    allocate: ebpf_epoch_allocate_with_tag_t,
    allocate_aligned: ebpf_epoch_allocate_with_tag_t,
    free: ebpf_epoch_free_t,
    free_aligned: ebpf_epoch_free_t,
}

impl core::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Epoch").finish_non_exhaustive()
    }
}

impl Epoch {
    /// The six functions of a client dispatch table of at least 80 bytes, if all are set.
    ///
    /// # Safety
    /// `table` is readable for the size its header gives (checked by the caller to be at least
    /// the full table), and its functions are the core's.
    pub(crate) unsafe fn from_table(
        table: *const ebpf_base_map_client_dispatch_table_t,
    ) -> Option<Epoch> {
        // SAFETY: the caller's precondition.
        let table = unsafe { table.read_unaligned() };
        Some(Epoch {
            enter: table.epoch_enter?,
            exit: table.epoch_exit?,
            allocate: table.epoch_allocate_with_tag?,
            allocate_aligned: table.epoch_allocate_cache_aligned_with_tag?,
            free: table.epoch_free?,
            free_aligned: table.epoch_free_cache_aligned?,
        })
    }

    /// The allocator and the matching free for objects of `T`: the cache-aligned pair for a
    /// `T` aligned beyond what the plain allocator gives.
    fn functions_for<T>(&self) -> (ebpf_epoch_allocate_with_tag_t, ebpf_epoch_free_t) {
        if align_of::<T>() > PLAIN_ALIGN {
            (self.allocate_aligned, self.free_aligned)
        } else {
            (self.allocate, self.free)
        }
    }

    /// Runs `f` inside an epoch-protected region: memory freed under epoch control meanwhile,
    /// by any processor, stays valid until `f` returns. Regions nest. Helpers and most of the
    /// core's callbacks already run inside one, but not a map's teardown (its cleanup deletes
    /// and `postprocess_map_delete`, which the core calls from an epoch work item): so every
    /// use here enters its own.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL; `f` must return at the IRQL it was called at (the core leaves the
    /// region at the IRQL it entered it).
    pub(crate) fn protect<R>(&self, f: impl FnOnce(&Protected<'_>) -> R) -> R {
        // The region's record: written by enter, unlinked by exit, on this frame throughout.
        let mut state = [0u64; EBPF_EPOCH_STATE_SIZE / 8];
        let record = state.as_mut_ptr().cast::<c_void>();
        // SAFETY: the core's enter, with 32 writable bytes that stay at this address (a local
        // of this frame, never moved) until the exit below.
        unsafe { (self.enter)(record) };
        let value = f(&Protected {
            epoch: self,
            _one_thread: PhantomData,
        });
        // SAFETY: the record enter wrote, on the thread that entered; `f` cannot end the
        // region (it has no access to the record).
        unsafe { (self.exit)(record) };
        value
    }
}

/// Proof that the calling thread is inside an epoch-protected region
/// ([`Epoch::protect`]); confined to that thread and that region.
pub(crate) struct Protected<'a> {
    epoch: &'a Epoch,
    /// Not `Send` or `Sync`: a region belongs to the thread that entered it.
    _one_thread: PhantomData<*mut ()>,
}

impl Protected<'_> {
    /// Moves `value` into epoch memory of the core's with pool tag `tag`; `None` if the pool
    /// has no room.
    ///
    /// `T` is `Copy`: the memory is given back without running a destructor, once no region
    /// that could see it remains.
    #[must_use]
    pub(crate) fn allocate<T: Copy + Send + Sync + 'static>(
        &self,
        value: T,
        tag: PoolTag,
    ) -> Option<EpochBox<T>> {
        const {
            assert!(size_of::<T>() != 0, "the core allocates no empty blocks");
            assert!(
                align_of::<T>() <= CACHE_LINE,
                "the core aligns epoch memory to a cache line at most"
            );
        }
        let (allocate, free) = self.epoch.functions_for::<T>();
        // SAFETY: the core's allocator, inside a region (this token), with a non-zero size.
        let memory = unsafe { allocate(size_of::<T>(), tag.value()) }.cast::<T>();
        let memory = NonNull::new(memory)?;
        if !memory.is_aligned() {
            // Not what the core promises: give it back rather than misplace a `T`.
            // SAFETY: what the matching allocator just returned, freed once, inside a region.
            unsafe { free(memory.as_ptr().cast()) };
            ebpf_ext_trace::trace_message_u32!(
                ebpf_ext_trace::Level::Error,
                ebpf_ext_trace::keyword::EXTENSION,
                "epoch memory refused: not aligned for the object",
                u32::try_from(align_of::<T>()).unwrap_or(u32::MAX)
            );
            return None;
        }
        // SAFETY: `size_of::<T>()` bytes the allocator just returned, aligned for `T` (the
        // allocator chosen by `T`'s alignment), no one else's.
        unsafe { memory.as_ptr().write(value) };
        Some(EpochBox {
            object: memory,
            epoch: *self.epoch,
        })
    }
}

/// An object in epoch memory, owned: dropping it frees the memory under epoch control (the
/// core gives it back once no region that could still see it remains).
///
/// To keep one in a map's stored value, [`EpochBox::into_raw`] gives its address (and
/// ownership) up, and [`EpochBox::from_raw`] takes it back when the core deletes the value;
/// [`EpochBox::read`] reads one that a stored value points at, inside a region.
pub(crate) struct EpochBox<T: Copy + Send + Sync + 'static> {
    object: NonNull<T>,
    epoch: Epoch,
}

// SAFETY: the box owns a `T: Send + Sync` in memory any processor may free.
unsafe impl<T: Copy + Send + Sync + 'static> Send for EpochBox<T> {}
// SAFETY: shared access gives `&T` only, and `T: Sync`.
unsafe impl<T: Copy + Send + Sync + 'static> Sync for EpochBox<T> {}

impl<T: Copy + Send + Sync + 'static> EpochBox<T> {
    /// Gives the object up: its address, which [`EpochBox::from_raw`] turns back into the
    /// owner. Until then the memory is never freed.
    #[must_use]
    pub(crate) fn into_raw(self) -> NonNull<T> {
        let object = self.object;
        core::mem::forget(self);
        object
    }

    /// Takes back the object at `object`, from `epoch`.
    ///
    /// # Safety
    /// `object` came from [`EpochBox::into_raw`] of a box of `epoch`'s, and no other owner
    /// takes it back.
    #[must_use]
    pub(crate) unsafe fn from_raw(object: NonNull<T>, epoch: Epoch) -> Self {
        EpochBox { object, epoch }
    }

    /// Reads the object at `object`, which an owner keeps (an address taken with
    /// [`EpochBox::into_raw`] and stored in a map value), inside the region `region`: valid
    /// even if the owner frees it meanwhile, until the region ends.
    ///
    /// # Safety
    /// `object` came from [`EpochBox::into_raw`], and its owner had not dropped it when this
    /// region began (for example: the address was read, inside this region, from a stored
    /// value the owner keeps until it drops the object).
    #[must_use]
    pub(crate) unsafe fn read(object: NonNull<T>, region: &Protected<'_>) -> T {
        let _ = region;
        // SAFETY: the caller's precondition: epoch memory holding a `T`, not given back
        // before this region ends.
        unsafe { ptr::read(object.as_ptr()) }
    }
}

impl<T: Copy + Send + Sync + 'static> Drop for EpochBox<T> {
    fn drop(&mut self) {
        let (_, free) = self.epoch.functions_for::<T>();
        let object = self.object;
        // A region of its own: a map's cleanup drops boxes outside any of the core's.
        self.epoch.protect(|_| {
            // SAFETY: memory of the matching allocator, owned by this box, freed once, inside
            // a region.
            unsafe { free(object.as_ptr().cast()) };
        });
    }
}
