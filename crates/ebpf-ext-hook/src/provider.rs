//! [`HookProvider`]: the registered hook NPI provider, its state, and its writer side (the
//! lock and the publishing of client snapshots).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider};
use ebpf_ext_sys::ebpf_extension::ebpf_attach_provider_data_t;
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_HOOK_EXTENSION_IID;
use ebpf_ext_sys::ebpf_windows::EBPF_ATTACH_PROVIDER_DATA_HEADER;
use ebpf_ext_sys::netioddk::NPIID;
use ebpf_ext_sys::ntddk::{KeEnterCriticalRegion, KeLeaveCriticalRegion};
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, EX_PUSH_LOCK, ExAcquirePushLockExclusiveEx, ExReleasePushLockExclusiveEx,
};
use ebpf_ext_sys::{Error, Result};

use crate::client::{AttachedClients, Client, Entry, live};
use crate::config::{DataFields, HookConfig, HookExtension};
use crate::snapshot::Snapshots;

/// The provider's state, pinned in pool by [`ebpf_ext_nmr::Provider`] while registered.
pub(crate) struct HookState<E: HookExtension> {
    provider_data: ebpf_attach_provider_data_t,
    pub(crate) config: HookConfig<E::Parameter>,
    /// Where programs' data pointers lie in `E::Context`, written before each invocation.
    pub(crate) data_fields: Option<DataFields>,
    pub(crate) extension: E,
    pub(crate) device: *mut DEVICE_OBJECT,
    /// A zeroed push lock is an initialised one (`ExInitializePushLock` stores 0).
    writer: UnsafeCell<EX_PUSH_LOCK>,
    pub(crate) snapshots: Snapshots<Entry<E>>,
    /// Programs whose on-attach succeeded and whose on-detach has not run yet: what decides
    /// the extension's first-attach and last-detach callbacks. Not derived from the live
    /// clients: a client marked detaching is no longer live, but counts until its work item
    /// has called on-detach. Read and changed only through a [`WriterGuard`], so the writer
    /// lock orders every access and `Relaxed` is enough; atomic only so that the shared
    /// state needs no `unsafe` to change it.
    attached: AtomicUsize,
}

// SAFETY: the device object may be used from any thread; the push lock is only touched by the
// kernel's routines; the snapshots are Sync; the extension is Send + Sync.
unsafe impl<E: HookExtension> Send for HookState<E> {}
// SAFETY: as above.
unsafe impl<E: HookExtension> Sync for HookState<E> {}

// SAFETY: the characteristics are the hook NPI's provider data built from a validated
// `HookConfig`; programs are invoked with `E::Context`, which `HookProvider::register`'s
// caller promised is what the program type's helpers read.
unsafe impl<E: HookExtension> NpiProvider for HookState<E> {
    type Characteristics = ebpf_attach_provider_data_t;
    type Binding = Client<E>;
    const NPI_ID: &'static NPIID = &EBPF_HOOK_EXTENSION_IID;

    fn characteristics(&self) -> &ebpf_attach_provider_data_t {
        &self.provider_data
    }

    fn attach(
        &self,
        client: &AttachingClient<'_>,
    ) -> core::result::Result<Bound<Client<E>>, NTSTATUS> {
        crate::attach::attach(self, client)
    }

    fn detach(client: &Client<E>) -> Detach {
        crate::attach::detach(client)
    }
}

impl<E: HookExtension> HookState<E> {
    /// Takes the writer push lock exclusively (inside a critical region).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub(crate) fn lock_writer(&self) -> WriterGuard<'_, E> {
        // SAFETY: PASSIVE_LEVEL callers; paired with KeLeaveCriticalRegion in the guard's drop.
        unsafe { KeEnterCriticalRegion() };
        // SAFETY: the push lock lives as long as the provider and is initialised (zero).
        unsafe { ExAcquirePushLockExclusiveEx(self.writer.get(), 0) };
        WriterGuard { state: self }
    }
}

/// Exclusive hold of the writer push lock: the one writer of the client snapshots and of the
/// count of attached programs.
pub(crate) struct WriterGuard<'a, E: HookExtension> {
    state: &'a HookState<E>,
}

impl<E: HookExtension> WriterGuard<'_, E> {
    /// The entries published now.
    pub(crate) fn current(&self) -> &[Entry<E>] {
        // SAFETY: this guard holds the writer lock.
        unsafe { self.state.snapshots.current_for_writer() }
    }

    /// Programs attached: counted from their publication until their on-detach has run.
    pub(crate) fn attached(&self) -> usize {
        self.state.attached.load(Ordering::Relaxed)
    }

    /// Counts a program whose attach succeeded.
    pub(crate) fn count_attach(&self) {
        let count = self.attached();
        self.state
            .attached
            .store(count.saturating_add(1), Ordering::Relaxed);
    }

    /// Counts a program whose on-detach has just run; whether it was the last one attached.
    pub(crate) fn count_detach(&self) -> bool {
        // Every client that reaches its detach was counted by its attach, so the count is
        // never 0 here; were it, nothing is counted down and no last detach is reported.
        let Some(count) = self.attached().checked_sub(1) else {
            return false;
        };
        self.state.attached.store(count, Ordering::Relaxed);
        count == 0
    }

    /// Publishes a snapshot of the live clients with `added` placed by the attach policy,
    /// and waits until no invocation holds the old one.
    pub(crate) fn republish(&self, added: Option<&Client<E>>) {
        let policy = self.state.config.policy;
        let build = |old: &[Entry<E>], new: &mut [Entry<E>]| {
            let mut n = 0;
            policy.arrange(
                live(old).map(Entry::new),
                added.map(Entry::new),
                |e| e.client().parameter.is_none(),
                |e| {
                    if n < new.len() {
                        new[n] = e;
                        n += 1;
                    }
                },
            );
            n
        };
        // SAFETY: this guard holds the writer lock, at PASSIVE_LEVEL.
        unsafe { self.state.snapshots.publish(build) };
    }
}

impl<E: HookExtension> Drop for WriterGuard<'_, E> {
    fn drop(&mut self) {
        // SAFETY: held exclusive by this guard.
        unsafe { ExReleasePushLockExclusiveEx(self.state.writer.get(), 0) };
        // SAFETY: entered in `lock_writer`.
        unsafe { KeLeaveCriticalRegion() };
    }
}

/// A registered hook provider. Dropping it unregisters: NMR detaches every program, each
/// detach completes once no invocation can reach it, and only then is the provider freed.
pub struct HookProvider<E: HookExtension> {
    provider: Provider<HookState<E>>,
}

impl<E: HookExtension> HookProvider<E> {
    /// Registers a hook NPI provider whose program context has no data pointers the provider
    /// writes: [`HookProvider::register_with_data`] with `None`.
    ///
    /// # Safety
    /// As [`HookProvider::register_with_data`]; in addition, if the program type's context
    /// descriptor names data pointers, every value `E::Context` holds there while programs
    /// run (as invoked, and after any helper that receives the context mutably) bounds memory
    /// programs may read and write for as long as they run (the verifier trusts them).
    ///
    /// # Errors
    /// As [`HookProvider::register_with_data`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub unsafe fn register(
        config: HookConfig<E::Parameter>,
        extension: E,
        device: *mut DEVICE_OBJECT,
    ) -> Result<Self> {
        // SAFETY: the caller's contract, which covers the data pointers itself.
        unsafe { Self::register_with_data(config, extension, device, None) }
    }

    /// Registers a hook NPI provider that writes programs' data pointers at `data_fields`
    /// before each invocation, from the [`ProgramContext`](crate::ProgramContext)'s
    /// [`ContextData`](crate::ContextData).
    ///
    /// # Safety
    /// `device` is a live device object of the driver that outlives the provider (work items
    /// for detach are allocated against it). The helpers of `config.program_type` (and its
    /// global-helper overrides) read the program context as `E::Context`: the provider invokes
    /// programs with nothing else. The program type's context descriptor is no larger than
    /// `E::Context`, and every byte pattern programs may write within it leaves a valid
    /// `E::Context` (no padding, no field with invalid values such as `bool` or an enum:
    /// programs write any bytes they may access, and the provider reads the context back as
    /// `E::Context`). `data_fields`, if any, are the offsets in `E::Context` of
    /// the two pointer-sized fields the program type's context descriptor names as its data
    /// pointers, and the type's helpers that receive the context mutably leave them as they
    /// found them. (The facade's `Start::program_type` and `Start::hook` ensure all of this for
    /// the program types a driver registers itself.)
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (traced, with the reason) if `max_clients` is 0, the device
    /// is NULL, the attach type or the program type is GUID_NULL (the core refuses attach
    /// provider data naming no program type, so no program could ever attach), or a data
    /// field does not lie within `E::Context`; [`Error::InsufficientResources`] if an
    /// allocation fails; [`Error::Api`] with `NmrRegisterProvider`'s status if it fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub unsafe fn register_with_data(
        config: HookConfig<E::Parameter>,
        extension: E,
        device: *mut DEVICE_OBJECT,
        data_fields: Option<DataFields>,
    ) -> Result<Self> {
        let fits = |offset: usize| {
            offset
                .checked_add(size_of::<*mut u8>())
                .is_some_and(|end| end <= size_of::<E::Context>())
        };
        let refusal = if config.max_clients == 0 {
            Some("hook refused: max_clients is 0")
        } else if device.is_null() {
            Some("hook refused: no device object")
        } else if config.attach_type == GUID::NULL {
            Some("hook refused: the attach type is GUID_NULL")
        } else if config.program_type == GUID::NULL {
            Some("hook refused: the program type is GUID_NULL")
        } else if data_fields.is_some_and(|f| !fits(f.start) || !fits(f.end)) {
            Some("hook refused: a data field lies outside the context")
        } else {
            None
        };
        if let Some(reason) = refusal {
            ebpf_ext_trace::trace_message!(
                ebpf_ext_trace::Level::Error,
                ebpf_ext_trace::keyword::EXTENSION,
                reason
            );
            return Err(Error::InvalidParameter);
        }
        let snapshots = Snapshots::new(config.max_clients, config.tag)?;
        let state = HookState {
            provider_data: ebpf_attach_provider_data_t {
                header: EBPF_ATTACH_PROVIDER_DATA_HEADER,
                supported_program_type: config.program_type,
                bpf_attach_type: config.bpf_attach_type,
                link_type: config.link_type,
            },
            config,
            data_fields,
            extension,
            device,
            writer: UnsafeCell::new(0),
            snapshots,
            attached: AtomicUsize::new(0),
        };
        Ok(HookProvider {
            provider: Provider::register(config.attach_type, state, config.tag)?,
        })
    }

    pub(crate) fn state(&self) -> &HookState<E> {
        self.provider.get()
    }

    /// The extension (per-provider data).
    #[must_use]
    pub fn extension(&self) -> &E {
        &self.state().extension
    }

    /// The programs attached now, in invocation order: a guard on the published set, which
    /// attaches and detaches wait for (see [`AttachedClients`]).
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[must_use]
    pub fn clients(&self) -> AttachedClients<'_, E> {
        AttachedClients {
            snapshot: self.state().snapshots.read(),
        }
    }
}
