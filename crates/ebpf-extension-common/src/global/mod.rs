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
#[cfg(target_os = "windows")]
use core::sync::atomic::{AtomicPtr, AtomicU8};

use ebpf_ext_pool::{PoolBox, PoolTag};
#[cfg(target_os = "windows")]
use ebpf_ext_rundown::Rundown;
use ebpf_ext_rundown::RundownGuard;
use ebpf_ext_sys::{Error, Result};

mod state;

#[cfg(target_os = "windows")]
use state::EMPTY;
use state::State;

/// What [`state`] is written against: the real atomics, pool and rundown reference (the
/// `loom` model gives it loom's and its own).
mod sync {
    pub(super) use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

    pub(super) use ebpf_ext_pool::{PoolBox, PoolTag};
    pub(super) use ebpf_ext_rundown::{Rundown, RundownGuard};
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
/// A driver global is a `static`: `set`, `get` and `take` take `&'static self`, so a value
/// on the stack or in a heap allocation, which would leak what it holds when dropped (there is
/// no `Drop`) and whose address another value could later reuse, cannot publish anything.
///
/// ```compile_fail,E0597
/// # use ebpf_extension_common::global::DriverGlobal;
/// # use ebpf_extension_common::pool::PoolTag;
/// let local = DriverGlobal::<u64>::new(PoolTag::new(*b"Test"));
/// let _ = local.set(1);
/// ```
///
/// The protocol is `state.rs`, modelled with `loom` in `tests/loom_global.rs`.
///
/// # Locking
/// `set` and `take` are the driver's entry and unload, which the I/O manager never runs
/// concurrently for one driver. Called concurrently anyway, they exclude each other through
/// an atomic phase (empty, setting, set, taking): a `set` that finds another `set` or a
/// `take` running is refused, and a `take` that finds nothing published, or a `set` running,
/// returns `None`.
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
                phase: AtomicU8::new(EMPTY),
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
    fn state(&'static self) -> Option<&'static State<T>> {
        Some(&self.state)
    }

    /// The state of the simulated kernel bound to this thread; `None` when none is bound.
    #[cfg(not(target_os = "windows"))]
    #[inline]
    fn state(&'static self) -> Option<&'static State<T>> {
        // SAFETY: all-zero is a valid `State` (see its documentation), only changed through
        // atomics and the kernel's rundown routines; `self` is a static (`&'static self`), so
        // no other value ever has its address to use as a key; the reference is used while
        // the thread's binding keeps the kernel alive.
        unsafe { ebpf_ext_sys::host::kernel_local::<State<T>>(ptr::from_ref(self).cast()) }
    }

    /// Moves `value` to non-paged pool and publishes it. On failure `value` is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidDeviceState`] if a value is already published, or another `set` or a
    /// `take` is running (or, on the host, no kernel is bound);
    /// [`Error::InsufficientResources`] if the allocation fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn set(&'static self, value: T) -> Result {
        self.set_or_return(value).map_err(|(e, _)| e)
    }

    /// [`DriverGlobal::set`], handing `value` back on failure (so that the caller can trace
    /// the failure before dropping it).
    ///
    /// # Errors
    /// As [`DriverGlobal::set`], with the value.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn set_or_return(&'static self, value: T) -> core::result::Result<(), (Error, T)> {
        match self.state() {
            Some(state) => state.set(value, self.tag),
            None => Err((Error::InvalidDeviceState, value)),
        }
    }

    /// Borrows the value, if published and not being taken.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    #[must_use]
    pub fn get(&'static self) -> Option<GlobalRef<'static, T>> {
        let (guard, value) = self.state()?.get()?;
        Some(GlobalRef {
            _guard: guard,
            value,
        })
    }

    /// Refuses new borrows, waits for current ones to end, and returns the value; `None` if
    /// none is published (or a `set` or another `take` is running).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (it may block).
    #[must_use = "dropping the value stops what it runs"]
    pub fn take(&'static self) -> Option<PoolBox<T>> {
        self.state()?.take(self.tag)
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
