//! `trace_lines`: the line each event becomes, a status field decoded to its name.

use ebpf_ext_sys::ntstatus::STATUS_INVALID_PARAMETER;
use ebpf_ext_testing::trace_lines;
use ebpf_ext_trace::{Level, Tracing, keyword, trace_message_status, trace_message_u32};
use ebpf_ext_usersim::Kernel;

tracelogging::define_provider!(
    PROVIDER,
    "TraceLinesTestProvider",
    id("3f0c7a52-9b1e-4d86-a4c3-6e2d19b0f7a8")
);

#[test]
fn a_status_field_is_its_code_and_name_and_other_fields_their_values() {
    let kernel = Kernel::new();
    let tracing = Tracing::start(&PROVIDER).expect("tracing");
    trace_message_status!(
        Level::Warning,
        keyword::BASE,
        "refused",
        STATUS_INVALID_PARAMETER
    );
    trace_message_u32!(Level::Informational, keyword::BASE, "count", 7);
    drop(tracing);
    assert_eq!(
        trace_lines(&kernel, "TraceLinesTestProvider"),
        [
            format!(
                "EbpfExtGenericMessage [level 3 keyword {:#x} opcode 0] Message=Str(\"refused\") status=0xC000000D STATUS_INVALID_PARAMETER",
                keyword::BASE
            ),
            format!(
                "EbpfExtGenericMessage [level 4 keyword {:#x} opcode 0] Message=Str(\"count\") value=U64(7)",
                keyword::BASE
            ),
        ]
    );
    assert!(trace_lines(&kernel, "AnotherProvider").is_empty());
}
