//! What the driver glue does with a completion the extension did not make for the request it
//! answers, and with a refusal whose status is not a failure: user mode gets neither bytes
//! the reply did not write nor a request left pending.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ptr;
use std::sync::Mutex;

use ebpf_ext_usersim::{Caller, DriverObject, Kernel};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::{STATUS_INTERNAL_ERROR, STATUS_PENDING, STATUS_SUCCESS};
use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

tracelogging::define_provider!(
    TRACE,
    "KeptCompletionTestProvider",
    id("4f1e2d3c-5b6a-4978-8a9b-0c1d2e3f4a5b")
);

ebpf_extension_common::wire! {
    #[derive(Debug, Clone, Copy, Default)]
    struct Header { value: u32 }
}

/// Replies with the payload after the header, and keeps that completion.
enum Keep {}
impl Ioctl for Keep {
    const CODE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x900, METHOD_BUFFERED, FILE_ANY_ACCESS);
    type Request = Header;
    type Reply = Header;
    const MAX_PAYLOAD: usize = 64;
}

/// Replies with no bytes, and keeps that completion.
enum KeepEmpty {}
impl Ioctl for KeepEmpty {
    const CODE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x904, METHOD_BUFFERED, FILE_ANY_ACCESS);
    type Request = Header;
    type Reply = [u8; 0];
}

/// Answered with the completion `Keep` kept.
const REPLAY: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x901, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Refused with `STATUS_PENDING`.
const PEND: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x902, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Answered with a reply made over a buffer of the driver's own.
const FABRICATE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x903, METHOD_BUFFERED, FILE_ANY_ACCESS);

struct Keeper {
    kept: Mutex<Option<Completion>>,
}

impl ExtensionDriver for Keeper {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = PoolTag::new(*b"Kept");
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\KeptCompletion"),
        link: utf16!("\\GLOBAL??\\KeptCompletion"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(_: &Start<'_>) -> Result<Self> {
        Ok(Keeper {
            kept: Mutex::new(None),
        })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Keep::CODE => request.handle::<Keep>(|mut call| {
                call.payload_in_reply()?;
                let reply = call.reply(&Header { value: 1 });
                let information = reply.information();
                *self.kept.lock().expect("lock") = Some(reply);
                assert_eq!(information, Header::SIZE + 64);
                Err(Refusal::invalid("kept the reply"))
            }),
            REPLAY => self
                .kept
                .lock()
                .expect("lock")
                .take()
                .unwrap_or_else(|| request.unknown()),
            KeepEmpty::CODE => request.handle::<KeepEmpty>(|call| {
                let reply = call.reply(&[]);
                assert_eq!(reply.information(), 0);
                *self.kept.lock().expect("lock") = Some(reply);
                Err(Refusal::invalid("kept the empty reply"))
            }),
            PEND => request.handle::<Keep>(|_| Err(Refusal::new(STATUS_PENDING, "pending"))),
            FABRICATE => {
                let mut own = [0u64; 2];
                // SAFETY: the 16 bytes of `own`.
                let own = unsafe { core::slice::from_raw_parts_mut(own.as_mut_ptr().cast(), 16) };
                Request::new(Keep::CODE, own, Header::SIZE, 16)
                    .handle::<Keep>(|call| Ok(call.reply(&Header { value: 2 })))
            }
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: Keeper);

#[test]
fn a_completion_kept_from_another_request_or_a_pending_refusal_completes_as_an_error() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded below).
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    let handle = kernel
        .open("\\\\.\\KeptCompletion", Caller::System)
        .expect("open");
    let mut input = Header { value: 0 }.to_bytes().to_vec();
    input.extend([7; 64]);
    let kept = kernel.device_io_control(&handle, Keep::CODE, &input, input.len());
    assert_ne!(kept.status, STATUS_SUCCESS, "the first request was refused");
    // Without the glue's check, usersim bug-checks here: 68 bytes for a 4-byte output.
    let replayed = kernel.device_io_control(&handle, REPLAY, &[], Header::SIZE);
    assert_eq!(
        (replayed.status, replayed.information, replayed.output.len()),
        (STATUS_INTERNAL_ERROR, 0, 0)
    );
    // Within the output, a kept reply would hand back the stale bytes of this request's
    // system buffer.
    let _ = kernel.device_io_control(&handle, Keep::CODE, &input, input.len());
    let replayed = kernel.device_io_control(&handle, REPLAY, &[], input.len());
    assert_eq!(
        (replayed.status, replayed.output.len()),
        (STATUS_INTERNAL_ERROR, 0),
        "{:x?}",
        replayed.output
    );
    // A kept reply of no bytes is still another request's: not a success for this one.
    let _ = kernel.device_io_control(&handle, KeepEmpty::CODE, &input[..Header::SIZE], 0);
    let replayed = kernel.device_io_control(&handle, REPLAY, &[], 0);
    assert_eq!(
        (replayed.status, replayed.information),
        (STATUS_INTERNAL_ERROR, 0)
    );
    let fabricated = kernel.device_io_control(&handle, FABRICATE, &[], 16);
    assert_eq!(
        (fabricated.status, fabricated.output.len()),
        (STATUS_INTERNAL_ERROR, 0),
        "{:x?}",
        fabricated.output
    );
    // Without the refusal's mapping, usersim's check that nothing pends fails here.
    let pending = kernel.device_io_control(&handle, PEND, &input[..Header::SIZE], Header::SIZE);
    assert_eq!(
        (pending.status, pending.output.len()),
        (STATUS_INTERNAL_ERROR, 0)
    );
    kernel.close(handle);
    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once.
    unsafe { unload(object.as_ptr()) };
    kernel.assert_no_leaks();
}
