//! Run-down references: an acquire that fails (a wait has begun) writes nothing, as the
//! kernel's compare-and-swap does, so nothing observing the reference concurrently sees a
//! reference that was never granted.

extern crate alloc;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::thread;
use std::time::Instant;

use ebpf_ext_sys::ntdef::{FALSE, TRUE};
use ebpf_ext_sys::wdm::{
    DRIVER_VERIFIER_DETECTED_VIOLATION, EX_RUNDOWN_REF, EX_RUNDOWN_REF_CACHE_AWARE,
    ExAcquireRundownProtection, ExAcquireRundownProtectionCacheAware,
    ExInitializeRundownProtection, ExInitializeRundownProtectionCacheAware,
    ExReInitializeRundownProtection, ExReInitializeRundownProtectionCacheAware,
    ExReleaseRundownProtection, ExReleaseRundownProtectionCacheAware, ExRundownCompleted,
    ExRundownCompletedCacheAware, ExSizeOfRundownProtectionCacheAware,
    ExWaitForRundownProtectionRelease, ExWaitForRundownProtectionReleaseCacheAware,
};
use ebpf_ext_usersim::{Kernel, expect_bugcheck};

/// How long an observer watches at most; it stops earlier once both sides did enough rounds.
const WATCH: Duration = Duration::from_secs(2);
/// Failed acquires (and observations) after which an observer may stop early.
const ROUNDS: usize = 200_000;
/// How long a thread waits at most for another thread's rundown wait to go to sleep.
const WAITER_DEADLINE: Duration = Duration::from_secs(10);

/// Returns once one rundown wait sleeps in `kernel` (at most [`WAITER_DEADLINE`]).
fn until_one_wait_sleeps(kernel: &Kernel) {
    let start = Instant::now();
    while kernel.rundown_waiters() != 1 {
        assert!(
            start.elapsed() < WAITER_DEADLINE,
            "no rundown wait went to sleep within {WAITER_DEADLINE:?}"
        );
        thread::yield_now();
    }
}

/// Storage for a reference, read by the observer word by word with atomic loads (the kernel
/// routines write it atomically too).
struct Words(Vec<AtomicU64>);

impl Words {
    fn new(bytes: usize) -> Words {
        Words((0..bytes.div_ceil(8)).map(|_| AtomicU64::new(0)).collect())
    }

    fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|w| w.load(Ordering::SeqCst)).collect()
    }

    fn as_ptr<T>(&self) -> *mut T {
        self.0.as_ptr().cast_mut().cast()
    }
}

/// Runs `acquire` (which must keep failing) on a kernel thread while this thread watches
/// `words`; returns the first snapshot that differed from the one taken before, if any.
fn watch_failed_acquires(
    kernel: &Kernel,
    words: &Words,
    acquire: impl Fn() -> u8 + Sync,
) -> Option<Vec<u64>> {
    let before = words.snapshot();
    let stop = AtomicBool::new(false);
    let failed = AtomicUsize::new(0);
    let mut changed = None;
    thread::scope(|s| {
        let hammer = kernel.scoped(s, || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(acquire(), FALSE, "acquire after a wait began succeeded");
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        let mut observations = 0usize;
        while start.elapsed() < WATCH
            && (observations < ROUNDS || failed.load(Ordering::Relaxed) < ROUNDS)
        {
            let now = words.snapshot();
            if now != before {
                changed = Some(now);
                break;
            }
            observations += 1;
        }
        stop.store(true, Ordering::Relaxed);
        hammer.join().expect("acquiring thread");
    });
    assert!(failed.load(Ordering::Relaxed) > 0, "no acquire ran");
    changed
}

#[test]
fn failed_acquire_writes_nothing() {
    let kernel = Kernel::new();
    let words = Words::new(size_of::<EX_RUNDOWN_REF>());
    let r = words.as_ptr::<EX_RUNDOWN_REF>();
    // SAFETY: `r` is 8 aligned, 8-byte storage that outlives every use below.
    unsafe { ExInitializeRundownProtection(r) };
    // SAFETY: as above; no reference is held, so the wait returns at once.
    unsafe { ExWaitForRundownProtectionRelease(r) };
    let ptr = r as usize;
    let changed = watch_failed_acquires(&kernel, &words, || {
        // SAFETY: the storage outlives the scoped thread.
        unsafe { ExAcquireRundownProtection(ptr as *mut EX_RUNDOWN_REF) }
    });
    assert_eq!(
        changed, None,
        "a failed ExAcquireRundownProtection wrote the reference"
    );
}

/// The kernel's cache-aware acquire is a compare-and-swap on the processor's reference: when
/// it fails it changes nothing. An increment undone afterwards would be visible to a
/// concurrent `ExReInitializeRundownProtectionCacheAware` check (a false bug check) and to
/// anyone summing the counts.
#[test]
fn failed_cache_aware_acquire_writes_nothing() {
    let kernel = Kernel::new();
    // SAFETY: no arguments; a kernel is bound.
    let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
    let words = Words::new(size);
    let r = words.as_ptr::<EX_RUNDOWN_REF_CACHE_AWARE>();
    // SAFETY: `size` bytes of 8-aligned storage that outlives every use below.
    unsafe { ExInitializeRundownProtectionCacheAware(r, size) };
    // SAFETY: initialised; no reference is held, so the wait returns at once.
    unsafe { ExWaitForRundownProtectionReleaseCacheAware(r) };
    let ptr = r as usize;
    let changed = watch_failed_acquires(&kernel, &words, || {
        // SAFETY: initialised storage that outlives the scoped thread.
        unsafe { ExAcquireRundownProtectionCacheAware(ptr as *mut EX_RUNDOWN_REF_CACHE_AWARE) }
    });
    assert_eq!(
        changed, None,
        "a failed ExAcquireRundownProtectionCacheAware wrote the reference"
    );
}

/// Re-initialising a run-down reference while other threads' acquires keep failing is legal
/// (those acquires granted nothing) and must not bug-check; after it, acquires succeed again.
#[test]
fn reinitialize_while_cache_aware_acquires_fail() {
    let kernel = Kernel::new();
    // SAFETY: no arguments; a kernel is bound.
    let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
    let words = Words::new(size);
    let r = words.as_ptr::<EX_RUNDOWN_REF_CACHE_AWARE>() as usize;
    let r = move || r as *mut EX_RUNDOWN_REF_CACHE_AWARE;
    // SAFETY: `size` bytes of 8-aligned storage that outlives every use below.
    unsafe { ExInitializeRundownProtectionCacheAware(r(), size) };
    let stop = AtomicBool::new(false);
    let granted = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..2 {
            kernel.scoped(s, || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: initialised storage that outlives the scoped threads.
                    if unsafe { ExAcquireRundownProtectionCacheAware(r()) } == TRUE {
                        granted.fetch_add(1, Ordering::Relaxed);
                        // SAFETY: the reference just acquired.
                        unsafe { ExReleaseRundownProtectionCacheAware(r()) };
                    }
                }
            });
        }
        let start = Instant::now();
        let mut rounds = 0u32;
        while rounds < 2_000 && start.elapsed() < WATCH {
            // SAFETY: initialised; the other threads release what they acquire.
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(r()) };
            // Let failing acquires run against the run-down reference.
            for _ in 0..50 {
                core::hint::spin_loop();
            }
            // SAFETY: run down (the wait returned), whatever the failing acquires do.
            unsafe { ExReInitializeRundownProtectionCacheAware(r()) };
            rounds += 1;
        }
        // Re-initialised last: the acquirers can now succeed.
        while granted.load(Ordering::Relaxed) == 0 && start.elapsed() < 2 * WATCH {
            thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(granted.load(Ordering::Relaxed) > 0, "no acquire succeeded");
    drop(kernel);
}

/// The waits return only once every granted reference is released: a reference released after
/// a pause is seen released by the waiter (with a wait that does not wait, the waiter returns
/// during the pause and sees it still held).
#[test]
fn waits_return_only_after_every_reference_is_released() {
    let kernel = Kernel::new();
    // SAFETY: no arguments; a kernel is bound.
    let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
    let cache_aware = Words::new(size);
    let plain = Words::new(core::mem::size_of::<EX_RUNDOWN_REF>());
    let (ca, pl) = (
        cache_aware.as_ptr::<EX_RUNDOWN_REF_CACHE_AWARE>() as usize,
        plain.as_ptr::<EX_RUNDOWN_REF>() as usize,
    );
    let ca = move || ca as *mut EX_RUNDOWN_REF_CACHE_AWARE;
    let pl = move || pl as *mut EX_RUNDOWN_REF;
    // SAFETY: storage of the right sizes that outlives every use below.
    unsafe {
        ExInitializeRundownProtectionCacheAware(ca(), size);
    }
    // SAFETY: as above.
    unsafe { ExInitializeRundownProtection(pl()) };
    for _ in 0..2 {
        // SAFETY: initialised, not run down.
        assert_eq!(unsafe { ExAcquireRundownProtectionCacheAware(ca()) }, TRUE);
        // SAFETY: as above.
        assert_eq!(unsafe { ExAcquireRundownProtection(pl()) }, TRUE);
    }
    let released = AtomicUsize::new(0);
    thread::scope(|s| {
        let waiter = kernel.scoped(s, || {
            // SAFETY: initialised; this test's thread releases both references.
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(ca()) };
            let after_cache_aware = released.load(Ordering::SeqCst);
            // SAFETY: as above.
            unsafe { ExWaitForRundownProtectionRelease(pl()) };
            (after_cache_aware, released.load(Ordering::SeqCst))
        });
        for _ in 0..2 {
            thread::sleep(Duration::from_millis(100));
            released.fetch_add(1, Ordering::SeqCst);
            // SAFETY: a reference acquired above.
            unsafe { ExReleaseRundownProtectionCacheAware(ca()) };
            // SAFETY: as above.
            unsafe { ExReleaseRundownProtection(pl()) };
        }
        let (after_cache_aware, after_plain) = waiter.join().expect("waiting thread");
        assert_eq!(after_cache_aware, 2, "the cache-aware wait returned early");
        assert_eq!(after_plain, 2, "the wait returned early");
    });
    drop(kernel);
}

/// Re-initialising a cache-aware reference that no wait has run down is a driver bug Driver
/// Verifier reports (cargo mutants found nothing checked it).
#[test]
fn reinitializing_a_cache_aware_reference_that_was_not_run_down_bugchecks() {
    let _kernel = Kernel::new();
    let check = expect_bugcheck(
        "reinitializing_a_cache_aware_reference_that_was_not_run_down_bugchecks",
        || {
            // SAFETY: no arguments; a kernel is bound.
            let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
            let words = Words::new(size);
            // SAFETY: `size` bytes of 8-aligned storage that outlives both calls.
            unsafe { ExInitializeRundownProtectionCacheAware(words.as_ptr(), size) };
            // SAFETY: initialised; deliberately not run down.
            unsafe { ExReInitializeRundownProtectionCacheAware(words.as_ptr()) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            "ExReInitializeRundownProtectionCacheAware"
        )
    );
}

/// A release without an acquire made the wait's sum wrap, and the wait never returned: a
/// test hung instead of failing.
#[test]
fn waiting_after_more_cache_aware_releases_than_acquires_bugchecks() {
    let _kernel = Kernel::new();
    let check = expect_bugcheck(
        "waiting_after_more_cache_aware_releases_than_acquires_bugchecks",
        || {
            // SAFETY: no arguments; a kernel is bound.
            let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
            let words = Words::new(size);
            // SAFETY: `size` bytes of 8-aligned storage that outlives every call.
            unsafe { ExInitializeRundownProtectionCacheAware(words.as_ptr(), size) };
            // SAFETY: initialised.
            let acquired = unsafe { ExAcquireRundownProtectionCacheAware(words.as_ptr()) };
            assert_eq!(acquired, TRUE);
            for _ in 0..2 {
                // SAFETY: initialised; the second release is deliberately one too many.
                unsafe { ExReleaseRundownProtectionCacheAware(words.as_ptr()) };
            }
            // SAFETY: initialised.
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(words.as_ptr()) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            "ExWaitForRundownProtectionReleaseCacheAware"
        )
    );
    assert!(
        check.message.contains("released more often than acquired"),
        "{}",
        check.message
    );
}

/// Initialisation clears every processor's word, whatever the storage held before (cargo
/// mutants found that only zeroed storage was ever initialised in tests).
#[test]
fn initialisation_clears_storage_that_held_anything() {
    let kernel = Kernel::new();
    // SAFETY: no arguments; a kernel is bound.
    let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
    // Shared with a waiter that may never return (if initialisation is broken): it must not
    // outlive its storage.
    let words = Arc::new(Words::new(size));
    for word in &words.0 {
        word.store(u64::MAX, Ordering::SeqCst);
    }
    let r = words.as_ptr::<EX_RUNDOWN_REF_CACHE_AWARE>();
    // SAFETY: `size` bytes of 8-aligned storage that outlives every use below.
    unsafe { ExInitializeRundownProtectionCacheAware(r, size) };
    // SAFETY: initialised above.
    assert_eq!(unsafe { ExAcquireRundownProtectionCacheAware(r) }, TRUE);
    // SAFETY: the reference just acquired.
    unsafe { ExReleaseRundownProtectionCacheAware(r) };
    let returned = Arc::new(AtomicBool::new(false));
    let waiter = kernel.spawn({
        let (words, returned) = (words.clone(), returned.clone());
        move || {
            let r = words.as_ptr::<EX_RUNDOWN_REF_CACHE_AWARE>();
            // SAFETY: initialised; no reference is outstanding; `words` keeps the storage.
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(r) };
            returned.store(true, Ordering::SeqCst);
        }
    });
    let start = Instant::now();
    while !returned.load(Ordering::SeqCst) && start.elapsed() < WATCH {
        thread::yield_now();
    }
    // A waiter that never returns is left behind (it holds its own storage) so that the test
    // fails instead of hanging.
    assert!(
        returned.load(Ordering::SeqCst),
        "the wait never returned: initialisation left a processor's word set"
    );
    waiter.join().expect("waiting thread");
}

/// A rundown reference, plain or cache-aware, in test storage.
struct Reference {
    words: Words,
    cache_aware: bool,
}

impl Reference {
    fn new(cache_aware: bool) -> Reference {
        let size = if cache_aware {
            // SAFETY: no arguments; a kernel is bound.
            unsafe { ExSizeOfRundownProtectionCacheAware() }
        } else {
            core::mem::size_of::<EX_RUNDOWN_REF>()
        };
        let reference = Reference {
            words: Words::new(size),
            cache_aware,
        };
        if cache_aware {
            // SAFETY: `size` bytes of 8-aligned storage that outlives every use.
            unsafe { ExInitializeRundownProtectionCacheAware(reference.words.as_ptr(), size) };
        } else {
            // SAFETY: as above.
            unsafe { ExInitializeRundownProtection(reference.words.as_ptr()) };
        }
        reference
    }

    fn acquire(&self) -> bool {
        let acquired = if self.cache_aware {
            // SAFETY: initialised above.
            unsafe { ExAcquireRundownProtectionCacheAware(self.words.as_ptr()) }
        } else {
            // SAFETY: initialised above.
            unsafe { ExAcquireRundownProtection(self.words.as_ptr()) }
        };
        acquired == TRUE
    }

    fn release(&self) {
        if self.cache_aware {
            // SAFETY: a reference `acquire` took.
            unsafe { ExReleaseRundownProtectionCacheAware(self.words.as_ptr()) };
        } else {
            // SAFETY: a reference `acquire` took.
            unsafe { ExReleaseRundownProtection(self.words.as_ptr()) };
        }
    }

    fn wait(&self) {
        if self.cache_aware {
            // SAFETY: initialised above.
            unsafe { ExWaitForRundownProtectionReleaseCacheAware(self.words.as_ptr()) };
        } else {
            // SAFETY: initialised above.
            unsafe { ExWaitForRundownProtectionRelease(self.words.as_ptr()) };
        }
    }

    fn complete(&self) {
        if self.cache_aware {
            // SAFETY: initialised above, after a wait.
            unsafe { ExRundownCompletedCacheAware(self.words.as_ptr()) };
        } else {
            // SAFETY: initialised above, after a wait.
            unsafe { ExRundownCompleted(self.words.as_ptr()) };
        }
    }

    fn reinitialize(&self) {
        if self.cache_aware {
            // SAFETY: initialised above, run down.
            unsafe { ExReInitializeRundownProtectionCacheAware(self.words.as_ptr()) };
        } else {
            // SAFETY: initialised above, run down.
            unsafe { ExReInitializeRundownProtection(self.words.as_ptr()) };
        }
    }

    /// A wait that has to block: a reference is held and released by another thread once the
    /// wait is asleep (the kernel counts it as a rundown waiter), so the wait cannot find the
    /// reference already released and return at once.
    fn blocked_wait(&self, kernel: &Kernel) {
        assert!(self.acquire());
        thread::scope(|s| {
            let releaser = kernel.scoped(s, || {
                until_one_wait_sleeps(kernel);
                self.release();
            });
            self.wait();
            releaser.join().expect("releasing thread");
        });
    }
}

/// After a wait that blocked, the reference points at the waiter's wait block until the
/// completion routine runs: a second wait then is a driver bug; after it, a wait returns at
/// once, acquires keep failing, and re-initialising works.
fn second_wait_after_a_blocked_one(cache_aware: bool, test: &str, api: &str) {
    let kernel = Kernel::new();
    let reference = Reference::new(cache_aware);
    reference.blocked_wait(&kernel);
    reference.complete();
    reference.wait();
    assert!(!reference.acquire(), "run down: acquires fail");
    reference.reinitialize();
    assert!(reference.acquire(), "acquirable again");
    reference.release();
    let check = expect_bugcheck(test, || {
        let kernel = Kernel::new();
        let reference = Reference::new(cache_aware);
        reference.blocked_wait(&kernel);
        reference.wait();
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (DRIVER_VERIFIER_DETECTED_VIOLATION, api)
    );
}

#[test]
fn a_second_wait_after_one_that_blocked_needs_the_completion_routine_first() {
    second_wait_after_a_blocked_one(
        false,
        "a_second_wait_after_one_that_blocked_needs_the_completion_routine_first",
        "ExWaitForRundownProtectionRelease",
    );
}

#[test]
fn a_second_cache_aware_wait_after_one_that_blocked_needs_the_completion_routine_first() {
    second_wait_after_a_blocked_one(
        true,
        "a_second_cache_aware_wait_after_one_that_blocked_needs_the_completion_routine_first",
        "ExWaitForRundownProtectionReleaseCacheAware",
    );
}

fn two_waits_at_once(cache_aware: bool, test: &str, api: &str) {
    let check = expect_bugcheck(test, || {
        let kernel = Kernel::new();
        let reference = Reference::new(cache_aware);
        assert!(reference.acquire());
        thread::scope(|s| {
            let _first = kernel.scoped(s, || reference.wait());
            // The second wait starts while the first sleeps in the kernel.
            until_one_wait_sleeps(&kernel);
            reference.wait();
        });
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (DRIVER_VERIFIER_DETECTED_VIOLATION, api)
    );
}

#[test]
fn two_waits_at_once_bugcheck() {
    two_waits_at_once(
        false,
        "two_waits_at_once_bugcheck",
        "ExWaitForRundownProtectionRelease",
    );
}

#[test]
fn two_cache_aware_waits_at_once_bugcheck() {
    two_waits_at_once(
        true,
        "two_cache_aware_waits_at_once_bugcheck",
        "ExWaitForRundownProtectionReleaseCacheAware",
    );
}

/// A cache-aware reference from paged pool may be acquired and released only up to
/// APC_LEVEL: at DISPATCH_LEVEL the words could be paged out.
#[test]
fn a_paged_cache_aware_reference_is_not_for_dispatch_level() {
    use ebpf_ext_sys::wdm::{
        DISPATCH_LEVEL, ExAllocateCacheAwareRundownProtection, ExFreeCacheAwareRundownProtection,
        IRQL_NOT_LESS_OR_EQUAL, NonPagedPoolNx, PagedPool,
    };
    let allocate = |pool| {
        // SAFETY: no preconditions; a kernel is bound.
        let r = unsafe { ExAllocateCacheAwareRundownProtection(pool, 0x6764_7052) };
        assert!(!r.is_null());
        r
    };
    let _kernel = Kernel::new();
    let paged = allocate(PagedPool);
    // SAFETY: allocated above, not run down.
    assert_eq!(unsafe { ExAcquireRundownProtectionCacheAware(paged) }, TRUE);
    // SAFETY: the reference acquired above.
    unsafe { ExReleaseRundownProtectionCacheAware(paged) };
    // SAFETY: allocated above; no reference held.
    unsafe { ExFreeCacheAwareRundownProtection(paged) };
    let non_paged = allocate(NonPagedPoolNx);
    ebpf_ext_usersim::set_current_irql(DISPATCH_LEVEL);
    // SAFETY: allocated above, not run down.
    let acquired = unsafe { ExAcquireRundownProtectionCacheAware(non_paged) };
    assert_eq!(acquired, TRUE);
    // SAFETY: the reference acquired above.
    unsafe { ExReleaseRundownProtectionCacheAware(non_paged) };
    ebpf_ext_usersim::set_current_irql(ebpf_ext_sys::wdm::PASSIVE_LEVEL);
    // SAFETY: allocated above; no reference held.
    unsafe { ExFreeCacheAwareRundownProtection(non_paged) };
    let check = expect_bugcheck(
        "a_paged_cache_aware_reference_is_not_for_dispatch_level",
        || {
            let _kernel = Kernel::new();
            let paged = allocate(PagedPool);
            ebpf_ext_usersim::set_current_irql(DISPATCH_LEVEL);
            // SAFETY: allocated above, not run down.
            let _ = unsafe { ExAcquireRundownProtectionCacheAware(paged) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (
            IRQL_NOT_LESS_OR_EQUAL,
            "ExAcquireRundownProtectionCacheAware"
        )
    );
}

/// A cache-aware reference the caller keeps in paged pool is as limited as one allocated from
/// paged pool: at DISPATCH_LEVEL its words could be paged out.
#[test]
fn a_cache_aware_reference_in_paged_caller_storage_is_not_for_dispatch_level() {
    use ebpf_ext_sys::wdm::{
        DISPATCH_LEVEL, ExAllocatePool2, IRQL_NOT_LESS_OR_EQUAL, POOL_FLAG_PAGED,
    };
    let check = expect_bugcheck(
        "a_cache_aware_reference_in_paged_caller_storage_is_not_for_dispatch_level",
        || {
            let _kernel = Kernel::new();
            // SAFETY: no preconditions; a kernel is bound.
            let size = unsafe { ExSizeOfRundownProtectionCacheAware() };
            // SAFETY: as above; the block is leaked (the machine stops below).
            let storage = unsafe { ExAllocatePool2(POOL_FLAG_PAGED, size, 0x6764_7052) };
            assert!(!storage.is_null());
            let r = storage.cast();
            // SAFETY: `size` bytes of 16-byte-aligned storage.
            unsafe { ExInitializeRundownProtectionCacheAware(r, size) };
            // SAFETY: initialised above, not run down.
            assert_eq!(unsafe { ExAcquireRundownProtectionCacheAware(r) }, TRUE);
            // SAFETY: the reference acquired above.
            unsafe { ExReleaseRundownProtectionCacheAware(r) };
            ebpf_ext_usersim::set_current_irql(DISPATCH_LEVEL);
            // SAFETY: initialised above, not run down.
            let _ = unsafe { ExAcquireRundownProtectionCacheAware(r) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (
            IRQL_NOT_LESS_OR_EQUAL,
            "ExAcquireRundownProtectionCacheAware"
        )
    );
}
