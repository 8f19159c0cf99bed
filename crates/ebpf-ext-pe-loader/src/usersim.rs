//! Binding images to `ebpf-ext-usersim`.

/// Resolves an import against usersim's export table
/// ([`ebpf_ext_usersim::exports::EXPORTS`]), matching module names case-insensitively.
///
/// Pass it to [`load`](crate::load) as the resolver.
#[must_use]
pub fn usersim_resolver(module: &str, name: &str) -> Option<usize> {
    ebpf_ext_usersim::exports::find(module, name).map(|export| export.address as usize)
}

/// Makes emulated CR8 accesses read and write usersim's per-thread simulated IRQL
/// ([`ebpf_ext_usersim::set_current_irql`] and the `KeGetCurrentIrql` export).
///
/// The thread running the driver code must have a usersim kernel bound, as for any kernel
/// routine.
pub fn use_usersim_irql() {
    crate::set_irql_source(usersim_irql, ebpf_ext_usersim::set_current_irql);
}

fn usersim_irql() -> u8 {
    ebpf_ext_usersim::exports::all::KeGetCurrentIrql()
}

/// Whether the loaded image containing `address` was linked with `/INTEGRITYCHECK`; `None`
/// outside every loaded image. Give it to
/// [`set_loader_image_flags`](ebpf_ext_usersim::set_loader_image_flags) so
/// `PsSetCreateProcessNotifyRoutineEx` checks the real image's flag on every kernel.
#[must_use]
pub fn usersim_image_flags(address: usize) -> Option<bool> {
    crate::image_dll_characteristics(address)
        .map(|flags| flags & crate::pe::IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY != 0)
}

/// Runs `call` on a kernel stack when `routine` lies in a loaded image; `false`, without
/// running it, otherwise. Give it to
/// [`set_callback_stack`](ebpf_ext_usersim::set_callback_stack) so the callbacks usersim makes
/// into images run on a [`KERNEL_STACK_SIZE`](crate::KERNEL_STACK_SIZE) stack, as `DriverEntry`
/// does, and a callback too deep for the kernel's stack overflows its guard page.
///
/// A callback made while the thread already runs on a kernel stack (an ETW enable callback
/// inside `EtwRegister` called by `DriverEntry`, an NMR detach callback inside a
/// deregistration called by `DriverUnload`) runs in place, sharing what is left of that stack
/// as it would on Windows; otherwise it gets a whole one
/// ([`run_on_kernel_stack`](crate::run_on_kernel_stack)).
pub fn usersim_callback_stack(routine: usize, call: &mut dyn FnMut()) -> bool {
    if crate::registry::with_image(routine, |_| ()).is_none() {
        return false;
    }
    if crate::stack::on_kernel_stack() {
        call();
    } else {
        crate::run_on_kernel_stack(call);
    }
    true
}
