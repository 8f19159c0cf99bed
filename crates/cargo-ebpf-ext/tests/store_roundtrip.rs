//! The eBPF store export of a real driver, parsed back and compared byte for byte with the
//! program data the driver publishes (read by core-sim as the core reads it) and, for
//! ntosebpfext's process type, with the worked values of the store's encoding.
#![allow(clippy::std_instead_of_core, reason = "host test")]

use cargo_ebpf_ext::store::{
    BtfModuleEntry, HIVES, ProgramEntry, SectionEntry, Store, Value, guid_bytes, guid_string,
    parse_reg, reg_file_bytes, reg_text,
};
use ebpf_ext_core_sim::bpf::published_btf_functions;
use ebpf_ext_core_sim::{ProgramInfo, ProgramInfoClient};
use ebpf_ext_testing::{LoadedDriver, Target};
use ebpf_ext_usersim::Kernel;

/// What the ntos sample publishes, read through the linked crate.
fn published() -> ProgramInfo {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(
        Target::Native(sample_ntos_ext::driver_entry),
        "SampleNtosEbpfExt",
    )
    .expect("DriverEntry");
    let client = ProgramInfoClient::attach(sample_ntos_ext::program::PROGRAM_TYPE)
        .expect("program information");
    let info = (*client.info()).clone();
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
    info
}

fn values<'a>(written: &'a [(String, Vec<(String, Value)>)], key: &str) -> &'a [(String, Value)] {
    &written
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no key {key}"))
        .1
}

fn le(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one value-by-value comparison")]
fn every_exported_value_is_the_drivers_program_data_byte_for_byte() {
    let info = published();
    let section = SectionEntry {
        name: "sample_section".into(),
        program_type: info.program_type,
        attach_type: sample_ntos_ext::hook::ATTACH_TYPE,
        bpf_prog_type: info.bpf_prog_type,
        bpf_attach_type: 11,
    };
    let bytes = reg_file_bytes(&reg_text(&Store {
        programs: vec![ProgramEntry::from_program_info(&info)],
        sections: vec![section.clone()],
        btf_modules: Vec::new(),
    }));
    let parsed = parse_reg(&bytes).expect("the .reg parses");
    for hive in HIVES {
        let root = format!(
            r"{hive}\Software\eBPF\Providers\ProgramData\{}",
            guid_string(&info.program_type)
        );
        assert!(parsed.deleted.contains(&root), "cleared before written");
        let helper_count = u32::try_from(info.helpers.len()).expect("few helpers");
        assert_eq!(
            values(&parsed.written, &root),
            &[
                ("Version".to_owned(), Value::Dword(1)),
                ("Size".to_owned(), Value::Dword(64)),
                ("HelperCount".to_owned(), Value::Dword(helper_count)),
            ]
        );
        let d = info.context_descriptor;
        assert_eq!(
            values(&parsed.written, &format!(r"{root}\TypeDescriptor")),
            &[
                ("Version".to_owned(), Value::Dword(1)),
                ("Size".to_owned(), Value::Dword(61)),
                ("Name".to_owned(), Value::String(info.name.clone())),
                (
                    "ContextDescriptor".to_owned(),
                    Value::Binary(le(&[d.size, d.data, d.end, d.meta]))
                ),
                ("BpfProgType".to_owned(), Value::Dword(info.bpf_prog_type)),
                (
                    "IsPrivileged".to_owned(),
                    Value::Dword(u32::from(info.is_privileged))
                ),
            ]
        );
        let helper_keys: Vec<&String> = parsed
            .written
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&format!(r"{root}\Helpers\")))
            .collect();
        assert_eq!(
            helper_keys.len(),
            info.helpers.len(),
            "HelperCount = subkeys"
        );
        for helper in &info.helpers {
            let mut prototype = helper.id.to_le_bytes().to_vec();
            prototype.extend(le(&[helper.return_type]));
            prototype.extend(le(&helper.arguments));
            assert_eq!(prototype.len(), 28);
            assert_eq!(
                values(&parsed.written, &format!(r"{root}\Helpers\{}", helper.name)),
                &[
                    ("Version".to_owned(), Value::Dword(1)),
                    ("Size".to_owned(), Value::Dword(66)),
                    ("Prototype".to_owned(), Value::Binary(prototype)),
                    (
                        "ReallocatePacket".to_owned(),
                        Value::Dword(u32::from(helper.reallocate_packet))
                    ),
                ]
            );
        }
        let sec = format!(r"{hive}\Software\eBPF\Providers\SectionData\sample_section");
        assert_eq!(
            values(&parsed.written, &sec),
            &[
                ("Version".to_owned(), Value::Dword(1)),
                ("Size".to_owned(), Value::Dword(56)),
                (
                    "ProgramType".to_owned(),
                    Value::Binary(guid_bytes(&info.program_type))
                ),
                (
                    "AttachType".to_owned(),
                    Value::Binary(guid_bytes(&section.attach_type))
                ),
                ("BpfProgType".to_owned(), Value::Dword(info.bpf_prog_type)),
                ("BpfAttachType".to_owned(), Value::Dword(11)),
            ]
        );
        // ntosebpfext's process type: the store's worked values.
        if guid_string(&info.program_type) == "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}" {
            let td = values(&parsed.written, &format!(r"{root}\TypeDescriptor"));
            assert_eq!(
                td[3].1,
                Value::Binary(vec![
                    0x90, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff
                ])
            );
            let mut prototype = vec![
                0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0x0b, 0, 0, 0, 2, 0, 0, 0,
            ];
            prototype.extend([0; 8]);
            let helper = values(
                &parsed.written,
                &format!(r"{root}\Helpers\bpf_process_get_image_path"),
            );
            assert_eq!(helper[2].1, Value::Binary(prototype));
        }
    }
}

/// sample-ext's BTF-resolved functions, exported from what its provider publishes (read by
/// core-sim as the core's client reads it) and parsed back: upstream's module and function,
/// its prototype value by value.
#[test]
fn the_btf_resolved_functions_are_the_drivers_byte_for_byte() {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let module = sample_ext::btf::BTF_MODULE;
    let functions = published_btf_functions(module).expect("published");
    driver.unload();
    kernel.assert_no_leaks();
    let store = Store {
        btf_modules: vec![BtfModuleEntry::from_published(module, &functions)],
        ..Store::default()
    };
    let parsed = parse_reg(&reg_file_bytes(&reg_text(&store))).expect("the .reg parses");
    assert_eq!(functions.len(), 1);
    for hive in HIVES {
        let root = format!(
            r"{hive}\Software\eBPF\Providers\BtfResolvedFunctions\{{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}}"
        );
        assert!(parsed.deleted.contains(&root), "cleared before written");
        assert_eq!(
            values(&parsed.written, &root),
            &[
                ("Version".to_owned(), Value::Dword(1)),
                ("Size".to_owned(), Value::Dword(56)),
            ]
        );
        for f in &functions {
            assert_eq!(
                values(&parsed.written, &format!(r"{root}\Functions\{}", f.name)),
                &[
                    (
                        "ReturnType".to_owned(),
                        Value::Dword(f.prototype.return_type.cast_unsigned())
                    ),
                    (
                        "Arguments".to_owned(),
                        Value::Binary(le(&f.prototype.arguments))
                    ),
                    ("Flags".to_owned(), Value::Dword(f.prototype.flags)),
                ]
            );
        }
        let function = format!(r"{root}\Functions\sample_ebpf_extension_btf_lookup");
        assert_eq!(
            values(&parsed.written, &function)[1].1,
            Value::Binary(le(&[1, 9, 2, 0, 0])),
            "upstream's arguments: ANYTHING, PTR_TO_READABLE_MEM, CONST_SIZE"
        );
    }
}
