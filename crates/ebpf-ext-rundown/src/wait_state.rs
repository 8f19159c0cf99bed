//! Where a rundown reference's wait stands, so that the kernel's wait and re-initialisation
//! never overlap on one reference. Written against `crate::sync`'s atomics, which
//! `tests/loom_wait_state.rs` replaces with loom's to check every interleaving.

use ebpf_ext_sys::{Error, Result};

use crate::sync::{AtomicU8, Ordering, spin};

/// Open, being waited for by one thread, run down (the kernel's wait and its completion
/// routine both returned), or being re-initialised.
pub(crate) struct WaitState(pub(crate) AtomicU8);

impl WaitState {
    /// Initialised or re-initialised: acquires succeed.
    pub(crate) const OPEN: u8 = 0;
    /// One thread runs the kernel's wait.
    pub(crate) const WAITING: u8 = 1;
    /// The kernel's wait and its completion routine have returned.
    pub(crate) const RUN_DOWN: u8 = 2;
    /// One thread re-initialises the reference.
    pub(crate) const REOPENING: u8 = 3;

    /// Runs `wait` (the kernel's wait, then its completion routine) if no thread is waiting;
    /// otherwise polls (`spin`: a short sleep in the kernel) until that thread's wait, or a re-initialisation, has ended. Returns
    /// once run down.
    pub(crate) fn wait(&self, wait: impl FnOnce()) {
        loop {
            match self.0.compare_exchange(
                Self::OPEN,
                Self::WAITING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    wait();
                    self.0.store(Self::RUN_DOWN, Ordering::Release);
                    return;
                }
                Err(Self::RUN_DOWN) => return,
                // Another thread waits, or re-initialises (then this one waits anew).
                Err(_) => spin(),
            }
        }
    }

    /// Whether the reference is run down.
    pub(crate) fn is_run_down(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::RUN_DOWN
    }

    /// Runs `reinitialize` and opens the reference again, if it is run down; otherwise
    /// `Error::InvalidDeviceState`, doing nothing. A wait that starts meanwhile waits for the
    /// reopened reference.
    pub(crate) fn reopen(&self, reinitialize: impl FnOnce()) -> Result {
        if self
            .0
            .compare_exchange(
                Self::RUN_DOWN,
                Self::REOPENING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Err(Error::InvalidDeviceState);
        }
        reinitialize();
        self.0.store(Self::OPEN, Ordering::Release);
        Ok(())
    }
}
