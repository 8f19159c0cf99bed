//! A `loom` model of the hook provider's snapshot protocol: `src/snapshot.rs` itself,
//! included here as it is, written against a `sync` of loom's atomics and cells, a pool array
//! on the heap, and a model of the cache-aware rundown reference (one counter, whose acquire
//! increments it and then checks the "run-down active" flag, and whose wait sets the flag and
//! then waits for the counter to drain).
//!
//! Properties checked over every interleaving loom explores:
//! - a reader never reads a slot while the writer writes it (loom's cell tracking: the
//!   reader's borrow of the entries lasts as long as its `SnapshotGuard`);
//! - once the writer's publish has returned, no reader can still use the entry it removed
//!   (the writer "frees" it and readers assert it is alive);
//! - with two publishes, the second refills the slot the first retired, while a reader may
//!   still hold that slot's index from before the first: the refill never races its read,
//!   and the reader never reaches either freed client;
//! - two readers at once, each on either slot, never block each other or the writer's
//!   retirement;
//! - the detach lifecycle as the hook provider runs it: its first step is `src/detaching.rs`
//!   itself (the detaching flag stored `Relaxed`, then the work item queued), then, as
//!   `client.rs` and `attach.rs` do it, the worker's publish of the live
//!   clients under the writer lock, then the free, racing an attach's publish under the same
//!   lock and a reader. The attach may keep the detaching client one snapshot longer, but the
//!   worker's publish always leaves it out, and no reader reaches it once freed.
//!
//! The rundown reference's model is `ebpf-ext-rundown`'s `tests/models/rundown.rs` (it
//! says why its flag is read and set with read-modify-write operations).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ebpf-ext-hook --test loom_snapshot --release`.
#![cfg(loom)]
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "a host test"
)]

/// What `snapshot.rs` is written against, over loom.
#[allow(
    clippy::unused_self,
    clippy::unnecessary_wraps,
    reason = "stand-ins with the signatures of the real items"
)]
mod sync {
    use core::marker::PhantomData;
    use core::ops::{Deref, DerefMut};

    use ebpf_ext_sys::Result;

    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A turn of a reader's retry: lets loom run the writer.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    /// A pool tag (unused here).
    #[derive(Clone, Copy)]
    pub(crate) struct Tag;

    impl Tag {
        pub(crate) fn value(self) -> u32 {
            0
        }
    }

    /// A pool array, on the heap.
    pub(crate) struct Array<T>(Vec<T>);

    impl<T: Default> Array<T> {
        pub(crate) fn try_new(len: usize, _: Tag) -> Result<Self> {
            Ok(Array((0..len).map(|_| T::default()).collect()))
        }
    }

    impl<T> Deref for Array<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            &self.0
        }
    }

    impl<T> DerefMut for Array<T> {
        fn deref_mut(&mut self) -> &mut [T] {
            &mut self.0
        }
    }

    pub(crate) use crate::rundown::{Rundown, RundownGuard};

    /// The cache-aware reference's constructor, over the model (`tests/models/rundown.rs`
    /// of `ebpf-ext-rundown`).
    impl Rundown {
        pub(crate) fn new(_: u32) -> Result<Self> {
            Ok(Rundown::open())
        }
    }

    /// A cell whose borrows loom tracks until their tokens drop.
    pub(crate) struct Cell<T>(loom::cell::UnsafeCell<T>);

    /// A shared borrow's token: loom sees the access until it drops.
    pub(crate) struct Shared<'a, T> {
        _tracked: loom::cell::ConstPtr<T>,
        _borrow: PhantomData<&'a T>,
    }

    /// An exclusive borrow's token.
    pub(crate) struct Exclusive<'a, T> {
        _tracked: loom::cell::MutPtr<T>,
        _borrow: PhantomData<&'a mut T>,
    }

    impl<T> Cell<T> {
        pub(crate) fn new(value: T) -> Self {
            Cell(loom::cell::UnsafeCell::new(value))
        }

        pub(crate) unsafe fn borrow(&self) -> (Shared<'_, T>, &T) {
            let tracked = self.0.get();
            let value = tracked.with(|p| p);
            let token = Shared {
                _tracked: tracked,
                _borrow: PhantomData,
            };
            // SAFETY: the caller's contract; loom checks it while the token lives.
            (token, unsafe { &*value })
        }

        #[expect(clippy::mut_from_ref, reason = "an UnsafeCell's borrow")]
        pub(crate) unsafe fn borrow_mut(&self) -> (Exclusive<'_, T>, &mut T) {
            let tracked = self.0.get_mut();
            let value = tracked.with(|p| p);
            let token = Exclusive {
                _tracked: tracked,
                _borrow: PhantomData,
            };
            // SAFETY: the caller's contract; loom checks it while the token lives.
            (token, unsafe { &mut *value })
        }
    }
}

#[path = "../src/detaching.rs"]
#[allow(dead_code, reason = "the model uses the one function")]
mod detaching;
#[path = "../../ebpf-ext-rundown/tests/models/rundown.rs"]
mod rundown;
#[path = "../src/snapshot.rs"]
#[allow(dead_code, reason = "the model uses the reader and the writer only")]
mod snapshot;

use loom::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;

use snapshot::Snapshots;

/// The published set and the clients its entries name (by index): alive until the writer
/// frees them, and marked detaching as the hook provider marks them (`Relaxed`).
struct Model {
    snapshots: Snapshots<usize>,
    alive: [AtomicBool; 3],
    detaching: [AtomicBool; 3],
    /// The provider's writer lock.
    writer: Mutex<()>,
}

/// A reader: holds the current snapshot, checks every client it names is alive, and says
/// which it saw.
fn read(model: &Model) -> Vec<usize> {
    let snapshot = model.snapshots.read();
    for &client in snapshot.entries() {
        assert!(
            model.alive[client].load(SeqCst),
            "reader reached a freed client"
        );
    }
    snapshot.entries().to_vec()
}

/// The writer: publishes a snapshot naming only `client`.
fn publish(model: &Model, client: usize) {
    // SAFETY: the test's main thread is the one writer, and nothing here is at DISPATCH_LEVEL.
    unsafe {
        model.snapshots.publish(|_, new| {
            new[0] = client;
            1
        });
    }
}

/// The hook provider's republish, under its writer lock: the live clients of the current
/// snapshot (the flag read `Relaxed`, as `client::live` reads it), then `added`.
fn republish(model: &Model, added: Option<usize>) {
    let _writer = model.writer.lock().unwrap();
    // SAFETY: the writer lock is held, and nothing here is at DISPATCH_LEVEL.
    unsafe {
        model.snapshots.publish(|old, new| {
            let live = old
                .iter()
                .copied()
                .filter(|&client| !model.detaching[client].load(Relaxed));
            let mut n = 0;
            for client in live.chain(added) {
                new[n] = client;
                n += 1;
            }
            n
        });
    }
}

/// A model whose current snapshot names client 0, clients 0..3 alive, with room for two.
fn model() -> Arc<Model> {
    let model = Arc::new(Model {
        snapshots: Snapshots::new(2, sync::Tag).expect("two slots"),
        alive: core::array::from_fn(|_| AtomicBool::new(true)),
        detaching: core::array::from_fn(|_| AtomicBool::new(false)),
        writer: Mutex::new(()),
    });
    publish(&model, 0);
    model
}

#[test]
fn readers_never_see_a_retired_snapshot() {
    loom::model(|| {
        let model = model();
        let reader = {
            let model = Arc::clone(&model);
            thread::spawn(move || read(&model))
        };
        // Detach client 0: publish a snapshot naming client 1, then free client 0.
        publish(&model, 1);
        model.alive[0].store(false, SeqCst);
        let seen = reader.join().unwrap();
        assert!(seen == [0] || seen == [1], "{seen:?}");
        // A read after the publish sees only the new snapshot.
        assert_eq!(read(&model), [1]);
    });
}

#[test]
fn a_retired_slot_is_refilled_only_once_no_reader_can_reach_it() {
    loom::model(|| {
        let model = model();
        let reader = {
            let model = Arc::clone(&model);
            thread::spawn(move || read(&model))
        };
        // Detach client 0 (the other slot now names client 1), then client 1 (the first
        // slot, refilled, names client 2): each freed once its publish returns.
        publish(&model, 1);
        model.alive[0].store(false, SeqCst);
        publish(&model, 2);
        model.alive[1].store(false, SeqCst);
        let seen = reader.join().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(read(&model), [2]);
    });
}

/// A model of three or more threads, at most three preemptions per execution: unbounded,
/// the readers' retry loops make the search run for hours; bounded, it takes seconds and
/// still finds the mistakes checked for (queueing the detach's work before storing its
/// flag fails the lifecycle test: the worker's publish keeps the client and a reader
/// reaches it freed).
fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}

#[test]
fn two_readers_at_once_never_reach_a_freed_client() {
    bounded().check(|| {
        let model = model();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let model = Arc::clone(&model);
                thread::spawn(move || read(&model))
            })
            .collect();
        publish(&model, 1);
        model.alive[0].store(false, SeqCst);
        for reader in readers {
            let seen = reader.join().unwrap();
            assert!(seen == [0] || seen == [1], "{seen:?}");
        }
    });
}

#[test]
fn a_detaching_client_is_left_out_by_its_worker_even_when_an_attach_races_it() {
    bounded().check(|| {
        let model = model();
        let reader = {
            let model = Arc::clone(&model);
            thread::spawn(move || read(&model))
        };
        let attach = {
            let model = Arc::clone(&model);
            thread::spawn(move || republish(&model, Some(1)))
        };
        // NMR detaches client 0: the hook provider's own first step (`src/detaching.rs`),
        // which queues the work item (a new thread here) once the client is marked.
        let mut worker = None;
        detaching::mark_then_queue(&model.detaching[0], || {
            let model = Arc::clone(&model);
            worker = Some(thread::spawn(move || {
                republish(&model, None);
                // The detach completes; NMR frees the client.
                model.alive[0].store(false, SeqCst);
            }));
        });
        let worker = worker.expect("queued");
        let seen = reader.join().unwrap();
        assert!(seen.len() <= 2, "{seen:?}");
        attach.join().unwrap();
        worker.join().unwrap();
        assert_eq!(
            read(&model),
            [1],
            "the worker's publish left the detached client out"
        );
    });
}
