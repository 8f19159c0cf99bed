//! IRQL, critical regions, spin locks, push locks, stack expansion and debug output.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use ebpf_ext_sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_ext_sys::ntddk::{
    KeEnterCriticalRegion, KeExpandKernelStackAndCalloutEx, KeLeaveCriticalRegion,
    MAXIMUM_EXPANSION_SIZE,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER_4, STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, DbgPrintEx, EX_PUSH_LOCK,
    EX_RUNDOWN_REF, EX_SPIN_LOCK, ExAcquirePushLockExclusiveEx, ExAcquirePushLockSharedEx,
    ExAcquireSpinLockExclusive, ExAcquireSpinLockShared, ExReleasePushLockExclusiveEx,
    ExReleasePushLockSharedEx, ExReleaseSpinLockExclusive, ExReleaseSpinLockShared,
    ExWaitForRundownProtectionRelease, IRQL_NOT_GREATER_OR_EQUAL, IRQL_NOT_LESS_OR_EQUAL,
    KeLowerIrql, PASSIVE_LEVEL,
};
use ebpf_ext_usersim::{Fault, Kernel, expect_bugcheck, set_current_irql};

#[test]
fn raise_and_lower() {
    let _k = Kernel::new();
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    // SAFETY: raised and lowered in pairs on this thread.
    let old = unsafe { KeRaiseIrql(DISPATCH_LEVEL) };
    assert_eq!((old, KeGetCurrentIrql()), (PASSIVE_LEVEL, DISPATCH_LEVEL));
    // SAFETY: restores the value returned by the raise.
    unsafe { KeLowerIrql(old) };
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn raise_to_lower_level_bugchecks() {
    let _k = Kernel::new();
    let check = expect_bugcheck("raise_to_lower_level_bugchecks", || {
        set_current_irql(DISPATCH_LEVEL);
        // SAFETY: deliberately wrong.
        let _ = unsafe { KeRaiseIrql(APC_LEVEL) };
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (IRQL_NOT_GREATER_OR_EQUAL, "KfRaiseIrql")
    );
}

#[test]
fn wait_at_dispatch_bugchecks() {
    let _k = Kernel::new();
    let check = expect_bugcheck("wait_at_dispatch_bugchecks", || {
        let mut r = EX_RUNDOWN_REF::default();
        set_current_irql(DISPATCH_LEVEL);
        // SAFETY: a valid reference; the IRQL is deliberately too high.
        unsafe { ExWaitForRundownProtectionRelease(&raw mut r) };
    });
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.api, "ExWaitForRundownProtectionRelease");
    assert_eq!(check.irql, DISPATCH_LEVEL);
}

#[test]
fn spin_lock_raises_to_dispatch_and_excludes_writers() {
    let kernel = Kernel::new();
    let lock = Box::new(0 as EX_SPIN_LOCK);
    let lock_addr = ptr::from_ref(&*lock) as usize;
    let counter = AtomicU32::new(0);
    // SAFETY: the lock lives until the end of the test; acquire/release pair on one thread.
    let old = unsafe { ExAcquireSpinLockShared(lock_addr as *mut EX_SPIN_LOCK) };
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: held shared above.
    unsafe { ExReleaseSpinLockShared(lock_addr as *mut EX_SPIN_LOCK, old) };
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    thread::scope(|s| {
        for _ in 0..4 {
            kernel.scoped(s, || {
                for _ in 0..2000 {
                    // SAFETY: the lock outlives the scope; each acquire is released.
                    let old = unsafe { ExAcquireSpinLockExclusive(lock_addr as *mut EX_SPIN_LOCK) };
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    // SAFETY: held exclusive.
                    unsafe { ExReleaseSpinLockExclusive(lock_addr as *mut EX_SPIN_LOCK, old) };
                }
            });
        }
    });
    assert_eq!(
        counter.load(Ordering::Relaxed),
        8000,
        "exclusive sections did not overlap"
    );
}

#[test]
fn recursive_spin_lock_bugchecks_instead_of_hanging() {
    let _k = Kernel::new();
    let check = expect_bugcheck("recursive_spin_lock_bugchecks_instead_of_hanging", || {
        let mut lock: EX_SPIN_LOCK = 0;
        // SAFETY: deliberately recursive.
        let _old = unsafe { ExAcquireSpinLockShared(&raw mut lock) };
        // SAFETY: as above.
        let _again = unsafe { ExAcquireSpinLockExclusive(&raw mut lock) };
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert!(check.message.contains("recursively"));
}

#[test]
fn nested_spin_locks_released_in_order_restore_passive() {
    let _k = Kernel::new();
    let (mut outer, mut inner): (EX_SPIN_LOCK, EX_SPIN_LOCK) = (0, 0);
    // SAFETY: locks on this stack, released below in reverse order.
    let outer_old = unsafe { ExAcquireSpinLockExclusive(&raw mut outer) };
    // SAFETY: as above.
    let inner_old = unsafe { ExAcquireSpinLockShared(&raw mut inner) };
    assert_eq!((outer_old, inner_old), (PASSIVE_LEVEL, DISPATCH_LEVEL));
    // SAFETY: held shared, with the IRQL its acquire returned.
    unsafe { ExReleaseSpinLockShared(&raw mut inner, inner_old) };
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: held exclusive, with the IRQL its acquire returned.
    unsafe { ExReleaseSpinLockExclusive(&raw mut outer, outer_old) };
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn spin_lock_released_with_another_irql_bugchecks() {
    let _k = Kernel::new();
    let check = expect_bugcheck("spin_lock_released_with_another_irql_bugchecks", || {
        let mut lock: EX_SPIN_LOCK = 0;
        // SAFETY: acquired at PASSIVE_LEVEL, released restoring APC_LEVEL: the mistake.
        let old = unsafe { ExAcquireSpinLockExclusive(&raw mut lock) };
        assert_eq!(old, PASSIVE_LEVEL);
        // SAFETY: as above.
        unsafe { ExReleaseSpinLockExclusive(&raw mut lock, APC_LEVEL) };
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert!(
        check.message.contains("restores IRQL 1"),
        "{}",
        check.message
    );
}

#[test]
fn nested_spin_locks_released_out_of_order_bugcheck() {
    let _k = Kernel::new();
    let check = expect_bugcheck("nested_spin_locks_released_out_of_order_bugcheck", || {
        let (mut outer, mut inner): (EX_SPIN_LOCK, EX_SPIN_LOCK) = (0, 0);
        // SAFETY: released out of order below: the mistake.
        let outer_old = unsafe { ExAcquireSpinLockShared(&raw mut outer) };
        // SAFETY: as above.
        let _inner_old = unsafe { ExAcquireSpinLockShared(&raw mut inner) };
        // SAFETY: as above: lowers to PASSIVE_LEVEL while `inner` is held.
        unsafe { ExReleaseSpinLockShared(&raw mut outer, outer_old) };
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert!(check.message.contains("out of order"), "{}", check.message);
}

#[test]
fn push_lock_needs_a_critical_region() {
    let _k = Kernel::new();
    let check = expect_bugcheck("push_lock_needs_a_critical_region", || {
        let mut lock: EX_PUSH_LOCK = 0;
        // SAFETY: a valid lock; deliberately outside a critical region.
        unsafe { ExAcquirePushLockExclusiveEx(&raw mut lock, 0) };
    });
    assert!(
        check.message.contains("critical region"),
        "{}",
        check.message
    );
}

#[test]
fn push_lock_shared_and_exclusive() {
    let kernel = Kernel::new();
    let lock = Box::new(0 as EX_PUSH_LOCK);
    let addr = ptr::from_ref(&*lock) as usize;
    let counter = AtomicU32::new(0);
    thread::scope(|s| {
        for i in 0..4 {
            let counter = &counter;
            kernel.scoped(s, move || {
                for _ in 0..500 {
                    // SAFETY: paired with the leave below.
                    unsafe { KeEnterCriticalRegion() };
                    if i % 2 == 0 {
                        // SAFETY: the lock outlives the scope; paired with the release below.
                        unsafe { ExAcquirePushLockExclusiveEx(addr as *mut EX_PUSH_LOCK, 0) };
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        // SAFETY: held exclusive.
                        unsafe { ExReleasePushLockExclusiveEx(addr as *mut EX_PUSH_LOCK, 0) };
                    } else {
                        // SAFETY: as above, shared.
                        unsafe { ExAcquirePushLockSharedEx(addr as *mut EX_PUSH_LOCK, 0) };
                        let _ = counter.load(Ordering::Relaxed);
                        // SAFETY: held shared.
                        unsafe { ExReleasePushLockSharedEx(addr as *mut EX_PUSH_LOCK, 0) };
                    }
                    // SAFETY: paired with the enter above.
                    unsafe { KeLeaveCriticalRegion() };
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::Relaxed), 1000);
    assert_eq!(*lock, 0, "lock word back to free");
}

unsafe extern "win64" fn count_callout(parameter: *mut c_void) {
    // SAFETY: the tests pass a pointer to an AtomicU32.
    let counter = unsafe { &*parameter.cast::<AtomicU32>() };
    counter.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn stack_expansion_runs_the_callout_after_checks() {
    let kernel = Kernel::new();
    let counter = AtomicU32::new(0);
    let param = ptr::from_ref(&counter).cast_mut().cast::<c_void>();
    // SAFETY: the callout only increments the counter.
    let run = |size, wait| unsafe {
        KeExpandKernelStackAndCalloutEx(count_callout, param, size, wait, ptr::null_mut())
    };
    assert_eq!(run(16 * 1024, 1), STATUS_SUCCESS);
    assert_eq!(
        run(MAXIMUM_EXPANSION_SIZE + 1, 0),
        STATUS_INVALID_PARAMETER_3
    );
    set_current_irql(DISPATCH_LEVEL);
    assert_eq!(run(16 * 1024, 1), STATUS_INVALID_PARAMETER_4);
    assert_eq!(run(16 * 1024, 0), STATUS_SUCCESS);
    set_current_irql(PASSIVE_LEVEL);
    kernel.inject(Fault::Call("KeExpandKernelStackAndCalloutEx", 1));
    assert_eq!(run(16 * 1024, 0), STATUS_NO_MEMORY);
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    assert_eq!(kernel.stack_expansions(), 2);
}

#[test]
fn debug_print_is_captured() {
    let kernel = Kernel::new();
    // SAFETY: format "%s" with one NUL-terminated string, the supported shape.
    unsafe { DbgPrintEx(77, 0, c"%s".as_ptr(), c"hello from the driver".as_ptr()) };
    let out = kernel.debug_output();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].component, out[0].level, out[0].text.as_str()),
        (77, 0, "hello from the driver")
    );
}

/// A kernel kept in a thread-local of the test's own may be dropped after usersim's binding
/// of that thread is already gone (thread-local destructors run in reverse order of first
/// use); dropping it then must not touch the binding.
#[test]
fn a_kernel_dropped_after_the_threads_binding_is_gone() {
    thread_local! {
        static HELD: core::cell::RefCell<Option<Kernel>> = const { core::cell::RefCell::new(None) };
    }
    std::thread::spawn(|| {
        // First use registers HELD's destructor before usersim's binding is first used, so
        // the binding is destroyed first at thread exit.
        HELD.with(|held| assert!(held.borrow().is_none()));
        let kernel = Kernel::new();
        HELD.with(|held| *held.borrow_mut() = Some(kernel));
    })
    .join()
    .expect("the thread exits cleanly");
}

/// A thread's CPU state belongs to the kernel it was bound to: a second kernel created on
/// the same thread gives it a processor number below its own processor count and starts it
/// at PASSIVE_LEVEL, whatever the first kernel had assigned or left.
#[test]
fn a_new_kernel_on_the_same_thread_starts_its_cpu_state_afresh() {
    use ebpf_ext_sys::ntddk::{KeGetCurrentProcessorNumberEx, KeQueryActiveProcessorCountEx};
    use ebpf_ext_usersim::Config;

    let first = Kernel::with_config(Config {
        processor_count: 4,
        ..Config::default()
    });
    // Three other threads take processors 0, 1 and 2, so this one gets 3.
    for _ in 0..3 {
        // SAFETY: a NULL PROCESSOR_NUMBER is allowed.
        first
            .spawn(|| unsafe { KeGetCurrentProcessorNumberEx(ptr::null_mut()) })
            .join()
            .expect("a processor number");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { KeGetCurrentProcessorNumberEx(ptr::null_mut()) }, 3);
    set_current_irql(APC_LEVEL);
    drop(first);

    let _second = Kernel::with_config(Config {
        processor_count: 1,
        ..Config::default()
    });
    // SAFETY: as above.
    let processor = unsafe { KeGetCurrentProcessorNumberEx(ptr::null_mut()) };
    // SAFETY: any IRQL; 0xFFFF is every group.
    let count = unsafe { KeQueryActiveProcessorCountEx(0xFFFF) };
    assert!(processor < count, "processor {processor} of {count}");
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}
