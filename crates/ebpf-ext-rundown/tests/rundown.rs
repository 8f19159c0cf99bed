//! Rundown protection against usersim: counts, refusal after the wait begins, blocking waits,
//! cross-thread release, reinitialisation and a bounded stress run.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::thread;
use std::time::Instant;

use ebpf_ext_rundown::{CacheAwareRundown, Rundown};
use ebpf_ext_sys::Error;
use ebpf_ext_usersim::{Fault, Kernel};

const TAG: u32 = u32::from_le_bytes(*b"Rdt1");

/// Waits (10 s at most) until `ready()`, or until `returned()`, so that the caller's next
/// assertion sees a wait that has begun, not one that has not started yet.
fn until(ready: impl Fn() -> bool, returned: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() && !returned() {
        assert!(Instant::now() < deadline, "the wait never began");
        thread::yield_now();
    }
}

/// The raw count in Windows' encoding: references × 2, bit 0 = run-down active.
fn raw(rundown: &Rundown) -> usize {
    // SAFETY: the reference is one pointer-sized word (`Count`), live and aligned, which the
    // kernel's routines change only atomically (a waiter may be changing it now), so an
    // atomic load reads it.
    unsafe { AtomicUsize::from_ptr(rundown.as_ptr().cast()) }.load(Ordering::SeqCst)
}

#[test]
fn counts_follow_guards() {
    let _k = Kernel::new();
    let rundown = Rundown::new();
    assert_eq!(raw(&rundown), 0);
    let a = rundown.try_acquire().expect("acquire");
    let b = rundown.try_acquire().expect("acquire");
    assert_eq!(raw(&rundown), 4);
    drop(a);
    assert_eq!(raw(&rundown), 2);
    drop(b);
    assert_eq!(raw(&rundown), 0);
    assert!(!rundown.is_run_down());
    rundown.wait_for_release();
    assert!(rundown.is_run_down());
}

#[test]
fn acquire_refused_after_wait() {
    let _k = Kernel::new();
    let rundown = Rundown::new();
    rundown.wait_for_release();
    assert!(rundown.try_acquire().is_none());
    // A second wait on a run-down reference returns at once.
    rundown.wait_for_release();
}

#[test]
fn wait_blocks_until_last_guard_drops() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    let first = rundown.try_acquire().expect("acquire");
    let second = rundown.try_acquire().expect("acquire");
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let waiter = kernel.scoped(s, || {
            rundown.wait_for_release();
            done.store(true, Ordering::SeqCst);
        });
        // Once the wait has begun, new acquires fail.
        let deadline = Instant::now() + Duration::from_secs(10);
        while raw(&rundown) & 1 == 0 {
            assert!(Instant::now() < deadline, "the wait never began");
            thread::yield_now();
        }
        assert!(rundown.try_acquire().is_none());
        drop(first);
        // The wait looks again after the release (at its own timeout: only the last release
        // wakes it) and sleeps on: it did not return. Two checks after this point, so that
        // the second began after the release (the first may have read the count before it).
        let since = kernel.rundown_wait_checks();
        until(
            || kernel.rundown_wait_checks() >= since + 2 && kernel.rundown_waiters() == 1,
            || done.load(Ordering::SeqCst),
        );
        assert!(
            !done.load(Ordering::SeqCst),
            "the wait returned with a guard outstanding"
        );
        drop(second);
        waiter.join().expect("waiter");
    });
    assert!(done.load(Ordering::SeqCst));
    assert!(rundown.is_run_down());
}

#[test]
fn guard_released_on_another_thread() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    let guard = rundown.try_acquire().expect("acquire");
    thread::scope(|s| {
        kernel
            .scoped(s, move || drop(guard))
            .join()
            .expect("release thread");
    });
    assert_eq!(raw(&rundown), 0);
    rundown.wait_for_release();
}

#[test]
fn reinitialize_only_after_run_down() {
    let _k = Kernel::new();
    let rundown = Rundown::new();
    assert_eq!(rundown.reinitialize(), Err(Error::InvalidDeviceState));
    rundown.wait_for_release();
    rundown.reinitialize().expect("reinitialize");
    assert!(!rundown.is_run_down());
    let guard = rundown.try_acquire().expect("acquirable again");
    drop(guard);
    rundown.wait_for_release();
}

fn stress<G>(
    kernel: &Kernel,
    acquire: &(dyn Fn() -> Option<G> + Sync),
    wait: &(dyn Fn() + Sync),
) -> u64 {
    let acquired = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..4 {
            kernel.scoped(s, || {
                for _ in 0..200_000 {
                    if let Some(guard) = acquire() {
                        acquired.fetch_add(1, Ordering::Relaxed);
                        drop(guard);
                    } else {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
        // The wait begins once an acquire has succeeded, so that it starts while the
        // acquirers are running (and, likely, holding references); if none succeeds within
        // 10 s it begins anyway, and the caller's check of the returned count fails.
        let deadline = Instant::now() + Duration::from_secs(10);
        while acquired.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            thread::yield_now();
        }
        wait();
        // After the wait returns, nobody may acquire.
        assert!(acquire().is_none());
    });
    acquired.load(Ordering::Relaxed)
}

#[test]
fn stress_many_threads_then_wait() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    let n = stress(&kernel, &|| rundown.try_acquire(), &|| {
        rundown.wait_for_release();
    });
    assert!(n > 0, "no acquire succeeded before the wait");
    assert_eq!(raw(&rundown), 1, "run down with no references left");
}

#[test]
fn cache_aware_contract() {
    let kernel = Kernel::new();
    let rundown = CacheAwareRundown::new(TAG).expect("allocate");
    let guards: Vec<_> = (0..3)
        .map(|_| rundown.try_acquire().expect("acquire"))
        .collect();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let waiter = kernel.scoped(s, || {
            rundown.wait_for_release();
            done.store(true, Ordering::SeqCst);
        });
        until(
            || kernel.rundown_waiters() == 1,
            || done.load(Ordering::SeqCst),
        );
        assert!(!done.load(Ordering::SeqCst));
        // Released on other threads (other simulated processors) than they were taken on.
        for guard in guards {
            kernel
                .scoped(s, move || drop(guard))
                .join()
                .expect("release");
        }
        waiter.join().expect("waiter");
    });
    assert!(rundown.is_run_down());
    assert!(rundown.try_acquire().is_none());
    drop(rundown);
    kernel.assert_no_leaks();
}

#[test]
fn cache_aware_stress() {
    let kernel = Kernel::new();
    let rundown = CacheAwareRundown::new(TAG).expect("allocate");
    let n = stress(&kernel, &|| rundown.try_acquire(), &|| {
        rundown.wait_for_release();
    });
    assert!(n > 0, "no acquire succeeded before the wait");
    drop(rundown);
    kernel.assert_no_leaks();
}

#[test]
fn cache_aware_allocation_failure_is_an_error() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Allocation(1));
    assert!(matches!(
        CacheAwareRundown::new(TAG),
        Err(Error::InsufficientResources)
    ));
    let rundown = CacheAwareRundown::new(TAG).expect("second try succeeds");
    drop(rundown);
    kernel.assert_no_leaks();
}

#[test]
fn every_allocation_failure_is_handled() {
    let points = ebpf_ext_usersim::sweep_allocation_failures(|_kernel| {
        let first = CacheAwareRundown::new(TAG);
        let second = CacheAwareRundown::new(TAG);
        for rundown in [first, second].into_iter().flatten() {
            let guard = rundown.try_acquire();
            assert!(guard.is_some());
            drop(guard);
            rundown.wait_for_release();
        }
    });
    assert_eq!(points, 2);
}

#[test]
fn cache_aware_reinitialize() {
    let kernel = Kernel::new();
    let rundown = CacheAwareRundown::new(TAG).expect("allocate");
    assert_eq!(rundown.reinitialize(), Err(Error::InvalidDeviceState));
    rundown.wait_for_release();
    assert!(rundown.try_acquire().is_none());
    rundown.reinitialize().expect("reinitialize");
    let guard = rundown.try_acquire().expect("acquirable again");
    drop(guard);
    rundown.wait_for_release();
    drop(rundown);
    kernel.assert_no_leaks();
}

/// Holds a guard of `acquire`'s rundown on another thread for a while, so that `wait` (called
/// by `waiters` threads at once, and once more afterwards) has to block; every wait returns
/// once the guard is dropped, none before.
fn waits_that_block<G: Send>(
    kernel: &Kernel,
    acquire: &(dyn Fn() -> Option<G> + Sync),
    wait: &(dyn Fn() + Sync),
    waiters: usize,
) {
    let guard = acquire().expect("acquire");
    let (released, started, returned) =
        (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    thread::scope(|s| {
        let waiting: Vec<_> = (0..waiters)
            .map(|_| {
                kernel.scoped(s, || {
                    started.fetch_add(1, Ordering::SeqCst);
                    wait();
                    returned.fetch_add(1, Ordering::SeqCst);
                    released.load(Ordering::SeqCst)
                })
            })
            .collect();
        // Every waiter has started and one sleeps in the kernel's wait; none has returned.
        // (The others wait for that wait by polling, and may not have reached it yet: for
        // them this checks less than for the first.)
        until(
            || started.load(Ordering::SeqCst) == waiters as u64 && kernel.rundown_waiters() >= 1,
            || returned.load(Ordering::SeqCst) != 0,
        );
        assert_eq!(
            returned.load(Ordering::SeqCst),
            0,
            "a wait returned with a guard outstanding"
        );
        released.store(true, Ordering::SeqCst);
        drop(guard);
        for waiter in waiting {
            assert!(
                waiter.join().expect("waiter"),
                "a wait returned with a guard outstanding"
            );
        }
    });
    wait();
    assert!(acquire().is_none(), "run down");
}

#[test]
fn waiting_again_after_a_wait_that_blocked_returns_at_once() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    waits_that_block(
        &kernel,
        &|| rundown.try_acquire(),
        &|| rundown.wait_for_release(),
        1,
    );
    assert_eq!(
        raw(&rundown),
        1,
        "completed (run down, no wait block left): the completion routine ran"
    );
    rundown.reinitialize().expect("reinitialize");
    let cache_aware = CacheAwareRundown::new(TAG).expect("allocate");
    waits_that_block(
        &kernel,
        &|| cache_aware.try_acquire(),
        &|| cache_aware.wait_for_release(),
        1,
    );
    cache_aware.reinitialize().expect("reinitialize");
}

#[test]
fn threads_waiting_at_once_all_return_when_the_last_guard_drops() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    waits_that_block(
        &kernel,
        &|| rundown.try_acquire(),
        &|| rundown.wait_for_release(),
        3,
    );
    let cache_aware = CacheAwareRundown::new(TAG).expect("allocate");
    waits_that_block(
        &kernel,
        &|| cache_aware.try_acquire(),
        &|| cache_aware.wait_for_release(),
        3,
    );
}

/// A thread that finds another in the kernel's wait sleeps until that wait ends
/// (`KeDelayExecutionThread`), rather than spinning for as long as the guards are held.
#[test]
fn a_second_waiter_sleeps_while_the_first_waits() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    let guard = rundown.try_acquire().expect("acquire");
    thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| kernel.scoped(s, || rundown.wait_for_release()))
            .collect();
        // One waiter is in the kernel's wait (the guard is held); the other must sleep, at
        // least twice, before the guard goes. Spinning, it would never call the kernel.
        let started = std::time::Instant::now();
        while kernel.delays() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the second waiter never slept"
            );
            thread::sleep(Duration::from_millis(1));
        }
        drop(guard);
        for waiter in waiters {
            waiter.join().expect("waiter");
        }
    });
    assert!(rundown.is_run_down());
}

/// A re-initialisation and a wait racing each other: no bug check (a second wait on a
/// reference whose wait block is still there, two waits at once), and afterwards the state is
/// that of one of the two orders. A smoke test: it does not tell a wait that returned during
/// the re-initialisation from one that returned before it.
#[test]
fn reinitialize_and_wait_may_race() {
    let kernel = Kernel::new();
    let rundown = Rundown::new();
    let cache_aware = CacheAwareRundown::new(TAG).expect("allocate");
    for _ in 0..200 {
        rundown.wait_for_release();
        cache_aware.wait_for_release();
        thread::scope(|s| {
            let reopen = kernel.scoped(s, || (rundown.reinitialize(), cache_aware.reinitialize()));
            rundown.wait_for_release();
            cache_aware.wait_for_release();
            let (a, b) = reopen.join().expect("reinitialize");
            // Reopened before the wait (which then ran it down again), or after it.
            assert!(a.is_ok() && b.is_ok());
        });
        assert_eq!(rundown.try_acquire().is_none(), rundown.is_run_down());
        assert_eq!(
            cache_aware.try_acquire().is_none(),
            cache_aware.is_run_down()
        );
    }
}
