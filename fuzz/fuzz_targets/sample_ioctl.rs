//! The sample driver's control device: `IOCTL_SAMPLE_NET_RUN`, `IOCTL_SAMPLE_NET_PROFILE` and
//! any other `METHOD_BUFFERED` code, sent through usersim's `Kernel::device_io_control` to
//! `sample-netebpf-ext` loaded into usersim (its `DriverEntry`, linked into this process).
//!
//! The driver is loaded once per process with three programs attached through core-sim
//! (interface 7: permit; interface 9: an invocation failure; wildcard: block), each reading
//! every packet byte its context describes and writing the first one (AddressSanitizer checks
//! the range). An input is a script: requests with any header fields, packet, input and
//! output lengths, from any caller, and extra links attached and detached between them.
//!
//! Every link can be detached, those attached at load included (they are attached again once
//! the input is done), so a run may find no program or end with a permit.
//!
//! Properties checked besides "no crash, no leak": usersim bug-checks a request completed with
//! more output than the caller's buffer; a well-formed request (a code the sample serves, the
//! version, an input of exactly the header and its packet, a packet up to `MAX_PACKET`, room for
//! the reply, and the sample's field ranges) gets exactly the status the model gives:
//! `STATUS_SUCCESS`, `STATUS_NOT_FOUND` when no program is attached for it, or
//! `STATUS_UNSUCCESSFUL` when a program's invoke fails; a successful run returns exactly the
//! reply and the
//! packet, the verdict and the number of programs run that the target's model of the hook
//! gives (the interface's programs in attach order, then the wildcard ones, until one blocks;
//! a failed invoke or no program fails the request), and the packet exactly as that many
//! programs leave it (so no stale byte, and no byte beyond the packet in what the programs
//! read); a successful profile returns its reply with the iterations asked for and the
//! model's verdict;
//! after each input the kernel holds exactly the pool and NMR registrations it held before.
#![no_main]

mod common;
#[path = "common/ioctl.rs"]
mod ioctl;

use core::ffi::c_void;

use arbitrary::Arbitrary;
use core::cell::RefCell;
use ebpf_ext_core_sim::{Link, LinkSpec};

use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntstatus::{STATUS_NOT_FOUND, STATUS_SUCCESS, STATUS_UNSUCCESSFUL};
use ebpf_extension_common::profile::{MAX_ITERATIONS, ProfileReply, ProfileRequest};
use ioctl::{INPUT_FILL, Length, Who, touch, touched};
use libfuzzer_sys::fuzz_target;
use sample_netebpf_ext::hook::{ATTACH_TYPE, WILDCARD_INTERFACE};
use sample_netebpf_ext::program::PROGRAM_TYPE;
use sample_netebpf_ext::protocol::{
    IOCTL_SAMPLE_NET_PROFILE, IOCTL_SAMPLE_NET_RUN, MAX_PACKET, REQUEST_VERSION, RunReply,
    RunRequest, WIN32_PATH,
};
use sample_netebpf_ext::{PacketContext, VERDICT_BLOCK, VERDICT_PERMIT, driver_entry};

/// Iterations a fuzzed profile request may run (a larger valid count is reduced to this
/// range, so one input stays fast; counts above `MAX_ITERATIONS` are kept, to be refused).
const MAX_FUZZ_ITERATIONS: u64 = 64;
const MAX_REQUESTS: usize = 16;

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
enum Code {
    Run,
    Profile,
    /// Any code, of any transfer method (usersim gives other methods than `METHOD_BUFFERED`
    /// no buffers, and checks that the driver refuses them).
    Other(u32),
}

#[derive(Arbitrary, Debug)]
struct Request {
    code: Code,
    /// XORed with `REQUEST_VERSION`.
    version: u32,
    interface_id: u32,
    /// Run: `protocol`; profile: `flags`.
    protocol_or_flags: u32,
    iterations: u64,
    /// `data_len`: `None` is the packet's length.
    data_len: Option<u32>,
    packet: Vec<u8>,
    input_len: Length,
    output_len: Length,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Request(Request),
    Attach {
        interface: Option<u32>,
        verdict: u32,
    },
    Detach(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    caller: Who,
    steps: Vec<Step>,
}

// ---- the environment ------------------------------------------------------------------------

/// The program every link runs: reads the packet its context describes, writes its first
/// byte, returns `verdict` (or fails).
fn program(verdict: Option<u32>) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync {
    move |context| {
        // SAFETY: the hook passes the sample's PacketContext as the program context.
        let context = unsafe { &*context.cast::<PacketContext>() };
        let len = (context.data_end.as_ptr() as usize)
            .checked_sub(context.data_start.as_ptr() as usize)
            .expect("data_end before data_start");
        if len > 0 {
            // SAFETY: the context describes the packet buffer, readable and writable.
            let packet = unsafe {
                core::slice::from_raw_parts_mut(context.data_start.as_ptr().cast_mut(), len)
            };
            touch(packet);
        }
        verdict.ok_or(ebpf_ext_sys::ebpf_result::EBPF_INVALID_ARGUMENT)
    }
}

/// The links attached at load, as the model sees them: (interface, verdict), `None` for the
/// wildcard and for a failing program. Extra links are appended in attach order.
const LOADED: [(Option<u32>, Option<u32>); 3] = [
    (Some(7), Some(VERDICT_PERMIT)),
    (Some(9), None),
    (None, Some(VERDICT_BLOCK)),
];

/// What firing the hook for `interface` must give, by the hook's rules as the sample documents
/// them: the programs attached for the interface in attach order, then the wildcard ones,
/// until one blocks; `(verdict, programs run)`, or the status of the failure:
/// `STATUS_UNSUCCESSFUL` if a program's invoke failed, `STATUS_NOT_FOUND` if none is attached.
fn expected(model: &[(Option<u32>, Option<u32>)], interface: u32) -> Result<(u32, u32), NTSTATUS> {
    let specific = model
        .iter()
        .filter(|(p, _)| interface != WILDCARD_INTERFACE && *p == Some(interface));
    let wildcards = model.iter().filter(|(p, _)| p.is_none());
    let mut programs_run = 0;
    for (_, verdict) in specific.chain(wildcards) {
        programs_run += 1;
        match verdict {
            Some(VERDICT_BLOCK) => return Ok((VERDICT_BLOCK, programs_run)),
            Some(_) => {}
            None => return Err(STATUS_UNSUCCESSFUL),
        }
    }
    if programs_run > 0 {
        Ok((VERDICT_PERMIT, programs_run))
    } else {
        Err(STATUS_NOT_FOUND)
    }
}

/// The interface a request the sample must serve fires the hook for: `None` for any request
/// the SDK or the sample refuses before firing (a code it does not serve, another version, an
/// input that is not exactly the header and its packet, a packet over `MAX_PACKET`, no room
/// for the reply (and, for a run, the packet), a field out of its range).
fn well_formed(code: u32, bytes: &[u8], output_len: usize) -> Option<u32> {
    match code {
        IOCTL_SAMPLE_NET_RUN => {
            let request = RunRequest::from_bytes(bytes)?;
            let len = ioctl::payload_len(bytes, RunRequest::SIZE, request.data_len, MAX_PACKET)?;
            (request.version == REQUEST_VERSION
                && request.protocol <= 255
                && output_len >= RunReply::SIZE + len)
                .then_some(request.interface_id)
        }
        IOCTL_SAMPLE_NET_PROFILE => {
            ioctl::well_formed_profile(bytes, output_len, REQUEST_VERSION, MAX_PACKET)
        }
        _ => None,
    }
}

fn link(interface: Option<u32>, verdict: Option<u32>) -> Option<Link> {
    let mut spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
    if let Some(interface) = interface {
        spec = spec.attach_parameter(&interface.to_ne_bytes());
    }
    Link::attach(spec, program(verdict)).ok()
}

/// The links of [`LOADED`], by index: `None` while an input has detached one.
type LoadedLinks = RefCell<Vec<Option<Link>>>;

/// The target's driver, its kernel and their baseline.
type Env = common::Loaded<LoadedLinks>;

thread_local! {
    /// Loaded on the fuzzing thread at the first input and never unloaded (see hook_attach.rs).
    static ENV: &'static Env = Box::leak(Box::new(Env::native(driver_entry, "SampleNetEbpfExt", || {
        RefCell::new(
            LOADED
                .iter()
                .map(|&(interface, verdict)| Some(link(interface, verdict).expect("attach")))
                .collect(),
        )
    })));
}

/// Whose a link attached during an input is: one of [`LOADED`] (by index) or the input's.
enum Owner {
    Loaded(usize),
    Input(Link),
}

// ---- the scenario ---------------------------------------------------------------------------

/// The bytes, code and output length of a request.
fn encode(request: &Request) -> (u32, Vec<u8>, usize) {
    let data_len = request
        .data_len
        .unwrap_or(u32::try_from(request.packet.len()).unwrap_or(u32::MAX));
    let version = request.version ^ REQUEST_VERSION;
    let (code, mut bytes, reply) = match request.code {
        Code::Run | Code::Other(_) => (
            IOCTL_SAMPLE_NET_RUN,
            RunRequest {
                version,
                interface_id: request.interface_id,
                protocol: request.protocol_or_flags,
                data_len,
            }
            .to_bytes()
            .to_vec(),
            RunReply::SIZE + request.packet.len(),
        ),
        Code::Profile => {
            let iterations = match request.iterations {
                n @ 2..=MAX_ITERATIONS => n % MAX_FUZZ_ITERATIONS + 1,
                n => n,
            };
            (
                IOCTL_SAMPLE_NET_PROFILE,
                ProfileRequest {
                    version,
                    parameter: request.interface_id,
                    iterations,
                    flags: request.protocol_or_flags,
                    data_len,
                }
                .to_bytes()
                .to_vec(),
                32,
            )
        }
    };
    let code = match request.code {
        Code::Other(c) => c,
        _ => code,
    };
    bytes.extend_from_slice(&request.packet);
    if let Length::Any(n) = request.input_len {
        bytes.resize(usize::from(n), INPUT_FILL);
    }
    let output_len = request.output_len.or_exact(reply);
    (code, bytes, output_len)
}

fn scenario(env: &Env, input: &Input) {
    let caller = input.caller.caller();
    let handle = env.kernel.open(WIN32_PATH, caller);
    if common::verbose() {
        eprintln!("open as {caller:?}: {:?}", handle.as_ref().err());
    }
    // What is attached, in attach order: (interface, verdict) as the model sees it, and whose.
    let mut attached: Vec<(Option<u32>, Option<u32>, Owner)> = LOADED
        .iter()
        .enumerate()
        .map(|(k, &(interface, verdict))| (interface, verdict, Owner::Loaded(k)))
        .collect();
    let mut added = 0;
    for step in input.steps.iter().take(MAX_REQUESTS) {
        match step {
            Step::Attach { interface, verdict } => {
                if added < 4 {
                    added += 1;
                    let verdict = [VERDICT_PERMIT, VERDICT_BLOCK]
                        .get(*verdict as usize % 3)
                        .copied();
                    let link = link(*interface, verdict).expect("at most 16 per interface");
                    let interface = interface.filter(|&i| i != WILDCARD_INTERFACE);
                    attached.push((interface, verdict, Owner::Input(link)));
                }
            }
            Step::Detach(i) => {
                if !attached.is_empty() {
                    let (.., owner) = attached.remove(usize::from(*i) % attached.len());
                    let link = match owner {
                        Owner::Loaded(k) => env.kept.borrow_mut()[k].take().expect("attached"),
                        Owner::Input(link) => link,
                    };
                    link.detach().expect("detach");
                }
            }
            Step::Request(request) => {
                let Ok(handle) = handle.as_ref() else {
                    continue;
                };
                let model: Vec<(Option<u32>, Option<u32>)> =
                    attached.iter().map(|&(i, v, _)| (i, v)).collect();
                let (code, bytes, output_len) = encode(request);
                let result = env
                    .kernel
                    .device_io_control(handle, code, &bytes, output_len);
                if common::verbose() {
                    eprintln!(
                        "code {code:#x} in {} out {output_len}: {:#x}, {} bytes",
                        bytes.len(),
                        result.status,
                        result.information
                    );
                }
                if let Some(interface) = well_formed(code, &bytes, output_len) {
                    let status = expected(&model, interface).map_or_else(|s| s, |_| STATUS_SUCCESS);
                    assert_eq!(
                        result.status, status,
                        "a well-formed request for interface {interface}, by the hook's rules"
                    );
                }
                if code == IOCTL_SAMPLE_NET_RUN && result.status == STATUS_SUCCESS {
                    let packet = &bytes[RunRequest::SIZE..];
                    assert_eq!(result.information, RunReply::SIZE + packet.len());
                    let reply = RunReply::from_bytes(&result.output).expect("reply");
                    let asked = RunRequest::from_bytes(&bytes).expect("request");
                    assert_eq!(
                        Ok((reply.verdict, reply.programs_run)),
                        expected(&model, asked.interface_id),
                        "the verdict and the programs run, by the hook's rules"
                    );
                    // Every byte returned is the packet as the programs left it: no stale
                    // byte, no byte from outside the packet in any program's sum.
                    assert_eq!(
                        result.output[RunReply::SIZE..],
                        touched(packet, reply.programs_run),
                        "the returned packet"
                    );
                }
                if code == IOCTL_SAMPLE_NET_PROFILE && result.status == STATUS_SUCCESS {
                    assert_eq!(result.information, ProfileReply::SIZE);
                    let reply = ProfileReply::from_bytes(&result.output).expect("reply");
                    let asked = ProfileRequest::from_bytes(&bytes).expect("request");
                    assert_eq!(reply.iterations, asked.iterations);
                    assert_eq!(
                        Ok((reply.result, reply.programs_run)),
                        expected(&model, asked.parameter),
                        "the last iteration's verdict and programs run"
                    );
                }
            }
        }
    }
    // The input's links go; those of LOADED it detached are attached again.
    drop(attached);
    for (k, slot) in env.kept.borrow_mut().iter_mut().enumerate() {
        if slot.is_none() {
            let (interface, verdict) = LOADED[k];
            *slot = Some(link(interface, verdict).expect("attach again"));
        }
    }
    if let Ok(handle) = handle {
        env.kernel.close(handle);
    }
    env.baseline.assert_unchanged(&env.kernel);
}

fuzz_target!(|input: Input| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| scenario(env, &input));
});
