//! The `sample-netebpf-ext` scenario.

use core::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;
use ebpf_ext_usersim::{Caller, FileHandle, Kernel};
use ebpf_extension_common::profile::{
    MAX_ITERATIONS, PROFILE_AT_DISPATCH, ProfileReply, ProfileRequest,
};
use sample_netebpf_ext::hook::ATTACH_TYPE;
use sample_netebpf_ext::program::{
    HELPER_CHECKSUM, HELPER_GET_INTERFACE_ID, PROGRAM_TYPE, internet_checksum,
};
use sample_netebpf_ext::protocol::{
    IOCTL_SAMPLE_NET_PROFILE, IOCTL_SAMPLE_NET_RUN, MAX_PACKET, REQUEST_VERSION, RunReply,
    RunRequest, WIN32_PATH,
};
use sample_netebpf_ext::{PacketContext, VERDICT_BLOCK, VERDICT_PERMIT};

use crate::{Failure, Narrator, Target, call_helper, expect, trace_lines};

/// The sample's ETW provider name.
pub const PROVIDER: &str = "SampleNetEbpfExtProvider";

/// One `IOCTL_SAMPLE_NET_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Interface fired.
    pub interface: u32,
    /// Completion status.
    pub status: NTSTATUS,
    /// The reply.
    pub reply: RunReply,
    /// The packet as the programs left it.
    pub packet: Vec<u8>,
    /// Helper calls the programs made, in order.
    pub helper_calls: Vec<String>,
}

/// What the scenario observed; equal reports mean equal behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetReport {
    /// Program type name from the program-information provider.
    pub program_type: String,
    /// Helper names, in id order.
    pub helpers: Vec<String>,
    /// The runs.
    pub runs: Vec<Run>,
    /// The profile reply (duration and frequency zeroed: they are timings).
    pub profile: ProfileReply,
    /// Invocations of the blocking program counted by core-sim.
    pub blocker_invocations: u64,
    /// IRQL the programs last ran at.
    pub blocker_irql: Option<u8>,
    /// Malformed requests and the status each got.
    pub refusals: Vec<(String, NTSTATUS)>,
    /// What a standard user's open got.
    pub user_open: NTSTATUS,
    /// A run after every program detached.
    pub after_detach: NTSTATUS,
    /// The driver's trace events.
    pub traces: Vec<String>,
}

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(line);
}

fn drain(log: &Log) -> Vec<String> {
    core::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Builds a run request for `packet` on `interface`.
#[must_use]
pub fn run_request(interface: u32, protocol: u32, packet: &[u8]) -> Vec<u8> {
    let header = RunRequest {
        version: REQUEST_VERSION,
        interface_id: interface,
        protocol,
        data_len: u32::try_from(packet.len()).unwrap_or(u32::MAX),
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(packet);
    bytes
}

/// Builds a profile request.
#[must_use]
pub fn profile_request(interface: u32, iterations: u64, flags: u32, packet: &[u8]) -> Vec<u8> {
    let header = ProfileRequest {
        version: REQUEST_VERSION,
        parameter: interface,
        iterations,
        flags,
        data_len: u32::try_from(packet.len()).unwrap_or(u32::MAX),
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(packet);
    bytes
}

/// Sends a run request and parses the reply.
///
/// # Errors
/// If a successful reply is malformed.
pub fn run(
    kernel: &Kernel,
    handle: &FileHandle,
    interface: u32,
    packet: &[u8],
) -> Result<(NTSTATUS, RunReply, Vec<u8>), Failure> {
    let request = run_request(interface, 6, packet);
    let result = kernel.device_io_control(
        handle,
        IOCTL_SAMPLE_NET_RUN,
        &request,
        RunReply::SIZE + packet.len(),
    );
    if result.status != STATUS_SUCCESS {
        return Ok((result.status, RunReply::default(), Vec::new()));
    }
    let reply = RunReply::from_bytes(&result.output).ok_or("run reply too short")?;
    expect!(
        result.information == RunReply::SIZE + packet.len(),
        "run reply length {}",
        result.information
    );
    Ok((
        STATUS_SUCCESS,
        reply,
        result.output[RunReply::SIZE..].to_vec(),
    ))
}

/// The programs the scenario attaches.
struct Programs {
    marker: Link,
    checksum: Link,
    blocker: Link,
}

fn attach(helpers: (u64, u64), log: &Log) -> Result<Programs, Failure> {
    let (get_interface, checksum) = helpers;
    let marker_log = Arc::clone(log);
    // On interface 1: asks the context's interface through a helper, marks the packet, permits.
    let marker = Link::attach(
        LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&1u32.to_ne_bytes()),
        move |ctx: *mut c_void| {
            // SAFETY: the helper takes the program's context pointer.
            let interface = unsafe { call_helper(get_interface, [ctx as u64, 0, 0, 0, 0]) };
            push(
                &marker_log,
                format!("sample_net_get_interface_id() = {interface}"),
            );
            // SAFETY: the hook passes a PacketContext whose packet is writable.
            let context = unsafe { &*ctx.cast::<PacketContext>() };
            if context.data_start.as_ptr() < context.data_end.as_ptr() {
                // SAFETY: at least one byte, which programs may write.
                unsafe { *context.data_start.as_ptr().cast_mut() = 0xAA };
            }
            Ok(VERDICT_PERMIT)
        },
    )
    .map_err(|e| format!("attach marker: {e}"))?;
    let checksum_log = Arc::clone(log);
    // Wildcard: checksums the packet through a helper, permits.
    let checksum = Link::attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE), move |ctx| {
        // SAFETY: the hook passes a PacketContext.
        let context = unsafe { &*ctx.cast::<PacketContext>() };
        let len = (context.data_end.as_ptr() as usize)
            .saturating_sub(context.data_start.as_ptr() as usize);
        // SAFETY: the packet's bytes are readable.
        let sum = unsafe {
            call_helper(
                checksum,
                [context.data_start.as_ptr() as u64, len as u64, 0, 0, 0],
            )
        };
        push(
            &checksum_log,
            format!("sample_net_checksum({len} bytes) = {sum:#06x}"),
        );
        Ok(VERDICT_PERMIT)
    })
    .map_err(|e| format!("attach checksum: {e}"))?;
    // On interface 2: blocks.
    let blocker = Link::attach(
        LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&2u32.to_ne_bytes()),
        |_| Ok(VERDICT_BLOCK),
    )
    .map_err(|e| format!("attach blocker: {e}"))?;
    Ok(Programs {
        marker,
        checksum,
        blocker,
    })
}

/// A request case: its name, control code, input, output room and the status it must get.
type Case = (&'static str, u32, Vec<u8>, usize, NTSTATUS);

/// Sends each case: its name, the status it got and the one it must get.
fn answers(
    kernel: &Kernel,
    handle: &FileHandle,
    cases: Vec<Case>,
) -> Vec<(String, NTSTATUS, NTSTATUS)> {
    cases
        .into_iter()
        .map(|(name, code, input, output_len, expected)| {
            let result = kernel.device_io_control(handle, code, &input, output_len);
            (name.to_owned(), result.status, expected)
        })
        .collect()
}

/// Well-formed requests at the limits: accepted (interface 2's program blocks them).
fn at_the_limits(kernel: &Kernel, handle: &FileHandle) -> Vec<(String, NTSTATUS, NTSTATUS)> {
    let largest = vec![0u8; MAX_PACKET];
    let cases = vec![
        (
            "the largest packet, protocol 255 (accepted)",
            IOCTL_SAMPLE_NET_RUN,
            run_request(2, 255, &largest),
            RunReply::SIZE + MAX_PACKET,
            STATUS_SUCCESS,
        ),
        (
            "a profile of the largest packet (accepted)",
            IOCTL_SAMPLE_NET_PROFILE,
            profile_request(2, 1, 0, &largest),
            64,
            STATUS_SUCCESS,
        ),
    ];
    answers(kernel, handle, cases)
}

/// Malformed requests and the status each must get.
fn refusals(kernel: &Kernel, handle: &FileHandle) -> Vec<(String, NTSTATUS, NTSTATUS)> {
    let packet = [1u8, 2, 3, 4];
    let good = run_request(1, 6, &packet);
    let mut bad_version = good.clone();
    bad_version[0] ^= 0xFF;
    let mut short_data = good.clone();
    short_data.pop();
    let huge = run_request(1, 6, &vec![0u8; MAX_PACKET + 1]);
    let cases: Vec<Case> = vec![
        (
            "empty input",
            IOCTL_SAMPLE_NET_RUN,
            Vec::new(),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "truncated header",
            IOCTL_SAMPLE_NET_RUN,
            good[..10].to_vec(),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "unknown version",
            IOCTL_SAMPLE_NET_RUN,
            bad_version,
            64,
            STATUS_REVISION_MISMATCH,
        ),
        (
            "data_len disagrees with the input length",
            IOCTL_SAMPLE_NET_RUN,
            short_data,
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "packet over the limit",
            IOCTL_SAMPLE_NET_RUN,
            huge,
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "output too small",
            IOCTL_SAMPLE_NET_RUN,
            good.clone(),
            RunReply::SIZE + 3,
            STATUS_BUFFER_TOO_SMALL,
        ),
        (
            "protocol above 255",
            IOCTL_SAMPLE_NET_RUN,
            run_request(1, 256, &packet),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "unknown control code",
            IOCTL_SAMPLE_NET_RUN + 0x40,
            good,
            64,
            STATUS_INVALID_DEVICE_REQUEST,
        ),
        (
            "iterations over the limit",
            IOCTL_SAMPLE_NET_PROFILE,
            profile_request(1, MAX_ITERATIONS + 1, 0, &packet),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "zero iterations",
            IOCTL_SAMPLE_NET_PROFILE,
            profile_request(1, 0, 0, &packet),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "unknown profile flags",
            IOCTL_SAMPLE_NET_PROFILE,
            profile_request(1, 1, 0x80, &packet),
            64,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "profile output too small",
            IOCTL_SAMPLE_NET_PROFILE,
            profile_request(1, 1, 0, &packet),
            8,
            STATUS_BUFFER_TOO_SMALL,
        ),
    ];
    answers(kernel, handle, cases)
}

/// Runs the scenario against `target`, on `kernel` (bound to
/// this thread, with no other driver of this kind loaded).
///
/// # Errors
/// The first expectation that did not hold.
///
/// # Panics
/// If something leaked after unload (usersim's leak check).
#[expect(clippy::too_many_lines, reason = "one narrated scenario")]
pub fn scenario(
    kernel: &Kernel,
    target: Target<'_>,
    say: Narrator<'_>,
) -> Result<NetReport, Failure> {
    let crate::Opened {
        driver,
        info_client,
        info,
        helpers,
    } = crate::open(target, "SampleNetEbpfExt", PROGRAM_TYPE, say)?;
    let address = |id| {
        info.helper(id)
            .and_then(|h| h.address)
            .ok_or(format!("helper {id:#x} has no address"))
    };
    let log: Log = Arc::default();
    let programs = attach(
        (address(HELPER_GET_INTERFACE_ID)?, address(HELPER_CHECKSUM)?),
        &log,
    )?;
    say(
        "attached: marker on interface 1, checksum on every interface (wildcard), blocker on interface 2",
    );

    let user_open = kernel.open(WIN32_PATH, Caller::User).map_or_else(
        |s| s,
        |h| {
            kernel.close(h);
            STATUS_SUCCESS
        },
    );
    expect!(
        user_open == STATUS_ACCESS_DENIED,
        "a standard user opened the control device"
    );
    say("control device: standard user refused (STATUS_ACCESS_DENIED), administrator admitted");
    let handle = kernel
        .open(WIN32_PATH, Caller::Administrator)
        .map_err(|s| format!("administrator open failed: {}", crate::status::describe(s)))?;

    let packet: Vec<u8> = (0u8..20).collect();
    let mut runs = Vec::new();
    for (interface, verdict, programs_run) in [
        (1, VERDICT_PERMIT, 2),
        (2, VERDICT_BLOCK, 1),
        (3, VERDICT_PERMIT, 1),
    ] {
        let (status, reply, packet_out) = run(kernel, &handle, interface, &packet)?;
        let helper_calls = drain(&log);
        say(&format!(
            "fire interface {interface}: {}, verdict {}, {} program(s) ran, helpers {helper_calls:?}",
            crate::status::describe(status),
            if reply.verdict == VERDICT_BLOCK {
                "BLOCK"
            } else {
                "PERMIT"
            },
            reply.programs_run
        ));
        expect!(
            status == STATUS_SUCCESS,
            "run on {interface}: {}",
            crate::status::describe(status)
        );
        expect!(
            reply.verdict == verdict && reply.programs_run == programs_run,
            "interface {interface}: {reply:?}"
        );
        runs.push(Run {
            interface,
            status,
            reply,
            packet: packet_out,
            helper_calls,
        });
    }
    let expected_sum = format!(
        "sample_net_checksum(20 bytes) = {:#06x}",
        internet_checksum(&{
            let mut marked = packet.clone();
            marked[0] = 0xAA;
            marked
        })
    );
    expect!(
        runs[0].helper_calls == ["sample_net_get_interface_id() = 1".to_owned(), expected_sum],
        "interface 1 helper results: {:?}",
        runs[0].helper_calls
    );
    expect!(
        runs[0].packet[0] == 0xAA && runs[0].packet[1..] == packet[1..],
        "packet not marked"
    );
    expect!(
        runs[1].helper_calls.is_empty(),
        "the wildcard ran after a block"
    );

    let result = kernel.device_io_control(
        &handle,
        IOCTL_SAMPLE_NET_PROFILE,
        &profile_request(2, 1000, PROFILE_AT_DISPATCH, &packet),
        ProfileReply::SIZE,
    );
    expect!(
        result.status == STATUS_SUCCESS,
        "profile: {}",
        crate::status::describe(result.status)
    );
    let mut profile = ProfileReply::from_bytes(&result.output).ok_or("profile reply too short")?;
    say(&format!(
        "profile interface 2 at DISPATCH_LEVEL: {} iterations in {} ticks at {} Hz",
        profile.iterations, profile.duration, profile.frequency
    ));
    expect!(
        profile.iterations == 1000 && profile.result == VERDICT_BLOCK && profile.programs_run == 1,
        "profile reply {profile:?}"
    );
    (profile.duration, profile.frequency) = (0, 0);
    let blocker_invocations = programs.blocker.invocations();
    let blocker_irql = programs.blocker.last_irql();
    expect!(
        blocker_invocations == 1001,
        "blocker ran {blocker_invocations} times"
    );
    expect!(
        blocker_irql == Some(DISPATCH_LEVEL),
        "profile ran at {blocker_irql:?}"
    );

    let mut refused = Vec::new();
    let answered = refusals(kernel, &handle)
        .into_iter()
        .chain(at_the_limits(kernel, &handle));
    for (name, status, expected) in answered {
        expect!(
            status == expected,
            "{name}: got {}, expected {}",
            crate::status::describe(status),
            crate::status::describe(expected)
        );
        refused.push((name, status));
    }
    say(&format!(
        "{} requests at and beyond the limits answered with their statuses",
        refused.len()
    ));

    for link in [programs.marker, programs.checksum, programs.blocker] {
        link.detach().map_err(|e| format!("detach: {e}"))?;
    }
    let (after_detach, _, _) = run(kernel, &handle, 1, &packet)?;
    expect!(
        after_detach == STATUS_NOT_FOUND,
        "run with no program: {}",
        crate::status::describe(after_detach)
    );
    say("detached all programs; a run now gets STATUS_NOT_FOUND");
    kernel.close(handle);
    drop(info_client);
    driver.unload();
    kernel.assert_no_leaks();
    say("unloaded; no pool, device, NMR, ETW or work-item leaks");
    let traces = trace_lines(kernel, PROVIDER);
    Ok(NetReport {
        program_type: info.name.clone(),
        helpers,
        runs,
        profile,
        blocker_invocations,
        blocker_irql,
        refusals: refused,
        user_open,
        after_detach,
        traces,
    })
}
