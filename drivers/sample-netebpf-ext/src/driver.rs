//! `DriverEntry`, unload and the dispatch routines.

use ebpf_extension_common::control::{
    ControlDevice, DeviceControl, complete_request, dispatch_succeed,
};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntdef::{NTSTATUS, UNICODE_STRING};
use ebpf_extension_common::sys::ntstatus::{
    STATUS_DEVICE_NOT_READY, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS,
};
use ebpf_extension_common::sys::wdm::{
    DEVICE_OBJECT, DRIVER_OBJECT, FILE_DEVICE_NETWORK, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE,
    IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL,
};

use crate::hook::{HOOK_CONFIG, SampleNetHook, TAG};
use crate::program::PROGRAM_DATA;

/// The running driver. Fields drop in order: the control device first (no new requests),
/// then the extension (hook, program information, tracing).
struct Driver {
    control: ControlDevice,
    extension: Extension<SampleNetHook>,
}

static DRIVER: DriverGlobal<Driver> = DriverGlobal::new(TAG);

/// `DriverEntry`: starts the extension, creates the control device and publishes both.
///
/// # Safety
/// Called once by the I/O manager (or a test) with a live driver object that outlives the
/// driver; PASSIVE_LEVEL.
#[cfg_attr(target_os = "windows", unsafe(export_name = "DriverEntry"))]
pub unsafe extern "win64" fn driver_entry(
    driver: *mut DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager's driver object, ours to fill in DriverEntry.
    let object = unsafe { &mut *driver };
    object.MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch_succeed);
    object.MajorFunction[usize::from(IRP_MJ_CLEANUP)] = Some(dispatch_succeed);
    object.MajorFunction[usize::from(IRP_MJ_CLOSE)] = Some(dispatch_succeed);
    object.MajorFunction[usize::from(IRP_MJ_DEVICE_CONTROL)] = Some(dispatch_device_control);
    object.DriverUnload = Some(driver_unload);
    match start(driver) {
        Ok(()) => STATUS_SUCCESS,
        Err(e) => e.ntstatus(),
    }
}

fn start(driver: *mut DRIVER_OBJECT) -> Result<()> {
    let config = ExtensionConfig {
        trace_provider: &crate::TRACE_PROVIDER,
        program_data: &PROGRAM_DATA,
        tag: TAG,
        hook: HOOK_CONFIG,
        extension: SampleNetHook::default(),
    };
    // SAFETY: the driver object outlives the extension (stopped in unload).
    let extension = unsafe { Extension::start(driver, config) }?;
    // SAFETY: as above; the dispatch table is set.
    let control = unsafe {
        ControlDevice::create(
            driver,
            utf16!("\\Device\\SampleNetEbpfExt"),
            utf16!("\\GLOBAL??\\SampleNetEbpfExt"),
            FILE_DEVICE_NETWORK,
        )
    }?;
    DRIVER.set(Driver { control, extension })
}

/// `DriverUnload`: waits for running requests, then stops everything.
unsafe extern "win64" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    if let Some(driver) = DRIVER.take() {
        let Driver { control, extension } = driver.into_inner();
        drop(control);
        extension.stop();
    }
}

/// `IRP_MJ_DEVICE_CONTROL`.
unsafe extern "win64" fn dispatch_device_control(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the I/O manager's IRP, not yet completed.
    let Some(mut request) = (unsafe { DeviceControl::from_irp(irp) }) else {
        // SAFETY: as above; completed once.
        return unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
    };
    let Some(driver) = DRIVER.get() else {
        // SAFETY: as above.
        return unsafe { complete_request(irp, STATUS_DEVICE_NOT_READY, 0) };
    };
    let (code, input_len, output_len) = (request.code(), request.input_len(), request.output_len());
    let (status, information) = crate::control::device_control(
        driver.extension.hook(),
        code,
        request.buffer(),
        input_len,
        output_len,
    );
    drop(driver);
    // SAFETY: as above.
    unsafe { complete_request(irp, status, information) }
}
