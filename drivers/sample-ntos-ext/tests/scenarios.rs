//! The sample on the host: the end-to-end scenario, the notify routine's lifetime and its
//! failures, fault sweeps, and process events racing detach.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_ext_usersim::{Fault, Kernel, NewProcess, sweep_allocation_failures, sweep_call_failures};
use sample_harness::ntos::scenario;
use sample_harness::{LoadedDriver, Target};
use sample_ntos_ext::driver_entry;
use sample_ntos_ext::hook::ATTACH_TYPE;
use sample_ntos_ext::program::PROGRAM_TYPE;

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
        let Ok(driver) = LoadedDriver::load(Target::Native(driver_entry), "SampleNtosEbpfExt")
        else {
            return;
        };
        if let Ok(link) = attach() {
            assert_eq!(kernel.create_process(&process(10)), STATUS_SUCCESS);
            assert!(kernel.exit_process(10));
            drop(link);
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
