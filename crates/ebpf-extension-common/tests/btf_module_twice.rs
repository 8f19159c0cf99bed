//! A driver that registers one module of BTF-resolved functions twice does not start: the
//! core would attach to one provider and refuse the other. `DriverEntry` fails with
//! `STATUS_INVALID_PARAMETER`, traced, and the first registration is gone again.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ntstatus::STATUS_INVALID_PARAMETER;

tracelogging::define_provider!(
    TRACE,
    "BtfModuleTwiceTestProvider",
    id("5b6c4d3e-8f70-4d9e-af10-2b3c4d5e6f70")
);

const TAG: PoolTag = PoolTag::new(*b"BtTw");
const MODULE: GUID = GUID::from_u128(0x7d0e_0022_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

fn one(_: u64) -> u64 {
    1
}

fn two(_: u64) -> u64 {
    2
}

btf_functions! {
    static FIRST = module MODULE;
    c"twice_one" => one(Anything);
}

btf_functions! {
    static SECOND = module MODULE;
    c"twice_two" => two(Anything);
}

/// Never runs: its start fails.
struct Twice;

impl ExtensionDriver for Twice {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &TRACE;
    const TAG: PoolTag = TAG;

    fn start(start: &Start<'_>) -> Result<Self> {
        // Even a registration dropped at once counts, as for program types.
        drop(start.btf_functions(&FIRST)?);
        let again = start.btf_functions(&FIRST).err();
        let other = start.btf_functions(&SECOND).err();
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
fn a_btf_module_registered_twice_is_refused_and_nothing_is_left() {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { driver_entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert!(kernel.nmr_registrations().is_empty());
    let refusals = kernel
        .etw_messages()
        .iter()
        .filter(|m| m.contains("BTF module registered twice"))
        .count();
    assert_eq!(
        refusals, 2,
        "the same functions again, and others of the module"
    );
    assert!(DRIVER.get().is_none());
    drop(object);
    kernel.assert_no_leaks();
}
