//! Real BPF programs: ELF objects compiled with `clang -target bpf`, loaded against a
//! provider's program information and run by an interpreter, as the core runs them.
//!
//! - [`BpfObject::parse`] reads an object with `aya-obj` (programs by section, BTF-defined
//!   and legacy maps, global variables, map and call relocations).
//! - [`BpfProgram::load`] checks the program as the core's verifier would refuse it
//!   (undeclared helper ids, context accesses beyond the descriptor's size), creates its
//!   maps ([`BpfMap`]: array, hash, program array, per-CPU array, LRU hash, queue, stack, ring
//!   buffer, perf event array) and resolves each
//!   helper id as the core does: below `0xFFFF` the provider's global overrides, then the
//!   core's general helpers ([`GENERAL_HELPERS`]); from `0xFFFF` the program-type helpers,
//!   called through the addresses the provider published over NMR (so a loaded `.sys`
//!   image's own functions run), with the context as sixth argument.
//! - [`BpfProgram::run`] runs it in core-sim's interpreter (`vm`: the whole instruction set
//!   of RFC 9669, ISA version 4 included): every load, store and atomic operation must lie
//!   wholly inside the context, the `[data, end)` range the descriptor names, the stack or
//!   a map value (never a store into `.rodata`), and every helper's pointer arguments are
//!   checked against its prototype; a
//!   violation fails that invocation with a message naming the instruction
//!   ([`BpfError::Fault`]), never the process. Program memory is reached through raw
//!   addresses only, so a helper may write what the program reads. Each local function
//!   gets its own 512-byte frame, at most eight deep.
//! - Maps of a type the core does not have are custom maps, backed by the extension's map
//!   provider through the map-information NPI (`custom`): created, associated with the
//!   program type at load, read and written by tests through the provider's callbacks;
//!   extension helpers receive a map object with the provider's context at
//!   `map_context_offset` and may look stored values up through the core's
//!   `find_element_function`.
//! - [`BpfProgram::test_run`] runs it as `bpf_prog_test_run` does, through the provider's
//!   `context_create` and `context_destroy`.
//! - [`BpfProgram::attach`] links it to a hook like [`Link::attach`](crate::Link::attach),
//!   refusing a link of another program type first.
//! - Tail calls: [`BpfProgram::load_all`] loads an object's programs over one set of maps,
//!   test code fills a program array with [`BpfMap::set_program`] (programs of the type and
//!   context layout its object's programs were loaded with), and a run through a link or a
//!   test run follows `bpf_tail_call` as the core's invoke does: the caller returns 0 at once
//!   (as native code does; the core's interpreter lets it run on), the callee runs on the same
//!   context, at most 33 times in a row, and the last program's result is the invocation's.
//!   The helper reaches the execution state through slot 0 of the context header, as the
//!   core's does, and faults where the core would write through a slot that no longer holds
//!   it. A plain [`BpfProgram::run`] has no execution state, so its tail calls fail.
//! - `bpf_perf_event_output` writes into the running processor's ring of a perf event array
//!   ([`BpfMap::drain_cpu_records`], [`BpfMap::lost_records`]); the context data it may
//!   capture is found, as the core finds it, through the descriptor in slot 1 of the context
//!   header, which a run through a link or a test run has.
//! - BTF-resolved functions: a call of an `extern` declared in `.ksyms` with the BTF tag
//!   `module_id:{GUID}` is rewritten at parse into a call of a kernel function by BTF id
//!   ([`btf_externs`] reads the object's `.BTF`), and linked at load through the provider of
//!   that module (`imports`): the program does not load without one, its invocations fail
//!   while it is detached, and a detach waits for the running ones.
//!
//! Where core-sim differs from the core:
//! - Only the general helpers in [`GENERAL_HELPERS`]; a program using another is refused at
//!   load.
//! - `bpf_map_lookup_and_delete_elem` returns a copy of the value taken out, kept for the rest
//!   of the invocation in a slot followed by guard bytes (the core keeps the value itself
//!   until the epoch ends); once eight values are taken in one invocation it returns NULL and
//!   leaves the value in the map, and a program whose maps hold values over 64 KiB is refused
//!   at load if it calls it.
//! - A queue or stack keeps its values in twice `max_entries` slots, freed slots reused
//!   oldest first: a value `bpf_map_lookup_elem` gave keeps its contents while another
//!   `max_entries` values are pushed (the core frees it after the epoch).
//! - `bpf_perf_event_output` faults on a map that is not a perf event array, and on captured
//!   context data outside the program's data (the core would use the wrong map, or copy from
//!   wherever the pointers say); a plain [`BpfProgram::run`] is given no context
//!   descriptor, even for a context with a header, so it captures no context data. Ring
//!   buffers and perf event arrays hold at most 64 MiB (per processor), and every other map
//!   at most 2^20 entries here.
//! - A hash map holds at most `max_entries` keys, and an insert into a full one returns
//!   `EBPF_NO_MEMORY`. The core's plain hash map has no entry limit (it creates its table
//!   with `max_entries` as the initial bucket count only; its LRU hash is the bounded one),
//!   so a test that fills a plain hash map proves nothing about Windows.
//! - No verifier: a program the core's verifier would refuse for what it does at run time
//!   (a loop without a bound, an access it cannot prove in bounds) loads here, and faults
//!   only if it does the wrong thing; a run ends in a fault after 2^24 instructions. The
//!   load-time checks are the context accesses, the helpers, and what the interpreter needs
//!   (known opcodes, jump targets, no division by an immediate zero, no write to `r10`).

use ebpf_ext_sys::ntdef::GUID;

use crate::error::CoreError;

mod btf;
mod check;
mod custom;
mod helpers;
mod imports;
mod insn;
mod maps;
mod object;
mod program;
mod vm;

pub use btf::{BtfExtern, btf_externs};
pub use custom::map_client_dispatch_table;
pub use helpers::{CORE_SIM_LOGON_ID, CORE_SIM_PROCESS_START_KEY, GENERAL_HELPERS, GeneralHelper};
pub use imports::{BtfFunctionUse, BtfPrototype, PublishedBtfFunction, published_btf_functions};
pub use maps::{
    BPF_EXIST, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_PROG_ARRAY,
    BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_STACK, BPF_NOEXIST, BpfMap, MapError,
};
pub use object::{BpfObject, MapDefinition};
pub(crate) use program::HelperBinding;
pub use program::{BpfProgram, TestRun};

/// Compiles the C translation unit `source` with the prerequisite `clang`
/// (`clang -target bpf -O2 -g -c`, then `args`) in a temporary directory of this call's own,
/// and returns the object's bytes, for [`BpfObject::parse`]. For tests that build their BPF
/// programs from C written inline.
///
/// # Errors
/// If clang cannot be run (the message names the prerequisite) or refuses the source (the
/// message holds its diagnostics), or the temporary directory cannot be used.
pub fn compile_c(source: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (input, output) = (dir.path().join("program.c"), dir.path().join("program.o"));
    std::fs::write(&input, source).map_err(|e| format!("{}: {e}", input.display()))?;
    let result = std::process::Command::new("clang")
        .args(["-target", "bpf", "-O2", "-g", "-c"])
        .args(args)
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| format!("clang (prerequisite `clang`, Debian package clang): {e}"))?;
    if !result.status.success() {
        return Err(format!(
            "clang -target bpf failed: {}\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    std::fs::read(&output).map_err(|e| format!("{}: {e}", output.display()))
}

/// Runs raw instructions (8 bytes each, little-endian, as an object's text holds them; a
/// trailing partial instruction is ignored) in core-sim's interpreter alone, as
/// [`BpfProgram::run`] runs a loaded program's: `r1` holds `memory`'s address, the program
/// may load from and store to `memory` and its stack, local calls get their own frames, and
/// every helper call returns the sum of its immediate and `r1`–`r5` (no helper runs). At
/// most `max_steps` instructions run. For fuzzing and for tests of the interpreter.
///
/// # Errors
/// Why the instructions are not a program the interpreter runs (an unknown opcode, a jump
/// outside the program, …), or the fault that ended the run; each names its instruction.
pub fn interpret(code: &[u8], memory: &mut [u8], max_steps: u64) -> Result<u64, String> {
    let insns: Vec<insn::Insn> = code
        .chunks_exact(8)
        .map(|chunk| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            insn::Insn::from_bytes(bytes)
        })
        .collect();
    vm::verify(&insns)?;
    let start = memory.as_mut_ptr() as u64;
    let region = vm::Region::flat(start..start + memory.len() as u64);
    let stack = vm::Stack::new();
    let machine = vm::Machine {
        code: &insns,
        stack: &stack,
        regions: core::slice::from_ref(&region),
        max_steps,
    };
    let mut call = |id: u32, args: [u64; 5]| {
        Some(
            args.iter()
                .fold(u64::from(id), |sum, a| sum.wrapping_add(*a)),
        )
    };
    // SAFETY: verified; `memory` is borrowed mutably for the call, so nothing else reads or
    // writes it while the program runs.
    unsafe { vm::run(&machine, start, &mut call) }
}

/// Loading, attaching or running a BPF program failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// The ELF object could not be parsed or relocated.
    #[error("BPF object: {0}")]
    Parse(String),
    /// No program in that section.
    #[error("no program in section {section:?} (the object has {sections:?})")]
    NoSuchSection {
        /// The section asked for.
        section: String,
        /// The sections that hold programs.
        sections: Vec<String>,
    },
    /// A call of a helper id the program information does not declare.
    #[error(
        "{section}: instruction {insn} calls helper id {id:#x}, which program type {program_type} does not declare"
    )]
    UndeclaredHelper {
        /// The program's section.
        section: String,
        /// The call instruction.
        insn: usize,
        /// The helper id.
        id: u32,
        /// The program type's name.
        program_type: String,
    },
    /// A general helper the core has and the core-sim does not implement.
    #[error("{section}: general helper {id} is not implemented by core-sim")]
    UnsupportedHelper {
        /// The program's section.
        section: String,
        /// The helper id.
        id: u32,
    },
    /// A load or store through the context pointer beyond the context descriptor's size.
    #[error(
        "{section}: instruction {insn} accesses {size} bytes at context offset {offset}, beyond the context descriptor's size {context_size}"
    )]
    ContextAccess {
        /// The program's section.
        section: String,
        /// The instruction.
        insn: usize,
        /// The offset from the context pointer.
        offset: i64,
        /// Bytes accessed.
        size: u8,
        /// The descriptor's size.
        context_size: i32,
    },
    /// A map the core-sim cannot create.
    #[error("map: {0}")]
    Map(String),
    /// The interpreter's own checks refused the code.
    #[error("{section}: {message}")]
    Verifier {
        /// The program's section.
        section: String,
        /// What the interpreter said.
        message: String,
    },
    /// A link for another program type than the program's.
    #[error(
        "{section}: a program of type {program_type:?} cannot be attached by a link for program type {link_program_type:?}"
    )]
    WrongProgramType {
        /// The program's section.
        section: String,
        /// The program's type.
        program_type: GUID,
        /// The link's.
        link_program_type: GUID,
    },
    /// A call of a BTF-resolved function that cannot be linked: an `extern` without a
    /// `module_id:{GUID}` declaration tag, or a module whose provider is not attached (the
    /// core fails the load with `EBPF_EXTENSION_FAILED_TO_LOAD`).
    #[error("{section}: BTF-resolved function: {message}")]
    BtfFunction {
        /// The program's section.
        section: String,
        /// What failed.
        message: String,
    },
    /// An invocation of a program whose BTF-resolved functions' provider has detached: it
    /// does not run (the core's invoke returns `EBPF_EXTENSION_FAILED_TO_LOAD`, result 0).
    #[error("{section}: the provider of BTF-resolved functions of module {module} is detached")]
    BtfFunctionsDetached {
        /// The program's section.
        section: String,
        /// The detached module.
        module: GUID,
    },
    /// An invocation of a program whose program-information provider has detached since the
    /// program was loaded: it does not run (the core's invoke returns
    /// `EBPF_EXTENSION_FAILED_TO_LOAD`, result 0). When a provider of the type attaches again,
    /// the program runs again once its helpers re-resolve against the new program data, as
    /// the core re-resolves them; if they do not
    /// ([`BpfProgram::program_info_refusal`] says why), it stays unable to run.
    #[error("{section}: the program-information provider of its type has detached")]
    ProgramInfoDetached {
        /// The program's section.
        section: String,
    },
    /// The program's own program-information client (the core registers one per program)
    /// got no provider of its type to attach, had none attached by the time the program was
    /// checked against it (its provider left during the load), or the attached provider's
    /// program data does not bind the program (another hash over its helpers than the data
    /// it was loaded with, or a helper that no longer resolves): the core fails the load
    /// (`EBPF_EXTENSION_FAILED_TO_LOAD` with no provider; `EBPF_INVALID_ARGUMENT` for a hash
    /// that differs from the one the program was checked against, as for a native image's
    /// embedded hash). As in the core, the client's first attach is not checked against the
    /// program (the provider sees the client attach and then detach); the check follows,
    /// under the client's lock, so a provider that attaches or leaves meanwhile cannot leave
    /// a program that loaded but cannot run.
    #[error("{section}: no program-information provider takes the program: {message}")]
    ProgramInfoUnavailable {
        /// The program's section.
        section: String,
        /// Why.
        message: String,
    },
    /// A test run could not create or destroy its context.
    #[error("test run: {0}")]
    TestRun(String),
    /// The link failed.
    #[error("attach: {0}")]
    Attach(CoreError),
    /// An invocation failed: out-of-bounds memory, a helper argument its prototype
    /// forbids, or an interpreter error.
    #[error("{section}: invocation failed: {message}")]
    Fault {
        /// The program's section.
        section: String,
        /// What failed.
        message: String,
    },
}
