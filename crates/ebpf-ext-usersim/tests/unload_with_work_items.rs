//! A driver may unload while one of its work item routines is still returning: the work item
//! holds a reference on its device object from `IoQueueWorkItem` until the routine has
//! returned, the device object holds its driver object, and the driver object holds the image
//! (ebpf-for-windows issue #2197: "image unloads while the work item routine is still
//! returning").

extern crate alloc;

use alloc::sync::Arc;
use core::ffi::c_void;
use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use core::time::Duration;
use std::thread;
use std::time::Instant;

use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DelayedWorkQueue, IO_WORKITEM, IoAllocateWorkItem, IoDeleteDevice,
    IoFreeWorkItem, IoQueueWorkItem,
};
use ebpf_ext_usersim::{DriverObject, Kernel};

/// `DEVICE_OBJECT.Type` and `DRIVER_OBJECT.Type` of live objects.
const IO_TYPE_DEVICE: i32 = 3;
const IO_TYPE_DRIVER: i32 = 4;
/// How long the test waits for a step of the other side before it gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the driver's work item routine, its unload and its "image" share in one test.
struct Scenario {
    item: *mut IO_WORKITEM,
    /// Set by the routine when its work is done: what the driver's unload waits for (a
    /// `KeSetEvent` in a real driver, the last thing the routine does before its epilogue).
    work_done: AtomicBool,
    /// Lets the routine return, once the test has run the unload.
    may_return: AtomicBool,
    /// What the routine's epilogue read from its device object and driver object.
    device_type: AtomicI32,
    driver_type: AtomicI32,
    /// Whether the image was still loaded during the epilogue.
    image_loaded_in_epilogue: AtomicBool,
    /// Set as the routine returns.
    returned: AtomicBool,
    /// Set when the image is unloaded (its stand-in dropped), with whether the routine had
    /// returned by then.
    image_unloaded: AtomicBool,
    unloaded_after_return: AtomicBool,
}

// SAFETY: `item` is only handed to the kernel's work item routines, which may be called on any
// thread; everything else is atomic.
unsafe impl Send for Scenario {}
// SAFETY: as above.
unsafe impl Sync for Scenario {}

impl Scenario {
    fn new(item: *mut IO_WORKITEM) -> Arc<Scenario> {
        Arc::new(Scenario {
            item,
            work_done: AtomicBool::new(false),
            may_return: AtomicBool::new(false),
            device_type: AtomicI32::new(0),
            driver_type: AtomicI32::new(0),
            image_loaded_in_epilogue: AtomicBool::new(false),
            returned: AtomicBool::new(false),
            image_unloaded: AtomicBool::new(false),
            unloaded_after_return: AtomicBool::new(false),
        })
    }
}

fn wait_for(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        if start.elapsed() > PATIENCE {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// Stands for the loaded driver image: unloading it is dropping it.
struct Image(Arc<Scenario>);

impl Drop for Image {
    fn drop(&mut self) {
        let returned = self.0.returned.load(Ordering::SeqCst);
        self.0
            .unloaded_after_return
            .store(returned, Ordering::SeqCst);
        self.0.image_unloaded.store(true, Ordering::SeqCst);
    }
}

/// The driver's work item routine: frees its item, signals the unload that the work is done,
/// and then returns, which takes a while (the epilogue runs in the image, with the device
/// object at hand).
unsafe extern "win64" fn routine(device: *mut DEVICE_OBJECT, context: *mut c_void) {
    // SAFETY: the test passes its `Scenario`, which it keeps alive until the work items ran.
    let driver = unsafe { &*context.cast::<Scenario>() };
    // SAFETY: the item is dequeued before its routine runs, so it may be freed here.
    unsafe { IoFreeWorkItem(driver.item) };
    driver.work_done.store(true, Ordering::SeqCst);
    // The epilogue: the unload may run meanwhile.
    let _ = wait_for(&driver.may_return);
    driver.image_loaded_in_epilogue.store(
        !driver.image_unloaded.load(Ordering::SeqCst),
        Ordering::SeqCst,
    );
    // SAFETY: the work item's reference keeps the device object until this routine returns,
    // and the device object its driver object (what this test checks).
    let device = unsafe { &*device };
    // SAFETY: as above.
    let driver_type = unsafe { (*device.DriverObject).Type };
    let device_type = device.Type;
    driver
        .device_type
        .store(i32::from(device_type), Ordering::SeqCst);
    driver
        .driver_type
        .store(i32::from(driver_type), Ordering::SeqCst);
    driver.returned.store(true, Ordering::SeqCst);
}

#[test]
fn unload_while_a_work_item_routine_returns_keeps_the_device_driver_and_image() {
    let kernel = Kernel::new();
    let mut driver_object = DriverObject::new();
    let device = driver_object.create_device().expect("IoCreateDevice");
    // SAFETY: a live device object of the driver.
    let item = unsafe { IoAllocateWorkItem(device) };
    assert!(!item.is_null());
    let driver = Scenario::new(item);
    // The image lives as long as the driver object.
    driver_object.keep_alive(Image(Arc::clone(&driver)));

    // SAFETY: a live, unqueued item; the context outlives the routine (the test holds it).
    unsafe {
        IoQueueWorkItem(
            item,
            routine,
            DelayedWorkQueue,
            Arc::as_ptr(&driver).cast_mut().cast(),
        );
    };

    // The unload routine: waits for the work to be done, deletes its device and returns;
    // then the I/O manager drops its reference on the driver object.
    assert!(wait_for(&driver.work_done), "the work item never ran");
    // SAFETY: the driver's device, deleted once.
    unsafe { IoDeleteDevice(device) };
    drop(driver_object);

    // The routine has not returned: nothing is freed yet.
    assert!(!driver.returned.load(Ordering::SeqCst));
    assert_eq!(kernel.device_count(), 0, "the device is deleted");
    assert_eq!(
        kernel.delete_pending_devices(),
        1,
        "the work item's reference keeps the deleted device object"
    );
    assert!(
        !driver.image_unloaded.load(Ordering::SeqCst),
        "the image was unloaded while a work item routine of the driver was still returning"
    );

    driver.may_return.store(true, Ordering::SeqCst);
    kernel.wait_for_work_items();

    assert!(driver.returned.load(Ordering::SeqCst));
    assert!(driver.image_loaded_in_epilogue.load(Ordering::SeqCst));
    assert_eq!(
        (
            driver.device_type.load(Ordering::SeqCst),
            driver.driver_type.load(Ordering::SeqCst)
        ),
        (IO_TYPE_DEVICE, IO_TYPE_DRIVER),
        "the epilogue found its device and driver objects intact"
    );
    assert!(
        driver.image_unloaded.load(Ordering::SeqCst),
        "the image is unloaded once the routine has returned"
    );
    assert!(driver.unloaded_after_return.load(Ordering::SeqCst));
    assert_eq!(kernel.delete_pending_devices(), 0);
    kernel.assert_no_leaks();
}

/// Without outstanding work items, deleting the device frees it at once and dropping the
/// driver object unloads the image at once, as before.
#[test]
fn without_work_items_delete_frees_at_once() {
    let kernel = Kernel::new();
    let mut driver_object = DriverObject::new();
    let device = driver_object.create_device().expect("IoCreateDevice");
    let driver = Scenario::new(core::ptr::null_mut());
    driver_object.keep_alive(Image(Arc::clone(&driver)));
    // SAFETY: the driver's device, deleted once.
    unsafe { IoDeleteDevice(device) };
    assert_eq!(kernel.delete_pending_devices(), 0);
    kernel.assert_no_leaks();
    assert!(!driver.image_unloaded.load(Ordering::SeqCst));
    drop(driver_object);
    assert!(driver.image_unloaded.load(Ordering::SeqCst));
}

/// A device deleted while a work item of it is still to run is a leak until the routine has
/// run, and the object leak check says so; the full leak check waits for the routine first, as
/// Windows unloads the driver (and Driver Verifier checks its pool) only then.
#[test]
fn a_delete_pending_device_is_reported_until_its_work_items_ran() {
    let kernel = Kernel::new();
    let mut driver_object = DriverObject::new();
    let device = driver_object.create_device().expect("IoCreateDevice");
    // SAFETY: a live device object.
    let item = unsafe { IoAllocateWorkItem(device) };
    let driver = Scenario::new(item);
    // SAFETY: a live, unqueued item; the context outlives the routine.
    unsafe {
        IoQueueWorkItem(
            item,
            routine,
            DelayedWorkQueue,
            Arc::as_ptr(&driver).cast_mut().cast(),
        );
    };
    assert!(wait_for(&driver.work_done), "the work item never ran");
    // SAFETY: the driver's device, deleted once.
    unsafe { IoDeleteDevice(device) };
    let leak = std::panic::catch_unwind(AssertUnwindSafe(|| {
        kernel.assert_no_object_leaks();
    }))
    .expect_err("a referenced, deleted device object is reported");
    let message = leak
        .downcast_ref::<String>()
        .map_or("", String::as_str)
        .to_owned();
    assert!(message.contains("still referenced"), "{message}");
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(50));
            driver.may_return.store(true, Ordering::SeqCst);
        });
        // Waits for the routine (let go by the thread above), then finds nothing.
        kernel.assert_no_leaks();
    });
    assert!(driver.returned.load(Ordering::SeqCst));
}
