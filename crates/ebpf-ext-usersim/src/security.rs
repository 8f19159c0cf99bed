//! A process's primary token and its user SID, SID routines, and account lookup
//! (`SecLookupAccountSid`, which `ksecdd.sys` exports).
//!
//! - `PsReferencePrimaryToken` returns the token of a live process object and counts the
//!   reference; `PsDereferencePrimaryToken` releases it (releasing one not held is a bug
//!   check), and references still held are a leak.
//! - `SeQueryInformationToken` supports `TokenUser` only: a `TOKEN_USER` and the SID after it
//!   in one pool block (paged, tag `SeTu`), which the caller frees with `ExFreePool`; it
//!   counts as an allocation, so allocation fault sweeps reach it.
//! - `RtlValidSid`, `RtlLengthSid` and `RtlCopySid` bug-check above APC_LEVEL, as documented;
//!   `RtlLengthSid` and `RtlCopySid` also bug-check for a SID that is not valid (their result
//!   is undefined on Windows).
//! - `SecLookupAccountSid` looks the SID up in the kernel's account table, which starts with
//!   the well-known service accounts (S-1-5-18 is `SYSTEM` in `NT AUTHORITY`) and grows with
//!   [`Kernel::add_account`]. Sizes are in bytes without a terminator; when either buffer is
//!   too small it returns STATUS_BUFFER_TOO_SMALL with both needed sizes. A size larger than
//!   its string's `MaximumLength` is a bug check: the caller offers bytes its buffer does not
//!   have. It can be fault-injected (it fails on Windows when the LSA cannot be reached):
//!   STATUS_NO_MEMORY, or the status a [`Fault::CallWithStatus`](crate::Fault::CallWithStatus)
//!   gives.

use core::ffi::c_void;
use core::ptr;
use std::sync::Arc;

use ebpf_ext_sys::ntdef::{BOOLEAN, FALSE, NTSTATUS, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    SID_AND_ATTRIBUTES, SID_NAME_USE, SidTypeUser, SidTypeWellKnownGroup, TOKEN_INFORMATION_CLASS,
    TOKEN_USER, TokenUser,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_INVALID_SID, STATUS_NO_MEMORY, STATUS_NONE_MAPPED, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, PASSIVE_LEVEL, POOL_FLAG_PAGED,
};

use crate::io::read_sid;
use crate::kernel::{Kernel, bugcheck, call_fault_status, lock, require_irql, with_kernel};
use crate::pool::pool_alloc;
use crate::process::process_object;

/// Pool tag of the `TOKEN_USER` blocks `SeQueryInformationToken` returns (usersim's own).
const TOKEN_INFORMATION_TAG: u32 = u32::from_le_bytes(*b"SeTu");

/// One account `SecLookupAccountSid` knows.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    sid: Vec<u8>,
    name: Vec<u16>,
    domain: Vec<u16>,
    kind: SID_NAME_USE,
}

fn account(sid: &[u8], name: &str, domain: &str, kind: SID_NAME_USE) -> Account {
    Account {
        sid: sid.to_vec(),
        name: name.encode_utf16().collect(),
        domain: domain.encode_utf16().collect(),
        kind,
    }
}

/// The accounts every kernel starts with: LocalSystem, LocalService and NetworkService.
pub(crate) fn well_known_accounts() -> Vec<Account> {
    let nt = |rid: u8| [1, 1, 0, 0, 0, 0, 0, 5, rid, 0, 0, 0];
    vec![
        account(&nt(18), "SYSTEM", "NT AUTHORITY", SidTypeWellKnownGroup),
        account(
            &nt(19),
            "LOCAL SERVICE",
            "NT AUTHORITY",
            SidTypeWellKnownGroup,
        ),
        account(
            &nt(20),
            "NETWORK SERVICE",
            "NT AUTHORITY",
            SidTypeWellKnownGroup,
        ),
    ]
}

impl Kernel {
    /// Adds (or replaces) a user account `SecLookupAccountSid` resolves: `sid` (its bytes)
    /// is `domain\name`.
    ///
    /// # Panics
    /// If `sid` is not a valid SID.
    pub fn add_account(&self, sid: &[u8], name: &str, domain: &str) {
        // SAFETY: `sid` is a readable slice; read_sid reads its header, then (if valid) the
        // length it gives, which the assertion below checks against the slice.
        let parsed = (sid.len() >= 8)
            .then(|| unsafe { read_sid(sid.as_ptr()) })
            .flatten();
        assert!(parsed.as_deref() == Some(sid), "not a valid SID: {sid:?}");
        let mut state = lock(&self.inner().process);
        state.accounts.retain(|a| a.sid != sid);
        state.accounts.push(account(sid, name, domain, SidTypeUser));
    }
}

/// `PsReferencePrimaryToken`.
///
/// # Safety
/// Kernel routine; `Process` is a process object the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsReferencePrimaryToken(Process: *mut c_void) -> *mut c_void {
    const API: &str = "PsReferencePrimaryToken";
    require_irql(API, PASSIVE_LEVEL);
    let token = Arc::clone(&process_object(API, Process).token);
    let address = Arc::as_ptr(&token) as usize;
    with_kernel(API, |k| {
        lock(&k.process)
            .tokens
            .entry(address)
            .or_insert((token, 0))
            .1 += 1;
    });
    address as *mut c_void
}

/// `PsDereferencePrimaryToken`.
///
/// # Safety
/// Kernel routine; `PrimaryToken` is a reference `PsReferencePrimaryToken` returned.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsDereferencePrimaryToken(PrimaryToken: *mut c_void) {
    const API: &str = "PsDereferencePrimaryToken";
    require_irql(API, APC_LEVEL);
    let released = with_kernel(API, |k| {
        let mut state = lock(&k.process);
        let address = PrimaryToken as usize;
        let Some(entry) = state.tokens.get_mut(&address) else {
            return false;
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            state.tokens.remove(&address);
        }
        true
    });
    if !released {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [PrimaryToken as u64, 0, 0, 0],
            "primary token released more often than referenced",
        );
    }
}

/// The token a referenced `PACCESS_TOKEN` stands for.
fn token(api: &'static str, token: *mut c_void) -> Arc<crate::process::Token> {
    let found = with_kernel(api, |k| {
        lock(&k.process)
            .tokens
            .get(&(token as usize))
            .map(|(t, _)| Arc::clone(t))
    });
    found.unwrap_or_else(|| {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [token as u64, 0, 0, 0],
            "not a referenced access token",
        )
    })
}

/// `SeQueryInformationToken` (`TokenUser` only).
///
/// # Safety
/// Kernel routine; `Token` is a referenced token; `TokenInformation` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn SeQueryInformationToken(
    Token: *mut c_void,
    TokenInformationClass: TOKEN_INFORMATION_CLASS,
    TokenInformation: *mut *mut c_void,
) -> NTSTATUS {
    const API: &str = "SeQueryInformationToken";
    require_irql(API, PASSIVE_LEVEL);
    let user = token(API, Token).user.clone();
    // SAFETY: the caller passes a writable slot.
    unsafe { TokenInformation.write(ptr::null_mut()) };
    if TokenInformationClass != TokenUser {
        return STATUS_INVALID_PARAMETER;
    }
    let header = size_of::<TOKEN_USER>();
    let block = pool_alloc(
        API,
        POOL_FLAG_PAGED,
        header + user.len(),
        TOKEN_INFORMATION_TAG,
    );
    if block.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let sid = block.cast::<u8>().wrapping_add(header);
    // SAFETY: `header + user.len()` writable bytes, 16-aligned: the TOKEN_USER, then the SID.
    unsafe {
        ptr::copy_nonoverlapping(user.as_ptr(), sid, user.len());
    }
    // SAFETY: as above.
    unsafe {
        block.cast::<TOKEN_USER>().write(TOKEN_USER {
            User: SID_AND_ATTRIBUTES {
                Sid: sid.cast(),
                Attributes: 0,
            },
        });
    }
    // SAFETY: as above.
    unsafe { TokenInformation.write(block) };
    STATUS_SUCCESS
}

/// `RtlValidSid`.
///
/// # Safety
/// Kernel routine; `Sid` points to a readable SID header (and the whole SID if it is valid).
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlValidSid(Sid: *const c_void) -> BOOLEAN {
    const API: &str = "RtlValidSid";
    require_irql(API, APC_LEVEL);
    with_kernel(API, |_| ());
    // SAFETY: the caller's contract.
    if unsafe { read_sid(Sid.cast()) }.is_some() {
        TRUE
    } else {
        FALSE
    }
}

/// The bytes of a SID the caller says is valid, or a bug check naming `api`.
///
/// # Safety
/// `sid` points to a readable SID header (and the whole SID if it is valid).
unsafe fn valid_sid(api: &'static str, sid: *const c_void) -> Vec<u8> {
    // SAFETY: the caller's contract.
    unsafe { read_sid(sid.cast()) }.unwrap_or_else(|| {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [sid as u64, 0, 0, 0],
            "not a valid SID (check it with RtlValidSid first)",
        )
    })
}

/// `RtlLengthSid`.
///
/// # Safety
/// Kernel routine; `Sid` is a valid SID.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlLengthSid(Sid: *const c_void) -> u32 {
    const API: &str = "RtlLengthSid";
    require_irql(API, APC_LEVEL);
    with_kernel(API, |_| ());
    // SAFETY: the caller's contract.
    let sid = unsafe { valid_sid(API, Sid) };
    u32::try_from(sid.len()).unwrap_or(u32::MAX)
}

/// `RtlCopySid`.
///
/// # Safety
/// Kernel routine; `SourceSid` is a valid SID; `DestinationSid` has
/// `DestinationSidLength` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlCopySid(
    DestinationSidLength: u32,
    DestinationSid: *mut c_void,
    SourceSid: *const c_void,
) -> NTSTATUS {
    const API: &str = "RtlCopySid";
    require_irql(API, APC_LEVEL);
    with_kernel(API, |_| ());
    // SAFETY: the caller's contract.
    let sid = unsafe { valid_sid(API, SourceSid) };
    if (DestinationSidLength as usize) < sid.len() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the destination holds `DestinationSidLength` ≥ `sid.len()` bytes.
    unsafe { ptr::copy_nonoverlapping(sid.as_ptr(), DestinationSid.cast(), sid.len()) };
    STATUS_SUCCESS
}

/// Byte size of a UTF-16 string, as a ULONG.
fn bytes(units: &[u16]) -> u32 {
    u32::try_from(units.len() * 2).unwrap_or(u32::MAX)
}

/// Copies `units` into `string` (which the caller said holds `capacity` bytes).
///
/// # Safety
/// `string` is writable and its buffer has at least `units.len() * 2` writable bytes.
unsafe fn fill(string: *mut UNICODE_STRING, units: &[u16]) {
    // SAFETY: the caller's contract.
    let string = unsafe { &mut *string };
    // SAFETY: as above: the buffer holds the bytes.
    unsafe { ptr::copy_nonoverlapping(units.as_ptr(), string.Buffer, units.len()) };
    string.Length = u16::try_from(units.len() * 2).unwrap_or(u16::MAX);
}

/// Bug-checks naming `api` if the caller offers `string` more bytes (`size`) than its
/// `MaximumLength`: writing `size` bytes would run past its buffer.
///
/// # Safety
/// `size` and `string` are NULL or readable.
unsafe fn check_room(api: &'static str, size: *const u32, string: *const UNICODE_STRING) {
    if size.is_null() || string.is_null() {
        return;
    }
    // SAFETY: readable (the caller's contract), checked non-NULL.
    let size_value = unsafe { *size };
    // SAFETY: as above.
    let maximum = unsafe { (*string).MaximumLength };
    if size_value > u32::from(maximum) {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [string as u64, u64::from(size_value), u64::from(maximum), 0],
            "a string's size argument exceeds its MaximumLength: the buffer does not have the bytes offered",
        );
    }
}

/// `SecLookupAccountSid`.
///
/// # Safety
/// Kernel routine; `Sid` points to a readable SID; `NameSize`, `NameBuffer` and `NameUse`
/// are writable; `DomainSize` and `DomainBuffer` are both NULL or both writable; each
/// string's `Buffer` has its `MaximumLength` writable bytes, and each size argument is at
/// most its string's `MaximumLength` (else a bug check).
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn SecLookupAccountSid(
    Sid: *const c_void,
    NameSize: *mut u32,
    NameBuffer: *mut UNICODE_STRING,
    DomainSize: *mut u32,
    DomainBuffer: *mut UNICODE_STRING,
    NameUse: *mut SID_NAME_USE,
) -> NTSTATUS {
    const API: &str = "SecLookupAccountSid";
    require_irql(API, PASSIVE_LEVEL);
    // SAFETY: each pair is NULL or readable (the caller's contract).
    unsafe {
        check_room(API, NameSize, NameBuffer);
    }
    // SAFETY: as above.
    unsafe {
        check_room(API, DomainSize, DomainBuffer);
    }
    if let Some(status) = with_kernel(API, |k| call_fault_status(k, API, STATUS_NO_MEMORY)) {
        return status;
    }
    // SAFETY: the caller's contract.
    let Some(sid) = (unsafe { read_sid(Sid.cast()) }) else {
        return STATUS_INVALID_SID;
    };
    let Some(found) = with_kernel(API, |k| {
        lock(&k.process)
            .accounts
            .iter()
            .find(|a| a.sid == sid)
            .cloned()
    }) else {
        return STATUS_NONE_MAPPED;
    };
    if NameSize.is_null() || NameBuffer.is_null() || NameUse.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let with_domain = !DomainBuffer.is_null() && !DomainSize.is_null();
    // SAFETY: readable per the caller's contract.
    let name_room = unsafe { *NameSize };
    let domain_room = if with_domain {
        // SAFETY: as above, when a domain is asked for.
        unsafe { *DomainSize }
    } else {
        0
    };
    let (name_needed, domain_needed) = (
        bytes(&found.name),
        if with_domain { bytes(&found.domain) } else { 0 },
    );
    // SAFETY: writable per the caller's contract.
    unsafe { *NameSize = name_needed };
    if !DomainSize.is_null() {
        // SAFETY: as above.
        unsafe { *DomainSize = domain_needed };
    }
    if name_needed > name_room || domain_needed > domain_room {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the name buffer holds `name_room` ≥ `name_needed` bytes.
    unsafe { fill(NameBuffer, &found.name) };
    if with_domain {
        // SAFETY: as above for the domain.
        unsafe { fill(DomainBuffer, &found.domain) };
    }
    // SAFETY: writable.
    unsafe { *NameUse = found.kind };
    STATUS_SUCCESS
}
