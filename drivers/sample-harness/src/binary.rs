//! Binary mode: the samples' signed `.sys` images (`cargo xtask build-drivers` + `sign`),
//! loaded into this process by `ebpf-ext-pe-loader` with every import bound to usersim.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use ebpf_ext_pe_loader::{LoadedImage, load_file, usersim_resolver};
use ebpf_ext_usersim::Kernel;

/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`.
const FORCE_INTEGRITY: u16 = 0x0080;

/// Loaded images: (start, end, FORCE_INTEGRITY), for usersim's integrity check of
/// `PsSetCreateProcessNotifyRoutineEx`.
static IMAGES: Mutex<Vec<(usize, usize, bool)>> = Mutex::new(Vec::new());

fn image_flags(address: usize) -> Option<bool> {
    IMAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|&&(start, end, _)| (start..end).contains(&address))
        .map(|&(_, _, integrity)| integrity)
}

/// Where the built images are: `$EBPF_EXT_DRIVER_DIR`, else the workspace's `target/driver`.
#[must_use]
pub fn image_dir() -> PathBuf {
    std::env::var_os("EBPF_EXT_DRIVER_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/driver"),
        PathBuf::from,
    )
}

/// Loads `target/driver/<name>.sys`, binds its imports to usersim, and tells `kernel` which
/// addresses belong to it (so the integrity-check flag is honoured).
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
    IMAGES.lock().unwrap_or_else(PoisonError::into_inner).push((
        image.base(),
        image.base() + image.size(),
        image.dll_characteristics() & FORCE_INTEGRITY != 0,
    ));
    kernel.set_image_flags_lookup(Some(image_flags));
    Ok(image)
}

/// Forgets an image before it is unmapped.
pub fn unload_sample(image: LoadedImage) {
    IMAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|&(start, _, _)| start != image.base());
    image.unload();
}
