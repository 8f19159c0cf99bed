//! A control request the driver glue receives while the driver is not published is refused
//! with `STATUS_DEVICE_NOT_READY` and a trace event, and never reaches the extension.
//!
//! On Windows that happens at the end of `DriverEntry` (the device and its link exist before
//! the driver is published) and once unload has taken the driver. The test takes the driver
//! out of its global as unload does, keeping it (and so its device) alive, sends a request,
//! then stops the driver itself.
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_ext_usersim::{Caller, DriverObject, Kernel};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::{STATUS_DEVICE_NOT_READY, STATUS_SUCCESS};
use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

tracelogging::define_provider!(
    TRACE,
    "DeviceNotReadyTestProvider",
    id("6a0f3c2e-8d41-4b7a-9c15-2e7d0b94f3a1")
);

ebpf_extension_common::wire! {
    #[derive(Debug, Clone, Copy, Default)]
    struct Message { value: u32 }
}

/// Answered by the extension.
enum Ping {}
impl Ioctl for Ping {
    const CODE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x900, METHOD_BUFFERED, FILE_ANY_ACCESS);
    type Request = Message;
    type Reply = Message;
}

/// Requests the extension has seen.
static SEEN: AtomicU32 = AtomicU32::new(0);

struct Answers;

impl ExtensionDriver for Answers {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = PoolTag::new(*b"NRdy");
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\DeviceNotReady"),
        link: utf16!("\\GLOBAL??\\DeviceNotReady"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(_: &Start<'_>) -> Result<Self> {
        Ok(Answers)
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        SEEN.fetch_add(1, Ordering::SeqCst);
        request.handle::<Ping>(|call| Ok(call.reply(&Message { value: 1 })))
    }
}

driver_entry!(static DRIVER: Answers);

#[test]
fn a_request_while_the_driver_is_not_running_is_refused_and_traced() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (stopped below).
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    let handle = kernel
        .open("\\\\.\\DeviceNotReady", Caller::System)
        .expect("open");
    let input = Message { value: 0 }.to_bytes();
    let running = kernel.device_io_control(&handle, Ping::CODE, &input, Message::SIZE);
    assert_eq!(
        (running.status, SEEN.load(Ordering::SeqCst)),
        (STATUS_SUCCESS, 1)
    );

    // As unload does first: the driver leaves its global; its device stays until it drops.
    let taken = DRIVER.take().expect("the running driver");
    let late = kernel.device_io_control(&handle, Ping::CODE, &input, Message::SIZE);
    assert_eq!(
        (late.status, late.output.len()),
        (STATUS_DEVICE_NOT_READY, 0)
    );
    assert_eq!(SEEN.load(Ordering::SeqCst), 1, "the extension never saw it");
    let refused = "control request refused: the driver is not running";
    assert_eq!(kernel.etw_messages_containing(refused), 1, "traced");
    kernel.close(handle);

    drop(taken);
    assert!(
        object.get().DeviceObject.is_null(),
        "the device went with the driver"
    );
    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once; it finds nothing left to stop.
    unsafe { unload(object.as_ptr()) };
    kernel.assert_no_leaks();
}
