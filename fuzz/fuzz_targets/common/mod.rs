//! What the fuzz targets share: the verbose switch, a sample driver loaded for a target's
//! life, and the end-of-input check of a usersim kernel. Each target includes it as `mod common;` (a folder, so cargo-fuzz does not take it
//! for a target).

use ebpf_ext_usersim::{Kernel, TagUsage};
use sample_harness::{DriverEntry, LoadedDriver, Target};

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

/// A sample driver linked into the target, loaded on a kernel of its own for the target's
/// life, with what the target set up after the load (`kept`: never dropped, though a target
/// may change it as long as each input ends with it as it was) and the baseline taken once
/// both are in place.
#[allow(
    dead_code,
    reason = "only the targets that keep a kernel between inputs use it"
)]
pub struct Loaded<T = ()> {
    pub kernel: Kernel,
    _driver: LoadedDriver<'static>,
    pub kept: T,
    pub baseline: Baseline,
}

#[allow(
    dead_code,
    reason = "only the targets that keep a kernel between inputs use it"
)]
impl<T> Loaded<T> {
    /// Loads `entry` as `service` on a new kernel, then runs `setup` (on that kernel).
    ///
    /// # Panics
    /// If `DriverEntry` fails.
    pub fn native(entry: DriverEntry, service: &str, setup: impl FnOnce() -> T) -> Self {
        let kernel = Kernel::new();
        let driver = LoadedDriver::load(Target::Native(entry), service).expect("DriverEntry");
        let kept = setup();
        let baseline = Baseline::of(&kernel);
        Loaded {
            kernel,
            _driver: driver,
            kept,
            baseline,
        }
    }
}
