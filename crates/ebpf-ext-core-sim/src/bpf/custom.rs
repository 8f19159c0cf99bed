//! Custom maps: the core's side of the map-information NPI (`ebpf_maps.c`, "Custom Maps").
//!
//! A map of a type the core does not have is backed by a provider: one NMR client per map
//! attaches to the provider whose `ebpf_map_provider_data_t` names that type (declining the
//! others), the provider's `preprocess_map_create` makes the map context and says how many
//! bytes the core stores per key, and every operation goes through the provider's callbacks.
//! The core-sim keeps the stored values itself (a hash map on the provider's base type). A
//! value replaced or deleted from user mode stays allocated until the map is freed, as the
//! core's epoch keeps it until no program that found it can still run.
//!
//! What the core checks and the core-sim checks alike: provider data version 1 and size 48,
//! base type hash, properties version 1 and size 25, dispatch version 1 (size 72 or 80, of
//! which only those bytes are read) with create, delete and associate set and not both
//! delete callbacks, every `total_size` at least its `size` (the newest core), client data
//! {1, 40, 40} with the map-context offset, `actual_value_size` non-zero (and equal to the
//! value size unless the provider updates the stored value, which then needs find, update
//! and a delete callback), and BPF-program operations (lookup, update, delete, push, pop,
//! peek) refused with `EBPF_OPERATION_NOT_SUPPORTED` when `updates_original_value` is set.
//! Without it the provider's find and update get no output buffer (NULL, size 0) and the
//! core stores and returns the caller's value itself; a program's lookup, update and delete
//! then go through the provider's callbacks with `EBPF_MAP_OPERATION_HELPER`, at the
//! program's IRQL, and its lookup returns the stored value, which the program may read and
//! write. A user-mode update goes through the provider first, then the base hash map
//! applies the update's flags (`BPF_NOEXIST`, `BPF_EXIST`) and its `max_entries`; an insert
//! it refuses is undone through the provider's delete callback (`EBPF_MAP_OPERATION_UPDATE`),
//! as the core undoes a failed insert. The provider's find
//! runs under no lock of the map's, as the core's does (the epoch keeps the value): a delete
//! or replace of the same key, its delete callback included, may run meanwhile.
//!
//! The provider's rundown: each map holds it until the map is deleted, so a provider's
//! deregistration waits until every map of its type is gone (the map client's detach stays
//! pending until then; the provider's callbacks keep working meanwhile, and the map's delete
//! runs them before it completes the detach). A provider dropped while a map of its type is
//! alive on the same thread therefore waits for ever, as on Windows.
//!
//! The core's client dispatch table gives the provider the lookup and the six epoch functions
//! (see the crate's `epoch` module). The provider's callbacks run inside an epoch of the
//! core's, as the core's user-mode operations and program runs do, except a map's teardown:
//! the delete callback of each entry left (`EBPF_MAP_OPERATION_MAP_CLEANUP`) and
//! `postprocess_map_delete` run outside any, as the core runs them from the map object's
//! free, an epoch work item that enters none (upstream's documentation says every provider
//! callback is protected; its code does not protect this one). A provider that frees epoch
//! memory there enters an epoch itself, or [`Contract::OutsideEpoch`](crate::Contract) stops
//! it. A map whose create fails is deleted inside the create's epoch, as the core deletes it
//! inside the request that made it.
//!
//! Not modelled: a program's `bpf_map_lookup_and_delete_elem` on a custom map that keeps the
//! caller's value (NULL; whether the core calls the provider's find and delete there is not
//! confirmed), and its push, pop and peek there (refused).

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr::{self, NonNull};
use std::collections::BTreeMap;
use std::sync::Mutex;

use ebpf_ext_sys::ebpf_extension::{
    BPF_MAP_TYPE_HASH, EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER, EBPF_MAP_CLIENT_DATA_HEADER,
    EBPF_MAP_OPERATION_HELPER, EBPF_MAP_OPERATION_MAP_CLEANUP, EBPF_MAP_OPERATION_UPDATE,
    ebpf_base_map_client_dispatch_table_t, ebpf_base_map_provider_dispatch_table_t,
    ebpf_base_map_provider_properties_t, ebpf_map_client_data_t, ebpf_map_provider_data_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_MAP_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_INVALID_ARGUMENT, EBPF_KEY_ALREADY_EXISTS,
    EBPF_KEY_NOT_FOUND, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::netioddk::{
    NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider, NmrClientDetachProviderComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS,
};

use super::helpers::current_program;
use super::maps::{BPF_EXIST, BPF_NOEXIST};
use super::vm::{Region, ValueSet};
use crate::epoch;
use crate::nmr::{NmrClient, Registration, lock};

/// Where, in the map object the core-sim passes to extension helpers, the provider's map
/// context is (`map_context_offset`).
pub(crate) const MAP_CONTEXT_OFFSET: usize = 48;

/// The core's client dispatch table: the lookup and the six epoch functions.
static CLIENT_TABLE: ebpf_base_map_client_dispatch_table_t =
    ebpf_base_map_client_dispatch_table_t {
        header: EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER,
        find_element_function: Some(find_element),
        epoch_enter: Some(epoch::epoch_enter),
        epoch_exit: Some(epoch::epoch_exit),
        epoch_allocate_with_tag: Some(epoch::epoch_allocate_with_tag),
        epoch_allocate_cache_aligned_with_tag: Some(epoch::epoch_allocate_cache_aligned_with_tag),
        epoch_free: Some(epoch::epoch_free),
        epoch_free_cache_aligned: Some(epoch::epoch_free_cache_aligned),
    };

/// The dispatch table the core-sim gives every custom map's client (what a map provider's
/// attach receives in `ebpf_map_client_data_t::base_client_table`): for tests that call the
/// core's lookup or epoch functions the way a provider does.
#[must_use]
pub fn map_client_dispatch_table() -> &'static ebpf_base_map_client_dispatch_table_t {
    &CLIENT_TABLE
}

/// `find_element_function`: the stored value of `key` in the map object `map` of the
/// running program. As the core requires, only inside an epoch ([`Contract::OutsideEpoch`]
/// otherwise: the value it returns may be freed once the epoch ends).
///
/// [`Contract::OutsideEpoch`]: crate::Contract::OutsideEpoch
unsafe extern "win64" fn find_element(
    map: *const c_void,
    key: *const u8,
    value: *mut *mut u8,
) -> ebpf_result_t {
    crate::epoch::require_in_epoch("find_element_function");
    if map.is_null() || key.is_null() || value.is_null() {
        return EBPF_INVALID_ARGUMENT;
    }
    let found = current_program(|program| {
        let map = program.map_by_object(map as u64)?;
        let custom = map.custom()?;
        let len = map.definition().key_size as usize;
        // SAFETY: the provider passes the key the program gave its helper (checked against
        // the key size by the helper's prototype).
        let key = unsafe { core::slice::from_raw_parts(key, len) };
        custom.stored_pointer(key)
    });
    match found {
        Some(pointer) => {
            // SAFETY: the provider's out slot (checked non-NULL).
            unsafe { value.write(pointer) };
            EBPF_SUCCESS
        }
        None => EBPF_KEY_NOT_FOUND,
    }
}

/// The provider a custom map's client attached to.
#[derive(Clone, Copy)]
struct Bound {
    binding: *mut c_void,
    dispatch: ebpf_base_map_provider_dispatch_table_t,
    updates_original_value: bool,
}

/// The NMR client of one custom map.
struct MapClient {
    map_type: u32,
    data: ebpf_map_client_data_t,
    bound: Mutex<Option<Bound>>,
    refusal: Mutex<Option<String>>,
    /// The provider's rundown as the core holds it for the map: NMR's binding handle, whether
    /// the map holds the rundown, and a detach left pending until the map releases it.
    rundown: Mutex<MapRundown>,
}

/// See [`MapClient::rundown`].
#[derive(Default)]
struct MapRundown {
    /// The map holds the provider's rundown (from before its `create` until it is deleted,
    /// or its create fails), so a detach waits for it.
    held: bool,
    /// A provider detach that waits for the map's delete (NMR's binding handle).
    pending: Option<usize>,
    /// NMR's binding handle of the attached provider.
    binding: Option<usize>,
}

// SAFETY: the client data points to the static client table; the provider's pointers are
// used only under the mutex, as NMR and the provider allow from any thread.
unsafe impl Send for MapClient {}
// SAFETY: as above.
unsafe impl Sync for MapClient {}

impl MapClient {
    /// Releases the map's rundown reference on its provider: a detach that waited for it
    /// completes, and one that comes later (the client's own deregistration) at once.
    fn release(&self) {
        let pending = {
            let mut rundown = lock(&self.rundown);
            rundown.held = false;
            rundown.pending.take()
        };
        if let Some(binding) = pending {
            *lock(&self.bound) = None;
            lock(&self.rundown).binding = None;
            // SAFETY: the binding handle NMR passed at attach, whose detach this client left
            // pending; completed once (`pending` is taken under the lock).
            unsafe { NmrClientDetachProviderComplete(binding as HANDLE) };
        }
    }

    /// The core's client of one custom map of `map_type`: client data {1, 40, 40} with the
    /// map-context offset and the core's dispatch table; not yet bound.
    fn new(map_type: u32) -> Self {
        MapClient {
            map_type,
            data: ebpf_map_client_data_t {
                header: EBPF_MAP_CLIENT_DATA_HEADER,
                map_context_offset: MAP_CONTEXT_OFFSET as u64,
                base_client_table: &raw const CLIENT_TABLE,
            },
            bound: Mutex::new(None),
            refusal: Mutex::new(None),
            rundown: Mutex::new(MapRundown::default()),
        }
    }

    /// Checks a provider as the core's map client attach does; `Err(None)` declines it
    /// silently (another map type).
    ///
    /// # Safety
    /// `provider` is NULL or NMR's registration instance.
    unsafe fn check(
        &self,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> Result<Bound, Option<String>> {
        // SAFETY: the caller's precondition.
        let instance = unsafe { provider.as_ref() }.ok_or(None)?;
        let data = instance
            .NpiSpecificCharacteristics
            .cast::<ebpf_map_provider_data_t>();
        if data.is_null() {
            return Err(Some("no provider data".into()));
        }
        // SAFETY: non-NULL provider data; the header is read first.
        let header = unsafe { data.cast::<ebpf_extension_header_t>().read_unaligned() };
        if header.version != 1
            || header.size != size_of::<ebpf_map_provider_data_t>()
            || header.total_size < header.size
        {
            return Err(Some(format!("provider data header {header:?}")));
        }
        // SAFETY: a version-1 provider data of full size (checked): integers and pointers.
        let data = unsafe { data.read_unaligned() };
        if data.map_type != self.map_type {
            return Err(None);
        }
        if data.base_map_type != BPF_MAP_TYPE_HASH {
            return Err(Some(format!("base map type {}", data.base_map_type)));
        }
        // The provider's objects are read through raw pointers, never as references: a table
        // may be shorter than ours, and a `bool` may hold any byte.
        let properties = data.base_properties;
        if properties.is_null() {
            return Err(Some("no properties".into()));
        }
        // SAFETY: the provider's properties (non-NULL), alive while registered; the header
        // first.
        let h = unsafe {
            properties
                .cast::<ebpf_extension_header_t>()
                .read_unaligned()
        };
        if h.version != 1 || h.size != 25 || h.total_size < h.size {
            return Err(Some(format!("properties header {h:?}")));
        }
        // SAFETY: 25 bytes (checked), so the flag at offset 24 is there; read as a byte.
        let updates_original_value = unsafe {
            properties
                .cast::<u8>()
                .wrapping_add(offset_of!(
                    ebpf_base_map_provider_properties_t,
                    updates_original_value
                ))
                .read()
        } != 0;
        let table = data.base_provider_table;
        if table.is_null() {
            return Err(Some("no dispatch table".into()));
        }
        // SAFETY: the provider's dispatch table (non-NULL), alive while registered; the
        // header first.
        let h = unsafe { table.cast::<ebpf_extension_header_t>().read_unaligned() };
        if h.version != 1 || !(h.size == 72 || h.size == 80) || h.total_size < h.size {
            return Err(Some(format!("dispatch header {h:?}")));
        }
        // As the core: only the bytes the header gives (a 72-byte table has no
        // `postprocess_map_delete_element`), the rest NULL.
        let mut dispatch = ebpf_base_map_provider_dispatch_table_t {
            header: h,
            preprocess_map_create: None,
            postprocess_map_delete: None,
            preprocess_associate_program_type: None,
            postprocess_map_find_element: None,
            preprocess_map_update_element: None,
            preprocess_map_delete_element: None,
            postprocess_map_delete_element: None,
        };
        // SAFETY: the provider's table is readable for `h.size` (72 or 80) bytes, at most
        // the size of ours; both are plain function pointers, NULL or not.
        unsafe {
            ptr::copy_nonoverlapping(table.cast::<u8>(), (&raw mut dispatch).cast::<u8>(), h.size);
        }
        if dispatch.preprocess_map_create.is_none()
            || dispatch.postprocess_map_delete.is_none()
            || dispatch.preprocess_associate_program_type.is_none()
            || (dispatch.preprocess_map_delete_element.is_some()
                && dispatch.postprocess_map_delete_element.is_some())
        {
            return Err(Some("dispatch table misses a required callback".into()));
        }
        Ok(Bound {
            binding: ptr::null_mut(),
            dispatch,
            updates_original_value,
        })
    }
}

impl NmrClient for MapClient {
    fn attach_provider(
        &self,
        binding: HANDLE,
        context: *mut c_void,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> NTSTATUS {
        // SAFETY: NMR passes its provider registration instance.
        let mut bound = match unsafe { self.check(provider) } {
            Ok(bound) => bound,
            Err(None) => return STATUS_NOT_SUPPORTED,
            Err(Some(why)) => {
                *lock(&self.refusal) = Some(why);
                return STATUS_NOT_SUPPORTED;
            }
        };
        if lock(&self.bound).is_some() {
            return STATUS_INVALID_PARAMETER;
        }
        let mut provider_dispatch: *const c_void = ptr::null();
        // SAFETY: called from `ClientAttachProvider` with NMR's handle; the binding context is
        // this registration's context; no client dispatch (as the core); local out slots.
        let status = unsafe {
            NmrClientAttachProvider(
                binding,
                context,
                ptr::null(),
                &raw mut bound.binding,
                &raw mut provider_dispatch,
            )
        };
        if NT_SUCCESS(status) {
            *lock(&self.bound) = Some(bound);
            lock(&self.rundown).binding = Some(binding as usize);
        }
        status
    }

    /// As the core: the map holds a rundown reference on its provider until the map is
    /// deleted, and the client's detach waits for it. So while the map exists the detach is
    /// left pending (the provider's callbacks keep working, and its deregistration waits), and
    /// the map's delete completes it after the provider's delete callbacks.
    fn detach_provider(&self) -> NTSTATUS {
        let mut rundown = lock(&self.rundown);
        if rundown.held {
            rundown.pending = rundown.binding;
            if rundown.pending.is_some() {
                return STATUS_PENDING;
            }
        }
        rundown.binding = None;
        drop(rundown);
        *lock(&self.bound) = None;
        STATUS_SUCCESS
    }
}

/// A custom map: its client, the provider's map context and the stored values.
pub(crate) struct CustomMap {
    registration: Registration<MapClient>,
    bound: Bound,
    context: *mut c_void,
    key_size: usize,
    value_size: usize,
    /// What the provider's `preprocess_map_create` said it stores per key.
    actual_size: usize,
    stored_size: usize,
    max_entries: usize,
    entries: Mutex<BTreeMap<Vec<u8>, Stored>>,
    /// Values replaced or deleted while the map lives: a program may still hold a pointer
    /// to one (`find_element_function`), which the core keeps valid until its epoch ends.
    /// Freed with the map, when no program can run on it.
    retired: Mutex<Vec<Stored>>,
}

/// The bytes the core stores for one key, reached through `UnsafeCell::raw_get` as the
/// built-in maps reach their values: the pointer `find_element_function` hands a program
/// stays valid, and no reference the map makes later (a lookup, a replacement) covers the
/// bytes the program accesses through it. Held by a raw pointer (from `Box::leak`, freed on
/// drop), not a `Box`: moving the value from the map to the retired list must not assert
/// a unique hold on bytes a program or a running find still uses.
struct Stored(NonNull<[UnsafeCell<u8>]>);

impl Drop for Stored {
    fn drop(&mut self) {
        // SAFETY: a leaked box (`zeroed`), given back once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl Stored {
    fn zeroed(len: usize) -> Self {
        let bytes: Box<[UnsafeCell<u8>]> = (0..len).map(|_| UnsafeCell::new(0)).collect();
        Stored(NonNull::from(Box::leak(bytes)))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.0.as_ptr().cast::<UnsafeCell<u8>>())
    }

    /// Copies `bytes` (at most `len()`) to the front.
    fn write(&self, bytes: &[u8]) {
        // SAFETY: at most `len()` bytes into this allocation, from a slice that is not in it.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.as_mut_ptr(),
                bytes.len().min(self.len()),
            );
        }
    }

    /// Where it is, to use without the map's lock.
    fn at(&self) -> StoredAt {
        StoredAt {
            address: self.as_mut_ptr(),
            len: self.len(),
        }
    }
}

/// A stored value's place, used after the map's lock is released: the core calls the
/// provider's find without a lock (the epoch keeps the value), so a delete or replace of the
/// same key may run meanwhile. The allocation stays valid: a value taken out of the map is
/// retired, never freed, until the map drops.
#[derive(Clone, Copy)]
struct StoredAt {
    address: *mut u8,
    len: usize,
}

impl StoredAt {
    /// Copies the front into `out` (at most `len` bytes).
    fn read(self, out: &mut [u8]) {
        let len = out.len().min(self.len);
        // SAFETY: `len` bytes of a stored value's allocation (never freed while the map
        // lives) into a buffer that is not in it.
        unsafe { ptr::copy_nonoverlapping(self.address, out.as_mut_ptr(), len) };
    }
}

// SAFETY: the provider's context and callbacks may be used from any thread (the core does);
// the entries are behind a mutex.
unsafe impl Send for CustomMap {}
// SAFETY: as above.
unsafe impl Sync for CustomMap {}

impl CustomMap {
    /// Creates a map of a provider's type, as `ebpf_custom_map_create` does.
    pub(crate) fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Result<Self, String> {
        let client = MapClient::new(map_type);
        let registration = Registration::register(EBPF_MAP_INFO_EXTENSION_IID, client, |c| {
            (&raw const c.data).cast()
        })
        .map_err(|e| format!("map client: {e}"))?;
        let Some(bound) = *lock(&registration.client().bound) else {
            let why = lock(&registration.client().refusal).clone();
            return Err(format!(
                "no provider of map type {map_type} (EBPF_EXTENSION_FAILED_TO_LOAD {EBPF_EXTENSION_FAILED_TO_LOAD}){}",
                why.map_or(String::new(), |w| format!(": refused one: {w}"))
            ));
        };
        // As the core: the map takes its provider's rundown before it calls `create`, and
        // holds it until the map is deleted (or its create fails). A provider that detached
        // in between is no provider.
        {
            let mut rundown = lock(&registration.client().rundown);
            if rundown.binding.is_none() {
                return Err(format!(
                    "the provider of map type {map_type} detached (EBPF_EXTENSION_FAILED_TO_LOAD {EBPF_EXTENSION_FAILED_TO_LOAD})"
                ));
            }
            rundown.held = true;
        }
        let Some(create) = bound.dispatch.preprocess_map_create else {
            registration.client().release();
            return Err("no create".into());
        };
        let (mut actual, mut context) = (0u32, ptr::null_mut::<c_void>());
        // SAFETY: the provider's callback with its binding context and our out slots.
        let result = epoch::protected(|| unsafe {
            create(
                bound.binding,
                map_type,
                key_size,
                value_size,
                max_entries,
                &raw mut actual,
                &raw mut context,
            )
        });
        if result != EBPF_SUCCESS {
            registration.client().release();
            return Err(format!(
                "preprocess_map_create returned {result} (the core reports EBPF_EXTENSION_FAILED_TO_LOAD)"
            ));
        }
        let map = CustomMap {
            registration,
            bound,
            context,
            key_size: key_size as usize,
            value_size: value_size as usize,
            actual_size: actual as usize,
            stored_size: actual.max(value_size) as usize,
            max_entries: max_entries as usize,
            entries: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(Vec::new()),
        };
        let d = &bound.dispatch;
        let refused = if actual == 0 {
            Some(format!(
                "actual_value_size 0 (EBPF_INVALID_ARGUMENT {EBPF_INVALID_ARGUMENT})"
            ))
        } else if !bound.updates_original_value && actual != value_size {
            Some(format!(
                "actual_value_size {actual} differs from the value size {value_size}"
            ))
        } else if bound.updates_original_value
            && (d.postprocess_map_find_element.is_none()
                || d.preprocess_map_update_element.is_none()
                || (d.postprocess_map_delete_element.is_none()
                    && d.preprocess_map_delete_element.is_none()))
        {
            Some("updates_original_value without find, update and delete callbacks".into())
        } else {
            None
        };
        match refused {
            // The core deletes the map it could not finish inside the request's epoch.
            Some(why) => {
                epoch::protected(|| drop(map));
                Err(why)
            }
            None => Ok(map),
        }
    }

    /// The provider's map context (what the core keeps at [`MAP_CONTEXT_OFFSET`]).
    pub(crate) fn context(&self) -> *mut c_void {
        self.context
    }

    /// `preprocess_associate_program_type`, when a program using the map loads.
    pub(crate) fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
        let associate = self
            .bound
            .dispatch
            .preprocess_associate_program_type
            .ok_or(EBPF_INVALID_ARGUMENT)?;
        // SAFETY: the provider's callback with its binding and map context.
        let result = epoch::protected(|| unsafe {
            associate(self.bound.binding, self.context, program_type)
        });
        if result == EBPF_SUCCESS {
            Ok(())
        } else {
            Err(result)
        }
    }

    /// Whether the core refuses BPF programs' operations on the map through its helpers
    /// (`updates_original_value`).
    pub(crate) fn refuses_programs(&self) -> bool {
        self.bound.updates_original_value
    }

    /// Whether the provider is still attached (its callbacks may be called).
    fn live(&self) -> bool {
        lock(&self.registration.client().bound).is_some()
    }

    /// Hands `stored` (removed) to the provider's delete callback: inside an epoch of the
    /// core's, except for a map's cleanup (`EBPF_MAP_OPERATION_MAP_CLEANUP`, which the core
    /// calls from the map's free, outside any). The key is copied into a buffer of the call's
    /// own: the provider reads buffers as program memory, which is writable (see
    /// [`writable`]).
    fn delete_callback(&self, key: &[u8], stored: &Stored, flags: u32) {
        if !self.live() {
            return;
        }
        let mut key = writable(key);
        let d = &self.bound.dispatch;
        let mut call = || {
            if let Some(delete) = d.postprocess_map_delete_element {
                // SAFETY: the provider's callback; buffers of the sizes passed.
                unsafe {
                    delete(
                        self.bound.binding,
                        self.context,
                        key.len(),
                        key.as_mut_ptr(),
                        stored.len(),
                        stored.as_mut_ptr(),
                        flags,
                    );
                }
            } else if let Some(delete) = d.preprocess_map_delete_element {
                // SAFETY: as above.
                let _ = unsafe {
                    delete(
                        self.bound.binding,
                        self.context,
                        key.len(),
                        key.as_mut_ptr(),
                        stored.len(),
                        stored.as_mut_ptr(),
                        flags,
                    )
                };
            }
        };
        if flags & EBPF_MAP_OPERATION_MAP_CLEANUP == 0 {
            epoch::protected(call);
        } else {
            call();
        }
    }

    /// A user-mode update with `flags` (`BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST`): the provider
    /// turns `value` into what is stored, then the base hash map takes it. When the hash map
    /// refuses it (the key's presence against `flags`, or the map full), the provider's delete
    /// callback undoes what its update made (`EBPF_MAP_OPERATION_UPDATE`), as the core does
    /// when its insert fails.
    ///
    /// `operation` is what the provider's callbacks get as their flags: 0 from user mode,
    /// `EBPF_MAP_OPERATION_HELPER` from a program.
    pub(crate) fn update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        operation: u32,
    ) -> Result<(), ebpf_result_t> {
        if key.len() != self.key_size || value.len() != self.value_size || flags > BPF_EXIST {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        let stored = Stored::zeroed(self.stored_size);
        // Without `updates_original_value` the provider gets no buffer (NULL, 0) and the core
        // stores the value itself.
        let replaces = self.bound.updates_original_value;
        let update = self.bound.dispatch.preprocess_map_update_element;
        if !replaces || update.is_none() {
            stored.write(value);
        }
        if let Some(update) = update {
            let (mut key, mut value) = (writable(key), writable(value));
            // The core hands the provider a zeroed buffer of the size it asked to store.
            let (out, out_size) = if replaces {
                (stored.as_mut_ptr(), self.actual_size)
            } else {
                (ptr::null_mut(), 0)
            };
            // SAFETY: the provider's callback; buffers of the sizes passed (the output NULL
            // with size 0 when the provider does not replace the value).
            let result = epoch::protected(|| unsafe {
                update(
                    self.bound.binding,
                    self.context,
                    key.len(),
                    key.as_mut_ptr(),
                    value.len(),
                    value.as_mut_ptr(),
                    out_size,
                    out,
                    operation,
                )
            });
            if result != EBPF_SUCCESS {
                return Err(result);
            }
        }
        let mut entries = lock(&self.entries);
        let exists = entries.contains_key(key);
        let refused = match (exists, flags) {
            (true, BPF_NOEXIST) => Some(EBPF_KEY_ALREADY_EXISTS),
            (false, BPF_EXIST) => Some(EBPF_KEY_NOT_FOUND),
            (false, _) if entries.len() >= self.max_entries => Some(EBPF_NO_MEMORY),
            _ => None,
        };
        if let Some(result) = refused {
            drop(entries);
            if update.is_some() {
                self.delete_callback(key, &stored, EBPF_MAP_OPERATION_UPDATE | operation);
            }
            return Err(result);
        }
        let old = entries.insert(key.to_vec(), stored);
        drop(entries);
        if let Some(old) = old {
            self.delete_callback(key, &old, EBPF_MAP_OPERATION_UPDATE | operation);
            lock(&self.retired).push(old);
        }
        Ok(())
    }

    /// Calls the provider's find on `stored` (the value under `key`) with `flags`, its output
    /// `out` (or none: NULL, 0); success if the provider has no find.
    fn find_callback(
        &self,
        key: &[u8],
        stored: StoredAt,
        out: Option<&mut [u8]>,
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        let mut key = writable(key);
        let (out_ptr, out_size) =
            out.map_or((ptr::null_mut(), 0), |out| (out.as_mut_ptr(), out.len()));
        // SAFETY: a key of its own, and the caller's output or none.
        unsafe {
            self.find_raw(
                key.as_mut_ptr(),
                key.len(),
                stored,
                out_ptr,
                out_size,
                flags,
            )
        }
    }

    /// Calls the provider's find with the key and output where the caller has them (which
    /// may be one buffer, as in the core's lookup IOCTL); success if the provider has no find.
    ///
    /// # Safety
    /// `key` and `out` are NULL with size 0 or hold their sizes of writable bytes.
    unsafe fn find_raw(
        &self,
        key: *mut u8,
        key_size: usize,
        stored: StoredAt,
        out: *mut u8,
        out_size: usize,
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        let Some(find) = self.bound.dispatch.postprocess_map_find_element else {
            return Ok(());
        };
        // SAFETY: the provider's callback; buffers of the sizes passed (the caller's
        // contract; the output NULL with size 0 when there is none).
        let result = epoch::protected(|| unsafe {
            find(
                self.bound.binding,
                self.context,
                key_size,
                key,
                stored.len,
                stored.address,
                out_size,
                out,
                flags,
            )
        });
        if result == EBPF_SUCCESS {
            Ok(())
        } else {
            Err(result)
        }
    }

    /// A user-mode lookup: the provider turns what is stored into the caller's value.
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ebpf_result_t> {
        // The core passes its request's key and its reply's value, and a `METHOD_BUFFERED`
        // request and reply are one buffer: the key at byte 17 (after the 8-byte header, the
        // handle and `find_and_delete`), the value at byte 8 (after the header). So the
        // provider's output may cover the key.
        const KEY_AT: usize = 17;
        const VALUE_AT: usize = 8;
        // The provider's find runs without the lock, as the core's does.
        let Some(stored) = lock(&self.entries).get(key).map(Stored::at) else {
            return Ok(None);
        };
        // Without `updates_original_value` the provider gets no output buffer (NULL, 0) and
        // the core returns what it stores.
        let replaces = self.bound.updates_original_value;
        if !replaces || self.bound.dispatch.postprocess_map_find_element.is_none() {
            self.find_callback(key, stored, None, 0)?;
            let mut out = vec![0u8; self.value_size];
            stored.read(&mut out);
            return Ok(Some(out));
        }
        let mut buffer = vec![0u8; (KEY_AT + key.len()).max(VALUE_AT + self.value_size)];
        buffer[KEY_AT..KEY_AT + key.len()].copy_from_slice(key);
        let base = buffer.as_mut_ptr();
        let (key_at, value_at) = (base.wrapping_add(KEY_AT), base.wrapping_add(VALUE_AT));
        // SAFETY: both ranges lie inside `buffer` (sized for both above).
        unsafe { self.find_raw(key_at, key.len(), stored, value_at, self.value_size, 0) }?;
        Ok(Some(buffer[VALUE_AT..VALUE_AT + self.value_size].to_vec()))
    }

    /// A delete: from user mode (`operation` 0) or a program (`EBPF_MAP_OPERATION_HELPER`),
    /// which the provider's delete callback gets as its flags.
    pub(crate) fn delete(&self, key: &[u8], operation: u32) -> Result<(), ebpf_result_t> {
        let old = lock(&self.entries).remove(key).ok_or(EBPF_KEY_NOT_FOUND)?;
        self.delete_callback(key, &old, operation);
        lock(&self.retired).push(old);
        Ok(())
    }

    /// A program's `bpf_map_lookup_elem` on a map that keeps the caller's values: the
    /// provider's find sees the stored value (`EBPF_MAP_OPERATION_HELPER`, no output buffer);
    /// the address of the stored value, which the program may read and write, or `None` when
    /// the key is absent or the provider refuses.
    pub(crate) fn program_lookup(&self, key: &[u8]) -> Option<*mut u8> {
        // The provider's find runs without the lock, as the core's does.
        let stored = lock(&self.entries).get(key).map(Stored::at)?;
        self.find_callback(key, stored, None, EBPF_MAP_OPERATION_HELPER)
            .ok()?;
        Some(stored.address)
    }

    /// The keys, sorted.
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        lock(&self.entries).keys().cloned().collect()
    }

    /// Where the stored value of `key` is (for `find_element_function`).
    fn stored_pointer(&self, key: &[u8]) -> Option<*mut u8> {
        lock(&self.entries).get(key).map(Stored::as_mut_ptr)
    }
}

impl ValueSet for CustomMap {
    /// Stored values, and the ones replaced or deleted since (a program may still hold a
    /// pointer to one, which the core's epoch keeps valid).
    fn holds(&self, address: u64, len: u64) -> bool {
        let inside = |stored: &Stored| {
            let start = stored.as_mut_ptr() as u64;
            Region::flat(start..start + stored.len() as u64)
                .holds(address, len)
                .is_some()
        };
        lock(&self.entries).values().any(inside) || lock(&self.retired).iter().any(inside)
    }
}

/// The map's teardown, as the core's object free runs it: outside any epoch of the core's
/// (see the module's docs), each entry left handed to the delete callback with
/// `EBPF_MAP_OPERATION_MAP_CLEANUP`, then `postprocess_map_delete`. It runs on the thread
/// that drops the last reference (the core defers it to a work item); a test that drops a map
/// inside an epoch of its own runs the teardown inside that epoch, which the core never does.
impl Drop for CustomMap {
    fn drop(&mut self) {
        let entries = core::mem::take(&mut *lock(&self.entries));
        for (key, stored) in &entries {
            self.delete_callback(key, stored, EBPF_MAP_OPERATION_MAP_CLEANUP);
        }
        if let Some(delete) = self.bound.dispatch.postprocess_map_delete
            && self.live()
        {
            // SAFETY: the provider's callback, once, with its map context.
            unsafe { delete(self.bound.binding, self.context) };
        }
        self.registration.client().release();
    }
}

/// A copy of `bytes` that the provider's callbacks may be handed: they read buffers as program
/// memory (`ebpf_ext_program_info::Input`), whose atomic loads need memory that may be written,
/// as the core's buffers (pool or stack) are, never a `&[u8]`'s.
fn writable(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use core::ffi::c_void;
    use core::mem::size_of;
    use core::ptr;

    use ebpf_ext_sys::ebpf_extension::{
        BPF_MAP_TYPE_HASH, EBPF_MAP_PROVIDER_DATA_HEADER, ebpf_base_map_provider_properties_t,
        ebpf_map_provider_data_t,
    };
    use ebpf_ext_sys::ebpf_result::{EBPF_SUCCESS, ebpf_result_t};
    use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
    use ebpf_ext_sys::netioddk::NPI_REGISTRATION_INSTANCE;
    use ebpf_ext_sys::ntdef::GUID;

    use super::MapClient;

    const MAP_TYPE: u32 = 0x7000;

    unsafe extern "win64" fn create(
        _: *mut c_void,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: *mut u32,
        _: *mut *mut c_void,
    ) -> ebpf_result_t {
        EBPF_SUCCESS
    }
    unsafe extern "win64" fn delete_map(_: *mut c_void, _: *mut c_void) {}
    unsafe extern "win64" fn associate(
        _: *mut c_void,
        _: *mut c_void,
        _: *const GUID,
    ) -> ebpf_result_t {
        EBPF_SUCCESS
    }

    /// What `check` makes of a dispatch table of `size` bytes (its header says so), laid in
    /// the first `size` bytes of a 10-word block whose other words are `0x5a5a…`, as a
    /// reader past the table would take for a function.
    fn check_table_of(size: usize) -> Result<Option<usize>, Option<String>> {
        let mut table = [0x5a5a_5a5a_5a5a_5a5a_usize; 10];
        let header = ebpf_extension_header_t {
            version: 1,
            size,
            total_size: size,
        };
        // SAFETY: the header's 24 bytes at the front of an 80-byte block.
        unsafe {
            ptr::from_mut(&mut table)
                .cast::<ebpf_extension_header_t>()
                .write(header);
        };
        table[3] = create as *const () as usize;
        table[4] = delete_map as *const () as usize;
        table[5] = associate as *const () as usize;
        table[6..size / 8].fill(0);
        let properties = ebpf_base_map_provider_properties_t {
            header: ebpf_extension_header_t {
                version: 1,
                size: 25,
                total_size: size_of::<ebpf_base_map_provider_properties_t>(),
            },
            updates_original_value: false,
        };
        let data = ebpf_map_provider_data_t {
            header: EBPF_MAP_PROVIDER_DATA_HEADER,
            map_type: MAP_TYPE,
            base_map_type: BPF_MAP_TYPE_HASH,
            base_properties: &raw const properties,
            base_provider_table: table.as_ptr().cast(),
        };
        let instance = NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: 40,
            NpiId: ptr::null(),
            ModuleId: ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: (&raw const data).cast(),
        };
        let client = MapClient::new(MAP_TYPE);
        // SAFETY: a registration instance whose objects live to the end of this function.
        let bound = unsafe { client.check(&raw const instance) }?;
        Ok(bound
            .dispatch
            .postprocess_map_delete_element
            .map(|f| f as *const () as usize))
    }

    #[test]
    fn a_72_byte_dispatch_table_is_read_to_its_end_and_no_further() {
        assert_eq!(
            check_table_of(72),
            Ok(None),
            "the 72-byte table has no postprocess_map_delete_element: the word after it is not read"
        );
        assert_eq!(check_table_of(80), Ok(None), "the 80-byte table's own NULL");
        assert!(
            check_table_of(64).is_err(),
            "a table of another size is refused"
        );
    }
}
