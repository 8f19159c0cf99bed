//! The program-information provider as the eBPF core (core-sim) sees it.

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr;

use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::{
    ContextDescriptor, HelperAddresses, HelperFunction, HelperPrototype, ProgramData, ProgramInfo,
    ProgramInfoProvider, ProgramTypeDescriptor,
};
use ebpf_ext_sys::Error;
use ebpf_ext_sys::ebpf_base::{EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_RETURN_TYPE_INTEGER};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_SUCCESS, ebpf_result_t};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, ExAllocatePool2, ExFreePoolWithTag, POOL_FLAG_NON_PAGED};
use ebpf_ext_usersim::{Fault, Kernel, sweep_allocation_failures, sweep_call_failures};

const PROGRAM_TYPE: GUID = GUID::from_u128(0xf788ef4a_207d_4dc3_85cf_0f2ea107213c);
const TAG: PoolTag = PoolTag::new(*b"PiTs");

/// Registers `data`'s provider: the test's only provider of the type, and no hook invokes its
/// programs.
fn register(data: &'static ProgramData) -> ebpf_ext_sys::Result<ProgramInfoProvider> {
    // SAFETY: as above.
    unsafe { ProgramInfoProvider::register(data, TAG) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SampleContext {
    data_start: *const u8,
    data_end: *const u8,
    value: u64,
}

unsafe extern "win64" fn get_value(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: called with a SampleContext (by the tests, never here).
    unsafe { (*(ctx as *const SampleContext)).value }
}

unsafe extern "win64" fn copy_data(
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _ctx: *const c_void,
) -> u64 {
    0
}

/// Bytes of the core's header in front of a test-run context (`EBPF_CONTEXT_HEADER`).
const HEADER: usize = 64;

/// `context_create`: the context must be a whole SampleContext; data becomes the packet.
unsafe extern "win64" fn create(
    data_in: *const u8,
    data_size: usize,
    context_in: *const u8,
    context_size: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    if context_in.is_null() || context_size < size_of::<SampleContext>() || context.is_null() {
        return EBPF_INVALID_ARGUMENT;
    }
    // The core's 64-byte context header, then the context.
    // SAFETY: allocating from pool at PASSIVE_LEVEL.
    let block = unsafe {
        ExAllocatePool2(
            POOL_FLAG_NON_PAGED,
            HEADER + size_of::<SampleContext>(),
            TAG.value(),
        )
    };
    if block.is_null() {
        return ebpf_ext_sys::ebpf_result::EBPF_NO_MEMORY;
    }
    let p = block.wrapping_byte_add(HEADER).cast::<SampleContext>();
    // SAFETY: `context_in` holds a SampleContext (size checked).
    let mut c = unsafe { context_in.cast::<SampleContext>().read_unaligned() };
    c.data_start = data_in;
    c.data_end = data_in.wrapping_add(data_size);
    // SAFETY: fresh allocation; `context` is writable.
    unsafe { p.write(c) };
    // SAFETY: as above.
    unsafe { context.write(p.cast()) };
    EBPF_SUCCESS
}

unsafe extern "win64" fn destroy(
    context: *mut c_void,
    _data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    if context.is_null() {
        return;
    }
    // SAFETY: the core passes the context from `create` and writable size slots.
    unsafe {
        if !data_size_out.is_null() {
            *data_size_out = 0;
        }
    }
    let capacity = if context_size_out.is_null() {
        0
    } else {
        // SAFETY: a non-null size slot from the core.
        unsafe { *context_size_out }
    };
    if capacity >= size_of::<SampleContext>() && !context_out.is_null() {
        // SAFETY: the context is a live SampleContext; the output has room.
        let mut c = unsafe { context.cast::<SampleContext>().read() };
        c.data_start = ptr::null();
        c.data_end = ptr::null();
        // SAFETY: as above.
        unsafe { context_out.cast::<SampleContext>().write_unaligned(c) };
        // SAFETY: writable slot.
        unsafe { *context_size_out = size_of::<SampleContext>() };
    } else if !context_size_out.is_null() {
        // SAFETY: writable slot.
        unsafe { *context_size_out = 0 };
    }
    // SAFETY: allocated in `create` with TAG, the header in front.
    unsafe { ExFreePoolWithTag(context.wrapping_byte_sub(HEADER), TAG.value()) };
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<SampleContext>(
    Some(offset_of!(SampleContext, data_start)),
    Some(offset_of!(SampleContext, data_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"sample", &CONTEXT, PROGRAM_TYPE, 999, true);
static HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(
    0x1_0001,
    c"sample_get_value",
    EBPF_RETURN_TYPE_INTEGER,
    &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX],
)];
// The core's prototype for 19 (no arguments), read through the implicit context.
static GLOBAL_HELPERS: [HelperPrototype; 1] = [HelperPrototype::new(
    19,
    c"bpf_get_current_pid_tgid_override",
    EBPF_RETURN_TYPE_INTEGER,
    &[],
)
.with_implicit_context()];
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &HELPERS, &GLOBAL_HELPERS);
static FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(get_value)];
static GLOBAL_FUNCTIONS: [HelperFunction; 1] = [HelperFunction::with_context(copy_data)];
static ADDRESSES: HelperAddresses = HelperAddresses::new(&FUNCTIONS);
static GLOBAL_ADDRESSES: HelperAddresses = HelperAddresses::new(&GLOBAL_FUNCTIONS);
static DATA: ProgramData = ProgramData::new(&INFO)
    .with_helpers(&ADDRESSES)
    .with_global_helpers(&GLOBAL_ADDRESSES)
    .with_context_functions(create, destroy)
    .with_required_irql(DISPATCH_LEVEL)
    .checked();

#[test]
fn the_core_sees_and_accepts_the_program_data() {
    let kernel = Kernel::new();
    let provider = register(&DATA).expect("register");
    let client =
        ProgramInfoClient::attach(PROGRAM_TYPE).expect("the core accepts the program data");
    let info = client.info();
    assert_eq!(
        (
            info.name.as_str(),
            info.program_type,
            info.bpf_prog_type,
            info.is_privileged
        ),
        ("sample", PROGRAM_TYPE, 999, true)
    );
    let c = info.context_descriptor;
    assert_eq!((c.size, c.data, c.end, c.meta), (24, 0, 8, -1));
    assert_eq!(info.required_irql, DISPATCH_LEVEL);
    assert_eq!(info.helpers.len(), 1);
    let helper = &info.helpers[0];
    assert_eq!(
        (helper.id, helper.name.as_str()),
        (0x1_0001, "sample_get_value")
    );
    assert_eq!(helper.arguments[0], EBPF_ARGUMENT_TYPE_PTR_TO_CTX);
    assert_eq!(helper.address, Some(get_value as *const () as u64));
    let global = &info.global_helpers[0];
    assert!(global.implicit_context);
    assert_eq!(global.address, Some(copy_data as *const () as u64));
    assert!(info.has_context_create && info.has_context_destroy);
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn test_run_context_round_trip() {
    let kernel = Kernel::new();
    let provider = register(&DATA).expect("register");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
    let input = SampleContext {
        data_start: ptr::null(),
        data_end: ptr::null(),
        value: 77,
    };
    // SAFETY: SampleContext is plain data; viewing it as bytes is fine.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            ptr::from_ref(&input).cast::<u8>(),
            size_of::<SampleContext>(),
        )
    };
    let packet = [1u8, 2, 3];
    let ctx = client.create_context(&packet, bytes).expect("create");
    // SAFETY: the provider created a SampleContext.
    let created = unsafe { ctx.as_ptr().cast::<SampleContext>().read() };
    let given = ctx.data_in();
    assert_eq!(
        (created.value, created.data_start, created.data_end),
        (77, given.start.cast_const(), given.end.cast_const()),
        "the data context_create received"
    );
    let out = ctx.destroy(0, 64).expect("destroy");
    assert_eq!(out.context_size_out, size_of::<SampleContext>());
    assert!(
        client.create_context(&packet, &bytes[..8]).is_err(),
        "short context refused"
    );
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn unregister_detaches_the_core() {
    let kernel = Kernel::new();
    let provider = register(&DATA).expect("register");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
    drop(provider);
    assert!(!client.is_attached());
    assert_eq!(client.detach_count(), 1);
    drop(client);
    kernel.assert_no_leaks();
}

#[test]
fn register_failures() {
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("NmrRegisterProvider", 1));
    assert!(matches!(
        register(&DATA),
        Err(Error::Api {
            api: "NmrRegisterProvider",
            ..
        })
    ));
    kernel.inject(Fault::Allocation(1));
    assert!(matches!(register(&DATA), Err(Error::InsufficientResources)));
    kernel.assert_no_leaks();
}

#[test]
fn allocation_failure_sweep() {
    let points = sweep_allocation_failures(|_| {
        if let Ok(provider) = register(&DATA) {
            let client = ProgramInfoClient::attach(PROGRAM_TYPE);
            drop(client);
            drop(provider);
        }
    });
    assert!(points >= 3, "swept {points}");
}

#[test]
fn api_failure_sweep() {
    let points = sweep_call_failures(|_| {
        if let Ok(provider) = register(&DATA) {
            let client = ProgramInfoClient::attach(PROGRAM_TYPE);
            drop(client);
            drop(provider);
        }
    });
    assert!(points >= 2, "swept {points}");
}

/// Stress: core-sim program-information clients, the kind the core registers for each
/// program it loads, attach and leave on four threads while the provider registers and
/// unregisters over and over, as programs load while an extension restarts (the clients
/// alone: no program is loaded). Each attach either gets the provider's data or
/// fails to load (nothing else), usersim finds no misuse of NMR, and nothing leaks. The cycles
/// go on until both outcomes were seen (here: thousands of each in 50 cycles).
#[test]
fn clients_come_and_go_while_the_provider_registers_and_unregisters() {
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use ebpf_ext_core_sim::CoreError;

    /// Stops the workers however the cycles end (a failed assertion too), so the scope's
    /// join does not wait for ever.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let kernel = Kernel::new();
    let (attached, refused, stop) = (AtomicU32::new(0), AtomicU32::new(0), AtomicBool::new(false));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                kernel.scoped(scope, || {
                    while !stop.load(Ordering::SeqCst) {
                        match ProgramInfoClient::attach(PROGRAM_TYPE) {
                            Ok(client) => {
                                assert_eq!(client.info().program_type, PROGRAM_TYPE);
                                attached.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(CoreError::ExtensionFailedToLoad { .. }) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(other) => panic!("neither attached nor refused: {other}"),
                        }
                    }
                })
            })
            .collect();
        let _stop = Stop(&stop);
        let started = std::time::Instant::now();
        let mut cycles = 0;
        while cycles < 50
            || attached.load(Ordering::SeqCst) == 0
            || refused.load(Ordering::SeqCst) == 0
        {
            assert!(
                started.elapsed() < core::time::Duration::from_secs(30),
                "both outcomes within 30 s"
            );
            let provider = register(&DATA).expect("register");
            std::thread::yield_now();
            drop(provider);
            std::thread::yield_now();
            cycles += 1;
        }
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.join().expect("a worker");
        }
    });
    kernel.assert_no_leaks();
}

ebpf_ext_program_info::no_padding! {
    /// A context with no data pointers.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Bare {
        value: u64,
        other: u64,
    }
}

const BARE: GUID = GUID::from_u128(0xba4e_0001_0000_4000_8000_0000_0000_0001);

ebpf_ext_program_info::program_type! {
    /// A program type with no helpers of its own, as netebpfext's `bind`.
    static BARE_DATA = c"bare", BARE, 1001;
    context Bare;
    helpers {}
}

/// A program type without type-specific helpers publishes none and no address table (a NULL
/// one, which the core accepts only with a count of 0), and the core accepts it.
#[test]
fn a_program_type_without_helpers_publishes_none_and_no_address_table() {
    let kernel = Kernel::new();
    let raw = BARE_DATA.raw();
    assert!(
        raw.program_type_specific_helper_function_addresses
            .is_null()
    );
    // SAFETY: the program info `program_type!` published, a `'static`.
    let info = unsafe { &*raw.program_info };
    assert_eq!(info.count_of_program_type_specific_helpers, 0);
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&BARE_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(BARE).expect("the core accepts the program data");
    let seen = client.info();
    assert_eq!((seen.name.as_str(), seen.bpf_prog_type), ("bare", 1001));
    assert!(seen.helpers.is_empty());
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}
