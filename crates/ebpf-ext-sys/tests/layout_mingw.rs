//! Cross-checks the Rust layouts against the mingw-w64 DDK headers: for every type those
//! headers define, `_Static_assert`s of our size, alignment and field offsets are compiled
//! with `x86_64-w64-mingw32-gcc`. A mismatch fails compilation and this test, naming the
//! field. (The eBPF and NMR types are not in mingw-w64; their numbers are asserted at compile
//! time in `ebpf_ext_sys::layout` against the reference.)

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, Ordering};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

use ebpf_ext_sys::layout::{LAYOUTS, TypeLayout};

const COMPILER: &str = "x86_64-w64-mingw32-gcc";

/// The mingw-w64 `ddk` include directory (its headers include each other by bare name).
fn ddk_include_dir() -> PathBuf {
    let output = Command::new(COMPILER)
        .args(["-xc", "-E", "-v", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{COMPILER} is required (Debian: gcc-mingw-w64-x86-64 and mingw-w64-x86-64-dev): {e}"));
    let text = String::from_utf8_lossy(&output.stderr);
    text.lines()
        .map(str::trim)
        .map(PathBuf::from)
        .find(|p| p.join("ddk").join("wdm.h").is_file())
        .map(|p| p.join("ddk"))
        .expect("mingw-w64 DDK headers (ddk/wdm.h) on the compiler's include path")
}

fn assertions(types: &[TypeLayout]) -> String {
    let mut c = String::from("#include <ntifs.h>\n#include <stddef.h>\n\n");
    for t in types {
        let name = t.c.expect("C name");
        if t.c_size {
            writeln!(
                c,
                "_Static_assert(sizeof({name}) == {}, \"sizeof({name}) is {}\");",
                t.size, t.size
            )
            .unwrap();
            writeln!(
                c,
                "_Static_assert(_Alignof({name}) == {}, \"_Alignof({name}) is {}\");",
                t.align, t.align
            )
            .unwrap();
        }
        for f in t.fields {
            writeln!(
                c,
                "_Static_assert(offsetof({name}, {}) == {}, \"{name}.{} at offset {:#x}\");",
                f.c, f.offset, f.c, f.offset
            )
            .unwrap();
        }
    }
    c
}

/// A directory of its own for one compilation, removed when dropped. Tests of one process run
/// in parallel threads (plain `cargo test`), so the name is unique per call, not per process:
/// the process id, a per-process counter and the caller's name, created with `create_dir`
/// (which fails rather than share a directory that already exists).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("ebpf-ext-layout-{}-{n}-{name}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return ScratchDir(dir),
                // Left over from an earlier process with the same id: take the next number.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => panic!("create {}: {e}", dir.display()),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles `source` (the assertions) in a scratch directory named after `name`.
fn compile(name: &str, source: &str) -> Result<(), String> {
    let dir = ScratchDir::new(name);
    let file = dir.0.join("layout.c");
    std::fs::write(&file, source).unwrap();
    let output = Command::new(COMPILER)
        .arg("-I")
        .arg(ddk_include_dir())
        .args(["-fsyntax-only", "-c"])
        .arg(&file)
        .output()
        .expect("run the mingw-w64 compiler");
    drop(dir);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn checked_types() -> Vec<TypeLayout> {
    LAYOUTS.iter().filter(|t| t.c.is_some()).copied().collect()
}

#[test]
fn layouts_match_mingw_headers() {
    let types = checked_types();
    assert!(
        types.len() >= 15,
        "expected the kernel types to be checked, found {}",
        types.len()
    );
    let fields: usize = types.iter().map(|t| t.fields.len()).sum();
    compile("layouts_match_mingw_headers", &assertions(&types))
        .unwrap_or_else(|errors| panic!("layout differs from the mingw-w64 headers:\n{errors}"));
    println!(
        "checked {} types and {fields} field offsets against mingw-w64",
        types.len()
    );
}

/// The check can fail: a deliberately wrong offset is rejected by the compiler with the
/// field named in the message.
#[test]
fn a_wrong_offset_is_caught() {
    let mut types = checked_types();
    let irp = types
        .iter_mut()
        .find(|t| t.c == Some("IRP"))
        .expect("IRP is checked");
    let mut fields = irp.fields.to_vec();
    let stack = fields
        .iter_mut()
        .find(|f| f.c == "Tail.Overlay.CurrentStackLocation")
        .expect("field checked");
    stack.offset += 8;
    irp.fields = Box::leak(fields.into_boxed_slice());
    let errors = compile("a_wrong_offset_is_caught", &assertions(&types))
        .expect_err("a wrong offset must not compile");
    assert!(
        errors.contains("IRP.Tail.Overlay.CurrentStackLocation at offset 0xc0"),
        "{errors}"
    );
}
