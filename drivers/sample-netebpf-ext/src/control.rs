//! The driver and its IOCTL handlers: the SDK has already checked version, lengths and
//! alignment ([`Run`] and [`Profile`] say how); these check what is specific to the sample,
//! fire the hook and reply.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;

use crate::hook::{HOOK_CONFIG, SampleNetHook, TAG, fire};
use crate::program::{PROGRAM_DATA, PacketContext};
use crate::protocol::{Profile, Run, RunReply};

/// The running extension: its hook (the SDK stops the program type after it).
pub struct SampleNet {
    hook: HookProvider<SampleNetHook>,
}

impl ExtensionDriver for SampleNet {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &crate::TRACE_PROVIDER;
    const TAG: PoolTag = TAG;
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\SampleNetEbpfExt"),
        link: utf16!("\\GLOBAL??\\SampleNetEbpfExt"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(start: &Start<'_>) -> Result<Self> {
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(&program_type, HOOK_CONFIG, SampleNetHook)?;
        Ok(SampleNet { hook })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            // Fires the hook once over the packet, which programs may change in the reply.
            Run::CODE => request.handle::<Run>(|mut call| {
                let request = *call.request();
                let context = PacketContext {
                    interface_id: request.interface_id,
                    protocol: request.protocol,
                    ..PacketContext::default()
                };
                let mut context = ProgramContext::with_data(context, call.payload_in_reply()?);
                let run = fire(&self.hook, &mut context).map_err(Refusal::from_invocation)?;
                Ok(call.reply(&RunReply {
                    verdict: run.result,
                    programs_run: run.programs_run,
                }))
            }),
            Profile::CODE => request.handle::<Profile>(|call| {
                call.profile(TAG, |request, packet| {
                    let context = PacketContext {
                        interface_id: request.parameter,
                        ..PacketContext::default()
                    };
                    fire(&self.hook, &mut ProgramContext::with_data(context, packet))
                })
            }),
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: SampleNet);
