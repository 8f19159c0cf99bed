//! What a map client presents at attach: the provider reads the core's client data and
//! dispatch table only as far as their headers say they reach, and refuses anything else with
//! `STATUS_INVALID_PARAMETER` and a trace event. Each dispatch table is allocated with exactly
//! the bytes its header gives (its header at least), so under AddressSanitizer a read past
//! them is reported.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ffi::c_void;
use core::ptr;

use ebpf_ext_map::{CustomMap, Input, MapProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_extension::{
    EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER, EBPF_MAP_CLIENT_DATA_HEADER,
    ebpf_base_map_client_dispatch_table_t, ebpf_map_client_data_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_MAP_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{EBPF_KEY_NOT_FOUND, ebpf_result_t};
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::netioddk::NPI_MODULEID;
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{Fault, Kernel, attach_client_once};

const TAG: PoolTag = PoolTag::new(*b"MpCd");
const PROVIDER_MODULE: GUID = GUID::from_u128(0x3a9c_0001_0000_4000_8000_0000_0000_0001);
const CLIENT_MODULE: NPI_MODULEID =
    NPI_MODULEID::from_guid(GUID::from_u128(0x3a9c_0002_0000_4000_8000_0000_0000_0001));

tracelogging::define_provider!(
    TRACE,
    "MapClientDataTestProvider",
    id("6d3f0a52-8c1e-4b7a-9f24-1e5b7c9d0a31")
);

#[derive(Debug)]
struct TestMap;

impl CustomMap for TestMap {
    const MAP_TYPE: u32 = 4100;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((TestMap, value_size))
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

unsafe extern "win64" fn find(_: *const c_void, _: *const u8, _: *mut *mut u8) -> ebpf_result_t {
    EBPF_KEY_NOT_FOUND
}

/// The core's client dispatch table, or as much of one as a test wants to present: exactly
/// `header.size` bytes (never fewer than the header itself), the lookup at offset 24 when
/// they reach it and the rest zero.
fn table(header: ebpf_extension_header_t) -> Box<[u8]> {
    let full = ebpf_base_map_client_dispatch_table_t {
        header,
        find_element_function: Some(find),
        epoch_enter: None,
        epoch_exit: None,
        epoch_allocate_with_tag: None,
        epoch_allocate_cache_aligned_with_tag: None,
        epoch_free: None,
        epoch_free_cache_aligned: None,
    };
    let size = header.size.max(size_of::<ebpf_extension_header_t>());
    // SAFETY: a plain struct of integers and pointers, no padding.
    let bytes = unsafe {
        core::slice::from_raw_parts(ptr::from_ref(&full).cast::<u8>(), size_of_val(&full))
    };
    let mut table = vec![0u8; size];
    let shared = size.min(bytes.len());
    table[..shared].copy_from_slice(&bytes[..shared]);
    table.into_boxed_slice()
}

/// Registers a map client presenting `data` (with `table` as its dispatch table unless
/// `data.base_client_table` is NULL, and no client data at all for `None`), and returns the
/// status the provider's attach gave it.
fn attach(data: Option<ebpf_map_client_data_t>, table_header: ebpf_extension_header_t) -> NTSTATUS {
    let table = table(table_header);
    let data = data.map(|mut data| {
        if !data.base_client_table.is_null() {
            data.base_client_table = table.as_ptr().cast();
        }
        data
    });
    let characteristics = data
        .as_ref()
        .map_or(ptr::null(), |data| ptr::from_ref(data).cast::<c_void>());
    // SAFETY: the client data and its table live until this returns.
    let status = unsafe {
        attach_client_once(
            &EBPF_MAP_INFO_EXTENSION_IID,
            &CLIENT_MODULE,
            characteristics,
        )
    };
    status.expect("the provider was offered to the client")
}

/// Client data as the core presents it, pointing at a dispatch table.
fn data(header: ebpf_extension_header_t) -> ebpf_map_client_data_t {
    ebpf_map_client_data_t {
        header,
        map_context_offset: 48,
        // Replaced by the client's own table in `attach`.
        base_client_table: ptr::dangling(),
    }
}

#[test]
fn a_map_client_is_read_only_as_far_as_its_headers_say() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&TRACE).expect("tracing");
    let provider = MapProvider::<TestMap>::register(PROVIDER_MODULE, TAG).expect("register");
    let header = ebpf_extension_header_t::new;
    let traced = |reason: &str| {
        kernel
            .etw_events()
            .iter()
            .filter(|e| {
                e.name == "EbpfExtGenericMessage"
                    && e.field("Message") == Some(&Value::Str(reason.into()))
            })
            .count()
    };
    // Each refusal traces its reason once more.
    let refused = |attach: &dyn Fn() -> NTSTATUS, reason: &str| {
        let before = traced(reason);
        assert_eq!(attach(), STATUS_INVALID_PARAMETER, "{reason}");
        assert_eq!(traced(reason), before + 1, "{reason} is traced");
    };

    // What the core presents: client data {1, 40, 40} and a table {1, 80, 80}.
    let full = EBPF_BASE_MAP_CLIENT_DISPATCH_TABLE_HEADER;
    let good = || Some(data(EBPF_MAP_CLIENT_DATA_HEADER));
    assert_eq!(attach(good(), full), STATUS_SUCCESS);
    // Upstream's other tables with the lookup at offset 24: header and lookup (32 bytes), and
    // header, lookup and four epoch functions (64).
    assert_eq!(attach(good(), header(1, 32, 32)), STATUS_SUCCESS);
    assert_eq!(attach(good(), header(1, 64, 64)), STATUS_SUCCESS);
    // No table at all: attached, without a lookup.
    let no_table = ebpf_map_client_data_t {
        base_client_table: ptr::null(),
        ..data(EBPF_MAP_CLIENT_DATA_HEADER)
    };
    assert_eq!(attach(Some(no_table), full), STATUS_SUCCESS);

    refused(&|| attach(None, full), "map client refused: no client data");
    let wrong_data = "map client refused: client data is not version 1, 40 bytes";
    refused(&|| attach(Some(data(header(2, 40, 40))), full), wrong_data);
    refused(&|| attach(Some(data(header(1, 32, 40))), full), wrong_data);
    refused(
        &|| attach(good(), header(2, 80, 80)),
        "map client refused: the core's dispatch table is not version 1",
    );
    // Tables without the lookup at offset 24: the provider must not read that slot.
    let no_lookup = "map client refused: the core's dispatch table has no lookup function";
    refused(&|| attach(good(), header(1, 31, 31)), no_lookup);
    refused(&|| attach(good(), header(1, 24, 24)), no_lookup);
    // The "extensible maps" revision's table: header and four epoch functions.
    refused(&|| attach(good(), header(1, 56, 56)), no_lookup);

    // No memory for the binding: refused with STATUS_INSUFFICIENT_RESOURCES, traced.
    let no_memory = "map client refused: no memory for its binding";
    kernel.inject(Fault::Call("ExAllocatePool2", 1));
    assert_eq!(attach(good(), full), STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(traced(no_memory), 1, "{no_memory} is traced");
    assert_eq!(
        kernel.faults_triggered(),
        [Fault::Call("ExAllocatePool2", 1)],
        "the binding's allocation is the one that failed"
    );

    drop(provider);
    kernel.wait_for_work_items();
    ebpf_ext_trace::terminate();
    kernel.assert_no_leaks();
}
