//! A hook NPI provider for one attach type: the part of an eBPF extension that lets the eBPF
//! core attach programs to a hook, and lets the extension run them when its event fires.
//!
//! It covers the union of netebpfext and ntosebpfext:
//!
//! - **Attach policies** ([`AttachPolicy`]): single attach; single attach per attach
//!   parameter; multi-attach with wildcard (up to 16 programs per parameter, wildcard programs
//!   after specific ones); and unrestricted (any number, attach data ignored, as ntosebpfext's
//!   process hook). [`Attached::check_exclusive_wildcard`] offers ntosebpfext's
//!   `check_attach_parameter` rule to an extension's on-attach callback.
//! - **Typed attach parameters**: the extension names a plain-data type and its wildcard
//!   value; the provider validates the client data (header version and sizes, parameter size
//!   exactly the type's size or zero, non-NULL data when sized, a dispatch table with an invoke
//!   entry) and rejects bad input with `STATUS_INVALID_PARAMETER` and a [`Rejection`].
//! - **Callbacks** ([`HookExtension`]): on attach (may reject; returns the per-client data)
//!   and on detach; the extension value itself is the per-provider data.
//! - **Asynchronous detach**: detach returns `STATUS_PENDING`; a work item removes the client
//!   from the published set, waits until no invocation can reach it, calls on-detach, and
//!   completes the detach; NMR's cleanup then frees it. Dropping the [`HookProvider`]
//!   unregisters and waits for every client.
//! - **Invocation**: all matching programs in order, a filtered subset with a verdict callback
//!   that can stop the chain, on an expanded kernel stack, one client at a time through
//!   [`HookProvider::clients`], and batched ([`HookProvider::with_batch`]) through the dispatch
//!   table's batch entries.
//!
//! # The hot path
//!
//! Invoking programs takes no lock and writes no cache line shared between processors except
//! the current processor's counter of a cache-aware rundown reference: attached clients are
//! published as immutable snapshots swapped by pointer, and retired once their rundown drains.
//! The protocol and why it is safe are described in the `snapshot` module's source
//! documentation (and modelled with `loom` in `tests/loom_snapshot.rs`).
//!
//! # IRQL
//! Register, unregister (drop), attach: PASSIVE_LEVEL. Detach callback: ≤ DISPATCH_LEVEL.
//! Invocation and iteration: ≤ DISPATCH_LEVEL.
//!
//! # Locking
//! Attach and detach completion serialise on the provider's writer push lock (inside a
//! critical region); the on-attach and on-detach callbacks run under it, so they must not
//! call back into the provider's attach path. Invocation takes no lock.
#![no_std]

mod snapshot;
mod validate;

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomPinned;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

use ebpf_ext_pool::{PoolBox, PoolTag};
use ebpf_ext_sys::ebpf_extension::{
    EBPF_CONTEXT_HEADER, ebpf_attach_provider_data_t, ebpf_execution_context_state_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_HOOK_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::EBPF_SUCCESS;
use ebpf_ext_sys::ebpf_structs::{bpf_attach_type_t, bpf_link_type};
use ebpf_ext_sys::ebpf_windows::EBPF_ATTACH_PROVIDER_DATA_HEADER;
use ebpf_ext_sys::netioddk::{
    NPI_MODULEID, NPI_PROVIDER_CHARACTERISTICS, NPI_REGISTRATION_INSTANCE,
    NmrProviderDetachClientComplete,
};
use ebpf_ext_sys::ntddk::{
    KeEnterCriticalRegion, KeExpandKernelStackAndCalloutEx, KeLeaveCriticalRegion,
};
use ebpf_ext_sys::ntdef::{FALSE, GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_PENDING,
    STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DelayedWorkQueue, EX_PUSH_LOCK, ExAcquirePushLockExclusiveEx,
    ExInitializePushLock, ExReleasePushLockExclusiveEx, IoAllocateWorkItem, IoFreeWorkItem,
    IoQueueWorkItem, PIO_WORKITEM,
};
use ebpf_ext_sys::{Error, Result};

use crate::snapshot::Snapshots;
pub use crate::validate::Rejection;
use crate::validate::{BatchFunctions, validate};

/// Most programs per attach parameter under [`AttachPolicy::MultiAttachWithWildcard`]
/// (`NET_EBPF_EXT_MAX_CLIENTS_PER_HOOK_MULTI_ATTACH`).
pub const MAX_CLIENTS_PER_PARAMETER: usize = 16;
/// Stack `invoke_on_expanded_stack` asks for (`NET_EBPF_EXT_STACK_EXPANSION_SIZE`).
pub const STACK_EXPANSION_SIZE: usize = 16 * 1024;

/// A plain-data attach parameter, compared bytewise as netebpfext does.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value (the provider reads it
/// from memory the core supplies), and the type must have no padding.
pub unsafe trait AttachParameter:
    Copy + Default + PartialEq + Send + Sync + 'static
{
}

// SAFETY: integers and byte arrays accept any bit pattern and have no padding.
unsafe impl AttachParameter for u8 {}
// SAFETY: as above.
unsafe impl AttachParameter for u16 {}
// SAFETY: as above.
unsafe impl AttachParameter for u32 {}
// SAFETY: as above.
unsafe impl AttachParameter for u64 {}
// SAFETY: as above.
unsafe impl AttachParameter for i32 {}
// SAFETY: as above.
unsafe impl AttachParameter for i64 {}
// SAFETY: as above.
unsafe impl<const N: usize> AttachParameter for [u8; N] where [u8; N]: Default {}
// SAFETY: GUID is four integer fields without padding (16 bytes, align 4).
unsafe impl AttachParameter for GUID {}
// SAFETY: zero-sized: the hook takes no parameter.
unsafe impl AttachParameter for () {}

/// How many programs may attach, and how attach parameters interact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPolicy {
    /// One program per hook (netebpfext `ATTACH_CAPABILITY_SINGLE_ATTACH`).
    SingleAttach,
    /// One program per attach parameter; a wildcard is refused if anything is attached, and an
    /// existing wildcard does not block a specific parameter
    /// (`ATTACH_CAPABILITY_SINGLE_ATTACH_PER_HOOK`).
    SingleAttachPerParameter,
    /// Up to [`MAX_CLIENTS_PER_PARAMETER`] programs per parameter; wildcard programs run after
    /// specific ones (`ATTACH_CAPABILITY_MULTI_ATTACH_WITH_WILDCARD`).
    MultiAttachWithWildcard,
    /// Any number of programs; attach data is ignored (ntosebpfext's process hook).
    Unrestricted,
}

/// Static description of a hook.
#[derive(Debug, Clone, Copy)]
pub struct HookConfig<P> {
    /// Attach type GUID: the provider's NMR module id, matched by the core.
    pub attach_type: GUID,
    /// Program type the hook accepts (`supported_program_type`).
    pub program_type: GUID,
    /// `bpf_attach_type` number.
    pub bpf_attach_type: bpf_attach_type_t,
    /// `bpf_link_type` number.
    pub link_type: bpf_link_type,
    /// Attach policy.
    pub policy: AttachPolicy,
    /// The parameter value that means "any" (a zero `data_size` always does).
    pub wildcard: Option<P>,
    /// Most programs attached at once (the capacity of each published snapshot).
    pub max_clients: usize,
    /// Pool tag for the provider's allocations.
    pub tag: PoolTag,
}

/// What a link asks for when it attaches.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<P> {
    /// The attach parameter, `None` for a wildcard attach (or under
    /// [`AttachPolicy::Unrestricted`]).
    pub parameter: Option<P>,
    /// `prog_attach_flags` from the client data (no defined values; passed through).
    pub prog_attach_flags: u64,
    /// The link's NMR module id.
    pub client_module_id: GUID,
}

/// The extension's side of a hook: its callbacks and data.
pub trait HookExtension: Send + Sync + Sized + 'static {
    /// Attach parameter type (`()` for none).
    type Parameter: AttachParameter;
    /// Data the extension keeps per attached program.
    type ClientData: Send + Sync + 'static;

    /// Called for every attach that passed validation and the attach policy, at PASSIVE_LEVEL
    /// under the provider's writer lock. An error rejects the attach with
    /// `STATUS_ACCESS_DENIED`.
    ///
    /// # Errors
    /// Whatever the extension decides; the attach is then refused.
    fn on_attach(
        &self,
        request: &AttachRequest<Self::Parameter>,
        attached: &Attached<'_, Self>,
    ) -> Result<Self::ClientData>;

    /// Called at PASSIVE_LEVEL once a detaching program can no longer be invoked, before the
    /// detach completes, under the provider's writer lock like [`HookExtension::on_attach`]:
    /// the two never overlap, so state they share needs no lock of its own.
    fn on_detach(&self, client: &Self::ClientData) {
        let _ = client;
    }
}

/// The program context the provider passes to programs: the 64-byte header the core owns,
/// then the extension's context. Programs see a pointer to `context`.
#[repr(C)]
#[derive(Debug, Clone)]
pub struct ProgramContext<T> {
    header: EBPF_CONTEXT_HEADER,
    /// The extension's program context.
    pub context: T,
}

impl<T> ProgramContext<T> {
    /// Wraps a context with a zeroed header.
    pub const fn new(context: T) -> Self {
        ProgramContext {
            header: [0; 8],
            context,
        }
    }

    fn program_pointer(&mut self) -> *mut c_void {
        (&raw mut self.context).cast()
    }
}

/// Whether to go on to the next program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Run the next matching program.
    Continue,
    /// Stop: the verdict is final.
    Stop,
}

/// One attached program, as the hot path sees it.
struct Entry<E: HookExtension> {
    client: *const Client<E>,
}

impl<E: HookExtension> Clone for Entry<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: HookExtension> Copy for Entry<E> {}
impl<E: HookExtension> Default for Entry<E> {
    fn default() -> Self {
        Entry {
            client: ptr::null(),
        }
    }
}

impl<E: HookExtension> Entry<E> {
    fn client(&self) -> &Client<E> {
        // SAFETY: entries in a published snapshot point to live clients: a client is freed
        // only after a publish without it has waited out every reader (snapshot protocol).
        unsafe { &*self.client }
    }
}

/// Provider-side state of one attached program.
struct Client<E: HookExtension> {
    binding: HANDLE,
    binding_context: *const c_void,
    invoke: ebpf_ext_sys::ebpf_extension::ebpf_program_invoke_function_t,
    batch: Option<BatchFunctions>,
    parameter: Option<E::Parameter>,
    prog_attach_flags: u64,
    module_id: GUID,
    data: E::ClientData,
    detaching: AtomicBool,
    work_item: PIO_WORKITEM,
    provider: *const ProviderContext<E>,
    tag: PoolTag,
}

impl<E: HookExtension> Client<E> {
    fn matches(&self, parameter: &E::Parameter) -> bool {
        self.parameter.as_ref().is_none_or(|p| p == parameter)
    }

    fn invoke(&self, context: *mut c_void) -> Result<u32> {
        let mut result = 0u32;
        // SAFETY: the core guarantees its invoke function and binding context stay valid until
        // the detach completes, which cannot happen while this client is reachable.
        let status = unsafe { (self.invoke)(self.binding_context, context, &raw mut result) };
        if status == EBPF_SUCCESS {
            Ok(result)
        } else {
            Err(Error::from_ebpf_result(status)
                .err()
                .unwrap_or(Error::Unsuccessful))
        }
    }
}

/// A read-only view of one attached program.
pub struct ClientRef<'a, E: HookExtension> {
    client: &'a Client<E>,
}

impl<'a, E: HookExtension> ClientRef<'a, E> {
    /// The extension's data for this program.
    #[must_use]
    pub fn data(&self) -> &'a E::ClientData {
        &self.client.data
    }

    /// The attach parameter (`None`: wildcard).
    #[must_use]
    pub fn parameter(&self) -> Option<&'a E::Parameter> {
        self.client.parameter.as_ref()
    }

    /// `prog_attach_flags` the link attached with.
    #[must_use]
    pub fn prog_attach_flags(&self) -> u64 {
        self.client.prog_attach_flags
    }

    /// The link's NMR module id.
    #[must_use]
    pub fn module_id(&self) -> GUID {
        self.client.module_id
    }

    /// Whether the program is being detached (it is then skipped by invocations).
    #[must_use]
    pub fn is_detaching(&self) -> bool {
        self.client.detaching.load(Ordering::Relaxed)
    }

    /// Runs this one program (ntosebpfext's `ebpf_extension_hook_invoke_program`).
    ///
    /// # Errors
    /// The core's invoke failure, as an [`Error`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn invoke<T>(&self, context: &mut ProgramContext<T>) -> Result<u32> {
        self.client.invoke(context.program_pointer())
    }
}

/// The programs attached when an on-attach callback runs (the writer's view).
pub struct Attached<'a, E: HookExtension> {
    entries: &'a [Entry<E>],
}

impl<'a, E: HookExtension> Attached<'a, E> {
    /// Attached programs that are not detaching.
    pub fn iter(&self) -> impl Iterator<Item = ClientRef<'a, E>> + 'a {
        self.entries
            .iter()
            .map(|e| ClientRef { client: e.client() })
            .filter(|c| !c.is_detaching())
    }

    /// ntosebpfext's `check_attach_parameter` rule: a wildcard request is refused if anything
    /// is attached; a specific request is refused if a wildcard or the same parameter is
    /// attached.
    ///
    /// # Errors
    /// [`Error::AccessDenied`] when the rule refuses the request.
    pub fn check_exclusive_wildcard(&self, request: &AttachRequest<E::Parameter>) -> Result {
        let conflict = match &request.parameter {
            None => self.iter().next().is_some(),
            Some(p) => self.iter().any(|c| c.parameter().is_none_or(|q| q == p)),
        };
        if conflict {
            Err(Error::AccessDenied)
        } else {
            Ok(())
        }
    }
}

/// The programs attached now; holds the snapshot until dropped.
///
/// # IRQL
/// Create and drop at ≤ DISPATCH_LEVEL. A detach completes only after this is dropped, so
/// hold it briefly.
pub struct AttachedClients<'a, E: HookExtension> {
    snapshot: snapshot::SnapshotGuard<'a, Entry<E>>,
}

impl<E: HookExtension> AttachedClients<'_, E> {
    /// The attached programs in invocation order (detaching ones skipped).
    pub fn iter(&self) -> impl Iterator<Item = ClientRef<'_, E>> {
        self.snapshot
            .entries()
            .iter()
            .map(|e| ClientRef { client: e.client() })
            .filter(|c| !c.is_detaching())
    }

    /// Number of attached programs (including any being detached).
    #[must_use]
    pub fn len(&self) -> usize {
        self.snapshot.entries().len()
    }

    /// Whether no program is attached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.snapshot.entries().is_empty()
    }
}

/// The provider's state, pinned in pool while registered.
struct ProviderContext<E: HookExtension> {
    characteristics: NPI_PROVIDER_CHARACTERISTICS,
    module_id: NPI_MODULEID,
    provider_data: ebpf_attach_provider_data_t,
    handle: HANDLE,
    config: HookConfig<E::Parameter>,
    extension: E,
    device: *mut DEVICE_OBJECT,
    writer: UnsafeCell<EX_PUSH_LOCK>,
    snapshots: Snapshots<Entry<E>>,
    _pin: PhantomPinned,
}

/// Exclusive hold of the writer push lock (inside a critical region).
struct WriterGuard<'a, E: HookExtension> {
    provider: &'a ProviderContext<E>,
}

impl<E: HookExtension> ProviderContext<E> {
    fn lock_writer(&self) -> WriterGuard<'_, E> {
        // SAFETY: PASSIVE_LEVEL callers; paired with KeLeaveCriticalRegion in the guard's drop.
        unsafe { KeEnterCriticalRegion() };
        // SAFETY: the push lock lives as long as the provider and was initialised.
        unsafe { ExAcquirePushLockExclusiveEx(self.writer.get(), 0) };
        WriterGuard { provider: self }
    }

    /// Republishes the snapshot without detaching clients and with `extra` appended in the
    /// policy's order (wildcards last under multi-attach).
    ///
    /// # Safety
    /// The caller holds the writer lock at PASSIVE_LEVEL.
    unsafe fn republish(&self, extra: Option<*const Client<E>>) {
        let multi = self.config.policy == AttachPolicy::MultiAttachWithWildcard;
        let build = |old: &[Entry<E>], new: &mut [Entry<E>]| {
            let live = || {
                old.iter()
                    .copied()
                    .filter(|e| !e.client().detaching.load(Ordering::Acquire))
            };
            let mut n = 0;
            let mut push = |e: Entry<E>| {
                if n < new.len() {
                    new[n] = e;
                    n += 1;
                }
            };
            let extra = extra.map(|client| Entry { client });
            if multi {
                // Specific programs first, each group in attach order, then wildcards.
                live()
                    .filter(|e| e.client().parameter.is_some())
                    .for_each(&mut push);
                extra
                    .filter(|e| e.client().parameter.is_some())
                    .into_iter()
                    .for_each(&mut push);
                live()
                    .filter(|e| e.client().parameter.is_none())
                    .for_each(&mut push);
                extra
                    .filter(|e| e.client().parameter.is_none())
                    .into_iter()
                    .for_each(&mut push);
            } else {
                live().for_each(&mut push);
                extra.into_iter().for_each(&mut push);
            }
            n
        };
        // SAFETY: the caller holds the writer lock at PASSIVE_LEVEL.
        unsafe { self.snapshots.publish(build) };
    }

    /// Applies the attach policy to the live clients.
    fn policy_allows(&self, live: &[Entry<E>], parameter: Option<&E::Parameter>) -> bool {
        let clients = || {
            live.iter()
                .map(Entry::client)
                .filter(|c| !c.detaching.load(Ordering::Acquire))
        };
        match self.config.policy {
            AttachPolicy::SingleAttach => clients().next().is_none(),
            AttachPolicy::SingleAttachPerParameter => match parameter {
                None => clients().next().is_none(),
                Some(p) => !clients().any(|c| c.parameter.as_ref() == Some(p)),
            },
            AttachPolicy::MultiAttachWithWildcard => {
                clients()
                    .filter(|c| c.parameter.as_ref() == parameter)
                    .count()
                    < MAX_CLIENTS_PER_PARAMETER
            }
            AttachPolicy::Unrestricted => true,
        }
    }
}

impl<E: HookExtension> Drop for WriterGuard<'_, E> {
    fn drop(&mut self) {
        // SAFETY: held exclusive by this guard.
        unsafe { ExReleasePushLockExclusiveEx(self.provider.writer.get(), 0) };
        // SAFETY: entered in `lock_writer`.
        unsafe { KeLeaveCriticalRegion() };
    }
}

/// A registered hook provider. Dropping it unregisters: NMR detaches every program, each
/// detach completes once no invocation can reach it, and only then is the provider freed.
pub struct HookProvider<E: HookExtension> {
    context: Option<PoolBox<ProviderContext<E>>>,
}

// SAFETY: the context is shared with NMR callbacks, which synchronise through the writer lock
// and the snapshot protocol; the extension and its client data are Send + Sync.
unsafe impl<E: HookExtension> Send for HookProvider<E> {}
// SAFETY: as above; every `&self` method is safe to call concurrently.
unsafe impl<E: HookExtension> Sync for HookProvider<E> {}

impl<E: HookExtension> HookProvider<E> {
    /// Registers a hook NPI provider.
    ///
    /// # Safety
    /// `device` is a live device object of the driver that outlives the provider (work items
    /// for detach are allocated against it).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `max_clients` is 0; [`Error::InsufficientResources`] if an
    /// allocation fails; [`Error::Api`] with `NmrRegisterProvider`'s status if it fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub unsafe fn register(
        config: HookConfig<E::Parameter>,
        extension: E,
        device: *mut DEVICE_OBJECT,
    ) -> Result<Self> {
        if config.max_clients == 0 || device.is_null() {
            return Err(Error::InvalidParameter);
        }
        let snapshots = Snapshots::new(config.max_clients, config.tag)?;
        let context = PoolBox::try_new(
            ProviderContext {
                characteristics: ebpf_ext_nmr::provider_characteristics(
                    &EBPF_HOOK_EXTENSION_IID,
                    attach_client::<E>,
                    detach_client::<E>,
                    cleanup_binding_context::<E>,
                ),
                module_id: NPI_MODULEID::from_guid(config.attach_type),
                provider_data: ebpf_attach_provider_data_t {
                    header: EBPF_ATTACH_PROVIDER_DATA_HEADER,
                    supported_program_type: config.program_type,
                    bpf_attach_type: config.bpf_attach_type,
                    link_type: config.link_type,
                },
                handle: ptr::null_mut(),
                config,
                extension,
                device,
                writer: UnsafeCell::new(0),
                snapshots,
                _pin: PhantomPinned,
            },
            config.tag,
        )?;
        let mut context = context;
        let ctx: &mut ProviderContext<E> = &mut context;
        ctx.characteristics.ProviderRegistrationInstance.ModuleId = &raw const ctx.module_id;
        ctx.characteristics
            .ProviderRegistrationInstance
            .NpiSpecificCharacteristics = (&raw const ctx.provider_data).cast();
        // SAFETY: initialising the writer lock before anyone can use it.
        unsafe { ExInitializePushLock(ctx.writer.get()) };
        let characteristics = &raw const ctx.characteristics;
        let raw = context.as_ptr();
        // SAFETY: the characteristics and context stay in place until `Drop` has waited for
        // deregistration to complete. On failure NMR holds no reference and the context is
        // freed on return.
        context.handle = unsafe { ebpf_ext_nmr::register_provider(characteristics, raw.cast()) }?;
        Ok(HookProvider {
            context: Some(context),
        })
    }

    fn context(&self) -> &ProviderContext<E> {
        // The context is only taken in `Drop` or on a failed registration.
        let Some(context) = self.context.as_ref() else {
            unreachable!("provider used after unregistering")
        };
        context
    }

    /// The extension (per-provider data).
    #[must_use]
    pub fn extension(&self) -> &E {
        &self.context().extension
    }

    /// The programs attached now, in invocation order.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn clients(&self) -> AttachedClients<'_, E> {
        AttachedClients {
            snapshot: self.context().snapshots.read(),
        }
    }

    /// Runs every program attached for `parameter` (specific ones, then wildcards) and returns
    /// the last verdict (netebpfext's `net_ebpf_extension_hook_invoke_programs`).
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] (`EBPF_OBJECT_NOT_FOUND`) if no program ran; the first invoke
    /// failure otherwise.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn invoke<T>(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<T>,
    ) -> Result<u32> {
        self.invoke_with(parameter, context, |_| true, |_| Flow::Continue)
    }

    /// Like [`HookProvider::invoke`], running only programs `filter` selects, and asking
    /// `verdict` after each program whether to go on
    /// (`net_ebpf_extension_hook_invoke_filtered_programs` with `process_verdict`).
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn invoke_with<T>(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<T>,
        mut filter: impl FnMut(&ClientRef<'_, E>) -> bool,
        mut verdict: impl FnMut(u32) -> Flow,
    ) -> Result<u32> {
        let snapshot = self.context().snapshots.read();
        let program = context.program_pointer();
        let mut outcome = Err(Error::ObjectNotFound);
        for entry in snapshot.entries() {
            let client = entry.client();
            if !client.matches(parameter)
                || client.detaching.load(Ordering::Relaxed)
                || !filter(&ClientRef { client })
            {
                continue;
            }
            let result = client.invoke(program)?;
            outcome = Ok(result);
            if verdict(result) == Flow::Stop {
                break;
            }
        }
        outcome
    }

    /// [`HookProvider::invoke_with`] on a kernel stack expanded by
    /// [`STACK_EXPANSION_SIZE`] bytes (`KeExpandKernelStackAndCalloutEx`, no wait), as
    /// netebpfext's `net_ebpf_extension_hook_expand_stack_and_invoke_programs`.
    ///
    /// # Errors
    /// [`Error::Unsuccessful`] (`EBPF_FAILED`) if the stack cannot be expanded; otherwise as
    /// [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn invoke_on_expanded_stack<T>(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<T>,
        mut filter: impl FnMut(&ClientRef<'_, E>) -> bool,
        mut verdict: impl FnMut(u32) -> Flow,
    ) -> Result<u32> {
        let mut outcome = Err(Error::Unsuccessful);
        let mut call = || outcome = self.invoke_with(parameter, context, &mut filter, &mut verdict);
        let status = expand_stack(&mut call);
        if status != STATUS_SUCCESS {
            ebpf_ext_trace::trace_api_failure!(
                ebpf_ext_trace::keyword::EXTENSION,
                "KeExpandKernelStackAndCalloutEx",
                status
            );
            return Err(Error::Unsuccessful);
        }
        outcome
    }

    /// Runs `f` with a batch: one snapshot and one `batch_begin` for many events, then
    /// [`Batch::invoke`] per event inside `f`, and `batch_end` when `f` returns (or unwinds).
    /// Programs whose dispatch table has no batch entries are invoked singly inside the batch.
    ///
    /// The core's execution-context state lives in this call's frame: the core links its
    /// address into a per-processor list at `batch_begin`, so that very address is what every
    /// batch invoke and the one `batch_end` receive. The batch is only lent to `f`, so safe code
    /// can neither move its state nor leak it (and with it the snapshot a detach waits for).
    /// For example, `provider.with_batch(&parameter, |batch| events.iter_mut().map(|e|
    /// batch.invoke(e)).collect::<Vec<_>>())` runs a whole receive queue in one batch.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL. `f` must return at the IRQL it was called at: the core's
    /// `batch_end` requires the IRQL of `batch_begin` (and, at DISPATCH_LEVEL, the processor).
    /// The batch holds the snapshot, so a detach waits until `f` returns: keep batches short.
    ///
    /// # Locking
    /// Takes no lock; `f` must not wait for a detach of this hook (it would wait for itself).
    pub fn with_batch<R>(&self, parameter: &E::Parameter, f: impl FnOnce(&Batch<'_, E>) -> R) -> R {
        let snapshot = self.context().snapshots.read();
        // The core's state: all-zero is its initial value. It stays in this frame, never
        // moved, until `_end` (declared after it, so dropped before it) has ended the batch.
        let mut state = MaybeUninit::<ebpf_execution_context_state_t>::zeroed();
        let state_ptr: *mut c_void = state.as_mut_ptr().cast();
        let first = snapshot
            .entries()
            .iter()
            .map(Entry::client)
            .find(|c| c.matches(parameter) && c.batch.is_some());
        let end = first.and_then(|c| c.batch).and_then(|b| {
            // SAFETY: the core's batch-begin function, valid while the client is reachable
            // (the snapshot is held); `state_ptr` is `size_of` the state, writable, and stays
            // at this address until the matching end below.
            let status =
                unsafe { (b.begin)(size_of::<ebpf_execution_context_state_t>(), state_ptr) };
            (status == EBPF_SUCCESS).then_some(b.end)
        });
        let batch = Batch {
            snapshot,
            parameter: *parameter,
            state: state_ptr,
            batched: end.is_some(),
        };
        let _end = BatchEnd {
            end,
            state: state_ptr,
        };
        f(&batch)
    }
}

impl<E: HookExtension> Drop for HookProvider<E> {
    fn drop(&mut self) {
        let Some(context) = self.context.take() else {
            return;
        };
        // SAFETY: the live registration handle of this provider, deregistered once. When this
        // returns every client has detached and been cleaned up.
        unsafe { ebpf_ext_nmr::deregister_provider(context.handle) };
        drop(context);
    }
}

/// Many events through one snapshot and one `batch_begin`/`batch_end` pair, lent to the
/// closure of [`HookProvider::with_batch`].
///
/// # Invariants
/// `state` points to the core's execution-context state in the frame of the `with_batch` call
/// that lent this batch; when `batched`, `batch_begin` accepted it and `batch_end` has not run
/// yet. The batch is neither `Send` nor `Sync` (raw pointer): it is used on the thread that
/// began it.
pub struct Batch<'a, E: HookExtension> {
    snapshot: snapshot::SnapshotGuard<'a, Entry<E>>,
    parameter: E::Parameter,
    state: *mut c_void,
    batched: bool,
}

impl<E: HookExtension> Batch<'_, E> {
    /// Runs the matching programs for one event, as [`HookProvider::invoke`].
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL, the IRQL `with_batch` was called at.
    #[inline]
    pub fn invoke<T>(&self, context: &mut ProgramContext<T>) -> Result<u32> {
        let program = context.program_pointer();
        let mut outcome = Err(Error::ObjectNotFound);
        for entry in self.snapshot.entries() {
            let client = entry.client();
            if !client.matches(&self.parameter) || client.detaching.load(Ordering::Relaxed) {
                continue;
            }
            let result = match client.batch {
                Some(b) if self.batched => {
                    let mut result = 0u32;
                    // SAFETY: the core's batch-invoke function and binding context, valid while
                    // the client is reachable; `state` is the address batch_begin accepted
                    // (type invariant).
                    let status = unsafe {
                        (b.invoke)(
                            client.binding_context,
                            program,
                            &raw mut result,
                            self.state.cast_const(),
                        )
                    };
                    if status != EBPF_SUCCESS {
                        return Err(Error::from_ebpf_result(status)
                            .err()
                            .unwrap_or(Error::Unsuccessful));
                    }
                    result
                }
                _ => client.invoke(program)?,
            };
            outcome = Ok(result);
        }
        outcome
    }
}

/// Ends a begun batch exactly once, when `with_batch` returns or unwinds.
struct BatchEnd {
    end: Option<ebpf_ext_sys::ebpf_extension::ebpf_program_batch_end_invoke_function_t>,
    state: *mut c_void,
}

impl Drop for BatchEnd {
    fn drop(&mut self) {
        if let Some(end) = self.end {
            // SAFETY: the state batch_begin accepted, at the address it was begun at, still
            // alive in `with_batch`'s frame; the snapshot keeping the core's function valid is
            // dropped after this guard.
            let _ = unsafe { end(self.state) };
        }
    }
}

unsafe extern "win64" fn expand_stack_callout<F: FnMut()>(parameter: *mut c_void) {
    // SAFETY: `expand_stack` passes a pointer to its `F`, alive for the call.
    let f = unsafe { &mut *parameter.cast::<F>() };
    f();
}

fn expand_stack<F: FnMut()>(f: &mut F) -> NTSTATUS {
    // SAFETY: the callout runs `f` synchronously on this thread before the call returns.
    unsafe {
        KeExpandKernelStackAndCalloutEx(
            expand_stack_callout::<F>,
            ptr::from_mut(f).cast(),
            STACK_EXPANSION_SIZE,
            FALSE,
            ptr::null_mut(),
        )
    }
}

// ---- NMR callbacks ------------------------------------------------------------------------------

fn provider_of<'a, E: HookExtension>(context: *mut c_void) -> Option<&'a ProviderContext<E>> {
    let context = NonNull::new(context.cast::<ProviderContext<E>>())?;
    // SAFETY: NMR passes back the context registered in `register`, alive until deregistration
    // completes.
    Some(unsafe { context.as_ref() })
}

unsafe extern "win64" fn attach_client<E: HookExtension>(
    binding: HANDLE,
    provider_context: *mut c_void,
    client_registration: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    let Some(provider) = provider_of::<E>(provider_context) else {
        return STATUS_INVALID_PARAMETER;
    };
    if provider_binding_context.is_null() || provider_dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: checked non-null; NMR passes writable slots.
    unsafe { provider_binding_context.write(ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { provider_dispatch.write(ptr::null()) };
    let config = &provider.config;
    // SAFETY: NMR passes the client's registration instance and dispatch table.
    let valid = match unsafe {
        validate::<E::Parameter>(
            client_registration,
            client_dispatch,
            config.policy,
            config.wildcard,
        )
    } {
        Ok(valid) => valid,
        Err(rejection) => {
            trace_rejection(rejection.reason(), STATUS_INVALID_PARAMETER);
            return STATUS_INVALID_PARAMETER;
        }
    };
    // SAFETY: the device object outlives the provider (register's contract).
    let work_item = unsafe { IoAllocateWorkItem(provider.device) };
    if work_item.is_null() {
        trace_rejection("IoAllocateWorkItem failed", STATUS_INSUFFICIENT_RESOURCES);
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let request = AttachRequest {
        parameter: valid.parameter,
        prog_attach_flags: valid.prog_attach_flags,
        // SAFETY: NMR passes the client's registration instance.
        client_module_id: unsafe { ebpf_ext_nmr::client_module_guid(client_registration) },
    };
    let guard = provider.lock_writer();
    // SAFETY: the writer lock is held.
    let live = unsafe { provider.snapshots.current_for_writer() };
    let live_count = live
        .iter()
        .filter(|e| !e.client().detaching.load(Ordering::Acquire))
        .count();
    let status = if !provider.policy_allows(live, request.parameter.as_ref()) {
        trace_rejection(
            "attach refused by the hook's attach policy",
            STATUS_ACCESS_DENIED,
        );
        STATUS_ACCESS_DENIED
    } else if live_count >= provider.snapshots.capacity() {
        trace_rejection(
            "hook is at its max_clients capacity",
            STATUS_INSUFFICIENT_RESOURCES,
        );
        STATUS_INSUFFICIENT_RESOURCES
    } else {
        match provider
            .extension
            .on_attach(&request, &Attached { entries: live })
        {
            Err(_) => {
                trace_rejection("attach refused by the extension", STATUS_ACCESS_DENIED);
                STATUS_ACCESS_DENIED
            }
            Ok(data) => {
                let client = Client {
                    binding,
                    binding_context: client_binding_context,
                    invoke: valid.invoke,
                    batch: valid.batch,
                    parameter: request.parameter,
                    prog_attach_flags: request.prog_attach_flags,
                    module_id: request.client_module_id,
                    data,
                    detaching: AtomicBool::new(false),
                    work_item,
                    provider: ptr::from_ref(provider),
                    tag: config.tag,
                };
                match PoolBox::try_new_or_return(client, config.tag) {
                    Err(client) => {
                        // The extension accepted this attach: undo its side before refusing.
                        provider.extension.on_detach(&client.data);
                        trace_rejection(
                            "could not allocate the client",
                            STATUS_INSUFFICIENT_RESOURCES,
                        );
                        STATUS_INSUFFICIENT_RESOURCES
                    }
                    Ok(client) => {
                        let client = client.into_raw().as_ptr().cast_const();
                        // SAFETY: the writer lock is held at PASSIVE_LEVEL.
                        unsafe { provider.republish(Some(client)) };
                        // SAFETY: checked non-null above.
                        unsafe { provider_binding_context.write(client.cast_mut().cast()) };
                        STATUS_SUCCESS
                    }
                }
            }
        }
    };
    drop(guard);
    if status != STATUS_SUCCESS {
        // SAFETY: allocated above and never queued.
        unsafe { IoFreeWorkItem(work_item) };
    }
    status
}

unsafe extern "win64" fn detach_client<E: HookExtension>(
    provider_binding_context: *mut c_void,
) -> NTSTATUS {
    let Some(client) = NonNull::new(provider_binding_context.cast::<Client<E>>()) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: NMR passes the Client registered as binding context at attach; it lives until
    // cleanup.
    let client_ref = unsafe { client.as_ref() };
    client_ref.detaching.store(true, Ordering::Release);
    // SAFETY: the client's work item, allocated at attach and not queued; the client stays
    // alive until the routine completes the detach.
    unsafe {
        IoQueueWorkItem(
            client_ref.work_item,
            detach_worker::<E>,
            DelayedWorkQueue,
            client.as_ptr().cast(),
        );
    };
    STATUS_PENDING
}

unsafe extern "win64" fn detach_worker<E: HookExtension>(
    _device: *mut DEVICE_OBJECT,
    context: *mut c_void,
) {
    let client = context.cast::<Client<E>>();
    // SAFETY: queued by `detach_client` with a live client; cleanup cannot run before the
    // detach is completed below.
    let client_ref = unsafe { &*client };
    // SAFETY: a client's provider outlives it.
    let provider = unsafe { &*client_ref.provider };
    {
        let _guard = provider.lock_writer();
        // SAFETY: the writer lock is held at PASSIVE_LEVEL. After this returns, no reader can
        // reach this client.
        unsafe { provider.republish(None) };
        // Under the writer lock, as on_attach: the extension's attach and detach callbacks
        // never overlap.
        provider.extension.on_detach(&client_ref.data);
    }
    // SAFETY: the item's routine is running, so it is no longer queued; freed once.
    unsafe { IoFreeWorkItem(client_ref.work_item) };
    let binding = client_ref.binding;
    // SAFETY: detach returned STATUS_PENDING for this binding. The client must not be touched
    // after this call: NMR may clean it up at once.
    unsafe { NmrProviderDetachClientComplete(binding) };
}

unsafe extern "win64" fn cleanup_binding_context<E: HookExtension>(
    provider_binding_context: *mut c_void,
) {
    let Some(client) = NonNull::new(provider_binding_context.cast::<Client<E>>()) else {
        return;
    };
    // SAFETY: the binding context is the Client leaked at attach; both sides have detached.
    let tag = unsafe { client.as_ref() }.tag;
    // SAFETY: as above; freed once.
    drop(unsafe { PoolBox::from_raw(client, tag) });
}

/// Records why an attach was refused: an `EbpfExtGenericMessage` at Error level, keyword
/// `EXTENSION`, with the reason and the status returned to NMR.
fn trace_rejection(reason: &'static str, status: NTSTATUS) {
    ebpf_ext_trace::trace_message_status!(
        ebpf_ext_trace::Level::Error,
        ebpf_ext_trace::keyword::EXTENSION,
        reason,
        status
    );
}
