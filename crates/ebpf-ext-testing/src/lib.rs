//! Host tests for eBPF extension drivers, generic over drivers.
//!
//! A test (a "scenario") takes a [`Target`]: the driver crate linked into the test process
//! ([`Target::Native`] with its `DriverEntry`), or its built, signed `.sys` image loaded by
//! `ebpf-ext-pe-loader` with every import bound to usersim ([`Target::Image`], see [`image`]).
//! [`LoadedDriver`] calls `DriverEntry` and the unload routine as the I/O manager does;
//! [`open`] also attaches core-sim's program-information client for the driver's program
//! type; [`trace_lines`] reads the driver's trace events; [`call_helper`] calls a published
//! helper as a JIT-compiled program does. A scenario returns a report whose equality across
//! the two targets is what "the same behaviour" means; [`compare::reports`] says where two
//! reports differ.
//!
//! ```no_run
//! use ebpf_ext_testing::{Target, image};
//! # fn scenario(_: &ebpf_ext_usersim::Kernel, _: Target<'_>) -> Result<String, String> { Ok(String::new()) }
//! # unsafe extern "win64" fn driver_entry(
//! #     _: *mut ebpf_ext_sys::wdm::DRIVER_OBJECT,
//! #     _: *const ebpf_ext_sys::ntdef::UNICODE_STRING,
//! # ) -> ebpf_ext_sys::ntdef::NTSTATUS { 0 }
//! let kernel = ebpf_ext_usersim::Kernel::new();
//! let linked = scenario(&kernel, Target::Native(driver_entry))?;
//! let kernel = ebpf_ext_usersim::Kernel::new();
//! let loaded = image::load(&kernel, "my_ext")?;
//! let signed = scenario(&kernel, Target::Image(&loaded.image))?;
//! ebpf_ext_testing::compare::reports(&linked, &signed)?;
//! # Ok::<(), String>(())
//! ```
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host-only crate"
)]

use core::ptr;
use std::fmt::Write as _;
use std::sync::Arc;

use ebpf_ext_core_sim::{ProgramInfo, ProgramInfoClient};
use ebpf_ext_pe_loader::LoadedImage;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntdef::{NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{DRIVER_OBJECT, DRIVER_UNLOAD};
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{DriverObject, Kernel};

pub mod compare;
pub mod image;
pub mod status;

/// A driver's `DriverEntry`.
pub type DriverEntry =
    unsafe extern "win64" fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;

/// Receives progress lines.
pub type Narrator<'a> = &'a mut dyn FnMut(&str);

/// A scenario's failed expectation.
pub type Failure = String;

/// Fails the scenario with a message unless `cond` holds.
#[macro_export]
macro_rules! expect {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The driver a scenario drives: the driver crate linked into this process, or its built,
/// signed image loaded by the PE loader ([`image`]).
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The crate's `DriverEntry`, called directly.
    Native(DriverEntry),
    /// A loaded `.sys` image: its entry point and unload routine run on a kernel-sized stack.
    Image(&'a LoadedImage),
}

impl Target<'_> {
    /// What a report says about it.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Target::Native(_) => "the driver crate linked into this process".into(),
            Target::Image(image) => format!(
                "the signed image {} loaded at {:#x}",
                image.name(),
                image.base()
            ),
        }
    }

    fn driver_entry(&self, object: *mut DRIVER_OBJECT, path: *const UNICODE_STRING) -> NTSTATUS {
        match self {
            // SAFETY: the driver's DriverEntry, with a fresh driver object and a valid path.
            Target::Native(entry) => unsafe { entry(object, path) },
            // SAFETY: as above; the image's imports are bound to usersim and a kernel is bound
            // to this thread.
            Target::Image(image) => unsafe { image.call_driver_entry(object.cast(), path.cast()) },
        }
    }

    fn unload(&self, unload: DRIVER_UNLOAD, object: *mut DRIVER_OBJECT) {
        match self {
            // SAFETY: the driver's own unload routine with its object.
            Target::Native(_) => unsafe { unload(object) },
            Target::Image(image) => {
                let rva = (unload as usize)
                    .checked_sub(image.base())
                    .and_then(|r| u32::try_from(r).ok())
                    .expect("the unload routine lies in the image");
                // SAFETY: as above, on a kernel-sized stack.
                let called = unsafe { image.call(rva, [object as usize]) };
                assert!(called.is_some(), "the unload routine lies in the image");
                let base = image.base();
                ebpf_ext_usersim::image_unloaded(image.name(), base..base + image.size());
            }
        }
    }
}

/// A driver loaded into the current usersim kernel.
pub struct LoadedDriver<'a> {
    target: Target<'a>,
    object: DriverObject,
    _registry_path: Vec<u16>,
}

impl<'a> LoadedDriver<'a> {
    /// Calls the target's `DriverEntry` as the I/O manager does, with a registry path for
    /// `service`.
    ///
    /// # Errors
    /// The status `DriverEntry` returned (the driver is then not loaded and its unload
    /// routine is not called, as on Windows).
    ///
    /// # Panics
    /// If the service name is absurdly long.
    pub fn load(target: Target<'a>, service: &str) -> Result<LoadedDriver<'a>, NTSTATUS> {
        let mut object = DriverObject::new();
        let mut path: Vec<u16> =
            format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}")
                .encode_utf16()
                .collect();
        let length = u16::try_from(path.len() * 2).expect("short path");
        let registry_path = UNICODE_STRING {
            Length: length,
            MaximumLength: length,
            Buffer: path.as_mut_ptr(),
        };
        let status = target.driver_entry(object.as_ptr(), &raw const registry_path);
        if status == STATUS_SUCCESS {
            Ok(LoadedDriver {
                target,
                object,
                _registry_path: path,
            })
        } else {
            Err(status)
        }
    }

    /// Calls the driver's unload routine. For a signed image, usersim then checks that no NMR
    /// registration, process notify routine or ETW enable callback still points into it
    /// ([`ebpf_ext_usersim::image_unloaded`]: bug check 0xCE otherwise). A driver linked into
    /// the test shares its addresses with the test, so it gets no such check; the kernel-wide
    /// `assert_no_leaks` at the end of a test covers it.
    ///
    /// # Panics
    /// If the driver set none.
    pub fn unload(mut self) {
        let unload = self
            .object
            .get()
            .DriverUnload
            .expect("the driver sets DriverUnload");
        self.target.unload(unload, self.object.as_ptr());
    }

    /// The driver object.
    #[must_use]
    pub fn object(&self) -> *const DRIVER_OBJECT {
        ptr::from_ref(self.object.get())
    }
}

/// A loaded driver and the core's view of its program type.
pub struct Opened<'a> {
    /// The loaded driver.
    pub driver: LoadedDriver<'a>,
    /// The core-sim's program-information client (drop it before unloading).
    pub info_client: ProgramInfoClient,
    /// The program information it validated.
    pub info: Arc<ProgramInfo>,
    /// Helper names, in id order.
    pub helpers: Vec<String>,
}

/// Loads `target` as `service` and attaches a program-information client for `program_type`,
/// narrating both steps. When the attach fails the driver is unloaded before the error
/// returns, so a fault sweep over `open` leaves nothing registered.
///
/// # Errors
/// If `DriverEntry` fails or the program information is refused.
pub fn open<'a>(
    target: Target<'a>,
    service: &str,
    program_type: GUID,
    say: Narrator<'_>,
) -> Result<Opened<'a>, Failure> {
    say("load: DriverEntry");
    let driver = LoadedDriver::load(target, service)
        .map_err(|s| format!("DriverEntry failed: {}", status::describe(s)))?;
    let info_client = match ProgramInfoClient::attach(program_type) {
        Ok(client) => client,
        Err(e) => {
            driver.unload();
            return Err(format!("program info: {e}"));
        }
    };
    let info = info_client.info();
    let helpers: Vec<String> = info.helpers.iter().map(|h| h.name.clone()).collect();
    say(&format!(
        "program type {:?}, helpers {helpers:?}",
        info.name
    ));
    Ok(Opened {
        driver,
        info_client,
        info,
        helpers,
    })
}

/// The trace events one provider wrote, one line each: event name, `[level L keyword K
/// opcode O]`, then its fields (each with its type: `U64(5)`).
#[must_use]
pub fn trace_lines(kernel: &Kernel, provider_name: &str) -> Vec<String> {
    kernel
        .etw_events()
        .iter()
        .filter(|e| e.provider_name.as_deref() == Some(provider_name))
        .map(|e| {
            // Level, keyword and opcode are what a trace session filters on: two modes that
            // wrote one event at different ones differ.
            let mut line = format!(
                "{} [level {} keyword {:#x} opcode {}]",
                e.name, e.level, e.keyword, e.opcode
            );
            for field in &e.fields {
                let status = match &field.value {
                    _ if !field.name.eq_ignore_ascii_case("status") => None,
                    Value::U64(v) => u32::try_from(*v).ok().map(u32::cast_signed),
                    Value::I64(v) => NTSTATUS::try_from(*v).ok(),
                    _ => None,
                };
                let _ = match status {
                    Some(status) => write!(line, " {}={}", field.name, status::describe(status)),
                    None => write!(line, " {}={:?}", field.name, field.value),
                };
            }
            if let Some(error) = &e.decode_error {
                let _ = write!(line, " (decode error: {error})");
            }
            line
        })
        .collect()
}

/// Calls a helper through the address the program-information provider published, as a
/// JIT-compiled program does.
///
/// # Safety
/// `address` is a helper with the eBPF helper calling convention, and the arguments are what
/// its prototype requires. A pointer argument is program memory as the core lends it: valid
/// for reads and writes for its size (even a read-only prototype's: the SDK reads it with
/// atomic loads), derived from a mutable borrow or a raw allocation (never from a `&[u8]`),
/// and not covered by a live Rust reference during the call.
#[must_use]
pub unsafe fn call_helper(address: u64, args: [u64; 5]) -> u64 {
    type Helper = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;
    // SAFETY: the caller guarantees `address` is such a helper.
    let helper: Helper = unsafe { core::mem::transmute::<u64, Helper>(address) };
    // SAFETY: the caller guarantees the arguments.
    unsafe { helper(args[0], args[1], args[2], args[3], args[4]) }
}
