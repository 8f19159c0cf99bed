//! The hook's attach rule and program selection, and `context_create` / `context_destroy`
//! at their edges, against the linked crate with Rust closures as programs.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_core_sim::{Input, Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_sys::ebpf_result::EBPF_INVALID_ARGUMENT;
use ebpf_ext_sys::ntstatus::{STATUS_NOT_FOUND, STATUS_SUCCESS};
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
    // No data: NULL data pointers, nothing copied out.
    let created = client.create_context(&[], &context).expect("created");
    let out = created.destroy(16, 32).expect("destroyed");
    assert_eq!(out.data_size_out, 0);
    assert_eq!(out.context[..16], [0; 16]);
    drop(client);
    driver.unload();
    kernel.assert_no_leaks();
}
