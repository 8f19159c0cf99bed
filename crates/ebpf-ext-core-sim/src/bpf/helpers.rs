//! Helper calls: the core's general helpers (eBPF for Windows ids and prototypes), the
//! extension's global overrides and program-type helpers (called through the addresses the
//! provider published), and the checks of every pointer argument against the prototype.
//!
//! Each resolved helper of a program gets a slot number (the call's immediate is rewritten to
//! it at load); the interpreter passes it to [`call`], which finds the running invocation in
//! a thread-local frame. Helpers read and write program memory through the raw addresses the
//! program passed, checked against the prototype, as the interpreter does: no reference to
//! program memory is held across a call.

use core::cell::{RefCell, UnsafeCell};
use core::ops::Range;
use std::sync::Arc;

use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE,
    EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO, EBPF_ARGUMENT_TYPE_DONTCARE,
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_STACK, EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL,
    ebpf_argument_type_t, ebpf_return_type_t,
};
use ebpf_ext_sys::ebpf_extension::{EBPF_CONTEXT_HEADER_SIZE, ebpf_execution_context_state_t};
use ebpf_ext_sys::ebpf_general_helpers::general_helper_prototype;
use ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t;
use ebpf_ext_sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_NO_MORE_TAIL_CALLS, EBPF_OPERATION_NOT_SUPPORTED,
};
use ebpf_ext_sys::ebpf_windows::MAX_TAIL_CALL_CNT;
use ebpf_ext_sys::ntddk::KeGetCurrentProcessorNumberEx;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeGetCurrentIrql};

use super::maps::BpfMap;
use super::program::BpfProgram;
use super::vm::Region;

/// One of the core's general helpers, as a program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneralHelper {
    /// `ebpf_helper_id_t`.
    pub id: u32,
    /// The core's prototype name.
    pub name: &'static str,
    /// Return type.
    pub return_type: ebpf_return_type_t,
    /// Argument types (unused ones `DONTCARE`).
    pub arguments: [ebpf_argument_type_t; 5],
    /// The C return type of the program-side declaration.
    pub c_return: &'static str,
    /// The C parameter list of the program-side declaration.
    pub c_parameters: &'static str,
}

/// The general helper `id`, its prototype the core's ([`general_helper_prototype`]), and its
/// program-side C declaration.
const fn general(
    id: u32,
    name: &'static str,
    c_return: &'static str,
    c_parameters: &'static str,
) -> GeneralHelper {
    let Some(prototype) = general_helper_prototype(id) else {
        panic!("no general helper of this id");
    };
    GeneralHelper {
        id,
        name,
        return_type: prototype.return_type,
        arguments: prototype.arguments,
        c_return,
        c_parameters,
    }
}

/// The general helpers the core-sim implements (eBPF for Windows' `ebpf_structs.h` ids, the
/// prototypes of `ebpf_ext_sys::ebpf_general_helpers`). A program calling another general
/// helper id is refused at load ([`BpfError::UnsupportedHelper`](super::BpfError)).
pub const GENERAL_HELPERS: &[GeneralHelper] = &[
    general(
        1,
        "bpf_map_lookup_elem",
        "void*",
        "void* map, const void* key",
    ),
    general(
        2,
        "bpf_map_update_elem",
        "int64_t",
        "void* map, const void* key, const void* value, uint64_t flags",
    ),
    general(
        3,
        "bpf_map_delete_elem",
        "int64_t",
        "void* map, const void* key",
    ),
    general(
        4,
        "bpf_map_lookup_and_delete_elem",
        "void*",
        "void* map, const void* key",
    ),
    general(
        5,
        "bpf_tail_call",
        "int64_t",
        "const void* ctx, const void* prog_array, uint32_t index",
    ),
    general(6, "bpf_get_prandom_u32", "uint32_t", "void"),
    general(7, "bpf_ktime_get_boot_ns", "uint64_t", "void"),
    general(8, "bpf_get_smp_processor_id", "uint64_t", "void"),
    general(9, "bpf_ktime_get_ns", "uint64_t", "void"),
    general(
        10,
        "bpf_csum_diff",
        "int",
        "const void* from, int from_size, const void* to, int to_size, int seed",
    ),
    general(
        11,
        "bpf_ringbuf_output",
        "int",
        "void* ring_buffer, const void* data, uint64_t size, uint64_t flags",
    ),
    general(
        12,
        "bpf_trace_printk2",
        "long",
        "const char* fmt, uint32_t fmt_size",
    ),
    general(
        13,
        "bpf_trace_printk3",
        "long",
        "const char* fmt, uint32_t fmt_size, uint64_t arg3",
    ),
    general(
        14,
        "bpf_trace_printk4",
        "long",
        "const char* fmt, uint32_t fmt_size, uint64_t arg3, uint64_t arg4",
    ),
    general(
        15,
        "bpf_trace_printk5",
        "long",
        "const char* fmt, uint32_t fmt_size, uint64_t arg3, uint64_t arg4, uint64_t arg5",
    ),
    general(
        16,
        "bpf_map_push_elem",
        "int64_t",
        "void* map, const void* value, uint64_t flags",
    ),
    general(17, "bpf_map_pop_elem", "int64_t", "void* map, void* value"),
    general(18, "bpf_map_peek_elem", "int64_t", "void* map, void* value"),
    general(19, "bpf_get_current_pid_tgid", "uint64_t", "void"),
    general(
        20,
        "bpf_get_current_logon_id",
        "uint64_t",
        "const void* ctx",
    ),
    general(21, "bpf_is_current_admin", "int32_t", "const void* ctx"),
    general(
        22,
        "bpf_memcpy_s",
        "long",
        "void* destination, size_t destination_size, const void* source, size_t source_size",
    ),
    general(
        23,
        "bpf_memcmp_s",
        "int",
        "const void* memory1, size_t memory1_size, const void* memory2, size_t memory2_size",
    ),
    general(
        24,
        "bpf_memset",
        "long",
        "void* memory, size_t size, int value",
    ),
    general(
        25,
        "bpf_memmove_s",
        "long",
        "void* destination, size_t destination_size, const void* source, size_t source_size",
    ),
    general(
        27,
        "bpf_strncpy_s",
        "int",
        "char* destination, size_t destination_size, const char* source, size_t count",
    ),
    general(
        28,
        "bpf_strncat_s",
        "int",
        "char* destination, size_t destination_size, const char* source, size_t count",
    ),
    general(
        29,
        "bpf_strnlen_s",
        "size_t",
        "const char* string, size_t size",
    ),
    general(30, "bpf_ktime_get_boot_ms", "uint64_t", "void"),
    general(31, "bpf_ktime_get_ms", "uint64_t", "void"),
    general(
        32,
        "bpf_perf_event_output",
        "int",
        "void* ctx, void* perf_event_array, uint64_t flags, const void* data, uint64_t size",
    ),
    general(33, "bpf_get_current_process_start_key", "uint64_t", "void"),
    general(34, "bpf_get_current_thread_create_time", "int64_t", "void"),
];

/// What a call slot of a loaded program calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A general helper the core-sim implements.
    General,
    /// A function of the extension (global override or program-type helper), at this
    /// address, called in the kernel convention with the context as sixth argument. A
    /// program's [`Resolved`] holds the one it was loaded with; calls use the one its
    /// current attachment resolved ([`HelperBinding::target`](super::HelperBinding::target)).
    Extension(u64),
    /// The program's BTF-resolved function of this index, at the address its provider
    /// published (read at each call: it is 0 while the provider is detached), called like
    /// an extension's helper, the context sixth.
    Btf(usize),
}

/// A helper resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) arguments: [ebpf_argument_type_t; 5],
    pub(crate) target: Target,
}

/// The running invocation, for the helpers.
pub(crate) struct Frame {
    pub(crate) program: *const BpfProgram,
    pub(crate) context: u64,
    pub(crate) context_size: u64,
    pub(crate) data: Range<u64>,
    pub(crate) stack: Range<u64>,
    pub(crate) fault: Option<String>,
    /// Where `bpf_map_lookup_and_delete_elem` keeps the values it takes out.
    pub(crate) kept: Kept,
    /// The invocation's execution state (`ebpf_execution_context_state_t`), whose address
    /// the core put in slot 0 of the context header; 0 when the run has none.
    pub(crate) state: u64,
    /// The program a successful `bpf_tail_call` asked to run next.
    pub(crate) tail_call: Option<Arc<BpfProgram>>,
    /// The context descriptor whose address the core put in slot 1 of the context header; 0
    /// when the run has none.
    pub(crate) descriptor: u64,
}

/// Values one invocation may take out with `bpf_map_lookup_and_delete_elem`; once that many
/// are taken, the helper returns NULL and leaves the value in the map.
pub(crate) const KEPT_VALUES: usize = 8;
/// Bytes after each kept slot that no program may address (as after each map value).
pub(crate) const KEPT_GUARD: usize = 8;

/// The values an invocation took out with `bpf_map_lookup_and_delete_elem`, kept for the rest
/// of it (the core keeps them until the epoch ends): [`KEPT_VALUES`] slots of `size` bytes,
/// each followed by [`KEPT_GUARD`] bytes no program may address; registered with the
/// interpreter before the run, never resized, written only through raw pointers (the program
/// holds their addresses); no storage for programs that do not call the helper (size 0).
pub(crate) struct Kept {
    storage: Box<[UnsafeCell<u8>]>,
    /// Bytes of a slot: the largest value the program's maps can give up.
    size: usize,
    /// Slots in use.
    count: usize,
}

impl Kept {
    /// Room for [`KEPT_VALUES`] values of up to `size` bytes (none for 0).
    pub(crate) fn new(size: usize) -> Self {
        let slots = if size == 0 { 0 } else { KEPT_VALUES };
        let storage = (0..slots * Self::stride_of(size))
            .map(|_| UnsafeCell::new(0))
            .collect();
        Kept {
            storage,
            size,
            count: 0,
        }
    }

    fn stride_of(size: usize) -> usize {
        size.next_multiple_of(8) + KEPT_GUARD
    }

    /// Whether a value of `len` bytes can be kept.
    fn has_room_for(&self, len: usize) -> bool {
        self.count < KEPT_VALUES && 0 < self.size && len <= self.size
    }

    /// Copies `value` into the next slot and returns its address; `None` when there is no
    /// room for it ([`Kept::has_room_for`]).
    fn keep(&mut self, value: &[u8]) -> Option<u64> {
        if !self.has_room_for(value.len()) {
            return None;
        }
        let start = self.count * Self::stride_of(self.size);
        self.count += 1;
        let slot = UnsafeCell::raw_get(self.storage.as_ptr()).wrapping_add(start);
        // SAFETY: `value.len()` ≤ `size` bytes at the start of slot `count` < `KEPT_VALUES`
        // of `storage` (`KEPT_VALUES` slots of `stride_of(size)` bytes, `size` > 0), cells
        // into which no reference is made (accessed through raw pointers only).
        unsafe { core::ptr::copy_nonoverlapping(value.as_ptr(), slot, value.len()) };
        Some(slot as u64)
    }

    /// The address ranges of the slots (their guards left out).
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let base = UnsafeCell::raw_get(self.storage.as_ptr()) as u64;
        let stride = Self::stride_of(self.size);
        let slots = if self.size == 0 { 0 } else { KEPT_VALUES };
        (0..slots).map(move |i| {
            let start = base + (i * stride) as u64;
            start..start + self.size as u64
        })
    }
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// What a run left in its frame: the fault a helper recorded and the tail call it asked for.
pub(crate) struct FrameEnd {
    pub(crate) fault: Option<String>,
    pub(crate) tail_call: Option<Arc<BpfProgram>>,
}

/// Runs `f` with `frame` as the current invocation of this thread, and returns what `f`
/// returned and what the helpers left in the frame.
pub(crate) fn with_frame<R>(frame: Frame, f: impl FnOnce() -> R) -> (R, FrameEnd) {
    /// Pops the frame even if `f` unwinds, so a later invocation on this thread starts clean.
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            FRAMES.with(|frames| frames.borrow_mut().pop());
        }
    }
    FRAMES.with(|frames| frames.borrow_mut().push(frame));
    let pop = Pop;
    let result = f();
    let left = FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let frame = frames.last_mut();
        let (fault, tail_call) =
            frame.map_or((None, None), |f| (f.fault.take(), f.tail_call.take()));
        FrameEnd { fault, tail_call }
    });
    drop(pop);
    (result, left)
}

/// Runs `f` with the program of this thread's running invocation (`None` outside one).
pub(crate) fn current_program<R>(f: impl FnOnce(&BpfProgram) -> Option<R>) -> Option<R> {
    FRAMES.with(|frames| {
        let program = frames.try_borrow().ok()?.last()?.program;
        // SAFETY: the frame is pushed by `BpfProgram::run`, which holds the program for the
        // whole invocation.
        f(unsafe { &*program })
    })
}

/// How many distinct helpers one program may call.
pub(crate) const MAX_SLOTS: usize = 32;

/// Calls the helper in call slot `slot` of this thread's running invocation: its result, or
/// `None` when the invocation must end now (the helper recorded a fault, or a tail call
/// succeeded: the caller returns at once, as native code does, and the core runs the callee).
pub(crate) fn call(slot: u32, args: [u64; 5]) -> Option<u64> {
    let slot = usize::try_from(slot).unwrap_or(usize::MAX);
    let value = dispatch(slot, args);
    let ends = FRAMES.with(|frames| {
        let frames = frames.borrow();
        let Some(frame) = frames.last() else {
            return true;
        };
        // SAFETY: the frame is pushed by `BpfProgram::run`, which holds the program for the
        // whole invocation.
        let program = unsafe { &*frame.program };
        // As native code does after `bpf_tail_call` (its id, whoever implements it: the
        // core, or a provider's override): a caller whose tail call succeeded returns 0.
        let tail_called = program
            .helpers
            .get(slot)
            .is_some_and(|h| h.id == TAIL_CALL && !matches!(h.target, Target::Btf(_)));
        frame.fault.is_some() || frame.tail_call.is_some() || (tail_called && value == 0)
    });
    (!ends).then_some(value)
}

/// `bpf_tail_call`'s id.
const TAIL_CALL: u32 = 5;

type ExtensionHelper = unsafe extern "win64" fn(u64, u64, u64, u64, u64, u64) -> u64;

fn dispatch(slot: usize, args: [u64; 5]) -> u64 {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let Some(frame) = frames.last_mut() else {
            return 0;
        };
        if frame.fault.is_some() {
            return 0;
        }
        // SAFETY: the frame is pushed by `BpfProgram::run`, which holds the program for the
        // whole invocation.
        let program = unsafe { &*frame.program };
        let Some(helper) = program.helpers.get(slot) else {
            frame.fault = Some(format!("call slot {slot} has no helper"));
            return 0;
        };
        if let Err(message) = check_arguments(helper, &args, frame, program) {
            frame.fault = Some(format!(
                "helper {} (id {:#x}): {message}",
                helper.name, helper.id
            ));
            return 0;
        }
        // Who implements it now (a reattached provider may have re-resolved it).
        let target = program.binding.target(slot, &helper.target);
        // An extension receives the map object, not the program's handle.
        let mut args = args;
        if target != Target::General {
            for (arg, kind) in args.iter_mut().zip(helper.arguments) {
                if kind == EBPF_ARGUMENT_TYPE_PTR_TO_MAP {
                    *arg = program
                        .map_by_handle(*arg)
                        .map_or(0, BpfMap::object_address);
                }
            }
        }
        match target {
            Target::Btf(index) => {
                // The invocation holds the imports' rundown, so the provider cannot detach
                // during the call; the address is 0 only if it detached before the run,
                // which the run checked.
                let address = program.btf.as_ref().map_or(0, |btf| btf.address(index));
                if address == 0 {
                    frame.fault = Some(format!("{}: provider detached", helper.name));
                    return 0;
                }
                // SAFETY: an address the provider published for this function, in the
                // helper calling convention; its pointer arguments were checked against its
                // prototype; the context goes sixth, as native code passes it (a function of
                // five parameters ignores it).
                let function: ExtensionHelper =
                    unsafe { core::mem::transmute::<u64, ExtensionHelper>(address) };
                let context = frame.context;
                // The function may call back into the core, which reads the frame.
                drop(frames);
                // SAFETY: as above.
                unsafe { function(args[0], args[1], args[2], args[3], args[4], context) }
            }
            Target::Extension(address) => {
                // SAFETY: an address the provider published for this helper, a function in
                // the helper calling convention; its pointer arguments were checked against
                // its prototype; the context goes sixth, as the core passes it.
                let function: ExtensionHelper =
                    unsafe { core::mem::transmute::<u64, ExtensionHelper>(address) };
                let context = frame.context;
                // The extension may call back into the core (`find_element_function`), which
                // reads the frame: release it for the call.
                drop(frames);
                // SAFETY: as above.
                unsafe { function(args[0], args[1], args[2], args[3], args[4], context) }
            }
            Target::General => match call_general(helper.id, &args, frame, program) {
                Ok(value) => value,
                Err(message) => {
                    frame.fault = Some(format!("helper {}: {message}", helper.name));
                    0
                }
            },
        }
    })
}

impl Frame {
    /// Whether `[address, address + len)` lies in memory the program may access.
    fn check(
        &self,
        program: &BpfProgram,
        address: u64,
        len: u64,
        write: bool,
    ) -> Result<(), String> {
        if address.checked_add(len).is_none() {
            return Err(format!("{address:#x} + {len} overflows"));
        }
        let context = self.context..self.context + self.context_size;
        let flat = [context, self.data.clone(), self.stack.clone()]
            .into_iter()
            .chain(self.kept.ranges())
            .map(Region::flat);
        // The interpreter's regions, checked by the same rule.
        for region in flat.chain(program.value_regions()) {
            match region.holds(address, len) {
                Some(false) if write => return Err(format!("{address:#x}: read-only data")),
                Some(_) => return Ok(()),
                None => {}
            }
        }
        Err(format!(
            "{len} bytes at {address:#x} are outside the context ({:#x}+{}), its data [{:#x}, {:#x}), the stack and map values",
            self.context, self.context_size, self.data.start, self.data.end
        ))
    }
}

fn check_arguments(
    helper: &Resolved,
    args: &[u64; 5],
    frame: &Frame,
    program: &BpfProgram,
) -> Result<(), String> {
    let mut map: Option<&BpfMap> = None;
    for (i, (&kind, &value)) in helper.arguments.iter().zip(args).enumerate() {
        let size = || {
            let next = helper.arguments.get(i + 1).copied();
            match next {
                Some(EBPF_ARGUMENT_TYPE_CONST_SIZE | EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO) => {
                    Ok(args[i + 1])
                }
                _ => Err(format!(
                    "argument {} is memory but argument {} is not its size",
                    i + 1,
                    i + 2
                )),
            }
        };
        let what = |e: String| format!("argument {}: {e}", i + 1);
        match kind {
            EBPF_ARGUMENT_TYPE_DONTCARE
            | EBPF_ARGUMENT_TYPE_ANYTHING
            | EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO => {}
            EBPF_ARGUMENT_TYPE_CONST_SIZE => {
                if value == 0 {
                    return Err(what("size 0".into()));
                }
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_CTX | EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL => {
                let null_ok = kind == EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL;
                if value != frame.context && !(null_ok && value == 0) {
                    return Err(what(format!("{value:#x} is not the program context")));
                }
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_MAP => {
                map = Some(
                    program
                        .map_by_handle(value)
                        .ok_or_else(|| what(format!("{value:#x} is not a map")))?,
                );
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS => {
                let programs = program
                    .map_by_handle(value)
                    .ok_or_else(|| what(format!("{value:#x} is not a map")))?;
                if !programs.is_program_array() {
                    return Err(what(format!(
                        "map {} is not a program array",
                        programs.definition().name
                    )));
                }
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY | EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE => {
                let map = map.ok_or_else(|| what("no map argument before it".into()))?;
                let len = if kind == EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY {
                    map.definition().key_size
                } else {
                    map.definition().value_size
                };
                frame
                    .check(program, value, u64::from(len), false)
                    .map_err(what)?;
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM
            | EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL
            | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM
            | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL => {
                let null_ok = matches!(
                    kind,
                    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL
                        | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL
                );
                if !(null_ok && value == 0) {
                    let write = matches!(
                        kind,
                        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM
                            | EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL
                    );
                    let len = size().map_err(&what)?;
                    frame.check(program, value, len, write).map_err(what)?;
                }
            }
            EBPF_ARGUMENT_TYPE_PTR_TO_STACK | EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL => {
                let null_ok = kind == EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL;
                if !(frame.stack.contains(&value) || null_ok && value == 0) {
                    return Err(what(format!("{value:#x} is not on the stack")));
                }
            }
            other => return Err(what(format!("argument type {other} is not supported"))),
        }
    }
    Ok(())
}

/// A copy of the `len` bytes at `address`, checked by [`check_arguments`] before.
///
/// A copy, not a slice over program memory: a helper may write the same bytes through
/// another argument (`bpf_map_update_elem(map, key, bpf_map_lookup_elem(map, key), 0)`
/// passes the stored value as the new one), and a reference held across the call would make
/// that write undefined behaviour.
fn bytes(address: u64, len: u64) -> Vec<u8> {
    let len = usize::try_from(len).unwrap_or(0);
    let mut copy = vec![0; len];
    if len != 0 {
        // SAFETY: the caller checked the range against the invocation's memory; the copy is
        // a fresh buffer of `len` bytes.
        unsafe { core::ptr::copy_nonoverlapping(address as *const u8, copy.as_mut_ptr(), len) };
    }
    copy
}

fn current_cpu() -> usize {
    // SAFETY: NULL is allowed for the processor-number out parameter.
    unsafe { KeGetCurrentProcessorNumberEx(core::ptr::null_mut()) as usize }
}

fn errno(result: Result<(), i32>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(e) => (-i64::from(e)).cast_unsigned(),
    }
}

/// `-EINVAL` as the `_s` helpers return it.
const EINVAL: i64 = -22;

/// What `bpf_get_current_logon_id` returns below DISPATCH_LEVEL: the core returns the
/// current token's authentication id, which usersim does not model; core-sim answers with
/// the SYSTEM logon session's (`SYSTEM_LUID`, 0x3E7).
pub const CORE_SIM_LOGON_ID: u64 = 0x3E7;

/// What `bpf_get_current_process_start_key` returns: the core returns the current process's
/// start key (`PsGetProcessStartKey`), unique to the process for the life of the machine;
/// the programs core-sim runs all run in the test's one process, so it has one key.
pub const CORE_SIM_PROCESS_START_KEY: u64 = 0x0001_0000_0000_0004;

thread_local! {
    /// This thread's "creation time" for `bpf_get_current_thread_create_time`: when a
    /// program first asked for it on the thread.
    static THREAD_CREATE_TIME: i64 = filetime_now();
}

/// The current time as a FILETIME (100 ns units since 1601-01-01 UTC).
fn filetime_now() -> i64 {
    /// 100 ns intervals from 1601-01-01 to 1970-01-01.
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ticks = i64::try_from(since_unix.as_nanos() / 100).unwrap_or(i64::MAX);
    UNIX_EPOCH_AS_FILETIME.saturating_add(ticks)
}

/// `bpf_csum_diff(from, from_size, to, to_size, seed)`: `seed`, plus each 16-bit word of `to`,
/// plus the one's complement of each 16-bit word of `from` (a NULL buffer adds nothing), not
/// folded; `-EINVAL` if a size is not a multiple of 4 or the 32-bit sum goes negative.
fn csum_diff(from: Option<&[u8]>, to: Option<&[u8]>, sizes: [u64; 2], seed: u64) -> i64 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the core's sizes are `int`s"
    )]
    if sizes.iter().any(|&size| size as i32 % 4 != 0) {
        return EINVAL;
    }
    let words = |bytes: &[u8], invert: bool| {
        bytes
            .chunks_exact(2)
            .map(|w| {
                let word = u16::from_le_bytes([w[0], w[1]]);
                i32::from(if invert { !word } else { word })
            })
            .fold(0i32, i32::wrapping_add)
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the core's seed is an `int`"
    )]
    let sum = (seed as i32)
        .wrapping_add(to.map_or(0, |to| words(to, false)))
        .wrapping_add(from.map_or(0, |from| words(from, true)));
    if sum < 0 { EINVAL } else { i64::from(sum) }
}

/// `STATUS_BUFFER_OVERFLOW`, as the string helpers return a truncation (an `int`).
const STRING_TRUNCATED: i64 = 0x8000_0005u32.cast_signed() as i64;
/// `STATUS_INVALID_PARAMETER`, as the string helpers return bad sizes (an `int`).
const STRING_INVALID: i64 = 0xC000_000Du32.cast_signed() as i64;
/// The largest buffer the kernel's safe-string functions accept (`NTSTRSAFE_MAX_CCH`).
const STRING_MAX: u64 = 0x7FFF_FFFF;

/// `bpf_strncpy_s` / `bpf_strncat_s` (`RtlStringCbCopyNExA` / `RtlStringCbCatNExA` with
/// `STRSAFE_FILL_BEHIND_NULL`): copies (after the NUL-terminated string already in
/// `destination`, if `append`) at most `count` bytes of `source`, stopping at its NUL, and
/// NUL-terminates; on success every byte after the terminator is zeroed, 0 returned. What
/// does not fit is cut (`STATUS_BUFFER_OVERFLOW`, the cut string terminated); a destination
/// size of 0, either size above the maximum, or a `destination` without a NUL to append to, leaves it untouched
/// (`STATUS_INVALID_PARAMETER`).
fn string_copy(destination: &mut [u8], source: &[u8], append: bool) -> i64 {
    if destination.is_empty()
        || destination.len() as u64 > STRING_MAX
        || source.len() as u64 > STRING_MAX
    {
        return STRING_INVALID;
    }
    let start = if append {
        match destination.iter().position(|&b| b == 0) {
            Some(end) => end,
            None => return STRING_INVALID,
        }
    } else {
        0
    };
    let source = &source[..source.iter().position(|&b| b == 0).unwrap_or(source.len())];
    let room = destination.len() - 1 - start;
    let copied = source.len().min(room);
    destination[start..start + copied].copy_from_slice(&source[..copied]);
    destination[start + copied] = 0;
    if copied < source.len() {
        return STRING_TRUNCATED;
    }
    destination[start + copied..].fill(0);
    0
}

fn call_general(
    id: u32,
    args: &[u64; 5],
    frame: &mut Frame,
    program: &BpfProgram,
) -> Result<u64, String> {
    let map = || program.map_by_handle(args[0]).ok_or("not a map");
    Ok(match id {
        1..=4 | 16..=18 => map_helper(id, args, frame, program)?,
        5 => tail_call(args, frame, program)?,
        32 => perf_event_output(args, frame, program)?,
        6 => u64::from(program.next_random()),
        7 | 9 => u64::try_from(program.loaded_at().elapsed().as_nanos()).unwrap_or(u64::MAX),
        30 | 31 => u64::try_from(program.loaded_at().elapsed().as_millis()).unwrap_or(u64::MAX),
        8 => current_cpu() as u64,
        11 => match map()?.ring_output(&bytes(args[1], args[2])) {
            Ok(()) => 0,
            Err(e) => e.cast_unsigned(),
        },
        12..=15 => {
            let fmt_size = args[1];
            if !(2..=511).contains(&fmt_size) {
                return Ok(u64::MAX);
            }
            let format = bytes(args[0], fmt_size);
            match printk(&format, &args[2..(id as usize - 10)]) {
                Some(line) => {
                    let len = line.len() as u64;
                    program.record_printk(String::from_utf8_lossy(&line).into_owned());
                    len
                }
                // An unsupported conversion, or as many as the arguments: nothing logged.
                None => u64::MAX,
            }
        }
        19 => {
            let thread = {
                use core::hash::{Hash as _, Hasher as _};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::thread::current().id().hash(&mut hasher);
                hasher.finish() & 0xFFFF_FFFF
            };
            (u64::from(std::process::id()) << 32) | thread
        }
        10 => {
            let buffer = |address: u64, size: u64| (address != 0).then(|| bytes(address, size));
            let (from, to) = (buffer(args[0], args[1]), buffer(args[2], args[3]));
            csum_diff(from.as_deref(), to.as_deref(), [args[1], args[3]], args[4]).cast_unsigned()
        }
        20 => {
            // SAFETY: reads the current thread's IRQL; callable at any level.
            if unsafe { KeGetCurrentIrql() } >= DISPATCH_LEVEL {
                0
            } else {
                CORE_SIM_LOGON_ID
            }
        }
        21 => u64::MAX,
        22..=25 | 27..=29 => memory_helper(id, args)?,
        33 => CORE_SIM_PROCESS_START_KEY,
        34 => THREAD_CREATE_TIME.with(|time| time.cast_unsigned()),
        _ => {
            let _ = frame;
            return Err(format!("general helper {id} is not implemented"));
        }
    })
}

/// `-result` as a helper returns it.
fn negative(result: i32) -> u64 {
    (-i64::from(result)).cast_unsigned()
}

/// `bpf_tail_call(ctx, prog_array, index)` (id 5), in the core's order: the program at
/// `index` (`-EBPF_INVALID_ARGUMENT` if the slot is empty, past the end or its program gone),
/// then the invocation's execution state, which the core finds in slot 0 of the context
/// header (none: `-EBPF_INVALID_ARGUMENT`), then its count (33 tail calls run:
/// `-EBPF_NO_MORE_TAIL_CALLS`); else the program becomes the state's next program (0).
///
/// Where the core would write through whatever slot 0 holds, core-sim faults if it holds
/// neither NULL nor the state the invocation put there (an extension overwrote the header).
/// A map argument that is not a program array faults too (`check_arguments`): the core's
/// verifier refuses such a program at load.
fn tail_call(args: &[u64; 5], frame: &mut Frame, program: &BpfProgram) -> Result<u64, String> {
    let programs = program.map_by_handle(args[1]).ok_or("not a map")?;
    #[expect(clippy::cast_possible_truncation, reason = "the index is a uint32_t")]
    let Some(next) = programs.program_at(args[2] as u32) else {
        return Ok(negative(EBPF_INVALID_ARGUMENT));
    };
    if frame.state == 0 {
        return Ok(negative(EBPF_INVALID_ARGUMENT));
    }
    let header = frame.context.wrapping_sub(EBPF_CONTEXT_HEADER_SIZE as u64) as *const u64;
    // SAFETY: a run with an execution state has the core's 64-byte header in front of its
    // context (`BpfProgram::run_with_state`'s contract).
    let slot0 = unsafe { header.read_unaligned() };
    if slot0 == 0 {
        return Ok(negative(EBPF_INVALID_ARGUMENT));
    }
    if slot0 != frame.state {
        return Err(format!(
            "slot 0 of the context header holds {slot0:#x}, not the invocation's execution \
             state {:#x}: the 64 bytes in front of the context were overwritten",
            frame.state
        ));
    }
    let state = frame.state as *mut ebpf_execution_context_state_t;
    // SAFETY: the invocation's execution state (checked against the header above), 64
    // writable bytes its invoker keeps for the run.
    let calls = unsafe { &raw mut (*state).tail_call_state };
    // SAFETY: as above.
    let mut tail_calls = unsafe { calls.read_unaligned() };
    if tail_calls.count == MAX_TAIL_CALL_CNT {
        return Ok(negative(EBPF_NO_MORE_TAIL_CALLS));
    }
    tail_calls.next_program = Arc::as_ptr(&next).cast();
    // SAFETY: as above.
    unsafe { calls.write_unaligned(tail_calls) };
    frame.tail_call = Some(next);
    Ok(0)
}

/// `EBPF_MAP_FLAG_CURRENT_CPU`: the index bits of `flags` naming the running processor.
const CURRENT_CPU: u64 = 0xFFFF_FFFF;
/// Where `bpf_perf_event_output`'s flags hold how many context-data bytes to capture.
const CTX_LENGTH_SHIFT: u32 = 32;
/// The largest such length (`EBPF_MAP_FLAG_CTX_LENGTH_MAX`).
const CTX_LENGTH_MAX: u64 = 0xF_FFFF;

/// `bpf_perf_event_output(ctx, map, flags, data, size)` (id 32), as the core does it, in its
/// order: with a length in bits 32–51 of `flags`, that many bytes of the context's data,
/// which the core finds through the descriptor in slot 1 of the context header
/// (`-EBPF_OPERATION_NOT_SUPPORTED` when a data pointer is NULL, and for a plain run, which
/// core-sim gives no descriptor; `-EBPF_INVALID_ARGUMENT` when the data is shorter than
/// asked, `end` below `start` counting as very long, as the core's unsigned difference
/// does); then the processor (the index bits must be `CURRENT_CPU`, or at DISPATCH_LEVEL
/// the running processor's number; else `-EBPF_INVALID_ARGUMENT`); then a record of `data`
/// followed by the captured bytes in the running processor's ring: full, `-EBPF_NO_MEMORY`;
/// oversized, `-EBPF_INVALID_ARGUMENT`; either counts as a lost record. Bits 52–63 are
/// ignored. core-sim faults where slot 1 no longer holds the descriptor the invocation put
/// there, where captured bytes lie outside the program's data, and for a map that is not a
/// perf event array (the core would treat it as one).
fn perf_event_output(
    args: &[u64; 5],
    frame: &mut Frame,
    program: &BpfProgram,
) -> Result<u64, String> {
    let map = program.map_by_handle(args[1]).ok_or("not a map")?;
    if !map.is_perf_event_array() {
        return Err(format!(
            "map {} is not a perf event array",
            map.definition().name
        ));
    }
    let flags = args[2];
    let target = flags & CURRENT_CPU;
    let capture = (flags >> CTX_LENGTH_SHIFT) & CTX_LENGTH_MAX;
    // In the core's order: the context data, then the processor.
    let captured = if capture == 0 {
        Vec::new()
    } else {
        match context_data(frame)? {
            None => return Ok(negative(EBPF_OPERATION_NOT_SUPPORTED)),
            Some(range) if range.end.wrapping_sub(range.start) < capture => {
                return Ok(negative(EBPF_INVALID_ARGUMENT));
            }
            Some(range) => {
                // The bytes the core reads: the program's data, which the run may read.
                frame.check(program, range.start, capture, false)?;
                bytes(range.start, capture)
            }
        }
    };
    let cpu = current_cpu();
    if target != CURRENT_CPU {
        // SAFETY: reads the current thread's IRQL; callable at any level.
        let dispatch = unsafe { KeGetCurrentIrql() } >= DISPATCH_LEVEL;
        if !dispatch || target != cpu as u64 {
            return Ok(negative(EBPF_INVALID_ARGUMENT));
        }
    }
    let data = bytes(args[3], args[4]);
    Ok(match map.perf_output(cpu, &[&data, &captured]) {
        Ok(()) => 0,
        Err(e) => e.cast_unsigned(),
    })
}

/// The context's data pointers as the core finds them: through the descriptor in slot 1 of
/// the context header, its `data` and `end` offsets into the context; `None` when there is
/// no descriptor (a plain run), no data field, or a NULL pointer.
fn context_data(frame: &Frame) -> Result<Option<Range<u64>>, String> {
    if frame.descriptor == 0 {
        return Ok(None);
    }
    let header = frame.context.wrapping_sub(EBPF_CONTEXT_HEADER_SIZE as u64) as *const u64;
    // SAFETY: a run with a descriptor has the core's 64-byte header in front of its context
    // (`BpfProgram::run_with_state`'s contract).
    let slot1 = unsafe { header.wrapping_add(1).read_unaligned() };
    if slot1 != frame.descriptor {
        return Err(format!(
            "slot 1 of the context header holds {slot1:#x}, not the context descriptor {:#x}: \
             the 64 bytes in front of the context were overwritten",
            frame.descriptor
        ));
    }
    // SAFETY: the descriptor the invocation's invoker put there (checked), alive for the run.
    let descriptor = unsafe { (slot1 as *const ebpf_context_descriptor_t).read_unaligned() };
    let pointer_at = |offset: i32| -> u64 {
        match u64::try_from(offset) {
            Ok(o) if o + 8 <= frame.context_size => {
                // SAFETY: within the context, which the run may read.
                unsafe { ((frame.context + o) as *const u64).read_unaligned() }
            }
            _ => 0,
        }
    };
    let (start, end) = (pointer_at(descriptor.data), pointer_at(descriptor.end));
    if start == 0 || end == 0 {
        return Ok(None);
    }
    Ok(Some(start..end))
}

/// The map helpers (ids 1–4 and 16–18).
fn map_helper(
    id: u32,
    args: &[u64; 5],
    frame: &mut Frame,
    program: &BpfProgram,
) -> Result<u64, String> {
    let map = program.map_by_handle(args[0]).ok_or("not a map")?;
    Ok(match id {
        1 => {
            let key = bytes(args[1], u64::from(map.definition().key_size));
            map.value_address(&key, current_cpu())
                .map_or(0, |p| p as u64)
        }
        4 => {
            let key = bytes(args[1], u64::from(map.definition().key_size));
            // No room: NULL, and the value stays in the map.
            if !frame
                .kept
                .has_room_for(map.definition().value_size as usize)
            {
                return Ok(0);
            }
            map.take_value(&key)
                .and_then(|value| frame.kept.keep(&value))
                .unwrap_or(0)
        }
        2 => {
            let key = bytes(args[1], u64::from(map.definition().key_size));
            let value = bytes(args[2], u64::from(map.definition().value_size));
            errno(map.update_value(&key, &value, args[3], Some(current_cpu())))
        }
        3 => {
            let key = bytes(args[1], u64::from(map.definition().key_size));
            errno(map.delete_value(&key))
        }
        16 => {
            let value = bytes(args[1], u64::from(map.definition().value_size));
            errno(map.push_value(&value, args[2]))
        }
        17 | 18 => {
            let size = u64::from(map.definition().value_size);
            // The value is written: it must not be read-only data.
            frame.check(program, args[1], size, true)?;
            let size = usize::try_from(size).unwrap_or(0);
            let mut value = vec![0u8; size];
            let result = map.pop_value(&mut value, id == 17);
            if result.is_ok() {
                // SAFETY: `size` bytes the program may write (checked just above); see the
                // module's note on aliasing.
                unsafe {
                    core::ptr::copy_nonoverlapping(value.as_ptr(), args[1] as *mut u8, size);
                }
            }
            errno(result)
        }
        _ => return Err(format!("general helper {id} is not a map helper")),
    })
}

/// The memory and string helpers (ids 22–25 and 27–29) over checked ranges.
fn memory_helper(id: u32, args: &[u64; 5]) -> Result<u64, String> {
    Ok(match id {
        22 | 25 => {
            if args[3] > args[1] {
                return Ok(EINVAL.cast_unsigned());
            }
            if args[3] > 0 {
                // SAFETY: both ranges were checked (destination writable); `copy` allows
                // overlap, which memmove needs and memcpy's caller must not rely on; see the
                // module's note on aliasing.
                unsafe {
                    core::ptr::copy(
                        args[2] as *const u8,
                        args[0] as *mut u8,
                        usize::try_from(args[3]).unwrap_or(0),
                    );
                }
            }
            0
        }
        23 => {
            let (a, b) = (bytes(args[0], args[1]), bytes(args[2], args[3]));
            match a.cmp(&b) {
                core::cmp::Ordering::Less => u64::MAX,
                core::cmp::Ordering::Equal => 0,
                core::cmp::Ordering::Greater => 1,
            }
        }
        // The core returns `memset`'s result: the buffer's address.
        24 => {
            if args[1] > 0 {
                #[expect(clippy::cast_possible_truncation, reason = "memset's int value")]
                let value = args[2] as u8;
                // SAFETY: the range was checked writable; see the module's note on aliasing.
                unsafe {
                    core::ptr::write_bytes(
                        args[0] as *mut u8,
                        value,
                        usize::try_from(args[1]).unwrap_or(0),
                    );
                };
            }
            args[0]
        }
        27 | 28 => {
            // Worked on copies and written back through the raw pointer: the destination may
            // overlap the source, and no `&mut` is made over program memory.
            let mut destination = bytes(args[0], args[1]);
            let source = bytes(args[2], args[3]);
            let result = string_copy(&mut destination, &source, id == 28);
            if !destination.is_empty() {
                // SAFETY: `args[1]` bytes the program may write (checked against the
                // prototype), from a buffer of that length; see the module's note on aliasing.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        destination.as_ptr(),
                        args[0] as *mut u8,
                        destination.len(),
                    );
                }
            }
            result.cast_unsigned()
        }
        29 => {
            if args[0] == 0 {
                0
            } else {
                let s = bytes(args[0], args[1]);
                s.iter().position(|&b| b == 0).unwrap_or(s.len()) as u64
            }
        }
        _ => return Err(format!("general helper {id} is not a memory helper")),
    })
}

/// Formats a `bpf_printk` line as the core does, from the `fmt_size` bytes of `format` (at
/// least 2): the last byte is dropped (the NUL a well-formed format ends with), and a newline
/// before it too; the text ends at its first NUL. Conversions are `%d %i %u %x`, each with
/// an optional `l` or `ll`, and `%%`; a format with any other (a flag, a width, `%s`, `%p`, a
/// `%` at the end), or with another number of conversions than `args`, gives `None` (the
/// helper returns -1 and logs nothing). The line is what Windows' `RtlStringCchVPrintfA`
/// makes of it: without `ll` a value is 32 bits (`long` is 32 bits on Windows), so `%lx` of
/// `0x1_0000_0002` is `2`.
fn printk(format: &[u8], args: &[u64]) -> Option<Vec<u8>> {
    let size = format.len();
    let cut = if size >= 2 && format[size - 2] == b'\n' {
        size - 2
    } else {
        size.saturating_sub(1)
    };
    let text = format[..cut].split(|&b| b == 0).next().unwrap_or(&[]);
    let mut out = Vec::new();
    let mut args = args.iter();
    let mut rest = text;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        if c != b'%' {
            out.push(c);
            continue;
        }
        if let Some((b'%', tail)) = rest.split_first() {
            rest = tail;
            out.push(b'%');
            continue;
        }
        let long_long = rest.starts_with(b"ll");
        let skip = if long_long {
            2
        } else {
            usize::from(rest.first() == Some(&b'l'))
        };
        let (&conversion, tail) = rest.get(skip..)?.split_first()?;
        rest = tail;
        let value = *args.next()?;
        #[expect(clippy::cast_possible_truncation, reason = "a 32-bit int or long")]
        let narrow = value as u32;
        let formatted = match (conversion, long_long) {
            (b'd' | b'i', true) => value.cast_signed().to_string(),
            (b'd' | b'i', false) => narrow.cast_signed().to_string(),
            (b'u', true) => value.to_string(),
            (b'u', false) => narrow.to_string(),
            (b'x', true) => format!("{value:x}"),
            (b'x', false) => format!("{narrow:x}"),
            _ => return None,
        };
        out.extend_from_slice(formatted.as_bytes());
    }
    // Every argument has its conversion.
    args.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::{EINVAL, STRING_INVALID, STRING_TRUNCATED, csum_diff, printk, string_copy};

    #[test]
    fn printk_formats_as_the_core_and_windows_do_and_refuses_what_the_core_refuses() {
        let line = |format: &[u8], args: &[u64]| printk(format, args);
        let some = |s: &str| Some(s.as_bytes().to_vec());
        // Without `ll` a value is a 32-bit int or long (Windows' `long`).
        assert_eq!(line(b"%lx\0", &[0x1_0000_0002]), some("2"));
        assert_eq!(line(b"%llx\0", &[0x1_0000_0002]), some("100000002"));
        assert_eq!(
            line(b"%ld %d\0", &[0xFFFF_FFFF, 0xFFFF_FFFE]),
            some("-1 -2")
        );
        assert_eq!(line(b"%lld\0", &[u64::MAX]), some("-1"));
        assert_eq!(line(b"%u%%\0", &[0x1_0000_0007]), some("7%"));
        // A newline before the NUL is dropped; the last byte always is.
        assert_eq!(line(b"hi\n\0", &[]), some("hi"));
        assert_eq!(line(b"abc", &[]), some("ab"));
        // Anything else, or another number of conversions than arguments: refused.
        for (format, args) in [
            (&b"%s\0"[..], &[3u64][..]),
            (b"%5d\0", &[1]),
            (b"%p\0", &[1]),
            (b"%lu %u\0", &[1]),
            (b"no conversion\0", &[1]),
            (b"100%\0", &[]),
            (b"%lll\0", &[1]),
        ] {
            assert_eq!(
                line(format, args),
                None,
                "{:?}",
                String::from_utf8_lossy(format)
            );
        }
    }

    #[test]
    fn strings_stop_at_the_source_nul_and_refuse_what_the_kernel_refuses() {
        let mut d = *b"xxxxxxxx";
        assert_eq!(string_copy(&mut d, b"ab\0zz", false), 0);
        assert_eq!(
            &d, b"ab\0\0\0\0\0\0",
            "stops at the source's NUL, zero behind"
        );
        assert_eq!(string_copy(&mut d, b"", true), 0, "appending nothing");
        assert_eq!(&d, b"ab\0\0\0\0\0\0");
        assert_eq!(string_copy(&mut d, b"cdefg", true), 0, "exactly fits");
        assert_eq!(&d, b"abcdefg\0");
        assert_eq!(string_copy(&mut d, b"h", true), STRING_TRUNCATED);
        assert_eq!(&d, b"abcdefg\0", "no room: cut to nothing");

        let mut cut = [0xEE; 4];
        assert_eq!(string_copy(&mut cut, b"abcdef", false), STRING_TRUNCATED);
        assert_eq!(&cut, b"abc\0", "cut and terminated");

        let mut unterminated = *b"xxxx";
        assert_eq!(string_copy(&mut unterminated, b"a", true), STRING_INVALID);
        assert_eq!(&unterminated, b"xxxx", "nothing to append to: untouched");
        assert_eq!(string_copy(&mut [], b"a", false), STRING_INVALID, "size 0");
    }

    #[test]
    fn csum_diff_refuses_odd_sizes_and_negative_sums() {
        let (from, to) = ([1u8, 0, 2, 0], [5u8, 0, 7, 0]);
        assert_eq!(
            csum_diff(Some(&from), Some(&to), [4, 4], 0),
            5 + 7 + 0xFFFE + 0xFFFD
        );
        assert_eq!(
            csum_diff(None, None, [4, 4], 9),
            9,
            "NULL buffers add nothing"
        );
        assert_eq!(
            csum_diff(Some(&from), None, [4, 4], 0),
            0xFFFE + 0xFFFD,
            "a NULL `to` adds nothing"
        );
        assert_eq!(
            csum_diff(None, None, [0, 0], 0x1_0000_0005),
            5,
            "the seed is an `int`"
        );
        assert_eq!(csum_diff(None, Some(&to[..2]), [0, 2], 0), EINVAL);
        assert_eq!(csum_diff(None, None, [0, 0], u64::MAX), EINVAL, "seed -1");
        assert_eq!(
            csum_diff(None, Some(&to), [0, 4], i32::MAX as u64),
            EINVAL,
            "the 32-bit sum overflowed"
        );
    }
}
