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
use ebpf_ext_usersim::Kernel;
use sample_harness::bpf::samples;
use sample_harness::ntos::bpf_scenario;
use sample_harness::{Target, binary};

fn object() -> BpfObject {
    sample_harness::bpf::build(&samples()[1], "sample_process.c")
        .expect("the BPF object builds and parses")
}

#[test]
fn bpf_programs_run_identically_in_the_linked_crate_and_the_signed_image() {
    let object = object();
    let native = {
        let kernel = Kernel::new();
        bpf_scenario(
            &kernel,
            Target::Native(sample_ntos_ext::driver_entry),
            &object,
            &mut |_| {},
        )
        .expect("linked crate")
    };
    let kernel = Kernel::new();
    let image = binary::load_sample(&kernel, "sample_ntos_ext").expect("image");
    let from_image =
        bpf_scenario(&kernel, Target::Image(&image), &object, &mut |_| {}).expect("image");
    assert_eq!(from_image, native);
    assert!(native.lines.len() > 10, "{native:#?}");
    drop(kernel);
    image.unload();
}
