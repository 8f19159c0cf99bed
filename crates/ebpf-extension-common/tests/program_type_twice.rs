//! A driver that registers one program type twice, with data whose helpers read different
//! contexts, does not start: the core could bind either provider while a hook was checked
//! against one. `DriverEntry` fails with `STATUS_INVALID_PARAMETER`, traced, and the first
//! registration is gone again.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::STATUS_INVALID_PARAMETER;

tracelogging::define_provider!(
    TRACE,
    "ProgramTypeTwiceTestProvider",
    id("4a5b3c2d-7e6f-4c8d-9e0f-1a2b3c4d5e6f")
);

const TAG: PoolTag = PoolTag::new(*b"PtTw");
const PROGRAM: GUID = GUID::from_u128(0x7d0e_0021_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

#[repr(C)]
struct Narrow {
    value: u64,
    flags: u64,
}

#[repr(C)]
struct Wide {
    narrow: Narrow,
    extra: u64,
}

fn narrow_value(context: &Narrow) -> u64 {
    context.value
}

fn wide_extra(context: &Wide) -> u64 {
    context.extra
}

program_type! {
    static NARROW = c"twice", PROGRAM, 2201;
    context Narrow;
    helpers {
        0x1_0000, c"twice_value" => narrow_value(Context);
    }
}

program_type! {
    static WIDE = c"twice", PROGRAM, 2201;
    context Narrow;
    helpers<Wide, narrow> {
        0x1_0000, c"twice_value" => wide_extra(Context);
    }
}

/// Never runs: its start fails.
struct Twice;

impl ExtensionDriver for Twice {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = TAG;

    fn start(start: &Start<'_>) -> Result<Self> {
        // Even a registration dropped at once counts: a hook may have been checked against it.
        drop(start.program_type(&NARROW)?);
        let again = start.program_type(&NARROW).err();
        let other = start.program_type(&WIDE).err();
        // Both must be refused; `DriverEntry` then fails with the refusal's status.
        match (again, other) {
            (Some(Error::InvalidParameter), Some(refused @ Error::InvalidParameter)) => {
                Err(refused)
            }
            _ => Err(Error::Unsuccessful),
        }
    }
}

driver_entry!(static DRIVER: Twice);

#[test]
fn a_program_type_registered_twice_is_refused_and_nothing_is_left() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert!(kernel.nmr_registrations().is_empty());
    let refusals = kernel
        .etw_messages()
        .iter()
        .filter(|m| m.contains("registered twice"))
        .count();
    assert_eq!(
        refusals, 2,
        "the same data again, and other data for the type"
    );
    assert!(DRIVER.get().is_none());
    drop(object);
    kernel.assert_no_leaks();
}
