//! Hook client attach data and dispatch tables against `ebpf-ext-hook`'s `HookProvider`.
//!
//! One input is a hook (attach policy, parameter type, wildcard, capacity, how the extension's
//! on-attach answers) and a script of links: each link is an NMR client of the hook NPI whose
//! characteristics, registration instance, client data (`ebpf_extension_data_t` header,
//! attach parameter, flags) and program dispatch table (version, count, each slot NULL or a
//! function) come from the input, attached through usersim's real NMR. The script attaches,
//! detaches and invokes in any order; at the end everything is torn down and usersim must
//! hold exactly the pool, NMR registrations and bindings it held before the input.
//!
//! Every buffer the client presents is allocated with exactly the length it declares (client
//! data: `max(header, header.size)` bytes; attach parameter: `data_size` bytes; dispatch
//! table: `8 + 8 * count` bytes), so AddressSanitizer reports any read past what the client
//! promised. Dispatch entries the ABI does not define are poisoned (non-canonical addresses):
//! calling one faults.
//!
//! Properties checked besides "no crash, no leak": an accepted client had a dispatch table
//! with a non-NULL invoke entry; a program is invoked only while its link is attached (not
//! after its detach has been waited for); the extension's on-detach runs exactly once per
//! accepted on-attach; a batch (`with_batch`) is begun at most once and ended exactly once
//! if begun, every batch invoke and the end get the state the begin prepared, a failed begin
//! means no batch invoke and no end, and every event of a batch sees the same programs; under
//! a policy that runs wildcards last, no specific program is offered after a wildcard one.
#![no_main]

mod common;

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arbitrary::Arbitrary;
use ebpf_ext_hook::{
    AttachParameter, AttachPolicy, AttachRequest, Attached, Flow, HookConfig, HookExtension,
    HookProvider, ProgramContext,
};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::Error;
use ebpf_ext_sys::ebpf_extension::ebpf_execution_context_state_t;
use ebpf_ext_sys::ebpf_extension_uuids::{
    EBPF_HOOK_EXTENSION_IID, EBPF_PROGRAM_INFO_EXTENSION_IID,
};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_SUCCESS, ebpf_result_t};
use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_0, NPI_REGISTRATION_INSTANCE,
    NmrClientAttachProvider, NmrDeregisterClient, NmrRegisterClient,
    NmrWaitForClientDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_NOINTERFACE, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::DEVICE_OBJECT;
use ebpf_ext_usersim::{DriverObject, Kernel, TagUsage};
use libfuzzer_sys::fuzz_target;

const ATTACH_TYPE: GUID = GUID::from_u128(0xf0f0_0001_aee7_11ec_9a30_1860_2489_beee);
const OTHER_ATTACH_TYPE: GUID = GUID::from_u128(0xf0f0_0002_aee7_11ec_9a30_1860_2489_beee);
const PROGRAM_TYPE: GUID = GUID::from_u128(0xf0f0_0003_aeec_11ec_9a30_1860_2489_beee);
const TAG: PoolTag = PoolTag::new(*b"FzHk");
const MAX_LINKS: usize = 6;
const MAX_OPS: usize = 24;
/// Dispatch entries past the four the ABI defines hold this (plus the index): non-canonical,
/// so a call through one faults.
const POISON_ENTRY: u64 = 0xBAD0_0000_0000_0000;

tracelogging::define_provider!(
    TRACE,
    "EbpfExtFuzzHookProvider",
    id("6c0b7a3e-5a43-4c8e-9b1a-3f0f2d6b8e11")
);

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
enum ParameterKind {
    U32,
    Unit,
    U8,
    Guid,
    Bytes24,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Policy {
    Single,
    PerParameter,
    Multi,
    Unrestricted,
}

#[derive(Arbitrary, Debug)]
struct HookInput {
    kind: ParameterKind,
    policy: Policy,
    /// The wildcard value's bytes, if the hook has one.
    wildcard: Presence<[u8; 24]>,
    /// 1..=8 after reduction.
    max_clients: u8,
    /// On-attach applies ntosebpfext's exclusive-wildcard rule.
    exclusive_wildcard: bool,
    /// Bit n set: on-attach refuses the n-th attach it sees.
    refuse_mask: u16,
    /// Drop the provider while links are still attached (it must detach them).
    unregister_first: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum NpiChoice {
    Hook,
    ProgramInfo,
    Other(u128),
    Null,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ModuleChoice {
    /// `MIT_GUID` with a fresh GUID.
    Guid,
    /// Any length, type and id bytes.
    Raw {
        length: u16,
        kind: i32,
        id: u128,
    },
    Null,
}

#[derive(Arbitrary, Debug, Clone)]
enum AttachData {
    /// `data` points to these bytes; `data_size` is their length, or `declared` clamped to
    /// it (a client may hand over more than it declares, never less).
    Bytes {
        bytes: Vec<u8>,
        declared: Presence<u16>,
    },
    /// `data` NULL, with this `data_size`.
    Null { data_size: u64 },
}

#[derive(Arbitrary, Debug, Clone)]
struct ClientData {
    /// XORed with the current version (1), so 0 is the current one.
    version: u16,
    /// `header.size`; the buffer is `max(24, size)` bytes.
    size: Size,
    /// XORed with 48 (the current total size).
    total_size: u64,
    data: AttachData,
    prog_attach_flags: u64,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Current,
    Any(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Slot {
    Function,
    Null,
}

#[derive(Arbitrary, Debug, Clone)]
struct Dispatch {
    /// XORed with the current version (1).
    version: u16,
    count: Count,
    slots: [Slot; 4],
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Count {
    Current,
    Any(u8),
    Large(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Program {
    Verdict(u32),
    Fails,
}

/// Something present (the first variant, so that zero input bytes mean "present") or absent.
#[derive(Arbitrary, Debug, Clone)]
enum Presence<T> {
    Present(T),
    Absent,
}

impl<T> Presence<T> {
    fn as_ref(&self) -> Option<&T> {
        match self {
            Presence::Present(t) => Some(t),
            Presence::Absent => None,
        }
    }
}

/// Fields are arranged so that all-zero input bytes describe a well-formed link: the fuzzer
/// starts from what the core presents and strays from there.
#[derive(Arbitrary, Debug, Clone)]
struct LinkInput {
    characteristics_version: u16,
    /// `Present`: the correct length (72).
    characteristics_length: Presence<()>,
    /// Another length instead.
    other_length: u16,
    no_attach_callback: bool,
    no_detach_callback: bool,
    no_cleanup_callback: bool,
    instance_version: u16,
    /// XORed with 40 (the correct size).
    instance_size: u16,
    instance_number: u32,
    npi: NpiChoice,
    module: ModuleChoice,
    /// `Absent`: no `NpiSpecificCharacteristics`.
    client_data: Presence<ClientData>,
    /// `Absent`: a NULL dispatch table.
    dispatch: Presence<Dispatch>,
    /// Attach to providers of another attach type only (so this link never binds to the hook).
    other_attach_type: bool,
    /// The client's `ClientAttachProvider` declines without calling `NmrClientAttachProvider`.
    decline: bool,
    program: Program,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Attach(u8),
    Detach(u8),
    Invoke([u8; 24]),
    InvokeUntil {
        parameter: [u8; 24],
        stop_after: u8,
        skip_mask: u8,
    },
    InvokeOnExpandedStack([u8; 24]),
    Clients,
    /// `with_batch` over `events` events (at most 16); the core's `batch_begin` fails when
    /// `begin_fails` (the programs are then invoked singly).
    Batch {
        parameter: [u8; 24],
        events: u8,
        begin_fails: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    hook: HookInput,
    links: Vec<LinkInput>,
    ops: Vec<Op>,
}

// ---- the environment: one usersim kernel per process ----------------------------------------

struct Env {
    kernel: Kernel,
    _driver: DriverObject,
    device: *mut DEVICE_OBJECT,
    baseline: Vec<TagUsage>,
}

thread_local! {
    /// Created on the fuzzing thread at the first input and never dropped: a usersim kernel
    /// must not be dropped from a thread-local destructor at exit (usersim's own thread-local
    /// binding may be gone by then).
    static ENV: &'static Env = Box::leak(Box::new(Env::new()));
}

impl Env {
    fn new() -> Env {
        let kernel = Kernel::new();
        ebpf_ext_trace::initiate(&TRACE).expect("tracing");
        let mut driver = DriverObject::new();
        let device = driver.create_device().expect("IoCreateDevice");
        let baseline = kernel.pool_outstanding();
        Env {
            kernel,
            _driver: driver,
            device,
            baseline,
        }
    }
}

fn with_env(f: impl FnOnce(&Env)) {
    ENV.with(|env| f(env));
}

// ---- the extension --------------------------------------------------------------------------

struct FuzzHook {
    exclusive_wildcard: bool,
    refuse_mask: u16,
    counters: Arc<Counters>,
}

/// Shared with the scenario, which checks them after the provider is gone.
#[derive(Default)]
struct Counters {
    seen: AtomicU32,
    accepted: AtomicU32,
    detached: AtomicU32,
}

/// The hook's extension, generic over the parameter type.
struct Extension<P>(FuzzHook, core::marker::PhantomData<P>);

impl<P: AttachParameter> HookExtension for Extension<P> {
    type Parameter = P;
    type ClientData = u32;
    type Context = [u8; 32];

    fn on_attach(
        &self,
        request: &AttachRequest<P>,
        attached: &Attached<'_, Self>,
    ) -> ebpf_ext_sys::Result<u32> {
        let n = self.0.counters.seen.fetch_add(1, Ordering::Relaxed);
        if n < 16 && self.0.refuse_mask & (1 << n) != 0 {
            return Err(Error::AccessDenied);
        }
        if self.0.exclusive_wildcard {
            attached.check_exclusive_wildcard(request)?;
        }
        // Walk what is attached: every entry must be readable.
        for client in attached.iter() {
            let _ = (
                client.parameter(),
                client.prog_attach_flags(),
                client.module_id(),
            );
        }
        Ok(self.0.counters.accepted.fetch_add(1, Ordering::Relaxed))
    }

    fn on_detach(&self, _client: &u32) {
        self.0.counters.detached.fetch_add(1, Ordering::Relaxed);
    }
}

/// A parameter value from input bytes.
fn parameter<P: AttachParameter>(bytes: &[u8; 24]) -> P {
    const { assert!(size_of::<P>() <= 24) };
    // SAFETY: `P: AttachParameter` accepts every bit pattern of its size, and `bytes` holds
    // at least that many.
    unsafe { bytes.as_ptr().cast::<P>().read_unaligned() }
}

// ---- the links (the eBPF core's side) -------------------------------------------------------

struct LinkState {
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    npi_id: GUID,
    module_id: NPI_MODULEID,
    client_data: Option<Vec<u8>>,
    attach_data: Option<Vec<u8>>,
    dispatch: Option<Vec<u8>>,
    target: GUID,
    decline: bool,
    program: Program,
    /// Registered and not yet deregistered: the provider may invoke it.
    live: AtomicBool,
    /// The provider accepted it (NmrClientAttachProvider succeeded).
    bound: AtomicBool,
    invocations: AtomicU32,
    handle: HANDLE,
}

unsafe extern "win64" fn invoke(
    binding: *const c_void,
    _context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t {
    // SAFETY: the binding context is the LinkState passed to NmrClientAttachProvider.
    let state = unsafe { &*binding.cast::<LinkState>() };
    assert!(
        state.live.load(Ordering::SeqCst) && state.bound.load(Ordering::SeqCst),
        "a program was invoked after its link detached (or without being attached)"
    );
    state.invocations.fetch_add(1, Ordering::Relaxed);
    match state.program {
        Program::Verdict(v) => {
            // SAFETY: the provider passes a writable result.
            unsafe { result.write(v) };
            EBPF_SUCCESS
        }
        Program::Fails => EBPF_INVALID_ARGUMENT,
    }
}

const BATCH_MAGIC: u64 = 0xB47C_4B47_C4B4_7C4B;

thread_local! {
    /// Batches begun and not yet ended, and whether the next `batch_begin` fails.
    static BATCHES: core::cell::Cell<(u32, bool)> = const { core::cell::Cell::new((0, false)) };
}

unsafe extern "win64" fn batch_begin(size: usize, state: *mut c_void) -> ebpf_result_t {
    assert!(
        size >= size_of::<ebpf_execution_context_state_t>(),
        "batch state too small"
    );
    let (open, fails) = BATCHES.get();
    if fails {
        return EBPF_INVALID_ARGUMENT;
    }
    assert_eq!(open, 0, "a batch begun inside another");
    BATCHES.set((open + 1, fails));
    // SAFETY: the provider passes `size` writable bytes.
    unsafe { state.cast::<u64>().write_unaligned(BATCH_MAGIC) };
    EBPF_SUCCESS
}

unsafe extern "win64" fn batch_invoke(
    binding: *const c_void,
    context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t {
    // SAFETY: the provider passes the state batch_begin prepared.
    assert_eq!(
        unsafe { state.cast::<u64>().read_unaligned() },
        BATCH_MAGIC,
        "batch invoke without batch begin"
    );
    // SAFETY: as `invoke`.
    unsafe { invoke(binding, context, result) }
}

unsafe extern "win64" fn batch_end(state: *mut c_void) -> ebpf_result_t {
    // SAFETY: the provider passes the state batch_begin prepared.
    assert_eq!(
        unsafe { state.cast::<u64>().read_unaligned() },
        BATCH_MAGIC,
        "batch end without batch begin (or at another address)"
    );
    // SAFETY: as above.
    unsafe { state.cast::<u64>().write_unaligned(0) };
    let (open, fails) = BATCHES.get();
    assert_eq!(open, 1, "batch end without batch begin");
    BATCHES.set((open - 1, fails));
    EBPF_SUCCESS
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the client context is the LinkState.
    let state = unsafe { &*context.cast::<LinkState>() };
    // SAFETY: NMR passes the provider's registration instance; a registered provider's
    // module id is non-NULL (usersim refuses registrations without one).
    let module = unsafe { *(*provider).ModuleId };
    if state.decline || module.guid() != Some(state.target) {
        return STATUS_NOINTERFACE;
    }
    let dispatch: *const c_void = state
        .dispatch
        .as_ref()
        .map_or(ptr::null(), |d| d.as_ptr().cast());
    let mut provider_binding = ptr::null_mut();
    let mut provider_dispatch = ptr::null();
    // SAFETY: inside ClientAttachProvider with NMR's binding handle; out slots are locals.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            context,
            dispatch,
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    if status == STATUS_SUCCESS {
        state.bound.store(true, Ordering::SeqCst);
    }
    if common::verbose() {
        eprintln!("  NmrClientAttachProvider: {status:#x}");
    }
    status
}

unsafe extern "win64" fn client_detach(context: *mut c_void) -> NTSTATUS {
    // SAFETY: the client binding context is the LinkState.
    let state = unsafe { &*context.cast::<LinkState>() };
    state.bound.store(false, Ordering::SeqCst);
    STATUS_SUCCESS
}

unsafe extern "win64" fn client_cleanup(_context: *mut c_void) {}

fn put<const N: usize>(buffer: &mut [u8], offset: usize, bytes: [u8; N]) {
    if let Some(slot) = buffer.get_mut(offset..offset + N) {
        slot.copy_from_slice(&bytes);
    }
}

impl LinkState {
    fn new(input: &LinkInput, index: usize) -> Box<LinkState> {
        let attach_data = match input.client_data.as_ref().map(|c| &c.data) {
            Some(AttachData::Bytes { bytes, .. }) => Some(bytes.clone()),
            _ => None,
        };
        // The client data: exactly as many bytes as the header declares (at least the header).
        let client_data = input.client_data.as_ref().map(|c| {
            let size = match c.size {
                Size::Current => 48,
                Size::Any(n) => usize::from(n),
            };
            let mut buffer = vec![0u8; size.max(24)];
            put(&mut buffer, 0, (c.version ^ 1).to_le_bytes());
            put(&mut buffer, 8, (size as u64).to_le_bytes());
            put(&mut buffer, 16, (c.total_size ^ 48).to_le_bytes());
            // `data` (offset 24) is written once the attach data has its final address.
            let data_size = match &c.data {
                AttachData::Null { data_size } => *data_size,
                AttachData::Bytes { bytes, declared } => {
                    declared.as_ref().map_or(bytes.len() as u64, |&d| {
                        u64::from(d).min(bytes.len() as u64)
                    })
                }
            };
            put(&mut buffer, 32, data_size.to_le_bytes());
            put(&mut buffer, 40, c.prog_attach_flags.to_le_bytes());
            buffer
        });
        let dispatch = input.dispatch.as_ref().map(|d| {
            let count: u16 = match d.count {
                Count::Current => 4,
                Count::Any(n) => u16::from(n),
                Count::Large(n) => n,
            };
            let mut table = vec![0u8; 8 + 8 * usize::from(count)];
            put(&mut table, 0, (d.version ^ 1).to_le_bytes());
            put(&mut table, 2, count.to_le_bytes());
            let functions = [
                invoke as *const () as usize,
                batch_begin as *const () as usize,
                batch_invoke as *const () as usize,
                batch_end as *const () as usize,
            ];
            for entry in 0..usize::from(count) {
                let value = match (d.slots.get(entry), functions.get(entry)) {
                    (Some(Slot::Function), Some(&f)) => f as u64,
                    (Some(Slot::Null), _) => 0,
                    _ => POISON_ENTRY | entry as u64,
                };
                put(&mut table, 8 + 8 * entry, value.to_le_bytes());
            }
            table
        });
        let npi_id = match input.npi {
            NpiChoice::Hook | NpiChoice::Null => EBPF_HOOK_EXTENSION_IID,
            NpiChoice::ProgramInfo => EBPF_PROGRAM_INFO_EXTENSION_IID,
            NpiChoice::Other(id) => GUID::from_u128(id),
        };
        let module_id = match input.module {
            ModuleChoice::Guid | ModuleChoice::Null => NPI_MODULEID::from_guid(GUID::from_u128(
                0x11AC_0000_0000_0000_0000_0000_0000_0000 | index as u128,
            )),
            ModuleChoice::Raw { length, kind, id } => NPI_MODULEID {
                Length: length,
                Type: kind,
                u: NPI_MODULEID_0 {
                    Guid: GUID::from_u128(id),
                },
            },
        };
        let mut state = Box::new(LinkState {
            characteristics: NPI_CLIENT_CHARACTERISTICS {
                Version: input.characteristics_version,
                Length: match input.characteristics_length {
                    Presence::Present(()) => size_of::<NPI_CLIENT_CHARACTERISTICS>() as u16,
                    Presence::Absent => input.other_length,
                },
                ClientAttachProvider: (!input.no_attach_callback).then_some(client_attach as _),
                ClientDetachProvider: (!input.no_detach_callback).then_some(client_detach as _),
                ClientCleanupBindingContext: (!input.no_cleanup_callback)
                    .then_some(client_cleanup as _),
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: input.instance_version,
                    Size: input.instance_size ^ 40,
                    NpiId: ptr::null(),
                    ModuleId: ptr::null(),
                    Number: input.instance_number,
                    NpiSpecificCharacteristics: ptr::null(),
                },
            },
            npi_id,
            module_id,
            client_data,
            attach_data,
            dispatch,
            target: if input.other_attach_type {
                OTHER_ATTACH_TYPE
            } else {
                ATTACH_TYPE
            },
            decline: input.decline,
            program: input.program,
            live: AtomicBool::new(false),
            bound: AtomicBool::new(false),
            invocations: AtomicU32::new(0),
            handle: ptr::null_mut(),
        });
        // Pointers into the box (its address is now fixed).
        let data_ptr = state
            .attach_data
            .as_ref()
            .map_or(0u64, |d| d.as_ptr() as u64);
        if let Some(buffer) = state.client_data.as_mut() {
            put(buffer, 24, data_ptr.to_le_bytes());
        }
        let instance = &mut state.characteristics.ClientRegistrationInstance;
        if !matches!(input.npi, NpiChoice::Null) {
            instance.NpiId = &raw const state.npi_id;
        }
        if !matches!(input.module, ModuleChoice::Null) {
            instance.ModuleId = &raw const state.module_id;
        }
        instance.NpiSpecificCharacteristics = state
            .client_data
            .as_ref()
            .map_or(ptr::null(), |c| c.as_ptr().cast());
        state
    }

    /// Whether what it presents could ever be accepted by a hook: a dispatch table with at
    /// least one entry and a non-NULL invoke entry.
    fn could_be_accepted(&self) -> bool {
        self.dispatch.as_ref().is_some_and(|d| {
            let count = u16::from_le_bytes([d[2], d[3]]);
            count >= 1 && d[8..16] != [0; 8]
        })
    }
}

struct Link {
    state: Box<LinkState>,
    registered: bool,
}

impl Link {
    fn attach(input: &LinkInput, index: usize) -> Link {
        let mut state = LinkState::new(input, index);
        state.live.store(true, Ordering::SeqCst);
        let context = ptr::from_mut(&mut *state).cast::<c_void>();
        let mut handle = ptr::null_mut();
        // SAFETY: the characteristics and everything they point to live in the box until the
        // deregistration below completes.
        let status = unsafe {
            NmrRegisterClient(&raw const state.characteristics, context, &raw mut handle)
        };
        let registered = status == STATUS_SUCCESS;
        if common::verbose() {
            eprintln!(
                "link {index}: NmrRegisterClient {status:#x}, bound to the hook: {}",
                state.bound.load(Ordering::SeqCst)
            );
        }
        if !registered {
            state.live.store(false, Ordering::SeqCst);
        }
        state.handle = handle;
        if state.bound.load(Ordering::SeqCst) {
            assert!(
                state.could_be_accepted(),
                "the hook accepted a client without an invoke function"
            );
        }
        Link { state, registered }
    }

    fn detach(&mut self) {
        if !self.registered {
            return;
        }
        self.registered = false;
        // SAFETY: our registration handle, deregistered once.
        let _ = unsafe { NmrDeregisterClient(self.state.handle) };
        // SAFETY: as above; deregistration started.
        let _ = unsafe { NmrWaitForClientDeregisterComplete(self.state.handle) };
        assert!(
            !self.state.bound.load(Ordering::SeqCst),
            "deregistration completed with the binding still attached"
        );
        self.state.live.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.detach();
    }
}

// ---- the scenario ---------------------------------------------------------------------------

fn scenario<P: AttachParameter>(env: &Env, input: &Input) {
    let hook = &input.hook;
    let config = HookConfig {
        attach_type: ATTACH_TYPE,
        program_type: PROGRAM_TYPE,
        bpf_attach_type: 3,
        link_type: 2,
        policy: match hook.policy {
            Policy::Single => AttachPolicy::SingleAttach,
            Policy::PerParameter => AttachPolicy::SingleAttachPerParameter,
            Policy::Multi => AttachPolicy::MultiAttachWithWildcard,
            Policy::Unrestricted => AttachPolicy::Unrestricted,
        },
        wildcard: hook.wildcard.as_ref().map(parameter::<P>),
        max_clients: usize::from(hook.max_clients % 8) + 1,
        tag: TAG,
    };
    let wildcards_last = config.policy.runs_wildcards_last();
    let counters = Arc::new(Counters::default());
    let extension = Extension::<P>(
        FuzzHook {
            exclusive_wildcard: hook.exclusive_wildcard,
            refuse_mask: hook.refuse_mask,
            counters: Arc::clone(&counters),
        },
        core::marker::PhantomData,
    );
    // SAFETY: the device lives as long as the environment, longer than the provider.
    let provider = unsafe { HookProvider::register(config, extension, env.device) }
        .expect("register the hook provider");
    let specs = &input.links[..input.links.len().min(MAX_LINKS)];
    let mut links: Vec<Option<Link>> = (0..specs.len()).map(|_| None).collect();
    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Attach(i) if !specs.is_empty() => {
                let i = usize::from(*i) % specs.len();
                if links[i].is_none() {
                    links[i] = Some(Link::attach(&specs[i], i));
                }
            }
            Op::Detach(i) if !specs.is_empty() => {
                let i = usize::from(*i) % specs.len();
                if let Some(mut link) = links[i].take() {
                    link.detach();
                }
            }
            Op::Invoke(p) => {
                let mut context = ProgramContext::new([0u8; 32]);
                let _ = provider.invoke(&parameter::<P>(p), &mut context);
            }
            Op::InvokeUntil {
                parameter: p,
                stop_after,
                skip_mask,
            } => {
                let mut context = ProgramContext::new([0u8; 32]);
                let mut seen = 0u32;
                let mut ran = 0u8;
                let mut wildcard_seen = false;
                let _ = provider.invoke_with(
                    &parameter::<P>(p),
                    &mut context,
                    |client| {
                        let _ = (client.data(), client.is_detaching());
                        let specific = client.parameter().is_some();
                        assert!(
                            !(wildcards_last && wildcard_seen && specific),
                            "a specific program offered after a wildcard one"
                        );
                        wildcard_seen |= !specific;
                        seen += 1;
                        seen > 8 || skip_mask & (1 << (seen - 1)) == 0
                    },
                    |context, _| {
                        let _ = context.len();
                        ran += 1;
                        if ran > *stop_after {
                            Flow::Stop
                        } else {
                            Flow::Continue
                        }
                    },
                );
            }
            Op::InvokeOnExpandedStack(p) => {
                let mut context = ProgramContext::new([0u8; 32]);
                let _ = provider.invoke_on_expanded_stack(
                    &parameter::<P>(p),
                    &mut context,
                    |_| true,
                    |_, _| Flow::Continue,
                );
            }
            Op::Batch {
                parameter: p,
                events,
                begin_fails,
            } => {
                BATCHES.set((0, *begin_fails));
                let mut context = ProgramContext::new([0u8; 32]);
                let results = provider.with_batch(&parameter::<P>(p), |batch| {
                    (0..events % 17)
                        .map(|_| batch.invoke(&mut context))
                        .collect::<Vec<_>>()
                });
                // Each event ran the same programs: the same outcome each time.
                assert!(
                    results.windows(2).all(|w| w[0] == w[1]),
                    "events of one batch saw different programs: {results:?}"
                );
                assert_eq!(BATCHES.get().0, 0, "a begun batch was not ended");
                BATCHES.set((0, false));
            }
            Op::Clients => {
                let clients = provider.clients();
                let _ = clients.len();
                for client in clients.iter() {
                    let _ = (client.data(), client.parameter(), client.module_id());
                }
            }
            _ => {}
        }
    }
    // The links go first, or (if the input says so) the provider is unregistered while they
    // are still attached and must detach them itself.
    let links: Vec<Link> = links.into_iter().flatten().collect();
    if hook.unregister_first {
        drop(provider);
        drop(links);
    } else {
        drop(links);
        drop(provider);
    }
    env.kernel.wait_for_work_items();
    env.kernel.etw_clear();
    let accepted = counters.accepted.load(Ordering::SeqCst);
    let detached = counters.detached.load(Ordering::SeqCst);
    assert_eq!(
        accepted, detached,
        "on-detach must run exactly once per accepted attach"
    );
    assert_eq!(
        env.kernel.pool_outstanding(),
        env.baseline,
        "pool leaked by this input"
    );
    assert!(
        env.kernel.nmr_registrations().is_empty(),
        "NMR registrations left behind"
    );
    assert_eq!(
        env.kernel.nmr_binding_count(),
        0,
        "NMR bindings left behind"
    );
}

fuzz_target!(|input: Input| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    with_env(|env| match input.hook.kind {
        ParameterKind::U32 => scenario::<u32>(env, &input),
        ParameterKind::Unit => scenario::<()>(env, &input),
        ParameterKind::U8 => scenario::<u8>(env, &input),
        ParameterKind::Guid => scenario::<GUID>(env, &input),
        ParameterKind::Bytes24 => scenario::<[u8; 24]>(env, &input),
    });
});
