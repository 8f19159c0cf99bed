//! ControlDevice (security, links, undo on failure), DeviceControl and DriverGlobal.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebpf_ext_usersim::{Caller, DriverObject, Kernel, sweep_call_failures};
use ebpf_extension_common::control::{ControlDevice, dispatch_succeed};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_extension_common::sys::wdm::{FILE_DEVICE_NETWORK, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL};

const TAG: PoolTag = PoolTag::new(*b"CtGl");

fn create(driver: &mut DriverObject) -> Result<ControlDevice> {
    // SAFETY: the test's driver object outlives the device.
    unsafe {
        ControlDevice::create(
            driver.as_ptr(),
            utf16!("\\Device\\CtlTest"),
            utf16!("\\GLOBAL??\\CtlTest"),
            FILE_DEVICE_NETWORK,
        )
    }
}

#[test]
fn the_control_device_admits_only_system_and_administrators() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    // SAFETY: the test owns the driver object.
    unsafe {
        (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch_succeed);
    };
    let device = create(&mut driver).expect("create");
    assert_eq!(
        kernel
            .symbolic_links()
            .get("\\GLOBAL??\\CtlTest")
            .map(String::as_str),
        Some("\\Device\\CtlTest")
    );
    assert_eq!(
        kernel.open("\\\\.\\CtlTest", Caller::User).unwrap_err(),
        STATUS_ACCESS_DENIED
    );
    for caller in [Caller::Administrator, Caller::System] {
        let handle = kernel.open("\\\\.\\CtlTest", caller).expect("admitted");
        kernel.close(handle);
    }
    drop(device);
    assert!(kernel.symbolic_links().is_empty());
    kernel.assert_no_leaks();
}

#[test]
fn a_failed_step_deletes_what_was_created() {
    let swept = sweep_call_failures(|_| {
        let mut driver = DriverObject::new();
        if let Ok(device) = create(&mut driver) {
            drop(device);
        }
    });
    assert_eq!(
        swept, 3,
        "IoCreateDevice, ObSetSecurityObjectByPointer, IoCreateSymbolicLink"
    );
}

#[test]
fn utf16_encodes_ascii_at_compile_time() {
    const NAME: &[u16] = utf16!("\\Device\\X");
    assert_eq!(String::from_utf16(NAME).unwrap(), "\\Device\\X");
}

#[test]
fn a_global_is_empty_until_set_and_refuses_a_second_value() {
    static GLOBAL: DriverGlobal<u32> = DriverGlobal::new(TAG);
    let _kernel = Kernel::new();
    assert!(GLOBAL.get().is_none());
    GLOBAL.set(7).expect("set");
    assert_eq!(*GLOBAL.get().expect("published"), 7);
    assert_eq!(GLOBAL.set(8), Err(Error::InvalidDeviceState));
    assert_eq!(GLOBAL.take().map(PoolBox::into_inner), Some(7));
    assert!(GLOBAL.get().is_none(), "no borrow after take");
    GLOBAL.set(9).expect("a reloaded driver publishes again");
    assert_eq!(*GLOBAL.get().expect("published"), 9);
    drop(GLOBAL.take());
}

#[test]
fn take_waits_for_borrows_to_end() {
    static GLOBAL: DriverGlobal<u64> = DriverGlobal::new(TAG);
    let kernel = Kernel::new();
    GLOBAL.set(1).expect("set");
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        let borrow = GLOBAL.get().expect("published");
        s.spawn(|| {
            kernel.bind_current_thread();
            let value = GLOBAL.take().expect("taken");
            assert!(
                released.load(Ordering::SeqCst),
                "take returned while a borrow was live"
            );
            drop(value);
        });
        // The take sleeps in the kernel's rundown wait before the borrow ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while kernel.rundown_waiters() == 0 {
            assert!(std::time::Instant::now() < deadline, "take never waited");
            std::thread::yield_now();
        }
        released.store(true, Ordering::SeqCst);
        drop(borrow);
    });
    kernel.assert_no_leaks();
}

#[test]
fn a_global_whose_allocation_fails_stays_empty() {
    static GLOBAL: DriverGlobal<u64> = DriverGlobal::new(TAG);
    let kernel = Kernel::new();
    kernel.inject(ebpf_ext_usersim::Fault::Allocation(1));
    assert_eq!(GLOBAL.set(5), Err(Error::InsufficientResources));
    assert!(GLOBAL.get().is_none());
    assert!(GLOBAL.take().is_none(), "nothing to take");
    GLOBAL
        .set(6)
        .expect("a failed set leaves the global empty, not half set");
    assert_eq!(GLOBAL.take().map(PoolBox::into_inner), Some(6));
    kernel.assert_no_leaks();
}

#[test]
fn of_two_racing_sets_exactly_one_publishes_and_the_other_value_is_freed() {
    static GLOBAL: DriverGlobal<u64> = DriverGlobal::new(TAG);
    let kernel = Kernel::new();
    for round in 0..200u64 {
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let kernel = &kernel;
                    s.spawn(move || {
                        kernel.bind_current_thread();
                        GLOBAL.set(round * 2 + i)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results.contains(&Err(Error::InvalidDeviceState)));
        drop(GLOBAL.take().expect("one value published"));
    }
    kernel.assert_no_leaks();
}

/// A value that knows whether it is still alive: its drop clears the mark a borrow checks.
struct Marked(core::sync::atomic::AtomicU64);

const ALIVE: u64 = 0xA11C_EA11_C0FF_EE00;

impl Drop for Marked {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// `take`, `set` and `get` on three threads at once, for many rounds: a borrow never sees a
/// value that was dropped (a `set` between a `take`'s wait and its removal of the value
/// once let a new borrow outlive the value the `take` returned).
#[test]
fn set_take_and_get_racing_never_lend_a_dropped_value() {
    static GLOBAL: DriverGlobal<Marked> = DriverGlobal::new(TAG);
    let kernel = Kernel::new();
    let stop = AtomicBool::new(false);
    let borrows = core::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let kernel = &kernel;
        s.spawn(|| {
            kernel.bind_current_thread();
            while !stop.load(Ordering::Relaxed) {
                drop(GLOBAL.take());
            }
        });
        s.spawn(|| {
            kernel.bind_current_thread();
            while !stop.load(Ordering::Relaxed) {
                let _ = GLOBAL.set(Marked(core::sync::atomic::AtomicU64::new(ALIVE)));
            }
        });
        s.spawn(|| {
            kernel.bind_current_thread();
            while !stop.load(Ordering::Relaxed) {
                if let Some(value) = GLOBAL.get() {
                    std::thread::yield_now();
                    assert_eq!(
                        value.0.load(Ordering::SeqCst),
                        ALIVE,
                        "a dropped value lent"
                    );
                    borrows.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(borrows.load(Ordering::Relaxed) > 0, "some borrows happened");
    drop(GLOBAL.take());
    kernel.assert_no_leaks();
}

/// Hands back the whole system buffer (`Information` = the output length), as a driver that
/// replies with more than it wrote would.
unsafe extern "win64" fn whole_buffer(
    _: *mut ebpf_extension_common::sys::wdm::DEVICE_OBJECT,
    irp: *mut ebpf_extension_common::sys::wdm::IRP,
) -> ebpf_extension_common::sys::ntdef::NTSTATUS {
    // SAFETY: the IRP the I/O manager passed, not yet completed.
    let mut control = unsafe { DeviceControl::from_irp(irp) }.expect("a buffered IOCTL");
    let length = control.output_len();
    let seen = control.buffer().to_vec();
    assert_eq!(seen.len(), control.input_len().max(length));
    // SAFETY: the IRP is ours to complete, once.
    unsafe { complete_request(irp, STATUS_SUCCESS, length) }
}

#[test]
fn the_system_buffer_past_the_input_is_zeroed_before_the_driver_sees_it() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    // SAFETY: the test owns the driver object.
    let major = unsafe { &mut (*driver.as_ptr()).MajorFunction };
    major[usize::from(IRP_MJ_CREATE)] = Some(dispatch_succeed);
    major[usize::from(IRP_MJ_DEVICE_CONTROL)] = Some(whole_buffer);
    let device = create(&mut driver).expect("create");
    let handle = kernel.open("\\\\.\\CtlTest", Caller::System).expect("open");
    let reply = kernel.device_io_control(&handle, 0x0012_0000, &[1, 2], 6);
    assert_eq!(
        (reply.status, reply.output),
        (STATUS_SUCCESS, vec![1, 2, 0, 0, 0, 0]),
        "usersim leaves stale bytes there (as the pool does): the SDK zeroes them"
    );
    kernel.close(handle);
    drop(device);
    kernel.assert_no_leaks();
}
