//! The C headers checked in under each sample's `bpf/include/` are exactly what the
//! sample's published program information generates: a helper prototype, an id or a context
//! descriptor offset that changes in a sample makes this test fail until the headers are
//! regenerated (`cargo run -p sample-harness --bin gen-headers`, or `cargo xtask headers`).
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_usersim as _;
use sample_harness::bpf::{headers, samples};
use sample_harness::ext;

#[test]
fn the_checked_in_headers_match_what_the_samples_publish() {
    let mut stale = Vec::new();
    let all = samples()
        .into_iter()
        .map(|s| headers(&s))
        .chain([ext::headers()]);
    for files in all {
        for (path, expected) in files.expect("the sample publishes its program information") {
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk == expected {
                continue;
            }
            let line = on_disk
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| on_disk.lines().count().min(expected.lines().count()));
            stale.push(format!(
                "{} line {}:\n  checked in: {}\n  published:  {}",
                path.display(),
                line + 1,
                on_disk.lines().nth(line).unwrap_or("<end of file>"),
                expected.lines().nth(line).unwrap_or("<end of file>"),
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "generated headers out of date (regenerate: cargo run -p sample-harness --bin gen-headers):\n{}",
        stale.join("\n")
    );
}

/// The section each generated header tells programs to use is the one the sample's manifest
/// exports for its program type (what the store and a loader resolve sections by).
#[test]
fn each_header_names_the_section_the_manifest_exports() {
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for sample in samples().into_iter().chain([ext::sample()]) {
        let manifest = manifests.join(sample.dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("the sample's manifest");
        let exported = format!(
            "{{ name = \"{}\", program-type = \"{{{}}}\"",
            sample.section, sample.program_type
        );
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&exported)),
            "{} exports no section {:?} for {}",
            manifest.display(),
            sample.section,
            sample.program_type
        );
    }
}
