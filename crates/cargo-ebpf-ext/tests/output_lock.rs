//! Two commands on one workspace's driver outputs run one after the other: each takes
//! [`Workspace::lock_output`] first, and one that finds it held says so and waits.

use core::time::Duration;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use cargo_ebpf_ext::workspace::Workspace;

/// A workspace without drivers: every command fails at once, after taking the hold.
fn workspace(root: &Path) -> Workspace {
    let tool = root.join("tool");
    std::fs::create_dir_all(tool.join("src")).expect("member folder");
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"tool\"]\nresolver = \"3\"\n",
    )
    .expect("root manifest");
    std::fs::write(
        tool.join("Cargo.toml"),
        "[package]\nname = \"tool\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )
    .expect("member manifest");
    std::fs::write(tool.join("src").join("lib.rs"), "").expect("lib.rs");
    Workspace::find(Some(&root.join("Cargo.toml"))).expect("the workspace")
}

/// Long enough for a waiter that is not excluded to get the hold on a loaded machine; a
/// slower machine can only make the test pass when it should not, never fail when it should
/// pass.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a waiter may take once the hold is released, or a command to report waiting.
const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn a_second_hold_waits_for_the_first() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ws = workspace(dir.path());
    let first = ws.lock_output().expect("first hold");
    assert!(ws.output_dir().join(".lock").is_file());
    let (held, got) = mpsc::channel();
    let waiter = {
        let ws = ws.clone();
        thread::spawn(move || {
            let second = ws.lock_output().expect("second hold");
            held.send(()).expect("report");
            drop(second);
        })
    };
    assert!(
        got.recv_timeout(SETTLE).is_err(),
        "a second hold was granted while the first was held"
    );
    drop(first);
    got.recv_timeout(PATIENCE)
        .expect("the second hold, once the first was dropped");
    waiter.join().expect("waiter");
    let again = ws.lock_output().expect("a hold after both dropped");
    drop(again);
}

/// Runs `cargo ebpf-ext <command>` on the workspace while the test holds its outputs: the
/// command must report that it waits, still be running, and finish once the hold is dropped.
fn waits_while_held(root: &Path, ws: &Workspace, command: &str) {
    let held = ws.lock_output().expect("hold");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cargo-ebpf-ext"))
        .args(["ebpf-ext", command, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo-ebpf-ext");
    let stderr = child.stderr.take().expect("stderr");
    let (line_tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(PATIENCE) {
            Ok(line) if line.contains("waiting for another command") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("`{command}` did not report waiting for the held outputs: {seen:?}");
            }
        }
    }
    thread::sleep(SETTLE);
    assert!(
        child.try_wait().expect("poll").is_none(),
        "`{command}` went on while the outputs were held"
    );
    drop(held);
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        !status.success() && rest.iter().any(|l| l.contains("no driver package")),
        "`{command}` should have gone on to find no driver: {status}, {rest:?}"
    );
}

#[test]
fn every_command_on_the_outputs_takes_the_hold() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ws = workspace(dir.path());
    for command in [
        "build",
        "sign",
        "package",
        "check",
        "test",
        "export-program-info",
    ] {
        waits_while_held(dir.path(), &ws, command);
    }
}
