//! Work items on worker threads; devices; the export table covers every declared import.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_ext_sys::ntdef::UNICODE_STRING;
use ebpf_ext_sys::ntstatus::{STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DRIVER_VERIFIER_DETECTED_VIOLATION, DelayedWorkQueue, FILE_DEVICE_UNKNOWN,
    IoAllocateWorkItem, IoCreateDevice, IoDeleteDevice, IoFreeWorkItem, IoQueueWorkItem,
    PASSIVE_LEVEL,
};
use ebpf_ext_usersim::{DriverObject, Kernel, expect_bugcheck};

struct Ctx {
    runs: AtomicU32,
    irql: AtomicU32,
    item: *mut ebpf_ext_sys::wdm::IO_WORKITEM,
    free_self: bool,
}

unsafe extern "win64" fn routine(_device: *mut DEVICE_OBJECT, context: *mut c_void) {
    // SAFETY: tests pass a Ctx that outlives the work item.
    let ctx = unsafe { &*context.cast::<Ctx>() };
    ctx.irql.store(
        u32::from(ebpf_ext_sys::intrin::KeGetCurrentIrql()),
        Ordering::SeqCst,
    );
    if ctx.free_self {
        // SAFETY: the item is no longer queued while its routine runs.
        unsafe { IoFreeWorkItem(ctx.item) };
    }
    ctx.runs.fetch_add(1, Ordering::SeqCst);
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn create_device(driver: &mut DriverObject, name: &mut Vec<u16>) -> (i32, *mut DEVICE_OBJECT) {
    let bytes = u16::try_from(name.len() * 2).unwrap();
    let mut us = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: name.as_mut_ptr(),
    };
    let mut device = ptr::null_mut();
    // SAFETY: valid driver object, name and out pointer.
    let status = unsafe {
        IoCreateDevice(
            driver.as_ptr(),
            16,
            &raw mut us,
            FILE_DEVICE_UNKNOWN,
            0,
            0,
            &raw mut device,
        )
    };
    (status, device)
}

#[test]
fn work_item_runs_at_passive_on_a_worker_and_may_free_itself() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let mut name = utf16("\\Device\\Test");
    let (status, device) = create_device(&mut driver, &mut name);
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a live device object.
    let item = unsafe { IoAllocateWorkItem(device) };
    assert!(!item.is_null());
    let ctx = Box::new(Ctx {
        runs: AtomicU32::new(0),
        irql: AtomicU32::new(99),
        item,
        free_self: true,
    });
    // SAFETY: the context outlives the item (we wait for it below).
    unsafe {
        IoQueueWorkItem(
            item,
            routine,
            DelayedWorkQueue,
            ptr::from_ref(&*ctx).cast_mut().cast(),
        );
    };
    kernel.wait_for_work_items();
    assert_eq!(ctx.runs.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.irql.load(Ordering::SeqCst), u32::from(PASSIVE_LEVEL));
    // SAFETY: the device is live and deleted once.
    unsafe { IoDeleteDevice(device) };
    assert!(driver.get().DeviceObject.is_null());
    kernel.assert_no_leaks();
}

static GATE: AtomicU32 = AtomicU32::new(0);

unsafe extern "win64" fn blocker(_device: *mut DEVICE_OBJECT, _context: *mut c_void) {
    while GATE.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
}

#[test]
fn queueing_a_queued_item_bugchecks() {
    let kernel = Kernel::with_config(ebpf_ext_usersim::Config {
        worker_threads: 1,
        ..Default::default()
    });
    let check = expect_bugcheck("queueing_a_queued_item_bugchecks", || {
        let mut driver = DriverObject::new();
        let mut name = utf16("\\Device\\Q");
        let (_, device) = create_device(&mut driver, &mut name);
        // SAFETY: a live device object.
        let gate_item = unsafe { IoAllocateWorkItem(device) };
        // SAFETY: as above.
        let item = unsafe { IoAllocateWorkItem(device) };
        let ctx = Box::leak(Box::new(Ctx {
            runs: AtomicU32::new(0),
            irql: AtomicU32::new(0),
            item,
            free_self: false,
        }));
        let ctx_ptr = ptr::from_mut(ctx).cast::<c_void>();
        // The only worker is held by the blocker, so `item` stays queued.
        // SAFETY: the blocker needs no context.
        unsafe { IoQueueWorkItem(gate_item, blocker, DelayedWorkQueue, ptr::null_mut()) };
        // SAFETY: the context is leaked.
        unsafe { IoQueueWorkItem(item, routine, DelayedWorkQueue, ctx_ptr) };
        // SAFETY: deliberately queued a second time while queued.
        unsafe { IoQueueWorkItem(item, routine, DelayedWorkQueue, ctx_ptr) };
    });
    GATE.store(1, Ordering::SeqCst);
    drop(kernel);
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert!(
        check.message.contains("already queued"),
        "{}",
        check.message
    );
}

#[test]
fn device_names_collide() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let mut name = utf16("\\Device\\Same");
    let (first, d1) = create_device(&mut driver, &mut name);
    let (second, _) = create_device(&mut driver, &mut name);
    assert_eq!(
        (first, second),
        (STATUS_SUCCESS, STATUS_OBJECT_NAME_COLLISION)
    );
    assert_eq!(kernel.device_count(), 1);
    // SAFETY: live device deleted once.
    unsafe { IoDeleteDevice(d1) };
    kernel.assert_no_leaks();
}

#[test]
fn every_declared_import_is_implemented() {
    let declared: Vec<_> = ebpf_ext_sys::imports().collect();
    let missing: Vec<_> = declared
        .iter()
        .filter(|i| ebpf_ext_usersim::exports::find(i.module, i.name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "declared but not implemented: {missing:?}"
    );
    assert_eq!(
        ebpf_ext_usersim::exports::EXPORTS.len(),
        declared.len(),
        "usersim exports something not declared"
    );
    for export in ebpf_ext_usersim::exports::EXPORTS {
        assert!(!export.address.is_null(), "{}", export.name);
    }
}

/// A work item on a device object that does not exist (freed, or never created) would run
/// with a dangling device: Driver Verifier reports it.
#[test]
fn a_work_item_on_a_device_that_does_not_exist_bugchecks() {
    let check = expect_bugcheck(
        "a_work_item_on_a_device_that_does_not_exist_bugchecks",
        || {
            let _kernel = Kernel::new();
            let mut not_a_device = [0u64; 64];
            // SAFETY: deliberately not a device object; usersim refuses it before any use.
            let _ = unsafe { IoAllocateWorkItem(not_a_device.as_mut_ptr().cast()) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (DRIVER_VERIFIER_DETECTED_VIOLATION, "IoAllocateWorkItem")
    );
}

/// Queuing a work item whose device object has been deleted and freed would run the routine
/// with a dangling device.
#[test]
fn queuing_a_work_item_after_its_device_was_freed_bugchecks() {
    let check = expect_bugcheck(
        "queuing_a_work_item_after_its_device_was_freed_bugchecks",
        || {
            let _kernel = Kernel::new();
            let mut driver = DriverObject::new();
            let mut name = utf16("\\Device\\Freed");
            let (status, device) = create_device(&mut driver, &mut name);
            assert_eq!(status, STATUS_SUCCESS);
            // SAFETY: a live device object.
            let item = unsafe { IoAllocateWorkItem(device) };
            assert!(!item.is_null());
            // SAFETY: the device is ours; nothing references it, so it is freed.
            unsafe { IoDeleteDevice(device) };
            // SAFETY: a live, unqueued item (its device deliberately gone).
            unsafe { IoQueueWorkItem(item, routine, DelayedWorkQueue, ptr::null_mut()) };
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (DRIVER_VERIFIER_DETECTED_VIOLATION, "IoQueueWorkItem")
    );
}

/// What a simulated component keeps per kernel.
#[derive(Default)]
struct Counter(core::sync::atomic::AtomicU64);

#[test]
#[allow(clippy::std_instead_of_alloc, reason = "host test")]
fn a_components_state_is_one_per_kernel_shared_by_its_threads_and_dropped_with_it() {
    assert!(
        ebpf_ext_usersim::component::<Counter>().is_none(),
        "no kernel bound"
    );
    let first = Kernel::new();
    let id = ebpf_ext_usersim::kernel_id().expect("bound");
    let state = ebpf_ext_usersim::component::<Counter>().expect("bound");
    state.0.fetch_add(1, Ordering::Relaxed);
    let (seen, other_id) = first
        .spawn(|| {
            let state = ebpf_ext_usersim::component::<Counter>().expect("bound");
            (
                state.0.load(Ordering::Relaxed),
                ebpf_ext_usersim::kernel_id(),
            )
        })
        .join()
        .expect("thread");
    assert_eq!(
        (seen, other_id),
        (1, Some(id)),
        "the same state from another thread"
    );
    let weak = std::sync::Arc::downgrade(&state);
    drop(state);
    let second = Kernel::new();
    let second_id = ebpf_ext_usersim::kernel_id().expect("bound");
    assert_ne!(second_id, id);
    let fresh = ebpf_ext_usersim::component::<Counter>().expect("bound");
    assert_eq!(fresh.0.load(Ordering::Relaxed), 0, "another kernel's state");
    drop((fresh, second));
    assert!(weak.upgrade().is_some(), "alive with its kernel");
    drop(first);
    assert!(weak.upgrade().is_none(), "dropped with its kernel");
}

/// A component's system work runs on a worker of the kernel that queued it (bound to it), at
/// PASSIVE_LEVEL though queued at DISPATCH_LEVEL, and `wait_for_work_items` waits for it.
#[test]
fn system_work_runs_at_passive_on_a_worker_bound_to_the_kernel() {
    let kernel = Kernel::new();
    let id = ebpf_ext_usersim::kernel_id();
    let (sender, receiver) = std::sync::mpsc::channel();
    ebpf_ext_usersim::set_current_irql(ebpf_ext_sys::wdm::DISPATCH_LEVEL);
    ebpf_ext_usersim::queue_system_work(move || {
        let seen = (
            ebpf_ext_usersim::kernel_id(),
            ebpf_ext_sys::intrin::KeGetCurrentIrql(),
            std::thread::current().id(),
        );
        std::thread::sleep(core::time::Duration::from_millis(20));
        sender.send(seen).expect("the test waits");
    });
    ebpf_ext_usersim::set_current_irql(PASSIVE_LEVEL);
    kernel.wait_for_work_items();
    let (kernel_seen, irql, thread) = receiver.try_recv().expect("ran before the wait returned");
    assert_eq!(kernel_seen, id);
    assert_eq!(irql, PASSIVE_LEVEL);
    assert_ne!(thread, std::thread::current().id(), "on a worker");
}

/// System work that returns at raised IRQL bug-checks as a work item routine would.
#[test]
fn system_work_returning_at_dispatch_bugchecks() {
    let check = expect_bugcheck("system_work_returning_at_dispatch_bugchecks", || {
        let kernel = Kernel::new();
        ebpf_ext_usersim::queue_system_work(|| {
            ebpf_ext_usersim::set_current_irql(ebpf_ext_sys::wdm::DISPATCH_LEVEL);
        });
        kernel.wait_for_work_items();
    });
    assert_eq!(check.code, 0xE1, "WORKER_THREAD_RETURNED_AT_BAD_IRQL");
    assert_eq!(check.api, "queue_system_work");
    assert_eq!(
        check.parameters[1],
        u64::from(ebpf_ext_sys::wdm::DISPATCH_LEVEL)
    );
}

/// Work queued from a thread that outlived its kernel bug-checks: the kernel's drop stopped
/// its workers, and nothing may run on a worker of a kernel that is gone.
#[test]
fn system_work_queued_after_the_kernel_was_dropped_bugchecks() {
    let check = expect_bugcheck(
        "system_work_queued_after_the_kernel_was_dropped_bugchecks",
        || {
            let kernel = Kernel::new();
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let late = kernel.spawn(move || {
                wait.recv().expect("the test's signal");
                ebpf_ext_usersim::queue_system_work(|| {});
            });
            drop(kernel);
            go.send(()).expect("the late thread waits");
            late.join().expect("the late thread");
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (ebpf_ext_usersim::NO_KERNEL_BOUND, "queue_system_work"),
        "{check}"
    );
    assert!(check.message.contains("dropped"), "{check}");
}

/// A system work routine that panics bug-checks (SYSTEM_THREAD_EXCEPTION_NOT_HANDLED), as an
/// exception a system thread does not handle: it does not leave the queue waiting for ever.
#[test]
fn system_work_that_panics_bugchecks() {
    let check = expect_bugcheck("system_work_that_panics_bugchecks", || {
        let kernel = Kernel::new();
        ebpf_ext_usersim::queue_system_work(|| panic!("a simulated component's bug"));
        // Long enough for the bug check; a worker that swallowed the panic lets the child
        // exit normally instead (the kernel is leaked: its drop would wait for ever).
        std::thread::sleep(core::time::Duration::from_secs(5));
        core::mem::forget(kernel);
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (0x7E, "queue_system_work"),
        "{check}"
    );
    assert!(
        check.message.contains("a simulated component's bug"),
        "{check}"
    );
}

/// A kernel dropped from one of its own work routines bug-checks: its drop waits for every
/// routine to finish, its own included, so it would wait for ever.
#[test]
fn a_kernel_dropped_from_its_own_work_routine_bugchecks() {
    let check = expect_bugcheck(
        "a_kernel_dropped_from_its_own_work_routine_bugchecks",
        || {
            let kernel = Kernel::new();
            ebpf_ext_usersim::queue_system_work(move || drop(kernel));
            // Long enough for the bug check; a drop that waits for itself lets the child
            // exit normally instead.
            std::thread::sleep(core::time::Duration::from_secs(5));
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (ebpf_ext_usersim::NO_KERNEL_BOUND, "Kernel::drop"),
        "{check}"
    );
}

/// `assert_no_leaks` waits for queued work first: pool a system work routine frees when it
/// runs is not reported as a leak.
#[test]
fn assert_no_leaks_waits_for_work_that_frees_what_it_holds() {
    const TAG: u32 = u32::from_le_bytes(*b"TsWk");
    let kernel = Kernel::new();
    // SAFETY: a plain allocation at PASSIVE_LEVEL, freed by the work below.
    let memory = unsafe {
        ebpf_ext_sys::wdm::ExAllocatePool2(ebpf_ext_sys::wdm::POOL_FLAG_NON_PAGED, 64, TAG)
    };
    assert!(!memory.is_null());
    let memory = memory as usize;
    ebpf_ext_usersim::queue_system_work(move || {
        std::thread::sleep(core::time::Duration::from_millis(200));
        // SAFETY: the allocation above, freed once.
        unsafe { ebpf_ext_sys::wdm::ExFreePoolWithTag(memory as *mut c_void, TAG) };
    });
    kernel.assert_no_leaks();
}
