//! [`DriverGlobal`]: the one place a driver keeps its running state between `DriverEntry` and
//! unload, reachable from callbacks that have no context parameter (process notify routines,
//! dispatch routines).

use core::cell::UnsafeCell;
use core::ops::Deref;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use ebpf_ext_pool::{PoolBox, PoolTag};
use ebpf_ext_sys::wdm::{
    EX_RUNDOWN_REF, ExAcquireRundownProtection, ExReInitializeRundownProtection,
    ExReleaseRundownProtection, ExWaitForRundownProtectionRelease,
};
use ebpf_ext_sys::{Error, Result};

/// A pool-allocated value published by `DriverEntry`, borrowed by callbacks under rundown
/// protection, and taken back at unload only once no borrow is left.
///
/// - [`DriverGlobal::set`] publishes (PASSIVE_LEVEL).
/// - [`DriverGlobal::get`] borrows: one interlocked operation on a reference that is never
///   freed (it lives in the static), so it is safe against a concurrent take; `None` before
///   `set` and once `take` has begun (≤ DISPATCH_LEVEL).
/// - [`DriverGlobal::take`] refuses new borrows, waits for the current ones to end, and
///   returns the value to drop (PASSIVE_LEVEL). After it, `set` may publish again (a driver
///   loaded twice in one host test process).
pub struct DriverGlobal<T> {
    value: AtomicPtr<T>,
    rundown: UnsafeCell<EX_RUNDOWN_REF>,
    run_down: AtomicBool,
    tag: PoolTag,
}

// SAFETY: the value is shared as `&T` across threads (so `T: Sync`) and dropped on whichever
// thread calls `take` (so `T: Send`); the rundown reference is only touched through the
// kernel's interlocked routines.
unsafe impl<T: Send + Sync> Sync for DriverGlobal<T> {}

impl<T: Send + Sync> DriverGlobal<T> {
    /// An empty global whose value will be allocated with `tag` (a zeroed `EX_RUNDOWN_REF`
    /// is an initialised one).
    #[must_use]
    pub const fn new(tag: PoolTag) -> Self {
        DriverGlobal {
            value: AtomicPtr::new(ptr::null_mut()),
            rundown: UnsafeCell::new(EX_RUNDOWN_REF { Count: 0 }),
            run_down: AtomicBool::new(false),
            tag,
        }
    }

    /// Moves `value` to non-paged pool and publishes it. On failure `value` is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if a value is already published;
    /// [`Error::InsufficientResources`] if the allocation fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn set(&self, value: T) -> Result {
        if !self.value.load(Ordering::Acquire).is_null() {
            return Err(Error::InvalidDeviceState);
        }
        let value = PoolBox::try_new(value, self.tag)?;
        let raw = value.into_raw();
        // Publish only into an empty global: a racing `set` that got there first wins, and
        // this value goes back to the pool (dropped, which stops whatever it runs).
        if self
            .value
            .compare_exchange(
                ptr::null_mut(),
                raw.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `raw` came from `into_raw` just above with this tag and was never
            // published.
            drop(unsafe { PoolBox::from_raw(raw, self.tag) });
            return Err(Error::InvalidDeviceState);
        }
        if self.run_down.swap(false, Ordering::AcqRel) {
            // SAFETY: the reference completed a rundown in `take`; no borrow can exist
            // because every acquire since then failed, and only this `set` (which won the
            // exchange) re-initialises it.
            unsafe { ExReInitializeRundownProtection(self.rundown.get()) };
        }
        Ok(())
    }

    /// Borrows the value, if published and not being taken.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    #[must_use]
    pub fn get(&self) -> Option<GlobalRef<'_, T>> {
        // SAFETY: the reference lives as long as `self` and is initialised (zero, or
        // re-initialised in `set`).
        if unsafe { ExAcquireRundownProtection(self.rundown.get()) } == 0 {
            return None;
        }
        let value = self.value.load(Ordering::Acquire);
        if value.is_null() {
            // SAFETY: acquired just above.
            unsafe { ExReleaseRundownProtection(self.rundown.get()) };
            return None;
        }
        Some(GlobalRef {
            global: self,
            value,
        })
    }

    /// Refuses new borrows, waits for current ones to end, and returns the value.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (it may block).
    pub fn take(&self) -> Option<PoolBox<T>> {
        // SAFETY: the reference is initialised; waiting is allowed at PASSIVE_LEVEL.
        unsafe { ExWaitForRundownProtectionRelease(self.rundown.get()) };
        self.run_down.store(true, Ordering::Release);
        let value = self.value.swap(ptr::null_mut(), Ordering::AcqRel);
        let value = ptr::NonNull::new(value)?;
        // SAFETY: published by `set` from `PoolBox::into_raw` with this tag, and no borrow
        // exists (rundown completed).
        Some(unsafe { PoolBox::from_raw(value, self.tag) })
    }
}

/// A borrow of a [`DriverGlobal`]'s value; releases its rundown reference on drop.
pub struct GlobalRef<'a, T: Send + Sync> {
    global: &'a DriverGlobal<T>,
    value: *mut T,
}

impl<T: Send + Sync> Deref for GlobalRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the rundown reference held by this borrow keeps `take` from freeing it.
        unsafe { &*self.value }
    }
}

impl<T: Send + Sync> Drop for GlobalRef<'_, T> {
    fn drop(&mut self) {
        // SAFETY: acquired in `get`.
        unsafe { ExReleaseRundownProtection(self.global.rundown.get()) };
    }
}
