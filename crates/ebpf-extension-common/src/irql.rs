//! IRQL and timing helpers a hot path needs: [`RaisedIrql`], a guard that raises the IRQL and
//! lowers it back on drop, and [`Stopwatch`] over the performance counter.

use core::marker::PhantomData;

use ebpf_ext_sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_ext_sys::ntddk::KeQueryPerformanceCounter;
use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeLowerIrql};

/// The IRQL raised to a level until dropped (`KeRaiseIrql` / `KeLowerIrql`), as a network
/// stack runs its hooks at DISPATCH_LEVEL.
///
/// # Invariants
/// The IRQL was raised from `old` on this thread; the guard is not `Send`, so it is lowered on
/// the same thread. Guards nest: drop them in reverse order of creation (a scope does).
#[must_use = "the IRQL is lowered again when the guard is dropped"]
pub struct RaisedIrql {
    old: KIRQL,
    _not_send: PhantomData<*const ()>,
}

impl RaisedIrql {
    /// Raises the IRQL to DISPATCH_LEVEL; `None` if it is already above (raising to a lower
    /// level is a bug check).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use = "the IRQL is lowered again when the guard is dropped"]
    pub fn to_dispatch() -> Option<Self> {
        Self::to(DISPATCH_LEVEL)
    }

    /// Raises the IRQL to `level`; `None` if the current IRQL is above it.
    ///
    /// # IRQL
    /// ≤ `level`.
    #[must_use = "the IRQL is lowered again when the guard is dropped"]
    pub fn to(level: KIRQL) -> Option<Self> {
        if KeGetCurrentIrql() > level {
            return None;
        }
        // SAFETY: `level` is at or above the current IRQL (checked); the guard lowers it back
        // on this thread (it is not Send).
        let old = unsafe { KeRaiseIrql(level) };
        // INVARIANT: raised from `old` on this thread.
        Some(RaisedIrql {
            old,
            _not_send: PhantomData,
        })
    }
}

impl Drop for RaisedIrql {
    fn drop(&mut self) {
        // SAFETY: back to the level this guard raised from, on the raising thread.
        unsafe { KeLowerIrql(self.old) };
    }
}

/// Runs `f` `count` times and stops at its first error. With `stretch`, it runs at
/// DISPATCH_LEVEL, as a network stack runs its hooks, in stretches of that many calls with the
/// IRQL lowered in between, so a long run cannot hold the processor long enough for the DPC
/// watchdog.
///
/// # Errors
/// The first error `f` returns.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL; with `stretch`, `f` runs at DISPATCH_LEVEL.
pub fn repeat<E>(
    count: u64,
    stretch: Option<u64>,
    mut f: impl FnMut() -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    let mut remaining = count;
    while remaining > 0 {
        let chunk = stretch.map_or(remaining, |s| remaining.min(s.max(1)));
        let _raised = stretch.and_then(|_| RaisedIrql::to_dispatch());
        for _ in 0..chunk {
            f()?;
        }
        remaining -= chunk;
    }
    Ok(())
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
