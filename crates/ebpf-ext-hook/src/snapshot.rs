//! The published client set: two immutable snapshots, one current, swapped by writers.
//!
//! # Protocol
//!
//! There are two slots, each an array of entries guarded by its own cache-aware rundown
//! reference. Exactly one slot is *current*; the other is *run down* (its rundown has been
//! waited for, so nobody holds it and acquires fail).
//!
//! Reader (any IRQL ≤ DISPATCH_LEVEL, no lock):
//! 1. load the current index;
//! 2. try to acquire that slot's rundown; on failure (a writer has swapped it out and started
//!    waiting), go back to 1;
//! 3. read the entries; release the rundown when done.
//!
//! Writer (PASSIVE_LEVEL, holding the provider's writer push lock):
//! 1. fill the non-current slot (run down, so no reader can be inside it — a reader that loaded
//!    its index earlier fails to acquire it and retries);
//! 2. re-initialise that slot's rundown, then store its index as current (release);
//! 3. wait for the old slot's rundown: from then on no reader can acquire it, and the wait
//!    returns when the last reader that did has released it. The old slot is now run down and
//!    ready for the next writer.
//!
//! Why it is safe: a slot's contents change only while it is run down, and a reader reads a
//! slot only while holding its rundown, so a reader never sees a slot being written. After
//! step 3 no reader can reach an entry that exists only in the old slot: that is what lets a
//! detaching client be freed once the writer that removed it returns. Readers write only their
//! own processor's rundown counter (the cache-aware reference), never a line shared with other
//! processors, and take no lock a writer takes.
//!
//! A reader retries at most once per concurrent publish; publishes happen only on attach and
//! detach.
//!
//! Written against `crate::sync`, so that `tests/loom_snapshot.rs` can check this very code
//! over loom's atomics, cells and a model of the rundown reference.

use core::marker::PhantomData;

use ebpf_ext_sys::Result;

use crate::sync::{Array, AtomicUsize, Cell, Ordering, Rundown, RundownGuard, Shared, Tag};

struct Slot<T> {
    rundown: Rundown,
    entries: Cell<Array<T>>,
    len: Cell<usize>,
}

/// Two snapshot slots of `T` entries with a fixed capacity.
pub(crate) struct Snapshots<T> {
    slots: [Slot<T>; 2],
    current: AtomicUsize,
    capacity: usize,
}

// SAFETY: entries are written only by a writer holding the provider's writer lock while the
// slot is run down (see the protocol), and read only under the slot's rundown.
unsafe impl<T: Send + Sync> Sync for Snapshots<T> {}
// SAFETY: the slots own their pool memory.
unsafe impl<T: Send> Send for Snapshots<T> {}

/// A reader's hold on the current snapshot.
pub(crate) struct SnapshotGuard<'a, T> {
    /// The borrow of the slot's entries; declared first, so it ends before the rundown is
    /// released (after which a writer may refill the slot).
    _borrow: Shared<'a, Array<T>>,
    _guard: RundownGuard<'a>,
    entries: &'a [T],
}

impl<T> SnapshotGuard<'_, T> {
    /// The snapshot's entries, for as long as this guard holds it.
    pub(crate) fn entries(&self) -> &[T] {
        self.entries
    }
}

impl<T: Default + Copy> Snapshots<T> {
    /// Two empty slots of `capacity` entries; slot 0 current.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub(crate) fn new(capacity: usize, tag: Tag) -> Result<Self> {
        let slot = || -> Result<Slot<T>> {
            Ok(Slot {
                rundown: Rundown::new(tag.value())?,
                entries: Cell::new(Array::try_new(capacity, tag)?),
                len: Cell::new(0),
            })
        };
        let snapshots = Snapshots {
            slots: [slot()?, slot()?],
            current: AtomicUsize::new(0),
            capacity,
        };
        // The non-current slot starts run down (no references: returns at once).
        snapshots.slots[1].rundown.wait_for_release();
        Ok(snapshots)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Holds the current snapshot.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub(crate) fn read(&self) -> SnapshotGuard<'_, T> {
        loop {
            let index = self.current.load(Ordering::Acquire);
            let slot = &self.slots[index];
            if let Some(guard) = slot.rundown.try_acquire() {
                // SAFETY: holding the slot's rundown, so no writer modifies it (protocol).
                let len = *unsafe { slot.len.borrow() }.1;
                // SAFETY: as above, for as long as the guard holds it.
                let (borrow, entries) = unsafe { slot.entries.borrow() };
                return SnapshotGuard {
                    _borrow: borrow,
                    _guard: guard,
                    // `len <= capacity`.
                    entries: &entries[..len],
                };
            }
            crate::sync::spin_loop();
        }
    }

    /// The current entries, for a writer.
    ///
    /// # Safety
    /// The caller holds the writer lock (so the current slot cannot change).
    pub(crate) unsafe fn current_for_writer(&self) -> &[T] {
        let slot = &self.slots[self.current.load(Ordering::Acquire)];
        // SAFETY: only writers change slots, and the caller excludes other writers.
        let len = *unsafe { slot.len.borrow() }.1;
        // SAFETY: as above.
        &unsafe { slot.entries.borrow() }.1[..len]
    }

    /// Publishes a new snapshot built by `build` from the current entries into a buffer of
    /// `capacity` entries (returning how many it wrote), then waits until no reader holds the
    /// old one.
    ///
    /// # Safety
    /// The caller holds the writer lock, at PASSIVE_LEVEL.
    pub(crate) unsafe fn publish(&self, build: impl FnOnce(&[T], &mut [T]) -> usize) {
        // SAFETY: the caller holds the writer lock at PASSIVE_LEVEL for this call.
        let mut writer = unsafe { self.writer() };
        writer.publish(build);
    }

    /// The writer's side of the protocol, for as long as the caller holds the writer lock.
    ///
    /// # Safety
    /// The caller holds the writer lock, at PASSIVE_LEVEL, for as long as the returned writer
    /// (and anything borrowed from it) lives.
    unsafe fn writer(&self) -> Writer<'_, T> {
        // INVARIANT: the caller's contract.
        Writer {
            snapshots: self,
            _not_send: PhantomData,
        }
    }
}

/// The snapshots as the one writer sees them: its methods are the writer's steps of the
/// protocol, safe because the lock it stands for excludes every other writer.
///
/// # Invariants
/// While it lives, its creator holds the provider's writer lock at PASSIVE_LEVEL (on this
/// thread: the writer is not `Send`).
struct Writer<'a, T> {
    snapshots: &'a Snapshots<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Default + Copy> Writer<'_, T> {
    /// The current entries.
    fn current(&self) -> &[T] {
        let slot = &self.snapshots.slots[self.snapshots.current.load(Ordering::Acquire)];
        // SAFETY: only writers change slots, and the writer lock (type invariant) excludes
        // other writers; `publish` needs `&mut self`, so it cannot run while this borrow lives.
        let len = *unsafe { slot.len.borrow() }.1;
        // SAFETY: as above.
        &unsafe { slot.entries.borrow() }.1[..len]
    }

    /// Writer steps 1-3: fill the non-current slot with `build`, make it current, wait for
    /// the old one's readers.
    fn publish(&mut self, build: impl FnOnce(&[T], &mut [T]) -> usize) {
        let snapshots = self.snapshots;
        let old = snapshots.current.load(Ordering::Acquire);
        let new = 1 - old;
        let (old_slot, new_slot) = (&snapshots.slots[old], &snapshots.slots[new]);
        let old_entries = self.current();
        {
            // SAFETY: the writer lock is held (type invariant) and the new slot is run down,
            // so nobody else accesses it until it is reopened below, after this borrow.
            let (_borrow, new_entries) = unsafe { new_slot.entries.borrow_mut() };
            let len = build(old_entries, &mut new_entries[..]).min(snapshots.capacity);
            for entry in &mut new_entries[len..] {
                *entry = T::default();
            }
            // SAFETY: as above.
            *unsafe { new_slot.len.borrow_mut() }.1 = len;
        }
        // The new slot was run down by the previous publish (or at creation), and only a
        // writer holding the lock reopens it, so this cannot fail: a failure would leave
        // `current` at a run-down slot, where every reader would spin.
        let reopened = new_slot.rundown.reinitialize();
        debug_assert!(
            reopened.is_ok(),
            "a publish found its new slot not run down"
        );
        snapshots.current.store(new, Ordering::Release);
        old_slot.rundown.wait_for_release();
    }
}
