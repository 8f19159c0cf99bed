//! [`DriverGlobal`]: the one place a driver keeps its running state between `DriverEntry` and
//! unload, reachable from callbacks that have no context parameter (process notify routines,
//! dispatch routines).
//!
//! # One per driver, one per simulated kernel
//!
//! In a driver image a `static` is one per driver, which is what a driver global means. A
//! sample linked natively into a host test process shares its statics with every simulated
//! kernel of that process (plain `cargo test` runs tests as threads of one process), so on the
//! host the state lives in usersim's per-kernel storage instead, keyed by the global's address
//! (as `ebpf-ext-trace` keeps its registration): every kernel sees its own driver. This is the
//! facade's one platform `cfg` outside the driver-only glue.

use core::ops::Deref;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ebpf_ext_pool::{PoolBox, PoolTag};
use ebpf_ext_rundown::{Rundown, RundownGuard};
use ebpf_ext_sys::{Error, Result};

/// What a [`DriverGlobal`] holds: the published value and the rundown that guards it. All-zero
/// bytes are its initial state (no value; an initialised, not-run-down reference).
struct State<T> {
    value: AtomicPtr<T>,
    rundown: Rundown,
}

/// A pool-allocated value published by `DriverEntry`, borrowed by callbacks under rundown
/// protection ([`ebpf_ext_rundown::Rundown`]), and taken back at unload only once no borrow
/// is left.
///
/// - [`DriverGlobal::set`] publishes (PASSIVE_LEVEL).
/// - [`DriverGlobal::get`] borrows: one interlocked operation on a reference that is never
///   freed, so it is safe against a concurrent take; `None` before `set` and once `take` has
///   begun (≤ DISPATCH_LEVEL).
/// - [`DriverGlobal::take`] refuses new borrows, waits for the current ones to end, and
///   returns the value to drop (PASSIVE_LEVEL). After it, `set` may publish again (a driver
///   loaded twice).
///
/// # Locking
/// `set` and `take` are the driver's entry and unload: the I/O manager never runs them
/// concurrently for one driver, and they must not be called concurrently with each other.
pub struct DriverGlobal<T> {
    #[cfg(target_os = "windows")]
    state: State<T>,
    #[cfg(not(target_os = "windows"))]
    _value: core::marker::PhantomData<T>,
    tag: PoolTag,
}

// SAFETY: the value is shared as `&T` across threads (so `T: Sync`) and dropped on whichever
// thread calls `take` (so `T: Send`); the state is atomics and a rundown reference.
unsafe impl<T: Send + Sync> Sync for DriverGlobal<T> {}

impl<T: Send + Sync> DriverGlobal<T> {
    /// An empty global whose value will be allocated with `tag`.
    #[must_use]
    pub const fn new(tag: PoolTag) -> Self {
        DriverGlobal {
            #[cfg(target_os = "windows")]
            state: State {
                value: AtomicPtr::new(ptr::null_mut()),
                rundown: Rundown::new_static(),
            },
            #[cfg(not(target_os = "windows"))]
            _value: core::marker::PhantomData,
            tag,
        }
    }

    #[cfg(target_os = "windows")]
    #[inline]
    fn state(&self) -> Option<&State<T>> {
        Some(&self.state)
    }

    /// The state of the simulated kernel bound to this thread; `None` when none is bound.
    #[cfg(not(target_os = "windows"))]
    #[inline]
    fn state(&self) -> Option<&State<T>> {
        // SAFETY: all-zero is a valid `State` (see its documentation), only changed through
        // atomics and the kernel's rundown routines; `self` is the only user of its address as
        // a key; the reference lives no longer than `&self`, used while the thread's binding
        // keeps the kernel alive.
        unsafe { ebpf_ext_sys::host::kernel_local::<State<T>>(ptr::from_ref(self).cast()) }
    }

    /// Moves `value` to non-paged pool and publishes it. On failure `value` is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if a value is already published (or, on the host, no
    /// kernel is bound); [`Error::InsufficientResources`] if the allocation fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn set(&self, value: T) -> Result {
        let state = self.state().ok_or(Error::InvalidDeviceState)?;
        if !state.value.load(Ordering::Acquire).is_null() {
            return Err(Error::InvalidDeviceState);
        }
        let value = PoolBox::try_new(value, self.tag)?;
        let raw = value.into_raw();
        // Publish only into an empty global: a racing `set` that got there first wins, and
        // this value goes back to the pool (dropped, which stops whatever it runs).
        if state
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
        // After a `take`, borrows may be taken again (Err only if never run down).
        let _ = state.rundown.reinitialize();
        Ok(())
    }

    /// Borrows the value, if published and not being taken.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    #[must_use]
    pub fn get(&self) -> Option<GlobalRef<'_, T>> {
        let state = self.state()?;
        let guard = state.rundown.try_acquire()?;
        let value = ptr::NonNull::new(state.value.load(Ordering::Acquire))?;
        Some(GlobalRef {
            _guard: guard,
            value,
        })
    }

    /// Refuses new borrows, waits for current ones to end, and returns the value.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (it may block).
    #[must_use = "dropping the value stops what it runs"]
    pub fn take(&self) -> Option<PoolBox<T>> {
        let state = self.state()?;
        state.rundown.wait_for_release();
        let value = state.value.swap(ptr::null_mut(), Ordering::AcqRel);
        let value = ptr::NonNull::new(value)?;
        // SAFETY: published by `set` from `PoolBox::into_raw` with this tag, and no borrow
        // exists (rundown completed).
        Some(unsafe { PoolBox::from_raw(value, self.tag) })
    }
}

/// A borrow of a [`DriverGlobal`]'s value; releases its rundown reference on drop.
pub struct GlobalRef<'a, T> {
    _guard: RundownGuard<'a>,
    value: ptr::NonNull<T>,
}

impl<T> Deref for GlobalRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the rundown reference held by this borrow keeps `take` from freeing it.
        unsafe { self.value.as_ref() }
    }
}
