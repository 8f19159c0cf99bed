//! IRQL and timing helpers a hot path needs: [`at_dispatch`] and [`at_level`], which run a
//! closure with the IRQL raised and lower it back when the closure returns; [`Stopwatch`]
//! over the performance counter; and [`current_processor`].
//!
//! The raise is scoped to a closure rather than handed out as a guard value: a guard could be
//! dropped out of order (lowering below a level another raise still needs) or moved into a
//! closure that must return at the IRQL it was called at, such as a hook batch's.

use core::marker::PhantomData;

use ebpf_ext_sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_ext_sys::ntddk::{KeGetCurrentProcessorNumberEx, KeQueryPerformanceCounter};
use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeLowerIrql};

/// The IRQL raised from `old` until dropped; private, so that only the scoped functions below
/// hold one.
///
/// # Invariants
/// The IRQL was raised from `old` on this thread, and is lowered on drop at the end of the
/// scope that raised it (the guard never leaves [`at_level`]; not `Send`).
struct RaisedIrql {
    old: KIRQL,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RaisedIrql {
    fn drop(&mut self) {
        // SAFETY: back to the level this guard raised from, on the raising thread, at the end
        // of the scope that raised it (raises inside it have been undone by then).
        unsafe { KeLowerIrql(self.old) };
    }
}

/// Runs `f` at DISPATCH_LEVEL, as a network stack runs its hooks, and lowers the IRQL back
/// when it returns (or unwinds); `None`, without running `f`, if the IRQL is already above
/// DISPATCH_LEVEL (raising to a lower level is a bug check).
///
/// # IRQL
/// ≤ DISPATCH_LEVEL; `f` runs at DISPATCH_LEVEL.
pub fn at_dispatch<R>(f: impl FnOnce() -> R) -> Option<R> {
    at_level(DISPATCH_LEVEL, f)
}

/// Runs `f` with the IRQL raised to `level` (`KeRaiseIrql`) and lowers it back
/// (`KeLowerIrql`) when `f` returns or unwinds; `None`, without running `f`, if the current
/// IRQL is above `level`, or `level` is above DISPATCH_LEVEL (device IRQLs, where neither
/// the pool, nor rundown, nor tracing, nor a hook may be used, are not the SDK's to offer;
/// and a level above HIGH_LEVEL is no IRQL at all).
///
/// # IRQL
/// ≤ `level` ≤ DISPATCH_LEVEL; `f` runs at `level`.
pub fn at_level<R>(level: KIRQL, f: impl FnOnce() -> R) -> Option<R> {
    if level > DISPATCH_LEVEL || KeGetCurrentIrql() > level {
        return None;
    }
    // SAFETY: `level` is at or above the current IRQL and at most DISPATCH_LEVEL (checked);
    // the guard lowers it back at the end of this scope, on this thread.
    let old = unsafe { KeRaiseIrql(level) };
    // INVARIANT: raised from `old` on this thread; dropped at the end of this scope.
    let _raised = RaisedIrql {
        old,
        _not_send: PhantomData,
    };
    Some(f())
}

/// Runs `f` `count` times and stops at its first error. With `stretch`, it runs at
/// DISPATCH_LEVEL, as a network stack runs its hooks, in stretches of that many calls with the
/// IRQL lowered to the caller's in between, so that a long run called below DISPATCH_LEVEL
/// cannot hold the processor long enough for the DPC watchdog.
///
/// # Errors
/// The first error `f` returns.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL; with `stretch`, `f` runs at DISPATCH_LEVEL. Called at DISPATCH_LEVEL,
/// there is nothing to lower to between stretches: the whole run holds the processor, so
/// keep `count` short there.
pub fn repeat<E>(
    count: u64,
    stretch: Option<u64>,
    mut f: impl FnMut() -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    let mut remaining = count;
    while remaining > 0 {
        let chunk = stretch.map_or(remaining, |s| remaining.min(s.max(1)));
        let mut run = || (0..chunk).try_for_each(|_| f());
        match stretch {
            // Already above DISPATCH_LEVEL: the stretch runs where it is.
            Some(_) => at_dispatch(&mut run).unwrap_or_else(run)?,
            None => run()?,
        }
        remaining -= chunk;
    }
    Ok(())
}

/// The system-wide number of the processor the caller runs on
/// (`KeGetCurrentProcessorNumberEx`). Below DISPATCH_LEVEL the thread may move to another
/// processor as soon as this returns.
///
/// # IRQL
/// Any level.
#[must_use]
pub fn current_processor() -> u32 {
    // SAFETY: NULL is allowed for the group-relative number, which is not wanted.
    unsafe { KeGetCurrentProcessorNumberEx(core::ptr::null_mut()) }
}

/// A stopwatch over `KeQueryPerformanceCounter`.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    start: i64,
    frequency: u64,
}

impl Stopwatch {
    /// Starts timing now.
    ///
    /// # IRQL
    /// Any level.
    #[must_use]
    pub fn start() -> Self {
        let mut frequency = 0i64;
        // SAFETY: a writable out parameter for the frequency.
        let start = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
        Stopwatch {
            start,
            frequency: frequency.unsigned_abs(),
        }
    }

    /// Performance-counter ticks since [`Stopwatch::start`].
    ///
    /// # IRQL
    /// Any level.
    #[must_use]
    pub fn elapsed_ticks(&self) -> u64 {
        // SAFETY: NULL frequency is allowed.
        let now = unsafe { KeQueryPerformanceCounter(core::ptr::null_mut()) };
        now.abs_diff(self.start)
    }

    /// Ticks per second.
    #[must_use]
    pub fn frequency(&self) -> u64 {
        self.frequency
    }
}
