//! The published program information is upstream's sample extension's, bit for bit where
//! the core looks: identity, context descriptor, helper prototypes and flags, global
//! overrides, `required_irql`, the hook's provider data; and the program-information hash
//! the core computes (and bpf2c embeds) equals the value upstream's definitions produce.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use std::fmt::Write as _;

use ebpf_ext_core_sim::bpf::{BtfPrototype, PublishedBtfFunction, published_btf_functions};
use ebpf_ext_core_sim::{ProgramInfoClient, program_info_hash, program_info_hash_input};
use ebpf_ext_sys::ebpf_base::EBPF_RETURN_TYPE_INTEGER;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;
use ebpf_ext_usersim::Kernel;
use sample_ext::program::{BPF_PROG_TYPE, PROGRAM_TYPE};
use sample_harness::{LoadedDriver, Target};

fn with_info(f: impl FnOnce(&ebpf_ext_core_sim::ProgramInfo)) {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program info accepted");
    f(&client.info());
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of upstream's prototypes")]
fn the_program_information_is_upstreams() {
    with_info(|info| {
        assert_eq!(info.name, "sample");
        assert_eq!(info.program_type, PROGRAM_TYPE);
        assert_eq!(PROGRAM_TYPE.Data1, 0xf788_ef4a);
        assert_eq!(info.bpf_prog_type, 999);
        assert_eq!(BPF_PROG_TYPE, 999);
        assert!(!info.is_privileged);
        let d = info.context_descriptor;
        assert_eq!((d.size, d.data, d.end, d.meta), (32, 0, 8, -1));
        assert_eq!(info.required_irql, DISPATCH_LEVEL);
        assert_eq!(info.capabilities, 0);
        assert!(info.has_context_create && info.has_context_destroy);
        let helpers: Vec<_> = info
            .helpers
            .iter()
            .map(|h| {
                (
                    h.id,
                    h.name.as_str(),
                    h.return_type,
                    h.arguments,
                    h.implicit_context,
                    h.reallocate_packet,
                    h.address.is_some(),
                )
            })
            .collect();
        assert_eq!(
            helpers,
            [
                (
                    0x10000,
                    "sample_ebpf_extension_helper_function1",
                    0,
                    [4, 0, 0, 0, 0],
                    false,
                    false,
                    true
                ),
                (
                    0x10001,
                    "sample_ebpf_extension_find",
                    0,
                    [9, 2, 9, 2, 0],
                    false,
                    false,
                    true
                ),
                (
                    0x10002,
                    "sample_ebpf_extension_replace",
                    0,
                    [9, 2, 1, 9, 2],
                    false,
                    false,
                    true
                ),
                (
                    0x10003,
                    "sample_ebpf_extension_helper_implicit_1",
                    0,
                    [0; 5],
                    true,
                    false,
                    true
                ),
                (
                    0x10004,
                    "sample_ebpf_extension_helper_implicit_2",
                    0,
                    [0; 5],
                    true,
                    false,
                    true
                ),
                (
                    0x10005,
                    "sample_ext_helper_map_lookup_element",
                    1,
                    [5, 7, 0, 0, 0],
                    true,
                    false,
                    true
                ),
                (
                    0x10006,
                    "sample_ext_helper_map_get_value",
                    0,
                    [5, 7, 11, 2, 0],
                    true,
                    false,
                    true
                ),
            ]
        );
        let globals: Vec<_> = info
            .global_helpers
            .iter()
            .map(|h| {
                (
                    h.id,
                    h.name.as_str(),
                    h.return_type,
                    h.arguments,
                    h.implicit_context,
                )
            })
            .collect();
        assert_eq!(
            globals,
            [
                (19, "bpf_get_current_pid_tgid", 0, [0; 5], false),
                (35, "bpf_redirect_map", 0, [5, 1, 1, 0, 0], false),
            ]
        );
    });
}

/// `test_sample_ebpf.c` uses helpers 1, 0x10000, 0x10001 and 0x10002; the stream and its
/// SHA-256 are the ones computed from upstream's definitions (the byte stream of
/// `ebpf_ext_core_sim::program_info_hash_input`).
#[test]
fn the_program_information_hash_is_the_one_upstreams_definitions_give() {
    with_info(|info| {
        let ids = [0x10002, 1, 0x10000, 0x10001, 1];
        let input = program_info_hash_input(info, &ids).expect("known helpers");
        assert_eq!(input.len(), 275);
        let mut head = b"sample".to_vec();
        head.extend_from_slice(&[
            0x20, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        head.extend_from_slice(&[
            0x4a, 0xef, 0x88, 0xf7, 0x7d, 0x20, 0xc3, 0x4d, 0x85, 0xcf, 0x0f, 0x2e, 0xa1, 0x07,
            0x21, 0x3c,
        ]);
        head.extend_from_slice(&[0xe7, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&input[..head.len()], head.as_slice());
        let hash = program_info_hash(info, &ids).expect("known helpers");
        let hex = hash.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        assert_eq!(
            hex,
            "3e1782cab690208dcedcab6a69639550755c6a49340cd900d2f9c481862ccb3c"
        );
        // Overrides and implicit_context are not hashed; a type-specific prototype is.
        let with_override = program_info_hash(info, &[19, 0x10003]).expect("known");
        let mut changed = info.clone();
        changed.helpers[3].arguments[0] = 1;
        assert_ne!(
            program_info_hash(&changed, &[19, 0x10003]).expect("known"),
            with_override
        );
        changed.helpers[3].arguments[0] = 0;
        changed.helpers[3].implicit_context = false;
        assert_eq!(
            program_info_hash(&changed, &[19, 0x10003]).expect("known"),
            with_override
        );
        assert!(program_info_hash(info, &[0x10007]).is_err());
    });
}

/// The BTF-resolved function provider publishes upstream's one function under upstream's
/// module GUID, with the prototype upstream's store export and bpf2c's expected output give:
/// integer result, (`ANYTHING`, `PTR_TO_READABLE_MEM`, `CONST_SIZE`), flags 0.
#[test]
fn the_btf_resolved_function_is_upstreams() {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let module = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);
    assert_eq!(sample_ext::btf::BTF_MODULE, module);
    let published = published_btf_functions(module).expect("published");
    assert_eq!(
        published,
        [PublishedBtfFunction {
            name: "sample_ebpf_extension_btf_lookup".into(),
            prototype: BtfPrototype {
                return_type: EBPF_RETURN_TYPE_INTEGER,
                arguments: [1, 9, 2, 0, 0],
                flags: 0,
            },
        }]
    );
    driver.unload();
    assert!(
        published_btf_functions(module).is_err(),
        "gone with the driver"
    );
    kernel.assert_no_leaks();
}

/// Unload stops the four providers in the order the driver's docs give: the BTF-resolved
/// function provider, the hook, the map provider, and the program type last (upstream stops
/// the program type before the map provider).
#[test]
fn unload_stops_the_providers_in_the_documented_order() {
    use ebpf_ext_sys::ebpf_extension_uuids::{
        EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID, EBPF_HOOK_EXTENSION_IID,
        EBPF_MAP_INFO_EXTENSION_IID, EBPF_PROGRAM_INFO_EXTENSION_IID,
    };
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    driver.unload();
    let stopped: Vec<_> = kernel
        .nmr_deregistrations()
        .into_iter()
        .filter(|d| d.kind == "provider")
        .map(|d| (d.npi_id, d.module))
        .collect();
    assert_eq!(
        stopped,
        [
            (
                EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID,
                sample_ext::btf::BTF_MODULE
            ),
            (EBPF_HOOK_EXTENSION_IID, sample_ext::hook::ATTACH_TYPE),
            (
                EBPF_MAP_INFO_EXTENSION_IID,
                sample_ext::maps::MAP_PROVIDER_MODULE_ID
            ),
            (EBPF_PROGRAM_INFO_EXTENSION_IID, PROGRAM_TYPE),
        ]
    );
    kernel.assert_no_leaks();
}
