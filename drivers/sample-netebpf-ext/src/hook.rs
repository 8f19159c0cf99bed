//! The `sample_net` hook: attach by interface id, multi-attach with a wildcard, and a
//! permit/block verdict that stops at the first block.

use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_structs::{BPF_LINK_TYPE_PLAIN, bpf_attach_type_t};
use ebpf_extension_common::trace::{trace_message_u32, trace_message_value};

use crate::program::{PROGRAM_TYPE, PacketContext};

/// Attach type GUID of the `sample_net` hook.
pub const ATTACH_TYPE: GUID = GUID::from_u128(0xdee75b22_bd34_4844_bc64_67a4e1228e72);
/// `bpf_attach_type` number of the hook.
pub const BPF_ATTACH_TYPE: bpf_attach_type_t = 1000;
/// The interface id that means "every interface".
pub const WILDCARD_INTERFACE: u32 = 0;
/// A program's return value letting the packet through.
pub const VERDICT_PERMIT: u32 = 0;
/// A program's return value dropping the packet; later programs do not run.
pub const VERDICT_BLOCK: u32 = 1;
/// Pool tag of the sample's allocations.
pub const TAG: PoolTag = PoolTag::new(*b"SNet");

/// The hook's extension data: counts attached programs, for the trace events.
#[derive(Debug, Default)]
pub struct SampleNetHook {
    attached: AtomicU32,
}

impl HookExtension for SampleNetHook {
    type Parameter = u32;
    type ClientData = u32;

    fn on_attach(&self, request: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<u32> {
        let interface = request.parameter.unwrap_or(WILDCARD_INTERFACE);
        let count = self.attached.fetch_add(1, Ordering::Relaxed) + 1;
        trace_message_u32!(
            Level::Informational,
            keyword::EXTENSION,
            "program attached for interface",
            interface
        );
        trace_message_u32!(
            Level::Verbose,
            keyword::EXTENSION,
            "programs attached",
            count
        );
        Ok(interface)
    }

    fn on_detach(&self, interface: &u32) {
        let count = self.attached.fetch_sub(1, Ordering::Relaxed) - 1;
        trace_message_value!(
            Level::Informational,
            keyword::EXTENSION,
            "program detached from interface",
            u64::from(*interface)
        );
        trace_message_u32!(
            Level::Verbose,
            keyword::EXTENSION,
            "programs attached",
            count
        );
    }
}

/// The hook's static description.
pub const HOOK_CONFIG: HookConfig<u32> = HookConfig {
    attach_type: ATTACH_TYPE,
    program_type: PROGRAM_TYPE,
    bpf_attach_type: BPF_ATTACH_TYPE,
    link_type: BPF_LINK_TYPE_PLAIN,
    policy: AttachPolicy::MultiAttachWithWildcard,
    wildcard: Some(WILDCARD_INTERFACE),
    max_clients: 64,
    tag: TAG,
};

/// What one event produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// [`VERDICT_BLOCK`] if a program blocked, else [`VERDICT_PERMIT`].
    pub verdict: u32,
    /// Programs that ran.
    pub programs_run: u32,
}

/// Runs the programs attached for `context.interface_id` (then the wildcard ones) until one
/// blocks.
///
/// # Errors
/// [`Error::ObjectNotFound`] if no program is attached for the interface; the first invoke
/// failure otherwise.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub fn fire(hook: &HookProvider<SampleNetHook>, context: PacketContext) -> Result<Outcome> {
    let interface = context.interface_id;
    let mut program_context = ProgramContext::new(context);
    let mut programs_run = 0;
    let mut verdict = VERDICT_PERMIT;
    hook.invoke_with(
        &interface,
        &mut program_context,
        |_| true,
        |result| {
            programs_run += 1;
            if result == VERDICT_BLOCK {
                verdict = VERDICT_BLOCK;
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    )?;
    Ok(Outcome {
        verdict,
        programs_run,
    })
}
