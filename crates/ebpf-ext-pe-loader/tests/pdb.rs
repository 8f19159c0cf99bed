//! The PDB reader: identity and procedures of a real PDB (the `pdb_read` fuzz target's seed,
//! the PDB lld-link wrote for a DLL of two functions, `f` and `g`), matching against CodeView
//! records, and malformed files refused with an error.

use ebpf_ext_pe_loader::pe::CodeView;
use ebpf_ext_pe_loader::{Error, Pdb};

const SEED: &[u8] = include_bytes!("../../../fuzz/seeds/pdb_read/two-functions.pdb");

/// Start of the DBI stream's header in [`SEED`] (found by its signature, -1 then 19990903).
fn dbi_header(bytes: &[u8]) -> usize {
    let signature = [0xFF, 0xFF, 0xFF, 0xFF, 0x77, 0x09, 0x31, 0x01];
    bytes
        .windows(signature.len())
        .position(|w| w == signature)
        .expect("the DBI stream's header")
}

#[test]
fn a_pdb_gives_its_procedures_and_identity() {
    let pdb = Pdb::read(SEED).expect("reads");
    let mut names: Vec<&str> = pdb.functions().iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["f", "g"]);
    assert!(
        pdb.functions().iter().all(|&(rva, _)| rva >= 0x1000),
        "RVAs in a section"
    );
    assert_ne!(pdb.guid(), [0; 16]);
    let header = dbi_header(SEED);
    let dbi_age = u32::from_le_bytes(SEED[header + 8..header + 12].try_into().unwrap());
    assert_eq!(pdb.age(), dbi_age, "the DBI stream's age");
}

#[test]
fn a_pdb_matches_only_its_guid_and_age() {
    let pdb = Pdb::read(SEED).expect("reads");
    let image = |guid: [u8; 16], age: u32| CodeView {
        guid,
        age,
        path: "seed.pdb".to_owned(),
    };
    assert!(pdb.matches(&image(pdb.guid(), pdb.age())));
    let mut other = pdb.guid();
    other[15] ^= 0x80;
    assert!(!pdb.matches(&image(other, pdb.age())), "another GUID");
    assert!(
        !pdb.matches(&image(pdb.guid(), pdb.age() + 1)),
        "a later age"
    );
    assert!(
        !pdb.matches(&image(pdb.guid(), pdb.age() - 1)),
        "an earlier age"
    );
}

#[test]
fn malformed_pdbs_are_errors() {
    for len in [0, 32, 4096, SEED.len() / 2, SEED.len() - 4096] {
        assert!(
            matches!(Pdb::read(&SEED[..len]), Err(Error::Pdb(_))),
            "a prefix of {len} bytes"
        );
    }
    assert!(matches!(Pdb::read(&[0x5A; 8192]), Err(Error::Pdb(_))));
}

#[test]
fn a_pdb_the_pdb_crate_panics_on_is_an_error() {
    // DBI substream sizes whose sum overflows a u32: the `pdb` crate's arithmetic overflows
    // (a panic where overflow is checked, which the workspace's manifest keeps on for that
    // crate in release builds too).
    let mut bytes = SEED.to_vec();
    let header = dbi_header(&bytes);
    bytes[header + 40..header + 44].copy_from_slice(&0xFFFF_FFF0_u32.to_le_bytes());
    let Err(Error::Pdb(message)) = Pdb::read(&bytes) else {
        panic!("a PDB with overflowing substream sizes was read");
    };
    assert!(message.contains("panicked"), "{message}");
}
