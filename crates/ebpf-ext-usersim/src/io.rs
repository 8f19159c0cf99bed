//! Security descriptors on device objects, and the I/O manager's side of opening a device and
//! sending it requests: tests open a driver's control device as a given caller, send
//! `METHOD_BUFFERED` IOCTLs through the driver's real dispatch routines, and close it.
//!
//! The security routines work on the real byte layouts (`SECURITY_DESCRIPTOR`, `ACL`,
//! `ACCESS_ALLOWED_ACE`, `SID`). `ObSetSecurityObjectByPointer` records the DACL of a device,
//! and [`Kernel::open`] checks it against the caller's groups before the driver sees
//! `IRP_MJ_CREATE`, as the object manager does. A device with no recorded DACL is open to
//! everyone (the real default for a named device created without one is unconfirmed).

use core::ffi::c_void;
use core::{mem, ptr};

use ebpf_ext_sys::ntdef::{BOOLEAN, NTSTATUS, UserMode};
use ebpf_ext_sys::ntifs::{
    ACCESS_ALLOWED_ACE_TYPE, ACL, ACL_REVISION, ALIAS_ADMINS_SID, ALIAS_USERS_SID,
    AUTHENTICATED_USERS_SID, DACL_SECURITY_INFORMATION, FILE_ALL_ACCESS, GENERIC_ALL, GENERIC_READ,
    GENERIC_WRITE, LOCAL_SYSTEM_SID, SE_DACL_PRESENT, SE_SELF_RELATIVE, SECURITY_DESCRIPTOR,
    SECURITY_DESCRIPTOR_REVISION, WORLD_SID,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_ALLOTTED_SPACE_EXCEEDED, STATUS_BUFFER_TOO_SMALL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_ACL, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER, STATUS_INVALID_SECURITY_DESCR, STATUS_INVALID_SID,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_PENDING, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
    STATUS_UNKNOWN_REVISION,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DEVICE_OBJECT, DRIVER_VERIFIER_DETECTED_VIOLATION, IO_STACK_LOCATION,
    IO_STACK_LOCATION_DEVICE_IO_CONTROL, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE,
    IRP_MJ_DEVICE_CONTROL, METHOD_BUFFERED, PASSIVE_LEVEL,
};

use crate::kernel::{Kernel, bugcheck, call_fails, lock, require_irql, with_kernel};

/// Longest SID: 8 bytes of header and 15 sub-authorities.
const MAX_SID_LENGTH: usize = 8 + 4 * 15;

/// The length of a SID from its 8-byte header, or `None` if the header is not a valid SID's.
fn sid_length(header: &[u8]) -> Option<usize> {
    let (&revision, &count) = (header.first()?, header.get(1)?);
    (revision == 1 && count <= 15).then(|| 8 + 4 * usize::from(count))
}

/// Parses a SID at the start of `bytes`: its bytes, or `None` if it is not a valid SID.
fn parse_sid(bytes: &[u8]) -> Option<&[u8]> {
    bytes.get(..sid_length(bytes)?)
}

/// Reads a SID's bytes, or `None` if it is not a valid SID.
///
/// # Safety
/// `sid` is NULL or points to at least 8 readable bytes, and to the whole SID if its header
/// is valid.
pub(crate) unsafe fn read_sid(sid: *const u8) -> Option<Vec<u8>> {
    if sid.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees the 8-byte header is readable.
    let header = unsafe { core::slice::from_raw_parts(sid, 8) };
    let len = sid_length(header)?;
    // SAFETY: a valid header: the caller guarantees the whole SID is readable.
    let whole = unsafe { core::slice::from_raw_parts(sid, len) };
    Some(whole.to_vec())
}

/// The bytes of an ACL (its `AclSize`), or `None` if the header is not a valid ACL's.
///
/// # Safety
/// `acl` points to a readable buffer of at least its `AclSize` bytes.
unsafe fn acl_bytes<'a>(acl: *const ACL) -> Option<&'a [u8]> {
    // SAFETY: the caller passes a readable ACL header.
    let header = unsafe { ptr::read_unaligned(acl) };
    if !(2..=4).contains(&header.AclRevision) || usize::from(header.AclSize) < mem::size_of::<ACL>()
    {
        return None;
    }
    // SAFETY: the caller guarantees `AclSize` readable bytes.
    Some(unsafe { core::slice::from_raw_parts(acl.cast::<u8>(), usize::from(header.AclSize)) })
}

/// One ACE: type, access mask, its bytes.
type Ace<'a> = (u8, u32, &'a [u8]);

/// Walks the ACEs of an ACL: each ACE, and the end of the last one.
fn walk_acl(acl: &[u8]) -> Option<(Vec<Ace<'_>>, usize)> {
    let count = u16::from_le_bytes([acl[4], acl[5]]);
    let mut offset = mem::size_of::<ACL>();
    let mut aces = Vec::new();
    for _ in 0..count {
        let head = acl.get(offset..offset + 8)?;
        let size = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let mask = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let ace = acl.get(offset..offset.checked_add(size)?)?;
        if size < 8 {
            return None;
        }
        aces.push((head[0], mask, ace));
        offset += size;
    }
    Some((aces, offset))
}

/// `ACCESS_DENIED_ACE_TYPE`.
const ACCESS_DENIED_ACE_TYPE: u8 = 1;

/// The access-allowed and access-denied ACEs of an ACL, in order, as (type, mask, SID), or
/// `None` if it is malformed. Other ACE types do not grant or deny access to a device open.
fn access_aces(acl: &[u8]) -> Option<Vec<(u8, u32, Vec<u8>)>> {
    let (aces, _) = walk_acl(acl)?;
    aces.into_iter()
        .filter(|(kind, _, _)| matches!(*kind, ACCESS_ALLOWED_ACE_TYPE | ACCESS_DENIED_ACE_TYPE))
        .map(|(kind, mask, ace)| parse_sid(&ace[8..]).map(|sid| (kind, mask, sid.to_vec())))
        .collect()
}

/// Whether a DACL grants `wanted` to a caller with `groups`, evaluated as the kernel does: ACEs
/// in order, a matching deny of any wanted right refuses, allows accumulate until every wanted
/// right is granted. `GENERIC_ALL` (or `FILE_ALL_ACCESS`) covers every right.
fn access_granted(aces: &[(u8, u32, Vec<u8>)], groups: &[Vec<u8>], wanted: u32) -> bool {
    let covers = |mask: u32| {
        if mask & GENERIC_ALL != 0 || mask & FILE_ALL_ACCESS == FILE_ALL_ACCESS {
            wanted
        } else {
            mask & wanted
        }
    };
    let mut granted = 0;
    for (kind, mask, sid) in aces {
        if !groups.contains(sid) {
            continue;
        }
        let rights = covers(*mask) & !granted;
        if *kind == ACCESS_DENIED_ACE_TYPE && rights != 0 {
            return false;
        }
        if *kind == ACCESS_ALLOWED_ACE_TYPE {
            granted |= rights;
            if granted == wanted {
                return true;
            }
        }
    }
    false
}

/// `RtlCreateSecurityDescriptor`.
///
/// # Safety
/// Kernel routine; `SecurityDescriptor` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlCreateSecurityDescriptor(
    SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    Revision: u32,
) -> NTSTATUS {
    const API: &str = "RtlCreateSecurityDescriptor";
    require_irql(API, PASSIVE_LEVEL);
    if Revision != SECURITY_DESCRIPTOR_REVISION {
        return STATUS_UNKNOWN_REVISION;
    }
    // SAFETY: the caller passes a writable descriptor.
    unsafe { SecurityDescriptor.write(SECURITY_DESCRIPTOR::EMPTY) };
    STATUS_SUCCESS
}

/// `RtlCreateAcl`.
///
/// # Safety
/// Kernel routine; `Acl` points to `AclLength` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlCreateAcl(
    Acl: *mut ACL,
    AclLength: u32,
    AclRevision: u32,
) -> NTSTATUS {
    const API: &str = "RtlCreateAcl";
    require_irql(API, PASSIVE_LEVEL);
    if (AclLength as usize) < mem::size_of::<ACL>() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    let Ok(size) = u16::try_from(AclLength) else {
        return STATUS_INVALID_PARAMETER;
    };
    if !(2..=4).contains(&AclRevision) || Acl.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    #[expect(clippy::cast_possible_truncation, reason = "checked 2..=4")]
    let revision = AclRevision as u8;
    // SAFETY: the caller passes at least 8 writable bytes (checked length).
    unsafe {
        Acl.write_unaligned(ACL {
            AclRevision: revision,
            Sbz1: 0,
            AclSize: size,
            AceCount: 0,
            Sbz2: 0,
        });
    }
    STATUS_SUCCESS
}

/// `RtlAddAccessAllowedAce`.
///
/// # Safety
/// Kernel routine; `Acl` is a valid ACL buffer and `Sid` a readable SID.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlAddAccessAllowedAce(
    Acl: *mut ACL,
    AceRevision: u32,
    AccessMask: u32,
    Sid: *const c_void,
) -> NTSTATUS {
    const API: &str = "RtlAddAccessAllowedAce";
    require_irql(API, PASSIVE_LEVEL);
    if Acl.is_null() {
        return STATUS_INVALID_ACL;
    }
    // SAFETY: the caller passes a readable SID.
    let Some(sid) = (unsafe { read_sid(Sid.cast()) }) else {
        return STATUS_INVALID_SID;
    };
    // SAFETY: the caller passes a valid ACL buffer.
    let Some(bytes) = (unsafe { acl_bytes(Acl) }) else {
        return STATUS_INVALID_ACL;
    };
    let (revision, size, count) = (
        bytes[0],
        bytes.len(),
        u16::from_le_bytes([bytes[4], bytes[5]]),
    );
    if AceRevision != u32::from(revision) && AceRevision != ACL_REVISION {
        return STATUS_REVISION_MISMATCH;
    }
    let Some((_, used)) = walk_acl(bytes) else {
        return STATUS_INVALID_ACL;
    };
    let ace_size = 8 + sid.len();
    if used + ace_size > size {
        return STATUS_ALLOTTED_SPACE_EXCEEDED;
    }
    debug_assert!(sid.len() <= MAX_SID_LENGTH);
    #[expect(clippy::cast_possible_truncation, reason = "at most 76 bytes")]
    let size_bytes = (ace_size as u16).to_le_bytes();
    let mask = AccessMask.to_le_bytes();
    let mut ace = vec![ACCESS_ALLOWED_ACE_TYPE, 0, size_bytes[0], size_bytes[1]];
    ace.extend_from_slice(&mask);
    ace.extend_from_slice(&sid);
    let destination = Acl.cast::<u8>().wrapping_add(used);
    // SAFETY: `used + ace_size ≤ AclSize`: inside the caller's buffer.
    unsafe { ptr::copy_nonoverlapping(ace.as_ptr(), destination, ace_size) };
    // SAFETY: the ACL header is writable.
    unsafe { (*Acl).AceCount = count + 1 };
    STATUS_SUCCESS
}

/// `RtlSetDaclSecurityDescriptor`.
///
/// # Safety
/// Kernel routine; `SecurityDescriptor` is a valid absolute descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn RtlSetDaclSecurityDescriptor(
    SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    DaclPresent: BOOLEAN,
    Dacl: *mut ACL,
    DaclDefaulted: BOOLEAN,
) -> NTSTATUS {
    const API: &str = "RtlSetDaclSecurityDescriptor";
    const SE_DACL_DEFAULTED: u16 = 0x0008;
    require_irql(API, PASSIVE_LEVEL);
    // SAFETY: the caller passes a valid descriptor.
    let sd = unsafe { &mut *SecurityDescriptor };
    if u32::from(sd.Revision) != SECURITY_DESCRIPTOR_REVISION {
        return STATUS_UNKNOWN_REVISION;
    }
    if sd.Control & SE_SELF_RELATIVE != 0 {
        return STATUS_INVALID_SECURITY_DESCR;
    }
    if DaclPresent == 0 {
        sd.Control &= !SE_DACL_PRESENT;
        return STATUS_SUCCESS;
    }
    sd.Control |= SE_DACL_PRESENT;
    sd.Dacl = Dacl;
    if DaclDefaulted == 0 {
        sd.Control &= !SE_DACL_DEFAULTED;
    } else {
        sd.Control |= SE_DACL_DEFAULTED;
    }
    STATUS_SUCCESS
}

/// `ObSetSecurityObjectByPointer`: usersim supports device objects and
/// `DACL_SECURITY_INFORMATION`.
///
/// # Safety
/// Kernel routine; `Object` is a live object and `SecurityDescriptor` a valid descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ObSetSecurityObjectByPointer(
    Object: *mut c_void,
    SecurityInformation: u32,
    SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
) -> NTSTATUS {
    const API: &str = "ObSetSecurityObjectByPointer";
    require_irql(API, APC_LEVEL);
    let known = with_kernel(API, |k| {
        lock(&k.devices).devices.contains_key(&(Object as usize))
    });
    if !known {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [Object as u64, 0, 0, 0],
            "ObSetSecurityObjectByPointer on something that is not a live device object",
        );
    }
    if SecurityInformation != DACL_SECURITY_INFORMATION || SecurityDescriptor.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller passes a valid descriptor.
    let sd = unsafe { *SecurityDescriptor };
    if u32::from(sd.Revision) != SECURITY_DESCRIPTOR_REVISION
        || sd.Control & SE_DACL_PRESENT == 0
        || sd.Dacl.is_null()
    {
        return STATUS_INVALID_SECURITY_DESCR;
    }
    // SAFETY: a present DACL of a valid descriptor is a readable ACL.
    let Some(aces) = (unsafe { acl_bytes(sd.Dacl) }).and_then(access_aces) else {
        return STATUS_INVALID_ACL;
    };
    with_kernel(API, |k| {
        if call_fails(k, API) {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        lock(&k.devices).dacls.insert(Object as usize, aces);
        STATUS_SUCCESS
    })
}

/// Who opens a device in [`Kernel::open`]: a user-mode caller with the token groups such a
/// caller has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// LocalSystem (S-1-5-18; also a member of Administrators).
    System,
    /// An elevated administrator (Administrators, Users, Everyone).
    Administrator,
    /// A standard user (Users, Authenticated Users, Everyone).
    User,
}

impl Caller {
    fn sids(self) -> Vec<Vec<u8>> {
        let system = LOCAL_SYSTEM_SID.as_bytes();
        let admins = ALIAS_ADMINS_SID.as_bytes();
        let users = ALIAS_USERS_SID.as_bytes();
        let everyone = WORLD_SID.as_bytes();
        let groups: &[&[u8]] = match self {
            Caller::System => &[system, admins, everyone],
            Caller::Administrator => &[admins, users, everyone],
            Caller::User => &[users, AUTHENTICATED_USERS_SID.as_bytes(), everyone],
        };
        groups.iter().map(|sid| sid.to_vec()).collect()
    }
}

/// An open handle to a device from [`Kernel::open`]; close it with [`Kernel::close`].
#[derive(Debug)]
pub struct FileHandle {
    device: *mut DEVICE_OBJECT,
    caller: Caller,
}

impl FileHandle {
    /// The device it refers to.
    #[must_use]
    pub fn device(&self) -> *mut DEVICE_OBJECT {
        self.device
    }

    /// Who opened it.
    #[must_use]
    pub fn caller(&self) -> Caller {
        self.caller
    }
}

/// The result of [`Kernel::device_io_control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoResult {
    /// The status the driver completed the IRP with.
    pub status: NTSTATUS,
    /// `IoStatus.Information`.
    pub information: usize,
    /// What the caller gets back: the first `information` bytes of the system buffer unless
    /// the status is an error (then nothing).
    pub output: Vec<u8>,
}

/// A request's buffers, IRP and stack location, kept alive while the driver runs.
struct Request {
    irp: Box<IRP>,
    stack: Box<IO_STACK_LOCATION>,
    buffer: Vec<u128>,
}

impl Request {
    fn new(device: *mut DEVICE_OBJECT, major: u8, buffer_len: usize) -> Request {
        // SAFETY: IRP and IO_STACK_LOCATION are plain data; zero is their initial state.
        let mut irp: Box<IRP> = Box::new(unsafe { mem::zeroed() });
        // SAFETY: as above.
        let mut stack: Box<IO_STACK_LOCATION> = Box::new(unsafe { mem::zeroed() });
        irp.Type = 6;
        #[expect(clippy::cast_possible_truncation, reason = "0xD0 fits")]
        let size = mem::size_of::<IRP>() as u16;
        irp.Size = size;
        irp.StackCount = 1;
        irp.CurrentLocation = 1;
        irp.RequestorMode = UserMode;
        stack.MajorFunction = major;
        stack.DeviceObject = device;
        let mut buffer = vec![0u128; buffer_len.div_ceil(16)];
        irp.AssociatedIrp.SystemBuffer = if buffer_len == 0 {
            ptr::null_mut()
        } else {
            buffer.as_mut_ptr().cast()
        };
        irp.Tail.Overlay.CurrentStackLocation = ptr::addr_of_mut!(*stack);
        Request { irp, stack, buffer }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: `buffer` holds at least `len` bytes (rounded up to 16).
        unsafe { core::slice::from_raw_parts(self.buffer.as_ptr().cast::<u8>(), len) }
    }

    /// Sends the request to the device's driver and returns (status, information).
    fn send(&mut self, kernel: &Kernel, device: *mut DEVICE_OBJECT) -> (NTSTATUS, usize) {
        let major = self.stack.MajorFunction;
        // SAFETY: a live device of a loaded driver.
        let driver = unsafe { (*device).DriverObject };
        // SAFETY: as above.
        let Some(dispatch) = (unsafe { (*driver).MajorFunction[usize::from(major)] }) else {
            return (STATUS_INVALID_DEVICE_REQUEST, 0);
        };
        let irp = ptr::addr_of_mut!(*self.irp);
        let status = crate::kernel::call_driver_callback(
            "DRIVER_DISPATCH",
            dispatch as usize,
            crate::kernel::CalledFrom::SystemService,
            // SAFETY: the driver's dispatch routine with a live device and an IRP it owns until
            // it completes it.
            || unsafe { dispatch(device, irp) },
        );
        assert!(
            status != STATUS_PENDING,
            "usersim completes requests synchronously; the driver returned STATUS_PENDING for \
             IRP_MJ {major:#x}"
        );
        let completion = lock(&kernel.inner().devices)
            .completed
            .remove(&(irp as usize));
        let Some((completed, information)) = completion else {
            panic!(
                "the driver returned {status:#x} from IRP_MJ {major:#x} without completing the \
                 IRP (IoCompleteRequest): the caller would wait forever"
            );
        };
        assert_eq!(
            completed, status,
            "the dispatch routine returned a status other than the one it completed the IRP with"
        );
        (status, information)
    }
}

/// What the bytes of a `METHOD_BUFFERED` system buffer after the input hold when the driver
/// gets it. Windows does not clear them (they are whatever the pool block held), so a reply
/// whose `Information` covers bytes the driver did not write sends stale kernel memory to user
/// mode; usersim marks them so that tests see it.
pub const STALE_BYTE: u8 = 0xA5;

impl Kernel {
    fn resolve_device(&self, path: &str) -> Option<*mut DEVICE_OBJECT> {
        let devices = lock(&self.inner().devices);
        let name = if let Some(link) = path.strip_prefix("\\\\.\\") {
            [
                format!("\\GLOBAL??\\{link}"),
                format!("\\DosDevices\\{link}"),
                format!("\\??\\{link}"),
            ]
            .iter()
            .find_map(|l| devices.links.get(l).cloned())?
        } else {
            path.to_owned()
        };
        devices
            .devices
            .iter()
            .find(|(_, n)| n.as_deref() == Some(name.as_str()))
            .map(|(&device, _)| device as *mut DEVICE_OBJECT)
    }

    /// Opens a device by kernel name (`\Device\X`) or Win32 path (`\\.\X`, through a symbolic
    /// link) as `caller`: checks the device's DACL, then sends `IRP_MJ_CREATE` (a driver
    /// without a create routine fails the open with `STATUS_INVALID_DEVICE_REQUEST`, as the I/O
    /// manager does). Call from a thread with the kernel bound.
    ///
    /// # Errors
    /// `STATUS_OBJECT_NAME_NOT_FOUND`, `STATUS_ACCESS_DENIED`, or the driver's status.
    pub fn open(&self, path: &str, caller: Caller) -> Result<FileHandle, NTSTATUS> {
        let device = self
            .resolve_device(path)
            .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)?;
        if let Some(aces) = lock(&self.inner().devices).dacls.get(&(device as usize))
            && !access_granted(aces, &caller.sids(), GENERIC_READ | GENERIC_WRITE)
        {
            return Err(STATUS_ACCESS_DENIED);
        }
        let mut request = Request::new(device, IRP_MJ_CREATE, 0);
        match request.send(self, device) {
            (STATUS_SUCCESS, _) => Ok(FileHandle { device, caller }),
            (status, _) => Err(status),
        }
    }

    /// Sends a `METHOD_BUFFERED` device-control request: one system buffer of
    /// max(input, output) bytes holding `input` (and after it [`STALE_BYTE`]s, where Windows
    /// leaves the pool's old contents), `IRP_MJ_DEVICE_CONTROL` to the driver, and the output
    /// copied back as the I/O manager does.
    ///
    /// A driver that completes a successful request with `Information` above the output
    /// length is bug-checked (the copy would overrun the caller's buffer).
    ///
    /// A code of another transfer method (`METHOD_IN_DIRECT`, `METHOD_OUT_DIRECT`,
    /// `METHOD_NEITHER`) reaches the driver with its lengths but without buffers (usersim
    /// maps no user memory: the system buffer, `Type3InputBuffer` and `UserBuffer` are NULL),
    /// for tests of a driver that refuses it; it must fail, with no output.
    ///
    /// # Panics
    /// If the driver leaves the IRP pending or uncompleted (usersim completes
    /// synchronously), or completes a request of another method with anything but an error
    /// status and no output.
    #[must_use]
    pub fn device_io_control(
        &self,
        handle: &FileHandle,
        code: u32,
        input: &[u8],
        output_len: usize,
    ) -> IoResult {
        // The stack location's parameters: the same for every method (no buffer of the
        // caller's is mapped, so `Type3InputBuffer` is NULL).
        let parameters = IO_STACK_LOCATION_DEVICE_IO_CONTROL {
            OutputBufferLength: u32::try_from(output_len).expect("output under 4 GiB"),
            InputBufferLength: u32::try_from(input.len()).expect("input under 4 GiB"),
            IoControlCode: code,
            Type3InputBuffer: ptr::null_mut(),
            Padding0: 0,
            Padding1: 0,
            Padding2: 0,
        };
        if code & 3 != METHOD_BUFFERED {
            let mut request = Request::new(handle.device, IRP_MJ_DEVICE_CONTROL, 0);
            request.stack.Parameters.DeviceIoControl = parameters;
            let (status, information) = request.send(self, handle.device);
            assert!(
                (status.cast_unsigned() >> 30) == 3 && information == 0,
                "usersim gives a request of another method no buffers: it must fail ({status:#x}, {information})"
            );
            return IoResult {
                status,
                information,
                output: Vec::new(),
            };
        }
        let mut request = Request::new(
            handle.device,
            IRP_MJ_DEVICE_CONTROL,
            input.len().max(output_len),
        );
        // The buffer holds max(input, output) bytes: the input, then (when the output is
        // longer) bytes the I/O manager leaves as the pool block had them, which usersim makes
        // `STALE_BYTE` so that a reply covering them shows.
        let len = input.len().max(output_len);
        // SAFETY: `buffer` holds at least `len` bytes (rounded up to 16), all initialised.
        let system_buffer = unsafe {
            core::slice::from_raw_parts_mut(request.buffer.as_mut_ptr().cast::<u8>(), len)
        };
        let (head, tail) = system_buffer.split_at_mut(input.len());
        head.copy_from_slice(input);
        tail.fill(STALE_BYTE);
        request.stack.Parameters.DeviceIoControl = parameters;
        let (status, information) = request.send(self, handle.device);
        // The I/O manager copies `Information` bytes back unless the status is an error
        // (success, informational and warning statuses such as STATUS_BUFFER_OVERFLOW all
        // copy); more than the caller's buffer holds would overrun it.
        let is_error = (status.cast_unsigned() >> 30) == 3;
        if !is_error && information > output_len {
            bugcheck(
                "IofCompleteRequest",
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [code.into(), information as u64, output_len as u64, 0],
                "METHOD_BUFFERED request completed with Information above OutputBufferLength",
            );
        }
        let output = if is_error {
            Vec::new()
        } else {
            request.bytes(information).to_vec()
        };
        IoResult {
            status,
            information,
            output,
        }
    }

    /// Closes a handle: `IRP_MJ_CLEANUP`, then `IRP_MJ_CLOSE` (each only if the driver
    /// handles it).
    #[expect(clippy::needless_pass_by_value, reason = "a closed handle is gone")]
    pub fn close(&self, handle: FileHandle) {
        for major in [IRP_MJ_CLEANUP, IRP_MJ_CLOSE] {
            let mut request = Request::new(handle.device, major, 0);
            let _ = request.send(self, handle.device);
        }
    }
}
