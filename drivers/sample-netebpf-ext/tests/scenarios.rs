//! The sample on the host: the end-to-end scenario, reload, fault sweeps of load and unload
//! and of the attach/fire path, detach under load, and unload with programs attached.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::time::Instant;

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntstatus::{STATUS_NOT_FOUND, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;
use ebpf_ext_usersim::{Caller, Kernel, sweep_allocation_failures, sweep_call_failures};
use ebpf_extension_common::profile::{DISPATCH_STRETCH, PROFILE_AT_DISPATCH, ProfileReply};
use sample_harness::net::{profile_request, run, run_request, scenario};
use sample_harness::{LoadedDriver, Target};
use sample_netebpf_ext::hook::ATTACH_TYPE;
use sample_netebpf_ext::program::PROGRAM_TYPE;
use sample_netebpf_ext::protocol::{
    IOCTL_SAMPLE_NET_PROFILE, IOCTL_SAMPLE_NET_RUN, RunReply, WIN32_PATH,
};
use sample_netebpf_ext::{VERDICT_BLOCK, VERDICT_PERMIT, driver_entry};

fn link(interface: u32, verdict: u32) -> Link {
    Link::attach(
        LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&interface.to_ne_bytes()),
        move |_| Ok(verdict),
    )
    .expect("attach")
}

#[test]
fn the_end_to_end_scenario_holds_and_repeats_identically() {
    let kernel = Kernel::new();
    let first = scenario(&kernel, Target::Native(driver_entry), &mut |_| {}).expect("first run");
    kernel.etw_clear();
    let second = scenario(&kernel, Target::Native(driver_entry), &mut |_| {})
        .expect("reload in one process");
    assert_eq!(first, second, "a reload behaves exactly as the first load");
    // Each attach and detach is traced at level 4 with its interface: the scenario's programs
    // on interface 1, the wildcard (0) and interface 2, in that order.
    let hook_events: Vec<&str> = first
        .traces
        .iter()
        .filter(|t| t.contains(" interface\")"))
        .map(String::as_str)
        .collect();
    let expected: Vec<String> = ["attached for", "detached from"]
        .iter()
        .flat_map(|what| {
            [1, 0, 2].map(|interface| {
                format!(
                    "EbpfExtGenericMessage [level 4 keyword 0x4 opcode 0] Message=Str(\"program {what} interface\") value=U64({interface})"
                )
            })
        })
        .collect();
    assert_eq!(hook_events, expected);
}

#[test]
fn every_allocation_and_api_failure_in_load_and_unload_is_clean() {
    let scenario = |kernel: &Kernel| {
        match LoadedDriver::load(Target::Native(driver_entry), "SampleNetEbpfExt") {
            Ok(driver) => driver.unload(),
            // Only an injected fault may fail the load (the sweep's first run injects none).
            Err(status) => assert!(
                !kernel.faults_triggered().is_empty(),
                "the load failed ({status:#x}) with no fault injected"
            ),
        }
    };
    assert!(sweep_allocation_failures(scenario) > 5);
    assert!(
        sweep_call_failures(scenario) > 3,
        "IoCreateDevice, NMR, ETW, security"
    );
}

#[test]
fn failures_while_attaching_and_firing_leak_nothing() {
    let scenario = |kernel: &Kernel| {
        // Without an injected fault every step succeeds (the sweep's first run injects none,
        // so it checks that the scenario reaches the steps the sweep then fails).
        let no_fault = || kernel.faults_triggered().is_empty();
        let Ok(driver) = LoadedDriver::load(Target::Native(driver_entry), "SampleNetEbpfExt")
        else {
            assert!(!no_fault(), "the load failed with no fault injected");
            return;
        };
        match Link::attach(
            LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&1u32.to_ne_bytes()),
            |_| Ok(VERDICT_PERMIT),
        ) {
            Ok(link) => {
                let handle = kernel.open(WIN32_PATH, Caller::System).expect("open");
                // Each request succeeds with a well-formed reply (always, when no fault fired)
                // or fails with nothing returned and the failure traced.
                let answered = |code, input: &[u8], reply: usize| {
                    let events = kernel.etw_events().len();
                    let faults = kernel.faults_triggered().len();
                    let result = kernel.device_io_control(&handle, code, input, reply);
                    if result.status == STATUS_SUCCESS {
                        assert_eq!(result.information, reply, "{code:#x}: a whole reply");
                    } else {
                        assert!(
                            kernel.faults_triggered().len() > faults,
                            "{code:#x} failed ({:#x}) with no fault injected",
                            result.status
                        );
                        assert_eq!(result.information, 0, "{code:#x}: nothing on failure");
                        assert!(
                            kernel.etw_events().len() > events,
                            "{code:#x} failed ({:#x}) untraced",
                            result.status
                        );
                    }
                };
                answered(
                    IOCTL_SAMPLE_NET_RUN,
                    &run_request(1, 6, &[1, 2, 3]),
                    RunReply::SIZE + 3,
                );
                answered(
                    IOCTL_SAMPLE_NET_PROFILE,
                    &profile_request(1, 3, 0, &[1, 2, 3]),
                    ProfileReply::SIZE,
                );
                kernel.close(handle);
                drop(link);
            }
            Err(error) => assert!(!no_fault(), "attach failed with no fault injected: {error}"),
        }
        driver.unload();
    };
    assert!(sweep_allocation_failures(scenario) > 5);
    assert!(sweep_call_failures(scenario) > 3);
}

#[test]
fn programs_detach_and_reattach_while_events_fire() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNetEbpfExt").expect("load");
    let stop = AtomicBool::new(false);
    let (fired, not_found) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                kernel.bind_current_thread();
                let handle = kernel
                    .open(WIN32_PATH, Caller::Administrator)
                    .expect("open");
                while !stop.load(Ordering::Relaxed) {
                    let (status, reply, _) = run(&kernel, &handle, 7, &[0; 32]).expect("reply");
                    match status {
                        STATUS_SUCCESS => {
                            assert!(reply.programs_run >= 1);
                            fired.fetch_add(1, Ordering::Relaxed);
                        }
                        STATUS_NOT_FOUND => {
                            not_found.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("run failed with {other:#x}"),
                    }
                }
                kernel.close(handle);
            });
        }
        // At least 200 rounds, and more until an event has run a program (10 s at most; then
        // the check after the scope fails).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut round = 0u32;
        while round < 200 || (fired.load(Ordering::Relaxed) == 0 && Instant::now() < deadline) {
            let specific = link(7, VERDICT_PERMIT);
            let wildcard = link(
                0,
                if round.is_multiple_of(2) {
                    VERDICT_BLOCK
                } else {
                    VERDICT_PERMIT
                },
            );
            std::thread::yield_now();
            specific.detach().expect("detach");
            wildcard.detach().expect("detach");
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(fired.load(Ordering::Relaxed) > 0, "no event ran a program");
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn unloading_with_programs_attached_detaches_them() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNetEbpfExt").expect("load");
    let attached = [link(1, VERDICT_PERMIT), link(0, VERDICT_BLOCK)];
    driver.unload();
    for l in &attached {
        assert!(
            !l.is_attached(),
            "the provider detached every program at unload"
        );
        assert_eq!(l.detach_count(), 1);
    }
    drop(attached);
    kernel.assert_no_leaks();
}

#[test]
fn profiling_at_dispatch_lowers_the_irql_between_short_stretches() {
    let kernel = Kernel::new();
    let driver =
        LoadedDriver::load(Target::Native(driver_entry), "SampleNetEbpfExt").expect("load");
    let program = link(1, VERDICT_PERMIT);
    let handle = kernel.open(WIN32_PATH, Caller::System).expect("open");
    let raises = kernel.irql_raises();
    let reply = kernel.device_io_control(
        &handle,
        IOCTL_SAMPLE_NET_PROFILE,
        &profile_request(1, 200, PROFILE_AT_DISPATCH, &[0; 8]),
        ProfileReply::SIZE,
    );
    assert_eq!(reply.status, STATUS_SUCCESS);
    assert_eq!(program.invocations(), 200);
    assert_eq!(program.last_irql(), Some(DISPATCH_LEVEL));
    // 200 iterations in stretches of DISPATCH_STRETCH (64): four raises to DISPATCH_LEVEL.
    assert_eq!(
        kernel.irql_raises() - raises,
        200u64.div_ceil(DISPATCH_STRETCH)
    );
    kernel.close(handle);
    drop(program);
    driver.unload();
    kernel.assert_no_leaks();
}

/// `open` of a program type the driver does not provide fails, and unloads the driver it
/// loaded: nothing stays registered (a fault sweep over `open` relies on it).
#[test]
fn an_open_whose_program_information_is_refused_unloads_the_driver() {
    let kernel = Kernel::new();
    let other = ebpf_ext_sys::ntdef::GUID::from_u128(0x0bad_0000_0000_4000_8000_0000_0000_0001);
    let opened = sample_harness::open(
        Target::Native(driver_entry),
        "SampleNetEbpfExt",
        other,
        &mut |_| {},
    );
    assert!(
        opened
            .as_ref()
            .is_err_and(|e| e.starts_with("program info:")),
        "{:?}",
        opened.as_ref().err()
    );
    drop(opened);
    kernel.assert_no_leaks();
}
