//! Per-kernel storage for what a driver keeps in globals, for host builds of SDK crates.
//!
//! A driver image has its own globals, so in the kernel "one per driver" and "one per
//! machine" coincide. Linked natively into a test process, the same `static` is shared by
//! every simulated [`Kernel`](crate::Kernel) the process creates (plain `cargo test` runs tests
//! as threads of one process): a provider registered through one kernel would be seen, and
//! unregistered, through another. An SDK crate's host path that must keep such state
//! (`ebpf-ext-trace`'s ETW registration, `ebpf-ext-nmr`'s live registrations, the facade's
//! driver global) keeps it here instead, one copy per kernel, found by a key of its choosing
//! (the address of one of its statics).
//!
//! The interface is one C-ABI symbol, [`ebpf_ext_usersim_kernel_local`], declared once, by
//! `ebpf-ext-sys`'s host-only `host::kernel_local`, so that the SDK's `no_std` crates need no
//! dependency on usersim (the kernel routines reach them the same way: by symbol, at link
//! time). It is not a kernel routine and not in [`EXPORTS`](crate::exports::EXPORTS): a
//! driver image never imports it.

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::AtomicU64;
use std::process;

use crate::kernel::{Inner, lock, try_with_kernel};

/// The storage of one kernel: per key, zeroed 8-byte words.
#[derive(Default)]
pub(crate) struct Locals {
    slots: Vec<(usize, Box<[AtomicU64]>)>,
}

thread_local! {
    /// Lookups already made by this thread for the kernel bound to it: (key, size, storage).
    /// Cleared whenever the thread's binding changes; valid while it lasts, because the
    /// binding holds the kernel (and so its storage) alive.
    static CACHE: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Forgets the calling thread's cached lookups (its kernel binding changed).
pub(crate) fn forget_cached() {
    // `try_with`: also called while the thread's locals are being destroyed.
    let _ = CACHE.try_with(|c| c.borrow_mut().clear());
}

fn storage(inner: &Inner, key: usize, size: usize) -> usize {
    let mut locals = lock(&inner.locals);
    let words = size.div_ceil(8);
    let index = locals
        .slots
        .iter()
        .position(|(k, _)| *k == key)
        .unwrap_or_else(|| {
            locals
                .slots
                .push((key, (0..words).map(|_| AtomicU64::new(0)).collect()));
            locals.slots.len() - 1
        });
    let storage = &locals.slots[index].1;
    if storage.len() != words {
        eprintln!(
            "usersim: kernel-local storage {key:#x} asked for with {size} bytes, created with {}",
            storage.len() * 8
        );
        process::abort();
    }
    storage.as_ptr() as usize
}

/// Storage private to the simulated kernel bound to the calling thread: `size` bytes, 8-byte
/// aligned, zeroed when first asked for, then the same for every later call with the same
/// `key` through the same kernel (from any of its threads), and freed with the kernel. NULL
/// when no kernel is bound to the thread (or `key` is NULL or `size` is 0). Asking again for
/// a key with another size aborts the process.
///
/// Only atomics may be kept there: the kernel's threads share it. Any IRQL; after the first
/// call for a key, a thread's later calls take no lock.
#[unsafe(no_mangle)]
pub extern "C" fn ebpf_ext_usersim_kernel_local(key: *const c_void, size: usize) -> *mut c_void {
    let key = key as usize;
    if key == 0 || size == 0 {
        return ptr::null_mut();
    }
    let cached = CACHE.with_borrow(|c| c.iter().find(|e| e.0 == key).copied());
    if let Some((_, cached_size, storage)) = cached
        && cached_size == size
    {
        return storage as *mut c_void;
    }
    let Some(storage) = try_with_kernel(|inner| storage(inner, key, size)) else {
        return ptr::null_mut();
    };
    CACHE.with_borrow_mut(|c| c.push((key, size, storage)));
    storage as *mut c_void
}
