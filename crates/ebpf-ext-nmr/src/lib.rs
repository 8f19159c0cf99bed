//! A generic NPI provider: the NMR scaffolding the SDK's providers (program information, hook,
//! map) share, written once.
//!
//! An SDK provider implements the `unsafe` trait [`NpiProvider`] — its NPI id, its NPI-specific characteristics,
//! and what happens when a client attaches and detaches — and registers it with
//! [`Provider::register`]. [`Provider`] owns the pinned `NPI_PROVIDER_CHARACTERISTICS` and
//! module id, routes NMR's three callbacks to the trait with typed contexts (the provider as
//! `&P`, each binding as `&P::Binding`, through the one typed pair in [`foreign`]), frees a
//! binding when NMR cleans it up, and deregisters and waits in `Drop`
//! (`NmrDeregisterProvider` + `NmrWaitForProviderDeregisterComplete`); a provider whose
//! `Drop` never runs is deregistered at unload by [`deregister_leaked`]. It replaces the
//! per-provider register/unregister/attach/detach/cleanup skeleton of the C extensions
//! (`net_ebpf_extension_*_provider_register`, `ebpf_extension_*_provider_*`).
//!
//! # IRQL
//! Registration and deregistration: PASSIVE_LEVEL.
#![no_std]

use core::ffi::c_void;
use core::marker::{PhantomData, PhantomPinned};
use core::mem;
use core::ptr;

use ebpf_ext_pool::{PoolBox, PoolTag};

use ebpf_ext_sys::netioddk::{
    NPI_MODULEID, NPI_PROVIDER_ATTACH_CLIENT_FN, NPI_PROVIDER_CHARACTERISTICS,
    NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN, NPI_PROVIDER_DETACH_CLIENT_FN,
    NPI_REGISTRATION_INSTANCE, NPIID, NmrDeregisterProvider, NmrProviderDetachClientComplete,
    NmrRegisterProvider, NmrWaitForProviderDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_sys::{Error, Result};

mod live;

pub use live::{deregister_leaked, deregister_leaked_except};

/// Characteristics of a provider of `npi_id` with these callbacks (version 0, length 72,
/// registration instance version 0, size 40, number 0). The module id and NPI-specific
/// characteristics point into the provider's own pinned context, so the caller fills them in
/// once the context is in place.
#[must_use]
const fn provider_characteristics(
    npi_id: &'static NPIID,
    attach: NPI_PROVIDER_ATTACH_CLIENT_FN,
    detach: NPI_PROVIDER_DETACH_CLIENT_FN,
    cleanup: NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN,
) -> NPI_PROVIDER_CHARACTERISTICS {
    NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        #[expect(clippy::cast_possible_truncation, reason = "72 bytes")]
        Length: size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
        ProviderAttachClient: Some(attach),
        ProviderDetachClient: Some(detach),
        ProviderCleanupBindingContext: Some(cleanup),
        ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            #[expect(clippy::cast_possible_truncation, reason = "40 bytes")]
            Size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: npi_id,
            ModuleId: ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: ptr::null(),
        },
    }
}

/// Registers a provider; a failure is traced (`EbpfExtApiError`, keyword `EXTENSION`) and
/// returned.
///
/// # Safety
/// `characteristics` (and what it points to) and `context` stay valid and in place until
/// [`deregister_provider`] has returned for the handle.
///
/// # Errors
/// [`Error::Api`] with `NmrRegisterProvider`'s status.
unsafe fn register_provider(
    characteristics: *const NPI_PROVIDER_CHARACTERISTICS,
    context: *mut c_void,
) -> Result<HANDLE> {
    let mut handle: HANDLE = ptr::null_mut();
    // SAFETY: the caller keeps the characteristics and context valid until deregistration.
    let status = unsafe { NmrRegisterProvider(characteristics, context, &raw mut handle) };
    if status == STATUS_SUCCESS {
        Ok(handle)
    } else {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrRegisterProvider",
            status
        );
        Err(Error::api("NmrRegisterProvider", status))
    }
}

/// How [`deregister_provider`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deregistration {
    /// NMR holds no reference to the provider any more.
    Complete,
    /// `NmrDeregisterProvider` failed: no deregistration started, the provider stays
    /// registered, and deregistering it may be tried again.
    Refused,
    /// The wait failed: what NMR still holds is unknown.
    Unfinished,
}

/// Deregisters a provider and waits until every client has detached and been cleaned up.
/// Each failure is traced; after any but [`Deregistration::Complete`] NMR may still call
/// back with the provider's context, so its state must never be freed.
///
/// # Safety
/// `handle` came from [`register_provider`] and is deregistered once (again only after
/// [`Deregistration::Refused`]).
unsafe fn deregister_provider(handle: HANDLE) -> Deregistration {
    // SAFETY: a live registration handle (caller's contract).
    let status = unsafe { NmrDeregisterProvider(handle) };
    if status != STATUS_PENDING && status != STATUS_SUCCESS {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrDeregisterProvider",
            status
        );
        return Deregistration::Refused;
    }
    // SAFETY: deregistration started above.
    let status = unsafe { NmrWaitForProviderDeregisterComplete(handle) };
    if status != STATUS_SUCCESS {
        ebpf_ext_trace::trace_api_failure!(
            ebpf_ext_trace::keyword::EXTENSION,
            "NmrWaitForProviderDeregisterComplete",
            status
        );
        return Deregistration::Unfinished;
    }
    Deregistration::Complete
}

/// The module GUID of a client's registration instance (GUID_NULL if absent or not
/// `MIT_GUID`).
///
/// # Safety
/// `instance` is NULL or the registration instance NMR passed to `ProviderAttachClient`.
#[must_use]
unsafe fn client_module_guid(instance: *const NPI_REGISTRATION_INSTANCE) -> GUID {
    if instance.is_null() {
        return GUID::NULL;
    }
    // SAFETY: NMR passes the client's registration instance, valid during attach.
    let module = unsafe { (*instance).ModuleId };
    if module.is_null() {
        return GUID::NULL;
    }
    // SAFETY: a registered client's module id.
    unsafe { (*module).guid() }.unwrap_or(GUID::NULL)
}

// ---- A safe, generic NPI provider ---------------------------------------------------------

/// The provider side of one NPI: what an SDK provider (program information, hook, map)
/// implements.
/// [`Provider`] does the rest: it owns the pinned characteristics, registers them, routes the
/// three NMR callbacks to these methods with typed contexts, frees each binding after NMR's
/// cleanup, and deregisters and waits in `Drop`.
///
/// # Safety
/// The characteristics are what `NPI_ID`'s clients may rely on: valid for that NPI, and
/// upholding its rules (for the eBPF core's program-information NPI, helpers that read the
/// program context as the type the program type's hooks invoke programs with). Clients
/// dereference what they are given, so a safe implementation could otherwise hand the core
/// arbitrary pointers. The SDK's providers (program information, hook, map, BTF-resolved
/// functions) are the implementations; an extension uses those.
///
/// # IRQL
/// [`NpiProvider::attach`]: PASSIVE_LEVEL. [`NpiProvider::detach`]: ≤ DISPATCH_LEVEL.
pub unsafe trait NpiProvider: Send + Sync + Sized + 'static {
    /// The NPI-specific characteristics published to clients (`NpiSpecificCharacteristics`).
    type Characteristics: 'static;
    /// What the provider keeps per attached client (NMR's provider binding context). It is
    /// dropped in NMR's cleanup callback, at IRQL ≤ DISPATCH_LEVEL: its `Drop` may neither
    /// block nor touch pageable memory.
    type Binding: Send + Sync + 'static;

    /// The NPI this provider implements.
    const NPI_ID: &'static NPIID;

    /// The NPI-specific characteristics; they live as long as the provider.
    fn characteristics(&self) -> &Self::Characteristics;

    /// A client attaches: validate it and return its binding, allocated with
    /// [`AttachingClient::allocate`]. The binding's address is final once allocated, so the
    /// provider may publish it before returning.
    ///
    /// # Errors
    /// The status NMR returns to the client (the attach is refused). A success-class status
    /// (`STATUS_PENDING`, say, which an [`Error::Status`] may carry) would tell NMR the client
    /// is attached with no binding: the client gets `STATUS_UNSUCCESSFUL` instead.
    fn attach(
        &self,
        client: &AttachingClient<'_>,
    ) -> core::result::Result<Bound<Self::Binding>, NTSTATUS>;

    /// A client detaches. Return [`Detach::Complete`] when nothing can still call into the
    /// client, or [`Detach::Pending`] and later call [`DetachCompletion::complete`] with the
    /// completion taken at attach. NMR passes only the binding, so a binding that needs its
    /// provider keeps a reference to it (the provider outlives its bindings).
    fn detach(binding: &Self::Binding) -> Detach;
}

/// What [`NpiProvider::detach`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// The client may go now (`STATUS_SUCCESS`).
    Complete,
    /// The provider completes the detach later (`STATUS_PENDING`).
    Pending,
}

/// A client in the middle of `ProviderAttachClient`: what it presented, read-only.
pub struct AttachingClient<'a> {
    binding: HANDLE,
    registration: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    tag: PoolTag,
    _callback: PhantomData<&'a ()>,
}

impl AttachingClient<'_> {
    /// The client's registration instance, as NMR passed it (NULL or valid during attach).
    #[must_use]
    pub fn registration(&self) -> *const NPI_REGISTRATION_INSTANCE {
        self.registration
    }

    /// The client's dispatch table, as NMR passed it (NULL or valid until the detach
    /// completes).
    #[must_use]
    pub fn dispatch(&self) -> *const c_void {
        self.client_dispatch
    }

    /// The client's binding context: an opaque value the client's dispatch functions take.
    #[must_use]
    pub fn binding_context(&self) -> *const c_void {
        self.client_binding_context.cast_const()
    }

    /// The client's module GUID (GUID_NULL if absent or not `MIT_GUID`).
    #[must_use]
    pub fn module_id(&self) -> GUID {
        // SAFETY: NULL or the registration instance NMR passed to this attach.
        unsafe { client_module_guid(self.registration) }
    }

    /// The token that completes a pending detach of this client; keep it in the binding.
    #[must_use]
    pub fn detach_completion(&self) -> DetachCompletion {
        DetachCompletion {
            binding: self.binding,
        }
    }

    /// Moves `value` to non-paged pool with the provider's tag, as a binding: from here on
    /// its address is final.
    ///
    /// # Errors
    /// The value back, if the allocation fails.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn allocate<B>(&self, value: B) -> core::result::Result<Bound<B>, B> {
        match PoolBox::try_new_or_return(
            Tagged {
                tag: self.tag,
                value,
            },
            self.tag,
        ) {
            Ok(boxed) => Ok(Bound { boxed }),
            Err(tagged) => Err(tagged.value),
        }
    }
}

/// A binding in non-paged pool, at its final address (see [`AttachingClient::allocate`]).
pub struct Bound<B> {
    boxed: PoolBox<Tagged<B>>,
}

impl<B> core::ops::Deref for Bound<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.boxed.value
    }
}

/// The binding behind a provider binding context that a client passes back to the provider's
/// own dispatch functions (the first argument of a map provider's callbacks, for example).
///
/// # Safety
/// `context` is NULL or the provider binding context of a binding made with
/// [`AttachingClient::allocate`] of a `B`, not yet cleaned up, for `'a`.
#[must_use]
pub unsafe fn binding_from_context<'a, B>(context: *const c_void) -> Option<&'a B> {
    // SAFETY: the caller's precondition: NULL or a live `Tagged<B>` made by `allocate`.
    unsafe { foreign::from_foreign::<Tagged<B>>(context) }.map(|tagged| &tagged.value)
}

/// A binding with the tag it was allocated with, which its cleanup frees it with.
struct Tagged<B> {
    tag: PoolTag,
    value: B,
}

/// Completes a detach that [`NpiProvider::detach`] left pending
/// (`NmrProviderDetachClientComplete`). A copy of the binding's handle: copy it out of the
/// binding and complete it once nothing borrows the binding any more, since NMR may free the
/// binding inside the call.
#[derive(Debug, Clone, Copy)]
pub struct DetachCompletion {
    binding: HANDLE,
}

// SAFETY: an NMR binding handle may be completed from any thread.
unsafe impl Send for DetachCompletion {}
// SAFETY: as above; `complete` uses a copy of the handle only through `unsafe`.
unsafe impl Sync for DetachCompletion {}

impl DetachCompletion {
    /// Tells NMR the pending detach is done. NMR may then clean up (free) the binding at once,
    /// inside this call.
    ///
    /// # Safety
    /// [`NpiProvider::detach`] returned [`Detach::Pending`] for this binding, this is called
    /// once (for all copies), and nothing borrows the binding during the call or touches it
    /// afterwards (no reference into it may be live, not even an unused function argument:
    /// call this after the function that borrowed the binding has returned).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub unsafe fn complete(self) {
        // SAFETY: the caller's contract: a pending detach of this binding, completed once.
        unsafe { NmrProviderDetachClientComplete(self.binding) };
    }
}

/// The registration's pinned state: the characteristics point into it, and NMR holds its
/// address as the provider context.
struct Registered<P: NpiProvider> {
    characteristics: NPI_PROVIDER_CHARACTERISTICS,
    module_id: NPI_MODULEID,
    /// This registration's entry in its image's list of live ones (and its handle).
    link: live::LinkCell,
    tag: PoolTag,
    provider: P,
    _pin: PhantomPinned,
}

/// A registered NPI provider. Dropping it deregisters and waits until every client has
/// detached and been cleaned up. If NMR fails the deregistration or the wait (it should not:
/// `STATUS_PENDING` is the documented result), the failure is traced and the state leaked,
/// never freed while NMR may still read it; a refused deregistration is tried again by the
/// unload sweep ([`deregister_leaked`]).
///
/// A leaked one (`mem::forget`, a reference cycle) stays registered until its driver
/// unloads, where [`deregister_leaked`] (which the driver glue calls) deregisters it and
/// leaves its state allocated: a leak, never a call into an unloaded image.
///
/// # IRQL
/// Registration and drop: PASSIVE_LEVEL (never from the provider's own callbacks).
///
/// # Invariants
/// `registered` stays at one pool address from registration until `Drop` has waited for
/// deregistration to complete; NMR's callbacks receive that address as their context.
pub struct Provider<P: NpiProvider> {
    registered: Option<PoolBox<Registered<P>>>,
}

// SAFETY: the state is shared with NMR callbacks only as `&P` (`P: Sync`), and with other
// threads' registrations and the unload sweep only through its list entry, under the list's
// lock; `P: Send`.
unsafe impl<P: NpiProvider> Send for Provider<P> {}
// SAFETY: as above.
unsafe impl<P: NpiProvider> Sync for Provider<P> {}

impl<P: NpiProvider> Provider<P> {
    /// Registers `provider` as the module `module_id` of `P::NPI_ID`; its allocations (the
    /// state and the bindings) use `tag`.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`]; [`Error::Api`] with `NmrRegisterProvider`'s status.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn register(module_id: GUID, provider: P, tag: PoolTag) -> Result<Self> {
        let mut registered = PoolBox::try_new(
            Registered {
                characteristics: provider_characteristics(
                    P::NPI_ID,
                    attach_client::<P>,
                    detach_client::<P>,
                    cleanup_binding_context::<P>,
                ),
                module_id: NPI_MODULEID::from_guid(module_id),
                link: live::LinkCell::new(*P::NPI_ID, module_id),
                tag,
                provider,
                _pin: PhantomPinned,
            },
            tag,
        )?;
        let state: &mut Registered<P> = &mut registered;
        let instance = &mut state.characteristics.ProviderRegistrationInstance;
        instance.ModuleId = &raw const state.module_id;
        instance.NpiSpecificCharacteristics = foreign::to_foreign(state.provider.characteristics());
        let characteristics = &raw const state.characteristics;
        let context = foreign::to_foreign(&*registered).cast_mut();
        // SAFETY: the characteristics, module id, NPI-specific data (inside the provider) and
        // context stay at this pool address until `Drop` has waited for deregistration
        // (invariant). On failure NMR holds no reference and the state is freed on return.
        let handle = unsafe { register_provider(characteristics, context) }?;
        // SAFETY: the state's unlisted entry, at this pool address until `Drop` unlists it,
        // or for ever if unload sweeps it (`Drop` then leaks the state).
        unsafe { live::list_registration(registered.link.get(), handle) };
        // INVARIANT: registered at this address.
        Ok(Provider {
            registered: Some(registered),
        })
    }

    /// The provider.
    #[must_use]
    pub fn get(&self) -> &P {
        // Taken only in `Drop`.
        let Some(registered) = self.registered.as_ref() else {
            unreachable!("provider used after deregistering")
        };
        &registered.provider
    }
}

impl<P: NpiProvider> Drop for Provider<P> {
    fn drop(&mut self) {
        let Some(registered) = self.registered.take() else {
            return;
        };
        // SAFETY: listed by `register`; this is the one call.
        if !unsafe { live::unlist(registered.link.get()) } {
            // Unload found this provider leaked and deregistered it (`deregister_leaked`),
            // while this value lived on: NMR may still be waiting on that deregistration, so
            // the state stays where it is, for ever.
            mem::forget(registered);
            return;
        }
        // SAFETY: unlisted just above, by this drop.
        let handle = unsafe { live::handle(registered.link.get()) };
        // SAFETY: the live handle of this registration, deregistered once. When it is
        // complete every client has detached and been cleaned up, and NMR holds no reference.
        match unsafe { deregister_provider(handle) } {
            Deregistration::Complete => drop(registered),
            Deregistration::Refused => {
                // Still registered (traced): the state stays, and goes back on the list, so
                // that unload's sweep (`deregister_leaked`) tries again before the image
                // goes. Driver Verifier reports the leaked pool.
                // SAFETY: unlisted above and never freed from here on (forgotten below).
                unsafe { live::list_registration(registered.link.get(), handle) };
                mem::forget(registered);
            }
            // NMR did not finish the deregistration (traced): it may still call back with
            // the context, so the state is leaked rather than freed. Nothing can be retried.
            Deregistration::Unfinished => mem::forget(registered),
        }
    }
}

unsafe extern "win64" fn attach_client<P: NpiProvider>(
    binding: HANDLE,
    provider_context: *mut c_void,
    client_registration: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    // SAFETY: NMR passes back the context registered in `Provider::register`, alive until
    // deregistration completes.
    let Some(registered) =
        (unsafe { foreign::from_foreign::<Registered<P>>(provider_context.cast_const()) })
    else {
        return STATUS_INVALID_PARAMETER;
    };
    if provider_binding_context.is_null() || provider_dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: checked non-null; NMR passes writable slots. Zeroed so a refusal leaves nothing.
    unsafe { provider_binding_context.write(ptr::null_mut()) };
    // SAFETY: as above. These providers publish no dispatch table of their own.
    unsafe { provider_dispatch.write(ptr::null()) };
    let client = AttachingClient {
        binding,
        registration: client_registration,
        client_binding_context,
        client_dispatch,
        tag: registered.tag,
        _callback: PhantomData,
    };
    match registered.provider.attach(&client) {
        Ok(bound) => {
            // NMR owns the binding from here until `cleanup_binding_context`.
            let bound = foreign::into_foreign(bound.boxed);
            // SAFETY: checked non-null above.
            unsafe { provider_binding_context.write(bound) };
            STATUS_SUCCESS
        }
        // NMR reads any `NT_SUCCESS` status as an attach.
        Err(status) if NT_SUCCESS(status) => STATUS_UNSUCCESSFUL,
        Err(status) => status,
    }
}

unsafe extern "win64" fn detach_client<P: NpiProvider>(
    provider_binding_context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: NMR passes the binding `attach_client` stored; it lives until cleanup, which NMR
    // runs only after this detach completes.
    let Some(bound) = (unsafe {
        foreign::from_foreign::<Tagged<P::Binding>>(provider_binding_context.cast_const())
    }) else {
        return STATUS_INVALID_PARAMETER;
    };
    match P::detach(&bound.value) {
        Detach::Complete => STATUS_SUCCESS,
        Detach::Pending => STATUS_PENDING,
    }
}

unsafe extern "win64" fn cleanup_binding_context<P: NpiProvider>(
    provider_binding_context: *mut c_void,
) {
    // SAFETY: the binding `attach_client` stored, which both sides have detached from; NMR
    // cleans each binding up once.
    let bound =
        unsafe { foreign::from_foreign_owned::<Tagged<P::Binding>>(provider_binding_context) };
    drop(bound);
}

/// The one typed pair of conversions between Rust values and the `void*` contexts NMR and
/// the kernel hand back to callbacks (the Linux kernel's `ForeignOwnable`): every SDK crate
/// converts through these, never by a cast at the call site.
///
/// Also the one place that reads and writes pointer fields of a context foreign code reads
/// by offset (a program context's data pointers: hooks, test runs and helper trampolines).
pub mod foreign {
    use core::ffi::c_void;
    use core::ptr::{self, NonNull};

    use ebpf_ext_pool::{PoolBox, PoolTag};

    /// `value` as an opaque context, borrowed: the caller keeps it alive and in place for as
    /// long as the context may be handed back.
    #[must_use]
    pub fn to_foreign<T>(value: &T) -> *const c_void {
        ptr::from_ref(value).cast()
    }

    /// `value` as an opaque context, mutably borrowed (for contexts the callee may write,
    /// such as a program context).
    #[must_use]
    pub fn to_foreign_mut<T>(value: &mut T) -> *mut c_void {
        ptr::from_mut(value).cast()
    }

    /// The value behind a context made by [`to_foreign`] (or [`into_foreign`]); `None` for
    /// NULL.
    ///
    /// # Safety
    /// `context` is NULL or was made from a `T` that is alive, unmoved and not mutably
    /// borrowed for `'a`.
    #[must_use]
    pub unsafe fn from_foreign<'a, T>(context: *const c_void) -> Option<&'a T> {
        // SAFETY: the caller's contract.
        unsafe { context.cast::<T>().as_ref() }
    }

    /// The value behind a context made by [`to_foreign_mut`]; `None` for NULL.
    ///
    /// # Safety
    /// `context` is NULL or was made from a `T` that is alive, unmoved and not otherwise
    /// borrowed for `'a`.
    #[must_use]
    pub unsafe fn from_foreign_mut<'a, T>(context: *mut c_void) -> Option<&'a mut T> {
        // SAFETY: the caller's contract.
        unsafe { context.cast::<T>().as_mut() }
    }

    /// The two pointer fields at byte offsets `offsets` of the object at `base` (a program
    /// context's data pointers), read unaligned.
    ///
    /// # Safety
    /// Each offset is that of a pointer field of a live object at `base`, and no reference to
    /// it but the one `base` comes from is in use.
    #[inline]
    #[must_use]
    pub unsafe fn read_pointer_fields(base: *mut u8, offsets: [usize; 2]) -> [*mut u8; 2] {
        offsets.map(|offset| {
            // SAFETY: a pointer field of the object (the caller's contract), read unaligned.
            unsafe { base.wrapping_add(offset).cast::<*mut u8>().read_unaligned() }
        })
    }

    /// Writes `values` into the two pointer fields at byte offsets `offsets` of the object at
    /// `base` (a program context's data pointers), unaligned.
    ///
    /// # Safety
    /// As [`read_pointer_fields`]; the object may be written through `base`.
    #[inline]
    pub unsafe fn write_pointer_fields(base: *mut u8, offsets: [usize; 2], values: [*mut u8; 2]) {
        for (offset, value) in offsets.into_iter().zip(values) {
            // SAFETY: a pointer field of the object (the caller's contract), written unaligned.
            unsafe {
                base.wrapping_add(offset)
                    .cast::<*mut u8>()
                    .write_unaligned(value);
            }
        }
    }

    /// Hands a pool allocation over as an owning context; `from_foreign_owned` takes it
    /// back.
    #[must_use]
    pub fn into_foreign<T>(value: PoolBox<T>) -> *mut c_void {
        value.into_raw().as_ptr().cast()
    }

    pub(crate) trait Tagged {
        fn tag(&self) -> PoolTag;
    }

    impl<B> Tagged for super::Tagged<B> {
        fn tag(&self) -> PoolTag {
            self.tag
        }
    }

    /// Takes back an allocation handed over by [`into_foreign`]; `None` for NULL.
    ///
    /// # Safety
    /// `context` is NULL or came from [`into_foreign`] of a `PoolBox<T>`, is taken back once,
    /// and nothing borrows the value any more.
    pub(crate) unsafe fn from_foreign_owned<T: Tagged>(context: *mut c_void) -> Option<PoolBox<T>> {
        let value = NonNull::new(context.cast::<T>())?;
        // SAFETY: alive until taken back (caller's contract).
        let tag = unsafe { value.as_ref() }.tag();
        // SAFETY: a pool allocation of a `T` with this tag, owned by the context until now.
        Some(unsafe { PoolBox::from_raw(value, tag) })
    }
}
