//! `build-drivers`, `sign` and `package` on this workspace: cargo-ebpf-ext's library (one
//! implementation, the one `cargo ebpf-ext` runs on other workspaces).

use std::path::PathBuf;

use anyhow::Result;
use cargo_ebpf_ext::workspace::Workspace;

pub(crate) use cargo_ebpf_ext::drivers::{DRIVER_DIR_VAR, NATIVE_ONLY_VAR, sha256_hex};

use crate::exec::workspace_root;

/// This workspace, as cargo-ebpf-ext sees it.
fn workspace() -> Result<Workspace> {
    Workspace::find(Some(&workspace_root().join("Cargo.toml")))
}

/// Where the driver outputs go: `target/driver/`.
pub(crate) fn output_dir() -> PathBuf {
    workspace_root()
        .join("target")
        .join(cargo_ebpf_ext::drivers::PROFILE)
}

/// The packages `only` names (all when `None`).
fn selection(only: Option<&str>) -> Vec<String> {
    only.map(str::to_owned).into_iter().collect()
}

/// Builds every driver (or `only`), post-processes and checks the images. Returns the `.sys`
/// paths.
pub(crate) fn build_drivers(only: Option<&str>) -> Result<Vec<PathBuf>> {
    cargo_ebpf_ext::drivers::build(&workspace()?, &selection(only))
}

/// Test-signs every built driver, verifies it and checks it again.
pub(crate) fn sign() -> Result<Vec<PathBuf>> {
    cargo_ebpf_ext::drivers::sign(&workspace()?, &[])
}

/// Lays out `target/driver/<name>_package/` for every driver.
pub(crate) fn package() -> Result<Vec<PathBuf>> {
    cargo_ebpf_ext::drivers::package(&workspace()?, &[])
}
