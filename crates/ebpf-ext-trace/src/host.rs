//! The host event path: registers the provider with `EtwRegister` (usersim on the host),
//! follows its enable callback, and encodes each event byte for byte as
//! `tracelogging::write_event!` does, then calls `EtwWriteTransfer`.
//!
//! Encoding (from the `tracelogging` macros' event generator, for the field kinds used here):
//! - provider metadata: the provider's own [`Provider::raw_meta`] (descriptor type 2);
//! - event metadata (descriptor type 1): `u16` total size, the event tag (no tag: one 0
//!   byte), the NUL-terminated event name, then per field the NUL-terminated field name and
//!   its `InType` byte, with bit 7 set and an `OutType` byte following when the kind's
//!   `OutType` is not Default (`str8`: Str8 + Utf8; `win_ntstatus`: Hex32 + NtStatus);
//! - payload (type 0): scalars little-endian, `str8` as a `u16` byte count then the bytes;
//!   `bool32` as an `i32`; `pointer` as HexSize (Hex64 on x64); `guid` in its in-memory form;
//! - event descriptor: id 0, version 0, channel 11 (TraceLogging), the level, the opcode,
//!   task 0, the keyword.
//!
//! The crate writes the payload through one descriptor per value (and one per length); usersim
//! concatenates payload descriptors, so one descriptor holding the same bytes is equivalent.
//!
//! Events are built on the stack: event metadata up to [`META_CAPACITY`] bytes, payload up to
//! [`DATA_CAPACITY`]. The payload room left after every field's fixed part goes to the
//! strings in field order; a string that does not fit is cut (at a UTF-8 character boundary).
//! A field whose name or fixed part does not fit at all is left out of both metadata and
//! payload (never with this crate's macros), so what is written always decodes.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ebpf_ext_sys::host::kernel_local;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{
    EVENT_CONTROL_CODE_DISABLE_PROVIDER, EVENT_CONTROL_CODE_ENABLE_PROVIDER, EVENT_DATA_DESCRIPTOR,
    EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA, EVENT_DATA_DESCRIPTOR_TYPE_NONE,
    EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA, EVENT_DESCRIPTOR, EVENT_FILTER_DESCRIPTOR,
    EtwRegister, EtwSetInformation, EtwUnregister, EtwWriteTransfer, EventProviderSetTraits,
    REGHANDLE,
};
use ebpf_ext_sys::{Error, Result};
use tracelogging::Provider;

use crate::Registration;

/// Largest event metadata built (bytes).
pub const META_CAPACITY: usize = 256;
/// Largest payload built (bytes).
pub const DATA_CAPACITY: usize = 512;
/// Fields beyond this many are left out.
pub const MAX_FIELDS: usize = 16;

/// `InType` U32.
const IN_U32: u8 = 8;
/// `InType` U64.
const IN_U64: u8 = 10;
/// `InType` Bool32.
const IN_BOOL32: u8 = 13;
/// `InType` Guid.
const IN_GUID: u8 = 15;
/// `InType` Hex32.
const IN_HEX32: u8 = 20;
/// `InType` Hex64.
const IN_HEX64: u8 = 21;
/// `InType` Str8.
const IN_STR8: u8 = 23;
/// `InType` flag: an `OutType` byte follows.
const OUT_TYPE_FOLLOWS: u8 = 0x80;
/// `OutType` NtStatus.
const OUT_NT_STATUS: u8 = 14;
/// `OutType` Utf8.
const OUT_UTF8: u8 = 35;
/// `InType` HexSize, as `tracelogging::InType::HexSize` resolves it for this target.
const IN_HEX_SIZE: u8 = if size_of::<usize>() == 8 {
    IN_HEX64
} else {
    IN_HEX32
};
/// `WINEVENT_CHANNEL_TRACELOGGING` (`tracelogging::Channel::TraceLogging`).
const CHANNEL_TRACELOGGING: u8 = 11;

/// What a driver keeps in globals for its ETW provider, kept per simulated kernel on the host
/// (see [`with_state`]). All-zero is the initial state: unregistered, disabled.
#[repr(C)]
pub(crate) struct HostState {
    /// Which provider the SDK logs through ([`initiate`](crate::initiate)'s state).
    pub(crate) registration: Registration,
    /// Registration handle (0: not registered).
    handle: AtomicU64,
    /// Enabled level plus one, 0 when disabled (the `tracelogging` crate keeps the level,
    /// -1 when disabled).
    level: AtomicU32,
    match_any: AtomicU64,
    match_all: AtomicU64,
}

/// Its address names this crate's storage in every kernel.
static STATE_KEY: u8 = 0;

/// Runs `f` with the state of the simulated kernel bound to the calling thread; `None` when no
/// kernel is bound (nothing registered, nothing enabled there).
#[inline]
pub(crate) fn with_state<R>(f: impl FnOnce(&HostState) -> R) -> Option<R> {
    // SAFETY: all-zero bytes are a valid `HostState` (atomics, a NULL pointer), which is only
    // ever written through atomics; this is the only call with `STATE_KEY`; the reference is
    // used only inside `f`, while the calling thread's binding keeps the kernel alive.
    let state = unsafe { kernel_local::<HostState>(ptr::from_ref(&STATE_KEY).cast()) }?;
    Some(f(state))
}

/// Opcodes the macros use, named as `write_event!`'s `opcode()` shorthands.
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

/// A field, named as `write_event!`'s field kinds: `kind(name, value)`.
#[expect(non_camel_case_types, reason = "named as write_event!'s field kinds")]
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Counted UTF-8 string (Str8 + OutType Utf8).
    str8(&'a str, &'a str),
    /// U32.
    u32(&'a str, u32),
    /// U64.
    u64(&'a str, u64),
    /// Bool32 (written as an `i32` 0 or 1).
    bool32(&'a str, bool),
    /// Hex32 + OutType NtStatus.
    win_ntstatus(&'a str, i32),
    /// HexSize (Hex64 on x64).
    pointer(&'a str, usize),
    /// GUID.
    guid(&'a str, GUID),
}

/// One field's encoding: name, `InType` (+ `OutType`) bytes, fixed payload, string payload.
struct Parts<'a> {
    name: &'a str,
    types: &'static [u8],
    fixed: [u8; 16],
    fixed_len: usize,
    string: Option<&'a [u8]>,
}

impl<'a> Parts<'a> {
    fn of(field: &Field<'a>) -> Parts<'a> {
        let mut fixed = [0u8; 16];
        let (name, types, fixed_len, string): (_, &'static [u8], _, _) = match *field {
            Field::str8(name, value) => (
                name,
                &[IN_STR8 | OUT_TYPE_FOLLOWS, OUT_UTF8],
                0,
                Some(value.as_bytes()),
            ),
            Field::u32(name, v) => {
                fixed[..4].copy_from_slice(&v.to_le_bytes());
                (name, &[IN_U32], 4, None)
            }
            Field::u64(name, v) => {
                fixed[..8].copy_from_slice(&v.to_le_bytes());
                (name, &[IN_U64], 8, None)
            }
            Field::bool32(name, v) => {
                fixed[..4].copy_from_slice(&i32::from(v).to_le_bytes());
                (name, &[IN_BOOL32], 4, None)
            }
            Field::win_ntstatus(name, v) => {
                fixed[..4].copy_from_slice(&v.to_le_bytes());
                (name, &[IN_HEX32 | OUT_TYPE_FOLLOWS, OUT_NT_STATUS], 4, None)
            }
            Field::pointer(name, v) => {
                let bytes = v.to_le_bytes();
                fixed[..bytes.len()].copy_from_slice(&bytes);
                (name, &[IN_HEX_SIZE], bytes.len(), None)
            }
            Field::guid(name, v) => {
                fixed.copy_from_slice(&v.to_bytes_le());
                (name, &[IN_GUID], 16, None)
            }
        };
        Parts {
            name,
            types,
            fixed,
            fixed_len,
            string,
        }
    }

    /// Metadata bytes of the field.
    fn meta_len(&self) -> usize {
        self.name.len() + 1 + self.types.len()
    }

    /// Payload bytes of the field, strings counted as empty.
    fn fixed_data_len(&self) -> usize {
        self.fixed_len + if self.string.is_some() { 2 } else { 0 }
    }
}

/// The enable callback: keeps the enablement as `tracelogging`'s provider context does, in
/// the [`HostState`] registered as its context.
unsafe extern "win64" fn enable_callback(
    _source: *const GUID,
    control_code: u32,
    level: u8,
    match_any: u64,
    match_all: u64,
    _filter: *const EVENT_FILTER_DESCRIPTOR,
    context: *mut c_void,
) {
    // SAFETY: `register` passes the kernel's `HostState` as the context; it lives as long as
    // the kernel, and ETW calls no callback after `EtwUnregister` returned or the kernel went.
    let Some(state) = (unsafe { context.cast::<HostState>().as_ref() }) else {
        return;
    };
    match control_code {
        EVENT_CONTROL_CODE_ENABLE_PROVIDER => {
            state.match_any.store(match_any, Ordering::Relaxed);
            state.match_all.store(match_all, Ordering::Relaxed);
            state.level.store(u32::from(level) + 1, Ordering::Release);
        }
        EVENT_CONTROL_CODE_DISABLE_PROVIDER => state.level.store(0, Ordering::Release),
        _ => {}
    }
}

/// `EtwRegister`, then `EtwSetInformation(EventProviderSetTraits, raw_meta)` as
/// `Provider::register` does (its status ignored, as the crate ignores it).
pub(crate) fn register(provider: &'static Provider) -> Result {
    with_state(|state| register_in(state, provider)).unwrap_or_else(|| {
        // No kernel bound: this `EtwRegister` stops the test, naming itself.
        // SAFETY: NULL arguments, which EtwRegister rejects.
        let status = unsafe { EtwRegister(ptr::null(), None, ptr::null_mut(), ptr::null_mut()) };
        Err(Error::api("EtwRegister", status))
    })
}

fn register_in(state: &HostState, provider: &'static Provider) -> Result {
    let id = GUID::from_bytes_le(provider.id().to_bytes_le());
    let mut handle: REGHANDLE = 0;
    state.level.store(0, Ordering::Release);
    // SAFETY: the id and the out pointer are live locals; the callback is a function that
    // lives as long as the program, and its context, the kernel's `HostState`, as long as the
    // kernel, longer than the registration.
    let status = unsafe {
        EtwRegister(
            &raw const id,
            Some(enable_callback),
            ptr::from_ref(state).cast_mut().cast(),
            &raw mut handle,
        )
    };
    if status != STATUS_SUCCESS {
        state.level.store(0, Ordering::Release);
        return Err(Error::api("EtwRegister", status));
    }
    let meta = provider.raw_meta();
    let len = u32::try_from(meta.len()).unwrap_or(u32::MAX);
    // SAFETY: a live handle; the metadata is 'static and `len` bytes long.
    let _ = unsafe { EtwSetInformation(handle, EventProviderSetTraits, meta.as_ptr().cast(), len) };
    state.handle.store(handle, Ordering::Release);
    Ok(())
}

/// `EtwUnregister`, if registered.
pub(crate) fn unregister() {
    with_state(|state| {
        let handle = state.handle.swap(0, Ordering::AcqRel);
        if handle != 0 {
            // SAFETY: a handle from EtwRegister, unregistered once (the swap above).
            let _ = unsafe { EtwUnregister(handle) };
        }
        // After EtwUnregister: a callback it waited for may have enabled the provider again.
        state.level.store(0, Ordering::Release);
    });
}

/// Whether a session wants an event of this level and keyword, as
/// `tracelogging::Provider::enabled` decides (`level <= enabled level`, and the keyword rule).
#[must_use]
#[inline]
pub fn enabled(level: u8, keyword: u64) -> bool {
    with_state(|state| {
        let enabled = state.level.load(Ordering::Acquire);
        if enabled == 0 || state.handle.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let any = state.match_any.load(Ordering::Relaxed);
        let all = state.match_all.load(Ordering::Relaxed);
        u32::from(level) < enabled && (keyword == 0 || (keyword & any != 0 && keyword & all == all))
    })
    .unwrap_or(false)
}

/// A fixed-capacity byte buffer on the stack.
struct Buffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Buffer<N> {
    const fn new() -> Self {
        Buffer {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `data`; the caller checked that it fits.
    fn put(&mut self, data: &[u8]) {
        self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut n = max;
    // UTF-8 continuation bytes are 0b10xx_xxxx; a cut before one would split a character.
    while n > 0 && s[n] & 0xC0 == 0x80 {
        n -= 1;
    }
    &s[..n]
}

/// Encodes the event metadata and payload; false if not even the event name fits.
fn encode<const M: usize, const D: usize>(
    name: &str,
    fields: &[Field<'_>],
    meta: &mut Buffer<M>,
    data: &mut Buffer<D>,
) -> bool {
    // Size (patched below), event tag 0, name, NUL.
    if 3 + name.len() + 1 > M {
        return false;
    }
    meta.put(&[0, 0, 0]);
    meta.put(name.as_bytes());
    meta.put(&[0]);

    // Which fields fit, with what every field but the strings' text needs.
    let mut included = [false; MAX_FIELDS];
    let (mut meta_len, mut fixed_len) = (meta.len, 0);
    for (slot, field) in included.iter_mut().zip(fields) {
        let parts = Parts::of(field);
        if meta_len + parts.meta_len() <= M && fixed_len + parts.fixed_data_len() <= D {
            *slot = true;
            meta_len += parts.meta_len();
            fixed_len += parts.fixed_data_len();
        }
    }

    // Strings share the rest of the payload, in field order.
    let mut string_room = D - fixed_len;
    for (field, _) in fields.iter().zip(included).filter(|(_, keep)| *keep) {
        let parts = Parts::of(field);
        meta.put(parts.name.as_bytes());
        meta.put(&[0]);
        meta.put(parts.types);
        data.put(&parts.fixed[..parts.fixed_len]);
        if let Some(s) = parts.string {
            let s = cut(s, string_room.min(usize::from(u16::MAX)));
            string_room -= s.len();
            let count = u16::try_from(s.len()).unwrap_or(u16::MAX);
            data.put(&count.to_le_bytes());
            data.put(s);
        }
    }
    let size = u16::try_from(meta.len).unwrap_or(u16::MAX).to_le_bytes();
    meta.bytes[..2].copy_from_slice(&size);
    true
}

fn descriptor(bytes: &[u8], kind: u32) -> EVENT_DATA_DESCRIPTOR {
    EVENT_DATA_DESCRIPTOR {
        Ptr: bytes.as_ptr() as u64,
        Size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        Reserved: kind,
    }
}

/// Encodes and writes one event (the macros call it after [`enabled`] said yes).
pub fn write(level: u8, keyword: u64, opcode: u8, name: &str, fields: &[Field<'_>]) {
    let handle = with_state(|state| state.handle.load(Ordering::Acquire)).unwrap_or(0);
    let Some(provider) = crate::provider() else {
        return;
    };
    if handle == 0 {
        return;
    }
    let (mut meta, mut data) = (
        Buffer::<META_CAPACITY>::new(),
        Buffer::<DATA_CAPACITY>::new(),
    );
    if !encode(name, fields, &mut meta, &mut data) {
        return;
    }
    let descriptors = [
        descriptor(
            provider.raw_meta(),
            EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA,
        ),
        descriptor(meta.as_slice(), EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA),
        descriptor(data.as_slice(), EVENT_DATA_DESCRIPTOR_TYPE_NONE),
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
    // SAFETY: the event descriptor and the data descriptors point to live stack buffers and
    // 'static provider metadata for the duration of the call; no activity ids.
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

/// The event metadata and payload bytes [`write`] would produce, for tests that compare them
/// with the `tracelogging` crate's layout.
#[must_use]
pub fn encode_for_test(
    name: &str,
    fields: &[Field<'_>],
) -> ([u8; META_CAPACITY], usize, [u8; DATA_CAPACITY], usize) {
    let (mut meta, mut data) = (
        Buffer::<META_CAPACITY>::new(),
        Buffer::<DATA_CAPACITY>::new(),
    );
    let _ = encode(name, fields, &mut meta, &mut data);
    (meta.bytes, meta.len, data.bytes, data.len)
}
