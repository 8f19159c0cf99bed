//! Kernel declarations from `ntddk.h`: critical regions, processor numbers and kernel stack
//! expansion.

use core::ffi::c_void;

use crate::ntdef::{BOOLEAN, NTSTATUS, PROCESSOR_NUMBER};

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
}
