//! `Extension::start`/`stop`: order, undo of partial work on every failure point, no leaks.

use core::mem::offset_of;

use ebpf_ext_usersim::{
    DriverObject, Fault, Kernel, sweep_allocation_failures, sweep_call_failures,
};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_RETURN_TYPE_INTEGER,
};

tracelogging::define_provider!(
    TRACE,
    "ExtensionTestProvider",
    id("bdd03353-2c68-4e7d-ae3a-c00790930188")
);

const PROGRAM_TYPE: GUID = GUID::from_u128(0xf788ef4a_207d_4dc3_85cf_0f2ea107213c);
const ATTACH_TYPE: GUID = GUID::from_u128(0xf788ef4b_207d_4dc3_85cf_0f2ea107213c);
const TAG: PoolTag = PoolTag::new(*b"ExTs");

#[repr(C)]
struct SampleContext {
    data_start: *mut u8,
    data_end: *mut u8,
    value: u64,
}

unsafe extern "win64" fn get_value(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the verifier passes a program context (tests never call this).
    unsafe { (*(ctx as *const SampleContext)).value }
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<SampleContext>(
    Some(offset_of!(SampleContext, data_start)),
    Some(offset_of!(SampleContext, data_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"sample", &CONTEXT, PROGRAM_TYPE, 999, false);
static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(
    0x1_0001,
    c"sample_get_value",
    EBPF_RETURN_TYPE_INTEGER,
    &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX],
)];
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &[]);
static HELPER_FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(get_value)];
static ADDRESSES: HelperAddresses = HelperAddresses::new(&HELPER_FUNCTIONS);
// SAFETY: the one helper reads the context as a `SampleContext`.
static DATA: TypedProgramData<SampleContext> =
    unsafe { TypedProgramData::new(ProgramData::new(&INFO).with_helpers(&ADDRESSES).checked()) };

struct Sample;

impl HookExtension for Sample {
    type Parameter = u32;
    type ClientData = ();
    type Context = SampleContext;
    fn on_attach(&self, _: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

fn config() -> ExtensionConfig<Sample> {
    ExtensionConfig {
        trace_provider: &TRACE,
        program_data: &DATA,
        tag: TAG,
        hook: HookConfig {
            attach_type: ATTACH_TYPE,
            program_type: PROGRAM_TYPE,
            bpf_attach_type: 8,
            link_type: 1,
            policy: AttachPolicy::MultiAttachWithWildcard,
            wildcard: Some(0),
            max_clients: 16,
            tag: TAG,
        },
        extension: Sample,
    }
}

#[test]
fn start_registers_everything_and_stop_unwinds_in_order() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    // SAFETY: the driver object outlives the extension.
    let extension = unsafe { Extension::start(driver.as_ptr(), config()) }.expect("start");
    let registrations = kernel.nmr_registrations();
    assert_eq!(registrations.len(), 2, "program-info and hook providers");
    assert_eq!(kernel.device_count(), 1);
    assert_eq!(kernel.etw_registrations(), 1);
    assert_eq!(extension.hook().clients().len(), 0);
    kernel.etw_clear();
    extension.stop();
    let messages = kernel.etw_messages();
    assert_eq!(
        messages,
        [
            "hook provider unregistered",
            "program information provider unregistered"
        ]
    );
    kernel.assert_no_leaks();
}

#[test]
fn every_allocation_failure_during_start_is_undone() {
    let points = sweep_allocation_failures(|_kernel| {
        let mut driver = DriverObject::new();
        // SAFETY: the driver object outlives the extension.
        if let Ok(extension) = unsafe { Extension::start(driver.as_ptr(), config()) } {
            drop(extension);
        }
    });
    assert!(points >= 5, "swept {points} points");
}

#[test]
fn every_api_failure_during_start_is_undone() {
    for api in ["EtwRegister", "IoCreateDevice", "NmrRegisterProvider"] {
        for n in 1..=2 {
            let kernel = Kernel::new();
            kernel.inject(Fault::Call(api, n));
            let mut driver = DriverObject::new();
            // SAFETY: the driver object outlives the extension.
            let result = unsafe { Extension::start(driver.as_ptr(), config()) };
            let fired = !kernel.faults_triggered().is_empty();
            assert_eq!(result.is_err(), fired, "{api} #{n}");
            drop(result);
            kernel.assert_no_leaks();
        }
    }
}

#[test]
fn every_kernel_routine_failure_during_start_is_undone() {
    let points = sweep_call_failures(|_kernel| {
        let mut driver = DriverObject::new();
        // SAFETY: the driver object outlives the extension.
        if let Ok(extension) = unsafe { Extension::start(driver.as_ptr(), config()) } {
            extension.stop();
        }
    });
    assert!(points >= 4, "swept {points} points");
}

#[test]
fn a_hook_configured_for_another_program_type_is_refused_and_nothing_is_left() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let mut wrong = config();
    wrong.hook.program_type = GUID::from_u128(0x5e5e_0002);
    // SAFETY: the driver object outlives the extension.
    let result = unsafe { Extension::start(driver.as_ptr(), wrong) };
    assert_eq!(result.err(), Some(Error::InvalidParameter));
    assert!(kernel.nmr_registrations().is_empty());
    assert_eq!(kernel.device_count(), 0);
    let traced = kernel.etw_messages_containing("another program type") > 0;
    assert!(traced, "the refusal is traced");
    kernel.assert_no_leaks();
}
