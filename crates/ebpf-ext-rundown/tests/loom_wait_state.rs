//! A `loom` model of the wait state that keeps the kernel's wait and re-initialisation from
//! overlapping on one rundown reference (`src/wait_state.rs`, included here as it is, on
//! loom's atomics instead of `core`'s).
//!
//! The kernel's reference is a loom `UnsafeCell`: the wait writes it (its wait block stays
//! there until the completion routine has run) and so does re-initialisation, so loom reports
//! any interleaving in which two of them overlap. Also checked over every interleaving:
//! - concurrent waits run the kernel's wait once, and each returns only after it ended;
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
        self.state.wait(|| {
            // SAFETY: loom checks that no other thread accesses the cell meanwhile.
            self.kernel.with_mut(|reference| unsafe { *reference += 1 });
            self.waits.fetch_add(1, SeqCst);
        });
        // Run down at some point since the call began (a racing reopen may have opened the
        // reference again by now).
        assert!(
            self.waits.load(SeqCst) > 0,
            "returned before any wait ended"
        );
    }

    fn reopen(&self) -> bool {
        self.state.reopen(|| {
            // SAFETY: as in `wait`.
            self.kernel.with_mut(|reference| unsafe { *reference = 0 });
            self.reopens.fetch_add(1, SeqCst);
        })
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
        let waiter = thread::spawn(move || other.wait());
        reference.wait();
        waiter.join().expect("waiter");
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
