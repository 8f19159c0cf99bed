//! The first step of a client's detach, on its own so that the `loom` model of the detach
//! (`tests/loom_snapshot.rs`) runs this very code: the client is marked detaching before its
//! work item is queued.
//!
//! The order is what makes the detach safe. The flag is stored `Relaxed`; queueing the work
//! item orders it before everything the worker does, so the worker's publish of the live
//! clients leaves this one out and, once that publish has waited out its readers, nothing
//! reaches the client NMR then frees. Queued first, the worker could publish the client
//! again before the flag is stored, complete the detach, and leave it in the snapshot.

use crate::sync::{AtomicBool, Ordering};

/// Marks a client detaching (`detaching`), then queues the work item that removes it
/// (`queue`).
///
/// # IRQL
/// As `queue` (≤ DISPATCH_LEVEL for an I/O work item).
pub(crate) fn mark_then_queue(detaching: &AtomicBool, queue: impl FnOnce()) {
    detaching.store(true, Ordering::Relaxed);
    queue();
}
