//! The sample's custom map, `BPF_MAP_TYPE_SAMPLE_HASH_MAP` (15), on a hash map the core keeps
//! (upstream's `sample_ext_maps.h` and the map provider of `sample_ext.c`).
//!
//! Keys and values are 4 bytes; the core stores 8 bytes per key (`actual_value_size` 8) and
//! the provider replaces what it stores (`updates_original_value`), so programs may not use
//! the core's map helpers on it: they read it with `sample_ext_helper_map_get_value`, and
//! `sample_ext_helper_map_lookup_element` always returns NULL. Only programs of type
//! `sample` may use the map.
//!
//! Deliberate difference: upstream stores, in the 8 bytes, a pointer to a 4-byte object it
//! allocates under the core's epoch; this port stores the 4-byte value itself in them (same
//! sizes and results for every caller, no allocation per entry).

use ebpf_ext_map::{CustomMap, Epoch};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_extension::{
    BPF_MAP_TYPE_SAMPLE_HASH_MAP, EBPF_MAP_OPERATION_HELPER,
};
use ebpf_extension_common::sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_OPERATION_NOT_SUPPORTED, ebpf_result_t,
};

use crate::hook::TAG;
use crate::program::PROGRAM_TYPE;

/// NMR module id of the sample's map provider.
pub const MAP_PROVIDER_MODULE_ID: GUID = GUID::from_u128(0xf788ef4b_207d_4dc4_85cf_0f2ea107213c);
/// The custom map type.
pub const MAP_TYPE: u32 = BPF_MAP_TYPE_SAMPLE_HASH_MAP;
/// Bytes of a key and of a value.
pub const ELEMENT_SIZE: u32 = 4;
/// Bytes the core stores per key.
pub const STORED_SIZE: u32 = 8;

/// One map of the sample type (no state of its own).
#[derive(Debug)]
pub struct SampleMap;

impl CustomMap for SampleMap {
    const MAP_TYPE: u32 = MAP_TYPE;
    const UPDATES_ORIGINAL_VALUE: bool = true;
    const TAG: PoolTag = TAG;

    fn create(
        key_size: u32,
        value_size: u32,
        _: u32,
        _: Option<Epoch>,
    ) -> Result<(Self, u32), ebpf_result_t> {
        if key_size != ELEMENT_SIZE || value_size != ELEMENT_SIZE {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        Ok((SampleMap, STORED_SIZE))
    }

    fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
        if *program_type == PROGRAM_TYPE {
            Ok(())
        } else {
            Err(EBPF_OPERATION_NOT_SUPPORTED)
        }
    }

    fn find(
        &self,
        _: Input<'_>,
        stored: Input<'_>,
        out: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        if flags & EBPF_MAP_OPERATION_HELPER != 0 {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        let copied = out.get_mut(..4).is_some_and(|out| stored.read_at(0, out));
        copied.then_some(()).ok_or(EBPF_INVALID_ARGUMENT)
    }

    fn update(
        &self,
        _: Input<'_>,
        value: Input<'_>,
        stored: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        if flags & EBPF_MAP_OPERATION_HELPER != 0 {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        let copied = stored
            .get_mut(..4)
            .is_some_and(|slot| value.read_at(0, slot));
        copied.then_some(()).ok_or(EBPF_INVALID_ARGUMENT)
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}
