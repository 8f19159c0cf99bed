//! A provider whose `Drop` never runs (`mem::forget` is safe Rust) must not stay registered
//! after its driver unloads: NMR would call into an unloaded image. The glue deregisters every
//! such provider once the extension is dropped, detaching its clients and tracing it; its
//! state stays allocated (a leak, which pool tracking reports), so a `Provider` value that
//! lived on cannot reach freed memory when it is dropped after all.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::nmr::deregister_leaked as sweep;
use ebpf_extension_common::prelude::*;

mod common;
use common::{Hook, Seen, providers_stopped, value};
use ebpf_extension_common::sys::ntstatus::STATUS_SUCCESS;

const TAG: PoolTag = PoolTag::new(*b"Leak");
const PROGRAM: GUID = GUID::from_u128(0x7d0e_0031_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const HOOK: GUID = GUID::from_u128(0x7d0e_0032_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
/// What the sweep traces for each provider it deregisters.
const SWEPT: &str = "its Provider was leaked";

program_type! {
    static DATA = c"leaky", PROGRAM, 2301;
    context Seen;
    helpers {
        0x1_0000, c"leaky_value" => value(Context);
    }
}

program_type! {
    static SECOND = c"leaky2", GUID::from_u128(0x7d0e_0033_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f), 2302;
    context Seen;
    helpers {
        0x1_0000, c"leaky2_value" => value(Context);
    }
}

program_type! {
    static THIRD = c"leaky3", GUID::from_u128(0x7d0e_0034_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f), 2303;
    context Seen;
    helpers {
        0x1_0000, c"leaky3_value" => value(Context);
    }
}

const HOOK_CONFIG: HookConfig<()> = HookConfig::new(HOOK, PROGRAM, 2301, TAG).with_link_type(1);

/// A driver that leaks its hook provider while starting (the SDK keeps its program type).
mod leaks_its_hook {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "LeaksItsHookTestProvider",
        id("5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")
    );

    struct LeaksItsHook;

    impl ExtensionDriver for LeaksItsHook {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(start: &Start<'_>) -> Result<Self> {
            let program_type = start.program_type(&DATA)?;
            core::mem::forget(start.hook(&program_type, HOOK_CONFIG, Hook)?);
            Ok(LeaksItsHook)
        }
    }

    driver_entry!(static DRIVER: LeaksItsHook);
}

/// A driver whose start leaks its hook, then fails (the SDK sweeps the hook, then stops the
/// program type it keeps).
mod leaks_then_fails {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "LeaksThenFailsTestProvider",
        id("6d2e3f4a-5b6c-4d7e-9f80-a1b2c3d4e5f6")
    );

    struct LeaksThenFails;

    impl ExtensionDriver for LeaksThenFails {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(start: &Start<'_>) -> Result<Self> {
            let program_type = start.program_type(&DATA)?;
            core::mem::forget(start.hook(&program_type, HOOK_CONFIG, Hook)?);
            Err(Error::InsufficientResources)
        }
    }

    driver_entry!(static DRIVER: LeaksThenFails);
}

/// A driver that leaks its hook and a program-information provider it registered itself,
/// beside the program type the SDK keeps.
mod leaks_a_program_type_too {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "LeaksAProgramTypeTooTestProvider",
        id("6d2e3f4a-5b6c-4d7e-9f80-a1b2c3d4e5f7")
    );

    struct LeaksAProgramTypeToo;

    impl ExtensionDriver for LeaksAProgramTypeToo {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(start: &Start<'_>) -> Result<Self> {
            let program_type = start.program_type(&DATA)?;
            core::mem::forget(start.hook(&program_type, HOOK_CONFIG, Hook)?);
            // Registered last, so first on the list: the first sweep skips it and takes the
            // hook from the middle of the list.
            // SAFETY: the one provider of its type; no hook invokes its programs.
            core::mem::forget(unsafe { ProgramInfoProvider::register(&SECOND, TAG) }?);
            Ok(LeaksAProgramTypeToo)
        }
    }

    driver_entry!(static DRIVER: LeaksAProgramTypeToo);
}

/// Every allocation still outstanding is the leaked providers' (the test's tag), and there is
/// at least one: the sweep freed nothing.
fn only_the_leaked_state_is_left(kernel: &Kernel) {
    // A hook's detach may complete in a work item of the device, which frees the deleted
    // device object when it returns (as `assert_no_leaks` waits for them).
    kernel.wait_for_work_items();
    let left = kernel.pool_outstanding();
    assert!(
        !left.is_empty(),
        "the leaked provider's state stays allocated"
    );
    assert!(
        left.iter().all(|usage| usage.tag == "Leak"),
        "nothing but the leaked providers: {left:?}"
    );
}

/// Providers NMR still holds (the core's clients are registrations too).
fn providers(kernel: &Kernel) -> usize {
    kernel
        .nmr_registrations()
        .iter()
        .filter(|r| r.kind == "provider")
        .count()
}

fn swept_messages(kernel: &Kernel) -> usize {
    kernel.etw_messages_containing(SWEPT)
}

#[test]
fn unload_deregisters_a_leaked_hook_and_detaches_its_programs() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded below).
    let status = unsafe { leaks_its_hook::driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    let link = Link::attach(LinkSpec::new(PROGRAM, HOOK), |_| Ok(7)).expect("attach");
    assert_eq!(providers(&kernel), 2, "program type and hook");
    assert_eq!(swept_messages(&kernel), 0, "nothing swept while running");

    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once.
    unsafe { unload(object.as_ptr()) };
    assert_eq!(
        providers(&kernel),
        0,
        "the leaked hook is deregistered too: {:?}",
        kernel.nmr_registrations()
    );
    assert!(!link.is_attached(), "its program was detached");
    assert_eq!(swept_messages(&kernel), 1, "traced once, for the hook");
    assert_eq!(
        providers_stopped(&kernel),
        [HOOK, PROGRAM],
        "the leaked hook stops before the program type whose programs it runs"
    );
    drop(link);
    assert!(kernel.nmr_registrations().is_empty());
    drop(object);
    only_the_leaked_state_is_left(&kernel);
}

/// Unload sweeps the leaked hook first, stops the program type the SDK keeps, then sweeps
/// the leaked program-information provider: a sweep that left program types for later keeps
/// them listed.
#[test]
fn unload_stops_leaked_hooks_then_kept_program_types_then_leaked_ones() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded below).
    let status = unsafe { leaks_a_program_type_too::driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(providers(&kernel), 3);
    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once.
    unsafe { unload(object.as_ptr()) };
    assert_eq!(
        providers_stopped(&kernel),
        [HOOK, PROGRAM, SECOND.program_type()]
    );
    assert_eq!(
        swept_messages(&kernel),
        2,
        "the hook and the program type it leaked"
    );
    drop(object);
    only_the_leaked_state_is_left(&kernel);
}

#[test]
fn a_failed_start_deregisters_what_it_leaked() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { leaks_then_fails::driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, Error::InsufficientResources.ntstatus());
    assert!(kernel.nmr_registrations().is_empty());
    assert!(
        ProgramInfoClient::attach(PROGRAM).is_err(),
        "the core finds no provider of the type"
    );
    assert_eq!(swept_messages(&kernel), 1);
    assert_eq!(providers_stopped(&kernel), [HOOK, PROGRAM]);
    drop(object);
    only_the_leaked_state_is_left(&kernel);
}

#[test]
fn a_provider_dropped_after_the_sweep_is_neither_deregistered_again_nor_freed() {
    let kernel = Kernel::new();
    // SAFETY: the one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&DATA, TAG) }.expect("register");
    assert!(ProgramInfoClient::attach(PROGRAM).is_ok());
    // SAFETY: this thread is the only one running the provider's code, and drops nothing
    // until the sweep returns.
    assert_eq!(unsafe { sweep() }, 1);
    assert!(kernel.nmr_registrations().is_empty());
    // SAFETY: as above.
    assert_eq!(unsafe { sweep() }, 0, "once");
    // A second deregistration would be refused (and traced) by NMR, and a freed state would
    // leave nothing outstanding below.
    drop(provider);
    assert!(kernel.nmr_registrations().is_empty());
    only_the_leaked_state_is_left(&kernel);
}

#[test]
fn a_provider_dropped_normally_is_not_swept() {
    let kernel = Kernel::new();
    // SAFETY: as above.
    let provider = unsafe { ProgramInfoProvider::register(&DATA, TAG) }.expect("register");
    drop(provider);
    // SAFETY: as above.
    assert_eq!(unsafe { sweep() }, 0);
    kernel.assert_no_leaks();
}

#[test]
fn the_sweep_takes_every_leaked_provider_and_no_dropped_one() {
    let kernel = Kernel::new();
    // SAFETY: the one provider of each type; no hook invokes their programs.
    let register = |data| unsafe { ProgramInfoProvider::register(data, TAG) }.expect("register");
    let (first, second, third) = (register(&DATA), register(&SECOND), register(&THIRD));
    assert_eq!(providers(&kernel), 3);
    // The middle entry of the list goes with its drop; the first and the last are leaked.
    drop(second);
    core::mem::forget(first);
    core::mem::forget(third);
    assert_eq!(providers(&kernel), 2);
    // SAFETY: as above.
    assert_eq!(unsafe { sweep() }, 2);
    assert_eq!(providers(&kernel), 0);
    for program_type in [PROGRAM, SECOND.program_type(), THIRD.program_type()] {
        assert!(ProgramInfoClient::attach(program_type).is_err());
    }
    only_the_leaked_state_is_left(&kernel);
}

tracelogging::define_provider!(
    REFUSED_TRACE,
    "RefusedDeregistrationTestProvider",
    id("7e3f4a5b-6c7d-4e8f-a091-b2c3d4e5f6a8")
);

/// NMR refusing a deregistration (documented to answer `STATUS_PENDING`, so it should not)
/// leaves the provider registered: `Drop` traces the status and leaks the state rather than
/// free what NMR still reads, and puts it back on the list, so unload's sweep deregisters it
/// before the image goes. Until then the core stays attached to live state.
#[test]
fn a_provider_nmr_would_not_deregister_is_leaked_and_swept_at_unload() {
    use ebpf_ext_usersim::Fault;
    use ebpf_ext_usersim::tracelogging::Value;

    let kernel = Kernel::new();
    ebpf_extension_common::trace::initiate(&REFUSED_TRACE).expect("tracing");
    // SAFETY: the one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(PROGRAM).expect("the core attaches");
    let state = kernel.pool_outstanding_with_tag("Leak");
    assert_eq!(state, 2, "the provider's state and the core's binding");
    kernel.inject(Fault::Call("NmrDeregisterProvider", 1));
    drop(provider);
    assert_eq!(
        kernel.faults_triggered(),
        [Fault::Call("NmrDeregisterProvider", 1)]
    );
    assert!(
        kernel
            .etw_events()
            .iter()
            .any(|e| e.name == "EbpfExtApiError"
                && e.field("api") == Some(&Value::Str("NmrDeregisterProvider".into())))
    );
    assert_eq!(providers(&kernel), 1, "NMR still holds it");
    assert!(client.is_attached());
    assert_eq!(
        kernel.pool_outstanding_with_tag("Leak"),
        state,
        "nothing freed"
    );
    // SAFETY: this thread is the only one running the provider's code.
    assert_eq!(unsafe { sweep() }, 1, "unload's sweep takes it");
    assert_eq!(providers(&kernel), 0);
    assert!(!client.is_attached(), "its detach ran on the leaked state");
    assert_eq!(swept_messages(&kernel), 1);
    assert_eq!(
        kernel.pool_outstanding_with_tag("Leak"),
        1,
        "the cleanup freed the core's binding; the state stays"
    );
    drop(client);
    ebpf_extension_common::trace::terminate();
    only_the_leaked_state_is_left(&kernel);
}
