//! The upstream sample's port, `sample-ext`, through its control device:
//! `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN`, `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH`,
//! `IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE` and any other `METHOD_BUFFERED` code, sent through usersim's `Kernel::device_io_control` to the driver
//! loaded into usersim (its `DriverEntry`, linked into this process).
//!
//! The hook admits one program per attach parameter, and a parameterless one only while
//! nothing else is attached. An input is a script: requests with any header fields, data,
//! input and output lengths, from any caller, and links attached (with or without a
//! parameter, returning a value of their own or failing) and detached between them. The target
//! keeps its own model of which links the hook accepted.
//!
//! Properties checked besides "no crash, no leak": usersim bug-checks a request completed with
//! more output than the caller's buffer; a successful run ran the program the model says (the
//! one attached for the parameter, else the parameterless one) once, over a context with the
//! request's `uint32_data` and the helper values 1 and 2, and returns exactly the reply and
//! the data as one run of it leaves them; a successful batch ran it `count` times and returns
//! their count, the sum of their results and the data as `count` runs leave it; a successful
//! profile ran it `iterations` times over a context with the processor number and no helper
//! values, and returns the count, its result and one program run, without the data; a request the
//! model says no program can serve fails; a well-formed request (a code the sample serves, the
//! version, an input of exactly the header and its data, data up to `MAX_DATA`, room for the
//! reply (and, for a run or batch, the data), counts and flags in range) gets exactly the
//! model's status: `STATUS_SUCCESS`, `STATUS_NOT_FOUND` with no program for it, or
//! `STATUS_UNSUCCESSFUL` when its program fails; after each input the kernel holds exactly the pool
//! and NMR registrations it held before.
#![no_main]

mod common;
#[path = "common/ioctl.rs"]
mod ioctl;

use core::cell::Cell;
use core::ffi::c_void;

use arbitrary::Arbitrary;
use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntstatus::{STATUS_NOT_FOUND, STATUS_SUCCESS, STATUS_UNSUCCESSFUL};
use ebpf_extension_common::irql::current_processor;
use ebpf_extension_common::profile::{MAX_ITERATIONS, ProfileReply, ProfileRequest};
use ioctl::{INPUT_FILL, Length, Who, touch, touched};
use libfuzzer_sys::fuzz_target;
use sample_ext::hook::ATTACH_TYPE;
use sample_ext::program::PROGRAM_TYPE;
use sample_ext::protocol::{
    IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE, IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH, MAX_BATCH, MAX_DATA, REQUEST_VERSION, RunBatchReply,
    RunBatchRequest, RunReply, RunRequest, WIN32_PATH,
};
use sample_ext::{SampleContext, driver_entry};

/// Invocations a fuzzed batch may run (a larger valid count is reduced to this range, so one
/// input stays fast; counts outside `1..=MAX_BATCH` are kept, to be refused).
const MAX_FUZZ_BATCH: u32 = 8;
/// Iterations a fuzzed profile may run, likewise (counts outside `1..=MAX_ITERATIONS` are
/// kept, to be refused).
const MAX_FUZZ_ITERATIONS: u64 = 8;
const MAX_STEPS: usize = 16;
const MAX_LINKS: usize = 4;

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
enum Code {
    Run,
    Batch,
    Profile,
    /// Any code (the profile code's requests go as `Profile`'s), of any transfer method (usersim gives other methods than `METHOD_BUFFERED`
    /// no buffers, and checks that the driver refuses them).
    Other(u32),
}

#[derive(Arbitrary, Debug)]
struct Request {
    code: Code,
    /// XORed with `REQUEST_VERSION`.
    version: u32,
    /// Taken modulo 4, so that it often names an attached program.
    attach_parameter: u8,
    /// Run: `uint32_data`; batch: `count`; profile: `iterations`.
    value: u32,
    /// Profile: `flags`.
    flags: u32,
    /// `data_len`: `None` is the data's length.
    data_len: Option<u32>,
    data: Vec<u8>,
    input_len: Length,
    output_len: Length,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Request(Request),
    Attach {
        /// Taken modulo 4; `None` attaches without a parameter.
        parameter: Option<u8>,
        /// `None`: the program fails.
        result: Option<u32>,
    },
    Detach(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    caller: Who,
    steps: Vec<Step>,
}

// ---- the environment ------------------------------------------------------------------------

/// What the last program run saw: its context's `uint32_data`, `helper_data_1` and
/// `helper_data_2`, and how many runs there have been.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    uint32_data: u32,
    helper_data: (u32, u32),
    runs: u32,
}

/// The target's driver, its kernel and their baseline.
type Env = common::Loaded;

thread_local! {
    static SEEN: Cell<Seen> = const { Cell::new(Seen { uint32_data: 0, helper_data: (0, 0), runs: 0 }) };
}

/// The program every link runs: reads the data its context describes, writes its first byte,
/// notes what it saw, returns `result` (or fails).
fn program(result: Option<u32>) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync {
    move |context| {
        // SAFETY: the hook passes the sample's context as the program context.
        let context = unsafe { &*context.cast::<SampleContext>() };
        let len = (context.data_end.as_ptr() as usize)
            .checked_sub(context.data_start.as_ptr() as usize)
            .expect("data_end before data_start");
        if len > 0 {
            // SAFETY: the context describes the request's data, readable and writable.
            let data = unsafe {
                core::slice::from_raw_parts_mut(context.data_start.as_ptr().cast_mut(), len)
            };
            touch(data);
        }
        SEEN.set(Seen {
            uint32_data: context.uint32_data,
            helper_data: (context.helper_data_1, context.helper_data_2),
            runs: SEEN.get().runs.wrapping_add(1),
        });
        result.ok_or(ebpf_ext_sys::ebpf_result::EBPF_INVALID_ARGUMENT)
    }
}

/// A link the hook accepted, as the target's model keeps it.
struct Attached {
    link: Link,
    parameter: Option<u32>,
    result: Option<u32>,
}

/// The hook's attach policy, as the model applies it: one program per parameter, and a
/// parameterless one only alone (a parameterless one does not keep others out).
fn admits(links: &[Attached], parameter: Option<u32>) -> bool {
    match parameter {
        None => links.is_empty(),
        Some(p) => links.iter().all(|l| l.parameter != Some(p)),
    }
}

/// The program a request for `parameter` runs: the one attached for it, else the
/// parameterless one.
fn chosen(links: &[Attached], parameter: u32) -> Option<&Attached> {
    links
        .iter()
        .find(|l| l.parameter == Some(parameter))
        .or_else(|| links.iter().find(|l| l.parameter.is_none()))
}

thread_local! {
    /// Loaded on the fuzzing thread at the first input and never unloaded (see hook_attach.rs).
    static ENV: &'static Env = Box::leak(Box::new(Env::native(driver_entry, "SampleEbpfExt", || ())));
}

// ---- the scenario ---------------------------------------------------------------------------

/// The bytes, code and output length of a request.
fn encode(request: &Request) -> (u32, Vec<u8>, usize) {
    let data_len = request
        .data_len
        .unwrap_or(u32::try_from(request.data.len()).unwrap_or(u32::MAX));
    let version = request.version ^ REQUEST_VERSION;
    let attach_parameter = u32::from(request.attach_parameter % 4);
    let (code, mut bytes, reply) = match request.code {
        Code::Profile | Code::Other(IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE) => {
            let iterations = match u64::from(request.value) {
                n @ 2..=MAX_ITERATIONS => n % MAX_FUZZ_ITERATIONS + 1,
                n => n,
            };
            (
                IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE,
                ProfileRequest {
                    version,
                    parameter: attach_parameter,
                    iterations,
                    flags: request.flags,
                    data_len,
                }
                .to_bytes()
                .to_vec(),
                ProfileReply::SIZE,
            )
        }
        Code::Run | Code::Other(_) => (
            IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
            RunRequest {
                version,
                attach_parameter,
                uint32_data: request.value,
                data_len,
            }
            .to_bytes()
            .to_vec(),
            RunReply::SIZE,
        ),
        Code::Batch => {
            let count = match request.value {
                n @ 2..=MAX_BATCH => n % MAX_FUZZ_BATCH + 1,
                n => n,
            };
            (
                IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH,
                RunBatchRequest {
                    version,
                    attach_parameter,
                    count,
                    data_len,
                }
                .to_bytes()
                .to_vec(),
                RunBatchReply::SIZE,
            )
        }
    };
    let code = match request.code {
        Code::Other(c) if c != IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE => c,
        _ => code,
    };
    bytes.extend_from_slice(&request.data);
    if let Length::Any(n) = request.input_len {
        bytes.resize(usize::from(n), INPUT_FILL);
    }
    let output_len = request.output_len.or_exact(reply + request.data.len());
    (code, bytes, output_len)
}

/// The attach parameter of a request the sample must serve: `None` for any request the SDK or
/// the sample refuses before running a program (a code it does not serve, another version, an
/// input that is not exactly the header and its data, data over `MAX_DATA`, no room for the
/// reply (and, for a run or batch, the data), a count, iteration count or flag out of range).
fn well_formed(code: u32, bytes: &[u8], output_len: usize) -> Option<u32> {
    let data = |header: usize, data_len: u32| ioctl::payload_len(bytes, header, data_len, MAX_DATA);
    match code {
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN => {
            let request = RunRequest::from_bytes(bytes)?;
            let len = data(RunRequest::SIZE, request.data_len)?;
            (request.version == REQUEST_VERSION && output_len >= RunReply::SIZE + len)
                .then_some(request.attach_parameter)
        }
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH => {
            let request = RunBatchRequest::from_bytes(bytes)?;
            let len = data(RunBatchRequest::SIZE, request.data_len)?;
            (request.version == REQUEST_VERSION
                && (1..=MAX_BATCH).contains(&request.count)
                && output_len >= RunBatchReply::SIZE + len)
                .then_some(request.attach_parameter)
        }
        IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE => {
            ioctl::well_formed_profile(bytes, output_len, REQUEST_VERSION, MAX_DATA)
        }
        _ => None,
    }
}

/// Checks a completed request against the model; `runs_before` is [`Seen::runs`] before it.
fn check(
    links: &[Attached],
    code: u32,
    (bytes, output_len): (&[u8], usize),
    result: &ebpf_ext_usersim::IoResult,
    runs_before: u32,
) {
    if let Some(parameter) = well_formed(code, bytes, output_len) {
        let status = match chosen(links, parameter) {
            None => STATUS_NOT_FOUND,
            Some(Attached { result: None, .. }) => STATUS_UNSUCCESSFUL,
            Some(_) => STATUS_SUCCESS,
        };
        assert_eq!(
            result.status, status,
            "a well-formed request for parameter {parameter}, by the hook's rules"
        );
    }
    let (header, reply) = match code {
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN => (RunRequest::SIZE, RunReply::SIZE),
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH => (RunBatchRequest::SIZE, RunBatchReply::SIZE),
        IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE => (ProfileRequest::SIZE, ProfileReply::SIZE),
        _ => return,
    };
    // The attach parameter sits at the same offset in every request.
    let parameter = bytes
        .get(4..8)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let program = parameter.and_then(|p| chosen(links, p));
    let seen = SEEN.get();
    if result.status != STATUS_SUCCESS {
        return;
    }
    let program = program.expect("a request no program can serve succeeded");
    let program_result = program
        .result
        .expect("a failing program's request succeeded");
    let data = &bytes[header..];
    if code == IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE {
        let request = ProfileRequest::from_bytes(bytes).expect("request");
        let reply = ProfileReply::from_bytes(&result.output).expect("reply");
        assert_eq!(result.information, ProfileReply::SIZE, "no data comes back");
        assert_eq!(
            (reply.iterations, reply.result, reply.programs_run),
            (request.iterations, program_result, 1)
        );
        assert_eq!(
            u64::from(seen.runs.wrapping_sub(runs_before)),
            request.iterations,
            "programs run"
        );
        assert_eq!(
            (seen.uint32_data, seen.helper_data),
            (current_processor(), (0, 0)),
            "upstream's profile context"
        );
        return;
    }
    assert_eq!(result.information, reply + data.len());
    let runs = if code == IOCTL_SAMPLE_EBPF_EXT_CTL_RUN {
        let request = RunRequest::from_bytes(bytes).expect("request");
        let reply = RunReply::from_bytes(&result.output).expect("reply");
        assert_eq!((reply.result, reply.programs_run), (program_result, 1));
        assert_eq!(
            seen.uint32_data, request.uint32_data,
            "the context's uint32_data"
        );
        1
    } else {
        let request = RunBatchRequest::from_bytes(bytes).expect("request");
        let reply = RunBatchReply::from_bytes(&result.output).expect("reply");
        assert_eq!(reply.results, request.count);
        assert_eq!(
            reply.result_sum,
            program_result.wrapping_mul(request.count),
            "the sum of the batch's results"
        );
        assert_eq!(seen.uint32_data, 0, "a batch's context is the RUN context");
        request.count
    };
    assert_eq!(seen.runs.wrapping_sub(runs_before), runs, "programs run");
    assert_eq!(
        seen.helper_data,
        (1, 2),
        "the control device's helper values"
    );
    assert_eq!(
        result.output[reply..],
        touched(data, runs),
        "the returned data"
    );
}

fn scenario(env: &Env, input: &Input) {
    let caller = input.caller.caller();
    let handle = env.kernel.open(WIN32_PATH, caller);
    if common::verbose() {
        eprintln!("open as {caller:?}: {:?}", handle.as_ref().err());
    }
    let mut links: Vec<Attached> = Vec::new();
    for step in input.steps.iter().take(MAX_STEPS) {
        match step {
            Step::Attach { parameter, result } => {
                if links.len() >= MAX_LINKS {
                    continue;
                }
                let parameter = parameter.map(|p| u32::from(p % 4));
                let mut spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
                if let Some(p) = parameter {
                    spec = spec.attach_parameter(&p.to_ne_bytes());
                }
                let admitted = admits(&links, parameter);
                match Link::attach(spec, program(*result)) {
                    Ok(link) => {
                        assert!(admitted, "the hook admitted what its policy refuses");
                        links.push(Attached {
                            link,
                            parameter,
                            result: *result,
                        });
                    }
                    Err(e) => assert!(!admitted, "the hook refused an admissible attach: {e:?}"),
                }
            }
            Step::Detach(i) => {
                if !links.is_empty() {
                    let attached = links.remove(usize::from(*i) % links.len());
                    attached.link.detach().expect("detach");
                }
            }
            Step::Request(request) => {
                let Ok(handle) = handle.as_ref() else {
                    continue;
                };
                let (code, bytes, output_len) = encode(request);
                let runs_before = SEEN.get().runs;
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
                check(&links, code, (&bytes, output_len), &result, runs_before);
            }
        }
    }
    for attached in links {
        attached.link.detach().expect("detach");
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
