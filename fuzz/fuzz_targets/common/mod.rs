//! What the fuzz targets share: the verbose switch and the end-of-input check of a usersim
//! kernel. Each target includes it as `mod common;` (a folder, so cargo-fuzz does not take it
//! for a target).

use ebpf_ext_usersim::{Kernel, TagUsage};

/// Whether `EBPF_EXT_FUZZ_VERBOSE` is set: a target then says what an input did.
pub fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("EBPF_EXT_FUZZ_VERBOSE").is_some())
}

/// What a kernel held between inputs: its outstanding pool allocations and NMR
/// registrations, taken once the target's environment is set up.
#[allow(
    dead_code,
    reason = "only the targets that keep a kernel between inputs use it"
)]
pub struct Baseline {
    pool: Vec<TagUsage>,
    registrations: usize,
}

#[allow(
    dead_code,
    reason = "only the targets that keep a kernel between inputs use it"
)]
impl Baseline {
    /// What `kernel` holds now.
    pub fn of(kernel: &Kernel) -> Self {
        Baseline {
            pool: kernel.pool_outstanding(),
            registrations: kernel.nmr_registrations().len(),
        }
    }

    /// After an input: once its work items have run, `kernel` holds exactly the pool
    /// allocations and NMR registrations it held when this baseline was taken.
    pub fn assert_unchanged(&self, kernel: &Kernel) {
        kernel.wait_for_work_items();
        kernel.etw_clear();
        assert_eq!(kernel.pool_outstanding(), self.pool, "pool leaked");
        assert_eq!(
            kernel.nmr_registrations().len(),
            self.registrations,
            "NMR registrations left"
        );
    }
}
