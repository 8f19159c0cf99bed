//! Host builds only: storage private to one simulated kernel, for what a driver keeps in
//! globals.
//!
//! A driver image has its own globals, so in the kernel "one per driver" and "one per
//! machine" coincide. Linked natively into a test process, a `static` is shared by every
//! simulated kernel the process creates (plain `cargo test` runs tests as threads of one
//! process). An SDK crate's host path that keeps such state (an ETW registration, the live
//! NMR registrations, a driver's global) keeps it here instead: one copy per kernel, found by
//! a key of the crate's choosing, the address of one of its statics.
//!
//! usersim defines the symbol behind it. It is not a kernel routine, is not in
//! [`IMPORTS`](crate::IMPORTS), and a driver image never imports it: driver builds
//! (`target_os = "windows"`) do not have this module.

use core::ffi::c_void;

unsafe extern "C" {
    /// `size` zeroed, 8-byte-aligned bytes private to the simulated kernel bound to the
    /// calling thread, the same for every call with `key` through that kernel and alive as
    /// long as it is; NULL when no kernel is bound (or `key` is NULL, or `size` 0).
    fn ebpf_ext_usersim_kernel_local(key: *const c_void, size: usize) -> *mut c_void;
}

/// The `T` that `key` names in the simulated kernel bound to the calling thread: all-zero
/// bytes when first asked for, then the same object for every call with `key` through that
/// kernel, from any of its threads; `None` when no kernel is bound.
///
/// # Safety
/// - All-zero bytes are a valid `T`, and `T` is changed only through interior mutability
///   that is safe to share between threads (atomics, kernel locks): the kernel's threads
///   share it, and it is never dropped.
/// - Every call with `key` asks for the same `T` (usersim aborts on a size mismatch).
/// - The reference (of whatever lifetime the caller chooses) is used only while the calling
///   thread stays bound to that kernel, whose binding keeps the storage alive.
///
/// # IRQL
/// Any level.
#[must_use]
pub unsafe fn kernel_local<'a, T: Sync>(key: *const c_void) -> Option<&'a T> {
    const {
        assert!(align_of::<T>() <= 8, "the storage is 8-byte aligned");
        assert!(size_of::<T>() != 0, "usersim has no storage of zero bytes");
    }
    // SAFETY: usersim's routine takes any key and size and touches neither.
    let storage = unsafe { ebpf_ext_usersim_kernel_local(key, size_of::<T>()) };
    // SAFETY: NULL, or `size_of::<T>()` bytes aligned enough for `T` (checked above), which the
    // caller promises are a valid `T` while zero and are only ever changed through shared
    // interior mutability, alive while the caller stays bound to the kernel.
    unsafe { storage.cast::<T>().as_ref() }
}
