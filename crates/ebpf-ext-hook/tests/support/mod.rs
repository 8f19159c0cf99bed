//! A minimal eBPF-core link for hook tests: an NMR client of the hook NPI whose dispatch table
//! runs a Rust closure as "the program".

#![allow(dead_code, reason = "each test file uses part of the support module")]
#![allow(
    clippy::std_instead_of_alloc,
    clippy::needless_pass_by_value,
    reason = "test support"
)]

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use ebpf_ext_sys::ebpf_extension::{
    ebpf_execution_context_state_t, ebpf_extension_data_t, ebpf_extension_program_dispatch_table_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_HOOK_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_SUCCESS, ebpf_result_t};
use ebpf_ext_sys::ebpf_windows::{EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION, ebpf_extension_header_t};
use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider,
    NmrDeregisterClient, NmrRegisterClient, NmrWaitForClientDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_NOINTERFACE, STATUS_SUCCESS};

/// The program: gets the context pointer, returns a verdict or an invoke failure.
pub(crate) type Program = Arc<dyn Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync>;

/// What the client presents; every field can be made wrong on purpose.
#[derive(Clone)]
pub(crate) struct ClientSpec {
    pub(crate) header: ebpf_extension_header_t,
    pub(crate) data: Option<Vec<u8>>,
    /// Overrides `data_size` (otherwise the data's length, or 0).
    pub(crate) data_size: Option<usize>,
    /// A NULL `data` pointer even when `data_size` is non-zero.
    pub(crate) null_data: bool,
    pub(crate) prog_attach_flags: u64,
    /// No `NpiSpecificCharacteristics` at all.
    pub(crate) no_client_data: bool,
    pub(crate) dispatch: DispatchSpec,
    /// Invoke and batch invoke without bookkeeping (no counters, no batch log): for
    /// benchmarks.
    pub(crate) quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DispatchSpec {
    Full,
    /// Generic table of one entry (as upstream unit-test harnesses pass).
    InvokeOnly,
    Null,
    CountZero,
    NullInvoke,
    /// count 4 but NULL batch entries.
    NoBatch,
    /// The full table with this `version`.
    Version(u16),
}

impl ClientSpec {
    pub(crate) fn with_parameter(bytes: &[u8]) -> Self {
        ClientSpec {
            data: Some(bytes.to_vec()),
            ..ClientSpec::wildcard()
        }
    }
    pub(crate) fn wildcard() -> Self {
        ClientSpec {
            header: EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION,
            data: None,
            data_size: None,
            null_data: false,
            prog_attach_flags: 0,
            no_client_data: false,
            dispatch: DispatchSpec::Full,
            quiet: false,
        }
    }
}

/// State shared with the callbacks; boxed so its address is stable.
pub(crate) struct LinkState {
    program: Program,
    pub(crate) invocations: AtomicU32,
    pub(crate) batch_invocations: AtomicU32,
    pub(crate) attached: AtomicBool,
    /// The link's deregistration has completed: the provider must never call it again.
    completed: AtomicBool,
    pub(crate) provider_status: std::sync::Mutex<Option<NTSTATUS>>,
    pub(crate) last_irql: AtomicU32,
    attach_type: GUID,
    dispatch: ebpf_extension_program_dispatch_table_t,
    generic: [usize; 2],
    client_data: ebpf_extension_data_t,
    data: Option<Vec<u8>>,
    module_id: NPI_MODULEID,
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    spec: ClientSpec,
    handle: HANDLE,
}

// SAFETY: the raw pointers inside point into the state itself or to 'static data; the
// counters are atomics.
unsafe impl Send for LinkState {}
// SAFETY: as above.
unsafe impl Sync for LinkState {}

/// A link: attached while it lives, detached (and waited for) on drop. Its state is never
/// freed (a few hundred bytes a link), so that a call after its detach completed is caught
/// (`completed`) rather than being a silent use after free.
pub(crate) struct Link {
    pub(crate) state: &'static LinkState,
    detached: bool,
    /// `start_detach` deregistered the link; the wait is left to `detach` or drop.
    deregistering: bool,
}

const BATCH_MAGIC: u64 = 0xB47C_4B47_C4B4_7C4B;

/// Aborts the test if the provider calls a link whose detach has completed (a panic cannot
/// leave an `extern "win64"` function: the process aborts with this message).
fn assert_not_completed(state: &LinkState) {
    assert!(
        !state.completed.load(Ordering::Acquire),
        "the provider invoked a program after its detach completed"
    );
}

unsafe extern "win64" fn invoke(
    binding: *const c_void,
    context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t {
    // SAFETY: the binding context is the LinkState registered at attach (never freed).
    let state = unsafe { &*binding.cast::<LinkState>() };
    assert_not_completed(state);
    let status = invoke_program(state, context, result);
    // Still not: a detach must not complete while an invocation runs.
    assert_not_completed(state);
    status
}

fn invoke_program(state: &LinkState, context: *mut c_void, result: *mut u32) -> ebpf_result_t {
    if state.spec.quiet {
        return match (state.program)(context) {
            Ok(v) => {
                // SAFETY: the provider passes a writable result.
                unsafe { result.write(v) };
                EBPF_SUCCESS
            }
            Err(e) => e,
        };
    }
    state.invocations.fetch_add(1, Ordering::SeqCst);
    state.last_irql.store(
        u32::from(ebpf_ext_sys::intrin::KeGetCurrentIrql()),
        Ordering::SeqCst,
    );
    match (state.program)(context) {
        Ok(v) => {
            // SAFETY: the provider passes a writable result.
            unsafe { result.write(v) };
            EBPF_SUCCESS
        }
        Err(e) => e,
    }
}

unsafe extern "win64" fn batch_begin(size: usize, state: *mut c_void) -> ebpf_result_t {
    if size < size_of::<ebpf_execution_context_state_t>() {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: the provider passes `size` writable bytes.
    unsafe { state.cast::<u64>().write(BATCH_MAGIC) };
    BATCHES.with_borrow_mut(|log| {
        log.begins += 1;
        log.states.push((BatchCall::Begin, state as usize));
    });
    EBPF_SUCCESS
}

/// Which batch function saw a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchCall {
    Begin,
    Invoke,
    End,
}

/// What the batch functions saw on one thread. A batch begins, runs and ends on one thread
/// (the core's contract), so a thread-local log is exactly one test's batches: no state is
/// shared between tests running as threads of one process.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchLog {
    pub(crate) begins: u32,
    pub(crate) ends: u32,
    /// Every state address passed to begin, batch invoke and end, in call order.
    pub(crate) states: Vec<(BatchCall, usize)>,
}

thread_local! {
    static BATCHES: core::cell::RefCell<BatchLog> = core::cell::RefCell::default();
}

/// The batch calls made on the calling thread so far.
pub(crate) fn batch_log() -> BatchLog {
    BATCHES.with_borrow(Clone::clone)
}

unsafe extern "win64" fn batch_invoke(
    binding: *const c_void,
    context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t {
    // SAFETY: as `invoke`.
    let link = unsafe { &*binding.cast::<LinkState>() };
    // SAFETY: the provider passes the state prepared by batch_begin.
    if unsafe { state.cast::<u64>().read() } != BATCH_MAGIC {
        return EBPF_INVALID_ARGUMENT;
    }
    if !link.spec.quiet {
        BATCHES.with_borrow_mut(|log| log.states.push((BatchCall::Invoke, state as usize)));
        link.batch_invocations.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: as `invoke`.
    unsafe { invoke(binding, context, result) }
}

unsafe extern "win64" fn batch_end(state: *mut c_void) -> ebpf_result_t {
    BATCHES.with_borrow_mut(|log| {
        log.ends += 1;
        log.states.push((BatchCall::End, state as usize));
    });
    // SAFETY: the provider passes the state prepared by batch_begin.
    unsafe { state.cast::<u64>().write(0) };
    EBPF_SUCCESS
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the client context is the LinkState.
    let state = unsafe { &*context.cast::<LinkState>() };
    // SAFETY: NMR passes the provider's registration instance.
    let module = unsafe { (*provider).ModuleId };
    // SAFETY: a registered provider's module id.
    if unsafe { (*module).guid() } != Some(state.attach_type) {
        return STATUS_NOINTERFACE;
    }
    let dispatch: *const c_void = match state.spec.dispatch {
        DispatchSpec::Null => ptr::null(),
        DispatchSpec::InvokeOnly => state.generic.as_ptr().cast(),
        _ => (&raw const state.dispatch).cast(),
    };
    let mut provider_binding = ptr::null_mut();
    let mut provider_dispatch = ptr::null();
    // SAFETY: inside ClientAttachProvider with NMR's binding handle.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            context,
            dispatch,
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    *state.provider_status.lock().unwrap() = Some(status);
    if status == STATUS_SUCCESS {
        state.attached.store(true, Ordering::SeqCst);
    }
    status
}

unsafe extern "win64" fn client_detach(context: *mut c_void) -> NTSTATUS {
    // SAFETY: the client binding context is the LinkState.
    let state = unsafe { &*context.cast::<LinkState>() };
    state.attached.store(false, Ordering::SeqCst);
    STATUS_SUCCESS
}

impl Link {
    /// Registers a link for `attach_type` running `program`.
    pub(crate) fn attach(
        attach_type: GUID,
        spec: ClientSpec,
        program: impl Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync + 'static,
    ) -> Link {
        let mut state = Box::new(LinkState {
            program: Arc::new(program),
            invocations: AtomicU32::new(0),
            batch_invocations: AtomicU32::new(0),
            attached: AtomicBool::new(false),
            completed: AtomicBool::new(false),
            provider_status: std::sync::Mutex::new(None),
            last_irql: AtomicU32::new(99),
            attach_type,
            dispatch: ebpf_extension_program_dispatch_table_t {
                version: 1,
                count: 4,
                ebpf_program_invoke_function: Some(invoke),
                ebpf_program_batch_begin_invoke_function: Some(batch_begin),
                ebpf_program_batch_invoke_function: Some(batch_invoke),
                ebpf_program_batch_end_invoke_function: Some(batch_end),
            },
            generic: [0x0001_0001, invoke as *const () as usize],
            client_data: ebpf_extension_data_t {
                header: spec.header,
                data: ptr::null(),
                data_size: 0,
                prog_attach_flags: spec.prog_attach_flags,
            },
            data: spec.data.clone(),
            module_id: NPI_MODULEID::from_guid(GUID::NULL),
            characteristics: NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: 72,
                ClientAttachProvider: Some(client_attach),
                ClientDetachProvider: Some(client_detach),
                ClientCleanupBindingContext: None,
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: 40,
                    NpiId: &EBPF_HOOK_EXTENSION_IID,
                    ModuleId: ptr::null(),
                    Number: 0,
                    NpiSpecificCharacteristics: ptr::null(),
                },
            },
            spec: spec.clone(),
            handle: ptr::null_mut(),
        });
        match spec.dispatch {
            DispatchSpec::CountZero => state.dispatch.count = 0,
            DispatchSpec::Version(version) => state.dispatch.version = version,
            DispatchSpec::NullInvoke => state.dispatch.ebpf_program_invoke_function = None,
            DispatchSpec::NoBatch => {
                state.dispatch.ebpf_program_batch_begin_invoke_function = None;
                state.dispatch.ebpf_program_batch_invoke_function = None;
                state.dispatch.ebpf_program_batch_end_invoke_function = None;
            }
            _ => {}
        }
        if let Some(data) = &state.data {
            state.client_data.data = if spec.null_data {
                ptr::null()
            } else {
                data.as_ptr().cast()
            };
            state.client_data.data_size = data.len();
        }
        if let Some(size) = spec.data_size {
            state.client_data.data_size = size;
        }
        if spec.null_data && state.data.is_none() {
            state.client_data.data = ptr::null();
        }
        // A module id unique among live links: the state's own address.
        let unique = ptr::from_ref(&*state) as usize as u128;
        state.module_id = NPI_MODULEID::from_guid(GUID::from_u128(
            0x11AC_0000_0000_0000_0000_0000_0000_0000 | unique,
        ));
        state.characteristics.ClientRegistrationInstance.ModuleId = &raw const state.module_id;
        if !spec.no_client_data {
            state
                .characteristics
                .ClientRegistrationInstance
                .NpiSpecificCharacteristics = (&raw const state.client_data).cast();
        }
        let context = ptr::from_mut(&mut *state).cast::<c_void>();
        let mut handle = ptr::null_mut();
        // SAFETY: the characteristics and context live in the box until deregistration.
        let status = unsafe {
            NmrRegisterClient(&raw const state.characteristics, context, &raw mut handle)
        };
        // A registration failure (an injected fault) leaves an unattached link.
        state.handle = handle;
        Link {
            state: Box::leak(state),
            detached: status != STATUS_SUCCESS,
            deregistering: false,
        }
    }

    /// The invoke function and binding context the provider calls, for baselines that must
    /// pay the same per-program cost.
    pub(crate) fn dispatch(
        &self,
    ) -> (
        ebpf_ext_sys::ebpf_extension::ebpf_program_invoke_function_t,
        *const c_void,
    ) {
        (invoke, ptr::from_ref(self.state).cast())
    }

    /// The link's NMR registration handle, for a test that deregisters it from inside a
    /// program (`detach` afterwards only waits: a second deregistration is refused).
    pub(crate) fn handle(&self) -> usize {
        self.state.handle as usize
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.state.attached.load(Ordering::SeqCst)
    }

    pub(crate) fn provider_status(&self) -> Option<NTSTATUS> {
        *self.state.provider_status.lock().unwrap()
    }

    pub(crate) fn invocations(&self) -> u32 {
        self.state.invocations.load(Ordering::SeqCst)
    }

    /// Deregisters and waits until the provider completed its detach.
    pub(crate) fn detach(mut self) {
        self.detach_now();
    }

    /// Deregisters without waiting: the provider's detach may still be pending on return.
    /// `detach` or dropping the link waits for it.
    pub(crate) fn start_detach(&mut self) {
        if self.detached || self.deregistering {
            return;
        }
        self.deregistering = true;
        // SAFETY: our registration handle, deregistered once.
        let _ = unsafe { NmrDeregisterClient(self.state.handle) };
    }

    fn detach_now(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        if !self.deregistering {
            // SAFETY: our registration handle, deregistered once.
            let _ = unsafe { NmrDeregisterClient(self.state.handle) };
        }
        // SAFETY: as above; deregistration started.
        let _ = unsafe { NmrWaitForClientDeregisterComplete(self.state.handle) };
        self.state.completed.store(true, Ordering::Release);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.detach_now();
    }
}
