//! The core's side of the contracts that the core-sim enforces by stopping the machine: what a
//! provider must never do with a link or a test-run context, and the bug check that says it
//! did.
//!
//! The real core (a checked build for its assertions) fails these with a bug check, a
//! fail-fast or memory corruption that surfaces later; the core-sim bug-checks at once through
//! usersim's `KeBugCheckEx`, with the broken [`Contract`] as the second parameter, so a test
//! (in a child process: see `ebpf_ext_usersim::expect_bugcheck`) can say which one it caught.

use core::fmt;

pub use ebpf_ext_sys::wdm::IRQL_NOT_LESS_OR_EQUAL;
use ebpf_ext_sys::wdm::KeBugCheckEx;

/// `KERNEL_SECURITY_CHECK_FAILURE`: what a fail-fast (`__fastfail`) bug-checks with in the
/// kernel; the first parameter is the fail-fast code.
pub const KERNEL_SECURITY_CHECK_FAILURE: u32 = 0x139;
/// `KMODE_EXCEPTION_NOT_HANDLED`: an exception in kernel mode nobody handled; the first
/// parameter is the exception code.
pub const KMODE_EXCEPTION_NOT_HANDLED: u32 = 0x1E;
/// `FAST_FAIL_CORRUPT_LIST_ENTRY`: `RemoveEntryList`/`InsertTailList` found links that do not
/// point back at the entry.
pub const FAST_FAIL_CORRUPT_LIST_ENTRY: u64 = 3;
/// `FAST_FAIL_INVALID_ARG`.
pub const FAST_FAIL_INVALID_ARG: u64 = 5;
/// `STATUS_ASSERTION_FAILURE` (0xC0000420): a failed `ASSERT` of a checked build.
pub const STATUS_ASSERTION_FAILURE: u64 = 0xC000_0420;
/// `STATUS_ACCESS_VIOLATION` (0xC0000005): a dereference of an invalid pointer.
pub const STATUS_ACCESS_VIOLATION: u64 = 0xC000_0005;
/// `FAST_FAIL_HEAP_METADATA_CORRUPTION`: an allocation's header says it cannot be freed (the
/// core's epoch free of memory freed already, or not its own).
pub const FAST_FAIL_HEAP_METADATA_CORRUPTION: u64 = 50;
/// `BAD_POOL_HEADER` (0x19): what Windows reports, later, for a write over the pool in front
/// of an allocation.
pub const BAD_POOL_HEADER: u32 = 0x19;

/// A contract between the core and a hook provider that the core-sim enforces with a bug
/// check. The number is the bug check's second parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
#[non_exhaustive]
pub enum Contract {
    /// A batch invoke or batch end got a state address batch begin never accepted (a moved
    /// or copied state), or one already ended: the core's per-CPU epoch list holds the
    /// address batch begin was given, so unlinking anything else corrupts it. Also a batch
    /// end whose state's epoch record (the list links and epoch batch begin wrote there) was
    /// changed in place meanwhile: the core unlinks through those links.
    BatchStateMoved = 1,
    /// Batch begin got a state that is already begun and not ended (linking it twice corrupts
    /// the per-CPU list).
    BatchStateReused = 2,
    /// Batch end at an IRQL other than batch begin's (`ebpf_epoch_exit` asserts it).
    BatchEndIrql = 3,
    /// A batch invoke or end on a thread (processor) other than batch begin's.
    BatchOtherThread = 4,
    /// An invoke, batch begin, batch invoke or batch end above DISPATCH_LEVEL.
    IrqlAboveDispatch = 5,
    /// An invoke with a NULL program context (the core asserts it, then writes the context
    /// header in front of it).
    NullProgramContext = 6,
    /// A NULL `result` or batch state pointer (the core writes through it).
    NullPointer = 7,
    /// A binding context that is not a link's (NULL, misaligned, or not what attach
    /// received): the core dereferences it as its link object.
    NotALink = 8,
    /// An invoke of a link whose detach has completed (the link's or the provider's): the
    /// core may have released the program and freed the link.
    InvokeAfterDetach = 9,
    /// A test-run context from `context_create` in a pool allocation that does not hold the
    /// 64 bytes in front of it: the core writes its context header there, over whatever
    /// precedes the allocation (checked for contexts in pool only).
    NoContextHeader = 10,
    /// An `epoch_exit` with a state address `epoch_enter` never got on this thread (moved,
    /// copied, or exited already), or whose record (the list links enter wrote there) was
    /// changed in place: the core unlinks the record through those links.
    EpochStateMoved = 11,
    /// An `epoch_enter` on a state that is entered and not exited (linking it twice corrupts
    /// the list).
    EpochStateReused = 12,
    /// An `epoch_exit` at an IRQL other than its `epoch_enter`'s (the core asserts it).
    EpochExitIrql = 13,
    /// An `epoch_exit` on a thread (processor) other than its `epoch_enter`'s (the core
    /// fails fast for an epoch entered at DISPATCH_LEVEL and takes a slow path below it; the
    /// core-sim stops at any IRQL).
    EpochOtherThread = 14,
    /// An `epoch_free` or `epoch_free_cache_aligned` of memory the matching epoch allocator
    /// did not return, or freed already (the core reads its header in front of the memory).
    EpochMemoryInvalid = 15,
    /// An epoch allocation or free outside an epoch-protected region (a map's teardown is
    /// one: the core runs it outside any). Upstream requires the region and leaves the rest
    /// undefined; the core-sim stops at once.
    OutsideEpoch = 16,
    /// An epoch allocation of 0 bytes (the core asserts the size).
    EpochAllocateZero = 17,
    /// A test run's `context_create` that succeeded with a NULL context: the core writes the
    /// context header in front of it (`CONTAINING_RECORD` of NULL).
    NullTestRunContext = 18,
    /// A test run's `context_destroy` that reported more `data_out` or `ctx_out` bytes than
    /// the capacity it was given: the core builds the reply from the reported sizes, past
    /// the buffers.
    TestRunOutputTooLarge = 19,
}

impl Contract {
    /// Every contract, in number order.
    pub const ALL: [Contract; 19] = [
        Contract::BatchStateMoved,
        Contract::BatchStateReused,
        Contract::BatchEndIrql,
        Contract::BatchOtherThread,
        Contract::IrqlAboveDispatch,
        Contract::NullProgramContext,
        Contract::NullPointer,
        Contract::NotALink,
        Contract::InvokeAfterDetach,
        Contract::NoContextHeader,
        Contract::EpochStateMoved,
        Contract::EpochStateReused,
        Contract::EpochExitIrql,
        Contract::EpochOtherThread,
        Contract::EpochMemoryInvalid,
        Contract::OutsideEpoch,
        Contract::EpochAllocateZero,
        Contract::NullTestRunContext,
        Contract::TestRunOutputTooLarge,
    ];

    /// The bug check code and first parameter this contract fails with.
    #[must_use]
    pub const fn bugcheck(self) -> (u32, u64) {
        match self {
            Contract::BatchStateMoved
            | Contract::BatchStateReused
            | Contract::EpochStateMoved
            | Contract::EpochStateReused => {
                (KERNEL_SECURITY_CHECK_FAILURE, FAST_FAIL_CORRUPT_LIST_ENTRY)
            }
            Contract::BatchOtherThread | Contract::EpochOtherThread => {
                (KERNEL_SECURITY_CHECK_FAILURE, FAST_FAIL_INVALID_ARG)
            }
            Contract::EpochMemoryInvalid => (
                KERNEL_SECURITY_CHECK_FAILURE,
                FAST_FAIL_HEAP_METADATA_CORRUPTION,
            ),
            Contract::BatchEndIrql
            | Contract::NullProgramContext
            | Contract::EpochExitIrql
            | Contract::OutsideEpoch
            | Contract::EpochAllocateZero => {
                (KMODE_EXCEPTION_NOT_HANDLED, STATUS_ASSERTION_FAILURE)
            }
            Contract::IrqlAboveDispatch => (IRQL_NOT_LESS_OR_EQUAL, 0),
            Contract::NullPointer
            | Contract::NotALink
            | Contract::InvokeAfterDetach
            | Contract::NullTestRunContext
            | Contract::TestRunOutputTooLarge => {
                (KMODE_EXCEPTION_NOT_HANDLED, STATUS_ACCESS_VIOLATION)
            }
            Contract::NoContextHeader => (BAD_POOL_HEADER, 0),
        }
    }

    /// The contract a core-sim bug check names, if it is one.
    #[must_use]
    pub fn of(check: &ebpf_ext_usersim::BugCheck) -> Option<Contract> {
        Contract::ALL.into_iter().find(|c| {
            let (code, first) = c.bugcheck();
            check.code == code
                && check.parameters[1] == *c as u64
                && (code == IRQL_NOT_LESS_OR_EQUAL || check.parameters[0] == first)
        })
    }

    /// Stops the machine: prints what was broken, then bug-checks with `(code, first,
    /// self, a, b)` (`IRQL_NOT_LESS_OR_EQUAL` has the IRQL as first parameter).
    pub(crate) fn broken(self, detail: fmt::Arguments<'_>, a: usize, b: usize) -> ! {
        let (code, first) = self.bugcheck();
        let first = if code == IRQL_NOT_LESS_OR_EQUAL {
            u64::from(ebpf_ext_sys::intrin::KeGetCurrentIrql())
        } else {
            first
        };
        eprintln!("core-sim: the provider broke the core's contract {self:?}: {detail}");
        let first = usize::try_from(first).unwrap_or(usize::MAX);
        // SAFETY: stopping the (simulated) machine is always allowed; usersim records it and
        // aborts the process.
        unsafe { KeBugCheckEx(code, first, self as usize, a, b) }
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
