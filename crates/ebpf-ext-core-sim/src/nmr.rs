//! One NMR client registration: the characteristics, NPI id and module id NMR keeps pointers
//! to, the typed client state behind the context pointer, and deregistration that waits.
//!
//! The context handed to NMR (`ClientContext`, and the `ClientBindingContext` every client of
//! this crate passes to `NmrClientAttachProvider`) is the address of a [`Shared<T>`] inside
//! an `Arc`; it goes out through [`Registration::context`] and comes back through
//! [`Shared::from_context`], nowhere else.

use core::ffi::c_void;
use core::hash::BuildHasher;
use core::mem::{self, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use std::hash::RandomState;
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NmrDeregisterClient,
    NmrRegisterClient, NmrWaitForClientDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_PENDING, STATUS_SUCCESS};

use crate::error::CoreError;

/// The client side of one NPI, as NMR calls it.
pub(crate) trait NmrClient: Send + Sync + Sized + 'static {
    /// `ClientAttachProvider`. `context` is this registration's context, to be passed as
    /// `ClientBindingContext` to `NmrClientAttachProvider`.
    fn attach_provider(
        &self,
        binding: HANDLE,
        context: *mut c_void,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> NTSTATUS;

    /// `ClientDetachProvider`.
    fn detach_provider(&self) -> NTSTATUS;
}

/// `NPI_CLIENT_CHARACTERISTICS` whose pointers target the [`Shared`] that holds it.
struct Characteristics(NPI_CLIENT_CHARACTERISTICS);

// SAFETY: the characteristics are written once before registration and only read afterwards
// (by NMR); the pointers inside target immutable fields of the same `Shared` allocation, or
// heap buffers that allocation owns and never changes, so sharing them between threads is
// sound.
unsafe impl Send for Characteristics {}
// SAFETY: as above.
unsafe impl Sync for Characteristics {}

/// What NMR's pointers refer to while a client is registered.
///
/// # Invariants
/// While registered (from `NmrRegisterClient` until `NmrWaitForClientDeregisterComplete`
/// returns) the allocation is kept alive by a [`Registration`] (or leaked), and
/// `characteristics` is set and never changed.
#[repr(C)]
pub(crate) struct Shared<T> {
    /// First, so the context address is also the address of `T`.
    client: T,
    npi_id: GUID,
    module_id: NPI_MODULEID,
    characteristics: OnceLock<Characteristics>,
}

impl<T: NmrClient> Shared<T> {
    /// The client state.
    pub(crate) fn client(&self) -> &T {
        &self.client
    }

    /// The client state behind a context pointer NMR passed back.
    ///
    /// # Safety
    /// `context` is [`Registration::context`] of a registration whose deregistration has not
    /// completed.
    pub(crate) unsafe fn from_context<'a>(context: *const c_void) -> &'a T {
        // SAFETY: the caller's precondition: `context` points to a live `Shared<T>`.
        let shared = unsafe { &*context.cast::<Shared<T>>() };
        &shared.client
    }
}

/// A registered NMR client. Dropping it deregisters and waits.
pub(crate) struct Registration<T: NmrClient> {
    shared: Arc<Shared<T>>,
    /// The NMR client handle (a `HANDLE`, kept as an integer so the type is `Send`).
    handle: usize,
    registered: bool,
}

impl<T: NmrClient> Registration<T> {
    /// Registers `client` as an NMR client of `npi_id` with a fresh `MIT_GUID` module id.
    /// `npi_specific` gives the `NpiSpecificCharacteristics`: a pointer into the client state
    /// (or into heap memory it owns), which no longer moves.
    ///
    /// NMR may call `ClientAttachProvider` for every registered provider before this returns.
    ///
    /// # Errors
    /// [`CoreError::RegisterClient`] if `NmrRegisterClient` fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub(crate) fn register(
        npi_id: GUID,
        client: T,
        npi_specific: impl FnOnce(&T) -> *const c_void,
    ) -> Result<Self, CoreError> {
        let shared = Arc::new(Shared {
            client,
            npi_id,
            module_id: NPI_MODULEID::from_guid(fresh_guid()),
            characteristics: OnceLock::new(),
        });
        let instance = NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: u16::try_from(size_of::<NPI_REGISTRATION_INSTANCE>()).unwrap_or(u16::MAX),
            NpiId: ptr::from_ref(&shared.npi_id),
            ModuleId: ptr::from_ref(&shared.module_id),
            Number: 0,
            NpiSpecificCharacteristics: npi_specific(&shared.client),
        };
        // INVARIANT: set once here, before registration, and never changed.
        let characteristics = shared.characteristics.get_or_init(|| {
            Characteristics(NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: u16::try_from(size_of::<NPI_CLIENT_CHARACTERISTICS>()).unwrap_or(u16::MAX),
                ClientAttachProvider: Some(client_attach_provider::<T>),
                ClientDetachProvider: Some(client_detach_provider::<T>),
                ClientCleanupBindingContext: None,
                ClientRegistrationInstance: instance,
            })
        });
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: the characteristics and the context live in `shared`, which the returned
        // `Registration` keeps alive until deregistration completes (or leaks); the handle
        // slot is a local.
        let status = unsafe {
            NmrRegisterClient(
                &raw const characteristics.0,
                Arc::as_ptr(&shared).cast_mut().cast(),
                &raw mut handle,
            )
        };
        if !NT_SUCCESS(status) {
            return Err(CoreError::RegisterClient { status });
        }
        Ok(Registration {
            shared,
            handle: handle as usize,
            registered: true,
        })
    }

    /// The client state.
    pub(crate) fn client(&self) -> &T {
        &self.shared.client
    }

    /// The client state, shared: alive for as long as the returned handle, whatever becomes
    /// of the registration.
    pub(crate) fn share(&self) -> Arc<Shared<T>> {
        Arc::clone(&self.shared)
    }

    /// The context pointer NMR hands back to the callbacks.
    pub(crate) fn context(&self) -> *const c_void {
        Arc::as_ptr(&self.shared).cast()
    }

    /// The client's module GUID.
    pub(crate) fn module_id(&self) -> GUID {
        self.shared.module_id.guid().unwrap_or(GUID::NULL)
    }

    /// Deregisters (once) and waits until every binding has detached on both sides. On
    /// failure the shared state is leaked, since NMR may still use it.
    ///
    /// # Errors
    /// [`CoreError::Deregister`] if NMR rejects the handle.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (the wait needs < DISPATCH_LEVEL).
    pub(crate) fn deregister(&mut self) -> Result<(), CoreError> {
        if !self.registered {
            return Ok(());
        }
        self.registered = false;
        let handle = self.handle as HANDLE;
        // SAFETY: `handle` came from a successful `NmrRegisterClient` and is deregistered only
        // once (`registered` was true).
        let status = unsafe { NmrDeregisterClient(handle) };
        if status != STATUS_PENDING && status != STATUS_SUCCESS {
            self.leak();
            return Err(CoreError::Deregister {
                api: "NmrDeregisterClient",
                status,
            });
        }
        // SAFETY: deregistration of this handle has started.
        let status = unsafe { NmrWaitForClientDeregisterComplete(handle) };
        if status != STATUS_SUCCESS {
            self.leak();
            return Err(CoreError::Deregister {
                api: "NmrWaitForClientDeregisterComplete",
                status,
            });
        }
        Ok(())
    }

    fn leak(&self) {
        mem::forget(Arc::clone(&self.shared));
    }

    /// Keeps the client state allocated for the rest of the process, after deregistration
    /// completed: a provider that still calls in finds it, not freed memory.
    pub(crate) fn keep_alive(&self) {
        self.leak();
    }
}

impl<T: NmrClient> Drop for Registration<T> {
    fn drop(&mut self) {
        // A failure leaks the state; the owner reports errors through its own `detach`.
        let _ = self.deregister();
    }
}

/// `ClientAttachProvider` of every client of this crate.
unsafe extern "win64" fn client_attach_provider<T: NmrClient>(
    binding: HANDLE,
    context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: NMR passes back the context registered with this callback, alive until
    // deregistration completes.
    let client = unsafe { Shared::<T>::from_context(context) };
    client.attach_provider(binding, context, provider)
}

/// `ClientDetachProvider` of every client of this crate.
unsafe extern "win64" fn client_detach_provider<T: NmrClient>(
    binding_context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: every client of this crate passes its registration context as
    // `ClientBindingContext`; NMR detaches before deregistration completes.
    let client = unsafe { Shared::<T>::from_context(binding_context) };
    client.detach_provider()
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the state).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks, ignoring poisoning.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks, ignoring poisoning.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh random (version 4) GUID for a client module id.
pub(crate) fn fresh_guid() -> GUID {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Each `RandomState` has fresh keys: randomly seeded per thread, then incremented.
    let state = RandomState::new();
    let value = (u128::from(state.hash_one((n, 0u8))) << 64) | u128::from(state.hash_one((n, 1u8)));
    let version_4 = (value & !(0xF << 76)) | (0x4 << 76);
    let variant_1 = (version_4 & !(0x3 << 62)) | (0x2 << 62);
    GUID::from_u128(variant_1)
}

#[cfg(test)]
mod tests {
    use super::fresh_guid;

    #[test]
    fn fresh_guids_differ_and_are_version_4() {
        let a = fresh_guid();
        let b = fresh_guid();
        assert_ne!(a, b);
        assert_eq!(a.Data3 >> 12, 4, "{a}");
        assert_eq!(a.Data4[0] >> 6, 0b10, "{a}");
    }
}
