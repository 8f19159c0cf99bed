//! Trace events reach usersim's ETW capture with the names, levels, keywords, opcodes and
//! fields of the C common library, encoded as the `tracelogging` crate encodes them.

use core::cell::Cell;

use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_trace::{Level, Tracing, keyword};
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{CapturedEvent, Enablement, Fault, Kernel};

tracelogging::define_provider!(
    PROVIDER,
    "EbpfExtTestProvider",
    id("d15cc421-e9e4-459b-87a6-b45b7d84e9a8")
);
const PROVIDER_ID: GUID = GUID::from_u128(0xd15cc421_e9e4_459b_87a6_b45b7d84e9a8);

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
fn every_macro_family() {
    let kernel = Kernel::new();
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
        (e.name.as_str(), e.level, e.keyword),
        ("EbpfExtApiError", 2, 0x2)
    );
    assert_eq!(field_types(&e), [("api", 23, 35), ("status", 20, 14)]);
    assert_eq!(e.field("api"), Some(&s("NmrRegisterProvider")));
    assert_eq!(e.field("status"), Some(&Value::U64(0xC000_009A)));

    ebpf_ext_trace::trace_api_failure_message_string!(
        keyword::BASE,
        "IoCreateDevice",
        -1,
        "device",
        "\\Device\\X"
    );
    let e = only_event(&kernel);
    assert_eq!(
        field_types(&e),
        [
            ("api", 23, 35),
            ("status", 20, 14),
            ("Message", 23, 35),
            ("string_value", 23, 35)
        ]
    );
    assert_eq!(e.field("string_value"), Some(&s("\\Device\\X")));

    ebpf_ext_trace::trace_message_status!(Level::Warning, keyword::BASE, "attach", 0x103);
    let e = only_event(&kernel);
    assert_eq!(
        (e.level, field_types(&e)),
        (3, vec![("Message", 23, 35), ("status", 20, 14)])
    );

    ebpf_ext_trace::trace_message_string!(Level::Verbose, keyword::BASE, "name", "value");
    assert_eq!(only_event(&kernel).field("string_value"), Some(&s("value")));

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
    ebpf_ext_trace::trace_message_guid_status!(Level::Error, keyword::BASE, "module", guid, 5);
    let e = only_event(&kernel);
    assert_eq!(
        field_types(&e),
        [("Message", 23, 35), ("guid", 15, 0), ("Status", 20, 14)]
    );
    assert_eq!(e.field("guid"), Some(&Value::Guid(guid)));
}

fn traced_function() {
    ebpf_ext_trace::trace_entry!();
    ebpf_ext_trace::trace_exit!();
}

#[test]
fn entry_and_exit_name_the_function() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    traced_function();
    let events = kernel.etw_events();
    assert_eq!(events.len(), 2);
    let (entry, exit) = (&events[0], &events[1]);
    assert_eq!((entry.level, entry.keyword, entry.opcode), (5, 0x1, 1));
    assert_eq!((exit.level, exit.keyword, exit.opcode), (5, 0x1, 2));
    assert_eq!(entry.field("Enter"), Some(&s("trace::traced_function")));
    assert_eq!(exit.field("Exit"), Some(&s("trace::traced_function")));
    ebpf_ext_trace::terminate();
}

#[test]
fn disabled_levels_and_keywords_are_not_written_nor_evaluated() {
    let kernel = Kernel::new();
    kernel.etw_enable(
        PROVIDER_ID,
        Enablement {
            level: 2,
            match_any: keyword::BASE,
            match_all: 0,
        },
    );
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    let evaluated = Cell::new(0);
    let value = || {
        evaluated.set(evaluated.get() + 1);
        9u64
    };
    ebpf_ext_trace::trace_message_value!(Level::Verbose, keyword::BASE, "too verbose", value());
    ebpf_ext_trace::trace_message_value!(
        Level::Error,
        keyword::EXTENSION,
        "wrong keyword",
        value()
    );
    assert!(kernel.etw_events().is_empty());
    assert_eq!(
        evaluated.get(),
        0,
        "arguments of a disabled event must not be evaluated"
    );
    ebpf_ext_trace::trace_message_value!(Level::Error, keyword::BASE, "wanted", value());
    assert_eq!(kernel.etw_events().len(), 1);
    assert_eq!(evaluated.get(), 1);
    // A session stopping disables the provider through its enable callback.
    kernel.etw_disable(PROVIDER_ID);
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "nobody listens");
    assert_eq!(kernel.etw_events().len(), 1);
    ebpf_ext_trace::terminate();
}

#[test]
fn initiate_is_idempotent_and_terminate_unregisters() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    ebpf_ext_trace::initiate(&PROVIDER).expect("second initiate is a no-op");
    assert_eq!(kernel.etw_registrations(), 1);
    assert!(
        kernel
            .etw_provider_traits(PROVIDER_ID)
            .is_some_and(|t| t == PROVIDER.raw_meta())
    );
    ebpf_ext_trace::terminate();
    ebpf_ext_trace::terminate();
    assert_eq!(kernel.etw_registrations(), 0);
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "after terminate");
    assert!(kernel.etw_events().is_empty());
    kernel.assert_no_leaks();
}

#[test]
fn register_failure_is_reported_and_retryable() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("EtwRegister", 1));
    assert!(matches!(
        ebpf_ext_trace::initiate(&PROVIDER),
        Err(ebpf_ext_sys::Error::Api {
            api: "EtwRegister",
            ..
        })
    ));
    assert!(ebpf_ext_trace::provider().is_none());
    ebpf_ext_trace::trace_message!(Level::Critical, keyword::BASE, "not registered");
    assert!(kernel.etw_events().is_empty());
    ebpf_ext_trace::initiate(&PROVIDER).expect("second try");
    assert_eq!(kernel.etw_registrations(), 1);
    ebpf_ext_trace::terminate();
}

/// The host encoder's bytes against the `tracelogging` crate's layout, built by hand from its
/// generator: u16 size, tag byte 0, name, then per field name + InType (+0x80, OutType).
#[test]
fn host_encoding_matches_the_tracelogging_layout() {
    use ebpf_ext_trace::host::{Field, encode_for_test};
    let (meta, meta_len, data, data_len) = encode_for_test(
        "EbpfExtApiError",
        &[
            Field::str8("api", "Nmr"),
            Field::win_ntstatus("status", -2),
            Field::u32("n", 3),
        ],
    );
    let mut expected = vec![0, 0, 0];
    expected.extend_from_slice(b"EbpfExtApiError\0");
    expected.extend_from_slice(b"api\0");
    expected.extend_from_slice(&[0x17 | 0x80, 35]);
    expected.extend_from_slice(b"status\0");
    expected.extend_from_slice(&[0x14 | 0x80, 14]);
    expected.extend_from_slice(b"n\0");
    expected.push(8);
    let size = u16::try_from(expected.len()).unwrap().to_le_bytes();
    expected[..2].copy_from_slice(&size);
    assert_eq!(&meta[..meta_len], &expected[..]);
    let mut payload = vec![3, 0];
    payload.extend_from_slice(b"Nmr");
    payload.extend_from_slice(&(-2i32).to_le_bytes());
    payload.extend_from_slice(&3u32.to_le_bytes());
    assert_eq!(&data[..data_len], &payload[..]);
}

#[test]
fn oversized_strings_are_shortened_and_still_decode() {
    let kernel = Kernel::new();
    ebpf_ext_trace::initiate(&PROVIDER).expect("register");
    let long = "x".repeat(2000);
    ebpf_ext_trace::trace_message_string!(Level::Error, keyword::BASE, "long", long.as_str());
    let e = only_event(&kernel);
    match e.field("string_value") {
        Some(Value::Str(v)) => assert!(v.len() < 600 && v.chars().all(|c| c == 'x')),
        other => panic!("{other:?}"),
    }
    ebpf_ext_trace::terminate();
}
