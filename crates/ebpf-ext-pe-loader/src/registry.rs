//! The process-wide table of loaded images, readable from a signal handler.
//!
//! A fixed array of slots, each an atomic pointer to an immutable [`ImageRecord`] and a count
//! of readers. Readers (the fault handler, [`symbolize`]) announce themselves before loading
//! the pointer; unregistering clears the pointer and then waits for the readers to leave, so
//! a record is never freed under a reader. No locks, no allocation on the read side.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Most images loaded at once.
pub(crate) const MAX_IMAGES: usize = 64;

/// What the fault handler and [`symbolize`] know about a loaded image. Immutable once built.
#[derive(Debug)]
pub(crate) struct ImageRecord {
    pub(crate) base: usize,
    pub(crate) size: usize,
    pub(crate) name: Box<str>,
    /// Executable ranges `(start, end)` as RVAs, ascending.
    pub(crate) executable: Box<[(u32, u32)]>,
    /// `RUNTIME_FUNCTION` ranges `(begin, end)`, ascending and disjoint.
    pub(crate) functions: Box<[(u32, u32)]>,
    /// Named addresses (exports, the entry point), ascending by RVA.
    pub(crate) names: Box<[(u32, Box<str>)]>,
    /// The optional header's `DllCharacteristics`.
    pub(crate) dll_characteristics: u16,
}

impl ImageRecord {
    /// The RVA of `address` if it lies inside the image.
    pub(crate) fn rva(&self, address: usize) -> Option<u32> {
        let offset = address.checked_sub(self.base)?;
        if offset < self.size {
            u32::try_from(offset).ok()
        } else {
            None
        }
    }

    /// Whether `rva..rva + len` lies inside one executable range.
    pub(crate) fn is_executable(&self, rva: u32, len: u32) -> bool {
        let Some(end) = rva.checked_add(len) else {
            return false;
        };
        self.executable
            .iter()
            .any(|&(start, stop)| rva >= start && end <= stop)
    }

    /// The function containing `rva`: its start and, when known, its name.
    ///
    /// The exception directory gives the start of every function with a stack frame; a leaf
    /// function has no entry there, so the nearest preceding named address is used when no
    /// function of the directory lies between it and `rva`.
    pub(crate) fn function(&self, rva: u32) -> Option<(u32, Option<&str>)> {
        let name_of = |start: u32| {
            self.names
                .binary_search_by_key(&start, |(rva, _)| *rva)
                .ok()
                .and_then(|i| self.names.get(i))
                .map(|(_, name)| &**name)
        };
        let index = self.functions.partition_point(|&(begin, _)| begin <= rva);
        let preceding = index.checked_sub(1).and_then(|i| self.functions.get(i));
        if let Some(&(begin, end)) = preceding
            && rva < end
        {
            return Some((begin, name_of(begin)));
        }
        let boundary = preceding.map_or(0, |&(_, end)| end);
        let named = self.names.partition_point(|(start, _)| *start <= rva);
        let (start, name) = named.checked_sub(1).and_then(|i| self.names.get(i))?;
        (*start >= boundary && self.is_executable(*start, 1)).then_some((*start, Some(&**name)))
    }

    /// Writes `module+0xrva (function+0xoffset)` without allocating.
    pub(crate) fn write_location(&self, out: &mut impl fmt::Write, rva: u32) -> fmt::Result {
        write_location(out, &self.name, rva, self.function(rva))
    }
}

fn write_location(
    out: &mut impl fmt::Write,
    module: &str,
    rva: u32,
    function: Option<(u32, Option<&str>)>,
) -> fmt::Result {
    write!(out, "{module}+{rva:#x}")?;
    match function {
        None => Ok(()),
        Some((start, name)) => {
            let offset = rva.saturating_sub(start);
            match name {
                Some(name) => write!(out, " ({name}")?,
                None => write!(out, " (function at {start:#x}")?,
            }
            if offset != 0 {
                write!(out, "+{offset:#x}")?;
            }
            write!(out, ")")
        }
    }
}

struct Slot {
    record: AtomicPtr<ImageRecord>,
    readers: AtomicUsize,
}

static SLOTS: [Slot; MAX_IMAGES] = [const {
    Slot {
        record: AtomicPtr::new(core::ptr::null_mut()),
        readers: AtomicUsize::new(0),
    }
}; MAX_IMAGES];

/// Publishes `record`; returns its slot, or `None` when every slot is taken.
///
/// # Safety
/// `record` stays valid and unchanged until [`unregister`] of the returned slot returns.
pub(crate) unsafe fn register(record: *const ImageRecord) -> Option<usize> {
    SLOTS.iter().position(|slot| {
        slot.record
            .compare_exchange(
                core::ptr::null_mut(),
                record.cast_mut(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    })
}

/// Withdraws the record of `slot` and waits until no reader uses it.
pub(crate) fn unregister(slot: usize) {
    let Some(slot) = SLOTS.get(slot) else {
        return;
    };
    slot.record.store(core::ptr::null_mut(), Ordering::SeqCst);
    while slot.readers.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Runs `f` on the record of the image containing `address`, if any. Async-signal-safe
/// (atomics only) as long as `f` is.
pub(crate) fn with_image<R>(address: usize, f: impl FnOnce(&ImageRecord) -> R) -> Option<R> {
    for slot in &SLOTS {
        slot.readers.fetch_add(1, Ordering::SeqCst);
        let record = slot.record.load(Ordering::SeqCst);
        // SAFETY: a non-null pointer was published by `register`, and its owner waits in
        // `unregister` for our reader count to drop before freeing it.
        if let Some(record) = unsafe { record.as_ref() }
            && record.rva(address).is_some()
        {
            let result = f(record);
            slot.readers.fetch_sub(1, Ordering::SeqCst);
            return Some(result);
        }
        slot.readers.fetch_sub(1, Ordering::SeqCst);
    }
    None
}

/// Where an address lies inside a loaded image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Symbol {
    /// Module name given when the image was loaded.
    pub module: String,
    /// Offset from the image base.
    pub rva: u32,
    /// The function containing the address, if known.
    pub function: Option<Function>,
}

/// A function of a loaded image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Function {
    /// RVA of its first instruction.
    pub start: u32,
    /// Its name, when known (exports, the entry point `DriverEntry`, the PDB beside the image).
    pub name: Option<String>,
}

impl fmt::Display for Symbol {
    /// `module+0xrva (function+0xoffset)`, as in fault reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let function = self
            .function
            .as_ref()
            .map(|func| (func.start, func.name.as_deref()));
        write_location(f, &self.module, self.rva, function)
    }
}

/// The `DllCharacteristics` of the loaded image containing `address`, if any (for example to
/// check `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`, as `PsSetCreateProcessNotifyRoutineEx`
/// does for the image holding its routine).
#[must_use]
pub fn image_dll_characteristics(address: usize) -> Option<u16> {
    with_image(address, |record| {
        record.rva(address)?;
        Some(record.dll_characteristics)
    })
    .flatten()
}

/// Names the loaded image, offset and function of `address`, or `None` when no loaded image
/// contains it.
#[must_use]
pub fn symbolize(address: usize) -> Option<Symbol> {
    with_image(address, |record| {
        let rva = record.rva(address)?;
        Some(Symbol {
            module: String::from(&*record.name),
            rva,
            function: record.function(rva).map(|(start, name)| Function {
                start,
                name: name.map(ToOwned::to_owned),
            }),
        })
    })
    .flatten()
}
