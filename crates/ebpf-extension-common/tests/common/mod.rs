//! A program context, a helper that reads it, and a hook that accepts every attach: the
//! fixture of the integration tests whose driver needs some program type and some hook, and
//! tests what the SDK does around them; and the order its providers stopped in.

use ebpf_ext_usersim::Kernel;
use ebpf_extension_common::prelude::*;

no_padding! {
    /// The context: two plain values, no data pointers.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(crate) struct Seen {
        value: u64,
        flags: u64,
    }
}

/// The helper every test program type publishes: the context's `value`.
pub(crate) fn value(context: &Seen) -> u64 {
    context.value
}

/// A hook over [`Seen`] that accepts every attach.
pub(crate) struct Hook;

impl HookExtension for Hook {
    type Parameter = ();
    type ClientData = ();
    type Context = Seen;
    fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

/// The module GUIDs of the providers that deregistered, in the order they did: a hook's
/// module is its attach type, a program type's its GUID.
#[allow(
    dead_code,
    reason = "not every test that shares the fixture reads the order"
)]
pub(crate) fn providers_stopped(kernel: &Kernel) -> Vec<GUID> {
    kernel
        .nmr_deregistrations()
        .into_iter()
        .filter(|d| d.kind == "provider")
        .map(|d| d.module)
        .collect()
}
