//! Run-down protection: `EX_RUNDOWN_REF` and the cache-aware variant.
//!
//! `EX_RUNDOWN_REF` uses Windows' encoding while no wait is in progress: references counted in
//! steps of 2, bit 0 set once a wait has begun (from then on acquires fail). A waiter sleeps on
//! the kernel's wait condition until the count drains; the release that drops the last
//! reference under an active wait wakes it.
//!
//! Acquire is a compare-and-swap, as in the kernel: an acquire that fails (a wait has begun)
//! writes nothing, so a concurrent observer (`ExReInitializeRundownProtection`'s check, a
//! waiter) never sees a reference that was never granted.
//!
//! A wait that had to block leaves the reference as Windows does until `ExRundownCompleted`:
//! pointing at the waiter's wait block, where another wait would read references; a
//! cache-aware wait leaves it so in every processor's word whether or not it had to block,
//! until `ExRundownCompletedCacheAware`. usersim bug-checks such a second wait, and two waits
//! at once; a wait after the completion routine, or a plain wait after one that found nothing
//! outstanding, returns at once.
//!
//! The cache-aware reference keeps one `EX_RUNDOWN_REF`-encoded word per simulated processor,
//! each on its own cache line. Acquire compare-and-swaps the current processor's word, failing
//! without a write once its bit 0 is set; wait sets bit 0 in every word (from then on every
//! acquire fails) and then waits until the references of all words sum to zero. An acquire
//! that succeeded on a word did so before the waiter's `fetch_or` on that word (both are
//! read-modify-writes of one location), so the waiter's later reads count it. A reference
//! may be released on another processor than it was taken on: subtracting 2 keeps bit 0, the
//! words wrap, and only their sum matters.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use core::time::Duration;

use ebpf_ext_sys::ntdef::{BOOLEAN, FALSE, TRUE};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, EX_RUNDOWN_REF,
    EX_RUNDOWN_REF_CACHE_AWARE, POOL_FLAG_CACHE_ALIGNED, POOL_FLAG_NON_PAGED, POOL_FLAG_PAGED,
    POOL_TYPE,
};

use crate::cpu::{current_processor, processor_count};
use crate::kernel::{Inner, bugcheck, call_fails, lock, require_bound, require_irql, with_kernel};
use crate::pool::{pool_alloc, pool_free};

const ACTIVE: usize = 1;
const ONE_REF: usize = 2;
/// What a wait that had to block leaves in the reference until `ExRundownCompleted`: Windows
/// leaves a pointer to the waiter's (stack) wait block there, with bit 0 set; another wait
/// would read it as references.
const WAIT_BLOCK: usize = usize::MAX;
const CACHE_LINE: usize = 64;
const CACHE_AWARE_MAGIC: u32 = 0x5275_6E43; // "CnuR"
/// Cache-aware wait states (`CacheAware::wait`).
const OPEN: u32 = 0;
const WAITING: u32 = 1;
const BLOCKED: u32 = 2;
const COMPLETED: u32 = 3;

fn count_word<'a>(run_ref: *mut EX_RUNDOWN_REF) -> &'a AtomicUsize {
    // SAFETY: callers pass a valid, aligned EX_RUNDOWN_REF that outlives the call; `Count` is
    // its first and only field. The kernel routines are the only writers while it is in use,
    // and they write it atomically.
    unsafe { AtomicUsize::from_ptr(run_ref.cast::<usize>()) }
}

fn wake_waiters(k: &Inner) {
    let _guard = lock(&k.wait_lock);
    k.wait_cv.notify_all();
}

fn wait_until(k: &Inner, drained: impl Fn() -> bool) {
    let mut guard = lock(&k.wait_lock);
    while !drained() {
        // Counted under the lock the last release notifies under: a test that sees the
        // sleeper knows the check before it found references outstanding.
        k.rundown_checks.fetch_add(1, Ordering::SeqCst);
        k.rundown_sleepers.fetch_add(1, Ordering::SeqCst);
        guard = k
            .wait_cv
            .wait_timeout(guard, Duration::from_millis(50))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        k.rundown_sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `ExInitializeRundownProtection`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExInitializeRundownProtection(RunRef: *mut EX_RUNDOWN_REF) {
    require_bound("ExInitializeRundownProtection");
    require_irql("ExInitializeRundownProtection", APC_LEVEL);
    count_word(RunRef).store(0, Ordering::Release);
}

/// `ExReInitializeRundownProtection`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReInitializeRundownProtection(RunRef: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExReInitializeRundownProtection";
    require_bound(API);
    require_irql(API, APC_LEVEL);
    let word = count_word(RunRef);
    let value = word.load(Ordering::Acquire);
    if value != ACTIVE && value != WAIT_BLOCK {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [value as u64, RunRef as u64, 0, 0],
            "re-initialised a rundown reference that was not run down",
        );
    }
    word.store(0, Ordering::Release);
}

/// `ExAcquireRundownProtection`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquireRundownProtection(RunRef: *mut EX_RUNDOWN_REF) -> BOOLEAN {
    require_bound("ExAcquireRundownProtection");
    require_irql("ExAcquireRundownProtection", DISPATCH_LEVEL);
    crate::pool::require_nonpaged(
        "ExAcquireRundownProtection",
        RunRef as usize,
        "the rundown reference",
        false,
    );
    if try_acquire(count_word(RunRef)) {
        TRUE
    } else {
        FALSE
    }
}

/// Takes one reference on an `EX_RUNDOWN_REF`-encoded word unless a wait has begun. A failed
/// attempt writes nothing: it is a compare-and-swap loop, never an increment undone later.
fn try_acquire(word: &AtomicUsize) -> bool {
    let mut value = word.load(Ordering::Relaxed);
    loop {
        if value & ACTIVE != 0 {
            return false;
        }
        match word.compare_exchange_weak(
            value,
            value.wrapping_add(ONE_REF),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => value = seen,
        }
    }
}

/// `ExReleaseRundownProtection`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid and the caller holds a reference.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleaseRundownProtection(RunRef: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExReleaseRundownProtection";
    require_bound(API);
    require_irql(API, DISPATCH_LEVEL);
    crate::pool::require_nonpaged(API, RunRef as usize, "the rundown reference", false);
    let old = count_word(RunRef).fetch_sub(ONE_REF, Ordering::Release);
    if old < ONE_REF || old == WAIT_BLOCK {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [old as u64, RunRef as u64, 0, 0],
            "released a rundown reference that was not acquired",
        );
    }
    if old == ACTIVE + ONE_REF {
        with_kernel(API, |k| wake_waiters(k));
    }
}

/// `ExWaitForRundownProtectionRelease`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExWaitForRundownProtectionRelease(RunRef: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExWaitForRundownProtectionRelease";
    require_irql(API, APC_LEVEL);
    let word = count_word(RunRef);
    let old = word.fetch_or(ACTIVE, Ordering::AcqRel);
    if old == 0 || old == ACTIVE {
        // Nothing outstanding, or run down and completed: returns at once.
        return;
    }
    if old == WAIT_BLOCK {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [old as u64, RunRef as u64, 0, 0],
            "waited again on a rundown reference whose wait blocked, without ExRundownCompleted",
        );
    }
    if old & ACTIVE != 0 {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [old as u64, RunRef as u64, 0, 0],
            "two waits at once on one rundown reference",
        );
    }
    with_kernel(API, |k| {
        wait_until(k, || word.load(Ordering::Acquire) == ACTIVE);
    });
    word.store(WAIT_BLOCK, Ordering::Release);
}

/// `ExRundownCompleted`.
///
/// # Safety
/// Kernel routine; `RunRef` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExRundownCompleted(RunRef: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExRundownCompleted";
    require_bound(API);
    require_irql(API, APC_LEVEL);
    let word = count_word(RunRef);
    let value = word.load(Ordering::Acquire);
    if value != ACTIVE && value != WAIT_BLOCK {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [value as u64, RunRef as u64, 0, 0],
            "ExRundownCompleted before the wait completed",
        );
    }
    word.store(ACTIVE, Ordering::Release);
}

// ---- cache-aware ------------------------------------------------------------------------------

/// Header of a cache-aware reference; the per-processor words (`EX_RUNDOWN_REF` encoding)
/// follow on their own cache lines.
#[repr(C)]
struct CacheAware {
    magic: AtomicU32,
    /// `OPEN`, `WAITING`, `BLOCKED` (a wait returned; Windows leaves its wait block in the
    /// words until `ExRundownCompletedCacheAware`) or `COMPLETED`.
    wait: AtomicU32,
    slots: u32,
    /// Pool tag when allocated by `ExAllocateCacheAwareRundownProtection`, else 0.
    pool_tag: u32,
    /// Whether it lives in paged pool (allocated from it, or caller storage in it): acquire
    /// and release (allowed up to DISPATCH_LEVEL for a non-paged reference) may then not run
    /// above APC_LEVEL.
    paged: bool,
    /// Offset from the header to the first word (cache-line aligned).
    first_slot: usize,
}

impl CacheAware {
    fn words(&self) -> impl Iterator<Item = &AtomicUsize> {
        (0..self.slots).map(|i| slot(self, i))
    }

    /// References outstanding, summed over the processors' words (each may have wrapped: a
    /// reference may be released on another processor than it was acquired on). Negative
    /// when more were released than acquired.
    fn outstanding(&self) -> isize {
        self.words()
            .map(|w| w.load(Ordering::SeqCst) & !ACTIVE)
            .fold(0, usize::wrapping_add)
            .cast_signed()
            / ONE_REF.cast_signed()
    }

    /// Whether a wait has begun (bit 0 set in every word).
    fn run_down(&self) -> bool {
        self.words().all(|w| w.load(Ordering::SeqCst) & ACTIVE != 0)
    }
}

fn cache_aware_size(slots: u32) -> usize {
    // Header, padding to reach a cache line boundary from any 8-aligned start, counters.
    CACHE_LINE + CACHE_LINE + slots as usize * CACHE_LINE
}

fn cache_aware<'a>(api: &'static str, r: *mut EX_RUNDOWN_REF_CACHE_AWARE) -> &'a CacheAware {
    if r.is_null() {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [0; 4],
            "NULL cache-aware rundown reference",
        );
    }
    // SAFETY: non-null, and callers pass storage initialised by this module, which lays a
    // `CacheAware` at its start; only atomics are written after initialisation.
    let header = unsafe { &*r.cast::<CacheAware>() };
    if header.magic.load(Ordering::Relaxed) != CACHE_AWARE_MAGIC {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [r as u64, 0, 0, 0],
            "cache-aware rundown reference used before initialisation",
        );
    }
    header
}

fn slot(header: &CacheAware, index: u32) -> &AtomicUsize {
    let offset = header.first_slot + (index % header.slots) as usize * CACHE_LINE;
    let counter = ptr::from_ref(header)
        .wrapping_byte_add(offset)
        .cast::<AtomicUsize>();
    // SAFETY: `first_slot + (index % slots) * CACHE_LINE` lies inside the storage sized by
    // `cache_aware_size(slots)`, on a 64-byte boundary, and was initialised to zero.
    unsafe { &*counter }
}

fn init_cache_aware(r: *mut EX_RUNDOWN_REF_CACHE_AWARE, slots: u32, pool_tag: u32, paged: bool) {
    let base = r as usize;
    let first = (base + size_of::<CacheAware>()).next_multiple_of(CACHE_LINE) - base;
    // SAFETY: the storage is at least `cache_aware_size(slots)` bytes (checked or allocated by
    // the callers) and 8-byte aligned; nothing else uses it yet.
    unsafe {
        ptr::write_bytes(r.cast::<u8>(), 0, first + slots as usize * CACHE_LINE);
    }
    let header = CacheAware {
        magic: AtomicU32::new(CACHE_AWARE_MAGIC),
        wait: AtomicU32::new(OPEN),
        slots,
        pool_tag,
        paged,
        first_slot: first,
    };
    // SAFETY: as above; the header fits before `first`.
    unsafe { r.cast::<CacheAware>().write(header) };
}

/// `ExSizeOfRundownProtectionCacheAware`.
#[unsafe(no_mangle)]
pub extern "win64" fn ExSizeOfRundownProtectionCacheAware() -> usize {
    require_irql("ExSizeOfRundownProtectionCacheAware", APC_LEVEL);
    cache_aware_size(processor_count("ExSizeOfRundownProtectionCacheAware"))
}

/// `ExInitializeRundownProtectionCacheAware`.
///
/// # Safety
/// Kernel routine; `RunRefCacheAware` points to `RunRefSize` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExInitializeRundownProtectionCacheAware(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
    RunRefSize: usize,
) {
    const API: &str = "ExInitializeRundownProtectionCacheAware";
    require_irql(API, APC_LEVEL);
    let slots = processor_count(API);
    if RunRefSize < cache_aware_size(slots) || !(RunRefCacheAware as usize).is_multiple_of(8) {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [RunRefSize as u64, 0, 0, 0],
            "storage smaller than ExSizeOfRundownProtectionCacheAware() or misaligned",
        );
    }
    // Caller storage in paged pool is as limited as a paged allocation's.
    let paged = crate::pool::in_paged_pool(RunRefCacheAware as usize);
    init_cache_aware(RunRefCacheAware, slots, 0, paged);
}

/// `ExAllocateCacheAwareRundownProtection`.
#[unsafe(no_mangle)]
pub extern "win64" fn ExAllocateCacheAwareRundownProtection(
    PoolType: POOL_TYPE,
    PoolTag: u32,
) -> *mut EX_RUNDOWN_REF_CACHE_AWARE {
    const API: &str = "ExAllocateCacheAwareRundownProtection";
    require_irql(API, APC_LEVEL);
    if with_kernel(API, |k| call_fails(k, API)) || PoolTag == 0 {
        return ptr::null_mut();
    }
    let slots = processor_count(API);
    // The legacy pool types: odd ones (PagedPool, PagedPoolCacheAligned, ...) are paged.
    let paged = PoolType & 1 != 0;
    let pool = if paged {
        POOL_FLAG_PAGED
    } else {
        POOL_FLAG_NON_PAGED
    };
    let p = pool_alloc(
        API,
        pool | POOL_FLAG_CACHE_ALIGNED,
        cache_aware_size(slots),
        PoolTag,
    );
    if !p.is_null() {
        init_cache_aware(p.cast(), slots, PoolTag, paged);
    }
    p.cast()
}

/// `ExFreeCacheAwareRundownProtection`.
///
/// # Safety
/// Kernel routine; the reference came from `ExAllocateCacheAwareRundownProtection`.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExFreeCacheAwareRundownProtection(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) {
    const API: &str = "ExFreeCacheAwareRundownProtection";
    require_irql(API, APC_LEVEL);
    let header = cache_aware(API, RunRefCacheAware);
    let tag = header.pool_tag;
    if tag == 0 {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [RunRefCacheAware as u64, 0, 0, 0],
            "freeing a cache-aware reference that was not allocated by ExAllocateCacheAwareRundownProtection",
        );
    }
    header.magic.store(0, Ordering::Relaxed);
    pool_free(API, RunRefCacheAware.cast::<c_void>(), Some(tag));
}

/// `ExAcquireRundownProtectionCacheAware`.
///
/// # Safety
/// Kernel routine; the reference is initialised.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquireRundownProtectionCacheAware(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) -> BOOLEAN {
    const API: &str = "ExAcquireRundownProtectionCacheAware";
    require_bound(API);
    require_irql(API, DISPATCH_LEVEL);
    let header = cache_aware(API, RunRefCacheAware);
    if header.paged {
        require_irql(API, APC_LEVEL);
    }
    if try_acquire(slot(header, current_processor(API))) {
        TRUE
    } else {
        FALSE
    }
}

/// `ExReleaseRundownProtectionCacheAware`.
///
/// # Safety
/// Kernel routine; the caller holds a reference.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleaseRundownProtectionCacheAware(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) {
    const API: &str = "ExReleaseRundownProtectionCacheAware";
    require_bound(API);
    require_irql(API, DISPATCH_LEVEL);
    let header = cache_aware(API, RunRefCacheAware);
    if header.paged {
        require_irql(API, APC_LEVEL);
    }
    let old = slot(header, current_processor(API)).fetch_sub(ONE_REF, Ordering::SeqCst);
    if old & ACTIVE != 0 {
        with_kernel(API, |k| wake_waiters(k));
    }
}

/// `ExWaitForRundownProtectionReleaseCacheAware`.
///
/// # Safety
/// Kernel routine; the reference is initialised.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExWaitForRundownProtectionReleaseCacheAware(
    RunRef: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) {
    const API: &str = "ExWaitForRundownProtectionReleaseCacheAware";
    require_irql(API, APC_LEVEL);
    let header = cache_aware(API, RunRef);
    match header
        .wait
        .compare_exchange(OPEN, WAITING, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {}
        Err(COMPLETED) => return,
        Err(state) => bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [RunRef as u64, u64::from(state), 0, 0],
            if state == WAITING {
                "two waits at once on one cache-aware rundown reference"
            } else {
                "waited again on a cache-aware rundown reference whose wait blocked, without \
                 ExRundownCompletedCacheAware"
            },
        ),
    }
    for word in header.words() {
        word.fetch_or(ACTIVE, Ordering::SeqCst);
    }
    // Once run-down is active no acquire succeeds, so the sum only falls: below zero, a
    // reference was released that was never acquired (which would otherwise leave this wait
    // for ever, the sum having wrapped).
    with_kernel(API, |k| {
        wait_until(k, || {
            let outstanding = header.outstanding();
            if outstanding < 0 {
                bugcheck(
                    API,
                    DRIVER_VERIFIER_DETECTED_VIOLATION,
                    [RunRef as u64, outstanding.cast_unsigned() as u64, 0, 0],
                    "a cache-aware rundown reference was released more often than acquired",
                );
            }
            outstanding == 0
        });
    });
    // The kernel's cache-aware wait leaves its wait block in every processor's word, whether
    // or not it had to block.
    header.wait.store(BLOCKED, Ordering::Release);
}

/// `ExRundownCompletedCacheAware`.
///
/// # Safety
/// Kernel routine; the reference is initialised.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExRundownCompletedCacheAware(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) {
    const API: &str = "ExRundownCompletedCacheAware";
    require_bound(API);
    require_irql(API, APC_LEVEL);
    let header = cache_aware(API, RunRefCacheAware);
    let state = header.wait.load(Ordering::Acquire);
    if state != BLOCKED && state != COMPLETED {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [RunRefCacheAware as u64, u64::from(state), 0, 0],
            "ExRundownCompletedCacheAware before the wait completed",
        );
    }
    header.wait.store(COMPLETED, Ordering::Release);
}

/// `ExReInitializeRundownProtectionCacheAware`.
///
/// # Safety
/// Kernel routine; the reference is initialised and was run down.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReInitializeRundownProtectionCacheAware(
    RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE,
) {
    const API: &str = "ExReInitializeRundownProtectionCacheAware";
    require_bound(API);
    require_irql(API, APC_LEVEL);
    let header = cache_aware(API, RunRefCacheAware);
    let outstanding = header.outstanding();
    if !header.run_down() || outstanding != 0 {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [
                RunRefCacheAware as u64,
                outstanding.cast_unsigned() as u64,
                0,
                0,
            ],
            "re-initialised a cache-aware rundown reference that was not run down",
        );
    }
    for word in header.words() {
        word.store(0, Ordering::SeqCst);
    }
    header.wait.store(OPEN, Ordering::Release);
}
