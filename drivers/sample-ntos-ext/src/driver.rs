//! `DriverEntry`, unload and the process notify routine.

use core::ffi::c_void;
use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntddk::PS_CREATE_NOTIFY_INFO;
use ebpf_extension_common::sys::ntdef::{HANDLE, NTSTATUS, UNICODE_STRING};
use ebpf_extension_common::sys::ntstatus::STATUS_SUCCESS;
use ebpf_extension_common::sys::wdm::DRIVER_OBJECT;
use ebpf_extension_common::trace::trace_message_status;

use crate::hook::{HOOK_CONFIG, SampleProcessHook, TAG, fire};
use crate::program::{
    NotifyContext, OPERATION_CREATE, OPERATION_EXIT, PROGRAM_DATA, ProcessContext,
};

static EXTENSION: DriverGlobal<Extension<SampleProcessHook>> = DriverGlobal::new(TAG);

/// `DriverEntry`: starts the extension and publishes it for the notify routine.
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
    unsafe { (*driver).DriverUnload = Some(driver_unload) };
    let config = ExtensionConfig {
        trace_provider: &crate::TRACE_PROVIDER,
        program_data: &PROGRAM_DATA,
        tag: TAG,
        hook: HOOK_CONFIG,
        extension: SampleProcessHook::default(),
    };
    // SAFETY: the driver object outlives the extension (stopped in unload).
    let started = unsafe { Extension::start(driver, config) }.and_then(|e| EXTENSION.set(e));
    match started {
        Ok(()) => STATUS_SUCCESS,
        Err(e) => e.ntstatus(),
    }
}

/// `DriverUnload`: waits for running notifications, then stops the extension (detaching
/// every program, which removes the notify routine).
unsafe extern "win64" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    if let Some(extension) = EXTENSION.take() {
        extension.into_inner().stop();
    }
}

fn command_line(string: *const UNICODE_STRING) -> (*mut u8, *mut u8) {
    // SAFETY: NULL or the creation's command line, valid during the callback.
    match unsafe { string.as_ref() } {
        Some(s) if !s.Buffer.is_null() => {
            let start = s.Buffer.cast::<u8>();
            (start, start.wrapping_add(usize::from(s.Length)))
        }
        _ => (ptr::null_mut(), ptr::null_mut()),
    }
}

/// The process notify routine: builds the context and runs the programs; a denial becomes
/// the creation's status.
///
/// # Safety
/// Called by the kernel as a `PCREATE_PROCESS_NOTIFY_ROUTINE_EX` (PASSIVE_LEVEL, critical
/// region).
pub(crate) unsafe extern "win64" fn process_notify(
    _process: *mut c_void,
    process_id: HANDLE,
    create_info: *mut PS_CREATE_NOTIFY_INFO,
) {
    let Some(extension) = EXTENSION.get() else {
        return;
    };
    // SAFETY: NULL on exit, else the kernel's creation info, valid during the callback.
    let info = unsafe { create_info.as_mut() };
    let context = match &info {
        Some(info) => {
            let (command_start, command_end) = command_line(info.CommandLine);
            NotifyContext {
                public: ProcessContext {
                    command_start,
                    command_end,
                    process_id: process_id as u64,
                    parent_process_id: info.ParentProcessId as u64,
                    creating_process_id: info.CreatingThreadId.UniqueProcess as u64,
                    creating_thread_id: info.CreatingThreadId.UniqueThread as u64,
                    operation: OPERATION_CREATE,
                    reserved: 0,
                },
                image: info.ImageFileName,
            }
        }
        None => NotifyContext {
            public: ProcessContext {
                command_start: ptr::null_mut(),
                command_end: ptr::null_mut(),
                process_id: process_id as u64,
                parent_process_id: 0,
                creating_process_id: 0,
                creating_thread_id: 0,
                operation: OPERATION_EXIT,
                reserved: 0,
            },
            image: ptr::null(),
        },
    };
    if let (Some(status), Some(info)) = (fire(extension.hook(), context), info) {
        trace_message_status!(
            Level::Informational,
            keyword::PROCESS,
            "process creation denied",
            status
        );
        info.CreationStatus = status;
    }
}
