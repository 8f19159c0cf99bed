//! The post-link steps on a driver image — section fix-ups and the PE checksum, its only
//! writes — and the checks every driver must pass. Reading goes through the loader's parser
//! (`ebpf_ext_pe_loader::pe::parse`, which validates every header, section, import and
//! directory): the workspace has one PE reader. Python `pefile` checks the same properties
//! independently (`pecheck.py`, compiled into cargo-ebpf-ext).

use anyhow::{Context, Result, anyhow};
use ebpf_ext_pe_loader::pe::{
    IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY as FORCE_INTEGRITY, IMAGE_SCN_MEM_EXECUTE,
    IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE, ImportName, parse,
};

const SCN_CNT_CODE: u32 = 0x0000_0020;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const SCN_MEM_ANY: u32 = IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE | IMAGE_SCN_MEM_EXECUTE;

/// Where the fields the write steps change live, by the PE format's fixed layout (the parser
/// has already checked that the headers and the section table lie inside the file).
mod layout {
    /// `e_lfanew`: file offset of the NT headers.
    pub(super) const E_LFANEW: usize = 0x3C;
    /// `SizeOfOptionalHeader`, from the NT headers (after the 4-byte signature).
    pub(super) const SIZE_OF_OPTIONAL_HEADER: usize = 4 + 16;
    /// The optional header, from the NT headers (signature + `IMAGE_FILE_HEADER`).
    pub(super) const OPTIONAL_HEADER: usize = 4 + 20;
    /// `CheckSum`, in the PE32+ optional header.
    pub(super) const CHECKSUM: usize = 64;
    /// `sizeof(IMAGE_SECTION_HEADER)`.
    pub(super) const SECTION_HEADER: usize = 40;
    /// `Characteristics`, in a section header.
    pub(super) const SECTION_CHARACTERISTICS: usize = 36;
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("truncated image")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("truncated image")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A section as the checks and fix-ups see it.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) characteristics: u32,
    header_offset: usize,
}

/// A driver image read by the loader's parser, with the file offsets its write steps need.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) bytes: Vec<u8>,
    pub(crate) dll_characteristics: u16,
    pub(crate) entry_rva: u32,
    pub(crate) sections: Vec<Section>,
    imports: Vec<(String, Vec<String>)>,
    checksum_offset: usize,
    signed: bool,
    certificate_table: bool,
}

impl Image {
    /// Reads a PE32+ driver image (native subsystem, x64, no W+X section: the parser refuses
    /// anything else, naming what is wrong).
    pub(crate) fn parse(bytes: Vec<u8>) -> Result<Image> {
        let parsed = parse(&bytes).map_err(|e| anyhow!("not a valid driver image: {e}"))?;
        let nt = u32_at(&bytes, layout::E_LFANEW)? as usize;
        let optional = nt + layout::OPTIONAL_HEADER;
        let table = optional + usize::from(u16_at(&bytes, nt + layout::SIZE_OF_OPTIONAL_HEADER)?);
        let sections = parsed
            .sections()
            .iter()
            .enumerate()
            .map(|(i, s)| Section {
                name: s.name.clone(),
                characteristics: s.characteristics,
                header_offset: table + i * layout::SECTION_HEADER,
            })
            .collect();
        let imports = parsed
            .imports()
            .iter()
            .map(|m| {
                let names = m.imports.iter().map(|i| match &i.name {
                    ImportName::Name(name) => name.clone(),
                    ImportName::Ordinal(n) => format!("#{n}"),
                });
                (m.name.clone(), names.collect())
            })
            .collect();
        let (dll_characteristics, entry_rva) = (parsed.dll_characteristics(), parsed.entry_point());
        Ok(Image {
            dll_characteristics,
            entry_rva,
            sections,
            imports,
            checksum_offset: optional + layout::CHECKSUM,
            signed: parsed.authenticode_signature().is_some(),
            certificate_table: parsed.certificate_table().is_some(),
            bytes,
        })
    }

    /// The modules the import directory names, with their imported names.
    pub(crate) fn imports(&self) -> &[(String, Vec<String>)] {
        &self.imports
    }

    /// Whether the image carries an Authenticode signature (the loader's
    /// `authenticode_signature`).
    pub(crate) fn has_signature(&self) -> bool {
        self.signed
    }

    /// Whether the image has a certificate table at all (a signature, or what is left of
    /// one): signing again must remove it first.
    pub(crate) fn has_certificate_table(&self) -> bool {
        self.certificate_table
    }

    /// The PE checksum of the image as it is (the checksum field counted as zero).
    pub(crate) fn compute_checksum(&self) -> u32 {
        checksum(&self.bytes, self.checksum_offset)
    }

    /// The checksum stored in the optional header.
    pub(crate) fn stored_checksum(&self) -> u32 {
        u32_at(&self.bytes, self.checksum_offset).unwrap_or(0)
    }

    /// Writes the correct checksum into the header.
    pub(crate) fn write_checksum(&mut self) {
        let checksum = self.compute_checksum().to_le_bytes();
        self.bytes[self.checksum_offset..self.checksum_offset + 4].copy_from_slice(&checksum);
    }

    /// The fix-up lld-link output needs (windows-drivers-rs issue 182): lld-link leaves some
    /// sections it creates (`.retplne`) with no memory attributes, which the kernel loader
    /// refuses. Gives such a section the attributes its contents need. Returns what changed.
    pub(crate) fn fix_sections(&mut self) -> Vec<String> {
        let mut changes = Vec::new();
        for section in &mut self.sections {
            let Some(fixed) = fixed_characteristics(&section.name, section.characteristics) else {
                continue;
            };
            changes.push(format!(
                "section {} had no memory attributes: {:#010x} -> {fixed:#010x}",
                section.name, section.characteristics
            ));
            section.characteristics = fixed;
            let at = section.header_offset + layout::SECTION_CHARACTERISTICS;
            self.bytes[at..at + 4].copy_from_slice(&fixed.to_le_bytes());
        }
        changes
    }

    /// Every property a driver image must have beyond what the parser enforces (native
    /// subsystem, no W+X section); an empty list means it passes. Each import must be a
    /// routine the SDK's import libraries export, or one the driver `declared` (its
    /// `[package.metadata.ebpf-ext.imports]`), from that module.
    pub(crate) fn problems(
        &self,
        entry_rva: Option<u32>,
        integrity: bool,
        declared: &[(String, Vec<String>)],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        match entry_rva {
            Some(rva) if rva != self.entry_rva => problems.push(format!(
                "entry point {:#x} is not DriverEntry ({rva:#x})",
                self.entry_rva
            )),
            None => problems.push("the link map names no DriverEntry".into()),
            _ => {}
        }
        if integrity && self.dll_characteristics & FORCE_INTEGRITY == 0 {
            problems.push("FORCE_INTEGRITY (/INTEGRITYCHECK) is not set".into());
        }
        for s in &self.sections {
            if s.characteristics & SCN_MEM_ANY == 0 {
                problems.push(format!("section {} has no memory attributes", s.name));
            }
        }
        let is_declared = |module: &str, name: &str| {
            crate::imports::sdk_routines().any(|(m, n)| n == name && m.eq_ignore_ascii_case(module))
                || declared.iter().any(|(m, names)| {
                    m.eq_ignore_ascii_case(module) && names.iter().any(|n| n == name)
                })
        };
        for (module, names) in &self.imports {
            for name in names.iter().filter(|name| !is_declared(module, name)) {
                problems.push(format!(
                    "imports {name} from {module}, which neither the SDK nor [package.metadata.ebpf-ext.imports] declares"
                ));
            }
        }
        if self.stored_checksum() != self.compute_checksum() {
            problems.push(format!(
                "checksum {:#x} should be {:#x}",
                self.stored_checksum(),
                self.compute_checksum()
            ));
        }
        problems
    }
}

/// The attributes a section with none needs (`None` if it has some): code for `.retplne` or
/// a code section, else initialised data the driver may write, as `.data` is.
fn fixed_characteristics(name: &str, characteristics: u32) -> Option<u32> {
    if characteristics & SCN_MEM_ANY != 0 {
        return None;
    }
    Some(
        if name == ".retplne" || characteristics & SCN_CNT_CODE != 0 {
            characteristics | SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_MEM_READ
        } else {
            characteristics | SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_WRITE
        },
    )
}

/// The PE checksum of `bytes` with the 4-byte checksum field at `checksum_offset` counted as
/// zero: 16-bit one's-complement sum of the words, folded, plus the file length.
fn checksum(bytes: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in bytes.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_offset && at < checksum_offset + 4 {
            continue;
        }
        let word = u64::from(pair[0]) | (u64::from(*pair.get(1).unwrap_or(&0)) << 8);
        sum += word;
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "folded to 16 bits; files < 4 GiB"
    )]
    let checksum = sum as u32 + bytes.len() as u32;
    checksum
}

/// The RVA of `symbol` in an lld-link `/MAP` file.
pub(crate) fn map_symbol_rva(map: &str, symbol: &str) -> Option<u32> {
    let base = map
        .lines()
        .find_map(|l| l.trim().strip_prefix("Preferred load address is "))
        .and_then(|a| u64::from_str_radix(a.trim(), 16).ok())?;
    map.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, name, address) = (fields.next()?, fields.next()?, fields.next()?);
        if name != symbol {
            return None;
        }
        let address = u64::from_str_radix(address, 16).ok()?;
        u32::try_from(address.checked_sub(base)?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_reference_algorithm_on_a_known_input() {
        // Words 0x0201 and 0x0403, the checksum field (bytes 4..8) skipped, plus the length.
        let bytes = [1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(checksum(&bytes, 4), 0x0201 + 0x0403 + 8);
    }

    #[test]
    fn sections_without_attributes_get_the_ones_their_contents_need() {
        assert_eq!(fixed_characteristics(".text", 0x6000_0020), None);
        assert_eq!(fixed_characteristics(".retplne", 0), Some(0x6000_0020));
        assert_eq!(fixed_characteristics(".odd", 0), Some(0xC000_0040));
        assert_eq!(fixed_characteristics(".code", 0x20), Some(0x6000_0020));
    }

    #[test]
    fn a_file_that_is_not_a_driver_image_is_refused_by_the_parser() {
        let error = Image::parse(b"MZ not really".to_vec()).expect_err("refused");
        assert!(
            error.to_string().contains("not a valid driver image"),
            "{error}"
        );
    }

    #[test]
    fn map_symbols_resolve_to_rvas() {
        let map = " Preferred load address is 0000000180000000\n\n 0001:00000000       DriverEntry                0000000180001000     x.o\n";
        assert_eq!(map_symbol_rva(map, "DriverEntry"), Some(0x1000));
        assert_eq!(map_symbol_rva(map, "Other"), None);
    }
}
