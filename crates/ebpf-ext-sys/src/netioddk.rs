//! Network Module Registrar declarations (`netioddk.h`, exported by `NETIO.SYS`).

use core::ffi::c_void;

use crate::ntdef::{GUID, HANDLE, LUID, NTSTATUS};

/// `NPIID`: an NPI identifier.
pub type NPIID = GUID;
/// `NPI_MODULEID_TYPE`.
pub type NPI_MODULEID_TYPE = i32;
/// `MIT_GUID`: the module id is a GUID.
pub const MIT_GUID: NPI_MODULEID_TYPE = 1;
/// `MIT_IF_LUID`: the module id is an interface LUID.
pub const MIT_IF_LUID: NPI_MODULEID_TYPE = 2;

/// The `Guid` / `IfLuid` union of `NPI_MODULEID`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union NPI_MODULEID_0 {
    /// Module GUID (`MIT_GUID`).
    pub Guid: GUID,
    /// Interface LUID (`MIT_IF_LUID`).
    pub IfLuid: LUID,
}

/// `NPI_MODULEID` (24 bytes, 4-byte aligned).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_MODULEID {
    /// `sizeof(NPI_MODULEID)` (24).
    pub Length: u16,
    /// `MIT_GUID` or `MIT_IF_LUID`.
    pub Type: NPI_MODULEID_TYPE,
    /// The id.
    pub u: NPI_MODULEID_0,
}

impl NPI_MODULEID {
    /// A `MIT_GUID` module id, as every eBPF extension builds them.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "the struct is 24 bytes")]
    pub const fn from_guid(guid: GUID) -> Self {
        NPI_MODULEID {
            Length: core::mem::size_of::<NPI_MODULEID>() as u16,
            Type: MIT_GUID,
            u: NPI_MODULEID_0 { Guid: guid },
        }
    }

    /// The GUID of a `MIT_GUID` module id.
    #[must_use]
    pub const fn guid(&self) -> Option<GUID> {
        if self.Type == MIT_GUID {
            // SAFETY: `Type == MIT_GUID` says the `Guid` member is the one written; both union
            // members are plain data, so reading either is defined anyway.
            Some(unsafe { self.u.Guid })
        } else {
            None
        }
    }
}

/// `NPI_REGISTRATION_INSTANCE` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NPI_REGISTRATION_INSTANCE {
    /// 0.
    pub Version: u16,
    /// `sizeof(NPI_REGISTRATION_INSTANCE)` (40).
    pub Size: u16,
    /// The NPI this module implements.
    pub NpiId: *const NPIID,
    /// The module's identity.
    pub ModuleId: *const NPI_MODULEID,
    /// Instance number.
    pub Number: u32,
    /// NPI-specific data (for eBPF: attach-provider data, program data, attach parameters).
    pub NpiSpecificCharacteristics: *const c_void,
}

/// `NPI_CLIENT_ATTACH_PROVIDER_FN`, called at PASSIVE_LEVEL.
pub type NPI_CLIENT_ATTACH_PROVIDER_FN = unsafe extern "win64" fn(
    NmrBindingHandle: HANDLE,
    ClientContext: *mut c_void,
    ProviderRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS;
/// `NPI_CLIENT_DETACH_PROVIDER_FN`, called at IRQL ≤ DISPATCH_LEVEL.
pub type NPI_CLIENT_DETACH_PROVIDER_FN =
    unsafe extern "win64" fn(ClientBindingContext: *mut c_void) -> NTSTATUS;
/// `NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN`, called at IRQL ≤ DISPATCH_LEVEL.
pub type NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN =
    unsafe extern "win64" fn(ClientBindingContext: *mut c_void);
/// `NPI_PROVIDER_ATTACH_CLIENT_FN`, called at PASSIVE_LEVEL.
pub type NPI_PROVIDER_ATTACH_CLIENT_FN = unsafe extern "win64" fn(
    NmrBindingHandle: HANDLE,
    ProviderContext: *mut c_void,
    ClientRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
    ClientBindingContext: *mut c_void,
    ClientDispatch: *const c_void,
    ProviderBindingContext: *mut *mut c_void,
    ProviderDispatch: *mut *const c_void,
) -> NTSTATUS;
/// `NPI_PROVIDER_DETACH_CLIENT_FN`, called at IRQL ≤ DISPATCH_LEVEL.
pub type NPI_PROVIDER_DETACH_CLIENT_FN =
    unsafe extern "win64" fn(ProviderBindingContext: *mut c_void) -> NTSTATUS;
/// `NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN`, called at IRQL ≤ DISPATCH_LEVEL.
pub type NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN =
    unsafe extern "win64" fn(ProviderBindingContext: *mut c_void);

/// `NPI_CLIENT_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_CLIENT_CHARACTERISTICS {
    /// 0.
    pub Version: u16,
    /// `sizeof(NPI_CLIENT_CHARACTERISTICS)` (72).
    pub Length: u16,
    /// Attach callback.
    pub ClientAttachProvider: Option<NPI_CLIENT_ATTACH_PROVIDER_FN>,
    /// Detach callback.
    pub ClientDetachProvider: Option<NPI_CLIENT_DETACH_PROVIDER_FN>,
    /// Cleanup callback (may be NULL).
    pub ClientCleanupBindingContext: Option<NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN>,
    /// Registration instance.
    pub ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

/// `NPI_PROVIDER_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_PROVIDER_CHARACTERISTICS {
    /// 0.
    pub Version: u16,
    /// `sizeof(NPI_PROVIDER_CHARACTERISTICS)` (72).
    pub Length: u16,
    /// Attach callback.
    pub ProviderAttachClient: Option<NPI_PROVIDER_ATTACH_CLIENT_FN>,
    /// Detach callback.
    pub ProviderDetachClient: Option<NPI_PROVIDER_DETACH_CLIENT_FN>,
    /// Cleanup callback (may be NULL).
    pub ProviderCleanupBindingContext: Option<NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN>,
    /// Registration instance.
    pub ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

kernel_imports! {
    module = "NETIO.SYS";

    /// [`NmrRegisterProvider`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrregisterprovider):
    /// the characteristics and context must stay valid until deregistration completes.
    /// IRQL = PASSIVE_LEVEL.
    pub fn NmrRegisterProvider(ProviderCharacteristics: *const NPI_PROVIDER_CHARACTERISTICS, ProviderContext: *mut c_void, NmrProviderHandle: *mut HANDLE) -> NTSTATUS;
    /// [`NmrDeregisterProvider`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrderegisterprovider):
    /// `STATUS_PENDING` is the documented success. IRQL ≤ DISPATCH_LEVEL.
    pub fn NmrDeregisterProvider(NmrProviderHandle: HANDLE) -> NTSTATUS;
    /// [`NmrWaitForProviderDeregisterComplete`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrwaitforproviderderegistercomplete).
    /// IRQL < DISPATCH_LEVEL.
    pub fn NmrWaitForProviderDeregisterComplete(NmrProviderHandle: HANDLE) -> NTSTATUS;
    /// [`NmrProviderDetachClientComplete`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrproviderdetachclientcomplete):
    /// only after `ProviderDetachClient` returned `STATUS_PENDING`. IRQL ≤ DISPATCH_LEVEL.
    pub fn NmrProviderDetachClientComplete(NmrBindingHandle: HANDLE);
    /// [`NmrRegisterClient`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrregisterclient).
    /// IRQL = PASSIVE_LEVEL.
    pub fn NmrRegisterClient(ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS, ClientContext: *mut c_void, NmrClientHandle: *mut HANDLE) -> NTSTATUS;
    /// [`NmrDeregisterClient`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrderegisterclient):
    /// `STATUS_PENDING` is the documented success. IRQL ≤ DISPATCH_LEVEL.
    pub fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS;
    /// [`NmrWaitForClientDeregisterComplete`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrwaitforclientderegistercomplete).
    /// IRQL < DISPATCH_LEVEL.
    pub fn NmrWaitForClientDeregisterComplete(NmrClientHandle: HANDLE) -> NTSTATUS;
    /// [`NmrClientAttachProvider`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrclientattachprovider):
    /// called from `ClientAttachProvider`; returns what `ProviderAttachClient` returned.
    /// IRQL = PASSIVE_LEVEL.
    pub fn NmrClientAttachProvider(NmrBindingHandle: HANDLE, ClientBindingContext: *mut c_void, ClientDispatch: *const c_void, ProviderBindingContext: *mut *mut c_void, ProviderDispatch: *mut *const c_void) -> NTSTATUS;
    /// [`NmrClientDetachProviderComplete`](https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrclientdetachprovidercomplete):
    /// only after `ClientDetachProvider` returned `STATUS_PENDING`. IRQL ≤ DISPATCH_LEVEL.
    pub fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE);
}
