//! A `loom` model of the wait state that keeps the kernel's wait and re-initialisation from
//! overlapping on one rundown reference (`src/wait_state.rs`, included here as it is, on
//! loom's atomics instead of `core`'s).
//!
//! The kernel's reference is a loom `UnsafeCell`: the wait writes it (its wait block stays
//! there until the completion routine has run) and so does re-initialisation, so loom reports
//! any interleaving in which two of them overlap. Four two-thread scenarios (concurrent waits;
//! a wait racing a wait-then-reopen; a reopen racing a wait; two threads that each wait,
//! reopen and wait again), each over every interleaving loom explores, also check:
//! - concurrent waits run the kernel's wait once, and a waiter that returns is ordered after
//!   that wait (it reads the reference without a race);
//! - a wait returns only after a kernel wait that ended since it began (more waits have ended
//!   than there had been reopens when it began);
//! - a reopen succeeds only on a run-down reference, and two never overlap;
//! - a reference is run down exactly when it has been waited for once more than reopened.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ebpf-ext-rundown --test loom_wait_state --release`.
#![cfg(loom)]

/// What `wait_state.rs` is written against: loom's atomics, and a spin that lets loom run
/// the other threads.
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU8, Ordering};

    pub(crate) fn spin() {
        loom::thread::yield_now();
    }
}

#[path = "../src/wait_state.rs"]
mod wait_state;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use loom::thread;

use wait_state::WaitState;

/// A rundown reference as the wrappers drive it.
struct Reference {
    state: WaitState,
    /// The kernel's `EX_RUNDOWN_REF`, which a wait and a re-initialisation both write.
    kernel: UnsafeCell<u32>,
    /// Kernel waits that ended.
    waits: AtomicUsize,
    /// Re-initialisations that ended.
    reopens: AtomicUsize,
}

impl Reference {
    fn new() -> Self {
        Reference {
            state: WaitState(AtomicU8::new(WaitState::OPEN)),
            kernel: UnsafeCell::new(0),
            waits: AtomicUsize::new(0),
            reopens: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        let reopens_before = self.reopens.load(SeqCst);
        self.state.wait(|| {
            // SAFETY: loom checks that no other thread accesses the cell meanwhile.
            self.kernel.with_mut(|reference| unsafe { *reference += 1 });
            self.waits.fetch_add(1, SeqCst);
        });
        // Run down at some point since the call began (a racing reopen may have opened the
        // reference again by now): a wait ended after every reopen that had ended before.
        assert!(
            self.waits.load(SeqCst) > reopens_before,
            "returned without a wait since it began"
        );
    }

    /// Waits, then reads the reference as a waiter that goes on to tear down would.
    fn wait_then_read(&self) -> u32 {
        self.wait();
        // SAFETY: loom checks that this read is ordered after every write.
        self.kernel.with(|reference| unsafe { *reference })
    }

    fn reopen(&self) -> bool {
        self.state
            .reopen(|| {
                // SAFETY: as in `wait`.
                self.kernel.with_mut(|reference| unsafe { *reference = 0 });
                self.reopens.fetch_add(1, SeqCst);
            })
            .is_ok()
    }

    /// Once every thread is done: run down exactly when waited for once more than reopened.
    fn check_settled(&self) {
        let (waits, reopens) = (self.waits.load(SeqCst), self.reopens.load(SeqCst));
        assert_eq!(
            waits,
            reopens + usize::from(self.state.is_run_down()),
            "{waits} waits, {reopens} reopens"
        );
    }
}

#[test]
fn concurrent_waits_run_the_kernels_wait_once() {
    loom::model(|| {
        let reference = Arc::new(Reference::new());
        let other = Arc::clone(&reference);
        let waiter = thread::spawn(move || other.wait_then_read());
        assert_eq!(reference.wait_then_read(), 1, "the kernel's wait, seen");
        assert_eq!(waiter.join().expect("waiter"), 1, "the kernel's wait, seen");
        assert_eq!(reference.waits.load(SeqCst), 1);
        reference.check_settled();
    });
}

#[test]
fn a_reopen_racing_a_wait_never_overlaps_it() {
    loom::model(|| {
        let reference = Arc::new(Reference::new());
        let other = Arc::clone(&reference);
        let reopener = thread::spawn(move || {
            other.wait();
            other.reopen()
        });
        reference.wait();
        let succeeded = reopener.join().expect("reopener");
        let reopens = reference.reopens.load(SeqCst);
        assert_eq!(reopens, usize::from(succeeded));
        reference.check_settled();
    });
}

#[test]
fn a_reopen_before_the_run_down_is_refused() {
    loom::model(|| {
        let reference = Arc::new(Reference::new());
        let other = Arc::clone(&reference);
        let reopener = thread::spawn(move || other.reopen());
        reference.wait();
        if reopener.join().expect("reopener") {
            // It came after the run-down: the reference is open again.
            assert!(!reference.state.is_run_down());
        }
        reference.check_settled();
    });
}

#[test]
fn two_threads_waiting_reopening_and_waiting_again_never_overlap() {
    loom::model(|| {
        let reference = Arc::new(Reference::new());
        let cycle = |reference: &Reference| {
            reference.wait();
            let reopened = reference.reopen();
            reference.wait();
            reopened
        };
        let other = Arc::clone(&reference);
        let peer = thread::spawn(move || cycle(&other));
        let mine = cycle(&reference);
        let theirs = peer.join().expect("peer");
        assert_eq!(
            reference.reopens.load(SeqCst),
            usize::from(mine) + usize::from(theirs)
        );
        assert!(reference.state.is_run_down(), "both ended with a wait");
        reference.check_settled();
    });
}
