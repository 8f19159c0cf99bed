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

use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_core_sim::bpf::{BpfError, BpfMap, BpfObject, BpfProgram};
use ebpf_ext_usersim::Kernel;
use sample_ext::program::PROGRAM_TYPE;
use sample_harness::bpf::in_both_modes;
use sample_harness::{LoadedDriver, Target, binary, ext};

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

/// The driver loaded again from a second image (mapped at other addresses, the first then
/// unmapped) serves the programs loaded before it, as with the core: once its program
/// information attaches, their helpers re-resolve to the new image (a call to the old one
/// would fault). Between the two, the programs do not run.
#[test]
fn programs_loaded_before_run_against_a_new_image_of_the_driver() {
    if binary::native_only("a new image of the driver") {
        return;
    }
    let object = object();
    let kernel = Kernel::new();
    let first = binary::load_sample(&kernel, "sample_ext").expect("image");
    let driver = LoadedDriver::load(Target::Image(&first), ext::SERVICE).expect("loads");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program information");
    let program = BpfProgram::load(&object, "sample_ext/helpers", &client.info()).expect("loads");
    let results = program.map("results").expect("results map");
    let context = ext::context_in(3, 0, [1, 2]);
    let run = || program.test_run(&client, b"data", &context, 1);
    // What the two implicit-context helpers returned (results 0 and 1).
    let implicit =
        |results: &BpfMap| [0u32, 1].map(|key| results.lookup(&key.to_le_bytes()).expect("lookup"));
    let before = run().expect("test run");
    assert_eq!(before.return_value, 4);
    let implicit_before = implicit(&results);
    let addresses_before = client.info().helpers.clone();
    driver.unload();
    // Mapped while the first still is, so at other addresses; the first goes afterwards.
    let second = binary::load_sample(&kernel, "sample_ext").expect("image");
    drop(first);

    assert!(
        run().is_err(),
        "no program information: the program does not run"
    );
    let mut hooked = ext::context_in(3, 0, [1, 2]);
    // SAFETY: a `sample` context (its data pointers NULL).
    let direct = unsafe { program.run(hooked.as_mut_ptr().cast()) };
    assert!(
        matches!(direct, Err(BpfError::ProgramInfoDetached { .. })),
        "{direct:?}"
    );

    let driver = LoadedDriver::load(Target::Image(&second), ext::SERVICE).expect("loads again");
    assert_ne!(
        client.info().helpers,
        addresses_before,
        "the second image's helpers are at other addresses"
    );
    for key in [0u32, 1] {
        results
            .update(&key.to_le_bytes(), &[0; 8], 0)
            .expect("cleared");
    }
    let after = run().expect("the program loaded before runs against the new image");
    assert_eq!(after.return_value, before.return_value);
    assert_eq!(
        implicit(&results),
        implicit_before,
        "its helpers answer as before"
    );
    assert_eq!(program.program_info_refusal(), None);
    drop(program);
    drop(client);
    driver.unload();
    drop(kernel);
    drop(second);
}
