//! The out-of-tree end-to-end test (`cargo xtask ci`): what a user of the SDK does, from a
//! tag. A bare git repository of this checkout gets a tag; `cargo-ebpf-ext` is installed
//! from it; `cargo ebpf-ext new`, run in a temporary folder outside this checkout, makes an
//! extension repository there that pins that tag; it is linted, tested with plain
//! `cargo test`, then built, signed, packaged, exported and tested in both modes. Nothing is
//! copied from this repository: the new repository gets everything through git and the tool.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::drivers::DRIVER_DIR_VAR;
use crate::exec::{run, workspace_root};
use crate::prereqs::{Tool, command};

/// The tag the test makes in its bare repository.
const TAG: &str = "v0.0.0-e2e";

/// `cargo ebpf-ext ARGS` with the freshly installed tool first on `PATH`, outside this
/// workspace's cargo settings.
fn cargo_ebpf_ext(tools: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = command(Tool::Cargo);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools.join("bin")];
    paths.extend(std::env::split_paths(&path));
    cmd.arg("ebpf-ext")
        .args(args)
        .env("PATH", std::env::join_paths(paths).unwrap_or(path))
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Runs the test: the bare repository and the installed tool under `target/e2e/` (made
/// afresh), the extension in a temporary folder outside this checkout (kept, and named, if
/// the test fails).
pub(crate) fn out_of_tree() -> Result<()> {
    let outside = tempfile::Builder::new()
        .prefix("ebpf-ext-e2e-")
        .tempdir()
        .context("a temporary folder for the new extension")?;
    let result = out_of_tree_in(outside.path());
    if result.is_err() {
        eprintln!(
            "e2e: the new extension is kept in {}",
            outside.keep().display()
        );
    }
    result
}

/// The `file://` URL of `path` as cargo writes it (in its install record, which the new
/// extension's pin comes from): the bytes the URL standard's path percent-encode set names
/// (controls, space, `"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`) and every non-ASCII byte as
/// `%XX`, the rest as they are. A checkout under a folder with a space gets `%20`.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            0..=0x20 | 0x7f.. | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                url.push('%');
                url.push(char::from(HEX[usize::from(byte >> 4)]));
                url.push(char::from(HEX[usize::from(byte & 0xF)]));
            }
            _ => url.push(char::from(*byte)),
        }
    }
    url
}

fn out_of_tree_in(outside: &Path) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("target").join("e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bare = dir.join("sdk.git");
    run(command(Tool::Git)
        .args(["clone", "--quiet", "--bare"])
        .arg(root)
        .arg(&bare))?;
    run(command(Tool::Git)
        .arg("--git-dir")
        .arg(&bare)
        .args(["tag", TAG, "HEAD"]))?;
    let url = file_url(&bare);
    let tools = dir.join("tools");
    run(command(Tool::Cargo)
        .args([
            "install", "--locked", "--debug", "--git", &url, "--tag", TAG,
        ])
        .arg("--root")
        .arg(&tools)
        .arg("cargo-ebpf-ext")
        .env("CARGO_TARGET_DIR", dir.join("install-target")))
    .context("cargo install of cargo-ebpf-ext from the tagged bare repository")?;
    let ext = outside.join("my-ext");
    // Run outside any workspace, `new` makes a repository of its own (no --standalone).
    run(cargo_ebpf_ext(&tools, &["new", "my-ext"]).current_dir(outside))?;
    let manifest = std::fs::read_to_string(ext.join("Cargo.toml"))?;
    if !manifest.contains(&format!("git = \"{url}\", tag = \"{TAG}\"")) {
        bail!("the new extension does not pin {url} at {TAG}:\n{manifest}");
    }
    let readme =
        std::fs::read_to_string(ext.join("README.md")).context("the new repository's README")?;
    if !readme.contains(&format!("--git {url} --tag {TAG} cargo-ebpf-ext")) {
        bail!("the new repository's README does not name the tool of its pin:\n{readme}");
    }
    // What a user types first: its lints hold, and the host tests pass.
    run(command(Tool::Cargo)
        .args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"])
        .current_dir(&ext)
        .env_remove("CARGO_TARGET_DIR"))
    .context("cargo clippy on the new extension (its template's lints)")?;
    run(command(Tool::Cargo)
        .arg("test")
        .current_dir(&ext)
        .env_remove("CARGO_TARGET_DIR"))
    .context("cargo test on the new extension")?;
    let manifest_path = ext.join("Cargo.toml").display().to_string();
    for step in [
        "build",
        "sign",
        "package",
        "export-program-info",
        "check",
        "test",
    ] {
        run(cargo_ebpf_ext(&tools, &[step, "--manifest-path", &manifest_path]).current_dir(&ext))
            .with_context(|| format!("cargo ebpf-ext {step} on the new extension"))?;
    }
    plain_cargo_test_runs_binary_mode(&ext)?;
    let package = ext.join("target").join("driver").join("my_ext_package");
    for file in [
        "my_ext.sys",
        "my_ext.inf",
        "my_ext.reg",
        "Install-my_ext.ps1",
        "EbpfExtLocalTestCert.cer",
    ] {
        if !package.join(file).is_file() {
            bail!("{} has no {file}", package.display());
        }
    }
    // Packaging ships the certificate the image was signed with: without the one `sign` used,
    // it refuses rather than make a new one the image does not verify against.
    let cert = ext.join("target").join("driver").join("cert");
    let moved = ext.join("target").join("driver").join("cert-moved");
    std::fs::rename(&cert, &moved)?;
    let refused = step_says(&tools, &ext, "package", false, "run the sign step first");
    std::fs::rename(&moved, &cert)?;
    refused.context("packaging without the signing certificate")?;
    // A workspace that pins another tag of the SDK than the tool's is refused, naming the
    // install line of the right tool (the check reads the manifest only: the tag need not
    // exist).
    let pinned_elsewhere =
        manifest.replace(&format!("tag = \"{TAG}\""), "tag = \"v9.9.9-e2e-other\"");
    std::fs::write(ext.join("Cargo.toml"), &pinned_elsewhere)?;
    let refused = check_says(&tools, &ext, false, "--tag v9.9.9-e2e-other cargo-ebpf-ext");
    std::fs::write(ext.join("Cargo.toml"), &manifest)?;
    refused.context("a workspace pinned at another tag")?;
    declared_import(&tools, &ext, &manifest)?;
    eprintln!(
        "e2e: cargo-ebpf-ext installed from {url} at {TAG}; a new extension outside the checkout linted, tested, built, signed, packaged, exported and tested in both modes (plain cargo test too, which fails on a broken image), refused once pinned at another tag, and built, checked, tested, packaged and exported again calling a kernel routine it declares"
    );
    Ok(())
}

/// Once the image is built and signed, plain `cargo test` runs the template's binary-mode test
/// too (it finds the image in `target/driver`) rather than saying it is skipped, and fails
/// when what lies there is no driver image.
fn plain_cargo_test_runs_binary_mode(ext: &Path) -> Result<()> {
    let test = || {
        command(Tool::Cargo)
            .args(["test", "--test", "both_modes", "--", "--nocapture"])
            .current_dir(ext)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove(DRIVER_DIR_VAR)
            .output()
            .context("run cargo test on the new extension")
    };
    let ran = test()?;
    let said = String::from_utf8_lossy(&ran.stderr);
    if !ran.status.success() || said.contains("binary mode skipped") {
        bail!("cargo test with a signed image should have run binary mode and passed:\n{said}");
    }
    let image = ext.join("target").join("driver").join("my_ext.sys");
    let signed = std::fs::read(&image)?;
    std::fs::write(&image, b"not a driver image")?;
    let ran = test();
    std::fs::write(&image, &signed)?;
    if ran?.status.success() {
        bail!(
            "cargo test passed with no driver image at {}",
            image.display()
        );
    }
    Ok(())
}

/// The module and routine the extension declares beyond the SDK's.
const DECLARED_MODULE: &str = "e2e_kernel.sys";
const DECLARED_ROUTINE: &str = "E2eKernelValue";
/// What the host stand-in returns, which the helper adds to the context's value.
const STAND_IN_VALUE: u64 = 0x2e2e;

/// The new extension calls a kernel routine the SDK does not declare, as a port of
/// netebpfext would call WFP: it declares it in `[package.metadata.ebpf-ext.imports]`, gives
/// host builds a stand-in, calls it from its helper, and is built, signed and tested in both
/// modes again (the image imports the routine, bound to the stand-in, and the helper returns
/// the stand-in's value in both), then packaged and exported (the export runs its
/// `DriverEntry` with the routine bound to a trap it never reaches). `check` passes the
/// image, listing the module; without the declaration it refuses it, naming the routine.
fn declared_import(tools: &Path, ext: &Path, manifest: &str) -> Result<()> {
    declare_and_call(ext)?;
    let manifest_path = ext.join("Cargo.toml").display().to_string();
    for step in ["build", "sign", "test", "package", "export-program-info"] {
        run(cargo_ebpf_ext(tools, &[step, "--manifest-path", &manifest_path]).current_dir(ext))
            .with_context(|| {
                format!("cargo ebpf-ext {step} on the extension that declares {DECLARED_MODULE}")
            })?;
    }
    // The tool's own reader lists the image's imports by module.
    check_says(tools, ext, true, &format!("{DECLARED_MODULE} (1)"))?;
    std::fs::write(ext.join("Cargo.toml"), manifest)?;
    check_says(
        tools,
        ext,
        false,
        &format!("imports {DECLARED_ROUTINE} from {DECLARED_MODULE}, which neither"),
    )
}

/// Runs `cargo ebpf-ext check` on the extension in `ext`; fails unless it succeeds exactly
/// when `passes` and says `expect` on stderr (where its notes and errors go).
fn check_says(tools: &Path, ext: &Path, passes: bool, expect: &str) -> Result<()> {
    step_says(tools, ext, "check", passes, expect)
}

/// [`check_says`] for any step of `cargo ebpf-ext`.
fn step_says(tools: &Path, ext: &Path, step: &str, passes: bool, expect: &str) -> Result<()> {
    let manifest_path = ext.join("Cargo.toml").display().to_string();
    let ran = cargo_ebpf_ext(tools, &[step, "--manifest-path", &manifest_path])
        .current_dir(ext)
        .output()
        .with_context(|| format!("run cargo ebpf-ext {step}"))?;
    let said = String::from_utf8_lossy(&ran.stderr);
    if ran.status.success() != passes || !said.contains(expect) {
        bail!(
            "cargo ebpf-ext {step} should have {} saying {expect:?}:\n{said}",
            if passes { "passed" } else { "failed" }
        );
    }
    Ok(())
}

/// Replaces each `(from, to)` once in the file at `path`; fails naming a `from` it lacks.
fn edit(path: &Path, edits: &[(String, String)]) -> Result<()> {
    let mut text = std::fs::read_to_string(path)?;
    for (from, to) in edits {
        if !text.contains(from.as_str()) {
            bail!("{} has no {from:?} to change", path.display());
        }
        text = text.replacen(from.as_str(), to, 1);
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// The declaration, the host stand-in and the call in the new extension, and a report that
/// carries what its helper returns.
fn declare_and_call(ext: &Path) -> Result<()> {
    edit(
        &ext.join("Cargo.toml"),
        &[(
            "\n[lib]\n".to_owned(),
            format!(
                "\n[package.metadata.ebpf-ext.imports]\n\"{DECLARED_MODULE}\" = [\"{DECLARED_ROUTINE}\"]\n\n[lib]\n"
            ),
        )],
    )?;
    edit(
        &ext.join("src").join("lib.rs"),
        &[(
            "fn get_value(context: &EventContext) -> u64 {\n    context.value\n}".to_owned(),
            format!(
                "#[cfg(target_os = \"windows\")]
unsafe extern \"win64\" {{
    /// A routine of `{DECLARED_MODULE}`, which the SDK does not declare.
    fn {DECLARED_ROUTINE}() -> u64;
}}

/// The host builds' stand-in for `{DECLARED_MODULE}!{DECLARED_ROUTINE}`: {STAND_IN_VALUE:#x}.
///
/// # Safety
/// None needed; `unsafe` as the kernel routine it stands for.
#[cfg(not(target_os = \"windows\"))]
#[expect(non_snake_case, reason = \"the kernel routine's name\")]
pub unsafe extern \"win64\" fn {DECLARED_ROUTINE}() -> u64 {{
    {STAND_IN_VALUE:#x}
}}

fn get_value(context: &EventContext) -> u64 {{
    // SAFETY: the routine takes no argument and may be called at any IRQL.
    context.value + unsafe {{ {DECLARED_ROUTINE}() }}
}}"
            ),
        )],
    )?;
    // The image binds the import to the stand-in, and the report gains what the helper
    // returns in each mode: through the image's import, the stand-in is called too.
    edit(
        &ext.join("tests").join("both_modes.rs"),
        &[
            (
                "image::load(&kernel, \"my_ext\")".to_owned(),
                format!(
                    "image::load_with(&kernel, \"my_ext\", &[image::StandIn::new(\"{DECLARED_MODULE}\", \"{DECLARED_ROUTINE}\", my_ext::{DECLARED_ROUTINE} as *const () as usize)])"
                ),
            ),
            (
                "    helpers: Vec<String>,\n}".to_owned(),
                "    helpers: Vec<String>,\n    value: u64,\n}".to_owned(),
            ),
            (
                "        helpers: opened.helpers.clone(),\n".to_owned(),
                "        helpers: opened.helpers.clone(),
        value: {
            let mut context = my_ext::EventContext {
                data_start: ebpf_extension_common::prelude::DataPointer::NULL,
                data_end: ebpf_extension_common::prelude::DataPointer::NULL,
                value: 5,
            };
            let address = opened.info.helpers[0].address.ok_or(\"no helper address\")?;
            // SAFETY: the helper's prototype: the context, which lives through the call.
            unsafe {
                ebpf_ext_testing::call_helper(address, [core::ptr::from_mut(&mut context) as u64, 0, 0, 0, 0])
            }
        },
"
                .to_owned(),
            ),
            (
                "    assert_eq!(report.helpers, [\"my_ext_get_value\"]);\n".to_owned(),
                format!(
                    "    assert_eq!(report.helpers, [\"my_ext_get_value\"]);\n    assert_eq!(report.value, 5 + {STAND_IN_VALUE:#x}, \"the stand-in was called\");\n"
                ),
            ),
            // The attached program returns what the helper returns, which now adds the
            // stand-in's value too.
            (
                "    assert_eq!(my_ext::fire(&mut [1, 2, 3], 42), Some(42));\n".to_owned(),
                format!(
                    "    assert_eq!(my_ext::fire(&mut [1, 2, 3], 42), Some(42 + {STAND_IN_VALUE:#x}));\n"
                ),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::file_url;

    #[test]
    fn a_file_url_encodes_what_cargo_encodes() {
        assert_eq!(file_url(Path::new("/srv/sdk.git")), "file:///srv/sdk.git");
        assert_eq!(
            file_url(Path::new("/home/me/my sdk/a clone/sdk.git")),
            "file:///home/me/my%20sdk/a%20clone/sdk.git"
        );
        assert_eq!(
            file_url(Path::new("/a#b?c{d}/é+~@")),
            "file:///a%23b%3Fc%7Bd%7D/%C3%A9+~@"
        );
    }
}
