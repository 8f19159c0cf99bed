//! `ebpf_extension_uuids.h`: NPI ids.

use crate::ntdef::GUID;

/// Program-information NPI (`2934ad50-2154-44b6-9622-6c528c068411`).
pub const EBPF_PROGRAM_INFO_EXTENSION_IID: GUID =
    GUID::from_u128(0x2934ad50_2154_44b6_9622_6c528c068411);

/// Hook NPI (`5d564054-2736-406d-8b22-12bcffaf0a9f`).
pub const EBPF_HOOK_EXTENSION_IID: GUID = GUID::from_u128(0x5d564054_2736_406d_8b22_12bcffaf0a9f);

/// Map-information NPI (`3c2b0f4e-8b0e-4e5e-8e1b-7f4b1f0e1f0e`).
pub const EBPF_MAP_INFO_EXTENSION_IID: GUID =
    GUID::from_u128(0x3c2b0f4e_8b0e_4e5e_8e1b_7f4b1f0e1f0e);

/// BTF-resolved function NPI (`8cf35ce4-7cf4-4407-883e-59b4e73dbe4f`, as eBPF for Windows'
/// `docs/BtfResolvedFunctions.md` defines it).
pub const EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID: GUID =
    GUID::from_u128(0x8cf35ce4_7cf4_4407_883e_59b4e73dbe4f);
