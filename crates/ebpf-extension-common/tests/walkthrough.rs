//! docs/WRITING-AN-EXTENSION.md's running example, whole: the `my_bind` program type with its
//! helper, the bind hook, the driver with its `Fire` IOCTL, and section 6's host test. The
//! walkthrough shows it in pieces; this file is what those pieces make once put together,
//! with every declaration and import they need, so that it builds and its tests run.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

#[allow(
    unreachable_pub,
    reason = "written as an extension crate's root, whose items are public"
)]
mod my_ext {
    use ebpf_extension_common::prelude::*;
    use ebpf_extension_common::sys::ebpf_structs::BPF_LINK_TYPE_PLAIN;
    use ebpf_extension_common::sys::wdm::{
        CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
    };

    tracelogging::define_provider!(
        TRACE_PROVIDER,
        "WalkthroughMyExtProvider",
        id("0f4c6b2e-8a31-4d57-9e02-6b1d3c5a7f48")
    );

    /// Pool tag of the extension's allocations.
    pub const TAG: PoolTag = PoolTag::new(*b"MyEx");
    /// The program type (a GUID of the extension's own).
    pub const BIND_PROGRAM_TYPE: GUID = GUID::from_u128(0x2b0e_5b56_1c7a_4d35_9a53_7f3f_8c1d_0e21);
    /// The attach type.
    pub const BIND_ATTACH_TYPE: GUID = GUID::from_u128(0x6c9a_4f1e_3d2b_4a5c_8e7f_1a2b_3c4d_5e6f);
    /// Helper id of `my_bind_get_port`.
    pub const GET_PORT: u32 = 0x1_0000;

    no_padding! {
        /// What a `my_bind` program sees.
        #[repr(C)]
        #[derive(Clone, Copy)]
        pub struct BindContext {
            pub data_start: DataPointer,
            pub data_end: DataPointer,
            pub port: u16,
            pub protocol: u16,
            pub reserved: u32,
        }
    }

    fn get_port(context: &BindContext) -> u64 {
        u64::from(context.port)
    }

    program_type! {
        /// What the program-information provider publishes for `my_bind`.
        pub static BIND_DATA = c"my_bind", BIND_PROGRAM_TYPE, 3000;
        context BindContext, data data_start..data_end;
        helpers {
            GET_PORT, c"my_bind_get_port" => get_port(Context);
        }
    }

    /// The bind hook: each program keeps the port it was attached for.
    pub struct BindHook;

    impl HookExtension for BindHook {
        type Parameter = u32;
        type ClientData = u32;
        type Context = BindContext;

        fn on_attach(&self, request: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<u32> {
            Ok(request.parameter.unwrap_or(0))
        }
    }

    /// The hook's configuration.
    pub const BIND_HOOK: HookConfig<u32> =
        HookConfig::new(BIND_ATTACH_TYPE, BIND_PROGRAM_TYPE, 3000, TAG)
            .with_policy(AttachPolicy::MultiAttachWithWildcard)
            .with_wildcard(0)
            .with_link_type(BPF_LINK_TYPE_PLAIN);

    /// Version of the IOCTL layouts.
    pub const MY_VERSION: u32 = 1;
    /// Fire the bind hook once.
    pub const IOCTL_MY_FIRE: u32 =
        CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
    /// What a verdict of "block" is.
    pub const BLOCK: u32 = 1;

    wire! {
        /// `IOCTL_MY_FIRE`'s request; `data_len` bytes of packet follow.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct FireRequest { pub version: u32, pub port: u32, pub data_len: u32 }

        /// Its reply; the packet as the programs left it follows.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct FireReply { pub verdict: u32, pub programs_run: u32 }
    }

    ioctl! {
        /// Fire the bind hook once with a packet.
        pub Fire = IOCTL_MY_FIRE, FireRequest => FireReply,
            version MY_VERSION, payload data_len up to 0x1_0000, field port in 1..=0xFFFF;
    }

    /// Runs the programs attached for `port` (then the wildcard ones) over `packet`, until one
    /// blocks.
    fn fire(hook: &HookProvider<BindHook>, port: u32, packet: &mut [u8]) -> Result<Invocation> {
        let bind = BindContext {
            data_start: DataPointer::NULL,
            data_end: DataPointer::NULL,
            port: u16::try_from(port).unwrap_or(u16::MAX),
            protocol: 6,
            reserved: 0,
        };
        let mut context = ProgramContext::with_data(bind, packet);
        hook.invoke_until(&port, &mut context, |verdict| verdict == BLOCK)
    }

    /// The running extension.
    pub struct MyExtension {
        bind: HookProvider<BindHook>,
    }

    impl ExtensionDriver for MyExtension {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE_PROVIDER;
        const TAG: PoolTag = TAG;
        const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
            name: utf16!("\\Device\\MyExt"),
            link: utf16!("\\GLOBAL??\\MyExt"),
            device_type: FILE_DEVICE_NETWORK,
        });

        fn start(start: &Start<'_>) -> Result<Self> {
            let bind_type = start.program_type(&BIND_DATA)?;
            let bind = start.hook(&bind_type, BIND_HOOK, BindHook)?;
            Ok(MyExtension { bind })
        }

        fn device_control(&self, request: Request<'_>) -> Completion {
            match request.code() {
                Fire::CODE => request.handle::<Fire>(|mut call| {
                    let port = call.request().port;
                    let packet = call.payload_in_reply()?;
                    let run = fire(&self.bind, port, packet).map_err(Refusal::from_invocation)?;
                    Ok(call.reply(&FireReply {
                        verdict: run.result,
                        programs_run: run.programs_run,
                    }))
                }),
                _ => request.unknown(),
            }
        }
    }

    driver_entry!(pub static DRIVER: MyExtension);
}

use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_testing::call_helper;
use ebpf_ext_usersim::{Caller, DriverObject, FileHandle, IoResult, Kernel};
use ebpf_extension_common::ioctl::Ioctl;
use ebpf_extension_common::sys::ntstatus::{STATUS_NOT_FOUND, STATUS_SUCCESS};

use my_ext::{
    BIND_ATTACH_TYPE, BIND_PROGRAM_TYPE, Fire, FireReply, FireRequest, GET_PORT, MY_VERSION,
};

/// Sends `Fire` for `port` with `packet`.
fn fire(kernel: &Kernel, handle: &FileHandle, port: u32, packet: &[u8]) -> IoResult {
    let request = FireRequest {
        version: MY_VERSION,
        port,
        data_len: u32::try_from(packet.len()).expect("a short packet"),
    };
    let input = [&request.to_bytes()[..], packet].concat();
    kernel.device_io_control(handle, Fire::CODE, &input, FireReply::SIZE + packet.len())
}

#[test]
fn a_fire_request_runs_the_program_attached_for_its_port_which_calls_the_helper() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object, which outlives the driver (unloaded below).
    let status = unsafe { my_ext::driver_entry(object.as_ptr(), core::ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    let info = ProgramInfoClient::attach(BIND_PROGRAM_TYPE).expect("published");
    let get_port = info
        .info()
        .helper(GET_PORT)
        .and_then(|helper| helper.address)
        .expect("the helper's address");
    // A program, in Rust: its verdict is what `my_bind_get_port(ctx)` returns.
    let link = Link::attach(
        LinkSpec::new(BIND_PROGRAM_TYPE, BIND_ATTACH_TYPE).attach_parameter(&7u32.to_ne_bytes()),
        move |context| {
            // SAFETY: the published helper, called with the context the core passes.
            let port = unsafe { call_helper(get_port, [context as u64, 0, 0, 0, 0]) };
            Ok(u32::try_from(port).expect("a port"))
        },
    )
    .expect("attached");

    let handle = kernel.open("\\\\.\\MyExt", Caller::System).expect("opened");
    let packet = [1u8, 2, 3, 4];
    let result = fire(&kernel, &handle, 7, &packet);
    assert_eq!(result.status, STATUS_SUCCESS);
    let reply = FireReply::from_bytes(&result.output).expect("a reply");
    assert_eq!((reply.verdict, reply.programs_run), (7, 1));
    assert_eq!(
        result.output[FireReply::SIZE..],
        packet,
        "the packet comes back"
    );
    assert_eq!(
        fire(&kernel, &handle, 8, &packet).status,
        STATUS_NOT_FOUND,
        "no program is attached for port 8"
    );

    kernel.close(handle);
    drop(link);
    drop(info);
    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once.
    unsafe { unload(object.as_ptr()) };
    kernel.assert_no_leaks();
}
