//! `ebpf_windows.h`: the versioned header every extension structure starts with, and the
//! current version/size of each structure.

/// `ebpf_extension_header_t` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ebpf_extension_header_t {
    /// Structure version.
    pub version: u16,
    /// Bytes up to and including the last field of this version (no trailing padding).
    pub size: usize,
    /// `sizeof` the structure.
    pub total_size: usize,
}

impl ebpf_extension_header_t {
    /// A header `{version, size, total_size}`.
    #[must_use]
    pub const fn new(version: u16, size: usize, total_size: usize) -> Self {
        Self {
            version,
            size,
            total_size,
        }
    }
}

/// `ebpf_native_module_header_t` is the same header.
pub type ebpf_native_module_header_t = ebpf_extension_header_t;

/// `EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION`.
pub const EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION: u16 = 1;
/// `EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE` (through `prog_attach_flags`).
pub const EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE: usize = 48;
/// `EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE`.
pub const EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE: usize = 48;
/// [`EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE`] under a name upstream does not use.
#[deprecated(note = "upstream's name is EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE")]
pub const EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION_SIZE: usize =
    EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE;
/// [`EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE`] under a name upstream does not use.
#[deprecated(note = "upstream's name is EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE")]
pub const EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION_TOTAL_SIZE: usize =
    EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE;
/// `EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION`.
pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION: u16 = 1;
/// Size of the attach provider data through `link_type`.
pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE: usize = 48;
/// Total size of the attach provider data.
pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_TOTAL_SIZE: usize = 48;
/// `EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION`.
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION: u16 = 1;
/// Size of the program type descriptor through `is_privileged`.
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE: usize = 61;
/// Total size of the program type descriptor.
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_TOTAL_SIZE: usize = 64;
/// `EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION`.
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION: u16 = 1;
/// Size of a helper prototype through `implicit_context`.
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE: usize = 66;
/// Total size of a helper prototype.
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_TOTAL_SIZE: usize = 72;
/// `EBPF_PROGRAM_INFORMATION_CURRENT_VERSION`.
pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION: u16 = 1;
/// Size of the program information through `global_helper_prototype`.
pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE: usize = 64;
/// Total size of the program information.
pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_TOTAL_SIZE: usize = 64;
/// `EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION`.
pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION: u16 = 1;
/// Size of the helper address table through `helper_function_address`.
pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE: usize = 40;
/// Total size of the helper address table.
pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_TOTAL_SIZE: usize = 40;
/// `EBPF_PROGRAM_DATA_CURRENT_VERSION`.
pub const EBPF_PROGRAM_DATA_CURRENT_VERSION: u16 = 1;
/// Size of the program data through `capabilities`.
pub const EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE: usize = 72;
/// Total size of the program data.
pub const EBPF_PROGRAM_DATA_CURRENT_VERSION_TOTAL_SIZE: usize = 72;
/// `EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION`.
pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION: u16 = 1;
/// Size of the section information through `bpf_attach_type`.
pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE: usize = 56;
/// Total size of the section information.
pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_TOTAL_SIZE: usize = 56;

/// `EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION` = {1, 48, 48}.
pub const EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION: ebpf_extension_header_t =
    ebpf_extension_header_t::new(
        EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION,
        EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE,
        EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE,
    );
/// `EBPF_ATTACH_PROVIDER_DATA_HEADER` = {1, 48, 48}.
pub const EBPF_ATTACH_PROVIDER_DATA_HEADER: ebpf_extension_header_t = ebpf_extension_header_t::new(
    EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION,
    EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE,
    EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_TOTAL_SIZE,
);
/// `EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER` = {1, 61, 64}.
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_TOTAL_SIZE,
    );
/// `EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER` = {1, 66, 72}.
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(
        EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION,
        EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE,
        EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_TOTAL_SIZE,
    );
/// `EBPF_PROGRAM_INFORMATION_HEADER` = {1, 64, 64}.
pub const EBPF_PROGRAM_INFORMATION_HEADER: ebpf_extension_header_t = ebpf_extension_header_t::new(
    EBPF_PROGRAM_INFORMATION_CURRENT_VERSION,
    EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE,
    EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_TOTAL_SIZE,
);
/// `EBPF_HELPER_FUNCTION_ADDRESSES_HEADER` = {1, 40, 40}.
pub const EBPF_HELPER_FUNCTION_ADDRESSES_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE,
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_TOTAL_SIZE,
    );
/// `EBPF_PROGRAM_DATA_HEADER` = {1, 72, 72}.
pub const EBPF_PROGRAM_DATA_HEADER: ebpf_extension_header_t = ebpf_extension_header_t::new(
    EBPF_PROGRAM_DATA_CURRENT_VERSION,
    EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE,
    EBPF_PROGRAM_DATA_CURRENT_VERSION_TOTAL_SIZE,
);
/// `EBPF_PROGRAM_SECTION_INFORMATION_HEADER` = {1, 56, 56}.
pub const EBPF_PROGRAM_SECTION_INFORMATION_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(
        EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION,
        EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE,
        EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_TOTAL_SIZE,
    );

/// `EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER` = {1, 60, 64} (the core accepts size 60
/// only, with total size 64).
pub const EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 60, 64);
/// `EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER` = {1, 48, 48}.
pub const EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 48, 48);
/// `EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_INFO_HEADER` = {1, 56, 56}: the header of the
/// user-mode store's provider information (`ebpf_btf_resolved_function_provider_info_t`), whose
/// version and size the store keeps under `BtfResolvedFunctions\{module}`.
pub const EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_INFO_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t::new(1, 56, 56);

/// `EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH`.
pub const EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH: usize = 256;
/// `EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH`.
pub const EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH: usize = 256;
/// `EBPF_MAX_GENERAL_HELPER_FUNCTION`: general helper ids are 0..=0xFFFF; program-type
/// specific ids are above it.
pub const EBPF_MAX_GENERAL_HELPER_FUNCTION: u32 = 0xFFFF;
/// `MAX_TAIL_CALL_CNT`.
pub const MAX_TAIL_CALL_CNT: u32 = 33;
