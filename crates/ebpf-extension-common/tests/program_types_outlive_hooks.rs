//! The SDK keeps the program types a driver registers through `Start::program_type` and stops
//! them only after the extension value (and every hook in it) has dropped: at unload, and
//! when the start fails after registering them. Whatever order the extension declares its
//! fields in, no hook outlives the program type whose programs it runs; the program types
//! stop in the reverse of the order they were registered in.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::cell::RefCell;
use core::ptr;

use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::prelude::*;

mod common;
use common::{Hook, Seen, providers_stopped, value};
use ebpf_extension_common::sys::ntstatus::STATUS_SUCCESS;

const TAG: PoolTag = PoolTag::new(*b"PtHk");
const FIRST: GUID = GUID::from_u128(0x7d0e_0041_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const SECOND: GUID = GUID::from_u128(0x7d0e_0042_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const HOOK: GUID = GUID::from_u128(0x7d0e_0043_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

program_type! {
    static FIRST_DATA = c"outlive1", FIRST, 2401;
    context Seen;
    helpers {
        0x1_0000, c"outlive1_value" => value(Context);
    }
}

program_type! {
    static SECOND_DATA = c"outlive2", SECOND, 2402;
    context Seen;
    helpers {
        0x1_0000, c"outlive2_value" => value(Context);
    }
}

const HOOK_CONFIG: HookConfig<()> = HookConfig::new(HOOK, FIRST, 2401, TAG).with_link_type(1);

std::thread_local! {
    /// For each `Witness` dropped on this thread: whether the core found each program type's
    /// provider at that moment, and whether a program could attach to the hook.
    static SEEN_AT_DROP: RefCell<Vec<(bool, bool, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Records, when it drops, what is still registered.
struct Witness;

impl Drop for Witness {
    fn drop(&mut self) {
        let found = |guid| ProgramInfoClient::attach(guid).is_ok();
        let hook = Link::attach(LinkSpec::new(FIRST, HOOK), |_| Ok(0)).is_ok();
        let seen = (found(FIRST), found(SECOND), hook);
        SEEN_AT_DROP.with(|s| s.borrow_mut().push(seen));
    }
}

fn seen_at_drop() -> Vec<(bool, bool, bool)> {
    SEEN_AT_DROP.with(|s| s.borrow_mut().drain(..).collect())
}

/// A driver that declares a field dropped after its hook; both drop before the program types.
mod running {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "OutliveRunningTestProvider",
        id("7e3f4a5b-6c7d-4e8f-a091-b2c3d4e5f607")
    );

    pub(super) struct Running {
        _hook: HookProvider<Hook>,
        _witness: Witness,
    }

    impl ExtensionDriver for Running {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(start: &Start<'_>) -> Result<Self> {
            let first = start.program_type(&FIRST_DATA)?;
            start.program_type(&SECOND_DATA)?;
            Ok(Running {
                _hook: start.hook(&first, HOOK_CONFIG, Hook)?,
                _witness: Witness,
            })
        }
    }

    driver_entry!(pub(super) static DRIVER: Running);
}

/// A driver whose start fails after it registered both program types and its hook.
mod failing {
    use super::*;

    tracelogging::define_provider!(
        TRACE,
        "OutliveFailingTestProvider",
        id("8f405b6c-7d8e-4f90-b1a2-c3d4e5f60718")
    );

    pub(super) struct Failing;

    impl ExtensionDriver for Failing {
        const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
        const TAG: PoolTag = TAG;

        fn start(start: &Start<'_>) -> Result<Self> {
            // Made before the hook, so it drops after it.
            let _witness = Witness;
            let first = start.program_type(&FIRST_DATA)?;
            start.program_type(&SECOND_DATA)?;
            let _hook = start.hook(&first, HOOK_CONFIG, Hook)?;
            Err(Error::InsufficientResources)
        }
    }

    driver_entry!(pub(super) static DRIVER: Failing);
}

#[test]
fn unload_stops_the_program_types_after_the_extension() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the driver (unloaded below).
    let status = unsafe { running::driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_SUCCESS);
    let unload = object.get().DriverUnload.expect("DriverUnload set");
    // SAFETY: the driver's own unload routine, once.
    unsafe { unload(object.as_ptr()) };
    assert_eq!(
        seen_at_drop(),
        [(true, true, false)],
        "when the extension's last field dropped, its hook was gone and both program types \
         were still there"
    );
    assert!(kernel.nmr_registrations().is_empty(), "then they went too");
    assert_eq!(
        providers_stopped(&kernel),
        [HOOK, SECOND, FIRST],
        "the hook first, then the program types, the last registered first"
    );
    drop(object);
    kernel.assert_no_leaks();
}

#[test]
fn a_failed_start_stops_the_program_types_after_its_own_values() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { failing::driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, Error::InsufficientResources.ntstatus());
    assert_eq!(
        seen_at_drop(),
        [(true, true, false)],
        "when the start's last value dropped, its hook was gone and both program types were \
         still there"
    );
    assert!(kernel.nmr_registrations().is_empty());
    assert_eq!(providers_stopped(&kernel), [HOOK, SECOND, FIRST]);
    assert!(failing::DRIVER.get().is_none());
    drop(object);
    kernel.assert_no_leaks();
}
