//! A custom map whose stored values are objects in the core's epoch memory, with no `unsafe`
//! in the extension: [`ObjectMap`] says how a caller's value becomes an object and an object
//! the caller's value again; [`Objects`] is the map type the provider serves, which keeps,
//! per key, the object's address in what the core stores, and frees the object under epoch
//! control when the core deletes, replaces or cleans up the value.
//!
//! Only the provider's glue calls an [`Objects`]' callbacks (they trust what the core stores
//! to be addresses they wrote), and no one else gets at its state; the core's epoch
//! functions stay inside it, used only while a map of the type lives (the core stays loaded
//! until then).

use core::mem::size_of;
use core::ptr::NonNull;

use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::MapKey;
use ebpf_ext_sys::ebpf_extension::ebpf_map_type_t;
use ebpf_ext_sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_KEY_NOT_FOUND, EBPF_NO_MEMORY, EBPF_OPERATION_NOT_SUPPORTED,
    ebpf_result_t,
};
use ebpf_ext_sys::ntdef::GUID;

use crate::epoch::{Epoch, EpochBox};
use crate::sealed::Callbacks;
use crate::{Input, MapProvider};

/// Bytes the core stores per key: the object's address.
#[expect(clippy::cast_possible_truncation, reason = "a pointer's size, 8 bytes")]
pub const OBJECT_ADDRESS_SIZE: u32 = size_of::<usize>() as u32;

/// A map type whose values live as objects of the extension's in epoch memory (upstream's
/// sample map keeps a 4-byte object per key this way). Programs may not use the core's map
/// helpers on it (the core stores addresses, not values: `updates_original_value`), only the
/// extension's ([`MapProvider::stored_object`]).
///
/// `Object` is not zero-sized and aligned to at most 64 bytes (a compile error otherwise).
///
/// # IRQL
/// Every method: PASSIVE_LEVEL (a map's creation, a program's load, a user-mode update or
/// lookup; programs cannot reach the provider). The state is dropped when the core deletes
/// the map, at an IRQL up to DISPATCH_LEVEL: its `Drop` may neither block nor touch pageable
/// memory.
pub trait ObjectMap: Sized + Send + Sync + 'static {
    /// The map type (`bpf_map_type`) the provider offers.
    const MAP_TYPE: ebpf_map_type_t;
    /// Pool tag of the per-map state and of the objects.
    const TAG: PoolTag;
    /// What the map keeps per key. `Copy`: it is freed without a destructor, once no program
    /// that found it still runs.
    type Object: Copy + Send + Sync + 'static;

    /// A map is being created: check the sizes and return its state.
    ///
    /// # Errors
    /// The provider's status for the creation (the core reports any failure to the caller as
    /// `EBPF_EXTENSION_FAILED_TO_LOAD`).
    fn create(key_size: u32, value_size: u32, max_entries: u32) -> Result<Self, ebpf_result_t>;

    /// A program of `program_type` is loaded with the map.
    ///
    /// # Errors
    /// The result that refuses the program.
    fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t>;

    /// An update from user mode: the object to keep for the caller's `value` under `key`.
    /// `flags` is the core's `EBPF_MAP_OPERATION_*` value (0 from user mode); the update's
    /// `BPF_NOEXIST` / `BPF_EXIST` never reach the provider, the core applies them after.
    ///
    /// # Errors
    /// The result the update fails with; the key keeps its previous object.
    fn make(
        &self,
        key: Input<'_>,
        value: Input<'_>,
        flags: u32,
    ) -> Result<Self::Object, ebpf_result_t>;

    /// A lookup from user mode: writes the caller's value for `object` into `out`. `flags`
    /// is the core's `EBPF_MAP_OPERATION_*` value (0 from user mode).
    ///
    /// # Errors
    /// The result the lookup fails with.
    fn read(&self, object: &Self::Object, out: &mut [u8], flags: u32) -> Result<(), ebpf_result_t>;
}

/// The map type of an [`ObjectMap`]: register a `MapProvider<Objects<M>>`.
#[derive(Debug)]
pub struct Objects<M: ObjectMap> {
    map: M,
    epoch: Epoch,
}

impl<M: ObjectMap> Objects<M> {
    /// A copy of the object `stored` (what the core stores for one of this map's keys) points
    /// at; `None` if it holds no address.
    ///
    /// Called with the core's stored value inside the core's epoch only: from `find` (the
    /// core looks values up inside its epoch) or from a helper (a program runs inside one).
    fn object(&self, stored: Input<'_>) -> Option<M::Object> {
        let object = object_at::<M::Object>(stored)?;
        // SAFETY: what the core stores for the map is only ever an address `update` gave up
        // (programs may not write it: `updates_original_value`), and the caller runs inside
        // the core's epoch, begun before any delete of the value could free the object.
        Some(
            self.epoch
                .protect(|region| unsafe { EpochBox::read(object, region) }),
        )
    }
}

/// The object a stored value points at: `None` if it holds no address.
fn object_at<T>(stored: Input<'_>) -> Option<NonNull<T>> {
    let mut address = [0u8; size_of::<usize>()];
    if !stored.read_at(0, &mut address) {
        return None;
    }
    NonNull::new(usize::from_ne_bytes(address) as *mut T)
}

impl<M: ObjectMap> Callbacks for Objects<M> {
    const MAP_TYPE: ebpf_map_type_t = M::MAP_TYPE;
    const UPDATES_ORIGINAL_VALUE: bool = true;
    const TAG: PoolTag = M::TAG;

    fn create(
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        epoch: Option<Epoch>,
    ) -> Result<(Self, u32), ebpf_result_t> {
        let Some(epoch) = epoch else {
            ebpf_ext_trace::trace_message_u32!(
                ebpf_ext_trace::Level::Error,
                ebpf_ext_trace::keyword::EXTENSION,
                "object map refused: the core offers no epoch functions",
                M::MAP_TYPE
            );
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        };
        let map = M::create(key_size, value_size, max_entries)?;
        Ok((Objects { map, epoch }, OBJECT_ADDRESS_SIZE))
    }

    fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
        self.map.associate(program_type)
    }

    fn find(
        &self,
        _: Input<'_>,
        stored: Input<'_>,
        out: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        let object = self.object(stored).ok_or(EBPF_KEY_NOT_FOUND)?;
        self.map.read(&object, out, flags)
    }

    fn update(
        &self,
        key: Input<'_>,
        value: Input<'_>,
        stored: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        let slot = stored
            .get_mut(..size_of::<usize>())
            .ok_or(EBPF_INVALID_ARGUMENT)?;
        let object = self.map.make(key, value, flags)?;
        let boxed = self
            .epoch
            .protect(|region| region.allocate(object, M::TAG))
            .ok_or(EBPF_NO_MEMORY)?;
        // Given up to the stored value; `delete_element` takes it back.
        let address = boxed.into_raw().as_ptr() as usize;
        slot.copy_from_slice(&address.to_ne_bytes());
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, stored: Input<'_>, _: u32) {
        if let Some(object) = object_at::<M::Object>(stored) {
            // SAFETY: an address `update` gave up from a box of this map's epoch; the core
            // deletes each stored value once (removed, replaced, a failed insert undone, or
            // cleaned up with the map).
            drop(unsafe { EpochBox::from_raw(object, self.epoch) });
        }
    }
}

impl<M: ObjectMap> MapProvider<Objects<M>> {
    /// The map state and a copy of the object kept for the key in the map object a program
    /// passed to a helper (declared with the
    /// [`MapAndKey`](ebpf_ext_program_info::MapAndKey) argument kind); `None` as
    /// [`MapProvider::stored_value`] gives it, or if the key holds no object.
    ///
    /// # IRQL
    /// The helper's (up to DISPATCH_LEVEL).
    #[must_use]
    pub fn stored_object<'a>(&self, key: MapKey<'a>) -> Option<(&'a M, M::Object)> {
        let (objects, stored) = self.stored(key)?;
        Some((&objects.map, objects.object(stored.input())?))
    }
}
