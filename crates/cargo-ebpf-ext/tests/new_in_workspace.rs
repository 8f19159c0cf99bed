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

fn new_in(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-ebpf-ext"))
        .args(["ebpf-ext", "new"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cargo-ebpf-ext");
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
