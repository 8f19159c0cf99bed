//! A `loom` model of the hook provider's snapshot protocol (see `src/snapshot.rs`): two slots,
//! each guarded by a rundown reference whose acquire increments a counter and then checks the
//! "run-down active" flag, and whose wait sets the flag and then waits for the counter to drain
//! (the cache-aware reference's protocol, one counter here).
//!
//! Properties checked over every interleaving loom explores:
//! - a reader never reads a slot while the writer writes it (loom's `UnsafeCell` tracking);
//! - once the writer's publish has returned, no reader can still use the entry it removed
//!   (the writer "frees" it and readers assert it is alive);
//! - with two publishes, the second refills the slot the first retired, while a reader may
//!   still hold that slot's index from before the first: the refill never races its read,
//!   and the reader never reaches either freed client.
//!
//! The rundown's acquire/wait pair is a store-then-load handshake on two locations (acquire:
//! increment the counter, then read the flag; wait: set the flag, then read the counter). The
//! implementation relies on sequentially consistent ordering for it (a single total order of
//! SeqCst operations, and interlocked instructions in the kernel). loom models SeqCst accesses
//! as acquire/release only, under which that handshake is not ordered and loom reports a false
//! alarm; so this model states the same handshake with read-modify-write operations on the flag
//! (`fetch_or(0)` to read, `swap` to set), whose ordering loom models soundly.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ebpf-ext-hook --test loom_snapshot --release`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

struct Rundown {
    count: AtomicUsize,
    active: AtomicBool,
}

impl Rundown {
    fn new(active: bool) -> Self {
        Rundown {
            count: AtomicUsize::new(0),
            active: AtomicBool::new(active),
        }
    }
    fn try_acquire(&self) -> bool {
        self.count.fetch_add(1, SeqCst);
        if !self.active.fetch_or(false, SeqCst) {
            return true;
        }
        self.count.fetch_sub(1, SeqCst);
        false
    }
    fn release(&self) {
        self.count.fetch_sub(1, SeqCst);
    }
    fn wait(&self) {
        self.active.swap(true, SeqCst);
        while self.count.fetch_add(0, SeqCst) != 0 {
            thread::yield_now();
        }
    }
    fn reinitialize(&self) {
        self.active.swap(false, SeqCst);
    }
}

/// An "attached client": alive until the writer frees it.
struct Client {
    alive: AtomicBool,
}

struct Slot {
    rundown: Rundown,
    /// Index into `clients` of the one client this snapshot holds.
    entry: UnsafeCell<usize>,
}

struct Model {
    slots: [Slot; 2],
    current: AtomicUsize,
    clients: [Client; 3],
}

fn read(model: &Model) -> usize {
    loop {
        let index = model.current.load(SeqCst);
        let slot = &model.slots[index];
        if slot.rundown.try_acquire() {
            let client = slot.entry.with(|e| unsafe { *e });
            assert!(
                model.clients[client].alive.load(SeqCst),
                "reader reached a freed client"
            );
            slot.rundown.release();
            return client;
        }
        thread::yield_now();
    }
}

fn publish(model: &Model, client: usize) {
    let old = model.current.load(SeqCst);
    let new = 1 - old;
    model.slots[new].entry.with_mut(|e| unsafe { *e = client });
    model.slots[new].rundown.reinitialize();
    model.current.store(new, SeqCst);
    model.slots[old].rundown.wait();
}

fn model(clients: usize) -> Arc<Model> {
    Arc::new(Model {
        slots: [
            Slot {
                rundown: Rundown::new(false),
                entry: UnsafeCell::new(0),
            },
            Slot {
                rundown: Rundown::new(true),
                entry: UnsafeCell::new(0),
            },
        ],
        current: AtomicUsize::new(0),
        clients: core::array::from_fn(|i| Client {
            alive: AtomicBool::new(i < clients),
        }),
    })
}

#[test]
fn a_retired_slot_is_refilled_only_once_no_reader_can_reach_it() {
    loom::model(|| {
        let model = model(3);
        let reader = {
            let model = Arc::clone(&model);
            thread::spawn(move || read(&model))
        };
        // Detach client 0 (slot 1 now holds client 1), then client 1 (slot 0, refilled,
        // holds client 2): each freed once its publish returns.
        publish(&model, 1);
        model.clients[0].alive.store(false, SeqCst);
        publish(&model, 2);
        model.clients[1].alive.store(false, SeqCst);
        let seen = reader.join().unwrap();
        assert!(seen <= 2);
        assert_eq!(read(&model), 2);
    });
}

#[test]
fn readers_never_see_a_retired_snapshot() {
    loom::model(|| {
        let model = model(2);
        let reader = {
            let model = Arc::clone(&model);
            thread::spawn(move || read(&model))
        };
        // Detach client 0: publish a snapshot holding client 1, then free client 0.
        publish(&model, 1);
        model.clients[0].alive.store(false, SeqCst);
        let seen = reader.join().unwrap();
        assert!(seen == 0 || seen == 1);
        // A read after the publish sees only the new snapshot.
        assert_eq!(read(&model), 1);
    });
}
