//! A BPF program's map helpers on a custom map that keeps the caller's values
//! (`UPDATES_ORIGINAL_VALUE` false), through core-sim: the core calls the provider's find,
//! update and delete callbacks with `EBPF_MAP_OPERATION_HELPER`, at the program's IRQL
//! (DISPATCH_LEVEL here, as a hook invokes), and a lookup hands the program the stored value.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

mod common;

use std::cell::RefCell;

use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_core_sim::bpf::{BpfObject, BpfProgram, compile_c};
use ebpf_ext_map::{CustomMap, Input, MapProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::{
    CellsMut, Context, MapAndKey, MapKey, ProgramInfoProvider, SharedOutput, program_type,
};
use ebpf_ext_sys::ebpf_extension::{EBPF_MAP_OPERATION_HELPER, EBPF_MAP_OPERATION_MAP_CLEANUP};
use ebpf_ext_sys::ebpf_result::{EBPF_KEY_NOT_FOUND, ebpf_result_t};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeGetCurrentIrql};
use ebpf_ext_usersim::Kernel;

const TAG: PoolTag = PoolTag::new(*b"MpPg");
const PROVIDER_MODULE: GUID = GUID::from_u128(0x3a9c_0004_0000_4000_8000_0000_0000_0001);
const PROGRAM_TYPE: GUID = GUID::from_u128(0x3a9c_0005_0000_4000_8000_0000_0000_0001);
const MAP_TYPE: u32 = 4102;
/// A key whose lookup the provider refuses.
const HIDDEN: u32 = 9;

tracelogging::define_provider!(
    TRACE,
    "MapProgramsTestProvider",
    id("5d2f8a1c-6b3e-4c07-9a41-8e0d7c2b3f64")
);

thread_local! {
    /// The callbacks as the map saw them: which, the key's first byte, the flags, the IRQL.
    static SEEN: RefCell<Vec<(&'static str, u8, u32, u8)>> = const { RefCell::new(Vec::new()) };
}

fn seen(call: &'static str, key: Input<'_>, flags: u32) {
    common::assert_epoch_as_the_core(call, flags);
    // SAFETY: reads the calling thread's IRQL.
    let irql = unsafe { KeGetCurrentIrql() };
    SEEN.with(|s| {
        s.borrow_mut()
            .push((call, key.get(0).unwrap_or(0), flags, irql));
    });
}

/// A map type that keeps the caller's values and refuses to find [`HIDDEN`].
#[derive(Debug)]
struct Observed;

impl CustomMap for Observed {
    const MAP_TYPE: u32 = MAP_TYPE;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((Observed, value_size))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(
        &self,
        key: Input<'_>,
        _: Input<'_>,
        _: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        seen("find", key, flags);
        if key.get(0) == u8::try_from(HIDDEN).ok() {
            return Err(EBPF_KEY_NOT_FOUND);
        }
        Ok(())
    }

    fn update(
        &self,
        key: Input<'_>,
        _: Input<'_>,
        _: &mut [u8],
        flags: u32,
    ) -> Result<(), ebpf_result_t> {
        seen("update", key, flags);
        Ok(())
    }

    fn delete_element(&self, key: Input<'_>, _: Input<'_>, flags: u32) {
        seen("delete", key, flags);
    }
}

fn nothing(_: &[u64; 2]) -> u64 {
    0
}

program_type! {
    static PROGRAM_DATA = c"map_user", PROGRAM_TYPE, 998;
    context [u64; 2];
    helpers { 0x1_0000, c"nothing" => nothing(Context); }
}

const PROGRAM: &str = r#"
typedef unsigned long long uint64_t;
typedef unsigned int uint32_t;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, value) int (*name)[value]
#define __type(name, type) typeof(type)* name
static void* (*bpf_map_lookup_elem)(void* map, const void* key) = (void*)1;
static long (*bpf_map_update_elem)(void* map, const void* key, const void* value, uint64_t flags) = (void*)2;
static long (*bpf_map_delete_elem)(void* map, const void* key) = (void*)3;
struct { __uint(type, 4102); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 4); } observed SEC(".maps");
SEC("map_user")
int use_map(void* ctx)
{
    uint32_t one = 1, two = 2, hidden = 9;
    uint64_t* value = bpf_map_lookup_elem(&observed, &one);
    if (!value) return -1;
    *value += 1;
    uint64_t five = 5;
    if (bpf_map_update_elem(&observed, &two, &five, 1)) return -2;
    if (bpf_map_lookup_elem(&observed, &hidden)) return -3;
    if (bpf_map_delete_elem(&observed, &two)) return -4;
    return (int)*value;
}
char _license[] SEC("license") = "MIT";
"#;

fn compile(c: &str) -> BpfObject {
    BpfObject::parse(&compile_c(c, &[]).expect("clang")).expect("parses")
}

#[test]
fn a_programs_map_helpers_reach_the_provider_at_its_irql_and_the_stored_value() {
    let object = compile(PROGRAM);
    let kernel = Kernel::new();
    let maps = MapProvider::<Observed>::register(PROVIDER_MODULE, TAG).expect("register");
    // SAFETY: the one provider of the type; no hook invokes its programs.
    let info_provider =
        unsafe { ProgramInfoProvider::register(&PROGRAM_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
    let program = BpfProgram::load(&object, "map_user", &client.info()).expect("loads");
    let map = program.map("observed").expect("its map");
    map.update(&1u32.to_le_bytes(), &41u64.to_le_bytes(), 0)
        .expect("seeded");
    map.update(&HIDDEN.to_le_bytes(), &7u64.to_le_bytes(), 0)
        .expect("seeded");
    SEEN.with(RefCell::take);

    let mut context = [0u64; 2];
    // SAFETY: raising from PASSIVE_LEVEL; lowered back below on this thread.
    let old = unsafe { ebpf_ext_sys::intrin::KeRaiseIrql(DISPATCH_LEVEL) };
    // SAFETY: a context of the program type (two words, no data pointers).
    let run = unsafe { program.run(context.as_mut_ptr().cast()) };
    // SAFETY: the value the raise returned.
    unsafe { ebpf_ext_sys::wdm::KeLowerIrql(old) };

    assert_eq!(run, Ok(42), "the program wrote through the stored value");
    assert_eq!(
        map.lookup(&1u32.to_le_bytes()).expect("lookup"),
        Some(42u64.to_le_bytes().to_vec())
    );
    let helper = EBPF_MAP_OPERATION_HELPER;
    let dispatch = DISPATCH_LEVEL;
    assert_eq!(
        SEEN.with(RefCell::take),
        [
            ("find", 1, helper, dispatch),
            ("update", 2, helper, dispatch),
            ("find", 9, helper, dispatch),
            ("delete", 2, helper, dispatch),
            ("find", 1, 0, 0),
        ],
        "each program operation as the core calls it, then the test's own lookup"
    );
    assert_eq!(map.keys().len(), 2, "keys 1 and 9");

    drop(program);
    drop(map);
    let cleanup = SEEN.with(RefCell::take);
    assert_eq!(cleanup.len(), 2, "the map's two keys: {cleanup:?}");
    assert!(
        cleanup.iter().all(|&(call, _, flags, _)| call == "delete" && flags == EBPF_MAP_OPERATION_MAP_CLEANUP),
        "{cleanup:?}"
    );
    drop(client);
    drop(info_provider);
    drop(maps);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}

/// The provider a helper reads through (set while the test below runs).
static OBSERVED: std::sync::atomic::AtomicPtr<MapProvider<Observed>> =
    std::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// `stored_value(map, key, out, size)`: the value the provider's map stores for `key`,
/// copied to `out`; its length, or -1 if the map is not one of the provider's or has no
/// such key.
fn stored_value(key: MapKey<'_>, out: SharedOutput<'_>) -> u64 {
    // SAFETY: NULL, or the provider the test keeps alive while programs run.
    let provider = unsafe { OBSERVED.load(std::sync::atomic::Ordering::Acquire).as_ref() };
    match provider.and_then(|provider| provider.stored_value(key)) {
        Some((Observed, value)) => {
            for (index, byte) in value.input().iter().enumerate() {
                out.set(index, byte);
            }
            value.input().len() as u64
        }
        None => u64::MAX,
    }
}

const STORED_TYPE: GUID = GUID::from_u128(0x3a9c_0006_0000_4000_8000_0000_0000_0001);

program_type! {
    static STORED_DATA = c"stored_user", STORED_TYPE, 999;
    context [u64; 2];
    helpers { 0x1_0000, c"stored_value" => stored_value(MapAndKey, CellsMut); }
}

const STORED_PROGRAM: &str = r#"
typedef unsigned long long uint64_t;
typedef unsigned int uint32_t;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, value) int (*name)[value]
#define __type(name, type) typeof(type)* name
static long (*stored_value)(void* map, const void* key, void* out, uint32_t size) = (void*)0x10000;
struct { __uint(type, 4102); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 4); } observed SEC(".maps");
struct { __uint(type, 2); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 1); } array SEC(".maps");
SEC("stored_user")
int read_stored(void* ctx)
{
    uint32_t one = 1, absent = 3, zero = 0;
    uint64_t out = 0, untouched = 0;
    if (stored_value(&observed, &one, &out, sizeof(out)) != 8) return -1;
    if (stored_value(&observed, &absent, &untouched, sizeof(untouched)) != -1) return -2;
    if (stored_value(&array, &zero, &untouched, sizeof(untouched)) != -1) return -3;
    if (untouched != 0) return -4;
    return (int)out;
}
char _license[] SEC("license") = "MIT";
"#;

/// `MapProvider::stored_value` hands a helper the value the core stores for a key of one of
/// the provider's maps, and nothing for an absent key or a map of another type (a built-in
/// array here).
#[test]
fn a_helper_reads_the_stored_value_of_a_providers_map_and_nothing_else() {
    let object = compile(STORED_PROGRAM);
    let kernel = Kernel::new();
    let maps = MapProvider::<Observed>::register(PROVIDER_MODULE, TAG).expect("register");
    OBSERVED.store(
        core::ptr::from_ref(&maps).cast_mut(),
        std::sync::atomic::Ordering::Release,
    );
    // SAFETY: the one provider of the type; no hook invokes its programs.
    let info_provider =
        unsafe { ProgramInfoProvider::register(&STORED_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(STORED_TYPE).expect("attach");
    let program = BpfProgram::load(&object, "stored_user", &client.info()).expect("loads");
    let map = program.map("observed").expect("its map");
    map.update(&1u32.to_le_bytes(), &41u64.to_le_bytes(), 0)
        .expect("seeded");

    let mut context = [0u64; 2];
    // SAFETY: a context of the program type (two words, no data pointers).
    let run = unsafe { program.run(context.as_mut_ptr().cast()) };
    assert_eq!(run, Ok(41), "the stored value, and nothing for the others");

    drop(program);
    drop(map);
    drop(client);
    drop(info_provider);
    OBSERVED.store(core::ptr::null_mut(), std::sync::atomic::Ordering::Release);
    drop(maps);
    SEEN.with(RefCell::take);
    kernel.wait_for_work_items();
    kernel.assert_no_leaks();
}
