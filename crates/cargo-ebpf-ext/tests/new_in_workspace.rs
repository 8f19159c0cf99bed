//! `cargo ebpf-ext new NAME` inside an existing workspace adds a driver crate as a member of
//! it, pinning the SDK as the workspace does, instead of making a repository of its own.

use std::path::Path;

use cargo_ebpf_ext::prereqs::{Tool, command};
use serde_json::Value;

/// A workspace with one member that pins the SDK by git tag.
fn workspace(root: &Path) {
    let member = root.join("crates").join("existing");
    std::fs::create_dir_all(member.join("src")).expect("member folder");
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\n    \"crates/existing\",\n]\nresolver = \"3\"\n",
    )
    .expect("root manifest");
    std::fs::write(root.join(".gitignore"), "/target\n").expect(".gitignore");
    std::fs::write(
        member.join("Cargo.toml"),
        "[package]\nname = \"existing\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nebpf-extension-common = { git = \"https://example.invalid/sdk\", tag = \"v7.0.0\" }\n",
    )
    .expect("member manifest");
    std::fs::write(member.join("src").join("lib.rs"), "").expect("lib.rs");
}

fn run_new(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cargo-ebpf-ext"))
        .args(["ebpf-ext", "new"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cargo-ebpf-ext")
}

fn new_in(dir: &Path, args: &[&str]) {
    let output = run_new(dir, args);
    assert!(
        output.status.success(),
        "cargo ebpf-ext new {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cargo metadata --no-deps` of the workspace (no SDK download: a full build is not needed).
fn metadata(root: &Path) -> Value {
    let output = command(Tool::Cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON")
}

#[test]
fn new_inside_a_workspace_adds_a_member_pinned_as_the_workspace_pins_the_sdk() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let root = tmp.path().canonicalize().expect("canonical root");
    workspace(&root);
    // From inside a member's folder, as a user would be.
    new_in(&root.join("crates").join("existing"), &["my-ext"]);

    let member = root.join("drivers").join("my-ext");
    let json = metadata(&root);
    let names: Vec<&str> = json["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"my-ext"), "{names:?}");
    assert!(names.contains(&"existing"), "{names:?}");
    let workspace_root = json["workspace_root"].as_str().expect("workspace_root");
    assert_eq!(Path::new(workspace_root), root);

    let manifest = std::fs::read_to_string(member.join("Cargo.toml")).expect("member manifest");
    assert!(
        manifest.contains(
            r#"ebpf-extension-common = { git = "https://example.invalid/sdk", tag = "v7.0.0" }"#
        ),
        "{manifest}"
    );
    assert!(!manifest.contains("[workspace]"), "{manifest}");
    assert!(!member.join(".gitignore").exists());
    assert!(member.join("my_ext.inx").is_file());
    let root_manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    assert_eq!(
        root_manifest.matches("\"drivers/my-ext\"").count(),
        1,
        "{root_manifest}"
    );

    // A second one at a path of its choosing; the first stays.
    new_in(&root, &["other-ext", "--path", "extensions/other"]);
    let json = metadata(&root);
    let count = json["workspace_members"].as_array().expect("members").len();
    assert_eq!(count, 3, "{json}");
}

#[test]
fn new_outside_a_workspace_or_standalone_makes_a_repository_of_its_own() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let root = tmp.path().canonicalize().expect("canonical root");
    workspace(&root);
    let before = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    new_in(
        &root,
        &[
            "solo",
            "--standalone",
            "--sdk-git",
            "https://example.invalid/sdk",
            "--sdk-tag",
            "v7.0.0",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest"),
        before
    );
    let json = metadata(&root.join("solo"));
    let workspace_root = json["workspace_root"].as_str().expect("workspace_root");
    assert_eq!(Path::new(workspace_root), root.join("solo"));
}

/// Paths through a symbolic link: a `--path` under a link to the workspace still makes a
/// member of it, and an `--sdk-path` dependency written for a folder reached through a link
/// resolves where cargo reads it. A folder that is no SDK checkout is refused before anything
/// is written.
#[cfg(unix)]
#[test]
fn paths_through_symbolic_links_name_the_folders_on_disk() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let base = tmp.path().canonicalize().expect("canonical folder");
    let root = base.join("realws");
    workspace(&root);
    std::os::unix::fs::symlink(&root, base.join("wslink")).expect("link to the workspace");
    let before = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    let through_link = base.join("wslink").join("drivers").join("x");
    new_in(
        &root,
        &["x", "--path", through_link.to_str().expect("UTF-8")],
    );
    let after = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    assert_ne!(after, before, "listed as a member");
    assert!(after.contains("\"drivers/x\""), "{after}");
    assert!(!root.join("drivers").join("x").join(".gitignore").exists());

    // A stand-in checkout: the facade's manifest is what `--sdk-path` looks for.
    let sdk = base.join("sdk");
    let facade = sdk.join("crates").join("ebpf-extension-common");
    std::fs::create_dir_all(facade.join("src")).expect("facade folder");
    std::fs::write(
        facade.join("Cargo.toml"),
        "[package]\nname = \"ebpf-extension-common\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )
    .expect("facade manifest");
    std::fs::write(facade.join("src").join("lib.rs"), "").expect("lib.rs");
    let deep = base.join("deep").join("a").join("b");
    std::fs::create_dir_all(&deep).expect("deep folder");
    std::os::unix::fs::symlink(&deep, base.join("link")).expect("link to the deep folder");
    let ext = base.join("link").join("my-ext");
    new_in(
        &base,
        &[
            "my-ext",
            "--standalone",
            "--path",
            ext.to_str().expect("UTF-8"),
            "--sdk-path",
            sdk.to_str().expect("UTF-8"),
        ],
    );
    let manifest = std::fs::read_to_string(ext.join("Cargo.toml")).expect("manifest");
    let written = manifest
        .lines()
        .find_map(|l| l.strip_prefix("ebpf-extension-common = { path = \""))
        .and_then(|l| l.strip_suffix("\" }"))
        .expect("a path dependency on the facade");
    assert_eq!(
        deep.join("my-ext").join(written).canonicalize().ok(),
        facade.canonicalize().ok(),
        "{written} from where the extension lies"
    );

    let refused = run_new(
        &base,
        &[
            "other",
            "--standalone",
            "--sdk-path",
            root.to_str().expect("UTF-8"),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a checkout of the SDK"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!base.join("other").exists(), "nothing written");
}

/// A clone of an empty repository (a folder with only `.git`) takes a new extension; a folder
/// that holds anything else is refused, and nothing in it changes.
#[test]
fn new_fills_an_empty_clone_and_refuses_a_folder_in_use() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let base = tmp.path().canonicalize().expect("canonical folder");
    let pin = [
        "--standalone",
        "--sdk-git",
        "https://example.invalid/sdk",
        "--sdk-tag",
        "v7.0.0",
    ];
    let clone = base.join("clone");
    std::fs::create_dir_all(clone.join(".git")).expect("an empty clone");
    let args = [&["my-ext", "--path", "."][..], &pin[..]].concat();
    new_in(&clone, &args);
    assert!(clone.join("Cargo.toml").is_file());
    assert!(clone.join(".git").is_dir(), "the clone's .git stays");

    let used = base.join("used");
    std::fs::create_dir_all(&used).expect("folder");
    std::fs::write(used.join("notes.txt"), "mine").expect("a file");
    let args = [&["my-ext", "--path", "used"][..], &pin[..]].concat();
    let refused = run_new(&base, &args);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("holds notes.txt"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&used).expect("folder").count(),
        1,
        "nothing written"
    );
}
