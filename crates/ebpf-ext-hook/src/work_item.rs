//! [`WorkItem`]: an `IO_WORKITEM` that frees itself — when its routine starts, or when it is
//! dropped without having been queued.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use ebpf_ext_nmr::{DetachCompletion, foreign};
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DelayedWorkQueue, IO_WORKITEM, IoAllocateWorkItem, IoFreeWorkItem,
    IoQueueWorkItem,
};
use ebpf_ext_sys::{Error, Result};

/// What a work item runs: a context that owns its [`WorkItem`].
pub(crate) trait Work: Sync + Sized + 'static {
    /// The context's work item.
    fn work_item(&self) -> &WorkItem;
    /// The routine, on a system worker thread at PASSIVE_LEVEL; the item is already freed.
    /// Returns the detach to complete once the routine no longer borrows the context
    /// (completing it may free the context at once, so it cannot happen inside `run`, whose
    /// `&self` is alive until `run` returns).
    fn run(&self) -> Option<DetachCompletion>;
}

/// An allocated, not yet queued work item (`IoAllocateWorkItem`), queued at most once.
///
/// # Invariants
/// `item` is NULL or an item allocated against a live device object, not queued; it is freed
/// exactly once: by the routine [`WorkItem::queue`] queued, or in `Drop`.
pub(crate) struct WorkItem {
    item: AtomicPtr<IO_WORKITEM>,
}

impl WorkItem {
    /// Allocates a work item for `device`.
    ///
    /// # Safety
    /// `device` is a live device object of the driver that outlives the item's routine.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] if `IoAllocateWorkItem` fails.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) unsafe fn allocate(device: *mut DEVICE_OBJECT) -> Result<Self> {
        // SAFETY: the caller's live device object.
        let item = unsafe { IoAllocateWorkItem(device) };
        if item.is_null() {
            return Err(Error::InsufficientResources);
        }
        // INVARIANT: just allocated, not queued.
        Ok(WorkItem {
            item: AtomicPtr::new(item),
        })
    }

    /// Queues `W::run(context)` on the delayed work queue. The item is freed when the routine
    /// starts (before `run`).
    ///
    /// # Safety
    /// Called at most once; `context` stays alive and in place until `W::run` returns (or,
    /// if `run` returns a detach to complete, until that completion), and
    /// `context.work_item()` is `self`. A completion `run` returns must be one the context's
    /// binding is owed, completed once.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub(crate) unsafe fn queue<W: Work>(&self, context: &W) {
        let item = self.item.load(Ordering::Acquire);
        if item.is_null() {
            return;
        }
        // SAFETY: an allocated item, not yet queued (called once: caller's contract); the
        // context outlives the routine (caller's contract).
        unsafe {
            IoQueueWorkItem(
                item,
                routine::<W>,
                DelayedWorkQueue,
                foreign::to_foreign(context).cast_mut(),
            );
        };
    }
}

impl Drop for WorkItem {
    fn drop(&mut self) {
        let item = self.item.swap(ptr::null_mut(), Ordering::AcqRel);
        if !item.is_null() {
            // SAFETY: allocated and never queued (the routine clears the pointer when queued).
            unsafe { IoFreeWorkItem(item) };
        }
    }
}

unsafe extern "win64" fn routine<W: Work>(_device: *mut DEVICE_OBJECT, context: *mut c_void) {
    // SAFETY: `queue` passed a live `W` that outlives this routine.
    let Some(work) = (unsafe { foreign::from_foreign::<W>(context.cast_const()) }) else {
        return;
    };
    let item = work
        .work_item()
        .item
        .swap(ptr::null_mut(), Ordering::AcqRel);
    if !item.is_null() {
        // SAFETY: the item's routine is running, so it is no longer queued; freed once.
        unsafe { IoFreeWorkItem(item) };
    }
    if let Some(completion) = work.run() {
        // `work` is not used again: NMR may clean up (free) the context inside this call.
        // Completing the last detach lets the provider's deregistration, and so the driver's
        // unload, go on while this routine is still returning through the image. That is safe
        // because the I/O manager holds a reference on the item's device object from
        // `IoQueueWorkItem` until the routine returns (why `IO_WORKITEM` replaced
        // `ExQueueWorkItem` for drivers; freeing the item above does not end it), and the
        // driver object, and with it the image, outlives its devices. usersim models this.
        // SAFETY: `queue`'s contract: a completion the context's binding is owed, once.
        unsafe { completion.complete() };
    }
}
