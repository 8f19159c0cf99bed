//! Work items: `IoAllocateWorkItem`, `IoQueueWorkItem`, `IoFreeWorkItem`, run on real worker
//! threads bound to the kernel.
//!
//! A work item is marked "not queued" before its routine runs, so the routine may free or
//! re-queue it. The routine must return at PASSIVE_LEVEL outside any critical region, or the
//! worker bug-checks (`WORKER_THREAD_RETURNED_AT_BAD_IRQL`, 0xE1, as Windows does).
//!
//! `IoQueueWorkItem` references the work item's device object, and the worker drops that
//! reference only after the routine has returned: this is what distinguishes `IoQueueWorkItem`
//! from `ExQueueWorkItem`. A driver may therefore delete its device and return from its unload
//! routine while the routine is still running or returning; the device object, its driver
//! object and so the driver image stay until the routine is done (see `devices`). The WDK
//! pages do not say so (the reference notes it as unconfirmed); the I/O manager's design does
//! (D. Holan, "Why are there two types of work items?", MSDN blog, 2006-08-07: `IO_WORKITEM`
//! exists because a `WORK_QUEUE_ITEM` holds no reference on the device or driver object, so the
//! image could unload while its routine runs), and ebpf-for-windows issue #2197 relies on it.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use core::{mem, ptr};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

use ebpf_ext_sys::wdm::{
    CustomPriorityWorkQueue, DEVICE_OBJECT, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION,
    IO_WORKITEM_ROUTINE, MaximumWorkQueue, PASSIVE_LEVEL, PIO_WORKITEM, POOL_FLAG_NON_PAGED,
    WORK_QUEUE_TYPE,
};

use crate::cpu::critical_region_depth;
use crate::devices::{dereference_device, device_exists, reference_device};
use crate::kernel::{
    Inner, NO_KERNEL_BOUND, bind, bugcheck, call_fails, current_irql, lock, require_irql, set_irql,
    with_kernel,
};
use crate::pool::{pool_alloc, pool_free};

const WORKER_THREAD_RETURNED_AT_BAD_IRQL: u32 = 0xE1;
const SYSTEM_THREAD_EXCEPTION_NOT_HANDLED: u32 = 0x7E;
const WORKITEM_TAG: u32 = u32::from_le_bytes(*b"IoWk");

#[repr(C)]
struct WorkItem {
    device: *mut DEVICE_OBJECT,
    queued: AtomicBool,
}

/// A queued routine: a driver's work item, or a simulated kernel component's own work.
enum Job {
    Io(IoJob),
    System(Box<dyn FnOnce() + Send>),
}

struct IoJob {
    item: usize,
    routine: IO_WORKITEM_ROUTINE,
    context: usize,
    device: usize,
    /// Whether `IoQueueWorkItem` took a reference on the device (it knew the object).
    referenced: bool,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    running: usize,
    shutdown: bool,
    live_items: HashSet<usize>,
}

pub(crate) struct WorkQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkQueue {
    pub(crate) fn new() -> Self {
        WorkQueue {
            state: Mutex::new(QueueState::default()),
            cv: Condvar::new(),
            workers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn wait_idle(&self) {
        drop(self.idle());
    }

    /// The queue's state once no job is queued or running, still locked.
    fn idle(&self) -> std::sync::MutexGuard<'_, QueueState> {
        let mut state = lock(&self.state);
        while !state.jobs.is_empty() || state.running > 0 {
            state = self
                .cv
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state
    }

    pub(crate) fn live_items(&self) -> usize {
        lock(&self.state).live_items.len()
    }

    /// Waits for the queue to run dry, then stops the workers; decided under the queue's lock,
    /// so a routine queued afterwards bug-checks ([`WorkQueue::enqueue`]) rather than run on
    /// a worker of a kernel being dropped.
    ///
    /// Called from one of the queue's own workers (a work routine that drops the last handle
    /// of its kernel), it bug-checks: it would wait for its own routine for ever.
    pub(crate) fn shutdown(&self) {
        let me = thread::current().id();
        if lock(&self.workers).iter().any(|w| w.thread().id() == me) {
            bugcheck(
                "Kernel::drop",
                NO_KERNEL_BOUND,
                [0; 4],
                "a kernel dropped from one of its own work routines (it waits for them)",
            );
        }
        self.idle().shutdown = true;
        self.cv.notify_all();
        let workers = mem::take(&mut *lock(&self.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }

    /// Queues `job` for `api` and starts the workers if none runs; bug-checks
    /// ([`NO_KERNEL_BOUND`]) once the kernel's drop has stopped them.
    fn enqueue(&self, api: &'static str, inner: &Arc<Inner>, job: Job) {
        {
            let mut state = lock(&self.state);
            if state.shutdown {
                drop(state);
                bugcheck(
                    api,
                    NO_KERNEL_BOUND,
                    [0; 4],
                    "work queued after the kernel was dropped (its worker threads are gone)",
                );
            }
            state.jobs.push_back(job);
        }
        // Pushed before shutdown could begin, which waits for it: the workers run it.
        self.start_workers(inner);
        self.cv.notify_all();
    }

    fn start_workers(&self, inner: &Arc<Inner>) {
        let mut workers = lock(&self.workers);
        // Once shut down (the job pushed before it has run): no new workers, none to join.
        if !workers.is_empty() || lock(&self.state).shutdown {
            return;
        }
        for i in 0..inner.config.worker_threads {
            let inner = Arc::clone(inner);
            let handle = thread::Builder::new()
                .name(format!("usersim-worker-{i}"))
                .spawn(move || worker_main(&inner))
                .expect("start a worker thread");
            workers.push(handle);
        }
    }
}

fn worker_main(inner: &Arc<Inner>) {
    bind(Some(Arc::clone(inner)));
    let queue = &inner.work;
    loop {
        let job = {
            let mut state = lock(&queue.state);
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    state.running += 1;
                    if let Job::Io(job) = &job {
                        // SAFETY: a queued item cannot be freed (IoFreeWorkItem bug-checks),
                        // so it is live while its job is in the queue.
                        let item = unsafe { &*(job.item as *const WorkItem) };
                        item.queued.store(false, Ordering::Release);
                    }
                    break Some(job);
                }
                if state.shutdown {
                    break None;
                }
                state = queue
                    .cv
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let Some(job) = job else { break };
        set_irql(PASSIVE_LEVEL);
        let api = match &job {
            Job::Io(_) => "IoQueueWorkItem",
            Job::System(_) => "queue_system_work",
        };
        let run = core::panic::AssertUnwindSafe(|| match job {
            Job::Io(job) => run_io_job(inner, &job),
            Job::System(work) => {
                work();
                check_return("queue_system_work", 0, 0);
            }
        });
        // A panic (a simulated component's routine, or the callback-stack runner) would leave
        // the job counted as running, and every wait for the queue waiting for ever: the
        // kernel's answer to an exception a system thread does not handle.
        if let Err(payload) = std::panic::catch_unwind(run) {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bugcheck(
                api,
                SYSTEM_THREAD_EXCEPTION_NOT_HANDLED,
                [0; 4],
                &format!("a work routine panicked: {what}"),
            );
        }
        let mut state = lock(&queue.state);
        state.running -= 1;
        queue.cv.notify_all();
    }
    bind(None);
}

/// Runs a driver's work item routine, then lets its device object go.
fn run_io_job(inner: &Arc<Inner>, job: &IoJob) {
    crate::kernel::run_driver_routine(job.routine as usize, || {
        // SAFETY: the routine and context were supplied by the driver to IoQueueWorkItem,
        // which promises they stay valid until the routine runs.
        unsafe { (job.routine)(job.device as *mut DEVICE_OBJECT, job.context as *mut c_void) };
    });
    check_return(
        "IoQueueWorkItem",
        job.routine as usize as u64,
        job.item as u64,
    );
    // The routine has returned: only now may the device object, its driver object and
    // the driver image go.
    if job.referenced {
        dereference_device("IoQueueWorkItem", inner, job.device as *mut DEVICE_OBJECT);
    }
}

/// Bug-checks (`WORKER_THREAD_RETURNED_AT_BAD_IRQL`, as Windows does) if a routine returned
/// to the worker at raised IRQL or inside a critical region.
fn check_return(api: &'static str, routine: u64, item: u64) {
    let irql = current_irql();
    if irql != PASSIVE_LEVEL || critical_region_depth() != 0 {
        bugcheck(
            api,
            WORKER_THREAD_RETURNED_AT_BAD_IRQL,
            [
                routine,
                u64::from(irql),
                item,
                u64::from(critical_region_depth()),
            ],
            "work item routine returned at raised IRQL or inside a critical region",
        );
    }
}

/// Queues `work` to run on one of the bound kernel's worker threads, at PASSIVE_LEVEL: how a
/// simulated kernel component (not a driver) defers work, as the kernel's own components use
/// system work items (`ExQueueWorkItem`), for example the eBPF core's epoch work items.
/// [`Kernel::wait_for_work_items`](crate::Kernel::wait_for_work_items) waits for it, and so
/// does dropping the kernel. `work` must return at PASSIVE_LEVEL outside any critical
/// region, or the worker bug-checks (`WORKER_THREAD_RETURNED_AT_BAD_IRQL`, 0xE1); if it
/// panics, the worker bug-checks (`SYSTEM_THREAD_EXCEPTION_NOT_HANDLED`, 0x7E). Queued once
/// the kernel's drop has stopped its workers (from a thread that outlived it), it bug-checks
/// ([`NO_KERNEL_BOUND`](crate::NO_KERNEL_BOUND)).
///
/// # IRQL
/// Any level up to DISPATCH_LEVEL, on a thread bound to a kernel.
pub fn queue_system_work(work: impl FnOnce() + Send + 'static) {
    const API: &str = "queue_system_work";
    require_irql(API, DISPATCH_LEVEL);
    with_kernel(API, |k| k.work.enqueue(API, k, Job::System(Box::new(work))));
}

fn check_item(api: &'static str, inner: &Inner, item: PIO_WORKITEM) {
    if item.is_null()
        || !lock(&inner.work.state)
            .live_items
            .contains(&(item as usize))
    {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [item as u64, 0, 0, 0],
            "not a live work item",
        );
    }
}

/// `IoAllocateWorkItem`.
///
/// # Safety
/// Kernel routine; `DeviceObject` is a device object of the driver.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoAllocateWorkItem(DeviceObject: *mut DEVICE_OBJECT) -> PIO_WORKITEM {
    const API: &str = "IoAllocateWorkItem";
    require_irql(API, DISPATCH_LEVEL);
    if DeviceObject.is_null() {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [0; 4],
            "IoAllocateWorkItem with a NULL device object",
        );
    }
    if !with_kernel(API, |k| device_exists(k, DeviceObject)) {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [DeviceObject as u64, 0, 0, 0],
            "IoAllocateWorkItem with a device object that does not exist (freed, or never created)",
        );
    }
    if with_kernel(API, |k| call_fails(k, API)) {
        return ptr::null_mut();
    }
    let p = pool_alloc(
        API,
        POOL_FLAG_NON_PAGED,
        mem::size_of::<WorkItem>(),
        WORKITEM_TAG,
    )
    .cast::<WorkItem>();
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `p` is a fresh, suitably aligned allocation of a WorkItem.
    unsafe {
        p.write(WorkItem {
            device: DeviceObject,
            queued: AtomicBool::new(false),
        });
    };
    with_kernel(API, |k| lock(&k.work.state).live_items.insert(p as usize));
    p.cast()
}

/// `IoQueueWorkItem`: references the item's device object until the routine has returned.
/// Queued once the kernel's drop has stopped its workers (from a thread that outlived it), it
/// bug-checks ([`NO_KERNEL_BOUND`](crate::NO_KERNEL_BOUND)).
///
/// # Safety
/// Kernel routine; the item is live and not queued.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoQueueWorkItem(
    IoWorkItem: PIO_WORKITEM,
    WorkerRoutine: IO_WORKITEM_ROUTINE,
    QueueType: WORK_QUEUE_TYPE,
    Context: *mut c_void,
) {
    const API: &str = "IoQueueWorkItem";
    require_irql(API, DISPATCH_LEVEL);
    let valid_queue = (0..MaximumWorkQueue).contains(&QueueType)
        || (CustomPriorityWorkQueue..CustomPriorityWorkQueue + 32).contains(&QueueType);
    if !valid_queue {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [u64::from(QueueType.cast_unsigned()), 0, 0, 0],
            "invalid WORK_QUEUE_TYPE",
        );
    }
    with_kernel(API, |k| {
        check_item(API, k, IoWorkItem);
        // SAFETY: `check_item` established that this is a live WorkItem.
        let item = unsafe { &*IoWorkItem.cast::<WorkItem>() };
        if item.queued.swap(true, Ordering::AcqRel) {
            bugcheck(
                API,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [IoWorkItem as u64, 0, 0, 0],
                "work item queued while already queued",
            );
        }
        // Held until the routine has returned (dropped by the worker).
        let referenced = reference_device(k, item.device);
        if !referenced {
            bugcheck(
                API,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [IoWorkItem as u64, item.device as u64, 0, 0],
                "work item queued after its device object was freed",
            );
        }
        let job = Job::Io(IoJob {
            item: IoWorkItem as usize,
            routine: WorkerRoutine,
            context: Context as usize,
            device: item.device as usize,
            referenced,
        });
        k.work.enqueue(API, k, job);
    });
}

/// `IoFreeWorkItem`.
///
/// # Safety
/// Kernel routine; the item is live and not queued.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoFreeWorkItem(IoWorkItem: PIO_WORKITEM) {
    const API: &str = "IoFreeWorkItem";
    require_irql(API, DISPATCH_LEVEL);
    with_kernel(API, |k| {
        check_item(API, k, IoWorkItem);
        // SAFETY: `check_item` established that this is a live WorkItem.
        let item = unsafe { &*IoWorkItem.cast::<WorkItem>() };
        if item.queued.load(Ordering::Acquire) {
            bugcheck(
                API,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [IoWorkItem as u64, 0, 0, 0],
                "work item freed while queued",
            );
        }
        lock(&k.work.state)
            .live_items
            .remove(&(IoWorkItem as usize));
    });
    pool_free(API, IoWorkItem.cast(), Some(WORKITEM_TAG));
}
