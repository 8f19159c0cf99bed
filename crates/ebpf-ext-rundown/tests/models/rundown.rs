//! A `loom` model of a rundown reference, for the models of the lock-free protocols built on
//! one: `ebpf-ext-hook`'s snapshots (`tests/loom_snapshot.rs`) and the facade's driver global
//! (`tests/loom_global.rs`) include this file with `#[path]`.
//!
//! One counter and a "run-down active" flag: an acquire increments the counter and then
//! reads the flag; a wait sets the flag and then waits for the counter to drain. That is a
//! store-then-load handshake on two locations, which the kernel's reference orders with
//! interlocked (sequentially consistent) instructions. loom models SeqCst accesses as
//! acquire/release only, under which the handshake is not ordered and loom reports a false
//! alarm; so the flag is read and set with read-modify-write operations (`fetch_or(false)`,
//! `swap`), whose ordering loom models soundly.

use ebpf_ext_sys::{Error, Result};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// The rundown reference.
pub(crate) struct Rundown {
    count: AtomicUsize,
    active: AtomicBool,
}

/// A reference on a [`Rundown`], released on drop.
pub(crate) struct RundownGuard<'a>(&'a Rundown);

impl Drop for RundownGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, SeqCst);
    }
}

impl Rundown {
    /// An open reference with no holder.
    pub(crate) fn open() -> Self {
        Rundown {
            count: AtomicUsize::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// A reference unless the rundown is active.
    pub(crate) fn try_acquire(&self) -> Option<RundownGuard<'_>> {
        self.count.fetch_add(1, SeqCst);
        if !self.active.fetch_or(false, SeqCst) {
            return Some(RundownGuard(self));
        }
        self.count.fetch_sub(1, SeqCst);
        None
    }

    /// Refuses new references and waits for the held ones to go.
    pub(crate) fn wait_for_release(&self) {
        self.active.swap(true, SeqCst);
        while self.count.fetch_add(0, SeqCst) != 0 {
            loom::thread::yield_now();
        }
    }

    /// Reopens a run-down reference; an open one is an error, as the kernel's wrapper
    /// refuses it.
    pub(crate) fn reinitialize(&self) -> Result {
        if self.active.swap(false, SeqCst) {
            Ok(())
        } else {
            Err(Error::InvalidParameter)
        }
    }
}
