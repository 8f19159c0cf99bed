//! A program context, a helper that reads it, and a hook that accepts every attach: the
//! fixture of the integration tests whose driver needs some program type and some hook, and
//! tests what the SDK does around them.

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
