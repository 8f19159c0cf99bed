//! Kernel declarations from `ntddk.h`: critical regions, processor numbers, kernel stack
//! expansion, process notification and what a process notify routine reads of a process.

use core::ffi::c_void;

use crate::ntdef::{BOOLEAN, CLIENT_ID, HANDLE, NTSTATUS, PROCESSOR_NUMBER, UNICODE_STRING};

/// `KERNEL_STACK_SIZE` on x64 (24 KiB).
pub const KERNEL_STACK_SIZE: usize = 0x6000;
/// `KERNEL_LARGE_STACK_SIZE` on x64.
pub const KERNEL_LARGE_STACK_SIZE: usize = 0x12000;
/// `MAXIMUM_EXPANSION_SIZE`: the most `KeExpandKernelStackAndCalloutEx` accepts.
pub const MAXIMUM_EXPANSION_SIZE: usize = KERNEL_LARGE_STACK_SIZE - (crate::wdm::PAGE_SIZE / 2);
/// `ALL_PROCESSOR_GROUPS` for `KeQueryActiveProcessorCountEx`.
pub const ALL_PROCESSOR_GROUPS: u16 = 0xFFFF;

/// `EXPAND_STACK_CALLOUT`: runs on the expanded stack; must restore any IRQL change.
pub type EXPAND_STACK_CALLOUT = unsafe extern "win64" fn(Parameter: *mut c_void);

/// `PS_CREATE_NOTIFY_INFO`: what a process-creation callback learns about a new process
/// (0x48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PS_CREATE_NOTIFY_INFO {
    /// `sizeof(PS_CREATE_NOTIFY_INFO)`.
    pub Size: usize,
    /// Bit 0 `FileOpenNameAvailable`, bit 1 `IsSubsystemProcess`; the rest reserved.
    pub Flags: u32,
    /// The parent process id.
    pub ParentProcessId: HANDLE,
    /// The creating process and thread.
    pub CreatingThreadId: CLIENT_ID,
    /// `PFILE_OBJECT` of the executable.
    pub FileObject: *mut c_void,
    /// The executable's file name (`*const UNICODE_STRING`).
    pub ImageFileName: *const UNICODE_STRING,
    /// The command line, or NULL.
    pub CommandLine: *const UNICODE_STRING,
    /// Set to an error status to deny the creation.
    pub CreationStatus: NTSTATUS,
}

/// `PS_CREATE_NOTIFY_INFO.Flags` bit: `ImageFileName` is the exact name used to open the file.
pub const PS_CREATE_NOTIFY_FILE_OPEN_NAME_AVAILABLE: u32 = 0x1;

/// `PCREATE_PROCESS_NOTIFY_ROUTINE_EX`: called at PASSIVE_LEVEL inside a critical region;
/// `CreateInfo` is NULL when the process exits.
pub type PCREATE_PROCESS_NOTIFY_ROUTINE_EX = unsafe extern "win64" fn(
    Process: *mut c_void,
    ProcessId: HANDLE,
    CreateInfo: *mut PS_CREATE_NOTIFY_INFO,
);

kernel_imports! {
    module = "ntoskrnl.exe";

    /// [`KeEnterCriticalRegion`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-keentercriticalregion):
    /// disables normal kernel APCs; nestable. IRQL ≤ APC_LEVEL.
    pub fn KeEnterCriticalRegion();
    /// [`KeLeaveCriticalRegion`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-keleavecriticalregion).
    /// IRQL ≤ APC_LEVEL.
    pub fn KeLeaveCriticalRegion();
    /// [`KeGetCurrentProcessorNumberEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-kegetcurrentprocessornumberex):
    /// system-wide index of the current processor. Any IRQL.
    pub fn KeGetCurrentProcessorNumberEx(ProcNumber: *mut PROCESSOR_NUMBER) -> u32;
    /// [`KeQueryActiveProcessorCountEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-kequeryactiveprocessorcountex):
    /// active processors in a group, or in all groups for `ALL_PROCESSOR_GROUPS`. Any IRQL.
    pub fn KeQueryActiveProcessorCountEx(GroupNumber: u16) -> u32;
    /// [`KeExpandKernelStackAndCalloutEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-keexpandkernelstackandcalloutex):
    /// runs `Callout(Parameter)` with at least `Size` bytes of stack; `Context` must be NULL.
    /// IRQL ≤ DISPATCH_LEVEL, and `Wait` must be FALSE at DISPATCH_LEVEL.
    pub fn KeExpandKernelStackAndCalloutEx(Callout: EXPAND_STACK_CALLOUT, Parameter: *mut c_void, Size: usize, Wait: BOOLEAN, Context: *mut c_void) -> NTSTATUS;
    /// [`PsSetCreateProcessNotifyRoutineEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-pssetcreateprocessnotifyroutineex):
    /// adds (`Remove` FALSE) or removes (TRUE, waiting for running callbacks) a process
    /// notify routine. STATUS_ACCESS_DENIED when the image holding the routine lacks
    /// IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY (`/INTEGRITYCHECK`). PASSIVE_LEVEL.
    pub fn PsSetCreateProcessNotifyRoutineEx(NotifyRoutine: PCREATE_PROCESS_NOTIFY_ROUTINE_EX, Remove: BOOLEAN) -> NTSTATUS;
    /// [`KeQueryPerformanceCounter`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-kequeryperformancecounter):
    /// the performance counter in ticks (the `LARGE_INTEGER` comes back in RAX), and its
    /// frequency in ticks per second when `PerformanceFrequency` is not NULL. Any IRQL.
    pub fn KeQueryPerformanceCounter(PerformanceFrequency: *mut i64) -> i64;
    /// [`PsGetProcessCreateTimeQuadPart`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocesscreatetimequadpart):
    /// the process's creation time (FILETIME units: 100 ns since 1601). `Process` is a
    /// `PEPROCESS` the caller holds (a notify routine's argument). Any IRQL.
    pub fn PsGetProcessCreateTimeQuadPart(Process: *mut c_void) -> i64;
    /// [`PsGetProcessExitStatus`](https://learn.microsoft.com/windows-hardware/drivers/ddi/ntddk/nf-ntddk-psgetprocessexitstatus):
    /// the process's exit status (Windows 10 1703+). IRQL ≤ APC_LEVEL.
    pub fn PsGetProcessExitStatus(Process: *mut c_void) -> NTSTATUS;
}
