//! The check a driver image's unload gets: once its `DriverUnload` has returned, nothing the
//! kernel keeps may still point into the image.
//!
//! On Windows the image's memory is freed after `DriverUnload` returns. A registration the
//! driver left behind (an NMR provider or client, a process notify routine, an ETW provider
//! with an enable callback) still holds pointers into it, and the kernel's next call through
//! one runs unloaded code: bug check 0xCE, `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`,
//! whenever that call comes, if it ever does. usersim stops at the unload instead, with the
//! same code, naming every leftover: that is where the cause is clear, and a test does not
//! depend on whether something would have called back later.
//!
//! Work items are not checked: `IoQueueWorkItem` references the device object, which keeps
//! the driver loaded until the routine returns, so a queued item is not a defect.

use core::ops::Range;

use ebpf_ext_sys::wdm::DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS;

use crate::kernel::{bugcheck, lock, with_kernel};

/// The routine the report names: where Windows frees a driver image.
const API: &str = "MmUnloadSystemImage";

/// Called once a driver image's `DriverUnload` has returned, before its memory is freed:
/// bug checks (0xCE) if an NMR registration, a process notify routine or an ETW enable
/// callback of the bound kernel still points into `image`.
///
/// Parameter 1 of the bug check is the first leftover address found; the message names
/// every leftover.
///
/// # Panics
/// Never; a leftover stops the simulated machine (the process aborts, as every bug check).
pub fn image_unloaded(name: &str, image: Range<usize>) {
    let leftovers = with_kernel(API, |k| {
        let mut found = lock(&k.nmr).references_into(&image);
        found.extend(lock(&k.process).references_into(&image));
        found.extend(lock(&k.etw).references_into(&image));
        found
    });
    let Some(&(first, _)) = leftovers.first() else {
        return;
    };
    let list: Vec<String> = leftovers
        .iter()
        .map(|(address, what)| format!("{what} at {address:#x}"))
        .collect();
    bugcheck(
        API,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS,
        [first as u64, 0, 0, 0],
        &format!(
            "{name} unloaded with {} registration(s) still pointing into it (the kernel's next \
             call through one would run unloaded code): {}",
            leftovers.len(),
            list.join("; ")
        ),
    );
}
