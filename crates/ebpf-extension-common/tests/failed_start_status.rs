//! A failed start makes `DriverEntry` return a failure status, traced while tracing still
//! runs, whatever status the error carries: an extension's start may fail with a status whose
//! severity is success or informational (the SDK converts `EBPF_PENDING` to `STATUS_PENDING`,
//! `EBPF_ALREADY_PINNED` to `STATUS_OBJECT_NAME_EXISTS`), with which the I/O manager would keep
//! loaded a driver that has stopped everything. Such a status becomes `STATUS_INTERNAL_ERROR`;
//! a failure status is returned as it is.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{DriverObject, Fault, Kernel, sweep_call_failures};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_result::{EBPF_ALREADY_PINNED, EBPF_PENDING};
use ebpf_extension_common::sys::ntdef::{NT_SUCCESS, NTSTATUS, UNICODE_STRING};
use ebpf_extension_common::sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INTERNAL_ERROR, STATUS_OBJECT_NAME_EXISTS, STATUS_PENDING,
};
use ebpf_extension_common::sys::wdm::DRIVER_OBJECT;
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;

const TAG: PoolTag = PoolTag::new(*b"FStS");

/// Defines, in module `$module`, a driver whose start fails with `$error`.
macro_rules! failing_driver {
    ($module:ident, $provider:tt, $id:tt, $error:expr) => {
        mod $module {
            use super::*;

            tracelogging::define_provider!(TRACE, $provider, id($id));

            pub(super) struct Fails;

            impl ExtensionDriver for Fails {
                const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
                const TAG: PoolTag = TAG;

                fn start(_: &Start<'_>) -> Result<Self> {
                    Err($error)
                }
            }

            driver_entry!(pub(super) static DRIVER: Fails);
        }
    };
}

failing_driver!(
    pending,
    "FailedStartPendingTestProvider",
    "3e8b1c52-6f0a-4d97-b2c4-9a15e7d3f068",
    Error::from_ebpf_result(EBPF_PENDING).unwrap_err()
);
failing_driver!(
    pinned,
    "FailedStartPinnedTestProvider",
    "3e8b1c53-6f0a-4d97-b2c4-9a15e7d3f068",
    Error::from_ebpf_result(EBPF_ALREADY_PINNED).unwrap_err()
);
failing_driver!(
    denied,
    "FailedStartDeniedTestProvider",
    "3e8b1c54-6f0a-4d97-b2c4-9a15e7d3f068",
    Error::AccessDenied
);

/// A driver that starts, but whose control device cannot be created.
mod no_device {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "FailedStartNoDeviceTestProvider",
        id("3e8b1c55-6f0a-4d97-b2c4-9a15e7d3f068")
    );

    pub(super) struct Starts;

    impl ExtensionDriver for Starts {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;
        const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
            name: utf16!("\\Device\\FailedStartStatusTest"),
            link: utf16!("\\GLOBAL??\\FailedStartStatusTest"),
            device_type: FILE_DEVICE_NETWORK,
        });

        fn start(_: &Start<'_>) -> Result<Self> {
            Ok(Starts)
        }
    }

    driver_entry!(pub(super) static DRIVER: Starts);
}

/// A driver's `DriverEntry`.
type Entry = unsafe extern "win64" fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;

/// Runs `entry` on a fresh driver object and returns its status, after checking that no device
/// is left, tracing stopped and nothing leaked.
fn entry_status(kernel: &Kernel, entry: Entry) -> NTSTATUS {
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object; the failed entry leaves nothing that refers to it.
    let status = unsafe { entry(object.as_ptr(), ptr::null()) };
    assert!(object.get().DeviceObject.is_null(), "no device is left");
    assert_eq!(kernel.etw_registrations(), 0, "tracing stopped");
    kernel.assert_no_leaks();
    status
}

/// The status (an `NTSTATUS` field, decoded as unsigned) of the failure traced with `why`, if
/// one was.
fn traced_status(kernel: &Kernel, why: &str) -> Option<NTSTATUS> {
    kernel.etw_events().iter().find_map(|event| {
        match (event.field("Message"), event.field("status")) {
            (Some(Value::Str(message)), Some(Value::U64(status))) if message == why => {
                u32::try_from(*status).ok().map(u32::cast_signed)
            }
            _ => None,
        }
    })
}

const START_FAILED: &str = "the extension's start failed";

#[test]
fn a_start_failing_with_a_success_or_informational_status_fails_driver_entry() {
    let cases: [(_, _, Entry); 2] = [
        (EBPF_PENDING, STATUS_PENDING, pending::driver_entry),
        (
            EBPF_ALREADY_PINNED,
            STATUS_OBJECT_NAME_EXISTS,
            pinned::driver_entry,
        ),
    ];
    for (result, carried, entry) in cases {
        let kernel = Kernel::new();
        assert_eq!(
            Error::from_ebpf_result(result).unwrap_err().ntstatus(),
            carried,
            "the error carries a success or informational status"
        );
        let status = entry_status(&kernel, entry);
        assert!(!NT_SUCCESS(status), "DriverEntry returned {status:#x}");
        assert_eq!(status, STATUS_INTERNAL_ERROR);
        assert_eq!(
            traced_status(&kernel, START_FAILED),
            Some(STATUS_INTERNAL_ERROR)
        );
    }
    assert!(pending::DRIVER.get().is_none() && pinned::DRIVER.get().is_none());
}

#[test]
fn a_start_failing_with_a_failure_status_returns_it() {
    let kernel = Kernel::new();
    let status = entry_status(&kernel, denied::driver_entry);
    assert_eq!(status, STATUS_ACCESS_DENIED);
    assert_eq!(
        traced_status(&kernel, START_FAILED),
        Some(STATUS_ACCESS_DENIED)
    );
}

#[test]
fn a_control_device_that_cannot_be_created_is_traced_and_fails_driver_entry() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("IoCreateDevice", 2));
    let status = entry_status(&kernel, no_device::driver_entry);
    assert_eq!(
        kernel.faults_triggered(),
        [Fault::Call("IoCreateDevice", 2)]
    );
    assert!(!NT_SUCCESS(status), "DriverEntry returned {status:#x}");
    assert_eq!(
        traced_status(&kernel, "the control device could not be created"),
        Some(status)
    );
    assert!(no_device::DRIVER.get().is_none());
}

/// Every kernel routine `DriverEntry` calls may fail (the driver's device, the control device
/// and its link, the pool allocations of the start and of the driver's published state): each
/// failure fails `DriverEntry` with a status that a trace event carries, except the one that
/// comes before tracing runs (`EtwRegister`), and leaves nothing behind.
#[test]
fn every_failure_of_driver_entry_is_traced_with_its_status() {
    let points = sweep_call_failures(|kernel| {
        let mut object = DriverObject::new();
        // SAFETY: a fresh driver object, unloaded below if the entry succeeded.
        let status = unsafe { no_device::driver_entry(object.as_ptr(), ptr::null()) };
        let failed = kernel.faults_triggered();
        if NT_SUCCESS(status) {
            assert!(failed.is_empty(), "{failed:?} did not fail DriverEntry");
            let unload = object.get().DriverUnload.expect("DriverUnload set");
            // SAFETY: the driver's own unload routine, once.
            unsafe { unload(object.as_ptr()) };
            return;
        }
        if failed == [Fault::Call("EtwRegister", 1)] {
            return;
        }
        let traced = kernel.etw_events().iter().any(|event| {
            matches!(event.field("status"), Some(Value::U64(traced))
                if u32::try_from(*traced).ok().map(u32::cast_signed) == Some(status))
        });
        assert!(
            traced,
            "{failed:?}: DriverEntry returned {status:#x} with no trace event carrying it"
        );
    });
    assert!(points >= 5, "swept {points} points");
}
