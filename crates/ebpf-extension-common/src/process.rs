//! A process-creation notify routine without `unsafe` in the driver
//! ([`PsSetCreateProcessNotifyRoutineEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-pssetcreateprocessnotifyroutineex)):
//! the driver implements [`ProcessNotify`], and [`add`] / [`remove`] register a routine that
//! hands it a typed [`ProcessEvent`]. A routine still added when the driver unloads is removed
//! by the driver glue ([`remove_leaked`]), so skipping a `remove` cannot leave the kernel
//! calling into an unloaded image.
//!
//! The kernel accepts the routine only from an image linked with `/INTEGRITYCHECK`
//! (`cargo xtask build-drivers` sets it).
//!
//! A [`ProcessEvent`] also reads what the kernel knows of the process: its creation time,
//! exit time and status, and the user SID of its primary token; [`lookup_account`] turns a
//! SID into account and domain names (`SecLookupAccountSid`, exported by `ksecdd.sys`), and
//! [`AccountNames`] does it as ntosebpfext does, with buffers it owns.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use ebpf_ext_hook::ContextData;
use ebpf_ext_pool::{PoolArray, PoolTag};
use ebpf_ext_sys::intrin::KeGetCurrentIrql;
use ebpf_ext_sys::ksecdd::SecLookupAccountSid;
use ebpf_ext_sys::ntddk::{
    PCREATE_PROCESS_NOTIFY_ROUTINE_EX, PS_CREATE_NOTIFY_INFO, PsGetProcessCreateTimeQuadPart,
    PsGetProcessExitStatus, PsSetCreateProcessNotifyRoutineEx,
};
use ebpf_ext_sys::ntdef::{FALSE, HANDLE, NT_SUCCESS, NTSTATUS, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    PsDereferencePrimaryToken, PsGetProcessExitTime, PsReferencePrimaryToken, RtlCopySid,
    RtlLengthSid, RtlValidSid, SID_NAME_USE, SeQueryInformationToken, TOKEN_USER, TokenUser,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_SID, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_sys::wdm::{ExFreePool, PASSIVE_LEVEL};
use ebpf_ext_sys::{Error, Result};

/// What a driver does when a process is created or exits.
pub trait ProcessNotify: 'static {
    /// Called for every creation and exit, at PASSIVE_LEVEL inside a critical region.
    fn notify(event: &mut ProcessEvent<'_>);
}

/// One process creation or exit.
///
/// # IRQL
/// The notify routine runs at PASSIVE_LEVEL, where every method may be called. Methods that
/// only read the event's arguments run at any IRQL; those that ask the kernel say the level
/// their kernel routines need (for a driver that raises the IRQL inside the routine).
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

    /// The command line as UTF-16LE bytes (`None` on exit or when unknown). Borrowed from the
    /// event, so no program runs over them ([`ProcessEvent::command_line_data`]) meanwhile.
    #[must_use]
    pub fn command_line(&self) -> Option<&[u8]> {
        let line = self.command_line_string()?;
        if line.Buffer.is_null() {
            return None;
        }
        // SAFETY: `Length` bytes of the string's buffer, valid during the callback; programs
        // write them only through `command_line_data`, which borrows the event mutably.
        Some(unsafe {
            core::slice::from_raw_parts(line.Buffer.cast::<u8>(), usize::from(line.Length))
        })
    }

    /// The command line's bytes as programs' data ([`ContextData`]; both pointers NULL on exit
    /// or when unknown): the kernel's buffer itself, as ntosebpfext hands programs its
    /// `command_start..command_end`. Programs may write it, as they may there.
    pub fn command_line_data(&mut self) -> ContextData<'_> {
        match self.command_line_string() {
            Some(line) if !line.Buffer.is_null() => {
                // SAFETY: `Length` bytes of the kernel's buffer, valid during the callback,
                // which the returned borrow of the event cannot outlive; no reference of ours
                // covers them meanwhile (`command_line` borrows the event too).
                unsafe {
                    ContextData::from_raw_parts(line.Buffer.cast::<u8>(), usize::from(line.Length))
                }
            }
            _ => ContextData::NONE,
        }
    }

    /// When the process was created, in FILETIME units (100 ns since 1601)
    /// ([`PsGetProcessCreateTimeQuadPart`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocesscreatetimequadpart)).
    ///
    /// # IRQL
    /// Any (`PsGetProcessCreateTimeQuadPart`'s).
    #[must_use]
    pub fn creation_time(&self) -> i64 {
        // SAFETY: the kernel's process object, valid during the callback (type invariant).
        unsafe { PsGetProcessCreateTimeQuadPart(self.process) }
    }

    /// When the process exited, in FILETIME units (`None` on creation)
    /// ([`PsGetProcessExitTime`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-psgetprocessexittime):
    /// the callback runs in the exiting process).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (`PsGetProcessExitTime`'s).
    #[must_use]
    pub fn exit_time(&self) -> Option<i64> {
        // SAFETY: called in the exit callback, where the current process is the exiting one.
        (!self.is_creation()).then(|| unsafe { PsGetProcessExitTime() })
    }

    /// The process's exit status (`None` on creation)
    /// ([`PsGetProcessExitStatus`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocessexitstatus)).
    ///
    /// # IRQL
    /// ≤ APC_LEVEL (`PsGetProcessExitStatus`'s).
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
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (`SeQueryInformationToken`'s; the other routines allow ≤ APC_LEVEL).
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

    /// Denies the creation with `status`; ignored on exit, and for a success or
    /// informational status (`NT_SUCCESS`), which would deny nothing and could undo an
    /// earlier denial of the same creation (ntosebpfext writes `CreationStatus` only for a
    /// failure status too).
    pub fn deny(&mut self, status: NTSTATUS) {
        if NT_SUCCESS(status) {
            return;
        }
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
/// PASSIVE_LEVEL (`SecLookupAccountSid`'s).
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
        ebpf_ext_trace::trace_message_status!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "account lookup refused: not a whole, valid SID",
            STATUS_INVALID_SID
        );
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

/// `N`'s notify routine. Its address is `N`'s key, with the kernel (which refuses a routine
/// added twice) and in [`Added`]; so each `N`'s copy must be a function of its own. Rust does
/// not promise distinct addresses to functions whose code is the same, and optimised builds
/// fold them (LLVM within the crate, the linker's identical-code folding across the image):
/// two types with the same `notify` code would share one routine. Each copy therefore reads
/// a value of its own, `N`'s `TypeId`, with a volatile read, which the compiler may not drop.
unsafe extern "win64" fn routine<N: ProcessNotify>(
    process: *mut c_void,
    process_id: HANDLE,
    create_info: *mut PS_CREATE_NOTIFY_INFO,
) {
    let id = core::any::TypeId::of::<N>();
    // SAFETY: a local, aligned and initialised.
    let _ = unsafe { ptr::read_volatile(&raw const id) };
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

/// Adds (`remove` false) or removes `notify` with the kernel.
///
/// # Safety
/// `notify` is a routine of this driver image; the caller keeps the [`Added`] record (a
/// routine added is listed there until removed).
unsafe fn set(notify: PCREATE_PROCESS_NOTIFY_ROUTINE_EX, remove: bool) -> Result {
    // SAFETY: a routine of this driver (caller's contract); the kernel waits for running
    // callbacks on removal. One still added at unload is removed by the driver glue
    // (`remove_leaked`).
    let status =
        unsafe { PsSetCreateProcessNotifyRoutineEx(notify, if remove { TRUE } else { FALSE }) };
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

/// Most notify routines (one per [`ProcessNotify`] type) one driver keeps added at once.
pub const MAX_NOTIFY_ROUTINES: usize = 8;

/// The routines this image has added and not removed, so that unload can remove one the
/// driver did not ([`remove_leaked`]): safe code may skip a `remove`, and a routine left
/// added after unload is a call into an unmapped image at the next process event.
///
/// One per image (a `static`); on the host, one per simulated kernel (usersim's per-kernel
/// storage), as `ebpf-ext-nmr` keeps its list of providers. All-zero is empty. Lock-free:
/// a slot is claimed and emptied with compare-exchange.
struct Added {
    slots: [AtomicPtr<c_void>; MAX_NOTIFY_ROUTINES],
}

#[cfg(target_os = "windows")]
static ADDED: Added = Added {
    slots: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_NOTIFY_ROUTINES],
};

/// This image's record.
#[cfg(target_os = "windows")]
fn added() -> Option<&'static Added> {
    Some(&ADDED)
}

/// The key of the record in usersim's per-kernel storage.
#[cfg(not(target_os = "windows"))]
static KEY: u8 = 0;

/// The record of the simulated kernel bound to this thread; `None` when none is bound.
#[cfg(not(target_os = "windows"))]
fn added() -> Option<&'static Added> {
    // SAFETY: all-zero is an empty record of atomics; `KEY` is this module's alone; the
    // storage lives as long as the bound kernel.
    unsafe { ebpf_ext_sys::host::kernel_local::<Added>(ptr::from_ref(&KEY).cast()) }
}

impl Added {
    /// Lists `notify`; `false` if every slot is taken.
    fn insert(&self, notify: *mut c_void) -> bool {
        self.slots.iter().any(|slot| {
            slot.compare_exchange(ptr::null_mut(), notify, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Unlists `notify`.
    fn remove(&self, notify: *mut c_void) {
        for slot in &self.slots {
            if slot
                .compare_exchange(notify, ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Adds `N`'s notify routine. Remove it with [`remove`] when the driver no longer needs it (a
/// hook that adds it on its first attach and removes it on its last detach does: the hook
/// provider detaches every program before it is dropped). One still added when the driver
/// unloads is removed then, with a trace event (see [`remove_leaked`]).
///
/// # Errors
/// [`Error::Api`] with the kernel's status (`STATUS_ACCESS_DENIED` for an image without
/// `/INTEGRITYCHECK`; `STATUS_INVALID_PARAMETER` if already added);
/// [`Error::InsufficientResources`] (traced, the routine removed again) if the driver already
/// has [`MAX_NOTIFY_ROUTINES`] added.
///
/// # IRQL
/// PASSIVE_LEVEL.
///
/// # Locking
/// As [`remove`]: serialise `add` and [`remove`] of one `N`.
pub fn add<N: ProcessNotify>() -> Result {
    let notify: PCREATE_PROCESS_NOTIFY_ROUTINE_EX = routine::<N>;
    // SAFETY: this image's routine for `N`, listed below or removed again.
    unsafe { set(notify, false) }?;
    if added().is_some_and(|added| !added.insert(notify as *mut c_void)) {
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "process notify routine refused: the driver has MAX_NOTIFY_ROUTINES added"
        );
        // SAFETY: added just above and not listed.
        let _ = unsafe { set(notify, true) };
        return Err(Error::InsufficientResources);
    }
    Ok(())
}

/// Removes `N`'s notify routine, waiting for running callbacks; not from inside one.
///
/// # Errors
/// [`Error::Api`] with the kernel's status (`STATUS_PROCEDURE_NOT_FOUND` if not added).
///
/// # Locking
/// Serialise [`add`] and `remove` of one `N` (a hook's `on_first_attach` and
/// `on_last_detach` are): the kernel's call and this driver's record of added routines,
/// which [`remove_leaked`] reads at unload, are two steps.
///
/// # IRQL
/// PASSIVE_LEVEL.
pub fn remove<N: ProcessNotify>() -> Result {
    let notify: PCREATE_PROCESS_NOTIFY_ROUTINE_EX = routine::<N>;
    // SAFETY: this image's routine for `N`; unlisted once removed.
    unsafe { set(notify, true) }?;
    if let Some(added) = added() {
        added.remove(notify as *mut c_void);
    }
    Ok(())
}

/// Removes every notify routine this driver added and did not remove, tracing each (an
/// `EbpfExtGenericMessage` at error level, keyword `EXTENSION`); returns how many. The driver
/// glue ([`crate::driver_entry!`]) calls it at unload once the extension is dropped, and
/// after a failed start: a routine is never left pointing into an unloaded image.
///
/// The record is one per driver image; on the host, one per simulated kernel, so there it
/// also removes routines that other natively linked drivers (or the test itself) added
/// through this crate in the same kernel, as `ebpf_ext_nmr::deregister_leaked` does for
/// providers.
///
/// # IRQL
/// PASSIVE_LEVEL.
#[expect(
    clippy::must_use_candidate,
    reason = "removing is the point; the count is for tests"
)]
pub fn remove_leaked() -> usize {
    let Some(added) = added() else {
        return 0;
    };
    let mut removed = 0;
    for slot in &added.slots {
        let notify = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if notify.is_null() {
            continue;
        }
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "process notify routine still added at unload: removed"
        );
        // SAFETY: a `PCREATE_PROCESS_NOTIFY_ROUTINE_EX` of this image (only `add` lists, and
        // it lists that type), added and not removed (listed), and now unlisted.
        let notify = unsafe {
            core::mem::transmute::<*mut c_void, PCREATE_PROCESS_NOTIFY_ROUTINE_EX>(notify)
        };
        // SAFETY: as above.
        if unsafe { set(notify, true) }.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Bytes of each inline account buffer: ntosebpfext's notify routine lends two such stack
/// buffers to its context before it runs the programs.
pub const ACCOUNT_INLINE_BYTES: usize = 80;

/// The longest string a `UNICODE_STRING` holds, in bytes.
const MAX_STRING_BYTES: u32 = 0xFFFF;

/// An inline account buffer, aligned for UTF-16.
#[repr(C, align(2))]
struct Inline([u8; ACCOUNT_INLINE_BYTES]);

/// Where an account string's bytes are.
enum Buffer {
    /// None (NULL, capacity 0).
    None,
    /// The inline buffer.
    Inline(Inline),
    /// A pool buffer.
    Pool(PoolArray<u8>),
}

/// One account string: its buffer and the bytes of it in use.
///
/// # Invariants
/// `length` ≤ the buffer's capacity.
struct AccountString {
    buffer: Buffer,
    length: u16,
}

impl AccountString {
    const NONE: AccountString = AccountString {
        buffer: Buffer::None,
        length: 0,
    };
    const INLINE: AccountString = AccountString {
        buffer: Buffer::Inline(Inline([0; ACCOUNT_INLINE_BYTES])),
        length: 0,
    };

    fn capacity(&self) -> u16 {
        match &self.buffer {
            Buffer::None => 0,
            Buffer::Inline(inline) => u16::try_from(inline.0.len()).unwrap_or(u16::MAX),
            Buffer::Pool(pool) => u16::try_from(pool.len()).unwrap_or(u16::MAX),
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        let all: &[u8] = match &self.buffer {
            Buffer::None => return None,
            Buffer::Inline(inline) => &inline.0,
            Buffer::Pool(pool) => pool,
        };
        all.get(..usize::from(self.length))
    }

    /// The string as the kernel takes it: `MaximumLength` writable bytes at `Buffer` (the
    /// buffer this string owns, or NULL), for as long as `self` is neither moved nor changed.
    fn raw(&mut self) -> UNICODE_STRING {
        let capacity = self.capacity();
        let buffer = match &mut self.buffer {
            Buffer::None => ptr::null_mut(),
            Buffer::Inline(inline) => inline.0.as_mut_ptr().cast(),
            Buffer::Pool(pool) => pool.as_mut_ptr().cast(),
        };
        UNICODE_STRING {
            Length: self.length,
            MaximumLength: capacity,
            Buffer: buffer,
        }
    }
}

/// The account a SID names, resolved as ntosebpfext's process helpers do it: at most once,
/// into two inline buffers first, then, if `SecLookupAccountSid` says they are too small, into
/// pool buffers of the sizes it asked for, with one retry; a size above 65535 bytes fails with
/// `STATUS_BUFFER_OVERFLOW`. A failure clears both strings and is remembered. The pool buffers
/// are freed when the value is dropped.
///
/// It owns its buffers: [`AccountNames::name`] and [`AccountNames::domain`] read them safely.
/// A context whose binary layout carries the strings as `UNICODE_STRING`s (ntosebpfext's
/// `process_notify_context_t`) copies [`AccountNames::strings`] into it after each change.
///
/// # IRQL
/// [`AccountNames::resolve`]: PASSIVE_LEVEL (`SecLookupAccountSid`'s). Dropping it (which
/// frees its pool buffers): ≤ DISPATCH_LEVEL. The other methods do not call the kernel: any
/// IRQL.
pub struct AccountNames {
    name: AccountString,
    domain: AccountString,
    /// `None` until looked up; then the lookup's result.
    lookup: Option<core::result::Result<(), NTSTATUS>>,
    tag: PoolTag,
}

/// An account string a caller supplies ([`AccountNames::supplied`]): a pool buffer and the
/// bytes of it in use (`None` for a NULL string).
pub type SuppliedString = Option<(PoolArray<u8>, usize)>;

impl AccountNames {
    /// Two empty inline buffers, not looked up yet; retry buffers are allocated with `tag`.
    #[must_use]
    pub const fn new(tag: PoolTag) -> Self {
        AccountNames {
            name: AccountString::INLINE,
            domain: AccountString::INLINE,
            lookup: None,
            tag,
        }
    }

    /// Strings a caller supplies (a test run's input): the lookup, if `looked_up` is false,
    /// writes into them first (and a NULL one always needs the retry); if `looked_up` is true
    /// they are the result, a failed one (`STATUS_UNSUCCESSFUL`) unless both have a buffer. A
    /// length beyond its buffer is cut to it.
    #[must_use]
    pub fn supplied(
        name: SuppliedString,
        domain: SuppliedString,
        looked_up: bool,
        tag: PoolTag,
    ) -> Self {
        let string = |supplied: SuppliedString| match supplied {
            None => AccountString::NONE,
            Some((pool, length)) => {
                let mut string = AccountString {
                    buffer: Buffer::Pool(pool),
                    length: 0,
                };
                // INVARIANT: at most the capacity.
                string.length = u16::try_from(length)
                    .unwrap_or(u16::MAX)
                    .min(string.capacity());
                string
            }
        };
        let (name, domain) = (string(name), string(domain));
        let both = !matches!(name.buffer, Buffer::None) && !matches!(domain.buffer, Buffer::None);
        AccountNames {
            name,
            domain,
            lookup: looked_up.then_some(if both {
                Ok(())
            } else {
                Err(STATUS_UNSUCCESSFUL)
            }),
            tag,
        }
    }

    /// Whether the lookup was made (or its result supplied).
    #[must_use]
    pub fn looked_up(&self) -> bool {
        self.lookup.is_some()
    }

    /// Looks the account of `sid` up, the first time only; later calls return the first
    /// result.
    ///
    /// # Errors
    /// The failure's status: [`lookup_account`]'s (`STATUS_INVALID_SID` for a `sid` that is
    /// not a whole valid SID), `STATUS_BUFFER_OVERFLOW` for a size above 65535 bytes,
    /// `STATUS_INSUFFICIENT_RESOURCES` when a retry buffer cannot be allocated,
    /// `STATUS_BUFFER_TOO_SMALL` when the retry is still too small. Both strings are then
    /// cleared (NULL). `STATUS_INVALID_DEVICE_STATE` above PASSIVE_LEVEL, with a trace event
    /// (Warning, keyword `PROCESS`): the lookup needs PASSIVE_LEVEL, so none is made, and
    /// nothing is recorded (a later call at PASSIVE_LEVEL looks up).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL to look up (`SecLookupAccountSid`'s); any level once a result is
    /// recorded. A helper may run higher, for example when a profile request fires the hook
    /// at DISPATCH_LEVEL.
    pub fn resolve(&mut self, sid: &[u8]) -> core::result::Result<(), NTSTATUS> {
        if let Some(result) = self.lookup {
            return result;
        }
        if KeGetCurrentIrql() != PASSIVE_LEVEL {
            ebpf_ext_trace::trace_message_status!(
                ebpf_ext_trace::Level::Warning,
                ebpf_ext_trace::keyword::PROCESS,
                "account lookup refused above PASSIVE_LEVEL",
                STATUS_INVALID_DEVICE_STATE
            );
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let result = self.lookup_with_retry(sid);
        if result.is_err() {
            (self.name, self.domain) = (AccountString::NONE, AccountString::NONE);
        }
        self.lookup = Some(result);
        result
    }

    fn lookup_with_retry(&mut self, sid: &[u8]) -> core::result::Result<(), NTSTATUS> {
        let needed = match self.lookup_into_buffers(sid) {
            Ok(()) => return Ok(()),
            Err(AccountLookupError::Failed(status)) => return Err(status),
            Err(AccountLookupError::BufferTooSmall { name, domain }) => [name, domain],
        };
        if needed.iter().any(|&size| size > MAX_STRING_BYTES) {
            return Err(STATUS_BUFFER_OVERFLOW);
        }
        for (string, size) in [&mut self.name, &mut self.domain].into_iter().zip(needed) {
            if size > u32::from(string.capacity()) {
                let pool = PoolArray::try_new(size as usize, self.tag)
                    .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
                // INVARIANT: length 0.
                *string = AccountString {
                    buffer: Buffer::Pool(pool),
                    length: 0,
                };
            }
        }
        self.lookup_into_buffers(sid).map_err(|error| match error {
            AccountLookupError::Failed(status) => status,
            AccountLookupError::BufferTooSmall { .. } => STATUS_BUFFER_TOO_SMALL,
        })
    }

    /// One `SecLookupAccountSid` into the current buffers; on success their lengths are set.
    fn lookup_into_buffers(&mut self, sid: &[u8]) -> core::result::Result<(), AccountLookupError> {
        let (mut name, mut domain) = (self.name.raw(), self.domain.raw());
        // SAFETY: each string is `raw()` of a buffer owned here (MaximumLength writable bytes,
        // or NULL with 0), neither moved nor touched until the call returns.
        unsafe { lookup_account(sid, &mut name, &mut domain) }?;
        for (string, raw) in [(&mut self.name, name), (&mut self.domain, domain)] {
            // INVARIANT: cut to the capacity.
            string.length = raw.Length.min(string.capacity());
        }
        Ok(())
    }

    /// The name string's bytes in use (UTF-16LE, no terminator), `None` if it is NULL: after
    /// a successful [`AccountNames::resolve`], the account name; before, what was supplied
    /// (empty for [`AccountNames::new`]); after a failed lookup, `None`. A failed result that
    /// was supplied ([`AccountNames::supplied`] with `looked_up` and a NULL string) keeps the
    /// strings as supplied, the one that has a buffer included.
    #[must_use]
    pub fn name(&self) -> Option<&[u8]> {
        self.name.bytes()
    }

    /// The domain string's bytes in use, as [`AccountNames::name`].
    #[must_use]
    pub fn domain(&self) -> Option<&[u8]> {
        self.domain.bytes()
    }

    /// The name and domain as `UNICODE_STRING`s (current lengths and capacities; NULL when
    /// cleared), for a context whose binary layout carries them. The pointers are this value's
    /// buffers: valid only while it is neither moved nor changed; Rust code reads the strings
    /// through [`AccountNames::name`] and [`AccountNames::domain`] instead.
    pub fn strings(&mut self) -> [UNICODE_STRING; 2] {
        [self.name.raw(), self.domain.raw()]
    }
}
