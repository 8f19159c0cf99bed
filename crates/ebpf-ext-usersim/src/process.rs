//! Process-creation notification and the performance counter.
//!
//! `PsSetCreateProcessNotifyRoutineEx` keeps up to 64 routines, refuses one already registered
//! (STATUS_INVALID_PARAMETER), and refuses registration when the image holding the routine
//! lacks the integrity-check flag (STATUS_ACCESS_DENIED). Code linked into the test binary has
//! no image, so by default it passes; a PE loader registers an [`ImageFlagsLookup`] with
//! [`Kernel::set_image_flags_lookup`] so the flag of a loaded image is honoured. Removal waits
//! for the routine's running callbacks; removing from inside the callback is a bug check
//! (it would deadlock).
//!
//! Tests raise events with [`Kernel::create_process`] and [`Kernel::exit_process`]: every
//! registered routine is called on the calling thread at PASSIVE_LEVEL inside a critical
//! region, as the kernel calls them from the creating thread and the last exiting thread.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use ebpf_ext_sys::ntddk::{
    PCREATE_PROCESS_NOTIFY_ROUTINE_EX, PS_CREATE_NOTIFY_FILE_OPEN_NAME_AVAILABLE,
    PS_CREATE_NOTIFY_INFO,
};
use ebpf_ext_sys::ntdef::{BOOLEAN, CLIENT_ID, NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER, STATUS_PROCEDURE_NOT_FOUND, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{DRIVER_VERIFIER_DETECTED_VIOLATION, PASSIVE_LEVEL};

use crate::kernel::{Inner, Kernel, bugcheck, call_fails, lock, require_irql, with_kernel};

/// Most process notify routines the kernel accepts (`PSP_MAX_CREATE_PROCESS_NOTIFY`).
const MAX_ROUTINES: usize = 64;

/// Answers whether the image containing an address carries
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`; `None` when the address is in no loaded image.
pub type ImageFlagsLookup = fn(address: usize) -> Option<bool>;

/// A registered notify routine.
struct Routine {
    address: usize,
    /// Callbacks of it running now.
    running: u32,
    /// Being removed: no new callback starts.
    removing: bool,
}

#[derive(Default)]
pub(crate) struct ProcessState {
    /// Registered routines.
    routines: Vec<Routine>,
    /// Live processes: id → fake EPROCESS.
    processes: HashMap<usize, Box<[u64; 8]>>,
    image_flags: Option<ImageFlagsLookup>,
}

thread_local! {
    /// Set while this thread runs a process notify routine.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// `PsSetCreateProcessNotifyRoutineEx`.
///
/// # Safety
/// Kernel routine; `NotifyRoutine` stays callable until it is removed.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsSetCreateProcessNotifyRoutineEx(
    NotifyRoutine: PCREATE_PROCESS_NOTIFY_ROUTINE_EX,
    Remove: BOOLEAN,
) -> NTSTATUS {
    const API: &str = "PsSetCreateProcessNotifyRoutineEx";
    require_irql(API, PASSIVE_LEVEL);
    let routine = NotifyRoutine as usize;
    if Remove != 0 {
        if IN_CALLBACK.with(Cell::get) {
            bugcheck(
                API,
                DRIVER_VERIFIER_DETECTED_VIOLATION,
                [routine as u64, 0, 0, 0],
                "process notify routine removed from inside a process notify callback",
            );
        }
        return with_kernel(API, |k| remove_routine(k, routine));
    }
    with_kernel(API, |k| {
        let state = lock(&k.process);
        if let Some(lookup) = state.image_flags
            && lookup(routine) == Some(false)
        {
            return STATUS_ACCESS_DENIED;
        }
        if state.routines.iter().any(|r| r.address == routine)
            || state.routines.len() >= MAX_ROUTINES
        {
            return STATUS_INVALID_PARAMETER;
        }
        drop(state);
        if call_fails(k, API) {
            return STATUS_INVALID_PARAMETER;
        }
        lock(&k.process).routines.push(Routine {
            address: routine,
            running: 0,
            removing: false,
        });
        STATUS_SUCCESS
    })
}

fn remove_routine(k: &Inner, routine: usize) -> NTSTATUS {
    let mut state = lock(&k.process);
    // Stop new callbacks of it first, as the kernel does, then wait for the running ones.
    match state
        .routines
        .iter_mut()
        .find(|r| r.address == routine && !r.removing)
    {
        Some(entry) => entry.removing = true,
        None => return STATUS_PROCEDURE_NOT_FOUND,
    }
    loop {
        // Look it up again after every wake: other removals may have moved it.
        let index = state
            .routines
            .iter()
            .position(|r| r.address == routine)
            .expect("only this removal takes a removing entry out");
        if state.routines[index].running == 0 {
            state.routines.remove(index);
            return STATUS_SUCCESS;
        }
        state = k
            .process_cv
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

/// `KeQueryPerformanceCounter`: 10 MHz ticks since the first call in the process.
///
/// # Safety
/// Kernel routine; `PerformanceFrequency` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn KeQueryPerformanceCounter(PerformanceFrequency: *mut i64) -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    if !PerformanceFrequency.is_null() {
        // SAFETY: the caller passes NULL or a writable i64.
        unsafe { *PerformanceFrequency = 10_000_000 };
    }
    let ticks = START.get_or_init(Instant::now).elapsed().as_nanos() / 100;
    i64::try_from(ticks).unwrap_or(i64::MAX)
}

/// A process creation to announce with [`Kernel::create_process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProcess {
    /// The new process id.
    pub process_id: usize,
    /// Its parent.
    pub parent_process_id: usize,
    /// The process whose thread creates it.
    pub creating_process_id: usize,
    /// The creating thread.
    pub creating_thread_id: usize,
    /// Image file name (`\??\C:\Windows\System32\notepad.exe`).
    pub image_file_name: String,
    /// Command line, if known.
    pub command_line: Option<String>,
}

struct OwnedUnicode {
    _buffer: Vec<u16>,
    string: UNICODE_STRING,
}

#[expect(
    clippy::unnecessary_box_returns,
    reason = "the string points into the box; it must not move"
)]
fn unicode(s: &str) -> Box<OwnedUnicode> {
    let mut buffer: Vec<u16> = s.encode_utf16().collect();
    let length = u16::try_from(buffer.len() * 2).expect("string under 32 KiB");
    let string = UNICODE_STRING {
        Length: length,
        MaximumLength: length,
        Buffer: buffer.as_mut_ptr(),
    };
    Box::new(OwnedUnicode {
        _buffer: buffer,
        string,
    })
}

impl Kernel {
    /// Lets registration check the integrity-check flag of the image holding a routine (a PE
    /// loader registers this; see the module documentation).
    pub fn set_image_flags_lookup(&self, lookup: Option<ImageFlagsLookup>) {
        lock(&self.inner().process).image_flags = lookup;
    }

    /// Number of registered process notify routines.
    #[must_use]
    pub fn process_notify_routines(&self) -> usize {
        lock(&self.inner().process).routines.len()
    }

    /// Announces a process creation to every registered routine (in registration order) and
    /// returns the `CreationStatus` they left: a failure means the creation was denied, and
    /// the process does not exist afterwards.
    ///
    /// # Panics
    /// If a process with that id exists.
    pub fn create_process(&self, process: &NewProcess) -> NTSTATUS {
        assert!(
            !lock(&self.inner().process)
                .processes
                .contains_key(&process.process_id),
            "process {} already exists",
            process.process_id
        );
        let mut eprocess = Box::new([0u64; 8]);
        eprocess[0] = process.process_id as u64;
        let image = unicode(&process.image_file_name);
        let command_line = process.command_line.as_deref().map(unicode);
        let mut info = PS_CREATE_NOTIFY_INFO {
            Size: core::mem::size_of::<PS_CREATE_NOTIFY_INFO>(),
            Flags: PS_CREATE_NOTIFY_FILE_OPEN_NAME_AVAILABLE,
            ParentProcessId: process.parent_process_id as *mut c_void,
            CreatingThreadId: CLIENT_ID {
                UniqueProcess: process.creating_process_id as *mut c_void,
                UniqueThread: process.creating_thread_id as *mut c_void,
            },
            FileObject: ptr::null_mut(),
            ImageFileName: &raw const image.string,
            CommandLine: command_line
                .as_ref()
                .map_or(ptr::null(), |c| &raw const c.string),
            CreationStatus: STATUS_SUCCESS,
        };
        let object = eprocess.as_mut_ptr().cast::<c_void>();
        self.notify(object, process.process_id, &raw mut info);
        if ebpf_ext_sys::ntdef::NT_SUCCESS(info.CreationStatus) {
            lock(&self.inner().process)
                .processes
                .insert(process.process_id, eprocess);
        }
        info.CreationStatus
    }

    /// Announces the exit of a process created with [`Kernel::create_process`]
    /// (`CreateInfo` NULL). Returns false if no such process exists.
    #[must_use]
    pub fn exit_process(&self, process_id: usize) -> bool {
        let Some(mut eprocess) = lock(&self.inner().process).processes.remove(&process_id) else {
            return false;
        };
        self.notify(eprocess.as_mut_ptr().cast(), process_id, ptr::null_mut());
        true
    }

    fn notify(&self, object: *mut c_void, process_id: usize, info: *mut PS_CREATE_NOTIFY_INFO) {
        let inner = self.inner();
        let routines: Vec<usize> = {
            let mut state = lock(&inner.process);
            state
                .routines
                .iter_mut()
                .filter(|r| !r.removing)
                .map(|r| {
                    r.running += 1;
                    r.address
                })
                .collect()
        };
        let saved = crate::kernel::current_irql();
        crate::kernel::set_irql(PASSIVE_LEVEL);
        crate::cpu::KeEnterCriticalRegion();
        for routine in routines {
            // SAFETY: a registered routine stays callable until removed, and removal waits for
            // this call (its running count is above zero).
            let f: PCREATE_PROCESS_NOTIFY_ROUTINE_EX = unsafe { core::mem::transmute(routine) };
            IN_CALLBACK.with(|c| c.set(true));
            // SAFETY: the routine's documented arguments; `info` is NULL or valid for the call.
            unsafe { f(object, process_id as *mut c_void, info) };
            IN_CALLBACK.with(|c| c.set(false));
            let mut state = lock(&inner.process);
            if let Some(entry) = state.routines.iter_mut().find(|r| r.address == routine) {
                entry.running -= 1;
            }
            drop(state);
            inner.process_cv.notify_all();
        }
        crate::cpu::KeLeaveCriticalRegion();
        crate::kernel::set_irql(saved);
    }
}
