//! ETW trace logging for extensions, on the `tracelogging` crate.
//!
//! Each extension owns its ETW provider — its own name and GUID, as netebpfext
//! (`NetEbpfExtProvider`) and ntosebpfext (`NtosEbpfExtProvider`) each have one — defined with
//! `tracelogging::define_provider!` and handed to the SDK when the driver starts:
//!
//! ```ignore
//! tracelogging::define_provider!(PROVIDER, "SampleEbpfExtProvider",
//!     id("f2f2ca01-ad02-4a07-9e90-95a2334f3692"));
//! let tracing = ebpf_ext_trace::Tracing::start(&PROVIDER)?; // unregisters when dropped
//! ebpf_ext_trace::trace_message!(Level::Informational, keyword::EXTENSION, "started");
//! ```
//!
//! The SDK's crates then log through that provider with the macros below, whose events follow
//! the C common library (`EbpfExtGenericMessage` for entry/exit and messages,
//! `EbpfExtApiError` for API failures; same levels, keywords and field names), so existing
//! capture tooling (`.wprp` profiles, `tracefmt`) keeps working.
//!
//! # Two paths, one set of events
//!
//! - In a driver (`cfg(windows)`, feature `kernel_mode`) the macros expand to
//!   `tracelogging::write_event!`: the crate's real TraceLogging encoding, through
//!   `EtwWriteTransfer`.
//! - On the host the `tracelogging` crate is a no-op, so this crate registers the provider with
//!   `EtwRegister` itself and encodes each event exactly as `write_event!` would (same metadata
//!   bytes, same payload), on the stack, for usersim's ETW capture to decode. This is the
//!   crate's only platform `cfg`.
//!
//! Because `write_event!` generates `::tracelogging::...` paths, a crate that uses these macros
//! must depend on `tracelogging` directly (as it does anyway to define its provider). Level and
//! keyword arguments must be constant expressions (`write_event!` builds a static descriptor).
//!
//! # IRQL
//! `initiate`/`terminate` (and `Tracing`): PASSIVE_LEVEL. The macros: any IRQL (arguments in
//! non-paged memory above APC_LEVEL).
#![no_std]

#[cfg(not(windows))]
#[doc(hidden)]
pub mod host;

use core::sync::atomic::{AtomicPtr, Ordering};

use ebpf_ext_sys::Result;
#[doc(hidden)]
pub use tracelogging as __tracelogging;
pub use tracelogging::{Level, Provider};

/// Keywords (the C library's `EBPF_EXT_TRACELOG_KEYWORD_*`). Bits 0x1–0x4 belong to the
/// library; an extension's own keywords take the next free power of two.
pub mod keyword {
    /// Function entry/exit events.
    pub const FUNCTION_ENTRY_EXIT: u64 = 0x1;
    /// Base (SDK) events.
    pub const BASE: u64 = 0x2;
    /// Extension events.
    pub const EXTENSION: u64 = 0x4;
    /// XDP hook.
    pub const XDP: u64 = 0x8;
    /// Bind hook.
    pub const BIND: u64 = 0x10;
    /// Sock-addr hooks.
    pub const SOCK_ADDR: u64 = 0x20;
    /// Sock-ops hook.
    pub const SOCK_OPS: u64 = 0x40;
    /// Process hook.
    pub const PROCESS: u64 = 0x80;
    /// Net-event hook.
    pub const NETEVENT: u64 = 0x100;
}

/// Event name of entry/exit and message events.
pub const GENERIC_MESSAGE_EVENT: &str = "EbpfExtGenericMessage";
/// Event name of API failure events.
pub const API_ERROR_EVENT: &str = "EbpfExtApiError";

static PROVIDER: AtomicPtr<Provider> = AtomicPtr::new(core::ptr::null_mut());

/// The provider the SDK logs through, once [`initiate`] succeeded.
#[must_use]
#[inline]
pub fn provider() -> Option<&'static Provider> {
    let p = PROVIDER.load(Ordering::Acquire);
    // SAFETY: only `&'static Provider` values are stored.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Registers `provider` with ETW and makes it the one the SDK logs through
/// (`ebpf_ext_trace_initiate`). Calling it again while registered does nothing.
///
/// # Errors
/// [`ebpf_ext_sys::Error::Api`] with `EtwRegister`'s status.
///
/// # IRQL
/// PASSIVE_LEVEL.
///
/// # Locking
/// Not reentrant: call from DriverEntry (one thread).
pub fn initiate(provider: &'static Provider) -> Result {
    if !PROVIDER.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    register(provider)?;
    PROVIDER.store(core::ptr::from_ref(provider).cast_mut(), Ordering::Release);
    Ok(())
}

/// Unregisters the provider (`ebpf_ext_trace_terminate`); does nothing if not registered. Must
/// run before the driver unloads: ETW would otherwise call back into unloaded code.
///
/// # IRQL
/// PASSIVE_LEVEL.
pub fn terminate() {
    let p = PROVIDER.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: only `&'static Provider` values are stored.
        unregister(unsafe { &*p });
    }
}

/// Tracing for the driver's lifetime: [`initiate`] on start, [`terminate`] on drop.
#[must_use = "tracing stops when this is dropped"]
pub struct Tracing(());

impl Tracing {
    /// Starts tracing through `provider`.
    ///
    /// # Errors
    /// As [`initiate`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn start(provider: &'static Provider) -> Result<Tracing> {
        initiate(provider)?;
        Ok(Tracing(()))
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        terminate();
    }
}

#[cfg(windows)]
fn register(provider: &'static Provider) -> Result {
    // SAFETY: the provider is 'static, so it outlives its registration; `initiate` never
    // registers it twice (the crate would panic).
    let status = unsafe { provider.register() };
    if status == 0 {
        Ok(())
    } else {
        Err(ebpf_ext_sys::Error::api(
            "EtwRegister",
            status.cast_signed(),
        ))
    }
}

#[cfg(windows)]
fn unregister(provider: &'static Provider) {
    let _ = provider.unregister();
}

#[cfg(not(windows))]
fn register(provider: &'static Provider) -> Result {
    host::register(provider)
}

#[cfg(not(windows))]
fn unregister(_provider: &'static Provider) {
    host::unregister();
}

/// Whether an event of `level` and `keyword` would be delivered now.
#[must_use]
#[inline]
pub fn enabled(level: Level, keyword: u64) -> bool {
    #[cfg(windows)]
    {
        provider().is_some_and(|p| p.enabled(level, keyword))
    }
    #[cfg(not(windows))]
    {
        host::enabled(level.as_int(), keyword)
    }
}

/// Writes one event through the registered provider; fields are
/// `kind("name", value)` with kind one of `str8` (`&str`), `u32`, `u64`, `bool32` (`bool`),
/// `win_ntstatus` (`i32`), `pointer` (`usize`), `guid` (`GUID`). Nothing is evaluated unless the
/// event is enabled.
#[doc(hidden)]
#[macro_export]
macro_rules! __write_event {
    ($name:tt, $level:expr, $keyword:expr, $opcode:ident, $( $kind:ident ( $field:tt, $value:expr ) ),* $(,)?) => {{
        #[cfg(windows)]
        {
            if let Some(provider) = $crate::provider() {
                ::tracelogging::write_event!(
                    provider, $name, level($level), keyword($keyword), opcode($opcode),
                    $( $kind($field, $crate::__windows_arg!($kind, $value)) ),*
                );
            }
        }
        #[cfg(not(windows))]
        {
            let level: $crate::Level = $level;
            let keyword: u64 = $keyword;
            if $crate::host::enabled(level.as_int(), keyword) {
                $crate::host::write(
                    level.as_int(),
                    keyword,
                    $crate::host::opcode::$opcode,
                    $name,
                    &[ $( $crate::host::Field::$kind($field, $value) ),* ],
                );
            }
        }
    }};
}

/// Adapts a value to what `write_event!` expects for a field kind.
#[doc(hidden)]
#[macro_export]
macro_rules! __windows_arg {
    (str8, $v:expr) => {
        $v
    };
    (bool32, $v:expr) => {
        &i32::from($v)
    };
    (guid, $v:expr) => {
        &$crate::__tracelogging::Guid::from_bytes_le(&($v).to_bytes_le())
    };
    ($kind:ident, $v:expr) => {
        &$v
    };
}

/// The enclosing function's path, for entry/exit events.
#[doc(hidden)]
#[macro_export]
macro_rules! __function_name {
    () => {{
        fn f() {}
        let name = ::core::any::type_name_of_val(&f);
        name.strip_suffix("::f").unwrap_or(name)
    }};
}

/// Function entry (`EBPF_EXT_LOG_ENTRY`): `EbpfExtGenericMessage`, Verbose, keyword
/// `FUNCTION_ENTRY_EXIT`, opcode Start, field `Enter` = the function's path.
#[macro_export]
macro_rules! trace_entry {
    () => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $crate::Level::Verbose,
            $crate::keyword::FUNCTION_ENTRY_EXIT,
            Start,
            str8("Enter", $crate::__function_name!())
        )
    };
}

/// Function exit (`EBPF_EXT_LOG_EXIT`): as [`trace_entry!`] with opcode Stop and field `Exit`.
#[macro_export]
macro_rules! trace_exit {
    () => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $crate::Level::Verbose,
            $crate::keyword::FUNCTION_ENTRY_EXIT,
            Stop,
            str8("Exit", $crate::__function_name!())
        )
    };
}

/// An NTSTATUS API failure (`EBPF_EXT_LOG_NTSTATUS_API_FAILURE`): `EbpfExtApiError`, Error,
/// fields `api` and `status`.
#[macro_export]
macro_rules! trace_api_failure {
    ($keyword:expr, $api:expr, $status:expr) => {
        $crate::__write_event!(
            "EbpfExtApiError",
            $crate::Level::Error,
            $keyword,
            Info,
            str8("api", $api),
            win_ntstatus("status", $status)
        )
    };
}

/// An API failure with a message and a string (`..._API_FAILURE_MESSAGE_STRING`): fields
/// `api`, `status`, `Message`, `string_value`.
#[macro_export]
macro_rules! trace_api_failure_message_string {
    ($keyword:expr, $api:expr, $status:expr, $message:expr, $string:expr) => {
        $crate::__write_event!(
            "EbpfExtApiError",
            $crate::Level::Error,
            $keyword,
            Info,
            str8("api", $api),
            win_ntstatus("status", $status),
            str8("Message", $message),
            str8("string_value", $string)
        )
    };
}

/// A message (`EBPF_EXT_LOG_MESSAGE`): `EbpfExtGenericMessage`, field `Message`.
#[macro_export]
macro_rules! trace_message {
    ($level:expr, $keyword:expr, $message:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message)
        )
    };
}

/// A message with a status (`EBPF_EXT_LOG_MESSAGE_NTSTATUS`): fields `Message`, `status`.
#[macro_export]
macro_rules! trace_message_status {
    ($level:expr, $keyword:expr, $message:expr, $status:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            win_ntstatus("status", $status)
        )
    };
}

/// A message with a string (`EBPF_EXT_LOG_MESSAGE_STRING`): fields `Message`, `string_value`.
#[macro_export]
macro_rules! trace_message_string {
    ($level:expr, $keyword:expr, $message:expr, $string:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            str8("string_value", $string)
        )
    };
}

/// A message with a `u64` (`EBPF_EXT_LOG_MESSAGE_UINT64`): fields `Message`, `value`.
#[macro_export]
macro_rules! trace_message_value {
    ($level:expr, $keyword:expr, $message:expr, $value:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            u64("value", $value)
        )
    };
}

/// A message with a `u32` (`EBPF_EXT_LOG_MESSAGE_UINT32`): fields `Message`, `value`.
#[macro_export]
macro_rules! trace_message_u32 {
    ($level:expr, $keyword:expr, $message:expr, $value:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            u32("value", $value)
        )
    };
}

/// A message with a `bool` (`EBPF_EXT_LOG_MESSAGE_BOOL`): fields `Message`, `value`.
#[macro_export]
macro_rules! trace_message_bool {
    ($level:expr, $keyword:expr, $message:expr, $value:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            bool32("value", $value)
        )
    };
}

/// A message with a pointer (`EBPF_EXT_LOG_MESSAGE_POINTER`): fields `Message`, `value`.
#[macro_export]
macro_rules! trace_message_pointer {
    ($level:expr, $keyword:expr, $message:expr, $value:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            pointer("value", $value)
        )
    };
}

/// A message with a GUID and a status (`EBPF_EXT_LOG_MESSAGE_GUID_STATUS`): fields `Message`,
/// `guid`, `Status`.
#[macro_export]
macro_rules! trace_message_guid_status {
    ($level:expr, $keyword:expr, $message:expr, $guid:expr, $status:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            guid("guid", $guid),
            win_ntstatus("Status", $status)
        )
    };
}

/// Expands every macro once so driver-target checks compile the `write_event!` expansions.
#[doc(hidden)]
pub fn __expand_all_macros(guid: ebpf_ext_sys::ntdef::GUID) {
    trace_entry!();
    trace_exit!();
    trace_api_failure!(keyword::BASE, "Api", 0);
    trace_api_failure_message_string!(keyword::BASE, "Api", 0, "message", "string");
    trace_message!(Level::Informational, keyword::BASE, "message");
    trace_message_status!(Level::Warning, keyword::BASE, "message", 0);
    trace_message_string!(Level::Verbose, keyword::BASE, "message", "string");
    trace_message_value!(Level::Verbose, keyword::BASE, "message", 1u64);
    trace_message_u32!(Level::Verbose, keyword::BASE, "message", 1u32);
    trace_message_bool!(Level::Verbose, keyword::BASE, "message", true);
    trace_message_pointer!(Level::Verbose, keyword::BASE, "message", 0usize);
    trace_message_guid_status!(Level::Verbose, keyword::BASE, "message", guid, 0);
}
