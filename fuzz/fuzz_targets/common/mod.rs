//! What the fuzz targets share: the verbose switch and the end-of-input check of a usersim
//! kernel. Each target includes it as `mod common;` (a folder, so cargo-fuzz does not take it
//! for a target).

use ebpf_ext_usersim::{Kernel, TagUsage};

/// Whether `EBPF_EXT_FUZZ_VERBOSE` is set: a target then says what an input did.
pub fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("EBPF_EXT_FUZZ_VERBOSE").is_some())
}

/// After an input: once its work items have run, `kernel` holds exactly the pool
/// allocations `pool` and `registrations` NMR registrations it held before the input.
#[allow(
    dead_code,
    reason = "only the targets that keep a kernel between inputs call it"
)]
pub fn assert_kernel_as_before(kernel: &Kernel, pool: &[TagUsage], registrations: usize) {
    kernel.wait_for_work_items();
    kernel.etw_clear();
    assert_eq!(kernel.pool_outstanding(), pool, "pool leaked");
    assert_eq!(
        kernel.nmr_registrations().len(),
        registrations,
        "NMR registrations left"
    );
}
