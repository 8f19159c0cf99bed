//! Links: the client data and dispatch table a hook provider sees, the core's checks of hook
//! providers, provider status, invocation and batches, and detach in every order.
#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

mod common;

use core::ffi::c_void;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::sync::Arc;
use std::thread;

use common::{
    ClientView, Gate, HookContext, HookProvider, OTHER_ATTACH_TYPE, OTHER_PROGRAM_TYPE,
    TEST_ATTACH_TYPE, TEST_BPF_ATTACH_TYPE, TEST_PROGRAM_TYPE, hook_data, wait_until,
};
use ebpf_ext_core_sim::{
    AttachProviderDataError, CoreError, Link, LinkSpec, Malformation, Refusal, batch_begins,
    batch_ends, open_batches,
};
use ebpf_ext_sys::ebpf_extension::ebpf_execution_context_state_t;
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_HOOK_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS,
    ebpf_result_t,
};
use ebpf_ext_sys::ebpf_structs::BPF_LINK_TYPE_PLAIN;
use ebpf_ext_sys::ebpf_windows::{EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION, ebpf_extension_header_t};
use ebpf_ext_sys::netioddk::{MIT_GUID, MIT_IF_LUID, NPI_MODULEID};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use ebpf_ext_usersim::Kernel;

const _: () = assert!(size_of::<ebpf_execution_context_state_t>() == 64);

fn spec() -> LinkSpec {
    LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE)
}

fn returns(value: u32) -> impl Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync {
    move |_| Ok(value)
}

#[test]
fn attach_presents_the_cores_client_data_and_dispatch_table() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = Link::attach_without_program_type(
        spec()
            .attach_parameter(&[1, 2, 3, 4])
            .prog_attach_flags(0x5),
        returns(0),
    )
    .expect("attached");
    assert!(link.is_attached());
    assert_eq!(link.bpf_attach_type(), Some(TEST_BPF_ATTACH_TYPE));
    assert_eq!(link.link_type(), Some(BPF_LINK_TYPE_PLAIN));
    assert_eq!(link.provider_status(), Some(STATUS_SUCCESS));
    let seen = provider.state.client(0);
    assert_eq!(seen.npi_id, EBPF_HOOK_EXTENSION_IID);
    assert_eq!(
        (seen.module_type, seen.module_guid),
        (MIT_GUID, link.module_id())
    );
    assert_eq!(seen.client_data, link.client_data() as usize);
    assert_eq!(seen.header, Some(EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION));
    assert_eq!(
        link.client_data_header(),
        EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION
    );
    assert_eq!((seen.data_size, seen.flags), (4, 0x5));
    assert_eq!(seen.parameter, [1, 2, 3, 4]);
    assert_eq!(
        seen.data,
        link.attach_parameter_address() as usize,
        "the core's copy"
    );
    assert_eq!(seen.binding_context, link.client_binding_context() as usize);
    assert_eq!(seen.dispatch, link.client_dispatch() as usize);
    let table = seen.table.expect("dispatch table");
    assert_eq!((table.version, table.count), (1, 4));
    assert!(table.ebpf_program_invoke_function.is_some());
    assert!(table.ebpf_program_batch_begin_invoke_function.is_some());
    assert!(table.ebpf_program_batch_invoke_function.is_some());
    assert!(table.ebpf_program_batch_end_invoke_function.is_some());

    // No attach parameter: `data` NULL, `data_size` 0; a fresh module GUID per link.
    let plain = Link::attach_without_program_type(spec(), returns(0)).expect("attached");
    let seen_plain = provider.state.client(1);
    assert_eq!((seen_plain.data, seen_plain.data_size), (0, 0));
    assert_ne!(seen_plain.module_guid, seen.module_guid);

    link.detach().expect("detach");
    drop(plain);
    assert_eq!(provider.state.cleanups.load(Ordering::SeqCst), 2);
    assert_eq!(kernel.nmr_binding_count(), 0);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn providers_not_for_the_link_are_declined() {
    let kernel = Kernel::new();
    let other_hook = HookProvider::register(OTHER_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let other_program = HookProvider::register(TEST_ATTACH_TYPE, OTHER_PROGRAM_TYPE);
    let error =
        Link::attach_without_program_type(spec(), returns(0)).expect_err("nothing for this link");
    assert!(
        matches!(
            &error,
            CoreError::ExtensionFailedToLoad {
                refusal: None,
                provider_status: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("2 other provider(s)"), "{error}");
    assert_eq!(other_hook.state.offers.load(Ordering::SeqCst), 0);
    assert_eq!(other_program.state.offers.load(Ordering::SeqCst), 0);
    other_hook.deregister();
    other_program.deregister();
    assert!(
        Link::attach_without_program_type(spec(), returns(0)).is_err(),
        "no provider at all"
    );
    kernel.assert_no_leaks();
}

#[test]
fn the_core_refuses_invalid_hook_providers() {
    let kernel = Kernel::new();
    let module = NPI_MODULEID::from_guid(TEST_ATTACH_TYPE);
    let mut luid_module = module;
    luid_module.Type = MIT_IF_LUID;
    let valid = hook_data(TEST_PROGRAM_TYPE);
    let with_header = |version: u16, size: usize| {
        let mut data = valid;
        data.header = ebpf_extension_header_t::new(version, size, 48);
        data
    };
    let mut no_total_size = valid;
    no_total_size.header.total_size = 0;
    let cases = [
        (
            module,
            None,
            Refusal::InvalidAttachProviderData(AttachProviderDataError::NullProviderData),
        ),
        (
            module,
            Some(with_header(2, 48)),
            Refusal::InvalidAttachProviderData(AttachProviderDataError::UnsupportedVersion {
                version: 2,
            }),
        ),
        (
            module,
            Some(with_header(1, 40)),
            Refusal::InvalidAttachProviderData(AttachProviderDataError::UnsupportedSize {
                size: 40,
            }),
        ),
        (
            module,
            Some(no_total_size),
            Refusal::InvalidAttachProviderData(AttachProviderDataError::TotalSizeBelowSize {
                size: 48,
                total_size: 0,
            }),
        ),
        (
            module,
            Some(hook_data(ebpf_ext_sys::ntdef::GUID::NULL)),
            Refusal::InvalidAttachProviderData(AttachProviderDataError::NullSupportedProgramType),
        ),
        (
            luid_module,
            Some(valid),
            Refusal::ModuleIdNotGuid {
                module_id_type: MIT_IF_LUID,
            },
        ),
    ];
    for (module_id, data, expected) in cases {
        let provider = HookProvider::register_with(module_id, data, STATUS_SUCCESS, false);
        let error = Link::attach_without_program_type(spec(), returns(0)).expect_err("refused");
        assert_eq!(error.refusal(), Some(&expected));
        assert_eq!(expected.status(), STATUS_INVALID_PARAMETER);
        assert_eq!(error.provider_status(), None);
        assert_eq!(
            provider.state.offers.load(Ordering::SeqCst),
            0,
            "{expected}"
        );
        provider.deregister();
    }
    kernel.assert_no_leaks();
}

#[test]
fn the_providers_attach_status_propagates() {
    let kernel = Kernel::new();
    for status in [
        STATUS_ACCESS_DENIED,
        STATUS_INVALID_PARAMETER,
        STATUS_INSUFFICIENT_RESOURCES,
    ] {
        let provider = HookProvider::register_with(
            NPI_MODULEID::from_guid(TEST_ATTACH_TYPE),
            Some(hook_data(TEST_PROGRAM_TYPE)),
            status,
            false,
        );
        let error =
            Link::attach_without_program_type(spec(), returns(0)).expect_err("provider failed");
        assert_eq!(error.provider_status(), Some(status), "{error}");
        assert_eq!(error.refusal(), None);
        assert_eq!(provider.state.offers.load(Ordering::SeqCst), 1);
        assert_eq!(kernel.nmr_binding_count(), 0);
        provider.deregister();
    }
    kernel.assert_no_leaks();
}

#[test]
fn a_second_provider_for_the_same_link_is_refused() {
    let kernel = Kernel::new();
    let first = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let second = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link =
        Link::attach_without_program_type(spec(), returns(0)).expect("attached to the first");
    assert_eq!(first.state.attaches.load(Ordering::SeqCst), 1);
    assert_eq!(second.state.offers.load(Ordering::SeqCst), 0);
    assert_eq!(link.last_refusal(), Some(Refusal::SecondProvider));
    drop(link);
    first.deregister();
    second.deregister();
    kernel.assert_no_leaks();
}

/// A link holds its program type's program-information provider, as the core's program
/// does: once that provider is gone, an invocation runs nothing and fails, with result 0.
#[test]
fn an_invocation_after_the_program_information_provider_left_fails() {
    let kernel = Kernel::new();
    let info = common::InfoProvider::register(TEST_PROGRAM_TYPE, &common::ProgramDataSpec::valid());
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let hook = provider.state;
    let runs = Arc::new(core::sync::atomic::AtomicU32::new(0));
    let link = Link::attach(spec(), {
        let runs = Arc::clone(&runs);
        move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        }
    })
    .expect("attached");
    assert_eq!(hook.invoke_value(0, 1), (EBPF_SUCCESS, 7));
    info.deregister();
    assert_eq!(
        hook.invoke_value(0, 1),
        (EBPF_EXTENSION_FAILED_TO_LOAD, 0),
        "the core's invoke without its provider's program data"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the program did not run");
    drop(link);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// The core loads no program of a type no provider publishes, so there is no link to offer a
/// hook: `Link::attach` fails before any hook provider sees an attach (and only
/// `attach_without_program_type`, for a hook tested alone, links one).
#[test]
fn a_program_of_a_type_nobody_publishes_never_reaches_a_hook() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let error = Link::attach(spec(), returns(0)).expect_err("no program information");
    assert!(
        matches!(&error, CoreError::ExtensionFailedToLoad { .. })
            && error
                .to_string()
                .contains("no program-information provider"),
        "{error}"
    );
    assert_eq!(
        provider.state.offers.load(Ordering::SeqCst),
        0,
        "no hook saw the link"
    );
    let link = Link::attach_without_program_type(spec(), returns(0)).expect("linked bare");
    assert_eq!(provider.state.offers.load(Ordering::SeqCst), 1);
    drop(link);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn invocation_runs_the_program_and_counts() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let hook = provider.state;
    let link = Link::attach_without_program_type(spec(), |context: *mut c_void| {
        // SAFETY: the test passes a `HookContext`, whose context is a `u32`.
        let value = unsafe { context.cast::<u32>().read() };
        Ok(value + 1)
    })
    .expect("attached");
    assert_eq!(link.last_irql(), None);
    let mut context = HookContext::new(41);
    assert_eq!(hook.invoke(0, context.ptr()), (EBPF_SUCCESS, 42));
    assert_eq!(link.invocations(), 1);
    assert_eq!(link.last_irql(), Some(PASSIVE_LEVEL));
    assert_ne!(context.header[0], 0, "the core's execution state in slot 0");
    assert_eq!(
        context.header[1], 0,
        "no context descriptor known to a link"
    );
    assert_eq!(context.header[2..], [0; 6], "slots 2-7 untouched");

    // At DISPATCH_LEVEL, as a WFP classify runs.
    // SAFETY: raising from PASSIVE_LEVEL; lowered back below on this thread.
    let old = unsafe { ebpf_ext_sys::intrin::KeRaiseIrql(DISPATCH_LEVEL) };
    let at_dispatch = hook.invoke(0, context.ptr());
    // SAFETY: the value the raise returned.
    unsafe { ebpf_ext_sys::wdm::KeLowerIrql(old) };
    assert_eq!(at_dispatch, (EBPF_SUCCESS, 42));
    assert_eq!(link.last_irql(), Some(DISPATCH_LEVEL));
    assert_eq!(link.invocations(), 2);

    // A program error is what invoke returns.
    let failing =
        Link::attach_without_program_type(spec(), |_| Err(EBPF_NO_MEMORY)).expect("attached");
    assert_eq!(hook.invoke_value(1, 0), (EBPF_NO_MEMORY, 0));
    assert_eq!(failing.invocations(), 1);
    drop(failing);
    drop(link);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// The core's invoke is begin → batch invoke → end on a state of its own: while the program
/// runs, that state is an open batch of this thread named in the context header and the
/// thread is inside an epoch, and the epoch enter and exit each raise to DISPATCH_LEVEL and
/// lower back. None of it is counted
/// as the provider's batches.
#[test]
fn a_single_invoke_is_a_batch_of_one_on_the_cores_own_state() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let hook = provider.state;
    let link = Link::attach_without_program_type(spec(), |context: *mut c_void| {
        // SAFETY: the test passes a `HookContext`: the header's slot 0 is 64 bytes in front.
        let state = unsafe { context.cast::<u64>().wrapping_sub(8).read() };
        let open = u32::try_from(open_batches()).expect("few batches");
        // The batch is an epoch of the core's: the program may reach epoch memory.
        let epoch = if ebpf_ext_core_sim::in_epoch() {
            0
        } else {
            1000
        };
        Ok(if state == 0 { 100 } else { open + epoch })
    })
    .expect("attached");
    let raises = kernel.irql_raises();
    let mut context = HookContext::new(0);
    assert_eq!(
        hook.invoke(0, context.ptr()),
        (EBPF_SUCCESS, 1),
        "one open batch while it ran"
    );
    assert_eq!(
        kernel.irql_raises() - raises,
        2,
        "epoch enter and exit each raise"
    );
    assert_eq!((batch_begins(), batch_ends(), open_batches()), (0, 0, 0));
    assert!(
        !ebpf_ext_core_sim::in_epoch(),
        "the epoch ended with the batch"
    );
    assert_eq!((link.invocations(), link.batch_invocations()), (1, 0));
    drop(link);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn batch_begin_invoke_end() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = Link::attach_without_program_type(spec(), returns(9)).expect("attached");
    let table = provider.state.client(0).table.unwrap();
    let begin = table.ebpf_program_batch_begin_invoke_function.unwrap();
    let invoke = table.ebpf_program_batch_invoke_function.unwrap();
    let end = table.ebpf_program_batch_end_invoke_function.unwrap();
    assert_eq!((batch_begins(), batch_ends(), open_batches()), (0, 0, 0));
    let mut state = [0u64; 8];
    let state_ptr: *mut c_void = state.as_mut_ptr().cast();

    // SAFETY: a 64-byte buffer, announced as smaller.
    assert_eq!(unsafe { begin(32, state_ptr) }, EBPF_INVALID_ARGUMENT);
    assert_eq!(batch_begins(), 0);

    // SAFETY: a 64-byte buffer.
    assert_eq!(unsafe { begin(64, state_ptr) }, EBPF_SUCCESS);
    assert_ne!(state, [0; 8], "the core's record written");
    assert_eq!(open_batches(), 1);
    let mut context = HookContext::new(0);
    let mut result = 0u32;
    for _ in 0..3 {
        // SAFETY: the begun state and the link's binding context.
        let status = unsafe {
            invoke(
                link.client_binding_context(),
                context.ptr(),
                &raw mut result,
                state_ptr,
            )
        };
        assert_eq!((status, result), (EBPF_SUCCESS, 9));
        assert_eq!(
            context.header[0], state_ptr as u64,
            "the batch state in the context header"
        );
    }
    // SAFETY: the begun state.
    assert_eq!(unsafe { end(state_ptr) }, EBPF_SUCCESS);
    assert_eq!(state, [0; 8], "state cleared");
    assert_eq!(link.batch_invocations(), 3);
    assert_eq!(link.invocations(), 0);
    assert_eq!((batch_begins(), batch_ends(), open_batches()), (1, 1, 0));
    drop(link);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn detach_waits_until_the_extension_completes_its_pending_detach() {
    let kernel = Kernel::new();
    let provider = HookProvider::register_with(
        NPI_MODULEID::from_guid(TEST_ATTACH_TYPE),
        Some(hook_data(TEST_PROGRAM_TYPE)),
        STATUS_SUCCESS,
        true,
    );
    let hook = provider.state;
    let gate = Arc::new(Gate::default());
    let program_gate = Arc::clone(&gate);
    let link = Link::attach_without_program_type(spec(), move |_| {
        program_gate.wait();
        Ok(7)
    })
    .expect("attached");
    let invoker = kernel.spawn(move || hook.invoke_value(0, 0));
    wait_until("the invocation is in flight", || link.in_flight() == 1);
    // The extension's detach work: wait for its rundown, then complete.
    let completer = kernel.spawn(move || {
        wait_until("the detach is pending", || {
            !hook.pending.lock().unwrap().is_empty()
        });
        wait_until("the provider's rundown drains", || {
            hook.in_flight.load(Ordering::SeqCst) == 0
        });
        hook.complete_pending();
    });
    let finished = Arc::new(AtomicBool::new(false));
    let finished_flag = Arc::clone(&finished);
    let detacher = kernel.spawn(move || {
        let result = link.detach();
        finished_flag.store(true, Ordering::SeqCst);
        result
    });
    wait_until("the detach is pending", || {
        !hook.pending.lock().unwrap().is_empty()
    });
    thread::sleep(Duration::from_millis(100));
    assert!(
        !finished.load(Ordering::SeqCst),
        "detach returned while an invocation was in flight"
    );
    gate.open();
    assert_eq!(invoker.join().unwrap(), (EBPF_SUCCESS, 7));
    detacher.join().unwrap().expect("clean detach");
    completer.join().unwrap();
    assert_eq!(hook.cleanups.load(Ordering::SeqCst), 1);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn a_provider_completing_detach_under_a_running_invocation_is_reported() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let hook = provider.state;
    let gate = Arc::new(Gate::default());
    let program_gate = Arc::clone(&gate);
    let link = Link::attach_without_program_type(spec(), move |_| {
        program_gate.wait();
        Ok(1)
    })
    .expect("attached");
    let invoker = kernel.spawn(move || hook.invoke_value(0, 0));
    wait_until("the invocation is in flight", || link.in_flight() == 1);
    let watch = link.detach_watch();
    let detacher = kernel.spawn(move || link.detach());
    wait_until("the detach counted the running invocation", || {
        watch.counted_in_flight()
    });
    assert_eq!(
        hook.detaches.load(Ordering::SeqCst),
        1,
        "the provider detached"
    );
    gate.open();
    assert_eq!(invoker.join().unwrap(), (EBPF_SUCCESS, 1));
    assert_eq!(
        detacher.join().unwrap(),
        Err(CoreError::DetachedWhileInvoking { in_flight: 1 })
    );
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn the_provider_may_go_away_first() {
    let kernel = Kernel::new();
    // Synchronous detach.
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = Link::attach_without_program_type(spec(), returns(0)).expect("attached");
    provider.deregister();
    assert!(!link.is_attached());
    assert_eq!(link.detach_count(), 1);
    assert_eq!(link.bpf_attach_type(), Some(TEST_BPF_ATTACH_TYPE), "kept");
    link.detach().expect("detach after the provider left");

    // Pending detach, completed from another thread while the provider deregisters.
    let provider = HookProvider::register_with(
        NPI_MODULEID::from_guid(TEST_ATTACH_TYPE),
        Some(hook_data(TEST_PROGRAM_TYPE)),
        STATUS_SUCCESS,
        true,
    );
    let hook = provider.state;
    let link = Link::attach_without_program_type(spec(), returns(0)).expect("attached");
    let completer = kernel.spawn(move || {
        wait_until("the detach is pending", || {
            !hook.pending.lock().unwrap().is_empty()
        });
        hook.complete_pending();
    });
    provider.deregister();
    completer.join().unwrap();
    assert!(!link.is_attached());
    drop(link);
    assert!(
        kernel.nmr_registrations().is_empty(),
        "dropping deregisters"
    );
    kernel.assert_no_leaks();
}

/// One malformation and what the provider must see.
struct Case {
    spec: LinkSpec,
    check: fn(&ClientView),
}

fn header_of(view: &ClientView) -> ebpf_extension_header_t {
    view.header.expect("client data")
}

#[expect(clippy::too_many_lines, reason = "one table entry per malformation")]
fn malformations() -> Vec<Case> {
    let with_parameter = || spec().attach_parameter(&[7, 7, 7, 7]);
    vec![
        Case {
            spec: spec().malformed(Malformation::NoClientData),
            check: |v| assert_eq!((v.client_data, v.header), (0, None)),
        },
        Case {
            spec: spec().malformed(Malformation::HeaderVersion(2)),
            check: |v| assert_eq!(header_of(v).version, 2),
        },
        Case {
            spec: spec().malformed(Malformation::HeaderSize(24)),
            check: |v| assert_eq!(header_of(v).size, 24),
        },
        Case {
            spec: spec().malformed(Malformation::HeaderSize(4096)),
            check: |v| assert_eq!(header_of(v).size, 4096),
        },
        Case {
            spec: spec().malformed(Malformation::HeaderTotalSize(16)),
            check: |v| assert_eq!(header_of(v).total_size, 16),
        },
        Case {
            spec: with_parameter().malformed(Malformation::NullData),
            check: |v| assert_eq!((v.data, v.data_size), (0, 4)),
        },
        Case {
            spec: with_parameter().malformed(Malformation::DataSize(2)),
            check: |v| {
                assert_ne!(v.data, 0);
                assert_eq!((v.data_size, v.parameter.as_slice()), (2, &[7, 7][..]));
            },
        },
        Case {
            spec: with_parameter().malformed(Malformation::DataSize(8)),
            check: |v| assert_eq!(v.parameter, [7, 7, 7, 7, 0, 0, 0, 0], "zero-padded"),
        },
        Case {
            spec: spec().malformed(Malformation::DataSize(8)),
            check: |v| assert_eq!((v.data, v.data_size), (0, 8)),
        },
        Case {
            spec: spec().prog_attach_flags(u64::MAX),
            check: |v| assert_eq!(v.flags, u64::MAX),
        },
        Case {
            spec: spec().malformed(Malformation::NoDispatchTable),
            check: |v| assert_eq!((v.dispatch, v.table.is_none()), (0, true)),
        },
        Case {
            spec: spec().malformed(Malformation::DispatchVersion(2)),
            check: |v| assert_eq!(v.table.unwrap().version, 2),
        },
        Case {
            spec: spec().malformed(Malformation::DispatchCount(0)),
            check: |v| assert_eq!(v.table.unwrap().count, 0),
        },
        Case {
            spec: spec().malformed(Malformation::DispatchCount(1)),
            check: |v| {
                let t = v.table.unwrap();
                assert_eq!(t.count, 1);
                assert!(t.ebpf_program_batch_begin_invoke_function.is_some(), "kept");
            },
        },
        Case {
            spec: spec().malformed(Malformation::GenericDispatchTable),
            check: |v| {
                let t = v.table.unwrap();
                assert_eq!((t.version, t.count), (1, 1));
                assert!(t.ebpf_program_invoke_function.is_some());
                assert!(t.ebpf_program_batch_begin_invoke_function.is_none());
                assert!(t.ebpf_program_batch_invoke_function.is_none());
                assert!(t.ebpf_program_batch_end_invoke_function.is_none());
            },
        },
        Case {
            spec: spec().malformed(Malformation::NullInvoke),
            check: |v| {
                let t = v.table.unwrap();
                assert!(t.ebpf_program_invoke_function.is_none());
                assert!(t.ebpf_program_batch_invoke_function.is_some());
            },
        },
        Case {
            spec: spec().malformed(Malformation::NullBatchFunctions),
            check: |v| {
                let t = v.table.unwrap();
                assert!(t.ebpf_program_invoke_function.is_some());
                assert!(t.ebpf_program_batch_begin_invoke_function.is_none());
                assert!(t.ebpf_program_batch_invoke_function.is_none());
                assert!(t.ebpf_program_batch_end_invoke_function.is_none());
            },
        },
        Case {
            spec: with_parameter()
                .malformed(Malformation::HeaderVersion(0))
                .malformed(Malformation::NullData)
                .malformed(Malformation::GenericDispatchTable)
                .malformed(Malformation::DispatchCount(0)),
            check: |v| {
                assert_eq!(header_of(v).version, 0);
                assert_eq!((v.data, v.data_size), (0, 4));
                assert_eq!(v.table.unwrap().count, 0);
            },
        },
    ]
}

#[test]
fn malformed_links_present_what_the_test_asked_for() {
    let kernel = Kernel::new();
    // This provider attaches whatever it is offered; an SDK provider must refuse these.
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    for case in malformations() {
        let description = format!("{:?}", case.spec);
        let link = Link::attach_without_program_type(case.spec, returns(0)).expect(&description);
        let offered = provider
            .state
            .offered
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        (case.check)(&offered);
        link.detach().expect(&description);
    }
    provider.deregister();
    kernel.assert_no_leaks();
}
