//! A driver with two program types and two hooks, each hook with its own extension type and
//! attach policy, declared with `ExtensionDriver` and `driver_entry!`: both start in order,
//! every failure while starting is undone, programs of both types run through their hooks
//! (and call their helpers, declared with `helpers!`), a typed IOCTL fires them, and unload
//! stops everything.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ffi::c_void;
use core::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_usersim::{
    Caller, DriverObject, Kernel, sweep_allocation_failures, sweep_call_failures,
};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

tracelogging::define_provider!(
    TRACE,
    "TwoHooksTestProvider",
    id("0b6c3d0e-5f3e-4b57-9d0c-8a1c2f6e7d10")
);

const TAG: PoolTag = PoolTag::new(*b"TwoH");
const BIND_PROGRAM: GUID = GUID::from_u128(0x7d0e_0001_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const CONNECT_PROGRAM: GUID = GUID::from_u128(0x7d0e_0002_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const BIND_HOOK: GUID = GUID::from_u128(0x7d0e_0003_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const CONNECT_HOOK: GUID = GUID::from_u128(0x7d0e_0004_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

// ---- Two program types, each with its own context and helper --------------------------------

no_padding! {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct BindContext {
        data_start: DataPointer,
        data_end: DataPointer,
        port: u64,
    }
}

no_padding! {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ConnectContext {
        data_start: DataPointer,
        data_end: DataPointer,
        address: u64,
    }
}

fn bind_port(context: &BindContext) -> u64 {
    context.port
}

fn connect_address_plus(context: &ConnectContext, add: u64) -> u64 {
    context.address + add
}

program_type! {
    static BIND_DATA = c"two_bind", BIND_PROGRAM, 2001;
    context BindContext, data data_start..data_end;
    helpers {
        0x1_0000, c"two_bind_port" => bind_port(Context);
    }
}
program_type! {
    static CONNECT_DATA = c"two_connect", CONNECT_PROGRAM, 2002;
    context ConnectContext, data data_start..data_end;
    helpers {
        0x1_0000, c"two_connect_address_plus" => connect_address_plus(Context, Anything);
    }
}

// ---- Two hooks, each with its own extension type and policy ----------------------------------

struct Bind;
impl HookExtension for Bind {
    type Parameter = u32;
    type ClientData = ();
    type Context = BindContext;
    fn on_attach(&self, _: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

struct Connect;
impl HookExtension for Connect {
    type Parameter = ();
    type ClientData = ();
    type Context = ConnectContext;
    fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

/// The bind hook: `bpf_attach_type` 2001, many programs per port and wildcard ones.
const BIND_HOOK_CONFIG: HookConfig<u32> = HookConfig::new(BIND_HOOK, BIND_PROGRAM, 2001, TAG)
    .with_policy(AttachPolicy::MultiAttachWithWildcard)
    .with_wildcard(0)
    .with_link_type(1)
    .with_max_clients(8);
/// The connect hook: `bpf_attach_type` 2002, one program.
const CONNECT_HOOK_CONFIG: HookConfig<()> =
    HookConfig::new(CONNECT_HOOK, CONNECT_PROGRAM, 2002, TAG)
        .with_policy(AttachPolicy::SingleAttach)
        .with_link_type(1)
        .with_max_clients(8);

// ---- A typed IOCTL that fires both ----------------------------------------------------------

ebpf_extension_common::wire! {
    #[derive(Debug, Clone, Copy, Default)]
    struct FireRequest { port: u32, address: u32 }
}
ebpf_extension_common::wire! {
    #[derive(Debug, Clone, Copy, Default)]
    struct FireReply { bind_result: u32, connect_result: u32 }
}

enum Fire {}
impl Ioctl for Fire {
    const CODE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x900, METHOD_BUFFERED, FILE_ANY_ACCESS);
    type Request = FireRequest;
    type Reply = FireReply;
}

// ---- The driver ---------------------------------------------------------------------------

/// The hooks; the SDK stops the program types after them.
struct TwoHooks {
    bind: HookProvider<Bind>,
    connect: HookProvider<Connect>,
}

impl ExtensionDriver for TwoHooks {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = TAG;
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\TwoHooks"),
        link: utf16!("\\GLOBAL??\\TwoHooks"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(start: &Start<'_>) -> Result<Self> {
        let bind_type = start.program_type(&BIND_DATA)?;
        let connect_type = start.program_type(&CONNECT_DATA)?;
        let bind = start.hook(&bind_type, BIND_HOOK_CONFIG, Bind)?;
        let connect = start.hook(&connect_type, CONNECT_HOOK_CONFIG, Connect)?;
        Ok(TwoHooks { bind, connect })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Fire::CODE => request.handle::<Fire>(|call| {
                let FireRequest { port, address } = *call.request();
                let mut bind = ProgramContext::new(BindContext {
                    data_start: DataPointer::NULL,
                    data_end: DataPointer::NULL,
                    port: u64::from(port),
                });
                let mut connect = ProgramContext::new(ConnectContext {
                    data_start: DataPointer::NULL,
                    data_end: DataPointer::NULL,
                    address: u64::from(address),
                });
                let refused = |_| Refusal::new(STATUS_INVALID_PARAMETER, "no program");
                let bind_result = self.bind.invoke(&port, &mut bind).map_err(refused)?;
                let connect_result = self.connect.invoke(&(), &mut connect).map_err(refused)?;
                Ok(call.reply(&FireReply {
                    bind_result,
                    connect_result,
                }))
            }),
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: TwoHooks);

// ---- Tests --------------------------------------------------------------------------------

struct Loaded {
    object: DriverObject,
}

fn load() -> Option<Loaded> {
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded in `unload`).
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    (status == STATUS_SUCCESS).then_some(Loaded { object })
}

impl Loaded {
    fn unload(mut self) {
        let unload = self.object.get().DriverUnload.expect("DriverUnload set");
        // SAFETY: the driver's own unload routine, once.
        unsafe { unload(self.object.as_ptr()) };
    }
}

type HelperFn = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;

fn helper(program_type: GUID) -> (ProgramInfoClient, HelperFn) {
    let client = ProgramInfoClient::attach(program_type).expect("program info");
    let address = client.info().helpers[0].address.expect("address");
    // SAFETY: the helper address the provider published, in the eBPF helper convention.
    let f = unsafe { core::mem::transmute::<u64, HelperFn>(address) };
    (client, f)
}

#[test]
fn two_program_types_and_two_hooks_run_and_stop() {
    let kernel = Kernel::new();
    let driver = load().expect("DriverEntry");
    assert_eq!(
        kernel.nmr_registrations().len(),
        4,
        "two program types, two hooks"
    );
    let (bind_info, bind_port) = helper(BIND_PROGRAM);
    let (connect_info, connect_plus) = helper(CONNECT_PROGRAM);
    assert_eq!(bind_info.info().name, "two_bind");
    assert_eq!(
        connect_info.info().helpers[0].name,
        "two_connect_address_plus"
    );
    let seen = Arc::new(AtomicU64::new(0));
    let seen_by_bind = Arc::clone(&seen);
    let bind = Link::attach(
        LinkSpec::new(BIND_PROGRAM, BIND_HOOK).attach_parameter(&80u32.to_ne_bytes()),
        move |context: *mut c_void| {
            // SAFETY: the helper's one argument is the program's context.
            let port = unsafe { bind_port(context as u64, 0, 0, 0, 0) };
            seen_by_bind.store(port, Ordering::Relaxed);
            Ok(u32::try_from(port).unwrap_or(0))
        },
    )
    .expect("bind attach");
    let connect = Link::attach(
        LinkSpec::new(CONNECT_PROGRAM, CONNECT_HOOK),
        move |context| {
            // SAFETY: the context, then a number.
            let sum = unsafe { connect_plus(context as u64, 5, 0, 0, 0) };
            Ok(u32::try_from(sum).unwrap_or(0))
        },
    )
    .expect("connect attach");
    assert!(
        Link::attach(LinkSpec::new(CONNECT_PROGRAM, CONNECT_HOOK), |_| Ok(0)).is_err(),
        "the connect hook's own policy (single attach) applies"
    );

    let handle = kernel
        .open("\\\\.\\TwoHooks", Caller::System)
        .expect("open");
    let input = FireRequest {
        port: 80,
        address: 10,
    }
    .to_bytes();
    let result = kernel.device_io_control(&handle, Fire::CODE, &input, FireReply::SIZE);
    assert_eq!(result.status, STATUS_SUCCESS);
    let reply = FireReply::from_bytes(&result.output).expect("reply");
    assert_eq!((reply.bind_result, reply.connect_result), (80, 15));
    assert_eq!(seen.load(Ordering::Relaxed), 80);
    assert_eq!((bind.invocations(), connect.invocations()), (1, 1));
    let short = kernel.device_io_control(&handle, Fire::CODE, &input[..4], FireReply::SIZE);
    assert_eq!(short.status, STATUS_INVALID_PARAMETER, "the SDK refuses it");
    // The same code with another transfer method: refused before the driver sees it, traced.
    let refused = "control code refused: not METHOD_BUFFERED";
    let traced = || kernel.etw_messages_containing(refused);
    for method in 1..=3 {
        let other = kernel.device_io_control(&handle, Fire::CODE | method, &input, 8);
        assert_eq!(
            other.status, STATUS_INVALID_DEVICE_REQUEST,
            "method {method}"
        );
        assert_eq!(
            traced(),
            usize::try_from(method).unwrap(),
            "method {method} traced"
        );
    }
    assert_eq!((bind.invocations(), connect.invocations()), (1, 1));
    kernel.close(handle);

    drop((bind_info, connect_info));
    driver.unload();
    assert!(
        !bind.is_attached() && !connect.is_attached(),
        "unload detaches both hooks"
    );
    drop((bind, connect));
    assert_eq!(kernel.nmr_registrations().len(), 0);
    kernel.assert_no_leaks();
}

#[test]
fn every_failure_while_starting_either_is_undone() {
    let scenario = |_: &Kernel| {
        if let Some(driver) = load() {
            driver.unload();
        }
    };
    assert!(sweep_allocation_failures(scenario) >= 8);
    assert!(sweep_call_failures(scenario) >= 6);
}
