//! The callback stack runner (`set_callback_stack`): every driver routine usersim calls goes
//! through it, and a routine it does not claim runs on the caller's stack. The runner is
//! process-wide, so this binary's one test registers it; the runner claims only this test's
//! own routines.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_ext_sys::ntdef::{GUID, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DelayedWorkQueue, EVENT_FILTER_DESCRIPTOR, EtwRegister, EtwUnregister,
    FILE_DEVICE_UNKNOWN, IoAllocateWorkItem, IoCreateDevice, IoDeleteDevice, IoFreeWorkItem,
    IoQueueWorkItem,
};
use ebpf_ext_usersim::{DriverObject, Kernel, set_callback_stack};

/// Calls of [`claimed_work`] and [`claimed_enable`], counted by the routines themselves.
static CLAIMED_RAN: AtomicU32 = AtomicU32::new(0);
/// Calls of [`unclaimed_work`].
static UNCLAIMED_RAN: AtomicU32 = AtomicU32::new(0);
/// Routines the runner was asked about and claimed, and how many it ran.
static RUNNER_CLAIMED: AtomicU32 = AtomicU32::new(0);
static RUNNER_RAN: AtomicU32 = AtomicU32::new(0);

unsafe extern "win64" fn claimed_work(_: *mut DEVICE_OBJECT, _: *mut c_void) {
    CLAIMED_RAN.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "win64" fn unclaimed_work(_: *mut DEVICE_OBJECT, _: *mut c_void) {
    UNCLAIMED_RAN.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "win64" fn claimed_enable(
    _: *const GUID,
    _: u32,
    _: u8,
    _: u64,
    _: u64,
    _: *const EVENT_FILTER_DESCRIPTOR,
    _: *mut c_void,
) {
    CLAIMED_RAN.fetch_add(1, Ordering::SeqCst);
}

/// Claims [`claimed_work`] and [`claimed_enable`] and runs them; leaves everything else.
fn runner(routine: usize, call: &mut dyn FnMut()) -> bool {
    let ours = [
        claimed_work as *const () as usize,
        claimed_enable as *const () as usize,
    ];
    if !ours.contains(&routine) {
        return false;
    }
    RUNNER_CLAIMED.fetch_add(1, Ordering::SeqCst);
    call();
    RUNNER_RAN.fetch_add(1, Ordering::SeqCst);
    true
}

fn queue_work(
    kernel: &Kernel,
    device: *mut DEVICE_OBJECT,
    routine: ebpf_ext_sys::wdm::IO_WORKITEM_ROUTINE,
) {
    // SAFETY: a live device object.
    let item = unsafe { IoAllocateWorkItem(device) };
    assert!(!item.is_null());
    // SAFETY: a fresh item and a routine that needs no context.
    unsafe { IoQueueWorkItem(item, routine, DelayedWorkQueue, ptr::null_mut()) };
    kernel.wait_for_work_items();
    // SAFETY: the routine has run, so the item is no longer queued.
    unsafe { IoFreeWorkItem(item) };
}

#[test]
fn driver_routines_run_through_the_registered_stack_runner() {
    set_callback_stack(runner);
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let mut name: Vec<u16> = "\\Device\\Stack".encode_utf16().collect();
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
            0,
            &raw mut us,
            FILE_DEVICE_UNKNOWN,
            0,
            0,
            &raw mut device,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);

    queue_work(&kernel, device, claimed_work);
    assert_eq!(CLAIMED_RAN.load(Ordering::SeqCst), 1);
    assert_eq!(
        RUNNER_CLAIMED.load(Ordering::SeqCst),
        1,
        "the work item's routine"
    );
    assert_eq!(RUNNER_RAN.load(Ordering::SeqCst), 1);

    queue_work(&kernel, device, unclaimed_work);
    assert_eq!(
        UNCLAIMED_RAN.load(Ordering::SeqCst),
        1,
        "run here when not claimed"
    );
    assert_eq!(RUNNER_CLAIMED.load(Ordering::SeqCst), 1);

    // The "already enabled" callback, delivered inside EtwRegister.
    let provider = GUID::from_u128(0x6a5e_11c4_93d1_4c1b_8e7f_0a2b_3c4d_5e6f);
    let mut handle = 0;
    // SAFETY: a valid id and out pointer; the callback takes no context.
    let status = unsafe {
        EtwRegister(
            &raw const provider,
            Some(claimed_enable),
            ptr::null_mut(),
            &raw mut handle,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(
        CLAIMED_RAN.load(Ordering::SeqCst),
        2,
        "the enable callback ran"
    );
    assert_eq!(
        RUNNER_CLAIMED.load(Ordering::SeqCst),
        2,
        "through the runner"
    );
    // SAFETY: the handle EtwRegister returned, unregistered once.
    assert_eq!(unsafe { EtwUnregister(handle) }, STATUS_SUCCESS);

    // SAFETY: the device is live and deleted once.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}
