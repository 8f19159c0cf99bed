//! A driver that registers one program type, or one module of BTF-resolved functions, twice
//! does not start: the core could bind either program-information provider while a hook was
//! checked against one, and would refuse the second provider of a module. `DriverEntry` fails
//! with `STATUS_INVALID_PARAMETER`, traced, and the first registration is gone again.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use core::ptr;

use ebpf_ext_usersim::{DriverObject, Kernel};
use ebpf_extension_common::sys::ntdef::{NTSTATUS, UNICODE_STRING};
use ebpf_extension_common::sys::ntstatus::STATUS_INVALID_PARAMETER;
use ebpf_extension_common::sys::wdm::DRIVER_OBJECT;
use ebpf_extension_common::sys::{Error, Result};

/// Loads a driver whose start registers something twice, and checks it was refused twice
/// (the same registration again, and another of the same identity) with `message` traced,
/// that `DriverEntry` failed with `STATUS_INVALID_PARAMETER` and that nothing is left.
/// `published` tells whether the driver's global holds a running driver; it is asked while
/// the kernel is alive, because on the host the global's state lives in the kernel bound to
/// the thread, and with no kernel bound the global reads as empty.
fn refused_twice(
    entry: unsafe extern "win64" fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS,
    message: &str,
    published: impl FnOnce() -> bool,
) {
    let kernel = Kernel::new();
    let mut object = DriverObject::new();
    // SAFETY: a fresh driver object that outlives the (failed) load.
    let status = unsafe { entry(object.as_ptr(), ptr::null()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert!(!published(), "a driver whose start failed was published");
    assert!(kernel.nmr_registrations().is_empty());
    let refusals = kernel.etw_messages_containing(message);
    assert_eq!(
        refusals, 2,
        "the same data again, and other data of the identity"
    );
    drop(object);
    kernel.assert_no_leaks();
}

/// A start that registers with `first` and drops the registration at once (it still counts:
/// a hook may have been checked against it), then tries `first` again and `other`: both must
/// be refused with `InvalidParameter`, which the start then fails with (`Unsuccessful` if
/// either was not).
fn start_twice<T, U>(first: impl Fn() -> Result<T>, other: impl FnOnce() -> Result<U>) -> Error {
    if let Err(e) = first() {
        return e;
    }
    match (first().err(), other().err()) {
        (Some(Error::InvalidParameter), Some(refused @ Error::InvalidParameter)) => refused,
        _ => Error::Unsuccessful,
    }
}

mod program_type {
    use ebpf_extension_common::prelude::*;

    tracelogging::define_provider!(
        TRACE,
        "ProgramTypeTwiceTestProvider",
        id("4a5b3c2d-7e6f-4c8d-9e0f-1a2b3c4d5e6f")
    );

    const TAG: PoolTag = PoolTag::new(*b"PtTw");
    const PROGRAM: GUID = GUID::from_u128(0x7d0e_0021_4a8b_4c2d_9e1f_1a2b_3c4d_5e6f);

    no_padding! {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Narrow {
            value: u64,
            flags: u64,
        }
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
            Err(super::start_twice(
                || start.program_type(&NARROW),
                || start.program_type(&WIDE),
            ))
        }
    }

    driver_entry!(static DRIVER: Twice);

    #[test]
    fn a_program_type_registered_twice_is_refused_and_nothing_is_left() {
        super::refused_twice(driver_entry, "program type registered twice", || {
            DRIVER.get().is_some()
        });
    }
}

mod btf_module {
    use ebpf_extension_common::prelude::*;

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
            Err(super::start_twice(
                || start.btf_functions(&FIRST),
                || start.btf_functions(&SECOND),
            ))
        }
    }

    driver_entry!(static DRIVER: Twice);

    #[test]
    fn a_btf_module_registered_twice_is_refused_and_nothing_is_left() {
        super::refused_twice(driver_entry, "BTF module registered twice", || {
            DRIVER.get().is_some()
        });
    }
}
