//! ETW (placeholder while the capture is written).

use std::ffi::c_void;

use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_NOT_IMPLEMENTED;
use ebpf_ext_sys::wdm::{ETWENABLECALLBACK, EVENT_DATA_DESCRIPTOR, EVENT_DESCRIPTOR, EVENT_INFO_CLASS, REGHANDLE};

use crate::kernel::{Kernel, lock};

#[derive(Default)]
pub(crate) struct EtwState {
    registrations: usize,
}

impl Kernel {
    /// Live ETW provider registrations.
    #[must_use]
    pub fn etw_registrations(&self) -> usize {
        lock(&self.inner().etw).registrations
    }
}

/// `EtwRegister`.
///
/// # Safety
/// Kernel routine.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwRegister(ProviderId: *const GUID, EnableCallback: Option<ETWENABLECALLBACK>, CallbackContext: *mut c_void, RegHandle: *mut REGHANDLE) -> NTSTATUS {
    let _ = (ProviderId, EnableCallback, CallbackContext, RegHandle);
    STATUS_NOT_IMPLEMENTED
}

/// `EtwUnregister`.
#[unsafe(no_mangle)]
pub extern "win64" fn EtwUnregister(RegHandle: REGHANDLE) -> NTSTATUS {
    let _ = RegHandle;
    STATUS_NOT_IMPLEMENTED
}

/// `EtwSetInformation`.
///
/// # Safety
/// Kernel routine.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwSetInformation(RegHandle: REGHANDLE, InformationClass: EVENT_INFO_CLASS, EventInformation: *const c_void, InformationLength: u32) -> NTSTATUS {
    let _ = (RegHandle, InformationClass, EventInformation, InformationLength);
    STATUS_NOT_IMPLEMENTED
}

/// `EtwWriteTransfer`.
///
/// # Safety
/// Kernel routine.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwWriteTransfer(RegHandle: REGHANDLE, EventDescriptor: *const EVENT_DESCRIPTOR, ActivityId: *const GUID, RelatedActivityId: *const GUID, UserDataCount: u32, UserData: *const EVENT_DATA_DESCRIPTOR) -> NTSTATUS {
    let _ = (RegHandle, EventDescriptor, ActivityId, RelatedActivityId, UserDataCount, UserData);
    STATUS_NOT_IMPLEMENTED
}

/// `EtwActivityIdControl`.
///
/// # Safety
/// Kernel routine.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwActivityIdControl(ControlCode: u32, ActivityId: *mut GUID) -> NTSTATUS {
    let _ = (ControlCode, ActivityId);
    STATUS_NOT_IMPLEMENTED
}
