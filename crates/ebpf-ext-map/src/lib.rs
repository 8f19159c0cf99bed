//! A custom-map provider: the extension's side of eBPF for Windows' map-information NPI
//! (`EBPF_MAP_INFO_EXTENSION_IID`), which lets an extension offer a map type of its own on a
//! hash map the core keeps (upstream's `sample_ext.c` custom map, XDP's XSKMAP).
//!
//! An extension implements [`CustomMap`] — the per-map state and what happens on create,
//! program association, lookup, update and delete — and registers a [`MapProvider`]. The
//! provider publishes `ebpf_map_provider_data_t` with a dispatch table generated for the
//! type, turns the core's raw callbacks into calls with slices and typed state, and keeps
//! what the core tells each map client at attach (the offset of the provider's context in
//! the core's map objects, and the core's lookup function), so a helper can reach a map's
//! stored value from the map and key a program passed ([`MapProvider::stored_value`]).
//!
//! The core runs one NMR client per map of the type; each attaches to this provider, and
//! dropping the [`MapProvider`] (its deregistration) waits until every map of the type is gone.
//!
//! A map whose values are objects of the extension's implements [`ObjectMap`] instead, and
//! registers a `MapProvider<Objects<M>>`: it says how a value becomes an object and back;
//! the SDK keeps each object in the core's epoch memory and its address in what the core
//! stores, and frees it when the core deletes or replaces the value, once no program that
//! could have found it still runs. The extension writes no `unsafe` code for it.
//!
//! # IRQL
//! Registration: PASSIVE_LEVEL. The callbacks run at the IRQL the core calls them at
//! (PASSIVE_LEVEL for user-mode operations, up to DISPATCH_LEVEL from programs).
#![no_std]

mod epoch;
mod objects;

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider, binding_from_context};
use ebpf_ext_pool::{PoolArray, PoolBox, PoolTag};
/// The views [`CustomMap`]'s callbacks and [`MapProvider::stored_value`] give.
pub use ebpf_ext_program_info::{Input, SharedBytes};

use ebpf_ext_program_info::MapKey;
use ebpf_ext_sys::Result;
use ebpf_ext_sys::ebpf_extension::{
    BPF_MAP_TYPE_HASH, EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER,
    EBPF_BASE_MAP_PROVIDER_DISPATCH_TABLE_HEADER, EBPF_BASE_MAP_PROVIDER_PROPERTIES_HEADER,
    EBPF_MAP_CLIENT_DATA_HEADER, EBPF_MAP_PROVIDER_DATA_HEADER,
    ebpf_base_map_client_dispatch_table_t, ebpf_base_map_provider_dispatch_table_t,
    ebpf_base_map_provider_properties_t, ebpf_map_client_data_t, ebpf_map_find_element_t,
    ebpf_map_provider_data_t, ebpf_map_type_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_MAP_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{
    EBPF_FAILED, EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::netioddk::NPIID;
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER};
use ebpf_ext_trace::refused;

use epoch::Epoch;
pub use objects::{OBJECT_ADDRESS_SIZE, ObjectMap, Objects};

/// A map type the extension implements on top of the core's hash map.
///
/// The value is the per-map state (the provider's map context). The core stores, for every
/// key, a value of the size [`CustomMap::create`] reports. With
/// [`CustomMap::UPDATES_ORIGINAL_VALUE`] the provider fills it on update and turns it into
/// the caller's value on lookup; without it the core stores and returns the caller's value
/// itself, and the provider's callbacks can only observe and refuse.
///
/// # IRQL
/// [`CustomMap::create`] and [`CustomMap::associate`]: PASSIVE_LEVEL (a map's creation, a
/// program's load). The others: see each. The state is dropped when the core deletes the map
/// (`postprocess_map_delete`), at an IRQL up to DISPATCH_LEVEL: its `Drop` may neither block
/// nor touch pageable memory.
pub trait CustomMap: Sized + Send + Sync + 'static {
    /// The map type (`bpf_map_type`) the provider offers.
    const MAP_TYPE: ebpf_map_type_t;
    /// Whether the provider replaces what the core stores (`updates_original_value`): then
    /// programs may not use the core's map helpers on the map, only the extension's.
    const UPDATES_ORIGINAL_VALUE: bool;
    /// Pool tag of the per-map state.
    const TAG: PoolTag;

    /// A map is being created: check the sizes and return the state and the value size the
    /// core is to store per key.
    ///
    /// The stored size must not be 0, and must be `value_size` unless
    /// [`CustomMap::UPDATES_ORIGINAL_VALUE`]: the core refuses the map otherwise, so the
    /// provider refuses it first (`EBPF_INVALID_ARGUMENT`, traced) and drops the state.
    ///
    /// # Errors
    /// The provider's status for the creation (traced; the core reports any failure to the
    /// caller as `EBPF_EXTENSION_FAILED_TO_LOAD`).
    fn create(
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> core::result::Result<(Self, u32), ebpf_result_t>;

    /// A program of `program_type` is loaded with the map.
    ///
    /// # Errors
    /// The result that refuses the program.
    fn associate(&self, program_type: &GUID) -> core::result::Result<(), ebpf_result_t>;

    /// A lookup: `stored` is what the core keeps for `key`, `out` the caller's value.
    ///
    /// `key` and `stored` are [`Input`] views, read one byte at a time: a key may be a
    /// program's map value, and a stored value that programs may reach (without
    /// [`CustomMap::UPDATES_ORIGINAL_VALUE`]) may be written by another processor's program
    /// during the call. `out` is the caller's alone: a user-mode lookup's request and reply
    /// are one buffer, and a key the core passes from inside `out` is copied out first.
    ///
    /// Without [`CustomMap::UPDATES_ORIGINAL_VALUE`] the core gives no output buffer (`out`
    /// is empty) and returns `stored` itself: the lookup can only refuse. Then it may also
    /// come from a program, at up to DISPATCH_LEVEL (`EBPF_MAP_OPERATION_HELPER` in `flags`).
    /// `key` is empty if the core passes none (its prototype makes the key optional).
    ///
    /// # Errors
    /// The result the lookup fails with.
    fn find(
        &self,
        key: Input<'_>,
        stored: Input<'_>,
        out: &mut [u8],
        flags: u32,
    ) -> core::result::Result<(), ebpf_result_t>;

    /// An update: `value` is the caller's, `stored` what the core will keep (zeroed, and
    /// the provider's alone until the update returns).
    ///
    /// `key` and `value` are [`Input`] views, as for [`CustomMap::find`]: a program may pass
    /// another map's value as either.
    ///
    /// Without [`CustomMap::UPDATES_ORIGINAL_VALUE`] the core gives no buffer (`stored` is
    /// empty) and keeps `value` itself: the update can only refuse. Then it may also come
    /// from a program, at up to DISPATCH_LEVEL (`EBPF_MAP_OPERATION_HELPER` in `flags`).
    /// `key` is empty if the core passes none.
    ///
    /// # Errors
    /// The result the update fails with.
    fn update(
        &self,
        key: Input<'_>,
        value: Input<'_>,
        stored: &mut [u8],
        flags: u32,
    ) -> core::result::Result<(), ebpf_result_t>;

    /// A stored value was removed, replaced or cleaned up with the map; cannot fail. `key`
    /// is empty if the core passes none. Both are [`Input`] views, as for [`CustomMap::find`].
    ///
    /// `flags` says why: 0 for a delete from user mode; `EBPF_MAP_OPERATION_HELPER` for one
    /// from a program (only without [`CustomMap::UPDATES_ORIGINAL_VALUE`]), at the program's
    /// IRQL, up to DISPATCH_LEVEL; `EBPF_MAP_OPERATION_UPDATE` (with the operation's own
    /// flag) for a value an update replaced, or for the value of an insert the core refused
    /// after [`CustomMap::update`] had accepted it, which undoes that update; and
    /// `EBPF_MAP_OPERATION_MAP_CLEANUP` for each value left when the map is deleted, outside
    /// any epoch. A find of the same key may still be running when it is called (the core
    /// takes no lock around the provider's find): free what the value refers to under epoch
    /// control, never at once.
    fn delete_element(&self, key: Input<'_>, stored: Input<'_>, flags: u32);
}

/// What the provider's glue calls: every [`CustomMap`], and [`Objects`]. Sealed, so that an
/// [`Objects`]' callbacks, which trust what the core stores, are the glue's to call alone.
mod sealed {
    use ebpf_ext_pool::PoolTag;
    use ebpf_ext_sys::ebpf_extension::ebpf_map_type_t;
    use ebpf_ext_sys::ebpf_result::ebpf_result_t;
    use ebpf_ext_sys::ntdef::GUID;

    use crate::Input;
    use crate::epoch::Epoch;

    /// [`CustomMap`](crate::CustomMap)'s items, and the core's epoch at create.
    pub trait Callbacks: Sized + Send + Sync + 'static {
        const MAP_TYPE: ebpf_map_type_t;
        const UPDATES_ORIGINAL_VALUE: bool;
        const TAG: PoolTag;
        fn create(
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            epoch: Option<Epoch>,
        ) -> Result<(Self, u32), ebpf_result_t>;
        fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t>;
        fn find(
            &self,
            key: Input<'_>,
            stored: Input<'_>,
            out: &mut [u8],
            flags: u32,
        ) -> Result<(), ebpf_result_t>;
        fn update(
            &self,
            key: Input<'_>,
            value: Input<'_>,
            stored: &mut [u8],
            flags: u32,
        ) -> Result<(), ebpf_result_t>;
        fn delete_element(&self, key: Input<'_>, stored: Input<'_>, flags: u32);
    }

    impl<M: crate::CustomMap> Callbacks for M {
        const MAP_TYPE: ebpf_map_type_t = M::MAP_TYPE;
        const UPDATES_ORIGINAL_VALUE: bool = M::UPDATES_ORIGINAL_VALUE;
        const TAG: PoolTag = M::TAG;
        fn create(
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            _: Option<Epoch>,
        ) -> Result<(Self, u32), ebpf_result_t> {
            M::create(key_size, value_size, max_entries)
        }
        fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
            crate::CustomMap::associate(self, program_type)
        }
        fn find(
            &self,
            key: Input<'_>,
            stored: Input<'_>,
            out: &mut [u8],
            flags: u32,
        ) -> Result<(), ebpf_result_t> {
            crate::CustomMap::find(self, key, stored, out, flags)
        }
        fn update(
            &self,
            key: Input<'_>,
            value: Input<'_>,
            stored: &mut [u8],
            flags: u32,
        ) -> Result<(), ebpf_result_t> {
            crate::CustomMap::update(self, key, value, stored, flags)
        }
        fn delete_element(&self, key: Input<'_>, stored: Input<'_>, flags: u32) {
            crate::CustomMap::delete_element(self, key, stored, flags);
        }
    }
}

use sealed::Callbacks;

/// The per-map context the core keeps for the provider.
struct MapState<M> {
    map: M,
    value_size: u32,
}

/// What the core told the provider at attach: same for every map client.
struct CoreSide {
    map_context_offset: AtomicU64,
    find_element: AtomicPtr<c_void>,
}

impl CoreSide {
    /// Keeps what an accepted map client presented: its offset, and its lookup unless it has
    /// none (a client without a dispatch table never hides the lookup an earlier one gave). A
    /// refused client publishes nothing.
    fn publish(&self, map_context_offset: u64, find_element: *mut c_void) {
        self.map_context_offset
            .store(map_context_offset, Ordering::Release);
        if !find_element.is_null() {
            self.find_element.store(find_element, Ordering::Release);
        }
    }
}

/// Most maps of one custom type alive at once (a limit of this provider's; the core has
/// none). A creation beyond is refused with `EBPF_NO_MEMORY` after [`CustomMap::create`] ran:
/// its `M` is dropped again, and no map exists. The caller sees
/// `EBPF_EXTENSION_FAILED_TO_LOAD`, as for any refused creation.
pub const MAX_MAPS: usize = 128;

/// The map contexts this provider made and has not deleted. The core keeps every extensible
/// map's context at the same offset of its map objects, so a program may hand a helper a map
/// of another custom type, whose context is not a `MapState<M>`: a context is used only once
/// found here (compared by address, never read before).
///
/// # Locking
/// Lock-free: `create` claims an empty slot with a compare-exchange, `delete` empties its
/// slot; a lookup compares addresses only. A map cannot be deleted while a program that a
/// helper runs for holds it.
struct LiveMaps {
    slots: [AtomicPtr<c_void>; MAX_MAPS],
}

impl LiveMaps {
    /// Records `context`; `false` if every slot is taken.
    fn insert(&self, context: *mut c_void) -> bool {
        self.slots.iter().any(|slot| {
            slot.compare_exchange(
                ptr::null_mut(),
                context,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        })
    }

    /// Forgets `context`.
    fn remove(&self, context: *mut c_void) {
        for slot in &self.slots {
            if slot
                .compare_exchange(
                    context,
                    ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return;
            }
        }
    }

    /// Whether `context` is one of this provider's live map contexts.
    fn contains(&self, context: *const c_void) -> bool {
        !context.is_null()
            && self
                .slots
                .iter()
                .any(|slot| ptr::eq(slot.load(Ordering::Acquire).cast_const(), context))
    }
}

/// The NPI as [`ebpf_ext_nmr`] sees it.
struct MapNpi<M: Callbacks> {
    data: ebpf_map_provider_data_t,
    core: CoreSide,
    live: LiveMaps,
    _map: PhantomData<fn() -> M>,
}

// SAFETY: `data` points only to `'static` immutable tables; `core` is atomics.
unsafe impl<M: Callbacks> Send for MapNpi<M> {}
// SAFETY: as above.
unsafe impl<M: Callbacks> Sync for MapNpi<M> {}

/// One attached map client (a map of the type): where the provider records the maps it makes.
struct MapClient {
    /// The provider's live-map table, which outlives its bindings (pinned with the provider).
    live: *const LiveMaps,
    /// The core's epoch functions, if its table has them.
    epoch: Option<Epoch>,
}

// SAFETY: `live` points at atomics the provider keeps for longer than any binding.
unsafe impl Send for MapClient {}
// SAFETY: as above.
unsafe impl Sync for MapClient {}

// SAFETY: the characteristics are the map-information NPI's provider data, with a dispatch
// table of this crate's callbacks for `M`.
unsafe impl<M: Callbacks> NpiProvider for MapNpi<M> {
    type Characteristics = ebpf_map_provider_data_t;
    type Binding = MapClient;
    const NPI_ID: &'static NPIID = &EBPF_MAP_INFO_EXTENSION_IID;

    fn characteristics(&self) -> &ebpf_map_provider_data_t {
        &self.data
    }

    fn attach(
        &self,
        client: &AttachingClient<'_>,
    ) -> core::result::Result<Bound<MapClient>, NTSTATUS> {
        let registration = client.registration();
        if registration.is_null() {
            return Err(refused(
                "map client refused: no registration instance",
                STATUS_INVALID_PARAMETER,
            ));
        }
        // SAFETY: NMR's registration instance, valid during attach.
        let data =
            unsafe { (*registration).NpiSpecificCharacteristics }.cast::<ebpf_map_client_data_t>();
        if data.is_null() {
            return Err(refused(
                "map client refused: no client data",
                STATUS_INVALID_PARAMETER,
            ));
        }
        // SAFETY: non-NULL client data; its header is read first, the rest only once the
        // header says it is there.
        let header = unsafe { data.cast::<ebpf_extension_header_t>().read_unaligned() };
        if header.version != EBPF_MAP_CLIENT_DATA_HEADER.version
            || header.size != size_of::<ebpf_map_client_data_t>()
        {
            return Err(refused(
                "map client refused: client data is not version 1, 40 bytes",
                STATUS_INVALID_PARAMETER,
            ));
        }
        // SAFETY: a version-1 client data of full size (checked).
        let data = unsafe { data.read_unaligned() };
        // SAFETY: NULL or the core's client dispatch table, alive while it is attached.
        let (find, epoch) = match unsafe { core_functions(data.base_client_table) } {
            Ok(functions) => functions,
            Err(reason) => return Err(refused(reason, STATUS_INVALID_PARAMETER)),
        };
        let bound = client
            .allocate(MapClient {
                live: &raw const self.live,
                epoch,
            })
            .map_err(|_| {
                refused(
                    "map client refused: no memory for its binding",
                    STATUS_INSUFFICIENT_RESOURCES,
                )
            })?;
        self.core.publish(data.map_context_offset, find);
        Ok(bound)
    }

    fn detach(_: &MapClient) -> Detach {
        Detach::Complete
    }
}

/// Bytes of the core's client dispatch table up to and including `find_element_function`.
const FIND_ELEMENT_SIZE: usize =
    offset_of!(ebpf_base_map_client_dispatch_table_t, find_element_function)
        + size_of::<Option<ebpf_map_find_element_t>>();

/// Whether a version-1 client dispatch table of `size` bytes has the lookup at offset 24.
///
/// Upstream's revisions of this NPI that do: {header, lookup} (32 bytes), {header, lookup,
/// four epoch functions} (64) and the current {header, lookup, six epoch functions} (80, to
/// which a later version may add). Its "extensible maps" revision presents client data of
/// the same layout and header, but its table is {header, four epoch functions} (56, also
/// version 1): what sits at offset 24 there allocates memory.
fn has_lookup(size: usize) -> bool {
    /// {header, lookup, four epoch functions}.
    const WITH_FOUR_EPOCH_FUNCTIONS: usize = FIND_ELEMENT_SIZE + 4 * size_of::<usize>();
    size == FIND_ELEMENT_SIZE
        || size == WITH_FOUR_EPOCH_FUNCTIONS
        || size >= size_of::<ebpf_base_map_client_dispatch_table_t>()
}

/// The core's lookup function from its client dispatch table, NULL if it has no table or no
/// function there, and its epoch functions if the table is a full one (80 bytes or more) with
/// all six set. The table's header is read first: its version must be 1 and its size one of a
/// table with the lookup ([`has_lookup`]).
///
/// # Safety
/// `table` is NULL, or readable for a header and then for the size that header gives.
unsafe fn core_functions(
    table: *const ebpf_base_map_client_dispatch_table_t,
) -> core::result::Result<(*mut c_void, Option<Epoch>), &'static str> {
    if table.is_null() {
        return Ok((ptr::null_mut(), None));
    }
    // SAFETY: the caller's precondition; every table starts with its header.
    let header = unsafe { table.cast::<ebpf_extension_header_t>().read_unaligned() };
    if header.version != EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER.version {
        return Err("map client refused: the core's dispatch table is not version 1");
    }
    if !has_lookup(header.size) {
        return Err("map client refused: the core's dispatch table has no lookup function");
    }
    let slot = table
        .wrapping_byte_add(offset_of!(
            ebpf_base_map_client_dispatch_table_t,
            find_element_function
        ))
        .cast::<Option<ebpf_map_find_element_t>>();
    // SAFETY: the header says the table holds the function (checked).
    let find = unsafe { slot.read_unaligned() };
    let epoch = if header.size >= size_of::<ebpf_base_map_client_dispatch_table_t>() {
        // SAFETY: the header says the whole table is there (checked); its functions are the
        // core's.
        unsafe { Epoch::from_table(table) }
    } else {
        None
    };
    Ok((find.map_or(ptr::null_mut(), |f| f as *mut c_void), epoch))
}

/// A registered custom-map provider of `M`: a [`CustomMap`], or [`Objects`] of an
/// [`ObjectMap`]. Dropping it deregisters, which waits until every map of the type is gone.
pub struct MapProvider<M: Callbacks> {
    provider: Provider<MapNpi<M>>,
}

impl<M: Callbacks> MapProvider<M> {
    /// Registers the provider of `M::MAP_TYPE` (on a hash map) as NMR module `module_id`.
    ///
    /// # Errors
    /// As [`Provider::register`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn register(module_id: GUID, tag: PoolTag) -> Result<Self> {
        let npi = MapNpi::<M> {
            data: ebpf_map_provider_data_t {
                header: EBPF_MAP_PROVIDER_DATA_HEADER,
                map_type: M::MAP_TYPE,
                base_map_type: BPF_MAP_TYPE_HASH,
                base_properties: properties::<M>(),
                base_provider_table: dispatch::<M>(),
            },
            core: CoreSide {
                map_context_offset: AtomicU64::new(0),
                find_element: AtomicPtr::new(ptr::null_mut()),
            },
            live: LiveMaps {
                slots: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_MAPS],
            },
            _map: PhantomData,
        };
        Ok(MapProvider {
            provider: Provider::register(module_id, npi, tag)?,
        })
    }
}

impl<M: CustomMap> MapProvider<M> {
    /// The map state and the stored value for the key in the map object a program passed to
    /// a helper (declared with the [`MapAndKey`](ebpf_ext_program_info::MapAndKey) argument
    /// kind); `None` if the map is not one this provider made (another custom type's, whose
    /// context sits at the same offset, or a built-in map's NULL), no map client has attached
    /// yet, or the key is absent.
    ///
    /// The value comes as a [`SharedBytes`] view, read and written one byte at a time: other
    /// processors' programs and user mode may change it during the call (the core takes no
    /// lock), and a program that can reach the map's values (a map whose provider does not
    /// replace what the core stores) may pass a pointer into this very value as one of the
    /// helper's memory arguments.
    ///
    /// # IRQL
    /// The helper's (up to DISPATCH_LEVEL).
    #[must_use]
    pub fn stored_value<'a>(&self, key: MapKey<'a>) -> Option<(&'a M, SharedBytes<'a>)> {
        self.stored(key)
    }
}

impl<M: Callbacks> MapProvider<M> {
    /// [`MapProvider::stored_value`] for any map the glue serves ([`Objects`] too, whose state
    /// is not handed out).
    pub(crate) fn stored<'a>(&self, key: MapKey<'a>) -> Option<(&'a M, SharedBytes<'a>)> {
        let (map, key) = (key.map().as_ptr(), key.key_ptr());
        let core = &self.provider.get().core;
        let find = core.find_element.load(Ordering::Acquire);
        if map.is_null() || key.is_null() || find.is_null() {
            return None;
        }
        let offset = usize::try_from(core.map_context_offset.load(Ordering::Acquire)).ok()?;
        // The core keeps every extensible map's provider context (NULL for built-in maps) at
        // this offset of the map objects it passes to helpers.
        let slot = map.wrapping_byte_add(offset).cast::<*const MapState<M>>();
        // SAFETY: a readable pointer slot inside the map object (above; `MapKey`'s invariant:
        // a core map object the program passed, alive for the helper call).
        let context = unsafe { slot.read_unaligned() };
        if !self.provider.get().live.contains(context.cast()) {
            return None;
        }
        // SAFETY: a context this provider's `preprocess_map_create` returned and its
        // `postprocess_map_delete` has not freed (found among the live ones), alive with the
        // map the program holds.
        let state = unsafe { context.as_ref() }?;
        // SAFETY: the core's `ebpf_map_find_element_t`, stored at attach.
        let find: ebpf_ext_sys::ebpf_extension::ebpf_map_find_element_t =
            unsafe { core::mem::transmute::<*mut c_void, _>(find) };
        let mut value: *mut u8 = ptr::null_mut();
        // SAFETY: the map object and a key of its key size (`MapKey`'s invariant); an out
        // slot of ours.
        let result = unsafe { find(map, key, &raw mut value) };
        if result != EBPF_SUCCESS || value.is_null() {
            return None;
        }
        let len = usize::try_from(state.value_size).ok()?;
        // SAFETY: the core stores `value_size` writable bytes per key (`value` is non-NULL),
        // alive during the helper call; the helper's arguments reach them only through views
        // or raw pointers, never references (`check_overlap` keeps an `Output` apart from a
        // `MapAndKey`).
        Some((&state.map, unsafe {
            SharedBytes::from_raw_parts(value, len)
        }))
    }
}

fn properties<M: Callbacks>() -> &'static ebpf_base_map_provider_properties_t {
    const {
        &ebpf_base_map_provider_properties_t {
            header: EBPF_BASE_MAP_PROVIDER_PROPERTIES_HEADER,
            updates_original_value: M::UPDATES_ORIGINAL_VALUE,
        }
    }
}

fn dispatch<M: Callbacks>() -> &'static ebpf_base_map_provider_dispatch_table_t {
    const {
        &ebpf_base_map_provider_dispatch_table_t {
            header: EBPF_BASE_MAP_PROVIDER_DISPATCH_TABLE_HEADER,
            preprocess_map_create: Some(create::<M>),
            postprocess_map_delete: Some(delete::<M>),
            preprocess_associate_program_type: Some(associate::<M>),
            postprocess_map_find_element: Some(find::<M>),
            preprocess_map_update_element: Some(update::<M>),
            preprocess_map_delete_element: None,
            postprocess_map_delete_element: Some(delete_element::<M>),
        }
    }
}

fn result(outcome: core::result::Result<(), ebpf_result_t>) -> ebpf_result_t {
    outcome.err().map_or(EBPF_SUCCESS, refusal)
}

/// The result a callback's `Err` reports: its own, except `EBPF_SUCCESS`, which would turn
/// the refusal into an acceptance (and, from `create`, leave the core's out slots unwritten),
/// so it is reported as `EBPF_FAILED` and traced.
fn refusal(error: ebpf_result_t) -> ebpf_result_t {
    if error != EBPF_SUCCESS {
        return error;
    }
    ebpf_ext_trace::trace_message!(
        ebpf_ext_trace::Level::Error,
        ebpf_ext_trace::keyword::EXTENSION,
        "custom map callback failed with EBPF_SUCCESS: reported as EBPF_FAILED"
    );
    EBPF_FAILED
}

/// Traces a map creation refused for want of room, and returns `EBPF_NO_MEMORY`.
fn no_room(why: &str) -> ebpf_result_t {
    ebpf_ext_trace::trace_message_string!(
        ebpf_ext_trace::Level::Error,
        ebpf_ext_trace::keyword::EXTENSION,
        "custom map refused: no memory",
        why
    );
    EBPF_NO_MEMORY
}

/// The state behind a map context the core passed back.
///
/// # Safety
/// `context` is NULL or a context [`create`] returned that [`delete`] has not freed.
unsafe fn state<'a, M: Callbacks>(context: *mut c_void) -> Option<&'a MapState<M>> {
    // SAFETY: the caller's precondition.
    unsafe { context.cast::<MapState<M>>().as_ref() }
}

/// `len` bytes at `p`, or `None` if `p` is NULL.
///
/// # Safety
/// `p` is NULL or valid for reads and writes of `len` bytes for `'a` (the core's buffers: pool
/// or stack memory, or a program's), with no `&[u8]` or `&mut [u8]` to them in use.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> Option<Input<'a>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's precondition (non-NULL here); others may write the bytes during
    // the call, which a view allows.
    Some(unsafe { Input::from_raw_parts(p, len) })
}

/// The state, key and a value buffer of an element callback; the key is empty if `key` is
/// NULL (the core's prototypes make it optional), and a NULL `value` is refused.
///
/// # Safety
/// As [`state`] for `map_context`; `key` and `value` NULL or as [`bytes`] asks, for their
/// sizes, for `'a`.
unsafe fn element<'a, M: Callbacks>(
    map_context: *mut c_void,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> Option<(&'a MapState<M>, Input<'a>, Input<'a>)> {
    // SAFETY: the caller's precondition.
    let state = unsafe { state::<M>(map_context) }?;
    // SAFETY: as above.
    let key = unsafe { bytes(key, key_size) }.unwrap_or_default();
    // SAFETY: as above.
    let value = unsafe { bytes(value, value_size) }?;
    Some((state, key, value))
}

unsafe extern "win64" fn create<M: Callbacks>(
    binding: *mut c_void,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    actual_value_size: *mut u32,
    map_context: *mut *mut c_void,
) -> ebpf_result_t {
    if actual_value_size.is_null() || map_context.is_null() || map_type != M::MAP_TYPE {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: the core passes this map client's provider binding context: NULL or the
    // `MapClient` `attach` allocated, alive while the client is attached.
    let Some(client) = (unsafe { binding_from_context::<MapClient>(binding) }) else {
        return EBPF_INVALID_ARGUMENT;
    };
    // SAFETY: the provider's table outlives its bindings (`MapClient::live`).
    let live = unsafe { &*client.live };
    let (map, size) = match M::create(key_size, value_size, max_entries, client.epoch) {
        Ok(created) => created,
        Err(e) => return refusal(e),
    };
    if size == 0 || (!M::UPDATES_ORIGINAL_VALUE && size != value_size) {
        // The core would refuse the map after this call, and might not delete it.
        ebpf_ext_trace::trace_message_u32!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "custom map refused: its stored size is 0, or not the value size without UPDATES_ORIGINAL_VALUE",
            size
        );
        drop(map);
        return EBPF_INVALID_ARGUMENT;
    }
    let Ok(boxed) = PoolBox::try_new(
        MapState {
            map,
            value_size: size,
        },
        M::TAG,
    ) else {
        return no_room("the map's state");
    };
    let raw = boxed.into_raw();
    let context = raw.as_ptr().cast::<c_void>();
    if !live.insert(context) {
        // SAFETY: made just above from a `PoolBox` with `M::TAG`, handed to no one.
        drop(unsafe { PoolBox::from_raw(raw, M::TAG) });
        return no_room("MAX_MAPS maps of the type are alive");
    }
    // SAFETY: the core's out slots (checked non-NULL).
    unsafe { actual_value_size.write(size) };
    // SAFETY: as above; the context is freed by `delete`.
    unsafe { map_context.write(context) };
    EBPF_SUCCESS
}

unsafe extern "win64" fn delete<M: Callbacks>(binding: *mut c_void, map_context: *mut c_void) {
    // SAFETY: as in `create`: NULL or this map client's live `MapClient`.
    let Some(client) = (unsafe { binding_from_context::<MapClient>(binding) }) else {
        // `create` refuses a NULL binding, so this context was never made; and one still in
        // the table must not be freed while its address is there (another allocation could
        // take it and pass for it).
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "custom map delete without a binding: its context is left alone"
        );
        return;
    };
    // SAFETY: the provider's table outlives its bindings.
    unsafe { &*client.live }.remove(map_context);
    if let Some(context) = NonNull::new(map_context.cast::<MapState<M>>()) {
        // SAFETY: a context `create` made with `M::TAG`, deleted once by the core.
        drop(unsafe { PoolBox::from_raw(context, M::TAG) });
    }
}

unsafe extern "win64" fn associate<M: Callbacks>(
    _binding: *mut c_void,
    map_context: *mut c_void,
    program_type: *const GUID,
) -> ebpf_result_t {
    // SAFETY: the core passes a live map context.
    let Some(state) = (unsafe { state::<M>(map_context) }) else {
        return EBPF_INVALID_ARGUMENT;
    };
    // SAFETY: NULL or the core's program type GUID.
    let Some(program_type) = (unsafe { program_type.as_ref() }) else {
        return EBPF_INVALID_ARGUMENT;
    };
    result(state.map.associate(program_type))
}

unsafe extern "win64" fn find<M: Callbacks>(
    _binding: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    in_size: usize,
    in_value: *const u8,
    out_size: usize,
    out_value: *mut u8,
    flags: u32,
) -> ebpf_result_t {
    // SAFETY: the core passes a live map context and buffers of the sizes it passes (pool or
    // stack memory, writable, that no reference of ours reaches).
    let Some((state, key, stored)) =
        (unsafe { element::<M>(map_context, key, key_size, in_value, in_size) })
    else {
        return EBPF_INVALID_ARGUMENT;
    };
    // A user-mode lookup's key and output may be one buffer: the core passes its request's
    // key and its reply's value, and a `METHOD_BUFFERED` request and reply are the same
    // memory (key at byte 17, value at byte 8). The provider's output is a `&mut [u8]`, the
    // only view of its bytes, so a key under it is copied out of the way first (at
    // PASSIVE_LEVEL: programs get no output).
    let copy;
    let key = if overlaps(key.as_ptr(), key.len(), out_value, out_size) {
        copy = match PoolArray::<u8>::try_new(key.len(), M::TAG) {
            Ok(mut copy) => {
                for (to, from) in copy.iter_mut().zip(key.iter()) {
                    *to = from;
                }
                copy
            }
            Err(e) => return e.ebpf_result(),
        };
        // SAFETY: the copy's bytes, alive until the end of this call.
        unsafe { Input::from_raw_parts(copy.as_ptr(), copy.len()) }
    } else {
        key
    };
    let out: &mut [u8] = if out_value.is_null() {
        &mut []
    } else {
        // SAFETY: the core's output buffer of `out_size` bytes, which neither view the
        // provider also gets reaches (the key is a copy if it lay there).
        unsafe { core::slice::from_raw_parts_mut(out_value, out_size) }
    };
    result(state.map.find(key, stored, out, flags))
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` share a byte (neither is empty or NULL).
fn overlaps(a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    a != 0
        && b != 0
        && a_len != 0
        && b_len != 0
        && a < b.saturating_add(b_len)
        && b < a.saturating_add(a_len)
}

unsafe extern "win64" fn update<M: Callbacks>(
    _binding: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    in_size: usize,
    in_value: *const u8,
    out_size: usize,
    out_value: *mut u8,
    flags: u32,
) -> ebpf_result_t {
    // SAFETY: as in `find`.
    let Some((state, key, value)) =
        (unsafe { element::<M>(map_context, key, key_size, in_value, in_size) })
    else {
        return EBPF_INVALID_ARGUMENT;
    };
    // NULL without `UPDATES_ORIGINAL_VALUE`: the core stores the value itself.
    let stored: &mut [u8] = if out_value.is_null() {
        &mut []
    } else {
        // SAFETY: the core's buffer for the stored value, `out_size` bytes.
        unsafe { core::slice::from_raw_parts_mut(out_value, out_size) }
    };
    result(state.map.update(key, value, stored, flags))
}

unsafe extern "win64" fn delete_element<M: Callbacks>(
    _binding: *mut c_void,
    map_context: *mut c_void,
    key_size: usize,
    key: *const u8,
    value_size: usize,
    value: *const u8,
    flags: u32,
) {
    // SAFETY: as in `find`.
    let element = unsafe { element::<M>(map_context, key, key_size, value, value_size) };
    if let Some((state, key, stored)) = element {
        state.map.delete_element(key, stored, flags);
    }
}

#[cfg(test)]
mod tests {
    use core::ffi::c_void;
    use core::ptr;
    use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

    use super::{CoreSide, LiveMaps, MAX_MAPS};

    fn context(n: usize) -> *mut c_void {
        ptr::without_provenance_mut(0x1000 + n * 16)
    }

    #[test]
    fn live_maps_are_found_by_address_until_removed_and_hold_at_most_max_maps() {
        let live = LiveMaps {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_MAPS],
        };
        assert!(!live.contains(ptr::null()), "NULL is never a live map");
        for n in 0..MAX_MAPS {
            assert!(live.insert(context(n)), "map {n}");
        }
        assert!(!live.insert(context(MAX_MAPS)), "one map too many");
        assert!(live.contains(context(7)) && !live.contains(context(MAX_MAPS)));
        live.remove(context(7));
        assert!(!live.contains(context(7)));
        assert!(
            live.insert(context(MAX_MAPS)),
            "a removed map's slot is free again"
        );
        assert!(live.contains(context(MAX_MAPS)));
    }

    #[test]
    fn a_client_without_a_lookup_keeps_the_one_published_before() {
        let core = CoreSide {
            map_context_offset: AtomicU64::new(0),
            find_element: AtomicPtr::new(ptr::null_mut()),
        };
        core.publish(48, context(1));
        core.publish(48, ptr::null_mut());
        assert_eq!(core.find_element.load(Ordering::Relaxed), context(1));
        assert_eq!(core.map_context_offset.load(Ordering::Relaxed), 48);
        core.publish(48, context(2));
        assert_eq!(core.find_element.load(Ordering::Relaxed), context(2));
    }
}
