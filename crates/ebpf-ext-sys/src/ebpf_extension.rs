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

// ---- The map-information NPI (custom maps), `EBPF_MAP_INFO_EXTENSION_IID` ----------------

/// `ebpf_map_type_t` (`bpf_map_type`).
pub type ebpf_map_type_t = u32;
/// `BPF_MAP_TYPE_HASH` (1): the only base type a custom map may have.
pub const BPF_MAP_TYPE_HASH: ebpf_map_type_t = 1;
/// `BPF_MAP_TYPE_SAMPLE_HASH_MAP` (15): the sample extension's custom map type.
pub const BPF_MAP_TYPE_SAMPLE_HASH_MAP: ebpf_map_type_t = 15;

/// `EBPF_MAP_OPERATION_HELPER`: the operation comes from a BPF program.
pub const EBPF_MAP_OPERATION_HELPER: u32 = 0x1;
/// `EBPF_MAP_OPERATION_UPDATE`: a delete undoing or replacing an update.
pub const EBPF_MAP_OPERATION_UPDATE: u32 = 0x2;
/// `EBPF_MAP_OPERATION_MAP_CLEANUP`: a delete while the map is being deleted.
pub const EBPF_MAP_OPERATION_MAP_CLEANUP: u32 = 0x4;

/// `ebpf_preprocess_map_create_t`: a map of the provider's type is being created; reports
/// the value size the core stores and the provider's per-map context.
pub type ebpf_preprocess_map_create_t = unsafe extern "win64" fn(
    binding_context: *mut c_void,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    actual_value_size: *mut u32,
    map_context: *mut *mut c_void,
) -> ebpf_result_t;
/// `ebpf_postprocess_map_delete_t`: the map is gone; free its context.
pub type ebpf_postprocess_map_delete_t =
    unsafe extern "win64" fn(binding_context: *mut c_void, map_context: *mut c_void);
/// `ebpf_preprocess_map_associate_program_type_t`: a program of `program_type` will use the
/// map; refuse with an error.
pub type ebpf_preprocess_map_associate_program_type_t = unsafe extern "win64" fn(
    binding_context: *mut c_void,
    map_context: *mut c_void,
    program_type: *const GUID,
) -> ebpf_result_t;
/// `ebpf_postprocess_map_find_element_t` and `ebpf_preprocess_map_update_element_t`: a
/// lookup (stored value in, caller's buffer out) or an update (caller's value in, stored
/// value out).
pub type ebpf_map_element_function_t = unsafe extern "win64" fn(
    binding_context: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    in_value_size: usize,
    in_value: *const u8,
    out_value_size: usize,
    out_value: *mut u8,
    flags: u32,
) -> ebpf_result_t;
/// `ebpf_preprocess_map_delete_element_t` (deprecated form, returns a result).
pub type ebpf_preprocess_map_delete_element_t = unsafe extern "win64" fn(
    binding_context: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    value_size: usize,
    value: *const u8,
    flags: u32,
) -> ebpf_result_t;
/// `ebpf_postprocess_map_delete_element_t`: a stored value was removed (or replaced, or the
/// map is being cleaned up); it cannot fail.
pub type ebpf_postprocess_map_delete_element_t = unsafe extern "win64" fn(
    binding_context: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    value_size: usize,
    value: *const u8,
    flags: u32,
);

/// `ebpf_base_map_provider_properties_t` (32 bytes; header size 25).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_base_map_provider_properties_t {
    /// `EBPF_BASE_MAP_PROVIDER_PROPERTIES_HEADER`.
    pub header: ebpf_extension_header_t,
    /// The provider replaces what the core stores (programs may then not use the map
    /// through the core's map helpers).
    pub updates_original_value: bool,
}

/// `ebpf_base_map_provider_dispatch_table_t` (80 bytes): the provider's map callbacks.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_base_map_provider_dispatch_table_t {
    /// `EBPF_BASE_MAP_PROVIDER_DISPATCH_TABLE_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Required.
    pub preprocess_map_create: Option<ebpf_preprocess_map_create_t>,
    /// Required.
    pub postprocess_map_delete: Option<ebpf_postprocess_map_delete_t>,
    /// Required.
    pub preprocess_associate_program_type: Option<ebpf_preprocess_map_associate_program_type_t>,
    /// Lookups.
    pub postprocess_map_find_element: Option<ebpf_map_element_function_t>,
    /// Updates.
    pub preprocess_map_update_element: Option<ebpf_map_element_function_t>,
    /// Deprecated; at most one of the two delete callbacks.
    pub preprocess_map_delete_element: Option<ebpf_preprocess_map_delete_element_t>,
    /// Deletes (preferred).
    pub postprocess_map_delete_element: Option<ebpf_postprocess_map_delete_element_t>,
}

/// `ebpf_map_provider_data_t` (48 bytes): a custom-map provider's NPI-specific
/// characteristics.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_map_provider_data_t {
    /// `EBPF_MAP_PROVIDER_DATA_HEADER`.
    pub header: ebpf_extension_header_t,
    /// The custom map type.
    pub map_type: ebpf_map_type_t,
    /// Its base type ([`BPF_MAP_TYPE_HASH`]).
    pub base_map_type: ebpf_map_type_t,
    /// Properties.
    pub base_properties: *const ebpf_base_map_provider_properties_t,
    /// Callbacks.
    pub base_provider_table: *const ebpf_base_map_provider_dispatch_table_t,
}

/// `ebpf_map_find_element_t`: the core's lookup of a stored value, for a provider's helper.
pub type ebpf_map_find_element_t = unsafe extern "win64" fn(
    map: *const c_void,
    key: *const u8,
    value: *mut *mut u8,
) -> ebpf_result_t;

/// Bytes of the epoch record `ebpf_epoch_enter_t` writes (`ebpf_epoch_state_t`: list links,
/// epoch, processor, entry IRQL), the size of `ebpf_execution_context_state_t::epoch_state`.
pub const EBPF_EPOCH_STATE_SIZE: usize = 32;

/// `ebpf_epoch_enter_t`: enters an epoch-protected region; writes the region's record into
/// the [`EBPF_EPOCH_STATE_SIZE`] bytes at `epoch_state`, which stay at that address until the
/// matching exit.
pub type ebpf_epoch_enter_t = unsafe extern "win64" fn(epoch_state: *mut c_void);
/// `ebpf_epoch_exit_t`: leaves the region whose record `epoch_state` holds.
pub type ebpf_epoch_exit_t = unsafe extern "win64" fn(epoch_state: *mut c_void);
/// `ebpf_epoch_allocate_with_tag_t` (and `..._cache_aligned_...`): `size` bytes of zeroed
/// pool under epoch control, or NULL.
pub type ebpf_epoch_allocate_with_tag_t =
    unsafe extern "win64" fn(size: usize, tag: u32) -> *mut c_void;
/// `ebpf_epoch_free_t` (and `..._cache_aligned`): frees epoch memory once every epoch that
/// could still see it has ended; NULL is ignored.
pub type ebpf_epoch_free_t = unsafe extern "win64" fn(memory: *mut c_void);

/// `ebpf_base_map_client_dispatch_table_t` (80 bytes): what the core offers a map provider.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_base_map_client_dispatch_table_t {
    /// `EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Looks up a stored value (inside an epoch).
    pub find_element_function: Option<ebpf_map_find_element_t>,
    /// Enters an epoch-protected region, writing its record into the state given.
    pub epoch_enter: Option<ebpf_epoch_enter_t>,
    /// Leaves the region `epoch_enter` recorded in the state given.
    pub epoch_exit: Option<ebpf_epoch_exit_t>,
    /// Allocates memory under epoch control (inside an epoch).
    pub epoch_allocate_with_tag: Option<ebpf_epoch_allocate_with_tag_t>,
    /// Allocates cache-aligned memory under epoch control (inside an epoch).
    pub epoch_allocate_cache_aligned_with_tag: Option<ebpf_epoch_allocate_with_tag_t>,
    /// Frees `epoch_allocate_with_tag` memory once no epoch that could see it remains.
    pub epoch_free: Option<ebpf_epoch_free_t>,
    /// Frees `epoch_allocate_cache_aligned_with_tag` memory likewise.
    pub epoch_free_cache_aligned: Option<ebpf_epoch_free_t>,
}

/// `ebpf_map_client_data_t` (40 bytes): the core's client characteristics for one map.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_map_client_data_t {
    /// `EBPF_MAP_CLIENT_DATA_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Where, in a map object the core passes to helpers, the provider's map context is.
    pub map_context_offset: u64,
    /// The core's functions.
    pub base_client_table: *const ebpf_base_map_client_dispatch_table_t,
}

/// `EBPF_MAP_PROVIDER_DATA_HEADER` {1, 48, 48}.
pub const EBPF_MAP_PROVIDER_DATA_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 48, 48);
/// `EBPF_BASE_MAP_PROVIDER_PROPERTIES_HEADER` {1, 25, 32}.
pub const EBPF_BASE_MAP_PROVIDER_PROPERTIES_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 25, 32);
/// `EBPF_BASE_MAP_PROVIDER_DISPATCH_TABLE_HEADER` {1, 80, 80}.
pub const EBPF_BASE_MAP_PROVIDER_DISPATCH_TABLE_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 80, 80);
/// `EBPF_MAP_CLIENT_DATA_HEADER` {1, 40, 40}.
pub const EBPF_MAP_CLIENT_DATA_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 40, 40);
/// `EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER` {1, 80, 80}.
pub const EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 80, 80);
