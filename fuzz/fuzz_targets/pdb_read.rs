//! The PE loader's PDB reader: `ebpf_ext_pe_loader::Pdb::read` on arbitrary bytes, which
//! `load_file` runs on whatever `.pdb` lies beside an image.
//!
//! Properties checked besides "no panic, no out-of-bounds read": reading is deterministic (the
//! same bytes give the same GUID, ages and procedures); a PDB matches no CodeView record of
//! another GUID.
//!
//! The `pdb` crate that `Pdb::read` uses panics on some malformed files (arithmetic overflow
//! on sizes it reads); `Pdb::read` catches those panics and returns an error. libFuzzer's panic
//! hook would abort on them first, so this target lets a panic whose location is in the `pdb`
//! crate unwind (to be caught); every other panic still aborts, and `Pdb::read` must then
//! return an error for that input.
//!
//! Seed: `seeds/pdb_read/two-functions.pdb`, the PDB of a two-function DLL (`clang
//! --target=x86_64-pc-windows-msvc -g -gcodeview -c`, then `lld-link /dll /noentry
//! /nodefaultlib /debug`).
#![no_main]

mod common;

use ebpf_ext_pe_loader::Pdb;
use ebpf_ext_pe_loader::pe::CodeView;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

/// Lets a panic raised in the `pdb` crate's source unwind to `Pdb::read`; any other panic goes
/// to the hook installed before (libFuzzer's, which aborts).
fn let_pdb_crate_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_pdb_crate = info
                .location()
                .is_some_and(|at| at.file().replace('\\', "/").contains("/pdb-0.8."));
            if !in_pdb_crate {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|bytes: &[u8]| {
    let_pdb_crate_panics_unwind();
    let read = Pdb::read(bytes);
    if common::verbose() {
        eprintln!("read: {read:?}");
    }
    assert_eq!(read, Pdb::read(bytes), "two reads of the same bytes differ");
    let Ok(pdb) = read else {
        return;
    };
    for (_, name) in pdb.functions() {
        assert!(!name.contains('\0'), "a name with a NUL: {name:?}");
    }
    // Whatever the PDB's GUID, one of these two differs from it.
    let matched = [[0; 16], [0xFF; 16]]
        .into_iter()
        .filter(|&guid| {
            pdb.matches(&CodeView {
                guid,
                age: 1,
                path: String::new(),
            })
        })
        .count();
    assert!(matched <= 1, "one PDB matched two GUIDs");
});
