//! The program-information NPI client: what the core does when a program of one type is
//! loaded (`ebpf_program.c`), and the context calls of `bpf_prog_test_run`.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::mem;
use core::panic::AssertUnwindSafe;
use core::ptr;
use std::sync::{Arc, Mutex, RwLock, Weak};

use ebpf_ext_sys::ebpf_base::{ebpf_argument_type_t, ebpf_return_type_t};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_PROGRAM_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_context_descriptor_t, ebpf_program_context_create_t, ebpf_program_context_destroy_t,
    ebpf_program_data_t,
};
use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_INVALID_ARGUMENT, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ebpf_windows::EBPF_MAX_GENERAL_HELPER_FUNCTION;
use ebpf_ext_sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_ext_sys::netioddk::{NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, KIRQL, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::KeLowerIrql;

use crate::bpf::HelperBinding;
use crate::contract::Contract;
use crate::error::{CoreError, Refusal, failed_to_load};
use crate::nmr::{NmrClient, Registration, lock, read, write};
use crate::validate::{
    context_functions, copy_program_data, npi_specific, provider_module_guid, validate_program_data,
};

/// The client dispatch table the core hands each program-information provider: a placeholder
/// (`{int reserved}`, 0), never NULL.
static CLIENT_DISPATCH: i32 = 0;

/// One helper function a program-information provider describes, with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// `helper_id`.
    pub id: u32,
    /// `name`.
    pub name: String,
    /// `return_type`.
    pub return_type: ebpf_return_type_t,
    /// `arguments`.
    pub arguments: [ebpf_argument_type_t; 5],
    /// `flags.reallocate_packet` (false when the prototype's version has no flags).
    pub reallocate_packet: bool,
    /// `implicit_context` (false when the prototype's version has no such field).
    pub implicit_context: bool,
    /// The matching entry of the helper address table, or `None` when the provider
    /// publishes no address table for this kind of helper.
    pub address: Option<u64>,
}

/// The core-sim's owned copy of a provider's `ebpf_program_data_t`, taken at attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// Type descriptor `name`.
    pub name: String,
    /// Type descriptor `program_type`.
    pub program_type: GUID,
    /// Type descriptor `bpf_prog_type`.
    pub bpf_prog_type: u32,
    /// Type descriptor `is_privileged`.
    pub is_privileged: bool,
    /// The context descriptor.
    pub context_descriptor: ebpf_context_descriptor_t,
    /// `required_irql`.
    pub required_irql: KIRQL,
    /// `capabilities.value` (0 for program data of size 65).
    pub capabilities: u32,
    /// Program-type-specific helpers, with `program_type_specific_helper_function_addresses`.
    pub helpers: Vec<Helper>,
    /// Global helper overrides, with `global_helper_function_addresses`.
    pub global_helpers: Vec<Helper>,
    /// `context_create` is non-NULL.
    pub has_context_create: bool,
    /// `context_destroy` is non-NULL.
    pub has_context_destroy: bool,
    /// The client attachment this copy came from (none for a copy built by hand): a program
    /// loaded with it registers a client of its own, and runs only while a provider whose
    /// data binds it is attached to that client.
    pub(crate) binding: InfoBinding,
}

/// Whether a client's program-information provider is attached, and which attachment, and
/// the runs in flight of the program loaded through the client (a program's own client) or
/// of test runs through it: the core's program-information rundown. A detach waits for the
/// runs, and afterwards the program does not run (the core's invoke returns
/// `EBPF_EXTENSION_FAILED_TO_LOAD`) until a later attachment has re-resolved its helpers
/// ([`HelperBinding::rebind`]).
#[derive(Default)]
pub(crate) struct Liveness {
    state: Mutex<LiveState>,
    idle: std::sync::Condvar,
    /// The program loaded through this client (a program's own client has one, a client a
    /// test registers has none), and the attachment it is to be bound to (its program data
    /// and number; `None` while detached).
    programs: Mutex<Programs>,
}

/// See [`Liveness::programs`].
#[derive(Default)]
struct Programs {
    /// Their helper bindings (dropped ones are pruned at each registration and attach).
    bindings: Vec<Weak<HelperBinding>>,
    /// The attached provider's program data (without its attachment, which would hold this
    /// liveness) and the attachment's number.
    current: Option<(ProgramInfo, u64)>,
}

#[derive(Default)]
struct LiveState {
    /// Attachments so far; the current one's number while `attached`.
    generation: u64,
    attached: bool,
    runs: usize,
}

impl Liveness {
    /// A provider attached: its attachment's number.
    fn attach(&self) -> u64 {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.attached = true;
        state.generation
    }

    /// The provider detaches: no run starts afterwards, and the ones in flight end first.
    /// A provider deregistered from inside a run of its own programs (a helper, on the
    /// running thread) waits for ever here, as the core's rundown wait would.
    fn detach(&self) {
        lock(&self.programs).current = None;
        let mut state = lock(&self.state);
        state.attached = false;
        while state.runs > 0 {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Keeps `program` to re-resolve at every later attachment, and binds it to the
    /// attachment current now, as the core's load checks the program against the program
    /// data its client holds at that moment: an error (why) if no provider is attached (the
    /// core's `EBPF_EXTENSION_FAILED_TO_LOAD`) or the program does not bind to the attached
    /// one's data. Decided under the programs' lock, so an attach or a detach in between
    /// cannot leave a program that loaded but never runs.
    pub(crate) fn register(&self, program: &Arc<HelperBinding>) -> Result<(), String> {
        // Held while it rebinds: an attach's rebind cannot run between the check and the push.
        let mut programs = lock(&self.programs);
        programs.bindings.retain(|p| p.strong_count() > 0);
        programs.bindings.push(Arc::downgrade(program));
        let Some((info, generation)) = &programs.current else {
            return Err(
                "no provider of the program type is attached to the program's client \
                 (EBPF_EXTENSION_FAILED_TO_LOAD)"
                    .to_owned(),
            );
        };
        if program.generation() != *generation {
            program.rebind(info, *generation);
        }
        if program.generation() == *generation {
            Ok(())
        } else {
            Err(program
                .refusal()
                .unwrap_or_else(|| format!("the program does not bind to {}", info.name)))
        }
    }

    /// Why the program loaded through this client cannot bind to program data `info`
    /// ([`HelperBinding::check`]): it keeps the reason, and the attach is refused before the
    /// provider sees the client, as the core's client of that program refuses. `None` if
    /// there is no program, or it binds.
    fn none_binds(&self, info: &ProgramInfo) -> Option<String> {
        let mut programs = lock(&self.programs);
        programs.bindings.retain(|p| p.strong_count() > 0);
        let live: Vec<_> = programs.bindings.iter().filter_map(Weak::upgrade).collect();
        let mut reasons = Vec::new();
        for program in &live {
            match program.check(info) {
                Ok(_) => return None,
                Err(why) => reasons.push(why),
            }
        }
        for (program, why) in live.iter().zip(&reasons) {
            program.refuse(why.clone());
        }
        reasons.into_iter().next()
    }

    /// A new attachment (`generation`, with program data `info`) re-resolves the program
    /// loaded with an earlier one, as the core's attach does for the program's client. It
    /// does not run meanwhile: it is still bound to an earlier attachment. A registration
    /// waits (the programs' lock is held throughout), so none is missed.
    fn rebind_programs(&self, info: &ProgramInfo, generation: u64) {
        let mut programs = lock(&self.programs);
        programs.bindings.retain(|p| p.strong_count() > 0);
        for program in programs.bindings.iter().filter_map(Weak::upgrade) {
            program.rebind(info, generation);
        }
        let mut current = info.clone();
        current.binding = InfoBinding::default();
        programs.current = Some((current, generation));
    }

    /// A test run (from `context_create` to `context_destroy`) under the attachment current
    /// now, if a provider is attached: a detach waits for it, as for a program's run.
    fn enter_current(&self) -> Option<LiveRun<'_>> {
        let mut state = lock(&self.state);
        if !state.attached {
            return None;
        }
        state.runs += 1;
        Some(LiveRun(self))
    }

    /// A run of a program bound to attachment `generation`, if it is still attached.
    pub(crate) fn enter(&self, generation: u64) -> Option<LiveRun<'_>> {
        let mut state = lock(&self.state);
        if !state.attached || state.generation != generation {
            return None;
        }
        state.runs += 1;
        Some(LiveRun(self))
    }
}

/// A run in flight under [`Liveness`]; ends on drop.
pub(crate) struct LiveRun<'a>(&'a Liveness);

impl Drop for LiveRun<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.runs -= 1;
        if state.runs == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// A [`ProgramInfo`]'s attachment (see [`Liveness`]); equal to every other, so that copies
/// compare by their contents.
#[derive(Clone, Default)]
pub(crate) struct InfoBinding(Option<(Arc<Liveness>, u64)>);

impl InfoBinding {
    /// The client's liveness and the attachment the copy came from (`None` for a copy built
    /// by hand).
    pub(crate) fn attachment(&self) -> Option<(&Arc<Liveness>, u64)> {
        self.0
            .as_ref()
            .map(|(liveness, generation)| (liveness, *generation))
    }
}

impl PartialEq for InfoBinding {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InfoBinding {}

impl fmt::Debug for InfoBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "attached copy"
        } else {
            "copy"
        })
    }
}

impl ProgramInfo {
    /// A copy that no provider's attachment backs, as program data built by hand: a program
    /// loaded with it registers no program-information client of its own and runs whatever
    /// becomes of the providers (for tests of core-sim's own checks, such as a program of the
    /// type with another context layout).
    #[must_use]
    pub fn unbound(&self) -> ProgramInfo {
        ProgramInfo {
            binding: InfoBinding::default(),
            ..self.clone()
        }
    }

    /// The helper a program calling `id` gets from this provider, by the core's id ranges
    /// (`_ebpf_program_get_helper_address_info_from_program_data`): an id of at least
    /// `EBPF_MAX_GENERAL_HELPER_FUNCTION` (0xFFFF) is looked up in the program-type-specific
    /// helpers only; a smaller id in the provider's global overrides only (after which the
    /// core would try its own general helpers, which the core-sim does not have). A helper
    /// the provider published in the other range is never found, as with the core.
    #[must_use]
    pub fn helper(&self, id: u32) -> Option<&Helper> {
        let table = if id >= EBPF_MAX_GENERAL_HELPER_FUNCTION {
            &self.helpers
        } else {
            &self.global_helpers
        };
        table.iter().find(|h| h.id == id)
    }
}

/// Size of the context header in front of every program context (`EBPF_CONTEXT_HEADER`).
const CONTEXT_HEADER_SIZE: usize = 64;

/// What the core keeps from an attached provider to call it later.
#[derive(Clone, Copy)]
struct ProviderBinding {
    context_create: Option<ebpf_program_context_create_t>,
    context_destroy: Option<ebpf_program_context_destroy_t>,
    required_irql: KIRQL,
}

#[derive(Default)]
struct AttachLog {
    /// A provider is attached or attaching.
    claimed: bool,
    refusal: Option<Refusal>,
    provider_status: Option<NTSTATUS>,
    /// Providers of other program types.
    declined: u32,
    /// A provider of this program type was offered (whatever became of it).
    matched: bool,
    detaches: u32,
}

/// The client state NMR calls into.
struct ProgramInfoState {
    program_type: GUID,
    log: Mutex<AttachLog>,
    /// Calls into the provider hold it shared; the detach callback takes it exclusively, so
    /// it waits for them and no call starts afterwards.
    binding: RwLock<Option<ProviderBinding>>,
    info: Mutex<Option<Arc<ProgramInfo>>>,
    /// The attached provider's attachment, and the runs under it of the program loaded
    /// through this client (for a program's own client) and of test runs.
    liveness: Arc<Liveness>,
    /// Whether a detach ends with an epoch synchronize: always for a client a test
    /// registers; for a program's own client only once the program loaded, as the core
    /// skips it while the program has no object id (a load failing after its client
    /// attached does not wait for the epochs of other threads).
    synchronizes: core::sync::atomic::AtomicBool,
}

impl ProgramInfoState {
    /// The checks of the core's program-information `ClientAttachProvider`. `Err(None)`:
    /// another program type's provider.
    ///
    /// # Safety
    /// `provider` is NULL or NMR's provider registration instance.
    unsafe fn check(
        &self,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> Result<(ProgramInfo, ProviderBinding), Option<Refusal>> {
        // SAFETY: the caller's precondition.
        let guid = unsafe { provider_module_guid(provider) }.map_err(Some)?;
        if guid != self.program_type {
            return Err(None);
        }
        lock(&self.log).matched = true;
        // SAFETY: `provider` is non-NULL (`provider_module_guid` checked it).
        let data = unsafe { npi_specific(provider) }.cast::<ebpf_program_data_t>();
        let invalid = |e| Some(Refusal::InvalidProgramData(e));
        // SAFETY: the provider's program data, NULL or readable as the ABI describes.
        unsafe { validate_program_data(data) }.map_err(invalid)?;
        // SAFETY: validated above.
        let info = unsafe { copy_program_data(data) }.map_err(invalid)?;
        // SAFETY: validated above.
        let (context_create, context_destroy) = unsafe { context_functions(data) };
        let binding = ProviderBinding {
            context_create,
            context_destroy,
            required_irql: info.required_irql,
        };
        Ok((info, binding))
    }
}

impl NmrClient for ProgramInfoState {
    fn attach_provider(
        &self,
        binding: HANDLE,
        context: *mut c_void,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> NTSTATUS {
        // SAFETY: NMR passes its provider registration instance.
        let (info, provider_binding) = match unsafe { self.check(provider) } {
            Ok(ok) => ok,
            Err(Some(refusal)) => {
                let status = refusal.status();
                lock(&self.log).refusal = Some(refusal);
                return status;
            }
            Err(None) => {
                lock(&self.log).declined += 1;
                return STATUS_INVALID_PARAMETER;
            }
        };
        {
            let mut log = lock(&self.log);
            if log.claimed {
                log.refusal = Some(Refusal::SecondProvider);
                return Refusal::SecondProvider.status();
            }
            // As a program's client in the core, after its "already attached" check: the hash
            // and the helpers are checked before the provider sees the client.
            if let Some(why) = self.liveness.none_binds(&info) {
                let refusal = Refusal::ProgramDoesNotBind(why);
                let status = refusal.status();
                log.refusal = Some(refusal);
                return status;
            }
            log.claimed = true;
        }
        let mut provider_binding_context: *mut c_void = ptr::null_mut();
        let mut provider_dispatch: *const c_void = ptr::null();
        // SAFETY: called from `ClientAttachProvider` with NMR's binding handle; the binding
        // context is this registration's context (alive until deregistration completes); the
        // client dispatch is a static; the out slots are locals.
        let status = unsafe {
            NmrClientAttachProvider(
                binding,
                context,
                (&raw const CLIENT_DISPATCH).cast(),
                &raw mut provider_binding_context,
                &raw mut provider_dispatch,
            )
        };
        let mut log = lock(&self.log);
        log.provider_status = Some(status);
        if NT_SUCCESS(status) {
            *write(&self.binding) = Some(provider_binding);
            let mut info = info;
            let generation = self.liveness.attach();
            info.binding = InfoBinding(Some((Arc::clone(&self.liveness), generation)));
            // As the core's attach for each program's client: programs loaded with an earlier
            // attachment run again once their helpers re-resolve against this one.
            self.liveness.rebind_programs(&info, generation);
            *lock(&self.info) = Some(Arc::new(info));
        } else {
            log.claimed = false;
        }
        status
    }

    fn detach_provider(&self) -> NTSTATUS {
        // As the core: waits for the runs of programs loaded with this provider's data (its
        // program-information rundown); none starts afterwards.
        self.liveness.detach();
        // Waits for context calls in flight; none starts afterwards.
        *write(&self.binding) = None;
        {
            let mut log = lock(&self.log);
            log.claimed = false;
            log.detaches += 1;
        }
        // As the core, after it frees its copy: waits until every epoch active now has ended
        // (a batch open on any thread, for one). A provider deregistered from inside an epoch
        // of its own thread waits for ever here, as with the core.
        if self.synchronizes.load(core::sync::atomic::Ordering::SeqCst) {
            crate::epoch::synchronize();
        }
        STATUS_SUCCESS
    }
}

/// An NMR client of the program-information NPI for one program type: what the core does
/// when a program of that type is loaded.
///
/// Replaces the program-information client of the C harnesses (`netebpf_ext_helper_t`,
/// `ntosebpf_ext_helper_t`), and checks the provider as the core does (see
/// [`ProgramInfoClient::attach`]). Dropping it deregisters and waits, like
/// [`ProgramInfoClient::detach`]. A test registers one to get the program data to load
/// programs with ([`ProgramInfoClient::info`]) and to create test-run contexts; each program
/// loaded with that data then registers a client of its own, as in the core
/// ([`BpfProgram::info_client`](crate::bpf::BpfProgram::info_client)).
///
/// When it and its provider detach (the provider deregisters, or this client does), it waits,
/// as the core does, for the runs of its program (for a program's own client) and for
/// test-run contexts created through it to end, lets the provider go (context calls fail
/// from then on; the copy [`ProgramInfoClient::info`] returns stays), and then waits until
/// every epoch active at that moment has ended (`ebpf_epoch_synchronize`): a batch open on
/// another thread, or any program running anywhere, each invocation being an epoch. (A
/// program's own client skips that wait until the program has loaded, as the core's does
/// before the program has an object id, so a failed load does not wait.) So neither a
/// deregistration of its provider nor its own detach (or drop) may happen inside an epoch, a
/// program or a helper on the same thread: it would wait for itself for ever, as with the
/// core.
pub struct ProgramInfoClient {
    registration: Registration<ProgramInfoState>,
    /// The copy taken at attach.
    attached_info: Arc<ProgramInfo>,
}

impl fmt::Debug for ProgramInfoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgramInfoClient")
            .field("program_type", &self.program_type())
            .field("attached", &self.is_attached())
            .finish_non_exhaustive()
    }
}

impl ProgramInfoClient {
    /// Registers a program-information client (module id: `MIT_GUID`, a fresh GUID) and
    /// requires the provider of `program_type` to attach during registration, as the core
    /// does.
    ///
    /// For each provider NMR offers, the client checks, in order (each failure is
    /// `STATUS_INVALID_PARAMETER` and no binding is made): `ModuleId->Type == MIT_GUID`;
    /// `ModuleId->Guid == program_type` (other program types are declined silently); the
    /// program data, rule by rule as the core does (see [`ProgramDataError`]); then that no
    /// provider is attached yet; then, for a program's own client
    /// ([`BpfProgram::info_client`](crate::bpf::BpfProgram::info_client)), that the data binds
    /// the program ([`Refusal::ProgramDoesNotBind`]). Then it calls
    /// `NmrClientAttachProvider` and keeps an owned copy of the program data
    /// ([`ProgramInfoClient::info`]).
    ///
    /// [`ProgramDataError`]: crate::ProgramDataError
    ///
    /// # Errors
    /// - [`CoreError::RegisterClient`] if `NmrRegisterClient` fails;
    /// - [`CoreError::ExtensionFailedToLoad`] if no provider attached: its `refusal` says
    ///   what the checks rejected (for example
    ///   `Refusal::InvalidProgramData(ProgramDataError::NullHelperName { .. })`), its
    ///   `provider_status` what the provider's `ProviderAttachClient` returned.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, on a thread bound to a usersim kernel.
    pub fn attach(program_type: GUID) -> Result<Self, CoreError> {
        Self::attach_typed(program_type).map_err(|(error, _)| error)
    }

    /// [`ProgramInfoClient::attach`]; an error comes with whether a provider of the program
    /// type was offered (a refused one, or one that refused the client) rather than none.
    pub(crate) fn attach_typed(program_type: GUID) -> Result<Self, (CoreError, bool)> {
        Self::attach_as(program_type, true)
    }

    /// [`ProgramInfoClient::attach`] for a program being loaded: until
    /// [`ProgramInfoClient::program_loaded`], a detach does not synchronize epochs.
    pub(crate) fn attach_for_program(program_type: GUID) -> Result<Self, CoreError> {
        Self::attach_as(program_type, false).map_err(|(error, _)| error)
    }

    /// The program this client was registered for has loaded (has an object id, in the
    /// core's terms): from now on a detach ends with an epoch synchronize.
    pub(crate) fn program_loaded(&self) {
        self.registration
            .client()
            .synchronizes
            .store(true, core::sync::atomic::Ordering::SeqCst);
    }

    fn attach_as(program_type: GUID, synchronizes: bool) -> Result<Self, (CoreError, bool)> {
        let state = ProgramInfoState {
            program_type,
            log: Mutex::new(AttachLog::default()),
            binding: RwLock::new(None),
            info: Mutex::new(None),
            liveness: Arc::default(),
            synchronizes: core::sync::atomic::AtomicBool::new(synchronizes),
        };
        let mut registration =
            Registration::register(EBPF_PROGRAM_INFO_EXTENSION_IID, state, |_| ptr::null())
                .map_err(|error| (error, false))?;
        let attached_info = lock(&registration.client().info).clone();
        if let Some(attached_info) = attached_info
            && read(&registration.client().binding).is_some()
        {
            return Ok(ProgramInfoClient {
                registration,
                attached_info,
            });
        }
        let (error, matched) = {
            let log = lock(&registration.client().log);
            let error = failed_to_load(
                "program-information",
                program_type,
                log.refusal.clone(),
                log.provider_status,
                log.declined,
            );
            (error, log.matched)
        };
        registration.deregister().map_err(|e| (e, matched))?;
        Err((error, matched))
    }

    /// The program type this client asked for.
    #[must_use]
    pub fn program_type(&self) -> GUID {
        self.registration.client().program_type
    }

    /// The client's module GUID (what the provider sees as the client's `ModuleId->Guid`).
    #[must_use]
    pub fn module_id(&self) -> GUID {
        self.registration.module_id()
    }

    /// Whether a provider is attached. False once the provider has deregistered (NMR called
    /// the client's detach callback); true again if a valid provider registers later (whose
    /// data binds the program, for a program's own client: [`Refusal::ProgramDoesNotBind`]
    /// otherwise, and it stays false).
    #[must_use]
    pub fn is_attached(&self) -> bool {
        read(&self.registration.client().binding).is_some()
    }

    /// The last provider this client refused, and why (`None` if it refused none).
    #[must_use]
    pub fn last_refusal(&self) -> Option<Refusal> {
        lock(&self.registration.client().log).refusal.clone()
    }

    /// The client's liveness, which the programs loaded through it register with.
    pub(crate) fn liveness(&self) -> Arc<Liveness> {
        Arc::clone(&self.registration.client().liveness)
    }

    /// How many times a provider detached from this client.
    #[must_use]
    pub fn detach_count(&self) -> u32 {
        lock(&self.registration.client().log).detaches
    }

    /// The copy of the program data taken when the current provider attached (or, after it
    /// detached, the last one).
    #[must_use]
    pub fn info(&self) -> Arc<ProgramInfo> {
        lock(&self.registration.client().info)
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.attached_info))
    }

    /// Calls the provider's `context_create` as `bpf_prog_test_run` does. An empty slice is
    /// passed as NULL with size 0. As the core hands the provider the request's data in
    /// kernel memory, which programs may write, the provider receives a writable copy of
    /// `data_in` that lives as long as the returned context ([`TestRunContext::data_in`]):
    /// providers may point into it (netebpfext's bind context points its app id there).
    /// The context borrows `context_in`.
    ///
    /// As the core, a `context_create` that fails but leaves a context in its out slot gets
    /// that context destroyed (here with no output buffers, since the caller names its output
    /// room only at [`TestRunContext::destroy`]; [`crate::bpf::BpfProgram::test_run`] passes
    /// buffers of its rooms, as the core passes the caller's), and one that succeeds with a
    /// NULL context breaks [`Contract::NullTestRunContext`]. [`TestRunContext::destroy`] breaks
    /// [`Contract::TestRunOutputTooLarge`] if the provider reports more output than it had
    /// room for.
    ///
    /// # Errors
    /// What `context_create` returned (the core reports any failure to the caller as
    /// `EBPF_INVALID_ARGUMENT`; tests see the provider's own status);
    /// `EBPF_EXTENSION_FAILED_TO_LOAD` if no provider is attached; `EBPF_INVALID_ARGUMENT` if
    /// the provider has no `context_create` or no `context_destroy` (as the core).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL. It raises to the provider's `required_irql` for the provider's
    /// `context_create`, and so does [`TestRunContext::destroy`] for its `context_destroy`, as
    /// the core's test run does in the version the reference sheets describe (its work item
    /// raises, creates, runs, destroys, lowers). Other upstream versions call `context_create`
    /// on the caller's thread and `context_destroy` after lowering. Raised is the stricter of
    /// the two: a provider that works here works with either.
    ///
    /// # Locking
    /// Holds the client's binding lock shared during the call, and the provider's
    /// program-information rundown from this call until the context is destroyed, as the
    /// core's test run does: a provider detach (its deregistration) waits until then, so do not
    /// deregister the provider on the thread that holds the context.
    pub fn create_context<'a>(
        &'a self,
        data_in: &'a [u8],
        context_in: &'a [u8],
    ) -> Result<TestRunContext<'a>, ebpf_result_t> {
        self.create_context_with(Input::Bytes(data_in), Input::Bytes(context_in))
    }

    /// [`ProgramInfoClient::create_context`] with inputs that may be malformed
    /// ([`Input::Null`]: NULL with a non-zero size).
    ///
    /// # Errors
    /// As [`ProgramInfoClient::create_context`].
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn create_context_with<'a>(
        &'a self,
        data_in: Input<'a>,
        context_in: Input<'a>,
    ) -> Result<TestRunContext<'a>, ebpf_result_t> {
        let copy = match data_in {
            Input::Bytes([]) | Input::Null { .. } => None,
            Input::Bytes(bytes) => Some(AssertUnwindSafe(writable_copy(bytes))),
        };
        let (data, data_size) = match &copy {
            Some(copy) => (UnsafeCell::raw_get(copy.as_ptr()).cast_const(), copy.len()),
            None => data_in.raw(),
        };
        let (context_in, context_size) = context_in.raw();
        let mut created = self.create_context_raw(
            data,
            data_size,
            context_in,
            context_size,
            &mut OutputBuffers::default(),
        )?;
        created.data_in = copy;
        Ok(created)
    }

    /// [`ProgramInfoClient::create_context_with`] on raw inputs (a test run's data buffer,
    /// which programs may write through the context's data pointers). A context a failed
    /// create leaves is destroyed into `out` (the caller's output buffers, whose contents are
    /// then meaningless): the core destroys it into the caller's and fails the run.
    pub(crate) fn create_context_raw(
        &self,
        data: *const u8,
        data_size: usize,
        context_in: *const u8,
        context_size: usize,
        out: &mut OutputBuffers,
    ) -> Result<TestRunContext<'_>, ebpf_result_t> {
        // As the core's test run, which holds the program-information rundown from
        // `context_create` to `context_destroy`: a provider detach waits for the whole run.
        let Some(run) = self.registration.client().liveness.enter_current() else {
            return Err(EBPF_EXTENSION_FAILED_TO_LOAD);
        };
        let binding = read(&self.registration.client().binding);
        let Some(provider) = *binding else {
            return Err(EBPF_EXTENSION_FAILED_TO_LOAD);
        };
        // As the core's `ebpf_program_execute_test_run`: a type without both functions does
        // not support test runs.
        let (Some(create), Some(destroy)) = (provider.context_create, provider.context_destroy)
        else {
            return Err(EBPF_INVALID_ARGUMENT);
        };
        let mut context: *mut c_void = ptr::null_mut();
        // SAFETY: the provider is attached and cannot detach while the binding lock is held
        // shared, so its callback is callable; each input is NULL or valid for its size (an
        // `Input::Null` size is the provider's to reject); the out slot is a local.
        // At the provider's `required_irql` (see `create_context` on why).
        let result = at_irql(provider.required_irql, || unsafe {
            create(data, data_size, context_in, context_size, &raw mut context)
        });
        if result != EBPF_SUCCESS {
            if !context.is_null() {
                // As the core's test run, which destroys whatever context `context_create`
                // left, whether it succeeded or not: a provider that freed its context and
                // failed without clearing the slot is destroying it twice.
                // The core reads neither what it writes nor the sizes it reports: the run
                // fails. (So no output contract here.)
                // SAFETY: the provider is attached (binding lock held); the context is what
                // its `context_create` left, destroyed once.
                let _discarded = unsafe {
                    destroy_into(destroy, provider.required_irql, context, mem::take(out))
                };
            }
            return Err(result);
        }
        if context.is_null() {
            Contract::NullTestRunContext.broken(
                format_args!("context_create returned EBPF_SUCCESS and a NULL context"),
                0,
                0,
            );
        }
        // As the core once per test run: slot 0 of the 64-byte header in front of the context
        // is the execution state (none outside a run: NULL), slot 1 the core's copy of the
        // context descriptor. `context_create` must leave those bytes writable; a provider
        // that does not has whatever precedes its context overwritten, as with the core.
        let info = self.info();
        let header = context.wrapping_byte_sub(CONTEXT_HEADER_SIZE);
        // A context in pool must have the header in its own allocation: the write below would
        // otherwise corrupt the pool in front of it (caught here, not as a crash later).
        if let Some(allocation) = ebpf_ext_usersim::pool_allocation_containing(context as usize)
            && (header as usize) < allocation.start
        {
            Contract::NoContextHeader.broken(
                format_args!(
                    "context_create returned {context:p}, {} bytes into its pool allocation; the core's 64-byte header goes in front of it",
                    context as usize - allocation.start
                ),
                context as usize,
                allocation.start,
            );
        }
        // SAFETY: the provider's contract: 64 writable bytes precede the context.
        unsafe { header.cast::<u64>().write_unaligned(0) };
        // SAFETY: as above.
        unsafe {
            header
                .wrapping_byte_add(8)
                .cast::<*const ebpf_context_descriptor_t>()
                .write_unaligned(&raw const info.context_descriptor);
        }
        Ok(TestRunContext {
            client: self,
            context,
            info,
            data_in: None,
            _run: run,
            _inputs: PhantomData,
        })
    }

    /// Runs `f` at the provider's `required_irql` (raised from the current IRQL if it is
    /// lower; left as is otherwise), as `bpf_prog_test_run` runs the program.
    ///
    /// # IRQL
    /// Any level up to `required_irql`; restored when `f` returns or unwinds.
    pub fn at_required_irql<R>(&self, f: impl FnOnce() -> R) -> R {
        let required = read(&self.registration.client().binding)
            .map_or(self.info().required_irql, |b| b.required_irql);
        at_irql(required, f)
    }

    /// Deregisters the client and waits until the provider has detached.
    ///
    /// # Errors
    /// [`CoreError::Deregister`] if NMR rejects the deregistration.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn detach(mut self) -> Result<(), CoreError> {
        self.registration.deregister()
    }

    fn destroy_context(
        &self,
        context: *mut c_void,
        out: OutputBuffers,
    ) -> Result<ContextOutput, CoreError> {
        let binding = read(&self.registration.client().binding);
        let Some((destroy, required)) =
            binding.and_then(|b| Some((b.context_destroy?, b.required_irql)))
        else {
            return Err(CoreError::NotAttached);
        };
        let (data_capacity, context_capacity) = (out.data.len(), out.context.len());
        // SAFETY: the provider is attached (binding lock held shared); `context` came from its
        // `context_create` and is destroyed once.
        let mut output = unsafe { destroy_into(destroy, required, context, out) };
        let (data_size_out, context_size_out) = (output.data_size_out, output.context_size_out);
        if data_size_out > data_capacity || context_size_out > context_capacity {
            Contract::TestRunOutputTooLarge.broken(
                format_args!(
                    "context_destroy reported {data_size_out} data bytes (room for {data_capacity}) and {context_size_out} context bytes (room for {context_capacity})"
                ),
                data_size_out,
                context_size_out,
            );
        }
        output.data.truncate(data_size_out);
        output.context.truncate(context_size_out);
        Ok(output)
    }
}

/// A test run's zeroed output buffers (`data_out`, `ctx_out`), allocated before the run's
/// context is created: a run cannot then fail to allocate them after the provider created a
/// context (which would leak it), as the core's caller owns its reply buffer before the run.
#[derive(Debug, Default)]
pub(crate) struct OutputBuffers {
    data: Vec<u8>,
    context: Vec<u8>,
}

impl OutputBuffers {
    /// Zeroed buffers of `data` and `context` bytes.
    ///
    /// # Errors
    /// [`CoreError::NoMemory`] if either cannot be allocated (a size beyond `isize::MAX`
    /// included).
    pub(crate) fn zeroed(data: usize, context: usize) -> Result<Self, CoreError> {
        let buffer = |size: usize| {
            let mut buffer = Vec::new();
            buffer.try_reserve_exact(size).ok()?;
            buffer.resize(size, 0u8);
            Some(buffer)
        };
        match (buffer(data), buffer(context)) {
            (Some(data), Some(context)) => Ok(OutputBuffers { data, context }),
            _ => Err(CoreError::NoMemory { data, context }),
        }
    }
}

/// Calls a provider's `context_destroy` with the output buffers `out` (NULL for an empty one),
/// at `required` (see [`ProgramInfoClient::create_context`] on why), and returns the buffers
/// whole with the sizes it reported.
///
/// # Safety
/// `destroy` is the `context_destroy` of a provider that stays attached for the call, and
/// `context` came from its `context_create` and is destroyed only here.
unsafe fn destroy_into(
    destroy: ebpf_program_context_destroy_t,
    required: KIRQL,
    context: *mut c_void,
    out: OutputBuffers,
) -> ContextOutput {
    let OutputBuffers {
        mut data,
        context: mut context_out,
    } = out;
    let mut data_size_out = data.len();
    let mut context_size_out = context_out.len();
    let out = |buffer: &mut Vec<u8>| {
        if buffer.is_empty() {
            ptr::null_mut()
        } else {
            buffer.as_mut_ptr()
        }
    };
    // SAFETY: the caller's contract for `destroy` and `context`; each output buffer is NULL or
    // writable for the capacity passed in its size slot.
    at_irql(required, || unsafe {
        destroy(
            context,
            out(&mut data),
            &raw mut data_size_out,
            out(&mut context_out),
            &raw mut context_size_out,
        );
    });
    ContextOutput {
        data,
        data_size_out,
        context: context_out,
        context_size_out,
    }
}

/// Runs `f` at `required` (a provider's `required_irql`, validated at attach: at most
/// HIGH_LEVEL), raised from the current IRQL if it is lower; left as is otherwise.
fn at_irql<R>(required: KIRQL, f: impl FnOnce() -> R) -> R {
    if required <= KeGetCurrentIrql() {
        return f();
    }
    // SAFETY: `required` is above the current IRQL (checked) and at most HIGH_LEVEL
    // (validated at attach); the guard lowers it back on this thread.
    let old = unsafe { KeRaiseIrql(required) };
    let _restore = RestoreIrql(old);
    f()
}

/// Restores the IRQL when dropped.
struct RestoreIrql(KIRQL);

impl Drop for RestoreIrql {
    fn drop(&mut self) {
        // SAFETY: `self.0` is what the preceding raise on this thread returned.
        unsafe { KeLowerIrql(self.0) };
    }
}

/// An input buffer of `context_create`.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// These bytes (an empty slice is passed as NULL with size 0).
    Bytes(&'a [u8]),
    /// NULL with this size (a malformed input when the size is non-zero).
    Null {
        /// The size passed with the NULL pointer.
        size: usize,
    },
}

impl Input<'_> {
    fn raw(self) -> (*const u8, usize) {
        match self {
            Input::Bytes([]) => (ptr::null(), 0),
            Input::Bytes(bytes) => (bytes.as_ptr(), bytes.len()),
            Input::Null { size } => (ptr::null(), size),
        }
    }
}

impl<'a> From<&'a [u8]> for Input<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Input::Bytes(bytes)
    }
}

/// A program context the provider created. Dropping it calls `context_destroy` with no
/// output buffers.
pub struct TestRunContext<'a> {
    client: &'a ProgramInfoClient,
    context: *mut c_void,
    /// The copy whose context descriptor the context header points to.
    info: Arc<ProgramInfo>,
    /// The core's copy of `data_in` the provider was given, if any, as the core keeps the
    /// request's data in kernel memory: programs and helpers may write it through the
    /// context's data pointers, so it is held as the built-in maps hold their values and
    /// reached only through `UnsafeCell::raw_get`. Freed after the context is destroyed
    /// (`Drop` runs before the fields drop). Bytes a program works on, not state a panic can
    /// leave inconsistent, so the context stays `RefUnwindSafe`.
    data_in: Option<AssertUnwindSafe<Box<[UnsafeCell<u8>]>>>,
    /// The run under the provider's attachment: its detach waits until the context is
    /// destroyed (released after `Drop` has destroyed it).
    _run: LiveRun<'a>,
    _inputs: PhantomData<&'a [u8]>,
}

/// A copy of `bytes` that may be written through pointers derived from it.
fn writable_copy(bytes: &[u8]) -> Box<[UnsafeCell<u8>]> {
    bytes.iter().map(|&byte| UnsafeCell::new(byte)).collect()
}

impl fmt::Debug for TestRunContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRunContext")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl TestRunContext<'_> {
    /// The program context pointer (what a program receives).
    #[must_use]
    pub fn as_ptr(&self) -> *mut c_void {
        self.context
    }

    /// The core's copy of `data_in` that `context_create` received (an empty range if it
    /// received NULL): where a provider's data pointers point.
    #[must_use]
    pub fn data_in(&self) -> core::ops::Range<*mut u8> {
        self.data_in
            .as_ref()
            .map_or(ptr::null_mut()..ptr::null_mut(), |copy| {
                let start = UnsafeCell::raw_get(copy.as_ptr());
                start..start.wrapping_add(copy.len())
            })
    }

    /// The context descriptor slot 1 of the context header was given.
    pub(crate) fn descriptor(&self) -> *const ebpf_context_descriptor_t {
        &raw const self.info.context_descriptor
    }

    /// Calls the provider's `context_destroy` with output buffers of these capacities, as
    /// `bpf_prog_test_run` does, and returns what it wrote.
    ///
    /// # Errors
    /// [`CoreError::NoMemory`] if the buffers cannot be allocated (the context is then
    /// destroyed with none); [`CoreError::NotAttached`] if the provider has detached (the
    /// context is then leaked in the provider's pool: its module may be gone). The context
    /// holds the provider's rundown, so this does not happen while NMR and the provider keep
    /// their contracts.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn destroy(
        self,
        data_capacity: usize,
        context_capacity: usize,
    ) -> Result<ContextOutput, CoreError> {
        let out = OutputBuffers::zeroed(data_capacity, context_capacity)?;
        self.destroy_into(out)
    }

    /// [`TestRunContext::destroy`] into buffers the caller allocated.
    pub(crate) fn destroy_into(mut self, out: OutputBuffers) -> Result<ContextOutput, CoreError> {
        let context = mem::replace(&mut self.context, ptr::null_mut());
        self.client.destroy_context(context, out)
    }
}

impl Drop for TestRunContext<'_> {
    fn drop(&mut self) {
        if !self.context.is_null() {
            let _ = self
                .client
                .destroy_context(self.context, OutputBuffers::default());
        }
    }
}

/// What `context_destroy` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextOutput {
    /// `data_out`, truncated to the size the provider reported (at most the capacity).
    pub data: Vec<u8>,
    /// The `*data_size_out` the provider reported.
    pub data_size_out: usize,
    /// `context_out`, truncated to the size the provider reported (at most the capacity).
    pub context: Vec<u8>,
    /// The `*context_size_out` the provider reported.
    pub context_size_out: usize,
}
