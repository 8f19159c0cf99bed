//! The IOCTL handlers: the SDK has already checked version, lengths and alignment
//! ([`Run`] and [`Profile`] say how); these check what is specific to the sample, fire the
//! hook and reply.

use ebpf_extension_common::pool::PoolArray;
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_UNSUCCESSFUL,
};

use crate::hook::{Outcome, SampleNetHook, TAG, fire};
use crate::program::PacketContext;
use crate::protocol::{MAX_ITERATIONS, PROFILE_AT_DISPATCH, Profile, ProfileReply, Run, RunReply};

/// Iterations a profile request runs at DISPATCH_LEVEL before lowering the IRQL again.
pub const DISPATCH_CHUNK: u64 = 64;

/// Maps a hook failure to the status the caller gets.
fn hook_failure(error: Error) -> Refusal {
    match error {
        Error::ObjectNotFound => {
            Refusal::new(STATUS_NOT_FOUND, "no program attached for the interface")
        }
        _ => Refusal::new(STATUS_UNSUCCESSFUL, "program invocation failed"),
    }
}

/// `IOCTL_SAMPLE_NET_RUN`: fires the hook once over the packet, which the programs see (and
/// may change) in place in the reply.
///
/// # Errors
/// A refusal with the status the caller gets.
///
/// # IRQL
/// PASSIVE_LEVEL (dispatch routine).
pub fn run(
    hook: &HookProvider<SampleNetHook>,
    mut call: Call<'_, Run>,
) -> Result<Completion, Refusal> {
    let request = *call.request();
    if request.protocol > 255 {
        return Err(Refusal::new(STATUS_INVALID_PARAMETER, "protocol above 255"));
    }
    let packet = call.payload_in_reply()?.as_mut_ptr_range();
    let context = PacketContext {
        data_start: packet.start,
        data_end: packet.end,
        interface_id: request.interface_id,
        protocol: request.protocol,
    };
    let Outcome {
        verdict,
        programs_run,
    } = fire(hook, context).map_err(hook_failure)?;
    Ok(call.reply(&RunReply {
        verdict,
        programs_run,
    }))
}

/// `IOCTL_SAMPLE_NET_PROFILE`: fires the hook `iterations` times and replies with the
/// duration; at DISPATCH_LEVEL with [`PROFILE_AT_DISPATCH`].
///
/// # Errors
/// A refusal with the status the caller gets.
///
/// # IRQL
/// PASSIVE_LEVEL (dispatch routine).
pub fn profile(
    hook: &HookProvider<SampleNetHook>,
    call: Call<'_, Profile>,
) -> Result<Completion, Refusal> {
    let request = *call.request();
    if request.iterations == 0 || request.iterations > MAX_ITERATIONS {
        return Err(Refusal::new(
            STATUS_INVALID_PARAMETER,
            "iterations out of range",
        ));
    }
    if request.flags & !PROFILE_AT_DISPATCH != 0 {
        return Err(Refusal::new(
            STATUS_INVALID_PARAMETER,
            "unknown profile flags",
        ));
    }
    // The reply overwrites the request, so the packet gets its own copy.
    let mut packet = PoolArray::<u8>::try_new(call.payload().len(), TAG).map_err(|_| {
        Refusal::new(
            STATUS_INSUFFICIENT_RESOURCES,
            "no memory for the packet copy",
        )
    })?;
    packet.copy_from_slice(call.payload());
    let range = packet.as_mut_ptr_range();
    let context = PacketContext {
        data_start: range.start,
        data_end: range.end,
        interface_id: request.interface_id,
        protocol: 0,
    };
    let at_dispatch = request.flags & PROFILE_AT_DISPATCH != 0;
    let watch = Stopwatch::start();
    let mut last = Outcome {
        verdict: 0,
        programs_run: 0,
    };
    let mut remaining = request.iterations;
    while remaining > 0 {
        // At DISPATCH_LEVEL the programs run in short stretches with the IRQL lowered in
        // between, so a large request cannot hold the processor long enough for the DPC
        // watchdog (each event may run 64 programs over a 64 KiB packet).
        let chunk = if at_dispatch {
            remaining.min(DISPATCH_CHUNK)
        } else {
            remaining
        };
        let _raised = at_dispatch.then(RaisedIrql::to_dispatch);
        for _ in 0..chunk {
            last = fire(hook, context).map_err(hook_failure)?;
        }
        remaining -= chunk;
    }
    Ok(call.reply(&ProfileReply {
        duration: watch.elapsed_ticks(),
        frequency: watch.frequency(),
        iterations: request.iterations,
        verdict: last.verdict,
        programs_run: last.programs_run,
    }))
}
