//! Our BPF programs (`bpf/sample_ext.c`, compiled here with `clang -target bpf` into a
//! directory of this test's own) run by core-sim against this sample's published helpers
//! and context descriptor, through link attach (the control device's run and batch run) and
//! through test runs (`context_create` → program → `context_destroy`), in both modes: the
//! crate linked into this test and the signed `.sys` image. The two reports must be equal.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::bpf::BpfObject;
use ebpf_ext_usersim::Kernel;
use sample_harness::bpf::in_both_modes;
use sample_harness::{Target, ext};

fn object() -> BpfObject {
    sample_harness::bpf::build(&ext::sample(), "sample_ext.c")
        .expect("the BPF object builds and parses")
}

fn maps_object() -> BpfObject {
    sample_harness::bpf::build(&ext::sample(), "sample_ext_maps.c")
        .expect("the BPF object builds and parses")
}

#[test]
fn bpf_programs_run_in_the_linked_crate() {
    let (object, maps) = (object(), maps_object());
    let kernel = Kernel::new();
    let report = ext::scenario(
        &kernel,
        Target::Native(sample_ext::driver_entry),
        &object,
        &maps,
        &mut |_| {},
    )
    .expect("linked crate");
    assert!(report.lines.len() > 8, "{report:#?}");
}

#[test]
fn bpf_programs_run_identically_in_the_linked_crate_and_the_signed_image() {
    let (object, maps) = (object(), maps_object());
    let report = in_both_modes("sample_ext", sample_ext::driver_entry, |kernel, target| {
        ext::scenario(kernel, target, &object, &maps, &mut |_| {})
    })
    .expect("both modes");
    assert!(report.lines.len() > 8, "{report:#?}");
}
