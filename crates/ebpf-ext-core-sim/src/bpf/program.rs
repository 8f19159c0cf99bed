//! A program loaded against a provider's program information: checked as the verifier
//! would, its maps created, its helpers resolved as the core resolves them, and run by
//! core-sim's interpreter ([`vm`](super::vm)) with memory confined to what it may access.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ebpf_ext_sys::ebpf_extension::{
    EBPF_CONTEXT_HEADER_SIZE, ebpf_execution_context_state_t,
    ebpf_execution_context_state_tail_call_t,
};
use ebpf_ext_sys::ebpf_general_helpers::general_helper_prototype;
use ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t;
use ebpf_ext_sys::ebpf_result::{EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_FAILED, ebpf_result_t};
use ebpf_ext_sys::ebpf_windows::{EBPF_MAX_GENERAL_HELPER_FUNCTION, MAX_TAIL_CALL_CNT};
use ebpf_ext_sys::ntdef::GUID;

use super::BpfError;
use super::check::context_accesses;
use super::helpers::{Frame, GENERAL_HELPERS, Kept, MAX_SLOTS, Resolved, Target, call, with_frame};
use super::imports::{BtfFunctionUse, BtfImports, BtfLookup};
use super::insn::{CALL, Insn, LD_DW_IMM};
use super::maps::{BpfMap, ProgramKind};
use super::object::{BpfObject, CALL_KFUNC};
use super::vm::{self, Machine, Region, Stack};
use crate::hash::program_info_hash_with_btf;
use crate::link::{Link, LinkSpec};
use crate::nmr::lock;
use crate::program_info::{LiveRun, Liveness, OutputBuffers, ProgramInfo, ProgramInfoClient};

/// `bpf_map_lookup_and_delete_elem`'s id: a program calling it gets room for the values it
/// takes out.
const LOOKUP_AND_DELETE: u32 = 4;
/// The largest value core-sim keeps for `bpf_map_lookup_and_delete_elem` (each invocation
/// that calls it allocates room for eight).
const KEPT_SIZE_MAX: usize = 0x1_0000;

/// The slot size a program's invocations keep taken-out values in: the largest value of the
/// maps it can take them from, if it calls the core's `bpf_map_lookup_and_delete_elem`.
fn kept_size(section: &str, helpers: &[Resolved], maps: &[Arc<BpfMap>]) -> Result<usize, BpfError> {
    let calls = helpers
        .iter()
        .any(|h| h.id == LOOKUP_AND_DELETE && h.target == Target::General);
    if !calls {
        return Ok(0);
    }
    let givers = maps.iter().filter(|m| m.gives_up_values());
    let size = givers
        .map(|m| m.definition().value_size as usize)
        .max()
        .unwrap_or(0);
    if size > KEPT_SIZE_MAX {
        return Err(BpfError::Map(format!(
            "{section}: core-sim keeps values of up to {KEPT_SIZE_MAX} bytes for bpf_map_lookup_and_delete_elem, not {size}"
        )));
    }
    Ok(size)
}

/// Bytes after a test run's copy of the data that no program may access (see
/// [`BpfProgram::test_run`]).
const TEST_RUN_DATA_GUARD: usize = 16 * 1024;

/// What the guard holds.
const GUARD_PATTERN: u8 = 0xA5;

/// Where map handles start (an address no program memory has; programs pass handles to
/// helpers and never dereference them).
const MAP_HANDLE_BASE: u64 = 0xFFFF_C0DE_0000_0000;
/// Distance between two maps' handles.
const MAP_HANDLE_STRIDE: u64 = 0x1000;

/// A program's bond to the program-information attachment its helpers are resolved against:
/// which attachment of its client, and who implements each helper it calls and where, which a
/// later attachment of the same client re-resolves
/// (`_ebpf_program_type_specific_program_information_attach_provider`, C.2).
pub(crate) struct HelperBinding {
    /// The client's liveness (`None` for program data built by hand: always runs).
    liveness: Option<Arc<Liveness>>,
    /// The attachment the helpers are resolved against.
    generation: AtomicU64,
    /// Per call slot: the helper's id, who implements it now ([`IMPLEMENTER_CORE`],
    /// [`IMPLEMENTER_EXTENSION`] or [`IMPLEMENTER_BTF`]) and, for the extension, the address.
    /// BTF-resolved functions follow their own provider's attachment and are not re-resolved
    /// here.
    slots: Box<[(u32, AtomicU8, AtomicU64)]>,
    /// The helper ids (in order of first call) and BTF-resolved functions the
    /// program-information hash covers ([`BpfProgram::helper_ids`],
    /// [`BpfProgram::btf_functions`]).
    helper_ids: Vec<u32>,
    btf_functions: Vec<BtfFunctionUse>,
    /// The hash of the program data the program was loaded with (`None` if it has none).
    hash: Option<[u8; 32]>,
    /// Whether invocations keep room for `bpf_map_lookup_and_delete_elem`'s values (the
    /// core's helper needs it; an override does not).
    kept_room: bool,
    /// Why the last attachment did not re-resolve the program.
    refusal: Mutex<Option<String>>,
}

/// A slot's helper is the core's general helper.
const IMPLEMENTER_CORE: u8 = 0;
/// A slot's helper is the extension's, at the slot's address.
const IMPLEMENTER_EXTENSION: u8 = 1;
/// A slot's function is BTF-resolved.
const IMPLEMENTER_BTF: u8 = 2;

impl HelperBinding {
    /// Enters a run: `Ok(None)` for program data of no attachment, `Err(())` while the
    /// attachment its helpers are resolved against is not the client's attached one.
    fn enter(&self) -> Result<Option<LiveRun<'_>>, ()> {
        match &self.liveness {
            None => Ok(None),
            Some(liveness) => liveness
                .enter(self.generation.load(Ordering::Acquire))
                .map(Some)
                .ok_or(()),
        }
    }

    /// The attachment the helpers are resolved against.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Who implements the helper in call slot `slot` now: `loaded` (the target it was loaded
    /// with) for a BTF-resolved function, else the core's general helper or the extension's
    /// at its current address (the run holds the attachment, so this does not change during
    /// a call).
    pub(crate) fn target(&self, slot: usize, loaded: &Target) -> Target {
        match (loaded, self.slots.get(slot)) {
            (Target::Btf(index), _) => Target::Btf(*index),
            (_, Some((_, implementer, address)))
                if implementer.load(Ordering::Acquire) == IMPLEMENTER_EXTENSION =>
            {
                Target::Extension(address.load(Ordering::Acquire))
            }
            _ => Target::General,
        }
    }

    /// What the core's attach does for a program already loaded: the hash of the new program
    /// data over the program's helpers must equal the one it was loaded with, and every helper
    /// it calls must resolve again as the core resolves at load (C.7): a type-specific id to
    /// the extension's helper with an address; a smaller id to the extension's override with
    /// an address, else the core's general helper (overrides are not hashed, so one may come
    /// or go). Then the program is bound to `generation`, with the new implementers and
    /// addresses; otherwise it stays unable to run and the refusal is kept. Called while no
    /// run of the program can be in flight (it is bound to an earlier attachment, and the
    /// client's detach waited for its runs).
    ///
    /// Not modelled: the core's JIT refuses a reattach that changes the number of helpers
    /// (its trampoline table); core-sim, an interpreter, re-resolves regardless.
    pub(crate) fn rebind(&self, info: &ProgramInfo, generation: u64) {
        match self.check(info) {
            Ok(targets) => {
                for ((_, implementer, address), (now, at)) in self.slots.iter().zip(targets) {
                    address.store(at, Ordering::Relaxed);
                    implementer.store(now, Ordering::Relaxed);
                }
                *lock(&self.refusal) = None;
                // Publishes the slots to the runs that enter with this attachment.
                self.generation.store(generation, Ordering::Release);
            }
            Err(why) => self.refuse(why),
        }
    }

    /// Records why the program cannot bind to the provider attached now (it stays unable to
    /// run).
    pub(crate) fn refuse(&self, why: String) {
        *lock(&self.refusal) = Some(why);
    }

    /// Why the last attachment did not re-resolve the program, if it did not.
    pub(crate) fn refusal(&self) -> Option<String> {
        lock(&self.refusal).clone()
    }

    /// The checks of [`rebind`](Self::rebind), changing nothing: each call slot's new
    /// implementer and address, or why the program cannot bind to `info`.
    pub(crate) fn check(&self, info: &ProgramInfo) -> Result<Vec<(u8, u64)>, String> {
        (|| {
            let hash = program_info_hash_with_btf(info, &self.helper_ids, &self.btf_functions);
            // A hash that cannot be computed (a helper the new data does not declare) never
            // matches, even one that could not be computed at load either.
            match (hash, self.hash) {
                (Ok(now), Some(loaded)) if now == loaded => {}
                _ => {
                    return Err(format!(
                        "the program-information hash of {} over the program's helpers changed",
                        info.name
                    ));
                }
            }
            self.slots
                .iter()
                .map(|(id, implementer, _)| {
                    if implementer.load(Ordering::Relaxed) == IMPLEMENTER_BTF {
                        return Ok((IMPLEMENTER_BTF, 0));
                    }
                    match info.helper(*id) {
                        Some(helper) => helper
                            .address
                            .map(|address| (IMPLEMENTER_EXTENSION, address))
                            .ok_or_else(|| format!("helper {id:#x} is declared without an address")),
                        None if *id < EBPF_MAX_GENERAL_HELPER_FUNCTION
                            && GENERAL_HELPERS.iter().any(|g| g.id == *id) =>
                        {
                            if *id == LOOKUP_AND_DELETE && !self.kept_room {
                                Err(format!(
                                    "helper {id:#x} would now be the core's, for which the program has no room (not modelled)"
                                ))
                            } else {
                                Ok((IMPLEMENTER_CORE, 0))
                            }
                        }
                        None => Err(format!("helper {id:#x} no longer resolves")),
                    }
                })
                .collect::<Result<Vec<(u8, u64)>, String>>()
        })()
    }
}

/// A BPF program loaded for one program type, ready to run or attach.
pub struct BpfProgram {
    section: String,
    function: String,
    info: Arc<ProgramInfo>,
    code: Vec<Insn>,
    pub(crate) helpers: Vec<Resolved>,
    /// The extension helpers' current addresses and the attachment they are resolved against.
    pub(crate) binding: Arc<HelperBinding>,
    /// The BTF-resolved functions it calls (`Target::Btf` indexes them), if any.
    pub(crate) btf: Option<BtfImports>,
    maps: Vec<Arc<BpfMap>>,
    /// Bytes of each slot an invocation keeps `bpf_map_lookup_and_delete_elem`'s values in
    /// (0 if the program does not call the core's).
    kept_size: usize,
    loaded_at: Instant,
    random: AtomicU64,
    faults: Mutex<Vec<String>>,
    printk: Mutex<Vec<String>>,
    runs: AtomicU64,
    /// The program's own program-information client (`None` for program data built by
    /// hand), as the core registers one per program; deregistered when the program goes.
    info_client: Option<ProgramInfoClient>,
}

impl Drop for BpfProgram {
    /// Deregisters the program's program-information client, as the core does when it frees
    /// a program: from an epoch work item, so never inside an epoch. Here the deregistration
    /// runs at once when the thread is at PASSIVE_LEVEL outside every epoch, which is where
    /// tests drop programs; otherwise (the last reference to a program that a tail call
    /// reached, dropped by the run) it goes to a worker thread of the kernel
    /// ([`queue_system_work`](ebpf_ext_usersim::queue_system_work)), whose deregistration waits
    /// for that epoch to end, as the core's work item runs after it. Dropped on a thread
    /// with no kernel bound, the deregistration bug-checks (`NmrDeregisterClient`,
    /// [`NO_KERNEL_BOUND`](ebpf_ext_usersim::NO_KERNEL_BOUND)), as any client's drop there.
    ///
    /// Unlike the core, which always frees a program from an epoch work item, the free at
    /// PASSIVE_LEVEL outside every epoch is synchronous: a test that drops its last
    /// reference finds the client gone when the drop returns.
    fn drop(&mut self) {
        let Some(client) = self.info_client.take() else {
            return;
        };
        if ebpf_ext_usersim::kernel_id().is_none() {
            drop(client);
        } else if crate::epoch::in_epoch()
            || ebpf_ext_sys::intrin::KeGetCurrentIrql() > ebpf_ext_sys::wdm::PASSIVE_LEVEL
        {
            ebpf_ext_usersim::queue_system_work(move || drop(client));
        } else {
            drop(client);
        }
    }
}

impl core::fmt::Debug for BpfProgram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BpfProgram")
            .field("section", &self.section)
            .field("function", &self.function)
            .field("program_type", &self.info.name)
            .finish_non_exhaustive()
    }
}

/// Creates the maps `object` defines (for a machine of this kernel's processor count).
fn create_maps(object: &BpfObject) -> Result<Vec<Arc<BpfMap>>, BpfError> {
    let cpus = super::maps::processor_count();
    object
        .maps
        .iter()
        .map(|d| BpfMap::new(d, cpus).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BpfError::Map)
}

/// Resolves helper `id` as the core does (C.7): below `0xFFFF` the provider's global
/// overrides first, then the core's general helpers; from `0xFFFF` the program-type helpers
/// only. Below `0xFFFF` the verifier knows only the core's prototypes (its program
/// information merges the type's own helpers with the general ones, never the overrides'
/// declarations), so a call is checked against the core's prototype for its id whoever
/// implements it, and an id the core has no general helper of is unknown even if the
/// provider declares an override of it.
fn resolve(id: u32, info: &ProgramInfo, section: &str, insn: usize) -> Result<Resolved, BpfError> {
    let undeclared = |program_type: String| BpfError::UndeclaredHelper {
        section: section.to_owned(),
        insn,
        id,
        program_type,
    };
    // Below 0xFFFF the core's prototype, whoever implements the id; none: unknown.
    let core = if id < EBPF_MAX_GENERAL_HELPER_FUNCTION {
        Some(general_helper_prototype(id).ok_or_else(|| undeclared(info.name.clone()))?)
    } else {
        None
    };
    if let Some(helper) = info.helper(id) {
        let address = helper
            .address
            .ok_or_else(|| undeclared(format!("{} (declared without an address)", info.name)))?;
        return Ok(Resolved {
            id,
            name: helper.name.clone(),
            arguments: core.map_or(helper.arguments, |core| core.arguments),
            target: Target::Extension(address),
        });
    }
    if core.is_none() {
        return Err(undeclared(info.name.clone()));
    }
    if let Some(general) = GENERAL_HELPERS.iter().find(|g| g.id == id) {
        return Ok(Resolved {
            id,
            name: general.name.to_owned(),
            arguments: general.arguments,
            target: Target::General,
        });
    }
    Err(BpfError::UnsupportedHelper {
        section: section.to_owned(),
        id,
    })
}

/// A program's BTF-resolved functions (module, name; distinct, in order of first call) and
/// the prototypes their modules publish (`None` when it calls none).
type Imported = (Vec<(GUID, String)>, Option<BtfLookup>);

/// The BTF-resolved functions the calls of kernel functions (`src` 2) in `insns` name, and
/// the prototypes their modules publish (read, not bound: the program's checks come first).
fn btf_imports(object: &BpfObject, section: &str, insns: &[Insn]) -> Result<Imported, BpfError> {
    let mut functions: Vec<(GUID, String)> = Vec::new();
    for (at, insn) in insns.iter().enumerate() {
        if insn.code != CALL || insn.src != CALL_KFUNC {
            continue;
        }
        let id = insn.imm.cast_unsigned();
        let refuse = |message: String| BpfError::BtfFunction {
            section: section.to_owned(),
            message: format!("instruction {at}: {message}"),
        };
        let function = object
            .externs
            .get(&id)
            .ok_or_else(|| refuse(format!("calls BTF type {id}, which is no extern function")))?;
        let module = function.module.ok_or_else(|| {
            refuse(format!(
                "{} has no module_id:{{GUID}} declaration tag",
                function.name
            ))
        })?;
        let entry = (module, function.name.clone());
        if !functions.contains(&entry) {
            functions.push(entry);
        }
    }
    if functions.is_empty() {
        return Ok((functions, None));
    }
    let lookup = BtfLookup::read(&functions).map_err(|why| failed_to_load(section, &why))?;
    Ok((functions, Some(lookup)))
}

/// A load refused because a module's provider is missing or declined.
fn failed_to_load(section: &str, why: &str) -> BpfError {
    BpfError::BtfFunction {
        section: section.to_owned(),
        message: format!("{why} (EBPF_EXTENSION_FAILED_TO_LOAD)"),
    }
}

/// The call of BTF type `id` as a call slot: the function (by module and name, as
/// [`btf_imports`] listed them) with the prototype it was loaded against.
fn resolve_btf(
    object: &BpfObject,
    id: u32,
    functions: &[(GUID, String)],
    btf: Option<&BtfLookup>,
    section: &str,
) -> Result<Resolved, BpfError> {
    let found = object.externs.get(&id).and_then(|function| {
        let index = functions.iter().position(|(module, name)| {
            Some(*module) == function.module && *name == function.name
        })?;
        let prototype = btf?.prototype(index)?;
        Some(Resolved {
            id,
            name: function.name.clone(),
            arguments: prototype.arguments,
            target: Target::Btf(index),
        })
    });
    // `btf_imports` listed every kernel-function call and read them all.
    found.ok_or_else(|| BpfError::BtfFunction {
        section: section.to_owned(),
        message: format!("BTF type {id} was not imported"),
    })
}

impl BpfProgram {
    /// Loads the program of `section` in `object` as a program of the type `info`
    /// describes (what a provider published, from
    /// [`ProgramInfoClient::info`](crate::ProgramInfoClient::info)).
    ///
    /// Refused before it can run, as the core's verifier would refuse it: a call of a
    /// helper id the program information does not declare (nor the core's general helpers),
    /// a load or store through the context pointer beyond the context descriptor's size,
    /// a map of a type the core-sim does not have, or code the interpreter's own checks
    /// reject. For data a provider published, the program's own program-information client
    /// must then get a provider of the type whose data binds the program (see
    /// [`BpfError::ProgramInfoUnavailable`]).
    ///
    /// # Errors
    /// The [`BpfError`] saying which of those it was.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL, on a thread bound to a usersim kernel (it counts the processors for
    /// per-CPU maps).
    pub fn load(
        object: &BpfObject,
        section: &str,
        info: &Arc<ProgramInfo>,
    ) -> Result<Arc<Self>, BpfError> {
        Self::load_with_maps(object, section, info, create_maps(object)?)
    }

    /// Loads every program of `object` as programs of the type `info` describes, sharing one
    /// set of the object's maps (as loading an object does in the core), in the order of
    /// [`BpfObject::sections`]: how a program and the programs it tail-calls are loaded.
    /// Every program is loaded as `info`'s type, so the object's programs must all be of it.
    ///
    /// # Errors
    /// As [`BpfProgram::load`], for the first program refused.
    ///
    /// # IRQL
    /// As [`BpfProgram::load`].
    pub fn load_all(
        object: &BpfObject,
        info: &Arc<ProgramInfo>,
    ) -> Result<Vec<Arc<Self>>, BpfError> {
        let maps = create_maps(object)?;
        object
            .sections()
            .into_iter()
            .map(|section| Self::load_with_maps(object, section, info, maps.clone()))
            .collect()
    }

    #[expect(clippy::too_many_lines, reason = "the load steps in the core's order")]
    fn load_with_maps(
        object: &BpfObject,
        section: &str,
        info: &Arc<ProgramInfo>,
        maps: Vec<Arc<BpfMap>>,
    ) -> Result<Arc<Self>, BpfError> {
        let code = object.program(section)?;
        let mut insns = code.insns.clone();
        for map in &maps {
            map.associate((info.program_type, info.context_descriptor))
                .map_err(|other| {
                    BpfError::Map(format!(
                        "{section}: program array {} holds programs of type {other:?} (or of another context layout), not {}",
                        map.definition().name,
                        info.name
                    ))
                })?;
        }
        for map in &maps {
            if let Some(custom) = map.custom() {
                custom.associate(&info.program_type).map_err(|r| {
                    BpfError::Map(format!(
                        "{section}: the provider of map {} refuses program type {} (preprocess_associate_program_type returned {r})",
                        map.definition().name,
                        info.name
                    ))
                })?;
            }
        }
        for reference in &code.maps {
            let map = &maps[reference.map];
            let value = match reference.value_offset {
                None => MAP_HANDLE_BASE + reference.map as u64 * MAP_HANDLE_STRIDE,
                Some(offset) => {
                    if u64::from(offset) >= u64::from(map.definition().value_size) {
                        return Err(BpfError::Map(format!(
                            "{section}: offset {offset} beyond {}",
                            map.definition().name
                        )));
                    }
                    let first = match map.value_region() {
                        Region::Strided { start, count, .. } if count > 0 => Some(start),
                        _ => None,
                    };
                    first.ok_or_else(|| {
                        BpfError::Map(format!(
                            "{section}: {} has no value to refer to",
                            map.definition().name
                        ))
                    })? + u64::from(offset)
                }
            };
            #[expect(clippy::cast_possible_truncation, reason = "the two halves of lddw")]
            let [low, high] = [value as u32, (value >> 32) as u32];
            insns[reference.insn].src = 0;
            insns[reference.insn].imm = low.cast_signed();
            insns[reference.insn + 1].imm = high.cast_signed();
        }
        let (btf_functions, btf) = btf_imports(object, section, &insns)?;
        let mut helpers: Vec<Resolved> = Vec::new();
        let mut index = 0;
        while index < insns.len() {
            let insn = insns[index];
            if insn.code == LD_DW_IMM {
                if insn.src != 0 {
                    return Err(BpfError::Parse(format!(
                        "{section}: instruction {index}: unresolved 64-bit load (kind {})",
                        insn.src
                    )));
                }
                index += 2;
                continue;
            }
            if insn.code == CALL && (insn.src == 0 || insn.src == CALL_KFUNC) {
                let id = insn.imm.cast_unsigned();
                let resolved = if insn.src == CALL_KFUNC {
                    resolve_btf(object, id, &btf_functions, btf.as_ref(), section)?
                } else {
                    resolve(id, info, section, index)?
                };
                let same = |h: &&Resolved| h.target == resolved.target && h.id == resolved.id;
                let slot = if let Some(slot) = helpers.iter().position(|h| same(&h)) {
                    slot
                } else {
                    if helpers.len() == MAX_SLOTS {
                        return Err(BpfError::Parse(format!(
                            "{section}: more than {MAX_SLOTS} distinct helpers"
                        )));
                    }
                    helpers.push(resolved);
                    helpers.len() - 1
                };
                insns[index].imm = i32::try_from(slot).unwrap_or(i32::MAX);
                insns[index].src = 0;
            }
            index += 1;
        }
        if let Some(bad) = context_accesses(&insns, i64::from(info.context_descriptor.size)) {
            return Err(BpfError::ContextAccess {
                section: section.to_owned(),
                insn: bad.insn,
                offset: bad.offset,
                size: bad.size,
                context_size: info.context_descriptor.size,
            });
        }
        vm::verify(&insns).map_err(|message| BpfError::Verifier {
            section: section.to_owned(),
            message,
        })?;
        let kept_size = kept_size(section, &helpers, &maps)?;
        // Bound once every check passed, against the prototypes the calls were checked with.
        let btf: Option<BtfImports> = btf
            .map(BtfLookup::bind)
            .transpose()
            .map_err(|why| failed_to_load(section, &why))?;
        let (binding, info_client) = Self::bind(section, info, &helpers, btf.as_ref(), kept_size)?;
        Ok(Arc::new(BpfProgram {
            section: section.to_owned(),
            function: code.name.clone(),
            info: Arc::clone(info),
            code: insns,
            helpers,
            binding,
            btf,
            maps,
            kept_size,
            loaded_at: Instant::now(),
            random: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            faults: Mutex::default(),
            printk: Mutex::default(),
            runs: AtomicU64::new(0),
            info_client,
        }))
    }

    /// The program's [`HelperBinding`] and, for program data a provider published (`info`
    /// came from a [`ProgramInfoClient`]), the program's own program-information client.
    ///
    /// As the core's `ebpf_program_create`, each program registers a client of its own (with
    /// a module id of its own), which the provider of the program type must attach during the
    /// registration; the program's helpers are then resolved against the program data that
    /// client copied, which must bind them as the core's attach requires of a program already
    /// loaded: the same hash over the program's helpers as `info`'s (what the program was
    /// checked against), and every helper resolving. Each later attachment of that client
    /// re-resolves them ([`HelperBinding::rebind`]).
    fn bind(
        section: &str,
        info: &ProgramInfo,
        helpers: &[Resolved],
        btf: Option<&BtfImports>,
        kept_size: usize,
    ) -> Result<(Arc<HelperBinding>, Option<ProgramInfoClient>), BpfError> {
        let helper_ids: Vec<u32> = helpers
            .iter()
            .filter(|h| !matches!(h.target, Target::Btf(_)))
            .map(|h| h.id)
            .collect();
        let btf_functions = btf.map_or_else(Vec::new, BtfImports::uses);
        let client = match info.binding.attachment() {
            None => None,
            Some(_) => Some(
                ProgramInfoClient::attach_for_program(info.program_type).map_err(|error| {
                    BpfError::ProgramInfoUnavailable {
                        section: section.to_owned(),
                        message: error.to_string(),
                    }
                })?,
            ),
        };
        let binding = Arc::new(HelperBinding {
            liveness: client.as_ref().map(ProgramInfoClient::liveness),
            // No attachment yet: registering with the client's liveness binds the program to
            // the client's current one.
            generation: AtomicU64::new(0),
            slots: helpers
                .iter()
                .map(|h| {
                    let (implementer, address) = match h.target {
                        Target::Extension(address) => (IMPLEMENTER_EXTENSION, address),
                        Target::General => (IMPLEMENTER_CORE, 0),
                        Target::Btf(_) => (IMPLEMENTER_BTF, 0),
                    };
                    (h.id, AtomicU8::new(implementer), AtomicU64::new(address))
                })
                .collect(),
            hash: program_info_hash_with_btf(info, &helper_ids, &btf_functions).ok(),
            helper_ids,
            btf_functions,
            kept_room: kept_size > 0,
            refusal: Mutex::new(None),
        });
        if let Some(client) = &client {
            client.liveness().register(&binding).map_err(|message| {
                BpfError::ProgramInfoUnavailable {
                    section: section.to_owned(),
                    message,
                }
            })?;
            client.program_loaded();
        }
        Ok((binding, client))
    }

    /// The program's own program-information client, which the core registers for each
    /// program (`None` for a program loaded with [`ProgramInfo::unbound`] data): its module
    /// id is what the provider sees, and [`ProgramInfoClient::last_refusal`] says why it
    /// refused a provider.
    #[must_use]
    pub fn info_client(&self) -> Option<&ProgramInfoClient> {
        self.info_client.as_ref()
    }

    /// Why the program's client refused the last provider of its program information to
    /// register, before that provider saw it, because the provider's data does not bind the
    /// program (the hash of the new program data over the program's helpers differs, or a
    /// helper it calls no longer resolves), so that it does not run; `None` if the program
    /// re-resolved against it, or if no provider has registered since the program was loaded.
    #[must_use]
    pub fn program_info_refusal(&self) -> Option<String> {
        self.binding.refusal()
    }

    /// The section it was loaded from.
    #[must_use]
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Its program type.
    #[must_use]
    pub fn program_type(&self) -> GUID {
        self.info.program_type
    }

    /// Its program type and context layout (what a program array requires).
    pub(crate) fn kind(&self) -> ProgramKind {
        (self.info.program_type, self.info.context_descriptor)
    }

    /// The ids of the helpers it calls, in the order of first call.
    #[must_use]
    pub fn helper_ids(&self) -> Vec<u32> {
        self.binding.helper_ids.clone()
    }

    /// The BTF-resolved functions it calls, with the prototypes it was loaded against (what
    /// its program-information hash covers besides [`BpfProgram::helper_ids`]).
    #[must_use]
    pub fn btf_functions(&self) -> Vec<BtfFunctionUse> {
        self.binding.btf_functions.clone()
    }

    /// Its map called `name` (the map variable's name; `.rodata`, `.data`, `.bss` for global
    /// variables).
    #[must_use]
    pub fn map(&self, name: &str) -> Option<Arc<BpfMap>> {
        self.maps
            .iter()
            .find(|m| m.definition().name == name)
            .cloned()
    }

    pub(crate) fn map_by_handle(&self, handle: u64) -> Option<&BpfMap> {
        let offset = handle.checked_sub(MAP_HANDLE_BASE)?;
        if offset % MAP_HANDLE_STRIDE != 0 {
            return None;
        }
        self.maps
            .get(usize::try_from(offset / MAP_HANDLE_STRIDE).ok()?)
            .map(AsRef::as_ref)
    }

    pub(crate) fn map_by_object(&self, object: u64) -> Option<&BpfMap> {
        self.maps
            .iter()
            .find(|m| m.object_address() == object)
            .map(AsRef::as_ref)
    }

    /// Its maps' values, each map's as one region.
    pub(crate) fn value_regions(&self) -> impl Iterator<Item = Region<'_>> + '_ {
        self.maps.iter().map(|m| m.value_region())
    }

    pub(crate) fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    pub(crate) fn next_random(&self) -> u32 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        (x >> 32) as u32
    }

    pub(crate) fn record_printk(&self, line: String) {
        lock(&self.printk).push(line);
    }

    /// The lines its `bpf_printk` calls wrote, oldest first.
    #[must_use]
    pub fn printk_lines(&self) -> Vec<String> {
        lock(&self.printk).clone()
    }

    /// The invocations that failed (out-of-bounds access, a helper argument its prototype
    /// forbids, an interpreter error), one message each, oldest first.
    #[must_use]
    pub fn faults(&self) -> Vec<String> {
        lock(&self.faults).clone()
    }

    /// How many times it ran.
    #[must_use]
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Runs the program once on `context` and returns `r0`.
    ///
    /// The program may load and store only within the context (the descriptor's size), the
    /// `[data, end)` range the descriptor's pointers name, its stack and map values; helper
    /// pointer arguments are checked against the helper's prototype the same way.
    ///
    /// The run has no execution state, so `bpf_tail_call` returns `-EBPF_INVALID_ARGUMENT`
    /// (as the core's does without one); a run through a link or a test run follows tail
    /// calls.
    ///
    /// # Errors
    /// [`BpfError::Fault`] with the interpreter's or the helper check's message; the
    /// program's effects up to that point remain.
    ///
    /// # Safety
    /// `context` points to a context of this program type: at least the descriptor's size
    /// of readable and writable bytes, whose data pointers (if the descriptor names them)
    /// are NULL or bound a readable and writable range.
    pub unsafe fn run(&self, context: *mut c_void) -> Result<u64, BpfError> {
        // SAFETY: the caller's precondition; no state, no header.
        unsafe { self.run_with_state(context, core::ptr::null_mut(), core::ptr::null()) }
    }

    /// Runs the program on `context` as the core's invoke does with the execution state
    /// `state` and the context descriptor `descriptor` in slots 0 and 1 of its header (NULL:
    /// none): then each program a successful `bpf_tail_call` names, on the same context, up
    /// to [`MAX_TAIL_CALL_CNT`] of them, the state's `tail_call_state` saying how many have
    /// run; returns the last program's `r0`.
    ///
    /// # Errors
    /// As [`BpfProgram::run`], from whichever program faulted (its [`BpfProgram::faults`]
    /// has the message).
    ///
    /// # Safety
    /// As [`BpfProgram::run`]; a non-NULL `state` is an `ebpf_execution_context_state_t`
    /// kept for the run, and slot 0 of the 64-byte header in front of `context` holds it; a
    /// non-NULL `descriptor` is this program type's context descriptor, alive for the run,
    /// and slot 1 of that header holds it.
    pub(crate) unsafe fn run_with_state(
        &self,
        context: *mut c_void,
        state: *mut ebpf_execution_context_state_t,
        descriptor: *const ebpf_context_descriptor_t,
    ) -> Result<u64, BpfError> {
        // One epoch for the whole invocation, tail calls included, as the core's: helpers may
        // use epoch memory.
        // SAFETY: the caller's precondition.
        crate::epoch::protected(|| unsafe { self.run_chain(context, state, descriptor) })
    }

    /// [`BpfProgram::run_with_state`] inside its epoch.
    ///
    /// # Safety
    /// As [`BpfProgram::run_with_state`].
    unsafe fn run_chain(
        &self,
        context: *mut c_void,
        state: *mut ebpf_execution_context_state_t,
        descriptor: *const ebpf_context_descriptor_t,
    ) -> Result<u64, BpfError> {
        let mut callee: Option<Arc<BpfProgram>> = None;
        for count in 0..=MAX_TAIL_CALL_CNT {
            if !state.is_null() {
                let calls = ebpf_execution_context_state_tail_call_t {
                    next_program: core::ptr::null(),
                    count,
                };
                // SAFETY: the caller's precondition: the run's state.
                let slot = unsafe { &raw mut (*state).tail_call_state };
                // SAFETY: as above.
                unsafe { slot.write_unaligned(calls) };
            }
            let program = callee.as_deref().unwrap_or(self);
            // SAFETY: the caller's precondition; a callee has this program's type and context
            // layout (a program array takes only programs of the ones it was loaded with).
            let (r0, next) = unsafe { program.run_one(context, state, descriptor) }?;
            match next {
                None => return Ok(r0),
                Some(next) => callee = Some(next),
            }
        }
        // The helper refuses a tail call once `MAX_TAIL_CALL_CNT` have run, unless the state's
        // count was changed behind it.
        let last = callee.as_deref().unwrap_or(self);
        let message = format!("more than {MAX_TAIL_CALL_CNT} tail calls");
        lock(&last.faults).push(message.clone());
        Err(BpfError::Fault {
            section: last.section.clone(),
            message,
        })
    }

    /// One program's run: its `r0` and the program its successful `bpf_tail_call` named.
    ///
    /// # Safety
    /// As [`BpfProgram::run_with_state`].
    unsafe fn run_one(
        &self,
        context: *mut c_void,
        state: *mut ebpf_execution_context_state_t,
        header_descriptor: *const ebpf_context_descriptor_t,
    ) -> Result<(u64, Option<Arc<BpfProgram>>), BpfError> {
        // Held for the run: its program-information provider does not detach meanwhile, and
        // once it has, the program does not run.
        let _live = self
            .binding
            .enter()
            .map_err(|()| BpfError::ProgramInfoDetached {
                section: self.section.clone(),
            })?;
        // Held for the run: no provider of its BTF-resolved functions detaches meanwhile.
        let _entered = match &self.btf {
            Some(btf) => Some(
                btf.enter()
                    .map_err(|module| BpfError::BtfFunctionsDetached {
                        section: self.section.clone(),
                        module,
                    })?,
            ),
            None => None,
        };
        self.runs.fetch_add(1, Ordering::SeqCst);
        let descriptor = self.info.context_descriptor;
        let size = usize::try_from(descriptor.size).unwrap_or(0);
        let pointer_at = |offset: i32| -> u64 {
            match usize::try_from(offset) {
                Ok(o) if o + 8 <= size => {
                    let field = context.cast::<u8>().wrapping_add(o).cast::<[u8; 8]>();
                    // SAFETY: within the context (checked).
                    u64::from_ne_bytes(unsafe { field.read() })
                }
                _ => 0,
            }
        };
        let (start, end) = (pointer_at(descriptor.data), pointer_at(descriptor.end));
        let length = end.saturating_sub(start);
        // The caller's precondition: the data pointers bound memory the program may use.
        let data = if start != 0 && length > 0 && length < 1 << 32 {
            start..end
        } else {
            0..0
        };
        let context_range = context as u64..context as u64 + size as u64;
        let stack = Stack::new();
        let frame = Frame {
            program: self,
            context: context as u64,
            context_size: size as u64,
            data: data.clone(),
            stack: stack.range(),
            fault: None,
            kept: Kept::new(self.kept_size),
            state: state as u64,
            tail_call: None,
            descriptor: header_descriptor as u64,
        };
        let mut regions = vec![Region::flat(context_range), Region::flat(data)];
        regions.extend(self.value_regions());
        regions.extend(frame.kept.ranges().map(Region::flat));
        let machine = Machine {
            code: &self.code,
            stack: &stack,
            regions: &regions,
            max_steps: vm::MAX_STEPS,
        };
        let (result, left) = with_frame(frame, || {
            // SAFETY: verified at load; the context and data are the caller's (its
            // precondition), map values and kept values live as long as the program and the
            // frame, which outlive the run.
            unsafe { vm::run(&machine, context as u64, &mut |slot, args| call(slot, args)) }
        });
        let fault = |message: String| BpfError::Fault {
            section: self.section.clone(),
            message,
        };
        let outcome = match (result, left.fault) {
            (_, Some(message)) | (Err(message), None) => Err(fault(message)),
            (Ok(r0), None) => Ok((r0, left.tail_call)),
        };
        if let Err(BpfError::Fault { message, .. }) = &outcome {
            lock(&self.faults).push(message.clone());
        }
        outcome
    }

    /// What a hook's invoke gets: the low 32 bits of `r0`, or `EBPF_FAILED` when the run
    /// faulted (the core would report the interpreter's error code as the result; failing
    /// the invocation makes the fault visible to the hook and the test).
    fn invoke(&self, context: *mut c_void) -> Result<u32, ebpf_result_t> {
        let header = context
            .wrapping_byte_sub(EBPF_CONTEXT_HEADER_SIZE)
            .cast::<u64>();
        // SAFETY: the link wrote the invocation's execution state into slot 0 of the header
        // in front of the context just before calling this (as the core's invoke does).
        let state = unsafe { header.read_unaligned() } as *mut ebpf_execution_context_state_t;
        // As the core's invoke: slot 1 is the program's context descriptor.
        let descriptor = &raw const self.info.context_descriptor;
        // SAFETY: the header's 64 bytes are the core's to write (the link just wrote them).
        unsafe { header.wrapping_add(1).write_unaligned(descriptor as u64) };
        // SAFETY: a hook invokes a program with a context of the program type it attached
        // for (checked at attach: the link's program type is this program's), and the state
        // in slot 0 is the link's or the provider's for the invocation; the descriptor is
        // this program's, which it holds.
        match unsafe { self.run_with_state(context, state, descriptor) } {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the core keeps the low 32 bits"
            )]
            Ok(r0) => Ok(r0 as u32),
            // As the core's invoke when a native module's BTF providers are not ready.
            Err(BpfError::BtfFunctionsDetached { .. } | BpfError::ProgramInfoDetached { .. }) => {
                Err(EBPF_EXTENSION_FAILED_TO_LOAD)
            }
            Err(_) => Err(EBPF_FAILED),
        }
    }

    /// Attaches the program to the hook `spec` names, as `bpf_link_create` does.
    ///
    /// # Errors
    /// [`BpfError::WrongProgramType`] if `spec`'s program type is not this program's (before
    /// anything registers); [`BpfError::Attach`] if the link fails, for example because the
    /// hook provider of that attach type takes another program type.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn attach(self: &Arc<Self>, spec: LinkSpec) -> Result<Link, BpfError> {
        if spec.program_type() != self.info.program_type {
            return Err(BpfError::WrongProgramType {
                section: self.section.clone(),
                program_type: self.info.program_type,
                link_program_type: spec.program_type(),
            });
        }
        let program = Arc::clone(self);
        Link::attach_program(spec, Box::new(move |context| program.invoke(context)))
            .map_err(BpfError::Attach)
    }
}

/// What a test run ([`BpfProgram::test_run`]) returned, as `bpf_prog_test_run_opts` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The last invocation's result (low 32 bits of `r0`).
    pub return_value: u32,
    /// `data_out` as the provider's `context_destroy` wrote it.
    pub data_out: Vec<u8>,
    /// `ctx_out` as the provider's `context_destroy` wrote it.
    pub context_out: Vec<u8>,
}

impl BpfProgram {
    /// Runs the program `repeat` times (0 means 1) as the core's `bpf_prog_test_run` does,
    /// through the provider attached to the program's own client ([`BpfProgram::info_client`];
    /// `client`'s for a program loaded with [`ProgramInfo::unbound`] data):
    /// at the provider's `required_irql`, the provider's `context_create` over a copy of
    /// `data_in` (which the program may change in place) and `context_in` (each passed as
    /// NULL when empty), the runs, stopping at the first that fails, then
    /// `context_destroy` with `data_out` and `ctx_out` capacities of the inputs' sizes
    /// ([`BpfProgram::test_run_with_room`] lets the caller give `data_out` more). The copy of
    /// `data_in` is followed by 16 KiB (of 0xA5) that no program may access, so a read past
    /// the data faults rather than landing, by the heap's chance, in a map value.
    ///
    /// # Errors
    /// [`BpfError::TestRun`] if the program was loaded for another program type or context
    /// layout than the client's, if `context_create` fails (with its `ebpf_result_t`) or the
    /// provider has gone; [`BpfError::Fault`] if a run faults (the context is destroyed
    /// first).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn test_run(
        &self,
        client: &ProgramInfoClient,
        data_in: &[u8],
        context_in: &[u8],
        repeat: u32,
    ) -> Result<TestRun, BpfError> {
        self.test_run_with_room(client, data_in, context_in, repeat, data_in.len())
    }

    /// [`BpfProgram::test_run`] with a `data_out` capacity of `data_out_room` bytes: the
    /// core gives `context_destroy` the rest of the caller's reply buffer for `data_out`
    /// (and `ctx_out` the size of `ctx_in`), so a provider may return more data than came in.
    ///
    /// # Errors
    /// As [`BpfProgram::test_run`], and [`BpfError::TestRun`] if `data_out_room` bytes cannot
    /// be allocated (before the provider is called).
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn test_run_with_room(
        &self,
        client: &ProgramInfoClient,
        data_in: &[u8],
        context_in: &[u8],
        repeat: u32,
        data_out_room: usize,
    ) -> Result<TestRun, BpfError> {
        // As the core's test run, which calls the provider bound to the program's own client.
        let client = self.info_client.as_ref().unwrap_or(client);
        if client.program_type() != self.info.program_type {
            return Err(BpfError::TestRun(format!(
                "the program is of type {:?}, the client of {:?}",
                self.info.program_type,
                client.program_type()
            )));
        }
        if client.info().context_descriptor != self.info.context_descriptor {
            return Err(BpfError::TestRun(
                "the program was loaded for another context layout than the client's".into(),
            ));
        }
        // The run's copy of the data, followed by a guard: a program's access past the data
        // (which the core's verifier would refuse) faults, as an access outside every region
        // does, and a provider that copies past the data shows it in the pattern.
        let guard = if data_in.is_empty() {
            0
        } else {
            TEST_RUN_DATA_GUARD
        };
        let mut data = Vec::with_capacity(data_in.len() + guard);
        data.extend_from_slice(data_in);
        // A pattern rather than zeros, so a provider that copies past the data shows it.
        data.resize(data_in.len() + guard, GUARD_PATTERN);
        let (data_ptr, data_size) = if data_in.is_empty() {
            (core::ptr::null(), 0)
        } else {
            (data.as_mut_ptr().cast_const(), data_in.len())
        };
        let (context_ptr, context_size) = if context_in.is_empty() {
            (core::ptr::null(), 0)
        } else {
            (context_in.as_ptr(), context_in.len())
        };
        // The output buffers exist before the run, as the caller's reply buffer does: room
        // that cannot be allocated fails the run before the provider creates a context.
        let mut out = OutputBuffers::zeroed(data_out_room, context_in.len())
            .map_err(|e| BpfError::TestRun(e.to_string()))?;
        client.at_required_irql(|| {
            let context = client
                .create_context_raw(data_ptr, data_size, context_ptr, context_size, &mut out)
                .map_err(|r| BpfError::TestRun(format!("context_create returned {r}")))?;
            let mut outcome = Ok(0);
            // SAFETY: plain data; all-zero is its initial value.
            let mut state: ebpf_execution_context_state_t = unsafe { core::mem::zeroed() };
            let header = context
                .as_ptr()
                .wrapping_byte_sub(EBPF_CONTEXT_HEADER_SIZE)
                .cast::<u64>();
            for _ in 0..repeat.max(1) {
                // As the core's invoke: slot 0 of the header is the run's execution state.
                // SAFETY: the provider's contract: 64 writable bytes precede the context.
                unsafe { header.write_unaligned(&raw mut state as u64) };
                // SAFETY: a context the provider of this program type created, over `data`
                // (alive and writable until destroy) and with its 64-byte header, whose slot
                // 0 holds `state`, alive for the run.
                outcome = unsafe {
                    self.run_with_state(context.as_ptr(), &raw mut state, context.descriptor())
                };
                if outcome.is_err() {
                    break;
                }
            }
            let output = context
                .destroy_into(out)
                .map_err(|e| BpfError::TestRun(e.to_string()))?;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the core keeps the low 32 bits"
            )]
            let return_value = outcome? as u32;
            Ok(TestRun {
                return_value,
                data_out: output.data,
                context_out: output.context,
            })
        })
    }
}
