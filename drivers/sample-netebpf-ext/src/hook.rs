//! The `sample_net` hook: attach by interface id, multi-attach with a wildcard, and a
//! permit/block verdict that stops at the first block.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_structs::{BPF_LINK_TYPE_PLAIN, bpf_attach_type_t};
use ebpf_extension_common::trace::trace_message_u32;

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

/// The hook's callbacks: each program keeps the interface it attached for.
#[derive(Debug, Default)]
pub struct SampleNetHook;

impl HookExtension for SampleNetHook {
    type Parameter = u32;
    type ClientData = u32;
    type Context = PacketContext;

    fn on_attach(&self, request: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<u32> {
        let interface = request.parameter.unwrap_or(WILDCARD_INTERFACE);
        trace_message_u32!(INFO, EXTENSION, "program attached for interface", interface);
        Ok(interface)
    }

    fn on_detach(&self, interface: &u32) {
        trace_message_u32!(
            INFO,
            EXTENSION,
            "program detached from interface",
            *interface
        );
    }
}

const INFO: Level = Level::Informational;
const EXTENSION: u64 = keyword::EXTENSION;

/// The hook's static description.
pub const HOOK_CONFIG: HookConfig<u32> =
    HookConfig::new(ATTACH_TYPE, PROGRAM_TYPE, BPF_ATTACH_TYPE, TAG)
        .with_policy(AttachPolicy::MultiAttachWithWildcard)
        .with_wildcard(WILDCARD_INTERFACE)
        .with_link_type(BPF_LINK_TYPE_PLAIN);

/// Runs the programs attached for the context's interface (then the wildcard ones) over its
/// packet until one blocks; the verdict is [`VERDICT_BLOCK`] if one did, else
/// [`VERDICT_PERMIT`].
///
/// # Errors
/// [`Error::ObjectNotFound`] if no program is attached for the interface; the first invoke
/// failure otherwise.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub fn fire(
    hook: &HookProvider<SampleNetHook>,
    context: &mut ProgramContext<'_, PacketContext>,
) -> Result<Invocation> {
    let interface = context.context.interface_id;
    let run = hook.invoke_until(&interface, context, |verdict| verdict == VERDICT_BLOCK)?;
    let blocked = run.result == VERDICT_BLOCK;
    let result = if blocked {
        VERDICT_BLOCK
    } else {
        VERDICT_PERMIT
    };
    Ok(Invocation { result, ..run })
}
