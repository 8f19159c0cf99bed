//! A `loom` model of a driver global's protocol: `src/global/state.rs` itself, included here
//! as it is, written against a `sync` of loom's atomics, a pool box on the heap that records
//! whether its value was freed, and `ebpf-ext-rundown`'s model of the rundown reference
//! (`tests/models/rundown.rs`).
//!
//! Properties checked over every interleaving loom explores:
//! - a borrow (`get`) never reads a value `take` has returned to be freed, and a `take` that
//!   returns a value has waited out every borrow of it;
//! - a value is taken at most once, and a value `set` published is the one `take` returns;
//! - `set` and `take` racing each other (which the I/O manager never does for one driver, but
//!   the protocol allows) leave the global either empty or holding exactly one value, and a
//!   later `take` finds it;
//! - after a `take`, a `set` publishes again and borrows see the new value.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ebpf-extension-common --test loom_global --release`.
#![cfg(loom)]
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "a host test"
)]

/// What `state.rs` is written against, over loom.
#[allow(
    clippy::unnecessary_wraps,
    reason = "stand-ins with the signatures of the real items"
)]
mod sync {
    use core::ops::Deref;
    use core::ptr::NonNull;

    use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};

    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

    /// A pool tag (unused here).
    #[derive(Clone, Copy)]
    pub(crate) struct PoolTag;

    /// A pool box's allocation: its value and whether the box was dropped (the value given
    /// up). Never deallocated, so that a late reader's check reads a live mark.
    #[repr(C)]
    struct Slot<T> {
        freed: AtomicBool,
        value: T,
    }

    /// A pool box, on the heap.
    pub(crate) struct PoolBox<T>(NonNull<Slot<T>>);

    fn slot_of<T>(value: NonNull<T>) -> NonNull<Slot<T>> {
        // SAFETY: `value` is the `value` field of a `Slot<T>` (the one pointer `into_raw` and
        // `State::get` hand out).
        unsafe { value.byte_sub(core::mem::offset_of!(Slot<T>, value)) }.cast()
    }

    /// Whether the box whose value `value` is has been dropped.
    pub(crate) fn freed<T>(value: NonNull<T>) -> bool {
        // SAFETY: slots are never deallocated.
        unsafe { slot_of(value).as_ref() }.freed.load(SeqCst)
    }

    impl<T> PoolBox<T> {
        pub(crate) fn try_new_or_return(value: T, _: PoolTag) -> core::result::Result<Self, T> {
            let slot = Box::new(Slot {
                freed: AtomicBool::new(false),
                value,
            });
            Ok(PoolBox(NonNull::from(Box::leak(slot))))
        }

        pub(crate) fn into_raw(self) -> NonNull<T> {
            // SAFETY: a live slot of this box.
            let value = unsafe { &raw mut (*self.0.as_ptr()).value };
            core::mem::forget(self);
            NonNull::new(value).expect("a field of a live slot")
        }

        /// # Safety
        /// `ptr` came from `into_raw`, once.
        pub(crate) unsafe fn from_raw(ptr: NonNull<T>, _: PoolTag) -> Self {
            PoolBox(slot_of(ptr))
        }
    }

    impl<T> Deref for PoolBox<T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: never deallocated.
            unsafe { &self.0.as_ref().value }
        }
    }

    impl<T> Drop for PoolBox<T> {
        fn drop(&mut self) {
            // SAFETY: never deallocated.
            let freed = unsafe { &self.0.as_ref().freed };
            assert!(!freed.swap(true, SeqCst), "a value freed twice");
        }
    }

    pub(crate) use crate::rundown::{Rundown, RundownGuard};
}

#[path = "../../ebpf-ext-rundown/tests/models/rundown.rs"]
mod rundown;
#[path = "../src/global/state.rs"]
mod state;

use core::ptr;

use loom::sync::Arc;
use loom::thread;
use state::{EMPTY, State};
use sync::{AtomicPtr, AtomicU8, PoolTag, Rundown, freed};

fn empty() -> Arc<State<u32>> {
    Arc::new(State {
        phase: AtomicU8::new(EMPTY),
        value: AtomicPtr::new(ptr::null_mut()),
        rundown: Rundown::open(),
    })
}

/// A borrow: the value it saw, checked not freed for as long as the borrow lasts.
fn borrow(state: &State<u32>) -> Option<u32> {
    let (guard, value) = state.get()?;
    assert!(!freed(value), "a borrow reached a taken value");
    loom::thread::yield_now();
    assert!(!freed(value), "a value was taken under a borrow");
    // SAFETY: the model's values are never deallocated.
    let seen = unsafe { *value.as_ref() };
    drop(guard);
    Some(seen)
}

fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}

#[test]
fn a_take_waits_out_every_borrow_and_frees_the_value_once() {
    bounded().check(|| {
        let state = empty();
        state.set(7, PoolTag).expect("set");
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                thread::spawn(move || borrow(&state))
            })
            .collect();
        let taken = state.take(PoolTag).expect("taken");
        assert_eq!(*taken, 7);
        drop(taken);
        for reader in readers {
            let seen = reader.join().unwrap();
            assert!(seen.is_none() || seen == Some(7), "{seen:?}");
        }
        assert!(state.take(PoolTag).is_none(), "taken once");
        assert!(borrow(&state).is_none(), "no borrow after the take");
    });
}

#[test]
fn set_and_take_racing_leave_one_value_or_none() {
    bounded().check(|| {
        let state = empty();
        state.set(1, PoolTag).expect("set");
        let taker = {
            let state = Arc::clone(&state);
            thread::spawn(move || state.take(PoolTag).map(|v| *v))
        };
        let setter = {
            let state = Arc::clone(&state);
            thread::spawn(move || state.set(2, PoolTag).is_ok())
        };
        let reader = {
            let state = Arc::clone(&state);
            thread::spawn(move || borrow(&state))
        };
        let took = taker.join().unwrap();
        let set = setter.join().unwrap();
        let seen = reader.join().unwrap();
        assert!(matches!(seen, None | Some(1 | 2)), "{seen:?}");
        // Whatever the order, the global ends with exactly the value published last.
        let left = state.take(PoolTag).map(|v| *v);
        match (took, set) {
            (Some(1), true) => assert_eq!(left, Some(2)),
            (Some(1), false) => assert_eq!(left, None),
            (None, false) => assert_eq!(left, Some(1)),
            other => panic!("impossible: {other:?} then {left:?}"),
        }
    });
}

#[test]
fn after_a_take_a_set_publishes_again() {
    bounded().check(|| {
        let state = empty();
        state.set(1, PoolTag).expect("set");
        let reader = {
            let state = Arc::clone(&state);
            thread::spawn(move || (borrow(&state), borrow(&state)))
        };
        drop(state.take(PoolTag).expect("taken"));
        state.set(2, PoolTag).expect("set again");
        let (first, second) = reader.join().unwrap();
        for seen in [first, second] {
            assert!(matches!(seen, None | Some(1 | 2)), "{seen:?}");
        }
        assert_eq!(borrow(&state), Some(2));
        assert_eq!(state.take(PoolTag).map(|v| *v), Some(2));
    });
}
