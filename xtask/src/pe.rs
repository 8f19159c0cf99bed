//! The post-link steps on a driver image, on its bytes: section fix-ups, the PE checksum, and
//! the checks every driver must pass. Python `pefile` checks the same properties
//! independently (`xtask/pecheck.py`).

use anyhow::{Context, Result, bail};

/// `IMAGE_SUBSYSTEM_NATIVE`.
pub(crate) const SUBSYSTEM_NATIVE: u16 = 1;
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`.
pub(crate) const FORCE_INTEGRITY: u16 = 0x0080;
const SCN_CNT_CODE: u32 = 0x0000_0020;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const SCN_MEM_READ: u32 = 0x4000_0000;
const SCN_MEM_WRITE: u32 = 0x8000_0000;
/// Modules a driver may import from.
pub(crate) const ALLOWED_MODULES: &[&str] = &["ntoskrnl.exe", "NETIO.SYS", "HAL.dll"];

/// A section header's interesting fields.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) virtual_address: u32,
    pub(crate) virtual_size: u32,
    pub(crate) characteristics: u32,
    header_offset: usize,
}

/// A parsed PE32+ image (headers only, plus the import directory).
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) bytes: Vec<u8>,
    pub(crate) subsystem: u16,
    pub(crate) dll_characteristics: u16,
    pub(crate) entry_rva: u32,
    pub(crate) sections: Vec<Section>,
    checksum_offset: usize,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("truncated image")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("truncated image")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Image {
    /// Parses the headers of a PE32+ image.
    pub(crate) fn parse(bytes: Vec<u8>) -> Result<Image> {
        if bytes.get(..2) != Some(b"MZ") {
            bail!("not a PE image (no MZ signature)");
        }
        let nt = u32_at(&bytes, 0x3C)? as usize;
        if bytes.get(nt..nt + 4) != Some(b"PE\0\0") {
            bail!("not a PE image (no PE signature)");
        }
        let file_header = nt + 4;
        if u16_at(&bytes, file_header)? != 0x8664 {
            bail!("not an x64 image");
        }
        let sections = usize::from(u16_at(&bytes, file_header + 2)?);
        let optional_size = usize::from(u16_at(&bytes, file_header + 16)?);
        let optional = file_header + 20;
        if u16_at(&bytes, optional)? != 0x20B {
            bail!("not a PE32+ image");
        }
        let entry_rva = u32_at(&bytes, optional + 16)?;
        let checksum_offset = optional + 64;
        let subsystem = u16_at(&bytes, optional + 68)?;
        let dll_characteristics = u16_at(&bytes, optional + 70)?;
        let table = optional + optional_size;
        let mut list = Vec::with_capacity(sections);
        for i in 0..sections {
            let at = table + i * 40;
            let raw_name = bytes.get(at..at + 8).context("truncated section table")?;
            let name = String::from_utf8_lossy(raw_name)
                .trim_end_matches('\0')
                .to_owned();
            list.push(Section {
                name,
                virtual_size: u32_at(&bytes, at + 8)?,
                virtual_address: u32_at(&bytes, at + 12)?,
                characteristics: u32_at(&bytes, at + 36)?,
                header_offset: at,
            });
        }
        Ok(Image {
            bytes,
            subsystem,
            dll_characteristics,
            entry_rva,
            sections: list,
            checksum_offset,
        })
    }

    fn rva_to_offset(&self, rva: u32) -> Option<usize> {
        let nt = u32_at(&self.bytes, 0x3C).ok()? as usize;
        let optional = nt + 24;
        let optional_size = usize::from(u16_at(&self.bytes, nt + 4 + 16).ok()?);
        let table = optional + optional_size;
        for (i, s) in self.sections.iter().enumerate() {
            let at = table + i * 40;
            let raw_size = u32_at(&self.bytes, at + 16).ok()?;
            let raw_pointer = u32_at(&self.bytes, at + 20).ok()?;
            let size = s.virtual_size.max(raw_size);
            if rva >= s.virtual_address && rva < s.virtual_address + size {
                return Some((raw_pointer + (rva - s.virtual_address)) as usize);
            }
        }
        None
    }

    fn c_string(&self, rva: u32) -> Result<String> {
        let start = self
            .rva_to_offset(rva)
            .context("name outside every section")?;
        let tail = self.bytes.get(start..).context("name outside the file")?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .context("unterminated name")?;
        Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
    }

    /// The modules the import directory names, with their imported names.
    pub(crate) fn imports(&self) -> Result<Vec<(String, Vec<String>)>> {
        let nt = u32_at(&self.bytes, 0x3C)? as usize;
        let directory = nt + 24 + 112 + 8; // data directory 1: imports
        let rva = u32_at(&self.bytes, directory)?;
        if rva == 0 {
            return Ok(Vec::new());
        }
        let mut at = self
            .rva_to_offset(rva)
            .context("import directory outside the image")?;
        let mut modules = Vec::new();
        loop {
            let lookup = u32_at(&self.bytes, at)?;
            let name = u32_at(&self.bytes, at + 12)?;
            if name == 0 {
                break;
            }
            let mut names = Vec::new();
            let mut thunk = self
                .rva_to_offset(lookup)
                .context("import lookup table outside the image")?;
            loop {
                let entry = u64::from(u32_at(&self.bytes, thunk)?)
                    | (u64::from(u32_at(&self.bytes, thunk + 4)?) << 32);
                if entry == 0 {
                    break;
                }
                if entry & (1 << 63) != 0 {
                    names.push(format!("#{}", entry & 0xFFFF));
                } else {
                    #[expect(clippy::cast_possible_truncation, reason = "a 31-bit RVA")]
                    names.push(self.c_string(entry as u32 + 2)?);
                }
                thunk += 8;
            }
            modules.push((self.c_string(name)?, names));
            at += 20;
        }
        Ok(modules)
    }

    /// Whether the image carries an Authenticode signature (a certificate table).
    pub(crate) fn has_signature(&self) -> bool {
        let Ok(nt) = u32_at(&self.bytes, 0x3C) else {
            return false;
        };
        let directory = nt as usize + 24 + 112 + 4 * 8; // data directory 4: security
        u32_at(&self.bytes, directory + 4).is_ok_and(|size| size != 0)
    }

    /// The PE checksum of the image as it is (the checksum field counted as zero).
    pub(crate) fn compute_checksum(&self) -> u32 {
        let mut sum: u64 = 0;
        let mut chunks = self.bytes.chunks(2).enumerate();
        for (i, pair) in &mut chunks {
            let at = i * 2;
            if at >= self.checksum_offset && at < self.checksum_offset + 4 {
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
        let checksum = sum as u32 + self.bytes.len() as u32;
        checksum
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
            let access = section.characteristics & (SCN_MEM_READ | SCN_MEM_WRITE | SCN_MEM_EXECUTE);
            if access != 0 {
                continue;
            }
            let fixed = if section.name == ".retplne" || section.characteristics & SCN_CNT_CODE != 0
            {
                section.characteristics | SCN_CNT_CODE | SCN_MEM_EXECUTE | SCN_MEM_READ
            } else {
                // Initialised data the driver may write, as `.data` is.
                section.characteristics | SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ | SCN_MEM_WRITE
            };
            changes.push(format!(
                "section {} had no memory attributes: {:#010x} -> {fixed:#010x}",
                section.name, section.characteristics
            ));
            section.characteristics = fixed;
            let at = section.header_offset + 36;
            self.bytes[at..at + 4].copy_from_slice(&fixed.to_le_bytes());
        }
        changes
    }

    /// Every property a driver image must have; an empty list means it passes.
    pub(crate) fn problems(&self, entry_rva: Option<u32>, integrity: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.subsystem != SUBSYSTEM_NATIVE {
            problems.push(format!("subsystem is {}, not NATIVE (1)", self.subsystem));
        }
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
            if s.characteristics & SCN_MEM_WRITE != 0 && s.characteristics & SCN_MEM_EXECUTE != 0 {
                problems.push(format!(
                    "section {} is both writable and executable",
                    s.name
                ));
            }
            if s.characteristics & (SCN_MEM_READ | SCN_MEM_WRITE | SCN_MEM_EXECUTE) == 0 {
                problems.push(format!("section {} has no memory attributes", s.name));
            }
        }
        match self.imports() {
            Ok(modules) => {
                for (module, _) in modules {
                    if !ALLOWED_MODULES
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&module))
                    {
                        problems.push(format!("imports from {module}"));
                    }
                }
            }
            Err(e) => problems.push(format!("unreadable import directory: {e}")),
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
        let bytes = vec![1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF];
        let image = Image {
            bytes,
            subsystem: 1,
            dll_characteristics: 0,
            entry_rva: 0,
            sections: Vec::new(),
            checksum_offset: 4,
        };
        assert_eq!(image.compute_checksum(), 0x0201 + 0x0403 + 8);
    }

    /// A minimal PE32+ header block with the given sections (name, characteristics).
    fn image_with_sections(sections: &[(&str, u32)]) -> Image {
        let mut bytes = vec![0u8; 0x400];
        bytes[..2].copy_from_slice(b"MZ");
        bytes[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        bytes[0x80..0x84].copy_from_slice(b"PE\0\0");
        bytes[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        let count = u16::try_from(sections.len()).unwrap();
        bytes[0x86..0x88].copy_from_slice(&count.to_le_bytes());
        bytes[0x94..0x96].copy_from_slice(&240u16.to_le_bytes()); // SizeOfOptionalHeader
        bytes[0x98..0x9A].copy_from_slice(&0x20Bu16.to_le_bytes());
        for (i, (name, characteristics)) in sections.iter().enumerate() {
            let at = 0x98 + 240 + i * 40;
            bytes[at..at + name.len()].copy_from_slice(name.as_bytes());
            bytes[at + 36..at + 40].copy_from_slice(&characteristics.to_le_bytes());
        }
        Image::parse(bytes).unwrap()
    }

    #[test]
    fn sections_without_attributes_get_the_ones_their_contents_need() {
        let mut image =
            image_with_sections(&[(".text", 0x6000_0020), (".retplne", 0), (".odd", 0)]);
        let changes = image.fix_sections();
        assert_eq!(changes.len(), 2, "{changes:?}");
        let reparsed = Image::parse(image.bytes.clone()).unwrap();
        let attributes: Vec<u32> = reparsed
            .sections
            .iter()
            .map(|s| s.characteristics)
            .collect();
        assert_eq!(attributes, [0x6000_0020, 0x6000_0020, 0xC000_0040]);
        assert!(
            image.fix_sections().is_empty(),
            "a fixed image needs nothing more"
        );
        assert!(
            image
                .problems(Some(0), false)
                .iter()
                .all(|p| !p.contains("attributes")),
            "{:?}",
            image.problems(Some(0), false)
        );
    }

    #[test]
    fn map_symbols_resolve_to_rvas() {
        let map = " Preferred load address is 0000000180000000\n\n 0001:00000000       DriverEntry                0000000180001000     x.o\n";
        assert_eq!(map_symbol_rva(map, "DriverEntry"), Some(0x1000));
        assert_eq!(map_symbol_rva(map, "Other"), None);
    }
}
