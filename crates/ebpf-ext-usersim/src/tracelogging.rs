//! A decoder of TraceLogging events: provider metadata, event metadata and payload, laid out
//! as the `tracelogging` crate (and the Windows SDK's TraceLoggingProvider.h) lay them out.
//!
//! Layouts:
//! - provider metadata: `u16` total size, NUL-terminated UTF-8 name, optional traits;
//! - event metadata: `u16` total size, event tag (bytes with bit 7 meaning "another tag byte
//!   follows"), NUL-terminated event name, then per field: NUL-terminated name, `InType` byte
//!   (bits 0–4 type, 0x20 constant count: a `u16` count follows in the metadata, 0x40 variable
//!   count: a `u16` count precedes the values in the payload, 0x60 custom: a `u16` schema size
//!   and the schema follow; bit 7: an `OutType` byte follows), `OutType` byte (bits 0–6; bit 7:
//!   a field tag follows, encoded like the event tag);
//! - payload: the values in field order; counted strings and binary are a `u16` byte count then
//!   the bytes.
//!
//! Every read is bounds-checked: malformed input gives a [`DecodeError`], never a panic.

use core::fmt;

use ebpf_ext_sys::ntdef::GUID;

/// A decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any string (CStr8/16, Str8/16).
    Str(String),
    /// Signed integers (I8..I64).
    I64(i64),
    /// Unsigned integers (U8..U64, Hex32/64, FileTime).
    U64(u64),
    /// Floating point (F32/F64).
    F64(f64),
    /// Bool32.
    Bool(bool),
    /// GUID.
    Guid(GUID),
    /// Binary, BinaryC, SystemTime, Sid.
    Binary(Vec<u8>),
    /// A constant- or variable-count array.
    Array(Vec<Value>),
}

/// One decoded field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Value.
    pub value: Value,
    /// `InType` code (without flags).
    pub in_type: u8,
    /// `OutType` code (0 if none).
    pub out_type: u8,
    /// Field tag (0 if none).
    pub tag: u32,
}

/// Decoded event metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMetadata {
    /// Event name.
    pub name: String,
    /// Event tag.
    pub tag: u32,
    /// Field descriptions.
    pub fields: Vec<FieldMetadata>,
}

/// One field's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMetadata {
    /// Field name.
    pub name: String,
    /// `InType` code.
    pub in_type: u8,
    /// Count flags (0, 0x20 constant, 0x40 variable, 0x60 custom).
    pub count_flags: u8,
    /// Constant count (for 0x20).
    pub constant_count: u16,
    /// `OutType` code.
    pub out_type: u8,
    /// Field tag.
    pub tag: u32,
}

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        match self.bytes.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => err(format!("truncated {what} at offset {}", self.at)),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }
    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return err(format!("unterminated {what}"));
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(s)
    }
    fn tag(&mut self, what: &str) -> Result<u32, DecodeError> {
        let mut tag = 0u32;
        for i in 0..4 {
            let b = self.u8(what)?;
            tag |= u32::from(b & 0x7F) << (21 - 7 * i);
            if b & 0x80 == 0 {
                return Ok(tag);
            }
        }
        err(format!("{what} longer than four bytes"))
    }
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// The provider name from provider metadata (`u16` size, then the name).
///
/// # Errors
/// Truncated or inconsistent metadata.
pub fn decode_provider_metadata(meta: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader { bytes: meta, at: 0 };
    let size = usize::from(r.u16("provider metadata size")?);
    if size > meta.len() || size < 3 {
        return err(format!(
            "provider metadata size {size} does not fit {} bytes",
            meta.len()
        ));
    }
    let mut r = Reader {
        bytes: &meta[..size],
        at: 2,
    };
    r.cstr("provider name")
}

/// Decodes event metadata.
///
/// # Errors
/// Truncated or inconsistent metadata.
pub fn decode_event_metadata(meta: &[u8]) -> Result<EventMetadata, DecodeError> {
    let mut r = Reader { bytes: meta, at: 0 };
    let size = usize::from(r.u16("event metadata size")?);
    if size > meta.len() || size < 4 {
        return err(format!(
            "event metadata size {size} does not fit {} bytes",
            meta.len()
        ));
    }
    let mut r = Reader {
        bytes: &meta[..size],
        at: 2,
    };
    let tag = r.tag("event tag")?;
    let name = r.cstr("event name")?;
    let mut fields = Vec::new();
    while !r.done() {
        let field_name = r.cstr("field name")?;
        let in_byte = r.u8("field InType")?;
        let in_type = in_byte & 0x1F;
        let count_flags = in_byte & 0x60;
        let (mut out_type, mut field_tag) = (0, 0);
        if in_byte & 0x80 != 0 {
            let out_byte = r.u8("field OutType")?;
            out_type = out_byte & 0x7F;
            if out_byte & 0x80 != 0 {
                field_tag = r.tag("field tag")?;
            }
        }
        let mut constant_count = 0;
        match count_flags {
            0x20 => constant_count = r.u16("constant count")?,
            0x60 => {
                let schema = usize::from(r.u16("custom schema size")?);
                r.take(schema, "custom schema")?;
            }
            _ => {}
        }
        fields.push(FieldMetadata {
            name: field_name,
            in_type,
            count_flags,
            constant_count,
            out_type,
            tag: field_tag,
        });
    }
    Ok(EventMetadata { name, tag, fields })
}

fn scalar(r: &mut Reader<'_>, in_type: u8) -> Result<Value, DecodeError> {
    Ok(match in_type {
        1 => {
            let mut units = Vec::new();
            loop {
                let u = r.u16("CStr16")?;
                if u == 0 {
                    break;
                }
                units.push(u);
            }
            Value::Str(String::from_utf16_lossy(&units))
        }
        2 => Value::Str(r.cstr("CStr8")?),
        3 => Value::I64(i64::from(i8::from_le_bytes(r.array("I8")?))),
        4 => Value::U64(u64::from(r.u8("U8")?)),
        5 => Value::I64(i64::from(i16::from_le_bytes(r.array("I16")?))),
        6 => Value::U64(u64::from(r.u16("U16")?)),
        7 => Value::I64(i64::from(i32::from_le_bytes(r.array("I32")?))),
        8 | 20 => Value::U64(u64::from(u32::from_le_bytes(r.array("U32")?))),
        9 => Value::I64(i64::from_le_bytes(r.array("I64")?)),
        10 | 17 | 21 => Value::U64(u64::from_le_bytes(r.array("U64")?)),
        11 => Value::F64(f64::from(f32::from_le_bytes(r.array("F32")?))),
        12 => Value::F64(f64::from_le_bytes(r.array("F64")?)),
        13 => Value::Bool(u32::from_le_bytes(r.array("Bool32")?) != 0),
        14 | 25 => {
            let n = usize::from(r.u16("binary size")?);
            Value::Binary(r.take(n, "binary")?.to_vec())
        }
        15 => Value::Guid(GUID::from_bytes_le(r.array("GUID")?)),
        18 => Value::Binary(r.take(16, "SystemTime")?.to_vec()),
        19 => {
            let head: [u8; 8] = r.array("SID")?;
            let rest = r.take(4 * usize::from(head[1]), "SID sub-authorities")?;
            let mut sid = head.to_vec();
            sid.extend_from_slice(rest);
            Value::Binary(sid)
        }
        22 => {
            let n = usize::from(r.u16("Str16 size")?);
            let bytes = r.take(n, "Str16")?;
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Value::Str(String::from_utf16_lossy(&units))
        }
        23 => {
            let n = usize::from(r.u16("Str8 size")?);
            Value::Str(String::from_utf8_lossy(r.take(n, "Str8")?).into_owned())
        }
        other => return err(format!("unsupported InType {other}")),
    })
}

/// Decodes a payload against event metadata.
///
/// # Errors
/// Truncated payload, unsupported types (structs, custom schemas).
pub fn decode_payload(meta: &EventMetadata, payload: &[u8]) -> Result<Vec<Field>, DecodeError> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let mut fields = Vec::with_capacity(meta.fields.len());
    for f in &meta.fields {
        if f.in_type == 24 {
            return err(format!("field {}: struct fields are not supported", f.name));
        }
        let value = match f.count_flags {
            0 => scalar(&mut r, f.in_type)?,
            0x20 | 0x40 => {
                let count = if f.count_flags == 0x20 {
                    f.constant_count
                } else {
                    r.u16("array count")?
                };
                let mut values = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    values.push(scalar(&mut r, f.in_type)?);
                }
                Value::Array(values)
            }
            _ => {
                return err(format!(
                    "field {}: custom-schema fields are not supported",
                    f.name
                ));
            }
        };
        fields.push(Field {
            name: f.name.clone(),
            value,
            in_type: f.in_type,
            out_type: f.out_type,
            tag: f.tag,
        });
    }
    if !r.done() {
        return err(format!("{} payload bytes left over", payload.len() - r.at));
    }
    Ok(fields)
}
