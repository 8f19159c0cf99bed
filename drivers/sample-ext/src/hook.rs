//! The `sample` hook (upstream's `sample_ebpf_extension_hook_provider`), the control device
//! that fires it, and the driver that starts them.
//!
//! Attach: one program per attach parameter (a 4-byte value here; upstream compares
//! parameters of any length bytewise), and a parameterless program only while nothing else
//! is attached. A run invokes the program attached for its parameter or, failing that, the
//! parameterless one; upstream invokes the first program when the request has no parameter.
//! The program's return value is only reported: the sample has no verdict.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_ATTACH_TYPE_SAMPLE;
use ebpf_extension_common::sys::ebpf_structs::{
    BPF_ATTACH_TYPE_SAMPLE, BPF_LINK_TYPE_UNSPEC, bpf_attach_type_t,
};
use ebpf_extension_common::sys::ntstatus::{STATUS_NOT_FOUND, STATUS_UNSUCCESSFUL};
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;
use ebpf_extension_common::trace::trace_message_u32;

use ebpf_ext_map::MapProvider;

use crate::maps::{MAP_PROVIDER_MODULE_ID, SampleMap, copy_value};
use crate::program::{PROGRAM_DATA, PROGRAM_TYPE, SampleContext};
use crate::protocol::{MAX_BATCH, Run, RunBatch, RunBatchReply, RunReply};

/// Attach type GUID of the hook (`EBPF_ATTACH_TYPE_SAMPLE`).
pub const ATTACH_TYPE: GUID = EBPF_ATTACH_TYPE_SAMPLE;
/// `bpf_attach_type` number of the hook (`BPF_ATTACH_TYPE_SAMPLE`).
pub const BPF_ATTACH_TYPE: bpf_attach_type_t = BPF_ATTACH_TYPE_SAMPLE;
/// Pool tag of the sample's allocations.
pub const TAG: PoolTag = PoolTag::new(*b"SExt");

/// The hook's callbacks: each program keeps its attach parameter.
#[derive(Debug, Default)]
pub struct SampleHook;

impl HookExtension for SampleHook {
    type Parameter = u32;
    type ClientData = Option<u32>;

    fn on_attach(
        &self,
        request: &AttachRequest<u32>,
        _: &Attached<'_, Self>,
    ) -> Result<Option<u32>> {
        trace_message_u32!(
            Level::Informational,
            keyword::EXTENSION,
            "program attached with parameter",
            request.parameter.unwrap_or(0)
        );
        Ok(request.parameter)
    }

    fn on_detach(&self, _: &Option<u32>) {}
}

/// The hook's static description.
pub const HOOK_CONFIG: HookConfig<u32> = HookConfig {
    attach_type: ATTACH_TYPE,
    program_type: PROGRAM_TYPE,
    bpf_attach_type: BPF_ATTACH_TYPE,
    link_type: BPF_LINK_TYPE_UNSPEC,
    policy: AttachPolicy::SingleAttachPerParameter,
    wildcard: None,
    max_clients: 64,
    tag: TAG,
};

/// Runs the program for `parameter` once over `context`.
///
/// # Errors
/// [`Error::ObjectNotFound`] if no program is attached for it; the invoke failure otherwise.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub fn run(
    hook: &HookProvider<SampleHook>,
    parameter: u32,
    context: SampleContext,
) -> Result<Invocation> {
    hook.invoke_until(&parameter, &mut ProgramContext::new(context), |_| true)
}

/// Runs the program for `parameter` `count` times over one context inside one batch (as
/// upstream's RUN_BATCH): the results, one per invocation, go to `results`.
///
/// # Errors
/// The first invoke failure; [`Error::ObjectNotFound`] if no program is attached for it.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub fn run_batch(
    hook: &HookProvider<SampleHook>,
    parameter: u32,
    context: SampleContext,
    count: u32,
    mut results: impl FnMut(u32),
) -> Result {
    let mut context = ProgramContext::new(context);
    hook.with_batch(&parameter, |batch| {
        for _ in 0..count {
            results(batch.invoke(&mut context)?);
        }
        Ok(())
    })
}

/// The running extension. Fields drop in order: the hook first, then its program type, then
/// the map provider (whose deregistration waits until every map of its type is gone);
/// upstream registers them in the opposite order.
pub struct SampleExt {
    hook: HookProvider<SampleHook>,
    _program_type: ProgramInfoProvider,
    maps: MapProvider<SampleMap>,
}

impl ExtensionDriver for SampleExt {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &crate::TRACE_PROVIDER;
    const TAG: PoolTag = TAG;
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\SampleEbpfExt"),
        link: utf16!("\\GLOBAL??\\SampleEbpfExtIoDevice"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(start: &Start<'_>) -> Result<Self> {
        let maps = MapProvider::register(MAP_PROVIDER_MODULE_ID, TAG)?;
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(HOOK_CONFIG, SampleHook)?;
        Ok(SampleExt {
            hook,
            _program_type: program_type,
            maps,
        })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Run::CODE => request.handle::<Run>(|mut call| {
                let request = *call.request();
                let mut context = SampleContext::new(call.payload_in_reply()?);
                context.uint32_data = request.uint32_data;
                let run =
                    run(&self.hook, request.attach_parameter, context).map_err(hook_failure)?;
                Ok(call.reply(&RunReply {
                    result: run.result,
                    programs_run: run.programs_run,
                }))
            }),
            RunBatch::CODE => request.handle::<RunBatch>(|mut call| {
                let request = *call.request();
                if request.count == 0 || request.count > MAX_BATCH {
                    return Err(Refusal::invalid("count out of range"));
                }
                let context = SampleContext::new(call.payload_in_reply()?);
                let mut reply = RunBatchReply::default();
                run_batch(
                    &self.hook,
                    request.attach_parameter,
                    context,
                    request.count,
                    |r| {
                        reply.results += 1;
                        reply.result_sum = reply.result_sum.wrapping_add(r);
                    },
                )
                .map_err(hook_failure)?;
                Ok(call.reply(&reply))
            }),
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: SampleExt);

fn hook_failure(error: Error) -> Refusal {
    match error {
        Error::ObjectNotFound => Refusal::new(STATUS_NOT_FOUND, "no program attached"),
        _ => Refusal::new(STATUS_UNSUCCESSFUL, "program invocation failed"),
    }
}

/// What `sample_ext_helper_map_get_value` reads: the custom map's value for the key, copied
/// to `out`; `None` if the map is not a sample map or has no such key.
pub(crate) fn map_get_value(key: MapKey<'_>, out: &mut [u8]) -> Option<()> {
    let (_, stored) = DRIVER.get()?.maps.stored_value(key)?;
    copy_value(stored, out);
    Some(())
}
