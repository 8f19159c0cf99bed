//! Driver glue: device objects, start/stop ordering, panic handling and allocation.
//!
//! # Start and stop order
//!
//! An extension starts tracing, then its program-information provider, then its hook
//! providers, and stops in reverse: hooks first (so no program runs once the program type is
//! gone), then program information, then tracing. Holding them as fields of one struct in
//! stop order gets this for free — Rust drops fields in declaration order — and starting them
//! with `?` undoes partial work when a step fails, because the values already created are
//! dropped (in reverse) on the early return:
//!
//! ```ignore
//! struct Extension {
//!     hook: HookProvider<MyHook>,           // dropped first
//!     program_info: ProgramInfoProvider,
//!     device: Device,                       // the hook's work items use it
//!     tracing: Tracing,                     // dropped last
//! }
//!
//! fn start(driver: *mut DRIVER_OBJECT) -> Result<Extension> {
//!     let tracing = Tracing::start(&MY_PROVIDER)?;
//!     let device = Device::create(driver)?;
//!     let program_info = ProgramInfoProvider::register(&PROGRAM_DATA, TAG)?;
//!     // SAFETY: `device` outlives the hook (field order above).
//!     let hook = unsafe { HookProvider::register(HOOK_CONFIG, MyHook::new(), device.as_ptr())? };
//!     Ok(Extension { hook, program_info, device, tracing })
//! }
//! ```

use core::ptr::{self, NonNull};

use ebpf_ext_hook::{HookConfig, HookExtension, HookProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::{ProgramData, ProgramInfoProvider};
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
    /// [`Error::Api`] with `IoCreateDevice`'s status.
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
    /// The program type's description.
    pub program_data: &'static ProgramData,
    /// Pool tag for the providers' allocations.
    pub tag: PoolTag,
    /// The hook.
    pub hook: HookConfig<H::Parameter>,
    /// The hook's callbacks and data.
    pub extension: H,
}

/// A running extension with one program type and one hook: tracing, a device object, the
/// program-information provider and the hook provider. Fields drop in declaration order, which
/// is the stop order: hook, program information, device, tracing.
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
    /// `driver` is the driver's live `DRIVER_OBJECT`, which outlives the extension.
    ///
    /// # Errors
    /// The first step's error ([`ebpf_ext_sys::Error::Api`] naming the kernel routine, or
    /// [`ebpf_ext_sys::Error::InsufficientResources`]).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (DriverEntry).
    pub unsafe fn start(driver: *mut DRIVER_OBJECT, config: ExtensionConfig<H>) -> Result<Self> {
        let tracing = Tracing::start(config.trace_provider)?;
        ebpf_ext_trace::trace_entry!();
        // SAFETY: the caller's driver object outlives the device (dropped with the extension).
        let device = unsafe { Device::create(driver) }?;
        let program_info = ProgramInfoProvider::register(config.program_data, config.tag)?;
        // SAFETY: `device` is dropped after `hook` (field order).
        let hook =
            unsafe { HookProvider::register(config.hook, config.extension, device.as_ptr()) }?;
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
