//! The protocol of a [`DriverGlobal`](super::DriverGlobal): its state, and `set`, `get` and
//! `take` over it. On its own, written against [`sync`](super::sync), so that the `loom`
//! model (`tests/loom_global.rs`) runs this very code.

use core::ptr::{self, NonNull};

use ebpf_ext_sys::Error;

use super::sync::{AtomicPtr, AtomicU8, Ordering, PoolBox, PoolTag, Rundown, RundownGuard};

/// What a driver global holds: where `set` and `take` stand, the published value and the
/// rundown that guards it. All-zero bytes are its initial state ([`EMPTY`]; no value; an
/// initialised, not-run-down reference).
pub(crate) struct State<T> {
    pub(crate) phase: AtomicU8,
    pub(crate) value: AtomicPtr<T>,
    pub(crate) rundown: Rundown,
}

/// No value: `set` may begin.
pub(crate) const EMPTY: u8 = 0;
/// A `set` is publishing: no other `set` nor any `take` may begin.
const SETTING: u8 = 1;
/// A value is published: `take` may begin.
const SET: u8 = 2;
/// A `take` is running down the borrows and removing the value: no `set` may begin until it
/// is done (one that published between its wait and its removal would lend a value that
/// the `take` then returns to be dropped).
const TAKING: u8 = 3;

impl<T> State<T> {
    /// Moves `value` to pool tagged `tag` and publishes it. On failure `value` comes back.
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if a value is published, or another `set` or a `take`
    /// is running; [`Error::InsufficientResources`] if the allocation fails.
    pub(crate) fn set(&self, value: T, tag: PoolTag) -> core::result::Result<(), (Error, T)> {
        // Only from an empty global, and only one `set` at a time: a racing `set` that got
        // there first wins, and this value goes back to its caller (whose dropping it stops
        // whatever it runs).
        if self
            .phase
            .compare_exchange(EMPTY, SETTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err((Error::InvalidDeviceState, value));
        }
        let value = match PoolBox::try_new_or_return(value, tag) {
            Ok(value) => value,
            Err(value) => {
                self.phase.store(EMPTY, Ordering::Release);
                return Err((Error::InsufficientResources, value));
            }
        };
        self.value
            .store(value.into_raw().as_ptr(), Ordering::Release);
        // After a `take`, borrows may be taken again (Err only if never run down).
        let _ = self.rundown.reinitialize();
        self.phase.store(SET, Ordering::Release);
        Ok(())
    }

    /// Borrows the value, if published and not being taken: the rundown reference that
    /// keeps `take` from freeing it, and the value.
    pub(crate) fn get(&self) -> Option<(RundownGuard<'_>, NonNull<T>)> {
        let guard = self.rundown.try_acquire()?;
        let value = NonNull::new(self.value.load(Ordering::Acquire))?;
        Some((guard, value))
    }

    /// Refuses new borrows, waits for current ones to end, and returns the value (allocated
    /// with `tag`); `None` if none is published (or a `set` or another `take` is running).
    pub(crate) fn take(&self, tag: PoolTag) -> Option<PoolBox<T>> {
        // While TAKING no `set` begins, so no value is published and no borrow reopened
        // between the wait and the removal below.
        self.phase
            .compare_exchange(SET, TAKING, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.rundown.wait_for_release();
        let value = self.value.swap(ptr::null_mut(), Ordering::AcqRel);
        self.phase.store(EMPTY, Ordering::Release);
        let value = NonNull::new(value)?;
        // SAFETY: published by `set` from `PoolBox::into_raw` with this tag; no borrow exists
        // (rundown completed) and none can begin (run down, and no `set` could reopen it
        // while TAKING).
        Some(unsafe { PoolBox::from_raw(value, tag) })
    }
}
