//! A process notify routine the driver never removes (safe code may skip `process::remove`)
//! must not stay added after its driver unloads: the next process event would call into an
//! unloaded image. The glue removes it once the extension is dropped, and after a failed
//! start, tracing each; a routine the driver removed itself is not touched again.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::{DriverObject, Kernel, NewProcess};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::{self, ProcessEvent, ProcessNotify};
use ebpf_extension_common::sys::ntstatus::{
    STATUS_INVALID_PARAMETER, STATUS_PROCEDURE_NOT_FOUND, STATUS_SUCCESS,
};

const TAG: PoolTag = PoolTag::new(*b"LkPr");
/// What the sweep traces for each routine it removes.
const SWEPT: &str = "process notify routine still added at unload";

/// A driver that adds its routine while starting and never removes it.
mod leaves_its_routine {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "LeavesItsRoutineTestProvider",
        id("2b7c1d4e-5f60-4a71-8b92-c3d4e5f60718")
    );

    pub(crate) struct LeavesItsRoutine;

    impl ProcessNotify for LeavesItsRoutine {
        fn notify(_: &mut ProcessEvent<'_>) {}
    }

    impl ExtensionDriver for LeavesItsRoutine {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(_: &Start<'_>) -> Result<Self> {
            process::add::<LeavesItsRoutine>()?;
            Ok(LeavesItsRoutine)
        }
    }

    driver_entry!(static DRIVER: LeavesItsRoutine);
}

/// A driver whose start adds its routine, then fails.
mod adds_then_fails {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "AddsThenFailsTestProvider",
        id("3c8d2e5f-6071-4b82-9ca3-d4e5f6071829")
    );

    struct AddsThenFails;

    impl ProcessNotify for AddsThenFails {
        fn notify(_: &mut ProcessEvent<'_>) {}
    }

    impl ExtensionDriver for AddsThenFails {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(_: &Start<'_>) -> Result<Self> {
            process::add::<AddsThenFails>()?;
            Err(Error::InsufficientResources)
        }
    }

    driver_entry!(static DRIVER: AddsThenFails);
}

/// A driver that adds its routine while starting and removes it when it stops.
mod removes_its_routine {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "RemovesItsRoutineTestProvider",
        id("4d9e3f60-7182-4c93-adb4-e5f60718293a")
    );

    struct RemovesItsRoutine;

    impl ProcessNotify for RemovesItsRoutine {
        fn notify(_: &mut ProcessEvent<'_>) {}
    }

    impl Drop for RemovesItsRoutine {
        fn drop(&mut self) {
            process::remove::<RemovesItsRoutine>().expect("removed once, by its driver");
        }
    }

    impl ExtensionDriver for RemovesItsRoutine {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(_: &Start<'_>) -> Result<Self> {
            process::add::<RemovesItsRoutine>()?;
            Ok(RemovesItsRoutine)
        }
    }

    driver_entry!(static DRIVER: RemovesItsRoutine);
}

fn swept_messages(kernel: &Kernel) -> usize {
    kernel.etw_messages_containing(SWEPT)
}

/// Loads a driver through `entry`, returning its status, and unloads it if it loaded.
fn load_and_unload(
    entry: unsafe extern "win64" fn(
        *mut ebpf_extension_common::sys::wdm::DRIVER_OBJECT,
        *const ebpf_extension_common::sys::ntdef::UNICODE_STRING,
    ) -> i32,
    while_loaded: impl FnOnce(),
) -> i32 {
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded below).
    let status = unsafe { entry(object.as_ptr(), ptr::null()) };
    if status == STATUS_SUCCESS {
        while_loaded();
        let unload = object.get().DriverUnload.expect("DriverUnload set");
        // SAFETY: the driver's own unload routine, once.
        unsafe { unload(object.as_ptr()) };
    }
    drop(object);
    status
}

#[test]
fn unload_removes_a_routine_the_driver_left_added() {
    let kernel = Kernel::new();
    let status = load_and_unload(leaves_its_routine::driver_entry, || {
        assert_eq!(kernel.process_notify_routines(), 1);
        assert_eq!(kernel.create_process(&NewProcess::new(100)), STATUS_SUCCESS);
        assert_eq!(swept_messages(&kernel), 0, "nothing swept while running");
    });
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(
        kernel.process_notify_routines(),
        0,
        "the routine left added is removed at unload"
    );
    assert_eq!(swept_messages(&kernel), 1, "and traced once");
    assert!(
        kernel.exit_process(100),
        "events after unload reach no routine"
    );
    kernel.assert_no_leaks();
}

#[test]
fn a_failed_start_removes_the_routine_it_added() {
    let kernel = Kernel::new();
    let status = load_and_unload(adds_then_fails::driver_entry, || {});
    assert_eq!(status, Error::InsufficientResources.ntstatus());
    assert_eq!(kernel.process_notify_routines(), 0);
    assert_eq!(swept_messages(&kernel), 1);
    kernel.assert_no_leaks();
}

#[test]
fn a_routine_the_driver_removed_is_not_swept() {
    let kernel = Kernel::new();
    let status = load_and_unload(removes_its_routine::driver_entry, || {
        assert_eq!(kernel.process_notify_routines(), 1);
    });
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(kernel.process_notify_routines(), 0);
    assert_eq!(swept_messages(&kernel), 0, "its driver removed it");
    assert_eq!(process::remove_leaked(), 0, "nothing left to remove");
    kernel.assert_no_leaks();
}

/// One notify routine per type: `N<I>` for `I` in `0..=MAX_NOTIFY_ROUTINES`.
struct Numbered<const I: usize>;

impl<const I: usize> ProcessNotify for Numbered<I> {
    fn notify(_: &mut ProcessEvent<'_>) {}
}

tracelogging::define_provider!(
    NUMBERED_TRACE,
    "NumberedRoutinesTestProvider",
    id("5eaf4071-8293-4da4-bec5-f60718293a4b")
);

/// Types whose `notify` code is the same still get a routine each: the kernel refuses a
/// routine added twice, so two types sharing one could not both be added, and removing one
/// would remove the other's. An optimised build folds functions whose code is the same, and a
/// debug build never does: `cargo xtask ci` also runs this file in the release profile.
#[test]
fn types_with_the_same_notify_code_get_routines_of_their_own() {
    let kernel = Kernel::new();
    ebpf_extension_common::trace::initiate(&NUMBERED_TRACE).expect("tracing");
    process::add::<Numbered<0>>().expect("added");
    process::add::<Numbered<1>>().expect("a second routine, not the first added twice");
    assert_eq!(kernel.process_notify_routines(), 2);
    process::remove::<Numbered<0>>().expect("removed");
    assert_eq!(
        kernel.process_notify_routines(),
        1,
        "the other routine stays"
    );
    process::remove::<Numbered<1>>().expect("removed");
    assert_eq!(process::remove_leaked(), 0);
    ebpf_extension_common::trace::terminate();
    kernel.assert_no_leaks();
}

/// A driver keeps at most `MAX_NOTIFY_ROUTINES` routines added: one more is refused with
/// `InsufficientResources` and a trace event, and removed again from the kernel.
#[test]
fn one_routine_beyond_the_record_is_refused_and_removed_again() {
    let kernel = Kernel::new();
    ebpf_extension_common::trace::initiate(&NUMBERED_TRACE).expect("tracing");
    let refused = "process notify routine refused";
    let traced = || kernel.etw_messages_containing(refused);
    assert_eq!(process::MAX_NOTIFY_ROUTINES, 8);
    process::add::<Numbered<0>>().expect("added");
    process::add::<Numbered<1>>().expect("added");
    process::add::<Numbered<2>>().expect("added");
    process::add::<Numbered<3>>().expect("added");
    process::add::<Numbered<4>>().expect("added");
    process::add::<Numbered<5>>().expect("added");
    process::add::<Numbered<6>>().expect("added");
    process::add::<Numbered<7>>().expect("added");
    assert_eq!(kernel.process_notify_routines(), 8);
    assert_eq!(
        process::add::<Numbered<8>>(),
        Err(Error::InsufficientResources)
    );
    assert_eq!(kernel.process_notify_routines(), 8, "removed again");
    assert_eq!(traced(), 1);
    process::remove::<Numbered<0>>().expect("removed");
    assert_eq!(
        process::remove::<Numbered<0>>(),
        Err(Error::api(
            "PsSetCreateProcessNotifyRoutineEx",
            STATUS_PROCEDURE_NOT_FOUND
        )),
        "as its docs say: not added"
    );
    assert_eq!(
        process::add::<Numbered<1>>(),
        Err(Error::api(
            "PsSetCreateProcessNotifyRoutineEx",
            STATUS_INVALID_PARAMETER
        )),
        "as its docs say: already added"
    );
    process::add::<Numbered<8>>().expect("a freed slot is used again");
    assert_eq!(
        process::remove_leaked(),
        8,
        "the record holds exactly the added ones"
    );
    assert_eq!(kernel.process_notify_routines(), 0);
    ebpf_extension_common::trace::terminate();
    kernel.assert_no_leaks();
}
