//! The Network Module Registrar: providers and clients matched by NPI id, bindings attached
//! in either registration order, pending detaches completed later, deregistration that
//! completes when every binding is gone.
//!
//! Callbacks run on the thread that triggered them (registration, deregistration or the
//! `Nmr*DetachComplete` call that finished a binding), never under the registrar's lock, so
//! they may call back into NMR. Attach callbacks run at PASSIVE_LEVEL; detach and cleanup
//! callbacks run at DISPATCH_LEVEL, the highest IRQL NMR may call them at (it calls them at
//! the IRQL of whichever side deregisters or completes, up to DISPATCH_LEVEL), so a callback
//! that blocks or touches pageable memory bug-checks here as it would on Windows when the
//! other side deregisters at DISPATCH_LEVEL. One that returns at another IRQL bug-checks.

use core::ffi::c_void;
use core::ops::Range;
use core::ptr;
use std::collections::{BTreeMap, VecDeque};

use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_PROVIDER_CHARACTERISTICS,
    NPI_REGISTRATION_INSTANCE,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_PENDING,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, PASSIVE_LEVEL,
};

use crate::kernel::{
    CalledFrom, Inner, Kernel, allocation_fails, bugcheck, call_driver_callback, call_fails,
    current_irql, lock, require_irql, set_irql, try_with_kernel, with_kernel,
};

/// The name of `kind`'s detach callback (the bug-check's routine).
fn detach_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Provider => "ProviderDetachClient",
        Kind::Client => "ClientDetachProvider",
    }
}

/// Runs a detach or cleanup callback (`what`, at `callback`) at DISPATCH_LEVEL, then restores
/// the caller's IRQL; bug-checks if it returned at another IRQL or with critical regions
/// unbalanced.
fn at_dispatch<T>(what: &'static str, callback: usize, f: impl FnOnce() -> T) -> T {
    let saved = current_irql();
    let run_at = saved.max(DISPATCH_LEVEL);
    set_irql(run_at);
    let result = call_driver_callback(what, callback, CalledFrom::Kernel, f);
    set_irql(saved);
    result
}

const REGISTRATION_HANDLE_BASE: usize = 0x4E4D_5200_0000; // "NMR"
const BINDING_HANDLE_BASE: usize = 0x4E4D_4200_0000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Provider,
    Client,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Kind::Provider => "provider",
            Kind::Client => "client",
        }
    }
}

struct Registration {
    kind: Kind,
    npi_id: GUID,
    characteristics: usize,
    context: usize,
    deregistering: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    /// Not attached on this side (no detach owed).
    Absent,
    Attached,
    /// The detach callback is running; `complete_early` if `*DetachComplete` came first.
    InCallback {
        complete_early: bool,
    },
    Pending,
    Done,
}

struct Binding {
    provider: u64,
    client: u64,
    provider_context: usize,
    client_context: usize,
    provider_side: Side,
    client_side: Side,
    /// Still inside `ClientAttachProvider`.
    attaching: bool,
    /// Both sides detached; the cleanup callbacks are running. The binding still counts
    /// against its registrations until they return, so deregistration cannot complete before
    /// the cleanups have run.
    cleaning: bool,
}

#[derive(Default)]
pub(crate) struct NmrState {
    next_id: u64,
    registrations: BTreeMap<u64, Registration>,
    bindings: BTreeMap<u64, Binding>,
    /// The most recent [`MAX_DECLINES`].
    declines: VecDeque<NmrDecline>,
    /// The most recent [`MAX_DEREGISTRATIONS`], oldest first.
    deregistrations: VecDeque<NmrDeregistration>,
}

/// How many declines [`Kernel::nmr_declines`] keeps: the oldest go first, so a long fuzzing
/// run's record stays bounded.
pub const MAX_DECLINES: usize = 1024;

/// How many completed deregistrations [`Kernel::nmr_deregistrations`] keeps (the oldest go
/// first).
pub const MAX_DEREGISTRATIONS: usize = 1024;

impl NmrState {
    /// Registrations (not yet deregistered and waited for) whose characteristics or callbacks
    /// lie in `image`: each as the first such address and what it is.
    pub(crate) fn references_into(&self, image: &Range<usize>) -> Vec<(usize, String)> {
        self.registrations
            .values()
            .filter_map(|r| {
                let (side, addresses) = match r.kind {
                    Kind::Provider => {
                        let c = provider_chars(r);
                        let callbacks = [
                            c.ProviderAttachClient.map(|f| f as usize),
                            c.ProviderDetachClient.map(|f| f as usize),
                            c.ProviderCleanupBindingContext.map(|f| f as usize),
                        ];
                        ("provider", callbacks)
                    }
                    Kind::Client => {
                        let c = client_chars(r);
                        let callbacks = [
                            c.ClientAttachProvider.map(|f| f as usize),
                            c.ClientDetachProvider.map(|f| f as usize),
                            c.ClientCleanupBindingContext.map(|f| f as usize),
                        ];
                        ("client", callbacks)
                    }
                };
                let address = core::iter::once(r.characteristics)
                    .chain(addresses.into_iter().flatten())
                    .find(|a| image.contains(a))?;
                let state = if r.deregistering {
                    "deregistering, not waited for"
                } else {
                    "registered"
                };
                Some((
                    address,
                    format!("NMR {side} of NPI {:?} ({state})", r.npi_id),
                ))
            })
            .collect()
    }

    fn bindings_of(&self, id: u64) -> usize {
        self.bindings
            .values()
            .filter(|b| b.provider == id || b.client == id)
            .count()
    }
}

/// A registration still known to NMR, for leak reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmrRegistration {
    /// "provider" or "client".
    pub kind: &'static str,
    /// NPI id.
    pub npi_id: GUID,
    /// Whether deregistration has started.
    pub deregistering: bool,
    /// Bindings still attached.
    pub bindings: usize,
}

/// A client's `ClientAttachProvider` that returned a failure status without attaching: the
/// status a client declines a provider with, which nothing else lets a test see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmrDecline {
    /// NPI id.
    pub npi_id: GUID,
    /// The provider's module GUID (its `ModuleId->Guid`; `GUID_NULL` if it has none).
    pub provider_module: GUID,
    /// What the client returned.
    pub status: NTSTATUS,
}

/// A registration whose deregistration completed (its `NmrWaitFor*DeregisterComplete`
/// returned): what a test reads to see the order a driver stopped its providers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmrDeregistration {
    /// "provider" or "client".
    pub kind: &'static str,
    /// NPI id.
    pub npi_id: GUID,
    /// The registrant's module GUID (its `ModuleId->Guid`; `GUID_NULL` if it is not a GUID).
    pub module: GUID,
}

impl Kernel {
    /// Registrations whose deregistration completed, in the order they completed: the most
    /// recent [`MAX_DEREGISTRATIONS`] of the kernel's life.
    #[must_use]
    pub fn nmr_deregistrations(&self) -> Vec<NmrDeregistration> {
        lock(&self.inner().nmr)
            .deregistrations
            .iter()
            .copied()
            .collect()
    }

    /// The times a client declined a provider (its `ClientAttachProvider` failed without
    /// attaching), oldest first: the most recent [`MAX_DECLINES`] of the kernel's life.
    #[must_use]
    pub fn nmr_declines(&self) -> Vec<NmrDecline> {
        lock(&self.inner().nmr).declines.iter().copied().collect()
    }

    /// Registrations NMR still holds (not yet deregistered and waited for).
    #[must_use]
    pub fn nmr_registrations(&self) -> Vec<NmrRegistration> {
        let nmr = lock(&self.inner().nmr);
        nmr.registrations
            .iter()
            .map(|(&id, r)| NmrRegistration {
                kind: r.kind.name(),
                npi_id: r.npi_id,
                deregistering: r.deregistering,
                bindings: nmr.bindings_of(id),
            })
            .collect()
    }

    /// Bindings currently attached (both sides).
    #[must_use]
    pub fn nmr_binding_count(&self) -> usize {
        lock(&self.inner().nmr)
            .bindings
            .values()
            .filter(|b| b.provider_side == Side::Attached && b.client_side == Side::Attached)
            .count()
    }
}

/// Whether the kernel bound to this thread holds a binding whose client binding context is
/// `client_binding_context` and whose provider has not completed its detach (it may be inside
/// its attach callback, attached, or inside or pending its detach: the binding takes the
/// client's context when the client calls `NmrClientAttachProvider`). A client whose binding
/// context a provider uses when this is false sees a call the provider may no longer make:
/// NMR has finished with that binding, and the client may have freed what it named. For a
/// stand-in of such a client (core-sim's links) to catch it. False with no kernel bound.
#[must_use]
pub fn nmr_provider_holds_client(client_binding_context: *const c_void) -> bool {
    let context = client_binding_context as usize;
    try_with_kernel(|k| {
        lock(&k.nmr)
            .bindings
            .values()
            .any(|b| b.client_context == context && !matches!(b.provider_side, Side::Done))
    })
    .unwrap_or(false)
}

/// The module GUID of a registration instance (`GUID_NULL` if its module id is not a GUID).
///
/// # Safety
/// `instance` is a registration instance valid now; its module id was checked non-NULL at
/// registration and is valid likewise.
unsafe fn module_guid(instance: *const NPI_REGISTRATION_INSTANCE) -> GUID {
    // SAFETY: the caller's precondition.
    let module_id = unsafe { (*instance).ModuleId };
    // SAFETY: as above.
    let module = unsafe { module_id.as_ref() };
    module.and_then(NPI_MODULEID::guid).unwrap_or(GUID::NULL)
}

/// Appends `entry` to a record that keeps its most recent `max` entries.
fn push_bounded<T>(record: &mut VecDeque<T>, entry: T, max: usize) {
    if record.len() == max {
        record.pop_front();
    }
    record.push_back(entry);
}

fn registration_handle(id: u64) -> HANDLE {
    (REGISTRATION_HANDLE_BASE + usize::try_from(id).expect("64-bit host") * 16) as HANDLE
}

fn binding_handle(id: u64) -> HANDLE {
    (BINDING_HANDLE_BASE + usize::try_from(id).expect("64-bit host") * 16) as HANDLE
}

fn handle_id(handle: HANDLE, base: usize) -> Option<u64> {
    let h = handle as usize;
    (h > base && (h - base).is_multiple_of(16)).then(|| ((h - base) / 16) as u64)
}

fn provider_chars(r: &Registration) -> &NPI_PROVIDER_CHARACTERISTICS {
    // SAFETY: provider registrations store a characteristics pointer the provider promised to
    // keep valid until deregistration completes.
    unsafe { &*(r.characteristics as *const NPI_PROVIDER_CHARACTERISTICS) }
}

fn client_chars(r: &Registration) -> &NPI_CLIENT_CHARACTERISTICS {
    // SAFETY: as for providers.
    unsafe { &*(r.characteristics as *const NPI_CLIENT_CHARACTERISTICS) }
}

fn instance(r: &Registration) -> *const NPI_REGISTRATION_INSTANCE {
    match r.kind {
        Kind::Provider => ptr::addr_of!(provider_chars(r).ProviderRegistrationInstance),
        Kind::Client => ptr::addr_of!(client_chars(r).ClientRegistrationInstance),
    }
}

/// Validates a registration instance; returns its NPI id.
fn npi_id_of(instance: &NPI_REGISTRATION_INSTANCE) -> Option<GUID> {
    if instance.NpiId.is_null() || instance.ModuleId.is_null() {
        return None;
    }
    // SAFETY: non-null, and the registrant promises it is valid while registered.
    Some(unsafe { *instance.NpiId })
}

fn register(
    api: &'static str,
    kind: Kind,
    characteristics: usize,
    context: *mut c_void,
    handle: *mut HANDLE,
) -> NTSTATUS {
    require_irql(api, PASSIVE_LEVEL);
    if characteristics == 0 || handle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let (length, callbacks_ok, npi_id) = match kind {
        Kind::Provider => {
            // SAFETY: non-null characteristics supplied by the caller.
            let c = unsafe { &*(characteristics as *const NPI_PROVIDER_CHARACTERISTICS) };
            (
                c.Length,
                c.ProviderAttachClient.is_some() && c.ProviderDetachClient.is_some(),
                npi_id_of(&c.ProviderRegistrationInstance),
            )
        }
        Kind::Client => {
            // SAFETY: non-null characteristics supplied by the caller.
            let c = unsafe { &*(characteristics as *const NPI_CLIENT_CHARACTERISTICS) };
            (
                c.Length,
                c.ClientAttachProvider.is_some() && c.ClientDetachProvider.is_some(),
                npi_id_of(&c.ClientRegistrationInstance),
            )
        }
    };
    let Some(npi_id) = npi_id.filter(|_| {
        callbacks_ok && usize::from(length) >= size_of::<NPI_PROVIDER_CHARACTERISTICS>()
    }) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(api, |k| {
        if call_fails(k, api) || allocation_fails(k) {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        let (id, peers) = {
            let mut nmr = lock(&k.nmr);
            nmr.next_id += 1;
            let id = nmr.next_id;
            nmr.registrations.insert(
                id,
                Registration {
                    kind,
                    npi_id,
                    characteristics,
                    context: context as usize,
                    deregistering: false,
                },
            );
            let peers: Vec<u64> = nmr
                .registrations
                .iter()
                .filter(|(_, r)| r.kind != kind && r.npi_id == npi_id && !r.deregistering)
                .map(|(&peer, _)| peer)
                .collect();
            (id, peers)
        };
        // SAFETY: the caller passes a writable handle slot.
        unsafe { handle.write(registration_handle(id)) };
        for peer in peers {
            let (provider, client) = if kind == Kind::Provider {
                (id, peer)
            } else {
                (peer, id)
            };
            attach(k, provider, client);
        }
        STATUS_SUCCESS
    })
}

/// Offers a binding to the client; the client attaches through `NmrClientAttachProvider`.
fn attach(k: &Inner, provider: u64, client: u64) {
    let (binding, attach_fn, client_context, provider_instance, npi_id) = {
        let mut nmr = lock(&k.nmr);
        let (Some(p), Some(c)) = (
            nmr.registrations.get(&provider),
            nmr.registrations.get(&client),
        ) else {
            return;
        };
        if p.deregistering || c.deregistering {
            return;
        }
        let attach_fn = client_chars(c).ClientAttachProvider;
        let client_context = c.context;
        let provider_instance = instance(p);
        let npi_id = p.npi_id;
        nmr.next_id += 1;
        let binding = nmr.next_id;
        nmr.bindings.insert(
            binding,
            Binding {
                provider,
                client,
                provider_context: 0,
                client_context: 0,
                provider_side: Side::Absent,
                client_side: Side::Absent,
                attaching: true,
                cleaning: false,
            },
        );
        (
            binding,
            attach_fn,
            client_context,
            provider_instance,
            npi_id,
        )
    };
    let Some(attach_fn) = attach_fn else { return };
    let status = call_driver_callback(
        "ClientAttachProvider",
        attach_fn as usize,
        CalledFrom::Kernel,
        || {
            // SAFETY: the client registered this callback and keeps it valid while registered.
            unsafe {
                attach_fn(
                    binding_handle(binding),
                    client_context as *mut c_void,
                    provider_instance,
                )
            }
        },
    );
    let detach_now = {
        let mut nmr = lock(&k.nmr);
        let deregistering = [provider, client]
            .iter()
            .any(|id| nmr.registrations.get(id).is_some_and(|r| r.deregistering));
        let Some(b) = nmr.bindings.get_mut(&binding) else {
            return;
        };
        b.attaching = false;
        // The provider side may already be detaching (its deregistration raced this attach):
        // the client still attached and is owed a detach and a cleanup.
        if NT_SUCCESS(status) && b.provider_side != Side::Absent {
            b.client_side = Side::Attached;
        }
        if b.provider_side == Side::Absent {
            if !NT_SUCCESS(status) {
                // SAFETY: the provider's registration instance, valid while it is registered,
                // which it is until this binding is removed (its deregistration waits for it).
                let provider_module = unsafe { module_guid(provider_instance) };
                let decline = NmrDecline {
                    npi_id,
                    provider_module,
                    status,
                };
                push_bounded(&mut nmr.declines, decline, MAX_DECLINES);
            }
            nmr.bindings.remove(&binding);
            false
        } else {
            // Attached on the provider side only (the client failed afterwards), or a
            // registration started deregistering meanwhile: detach now.
            b.client_side != Side::Attached || deregistering
        }
    };
    if detach_now {
        detach(k, binding);
    } else {
        k.nmr_cv.notify_all();
    }
}

/// Calls both detach callbacks of a binding (those attached) and finishes it when both are
/// done.
fn detach(k: &Inner, binding: u64) {
    for kind in [Kind::Client, Kind::Provider] {
        let call = {
            let mut nmr = lock(&k.nmr);
            let Some(b) = nmr.bindings.get(&binding) else {
                return;
            };
            let side = if kind == Kind::Client {
                b.client_side
            } else {
                b.provider_side
            };
            if side != Side::Attached {
                continue;
            }
            let reg_id = if kind == Kind::Client {
                b.client
            } else {
                b.provider
            };
            let context = if kind == Kind::Client {
                b.client_context
            } else {
                b.provider_context
            };
            let Some(r) = nmr.registrations.get(&reg_id) else {
                continue;
            };
            let f: Option<unsafe extern "win64" fn(*mut c_void) -> NTSTATUS> = match kind {
                Kind::Client => client_chars(r).ClientDetachProvider,
                Kind::Provider => provider_chars(r).ProviderDetachClient,
            };
            let b = nmr.bindings.get_mut(&binding).expect("binding present");
            *side_mut(b, kind) = Side::InCallback {
                complete_early: false,
            };
            f.map(|f| (f, context))
        };
        let status = match call {
            Some((f, context)) => at_dispatch(detach_name(kind), f as usize, || {
                // SAFETY: the registrant keeps its detach callback valid while registered.
                unsafe { f(context as *mut c_void) }
            }),
            None => STATUS_SUCCESS,
        };
        let mut nmr = lock(&k.nmr);
        let Some(b) = nmr.bindings.get_mut(&binding) else {
            return;
        };
        let side = side_mut(b, kind);
        let completed_early = matches!(
            *side,
            Side::InCallback {
                complete_early: true
            }
        );
        *side = match status {
            STATUS_PENDING if completed_early => Side::Done,
            STATUS_PENDING => Side::Pending,
            STATUS_SUCCESS if !completed_early => Side::Done,
            other => {
                drop(nmr);
                let who = if kind == Kind::Client {
                    "ClientDetachProvider"
                } else {
                    "ProviderDetachClient"
                };
                let why = if completed_early {
                    format!(
                        "{who} completed its detach, then returned {other:#x}: only a detach \
                         that returns STATUS_PENDING may be completed"
                    )
                } else {
                    format!(
                        "{who} returned {other:#x}; only STATUS_SUCCESS or STATUS_PENDING are allowed"
                    )
                };
                bugcheck(
                    who,
                    DRIVER_VERIFIER_DETECTED_VIOLATION,
                    [u64::from(other.cast_unsigned()), binding, 0, 0],
                    &why,
                );
            }
        };
    }
    finish_if_done(k, binding);
}

fn side_mut(b: &mut Binding, kind: Kind) -> &mut Side {
    if kind == Kind::Client {
        &mut b.client_side
    } else {
        &mut b.provider_side
    }
}

fn side_done(side: Side) -> bool {
    matches!(side, Side::Done | Side::Absent)
}

/// Runs the cleanup callbacks of a binding whose both sides have detached, then removes it.
fn finish_if_done(k: &Inner, binding: u64) {
    let cleanups = {
        let mut nmr = lock(&k.nmr);
        let Some(b) = nmr.bindings.get(&binding) else {
            return;
        };
        if b.attaching || b.cleaning || !side_done(b.provider_side) || !side_done(b.client_side) {
            return;
        }
        let (provider, client) = (b.provider, b.client);
        let (provider_side, client_side) = (b.provider_side, b.client_side);
        let (provider_context, client_context) = (b.provider_context, b.client_context);
        let mut cleanups: Vec<(&str, unsafe extern "win64" fn(*mut c_void), usize)> = Vec::new();
        if provider_side == Side::Done
            && let Some(r) = nmr.registrations.get(&provider)
            && let Some(f) = provider_chars(r).ProviderCleanupBindingContext
        {
            cleanups.push(("ProviderCleanupBindingContext", f, provider_context));
        }
        if client_side == Side::Done
            && let Some(r) = nmr.registrations.get(&client)
            && let Some(f) = client_chars(r).ClientCleanupBindingContext
        {
            cleanups.push(("ClientCleanupBindingContext", f, client_context));
        }
        if let Some(b) = nmr.bindings.get_mut(&binding) {
            b.cleaning = true;
        }
        cleanups
    };
    for (name, f, context) in cleanups {
        at_dispatch(name, f as usize, || {
            // SAFETY: the registrant keeps its cleanup callback valid while registered; each
            // context is cleaned up exactly once, after both sides detached.
            unsafe { f(context as *mut c_void) };
        });
    }
    let mut nmr = lock(&k.nmr);
    nmr.bindings.remove(&binding);
    k.nmr_cv.notify_all();
}

fn deregister(api: &'static str, kind: Kind, handle: HANDLE) -> NTSTATUS {
    require_irql(api, DISPATCH_LEVEL);
    with_kernel(api, |k| {
        let bindings: Vec<u64> = {
            let mut nmr = lock(&k.nmr);
            let Some(id) = handle_id(handle, REGISTRATION_HANDLE_BASE) else {
                return STATUS_INVALID_PARAMETER;
            };
            match nmr.registrations.get_mut(&id) {
                // An injected failure leaves the registration as it was.
                Some(r) if r.kind == kind && !r.deregistering => {
                    if kind == Kind::Provider && call_fails(k, api) {
                        return STATUS_UNSUCCESSFUL;
                    }
                    r.deregistering = true;
                }
                _ => return STATUS_INVALID_PARAMETER,
            }
            nmr.bindings
                .iter()
                .filter(|(_, b)| b.provider == id || b.client == id)
                .map(|(&b, _)| b)
                .collect()
        };
        let had_bindings = !bindings.is_empty();
        for binding in bindings {
            detach(k, binding);
        }
        if !had_bindings && k.config.nmr_deregister_success_when_idle {
            STATUS_SUCCESS
        } else {
            STATUS_PENDING
        }
    })
}

fn wait_deregister(api: &'static str, kind: Kind, handle: HANDLE) -> NTSTATUS {
    require_irql(api, APC_LEVEL);
    with_kernel(api, |k| {
        let Some(id) = handle_id(handle, REGISTRATION_HANDLE_BASE) else {
            return STATUS_INVALID_PARAMETER;
        };
        let mut nmr = lock(&k.nmr);
        match nmr.registrations.get(&id) {
            Some(r) if r.kind == kind && r.deregistering => {}
            _ => return STATUS_INVALID_PARAMETER,
        }
        while nmr.bindings_of(id) > 0 {
            nmr = k
                .nmr_cv
                .wait(nmr)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let Some(r) = nmr.registrations.remove(&id) else {
            // Another wait on the same handle completed it meanwhile, and logged it.
            return STATUS_SUCCESS;
        };
        // SAFETY: the registration instance stays valid until this wait returns (the
        // registrant's promise).
        let module = unsafe { module_guid(instance(&r)) };
        let deregistration = NmrDeregistration {
            kind: r.kind.name(),
            npi_id: r.npi_id,
            module,
        };
        push_bounded(
            &mut nmr.deregistrations,
            deregistration,
            MAX_DEREGISTRATIONS,
        );
        STATUS_SUCCESS
    })
}

fn detach_complete(api: &'static str, kind: Kind, handle: HANDLE) {
    require_irql(api, DISPATCH_LEVEL);
    with_kernel(api, |k| {
        let Some(binding) = handle_id(handle, BINDING_HANDLE_BASE) else {
            bugcheck(
                api,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [handle as u64, 0, 0, 0],
                "not a binding handle",
            );
        };
        let mut nmr = lock(&k.nmr);
        let side = nmr.bindings.get_mut(&binding).map(|b| side_mut(b, kind));
        match side {
            Some(side @ Side::Pending) => *side = Side::Done,
            Some(side @ Side::InCallback { .. }) => {
                *side = Side::InCallback {
                    complete_early: true,
                }
            }
            _ => {
                drop(nmr);
                bugcheck(
                    api,
                    DRIVER_VERIFIER_DETECTED_VIOLATION,
                    [handle as u64, 0, 0, 0],
                    &format!("{api} without a pending detach on this binding"),
                );
            }
        }
        drop(nmr);
        finish_if_done(k, binding);
    });
}

/// `NmrRegisterProvider`.
///
/// # Safety
/// Kernel routine; the characteristics and context stay valid until deregistration completes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn NmrRegisterProvider(
    ProviderCharacteristics: *const NPI_PROVIDER_CHARACTERISTICS,
    ProviderContext: *mut c_void,
    NmrProviderHandle: *mut HANDLE,
) -> NTSTATUS {
    register(
        "NmrRegisterProvider",
        Kind::Provider,
        ProviderCharacteristics as usize,
        ProviderContext,
        NmrProviderHandle,
    )
}

/// `NmrRegisterClient`.
///
/// # Safety
/// Kernel routine; the characteristics and context stay valid until deregistration completes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn NmrRegisterClient(
    ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS,
    ClientContext: *mut c_void,
    NmrClientHandle: *mut HANDLE,
) -> NTSTATUS {
    register(
        "NmrRegisterClient",
        Kind::Client,
        ClientCharacteristics as usize,
        ClientContext,
        NmrClientHandle,
    )
}

/// `NmrDeregisterProvider`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrDeregisterProvider(NmrProviderHandle: HANDLE) -> NTSTATUS {
    deregister("NmrDeregisterProvider", Kind::Provider, NmrProviderHandle)
}

/// `NmrDeregisterClient`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS {
    deregister("NmrDeregisterClient", Kind::Client, NmrClientHandle)
}

/// `NmrWaitForProviderDeregisterComplete`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrWaitForProviderDeregisterComplete(NmrProviderHandle: HANDLE) -> NTSTATUS {
    wait_deregister(
        "NmrWaitForProviderDeregisterComplete",
        Kind::Provider,
        NmrProviderHandle,
    )
}

/// `NmrWaitForClientDeregisterComplete`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrWaitForClientDeregisterComplete(NmrClientHandle: HANDLE) -> NTSTATUS {
    wait_deregister(
        "NmrWaitForClientDeregisterComplete",
        Kind::Client,
        NmrClientHandle,
    )
}

/// `NmrProviderDetachClientComplete`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrProviderDetachClientComplete(NmrBindingHandle: HANDLE) {
    detach_complete(
        "NmrProviderDetachClientComplete",
        Kind::Provider,
        NmrBindingHandle,
    );
}

/// `NmrClientDetachProviderComplete`.
#[unsafe(no_mangle)]
pub extern "win64" fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE) {
    detach_complete(
        "NmrClientDetachProviderComplete",
        Kind::Client,
        NmrBindingHandle,
    );
}

/// `NmrClientAttachProvider`: called by a client from its `ClientAttachProvider`; calls the
/// provider's `ProviderAttachClient` and returns its status.
///
/// # Safety
/// Kernel routine; the out pointers are writable.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn NmrClientAttachProvider(
    NmrBindingHandle: HANDLE,
    ClientBindingContext: *mut c_void,
    ClientDispatch: *const c_void,
    ProviderBindingContext: *mut *mut c_void,
    ProviderDispatch: *mut *const c_void,
) -> NTSTATUS {
    const API: &str = "NmrClientAttachProvider";
    require_irql(API, PASSIVE_LEVEL);
    if ProviderBindingContext.is_null() || ProviderDispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(API, |k| {
        let Some(binding) = handle_id(NmrBindingHandle, BINDING_HANDLE_BASE) else {
            return STATUS_INVALID_PARAMETER;
        };
        let (attach_fn, provider_context, client_instance) = {
            let mut nmr = lock(&k.nmr);
            let Some(b) = nmr
                .bindings
                .get(&binding)
                .filter(|b| b.attaching && b.provider_side == Side::Absent)
            else {
                return STATUS_INVALID_PARAMETER;
            };
            let (Some(p), Some(c)) = (
                nmr.registrations.get(&b.provider),
                nmr.registrations.get(&b.client),
            ) else {
                return STATUS_INVALID_PARAMETER;
            };
            if p.deregistering {
                return STATUS_NOINTERFACE;
            }
            let call = (
                provider_chars(p).ProviderAttachClient,
                p.context,
                instance(c),
            );
            // The client's binding context is the binding's from here: the provider may use
            // it inside its attach callback (`nmr_provider_holds_client`).
            if let Some(b) = nmr.bindings.get_mut(&binding) {
                b.client_context = ClientBindingContext as usize;
            }
            call
        };
        if call_fails(k, API) {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        let Some(attach_fn) = attach_fn else {
            return STATUS_NOINTERFACE;
        };
        let mut provider_binding: *mut c_void = ptr::null_mut();
        let mut provider_dispatch: *const c_void = ptr::null();
        let status = call_driver_callback(
            "ProviderAttachClient",
            attach_fn as usize,
            CalledFrom::Kernel,
            || {
                // SAFETY: the provider registered this callback and keeps it valid while
                // registered; the out pointers are locals.
                unsafe {
                    attach_fn(
                        NmrBindingHandle,
                        provider_context as *mut c_void,
                        client_instance,
                        ClientBindingContext,
                        ClientDispatch,
                        &raw mut provider_binding,
                        &raw mut provider_dispatch,
                    )
                }
            },
        );
        if NT_SUCCESS(status) {
            let mut nmr = lock(&k.nmr);
            if let Some(b) = nmr.bindings.get_mut(&binding) {
                b.provider_side = Side::Attached;
                b.provider_context = provider_binding as usize;
                b.client_context = ClientBindingContext as usize;
            }
            // SAFETY: checked non-null above; the client passes writable slots.
            unsafe { ProviderBindingContext.write(provider_binding) };
            // SAFETY: as above.
            unsafe { ProviderDispatch.write(provider_dispatch) };
        }
        status
    })
}

/// What a [`TestClient`] registers: its characteristics and the status its attach got.
struct OnceClient {
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    status: std::sync::Mutex<Option<NTSTATUS>>,
}

unsafe extern "win64" fn once_client_attach(
    binding: HANDLE,
    context: *mut c_void,
    _: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the `OnceClient` `TestClient::register` registered, alive until the client's
    // `Drop` has deregistered it.
    let client = unsafe { &*context.cast::<OnceClient>() };
    let (mut provider_binding, mut provider_dispatch) = (ptr::null_mut(), ptr::null());
    // SAFETY: inside ClientAttachProvider, with NMR's binding handle; locals for the outputs.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            context,
            ptr::null(),
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    *lock(&client.status) = Some(status);
    status
}

unsafe extern "win64" fn once_client_detach(_: *mut c_void) -> NTSTATUS {
    STATUS_SUCCESS
}

/// A test's client of one NPI, registered until dropped: a stand-in for a client that
/// presents data to a provider (the eBPF core's map client, say). Dropping it deregisters it
/// and waits for its detaches.
pub struct TestClient {
    client: Box<OnceClient>,
    handle: HANDLE,
}

impl TestClient {
    /// Registers a client of `npi` (module `module`) whose registration instance carries
    /// `npi_specific` as its NPI-specific characteristics; it attaches to the providers
    /// registered for the NPI now, and to those registered later.
    ///
    /// # Safety
    /// `npi_specific` is NULL or readable for as much as the providers read, until the client
    /// is dropped.
    ///
    /// # Panics
    /// If no kernel is bound to the thread, or the registration fails.
    #[must_use]
    pub unsafe fn register(
        npi: &'static GUID,
        module: &'static NPI_MODULEID,
        npi_specific: *const c_void,
    ) -> TestClient {
        let client = Box::new(OnceClient {
            characteristics: NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: 72,
                ClientAttachProvider: Some(once_client_attach),
                ClientDetachProvider: Some(once_client_detach),
                ClientCleanupBindingContext: None,
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: 40,
                    NpiId: npi,
                    ModuleId: module,
                    Number: 0,
                    NpiSpecificCharacteristics: npi_specific,
                },
            },
            status: std::sync::Mutex::new(None),
        });
        let context = ptr::from_ref(&*client).cast_mut().cast::<c_void>();
        let mut handle = ptr::null_mut();
        // SAFETY: the characteristics and context live in the box until `Drop` deregisters.
        let status = unsafe {
            NmrRegisterClient(&raw const client.characteristics, context, &raw mut handle)
        };
        assert_eq!(status, STATUS_SUCCESS, "NmrRegisterClient");
        TestClient { client, handle }
    }

    /// The status its last attach got from a provider; `None` if none was offered yet.
    #[must_use]
    pub fn status(&self) -> Option<NTSTATUS> {
        *lock(&self.client.status)
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        if NmrDeregisterClient(self.handle) == STATUS_PENDING {
            NmrWaitForClientDeregisterComplete(self.handle);
        }
    }
}

/// Registers a [`TestClient`], lets it attach to the providers registered for `npi`,
/// deregisters it (waiting for its detaches), and returns the status its last attach got;
/// `None` if no provider was offered.
///
/// # Safety
/// As [`TestClient::register`].
///
/// # Panics
/// As [`TestClient::register`].
#[must_use]
pub unsafe fn attach_client_once(
    npi: &'static GUID,
    module: &'static NPI_MODULEID,
    npi_specific: *const c_void,
) -> Option<NTSTATUS> {
    // SAFETY: the caller's contract; the client is dropped before this returns.
    let client = unsafe { TestClient::register(npi, module, npi_specific) };
    client.status()
}
