//! The sample on the host: the end-to-end scenario, the notify routine's lifetime and its
//! failures, fault sweeps, and process events racing detach.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::fmt::Write as _;

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_core_sim::{ProgramInfoClient, program_info_hash, program_info_hash_input};
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_RETURN_TYPE_INTEGER,
};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY};
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_ext_usersim::{Fault, Kernel, NewProcess, sweep_allocation_failures, sweep_call_failures};
use sample_harness::ntos::scenario;
use sample_harness::{LoadedDriver, Target};
use sample_ntos_ext::driver_entry;
use sample_ntos_ext::hook::{ATTACH_TYPE, BPF_ATTACH_TYPE};
use sample_ntos_ext::program::{NOTIFY_CONTEXT_SIZE, PROGRAM_TYPE};

fn attach() -> Result<Link, ebpf_ext_core_sim::CoreError> {
    Link::attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE), |_| Ok(0))
}

fn process(id: usize) -> NewProcess {
    NewProcess {
        process_id: id,
        parent_process_id: 1,
        creating_process_id: 1,
        creating_thread_id: 2,
        image_file_name: "\\??\\C:\\x.exe".into(),
        command_line: Some("x.exe".into()),
    }
}

#[test]
fn the_end_to_end_scenario_holds_and_repeats_identically() {
    let kernel = Kernel::new();
    let first = scenario(&kernel, Target::Native(driver_entry), &mut |_| {}).expect("first run");
    kernel.etw_clear();
    let second = scenario(&kernel, Target::Native(driver_entry), &mut |_| {})
        .expect("reload in one process");
    assert_eq!(first, second);
    assert_eq!(first.notify_routines, [0, 1, 0]);
}

#[test]
fn a_failed_notify_registration_refuses_the_attach() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    kernel.inject(Fault::Call("PsSetCreateProcessNotifyRoutineEx", 1));
    let refused = attach().expect_err("attach must fail without the notify routine");
    assert_eq!(refused.provider_status(), Some(STATUS_ACCESS_DENIED));
    assert_eq!(kernel.process_notify_routines(), 0);
    let link = attach().expect("the next attach registers it");
    assert_eq!(kernel.process_notify_routines(), 1);
    drop(link);
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn an_image_without_the_integrity_flag_cannot_attach() {
    let kernel = Kernel::new();
    kernel.set_image_flags_lookup(Some(|_| Some(false)));
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    assert!(attach().is_err());
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn every_failure_in_load_attach_and_unload_is_clean() {
    let scenario = |kernel: &Kernel| {
        // Without an injected fault every step succeeds (the sweep's first run injects none,
        // so it checks that the scenario reaches the steps the sweep then fails).
        let no_fault = || kernel.faults_triggered().is_empty();
        let Ok(driver) = LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt")
        else {
            assert!(!no_fault(), "the load failed with no fault injected");
            return;
        };
        match attach() {
            Ok(link) => {
                if no_fault() {
                    assert_eq!(kernel.process_notify_routines(), 1, "the notify routine");
                }
                assert_eq!(kernel.create_process(&process(10)), STATUS_SUCCESS);
                assert!(kernel.exit_process(10));
                drop(link);
            }
            Err(error) => assert!(!no_fault(), "attach failed with no fault injected: {error}"),
        }
        assert_eq!(kernel.process_notify_routines(), 0);
        driver.unload();
    };
    assert!(sweep_allocation_failures(scenario) > 5);
    assert!(sweep_call_failures(scenario) > 3);
}

#[test]
fn processes_start_while_programs_come_and_go() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            kernel.bind_current_thread();
            let mut id = 1000;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(kernel.create_process(&process(id)), STATUS_SUCCESS);
                assert!(kernel.exit_process(id));
                id += 1;
            }
        });
        for _ in 0..200 {
            let a = attach().expect("attach");
            let b = attach().expect("attach");
            a.detach().expect("detach");
            b.detach().expect("detach");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn unloading_with_programs_attached_removes_the_notify_routine() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let links = [attach().expect("attach"), attach().expect("attach")];
    assert_eq!(kernel.process_notify_routines(), 1);
    driver.unload();
    assert_eq!(kernel.process_notify_routines(), 0);
    assert!(links.iter().all(|l| !l.is_attached()));
    drop(links);
    kernel.assert_no_leaks();
}

#[test]
fn racing_first_attaches_and_last_detaches_keep_the_routine_consistent() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let next_id = AtomicUsize::new(10_000);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                kernel.bind_current_thread();
                for _ in 0..300 {
                    // The attached-program count keeps crossing 0 and 1 on both threads, so
                    // registrations and removals of the notify routine race.
                    let denier = Link::attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE), |_| {
                        #[expect(
                            clippy::cast_sign_loss,
                            reason = "an NTSTATUS as the program's u32"
                        )]
                        Ok(STATUS_ACCESS_DENIED as u32)
                    })
                    .expect("an attach is never refused by a racing detach");
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(
                        kernel.create_process(&process(id)),
                        STATUS_ACCESS_DENIED,
                        "a program is attached but its notify routine is not registered"
                    );
                    denier.detach().expect("detach");
                }
            });
        }
    });
    assert_eq!(kernel.process_notify_routines(), 0);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn the_program_information_is_ntosebpfext_s_process_type() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program info");
    let info = client.info();
    assert_eq!(
        PROGRAM_TYPE.to_u128(),
        0x22ea7b37_1043_4d0d_b60d_cafa1c7b638e,
        "EBPF_PROGRAM_TYPE_PROCESS"
    );
    assert_eq!(
        ATTACH_TYPE.to_u128(),
        0x66e20687_9805_4458_a0db_38e220d31685,
        "EBPF_ATTACH_TYPE_PROCESS"
    );
    assert_eq!(
        (info.name.as_str(), info.bpf_prog_type, BPF_ATTACH_TYPE),
        ("process", 6, 11)
    );
    let d = info.context_descriptor;
    assert_eq!((d.size, d.data, d.end, d.meta), (144, 0, 8, -1));
    assert!(!info.is_privileged && info.required_irql == 0 && info.global_helpers.is_empty());
    assert!(info.has_context_create && info.has_context_destroy);
    assert_eq!(NOTIFY_CONTEXT_SIZE, 296, "process_notify_context_t");
    let helpers: Vec<_> = info
        .helpers
        .iter()
        .map(|h| (h.id, h.name.as_str()))
        .collect();
    assert_eq!(
        helpers,
        [
            (0x1_0000, "bpf_process_get_image_path"),
            (0x1_0001, "bpf_process_get_account_name"),
            (0x1_0002, "bpf_process_get_account_domain"),
        ]
    );
    for h in &info.helpers {
        assert_eq!(h.return_type, EBPF_RETURN_TYPE_INTEGER);
        assert_eq!(
            h.arguments,
            [
                EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
                EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
                EBPF_ARGUMENT_TYPE_CONST_SIZE,
                0,
                0
            ]
        );
        assert!(!h.implicit_context && !h.reallocate_packet);
    }
    // The hook's provider data: BPF_ATTACH_TYPE_PROCESS, link type UNSPEC (upstream sets none).
    let link = attach().expect("attach");
    assert_eq!(
        (link.bpf_attach_type(), link.link_type()),
        (Some(11), Some(0))
    );
    drop(link);
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}

/// A test-run context as upstream lays it out: 296 bytes, a 10-byte command line.
fn test_run_context(command_length: u16) -> Vec<u8> {
    let mut ctx = vec![0u8; NOTIFY_CONTEXT_SIZE];
    ctx[64 + 16..64 + 24].copy_from_slice(&7u64.to_le_bytes());
    ctx[224..226].copy_from_slice(&command_length.to_le_bytes());
    ctx[226..228].copy_from_slice(&command_length.to_le_bytes());
    ctx
}

#[test]
fn test_run_contexts_copy_their_strings_and_refuse_bad_input_cleanly() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program info");
    let data = [b'x', 0].repeat(5);
    let ctx = test_run_context(10);
    let context = client.create_context(&data, &ctx).expect("context_create");
    // The command range points at the extension's copy, not at the caller's buffer.
    // SAFETY: a process_md_t the provider created.
    let md = unsafe { *context.as_ptr().cast::<sample_ntos_ext::ProcessContext>() };
    assert_eq!(md.process_id, 7);
    assert_eq!(
        md.command_end.as_ptr() as usize - md.command_start.as_ptr() as usize,
        10
    );
    assert_ne!(md.command_start.as_ptr(), data.as_ptr());
    let out = context.destroy(64, 100).expect("destroy");
    assert_eq!(
        (out.data, out.context_size_out),
        (data.clone(), 0),
        "context_out too small"
    );
    let refused = client
        .create_context(&data[..9], &test_run_context(10))
        .err();
    assert_eq!(refused, Some(EBPF_INVALID_ARGUMENT));
    // An allocation failure (the string copy, then the context) is reported and leaks
    // nothing.
    for n in [1, 2] {
        kernel.inject(Fault::Allocation(n));
        let failed = client.create_context(&data, &test_run_context(10)).err();
        assert_eq!(failed, Some(EBPF_NO_MEMORY));
    }
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn a_failure_status_denies_the_creation_and_stops_the_chain_and_deletes_ignore_results() {
    const STATUS_PENDING: u32 = 0x103;
    const STATUS_UNSUCCESSFUL: u32 = 0xC000_0001;
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let returning = |r: u32| Link::attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE), move |_| Ok(r));
    // A success status other than 0 permits.
    let pending = returning(STATUS_PENDING).expect("attach");
    assert_eq!(kernel.create_process(&process(20)), STATUS_SUCCESS);
    // The first failure status is the creation's; later programs do not run.
    let denier = returning(STATUS_UNSUCCESSFUL).expect("attach");
    let later = returning(STATUS_ACCESS_DENIED.cast_unsigned()).expect("attach");
    assert_eq!(
        kernel.create_process(&process(10)),
        STATUS_UNSUCCESSFUL.cast_signed()
    );
    let runs = |links: &[&Link]| links.iter().map(|l| l.invocations()).collect::<Vec<_>>();
    assert_eq!(runs(&[&pending, &denier, &later]), [2, 1, 0]);
    // On delete every program runs and the results are ignored.
    assert!(kernel.exit_process(20));
    assert_eq!(runs(&[&pending, &denier, &later]), [3, 2, 1]);
    drop([pending, denier, later]);
    driver.unload();
    kernel.assert_no_leaks();
}

/// The program-information hash the core computes (and bpf2c embeds in native images) for
/// programs using the three process helpers, and for the helper set of upstream's
/// `process_monitor.c` (1, 2, 11, 19, 22, 24 and the three): the SHA-256 values below were
/// computed from ntosebpfext's definitions (name, `process_md_t` descriptor, GUID, 6, the
/// helper prototypes) and the core's general prototypes, by the byte stream of
/// `ebpf_ext_core_sim::program_info_hash_input`.
#[test]
fn the_program_information_hash_is_the_one_upstreams_definitions_give() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt").expect("load");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program info");
    let info = client.info();
    let hex = |ids: &[u32]| {
        program_info_hash(&info, ids)
            .expect("known helpers")
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
    };
    let process = [0x1_0002, 0x1_0000, 0x1_0001];
    let input = program_info_hash_input(&info, &process).expect("known helpers");
    assert_eq!(input.len(), 220);
    assert!(input.starts_with(b"process\x90\0\0\0\0\0\0\0\x08\0\0\0\xff\xff\xff\xff"));
    assert_eq!(
        hex(&process),
        "4a09e3f6c7940ac1b47638dc5e1ab3f5f2f32601a6fddc0b6f7c4c183ecd2937"
    );
    assert_eq!(
        hex(&[19, 1, 2, 24, 22, 0x1_0000, 0x1_0001, 0x1_0002, 11]),
        "af7bbe6c87d93932c8bc7faef29d971ca758d5608588c20a23ad031022b383d9"
    );
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}
