//! Binary mode: the samples' signed `.sys` images (`cargo xtask build-drivers` + `sign`),
//! loaded into this process by `ebpf-ext-pe-loader` with every import bound to usersim.

use std::path::PathBuf;

use ebpf_ext_pe_loader::{LoadedImage, load_file, usersim_image_flags, usersim_resolver};
use ebpf_ext_usersim::Kernel;

/// Where the built images are: `$EBPF_EXT_DRIVER_DIR`, else the workspace's `target/driver`.
#[must_use]
pub fn image_dir() -> PathBuf {
    std::env::var_os("EBPF_EXT_DRIVER_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/driver"),
        PathBuf::from,
    )
}

/// Loads `target/driver/<name>.sys`, binds its imports to usersim, and lets `kernel` check
/// the integrity-check flag of the loaded images (`PsSetCreateProcessNotifyRoutineEx`).
///
/// # Errors
/// If the image is missing (build it with `cargo xtask build-drivers` and `cargo xtask sign`)
/// or the loader refuses it.
pub fn load_sample(kernel: &Kernel, name: &str) -> Result<LoadedImage, String> {
    let path = image_dir().join(format!("{name}.sys"));
    if !path.is_file() {
        return Err(format!(
            "{} is missing: build and sign the samples first (cargo xtask build-drivers && cargo xtask sign)",
            path.display()
        ));
    }
    let image = load_file(&path, usersim_resolver)
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    ebpf_ext_pe_loader::use_usersim_irql();
    kernel.set_image_flags_lookup(Some(usersim_image_flags));
    Ok(image)
}
