//! The loader's error type.

use alloc::string::String;
use alloc::vec::Vec;

/// `Result` with the loader's [`Error`].
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

/// Why an image could not be parsed or loaded.
///
/// Parse errors name the structure that is malformed; load errors name the step that failed.
/// RVAs and offsets are the values found in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A structure extends past the end of the file.
    #[error("file truncated: {what} needs bytes {offset:#x}..{end:#x}, the file has {len:#x}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Its file offset.
        offset: u64,
        /// Its end (saturated at `u64::MAX` when the sum overflows).
        end: u64,
        /// The file length.
        len: usize,
    },
    /// The file does not start with `MZ`.
    #[error("bad DOS signature {0:#06x} (expected \"MZ\")")]
    BadDosSignature(u16),
    /// The NT headers do not start with `PE\0\0`.
    #[error("bad NT signature {0:#010x} (expected \"PE\\0\\0\")")]
    BadNtSignature(u32),
    /// The machine is not AMD64 (0x8664).
    #[error("unsupported machine {0:#06x} (only AMD64, 0x8664)")]
    UnsupportedMachine(u16),
    /// `IMAGE_FILE_EXECUTABLE_IMAGE` is not set: an object file or a failed link.
    #[error("not an executable image (IMAGE_FILE_EXECUTABLE_IMAGE is clear)")]
    NotExecutableImage,
    /// `SizeOfOptionalHeader` cannot hold a PE32+ optional header and its data directories.
    #[error("bad SizeOfOptionalHeader {0:#x}")]
    BadOptionalHeaderSize(u16),
    /// The optional header is not PE32+ (magic 0x20b).
    #[error("optional header magic {0:#06x} is not PE32+ (0x20b)")]
    NotPe32Plus(u16),
    /// The subsystem is not NATIVE (1): not a driver.
    #[error("subsystem {0} is not NATIVE (1)")]
    UnsupportedSubsystem(u16),
    /// More than 16 data directories.
    #[error("{0} data directories (at most 16)")]
    TooManyDataDirectories(u32),
    /// `SectionAlignment` or `FileAlignment` is not a power of two in range.
    #[error(
        "bad alignment: SectionAlignment {section:#x} (power of two, at least a page), FileAlignment {file:#x} (power of two, 0x200..=SectionAlignment)"
    )]
    BadAlignment {
        /// `SectionAlignment`.
        section: u32,
        /// `FileAlignment`.
        file: u32,
    },
    /// `SizeOfImage` is zero, not a multiple of `SectionAlignment`, or implausibly large.
    #[error("bad SizeOfImage {0:#x}")]
    BadSizeOfImage(u32),
    /// `SizeOfHeaders` does not cover the section table, or exceeds the file or the image.
    #[error("bad SizeOfHeaders {0:#x}")]
    BadSizeOfHeaders(u32),
    /// No sections, or more than 96.
    #[error("bad number of sections {0} (1..=96)")]
    BadSectionCount(u16),
    /// A section's raw data extends past the end of the file.
    #[error("section {section}: raw data outside the file")]
    SectionRawDataOutOfFile {
        /// Section name.
        section: String,
    },
    /// A section's virtual address is not a multiple of `SectionAlignment`.
    #[error("section {section}: virtual address not aligned to SectionAlignment")]
    SectionMisaligned {
        /// Section name.
        section: String,
    },
    /// A section extends past `SizeOfImage`.
    #[error("section {section}: virtual range outside SizeOfImage")]
    SectionOutOfImage {
        /// Section name.
        section: String,
    },
    /// A section starts inside the headers.
    #[error("section {section}: overlaps the headers")]
    SectionOverlapsHeaders {
        /// Section name.
        section: String,
    },
    /// Two sections overlap, or are not in ascending address order.
    #[error("sections {first} and {second} overlap or are out of order")]
    SectionsOverlap {
        /// The earlier section in the table.
        first: String,
        /// The later section in the table.
        second: String,
    },
    /// A section is both writable and executable.
    #[error("section {section}: both writable and executable")]
    WritableAndExecutable {
        /// Section name.
        section: String,
    },
    /// The entry point is not inside an executable section.
    #[error("entry point {0:#x} is not inside an executable section")]
    EntryPointNotExecutable(u32),
    /// A data directory extends past `SizeOfImage`.
    #[error("{directory} directory {rva:#x}+{size:#x} outside the image")]
    DirectoryOutOfImage {
        /// Directory name.
        directory: &'static str,
        /// Its RVA.
        rva: u32,
        /// Its size.
        size: u32,
    },
    /// A data directory the loader reads is not backed by the raw data of one section.
    #[error("{directory} directory {rva:#x}+{size:#x} is not inside one section's file data")]
    DirectoryNotInSection {
        /// Directory name.
        directory: &'static str,
        /// Its RVA.
        rva: u32,
        /// Its size.
        size: u32,
    },
    /// The certificate table (a file offset, not an RVA) extends past the file.
    #[error("certificate table outside the file")]
    CertificateOutOfFile,
    /// The import directory has no terminating null descriptor within its size.
    #[error("import directory has no null terminator")]
    ImportDirectoryUnterminated,
    /// A module or function name of the import directory is not a NUL-terminated, non-empty
    /// ASCII string inside the file data.
    #[error("bad import name at RVA {rva:#x}")]
    BadImportName {
        /// RVA of the name.
        rva: u32,
    },
    /// An import lookup table runs past its section's data before its null terminator.
    #[error("import lookup table of {module} is unterminated")]
    ImportTableUnterminated {
        /// Module name.
        module: String,
    },
    /// An import lookup entry has reserved bits set.
    #[error("bad import thunk {value:#x} at RVA {rva:#x}")]
    BadImportThunk {
        /// RVA of the entry.
        rva: u32,
        /// Its value.
        value: u64,
    },
    /// A module's import address table extends past `SizeOfImage`.
    #[error("import address table of {module} outside the image")]
    IatOutOfImage {
        /// Module name.
        module: String,
    },
    /// More imports than the loader accepts (65 536 in all).
    #[error("too many imports")]
    TooManyImports,
    /// A base relocation block is smaller than its header, not a multiple of 4, or extends
    /// past the relocation directory.
    #[error("bad base relocation block at directory offset {offset:#x}")]
    BadRelocationBlock {
        /// Offset of the block inside the directory.
        offset: u32,
    },
    /// A base relocation patches bytes outside the image.
    #[error("base relocation at RVA {rva:#x} outside the image")]
    RelocationOutOfImage {
        /// RVA the relocation patches.
        rva: u32,
    },
    /// The exception directory size is not a multiple of a RUNTIME_FUNCTION (12 bytes).
    #[error("exception directory size {size:#x} is not a multiple of 12")]
    BadExceptionDirectory {
        /// The directory size.
        size: u32,
    },
    /// A RUNTIME_FUNCTION is empty, outside the image, or out of order.
    #[error("RUNTIME_FUNCTION {index} is empty, outside the image or out of order")]
    BadRuntimeFunction {
        /// Index in the exception directory.
        index: usize,
    },
    /// The export directory is malformed.
    #[error("bad export directory: {0}")]
    BadExportDirectory(&'static str),
    /// A base relocation type other than ABSOLUTE and DIR64.
    #[error("unsupported base relocation type {kind} at RVA {rva:#x}")]
    UnsupportedRelocation {
        /// RVA the relocation patches.
        rva: u32,
        /// `IMAGE_REL_BASED_*` type.
        kind: u8,
    },
    /// The image was linked without relocations and cannot be loaded at another address.
    #[error("relocations stripped: the image cannot be moved from its ImageBase")]
    RelocationsStripped,
    /// An import by ordinal (only imports by name can be bound).
    #[error("{module}: import by ordinal {ordinal} is not supported")]
    ImportByOrdinal {
        /// Module name.
        module: String,
        /// The ordinal.
        ordinal: u16,
    },
    /// Imports the resolver did not resolve, every one as `module!name`.
    #[error("unresolved imports: {}", .0.join(", "))]
    UnresolvedImports(Vec<String>),
    /// `mmap` of the image or a stack failed.
    #[error("mmap failed (errno {errno})")]
    Map {
        /// `errno`.
        errno: i32,
    },
    /// `mprotect` failed.
    #[error("mprotect failed (errno {errno})")]
    Protect {
        /// `errno`.
        errno: i32,
    },
    /// Too many images are loaded at once.
    #[error("too many images loaded at once")]
    TooManyImages,
    /// A PDB could not be read ([`Pdb::read`](crate::Pdb::read)): not a PDB, or a malformed
    /// stream.
    #[error("unreadable PDB: {0}")]
    Pdb(String),
    /// The image file could not be read.
    #[error("cannot read {path}: {kind}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
}
