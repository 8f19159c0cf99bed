//! A process-creation notify routine without `unsafe` in the driver
//! ([`PsSetCreateProcessNotifyRoutineEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-pssetcreateprocessnotifyroutineex)):
//! the driver implements [`ProcessNotify`], and [`add`] / [`remove`] register a routine that
//! hands it a typed [`ProcessEvent`].
//!
//! The kernel accepts the routine only from an image linked with `/INTEGRITYCHECK`
//! (`cargo xtask build-drivers` sets it).

use core::ffi::c_void;
use core::marker::PhantomData;

use ebpf_ext_sys::ntddk::{PS_CREATE_NOTIFY_INFO, PsSetCreateProcessNotifyRoutineEx};
use ebpf_ext_sys::ntdef::{FALSE, HANDLE, NTSTATUS, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::{Error, Result};

/// What a driver does when a process is created or exits.
pub trait ProcessNotify: 'static {
    /// Called for every creation and exit, at PASSIVE_LEVEL inside a critical region.
    fn notify(event: &mut ProcessEvent<'_>);
}

/// One process creation or exit.
pub struct ProcessEvent<'a> {
    process_id: HANDLE,
    info: Option<&'a mut PS_CREATE_NOTIFY_INFO>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> ProcessEvent<'a> {
    /// The process id.
    #[must_use]
    pub fn process_id(&self) -> u64 {
        self.process_id as u64
    }

    /// Whether the process is being created (else it is exiting).
    #[must_use]
    pub fn is_creation(&self) -> bool {
        self.info.is_some()
    }

    /// The parent process id (0 on exit).
    #[must_use]
    pub fn parent_process_id(&self) -> u64 {
        self.info.as_ref().map_or(0, |i| i.ParentProcessId as u64)
    }

    /// The creating process and thread ids (0 on exit).
    #[must_use]
    pub fn creating_ids(&self) -> (u64, u64) {
        self.info.as_ref().map_or((0, 0), |i| {
            (
                i.CreatingThreadId.UniqueProcess as u64,
                i.CreatingThreadId.UniqueThread as u64,
            )
        })
    }

    /// The executable's file name, valid during the callback (`None` on exit).
    #[must_use]
    pub fn image_file_name(&self) -> Option<&'a UNICODE_STRING> {
        let info = self.info.as_ref()?;
        // SAFETY: NULL or the kernel's string, valid during the callback, which `'a` spans.
        unsafe { info.ImageFileName.as_ref() }
    }

    /// The command line as UTF-16LE bytes, valid during the callback (`None` on exit or when
    /// unknown).
    #[must_use]
    pub fn command_line(&self) -> Option<&'a [u8]> {
        let info = self.info.as_ref()?;
        // SAFETY: NULL or the kernel's string, valid during the callback.
        let line = unsafe { info.CommandLine.as_ref() }?;
        if line.Buffer.is_null() {
            return None;
        }
        // SAFETY: `Length` bytes of the string's buffer, valid during the callback.
        Some(unsafe {
            core::slice::from_raw_parts(line.Buffer.cast::<u8>(), usize::from(line.Length))
        })
    }

    /// Denies the creation with `status` (an error status); ignored on exit.
    pub fn deny(&mut self, status: NTSTATUS) {
        if let Some(info) = self.info.as_mut() {
            info.CreationStatus = status;
        }
    }
}

unsafe extern "win64" fn routine<N: ProcessNotify>(
    _process: *mut c_void,
    process_id: HANDLE,
    create_info: *mut PS_CREATE_NOTIFY_INFO,
) {
    let mut event = ProcessEvent {
        process_id,
        // SAFETY: NULL on exit, else the kernel's creation info, valid and ours to write
        // (`CreationStatus`) during the callback.
        info: unsafe { create_info.as_mut() },
        _not_send: PhantomData,
    };
    N::notify(&mut event);
}

fn set<N: ProcessNotify>(remove: bool) -> Result {
    // SAFETY: a routine of this driver; the kernel waits for running callbacks on removal.
    // The caller removes it before the driver unloads (`add`'s contract).
    let status = unsafe {
        PsSetCreateProcessNotifyRoutineEx(routine::<N>, if remove { TRUE } else { FALSE })
    };
    if status == STATUS_SUCCESS {
        Ok(())
    } else {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "PsSetCreateProcessNotifyRoutineEx",
            status
        );
        Err(Error::api("PsSetCreateProcessNotifyRoutineEx", status))
    }
}

/// Adds `N`'s notify routine. Remove it with [`remove`] before the driver unloads (a hook
/// that adds it on its first attach and removes it on its last detach does: the hook
/// provider detaches every program before it is dropped).
///
/// # Errors
/// [`Error::Api`] with the kernel's status (`STATUS_ACCESS_DENIED` for an image without
/// `/INTEGRITYCHECK`; `STATUS_INVALID_PARAMETER` if already added).
///
/// # IRQL
/// PASSIVE_LEVEL.
pub fn add<N: ProcessNotify>() -> Result {
    set::<N>(false)
}

/// Removes `N`'s notify routine, waiting for running callbacks; not from inside one.
///
/// # Errors
/// [`Error::Api`] with the kernel's status (`STATUS_INVALID_PARAMETER` if not added).
///
/// # IRQL
/// PASSIVE_LEVEL.
pub fn remove<N: ProcessNotify>() -> Result {
    set::<N>(true)
}
