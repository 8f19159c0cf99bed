//! The sample's custom map, `BPF_MAP_TYPE_SAMPLE_HASH_MAP` (15), on a hash map the core keeps
//! (upstream's `sample_ext_maps.h` and the map provider of `sample_ext.c`).
//!
//! Keys and values are 4 bytes. As upstream, each value lives as a 4-byte object in the core's
//! epoch memory and the core stores its address (`actual_value_size` 8, and
//! `updates_original_value`), so programs may not use the core's map helpers on it: they read
//! it with `sample_ext_helper_map_get_value` only, and `sample_ext_helper_map_lookup_element`
//! always returns NULL. Only programs of type `sample` may use the map.

use ebpf_ext_map::{ObjectMap, Objects};
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

/// The map type the provider registers: the sample's objects in epoch memory.
pub type SampleMaps = Objects<SampleMap>;

/// One map of the sample type (no state of its own).
#[derive(Debug)]
pub struct SampleMap;

impl ObjectMap for SampleMap {
    const MAP_TYPE: u32 = MAP_TYPE;
    const TAG: PoolTag = TAG;
    type Object = [u8; 4];

    fn create(key_size: u32, value_size: u32, _: u32) -> Result<Self, ebpf_result_t> {
        if key_size != ELEMENT_SIZE || value_size != ELEMENT_SIZE {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        Ok(SampleMap)
    }

    fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
        if *program_type == PROGRAM_TYPE {
            Ok(())
        } else {
            Err(EBPF_OPERATION_NOT_SUPPORTED)
        }
    }

    fn make(&self, _: Input<'_>, value: Input<'_>, flags: u32) -> Result<[u8; 4], ebpf_result_t> {
        if flags & EBPF_MAP_OPERATION_HELPER != 0 {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        let mut object = [0; 4];
        value
            .read_at(0, &mut object)
            .then_some(object)
            .ok_or(EBPF_INVALID_ARGUMENT)
    }

    fn read(&self, object: &[u8; 4], out: &mut [u8], flags: u32) -> Result<(), ebpf_result_t> {
        if flags & EBPF_MAP_OPERATION_HELPER != 0 {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        let out = out.get_mut(..4).ok_or(EBPF_INVALID_ARGUMENT)?;
        out.copy_from_slice(object);
        Ok(())
    }
}
