//! Driver glue: device objects, start/stop ordering, panic handling and allocation.
//!
//! # Start and stop order
//!
//! An extension starts tracing, then its program-information providers, then its hook
//! providers, and stops in reverse: hooks first (so no program runs once its program type is
//! gone), then program information, then tracing. The SDK keeps the program types
//! ([`Start::program_type`]) and stops them, in reverse order of registration, after the
//! extension value has dropped; the extension holds its hooks (and anything else it starts)
//! as fields, which Rust drops in declaration order. Starting them with `?` undoes partial
//! work when a step fails: the values already created are dropped (in reverse) on the early
//! return, then the program types the SDK kept.
//!
//! ```ignore
//! struct MyExtension {
//!     hook: HookProvider<MyHook>,
//! }   // the SDK then stops the program type, the device and tracing
//!
//! impl ExtensionDriver for MyExtension {
//!     // ...
//!     fn start(start: &Start<'_>) -> Result<Self> {
//!         let program_type = start.program_type(&PROGRAM_DATA)?;
//!         let hook = start.hook(&program_type, HOOK_CONFIG, MyHook)?;
//!         Ok(MyExtension { hook })
//!     }
//! }
//! ```

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use ebpf_ext_hook::{DataFields, HookConfig, HookExtension, HookProvider};

use crate::control::ControlDevice;
use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::{
    BtfFunctionProvider, BtfFunctions, ProgramInfoProvider, TypedProgramData,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_PROGRAM_INFO_EXTENSION_IID;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DRIVER_OBJECT, FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN, IoCreateDevice,
    IoDeleteDevice,
};
use ebpf_ext_sys::{Error, Result};
use ebpf_ext_trace::Tracing;

/// Bug check code of a Rust panic in a driver (`'RUST'` read as a little-endian number):
/// P1 = line, P2 = column, P3 = address of the file name, P4 = its length.
pub const RUST_PANIC_BUGCHECK: u32 = u32::from_le_bytes(*b"RUST");

/// An unnamed device object of the driver, deleted on drop.
///
/// # IRQL
/// Created at PASSIVE_LEVEL; dropped at ≤ APC_LEVEL (`IoDeleteDevice`), after every work item
/// queued against it has been waited for.
///
/// # Invariants
/// `device` came from `IoCreateDevice` and is deleted only in `Drop`.
pub struct Device {
    device: NonNull<DEVICE_OBJECT>,
}

// SAFETY: a device object may be used and deleted from any thread at the documented IRQLs.
unsafe impl Send for Device {}
// SAFETY: `Device` exposes only its pointer.
unsafe impl Sync for Device {}

impl Device {
    /// Creates an unnamed device (`FILE_DEVICE_UNKNOWN`, secure open) for the driver.
    ///
    /// # Safety
    /// `driver` is the driver's live `DRIVER_OBJECT`, which outlives the device.
    ///
    /// # Errors
    /// [`Error::Api`] with `IoCreateDevice`'s status (traced).
    ///
    /// # IRQL
    /// ≤ APC_LEVEL.
    pub unsafe fn create(driver: *mut DRIVER_OBJECT) -> Result<Self> {
        let mut device = ptr::null_mut();
        // SAFETY: the caller passes a live driver object; the out pointer is a local.
        let status = unsafe {
            IoCreateDevice(
                driver,
                0,
                ptr::null_mut(),
                FILE_DEVICE_UNKNOWN,
                FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut device,
            )
        };
        if status != STATUS_SUCCESS {
            ebpf_ext_trace::trace_api_failure!(
                ebpf_ext_trace::keyword::BASE,
                "IoCreateDevice",
                status
            );
            return Err(Error::api("IoCreateDevice", status));
        }
        // INVARIANT: a device just created by IoCreateDevice.
        NonNull::new(device)
            .map(|device| Device { device })
            .ok_or(Error::Unsuccessful)
    }

    /// The device object, for APIs that take one (`HookProvider::register`).
    #[must_use]
    pub fn as_ptr(&self) -> *mut DEVICE_OBJECT {
        self.device.as_ptr()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: created by IoCreateDevice and deleted once (type invariant).
        unsafe { IoDeleteDevice(self.device.as_ptr()) };
    }
}

/// What an [`Extension`] starts: its ETW provider, its program type and one hook.
pub struct ExtensionConfig<H: HookExtension> {
    /// The extension's ETW provider (`tracelogging::define_provider!`).
    pub trace_provider: &'static tracelogging::Provider,
    /// The program type's description, whose helpers read the hook's context.
    pub program_data: &'static TypedProgramData<H::Context>,
    /// Pool tag for the providers' allocations.
    pub tag: PoolTag,
    /// The hook.
    pub hook: HookConfig<H::Parameter>,
    /// The hook's callbacks and data.
    pub extension: H,
}

/// A running extension with one program type and one hook: tracing, a device object, the
/// program-information provider and the hook provider. Fields drop in declaration order, which
/// is the stop order: hook, program information, device, tracing. (A driver that registers
/// more providers beside it drops them first and then calls
/// [`ebpf_ext_nmr::deregister_leaked`], as [`crate::driver_entry!`] does.)
pub struct Extension<H: HookExtension> {
    hook: HookProvider<H>,
    program_info: ProgramInfoProvider,
    device: Device,
    tracing: Tracing,
}

impl<H: HookExtension> Extension<H> {
    /// Starts tracing, creates a device, registers the program-information provider, then the
    /// hook provider. If a step fails, what was started is stopped again (in reverse) before
    /// the error is returned.
    ///
    /// # Safety
    /// `driver` is the driver's live `DRIVER_OBJECT`, which outlives the extension; and while
    /// it runs the image registers no other program-information provider of its program type
    /// (see [`ProgramInfoProvider::register`]).
    ///
    /// # Errors
    /// The first step's error ([`ebpf_ext_sys::Error::Api`] naming the kernel routine, or
    /// [`ebpf_ext_sys::Error::InsufficientResources`]); [`Error::InvalidParameter`] (traced)
    /// if the hook's configuration names another program type than the program data.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (DriverEntry).
    pub unsafe fn start(driver: *mut DRIVER_OBJECT, config: ExtensionConfig<H>) -> Result<Self> {
        let tracing = Tracing::start(config.trace_provider)?;
        ebpf_ext_trace::trace_entry!();
        // SAFETY: the caller's driver object outlives the device (dropped with the extension).
        let device = unsafe { Device::create(driver) }?;
        check_program_type(config.program_data.program_type(), &config.hook)?;
        // SAFETY: the one hook of this type is the one below, which invokes programs with
        // `H::Context`, what the data's helpers read (`TypedProgramData`); the caller registers
        // no other provider of the type (this function's contract).
        let program_info =
            unsafe { ProgramInfoProvider::register(config.program_data, config.tag) }?;
        // SAFETY: `device` is dropped after `hook` (field order); the hook's programs are the
        // program data's type (checked above), whose data pointers, if any, are `DataPointer`
        // fields of `H::Context` at these offsets (`TypedProgramData`).
        let hook = unsafe {
            HookProvider::register_with_data(
                config.hook,
                config.extension,
                device.as_ptr(),
                data_fields(config.program_data),
            )
        }?;
        ebpf_ext_trace::trace_exit!();
        Ok(Extension {
            hook,
            program_info,
            device,
            tracing,
        })
    }

    /// The hook provider, for invoking programs.
    #[must_use]
    pub fn hook(&self) -> &HookProvider<H> {
        &self.hook
    }

    /// The program-information provider.
    #[must_use]
    pub fn program_info(&self) -> &ProgramInfoProvider {
        &self.program_info
    }

    /// The device object.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Stops everything in order (what dropping does), tracing each step.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (driver unload).
    pub fn stop(self) {
        ebpf_ext_trace::trace_entry!();
        let Extension {
            hook,
            program_info,
            device,
            tracing,
        } = self;
        drop(hook);
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Verbose,
            ebpf_ext_trace::keyword::BASE,
            "hook provider unregistered"
        );
        drop(program_info);
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Verbose,
            ebpf_ext_trace::keyword::BASE,
            "program information provider unregistered"
        );
        drop(device);
        ebpf_ext_trace::trace_exit!();
        drop(tracing);
    }
}

/// Formats a panic into `buffer` as "Rust panic at FILE:LINE:COL: MESSAGE" (NUL-terminated,
/// truncated to fit) and returns the text length.
pub fn format_panic(info: &core::panic::PanicInfo<'_>, buffer: &mut [u8]) -> usize {
    use core::fmt::Write;
    struct Cursor<'a> {
        buffer: &'a mut [u8],
        len: usize,
    }
    impl Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let room = self.buffer.len().saturating_sub(self.len + 1);
            let n = s.len().min(room);
            self.buffer[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut cursor = Cursor { buffer, len: 0 };
    let _ = match info.location() {
        Some(l) => write!(
            cursor,
            "Rust panic at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => write!(cursor, "Rust panic: {}", info.message()),
    };
    let len = cursor.len;
    if let Some(terminator) = cursor.buffer.get_mut(len) {
        *terminator = 0;
    }
    len
}

/// The driver's panic handler: prints the panic with `DbgPrintEx`, then bug-checks with
/// [`RUST_PANIC_BUGCHECK`] and the location. Compiled into Windows driver builds with the
/// `driver` feature.
#[cfg(all(target_os = "windows", feature = "driver"))]
pub mod panic {
    use ebpf_ext_sys::wdm::{DPFLTR_ERROR_LEVEL, DPFLTR_IHVDRIVER_ID, DbgPrintEx, KeBugCheckEx};

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let mut buffer = [0u8; 256];
        let _ = super::format_panic(info, &mut buffer);
        // SAFETY: "%s" with a NUL-terminated buffer.
        unsafe {
            DbgPrintEx(
                DPFLTR_IHVDRIVER_ID,
                DPFLTR_ERROR_LEVEL,
                c"%s".as_ptr(),
                buffer.as_ptr(),
            )
        };
        let (line, column, file, file_len) = info.location().map_or((0, 0, 0, 0), |l| {
            (
                l.line() as usize,
                l.column() as usize,
                l.file().as_ptr() as usize,
                l.file().len(),
            )
        });
        // SAFETY: stops the machine; the parameters are plain numbers.
        unsafe { KeBugCheckEx(super::RUST_PANIC_BUGCHECK, line, column, file, file_len) }
    }
}

// LLVM references `_fltused` from any object that uses floating point (core's formatting
// does); the MSVC C runtime defines it, and a driver links no C runtime. Defined in assembly
// rather than as a Rust static, which a `cdylib` would export.
#[cfg(all(target_os = "windows", feature = "driver"))]
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
    ".text",
);

/// Declares the driver's global allocator over non-paged pool with `tag`:
/// `ebpf_extension_common::global_allocator!(PoolTag::new(*b"Smpl"));`
#[macro_export]
macro_rules! global_allocator {
    ($tag:expr) => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::pool::PoolAllocator =
            $crate::pool::PoolAllocator::new($tag);
    };
}

// ---- A declarative driver ------------------------------------------------------------------

/// The names of an extension's control device (see [`crate::control::ControlDevice`]).
#[derive(Debug, Clone, Copy)]
pub struct ControlDeviceNames {
    /// `\Device\Name`, as [`crate::utf16!`] makes it.
    pub name: &'static [u16],
    /// `\GLOBAL??\Name` (user mode opens `\\.\Name`).
    pub link: &'static [u16],
    /// `FILE_DEVICE_*` type.
    pub device_type: u32,
}

/// An extension driver: what it starts, and how it answers its control device. The SDK's
/// [`crate::driver_entry!`] turns it into `DriverEntry`, the unload routine and the dispatch
/// table, and keeps the running value between entry and unload.
///
/// `DriverEntry` starts tracing, creates the device object hooks need, calls
/// [`ExtensionDriver::start`], then creates the control device (if any); a failed step undoes
/// the earlier ones. Unload deletes the control device (waiting for running requests), drops
/// the extension (its fields in declaration order), then the program types registered
/// through [`Start::program_type`] (in reverse order of registration, so after every hook
/// that runs their programs), then the device and tracing.
pub trait ExtensionDriver: Send + Sync + Sized + 'static {
    /// The driver's ETW provider (`tracelogging::define_provider!`).
    const TRACE_PROVIDER: &'static tracelogging::Provider;
    /// Pool tag of the SDK's allocations for this driver.
    const TAG: PoolTag;
    /// The control device, if the driver has one; its requests go to
    /// [`ExtensionDriver::device_control`]. A request the device receives while the driver
    /// is not running (after the device is created and before `DriverEntry` returns, or once
    /// unload has begun) is refused with `STATUS_DEVICE_NOT_READY` and a trace event.
    const CONTROL_DEVICE: Option<ControlDeviceNames> = None;

    /// Starts the extension's program types and hooks, in order; return the hooks (and anything
    /// else it keeps) in a value whose fields drop in stop order; the SDK keeps the program
    /// types and stops them after that value. `?` on each step undoes the earlier ones on
    /// failure.
    ///
    /// # Errors
    /// The first step's error: the SDK traces it (Error, keyword `BASE`) and `DriverEntry`
    /// returns its status, or `STATUS_INTERNAL_ERROR` if that status is a success or
    /// informational one (which would keep loaded a driver that has stopped).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    fn start(start: &Start<'_>) -> Result<Self>;

    /// Handles a control-device request (see [`crate::ioctl`](mod@crate::ioctl)). The default refuses every
    /// code.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (the dispatch routine).
    fn device_control(&self, request: crate::ioctl::Request<'_>) -> crate::ioctl::Completion {
        request.unknown()
    }
}

/// Most program types one driver registers through [`Start::program_type`].
pub const MAX_PROGRAM_TYPES: usize = 32;

/// Most modules of BTF-resolved functions one driver registers through
/// [`Start::btf_functions`].
pub const MAX_BTF_MODULES: usize = 8;

/// The index of the free slot of `slots` to record `guid` in once registered. A `guid`
/// recorded already is refused with [`Error::InvalidParameter`], and a full table with
/// [`Error::InsufficientResources`], each traced as an error with its message.
fn free_slot(slots: &[Cell<Option<GUID>>], guid: GUID, twice: &str, full: &str) -> Result<usize> {
    let refuse = |message: &str, error: Error| {
        ebpf_ext_trace::trace_message!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            message
        );
        Err(error)
    };
    if slots.iter().any(|slot| slot.get() == Some(guid)) {
        return refuse(twice, Error::InvalidParameter);
    }
    match slots.iter().position(|slot| slot.get().is_none()) {
        Some(index) => Ok(index),
        None => refuse(full, Error::InsufficientResources),
    }
}

/// What [`ExtensionDriver::start`] starts providers with.
pub struct Start<'a> {
    device: &'a Device,
    tag: PoolTag,
    /// The program types registered so far, for as long as the driver starts: a second
    /// registration of one is refused.
    registered: [Cell<Option<GUID>>; MAX_PROGRAM_TYPES],
    /// Their providers, slot for slot, kept until the driver stops.
    program_types: ProgramTypes,
    /// The modules of BTF-resolved functions registered so far, likewise (even after the
    /// extension dropped one).
    modules: [Cell<Option<GUID>>; MAX_BTF_MODULES],
}

/// The program-information providers a driver registered through [`Start::program_type`]:
/// the SDK keeps them from `DriverEntry` until the extension value has dropped (at unload, or
/// when its start fails), then deregisters them in reverse order of registration, each waiting
/// until the core has detached.
struct ProgramTypes([Cell<Option<ProgramInfoProvider>>; MAX_PROGRAM_TYPES]);

impl ProgramTypes {
    const fn new() -> Self {
        ProgramTypes([const { Cell::new(None) }; MAX_PROGRAM_TYPES])
    }

    /// The providers, moved out for the running driver (which is shared between threads).
    fn keep(&self) -> KeptProgramTypes {
        KeptProgramTypes(core::array::from_fn(|slot| {
            self.0.get(slot).and_then(Cell::take)
        }))
    }
}

impl Drop for ProgramTypes {
    fn drop(&mut self) {
        drop(self.keep());
    }
}

/// [`ProgramTypes`] of a running driver, in registration order; dropped in reverse.
struct KeptProgramTypes([Option<ProgramInfoProvider>; MAX_PROGRAM_TYPES]);

impl Drop for KeptProgramTypes {
    fn drop(&mut self) {
        for slot in self.0.iter_mut().rev() {
            drop(slot.take());
        }
    }
}

/// A program type registered through [`Start::program_type`], whose helpers and test runs
/// read the program context as `C`: what [`Start::hook`] takes to start the hooks that run
/// its programs. The SDK keeps the program-information provider and stops it after the
/// extension value, and so after every hook; this is only its name and layout, for the
/// duration of the start.
#[derive(Debug)]
pub struct ProgramType<'s, C> {
    guid: GUID,
    data_fields: Option<DataFields>,
    _start: PhantomData<&'s ()>,
    _context: PhantomData<fn(C) -> C>,
}

impl<C> ProgramType<'_, C> {
    /// The program type GUID.
    #[must_use]
    pub fn program_type(&self) -> GUID {
        self.guid
    }
}

impl Start<'_> {
    /// Registers a module's BTF-resolved functions ([`btf_functions!`](crate::btf_functions)),
    /// which programs of any type call by name. Keep the provider in the driver's state;
    /// dropping it deregisters and waits until no program calls the functions.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (traced) if this driver already registered the module (the
    /// core would refuse the second provider); [`Error::InsufficientResources`] (traced)
    /// beyond [`MAX_BTF_MODULES`]; otherwise as [`BtfFunctionProvider::register`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn btf_functions(&self, functions: &'static BtfFunctions) -> Result<BtfFunctionProvider> {
        let slot = free_slot(
            &self.modules,
            functions.module(),
            "BTF module registered twice",
            "more BTF modules than MAX_BTF_MODULES",
        )?;
        let provider = BtfFunctionProvider::register(functions, self.tag)?;
        self.modules[slot].set(Some(functions.module()));
        Ok(provider)
    }

    /// Registers the program-information provider of one program type. The SDK keeps it until
    /// the driver stops: after the extension value (and every hook in it) has dropped, it
    /// deregisters the program types in reverse order of registration.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (traced) if this driver already registered the program type
    /// (the core could bind either provider, and hooks were checked against one);
    /// [`Error::InsufficientResources`] (traced) beyond [`MAX_PROGRAM_TYPES`]; otherwise as
    /// [`ProgramInfoProvider::register`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn program_type<C>(
        &self,
        data: &'static TypedProgramData<C>,
    ) -> Result<ProgramType<'_, C>> {
        let program_type = data.program_type();
        let slot = free_slot(
            &self.registered,
            program_type,
            "program type registered twice",
            "more program types than MAX_PROGRAM_TYPES",
        )?;
        // SAFETY: this driver's safe hooks invoke programs of this type only through
        // `Start::hook`, which takes the returned `ProgramType<'_, C>` and so hands them a `C`, the
        // context `data`'s helpers and test runs read (`TypedProgramData`); and no other
        // provider of the type is registered through this `Start` (checked above; the record
        // is kept while the driver starts).
        let provider = unsafe { ProgramInfoProvider::register(data, self.tag) }?;
        self.registered[slot].set(Some(program_type));
        self.program_types.0[slot].set(Some(provider));
        Ok(ProgramType {
            guid: program_type,
            data_fields: data_fields(data),
            _start: PhantomData,
            _context: PhantomData,
        })
    }

    /// Registers a hook provider with its own extension type and attach policy, for programs
    /// of `program`'s type: the hook invokes them with `E::Context`, the context that type's
    /// helpers read (a hook with another context does not compile).
    ///
    /// The provider's detach work items use the driver's device object, which the SDK deletes
    /// only after the [`ExtensionDriver`] value (and every provider it holds) is dropped. Keep
    /// the hook in that value: the SDK stops `program`'s type only after it.
    ///
    /// ```
    /// # use ebpf_ext_usersim as _;
    /// # use ebpf_extension_common::prelude::*;
    /// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
    /// fn a(context: &Seen) -> u64 { context.a }
    /// program_type! {
    ///     static DATA = c"example", GUID::from_u128(1), 1000;
    ///     context Seen;
    ///     helpers { 0x10000, c"example_a" => a(Context); }
    /// }
    /// struct Hook;
    /// impl HookExtension for Hook {
    ///     type Parameter = ();
    ///     type ClientData = ();
    ///     type Context = Seen; // what the helpers read
    ///     fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> { Ok(()) }
    /// }
    /// const CONFIG: HookConfig<()> = HookConfig::new(GUID::from_u128(2), GUID::from_u128(1), 1, PoolTag::new(*b"Test"));
    /// fn start_both(start: &Start<'_>) -> Result<HookProvider<Hook>> {
    ///     let program_type = start.program_type(&DATA)?;
    ///     start.hook(&program_type, CONFIG, Hook)
    /// }
    /// ```
    ///
    /// A hook that would invoke programs with another context does not compile:
    ///
    /// ```compile_fail
    /// # use ebpf_ext_usersim as _;
    /// # use ebpf_extension_common::prelude::*;
    /// no_padding! { #[repr(C)] #[derive(Clone, Copy)] struct Seen { a: u64, b: u64 } }
    /// fn a(context: &Seen) -> u64 { context.a }
    /// program_type! {
    ///     static DATA = c"example", GUID::from_u128(1), 1000;
    ///     context Seen;
    ///     helpers { 0x10000, c"example_a" => a(Context); }
    /// }
    /// struct Hook;
    /// impl HookExtension for Hook {
    ///     type Parameter = ();
    ///     type ClientData = ();
    ///     type Context = u64; // a helper would read a `Seen` from it
    ///     fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> { Ok(()) }
    /// }
    /// const CONFIG: HookConfig<()> = HookConfig::new(GUID::from_u128(2), GUID::from_u128(1), 1, PoolTag::new(*b"Test"));
    /// fn start_both(start: &Start<'_>) -> Result<HookProvider<Hook>> {
    ///     let program_type = start.program_type(&DATA)?;
    ///     start.hook(&program_type, CONFIG, Hook)
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (traced) if `config.program_type` is not `program`'s type;
    /// otherwise as [`HookProvider::register_with_data`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn hook<E: HookExtension>(
        &self,
        program: &ProgramType<'_, E::Context>,
        config: HookConfig<E::Parameter>,
        extension: E,
    ) -> Result<HookProvider<E>> {
        check_program_type(program.guid, &config)?;
        // SAFETY: the device outlives the extension value that holds this provider
        // (`Running`'s drop: the value, and the providers in it, drop before the device). A
        // provider leaked with `mem::forget` is deregistered by that drop before the device
        // goes (`ebpf_ext_nmr::deregister_leaked`), and its state never freed. The hook's
        // programs are `program`'s type (checked), whose helpers read the context as
        // `E::Context` (`ProgramType`), and that type has no other provider here; its data
        // pointers, if any, are `DataPointer` fields of `E::Context` at these offsets
        // (`TypedProgramData`).
        unsafe {
            HookProvider::register_with_data(
                config,
                extension,
                self.device.as_ptr(),
                program.data_fields,
            )
        }
    }
}

/// Where programs of `data`'s type find their data pointers in the context, for the hooks
/// that write them.
fn data_fields<C>(data: &TypedProgramData<C>) -> Option<DataFields> {
    data.data_fields()
        .map(|(start, end)| DataFields { start, end })
}

/// Refuses a hook whose configured program type is not the one whose helper context it was
/// given.
fn check_program_type<P>(program_type: GUID, config: &HookConfig<P>) -> Result<()> {
    if config.program_type == program_type {
        return Ok(());
    }
    ebpf_ext_trace::trace_message!(
        ebpf_ext_trace::Level::Error,
        ebpf_ext_trace::keyword::EXTENSION,
        "hook configured for another program type than the program data it was given"
    );
    Err(Error::InvalidParameter)
}

/// Stops what an extension leaves once its value (or its failed start's values) has dropped,
/// before the device its hooks may use goes: first every NPI provider it leaked but the
/// program-information ones (a leaked hook stops before the program type whose programs it
/// runs), then the program types the SDK keeps, in reverse order of registration, then any
/// program-information provider it leaked, and last any process notify routine it left
/// added. Each leaked one is traced ([`ebpf_ext_nmr::deregister_leaked`],
/// [`crate::process::remove_leaked`]).
///
/// # Safety
/// As [`ebpf_ext_nmr::deregister_leaked`]: no other thread runs the driver's code, and every
/// provider the extension held has been dropped.
///
/// # IRQL
/// PASSIVE_LEVEL.
unsafe fn stop_kept_and_leaked(program_types: Option<KeptProgramTypes>) {
    // SAFETY: the caller's contract; the kept program types drop only after it returns.
    unsafe { ebpf_ext_nmr::deregister_leaked_except(&EBPF_PROGRAM_INFO_EXTENSION_IID) };
    // No hook is left: no program of these types runs any more.
    drop(program_types);
    // SAFETY: the caller's contract.
    unsafe { ebpf_ext_nmr::deregister_leaked() };
    crate::process::remove_leaked();
}

/// A running extension driver, as [`crate::driver_entry!`] keeps it. It stops in this
/// order: control device (no new requests), the extension, any NPI provider the extension
/// leaked but program-information ones, the program types it registered (in reverse order
/// of registration), any program-information provider it leaked (each leaked one
/// deregistered and traced: [`ebpf_ext_nmr::deregister_leaked`]), any process notify
/// routine it left added (removed, traced: [`crate::process::remove_leaked`]), the device
/// object, tracing.
pub struct Running<D: ExtensionDriver> {
    control: Option<ControlDevice>,
    /// Dropped only in `Drop`, followed by the program types and the sweep of leaked
    /// providers.
    extension: core::mem::ManuallyDrop<D>,
    /// Taken in `Drop`, after the extension.
    program_types: Option<KeptProgramTypes>,
    _device: Device,
    _tracing: Tracing,
}

impl<D: ExtensionDriver> core::ops::Deref for Running<D> {
    type Target = D;
    fn deref(&self) -> &D {
        &self.extension
    }
}

impl<D: ExtensionDriver> Drop for Running<D> {
    fn drop(&mut self) {
        drop(self.control.take());
        // SAFETY: dropped once, here; `self` is not used again but to take the program types
        // and drop the device and tracing fields, which do not touch the extension.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.extension) };
        // SAFETY: unload: the extension value and every provider it held are dropped (above,
        // on this thread); a provider it leaked is never dropped, and the program types kept
        // here are dropped only once this has returned.
        unsafe { stop_kept_and_leaked(self.program_types.take()) };
    }
}

/// The runtime of [`crate::driver_entry!`]; not for direct use.
#[doc(hidden)]
pub mod glue {
    use ebpf_ext_sys::ntdef::{NT_SUCCESS, NTSTATUS};
    use ebpf_ext_sys::ntstatus::{
        STATUS_DEVICE_NOT_READY, STATUS_INTERNAL_ERROR, STATUS_INVALID_DEVICE_REQUEST,
        STATUS_SUCCESS,
    };
    use ebpf_ext_sys::wdm::{
        DRIVER_DISPATCH, DRIVER_OBJECT, DRIVER_UNLOAD, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE,
        IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL,
    };

    use super::{Device, ExtensionDriver, ProgramTypes, Running, Start};
    use crate::control::{ControlDevice, DeviceControl, complete_request, dispatch_succeed};
    use crate::global::DriverGlobal;
    use crate::ioctl::Request;
    use ebpf_ext_sys::Result;
    use ebpf_ext_trace::Tracing;

    /// `DriverEntry`.
    ///
    /// # Safety
    /// Called once per load by the I/O manager with a live driver object that outlives the
    /// driver; `unload` and `dispatch` are the routines [`crate::driver_entry!`] generated for
    /// `global`.
    pub unsafe fn entry<D: ExtensionDriver>(
        global: &'static DriverGlobal<Running<D>>,
        driver: *mut DRIVER_OBJECT,
        unload: DRIVER_UNLOAD,
        dispatch: DRIVER_DISPATCH,
    ) -> NTSTATUS {
        // SAFETY: the I/O manager's driver object, ours to fill in during DriverEntry.
        let object = unsafe { &mut *driver };
        if D::CONTROL_DEVICE.is_some() {
            object.MajorFunction[usize::from(IRP_MJ_CREATE)] = Some(dispatch_succeed);
            object.MajorFunction[usize::from(IRP_MJ_CLEANUP)] = Some(dispatch_succeed);
            object.MajorFunction[usize::from(IRP_MJ_CLOSE)] = Some(dispatch_succeed);
            object.MajorFunction[usize::from(IRP_MJ_DEVICE_CONTROL)] = Some(dispatch);
        }
        object.DriverUnload = Some(unload);
        // SAFETY: the caller's driver object outlives the running driver.
        let published = unsafe { start::<D>(driver) }.and_then(|running| {
            // Traced while the value (and with it tracing) is still running.
            global.set_or_return(running).map_err(|(e, running)| {
                trace_failed_start("the driver's state could not be published", e);
                drop(running);
                e
            })
        });
        match published {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => failure_status(e),
        }
    }

    /// What `DriverEntry` returns for a failed start: the error's status, unless that is a
    /// success or informational one (`Error::Status(STATUS_PENDING)`, or the
    /// `STATUS_OBJECT_NAME_EXISTS` that `EBPF_ALREADY_PINNED` converts to), with which the I/O
    /// manager would keep loaded a driver that has stopped everything: then
    /// `STATUS_INTERNAL_ERROR`, as for a refused request.
    fn failure_status(error: ebpf_ext_sys::Error) -> NTSTATUS {
        match error.ntstatus() {
            status if NT_SUCCESS(status) => STATUS_INTERNAL_ERROR,
            status => status,
        }
    }

    /// Traces a failed start while tracing is still running (`EbpfExtGenericMessage`, Error,
    /// keyword `BASE`, with the status `DriverEntry` will return).
    fn trace_failed_start(why: &str, error: ebpf_ext_sys::Error) {
        ebpf_ext_trace::trace_message_status!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::BASE,
            why,
            failure_status(error)
        );
    }

    /// # Safety
    /// As [`entry`].
    unsafe fn start<D: ExtensionDriver>(driver: *mut DRIVER_OBJECT) -> Result<Running<D>> {
        let tracing = Tracing::start(D::TRACE_PROVIDER)?;
        ebpf_ext_trace::trace_entry!();
        // SAFETY: the driver object outlives the device (dropped with `Running`).
        let device = unsafe { Device::create(driver) }?;
        let start = Start {
            device: &device,
            tag: D::TAG,
            registered: [const { core::cell::Cell::new(None) }; super::MAX_PROGRAM_TYPES],
            program_types: ProgramTypes::new(),
            modules: [const { core::cell::Cell::new(None) }; super::MAX_BTF_MODULES],
        };
        // The start's own values are dropped on its way out, the program types it registered
        // after them, here.
        let started = D::start(&start);
        let program_types = start.program_types.keep();
        let extension = match started {
            Ok(extension) => extension,
            Err(e) => {
                trace_failed_start("the extension's start failed", e);
                // SAFETY: inside `DriverEntry`, after the failed start dropped what it had
                // made: the driver has no other thread, and a leaked provider is never
                // dropped.
                unsafe { super::stop_kept_and_leaked(Some(program_types)) };
                return Err(e);
            }
        };
        // From here on a failure drops `running`, which stops what started, in order.
        let mut running = Running {
            control: None,
            extension: core::mem::ManuallyDrop::new(extension),
            program_types: Some(program_types),
            _device: device,
            _tracing: tracing,
        };
        if let Some(names) = D::CONTROL_DEVICE {
            // SAFETY: as above; the dispatch table was set before this request can arrive.
            let control =
                unsafe { ControlDevice::create(driver, names.name, names.link, names.device_type) };
            running.control = Some(control.inspect_err(|e| {
                trace_failed_start("the control device could not be created", *e);
            })?);
        }
        ebpf_ext_trace::trace_exit!();
        Ok(running)
    }

    /// `DriverUnload`: waits for running requests and callbacks, then stops everything
    /// (in the order [`Running`] drops).
    pub fn unload<D: ExtensionDriver>(global: &'static DriverGlobal<Running<D>>) {
        if let Some(running) = global.take() {
            ebpf_ext_trace::trace_message!(
                ebpf_ext_trace::Level::Verbose,
                ebpf_ext_trace::keyword::BASE,
                "driver unloading"
            );
            drop(running);
        }
    }

    /// `IRP_MJ_DEVICE_CONTROL`.
    ///
    /// # Safety
    /// Called by the I/O manager with a live IRP, not yet completed.
    pub unsafe fn device_control<D: ExtensionDriver>(
        global: &'static DriverGlobal<Running<D>>,
        irp: *mut IRP,
    ) -> NTSTATUS {
        // SAFETY: the I/O manager's IRP, not yet completed.
        let Some(mut control) = (unsafe { DeviceControl::from_irp(irp) }) else {
            // Bad input like any other refusal: a status and a trace event.
            ebpf_ext_trace::trace_message_status!(
                ebpf_ext_trace::Level::Warning,
                ebpf_ext_trace::keyword::EXTENSION,
                "control code refused: not METHOD_BUFFERED",
                STATUS_INVALID_DEVICE_REQUEST
            );
            // SAFETY: as above; completed once.
            return unsafe { complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
        };
        let Some(running) = global.get() else {
            // The device exists, but the driver is not published: the request came between
            // the control device's creation and the end of `DriverEntry`, or after unload
            // began taking the driver.
            ebpf_ext_trace::trace_message_status!(
                ebpf_ext_trace::Level::Warning,
                ebpf_ext_trace::keyword::BASE,
                "control request refused: the driver is not running",
                STATUS_DEVICE_NOT_READY
            );
            // SAFETY: as above.
            return unsafe { complete_request(irp, STATUS_DEVICE_NOT_READY, 0) };
        };
        let (code, input_len, output_len) =
            (control.code(), control.input_len(), control.output_len());
        let request = Request::new(code, control.buffer(), input_len, output_len);
        let id = request.id();
        let completion = running.device_control(request);
        drop(running);
        let (mut status, mut information) = (completion.status(), completion.information());
        if !completion.answers(id, output_len) {
            // A reply to another request (kept from an earlier one, or made over a buffer of
            // the driver's own): its bytes are not this request's, so the I/O manager would
            // copy stale pool memory (or more than the caller's buffer holds) to user mode.
            ebpf_ext_trace::trace_message_status!(
                ebpf_ext_trace::Level::Error,
                ebpf_ext_trace::keyword::BASE,
                "a reply to another request refused",
                STATUS_INTERNAL_ERROR
            );
            (status, information) = (STATUS_INTERNAL_ERROR, 0);
        }
        // SAFETY: as above.
        unsafe { complete_request(irp, status, information) }
    }
}

/// Declares a driver's entry points for an [`ExtensionDriver`]: `driver_entry` (exported as
/// `DriverEntry` on Windows; on the host it keeps its Rust name so several drivers link into
/// one test), the unload and dispatch routines, and the `static` that keeps the running
/// driver between them (a [`crate::global::DriverGlobal`], usable from callbacks without a
/// context: `DRIVER.get()` borrows the driver).
///
/// ```ignore
/// ebpf_extension_common::driver_entry!(static DRIVER: SampleNet);
/// ```
#[macro_export]
macro_rules! driver_entry {
    ($vis:vis static $global:ident : $driver:ty) => {
        /// The running driver, between `DriverEntry` and unload.
        $vis static $global: $crate::global::DriverGlobal<$crate::driver::Running<$driver>> =
            $crate::global::DriverGlobal::new(<$driver as $crate::driver::ExtensionDriver>::TAG);

        /// `DriverEntry`: starts the driver (see [`ExtensionDriver`]).
        ///
        /// # Safety
        /// Called once per load by the I/O manager (or a test) with a live driver object that
        /// outlives the driver; PASSIVE_LEVEL.
        ///
        /// [`ExtensionDriver`]: $crate::driver::ExtensionDriver
        #[cfg_attr(target_os = "windows", unsafe(export_name = "DriverEntry"))]
        pub unsafe extern "win64" fn driver_entry(
            driver: *mut $crate::sys::wdm::DRIVER_OBJECT,
            _registry_path: *const $crate::sys::ntdef::UNICODE_STRING,
        ) -> $crate::sys::ntdef::NTSTATUS {
            unsafe extern "win64" fn driver_unload(_driver: *mut $crate::sys::wdm::DRIVER_OBJECT) {
                $crate::driver::glue::unload(&$global);
            }
            unsafe extern "win64" fn dispatch_device_control(
                _device: *mut $crate::sys::wdm::DEVICE_OBJECT,
                irp: *mut $crate::sys::wdm::IRP,
            ) -> $crate::sys::ntdef::NTSTATUS {
                // SAFETY: the I/O manager's IRP for this driver's control device.
                unsafe { $crate::driver::glue::device_control(&$global, irp) }
            }
            // SAFETY: the caller's contract; the routines are this driver's, for `$global`.
            unsafe {
                $crate::driver::glue::entry(&$global, driver, driver_unload, dispatch_device_control)
            }
        }
    };
}
