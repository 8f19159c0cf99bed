//! A builder of small, valid x64 driver images with hand-assembled code, and the offsets of
//! their fields so tests can break them one at a time.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the builder"
)]
#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

use std::collections::BTreeMap;

/// `ImageBase` of built images (lld-link's default for drivers).
pub(crate) const IMAGE_BASE: u64 = 0x1_4000_0000;
/// `SectionAlignment`.
pub(crate) const SECTION_ALIGNMENT: u32 = 0x1000;
/// `FileAlignment`.
pub(crate) const FILE_ALIGNMENT: u32 = 0x200;
/// `SizeOfHeaders`.
pub(crate) const SIZE_OF_HEADERS: u32 = 0x400;
/// The u64 at the start of `.rdata`, which `.data` points at through a DIR64 relocation.
pub(crate) const GLOBAL_VALUE: u64 = 0x0123_4567_89AB_CDEF;
/// What `DriverEntry` adds to its first argument.
pub(crate) const ENTRY_ADDEND: usize = 0x1234;
/// The GUID of the CodeView record (`RSDS`) every built image has, as the file holds it.
pub(crate) const CODEVIEW_GUID: [u8; 16] =
    *b"\x10\x32\x54\x76\x98\xba\xdc\xfe\x01\x23\x45\x67\x89\xab\xcd\xef";
/// Its age.
pub(crate) const CODEVIEW_AGE: u32 = 3;
/// Its PDB path.
pub(crate) const CODEVIEW_PATH: &str = "C:\\build\\test.pdb";

/// `e_lfanew`.
pub(crate) const NT: usize = 0x40;
/// File header offset.
pub(crate) const FILE_HEADER: usize = NT + 4;
/// Optional header offset.
pub(crate) const OPT: usize = FILE_HEADER + 20;
/// Data directory table offset.
pub(crate) const DIRS: usize = OPT + 112;
/// Section table offset.
pub(crate) const SECTIONS: usize = OPT + 240;

/// Optional header field offsets (relative to [`OPT`]).
pub(crate) mod opt {
    pub(crate) const MAGIC: usize = 0;
    pub(crate) const ENTRY: usize = 16;
    pub(crate) const IMAGE_BASE: usize = 24;
    pub(crate) const SECTION_ALIGNMENT: usize = 32;
    pub(crate) const FILE_ALIGNMENT: usize = 36;
    pub(crate) const SIZE_OF_IMAGE: usize = 56;
    pub(crate) const SIZE_OF_HEADERS: usize = 60;
    pub(crate) const SUBSYSTEM: usize = 68;
    pub(crate) const DIRECTORY_COUNT: usize = 108;
}

/// Section header field offsets (relative to the header).
pub(crate) mod sec {
    pub(crate) const VIRTUAL_SIZE: usize = 8;
    pub(crate) const VIRTUAL_ADDRESS: usize = 12;
    pub(crate) const RAW_SIZE: usize = 16;
    pub(crate) const RAW_POINTER: usize = 20;
    pub(crate) const CHARACTERISTICS: usize = 36;
}

/// Section indices in built images.
pub(crate) const TEXT: usize = 0;
pub(crate) const RDATA: usize = 1;
pub(crate) const DATA: usize = 2;
pub(crate) const RELOC: usize = 3;

pub(crate) const SCN_TEXT: u32 = 0x6000_0020;
pub(crate) const SCN_RDATA: u32 = 0x4000_0040;
pub(crate) const SCN_DATA: u32 = 0xC000_0040;
pub(crate) const SCN_RELOC: u32 = 0x4200_0040;

/// An import of a spec.
#[derive(Debug, Clone)]
pub(crate) enum Imp {
    Name(String),
    Ordinal(u16),
}

/// What to put in an image.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Modules and their imports. Every named import but `__chkstk` gets a thunk function
    /// `call_<name>` that forwards its four arguments.
    pub(crate) imports: Vec<(String, Vec<Imp>)>,
    /// Raw relocation entries appended to the block of the `.data` page.
    pub(crate) extra_relocations: Vec<u16>,
    /// Whether to export every function by name.
    pub(crate) exports: bool,
}

impl Spec {
    /// Imports `names` from `module` (names starting with `#` are ordinals).
    pub(crate) fn with_imports(modules: &[(&str, &[&str])]) -> Spec {
        Spec {
            imports: modules
                .iter()
                .map(|(module, names)| {
                    let imports = names
                        .iter()
                        .map(|n| match n.strip_prefix('#') {
                            Some(ordinal) => Imp::Ordinal(ordinal.parse().unwrap()),
                            None => Imp::Name((*n).to_owned()),
                        })
                        .collect();
                    ((*module).to_owned(), imports)
                })
                .collect(),
            extra_relocations: Vec::new(),
            exports: true,
        }
    }
}

impl Default for Spec {
    /// Imports usersim implements, plus `__chkstk`.
    fn default() -> Spec {
        Spec::with_imports(&[
            (
                "ntoskrnl.exe",
                &[
                    "ExAllocatePool2",
                    "ExFreePoolWithTag",
                    "KeGetCurrentIrql",
                    "__chkstk",
                ],
            ),
            ("NETIO.SYS", &["NmrDeregisterProvider"]),
        ])
    }
}

/// A built image.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) bytes: Vec<u8>,
    /// Function name → RVA.
    pub(crate) functions: BTreeMap<String, u32>,
    /// Section index → (RVA, file offset, virtual size).
    pub(crate) sections: Vec<(u32, u32, u32)>,
    /// RVA of the `.data` pointer to [`GLOBAL_VALUE`].
    pub(crate) data_pointer_rva: u32,
    /// RVA of [`GLOBAL_VALUE`].
    pub(crate) global_rva: u32,
    /// File offset of the first import descriptor.
    pub(crate) import_descriptors: usize,
    /// File offset of the first ILT entry of each module.
    pub(crate) ilts: Vec<usize>,
    /// File offset of the relocation block.
    pub(crate) reloc_block: usize,
    /// File offset of the first RUNTIME_FUNCTION.
    pub(crate) pdata: usize,
    /// File offset of the export directory (if any).
    pub(crate) export_directory: Option<usize>,
    /// File offset of the debug directory's one entry (CodeView), and of its record.
    pub(crate) debug_entry: usize,
    /// File offset of the CodeView record.
    pub(crate) codeview: usize,
    pub(crate) size_of_image: u32,
}

impl Built {
    pub(crate) fn rva(&self, function: &str) -> u32 {
        *self
            .functions
            .get(function)
            .unwrap_or_else(|| panic!("no function {function}"))
    }

    pub(crate) fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes[at..at + 2].try_into().unwrap())
    }

    pub(crate) fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    pub(crate) fn set_u16(&mut self, at: usize, value: u16) -> &mut Built {
        self.bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn set_u32(&mut self, at: usize, value: u32) -> &mut Built {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn set_u64(&mut self, at: usize, value: u64) -> &mut Built {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        self
    }

    /// File offset of section header `index`.
    pub(crate) fn section_header(index: usize) -> usize {
        SECTIONS + index * 40
    }

    /// File offset of data directory `index`.
    pub(crate) fn directory(index: usize) -> usize {
        DIRS + index * 8
    }

    /// File offset of the byte at `rva` (inside a section).
    pub(crate) fn file_offset(&self, rva: u32) -> usize {
        let &(va, raw, _) = self
            .sections
            .iter()
            .rev()
            .find(|(va, _, _)| rva >= *va)
            .expect("rva inside a section");
        (raw + (rva - va)) as usize
    }
}

enum Target {
    Iat(usize),
    DataPointer,
}

struct Text {
    code: Vec<u8>,
    functions: Vec<(String, u32, u32)>,
    fixups: Vec<(usize, Target)>,
}

impl Text {
    fn function(&mut self, name: &str, code: &[u8], fixup: Option<(usize, Target)>) {
        while !self.code.len().is_multiple_of(16) {
            self.code.push(0xCC);
        }
        let start = self.code.len();
        if let Some((at, target)) = fixup {
            self.fixups.push((start + at, target));
        }
        self.code.extend_from_slice(code);
        self.functions.push((
            name.to_owned(),
            u32::try_from(start).unwrap(),
            u32::try_from(self.code.len()).unwrap(),
        ));
    }
}

fn align(value: usize, to: u32) -> usize {
    value.div_ceil(to as usize) * to as usize
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn pad_to(v: &mut Vec<u8>, to: usize) {
    while !v.len().is_multiple_of(to) {
        v.push(0);
    }
}

fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap()
}

/// Builds an image from `spec`.
#[expect(clippy::too_many_lines, reason = "one image, laid out top to bottom")]
pub(crate) fn build(spec: &Spec) -> Built {
    // ---- .text, with placeholders for RIP-relative displacements.
    let mut text = Text {
        code: Vec::new(),
        functions: Vec::new(),
        fixups: Vec::new(),
    };
    let addend = u32::try_from(ENTRY_ADDEND).unwrap().to_le_bytes();
    // lea rax, [rcx + ENTRY_ADDEND]; ret
    let mut entry = vec![0x48, 0x8D, 0x81];
    entry.extend_from_slice(&addend);
    entry.push(0xC3);
    text.function("DriverEntry", &entry, None);
    // mov rax, [rip + data_pointer]; ret
    text.function(
        "get_global_pointer",
        &[0x48, 0x8B, 0x05, 0, 0, 0, 0, 0xC3],
        Some((3, Target::DataPointer)),
    );
    // mov rax, [rip + data_pointer]; mov rax, [rax]; ret
    text.function(
        "read_global",
        &[0x48, 0x8B, 0x05, 0, 0, 0, 0, 0x48, 0x8B, 0x00, 0xC3],
        Some((3, Target::DataPointer)),
    );
    // mov r11, cr8; mov rax, r11; ret
    text.function(
        "read_irql",
        &[0x45, 0x0F, 0x20, 0xC3, 0x4C, 0x89, 0xD8, 0xC3],
        None,
    );
    // mov cr8, rcx; mov rax, cr8; ret
    text.function(
        "write_irql",
        &[0x44, 0x0F, 0x22, 0xC1, 0x44, 0x0F, 0x20, 0xC0, 0xC3],
        None,
    );
    // mov rax, cr0; ret (not emulated)
    text.function("read_cr0", &[0x0F, 0x20, 0xC0, 0xC3], None);
    // xor eax, eax; mov rax, [rax]; ret
    text.function("crash", &[0x31, 0xC0, 0x48, 0x8B, 0x00, 0xC3], None);
    // ud2
    text.function("illegal", &[0x0F, 0x0B], None);
    // nop; int3; ret
    text.function("breakpoint", &[0x90, 0xCC, 0xC3], None);
    // call recurse (itself); ret
    text.function("recurse", &[0xE8, 0xFB, 0xFF, 0xFF, 0xFF, 0xC3], None);

    let mut iat_index = 0;
    let mut chkstk_iat = None;
    for (_, imports) in &spec.imports {
        for import in imports {
            match import {
                Imp::Name(name) if name == "__chkstk" => chkstk_iat = Some(iat_index),
                Imp::Name(name) => {
                    // sub rsp, 0x28; call [rip + iat]; add rsp, 0x28; ret
                    text.function(
                        &format!("call_{name}"),
                        &[
                            0x48, 0x83, 0xEC, 0x28, 0xFF, 0x15, 0, 0, 0, 0, 0x48, 0x83, 0xC4, 0x28,
                            0xC3,
                        ],
                        Some((6, Target::Iat(iat_index))),
                    );
                }
                Imp::Ordinal(_) => {}
            }
            iat_index += 1;
        }
        // The null entry terminating each module's IAT.
        iat_index += 1;
    }
    if let Some(index) = chkstk_iat {
        // big_frame(size): mov rax, rcx; mov r8, rcx; call [rip + __chkstk]; sub rsp, rax;
        // mov [rsp], rax; add rsp, r8; mov rax, r8; ret
        text.function(
            "big_frame",
            &[
                0x48, 0x89, 0xC8, 0x49, 0x89, 0xC8, 0xFF, 0x15, 0, 0, 0, 0, 0x48, 0x29, 0xC4, 0x48,
                0x89, 0x04, 0x24, 0x4C, 0x01, 0xC4, 0x4C, 0x89, 0xC0, 0xC3,
            ],
            Some((8, Target::Iat(index))),
        );
    }

    let text_rva = SECTION_ALIGNMENT;
    let text_size = text.code.len();
    let rdata_rva = text_rva + u32_of(align(text_size, SECTION_ALIGNMENT));

    // ---- .rdata: global value, unwind info, imports, pdata, exports.
    let mut rdata = Vec::new();
    let global_rva = rdata_rva;
    put64(&mut rdata, GLOBAL_VALUE);
    let unwind_rva = rdata_rva + u32_of(rdata.len());
    rdata.extend_from_slice(&[1, 0, 0, 0]);
    pad_to(&mut rdata, 8);

    let descriptors_at = rdata.len();
    rdata.resize(descriptors_at + (spec.imports.len() + 1) * 20, 0);
    let mut iat_rvas = Vec::new();
    let mut ilt_offsets = Vec::new();
    for (m, (module, imports)) in spec.imports.iter().enumerate() {
        pad_to(&mut rdata, 8);
        let ilt = rdata.len();
        ilt_offsets.push(ilt);
        rdata.resize(ilt + (imports.len() + 1) * 8, 0);
        let iat = rdata.len();
        rdata.resize(iat + (imports.len() + 1) * 8, 0);
        let name = rdata.len();
        rdata.extend_from_slice(module.as_bytes());
        rdata.push(0);
        for (i, import) in imports.iter().enumerate() {
            let value = match import {
                Imp::Ordinal(ordinal) => (1_u64 << 63) | u64::from(*ordinal),
                Imp::Name(n) => {
                    pad_to(&mut rdata, 2);
                    let hint = rdata_rva + u32_of(rdata.len());
                    put16(&mut rdata, 0);
                    rdata.extend_from_slice(n.as_bytes());
                    rdata.push(0);
                    u64::from(hint)
                }
            };
            rdata[ilt + i * 8..ilt + i * 8 + 8].copy_from_slice(&value.to_le_bytes());
            rdata[iat + i * 8..iat + i * 8 + 8].copy_from_slice(&value.to_le_bytes());
            iat_rvas.push(rdata_rva + u32_of(iat + i * 8));
        }
        iat_rvas.push(rdata_rva + u32_of(iat + imports.len() * 8));
        let d = descriptors_at + m * 20;
        rdata[d..d + 4].copy_from_slice(&(rdata_rva + u32_of(ilt)).to_le_bytes());
        rdata[d + 12..d + 16].copy_from_slice(&(rdata_rva + u32_of(name)).to_le_bytes());
        rdata[d + 16..d + 20].copy_from_slice(&(rdata_rva + u32_of(iat)).to_le_bytes());
    }

    pad_to(&mut rdata, 4);
    let pdata_at = rdata.len();
    for (_, start, end) in &text.functions {
        put32(&mut rdata, text_rva + start);
        put32(&mut rdata, text_rva + end);
        put32(&mut rdata, unwind_rva);
    }
    let pdata_size = rdata.len() - pdata_at;

    let mut export_at = None;
    let mut export_size = 0;
    if spec.exports {
        pad_to(&mut rdata, 4);
        let at = rdata.len();
        export_at = Some(at);
        let mut sorted: Vec<_> = text.functions.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let n = u32_of(sorted.len());
        rdata.resize(at + 40, 0);
        let functions = rdata.len();
        for (_, start, _) in &sorted {
            put32(&mut rdata, text_rva + start);
        }
        let names = rdata.len();
        rdata.resize(names + sorted.len() * 4, 0);
        let ordinals = rdata.len();
        for i in 0..sorted.len() {
            put16(&mut rdata, u16::try_from(i).unwrap());
        }
        let module_name = rdata.len();
        rdata.extend_from_slice(b"test.sys\0");
        for (i, (name, _, _)) in sorted.iter().enumerate() {
            let rva = rdata_rva + u32_of(rdata.len());
            rdata[names + i * 4..names + i * 4 + 4].copy_from_slice(&rva.to_le_bytes());
            rdata.extend_from_slice(name.as_bytes());
            rdata.push(0);
        }
        let header: [u32; 10] = [
            0,
            0,
            0,
            rdata_rva + u32_of(module_name),
            1,
            n,
            n,
            rdata_rva + u32_of(functions),
            rdata_rva + u32_of(names),
            rdata_rva + u32_of(ordinals),
        ];
        // Characteristics, TimeDateStamp, Major/MinorVersion (one u32), then the rest.
        for (i, value) in header.iter().enumerate() {
            rdata[at + i * 4..at + i * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        export_size = rdata.len() - at;
    }

    // The debug directory: one CodeView entry, its record (PointerToRawData patched below).
    pad_to(&mut rdata, 4);
    let debug_at = rdata.len();
    rdata.resize(debug_at + 28, 0);
    let codeview_at = rdata.len();
    rdata.extend_from_slice(b"RSDS");
    rdata.extend_from_slice(&CODEVIEW_GUID);
    put32(&mut rdata, CODEVIEW_AGE);
    rdata.extend_from_slice(CODEVIEW_PATH.as_bytes());
    rdata.push(0);
    let codeview_size = rdata.len() - codeview_at;
    rdata[debug_at + 12..debug_at + 16].copy_from_slice(&2_u32.to_le_bytes());
    rdata[debug_at + 16..debug_at + 20].copy_from_slice(&u32_of(codeview_size).to_le_bytes());
    rdata[debug_at + 20..debug_at + 24]
        .copy_from_slice(&(rdata_rva + u32_of(codeview_at)).to_le_bytes());
    let rdata_size = rdata.len();

    // ---- .data: a pointer to GLOBAL_VALUE, relocated.
    let data_rva = rdata_rva + u32_of(align(rdata_size, SECTION_ALIGNMENT));
    let mut data = Vec::new();
    put64(&mut data, IMAGE_BASE + u64::from(global_rva));
    put64(&mut data, 0);
    let data_pointer_rva = data_rva;

    // ---- .reloc: one block for the .data page.
    let reloc_rva = data_rva + u32_of(align(data.len(), SECTION_ALIGNMENT));
    let mut entries = vec![0xA000_u16];
    entries.extend_from_slice(&spec.extra_relocations);
    if entries.len() % 2 != 0 {
        entries.push(0);
    }
    let mut reloc = Vec::new();
    put32(&mut reloc, data_rva);
    put32(&mut reloc, u32_of(8 + entries.len() * 2));
    for e in entries {
        put16(&mut reloc, e);
    }
    let size_of_image = reloc_rva + u32_of(align(reloc.len(), SECTION_ALIGNMENT));

    // ---- Patch RIP-relative displacements.
    for (at, target) in &text.fixups {
        let target = match target {
            Target::Iat(i) => iat_rvas[*i],
            Target::DataPointer => data_pointer_rva,
        };
        let next = i64::from(text_rva) + i64::try_from(*at).unwrap() + 4;
        let disp = i32::try_from(i64::from(target) - next).unwrap();
        text.code[*at..*at + 4].copy_from_slice(&disp.to_le_bytes());
    }

    // ---- Headers and file layout.
    let bodies: [(&[u8], u32, u32, [u8; 8]); 4] = [
        (&text.code, text_rva, SCN_TEXT, *b".text\0\0\0"),
        (&rdata, rdata_rva, SCN_RDATA, *b".rdata\0\0"),
        (&data, data_rva, SCN_DATA, *b".data\0\0\0"),
        (&reloc, reloc_rva, SCN_RELOC, *b".reloc\0\0"),
    ];
    let mut file = vec![0_u8; SIZE_OF_HEADERS as usize];
    let mut sections = Vec::new();
    for (i, (body, rva, characteristics, name)) in bodies.iter().enumerate() {
        let raw = u32_of(file.len());
        let raw_size = u32_of(align(body.len(), FILE_ALIGNMENT));
        file.extend_from_slice(body);
        file.resize(raw as usize + raw_size as usize, 0);
        let h = SECTIONS + i * 40;
        file[h..h + 8].copy_from_slice(name);
        file[h + 8..h + 12].copy_from_slice(&u32_of(body.len()).to_le_bytes());
        file[h + 12..h + 16].copy_from_slice(&rva.to_le_bytes());
        file[h + 16..h + 20].copy_from_slice(&raw_size.to_le_bytes());
        file[h + 20..h + 24].copy_from_slice(&raw.to_le_bytes());
        file[h + 36..h + 40].copy_from_slice(&characteristics.to_le_bytes());
        sections.push((*rva, raw, u32_of(body.len())));
    }

    let mut built = Built {
        bytes: file,
        functions: text
            .functions
            .iter()
            .map(|(n, s, _)| (n.clone(), text_rva + s))
            .collect(),
        sections,
        data_pointer_rva,
        global_rva,
        import_descriptors: 0,
        ilts: Vec::new(),
        reloc_block: 0,
        pdata: 0,
        export_directory: None,
        debug_entry: 0,
        codeview: 0,
        size_of_image,
    };
    let rdata_file = built.sections[RDATA].1 as usize;
    built.import_descriptors = rdata_file + descriptors_at;
    built.ilts = ilt_offsets.iter().map(|o| rdata_file + o).collect();
    built.reloc_block = built.sections[RELOC].1 as usize;
    built.pdata = rdata_file + pdata_at;
    built.export_directory = export_at.map(|o| rdata_file + o);
    built.debug_entry = rdata_file + debug_at;
    built.codeview = rdata_file + codeview_at;
    let pointer = u32_of(built.codeview);
    built.set_u32(built.debug_entry + 24, pointer);

    built.bytes[0..2].copy_from_slice(b"MZ");
    built.set_u32(0x3C, u32_of(NT));
    built.bytes[NT..NT + 4].copy_from_slice(b"PE\0\0");
    built
        .set_u16(FILE_HEADER, 0x8664)
        .set_u16(FILE_HEADER + 2, 4)
        .set_u16(FILE_HEADER + 16, 240)
        .set_u16(FILE_HEADER + 18, 0x0022);
    let entry = built.rva("DriverEntry");
    built
        .set_u16(OPT + opt::MAGIC, 0x20B)
        .set_u32(OPT + 4, u32_of(align(text_size, FILE_ALIGNMENT)))
        .set_u32(OPT + opt::ENTRY, entry)
        .set_u32(OPT + 20, text_rva)
        .set_u64(OPT + opt::IMAGE_BASE, IMAGE_BASE)
        .set_u32(OPT + opt::SECTION_ALIGNMENT, SECTION_ALIGNMENT)
        .set_u32(OPT + opt::FILE_ALIGNMENT, FILE_ALIGNMENT)
        .set_u16(OPT + 40, 10)
        .set_u16(OPT + 48, 10)
        .set_u32(OPT + opt::SIZE_OF_IMAGE, size_of_image)
        .set_u32(OPT + opt::SIZE_OF_HEADERS, SIZE_OF_HEADERS)
        .set_u16(OPT + opt::SUBSYSTEM, 1)
        .set_u16(OPT + 70, 0x0160)
        .set_u64(OPT + 72, 0x4_0000)
        .set_u64(OPT + 80, 0x1000)
        .set_u64(OPT + 88, 0x10_0000)
        .set_u64(OPT + 96, 0x1000)
        .set_u32(OPT + opt::DIRECTORY_COUNT, 16);
    if let Some(at) = export_at {
        built
            .set_u32(Built::directory(0), rdata_rva + u32_of(at))
            .set_u32(Built::directory(0) + 4, u32_of(export_size));
    }
    if !spec.imports.is_empty() {
        built
            .set_u32(Built::directory(1), rdata_rva + u32_of(descriptors_at))
            .set_u32(
                Built::directory(1) + 4,
                u32_of((spec.imports.len() + 1) * 20),
            );
    }
    built
        .set_u32(Built::directory(3), rdata_rva + u32_of(pdata_at))
        .set_u32(Built::directory(3) + 4, u32_of(pdata_size))
        .set_u32(Built::directory(5), reloc_rva)
        .set_u32(Built::directory(5) + 4, u32_of(reloc.len()))
        .set_u32(Built::directory(6), rdata_rva + u32_of(debug_at))
        .set_u32(Built::directory(6) + 4, 28);
    built
}

/// A test resolver: binds every import to `target`.
pub(crate) fn resolve_all_to(target: usize) -> impl FnMut(&str, &str) -> Option<usize> {
    move |_, _| Some(target)
}

/// A small deterministic generator for addresses and mutations.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
