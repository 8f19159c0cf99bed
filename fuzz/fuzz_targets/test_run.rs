//! Test runs (`bpf_prog_test_run`): what a user-mode caller passes to an extension's
//! `context_create` and `context_destroy`, through core-sim's program-information client, for
//! both samples that publish them, loaded into usersim (their `DriverEntry`, linked into this
//! process):
//!
//! - sample-ext: `CopyTestRun` (the context, `sample_program_context_t` without the core's
//!   header, copied from `ctx_in`; the programs working on `data_in` in place);
//! - sample-ntos-ext: `process_notify_context_t` (296 bytes, the header included) with four
//!   `UNICODE_STRING`s whose bytes are packed in `data_in`, copied into buffers of the run's
//!   own.
//!
//! An input is a script of runs: each has any `ctx_in` and `data_in` (or NULL with any size),
//! any `data_out` and `ctx_out` capacity, for the process context string lengths drawn
//! against the data (a maximum below the length too), and optionally the n-th allocation
//! failing. Create and destroy run at the program type's `required_irql`; between them
//! nothing runs, so what is checked is the extension's parsing and its output.
//!
//! Properties checked besides "no crash" (every buffer is allocated with exactly its bytes,
//! so AddressSanitizer reports a read or write outside them):
//! - create succeeds exactly when the input is well formed (the sample: a context of at
//!   least 32 bytes; the process: at least 296 bytes of context, data, every string's length
//!   at most its maximum and all of them within the data), and otherwise returns
//!   `EBPF_INVALID_ARGUMENT`, or `EBPF_NO_MEMORY` when an allocation failed, leaving nothing
//!   allocated;
//! - the context's data pointers: the sample's are `data_in` itself, the process's the run's
//!   own copy of the command line;
//! - an output that does not fit is reported with size 0; one that fits is exactly the data
//!   (the sample's `data_in`, the process's four strings) and the context, its pointers and
//!   the core's two header slots zero;
//! - after each input the kernel holds exactly the pool and NMR registrations it held before.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use ebpf_ext_core_sim::{Input as RunInput, ProgramInfoClient};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, ebpf_result_t};
use ebpf_ext_usersim::{Fault, Kernel};
use libfuzzer_sys::fuzz_target;
use sample_harness::{LoadedDriver, Target};

/// `sample_program_context_t`.
const SAMPLE_SIZE: usize = 32;
/// `process_notify_context_t`: the header, `process_md_t` (its data pointers first), the
/// `PEPROCESS` and create-info pointers at 208 and 216, four `UNICODE_STRING`s at 224, 240,
/// 256 and 272 (length, maximum, four reserved bytes, buffer), `account_lookup_done` at 288.
const NOTIFY_SIZE: usize = 296;
const STRINGS_AT: usize = 224;
const LOOKUP_DONE_AT: usize = 288;
/// Largest capacity a run asks `context_destroy` to fill.
const MAX_CAPACITY: usize = 4096;
const MAX_RUNS: usize = 8;

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Extension {
    /// sample-ext's `CopyTestRun<SampleContext>`.
    Sample,
    /// sample-ntos-ext's process test run.
    Process,
}

#[derive(Arbitrary, Debug)]
enum Buffer {
    Bytes(Vec<u8>),
    /// NULL with this size (the SDK takes it as no buffer).
    Null(u16),
}

#[derive(Arbitrary, Debug)]
enum Capacity {
    /// The size the output needs.
    Same,
    /// This many bytes more.
    More(u8),
    Any(u16),
}

#[derive(Arbitrary, Debug)]
struct Run {
    extension: Extension,
    context: Buffer,
    data: Buffer,
    /// For the process context: each string's `Length` (a share of the data left) and how
    /// far its `MaximumLength` lies from it (`None` keeps the context's own bytes there).
    strings: Option<[(u16, i8); 4]>,
    data_out: Capacity,
    context_out: Capacity,
    /// Fail the n-th allocation from the create on (1 to 4).
    failing_allocation: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    runs: Vec<Run>,
}

// ---- the environment ------------------------------------------------------------------------

struct Env {
    kernel: Kernel,
    _drivers: [LoadedDriver<'static>; 2],
    sample: ProgramInfoClient,
    process: ProgramInfoClient,
    baseline: common::Baseline,
}

thread_local! {
    /// Loaded on the fuzzing thread at the first input and never unloaded (see hook_attach.rs).
    static ENV: &'static Env = Box::leak(Box::new({
        let kernel = Kernel::new();
        let sample = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
            .expect("sample-ext DriverEntry");
        let process = LoadedDriver::load(
            Target::Native(sample_ntos_ext::driver_entry),
            "SampleNtosEbpfExt",
        )
        .expect("sample-ntos-ext DriverEntry");
        let sample_client =
            ProgramInfoClient::attach(sample_ext::program::PROGRAM_TYPE).expect("sample client");
        let process_client = ProgramInfoClient::attach(sample_ntos_ext::program::PROGRAM_TYPE)
            .expect("process client");
        let baseline = common::Baseline::of(&kernel);
        Env {
            kernel,
            _drivers: [sample, process],
            sample: sample_client,
            process: process_client,
            baseline,
        }
    }));
}

// ---- the scenario ---------------------------------------------------------------------------

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// `ctx_in` for a process run: the fuzzer's bytes, with the string lengths drawn against the
/// data when the input asks for it.
fn process_context(context: &mut Vec<u8>, data_len: usize, strings: &[(u16, i8); 4]) {
    if context.len() < NOTIFY_SIZE {
        context.resize(NOTIFY_SIZE, 0);
    }
    let mut left = data_len;
    for (i, &(length, offset)) in strings.iter().enumerate() {
        let length = usize::from(length) % (left + 1);
        left -= length;
        let maximum = (length as i64 + i64::from(offset)).clamp(0, i64::from(u16::MAX));
        let at = STRINGS_AT + 16 * i;
        // The data is at most u16::MAX bytes (below), so is each length.
        context[at..at + 2].copy_from_slice(&(length as u16).to_le_bytes());
        context[at + 2..at + 4].copy_from_slice(&(maximum as u16).to_le_bytes());
    }
}

/// The four strings' (length, maximum) in a process `ctx_in` of at least 296 bytes.
fn string_sizes(context: &[u8]) -> [(usize, usize); 4] {
    core::array::from_fn(|i| {
        let at = STRINGS_AT + 16 * i;
        (u16_at(context, at), u16_at(context, at + 2))
    })
}

fn capacity(capacity: &Capacity, needed: usize) -> usize {
    match capacity {
        Capacity::Same => needed,
        Capacity::More(n) => needed + usize::from(*n),
        Capacity::Any(n) => usize::from(*n),
    }
    .min(MAX_CAPACITY)
}

/// An input buffer of exactly these bytes (no spare capacity for a read to land in).
fn exact(bytes: &[u8]) -> Box<[u8]> {
    bytes.to_vec().into_boxed_slice()
}

fn run(env: &Env, run: &Run) {
    let client = match run.extension {
        Extension::Sample => &env.sample,
        Extension::Process => &env.process,
    };
    let data = match &run.data {
        Buffer::Bytes(bytes) => Some(&bytes[..bytes.len().min(usize::from(u16::MAX))]),
        Buffer::Null(_) => None,
    };
    let mut context = match &run.context {
        Buffer::Bytes(bytes) => Some(bytes.clone()),
        Buffer::Null(_) => None,
    };
    if let (Extension::Process, Some(context), Some(strings)) =
        (run.extension, context.as_mut(), run.strings.as_ref())
    {
        process_context(context, data.map_or(0, <[u8]>::len), strings);
    }
    let mut data = data.map(exact);
    let context = context.as_deref().map(exact);
    let data_len = data.as_ref().map_or(0, |d| d.len());
    let context_len = context.as_ref().map_or(0, |c| c.len());
    // What `data_out` must hold when nothing ran: `data_in`, which the run lends in place.
    let data_before = data.as_deref().unwrap_or_default().to_vec();

    let well_formed = match run.extension {
        Extension::Sample => context_len >= SAMPLE_SIZE,
        Extension::Process => {
            context_len >= NOTIFY_SIZE && data_len > 0 && {
                let sizes = string_sizes(context.as_deref().unwrap_or_default());
                sizes.iter().all(|&(length, maximum)| length <= maximum)
                    && sizes.iter().map(|&(length, _)| length).sum::<usize>() <= data_len
            }
        }
    };
    let data_in = match (&run.data, data.as_deref_mut()) {
        (Buffer::Null(size), _) => RunInput::Null {
            size: usize::from(*size),
        },
        (_, Some(bytes)) => RunInput::Bytes(bytes),
        (_, None) => unreachable!(),
    };
    let context_in = match (&run.context, context.as_deref()) {
        (Buffer::Null(size), _) => RunInput::Null {
            size: usize::from(*size),
        },
        (_, Some(bytes)) => RunInput::Bytes(bytes),
        (_, None) => unreachable!(),
    };

    let before = env.kernel.pool_outstanding();
    // The n-th allocation from here fails, if create makes that many.
    let failing = run.failing_allocation.map(|n| u64::from(n % 4) + 1);
    if let Some(n) = failing {
        env.kernel.inject(Fault::Allocation(n));
    }
    let allocations = env.kernel.allocation_count();
    let created = client.at_required_irql(|| client.create_context_with(data_in, context_in));
    env.kernel.disarm_faults();
    let made = env.kernel.allocation_count() - allocations;
    let failed_allocation = failing.is_some_and(|n| made >= n);
    if common::verbose() {
        eprintln!(
            "{:?}: data {data_len} ctx {context_len} well formed {well_formed} allocation failed {failed_allocation}: {:?}",
            run.extension,
            created.as_ref().err()
        );
    }
    let created = match created {
        Ok(created) => {
            assert!(well_formed, "a malformed input was accepted");
            assert!(!failed_allocation, "created although an allocation failed");
            created
        }
        Err(result) => {
            let expected: ebpf_result_t = if !well_formed {
                EBPF_INVALID_ARGUMENT
            } else if failed_allocation {
                EBPF_NO_MEMORY
            } else {
                panic!("a well-formed input was refused with {result}");
            };
            assert_eq!(result, expected);
            assert_eq!(
                env.kernel.pool_outstanding(),
                before,
                "a refused context_create left an allocation"
            );
            return;
        }
    };
    let context_in = context.as_deref().expect("a created run had ctx_in");
    // Where the `data_in` the provider received is: the core's copy (empty, at NULL, when
    // there is none: core-sim passes an empty buffer as NULL).
    let given = created.data_in();
    let data_at = given.start as usize;
    assert_eq!(
        given.end as usize - data_at,
        data_len,
        "the core's copy of data_in"
    );

    // The context's data pointers, as programs would see them.
    let pointer = created.as_ptr().cast::<u8>();
    // SAFETY: the context the provider made, its two data pointers first (both types).
    let (start, end) = unsafe {
        (
            pointer.cast::<usize>().read_unaligned(),
            pointer.wrapping_add(8).cast::<usize>().read_unaligned(),
        )
    };
    let sizes = match run.extension {
        Extension::Sample => {
            assert_eq!(
                (start, end),
                (data_at, data_at + data_len),
                "the sample's programs work on data_in"
            );
            None
        }
        Extension::Process => {
            let sizes = string_sizes(context_in);
            let command = sizes[0].0;
            assert_eq!(end - start, command, "the command line's length");
            if command > 0 {
                assert!(
                    end <= data_at || start >= data_at + data_len,
                    "a copy, not data_in"
                );
                // SAFETY: the run's copy of the command line, alive until destroy.
                let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, command) };
                assert_eq!(bytes, &data_before[..command], "the command line's bytes");
            }
            Some(sizes)
        }
    };

    let (data_needed, context_needed) = match sizes {
        None => (data_len, SAMPLE_SIZE),
        Some(sizes) => (sizes.iter().map(|&(length, _)| length).sum(), NOTIFY_SIZE),
    };
    let data_capacity = capacity(&run.data_out, data_needed);
    let context_capacity = capacity(&run.context_out, context_needed);
    let output = client
        .at_required_irql(|| created.destroy(data_capacity, context_capacity))
        .expect("context_destroy");
    if data_capacity < data_needed {
        assert_eq!(output.data_size_out, 0, "data_out does not fit: size 0");
    } else {
        assert_eq!(output.data, data_before[..data_needed], "data_out");
    }
    if context_capacity < context_needed {
        assert_eq!(output.context_size_out, 0, "ctx_out does not fit: size 0");
        return;
    }
    let mut expected = context_in[..context_needed].to_vec();
    match sizes {
        // `sample_program_context_t`: its data pointers NULL.
        None => expected[..16].fill(0),
        Some(sizes) => {
            // The core's two header slots, the data pointers, the kernel's two pointers and
            // the strings' buffers zero; an empty string has no buffer, so maximum 0; the
            // lookup flag 0 or 1.
            for (at, len) in [
                (0, 16),
                (64, 16),
                (208, 16),
                (232, 8),
                (248, 8),
                (264, 8),
                (280, 8),
            ] {
                expected[at..at + len].fill(0);
            }
            for (i, &(length, _)) in sizes.iter().enumerate() {
                if length == 0 {
                    let at = STRINGS_AT + 16 * i + 2;
                    expected[at..at + 2].fill(0);
                }
            }
            expected[LOOKUP_DONE_AT] = u8::from(context_in[LOOKUP_DONE_AT] != 0);
        }
    }
    assert_eq!(output.context, expected, "ctx_out");
}

fn scenario(env: &Env, input: &Input) {
    for each in input.runs.iter().take(MAX_RUNS) {
        run(env, each);
    }
    env.baseline.assert_unchanged(&env.kernel);
}

fuzz_target!(|input: Input| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| scenario(env, &input));
});
