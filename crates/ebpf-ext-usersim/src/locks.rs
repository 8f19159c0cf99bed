//! Executive spin locks (`EX_SPIN_LOCK`, reader/writer) and push locks (`EX_PUSH_LOCK`).
//!
//! Spin locks raise the simulated IRQL to DISPATCH_LEVEL and restore it on release. Push
//! locks block (the waiter sleeps on the kernel's wait condition), require IRQL ≤ APC_LEVEL and
//! a critical region, and favour a queued exclusive waiter over new shared holders.
//!
//! Both detect what would hang a real machine: acquiring a lock the thread already holds
//! (spin locks in any mode; push locks exclusively, or shared behind a queued exclusive
//! waiter) is a bug check instead of a deadlock. A spin lock's release must restore the IRQL
//! its acquire returned, and may lower the IRQL below DISPATCH_LEVEL only once the thread
//! holds no other spin lock (nested spin locks released out of order would run the rest of
//! the outer section below DISPATCH_LEVEL): either breaks the routines' documented contract
//! (`OldIrql` is what the acquire returned) and is a bug check here.

use core::hint;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use core::time::Duration;
use std::thread;

use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, EX_PUSH_LOCK, EX_SPIN_LOCK,
    IRQL_NOT_LESS_OR_EQUAL,
};

use crate::kernel::{
    HeldLock, THREAD, bugcheck, current_irql, lock, require_bound, require_irql, set_irql,
    with_kernel,
};

fn held(addr: usize) -> Option<bool> {
    THREAD.with(|t| {
        t.held_locks
            .borrow()
            .iter()
            .find(|held| held.addr == addr)
            .map(|held| held.exclusive)
    })
}

fn note_acquired(addr: usize, exclusive: bool, spin_old_irql: Option<KIRQL>) {
    THREAD.with(|t| {
        t.held_locks.borrow_mut().push(HeldLock {
            addr,
            exclusive,
            spin_old_irql,
        });
    });
}

/// Forgets the lock at `addr` held in mode `exclusive` (bug check if it is not held so), and
/// returns what it was.
fn note_released(api: &'static str, addr: usize, exclusive: bool) -> HeldLock {
    let found = THREAD.with(|t| {
        let mut locks = t.held_locks.borrow_mut();
        locks
            .iter()
            .rposition(|held| held.addr == addr && held.exclusive == exclusive)
            .map(|i| locks.remove(i))
    });
    found.unwrap_or_else(|| {
        let mode = if exclusive { "exclusive" } else { "shared" };
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [addr as u64, 0, 0, 0],
            &format!("released a lock this thread does not hold {mode}"),
        )
    })
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

// ---- EX_SPIN_LOCK -----------------------------------------------------------------------------

const SPIN_EXCLUSIVE: i32 = i32::MIN; // 0x8000_0000
const SPIN_WAITING: i32 = 0x4000_0000;
const SPIN_SHARED_MASK: i32 = 0x3FFF_FFFF;

fn spin_word<'a>(lock: *mut EX_SPIN_LOCK) -> &'a AtomicI32 {
    // SAFETY: callers pass a valid, aligned EX_SPIN_LOCK in memory that outlives the call; all
    // writers use atomic operations.
    unsafe { AtomicI32::from_ptr(lock) }
}

fn spin_acquire_prologue(api: &'static str, lock: *mut EX_SPIN_LOCK) -> KIRQL {
    require_bound(api);
    require_irql(api, DISPATCH_LEVEL);
    crate::pool::require_nonpaged(api, lock as usize, "the spin lock", true);
    if held(lock as usize).is_some() {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [lock as u64, 0, 0, 0],
            "spin lock acquired recursively (deadlock)",
        );
    }
    let old = current_irql();
    set_irql(DISPATCH_LEVEL);
    old
}

fn spin_release_prologue(
    api: &'static str,
    lock: *mut EX_SPIN_LOCK,
    old_irql: KIRQL,
    exclusive: bool,
) {
    require_bound(api);
    let irql = current_irql();
    if irql != DISPATCH_LEVEL || old_irql > DISPATCH_LEVEL {
        bugcheck(
            api,
            IRQL_NOT_LESS_OR_EQUAL,
            [u64::from(irql), u64::from(old_irql), 0, 0],
            &format!("{api} at IRQL {irql} (must be DISPATCH_LEVEL) restoring IRQL {old_irql}"),
        );
    }
    let released = note_released(api, lock as usize, exclusive);
    if released.spin_old_irql != Some(old_irql) {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [lock as u64, u64::from(old_irql), 0, 0],
            &format!(
                "{api} restores IRQL {old_irql}, but acquiring the lock returned {:?}",
                released.spin_old_irql
            ),
        );
    }
    let other_spin_lock = THREAD.with(|t| {
        t.held_locks
            .borrow()
            .iter()
            .find_map(|held| held.spin_old_irql.map(|_| held.addr))
    });
    if let Some(other) = other_spin_lock.filter(|_| old_irql < DISPATCH_LEVEL) {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [lock as u64, u64::from(old_irql), other as u64, 0],
            &format!(
                "{api} lowers IRQL to {old_irql} while the thread still holds the spin lock at {other:#x} (released out of order)"
            ),
        );
    }
}

/// `ExAcquireSpinLockShared`.
///
/// # Safety
/// Kernel routine; `SpinLock` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquireSpinLockShared(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL {
    let old = spin_acquire_prologue("ExAcquireSpinLockShared", SpinLock);
    let word = spin_word(SpinLock);
    let mut spins = 0;
    loop {
        let v = word.load(Ordering::Relaxed);
        if v & (SPIN_EXCLUSIVE | SPIN_WAITING) == 0
            && word
                .compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break;
        }
        backoff(&mut spins);
    }
    note_acquired(SpinLock as usize, false, Some(old));
    old
}

/// `ExReleaseSpinLockShared`.
///
/// # Safety
/// Kernel routine; the caller holds the lock shared.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleaseSpinLockShared(SpinLock: *mut EX_SPIN_LOCK, OldIrql: KIRQL) {
    spin_release_prologue("ExReleaseSpinLockShared", SpinLock, OldIrql, false);
    spin_word(SpinLock).fetch_sub(1, Ordering::Release);
    set_irql(OldIrql);
}

/// `ExAcquireSpinLockExclusive`.
///
/// # Safety
/// Kernel routine; `SpinLock` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquireSpinLockExclusive(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL {
    let old = spin_acquire_prologue("ExAcquireSpinLockExclusive", SpinLock);
    let word = spin_word(SpinLock);
    let mut spins = 0;
    loop {
        let v = word.load(Ordering::Relaxed);
        if v & (SPIN_EXCLUSIVE | SPIN_SHARED_MASK) == 0 {
            if word
                .compare_exchange_weak(v, SPIN_EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        } else if v & SPIN_WAITING == 0 {
            // Hold off new shared holders so a writer is not starved.
            word.fetch_or(SPIN_WAITING, Ordering::Relaxed);
        }
        backoff(&mut spins);
    }
    note_acquired(SpinLock as usize, true, Some(old));
    old
}

/// `ExReleaseSpinLockExclusive`.
///
/// # Safety
/// Kernel routine; the caller holds the lock exclusive.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleaseSpinLockExclusive(
    SpinLock: *mut EX_SPIN_LOCK,
    OldIrql: KIRQL,
) {
    spin_release_prologue("ExReleaseSpinLockExclusive", SpinLock, OldIrql, true);
    spin_word(SpinLock).store(0, Ordering::Release);
    set_irql(OldIrql);
}

// ---- EX_PUSH_LOCK -----------------------------------------------------------------------------

const PUSH_EXCLUSIVE: usize = 1;
const PUSH_WAITER: usize = 2; // exclusive waiters, counted in bits 1..16
const PUSH_WAITER_MASK: usize = 0xFFFE;
const PUSH_SHARED: usize = 1 << 16;

fn push_word<'a>(lock: *mut EX_PUSH_LOCK) -> &'a AtomicUsize {
    // SAFETY: callers pass a valid, aligned EX_PUSH_LOCK that outlives the call; all writers
    // use atomic operations.
    unsafe { AtomicUsize::from_ptr(lock) }
}

fn push_prologue(api: &'static str, lock: *mut EX_PUSH_LOCK, flags: u32) {
    require_irql(api, APC_LEVEL);
    let in_region = THREAD.with(|t| t.critical_region.get()) > 0 || current_irql() >= APC_LEVEL;
    if !in_region {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [lock as u64, 0, 0, 0],
            "push lock acquired outside a critical region (call KeEnterCriticalRegion first)",
        );
    }
    if flags != 0 {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [lock as u64, u64::from(flags), 0, 0],
            "push lock flags must be 0",
        );
    }
}

fn push_wait(api: &'static str, mut try_take: impl FnMut() -> bool) {
    with_kernel(api, |k| {
        let mut guard = lock(&k.wait_lock);
        while !try_take() {
            guard = k
                .wait_cv
                .wait_timeout(guard, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    });
}

fn push_wake(api: &'static str) {
    with_kernel(api, |k| {
        let _guard = lock(&k.wait_lock);
        k.wait_cv.notify_all();
    });
}

/// `ExInitializePushLock`.
///
/// # Safety
/// Kernel routine; `PushLock` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExInitializePushLock(PushLock: *mut EX_PUSH_LOCK) {
    require_bound("ExInitializePushLock");
    push_word(PushLock).store(0, Ordering::Release);
}

/// `ExAcquirePushLockExclusiveEx`.
///
/// # Safety
/// Kernel routine; `PushLock` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquirePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32) {
    const API: &str = "ExAcquirePushLockExclusiveEx";
    push_prologue(API, PushLock, Flags);
    if held(PushLock as usize).is_some() {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [PushLock as u64, 0, 0, 0],
            "push lock acquired exclusive by a thread that already holds it (deadlock)",
        );
    }
    let word = push_word(PushLock);
    let take = || {
        word.compare_exchange(0, PUSH_EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    };
    if !take() {
        word.fetch_add(PUSH_WAITER, Ordering::Relaxed);
        push_wait(API, || {
            let v = word.load(Ordering::Relaxed);
            v & (PUSH_EXCLUSIVE | !(PUSH_EXCLUSIVE | PUSH_WAITER_MASK)) == 0
                && word
                    .compare_exchange(
                        v,
                        (v - PUSH_WAITER) | PUSH_EXCLUSIVE,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
        });
    }
    note_acquired(PushLock as usize, true, None);
}

/// `ExAcquirePushLockSharedEx`.
///
/// # Safety
/// Kernel routine; `PushLock` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAcquirePushLockSharedEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32) {
    const API: &str = "ExAcquirePushLockSharedEx";
    push_prologue(API, PushLock, Flags);
    let word = push_word(PushLock);
    match held(PushLock as usize) {
        Some(true) => bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [PushLock as u64, 0, 0, 0],
            "push lock acquired shared by its exclusive owner (deadlock)",
        ),
        Some(false) if word.load(Ordering::Relaxed) & PUSH_WAITER_MASK != 0 => {
            bugcheck(
                API,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [PushLock as u64, 0, 0, 0],
                "recursive shared push lock acquire behind a queued exclusive waiter (deadlock)",
            );
        }
        _ => {}
    }
    let take = || {
        let v = word.load(Ordering::Relaxed);
        v & (PUSH_EXCLUSIVE | PUSH_WAITER_MASK) == 0
            && word
                .compare_exchange(v, v + PUSH_SHARED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    };
    if !take() {
        push_wait(API, take);
    }
    note_acquired(PushLock as usize, false, None);
}

/// `ExReleasePushLockExclusiveEx`.
///
/// # Safety
/// Kernel routine; the caller holds the lock exclusive.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleasePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32) {
    const API: &str = "ExReleasePushLockExclusiveEx";
    require_bound(API);
    require_irql(API, DISPATCH_LEVEL);
    let _ = Flags;
    note_released(API, PushLock as usize, true);
    push_word(PushLock).fetch_and(!PUSH_EXCLUSIVE, Ordering::Release);
    push_wake(API);
}

/// `ExReleasePushLockSharedEx`.
///
/// # Safety
/// Kernel routine; the caller holds the lock shared.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExReleasePushLockSharedEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32) {
    const API: &str = "ExReleasePushLockSharedEx";
    require_bound(API);
    require_irql(API, DISPATCH_LEVEL);
    let _ = Flags;
    note_released(API, PushLock as usize, false);
    push_word(PushLock).fetch_sub(PUSH_SHARED, Ordering::Release);
    push_wake(API);
}
