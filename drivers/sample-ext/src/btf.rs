//! The sample's BTF-resolved function (upstream's fourth provider):
//! `sample_ebpf_extension_btf_lookup` in module {8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}, which
//! programs of any type declare in `.ksyms` with the tag
//! `module_id:{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}` and call by name.

use ebpf_extension_common::prelude::*;

/// The module GUID: the provider's NMR module id and the programs' declaration tag.
pub const BTF_MODULE: GUID = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);

/// `sample_ebpf_extension_btf_lookup(key, value, size)`: stores `key` in the first 8 bytes of
/// `value` when there are at least 8; returns `key + size`. The prototype is upstream's
/// (`ANYTHING`, `PTR_TO_READABLE_MEM`, `CONST_SIZE`) although the function writes through the
/// pointer, so the value is `ReadableCells`. (Upstream also returns `key + size` for a NULL
/// value; the prototype lets no program pass one, and the SDK would hand this function no bytes.)
fn btf_lookup(key: u64, value: ReadableCells<'_>) -> u64 {
    if value.len() >= 8 {
        for (index, byte) in key.to_le_bytes().into_iter().enumerate() {
            // SAFETY: upstream's prototype declares the value readable and upstream's function
            // writes the key into it: programs call it to fill the value and rely on nothing
            // the verifier knew of its first 8 bytes.
            unsafe { value.set(index, byte) };
        }
    }
    key.wrapping_add(value.len() as u64)
}

btf_functions! {
    /// What the BTF-resolved function provider publishes.
    pub static BTF_FUNCTIONS = module BTF_MODULE;
    c"sample_ebpf_extension_btf_lookup" => btf_lookup(Anything, Cells);
}
