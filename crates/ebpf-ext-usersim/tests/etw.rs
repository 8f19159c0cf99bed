//! ETW: registration, enablement through the enable callback, filtering, traits, activity ids,
//! and the TraceLogging decoder on metadata laid out as the `tracelogging` crate lays it out.
//!
//! Every test owns its kernel and its callback record (passed as the callback context), so
//! the tests also pass when a harness runs them on threads of one process.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Mutex, PoisonError};
use std::thread;

use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    DISPATCH_LEVEL, DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS,
    DRIVER_VERIFIER_DETECTED_VIOLATION, EVENT_ACTIVITY_CTRL_CREATE_ID,
    EVENT_ACTIVITY_CTRL_CREATE_SET_ID, EVENT_ACTIVITY_CTRL_GET_ID, EVENT_ACTIVITY_CTRL_GET_SET_ID,
    EVENT_ACTIVITY_CTRL_SET_ID, EVENT_DATA_DESCRIPTOR, EVENT_DESCRIPTOR, EVENT_FILTER_DESCRIPTOR,
    EtwActivityIdControl, EtwRegister, EtwSetInformation, EtwUnregister, EtwWriteTransfer,
    IRQL_NOT_LESS_OR_EQUAL, PASSIVE_LEVEL, REGHANDLE,
};
use ebpf_ext_usersim::tracelogging::{
    Value, decode_event_metadata, decode_payload, decode_provider_metadata,
};
use ebpf_ext_usersim::{
    Enablement, Fault, Kernel, expect_bugcheck, image_unloaded, set_current_irql,
};

const PROVIDER: GUID = GUID::from_u128(0xf2f2ca01_ad02_4a07_9e90_95a2334f3692);
const OTHER: GUID = GUID::from_u128(0xd15cc421_e9e4_459b_87a6_b45b7d84e9a8);

/// One enable-callback invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    code: u32,
    level: u8,
    any: u64,
    all: u64,
}

/// What a registration's enable callback saw; handed to ETW as the callback context.
#[derive(Default)]
struct Calls {
    seen: Mutex<Vec<Call>>,
    /// Unregister this handle from inside the callback on a disable (0: don't).
    unregister_on_disable: AtomicU64,
    /// Set while the callback runs, for the concurrency test.
    entered: AtomicBool,
    /// Make the callback take this long (milliseconds).
    delay_ms: AtomicU64,
    finished: AtomicBool,
}

impl Calls {
    fn take(&self) -> Vec<Call> {
        core::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

unsafe extern "win64" fn record(
    source: *const GUID,
    code: u32,
    level: u8,
    any: u64,
    all: u64,
    filter: *const EVENT_FILTER_DESCRIPTOR,
    context: *mut c_void,
) {
    // SAFETY: the context is the `Calls` the test registered; it outlives the registration.
    let calls = unsafe { &*context.cast::<Calls>() };
    // SAFETY: ETW passes a valid source id.
    let source = unsafe { *source };
    // Record what would be wrong rather than panicking (no unwinding out of win64 callbacks).
    let code = if source == GUID::NULL && filter.is_null() {
        code
    } else {
        u32::MAX
    };
    calls.entered.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(calls.delay_ms.load(Ordering::SeqCst)));
    calls
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Call {
            code,
            level,
            any,
            all,
        });
    let own = calls.unregister_on_disable.load(Ordering::SeqCst);
    if code == 0 && own != 0 {
        // SAFETY: a live handle; ETW routines may be called from the enable callback.
        unsafe { EtwUnregister(own) };
    }
    calls.finished.store(true, Ordering::SeqCst);
}

fn register(provider: GUID, calls: &Calls) -> REGHANDLE {
    let mut handle = 0;
    // SAFETY: valid id, callback, context (outliving the registration) and out pointer.
    let status = unsafe {
        EtwRegister(
            &raw const provider,
            Some(record),
            ptr::from_ref(calls).cast_mut().cast(),
            &raw mut handle,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    assert_ne!(handle, 0);
    handle
}

fn unregister(handle: REGHANDLE) -> i32 {
    // SAFETY: usersim validates the handle.
    unsafe { EtwUnregister(handle) }
}

fn set_traits(handle: REGHANDLE, class: i32, blob: &[u8]) -> i32 {
    // SAFETY: the blob is live for the call.
    unsafe {
        EtwSetInformation(
            handle,
            class,
            blob.as_ptr().cast(),
            u32::try_from(blob.len()).unwrap(),
        )
    }
}

fn activity(code: u32, id: &mut GUID) -> i32 {
    // SAFETY: a valid in/out pointer.
    unsafe { EtwActivityIdControl(code, id) }
}

// ---- TraceLogging layout, built by hand from the tracelogging crate's generator ----------

/// `tracelogging::_internal::tag_size`.
#[expect(
    clippy::verbose_bit_mask,
    reason = "written as the tracelogging crate writes it"
)]
fn tag_size(tag: u32) -> usize {
    if tag & 0x001F_FFFF == 0 {
        1
    } else if tag & 0x0000_3FFF == 0 {
        2
    } else if tag & 0x0000_007F == 0 {
        3
    } else {
        4
    }
}

/// `tracelogging::_internal::tag_encode`: 7 bits per byte from bit 27 down, 0x80 on every
/// byte but the last.
fn tag_encode(tag: u32) -> Vec<u8> {
    let size = tag_size(tag);
    let mut bits = tag;
    (0..size)
        .map(|i| {
            let byte = u8::try_from((bits >> 21) & 0x7F).unwrap();
            bits <<= 7;
            if i == size - 1 { byte } else { byte | 0x80 }
        })
        .collect()
}

/// A field as `write_event!`'s generator describes it.
struct FieldSpec {
    name: &'static str,
    in_type: u8,
    /// 0 for `OutType::Default` (then no OutType byte unless there is a tag).
    out_type: u8,
    tag: Option<u32>,
    /// `*_slice` kinds: InType gets `VariableCountFlag` 0x40.
    slice: bool,
}

const fn field(name: &'static str, in_type: u8, out_type: u8) -> FieldSpec {
    FieldSpec {
        name,
        in_type,
        out_type,
        tag: None,
        slice: false,
    }
}

/// Event metadata exactly as `EventGenerator::generate` lays out `_TlgMeta`: u16 total size,
/// the encoded event tag (one 0 byte without a tag), the name and NUL, then per field the name
/// and NUL, InType (| 0x80 if an OutType or tag follows, | 0x40 for slices), OutType (| 0x80
/// if a tag follows), the encoded field tag.
fn event_meta(name: &str, tag: u32, fields: &[FieldSpec]) -> Vec<u8> {
    let mut m = vec![0, 0];
    m.extend(tag_encode(tag));
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    for f in fields {
        m.extend_from_slice(f.name.as_bytes());
        m.push(0);
        let has_out = f.out_type != 0;
        let has_tag = f.tag.is_some();
        let more = if has_out || has_tag { 0x80 } else { 0 };
        m.push(f.in_type | more | if f.slice { 0x40 } else { 0 });
        if has_out || has_tag {
            m.push(f.out_type | if has_tag { 0x80 } else { 0 });
        }
        if let Some(tag) = f.tag {
            m.extend(tag_encode(tag));
        }
    }
    let size = u16::try_from(m.len()).unwrap().to_le_bytes();
    m[..2].copy_from_slice(&size);
    m
}

/// Provider metadata as `ProviderGenerator` lays it out: u16 size, name, NUL.
fn provider_meta(name: &str) -> Vec<u8> {
    let mut m = vec![0, 0];
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    let size = u16::try_from(m.len()).unwrap().to_le_bytes();
    m[..2].copy_from_slice(&size);
    m
}

fn descriptor(bytes: &[u8], kind: u32) -> EVENT_DATA_DESCRIPTOR {
    EVENT_DATA_DESCRIPTOR {
        Ptr: bytes.as_ptr() as u64,
        Size: u32::try_from(bytes.len()).unwrap(),
        Reserved: kind,
    }
}

fn event(level: u8, keyword: u64) -> EVENT_DESCRIPTOR {
    EVENT_DESCRIPTOR {
        Id: 0,
        Version: 0,
        Channel: 11,
        Level: level,
        Opcode: 0,
        Task: 0,
        Keyword: keyword,
    }
}

fn write_descriptors(
    handle: REGHANDLE,
    event: &EVENT_DESCRIPTOR,
    activity: Option<&GUID>,
    related: Option<&GUID>,
    descriptors: &[EVENT_DATA_DESCRIPTOR],
) -> i32 {
    // SAFETY: the descriptors point to live buffers; ids are live or NULL.
    unsafe {
        EtwWriteTransfer(
            handle,
            event,
            activity.map_or(ptr::null(), ptr::from_ref),
            related.map_or(ptr::null(), ptr::from_ref),
            u32::try_from(descriptors.len()).unwrap(),
            descriptors.as_ptr(),
        )
    }
}

fn write(handle: REGHANDLE, level: u8, keyword: u64, blobs: &[(&[u8], u32)]) -> i32 {
    let descriptors: Vec<_> = blobs.iter().map(|(b, k)| descriptor(b, *k)).collect();
    write_descriptors(handle, &event(level, keyword), None, None, &descriptors)
}

// ---- registration and enablement ---------------------------------------------------------

#[test]
fn register_enables_through_the_callback() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    assert_eq!(
        calls.take(),
        [Call {
            code: 1,
            level: 0xFF,
            any: u64::MAX,
            all: 0
        }],
        "enabled at every level and keyword, source GUID_NULL, no filter data"
    );
    assert_eq!(kernel.etw_registrations(), 1);
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    assert!(calls.take().is_empty(), "no callback on unregister");
    assert_eq!(
        unregister(0),
        STATUS_INVALID_HANDLE,
        "the handle of no registration"
    );
    assert_eq!(kernel.etw_registrations(), 0);
    kernel.assert_no_leaks();
}

/// A handle `EtwUnregister` ended, used again: a bug check naming the routine and the handle,
/// where Windows would use the freed registration.
fn stale_handle_bugchecks(test: &str, api: &str, use_it: fn(REGHANDLE)) {
    let check = expect_bugcheck(test, || {
        let _kernel = Kernel::new();
        let calls = Calls::default();
        let handle = register(PROVIDER, &calls);
        assert_eq!(unregister(handle), STATUS_SUCCESS);
        use_it(handle);
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert_eq!(check.api, api);
    assert!(
        check.message.contains("not registered"),
        "{}",
        check.message
    );
    // The first handle a kernel gives out.
    assert_eq!(check.parameters[0], 0x4554_5700_0001, "the handle");
}

#[test]
fn unregister_twice_bugchecks() {
    stale_handle_bugchecks("unregister_twice_bugchecks", "EtwUnregister", |handle| {
        unregister(handle);
    });
}

#[test]
fn write_after_unregister_bugchecks() {
    stale_handle_bugchecks(
        "write_after_unregister_bugchecks",
        "EtwWriteTransfer",
        |handle| {
            let meta = event_meta("E", 0, &[]);
            write(handle, 1, 0, &[(&meta, 1)]);
        },
    );
}

#[test]
fn set_information_after_unregister_bugchecks() {
    stale_handle_bugchecks(
        "set_information_after_unregister_bugchecks",
        "EtwSetInformation",
        |handle| {
            set_traits(handle, 2, &[4, 0, 0, 0]);
        },
    );
}

#[test]
fn a_handle_etw_never_returned_bugchecks() {
    let check = expect_bugcheck("a_handle_etw_never_returned_bugchecks", || {
        let _kernel = Kernel::new();
        let meta = event_meta("E", 0, &[]);
        write(0xDEAD, 1, 0, &[(&meta, 1)]);
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert_eq!(check.parameters[0], 0xDEAD);
}

#[test]
fn session_changes_call_the_callback() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let other_calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let other = register(OTHER, &other_calls);
    calls.take();
    other_calls.take();

    kernel.etw_enable(PROVIDER, Enablement::new(3, 0x6, 0x2));
    kernel.etw_enable(PROVIDER, Enablement::new(3, 0x6, 0x2));
    kernel.etw_disable(PROVIDER);
    kernel.etw_disable(PROVIDER);
    assert_eq!(
        calls.take(),
        [
            Call {
                code: 1,
                level: 3,
                any: 0x6,
                all: 0x2
            },
            Call {
                code: 1,
                level: 3,
                any: 0x6,
                all: 0x2
            },
            Call {
                code: 0,
                level: 0,
                any: 0,
                all: 0
            },
        ],
        "enabling again notifies again; disabling a disabled provider does not"
    );
    assert!(other_calls.take().is_empty(), "only the named provider");
    assert_eq!(kernel.etw_enablement(PROVIDER), None);

    // The default applies to providers not configured by name.
    kernel.etw_default(Some(Enablement::new(4, 0x1, 0)));
    assert!(calls.take().is_empty());
    assert_eq!(
        other_calls.take(),
        [Call {
            code: 1,
            level: 4,
            any: 0x1,
            all: 0
        }]
    );
    kernel.etw_enable_by_default(false);
    assert_eq!(other_calls.take()[0].code, 0);

    // A provider registering while disabled gets no callback until a session enables it.
    let late_calls = Calls::default();
    let late = register(GUID::from_u128(7), &late_calls);
    assert!(late_calls.take().is_empty());
    kernel.etw_enable(GUID::from_u128(7), Enablement::ALL);
    assert_eq!(late_calls.take().len(), 1);

    for h in [handle, other, late] {
        assert_eq!(unregister(h), STATUS_SUCCESS);
    }
    kernel.etw_enable(PROVIDER, Enablement::ALL);
    assert!(calls.take().is_empty(), "no callback after unregister");
}

#[test]
fn register_validates_and_can_be_fault_injected() {
    let kernel = Kernel::new();
    let mut handle = 0;
    // SAFETY: NULL provider id (rejected).
    let status = unsafe { EtwRegister(ptr::null(), None, ptr::null_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    // SAFETY: NULL handle pointer (rejected).
    let status = unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);

    kernel.inject(Fault::Call("EtwRegister", 1));
    // SAFETY: valid arguments.
    let status = unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_NO_MEMORY);
    assert_eq!(handle, 0, "no handle written on failure");
    kernel.inject(Fault::Allocation(1));
    // SAFETY: valid arguments.
    let status = unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_NO_MEMORY);
    assert_eq!(kernel.etw_registrations(), 0);
    assert_eq!(
        kernel.faults_triggered(),
        [Fault::Call("EtwRegister", 1), Fault::Allocation(1)]
    );

    // SAFETY: valid arguments; no callback.
    let status = unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    kernel.assert_no_leaks();
}

#[test]
fn register_above_passive_bugchecks() {
    let check = expect_bugcheck("register_above_passive_bugchecks", || {
        let _kernel = Kernel::new();
        set_current_irql(DISPATCH_LEVEL);
        let mut handle = 0;
        // SAFETY: valid arguments (the IRQL is wrong).
        unsafe { EtwRegister(&PROVIDER, None, ptr::null_mut(), &raw mut handle) };
    });
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.api, "EtwRegister");
}

#[test]
fn a_callback_may_unregister_itself() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    calls.unregister_on_disable.store(handle, Ordering::SeqCst);
    kernel.etw_disable(PROVIDER);
    assert_eq!(calls.take().last().map(|c| c.code), Some(0));
    assert_eq!(kernel.etw_registrations(), 0);
}

#[test]
fn unregister_waits_for_a_callback_in_flight() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    calls.entered.store(false, Ordering::SeqCst);
    calls.finished.store(false, Ordering::SeqCst);
    calls.delay_ms.store(200, Ordering::SeqCst);
    thread::scope(|s| {
        let session = kernel.scoped(s, || kernel.etw_disable(PROVIDER));
        while !calls.entered.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert_eq!(unregister(handle), STATUS_SUCCESS);
        assert!(
            calls.finished.load(Ordering::SeqCst),
            "EtwUnregister returned while the enable callback was still running"
        );
        session.join().unwrap();
    });
}

// ---- filtering -----------------------------------------------------------------------------

#[test]
fn events_are_filtered_by_level_and_keyword() {
    let kernel = Kernel::new();
    kernel.etw_enable(PROVIDER, Enablement::new(3, 0x6, 0x2));
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let meta = event_meta("E", 0, &[]);
    let blobs: [(&[u8], u32); 1] = [(&meta, 1)];
    for (level, keyword, wanted) in [
        (3, 0x2, true),
        (4, 0x2, false),
        (0, 0x2, true),
        (1, 0x4, false), // match-all bit 0x2 missing
        (2, 0x6, true),
        (2, 0, true), // keyword 0 always passes
        (2, 0x8, false),
        (0, 0x8, false), // level 0 passes, the keyword does not
    ] {
        kernel.etw_clear();
        assert_eq!(write(handle, level, keyword, &blobs), STATUS_SUCCESS);
        assert_eq!(
            kernel.etw_events().len(),
            usize::from(wanted),
            "level {level} keyword {keyword:#x}"
        );
    }
    kernel.etw_disable(PROVIDER);
    kernel.etw_clear();
    assert_eq!(write(handle, 0, 0, &blobs), STATUS_SUCCESS);
    assert!(kernel.etw_events().is_empty(), "disabled: dropped");

    assert_eq!(
        write(0, 1, 0, &blobs),
        STATUS_INVALID_HANDLE,
        "no registration's handle"
    );
    assert_eq!(unregister(handle), STATUS_SUCCESS);
}

// ---- decoding ------------------------------------------------------------------------------

/// Every field kind the SDK uses, and tags, in the crate's layout: what
/// `write_event!(P, "Everything", tag(0x1234567), str8("s", "hi"), u32("u", &7),
/// u64("w", &(1 << 40)), i32("i", &-5), bool32("b", &1), guid("g", &g), win_ntstatus("st",
/// &STATUS_UNSUCCESSFUL), pointer("p", &0xFFFF_8000_0000_1000), u32("tagged", &9,
/// tag(0x0FFFFFFF)), u32_hex("one_byte_tag", &3, tag(0x200000)), u32_slice("arr", &[10, 11]),
/// cstr8("c", "zt"))` writes.
#[test]
#[expect(clippy::too_many_lines, reason = "one field of each kind, spelled out")]
fn decoder_reads_the_tracelogging_layout() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let fields = [
        field("s", 23, 35),  // str8: Str8, OutType Utf8
        field("u", 8, 0),    // u32
        field("w", 10, 0),   // u64
        field("i", 7, 0),    // i32
        field("b", 13, 0),   // bool32
        field("g", 15, 0),   // guid
        field("st", 20, 14), // win_ntstatus: Hex32, OutType NtStatus
        field("p", 21, 0),   // pointer: HexSize, which is Hex64 on x64
        FieldSpec {
            tag: Some(0x0FFF_FFFF),
            ..field("tagged", 8, 0)
        },
        FieldSpec {
            tag: Some(0x0020_0000),
            ..field("one_byte_tag", 20, 0) // u32_hex: Hex32
        },
        FieldSpec {
            slice: true,
            ..field("arr", 8, 0) // u32_slice
        },
        field("c", 2, 35), // cstr8: CStr8, OutType Utf8
    ];
    let meta = event_meta("Everything", 0x0123_4567, &fields);

    // Spot-check the generic builder against bytes written out literally.
    let mut literal = Vec::new();
    literal.extend_from_slice(&u16::try_from(meta.len()).unwrap().to_le_bytes());
    literal.extend_from_slice(&[0x80 | 0x09, 0x80 | 0x0D, 0x80 | 0x0A, 0x67]); // 0x1234567
    literal.extend_from_slice(b"Everything\0");
    literal.extend_from_slice(b"s\0\x97\x23u\0\x08w\0\x0Ai\0\x07b\0\x0Dg\0\x0Fst\0\x94\x0Ep\0\x15");
    literal.extend_from_slice(b"tagged\0\x88\x80\xFF\xFF\xFF\x7F");
    literal.extend_from_slice(b"one_byte_tag\0\x94\x80\x01");
    literal.extend_from_slice(b"arr\0\x48c\0\x82\x23");
    assert_eq!(meta, literal);

    let guid = GUID::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
    // One data descriptor per generated EventDataDescriptor: counted values get a length
    // descriptor then the data; slices a count then the elements; cstr8 the bytes then a
    // separate NUL.
    let pmeta = provider_meta("NetEbpfExtProvider");
    let payload: [Vec<u8>; 15] = [
        2u16.to_le_bytes().to_vec(),
        b"hi".to_vec(),
        7u32.to_le_bytes().to_vec(),
        (1u64 << 40).to_le_bytes().to_vec(),
        (-5i32).to_le_bytes().to_vec(),
        1i32.to_le_bytes().to_vec(),
        guid.to_bytes_le().to_vec(),
        0xC000_0001u32.to_le_bytes().to_vec(),
        0xFFFF_8000_0000_1000u64.to_le_bytes().to_vec(),
        9u32.to_le_bytes().to_vec(),
        3u32.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        [10u32, 11].iter().flat_map(|v| v.to_le_bytes()).collect(),
        b"zt".to_vec(),
        vec![0],
    ];
    let descriptors: Vec<_> = [descriptor(&pmeta, 2), descriptor(&meta, 1)]
        .into_iter()
        .chain(payload.iter().map(|chunk| descriptor(chunk, 0)))
        .collect();
    let mut e = event(4, 1);
    e.Opcode = 1;
    let related = GUID::from_u128(5);
    assert_eq!(
        write_descriptors(handle, &e, None, Some(&related), &descriptors),
        STATUS_SUCCESS
    );
    let captured = kernel.etw_events().pop().unwrap();
    assert_eq!(captured.decode_error, None);
    assert_eq!(captured.name, "Everything");
    assert_eq!(captured.provider, PROVIDER);
    assert_eq!(
        captured.provider_name.as_deref(),
        Some("NetEbpfExtProvider")
    );
    assert_eq!(
        (
            captured.level,
            captured.keyword,
            captured.opcode,
            captured.channel
        ),
        (4, 1, 1, 11)
    );
    assert_eq!(
        (captured.activity_id, captured.related_activity_id),
        (None, Some(related))
    );
    let decoded: Vec<_> = captured
        .fields
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.in_type,
                f.out_type,
                f.tag,
                f.value.clone(),
            )
        })
        .collect();
    assert_eq!(
        decoded,
        [
            ("s", 23, 35, 0, Value::Str("hi".into())),
            ("u", 8, 0, 0, Value::U64(7)),
            ("w", 10, 0, 0, Value::U64(1 << 40)),
            ("i", 7, 0, 0, Value::I64(-5)),
            ("b", 13, 0, 0, Value::Bool(true)),
            ("g", 15, 0, 0, Value::Guid(guid)),
            ("st", 20, 14, 0, Value::U64(0xC000_0001)),
            ("p", 21, 0, 0, Value::U64(0xFFFF_8000_0000_1000)),
            ("tagged", 8, 0, 0x0FFF_FFFF, Value::U64(9)),
            ("one_byte_tag", 20, 0, 0x0020_0000, Value::U64(3)),
            (
                "arr",
                8,
                0,
                0,
                Value::Array(vec![Value::U64(10), Value::U64(11)])
            ),
            ("c", 2, 35, 0, Value::Str("zt".into())),
        ]
    );
    assert_eq!(decode_event_metadata(&meta).unwrap().tag, 0x0123_4567);
    assert_eq!(
        decode_event_metadata(&event_meta("E", 0x0020_0000, &[]))
            .unwrap()
            .tag,
        0x0020_0000
    );
    assert_eq!(unregister(handle), STATUS_SUCCESS);
}

#[test]
fn other_in_types_decode() {
    let meta = event_meta(
        "More",
        0,
        &[
            field("i8", 3, 0),
            field("u8", 4, 0),
            field("i16", 5, 0),
            field("u16", 6, 0),
            field("i64", 9, 0),
            field("f32", 11, 0),
            field("f64", 12, 0),
            field("bin", 14, 0),
            field("ft", 17, 0),
            field("st", 18, 0),
            field("sid", 19, 0),
            field("h64", 21, 0),
            field("s16", 22, 0),
            field("c16", 1, 0),
            field("binc", 25, 0),
        ],
    );
    let mut data = vec![0xFE, 0xFF];
    data.extend_from_slice(&(-2i16).to_le_bytes());
    data.extend_from_slice(&0xBEEFu16.to_le_bytes());
    data.extend_from_slice(&i64::MIN.to_le_bytes());
    data.extend_from_slice(&1.5f32.to_le_bytes());
    data.extend_from_slice(&(-0.25f64).to_le_bytes());
    data.extend_from_slice(&[3, 0, 1, 2, 3]);
    data.extend_from_slice(&0x01D9_0000_0000_0000u64.to_le_bytes());
    data.extend_from_slice(&[7; 16]);
    let sid = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 32, 2, 0, 0];
    data.extend_from_slice(&sid);
    data.extend_from_slice(&u64::MAX.to_le_bytes());
    data.extend_from_slice(&[4, 0, b'o', 0, b'k', 0]);
    data.extend_from_slice(&[b'z', 0, 0, 0]);
    data.extend_from_slice(&[1, 0, 9]);
    let decoded = decode_payload(&decode_event_metadata(&meta).unwrap(), &data).unwrap();
    let values: Vec<_> = decoded.into_iter().map(|f| f.value).collect();
    assert_eq!(
        values,
        [
            Value::I64(-2),
            Value::U64(0xFF),
            Value::I64(-2),
            Value::U64(0xBEEF),
            Value::I64(i64::MIN),
            Value::F64(1.5),
            Value::F64(-0.25),
            Value::Binary(vec![1, 2, 3]),
            Value::U64(0x01D9_0000_0000_0000),
            Value::Binary(vec![7; 16]),
            Value::Binary(sid.to_vec()),
            Value::U64(u64::MAX),
            Value::Str("ok".into()),
            Value::Str("z".into()),
            Value::Binary(vec![9]),
        ]
    );
}

#[test]
fn truncated_or_malformed_input_is_an_error_not_a_crash() {
    let meta = event_meta(
        "E",
        0x0123_4567,
        &[
            field("s", 23, 35),
            FieldSpec {
                tag: Some(0x0FFF_FFFF),
                ..field("t", 8, 0)
            },
            FieldSpec {
                slice: true,
                ..field("a", 8, 0)
            },
        ],
    );
    let mut data = vec![2, 0, b'h', b'i'];
    data.extend_from_slice(&1u32.to_le_bytes());
    data.extend_from_slice(&[1, 0]);
    data.extend_from_slice(&2u32.to_le_bytes());
    let decoded = decode_event_metadata(&meta).unwrap();
    assert_eq!(decode_payload(&decoded, &data).unwrap().len(), 3);
    for n in 0..meta.len() {
        assert!(
            decode_event_metadata(&meta[..n]).is_err(),
            "{n}-byte prefix"
        );
    }
    for n in 0..data.len() {
        assert!(
            decode_payload(&decoded, &data[..n]).is_err(),
            "{n}-byte prefix"
        );
    }
    let mut long = data.clone();
    long.push(0);
    assert!(decode_payload(&decoded, &long).is_err(), "bytes left over");

    // Metadata whose own size field lies, in both directions.
    let mut lying = meta.clone();
    lying[0] = lying[0].wrapping_sub(2); // cuts the last field's name short
    assert!(decode_event_metadata(&lying).is_err());
    lying[..2].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(decode_event_metadata(&lying).is_err());
    // Unterminated names, a tag that never ends, a missing OutType byte.
    assert!(decode_event_metadata(&[5, 0, 0, b'E', b'x']).is_err());
    assert!(decode_event_metadata(&[7, 0, 0, b'E', 0, b'f', b'x']).is_err());
    assert!(decode_event_metadata(&[8, 0, 0x80, 0x80, 0x80, 0x80, 0x01, 0]).is_err());
    assert!(decode_event_metadata(&[7, 0, 0, b'E', 0, b'f', 0]).is_err());
    assert!(decode_event_metadata(&[8, 0, 0, b'E', 0, b'f', 0, 0x88]).is_err());
    // Types the decoder does not know, and structs.
    let bad = event_meta("E", 0, &[field("x", 31, 0)]);
    assert!(decode_payload(&decode_event_metadata(&bad).unwrap(), &[0; 8]).is_err());
    let structure = event_meta("E", 0, &[field("st", 24, 1), field("m", 8, 0)]);
    assert!(decode_payload(&decode_event_metadata(&structure).unwrap(), &[0; 4]).is_err());
    assert!(decode_provider_metadata(&[2]).is_err());
    assert!(decode_provider_metadata(&[4, 0, b'P', b'x']).is_err());

    // Through EtwWriteTransfer: still captured, with the error and the name it could read.
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    write(handle, 1, 0, &[(&meta, 1), (&data[..5], 0)]);
    write(handle, 1, 0, &[(&meta[..meta.len() - 1], 1), (&data, 0)]);
    let events = kernel.etw_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].name, "E");
    assert!(events[0].fields.is_empty());
    assert!(events[0].decode_error.is_some());
    assert_eq!(events[1].name, "");
    assert!(events[1].decode_error.is_some());
    // A descriptor with a NULL pointer and a size is reported, not read.
    kernel.etw_clear();
    let null = EVENT_DATA_DESCRIPTOR {
        Ptr: 0,
        Size: 4,
        Reserved: 0,
    };
    let descriptors = [descriptor(&meta, 1), null];
    write_descriptors(handle, &event(1, 0), None, None, &descriptors);
    assert!(kernel.etw_events()[0].decode_error.is_some());
    assert_eq!(unregister(handle), STATUS_SUCCESS);
}

#[test]
fn event_without_metadata_is_captured_with_an_error() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    assert_eq!(write(handle, 1, 0, &[(&[1, 2, 3], 0)]), STATUS_SUCCESS);
    let event = kernel.etw_events().pop().unwrap();
    assert_eq!(event.name, "");
    assert!(event.fields.is_empty());
    assert!(event.decode_error.is_some());
    assert_eq!(unregister(handle), STATUS_SUCCESS);
}

// ---- EtwSetInformation ---------------------------------------------------------------------

#[test]
fn traits_and_information_classes() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let mut traits = provider_meta("Traits");
    assert_eq!(set_traits(handle, 2, &traits), STATUS_SUCCESS);
    let stored = traits.clone();
    traits[2] = b'X';
    assert_eq!(
        kernel.etw_provider_traits(PROVIDER),
        Some(stored),
        "a copy is kept"
    );
    assert_eq!(set_traits(handle, 0, &[1, 2, 3]), STATUS_SUCCESS);
    assert_eq!(
        set_traits(handle, 7, &traits),
        STATUS_INVALID_DEVICE_REQUEST
    );
    assert_eq!(set_traits(0, 2, &traits), STATUS_INVALID_HANDLE);
    // SAFETY: NULL with a length (rejected, not read).
    let status = unsafe { EtwSetInformation(handle, 2, ptr::null(), 8) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);

    // Events without provider metadata take the provider name from the traits.
    let meta = event_meta("E", 0, &[]);
    write(handle, 1, 0, &[(&meta, 1)]);
    assert_eq!(
        kernel.etw_events()[0].provider_name.as_deref(),
        Some("Traits")
    );
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    assert_eq!(kernel.etw_provider_traits(PROVIDER), None);
}

// ---- activity ids --------------------------------------------------------------------------

#[test]
fn activity_ids_are_per_thread() {
    let kernel = Kernel::new();
    let (mut first, mut second) = (GUID::NULL, GUID::NULL);
    assert_eq!(
        activity(EVENT_ACTIVITY_CTRL_CREATE_ID, &mut first),
        STATUS_SUCCESS
    );
    activity(EVENT_ACTIVITY_CTRL_CREATE_ID, &mut second);
    assert_ne!(first, GUID::NULL);
    assert_ne!(first, second, "created ids are unique");

    let mut id = GUID::from_u128(1);
    activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut id);
    assert_eq!(id, GUID::NULL, "a thread starts with GUID_NULL");
    let mut set = first;
    assert_eq!(
        activity(EVENT_ACTIVITY_CTRL_SET_ID, &mut set),
        STATUS_SUCCESS
    );
    activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut id);
    assert_eq!(id, first);

    let other = kernel.spawn(|| {
        let mut there = GUID::from_u128(1);
        activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut there);
        there
    });
    assert_eq!(
        other.join().unwrap(),
        GUID::NULL,
        "another thread has its own id"
    );

    let mut swap = second;
    activity(EVENT_ACTIVITY_CTRL_GET_SET_ID, &mut swap);
    assert_eq!(swap, first, "GET_SET returns the previous id");
    activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut id);
    assert_eq!(id, second);

    let mut previous = GUID::NULL;
    activity(EVENT_ACTIVITY_CTRL_CREATE_SET_ID, &mut previous);
    assert_eq!(previous, second, "CREATE_SET returns the previous id");
    activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut id);
    assert!(id != second && id != first && id != GUID::NULL);

    assert_eq!(activity(9, &mut id), STATUS_INVALID_PARAMETER);
    // SAFETY: NULL (rejected).
    let status = unsafe { EtwActivityIdControl(EVENT_ACTIVITY_CTRL_GET_ID, ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);

    // CREATE works at any IRQL.
    set_current_irql(DISPATCH_LEVEL);
    assert_eq!(
        activity(EVENT_ACTIVITY_CTRL_CREATE_ID, &mut first),
        STATUS_SUCCESS
    );
    set_current_irql(PASSIVE_LEVEL);
}

#[test]
fn events_carry_the_thread_activity_id_unless_given_one() {
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let mut none = GUID::NULL;
    activity(EVENT_ACTIVITY_CTRL_SET_ID, &mut none);
    let meta = event_meta("E", 0, &[]);
    let descriptors = [descriptor(&meta, 1)];
    write_descriptors(handle, &event(1, 0), None, None, &descriptors);
    let mut current = GUID::NULL;
    activity(EVENT_ACTIVITY_CTRL_CREATE_SET_ID, &mut current);
    let mut thread_id = GUID::NULL;
    activity(EVENT_ACTIVITY_CTRL_GET_ID, &mut thread_id);
    write_descriptors(handle, &event(1, 0), None, None, &descriptors);
    let explicit = GUID::from_u128(0x42);
    write_descriptors(handle, &event(1, 0), Some(&explicit), None, &descriptors);
    let ids: Vec<_> = kernel.etw_events().iter().map(|e| e.activity_id).collect();
    assert_eq!(ids, [None, Some(thread_id), Some(explicit)]);
    assert_eq!(unregister(handle), STATUS_SUCCESS);
}

#[test]
fn an_image_unloading_with_its_etw_provider_registered_bugchecks() {
    let callback = record as *const () as usize;
    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    let check = expect_bugcheck(
        "an_image_unloading_with_its_etw_provider_registered_bugchecks",
        || image_unloaded("tracer.sys", callback..callback + 1),
    );
    assert_eq!(
        check.code,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS
    );
    assert!(
        check.message.contains("ETW enable callback of provider"),
        "{}",
        check.message
    );
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    image_unloaded("tracer.sys", callback..callback + 1);
    kernel.assert_no_leaks();
}

unsafe extern "win64" fn raises_irql(
    _source: *const GUID,
    _code: u32,
    _level: u8,
    _any: u64,
    _all: u64,
    _filter: *const EVENT_FILTER_DESCRIPTOR,
    _context: *mut c_void,
) {
    // SAFETY: deliberately not lowered again: ETW must catch it.
    let _ = unsafe { ebpf_ext_sys::intrin::KeRaiseIrql(ebpf_ext_sys::wdm::DISPATCH_LEVEL) };
}

#[test]
fn an_enable_callback_returning_at_a_raised_irql_bugchecks() {
    let check = expect_bugcheck(
        "an_enable_callback_returning_at_a_raised_irql_bugchecks",
        || {
            let _kernel = Kernel::new();
            let (provider, mut handle) = (PROVIDER, 0);
            // SAFETY: valid id, callback and out pointer; no context.
            let _ = unsafe {
                EtwRegister(
                    &raw const provider,
                    Some(raises_irql),
                    ptr::null_mut(),
                    &raw mut handle,
                )
            };
        },
    );
    assert_eq!(check.code, 0x4A, "IRQL_GT_ZERO_AT_SYSTEM_SERVICE");
    assert_eq!(check.api, "ETWENABLECALLBACK");
    assert_eq!(check.parameters[1..3], [2, 0]);
}

/// Event data in paged pool may be written up to APC_LEVEL; above it the page may be out, so
/// it bug-checks. Non-paged data is fine at any IRQL.
#[test]
fn event_data_in_paged_pool_is_refused_above_apc_level_only() {
    use ebpf_ext_sys::wdm::{
        ExAllocatePool2, ExFreePoolWithTag, POOL_FLAG_NON_PAGED, POOL_FLAG_PAGED,
    };
    const TAG: u32 = u32::from_le_bytes(*b"Etwp");
    /// Writes one event with the 8 bytes at `data` at `irql`.
    fn write_at(handle: REGHANDLE, data: *mut c_void, irql: u8) -> i32 {
        // SAFETY: `data` is a live allocation of 8 bytes.
        let bytes = unsafe { core::slice::from_raw_parts(data.cast::<u8>(), 8) };
        let descriptors = [descriptor(bytes, 0)];
        set_current_irql(irql);
        let status = write_descriptors(handle, &event(1, 0), None, None, &descriptors);
        set_current_irql(PASSIVE_LEVEL);
        status
    }

    let kernel = Kernel::new();
    let calls = Calls::default();
    let handle = register(PROVIDER, &calls);
    // SAFETY: a kernel is bound; it is freed below.
    let paged = unsafe { ExAllocatePool2(POOL_FLAG_PAGED, 8, TAG) };
    // SAFETY: as above.
    let unpaged = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 8, TAG) };
    assert_eq!(write_at(handle, paged, PASSIVE_LEVEL), STATUS_SUCCESS);
    assert_eq!(write_at(handle, unpaged, DISPATCH_LEVEL), STATUS_SUCCESS);
    assert_eq!(kernel.etw_events().len(), 2);
    let check = expect_bugcheck(
        "event_data_in_paged_pool_is_refused_above_apc_level_only",
        || {
            write_at(handle, paged, DISPATCH_LEVEL);
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (IRQL_NOT_LESS_OR_EQUAL, "EtwWriteTransfer")
    );
    assert!(check.message.contains("paged pool"), "{}", check.message);
    // SAFETY: allocated above with this tag, freed once.
    unsafe { ExFreePoolWithTag(paged, TAG) };
    // SAFETY: as above.
    unsafe { ExFreePoolWithTag(unpaged, TAG) };
    assert_eq!(unregister(handle), STATUS_SUCCESS);
    kernel.assert_no_leaks();
}
