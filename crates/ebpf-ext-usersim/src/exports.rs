//! The name → address table of every kernel routine usersim implements.
//!
//! Each entry is coerced to the function-pointer type `ebpf-ext-sys` declares for that
//! routine, so a signature that drifts from the declaration is a compile error.

use core::ffi::c_void;

use ebpf_ext_sys::{ksecdd, netioddk, ntddk, ntifs, wdm};

/// One exported routine.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    /// Module a driver imports it from (`ntoskrnl.exe`, `NETIO.SYS`, `ksecdd.sys`).
    pub module: &'static str,
    /// Export name.
    pub name: &'static str,
    /// Address of usersim's implementation.
    pub address: *const c_void,
}

// SAFETY: the table holds addresses of functions, which are immutable and valid on every
// thread.
unsafe impl Sync for Export {}

/// Every kernel routine usersim defines, by its export name (they are also plain Rust
/// functions, callable directly from tests).
pub mod all {
    pub use crate::cpu::*;
    pub use crate::devices::*;
    pub use crate::etw::*;
    pub use crate::io::{
        ObSetSecurityObjectByPointer, RtlAddAccessAllowedAce, RtlCreateAcl,
        RtlCreateSecurityDescriptor, RtlSetDaclSecurityDescriptor,
    };
    pub use crate::locks::*;
    pub use crate::misc::*;
    pub use crate::nmr::*;
    pub use crate::pool::*;
    pub use crate::process::{
        KeQueryPerformanceCounter, PsGetProcessCreateTimeQuadPart, PsGetProcessExitStatus,
        PsGetProcessExitTime, PsSetCreateProcessNotifyRoutineEx,
    };
    pub use crate::rundown::*;
    pub use crate::security::*;
    pub use crate::workitem::*;
}

macro_rules! exports {
    ($( $module:literal : $sigmod:ident :: { $($name:ident),* $(,)? } )*) => {
        /// Every routine usersim implements.
        pub static EXPORTS: &[Export] = &[
            $($(
                Export {
                    module: $module,
                    name: stringify!($name),
                    address: {
                        let f: $sigmod::signatures::$name = all::$name;
                        f as *const c_void
                    },
                },
            )*)*
            Export { module: "ntoskrnl.exe", name: "DbgPrintEx", address: all::DbgPrintEx as *const c_void },
        ];
    };
}

exports! {
    "ntoskrnl.exe": wdm::{
        ExAllocatePool2, ExFreePoolWithTag, ExFreePool,
        ExInitializeRundownProtection, ExReInitializeRundownProtection, ExAcquireRundownProtection,
        ExReleaseRundownProtection, ExWaitForRundownProtectionRelease, ExRundownCompleted,
        ExAllocateCacheAwareRundownProtection, ExFreeCacheAwareRundownProtection,
        ExSizeOfRundownProtectionCacheAware, ExInitializeRundownProtectionCacheAware,
        ExAcquireRundownProtectionCacheAware, ExReleaseRundownProtectionCacheAware,
        ExWaitForRundownProtectionReleaseCacheAware, ExReInitializeRundownProtectionCacheAware,
        ExRundownCompletedCacheAware,
        ExAcquireSpinLockShared, ExReleaseSpinLockShared, ExAcquireSpinLockExclusive, ExReleaseSpinLockExclusive,
        ExInitializePushLock, ExAcquirePushLockExclusiveEx, ExAcquirePushLockSharedEx,
        ExReleasePushLockExclusiveEx, ExReleasePushLockSharedEx,
        KeGetCurrentIrql, KfRaiseIrql, KeLowerIrql,
        IoAllocateWorkItem, IoQueueWorkItem, IoFreeWorkItem,
        IoCreateDevice, IoDeleteDevice, IoCreateSymbolicLink, IoDeleteSymbolicLink, IofCompleteRequest,
        KeBugCheckEx, KeDelayExecutionThread,
        EtwRegister, EtwUnregister, EtwSetInformation, EtwWriteTransfer, EtwActivityIdControl,
    }
    "ntoskrnl.exe": ntddk::{
        KeEnterCriticalRegion, KeLeaveCriticalRegion, KeGetCurrentProcessorNumberEx,
        KeQueryActiveProcessorCountEx, KeExpandKernelStackAndCalloutEx,
        PsSetCreateProcessNotifyRoutineEx, KeQueryPerformanceCounter,
        PsGetProcessCreateTimeQuadPart, PsGetProcessExitStatus,
    }
    "ntoskrnl.exe": ntifs::{
        RtlCreateSecurityDescriptor, RtlCreateAcl, RtlAddAccessAllowedAce,
        RtlSetDaclSecurityDescriptor, ObSetSecurityObjectByPointer,
        PsGetProcessExitTime, PsReferencePrimaryToken, PsDereferencePrimaryToken,
        SeQueryInformationToken, RtlValidSid, RtlLengthSid, RtlCopySid,
    }
    "ksecdd.sys": ksecdd::{
        SecLookupAccountSid,
    }
    "NETIO.SYS": netioddk::{
        NmrRegisterProvider, NmrDeregisterProvider, NmrWaitForProviderDeregisterComplete,
        NmrProviderDetachClientComplete, NmrRegisterClient, NmrDeregisterClient,
        NmrWaitForClientDeregisterComplete, NmrClientAttachProvider, NmrClientDetachProviderComplete,
    }
}

/// Looks up an export by module (case-insensitive, as the loader matches DLL names) and name.
#[must_use]
pub fn find(module: &str, name: &str) -> Option<&'static Export> {
    EXPORTS
        .iter()
        .find(|e| e.module.eq_ignore_ascii_case(module) && e.name == name)
}
