//! A process-creation notify routine without `unsafe` in the driver
//! ([`PsSetCreateProcessNotifyRoutineEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-pssetcreateprocessnotifyroutineex)):
//! the driver implements [`ProcessNotify`], and [`add`] / [`remove`] register a routine that
//! hands it a typed [`ProcessEvent`].
//!
//! The kernel accepts the routine only from an image linked with `/INTEGRITYCHECK`
//! (`cargo xtask build-drivers` sets it).
//!
//! A [`ProcessEvent`] also reads what the kernel knows of the process: its creation time,
//! exit time and status, and the user SID of its primary token; [`lookup_account`] turns a
//! SID into account and domain names (`SecLookupAccountSid`, exported by `ksecdd.sys`).

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use ebpf_ext_sys::ksecdd::SecLookupAccountSid;
use ebpf_ext_sys::ntddk::{
    PS_CREATE_NOTIFY_INFO, PsGetProcessCreateTimeQuadPart, PsGetProcessExitStatus,
    PsSetCreateProcessNotifyRoutineEx,
};
use ebpf_ext_sys::ntdef::{FALSE, HANDLE, NTSTATUS, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    PsDereferencePrimaryToken, PsGetProcessExitTime, PsReferencePrimaryToken, RtlCopySid,
    RtlLengthSid, RtlValidSid, SID_NAME_USE, SeQueryInformationToken, TOKEN_USER, TokenUser,
};
use ebpf_ext_sys::ntstatus::{STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_SID, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::ExFreePool;
use ebpf_ext_sys::{Error, Result};

/// What a driver does when a process is created or exits.
pub trait ProcessNotify: 'static {
    /// Called for every creation and exit, at PASSIVE_LEVEL inside a critical region.
    fn notify(event: &mut ProcessEvent<'_>);
}

/// One process creation or exit.
///
/// # Invariants
/// `process` is the kernel's process object and `info` NULL (exit) or the kernel's creation
/// information, both valid for `'a` (the callback), `info` ours to write.
pub struct ProcessEvent<'a> {
    process: *mut c_void,
    process_id: HANDLE,
    info: *mut PS_CREATE_NOTIFY_INFO,
    _callback: PhantomData<&'a mut PS_CREATE_NOTIFY_INFO>,
}

impl<'a> ProcessEvent<'a> {
    fn info(&self) -> Option<&'a PS_CREATE_NOTIFY_INFO> {
        // SAFETY: NULL or the kernel's creation info, valid for `'a` (type invariant); only
        // `deny` writes it, through `&mut self`, so no shared borrow overlaps that write.
        unsafe { self.info.as_ref() }
    }

    /// The process id.
    #[must_use]
    pub fn process_id(&self) -> u64 {
        self.process_id as u64
    }

    /// The process object (`PEPROCESS`), valid during the callback: for contexts that carry
    /// it, as ntosebpfext's does.
    #[must_use]
    pub fn process(&self) -> *mut c_void {
        self.process
    }

    /// The creation information (`PPS_CREATE_NOTIFY_INFO`), valid during the callback; NULL
    /// on exit. For contexts that carry it; use [`ProcessEvent::deny`] to deny.
    #[must_use]
    pub fn create_info(&self) -> *mut c_void {
        self.info.cast()
    }

    /// Whether the process is being created (else it is exiting).
    #[must_use]
    pub fn is_creation(&self) -> bool {
        !self.info.is_null()
    }

    /// The parent process id (0 on exit).
    #[must_use]
    pub fn parent_process_id(&self) -> u64 {
        self.info().map_or(0, |i| i.ParentProcessId as u64)
    }

    /// The creating process and thread ids (0 on exit).
    #[must_use]
    pub fn creating_ids(&self) -> (u64, u64) {
        self.info().map_or((0, 0), |i| {
            (
                i.CreatingThreadId.UniqueProcess as u64,
                i.CreatingThreadId.UniqueThread as u64,
            )
        })
    }

    /// The executable's file name, valid during the callback (`None` on exit).
    #[must_use]
    pub fn image_file_name(&self) -> Option<&'a UNICODE_STRING> {
        // SAFETY: NULL or the kernel's string, valid during the callback, which `'a` spans.
        unsafe { self.info()?.ImageFileName.as_ref() }
    }

    /// The kernel's command-line string (its `Length` and `MaximumLength` as the kernel
    /// gives them), valid during the callback (`None` on exit or when unknown).
    #[must_use]
    pub fn command_line_string(&self) -> Option<&'a UNICODE_STRING> {
        // SAFETY: NULL or the kernel's string, valid during the callback.
        unsafe { self.info()?.CommandLine.as_ref() }
    }

    /// The command line as UTF-16LE bytes, valid during the callback (`None` on exit or when
    /// unknown).
    #[must_use]
    pub fn command_line(&self) -> Option<&'a [u8]> {
        let line = self.command_line_string()?;
        if line.Buffer.is_null() {
            return None;
        }
        // SAFETY: `Length` bytes of the string's buffer, valid during the callback.
        Some(unsafe {
            core::slice::from_raw_parts(line.Buffer.cast::<u8>(), usize::from(line.Length))
        })
    }

    /// When the process was created, in FILETIME units (100 ns since 1601)
    /// ([`PsGetProcessCreateTimeQuadPart`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocesscreatetimequadpart)).
    #[must_use]
    pub fn creation_time(&self) -> i64 {
        // SAFETY: the kernel's process object, valid during the callback (type invariant).
        unsafe { PsGetProcessCreateTimeQuadPart(self.process) }
    }

    /// When the process exited, in FILETIME units (`None` on creation)
    /// ([`PsGetProcessExitTime`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-psgetprocessexittime):
    /// the callback runs in the exiting process).
    #[must_use]
    pub fn exit_time(&self) -> Option<i64> {
        // SAFETY: called in the exit callback, where the current process is the exiting one.
        (!self.is_creation()).then(|| unsafe { PsGetProcessExitTime() })
    }

    /// The process's exit status (`None` on creation)
    /// ([`PsGetProcessExitStatus`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocessexitstatus)).
    #[must_use]
    pub fn exit_status(&self) -> Option<NTSTATUS> {
        // SAFETY: the kernel's process object, valid during the callback (type invariant).
        (!self.is_creation()).then(|| unsafe { PsGetProcessExitStatus(self.process) })
    }

    /// Copies the user SID of the process's primary token into `out` and returns its length;
    /// `None` if the token or its user cannot be read, the SID is invalid, or it does not fit
    /// (ntosebpfext's capture: `PsReferencePrimaryToken`, `SeQueryInformationToken(TokenUser)`,
    /// `RtlValidSid`, `RtlCopySid`; the `TOKEN_USER` freed with `ExFreePool`, the token
    /// dereferenced).
    #[must_use]
    pub fn token_user_sid(&self, out: &mut [u8]) -> Option<usize> {
        let token = PrimaryToken::reference(self.process)?;
        let user = token.user()?;
        let sid = user.sid();
        // SAFETY: the SID of a TOKEN_USER the kernel filled, alive while `user` is.
        let valid = unsafe { RtlValidSid(sid) };
        if valid == FALSE {
            return None;
        }
        // SAFETY: a valid SID.
        let length = unsafe { RtlLengthSid(sid) } as usize;
        let capacity = u32::try_from(out.len()).unwrap_or(u32::MAX);
        if length > out.len() {
            return None;
        }
        // SAFETY: `out` has `capacity` writable bytes; `sid` is valid.
        let status = unsafe { RtlCopySid(capacity, out.as_mut_ptr().cast(), sid) };
        (status == STATUS_SUCCESS).then_some(length)
    }

    /// Denies the creation with `status` (an error status); ignored on exit.
    pub fn deny(&mut self, status: NTSTATUS) {
        // SAFETY: NULL or the kernel's creation info, ours to write during the callback
        // (type invariant); no other borrow of it is alive (`&mut self`).
        if let Some(info) = unsafe { self.info.as_mut() } {
            info.CreationStatus = status;
        }
    }
}

/// A reference on a process's primary token, released on drop.
struct PrimaryToken(NonNull<c_void>);

impl PrimaryToken {
    fn reference(process: *mut c_void) -> Option<Self> {
        // SAFETY: the kernel's process object, valid during the callback.
        NonNull::new(unsafe { PsReferencePrimaryToken(process) }).map(PrimaryToken)
    }

    /// The token's user, or `None` (the failure traced).
    fn user(&self) -> Option<TokenUserInfo> {
        let mut info = ptr::null_mut();
        // SAFETY: a referenced token and a writable slot.
        let status = unsafe { SeQueryInformationToken(self.0.as_ptr(), TokenUser, &raw mut info) };
        if status != STATUS_SUCCESS {
            ebpf_ext_trace::trace_api_failure!(
                ebpf_ext_trace::keyword::EXTENSION,
                "SeQueryInformationToken",
                status
            );
            return None;
        }
        NonNull::new(info.cast()).map(TokenUserInfo)
    }
}

impl Drop for PrimaryToken {
    fn drop(&mut self) {
        // SAFETY: the reference `reference` took, released once.
        unsafe { PsDereferencePrimaryToken(self.0.as_ptr()) };
    }
}

/// A `TOKEN_USER` `SeQueryInformationToken` allocated, freed with `ExFreePool` on drop.
struct TokenUserInfo(NonNull<TOKEN_USER>);

impl TokenUserInfo {
    fn sid(&self) -> *const c_void {
        // SAFETY: a TOKEN_USER the kernel filled, alive until drop.
        unsafe { self.0.as_ref() }.User.Sid
    }
}

impl Drop for TokenUserInfo {
    fn drop(&mut self) {
        // SAFETY: the kernel's allocation, which the caller frees with ExFreePool, once.
        unsafe { ExFreePool(self.0.as_ptr().cast()) };
    }
}

/// Why [`lookup_account`] produced no names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountLookupError {
    /// A string's buffer is too small: the sizes in bytes the name and the domain need.
    BufferTooSmall {
        /// Bytes the name needs.
        name: u32,
        /// Bytes the domain needs.
        domain: u32,
    },
    /// The SID is not a valid one, or `SecLookupAccountSid` failed: the status.
    Failed(NTSTATUS),
}

/// The length of the SID at the start of `sid` if it is a whole, valid SID.
fn whole_sid(sid: &[u8]) -> Option<usize> {
    let (&revision, &count) = (sid.first()?, sid.get(1)?);
    let length = 8 + 4 * usize::from(count);
    (revision == 1 && count <= 15 && sid.len() >= length).then_some(length)
}

/// Looks up the account `sid` names and writes its name and domain into `name` and `domain`
/// (their `Length` set), offering each string's `MaximumLength` bytes
/// ([`SecLookupAccountSid`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-seclookupaccountsid),
/// exported by `ksecdd.sys`).
///
/// # Errors
/// [`AccountLookupError::BufferTooSmall`] with the sizes needed; otherwise
/// [`AccountLookupError::Failed`] with the status (`STATUS_INVALID_SID` for a `sid` that is
/// not a whole valid SID, `STATUS_NONE_MAPPED` for an unknown one), traced.
///
/// # Safety
/// Each string's `Buffer` has `MaximumLength` writable bytes (or is NULL with 0).
///
/// # IRQL
/// PASSIVE_LEVEL.
pub unsafe fn lookup_account(
    sid: &[u8],
    name: &mut UNICODE_STRING,
    domain: &mut UNICODE_STRING,
) -> core::result::Result<(), AccountLookupError> {
    let valid = whole_sid(sid).is_some_and(|_| {
        // SAFETY: `whole_sid` checked the slice holds the whole SID its header gives.
        let valid = unsafe { RtlValidSid(sid.as_ptr().cast()) };
        valid != FALSE
    });
    if !valid {
        return Err(AccountLookupError::Failed(STATUS_INVALID_SID));
    }
    let (mut name_size, mut domain_size) = (
        u32::from(name.MaximumLength),
        u32::from(domain.MaximumLength),
    );
    let mut name_use: SID_NAME_USE = 0;
    // SAFETY: a valid SID; writable sizes and strings whose buffers hold the sizes given (the
    // caller's contract).
    let status = unsafe {
        SecLookupAccountSid(
            sid.as_ptr().cast(),
            &raw mut name_size,
            ptr::from_mut(name),
            &raw mut domain_size,
            ptr::from_mut(domain),
            &raw mut name_use,
        )
    };
    match status {
        STATUS_SUCCESS => Ok(()),
        STATUS_BUFFER_TOO_SMALL => Err(AccountLookupError::BufferTooSmall {
            name: name_size,
            domain: domain_size,
        }),
        _ => {
            ebpf_ext_trace::trace_api_failure!(
                ebpf_ext_trace::keyword::EXTENSION,
                "SecLookupAccountSid",
                status
            );
            Err(AccountLookupError::Failed(status))
        }
    }
}

unsafe extern "win64" fn routine<N: ProcessNotify>(
    process: *mut c_void,
    process_id: HANDLE,
    create_info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // INVARIANT: the kernel's arguments, valid (and the creation info ours to write) during
    // this callback, which the event does not outlive.
    let mut event = ProcessEvent {
        process,
        process_id,
        info: create_info,
        _callback: PhantomData,
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
