//! Links: one NMR client of the hook NPI per attached program, as the core's `ebpf_link.c`,
//! with a Rust closure as the program.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::thread;

use ebpf_ext_sys::ebpf_extension::{
    EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT, EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT,
    ebpf_attach_provider_data_t, ebpf_execution_context_state_t, ebpf_extension_data_t,
    ebpf_extension_program_dispatch_table_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_HOOK_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::{EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_SUCCESS, ebpf_result_t};
use ebpf_ext_sys::ebpf_structs::{bpf_attach_type_t, bpf_link_type};
use ebpf_ext_sys::ebpf_windows::{EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION, ebpf_extension_header_t};
use ebpf_ext_sys::intrin::KeGetCurrentIrql;
use ebpf_ext_sys::netioddk::{NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, KIRQL, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_NOINTERFACE, STATUS_SUCCESS};

use crate::batch;
use crate::contract::Contract;
use crate::error::{CoreError, Refusal, failed_to_load};
use crate::nmr::{NmrClient, Registration, Shared, lock};
use crate::program_info::ProgramInfoClient;
use crate::validate::{npi_specific, provider_module_guid, validate_attach_provider_data};

/// "The program": called with the program context pointer exactly as the extension passed
/// it to `invoke`; `Ok(value)` is written to `*result` and `EBPF_SUCCESS` returned, `Err(e)`
/// is returned as is.
pub type Program = Box<dyn Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync>;

/// Marks the state of a link that may be invoked.
const LINK_MAGIC: u64 = u64::from_be_bytes(*b"CoreLink");
/// Marks the state of a link about to be freed.
const LINK_DEAD: u64 = u64::from_be_bytes(*b"DeadLink");
/// `last_irql` before the first invocation.
const NO_IRQL: u8 = u8::MAX;
/// The most bytes a malformed size in the client data is backed with.
const MAX_BACKED: usize = 64 * 1024;
/// Size of the context header in front of every program context (`EBPF_CONTEXT_HEADER`).
const CONTEXT_HEADER_SIZE: usize = 64;

/// A way to malform what a link presents to the hook provider, for negative tests.
///
/// Malformations apply in order on top of what the core presents (client data
/// `{EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION, data, data_size, prog_attach_flags}` and
/// dispatch table `{1, 4, invoke, batch_begin, batch_invoke, batch_end}`). Sizes are backed by
/// real memory where possible: the client data buffer is as large as the largest of 48,
/// `header.size` and `header.total_size`, and the attach parameter buffer as large as
/// `data_size` (zero-filled), each up to 64 KiB; a provider that reads further than that, or
/// than 16 bytes of [`Malformation::GenericDispatchTable`]'s entries it should not read, is
/// itself at fault. Dispatch entries beyond a reduced `count` keep their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformation {
    /// `NpiSpecificCharacteristics` = NULL (no client data at all).
    NoClientData,
    /// `header.version` = this.
    HeaderVersion(u16),
    /// `header.size` = this.
    HeaderSize(usize),
    /// `header.total_size` = this.
    HeaderTotalSize(usize),
    /// `data` = NULL, `data_size` unchanged (give an attach parameter or
    /// [`Malformation::DataSize`] for a non-zero size).
    NullData,
    /// `data_size` = this, `data` unchanged (NULL without an attach parameter).
    DataSize(usize),
    /// `ClientDispatch` = NULL.
    NoDispatchTable,
    /// Dispatch table `version` = this.
    DispatchVersion(u16),
    /// Dispatch table `count` = this (0 for an empty table).
    DispatchCount(u16),
    /// The generic table the upstream unit-test harnesses pass: `{version 1, count 1,
    /// invoke}`; the batch entries are NULL.
    GenericDispatchTable,
    /// The invoke entry = NULL.
    NullInvoke,
    /// The three batch entries = NULL.
    NullBatchFunctions,
}

/// What a [`Link`] attaches: program type, attach type, attach parameter, flags, and any
/// [`Malformation`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    program_type: GUID,
    attach_type: GUID,
    attach_parameter: Vec<u8>,
    prog_attach_flags: u64,
    malformations: Vec<Malformation>,
}

impl LinkSpec {
    /// A link of a program of `program_type` to the hook of `attach_type`, with no attach
    /// parameter (`data` NULL, `data_size` 0) and flags 0.
    #[must_use]
    pub fn new(program_type: GUID, attach_type: GUID) -> Self {
        LinkSpec {
            program_type,
            attach_type,
            attach_parameter: Vec::new(),
            prog_attach_flags: 0,
            malformations: Vec::new(),
        }
    }

    /// The attach parameter: the core copies it into its own allocation and presents it as
    /// `data`/`data_size` (an empty one means none).
    #[must_use]
    pub fn attach_parameter(mut self, bytes: &[u8]) -> Self {
        self.attach_parameter = bytes.to_vec();
        self
    }

    /// `prog_attach_flags`.
    #[must_use]
    pub fn prog_attach_flags(mut self, flags: u64) -> Self {
        self.prog_attach_flags = flags;
        self
    }

    /// Adds a malformation (applied after those added before).
    #[must_use]
    pub fn malformed(mut self, malformation: Malformation) -> Self {
        self.malformations.push(malformation);
        self
    }

    /// The program type.
    #[must_use]
    pub fn program_type(&self) -> GUID {
        self.program_type
    }

    /// The attach type.
    #[must_use]
    pub fn attach_type(&self) -> GUID {
        self.attach_type
    }
}

#[derive(Default)]
struct LinkLog {
    /// A provider is attached or attaching.
    claimed: bool,
    attached: bool,
    bpf_attach_type: Option<bpf_attach_type_t>,
    link_type: Option<bpf_link_type>,
    refusal: Option<Refusal>,
    provider_status: Option<NTSTATUS>,
    /// Providers that were not for this link (`STATUS_NOINTERFACE`).
    declined: u32,
    detaches: u32,
}

/// A link's program: read by invocations without a lock (the core takes none per invocation),
/// taken out once the link is dead.
///
/// The handshake that makes that safe is the one of a rundown reference, on `in_flight` and
/// `magic` with `SeqCst` (`tests/loom_link.rs` models it): an invocation counts itself in
/// (`in_flight += 1`) and then reads the magic; the detach stores the dead magic and then waits
/// for `in_flight` to drain before it takes the program. In the single order of `SeqCst`
/// operations an invocation whose read precedes the dead store has counted itself in before
/// it too, so the detach waits for it; one whose read follows it sees the dead magic and never
/// touches the program.
struct ProgramSlot(UnsafeCell<Option<Program>>);

// SAFETY: the program is `Send + Sync`; it is read by invocations only while the handshake
// above holds it, and taken out only by the detach, after the handshake (see `LinkState::run`
// and `Link::detach_once`).
unsafe impl Sync for ProgramSlot {}

// A panic cannot leave the slot half-written: it is written once, by the detach's `take`, and
// a program panicking through an invocation only reads it. (So a `Link` stays unwind-safe, as
// it was behind the lock.)
impl core::panic::RefUnwindSafe for ProgramSlot {}

/// The state behind a link's context pointer.
///
/// # Invariants
/// `magic` is [`LINK_MAGIC`] from construction until the link's deregistration has completed
/// (then [`LINK_DEAD`]); the program is taken out only after that, once no invocation is in
/// flight; the buffers and the dispatch table never change after construction.
#[repr(C)]
struct LinkState {
    /// First: what `invoke` checks before anything else.
    magic: AtomicU64,
    program_type: GUID,
    attach_type: GUID,
    /// Backing of the client data (8-aligned); poisoned once the link is dead, as the core
    /// frees the link object that holds it.
    client_data: Box<[AtomicU64]>,
    has_client_data: bool,
    /// The core's copy of the attach parameter (padded to a malformed `data_size`); poisoned
    /// once the link is dead, as the core frees it.
    attach_parameter: Box<[AtomicU8]>,
    dispatch: ebpf_extension_program_dispatch_table_t,
    has_dispatch: bool,
    /// Taken out once the link is dead (the state itself stays allocated), so what the
    /// program holds (a loaded program, its clients of other providers) is released.
    program: ProgramSlot,
    log: Mutex<LinkLog>,
    invocations: AtomicU64,
    batch_invocations: AtomicU64,
    in_flight: AtomicU64,
    /// Set by the detach once it has counted the invocations still running (see
    /// [`DetachWatch`]).
    detach_counted: AtomicBool,
    /// Set when NMR detaches the link from its provider (`ClientDetachProvider`), cleared
    /// when a provider attaches: from then on an invoke checks that the provider has not
    /// completed its detach.
    provider_detaching: AtomicBool,
    last_irql: AtomicU8,
}

const STANDARD_DISPATCH: ebpf_extension_program_dispatch_table_t =
    ebpf_extension_program_dispatch_table_t {
        version: EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT,
        count: EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT,
        ebpf_program_invoke_function: Some(invoke),
        ebpf_program_batch_begin_invoke_function: Some(batch_begin),
        ebpf_program_batch_invoke_function: Some(batch_invoke),
        ebpf_program_batch_end_invoke_function: Some(batch_end),
    };

// `ebpf_extension_data_t` is six words, each field at the word `LinkState::new` writes it
// to.
const _: () = {
    assert!(core::mem::offset_of!(ebpf_extension_data_t, header) == 0);
    assert!(core::mem::offset_of!(ebpf_extension_header_t, size) == 8);
    assert!(core::mem::offset_of!(ebpf_extension_header_t, total_size) == 16);
    assert!(core::mem::offset_of!(ebpf_extension_data_t, data) == 24);
    assert!(core::mem::offset_of!(ebpf_extension_data_t, data_size) == 32);
    assert!(core::mem::offset_of!(ebpf_extension_data_t, prog_attach_flags) == 40);
    assert!(size_of::<ebpf_extension_data_t>() == 48);
};

impl LinkState {
    fn new(spec: LinkSpec, program: Program) -> Self {
        let mut header = EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION;
        let mut has_client_data = true;
        let mut null_data = false;
        let mut data_size = spec.attach_parameter.len();
        let mut dispatch = STANDARD_DISPATCH;
        let mut has_dispatch = true;
        for malformation in &spec.malformations {
            match *malformation {
                Malformation::NoClientData => has_client_data = false,
                Malformation::HeaderVersion(version) => header.version = version,
                Malformation::HeaderSize(size) => header.size = size,
                Malformation::HeaderTotalSize(size) => header.total_size = size,
                Malformation::NullData => null_data = true,
                Malformation::DataSize(size) => data_size = size,
                Malformation::NoDispatchTable => has_dispatch = false,
                Malformation::DispatchVersion(version) => dispatch.version = version,
                Malformation::DispatchCount(count) => dispatch.count = count,
                Malformation::GenericDispatchTable => {
                    dispatch = ebpf_extension_program_dispatch_table_t {
                        version: EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT,
                        count: 1,
                        ebpf_program_invoke_function: Some(invoke),
                        ebpf_program_batch_begin_invoke_function: None,
                        ebpf_program_batch_invoke_function: None,
                        ebpf_program_batch_end_invoke_function: None,
                    };
                }
                Malformation::NullInvoke => dispatch.ebpf_program_invoke_function = None,
                Malformation::NullBatchFunctions => {
                    dispatch.ebpf_program_batch_begin_invoke_function = None;
                    dispatch.ebpf_program_batch_invoke_function = None;
                    dispatch.ebpf_program_batch_end_invoke_function = None;
                }
            }
        }
        let mut attach_parameter = spec.attach_parameter;
        if !attach_parameter.is_empty() && data_size > attach_parameter.len() {
            attach_parameter.resize(data_size.min(MAX_BACKED), 0);
        }
        let attach_parameter: Box<[AtomicU8]> =
            attach_parameter.into_iter().map(AtomicU8::new).collect();
        // The core sets `data` only for a non-empty attach parameter.
        let data: *const c_void = if attach_parameter.is_empty() || null_data {
            ptr::null()
        } else {
            attach_parameter.as_ptr().cast()
        };
        let backed = size_of::<ebpf_extension_data_t>()
            .max(header.size)
            .max(header.total_size)
            .min(MAX_BACKED);
        // The client data as words (little-endian x64, no unsafe): the header's version,
        // size and total size, then `data`, `data_size` and `prog_attach_flags`, each at its
        // offset (asserted above `impl LinkState`); the header's padding and any bytes past
        // the struct zero.
        let mut words = vec![0u64; backed.div_ceil(size_of::<u64>())];
        words[..6].copy_from_slice(&[
            u64::from(header.version),
            header.size as u64,
            header.total_size as u64,
            data as u64,
            data_size as u64,
            spec.prog_attach_flags,
        ]);
        let client_data = words.into_iter().map(AtomicU64::new).collect();
        LinkState {
            magic: AtomicU64::new(LINK_MAGIC),
            program_type: spec.program_type,
            attach_type: spec.attach_type,
            client_data,
            has_client_data,
            attach_parameter,
            dispatch,
            has_dispatch,
            program: ProgramSlot(UnsafeCell::new(Some(program))),
            log: Mutex::new(LinkLog::default()),
            invocations: AtomicU64::new(0),
            batch_invocations: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            detach_counted: AtomicBool::new(false),
            provider_detaching: AtomicBool::new(false),
            last_irql: AtomicU8::new(NO_IRQL),
        }
    }

    /// The `NpiSpecificCharacteristics` the link presents.
    fn client_data_ptr(&self) -> *const c_void {
        if self.has_client_data {
            self.client_data.as_ptr().cast()
        } else {
            ptr::null()
        }
    }

    /// The `ClientDispatch` the link presents.
    fn dispatch_ptr(&self) -> *const c_void {
        if self.has_dispatch {
            ptr::from_ref(&self.dispatch).cast()
        } else {
            ptr::null()
        }
    }

    /// Runs the program for one invocation: checks `result` and the context, writes the
    /// context header's execution-state slot, calls the program. The in-flight count covers
    /// the whole call, so a detach that sees it at zero may take the program out.
    fn run(
        &self,
        program_context: *mut c_void,
        result: *mut u32,
        state: *const c_void,
        batch: bool,
    ) -> ebpf_result_t {
        if result.is_null() {
            Contract::NullPointer.broken(format_args!("invoke with a NULL result"), 0, 0);
        }
        if program_context.is_null() {
            Contract::NullProgramContext.broken(
                format_args!("invoke with a NULL program context"),
                0,
                0,
            );
        }
        // Counted in, then the magic read again (the handshake of `ProgramSlot`; keep in step
        // with `Link::detach_once` and the model in `tests/loom_link.rs`).
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.magic.load(Ordering::SeqCst) != LINK_MAGIC {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Contract::InvokeAfterDetach.broken(
                format_args!("invoke of a link whose provider completed its detach meanwhile"),
                ptr::from_ref(self) as usize,
                0,
            );
        }
        // Once NMR has begun detaching the binding (the link's `ClientDetachProvider` ran),
        // the provider may invoke until it completes its side of the detach, not after: NMR
        // has then finished with the binding, and the core may free the link at any time.
        // (The link's context is its state's address.)
        if self.provider_detaching.load(Ordering::SeqCst)
            && !ebpf_ext_usersim::nmr_provider_holds_client(ptr::from_ref(self).cast())
        {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Contract::InvokeAfterDetach.broken(
                format_args!("invoke of a link after its provider completed its detach"),
                ptr::from_ref(self) as usize,
                0,
            );
        }
        // As `ebpf_program_set_runtime_state` and `..._set_header_context_descriptor`: slot 0
        // of the 64-byte header in front of the context is the execution state, slot 1 the
        // context descriptor (a link knows none: NULL; a BPF program's invoke puts its own
        // there). A provider that passes a context without the header has the 16 bytes in
        // front of it overwritten, as with the core.
        let header = program_context.wrapping_byte_sub(CONTEXT_HEADER_SIZE);
        // SAFETY: a program context is preceded by a 64-byte header the core may write (the
        // provider's side of the contract; it cannot be checked).
        unsafe { header.cast::<u64>().write_unaligned(state as usize as u64) };
        // SAFETY: as above.
        unsafe {
            header.wrapping_byte_add(8).cast::<u64>().write_unaligned(0);
        };
        let counter = if batch {
            &self.batch_invocations
        } else {
            &self.invocations
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.last_irql.store(KeGetCurrentIrql(), Ordering::SeqCst);
        // SAFETY: counted in while the link was live, so the detach takes the program out only
        // after this invocation counts itself out (`ProgramSlot`); nothing writes it before.
        let program = unsafe { &*self.program.0.get() };
        let Some(run_program) = program.as_ref() else {
            unreachable!("a link's program is taken out only after its invocations counted out")
        };
        let run = run_program(program_context);
        let status = match run {
            Ok(value) => {
                // SAFETY: non-NULL (checked) `uint32_t*` out parameter of the caller.
                unsafe { result.write_unaligned(value) };
                EBPF_SUCCESS
            }
            Err(error) => {
                // A failed invocation's result is 0, as the core's invoke sets it when it
                // runs nothing (a fault, which the core would report as a success with the
                // interpreter's error code, is core-sim's own failure).
                // SAFETY: as above.
                unsafe { result.write_unaligned(0) };
                error
            }
        };
        // Last access to `self`.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        status
    }
}

impl NmrClient for LinkState {
    fn attach_provider(
        &self,
        binding: HANDLE,
        context: *mut c_void,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> NTSTATUS {
        let refuse = |refusal: Refusal| {
            let status = refusal.status();
            lock(&self.log).refusal = Some(refusal);
            status
        };
        if provider.is_null() {
            return refuse(Refusal::NoRegistrationInstance);
        }
        // SAFETY: non-NULL registration instance from NMR.
        let data = unsafe { npi_specific(provider) }.cast::<ebpf_attach_provider_data_t>();
        // SAFETY: the provider's attach provider data: NULL or readable as its header says.
        let provider_data = match unsafe { validate_attach_provider_data(data) } {
            Ok(provider_data) => provider_data,
            Err(e) => return refuse(Refusal::InvalidAttachProviderData(e)),
        };
        // SAFETY: NMR's registration instance.
        let module = match unsafe { provider_module_guid(provider) } {
            Ok(module) => module,
            Err(refusal) => return refuse(refusal),
        };
        if module != self.attach_type || provider_data.supported_program_type != self.program_type {
            lock(&self.log).declined += 1;
            return STATUS_NOINTERFACE;
        }
        {
            let mut log = lock(&self.log);
            if log.claimed {
                log.refusal = Some(Refusal::SecondProvider);
                return Refusal::SecondProvider.status();
            }
            log.claimed = true;
        }
        let mut provider_binding_context: *mut c_void = ptr::null_mut();
        let mut provider_dispatch: *const c_void = ptr::null();
        // SAFETY: called from `ClientAttachProvider` with NMR's binding handle; the binding
        // context is this link's registration context and the dispatch table lives in it,
        // both alive until deregistration completes and no invocation is in flight; the out
        // slots are locals.
        let status = unsafe {
            NmrClientAttachProvider(
                binding,
                context,
                self.dispatch_ptr(),
                &raw mut provider_binding_context,
                &raw mut provider_dispatch,
            )
        };
        let mut log = lock(&self.log);
        log.provider_status = Some(status);
        if NT_SUCCESS(status) {
            log.attached = true;
            self.provider_detaching.store(false, Ordering::SeqCst);
            log.bpf_attach_type = Some(provider_data.bpf_attach_type);
            log.link_type = Some(provider_data.link_type);
        } else {
            log.claimed = false;
        }
        status
    }

    fn detach_provider(&self) -> NTSTATUS {
        // The core does not call into the provider here: invocations still running finish
        // under the provider's own rundown before it completes its detach.
        self.provider_detaching.store(true, Ordering::SeqCst);
        let mut log = lock(&self.log);
        log.attached = false;
        log.claimed = false;
        log.detaches += 1;
        STATUS_SUCCESS
    }
}

/// The link behind a client binding context; bug-checks if it is not a live link.
///
/// # Safety
/// `context` is NULL, misaligned, or readable for 8 bytes; if those bytes are
/// [`LINK_MAGIC`] it is a live link (the `ClientBindingContext` the provider received). A
/// dangling context cannot be detected, but a detached link's state is never freed (see
/// [`Link::detach`]), so a late invoke is caught rather than a use after free.
unsafe fn live_link<'a>(context: *const c_void) -> &'a LinkState {
    let state = context.cast::<LinkState>();
    if state.is_null() || !state.is_aligned() {
        Contract::NotALink.broken(
            format_args!("invoke with the binding context {context:p}, not a link's"),
            context as usize,
            0,
        );
    }
    // SAFETY: non-NULL, aligned and readable (precondition); `magic` is the first field.
    let magic = unsafe { &*context.cast::<AtomicU64>() }.load(Ordering::SeqCst);
    match magic {
        // SAFETY: the magic says this is a live link's state (precondition).
        LINK_MAGIC => unsafe { Shared::<LinkState>::from_context(context) },
        LINK_DEAD => Contract::InvokeAfterDetach.broken(
            format_args!("invoke of the link at {context:p} after its detach completed"),
            context as usize,
            0,
        ),
        _ => Contract::NotALink.broken(
            format_args!("invoke with the binding context {context:p}, not a link's"),
            context as usize,
            0,
        ),
    }
}

/// `ebpf_program_invoke_function_t`: runs the link's program as the core's invoke does, with
/// an execution state of its own on the stack: batch begin (the epoch enter, which raises to
/// DISPATCH_LEVEL to link the state into its list and lowers back), the program, batch end.
/// So a single invocation costs what it costs the core, and batching saves what it saves there.
///
/// Bug-checks (see [`Contract`]) above DISPATCH_LEVEL, for a binding context that is not a
/// live link, a NULL `result` or a NULL program context; otherwise returns `EBPF_SUCCESS`
/// (with `*result` written) or the program's error.
unsafe extern "win64" fn invoke(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t {
    batch::require_dispatch_or_below("invoke");
    // SAFETY: the provider passes the binding context it received at attach.
    let link = unsafe { live_link(extension_client_binding_context) };
    // SAFETY: the state is plain data; all-zero is its initial value.
    let mut state: ebpf_execution_context_state_t = unsafe { core::mem::zeroed() };
    let address = (&raw mut state).cast::<c_void>();
    // SAFETY: `state` is this frame's, of the state's size, and stays here until `end`.
    let begun = unsafe { batch::begin(batch::Caller::Invoke, size_of_val(&state), address) };
    if begun != EBPF_SUCCESS {
        return begun;
    }
    let status = link.run(program_context, result, address, false);
    // SAFETY: the state `begin` was given, on this thread, at the same IRQL.
    unsafe { batch::end(batch::Caller::Invoke, address) };
    status
}

/// `ebpf_program_batch_begin_invoke_function_t`: see [`batch::begin`].
unsafe extern "win64" fn batch_begin(state_size: usize, state: *mut c_void) -> ebpf_result_t {
    // SAFETY: the provider passes `state_size` writable bytes (or NULL, which bug-checks).
    unsafe { batch::begin(batch::Caller::Provider, state_size, state) }
}

/// `ebpf_program_batch_invoke_function_t`: checks the batch state (begun on this thread, at
/// this address, not ended), then runs the program as [`invoke`] does (counted as a batch
/// invocation).
unsafe extern "win64" fn batch_invoke(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t {
    // SAFETY: the provider passes the state it gave batch begin.
    unsafe { batch::require_invokable(state) };
    // SAFETY: the provider passes the binding context it received at attach.
    let link = unsafe { live_link(extension_client_binding_context) };
    link.run(program_context, result, state, true)
}

/// `ebpf_program_batch_end_invoke_function_t`: see [`batch::end`].
unsafe extern "win64" fn batch_end(state: *mut c_void) -> ebpf_result_t {
    // SAFETY: the provider passes the state it gave batch begin.
    unsafe { batch::end(batch::Caller::Provider, state) }
}

/// One attached program: an NMR client of the hook NPI, as the core's link object.
///
/// Dropping it detaches like [`Link::detach`] and panics (unless already panicking) if the
/// provider violated the detach protocol.
pub struct Link {
    registration: Registration<LinkState>,
    detached: bool,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("program_type", &self.program_type())
            .field("attach_type", &self.attach_type())
            .field("attached", &self.is_attached())
            .field("invocations", &self.invocations())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Registers the link as an NMR client of the hook NPI (module id `MIT_GUID`, a fresh
    /// GUID; client data and dispatch table as `spec` says) and requires a hook provider to
    /// attach during registration, as the core does.
    ///
    /// For each provider NMR offers, the link checks, in order: the attach provider data
    /// (version 1, size 48, `supported_program_type` ≠ GUID_NULL), else
    /// `STATUS_INVALID_PARAMETER`; `ModuleId->Type == MIT_GUID`, else
    /// `STATUS_INVALID_PARAMETER`; `ModuleId->Guid` is the attach type and
    /// `supported_program_type` the program type, else `STATUS_NOINTERFACE` ("not for me");
    /// no provider attached yet, else `STATUS_INVALID_PARAMETER`. Then it calls
    /// `NmrClientAttachProvider` with the link's state as client binding context and its
    /// dispatch table, and on success records `bpf_attach_type` and `link_type`.
    ///
    /// # Errors
    /// - [`CoreError::RegisterClient`] if `NmrRegisterClient` fails;
    /// - [`CoreError::ExtensionFailedToLoad`] if no provider attached: `provider_status` is
    ///   what the last `NmrClientAttachProvider` returned (the provider's
    ///   `ProviderAttachClient` status, e.g. `STATUS_ACCESS_DENIED`), `refusal` the last
    ///   provider the link's own checks refused.
    ///
    /// As the core's program, the link first binds to the program-information provider of its
    /// program type and holds it: once that provider is gone (a driver that stops its program
    /// type before its hook), an invocation runs nothing, gives result 0 and returns
    /// `EBPF_EXTENSION_FAILED_TO_LOAD`, as the core's invoke does without its provider's
    /// program data. Without a provider of the type, or if the core's checks refuse its program
    /// data, or its `ProviderAttachClient` fails, the core loads no program, and this returns
    /// that [`CoreError::ExtensionFailedToLoad`] before any hook provider sees a link; likewise
    /// [`CoreError::RegisterClient`] if NMR does not register that client. A hook provider
    /// tested without a program type uses [`Link::attach_without_program_type`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, on a thread bound to a usersim kernel.
    pub fn attach<P>(spec: LinkSpec, program: P) -> Result<Link, CoreError>
    where
        P: Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync + 'static,
    {
        let info =
            ProgramInfoClient::attach_typed(spec.program_type).map_err(|(error, _)| error)?;
        let program: Program = Box::new(move |context| {
            if !info.is_attached() {
                return Err(EBPF_EXTENSION_FAILED_TO_LOAD);
            }
            program(context)
        });
        Self::attach_program(spec, program)
    }

    /// [`Link::attach`] for a hook provider tested alone: when no provider of the program
    /// type is registered, the program is linked anyway, bound to no program information.
    /// The core never does this (it loads no program of a type nobody publishes), so a test
    /// that uses it proves nothing about a hook whose program type goes unpublished: a
    /// driver's tests use [`Link::attach`]. When a provider of the type is registered, this is
    /// [`Link::attach`].
    ///
    /// # Errors
    /// As [`Link::attach`], except for a missing program-information provider.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, on a thread bound to a usersim kernel.
    pub fn attach_without_program_type<P>(spec: LinkSpec, program: P) -> Result<Link, CoreError>
    where
        P: Fn(*mut c_void) -> Result<u32, ebpf_result_t> + Send + Sync + 'static,
    {
        match ProgramInfoClient::attach_typed(spec.program_type) {
            Ok(info) => Self::attach_program(
                spec,
                Box::new(move |context| {
                    if !info.is_attached() {
                        return Err(EBPF_EXTENSION_FAILED_TO_LOAD);
                    }
                    program(context)
                }),
            ),
            // No provider of the type was offered: link the program bare.
            Err((CoreError::ExtensionFailedToLoad { .. }, false)) => {
                Self::attach_program(spec, Box::new(program))
            }
            // A provider of the type is registered but was refused, or refused the client,
            // or NMR did not register or deregister the client: the core loads no program, so
            // there is nothing to link.
            Err((error, _)) => Err(error),
        }
    }

    /// [`Link::attach`] without the binding to a program-information provider: for a program
    /// that holds its own ([`crate::bpf::BpfProgram`]).
    pub(crate) fn attach_program(spec: LinkSpec, program: Program) -> Result<Link, CoreError> {
        let attach_type = spec.attach_type;
        let state = LinkState::new(spec, program);
        let mut registration =
            Registration::register(EBPF_HOOK_EXTENSION_IID, state, LinkState::client_data_ptr)?;
        if lock(&registration.client().log).attached {
            return Ok(Link {
                registration,
                detached: false,
            });
        }
        let error = {
            let log = lock(&registration.client().log);
            failed_to_load(
                "hook",
                attach_type,
                log.refusal.clone(),
                log.provider_status,
                log.declined,
            )
        };
        registration.deregister()?;
        Err(error)
    }

    fn state(&self) -> &LinkState {
        self.registration.client()
    }

    /// The program type.
    #[must_use]
    pub fn program_type(&self) -> GUID {
        self.state().program_type
    }

    /// The attach type.
    #[must_use]
    pub fn attach_type(&self) -> GUID {
        self.state().attach_type
    }

    /// The link's module GUID (what the provider sees as the client's `ModuleId->Guid`).
    #[must_use]
    pub fn module_id(&self) -> GUID {
        self.registration.module_id()
    }

    /// The `ClientBindingContext` the provider received (what it passes to `invoke`).
    #[must_use]
    pub fn client_binding_context(&self) -> *const c_void {
        self.registration.context()
    }

    /// The `NpiSpecificCharacteristics` the link presents (NULL with
    /// [`Malformation::NoClientData`]).
    #[must_use]
    pub fn client_data(&self) -> *const c_void {
        self.state().client_data_ptr()
    }

    /// The `ClientDispatch` the link presents (NULL with [`Malformation::NoDispatchTable`]).
    #[must_use]
    pub fn client_dispatch(&self) -> *const c_void {
        self.state().dispatch_ptr()
    }

    /// The client data header the link presents (poison once the link is detached).
    #[must_use]
    pub fn client_data_header(&self) -> ebpf_extension_header_t {
        let words: [u64; 3] =
            core::array::from_fn(|i| self.state().client_data[i].load(Ordering::SeqCst));
        // SAFETY: the header is the first 24 bytes of the client data (three words, at least
        // `size_of::<ebpf_extension_data_t>()` are backed), plain integers.
        unsafe { core::mem::transmute::<[u64; 3], ebpf_extension_header_t>(words) }
    }

    /// The core's copy of the attach parameter (padded to a malformed `data_size`); after the
    /// link's detach completed, [`FREED_POISON`](ebpf_ext_usersim::FREED_POISON) bytes.
    #[must_use]
    pub fn attach_parameter(&self) -> Vec<u8> {
        self.state()
            .attach_parameter
            .iter()
            .map(|b| b.load(Ordering::SeqCst))
            .collect()
    }

    /// Where the core's copy of the attach parameter lives (what the client data's `data`
    /// points to, unless malformed).
    #[must_use]
    pub fn attach_parameter_address(&self) -> *const u8 {
        self.state().attach_parameter.as_ptr().cast()
    }

    /// Whether a provider is attached: false after the provider deregistered (NMR called the
    /// link's detach callback).
    #[must_use]
    pub fn is_attached(&self) -> bool {
        lock(&self.state().log).attached
    }

    /// How many times a provider detached from this link.
    #[must_use]
    pub fn detach_count(&self) -> u32 {
        lock(&self.state().log).detaches
    }

    /// `bpf_attach_type` of the provider that attached (kept after it detaches).
    #[must_use]
    pub fn bpf_attach_type(&self) -> Option<bpf_attach_type_t> {
        lock(&self.state().log).bpf_attach_type
    }

    /// `link_type` of the provider that attached (kept after it detaches).
    #[must_use]
    pub fn link_type(&self) -> Option<bpf_link_type> {
        lock(&self.state().log).link_type
    }

    /// What the last `NmrClientAttachProvider` returned.
    #[must_use]
    pub fn provider_status(&self) -> Option<NTSTATUS> {
        lock(&self.state().log).provider_status
    }

    /// The last provider the link's checks refused (for example a second provider).
    #[must_use]
    pub fn last_refusal(&self) -> Option<Refusal> {
        lock(&self.state().log).refusal.clone()
    }

    /// Calls of `invoke` that reached the program (NULL `result` excluded).
    #[must_use]
    pub fn invocations(&self) -> u64 {
        self.state().invocations.load(Ordering::SeqCst)
    }

    /// Calls of batch invoke that reached the program.
    #[must_use]
    pub fn batch_invocations(&self) -> u64 {
        self.state().batch_invocations.load(Ordering::SeqCst)
    }

    /// A view of this link's detach for another thread (the link itself moves into the
    /// thread that detaches it).
    #[must_use]
    pub fn detach_watch(&self) -> DetachWatch {
        DetachWatch(self.registration.share())
    }

    /// Invocations running now.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.state().in_flight.load(Ordering::SeqCst)
    }

    /// The IRQL of the last invocation, `None` before the first.
    #[must_use]
    pub fn last_irql(&self) -> Option<KIRQL> {
        match self.state().last_irql.load(Ordering::SeqCst) {
            NO_IRQL => None,
            irql => Some(irql),
        }
    }

    /// Detaches: `NmrDeregisterClient`, then `NmrWaitForClientDeregisterComplete`, which
    /// returns once the provider has completed its (possibly pending) detach. Then retires
    /// the link: its state is marked dead and kept (never freed), so a provider that invokes
    /// the link after completing its detach, even while invocations it started earlier are
    /// still running, is caught ([`Contract::InvokeAfterDetach`](crate::Contract::InvokeAfterDetach),
    /// a bug check) rather than reading freed memory; waits until no invocation of the link is
    /// running; and releases the program. Works whether or not the provider is still
    /// attached. Do not call it from inside the link's program: it would
    /// wait for itself (as the real core's link deletion would wait for the provider's
    /// rundown). A link bound to a program-information provider lets it go when it releases
    /// the program, which waits for every epoch active then ([`ProgramInfoClient`]), so do
    /// not call it inside any program, helper or batch on the same thread either.
    ///
    /// # Errors
    /// - [`CoreError::DetachedWhileInvoking`] if the provider completed its detach while an
    ///   invocation was still running, or let one start after it (a provider bug; core-sim
    ///   waited for them anyway);
    /// - [`CoreError::Deregister`] if NMR rejects the deregistration (the link is leaked).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn detach(mut self) -> Result<(), CoreError> {
        self.detach_once()
    }

    fn detach_once(&mut self) -> Result<(), CoreError> {
        if self.detached {
            return Ok(());
        }
        self.detached = true;
        self.registration.deregister()?;
        let state = self.state();
        // INVARIANT: deregistered: the link is dead. Invocations that start from here bug-check
        // (`live_link`, `LinkState::run`); those counted in are waited for. Its state stays
        // allocated (a few hundred bytes per link) so a late invoke reads the dead magic. (The
        // handshake of `ProgramSlot`: keep in step with `LinkState::run` and
        // `tests/loom_link.rs`.)
        state.magic.store(LINK_DEAD, Ordering::SeqCst);
        // Counted after the store: an invocation counted in while the magic was still live is
        // seen here, including one that started after the provider's detach completed.
        let in_flight = state.in_flight.load(Ordering::SeqCst);
        state.detach_counted.store(true, Ordering::SeqCst);
        while state.in_flight.load(Ordering::SeqCst) != 0 {
            thread::sleep(Duration::from_millis(1));
        }
        // The core frees the link object now, with its client data and `client_data.data`: a
        // provider still reading either reads poison.
        for byte in &state.attach_parameter {
            byte.store(ebpf_ext_usersim::FREED_POISON, Ordering::SeqCst);
        }
        let poison = u64::from_ne_bytes([ebpf_ext_usersim::FREED_POISON; 8]);
        for word in &state.client_data {
            word.store(poison, Ordering::SeqCst);
        }
        self.registration.keep_alive();
        // SAFETY: the magic is dead and every invocation counted in has counted itself out,
        // so none reads the program again (`ProgramSlot`); this is the one detach.
        let program = unsafe { (*state.program.0.get()).take() };
        // Dropped here: the program's drop may deregister clients of other providers and
        // wait.
        drop(program);
        if in_flight == 0 {
            Ok(())
        } else {
            Err(CoreError::DetachedWhileInvoking { in_flight })
        }
    }
}

/// What a test racing a link's detach can see of it from another thread
/// ([`Link::detach_watch`]).
pub struct DetachWatch(Arc<crate::nmr::Shared<LinkState>>);

impl fmt::Debug for DetachWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachWatch")
            .field("counted_in_flight", &self.counted_in_flight())
            .finish()
    }
}

impl DetachWatch {
    /// Whether the detach has counted the invocations still running when the provider
    /// completed its detach (what [`CoreError::DetachedWhileInvoking`] reports): from then
    /// on it only waits for them to end.
    #[must_use]
    pub fn counted_in_flight(&self) -> bool {
        self.0.client().detach_counted.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Err(error) = self.detach_once()
            && !thread::panicking()
        {
            panic!("core-sim link detach: {error}");
        }
    }
}
