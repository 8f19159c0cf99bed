//! Typed `METHOD_BUFFERED` IOCTLs: an extension names each control code's request and reply
//! types ([`Ioctl`]) and writes a handler over typed values; the SDK refuses malformed
//! requests — lengths, alignment, version, payload size, field ranges — with a status and a trace event
//! before the handler runs.
//!
//! ```ignore
//! wire! {
//!     /// `IOCTL_MY_RUN` input.
//!     pub struct RunRequest { pub version: u32, pub data_len: u32 }
//! }
//! wire! { pub struct RunReply { pub verdict: u32, pub programs_run: u32 } }
//! pub enum Run {}
//! impl Ioctl for Run {
//!     const CODE: u32 = CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
//!     type Request = RunRequest;
//!     type Reply = RunReply;
//!     const VERSION: Option<u32> = Some(1);
//!     const MAX_PAYLOAD: usize = 0x1_0000;
//!     fn payload_len(request: &RunRequest) -> Option<usize> { Some(request.data_len as usize) }
//! }
//! // In `ExtensionDriver::device_control`:
//! match request.code() {
//!     Run::CODE => request.handle::<Run>(|call| Ok(call.reply(&RunReply { verdict: 1, programs_run: 0 }))),
//!     _ => request.unknown(),
//! }
//! ```

use core::mem::{align_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use ebpf_ext_pool::PoolArray;
use ebpf_ext_sys::ntdef::{NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_BUFFER_TOO_SMALL, STATUS_DATATYPE_MISALIGNMENT, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INTERNAL_ERROR, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER,
    STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_trace::{Level, keyword, trace_message_status};

/// Plain data that crosses the user/kernel boundary as bytes. Implement it with [`wire!`](crate::wire!).
///
/// # Safety
/// The type is `repr(C)` with no padding, and every bit pattern of its bytes is a valid
/// value.
pub unsafe trait Wire: Copy + 'static {}

// SAFETY: integers have no padding and accept any bit pattern.
unsafe impl Wire for u8 {}
// SAFETY: as above.
unsafe impl Wire for u16 {}
// SAFETY: as above.
unsafe impl Wire for u32 {}
// SAFETY: as above.
unsafe impl Wire for u64 {}
// SAFETY: as above.
unsafe impl Wire for i32 {}
// SAFETY: as above.
unsafe impl Wire for i64 {}
// SAFETY: as above, element-wise; arrays have no padding between elements.
unsafe impl<T: Wire, const N: usize> Wire for [T; N] {}

/// The bytes of `value` into the start of `out`.
///
/// # Panics
/// If `out` is shorter than `T`.
pub fn write<T: Wire>(value: &T, out: &mut [u8]) {
    let out = &mut out[..size_of::<T>()];
    // SAFETY: `T: Wire` has no padding, so all of its `size_of::<T>()` bytes are initialised;
    // `out` holds that many bytes and does not overlap the borrowed `value`.
    unsafe {
        ptr::copy_nonoverlapping(
            ptr::from_ref(value).cast::<u8>(),
            out.as_mut_ptr(),
            size_of::<T>(),
        );
    };
}

/// A `T` read from the start of `bytes` (any alignment); `None` if too short.
#[must_use]
pub fn read<T: Wire>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..size_of::<T>())?;
    // SAFETY: `size_of::<T>()` readable bytes; every bit pattern is a valid `T` (`Wire`).
    Some(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Declares `repr(C)` wire structs (one or more): implements [`Wire`] for each after proving
/// at compile time that every field is [`Wire`] and that the struct has no padding, and adds
/// `SIZE`, `to_bytes` and `from_bytes`.
///
/// A field that a `#[cfg]` leaves out counts for nothing, so what remains must have no
/// padding either:
///
/// ```compile_fail
/// ebpf_extension_common::wire! {
///     #[derive(Clone, Copy)]
///     pub struct Reply { pub a: u8, #[cfg(any())] pub b: [u8; 3], pub c: u32 }
/// }
/// ```
///
/// ```
/// ebpf_extension_common::wire! {
///     #[derive(Clone, Copy)]
///     pub struct Reply { pub a: u32, #[cfg(any())] pub b: [u8; 3], pub c: u32 }
/// }
/// assert_eq!(Reply::SIZE, 8);
/// ```
#[macro_export]
macro_rules! wire {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    )+) => {$(
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $ty ),*
        }

        const _: () = {
            const fn field_is_wire<T: $crate::ioctl::Wire>() {}
            // The fields the struct has: each size counts under the field's own attributes,
            // so a field a `#[cfg]` leaves out counts for nothing (and its doc comment is
            // allowed on the statement).
            #[allow(unused_doc_comments, reason = "a field's doc comment lands on its statement")]
            const FIELDS: ::core::primitive::usize = {
                let mut __ebpf_ext_size = 0;
                $(
                    $(#[$field_meta])*
                    {
                        __ebpf_ext_size += ::core::mem::size_of::<$ty>();
                    }
                )*
                __ebpf_ext_size
            };
            $( field_is_wire::<$ty>(); )*
            ::core::assert!(
                ::core::mem::size_of::<$name>() == FIELDS,
                "a wire struct must have no padding"
            );
        };

        // SAFETY: `repr(C)`, every field `Wire` and no padding (both checked just above), so
        // the struct has no padding and accepts any bit pattern.
        unsafe impl $crate::ioctl::Wire for $name {}

        impl $name {
            /// Size on the wire.
            $vis const SIZE: ::core::primitive::usize = ::core::mem::size_of::<$name>();

            /// The bytes of this value.
            #[must_use]
            $vis fn to_bytes(self) -> [::core::primitive::u8; ::core::mem::size_of::<$name>()] {
                let mut __ebpf_ext_bytes =
                    [0 as ::core::primitive::u8; ::core::mem::size_of::<$name>()];
                $crate::ioctl::write(&self, &mut __ebpf_ext_bytes);
                __ebpf_ext_bytes
            }

            /// Reads a value from the start of `bytes` (any alignment); `None` if too short.
            #[must_use]
            $vis fn from_bytes(
                __ebpf_ext_bytes: &[::core::primitive::u8],
            ) -> ::core::option::Option<Self> {
                $crate::ioctl::read(__ebpf_ext_bytes)
            }
        }
    )+};
}

/// Declares [`Ioctl`]s, one line each: name, code, request and reply types, and optionally the
/// version the request starts with, the request field that announces the payload length (with
/// the most payload allowed), and the range each checked field must lie in.
///
/// ```ignore
/// ioctl! {
///     /// Fire the hook `count` times.
///     pub Run = IOCTL_RUN, RunRequest => RunReply, version VERSION, payload data_len up to 0x1_0000,
///         field count in 1..=64, field protocol in ..=255;
/// }
/// ```
///
/// A field out of its range is refused with `STATUS_INVALID_PARAMETER` and the trace message
/// "`<field>` out of range", before the handler runs.
#[macro_export]
macro_rules! ioctl {
    ($(
        $(#[$meta:meta])*
        $vis:vis $name:ident = $code:expr, $request:ty => $reply:ty
        $(, version $version:expr)?
        $(, payload $field:ident up to $max:expr)?
        $(, field $checked:ident in $range:expr)* ;
    )+) => {$(
        $(#[$meta])*
        #[derive(Debug)]
        $vis enum $name {}

        impl $crate::ioctl::Ioctl for $name {
            const CODE: ::core::primitive::u32 = $code;
            type Request = $request;
            type Reply = $reply;
            $(const VERSION: ::core::option::Option<::core::primitive::u32> = ::core::option::Option::Some($version);)?
            $(
                const MAX_PAYLOAD: ::core::primitive::usize = $max;
                /// The announced length; one that does not fit a `usize` (a negative
                /// signed field) counts as too long, so the request is refused.
                fn payload_len(
                    __ebpf_ext_request: &$request,
                ) -> ::core::option::Option<::core::primitive::usize> {
                    ::core::option::Option::Some(
                        <::core::primitive::usize as ::core::convert::TryFrom<_>>::try_from(
                            { __ebpf_ext_request.$field },
                        )
                        .unwrap_or(::core::primitive::usize::MAX),
                    )
                }
            )?
            fn check_fields(
                __ebpf_ext_request: &$request,
            ) -> ::core::result::Result<(), &'static ::core::primitive::str> {
                let _ = __ebpf_ext_request;
                $(
                    if !::core::ops::RangeBounds::contains(
                        &($range),
                        &{ __ebpf_ext_request.$checked },
                    ) {
                        return ::core::result::Result::Err(::core::concat!(
                            "`", ::core::stringify!($checked), "` out of range"
                        ));
                    }
                )*
                ::core::result::Result::Ok(())
            }
        }
    )+};
}

/// One control code: its request and reply types and the rules the SDK checks.
pub trait Ioctl {
    /// The control code (`CTL_CODE(…, METHOD_BUFFERED, …)`).
    const CODE: u32;
    /// The request header at the start of the input.
    type Request: Wire;
    /// The reply header at the start of the output.
    type Reply: Wire;
    /// If `Some`, the request starts with this `u32` version; another is refused with
    /// `STATUS_REVISION_MISMATCH`. [`Request::handle`] of a versioned type whose request is
    /// shorter than the version does not build.
    ///
    /// ```compile_fail
    /// # use ebpf_extension_common::ioctl::{Completion, Ioctl, Request};
    /// ebpf_extension_common::wire! {
    ///     #[derive(Clone, Copy)]
    ///     struct Short { value: u16 }
    /// }
    /// enum Versioned {}
    /// impl Ioctl for Versioned {
    ///     const CODE: u32 = 0x22_2000;
    ///     type Request = Short;
    ///     type Reply = Short;
    ///     const VERSION: Option<u32> = Some(1);
    /// }
    /// fn dispatch(request: Request<'_>) -> Completion {
    ///     request.handle::<Versioned>(|call| Ok(call.reply(&Short { value: 1 })))
    /// }
    /// let _ = dispatch as fn(Request<'_>) -> Completion;
    /// ```
    const VERSION: Option<u32> = None;
    /// Most payload bytes the input may carry after the request header.
    const MAX_PAYLOAD: usize = 0;
    /// Alignment the system buffer must have (the I/O manager's is 16); a power of two, or
    /// [`Request::handle`] of the type does not build.
    ///
    /// ```
    /// # use ebpf_extension_common::ioctl::{Completion, Ioctl, Request};
    /// ebpf_extension_common::wire! {
    ///     #[derive(Clone, Copy)]
    ///     struct Header { version: u32 }
    /// }
    /// enum Sixteen {}
    /// impl Ioctl for Sixteen {
    ///     const CODE: u32 = 0x22_2000;
    ///     type Request = Header;
    ///     type Reply = Header;
    ///     const VERSION: Option<u32> = Some(1);
    ///     const ALIGNMENT: usize = 16;
    /// }
    /// fn dispatch(request: Request<'_>) -> Completion {
    ///     request.handle::<Sixteen>(|call| Ok(call.reply(&Header { version: 1 })))
    /// }
    /// let _ = dispatch as fn(Request<'_>) -> Completion;
    /// ```
    ///
    /// Twelve does not:
    ///
    /// ```compile_fail
    /// # use ebpf_extension_common::ioctl::{Completion, Ioctl, Request};
    /// ebpf_extension_common::wire! {
    ///     #[derive(Clone, Copy)]
    ///     struct Header { version: u32 }
    /// }
    /// enum Twelve {}
    /// impl Ioctl for Twelve {
    ///     const CODE: u32 = 0x22_2000;
    ///     type Request = Header;
    ///     type Reply = Header;
    ///     const ALIGNMENT: usize = 12;
    /// }
    /// fn dispatch(request: Request<'_>) -> Completion {
    ///     request.handle::<Twelve>(|call| Ok(call.reply(&Header { version: 1 })))
    /// }
    /// let _ = dispatch as fn(Request<'_>) -> Completion;
    /// ```
    const ALIGNMENT: usize = 8;

    /// The payload length the request announces, if it announces one: the input must then be
    /// exactly the header plus that many bytes.
    fn payload_len(request: &Self::Request) -> Option<usize> {
        let _ = request;
        None
    }

    /// Checks the request's fields once everything else (lengths, alignment, version, output
    /// size) is known good; `Err(why)` refuses it with `STATUS_INVALID_PARAMETER`, `why`
    /// being the trace message.
    /// [`ioctl!`](crate::ioctl!)'s `field … in …` clauses implement it.
    ///
    /// # Errors
    /// Why the request is refused.
    fn check_fields(request: &Self::Request) -> Result<(), &'static str> {
        let _ = request;
        Ok(())
    }
}

/// A refused request: its status and why (the trace event's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The completion status: an error or warning status. A refusal with a success or
    /// informational one (`STATUS_PENDING` among them) completes with
    /// `STATUS_INTERNAL_ERROR`: a refused request neither succeeds nor stays pending.
    pub status: NTSTATUS,
    /// Why, for the trace event.
    pub why: &'static str,
}

impl Refusal {
    /// A refusal with `status` because of `why`.
    #[must_use]
    pub const fn new(status: NTSTATUS, why: &'static str) -> Self {
        Refusal { status, why }
    }

    /// A refusal of a malformed request (`STATUS_INVALID_PARAMETER`) because of `why`.
    #[must_use]
    pub const fn invalid(why: &'static str) -> Self {
        Refusal::new(STATUS_INVALID_PARAMETER, why)
    }

    /// A request that fired a hook whose invocation failed: `STATUS_NOT_FOUND` if no program
    /// ran ([`Error::ObjectNotFound`](ebpf_ext_sys::Error::ObjectNotFound)), else
    /// `STATUS_UNSUCCESSFUL` (the control devices of upstream's samples answer so).
    #[must_use]
    pub const fn from_invocation(error: ebpf_ext_sys::Error) -> Self {
        match error {
            ebpf_ext_sys::Error::ObjectNotFound => {
                Refusal::new(STATUS_NOT_FOUND, "no program attached")
            }
            _ => Refusal::new(STATUS_UNSUCCESSFUL, "program invocation failed"),
        }
    }
}

/// How a request completes: status and the number of output bytes.
///
/// Only the SDK makes one: [`Call::reply`] (`STATUS_SUCCESS` and the bytes it wrote to its
/// request's buffer) or a [`Refusal`] (its status and no bytes). A reply belongs to its
/// request: the driver glue completes a request with a reply to another one (kept from an
/// earlier request, or made over a buffer of the driver's own with [`Request::new`]) as
/// `STATUS_INTERNAL_ERROR` with no bytes. So the bytes user mode gets back are always bytes a
/// reply to that very request wrote, never the system buffer's stale pool memory. Two
/// replies are equal only if they answer the same request.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    status: NTSTATUS,
    information: usize,
    /// The [`Request::id`] of the request a reply answers; 0 for a refusal (no bytes).
    request: u64,
}

impl Completion {
    /// `IoStatus.Status`.
    #[must_use]
    pub fn status(&self) -> NTSTATUS {
        self.status
    }

    /// `IoStatus.Information`: the output bytes written.
    #[must_use]
    pub fn information(&self) -> usize {
        self.information
    }

    /// Whether this completion may complete `request`: a refusal may complete any (it has no
    /// bytes), a reply only the request it answers, and only within its output. (A reply of
    /// no bytes to another request is no refusal: it would complete this one as a success.)
    pub(crate) fn answers(&self, request: u64, output_len: usize) -> bool {
        self.request == 0 || (self.request == request && self.information <= output_len)
    }
}

impl From<Refusal> for Completion {
    /// Traces the refusal (`EbpfExtGenericMessage`, Warning, keyword `EXTENSION`, with the
    /// status) and completes with its status (`STATUS_INTERNAL_ERROR` for a success or
    /// informational one) and no output. IRQL: ≤ DISPATCH_LEVEL (tracing).
    fn from(refusal: Refusal) -> Self {
        trace_message_status!(
            Level::Warning,
            keyword::EXTENSION,
            refusal.why,
            refusal.status
        );
        Completion {
            status: if NT_SUCCESS(refusal.status) {
                STATUS_INTERNAL_ERROR
            } else {
                refusal.status
            },
            information: 0,
            request: 0,
        }
    }
}

/// Identities of requests: 0 is none, so the first is 1.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A device-control request as the SDK hands it to [`crate::driver::ExtensionDriver`]: its
/// code and its one system buffer, not yet interpreted.
pub struct Request<'a> {
    code: u32,
    buffer: &'a mut [u8],
    input_len: usize,
    output_len: usize,
    id: u64,
}

impl<'a> Request<'a> {
    /// A request over a `METHOD_BUFFERED` system buffer (`buffer.len()` = max(input, output)
    /// bytes); host tests build requests directly, with any buffer. Each request is a new one
    /// ([`Completion`]: a reply completes only the request it answers).
    #[must_use]
    pub fn new(code: u32, buffer: &'a mut [u8], input_len: usize, output_len: usize) -> Self {
        Request {
            code,
            buffer,
            input_len,
            output_len,
            id: NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// This request's identity, which its replies carry.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The control code.
    #[must_use]
    pub fn code(&self) -> u32 {
        self.code
    }

    /// Refuses an unknown control code (`STATUS_INVALID_DEVICE_REQUEST`), traced.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (tracing).
    #[must_use]
    pub fn unknown(self) -> Completion {
        Refusal::new(STATUS_INVALID_DEVICE_REQUEST, "unknown control code").into()
    }

    /// Validates the request as `I` and runs `handler` on it; a refusal (the SDK's or the
    /// handler's) completes with its status and is traced.
    ///
    /// The SDK refuses, in this order: lengths beyond the buffer and an input shorter than
    /// `I::Request` (`STATUS_INVALID_PARAMETER`); a buffer not aligned to `I::ALIGNMENT`
    /// (`STATUS_DATATYPE_MISALIGNMENT`); another version (`STATUS_REVISION_MISMATCH`); a
    /// payload over `I::MAX_PAYLOAD` or other than the request announces
    /// (`STATUS_INVALID_PARAMETER`); an output shorter than `I::Reply`
    /// (`STATUS_BUFFER_TOO_SMALL`); a field [`Ioctl::check_fields`] refuses
    /// (`STATUS_INVALID_PARAMETER`).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (tracing); `handler` runs at the caller's IRQL, PASSIVE_LEVEL in
    /// [`crate::driver::ExtensionDriver::device_control`].
    pub fn handle<I: Ioctl>(
        self,
        handler: impl FnOnce(Call<'_, I>) -> Result<Completion, Refusal>,
    ) -> Completion {
        const {
            assert!(
                I::ALIGNMENT.is_power_of_two(),
                "Ioctl::ALIGNMENT must be a power of two"
            );
            assert!(
                I::VERSION.is_none() || size_of::<I::Request>() >= size_of::<u32>(),
                "a versioned request starts with its u32 version"
            );
        }
        match self.validate::<I>().and_then(handler) {
            Ok(completion) => completion,
            Err(refusal) => refusal.into(),
        }
    }

    fn validate<I: Ioctl>(self) -> Result<Call<'a, I>, Refusal> {
        let invalid = Refusal::invalid;
        if self.buffer.len() < self.input_len.max(self.output_len) {
            return Err(invalid("lengths exceed the request buffer"));
        }
        let header = size_of::<I::Request>();
        let request = read::<I::Request>(&self.buffer[..self.input_len])
            .ok_or(invalid("input shorter than the request"))?;
        // No input and no output: the I/O manager passes no buffer, so there is nothing to
        // align (an empty slice's address says nothing).
        if !self.buffer.is_empty()
            && self
                .buffer
                .as_ptr()
                .align_offset(I::ALIGNMENT.max(align_of::<I::Request>()))
                != 0
        {
            return Err(Refusal::new(
                STATUS_DATATYPE_MISALIGNMENT,
                "request buffer misaligned",
            ));
        }
        if let Some(version) = I::VERSION
            && read::<u32>(&self.buffer[..self.input_len]) != Some(version)
        {
            return Err(Refusal::new(
                STATUS_REVISION_MISMATCH,
                "unknown request version",
            ));
        }
        let payload = self.input_len - header;
        if payload > I::MAX_PAYLOAD || I::payload_len(&request).is_some_and(|n| n > I::MAX_PAYLOAD)
        {
            return Err(invalid("payload too large"));
        }
        if I::payload_len(&request).is_some_and(|n| n != payload) {
            return Err(invalid("input length disagrees with the announced payload"));
        }
        if self.output_len < size_of::<I::Reply>() {
            return Err(Refusal::new(
                STATUS_BUFFER_TOO_SMALL,
                "output cannot hold the reply",
            ));
        }
        I::check_fields(&request).map_err(invalid)?;
        Ok(Call {
            request,
            buffer: self.buffer,
            input_len: self.input_len,
            output_len: self.output_len,
            trailing: 0,
            moved: false,
            id: self.id,
            _ioctl: core::marker::PhantomData,
        })
    }
}

/// A validated request of type `I`, lent to its handler: the request header, its payload,
/// and the output to reply through.
pub struct Call<'a, I: Ioctl> {
    request: I::Request,
    buffer: &'a mut [u8],
    input_len: usize,
    output_len: usize,
    trailing: usize,
    /// Whether [`Call::payload_in_reply`] has moved the payload behind the reply header.
    moved: bool,
    id: u64,
    _ioctl: core::marker::PhantomData<I>,
}

impl<I: Ioctl> Call<'_, I> {
    /// The request header (a copy: the reply may overwrite the input).
    #[must_use]
    pub fn request(&self) -> &I::Request {
        &self.request
    }

    /// The payload after the request header (once [`Call::payload_in_reply`] has moved it,
    /// where it is now, as the handler's code left it).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        let (header, reply) = (size_of::<I::Request>(), size_of::<I::Reply>());
        let len = self.input_len - header;
        if self.moved {
            &self.buffer[reply..reply + len]
        } else {
            &self.buffer[header..self.input_len]
        }
    }

    /// A copy of the payload in non-paged pool, for handlers whose reply overwrites it.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` if the allocation fails.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (non-paged pool).
    pub fn payload_copy(&self, tag: ebpf_ext_pool::PoolTag) -> Result<PoolArray<u8>, Refusal> {
        let mut copy = PoolArray::try_new(self.payload().len(), tag).map_err(|_| {
            Refusal::new(
                STATUS_INSUFFICIENT_RESOURCES,
                "no memory for the payload copy",
            )
        })?;
        copy.copy_from_slice(self.payload());
        Ok(copy)
    }

    /// Moves the payload to just after the reply header in the output and lends it, for
    /// handlers that reply with the payload as their code left it; the reply then includes it.
    /// Called again, it lends the same bytes without moving them again.
    ///
    /// # Errors
    /// `STATUS_BUFFER_TOO_SMALL` if the output cannot hold the reply and the payload.
    pub fn payload_in_reply(&mut self) -> Result<&mut [u8], Refusal> {
        let (header, reply) = (size_of::<I::Request>(), size_of::<I::Reply>());
        let len = self.input_len - header;
        if self.output_len < reply + len {
            return Err(Refusal::new(
                STATUS_BUFFER_TOO_SMALL,
                "output cannot hold the reply and the payload",
            ));
        }
        if !self.moved {
            self.buffer.copy_within(header..header + len, reply);
            self.moved = true;
        }
        self.trailing = len;
        Ok(&mut self.buffer[reply..reply + len])
    }

    /// Writes `reply` at the start of the output and completes with `STATUS_SUCCESS` (and
    /// the payload, if [`Call::payload_in_reply`] placed it).
    #[must_use]
    pub fn reply(self, reply: &I::Reply) -> Completion {
        write(reply, self.buffer);
        Completion {
            status: STATUS_SUCCESS,
            information: size_of::<I::Reply>() + self.trailing,
            request: self.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_invocation_is_not_found_or_unsuccessful() {
        use ebpf_ext_sys::Error;
        assert_eq!(
            Refusal::from_invocation(Error::ObjectNotFound).status,
            STATUS_NOT_FOUND
        );
        assert_eq!(
            Refusal::from_invocation(Error::Unsuccessful).status,
            STATUS_UNSUCCESSFUL
        );
    }

    crate::wire! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        struct Header { version: u32, len: u32 }
    }

    enum Echo {}
    impl Ioctl for Echo {
        const CODE: u32 = 0x22_2000;
        type Request = Header;
        type Reply = Header;
        const VERSION: Option<u32> = Some(7);
        const MAX_PAYLOAD: usize = 8;
        fn payload_len(request: &Header) -> Option<usize> {
            Some(request.len as usize)
        }
    }

    /// A request with nothing in and nothing out (a "reset"): zero-sized request and reply.
    enum Reset {}
    impl Ioctl for Reset {
        const CODE: u32 = 0x22_2004;
        type Request = [u8; 0];
        type Reply = [u8; 0];
    }

    #[test]
    fn a_request_with_no_input_and_no_output_reaches_its_handler() {
        let _kernel = ebpf_ext_usersim::Kernel::new();
        // As the I/O manager passes it: no system buffer (an empty slice, whose address is
        // not 8-aligned).
        let completion =
            Request::new(Reset::CODE, &mut [], 0, 0).handle::<Reset>(|call| Ok(call.reply(&[])));
        assert_eq!(
            (completion.status(), completion.information()),
            (STATUS_SUCCESS, 0)
        );
    }

    fn run(storage: &mut [u64; 4], offset: usize, input: &[u8], output_len: usize) -> Completion {
        let _kernel = ebpf_ext_usersim::Kernel::new();
        // SAFETY: the u64 storage viewed as its 32 bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast(), 32) };
        let buffer = &mut bytes[offset..];
        buffer[..input.len()].copy_from_slice(input);
        let len = buffer.len();
        Request::new(Echo::CODE, buffer, input.len(), output_len.min(len)).handle::<Echo>(
            |mut call| {
                let n = call.payload_in_reply()?.len();
                let reply = Header {
                    version: 7,
                    len: u32::try_from(n).unwrap_or(0),
                };
                Ok(call.reply(&reply))
            },
        )
    }

    fn request(version: u32, len: u32, payload: &[u8]) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        write(&Header { version, len }, &mut bytes);
        bytes[8..8 + payload.len()].copy_from_slice(payload);
        bytes
    }

    crate::wire! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        struct LongHeader { version: u32, len: u32, a: u32, b: u32 }
    }

    crate::ioctl! {
        Shrinking = 0x22_2008, LongHeader => Header, version 7, payload len up to 8;
    }

    /// The request header (16 bytes) is longer than the reply's (8), so moving the payload
    /// into the reply moves it down: a second move, or reading the payload afterwards, must
    /// see the bytes where they now are.
    #[test]
    fn the_payload_is_moved_into_the_reply_once_and_read_where_it_is() {
        let _kernel = ebpf_ext_usersim::Kernel::new();
        let mut storage = [0u64; 4];
        // SAFETY: the u64 storage viewed as its 32 bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast(), 32) };
        let header = LongHeader {
            version: 7,
            len: 4,
            a: 0,
            b: 0,
        }
        .to_bytes();
        let at = LongHeader::SIZE;
        bytes[..at].copy_from_slice(&header);
        bytes[at..at + 4].copy_from_slice(&[1, 2, 3, 4]);
        let completion =
            Request::new(Shrinking::CODE, bytes, at + 4, 32).handle::<Shrinking>(|mut call| {
                assert_eq!(Some(*call.request()), LongHeader::from_bytes(&header));
                assert_eq!(call.payload(), [1, 2, 3, 4]);
                call.payload_in_reply()?[0] = 9;
                assert_eq!(call.payload_in_reply()?, [9, 2, 3, 4], "not moved twice");
                assert_eq!(call.payload(), [9, 2, 3, 4], "read where it now is");
                let copy = call.payload_copy(ebpf_ext_pool::PoolTag::new(*b"IoTs"))?;
                assert_eq!(&copy[..], [9, 2, 3, 4]);
                Ok(call.reply(&Header { version: 7, len: 4 }))
            });
        assert_eq!(
            (completion.status, completion.information),
            (STATUS_SUCCESS, 12)
        );
        assert_eq!(bytes[8..12], [9, 2, 3, 4], "the reply carries the payload");
    }

    #[test]
    fn the_sdk_refuses_malformed_requests_in_order() {
        let mut s = [0u64; 4];
        let good = request(7, 2, &[1, 2]);
        let ok = run(&mut s, 0, &good[..10], 16);
        assert_eq!((ok.status, ok.information), (STATUS_SUCCESS, 10));
        assert_eq!(
            run(&mut s, 0, &good[..6], 16).status,
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            run(&mut s, 1, &good[..10], 16).status,
            STATUS_DATATYPE_MISALIGNMENT
        );
        let old = request(6, 2, &[1, 2]);
        assert_eq!(
            run(&mut s, 0, &old[..10], 16).status,
            STATUS_REVISION_MISMATCH
        );
        let big = request(7, 9, &[0; 8]);
        assert_eq!(run(&mut s, 0, &big, 24).status, STATUS_INVALID_PARAMETER);
        assert_eq!(
            run(&mut s, 0, &good[..11], 16).status,
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            run(&mut s, 0, &good[..10], 4).status,
            STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(
            run(&mut s, 0, &good[..10], 9).status,
            STATUS_BUFFER_TOO_SMALL
        );
    }

    crate::wire! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        struct SignedHeader { version: u32, len: i32 }
    }

    crate::ioctl! {
        SignedEcho = 0x22_2004, SignedHeader => SignedHeader, payload len up to 8;
    }

    #[test]
    fn a_payload_length_that_does_not_fit_is_refused_as_too_long() {
        let announced = |len| SignedEcho::payload_len(&SignedHeader { version: 0, len });
        assert_eq!(announced(2), Some(2));
        assert_eq!(
            announced(-1),
            Some(usize::MAX),
            "not `None`: no check skipped"
        );
        let _kernel = ebpf_ext_usersim::Kernel::new();
        let mut storage = [0u64; 4];
        // SAFETY: the u64 storage viewed as its 32 bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast(), 32) };
        let header = SignedHeader {
            version: 0,
            len: -1,
        };
        assert_eq!(SignedHeader::from_bytes(&header.to_bytes()), Some(header));
        bytes[..SignedHeader::SIZE].copy_from_slice(&header.to_bytes());
        let completion = Request::new(SignedEcho::CODE, bytes, SignedHeader::SIZE, 32)
            .handle::<SignedEcho>(|call| Ok(call.reply(&SignedHeader::default())));
        assert_eq!(completion.status, STATUS_INVALID_PARAMETER);
    }

    crate::ioctl! {
        Ranged = 0x22_2008, Header => Header, version 7, field len in 1..=4;
        Unbounded = 0x22_200c, Header => Header, field version in 7.., field len in ..3;
    }

    /// The macro's names hide nothing of the caller's: a constant named `request` and an
    /// `Option` of its own are in scope here.
    mod hygiene {
        #![allow(
            non_upper_case_globals,
            non_camel_case_types,
            dead_code,
            reason = "names the macros must not use"
        )]
        const request: u32 = 0;
        const bytes: u32 = 0;
        enum Option {}
        struct usize;
        struct u8;
        crate::wire! {
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub(super) struct Request { pub(super) version: u32, pub(super) len: u32 }
        }
        crate::ioctl! {
            pub(super) Hygienic = 0x22_2010, Request => Request, version 7, payload len up to 8,
                field len in 1..=4;
        }

        /// A packed request (its `Wire` written by hand): fields are read by copy.
        #[repr(C, packed)]
        #[derive(Clone, Copy)]
        pub(super) struct Packed {
            pub(super) version: u32,
            pub(super) count: u64,
        }
        // SAFETY: `repr(C, packed)` of integers: no padding, any bit pattern.
        unsafe impl crate::ioctl::Wire for Packed {}
        crate::ioctl! {
            pub(super) PackedIoctl = 0x22_2014, Packed => Packed, field count in 1..=3;
        }
    }

    #[test]
    fn the_macros_work_among_the_callers_names() {
        use hygiene::{Hygienic, Packed, PackedIoctl, Request};
        let request = Request { version: 7, len: 3 };
        assert_eq!(Request::from_bytes(&request.to_bytes()), Some(request));
        assert_eq!(Request::SIZE, 8);
        assert_eq!(Hygienic::payload_len(&request), Some(3));
        assert_eq!(Hygienic::check_fields(&request), Ok(()));
        assert_eq!(Hygienic::VERSION, Some(7));
        let packed = |count| Packed { version: 0, count };
        assert_eq!(PackedIoctl::check_fields(&packed(3)), Ok(()));
        assert_eq!(
            PackedIoctl::check_fields(&packed(4)),
            Err("`count` out of range")
        );
    }

    #[test]
    fn a_field_out_of_its_declared_range_is_refused_and_traced() {
        assert_eq!(
            Ranged::check_fields(&Header { version: 7, len: 0 }),
            Err("`len` out of range")
        );
        assert_eq!(Ranged::check_fields(&Header { version: 7, len: 4 }), Ok(()));
        assert_eq!(
            Unbounded::check_fields(&Header { version: 6, len: 0 }),
            Err("`version` out of range"),
            "each field is checked, in declaration order"
        );
        assert_eq!(
            Unbounded::check_fields(&Header { version: 9, len: 3 }),
            Err("`len` out of range")
        );
        assert_eq!(
            Echo::check_fields(&Header::default()),
            Ok(()),
            "none declared"
        );

        tracelogging::define_provider!(
            PROVIDER,
            "IoctlRangeTest",
            id("8e0c2d4a-6a51-4b7e-9f0e-3c1d2b4a5f61")
        );
        let kernel = ebpf_ext_usersim::Kernel::new();
        let tracing = ebpf_ext_trace::Tracing::start(&PROVIDER).expect("tracing");
        let mut storage = [0u64; 2];
        let mut send_to = |version: u32, len: u32, output_len: usize| {
            // SAFETY: the u64 storage viewed as its 16 bytes.
            let bytes = unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast(), 16) };
            write(&Header { version, len }, bytes);
            let mut handled = false;
            let completion = Request::new(Ranged::CODE, bytes, Header::SIZE, output_len)
                .handle::<Ranged>(|call| {
                    handled = true;
                    Ok(call.reply(&Header::default()))
                });
            (completion.status, handled)
        };
        assert_eq!(
            send_to(7, 0, 4),
            (STATUS_BUFFER_TOO_SMALL, false),
            "fields are checked last"
        );
        let mut send = |version, len| send_to(version, len, Header::SIZE);
        assert_eq!(send(7, 2), (STATUS_SUCCESS, true));
        assert_eq!(send(7, 0), (STATUS_INVALID_PARAMETER, false));
        assert_eq!(send(7, 5), (STATUS_INVALID_PARAMETER, false));
        assert_eq!(
            send(6, 0),
            (STATUS_REVISION_MISMATCH, false),
            "the version is checked first"
        );
        let refusals = kernel.etw_message_count("`len` out of range");
        assert_eq!(refusals, 2, "each refusal is traced");
        drop(tracing);
    }

    #[test]
    fn wire_structs_round_trip() {
        let header = Header { version: 1, len: 2 };
        assert_eq!(Header::from_bytes(&header.to_bytes()), Some(header));
        assert_eq!(Header::from_bytes(&[0; 7]), None);
        assert_eq!(Header::SIZE, 8);
    }
}
