//! The part of an object's BTF (`.BTF`) that BTF-resolved functions need: each `extern`
//! function (`BTF_KIND_FUNC` with extern linkage) and the module GUID its
//! `module_id:{GUID}` declaration tag names.
//!
//! A program calls a BTF-resolved function as clang compiles a call of an `extern` declared
//! in `.ksyms`: a BPF-to-BPF call (`src` 1) relocated against an undefined symbol. Before
//! `aya-obj` links the object, each such call is rewritten into the form the verifier gives
//! it, a call of a kernel function (`src` 2) whose immediate is the function's BTF type id
//! (see [`super::object`]); loading then finds the function's name and module here.
//!
//! The format (the kernel's `Documentation/bpf/btf.rst`): a header (magic `0xEB9F`, version,
//! flags, header length, then the offset and length of the type and string sections after
//! the header), types numbered from 1 in order, each a 12-byte record (name offset, info with
//! the kind in bits 24–28 and `vlen` in bits 0–15, size or type) followed by data whose size
//! depends on the kind. Only little-endian BTF is read (BPF objects built for eBPF for
//! Windows are); anything malformed is an error, never a panic.

use std::collections::BTreeMap;

use ebpf_ext_sys::ntdef::GUID;

/// `BTF_MAGIC` as a little-endian object stores it.
const MAGIC: u16 = 0xEB9F;
/// Bytes of a type's fixed record.
const TYPE_RECORD: usize = 12;
/// `BTF_KIND_FUNC`.
const KIND_FUNC: u32 = 12;
/// `BTF_KIND_DECL_TAG`.
const KIND_DECL_TAG: u32 = 17;
/// `BTF_FUNC_EXTERN`: a function's linkage (its `vlen`) when it is declared, not defined.
const FUNC_EXTERN: u32 = 2;
/// The declaration tag that names a BTF-resolved function's module.
const MODULE_TAG: &str = "module_id:";

/// An `extern` function an object's BTF declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfExtern {
    /// Its name: the name the provider publishes it under.
    pub name: String,
    /// The module its `module_id:{GUID}` tag names; `None` without such a tag.
    pub module: Option<GUID>,
}

/// Bytes of the data after a type record of `kind` with `vlen` entries; `None` for a kind
/// this reader does not know.
fn data_size(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7..=12 | 16 | 18 => 0,
        // INT, VAR, DECL_TAG.
        1 | 14 | 17 => 4,
        // ARRAY.
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// The NUL-terminated string at `offset` of the string section.
fn string_at(strings: &[u8], offset: u32) -> Result<&str, String> {
    let tail = strings
        .get(offset as usize..)
        .ok_or_else(|| format!("string offset {offset} beyond the string section"))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("string at {offset} not terminated"))?;
    core::str::from_utf8(&tail[..end]).map_err(|_| format!("string at {offset} is not UTF-8"))
}

/// A GUID written `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (either case), braces required.
pub(crate) fn parse_braced_guid(text: &str) -> Option<GUID> {
    GUID::parse(text).filter(|_| text.starts_with('{'))
}

/// The `extern` functions `btf` (the contents of an object's `.BTF` section) declares, by
/// BTF type id, each with the module its `module_id:{GUID}` declaration tag names: what
/// loading a program that calls BTF-resolved functions links them by.
///
/// # Errors
/// What is malformed: the header, a type record running past the type section, an unknown
/// kind, a string offset, or a `module_id:` tag whose GUID does not parse or that names a
/// second module for one function.
pub fn btf_externs(btf: &[u8]) -> Result<BTreeMap<u32, BtfExtern>, String> {
    let magic = btf
        .get(..2)
        .map(|m| u16::from_le_bytes([m[0], m[1]]))
        .ok_or("no BTF header")?;
    if magic != MAGIC {
        return Err(format!(
            "BTF magic {magic:#06x} (only little-endian BTF is read)"
        ));
    }
    let field = |at: usize| u32_at(btf, at).ok_or("BTF header truncated");
    let header_len = field(4)? as usize;
    if header_len < 24 {
        return Err(format!(
            "BTF header length {header_len}, less than its 24 bytes"
        ));
    }
    let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
    let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
    let section = |off: usize, len: usize, what: &str| {
        header_len
            .checked_add(off)
            .and_then(|start| Some(start..start.checked_add(len)?))
            .and_then(|range| btf.get(range))
            .ok_or_else(|| format!("BTF {what} section beyond the data"))
    };
    let types = section(type_off, type_len, "type")?;
    let strings = section(str_off, str_len, "string")?;
    let mut functions = BTreeMap::new();
    let mut tags: Vec<(u32, String)> = Vec::new();
    let (mut at, mut id) = (0usize, 1u32);
    while at < types.len() {
        let record = |field: usize| {
            u32_at(types, at + field).ok_or_else(|| format!("BTF type {id} truncated"))
        };
        let (name_off, info, size_or_type) = (record(0)?, record(4)?, record(8)?);
        let (kind, vlen) = ((info >> 24) & 0x1F, info & 0xFFFF);
        let data = data_size(kind, vlen as usize)
            .ok_or_else(|| format!("BTF type {id}: unknown kind {kind}"))?;
        let end = at
            .checked_add(TYPE_RECORD + data)
            .filter(|&end| end <= types.len())
            .ok_or_else(|| format!("BTF type {id} runs past the type section"))?;
        if kind == KIND_FUNC && vlen == FUNC_EXTERN {
            let name = string_at(strings, name_off)?.to_owned();
            if name.is_empty() {
                // It could never be found by name; the format requires one.
                return Err(format!("BTF type {id}: an extern function without a name"));
            }
            functions.insert(id, BtfExtern { name, module: None });
        } else if kind == KIND_DECL_TAG {
            let component = u32_at(types, at + TYPE_RECORD)
                .ok_or_else(|| format!("BTF type {id} truncated"))?;
            // A tag on the declaration itself (component -1), not on a parameter.
            if component == u32::MAX {
                let value = string_at(strings, name_off)?;
                if let Some(guid) = value.strip_prefix(MODULE_TAG) {
                    tags.push((size_or_type, guid.to_owned()));
                }
            }
        }
        at = end;
        id = id.checked_add(1).ok_or("more BTF types than ids")?;
    }
    for (target, text) in tags {
        let Some(function) = functions.get_mut(&target) else {
            // A module tag on something other than an extern function: not ours to read.
            continue;
        };
        let guid = parse_braced_guid(&text).ok_or_else(|| {
            format!(
                "{}: declaration tag {MODULE_TAG}{text}: not a braced GUID",
                function.name
            )
        })?;
        if function.module.is_some_and(|module| module != guid) {
            return Err(format!("{}: two module_id tags", function.name));
        }
        function.module = Some(guid);
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::{BtfExtern, btf_externs, parse_braced_guid};
    use ebpf_ext_sys::ntdef::GUID;

    /// BTF of `types` (kind, vlen, size-or-type, name, extra data) over one string table.
    pub(crate) fn btf(types: &[(u32, u32, u32, &str, &[u8])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut type_bytes = Vec::new();
        for &(kind, vlen, size_or_type, name, extra) in types {
            let name_off = if name.is_empty() {
                0
            } else {
                let off = u32::try_from(strings.len()).unwrap();
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                off
            };
            type_bytes.extend_from_slice(&name_off.to_le_bytes());
            type_bytes.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            type_bytes.extend_from_slice(&size_or_type.to_le_bytes());
            type_bytes.extend_from_slice(extra);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&0xEB9Fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        let len = |v: &Vec<u8>| u32::try_from(v.len()).unwrap();
        for v in [24, 0, len(&type_bytes), len(&type_bytes), len(&strings)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(&strings);
        out
    }

    const MODULE: &str = "module_id:{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}";
    const MINUS_ONE: &[u8] = &[0xFF; 4];

    #[test]
    fn an_extern_function_and_its_module_tag_are_found() {
        let bytes = btf(&[
            (1, 0, 8, "unsigned long long", &[0, 0, 0, 64]),
            (13, 1, 1, "", &[0, 0, 0, 0, 1, 0, 0, 0]),
            (12, 2, 2, "lookup", &[]),
            (12, 1, 2, "defined_here", &[]),
            (17, 0, 3, MODULE, MINUS_ONE),
            (17, 0, 3, "module_id:{not a guid}", &[0, 0, 0, 0]),
            (15, 1, 0, ".ksyms", &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ]);
        let functions = btf_externs(&bytes).unwrap();
        assert_eq!(
            functions.into_iter().collect::<Vec<_>>(),
            [(
                3,
                BtfExtern {
                    name: "lookup".into(),
                    module: Some(GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c)),
                }
            )],
            "the defined function and the tag on a parameter (component 0) are not read"
        );
    }

    #[test]
    fn malformed_btf_is_an_error() {
        let good = btf(&[(12, 2, 0, "f", &[]), (17, 0, 1, MODULE, MINUS_ONE)]);
        assert!(btf_externs(&good).is_ok());
        for cut in 0..good.len() {
            assert!(btf_externs(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(btf_externs(&swapped).unwrap_err().contains("magic"));
        let nameless = btf(&[(12, 2, 0, "", &[])]);
        assert!(
            btf_externs(&nameless)
                .unwrap_err()
                .contains("without a name")
        );
        let unknown = btf(&[(31, 0, 0, "", &[])]);
        assert!(
            btf_externs(&unknown)
                .unwrap_err()
                .contains("unknown kind 31")
        );
        let bad_guid = btf(&[
            (12, 2, 0, "f", &[]),
            (
                17,
                0,
                1,
                "module_id:8f6c1f83-ce4c-4b58-8b91-654a29e23b7c",
                MINUS_ONE,
            ),
        ]);
        assert!(btf_externs(&bad_guid).unwrap_err().contains("braced GUID"));
        let two = btf(&[
            (12, 2, 0, "f", &[]),
            (17, 0, 1, MODULE, MINUS_ONE),
            (
                17,
                0,
                1,
                "module_id:{00000000-0000-0000-0000-000000000001}",
                MINUS_ONE,
            ),
        ]);
        assert!(btf_externs(&two).unwrap_err().contains("two module_id"));
        let mut past = good;
        past[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(btf_externs(&past).is_err(), "a type length past the data");
    }

    #[test]
    fn braced_guids_parse_in_either_case() {
        let guid = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);
        assert_eq!(
            parse_braced_guid("{8F6C1F83-CE4C-4B58-8B91-654A29E23B7C}"),
            Some(guid)
        );
        for bad in [
            "8f6c1f83-ce4c-4b58-8b91-654a29e23b7c",
            "{8f6c1f83-ce4c-4b58-8b91654a29e23b7c}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7}",
            "{+f6c1f83-ce4c-4b58-8b91-654a29e23b7c}",
            "{}",
        ] {
            assert_eq!(parse_braced_guid(bad), None, "{bad}");
        }
    }
}
