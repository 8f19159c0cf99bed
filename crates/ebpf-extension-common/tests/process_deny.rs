//! `ProcessEvent::deny` writes only a failure status: a success or informational one denies
//! nothing, and must not undo an earlier denial of the same creation.
#![allow(clippy::std_instead_of_core, reason = "host tests")]

use ebpf_ext_usersim::{Kernel, NewProcess};
use ebpf_extension_common::process::{self, ProcessEvent, ProcessNotify};
use ebpf_extension_common::sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_NOT_SUPPORTED, STATUS_OBJECT_NAME_EXISTS, STATUS_PENDING,
    STATUS_SUCCESS,
};

/// Denies with `STATUS_ACCESS_DENIED`, then "denies" with statuses that are no denial: two of
/// success severity and an informational one.
struct DeniesThenSucceeds;

impl ProcessNotify for DeniesThenSucceeds {
    fn notify(event: &mut ProcessEvent<'_>) {
        event.deny(STATUS_ACCESS_DENIED);
        event.deny(STATUS_SUCCESS);
        event.deny(STATUS_PENDING);
        event.deny(STATUS_OBJECT_NAME_EXISTS);
    }
}

/// Denies with a second failure status, which replaces the first.
struct DeniesTwice;

impl ProcessNotify for DeniesTwice {
    fn notify(event: &mut ProcessEvent<'_>) {
        event.deny(STATUS_ACCESS_DENIED);
        event.deny(STATUS_NOT_SUPPORTED);
    }
}

#[test]
fn a_success_or_informational_status_does_not_undo_a_denial() {
    let kernel = Kernel::new();
    process::add::<DeniesThenSucceeds>().expect("added");
    assert_eq!(
        kernel.create_process(&NewProcess::new(100)),
        STATUS_ACCESS_DENIED
    );
    process::remove::<DeniesThenSucceeds>().expect("removed");
    kernel.assert_no_leaks();
}

#[test]
fn a_later_failure_status_replaces_an_earlier_one() {
    let kernel = Kernel::new();
    process::add::<DeniesTwice>().expect("added");
    assert_eq!(
        kernel.create_process(&NewProcess::new(100)),
        STATUS_NOT_SUPPORTED
    );
    process::remove::<DeniesTwice>().expect("removed");
    kernel.assert_no_leaks();
}
