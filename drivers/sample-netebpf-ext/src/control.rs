//! The driver and its IOCTL handlers: the SDK has already checked version, lengths and
//! alignment ([`Run`] and [`Profile`] say how); these check what is specific to the sample,
//! fire the hook and reply.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;

use crate::hook::{HOOK_CONFIG, SampleNetHook, TAG, fire};
use crate::program::{PROGRAM_DATA, PacketContext};
use crate::protocol::{PROFILE_AT_DISPATCH, Profile, ProfileReply, Run, RunReply};

/// Iterations a profile request runs at DISPATCH_LEVEL before lowering the IRQL again.
pub const DISPATCH_CHUNK: u64 = 64;

/// The running extension. Fields drop in order: the hook first, then its program type.
pub struct SampleNet {
    hook: HookProvider<SampleNetHook>,
    _program_type: ProgramType<PacketContext>,
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
        Ok(SampleNet {
            hook,
            _program_type: program_type,
        })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Run::CODE => request.handle(|call| run(&self.hook, call)),
            Profile::CODE => request.handle(|call| profile(&self.hook, call)),
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: SampleNet);

/// `IOCTL_SAMPLE_NET_RUN`: fires the hook once over the packet, which the programs see (and
/// may change) in place in the reply.
fn run(hook: &HookProvider<SampleNetHook>, mut call: Call<'_, Run>) -> Result<Completion, Refusal> {
    let request = *call.request();
    let context = PacketContext {
        interface_id: request.interface_id,
        protocol: request.protocol,
        ..PacketContext::default()
    };
    let mut context = ProgramContext::with_data(context, call.payload_in_reply()?);
    let run = fire(hook, &mut context).map_err(Refusal::from_invocation)?;
    Ok(call.reply(&RunReply {
        verdict: run.result,
        programs_run: run.programs_run,
    }))
}

/// `IOCTL_SAMPLE_NET_PROFILE`: fires the hook `iterations` times and replies with the
/// duration; at DISPATCH_LEVEL with [`PROFILE_AT_DISPATCH`], in stretches of
/// [`DISPATCH_CHUNK`].
fn profile(
    hook: &HookProvider<SampleNetHook>,
    call: Call<'_, Profile>,
) -> Result<Completion, Refusal> {
    let request = *call.request();
    // The reply overwrites the request, so the packet gets its own copy.
    let mut packet = call.payload_copy(TAG)?;
    let context = PacketContext {
        interface_id: request.interface_id,
        ..PacketContext::default()
    };
    let stretch = (request.flags & PROFILE_AT_DISPATCH != 0).then_some(DISPATCH_CHUNK);
    let (watch, mut last) = (Stopwatch::start(), None);
    repeat(request.iterations, stretch, || {
        let mut context = ProgramContext::with_data(context, &mut packet[..]);
        fire(hook, &mut context).map(|run| last = Some(run))
    })
    .map_err(Refusal::from_invocation)?;
    let (verdict, programs_run) = last.map_or((0, 0), |run| (run.result, run.programs_run));
    Ok(call.reply(&ProfileReply {
        duration: watch.elapsed_ticks(),
        frequency: watch.frequency(),
        iterations: request.iterations,
        verdict,
        programs_run,
    }))
}
