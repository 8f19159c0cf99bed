//! NMR: attach in both registration orders, declined attaches, pending detaches completed
//! from another thread, deregistration waits, cleanup callbacks and concurrent registration.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;

use ebpf_ext_sys::netioddk::*;
use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntdef::{GUID, HANDLE};
use ebpf_ext_sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_PENDING,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_sys::wdm::{
    DISPATCH_LEVEL, DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS,
    DRIVER_VERIFIER_DETECTED_VIOLATION, PASSIVE_LEVEL,
};
use ebpf_ext_usersim::{
    Config, FAULTABLE_APIS, Fault, Kernel, MAX_DECLINES, MAX_DEREGISTRATIONS, NmrDecline,
    NmrDeregistration, UNRECOVERABLE_FAULTABLE_APIS, expect_bugcheck, image_unloaded,
};

/// Handle-only NMR routines: usersim validates handles, so these are safe to call here.
#[expect(non_snake_case, reason = "wrappers keep the kernel routine names")]
mod safe {
    use ebpf_ext_sys::ntdef::{HANDLE, NTSTATUS};
    pub(crate) fn NmrDeregisterProvider(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle and returns STATUS_INVALID_PARAMETER (or bug-checks) for a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrDeregisterProvider(h) }
    }
    pub(crate) fn NmrWaitForProviderDeregisterComplete(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle and returns STATUS_INVALID_PARAMETER (or bug-checks) for a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrWaitForProviderDeregisterComplete(h) }
    }
    pub(crate) fn NmrDeregisterClient(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle and returns STATUS_INVALID_PARAMETER (or bug-checks) for a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrDeregisterClient(h) }
    }
    pub(crate) fn NmrWaitForClientDeregisterComplete(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle and returns STATUS_INVALID_PARAMETER (or bug-checks) for a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrWaitForClientDeregisterComplete(h) }
    }
    pub(crate) fn NmrProviderDetachClientComplete(h: HANDLE) {
        // SAFETY: usersim validates the handle and returns STATUS_INVALID_PARAMETER (or bug-checks) for a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrProviderDetachClientComplete(h) }
    }
}

const NPI: GUID = GUID::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
const OTHER_NPI: GUID = GUID::from_u128(0x9999_2222_3333_4444_5555_6666_7777_8888);
static MODULE: NPI_MODULEID = NPI_MODULEID::from_guid(GUID::from_u128(0xABCD));

/// Test-side state of one provider or client.
#[derive(Default)]
struct Side {
    accept: AtomicBool,
    pend_detach: AtomicBool,
    /// The provider's detach completes itself (`NmrProviderDetachClientComplete`) before
    /// returning.
    complete_in_detach: AtomicBool,
    /// The detach callback lowers the IRQL to PASSIVE_LEVEL before returning (a bug).
    lower_in_detach: AtomicBool,
    /// The attach callback raises the IRQL to DISPATCH_LEVEL and returns there (a bug).
    raise_in_attach: AtomicBool,
    attached: AtomicU32,
    detached: AtomicU32,
    cleaned: AtomicU32,
    binding: Mutex<Option<usize>>,
    /// The IRQL each detach and cleanup callback ran at, in order.
    irqls: Mutex<Vec<(&'static str, u8)>>,
}

/// Records the IRQL `callback` of `s` runs at.
fn record_irql(s: &Side, callback: &'static str) {
    let irql = ebpf_ext_usersim::exports::all::KeGetCurrentIrql();
    s.irqls.lock().unwrap().push((callback, irql));
}

fn side(ctx: *mut c_void) -> &'static Side {
    // SAFETY: every context registered by these tests is a leaked `Side`.
    unsafe { &*ctx.cast::<Side>() }
}

unsafe extern "win64" fn provider_attach(
    binding: HANDLE,
    ctx: *mut c_void,
    _client: *const NPI_REGISTRATION_INSTANCE,
    _client_binding: *mut c_void,
    _client_dispatch: *const c_void,
    provider_binding: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    let s = side(ctx);
    if !s.accept.load(Ordering::SeqCst) {
        return STATUS_NOINTERFACE;
    }
    s.attached.fetch_add(1, Ordering::SeqCst);
    *s.binding.lock().unwrap() = Some(binding as usize);
    if s.raise_in_attach.load(Ordering::SeqCst) {
        ebpf_ext_usersim::set_current_irql(DISPATCH_LEVEL);
    }
    // SAFETY: NMR passes writable out slots.
    unsafe {
        *provider_binding = ctx;
    }
    // SAFETY: as above.
    unsafe {
        *provider_dispatch = ptr::null();
    }
    STATUS_SUCCESS
}

unsafe extern "win64" fn provider_detach(ctx: *mut c_void) -> NTSTATUS {
    let s = side(ctx);
    record_irql(s, "detach");
    s.detached.fetch_add(1, Ordering::SeqCst);
    if s.lower_in_detach.load(Ordering::SeqCst) {
        ebpf_ext_usersim::set_current_irql(PASSIVE_LEVEL);
    }
    if s.complete_in_detach.load(Ordering::SeqCst) {
        let binding = s.binding.lock().unwrap().expect("attached");
        safe::NmrProviderDetachClientComplete(binding as HANDLE);
    }
    if s.pend_detach.load(Ordering::SeqCst) {
        STATUS_PENDING
    } else {
        STATUS_SUCCESS
    }
}

unsafe extern "win64" fn provider_cleanup(ctx: *mut c_void) {
    record_irql(side(ctx), "cleanup");
    side(ctx).cleaned.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    ctx: *mut c_void,
    _provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    let s = side(ctx);
    if !s.accept.load(Ordering::SeqCst) {
        return STATUS_NOINTERFACE;
    }
    let mut provider_binding = ptr::null_mut();
    let mut provider_dispatch = ptr::null();
    // SAFETY: called from ClientAttachProvider with the binding handle NMR gave us.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            ctx,
            ptr::null(),
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    if status == STATUS_SUCCESS {
        s.attached.fetch_add(1, Ordering::SeqCst);
        *s.binding.lock().unwrap() = Some(binding as usize);
    }
    status
}

unsafe extern "win64" fn client_detach(ctx: *mut c_void) -> NTSTATUS {
    let s = side(ctx);
    record_irql(s, "detach");
    s.detached.fetch_add(1, Ordering::SeqCst);
    if s.pend_detach.load(Ordering::SeqCst) {
        STATUS_PENDING
    } else {
        STATUS_SUCCESS
    }
}

unsafe extern "win64" fn client_cleanup(ctx: *mut c_void) {
    record_irql(side(ctx), "cleanup");
    side(ctx).cleaned.fetch_add(1, Ordering::SeqCst);
}

fn instance(npi: &'static GUID) -> NPI_REGISTRATION_INSTANCE {
    NPI_REGISTRATION_INSTANCE {
        Version: 0,
        Size: 40,
        NpiId: npi,
        ModuleId: &raw const MODULE,
        Number: 0,
        NpiSpecificCharacteristics: ptr::null(),
    }
}

fn new_side(accept: bool) -> &'static Side {
    let s: &'static Side = Box::leak(Box::default());
    s.accept.store(accept, Ordering::SeqCst);
    s
}

fn register_provider(npi: &'static GUID, s: &'static Side) -> (NTSTATUS, HANDLE) {
    let chars: &'static NPI_PROVIDER_CHARACTERISTICS =
        Box::leak(Box::new(NPI_PROVIDER_CHARACTERISTICS {
            Version: 0,
            Length: 72,
            ProviderAttachClient: Some(provider_attach),
            ProviderDetachClient: Some(provider_detach),
            ProviderCleanupBindingContext: Some(provider_cleanup),
            ProviderRegistrationInstance: instance(npi),
        }));
    let mut handle = ptr::null_mut();
    // SAFETY: leaked characteristics and context outlive the registration.
    let status =
        unsafe { NmrRegisterProvider(chars, ptr::from_ref(s).cast_mut().cast(), &raw mut handle) };
    (status, handle)
}

fn register_client(npi: &'static GUID, s: &'static Side) -> (NTSTATUS, HANDLE) {
    let chars: &'static NPI_CLIENT_CHARACTERISTICS =
        Box::leak(Box::new(NPI_CLIENT_CHARACTERISTICS {
            Version: 0,
            Length: 72,
            ClientAttachProvider: Some(client_attach),
            ClientDetachProvider: Some(client_detach),
            ClientCleanupBindingContext: Some(client_cleanup),
            ClientRegistrationInstance: instance(npi),
        }));
    let mut handle = ptr::null_mut();
    // SAFETY: leaked characteristics and context outlive the registration.
    let status =
        unsafe { NmrRegisterClient(chars, ptr::from_ref(s).cast_mut().cast(), &raw mut handle) };
    (status, handle)
}

fn deregister_provider(h: HANDLE) {
    let status = safe::NmrDeregisterProvider(h);
    assert!(
        status == STATUS_PENDING || status == STATUS_SUCCESS,
        "{status:#x}"
    );
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(h),
        STATUS_SUCCESS
    );
}

fn deregister_client(h: HANDLE) {
    let status = safe::NmrDeregisterClient(h);
    assert!(
        status == STATUS_PENDING || status == STATUS_SUCCESS,
        "{status:#x}"
    );
    assert_eq!(safe::NmrWaitForClientDeregisterComplete(h), STATUS_SUCCESS);
}

thread_local! {
    /// The routines [`recording_runner`] saw on this thread, while recording.
    static RUN_THROUGH: core::cell::RefCell<Option<Vec<usize>>> =
        const { core::cell::RefCell::new(None) };
}

/// A callback stack runner that records, on a thread that asked it to, every routine it is
/// given and runs it in place; on other threads it claims nothing (so other tests of this
/// process are unaffected).
fn recording_runner(routine: usize, call: &mut dyn FnMut()) -> bool {
    let recorded = RUN_THROUGH.with(|seen| {
        seen.borrow_mut()
            .as_mut()
            .map(|seen| seen.push(routine))
            .is_some()
    });
    if recorded {
        call();
    }
    recorded
}

#[test]
fn every_callback_goes_through_the_callback_stack_runner() {
    static NPI_ID: GUID = NPI;
    ebpf_ext_usersim::set_callback_stack(recording_runner);
    RUN_THROUGH.with(|seen| *seen.borrow_mut() = Some(Vec::new()));
    let kernel = Kernel::new();
    let (p, c) = (new_side(true), new_side(true));
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, ch) = register_client(&NPI_ID, c);
    assert_eq!(kernel.nmr_binding_count(), 1);
    deregister_client(ch);
    deregister_provider(ph);
    let seen = RUN_THROUGH
        .with(|seen| seen.borrow_mut().take())
        .unwrap_or_default();
    for (name, routine) in [
        (
            "ProviderAttachClient",
            provider_attach as *const () as usize,
        ),
        ("ClientAttachProvider", client_attach as *const () as usize),
        (
            "ProviderDetachClient",
            provider_detach as *const () as usize,
        ),
        ("ClientDetachProvider", client_detach as *const () as usize),
        (
            "ProviderCleanupBindingContext",
            provider_cleanup as *const () as usize,
        ),
        (
            "ClientCleanupBindingContext",
            client_cleanup as *const () as usize,
        ),
    ] {
        assert!(
            seen.contains(&routine),
            "{name} was not run through the runner: {seen:x?}"
        );
    }
    kernel.assert_no_leaks();
}

#[test]
fn attach_in_either_order_and_only_matching_npi() {
    static NPI_ID: GUID = NPI;
    static OTHER: GUID = OTHER_NPI;
    let kernel = Kernel::new();
    // Provider first.
    let (p, c) = (new_side(true), new_side(true));
    let (st, ph) = register_provider(&NPI_ID, p);
    assert_eq!(st, STATUS_SUCCESS);
    let (_, stranger_h) = register_client(&OTHER, new_side(true));
    let (_, ch) = register_client(&NPI_ID, c);
    assert_eq!(
        (
            p.attached.load(Ordering::SeqCst),
            c.attached.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(kernel.nmr_binding_count(), 1);
    deregister_client(ch);
    assert_eq!(
        (
            p.detached.load(Ordering::SeqCst),
            c.detached.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(
        (
            p.cleaned.load(Ordering::SeqCst),
            c.cleaned.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    deregister_provider(ph);
    // Client first.
    let (p2, c2) = (new_side(true), new_side(true));
    let (_, ch2) = register_client(&NPI_ID, c2);
    assert_eq!(c2.attached.load(Ordering::SeqCst), 0);
    let (_, ph2) = register_provider(&NPI_ID, p2);
    assert_eq!(
        (
            p2.attached.load(Ordering::SeqCst),
            c2.attached.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    deregister_provider(ph2);
    assert_eq!(
        (
            p2.cleaned.load(Ordering::SeqCst),
            c2.cleaned.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    deregister_client(ch2);
    deregister_client(stranger_h);
    kernel.assert_no_leaks();
}

#[test]
fn detach_and_cleanup_callbacks_run_at_dispatch_level_whatever_the_callers_irql() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    for (first, second) in [("client", "provider"), ("provider", "client")] {
        let (p, c) = (new_side(true), new_side(true));
        let (_, ph) = register_provider(&NPI_ID, p);
        let (_, ch) = register_client(&NPI_ID, c);
        // NMR may call them at any IRQL up to DISPATCH_LEVEL: the one a blocking callback
        // fails at, though this deregistration comes from PASSIVE_LEVEL.
        if first == "client" {
            deregister_client(ch);
        } else {
            deregister_provider(ph);
        }
        let expected = [("detach", DISPATCH_LEVEL), ("cleanup", DISPATCH_LEVEL)];
        assert_eq!(
            *p.irqls.lock().unwrap(),
            expected,
            "{first} first: provider"
        );
        assert_eq!(*c.irqls.lock().unwrap(), expected, "{first} first: client");
        assert_eq!(
            ebpf_ext_usersim::exports::all::KeGetCurrentIrql(),
            PASSIVE_LEVEL,
            "the caller's IRQL is back"
        );
        if second == "provider" {
            deregister_provider(ph);
        } else {
            deregister_client(ch);
        }
    }
    // A deregistration at DISPATCH_LEVEL (allowed for NmrDeregisterClient): the callbacks
    // still run at DISPATCH_LEVEL, and the caller's level is left as it was.
    let (p, c) = (new_side(true), new_side(true));
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, ch) = register_client(&NPI_ID, c);
    ebpf_ext_usersim::set_current_irql(DISPATCH_LEVEL);
    let status = safe::NmrDeregisterClient(ch);
    assert_eq!(
        ebpf_ext_usersim::exports::all::KeGetCurrentIrql(),
        DISPATCH_LEVEL
    );
    ebpf_ext_usersim::set_current_irql(PASSIVE_LEVEL);
    assert!(
        status == STATUS_SUCCESS || status == STATUS_PENDING,
        "{status:#x}"
    );
    assert_eq!(safe::NmrWaitForClientDeregisterComplete(ch), STATUS_SUCCESS);
    let expected = [("detach", DISPATCH_LEVEL), ("cleanup", DISPATCH_LEVEL)];
    assert_eq!(*p.irqls.lock().unwrap(), expected);
    assert_eq!(*c.irqls.lock().unwrap(), expected);
    deregister_provider(ph);
    kernel.assert_no_leaks();
}

#[test]
fn an_attach_callback_returning_at_another_irql_bugchecks() {
    static NPI_ID: GUID = NPI;
    let check = expect_bugcheck(
        "an_attach_callback_returning_at_another_irql_bugchecks",
        || {
            let _kernel = Kernel::new();
            let p = new_side(true);
            p.raise_in_attach.store(true, Ordering::SeqCst);
            let (_, _ph) = register_provider(&NPI_ID, p);
            let (_, _ch) = register_client(&NPI_ID, new_side(true));
        },
    );
    assert_eq!(check.code, 0xC8, "IRQL_UNEXPECTED_VALUE");
    assert_eq!(check.api, "ProviderAttachClient");
    assert_eq!(
        check.parameters[1..3],
        [u64::from(DISPATCH_LEVEL), u64::from(PASSIVE_LEVEL)],
        "returned at, called at"
    );
}

#[test]
fn a_detach_callback_returning_at_another_irql_bugchecks() {
    static NPI_ID: GUID = NPI;
    let check = expect_bugcheck(
        "a_detach_callback_returning_at_another_irql_bugchecks",
        || {
            let _kernel = Kernel::new();
            let p = new_side(true);
            p.lower_in_detach.store(true, Ordering::SeqCst);
            let (_, _ph) = register_provider(&NPI_ID, p);
            let (_, ch) = register_client(&NPI_ID, new_side(true));
            deregister_client(ch);
        },
    );
    assert_eq!(check.code, 0xC8, "IRQL_UNEXPECTED_VALUE");
    assert_eq!(check.api, "ProviderDetachClient");
    assert_ne!(
        check.parameters[0], 0,
        "the callback's address (in the dying child)"
    );
    assert_eq!(
        check.parameters[1..3],
        [u64::from(PASSIVE_LEVEL), u64::from(DISPATCH_LEVEL)],
        "returned at, called at"
    );
}

#[test]
fn declined_attach_leaves_no_binding() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (p, c) = (new_side(false), new_side(true));
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, ch) = register_client(&NPI_ID, c);
    assert_eq!(kernel.nmr_binding_count(), 0);
    assert_eq!(c.attached.load(Ordering::SeqCst), 0);
    deregister_client(ch);
    deregister_provider(ph);
    assert_eq!(
        p.detached.load(Ordering::SeqCst) + c.detached.load(Ordering::SeqCst),
        0
    );
    kernel.assert_no_leaks();
}

#[test]
fn a_client_declining_a_provider_is_recorded_with_its_status() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (p, declining, accepting) = (new_side(true), new_side(false), new_side(true));
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, declined) = register_client(&NPI_ID, declining);
    assert_eq!(
        kernel.nmr_declines(),
        [NmrDecline {
            npi_id: NPI,
            provider_module: GUID::from_u128(0xABCD),
            status: STATUS_NOINTERFACE,
        }]
    );
    let (_, attached) = register_client(&NPI_ID, accepting);
    assert_eq!(accepting.attached.load(Ordering::SeqCst), 1);
    assert_eq!(kernel.nmr_declines().len(), 1, "an attach is no decline");
    deregister_client(attached);
    deregister_client(declined);
    // The record keeps the most recent MAX_DECLINES.
    for _ in 0..MAX_DECLINES {
        let (_, declined) = register_client(&NPI_ID, declining);
        deregister_client(declined);
    }
    assert_eq!(kernel.nmr_declines().len(), MAX_DECLINES);
    deregister_provider(ph);
    kernel.assert_no_leaks();
}

#[test]
fn completed_deregistrations_are_recorded_in_the_order_they_completed() {
    static NPI_ID: GUID = NPI;
    static OTHER_ID: GUID = OTHER_NPI;
    let kernel = Kernel::new();
    let (first, second, client) = (new_side(true), new_side(true), new_side(true));
    let (_, first) = register_provider(&NPI_ID, first);
    let (_, second) = register_provider(&OTHER_ID, second);
    let (_, client) = register_client(&NPI_ID, client);
    assert!(kernel.nmr_deregistrations().is_empty());
    assert_eq!(safe::NmrDeregisterProvider(second), STATUS_PENDING);
    assert!(
        kernel.nmr_deregistrations().is_empty(),
        "started is not completed"
    );
    deregister_client(client);
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(second),
        STATUS_SUCCESS
    );
    deregister_provider(first);
    let module = GUID::from_u128(0xABCD);
    assert_eq!(
        kernel.nmr_deregistrations(),
        [
            NmrDeregistration {
                kind: "client",
                npi_id: NPI,
                module
            },
            NmrDeregistration {
                kind: "provider",
                npi_id: OTHER_NPI,
                module
            },
            NmrDeregistration {
                kind: "provider",
                npi_id: NPI,
                module
            },
        ]
    );
    // The record keeps the most recent MAX_DEREGISTRATIONS.
    for _ in 0..MAX_DEREGISTRATIONS {
        let (_, client) = register_client(&NPI_ID, new_side(true));
        deregister_client(client);
    }
    let kept = kernel.nmr_deregistrations();
    assert_eq!(kept.len(), MAX_DEREGISTRATIONS);
    assert!(
        kept.iter().all(|d| d.kind == "client"),
        "the oldest went first"
    );
    kernel.assert_no_leaks();
}

/// An injected `NmrDeregisterProvider` failure changes nothing: the registration and its
/// binding stay, and a later deregistration works. It is never part of a sweep.
#[test]
fn an_injected_deregistration_failure_leaves_the_registration_as_it_was() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (p, c) = (new_side(true), new_side(true));
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, ch) = register_client(&NPI_ID, c);
    kernel.inject(Fault::Call("NmrDeregisterProvider", 1));
    assert_eq!(
        safe::NmrDeregisterProvider(ch),
        STATUS_INVALID_PARAMETER,
        "a client's handle is still refused as such, and no call counts"
    );
    assert!(kernel.faults_triggered().is_empty());
    assert_eq!(safe::NmrDeregisterProvider(ph), STATUS_UNSUCCESSFUL);
    assert_eq!(kernel.nmr_binding_count(), 1);
    assert_eq!(p.detached.load(Ordering::SeqCst), 0);
    assert!(kernel.nmr_registrations().iter().all(|r| !r.deregistering));
    assert!(
        !FAULTABLE_APIS.contains(&"NmrDeregisterProvider"),
        "not swept"
    );
    assert!(UNRECOVERABLE_FAULTABLE_APIS.contains(&"NmrDeregisterProvider"));
    deregister_provider(ph);
    assert_eq!(p.detached.load(Ordering::SeqCst), 1);
    deregister_client(ch);
    kernel.assert_no_leaks();
}

#[test]
fn pending_detach_completes_later_from_another_thread() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (p, c) = (new_side(true), new_side(true));
    p.pend_detach.store(true, Ordering::SeqCst);
    let (_, ph) = register_provider(&NPI_ID, p);
    let (_, ch) = register_client(&NPI_ID, c);
    assert_eq!(safe::NmrDeregisterProvider(ph), STATUS_PENDING);
    assert_eq!(
        p.cleaned.load(Ordering::SeqCst),
        0,
        "no cleanup before the pending detach completes"
    );
    let binding = p.binding.lock().unwrap().expect("bound");
    let completer = kernel.spawn(move || {
        thread::sleep(core::time::Duration::from_millis(50));
        safe::NmrProviderDetachClientComplete(binding as HANDLE);
    });
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(ph),
        STATUS_SUCCESS
    );
    completer.join().unwrap();
    assert_eq!(
        (
            p.cleaned.load(Ordering::SeqCst),
            c.cleaned.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    deregister_client(ch);
    kernel.assert_no_leaks();
}

#[test]
fn bad_handles_and_input() {
    static NPI_ID: GUID = NPI;
    let _kernel = Kernel::with_config(Config {
        nmr_deregister_success_when_idle: true,
        ..Config::default()
    });
    assert_eq!(
        safe::NmrDeregisterProvider(0x1234 as HANDLE),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(0x1234 as HANDLE),
        STATUS_INVALID_PARAMETER
    );
    let mut h = ptr::null_mut();
    assert_eq!(
        // SAFETY: NULL characteristics are rejected before use.
        unsafe { NmrRegisterProvider(ptr::null(), ptr::null_mut(), &raw mut h) },
        STATUS_INVALID_PARAMETER
    );
    let (_, ph) = register_provider(&NPI_ID, new_side(true));
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(ph),
        STATUS_INVALID_PARAMETER,
        "wait before deregister"
    );
    assert_eq!(
        safe::NmrDeregisterProvider(ph),
        STATUS_SUCCESS,
        "idle deregistration, when configured"
    );
    assert_eq!(
        safe::NmrDeregisterProvider(ph),
        STATUS_INVALID_PARAMETER,
        "twice"
    );
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(ph),
        STATUS_SUCCESS
    );
    assert_eq!(
        safe::NmrWaitForProviderDeregisterComplete(ph),
        STATUS_INVALID_PARAMETER,
        "handle gone"
    );
}

#[test]
fn registration_faults() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("NmrRegisterProvider", 1));
    assert_eq!(
        register_provider(&NPI_ID, new_side(true)).0,
        STATUS_INSUFFICIENT_RESOURCES
    );
    let p = new_side(true);
    let (_, ph) = register_provider(&NPI_ID, p);
    kernel.inject(Fault::Call("NmrClientAttachProvider", 1));
    let c = new_side(true);
    let (st, ch) = register_client(&NPI_ID, c);
    assert_eq!(
        st, STATUS_SUCCESS,
        "registration succeeds; the attach failed"
    );
    assert_eq!(kernel.nmr_binding_count(), 0);
    deregister_client(ch);
    deregister_provider(ph);
    kernel.assert_no_leaks();
}

#[test]
fn leaked_registration_is_reported() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let _ = register_provider(&NPI_ID, new_side(true));
    let regs = kernel.nmr_registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(
        (regs[0].kind, regs[0].npi_id, regs[0].deregistering),
        ("provider", NPI, false)
    );
}

#[test]
fn concurrent_register_and_deregister() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (_, ph) = register_provider(&NPI_ID, new_side(true));
    thread::scope(|s| {
        for _ in 0..4 {
            kernel.scoped(s, || {
                for _ in 0..200 {
                    let c = new_side(true);
                    let (_, ch) = register_client(&NPI_ID, c);
                    deregister_client(ch);
                    assert_eq!(
                        c.attached.load(Ordering::SeqCst),
                        c.cleaned.load(Ordering::SeqCst)
                    );
                }
            });
        }
        kernel.scoped(s, || {
            for _ in 0..100 {
                let (_, h) = register_provider(&NPI_ID, new_side(true));
                deregister_provider(h);
            }
        });
    });
    deregister_provider(ph);
    kernel.assert_no_leaks();
}

/// A detach callback may complete its own detach only when it returns `STATUS_PENDING`:
/// completing and then returning `STATUS_SUCCESS` is a driver bug.
fn complete_in_detach(pend: bool) {
    let _k = Kernel::new();
    let provider = new_side(true);
    provider.complete_in_detach.store(true, Ordering::SeqCst);
    provider.pend_detach.store(pend, Ordering::SeqCst);
    let client = new_side(true);
    let (_, p) = register_provider(&NPI, provider);
    let (_, c) = register_client(&NPI, client);
    assert_eq!(provider.attached.load(Ordering::SeqCst), 1);
    deregister_provider(p);
    assert_eq!(provider.cleaned.load(Ordering::SeqCst), 1);
    deregister_client(c);
}

#[test]
fn a_detach_that_completes_itself_must_return_pending() {
    complete_in_detach(true);
    let check = expect_bugcheck("a_detach_that_completes_itself_must_return_pending", || {
        complete_in_detach(false);
    });
    assert_eq!(
        (check.code, check.api.as_str()),
        (DRIVER_VERIFIER_DETECTED_VIOLATION, "ProviderDetachClient")
    );
}

/// An "image" of one byte: the first byte of `routine`.
fn image_at(routine: usize) -> core::ops::Range<usize> {
    routine..routine + 1
}

#[test]
fn an_image_unloading_with_a_provider_registered_into_it_bugchecks() {
    static NPI_ID: GUID = NPI;
    let check = expect_bugcheck(
        "an_image_unloading_with_a_provider_registered_into_it_bugchecks",
        || {
            let _kernel = Kernel::new();
            let (status, _) = register_provider(&NPI_ID, new_side(true));
            assert_eq!(status, STATUS_SUCCESS);
            image_unloaded("leaky.sys", image_at(provider_detach as *const () as usize));
        },
    );
    assert_eq!(
        check.code,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS
    );
    assert_eq!(check.api, "MmUnloadSystemImage");
    assert_ne!(check.parameters[0], 0, "the address into the image");
    assert!(
        check
            .message
            .contains("leaky.sys unloaded with 1 registration")
            && check.message.contains("NMR provider")
            && check.message.contains("(registered)"),
        "{}",
        check.message
    );
}

#[test]
fn a_client_deregistered_but_not_waited_for_still_points_into_its_image() {
    static NPI_ID: GUID = NPI;
    let check = expect_bugcheck(
        "a_client_deregistered_but_not_waited_for_still_points_into_its_image",
        || {
            let _kernel = Kernel::new();
            let (status, handle) = register_client(&NPI_ID, new_side(true));
            assert_eq!(status, STATUS_SUCCESS);
            assert_eq!(safe::NmrDeregisterClient(handle), STATUS_PENDING);
            image_unloaded(
                "waitless.sys",
                image_at(client_cleanup as *const () as usize),
            );
        },
    );
    assert_eq!(
        check.code,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS
    );
    assert!(
        check.message.contains("NMR client") && check.message.contains("not waited for"),
        "{}",
        check.message
    );
}

#[test]
fn an_image_unloads_once_its_registrations_are_gone() {
    static NPI_ID: GUID = NPI;
    let kernel = Kernel::new();
    let (status, provider) = register_provider(&NPI_ID, new_side(true));
    assert_eq!(status, STATUS_SUCCESS);
    let (status, client) = register_client(&NPI_ID, new_side(true));
    assert_eq!(status, STATUS_SUCCESS);
    let routine = provider_attach as *const () as usize;
    // Another image's unload: these registrations point elsewhere.
    image_unloaded("other.sys", routine + 0x10_0000..routine + 0x20_0000);
    deregister_client(client);
    deregister_provider(provider);
    image_unloaded("clean.sys", image_at(routine));
    image_unloaded("clean.sys", image_at(client_attach as *const () as usize));
    kernel.assert_no_leaks();
}
