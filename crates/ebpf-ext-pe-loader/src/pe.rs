//! PE32+ parsing and validation.
//!
//! Every field is checked before use and every read goes through a bounds-checked helper, so
//! a malformed file yields an [`Error`] and never a panic or an out-of-bounds read. Offsets are
//! computed with checked arithmetic in `u64`/`usize`.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// `IMAGE_FILE_MACHINE_AMD64`.
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC` (PE32+).
pub const IMAGE_NT_OPTIONAL_HDR64_MAGIC: u16 = 0x20B;
/// `IMAGE_SUBSYSTEM_NATIVE`: drivers.
pub const IMAGE_SUBSYSTEM_NATIVE: u16 = 1;
/// `IMAGE_FILE_RELOCS_STRIPPED`.
pub const IMAGE_FILE_RELOCS_STRIPPED: u16 = 0x0001;
/// `IMAGE_FILE_EXECUTABLE_IMAGE`.
pub const IMAGE_FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
/// `IMAGE_SCN_MEM_EXECUTE`.
pub const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_READ`.
pub const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
pub const IMAGE_SCN_MEM_WRITE: u32 = 0x8000_0000;
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`: the image was linked with `/INTEGRITYCHECK`
/// (required of a driver that registers process-notify routines).
pub const IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY: u16 = 0x0080;
/// `IMAGE_REL_BASED_ABSOLUTE`: padding, skipped.
pub const IMAGE_REL_BASED_ABSOLUTE: u8 = 0;
/// `IMAGE_REL_BASED_HIGHLOW`: a 32-bit absolute address (not valid in x64 images).
pub const IMAGE_REL_BASED_HIGHLOW: u8 = 3;
/// `IMAGE_REL_BASED_DIR64`: a 64-bit absolute address.
pub const IMAGE_REL_BASED_DIR64: u8 = 10;

/// Data directory indices (`IMAGE_DIRECTORY_ENTRY_*`).
pub mod directory {
    /// Export directory.
    pub const EXPORT: usize = 0;
    /// Import directory.
    pub const IMPORT: usize = 1;
    /// Exception directory (`.pdata`).
    pub const EXCEPTION: usize = 3;
    /// Certificate table (a file offset, not an RVA).
    pub const SECURITY: usize = 4;
    /// Base relocation directory.
    pub const BASERELOC: usize = 5;
    /// Debug directory.
    pub const DEBUG: usize = 6;
}

/// `IMAGE_DEBUG_TYPE_CODEVIEW`.
const IMAGE_DEBUG_TYPE_CODEVIEW: u32 = 2;
/// Size of an `IMAGE_DEBUG_DIRECTORY` entry.
const DEBUG_DIRECTORY_ENTRY_SIZE: usize = 28;
/// Signature of a PDB 7.0 CodeView record.
const RSDS: &[u8; 4] = b"RSDS";

/// Size of a `WIN_CERTIFICATE` header (`dwLength`, `wRevision`, `wCertificateType`).
const WIN_CERTIFICATE_HEADER: usize = 8;
/// `WIN_CERT_REVISION_2_0`.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// Largest `SizeOfImage` accepted (drivers are a few MiB at most).
pub const MAX_IMAGE_SIZE: u32 = 256 << 20;
/// Page size of the host and of x64 Windows.
pub(crate) const PAGE_SIZE: u32 = 0x1000;
/// Longest import or export name accepted.
const MAX_NAME_LEN: usize = 4096;
/// Most imports accepted, over all modules.
const MAX_IMPORTS: usize = 1 << 16;

const DOS_HEADER_SIZE: usize = 64;
const FILE_HEADER_SIZE: usize = 20;
const OPTIONAL_HEADER_FIXED_SIZE: u16 = 112;
const SECTION_HEADER_SIZE: usize = 40;
const MAX_SECTIONS: u16 = 96;
const IMPORT_DESCRIPTOR_SIZE: usize = 20;
const RUNTIME_FUNCTION_SIZE: u32 = 12;
const EXPORT_DIRECTORY_SIZE: u32 = 40;

const DIRECTORY_NAMES: [&str; 16] = [
    "export",
    "import",
    "resource",
    "exception",
    "certificate",
    "base relocation",
    "debug",
    "architecture",
    "global pointer",
    "TLS",
    "load config",
    "bound import",
    "IAT",
    "delay import",
    "CLR",
    "reserved",
];

/// Page protection of a mapped section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Read-only (also a section that asks for no access at all).
    ReadOnly,
    /// Read and write.
    ReadWrite,
    /// Read and execute.
    ReadExecute,
}

/// One section of a validated image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Section {
    /// Name from the section table (NUL padding removed, lossily decoded).
    pub name: String,
    /// RVA of the first byte.
    pub virtual_address: u32,
    /// Size in memory (`VirtualSize`, or `SizeOfRawData` when that is zero).
    pub virtual_size: u32,
    /// Size in memory rounded up to `SectionAlignment`: what is mapped.
    pub mapped_size: u32,
    /// File offset of the initialised data.
    pub file_offset: usize,
    /// Bytes of initialised data copied from the file (the rest is zero).
    pub file_size: usize,
    /// `IMAGE_SCN_*` characteristics.
    pub characteristics: u32,
    /// Page protection derived from the characteristics.
    pub protection: Protection,
}

/// How an import names its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportName {
    /// By name (the hint is ignored).
    Name(String),
    /// By ordinal (not supported by the loader).
    Ordinal(u16),
}

/// One imported function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Import {
    /// Its name or ordinal.
    pub name: ImportName,
    /// RVA of its import address table slot.
    pub iat_rva: u32,
}

/// The imports from one module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportModule {
    /// Module name as written in the image (`ntoskrnl.exe`, `NETIO.SYS`).
    pub name: String,
    /// Its imported functions.
    pub imports: Vec<Import>,
}

/// One base relocation (ABSOLUTE padding entries are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Relocation {
    /// RVA of the patched bytes.
    pub rva: u32,
    /// `IMAGE_REL_BASED_*` type.
    pub kind: u8,
}

/// One `RUNTIME_FUNCTION` of the exception directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeFunction {
    /// RVA of the function's first byte.
    pub begin: u32,
    /// RVA one past its last byte.
    pub end: u32,
    /// RVA of its unwind information.
    pub unwind_info: u32,
}

/// One function exported by name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Export {
    /// Export name.
    pub name: String,
    /// RVA of the function.
    pub rva: u32,
}

/// What identifies the PDB an image was linked with: the image's CodeView record (`RSDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeView {
    /// The PDB's GUID, in the byte order of a `GUID` structure in memory (as the file holds it).
    pub guid: [u8; 16],
    /// The PDB's age: a PDB matches the image when its GUID is the same and its age (the DBI
    /// stream's) is this one.
    pub age: u32,
    /// The PDB's path as the linker recorded it (lossily decoded as UTF-8).
    pub path: String,
}

/// A validated PE32+ driver image, borrowing the file bytes.
///
/// Built only by [`parse`], so every RVA and size it holds has been checked against the file
/// and `SizeOfImage`.
#[derive(Debug, Clone)]
pub struct PeImage<'a> {
    bytes: &'a [u8],
    image_base: u64,
    size_of_image: u32,
    size_of_headers: u32,
    section_alignment: u32,
    entry_point: u32,
    characteristics: u16,
    dll_characteristics: u16,
    sections: Vec<Section>,
    imports: Vec<ImportModule>,
    relocations: Vec<Relocation>,
    functions: Vec<RuntimeFunction>,
    exports: Vec<Export>,
    export_name: Option<String>,
    certificates: Option<&'a [u8]>,
    /// The debug directory's `(rva, size)`, checked only to lie in the image.
    debug: (u32, u32),
}

/// Validates a driver image and extracts what the loader needs.
///
/// # Errors
/// The first malformation found, as a specific [`Error`] variant: a truncated structure, a
/// wrong signature, machine, magic or subsystem, insane alignments or sizes, a section outside
/// the file or the image, overlapping or writable-and-executable sections, an entry point
/// outside executable code, or a malformed import, relocation, exception or export directory.
pub fn parse(bytes: &[u8]) -> Result<PeImage<'_>> {
    Parser { bytes }.parse()
}

impl<'a> PeImage<'a> {
    /// The file bytes.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// `ImageBase`: the address the image was linked for.
    #[must_use]
    pub fn image_base(&self) -> u64 {
        self.image_base
    }

    /// `SizeOfImage`.
    #[must_use]
    pub fn size_of_image(&self) -> u32 {
        self.size_of_image
    }

    /// `SizeOfHeaders`.
    #[must_use]
    pub fn size_of_headers(&self) -> u32 {
        self.size_of_headers
    }

    /// `SectionAlignment`.
    #[must_use]
    pub fn section_alignment(&self) -> u32 {
        self.section_alignment
    }

    /// RVA of the entry point (`DriverEntry`).
    #[must_use]
    pub fn entry_point(&self) -> u32 {
        self.entry_point
    }

    /// `DllCharacteristics` (`IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY` is 0x80).
    #[must_use]
    pub fn dll_characteristics(&self) -> u16 {
        self.dll_characteristics
    }

    /// Whether the image was linked without relocations (`IMAGE_FILE_RELOCS_STRIPPED`).
    #[must_use]
    pub fn relocations_stripped(&self) -> bool {
        self.characteristics & IMAGE_FILE_RELOCS_STRIPPED != 0
    }

    /// The sections, in ascending address order.
    #[must_use]
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The imports, by module.
    #[must_use]
    pub fn imports(&self) -> &[ImportModule] {
        &self.imports
    }

    /// The base relocations.
    #[must_use]
    pub fn relocations(&self) -> &[Relocation] {
        &self.relocations
    }

    /// The `RUNTIME_FUNCTION`s of the exception directory, in ascending order.
    #[must_use]
    pub fn functions(&self) -> &[RuntimeFunction] {
        &self.functions
    }

    /// The functions exported by name (forwarders excluded).
    #[must_use]
    pub fn exports(&self) -> &[Export] {
        &self.exports
    }

    /// The certificate table (`IMAGE_DIRECTORY_ENTRY_SECURITY`, a file range checked to lie in
    /// the file), whatever it holds; `None` for an image without one.
    #[must_use]
    pub fn certificate_table(&self) -> Option<&'a [u8]> {
        self.certificates
    }

    /// The image's Authenticode signature: the PKCS#7 `SignedData` of the first entry of the
    /// certificate table that is one (`WIN_CERTIFICATE` revision 2.0, type
    /// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`); `None` for an image that has none, which Windows
    /// refuses to load as a driver. Only its presence is checked here, not whether it verifies.
    #[must_use]
    pub fn authenticode_signature(&self) -> Option<&'a [u8]> {
        let mut table = self.certificates?;
        // Each `WIN_CERTIFICATE`: dwLength (header included), wRevision, wCertificateType,
        // then its bytes; the next one starts at the next 8-byte boundary.
        while let (Some(length), Some(revision), Some(kind)) = (
            u32_at(table, 0),
            table.get(4..6).map(|b| u16::from_le_bytes([b[0], b[1]])),
            table.get(6..8).map(|b| u16::from_le_bytes([b[0], b[1]])),
        ) {
            let length = usize_from(length);
            let entry = table.get(WIN_CERTIFICATE_HEADER..length)?;
            if revision == WIN_CERT_REVISION_2_0 && kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
                return (!entry.is_empty()).then_some(entry);
            }
            table = table.get(length.next_multiple_of(8)..)?;
        }
        None
    }

    /// The module name recorded in the export directory, if there is one.
    #[must_use]
    pub fn export_name(&self) -> Option<&str> {
        self.export_name.as_deref()
    }

    /// The first CodeView record (`RSDS`) of the debug directory: which PDB the image was
    /// linked with. `None` when there is none, or when the debug directory's entries or the
    /// record lie outside the file. [`parse`] checks only that the debug directory lies in the
    /// image, as it does every directory but the certificate table; what it holds refuses no
    /// image.
    #[must_use]
    pub fn codeview(&self) -> Option<CodeView> {
        let (rva, size) = self.debug;
        let layout = Layout {
            bytes: self.bytes,
            size_of_image: self.size_of_image,
            size_of_headers: self.size_of_headers,
            sections: &self.sections,
        };
        let table = layout.data(rva, size)?;
        table
            .chunks_exact(DEBUG_DIRECTORY_ENTRY_SIZE)
            .filter(|entry| u32_at(entry, 12) == Some(IMAGE_DEBUG_TYPE_CODEVIEW))
            .find_map(|entry| {
                // SizeOfData at 16, PointerToRawData (a file offset) at 24.
                let (size, at) = (
                    usize_from(u32_at(entry, 16)?),
                    usize_from(u32_at(entry, 24)?),
                );
                let record = self.bytes.get(at..at.checked_add(size)?)?;
                if record.get(..4)? != RSDS {
                    return None;
                }
                let path = record.get(24..)?;
                let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
                Some(CodeView {
                    guid: array_at(record, 4)?,
                    age: u32_at(record, 20)?,
                    path: String::from_utf8_lossy(path).into_owned(),
                })
            })
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
}

/// What parsing has established so far about the layout, for RVA lookups.
struct Layout<'p> {
    bytes: &'p [u8],
    size_of_image: u32,
    size_of_headers: u32,
    sections: &'p [Section],
}

fn truncated(what: &'static str, offset: usize, size: usize, len: usize) -> Error {
    let offset = offset as u64;
    Error::Truncated {
        what,
        offset,
        end: offset.saturating_add(size as u64),
        len,
    }
}

/// `bytes[offset..offset + N]`, or `None`.
fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    array_at(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    array_at(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    array_at(bytes, offset).map(u64::from_le_bytes)
}

/// `value` rounded up to `align` (a power of two), or `None` on overflow.
fn align_up(value: u32, align: u32) -> Option<u32> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

fn usize_from(value: u32) -> usize {
    // x86_64 only: u32 always fits.
    value as usize
}

fn section_name(raw: [u8; 8]) -> String {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..len).unwrap_or_default()).into_owned()
}

fn protection(characteristics: u32) -> Protection {
    if characteristics & IMAGE_SCN_MEM_EXECUTE != 0 {
        Protection::ReadExecute
    } else if characteristics & IMAGE_SCN_MEM_WRITE != 0 {
        Protection::ReadWrite
    } else {
        Protection::ReadOnly
    }
}

impl<'p> Layout<'p> {
    /// The file bytes at `rva..rva + len` if they lie in the headers or inside one section's
    /// initialised data.
    fn data(&self, rva: u32, len: u32) -> Option<&'p [u8]> {
        let end = rva.checked_add(len)?;
        if end <= self.size_of_headers {
            return self.bytes.get(usize_from(rva)..usize_from(end));
        }
        let rest = self.data_from(rva)?;
        rest.get(..usize_from(len))
    }

    /// The file bytes from `rva` to the end of the initialised data that contains it.
    fn data_from(&self, rva: u32) -> Option<&'p [u8]> {
        if rva < self.size_of_headers {
            return self
                .bytes
                .get(usize_from(rva)..usize_from(self.size_of_headers));
        }
        self.sections.iter().find_map(|s| {
            let offset = usize_from(rva.checked_sub(s.virtual_address)?);
            if offset >= s.file_size {
                return None;
            }
            let start = s.file_offset.checked_add(offset)?;
            let end = s.file_offset.checked_add(s.file_size)?;
            self.bytes.get(start..end)
        })
    }

    /// Whether `rva..rva + len` lies inside one section's mapped range.
    fn in_section(&self, rva: u32, len: u32) -> bool {
        let Some(end) = rva.checked_add(len) else {
            return false;
        };
        self.sections.iter().any(|s| {
            rva >= s.virtual_address
                && s.virtual_address
                    .checked_add(s.mapped_size)
                    .is_some_and(|section_end| end <= section_end)
        })
    }

    /// A NUL-terminated, non-empty, printable-ASCII name at `rva`.
    fn name(&self, rva: u32) -> Option<String> {
        let data = self.data_from(rva)?;
        let data = data.get(..data.len().min(MAX_NAME_LEN + 1))?;
        let len = data.iter().position(|&b| b == 0)?;
        let name = data.get(..len)?;
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        core::str::from_utf8(name).ok().map(ToOwned::to_owned)
    }
}

impl<'a> Parser<'a> {
    fn u16(&self, offset: usize, what: &'static str) -> Result<u16> {
        u16_at(self.bytes, offset).ok_or_else(|| truncated(what, offset, 2, self.bytes.len()))
    }

    fn u32(&self, offset: usize, what: &'static str) -> Result<u32> {
        u32_at(self.bytes, offset).ok_or_else(|| truncated(what, offset, 4, self.bytes.len()))
    }

    fn u64(&self, offset: usize, what: &'static str) -> Result<u64> {
        u64_at(self.bytes, offset).ok_or_else(|| truncated(what, offset, 8, self.bytes.len()))
    }

    /// Checks that `offset..offset + size` is inside the file.
    fn need(&self, what: &'static str, offset: usize, size: usize) -> Result<usize> {
        let len = self.bytes.len();
        match offset.checked_add(size) {
            Some(end) if end <= len => Ok(end),
            _ => Err(truncated(what, offset, size, len)),
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one linear pass over the headers reads best in one place"
    )]
    fn parse(self) -> Result<PeImage<'a>> {
        let len = self.bytes.len();
        self.need("DOS header", 0, DOS_HEADER_SIZE)?;
        let dos_magic = self.u16(0, "DOS header")?;
        if dos_magic != 0x5A4D {
            return Err(Error::BadDosSignature(dos_magic));
        }
        let nt = usize_from(self.u32(0x3C, "DOS header")?);
        self.need("NT headers", nt, 4 + FILE_HEADER_SIZE)?;
        let signature = self.u32(nt, "NT headers")?;
        if signature != 0x0000_4550 {
            return Err(Error::BadNtSignature(signature));
        }
        let file = nt + 4;
        let machine = self.u16(file, "file header")?;
        if machine != IMAGE_FILE_MACHINE_AMD64 {
            return Err(Error::UnsupportedMachine(machine));
        }
        let section_count = self.u16(file + 2, "file header")?;
        let optional_size = self.u16(file + 16, "file header")?;
        let characteristics = self.u16(file + 18, "file header")?;
        if characteristics & IMAGE_FILE_EXECUTABLE_IMAGE == 0 {
            return Err(Error::NotExecutableImage);
        }

        let opt = file + FILE_HEADER_SIZE;
        let magic = self.u16(opt, "optional header")?;
        if magic != IMAGE_NT_OPTIONAL_HDR64_MAGIC {
            return Err(Error::NotPe32Plus(magic));
        }
        if optional_size < OPTIONAL_HEADER_FIXED_SIZE {
            return Err(Error::BadOptionalHeaderSize(optional_size));
        }
        let optional_end = self.need("optional header", opt, usize::from(optional_size))?;
        let entry_point = self.u32(opt + 16, "optional header")?;
        let image_base = self.u64(opt + 24, "optional header")?;
        let section_alignment = self.u32(opt + 32, "optional header")?;
        let file_alignment = self.u32(opt + 36, "optional header")?;
        let size_of_image = self.u32(opt + 56, "optional header")?;
        let size_of_headers = self.u32(opt + 60, "optional header")?;
        let subsystem = self.u16(opt + 68, "optional header")?;
        let dll_characteristics = self.u16(opt + 70, "optional header")?;
        let directory_count = self.u32(opt + 108, "optional header")?;
        if subsystem != IMAGE_SUBSYSTEM_NATIVE {
            return Err(Error::UnsupportedSubsystem(subsystem));
        }
        if directory_count > 16 {
            return Err(Error::TooManyDataDirectories(directory_count));
        }
        // At most 16 directories of 8 bytes: no overflow.
        let directories_size = usize_from(directory_count) * 8;
        if usize::from(optional_size) < usize::from(OPTIONAL_HEADER_FIXED_SIZE) + directories_size {
            return Err(Error::BadOptionalHeaderSize(optional_size));
        }
        if !section_alignment.is_power_of_two()
            || section_alignment < PAGE_SIZE
            || !file_alignment.is_power_of_two()
            || !(0x200..=0x1_0000).contains(&file_alignment)
            || file_alignment > section_alignment
        {
            return Err(Error::BadAlignment {
                section: section_alignment,
                file: file_alignment,
            });
        }
        if size_of_image == 0
            || size_of_image % section_alignment != 0
            || size_of_image > MAX_IMAGE_SIZE
        {
            return Err(Error::BadSizeOfImage(size_of_image));
        }
        if section_count == 0 || section_count > MAX_SECTIONS {
            return Err(Error::BadSectionCount(section_count));
        }
        let table_size = usize::from(section_count) * SECTION_HEADER_SIZE;
        let table_end = self.need("section table", optional_end, table_size)?;
        if usize_from(size_of_headers) < table_end
            || size_of_headers > size_of_image
            || size_of_headers % file_alignment != 0
        {
            return Err(Error::BadSizeOfHeaders(size_of_headers));
        }
        self.need("headers", 0, usize_from(size_of_headers))?;
        let headers_end = align_up(size_of_headers, section_alignment)
            .ok_or(Error::BadSizeOfHeaders(size_of_headers))?;

        let mut sections: Vec<Section> = Vec::with_capacity(usize::from(section_count));
        for index in 0..usize::from(section_count) {
            let header = optional_end + index * SECTION_HEADER_SIZE;
            let name = section_name(
                array_at(self.bytes, header)
                    .ok_or_else(|| truncated("section table", header, 8, len))?,
            );
            let virtual_size = self.u32(header + 8, "section table")?;
            let virtual_address = self.u32(header + 12, "section table")?;
            let raw_size = self.u32(header + 16, "section table")?;
            let raw_pointer = self.u32(header + 20, "section table")?;
            let characteristics = self.u32(header + 36, "section table")?;

            if raw_size != 0
                && usize_from(raw_pointer)
                    .checked_add(usize_from(raw_size))
                    .is_none_or(|end| end > len)
            {
                return Err(Error::SectionRawDataOutOfFile { section: name });
            }
            if virtual_address % section_alignment != 0 {
                return Err(Error::SectionMisaligned { section: name });
            }
            if virtual_address < headers_end {
                return Err(Error::SectionOverlapsHeaders { section: name });
            }
            let span = if virtual_size == 0 {
                raw_size
            } else {
                virtual_size
            };
            let mapped_size = align_up(span, section_alignment)
                .filter(|&mapped| {
                    virtual_address
                        .checked_add(mapped)
                        .is_some_and(|end| end <= size_of_image)
                })
                .ok_or_else(|| Error::SectionOutOfImage {
                    section: name.clone(),
                })?;
            if let Some(previous) = sections.last()
                && previous.virtual_address + previous.mapped_size > virtual_address
            {
                return Err(Error::SectionsOverlap {
                    first: previous.name.clone(),
                    second: name,
                });
            }
            if characteristics & IMAGE_SCN_MEM_WRITE != 0
                && characteristics & IMAGE_SCN_MEM_EXECUTE != 0
            {
                return Err(Error::WritableAndExecutable { section: name });
            }
            sections.push(Section {
                name,
                virtual_address,
                virtual_size: span,
                mapped_size,
                file_offset: usize_from(raw_pointer),
                file_size: usize_from(raw_size.min(span)),
                characteristics,
                protection: protection(characteristics),
            });
        }

        let entry_ok = sections.iter().any(|s| {
            s.protection == Protection::ReadExecute
                && entry_point >= s.virtual_address
                && entry_point - s.virtual_address < s.virtual_size
        });
        if !entry_ok {
            return Err(Error::EntryPointNotExecutable(entry_point));
        }

        let mut directories = [(0_u32, 0_u32); 16];
        let mut certificates = None;
        for (index, slot) in directories
            .iter_mut()
            .enumerate()
            .take(usize_from(directory_count))
        {
            let at = opt + usize::from(OPTIONAL_HEADER_FIXED_SIZE) + index * 8;
            let rva = self.u32(at, "data directories")?;
            let size = self.u32(at + 4, "data directories")?;
            if size == 0 {
                continue;
            }
            if index == directory::SECURITY {
                if usize_from(rva)
                    .checked_add(usize_from(size))
                    .is_none_or(|end| end > len)
                {
                    return Err(Error::CertificateOutOfFile);
                }
                certificates = self
                    .bytes
                    .get(usize_from(rva)..usize_from(rva) + usize_from(size));
                continue;
            }
            if rva.checked_add(size).is_none_or(|end| end > size_of_image) {
                return Err(Error::DirectoryOutOfImage {
                    directory: DIRECTORY_NAMES[index],
                    rva,
                    size,
                });
            }
            *slot = (rva, size);
        }

        let layout = Layout {
            bytes: self.bytes,
            size_of_image,
            size_of_headers,
            sections: &sections,
        };
        let imports = parse_imports(&layout, directories[directory::IMPORT])?;
        let relocations = parse_relocations(&layout, directories[directory::BASERELOC])?;
        let functions = parse_exception(&layout, directories[directory::EXCEPTION])?;
        let (export_name, exports) = parse_exports(&layout, directories[directory::EXPORT])?;

        Ok(PeImage {
            bytes: self.bytes,
            image_base,
            size_of_image,
            size_of_headers,
            section_alignment,
            entry_point,
            characteristics,
            dll_characteristics,
            sections,
            imports,
            relocations,
            functions,
            exports,
            export_name,
            certificates,
            debug: directories[directory::DEBUG],
        })
    }
}

/// The bytes of a directory the loader reads, which must lie in one section's file data.
fn directory_data<'p>(
    layout: &Layout<'p>,
    (rva, size): (u32, u32),
    index: usize,
) -> Result<Option<&'p [u8]>> {
    if size == 0 {
        return Ok(None);
    }
    let in_section = rva >= layout.size_of_headers;
    match layout.data(rva, size) {
        Some(data) if in_section => Ok(Some(data)),
        _ => Err(Error::DirectoryNotInSection {
            directory: DIRECTORY_NAMES[index],
            rva,
            size,
        }),
    }
}

fn parse_imports(layout: &Layout<'_>, dir: (u32, u32)) -> Result<Vec<ImportModule>> {
    let Some(data) = directory_data(layout, dir, directory::IMPORT)? else {
        return Ok(Vec::new());
    };
    let mut modules = Vec::new();
    let mut total = 0_usize;
    for descriptor in data.chunks(IMPORT_DESCRIPTOR_SIZE) {
        let field = |offset| u32_at(descriptor, offset).ok_or(Error::ImportDirectoryUnterminated);
        let (lookup, name_rva, iat) = (field(0)?, field(12)?, field(16)?);
        if descriptor.iter().all(|&b| b == 0) {
            return Ok(modules);
        }
        let name = layout
            .name(name_rva)
            .ok_or(Error::BadImportName { rva: name_rva })?;
        let table_rva = if lookup == 0 { iat } else { lookup };
        let table = layout
            .data_from(table_rva)
            .ok_or_else(|| Error::ImportTableUnterminated {
                module: name.clone(),
            })?;
        let mut imports = Vec::new();
        let mut terminated = false;
        for (index, entry) in (0_u32..).zip(table.chunks_exact(8)) {
            let value = u64_at(entry, 0).unwrap_or_default();
            if value == 0 {
                terminated = true;
                break;
            }
            total += 1;
            if total > MAX_IMPORTS {
                return Err(Error::TooManyImports);
            }
            // `index` < 2^16 here (bounded by MAX_IMPORTS), so these products fit.
            let entry_rva = table_rva.saturating_add(index * 8);
            let import_name = if value & (1 << 63) != 0 {
                if value & !(1 << 63) > 0xFFFF {
                    return Err(Error::BadImportThunk {
                        rva: entry_rva,
                        value,
                    });
                }
                ImportName::Ordinal((value & 0xFFFF) as u16)
            } else {
                let hint_name = u32::try_from(value).ok().filter(|&v| v < 1 << 31).ok_or(
                    Error::BadImportThunk {
                        rva: entry_rva,
                        value,
                    },
                )?;
                let name_rva = hint_name
                    .checked_add(2)
                    .ok_or(Error::BadImportName { rva: hint_name })?;
                ImportName::Name(
                    layout
                        .name(name_rva)
                        .ok_or(Error::BadImportName { rva: name_rva })?,
                )
            };
            let iat_rva = iat
                .checked_add(index * 8)
                .filter(|&slot| slot >= layout.size_of_headers && layout.in_section(slot, 8))
                .ok_or_else(|| Error::IatOutOfImage {
                    module: name.clone(),
                })?;
            imports.push(Import {
                name: import_name,
                iat_rva,
            });
        }
        if !terminated {
            return Err(Error::ImportTableUnterminated { module: name });
        }
        modules.push(ImportModule { name, imports });
    }
    Err(Error::ImportDirectoryUnterminated)
}

fn parse_relocations(layout: &Layout<'_>, dir: (u32, u32)) -> Result<Vec<Relocation>> {
    let Some(data) = directory_data(layout, dir, directory::BASERELOC)? else {
        return Ok(Vec::new());
    };
    let mut relocations = Vec::new();
    let mut offset = 0_usize;
    while offset < data.len() {
        let block_error = Error::BadRelocationBlock {
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
        };
        let (Some(page), Some(block_size)) =
            (u32_at(data, offset), u32_at(data, offset.saturating_add(4)))
        else {
            return Err(block_error);
        };
        let block_size = usize_from(block_size);
        let Some(block) = offset
            .checked_add(block_size)
            .and_then(|end| data.get(offset..end))
            .filter(|_| block_size >= 8 && block_size.is_multiple_of(4))
        else {
            return Err(block_error);
        };
        for entry in block.get(8..).unwrap_or_default().chunks_exact(2) {
            let entry = u16_at(entry, 0).unwrap_or_default();
            let [_, high] = entry.to_le_bytes();
            let kind = high >> 4;
            if kind == IMAGE_REL_BASED_ABSOLUTE {
                continue;
            }
            let rva = page.checked_add(u32::from(entry & 0xFFF));
            let width = match kind {
                IMAGE_REL_BASED_DIR64 => 8,
                IMAGE_REL_BASED_HIGHLOW => 4,
                _ => 1,
            };
            let Some(rva) = rva.filter(|rva| {
                rva.checked_add(width)
                    .is_some_and(|end| end <= layout.size_of_image)
            }) else {
                return Err(Error::RelocationOutOfImage {
                    rva: page.saturating_add(u32::from(entry & 0xFFF)),
                });
            };
            relocations.push(Relocation { rva, kind });
        }
        offset += block_size;
    }
    Ok(relocations)
}

fn parse_exception(layout: &Layout<'_>, dir: (u32, u32)) -> Result<Vec<RuntimeFunction>> {
    if !dir.1.is_multiple_of(RUNTIME_FUNCTION_SIZE) {
        return Err(Error::BadExceptionDirectory { size: dir.1 });
    }
    let Some(data) = directory_data(layout, dir, directory::EXCEPTION)? else {
        return Ok(Vec::new());
    };
    let mut functions: Vec<RuntimeFunction> = Vec::new();
    for (index, entry) in data.chunks_exact(12).enumerate() {
        let field = |offset| u32_at(entry, offset).unwrap_or_default();
        let function = RuntimeFunction {
            begin: field(0),
            end: field(4),
            unwind_info: field(8),
        };
        let after_previous = functions.last().is_none_or(|p| function.begin >= p.end);
        if function.begin >= function.end
            || function.end > layout.size_of_image
            || function.unwind_info & !1 >= layout.size_of_image
            || !after_previous
        {
            return Err(Error::BadRuntimeFunction { index });
        }
        functions.push(function);
    }
    Ok(functions)
}

fn parse_exports(layout: &Layout<'_>, dir: (u32, u32)) -> Result<(Option<String>, Vec<Export>)> {
    let Some(data) = directory_data(layout, dir, directory::EXPORT)? else {
        return Ok((None, Vec::new()));
    };
    let bad = Error::BadExportDirectory;
    if data.len() < usize_from(EXPORT_DIRECTORY_SIZE) {
        return Err(bad("smaller than IMAGE_EXPORT_DIRECTORY"));
    }
    let field = |offset| u32_at(data, offset).unwrap_or_default();
    let module = layout
        .name(field(12))
        .ok_or(bad("module name is not a NUL-terminated ASCII string"))?;
    let function_count = field(20);
    let name_count = field(24);
    if function_count > 1 << 16 || name_count > function_count {
        return Err(bad("implausible NumberOfFunctions or NumberOfNames"));
    }
    // Both counts are at most 2^16: the products fit.
    let functions = layout
        .data(field(28), function_count * 4)
        .ok_or(bad("AddressOfFunctions outside the file data"))?;
    let names = layout
        .data(field(32), name_count * 4)
        .ok_or(bad("AddressOfNames outside the file data"))?;
    let ordinals = layout
        .data(field(36), name_count * 2)
        .ok_or(bad("AddressOfNameOrdinals outside the file data"))?;
    let mut exports = Vec::new();
    for (name_rva, ordinal) in names.chunks_exact(4).zip(ordinals.chunks_exact(2)) {
        let name_rva = u32_at(name_rva, 0).unwrap_or_default();
        let ordinal = usize::from(u16_at(ordinal, 0).unwrap_or_default());
        let name = layout
            .name(name_rva)
            .ok_or(bad("export name is not a NUL-terminated ASCII string"))?;
        let rva = u32_at(functions, ordinal * 4).ok_or(bad("name ordinal out of range"))?;
        let forwarder = rva >= dir.0 && rva - dir.0 < dir.1;
        if rva == 0 || forwarder {
            continue;
        }
        if rva >= layout.size_of_image {
            return Err(bad("exported function outside the image"));
        }
        exports.push(Export { name, rva });
    }
    Ok((Some(module), exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_checks_overflow() {
        assert_eq!(align_up(1, 0x1000), Some(0x1000));
        assert_eq!(align_up(0x1000, 0x1000), Some(0x1000));
        assert_eq!(align_up(0, 0x1000), Some(0));
        assert_eq!(align_up(u32::MAX, 0x1000), None);
    }

    #[test]
    fn section_names_drop_padding() {
        assert_eq!(section_name(*b".text\0\0\0"), ".text");
        assert_eq!(section_name(*b"12345678"), "12345678");
    }

    #[test]
    fn empty_and_tiny_inputs_are_truncated() {
        for len in 0..DOS_HEADER_SIZE {
            let bytes = alloc::vec![0_u8; len];
            assert!(matches!(parse(&bytes), Err(Error::Truncated { .. })));
        }
    }
}
