//! Binary mode: a driver's built, signed `.sys` image, loaded into this process by
//! `ebpf-ext-pe-loader` with every import bound to usersim.
//!
//! Images are found at run time: `$EBPF_EXT_DRIVER_DIR`, else `target/driver` of the
//! workspace around the current directory (where `cargo ebpf-ext build` and
//! `cargo xtask build-drivers` write them).

use core::fmt::Write as _;
use std::path::{Path, PathBuf};

use ebpf_ext_pe_loader::{LoadedImage, load_file_parsed, usersim_image_flags, usersim_resolver};
use ebpf_ext_usersim::Kernel;
use sha2::{Digest as _, Sha256};

/// The variable that names the folder of the images (otherwise `target/driver` of the
/// workspace around the current directory).
pub const DRIVER_DIR_VAR: &str = "EBPF_EXT_DRIVER_DIR";

/// The variable that, set to anything but `0` or nothing, skips binary mode: tests that would
/// load an image run only the linked crate (and say so on stderr). `cargo xtask test-sample
/// --native-only` sets it; every other test command clears it, so a stray value cannot
/// skip what CI runs.
pub const NATIVE_ONLY_VAR: &str = "EBPF_EXT_NATIVE_ONLY";

/// Whether binary mode is skipped ([`NATIVE_ONLY_VAR`]); says so on stderr, naming `what`,
/// when it is.
#[must_use]
pub fn native_only(what: &str) -> bool {
    let skip = std::env::var_os(NATIVE_ONLY_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("{what}: binary mode skipped ({NATIVE_ONLY_VAR} is set)");
    }
    skip
}

/// Where the built images are: `$EBPF_EXT_DRIVER_DIR`, else `target/driver` of the workspace
/// that contains the current directory (found at run time, so a moved or copied checkout uses
/// its own images). Tests run in their package's folder, which is inside the workspace.
///
/// # Errors
/// If the variable is unset and no folder above the current one has a workspace `Cargo.toml`.
pub fn image_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(DRIVER_DIR_VAR) {
        return Ok(PathBuf::from(dir));
    }
    let here = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    workspace_around(&here)
        .map(|root| root.join("target").join("driver"))
        .ok_or_else(|| {
            format!(
                "no workspace above {}; set {DRIVER_DIR_VAR} to the folder of the .sys images",
                here.display()
            )
        })
}

/// The nearest folder at or above `dir` whose `Cargo.toml` has a `[workspace]` table: the
/// workspace cargo (and `cargo ebpf-ext build`, through `cargo metadata`) builds there, so a
/// repository of its own inside another workspace (`cargo ebpf-ext new --standalone`) finds
/// its own images, not the outer one's.
#[must_use]
pub fn workspace_around(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|m| m.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The SHA-256 of `bytes`, in lower-case hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// A loaded image and exactly which file it came from.
pub struct Loaded {
    /// The image, mapped and bound to usersim.
    pub image: LoadedImage,
    /// The absolute path it was read from.
    pub path: PathBuf,
    /// The SHA-256 of the bytes that were loaded.
    pub sha256: String,
}

/// Loads `<image_dir>/<name>.sys` (`name` is the package name with `-` as `_`); see
/// [`load_path`].
///
/// # Errors
/// If the image is missing (the message says where it looked and how to build it), is not
/// signed, or the loader refuses it.
pub fn load(kernel: &Kernel, name: &str) -> Result<Loaded, String> {
    load_path(kernel, &image_dir()?.join(format!("{name}.sys")))
}

/// A host function standing in for a kernel routine usersim does not implement: one a driver
/// declares in `[package.metadata.ebpf-ext.imports]`, which its image imports from `module`.
/// The image calls it with the Windows x64 convention, so it is an `extern "win64"` function
/// (on an x86-64 host): the driver's host stand-in, which its linked crate calls directly.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StandIn {
    /// The exporting module, as the image's import table names it (case is ignored).
    pub module: &'static str,
    /// The routine's name.
    pub name: &'static str,
    /// The function's address (`function as *const () as usize`).
    pub address: usize,
}

impl StandIn {
    /// `address` standing in for `module!name`.
    #[must_use]
    pub const fn new(module: &'static str, name: &'static str, address: usize) -> Self {
        StandIn {
            module,
            name,
            address,
        }
    }
}

/// [`load`] with `stand_ins` for the routines usersim does not implement (see [`StandIn`]).
///
/// # Errors
/// As [`load`]; an import neither usersim nor a stand-in provides is named.
pub fn load_with(kernel: &Kernel, name: &str, stand_ins: &[StandIn]) -> Result<Loaded, String> {
    load_path_with(kernel, &image_dir()?.join(format!("{name}.sys")), stand_ins)
}

/// Loads the image at `path`, binds its imports to usersim, and lets every kernel of the
/// process check the integrity-check flag of the loaded images
/// (`PsSetCreateProcessNotifyRoutineEx`, through
/// [`set_loader_image_flags`](ebpf_ext_usersim::set_loader_image_flags)): the image may run
/// under kernels other than `kernel`, as a fault sweep's. It also makes every kernel of the
/// process run the image's callbacks (dispatch routines, NMR, ETW and process notify callbacks,
/// work items) on a 24 KiB kernel stack
/// ([`set_callback_stack`](ebpf_ext_usersim::set_callback_stack)). The bytes are read once,
/// hashed, and those very bytes are loaded.
///
/// As Windows, it refuses an image without an Authenticode signature. Whether the signature
/// verifies is not checked here: `cargo ebpf-ext sign` verifies it when it signs.
///
/// # Errors
/// If the file cannot be read, is not signed, or the loader refuses it.
pub fn load_path(kernel: &Kernel, path: &Path) -> Result<Loaded, String> {
    load_path_with(kernel, path, &[])
}

/// [`load_path`] with `stand_ins` for the routines usersim does not implement.
///
/// # Errors
/// As [`load_path`].
pub fn load_path_with(
    kernel: &Kernel,
    path: &Path,
    stand_ins: &[StandIn],
) -> Result<Loaded, String> {
    load_path_resolving(kernel, path, &|module: &str, name: &str| {
        stand_ins
            .iter()
            .find(|s| s.module.eq_ignore_ascii_case(module) && s.name == name)
            .map(|s| s.address)
    })
}

/// [`load_path`] binding the imports usersim does not implement through `resolve` (module as
/// the image names it, routine name → the address of an `extern "win64"` function standing in
/// for it, or `None`), for stand-ins chosen at run time.
///
/// # Errors
/// As [`load_path`]; an import neither usersim nor `resolve` provides is named.
pub fn load_path_resolving(
    kernel: &Kernel,
    path: &Path,
    resolve: &dyn Fn(&str, &str) -> Option<usize>,
) -> Result<Loaded, String> {
    // The kernel the caller runs the image under: the loader needs none, as the image's
    // flags are checked on every kernel of the process. Kept so callers need no change.
    let _ = kernel;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e}; build and sign it first (cargo ebpf-ext build && cargo ebpf-ext sign; in the SDK's own workspace cargo xtask build-drivers && cargo xtask sign), or set {DRIVER_DIR_VAR} to the folder of the .sys images",
            path.display()
        )
    })?;
    let pe = ebpf_ext_pe_loader::parse(&bytes)
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    if pe.authenticode_signature().is_none() {
        return Err(format!(
            "{}: not signed; Windows loads no driver without an Authenticode signature (STATUS_INVALID_IMAGE_HASH, 0xC0000428). Sign it first (cargo ebpf-ext sign; in the SDK's own workspace cargo xtask sign)",
            path.display()
        ));
    }
    let resolver =
        |module: &str, name: &str| usersim_resolver(module, name).or_else(|| resolve(module, name));
    let image = load_file_parsed(&path, &pe, resolver)
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    ebpf_ext_pe_loader::use_usersim_irql();
    ebpf_ext_usersim::set_loader_image_flags(usersim_image_flags);
    ebpf_ext_usersim::set_callback_stack(ebpf_ext_pe_loader::usersim_callback_stack);
    Ok(Loaded {
        image,
        sha256: sha256_hex(&bytes),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_workspace_is_found_from_inside_it_at_run_time() {
        let here = std::env::current_dir().expect("cwd");
        let root = workspace_around(&here).expect("tests run inside the workspace");
        assert!(here.starts_with(&root));
        assert!(root.join("crates").join("ebpf-ext-testing").is_dir());
        assert_eq!(workspace_around(Path::new("/")), None);
    }

    #[test]
    fn a_workspace_inside_another_is_its_own() {
        let outer = tempfile::tempdir().expect("a folder of the test's own");
        let inner = outer.path().join("my-ext");
        let package = inner.join("src");
        std::fs::create_dir_all(&package).expect("folders");
        std::fs::write(
            outer.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n",
        )
        .expect("outer");
        std::fs::write(
            inner.join("Cargo.toml"),
            "[package]\nname = \"my-ext\"\n\n[workspace]\n",
        )
        .expect("inner");
        assert_eq!(
            workspace_around(&package).as_deref(),
            Some(inner.as_path()),
            "the nearest workspace"
        );
    }

    #[test]
    fn a_missing_image_names_where_it_looked() {
        let kernel = Kernel::new();
        let missing = Path::new("/nonexistent-ebpf-ext-testing/none.sys");
        let Err(error) = load_path(&kernel, missing) else {
            panic!("a missing file loads");
        };
        assert!(
            error.contains("/nonexistent-ebpf-ext-testing/none.sys"),
            "{error}"
        );
        assert!(error.contains("cargo ebpf-ext build"), "{error}");
    }
}
