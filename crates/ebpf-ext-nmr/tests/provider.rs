//! The generic provider against usersim's NMR, with a raw client: what a client sees when the
//! provider refuses it, and deregistration whichever status `NmrDeregisterProvider` returns.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::netioddk::{NPI_MODULEID, NPIID};
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_usersim::{Config, Kernel, TestClient, attach_client_once};

const TAG: PoolTag = PoolTag::new(*b"NmrT");
static NPI: NPIID = GUID::from_u128(0x6a1e_0001_5b2c_4d3e_8f40_1a2b_3c4d_5e6f);
const PROVIDER_MODULE: GUID = GUID::from_u128(0x6a1e_0002_5b2c_4d3e_8f40_1a2b_3c4d_5e6f);
static CLIENT_MODULE: NPI_MODULEID =
    NPI_MODULEID::from_guid(GUID::from_u128(0x6a1e_0003_5b2c_4d3e_8f40_1a2b_3c4d_5e6f));

/// A provider that attaches every client, or refuses each with `refusal`; each binding
/// counts its detaches in `detaches` (the test's own counter).
struct TestProvider {
    refusal: Option<NTSTATUS>,
    detaches: &'static AtomicU32,
}

impl TestProvider {
    fn new(refusal: Option<NTSTATUS>) -> Self {
        TestProvider {
            refusal,
            detaches: Box::leak(Box::new(AtomicU32::new(0))),
        }
    }
}

// SAFETY: it publishes no characteristics (a unit), which no client of the test NPI reads.
unsafe impl NpiProvider for TestProvider {
    type Characteristics = ();
    type Binding = &'static AtomicU32;
    const NPI_ID: &'static NPIID = &NPI;

    fn characteristics(&self) -> &() {
        &()
    }

    fn attach(&self, client: &AttachingClient<'_>) -> Result<Bound<&'static AtomicU32>, NTSTATUS> {
        match self.refusal {
            Some(status) => Err(status),
            None => client
                .allocate(self.detaches)
                .map_err(|_| STATUS_UNSUCCESSFUL),
        }
    }

    fn detach(detaches: &&'static AtomicU32) -> Detach {
        detaches.fetch_add(1, Ordering::SeqCst);
        Detach::Complete
    }
}

/// Lets a client of the test NPI meet the registered provider; what its attach returned.
fn attach_client() -> NTSTATUS {
    // SAFETY: no NPI-specific characteristics (the test provider reads none).
    let status = unsafe { attach_client_once(&NPI, &CLIENT_MODULE, ptr::null()) };
    status.expect("the provider was offered to the client")
}

#[test]
fn a_client_is_refused_with_the_providers_failure_status() {
    let kernel = Kernel::new();
    let provider = Provider::register(
        PROVIDER_MODULE,
        TestProvider::new(Some(STATUS_ACCESS_DENIED)),
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
        let provider = Provider::register(PROVIDER_MODULE, TestProvider::new(Some(refusal)), TAG)
            .expect("register");
        assert_eq!(attach_client(), STATUS_UNSUCCESSFUL, "{refusal:#x}");
        assert_eq!(kernel.nmr_binding_count(), 0);
        drop(provider);
    }
    assert!(kernel.nmr_registrations().is_empty());
    kernel.assert_no_leaks();
}

/// A provider dropped while a client is bound detaches it (its detach called once) and
/// waits until NMR has let go of it, before its state is freed.
#[test]
fn a_bound_client_is_detached_and_its_binding_freed_when_the_provider_drops() {
    let kernel = Kernel::new();
    let test_provider = TestProvider::new(None);
    let detaches = test_provider.detaches;
    let provider = Provider::register(PROVIDER_MODULE, test_provider, TAG).expect("register");
    // SAFETY: no NPI-specific characteristics (the test provider reads none).
    let client = unsafe { TestClient::register(&NPI, &CLIENT_MODULE, ptr::null()) };
    assert_eq!(client.status(), Some(STATUS_SUCCESS));
    assert_eq!(kernel.nmr_binding_count(), 1);
    drop(provider);
    assert_eq!(
        detaches.load(Ordering::SeqCst),
        1,
        "the provider detached the client"
    );
    assert_eq!(kernel.nmr_binding_count(), 0);
    let left: Vec<_> = kernel.nmr_registrations().iter().map(|r| r.kind).collect();
    assert_eq!(left, ["client"], "the provider's deregistration completed");
    drop(client);
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
        Provider::register(PROVIDER_MODULE, TestProvider::new(None), TAG).expect("register");
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
