//! Property test: `parse` and `load` never panic (nor read or write out of bounds) on mutated
//! images — random byte flips, truncations, and random values in header fields. Mutated images
//! are loaded with every import bound to a dummy function, but never called.

mod support;

use ebpf_ext_pe_loader::{load, parse};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use support::{Built, DIRS, FILE_HEADER, OPT, Spec, build, resolve_all_to};

extern "win64" fn dummy() {}

/// The images mutated: the default one, one without exports, one with an extra HIGHLOW
/// relocation.
fn bases() -> Vec<Built> {
    let no_exports = Spec {
        exports: false,
        ..Spec::default()
    };
    let highlow = Spec {
        extra_relocations: vec![0x3008],
        ..Spec::default()
    };
    vec![build(&Spec::default()), build(&no_exports), build(&highlow)]
}

/// `(offset, width)` of every structured field the parser reads.
fn fields(built: &Built) -> Vec<(usize, usize)> {
    let mut fields = vec![(0, 2), (0x3C, 4)];
    fields.extend([(0, 2), (2, 2), (16, 2), (18, 2)].map(|(o, w)| (FILE_HEADER + o, w)));
    fields.extend(
        [
            (0, 2),
            (16, 4),
            (24, 8),
            (32, 4),
            (36, 4),
            (56, 4),
            (60, 4),
            (68, 2),
            (108, 4),
        ]
        .map(|(o, w)| (OPT + o, w)),
    );
    fields.extend((0..32).map(|i| (DIRS + i * 4, 4)));
    for section in 0..4 {
        let header = Built::section_header(section);
        fields.extend([8, 12, 16, 20, 36].map(|o| (header + o, 4)));
    }
    fields.extend((0..15).map(|i| (built.import_descriptors + i * 4, 4)));
    for &ilt in &built.ilts {
        fields.extend((0..4).map(|i| (ilt + i * 8, 8)));
    }
    fields.extend([(built.reloc_block, 4), (built.reloc_block + 4, 4)]);
    fields.extend((0..4).map(|i| (built.reloc_block + 8 + i * 2, 2)));
    fields.extend((0..12).map(|i| (built.pdata + i * 4, 4)));
    if let Some(export) = built.export_directory {
        fields.extend((3..10).map(|i| (export + i * 4, 4)));
    }
    fields
}

#[derive(Debug, Clone)]
enum Value {
    Absolute(u64),
    Delta(i32),
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: Index, xor: u8 },
    Field { field: Index, value: Value },
    Truncate(Index),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Absolute(0)),
        Just(Value::Absolute(u64::MAX)),
        Just(Value::Absolute(0x8000_0000_0000_0000)),
        Just(Value::Absolute(u64::from(u32::MAX))),
        (0_u64..0x2_0000).prop_map(Value::Absolute),
        any::<u64>().prop_map(Value::Absolute),
        (-0x2000_i32..0x2000).prop_map(Value::Delta),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1_u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        5 => (any::<Index>(), value()).prop_map(|(field, value)| Mutation::Field { field, value }),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, fields: &[(usize, usize)], mutation: &Mutation) {
    match mutation {
        Mutation::Flip { at, xor } => {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] ^= xor;
            }
        }
        Mutation::Truncate(at) => {
            let len = at.index(bytes.len() + 1);
            bytes.truncate(len);
        }
        Mutation::Field { field, value } => {
            let (at, width) = fields[field.index(fields.len())];
            let Some(slot) = bytes.get_mut(at..at + width) else {
                return;
            };
            let mut current = [0_u8; 8];
            current[..width].copy_from_slice(slot);
            let current = u64::from_le_bytes(current);
            let new = match value {
                Value::Absolute(v) => *v,
                Value::Delta(d) => current.wrapping_add_signed(i64::from(*d)),
            };
            slot.copy_from_slice(&new.to_le_bytes()[..width]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_images_never_panic(
        base in 0_usize..3,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let bases = bases();
        let built = &bases[base];
        let fields = fields(built);
        let mut bytes = built.bytes.clone();
        for mutation in &mutations {
            apply(&mut bytes, &fields, mutation);
        }
        let parsed = parse(&bytes);
        let loaded = load("mutant.sys", &bytes, resolve_all_to(dummy as *const () as usize));
        // Whatever parse decides, load decides the same about the file's validity.
        if let Err(error) = &parsed {
            prop_assert_eq!(loaded.as_ref().err(), Some(error));
        }
        if let Ok(image) = loaded {
            prop_assert!(image.size() >= 0x1000);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
        let _ = load("random.sys", &bytes, resolve_all_to(dummy as *const () as usize));
    }

    #[test]
    fn random_bytes_behind_valid_headers_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..8192),
        keep in 0x40_usize..0x400,
    ) {
        let mut bytes = build(&Spec::default()).bytes;
        bytes.truncate(keep);
        bytes.extend_from_slice(&tail);
        let _ = parse(&bytes);
        let _ = load("tail.sys", &bytes, resolve_all_to(dummy as *const () as usize));
    }
}
