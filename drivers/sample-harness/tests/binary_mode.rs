//! Binary mode: the signed `.sys` images, loaded by the PE loader with their imports bound to
//! usersim, must behave exactly as the sample crates linked natively — same invocations,
//! verdicts, helper results, statuses and trace events (which, from an image, come through
//! the `tracelogging` crate's real kernel-mode encoder and usersim's decoder) — and leave
//! nothing behind. The images come from `cargo xtask build-drivers` and `cargo xtask sign`
//! (`cargo xtask ci` and `test-sample` build them first).
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_ATTACH_PROVIDER_FN, NPI_CLIENT_CHARACTERISTICS, NPI_CLIENT_DETACH_PROVIDER_FN,
    NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NmrRegisterClient,
};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::{DRIVER_UNLOAD, DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS};
use ebpf_ext_usersim::{Kernel, expect_bugcheck, sweep_allocation_failures, sweep_call_failures};
use sample_harness::{LoadedDriver, Target, binary, net, ntos};

fn quiet(_: &str) {}

#[test]
fn the_netebpf_image_behaves_exactly_as_the_linked_crate() {
    let native = {
        let kernel = Kernel::new();
        net::scenario(
            &kernel,
            Target::Native(sample_netebpf_ext::driver_entry),
            &mut quiet,
        )
        .expect("native scenario")
    };
    let kernel = Kernel::new();
    let image = binary::load_sample(&kernel, "sample_netebpf_ext").expect("image");
    let from_image =
        net::scenario(&kernel, Target::Image(&image), &mut quiet).expect("image scenario");
    assert_eq!(from_image, native);
    assert!(from_image.traces.len() > 20, "{:?}", from_image.traces);
    assert!(
        from_image
            .traces
            .iter()
            .all(|t| !t.contains("decode error") && !t.starts_with(' ')),
        "every event from the real encoder decodes: {:?}",
        from_image.traces
    );
    drop(kernel);
    image.unload();
}

#[test]
fn the_ntos_image_behaves_exactly_as_the_linked_crate() {
    let native = {
        let kernel = Kernel::new();
        ntos::scenario(
            &kernel,
            Target::Native(sample_ntos_ext::driver_entry),
            &mut quiet,
        )
        .expect("native scenario")
    };
    let kernel = Kernel::new();
    let image = binary::load_sample(&kernel, "sample_ntos_ext").expect("image");
    let from_image =
        ntos::scenario(&kernel, Target::Image(&image), &mut quiet).expect("image scenario");
    assert_eq!(from_image, native);
    drop(kernel);
    image.unload();
}

#[test]
fn every_failure_in_the_images_load_and_unload_is_clean() {
    let loader_kernel = Kernel::new();
    let image = binary::load_sample(&loader_kernel, "sample_netebpf_ext").expect("image");
    let scenario = |_: &Kernel| {
        if let Ok(driver) = LoadedDriver::load(Target::Image(&image), "SampleNetEbpfExt") {
            driver.unload();
        }
    };
    let native = |_: &Kernel| {
        if let Ok(driver) = LoadedDriver::load(
            Target::Native(sample_netebpf_ext::driver_entry),
            "SampleNetEbpfExt",
        ) {
            driver.unload();
        }
    };
    let allocations = sweep_allocation_failures(scenario);
    assert!(
        allocations > 5,
        "the image's load allocates ({allocations})"
    );
    assert_eq!(
        allocations,
        sweep_allocation_failures(native),
        "the image allocates exactly as the crate does"
    );
    let calls = sweep_call_failures(scenario);
    assert!(
        calls > 3,
        "the image's load makes faultable calls ({calls})"
    );
    assert_eq!(calls, sweep_call_failures(native));
    drop(loader_kernel);
    image.unload();
}

/// `bytes` (a signed image) without its signature: the certificate table entry zeroed and the
/// table cut off the end of the file, as `osslsigncode remove-signature` leaves it.
fn unsigned(mut bytes: Vec<u8>) -> Vec<u8> {
    let field = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
    };
    // IMAGE_DIRECTORY_ENTRY_SECURITY: e_lfanew, then the signature (4), the file header (20)
    // and the PE32+ optional header's fields before its data directories (112).
    let directory = field(&bytes, 0x3C) + 4 + 20 + 112 + 4 * 8;
    let table = field(&bytes, directory);
    assert!(
        table != 0 && field(&bytes, directory + 4) != 0,
        "a signed image"
    );
    bytes[directory..directory + 8].fill(0);
    bytes.truncate(table);
    bytes
}

#[test]
fn an_unsigned_image_is_refused_as_windows_refuses_it() {
    let kernel = Kernel::new();
    let signed = binary::image_dir()
        .expect("image folder")
        .join("sample_netebpf_ext.sys");
    let bytes = std::fs::read(&signed).expect("the signed image (cargo xtask build-drivers, sign)");
    let dir = tempfile::tempdir().expect("a folder of the test's own");
    let stripped = dir.path().join("sample_netebpf_ext.sys");
    std::fs::write(&stripped, unsigned(bytes)).expect("write");
    let Err(error) = ebpf_ext_testing::image::load_path(&kernel, &stripped) else {
        panic!("an unsigned image loaded");
    };
    assert!(
        error.contains("not signed") && error.contains("0xC0000428"),
        "{error}"
    );
    let loaded = ebpf_ext_testing::image::load_path(&kernel, &signed).expect("the signed image");
    kernel.assert_no_leaks();
    drop(kernel);
    loaded.image.unload();
}

#[test]
fn the_ntos_image_honours_its_integrity_flag() {
    let kernel = Kernel::new();
    let image = binary::load_sample(&kernel, "sample_ntos_ext").expect("image");
    let driver = LoadedDriver::load(Target::Image(&image), "SampleNtosEbpfExt").expect("load");
    // Its /INTEGRITYCHECK flag is set, so the notify routine registers on the first attach.
    let link = Link::attach(
        LinkSpec::new(
            sample_ntos_ext::program::PROGRAM_TYPE,
            sample_ntos_ext::hook::ATTACH_TYPE,
        ),
        |_| Ok(0),
    )
    .expect("attach");
    assert_eq!(kernel.process_notify_routines(), 1);
    drop(link);
    // Without the flag (as if linked without /INTEGRITYCHECK) the kernel refuses the routine,
    // and the attach with it.
    kernel.set_image_flags_lookup(Some(|_| Some(false)));
    let refused = Link::attach(
        LinkSpec::new(
            sample_ntos_ext::program::PROGRAM_TYPE,
            sample_ntos_ext::hook::ATTACH_TYPE,
        ),
        |_| Ok(0),
    );
    assert!(refused.is_err());
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
    drop(kernel);
    image.unload();
}

/// A copy of the ntos image, loaded, with its integrity-check flag cleared (as if linked
/// without `/INTEGRITYCHECK`); the signature stays, as the loader checks only its presence.
fn ntos_image_without_integrity_flag(kernel: &Kernel) -> sample_harness::binary::Sample {
    let signed = binary::image_dir()
        .expect("image folder")
        .join("sample_ntos_ext.sys");
    let mut bytes = std::fs::read(&signed).expect("the signed image");
    // DllCharacteristics: e_lfanew, then the signature (4), the file header (20) and 70 bytes
    // of the PE32+ optional header; IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY is 0x80.
    let nt = u32::from_le_bytes(bytes[0x3C..0x40].try_into().expect("4 bytes")) as usize;
    let at = nt + 4 + 20 + 70;
    assert_ne!(
        bytes[at] & 0x80,
        0,
        "the sample is linked with /INTEGRITYCHECK"
    );
    bytes[at] &= !0x80;
    let dir = tempfile::tempdir().expect("a folder of the test's own");
    let copy = dir.path().join("sample_ntos_ext.sys");
    std::fs::write(&copy, bytes).expect("write");
    ebpf_ext_testing::image::load_path(kernel, &copy).expect("load")
}

#[test]
fn an_images_integrity_flag_counts_on_every_kernel_not_only_the_loaders() {
    let image = {
        let loader_kernel = Kernel::new();
        ntos_image_without_integrity_flag(&loader_kernel).image
    };
    // Another kernel, as a fault sweep's, runs the image the first one loaded.
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Image(&image), "SampleNtosEbpfExt").expect("load");
    let refused = Link::attach(
        LinkSpec::new(
            sample_ntos_ext::program::PROGRAM_TYPE,
            sample_ntos_ext::hook::ATTACH_TYPE,
        ),
        |_| Ok(0),
    );
    assert!(
        refused.is_err(),
        "the notify routine of an image without the flag registered"
    );
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
    drop(kernel);
    image.unload();
}

#[test]
fn addresses_in_a_loaded_image_are_named_from_its_pdb() {
    let kernel = Kernel::new();
    let image = binary::load_sample(&kernel, "sample_netebpf_ext").expect("image");
    let driver = LoadedDriver::load(Target::Image(&image), "SampleNetEbpfExt").expect("load");
    // SAFETY: the driver object lives as long as `driver`.
    let object = unsafe { &*driver.object() };
    let unload = object.DriverUnload.expect("unload routine") as usize;
    let device_control = object.MajorFunction[0x0E].expect("device control") as usize;
    let name = |address: usize| {
        let symbol = ebpf_ext_pe_loader::symbolize(address).expect("inside the image");
        assert_eq!(symbol.module, "sample_netebpf_ext.sys");
        symbol.function.and_then(|f| f.name).unwrap_or_default()
    };
    assert!(name(unload).ends_with("driver_unload"), "{}", name(unload));
    assert!(
        name(device_control).ends_with("dispatch_device_control"),
        "{}",
        name(device_control)
    );
    assert_eq!(
        name(image.entry_point()),
        "DriverEntry",
        "the export name wins over the PDB's"
    );
    driver.unload();
    kernel.assert_no_leaks();
    drop(kernel);
    image.unload();
}

/// The net image with its CodeView record's GUID (byte 0) or age changed by `edit`: an image
/// of another link as far as its PDB is concerned (the loader does not verify the signature).
fn net_image_relinked(edit: impl FnOnce(&mut [u8; 16], &mut u32)) -> Vec<u8> {
    let path = binary::image_dir()
        .expect("image folder")
        .join("sample_netebpf_ext.sys");
    let mut bytes = std::fs::read(path).expect("the net image");
    let codeview = ebpf_ext_pe_loader::parse(&bytes)
        .expect("parses")
        .codeview()
        .expect("lld-link writes a CodeView record");
    let mut record = b"RSDS".to_vec();
    record.extend_from_slice(&codeview.guid);
    record.extend_from_slice(&codeview.age.to_le_bytes());
    let at = bytes
        .windows(record.len())
        .position(|w| w == record)
        .expect("the record in the file");
    let (mut guid, mut age) = (codeview.guid, codeview.age);
    edit(&mut guid, &mut age);
    bytes[at + 4..at + 20].copy_from_slice(&guid);
    bytes[at + 20..at + 24].copy_from_slice(&age.to_le_bytes());
    bytes
}

#[test]
fn only_the_pdb_the_image_was_linked_with_names_its_functions() {
    let images = binary::image_dir().expect("image folder");
    let image = std::fs::read(images.join("sample_netebpf_ext.sys")).expect("the net image");
    let pdb = std::fs::read(images.join("sample_netebpf_ext.pdb")).expect("the net PDB");
    let cases = [
        ("the image's own PDB", image.clone(), pdb.clone(), true),
        (
            "another GUID",
            net_image_relinked(|guid, _| guid[0] ^= 1),
            pdb.clone(),
            false,
        ),
        (
            "another age",
            net_image_relinked(|_, age| *age += 1),
            pdb.clone(),
            false,
        ),
        (
            "a truncated PDB",
            image.clone(),
            pdb[..pdb.len() / 3].to_vec(),
            false,
        ),
        ("not a PDB", image, vec![0x5A; 4096], false),
    ];
    let dir = tempfile::tempdir().expect("a folder of the test's own");
    let image_path = dir.path().join("sample_netebpf_ext.sys");
    for (case, image, pdb, named) in cases {
        std::fs::write(&image_path, image).expect("write the image");
        std::fs::write(dir.path().join("sample_netebpf_ext.pdb"), pdb).expect("write the PDB");
        let kernel = Kernel::new();
        let loaded = ebpf_ext_testing::image::load_path(&kernel, &image_path).expect("image");
        let driver =
            LoadedDriver::load(Target::Image(&loaded.image), "SampleNetEbpfExt").expect("load");
        // SAFETY: the driver object lives as long as `driver`.
        let unload = unsafe { &*driver.object() }.DriverUnload.expect("unload") as usize;
        let symbol = ebpf_ext_pe_loader::symbolize(unload).expect("inside the image");
        let name = symbol.function.and_then(|f| f.name);
        if named {
            assert!(
                name.as_deref()
                    .is_some_and(|n| n.ends_with("driver_unload")),
                "{case}: {name:?}"
            );
        } else {
            assert_eq!(name, None, "{case}: named by a PDB that is not the image's");
        }
        driver.unload();
        kernel.assert_no_leaks();
        drop(kernel);
        loaded.image.unload();
    }
}

/// Runs the demo binary on the built images with `--expect` for the net image.
fn demo_with_expected_net_hash(sha: &str) -> std::process::Output {
    let dir = binary::image_dir().expect("image folder");
    let net = std::path::absolute(dir.join("sample_netebpf_ext.sys")).expect("absolute path");
    std::process::Command::new(env!("CARGO_BIN_EXE_sample-demo"))
        .arg("--binary")
        .arg("--expect")
        .arg(format!("{}={sha}", net.display()))
        .env(binary::DRIVER_DIR_VAR, &dir)
        .output()
        .expect("run sample-demo")
}

#[test]
fn the_demo_proves_which_image_it_loaded() {
    let kernel = Kernel::new();
    let loaded = binary::load_sample_file(&kernel, "sample_netebpf_ext").expect("image");
    let on_disk = std::fs::read(&loaded.path).expect("read the image");
    assert_eq!(loaded.sha256, binary::sha256_hex(&on_disk));
    assert!(loaded.path.is_absolute());
    drop(kernel);
    loaded.image.unload();

    let good = demo_with_expected_net_hash(&loaded.sha256);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "loaded {}\n  sha256 {} = the image built and signed above",
            loaded.path.display(),
            loaded.sha256
        )),
        "{stdout}"
    );

    let bad = demo_with_expected_net_hash(&"0".repeat(64));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains(&format!("was built with sha256 {}", "0".repeat(64))),
        "{stderr}"
    );
}

/// An NPI nothing else registers, so NMR never calls the client below.
const UNMATCHED_NPI: GUID = GUID::from_u128(0x0ce0_0000_0000_0000_0000_0000_0000_0001);
static UNMATCHED_MODULE: NPI_MODULEID = NPI_MODULEID::from_guid(UNMATCHED_NPI);

#[test]
fn an_image_unloading_with_a_registration_left_into_it_bugchecks() {
    let check = expect_bugcheck(
        "an_image_unloading_with_a_registration_left_into_it_bugchecks",
        || {
            let kernel = Kernel::new();
            let image = binary::load_sample(&kernel, "sample_netebpf_ext").expect("image");
            let driver =
                LoadedDriver::load(Target::Image(&image), "SampleNetEbpfExt").expect("load");
            // SAFETY: the driver object lives as long as `driver`.
            let unload = unsafe { &*driver.object() }.DriverUnload.expect("unload");
            // A client whose callbacks are addresses in the image, as a driver's own would be.
            // SAFETY: never called: no provider of the NPI registers.
            let in_image = unsafe {
                core::mem::transmute::<DRIVER_UNLOAD, NPI_CLIENT_ATTACH_PROVIDER_FN>(unload)
            };
            // SAFETY: as above.
            let detach = unsafe {
                core::mem::transmute::<DRIVER_UNLOAD, NPI_CLIENT_DETACH_PROVIDER_FN>(unload)
            };
            let characteristics = Box::leak(Box::new(NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: 72,
                ClientAttachProvider: Some(in_image),
                ClientDetachProvider: Some(detach),
                ClientCleanupBindingContext: None,
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: 40,
                    NpiId: &UNMATCHED_NPI,
                    ModuleId: &raw const UNMATCHED_MODULE,
                    Number: 0,
                    NpiSpecificCharacteristics: core::ptr::null(),
                },
            }));
            let mut handle = core::ptr::null_mut();
            // SAFETY: leaked characteristics; no context.
            let status = unsafe {
                NmrRegisterClient(characteristics, core::ptr::null_mut(), &raw mut handle)
            };
            assert_eq!(status, 0);
            driver.unload();
        },
    );
    assert_eq!(
        check.code,
        DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS
    );
    assert!(
        check
            .message
            .contains("sample_netebpf_ext.sys unloaded with 1 registration(s)")
            && check.message.contains("NMR client"),
        "{}",
        check.message
    );
}
