//! The host event path: registers the provider with `EtwRegister` (usersim on the host) and
//! encodes each event byte for byte as `tracelogging::write_event!` does, then calls
//! `EtwWriteTransfer`.
//!
//! Encoding (from the `tracelogging` crate's generator): provider metadata is the provider's
//! own `raw_meta()`; event metadata is a `u16` total size, the event tag (one 0 byte), the
//! NUL-terminated event name, then per field the NUL-terminated name and its `InType` byte,
//! with bit 7 set and an `OutType` byte following when the field kind has a non-default
//! `OutType` (`str8`: Str8 + Utf8; `win_ntstatus`: Hex32 + NtStatus). Payload: scalars
//! little-endian, `str8` as a `u16` byte count and the bytes. The event descriptor has id 0,
//! version 0, channel 11 (TraceLogging), task 0.
//!
//! Events are built on the stack: metadata up to [`META_CAPACITY`] bytes, payload up to
//! [`DATA_CAPACITY`]; a field that does not fit is dropped from both (strings are shortened
//! first), so what is written always decodes.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{
    EVENT_DATA_DESCRIPTOR, EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA,
    EVENT_DATA_DESCRIPTOR_TYPE_NONE, EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA,
    EVENT_DESCRIPTOR, EVENT_FILTER_DESCRIPTOR, EtwRegister, EtwSetInformation, EtwUnregister,
    EtwWriteTransfer, EventProviderSetTraits, REGHANDLE,
};
use ebpf_ext_sys::{Error, Result};

/// Largest event metadata built.
pub const META_CAPACITY: usize = 256;
/// Largest payload built.
pub const DATA_CAPACITY: usize = 512;
/// `InType` Str8.
const STR8: u8 = 23;
/// `InType` Hex32.
const HEX32: u8 = 20;
/// `InType` flag: an `OutType` byte follows.
const OUT_TYPE_FOLLOWS: u8 = 0x80;
/// `OutType` Utf8.
const OUT_UTF8: u8 = 35;
/// `OutType` NtStatus.
const OUT_NT_STATUS: u8 = 14;
/// `WINEVENT_CHANNEL_TRACELOGGING`.
const CHANNEL_TRACELOGGING: u8 = 11;

static HANDLE: AtomicU64 = AtomicU64::new(0);
static LEVEL: AtomicI32 = AtomicI32::new(-1);
static MATCH_ANY: AtomicU64 = AtomicU64::new(0);
static MATCH_ALL: AtomicU64 = AtomicU64::new(0);

/// Opcodes the macros use.
#[expect(
    non_upper_case_globals,
    reason = "named as write_event!'s opcode() shorthands"
)]
pub mod opcode {
    /// `Opcode::Info`.
    pub const Info: u8 = 0;
    /// `Opcode::Start`.
    pub const Start: u8 = 1;
    /// `Opcode::Stop`.
    pub const Stop: u8 = 2;
}

/// A field, named as `write_event!`'s field kinds.
#[expect(non_camel_case_types, reason = "named as write_event!'s field kinds")]
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Counted UTF-8 string (Str8 + Utf8).
    str8(&'a str, &'a str),
    /// U32.
    u32(&'a str, u32),
    /// U64.
    u64(&'a str, u64),
    /// Bool32.
    bool32(&'a str, bool),
    /// Hex32 + NtStatus.
    win_ntstatus(&'a str, i32),
    /// HexSize (Hex64 on x64).
    pointer(&'a str, usize),
    /// GUID.
    guid(&'a str, GUID),
}

unsafe extern "win64" fn enable_callback(
    _source: *const GUID,
    control_code: u32,
    level: u8,
    match_any: u64,
    match_all: u64,
    _filter: *const EVENT_FILTER_DESCRIPTOR,
    _context: *mut c_void,
) {
    match control_code {
        1 => {
            MATCH_ANY.store(match_any, Ordering::Relaxed);
            MATCH_ALL.store(match_all, Ordering::Relaxed);
            LEVEL.store(i32::from(level), Ordering::Release);
        }
        0 => LEVEL.store(-1, Ordering::Release),
        _ => {}
    }
}

pub(crate) fn register(provider: &'static tracelogging::Provider) -> Result {
    let id = GUID::from_bytes_le(provider.id().to_bytes_le());
    let mut handle: REGHANDLE = 0;
    // SAFETY: the id and out pointer are locals; the callback is a 'static function.
    let status = unsafe {
        EtwRegister(
            &raw const id,
            Some(enable_callback),
            ptr::null_mut(),
            &raw mut handle,
        )
    };
    if status != STATUS_SUCCESS {
        LEVEL.store(-1, Ordering::Release);
        return Err(Error::api("EtwRegister", status));
    }
    let meta = provider.raw_meta();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "provider metadata is at most 64 KiB"
    )]
    let len = meta.len() as u32;
    // SAFETY: a live handle; the metadata is 'static.
    let _ = unsafe { EtwSetInformation(handle, EventProviderSetTraits, meta.as_ptr().cast(), len) };
    HANDLE.store(handle, Ordering::Release);
    Ok(())
}

pub(crate) fn unregister() {
    let handle = HANDLE.swap(0, Ordering::AcqRel);
    LEVEL.store(-1, Ordering::Release);
    if handle != 0 {
        // SAFETY: a handle from EtwRegister, unregistered once.
        let _ = unsafe { EtwUnregister(handle) };
    }
}

/// Whether a session wants an event of this level and keyword (ETW's rule).
#[must_use]
#[inline]
pub fn enabled(level: u8, keyword: u64) -> bool {
    let enabled_level = LEVEL.load(Ordering::Acquire);
    if enabled_level < 0 || HANDLE.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let any = MATCH_ANY.load(Ordering::Relaxed);
    let all = MATCH_ALL.load(Ordering::Relaxed);
    i32::from(level) <= enabled_level
        && (keyword == 0 || (keyword & any != 0 && keyword & all == all))
}

struct Buffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Buffer<N> {
    fn room(&self) -> usize {
        N - self.len
    }
    fn put(&mut self, data: &[u8]) {
        self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
}

/// Metadata and payload bytes of one field (string values shortened to `max_string`).
fn field_parts<'a>(
    field: &Field<'a>,
    scratch: &'a mut [u8; 16],
) -> (&'a str, &'static [u8], &'a [u8], Option<&'a [u8]>) {
    // (name, InType[/OutType] bytes, fixed payload, string payload)
    match *field {
        Field::str8(name, value) => (
            name,
            &[STR8 | OUT_TYPE_FOLLOWS, OUT_UTF8],
            &[],
            Some(value.as_bytes()),
        ),
        Field::u32(name, v) => {
            scratch[..4].copy_from_slice(&v.to_le_bytes());
            (name, &[8], &scratch[..4], None)
        }
        Field::u64(name, v) => {
            scratch[..8].copy_from_slice(&v.to_le_bytes());
            (name, &[10], &scratch[..8], None)
        }
        Field::bool32(name, v) => {
            scratch[..4].copy_from_slice(&i32::from(v).to_le_bytes());
            (name, &[13], &scratch[..4], None)
        }
        Field::win_ntstatus(name, v) => {
            scratch[..4].copy_from_slice(&v.to_le_bytes());
            (
                name,
                &[HEX32 | OUT_TYPE_FOLLOWS, OUT_NT_STATUS],
                &scratch[..4],
                None,
            )
        }
        Field::pointer(name, v) => {
            scratch[..8].copy_from_slice(&(v as u64).to_le_bytes());
            (name, &[21], &scratch[..8], None)
        }
        Field::guid(name, v) => {
            scratch.copy_from_slice(&v.to_bytes_le());
            (name, &[15], &scratch[..], None)
        }
    }
}

/// Encodes the event metadata and payload into the buffers; returns false if even the event
/// name does not fit.
fn encode<const M: usize, const D: usize>(
    name: &str,
    fields: &[Field<'_>],
    meta: &mut Buffer<M>,
    data: &mut Buffer<D>,
) -> bool {
    meta.put(&[0, 0, 0]); // size (patched below), event tag 0
    if name.len() + 1 > meta.room() {
        return false;
    }
    meta.put(name.as_bytes());
    meta.put(&[0]);
    for field in fields {
        let mut scratch = [0u8; 16];
        let (field_name, types, fixed, string) = field_parts(field, &mut scratch);
        let meta_need = field_name.len() + 1 + types.len();
        let data_need = fixed.len() + string.map_or(0, |_| 2);
        if meta_need > meta.room() || data_need > data.room() {
            continue;
        }
        meta.put(field_name.as_bytes());
        meta.put(&[0]);
        meta.put(types);
        data.put(fixed);
        if let Some(s) = string {
            let n = s.len().min(data.room() - 2).min(usize::from(u16::MAX));
            #[expect(clippy::cast_possible_truncation, reason = "n ≤ u16::MAX")]
            data.put(&(n as u16).to_le_bytes());
            data.put(&s[..n]);
        }
    }
    #[expect(clippy::cast_possible_truncation, reason = "META_CAPACITY < 64 KiB")]
    let size = (meta.len as u16).to_le_bytes();
    meta.bytes[..2].copy_from_slice(&size);
    true
}

/// Encodes and writes one event (after [`enabled`] said yes).
pub fn write(level: u8, keyword: u64, opcode: u8, name: &str, fields: &[Field<'_>]) {
    let handle = HANDLE.load(Ordering::Acquire);
    let Some(provider) = crate::provider() else {
        return;
    };
    if handle == 0 {
        return;
    }
    let mut meta = Buffer::<META_CAPACITY> {
        bytes: [0; META_CAPACITY],
        len: 0,
    };
    let mut data = Buffer::<DATA_CAPACITY> {
        bytes: [0; DATA_CAPACITY],
        len: 0,
    };
    if !encode(name, fields, &mut meta, &mut data) {
        return;
    }
    let provider_meta = provider.raw_meta();
    let descriptor = |bytes: &[u8], kind: u32| EVENT_DATA_DESCRIPTOR {
        Ptr: bytes.as_ptr() as u64,
        #[expect(
            clippy::cast_possible_truncation,
            reason = "all blobs are far below 4 GiB"
        )]
        Size: bytes.len() as u32,
        Reserved: kind,
    };
    let descriptors = [
        descriptor(provider_meta, EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA),
        descriptor(
            &meta.bytes[..meta.len],
            EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA,
        ),
        descriptor(&data.bytes[..data.len], EVENT_DATA_DESCRIPTOR_TYPE_NONE),
    ];
    let event = EVENT_DESCRIPTOR {
        Id: 0,
        Version: 0,
        Channel: CHANNEL_TRACELOGGING,
        Level: level,
        Opcode: opcode,
        Task: 0,
        Keyword: keyword,
    };
    // SAFETY: the descriptors point to live stack and 'static buffers for the call.
    let _ = unsafe {
        EtwWriteTransfer(
            handle,
            &raw const event,
            ptr::null(),
            ptr::null(),
            3,
            descriptors.as_ptr(),
        )
    };
}

/// The event metadata bytes [`write`] would produce (for tests comparing against the
/// `tracelogging` crate's layout).
#[must_use]
pub fn encode_for_test(
    name: &str,
    fields: &[Field<'_>],
) -> ([u8; META_CAPACITY], usize, [u8; DATA_CAPACITY], usize) {
    let mut meta = Buffer::<META_CAPACITY> {
        bytes: [0; META_CAPACITY],
        len: 0,
    };
    let mut data = Buffer::<DATA_CAPACITY> {
        bytes: [0; DATA_CAPACITY],
        len: 0,
    };
    let _ = encode(name, fields, &mut meta, &mut data);
    (meta.bytes, meta.len, data.bytes, data.len)
}
