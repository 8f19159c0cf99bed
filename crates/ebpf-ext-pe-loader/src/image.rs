//! Mapping, relocating, binding and protecting an image; calling into it.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_int, c_void};
use core::ptr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::pdb_names::Pdb;
use crate::pe::{
    IMAGE_REL_BASED_DIR64, ImportName, PAGE_SIZE, PeImage, Protection, Section, parse,
};
use crate::registry::{self, ImageRecord, Symbol};
use crate::{fault, stack, supplied};

/// Options for [`load_with`] and [`PeImage::load`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Where to try to map the image (page-aligned). The kernel uses it when that range is
    /// free and picks another address otherwise; `None` lets the kernel choose.
    pub address_hint: Option<usize>,
    /// Function names by RVA (from the image's PDB: [`load_file`] reads one found beside the
    /// image), for fault reports and [`symbolize`](crate::symbolize).
    pub symbols: Vec<(u32, String)>,
}

impl LoadOptions {
    /// Default options: the kernel chooses the address.
    #[must_use]
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Asks for the image at `address` (see [`LoadOptions::address_hint`]).
    #[must_use]
    pub fn address_hint(mut self, address: usize) -> LoadOptions {
        self.address_hint = Some(address);
        self
    }

    /// Names functions by RVA (see [`LoadOptions::symbols`]).
    #[must_use]
    pub fn symbols(mut self, symbols: Vec<(u32, String)>) -> LoadOptions {
        self.symbols = symbols;
        self
    }
}

/// Parses and loads the driver image `bytes` under the module name `name`, binding its imports
/// through `resolver`.
///
/// `resolver(module, function)` returns the address to bind, or `None`; module names are
/// passed as the image writes them (`ntoskrnl.exe`, `NETIO.SYS`), so compare them
/// case-insensitively, as Windows does. When the resolver returns `None` for `__chkstk`,
/// `memcpy`, `memmove`, `memset` or `memcmp` from `ntoskrnl.exe`, the loader supplies its own
/// (Windows x64 convention). An address of 0 counts as unresolved.
///
/// # Errors
/// Any [`parse`] error; [`Error::UnsupportedRelocation`], [`Error::RelocationsStripped`],
/// [`Error::ImportByOrdinal`], [`Error::UnresolvedImports`] (listing every missing import),
/// or a failed `mmap`/`mprotect`, or [`Error::TooManyImages`].
pub fn load(
    name: &str,
    bytes: &[u8],
    resolver: impl FnMut(&str, &str) -> Option<usize>,
) -> Result<LoadedImage> {
    parse(bytes)?.load(name, &LoadOptions::default(), resolver)
}

/// [`load`] with [`LoadOptions`].
///
/// # Errors
/// As [`load`].
pub fn load_with(
    name: &str,
    bytes: &[u8],
    options: &LoadOptions,
    resolver: impl FnMut(&str, &str) -> Option<usize>,
) -> Result<LoadedImage> {
    parse(bytes)?.load(name, options, resolver)
}

/// Reads and loads the driver image at `path`, named after its file name. If a PDB with the
/// same stem lies beside it (`driver.sys` and `driver.pdb`) and it is the PDB the image was
/// linked with ([`Pdb::matches`] its CodeView record), its function names are used in fault
/// reports and by [`symbolize`](crate::symbolize). A PDB that cannot be read, or that belongs
/// to another build, is ignored with a note on stderr (names then come from the exports and
/// the entry point), so a stale PDB never names functions wrongly.
///
/// # Errors
/// [`Error::Read`] if the file cannot be read; otherwise as [`load`].
pub fn load_file(
    path: &Path,
    resolver: impl FnMut(&str, &str) -> Option<usize>,
) -> Result<LoadedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Read {
        path: path.display().to_string(),
        kind: e.kind(),
    })?;
    load_file_bytes(path, &bytes, resolver)
}

/// [`load_file`] for `bytes` the caller has already read from `path`, so that it knows exactly
/// what was loaded (a test or report can hash them). The image is named after `path`'s file
/// name, and function names come from the PDB beside `path`, as in [`load_file`].
///
/// # Errors
/// As [`load`].
pub fn load_file_bytes(
    path: &Path,
    bytes: &[u8],
    resolver: impl FnMut(&str, &str) -> Option<usize>,
) -> Result<LoadedImage> {
    load_file_parsed(path, &parse(bytes)?, resolver)
}

/// [`load_file_bytes`] for an image the caller has already parsed (to check something of it
/// first, as its signature), so the file is parsed once.
///
/// # Errors
/// As [`load`], less the parse errors.
pub fn load_file_parsed(
    path: &Path,
    image: &PeImage<'_>,
    resolver: impl FnMut(&str, &str) -> Option<usize>,
) -> Result<LoadedImage> {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let symbols = pdb_functions(&path.with_extension("pdb"), image);
    image.load(&name, &LoadOptions::new().symbols(symbols), resolver)
}

/// The functions of the PDB at `path` if it is `image`'s; none if there is no file there, and
/// none with a note on stderr if the file is not `image`'s PDB or cannot be read.
fn pdb_functions(path: &Path, image: &PeImage<'_>) -> Vec<(u32, String)> {
    let ignored = |why: &str| {
        eprintln!(
            "ebpf-ext-pe-loader: {} not used for function names: {why}",
            path.display()
        );
        Vec::new()
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return ignored(&e.to_string()),
    };
    let Some(codeview) = image.codeview() else {
        return ignored("the image names no PDB (it has no CodeView record)");
    };
    match Pdb::read(&bytes) {
        Err(e) => ignored(&e.to_string()),
        Ok(pdb) if !pdb.matches(&codeview) => ignored(&format!(
            "the image was linked with another PDB ({}, GUID or age differ)",
            codeview.path
        )),
        Ok(pdb) => pdb.into_functions(),
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or_default()
}

/// An anonymous mapping, unmapped on drop.
///
/// # Invariants
/// `base..base + len` is a mapping this value owns.
#[derive(Debug)]
struct Mapping {
    base: usize,
    len: usize,
}

impl Mapping {
    fn new(len: usize, hint: Option<usize>) -> Result<Mapping> {
        let hint = hint.map_or(ptr::null_mut(), |h| {
            (h & !(PAGE_SIZE as usize - 1)) as *mut c_void
        });
        // SAFETY: without MAP_FIXED the hint is only a hint: the kernel never replaces an
        // existing mapping, so no memory in use is touched.
        let base = unsafe {
            libc::mmap(
                hint,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::Map { errno: errno() });
        }
        // INVARIANT: the mapping was just created for this value.
        Ok(Mapping {
            base: base as usize,
            len,
        })
    }

    /// Copies `data` to offset `offset`.
    fn write(&mut self, offset: usize, data: &[u8]) {
        let fits = offset
            .checked_add(data.len())
            .is_some_and(|end| end <= self.len);
        if fits {
            // SAFETY: the destination lies inside the owned, writable mapping (checked above)
            // and cannot overlap `data`, which is not part of it.
            unsafe {
                ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    (self.base + offset) as *mut u8,
                    data.len(),
                );
            }
        }
    }

    /// Reads the u64 at `offset`, if it lies inside the mapping.
    fn read_u64(&self, offset: usize) -> Option<u64> {
        let end = offset.checked_add(8)?;
        if end > self.len {
            return None;
        }
        // SAFETY: inside the owned mapping, readable while loading (checked above).
        Some(unsafe { ptr::read_unaligned((self.base + offset) as *const u64) })
    }

    /// Writes `value` at `offset`, if it lies inside the mapping.
    fn write_u64(&mut self, offset: usize, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }

    fn protect(&self, offset: usize, len: usize, protection: c_int) -> Result {
        if len == 0 {
            return Ok(());
        }
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !fits {
            return Err(Error::Protect {
                errno: libc::EINVAL,
            });
        }
        // SAFETY: the page-aligned range lies inside the owned mapping (checked above).
        let rc = unsafe { libc::mprotect((self.base + offset) as *mut c_void, len, protection) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::Protect { errno: errno() })
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and dropped last.
        unsafe { libc::munmap(self.base as *mut c_void, self.len) };
    }
}

fn prot_bits(protection: Protection) -> c_int {
    match protection {
        Protection::ReadOnly => libc::PROT_READ,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Protection::ReadExecute => libc::PROT_READ | libc::PROT_EXEC,
    }
}

impl PeImage<'_> {
    /// Maps this image under the module name `name` and binds its imports through `resolver`
    /// (see [`load`]).
    ///
    /// # Errors
    /// As [`load`], less the parse errors.
    pub fn load(
        &self,
        name: &str,
        options: &LoadOptions,
        mut resolver: impl FnMut(&str, &str) -> Option<usize>,
    ) -> Result<LoadedImage> {
        if let Some(r) = self
            .relocations()
            .iter()
            .find(|r| r.kind != IMAGE_REL_BASED_DIR64)
        {
            return Err(Error::UnsupportedRelocation {
                rva: r.rva,
                kind: r.kind,
            });
        }
        let mut bindings = Vec::new();
        let mut missing = Vec::new();
        for module in self.imports() {
            for import in &module.imports {
                let function = match &import.name {
                    ImportName::Name(function) => function,
                    ImportName::Ordinal(ordinal) => {
                        return Err(Error::ImportByOrdinal {
                            module: module.name.clone(),
                            ordinal: *ordinal,
                        });
                    }
                };
                let address = resolver(&module.name, function)
                    .filter(|&a| a != 0)
                    .or_else(|| supplied::lookup(&module.name, function));
                match address {
                    Some(address) => bindings.push((import.iat_rva, address)),
                    None => missing.push(format!("{}!{function}", module.name)),
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::UnresolvedImports(missing));
        }

        let size = self.size_of_image() as usize;
        let mut mapping = Mapping::new(size, options.address_hint)?;
        let base = mapping.base;
        if base as u64 != self.image_base() && self.relocations_stripped() {
            return Err(Error::RelocationsStripped);
        }
        let bytes = self.bytes();
        mapping.write(
            0,
            bytes
                .get(..self.size_of_headers() as usize)
                .unwrap_or_default(),
        );
        for section in self.sections() {
            let data = section
                .file_offset
                .checked_add(section.file_size)
                .and_then(|end| bytes.get(section.file_offset..end))
                .unwrap_or_default();
            mapping.write(section.virtual_address as usize, data);
        }

        let delta = (base as u64).wrapping_sub(self.image_base());
        for relocation in self.relocations() {
            let offset = relocation.rva as usize;
            if let Some(value) = mapping.read_u64(offset) {
                mapping.write_u64(offset, value.wrapping_add(delta));
            }
        }
        for &(iat_rva, address) in &bindings {
            mapping.write_u64(iat_rva as usize, address as u64);
        }

        mapping.protect(0, size, libc::PROT_NONE)?;
        let headers = (self.size_of_headers().div_ceil(PAGE_SIZE) * PAGE_SIZE) as usize;
        mapping.protect(0, headers, libc::PROT_READ)?;
        for section in self.sections() {
            mapping.protect(
                section.virtual_address as usize,
                section.mapped_size as usize,
                prot_bits(section.protection),
            )?;
        }

        let record = Box::new(self.record(name, base, &options.symbols));
        let entry_point = base + self.entry_point() as usize;
        // SAFETY: the record is owned by the LoadedImage built below, whose Drop unregisters
        // it before freeing it; it is never mutated.
        let slot = unsafe { registry::register(&raw const *record) }.ok_or(Error::TooManyImages)?;
        fault::install();
        Ok(LoadedImage {
            slot,
            record,
            mapping,
            entry_point,
            dll_characteristics: self.dll_characteristics(),
            exports: self
                .exports()
                .iter()
                .map(|e| (e.name.clone(), e.rva))
                .collect(),
        })
    }

    fn record(&self, name: &str, base: usize, symbols: &[(u32, String)]) -> ImageRecord {
        let section_range = |s: &Section| (s.virtual_address, s.virtual_address + s.virtual_size);
        let mut names: Vec<(u32, Box<str>)> = self
            .exports()
            .iter()
            .map(|e| (e.rva, e.name.as_str().into()))
            .collect();
        if !names.iter().any(|(rva, _)| *rva == self.entry_point()) {
            names.push((self.entry_point(), "DriverEntry".into()));
        }
        // Exports and the entry point first, so they win over a PDB name at the same RVA.
        names.extend(
            symbols
                .iter()
                .map(|(rva, name)| (*rva, name.as_str().into())),
        );
        names.sort_by_key(|(rva, _)| *rva);
        names.dedup_by_key(|(rva, _)| *rva);
        ImageRecord {
            base,
            size: self.size_of_image() as usize,
            name: name.into(),
            executable: self
                .sections()
                .iter()
                .filter(|s| s.protection == Protection::ReadExecute)
                .map(section_range)
                .collect(),
            functions: self.functions().iter().map(|f| (f.begin, f.end)).collect(),
            names: names.into_boxed_slice(),
            dll_characteristics: self.dll_characteristics(),
        }
    }
}

/// A driver image mapped into this process, relocated, bound and protected.
///
/// Dropping it unmaps the image: nothing may still call into it or hold pointers to it (unload
/// the driver first, as Windows would).
#[derive(Debug)]
pub struct LoadedImage {
    slot: usize,
    record: Box<ImageRecord>,
    mapping: Mapping,
    entry_point: usize,
    dll_characteristics: u16,
    exports: Vec<(String, u32)>,
}

// SAFETY: the mapping and the record are immutable after loading; calls into the image are
// `unsafe` and their thread-safety is the driver's, as in the kernel.
unsafe impl Send for LoadedImage {}
// SAFETY: as above; `&LoadedImage` only reads immutable data.
unsafe impl Sync for LoadedImage {}

impl LoadedImage {
    /// The module name the image was loaded under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Address of the first byte of the image (of its headers).
    #[must_use]
    pub fn base(&self) -> usize {
        self.mapping.base
    }

    /// Size of the mapping (`SizeOfImage`).
    #[must_use]
    pub fn size(&self) -> usize {
        self.mapping.len
    }

    /// Address of the entry point (`DriverEntry`).
    #[must_use]
    pub fn entry_point(&self) -> usize {
        self.entry_point
    }

    /// `DllCharacteristics` of the image (see [`PeImage::dll_characteristics`]).
    #[must_use]
    pub fn dll_characteristics(&self) -> u16 {
        self.dll_characteristics
    }

    /// Address of `rva`, or `None` outside the image.
    #[must_use]
    pub fn address(&self, rva: u32) -> Option<usize> {
        let rva = rva as usize;
        (rva < self.mapping.len).then(|| self.mapping.base + rva)
    }

    /// Address of the function exported as `name`.
    #[must_use]
    pub fn export(&self, name: &str) -> Option<usize> {
        self.exports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|&(_, rva)| self.address(rva))
    }

    /// Where `address` lies in this image.
    #[must_use]
    pub fn symbolize(&self, address: usize) -> Option<Symbol> {
        self.record.rva(address)?;
        registry::symbolize(address)
    }

    /// Calls `DriverEntry(DriverObject, RegistryPath)` on a kernel-sized stack and returns its
    /// NTSTATUS.
    ///
    /// # Safety
    /// The image is a driver whose `DriverEntry` may run in this process: the imports it
    /// calls are bound to an implementation that works here (usersim, with a kernel bound to
    /// the calling thread), and `driver_object`/`registry_path` are what it expects (a
    /// `DRIVER_OBJECT` and a `UNICODE_STRING`, or whatever this test image accepts).
    ///
    /// # Panics
    /// If no kernel stack can be mapped.
    pub unsafe fn call_driver_entry(
        &self,
        driver_object: *mut c_void,
        registry_path: *const c_void,
    ) -> i32 {
        // SAFETY: the entry point is inside an executable section (checked by `parse`) and
        // the caller vouches for the driver and the arguments.
        let status = unsafe {
            stack::call_win64(
                self.entry_point,
                [driver_object as usize, registry_path as usize],
            )
        };
        // NTSTATUS is the low 32 bits of RAX.
        #[expect(clippy::cast_possible_truncation, reason = "NTSTATUS is 32 bits")]
        let status = status as u32;
        status.cast_signed()
    }

    /// Calls the function at `rva` in this image with up to four pointer-sized arguments on
    /// a kernel-sized stack (see [`call_win64`](crate::call_win64)); `None` if `rva` is
    /// outside the image.
    ///
    /// # Safety
    /// As [`call_win64`](crate::call_win64): `rva` is a function of this image following the
    /// Windows x64 convention and the arguments satisfy its contract.
    ///
    /// # Panics
    /// If no kernel stack can be mapped.
    #[must_use]
    pub unsafe fn call<const N: usize>(&self, rva: u32, args: [usize; N]) -> Option<usize> {
        let function = self.address(rva)?;
        // SAFETY: the caller vouches for the function and its arguments.
        Some(unsafe { stack::call_win64(function, args) })
    }

    /// Unmaps the image (the same as dropping it).
    ///
    /// Windows unloads a driver image only when its driver object goes, after the last of its
    /// device objects, which a work item of the driver references until its routine has
    /// returned (ebpf-for-windows issue #2197). To unload when Windows would, after calling the
    /// unload routine give the image to the driver object
    /// ([`ebpf_ext_usersim::DriverObject::keep_alive`]) instead of calling this.
    pub fn unload(self) {}
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        // Withdraw the record before the memory it describes goes away; `mapping` and
        // `record` are dropped after this.
        registry::unregister(self.slot);
    }
}
