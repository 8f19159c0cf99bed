//! The hook provider against the eBPF-core stand-in: the core's own checks of the provider
//! (attach provider data, module id), the core's client data and dispatch table, malformed
//! links, invocation, batching and detach.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::unnecessary_wraps,
    clippy::semicolon_if_nothing_returned,
    reason = "tests"
)]

use core::ffi::c_void;

use ebpf_ext_core_sim::{CoreError, Link, LinkSpec, Malformation};
use ebpf_ext_hook::{
    AttachPolicy, AttachRequest, Attached, HookConfig, HookExtension, HookProvider, ProgramContext,
};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER};
use ebpf_ext_sys::wdm::{DEVICE_OBJECT, DISPATCH_LEVEL, IoDeleteDevice, PASSIVE_LEVEL};
use ebpf_ext_sys::{Error, Result};
use ebpf_ext_usersim::{DriverObject, Kernel, set_current_irql};

const ATTACH_TYPE: GUID = GUID::from_u128(0xf788ef4b_207d_4dc3_85cf_0f2ea107213c);
const PROGRAM_TYPE: GUID = GUID::from_u128(0xf788ef4a_207d_4dc3_85cf_0f2ea107213c);

struct Hook;

impl HookExtension for Hook {
    type Parameter = u32;
    type ClientData = u64;
    type Context = u32;
    fn on_attach(&self, request: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<u64> {
        Ok(request.prog_attach_flags)
    }
}

fn setup() -> (Kernel, DriverObject, *mut DEVICE_OBJECT, HookProvider<Hook>) {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    let config = HookConfig {
        attach_type: ATTACH_TYPE,
        program_type: PROGRAM_TYPE,
        bpf_attach_type: 8,
        link_type: 1,
        policy: AttachPolicy::SingleAttachPerParameter,
        wildcard: Some(0),
        max_clients: 8,
        tag: PoolTag::new(*b"HkCs"),
    };
    // SAFETY: the device outlives the provider (deleted in `teardown` after it).
    let provider = unsafe { HookProvider::register(config, Hook, device) }.expect("register");
    (kernel, driver, device, provider)
}

fn teardown(kernel: &Kernel, device: *mut DEVICE_OBJECT, provider: HookProvider<Hook>) {
    drop(provider);
    kernel.wait_for_work_items();
    // SAFETY: created in `setup`, deleted once.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}

fn spec(parameter: u32) -> LinkSpec {
    LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE).attach_parameter(&parameter.to_le_bytes())
}

fn verdict(ctx: *mut c_void) -> core::result::Result<u32, i32> {
    // SAFETY: the tests pass a ProgramContext<u32>.
    Ok(unsafe { *ctx.cast::<u32>() } * 2)
}

#[test]
fn the_core_accepts_the_provider_and_runs_programs() {
    let (kernel, _driver, device, provider) = setup();
    let link = Link::attach_without_program_type(spec(7).prog_attach_flags(0xAB), verdict)
        .expect("the core's checks pass");
    assert_eq!(
        (link.bpf_attach_type(), link.link_type()),
        (Some(8), Some(1))
    );
    assert_eq!(*provider.clients().iter().next().unwrap().data(), 0xAB);
    let mut ctx = ProgramContext::new(21u32);
    set_current_irql(DISPATCH_LEVEL);
    assert_eq!(provider.invoke(&7, &mut ctx), Ok(42));
    set_current_irql(PASSIVE_LEVEL);
    assert_eq!(
        (link.invocations(), link.last_irql()),
        (1, Some(DISPATCH_LEVEL))
    );
    provider.with_batch(&7, |batch| {
        for _ in 0..8 {
            assert_eq!(batch.invoke(&mut ctx), Ok(42));
        }
    });
    assert_eq!(
        (
            ebpf_ext_core_sim::batch_begins(),
            ebpf_ext_core_sim::batch_ends(),
            ebpf_ext_core_sim::open_batches(),
            link.batch_invocations()
        ),
        (1, 1, 0, 8),
        "one batch on this thread, begun, invoked and ended at one state address (the \
         core-sim bug-checks otherwise)"
    );
    link.detach().expect("detach");
    teardown(&kernel, device, provider);
}

#[test]
fn policy_refusals_reach_the_core() {
    let (kernel, _driver, device, provider) = setup();
    let first = Link::attach_without_program_type(spec(3), verdict).expect("attach");
    match Link::attach_without_program_type(spec(3), verdict) {
        Err(e @ CoreError::ExtensionFailedToLoad { .. }) => {
            assert_eq!(e.provider_status(), Some(STATUS_ACCESS_DENIED))
        }
        other => panic!("{other:?}"),
    }
    drop(first);
    teardown(&kernel, device, provider);
}

#[test]
fn malformed_links_are_refused() {
    let (kernel, _driver, device, provider) = setup();
    for m in [
        Malformation::NoClientData,
        Malformation::HeaderVersion(7),
        Malformation::HeaderSize(16),
        Malformation::HeaderTotalSize(8),
        Malformation::NullData,
        Malformation::DataSize(3),
        Malformation::NoDispatchTable,
        Malformation::DispatchVersion(0),
        Malformation::DispatchVersion(2),
        Malformation::DispatchVersion(0xFFFF),
        Malformation::DispatchCount(0),
        Malformation::NullInvoke,
    ] {
        match Link::attach_without_program_type(spec(1).malformed(m), verdict) {
            Err(e) => assert_eq!(e.provider_status(), Some(STATUS_INVALID_PARAMETER), "{m:?}"),
            Ok(_) => panic!("{m:?} attached"),
        }
    }
    for m in [
        Malformation::GenericDispatchTable,
        Malformation::NullBatchFunctions,
    ] {
        let link = Link::attach_without_program_type(spec(1).malformed(m), verdict)
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        let mut ctx = ProgramContext::new(1u32);
        provider.with_batch(&1, |batch| {
            assert_eq!(
                batch.invoke(&mut ctx),
                Ok(2),
                "{m:?}: invoked singly without batch entries"
            );
        });
        link.detach().expect("detach");
    }
    assert_eq!(
        provider.invoke(&1, &mut ProgramContext::new(1u32)),
        Err(Error::ObjectNotFound)
    );
    teardown(&kernel, device, provider);
}

#[test]
fn provider_unregistering_first_detaches_the_links() {
    let (kernel, _driver, device, provider) = setup();
    let a = Link::attach_without_program_type(spec(1), verdict).expect("attach");
    let b = Link::attach_without_program_type(spec(2), verdict).expect("attach");
    drop(provider);
    assert!(!a.is_attached() && !b.is_attached());
    a.detach().expect("detach after the provider left");
    b.detach().expect("detach after the provider left");
    kernel.wait_for_work_items();
    // SAFETY: created in `setup`, deleted once.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}
