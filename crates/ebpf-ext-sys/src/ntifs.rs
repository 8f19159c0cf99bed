//! Security declarations (`winnt.h`, `ntifs.h`): absolute security descriptors, ACLs,
//! access-allowed ACEs and well-known SIDs, and the exports that build a DACL and apply it to
//! a device object — what `IoCreateDeviceSecure` (a static-library routine in `wdmsec.lib`)
//! does, done with kernel exports only; a process's primary token and its user SID; a
//! process's exit time.

use core::ffi::c_void;

use crate::ntdef::{BOOLEAN, NTSTATUS};

/// `SECURITY_DESCRIPTOR_REVISION`.
pub const SECURITY_DESCRIPTOR_REVISION: u32 = 1;
/// `ACL_REVISION`.
pub const ACL_REVISION: u32 = 2;
/// `ACCESS_ALLOWED_ACE_TYPE`.
pub const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
/// `DACL_SECURITY_INFORMATION`.
pub const DACL_SECURITY_INFORMATION: u32 = 0x4;
/// `SE_DACL_PRESENT` security-descriptor control bit.
pub const SE_DACL_PRESENT: u16 = 0x0004;
/// `SE_DACL_PROTECTED` security-descriptor control bit.
pub const SE_DACL_PROTECTED: u16 = 0x1000;
/// `SE_SELF_RELATIVE` security-descriptor control bit.
pub const SE_SELF_RELATIVE: u16 = 0x8000;
/// `GENERIC_ALL` access right.
pub const GENERIC_ALL: u32 = 0x1000_0000;
/// `GENERIC_READ` access right.
pub const GENERIC_READ: u32 = 0x8000_0000;
/// `GENERIC_WRITE` access right.
pub const GENERIC_WRITE: u32 = 0x4000_0000;
/// `FILE_ALL_ACCESS`: what `GENERIC_ALL` maps to for files and devices.
pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;

/// `SECURITY_DESCRIPTOR` in absolute form (40 bytes): the pointers refer to the owner,
/// group, SACL and DACL, which the descriptor does not own.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SECURITY_DESCRIPTOR {
    /// `SECURITY_DESCRIPTOR_REVISION`.
    pub Revision: u8,
    /// Reserved zero.
    pub Sbz1: u8,
    /// `SE_*` control bits.
    pub Control: u16,
    /// Owner SID or NULL.
    pub Owner: *mut c_void,
    /// Group SID or NULL.
    pub Group: *mut c_void,
    /// System ACL or NULL.
    pub Sacl: *mut ACL,
    /// Discretionary ACL or NULL (NULL with `SE_DACL_PRESENT` grants everyone everything).
    pub Dacl: *mut ACL,
}

impl SECURITY_DESCRIPTOR {
    /// What `RtlCreateSecurityDescriptor` produces: revision 1, no control bits, no owner,
    /// group, SACL or DACL.
    pub const EMPTY: SECURITY_DESCRIPTOR = SECURITY_DESCRIPTOR {
        Revision: 1,
        Sbz1: 0,
        Control: 0,
        Owner: core::ptr::null_mut(),
        Group: core::ptr::null_mut(),
        Sacl: core::ptr::null_mut(),
        Dacl: core::ptr::null_mut(),
    };
}

/// `ACL` header (8 bytes); the ACEs follow it in the same buffer of `AclSize` bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ACL {
    /// `ACL_REVISION`.
    pub AclRevision: u8,
    /// Reserved zero.
    pub Sbz1: u8,
    /// Size of the ACL buffer including this header.
    pub AclSize: u16,
    /// Number of ACEs.
    pub AceCount: u16,
    /// Reserved zero.
    pub Sbz2: u16,
}

/// `ACE_HEADER`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ACE_HEADER {
    /// `ACCESS_ALLOWED_ACE_TYPE`, ...
    pub AceType: u8,
    /// Inheritance flags.
    pub AceFlags: u8,
    /// Size of the ACE including the SID.
    pub AceSize: u16,
}

/// `ACCESS_ALLOWED_ACE`: header, access mask, then the SID starting at `SidStart`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ACCESS_ALLOWED_ACE {
    /// The header.
    pub Header: ACE_HEADER,
    /// Granted rights.
    pub Mask: u32,
    /// First four bytes of the SID.
    pub SidStart: u32,
}

/// A SID with `N` sub-authorities, laid out as the kernel's variable-length `SID`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SID<const N: usize> {
    /// `SID_REVISION` (1).
    pub Revision: u8,
    /// `N`.
    pub SubAuthorityCount: u8,
    /// The identifier authority, big-endian.
    pub IdentifierAuthority: [u8; 6],
    /// Sub-authorities.
    pub SubAuthority: [u32; N],
}

impl<const N: usize> SID<N> {
    /// The SID `S-1-<authority>-<sub authorities>`.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "N is 1..=15 in practice")]
    pub const fn new(authority: u8, sub_authorities: [u32; N]) -> Self {
        SID {
            Revision: 1,
            SubAuthorityCount: N as u8,
            IdentifierAuthority: [0, 0, 0, 0, 0, authority],
            SubAuthority: sub_authorities,
        }
    }

    /// Its length in bytes (`RtlLengthSid`).
    #[must_use]
    pub const fn length(&self) -> usize {
        8 + 4 * N
    }

    /// Its bytes, as the kernel stores a SID.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `repr(C)` bytes then `u32`s at offset 8 (4-aligned): no padding, so all
        // `length()` bytes are initialised and belong to `self`.
        unsafe {
            core::slice::from_raw_parts(core::ptr::from_ref(self).cast::<u8>(), self.length())
        }
    }
}

/// `SECURITY_NT_AUTHORITY` (5).
pub const SECURITY_NT_AUTHORITY: u8 = 5;
/// `SECURITY_WORLD_SID_AUTHORITY` (1).
pub const SECURITY_WORLD_SID_AUTHORITY: u8 = 1;
/// LocalSystem, `S-1-5-18` (`SeExports->SeLocalSystemSid`).
pub const LOCAL_SYSTEM_SID: SID<1> = SID::new(SECURITY_NT_AUTHORITY, [18]);
/// BUILTIN\Administrators, `S-1-5-32-544` (`SeExports->SeAliasAdminsSid`).
pub const ALIAS_ADMINS_SID: SID<2> = SID::new(SECURITY_NT_AUTHORITY, [32, 544]);
/// BUILTIN\Users, `S-1-5-32-545`.
pub const ALIAS_USERS_SID: SID<2> = SID::new(SECURITY_NT_AUTHORITY, [32, 545]);
/// NT AUTHORITY\Authenticated Users, `S-1-5-11`.
pub const AUTHENTICATED_USERS_SID: SID<1> = SID::new(SECURITY_NT_AUTHORITY, [11]);
/// Everyone, `S-1-1-0`.
pub const WORLD_SID: SID<1> = SID::new(SECURITY_WORLD_SID_AUTHORITY, [0]);

/// `SECURITY_MAX_SID_SIZE`: the largest SID (15 sub-authorities), 68 bytes.
pub const SECURITY_MAX_SID_SIZE: usize = 68;

/// `TOKEN_INFORMATION_CLASS` (a C enum: 4 bytes).
pub type TOKEN_INFORMATION_CLASS = i32;
/// `TokenUser`: `SeQueryInformationToken` returns a [`TOKEN_USER`].
pub const TokenUser: TOKEN_INFORMATION_CLASS = 1;

/// `SID_NAME_USE` (a C enum: 4 bytes): what kind of account a SID names.
pub type SID_NAME_USE = i32;
/// `SidTypeUser`.
pub const SidTypeUser: SID_NAME_USE = 1;
/// `SidTypeWellKnownGroup` (LocalSystem's type, among others).
pub const SidTypeWellKnownGroup: SID_NAME_USE = 5;

/// `SID_AND_ATTRIBUTES` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SID_AND_ATTRIBUTES {
    /// The SID (`PSID`).
    pub Sid: *mut c_void,
    /// `SE_GROUP_*` attributes.
    pub Attributes: u32,
}

/// `TOKEN_USER`: what `SeQueryInformationToken(TokenUser)` returns; the SID it points to
/// lies in the same pool block, freed with `ExFreePool`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TOKEN_USER {
    /// The token's user.
    pub User: SID_AND_ATTRIBUTES,
}

kernel_imports! {
    module = "ntoskrnl.exe";

    /// [`RtlCreateSecurityDescriptor`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-rtlcreatesecuritydescriptor):
    /// initialises an absolute descriptor with nothing in it. STATUS_UNKNOWN_REVISION unless
    /// `Revision` is `SECURITY_DESCRIPTOR_REVISION`. PASSIVE_LEVEL.
    pub fn RtlCreateSecurityDescriptor(SecurityDescriptor: *mut SECURITY_DESCRIPTOR, Revision: u32) -> NTSTATUS;
    /// [`RtlCreateAcl`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-rtlcreateacl):
    /// initialises an empty ACL in a buffer of `AclLength` bytes. STATUS_INVALID_PARAMETER or
    /// STATUS_BUFFER_TOO_SMALL for a bad length, STATUS_UNKNOWN_REVISION. PASSIVE_LEVEL.
    pub fn RtlCreateAcl(Acl: *mut ACL, AclLength: u32, AclRevision: u32) -> NTSTATUS;
    /// [`RtlAddAccessAllowedAce`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-rtladdaccessallowedace):
    /// appends an access-allowed ACE for `Sid`. STATUS_ALLOTTED_SPACE_EXCEEDED when the ACL
    /// buffer is full, STATUS_INVALID_SID, STATUS_REVISION_MISMATCH. PASSIVE_LEVEL.
    pub fn RtlAddAccessAllowedAce(Acl: *mut ACL, AceRevision: u32, AccessMask: u32, Sid: *const c_void) -> NTSTATUS;
    /// [`RtlSetDaclSecurityDescriptor`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-rtlsetdaclsecuritydescriptor):
    /// sets the descriptor's DACL (referenced, not copied). PASSIVE_LEVEL.
    pub fn RtlSetDaclSecurityDescriptor(SecurityDescriptor: *mut SECURITY_DESCRIPTOR, DaclPresent: BOOLEAN, Dacl: *mut ACL, DaclDefaulted: BOOLEAN) -> NTSTATUS;
    /// `ObSetSecurityObjectByPointer` (exported, undocumented): applies the parts of
    /// `SecurityDescriptor` that `SecurityInformation` names to an object, e.g. a device
    /// object just created. ≤ APC_LEVEL (it is paged code).
    pub fn ObSetSecurityObjectByPointer(Object: *mut c_void, SecurityInformation: u32, SecurityDescriptor: *mut SECURITY_DESCRIPTOR) -> NTSTATUS;
    /// [`PsGetProcessExitTime`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-psgetprocessexittime):
    /// the exit time of the current process (the `LARGE_INTEGER` comes back in RAX); in a
    /// process notify routine called for an exit, the exiting process's. IRQL ≤
    /// DISPATCH_LEVEL.
    pub fn PsGetProcessExitTime() -> i64;
    /// [`PsReferencePrimaryToken`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-psreferenceprimarytoken):
    /// references and returns the process's primary token (`PACCESS_TOKEN`); release it with
    /// `PsDereferencePrimaryToken`. IRQL ≤ APC_LEVEL.
    pub fn PsReferencePrimaryToken(Process: *mut c_void) -> *mut c_void;
    /// [`PsDereferencePrimaryToken`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-psdereferenceprimarytoken):
    /// releases a reference `PsReferencePrimaryToken` took. IRQL ≤ APC_LEVEL.
    pub fn PsDereferencePrimaryToken(PrimaryToken: *mut c_void);
    /// [`SeQueryInformationToken`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-sequeryinformationtoken):
    /// allocates and fills the requested information (for [`TokenUser`] a [`TOKEN_USER`]);
    /// the caller frees it with `ExFreePool`. PASSIVE_LEVEL.
    pub fn SeQueryInformationToken(Token: *mut c_void, TokenInformationClass: TOKEN_INFORMATION_CLASS, TokenInformation: *mut *mut c_void) -> NTSTATUS;
    /// [`RtlValidSid`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-rtlvalidsid):
    /// whether `Sid` is structurally valid (revision 1, at most 15 sub-authorities). IRQL ≤
    /// APC_LEVEL.
    pub fn RtlValidSid(Sid: *const c_void) -> BOOLEAN;
    /// [`RtlLengthSid`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-rtllengthsid):
    /// the length in bytes of a valid SID (undefined for an invalid one: check it with
    /// `RtlValidSid` first). IRQL ≤ APC_LEVEL.
    pub fn RtlLengthSid(Sid: *const c_void) -> u32;
    /// [`RtlCopySid`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-rtlcopysid):
    /// copies a SID into a buffer of `DestinationSidLength` bytes; STATUS_BUFFER_TOO_SMALL if
    /// it does not fit. IRQL ≤ APC_LEVEL.
    pub fn RtlCopySid(DestinationSidLength: u32, DestinationSid: *mut c_void, SourceSid: *const c_void) -> NTSTATUS;
}
