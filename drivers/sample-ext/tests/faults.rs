//! Every allocation and every fault-injectable kernel call that loading the port, attaching a
//! program, running each control code (RUN, RUN_BATCH, PROFILE) and unloading makes, failed
//! one at a time: whatever step fails, nothing leaks and nothing bug-checks.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_usersim::{Caller, Kernel, sweep_allocation_failures, sweep_call_failures};
use ebpf_extension_common::profile::{PROFILE_AT_DISPATCH, ProfileReply, ProfileRequest};
use sample_ext::hook::ATTACH_TYPE;
use sample_ext::program::PROGRAM_TYPE;
use sample_ext::protocol::{
    IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE, IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH, REQUEST_VERSION, RunBatchReply, RunBatchRequest, RunReply,
    RunRequest, WIN32_PATH,
};
use sample_harness::{LoadedDriver, Target};

/// Loads the driver, attaches a program for parameter 3, sends one request of each code, and
/// unloads; each step may fail (the sweep makes it), and the scenario cleans up after it.
/// Until a fault fires, every request succeeds and runs the program as often as it asks (the
/// run without faults, which the sweep makes first, checks the scenario reaches every code).
fn scenario(kernel: &Kernel) {
    let Ok(driver) = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
    else {
        return;
    };
    let spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&3u32.to_le_bytes());
    if let Ok(link) = Link::attach(spec, |_| Ok(7)) {
        if let Ok(handle) = kernel.open(WIN32_PATH, Caller::System) {
            let data = b"rainy";
            let data_len = 5;
            let run = RunRequest {
                version: REQUEST_VERSION,
                attach_parameter: 3,
                uint32_data: 1,
                data_len,
            };
            let batch = RunBatchRequest {
                version: REQUEST_VERSION,
                attach_parameter: 3,
                count: 4,
                data_len,
            };
            let profile = ProfileRequest {
                version: REQUEST_VERSION,
                parameter: 3,
                iterations: 70,
                flags: PROFILE_AT_DISPATCH,
                data_len,
            };
            let requests = [
                (
                    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
                    [&run.to_bytes()[..], data].concat(),
                    RunReply::SIZE + data.len(),
                ),
                (
                    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH,
                    [&batch.to_bytes()[..], data].concat(),
                    RunBatchReply::SIZE + data.len(),
                ),
                (
                    IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE,
                    [&profile.to_bytes()[..], data].concat(),
                    ProfileReply::SIZE,
                ),
            ];
            for (code, input, output_len) in requests {
                let status = kernel
                    .device_io_control(&handle, code, &input, output_len)
                    .status;
                if kernel.faults_triggered().is_empty() {
                    assert_eq!(status, STATUS_SUCCESS, "{code:#x} without a fault");
                }
            }
            if kernel.faults_triggered().is_empty() {
                assert_eq!(
                    (link.invocations(), link.batch_invocations()),
                    (1 + 70, 4),
                    "RUN once and PROFILE 70 times; RUN_BATCH 4 times in one batch"
                );
            }
            kernel.close(handle);
        }
        drop(link);
    }
    driver.unload();
}

#[test]
fn every_allocation_failure_of_load_run_batch_profile_and_unload_is_clean() {
    assert!(sweep_allocation_failures(scenario) > 5);
}

#[test]
fn every_call_failure_of_load_run_batch_profile_and_unload_is_clean() {
    assert!(sweep_call_failures(scenario) > 3);
}
