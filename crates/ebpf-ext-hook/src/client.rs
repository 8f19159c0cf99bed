//! Attached programs: the provider's state per client, the entries of a published snapshot,
//! and the read-only views extensions get.
//!
//! # Live clients
//!
//! A client is *live* from the moment its attach publishes it until NMR asks to detach it,
//! when its `detaching` flag is set; from then on invocations skip it and the next publish
//! leaves it out. [`live`] is the one place that filter is written, with `Relaxed` ordering,
//! for every reader and writer. That is enough because the flag only lets callers skip a
//! client early; it never decides whether one may be touched:
//!
//! - an invoker holds the snapshot's rundown, and the detach worker frees nothing until it
//!   has published a snapshot without the client and waited for every such invoker
//!   (`snapshot`'s protocol), so an invoker that misses the flag calls a program whose
//!   binding is still valid — as it would had it started a moment earlier;
//! - writers run under the provider's writer lock, and the flag is stored before the detach
//!   work item is queued and taken by the worker that then takes the same lock, so the
//!   writer that must leave the client out (the worker's publish) sees it; an earlier writer
//!   that misses it keeps the client one snapshot longer, which the worker's publish undoes.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use ebpf_ext_nmr::DetachCompletion;
use ebpf_ext_sys::ebpf_extension::ebpf_program_invoke_function_t;
use ebpf_ext_sys::ebpf_result::EBPF_SUCCESS;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::{Error, Result};

use crate::config::{AttachRequest, HookExtension, ProgramContext};
use crate::policy::AttachPolicy;
use crate::provider::HookState;
use crate::snapshot::SnapshotGuard;
use crate::validate::BatchFunctions;
use crate::work_item::WorkItem;

/// One attached program, as a published snapshot holds it.
pub(crate) struct Entry<E: HookExtension> {
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
    pub(crate) fn new(client: &Client<E>) -> Self {
        Entry {
            client: ptr::from_ref(client),
        }
    }

    pub(crate) fn client(&self) -> &Client<E> {
        // SAFETY: entries in a published snapshot point to live clients: a client is freed
        // only after a publish without it has waited out every reader (snapshot protocol).
        unsafe { &*self.client }
    }
}

/// The live clients among `entries`, in order (see the module documentation for why
/// `Relaxed` is enough).
pub(crate) fn live<E: HookExtension>(
    entries: &[Entry<E>],
) -> impl Iterator<Item = &Client<E>> + Clone {
    entries
        .iter()
        .map(Entry::client)
        .filter(|c| !c.detaching.load(Ordering::Relaxed))
}

/// Provider-side state of one attached program: NMR's binding context for it.
pub(crate) struct Client<E: HookExtension> {
    pub(crate) binding_context: *const c_void,
    pub(crate) invoke: ebpf_program_invoke_function_t,
    pub(crate) batch: Option<BatchFunctions>,
    pub(crate) parameter: Option<E::Parameter>,
    pub(crate) prog_attach_flags: u64,
    pub(crate) module_id: GUID,
    pub(crate) data: E::ClientData,
    pub(crate) detaching: AtomicBool,
    pub(crate) work_item: WorkItem,
    pub(crate) completion: DetachCompletion,
    pub(crate) provider: *const HookState<E>,
}

// SAFETY: the core's binding context and functions may be used from any thread until the
// detach completes; the provider outlives its clients; the extension's data is Send + Sync.
unsafe impl<E: HookExtension> Send for Client<E> {}
// SAFETY: as above; the only mutable state is the atomic flag.
unsafe impl<E: HookExtension> Sync for Client<E> {}

impl<E: HookExtension> Client<E> {
    pub(crate) fn matches(&self, parameter: &E::Parameter) -> bool {
        self.parameter.as_ref().is_none_or(|p| p == parameter)
    }

    pub(crate) fn provider(&self) -> &HookState<E> {
        // SAFETY: a client's provider outlives it: deregistration waits for every detach.
        unsafe { &*self.provider }
    }

    pub(crate) fn invoke(&self, context: *mut c_void) -> Result<u32> {
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
    pub(crate) client: &'a Client<E>,
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
    pub fn invoke(&self, context: &mut ProgramContext<'_, E::Context>) -> Result<u32> {
        // SAFETY: the provider's data fields, which `register_with_data`'s caller vouched for.
        let program = unsafe { context.program_pointer(self.client.provider().data_fields) };
        self.client.invoke(program)
    }
}

/// The programs attached when an on-attach callback runs (the writer's view).
pub struct Attached<'a, E: HookExtension> {
    pub(crate) entries: &'a [Entry<E>],
}

impl<'a, E: HookExtension> Attached<'a, E> {
    /// Attached programs that are not detaching.
    pub fn iter(&self) -> impl Iterator<Item = ClientRef<'a, E>> + 'a {
        live(self.entries).map(|client| ClientRef { client })
    }

    /// ntosebpfext's `check_attach_parameter` rule
    /// ([`AttachPolicy::exclusive_wildcard_conflict`]): a wildcard request is refused if
    /// anything is attached; a specific request is refused if a wildcard or the same
    /// parameter is attached.
    ///
    /// # Errors
    /// [`Error::AccessDenied`] when the rule refuses the request.
    pub fn check_exclusive_wildcard(&self, request: &AttachRequest<E::Parameter>) -> Result {
        let attached = live(self.entries).map(|c| c.parameter.as_ref());
        if AttachPolicy::exclusive_wildcard_conflict(attached, request.parameter.as_ref()) {
            Err(Error::AccessDenied)
        } else {
            Ok(())
        }
    }
}

/// The programs attached now; holds the snapshot until dropped.
///
/// # IRQL
/// Create and drop at ≤ DISPATCH_LEVEL. An attach or a detach of the hook completes only
/// after this is dropped (each waits out the snapshot's readers), so hold it briefly and do
/// not wait for one while holding it. Like a lock guard, it must not be leaked: after a
/// `mem::forget`, every later attach and detach, and the provider's drop, waits forever.
pub struct AttachedClients<'a, E: HookExtension> {
    pub(crate) snapshot: SnapshotGuard<'a, Entry<E>>,
}

impl<E: HookExtension> AttachedClients<'_, E> {
    /// The attached programs in invocation order (detaching ones skipped).
    pub fn iter(&self) -> impl Iterator<Item = ClientRef<'_, E>> {
        live(self.snapshot.entries()).map(|client| ClientRef { client })
    }

    /// Number of programs [`AttachedClients::iter`] yields: attached, detaching ones not
    /// counted. (Counted, not stored: the snapshot may hold a detaching program until the next
    /// publish.)
    #[must_use]
    pub fn len(&self) -> usize {
        live(self.snapshot.entries()).count()
    }

    /// Whether [`AttachedClients::iter`] yields nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        live(self.snapshot.entries()).next().is_none()
    }
}
