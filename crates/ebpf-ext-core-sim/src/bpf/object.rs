//! BPF ELF objects: programs by section, map definitions and map relocations, parsed by
//! `aya-obj`.
//!
//! `aya-obj` names program sections after Linux's conventions (`xdp`, `kprobe/...`) and
//! refuses any other name, while eBPF-for-Windows programs live in sections named after
//! their program type (`bind`, `process`, `sample_net`). So before parsing, the name of every
//! executable section other than `.text` is overwritten in place, in a copy of the object,
//! with `tp` (a name `aya-obj` accepts and whose meaning is ignored here), and the original
//! names are kept by section index. That rename is the only ELF handling written here; the
//! section headers are read with `object`, the crate `aya-obj` itself parses with.

use core::fmt::Write as _;
use std::collections::{BTreeMap, HashSet};

use aya_obj::generated::{BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE};
use aya_obj::{EbpfSectionKind, Map, Object};
use object::read::elf::{ElfFile64, FileHeader as _, SectionHeader as _};
use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind,
};

use super::BpfError;
use super::btf::{BtfExtern, btf_externs};
use super::insn::{CALL, Insn, LD_DW_IMM};

/// The object as the `object` crate reads it (read once, by [`BpfObject::parse`]).
type Elf<'data> = ElfFile64<'data, Endianness>;

/// The name program sections get for `aya-obj` (see the module documentation).
const ACCEPTED_SECTION: &[u8] = b"tp\0";

/// A map as an ELF object defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDefinition {
    /// Its name (the variable's name; `.rodata`, `.data` or `.bss` for global variables).
    pub name: String,
    /// Its type (`ebpf_map_type_t`: eBPF for Windows numbering).
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries (bytes of a ring buffer).
    pub max_entries: u32,
    /// The initial contents of a global-variable section.
    pub initial_data: Option<Vec<u8>>,
}

/// A reference from an instruction to a map, which loading turns into the map's handle or
/// a pointer into its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapReference {
    /// Index of the `lddw` instruction.
    pub(crate) insn: usize,
    /// Index of the map in [`BpfObject::maps`].
    pub(crate) map: usize,
    /// `Some(offset)` for a pointer into the map's (single) value, `None` for the map itself.
    pub(crate) value_offset: Option<u32>,
}

/// One program of an object: its section and its linked instructions.
#[derive(Debug, Clone)]
pub(crate) struct ProgramCode {
    /// The ELF section it came from.
    pub(crate) section: String,
    /// Its function name.
    pub(crate) name: String,
    /// Its instructions, with the functions it calls linked behind it.
    pub(crate) insns: Vec<Insn>,
    /// The map references in them.
    pub(crate) maps: Vec<MapReference>,
}

/// A parsed BPF ELF object: its programs (by section) and the maps they use.
#[derive(Debug, Clone)]
pub struct BpfObject {
    pub(crate) programs: Vec<ProgramCode>,
    pub(crate) maps: Vec<MapDefinition>,
    /// The `extern` functions its BTF declares, by BTF type id: what a call of a kernel
    /// function (`src` 2) names in its immediate.
    pub(crate) externs: BTreeMap<u32, BtfExtern>,
}

/// `src` of a call of a kernel function (`BPF_PSEUDO_KFUNC_CALL`): how the verifier rewrites
/// a call of a BTF-resolved function, with the function's BTF type id as the immediate.
pub(crate) const CALL_KFUNC: u8 = 2;
/// `src` of a BPF-to-BPF call (`BPF_PSEUDO_CALL`), which clang emits for a call of an
/// `extern`, relocated against the undefined symbol.
const CALL_LOCAL: u8 = 1;

/// Rewrites, in `patched` (a copy of `bytes`), every call relocated against an undefined
/// symbol into a call of a kernel function (`src` 2) whose immediate is the BTF type id of
/// the `extern` function of that name, as the verifier rewrites calls of BTF-resolved
/// functions; returns the object's `extern` functions by BTF id.
fn rewrite_extern_calls(
    elf: &Elf<'_>,
    patched: &mut [u8],
) -> Result<BTreeMap<u32, BtfExtern>, BpfError> {
    let externs = match elf.section_by_name(".BTF") {
        Some(section) => {
            let data = section
                .data()
                .map_err(|e| BpfError::Parse(format!(".BTF: {e}")))?;
            btf_externs(data).map_err(|e| BpfError::Parse(format!(".BTF: {e}")))?
        }
        None => BTreeMap::new(),
    };
    for section in elf.sections() {
        // Calls are in code; a data section's bytes are never rewritten.
        if section.kind() != SectionKind::Text {
            continue;
        }
        let Some((start, size)) = section.file_range() else {
            continue;
        };
        for (offset, relocation) in section.relocations() {
            let RelocationTarget::Symbol(index) = relocation.target() else {
                continue;
            };
            let Ok(symbol) = elf.symbol_by_index(index) else {
                continue;
            };
            if !symbol.is_undefined() || offset.checked_add(8).is_none_or(|end| end > size) {
                continue;
            }
            let at = start
                .checked_add(offset)
                .and_then(|at| usize::try_from(at).ok())
                .ok_or_else(|| BpfError::Parse("relocation offset beyond the file".into()))?;
            let Some(insn) = at.checked_add(8).and_then(|end| patched.get_mut(at..end)) else {
                continue;
            };
            if insn[0] != CALL || insn[1] >> 4 != CALL_LOCAL {
                continue;
            }
            let name = symbol
                .name()
                .map_err(|e| BpfError::Parse(format!("symbol name: {e}")))?;
            let (&id, _) = externs
                .iter()
                .find(|(_, f)| f.name == name)
                .ok_or_else(|| {
                    BpfError::Parse(format!(
                        "a call of {name}, which is neither defined in the object nor declared \
                         extern in its BTF"
                    ))
                })?;
            insn[1] = (CALL_KFUNC << 4) | (insn[1] & 0x0F);
            insn[4..8].copy_from_slice(&id.to_le_bytes());
        }
    }
    Ok(externs)
}

/// The original names of the executable sections other than `.text`, by index, and a copy of
/// `bytes` where each of those names reads `tp`.
fn rename_program_sections(
    elf: &Elf<'_>,
    bytes: &[u8],
) -> Result<(Vec<u8>, BTreeMap<usize, String>), BpfError> {
    let endian = elf.endian();
    let table = elf
        .elf_header()
        .sections(endian, bytes)
        .map_err(|e| BpfError::Parse(format!("section headers: {e}")))?;
    let names_offset = usize::try_from(
        table
            .section(object::SectionIndex(
                elf.elf_header()
                    .shstrndx(endian, bytes)
                    .map_err(|e| BpfError::Parse(format!("section-name table index: {e}")))?
                    as usize,
            ))
            .map_err(|e| BpfError::Parse(format!("section-name table: {e}")))?
            .sh_offset(endian),
    )
    .map_err(|_| BpfError::Parse("section-name table offset".into()))?;
    let mut patched = bytes.to_vec();
    let mut names = BTreeMap::new();
    for section in elf.sections() {
        let name = section
            .name()
            .map_err(|e| BpfError::Parse(format!("section name: {e}")))?;
        if section.kind() != SectionKind::Text || section.size() == 0 || name.starts_with(".text") {
            continue;
        }
        if name.len() + 1 < ACCEPTED_SECTION.len() {
            return Err(BpfError::Parse(format!(
                "program section {name:?}: names shorter than two characters are not supported"
            )));
        }
        let header = table
            .section(section.index())
            .map_err(|e| BpfError::Parse(format!("section {name}: {e}")))?;
        let at = names_offset + header.sh_name(endian) as usize;
        patched[at..at + ACCEPTED_SECTION.len()].copy_from_slice(ACCEPTED_SECTION);
        names.insert(section.index().0, name.to_owned());
    }
    Ok((patched, names))
}

fn text_sections(elf: &Elf<'_>) -> HashSet<usize> {
    elf.sections()
        .filter(|s| s.kind() == SectionKind::Text && s.name().is_ok_and(|n| n.starts_with(".text")))
        .map(|s| s.index().0)
        .collect()
}

fn definition(name: &str, map: &Map) -> MapDefinition {
    let global = matches!(
        map.section_kind(),
        EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss
    );
    MapDefinition {
        name: name.to_owned(),
        map_type: if global {
            super::maps::BPF_MAP_TYPE_ARRAY
        } else {
            map.map_type()
        },
        key_size: if global { 4 } else { map.key_size() },
        value_size: map.value_size(),
        max_entries: if global { 1 } else { map.max_entries() },
        initial_data: global.then(|| map.data().to_vec()),
    }
}

/// The map references of program `name`'s relocated `insns` (`lddw` of a map or of a
/// pointer into its value), each naming one of `map_count` maps.
fn map_references(
    name: &str,
    insns: &[Insn],
    map_count: usize,
) -> Result<Vec<MapReference>, BpfError> {
    let mut references = Vec::new();
    for (index, insn) in insns.iter().enumerate() {
        if insn.code != LD_DW_IMM {
            continue;
        }
        let map = usize::try_from(insn.imm).ok();
        let reference = match u32::from(insn.src) {
            BPF_PSEUDO_MAP_FD => map.map(|map| MapReference {
                insn: index,
                map,
                value_offset: None,
            }),
            BPF_PSEUDO_MAP_VALUE => map.map(|map| MapReference {
                insn: index,
                map,
                value_offset: insns
                    .get(index + 1)
                    .and_then(|next| u32::try_from(next.imm).ok()),
            }),
            _ => continue,
        };
        let reference = reference
            .filter(|r| r.map < map_count)
            .ok_or_else(|| BpfError::Parse(format!("{name}: bad map reference")))?;
        references.push(reference);
    }
    Ok(references)
}

impl BpfObject {
    /// Parses a BPF ELF object (`clang -target bpf -c`): its programs, its maps (BTF-defined
    /// in `.maps`, legacy in `maps`, and global variables in `.rodata`, `.data`, `.bss`),
    /// with map references and calls between functions relocated.
    ///
    /// # Errors
    /// [`BpfError::Parse`] with what `aya-obj` or the ELF reader refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, BpfError> {
        let elf = Elf::parse(bytes)
            .map_err(|e| BpfError::Parse(format!("not a 64-bit ELF object: {e}")))?;
        let (mut patched, section_names) = rename_program_sections(&elf, bytes)?;
        let externs = rewrite_extern_calls(&elf, &mut patched)?;
        let text = text_sections(&elf);
        let mut object = Object::parse(&patched).map_err(|e| {
            let mut message = e.to_string();
            let mut source = core::error::Error::source(&e);
            while let Some(inner) = source {
                let _ = write!(message, ": {inner}");
                source = inner.source();
            }
            BpfError::Parse(message)
        })?;
        let mut names: Vec<String> = object.maps.keys().cloned().collect();
        names.sort();
        let maps: Vec<MapDefinition> = names
            .iter()
            .map(|name| definition(name, &object.maps[name]))
            .collect();
        let by_fd: Vec<(String, i32, Map)> = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                (
                    name.clone(),
                    i32::try_from(index).unwrap_or(i32::MAX),
                    object.maps[name].clone(),
                )
            })
            .collect();
        object
            .relocate_maps(
                by_fd
                    .iter()
                    .map(|(name, fd, map)| (name.as_str(), *fd, map)),
                &text,
            )
            .map_err(|e| BpfError::Parse(format!("map relocation: {e}")))?;
        object
            .relocate_calls(&text)
            .map_err(|e| BpfError::Parse(format!("call relocation: {e}")))?;
        let mut programs = Vec::new();
        for (name, program) in &object.programs {
            let function = object
                .functions
                .get(&program.function_key())
                .ok_or_else(|| BpfError::Parse(format!("program {name}: no function")))?;
            let section = section_names
                .get(&program.section_index)
                .cloned()
                .unwrap_or_else(|| format!("#{}", program.section_index));
            let insns: Vec<Insn> = function
                .instructions
                .iter()
                .map(|i| Insn {
                    code: i.code,
                    dst: i.dst_reg(),
                    src: i.src_reg(),
                    off: i.off,
                    imm: i.imm,
                })
                .collect();
            let references = map_references(name, &insns, maps.len())?;
            programs.push(ProgramCode {
                section,
                name: name.clone(),
                insns,
                maps: references,
            });
        }
        programs.sort_by(|a, b| (&a.section, &a.name).cmp(&(&b.section, &b.name)));
        Ok(BpfObject {
            programs,
            maps,
            externs,
        })
    }

    /// The sections that hold programs, in order (duplicates when a section holds several).
    #[must_use]
    pub fn sections(&self) -> Vec<&str> {
        self.programs.iter().map(|p| p.section.as_str()).collect()
    }

    /// The maps the object defines, sorted by name.
    #[must_use]
    pub fn maps(&self) -> &[MapDefinition] {
        &self.maps
    }

    /// The one program in `section`.
    pub(crate) fn program(&self, section: &str) -> Result<&ProgramCode, BpfError> {
        let mut found = self.programs.iter().filter(|p| p.section == section);
        match (found.next(), found.next()) {
            (Some(program), None) => Ok(program),
            (None, _) => Err(BpfError::NoSuchSection {
                section: section.to_owned(),
                sections: self.programs.iter().map(|p| p.section.clone()).collect(),
            }),
            (Some(_), Some(_)) => Err(BpfError::Parse(format!(
                "section {section} holds more than one program"
            ))),
        }
    }
}
