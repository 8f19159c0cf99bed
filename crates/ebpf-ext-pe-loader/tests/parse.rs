//! Validation: a valid image parses to what was built; every malformation gives its specific
//! error; every truncation is an error.

mod support;

use ebpf_ext_pe_loader::pe::{ImportName, Protection};
use ebpf_ext_pe_loader::{Error, parse};
use support::{
    Built, CODEVIEW_AGE, CODEVIEW_GUID, CODEVIEW_PATH, DATA, FILE_HEADER, GLOBAL_VALUE, IMAGE_BASE,
    NT, OPT, RDATA, RELOC, SCN_TEXT, Spec, TEXT, build, opt, sec,
};

fn valid() -> Built {
    build(&Spec::default())
}

/// The error of the default image after `f` broke it.
fn broken(f: impl FnOnce(&mut Built)) -> Error {
    let mut built = valid();
    f(&mut built);
    match parse(&built.bytes) {
        Ok(_) => panic!("a malformed image parsed"),
        Err(error) => error,
    }
}

fn section(index: usize, field: usize) -> usize {
    Built::section_header(index) + field
}

fn name(s: &str) -> String {
    s.to_owned()
}

#[test]
fn valid_image_parses_to_what_was_built() {
    let built = valid();
    let image = parse(&built.bytes).expect("valid");
    assert_eq!(image.image_base(), IMAGE_BASE);
    assert_eq!(image.size_of_image(), built.size_of_image);
    assert_eq!(image.entry_point(), built.rva("DriverEntry"));
    assert!(!image.relocations_stripped());
    assert_eq!(image.dll_characteristics(), 0x0160);
    let sections: Vec<_> = image
        .sections()
        .iter()
        .map(|s| (s.name.as_str(), s.virtual_address, s.protection))
        .collect();
    assert_eq!(
        sections,
        [
            (".text", built.sections[TEXT].0, Protection::ReadExecute),
            (".rdata", built.sections[RDATA].0, Protection::ReadOnly),
            (".data", built.sections[DATA].0, Protection::ReadWrite),
            (".reloc", built.sections[RELOC].0, Protection::ReadOnly),
        ]
    );
    let imports: Vec<_> = image
        .imports()
        .iter()
        .map(|m| {
            let names: Vec<_> = m
                .imports
                .iter()
                .map(|i| match &i.name {
                    ImportName::Name(n) => n.clone(),
                    ImportName::Ordinal(o) => format!("#{o}"),
                })
                .collect();
            (m.name.clone(), names)
        })
        .collect();
    assert_eq!(
        imports,
        [
            (
                name("ntoskrnl.exe"),
                vec![
                    name("ExAllocatePool2"),
                    name("ExFreePoolWithTag"),
                    name("KeGetCurrentIrql"),
                    name("__chkstk")
                ]
            ),
            (name("NETIO.SYS"), vec![name("NmrDeregisterProvider")]),
        ]
    );
    assert_eq!(image.relocations().len(), 1);
    assert_eq!(image.relocations()[0].rva, built.data_pointer_rva);
    assert_eq!(image.relocations()[0].kind, 10);
    assert_eq!(image.functions().len(), built.functions.len());
    assert_eq!(image.export_name(), Some("test.sys"));
    assert!(
        image
            .exports()
            .iter()
            .any(|e| e.name == "crash" && e.rva == built.rva("crash"))
    );
    let global = built.file_offset(built.global_rva);
    assert_eq!(
        u64::from_le_bytes(built.bytes[global..global + 8].try_into().unwrap()),
        GLOBAL_VALUE
    );
}

#[test]
fn the_codeview_record_names_the_pdb() {
    let built = valid();
    let codeview = parse(&built.bytes)
        .unwrap()
        .codeview()
        .expect("a CodeView record");
    assert_eq!(codeview.guid, CODEVIEW_GUID);
    assert_eq!(codeview.age, CODEVIEW_AGE);
    assert_eq!(codeview.path, CODEVIEW_PATH);
}

#[test]
fn a_broken_debug_directory_hides_the_codeview_record_but_the_image_still_parses() {
    type Breaks = fn(&mut Built);
    let cases: [(&str, Breaks); 6] = [
        ("no debug directory", |b| {
            b.set_u32(Built::directory(6) + 4, 0);
        }),
        ("an entry of another type", |b| {
            let at = b.debug_entry + 12;
            b.set_u32(at, 4);
        }),
        ("a record past the end of the file", |b| {
            let at = b.debug_entry + 24;
            let len = u32::try_from(b.bytes.len()).unwrap();
            b.set_u32(at, len - 8);
        }),
        ("a record size past the end of the file", |b| {
            let at = b.debug_entry + 16;
            b.set_u32(at, u32::MAX);
        }),
        ("a record without the RSDS signature", |b| {
            let at = b.codeview;
            b.bytes[at..at + 4].copy_from_slice(b"NB10");
        }),
        ("a record too short for its age", |b| {
            let at = b.debug_entry + 16;
            b.set_u32(at, 20);
        }),
    ];
    for (case, breaks) in cases {
        let mut built = valid();
        breaks(&mut built);
        let image = parse(&built.bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(image.codeview(), None, "{case}");
    }
    // A record without a terminating NUL: the path is the rest of the record.
    let mut built = valid();
    let at = built.debug_entry + 16;
    let size = built.u32(at);
    built.set_u32(at, size - 1);
    let codeview = parse(&built.bytes)
        .unwrap()
        .codeview()
        .expect("a CodeView record");
    assert_eq!(codeview.path, CODEVIEW_PATH);
}

#[test]
fn every_truncation_is_an_error() {
    let built = valid();
    for len in 0..built.bytes.len() {
        assert!(parse(&built.bytes[..len]).is_err(), "prefix of {len} bytes");
    }
    assert!(matches!(
        parse(&built.bytes[..OPT + 240 + 10]),
        Err(Error::Truncated {
            what: "section table",
            ..
        })
    ));
    assert!(matches!(
        parse(&built.bytes[..OPT + 50]),
        Err(Error::Truncated {
            what: "optional header",
            ..
        })
    ));
}

#[test]
fn dos_signature() {
    assert_eq!(
        broken(|b| {
            b.set_u16(0, 0x1234);
        }),
        Error::BadDosSignature(0x1234)
    );
}

#[test]
fn nt_headers_outside_the_file() {
    let error = broken(|b| {
        let len = u32::try_from(b.bytes.len()).unwrap();
        b.set_u32(0x3C, len - 8);
    });
    assert!(matches!(
        error,
        Error::Truncated {
            what: "NT headers",
            ..
        }
    ));
    let error = broken(|b| {
        b.set_u32(0x3C, u32::MAX);
    });
    assert!(matches!(
        error,
        Error::Truncated {
            what: "NT headers",
            ..
        }
    ));
}

#[test]
fn nt_signature() {
    assert_eq!(
        broken(|b| {
            b.set_u32(NT, 0x0000_454E);
        }),
        Error::BadNtSignature(0x454E)
    );
}

#[test]
fn machine_must_be_amd64() {
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER, 0x14C);
        }),
        Error::UnsupportedMachine(0x14C)
    );
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER, 0xAA64);
        }),
        Error::UnsupportedMachine(0xAA64)
    );
}

#[test]
fn executable_image_flag_is_required() {
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER + 18, 0x0020);
        }),
        Error::NotExecutableImage
    );
}

#[test]
fn optional_header_must_be_pe32_plus() {
    assert_eq!(
        broken(|b| {
            b.set_u16(OPT + opt::MAGIC, 0x10B);
        }),
        Error::NotPe32Plus(0x10B)
    );
}

#[test]
fn optional_header_size_must_hold_the_directories() {
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER + 16, 100);
        }),
        Error::BadOptionalHeaderSize(100)
    );
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER + 16, 200);
        }),
        Error::BadOptionalHeaderSize(200)
    );
}

#[test]
fn subsystem_must_be_native() {
    assert_eq!(
        broken(|b| {
            b.set_u16(OPT + opt::SUBSYSTEM, 2);
        }),
        Error::UnsupportedSubsystem(2)
    );
}

#[test]
fn at_most_sixteen_data_directories() {
    assert_eq!(
        broken(|b| {
            b.set_u32(OPT + opt::DIRECTORY_COUNT, 17);
        }),
        Error::TooManyDataDirectories(17)
    );
}

#[test]
fn alignments_must_be_sane() {
    for (section, file) in [
        (0x1800, 0x200),
        (0x800, 0x200),
        (0x1000, 0x100),
        (0x1000, 0x300),
        (0x1000, 0x2000),
        (0, 0x200),
    ] {
        assert_eq!(
            broken(|b| {
                b.set_u32(OPT + opt::SECTION_ALIGNMENT, section)
                    .set_u32(OPT + opt::FILE_ALIGNMENT, file);
            }),
            Error::BadAlignment { section, file }
        );
    }
}

#[test]
fn size_of_image_must_be_sane() {
    for size in [0, 0x5001, 0x1000_1000, u32::MAX] {
        assert_eq!(
            broken(|b| {
                b.set_u32(OPT + opt::SIZE_OF_IMAGE, size);
            }),
            Error::BadSizeOfImage(size)
        );
    }
}

#[test]
fn section_count_must_be_sane() {
    for count in [0, 97, u16::MAX] {
        assert_eq!(
            broken(|b| {
                b.set_u16(FILE_HEADER + 2, count);
            }),
            Error::BadSectionCount(count)
        );
    }
    // 30 sections: the table runs past SizeOfHeaders; 96: past the end of the file.
    assert_eq!(
        broken(|b| {
            b.set_u16(FILE_HEADER + 2, 30);
        }),
        Error::BadSizeOfHeaders(0x400)
    );
    assert!(matches!(
        broken(|b| {
            b.set_u16(FILE_HEADER + 2, 96);
        }),
        Error::Truncated {
            what: "section table",
            ..
        }
    ));
}

#[test]
fn size_of_headers_must_cover_the_table_and_fit() {
    for size in [0, 0x100, 0x401] {
        assert_eq!(
            broken(|b| {
                b.set_u32(OPT + opt::SIZE_OF_HEADERS, size);
            }),
            Error::BadSizeOfHeaders(size)
        );
    }
    let built = valid();
    let too_big = built.size_of_image + 0x200;
    assert_eq!(
        broken(|b| {
            b.set_u32(OPT + opt::SIZE_OF_HEADERS, too_big);
        }),
        Error::BadSizeOfHeaders(too_big)
    );
}

#[test]
fn section_raw_data_must_be_in_the_file() {
    let expected = Error::SectionRawDataOutOfFile {
        section: name(".reloc"),
    };
    assert_eq!(
        broken(|b| {
            let size = b.u32(section(RELOC, sec::RAW_SIZE));
            b.set_u32(section(RELOC, sec::RAW_SIZE), size + 0x200);
        }),
        expected
    );
    assert_eq!(
        broken(|b| {
            b.set_u32(section(RELOC, sec::RAW_POINTER), u32::MAX);
        }),
        expected
    );
}

#[test]
fn section_addresses_must_be_aligned() {
    assert_eq!(
        broken(|b| {
            let va = b.u32(section(DATA, sec::VIRTUAL_ADDRESS));
            b.set_u32(section(DATA, sec::VIRTUAL_ADDRESS), va + 0x10);
        }),
        Error::SectionMisaligned {
            section: name(".data")
        }
    );
}

#[test]
fn sections_must_not_overlap_the_headers() {
    assert_eq!(
        broken(|b| {
            b.set_u32(section(TEXT, sec::VIRTUAL_ADDRESS), 0);
        }),
        Error::SectionOverlapsHeaders {
            section: name(".text")
        }
    );
}

#[test]
fn sections_must_be_inside_the_image() {
    let expected = Error::SectionOutOfImage {
        section: name(".reloc"),
    };
    assert_eq!(
        broken(|b| {
            let end = b.size_of_image;
            b.set_u32(section(RELOC, sec::VIRTUAL_ADDRESS), end);
        }),
        expected
    );
    assert_eq!(
        broken(|b| {
            b.set_u32(section(RELOC, sec::VIRTUAL_SIZE), u32::MAX);
        }),
        expected
    );
}

#[test]
fn sections_must_not_overlap_each_other() {
    assert_eq!(
        broken(|b| {
            let text = b.u32(section(TEXT, sec::VIRTUAL_ADDRESS));
            b.set_u32(section(RDATA, sec::VIRTUAL_ADDRESS), text);
        }),
        Error::SectionsOverlap {
            first: name(".text"),
            second: name(".rdata")
        }
    );
    assert_eq!(
        broken(|b| {
            b.set_u32(section(TEXT, sec::VIRTUAL_SIZE), 0x1001);
        }),
        Error::SectionsOverlap {
            first: name(".text"),
            second: name(".rdata")
        }
    );
}

#[test]
fn writable_and_executable_sections_are_malformed() {
    assert_eq!(
        broken(|b| {
            b.set_u32(section(TEXT, sec::CHARACTERISTICS), SCN_TEXT | 0x8000_0000);
        }),
        Error::WritableAndExecutable {
            section: name(".text")
        }
    );
}

#[test]
fn entry_point_must_be_in_executable_code() {
    let built = valid();
    let data = built.sections[DATA].0;
    let text_end = built.sections[TEXT].0 + built.sections[TEXT].2;
    for entry in [0, 0x10, data, text_end, u32::MAX] {
        assert_eq!(
            broken(|b| {
                b.set_u32(OPT + opt::ENTRY, entry);
            }),
            Error::EntryPointNotExecutable(entry)
        );
    }
}

#[test]
fn directories_must_be_inside_the_image() {
    let built = valid();
    let end = built.size_of_image;
    for (index, directory) in [
        (1, "import"),
        (3, "exception"),
        (5, "base relocation"),
        (6, "debug"),
        (0, "export"),
    ] {
        for (rva, size) in [(end - 4, 40), (u32::MAX, 8), (8, u32::MAX)] {
            assert_eq!(
                broken(|b| {
                    b.set_u32(Built::directory(index), rva)
                        .set_u32(Built::directory(index) + 4, size);
                }),
                Error::DirectoryOutOfImage {
                    directory,
                    rva,
                    size
                }
            );
        }
    }
}

#[test]
fn directories_read_must_be_in_one_section_file_data() {
    let built = valid();
    let beyond_data = built.sections[DATA].0 + 0x100;
    for (index, directory) in [
        (1, "import"),
        (3, "exception"),
        (5, "base relocation"),
        (0, "export"),
    ] {
        for rva in [0x100, beyond_data] {
            assert_eq!(
                broken(|b| {
                    b.set_u32(Built::directory(index), rva)
                        .set_u32(Built::directory(index) + 4, 48);
                }),
                Error::DirectoryNotInSection {
                    directory,
                    rva,
                    size: 48
                }
            );
        }
    }
}

#[test]
fn certificate_table_must_be_in_the_file() {
    assert_eq!(
        broken(|b| {
            let len = u32::try_from(b.bytes.len()).unwrap();
            b.set_u32(Built::directory(4), len - 4)
                .set_u32(Built::directory(4) + 4, 100);
        }),
        Error::CertificateOutOfFile
    );
}

/// The default image with `table` appended (at an 8-byte boundary) as its certificate table.
fn with_certificates(table: &[u8]) -> Built {
    let mut built = valid();
    let at = built.bytes.len().next_multiple_of(8);
    built.bytes.resize(at, 0);
    built.bytes.extend_from_slice(table);
    let (at, size) = (
        u32::try_from(at).unwrap(),
        u32::try_from(table.len()).unwrap(),
    );
    built
        .set_u32(Built::directory(4), at)
        .set_u32(Built::directory(4) + 4, size);
    built
}

/// One `WIN_CERTIFICATE`: `dwLength`, `wRevision`, `wCertificateType`, `data`, then zeros to
/// the next 8-byte boundary.
fn certificate(revision: u16, kind: u16, data: &[u8]) -> Vec<u8> {
    let mut entry = u32::try_from(8 + data.len())
        .unwrap()
        .to_le_bytes()
        .to_vec();
    entry.extend_from_slice(&revision.to_le_bytes());
    entry.extend_from_slice(&kind.to_le_bytes());
    entry.extend_from_slice(data);
    entry.resize(entry.len().next_multiple_of(8), 0);
    entry
}

#[test]
fn the_signature_is_the_certificate_tables_pkcs7_entry() {
    let unsigned = valid();
    let parsed = parse(&unsigned.bytes).expect("valid");
    assert_eq!(
        parsed.authenticode_signature(),
        None,
        "no certificate table"
    );
    assert_eq!(parsed.certificate_table(), None);
    let signed = with_certificates(&certificate(0x0200, 2, b"pkcs#7 signed data"));
    assert_eq!(
        parse(&signed.bytes)
            .expect("valid")
            .authenticode_signature(),
        Some(&b"pkcs#7 signed data"[..])
    );
    // An X.509 entry (type 1) first: the PKCS#7 one after it, at its 8-byte boundary.
    let mut table = certificate(0x0200, 1, b"x509");
    table.extend(certificate(0x0200, 2, b"the signature"));
    let second = with_certificates(&table);
    assert_eq!(
        parse(&second.bytes)
            .expect("valid")
            .authenticode_signature(),
        Some(&b"the signature"[..])
    );
}

#[test]
fn a_certificate_table_without_a_pkcs7_entry_is_no_signature() {
    for (table, why) in [
        (certificate(0x0100, 2, b"data"), "revision 1.0"),
        (certificate(0x0200, 1, b"x509"), "only an X.509 entry"),
        (certificate(0x0200, 2, b""), "an empty entry"),
        (vec![0; 16], "a zero length"),
        (
            {
                let mut entry = certificate(0x0200, 2, b"data");
                entry[..4].copy_from_slice(&64u32.to_le_bytes());
                entry
            },
            "a length past the table",
        ),
    ] {
        let built = with_certificates(&table);
        let parsed = parse(&built.bytes).expect("valid");
        assert_eq!(parsed.authenticode_signature(), None, "{why}");
        assert_eq!(
            parsed.certificate_table(),
            Some(&table[..]),
            "{why}: still a certificate table"
        );
    }
}

#[test]
fn import_directory_must_be_terminated() {
    assert_eq!(
        broken(|b| {
            b.set_u32(Built::directory(1) + 4, 20);
        }),
        Error::ImportDirectoryUnterminated
    );
    assert_eq!(
        broken(|b| {
            b.set_u32(Built::directory(1) + 4, 50);
        }),
        Error::ImportDirectoryUnterminated
    );
}

#[test]
fn import_names_must_be_ascii_strings_in_the_file() {
    assert_eq!(
        broken(|b| {
            b.set_u32(b.import_descriptors + 12, 0xFFFF_FF00);
        }),
        Error::BadImportName { rva: 0xFFFF_FF00 }
    );
    // The hint/name entry of the first import, moved onto GLOBAL_VALUE: its "name" is not
    // printable ASCII.
    let built = valid();
    let global = built.global_rva;
    assert_eq!(
        broken(|b| {
            let ilt = b.ilts[0];
            b.set_u64(ilt, u64::from(global));
        }),
        Error::BadImportName { rva: global + 2 }
    );
    // A name running off the end of its section's data (its NUL overwritten) is unterminated.
    let rdata_end = built.sections[RDATA].0 + built.sections[RDATA].2;
    assert_eq!(
        broken(|b| {
            let last = b.file_offset(rdata_end - 1);
            b.bytes[last] = b'X';
            let ilt = b.ilts[0];
            b.set_u64(ilt, u64::from(rdata_end - 6));
        }),
        Error::BadImportName { rva: rdata_end - 4 }
    );
}

#[test]
fn import_thunks_must_not_set_reserved_bits() {
    let built = valid();
    let ilt_rva = |b: &Built| b.u32(b.import_descriptors);
    for value in [1_u64 << 40, 1 << 31, (1 << 63) | (1 << 20)] {
        let rva = ilt_rva(&built);
        assert_eq!(
            broken(|b| {
                let ilt = b.ilts[0];
                b.set_u64(ilt, value);
            }),
            Error::BadImportThunk { rva, value }
        );
    }
}

#[test]
fn import_lookup_tables_must_be_terminated() {
    let built = valid();
    let rdata_end = built.sections[RDATA].0 + built.sections[RDATA].2;
    let beyond_data = built.sections[DATA].0 + 0x100;
    for lookup in [rdata_end - 4, beyond_data] {
        assert_eq!(
            broken(|b| {
                b.set_u32(b.import_descriptors, lookup);
            }),
            Error::ImportTableUnterminated {
                module: name("ntoskrnl.exe")
            }
        );
    }
}

#[test]
fn import_address_tables_must_be_inside_sections() {
    for iat in [0x10, u32::MAX - 4, 0x10_0000] {
        assert_eq!(
            broken(|b| {
                b.set_u32(b.import_descriptors + 16, iat);
            }),
            Error::IatOutOfImage {
                module: name("ntoskrnl.exe")
            }
        );
    }
}

#[test]
fn imports_are_limited_in_number() {
    // A fifth section holding 65 537 lookup entries, all naming the first import, and the
    // first module's lookup table moved there.
    let mut built = valid();
    let entries = 65_537_usize;
    let entry = built.bytes[built.ilts[0]..built.ilts[0] + 8].to_vec();
    let va = built.size_of_image;
    let raw = u32::try_from(built.bytes.len()).unwrap();
    let raw_size = u32::try_from((entries * 8).next_multiple_of(0x200)).unwrap();
    let mapped = raw_size.next_multiple_of(0x1000);
    for _ in 0..entries {
        built.bytes.extend_from_slice(&entry);
    }
    built
        .bytes
        .resize(usize::try_from(raw + raw_size).unwrap(), 0);
    let header = Built::section_header(4);
    built.bytes[header..header + 8].copy_from_slice(b".big\0\0\0\0");
    built
        .set_u32(header + sec::VIRTUAL_SIZE, raw_size)
        .set_u32(header + sec::VIRTUAL_ADDRESS, va)
        .set_u32(header + sec::RAW_SIZE, raw_size)
        .set_u32(header + sec::RAW_POINTER, raw)
        .set_u32(header + sec::CHARACTERISTICS, 0x4000_0040)
        .set_u16(FILE_HEADER + 2, 5)
        .set_u32(OPT + opt::SIZE_OF_IMAGE, va + mapped);
    let descriptor = built.import_descriptors;
    built.set_u32(descriptor, va);
    assert_eq!(parse(&built.bytes).unwrap_err(), Error::TooManyImports);
}

#[test]
fn relocation_blocks_must_be_well_formed() {
    for size in [0, 4, 10, 0x1000] {
        assert_eq!(
            broken(|b| {
                b.set_u32(b.reloc_block + 4, size);
            }),
            Error::BadRelocationBlock { offset: 0 }
        );
    }
    // A directory size that cuts the block header.
    assert_eq!(
        broken(|b| {
            b.set_u32(Built::directory(5) + 4, 6);
        }),
        Error::BadRelocationBlock { offset: 0 }
    );
}

#[test]
fn relocations_must_patch_inside_the_image() {
    let built = valid();
    let end = built.size_of_image;
    assert_eq!(
        broken(|b| {
            b.set_u32(b.reloc_block, end - 4);
        }),
        Error::RelocationOutOfImage { rva: end - 4 }
    );
    assert_eq!(
        broken(|b| {
            b.set_u32(b.reloc_block, u32::MAX);
        }),
        Error::RelocationOutOfImage { rva: u32::MAX }
    );
}

#[test]
fn exception_directory_holds_whole_runtime_functions() {
    let built = valid();
    let size = built.u32(Built::directory(3) + 4) - 1;
    assert_eq!(
        broken(|b| {
            b.set_u32(Built::directory(3) + 4, size);
        }),
        Error::BadExceptionDirectory { size }
    );
}

#[test]
fn runtime_functions_must_be_ordered_and_inside_the_image() {
    let built = valid();
    let end = built.size_of_image;
    // Empty function.
    assert_eq!(
        broken(|b| {
            let begin = b.u32(b.pdata);
            b.set_u32(b.pdata + 4, begin);
        }),
        Error::BadRuntimeFunction { index: 0 }
    );
    // Past the image.
    assert_eq!(
        broken(|b| {
            b.set_u32(b.pdata + 4, end + 1);
        }),
        Error::BadRuntimeFunction { index: 0 }
    );
    // Unwind info past the image.
    assert_eq!(
        broken(|b| {
            b.set_u32(b.pdata + 8, end);
        }),
        Error::BadRuntimeFunction { index: 0 }
    );
    // Out of order.
    assert_eq!(
        broken(|b| {
            let first = b.u32(b.pdata);
            b.set_u32(b.pdata + 12, first);
        }),
        Error::BadRuntimeFunction { index: 1 }
    );
}

/// A way to break an image.
type Breaker = Box<dyn Fn(&mut Built)>;

#[test]
fn export_directory_must_be_well_formed() {
    let at = |b: &Built| b.export_directory.unwrap();
    let cases: [(&str, Breaker); 6] = [
        (
            "smaller than IMAGE_EXPORT_DIRECTORY",
            Box::new(|b| {
                b.set_u32(Built::directory(0) + 4, 20);
            }),
        ),
        (
            "module name is not a NUL-terminated ASCII string",
            Box::new(move |b| {
                let d = at(b);
                b.set_u32(d + 12, 0x10_0000);
            }),
        ),
        (
            "implausible NumberOfFunctions or NumberOfNames",
            Box::new(move |b| {
                let d = at(b);
                let functions = b.u32(d + 20);
                b.set_u32(d + 24, functions + 1);
            }),
        ),
        (
            "AddressOfFunctions outside the file data",
            Box::new(move |b| {
                let d = at(b);
                b.set_u32(d + 28, 0x10_0000);
            }),
        ),
        (
            "name ordinal out of range",
            Box::new(move |b| {
                let d = at(b);
                let ordinals = b.file_offset(b.u32(d + 36));
                b.set_u16(ordinals, 0xFFFF);
            }),
        ),
        (
            "export name is not a NUL-terminated ASCII string",
            Box::new(move |b| {
                let d = at(b);
                let names = b.file_offset(b.u32(d + 32));
                b.set_u32(names, 0x10_0000);
            }),
        ),
    ];
    for (reason, breaker) in cases {
        assert_eq!(broken(breaker), Error::BadExportDirectory(reason));
    }
}

#[test]
fn errors_explain_themselves() {
    let message = broken(|b| {
        b.set_u16(FILE_HEADER, 0x14C);
    })
    .to_string();
    assert_eq!(message, "unsupported machine 0x014c (only AMD64, 0x8664)");
    let message = parse(&[]).unwrap_err().to_string();
    assert_eq!(
        message,
        "file truncated: DOS header needs bytes 0x0..0x40, the file has 0x0"
    );
}
