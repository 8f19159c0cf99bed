//! Device objects, symbolic links and IRP completion, plus a simulated `DRIVER_OBJECT` for
//! tests and leak checks of kernel objects.
//!
//! # Object lifetimes
//!
//! As in the object manager, a device object is referenced: by the I/O manager from
//! `IoCreateDevice` until `IoDeleteDevice`, and by each work item from `IoQueueWorkItem` until
//! its routine has returned. `IoDeleteDevice` removes the device's name and unlinks it from
//! its driver at once (it is delete-pending); its memory goes when the last reference drops.
//! A device object in turn references its driver object, and the driver object is what keeps
//! the driver image loaded: a [`DriverObject`] lives until the test dropped it *and* its last
//! device object was freed, and then drops what [`DriverObject::keep_alive`] gave it (the
//! image). So a driver whose unload routine deletes its device while one of its work item
//! routines is still returning (ebpf-for-windows issue #2197) keeps its device object, driver
//! object and image until that routine has returned, as on Windows.

use core::any::Any;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::{mem, ptr};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use ebpf_ext_sys::ntdef::{BOOLEAN, NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DEVICE_OBJECT, DISPATCH_LEVEL, DO_DEVICE_INITIALIZING, DRIVER_EXTENSION,
    DRIVER_OBJECT, DRIVER_VERIFIER_DETECTED_VIOLATION, FILE_DEVICE_UNKNOWN, IRP, PASSIVE_LEVEL,
    POOL_FLAG_NON_PAGED,
};

use crate::kernel::{
    Inner, Kernel, bugcheck, call_fails, lock, require_irql, try_with_kernel, with_kernel,
};
use crate::pool::{pool_alloc, pool_free};

const DEVICE_TAG: u32 = u32::from_le_bytes(*b"Devi");
const MULTIPLE_IRP_COMPLETE_REQUESTS: u32 = 0x44;

/// A device object's references and what it keeps alive.
struct DeviceObjectState {
    /// The I/O manager's (until `IoDeleteDevice`) plus one per queued or running work item.
    references: usize,
    /// The driver object's storage, when it is a [`DriverObject`]'s.
    driver: Option<Arc<DriverShared>>,
}

#[derive(Default)]
pub(crate) struct DeviceState {
    /// Live device objects (created, not deleted) and their names.
    pub(crate) devices: HashMap<usize, Option<String>>,
    /// Every device object not yet freed (live or delete-pending), with its references.
    objects: HashMap<usize, DeviceObjectState>,
    /// The [`DriverObject`]s this kernel has seen, by `DRIVER_OBJECT` address.
    drivers: HashMap<usize, Weak<DriverShared>>,
    pub(crate) links: HashMap<String, String>,
    pub(crate) completed: HashMap<usize, (NTSTATUS, usize)>,
    /// DACLs applied with `ObSetSecurityObjectByPointer`: per device, (access mask, SID bytes)
    /// of each access-allowed ACE.
    pub(crate) dacls: HashMap<usize, Vec<(u8, u32, Vec<u8>)>>,
}

/// Reads a `UNICODE_STRING` (NULL gives `None`).
///
/// # Safety
/// `s` is NULL or a valid `UNICODE_STRING` whose buffer holds `Length` bytes.
pub(crate) unsafe fn read_unicode(s: *const UNICODE_STRING) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller passes a valid UNICODE_STRING.
    let s = unsafe { &*s };
    if s.Buffer.is_null() {
        return Some(String::new());
    }
    // SAFETY: the buffer holds `Length` bytes of UTF-16.
    let units = unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

/// The storage of a [`DriverObject`], shared with the device objects of the driver.
struct DriverShared {
    object: UnsafeCell<DRIVER_OBJECT>,
    extension: UnsafeCell<DRIVER_EXTENSION>,
    /// What [`DriverObject::keep_alive`] was given, dropped with the driver object.
    kept: Mutex<Vec<Box<dyn Any + Send>>>,
}

// SAFETY: the `DRIVER_OBJECT` and `DRIVER_EXTENSION` hold raw pointers, which only kernel
// routines and the driver dereference, under their own contracts, on whichever thread they
// run (as in the kernel); the rest is `Send` and behind a mutex.
unsafe impl Send for DriverShared {}
// SAFETY: as above; shared access only reads the objects or writes them through raw pointers,
// as the kernel does.
unsafe impl Sync for DriverShared {}

impl Drop for DriverShared {
    fn drop(&mut self) {
        // The image goes before the driver object's memory, as `IopDeleteDriver` unloads it.
        lock(&self.kept).clear();
    }
}

/// A `DRIVER_OBJECT` (with its `DRIVER_EXTENSION`) as the I/O manager would pass to
/// `DriverEntry`, for tests.
///
/// As on Windows, the object outlives its device objects: its memory (and whatever
/// [`keep_alive`](DriverObject::keep_alive) was given, such as the driver image) is freed when
/// this value has been dropped and the last device object of the driver has been freed, which
/// may be after a work item routine of the driver has returned (see `IoQueueWorkItem`).
pub struct DriverObject {
    shared: Arc<DriverShared>,
}

impl DriverObject {
    /// A zeroed driver object with its extension linked. When a kernel is bound to the
    /// calling thread, its device objects keep the driver object alive (see the type's docs);
    /// otherwise that starts when [`as_ptr`](DriverObject::as_ptr) is first called on a thread
    /// with a kernel.
    #[must_use]
    pub fn new() -> DriverObject {
        // SAFETY: DRIVER_OBJECT is plain data for which all-zero is valid (NULL pointers,
        // `None` function pointers).
        let mut object: DRIVER_OBJECT = unsafe { mem::zeroed() };
        // SAFETY: as above, for DRIVER_EXTENSION.
        let extension: DRIVER_EXTENSION = unsafe { mem::zeroed() };
        object.Type = 4;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "0x150 fits"
        )]
        let size = mem::size_of::<DRIVER_OBJECT>() as i16;
        object.Size = size;
        let shared = Arc::new(DriverShared {
            object: UnsafeCell::new(object),
            extension: UnsafeCell::new(extension),
            kept: Mutex::new(Vec::new()),
        });
        let (object, extension) = (shared.object.get(), shared.extension.get());
        // SAFETY: the object is fresh and not shared yet; the pointer comes from its cell.
        unsafe { (*object).DriverExtension = extension };
        // SAFETY: as above, for the extension.
        unsafe { (*extension).DriverObject = object };
        let driver = DriverObject { shared };
        driver.introduce();
        driver
    }

    /// Makes the driver object known to the kernel bound to this thread, if any, so that its
    /// device objects reference it.
    fn introduce(&self) {
        let key = self.shared.object.get() as usize;
        try_with_kernel(|k| {
            let mut devices = lock(&k.devices);
            let known = devices
                .drivers
                .get(&key)
                .is_some_and(|d| ptr::eq(d.as_ptr(), Arc::as_ptr(&self.shared)));
            if !known {
                devices.drivers.retain(|_, d| d.strong_count() > 0);
                devices.drivers.insert(key, Arc::downgrade(&self.shared));
            }
        });
    }

    /// The pointer to hand to `DriverEntry`.
    #[must_use]
    pub fn as_ptr(&mut self) -> *mut DRIVER_OBJECT {
        self.introduce();
        self.shared.object.get()
    }

    /// The driver object.
    #[must_use]
    pub fn get(&self) -> &DRIVER_OBJECT {
        // SAFETY: the object lives as long as `self.shared`; kernel routines write it only
        // from calls the test makes, not while the test reads it.
        unsafe { &*self.shared.object.get() }
    }

    /// Keeps `value` until the driver object goes (after this value is dropped and the last
    /// device object of the driver was freed), then drops it: give it the loaded driver image,
    /// so that the image is unloaded when Windows would unload it, never under a work item
    /// routine that is still returning.
    pub fn keep_alive(&self, value: impl Any + Send) {
        lock(&self.shared.kept).push(Box::new(value));
    }

    /// Creates an unnamed `FILE_DEVICE_UNKNOWN` device of this driver through the real
    /// `IoCreateDevice` export (so it counts for fault injection and leak checks). Delete it
    /// with `IoDeleteDevice`.
    ///
    /// # Errors
    /// The status `IoCreateDevice` returned.
    pub fn create_device(&mut self) -> Result<*mut DEVICE_OBJECT, NTSTATUS> {
        let mut device = ptr::null_mut();
        // SAFETY: a valid driver object and out pointer; an unnamed device.
        let status = unsafe {
            IoCreateDevice(
                self.as_ptr(),
                0,
                ptr::null_mut(),
                FILE_DEVICE_UNKNOWN,
                0,
                0,
                &raw mut device,
            )
        };
        if status == STATUS_SUCCESS {
            Ok(device)
        } else {
            Err(status)
        }
    }
}

impl Default for DriverObject {
    fn default() -> Self {
        DriverObject::new()
    }
}

impl Kernel {
    /// Number of live device objects (created and not deleted).
    #[must_use]
    pub fn device_count(&self) -> usize {
        lock(&self.inner().devices).devices.len()
    }

    /// Number of device objects deleted but not freed yet: still referenced, by a work item
    /// whose routine has not returned.
    #[must_use]
    pub fn delete_pending_devices(&self) -> usize {
        let devices = lock(&self.inner().devices);
        devices.objects.len() - devices.devices.len()
    }

    /// Symbolic links: link name → device name.
    #[must_use]
    pub fn symbolic_links(&self) -> HashMap<String, String> {
        lock(&self.inner().devices).links.clone()
    }

    /// The status and information an IRP was completed with, if it was.
    #[must_use]
    pub fn irp_completion(&self, irp: *const IRP) -> Option<(NTSTATUS, usize)> {
        lock(&self.inner().devices)
            .completed
            .get(&(irp as usize))
            .copied()
    }

    /// Panics if a device object, symbolic link, work item, NMR registration, process notify
    /// routine or ETW registration is still alive.
    ///
    /// # Panics
    /// On the first kind of leak found.
    pub fn assert_no_object_leaks(&self) {
        let devices = lock(&self.inner().devices);
        assert!(
            devices.devices.is_empty(),
            "device objects not deleted: {:?}",
            devices.devices.values().collect::<Vec<_>>()
        );
        assert!(
            devices.links.is_empty(),
            "symbolic links not deleted: {:?}",
            devices.links
        );
        let pending = devices.objects.len() - devices.devices.len();
        assert!(
            pending == 0,
            "{pending} deleted device object(s) still referenced (a work item routine has not \
             returned: wait_for_work_items first)"
        );
        drop(devices);
        let items = self.inner().work.live_items();
        assert!(items == 0, "{items} work item(s) not freed");
        let nmr = self.nmr_registrations();
        assert!(
            nmr.is_empty(),
            "NMR registrations not deregistered: {nmr:?}"
        );
        let tokens = self.primary_token_references();
        assert!(
            tokens == 0,
            "{tokens} primary token reference(s) not released (PsDereferencePrimaryToken)"
        );
        let routines = self.process_notify_routines();
        assert!(
            routines == 0,
            "{routines} process notify routine(s) still registered (the callback would run in unloaded code)"
        );
        let etw = self.etw_registrations();
        assert!(
            etw == 0,
            "{etw} ETW provider registration(s) not unregistered"
        );
    }
}

/// `IoCreateDevice`.
///
/// # Safety
/// Kernel routine; arguments as documented.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoCreateDevice(
    DriverObject: *mut DRIVER_OBJECT,
    DeviceExtensionSize: u32,
    DeviceName: *mut UNICODE_STRING,
    DeviceType: u32,
    DeviceCharacteristics: u32,
    Exclusive: BOOLEAN,
    DeviceObject: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    const API: &str = "IoCreateDevice";
    require_irql(API, APC_LEVEL);
    let _ = Exclusive;
    if DriverObject.is_null() || DeviceObject.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller passes NULL or a valid UNICODE_STRING.
    let name = unsafe { read_unicode(DeviceName) };
    let collision = with_kernel(API, |k| {
        name.as_ref().is_some_and(|n| {
            lock(&k.devices)
                .devices
                .values()
                .any(|d| d.as_deref() == Some(n.as_str()))
        })
    });
    if collision {
        return STATUS_OBJECT_NAME_COLLISION;
    }
    if with_kernel(API, |k| call_fails(k, API)) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let device_size = mem::size_of::<DEVICE_OBJECT>();
    let p = pool_alloc(
        API,
        POOL_FLAG_NON_PAGED,
        device_size + DeviceExtensionSize as usize,
        DEVICE_TAG,
    )
    .cast::<DEVICE_OBJECT>();
    if p.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: `p` is a fresh, zeroed allocation of a DEVICE_OBJECT plus its extension, owned
    // here until it is published below.
    let device = unsafe { &mut *p };
    {
        device.Type = 3;
        #[expect(clippy::cast_possible_truncation, reason = "0x150 fits")]
        let size = device_size as u16;
        device.Size = size;
        device.DriverObject = DriverObject;
        // SAFETY: the caller passes a valid driver object.
        device.NextDevice = unsafe { (*DriverObject).DeviceObject };
        device.Flags = DO_DEVICE_INITIALIZING;
        device.Characteristics = DeviceCharacteristics;
        device.DeviceType = DeviceType;
        device.StackSize = 1;
        device.AlignmentRequirement = 63;
        device.DeviceExtension = if DeviceExtensionSize == 0 {
            ptr::null_mut()
        } else {
            p.cast::<u8>().wrapping_add(device_size).cast::<c_void>()
        };
    }
    // SAFETY: the caller passes a valid driver object; devices are linked at the list head.
    unsafe { (*DriverObject).DeviceObject = p };
    // SAFETY: the caller passes a writable out pointer (checked non-null above).
    unsafe { *DeviceObject = p };
    with_kernel(API, |k| {
        let mut devices = lock(&k.devices);
        let driver = devices
            .drivers
            .get(&(DriverObject as usize))
            .and_then(Weak::upgrade);
        devices.objects.insert(
            p as usize,
            DeviceObjectState {
                references: 1,
                driver,
            },
        );
        devices.devices.insert(p as usize, name);
    });
    STATUS_SUCCESS
}

/// Whether the kernel knows `device`: created, and not yet freed (a deleted device lives on
/// while referenced).
pub(crate) fn device_exists(k: &Inner, device: *mut DEVICE_OBJECT) -> bool {
    lock(&k.devices).objects.contains_key(&(device as usize))
}

/// Takes a reference on a device object (`ObReferenceObject`); false (nothing taken) when the
/// kernel does not know the object.
pub(crate) fn reference_device(k: &Inner, device: *mut DEVICE_OBJECT) -> bool {
    lock(&k.devices)
        .objects
        .get_mut(&(device as usize))
        .map(|o| o.references += 1)
        .is_some()
}

/// Drops a reference on a device object (`ObDereferenceObject`); the last one frees it, and
/// drops its reference on its driver object (which may unload the image).
pub(crate) fn dereference_device(api: &'static str, k: &Inner, device: *mut DEVICE_OBJECT) {
    let freed = {
        let mut devices = lock(&k.devices);
        let Some(object) = devices.objects.get_mut(&(device as usize)) else {
            drop(devices);
            bugcheck(
                api,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [device as u64, 0, 0, 0],
                "dereferenced a device object that was already freed",
            );
        };
        object.references -= 1;
        if object.references == 0 {
            devices.objects.remove(&(device as usize))
        } else {
            None
        }
    };
    if let Some(object) = freed {
        pool_free(api, device.cast(), Some(DEVICE_TAG));
        // Outside the lock: the driver object's last reference drops what it kept.
        drop(object.driver);
    }
}

/// `IoDeleteDevice`.
///
/// # Safety
/// Kernel routine; `DeviceObject` came from `IoCreateDevice`.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT) {
    const API: &str = "IoDeleteDevice";
    require_irql(API, APC_LEVEL);
    let known = with_kernel(API, |k| {
        lock(&k.devices)
            .devices
            .remove(&(DeviceObject as usize))
            .is_some()
    });
    with_kernel(API, |k| {
        lock(&k.devices).dacls.remove(&(DeviceObject as usize))
    });
    if !known {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [DeviceObject as u64, 0, 0, 0],
            "IoDeleteDevice of an object that is not a live device",
        );
    }
    // SAFETY: the device was live, so it and its driver object are valid (the device still
    // holds the I/O manager's reference).
    let device = unsafe { &*DeviceObject };
    let (driver, next) = (device.DriverObject, device.NextDevice);
    // SAFETY: as above; the driver's device list holds only live devices.
    let mut link: *mut *mut DEVICE_OBJECT = unsafe { &raw mut (*driver).DeviceObject };
    loop {
        // SAFETY: `link` points at the list head or at a live device's `NextDevice`.
        let current = unsafe { *link };
        if current.is_null() {
            break;
        }
        if current == DeviceObject {
            // SAFETY: as above.
            unsafe { *link = next };
            break;
        }
        // SAFETY: `current` is a live device on the list.
        link = unsafe { &raw mut (*current).NextDevice };
    }
    // The I/O manager's reference: freed now, or delete-pending until the work items
    // referencing it are done.
    with_kernel(API, |k| dereference_device(API, k, DeviceObject));
}

/// `IoCreateSymbolicLink`.
///
/// # Safety
/// Kernel routine; both strings are valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoCreateSymbolicLink(
    SymbolicLinkName: *mut UNICODE_STRING,
    DeviceName: *mut UNICODE_STRING,
) -> NTSTATUS {
    const API: &str = "IoCreateSymbolicLink";
    require_irql(API, PASSIVE_LEVEL);
    // SAFETY: the caller passes valid strings.
    let (Some(link), Some(device)) = (unsafe { read_unicode(SymbolicLinkName) }, unsafe {
        read_unicode(DeviceName)
    }) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(API, |k| {
        if call_fails(k, API) {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        let mut devices = lock(&k.devices);
        if devices.links.contains_key(&link) {
            return STATUS_OBJECT_NAME_COLLISION;
        }
        devices.links.insert(link, device);
        STATUS_SUCCESS
    })
}

/// `IoDeleteSymbolicLink`.
///
/// # Safety
/// Kernel routine; the string is valid.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IoDeleteSymbolicLink(
    SymbolicLinkName: *mut UNICODE_STRING,
) -> NTSTATUS {
    const API: &str = "IoDeleteSymbolicLink";
    require_irql(API, PASSIVE_LEVEL);
    // SAFETY: the caller passes a valid string.
    let Some(link) = (unsafe { read_unicode(SymbolicLinkName) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(API, |k| {
        if lock(&k.devices).links.remove(&link).is_some() {
            STATUS_SUCCESS
        } else {
            STATUS_OBJECT_NAME_NOT_FOUND
        }
    })
}

/// `IofCompleteRequest`.
///
/// # Safety
/// Kernel routine; `Irp` is a valid IRP owned by the caller.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: i8) {
    const API: &str = "IofCompleteRequest";
    require_irql(API, DISPATCH_LEVEL);
    let _ = PriorityBoost;
    // SAFETY: the caller owns a valid IRP.
    let io_status = unsafe { (*Irp).IoStatus };
    // SAFETY: `Status` is the member a driver writes before completing.
    let status = unsafe { io_status.u.Status };
    let information = io_status.Information;
    let again = with_kernel(API, |k| {
        lock(&k.devices)
            .completed
            .insert(Irp as usize, (status, information))
            .is_some()
    });
    if again {
        bugcheck(
            API,
            MULTIPLE_IRP_COMPLETE_REQUESTS,
            [Irp as u64, 0, 0, 0],
            "IRP completed twice",
        );
    }
}
