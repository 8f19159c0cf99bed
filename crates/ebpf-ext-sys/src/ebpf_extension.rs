//! `ebpf_extension.h`: the hook NPI contract (attach parameters, attach provider data, the
//! program dispatch table the core hands a hook provider) and the program context header.

use core::ffi::c_void;

use crate::ebpf_result::ebpf_result_t;
use crate::ebpf_structs::{bpf_attach_type_t, bpf_link_type};
use crate::ebpf_windows::ebpf_extension_header_t;
use crate::ntdef::GUID;

/// `ebpf_program_type_t` (a GUID).
pub type ebpf_program_type_t = GUID;
/// `ebpf_attach_type_t` (a GUID).
pub type ebpf_attach_type_t = GUID;

/// `ebpf_extension_data_t` (48 bytes): the hook client's (the core link's)
/// `NpiSpecificCharacteristics`, carrying the attach parameter.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_extension_data_t {
    /// `EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION`.
    pub header: ebpf_extension_header_t,
    /// Attach parameter (may be NULL).
    pub data: *const c_void,
    /// Size of the attach parameter; 0 means none.
    pub data_size: usize,
    /// Attach flags (no defined values).
    pub prog_attach_flags: u64,
}

/// `ebpf_attach_provider_data_t` (48 bytes): the hook provider's `NpiSpecificCharacteristics`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_attach_provider_data_t {
    /// `EBPF_ATTACH_PROVIDER_DATA_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Program type this hook accepts.
    pub supported_program_type: ebpf_program_type_t,
    /// `bpf_attach_type` value.
    pub bpf_attach_type: bpf_attach_type_t,
    /// `bpf_link_type` value.
    pub link_type: bpf_link_type,
}

/// `_ebpf_extension_dispatch_function`: an untyped dispatch entry.
pub type ebpf_extension_dispatch_function = unsafe extern "win64" fn() -> ebpf_result_t;

/// `ebpf_extension_dispatch_table_t` (generic form, one entry shown).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_extension_dispatch_table_t {
    /// Table version.
    pub version: u16,
    /// Number of entries.
    pub count: u16,
    /// Entries (`count` of them).
    pub function: [Option<ebpf_extension_dispatch_function>; 1],
}

/// `ebpf_program_invoke_function_t`: runs the program bound to a link.
pub type ebpf_program_invoke_function_t = unsafe extern "win64" fn(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t;
/// `ebpf_program_batch_begin_invoke_function_t`: prepares `state` for several invocations.
pub type ebpf_program_batch_begin_invoke_function_t =
    unsafe extern "win64" fn(state_size: usize, state: *mut c_void) -> ebpf_result_t;
/// `ebpf_program_batch_invoke_function_t`: one invocation inside a batch.
pub type ebpf_program_batch_invoke_function_t = unsafe extern "win64" fn(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t;
/// `ebpf_program_batch_end_invoke_function_t`: ends a batch.
pub type ebpf_program_batch_end_invoke_function_t =
    unsafe extern "win64" fn(state: *mut c_void) -> ebpf_result_t;

/// `EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT`.
pub const EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT: u16 = 1;
/// `EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT`.
pub const EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT: u16 = 4;

/// `ebpf_extension_program_dispatch_table_t` (40 bytes): the hook client's dispatch table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_extension_program_dispatch_table_t {
    /// Table version (1).
    pub version: u16,
    /// Number of entries (4; harnesses pass 1).
    pub count: u16,
    /// Invoke (offset 8, the only entry both C extensions read).
    pub ebpf_program_invoke_function: Option<ebpf_program_invoke_function_t>,
    /// Batch begin.
    pub ebpf_program_batch_begin_invoke_function:
        Option<ebpf_program_batch_begin_invoke_function_t>,
    /// Batch invoke.
    pub ebpf_program_batch_invoke_function: Option<ebpf_program_batch_invoke_function_t>,
    /// Batch end.
    pub ebpf_program_batch_end_invoke_function: Option<ebpf_program_batch_end_invoke_function_t>,
}

/// `ebpf_execution_context_state_t.tail_call_state`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_execution_context_state_tail_call_t {
    /// Next program of a tail call.
    pub next_program: *const c_void,
    /// Tail calls so far.
    pub count: u32,
}

/// `ebpf_execution_context_state_t` (64 bytes): caller storage for batch invocation.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_execution_context_state_t {
    /// `epoch_state_t`.
    pub epoch_state: [u64; 4],
    /// Thread id or CPU (union).
    pub id: u64,
    /// IRQL at batch begin.
    pub current_irql: u8,
    /// Tail-call state.
    pub tail_call_state: ebpf_execution_context_state_tail_call_t,
}

/// `EBPF_CONTEXT_HEADER_SIZE`: every program context is preceded by this many bytes the core
/// owns.
pub const EBPF_CONTEXT_HEADER_SIZE: usize = 64;
/// `EBPF_CONTEXT_HEADER`: `uint64_t context_header[8]`.
pub type EBPF_CONTEXT_HEADER = [u64; 8];
