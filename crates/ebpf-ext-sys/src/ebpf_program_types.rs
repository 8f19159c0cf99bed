//! `ebpf_program_types.h`: the program-information NPI contract (program data, program info,
//! type descriptor, context descriptor, helper prototypes and addresses).

use core::ffi::{c_char, c_void};

use crate::ebpf_base::{ebpf_argument_type_t, ebpf_return_type_t};
use crate::ebpf_result::ebpf_result_t;
use crate::ebpf_windows::ebpf_extension_header_t;
use crate::ntdef::GUID;

/// `ebpf_context_descriptor_t` (prevail `ebpf_ctx_descriptor_t`, 16 bytes): where the
/// verifier finds the data pointers inside a program context.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ebpf_context_descriptor_t {
    /// Size of the program context.
    pub size: i32,
    /// Offset of the data-start pointer, or -1.
    pub data: i32,
    /// Offset of the data-end pointer, or -1.
    pub end: i32,
    /// Offset of the metadata pointer, or -1.
    pub meta: i32,
}

/// `ebpf_program_type_descriptor_t` (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_program_type_descriptor_t {
    /// `EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER`.
    pub header: ebpf_extension_header_t,
    /// NUL-terminated name.
    pub name: *const c_char,
    /// Context descriptor.
    pub context_descriptor: *const ebpf_context_descriptor_t,
    /// Program type GUID.
    pub program_type: GUID,
    /// `bpf_prog_type` value.
    pub bpf_prog_type: u32,
    /// Non-zero if loading requires privilege.
    pub is_privileged: c_char,
}

/// `ebpf_helper_function_prototype_flags_t` (MSVC: one byte holding `reallocate_packet : 1`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ebpf_helper_function_prototype_flags_t {
    /// Bit 0: `reallocate_packet`.
    pub bits: u8,
}

/// `ebpf_helper_function_prototype_t` (72 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_helper_function_prototype_t {
    /// `EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Helper id (program-type specific ids are > 0xFFFF).
    pub helper_id: u32,
    /// NUL-terminated name.
    pub name: *const c_char,
    /// Return type.
    pub return_type: ebpf_return_type_t,
    /// Argument types.
    pub arguments: [ebpf_argument_type_t; 5],
    /// Flags.
    pub flags: ebpf_helper_function_prototype_flags_t,
    /// The helper receives the program context as a sixth argument.
    pub implicit_context: bool,
}

/// `ebpf_program_info_t` (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_program_info_t {
    /// `EBPF_PROGRAM_INFORMATION_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Type descriptor.
    pub program_type_descriptor: *const ebpf_program_type_descriptor_t,
    /// Number of program-type specific helpers.
    pub count_of_program_type_specific_helpers: u32,
    /// Their prototypes.
    pub program_type_specific_helper_prototype: *const ebpf_helper_function_prototype_t,
    /// Number of global helper overrides.
    pub count_of_global_helpers: u32,
    /// Their prototypes.
    pub global_helper_prototype: *const ebpf_helper_function_prototype_t,
}

/// `ebpf_helper_function_addresses_t` (40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_helper_function_addresses_t {
    /// `EBPF_HELPER_FUNCTION_ADDRESSES_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Number of addresses (equal to the matching prototype count).
    pub helper_function_count: u32,
    /// Addresses, in prototype order.
    pub helper_function_address: *const u64,
}

/// `ebpf_program_context_create_t`.
pub type ebpf_program_context_create_t = unsafe extern "win64" fn(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t;
/// `ebpf_program_context_destroy_t`.
pub type ebpf_program_context_destroy_t = unsafe extern "win64" fn(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
);

/// `program_data_capabilities_t` (4 bytes): bit 0 `reserved` must be zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct program_data_capabilities_t {
    /// The raw value.
    pub value: u32,
}

/// `ebpf_program_data_t` (72 bytes): the program-info provider's `NpiSpecificCharacteristics`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_program_data_t {
    /// `EBPF_PROGRAM_DATA_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Program information.
    pub program_info: *const ebpf_program_info_t,
    /// Program-type specific helper addresses (may be NULL).
    pub program_type_specific_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    /// Global helper overrides (may be NULL).
    pub global_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    /// Context creation for `bpf_prog_test_run`.
    pub context_create: Option<ebpf_program_context_create_t>,
    /// Context destruction for `bpf_prog_test_run`.
    pub context_destroy: Option<ebpf_program_context_destroy_t>,
    /// IRQL `bpf_prog_test_run` runs the program at.
    pub required_irql: u8,
    /// Capabilities.
    pub capabilities: program_data_capabilities_t,
}

/// `ebpf_program_section_info_t` (56 bytes; used by the user-mode store only).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_program_section_info_t {
    /// `EBPF_PROGRAM_SECTION_INFORMATION_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Section name (UTF-16, NUL-terminated).
    pub section_name: *const u16,
    /// Program type.
    pub program_type: *const GUID,
    /// Attach type.
    pub attach_type: *const GUID,
    /// `bpf_prog_type` value.
    pub bpf_program_type: u32,
    /// `bpf_attach_type` value.
    pub bpf_attach_type: u32,
}

/// `ebpf_btf_resolved_function_prototype_t` (64 bytes): one function a BTF-resolved function
/// provider exports, found by programs by name (not by id).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_btf_resolved_function_prototype_t {
    /// `EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER`.
    pub header: ebpf_extension_header_t,
    /// NUL-terminated name: the name programs declare the function with.
    pub name: *const c_char,
    /// Return type.
    pub return_type: ebpf_return_type_t,
    /// Argument types.
    pub arguments: [ebpf_argument_type_t; 5],
    /// Flags (hashed into the program-information hash of programs that call it).
    pub flags: u32,
}

/// `ebpf_btf_resolved_function_provider_data_t` (48 bytes): the `NpiSpecificCharacteristics`
/// of a provider of the BTF-resolved function NPI, whose NMR module id is the module GUID
/// programs name in their `module_id:{GUID}` declaration tag.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ebpf_btf_resolved_function_provider_data_t {
    /// `EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER`.
    pub header: ebpf_extension_header_t,
    /// Number of functions (the core refuses 0).
    pub btf_resolved_function_count: u32,
    /// Their prototypes.
    pub btf_resolved_function_prototypes: *const ebpf_btf_resolved_function_prototype_t,
    /// Their addresses, index-parallel to the prototypes.
    pub btf_resolved_function_addresses: *const u64,
}
