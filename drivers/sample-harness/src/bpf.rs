//! Real BPF programs for the samples: the C headers program authors include, generated from
//! the program information each sample publishes, and `clang -target bpf` builds of the
//! programs under `drivers/<sample>/bpf/`.
//!
//! A header holds what a program author would otherwise copy by hand: the program-type and
//! attach-type names and GUIDs, the context struct (with compile-time checks that its size
//! and data pointers are where the context descriptor says), and every helper declared by
//! its id with C types from its prototype. `ebpf_general_helpers.h` declares the core's
//! general helpers core-sim implements, the map types and the map-definition macros.
//! `gen-headers` writes them; `tests/bpf_headers.rs` fails when a checked-in one is out of
//! date.

use ebpf_ext_core_sim::bpf::{
    BpfError, BpfMap, BpfObject, BpfProgram, GENERAL_HELPERS, PublishedBtfFunction, compile_c,
    published_btf_functions,
};
use ebpf_ext_core_sim::{LinkSpec, ProgramInfo, ProgramInfoClient};
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE,
    EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO, EBPF_ARGUMENT_TYPE_DONTCARE,
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL, EBPF_ARGUMENT_TYPE_PTR_TO_STACK,
    EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL, EBPF_RETURN_TYPE_INTEGER,
    EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL, ebpf_argument_type_t, ebpf_return_type_t,
};
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_usersim::Kernel;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{DriverEntry, Failure, LoadedDriver, Narrator, Target, expect};

/// Name of the general-helper header, beside each sample's program-type header.
pub const GENERAL_HEADER: &str = "ebpf_general_helpers.h";

/// One field of a sample's context struct, as its Rust definition lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextField {
    /// C declaration of the field without the semicolon, e.g. `uint8_t* data_start`.
    pub declaration: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its offset.
    pub offset: usize,
}

/// What a sample's header is made from besides its program information.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's folder under `drivers/`.
    pub dir: &'static str,
    /// Its service name.
    pub service: &'static str,
    /// Its `DriverEntry` (linked crate).
    pub driver_entry: DriverEntry,
    /// Its program type.
    pub program_type: GUID,
    /// The section its programs go in (its manifest's store section for the program type).
    pub section: &'static str,
    /// The attach type of its hook.
    pub attach_type: GUID,
    /// The hook's `bpf_attach_type_t`.
    pub bpf_attach_type: i32,
    /// The context struct's fields (the program's view of the context, in order).
    pub fields: Vec<ContextField>,
    /// Further constants a program needs (verdicts, operations), name and value.
    pub constants: Vec<(&'static str, String)>,
}

/// The two samples.
#[must_use]
#[expect(clippy::too_many_lines, reason = "two literal descriptions")]
pub fn samples() -> [Sample; 2] {
    use core::mem::offset_of;
    use sample_netebpf_ext::PacketContext;
    use sample_ntos_ext::ProcessContext;
    [
        Sample {
            dir: "sample-netebpf-ext",
            service: "SampleNetEbpfExt",
            driver_entry: sample_netebpf_ext::driver_entry,
            program_type: sample_netebpf_ext::program::PROGRAM_TYPE,
            section: "sample_net",
            attach_type: sample_netebpf_ext::hook::ATTACH_TYPE,
            bpf_attach_type: sample_netebpf_ext::hook::BPF_ATTACH_TYPE,
            fields: vec![
                ContextField {
                    declaration: "uint8_t* data_start",
                    name: "data_start",
                    offset: offset_of!(PacketContext, data_start),
                },
                ContextField {
                    declaration: "uint8_t* data_end",
                    name: "data_end",
                    offset: offset_of!(PacketContext, data_end),
                },
                ContextField {
                    declaration: "uint32_t interface_id",
                    name: "interface_id",
                    offset: offset_of!(PacketContext, interface_id),
                },
                ContextField {
                    declaration: "uint32_t protocol",
                    name: "protocol",
                    offset: offset_of!(PacketContext, protocol),
                },
            ],
            constants: vec![
                (
                    "VERDICT_PERMIT",
                    sample_netebpf_ext::VERDICT_PERMIT.to_string(),
                ),
                (
                    "VERDICT_BLOCK",
                    sample_netebpf_ext::VERDICT_BLOCK.to_string(),
                ),
            ],
        },
        Sample {
            dir: "sample-ntos-ext",
            service: "SampleNtosEbpfExt",
            driver_entry: sample_ntos_ext::driver_entry,
            program_type: sample_ntos_ext::program::PROGRAM_TYPE,
            section: "process",
            attach_type: sample_ntos_ext::hook::ATTACH_TYPE,
            bpf_attach_type: sample_ntos_ext::hook::BPF_ATTACH_TYPE,
            fields: vec![
                ContextField {
                    declaration: "uint8_t* command_start",
                    name: "command_start",
                    offset: offset_of!(ProcessContext, command_start),
                },
                ContextField {
                    declaration: "uint8_t* command_end",
                    name: "command_end",
                    offset: offset_of!(ProcessContext, command_end),
                },
                ContextField {
                    declaration: "uint64_t process_id",
                    name: "process_id",
                    offset: offset_of!(ProcessContext, process_id),
                },
                ContextField {
                    declaration: "uint64_t parent_process_id",
                    name: "parent_process_id",
                    offset: offset_of!(ProcessContext, parent_process_id),
                },
                ContextField {
                    declaration: "uint64_t creating_process_id",
                    name: "creating_process_id",
                    offset: offset_of!(ProcessContext, creating_process_id),
                },
                ContextField {
                    declaration: "uint64_t creating_thread_id",
                    name: "creating_thread_id",
                    offset: offset_of!(ProcessContext, creating_thread_id),
                },
                ContextField {
                    declaration: "uint64_t creation_time",
                    name: "creation_time",
                    offset: offset_of!(ProcessContext, creation_time),
                },
                ContextField {
                    declaration: "uint64_t exit_time",
                    name: "exit_time",
                    offset: offset_of!(ProcessContext, exit_time),
                },
                ContextField {
                    declaration: "uint32_t process_exit_code",
                    name: "process_exit_code",
                    offset: offset_of!(ProcessContext, process_exit_code),
                },
                ContextField {
                    declaration: "uint32_t operation",
                    name: "operation",
                    offset: offset_of!(ProcessContext, operation),
                },
                ContextField {
                    declaration: "uint32_t token_sid_size",
                    name: "token_sid_size",
                    offset: offset_of!(ProcessContext, token_sid_size),
                },
                ContextField {
                    declaration: "uint8_t token_sid[TOKEN_SID_MAX_SIZE]",
                    name: "token_sid",
                    offset: offset_of!(ProcessContext, token_sid),
                },
            ],
            constants: vec![
                (
                    "PROCESS_OPERATION_CREATE",
                    sample_ntos_ext::OPERATION_CREATE.to_string(),
                ),
                (
                    "PROCESS_OPERATION_DELETE",
                    sample_ntos_ext::OPERATION_DELETE.to_string(),
                ),
                (
                    "TOKEN_SID_MAX_SIZE",
                    sample_ntos_ext::program::TOKEN_SID_MAX_SIZE.to_string(),
                ),
                ("STATUS_ACCESS_DENIED", "0xC0000022".to_owned()),
            ],
        },
    ]
}

fn guid_initializer(guid: &GUID) -> String {
    let d4 = guid
        .Data4
        .iter()
        .map(|b| format!("{b:#04x}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{{:#010x}, {:#06x}, {:#06x}, {{{d4}}}}}",
        guid.Data1, guid.Data2, guid.Data3
    )
}

fn c_return(kind: ebpf_return_type_t) -> &'static str {
    match kind {
        EBPF_RETURN_TYPE_INTEGER => "int64_t",
        EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL => "void*",
        _ => "uint64_t",
    }
}

fn c_argument(kind: ebpf_argument_type_t) -> &'static str {
    match kind {
        EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM
        | EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL
        | EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY
        | EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE => "const void*",
        EBPF_ARGUMENT_TYPE_PTR_TO_CTX
        | EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL
        | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM
        | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL
        | EBPF_ARGUMENT_TYPE_PTR_TO_MAP
        | EBPF_ARGUMENT_TYPE_PTR_TO_STACK
        | EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL => "void*",
        EBPF_ARGUMENT_TYPE_CONST_SIZE | EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO => "uint32_t",
        EBPF_ARGUMENT_TYPE_ANYTHING => "uint64_t",
        _ => "uint64_t /* unsupported argument type */",
    }
}

/// A C parameter list for these argument types, up to the first `DONTCARE` (`void` for none).
fn c_parameters(arguments: &[ebpf_argument_type_t]) -> String {
    let parameters: Vec<String> = arguments
        .iter()
        .take_while(|&&a| a != EBPF_ARGUMENT_TYPE_DONTCARE)
        .enumerate()
        .map(|(i, &a)| format!("{} arg{}", c_argument(a), i + 1))
        .collect();
    if parameters.is_empty() {
        "void".to_owned()
    } else {
        parameters.join(", ")
    }
}

const GENERATED: &str =
    "// Generated by `cargo run -p sample-harness --bin gen-headers` (or `cargo xtask headers`)";

/// The general-helper header: fixed-width types, `SEC`, the BTF map-definition macros, map
/// types and flags, `bpf_printk`, and the core's general helpers core-sim implements, by id.
#[must_use]
pub fn general_header() -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "{GENERATED}\n// from core-sim's table of the eBPF core's general helpers. Do not edit.\n#pragma once\n"
    );
    h.push_str(
        "typedef __INT8_TYPE__ int8_t;\ntypedef __UINT8_TYPE__ uint8_t;\ntypedef __INT16_TYPE__ int16_t;\n\
typedef __UINT16_TYPE__ uint16_t;\ntypedef __INT32_TYPE__ int32_t;\ntypedef __UINT32_TYPE__ uint32_t;\n\
typedef __INT64_TYPE__ int64_t;\ntypedef __UINT64_TYPE__ uint64_t;\ntypedef __SIZE_TYPE__ size_t;\n\n\
#define SEC(name) __attribute__((section(name), used))\n\
#define __always_inline inline __attribute__((always_inline))\n\
#define __uint(name, value) int (*name)[value]\n\
#define __type(name, type) typeof(type)* name\n\n\
#define BPF_MAP_TYPE_HASH 1\n#define BPF_MAP_TYPE_ARRAY 2\n#define BPF_MAP_TYPE_PROG_ARRAY 3\n\
#define BPF_MAP_TYPE_PERCPU_ARRAY 5\n\
#define BPF_MAP_TYPE_LRU_HASH 8\n#define BPF_MAP_TYPE_QUEUE 10\n#define BPF_MAP_TYPE_STACK 12\n\
#define BPF_MAP_TYPE_RINGBUF 13\n#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 14\n\
#define EBPF_MAP_FLAG_CURRENT_CPU 0xffffffffULL\n#define EBPF_MAP_FLAG_CTX_LENGTH_SHIFT 32\n\
#define BPF_ANY 0\n#define BPF_NOEXIST 1\n#define BPF_EXIST 2\n\n",
    );
    for helper in GENERAL_HELPERS {
        let _ = writeln!(
            h,
            "static {} (*{})({}) = (void*){};",
            helper.c_return, helper.name, helper.c_parameters, helper.id
        );
    }
    h.push_str(
        "\n// bpf_printk(\"...\", up to three integers): bpf_trace_printk2..5 by argument count.\n\
#define __ebpf_printk_pick(_0, _1, _2, _3, name, ...) name\n\
#define bpf_printk(format, ...)                                                           \\\n\
    ({                                                                                    \\\n\
        static const char __format[] = format;                                            \\\n\
        __ebpf_printk_pick(_0, ##__VA_ARGS__, bpf_trace_printk5, bpf_trace_printk4,        \\\n\
                           bpf_trace_printk3, bpf_trace_printk2)(__format, sizeof(__format), \\\n\
                                                                 ##__VA_ARGS__);           \\\n\
    })\n",
    );
    h
}

/// The program-type header of `sample`, from the program information `info` it published.
///
/// # Errors
/// If the context fields do not fit the descriptor (a field beyond its size).
#[expect(clippy::too_many_lines, reason = "one header, top to bottom")]
pub fn program_header(sample: &Sample, info: &ProgramInfo) -> Result<String, Failure> {
    let name = &info.name;
    let upper = name.to_uppercase();
    let d = info.context_descriptor;
    let mut h = String::new();
    let _ = writeln!(
        h,
        "{GENERATED}\n// from the program information {} publishes. Do not edit.\n#pragma once\n\n#include \"{GENERAL_HEADER}\"\n",
        sample.dir
    );
    let section = sample.section;
    let _ = writeln!(
        h,
        "// Program type {name:?}: programs go in SEC({section:?})."
    );
    let _ = writeln!(h, "#define {upper}_PROGRAM_TYPE_NAME \"{name}\"");
    let _ = writeln!(
        h,
        "#define {upper}_PROGRAM_TYPE_GUID {}",
        guid_initializer(&info.program_type)
    );
    let _ = writeln!(h, "#define {upper}_BPF_PROG_TYPE {}", info.bpf_prog_type);
    let _ = writeln!(
        h,
        "#define {upper}_ATTACH_TYPE_GUID {}",
        guid_initializer(&sample.attach_type)
    );
    let _ = writeln!(
        h,
        "#define {upper}_BPF_ATTACH_TYPE {}",
        sample.bpf_attach_type
    );
    for (constant, value) in &sample.constants {
        let _ = writeln!(h, "#define {constant} {value}");
    }
    let _ = writeln!(
        h,
        "\n// The context: ebpf_context_descriptor_t {{size {}, data {}, end {}, meta {}}}.",
        d.size, d.data, d.end, d.meta
    );
    let _ = writeln!(h, "typedef struct {name}_context {{");
    for field in &sample.fields {
        if i32::try_from(field.offset).map_or(true, |o| o >= d.size) {
            return Err(format!(
                "{}: field {} at {} lies beyond the descriptor's size {}",
                sample.dir, field.name, field.offset, d.size
            ));
        }
        let _ = writeln!(h, "    {}; // offset {}", field.declaration, field.offset);
    }
    let _ = writeln!(h, "}} {name}_context_t;");
    let _ = writeln!(
        h,
        "_Static_assert(sizeof({name}_context_t) == {}, \"context descriptor size\");",
        d.size
    );
    for field in &sample.fields {
        let _ = writeln!(
            h,
            "_Static_assert(__builtin_offsetof({name}_context_t, {}) == {}, \"{} offset\");",
            field.name, field.offset, field.name
        );
    }
    for (what, offset) in [("data", d.data), ("end", d.end), ("meta", d.meta)] {
        let _ = writeln!(
            h,
            "#define {upper}_CONTEXT_{}_OFFSET {offset}",
            what.to_uppercase()
        );
        if offset >= 0 {
            let field = sample
                .fields
                .iter()
                .find(|f| i32::try_from(f.offset) == Ok(offset))
                .ok_or_else(|| {
                    format!(
                        "{}: the descriptor's {what} offset {offset} is no field's offset",
                        sample.dir
                    )
                })?;
            let _ = writeln!(
                h,
                "#define {upper}_CONTEXT_{}_FIELD {}",
                what.to_uppercase(),
                field.name
            );
        }
    }
    let _ = writeln!(h, "\n// Helpers of the program type, by id.");
    for helper in info.helpers.iter().chain(&info.global_helpers) {
        let parameters = c_parameters(&helper.arguments);
        let _ = writeln!(
            h,
            "#define {}_ID {:#x}",
            helper.name.to_uppercase(),
            helper.id
        );
        let _ = writeln!(
            h,
            "static {} (*{})({parameters}) = (void*){:#x};",
            c_return(helper.return_type),
            helper.name,
            helper.id
        );
    }
    Ok(h)
}

/// The outermost folder at or above the current directory whose `Cargo.toml` has a
/// `[workspace]` table (found at run time, so a moved checkout uses its own sources).
///
/// # Errors
/// If there is none.
pub fn workspace_root() -> Result<PathBuf, Failure> {
    let here = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    here.ancestors()
        .filter(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|m| m.lines().any(|l| l.trim() == "[workspace]"))
        })
        .last()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no workspace above {}", here.display()))
}

/// The `bpf/` folder of a sample.
///
/// # Errors
/// If the workspace is not found.
pub fn bpf_dir(sample: &Sample) -> Result<PathBuf, Failure> {
    Ok(workspace_root()?
        .join("drivers")
        .join(sample.dir)
        .join("bpf"))
}

/// Loads `sample` (linked crate) into a fresh usersim kernel on this thread, runs `read`
/// while it is loaded, unloads it and checks that nothing leaked.
///
/// # Errors
/// If it does not load, or what `read` returns.
pub fn with_loaded<R>(
    sample: &Sample,
    read: impl FnOnce() -> Result<R, Failure>,
) -> Result<R, Failure> {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample.driver_entry), sample.service)
        .map_err(|s| format!("{}: DriverEntry {}", sample.dir, crate::status::describe(s)))?;
    let result = read();
    driver.unload();
    kernel.assert_no_leaks();
    result
}

/// The program information `sample` publishes, read as the core reads it (call it with
/// the sample loaded: [`with_loaded`]).
///
/// # Errors
/// If its program information is refused.
pub fn read_info(sample: &Sample) -> Result<ProgramInfo, Failure> {
    let client = ProgramInfoClient::attach(sample.program_type)
        .map_err(|e| format!("{}: program info: {e}", sample.dir))?;
    Ok((*client.info()).clone())
}

/// Loads `sample` (linked crate) into a fresh usersim kernel on this thread and returns the
/// program information it publishes.
///
/// # Errors
/// If it does not load or its program information is refused.
pub fn published_info(sample: &Sample) -> Result<ProgramInfo, Failure> {
    with_loaded(sample, || read_info(sample))
}

/// The functions the BTF-resolved function provider of `module` publishes, read as the
/// store export reads them (call it with the sample loaded: [`with_loaded`]).
///
/// # Errors
/// If nothing is published for `module`.
pub fn read_btf(sample: &Sample, module: GUID) -> Result<Vec<PublishedBtfFunction>, Failure> {
    published_btf_functions(module).map_err(|e| format!("{}: {e}", sample.dir))
}

/// C declarations of a module's BTF-resolved functions: `extern`s in `.ksyms` tagged
/// `module_id:{GUID}`, which programs call by name (the verifier links them by that tag).
#[must_use]
pub fn btf_declarations(module: GUID, functions: &[PublishedBtfFunction]) -> String {
    let mut h = String::new();
    let tag = format!("module_id:{{{module}}}");
    let _ = writeln!(
        h,
        "\n// BTF-resolved functions of module {{{module}}}: programs of any type call them by name."
    );
    let _ = writeln!(
        h,
        "#ifndef BTF_MODULE_ID_TAG\n#define BTF_MODULE_ID_TAG(m) __attribute__((section(\".ksyms\"), btf_decl_tag(m)))\n#endif"
    );
    for f in functions {
        let arguments = c_parameters(&f.prototype.arguments);
        let _ = writeln!(
            h,
            "extern {} {}({arguments}) BTF_MODULE_ID_TAG(\"{tag}\");",
            c_return(f.prototype.return_type),
            f.name
        );
    }
    h
}

/// The headers of `sample` (general, program type) as they should be: path and contents.
///
/// # Errors
/// As [`published_info`] and [`program_header`].
pub fn headers(sample: &Sample) -> Result<Vec<(PathBuf, String)>, Failure> {
    let info = published_info(sample)?;
    let include = bpf_dir(sample)?.join("include");
    Ok(vec![
        (include.join(GENERAL_HEADER), general_header()),
        (
            include.join(format!("{}.h", info.name)),
            program_header(sample, &info)?,
        ),
    ])
}

/// Compiles `source` (a file of `sample`'s `bpf/` folder) with `clang -target bpf -O2 -g
/// -Wall -Werror` and the folder's `include/` ([`compile_c`], in a temporary directory of the
/// call's own) and returns the object's bytes, also written to `out_dir`.
///
/// # Errors
/// If the source cannot be read, clang is missing or fails (its output is in the message), or
/// the object cannot be written.
pub fn compile(sample: &Sample, source: &str, out_dir: &Path) -> Result<Vec<u8>, Failure> {
    let dir = bpf_dir(sample)?;
    let input = dir.join(source);
    let output = out_dir.join(Path::new(source).with_extension("o"));
    let text = std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
    let include = dir.join("include");
    let (dir, include) = (dir.to_string_lossy(), include.to_string_lossy());
    let object = compile_c(&text, &["-Wall", "-Werror", "-I", &include, "-I", &dir])
        .map_err(|e| format!("{}: {e}", input.display()))?;
    std::fs::write(&output, &object).map_err(|e| format!("{}: {e}", output.display()))?;
    Ok(object)
}

/// What a BPF scenario observed, one line per fact; equal reports mean equal behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BpfReport {
    /// The observations, in order.
    pub lines: Vec<String>,
}

impl BpfReport {
    fn add(&mut self, line: String) {
        self.lines.push(line);
    }
}

/// A fault message without the addresses in it (they differ between runs).
#[must_use]
pub fn fault_kind(message: &str) -> String {
    let cut = [", addr", " at 0x", " are outside"]
        .iter()
        .filter_map(|m| message.find(m))
        .min()
        .unwrap_or(message.len());
    message[..cut].to_owned()
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

pub(crate) fn map_of(program: &BpfProgram, name: &str) -> Result<std::sync::Arc<BpfMap>, Failure> {
    program
        .map(name)
        .ok_or_else(|| format!("the program has no map {name}"))
}

pub(crate) fn hash_dump(map: &std::sync::Arc<BpfMap>) -> String {
    map.keys()
        .iter()
        .map(|k| {
            let value = map.lookup(k).ok().flatten().unwrap_or_default();
            format!(
                "{}={}",
                u64_at(&[k.as_slice(), &[0; 8]].concat(), 0),
                u64_at(&value, 0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn per_cpu_total(map: &std::sync::Arc<BpfMap>) -> Result<u64, Failure> {
    let values = map
        .lookup_per_cpu(&0u32.to_le_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("per-CPU entry 0 missing")?;
    Ok(values.iter().map(|v| u64_at(v, 0)).sum())
}

/// Loads `section` and expects the load to be refused; returns the refusal.
pub(crate) fn expect_refused(
    object: &BpfObject,
    section: &str,
    info: &std::sync::Arc<ProgramInfo>,
) -> Result<BpfError, Failure> {
    match BpfProgram::load(object, section, info) {
        Ok(_) => Err(format!("{section}: loaded, but must be refused")),
        Err(e) => Ok(e),
    }
}

/// Fires the net hook once with `packet` on `interface` with `protocol`: status, verdict,
/// programs run, the packet as the programs left it.
fn fire_net(
    kernel: &Kernel,
    handle: &ebpf_ext_usersim::FileHandle,
    interface: u32,
    protocol: u32,
    packet: &[u8],
) -> Result<(NTSTATUS, u32, u32, Vec<u8>), Failure> {
    use sample_netebpf_ext::protocol::{IOCTL_SAMPLE_NET_RUN, RunReply};
    let request = crate::net::run_request(interface, protocol, packet);
    let result = kernel.device_io_control(
        handle,
        IOCTL_SAMPLE_NET_RUN,
        &request,
        RunReply::SIZE + packet.len(),
    );
    if result.status != STATUS_SUCCESS {
        return Ok((result.status, 0, 0, Vec::new()));
    }
    let reply = RunReply::from_bytes(&result.output).ok_or("run reply too short")?;
    Ok((
        result.status,
        reply.verdict,
        reply.programs_run,
        result.output[RunReply::SIZE..].to_vec(),
    ))
}

/// The net sample's BPF scenario on `target`: load-time refusals, the main program
/// attached as a wildcard through every verdict path and every map, test-side map writes
/// the program reads, and the faulting programs failing only their invocation.
///
/// # Errors
/// The first expectation that did not hold.
///
/// # Panics
/// If something leaked after unload (usersim's leak check).
#[expect(clippy::too_many_lines, reason = "one narrated scenario")]
pub fn net_scenario(
    kernel: &Kernel,
    target: Target<'_>,
    object: &BpfObject,
    say: Narrator<'_>,
) -> Result<BpfReport, Failure> {
    use sample_netebpf_ext::hook::ATTACH_TYPE;
    use sample_netebpf_ext::program::{PROGRAM_TYPE, internet_checksum};
    use sample_netebpf_ext::protocol::WIN32_PATH;
    use sample_netebpf_ext::{VERDICT_BLOCK, VERDICT_PERMIT};
    let mut report = BpfReport::default();
    let crate::Opened {
        driver,
        info_client,
        info,
        ..
    } = crate::open(target, "SampleNetEbpfExt", PROGRAM_TYPE, say)?;

    let undeclared = expect_refused(object, "sample_net/undeclared_helper", &info)?;
    expect!(
        matches!(undeclared, BpfError::UndeclaredHelper { id: 0x10002, .. }),
        "undeclared helper: {undeclared}"
    );
    let overrun = expect_refused(object, "sample_net/context_overrun", &info)?;
    expect!(
        matches!(overrun, BpfError::ContextAccess { offset: 24, .. }),
        "context overrun: {overrun}"
    );
    report.add(format!("refused: {undeclared}"));
    report.add(format!("refused: {overrun}"));

    let program = BpfProgram::load(object, "sample_net", &info).map_err(|e| e.to_string())?;
    let wrong_type = program
        .attach(LinkSpec::new(
            sample_ntos_ext::program::PROGRAM_TYPE,
            ATTACH_TYPE,
        ))
        .err()
        .ok_or("a link of another program type was accepted")?;
    expect!(
        matches!(wrong_type, BpfError::WrongProgramType { .. }),
        "wrong type: {wrong_type}"
    );
    report.add(format!("refused: {wrong_type}"));
    let wrong_hook = program
        .attach(LinkSpec::new(
            PROGRAM_TYPE,
            sample_ntos_ext::hook::ATTACH_TYPE,
        ))
        .err()
        .ok_or("a link to a hook of another attach type was accepted")?;
    report.add(format!("refused: {wrong_hook}"));
    let link = program
        .attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE))
        .map_err(|e| e.to_string())?;
    let handle = kernel
        .open(WIN32_PATH, ebpf_ext_usersim::Caller::Administrator)
        .map_err(|s| format!("open: {}", crate::status::describe(s)))?;

    // A value written by the test that the program then reads and increments.
    let per_interface = map_of(&program, "per_interface")?;
    per_interface
        .update(&99u32.to_le_bytes(), &41u64.to_le_bytes(), 0)
        .map_err(|e| e.to_string())?;
    let packet: Vec<u8> = (0u8..20).collect();
    let runs: Vec<(u32, u32, Vec<u8>, u32)> = vec![
        (1, 6, [&[0x11u8][..], &packet[1..]].concat(), VERDICT_PERMIT),
        (2, 17, [&[0xBBu8][..], &packet[1..]].concat(), VERDICT_BLOCK),
        (3, 6, Vec::new(), VERDICT_PERMIT),
        (1, 1, packet.clone(), VERDICT_PERMIT),
        (99, 6, packet[..5].to_vec(), VERDICT_PERMIT),
        (1, 6, [&[0xDDu8][..], &packet[1..]].concat(), VERDICT_PERMIT),
    ];
    for (interface, protocol, bytes, expected) in &runs {
        let (status, verdict, programs_run, out) =
            fire_net(kernel, &handle, *interface, *protocol, bytes)?;
        expect!(
            status == STATUS_SUCCESS && verdict == *expected && programs_run == 1,
            "interface {interface}: {} verdict {verdict} ran {programs_run}; faults {:?}",
            crate::status::describe(status),
            program.faults()
        );
        let marked = bytes.first() == Some(&0x11) && out.first() == Some(&0xAA);
        expect!(
            marked || out == *bytes,
            "interface {interface}: packet changed: {out:?}"
        );
        report.add(format!(
            "interface {interface} protocol {protocol} {} bytes: verdict {verdict}, first byte out {:?}",
            bytes.len(),
            out.first()
        ));
    }
    let counters = map_of(&program, "counters")?;
    let counter = |i: u32| -> Result<u64, Failure> {
        Ok(u64_at(
            &counters
                .lookup(&i.to_le_bytes())
                .map_err(|e| e.to_string())?
                .unwrap_or_default(),
            0,
        ))
    };
    let total: u64 = runs.iter().map(|r| r.2.len() as u64).sum();
    expect!(
        counter(0)? == runs.len() as u64 && counter(1)? == total,
        "counters {:?} {:?}",
        counter(0),
        counter(1)
    );
    report.add(format!(
        "counters: {} runs, {} bytes, last checksum {:#x}, last interface {}",
        counter(0)?,
        counter(1)?,
        counter(2)?,
        counter(3)?
    ));
    let interfaces = hash_dump(&per_interface);
    expect!(
        interfaces == "2=1 3=1 99=42",
        "per_interface (interface 1 deleted by its 0xDD packet): {interfaces}"
    );
    report.add(format!("per_interface (hash): {interfaces}"));
    let per_cpu = per_cpu_total(&map_of(&program, "per_cpu")?)?;
    expect!(per_cpu == runs.len() as u64, "per_cpu total {per_cpu}");
    report.add(format!("per_cpu (per-CPU array): total {per_cpu}"));
    let recent = hash_dump(&map_of(&program, "recent_protocols")?);
    expect!(
        recent == "1=20 6=20",
        "recent_protocols keeps the two last protocols (17 evicted): {recent}"
    );
    report.add(format!("recent_protocols (LRU hash): {recent}"));
    let records = map_of(&program, "events")?.drain_records();
    expect!(
        records.len() == runs.len(),
        "{} ring records",
        records.len()
    );
    for ((interface, _, bytes, expected), record) in runs.iter().zip(&records) {
        let checksum = if bytes.is_empty() {
            0
        } else {
            u32::from(internet_checksum(bytes))
        };
        let head = &record[16..16 + bytes.len().min(8)];
        // The program marks a packet starting with 0x11 before copying its head.
        let mut seen = bytes.clone();
        if seen.first() == Some(&0x11) {
            seen[0] = 0xAA;
        }
        expect!(
            u32_at(record, 0) == *interface
                && u32_at(record, 4) as usize == bytes.len()
                && u32_at(record, 8) == checksum
                && u32_at(record, 12) == *expected
                && head == &seen[..head.len()],
            "ring record {record:?} for interface {interface}"
        );
        report.add(format!(
            "events (ring buffer): interface {} length {} checksum {:#06x} verdict {} head {head:02x?}",
            u32_at(record, 0),
            u32_at(record, 4),
            u32_at(record, 8),
            u32_at(record, 12)
        ));
    }
    let printk = program.printk_lines();
    expect!(
        printk.first().map(String::as_str) == Some("interface 1: 20 bytes, verdict 0"),
        "printk {printk:?}"
    );
    report
        .lines
        .extend(printk.iter().map(|l| format!("printk: {l}")));
    expect!(program.faults().is_empty(), "faults {:?}", program.faults());

    for (section, interface) in [
        ("sample_net/out_of_bounds", 7u32),
        ("sample_net/helper_overrun", 8),
    ] {
        let faulty = BpfProgram::load(object, section, &info).map_err(|e| e.to_string())?;
        let faulty_link = faulty
            .attach(
                LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&interface.to_ne_bytes()),
            )
            .map_err(|e| e.to_string())?;
        let (status, ..) = fire_net(kernel, &handle, interface, 6, &packet)?;
        let messages = faulty.faults();
        expect!(
            status != STATUS_SUCCESS && messages.len() == 1,
            "{section}: {} faults {messages:?}",
            crate::status::describe(status)
        );
        report.add(format!(
            "{section}: run failed with {}: {}",
            crate::status::describe(status),
            fault_kind(&messages[0])
        ));
        faulty_link.detach().map_err(|e| e.to_string())?;
    }
    // The process survived both faults: the main program still runs.
    let (status, verdict, ..) = fire_net(kernel, &handle, 5, 6, &packet)?;
    expect!(
        status == STATUS_SUCCESS && verdict == VERDICT_PERMIT,
        "after the faults: {}",
        crate::status::describe(status)
    );
    say(&format!(
        "BPF sample_net.o (clang): {} runs via link attach: verdicts, 5 map types, packet range, helpers by id; bad loads and faults refused",
        program.runs()
    ));
    link.detach().map_err(|e| e.to_string())?;
    kernel.close(handle);
    // The program's own program-information client goes with it.
    drop(program);
    drop(info_client);
    driver.unload();
    kernel.assert_no_leaks();
    Ok(report)
}

/// Compiles `source` of `sample` into a fresh temporary directory of this call's own
/// (removed afterwards) and parses the object.
///
/// # Errors
/// As [`compile`], or if the object does not parse.
pub fn build(sample: &Sample, source: &str) -> Result<BpfObject, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("sample-bpf-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let bytes = compile(sample, source, dir.path())?;
    BpfObject::parse(&bytes).map_err(|e| format!("{source}: {e}"))
}

/// Runs `scenario` against the driver crate linked into this process and against its signed
/// image (`<image dir>/<image>.sys`, see [`crate::binary::load_sample`]), each on a simulated
/// kernel of its own, and returns the report once both runs agree.
///
/// # Errors
/// A failed run, a missing image, or reports that differ (the message shows both).
pub fn in_both_modes<R: PartialEq + core::fmt::Debug>(
    image: &str,
    native: DriverEntry,
    scenario: impl Fn(&Kernel, Target<'_>) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let linked = scenario(&Kernel::new(), Target::Native(native))
        .map_err(|e| format!("linked crate: {e}"))?;
    if crate::binary::native_only(image) {
        return Ok(linked);
    }
    let kernel = Kernel::new();
    let loaded = crate::binary::load_sample(&kernel, image)?;
    let from_image =
        scenario(&kernel, Target::Image(&loaded)).map_err(|e| format!("{image}.sys: {e}"));
    drop(kernel);
    loaded.unload();
    let from_image = from_image?;
    expect!(
        from_image == linked,
        "the image and the linked crate differ:\n image:  {from_image:?}\n linked: {linked:?}"
    );
    Ok(linked)
}
