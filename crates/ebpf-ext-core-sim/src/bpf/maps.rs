//! Maps: array, hash, program array, per-CPU array, LRU hash, queue, stack, ring buffer,
//! perf event array and providers'
//! custom maps ([`super::custom`]), with eBPF for Windows' type
//! numbers (`ebpf_map_type_t`) and helper semantics, readable and writable from test code.
//!
//! Values live in storage allocated once when the program is loaded, so a pointer a program
//! got from `bpf_map_lookup_elem` stays valid memory for the program's life (a deleted hash
//! entry's slot is reused, as the core reuses its memory after an epoch). Each value slot is
//! followed by eight bytes no program may address, so an access that starts past a value
//! fails.

use core::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use ebpf_ext_sys::ebpf_extension::EBPF_MAP_OPERATION_HELPER;
use ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t;
use ebpf_ext_sys::ntddk::{ALL_PROCESSOR_GROUPS, KeQueryActiveProcessorCountEx};
use ebpf_ext_sys::ntdef::GUID;

use ebpf_ext_sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_INVALID_FD, EBPF_KEY_ALREADY_EXISTS, EBPF_KEY_NOT_FOUND,
    EBPF_NO_MEMORY, EBPF_OBJECT_NOT_FOUND, EBPF_OPERATION_NOT_SUPPORTED, EBPF_OUT_OF_SPACE,
    ebpf_result_t,
};

use super::BpfError;
use super::custom::{CustomMap, MAP_CONTEXT_OFFSET};
use super::object::MapDefinition;
use super::program::BpfProgram;
use super::vm::Region;
use crate::nmr::lock;

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY`: programs `bpf_tail_call` may continue in, by 4-byte index.
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 5;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 8;
/// `BPF_MAP_TYPE_QUEUE`: values without keys, first in first out.
pub const BPF_MAP_TYPE_QUEUE: u32 = 10;
/// `BPF_MAP_TYPE_STACK`: values without keys, last in first out.
pub const BPF_MAP_TYPE_STACK: u32 = 12;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const BPF_MAP_TYPE_RINGBUF: u32 = 13;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: a ring of records per processor.
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 14;
/// `BPF_NOEXIST`: update only if absent.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only if present.
pub const BPF_EXIST: u64 = 2;

/// Bytes after each value slot that no program may address.
const GUARD: usize = 8;
/// Size of a ring-buffer record header.
const RECORD_HEADER: usize = 8;

/// A map operation from test code failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The operation does not apply to this map type.
    #[error("the operation does not apply to a map of type {0}")]
    WrongMapType(u32),
    /// A key or value of the wrong size.
    #[error("expected {expected} bytes, got {got}")]
    WrongSize {
        /// What the map holds.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// What the program-side helper would return (an `ebpf_result_t`).
    #[error("ebpf_result {0}")]
    Result(ebpf_result_t),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Array,
    PerCpuArray,
    Hash,
    LruHash,
    Queue,
    Stack,
    RingBuffer,
    /// A ring buffer per processor.
    PerfEventArray,
    /// Programs by index, for `bpf_tail_call`.
    ProgramArray,
    /// A provider's type (the map-information NPI).
    Custom,
}

#[derive(Default)]
struct HashState {
    slots: HashMap<Vec<u8>, usize>,
    free: Vec<usize>,
    last_use: Vec<u64>,
    clock: u64,
}

/// A queue's or stack's slots (twice `max_entries`): those holding values, oldest first, and
/// the free ones, reused oldest-freed first, so a value a program looked up keeps its slot
/// while another `max_entries` values are pushed.
#[derive(Default)]
struct Circular {
    held: VecDeque<usize>,
    free: VecDeque<usize>,
}

#[derive(Default)]
struct RingState {
    records: VecDeque<Vec<u8>>,
    used: usize,
    /// Records refused (a perf event array's count).
    lost: u64,
}

impl RingState {
    /// Appends a record of `parts`, one after the other, to a ring of `capacity` bytes: a
    /// reserve as the core's ring buffer makes it (an 8-byte header, the size rounded up to
    /// 8). `Err(-6)` for an empty or oversized record, `Err(-12)` when it does not fit.
    fn output(&mut self, capacity: usize, parts: &[&[u8]]) -> Result<(), i64> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = (len + RECORD_HEADER).next_multiple_of(8);
        if len == 0 || total > capacity {
            return Err(-i64::from(EBPF_INVALID_ARGUMENT));
        }
        if self.used + total > capacity {
            return Err(-i64::from(EBPF_NO_MEMORY));
        }
        self.used += total;
        self.records.push_back(parts.concat());
        Ok(())
    }
}

/// A program array's programs, held weakly (a program's maps may hold the program itself),
/// and the program type (with the context layout) of the programs loaded with it.
type ProgramSlots = (Vec<Option<Weak<BpfProgram>>>, Option<ProgramKind>);

/// What a program array requires of its programs: a program type, and the context layout
/// its programs were loaded with (a callee runs on its caller's context).
pub(crate) type ProgramKind = (GUID, ebpf_context_descriptor_t);

/// One map of a loaded program.
///
/// # Invariants
/// `storage` is never resized after construction, so addresses into it stay valid while
/// the map lives; value bytes are only accessed through raw pointers (programs write them
/// directly, as in the kernel).
pub struct BpfMap {
    definition: MapDefinition,
    kind: Kind,
    cpus: usize,
    stride: usize,
    storage: Box<[UnsafeCell<u8>]>,
    hash: Mutex<HashState>,
    ring: Mutex<RingState>,
    /// A perf event array's rings, one per processor.
    perf: Box<[Mutex<RingState>]>,
    /// A queue's or stack's values: their slots.
    values: Mutex<Circular>,
    custom: Option<CustomMap>,
    /// A program array's programs and type.
    programs: Mutex<ProgramSlots>,
    /// The map object extension helpers receive: the provider's map context at
    /// `MAP_CONTEXT_OFFSET` (NULL for built-in maps).
    object: Box<[u64; 8]>,
}

// SAFETY: the value storage is shared memory accessed through raw pointers only (BPF
// programs on any thread write it, as in the kernel); the bookkeeping is behind mutexes.
unsafe impl Sync for BpfMap {}
// SAFETY: as above; nothing in the map is tied to a thread.
unsafe impl Send for BpfMap {}

impl core::fmt::Debug for BpfMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BpfMap")
            .field("definition", &self.definition)
            .finish_non_exhaustive()
    }
}

/// The kernel's page size: a ring buffer's or perf event array's rings are whole pages.
const PAGE_SIZE: usize = 4096;

/// Refuses sizes a map of `kind` cannot have (as the core refuses them at creation).
///
/// `max_entries` is at most 2^20, core-sim's own limit on what a test allocates, except for
/// the bytes of a ring (2^26, rings of 64 MiB). A ring buffer's or perf event array's rings
/// hold a power of two of bytes (the core's `EBPF_INVALID_ARGUMENT`) and whole pages (the
/// kernel's ring memory refuses anything else, so the map's creation fails); a ring buffer
/// has no key.
fn check_sizes(definition: &MapDefinition, kind: Kind) -> Result<(), String> {
    let entries = definition.max_entries as usize;
    let rings = matches!(kind, Kind::RingBuffer | Kind::PerfEventArray);
    let most = if rings { 1 << 26 } else { 1 << 20 };
    if entries == 0 || entries > most {
        return Err(format!(
            "map {}: max_entries {entries} out of range",
            definition.name
        ));
    }
    if rings && !(entries.is_power_of_two() && entries.is_multiple_of(PAGE_SIZE)) {
        return Err(format!(
            "map {}: a ring holds a power of two of bytes in whole {PAGE_SIZE}-byte pages, not {entries}",
            definition.name
        ));
    }
    if kind == Kind::RingBuffer && definition.key_size != 0 {
        return Err(format!(
            "map {}: a ring buffer has no key, not {} bytes",
            definition.name, definition.key_size
        ));
    }
    if !rings && definition.value_size == 0 {
        return Err(format!("map {}: value size 0", definition.name));
    }
    if matches!(kind, Kind::Queue | Kind::Stack) && definition.key_size != 0 {
        return Err(format!(
            "map {}: a queue or stack has no key, not {} bytes",
            definition.name, definition.key_size
        ));
    }
    if kind == Kind::ProgramArray && definition.value_size != 4 {
        return Err(format!(
            "map {}: a program array's value is a 4-byte program id, not {} bytes",
            definition.name, definition.value_size
        ));
    }
    if matches!(kind, Kind::Array | Kind::PerCpuArray | Kind::ProgramArray)
        && definition.key_size != 4
    {
        return Err(format!(
            "map {}: an array's key is a 4-byte index, not {} bytes",
            definition.name, definition.key_size
        ));
    }
    Ok(())
}

/// The kernel's processor count, at least 1: the copies a per-CPU map keeps.
pub(crate) fn processor_count() -> usize {
    // SAFETY: a plain query, callable at any IRQL.
    unsafe { KeQueryActiveProcessorCountEx(ALL_PROCESSOR_GROUPS) }.max(1) as usize
}

impl BpfMap {
    /// Creates a map of `definition` outside any program, as user mode's `bpf_map_create`
    /// does (for this kernel's processor count); a custom map type's through the provider of
    /// that type, as the core does.
    ///
    /// # Errors
    /// [`BpfError::Map`] with the reason: a type core-sim does not have, sizes the type does
    /// not allow, no provider of a custom type, or one that refused the map.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn create(definition: &MapDefinition) -> Result<BpfMap, BpfError> {
        BpfMap::new(definition, processor_count()).map_err(BpfError::Map)
    }

    /// Creates a map of `definition` for a machine of `cpus` processors.
    pub(crate) fn new(definition: &MapDefinition, cpus: usize) -> Result<Self, String> {
        let kind = match definition.map_type {
            BPF_MAP_TYPE_ARRAY => Kind::Array,
            BPF_MAP_TYPE_PERCPU_ARRAY => Kind::PerCpuArray,
            BPF_MAP_TYPE_HASH => Kind::Hash,
            BPF_MAP_TYPE_LRU_HASH => Kind::LruHash,
            BPF_MAP_TYPE_QUEUE => Kind::Queue,
            BPF_MAP_TYPE_STACK => Kind::Stack,
            BPF_MAP_TYPE_RINGBUF => Kind::RingBuffer,
            BPF_MAP_TYPE_PROG_ARRAY => Kind::ProgramArray,
            BPF_MAP_TYPE_PERF_EVENT_ARRAY => Kind::PerfEventArray,
            // Built-in types core-sim does not implement. Every other number is a custom type
            // a provider may register, as with the core: the sample's 15 and XDP's XSKMAP 16
            // among them.
            0 | 4 | 6 | 7 | 9 | 11 => {
                return Err(format!(
                    "map {}: type {} is not supported by core-sim (array 2, hash 1, program array 3, per-CPU array 5, LRU hash 8, queue 10, stack 12, ring buffer 13, perf event array 14 and providers' custom types, such as 15 and 16, are)",
                    definition.name, definition.map_type
                ));
            }
            _ => Kind::Custom,
        };
        let custom = if kind == Kind::Custom {
            Some(
                CustomMap::create(
                    definition.map_type,
                    definition.key_size,
                    definition.value_size,
                    definition.max_entries,
                )
                .map_err(|e| format!("map {}: {e}", definition.name))?,
            )
        } else {
            None
        };
        let mut object = Box::new([0u64; 8]);
        object[MAP_CONTEXT_OFFSET / 8] = custom.as_ref().map_or(0, |c| c.context() as u64);
        check_sizes(definition, kind)?;
        let entries = definition.max_entries as usize;
        let stride = (definition.value_size as usize).next_multiple_of(8) + GUARD;
        let slots = match kind {
            Kind::RingBuffer | Kind::PerfEventArray | Kind::Custom | Kind::ProgramArray => 0,
            Kind::PerCpuArray => entries * cpus,
            // Twice the values: a value a program looked up keeps its slot, and its contents,
            // while another `max_entries` values come and go (the core frees it after the
            // epoch).
            Kind::Queue | Kind::Stack => 2 * entries,
            _ => entries,
        };
        let storage: Box<[UnsafeCell<u8>]> =
            (0..slots * stride).map(|_| UnsafeCell::new(0)).collect();
        let map = BpfMap {
            definition: definition.clone(),
            kind,
            cpus,
            stride,
            storage,
            hash: Mutex::new(HashState {
                free: (0..entries).rev().collect(),
                last_use: vec![0; entries],
                ..HashState::default()
            }),
            ring: Mutex::default(),
            perf: (0..if kind == Kind::PerfEventArray {
                cpus
            } else {
                0
            })
                .map(|_| Mutex::default())
                .collect(),
            values: Mutex::new(Circular {
                held: VecDeque::new(),
                free: if matches!(kind, Kind::Queue | Kind::Stack) {
                    (0..2 * entries).collect()
                } else {
                    VecDeque::new()
                },
            }),
            programs: Mutex::new((
                if kind == Kind::ProgramArray {
                    vec![None; entries]
                } else {
                    Vec::new()
                },
                None,
            )),
            custom,
            object,
        };
        if let Some(data) = &definition.initial_data {
            let len = data.len().min(definition.value_size as usize);
            // SAFETY: slot 0 holds `value_size` bytes; the map is not shared yet.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), map.slot(0), len) };
        }
        Ok(map)
    }

    /// The definition it was created from.
    #[must_use]
    pub fn definition(&self) -> &MapDefinition {
        &self.definition
    }

    /// The provider-backed state of a custom map.
    pub(crate) fn custom(&self) -> Option<&CustomMap> {
        self.custom.as_ref()
    }

    /// The address of the map object extension helpers receive for this map.
    pub(crate) fn object_address(&self) -> u64 {
        self.object.as_ptr() as u64
    }

    fn slot(&self, index: usize) -> *mut u8 {
        UnsafeCell::raw_get(self.storage.as_ptr()).wrapping_add(index * self.stride)
    }

    fn value_size(&self) -> usize {
        self.definition.value_size as usize
    }

    /// Where its values are (what a program may load from, and store to unless it is
    /// read-only data, `.rodata`).
    pub(crate) fn value_region(&self) -> Region<'_> {
        if let Some(custom) = &self.custom {
            return Region::Values(custom);
        }
        Region::Strided {
            start: self.slot(0) as u64,
            stride: self.stride as u64,
            size: self.value_size() as u64,
            count: (self.storage.len() / self.stride.max(1)) as u64,
            writable: !self.definition.name.starts_with(".rodata"),
        }
    }

    fn array_index(&self, key: &[u8]) -> Option<usize> {
        let index = u32::from_le_bytes(key.try_into().ok()?) as usize;
        (index < self.definition.max_entries as usize).then_some(index)
    }

    /// The slots of an array's entry `index`: one, or one per processor for a per-CPU array.
    fn entry_slots(&self, index: usize) -> core::ops::Range<usize> {
        let copies = if self.kind == Kind::PerCpuArray {
            self.cpus
        } else {
            1
        };
        index * copies..(index + 1) * copies
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() == self.definition.key_size as usize {
            Ok(())
        } else {
            Err(MapError::WrongSize {
                expected: self.definition.key_size as usize,
                got: key.len(),
            })
        }
    }

    /// The address of `key`'s value for `cpu`, or `None` (what `bpf_map_lookup_elem`
    /// returns). Marks an LRU entry as used.
    pub(crate) fn value_address(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        match self.kind {
            Kind::Array => self.array_index(key).map(|i| self.slot(i)),
            Kind::PerCpuArray => self
                .array_index(key)
                .map(|i| self.slot(i * self.cpus + cpu.min(self.cpus - 1))),
            Kind::Hash | Kind::LruHash => {
                let mut state = lock(&self.hash);
                let slot = *state.slots.get(key)?;
                state.clock += 1;
                state.last_use[slot] = state.clock;
                Some(self.slot(slot))
            }
            // The core's lookup in a queue or stack: its next value, in place.
            Kind::Queue | Kind::Stack => self.next_slot(&lock(&self.values)).map(|i| self.slot(i)),
            // A map that keeps the caller's values hands out the stored one, as the core's.
            Kind::Custom => self
                .custom
                .as_ref()
                .filter(|custom| !custom.refuses_programs())
                .and_then(|custom| custom.program_lookup(key)),
            Kind::RingBuffer | Kind::PerfEventArray | Kind::ProgramArray => None,
        }
    }

    /// The slot of a queue's (oldest) or stack's (newest) next value.
    fn next_slot(&self, values: &Circular) -> Option<usize> {
        match self.kind {
            Kind::Queue => values.held.front().copied(),
            Kind::Stack => values.held.back().copied(),
            _ => None,
        }
    }

    /// `bpf_map_update_elem`: writes `value` under `key` (for every CPU of a per-CPU map
    /// when `cpu` is `None`).
    pub(crate) fn update_value(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: Option<usize>,
    ) -> Result<(), ebpf_result_t> {
        if self.refuses_programs() {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        // A program may pass a pointer into this map's own values: copy it out before any
        // slot is written.
        let value = &value.to_vec();
        if let Some(custom) = &self.custom {
            return custom.update(key, value, flags, EBPF_MAP_OPERATION_HELPER);
        }
        if matches!(self.kind, Kind::ProgramArray | Kind::PerfEventArray) {
            // The core's program array has no update function, only an update with a handle
            // (from user mode); its perf event array has none at all.
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        if matches!(self.kind, Kind::Queue | Kind::Stack) {
            // The core's update of a queue or stack is a push.
            return self.push_value(value, flags);
        }
        if value.len() != self.value_size() {
            return Err(EBPF_INVALID_ARGUMENT);
        }
        let slots: Vec<usize> = match (self.kind, cpu) {
            // A program's update of a per-CPU array: the core finds the entry and writes this
            // processor's copy, whatever the flags (an index out of range is not found, and
            // the array's own update then refuses it).
            (Kind::PerCpuArray, Some(cpu)) => {
                let index = self.array_index(key).ok_or(EBPF_INVALID_ARGUMENT)?;
                vec![index * self.cpus + cpu.min(self.cpus - 1)]
            }
            // The core's array update: BPF_NOEXIST is refused before the index is looked at
            // (an array's entries always exist), and other flags are not checked.
            (Kind::Array | Kind::PerCpuArray, _) => {
                if flags == BPF_NOEXIST {
                    return Err(EBPF_INVALID_ARGUMENT);
                }
                let index = self.array_index(key).ok_or(EBPF_INVALID_ARGUMENT)?;
                self.entry_slots(index).collect()
            }
            (Kind::Hash | Kind::LruHash, _) => {
                if flags > BPF_EXIST {
                    return Err(EBPF_INVALID_ARGUMENT);
                }
                let mut state = lock(&self.hash);
                let existing = state.slots.get(key).copied();
                match (existing, flags) {
                    (Some(_), BPF_NOEXIST) => return Err(EBPF_KEY_ALREADY_EXISTS),
                    (None, BPF_EXIST) => return Err(EBPF_KEY_NOT_FOUND),
                    _ => {}
                }
                let slot = if let Some(slot) = existing {
                    slot
                } else {
                    let slot = match state.free.pop() {
                        Some(slot) => slot,
                        None if self.kind == Kind::LruHash => {
                            let (victim, slot) = state
                                .slots
                                .iter()
                                .min_by_key(|(_, slot)| state.last_use[**slot])
                                .map(|(k, s)| (k.clone(), *s))
                                .ok_or(EBPF_NO_MEMORY)?;
                            state.slots.remove(&victim);
                            slot
                        }
                        None => return Err(EBPF_NO_MEMORY),
                    };
                    state.slots.insert(key.to_vec(), slot);
                    slot
                };
                state.clock += 1;
                state.last_use[slot] = state.clock;
                // Written under the lock, so a concurrent update of the same key from test
                // code does not interleave.
                // SAFETY: the slot holds `value_size` bytes (checked against `value`).
                unsafe {
                    core::ptr::copy(value.as_ptr(), self.slot(slot), value.len());
                }
                return Ok(());
            }
            // The core's ring buffer has no update function.
            (Kind::RingBuffer, _) => return Err(EBPF_OPERATION_NOT_SUPPORTED),
            (
                Kind::PerfEventArray
                | Kind::Custom
                | Kind::Queue
                | Kind::Stack
                | Kind::ProgramArray,
                _,
            ) => {
                return Err(EBPF_INVALID_ARGUMENT);
            }
        };
        for slot in slots {
            // SAFETY: the slot holds `value_size` bytes (checked against `value`).
            unsafe { core::ptr::copy(value.as_ptr(), self.slot(slot), value.len()) };
        }
        Ok(())
    }

    /// Whether the map is a custom one whose provider updates the original value: the core
    /// refuses every program operation on it before calling the provider.
    fn refuses_programs(&self) -> bool {
        self.custom
            .as_ref()
            .is_some_and(CustomMap::refuses_programs)
    }

    /// `bpf_map_delete_elem`.
    pub(crate) fn delete_value(&self, key: &[u8]) -> Result<(), ebpf_result_t> {
        if let Some(custom) = self.custom.as_ref().filter(|c| !c.refuses_programs()) {
            return custom.delete(key, EBPF_MAP_OPERATION_HELPER);
        }
        match self.kind {
            Kind::Custom | Kind::Queue | Kind::Stack | Kind::PerfEventArray | Kind::RingBuffer => {
                Err(EBPF_OPERATION_NOT_SUPPORTED)
            }
            // The core's array delete zeroes the value (every processor's copy).
            Kind::Array | Kind::PerCpuArray => {
                let index = self.array_index(key).ok_or(EBPF_INVALID_ARGUMENT)?;
                for slot in self.entry_slots(index) {
                    // SAFETY: a slot of this map, `value_size` bytes.
                    unsafe { core::ptr::write_bytes(self.slot(slot), 0, self.value_size()) };
                }
                Ok(())
            }
            Kind::Hash | Kind::LruHash => {
                let mut state = lock(&self.hash);
                let slot = state.slots.remove(key).ok_or(EBPF_KEY_NOT_FOUND)?;
                state.free.push(slot);
                Ok(())
            }
            Kind::ProgramArray => {
                let index = self.array_index(key).ok_or(EBPF_OBJECT_NOT_FOUND)?;
                lock(&self.programs).0[index] = None;
                Ok(())
            }
        }
    }

    /// `bpf_map_lookup_and_delete_elem`: takes `key`'s value out of a hash or LRU hash map,
    /// or the next value out of a queue or stack (a pop); `None` if there is none or the map
    /// is of another type (the core refuses arrays and ring buffers; a custom map's provider
    /// decides in the core, which core-sim does not model: NULL).
    pub(crate) fn take_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Hash | Kind::LruHash => {
                let mut state = lock(&self.hash);
                let slot = state.slots.remove(key)?;
                let value = self.read(self.slot(slot));
                state.free.push(slot);
                Some(value)
            }
            Kind::Queue | Kind::Stack => {
                let mut value = vec![0u8; self.value_size()];
                self.pop_value(&mut value, true).ok().map(|()| value)
            }
            _ => None,
        }
    }

    /// Whether `bpf_map_lookup_and_delete_elem` can take values out of it.
    pub(crate) fn gives_up_values(&self) -> bool {
        matches!(
            self.kind,
            Kind::Hash | Kind::LruHash | Kind::Queue | Kind::Stack
        )
    }

    /// `bpf_map_push_elem`: appends `value` to a queue or stack; when it is full, `flags`
    /// with `BPF_EXIST` first drops the oldest value, else `EBPF_OUT_OF_SPACE`.
    pub(crate) fn push_value(&self, value: &[u8], flags: u64) -> Result<(), ebpf_result_t> {
        if self.refuses_programs() {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        // A program may pass a pointer into this map's own values: copy it out first.
        let value = &value.to_vec();
        match self.kind {
            Kind::Queue | Kind::Stack if value.len() == self.value_size() => {}
            // The core's ring buffer has no update or find function.
            Kind::RingBuffer => return Err(EBPF_OPERATION_NOT_SUPPORTED),
            _ => return Err(EBPF_INVALID_ARGUMENT),
        }
        let mut values = lock(&self.values);
        if values.held.len() == self.definition.max_entries as usize {
            if flags & BPF_EXIST == 0 {
                return Err(EBPF_OUT_OF_SPACE);
            }
            let oldest = values.held.pop_front().ok_or(EBPF_OUT_OF_SPACE)?;
            values.free.push_back(oldest);
        }
        let slot = values.free.pop_front().ok_or(EBPF_OUT_OF_SPACE)?;
        // SAFETY: a slot of `value_size` bytes (checked against `value`, a copy), written
        // under the lock.
        unsafe { core::ptr::copy(value.as_ptr(), self.slot(slot), value.len()) };
        values.held.push_back(slot);
        Ok(())
    }

    /// `bpf_map_pop_elem` (`remove`) and `bpf_map_peek_elem`: the next value of a queue (the
    /// oldest) or stack (the newest) into `out`; `EBPF_OBJECT_NOT_FOUND` when empty.
    pub(crate) fn pop_value(&self, out: &mut [u8], remove: bool) -> Result<(), ebpf_result_t> {
        if self.refuses_programs() {
            return Err(EBPF_OPERATION_NOT_SUPPORTED);
        }
        match self.kind {
            Kind::Queue | Kind::Stack => {}
            Kind::RingBuffer => return Err(EBPF_OPERATION_NOT_SUPPORTED),
            _ => return Err(EBPF_INVALID_ARGUMENT),
        }
        let mut values = lock(&self.values);
        let slot = self.next_slot(&values).ok_or(EBPF_OBJECT_NOT_FOUND)?;
        let out = out
            .get_mut(..self.value_size())
            .ok_or(EBPF_INVALID_ARGUMENT)?;
        out.copy_from_slice(&self.read(self.slot(slot)));
        if remove {
            if self.kind == Kind::Queue {
                values.held.pop_front();
            } else {
                values.held.pop_back();
            }
            values.free.push_back(slot);
        }
        Ok(())
    }

    /// Takes the next value of a queue (the oldest) or stack (the newest), as
    /// `bpf_map_pop_elem` does; `None` when empty. (Test code pushes with
    /// [`BpfMap::update`] and an empty key, as the core's user-mode update does.)
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for other maps.
    pub fn pop(&self) -> Result<Option<Vec<u8>>, MapError> {
        if !matches!(self.kind, Kind::Queue | Kind::Stack) {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        let mut value = vec![0u8; self.value_size()];
        match self.pop_value(&mut value, true) {
            Ok(()) => Ok(Some(value)),
            Err(_) => Ok(None),
        }
    }

    /// A queue's or stack's values, oldest first, as test code reads them.
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for other maps.
    pub fn queued_values(&self) -> Result<Vec<Vec<u8>>, MapError> {
        if !matches!(self.kind, Kind::Queue | Kind::Stack) {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        let values = lock(&self.values);
        Ok(values
            .held
            .iter()
            .map(|&i| self.read(self.slot(i)))
            .collect())
    }

    /// `bpf_ringbuf_output`: `Err(-12)` when full, `Err(-6)` for an empty or oversized record
    /// (the values the core's helper returns).
    pub(crate) fn ring_output(&self, data: &[u8]) -> Result<(), i64> {
        if self.kind != Kind::RingBuffer {
            return Err(-i64::from(EBPF_INVALID_ARGUMENT));
        }
        let capacity = self.definition.max_entries as usize;
        lock(&self.ring).output(capacity, &[data])
    }

    /// Whether it is a perf event array.
    pub(crate) fn is_perf_event_array(&self) -> bool {
        self.kind == Kind::PerfEventArray
    }

    /// `bpf_perf_event_output`'s record of `parts` into `cpu`'s ring: `Err(-12)` when full,
    /// `Err(-6)` for an empty or oversized record; either counts as lost, as in the core.
    pub(crate) fn perf_output(&self, cpu: usize, parts: &[&[u8]]) -> Result<(), i64> {
        let Some(ring) = self.perf.get(cpu) else {
            return Err(-i64::from(EBPF_INVALID_ARGUMENT));
        };
        let mut ring = lock(ring);
        let capacity = self.definition.max_entries as usize;
        ring.output(capacity, parts).inspect_err(|_| ring.lost += 1)
    }

    /// Takes the records processor `cpu`'s ring of a perf event array holds, oldest first
    /// (their space is free again).
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for other maps; [`MapError::Result`] with
    /// `EBPF_INVALID_ARGUMENT` for a processor the machine does not have.
    pub fn drain_cpu_records(&self, cpu: usize) -> Result<Vec<Vec<u8>>, MapError> {
        let mut ring = self.perf_ring(cpu)?;
        ring.used = 0;
        Ok(ring.records.drain(..).collect())
    }

    /// How many records processor `cpu`'s ring of a perf event array refused.
    ///
    /// # Errors
    /// As [`BpfMap::drain_cpu_records`].
    pub fn lost_records(&self, cpu: usize) -> Result<u64, MapError> {
        Ok(self.perf_ring(cpu)?.lost)
    }

    fn perf_ring(&self, cpu: usize) -> Result<std::sync::MutexGuard<'_, RingState>, MapError> {
        if self.kind != Kind::PerfEventArray {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        let ring = self
            .perf
            .get(cpu)
            .ok_or(MapError::Result(EBPF_INVALID_ARGUMENT))?;
        Ok(lock(ring))
    }

    /// The value of `key` (of an array or hash map), as test code reads it.
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for per-CPU arrays, queues, stacks, ring buffers and program
    /// arrays (see [`BpfMap::program_at`]);
    /// [`MapError::WrongSize`] for a key of the wrong size.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        if matches!(
            self.kind,
            Kind::PerCpuArray
                | Kind::RingBuffer
                | Kind::PerfEventArray
                | Kind::Queue
                | Kind::Stack
                | Kind::ProgramArray
        ) {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        self.check_key(key)?;
        if let Some(custom) = &self.custom {
            return custom.lookup(key).map_err(MapError::Result);
        }
        Ok(self.value_address(key, 0).map(|p| self.read(p)))
    }

    /// The values of `key` of a per-CPU array, one per processor.
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for other maps; [`MapError::WrongSize`] for a key of the
    /// wrong size.
    pub fn lookup_per_cpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        if self.kind != Kind::PerCpuArray {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        self.check_key(key)?;
        Ok(self.array_index(key).map(|index| {
            self.entry_slots(index)
                .map(|slot| self.read(self.slot(slot)))
                .collect()
        }))
    }

    fn read(&self, value: *mut u8) -> Vec<u8> {
        let mut bytes = vec![0u8; self.value_size()];
        // SAFETY: `value` is a slot of this map, `value_size` bytes.
        unsafe { core::ptr::copy_nonoverlapping(value, bytes.as_mut_ptr(), bytes.len()) };
        bytes
    }

    /// Writes `value` under `key` as `bpf_map_update_elem` with `flags` does (every
    /// processor's copy of a per-CPU array).
    ///
    /// # Errors
    /// [`MapError::WrongSize`], or [`MapError::Result`] with what the helper would return;
    /// [`MapError::WrongMapType`] for a program array (see [`BpfMap::set_program`]).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if self.kind == Kind::ProgramArray {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        self.check_key(key)?;
        if let Some(custom) = &self.custom {
            return custom
                .update(key, value, flags, 0)
                .map_err(MapError::Result);
        }
        self.update_value(key, value, flags, None)
            .map_err(MapError::Result)
    }

    /// Deletes `key` from a hash map, zeroes entry `key` of an array (every processor's copy
    /// of a per-CPU array), or empties slot `key` of a program array.
    ///
    /// # Errors
    /// [`MapError::Result`] with what `bpf_map_delete_elem` would return.
    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        if let Some(custom) = &self.custom {
            return custom.delete(key, 0).map_err(MapError::Result);
        }
        self.delete_value(key).map_err(MapError::Result)
    }

    /// The keys of a hash map, sorted.
    #[must_use]
    pub fn keys(&self) -> Vec<Vec<u8>> {
        if let Some(custom) = &self.custom {
            return custom.keys();
        }
        let mut keys: Vec<Vec<u8>> = lock(&self.hash).slots.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Puts `program` at `index` of a program array, as user mode's update with a program's
    /// handle does. The array takes programs of the type the programs of its object were
    /// loaded as (the core: of its first program's type), with the same context layout (a
    /// callee runs on its caller's context); another is refused with `EBPF_INVALID_FD`.
    ///
    /// # Errors
    /// [`MapError::WrongMapType`] for other maps; [`MapError::Result`] with
    /// `EBPF_INVALID_ARGUMENT` for an index past the end, `EBPF_INVALID_FD` for a program of
    /// another type or context layout.
    pub fn set_program(&self, index: u32, program: &Arc<BpfProgram>) -> Result<(), MapError> {
        if self.kind != Kind::ProgramArray {
            return Err(MapError::WrongMapType(self.definition.map_type));
        }
        let mut programs = lock(&self.programs);
        let (slots, kind) = &mut *programs;
        let slot = slots
            .get_mut(index as usize)
            .ok_or(MapError::Result(EBPF_INVALID_ARGUMENT))?;
        let offered = program.kind();
        if *kind.get_or_insert(offered) != offered {
            return Err(MapError::Result(EBPF_INVALID_FD));
        }
        *slot = Some(Arc::downgrade(program));
        Ok(())
    }

    /// The program at `index` of a program array (`None` for an empty slot, one past the end,
    /// a program since dropped, or another map type): what `bpf_tail_call` continues in.
    #[must_use]
    pub fn program_at(&self, index: u32) -> Option<Arc<BpfProgram>> {
        lock(&self.programs)
            .0
            .get(index as usize)?
            .as_ref()?
            .upgrade()
    }

    /// Gives a program array the type and context layout of a program loaded with it, as
    /// the core associates a program with its maps; `Err` with the type it has if another.
    pub(crate) fn associate(&self, program: ProgramKind) -> Result<(), GUID> {
        if self.kind != Kind::ProgramArray {
            return Ok(());
        }
        let mut programs = lock(&self.programs);
        match *programs.1.get_or_insert(program) {
            existing if existing == program => Ok(()),
            (program_type, _) => Err(program_type),
        }
    }

    /// Whether it is a program array.
    pub(crate) fn is_program_array(&self) -> bool {
        self.kind == Kind::ProgramArray
    }

    /// Takes the records a ring buffer holds, oldest first (their space is free again).
    #[must_use]
    pub fn drain_records(&self) -> Vec<Vec<u8>> {
        let mut ring = lock(&self.ring);
        ring.used = 0;
        ring.records.drain(..).collect()
    }
}
