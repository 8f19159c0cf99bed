//! The core's epoch as a map provider reaches it: the six epoch functions of the map client's
//! dispatch table (`epoch_enter`, `epoch_exit`, `epoch_allocate_with_tag`,
//! `epoch_allocate_cache_aligned_with_tag`, `epoch_free`, `epoch_free_cache_aligned`), and the
//! epochs the core itself enters around every program run, batch and custom-map callback.
//!
//! Memory freed under epoch control goes back to the pool only once every epoch that was
//! active when it was freed has ended, on any thread of the simulated kernel: a program that
//! found an object before the provider unlinked and freed it may go on reading it until its
//! run ends. The memory is the kernel's pool, taken with the provider's tag, so memory a
//! provider allocates and never frees shows in `Kernel::assert_no_leaks` as the provider's.
//!
//! What the core-sim checks (each a bug check, [`Contract`]):
//! - an exit names a state that an enter on this thread recorded and that still holds the
//!   record enter wrote ([`Contract::EpochStateMoved`]; the core unlinks the record through
//!   the list links it wrote there), on the thread that entered
//!   ([`Contract::EpochOtherThread`]), at the IRQL of the enter ([`Contract::EpochExitIrql`]);
//!   an enter never reuses a state that is entered ([`Contract::EpochStateReused`]);
//! - a free names memory the matching allocator returned, once
//!   ([`Contract::EpochMemoryInvalid`]: the core finds its header in front of the memory and
//!   fails fast on one already freed);
//! - an allocation is of at least one byte ([`Contract::EpochAllocateZero`], the core's
//!   assertion);
//! - allocations and frees happen inside an epoch ([`Contract::OutsideEpoch`]). Upstream
//!   documents this as a requirement and leaves breaking it undefined; the core-sim is stricter
//!   and stops at once. Helpers, and the map provider's callbacks for requests and programs,
//!   already run inside one; a map's teardown (its cleanup deletes and
//!   `postprocess_map_delete`) does not, as the core runs it from an epoch work item that
//!   enters none (upstream's documentation says otherwise; its code is what runs).
//!
//! # State
//! Per thread: the epochs it is inside and the records of its explicit enters (as the core
//! keeps per-CPU lists). Per simulated kernel: the epoch clock, whether each thread is inside
//! an epoch and since when, and the epoch memory, kept as a usersim component of the kernel
//! (dropped with it), so tests that run as threads of one process never see each other's
//! epochs.

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ebpf_ext_sys::ebpf_extension::EBPF_EPOCH_STATE_SIZE;
use ebpf_ext_sys::intrin::KeGetCurrentIrql;
use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::{ExAllocatePool2, ExFreePoolWithTag, POOL_FLAG_NON_PAGED};

use crate::batch::{at_dispatch, require_dispatch_or_below, thread_tag};
use crate::contract::Contract;
use crate::nmr::lock;

/// Bytes in front of what `epoch_allocate_with_tag` returns (the core's allocation header:
/// list links, the epoch it was freed in, its kind).
const HEADER: usize = 32;
/// Alignment of what `epoch_allocate_cache_aligned_with_tag` returns, and the bytes in front
/// of it.
pub const CACHE_LINE: usize = 64;

/// Which allocator returned a block, and so which free it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    CacheAligned,
}

impl Kind {
    fn allocator(self) -> &'static str {
        match self {
            Kind::Plain => "epoch_allocate_with_tag",
            Kind::CacheAligned => "epoch_allocate_cache_aligned_with_tag",
        }
    }

    fn free(self) -> &'static str {
        match self {
            Kind::Plain => "epoch_free",
            Kind::CacheAligned => "epoch_free_cache_aligned",
        }
    }
}

/// One block of epoch memory.
struct Block {
    /// What the pool returned.
    base: usize,
    tag: u32,
    kind: Kind,
    /// The epoch clock when it was freed; `None` while live.
    freed_at: Option<u64>,
}

/// Counts of one kernel's epoch memory, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochMemory {
    /// Blocks allocated.
    pub allocated: u64,
    /// Blocks freed (handed to `epoch_free` or `epoch_free_cache_aligned`).
    pub freed: u64,
    /// Freed blocks given back to the pool (no epoch that could see them remained).
    pub reclaimed: u64,
}

impl EpochMemory {
    /// Blocks freed and not yet given back to the pool.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.freed - self.reclaimed
    }

    /// Blocks allocated and not yet freed.
    #[must_use]
    pub fn live(&self) -> u64 {
        self.allocated - self.freed
    }
}

/// What one kernel's threads share.
#[derive(Default)]
struct Shared {
    /// One per live thread that has entered an epoch: 0 outside, else 1 + the clock at its
    /// outermost enter.
    threads: Vec<Arc<AtomicU64>>,
    /// Live and freed blocks, by the address the allocator returned.
    blocks: HashMap<usize, Block>,
    /// The freed ones' addresses, in the order they were freed (so in clock order).
    freed: Vec<usize>,
    counts: EpochMemory,
}

/// One simulated kernel's epoch.
#[derive(Default)]
struct Machine {
    /// The epoch clock: each free advances it.
    clock: AtomicU64,
    /// Freed blocks not yet given back (read at every exit, without the lock).
    pending: AtomicUsize,
    /// Callers of [`synchronize`] waiting now.
    synchronizing: AtomicUsize,
    shared: Mutex<Shared>,
}

const _: () = assert!(EBPF_EPOCH_STATE_SIZE == size_of::<[u64; 4]>());

/// One explicit `epoch_enter` on this thread.
struct Record {
    state: usize,
    irql: KIRQL,
    written: [u64; 4],
}

/// The calling thread's epochs.
#[derive(Default)]
struct ThreadEpochs {
    /// The kernel (by id) this thread last used, its machine, and this thread's slot there.
    kernel: Option<(u64, Arc<Machine>, Arc<AtomicU64>)>,
    /// Epochs entered and not exited: the core's own and explicit ones.
    depth: u32,
    records: Vec<Record>,
    serial: u64,
}

thread_local! {
    static THREAD: RefCell<ThreadEpochs> = RefCell::default();
}

/// The epoch of the kernel bound to this thread and this thread's slot in it (registered on
/// first use); `None` if no kernel is bound. Takes usersim's lock only when the thread's
/// kernel changed.
fn machine(t: &mut ThreadEpochs) -> Option<(Arc<Machine>, Arc<AtomicU64>)> {
    let id = ebpf_ext_usersim::kernel_id()?;
    if let Some((kernel, machine, slot)) = &t.kernel
        && *kernel == id
    {
        return Some((Arc::clone(machine), Arc::clone(slot)));
    }
    // The epoch the thread is inside belongs to the kernel it entered on: its slot there must
    // stay, and this kernel's pool is not that kernel's.
    assert!(
        t.depth == 0 || t.kernel.is_none(),
        "a thread inside an epoch of one simulated kernel bound another"
    );
    let machine = ebpf_ext_usersim::component::<Machine>()?;
    let slot = Arc::new(AtomicU64::new(0));
    lock(&machine.shared).threads.push(Arc::clone(&slot));
    t.kernel = Some((id, Arc::clone(&machine), Arc::clone(&slot)));
    Some((machine, slot))
}

/// The epoch of the kernel bound to this thread; `None` if none is bound.
fn current_machine() -> Option<Arc<Machine>> {
    THREAD.with_borrow_mut(|t| machine(t).map(|(machine, _)| machine))
}

/// Enters an epoch on this thread: the core's own (a batch begin), or an explicit one.
pub(crate) fn enter() {
    THREAD.with_borrow_mut(|t| {
        if t.depth == 0 {
            let Some((machine, slot)) = machine(t) else {
                return;
            };
            slot.store(machine.clock.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
        }
        t.depth += 1;
    });
}

/// Leaves an epoch on this thread; the last one gives back what no epoch can see any more.
pub(crate) fn exit() {
    let outermost = THREAD.with_borrow_mut(|t| {
        if t.depth == 0 {
            return None;
        }
        t.depth -= 1;
        if t.depth != 0 {
            return None;
        }
        let (_, machine, slot) = t.kernel.as_ref()?;
        slot.store(0, Ordering::SeqCst);
        Some(Arc::clone(machine))
    });
    if let Some(machine) = outermost
        && machine.pending.load(Ordering::SeqCst) != 0
    {
        reclaim(&machine);
    }
}

/// Gives back every freed block no active epoch entered before it was freed.
fn reclaim(machine: &Machine) {
    let mut given_back = Vec::new();
    {
        let mut shared = lock(&machine.shared);
        // A slot only the list holds is a thread's that has ended (or bound another kernel).
        shared.threads.retain(|slot| Arc::strong_count(slot) > 1);
        let oldest = shared
            .threads
            .iter()
            .map(|slot| slot.load(Ordering::SeqCst))
            .filter(|&entered| entered != 0)
            .map(|entered| entered - 1)
            .min()
            .unwrap_or(u64::MAX);
        let Shared { blocks, freed, .. } = &mut *shared;
        // Freed in clock order: the ones an active epoch may still see come last.
        let due = freed
            .iter()
            .take_while(|address| {
                blocks
                    .get(*address)
                    .and_then(|block| block.freed_at)
                    .is_some_and(|at| at < oldest)
            })
            .count();
        for address in freed.drain(..due) {
            if let Some(block) = blocks.remove(&address) {
                given_back.push((block.base, block.tag));
            }
        }
        shared.counts.reclaimed += given_back.len() as u64;
        machine
            .pending
            .fetch_sub(given_back.len(), Ordering::SeqCst);
    }
    for (base, tag) in given_back {
        // SAFETY: pool this module allocated with `tag`, removed from the blocks above.
        unsafe { ExFreePoolWithTag(base as *mut c_void, tag) };
    }
}

/// The core's `ebpf_epoch_synchronize`: returns once every epoch that was active on a live
/// thread of this kernel when it was called has ended (a thread that ended inside an epoch
/// holds none). Called inside an epoch, it waits for ever for the caller's own, as the
/// core's would.
///
/// # IRQL
/// The core's must be called below DISPATCH_LEVEL. This one waits by yielding, then
/// sleeping, at any IRQL, because usersim runs NMR's detach callbacks, where it is called, at
/// DISPATCH_LEVEL.
pub(crate) fn synchronize() {
    let Some(machine) = current_machine() else {
        return;
    };
    // Epochs entered from here on start at `now` or later; the ones to wait for, before it.
    let now = machine.clock.fetch_add(1, Ordering::SeqCst) + 1;
    machine.synchronizing.fetch_add(1, Ordering::SeqCst);
    let mut round = 0u32;
    loop {
        let waiting = lock(&machine.shared).threads.iter().any(|slot| {
            let entered = slot.load(Ordering::SeqCst);
            // Only the list holds the slot of a thread that has ended.
            Arc::strong_count(slot) > 1 && entered != 0 && entered - 1 < now
        });
        if !waiting {
            break;
        }
        if round < 64 {
            std::thread::yield_now();
            round += 1;
        } else {
            std::thread::sleep(core::time::Duration::from_millis(1));
        }
    }
    machine.synchronizing.fetch_sub(1, Ordering::SeqCst);
}

/// How many threads of the kernel bound to the calling thread wait now for the epochs that
/// were active when they began to end (the core's `ebpf_epoch_synchronize`, which a
/// program-information binding's detach ends with): a test racing such a detach waits on
/// this rather than sleeping.
#[must_use]
pub fn epoch_synchronize_waiters() -> usize {
    current_machine().map_or(0, |m| m.synchronizing.load(Ordering::SeqCst))
}

/// Runs `f` inside an epoch of the core's own (a program run, a batch, a provider callback
/// other than a map's teardown).
pub(crate) fn protected<R>(f: impl FnOnce() -> R) -> R {
    enter();
    let value = f();
    exit();
    value
}

/// Whether the calling thread is inside an epoch.
#[must_use]
pub fn in_epoch() -> bool {
    THREAD.with_borrow(|t| t.depth != 0)
}

/// The epoch memory of the kernel bound to the calling thread (zero if none is bound or it
/// has none).
#[must_use]
pub fn epoch_memory() -> EpochMemory {
    current_machine().map_or_else(EpochMemory::default, |m| lock(&m.shared).counts)
}

pub(crate) fn require_in_epoch(what: &str) {
    if !in_epoch() {
        Contract::OutsideEpoch.broken(
            format_args!("{what} outside an epoch (call epoch_enter first)"),
            0,
            0,
        );
    }
}

/// `epoch_enter`.
pub(crate) unsafe extern "win64" fn epoch_enter(state: *mut c_void) {
    require_dispatch_or_below("epoch_enter");
    if state.is_null() {
        Contract::NullPointer.broken(format_args!("epoch_enter with a NULL state"), 0, 0);
    }
    let address = state as usize;
    let irql = KeGetCurrentIrql();
    let tag = thread_tag();
    let written = at_dispatch(|| {
        THREAD.with_borrow_mut(|t| {
            if t.records.iter().any(|r| r.state == address) {
                return None;
            }
            t.serial += 1;
            // What the core's enter writes: list links (here, the thread), epoch, processor
            // and entry IRQL.
            let written = [tag, tag, t.serial, u64::from(irql) << 32];
            t.records.push(Record {
                state: address,
                irql,
                written,
            });
            Some(written)
        })
    });
    let Some(written) = written else {
        Contract::EpochStateReused.broken(
            format_args!("epoch_enter on the state at {address:#x}, entered and not exited"),
            address,
            0,
        );
    };
    // SAFETY: the caller's `EBPF_EPOCH_STATE_SIZE` writable bytes (the function's contract).
    unsafe { state.cast::<[u64; 4]>().write_unaligned(written) };
    enter();
}

/// `epoch_exit`.
pub(crate) unsafe extern "win64" fn epoch_exit(state: *mut c_void) {
    require_dispatch_or_below("epoch_exit");
    if state.is_null() {
        Contract::NullPointer.broken(format_args!("epoch_exit with a NULL state"), 0, 0);
    }
    let address = state as usize;
    // SAFETY: the caller's state, `EBPF_EPOCH_STATE_SIZE` readable bytes.
    let now = unsafe { state.cast::<[u64; 4]>().read_unaligned() };
    let entered = THREAD.with_borrow(|t| {
        t.records
            .iter()
            .find(|r| r.state == address)
            .map(|r| (r.irql, r.written))
    });
    let Some((irql_at_enter, written)) = entered else {
        if now[0] != 0 && now[0] != thread_tag() && now[0] == now[1] {
            Contract::EpochOtherThread.broken(
                format_args!(
                    "epoch_exit on a thread other than the one that entered the state at {address:#x}"
                ),
                address,
                0,
            );
        }
        Contract::EpochStateMoved.broken(
            format_args!(
                "epoch_exit with the state at {address:#x}, which epoch_enter was not given or which has exited (moved or copied?)"
            ),
            address,
            0,
        );
    };
    if now != written {
        Contract::EpochStateMoved.broken(
            format_args!(
                "epoch_exit with the state at {address:#x}, whose record epoch_enter wrote was changed"
            ),
            address,
            0,
        );
    }
    let irql = KeGetCurrentIrql();
    if irql != irql_at_enter {
        Contract::EpochExitIrql.broken(
            format_args!("epoch_exit at IRQL {irql}, epoch_enter was at IRQL {irql_at_enter}"),
            usize::from(irql),
            usize::from(irql_at_enter),
        );
    }
    at_dispatch(|| THREAD.with_borrow_mut(|t| t.records.retain(|r| r.state != address)));
    exit();
}

/// Allocates `size` zeroed bytes of pool with `tag` for `kind`; NULL if the pool has none.
fn allocate(size: usize, tag: u32, kind: Kind) -> *mut c_void {
    require_in_epoch(kind.allocator());
    if size == 0 {
        Contract::EpochAllocateZero.broken(format_args!("{} of 0 bytes", kind.allocator()), 0, 0);
    }
    let Some(machine) = current_machine() else {
        return ptr::null_mut();
    };
    let front = match kind {
        Kind::Plain => HEADER,
        Kind::CacheAligned => CACHE_LINE,
    };
    // Room to align the block's start to a cache line.
    let slack = if kind == Kind::CacheAligned {
        CACHE_LINE - 1
    } else {
        0
    };
    let Some(total) = size.checked_add(front + slack) else {
        return ptr::null_mut();
    };
    // SAFETY: a pool allocation with the caller's tag; usersim zeroes it, as the core's does.
    let base = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, total, tag) };
    if base.is_null() {
        return ptr::null_mut();
    }
    let start = (base as usize).next_multiple_of(if slack == 0 { 1 } else { CACHE_LINE });
    let memory = start + front;
    let mut shared = lock(&machine.shared);
    shared.blocks.insert(
        memory,
        Block {
            base: base as usize,
            tag,
            kind,
            freed_at: None,
        },
    );
    shared.counts.allocated += 1;
    memory as *mut c_void
}

/// Frees `memory` of `kind` under epoch control.
fn free(memory: *mut c_void, kind: Kind) {
    let what = kind.free();
    if memory.is_null() {
        return;
    }
    require_in_epoch(what);
    let Some(machine) = current_machine() else {
        return;
    };
    let address = memory as usize;
    let mut shared = lock(&machine.shared);
    let refusal = match shared.blocks.get(&address) {
        None => Some(format!(
            "{what} of {address:#x}, which no epoch allocator returned (or was freed and reclaimed already)"
        )),
        Some(block) if block.freed_at.is_some() => {
            Some(format!("{what} of {address:#x}, freed already"))
        }
        Some(block) if block.kind != kind => Some(format!(
            "{what} of {address:#x}, which {} returned",
            block.kind.allocator()
        )),
        Some(_) => None,
    };
    if let Some(refusal) = refusal {
        drop(shared);
        Contract::EpochMemoryInvalid.broken(format_args!("{refusal}"), address, 0);
    }
    let stamp = machine.clock.fetch_add(1, Ordering::SeqCst);
    if let Some(block) = shared.blocks.get_mut(&address) {
        block.freed_at = Some(stamp);
    }
    shared.freed.push(address);
    shared.counts.freed += 1;
    machine.pending.fetch_add(1, Ordering::SeqCst);
}

/// `epoch_allocate_with_tag`.
pub(crate) unsafe extern "win64" fn epoch_allocate_with_tag(size: usize, tag: u32) -> *mut c_void {
    allocate(size, tag, Kind::Plain)
}

/// `epoch_allocate_cache_aligned_with_tag`.
pub(crate) unsafe extern "win64" fn epoch_allocate_cache_aligned_with_tag(
    size: usize,
    tag: u32,
) -> *mut c_void {
    allocate(size, tag, Kind::CacheAligned)
}

/// `epoch_free`.
pub(crate) unsafe extern "win64" fn epoch_free(memory: *mut c_void) {
    free(memory, Kind::Plain);
}

/// `epoch_free_cache_aligned`.
pub(crate) unsafe extern "win64" fn epoch_free_cache_aligned(memory: *mut c_void) {
    free(memory, Kind::CacheAligned);
}
