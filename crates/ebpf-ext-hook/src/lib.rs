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
//! # Modules
//!
//! `config` (what an extension declares), `policy` ([`AttachPolicy`] and all its rules),
//! `client` (attached programs and the one iterator of live clients), `provider`
//! ([`HookProvider`], its state and writer side), `attach` (the NMR attach and detach, and
//! the detach work item), `invoke` (running programs, batches, stack expansion), `validate`
//! (what a client presented), `snapshot` (the published client set), `work_item` (a
//! self-freeing `IO_WORKITEM`). The NMR scaffolding itself is `ebpf_ext_nmr::Provider`'s.
//!
//! # Locking
//! Attach and detach completion serialise on the provider's writer push lock (inside a
//! critical region); the on-attach and on-detach callbacks run under it, so they must not
//! call back into the provider's attach path. Invocation takes no lock.
//!
//! Invocation holds the published set of programs instead: an attach or a detach publishes a
//! new set and then waits until every reader of the old one is done. So nothing that runs
//! while a set is held may wait for an attach or a detach of the same hook: the `filter`,
//! `verdict` and `stop` closures of the `invoke_*` functions, the closure of
//! [`HookProvider::with_batch`], and the holder of an [`AttachedClients`]
//! ([`HookProvider::clients`]), which is a guard: hold it briefly and never leak it
//! (`mem::forget`), or every later detach, and the provider's drop, waits forever. Never drop a
//! [`HookProvider`] from its own callbacks: its drop waits for the detaches they run in.
#![no_std]

mod attach;
mod client;
mod config;
mod detaching;
mod invoke;
mod policy;
mod provider;
mod snapshot;
mod sync;
mod validate;
mod work_item;

pub use crate::client::{Attached, AttachedClients, ClientRef};
pub use crate::config::{
    AttachParameter, AttachRequest, ContextData, DataFields, Flow, HookConfig, HookExtension,
    ProgramContext,
};
pub use crate::invoke::{Batch, Invocation, STACK_EXPANSION_SIZE};
pub use crate::policy::{AttachPolicy, MAX_CLIENTS_PER_PARAMETER};
pub use crate::provider::HookProvider;
pub use crate::validate::Rejection;
