//! The IOCTL handlers: validate the request, fire the hook, write the reply. They work on the
//! request's system buffer as a byte slice, so the host tests call them directly too (for
//! example with a misaligned buffer, which the I/O manager never produces).

use ebpf_extension_common::pool::PoolArray;
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::intrin::KeRaiseIrql;
use ebpf_extension_common::sys::ntddk::KeQueryPerformanceCounter;
use ebpf_extension_common::sys::ntdef::NTSTATUS;
use ebpf_extension_common::sys::ntstatus::{
    STATUS_BUFFER_TOO_SMALL, STATUS_DATATYPE_MISALIGNMENT, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND,
    STATUS_REVISION_MISMATCH, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_extension_common::sys::wdm::{DISPATCH_LEVEL, KeLowerIrql};
use ebpf_extension_common::trace::trace_message_status;

use crate::hook::{Outcome, SampleNetHook, TAG, fire};
use crate::program::PacketContext;
use crate::protocol::{
    IOCTL_SAMPLE_NET_PROFILE, IOCTL_SAMPLE_NET_RUN, MAX_ITERATIONS, MAX_PACKET,
    PROFILE_AT_DISPATCH, ProfileReply, ProfileRequest, REQUEST_VERSION, RunReply, RunRequest,
};

/// Alignment the handlers require of the system buffer (the I/O manager's is 16).
pub const BUFFER_ALIGNMENT: usize = 8;
/// Iterations a profile request runs at DISPATCH_LEVEL before lowering the IRQL again.
pub const DISPATCH_CHUNK: u64 = 64;

/// A refused request: its status, with a trace event saying why.
fn refuse(status: NTSTATUS, why: &'static str) -> (NTSTATUS, usize) {
    trace_message_status!(Level::Warning, keyword::EXTENSION, why, status);
    (status, 0)
}

/// Checks the parts every request shares. Returns the packet length on success.
fn check_common(
    buffer: &[u8],
    input_len: usize,
    header: usize,
    version: u32,
    data_len: u32,
) -> Result<usize, (NTSTATUS, usize)> {
    if buffer.as_ptr().align_offset(BUFFER_ALIGNMENT) != 0 {
        return Err(refuse(
            STATUS_DATATYPE_MISALIGNMENT,
            "request buffer misaligned",
        ));
    }
    if version != REQUEST_VERSION {
        return Err(refuse(STATUS_REVISION_MISMATCH, "unknown request version"));
    }
    let data_len = data_len as usize;
    if data_len > MAX_PACKET {
        return Err(refuse(STATUS_INVALID_PARAMETER, "packet too large"));
    }
    if input_len != header + data_len {
        return Err(refuse(
            STATUS_INVALID_PARAMETER,
            "input length disagrees with data_len",
        ));
    }
    Ok(data_len)
}

/// Maps a hook failure to the status the caller gets.
fn hook_failure(error: Error) -> (NTSTATUS, usize) {
    match error {
        Error::ObjectNotFound => refuse(STATUS_NOT_FOUND, "no program attached for the interface"),
        _ => refuse(STATUS_UNSUCCESSFUL, "program invocation failed"),
    }
}

/// `IOCTL_SAMPLE_NET_RUN` over a request's system buffer (`buffer.len()` = max(input,
/// output)). Returns the completion status and information.
///
/// # IRQL
/// PASSIVE_LEVEL (dispatch routine).
fn run(
    hook: &HookProvider<SampleNetHook>,
    buffer: &mut [u8],
    input_len: usize,
    output_len: usize,
) -> (NTSTATUS, usize) {
    let Some(request) = RunRequest::from_bytes(&buffer[..input_len.min(buffer.len())]) else {
        return refuse(
            STATUS_INVALID_PARAMETER,
            "input shorter than the run request",
        );
    };
    let data_len = match check_common(
        buffer,
        input_len,
        RunRequest::SIZE,
        request.version,
        request.data_len,
    ) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    if request.protocol > 255 {
        return refuse(STATUS_INVALID_PARAMETER, "protocol above 255");
    }
    let reply_len = RunReply::SIZE + data_len;
    if output_len < reply_len {
        return refuse(
            STATUS_BUFFER_TOO_SMALL,
            "output cannot hold the reply and the packet",
        );
    }
    // The packet moves to just after the reply header; programs see (and may change) it there.
    buffer.copy_within(
        RunRequest::SIZE..RunRequest::SIZE + data_len,
        RunReply::SIZE,
    );
    let packet = &mut buffer[RunReply::SIZE..reply_len];
    let range = packet.as_mut_ptr_range();
    let context = PacketContext {
        data_start: range.start,
        data_end: range.end,
        interface_id: request.interface_id,
        protocol: request.protocol,
    };
    match fire(hook, context) {
        Ok(Outcome {
            verdict,
            programs_run,
        }) => {
            let reply = RunReply {
                verdict,
                programs_run,
            };
            buffer[..RunReply::SIZE].copy_from_slice(&reply.to_bytes());
            (STATUS_SUCCESS, reply_len)
        }
        Err(e) => hook_failure(e),
    }
}

/// `IOCTL_SAMPLE_NET_PROFILE` over a request's system buffer.
///
/// # IRQL
/// PASSIVE_LEVEL (dispatch routine); the programs run at DISPATCH_LEVEL with
/// [`PROFILE_AT_DISPATCH`].
fn profile(
    hook: &HookProvider<SampleNetHook>,
    buffer: &mut [u8],
    input_len: usize,
    output_len: usize,
) -> (NTSTATUS, usize) {
    let Some(request) = ProfileRequest::from_bytes(&buffer[..input_len.min(buffer.len())]) else {
        return refuse(
            STATUS_INVALID_PARAMETER,
            "input shorter than the profile request",
        );
    };
    let data_len = match check_common(
        buffer,
        input_len,
        ProfileRequest::SIZE,
        request.version,
        request.data_len,
    ) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    if request.iterations == 0 || request.iterations > MAX_ITERATIONS {
        return refuse(STATUS_INVALID_PARAMETER, "iterations out of range");
    }
    if request.flags & !PROFILE_AT_DISPATCH != 0 {
        return refuse(STATUS_INVALID_PARAMETER, "unknown profile flags");
    }
    if output_len < ProfileReply::SIZE {
        return refuse(
            STATUS_BUFFER_TOO_SMALL,
            "output cannot hold the profile reply",
        );
    }
    // The reply overwrites the request, so the packet gets its own copy.
    let Ok(mut packet) = PoolArray::<u8>::try_new(data_len, TAG) else {
        return refuse(
            STATUS_INSUFFICIENT_RESOURCES,
            "no memory for the packet copy",
        );
    };
    packet.copy_from_slice(&buffer[ProfileRequest::SIZE..input_len]);
    let range = packet.as_mut_ptr_range();
    let context = PacketContext {
        data_start: range.start,
        data_end: range.end,
        interface_id: request.interface_id,
        protocol: 0,
    };
    let at_dispatch = request.flags & PROFILE_AT_DISPATCH != 0;
    let mut frequency = 0i64;
    // SAFETY: a writable out parameter.
    let start = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
    let mut last = Ok(Outcome {
        verdict: 0,
        programs_run: 0,
    });
    let mut remaining = request.iterations;
    while remaining > 0 && last.is_ok() {
        // At DISPATCH_LEVEL the programs run in short stretches with the IRQL lowered in
        // between, so a large request cannot hold the processor long enough for the DPC
        // watchdog (each event may run 64 programs over a 64 KiB packet).
        let chunk = if at_dispatch {
            remaining.min(DISPATCH_CHUNK)
        } else {
            remaining
        };
        let old_irql = if at_dispatch {
            // SAFETY: raising from PASSIVE_LEVEL; lowered below on this thread.
            Some(unsafe { KeRaiseIrql(DISPATCH_LEVEL) })
        } else {
            None
        };
        for _ in 0..chunk {
            last = fire(hook, context);
            if last.is_err() {
                break;
            }
        }
        if let Some(old) = old_irql {
            // SAFETY: back to the level saved above.
            unsafe { KeLowerIrql(old) };
        }
        remaining -= chunk;
    }
    // SAFETY: NULL frequency is allowed.
    let end = unsafe { KeQueryPerformanceCounter(core::ptr::null_mut()) };
    match last {
        Ok(outcome) => {
            let reply = ProfileReply {
                duration: end.abs_diff(start),
                frequency: frequency.unsigned_abs(),
                iterations: request.iterations,
                verdict: outcome.verdict,
                programs_run: outcome.programs_run,
            };
            buffer[..ProfileReply::SIZE].copy_from_slice(&reply.to_bytes());
            (STATUS_SUCCESS, ProfileReply::SIZE)
        }
        Err(e) => hook_failure(e),
    }
}

/// Routes a device-control request by code. `buffer` is the whole system buffer, at least
/// max(`input_len`, `output_len`) bytes (anything shorter is refused); `run` and `profile`
/// rely on that.
pub fn device_control(
    hook: &HookProvider<SampleNetHook>,
    code: u32,
    buffer: &mut [u8],
    input_len: usize,
    output_len: usize,
) -> (NTSTATUS, usize) {
    if buffer.len() < input_len.max(output_len) {
        return refuse(
            STATUS_INVALID_PARAMETER,
            "lengths exceed the request buffer",
        );
    }
    match code {
        IOCTL_SAMPLE_NET_RUN => run(hook, buffer, input_len, output_len),
        IOCTL_SAMPLE_NET_PROFILE => profile(hook, buffer, input_len, output_len),
        _ => refuse(STATUS_INVALID_DEVICE_REQUEST, "unknown control code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misaligned_buffer_is_refused() {
        let _kernel = ebpf_ext_usersim::Kernel::new();
        let mut storage = [0u64; 8];
        let bytes = &mut bytemuck_free_bytes(&mut storage)[1..];
        let refused = check_common(bytes, 16, 16, REQUEST_VERSION, 0);
        assert_eq!(refused, Err((STATUS_DATATYPE_MISALIGNMENT, 0)));
        let aligned = check_common(
            &bytemuck_free_bytes(&mut storage)[..],
            16,
            16,
            REQUEST_VERSION,
            0,
        );
        assert_eq!(aligned, Ok(0));
    }

    fn bytemuck_free_bytes(words: &mut [u64; 8]) -> &mut [u8] {
        // SAFETY: u64 storage viewed as its 64 bytes.
        unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), 64) }
    }
}
