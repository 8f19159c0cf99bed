//! Attach and detach: what the hook NPI provider does when NMR attaches or detaches a link.
//!
//! Attach validates what the client presented, applies the attach policy and the hook's
//! capacity, asks the extension (its first-attach callback too when no program is attached),
//! and publishes and counts the new client — each step a `?`, each refusal traced once with
//! its status, a refusal after the first-attach callback undone by the last-detach one.
//! Detach marks the client, and a [`WorkItem`] later removes it from the published set, waits
//! until no invocation can reach it, calls on-detach, counts it out (calling last-detach when
//! it was the last) and completes the detach.
//!
//! Every extension callback and every change of the count runs under the provider's writer
//! lock, so the count the first-attach decision reads is the one the last detach leaves.

use core::sync::atomic::AtomicBool;

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, DetachCompletion};
use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
};
use ebpf_ext_trace::refused;

use crate::client::{Attached, Client, live};
use crate::config::{AttachRequest, HookExtension};
use crate::provider::{HookState, WriterGuard};
use crate::validate::validate;
use crate::work_item::{Work, WorkItem};

/// An attach admitted by the extension's first-attach decision and not yet published.
///
/// Dropped before [`Admission::complete`] (the attach is refused), it undoes a first-attach
/// callback with the last-detach one. It borrows the writer guard, so it is created, completed
/// and dropped while the writer lock is held.
struct Admission<'a, 'w, E: HookExtension> {
    state: &'a HookState<E>,
    writer: &'a WriterGuard<'w, E>,
    /// Whether this attach called on-first-attach and must undo it if refused.
    undo_first: bool,
}

impl<'a, 'w, E: HookExtension> Admission<'a, 'w, E> {
    /// Calls the extension's on-first-attach if no program is attached.
    fn begin(state: &'a HookState<E>, writer: &'a WriterGuard<'w, E>) -> Result<Self, NTSTATUS> {
        let first = writer.attached() == 0;
        if first {
            state.extension.on_first_attach().map_err(|_| {
                refused(
                    "first attach refused by the extension",
                    STATUS_ACCESS_DENIED,
                )
            })?;
        }
        Ok(Admission {
            state,
            writer,
            undo_first: first,
        })
    }

    /// The attach succeeded: counts it, and keeps what on-first-attach did.
    fn complete(mut self) {
        self.writer.count_attach();
        self.undo_first = false;
    }
}

impl<E: HookExtension> Drop for Admission<'_, '_, E> {
    fn drop(&mut self) {
        if self.undo_first {
            self.state.extension.on_last_detach();
        }
    }
}

/// `ProviderAttachClient` for one hook.
///
/// # IRQL
/// PASSIVE_LEVEL.
///
/// # Locking
/// Takes the writer lock for the policy check, the extension's on-first-attach and
/// on-attach, the publish and the count, so that they see and change one consistent set of
/// clients; a refusal's undo (on-detach, then on-last-detach) runs under it too.
pub(crate) fn attach<E: HookExtension>(
    state: &HookState<E>,
    client: &AttachingClient<'_>,
) -> Result<Bound<Client<E>>, NTSTATUS> {
    let config = &state.config;
    // SAFETY: NMR passed these to this attach: NULL or valid for what they claim.
    let valid = unsafe {
        validate::<E::Parameter>(
            client.registration(),
            client.dispatch(),
            config.policy,
            config.wildcard,
        )
    }
    .map_err(|rejection| refused(rejection.reason(), STATUS_INVALID_PARAMETER))?;
    // SAFETY: the device object outlives the provider (`HookProvider::register`'s contract),
    // and so every client's work item.
    let work_item = unsafe { WorkItem::allocate(state.device) }
        .map_err(|_| refused("IoAllocateWorkItem failed", STATUS_INSUFFICIENT_RESOURCES))?;
    let request = AttachRequest {
        parameter: valid.parameter,
        prog_attach_flags: valid.prog_attach_flags,
        client_module_id: client.module_id(),
    };
    let writer = state.lock_writer();
    let current = writer.current();
    let attached = live(current).map(|c| c.parameter.as_ref());
    if !config.policy.admits(attached, request.parameter.as_ref()) {
        return Err(refused(
            "attach refused by the hook's attach policy",
            STATUS_ACCESS_DENIED,
        ));
    }
    if live(current).count() >= state.snapshots.capacity() {
        return Err(refused(
            "hook is at its max_clients capacity",
            STATUS_INSUFFICIENT_RESOURCES,
        ));
    }
    let admission = Admission::begin(state, &writer)?;
    let data = state
        .extension
        .on_attach(&request, &Attached { entries: current })
        .map_err(|_| refused("attach refused by the extension", STATUS_ACCESS_DENIED))?;
    let bound = client
        .allocate(Client {
            binding_context: client.binding_context(),
            invoke: valid.invoke,
            batch: valid.batch,
            parameter: request.parameter,
            prog_attach_flags: request.prog_attach_flags,
            module_id: request.client_module_id,
            data,
            detaching: AtomicBool::new(false),
            work_item,
            completion: client.detach_completion(),
            provider: state,
        })
        .map_err(|unallocated| {
            // The extension accepted this attach: undo its side before refusing (the work
            // item frees itself with `unallocated`; `admission`, dropped after this, calls
            // on-last-detach if this attach was the first).
            state.extension.on_detach(&unallocated.data);
            refused(
                "could not allocate the client",
                STATUS_INSUFFICIENT_RESOURCES,
            )
        })?;
    admission.complete();
    writer.republish(Some(&bound));
    Ok(bound)
}

/// `ProviderDetachClient`: marks the client and leaves the rest to its work item.
///
/// # IRQL
/// ≤ DISPATCH_LEVEL.
pub(crate) fn detach<E: HookExtension>(client: &Client<E>) -> Detach {
    crate::detaching::mark_then_queue(&client.detaching, || {
        // SAFETY: NMR detaches a binding once, so this is the item's one queueing; the client
        // stays in place until its cleanup, which NMR runs only once the detach is complete:
        // by the routine, after `run` has returned the completion this Pending owes.
        unsafe { client.work_item.queue(client) };
    });
    Detach::Pending
}

impl<E: HookExtension> Work for Client<E> {
    fn work_item(&self) -> &WorkItem {
        &self.work_item
    }

    /// Removes the client from the published set, waits out the invocations that may still
    /// reach it, calls on-detach, counts the client out (and calls on-last-detach if it was
    /// the last attached), and returns the detach to complete: the routine completes it once
    /// this borrow of the client has ended, as NMR may free the client in that call.
    fn run(&self) -> Option<DetachCompletion> {
        let state = self.provider();
        {
            let writer = state.lock_writer();
            // After this returns, no invocation can reach this client.
            writer.republish(None);
            // Under the writer lock, as on-attach: the callbacks never overlap, and an attach
            // sees the count only before or after both of these.
            state.extension.on_detach(&self.data);
            if writer.count_detach() {
                state.extension.on_last_detach();
            }
        }
        // `detach` returned Pending for this binding: this is its one completion.
        Some(self.completion)
    }
}
