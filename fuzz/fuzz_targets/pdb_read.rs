//! The PE loader's PDB reader: `ebpf_ext_pe_loader::Pdb::read` on arbitrary bytes, which
//! `load_file` runs on whatever `.pdb` lies beside an image.
//!
//! Properties checked besides "no panic, no out-of-bounds read": reading is deterministic (the
//! same bytes give the same GUID, ages and procedures); a PDB matches a CodeView record of its
//! own GUID and age, none of another GUID, and none of a later age; no procedure name holds a
//! NUL.
//!
//! The `pdb` crate that `Pdb::read` uses panics on some malformed files (arithmetic overflow
//! on sizes it reads); `Pdb::read` catches those panics and returns an error. libFuzzer's panic
//! hook would abort on them first, so this target lets a panic whose location is in the `pdb`
//! crate unwind (to be caught); every other panic still aborts, and `Pdb::read` must then
//! return an error for that input.
//!
//! Seed: `seeds/pdb_read/two-functions.pdb`, the PDB of a DLL of two functions, made from
//! `int f(int x){return x+1;} int g(int x){return f(x)*2;}` in `a.c` by `clang -cc1 -triple
//! x86_64-pc-windows-msvc -emit-obj -gcodeview -debug-info-kind=constructor -O1
//! -fdebug-compilation-dir=. -fcoverage-compilation-dir=. -o a.obj a.c`, then, beside
//! `a.obj`, `lld-link /dll /noentry /nodefaultlib /debug /pdb:two-functions.pdb
//! /pdbaltpath:two-functions.pdb /pdbsourcepath:/seed /out:two-functions.dll a.obj /export:g`
//! (the `-cc1` and `/pdbsourcepath` keep the building machine's paths out of it).
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
    let own = CodeView {
        guid: pdb.guid(),
        age: pdb.age(),
        path: String::new(),
    };
    assert!(
        pdb.matches(&own),
        "a PDB does not match its own GUID and age"
    );
    let mut other_guid = own.clone();
    other_guid.guid[0] ^= 1;
    assert!(!pdb.matches(&other_guid), "a PDB matches another GUID");
    let other_age = CodeView {
        age: own.age.wrapping_add(1),
        ..own
    };
    // A later age never matches (an age that wraps around to 0 is not later).
    assert!(
        !pdb.matches(&other_age) || own.age.wrapping_add(1) <= pdb.age(),
        "a PDB matches a later age"
    );
});
