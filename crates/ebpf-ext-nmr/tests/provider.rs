//! The generic provider against usersim's NMR, with a raw client: what a client sees when the
//! provider refuses it, and deregistration whichever status `NmrDeregisterProvider` returns.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ffi::c_void;
use core::ptr;
use std::sync::Mutex;

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NPIID,
    NmrClientAttachProvider, NmrDeregisterClient, NmrRegisterClient,
    NmrWaitForClientDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_usersim::{Config, Kernel};

const TAG: PoolTag = PoolTag::new(*b"NmrT");
static NPI: NPIID = GUID::from_u128(0x6a1e_0001_5b2c_4d3e_8f40_1a2b_3c4d_5e6f);
const PROVIDER_MODULE: GUID = GUID::from_u128(0x6a1e_0002_5b2c_4d3e_8f40_1a2b_3c4d_5e6f);
const CLIENT_MODULE: NPI_MODULEID =
    NPI_MODULEID::from_guid(GUID::from_u128(0x6a1e_0003_5b2c_4d3e_8f40_1a2b_3c4d_5e6f));

/// A provider that attaches every client, or refuses each with `refusal`.
struct TestProvider {
    refusal: Option<NTSTATUS>,
}

// SAFETY: it publishes no characteristics (a unit), which no client of the test NPI reads.
unsafe impl NpiProvider for TestProvider {
    type Characteristics = ();
    type Binding = ();
    const NPI_ID: &'static NPIID = &NPI;

    fn characteristics(&self) -> &() {
        &()
    }

    fn attach(&self, client: &AttachingClient<'_>) -> Result<Bound<()>, NTSTATUS> {
        match self.refusal {
            Some(status) => Err(status),
            None => client.allocate(()).map_err(|()| STATUS_UNSUCCESSFUL),
        }
    }

    fn detach((): &()) -> Detach {
        Detach::Complete
    }
}

/// A raw client of the test NPI: what `NmrClientAttachProvider` returned to it.
struct Client {
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    status: Mutex<Option<NTSTATUS>>,
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    context: *mut c_void,
    _: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the context registered in `attach_client`, alive until deregistration.
    let client = unsafe { &*context.cast::<Client>() };
    let (mut provider_binding, mut provider_dispatch) = (ptr::null_mut(), ptr::null());
    // SAFETY: inside ClientAttachProvider, with NMR's binding handle.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            context,
            ptr::null(),
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    *client.status.lock().expect("status lock") = Some(status);
    status
}

unsafe extern "win64" fn client_detach(_: *mut c_void) -> NTSTATUS {
    STATUS_SUCCESS
}

/// Registers a client of the test NPI, lets it meet the registered provider, deregisters it,
/// and returns what its attach returned.
fn attach_client() -> NTSTATUS {
    let client = Box::new(Client {
        characteristics: NPI_CLIENT_CHARACTERISTICS {
            Version: 0,
            Length: 72,
            ClientAttachProvider: Some(client_attach),
            ClientDetachProvider: Some(client_detach),
            ClientCleanupBindingContext: None,
            ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                Version: 0,
                Size: 40,
                NpiId: &raw const NPI,
                ModuleId: &CLIENT_MODULE,
                Number: 0,
                NpiSpecificCharacteristics: ptr::null(),
            },
        },
        status: Mutex::new(None),
    });
    let context = ptr::from_ref(&*client).cast_mut().cast::<c_void>();
    let mut handle = ptr::null_mut();
    // SAFETY: the characteristics and context live in the box until deregistration below.
    let status =
        unsafe { NmrRegisterClient(&raw const client.characteristics, context, &raw mut handle) };
    assert_eq!(status, STATUS_SUCCESS, "NmrRegisterClient");
    // SAFETY: the handle registered above, deregistered once.
    if unsafe { NmrDeregisterClient(handle) } == STATUS_PENDING {
        // SAFETY: as above.
        unsafe { NmrWaitForClientDeregisterComplete(handle) };
    }
    let attached = client.status.lock().expect("status lock").take();
    attached.expect("the provider was offered to the client")
}

#[test]
fn a_client_is_refused_with_the_providers_failure_status() {
    let kernel = Kernel::new();
    let provider = Provider::register(
        PROVIDER_MODULE,
        TestProvider {
            refusal: Some(STATUS_ACCESS_DENIED),
        },
        TAG,
    )
    .expect("register");
    assert_eq!(attach_client(), STATUS_ACCESS_DENIED);
    assert_eq!(kernel.nmr_binding_count(), 0);
    drop(provider);
    assert!(kernel.nmr_registrations().is_empty());
    kernel.assert_no_leaks();
}

#[test]
fn a_refusal_with_a_success_class_status_reaches_the_client_as_a_failure() {
    // NMR reads any NT_SUCCESS status as attached: the client would hold a binding with no
    // provider binding context, and the provider's detach would find none.
    let kernel = Kernel::new();
    for refusal in [STATUS_PENDING, STATUS_SUCCESS] {
        let provider = Provider::register(
            PROVIDER_MODULE,
            TestProvider {
                refusal: Some(refusal),
            },
            TAG,
        )
        .expect("register");
        assert_eq!(attach_client(), STATUS_UNSUCCESSFUL, "{refusal:#x}");
        assert_eq!(kernel.nmr_binding_count(), 0);
        drop(provider);
    }
    assert!(kernel.nmr_registrations().is_empty());
    kernel.assert_no_leaks();
}

#[test]
fn an_attached_client_is_detached_and_its_binding_freed_when_the_provider_drops() {
    let kernel = Kernel::new();
    let provider =
        Provider::register(PROVIDER_MODULE, TestProvider { refusal: None }, TAG).expect("register");
    assert_eq!(attach_client(), STATUS_SUCCESS);
    drop(provider);
    assert!(kernel.nmr_registrations().is_empty());
    kernel.assert_no_leaks();
}

#[test]
fn a_deregistration_that_completes_at_once_is_waited_for_and_freed() {
    // NETIO documents STATUS_PENDING; user-mode NMRs return STATUS_SUCCESS for a provider
    // with no bindings. Either way the provider waits and frees its state.
    let kernel = Kernel::with_config(Config {
        nmr_deregister_success_when_idle: true,
        ..Config::default()
    });
    let provider =
        Provider::register(PROVIDER_MODULE, TestProvider { refusal: None }, TAG).expect("register");
    assert_eq!(kernel.nmr_registrations().len(), 1);
    drop(provider);
    assert!(
        kernel.nmr_registrations().is_empty(),
        "the provider waited for its deregistration"
    );
    let done = kernel.nmr_deregistrations();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].kind, done[0].npi_id), ("provider", NPI));
    kernel.assert_no_leaks();
}
