//! The program-information client: attach and the owned copy, every validation rule of the
//! core, provider status, provider going away, and the `bpf_prog_test_run` context calls.

mod common;

use core::mem::size_of;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::Ordering::SeqCst;

use common::{
    Addresses, HookProvider, InfoProvider, OTHER_PROGRAM_TYPE, ProgramDataSpec, Proto,
    TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE, TestContext, helper_a_address, helper_at,
    helper_b_address, helper_pid_address,
};
use ebpf_ext_core_sim::{
    CoreError, HelperTable, Input, Link, LinkSpec, Object, ProgramDataError, ProgramInfoClient,
    Refusal,
};
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_DONTCARE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_RETURN_TYPE_INTEGER,
};
use ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t;
use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS,
};
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::intrin::KeGetCurrentIrql;
use ebpf_ext_sys::netioddk::{MIT_GUID, MIT_IF_LUID, NPI_MODULEID};
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use ebpf_ext_usersim::Kernel;

const TS: HelperTable = HelperTable::ProgramTypeSpecific;

fn refusal(error: &CoreError) -> ProgramDataError {
    match error.refusal() {
        Some(Refusal::InvalidProgramData(e)) => e.clone(),
        other => panic!("expected an invalid-program-data refusal, got {other:?} ({error})"),
    }
}

#[test]
fn valid_provider_attaches_and_the_copy_matches() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    assert!(client.is_attached());
    assert_eq!(
        provider
            .state
            .attaches
            .load(core::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        *provider.state.client_module.lock().unwrap(),
        Some((MIT_GUID, client.module_id())),
        "the provider sees the client's fresh MIT_GUID module id"
    );
    assert_eq!(
        *provider.state.client_dispatch.lock().unwrap(),
        Some(0),
        "the core's client dispatch: a zeroed `{{int reserved}}`, never NULL"
    );
    let info = client.info();
    assert_eq!(info.name, "test_prog");
    assert_eq!(info.program_type, TEST_PROGRAM_TYPE);
    assert_eq!(info.bpf_prog_type, 1000);
    assert!(info.is_privileged);
    assert_eq!(
        info.context_descriptor,
        ebpf_context_descriptor_t {
            size: 32,
            data: 16,
            end: 24,
            meta: -1
        }
    );
    assert_eq!(info.required_irql, DISPATCH_LEVEL);
    assert_eq!(info.capabilities, 0);
    assert!(info.has_context_create && info.has_context_destroy);
    assert_eq!(info.helpers.len(), 2);
    let a = &info.helpers[0];
    assert_eq!((a.id, a.name.as_str()), (0x1_0001, "test_get_a"));
    assert_eq!(a.return_type, EBPF_RETURN_TYPE_INTEGER);
    assert_eq!(
        a.arguments,
        [
            EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE
        ]
    );
    assert!(!a.implicit_context && !a.reallocate_packet);
    assert_eq!(helper_at(a.address), Some(1), "helper_a's address");
    let b = &info.helpers[1];
    assert_eq!((b.id, b.name.as_str()), (0x1_0002, "test_get_b"));
    assert!(b.implicit_context && b.reallocate_packet);
    assert_eq!(helper_at(b.address), Some(2), "helper_b's address");
    assert_eq!(info.global_helpers.len(), 1);
    let pid = &info.global_helpers[0];
    assert_eq!(
        (pid.id, pid.name.as_str()),
        (14, "bpf_get_current_pid_tgid")
    );
    assert!(pid.implicit_context);
    assert_eq!(helper_at(pid.address), Some(3), "helper_pid's address");
    assert_eq!(
        info.helper(14).map(|h| h.name.as_str()),
        Some("bpf_get_current_pid_tgid")
    );

    let other = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("a second program");
    assert_ne!(other.module_id(), client.module_id(), "fresh module GUIDs");
    other.detach().expect("detach");
    client.detach().expect("detach");
    assert_eq!(kernel.nmr_binding_count(), 0);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// `_ebpf_program_get_helper_address_info_from_program_data`'s ranges: ids from 0xFFFF up
/// come from the program-type-specific table only, smaller ids from the global overrides
/// only; a helper published in the wrong table is not found.
#[test]
fn helpers_resolve_by_the_cores_id_ranges() {
    let kernel = Kernel::new();
    let mut spec = ProgramDataSpec::valid();
    // A type-specific helper with a general id, and a global override with a specific id.
    spec.helpers
        .push(Proto::new(20, c"specific_with_general_id"));
    spec.global_helpers
        .push(Proto::new(0xFFFF, c"global_with_specific_id"));
    spec.helper_addresses = Some(Addresses::new(vec![
        helper_a_address(),
        helper_b_address(),
        helper_a_address(),
    ]));
    spec.global_addresses = Some(Addresses::new(vec![
        helper_pid_address(),
        helper_pid_address(),
    ]));
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let info = client.info();
    let name = |id| info.helper(id).map(|h| h.name.as_str());
    assert_eq!(name(0x1_0001), Some("test_get_a"));
    assert_eq!(name(14), Some("bpf_get_current_pid_tgid"));
    assert_eq!(
        name(20),
        None,
        "a general id is not looked up in the specific table"
    );
    assert_eq!(
        name(0xFFFF),
        None,
        "0xFFFF is not looked up in the global table"
    );
    client.detach().expect("detach");
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn no_provider_for_the_program_type_fails_to_load() {
    let kernel = Kernel::new();
    let error = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect_err("nothing registered");
    assert!(
        matches!(
            &error,
            CoreError::ExtensionFailedToLoad {
                refusal: None,
                provider_status: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.ebpf_result(), EBPF_EXTENSION_FAILED_TO_LOAD);

    let other = InfoProvider::register(
        OTHER_PROGRAM_TYPE,
        &ProgramDataSpec {
            program_type: OTHER_PROGRAM_TYPE,
            ..ProgramDataSpec::valid()
        },
    );
    let error = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect_err("another type only");
    assert_eq!(
        error.refusal(),
        None,
        "another program type is not a refusal"
    );
    assert!(error.to_string().contains("not for it"), "{error}");
    assert_eq!(
        other
            .state
            .attaches
            .load(core::sync::atomic::Ordering::SeqCst),
        0
    );
    other.deregister();
    kernel.assert_no_leaks();
}

/// One rule of the core: how to break valid data, and the error expected.
struct Case {
    what: &'static str,
    breaks: fn(&mut ProgramDataSpec),
    expected: ProgramDataError,
}

fn header(version: u16, size: usize, total_size: usize) -> ebpf_extension_header_t {
    ebpf_extension_header_t::new(version, size, total_size)
}

#[expect(clippy::too_many_lines, reason = "one table entry per rule")]
fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "NULL program data",
            breaks: |s| s.null_data = true,
            expected: ProgramDataError::NullProgramData,
        },
        Case {
            what: "program data version",
            breaks: |s| s.data_header.version = 2,
            expected: ProgramDataError::UnsupportedVersion {
                object: Object::ProgramData,
                version: 2,
                expected: 1,
            },
        },
        Case {
            what: "program data size",
            breaks: |s| s.data_header = header(1, 64, 72),
            expected: ProgramDataError::UnsupportedSize {
                object: Object::ProgramData,
                size: 64,
                accepted: &[65, 72],
            },
        },
        Case {
            what: "NULL program info",
            breaks: |s| s.null_info = true,
            expected: ProgramDataError::NullProgramInfo,
        },
        Case {
            what: "program info version",
            breaks: |s| s.info_header.version = 0,
            expected: ProgramDataError::UnsupportedVersion {
                object: Object::ProgramInfo,
                version: 0,
                expected: 1,
            },
        },
        Case {
            what: "program info size",
            breaks: |s| s.info_header = header(1, 56, 64),
            expected: ProgramDataError::UnsupportedSize {
                object: Object::ProgramInfo,
                size: 56,
                accepted: &[64],
            },
        },
        Case {
            what: "NULL type descriptor",
            breaks: |s| s.null_descriptor = true,
            expected: ProgramDataError::NullProgramTypeDescriptor,
        },
        Case {
            what: "type descriptor version",
            breaks: |s| s.descriptor_header.version = 3,
            expected: ProgramDataError::UnsupportedVersion {
                object: Object::ProgramTypeDescriptor,
                version: 3,
                expected: 1,
            },
        },
        Case {
            what: "type descriptor size",
            breaks: |s| s.descriptor_header = header(1, 64, 64),
            expected: ProgramDataError::UnsupportedSize {
                object: Object::ProgramTypeDescriptor,
                size: 64,
                accepted: &[61],
            },
        },
        Case {
            what: "NULL type name",
            breaks: |s| s.name = None,
            expected: ProgramDataError::NullProgramTypeName,
        },
        Case {
            what: "NULL context descriptor",
            breaks: |s| s.context = None,
            expected: ProgramDataError::NullContextDescriptor,
        },
        Case {
            what: "context descriptor size below 16",
            breaks: |s| s.context.as_mut().unwrap().size = 15,
            expected: ProgramDataError::ContextDescriptorTooSmall { size: 15 },
        },
        Case {
            what: "NULL type-specific prototypes with a count",
            breaks: |s| s.null_helpers = true,
            expected: ProgramDataError::NullHelperPrototypes {
                table: TS,
                count: 2,
            },
        },
        Case {
            what: "NULL global prototypes with a count",
            breaks: |s| s.null_global_helpers = true,
            expected: ProgramDataError::NullHelperPrototypes {
                table: HelperTable::Global,
                count: 1,
            },
        },
        Case {
            what: "helper prototype version",
            breaks: |s| s.helpers[1].header.version = 2,
            expected: ProgramDataError::UnsupportedVersion {
                object: Object::HelperPrototype {
                    table: TS,
                    index: 1,
                },
                version: 2,
                expected: 1,
            },
        },
        Case {
            what: "helper prototype size",
            breaks: |s| s.helpers[0].header.size = 72,
            expected: ProgramDataError::UnsupportedSize {
                object: Object::HelperPrototype {
                    table: TS,
                    index: 0,
                },
                size: 72,
                accepted: &[64, 65, 66],
            },
        },
        Case {
            what: "global helper prototype size",
            breaks: |s| s.global_helpers[0].header.size = 63,
            expected: ProgramDataError::UnsupportedSize {
                object: Object::HelperPrototype {
                    table: HelperTable::Global,
                    index: 0,
                },
                size: 63,
                accepted: &[64, 65, 66],
            },
        },
        Case {
            what: "NULL helper name",
            breaks: |s| s.helpers[1].name = None,
            expected: ProgramDataError::NullHelperName {
                table: TS,
                index: 1,
            },
        },
        Case {
            what: "NULL global helper name",
            breaks: |s| s.global_helpers[0].name = None,
            expected: ProgramDataError::NullHelperName {
                table: HelperTable::Global,
                index: 0,
            },
        },
        Case {
            what: "address table version",
            breaks: |s| s.helper_addresses.as_mut().unwrap().header.version = 0,
            expected: ProgramDataError::UnsupportedVersion {
                object: Object::HelperAddresses { table: TS },
                version: 0,
                expected: 1,
            },
        },
        Case {
            what: "address table size",
            breaks: |s| s.global_addresses.as_mut().unwrap().header.size = 48,
            expected: ProgramDataError::UnsupportedSize {
                object: Object::HelperAddresses {
                    table: HelperTable::Global,
                },
                size: 48,
                accepted: &[40],
            },
        },
        Case {
            what: "address table count 0",
            breaks: |s| s.helper_addresses.as_mut().unwrap().count = 0,
            expected: ProgramDataError::EmptyHelperAddresses { table: TS },
        },
        Case {
            what: "NULL address array",
            breaks: |s| s.global_addresses.as_mut().unwrap().values = None,
            expected: ProgramDataError::NullHelperAddressArray {
                table: HelperTable::Global,
            },
        },
        Case {
            what: "address count differs from prototype count",
            breaks: |s| {
                s.helper_addresses = Some(Addresses::new(vec![helper_a_address()]));
            },
            expected: ProgramDataError::HelperCountMismatch {
                table: TS,
                prototypes: 2,
                addresses: 1,
            },
        },
        Case {
            what: "global address count differs from prototype count",
            breaks: |s| {
                s.global_addresses = Some(Addresses::new(vec![1, 2]));
            },
            expected: ProgramDataError::HelperCountMismatch {
                table: HelperTable::Global,
                prototypes: 1,
                addresses: 2,
            },
        },
        Case {
            what: "required_irql above HIGH_LEVEL",
            breaks: |s| s.required_irql = 16,
            expected: ProgramDataError::IrqlTooHigh { required_irql: 16 },
        },
        Case {
            what: "reserved capability bit",
            breaks: |s| s.capabilities = 0b11,
            expected: ProgramDataError::ReservedCapability { capabilities: 0b11 },
        },
        Case {
            what: "element 1 at the core's stride (element 0's total_size) has a NULL name",
            breaks: |s| {
                // Physical elements 0, 1, 2; stride 144 visits 0 and 2.
                s.helpers.push(Proto::new(0x1_0003, c"test_get_c"));
                s.helpers[0].header.total_size = 144;
                s.helpers[2].name = None;
                s.helper_count = Some(2);
                s.helper_addresses = None;
            },
            expected: ProgramDataError::NullHelperName {
                table: TS,
                index: 1,
            },
        },
        Case {
            what: "element 0's total_size is 0 (a stride of 0)",
            breaks: |s| s.helpers[0].header.total_size = 0,
            expected: ProgramDataError::TotalSizeBelowSize {
                object: Object::HelperPrototype {
                    table: TS,
                    index: 0,
                },
                size: 66,
                total_size: 0,
            },
        },
        Case {
            what: "program data's total_size below its size",
            breaks: |s| s.data_header = header(1, 72, 65),
            expected: ProgramDataError::TotalSizeBelowSize {
                object: Object::ProgramData,
                size: 72,
                total_size: 65,
            },
        },
        Case {
            what: "program info's total_size 0 (ntosebpfext's headers)",
            breaks: |s| s.info_header.total_size = 0,
            expected: ProgramDataError::TotalSizeBelowSize {
                object: Object::ProgramInfo,
                size: 64,
                total_size: 0,
            },
        },
        Case {
            what: "type descriptor's total_size below its size",
            breaks: |s| s.descriptor_header.total_size = 60,
            expected: ProgramDataError::TotalSizeBelowSize {
                object: Object::ProgramTypeDescriptor,
                size: 61,
                total_size: 60,
            },
        },
        Case {
            what: "helper address table's total_size 0",
            breaks: |s| s.helper_addresses.as_mut().unwrap().header.total_size = 0,
            expected: ProgramDataError::TotalSizeBelowSize {
                object: Object::HelperAddresses { table: TS },
                size: 40,
                total_size: 0,
            },
        },
        Case {
            what: "element 0's total_size disagrees with its size (validation and copy strides differ)",
            breaks: |s| {
                s.helpers.push(Proto::new(0x1_0003, c"test_get_c"));
                s.helpers[0].header.total_size = 144;
                s.helper_count = Some(2);
                s.helper_addresses = None;
            },
            expected: ProgramDataError::InconsistentHelperStride {
                table: TS,
                size: 66,
                total_size: 144,
            },
        },
    ]
}

#[test]
fn every_rule_of_the_core_refuses_its_bad_input() {
    let kernel = Kernel::new();
    let cases = cases();
    assert!(cases.len() >= 25);
    for case in cases {
        let mut spec = ProgramDataSpec::valid();
        (case.breaks)(&mut spec);
        let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
        let error = ProgramInfoClient::attach(TEST_PROGRAM_TYPE)
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", case.what));
        assert_eq!(refusal(&error), case.expected, "{}", case.what);
        assert_eq!(
            error.provider_status(),
            None,
            "{}: provider not called",
            case.what
        );
        assert!(
            error.to_string().contains(&case.expected.to_string()),
            "{}: {error}",
            case.what
        );
        assert_eq!(
            provider
                .state
                .attaches
                .load(core::sync::atomic::Ordering::SeqCst),
            0,
            "{}: no binding",
            case.what
        );
        assert_eq!(kernel.nmr_binding_count(), 0, "{}", case.what);
        provider.deregister();
    }
    kernel.assert_no_leaks();
}

#[test]
fn module_id_must_be_a_guid() {
    let kernel = Kernel::new();
    let mut module = NPI_MODULEID::from_guid(TEST_PROGRAM_TYPE);
    module.Type = MIT_IF_LUID;
    let provider = InfoProvider::register_raw(module, ProgramDataSpec::valid().build(), 0);
    let error = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect_err("LUID module id");
    assert_eq!(
        error.refusal(),
        Some(&Refusal::ModuleIdNotGuid {
            module_id_type: MIT_IF_LUID
        })
    );
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn versions_the_core_accepts() {
    let kernel = Kernel::new();
    // Program data through `required_irql` (65): `capabilities` is not read.
    let mut spec = ProgramDataSpec::valid();
    spec.data_header = header(1, 65, 72);
    spec.capabilities = 1;
    // Prototypes through `flags` (65) and through `arguments` (64). The core copies each
    // element's whole stride (element 0's size rounded up to 8), so what lies within it is
    // read whatever the element's own size says: at a stride of 72 even a 64-byte element's
    // `flags` and `implicit_context`; at 64, neither.
    spec.helpers[0].header = header(1, 65, 72);
    spec.helpers[0].reallocate_packet = true;
    spec.helpers[0].implicit_context = true;
    spec.helpers[1].header = header(1, 64, 72); // valid(): both set
    spec.global_helpers[0].header = header(1, 64, 64);
    spec.global_helpers[0].reallocate_packet = true;
    // A total_size above the size (the rest unread).
    spec.info_header.total_size = 128;
    // No global overrides table.
    spec.global_addresses = None;
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("accepted");
    let info = client.info();
    assert_eq!(info.capabilities, 0);
    assert!(info.helpers[0].reallocate_packet && info.helpers[0].implicit_context);
    assert!(info.helpers[1].reallocate_packet && info.helpers[1].implicit_context);
    assert!(!info.global_helpers[0].reallocate_packet);
    assert!(!info.global_helpers[0].implicit_context);
    assert_eq!(info.global_helpers[0].address, None);
    assert_eq!(
        helper_at(info.helpers[1].address),
        Some(2),
        "helper_b's address"
    );
    drop(client);
    provider.deregister();

    // One prototype whose total_size is its size, not the copy's stride: one element, so
    // the two strides never disagree on where a second one is.
    let mut spec = ProgramDataSpec::valid();
    spec.helpers.truncate(1);
    spec.helper_addresses = None;
    spec.helpers[0].header = header(1, 66, 66);
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("one element accepted");
    assert_eq!(client.info().helpers.len(), 1);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn provider_attach_status_propagates() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register_raw(
        NPI_MODULEID::from_guid(TEST_PROGRAM_TYPE),
        ProgramDataSpec::valid().build(),
        STATUS_ACCESS_DENIED,
    );
    let error = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect_err("denied");
    assert_eq!(error.provider_status(), Some(STATUS_ACCESS_DENIED));
    assert_eq!(error.refusal(), None);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn a_second_provider_of_the_type_is_refused() {
    let kernel = Kernel::new();
    let first = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let second = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    assert_eq!(
        second
            .state
            .attaches
            .load(core::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(client.is_attached());
    second.deregister();
    drop(client);
    first.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn provider_going_away_detaches_the_client() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    provider.deregister();
    assert!(!client.is_attached());
    assert_eq!(client.detach_count(), 1);
    assert_eq!(
        client
            .create_context(&[], &[0; size_of::<TestContext>()])
            .err(),
        Some(EBPF_EXTENSION_FAILED_TO_LOAD)
    );
    assert_eq!(
        client.info().name,
        "test_prog",
        "the copy outlives the provider"
    );

    // A new provider of the type attaches to the registered client.
    let again = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    assert!(client.is_attached());
    client.detach().expect("detach");
    assert_eq!(
        again
            .state
            .detaches
            .load(core::sync::atomic::Ordering::SeqCst),
        1
    );
    again.deregister();
    kernel.assert_no_leaks();
}

/// The bytes of a [`TestContext`] with `value` and `flags` and NULL data pointers.
fn context_bytes(value: u64, flags: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&value.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&[0; 16]);
    bytes
}

#[test]
fn context_create_and_destroy_as_test_run_does() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let input = context_bytes(7, 9);
    let data = b"packet bytes".to_vec();

    let context = client.create_context(&data, &input).expect("created");
    // SAFETY: the provider created a `TestContext` there.
    let seen = unsafe { context.as_ptr().cast::<TestContext>().read() };
    assert_eq!((seen.value, seen.flags), (7, 9));
    let copy = context.data_in();
    assert_ne!(
        copy.start.cast_const(),
        data.as_ptr(),
        "the core's copy, not the caller's"
    );
    assert_eq!(
        (seen.data_start, seen.data_end),
        (copy.start.cast_const(), copy.end.cast_const()),
        "points into the core's copy of data_in"
    );
    // The core writes the header in front of the context once per test run: slot 1 is its
    // copy of the context descriptor.
    // SAFETY: the test provider allocates the 64-byte header in front of its context.
    let descriptor = unsafe {
        context
            .as_ptr()
            .wrapping_byte_sub(56)
            .cast::<*const ebpf_context_descriptor_t>()
            .read()
    };
    // SAFETY: the core-sim's copy, alive while the context is.
    assert_eq!(unsafe { *descriptor }, client.info().context_descriptor);
    let out = context.destroy(64, 64).expect("destroyed");
    assert_eq!(
        common::CONTEXT_CALL_IRQLS.with(core::cell::Cell::get),
        (DISPATCH_LEVEL, DISPATCH_LEVEL),
        "create and destroy at the provider's required_irql, as the core calls them"
    );
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL, "and lowered back");
    assert_eq!(out.data, data);
    assert_eq!(out.context_size_out, size_of::<TestContext>());
    assert_eq!(out.context, context_bytes(7, 9));

    let small = client.create_context(&data, &input).expect("created");
    let out = small.destroy(4, 8).expect("destroyed");
    assert_eq!(
        (out.data_size_out, out.context_size_out),
        (0, 0),
        "too small: size 0"
    );

    // Dropping destroys.
    drop(client.create_context(&[], &input).expect("created"));

    assert_eq!(
        client
            .create_context_with(Input::Null { size: 5 }, Input::Bytes(&input))
            .err(),
        Some(EBPF_INVALID_ARGUMENT),
        "NULL data with a size"
    );
    assert_eq!(
        client.create_context(&data, &input[..8]).err(),
        Some(EBPF_INVALID_ARGUMENT),
        "short context"
    );
    assert_eq!(
        client.create_context(&data, &[]).err(),
        Some(EBPF_INVALID_ARGUMENT),
        "no context"
    );
    drop(client);
    provider.deregister();

    let provider = InfoProvider::register(
        TEST_PROGRAM_TYPE,
        &ProgramDataSpec {
            context_create: None,
            ..ProgramDataSpec::valid()
        },
    );
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    assert!(!client.info().has_context_create);
    assert_eq!(
        client.create_context(&data, &input).err(),
        Some(EBPF_INVALID_ARGUMENT),
        "as the core: the type does not support test runs"
    );
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn runs_at_the_required_irql() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    assert_eq!(client.at_required_irql(KeGetCurrentIrql), DISPATCH_LEVEL);
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL, "restored");
    drop(client);
    provider.deregister();
    assert_eq!(STATUS_SUCCESS, 0);
    kernel.assert_no_leaks();
}

#[test]
fn a_context_left_by_a_failed_create_is_destroyed() {
    let kernel = Kernel::new();
    let mut spec = ProgramDataSpec::valid();
    spec.context_create = Some(common::failing_create);
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let input = context_bytes(7, 9);
    let destroys = || common::CONTEXT_DESTROYS.with(core::cell::Cell::get);
    let before = destroys();
    assert_eq!(
        client.create_context(b"data", &input).err(),
        Some(EBPF_NO_MEMORY),
        "the provider's own status"
    );
    assert_eq!(
        destroys() - before,
        1,
        "as the core's test run: what the failed create left is destroyed"
    );
    assert_eq!(
        common::CONTEXT_DESTROY_ROOM.with(core::cell::Cell::get),
        (None, None),
        "create_context learns no output room, so it passes no buffers"
    );
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn a_link_of_a_type_whose_provider_is_refused_is_not_made() {
    let kernel = Kernel::new();
    let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = || {
        Link::attach(LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE), |_| {
            Ok(0)
        })
    };
    // The core's checks refuse the program data: no program loads, so no link.
    let mut spec = ProgramDataSpec::valid();
    spec.capabilities = 0b11;
    let refused = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let error = link().expect_err("refused program data");
    assert_eq!(
        refusal(&error),
        ProgramDataError::ReservedCapability { capabilities: 0b11 }
    );
    refused.deregister();
    // The provider refuses the client: likewise.
    let denying = InfoProvider::register_raw(
        NPI_MODULEID::from_guid(TEST_PROGRAM_TYPE),
        ProgramDataSpec::valid().build(),
        STATUS_ACCESS_DENIED,
    );
    let error = link().expect_err("the provider denied the client");
    assert_eq!(error.provider_status(), Some(STATUS_ACCESS_DENIED));
    denying.deregister();
    assert_eq!(
        hook.state
            .attaches
            .load(core::sync::atomic::Ordering::SeqCst),
        0,
        "the hook never saw a link"
    );
    // Only a provider of another type, and one whose module id is no GUID (refused before
    // its type is known): no provider of the type, so no program either; a hook tested alone
    // links one bare.
    let other = InfoProvider::register(OTHER_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let mut luid = NPI_MODULEID::from_guid(TEST_PROGRAM_TYPE);
    luid.Type = MIT_IF_LUID;
    let untyped = InfoProvider::register_raw(luid, ProgramDataSpec::valid().build(), 0);
    link().expect_err("no provider of the type");
    let bare = Link::attach_without_program_type(
        LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE),
        |_| Ok(0),
    )
    .expect("no provider of the type: a bare program");
    drop(bare);
    other.deregister();
    untyped.deregister();
    hook.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn a_provider_detach_waits_for_a_test_run_context_to_be_destroyed() {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let input = context_bytes(7, 9);
    let context = client.create_context(&[], &input).expect("created");
    std::thread::scope(|s| {
        let deregistering = kernel.scoped(s, move || provider.deregister());
        // The detach has begun once no test run may start; it then waits for this one.
        common::wait_until("the provider's detach began", || {
            client.create_context(&[], &input).err() == Some(EBPF_EXTENSION_FAILED_TO_LOAD)
        });
        assert!(
            !deregistering.is_finished(),
            "the deregistration finished while a test run held the provider"
        );
        let out = context
            .destroy(0, size_of::<TestContext>())
            .expect("destroyed by the provider still attached");
        assert_eq!(out.context_size_out, size_of::<TestContext>());
        deregistering.join().expect("deregistered");
    });
    assert!(!client.is_attached());
    drop(client);
    kernel.assert_no_leaks();
}

#[test]
fn a_provider_detach_waits_for_the_epochs_active_when_it_began() {
    let kernel = Kernel::new();
    // A link before any provider of its type: a bare program, so the one client of the
    // provider below is `client`.
    let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = Link::attach_without_program_type(
        LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE),
        |_| Ok(1),
    )
    .expect("linked");
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &ProgramDataSpec::valid());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let table = hook.state.client(0).table.expect("dispatch table");
    let (begin, end) = (
        table.ebpf_program_batch_begin_invoke_function.unwrap(),
        table.ebpf_program_batch_end_invoke_function.unwrap(),
    );
    let batch_open = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A batch (an epoch) open on another thread.
        let batch = kernel.scoped(s, || {
            let mut state = [0u64; 8];
            // SAFETY: 64 writable bytes, ended on this thread below.
            let status = unsafe { begin(64, state.as_mut_ptr().cast()) };
            assert_eq!(status, EBPF_SUCCESS);
            batch_open.store(true, SeqCst);
            common::wait_until("released", || release.load(SeqCst));
            // SAFETY: the state begun above.
            let ended = unsafe { end(state.as_mut_ptr().cast()) };
            assert_eq!(ended, EBPF_SUCCESS);
        });
        common::wait_until("the batch began", || batch_open.load(SeqCst));
        let deregistering = kernel.scoped(s, move || provider.deregister());
        common::wait_until("the detach waits for the epochs", || {
            ebpf_ext_core_sim::epoch_synchronize_waiters() == 1
        });
        assert!(
            !deregistering.is_finished(),
            "the deregistration finished while an epoch active before it was still open"
        );
        release.store(true, SeqCst);
        batch.join().expect("batch");
        deregistering.join().expect("deregistered");
        assert_eq!(ebpf_ext_core_sim::epoch_synchronize_waiters(), 0);
    });
    link.detach().expect("detached");
    hook.deregister();
    drop(client);
    kernel.assert_no_leaks();
}
