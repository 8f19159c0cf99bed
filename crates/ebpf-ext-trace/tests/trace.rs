//! Trace events reach usersim's ETW capture with the names, levels, keywords, opcodes and
//! fields of the C common library, encoded as the `tracelogging` crate encodes them.
//!
//! The registration is a driver global, kept per simulated kernel on the host: tests running
//! as threads of one process (plain `cargo test`) each see only their own kernel's.

use core::cell::Cell;
use std::sync::Barrier;
use std::thread;

use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_trace::host::{DATA_CAPACITY, Field, encode_for_test};
use ebpf_ext_trace::{Level, Tracing, keyword};
use ebpf_ext_usersim::tracelogging::{Value, decode_event_metadata, decode_payload};
use ebpf_ext_usersim::{CapturedEvent, Enablement, Fault, Kernel};

tracelogging::define_provider!(
    PROVIDER,
    "EbpfExtTestProvider",
    id("d15cc421-e9e4-459b-87a6-b45b7d84e9a8")
);
const PROVIDER_ID: GUID = GUID::from_u128(0xd15cc421_e9e4_459b_87a6_b45b7d84e9a8);

/// A fresh kernel, bound to this thread, with nothing registered.
fn setup() -> Kernel {
    Kernel::new()
}

fn only_event(kernel: &Kernel) -> CapturedEvent {
    let events = kernel.etw_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = events.into_iter().next().unwrap();
    assert_eq!(event.decode_error, None);
    assert_eq!(event.provider, PROVIDER_ID);
    assert_eq!(event.provider_name.as_deref(), Some("EbpfExtTestProvider"));
    assert_eq!(event.channel, 11);
    kernel.etw_clear();
    event
}

fn field_types(event: &CapturedEvent) -> Vec<(&str, u8, u8)> {
    event
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.in_type, f.out_type))
        .collect()
}

fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

#[test]
#[expect(clippy::too_many_lines, reason = "every macro, one after the other")]
fn every_macro_family() {
    let kernel = setup();
    let _tracing = Tracing::start(&PROVIDER).expect("register");

    ebpf_ext_trace::trace_message!(Level::Informational, keyword::EXTENSION, "hello");
    let e = only_event(&kernel);
    assert_eq!(
        (e.name.as_str(), e.level, e.keyword, e.opcode),
        ("EbpfExtGenericMessage", 4, 0x4, 0)
    );
    assert_eq!(field_types(&e), [("Message", 23, 35)]);
    assert_eq!(e.field("Message"), Some(&s("hello")));

    ebpf_ext_trace::trace_api_failure!(
        keyword::BASE,
        "NmrRegisterProvider",
        0xC000_009Au32.cast_signed()
    );
    let e = only_event(&kernel);
    assert_eq!(
        (e.name.as_str(), e.level, e.keyword, e.opcode),
        ("EbpfExtApiError", 2, 0x2, 0)
    );
    assert_eq!(field_types(&e), [("api", 23, 35), ("status", 20, 14)]);
    assert_eq!(e.field("api"), Some(&s("NmrRegisterProvider")));
    assert_eq!(e.field("status"), Some(&Value::U64(0xC000_009A)));

    ebpf_ext_trace::trace_api_failure_message_string!(
        keyword::SOCK_OPS,
        "IoCreateDevice",
        -1,
        "device",
        "\\Device\\X"
    );
    let e = only_event(&kernel);
    assert_eq!(
        (e.name.as_str(), e.level, e.keyword),
        ("EbpfExtApiError", 2, 0x40)
    );
    assert_eq!(
        field_types(&e),
        [
            ("api", 23, 35),
            ("status", 20, 14),
            ("Message", 23, 35),
            ("string_value", 23, 35)
        ]
    );
    assert_eq!(e.field("status"), Some(&Value::U64(0xFFFF_FFFF)));
    assert_eq!(e.field("Message"), Some(&s("device")));
    assert_eq!(e.field("string_value"), Some(&s("\\Device\\X")));

    ebpf_ext_trace::trace_message_status!(Level::Warning, keyword::BASE, "attach", 0x103);
    let e = only_event(&kernel);
    assert_eq!(
        (e.name.as_str(), e.level, field_types(&e)),
        (
            "EbpfExtGenericMessage",
            3,
            vec![("Message", 23, 35), ("status", 20, 14)]
        )
    );
    assert_eq!(e.field("status"), Some(&Value::U64(0x103)));

    ebpf_ext_trace::trace_message_string!(Level::Verbose, keyword::NETEVENT, "name", "value");
    let e = only_event(&kernel);
    assert_eq!((e.level, e.keyword), (5, 0x100));
    assert_eq!(
        field_types(&e),
        [("Message", 23, 35), ("string_value", 23, 35)]
    );
    assert_eq!(e.field("string_value"), Some(&s("value")));

    ebpf_ext_trace::trace_message_value!(Level::Verbose, keyword::BASE, "count", 1u64 << 40);
    let e = only_event(&kernel);
    assert_eq!(
        (field_types(&e)[1], e.field("value")),
        (("value", 10, 0), Some(&Value::U64(1 << 40)))
    );

    ebpf_ext_trace::trace_message_u32!(Level::Verbose, keyword::BASE, "small", 7u32);
    let e = only_event(&kernel);
    assert_eq!(
        (field_types(&e)[1], e.field("value")),
        (("value", 8, 0), Some(&Value::U64(7)))
    );

    ebpf_ext_trace::trace_message_bool!(Level::Verbose, keyword::BASE, "flag", true);
    let e = only_event(&kernel);
    assert_eq!(
        (field_types(&e)[1], e.field("value")),
        (("value", 13, 0), Some(&Value::Bool(true)))
    );

    ebpf_ext_trace::trace_message_pointer!(Level::Verbose, keyword::BASE, "ptr", 0x1234usize);
    let e = only_event(&kernel);
    assert_eq!(
        (field_types(&e)[1], e.field("value")),
        (("value", 21, 0), Some(&Value::U64(0x1234)))
    );

    let guid = GUID::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    ebpf_ext_trace::trace_message_guid_status!(Level::Critical, keyword::BASE, "module", guid, 5);
    let e = only_event(&kernel);
    assert_eq!(e.level, 1);
    assert_eq!(
        field_types(&e),
        [("Message", 23, 35), ("*guid", 15, 0), ("Status", 20, 14)]
    );
    assert_eq!(e.field("*guid"), Some(&Value::Guid(guid)));
    assert_eq!(e.field("Status"), Some(&Value::U64(5)));

    ebpf_ext_trace::trace_message!(Level::LogAlways, keyword::BASE, "always");
    assert_eq!(only_event(&kernel).level, 0);
}

fn traced_function() {
    ebpf_ext_trace::trace_entry!();
    ebpf_ext_trace::trace_exit!();
}

#[test]
fn entry_and_exit_name_the_function() {
    let kernel = setup();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    traced_function();
    let events = kernel.etw_events();
    assert_eq!(events.len(), 2);
    let (entry, exit) = (&events[0], &events[1]);
    assert_eq!(
        (
            entry.name.as_str(),
            entry.level,
            entry.keyword,
            entry.opcode
        ),
        ("EbpfExtGenericMessage", 5, 0x1, 1)
    );
    assert_eq!(
        (exit.name.as_str(), exit.level, exit.keyword, exit.opcode),
        ("EbpfExtGenericMessage", 5, 0x1, 2)
    );
    assert_eq!(field_types(entry), [("Enter", 23, 35)]);
    assert_eq!(field_types(exit), [("Exit", 23, 35)]);
    assert_eq!(entry.field("Enter"), Some(&s("trace::traced_function")));
    assert_eq!(exit.field("Exit"), Some(&s("trace::traced_function")));
    ebpf_ext_trace::terminate();
}

#[test]
fn disabled_levels_and_keywords_are_not_written_nor_evaluated() {
    let kernel = setup();
    kernel.etw_enable(PROVIDER_ID, Enablement::new(2, keyword::BASE, 0));
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    let evaluated = Cell::new(0);
    let value = || {
        evaluated.set(evaluated.get() + 1);
        9u64
    };
    let message = || {
        evaluated.set(evaluated.get() + 1);
        "built"
    };
    ebpf_ext_trace::trace_message_value!(Level::Verbose, keyword::BASE, message(), value());
    ebpf_ext_trace::trace_message_value!(
        Level::Error,
        keyword::EXTENSION,
        "wrong keyword",
        value()
    );
    ebpf_ext_trace::trace_entry!();
    assert!(!ebpf_ext_trace::enabled(Level::Warning, keyword::BASE));
    assert!(ebpf_ext_trace::enabled(Level::Error, keyword::BASE));
    assert!(kernel.etw_events().is_empty());
    assert_eq!(
        evaluated.get(),
        0,
        "arguments of a disabled event must not be evaluated"
    );
    ebpf_ext_trace::trace_message_value!(Level::Error, keyword::BASE, message(), value());
    assert_eq!(only_event(&kernel).field("value"), Some(&Value::U64(9)));
    assert_eq!(evaluated.get(), 2);

    // A session stopping disables the provider through its enable callback.
    kernel.etw_disable(PROVIDER_ID);
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "nobody listens");
    assert!(kernel.etw_events().is_empty());
    // And enabling it again (every keyword, up to Warning) is seen at once.
    kernel.etw_enable(PROVIDER_ID, Enablement::new(3, u64::MAX, 0));
    ebpf_ext_trace::trace_message!(Level::Warning, keyword::XDP, "listening again");
    ebpf_ext_trace::trace_message!(Level::Informational, keyword::XDP, "too verbose");
    assert_eq!(only_event(&kernel).level, 3);
    ebpf_ext_trace::terminate();
}

#[test]
fn initiate_is_idempotent_and_terminate_unregisters() {
    let kernel = setup();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    ebpf_ext_trace::initiate(&PROVIDER).expect("second initiate is a no-op");
    assert_eq!(kernel.etw_registrations(), 1);
    assert!(
        kernel
            .etw_provider_traits(PROVIDER_ID)
            .is_some_and(|t| t == PROVIDER.raw_meta()),
        "Provider::register sets the provider metadata as traits"
    );
    assert!(ebpf_ext_trace::provider().is_some_and(|p| core::ptr::eq(p, &raw const PROVIDER)));
    ebpf_ext_trace::terminate();
    ebpf_ext_trace::terminate();
    assert_eq!(kernel.etw_registrations(), 0);
    assert!(ebpf_ext_trace::provider().is_none());
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "after terminate");
    assert!(kernel.etw_events().is_empty());

    // Registering again after terminate works (the crate panics only on a double register).
    ebpf_ext_trace::initiate(&PROVIDER).expect("register again");
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "back");
    assert_eq!(only_event(&kernel).field("Message"), Some(&s("back")));
    ebpf_ext_trace::terminate();
    kernel.assert_no_leaks();
}

#[test]
fn the_guard_unregisters_when_dropped() {
    let kernel = setup();
    {
        let _tracing = Tracing::start(&PROVIDER).expect("register");
        assert_eq!(kernel.etw_registrations(), 1);
    }
    assert_eq!(kernel.etw_registrations(), 0);
    assert!(ebpf_ext_trace::provider().is_none());
}

#[test]
fn register_failure_is_reported_and_retryable() {
    let kernel = setup();
    kernel.inject(Fault::Call("EtwRegister", 1));
    assert!(matches!(
        ebpf_ext_trace::initiate(&PROVIDER),
        Err(ebpf_ext_sys::Error::Api {
            api: "EtwRegister",
            ..
        })
    ));
    assert!(ebpf_ext_trace::provider().is_none());
    assert!(Tracing::start(&PROVIDER).is_ok_and(|t| {
        drop(t);
        true
    }));
    kernel.inject(Fault::Allocation(1));
    assert!(Tracing::start(&PROVIDER).is_err());
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "not registered");
    assert!(kernel.etw_events().is_empty());
    assert_eq!(kernel.etw_registrations(), 0);
    ebpf_ext_trace::initiate(&PROVIDER).expect("a later try");
    assert_eq!(kernel.etw_registrations(), 1);
    ebpf_ext_trace::terminate();
}

#[test]
fn concurrent_initiate_registers_once() {
    let kernel = setup();
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| kernel.scoped(s, || ebpf_ext_trace::initiate(&PROVIDER)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(results.iter().any(Result::is_ok));
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(ebpf_ext_sys::Error::InvalidDeviceState))),
        "{results:?}"
    );
    assert_eq!(kernel.etw_registrations(), 1);
    ebpf_ext_trace::terminate();
    assert_eq!(kernel.etw_registrations(), 0);
}

/// Event metadata as the `tracelogging` macros' generator lays out `_TlgMeta` for these field
/// kinds: u16 size, event tag byte 0, name, then per field name + InType (| 0x80 and OutType
/// when the kind's OutType is not Default).
fn expected_meta(name: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
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

/// The host encoder's bytes against the `tracelogging` crate's layout, built by hand from its
/// generator (what `write_event!(P, "EbpfExtApiError", str8("api", "Nmr"),
/// win_ntstatus("status", &-2), u32("n", &3), u64("w", &(1 << 33)), bool32("b", &1),
/// pointer("p", &0x10), guid("g", &g))` writes; the str8/win_ntstatus bytes also appear
/// literally in the driver build's `write_event!` expansion: `b"...\0Message\0\x97#"`).
#[test]
fn host_encoding_matches_the_tracelogging_layout() {
    let guid = GUID::from_u128(0x00112233_4455_6677_8899_aabbccddeeff);
    let (meta, meta_len, data, data_len) = encode_for_test(
        "EbpfExtApiError",
        &[
            Field::str8("api", "Nmr"),
            Field::win_ntstatus("status", -2),
            Field::u32("n", 3),
            Field::u64("w", 1 << 33),
            Field::bool32("b", true),
            Field::pointer("p", 0x10),
            Field::guid("g", guid),
        ],
    );
    let expected = expected_meta(
        "EbpfExtApiError",
        &[
            ("api", &[0x17 | 0x80, 35]),    // Str8 (23), OutType Utf8
            ("status", &[0x14 | 0x80, 14]), // Hex32 (20), OutType NtStatus
            ("n", &[8]),                    // U32
            ("w", &[10]),                   // U64
            ("b", &[13]),                   // Bool32
            ("p", &[21]),                   // HexSize = Hex64 on x64
            ("g", &[15]),                   // Guid
        ],
    );
    assert_eq!(&meta[..meta_len], &expected[..]);
    assert_eq!(
        &meta[..meta_len],
        b"\x31\x00\x00EbpfExtApiError\0api\0\x97#status\0\x94\x0en\0\x08w\0\x0ab\0\x0dp\0\x15g\0\x0f"
    );
    let mut payload = vec![3, 0];
    payload.extend_from_slice(b"Nmr");
    payload.extend_from_slice(&(-2i32).to_le_bytes());
    payload.extend_from_slice(&3u32.to_le_bytes());
    payload.extend_from_slice(&(1u64 << 33).to_le_bytes());
    payload.extend_from_slice(&1i32.to_le_bytes());
    payload.extend_from_slice(&0x10u64.to_le_bytes());
    payload.extend_from_slice(&guid.to_bytes_le());
    assert_eq!(&data[..data_len], &payload[..]);

    // And usersim's decoder reads them back.
    let decoded = decode_event_metadata(&meta[..meta_len]).unwrap();
    let fields = decode_payload(&decoded, &data[..data_len]).unwrap();
    assert_eq!(fields[6].value, Value::Guid(guid));
}

#[test]
fn long_strings_are_shortened_and_every_field_kept() {
    let kernel = setup();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    let long = "é".repeat(1000); // 2000 bytes of two-byte characters
    ebpf_ext_trace::trace_api_failure_message_string!(
        keyword::BASE,
        long.as_str(),
        -1,
        "message",
        "tail"
    );
    let e = only_event(&kernel);
    let names: Vec<_> = e.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["api", "status", "Message", "string_value"]);
    match e.field("api") {
        Some(Value::Str(v)) => {
            assert!(v.chars().all(|c| c == 'é'), "cut at a character boundary");
            // Everything but the status and the three counts went to the first string.
            assert_eq!(v.len(), (DATA_CAPACITY - 4 - 3 * 2) / 2 * 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.field("Message"), Some(&s("")));
    assert_eq!(e.field("string_value"), Some(&s("")));
    ebpf_ext_trace::terminate();
}

/// Two kernels in one process, as two tests running at once under plain `cargo test`: each
/// kernel gets its own registration, its own events, and its own unregistration.
#[test]
fn each_kernel_has_its_own_registration() {
    let registered = Barrier::new(2);
    let one_terminated = Barrier::new(2);
    thread::scope(|scope| {
        for name in ["first", "second"] {
            let (registered, one_terminated) = (&registered, &one_terminated);
            scope.spawn(move || {
                let kernel = Kernel::new();
                ebpf_ext_trace::initiate(&PROVIDER).expect("register");
                assert_eq!(kernel.etw_registrations(), 1, "{name}: registered here");
                registered.wait();
                ebpf_ext_trace::trace_message!(Level::Informational, keyword::BASE, name);
                let event = only_event(&kernel);
                assert_eq!(event.field("Message"), Some(&s(name)));
                if name == "first" {
                    ebpf_ext_trace::terminate();
                    assert_eq!(kernel.etw_registrations(), 0);
                    one_terminated.wait();
                } else {
                    one_terminated.wait();
                    // The other kernel's terminate left this one registered and enabled.
                    assert!(ebpf_ext_trace::provider().is_some());
                    ebpf_ext_trace::trace_message!(Level::Informational, keyword::BASE, "still");
                    assert_eq!(only_event(&kernel).field("Message"), Some(&s("still")));
                    ebpf_ext_trace::terminate();
                }
                kernel.assert_no_leaks();
            });
        }
    });
}
