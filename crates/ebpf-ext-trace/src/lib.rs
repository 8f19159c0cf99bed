//! ETW trace logging for extensions, on the `tracelogging` crate: the Rust replacement of the
//! C common library's `ebpf_ext_trace_initiate`/`_terminate` and `EBPF_EXT_LOG_*` macros.
//!
//! Each extension owns its ETW provider — its own name and GUID, as netebpfext
//! (`NetEbpfExtProvider`) and ntosebpfext (`NtosEbpfExtProvider`) each have one — defined with
//! `tracelogging::define_provider!` and handed to the SDK when the driver starts:
//!
//! ```standalone_crate
//! # use ebpf_ext_usersim as _; // host: usersim implements the kernel's ETW routines
//! # let kernel = ebpf_ext_usersim::Kernel::new();
//! use ebpf_ext_trace::{Level, keyword};
//!
//! tracelogging::define_provider!(
//!     PROVIDER,
//!     "NetEbpfExtProvider",
//!     id("f2f2ca01-ad02-4a07-9e90-95a2334f3692")
//! );
//!
//! // DriverEntry:
//! let tracing = ebpf_ext_trace::Tracing::start(&PROVIDER)?;
//! ebpf_ext_trace::trace_message!(Level::Informational, keyword::EXTENSION, "started");
//! // DriverUnload (dropping the guard unregisters the provider):
//! drop(tracing);
//! # let events = kernel.etw_events();
//! # assert_eq!(events[0].name, "EbpfExtGenericMessage");
//! # assert_eq!(events[0].provider_name.as_deref(), Some("NetEbpfExtProvider"));
//! # assert_eq!(kernel.etw_registrations(), 0);
//! # Ok::<(), ebpf_ext_sys::Error>(())
//! ```
//!
//! The SDK's crates, and the extension, then log through that provider with the macros below.
//! Their events have the C common library's names, levels, keywords, opcodes and field names,
//! so existing capture tooling (`.wprp` profiles, `tracefmt`, WPA) keeps working. Two field
//! encodings differ, which only a consumer that parses the payload bytes itself (rather than
//! through the event's metadata) would see: strings are counted UTF-8 (`str8`) where C writes
//! NUL-terminated ANSI strings, and statuses are `win_ntstatus` (hex32 shown as NTSTATUS)
//! where C writes a UINT32 shown as NTSTATUS.
//!
//! A session that enables the provider at level 0 receives only level-0 (LogAlways) events:
//! the `tracelogging` crate, which the Windows build uses, compares each event's level with
//! the session's as given, and the host build filters the same way. Enable at level 5
//! (Verbose) to receive every event.
//!
//! | Macro | C macro | Event, level, keyword | Fields |
//! |---|---|---|---|
//! | [`trace_entry!`] / [`trace_exit!`] | `EBPF_EXT_LOG_ENTRY` / `_EXIT` | `EbpfExtGenericMessage`, Verbose, `FUNCTION_ENTRY_EXIT`, opcode Start / Stop | `Enter` / `Exit` (str8): the function's path |
//! | [`trace_api_failure!`] | `EBPF_EXT_LOG_NTSTATUS_API_FAILURE` | `EbpfExtApiError`, Error, given | `api` (str8), `status` (win_ntstatus) |
//! | [`trace_api_failure_message_string!`] | `..._API_FAILURE_MESSAGE_STRING` | `EbpfExtApiError`, Error, given | `api`, `status`, `Message`, `string_value` |
//! | [`trace_message!`] | `EBPF_EXT_LOG_MESSAGE` | `EbpfExtGenericMessage`, given, given | `Message` (str8) |
//! | [`trace_message_status!`] | `..._MESSAGE_NTSTATUS` | as above | `Message`, `status` (win_ntstatus) |
//! | [`trace_message_string!`] | `..._MESSAGE_STRING` | as above | `Message`, `string_value` (str8) |
//! | [`trace_message_value!`] | `..._MESSAGE_UINT64` | as above | `Message`, `value` (u64) |
//! | [`trace_message_u32!`] | `..._MESSAGE_UINT32` | as above | `Message`, `value` (u32) |
//! | [`trace_message_bool!`] | `..._MESSAGE_BOOL` | as above | `Message`, `value` (bool32) |
//! | [`trace_message_pointer!`] | `..._MESSAGE_POINTER` | as above | `Message`, `value` (pointer) |
//! | [`trace_message_guid_status!`] | `..._MESSAGE_GUID_STATUS` | as above | `Message`, `*guid` (guid: the C macro's field is named after its argument expression), `Status` (win_ntstatus) |
//!
//! Nothing in a macro's arguments is evaluated unless a session has the provider enabled for
//! the event's level and keyword.
//!
//! # Two paths, one set of events
//!
//! - Driver builds (`cfg(windows)`, with this crate's `kernel_mode` feature, which turns on
//!   the `tracelogging` crate's): [`initiate`] calls [`Provider::register`] and the macros
//!   expand to `tracelogging::write_event!`, the crate's own TraceLogging encoding through
//!   `EtwRegister`/`EtwWriteTransfer`.
//! - Host builds: the `tracelogging` crate is a no-op off Windows, so this crate registers the
//!   provider with `EtwRegister` (and its traits with `EtwSetInformation`) itself, follows the
//!   enable callback, and encodes each event exactly as `write_event!` would — same provider
//!   and event metadata bytes, same payload, same event descriptor — on the stack, for
//!   `EtwWriteTransfer`: usersim's ETW captures and decodes it, so tests assert on the events a
//!   driver writes. Strings that do not fit the host path's buffers (256 bytes of event
//!   metadata, 512 of payload) are shortened. The registration state (which a driver keeps
//!   in its globals) is kept per simulated kernel there, in storage usersim gives each
//!   kernel, because a test process may run several kernels at once. This is the crate's
//!   only platform `cfg`.
//!
//! # Using the macros: depend on `tracelogging` directly
//!
//! `write_event!` generates `tracelogging::...` paths, so a crate that invokes these macros
//! must itself depend on `tracelogging` (it does anyway, to define its provider), with the
//! version this crate uses (`=1.2.4`, `default-features = false`, features `etw` and `macros`).
//! Level and keyword arguments must be constant expressions (`write_event!` builds a `const`
//! event descriptor), which the host path enforces too.
//!
//! # IRQL
//!
//! [`initiate`], [`terminate`] and [`Tracing`]: PASSIVE_LEVEL (`EtwRegister`/`EtwUnregister`).
//! The macros: any IRQL; above APC_LEVEL their arguments must be in non-paged memory.
#![no_std]

#[cfg(not(windows))]
#[doc(hidden)]
pub mod host;

use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use ebpf_ext_sys::{Error, Result};
#[doc(hidden)]
pub use tracelogging as __tracelogging;
pub use tracelogging::{Level, Provider};

/// Keywords (the C library's `EBPF_EXT_TRACELOG_KEYWORD_*`). Bits 0x1–0x4 belong to the
/// library; an extension's own keywords take the next free power of two.
pub mod keyword {
    /// Function entry/exit events (`EBPF_EXT_TRACELOG_KEYWORD_FUNCTION_ENTRY_EXIT`).
    pub const FUNCTION_ENTRY_EXIT: u64 = 0x1;
    /// Base (SDK) events (`..._BASE`).
    pub const BASE: u64 = 0x2;
    /// Extension events (`..._EXTENSION`).
    pub const EXTENSION: u64 = 0x4;
    /// XDP hook (`..._XDP`).
    pub const XDP: u64 = 0x8;
    /// Bind hook (`..._BIND`).
    pub const BIND: u64 = 0x10;
    /// Sock-addr hooks (`..._SOCK_ADDR`).
    pub const SOCK_ADDR: u64 = 0x20;
    /// Sock-ops hook (`..._SOCK_OPS`).
    pub const SOCK_OPS: u64 = 0x40;
    /// Process hook (`..._PROCESS`).
    pub const PROCESS: u64 = 0x80;
    /// Net-event hook (`..._NETEVENT`).
    pub const NETEVENT: u64 = 0x100;
}

/// Event name of entry/exit and message events.
pub const GENERIC_MESSAGE_EVENT: &str = "EbpfExtGenericMessage";
/// Event name of API failure events.
pub const API_ERROR_EVENT: &str = "EbpfExtApiError";

/// No provider registered.
const UNREGISTERED: u8 = 0;
/// `initiate` or `terminate` is running.
const BUSY: u8 = 1;
/// `provider` is registered.
const REGISTERED: u8 = 2;

/// Which provider the SDK logs through: the state [`initiate`] and [`terminate`] move between.
/// A global of the driver in a driver build; on the host, one per simulated kernel (see
/// [`with_registration`]). All-zero is the initial, unregistered state.
#[repr(C)]
pub(crate) struct Registration {
    state: AtomicU8,
    /// The registered provider (non-NULL exactly while `state` is `REGISTERED`).
    provider: AtomicPtr<Provider>,
}

impl Registration {
    #[cfg(windows)]
    const fn new() -> Registration {
        Registration {
            state: AtomicU8::new(UNREGISTERED),
            provider: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    fn provider(&self) -> Option<&'static Provider> {
        let p = self.provider.load(Ordering::Acquire);
        // SAFETY: only NULL or pointers made from `&'static Provider` are stored.
        unsafe { p.as_ref() }
    }

    fn initiate(&self, provider: &'static Provider) -> Result {
        match self
            .state
            .compare_exchange(UNREGISTERED, BUSY, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(REGISTERED) => return Ok(()),
            Err(_) => return Err(Error::InvalidDeviceState),
        }
        match register(provider) {
            Ok(()) => {
                self.provider
                    .store(core::ptr::from_ref(provider).cast_mut(), Ordering::Release);
                self.state.store(REGISTERED, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.state.store(UNREGISTERED, Ordering::Release);
                Err(e)
            }
        }
    }

    fn terminate(&self) {
        if self
            .state
            .compare_exchange(REGISTERED, BUSY, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let p = self.provider.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: only NULL or pointers made from `&'static Provider` are stored.
        if let Some(provider) = unsafe { p.as_ref() } {
            unregister(provider);
        }
        // Not a tail call to EtwUnregister (the C library turned optimisation off to make sure
        // of that, for Driver Verifier): the store below follows it.
        self.state.store(UNREGISTERED, Ordering::Release);
    }
}

/// The driver's registration.
#[cfg(windows)]
static REGISTRATION: Registration = Registration::new();

/// Runs `f` with the driver's registration. On the host the SDK's code is linked natively into
/// a test process that may run several simulated kernels at once (plain `cargo test`), each
/// standing for a machine with this driver loaded, so the registration is kept per kernel:
/// that of the kernel bound to the calling thread, `None` when none is.
#[inline]
fn with_registration<R>(f: impl FnOnce(&Registration) -> R) -> Option<R> {
    #[cfg(windows)]
    {
        Some(f(&REGISTRATION))
    }
    #[cfg(not(windows))]
    {
        host::with_state(|state| f(&state.registration))
    }
}

/// The provider the SDK logs through, once [`initiate`] succeeded (until [`terminate`]).
///
/// # IRQL
/// Any.
#[must_use]
#[inline]
pub fn provider() -> Option<&'static Provider> {
    with_registration(Registration::provider).flatten()
}

/// Registers `provider` with ETW and makes it the one the SDK logs through
/// (`ebpf_ext_trace_initiate`). Does nothing and succeeds if a provider is already registered;
/// marks it registered only if registration succeeded, so a failed call can be retried.
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
///
/// ebpf_ext_trace::initiate(&PROVIDER)?;
/// ebpf_ext_trace::initiate(&PROVIDER)?; // already registered: nothing happens
/// # assert_eq!(kernel.etw_registrations(), 1);
/// ebpf_ext_trace::terminate();
/// # assert_eq!(kernel.etw_registrations(), 0);
/// # Ok::<(), ebpf_ext_sys::Error>(())
/// ```
///
/// # Errors
/// [`Error::Api`] naming `EtwRegister` with its status; [`Error::InvalidDeviceState`] while
/// another thread is in `initiate` or [`terminate`].
///
/// # IRQL
/// PASSIVE_LEVEL.
///
/// # Locking
/// Takes no lock. Meant for DriverEntry; concurrent calls are safe (one registers, the others
/// succeed without doing anything or fail with [`Error::InvalidDeviceState`]), never a
/// double registration (which the `tracelogging` crate answers with a panic, a bug check in a
/// driver).
pub fn initiate(provider: &'static Provider) -> Result {
    // No registration only on a host thread with no simulated kernel: `EtwRegister` then
    // stops the test naming itself, as every kernel routine does there.
    with_registration(|r| r.initiate(provider)).unwrap_or_else(|| register(provider))
}

/// Unregisters the provider (`ebpf_ext_trace_terminate`); does nothing if none is registered.
/// Must run before the driver unloads: ETW would otherwise call back into unloaded code. Once
/// it returns, no enable callback runs and macros that start afterwards write nothing. A
/// macro already running on another processor may still write with the handle being
/// unregistered, so stop every code path that traces (callbacks, requests, hooks) before
/// calling it, as the SDK's driver glue does by stopping tracing last.
///
/// # IRQL
/// PASSIVE_LEVEL.
///
/// # Locking
/// Takes no lock. Do not race it with [`initiate`]: a `terminate` that overlaps an `initiate`
/// does nothing.
pub fn terminate() {
    with_registration(Registration::terminate);
}

/// Tracing for the driver's lifetime: [`initiate`] when started, [`terminate`] when dropped.
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// {
///     let _tracing = ebpf_ext_trace::Tracing::start(&PROVIDER)?;
///     # assert_eq!(kernel.etw_registrations(), 1);
/// }
/// assert!(ebpf_ext_trace::provider().is_none());
/// # assert_eq!(kernel.etw_registrations(), 0);
/// # Ok::<(), ebpf_ext_sys::Error>(())
/// ```
///
/// Dropping the guard unregisters the provider even if it was registered before `start` (there
/// is one registration per driver).
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
    ///
    /// # Locking
    /// As [`initiate`].
    pub fn start(provider: &'static Provider) -> Result<Tracing> {
        initiate(provider)?;
        Ok(Tracing(()))
    }
}

impl Drop for Tracing {
    /// [`terminate`]: PASSIVE_LEVEL.
    fn drop(&mut self) {
        terminate();
    }
}

#[cfg(windows)]
fn register(provider: &'static Provider) -> Result {
    // SAFETY: the provider is 'static, so it outlives its registration, and `terminate`
    // unregisters it before the driver unloads; `initiate`'s state machine never registers it
    // twice or concurrently (the crate would panic).
    let status = unsafe { provider.register() };
    if status == 0 {
        Ok(())
    } else {
        Err(Error::api("EtwRegister", status.cast_signed()))
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

/// Whether an event of `level` and `keyword` would be written now (a session has the provider
/// enabled for it), as `tracelogging::Provider::enabled` decides. The macros check this
/// themselves; use it to skip other work that only feeds an event.
///
/// # IRQL
/// Any.
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

/// Writes one event through the registered provider; fields are `kind("name", value)` with
/// kind one of `str8` (`&str`), `u32`, `u64`, `bool32` (`bool`), `win_ntstatus` (`i32`),
/// `pointer` (`usize`), `guid` (`GUID`). Nothing is evaluated unless the event is enabled.
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
            // Constants, as write_event! requires on Windows.
            const LEVEL: $crate::Level = $level;
            const KEYWORD: u64 = $keyword;
            if $crate::host::enabled(LEVEL.as_int(), KEYWORD) {
                $crate::host::write(
                    LEVEL.as_int(),
                    KEYWORD,
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

/// The enclosing function's path (`crate::module::function`), for entry/exit events.
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
/// [`FUNCTION_ENTRY_EXIT`](keyword::FUNCTION_ENTRY_EXIT), opcode Start, field `Enter` = the
/// enclosing function's path.
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// fn attach() {
///     ebpf_ext_trace::trace_entry!();
///     // ...
///     ebpf_ext_trace::trace_exit!();
/// }
/// attach();
/// # let events = kernel.etw_events();
/// # assert!(matches!(events[0].field("Enter"),
/// #     Some(ebpf_ext_usersim::tracelogging::Value::Str(f)) if f.ends_with("::attach")));
/// # assert_eq!((events[0].opcode, events[1].opcode), (1, 2));
/// # ebpf_ext_trace::terminate();
/// ```
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
/// the given keyword, fields `api` (str8) and `status` (win_ntstatus).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::keyword;
///
/// let status: i32 = 0xC000_009Au32.cast_signed(); // STATUS_INSUFFICIENT_RESOURCES
/// ebpf_ext_trace::trace_api_failure!(keyword::EXTENSION, "NmrRegisterProvider", status);
/// # let event = &kernel.etw_events()[0];
/// # assert_eq!((event.name.as_str(), event.level, event.keyword), ("EbpfExtApiError", 2, 4));
/// # ebpf_ext_trace::terminate();
/// ```
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

/// An API failure with a message and a string (`..._API_FAILURE_MESSAGE_STRING`):
/// `EbpfExtApiError`, Error, fields `api`, `status`, `Message`, `string_value`.
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// ebpf_ext_trace::trace_api_failure_message_string!(
///     ebpf_ext_trace::keyword::BASE,
///     "IoCreateDevice",
///     0xC000_0035u32.cast_signed(),
///     "device name in use",
///     "\\Device\\SampleEbpfExt"
/// );
/// # assert_eq!(kernel.etw_events()[0].fields.len(), 4);
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message (`EBPF_EXT_LOG_MESSAGE`): `EbpfExtGenericMessage`, the given level and keyword,
/// field `Message` (str8).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// ebpf_ext_trace::trace_message!(Level::Warning, keyword::XDP, "no program attached");
/// # let event = &kernel.etw_events()[0];
/// # assert_eq!((event.level, event.keyword), (3, 0x8));
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a status (`EBPF_EXT_LOG_MESSAGE_NTSTATUS`): fields `Message`, `status`
/// (win_ntstatus).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// let status = 0x103; // STATUS_PENDING
/// ebpf_ext_trace::trace_message_status!(Level::Verbose, keyword::BASE, "detach", status);
/// # assert_eq!(kernel.etw_events()[0].fields[1].name, "status");
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a string (`EBPF_EXT_LOG_MESSAGE_STRING`): fields `Message`, `string_value`
/// (str8).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// let name = "process_monitor";
/// ebpf_ext_trace::trace_message_string!(Level::Informational, keyword::PROCESS, "attach", name);
/// # assert_eq!(kernel.etw_events()[0].fields[1].name, "string_value");
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a `u64` (`EBPF_EXT_LOG_MESSAGE_UINT64`): fields `Message`, `value` (u64).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// ebpf_ext_trace::trace_message_value!(Level::Error, keyword::BASE, "returned error", 7u64);
/// # assert_eq!(kernel.etw_events()[0].fields[1].in_type, 10);
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a `u32` (`EBPF_EXT_LOG_MESSAGE_UINT32`): fields `Message`, `value` (u32).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// ebpf_ext_trace::trace_message_u32!(Level::Verbose, keyword::BIND, "port", 443u32);
/// # assert_eq!(kernel.etw_events()[0].fields[1].in_type, 8);
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a `bool` (`EBPF_EXT_LOG_MESSAGE_BOOL`): fields `Message`, `value` (bool32).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// ebpf_ext_trace::trace_message_bool!(Level::Verbose, keyword::BASE, "returned", true);
/// # assert_eq!(kernel.etw_events()[0].fields[1].in_type, 13);
/// # ebpf_ext_trace::terminate();
/// ```
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

/// A message with a pointer (`EBPF_EXT_LOG_MESSAGE_POINTER`): fields `Message`, `value`
/// (pointer: HexSize, Hex64 on x64), given as `usize`.
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_trace::{Level, keyword};
///
/// let context = 0u64;
/// let address = core::ptr::from_ref(&context).addr();
/// ebpf_ext_trace::trace_message_pointer!(Level::Verbose, keyword::BASE, "returned", address);
/// # assert_eq!(kernel.etw_events()[0].fields[1].in_type, 21);
/// # ebpf_ext_trace::terminate();
/// ```
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
/// `guid` (guid, an `ebpf_ext_sys::ntdef::GUID`), `Status` (win_ntstatus).
///
/// ```standalone_crate
/// # use ebpf_ext_usersim as _;
/// # let kernel = ebpf_ext_usersim::Kernel::new();
/// # tracelogging::define_provider!(PROVIDER, "NtosEbpfExtProvider");
/// # ebpf_ext_trace::initiate(&PROVIDER).unwrap();
/// use ebpf_ext_sys::ntdef::GUID;
/// use ebpf_ext_trace::{Level, keyword};
///
/// let module = GUID::from_u128(0x5dd9a6d7_9d68_4f3c_8f6e_2c7b1d1a0e01);
/// ebpf_ext_trace::trace_message_guid_status!(Level::Error, keyword::BASE, "attach", module, -1);
/// # let event = &kernel.etw_events()[0];
/// # assert_eq!(event.field("*guid"), Some(&ebpf_ext_usersim::tracelogging::Value::Guid(module)));
/// # ebpf_ext_trace::terminate();
/// ```
#[macro_export]
macro_rules! trace_message_guid_status {
    ($level:expr, $keyword:expr, $message:expr, $guid:expr, $status:expr) => {
        $crate::__write_event!(
            "EbpfExtGenericMessage",
            $level,
            $keyword,
            Info,
            str8("Message", $message),
            guid("*guid", $guid),
            win_ntstatus("Status", $status)
        )
    };
}

/// Traces why a callback refuses (`EbpfExtGenericMessage`, Error, keyword `EXTENSION`:
/// `Message` = `reason`, `status`) and returns `status`, for the callback to return it, as in
/// `return Err(refused("attach refused: …", STATUS_INVALID_PARAMETER))`.
///
/// # IRQL
/// Any.
#[must_use = "the status is what the callback returns"]
pub fn refused(
    reason: &'static str,
    status: ebpf_ext_sys::ntdef::NTSTATUS,
) -> ebpf_ext_sys::ntdef::NTSTATUS {
    crate::trace_message_status!(Level::Error, keyword::EXTENSION, reason, status);
    status
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
