//! The hook provider against usersim and a test link: attach policies, validation, callbacks,
//! asynchronous detach, unregister, invocation variants, faults and IRQL.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::too_many_lines,
    clippy::similar_names,
    reason = "tests"
)]

mod support;

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use ebpf_ext_hook::{
    AttachPolicy, AttachRequest, Attached, Flow, HookConfig, HookExtension, HookProvider,
    Invocation, MAX_CLIENTS_PER_PARAMETER, ProgramContext,
};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_result::EBPF_NO_MEMORY;
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::netioddk::NmrDeregisterClient;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntdef::HANDLE;
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER, STATUS_NO_MEMORY, STATUS_PENDING,
};
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DISPATCH_LEVEL, DelayedWorkQueue, IoAllocateWorkItem, IoDeleteDevice,
    IoFreeWorkItem, IoQueueWorkItem, PASSIVE_LEVEL,
};
use ebpf_ext_sys::{Error, Result};
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{DriverObject, Fault, Kernel, set_current_irql};
use support::{ClientSpec, DispatchSpec, Link};

const ATTACH_TYPE: GUID = GUID::from_u128(0xa82e37b1_aee7_11ec_9a30_18602489beee);
const PROGRAM_TYPE: GUID = GUID::from_u128(0x92ec8e39_aeec_11ec_9a30_18602489beee);
const TAG: PoolTag = PoolTag::new(*b"HkTs");

tracelogging::define_provider!(
    TRACE,
    "HookTestProvider",
    id("f2f2ca01-ad02-4a07-9e90-95a2334f3692")
);

#[derive(Default)]
struct TestHook {
    reject: AtomicBool,
    exclusive_wildcard: bool,
    attaches: AtomicU32,
    detaches: AtomicU32,
    first_attaches: AtomicU32,
    last_detaches: AtomicU32,
    flags_seen: Mutex<Vec<u64>>,
    /// Set while an attach or detach callback runs; `overlaps` counts callbacks that found it
    /// set (the provider promises they never overlap).
    in_callback: AtomicBool,
    overlaps: AtomicU32,
}

impl TestHook {
    fn enter(&self) {
        if self.in_callback.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Widen the window in which an overlapping callback would be seen.
        thread::yield_now();
    }

    fn leave(&self) {
        self.in_callback.store(false, Ordering::SeqCst);
    }
}

impl HookExtension for TestHook {
    type Parameter = u32;
    type ClientData = u32;
    type Context = u64;

    fn on_attach(
        &self,
        request: &AttachRequest<u32>,
        attached: &Attached<'_, Self>,
    ) -> Result<u32> {
        self.enter();
        let result = self.attach(request, attached);
        self.leave();
        result
    }

    fn on_detach(&self, _client: &u32) {
        self.enter();
        self.detaches.fetch_add(1, Ordering::SeqCst);
        self.leave();
    }

    fn on_first_attach(&self) -> Result<()> {
        self.enter();
        self.first_attaches.fetch_add(1, Ordering::SeqCst);
        self.leave();
        Ok(())
    }

    fn on_last_detach(&self) {
        self.enter();
        self.last_detaches.fetch_add(1, Ordering::SeqCst);
        self.leave();
    }
}

impl TestHook {
    fn attach(&self, request: &AttachRequest<u32>, attached: &Attached<'_, Self>) -> Result<u32> {
        if self.reject.load(Ordering::SeqCst) {
            return Err(Error::AccessDenied);
        }
        if self.exclusive_wildcard {
            attached.check_exclusive_wildcard(request)?;
        }
        self.flags_seen
            .lock()
            .unwrap()
            .push(request.prog_attach_flags);
        Ok(self.attaches.fetch_add(1, Ordering::SeqCst))
    }
}

struct Setup {
    kernel: Kernel,
    driver: DriverObject,
    device: *mut DEVICE_OBJECT,
}

impl Setup {
    /// A kernel, a device, and the test's trace provider registered until `finish` (the
    /// registration is per usersim kernel, so tests running as threads of one process keep
    /// theirs apart).
    fn new() -> Self {
        Setup::with_kernel(Kernel::new())
    }

    /// As [`Setup::new`], on a kernel configured by the test.
    fn with_kernel(kernel: Kernel) -> Self {
        ebpf_ext_trace::initiate(&TRACE).expect("tracing");
        let mut driver = DriverObject::new();
        let device = driver.create_device().expect("IoCreateDevice");
        Setup {
            kernel,
            driver,
            device,
        }
    }

    fn provider(&self, policy: AttachPolicy, hook: TestHook) -> HookProvider<TestHook> {
        self.provider_with(config(policy), hook)
    }

    fn provider_with<H: HookExtension<Parameter = u32>>(
        &self,
        config: HookConfig<u32>,
        hook: H,
    ) -> HookProvider<H> {
        // SAFETY: the device outlives the provider (deleted in `finish` after the provider).
        unsafe { HookProvider::register(config, hook, self.device) }.expect("register")
    }

    fn finish(self) {
        self.kernel.wait_for_work_items();
        // SAFETY: created in `new`, deleted once.
        unsafe { IoDeleteDevice(self.device) };
        ebpf_ext_trace::terminate();
        self.kernel.assert_no_leaks();
        drop(self.driver);
    }
}

fn config(policy: AttachPolicy) -> HookConfig<u32> {
    HookConfig {
        attach_type: ATTACH_TYPE,
        program_type: PROGRAM_TYPE,
        bpf_attach_type: 3,
        link_type: 2,
        policy,
        wildcard: Some(0),
        max_clients: 64,
        tag: TAG,
    }
}

/// A program that returns `verdict` and records `id` in `log`.
fn program(
    verdict: u32,
    id: u32,
    log: &Arc<Mutex<Vec<u32>>>,
) -> impl Fn(*mut c_void) -> core::result::Result<u32, i32> + Send + Sync + 'static {
    let log = Arc::clone(log);
    move |_| {
        log.lock().unwrap().push(id);
        Ok(verdict)
    }
}

fn link(param: Option<u32>, verdict: u32, id: u32, log: &Arc<Mutex<Vec<u32>>>) -> Link {
    let spec = param.map_or_else(ClientSpec::wildcard, |p| {
        ClientSpec::with_parameter(&p.to_le_bytes())
    });
    Link::attach(ATTACH_TYPE, spec, program(verdict, id, log))
}

/// A hook whose configuration no program could ever attach to is refused at registration,
/// with the reason traced: the core refuses attach provider data naming GUID_NULL as its
/// program type.
#[test]
fn a_hook_no_program_could_attach_to_is_refused_and_traced() {
    let setup = Setup::new();
    let refused = |config: HookConfig<u32>, reason: &str| {
        // SAFETY: the device outlives the attempt.
        let outcome = unsafe { HookProvider::register(config, TestHook::default(), setup.device) };
        assert_eq!(outcome.err(), Some(Error::InvalidParameter), "{reason}");
        let events = setup.kernel.etw_events();
        assert!(
            events.iter().any(|e| e.name == "EbpfExtGenericMessage"
                && e.field("Message") == Some(&Value::Str(reason.into()))),
            "{reason} is traced: {events:?}"
        );
    };
    let good = config(AttachPolicy::Unrestricted);
    refused(
        HookConfig {
            program_type: GUID::NULL,
            ..good
        },
        "hook refused: the program type is GUID_NULL",
    );
    refused(
        HookConfig {
            attach_type: GUID::NULL,
            ..good
        },
        "hook refused: the attach type is GUID_NULL",
    );
    refused(
        HookConfig {
            max_clients: 0,
            ..good
        },
        "hook refused: max_clients is 0",
    );
    setup.finish();
}

/// `invoke_with`'s verdict sees the context as each program left it (netebpfext's
/// `process_verdict(context, verdict)`: its connect hooks stop at a redirect, which only the
/// context shows).
#[test]
fn the_verdict_sees_the_context_each_program_left() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let writer = |written: u64| {
        Link::attach(
            ATTACH_TYPE,
            ClientSpec::with_parameter(&1u32.to_le_bytes()),
            move |ctx| {
                // SAFETY: the test passes a ProgramContext<u64>; the program sees its context.
                unsafe { *ctx.cast::<u64>() += written };
                Ok(0)
            },
        )
    };
    let _links = [writer(1), writer(10), writer(100)];
    let mut seen = Vec::new();
    let mut ctx = ProgramContext::new(0u64);
    let verdict = provider.invoke_with(
        &1,
        &mut ctx,
        |_| true,
        |context, _| {
            seen.push(*context);
            if *context >= 11 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    );
    assert_eq!(verdict, Ok(0));
    assert_eq!(
        seen,
        [1, 11],
        "the context after each program; the third does not run"
    );
    assert_eq!(ctx.context, 11);
}

#[test]
fn single_attach_invokes_the_program_with_the_context() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::SingleAttach, TestHook::default());
    let first = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |ctx| {
        // SAFETY: the test passes a ProgramContext<u64>; the program sees its context.
        Ok(u32::try_from(unsafe { *ctx.cast::<u64>() }).unwrap() + 1)
    });
    assert!(first.is_attached());
    let mut ctx = ProgramContext::new(41u64);
    assert_eq!(provider.invoke(&7, &mut ctx), Ok(42));
    let log = Arc::new(Mutex::new(Vec::new()));
    let second = link(None, 0, 2, &log);
    assert!(!second.is_attached());
    assert_eq!(second.provider_status(), Some(STATUS_ACCESS_DENIED));
    first.detach();
    setup.kernel.wait_for_work_items();
    assert_eq!(provider.invoke(&7, &mut ctx), Err(Error::ObjectNotFound));
    let third = link(None, 0, 3, &log);
    assert!(third.is_attached(), "a detached program frees the hook");
    drop((second, third));
    assert_eq!(provider.extension().detaches.load(Ordering::SeqCst), 2);
    drop(provider);
    setup.finish();
}

#[test]
fn single_attach_per_parameter_rules() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::SingleAttachPerParameter, TestHook::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let wildcard = link(None, 0, 1, &log);
    assert!(wildcard.is_attached());
    let specific = link(Some(5), 0, 2, &log);
    assert!(
        specific.is_attached(),
        "an existing wildcard does not block a specific parameter"
    );
    assert!(
        !link(Some(5), 0, 3, &log).is_attached(),
        "same parameter twice"
    );
    assert!(
        !link(None, 0, 4, &log).is_attached(),
        "wildcard while anything is attached"
    );
    assert!(
        !link(Some(0), 0, 5, &log).is_attached(),
        "the wildcard value is a wildcard"
    );
    assert!(link(Some(6), 0, 6, &log).is_attached());
    // The wildcard attached first, yet the program attached for 5 runs before it.
    log.lock().unwrap().clear();
    let mut ctx = ProgramContext::new(0u64);
    assert_eq!(provider.invoke(&5, &mut ctx), Ok(0));
    assert_eq!(*log.lock().unwrap(), [2, 1], "specific, then wildcard");
    drop((wildcard, specific));
    drop(provider);
    setup.finish();
}

#[test]
fn multi_attach_limits_and_orders_wildcards_last() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut links = vec![link(None, 0, 100, &log)];
    for i in 0..MAX_CLIENTS_PER_PARAMETER {
        let l = link(Some(9), 0, u32::try_from(i).unwrap(), &log);
        assert!(l.is_attached(), "client {i}");
        links.push(l);
    }
    let over = link(Some(9), 0, 99, &log);
    assert!(!over.is_attached());
    assert_eq!(over.provider_status(), Some(STATUS_ACCESS_DENIED));
    links.push(link(Some(10), 0, 200, &log));
    let mut ctx = ProgramContext::new(0u64);
    provider.invoke(&9, &mut ctx).unwrap();
    let order = log.lock().unwrap().clone();
    let mut expected: Vec<u32> = (0..16).collect();
    expected.push(100);
    assert_eq!(
        order, expected,
        "specific programs in attach order, then the wildcard"
    );
    log.lock().unwrap().clear();
    provider.invoke(&10, &mut ctx).unwrap();
    assert_eq!(*log.lock().unwrap(), [200, 100]);
    drop((links, over));
    drop(provider);
    setup.finish();
}

#[test]
fn unrestricted_ignores_attach_data() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::Unrestricted, TestHook::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let links: Vec<Link> = (0..20u32)
        .map(|i| {
            let spec = ClientSpec::with_parameter(&vec![7u8; usize::try_from(i).unwrap() + 1]);
            Link::attach(ATTACH_TYPE, spec, program(i, i, &log))
        })
        .collect();
    assert!(links.iter().all(Link::is_attached));
    assert_eq!(provider.clients().iter().count(), 20);
    let mut ctx = ProgramContext::new(0u64);
    assert_eq!(provider.invoke(&0, &mut ctx), Ok(19));
    drop(links);
    drop(provider);
    setup.finish();
}

#[test]
fn exclusive_wildcard_helper() {
    let setup = Setup::new();
    let hook = TestHook {
        exclusive_wildcard: true,
        ..TestHook::default()
    };
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, hook);
    let log = Arc::new(Mutex::new(Vec::new()));
    let specific = link(Some(3), 0, 1, &log);
    assert!(specific.is_attached());
    assert!(
        !link(None, 0, 2, &log).is_attached(),
        "a wildcard excludes everyone else"
    );
    assert!(!link(Some(3), 0, 3, &log).is_attached(), "same parameter");
    assert!(link(Some(4), 0, 4, &log).is_attached());
    drop(specific);
    drop(provider);
    setup.finish();
}

/// Every malformed client is refused with STATUS_INVALID_PARAMETER and a trace event naming
/// the reason, and leaves no allocation behind.
#[test]
fn malformed_client_data_is_rejected() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let header = |version, size, total_size| ebpf_extension_header_t {
        version,
        size,
        total_size,
    };
    let mut cases: Vec<(String, ClientSpec, &str)> = Vec::new();
    let base = ClientSpec::with_parameter(&5u32.to_le_bytes());
    cases.push((
        "no client data".into(),
        ClientSpec {
            no_client_data: true,
            ..base.clone()
        },
        "no client data",
    ));
    for version in [0u16, 2, 3, 0x100, 0xFFFF] {
        cases.push((
            format!("version {version}"),
            ClientSpec {
                header: header(version, 48, 48),
                ..base.clone()
            },
            "version",
        ));
    }
    for size in [0usize, 1, 8, 24, 40, 47] {
        cases.push((
            format!("size {size}"),
            ClientSpec {
                header: header(1, size, 48),
                ..base.clone()
            },
            "header size",
        ));
    }
    for total in [0usize, 47] {
        cases.push((
            format!("total_size {total}"),
            ClientSpec {
                header: header(1, 48, total),
                ..base.clone()
            },
            "total_size",
        ));
    }
    for data_size in [1usize, 2, 3, 5, 6, 7, 8, 16, 64, 4096] {
        let spec = ClientSpec {
            data: Some(vec![0; data_size]),
            ..base.clone()
        };
        cases.push((
            format!("data_size {data_size}"),
            spec,
            "attach parameter size",
        ));
    }
    cases.push((
        "NULL data".into(),
        ClientSpec {
            null_data: true,
            ..base.clone()
        },
        "data NULL",
    ));
    cases.push((
        "NULL data, size from header".into(),
        ClientSpec {
            null_data: true,
            data_size: Some(4),
            data: None,
            ..base.clone()
        },
        "data NULL",
    ));
    cases.push((
        "huge data_size".into(),
        ClientSpec {
            data_size: Some(usize::MAX),
            ..base.clone()
        },
        "attach parameter size",
    ));
    let versions = [0u16, 2, 0xFFFF].map(|v| {
        (
            format!("dispatch version {v:#x}"),
            DispatchSpec::Version(v),
            "dispatch table version",
        )
    });
    for (name, dispatch, reason) in [
        (
            "NULL dispatch".to_owned(),
            DispatchSpec::Null,
            "no client dispatch table",
        ),
        (
            "count 0 (too small)".to_owned(),
            DispatchSpec::CountZero,
            "count is 0",
        ),
        (
            "NULL invoke".to_owned(),
            DispatchSpec::NullInvoke,
            "no invoke",
        ),
    ]
    .into_iter()
    .chain(versions)
    {
        cases.push((
            name.clone(),
            ClientSpec {
                dispatch,
                ..base.clone()
            },
            reason,
        ));
        cases.push((
            format!("{name}, wildcard"),
            ClientSpec {
                dispatch,
                ..ClientSpec::wildcard()
            },
            reason,
        ));
    }
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (name, spec, reason) in cases {
        setup.kernel.etw_clear();
        let l = Link::attach(ATTACH_TYPE, spec, |_| Ok(0));
        assert!(!l.is_attached(), "{name}: attached");
        assert_eq!(
            l.provider_status(),
            Some(STATUS_INVALID_PARAMETER),
            "{name}"
        );
        let events = setup.kernel.etw_events();
        let message = setup.kernel.etw_messages().into_iter().next();
        assert!(
            message.as_deref().is_some_and(|m| m.contains(reason)),
            "{name}: trace event {events:#?}"
        );
        assert_eq!(
            events[0].field("status"),
            Some(&Value::U64(u64::from(
                STATUS_INVALID_PARAMETER.cast_unsigned()
            ))),
            "{name}"
        );
        drop(l);
    }
    assert_eq!(provider.clients().len(), 0);
    // Valid shapes the provider must accept: a one-entry generic table (upstream harnesses), a
    // table without batch entries, a larger future header, a wildcard by zero data_size.
    let ok = [
        ClientSpec {
            dispatch: DispatchSpec::InvokeOnly,
            ..base.clone()
        },
        ClientSpec {
            dispatch: DispatchSpec::NoBatch,
            ..base.clone()
        },
        ClientSpec {
            header: header(1, 56, 64),
            ..base.clone()
        },
        ClientSpec::wildcard(),
    ];
    let links: Vec<Link> = ok
        .into_iter()
        .map(|spec| Link::attach(ATTACH_TYPE, spec, |_| Ok(1)))
        .collect();
    assert!(links.iter().all(Link::is_attached));
    drop(links);
    drop(provider);
    setup.finish();
}

#[test]
fn extension_callbacks_see_requests_and_can_reject() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let spec = ClientSpec {
        prog_attach_flags: 0xF00D,
        ..ClientSpec::with_parameter(&8u32.to_le_bytes())
    };
    let a = Link::attach(ATTACH_TYPE, spec, |_| Ok(0));
    assert!(a.is_attached());
    assert_eq!(*provider.extension().flags_seen.lock().unwrap(), [0xF00D]);
    {
        let clients = provider.clients();
        let c = clients.iter().next().unwrap();
        assert_eq!(
            (c.parameter(), c.prog_attach_flags(), *c.data()),
            (Some(&8), 0xF00D, 0)
        );
    }
    provider.extension().reject.store(true, Ordering::SeqCst);
    let b = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(0));
    assert_eq!(b.provider_status(), Some(STATUS_ACCESS_DENIED));
    drop((a, b));
    assert_eq!(provider.extension().detaches.load(Ordering::SeqCst), 1);
    drop(provider);
    setup.finish();
}

#[test]
fn verdict_stops_the_chain_and_filter_selects() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let links = [
        link(Some(1), 0, 1, &log),
        link(Some(1), 1, 2, &log),
        link(Some(1), 0, 3, &log),
    ];
    let mut ctx = ProgramContext::new(0u64);
    let verdict = provider.invoke_with(
        &1,
        &mut ctx,
        |_| true,
        |_, v| if v == 1 { Flow::Stop } else { Flow::Continue },
    );
    assert_eq!(verdict, Ok(1));
    assert_eq!(
        *log.lock().unwrap(),
        [1, 2],
        "the third program does not run after a blocking verdict"
    );
    log.lock().unwrap().clear();
    let run = provider.invoke_until(&1, &mut ctx, |v| v == 1);
    assert_eq!(
        run,
        Ok(Invocation {
            result: 1,
            programs_run: 2
        }),
        "invoke_until says what stopped the chain and how many ran"
    );
    assert_eq!(
        provider
            .invoke_until(&1, &mut ctx, |_| false)
            .map(|r| r.programs_run),
        Ok(3)
    );
    assert_eq!(
        provider.invoke_until(&9, &mut ctx, |_| true),
        Err(Error::ObjectNotFound)
    );
    log.lock().unwrap().clear();
    let only_odd = provider.invoke_with(&1, &mut ctx, |c| c.data() % 2 == 0, |_, _| Flow::Continue);
    assert_eq!(only_odd, Ok(0));
    assert_eq!(*log.lock().unwrap(), [1, 3]);
    assert_eq!(
        provider.invoke_with(&1, &mut ctx, |_| false, |_, _| Flow::Continue),
        Err(Error::ObjectNotFound)
    );
    drop(links);
    drop(provider);
    setup.finish();
}

#[test]
fn invoke_failure_is_returned() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::SingleAttach, TestHook::default());
    let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Err(EBPF_NO_MEMORY));
    let mut ctx = ProgramContext::new(0u64);
    assert_eq!(provider.invoke(&0, &mut ctx), Err(Error::NoMemory));
    drop(l);
    drop(provider);
    setup.finish();
}

#[test]
fn a_failed_invoke_counts_as_zero_and_the_chain_goes_on() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let failing = {
        let log = Arc::clone(&log);
        Link::attach(
            ATTACH_TYPE,
            ClientSpec::with_parameter(&1u32.to_le_bytes()),
            move |_| {
                log.lock().unwrap().push(1);
                Err(EBPF_NO_MEMORY)
            },
        )
    };
    let links = [
        link(Some(1), 7, 2, &log),
        link(Some(1), 0xC000_0022, 3, &log),
    ];
    let mut ctx = ProgramContext::new(0u64);
    assert_eq!(
        provider.invoke_until(&1, &mut ctx, |_| false),
        Err(Error::NoMemory),
        "invoke_until stops at the failure"
    );
    assert_eq!(*log.lock().unwrap(), [1]);
    log.lock().unwrap().clear();
    setup.kernel.etw_clear();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let run = provider.invoke_until_failures_as_zero(&1, &mut ctx, |result| {
        seen.lock().unwrap().push(result);
        result & 0x8000_0000 != 0
    });
    assert_eq!(
        run,
        Ok(Invocation {
            result: 0xC000_0022,
            programs_run: 3
        }),
        "the failure counts as 0 and the later programs run until one stops the chain"
    );
    assert_eq!(*log.lock().unwrap(), [1, 2, 3]);
    assert_eq!(*seen.lock().unwrap(), [0, 7, 0xC000_0022]);
    let events = setup.kernel.etw_events();
    assert!(
        events.iter().any(|e| e.name == "EbpfExtGenericMessage"
            && e.field("Message") == Some(&Value::Str("program invoke failed".into()))
            && e.field("status") == Some(&Value::U64(u64::from(STATUS_NO_MEMORY.cast_unsigned())))),
        "the failure is traced: {events:?}"
    );
    log.lock().unwrap().clear();
    let first_stops = provider.invoke_until_failures_as_zero(&1, &mut ctx, |_| true);
    assert_eq!(
        first_stops,
        Ok(Invocation {
            result: 0,
            programs_run: 1
        }),
        "a stop on the failure's 0 is honoured"
    );
    assert_eq!(
        provider.invoke_until_failures_as_zero(&9, &mut ctx, |_| false),
        Err(Error::ObjectNotFound),
        "nothing attached for the parameter"
    );
    drop(links);
    drop(failing);
    drop(provider);
    setup.finish();
}

#[test]
fn expanded_stack_invocation() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::SingleAttach, TestHook::default());
    let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(5));
    let mut ctx = ProgramContext::new(0u64);
    set_current_irql(DISPATCH_LEVEL);
    assert_eq!(
        provider.invoke_on_expanded_stack(&0, &mut ctx, |_| true, |_, _| Flow::Continue),
        Ok(5)
    );
    set_current_irql(PASSIVE_LEVEL);
    assert_eq!(setup.kernel.stack_expansions(), 1);
    assert_eq!(
        l.state.last_irql.load(Ordering::SeqCst),
        u32::from(DISPATCH_LEVEL)
    );
    setup
        .kernel
        .inject(Fault::Call("KeExpandKernelStackAndCalloutEx", 1));
    setup.kernel.etw_clear();
    assert_eq!(
        provider.invoke_on_expanded_stack(&0, &mut ctx, |_| true, |_, _| Flow::Continue),
        Err(Error::Unsuccessful)
    );
    let events = setup.kernel.etw_events();
    assert!(events.iter().any(|e| e.name == "EbpfExtApiError"
        && e.field("api") == Some(&Value::Str("KeExpandKernelStackAndCalloutEx".into()))));
    assert_eq!(l.invocations(), 1);
    drop(l);
    drop(provider);
    setup.finish();
}

#[test]
fn batch_uses_the_batch_entries_once_per_batch() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let batched = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(1));
    let single = Link::attach(
        ATTACH_TYPE,
        ClientSpec {
            dispatch: DispatchSpec::InvokeOnly,
            ..ClientSpec::with_parameter(&2u32.to_le_bytes())
        },
        |_| Ok(2),
    );
    let mut ctx = ProgramContext::new(0u64);
    provider.with_batch(&2, |batch| {
        for _ in 0..64 {
            assert_eq!(batch.invoke(&mut ctx), Ok(1), "the wildcard runs last");
        }
    });
    let log = support::batch_log();
    assert_eq!((log.begins, log.ends), (1, 1));
    assert_eq!(batched.state.batch_invocations.load(Ordering::SeqCst), 64);
    assert_eq!(
        single.invocations(),
        64,
        "a table without batch entries is invoked singly"
    );
    // Until the first result: only the specific program runs for each event.
    provider.with_batch(&2, |batch| {
        for _ in 0..3 {
            let run = batch.invoke_until(&mut ctx, |_| true);
            assert_eq!(run.map(|r| (r.result, r.programs_run)), Ok((2, 1)));
        }
        let run = batch.invoke_until(&mut ctx, |_| false);
        assert_eq!(run.map(|r| (r.result, r.programs_run)), Ok((1, 2)));
    });
    assert_eq!(single.invocations(), 68);
    assert_eq!(batched.state.batch_invocations.load(Ordering::SeqCst), 65);
    drop((batched, single));
    drop(provider);
    setup.finish();
}

/// The core links the state's address into a per-CPU list at batch begin and unlinks it at
/// batch end: the address it sees must be the same at begin, at every batch invoke and at end.
#[test]
fn batch_state_keeps_one_address_from_begin_to_end() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let links = [
        Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(1)),
        Link::attach(
            ATTACH_TYPE,
            ClientSpec::with_parameter(&2u32.to_le_bytes()),
            |_| Ok(2),
        ),
    ];
    let mut ctx = ProgramContext::new(0u64);
    provider.with_batch(&2, |batch| {
        for _ in 0..4 {
            assert_eq!(batch.invoke(&mut ctx), Ok(1));
        }
    });
    let log = support::batch_log();
    assert_eq!((log.begins, log.ends), (1, 1));
    assert_eq!(log.states.len(), 1 + 4 * 2 + 1, "{:?}", log.states);
    let begun = log.states[0].1;
    for (call, address) in &log.states {
        assert_eq!(
            *address, begun,
            "{call:?} saw the state at {address:#x}, batch begin at {begun:#x}"
        );
    }
    drop(links);
    drop(provider);
    setup.finish();
}

/// A batch whose closure unwinds still ends (once), and its snapshot no longer holds up a
/// detach.
#[test]
fn batch_ends_when_its_closure_unwinds() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::MultiAttachWithWildcard, TestHook::default());
    let link = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(1));
    let unwound = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        provider.with_batch(&0, |batch| {
            let mut ctx = ProgramContext::new(0u64);
            assert_eq!(batch.invoke(&mut ctx), Ok(1));
            panic!("the event handler failed");
        })
    }));
    assert!(unwound.is_err());
    let log = support::batch_log();
    assert_eq!((log.begins, log.ends), (1, 1));
    assert!(log.states.iter().all(|(_, a)| *a == log.states[0].1));
    link.detach();
    setup.kernel.wait_for_work_items();
    assert_eq!(provider.clients().len(), 0, "the detach completed");
    drop(provider);
    setup.finish();
}

#[test]
fn detach_waits_for_an_invocation_in_flight() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::SingleAttach, TestHook::default());
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (e, r) = (Arc::clone(&entered), Arc::clone(&release));
    let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), move |_| {
        e.store(true, Ordering::SeqCst);
        while !r.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        Ok(7)
    });
    let detached = AtomicBool::new(false);
    thread::scope(|s| {
        let invoker = setup.kernel.scoped(s, || {
            let mut ctx = ProgramContext::new(0u64);
            set_current_irql(DISPATCH_LEVEL);
            let r = provider.invoke(&0, &mut ctx);
            set_current_irql(PASSIVE_LEVEL);
            r
        });
        while !entered.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        let detacher = setup.kernel.scoped(s, || {
            l.detach();
            detached.store(true, Ordering::SeqCst);
        });
        thread::sleep(Duration::from_millis(100));
        assert!(
            !detached.load(Ordering::SeqCst),
            "detach completed while the program was running"
        );
        release.store(true, Ordering::SeqCst);
        assert_eq!(invoker.join().unwrap(), Ok(7));
        detacher.join().unwrap();
    });
    assert!(detached.load(Ordering::SeqCst));
    let mut ctx = ProgramContext::new(0u64);
    assert_eq!(provider.invoke(&0, &mut ctx), Err(Error::ObjectNotFound));
    drop(provider);
    setup.finish();
}

/// A program whose own link is deregistered while it runs, at DISPATCH_LEVEL (NMR calls the
/// provider's detach callback there, on the invoking thread, inside the invocation): the
/// callback must neither wait nor fail, the invocation finishes with every program of its
/// snapshot, and the detach completes once it has returned.
#[test]
fn a_program_detached_from_inside_its_own_invocation_finishes_first() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::Unrestricted, TestHook::default());
    let handle = Arc::new(std::sync::OnceLock::<usize>::new());
    let deregistered = Arc::new(Mutex::new(None));
    let (h, d) = (Arc::clone(&handle), Arc::clone(&deregistered));
    let first = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), move |_| {
        let handle = *h.get().expect("set after attach");
        // SAFETY: the link's own registration handle, deregistered once (here).
        let status = unsafe { NmrDeregisterClient(handle as HANDLE) };
        *d.lock().unwrap() = Some((status, ebpf_ext_sys::intrin::KeGetCurrentIrql()));
        Ok(1)
    });
    handle.set(first.handle()).expect("once");
    let second = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(2));
    assert!(first.is_attached() && second.is_attached());

    let mut ctx = ProgramContext::new(0u64);
    set_current_irql(DISPATCH_LEVEL);
    let run = provider.invoke_until(&0, &mut ctx, |_| false);
    set_current_irql(PASSIVE_LEVEL);
    let run = run.expect("the invocation finishes");
    assert_eq!(
        (run.result, run.programs_run),
        (2, 2),
        "the rest of the snapshot still runs after the first program's detach started"
    );
    assert_eq!(
        *deregistered.lock().unwrap(),
        Some((STATUS_PENDING, DISPATCH_LEVEL)),
        "the provider's detach callback left the wait to a work item"
    );
    assert!(!first.is_attached(), "NMR detached the client side at once");
    first.detach();
    assert_eq!(provider.extension().detaches.load(Ordering::SeqCst), 1);
    let run = provider.invoke_until(&0, &mut ctx, |_| false);
    assert_eq!(run.map(|r| (r.result, r.programs_run)), Ok((2, 1)));
    drop(second);
    drop(provider);
    setup.finish();
}

#[test]
fn unregister_with_programs_attached() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::Unrestricted, TestHook::default());
    let links: Vec<Link> = (0..5)
        .map(|_| Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(0)))
        .collect();
    drop(provider);
    assert!(
        links.iter().all(|l| !l.is_attached()),
        "the core saw every link detached"
    );
    drop(links);
    setup.finish();
}

#[test]
fn invocation_under_attach_and_detach_churn() {
    const INVOKERS: u32 = 2;
    const LINKS: u32 = 100;
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::Unrestricted, TestHook::default());
    let stop = AtomicBool::new(false);
    // Invokers that have finished at least one invocation.
    let invoked = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..INVOKERS {
            setup.kernel.scoped(s, || {
                let mut ctx = ProgramContext::new(0u64);
                let mut first = true;
                while !stop.load(Ordering::SeqCst) {
                    set_current_irql(DISPATCH_LEVEL);
                    let result = provider.invoke(&0, &mut ctx);
                    set_current_irql(PASSIVE_LEVEL);
                    // At most one link is attached at a time: either none is (nothing ran) or
                    // the link of round `i` ran its program, which returns `i`.
                    assert!(
                        matches!(result, Ok(i) if i < LINKS)
                            || result == Err(Error::ObjectNotFound),
                        "unexpected invocation result {result:?}"
                    );
                    if first {
                        first = false;
                        invoked.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        setup.kernel.scoped(s, || {
            // The churn starts once every invoker has invoked, so that it runs while they
            // invoke. If one has not within 10 s, the churn runs anyway (so that the invokers
            // are stopped), and the check after the scope fails.
            let deadline = Instant::now() + Duration::from_secs(10);
            while invoked.load(Ordering::SeqCst) < INVOKERS && Instant::now() < deadline {
                thread::yield_now();
            }
            for i in 0..LINKS {
                let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), move |_| Ok(i));
                assert!(l.is_attached());
                drop(l);
            }
            stop.store(true, Ordering::SeqCst);
        });
    });
    assert_eq!(
        invoked.load(Ordering::SeqCst),
        INVOKERS,
        "every invoker invoked before the churn"
    );
    assert_eq!(provider.clients().len(), 0);
    drop(provider);
    setup.finish();
}

#[test]
fn attach_and_detach_callbacks_never_overlap() {
    let setup = Setup::new();
    let provider = setup.provider(AttachPolicy::Unrestricted, TestHook::default());
    thread::scope(|s| {
        for _ in 0..2 {
            setup.kernel.scoped(s, || {
                for i in 0..200u32 {
                    let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), move |_| Ok(i));
                    assert!(l.is_attached());
                    drop(l);
                }
            });
        }
    });
    let hook = provider.extension();
    assert_eq!(hook.attaches.load(Ordering::SeqCst), 400);
    assert_eq!(hook.detaches.load(Ordering::SeqCst), 400);
    let first = hook.first_attaches.load(Ordering::SeqCst);
    assert!(first >= 1);
    assert_eq!(first, hook.last_detaches.load(Ordering::SeqCst));
    assert_eq!(
        hook.overlaps.load(Ordering::SeqCst),
        0,
        "an attach and a detach callback overlapped"
    );
    drop(provider);
    setup.finish();
}

/// A callback of [`CountingHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    FirstAttach,
    Attach,
    Detach,
    LastDetach,
}

/// An extension that logs its callbacks in the order the provider makes them, and refuses a
/// first attach or an attach when told to.
#[derive(Default)]
struct CountingHook {
    /// Shared with the test, which reads it after the provider is gone too.
    calls: Arc<Mutex<Vec<Call>>>,
    refuse_first_attach: AtomicBool,
    refuse_attach: AtomicBool,
}

impl CountingHook {
    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl HookExtension for CountingHook {
    type Parameter = u32;
    type ClientData = ();
    type Context = u64;

    fn on_first_attach(&self) -> Result<()> {
        self.log(Call::FirstAttach);
        if self.refuse_first_attach.load(Ordering::SeqCst) {
            return Err(Error::AccessDenied);
        }
        Ok(())
    }

    fn on_attach(&self, _: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<()> {
        self.log(Call::Attach);
        if self.refuse_attach.load(Ordering::SeqCst) {
            return Err(Error::AccessDenied);
        }
        Ok(())
    }

    fn on_detach(&self, (): &()) {
        self.log(Call::Detach);
    }

    fn on_last_detach(&self) {
        self.log(Call::LastDetach);
    }
}

/// The calls logged since the last `take`.
fn take(calls: &Mutex<Vec<Call>>) -> Vec<Call> {
    core::mem::take(&mut *calls.lock().unwrap())
}

/// A provider with a [`CountingHook`] under [`AttachPolicy::Unrestricted`], and its call log.
fn counting_provider(
    setup: &Setup,
    hook: CountingHook,
) -> (HookProvider<CountingHook>, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::clone(&hook.calls);
    (
        setup.provider_with(config(AttachPolicy::Unrestricted), hook),
        calls,
    )
}

fn wildcard_link() -> Link {
    Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(0))
}

#[test]
fn first_attach_and_last_detach_bracket_the_attached_programs() {
    use Call::{Attach, Detach, FirstAttach, LastDetach};
    let setup = Setup::new();
    let (provider, calls) = counting_provider(&setup, CountingHook::default());
    let (a, b) = (wildcard_link(), wildcard_link());
    assert!(a.is_attached() && b.is_attached());
    assert_eq!(take(&calls), [FirstAttach, Attach, Attach]);
    a.detach();
    setup.kernel.wait_for_work_items();
    assert_eq!(take(&calls), [Detach], "one program is still attached");
    b.detach();
    setup.kernel.wait_for_work_items();
    assert_eq!(take(&calls), [Detach, LastDetach]);
    let (c, d) = (wildcard_link(), wildcard_link());
    assert!(c.is_attached() && d.is_attached());
    assert_eq!(
        take(&calls),
        [FirstAttach, Attach, Attach],
        "the next attach is a first attach again"
    );
    drop(provider);
    assert_eq!(
        take(&calls),
        [Detach, Detach, LastDetach],
        "unregistering detaches every program, then reports the last detach once"
    );
    assert!(!c.is_attached() && !d.is_attached());
    drop((c, d));
    setup.finish();
}

#[test]
fn a_refused_first_attach_refuses_the_attach() {
    use Call::{Attach, Detach, FirstAttach, LastDetach};
    let setup = Setup::new();
    let hook = CountingHook {
        refuse_first_attach: AtomicBool::new(true),
        ..CountingHook::default()
    };
    let (provider, calls) = counting_provider(&setup, hook);
    setup.kernel.etw_clear();
    let refused = wildcard_link();
    assert!(!refused.is_attached());
    assert_eq!(refused.provider_status(), Some(STATUS_ACCESS_DENIED));
    assert_eq!(take(&calls), [FirstAttach], "no on_attach, nothing to undo");
    assert_eq!(
        setup
            .kernel
            .etw_message_count("first attach refused by the extension"),
        1
    );
    assert_eq!(provider.clients().len(), 0);
    provider
        .extension()
        .refuse_first_attach
        .store(false, Ordering::SeqCst);
    let accepted = wildcard_link();
    assert!(accepted.is_attached());
    assert_eq!(
        take(&calls),
        [FirstAttach, Attach],
        "the refused attach was not counted"
    );
    drop((refused, accepted));
    assert_eq!(take(&calls), [Detach, LastDetach]);
    drop(provider);
    setup.finish();
}

#[test]
fn a_refused_attach_undoes_the_first_attach() {
    use Call::{Attach, Detach, FirstAttach, LastDetach};
    let setup = Setup::new();
    let hook = CountingHook {
        refuse_attach: AtomicBool::new(true),
        ..CountingHook::default()
    };
    let (provider, calls) = counting_provider(&setup, hook);
    let refuse = |on: bool| {
        provider
            .extension()
            .refuse_attach
            .store(on, Ordering::SeqCst);
    };
    let refused = wildcard_link();
    assert!(!refused.is_attached());
    assert_eq!(refused.provider_status(), Some(STATUS_ACCESS_DENIED));
    assert_eq!(take(&calls), [FirstAttach, Attach, LastDetach]);
    refuse(false);
    let accepted = wildcard_link();
    assert!(accepted.is_attached());
    assert_eq!(
        take(&calls),
        [FirstAttach, Attach],
        "the undone first attach left the count at 0"
    );
    refuse(true);
    let second = wildcard_link();
    assert!(!second.is_attached());
    assert_eq!(
        take(&calls),
        [Attach],
        "not a first attach: there is nothing to undo"
    );
    drop((refused, second));
    assert_eq!(take(&calls), []);
    drop(accepted);
    assert_eq!(take(&calls), [Detach, LastDetach]);
    drop(provider);
    setup.finish();
}

/// The provider cannot allocate the client after the extension accepted the attach: on_detach
/// undoes on_attach, then on_last_detach undoes on_first_attach.
#[test]
fn a_client_allocation_failure_undoes_attach_and_first_attach() {
    use Call::{Attach, Detach, FirstAttach, LastDetach};
    let setup = Setup::new();
    let (provider, calls) = counting_provider(&setup, CountingHook::default());
    setup.kernel.etw_clear();
    // The client is the one pool allocation of an attach (the link's registration, NMR's
    // binding and the work item are allocated by other routines).
    setup.kernel.inject(Fault::Call("ExAllocatePool2", 1));
    let refused = wildcard_link();
    assert_eq!(
        setup.kernel.faults_triggered(),
        [Fault::Call("ExAllocatePool2", 1)]
    );
    assert!(!refused.is_attached());
    assert_eq!(
        refused.provider_status(),
        Some(ebpf_ext_sys::ntstatus::STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!(
        setup
            .kernel
            .etw_message_count("could not allocate the client"),
        1
    );
    assert_eq!(take(&calls), [FirstAttach, Attach, Detach, LastDetach]);
    let accepted = wildcard_link();
    assert!(accepted.is_attached());
    assert_eq!(take(&calls), [FirstAttach, Attach]);
    drop((refused, accepted));
    assert_eq!(take(&calls), [Detach, LastDetach]);
    drop(provider);
    setup.finish();
}

/// Holds the kernel's one worker thread until released, or for 10 seconds at most (so that a
/// failing test still unwinds: dropping its links waits for their detach work items).
#[derive(Default)]
struct Gate {
    entered: AtomicBool,
    release: AtomicBool,
}

unsafe extern "win64" fn wait_at_gate(_: *mut DEVICE_OBJECT, context: *mut c_void) {
    // SAFETY: the context is the test's Gate, which outlives the routine (the test waits for
    // every work item before dropping it).
    let gate = unsafe { &*context.cast::<Gate>() };
    gate.entered.store(true, Ordering::SeqCst);
    let start = std::time::Instant::now();
    while !gate.release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
        thread::yield_now();
    }
}

/// A program marked detaching whose work item has not run yet is no longer invoked, but its
/// on_detach has not run: it still counts, so an attach meanwhile is not a first attach.
#[test]
fn a_program_being_detached_still_counts_as_attached() {
    use Call::{Attach, Detach, FirstAttach, LastDetach};
    let setup = Setup::with_kernel(Kernel::with_config(ebpf_ext_usersim::Config {
        worker_threads: 1,
        ..ebpf_ext_usersim::Config::default()
    }));
    let (provider, calls) = counting_provider(&setup, CountingHook::default());
    let mut detaching = wildcard_link();
    assert!(detaching.is_attached());
    assert_eq!(take(&calls), [FirstAttach, Attach]);
    let gate = Gate::default();
    // SAFETY: the device is live until `finish`.
    let item = unsafe { IoAllocateWorkItem(setup.device) };
    assert!(!item.is_null(), "IoAllocateWorkItem");
    // SAFETY: a live item, not queued; the gate outlives the routine (waited for below).
    unsafe {
        IoQueueWorkItem(
            item,
            wait_at_gate,
            DelayedWorkQueue,
            core::ptr::from_ref(&gate).cast_mut().cast(),
        );
    };
    while !gate.entered.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    // Its detach work item now waits behind the gate.
    detaching.start_detach();
    assert!(provider.clients().iter().next().is_none(), "no longer live");
    assert_eq!(
        (provider.clients().len(), provider.clients().is_empty()),
        (0, true),
        "len and is_empty count what iter yields"
    );
    let attached = wildcard_link();
    assert!(attached.is_attached());
    assert_eq!(
        take(&calls),
        [Attach],
        "the detaching program's on_detach has not run: not a first attach"
    );
    gate.release.store(true, Ordering::SeqCst);
    detaching.detach();
    setup.kernel.wait_for_work_items();
    // SAFETY: allocated above; its routine has returned and it is not queued.
    unsafe { IoFreeWorkItem(item) };
    assert_eq!(take(&calls), [Detach], "one program is still attached");
    attached.detach();
    assert_eq!(take(&calls), [Detach, LastDetach]);
    drop(provider);
    setup.finish();
}

/// The scenario the failure sweeps run: register, two attaches, an invocation, two detaches,
/// unregister; whatever fails must fail cleanly.
fn lifecycle(kernel: &Kernel) {
    let mut driver = DriverObject::new();
    let Ok(device) = driver.create_device() else {
        return;
    };
    // SAFETY: the device outlives the provider.
    let provider = unsafe {
        HookProvider::register(
            config(AttachPolicy::MultiAttachWithWildcard),
            TestHook::default(),
            device,
        )
    };
    if let Ok(provider) = provider {
        let a = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(0));
        let b = Link::attach(
            ATTACH_TYPE,
            ClientSpec::with_parameter(&1u32.to_le_bytes()),
            |_| Ok(1),
        );
        let mut ctx = ProgramContext::new(0u64);
        let expected = if a.is_attached() || b.is_attached() {
            Ok(0)
        } else {
            Err(Error::ObjectNotFound)
        };
        let outcome =
            provider.invoke_on_expanded_stack(&1, &mut ctx, |_| true, |_, _| Flow::Continue);
        // An injected stack-expansion failure is EBPF_FAILED (Unsuccessful); otherwise the
        // outcome depends on which links attached.
        if outcome != Err(Error::Unsuccessful) {
            assert_eq!(outcome.map(|_| 0), expected);
        }
        drop((a, b));
        let hook = provider.extension();
        assert_eq!(
            hook.attaches.load(Ordering::SeqCst),
            hook.detaches.load(Ordering::SeqCst),
            "every accepted attach is matched by on_detach, whatever failed"
        );
        assert_eq!(
            hook.first_attaches.load(Ordering::SeqCst),
            hook.last_detaches.load(Ordering::SeqCst),
            "every first attach is matched by on_last_detach, whatever failed"
        );
        drop(provider);
    }
    kernel.wait_for_work_items();
    // SAFETY: created above, deleted once.
    unsafe { IoDeleteDevice(device) };
}

/// Every allocation failure on register, attach, detach and unregister: a clean status each
/// time and nothing leaked.
#[test]
fn allocation_failure_sweep() {
    let points = ebpf_ext_usersim::sweep_allocation_failures(lifecycle);
    assert!(points >= 6, "swept {points} allocation points");
}

/// Every failure of a kernel routine that can fail (NmrRegisterProvider, IoAllocateWorkItem,
/// ExAllocateCacheAwareRundownProtection, NmrClientAttachProvider,
/// KeExpandKernelStackAndCalloutEx, ...) along the same lifecycle.
#[test]
fn api_failure_sweep() {
    let points = ebpf_ext_usersim::sweep_call_failures(lifecycle);
    assert!(points >= 8, "swept {points} API failure points");
}

#[test]
fn named_api_failures() {
    for api in ["NmrRegisterProvider", "IoAllocateWorkItem"] {
        let setup = Setup::new();
        setup.kernel.inject(Fault::Call(api, 1));
        // SAFETY: the device outlives the provider.
        let provider = unsafe {
            HookProvider::register(
                config(AttachPolicy::SingleAttach),
                TestHook::default(),
                setup.device,
            )
        };
        if api == "NmrRegisterProvider" {
            assert!(matches!(
                provider,
                Err(Error::Api {
                    api: "NmrRegisterProvider",
                    ..
                })
            ));
        } else {
            {
                let provider = provider.expect("register");
                let l = Link::attach(ATTACH_TYPE, ClientSpec::wildcard(), |_| Ok(0));
                assert!(!l.is_attached());
                assert_eq!(
                    l.provider_status(),
                    Some(ebpf_ext_sys::ntstatus::STATUS_INSUFFICIENT_RESOURCES)
                );
                drop(l);
                drop(provider);
            }
        }
        setup.finish();
    }
}

#[test]
fn a_hook_config_built_with_new_has_the_common_settings_and_each_with_changes_one() {
    let (attach, program) = (GUID::from_u128(1), GUID::from_u128(2));
    let tag = PoolTag::new(*b"Cfg!");
    let plain = HookConfig::<u32>::new(attach, program, 7, tag);
    assert_eq!(
        (
            plain.attach_type,
            plain.program_type,
            plain.bpf_attach_type,
            plain.tag,
        ),
        (attach, program, 7, tag)
    );
    assert_eq!(
        (
            plain.link_type,
            plain.policy,
            plain.wildcard,
            plain.max_clients
        ),
        (
            ebpf_ext_sys::ebpf_structs::BPF_LINK_TYPE_UNSPEC,
            AttachPolicy::Unrestricted,
            None,
            64
        )
    );
    let changed = plain
        .with_policy(AttachPolicy::MultiAttachWithWildcard)
        .with_wildcard(0)
        .with_link_type(ebpf_ext_sys::ebpf_structs::BPF_LINK_TYPE_PLAIN)
        .with_max_clients(3);
    assert_eq!(
        (
            changed.link_type,
            changed.policy,
            changed.wildcard,
            changed.max_clients
        ),
        (
            ebpf_ext_sys::ebpf_structs::BPF_LINK_TYPE_PLAIN,
            AttachPolicy::MultiAttachWithWildcard,
            Some(0),
            3
        )
    );
    assert_eq!(
        (changed.attach_type, changed.program_type, changed.tag),
        (attach, program, tag)
    );
    // 0 is refused by `register` (see
    // `a_hook_no_program_could_attach_to_is_refused_and_traced`), not by the builder: a value
    // computed at run time must not panic in a driver.
    let none = core::hint::black_box(0);
    assert_eq!(plain.with_max_clients(none).max_clients, 0);
}
