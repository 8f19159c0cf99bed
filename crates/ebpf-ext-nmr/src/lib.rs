//! The NMR provider registration steps the SDK's NPI providers (program information, hook)
//! share: one place that calls `NmrRegisterProvider` / `NmrDeregisterProvider` /
//! `NmrWaitForProviderDeregisterComplete` and traces their failures.
//!
//! # IRQL
//! Registration and deregistration: PASSIVE_LEVEL.
#![no_std]

use core::ffi::c_void;
use core::ptr;

use ebpf_ext_sys::netioddk::{
    NPI_PROVIDER_ATTACH_CLIENT_FN, NPI_PROVIDER_CHARACTERISTICS,
    NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN, NPI_PROVIDER_DETACH_CLIENT_FN,
    NPI_REGISTRATION_INSTANCE, NPIID, NmrDeregisterProvider, NmrRegisterProvider,
    NmrWaitForProviderDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE};
use ebpf_ext_sys::ntstatus::{STATUS_PENDING, STATUS_SUCCESS};
use ebpf_ext_sys::{Error, Result};

/// Characteristics of a provider of `npi_id` with these callbacks (version 0, length 72,
/// registration instance version 0, size 40, number 0). The module id and NPI-specific
/// characteristics point into the provider's own pinned context, so the caller fills them in
/// once the context is in place.
#[must_use]
pub const fn provider_characteristics(
    npi_id: &'static NPIID,
    attach: NPI_PROVIDER_ATTACH_CLIENT_FN,
    detach: NPI_PROVIDER_DETACH_CLIENT_FN,
    cleanup: NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN,
) -> NPI_PROVIDER_CHARACTERISTICS {
    NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        #[expect(clippy::cast_possible_truncation, reason = "72 bytes")]
        Length: size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
        ProviderAttachClient: Some(attach),
        ProviderDetachClient: Some(detach),
        ProviderCleanupBindingContext: Some(cleanup),
        ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            #[expect(clippy::cast_possible_truncation, reason = "40 bytes")]
            Size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: npi_id,
            ModuleId: ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: ptr::null(),
        },
    }
}

/// Registers a provider; a failure is traced (`EbpfExtApiError`, keyword `EXTENSION`) and
/// returned.
///
/// # Safety
/// `characteristics` (and what it points to) and `context` stay valid and in place until
/// [`deregister_provider`] has returned for the handle.
///
/// # Errors
/// [`Error::Api`] with `NmrRegisterProvider`'s status.
pub unsafe fn register_provider(
    characteristics: *const NPI_PROVIDER_CHARACTERISTICS,
    context: *mut c_void,
) -> Result<HANDLE> {
    let mut handle: HANDLE = ptr::null_mut();
    // SAFETY: the caller keeps the characteristics and context valid until deregistration.
    let status = unsafe { NmrRegisterProvider(characteristics, context, &raw mut handle) };
    if status == STATUS_SUCCESS {
        Ok(handle)
    } else {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrRegisterProvider",
            status
        );
        Err(Error::api("NmrRegisterProvider", status))
    }
}

/// Deregisters a provider and waits until every client has detached and been cleaned up;
/// after it returns NMR holds no reference to the provider. An unexpected status is traced.
///
/// # Safety
/// `handle` came from [`register_provider`] and is deregistered once.
pub unsafe fn deregister_provider(handle: HANDLE) {
    // SAFETY: a live registration handle (caller's contract).
    let status = unsafe { NmrDeregisterProvider(handle) };
    if status != STATUS_PENDING && status != STATUS_SUCCESS {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrDeregisterProvider",
            status
        );
        return;
    }
    // SAFETY: deregistration started above.
    let status = unsafe { NmrWaitForProviderDeregisterComplete(handle) };
    if status != STATUS_SUCCESS {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrWaitForProviderDeregisterComplete",
            status
        );
    }
}

/// The module GUID of a client's registration instance (GUID_NULL if absent or not
/// `MIT_GUID`).
///
/// # Safety
/// `instance` is NULL or the registration instance NMR passed to `ProviderAttachClient`.
#[must_use]
pub unsafe fn client_module_guid(instance: *const NPI_REGISTRATION_INSTANCE) -> GUID {
    if instance.is_null() {
        return GUID::NULL;
    }
    // SAFETY: NMR passes the client's registration instance, valid during attach.
    let module = unsafe { (*instance).ModuleId };
    if module.is_null() {
        return GUID::NULL;
    }
    // SAFETY: a registered client's module id.
    unsafe { (*module).guid() }.unwrap_or(GUID::NULL)
}
