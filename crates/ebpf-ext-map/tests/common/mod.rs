//! What the map tests' providers check in every callback.

use ebpf_ext_sys::ebpf_extension::EBPF_MAP_OPERATION_MAP_CLEANUP;

/// The core calls a provider inside its epoch (user-mode operations and programs alike),
/// except for a map's cleanup, which it runs from an epoch work item, outside any: `call`
/// with `flags` must be inside core-sim's epoch exactly when it is no cleanup.
pub(crate) fn assert_epoch_as_the_core(call: &str, flags: u32) {
    let cleanup = flags & EBPF_MAP_OPERATION_MAP_CLEANUP != 0;
    assert_eq!(
        ebpf_ext_core_sim::in_epoch(),
        !cleanup,
        "{call} (flags {flags:#x}) inside the core's epoch: {}",
        ebpf_ext_core_sim::in_epoch()
    );
}
