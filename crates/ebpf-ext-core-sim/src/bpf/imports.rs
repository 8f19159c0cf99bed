//! The core's side of the BTF-resolved function NPI for one loaded program: the functions it
//! calls by name, and the providers (one per module GUID) they come from.
//!
//! What the core does and core-sim does alike, as far as eBPF for Windows' design document
//! (`docs/BtfResolvedFunctions.md`, sections 8 and 9), its specification (`docs/specs/btfid`,
//! REQ-LOAD and REQ-RUN), its tests and its newest `shared_common.c` (the validation) say;
//! the core's code for loading and binding was not available to compare with. The design
//! document runs these calls in native (bpf2c) programs only; core-sim's programs stand for
//! those:
//! - A client of `EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID` attaches to the provider whose NMR
//!   module id is a module the program names, and declines every other with
//!   `STATUS_NOINTERFACE`; a second provider of a module already attached gets
//!   `STATUS_INVALID_DEVICE_STATE`.
//! - The provider data must have at least one function, prototypes and addresses, every
//!   prototype version 1, size 60, total size 64 and a name, and the provider data's header
//!   version 1, size 48 and a total size at least 48 (the core's
//!   `ebpf_validate_btf_resolved_function_provider_data` in its newest `shared_common.c`).
//! - A program's calls are checked against the prototypes the modules publish before any of
//!   its clients binds (the verifier reads them from the store, before the core loads the
//!   program), so a program the checks refuse binds to no provider; core-sim reads them with a
//!   client that declines every provider once it has read its data.
//! - The addresses of the functions the program calls are copied at attach, found by name.
//!   A program whose modules are not all attached does not load
//!   (`EBPF_EXTENSION_FAILED_TO_LOAD`); once loaded, an invocation while one is detached fails
//!   with `EBPF_EXTENSION_FAILED_TO_LOAD` and runs nothing; a provider's detach waits until
//!   the program's running invocations end (the design document clears the addresses first
//!   and then waits, the specification's account of the native code waits first; core-sim
//!   waits, then clears them, which no invocation can tell apart). The addresses-changed
//!   callback the design document describes is not modelled (it has no JIT path yet either).
//!
//! An invocation that starts while a provider detaches fails at once, as with the core's
//! rundown protection; in a chain of tail calls each program enters on its own, so a callee
//! whose provider is detached fails the invocation after its caller ran (the core's order
//! there is not confirmed).
//!
//! core-sim's own choices where the sources say nothing: an invalid provider data is declined
//! with `STATUS_INVALID_PARAMETER`; a function the program calls published at address 0 is
//! declined (the core only requires the address array); a provider that does not publish a function the program
//! calls, or publishes it with another prototype than the one the program was checked against
//! (the one its program-information hash covers), is declined with `STATUS_NOINTERFACE`; both
//! are recorded for the load's error message. Each module gets a client registration of its
//! own (the core's native modules register one client, with a wildcard module id, for every
//! module: a provider sees one attach per program and module here, one per native module
//! there).

use core::ffi::{CStr, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, TryLockError};

use ebpf_ext_sys::ebpf_base::{ebpf_argument_type_t, ebpf_return_type_t};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_btf_resolved_function_prototype_t, ebpf_btf_resolved_function_provider_data_t,
};
use ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t;
use ebpf_ext_sys::netioddk::{NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NT_SUCCESS, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_SUCCESS,
};

use crate::nmr::{NmrClient, Registration, lock, write};

/// A BTF-resolved function's prototype as a provider published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtfPrototype {
    /// Return type.
    pub return_type: ebpf_return_type_t,
    /// Argument types.
    pub arguments: [ebpf_argument_type_t; 5],
    /// Flags.
    pub flags: u32,
}

/// A BTF-resolved function a loaded program calls: what its program-information hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfFunctionUse {
    /// The module GUID its declaration tag names.
    pub module: GUID,
    /// Its name.
    pub name: String,
    /// The prototype the program was loaded against.
    pub prototype: BtfPrototype,
}

/// One function the program imports.
struct Import {
    module: GUID,
    name: String,
    /// The prototype the program was checked against (the first provider's the look-up
    /// read), or `None` before one was read.
    prototype: Mutex<Option<BtfPrototype>>,
    /// Its address while its provider is attached; 0 otherwise.
    address: AtomicU64,
}

/// What the program's module clients share.
struct Imports {
    functions: Vec<Import>,
    /// Held (shared) by each invocation; a provider's detach takes it exclusively, so it
    /// returns only once no invocation can still call the provider.
    rundown: RwLock<()>,
    /// The modules whose providers are detaching: listed before each waits for the rundown,
    /// so invocations that start meanwhile fail at once rather than wait (as with the core's
    /// rundown protection).
    detaching: Mutex<Vec<GUID>>,
    /// Why providers were declined, for the load's error message.
    refusals: Mutex<Vec<String>>,
}

/// What a module's client does with the providers NMR offers it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads the provider's data and declines it: the store's view, which binds nothing.
    LookUp,
    /// Binds to the provider and copies the addresses.
    Bind,
}

/// The NMR client of one module.
struct ModuleClient {
    module: GUID,
    mode: Mode,
    imports: Arc<Imports>,
    /// Taken by the provider being attached or attached, so a second one is refused.
    claimed: AtomicBool,
    /// Set once the provider's functions are in place ([`Mode::Bind`]) or read
    /// ([`Mode::LookUp`]): what loading checks.
    attached: AtomicBool,
    /// What the provider published (name, prototype).
    published: Mutex<Vec<PublishedBtfFunction>>,
}

/// A function a BTF-resolved function provider publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedBtfFunction {
    /// Its name.
    pub name: String,
    /// Its prototype.
    pub prototype: BtfPrototype,
}

/// Reads a provider's data as the core validates it: the published functions by name.
///
/// # Safety
/// `data` is NULL or the provider's `NpiSpecificCharacteristics`, alive while it is
/// registered.
unsafe fn published(
    data: *const ebpf_btf_resolved_function_provider_data_t,
) -> Result<Vec<(String, BtfPrototype, u64)>, String> {
    if data.is_null() {
        return Err("no provider data".into());
    }
    // SAFETY: non-NULL provider data (caller's contract); the header is read first, without
    // assuming the provider aligned it.
    let header = unsafe { data.cast::<ebpf_extension_header_t>().read_unaligned() };
    if header.version != 1 || header.size != 48 || header.total_size < header.size {
        return Err(format!("provider data header {header:?}"));
    }
    // SAFETY: a version-1 provider data of full size (checked).
    let data = unsafe { data.read_unaligned() };
    let count = data.btf_resolved_function_count as usize;
    if count == 0
        || data.btf_resolved_function_prototypes.is_null()
        || data.btf_resolved_function_addresses.is_null()
    {
        return Err("no functions, prototypes or addresses".into());
    }
    let mut functions = Vec::new();
    for index in 0..count {
        // SAFETY: `count` prototypes (the provider's data).
        let at = unsafe { data.btf_resolved_function_prototypes.add(index) };
        // SAFETY: as above; the header is checked before the rest is used.
        let prototype: ebpf_btf_resolved_function_prototype_t = unsafe { at.read_unaligned() };
        let h = prototype.header;
        if h.version != 1 || h.size != 60 || h.total_size != 64 {
            return Err(format!("prototype {index}: header {h:?}"));
        }
        if prototype.name.is_null() {
            return Err(format!("prototype {index}: no name"));
        }
        // SAFETY: a non-NULL name of a valid prototype, NUL-terminated.
        let name = unsafe { CStr::from_ptr(prototype.name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `count` addresses, index-parallel to the prototypes.
        let at = unsafe { data.btf_resolved_function_addresses.add(index) };
        // SAFETY: as above.
        let address = unsafe { at.read_unaligned() };
        functions.push((
            name,
            BtfPrototype {
                return_type: prototype.return_type,
                arguments: prototype.arguments,
                flags: prototype.flags,
            },
            address,
        ));
    }
    Ok(functions)
}

impl Imports {
    /// The imports of `functions` (module, name), none resolved yet.
    fn new(functions: &[(GUID, String)]) -> Arc<Self> {
        Arc::new(Imports {
            functions: functions
                .iter()
                .map(|(module, name)| Import {
                    module: *module,
                    name: name.clone(),
                    prototype: Mutex::new(None),
                    address: AtomicU64::new(0),
                })
                .collect(),
            rundown: RwLock::new(()),
            detaching: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
        })
    }

    /// The distinct modules of the imports, sorted.
    fn modules(&self) -> Vec<GUID> {
        let mut modules: Vec<GUID> = self.functions.iter().map(|f| f.module).collect();
        modules.sort_by_key(GUID::to_u128);
        modules.dedup();
        modules
    }
}

impl ModuleClient {
    /// Registers the client of `module` for `imports`, which attaches at once to a provider
    /// already registered ([`Mode::Bind`]), or reads its data and declines it
    /// ([`Mode::LookUp`]).
    ///
    /// # Errors
    /// No provider of the module attached or read (with the reasons providers were declined),
    /// or the client could not register.
    fn register(
        module: GUID,
        mode: Mode,
        imports: &Arc<Imports>,
    ) -> Result<Registration<Self>, String> {
        let client = ModuleClient {
            module,
            mode,
            imports: Arc::clone(imports),
            claimed: AtomicBool::new(false),
            attached: AtomicBool::new(false),
            published: Mutex::new(Vec::new()),
        };
        let registration =
            Registration::register(EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID, client, |_| {
                ptr::null()
            })
            .map_err(|e| format!("module {module}: {e}"))?;
        if registration.client().attached.load(Ordering::Acquire) {
            return Ok(registration);
        }
        let refusals = lock(&imports.refusals).join("; ");
        Err(format!(
            "no provider of BTF-resolved functions for module {module} {}{}",
            if mode == Mode::LookUp {
                "could be read"
            } else {
                "is attached"
            },
            if refusals.is_empty() {
                String::new()
            } else {
                format!(" (declined: {refusals})")
            }
        ))
    }

    fn refuse(&self, why: &str) {
        lock(&self.imports.refusals).push(format!("module {}: {why}", self.module));
    }

    /// The addresses and prototypes of this module's imports in `published`, in import order;
    /// `Err` with why the provider is declined.
    fn resolve(
        &self,
        published: &[(String, BtfPrototype, u64)],
    ) -> Result<Vec<(usize, BtfPrototype, u64)>, String> {
        let mut resolved = Vec::new();
        for (index, import) in self.imports.functions.iter().enumerate() {
            if import.module != self.module {
                continue;
            }
            let Some((_, prototype, address)) =
                published.iter().find(|(name, ..)| *name == import.name)
            else {
                return Err(format!("publishes no function {}", import.name));
            };
            if lock(&import.prototype).is_some_and(|loaded| loaded != *prototype) {
                return Err(format!(
                    "publishes {} with prototype {prototype:?}, not the one the program was checked against",
                    import.name
                ));
            }
            if *address == 0 {
                return Err(format!("publishes {} at address 0", import.name));
            }
            resolved.push((index, *prototype, *address));
        }
        Ok(resolved)
    }
}

impl NmrClient for ModuleClient {
    fn attach_provider(
        &self,
        binding: HANDLE,
        context: *mut c_void,
        provider: *const NPI_REGISTRATION_INSTANCE,
    ) -> NTSTATUS {
        // SAFETY: NMR passes its provider registration instance.
        let Some(instance) = (unsafe { provider.as_ref() }) else {
            return STATUS_NOINTERFACE;
        };
        // SAFETY: NULL or the provider's module id, alive while it is registered.
        let module = unsafe { instance.ModuleId.as_ref() }.and_then(NPI_MODULEID::guid);
        if module != Some(self.module) {
            return STATUS_NOINTERFACE;
        }
        // A look-up reads the first provider of the module NMR offers, as a bind attaches to
        // the first that qualifies.
        if self.mode == Mode::LookUp && self.attached.load(Ordering::Acquire) {
            return STATUS_NOINTERFACE;
        }
        // Claimed before anything else, so of two providers of the module attaching at once
        // one is refused; released on every failure below.
        if self.mode == Mode::Bind
            && self
                .claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.refuse("a second provider, while one is attached (STATUS_INVALID_DEVICE_STATE)");
            return STATUS_INVALID_DEVICE_STATE;
        }
        let release = |status: NTSTATUS| {
            self.claimed.store(false, Ordering::Release);
            status
        };
        // SAFETY: the provider's characteristics, for this NPI.
        let published = match unsafe {
            published(
                instance
                    .NpiSpecificCharacteristics
                    .cast::<ebpf_btf_resolved_function_provider_data_t>(),
            )
        } {
            Ok(published) => published,
            Err(why) => {
                self.refuse(&why);
                return release(STATUS_INVALID_PARAMETER);
            }
        };
        let resolved = match self.resolve(&published) {
            Ok(resolved) => resolved,
            Err(why) => {
                self.refuse(&why);
                return release(STATUS_NOINTERFACE);
            }
        };
        if self.mode == Mode::LookUp {
            *lock(&self.published) = published_functions(&published);
            for (index, prototype, _) in resolved {
                lock(&self.imports.functions[index].prototype).get_or_insert(prototype);
            }
            self.attached.store(true, Ordering::Release);
            // Read; declined, so the provider sees no client.
            return STATUS_NOINTERFACE;
        }
        let (mut provider_binding, mut provider_dispatch) = (ptr::null_mut(), ptr::null());
        // SAFETY: called from `ClientAttachProvider` with NMR's handle; the binding context is
        // this registration's context; no client dispatch; local out slots.
        let status = unsafe {
            NmrClientAttachProvider(
                binding,
                context,
                ptr::null(),
                &raw mut provider_binding,
                &raw mut provider_dispatch,
            )
        };
        if !NT_SUCCESS(status) {
            self.refuse(&format!("NmrClientAttachProvider returned {status:#x}"));
            return release(status);
        }
        *lock(&self.published) = published_functions(&published);
        for (index, prototype, address) in resolved {
            let import = &self.imports.functions[index];
            lock(&import.prototype).get_or_insert(prototype);
            import.address.store(address, Ordering::Release);
        }
        self.attached.store(true, Ordering::Release);
        status
    }

    fn detach_provider(&self) -> NTSTATUS {
        // New invocations fail from here; the running ones are waited for, and only then are
        // the addresses they may still call gone.
        lock(&self.imports.detaching).push(self.module);
        let no_invocations = write(&self.imports.rundown);
        self.attached.store(false, Ordering::Release);
        for import in &self.imports.functions {
            if import.module == self.module {
                import.address.store(0, Ordering::Release);
            }
        }
        self.claimed.store(false, Ordering::Release);
        let mut detaching = lock(&self.imports.detaching);
        if let Some(at) = detaching.iter().position(|m| *m == self.module) {
            detaching.swap_remove(at);
        }
        drop(detaching);
        drop(no_invocations);
        STATUS_SUCCESS
    }
}

/// The names and prototypes of what a provider published.
fn published_functions(published: &[(String, BtfPrototype, u64)]) -> Vec<PublishedBtfFunction> {
    published
        .iter()
        .map(|(name, prototype, _)| PublishedBtfFunction {
            name: name.clone(),
            prototype: *prototype,
        })
        .collect()
}

/// The BTF-resolved functions a program being loaded calls, with the prototypes their modules
/// publish, before any client binds: what its calls are checked against.
pub(crate) struct BtfLookup {
    imports: Arc<Imports>,
}

impl BtfLookup {
    /// Reads the prototypes of `functions` (module, name; distinct) from their modules'
    /// providers, binding to none.
    ///
    /// # Errors
    /// Why the program cannot load: a module with no provider (with the reasons providers
    /// were declined), or a client that could not register.
    pub(crate) fn read(functions: &[(GUID, String)]) -> Result<Self, String> {
        let imports = Imports::new(functions);
        for module in imports.modules() {
            drop(ModuleClient::register(module, Mode::LookUp, &imports)?);
        }
        Ok(BtfLookup { imports })
    }

    /// The prototype of function `index`.
    pub(crate) fn prototype(&self, index: usize) -> Option<BtfPrototype> {
        *lock(&self.imports.functions.get(index)?.prototype)
    }

    /// Registers a client for each module, which binds at once to a provider already
    /// registered that publishes the functions with the prototypes read.
    ///
    /// # Errors
    /// Why the program cannot load: a module with no provider attached (with the refusals
    /// recorded), or a client that could not register.
    pub(crate) fn bind(self) -> Result<BtfImports, String> {
        // A refusal is reported by the step that met it: the look-up's are not repeated.
        lock(&self.imports.refusals).clear();
        let clients = self
            .imports
            .modules()
            .into_iter()
            .map(|module| ModuleClient::register(module, Mode::Bind, &self.imports))
            .collect::<Result<_, _>>()?;
        Ok(BtfImports {
            imports: self.imports,
            _clients: clients,
        })
    }
}

/// The BTF-resolved functions a loaded program calls, and its clients of their modules.
pub(crate) struct BtfImports {
    imports: Arc<Imports>,
    /// Dropped (deregistered, waiting for detach) with the program.
    _clients: Vec<Registration<ModuleClient>>,
}

impl BtfImports {
    /// Enters an invocation: held until it ends, so no provider detaches meanwhile. Never
    /// waits: while a provider detaches, the invocation fails at once.
    ///
    /// # Errors
    /// The module of a function whose provider is detached or detaching (the invocation must
    /// not run).
    pub(crate) fn enter(&self) -> Result<RwLockReadGuard<'_, ()>, GUID> {
        let detaching = || lock(&self.imports.detaching).first().copied();
        if let Some(module) = detaching() {
            return Err(module);
        }
        let guard = match self.imports.rundown.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // A detach between the check above and here.
            Err(TryLockError::WouldBlock) => return Err(detaching().unwrap_or(GUID::NULL)),
        };
        match self
            .imports
            .functions
            .iter()
            .find(|f| f.address.load(Ordering::Acquire) == 0)
        {
            Some(detached) => Err(detached.module),
            None => Ok(guard),
        }
    }

    /// The address of function `index` (0 while its provider is detached).
    pub(crate) fn address(&self, index: usize) -> u64 {
        self.imports
            .functions
            .get(index)
            .map_or(0, |f| f.address.load(Ordering::Acquire))
    }

    /// The functions with their load-time prototypes.
    pub(crate) fn uses(&self) -> Vec<BtfFunctionUse> {
        self.imports
            .functions
            .iter()
            .filter_map(|f| {
                Some(BtfFunctionUse {
                    module: f.module,
                    name: f.name.clone(),
                    prototype: (*lock(&f.prototype))?,
                })
            })
            .collect()
    }
}

/// The functions the provider of `module` publishes, read as the core's client reads them
/// when a program that calls them loads (what the user-mode store is to hold for the
/// module): a client reads the provider's data and declines it, so the provider sees no
/// attach.
///
/// # Errors
/// Why no provider of `module` could be read: none registered, or its data refused (the
/// reason the core's client would decline it).
///
/// # IRQL
/// PASSIVE_LEVEL, on a thread bound to a usersim kernel.
pub fn published_btf_functions(module: GUID) -> Result<Vec<PublishedBtfFunction>, String> {
    let registration = ModuleClient::register(module, Mode::LookUp, &Imports::new(&[]))?;
    Ok(lock(&registration.client().published).clone())
}
