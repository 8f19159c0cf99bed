//! Device security, IRP dispatch and process notification.
#![allow(missing_docs, reason = "test file")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::type_complexity,
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::cell::{Cell, RefCell};
use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ebpf_ext_sys::ntddk::{PS_CREATE_NOTIFY_INFO, PsSetCreateProcessNotifyRoutineEx};
use ebpf_ext_sys::ntdef::{NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    ACL, ACL_REVISION, ALIAS_ADMINS_SID, DACL_SECURITY_INFORMATION, GENERIC_ALL, LOCAL_SYSTEM_SID,
    ObSetSecurityObjectByPointer, RtlAddAccessAllowedAce, RtlCreateAcl,
    RtlCreateSecurityDescriptor, RtlSetDaclSecurityDescriptor, SECURITY_DESCRIPTOR,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_ALLOTTED_SPACE_EXCEEDED, STATUS_BUFFER_TOO_SMALL,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS, STATUS_UNKNOWN_REVISION,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DEVICE_OBJECT, DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS,
    FILE_DEVICE_NETWORK, IRP, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IoCreateDevice,
    IoCreateSymbolicLink, IoDeleteDevice, IoDeleteSymbolicLink, IoGetCurrentIrpStackLocation,
    IofCompleteRequest, PASSIVE_LEVEL,
};
use ebpf_ext_usersim::{
    Caller, DriverObject, Fault, Kernel, NewProcess, STALE_BYTE, expect_bugcheck, image_unloaded,
};

fn unicode(units: &mut [u16]) -> UNICODE_STRING {
    let length = u16::try_from(units.len() * 2).unwrap();
    UNICODE_STRING {
        Length: length,
        MaximumLength: length,
        Buffer: units.as_mut_ptr(),
    }
}

fn named_device(driver: &mut DriverObject, name: &str, link: &str) -> *mut DEVICE_OBJECT {
    let mut name: Vec<u16> = name.encode_utf16().collect();
    let mut link: Vec<u16> = link.encode_utf16().collect();
    let mut name = unicode(&mut name);
    let mut link = unicode(&mut link);
    let mut device = ptr::null_mut();
    // SAFETY: valid driver object, name and out pointer.
    let status = unsafe {
        IoCreateDevice(
            driver.as_ptr(),
            0,
            &raw mut name,
            FILE_DEVICE_NETWORK,
            0,
            0,
            &raw mut device,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: valid strings (usersim copies them).
    let status = unsafe { IoCreateSymbolicLink(&raw mut link, &raw mut name) };
    assert_eq!(status, STATUS_SUCCESS);
    device
}

fn delete(device: *mut DEVICE_OBJECT, link: &str) {
    let mut link: Vec<u16> = link.encode_utf16().collect();
    let mut link = unicode(&mut link);
    // SAFETY: a live link and device.
    unsafe {
        IoDeleteSymbolicLink(&raw mut link);
    }
    // SAFETY: as above.
    unsafe { IoDeleteDevice(device) };
}

/// Builds "SYSTEM and Administrators: GENERIC_ALL" and applies it to `device`.
fn secure(device: *mut DEVICE_OBJECT) -> NTSTATUS {
    let mut acl = [0u32; 16];
    let acl = acl.as_mut_ptr().cast::<ACL>();
    // SAFETY: 64 writable bytes.
    let status = unsafe { RtlCreateAcl(acl, 64, ACL_REVISION) };
    assert_eq!(status, STATUS_SUCCESS);
    for sid in [
        ptr::from_ref(&LOCAL_SYSTEM_SID).cast::<c_void>(),
        ptr::from_ref(&ALIAS_ADMINS_SID).cast(),
    ] {
        // SAFETY: a valid ACL and SID.
        let status = unsafe { RtlAddAccessAllowedAce(acl, ACL_REVISION, GENERIC_ALL, sid) };
        assert_eq!(status, STATUS_SUCCESS);
    }
    // SAFETY: SECURITY_DESCRIPTOR is plain data.
    let mut sd: SECURITY_DESCRIPTOR = unsafe { core::mem::zeroed() };
    // SAFETY: a writable descriptor.
    let status = unsafe { RtlCreateSecurityDescriptor(&raw mut sd, 1) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a valid descriptor and ACL.
    let status = unsafe { RtlSetDaclSecurityDescriptor(&raw mut sd, 1, acl, 0) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a live device and a valid descriptor.
    unsafe { ObSetSecurityObjectByPointer(device.cast(), DACL_SECURITY_INFORMATION, &raw mut sd) }
}

thread_local! {
    /// What `dispatch` saw. Per thread, as each test runs on its own thread (also under plain
    /// `cargo test`) and the I/O manager calls the dispatch routine on the requesting thread.
    static SEEN: RefCell<Vec<(u8, u32, u32, u32)>> = const { RefCell::new(Vec::new()) };
}
const OVERFLOWING: u32 = 0x0012_0004;
const OVERRUNNING: u32 = 0x0012_0008;
/// Completes with `Information` = the output length, having written nothing.
const STALE: u32 = 0x0012_000C;
/// Completes, leaving a critical region entered (a bug).
const IN_A_CRITICAL_REGION: u32 = 0x0012_0010;
const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005_u32.cast_signed();

/// A dispatch routine that echoes the input reversed and reports what it saw.
unsafe extern "win64" fn dispatch(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid IRP with a current stack location.
    let stack = unsafe { &*IoGetCurrentIrpStackLocation(irp) };
    let mut information = 0;
    let status = if stack.MajorFunction == IRP_MJ_DEVICE_CONTROL {
        // SAFETY: device-control parameters for IRP_MJ_DEVICE_CONTROL.
        let p = unsafe { stack.Parameters.DeviceIoControl };
        SEEN.with_borrow_mut(|seen| {
            seen.push((
                stack.MajorFunction,
                p.IoControlCode,
                p.InputBufferLength,
                p.OutputBufferLength,
            ));
        });
        // SAFETY: METHOD_BUFFERED: one system buffer of max(in, out) bytes.
        let buffer = unsafe { (*irp).AssociatedIrp.SystemBuffer }.cast::<u8>();
        let n = p.InputBufferLength as usize;
        if p.IoControlCode == OVERFLOWING {
            // A warning: partial data, `Information` = the output length.
            information = p.OutputBufferLength as usize;
            STATUS_BUFFER_OVERFLOW
        } else if p.IoControlCode == STALE {
            information = p.OutputBufferLength as usize;
            STATUS_SUCCESS
        } else if p.IoControlCode == IN_A_CRITICAL_REGION {
            // SAFETY: deliberately unbalanced: the I/O manager must catch it.
            unsafe { ebpf_ext_sys::ntddk::KeEnterCriticalRegion() };
            STATUS_SUCCESS
        } else if p.IoControlCode == OVERRUNNING {
            information = p.OutputBufferLength as usize + 1;
            STATUS_SUCCESS
        } else if (p.OutputBufferLength as usize) < n {
            STATUS_BUFFER_TOO_SMALL
        } else {
            // SAFETY: the buffer holds at least n bytes.
            unsafe { core::slice::from_raw_parts_mut(buffer, n) }.reverse();
            information = n;
            STATUS_SUCCESS
        }
    } else {
        SEEN.with_borrow_mut(|seen| seen.push((stack.MajorFunction, 0, 0, 0)));
        STATUS_SUCCESS
    };
    // SAFETY: the IRP is ours to complete.
    unsafe {
        (*irp).IoStatus.u.Status = status;
        (*irp).IoStatus.Information = information;
        IofCompleteRequest(irp, 0);
    }
    status
}

#[test]
fn ioctl_round_trip_through_the_drivers_dispatch_routine() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = named_device(&mut driver, "\\Device\\Echo", "\\GLOBAL??\\Echo");
    // SAFETY: the test owns the driver object.
    unsafe {
        (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch);
        (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_DEVICE_CONTROL)] = Some(dispatch);
    }
    assert_eq!(
        kernel.open("\\\\.\\Nothing", Caller::User).unwrap_err(),
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    let handle = kernel
        .open("\\\\.\\Echo", Caller::User)
        .expect("no DACL: open to all");
    let reply = kernel.device_io_control(&handle, 0x0012_0000, &[1, 2, 3], 8);
    assert_eq!(reply.status, STATUS_SUCCESS);
    assert_eq!(reply.output, [3, 2, 1]);
    let small = kernel.device_io_control(&handle, 0x0012_0000, &[1, 2, 3], 2);
    assert_eq!(
        (small.status, small.output.len()),
        (STATUS_BUFFER_TOO_SMALL, 0)
    );
    kernel.close(handle);
    assert_eq!(
        SEEN.with_borrow(Clone::clone),
        [
            (IRP_MJ_CREATE, 0, 0, 0),
            (IRP_MJ_DEVICE_CONTROL, 0x0012_0000, 3, 8),
            (IRP_MJ_DEVICE_CONTROL, 0x0012_0000, 3, 2),
        ],
        "cleanup and close have no handler and are not dispatched"
    );
    delete(device, "\\GLOBAL??\\Echo");
    kernel.assert_no_leaks();
}

#[test]
fn a_driver_without_a_create_routine_cannot_be_opened() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = named_device(&mut driver, "\\Device\\Closed", "\\DosDevices\\Closed");
    assert_eq!(
        kernel.open("\\\\.\\Closed", Caller::System).unwrap_err(),
        STATUS_INVALID_DEVICE_REQUEST
    );
    delete(device, "\\DosDevices\\Closed");
}

#[test]
fn the_dacl_admits_system_and_administrators_only() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = named_device(&mut driver, "\\Device\\Secure", "\\GLOBAL??\\Secure");
    // SAFETY: the test owns the driver object.
    unsafe { (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch) };
    assert_eq!(secure(device), STATUS_SUCCESS);
    assert_eq!(
        kernel.open("\\\\.\\Secure", Caller::User).unwrap_err(),
        STATUS_ACCESS_DENIED
    );
    for caller in [Caller::Administrator, Caller::System] {
        let handle = kernel.open("\\Device\\Secure", caller).expect("granted");
        kernel.close(handle);
    }
    delete(device, "\\GLOBAL??\\Secure");
    kernel.assert_no_leaks();
}

#[test]
fn security_routines_reject_bad_input() {
    let kernel = Kernel::new();
    let mut acl = [0u32; 4];
    let acl = acl.as_mut_ptr().cast::<ACL>();
    // SAFETY: writable buffers of the stated sizes.
    unsafe {
        assert_eq!(RtlCreateAcl(acl, 4, ACL_REVISION), STATUS_BUFFER_TOO_SMALL);
        assert_eq!(RtlCreateAcl(acl, 16, 9), STATUS_INVALID_PARAMETER);
        assert_eq!(RtlCreateAcl(acl, 16, ACL_REVISION), STATUS_SUCCESS);
        let sid = ptr::from_ref(&ALIAS_ADMINS_SID).cast();
        assert_eq!(
            RtlAddAccessAllowedAce(acl, ACL_REVISION, GENERIC_ALL, sid),
            STATUS_ALLOTTED_SPACE_EXCEEDED,
            "8 header bytes + a 24-byte ACE do not fit in 16"
        );
        let mut sd: SECURITY_DESCRIPTOR = core::mem::zeroed();
        assert_eq!(
            RtlCreateSecurityDescriptor(&raw mut sd, 2),
            STATUS_UNKNOWN_REVISION
        );
    }
    let mut driver = DriverObject::new();
    let device = driver.create_device().unwrap();
    kernel.inject(Fault::Call("ObSetSecurityObjectByPointer", 1));
    assert_ne!(secure(device), STATUS_SUCCESS);
    // SAFETY: a live device.
    unsafe { IoDeleteDevice(device) };
}

/// What `notify` saw: the process id, and the creation details (`None` on exit).
type ProcessEvent = (usize, Option<(usize, usize, usize, String, Option<String>)>);

thread_local! {
    /// Per thread, as `SEEN`: notify routines run on the thread creating the process.
    static EVENTS: RefCell<Vec<ProcessEvent>> = const { RefCell::new(Vec::new()) };
    /// The process id `notify` refuses.
    static DENY: Cell<usize> = const { Cell::new(0) };
}

fn read(s: *const UNICODE_STRING) -> Option<String> {
    // SAFETY: NULL or a valid string for the callback's duration.
    let s = unsafe { s.as_ref() }?;
    // SAFETY: `Length` bytes of UTF-16.
    let units = unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

unsafe extern "win64" fn notify(
    _process: *mut c_void,
    id: *mut c_void,
    info: *mut PS_CREATE_NOTIFY_INFO,
) {
    assert_eq!(ebpf_ext_usersim::critical_region_depth(), 1);
    // SAFETY: NULL on exit, else valid for the call.
    let event = unsafe { info.as_mut() }.map(|i| {
        if DENY.get() == id as usize {
            i.CreationStatus = STATUS_ACCESS_DENIED;
        }
        (
            i.ParentProcessId as usize,
            i.CreatingThreadId.UniqueProcess as usize,
            i.CreatingThreadId.UniqueThread as usize,
            read(i.ImageFileName).unwrap(),
            read(i.CommandLine),
        )
    });
    EVENTS.with_borrow_mut(|events| events.push((id as usize, event)));
}

fn process(id: usize) -> NewProcess {
    NewProcess {
        process_id: id,
        parent_process_id: 4,
        creating_process_id: 4,
        creating_thread_id: 8,
        image_file_name: format!("\\??\\C:\\p{id}.exe"),
        command_line: id.is_multiple_of(2).then(|| format!("p{id} --flag")),
    }
}

#[test]
fn process_notifications_reach_registered_routines_and_can_deny_creation() {
    let kernel = Kernel::new();
    // SAFETY: a routine that stays valid; removed below.
    unsafe {
        assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 0), STATUS_SUCCESS);
        assert_eq!(
            PsSetCreateProcessNotifyRoutineEx(notify, 0),
            STATUS_INVALID_PARAMETER
        );
    }
    assert_eq!(kernel.create_process(&process(100)), STATUS_SUCCESS);
    DENY.set(101);
    assert_eq!(kernel.create_process(&process(101)), STATUS_ACCESS_DENIED);
    assert!(kernel.exit_process(100));
    assert!(!kernel.exit_process(101), "a denied process never existed");
    // SAFETY: registered above.
    unsafe { assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 1), STATUS_SUCCESS) };
    assert_eq!(kernel.process_notify_routines(), 0);
    assert_eq!(kernel.create_process(&process(102)), STATUS_SUCCESS);
    let events = EVENTS.with_borrow(Clone::clone);
    assert_eq!(
        events,
        [
            (
                100,
                Some((
                    4,
                    4,
                    8,
                    "\\??\\C:\\p100.exe".into(),
                    Some("p100 --flag".into())
                ))
            ),
            (101, Some((4, 4, 8, "\\??\\C:\\p101.exe".into(), None))),
            (100, None),
        ]
    );
}

#[test]
fn registration_honours_the_images_integrity_flag() {
    let kernel = Kernel::new();
    kernel.set_image_flags_lookup(Some(|_| Some(false)));
    // SAFETY: a valid routine.
    unsafe {
        assert_eq!(
            PsSetCreateProcessNotifyRoutineEx(notify, 0),
            STATUS_ACCESS_DENIED
        );
    };
    kernel.set_image_flags_lookup(Some(|_| Some(true)));
    // SAFETY: as above; removed below.
    unsafe {
        assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 0), STATUS_SUCCESS);
        assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 1), STATUS_SUCCESS);
    }
    kernel.inject(Fault::Call("PsSetCreateProcessNotifyRoutineEx", 1));
    // SAFETY: a valid routine.
    unsafe {
        assert_eq!(
            PsSetCreateProcessNotifyRoutineEx(notify, 0),
            STATUS_INVALID_PARAMETER
        );
    };
}

/// A routine only [`the_loaders_lookup_counts_on_every_kernel_unless_overridden`] registers,
/// so the process-wide lookup it sets refuses nothing another test registers.
unsafe extern "win64" fn in_an_image_without_the_flag(
    _process: *mut c_void,
    _id: *mut c_void,
    _info: *mut PS_CREATE_NOTIFY_INFO,
) {
}

#[test]
fn the_loaders_lookup_counts_on_every_kernel_unless_overridden() {
    fn loader(address: usize) -> Option<bool> {
        (address == in_an_image_without_the_flag as *const () as usize).then_some(false)
    }
    ebpf_ext_usersim::set_loader_image_flags(loader);
    for _ in 0..2 {
        // Each kernel, not only one the loader was told of.
        let kernel = Kernel::new();
        // SAFETY: a valid routine.
        unsafe {
            assert_eq!(
                PsSetCreateProcessNotifyRoutineEx(in_an_image_without_the_flag, 0),
                STATUS_ACCESS_DENIED
            );
        };
        assert_eq!(kernel.process_notify_routines(), 0);
    }
    let kernel = Kernel::new();
    kernel.set_image_flags_lookup(Some(|_| Some(true)));
    // SAFETY: a valid routine; removed below.
    unsafe {
        assert_eq!(
            PsSetCreateProcessNotifyRoutineEx(in_an_image_without_the_flag, 0),
            STATUS_SUCCESS,
            "a kernel's own lookup overrides the loader's"
        );
        assert_eq!(
            PsSetCreateProcessNotifyRoutineEx(in_an_image_without_the_flag, 1),
            STATUS_SUCCESS
        );
    }
}

unsafe extern "win64" fn removes_itself(
    _process: *mut c_void,
    _id: *mut c_void,
    _info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // SAFETY: deliberately wrong: removal from inside the callback.
    unsafe { PsSetCreateProcessNotifyRoutineEx(removes_itself, 1) };
}

#[test]
fn removing_a_routine_from_its_own_callback_bugchecks() {
    let check = expect_bugcheck("removing_a_routine_from_its_own_callback_bugchecks", || {
        let kernel = Kernel::new();
        // SAFETY: a valid routine.
        unsafe { PsSetCreateProcessNotifyRoutineEx(removes_itself, 0) };
        let _ = kernel.create_process(&process(7));
    });
    assert_eq!(check.api, "PsSetCreateProcessNotifyRoutineEx");
}

static IN_CALLBACK: AtomicUsize = AtomicUsize::new(0);

unsafe extern "win64" fn slow(_p: *mut c_void, _id: *mut c_void, _i: *mut PS_CREATE_NOTIFY_INFO) {
    IN_CALLBACK.store(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(100));
    IN_CALLBACK.store(2, Ordering::SeqCst);
}

#[test]
fn removal_waits_for_a_running_callback() {
    let kernel = Kernel::new();
    // SAFETY: a valid routine, removed below.
    unsafe { assert_eq!(PsSetCreateProcessNotifyRoutineEx(slow, 0), STATUS_SUCCESS) };
    std::thread::scope(|s| {
        let k = &kernel;
        s.spawn(move || {
            k.bind_current_thread();
            k.create_process(&process(9))
        });
        while IN_CALLBACK.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // SAFETY: registered above.
        unsafe { assert_eq!(PsSetCreateProcessNotifyRoutineEx(slow, 1), STATUS_SUCCESS) };
        assert_eq!(
            IN_CALLBACK.load(Ordering::SeqCst),
            2,
            "removal returned before the callback"
        );
    });
}

static SLOW_A_CALLS: AtomicUsize = AtomicUsize::new(0);
static SLOW_B_CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "win64" fn slow_a(_p: *mut c_void, _id: *mut c_void, _i: *mut PS_CREATE_NOTIFY_INFO) {
    SLOW_A_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(60));
}

unsafe extern "win64" fn slow_b(_p: *mut c_void, _id: *mut c_void, _i: *mut PS_CREATE_NOTIFY_INFO) {
    SLOW_B_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(60));
}

#[test]
fn concurrent_removals_wait_for_their_own_routine_and_stop_new_callbacks() {
    let kernel = Kernel::new();
    // SAFETY: valid routines, removed below.
    unsafe {
        assert_eq!(PsSetCreateProcessNotifyRoutineEx(slow_a, 0), STATUS_SUCCESS);
        assert_eq!(PsSetCreateProcessNotifyRoutineEx(slow_b, 0), STATUS_SUCCESS);
    }
    std::thread::scope(|s| {
        let k = &kernel;
        let creation = s.spawn(move || {
            k.bind_current_thread();
            k.create_process(&process(21))
        });
        while SLOW_A_CALLS.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // slow_a is running; remove slow_b (later in the list) and slow_a at the same time.
        let b = s.spawn(move || {
            k.bind_current_thread();
            // SAFETY: registered above.
            unsafe { PsSetCreateProcessNotifyRoutineEx(slow_b, 1) }
        });
        let a = s.spawn(move || {
            k.bind_current_thread();
            // SAFETY: registered above.
            unsafe { PsSetCreateProcessNotifyRoutineEx(slow_a, 1) }
        });
        assert_eq!(a.join().unwrap(), STATUS_SUCCESS);
        assert_eq!(b.join().unwrap(), STATUS_SUCCESS);
        assert_eq!(creation.join().unwrap(), STATUS_SUCCESS);
    });
    // The creation began while both routines were registered, so it called each once
    // (usersim takes the routines a notification calls when it begins, and a removal waits
    // for that call; Windows may instead skip a routine removed before the notification
    // reaches it: either way, none is called after its removal returns).
    assert_eq!(
        (
            SLOW_A_CALLS.load(Ordering::SeqCst),
            SLOW_B_CALLS.load(Ordering::SeqCst)
        ),
        (1, 1),
        "the creation that began before the removals called each routine once"
    );
    // A creation after both removals calls neither.
    assert_eq!(kernel.create_process(&process(22)), STATUS_SUCCESS);
    assert_eq!(
        (
            SLOW_A_CALLS.load(Ordering::SeqCst),
            SLOW_B_CALLS.load(Ordering::SeqCst)
        ),
        (1, 1),
        "a removed routine got a new callback"
    );
    assert_eq!(kernel.process_notify_routines(), 0);
    // SAFETY: already removed: a second removal finds nothing.
    let again = unsafe { PsSetCreateProcessNotifyRoutineEx(slow_a, 1) };
    assert_eq!(again, ebpf_ext_sys::ntstatus::STATUS_PROCEDURE_NOT_FOUND);
}

#[test]
#[should_panic(expected = "process notify routine(s) still registered")]
fn a_routine_left_registered_is_a_leak() {
    let kernel = Kernel::new();
    // SAFETY: a valid routine, deliberately left registered.
    unsafe { PsSetCreateProcessNotifyRoutineEx(notify, 0) };
    kernel.assert_no_leaks();
}

fn echo_device(kernel: &Kernel, driver: &mut DriverObject, name: &str) -> *mut DEVICE_OBJECT {
    let _ = kernel;
    let device = named_device(
        driver,
        &format!("\\Device\\{name}"),
        &format!("\\GLOBAL??\\{name}"),
    );
    // SAFETY: the test owns the driver object.
    unsafe {
        (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch);
        (*driver.as_ptr()).MajorFunction[usize::from(IRP_MJ_DEVICE_CONTROL)] = Some(dispatch);
    }
    device
}

#[test]
fn a_warning_status_still_returns_the_data() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = echo_device(&kernel, &mut driver, "Warn");
    let handle = kernel.open("\\\\.\\Warn", Caller::System).expect("open");
    let reply = kernel.device_io_control(&handle, OVERFLOWING, &[9, 8, 7, 6], 2);
    assert_eq!(
        (reply.status, reply.output),
        (STATUS_BUFFER_OVERFLOW, vec![9, 8])
    );
    kernel.close(handle);
    delete(device, "\\GLOBAL??\\Warn");
}

#[test]
fn bytes_past_the_input_are_stale_not_zero() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = echo_device(&kernel, &mut driver, "Stale");
    let handle = kernel.open("\\\\.\\Stale", Caller::System).expect("open");
    let reply = kernel.device_io_control(&handle, STALE, &[1, 2], 5);
    assert_eq!(
        (reply.status, reply.output),
        (
            STATUS_SUCCESS,
            vec![1, 2, STALE_BYTE, STALE_BYTE, STALE_BYTE]
        ),
        "a reply covering bytes the driver did not write returns the pool's old contents"
    );
    kernel.close(handle);
    delete(device, "\\GLOBAL??\\Stale");
}

#[test]
fn information_beyond_the_output_buffer_bugchecks() {
    let check = expect_bugcheck("information_beyond_the_output_buffer_bugchecks", || {
        let kernel = Kernel::new();
        let mut driver = DriverObject::new();
        let _device = echo_device(&kernel, &mut driver, "Overrun");
        let handle = kernel.open("\\\\.\\Overrun", Caller::System).expect("open");
        let _ = kernel.device_io_control(&handle, OVERRUNNING, &[1], 4);
    });
    assert_eq!(check.parameters[1..3], [5, 4]);
}

#[test]
fn a_deny_ace_refuses_before_a_later_allow() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = echo_device(&kernel, &mut driver, "Denied");
    let mut acl = [0u32; 16];
    let acl = acl.as_mut_ptr().cast::<ACL>();
    // SAFETY: 64 writable bytes.
    let status = unsafe { RtlCreateAcl(acl, 64, ACL_REVISION) };
    assert_eq!(status, STATUS_SUCCESS);
    // Deny BUILTIN\Users (an ACCESS_DENIED_ACE written by hand: type 1), then allow Everyone.
    let users = ebpf_ext_sys::ntifs::ALIAS_USERS_SID;
    // SAFETY: the ACL has room; a valid SID.
    let status = unsafe {
        RtlAddAccessAllowedAce(acl, ACL_REVISION, GENERIC_ALL, ptr::from_ref(&users).cast())
    };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: the first ACE starts right after the 8-byte header; its type byte becomes DENIED.
    unsafe { *acl.cast::<u8>().add(8) = 1 };
    let everyone = ebpf_ext_sys::ntifs::WORLD_SID;
    // SAFETY: as above.
    let status = unsafe {
        RtlAddAccessAllowedAce(
            acl,
            ACL_REVISION,
            GENERIC_ALL,
            ptr::from_ref(&everyone).cast(),
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    let mut sd = SECURITY_DESCRIPTOR::EMPTY;
    // SAFETY: a valid descriptor and ACL.
    let status = unsafe { RtlSetDaclSecurityDescriptor(&raw mut sd, 1, acl, 0) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a live device and a valid descriptor.
    let status = unsafe {
        ObSetSecurityObjectByPointer(device.cast(), DACL_SECURITY_INFORMATION, &raw mut sd)
    };
    assert_eq!(status, STATUS_SUCCESS);
    for (caller, admitted) in [
        (Caller::User, false),
        (Caller::Administrator, false),
        (Caller::System, true),
    ] {
        let result = kernel.open("\\\\.\\Denied", caller);
        assert_eq!(result.is_ok(), admitted, "{caller:?}");
        if let Ok(handle) = result {
            kernel.close(handle);
        }
    }
    delete(device, "\\GLOBAL??\\Denied");
}

#[test]
fn an_image_unloading_with_its_notify_routine_registered_bugchecks() {
    let routine = notify as *const () as usize;
    let kernel = Kernel::new();
    // SAFETY: a routine that stays valid; removed below.
    unsafe { assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 0), STATUS_SUCCESS) };
    let check = expect_bugcheck(
        "an_image_unloading_with_its_notify_routine_registered_bugchecks",
        || image_unloaded("notifier.sys", routine..routine + 1),
    );
    assert_eq!(
        check.code,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS
    );
    assert!(
        check
            .message
            .contains("process notify routine (not removed)"),
        "{}",
        check.message
    );
    // SAFETY: registered above.
    unsafe { assert_eq!(PsSetCreateProcessNotifyRoutineEx(notify, 1), STATUS_SUCCESS) };
    image_unloaded("notifier.sys", routine..routine + 1);
    kernel.assert_no_leaks();
}

#[test]
fn a_dispatch_routine_returning_inside_a_critical_region_bugchecks() {
    let check = expect_bugcheck(
        "a_dispatch_routine_returning_inside_a_critical_region_bugchecks",
        || {
            let kernel = Kernel::new();
            let mut driver = DriverObject::new();
            let _device = echo_device(&kernel, &mut driver, "Unbalanced");
            let handle = kernel
                .open("\\\\.\\Unbalanced", Caller::System)
                .expect("open");
            let _ = kernel.device_io_control(&handle, IN_A_CRITICAL_REGION, &[1], 4);
        },
    );
    assert_eq!(check.code, 0x01, "APC_INDEX_MISMATCH");
    assert_eq!(check.api, "DRIVER_DISPATCH");
    assert_eq!(check.parameters[1..3], [1, 0], "one region left of none");
}

unsafe extern "win64" fn raises_irql(
    _process: *mut c_void,
    _id: *mut c_void,
    _info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // SAFETY: deliberately not lowered again: the kernel must catch it.
    let _ = unsafe { ebpf_ext_sys::intrin::KeRaiseIrql(APC_LEVEL) };
}

#[test]
fn a_notify_routine_returning_at_a_raised_irql_bugchecks() {
    let check = expect_bugcheck(
        "a_notify_routine_returning_at_a_raised_irql_bugchecks",
        || {
            let kernel = Kernel::new();
            // SAFETY: a valid routine.
            unsafe { PsSetCreateProcessNotifyRoutineEx(raises_irql, 0) };
            let _ = kernel.create_process(&process(9));
        },
    );
    assert_eq!(check.code, 0xC8, "IRQL_UNEXPECTED_VALUE");
    assert_eq!(check.api, "PCREATE_PROCESS_NOTIFY_ROUTINE_EX");
    assert_eq!(
        check.parameters[1..3],
        [u64::from(APC_LEVEL), u64::from(PASSIVE_LEVEL)]
    );
}
