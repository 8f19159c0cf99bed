//! Binary mode: the samples' signed `.sys` images (`cargo xtask build-drivers` + `sign`),
//! loaded into this process by `ebpf-ext-pe-loader` with every import bound to usersim.
//! The loading itself is `ebpf_ext_testing::image`'s; this module keeps the samples' names.

use ebpf_ext_pe_loader::LoadedImage;
use ebpf_ext_usersim::Kernel;

pub use ebpf_ext_testing::image::{
    DRIVER_DIR_VAR, NATIVE_ONLY_VAR, image_dir, native_only, sha256_hex,
};

/// A loaded sample image and exactly which file it came from.
pub type Sample = ebpf_ext_testing::image::Loaded;

/// Loads `<image_dir>/<name>.sys`, binds its imports to usersim, and lets `kernel` check the
/// integrity-check flag of the loaded images (`PsSetCreateProcessNotifyRoutineEx`). The bytes
/// are read once, hashed, and those very bytes are loaded.
///
/// # Errors
/// If the image is missing (build it with `cargo xtask build-drivers` and `cargo xtask sign`)
/// or the loader refuses it.
pub fn load_sample_file(kernel: &Kernel, name: &str) -> Result<Sample, String> {
    ebpf_ext_testing::image::load(kernel, name)
}

/// [`load_sample_file`], keeping only the image.
///
/// # Errors
/// As [`load_sample_file`].
pub fn load_sample(kernel: &Kernel, name: &str) -> Result<LoadedImage, String> {
    load_sample_file(kernel, name).map(|s| s.image)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_samples_images_are_looked_for_in_this_workspace() {
        let dir = super::image_dir().expect("tests run inside the workspace");
        if let Some(chosen) = std::env::var_os(super::DRIVER_DIR_VAR) {
            assert_eq!(
                dir,
                std::path::PathBuf::from(chosen),
                "the directory the variable names"
            );
        } else {
            assert!(dir.ends_with("target/driver"), "{}", dir.display());
            assert!(
                dir.parent()
                    .and_then(|t| t.parent())
                    .is_some_and(|root| root.join("drivers").join("sample-harness").is_dir())
            );
        }
    }
}
