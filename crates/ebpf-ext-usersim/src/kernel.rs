//! The simulated kernel instance, its per-thread binding, bug checks and fault injection.

use core::any::Any;
use core::cell::{Cell, RefCell};
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::{env, process, thread};

use ebpf_ext_sys::ntdef::{GUID, KIRQL, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::wdm::PASSIVE_LEVEL;

use crate::devices::DeviceState;
use crate::etw::EtwState;
use crate::locals::{Locals, forget_cached};
use crate::nmr::NmrState;
use crate::pool::PoolState;
use crate::workitem::WorkQueue;

/// Settings of a simulated kernel, fixed when it is created.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of simulated processors (`KeQueryActiveProcessorCountEx`). Threads are given
    /// processor numbers round-robin; a thread keeps its number for its lifetime.
    pub processor_count: u32,
    /// Number of system worker threads that run work items.
    pub worker_threads: usize,
    /// When true, `NmrDeregister*` returns `STATUS_SUCCESS` (instead of `STATUS_PENDING`) if
    /// the registration had no bindings, as the user-mode NMRs of usersim and eBPF do. Real
    /// `NETIO.SYS` documents only `STATUS_PENDING`; callers must accept both.
    pub nmr_deregister_success_when_idle: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            processor_count: 4,
            worker_threads: 2,
            nmr_deregister_success_when_idle: false,
        }
    }
}

/// A bug check: what stopped the simulated machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BugCheck {
    /// Bug check code (for example `0xC2` `BAD_POOL_CALLER`).
    pub code: u32,
    /// The four parameters.
    pub parameters: [u64; 4],
    /// The kernel routine that detected it.
    pub api: String,
    /// IRQL of the thread at the time.
    pub irql: u8,
    /// What went wrong, in words.
    pub message: String,
}

impl fmt::Display for BugCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "*** STOP 0x{:08X} (0x{:X}, 0x{:X}, 0x{:X}, 0x{:X}) in {} at IRQL {}: {}",
            self.code,
            self.parameters[0],
            self.parameters[1],
            self.parameters[2],
            self.parameters[3],
            self.api,
            self.irql,
            self.message
        )
    }
}

/// A failure to inject: the N-th (1-based, counted from the moment it is injected) pool
/// allocation, or the N-th call of a kernel routine that can fail on Windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail the N-th allocation: `ExAllocatePool2` and every routine that allocates
    /// (`IoAllocateWorkItem`, `IoCreateDevice`, `EtwRegister`, `NmrRegister*`,
    /// `ExAllocateCacheAwareRundownProtection`).
    Allocation(u64),
    /// Fail the N-th call of the named routine (see [`FAULTABLE_APIS`] and
    /// [`UNRECOVERABLE_FAULTABLE_APIS`]) with the status that routine's injected failure
    /// returns by default.
    Call(&'static str, u64),
    /// Fail the N-th call of the named routine with the given failure status (see
    /// [`STATUS_FAULTABLE_APIS`]); the routine returns it without writing its outputs, as a
    /// [`Fault::Call`] does. It counts as a call of the routine, as [`Fault::Call`] does.
    CallWithStatus(&'static str, u64, NTSTATUS),
}

/// Routines that can fail on Windows, and so can be fault-injected by name.
pub const FAULTABLE_APIS: &[&str] = &[
    "ExAllocatePool2",
    "ExAllocateCacheAwareRundownProtection",
    "IoAllocateWorkItem",
    "IoCreateDevice",
    "IoCreateSymbolicLink",
    "EtwRegister",
    "KeExpandKernelStackAndCalloutEx",
    "NmrRegisterProvider",
    "NmrRegisterClient",
    "NmrClientAttachProvider",
    "ObSetSecurityObjectByPointer",
    "PsSetCreateProcessNotifyRoutineEx",
    "SecLookupAccountSid",
];

/// Routines whose failure a driver cannot recover from, injectable one call at a time
/// ([`Fault::Call`]) but never swept ([`sweep_call_failures`]): what is left after one fails
/// is a leak on Windows too, so a test asserts what the driver did instead (that it traced
/// the status and freed nothing the kernel may still read).
///
/// - `NmrDeregisterProvider` (`STATUS_UNSUCCESSFUL`): documented to return `STATUS_PENDING`
///   or an error; an injected failure leaves the registration as it was, attached bindings
///   and all.
pub const UNRECOVERABLE_FAULTABLE_APIS: &[&str] = &["NmrDeregisterProvider"];

/// The fault-injectable routines whose injected failure status a test can choose
/// ([`Fault::CallWithStatus`]): routines whose failure statuses on Windows are not all
/// documented, so a caller must handle any failure status alike.
///
/// - `SecLookupAccountSid` (STATUS_NO_MEMORY by default): it asks the LSA, so a driver
///   cannot know every status it may return.
pub const STATUS_FAULTABLE_APIS: &[&str] = &["SecLookupAccountSid"];

#[derive(Default)]
pub(crate) struct FaultState {
    allocations: u64,
    calls: HashMap<&'static str, u64>,
    pending: Vec<(Fault, u64)>,
    triggered: Vec<Fault>,
}

/// Shared state of one simulated kernel.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) pool: Mutex<PoolState>,
    pub(crate) faults: Mutex<FaultState>,
    /// Rundown waiters and push-lock waiters sleep here; releasers notify.
    pub(crate) wait_lock: Mutex<()>,
    pub(crate) wait_cv: Condvar,
    pub(crate) work: WorkQueue,
    pub(crate) devices: Mutex<DeviceState>,
    pub(crate) etw: Mutex<EtwState>,
    /// Signalled whenever a thread stops delivering ETW enable callbacks.
    pub(crate) etw_callbacks_idle: Condvar,
    /// Counter of the activity ids `EtwActivityIdControl` creates.
    pub(crate) next_activity: AtomicU64,
    pub(crate) nmr: Mutex<NmrState>,
    pub(crate) nmr_cv: Condvar,
    pub(crate) process: Mutex<crate::process::ProcessState>,
    pub(crate) process_cv: Condvar,
    pub(crate) debug_output: Mutex<Vec<DebugMessage>>,
    pub(crate) next_processor: AtomicU32,
    pub(crate) stack_expansions: AtomicU64,
    pub(crate) irql_raises: AtomicU64,
    /// Threads asleep in a rundown wait ([`Kernel::rundown_waiters`]).
    pub(crate) rundown_sleepers: AtomicU64,
    /// Times a rundown wait found references outstanding ([`Kernel::rundown_wait_checks`]).
    pub(crate) rundown_checks: AtomicU64,
    /// Live paged pool blocks (the fast path of `pool::require_nonpaged`).
    pub(crate) paged_blocks: AtomicUsize,
    pub(crate) delays: AtomicU64,
    /// Storage of host builds' driver globals (see `locals`).
    pub(crate) locals: Mutex<Locals>,
    /// State simulated components keep per kernel ([`component`]).
    pub(crate) components: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
    /// A number naming this kernel for its life ([`kernel_id`]).
    pub(crate) id: u64,
}

/// One `DbgPrintEx` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugMessage {
    /// Component id.
    pub component: u32,
    /// Level or mask.
    pub level: u32,
    /// The text.
    pub text: String,
}

/// A lock a thread holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldLock {
    /// The lock's address.
    pub(crate) addr: usize,
    /// Held exclusively.
    pub(crate) exclusive: bool,
    /// For a spin lock, the IRQL its acquire returned (what its release must restore).
    pub(crate) spin_old_irql: Option<KIRQL>,
}

/// Per-thread simulated CPU state. It belongs to one kernel: binding the thread to another
/// kernel starts it afresh (see [`bind`]), so a processor number, IRQL or lock left over from
/// an earlier kernel on the same thread never reaches the next one.
pub(crate) struct ThreadState {
    /// The [`kernel_id`] of the kernel this state belongs to; 0 before the first binding.
    pub(crate) kernel: Cell<u64>,
    pub(crate) irql: Cell<KIRQL>,
    pub(crate) critical_region: Cell<u32>,
    pub(crate) processor: Cell<Option<u32>>,
    /// Spin locks and push locks this thread holds, in acquisition order.
    pub(crate) held_locks: RefCell<Vec<HeldLock>>,
    pub(crate) activity_id: Cell<GUID>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Inner>>> = const { RefCell::new(None) };
    pub(crate) static THREAD: ThreadState = const {
        ThreadState {
            kernel: Cell::new(0),
            irql: Cell::new(PASSIVE_LEVEL),
            critical_region: Cell::new(0),
            processor: Cell::new(None),
            held_locks: RefCell::new(Vec::new()),
            activity_id: Cell::new(GUID::NULL),
        }
    };
}

/// A simulated kernel. Create one per test; it binds itself to the creating thread, and the
/// threads usersim starts (work items) inherit the binding. Kernel routines called on a thread
/// with no kernel bound abort the process naming the routine.
///
/// Instances are independent: providers, allocations and injected faults of one are invisible
/// to another.
pub struct Kernel {
    inner: Arc<Inner>,
}

impl Kernel {
    /// A kernel with the default [`Config`], bound to the calling thread.
    #[must_use]
    pub fn new() -> Kernel {
        Kernel::with_config(Config::default())
    }

    /// A kernel with the given settings, bound to the calling thread.
    ///
    /// # Panics
    /// If `processor_count` is not 1..=64 or `worker_threads` is zero.
    #[must_use]
    pub fn with_config(config: Config) -> Kernel {
        assert!(
            (1..=64).contains(&config.processor_count),
            "a kernel has 1 to 64 processors (one processor group)"
        );
        assert!(config.worker_threads > 0, "a kernel needs a worker thread");
        let inner = Arc::new(Inner {
            work: WorkQueue::new(),
            config,
            pool: Mutex::new(PoolState::default()),
            faults: Mutex::new(FaultState::default()),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            devices: Mutex::new(DeviceState::default()),
            etw: Mutex::new(EtwState::default()),
            etw_callbacks_idle: Condvar::new(),
            next_activity: AtomicU64::new(1),
            nmr: Mutex::new(NmrState::default()),
            nmr_cv: Condvar::new(),
            process: Mutex::new(crate::process::ProcessState::default()),
            process_cv: Condvar::new(),
            debug_output: Mutex::new(Vec::new()),
            next_processor: AtomicU32::new(0),
            stack_expansions: AtomicU64::new(0),
            irql_raises: AtomicU64::new(0),
            rundown_sleepers: AtomicU64::new(0),
            rundown_checks: AtomicU64::new(0),
            paged_blocks: AtomicUsize::new(0),
            delays: AtomicU64::new(0),
            locals: Mutex::new(Locals::default()),
            components: Mutex::new(Vec::new()),
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
        });
        bind(Some(Arc::clone(&inner)));
        Kernel { inner }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Binds this kernel to the calling thread (a thread the test started itself).
    pub fn bind_current_thread(&self) {
        bind(Some(Arc::clone(&self.inner)));
    }

    /// Starts a thread bound to this kernel, at PASSIVE_LEVEL.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let inner = Arc::clone(&self.inner);
        thread::spawn(move || {
            bind(Some(inner));
            f()
        })
    }

    /// Runs `f` on a scoped thread bound to this kernel.
    pub fn scoped<'scope, 'env, T: Send + 'scope>(
        &self,
        scope: &'scope thread::Scope<'scope, 'env>,
        f: impl FnOnce() -> T + Send + 'scope,
    ) -> thread::ScopedJoinHandle<'scope, T> {
        let inner = Arc::clone(&self.inner);
        scope.spawn(move || {
            bind(Some(inner));
            let result = f();
            bind(None);
            result
        })
    }

    /// Arms a fault; several may be armed at once.
    ///
    /// # Panics
    /// If the count is zero or the routine cannot fail on Windows (it is in neither
    /// [`FAULTABLE_APIS`] nor [`UNRECOVERABLE_FAULTABLE_APIS`]); for
    /// [`Fault::CallWithStatus`], if the routine is not one of [`STATUS_FAULTABLE_APIS`] or
    /// the status is a success (`NT_SUCCESS`).
    pub fn inject(&self, fault: Fault) {
        let n = match fault {
            Fault::Allocation(n) => n,
            Fault::Call(api, n) => {
                assert!(
                    FAULTABLE_APIS.contains(&api) || UNRECOVERABLE_FAULTABLE_APIS.contains(&api),
                    "{api} cannot fail on Windows; not injectable"
                );
                n
            }
            Fault::CallWithStatus(api, n, status) => {
                assert!(
                    STATUS_FAULTABLE_APIS.contains(&api),
                    "{api}'s injected failure status cannot be chosen (see STATUS_FAULTABLE_APIS)"
                );
                assert!(
                    !NT_SUCCESS(status),
                    "{status:#x} is a success status, not a failure to inject"
                );
                n
            }
        };
        assert!(n > 0, "fault counts are 1-based");
        let mut faults = lock(&self.inner.faults);
        let base = match fault {
            Fault::Allocation(_) => faults.allocations,
            Fault::Call(api, _) | Fault::CallWithStatus(api, ..) => {
                faults.calls.get(api).copied().unwrap_or(0)
            }
        };
        faults.pending.push((fault, base + n));
    }

    /// Disarms every fault armed with [`Kernel::inject`] that has not fired; those that
    /// fired stay in [`Kernel::faults_triggered`]. For a scenario whose fault may not be
    /// reached, so that it cannot fire in the next one.
    pub fn disarm_faults(&self) {
        lock(&self.inner.faults).pending.clear();
    }

    /// Faults that have fired so far.
    #[must_use]
    pub fn faults_triggered(&self) -> Vec<Fault> {
        lock(&self.inner.faults).triggered.clone()
    }

    /// Allocations made so far (the points a [`Fault::Allocation`] sweep covers).
    #[must_use]
    pub fn allocation_count(&self) -> u64 {
        lock(&self.inner.faults).allocations
    }

    /// Calls of a fault-injectable routine made so far.
    #[must_use]
    pub fn call_count(&self, api: &str) -> u64 {
        lock(&self.inner.faults)
            .calls
            .get(api)
            .copied()
            .unwrap_or(0)
    }

    /// Times `KfRaiseIrql` (`KeRaiseIrql`) raised a thread's IRQL, on any thread.
    #[must_use]
    pub fn irql_raises(&self) -> u64 {
        self.inner.irql_raises.load(Ordering::Relaxed)
    }

    /// Threads asleep in `ExWaitForRundownProtectionRelease` or its cache-aware form, waiting
    /// for references to be released. With [`Kernel::rundown_wait_checks`], a test knows a
    /// wait has begun and has not returned, instead of sleeping and hoping.
    #[must_use]
    pub fn rundown_waiters(&self) -> u64 {
        self.inner.rundown_sleepers.load(Ordering::SeqCst)
    }

    /// Times a rundown wait looked and found references outstanding (then slept again): a wait
    /// that looked after a release, and sleeps, did not return early.
    #[must_use]
    pub fn rundown_wait_checks(&self) -> u64 {
        self.inner.rundown_checks.load(Ordering::SeqCst)
    }

    /// Times `KeExpandKernelStackAndCalloutEx` ran its callout.
    #[must_use]
    pub fn stack_expansions(&self) -> u64 {
        self.inner.stack_expansions.load(Ordering::Relaxed)
    }

    /// Times a thread slept in `KeDelayExecutionThread`, on any thread.
    #[must_use]
    pub fn delays(&self) -> u64 {
        self.inner.delays.load(Ordering::Relaxed)
    }

    /// `DbgPrintEx` output so far.
    #[must_use]
    pub fn debug_output(&self) -> Vec<DebugMessage> {
        lock(&self.inner.debug_output).clone()
    }

    /// Blocks until every queued work item has run.
    pub fn wait_for_work_items(&self) {
        self.inner.work.wait_idle();
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::new()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.inner.work.shutdown();
        // `try_with`: a kernel kept in another thread-local may be dropped after this thread's
        // binding is already gone (at thread or process exit); there is nothing to unbind then.
        let is_current = CURRENT
            .try_with(|c| {
                c.borrow()
                    .as_ref()
                    .is_some_and(|k| Arc::ptr_eq(k, &self.inner))
            })
            .unwrap_or(false);
        if is_current {
            bind(None);
        }
        lock(&self.inner.pool).release_all();
    }
}

/// The next kernel's [`kernel_id`].
static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// A number naming the kernel bound to the calling thread, never reused by another kernel of
/// the process; `None` if none is bound. For a simulated component's per-thread caches of
/// [`component`]s.
#[must_use]
pub fn kernel_id() -> Option<u64> {
    try_with_kernel(|inner| inner.id)
}

/// The state of type `T` that a simulated component (core-sim, for one) keeps in the kernel
/// bound to the calling thread: made with `T::default()` by the first call, the same `Arc`
/// for every later call through the same kernel (from any of its threads), and dropped with
/// the kernel, so tests that run as threads of one process never share it. `None` if no
/// kernel is bound. Takes a lock: callers on hot paths cache it per thread, keyed by
/// [`kernel_id`].
#[must_use]
pub fn component<T: Any + Default + Send + Sync>() -> Option<Arc<T>> {
    try_with_kernel(|inner| {
        let mut components = lock(&inner.components);
        if let Some(found) = components
            .iter()
            .find_map(|c| Arc::clone(c).downcast::<T>().ok())
        {
            return found;
        }
        let fresh = Arc::new(T::default());
        components.push(Arc::clone(&fresh) as Arc<dyn Any + Send + Sync>);
        fresh
    })
}

/// Binds the calling thread to `inner` (or unbinds it). Binding it to a kernel other than the
/// one its CPU state belongs to resets that state: PASSIVE_LEVEL, no critical region, no locks
/// held, no activity id, and a processor number the new kernel assigns (one below its own
/// processor count). Unbinding keeps the state, for the same kernel's next binding.
pub(crate) fn bind(inner: Option<Arc<Inner>>) {
    forget_cached();
    if let Some(new) = &inner {
        THREAD.with(|t| {
            if t.kernel.replace(new.id) != new.id {
                t.irql.set(PASSIVE_LEVEL);
                t.critical_region.set(0);
                t.processor.set(None);
                t.held_locks.borrow_mut().clear();
                t.activity_id.set(GUID::NULL);
            }
        });
    }
    CURRENT.with(|c| *c.borrow_mut() = inner);
}

/// Runs `f` with the kernel bound to this thread, if there is one.
pub(crate) fn try_with_kernel<R>(f: impl FnOnce(&Arc<Inner>) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(f))
}

/// Runs `f` with the kernel bound to this thread; aborts naming `api` if there is none.
pub(crate) fn with_kernel<R>(api: &str, f: impl FnOnce(&Arc<Inner>) -> R) -> R {
    // Borrowed, not cloned: cloning the Arc would write a cache line shared by every thread.
    CURRENT.with(|c| match &*c.borrow() {
        Some(inner) => f(inner),
        None => bugcheck(
            api,
            NO_KERNEL_BOUND,
            [0; 4],
            "called on a thread with no simulated kernel bound (create a Kernel, or start the thread with Kernel::spawn)",
        ),
    })
}

/// Aborts naming `api` if no kernel is bound, without touching the kernel (hot paths).
pub(crate) fn require_bound(api: &str) {
    let bound = CURRENT.with(|c| c.borrow().is_some());
    if !bound {
        with_kernel(api, |_| ());
    }
}

/// Locks a mutex, ignoring poisoning (a panic elsewhere already failed the test).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts an allocation; true if an armed fault says it must fail.
pub(crate) fn allocation_fails(inner: &Inner) -> bool {
    let mut faults = lock(&inner.faults);
    faults.allocations += 1;
    let now = faults.allocations;
    fire(&mut faults, |f| matches!(f, Fault::Allocation(_)), now).is_some()
}

/// Counts a call of a fault-injectable routine; true if it must fail.
pub(crate) fn call_fails(inner: &Inner, api: &'static str) -> bool {
    call_fault(inner, api).is_some()
}

/// Counts a call of a fault-injectable routine whose failure status can be chosen
/// ([`STATUS_FAULTABLE_APIS`]); the status it must fail with, if it must: the injected one,
/// or `default` for a [`Fault::Call`].
pub(crate) fn call_fault_status(
    inner: &Inner,
    api: &'static str,
    default: NTSTATUS,
) -> Option<NTSTATUS> {
    call_fault(inner, api).map(|fault| match fault {
        Fault::CallWithStatus(_, _, status) => status,
        Fault::Allocation(_) | Fault::Call(..) => default,
    })
}

/// Counts a call of a fault-injectable routine; the fault that fires on it, if any.
fn call_fault(inner: &Inner, api: &'static str) -> Option<Fault> {
    let mut faults = lock(&inner.faults);
    let count = faults.calls.entry(api).or_insert(0);
    *count += 1;
    let now = *count;
    fire(
        &mut faults,
        |f| matches!(f, Fault::Call(name, _) | Fault::CallWithStatus(name, ..) if *name == api),
        now,
    )
}

fn fire(faults: &mut FaultState, kind: impl Fn(&Fault) -> bool, now: u64) -> Option<Fault> {
    let i = faults
        .pending
        .iter()
        .position(|(f, at)| kind(f) && *at == now)?;
    let (fault, _) = faults.pending.remove(i);
    faults.triggered.push(fault);
    Some(fault)
}

/// The simulated IRQL of the calling thread.
pub(crate) fn current_irql() -> KIRQL {
    THREAD.with(|t| t.irql.get())
}

pub(crate) fn set_irql(irql: KIRQL) {
    THREAD.with(|t| t.irql.set(irql));
}

/// Bug check `APC_INDEX_MISMATCH`: a thread went back with unbalanced critical regions.
pub(crate) const APC_INDEX_MISMATCH: u32 = 0x01;
/// Bug check `IRQL_GT_ZERO_AT_SYSTEM_SERVICE`: a thread went back to user mode above
/// PASSIVE_LEVEL.
pub(crate) const IRQL_GT_ZERO_AT_SYSTEM_SERVICE: u32 = 0x4A;
/// Bug check `IRQL_UNEXPECTED_VALUE`: the IRQL is not what it should be.
pub(crate) const IRQL_UNEXPECTED_VALUE: u32 = 0xC8;

/// How the kernel reaches a driver callback, which decides how it reports a callback that
/// returns in another state than it was called in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalledFrom {
    /// A system call from user mode (an IRP dispatch, an ETW enable callback): going back to
    /// user mode above PASSIVE_LEVEL is `IRQL_GT_ZERO_AT_SYSTEM_SERVICE`.
    SystemService,
    /// The kernel's own code (a notify routine): `IRQL_UNEXPECTED_VALUE`.
    Kernel,
}

/// Runs a driver routine on the stack the kernel would give it: `call` calls the routine at
/// address `routine`. Returns `false`, without running `call`, for a routine it does not
/// know (one linked into the test, not in a loaded image); usersim then runs it on the
/// calling thread's own stack. When it returns `true` it has run `call` exactly once.
pub type CallbackStack = fn(routine: usize, call: &mut dyn FnMut()) -> bool;

/// The PE loader's stack runner, for every kernel of the process ([`set_callback_stack`]).
static CALLBACK_STACK: Mutex<Option<CallbackStack>> = Mutex::new(None);

/// Registers the stack runner of the PE loader that maps driver images into this process:
/// every driver routine usersim calls (IRP dispatch, NMR, ETW enable and process notify
/// callbacks, work item routines) goes through it, so a routine in a loaded image runs on a
/// kernel-sized stack, as on Windows, and a deep one overflows there. Registering again
/// replaces it.
pub fn set_callback_stack(stack: CallbackStack) {
    *lock(&CALLBACK_STACK) = Some(stack);
}

/// Calls the driver routine at `routine` through `call`, on the registered stack runner's
/// stack if it knows the routine ([`set_callback_stack`]), otherwise here.
pub(crate) fn run_driver_routine<R>(routine: usize, call: impl FnOnce() -> R) -> R {
    let Some(stack) = *lock(&CALLBACK_STACK) else {
        return call();
    };
    let (mut call, mut result) = (Some(call), None);
    let mut run = || result = call.take().map(|call| call());
    if !stack(routine, &mut run) {
        run();
    }
    result.unwrap_or_else(|| panic!("the callback stack runner did not run {routine:#x}"))
}

/// Calls the driver callback `what` (its type's name, at `routine`) through `call`, at the
/// IRQL and critical-region depth the caller set up, and bug-checks if it returned at another
/// IRQL or another depth: a callback must give back the thread as it got it (a raised IRQL or
/// an unbalanced `KeEnterCriticalRegion` would otherwise leak into its caller). It runs on the
/// stack [`run_driver_routine`] gives it.
pub(crate) fn call_driver_callback<R>(
    what: &'static str,
    routine: usize,
    from: CalledFrom,
    call: impl FnOnce() -> R,
) -> R {
    let (irql, depth) = (current_irql(), crate::cpu::critical_region_depth());
    let result = run_driver_routine(routine, call);
    let (returned, returned_depth) = (current_irql(), crate::cpu::critical_region_depth());
    if returned != irql {
        let code = match from {
            CalledFrom::SystemService => IRQL_GT_ZERO_AT_SYSTEM_SERVICE,
            CalledFrom::Kernel => IRQL_UNEXPECTED_VALUE,
        };
        bugcheck(
            what,
            code,
            [routine as u64, u64::from(returned), u64::from(irql), 0],
            &format!("{what} returned at IRQL {returned}; it was called at {irql}"),
        );
    }
    if returned_depth != depth {
        bugcheck(
            what,
            APC_INDEX_MISMATCH,
            [
                routine as u64,
                u64::from(returned_depth),
                u64::from(depth),
                0,
            ],
            &format!(
                "{what} returned inside {returned_depth} critical region(s); it was called inside {depth}"
            ),
        );
    }
    result
}

/// Bug-checks if the calling thread's IRQL is above `max` for `api`.
pub(crate) fn require_irql(api: &'static str, max: KIRQL) {
    let irql = current_irql();
    if irql > max {
        bugcheck(
            api,
            ebpf_ext_sys::wdm::IRQL_NOT_LESS_OR_EQUAL,
            [u64::from(irql), u64::from(max), 0, 0],
            &format!("{api} called at IRQL {irql}, above its maximum {max}"),
        );
    }
}

/// Stops the simulated machine: prints the bug check (and a line the child-process helper
/// parses) and aborts the process, as a bug check halts a machine.
pub(crate) fn bugcheck(api: &str, code: u32, parameters: [u64; 4], message: &str) -> ! {
    let check = BugCheck {
        code,
        parameters,
        api: api.to_owned(),
        irql: current_irql(),
        message: message.to_owned(),
    };
    eprintln!("{check}");
    eprintln!(
        "{BUGCHECK_MARKER} code=0x{:X} p1=0x{:X} p2=0x{:X} p3=0x{:X} p4=0x{:X} irql={} api={} message={}",
        check.code,
        check.parameters[0],
        check.parameters[1],
        check.parameters[2],
        check.parameters[3],
        check.irql,
        check.api,
        check.message.replace('\n', " ")
    );
    process::abort();
}

/// Code reported (through the bug-check path) when a kernel routine is called on a thread
/// with no simulated kernel bound, when work is queued once the kernel's drop has stopped its
/// workers, and when a kernel is dropped from one of its own work routines. Not a Windows bug
/// check code.
pub const NO_KERNEL_BOUND: u32 = 0;

const BUGCHECK_MARKER: &str = "USERSIM-BUGCHECK";
const CHILD_ENV: &str = "EBPF_EXT_USERSIM_BUGCHECK_CHILD";

/// Runs `scenario` in a child process that is expected to die (a bug check, a fault), and
/// returns the first line of its output that starts with `marker`.
///
/// `test_path` is the full name of the calling test as the test harness knows it (for example
/// `"pool::double_free_bugchecks"` for a test in `tests/pool.rs`, or
/// `"module::tests::name"` for a unit test). The child re-runs the test binary with that
/// exact name; inside the child this function runs `scenario` directly. Everything the test
/// did before calling this runs again in the child, so a kernel created there is bound there.
/// `expected` names what should happen, for the panic message.
///
/// # Panics
/// If the child exits successfully or prints no `marker` line (the message has its output),
/// or cannot be started.
pub fn run_dying_child(
    test_path: &str,
    marker: &str,
    expected: &str,
    scenario: impl FnOnce(),
) -> String {
    if env::var(CHILD_ENV).is_ok_and(|v| v == test_path) {
        scenario();
        eprintln!("usersim: the scenario finished without {expected}");
        process::exit(0);
    }
    let exe = env::current_exe().expect("path of the test binary");
    let output = process::Command::new(exe)
        .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test_path)
        .output()
        .expect("start the child test process");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| l.starts_with(marker));
    match line {
        Some(line) if !output.status.success() => line.to_owned(),
        _ => panic!(
            "expected {expected} from {test_path}; the child exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        ),
    }
}

/// Runs `scenario` in a child process, expecting it to bug-check, and returns the bug check
/// (see [`run_dying_child`] for `test_path`).
///
/// # Panics
/// If the scenario finishes without a bug check, or the child cannot be started.
pub fn expect_bugcheck(test_path: &str, scenario: impl FnOnce()) -> BugCheck {
    let line = run_dying_child(test_path, BUGCHECK_MARKER, "a bug check", scenario);
    parse_bugcheck_line(&line)
        .unwrap_or_else(|| panic!("unreadable bug check line from {test_path}: {line}"))
}

fn parse_bugcheck_line(line: &str) -> Option<BugCheck> {
    let rest = line.strip_prefix(BUGCHECK_MARKER)?.trim_start();
    let (head, message) = rest.split_once(" message=")?;
    let mut values = HashMap::new();
    for pair in head.split(' ') {
        let (k, v) = pair.split_once('=')?;
        values.insert(k, v);
    }
    let hex = |k: &str| u64::from_str_radix(values.get(k)?.trim_start_matches("0x"), 16).ok();
    Some(BugCheck {
        code: u32::try_from(hex("code")?).ok()?,
        parameters: [hex("p1")?, hex("p2")?, hex("p3")?, hex("p4")?],
        api: (*values.get("api")?).to_owned(),
        irql: values.get("irql")?.parse().ok()?,
        message: message.to_owned(),
    })
}

/// Sweeps every allocation failure point of `scenario`: runs it once on a fresh kernel to
/// count its allocations, then once more per allocation, on a fresh kernel each time, with
/// that allocation failing. After every run the kernel must have no leaks (pool, devices,
/// work items, NMR and ETW registrations). Returns the number of failure points swept.
///
/// The scenario must clean up after itself whether or not a step failed, which is exactly what
/// the sweep proves.
///
/// # Panics
/// If a run leaks, or the scenario panics.
pub fn sweep_allocation_failures(scenario: impl Fn(&Kernel)) -> u64 {
    let points = {
        let kernel = Kernel::new();
        scenario(&kernel);
        kernel.wait_for_work_items();
        kernel.assert_no_leaks();
        kernel.allocation_count()
    };
    for n in 1..=points {
        let kernel = Kernel::new();
        kernel.inject(Fault::Allocation(n));
        scenario(&kernel);
        kernel.wait_for_work_items();
        assert_eq!(
            kernel.faults_triggered(),
            vec![Fault::Allocation(n)],
            "allocation {n} of {points} was not reached"
        );
        kernel.assert_no_leaks();
    }
    points
}

/// Sweeps every failure point of the fault-injectable routines ([`FAULTABLE_APIS`]) that
/// `scenario` calls: runs it once on a fresh kernel to count the calls of each routine, then
/// once per call, on a fresh kernel each time, with that call failing. After every run the
/// kernel must have no leaks. Returns the number of failure points swept.
///
/// # Panics
/// If a run leaks, or the scenario panics.
pub fn sweep_call_failures(scenario: impl Fn(&Kernel)) -> u64 {
    let counts: Vec<(&'static str, u64)> = {
        let kernel = Kernel::new();
        scenario(&kernel);
        kernel.wait_for_work_items();
        kernel.assert_no_leaks();
        FAULTABLE_APIS
            .iter()
            .map(|&api| (api, kernel.call_count(api)))
            .collect()
    };
    let mut points = 0;
    for (api, calls) in counts {
        for n in 1..=calls {
            let kernel = Kernel::new();
            kernel.inject(Fault::Call(api, n));
            scenario(&kernel);
            kernel.wait_for_work_items();
            assert_eq!(
                kernel.faults_triggered(),
                vec![Fault::Call(api, n)],
                "call {n} of {calls} to {api} was not reached"
            );
            kernel.assert_no_leaks();
            points += 1;
        }
    }
    points
}
