//! The `sample` hook (upstream's `sample_ebpf_extension_hook_provider`), the control device
//! that fires it, and the driver that starts them.
//!
//! Attach: one program per attach parameter (a 4-byte value here; upstream compares
//! parameters of any length bytewise), and a parameterless program only while nothing else
//! is attached. A run invokes the program attached for its parameter or, failing that, the
//! parameterless one. The program's return value is only reported: the sample has no verdict.
//!
//! Where this differs from upstream: the rules above are the SDK's
//! [`AttachPolicy::SingleAttachPerParameter`] (netebpfext's), under which a parameterless
//! program is a wildcard. Upstream treats "no parameter" as one more parameter value: it
//! refuses only an attach whose parameter equals an attached program's (so one parameterless
//! program may join parameterised ones, in either order), runs only the program whose
//! parameter equals the request's (`EBPF_KEY_NOT_FOUND` when none does; the first program for
//! a request without a parameter, which this protocol cannot send), and never falls back to
//! the parameterless one. A run without data gives programs NULL data pointers; upstream's
//! are both the request buffer's address. A parameter of another length than 4 bytes is
//! refused (`STATUS_INVALID_PARAMETER`), and so is a 65th program (the SDK hook's
//! `max_clients`, `STATUS_INSUFFICIENT_RESOURCES`); upstream keeps a list of any length.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_ATTACH_TYPE_SAMPLE;
use ebpf_extension_common::sys::ebpf_structs::{BPF_ATTACH_TYPE_SAMPLE, bpf_attach_type_t};
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;
use ebpf_extension_common::trace::trace_message_u32;

use ebpf_ext_map::MapProvider;

use crate::btf::BTF_FUNCTIONS;
use crate::maps::{MAP_PROVIDER_MODULE_ID, SampleMaps};
use crate::program::{PROGRAM_DATA, PROGRAM_TYPE, SampleContext};
use crate::protocol::{Profile, Run, RunBatch, RunBatchReply, RunReply};

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
    type Context = SampleContext;

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
}

/// The hook's static description.
pub const HOOK_CONFIG: HookConfig<u32> =
    HookConfig::new(ATTACH_TYPE, PROGRAM_TYPE, BPF_ATTACH_TYPE, TAG)
        .with_policy(AttachPolicy::SingleAttachPerParameter);

/// The running extension. Fields drop in order: the BTF-resolved function provider first
/// (its deregistration waits until no program calls the function), then the hook and the map
/// provider (whose deregistration waits until every map of its type is gone); the SDK stops
/// the program type last. Upstream stops the program type before the map provider.
pub struct SampleExt {
    _btf: BtfFunctionProvider,
    hook: HookProvider<SampleHook>,
    pub(crate) maps: MapProvider<SampleMaps>,
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
        let btf = start.btf_functions(&BTF_FUNCTIONS)?;
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(&program_type, HOOK_CONFIG, SampleHook)?;
        Ok(SampleExt {
            _btf: btf,
            hook,
            maps,
        })
    }

    /// Run: the program for the request's parameter once over the data. Run batch: `count`
    /// times over one context inside one batch, as upstream's RUN_BATCH. Profile: see
    /// [`Profile`].
    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Run::CODE => request.handle::<Run>(|mut call| {
                let request = *call.request();
                let context = SampleContext {
                    uint32_data: request.uint32_data,
                    ..SampleContext::RUN
                };
                let mut context = ProgramContext::with_data(context, call.payload_in_reply()?);
                let run = self
                    .hook
                    .invoke_until(&request.attach_parameter, &mut context, |_| true)
                    .map_err(Refusal::from_invocation)?;
                Ok(call.reply(&RunReply {
                    result: run.result,
                    programs_run: run.programs_run,
                }))
            }),
            RunBatch::CODE => request.handle::<RunBatch>(|mut call| {
                let request = *call.request();
                let mut context =
                    ProgramContext::with_data(SampleContext::RUN, call.payload_in_reply()?);
                let mut reply = RunBatchReply::default();
                self.hook
                    .with_batch(&request.attach_parameter, |batch| {
                        for _ in 0..request.count {
                            let result = batch.invoke_until(&mut context, |_| true)?.result;
                            reply.results += 1;
                            reply.result_sum = reply.result_sum.wrapping_add(result);
                        }
                        Ok(())
                    })
                    .map_err(Refusal::from_invocation)?;
                Ok(call.reply(&reply))
            }),
            Profile::CODE => request.handle::<Profile>(|call| {
                let mut context = SampleContext {
                    uint32_data: current_processor(),
                    helper_data_1: 0,
                    helper_data_2: 0,
                    ..SampleContext::RUN
                };
                call.profile(TAG, |request, data| {
                    // One context for every iteration, as upstream's: what a program writes
                    // to it, the next one sees.
                    let mut run = ProgramContext::with_data(context, data);
                    let invoked = self
                        .hook
                        .invoke_until(&request.parameter, &mut run, |_| true);
                    context = run.context;
                    invoked
                })
            }),
            _ => request.unknown(),
        }
    }
}

driver_entry!(pub(crate) static DRIVER: SampleExt);
