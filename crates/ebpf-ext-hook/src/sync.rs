//! What `snapshot.rs` is written against: the pool, the cache-aware rundown reference, an
//! atomic, a spin hint and an interior-mutable cell. `tests/loom_snapshot.rs` includes
//! `snapshot.rs` as it is, with a `sync` of its own over loom's types, so loom checks the
//! protocol's own code rather than a copy of it. Here every item is the real one, or a
//! wrapper that compiles to it.

use core::marker::PhantomData;

pub(crate) use core::hint::spin_loop;
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub(crate) use ebpf_ext_pool::{PoolArray as Array, PoolTag as Tag};
pub(crate) use ebpf_ext_rundown::{
    CacheAwareRundown as Rundown, CacheAwareRundownGuard as RundownGuard,
};

/// An interior-mutable value whose borrows the caller vouches for (`UnsafeCell`); each
/// borrow comes with a token that, under loom, records the access until it is dropped.
pub(crate) struct Cell<T>(core::cell::UnsafeCell<T>);

/// The token of a shared borrow (nothing here).
pub(crate) struct Shared<'a, T>(PhantomData<&'a T>);

/// The token of an exclusive borrow (nothing here).
pub(crate) struct Exclusive<'a, T>(PhantomData<&'a mut T>);

impl<T> Cell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Cell(core::cell::UnsafeCell::new(value))
    }

    /// A shared borrow.
    ///
    /// # Safety
    /// No exclusive borrow of the value overlaps it.
    #[inline]
    pub(crate) unsafe fn borrow(&self) -> (Shared<'_, T>, &T) {
        // SAFETY: the caller's contract.
        (Shared(PhantomData), unsafe { &*self.0.get() })
    }

    /// An exclusive borrow.
    ///
    /// # Safety
    /// No other borrow of the value overlaps it.
    #[inline]
    #[expect(
        clippy::mut_from_ref,
        reason = "an UnsafeCell's borrow, vouched for by the caller"
    )]
    pub(crate) unsafe fn borrow_mut(&self) -> (Exclusive<'_, T>, &mut T) {
        // SAFETY: the caller's contract.
        (Exclusive(PhantomData), unsafe { &mut *self.0.get() })
    }
}
