//! Every [`Provider`](crate::Provider) of this driver image that is still registered, so that
//! unload can deregister one whose `Provider` value was leaked (`mem::forget`, a reference
//! cycle, a leaked box) instead of leaving NMR with callbacks into an unloaded image.
//!
//! Safe Rust may leak any value, so a provider whose deregistration lives only in `Drop` is
//! not enough for a safe SDK: a leaked one stays registered after `DriverUnload` returns, and
//! the next client to attach, or the core's next detach, calls code that is no longer mapped
//! (bug check 0xCE, `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`, or worse). The
//! driver glue calls [`deregister_leaked`] once the extension is dropped: a leak stays a leak
//! (the provider's state is never freed nor dropped, and Driver Verifier reports the pool),
//! never a call into freed code.
//!
//! # One list per image, one per simulated kernel
//!
//! In a driver image the list is a `static`: one per driver. On the host it lives in
//! usersim's per-kernel storage keyed by this crate's key (as `ebpf-ext-trace` keeps its
//! state): test threads of one process that bind different simulated kernels each see their
//! own, and an image the PE loader maps has its own copy of this crate, so its own list.
//!
//! # Locking
//! A push lock, taken exclusively inside a critical region only to link or unlink an entry
//! (never across a deregistration). PASSIVE_LEVEL (registration and deregistration are).

use core::cell::UnsafeCell;
use core::ptr;

use ebpf_ext_sys::ntddk::{KeEnterCriticalRegion, KeLeaveCriticalRegion};
use ebpf_ext_sys::ntdef::{GUID, HANDLE};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::wdm::{EX_PUSH_LOCK, ExAcquirePushLockExclusiveEx, ExReleasePushLockExclusiveEx};

/// Where a registration stands in its image's list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Linked {
    /// Never listed (on the host, registered with no kernel storage: nothing to sweep into).
    No,
    /// Listed: its `Provider`'s `Drop` deregisters it (or, put back after NMR refused that
    /// `Drop`'s deregistration, a sweep does).
    Yes,
    /// Taken off the list and deregistered by a sweep ([`deregister_leaked`],
    /// [`deregister_leaked_except`]): its `Provider`, if ever dropped, must neither
    /// deregister it again nor free it.
    Swept,
}

/// One registration's entry, inside its provider's pinned state. Accessed only under the
/// list's lock (hence the `UnsafeCell` around it: NMR callbacks share the state meanwhile).
pub(crate) struct Link {
    next: *mut Link,
    prev: *mut Link,
    handle: HANDLE,
    /// The NPI it provides, which [`deregister_leaked_except`] sweeps by.
    npi: GUID,
    module: GUID,
    linked: Linked,
    /// The list it was put on (on the host, the kernel bound when it was registered, which
    /// need not be the one bound when it is dropped).
    list: *const List,
}

/// A [`Link`] in its provider's state, written only under its list's lock.
pub(crate) struct LinkCell(UnsafeCell<Link>);

// A panic cannot leave an entry half-linked where a caller that caught it would see it: the
// entry is only touched under the lock, by code that does not panic.
impl core::panic::RefUnwindSafe for LinkCell {}

impl LinkCell {
    /// An unlisted entry for the registration of `module` as a provider of `npi`.
    pub(crate) const fn new(npi: GUID, module: GUID) -> LinkCell {
        LinkCell(UnsafeCell::new(Link {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            handle: ptr::null_mut(),
            npi,
            module,
            linked: Linked::No,
            list: ptr::null(),
        }))
    }

    /// The entry, for [`list_registration`], [`unlist`] and [`handle`].
    pub(crate) const fn get(&self) -> *mut Link {
        self.0.get()
    }
}

/// The list: a push lock and the first entry. All-zero bytes are an empty, free list.
struct List {
    lock: UnsafeCell<EX_PUSH_LOCK>,
    head: UnsafeCell<*mut Link>,
}

// SAFETY: `head` and the entries are read and written only under `lock`.
unsafe impl Sync for List {}

// As for `LinkCell`: only touched under the lock, by code that does not panic.
impl core::panic::RefUnwindSafe for List {}

impl List {
    /// Runs `f` with the list's head under its lock.
    fn locked<R>(&self, f: impl FnOnce(&mut *mut Link) -> R) -> R {
        // SAFETY: PASSIVE_LEVEL callers (module documentation); left below.
        unsafe { KeEnterCriticalRegion() };
        // SAFETY: an initialised (zero) push lock that lives as long as the list.
        unsafe { ExAcquirePushLockExclusiveEx(self.lock.get(), 0) };
        // SAFETY: the lock is held exclusively, so this is the only reference to the head.
        let result = f(unsafe { &mut *self.head.get() });
        // SAFETY: held exclusively since just above.
        unsafe { ExReleasePushLockExclusiveEx(self.lock.get(), 0) };
        // SAFETY: entered above.
        unsafe { KeLeaveCriticalRegion() };
        result
    }
}

#[cfg(target_os = "windows")]
static LIST: List = List {
    lock: UnsafeCell::new(0),
    head: UnsafeCell::new(ptr::null_mut()),
};

/// This image's list.
#[cfg(target_os = "windows")]
fn list() -> Option<&'static List> {
    Some(&LIST)
}

/// The key of this crate's list in usersim's per-kernel storage.
#[cfg(not(target_os = "windows"))]
static KEY: u8 = 0;

/// The list of the simulated kernel bound to this thread; `None` when none is bound.
#[cfg(not(target_os = "windows"))]
fn list() -> Option<&'static List> {
    // SAFETY: all-zero is an empty, free `List`, changed only under its push lock and through
    // atomics; `KEY` is this crate's alone; the storage lives as long as the bound kernel,
    // which outlives every registration made in it (NMR is the kernel's).
    unsafe { ebpf_ext_sys::host::kernel_local::<List>(ptr::from_ref(&KEY).cast()) }
}

/// Lists a registration that NMR has just accepted with `handle`.
///
/// # Safety
/// `link` is the unlisted entry of that registration, at its final address until
/// [`unlist`] has returned for it (or, if swept, for ever).
pub(crate) unsafe fn list_registration(link: *mut Link, handle: HANDLE) {
    let Some(list) = list() else {
        // SAFETY: not listed, so ours alone (caller's contract).
        unsafe { (*link).handle = handle };
        return;
    };
    list.locked(|head| {
        // SAFETY: the entry is valid and not yet listed, so ours alone (caller's contract).
        let entry = unsafe { &mut *link };
        (entry.next, entry.prev) = (*head, ptr::null_mut());
        (entry.handle, entry.linked, entry.list) = (handle, Linked::Yes, list);
        // SAFETY: listed entries are valid while listed and accessed only under this lock,
        // which is held.
        if let Some(next) = unsafe { head.as_mut() } {
            next.prev = link;
        }
        *head = link;
    });
}

/// Takes `entry` off the list whose first entry `head` holds, and marks it `now`.
///
/// # Safety
/// `entry` is on that list, and the caller holds the list's lock.
unsafe fn unlink(head: &mut *mut Link, entry: &mut Link, now: Linked) {
    // SAFETY: its listed neighbours are valid and accessed only under the lock (caller's
    // contract).
    match unsafe { entry.prev.as_mut() } {
        Some(prev) => prev.next = entry.next,
        None => *head = entry.next,
    }
    // SAFETY: as above.
    if let Some(next) = unsafe { entry.next.as_mut() } {
        next.prev = entry.prev;
    }
    entry.linked = now;
}

/// Takes a registration off its list for its `Provider`'s `Drop`: whether that `Drop` still
/// deregisters it (false once a sweep has).
///
/// # Safety
/// `link` was given to [`list_registration`], and this is its one call.
pub(crate) unsafe fn unlist(link: *mut Link) -> bool {
    let unlink = |head: &mut *mut Link| {
        // SAFETY: the entry is valid (caller's contract) and accessed under the lock.
        let entry = unsafe { &mut *link };
        match entry.linked {
            Linked::Swept => return false,
            Linked::No => return true,
            Linked::Yes => {}
        }
        // SAFETY: listed (checked) on the list whose lock is held.
        unsafe { unlink(head, entry, Linked::No) };
        true
    };
    // SAFETY: the entry is valid (caller's contract); `list` is written only when it is
    // listed, before `list_registration` returns, and never changes after.
    let list = unsafe { (*link).list };
    // SAFETY: the list of the kernel the provider registered in, which outlives its
    // registrations (NMR is the kernel's); or, on Windows, the image's `static`.
    match unsafe { list.as_ref() } {
        Some(list) => list.locked(unlink),
        // Never listed (registered with no list): ours alone, and never swept.
        None => true,
    }
}

/// The registration handle of a `Provider`'s entry.
///
/// # Safety
/// `link` was given to [`list_registration`] and [`unlist`] returned true for it.
pub(crate) unsafe fn handle(link: *const Link) -> HANDLE {
    // SAFETY: off the list, so no one else accesses it (caller's contract).
    unsafe { (*link).handle }
}

/// Deregisters, and waits for, every provider of this image (on the host: of the bound
/// kernel) still registered. Called once every `Provider` the driver keeps has been
/// dropped, those still registered are the leaked ones. Each is traced
/// (`EbpfExtGenericMessage`, Error, keyword `EXTENSION`, its module id); its state is left
/// allocated and undropped, a leak, so that a `Provider` dropped later cannot reach freed
/// memory. Returns how many there were.
///
/// The driver glue calls this once the extension has been dropped (at unload, and when
/// `DriverEntry` fails), before the device and tracing go; a driver with its own
/// `DriverEntry` calls it from its unload the same way.
///
/// On the host the list is the bound simulated kernel's, which natively linked drivers and
/// the test itself share: unloading one driver also deregisters the other drivers' and the
/// test's own providers in that kernel. Give each natively linked driver its own kernel, or
/// load images (each has its own list).
///
/// # Safety
/// No other thread runs the driver's code, and no `Provider` of the driver is dropped until
/// this returns: it deregisters providers still in use as well, and a `Provider` dropped
/// meanwhile returns at once without waiting for NMR's last callback (its state is left in
/// place), so whatever its owner frees next (a device its bindings' work items use) could
/// still be in use. The driver's unload, once its extension value is dropped, is such a time.
///
/// # IRQL
/// PASSIVE_LEVEL.
#[expect(
    clippy::must_use_candidate,
    reason = "the count is for tests and diagnostics; an unload has no use for it"
)]
pub unsafe fn deregister_leaked() -> usize {
    sweep(|_| true)
}

/// As [`deregister_leaked`], but leaves every provider of `npi` registered (and listed, so a
/// later [`deregister_leaked`] still takes a leaked one). For an unload that stops providers
/// it still keeps after the leaked ones: the driver glue sweeps everything but the
/// program-information providers (a leaked hook stops before the program type whose programs
/// it runs), stops the program types it keeps, then sweeps the rest.
///
/// # Safety
/// As [`deregister_leaked`]; the providers of `npi` it leaves may be dropped afterwards.
///
/// # IRQL
/// PASSIVE_LEVEL.
#[expect(
    clippy::must_use_candidate,
    reason = "the count is for tests and diagnostics; an unload has no use for it"
)]
pub unsafe fn deregister_leaked_except(npi: &GUID) -> usize {
    sweep(|other| other != npi)
}

/// Deregisters every listed provider whose NPI `take` accepts, newest first.
fn sweep(take: impl Fn(&GUID) -> bool) -> usize {
    let Some(list) = list() else {
        return 0;
    };
    let mut swept = 0;
    loop {
        let taken = list.locked(|head| {
            let mut at = *head;
            // SAFETY: listed entries are valid and accessed only under the lock, held here.
            while let Some(entry) = unsafe { at.as_mut() } {
                if !take(&entry.npi) {
                    at = entry.next;
                    continue;
                }
                // SAFETY: listed on this list, whose lock is held.
                unsafe { unlink(head, entry, Linked::Swept) };
                return Some((entry.handle, entry.module));
            }
            None
        });
        let Some((handle, module)) = taken else {
            return swept;
        };
        ebpf_ext_trace::trace_message_guid_status!(
            ebpf_ext_trace::Level::Error,
            ebpf_ext_trace::keyword::EXTENSION,
            "an NPI provider still registered at unload (its Provider was leaked) is deregistered",
            module,
            STATUS_SUCCESS
        );
        // A failure is traced; the state is leaked either way (a refused one stays
        // registered: the sweep is the last try).
        // SAFETY: a live registration handle: swept (so its `Provider` never deregisters it)
        // from the list, which holds only registrations not yet deregistered. Its state is
        // never freed, so NMR's references stay valid through the wait.
        let _ = unsafe { crate::deregister_provider(handle) };
        swept += 1;
    }
}
