//! The PE loader's parser, and its loader up to (not including) running any code:
//! `ebpf_ext_pe_loader::parse` on arbitrary bytes, every accessor of what it returns, then
//! `ebpf_ext_pe_loader::load` (map, copy sections, apply relocations, bind imports to a dummy
//! function, protect) and unmap.
//!
//! The crate promises "no panic, no out-of-bounds read, whatever the input". Properties
//! checked besides that: whatever `parse` refuses, `load` refuses with the same error (`load`
//! parses first); a parsed image's headers, entry point and section mappings lie within
//! `SizeOfImage`; a loaded image maps at least `SizeOfImage` bytes; what `load` refuses after
//! `parse` accepted is refused for a reason of the load step that the parsed image shows (a
//! relocation of another type than DIR64, an import by ordinal, relocations stripped), or a
//! failed `mmap`/`mprotect`: never a parse error, and never an unresolved import (every
//! import resolves here).
//!
//! Seeds: the sample drivers' `.sys` images (`cargo xtask build-drivers`), which `cargo xtask
//! fuzz` adds when they exist, and `seeds/pe_parse/` from `seeds/make_seeds.py`.
#![no_main]

mod common;

use ebpf_ext_pe_loader::pe::{IMAGE_REL_BASED_DIR64, ImportName};
use ebpf_ext_pe_loader::{Error, load, parse};
use libfuzzer_sys::fuzz_target;

/// Images mapped for the load step at most this large (a larger valid image is parsed only,
/// so one input stays fast).
const MAX_LOAD_SIZE: u32 = 16 << 20;

extern "win64" fn dummy() {}

fuzz_target!(|bytes: &[u8]| {
    let parsed = parse(bytes);
    if common::verbose() {
        eprintln!("parse: {:?}", parsed.as_ref().err());
    }
    let size_of_image = match &parsed {
        Ok(image) => {
            let size = u64::from(image.size_of_image());
            assert!(u64::from(image.size_of_headers()) <= size);
            assert!(
                u64::from(image.entry_point()) < size,
                "entry point outside the image"
            );
            for section in image.sections() {
                // An empty section (VirtualSize and SizeOfRawData 0) maps nothing and is
                // accepted even at VirtualAddress == SizeOfImage; every section's mapping lies
                // within the image.
                let end = u64::from(section.virtual_address) + u64::from(section.mapped_size);
                assert!(end <= size, "section {:?} outside the image", section.name);
                assert!(
                    section.mapped_size == 0 || u64::from(section.virtual_address) < size,
                    "section {:?} starts outside the image",
                    section.name
                );
                assert!(section.file_size <= image.bytes().len());
            }
            for relocation in image.relocations() {
                let _ = relocation;
            }
            for function in image.functions() {
                let _ = function;
            }
            for module in image.imports() {
                let _ = module;
            }
            for export in image.exports() {
                let _ = export;
            }
            if let Some(table) = image.certificate_table() {
                assert!(
                    table.as_ptr() as usize + table.len()
                        <= image.bytes().as_ptr() as usize + image.bytes().len()
                );
            }
            if let Some(signature) = image.authenticode_signature() {
                // A slice of the file, after a WIN_CERTIFICATE header.
                let start = signature.as_ptr() as usize - image.bytes().as_ptr() as usize;
                assert!(start >= 8 && start + signature.len() <= image.bytes().len());
            }
            if let Some(codeview) = image.codeview() {
                assert!(
                    !codeview.path.contains('\0'),
                    "the PDB path runs past its NUL"
                );
            }
            let _ = (
                image.image_base(),
                image.section_alignment(),
                image.dll_characteristics(),
                image.relocations_stripped(),
                image.export_name(),
                image.bytes().len(),
            );
            Some(image.size_of_image())
        }
        Err(_) => None,
    };
    if size_of_image.is_some_and(|size| size > MAX_LOAD_SIZE) {
        return;
    }
    let loaded = load("fuzz.sys", bytes, |_, _| Some(dummy as *const () as usize));
    if common::verbose() {
        eprintln!("load: {:?}", loaded.as_ref().err());
    }
    match (&parsed, &loaded) {
        (Err(parse_error), Err(load_error)) => {
            assert_eq!(parse_error, load_error, "load and parse disagree");
        }
        (Err(parse_error), Ok(_)) => panic!("load accepted what parse refused: {parse_error:?}"),
        (Ok(_), Ok(image)) => {
            assert!(image.size() >= size_of_image.unwrap_or(0) as usize);
        }
        (Ok(image), Err(error)) => {
            let explained = match error {
                Error::UnsupportedRelocation { rva, kind } => image
                    .relocations()
                    .iter()
                    .any(|r| r.rva == *rva && r.kind == *kind && r.kind != IMAGE_REL_BASED_DIR64),
                Error::ImportByOrdinal { module, ordinal } => image.imports().iter().any(|m| {
                    m.name == *module
                        && m.imports
                            .iter()
                            .any(|i| i.name == ImportName::Ordinal(*ordinal))
                }),
                Error::RelocationsStripped => image.relocations_stripped(),
                Error::Map { .. } | Error::Protect { .. } | Error::TooManyImages => true,
                _ => false,
            };
            assert!(explained, "load refused a parsed image with {error:?}");
        }
    }
});
