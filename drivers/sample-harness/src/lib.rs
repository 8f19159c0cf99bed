//! Drives the sample extension drivers end to end on the host, as the eBPF core and a
//! user-mode client would: load (`DriverEntry`), attach programs with parameters through
//! core-sim, fire events, check verdicts, helper results and trace events, detach, unload,
//! and check that nothing leaked.
//!
//! A scenario takes the driver's entry point, so the same scenario runs against the sample
//! crates linked into this process and, later, against their built images. Each scenario
//! checks its own expectations and returns a report ([`net::NetReport`]) whose equality
//! across runs is what "the same behaviour" means; `cargo xtask demo` prints it.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host-only crate"
)]

use core::ptr;
use std::fmt::Write as _;

use ebpf_ext_sys::ntdef::{NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::DRIVER_OBJECT;
use ebpf_ext_usersim::{DriverObject, Kernel};

pub mod net;
pub mod ntos;

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

/// A driver loaded into the current usersim kernel.
pub struct LoadedDriver {
    object: DriverObject,
    _registry_path: Vec<u16>,
}

impl LoadedDriver {
    /// Calls `entry` as the I/O manager does, with a registry path for `service`.
    ///
    /// # Errors
    /// The status `DriverEntry` returned (the driver is then not loaded and its unload
    /// routine is not called, as on Windows).
    ///
    /// # Panics
    /// If the service name is absurdly long.
    pub fn load(entry: DriverEntry, service: &str) -> Result<LoadedDriver, NTSTATUS> {
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
        // SAFETY: a fresh driver object that outlives the driver (it is dropped after unload)
        // and a valid registry path.
        let status = unsafe { entry(object.as_ptr(), &raw const registry_path) };
        if status == STATUS_SUCCESS {
            Ok(LoadedDriver {
                object,
                _registry_path: path,
            })
        } else {
            Err(status)
        }
    }

    /// Calls the driver's unload routine.
    ///
    /// # Panics
    /// If the driver set none.
    pub fn unload(mut self) {
        let unload = self
            .object
            .get()
            .DriverUnload
            .expect("the driver sets DriverUnload");
        // SAFETY: the loaded driver's own unload routine, called once with its object.
        unsafe { unload(self.object.as_ptr()) };
    }

    /// The driver object.
    #[must_use]
    pub fn object(&self) -> *const DRIVER_OBJECT {
        ptr::from_ref(self.object.get())
    }
}

/// The trace events one provider wrote, one line each: event name, then its fields.
#[must_use]
pub fn trace_lines(kernel: &Kernel, provider_name: &str) -> Vec<String> {
    kernel
        .etw_events()
        .iter()
        .filter(|e| e.provider_name.as_deref() == Some(provider_name))
        .map(|e| {
            let mut line = e.name.clone();
            for field in &e.fields {
                let _ = write!(line, " {}={:?}", field.name, field.value);
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
/// its prototype requires.
#[must_use]
pub unsafe fn call_helper(address: u64, args: [u64; 5]) -> u64 {
    type Helper = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;
    // SAFETY: the caller guarantees `address` is such a helper.
    let helper: Helper = unsafe { core::mem::transmute::<u64, Helper>(address) };
    // SAFETY: the caller guarantees the arguments.
    unsafe { helper(args[0], args[1], args[2], args[3], args[4]) }
}
