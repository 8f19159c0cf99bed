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
//!
//! # Waiting twice
//! The kernel's wait may not run twice at once on one reference, nor again before the
//! completion routine (`ExRundownCompleted`) has run after a wait that had to block (every
//! cache-aware wait): until then the reference points at the first waiter's wait block.
//! `wait_for_release` runs the kernel's wait and then its completion routine once; a later
//! call returns at once, and a call while another thread waits, or re-initialises, sleeps a
//! millisecond at a time (`KeDelayExecutionThread`) until that ends (the SDK's own waits never
//! overlap). `reinitialize` and `wait_for_release` may race without harm to the kernel's
//! state: a wait that starts during a re-initialisation waits for the reopened reference. But
//! a returned wait then says only that the reference was run down at some point since the
//! call began: a racing re-initialisation may reopen it at once (and a waiter that missed the
//! run-down state runs the reopened reference down itself). A caller that frees what the
//! reference protects must not re-initialise it concurrently. `tests/loom_wait_state.rs`
//! checks this protocol's code with `loom`, over every interleaving of four two-thread
//! scenarios (not the kernel routines it calls).
#![no_std]

use core::cell::UnsafeCell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;

use ebpf_ext_sys::wdm::{
    EX_RUNDOWN_REF, EX_RUNDOWN_REF_CACHE_AWARE, ExAcquireRundownProtection,
    ExAcquireRundownProtectionCacheAware, ExAllocateCacheAwareRundownProtection,
    ExFreeCacheAwareRundownProtection, ExInitializeRundownProtection,
    ExReInitializeRundownProtection, ExReInitializeRundownProtectionCacheAware,
    ExReleaseRundownProtection, ExReleaseRundownProtectionCacheAware, ExRundownCompleted,
    ExRundownCompletedCacheAware, ExWaitForRundownProtectionRelease,
    ExWaitForRundownProtectionReleaseCacheAware, NonPagedPoolNx,
};
use ebpf_ext_sys::{Error, Result};

/// The atomics [`WaitState`] is written with (`tests/loom_wait_state.rs` gives it loom's).
mod sync {
    pub(crate) use core::sync::atomic::{AtomicU8, Ordering};

    /// One turn of a wait for another thread's wait or re-initialisation: the thread sleeps
    /// a millisecond (`KeDelayExecutionThread`), rather than spinning for as long as the
    /// references it waits for are held.
    pub(crate) fn spin() {
        let interval: i64 = -10_000;
        // SAFETY: waits run at ≤ APC_LEVEL (the crate's IRQL rules); the interval is a local
        // that outlives the call.
        let _ = unsafe {
            ebpf_ext_sys::wdm::KeDelayExecutionThread(
                ebpf_ext_sys::ntdef::KernelMode,
                0,
                &raw const interval,
            )
        };
    }
}

mod wait_state;

use wait_state::WaitState;

/// A [`WaitState`] for an initialised reference (usable in a `const`).
const fn open_state() -> WaitState {
    WaitState(sync::AtomicU8::new(WaitState::OPEN))
}

/// Run-down protection ([`EX_RUNDOWN_REF`]).
///
/// # Invariants
/// `inner` was initialised by `ExInitializeRundownProtection`; the kernel is its only writer
/// while guards exist (guards borrow `self`, so it cannot move meanwhile).
pub struct Rundown {
    inner: UnsafeCell<EX_RUNDOWN_REF>,
    state: WaitState,
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
            state: open_state(),
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
            state: open_state(),
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
    /// ([`ExWaitForRundownProtectionRelease`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exwaitforrundownprotectionrelease),
    /// then [`ExRundownCompleted`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exrundowncompleted)).
    /// Calling it again after completion returns at once; calling it while another thread
    /// waits sleeps until that wait ends (see the crate's "Waiting twice").
    ///
    /// # IRQL
    /// ≤ APC_LEVEL (it blocks).
    pub fn wait_for_release(&self) {
        self.state.wait(|| {
            // SAFETY: the reference is initialised (type invariant); this thread is its only
            // waiter (`WaitState`).
            unsafe { ExWaitForRundownProtectionRelease(self.inner.get()) };
            // SAFETY: as above, after the wait this thread ran.
            unsafe { ExRundownCompleted(self.inner.get()) };
        });
    }

    /// Whether [`Rundown::wait_for_release`] has completed.
    #[must_use]
    pub fn is_run_down(&self) -> bool {
        self.state.is_run_down()
    }

    /// Makes a run-down reference acquirable again
    /// ([`ExReInitializeRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotection)).
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if the wait has not completed (or another thread is
    /// re-initialising it).
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    ///
    /// # Locking
    /// None needed for the kernel's sake: one of two concurrent re-initialisations fails, and a
    /// wait that starts meanwhile waits for the reopened reference (guards cannot exist: it is
    /// run down). But see the crate's "Waiting twice": a wait racing this one may return just
    /// before the reference reopens.
    pub fn reinitialize(&self) -> Result {
        self.state.reopen(|| {
            // SAFETY: the reference has been run down, so no guard exists and none can be
            // taken.
            unsafe { ExReInitializeRundownProtection(self.inner.get()) };
        })
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
/// # IRQL
/// Dropped at ≤ APC_LEVEL (`ExFreeCacheAwareRundownProtection`), not from a DPC.
///
/// # Invariants
/// `inner` came from `ExAllocateCacheAwareRundownProtection` and is freed only in `Drop`.
pub struct CacheAwareRundown {
    inner: NonNull<EX_RUNDOWN_REF_CACHE_AWARE>,
    state: WaitState,
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
            state: open_state(),
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

    /// Refuses new references and blocks until every guard is dropped
    /// (`ExWaitForRundownProtectionReleaseCacheAware`, then `ExRundownCompletedCacheAware`).
    /// Calling it again after completion returns at once; calling it while another thread
    /// waits sleeps until that wait ends (see the crate's "Waiting twice").
    ///
    /// # IRQL
    /// ≤ APC_LEVEL (it blocks).
    pub fn wait_for_release(&self) {
        self.state.wait(|| {
            // SAFETY: `inner` is a live, initialised reference (type invariant); this thread
            // is its only waiter (`WaitState`).
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(self.inner.as_ptr()) };
            // SAFETY: as above, after the wait this thread ran.
            unsafe { ExRundownCompletedCacheAware(self.inner.as_ptr()) };
        });
    }

    /// Whether [`CacheAwareRundown::wait_for_release`] has completed.
    #[must_use]
    pub fn is_run_down(&self) -> bool {
        self.state.is_run_down()
    }

    /// Makes a run-down reference acquirable again
    /// ([`ExReInitializeRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotectioncacheaware)).
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if the wait has not completed (or another thread is
    /// re-initialising it).
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    ///
    /// # Locking
    /// None needed for the kernel's sake: one of two concurrent re-initialisations fails, and a
    /// wait that starts meanwhile waits for the reopened reference (guards cannot exist: it is
    /// run down). But see the crate's "Waiting twice": a wait racing this one may return just
    /// before the reference reopens.
    pub fn reinitialize(&self) -> Result {
        self.state.reopen(|| {
            // SAFETY: `inner` is live and run down, so no reference is held.
            unsafe { ExReInitializeRundownProtectionCacheAware(self.inner.as_ptr()) };
        })
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
