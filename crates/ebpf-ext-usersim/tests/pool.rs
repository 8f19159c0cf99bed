//! Pool: zeroing, tags, leak report, poisoning, bug checks and fault injection.

use core::ffi::c_void;

use ebpf_ext_sys::wdm::{
    BAD_POOL_CALLER, DISPATCH_LEVEL, ExAllocatePool2, ExFreePool, ExFreePoolWithTag,
    IRQL_NOT_LESS_OR_EQUAL, POOL_FLAG_NON_PAGED, POOL_FLAG_PAGED, POOL_FLAG_UNINITIALIZED,
};
use ebpf_ext_usersim::{
    FREED_POISON, Fault, Kernel, UNINITIALIZED_FILL, expect_bugcheck, set_current_irql,
};

const TAG: u32 = u32::from_le_bytes(*b"Test");
const OTHER: u32 = u32::from_le_bytes(*b"Othr");

fn alloc(flags: u64, size: usize, tag: u32) -> *mut u8 {
    // SAFETY: a kernel is bound by the caller.
    unsafe { ExAllocatePool2(flags, size, tag) }.cast()
}

#[test]
fn allocations_are_zeroed_aligned_and_counted() {
    let kernel = Kernel::new();
    let p = alloc(POOL_FLAG_NON_PAGED, 100, TAG);
    assert!(!p.is_null());
    assert_eq!(p as usize % 16, 0);
    // SAFETY: 100 bytes were allocated.
    let bytes = unsafe { core::slice::from_raw_parts(p, 100) };
    assert!(bytes.iter().all(|&b| b == 0));
    let big = alloc(POOL_FLAG_NON_PAGED, 8192, TAG);
    assert_eq!(big as usize % 4096, 0);
    let raw = alloc(POOL_FLAG_NON_PAGED | POOL_FLAG_UNINITIALIZED, 8, OTHER);
    // SAFETY: 8 bytes were allocated.
    assert_eq!(unsafe { *raw }, UNINITIALIZED_FILL);
    let usage = kernel.pool_outstanding();
    assert_eq!(usage.len(), 2);
    assert_eq!((usage[0].tag.as_str(), usage[0].count), ("Othr", 1));
    assert_eq!(
        (usage[1].tag.as_str(), usage[1].count, usage[1].bytes),
        ("Test", 2, 8292)
    );
    // SAFETY: each block is live and freed once with its tag.
    unsafe { ExFreePoolWithTag(p.cast(), TAG) };
    // SAFETY: as above.
    unsafe { ExFreePoolWithTag(big.cast(), TAG) };
    // SAFETY: as above (untagged free).
    unsafe { ExFreePool(raw.cast()) };
    kernel.assert_no_leaks();
}

#[test]
fn invalid_requests_return_null() {
    let _kernel = Kernel::new();
    assert!(alloc(POOL_FLAG_NON_PAGED, 8, 0).is_null(), "tag 0");
    assert!(alloc(0, 8, TAG).is_null(), "no pool type");
    assert!(
        alloc(POOL_FLAG_NON_PAGED | POOL_FLAG_PAGED, 8, TAG).is_null(),
        "two pool types"
    );
    assert!(
        alloc(POOL_FLAG_NON_PAGED | 0x8000, 8, TAG).is_null(),
        "unknown required flag"
    );
}

#[test]
fn leak_report_names_the_tag() {
    let kernel = Kernel::new();
    let _leak = alloc(POOL_FLAG_NON_PAGED, 24, TAG);
    let report =
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| kernel.assert_no_leaks()))
            .unwrap_err();
    let text = report.downcast_ref::<String>().expect("message");
    assert!(text.contains("Test") && text.contains("24"), "{text}");
}

#[test]
fn freed_memory_is_poisoned() {
    let _kernel = Kernel::new();
    let p = alloc(POOL_FLAG_NON_PAGED, 32, TAG);
    // SAFETY: live block freed once.
    unsafe { ExFreePoolWithTag(p.cast(), TAG) };
    // SAFETY: freed blocks stay mapped in quarantine; reading one is how a use-after-free
    // shows up in this simulation.
    let after = unsafe { core::slice::from_raw_parts(p, 32) };
    assert!(after.iter().all(|&b| b == FREED_POISON));
}

#[test]
fn double_free_bugchecks() {
    let _kernel = Kernel::new();
    let check = expect_bugcheck("double_free_bugchecks", || {
        let p = alloc(POOL_FLAG_NON_PAGED, 32, TAG);
        // SAFETY: deliberately freeing twice.
        unsafe {
            ExFreePoolWithTag(p.cast(), TAG);
        }
        // SAFETY: as above.
        unsafe {
            ExFreePoolWithTag(p.cast(), TAG);
        }
    });
    assert_eq!(check.code, BAD_POOL_CALLER);
    assert_eq!(check.parameters[0], 0x07);
    assert_eq!(check.api, "ExFreePoolWithTag");
}

#[test]
fn tag_mismatch_bugchecks() {
    let _kernel = Kernel::new();
    let check = expect_bugcheck("tag_mismatch_bugchecks", || {
        let p = alloc(POOL_FLAG_NON_PAGED, 32, TAG);
        // SAFETY: deliberately freeing with the wrong tag.
        unsafe { ExFreePoolWithTag(p.cast(), OTHER) };
    });
    assert_eq!(check.code, BAD_POOL_CALLER);
    assert_eq!(
        check.parameters,
        [0x0A, check.parameters[1], u64::from(TAG), u64::from(OTHER)]
    );
}

#[test]
fn paged_allocation_at_dispatch_bugchecks() {
    let _kernel = Kernel::new();
    let check = expect_bugcheck("paged_allocation_at_dispatch_bugchecks", || {
        set_current_irql(DISPATCH_LEVEL);
        let _ = alloc(POOL_FLAG_PAGED, 32, TAG);
    });
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.irql, DISPATCH_LEVEL);
    assert!(
        check.message.contains("ExAllocatePool2"),
        "{}",
        check.message
    );
}

#[test]
fn unbound_thread_aborts_naming_the_api() {
    let check = expect_bugcheck("unbound_thread_aborts_naming_the_api", || {
        let _ = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    });
    assert_eq!(check.code, ebpf_ext_usersim::NO_KERNEL_BOUND);
    assert_eq!(check.api, "ExAllocatePool2");
}

#[test]
fn a_disarmed_fault_never_fires_and_one_that_fired_stays_reported() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Allocation(1));
    let a = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    assert!(a.is_null());
    kernel.inject(Fault::Allocation(2));
    kernel.inject(Fault::Call("ExAllocatePool2", 1));
    kernel.disarm_faults();
    let blocks: Vec<_> = (0..3).map(|_| alloc(POOL_FLAG_NON_PAGED, 8, TAG)).collect();
    assert!(blocks.iter().all(|p| !p.is_null()), "nothing armed fires");
    assert_eq!(kernel.faults_triggered(), vec![Fault::Allocation(1)]);
    for p in blocks {
        // SAFETY: live blocks freed once.
        unsafe { ExFreePoolWithTag(p.cast::<c_void>(), TAG) };
    }
    kernel.assert_no_leaks();
}

#[test]
fn nth_allocation_fails() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Allocation(2));
    let a = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    let b = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    let c = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    assert!(!a.is_null() && b.is_null() && !c.is_null());
    assert_eq!(kernel.faults_triggered(), vec![Fault::Allocation(2)]);
    kernel.inject(Fault::Call("ExAllocatePool2", 1));
    assert!(alloc(POOL_FLAG_NON_PAGED, 8, TAG).is_null());
    for p in [a, c] {
        // SAFETY: live blocks freed once.
        unsafe { ExFreePoolWithTag(p.cast::<c_void>(), TAG) };
    }
    kernel.assert_no_leaks();
}

#[test]
fn kernels_are_independent() {
    let first = Kernel::new();
    let p = alloc(POOL_FLAG_NON_PAGED, 8, TAG);
    first.inject(Fault::Allocation(1));
    let second = Kernel::new(); // now bound to this thread
    assert!(second.pool_outstanding().is_empty());
    assert!(
        !alloc(POOL_FLAG_NON_PAGED, 8, OTHER).is_null(),
        "the other kernel's fault does not apply"
    );
    assert_eq!(first.pool_outstanding().len(), 1);
    assert_eq!(second.pool_outstanding()[0].tag, "Othr");
    assert!(!p.is_null());
}

/// A spin lock in paged pool: acquiring it raises to DISPATCH_LEVEL and touches it there,
/// which on Windows bug-checks whenever the page is out; here always.
#[test]
fn a_spin_lock_in_paged_pool_bugchecks() {
    let check = expect_bugcheck("a_spin_lock_in_paged_pool_bugchecks", || {
        let _kernel = Kernel::new();
        let lock = alloc(POOL_FLAG_PAGED, 64, TAG);
        // SAFETY: a zeroed (initialised) spin lock in a live allocation; the acquire must
        // stop the machine before it returns.
        let _ =
            unsafe { ebpf_ext_sys::wdm::ExAcquireSpinLockExclusive(lock.wrapping_add(8).cast()) };
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (IRQL_NOT_LESS_OR_EQUAL, "ExAcquireSpinLockExclusive")
    );
    assert_eq!(check.parameters[1], u64::from(DISPATCH_LEVEL));
    assert!(check.message.contains("paged pool"), "{}", check.message);
}

/// A zeroed (initialised) rundown reference in a pool allocation of `flags`.
fn rundown_in(flags: u64) -> *mut ebpf_ext_sys::wdm::EX_RUNDOWN_REF {
    // SAFETY: a kernel is bound by the caller; pool is 16-byte aligned.
    unsafe { ExAllocatePool2(flags, 8, TAG) }.cast()
}

/// A rundown reference in paged pool may be used up to APC_LEVEL; at DISPATCH_LEVEL it may
/// be paged out, and using it there bug-checks.
#[test]
fn a_rundown_reference_in_paged_pool_is_refused_at_dispatch_level_only() {
    let kernel = Kernel::new();
    let paged = rundown_in(POOL_FLAG_PAGED);
    let unpaged = rundown_in(POOL_FLAG_NON_PAGED);
    // Each acquired and released once, the paged one at PASSIVE_LEVEL, the other at
    // DISPATCH_LEVEL.
    for (reference, irql) in [(paged, 0), (unpaged, DISPATCH_LEVEL)] {
        set_current_irql(irql);
        // SAFETY: a zeroed (initialised) reference in a live allocation.
        let acquired = unsafe { ebpf_ext_sys::wdm::ExAcquireRundownProtection(reference) };
        assert_eq!(acquired, 1);
        // SAFETY: as above; the reference just acquired.
        unsafe { ebpf_ext_sys::wdm::ExReleaseRundownProtection(reference) };
        set_current_irql(0);
        // SAFETY: allocated above with this tag, freed once.
        unsafe { ExFreePoolWithTag(reference.cast(), TAG) };
    }
    kernel.assert_no_leaks();
    let check = expect_bugcheck(
        "a_rundown_reference_in_paged_pool_is_refused_at_dispatch_level_only",
        || {
            let _kernel = Kernel::new();
            let paged = rundown_in(POOL_FLAG_PAGED);
            set_current_irql(DISPATCH_LEVEL);
            // SAFETY: a zeroed reference in a live allocation; the acquire must stop the
            // machine.
            let _ = unsafe { ebpf_ext_sys::wdm::ExAcquireRundownProtection(paged) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (IRQL_NOT_LESS_OR_EQUAL, "ExAcquireRundownProtection")
    );
}
