//! ETW: registration, enablement through the enable callback, filtering, traits, activity ids,
//! and the TraceLogging decoder on metadata laid out as the `tracelogging` crate lays it out.

use core::ffi::c_void;
use core::ptr;
use std::sync::Mutex;

use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    EVENT_ACTIVITY_CTRL_CREATE_ID, EVENT_ACTIVITY_CTRL_GET_ID, EVENT_ACTIVITY_CTRL_GET_SET_ID,
    EVENT_ACTIVITY_CTRL_SET_ID, EVENT_DATA_DESCRIPTOR, EVENT_DESCRIPTOR, EVENT_FILTER_DESCRIPTOR,
    EtwActivityIdControl, EtwRegister, EtwSetInformation, EtwUnregister, EtwWriteTransfer,
    REGHANDLE,
};
use ebpf_ext_usersim::tracelogging::{
    Value, decode_event_metadata, decode_payload, decode_provider_metadata,
};
use ebpf_ext_usersim::{Enablement, Fault, Kernel};

const PROVIDER: GUID = GUID::from_u128(0xf2f2ca01_ad02_4a07_9e90_95a2334f3692);

static CALLS: Mutex<Vec<(u32, u8, u64, u64)>> = Mutex::new(Vec::new());

unsafe extern "win64" fn callback(
    _source: *const GUID,
    code: u32,
    level: u8,
    any: u64,
    all: u64,
    _filter: *const EVENT_FILTER_DESCRIPTOR,
    _context: *mut c_void,
) {
    CALLS.lock().unwrap().push((code, level, any, all));
}

fn unregister(handle: REGHANDLE) -> i32 {
    // SAFETY: usersim validates the handle.
    unsafe { EtwUnregister(handle) }
}

fn register() -> REGHANDLE {
    let mut handle = 0;
    // SAFETY: valid id, callback and out pointer.
    let status =
        unsafe { EtwRegister(&PROVIDER, Some(callback), ptr::null_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_SUCCESS);
    handle
}

/// Event metadata as `write_event!` lays it out: size, tag, name, fields.
fn event_meta(name: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut m = vec![0, 0, 0];
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    for (field, types) in fields {
        m.extend_from_slice(field.as_bytes());
        m.push(0);
        m.extend_from_slice(types);
    }
    let size = u16::try_from(m.len()).unwrap().to_le_bytes();
    m[..2].copy_from_slice(&size);
    m
}

fn provider_meta(name: &str) -> Vec<u8> {
    let mut m = vec![0, 0];
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    let size = u16::try_from(m.len()).unwrap().to_le_bytes();
    m[..2].copy_from_slice(&size);
    m
}

fn write(handle: REGHANDLE, level: u8, keyword: u64, blobs: &[(&[u8], u32)]) -> i32 {
    let descriptors: Vec<EVENT_DATA_DESCRIPTOR> = blobs
        .iter()
        .map(|(b, kind)| EVENT_DATA_DESCRIPTOR {
            Ptr: b.as_ptr() as u64,
            Size: u32::try_from(b.len()).unwrap(),
            Reserved: *kind,
        })
        .collect();
    let event = EVENT_DESCRIPTOR {
        Id: 0,
        Version: 0,
        Channel: 11,
        Level: level,
        Opcode: 0,
        Task: 0,
        Keyword: keyword,
    };
    // SAFETY: descriptors point to live buffers.
    unsafe {
        EtwWriteTransfer(
            handle,
            &raw const event,
            ptr::null(),
            ptr::null(),
            u32::try_from(descriptors.len()).unwrap(),
            descriptors.as_ptr(),
        )
    }
}

#[test]
fn register_enables_through_the_callback_and_configuration_changes_call_it() {
    let kernel = Kernel::new();
    let handle = register();
    assert_eq!(CALLS.lock().unwrap().as_slice(), &[(1, 0xFF, u64::MAX, 0)]);
    kernel.etw_enable(
        PROVIDER,
        Enablement {
            level: 3,
            match_any: 0x6,
            match_all: 0x2,
        },
    );
    kernel.etw_disable(PROVIDER);
    assert_eq!(CALLS.lock().unwrap()[1..], [(1, 3, 0x6, 0x2), (0, 0, 0, 0)]);
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    assert_eq!(unregister(handle), STATUS_INVALID_HANDLE);
    kernel.assert_no_leaks();
}

#[test]
fn events_are_filtered_by_level_and_keyword() {
    let kernel = Kernel::new();
    kernel.etw_enable(
        PROVIDER,
        Enablement {
            level: 3,
            match_any: 0x6,
            match_all: 0x2,
        },
    );
    let handle = register();
    let meta = event_meta("E", &[]);
    let blobs: [(&[u8], u32); 1] = [(&meta, 1)];
    for (level, keyword, wanted) in [
        (3, 0x2, true),
        (4, 0x2, false),
        (0, 0x2, true),
        (2, 0x4, false),
        (2, 0x6, true),
        (2, 0, true),
        (2, 0x8, false),
    ] {
        kernel.etw_clear();
        assert_eq!(write(handle, level, keyword, &blobs), STATUS_SUCCESS);
        assert_eq!(
            kernel.etw_events().len(),
            usize::from(wanted),
            "level {level} keyword {keyword:#x}"
        );
    }
    assert_eq!(write(0xDEAD, 1, 0, &blobs), STATUS_INVALID_HANDLE);
    unregister(handle);
}

#[test]
fn decoder_reads_the_tracelogging_layout() {
    let kernel = Kernel::new();
    let handle = register();
    // str8 (Str8|0x80, Utf8), u32, i32, bool32, win_ntstatus (Hex32|0x80, NtStatus), pointer
    // (Hex64), guid, a field with a tag (OutType|0x80 then tag bytes), a u32 slice (U32|0x40),
    // cstr8 (CStr8|0x80, Utf8).
    let meta = event_meta(
        "Everything",
        &[
            ("s", &[0x17 | 0x80, 35]),
            ("u", &[8]),
            ("i", &[7]),
            ("b", &[13]),
            ("st", &[0x14 | 0x80, 14]),
            ("p", &[21]),
            ("g", &[15]),
            ("tagged", &[0x08 | 0x80, 0x80, 0x01]),
            ("arr", &[0x08 | 0x40]),
            ("c", &[0x02 | 0x80, 35]),
        ],
    );
    let guid = GUID::from_u128(0x00112233_4455_6677_8899_aabbccddeeff);
    let mut data = Vec::new();
    data.extend_from_slice(&2u16.to_le_bytes());
    data.extend_from_slice(b"hi");
    data.extend_from_slice(&7u32.to_le_bytes());
    data.extend_from_slice(&(-5i32).to_le_bytes());
    data.extend_from_slice(&1i32.to_le_bytes());
    data.extend_from_slice(&0xC000_0001u32.to_le_bytes());
    data.extend_from_slice(&0xFFFF_8000_0000_1000u64.to_le_bytes());
    data.extend_from_slice(&guid.to_bytes_le());
    data.extend_from_slice(&9u32.to_le_bytes());
    data.extend_from_slice(&2u16.to_le_bytes());
    data.extend_from_slice(&10u32.to_le_bytes());
    data.extend_from_slice(&11u32.to_le_bytes());
    data.extend_from_slice(b"zt\0");
    let pmeta = provider_meta("NetEbpfExtProvider");
    assert_eq!(
        write(
            handle,
            4,
            1,
            &[(&pmeta, 2), (&meta, 1), (&data[..5], 0), (&data[5..], 0)]
        ),
        STATUS_SUCCESS
    );
    let event = kernel.etw_events().pop().unwrap();
    assert_eq!(event.decode_error, None);
    assert_eq!(event.name, "Everything");
    assert_eq!(event.provider_name.as_deref(), Some("NetEbpfExtProvider"));
    let values: Vec<_> = event
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.value.clone()))
        .collect();
    assert_eq!(
        values,
        [
            ("s", Value::Str("hi".into())),
            ("u", Value::U64(7)),
            ("i", Value::I64(-5)),
            ("b", Value::Bool(true)),
            ("st", Value::U64(0xC000_0001)),
            ("p", Value::U64(0xFFFF_8000_0000_1000)),
            ("g", Value::Guid(guid)),
            ("tagged", Value::U64(9)),
            ("arr", Value::Array(vec![Value::U64(10), Value::U64(11)])),
            ("c", Value::Str("zt".into())),
        ]
    );
    assert_eq!(event.fields[4].out_type, 14);
    // OutType byte 0x80 (default type, tag follows), then the one-byte tag 0x01 = bits 21..27.
    assert_eq!(event.fields[7].tag, 1 << 21);
    unregister(handle);
}

#[test]
fn malformed_metadata_and_payload_are_errors_not_crashes() {
    let meta = event_meta("E", &[("u", &[8])]);
    let decoded = decode_event_metadata(&meta).unwrap();
    assert!(
        decode_payload(&decoded, &[1, 2]).is_err(),
        "truncated payload"
    );
    assert!(
        decode_payload(&decoded, &[1, 2, 3, 4, 5]).is_err(),
        "payload left over"
    );
    assert!(
        decode_event_metadata(&meta[..meta.len() - 1]).is_err(),
        "size beyond the blob"
    );
    assert!(decode_event_metadata(&[0xFF]).is_err());
    assert!(
        decode_event_metadata(&[5, 0, 0, b'E', b'x']).is_err(),
        "unterminated name"
    );
    assert!(decode_provider_metadata(&[2]).is_err());
    let bad_type = event_meta("E", &[("x", &[31])]);
    assert!(decode_payload(&decode_event_metadata(&bad_type).unwrap(), &[0; 8]).is_err());
    // Every prefix of a valid blob decodes or fails cleanly.
    for n in 0..meta.len() {
        let _ = decode_event_metadata(&meta[..n]);
    }
}

#[test]
fn event_without_metadata_is_captured_with_an_error() {
    let kernel = Kernel::new();
    let handle = register();
    assert_eq!(write(handle, 1, 0, &[(&[1, 2, 3], 0)]), STATUS_SUCCESS);
    let event = kernel.etw_events().pop().unwrap();
    assert!(event.decode_error.is_some());
    unregister(handle);
}

#[test]
fn traits_and_information_classes() {
    let kernel = Kernel::new();
    let handle = register();
    let traits = provider_meta("Traits");
    assert_eq!(
        // SAFETY: valid handle and buffer.
        unsafe {
            EtwSetInformation(
                handle,
                2,
                traits.as_ptr().cast(),
                u32::try_from(traits.len()).unwrap(),
            )
        },
        STATUS_SUCCESS
    );
    assert_eq!(kernel.etw_provider_traits(PROVIDER), Some(traits.clone()));
    assert_eq!(
        // SAFETY: as above.
        unsafe { EtwSetInformation(handle, 7, traits.as_ptr().cast(), 1) },
        STATUS_INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        // SAFETY: unknown handle.
        unsafe { EtwSetInformation(0x5, 2, traits.as_ptr().cast(), 1) },
        STATUS_INVALID_HANDLE
    );
    // Events without provider metadata take the name from the traits.
    let meta = event_meta("E", &[]);
    write(handle, 1, 0, &[(&meta, 1)]);
    assert_eq!(
        kernel.etw_events()[0].provider_name.as_deref(),
        Some("Traits")
    );
    unregister(handle);
}

#[test]
fn activity_ids_are_per_thread() {
    let kernel = Kernel::new();
    let mut id = GUID::NULL;
    // SAFETY: valid out pointers throughout.
    unsafe {
        assert_eq!(
            EtwActivityIdControl(EVENT_ACTIVITY_CTRL_CREATE_ID, &raw mut id),
            STATUS_SUCCESS
        );
    }
    assert_ne!(id, GUID::NULL);
    let created = id;
    // SAFETY: as above.
    unsafe { EtwActivityIdControl(EVENT_ACTIVITY_CTRL_SET_ID, &raw mut id) };
    let mut read = GUID::NULL;
    // SAFETY: as above.
    unsafe { EtwActivityIdControl(EVENT_ACTIVITY_CTRL_GET_ID, &raw mut read) };
    assert_eq!(read, created);
    let other = kernel.spawn(|| {
        let mut there = GUID::from_u128(1);
        // SAFETY: as above.
        unsafe { EtwActivityIdControl(EVENT_ACTIVITY_CTRL_GET_ID, &raw mut there) };
        there
    });
    assert_eq!(
        other.join().unwrap(),
        GUID::NULL,
        "another thread has its own id"
    );
    let mut swap = GUID::from_u128(42);
    // SAFETY: as above.
    unsafe { EtwActivityIdControl(EVENT_ACTIVITY_CTRL_GET_SET_ID, &raw mut swap) };
    assert_eq!(swap, created);
}

#[test]
fn register_can_be_fault_injected() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("EtwRegister", 1));
    let mut handle = 0;
    assert_eq!(
        // SAFETY: valid arguments.
        unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), &raw mut handle) },
        STATUS_NO_MEMORY
    );
    assert_eq!(kernel.etw_registrations(), 0);
    kernel.assert_no_leaks();
}
