//! The hook's attach rule and program selection, and `context_create` / `context_destroy`
//! at their edges, against the linked crate with Rust closures as programs.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::{CoreError, Input, Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_sys::ebpf_result::EBPF_INVALID_ARGUMENT;
use ebpf_ext_sys::ntstatus::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_SUCCESS,
};
use ebpf_ext_usersim::{Caller, Kernel};
use sample_ext::hook::ATTACH_TYPE;
use sample_ext::program::PROGRAM_TYPE;
use sample_ext::protocol::{
    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN, REQUEST_VERSION, RunReply, RunRequest, WIN32_PATH,
};
use sample_harness::ext::context_in;
use sample_harness::{LoadedDriver, Target};

fn spec(parameter: Option<u32>) -> LinkSpec {
    let spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
    match parameter {
        Some(p) => spec.attach_parameter(&p.to_le_bytes()),
        None => spec,
    }
}

#[test]
fn one_program_per_parameter_and_runs_select_by_parameter() {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let five = Link::attach(spec(Some(5)), |_| Ok(50)).expect("parameter 5");
    assert!(
        Link::attach(spec(Some(5)), |_| Ok(51)).is_err(),
        "a second program for 5"
    );
    assert!(
        Link::attach(spec(None), |_| Ok(0)).is_err(),
        "a parameterless program next to another"
    );
    let six = Link::attach(spec(Some(6)), |_| Ok(60)).expect("parameter 6");
    let handle = kernel
        .open(WIN32_PATH, Caller::Administrator)
        .expect("open");
    let run = |parameter: u32| {
        let request = RunRequest {
            version: REQUEST_VERSION,
            attach_parameter: parameter,
            uint32_data: 0,
            data_len: 3,
        };
        let input = [request.to_bytes().as_slice(), b"abc"].concat();
        let result = kernel.device_io_control(
            &handle,
            IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
            &input,
            RunReply::SIZE + 3,
        );
        (
            result.status,
            RunReply::from_bytes(&result.output).map(|r| r.result),
        )
    };
    assert_eq!(run(5), (STATUS_SUCCESS, Some(50)));
    assert_eq!(run(6), (STATUS_SUCCESS, Some(60)));
    assert_eq!(run(7).0, STATUS_NOT_FOUND);
    kernel.close(handle);
    five.detach().expect("detach");
    six.detach().expect("detach");
    driver.unload();
    kernel.assert_no_leaks();
}

/// The status the hook provider refused `spec` with.
fn refused(spec: LinkSpec) -> Option<i32> {
    match Link::attach(spec, |_| Ok(0)) {
        Err(CoreError::ExtensionFailedToLoad {
            provider_status, ..
        }) => provider_status,
        other => panic!("not refused by the provider: {other:?}"),
    }
}

/// Where this port's hook is narrower than upstream's, on purpose: an attach parameter is
/// exactly 4 bytes (upstream compares parameters of any length), and at most 64 programs are
/// attached at once (upstream keeps a list).
#[test]
fn parameters_are_four_bytes_and_at_most_64_programs_attach() {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    for bytes in [&[1u8][..], &[1, 0, 0, 0, 0, 0, 0, 0]] {
        let spec = LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(bytes);
        assert_eq!(
            refused(spec),
            Some(STATUS_INVALID_PARAMETER),
            "a {}-byte parameter",
            bytes.len()
        );
    }
    let links: Vec<Link> = (0..64)
        .map(|p| Link::attach(spec(Some(p)), |_| Ok(0)).expect("one of 64"))
        .collect();
    assert_eq!(
        refused(spec(Some(64))),
        Some(STATUS_INSUFFICIENT_RESOURCES),
        "a 65th"
    );
    for link in links {
        link.detach().expect("detach");
    }
    let again = Link::attach(spec(Some(64)), |_| Ok(0)).expect("room again");
    again.detach().expect("detach");
    driver.unload();
    kernel.assert_no_leaks();
}

#[test]
fn context_create_and_destroy_at_their_edges() {
    let kernel = Kernel::new();
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("program info");
    let data = b"Seattle".to_vec();
    let mut context = context_in(9, 8, [1, 2]);
    // The two bytes C leaves as padding after `uint16_data`: ctx_out has the caller's.
    context[22..24].copy_from_slice(&[0xAB, 0xCD]);
    for bad in [
        Input::Null { size: 32 },
        Input::Bytes(&context[..31]),
        Input::Bytes(&[]),
    ] {
        assert_eq!(
            client.create_context_with(Input::Bytes(&data), bad).err(),
            Some(EBPF_INVALID_ARGUMENT),
            "{bad:?}"
        );
    }
    // Enough room: the context (32 bytes) and the data come back.
    let created = client.create_context(&data, &context).expect("created");
    let out = created.destroy(data.len(), 32).expect("destroyed");
    assert_eq!(
        (out.data_size_out, out.data.as_slice()),
        (7, &b"Seattle"[..])
    );
    assert_eq!(out.context_size_out, 32);
    assert_eq!(
        out.context[16..],
        context[16..],
        "the values and the padding"
    );
    // Too little room: sizes 0.
    let created = client.create_context(&data, &context).expect("created");
    let out = created.destroy(6, 31).expect("destroyed");
    assert_eq!((out.data_size_out, out.context_size_out), (0, 0));
    // No data: the created context's data pointers are NULL (not the caller's values, which
    // upstream keeps), nothing copied out.
    context[..16].fill(0x5A);
    let created = client.create_context(&[], &context).expect("created");
    // SAFETY: the provider created a SampleContext here, alive until destroyed.
    let made = unsafe { *created.as_ptr().cast::<sample_ext::SampleContext>() };
    assert!(made.data_start.as_ptr().is_null() && made.data_end.as_ptr().is_null());
    let out = created.destroy(16, 32).expect("destroyed");
    assert_eq!(out.data_size_out, 0);
    assert_eq!(out.context[..16], [0; 16]);
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}

/// PROFILE runs the program for its parameter `iterations` times over the payload and one
/// context, with the processor number in `uint32_data` and no helper data (upstream's profile
/// context), and replies with the count and the last result.
#[test]
fn profile_runs_the_program_for_its_parameter_with_upstreams_context() {
    use ebpf_extension_common::profile::{ProfileReply, ProfileRequest};
    use sample_ext::SampleContext;
    use sample_ext::protocol::IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE;
    use std::sync::{Arc, Mutex};

    // Enough processors that the second thread to ask gets a number other than the first's.
    let kernel = Kernel::with_config(ebpf_ext_usersim::Config {
        processor_count: 64,
        ..ebpf_ext_usersim::Config::default()
    });
    let driver = LoadedDriver::load(Target::Native(sample_ext::driver_entry), "SampleEbpfExt")
        .expect("DriverEntry");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let five = Link::attach(spec(Some(5)), move |context| {
        // SAFETY: the hook invokes programs with a `SampleContext`, theirs to write.
        let context = unsafe {
            let written = &mut *context.cast::<SampleContext>();
            written.uint16_data += 1;
            *written
        };
        let start = context.data_start.as_ptr();
        let len = (context.data_end.as_ptr() as usize).saturating_sub(start as usize);
        // SAFETY: its data pointers span the run's copy of the payload.
        let data = unsafe { std::slice::from_raw_parts(start, len) }.to_vec();
        let helper_data = (context.helper_data_1, context.helper_data_2);
        let written = context.uint16_data;
        record
            .lock()
            .expect("record")
            .push((context.uint32_data, helper_data, written, data));
        Ok(55)
    })
    .expect("parameter 5");
    // A thread of its own, so that its processor number is not the first thread's 0.
    let _ = ebpf_extension_common::irql::current_processor();
    let (processor, status, reply) = std::thread::scope(|s| {
        s.spawn(|| {
            kernel.bind_current_thread();
            let handle = kernel.open(WIN32_PATH, Caller::System).expect("open");
            let profile = |parameter: u32| {
                let request = ProfileRequest {
                    version: REQUEST_VERSION,
                    parameter,
                    iterations: 3,
                    flags: 0,
                    data_len: 3,
                };
                let input = [request.to_bytes().as_slice(), b"abc"].concat();
                kernel.device_io_control(
                    &handle,
                    IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE,
                    &input,
                    ProfileReply::SIZE,
                )
            };
            assert_eq!(profile(6).status, STATUS_NOT_FOUND, "no program for 6");
            let result = profile(5);
            kernel.close(handle);
            let processor = ebpf_extension_common::irql::current_processor();
            (
                processor,
                result.status,
                ProfileReply::from_bytes(&result.output),
            )
        })
        .join()
        .expect("thread")
    });
    assert_ne!(processor, 0, "a processor number other than the default");
    assert_eq!(status, STATUS_SUCCESS);
    let reply = reply.expect("reply");
    assert_eq!(
        (reply.iterations, reply.result, reply.programs_run),
        (3, 55, 1)
    );
    let expected = |written| (processor, (0, 0), written, b"abc".to_vec());
    assert_eq!(
        *seen.lock().expect("seen"),
        [expected(1), expected(2), expected(3)],
        "each iteration sees what the last wrote to the context"
    );
    five.detach().expect("detach");
    driver.unload();
    kernel.assert_no_leaks();
}
