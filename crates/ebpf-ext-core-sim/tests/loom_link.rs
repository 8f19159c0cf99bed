//! A `loom` model of the handshake that lets a core-sim link's invocations read its program
//! without a lock (`ProgramSlot` in `src/link.rs`): an invocation counts itself in and then
//! reads the link's magic, running the program only if the link is live; the detach marks the
//! link dead, waits until no invocation is counted in, and then takes the program out.
//!
//! Properties checked over every interleaving loom explores:
//! - no invocation reads the program while the detach takes it out (loom's `UnsafeCell`
//!   tracking), and every invocation that runs finds it there;
//! - an invocation that finds the link dead does not run (the bug-check path).
//!
//! `src/link.rs` writes the handshake as `SeqCst` stores and loads, and relies on their single
//! total order. loom models `SeqCst` accesses as acquire/release only, under which that
//! store-then-load handshake is not ordered, so, as `ebpf-ext-hook`'s `loom_snapshot` does,
//! this model states the reads and the store of the magic as read-modify-write operations,
//! whose ordering loom models soundly.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ebpf-ext-core-sim --test loom_link --release`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

struct Link {
    live: AtomicBool,
    in_flight: AtomicUsize,
    /// The program: its result, while the link has it.
    program: UnsafeCell<Option<u32>>,
}

/// One invocation: `Some(result)` if it ran, `None` if it found the link dead.
fn invoke(link: &Link) -> Option<u32> {
    link.in_flight.fetch_add(1, SeqCst);
    if !link.live.fetch_or(false, SeqCst) {
        link.in_flight.fetch_sub(1, SeqCst);
        return None;
    }
    // SAFETY: loom checks that no write to the cell is concurrent with this read.
    let result = link.program.with(|program| unsafe { *program });
    link.in_flight.fetch_sub(1, SeqCst);
    Some(result.expect("a counted-in invocation of a live link finds its program"))
}

/// The link's detach: dead, drained, then the program taken out.
fn detach(link: &Link) -> Option<u32> {
    link.live.swap(false, SeqCst);
    while link.in_flight.fetch_add(0, SeqCst) != 0 {
        thread::yield_now();
    }
    // SAFETY: loom checks that no read of the cell is concurrent with this write.
    link.program
        .with_mut(|program| unsafe { (*program).take() })
}

#[test]
fn no_invocation_reads_the_program_while_the_detach_takes_it() {
    loom::model(|| {
        let link = Arc::new(Link {
            live: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            program: UnsafeCell::new(Some(7)),
        });
        let invokers: Vec<_> = (0..2)
            .map(|_| {
                let link = Arc::clone(&link);
                thread::spawn(move || invoke(&link))
            })
            .collect();
        assert_eq!(detach(&link), Some(7), "the detach takes the program out");
        for invoker in invokers {
            assert!(matches!(invoker.join().unwrap(), None | Some(7)));
        }
        assert_eq!(invoke(&link), None, "after the detach, nothing runs");
    });
}
