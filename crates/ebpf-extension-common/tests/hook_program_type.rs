//! A driver whose hook is configured for another program type than the program data it hands
//! `Start::hook` does not start: `DriverEntry` fails with `STATUS_INVALID_PARAMETER`, traced,
//! and the program type it registered first is gone again.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::prelude::*;

mod common;
use common::{Hook, Seen, value};
use ebpf_extension_common::sys::ntstatus::STATUS_INVALID_PARAMETER;

tracelogging::define_provider!(
    TRACE,
    "HookProgramTypeTestProvider",
    id("3f4b2c1d-6e5a-4b7c-8d9e-0a1b2c3d4e5f")
);

const TAG: PoolTag = PoolTag::new(*b"HkPt");
const PROGRAM: GUID = GUID::from_u128(0x7d0e_0011_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const OTHER_PROGRAM: GUID = GUID::from_u128(0x7d0e_0012_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);
const HOOK: GUID = GUID::from_u128(0x7d0e_0013_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

program_type! {
    static DATA = c"mismatch", PROGRAM, 2101;
    context Seen;
    helpers {
        0x1_0000, c"mismatch_value" => value(Context);
    }
}

struct Mismatched {
    _hook: HookProvider<Hook>,
}

impl ExtensionDriver for Mismatched {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = TAG;

    fn start(start: &Start<'_>) -> Result<Self> {
        let program_type = start.program_type(&DATA)?;
        // The hook names another program type than `DATA`'s.
        let hook = start.hook(
            &program_type,
            HookConfig::new(HOOK, OTHER_PROGRAM, 2101, TAG),
            Hook,
        )?;
        Ok(Mismatched { _hook: hook })
    }
}

driver_entry!(static DRIVER: Mismatched);

#[test]
fn a_hook_for_another_program_type_than_its_data_does_not_start() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert!(
        kernel.nmr_registrations().is_empty(),
        "the program type is gone"
    );
    let traced = kernel.etw_messages_containing("another program type") > 0;
    assert!(traced);
    assert!(DRIVER.get().is_none());
    drop(object);
    kernel.assert_no_leaks();
}
