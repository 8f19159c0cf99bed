//! The process extension's port, `sample-ntos-ext`, through process notifications: usersim's
//! `Kernel::create_process` and `exit_process` against the driver loaded into usersim (its
//! `DriverEntry`, linked into this process).
//!
//! An input is a script: programs attached (each returning a status of its own, or failing)
//! and detached, processes created (with or without a command line) and exited. The target
//! keeps its own model of the hook as the sample documents it.
//!
//! Properties checked besides "no crash, no leak": the notify routine is registered exactly
//! while a program is attached; a creation runs the programs in attach order, a failed invoke
//! counting as 0 and the chain going on, until the first failure status, which denies the
//! creation with that status (and a denied process does not exist); an exit runs every
//! program and ignores their results; each program sees the event's process id, parent,
//! operation and command line (bytes and length); after each input the kernel holds exactly
//! the pool and NMR registrations it held before.
#![no_main]

mod common;

use core::ffi::c_void;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntdef::NT_SUCCESS;
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_usersim::NewProcess;
use libfuzzer_sys::fuzz_target;
use sample_ntos_ext::hook::ATTACH_TYPE;
use sample_ntos_ext::program::PROGRAM_TYPE;
use sample_ntos_ext::{OPERATION_CREATE, OPERATION_DELETE, ProcessContext, driver_entry};

const MAX_STEPS: usize = 24;
const MAX_LINKS: usize = 6;

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Outcome {
    /// A status with the failure bit clear.
    Allow(u16),
    /// A failure status (`0xC000_0000 | n`).
    Deny(u16),
    /// The program's invoke fails.
    Fail,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Attach(Outcome),
    Detach(u8),
    Create {
        /// Taken modulo 8 (so that exits find processes), plus 1000.
        process: u8,
        parent: u8,
        /// Each byte `b` is the character U+0020 + `b` (so Latin-1 letters too).
        command_line: Option<Vec<u8>>,
    },
    Exit(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    steps: Vec<Step>,
}

// ---- the environment ------------------------------------------------------------------------

/// The target's driver, its kernel and their baseline.
type Env = common::Loaded;

thread_local! {
    /// Loaded on the fuzzing thread at the first input and never unloaded (see hook_attach.rs).
    static ENV: &'static Env = Box::leak(Box::new(Env::native(driver_entry, "SampleNtosEbpfExt", || ())));
}

/// What one program saw: its index in attach order, then the context's process id, parent,
/// operation and command-line bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    program: usize,
    process_id: u64,
    parent_process_id: u64,
    operation: u32,
    command_line: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The program: notes what it saw under its `id`, then answers as `outcome` says.
fn program(
    id: usize,
    outcome: Outcome,
    log: &Log,
) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync + 'static {
    let log = Arc::clone(log);
    move |context| {
        // SAFETY: the hook passes a process_md_t.
        let context = unsafe { &*context.cast::<ProcessContext>() };
        let (start, end) = (context.command_start.as_ptr(), context.command_end.as_ptr());
        let len = (end as usize)
            .checked_sub(start as usize)
            .expect("command_end before command_start");
        let command_line = if start.is_null() {
            assert_eq!(len, 0, "no command line but a length");
            Vec::new()
        } else {
            // SAFETY: the context describes the command line, readable for the call.
            unsafe { core::slice::from_raw_parts(start, len) }.to_vec()
        };
        log.lock().unwrap().push(Seen {
            program: id,
            process_id: context.process_id,
            parent_process_id: context.parent_process_id,
            operation: context.operation,
            command_line,
        });
        match outcome {
            Outcome::Allow(n) => Ok(u32::from(n)),
            Outcome::Deny(n) => Ok(0xC000_0000 | u32::from(n)),
            Outcome::Fail => Err(ebpf_ext_sys::ebpf_result::EBPF_INVALID_ARGUMENT),
        }
    }
}

/// The status a program's result is taken as: a failed invoke counts as 0.
fn status(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Allow(n) => i32::from(n),
        Outcome::Deny(n) => (0xC000_0000 | u32::from(n)).cast_signed(),
        Outcome::Fail => 0,
    }
}

// ---- the scenario ---------------------------------------------------------------------------

/// An attached program as the model keeps it: its id and outcome.
struct Attached {
    link: Link,
    id: usize,
    outcome: Outcome,
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn scenario(env: &Env, input: &Input) {
    let kernel = &env.kernel;
    let log: Log = Arc::default();
    let mut links: Vec<Attached> = Vec::new();
    let mut processes: Vec<usize> = Vec::new();
    for (id, step) in input.steps.iter().take(MAX_STEPS).enumerate() {
        match step {
            Step::Attach(outcome) => {
                if links.len() < MAX_LINKS {
                    let spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
                    let link = Link::attach(spec, program(id, *outcome, &log))
                        .expect("the hook admits any number of programs");
                    links.push(Attached {
                        link,
                        id,
                        outcome: *outcome,
                    });
                }
            }
            Step::Detach(i) => {
                if !links.is_empty() {
                    let attached = links.remove(usize::from(*i) % links.len());
                    attached.link.detach().expect("detach");
                }
            }
            Step::Create {
                process,
                parent,
                command_line,
            } => {
                let process_id = 1000 + usize::from(process % 8);
                if processes.contains(&process_id) {
                    continue;
                }
                let command_line = command_line.as_ref().map(|c| {
                    c.iter()
                        .take(64)
                        .filter_map(|&b| char::from_u32(0x20 + u32::from(b)))
                        .collect()
                });
                let new = NewProcess {
                    process_id,
                    parent_process_id: usize::from(*parent),
                    creating_process_id: 4,
                    creating_thread_id: 8,
                    image_file_name: "\\??\\C:\\fuzz.exe".into(),
                    command_line,
                };
                log.lock().unwrap().clear();
                let status = kernel.create_process(&new);
                // The model: programs in attach order until the first failure status.
                let deny = links
                    .iter()
                    .position(|l| !NT_SUCCESS(status_of(l)))
                    .map(|at| (at, status_of(&links[at])));
                let ran = deny.map_or(links.len(), |(at, _)| at + 1);
                assert_eq!(
                    status,
                    deny.map_or(STATUS_SUCCESS, |(_, s)| s),
                    "the creation status"
                );
                let expected: Vec<Seen> = links[..ran]
                    .iter()
                    .map(|l| Seen {
                        program: l.id,
                        process_id: process_id as u64,
                        parent_process_id: u64::from(*parent),
                        operation: OPERATION_CREATE,
                        command_line: new.command_line.as_deref().map(utf16).unwrap_or_default(),
                    })
                    .collect();
                assert_eq!(*log.lock().unwrap(), expected, "what the programs saw");
                if NT_SUCCESS(status) {
                    processes.push(process_id);
                }
            }
            Step::Exit(i) => {
                if processes.is_empty() {
                    continue;
                }
                let process_id = processes.remove(usize::from(*i) % processes.len());
                log.lock().unwrap().clear();
                assert!(kernel.exit_process(process_id), "the process exists");
                let seen: Vec<(usize, u64, u32)> = log
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| (s.program, s.process_id, s.operation))
                    .collect();
                let expected: Vec<(usize, u64, u32)> = links
                    .iter()
                    .map(|l| (l.id, process_id as u64, OPERATION_DELETE))
                    .collect();
                assert_eq!(seen, expected, "an exit runs every program");
            }
        }
        assert_eq!(
            kernel.process_notify_routines(),
            usize::from(!links.is_empty()),
            "the notify routine is registered exactly while a program is attached"
        );
    }
    for attached in links {
        attached.link.detach().expect("detach");
    }
    for process_id in processes {
        assert!(kernel.exit_process(process_id));
    }
    assert_eq!(kernel.process_notify_routines(), 0);
    env.baseline.assert_unchanged(kernel);
}

fn status_of(attached: &Attached) -> i32 {
    status(attached.outcome)
}

fuzz_target!(|input: Input| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| scenario(env, &input));
});
