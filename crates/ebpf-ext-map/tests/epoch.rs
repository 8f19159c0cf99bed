//! Object maps (`ObjectMap`, `Objects`): custom maps whose stored values point at objects in
//! the core's epoch memory (as upstream's sample map does), allocated on update, read on
//! lookup, freed when the core deletes or replaces the value, and given back to the pool only
//! once no epoch that could still read them remains. Against core-sim's epoch functions.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use std::sync::mpsc;

use ebpf_ext_core_sim::bpf::{
    BPF_NOEXIST, BpfMap, MapDefinition, MapError, map_client_dispatch_table,
};
use ebpf_ext_core_sim::{Contract, EpochMemory, epoch_memory};
use ebpf_ext_map::{CustomMap, Input, MapProvider, ObjectMap, Objects};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_KEY_ALREADY_EXISTS, EBPF_NO_MEMORY, ebpf_result_t,
};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_usersim::{Fault, Kernel, expect_bugcheck};

const TAG: PoolTag = PoolTag::new(*b"MpEp");
const PROVIDER_MODULE: GUID = GUID::from_u128(0x3a9c_0004_0000_4000_8000_0000_0000_0001);

tracelogging::define_provider!(
    TRACE,
    "MapEpochTestProvider",
    id("6f1d2b7a-4c3e-4a90-b5d8-1e2f3a4b5c6d")
);

/// A map of 8-byte values, each kept as an `O` in epoch memory (the SDK's [`Objects`]).
#[derive(Debug)]
struct Kept<O>(core::marker::PhantomData<O>);

/// What a [`Kept`] map keeps per key.
trait Object: Copy + Send + Sync + core::fmt::Debug + 'static {
    const MAP_TYPE: u32;
    fn new(value: u64) -> Self;
    fn value(self) -> u64;
}

/// An object of the core's plain epoch allocator.
#[derive(Debug, Clone, Copy)]
struct Plain(u64);

impl Object for Plain {
    const MAP_TYPE: u32 = 4301;
    fn new(value: u64) -> Self {
        Plain(value)
    }
    fn value(self) -> u64 {
        self.0
    }
}

/// An object aligned to a cache line: from the core's cache-aligned allocator.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Wide(u64);

impl Object for Wide {
    const MAP_TYPE: u32 = 4302;
    fn new(value: u64) -> Self {
        Wide(value)
    }
    fn value(self) -> u64 {
        self.0
    }
}

impl<O: Object> ObjectMap for Kept<O> {
    const MAP_TYPE: u32 = O::MAP_TYPE;
    const TAG: PoolTag = TAG;
    type Object = O;

    fn create(_: u32, value_size: u32, _: u32) -> Result<Self, ebpf_result_t> {
        if value_size != 8 {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        Ok(Kept(core::marker::PhantomData))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn make(&self, _: Input<'_>, value: Input<'_>, _: u32) -> Result<O, ebpf_result_t> {
        let mut bytes = [0u8; 8];
        if !value.read_at(0, &mut bytes) {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        Ok(O::new(u64::from_le_bytes(bytes)))
    }

    fn read(&self, object: &O, out: &mut [u8], _: u32) -> Result<(), ebpf_result_t> {
        let out = out.get_mut(..8).ok_or(EBPF_INVALID_ARGUMENT)?;
        out.copy_from_slice(&object.value().to_le_bytes());
        Ok(())
    }
}

fn objects() -> BpfMap {
    objects_of(Plain::MAP_TYPE)
}

fn objects_of(map_type: u32) -> BpfMap {
    BpfMap::create(&MapDefinition {
        name: "objects".into(),
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        initial_data: None,
    })
    .expect("create")
}

fn lookup(map: &BpfMap, key: u32) -> Option<u64> {
    let value = map.lookup(&key.to_le_bytes()).expect("lookup")?;
    Some(u64::from_le_bytes(value.try_into().expect("8 bytes")))
}

fn update(map: &BpfMap, key: u32, value: u64) -> Result<(), MapError> {
    map.update(&key.to_le_bytes(), &value.to_le_bytes(), 0)
}

#[test]
fn objects_live_in_epoch_memory_and_go_with_their_values() {
    let kernel = Kernel::new();
    let provider =
        MapProvider::<Objects<Kept<Plain>>>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = objects();
    let state = kernel.pool_outstanding_with_tag("MpEp");
    update(&map, 1, 10).expect("update");
    update(&map, 2, 20).expect("update");
    assert_eq!((lookup(&map, 1), lookup(&map, 2)), (Some(10), Some(20)));
    assert_eq!(
        kernel.pool_outstanding_with_tag("MpEp"),
        state + 2,
        "one object per key, of the map's tag"
    );
    update(&map, 1, 11).expect("replace");
    assert_eq!(lookup(&map, 1), Some(11));
    assert_eq!(
        epoch_memory(),
        EpochMemory {
            allocated: 3,
            freed: 1,
            reclaimed: 1
        },
        "the replaced object is freed, and given back once its epoch ended"
    );
    map.delete(&2u32.to_le_bytes()).expect("delete");
    assert_eq!(lookup(&map, 2), None);
    assert_eq!(epoch_memory().freed, 2);
    drop(map);
    assert_eq!(
        epoch_memory(),
        EpochMemory {
            allocated: 3,
            freed: 3,
            reclaimed: 3
        },
        "the map's cleanup frees the rest"
    );
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn an_object_replaced_while_another_thread_is_in_an_epoch_stays_until_it_leaves() {
    let kernel = Kernel::new();
    let provider =
        MapProvider::<Objects<Kept<Plain>>>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = objects();
    update(&map, 1, 10).expect("update");
    let (entered_tx, entered_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    // A reader inside an epoch, as a program that found the object would be.
    let reader = kernel.spawn(move || {
        let table = map_client_dispatch_table();
        let (enter, exit) = (
            table.epoch_enter.expect("enter"),
            table.epoch_exit.expect("exit"),
        );
        let mut state = [0u64; 4];
        // SAFETY: 32 bytes of this frame, at one address until the exit.
        unsafe { enter(state.as_mut_ptr().cast()) };
        entered_tx.send(()).expect("main waits");
        leave_rx.recv().expect("main says when");
        // SAFETY: the state enter was given.
        unsafe { exit(state.as_mut_ptr().cast()) };
    });
    entered_rx.recv().expect("the reader entered");
    let before = kernel.pool_outstanding_with_tag("MpEp");
    update(&map, 1, 11).expect("replace");
    assert_eq!(lookup(&map, 1), Some(11));
    assert_eq!(
        epoch_memory().pending(),
        1,
        "the reader may still read the old object"
    );
    assert_eq!(
        kernel.pool_outstanding_with_tag("MpEp"),
        before + 1,
        "old and new object both allocated"
    );
    leave_tx.send(()).expect("the reader waits");
    reader.join().expect("reader");
    assert_eq!(
        epoch_memory().pending(),
        0,
        "given back when the reader left"
    );
    assert_eq!(kernel.pool_outstanding_with_tag("MpEp"), before);
    drop(map);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn an_object_the_pool_cannot_hold_fails_the_update_and_keeps_the_old_value() {
    let kernel = Kernel::new();
    let provider =
        MapProvider::<Objects<Kept<Plain>>>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = objects();
    update(&map, 1, 10).expect("update");
    kernel.inject(Fault::Allocation(1));
    assert_eq!(update(&map, 1, 11), Err(MapError::Result(EBPF_NO_MEMORY)));
    assert_eq!(lookup(&map, 1), Some(10));
    assert_eq!(epoch_memory().live(), 1);
    drop(map);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn every_allocation_failure_around_an_object_map_is_clean() {
    let points = ebpf_ext_usersim::sweep_allocation_failures(|_| {
        let Ok(provider) = MapProvider::<Objects<Kept<Plain>>>::register(PROVIDER_MODULE, TAG)
        else {
            return;
        };
        if let Ok(map) = BpfMap::create(&MapDefinition {
            name: "objects".into(),
            map_type: Plain::MAP_TYPE,
            key_size: 4,
            value_size: 8,
            max_entries: 16,
            initial_data: None,
        }) {
            for (key, value) in [(1u32, 10u64), (1, 11), (2, 20)] {
                let _ = map.update(&key.to_le_bytes(), &value.to_le_bytes(), 0);
            }
            let _ = map.lookup(&1u32.to_le_bytes());
            let _ = map.delete(&2u32.to_le_bytes());
            drop(map);
        }
        drop(provider);
    });
    assert!(points > 4, "{points} allocations");
}

/// The SDK picks the allocator by the object's alignment (it refuses memory not aligned for
/// the object), and frees with the matching free (core-sim stops the machine on a mismatch:
/// `EpochMemoryInvalid`).
#[test]
fn objects_aligned_to_a_cache_line_come_from_the_cache_aligned_allocator() {
    let kernel = Kernel::new();
    let provider =
        MapProvider::<Objects<Kept<Wide>>>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = objects_of(Wide::MAP_TYPE);
    update(&map, 1, 10).expect("update");
    update(&map, 1, 11).expect("replace: frees the first with the matching free");
    assert_eq!(lookup(&map, 1), Some(11));
    drop(map);
    assert_eq!(epoch_memory().freed, 2);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn an_insert_the_core_refuses_frees_the_object_it_made() {
    let kernel = Kernel::new();
    let provider =
        MapProvider::<Objects<Kept<Plain>>>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = objects();
    update(&map, 1, 10).expect("update");
    assert_eq!(
        map.update(&1u32.to_le_bytes(), &11u64.to_le_bytes(), BPF_NOEXIST),
        Err(MapError::Result(EBPF_KEY_ALREADY_EXISTS))
    );
    assert_eq!(lookup(&map, 1), Some(10), "the old object stays");
    assert_eq!(
        epoch_memory(),
        EpochMemory {
            allocated: 2,
            freed: 1,
            reclaimed: 1
        },
        "the refused insert's object is freed through the delete callback"
    );
    drop(map);
    drop(provider);
    kernel.assert_no_leaks();
}

/// A map type that keeps an epoch block per key through the core's raw functions and frees it
/// in its delete callback with no epoch of its own: what a provider that trusts upstream's
/// documentation (every provider callback is epoch-protected) writes.
#[derive(Debug)]
struct Trusting;

const TRUSTING_TAG: u32 = u32::from_le_bytes(*b"MpTr");

impl CustomMap for Trusting {
    const MAP_TYPE: u32 = 4303;
    const UPDATES_ORIGINAL_VALUE: bool = true;
    const TAG: PoolTag = TAG;

    fn create(_: u32, _: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((Trusting, 8))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(&self, _: Input<'_>, _: Input<'_>, _: &mut [u8], _: u32) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn update(
        &self,
        _: Input<'_>,
        _: Input<'_>,
        stored: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        let allocate = map_client_dispatch_table()
            .epoch_allocate_with_tag
            .expect("allocate");
        // SAFETY: the core's allocator, called from a user-mode update (inside its epoch).
        let block = unsafe { allocate(8, TRUSTING_TAG) };
        stored.copy_from_slice(&(block as usize).to_ne_bytes());
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, stored: Input<'_>, _: u32) {
        let mut address = [0u8; 8];
        assert!(stored.read_at(0, &mut address), "8 stored bytes");
        let free = map_client_dispatch_table().epoch_free.expect("free");
        // SAFETY: a block `update` allocated, freed once; whether an epoch is entered is
        // what the test is about.
        unsafe { free(usize::from_ne_bytes(address) as *mut core::ffi::c_void) };
    }
}

fn trusting_map() -> BpfMap {
    objects_of(Trusting::MAP_TYPE)
}

/// The core runs a map's teardown (the delete callback of each entry left, with
/// `EBPF_MAP_OPERATION_MAP_CLEANUP`) from an epoch work item, outside any epoch: a provider
/// that frees epoch memory there without entering one is caught, though every other delete
/// of the same provider is inside the core's epoch and passes. The SDK's object maps enter
/// their own (`objects_live_in_epoch_memory_and_go_with_their_values` drops a map holding
/// objects).
#[test]
fn freeing_in_a_maps_teardown_without_an_epoch_is_caught() {
    let kernel = Kernel::new();
    let provider = MapProvider::<Trusting>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = trusting_map();
    update(&map, 1, 10).expect("update");
    map.delete(&1u32.to_le_bytes())
        .expect("a delete from user mode is inside the core's epoch");
    update(&map, 2, 20).expect("replace");
    update(&map, 2, 21).expect("a replaced value is freed inside the core's epoch");
    map.delete(&2u32.to_le_bytes()).expect("delete");
    drop(map);
    drop(provider);
    kernel.assert_no_leaks();

    let check = expect_bugcheck(
        "freeing_in_a_maps_teardown_without_an_epoch_is_caught",
        || {
            let _kernel = Kernel::new();
            let _provider =
                MapProvider::<Trusting>::register(PROVIDER_MODULE, TAG).expect("register");
            let map = trusting_map();
            update(&map, 1, 10).expect("update");
            drop(map);
        },
    );
    assert_eq!(
        Contract::of(&check),
        Some(Contract::OutsideEpoch),
        "{check}"
    );
}
