//! Custom maps through core-sim's side of the map-information NPI: what the provider passes
//! to a `CustomMap` when the type keeps the caller's value (`UPDATES_ORIGINAL_VALUE` false:
//! the core gives its find and update no output buffer), and the stored sizes the core would
//! refuse, which the provider refuses first.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

mod common;

use std::cell::RefCell;

use ebpf_ext_core_sim::bpf::{BPF_EXIST, BPF_NOEXIST, BpfMap, MapDefinition, MapError};
use ebpf_ext_map::{CustomMap, Input, MapProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_extension::{EBPF_MAP_OPERATION_MAP_CLEANUP, EBPF_MAP_OPERATION_UPDATE};
use ebpf_ext_sys::ebpf_result::{
    EBPF_FAILED, EBPF_INVALID_ARGUMENT, EBPF_KEY_ALREADY_EXISTS, EBPF_KEY_NOT_FOUND,
    EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_usersim::Kernel;
use ebpf_ext_usersim::tracelogging::Value;

const TAG: PoolTag = PoolTag::new(*b"MpCs");
const PROVIDER_MODULE: GUID = GUID::from_u128(0x3a9c_0003_0000_4000_8000_0000_0000_0001);
/// A value the plain map's update refuses.
const REFUSED: u8 = 0xFF;

tracelogging::define_provider!(
    TRACE,
    "MapCoreSimTestProvider",
    id("0b7e4c2d-93a1-4f56-8d0e-2c4b6a8f1e97")
);

/// One callback as the map saw it: which, the key, the buffer in, and the output's length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    call: &'static str,
    key: Vec<u8>,
    bytes: Vec<u8>,
    out_len: usize,
    flags: u32,
}

thread_local! {
    /// The callbacks of this thread's maps: core-sim calls them on the caller's thread.
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

fn seen(call: &'static str, key: Input<'_>, bytes: Input<'_>, out_len: usize, flags: u32) {
    common::assert_epoch_as_the_core(call, flags);
    SEEN.with(|s| {
        s.borrow_mut().push(Seen {
            call,
            key: key.iter().collect(),
            bytes: bytes.iter().collect(),
            out_len,
            flags,
        });
    });
}

fn take_seen() -> Vec<Seen> {
    SEEN.with(RefCell::take)
}

/// A map type that keeps the caller's value: its callbacks can only observe and refuse. Its
/// number is `TYPE` (a custom one by default).
#[derive(Debug)]
struct Plain<const TYPE: u32 = 4101>;

impl<const TYPE: u32> CustomMap for Plain<TYPE> {
    const MAP_TYPE: u32 = TYPE;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((Plain::<TYPE>, value_size))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(
        &self,
        key: Input<'_>,
        stored: Input<'_>,
        out: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        seen("find", key, stored, out.len(), flags);
        Ok(())
    }

    fn update(
        &self,
        key: Input<'_>,
        value: Input<'_>,
        stored: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        seen("update", key, value, stored.len(), flags);
        if value.get(0) == Some(REFUSED) {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        Ok(())
    }

    fn delete_element(&self, key: Input<'_>, stored: Input<'_>, flags: u32) {
        seen("delete", key, stored, 0, flags);
    }
}

/// A map type whose `create` reports the stored size `SIZE`, keeping the caller's value.
#[derive(Debug)]
struct StoresSize<const SIZE: u32>;

impl<const SIZE: u32> CustomMap for StoresSize<SIZE> {
    const MAP_TYPE: u32 = 4200 + SIZE;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, _: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((StoresSize, SIZE))
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
        _: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}

fn definition(map_type: u32) -> MapDefinition {
    MapDefinition {
        name: "custom".into(),
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        initial_data: None,
    }
}

#[test]
fn a_map_that_keeps_the_callers_value_sees_it_and_gets_no_output_buffer() {
    let kernel = Kernel::new();
    let provider = MapProvider::<Plain>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&definition(<Plain>::MAP_TYPE)).expect("create");
    let key = 7u32.to_le_bytes();
    let value = [1, 2, 3, 4, 5, 6, 7, 8];

    map.update(&key, &value, 0).expect("update");
    assert_eq!(map.lookup(&key).expect("lookup"), Some(value.to_vec()));
    let seen = take_seen();
    assert_eq!(
        seen,
        [
            Seen {
                call: "update",
                key: key.to_vec(),
                bytes: value.to_vec(),
                out_len: 0,
                flags: 0,
            },
            Seen {
                call: "find",
                key: key.to_vec(),
                bytes: value.to_vec(),
                out_len: 0,
                flags: 0,
            },
        ],
        "the update sees the caller's value and no buffer; the lookup the stored value and no buffer"
    );

    let refused = [REFUSED, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        map.update(&key, &refused, 0),
        Err(MapError::Result(EBPF_INVALID_ARGUMENT)),
        "the provider's refusal is the update's result"
    );
    assert_eq!(
        map.lookup(&key).expect("lookup"),
        Some(value.to_vec()),
        "a refused update leaves the value"
    );
    take_seen();

    drop(map);
    let seen = take_seen();
    assert_eq!(
        seen,
        [Seen {
            call: "delete",
            key: key.to_vec(),
            bytes: value.to_vec(),
            out_len: 0,
            flags: EBPF_MAP_OPERATION_MAP_CLEANUP,
        }],
        "the map's cleanup deletes its element"
    );
    drop(provider);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// A map type an extension provides under a number of the core's own enum, as XDP provides
/// `BPF_MAP_TYPE_XSKMAP` (16): the core sends it to the provider like any custom type.
type XskLike = Plain<16>;

#[test]
fn a_provider_of_the_xskmap_number_gets_its_maps() {
    let kernel = Kernel::new();
    assert!(
        BpfMap::create(&definition(XskLike::MAP_TYPE)).is_err(),
        "no provider yet"
    );
    let provider = MapProvider::<XskLike>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&definition(XskLike::MAP_TYPE)).expect("the provider's map");
    let key = 1u32.to_le_bytes();
    map.update(&key, &[9; 8], 0).expect("update");
    assert_eq!(map.lookup(&key).expect("lookup"), Some(vec![9; 8]));
    drop(map);
    drop(provider);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// The base hash map refuses an insert the provider already made (the key's presence against
/// the update's flags, or the map full): the provider's delete callback undoes it
/// (`EBPF_MAP_OPERATION_UPDATE`), and the map is unchanged.
#[test]
fn an_insert_the_base_map_refuses_is_undone_through_the_delete_callback() {
    let kernel = Kernel::new();
    let provider = MapProvider::<Plain>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&MapDefinition {
        max_entries: 2,
        ..definition(<Plain>::MAP_TYPE)
    })
    .expect("create");
    let (one, two, three) = (1u32.to_le_bytes(), 2u32.to_le_bytes(), 3u32.to_le_bytes());
    let value = [9u8; 8];
    let undone = |key: &[u8]| {
        vec![
            Seen {
                call: "update",
                key: key.to_vec(),
                bytes: value.to_vec(),
                out_len: 0,
                flags: 0,
            },
            Seen {
                call: "delete",
                key: key.to_vec(),
                bytes: value.to_vec(),
                out_len: 0,
                flags: EBPF_MAP_OPERATION_UPDATE,
            },
        ]
    };

    assert_eq!(
        map.update(&one, &value, BPF_EXIST),
        Err(MapError::Result(EBPF_KEY_NOT_FOUND)),
        "BPF_EXIST on an absent key"
    );
    assert_eq!(take_seen(), undone(&one));
    assert_eq!(map.lookup(&one).expect("lookup"), None);

    map.update(&one, &value, BPF_NOEXIST).expect("a new key");
    map.update(&two, &value, 0).expect("a second key");
    take_seen();
    assert_eq!(
        map.update(&one, &value, BPF_NOEXIST),
        Err(MapError::Result(EBPF_KEY_ALREADY_EXISTS)),
        "BPF_NOEXIST on a present key"
    );
    assert_eq!(take_seen(), undone(&one));
    assert_eq!(
        map.update(&three, &value, 0),
        Err(MapError::Result(EBPF_NO_MEMORY)),
        "a third key in a map of two"
    );
    assert_eq!(take_seen(), undone(&three));
    map.update(&one, &value, BPF_EXIST)
        .expect("replacing a key of a full map");
    assert_eq!(map.keys(), [one.to_vec(), two.to_vec()]);
    assert_eq!(
        map.update(&one, &value, 4),
        Err(MapError::Result(EBPF_INVALID_ARGUMENT)),
        "an unknown flag, before the provider sees it"
    );
    take_seen();

    drop(map);
    drop(provider);
    take_seen();
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// Creates a map of `StoresSize<SIZE>`'s type through a provider registered for it (and gone
/// again after the map): the creation's error, if refused.
fn create_storing<const SIZE: u32>() -> Option<String> {
    let _provider =
        MapProvider::<StoresSize<SIZE>>::register(PROVIDER_MODULE, TAG).expect("register");
    BpfMap::create(&definition(StoresSize::<SIZE>::MAP_TYPE))
        .err()
        .map(|error| error.to_string())
}

#[test]
fn a_stored_size_the_core_would_refuse_is_refused_by_the_provider_and_traced() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&TRACE).expect("tracing");
    let reason = "custom map refused: its stored size is 0, or not the value size without UPDATES_ORIGINAL_VALUE";
    let traced = || kernel.etw_message_count(reason);
    let refused = format!("returned {EBPF_INVALID_ARGUMENT}");
    let error = create_storing::<0>().expect("a stored size of 0 is refused");
    assert!(error.contains(&refused), "{error}");
    assert_eq!(traced(), 1);
    let error = create_storing::<12>().expect("12 bytes stored for an 8-byte value is refused");
    assert!(error.contains(&refused), "{error}");
    assert_eq!(traced(), 2);
    assert_eq!(create_storing::<8>(), None, "the value size is accepted");
    assert_eq!(traced(), 2);
    kernel.wait_for_work_items();
    ebpf_ext_trace::terminate();
    kernel.assert_no_leaks();
}

/// As the core: a map holds its provider's rundown until the map is deleted, so dropping the
/// provider (its deregistration) waits until every map of the type is gone; meanwhile the
/// provider still serves the map, and the map's delete still reaches its callbacks.
#[test]
fn dropping_the_provider_waits_until_its_maps_are_gone() {
    let kernel = Kernel::new();
    let provider = MapProvider::<Plain>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&definition(<Plain>::MAP_TYPE)).expect("create");
    let key = 3u32.to_le_bytes();
    let dropped = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let dropping = kernel.scoped(scope, || {
            drop(provider);
            dropped.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Read before the map goes, asserted after (the scope would wait for the dropping
        // thread, which waits for the map, if the assertion failed first).
        let waited = !dropped.load(std::sync::atomic::Ordering::SeqCst);
        let served = map.update(&key, &[9; 8], 0);
        take_seen();
        drop(map);
        dropping.join().expect("dropped");
        assert!(waited, "the provider's deregistration waits for the map");
        assert_eq!(served, Ok(()), "the provider serves the map meanwhile");
    });
    assert_eq!(
        take_seen(),
        [Seen {
            call: "delete",
            key: key.to_vec(),
            bytes: vec![9; 8],
            out_len: 0,
            flags: EBPF_MAP_OPERATION_MAP_CLEANUP,
        }],
        "the map's delete reached the provider before it detached"
    );
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// Set while [`Slow`]'s create waits; the gate it waits on.
static SLOW_CREATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SLOW_GATE: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// A map type whose create waits until [`SLOW_GATE`] opens.
#[derive(Debug)]
struct Slow;

impl CustomMap for Slow {
    const MAP_TYPE: u32 = 4104;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        SLOW_CREATING.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut open = SLOW_GATE.0.lock().unwrap();
        while !*open {
            open = SLOW_GATE.1.wait(open).unwrap();
        }
        Ok((Slow, value_size))
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
        _: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}

/// The map holds its provider from before the provider's create runs: a provider dropped
/// while a create of its type is in flight waits for that create, then for the map.
#[test]
fn a_provider_dropped_during_a_create_waits_for_the_map_it_makes() {
    let kernel = Kernel::new();
    let provider = MapProvider::<Slow>::register(PROVIDER_MODULE, TAG).expect("register");
    let dropped = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let waited_during_create = kernel.scoped(scope, || {
            common_wait("the create runs", || {
                SLOW_CREATING.load(std::sync::atomic::Ordering::SeqCst)
            });
            let kernel = &kernel;
            let dropped = &dropped;
            std::thread::scope(|inner| {
                kernel.scoped(inner, move || {
                    drop(provider);
                    dropped.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                std::thread::sleep(std::time::Duration::from_millis(50));
                let waited = !dropped.load(std::sync::atomic::Ordering::SeqCst);
                *SLOW_GATE.0.lock().unwrap() = true;
                SLOW_GATE.1.notify_all();
                waited
            })
        });
        // Returns once the gate opens (the other thread opens it).
        let map = BpfMap::create(&definition(Slow::MAP_TYPE)).expect("created");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let waited_for_the_map = !dropped.load(std::sync::atomic::Ordering::SeqCst);
        drop(map);
        // (The inner scope joins the dropping thread, which the map's delete released.)
        let waited_during_create = waited_during_create.join().expect("joined");
        assert!(waited_during_create, "the drop waits while the create runs");
        assert!(waited_for_the_map, "then for the map it made");
    });
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// Polls `condition` every millisecond for up to 10 s.
fn common_wait(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("timed out waiting until {what}");
}

/// A map type whose callbacks refuse with `EBPF_SUCCESS` (a status converted carelessly):
/// `create` when the key is 8 bytes, `update` always.
#[derive(Debug)]
struct FailsWithSuccess;

impl CustomMap for FailsWithSuccess {
    const MAP_TYPE: u32 = 4300;
    const UPDATES_ORIGINAL_VALUE: bool = true;
    const TAG: PoolTag = TAG;

    fn create(key_size: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        if key_size == 8 {
            return Err(EBPF_SUCCESS);
        }
        Ok((FailsWithSuccess, value_size))
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
        _: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        Err(EBPF_SUCCESS)
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}

/// A callback's `Err(EBPF_SUCCESS)` stays a refusal: the core gets `EBPF_FAILED` (a success
/// from `create` would leave its out slots unwritten; from `update`, store a value the
/// provider refused), and a trace event says so.
#[test]
fn a_refusal_with_ebpf_success_is_reported_as_failed_and_traced() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&TRACE).expect("tracing");
    let reason = "custom map callback failed with EBPF_SUCCESS: reported as EBPF_FAILED";
    let traced = || kernel.etw_message_count(reason);
    let provider =
        MapProvider::<FailsWithSuccess>::register(PROVIDER_MODULE, TAG).expect("register");
    let error = BpfMap::create(&MapDefinition {
        key_size: 8,
        ..definition(FailsWithSuccess::MAP_TYPE)
    })
    .expect_err("the creation is refused");
    assert!(
        error
            .to_string()
            .contains(&format!("returned {EBPF_FAILED}")),
        "{error}"
    );
    assert_eq!(traced(), 1);

    let map = BpfMap::create(&definition(FailsWithSuccess::MAP_TYPE)).expect("create");
    let key = 1u32.to_le_bytes();
    assert_eq!(
        map.update(&key, &[5; 8], 0),
        Err(MapError::Result(EBPF_FAILED)),
        "the update is refused"
    );
    assert_eq!(map.lookup(&key).expect("lookup"), None, "nothing stored");
    assert_eq!(traced(), 2);
    drop(map);
    drop(provider);
    kernel.wait_for_work_items();
    ebpf_ext_trace::terminate();
    kernel.assert_no_leaks();
}

/// A map type whose lookup writes the stored value to the output, then reads the key and
/// puts it at the front: a key that lay under the output would read back as stored bytes.
#[derive(Debug)]
struct KeyAfterOutput;

impl CustomMap for KeyAfterOutput {
    const MAP_TYPE: u32 = 4301;
    const UPDATES_ORIGINAL_VALUE: bool = true;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((KeyAfterOutput, value_size))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(
        &self,
        key: Input<'_>,
        stored: Input<'_>,
        out: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        for (to, from) in out.iter_mut().zip(stored.iter()) {
            *to = from;
        }
        for (to, from) in out.iter_mut().zip(key.iter()) {
            *to = from;
        }
        Ok(())
    }

    fn update(
        &self,
        _: Input<'_>,
        value: Input<'_>,
        stored: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        for (to, from) in stored.iter_mut().zip(value.iter()) {
            *to = from;
        }
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}

/// The core hands a user-mode lookup its request's key and its reply's value, which are one
/// buffer (core-sim lays them out as the IOCTL does: the value's 16 bytes at 8 cover the key
/// at 17). The provider's output is its alone: it still reads the key it was asked for.
#[test]
fn a_lookup_whose_key_lies_under_the_output_still_sees_the_key() {
    let kernel = Kernel::new();
    let provider = MapProvider::<KeyAfterOutput>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&MapDefinition {
        value_size: 16,
        ..definition(KeyAfterOutput::MAP_TYPE)
    })
    .expect("create");
    let key = 0x1234_5678_u32.to_le_bytes();
    map.update(&key, &[0xEE; 16], 0).expect("update");
    let found = map.lookup(&key).expect("lookup").expect("present");
    assert_eq!(found[..4], key, "the key the provider read");
    assert_eq!(found[4..], [0xEE; 12], "the stored value after it");
    drop(map);
    drop(provider);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// The map after the `MAX_MAPS`-th of a type alive at once is refused with `EBPF_NO_MEMORY`,
/// and a trace event says why; once one goes, another can be made.
#[test]
fn a_map_beyond_max_maps_is_refused_and_traced() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&TRACE).expect("tracing");
    let provider = MapProvider::<Plain>::register(PROVIDER_MODULE, TAG).expect("register");
    let mut maps: Vec<BpfMap> = (0..ebpf_ext_map::MAX_MAPS)
        .map(|_| BpfMap::create(&definition(<Plain>::MAP_TYPE)).expect("create"))
        .collect();
    let error = BpfMap::create(&definition(<Plain>::MAP_TYPE)).expect_err("one too many");
    assert!(
        error
            .to_string()
            .contains(&format!("returned {EBPF_NO_MEMORY}")),
        "{error}"
    );
    let traced = kernel.etw_events().iter().any(|e| {
        e.field("Message") == Some(&Value::Str("custom map refused: no memory".into()))
            && e.field("string_value")
                == Some(&Value::Str("MAX_MAPS maps of the type are alive".into()))
    });
    assert!(traced, "the refusal is traced");
    maps.pop();
    maps.push(BpfMap::create(&definition(<Plain>::MAP_TYPE)).expect("room again"));
    drop(maps);
    drop(provider);
    take_seen();
    kernel.wait_for_work_items();
    ebpf_ext_trace::terminate();
    kernel.assert_no_leaks();
}

/// Every allocation failure in registering the provider, creating a map, using and deleting
/// it is refused cleanly: nothing leaks, whichever allocation fails.
#[test]
fn every_allocation_failure_around_a_custom_map_is_clean() {
    let points = ebpf_ext_usersim::sweep_allocation_failures(|_| {
        let Ok(provider) = MapProvider::<Plain>::register(PROVIDER_MODULE, TAG) else {
            return;
        };
        if let Ok(map) = BpfMap::create(&definition(<Plain>::MAP_TYPE)) {
            let key = 3u32.to_le_bytes();
            let _ = map.update(&key, &[1; 8], 0);
            let _ = map.lookup(&key);
            drop(map);
        }
        drop(provider);
        take_seen();
    });
    assert!(points > 3, "{points} allocations");
}

static FIND_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static FIND_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static DELETED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A map type whose find waits until [`FIND_GATE`] opens, and whose delete callback records
/// that it ran.
#[derive(Debug)]
struct FindWaits;

impl CustomMap for FindWaits {
    const MAP_TYPE: u32 = 4105;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((FindWaits, value_size))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(&self, _: Input<'_>, _: Input<'_>, _: &mut [u8], _: u32) -> Result<(), ebpf_result_t> {
        FIND_RUNNING.store(true, std::sync::atomic::Ordering::SeqCst);
        while !FIND_GATE.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        Ok(())
    }

    fn update(
        &self,
        _: Input<'_>,
        _: Input<'_>,
        _: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {
        DELETED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// As with the core, which runs a provider's find under no lock of its own (the epoch keeps
/// the value), a delete of the same key completes, its callback included, while a find is
/// still running: a provider must not free, outside the epoch, what its find may be reading.
#[test]
fn a_delete_of_a_key_completes_while_a_find_of_it_runs() {
    use std::sync::atomic::Ordering::SeqCst;
    let kernel = Kernel::new();
    let provider = MapProvider::<FindWaits>::register(PROVIDER_MODULE, TAG).expect("register");
    let map = BpfMap::create(&definition(FindWaits::MAP_TYPE)).expect("created");
    let key = [1, 0, 0, 0];
    let value = [7; 8];
    map.update(&key, &value, 0).expect("inserted");
    std::thread::scope(|s| {
        let finder = kernel.scoped(s, || map.lookup(&key));
        common_wait("the find runs", || FIND_RUNNING.load(SeqCst));
        let deleter = kernel.scoped(s, || map.delete(&key));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !deleter.is_finished() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let deleted_first = deleter.is_finished();
        // Open the gate either way, so that a failure ends instead of hanging.
        FIND_GATE.store(true, SeqCst);
        assert!(
            deleted_first,
            "the delete waited for the find: the core-sim held a lock the core does not"
        );
        assert_eq!(deleter.join().expect("delete"), Ok(()));
        assert!(DELETED.load(SeqCst), "the delete callback ran");
        assert_eq!(
            finder.join().expect("find"),
            Ok(Some(value.to_vec())),
            "the find read the value it found"
        );
    });
    drop(map);
    drop(provider);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}
