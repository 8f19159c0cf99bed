//! A control device for user-mode requests: a named device object with a symbolic link,
//! restricted to SYSTEM and Administrators, and the `METHOD_BUFFERED` device-control plumbing
//! every extension's IOCTL handler needs.
//!
//! # Access restriction without `IoCreateDeviceSecure`
//!
//! `IoCreateDeviceSecure` lives in the WDK's static `wdmsec.lib`, which a build without the
//! WDK cannot link. [`ControlDevice::create`] gets the same effect from kernel exports: it
//! builds an absolute security descriptor whose protected DACL grants `GENERIC_ALL` to
//! LocalSystem (S-1-5-18) and BUILTIN\Administrators (S-1-5-32-544) and nothing to anyone
//! else — `D:P(A;;GA;;;SY)(A;;GA;;;BA)`, the SDDL the eBPF sample extension uses — with
//! `RtlCreateSecurityDescriptor`, `RtlCreateAcl`, `RtlAddAccessAllowedAce` and
//! `RtlSetDaclSecurityDescriptor`, and applies it to the new device object with
//! `ObSetSecurityObjectByPointer` (an exported routine that Windows' own components use on
//! fresh device objects, though it is not documented). The device is created with
//! `FILE_DEVICE_SECURE_OPEN`, so the DACL also covers opens of `\Device\Name\anything`. The
//! object manager then refuses other callers' opens with `STATUS_ACCESS_DENIED` before the
//! driver sees `IRP_MJ_CREATE`.
//!
//! If the DACL cannot be applied the device is deleted and creation fails: a control device
//! that anyone could open is never published.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use ebpf_ext_sys::ntdef::{NTSTATUS, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    ACL, ACL_REVISION, ALIAS_ADMINS_SID, DACL_SECURITY_INFORMATION, GENERIC_ALL, LOCAL_SYSTEM_SID,
    ObSetSecurityObjectByPointer, RtlAddAccessAllowedAce, RtlCreateAcl,
    RtlCreateSecurityDescriptor, RtlSetDaclSecurityDescriptor, SE_DACL_PROTECTED,
    SECURITY_DESCRIPTOR, SECURITY_DESCRIPTOR_REVISION,
};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DO_DEVICE_INITIALIZING, DRIVER_OBJECT, FILE_DEVICE_SECURE_OPEN, IRP,
    IRP_MJ_DEVICE_CONTROL, IoCreateDevice, IoCreateSymbolicLink, IoDeleteDevice,
    IoDeleteSymbolicLink, IoGetCurrentIrpStackLocation, IofCompleteRequest, METHOD_BUFFERED,
};
use ebpf_ext_sys::{Error, Result};

/// Encodes an ASCII string literal as UTF-16 at compile time, for device and link names:
/// `utf16!("\\Device\\MyExt")` is a `&'static [u16]`.
#[macro_export]
macro_rules! utf16 {
    ($s:literal) => {{
        const UTF16: [u16; $s.len()] = $crate::control::ascii_to_utf16($s);
        &UTF16 as &'static [u16]
    }};
}

/// `s` as UTF-16 (compile-time helper of [`utf16!`]).
///
/// # Panics
/// At compile time, if `s` is not ASCII or not `N` bytes long.
#[must_use]
pub const fn ascii_to_utf16<const N: usize>(s: &str) -> [u16; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() == N, "length mismatch");
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        assert!(bytes[i].is_ascii(), "utf16! takes ASCII only");
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

fn unicode(units: &'static [u16]) -> Result<UNICODE_STRING> {
    let length = u16::try_from(units.len() * 2).map_err(|_| Error::InvalidParameter)?;
    Ok(UNICODE_STRING {
        Length: length,
        MaximumLength: length,
        // The kernel only reads names passed to it.
        Buffer: units.as_ptr().cast_mut(),
    })
}

/// Applies the SYSTEM-and-Administrators DACL (see the module documentation) to `device`.
///
/// # Safety
/// `device` is a live device object.
///
/// # Errors
/// [`Error::Api`] naming the routine that failed.
///
/// # IRQL
/// PASSIVE_LEVEL.
pub unsafe fn restrict_to_system_and_administrators(device: *mut DEVICE_OBJECT) -> Result {
    // Room for the ACL header and two ACEs (8 + 12 and 8 + 16 bytes), 4-byte aligned.
    const ACL_BYTES: usize = 8 + (8 + 12) + (8 + 16);
    let mut acl_buffer = [0u32; ACL_BYTES / 4];
    let acl = acl_buffer.as_mut_ptr().cast::<ACL>();
    #[expect(clippy::cast_possible_truncation, reason = "52 bytes")]
    // SAFETY: `acl` points to ACL_BYTES writable, 4-byte aligned bytes.
    let status = unsafe { RtlCreateAcl(acl, ACL_BYTES as u32, ACL_REVISION) };
    check("RtlCreateAcl", status)?;
    let system = ptr::from_ref(&LOCAL_SYSTEM_SID).cast();
    // SAFETY: an initialised ACL with room for the ACE; a valid SID.
    let status = unsafe { RtlAddAccessAllowedAce(acl, ACL_REVISION, GENERIC_ALL, system) };
    check("RtlAddAccessAllowedAce", status)?;
    let admins = ptr::from_ref(&ALIAS_ADMINS_SID).cast();
    // SAFETY: as above.
    let status = unsafe { RtlAddAccessAllowedAce(acl, ACL_REVISION, GENERIC_ALL, admins) };
    check("RtlAddAccessAllowedAce", status)?;
    let mut sd = SECURITY_DESCRIPTOR::EMPTY;
    // SAFETY: a writable descriptor.
    let status = unsafe { RtlCreateSecurityDescriptor(&raw mut sd, SECURITY_DESCRIPTOR_REVISION) };
    check("RtlCreateSecurityDescriptor", status)?;
    // SAFETY: an absolute descriptor and an ACL that outlives its use below.
    let status = unsafe { RtlSetDaclSecurityDescriptor(&raw mut sd, TRUE, acl, 0) };
    check("RtlSetDaclSecurityDescriptor", status)?;
    // Protected: no inheritance from the object directory.
    sd.Control |= SE_DACL_PROTECTED;
    // SAFETY: the caller's live device; the descriptor and its ACL live on this stack frame,
    // and the object manager copies what it keeps.
    let status = unsafe {
        ObSetSecurityObjectByPointer(device.cast(), DACL_SECURITY_INFORMATION, &raw mut sd)
    };
    check("ObSetSecurityObjectByPointer", status)
}

fn check(api: &'static str, status: NTSTATUS) -> Result {
    if status == STATUS_SUCCESS {
        Ok(())
    } else {
        ebpf_ext_trace::trace_api_failure!(ebpf_ext_trace::keyword::BASE, api, status);
        Err(Error::api(api, status))
    }
}

/// A named device object with a symbolic link, open to SYSTEM and Administrators only;
/// deleted (link first) on drop.
///
/// # IRQL
/// Created and dropped at PASSIVE_LEVEL (`IoDeleteSymbolicLink` is PASSIVE_LEVEL only); the
/// driver glue does both in `DriverEntry` and unload.
///
/// # Invariants
/// `device` came from `IoCreateDevice` and `link` names a symbolic link to it; both are
/// deleted only in `Drop`.
pub struct ControlDevice {
    device: NonNull<DEVICE_OBJECT>,
    link: &'static [u16],
}

// SAFETY: a device object may be used and deleted from any thread at the documented IRQLs.
unsafe impl Send for ControlDevice {}
// SAFETY: `ControlDevice` exposes only its pointer.
unsafe impl Sync for ControlDevice {}

impl ControlDevice {
    /// Creates `name` (`\Device\X`) of `device_type` with `FILE_DEVICE_SECURE_OPEN`,
    /// restricts it to SYSTEM and Administrators, links `link` (`\GLOBAL??\X`, so user mode
    /// opens `\\.\X`) to it and marks it initialised. A failed step undoes the earlier ones.
    ///
    /// # Safety
    /// `driver` is the driver's live `DRIVER_OBJECT`, which outlives the device; its
    /// `MajorFunction` table is set before the device can receive requests.
    ///
    /// # Errors
    /// [`Error::Api`] naming the kernel routine that failed.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub unsafe fn create(
        driver: *mut DRIVER_OBJECT,
        name: &'static [u16],
        link: &'static [u16],
        device_type: u32,
    ) -> Result<Self> {
        let mut name_string = unicode(name)?;
        let mut link_string = unicode(link)?;
        let mut device = ptr::null_mut();
        // SAFETY: the caller's live driver object; the name and out pointer are locals.
        let status = unsafe {
            IoCreateDevice(
                driver,
                0,
                &raw mut name_string,
                device_type,
                FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut device,
            )
        };
        check("IoCreateDevice", status)?;
        let Some(device) = NonNull::new(device) else {
            return Err(Error::Unsuccessful);
        };
        // SAFETY: a device just created.
        if let Err(e) = unsafe { restrict_to_system_and_administrators(device.as_ptr()) } {
            // SAFETY: created above, not yet published.
            unsafe { IoDeleteDevice(device.as_ptr()) };
            return Err(e);
        }
        // SAFETY: valid strings; the kernel copies them.
        let status = unsafe { IoCreateSymbolicLink(&raw mut link_string, &raw mut name_string) };
        if let Err(e) = check("IoCreateSymbolicLink", status) {
            // SAFETY: as above.
            unsafe { IoDeleteDevice(device.as_ptr()) };
            return Err(e);
        }
        // SAFETY: our device; clearing the flag lets the I/O manager send it requests.
        unsafe { (*device.as_ptr()).Flags &= !DO_DEVICE_INITIALIZING };
        // INVARIANT: device and link created above.
        Ok(ControlDevice { device, link })
    }

    /// The device object.
    #[must_use]
    pub fn as_ptr(&self) -> *mut DEVICE_OBJECT {
        self.device.as_ptr()
    }
}

impl Drop for ControlDevice {
    fn drop(&mut self) {
        if let Ok(mut link) = unicode(self.link) {
            // SAFETY: the link created in `create` (type invariant).
            let status = unsafe { IoDeleteSymbolicLink(&raw mut link) };
            let _ = check("IoDeleteSymbolicLink", status);
        }
        // SAFETY: created by IoCreateDevice and deleted once (type invariant).
        unsafe { IoDeleteDevice(self.device.as_ptr()) };
    }
}

/// A `METHOD_BUFFERED` device-control request: its control code and the one system buffer
/// that holds the input on entry and the output on completion.
pub struct DeviceControl<'irp> {
    code: u32,
    buffer: *mut u8,
    input_len: usize,
    output_len: usize,
    _irp: PhantomData<&'irp mut IRP>,
}

impl DeviceControl<'_> {
    /// Reads the current stack location of an `IRP_MJ_DEVICE_CONTROL` request, and zeroes
    /// the system buffer past the input (the I/O manager leaves those bytes as the pool had
    /// them). `None` if the IRP is another kind, or the code is not `METHOD_BUFFERED`.
    ///
    /// # Safety
    /// `irp` is the IRP a dispatch routine received, not yet completed, and outlives `'irp`.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL (the system buffer is non-paged); a dispatch routine runs at
    /// PASSIVE_LEVEL.
    #[must_use]
    pub unsafe fn from_irp(irp: *mut IRP) -> Option<Self> {
        // SAFETY: the caller passes an IRP in its dispatch routine.
        let stack = unsafe { IoGetCurrentIrpStackLocation(irp) };
        // SAFETY: the current stack location of a live IRP.
        let stack = unsafe { &*stack };
        if stack.MajorFunction != IRP_MJ_DEVICE_CONTROL {
            return None;
        }
        // SAFETY: device-control parameters are the active member for IRP_MJ_DEVICE_CONTROL.
        let parameters = unsafe { stack.Parameters.DeviceIoControl };
        if parameters.IoControlCode & 3 != METHOD_BUFFERED {
            return None;
        }
        // SAFETY: a live IRP.
        let associated = unsafe { (*irp).AssociatedIrp };
        // SAFETY: METHOD_BUFFERED: the system buffer is the active member.
        let buffer = unsafe { associated.SystemBuffer }.cast::<u8>();
        let (input_len, output_len) = if buffer.is_null() {
            (0, 0)
        } else {
            (
                parameters.InputBufferLength as usize,
                parameters.OutputBufferLength as usize,
            )
        };
        if output_len > input_len {
            // The I/O manager does not initialise the buffer past the input: zero it, so the
            // whole buffer is initialised bytes ([`DeviceControl::buffer`]) and nothing of
            // what the pool held before can reach the caller.
            // METHOD_BUFFERED: the system buffer holds max(input, output) bytes, owned by this
            // request until completion.
            let past_input = buffer.wrapping_add(input_len);
            // SAFETY: the `output_len - input_len` bytes after the input are in that buffer.
            unsafe { ptr::write_bytes(past_input, 0, output_len - input_len) };
        }
        Some(DeviceControl {
            code: parameters.IoControlCode,
            buffer,
            input_len,
            output_len,
            _irp: PhantomData,
        })
    }

    /// The control code.
    #[must_use]
    pub fn code(&self) -> u32 {
        self.code
    }

    /// Input length in bytes.
    #[must_use]
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Output length in bytes.
    #[must_use]
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// The whole system buffer (max(input, output) bytes): the input on entry, then zeros
    /// (see [`DeviceControl::from_irp`]), where the output is written. Its start is 16-byte
    /// aligned, as pool allocations are; the driver must still check lengths before reading a
    /// structure from it.
    #[must_use]
    pub fn buffer(&mut self) -> &mut [u8] {
        if self.buffer.is_null() {
            return &mut [];
        }
        // SAFETY: METHOD_BUFFERED: the I/O manager allocated max(input, output) bytes, owned
        // by this request until completion, which `&mut self` outlives.
        unsafe { core::slice::from_raw_parts_mut(self.buffer, self.input_len.max(self.output_len)) }
    }
}

/// Completes `irp` with `status` and `information` (no priority boost) and returns `status`,
/// for a dispatch routine to return.
///
/// # Safety
/// `irp` is the IRP the dispatch routine received, not yet completed; it must not be touched
/// afterwards.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub unsafe fn complete_request(irp: *mut IRP, status: NTSTATUS, information: usize) -> NTSTATUS {
    // SAFETY: the caller owns the IRP until this completion.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.u.Status = status;
    io_status.Information = information;
    // SAFETY: as above; the IRP is not touched afterwards.
    unsafe { IofCompleteRequest(irp, 0) };
    status
}

/// A dispatch routine for `IRP_MJ_CREATE`, `IRP_MJ_CLEANUP` and `IRP_MJ_CLOSE` that
/// succeeds: access was already checked against the device's DACL.
///
/// # Safety
/// Called by the I/O manager with a live device and IRP.
///
/// # IRQL
/// PASSIVE_LEVEL (the I/O manager calls these dispatch routines there).
pub unsafe extern "win64" fn dispatch_succeed(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the I/O manager's IRP, completed once.
    unsafe { complete_request(irp, STATUS_SUCCESS, 0) }
}
