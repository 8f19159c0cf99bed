//! The program-information identity hash: what the core computes over the program
//! information a program was verified against (`_ebpf_program_compute_program_information_hash`
//! in eBPF for Windows' `ebpf_program.c`; bpf2c embeds the same value in native images), so a
//! provider whose published information differs (a reordered prototype, a changed flag) is
//! caught. [`program_info_hash_input`] describes the byte stream.

use ebpf_ext_sys::ebpf_general_helpers::general_helper_prototype;
use sha2::{Digest, Sha256};

use crate::bpf::{BtfFunctionUse, GENERAL_HELPERS};
use crate::program_info::ProgramInfo;

/// A helper id used by the program that neither the provider's program-type helpers nor the
/// core's general helpers declare (the core fails with `EBPF_INVALID_ARGUMENT`). The general
/// prototypes are the core's, all of them (`ebpf_general_helpers`), including those the core
/// declares but does not implement (26 and 35, which extensions override): a program calling
/// one is hashed like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("helper id {0:#x} is neither a program-type helper nor a general helper")]
pub struct UnknownHelper(pub u32);

/// The core's own name of general helper `id`: core-sim's name for it where that differs
/// from the program-side one, and the names of the two the core declares without
/// implementing them (core-sim has no [`GENERAL_HELPERS`] entry for those).
fn core_name(id: u32) -> Option<&'static str> {
    match id {
        22 => Some("bpf_memcpy"),
        23 => Some("bpf_memcmp"),
        25 => Some("bpf_memmove"),
        26 => Some("bpf_get_socket_cookie"),
        35 => Some("bpf_redirect_map"),
        _ => GENERAL_HELPERS.iter().find(|g| g.id == id).map(|g| g.name),
    }
}

/// The bytes the core hashes for a program of type `info` that calls `helper_ids` (any
/// order, duplicates allowed): type name, context descriptor, program type GUID (memory
/// order), `bpf_prog_type`, `is_privileged`, the number of distinct helpers, then each
/// helper in ascending id order (id, name, return type, five argument types, and its flags
/// byte only when `reallocate_packet` is set). Ids from 0xFFFF use the provider's
/// prototypes, smaller ones the core's general prototypes (never the provider's global
/// overrides, and never `implicit_context`).
///
/// # Errors
/// [`UnknownHelper`] for an id neither table declares.
pub fn program_info_hash_input(
    info: &ProgramInfo,
    helper_ids: &[u32],
) -> Result<Vec<u8>, UnknownHelper> {
    let mut ids = helper_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    out.extend_from_slice(info.name.as_bytes());
    let d = info.context_descriptor;
    for v in [d.size, d.data, d.end, d.meta] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&info.program_type.to_bytes_le());
    out.extend_from_slice(&info.bpf_prog_type.to_le_bytes());
    out.push(u8::from(info.is_privileged));
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        let (name, return_type, arguments, reallocate) = if id >= 0xFFFF {
            let h = info
                .helpers
                .iter()
                .find(|h| h.id == id)
                .ok_or(UnknownHelper(id))?;
            (
                h.name.as_str(),
                h.return_type,
                h.arguments,
                h.reallocate_packet,
            )
        } else {
            let (Some(name), Some(g)) = (core_name(id), general_helper_prototype(id)) else {
                return Err(UnknownHelper(id));
            };
            (name, g.return_type, g.arguments, false)
        };
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&return_type.to_le_bytes());
        for a in arguments {
            out.extend_from_slice(&a.to_le_bytes());
        }
        if reallocate {
            out.push(1);
        }
    }
    Ok(out)
}

/// [`program_info_hash_input`] for a program that also calls the BTF-resolved functions
/// `btf_functions` ([`BpfProgram::btf_functions`](crate::bpf::BpfProgram::btf_functions)): when
/// there are any, their number (8 bytes) follows, then each function, sorted by module GUID
/// (its bytes in memory order) and name, as its module GUID (memory order), name, return
/// type, five argument types and flags (4 bytes each).
///
/// That is the layout of the core's code (`_ebpf_program_compute_program_information_hash`
/// and the per-function step it calls, in `ebpf_program.c`) and of `upstream-extensions.md`
/// (A.8, item 8): module GUID before name, flags always. eBPF for Windows' design document
/// (`docs/BtfResolvedFunctions.md`, "Hash Computation") and its specification
/// (`docs/specs/btfid`, REQ-B2C-006 to 008) put the name first; the code is what runs.
///
/// # Errors
/// As [`program_info_hash_input`].
pub fn program_info_hash_input_with_btf(
    info: &ProgramInfo,
    helper_ids: &[u32],
    btf_functions: &[BtfFunctionUse],
) -> Result<Vec<u8>, UnknownHelper> {
    let mut out = program_info_hash_input(info, helper_ids)?;
    if btf_functions.is_empty() {
        return Ok(out);
    }
    let mut functions: Vec<&BtfFunctionUse> = btf_functions.iter().collect();
    functions
        .sort_by(|a, b| (a.module.to_bytes_le(), &a.name).cmp(&(b.module.to_bytes_le(), &b.name)));
    functions.dedup_by(|a, b| a.module == b.module && a.name == b.name);
    out.extend_from_slice(&(functions.len() as u64).to_le_bytes());
    for f in functions {
        out.extend_from_slice(&f.module.to_bytes_le());
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(&f.prototype.return_type.to_le_bytes());
        for a in f.prototype.arguments {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&f.prototype.flags.to_le_bytes());
    }
    Ok(out)
}

/// SHA-256 of [`program_info_hash_input`]: the hash the core stores for a program (and
/// bpf2c embeds with its default `--hash SHA256`).
///
/// # Errors
/// As [`program_info_hash_input`].
pub fn program_info_hash(
    info: &ProgramInfo,
    helper_ids: &[u32],
) -> Result<[u8; 32], UnknownHelper> {
    program_info_hash_with_btf(info, helper_ids, &[])
}

/// SHA-256 of [`program_info_hash_input_with_btf`].
///
/// # Errors
/// As [`program_info_hash_input`].
pub fn program_info_hash_with_btf(
    info: &ProgramInfo,
    helper_ids: &[u32],
    btf_functions: &[BtfFunctionUse],
) -> Result<[u8; 32], UnknownHelper> {
    let input = program_info_hash_input_with_btf(info, helper_ids, btf_functions)?;
    Ok(Sha256::digest(&input).into())
}

#[cfg(test)]
mod tests {
    use ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t;
    use ebpf_ext_sys::ntdef::GUID;

    use super::{
        UnknownHelper, core_name, program_info_hash_input, program_info_hash_input_with_btf,
    };
    use crate::bpf::{BtfFunctionUse, BtfPrototype};
    use crate::program_info::{Helper, ProgramInfo};

    fn info() -> ProgramInfo {
        ProgramInfo {
            name: "t".into(),
            program_type: GUID::from_u128(1),
            bpf_prog_type: 7,
            is_privileged: true,
            context_descriptor: ebpf_context_descriptor_t {
                size: 16,
                data: 0,
                end: 8,
                meta: -1,
            },
            required_irql: 0,
            capabilities: 0,
            helpers: vec![Helper {
                id: 0x10000,
                name: "h".into(),
                return_type: 0,
                arguments: [4, 0, 0, 0, 0],
                reallocate_packet: true,
                implicit_context: true,
                address: None,
            }],
            global_helpers: Vec::new(),
            has_context_create: false,
            has_context_destroy: false,
            binding: crate::program_info::InfoBinding::default(),
        }
    }

    #[test]
    fn general_helpers_use_the_cores_names_and_flags_follow_a_reallocating_helper() {
        let input = program_info_hash_input(&info(), &[0x10000, 22]).expect("known");
        let fixed = 1 + 16 + 16 + 4 + 1;
        assert_eq!(input[fixed - 1], 1, "is_privileged");
        assert_eq!(input[fixed..fixed + 8], 2u64.to_le_bytes());
        let memcpy = &input[fixed + 8..fixed + 8 + 4 + 10];
        assert_eq!(&memcpy[..4], &22u32.to_le_bytes());
        assert_eq!(&memcpy[4..], b"bpf_memcpy");
        let helper = &input[fixed + 8 + 4 + 10 + 24..];
        assert_eq!(helper.len(), 4 + 1 + 24 + 1);
        assert_eq!(helper.last(), Some(&1), "the flags byte");
        assert_eq!(
            program_info_hash_input(&info(), &[0x10001]),
            Err(UnknownHelper(0x10001))
        );
    }

    #[test]
    fn btf_resolved_functions_follow_the_helpers_sorted_by_module_then_name() {
        let without = program_info_hash_input(&info(), &[0x10000]).expect("known");
        assert_eq!(
            program_info_hash_input_with_btf(&info(), &[0x10000], &[]).expect("known"),
            without,
            "no BTF-resolved functions: nothing added"
        );
        let prototype = BtfPrototype {
            return_type: 1,
            arguments: [1, 9, 2, 0, 0],
            flags: 7,
        };
        let function = |module: u128, name: &str| BtfFunctionUse {
            module: GUID::from_u128(module),
            name: name.into(),
            prototype,
        };
        // Module 2's bytes in memory order start with 02, module 1<<120's end with 01: 2 first.
        let uses = [function(1 << 120, "a"), function(2, "b"), function(2, "a")];
        let input = program_info_hash_input_with_btf(&info(), &[0x10000], &uses).expect("known");
        let mut expected = without;
        expected.extend_from_slice(&3u64.to_le_bytes());
        for (module, name) in [(2u128, "a"), (2, "b"), (1 << 120, "a")] {
            expected.extend_from_slice(&GUID::from_u128(module).to_bytes_le());
            expected.extend_from_slice(name.as_bytes());
            for v in [1u32, 1, 9, 2, 0, 0, 7] {
                expected.extend_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(input, expected);
    }

    /// Every general helper the core declares has a name to hash, implemented by core-sim or
    /// not: a program calling an override of one is hashed, never left without a hash.
    #[test]
    fn every_general_helper_of_the_core_has_a_name_to_hash() {
        for prototype in ebpf_ext_sys::ebpf_general_helpers::GENERAL_HELPER_PROTOTYPES {
            assert!(core_name(prototype.id).is_some(), "id {}", prototype.id);
        }
    }
}
