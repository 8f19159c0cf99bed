//! Real BPF programs (`bpf/sample_process.c`, compiled here with `clang -target bpf` into a
//! directory of this test's own) run by core-sim against this sample's published helpers and
//! context descriptor, through link attach, in both modes: the crate linked into this test
//! and the signed `.sys` image loaded by the PE loader. The two reports must be identical.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::bpf::BpfObject;
use sample_harness::bpf::{in_both_modes, samples};
use sample_harness::ntos::bpf_scenario;

fn object() -> BpfObject {
    sample_harness::bpf::build(&samples()[1], "sample_process.c")
        .expect("the BPF object builds and parses")
}

#[test]
fn bpf_programs_run_identically_in_the_linked_crate_and_the_signed_image() {
    let object = object();
    let report = in_both_modes(
        "sample_ntos_ext",
        sample_ntos_ext::driver_entry,
        |kernel, target| bpf_scenario(kernel, target, &object, &mut |_| {}),
    )
    .expect("both modes");
    assert!(report.lines.len() > 10, "{report:#?}");
}
