//! Process-creation notification and the performance counter.
//!
//! `PsSetCreateProcessNotifyRoutineEx` keeps up to 64 routines, refuses one already registered
//! (STATUS_INVALID_PARAMETER), and refuses registration when the image holding the routine
//! lacks the integrity-check flag (STATUS_ACCESS_DENIED). Code linked into the test binary has
//! no image, so by default it passes. A PE loader registers an [`ImageFlagsLookup`] for the
//! whole process with [`set_loader_image_flags`] (its images are mapped into the process, and
//! code in them may run under any kernel), so the flag of a loaded image is honoured on every
//! kernel; a test overrides it for one kernel with [`Kernel::set_image_flags_lookup`].
//! Removal waits for the routine's running callbacks; removing from inside the callback is a
//! bug check (it would deadlock).
//!
//! Tests raise events with [`Kernel::create_process`] and [`Kernel::exit_process`] (or their
//! `_as` / `_with` forms, which say who the process runs as, when it was created, how and
//! when it exits): every registered routine is called on the calling thread at PASSIVE_LEVEL
//! inside a critical region, as the kernel calls them from the creating thread and the last
//! exiting thread.
//!
//! A `PEPROCESS` is a process object of this module: `PsGetProcessCreateTimeQuadPart`,
//! `PsGetProcessExitStatus` (STATUS_PENDING until the process exits) and
//! `PsReferencePrimaryToken` accept only a live one (anything else is a bug check), and
//! `PsGetProcessExitTime` answers for the process whose exit is being announced on this
//! thread (0 elsewhere: no current process is exiting). Times come from a per-kernel clock
//! that starts at 2026-01-01 00:00:00 UTC (FILETIME) and advances one second per process
//! event, so the same scenario sees the same times. The primary token's references are
//! counted: one not released is a leak ([`Kernel::assert_no_leaks`]). The token, SID and
//! account routines are in `security`.

use core::cell::Cell;
use core::ffi::c_void;
use core::ops::Range;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ebpf_ext_sys::ntddk::{
    PCREATE_PROCESS_NOTIFY_ROUTINE_EX, PS_CREATE_NOTIFY_FILE_OPEN_NAME_AVAILABLE,
    PS_CREATE_NOTIFY_INFO,
};
use ebpf_ext_sys::ntdef::{BOOLEAN, CLIENT_ID, NTSTATUS, UNICODE_STRING};
use ebpf_ext_sys::ntifs::LOCAL_SYSTEM_SID;
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_PROCEDURE_NOT_FOUND,
    STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, PASSIVE_LEVEL,
};

use crate::kernel::{Inner, Kernel, bugcheck, call_fails, lock, require_irql, with_kernel};

/// Most process notify routines the kernel accepts (`PSP_MAX_CREATE_PROCESS_NOTIFY`).
const MAX_ROUTINES: usize = 64;

/// Answers whether the image containing an address carries
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`; `None` when the address is in no loaded image.
pub type ImageFlagsLookup = fn(address: usize) -> Option<bool>;

/// The PE loader's lookup, for every kernel of the process ([`set_loader_image_flags`]).
static LOADER_IMAGE_FLAGS: Mutex<Option<ImageFlagsLookup>> = Mutex::new(None);

/// Registers the lookup of the PE loader that maps images into this process: every kernel
/// asks it whether the image holding a process notify routine has the integrity-check flag,
/// unless a test set a lookup of its own for that kernel ([`Kernel::set_image_flags_lookup`]).
/// Registering again replaces it.
pub fn set_loader_image_flags(lookup: ImageFlagsLookup) {
    *lock(&LOADER_IMAGE_FLAGS) = Some(lookup);
}

/// A registered notify routine.
struct Routine {
    address: usize,
    /// Callbacks of it running now.
    running: u32,
    /// Being removed: no new callback starts.
    removing: bool,
}

/// FILETIME of 2026-01-01 00:00:00 UTC: where each kernel's process clock starts.
pub const PROCESS_CLOCK_START: i64 = 134_116_992_000_000_000;
/// How far the process clock advances per process event (one second, in 100 ns units).
const PROCESS_CLOCK_STEP: i64 = 10_000_000;

/// A primary token: the user it stands for.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) user: Vec<u8>,
}

/// What a `PEPROCESS` points to.
#[derive(Debug)]
pub(crate) struct ProcessObject {
    process_id: usize,
    create_time: i64,
    exit_time: AtomicI64,
    exit_status: AtomicI32,
    pub(crate) token: Arc<Token>,
}

pub(crate) struct ProcessState {
    /// Registered routines.
    routines: Vec<Routine>,
    /// Live processes: id → object address.
    processes: HashMap<usize, usize>,
    /// Every process object a routine may be handed: the live processes, and those whose
    /// creation or exit is being announced. Address → object.
    objects: HashMap<usize, Arc<ProcessObject>>,
    /// Referenced primary tokens: address → (token, references).
    pub(crate) tokens: HashMap<usize, (Arc<Token>, u32)>,
    /// Accounts `SecLookupAccountSid` knows: SID → (name, domain, use).
    pub(crate) accounts: Vec<crate::security::Account>,
    /// The process clock (FILETIME).
    clock: i64,
    image_flags: Option<ImageFlagsLookup>,
}

impl Default for ProcessState {
    fn default() -> Self {
        ProcessState {
            routines: Vec::new(),
            processes: HashMap::new(),
            objects: HashMap::new(),
            tokens: HashMap::new(),
            accounts: crate::security::well_known_accounts(),
            clock: PROCESS_CLOCK_START,
            image_flags: None,
        }
    }
}

impl ProcessState {
    fn tick(&mut self) -> i64 {
        self.clock += PROCESS_CLOCK_STEP;
        self.clock
    }
}

thread_local! {
    /// Set while this thread runs a process notify routine.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// The exit time of the process whose exit this thread announces (0: none).
    static EXITING: Cell<i64> = const { Cell::new(0) };
}

/// The live process object at `process`, or a bug check naming `api`.
pub(crate) fn process_object(api: &'static str, process: *mut c_void) -> Arc<ProcessObject> {
    let found = with_kernel(api, |k| {
        lock(&k.process).objects.get(&(process as usize)).cloned()
    });
    found.unwrap_or_else(|| {
        bugcheck(
            api,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [process as u64, 0, 0, 0],
            "not a process object (PEPROCESS) of a live process",
        )
    })
}

/// `PsGetProcessCreateTimeQuadPart`.
///
/// # Safety
/// Kernel routine; `Process` is a process object the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsGetProcessCreateTimeQuadPart(Process: *mut c_void) -> i64 {
    process_object("PsGetProcessCreateTimeQuadPart", Process).create_time
}

/// `PsGetProcessExitStatus`: the exit status, STATUS_PENDING while the process runs.
///
/// # Safety
/// Kernel routine; `Process` is a process object the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsGetProcessExitStatus(Process: *mut c_void) -> NTSTATUS {
    const API: &str = "PsGetProcessExitStatus";
    require_irql(API, APC_LEVEL);
    process_object(API, Process)
        .exit_status
        .load(Ordering::Relaxed)
}

/// `PsGetProcessExitTime`: the exiting process's exit time in its exit notification, else 0.
///
/// # Safety
/// Kernel routine.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn PsGetProcessExitTime() -> i64 {
    const API: &str = "PsGetProcessExitTime";
    require_irql(API, DISPATCH_LEVEL);
    with_kernel(API, |_| EXITING.with(Cell::get))
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
        if let Some(lookup) = state.image_flags.or(*lock(&LOADER_IMAGE_FLAGS))
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

impl ProcessState {
    /// Registered notify routines that lie in `image`, with what they are.
    pub(crate) fn references_into(&self, image: &Range<usize>) -> Vec<(usize, String)> {
        self.routines
            .iter()
            .filter(|r| image.contains(&r.address))
            .map(|r| (r.address, "process notify routine (not removed)".to_owned()))
            .collect()
    }
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

impl NewProcess {
    /// Process `process_id`, created by thread 8 of process 4, its parent, from the image
    /// `\??\C:\p.exe`, with no command line: a creation for tests that need one, not its
    /// details.
    #[must_use]
    pub fn new(process_id: usize) -> NewProcess {
        NewProcess {
            process_id,
            parent_process_id: 4,
            creating_process_id: 4,
            creating_thread_id: 8,
            image_file_name: "\\??\\C:\\p.exe".into(),
            command_line: None,
        }
    }
}

/// Who a process created with [`Kernel::create_process_as`] runs as, and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Its creation time (FILETIME); `None`: the kernel's process clock.
    pub create_time: Option<i64>,
    /// The user SID of its primary token, as bytes (S-1-5-18, LocalSystem, by default).
    pub user_sid: Vec<u8>,
}

impl Default for ProcessIdentity {
    fn default() -> Self {
        ProcessIdentity {
            create_time: None,
            user_sid: LOCAL_SYSTEM_SID.as_bytes().to_vec(),
        }
    }
}

/// How a process ends, for [`Kernel::exit_process_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessExit {
    /// Its exit status (`PsGetProcessExitStatus`).
    pub exit_status: NTSTATUS,
    /// Its exit time (FILETIME, `PsGetProcessExitTime`); `None`: the kernel's process clock.
    pub exit_time: Option<i64>,
}

struct OwnedUnicode {
    _buffer: Vec<u16>,
    string: UNICODE_STRING,
}

/// A kernel string of `s`: NUL-terminated in its buffer, which the terminator makes two bytes
/// longer than `Length` (`MaximumLength` counts it), as the kernel's strings usually are.
#[expect(
    clippy::unnecessary_box_returns,
    reason = "the string points into the box; it must not move"
)]
fn unicode(s: &str) -> Box<OwnedUnicode> {
    let mut buffer: Vec<u16> = s.encode_utf16().chain([0]).collect();
    let length = u16::try_from((buffer.len() - 1) * 2).expect("string under 32 KiB");
    let string = UNICODE_STRING {
        Length: length,
        MaximumLength: length
            .checked_add(2)
            .expect("string and terminator under 32 KiB"),
        Buffer: buffer.as_mut_ptr(),
    };
    Box::new(OwnedUnicode {
        _buffer: buffer,
        string,
    })
}

impl Kernel {
    /// Lets registration on this kernel check the integrity-check flag of the image holding a
    /// routine with `lookup` instead of the PE loader's ([`set_loader_image_flags`]); `None`
    /// goes back to the loader's.
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
    /// the process does not exist afterwards. The process runs as LocalSystem and is created
    /// now by the kernel's process clock ([`ProcessIdentity::default`]).
    ///
    /// # Panics
    /// If a process with that id exists.
    #[expect(
        clippy::must_use_candidate,
        reason = "announcing the event is the point; the status is often not needed"
    )]
    pub fn create_process(&self, process: &NewProcess) -> NTSTATUS {
        self.create_process_as(process, &ProcessIdentity::default())
    }

    /// [`Kernel::create_process`] for a process running as `identity.user_sid`, created at
    /// `identity.create_time`.
    ///
    /// # Panics
    /// If a process with that id exists.
    pub fn create_process_as(&self, process: &NewProcess, identity: &ProcessIdentity) -> NTSTATUS {
        let object = {
            let mut state = lock(&self.inner().process);
            assert!(
                !state.processes.contains_key(&process.process_id),
                "process {} already exists",
                process.process_id
            );
            let now = state.tick();
            let object = Arc::new(ProcessObject {
                process_id: process.process_id,
                create_time: identity.create_time.unwrap_or(now),
                exit_time: AtomicI64::new(0),
                exit_status: AtomicI32::new(STATUS_PENDING),
                token: Arc::new(Token {
                    user: identity.user_sid.clone(),
                }),
            });
            let address = Arc::as_ptr(&object) as usize;
            state.objects.insert(address, object);
            address
        };
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
        self.notify(object as *mut c_void, process.process_id, &raw mut info);
        let mut state = lock(&self.inner().process);
        if ebpf_ext_sys::ntdef::NT_SUCCESS(info.CreationStatus) {
            state.processes.insert(process.process_id, object);
        } else {
            state.objects.remove(&object);
        }
        info.CreationStatus
    }

    /// Announces the exit of a process created with [`Kernel::create_process`]
    /// (`CreateInfo` NULL), with exit status STATUS_SUCCESS, now by the process clock.
    /// Returns false if no such process exists.
    #[must_use]
    pub fn exit_process(&self, process_id: usize) -> bool {
        self.exit_process_with(process_id, &ProcessExit::default())
    }

    /// [`Kernel::exit_process`] with the exit status and time `exit` gives.
    #[must_use]
    pub fn exit_process_with(&self, process_id: usize, exit: &ProcessExit) -> bool {
        let (address, exit_time) = {
            let mut state = lock(&self.inner().process);
            let Some(address) = state.processes.remove(&process_id) else {
                return false;
            };
            let now = state.tick();
            let exit_time = exit.exit_time.unwrap_or(now);
            let object = &state.objects[&address];
            debug_assert_eq!(object.process_id, process_id);
            object.exit_time.store(exit_time, Ordering::Relaxed);
            object
                .exit_status
                .store(exit.exit_status, Ordering::Relaxed);
            (address, exit_time)
        };
        let outer = EXITING.with(|e| e.replace(exit_time));
        self.notify(address as *mut c_void, process_id, ptr::null_mut());
        EXITING.with(|e| e.set(outer));
        lock(&self.inner().process).objects.remove(&address);
        true
    }

    /// Primary-token references taken with `PsReferencePrimaryToken` and not yet released.
    #[must_use]
    pub fn primary_token_references(&self) -> u32 {
        lock(&self.inner().process)
            .tokens
            .values()
            .map(|(_, n)| n)
            .sum()
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
            crate::kernel::call_driver_callback(
                "PCREATE_PROCESS_NOTIFY_ROUTINE_EX",
                routine,
                crate::kernel::CalledFrom::Kernel,
                // SAFETY: the routine's documented arguments; `info` is NULL or valid for the
                // call.
                || unsafe { f(object, process_id as *mut c_void, info) },
            );
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
