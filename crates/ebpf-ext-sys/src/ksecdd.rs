//! The Kernel Security Support Provider Interface routines exported by `ksecdd.sys` rather
//! than `ntoskrnl.exe` (declared in `ntifs.h`; mingw-w64 has them in `sspi.h`), so a driver
//! imports them from their own module.

use crate::ntdef::{NTSTATUS, UNICODE_STRING};
use crate::ntifs::SID_NAME_USE;
use core::ffi::c_void;

kernel_imports! {
    module = "ksecdd.sys";

    /// [`SecLookupAccountSid`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-seclookupaccountsid):
    /// the account name of `Sid` and the domain it was found in, written into the
    /// caller's strings. `*NameSize` and `*DomainSize` give the buffers' sizes in bytes (at
    /// most each string's `MaximumLength`: usersim bug-checks a larger one); when one is too
    /// small it returns STATUS_BUFFER_TOO_SMALL and both receive the sizes
    /// needed. STATUS_NONE_MAPPED for an unknown SID. PASSIVE_LEVEL.
    pub fn SecLookupAccountSid(Sid: *const c_void, NameSize: *mut u32, NameBuffer: *mut UNICODE_STRING, DomainSize: *mut u32, DomainBuffer: *mut UNICODE_STRING, NameUse: *mut SID_NAME_USE) -> NTSTATUS;
}
