//! Batch begin, invoke and end as the core sees them: each thread keeps the list of states it
//! has begun and not ended, as the core keeps a per-CPU list of epoch records.
//!
//! The core links the address batch begin receives into its processor's list and unlinks
//! that address at batch end, so a provider must hand the very same address to every batch
//! invoke and to the one batch end, on the same thread, at the same IRQL. The lists here are
//! per thread (a batch runs on one thread), which also keeps tests that run as threads of one
//! process apart: nothing is shared between threads.

use core::cell::RefCell;
use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ebpf_ext_sys::ebpf_extension::{
    ebpf_execution_context_state_t, ebpf_execution_context_state_tail_call_t,
};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_SUCCESS, ebpf_result_t};
use ebpf_ext_sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeLowerIrql};

use crate::contract::Contract;

/// One begun batch.
struct Active {
    state: usize,
    irql: KIRQL,
    /// The epoch record begin wrote into the state (the core's list links, epoch, processor
    /// and IRQL), which end unlinks through.
    record: [u64; 4],
}

/// The calling thread's batches.
#[derive(Default)]
struct ThreadBatches {
    active: Vec<Active>,
    serial: u64,
    begins: u64,
    ends: u64,
}

thread_local! {
    static THREAD: RefCell<ThreadBatches> = RefCell::default();
}

/// Successful batch begins on the calling thread.
///
/// Per thread: the batch functions do not name a link, and a batch begins, runs and ends on
/// one thread, so this counts exactly the batches the calling test (or thread) ran.
#[must_use]
pub fn batch_begins() -> u64 {
    THREAD.with_borrow(|t| t.begins)
}

/// Successful batch ends on the calling thread (see [`batch_begins`]).
#[must_use]
pub fn batch_ends() -> u64 {
    THREAD.with_borrow(|t| t.ends)
}

/// Batches begun on the calling thread and not ended yet.
#[must_use]
pub fn open_batches() -> usize {
    THREAD.with_borrow(|t| t.active.len())
}

/// A number naming the calling thread while it lives (the address of its list).
pub(crate) fn thread_tag() -> u64 {
    THREAD.with(|t| ptr::from_ref(t) as usize as u64)
}

/// Bug-checks with [`Contract::IrqlAboveDispatch`] above DISPATCH_LEVEL.
pub(crate) fn require_dispatch_or_below(what: &str) {
    let irql = KeGetCurrentIrql();
    if irql > DISPATCH_LEVEL {
        Contract::IrqlAboveDispatch.broken(
            format_args!("{what} at IRQL {irql}, above DISPATCH_LEVEL"),
            usize::from(irql),
            0,
        );
    }
}

/// Who began or ends a batch: the provider through the dispatch table (counted by
/// [`batch_begins`] and [`batch_ends`]), or the core's own invoke, which runs every single
/// invocation as a batch of one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The provider's `batch_begin` / `batch_end`.
    Provider,
    /// The core's `invoke`.
    Invoke,
}

/// What the core's epoch enter and exit do to touch their processor's list: raise to
/// DISPATCH_LEVEL if below it, then lower back (usersim's IRQL, so the cost is modelled too).
pub(crate) fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    if KeGetCurrentIrql() >= DISPATCH_LEVEL {
        return f();
    }
    // SAFETY: raised from below DISPATCH_LEVEL and lowered back to the returned level on this
    // thread before returning.
    let old = unsafe { KeRaiseIrql(DISPATCH_LEVEL) };
    let value = f();
    // SAFETY: as above.
    unsafe { KeLowerIrql(old) };
    value
}

/// `ebpf_program_batch_begin_invoke_function_t`.
///
/// # Safety
/// `state` is NULL or writable for `state_size` bytes.
pub(crate) unsafe fn begin(caller: Caller, state_size: usize, state: *mut c_void) -> ebpf_result_t {
    require_dispatch_or_below("batch begin");
    // The size first, as the core checks it: a NULL state with a short size is refused.
    if state_size < size_of::<ebpf_execution_context_state_t>() {
        return EBPF_INVALID_ARGUMENT;
    }
    if state.is_null() {
        Contract::NullPointer.broken(format_args!("batch begin with a NULL state"), 0, 0);
    }
    let address = state as usize;
    let irql = KeGetCurrentIrql();
    let tag = thread_tag();
    let record = at_dispatch(|| {
        THREAD.with_borrow_mut(|t| {
            if t.active.iter().any(|a| a.state == address) {
                None
            } else {
                t.serial += 1;
                // What the core's epoch enter records: list links (here, the thread's list),
                // epoch, processor and entry IRQL.
                let record = [tag, tag, t.serial, u64::from(irql) << 32];
                t.active.push(Active {
                    state: address,
                    irql,
                    record,
                });
                if caller == Caller::Provider {
                    t.begins += 1;
                }
                Some(record)
            }
        })
    });
    let Some(record) = record else {
        Contract::BatchStateReused.broken(
            format_args!("batch begin on the state at {address:#x}, begun and not ended"),
            address,
            0,
        );
    };
    // The epoch record, then the execution state's thread and IRQL.
    let value = ebpf_execution_context_state_t {
        epoch_state: record,
        id: tag,
        current_irql: irql,
        tail_call_state: ebpf_execution_context_state_tail_call_t {
            next_program: ptr::null(),
            count: 0,
        },
    };
    // SAFETY: the caller provides `state_size` (≥ the state's size, checked) writable bytes.
    unsafe {
        state
            .cast::<ebpf_execution_context_state_t>()
            .write_unaligned(value);
    }
    // The batch is an epoch of the core's (its record is the state's first 32 bytes).
    crate::epoch::enter();
    EBPF_SUCCESS
}

/// Bug-checks unless `state` is a batch begun on this thread and not ended: with
/// [`Contract::BatchOtherThread`] if another thread began it, else
/// [`Contract::BatchStateMoved`].
///
/// # Safety
/// `state` is NULL or readable for `sizeof(ebpf_execution_context_state_t)` bytes.
unsafe fn require_active(state: *const c_void, what: &str) -> (KIRQL, [u64; 4]) {
    if state.is_null() {
        Contract::NullPointer.broken(format_args!("{what} with a NULL state"), 0, 0);
    }
    let address = state as usize;
    let active = THREAD.with_borrow(|t| {
        t.active
            .iter()
            .find(|a| a.state == address)
            .map(|a| (a.irql, a.record))
    });
    if let Some(active) = active {
        return active;
    }
    // SAFETY: readable (precondition).
    let recorded = unsafe {
        state
            .cast::<ebpf_execution_context_state_t>()
            .read_unaligned()
    };
    if recorded.id != 0 && recorded.id != thread_tag() {
        Contract::BatchOtherThread.broken(
            format_args!(
                "{what} on a thread other than the one that began the state at {address:#x}"
            ),
            address,
            0,
        );
    }
    Contract::BatchStateMoved.broken(
        format_args!(
            "{what} with the state at {address:#x}, which batch begin was not given or which has ended (moved or copied?)"
        ),
        address,
        0,
    );
}

/// The batch-invoke check: `state` must be an active batch of this thread.
///
/// # Safety
/// As [`require_active`].
pub(crate) unsafe fn require_invokable(state: *const c_void) {
    require_dispatch_or_below("batch invoke");
    // SAFETY: the caller's precondition.
    let _ = unsafe { require_active(state, "batch invoke") };
}

/// `ebpf_program_batch_end_invoke_function_t`: checks and unlinks the state, then clears it.
///
/// # Safety
/// `state` is NULL or writable for `sizeof(ebpf_execution_context_state_t)` bytes.
pub(crate) unsafe fn end(caller: Caller, state: *mut c_void) -> ebpf_result_t {
    require_dispatch_or_below("batch end");
    // SAFETY: the caller's precondition.
    let (begun_at, record) = unsafe { require_active(state, "batch end") };
    let address = state as usize;
    // SAFETY: readable (precondition); the state's first field is the epoch record.
    let now = unsafe { state.cast::<[u64; 4]>().read_unaligned() };
    if now != record {
        // The core unlinks the state through the links its epoch enter wrote there.
        Contract::BatchStateMoved.broken(
            format_args!(
                "batch end with the state at {address:#x}, whose epoch record batch begin wrote was changed (overwritten or re-initialised in place?)"
            ),
            address,
            0,
        );
    }
    let irql = KeGetCurrentIrql();
    if irql != begun_at {
        Contract::BatchEndIrql.broken(
            format_args!("batch end at IRQL {irql}, batch begin was at IRQL {begun_at}"),
            usize::from(irql),
            usize::from(begun_at),
        );
    }
    at_dispatch(|| {
        THREAD.with_borrow_mut(|t| {
            t.active.retain(|a| a.state != address);
            if caller == Caller::Provider {
                t.ends += 1;
            }
        });
    });
    // SAFETY: an active state is `sizeof(ebpf_execution_context_state_t)` writable bytes.
    unsafe {
        state
            .cast::<u8>()
            .write_bytes(0, size_of::<ebpf_execution_context_state_t>());
    }
    crate::epoch::exit();
    EBPF_SUCCESS
}
