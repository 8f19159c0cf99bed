//! Safe run-down protection over `EX_RUNDOWN_REF`.
//!
//! A [`Rundown`] lets many threads use an object while one thread waits for all of them to
//! finish before tearing it down: [`Rundown::try_acquire`] hands out a [`RundownGuard`] until
//! [`Rundown::wait_for_release`] begins; the wait then blocks until the last guard is dropped,
//! and every later acquire fails. This replaces the C common library's
//! `ebpf_ext_init_rundown` / `ebpf_ext_enter_rundown` / `ebpf_ext_leave_rundown` /
//! `ebpf_ext_wait_for_rundown`, with the release tied to a guard so it cannot be forgotten or
//! doubled.
//!
//! [`CacheAwareRundown`] is the same contract over `EX_RUNDOWN_REF_CACHE_AWARE`, whose
//! references are counted per processor: acquiring and releasing on a hot path then writes
//! only the current processor's cache line.
//!
//! # IRQL
//! Acquire and release: IRQL ≤ DISPATCH_LEVEL (the references live in non-paged memory).
//! Wait, initialise and re-initialise: IRQL ≤ APC_LEVEL.
//!
//! # Locking
//! None of these take a lock. A thread must not wait while it holds a guard of the same
//! rundown: the wait would never end.
#![no_std]

use core::cell::UnsafeCell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use ebpf_ext_sys::wdm::{
    EX_RUNDOWN_REF, EX_RUNDOWN_REF_CACHE_AWARE, ExAcquireRundownProtection,
    ExAcquireRundownProtectionCacheAware, ExAllocateCacheAwareRundownProtection,
    ExFreeCacheAwareRundownProtection, ExInitializeRundownProtection,
    ExReInitializeRundownProtection, ExReInitializeRundownProtectionCacheAware,
    ExReleaseRundownProtection, ExReleaseRundownProtectionCacheAware,
    ExWaitForRundownProtectionRelease, ExWaitForRundownProtectionReleaseCacheAware, NonPagedPoolNx,
};
use ebpf_ext_sys::{Error, Result};

/// Run-down protection ([`EX_RUNDOWN_REF`]).
///
/// # Invariants
/// `inner` was initialised by `ExInitializeRundownProtection`; the kernel is its only writer
/// while guards exist (guards borrow `self`, so it cannot move meanwhile).
pub struct Rundown {
    inner: UnsafeCell<EX_RUNDOWN_REF>,
    run_down: AtomicBool,
    _pin: PhantomPinned,
}

// SAFETY: every access to the reference goes through the kernel's rundown routines, which are
// safe to call concurrently from any thread.
unsafe impl Sync for Rundown {}
// SAFETY: the reference is plain data with no thread affinity.
unsafe impl Send for Rundown {}

impl Rundown {
    /// An initialised rundown reference
    /// ([`ExInitializeRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exinitializerundownprotection)).
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    #[must_use]
    pub fn new() -> Self {
        let rundown = Rundown {
            inner: UnsafeCell::new(EX_RUNDOWN_REF::default()),
            run_down: AtomicBool::new(false),
            _pin: PhantomPinned,
        };
        // SAFETY: `inner` is valid, exclusively ours, and initialising a zeroed reference is
        // always allowed. INVARIANT: the reference is initialised from here on.
        unsafe { ExInitializeRundownProtection(rundown.inner.get()) };
        rundown
    }

    /// An initialised rundown reference built at compile time, for a `static` (or zeroed
    /// storage): a zeroed `EX_RUNDOWN_REF` is exactly what `ExInitializeRundownProtection`
    /// produces.
    #[must_use]
    pub const fn new_static() -> Self {
        // INVARIANT: a zero count is the initialised, not-run-down state.
        Rundown {
            inner: UnsafeCell::new(EX_RUNDOWN_REF { Count: 0 }),
            run_down: AtomicBool::new(false),
            _pin: PhantomPinned,
        }
    }

    /// Takes a reference, unless a wait has begun
    /// ([`ExAcquireRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exacquirerundownprotection)).
    /// The reference is released when the guard drops.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    #[must_use = "the reference is released as soon as the guard is dropped"]
    pub fn try_acquire(&self) -> Option<RundownGuard<'_>> {
        // SAFETY: the reference is initialised (type invariant).
        let acquired = unsafe { ExAcquireRundownProtection(self.inner.get()) } != 0;
        // Not `then_some`: that would build (and drop, releasing) a guard on failure too.
        if acquired {
            Some(RundownGuard { rundown: self })
        } else {
            None
        }
    }

    /// Refuses new references and blocks until every guard is dropped
    /// ([`ExWaitForRundownProtectionRelease`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exwaitforrundownprotectionrelease)).
    /// Calling it again after completion returns at once.
    ///
    /// # IRQL
    /// ≤ APC_LEVEL (it blocks).
    pub fn wait_for_release(&self) {
        // SAFETY: the reference is initialised (type invariant).
        unsafe { ExWaitForRundownProtectionRelease(self.inner.get()) };
        self.run_down.store(true, Ordering::Release);
    }

    /// Whether [`Rundown::wait_for_release`] has completed.
    #[must_use]
    pub fn is_run_down(&self) -> bool {
        self.run_down.load(Ordering::Acquire)
    }

    /// Makes a run-down reference acquirable again
    /// ([`ExReInitializeRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotection)).
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if the wait has not completed.
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    ///
    /// # Locking
    /// The caller must ensure no other thread waits on or re-initialises the reference at the
    /// same time (guards cannot exist: the reference is run down), as for
    /// [`CacheAwareRundown::reinitialize`].
    pub fn reinitialize(&self) -> Result {
        if !self.is_run_down() {
            return Err(Error::InvalidDeviceState);
        }
        // SAFETY: the reference has been run down, so no guard exists and none can be taken.
        unsafe { ExReInitializeRundownProtection(self.inner.get()) };
        self.run_down.store(false, Ordering::Release);
        Ok(())
    }

    /// The raw reference, for inspection in tests and for FFI.
    #[must_use]
    pub fn as_ptr(&self) -> *mut EX_RUNDOWN_REF {
        self.inner.get()
    }
}

impl Default for Rundown {
    fn default() -> Self {
        Rundown::new()
    }
}

/// A reference on a [`Rundown`], released on drop
/// ([`ExReleaseRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreleaserundownprotection)).
/// It may be dropped on another thread than the one that acquired it.
///
/// # IRQL
/// Dropped at ≤ DISPATCH_LEVEL.
#[must_use = "the reference is released as soon as the guard is dropped"]
pub struct RundownGuard<'a> {
    rundown: &'a Rundown,
}

impl Drop for RundownGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard owns one reference taken by `try_acquire`.
        unsafe { ExReleaseRundownProtection(self.rundown.inner.get()) };
    }
}

/// Cache-aware run-down protection (`EX_RUNDOWN_REF_CACHE_AWARE`), allocated from non-paged
/// pool with the caller's tag.
///
/// # Invariants
/// `inner` came from `ExAllocateCacheAwareRundownProtection` and is freed only in `Drop`.
pub struct CacheAwareRundown {
    inner: NonNull<EX_RUNDOWN_REF_CACHE_AWARE>,
    run_down: AtomicBool,
}

// SAFETY: the reference is used only through the kernel's routines, which are thread-safe.
unsafe impl Sync for CacheAwareRundown {}
// SAFETY: the allocation has no thread affinity.
unsafe impl Send for CacheAwareRundown {}

impl CacheAwareRundown {
    /// Allocates and initialises a cache-aware reference
    /// ([`ExAllocateCacheAwareRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatecacheawarerundownprotection)).
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] if the allocation fails.
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    pub fn new(pool_tag: u32) -> Result<Self> {
        // SAFETY: no preconditions beyond the IRQL documented above.
        let raw = unsafe { ExAllocateCacheAwareRundownProtection(NonPagedPoolNx, pool_tag) };
        // INVARIANT: a non-null result is an initialised reference we own.
        let inner = NonNull::new(raw).ok_or(Error::InsufficientResources)?;
        Ok(CacheAwareRundown {
            inner,
            run_down: AtomicBool::new(false),
        })
    }

    /// Takes a reference unless a wait has begun; released when the guard drops.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    #[must_use = "the reference is released as soon as the guard is dropped"]
    pub fn try_acquire(&self) -> Option<CacheAwareRundownGuard<'_>> {
        // SAFETY: `inner` is a live, initialised reference (type invariant).
        let acquired = unsafe { ExAcquireRundownProtectionCacheAware(self.inner.as_ptr()) } != 0;
        if acquired {
            Some(CacheAwareRundownGuard { rundown: self })
        } else {
            None
        }
    }

    /// Refuses new references and blocks until every guard is dropped.
    ///
    /// # IRQL
    /// ≤ APC_LEVEL (it blocks).
    pub fn wait_for_release(&self) {
        // SAFETY: `inner` is a live, initialised reference (type invariant).
        unsafe { ExWaitForRundownProtectionReleaseCacheAware(self.inner.as_ptr()) };
        self.run_down.store(true, Ordering::Release);
    }

    /// Whether [`CacheAwareRundown::wait_for_release`] has completed.
    #[must_use]
    pub fn is_run_down(&self) -> bool {
        self.run_down.load(Ordering::Acquire)
    }

    /// Makes a run-down reference acquirable again
    /// ([`ExReInitializeRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotectioncacheaware)).
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if the wait has not completed.
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    ///
    /// # Locking
    /// The caller must ensure no other thread waits on or re-initialises the reference at the
    /// same time (guards cannot exist: the reference is run down).
    pub fn reinitialize(&self) -> Result {
        if !self.is_run_down() {
            return Err(Error::InvalidDeviceState);
        }
        // SAFETY: `inner` is live and run down, so no reference is held.
        unsafe { ExReInitializeRundownProtectionCacheAware(self.inner.as_ptr()) };
        self.run_down.store(false, Ordering::Release);
        Ok(())
    }
}

impl Drop for CacheAwareRundown {
    fn drop(&mut self) {
        // SAFETY: no guard can exist (guards borrow `self`); the reference came from
        // ExAllocateCacheAwareRundownProtection and is freed once.
        unsafe { ExFreeCacheAwareRundownProtection(self.inner.as_ptr()) };
    }
}

/// A reference on a [`CacheAwareRundown`], released on drop (on the current processor's
/// counter, whichever processor took it).
///
/// # IRQL
/// Dropped at ≤ DISPATCH_LEVEL.
#[must_use = "the reference is released as soon as the guard is dropped"]
pub struct CacheAwareRundownGuard<'a> {
    rundown: &'a CacheAwareRundown,
}

impl Drop for CacheAwareRundownGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard owns one reference taken by `try_acquire`.
        unsafe { ExReleaseRundownProtectionCacheAware(self.rundown.inner.as_ptr()) };
    }
}
