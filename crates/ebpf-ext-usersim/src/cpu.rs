//! IRQL, critical regions and processor numbers.
//!
//! Each thread has a simulated IRQL. A thread's processor number is assigned round-robin the
//! first time it asks and does not change while the thread stays bound to the same kernel, so
//! it is stable while the thread is at DISPATCH_LEVEL, as the kernel guarantees.

use core::sync::atomic::Ordering;

use ebpf_ext_sys::ntddk::ALL_PROCESSOR_GROUPS;
use ebpf_ext_sys::ntdef::{KIRQL, PROCESSOR_NUMBER};
use ebpf_ext_sys::wdm::{APC_LEVEL, HIGH_LEVEL, IRQL_NOT_GREATER_OR_EQUAL, IRQL_NOT_LESS_OR_EQUAL};

use crate::kernel::{
    THREAD, bugcheck, current_irql, require_bound, require_irql, set_irql, with_kernel,
};

/// Bug check `APC_INDEX_MISMATCH`: unbalanced critical region.
const APC_INDEX_MISMATCH: u32 = 0x01;

/// Sets the calling thread's simulated IRQL directly (test set-up, for example to call a
/// routine "from a DPC").
///
/// # Panics
/// If `irql` is above HIGH_LEVEL.
pub fn set_current_irql(irql: KIRQL) {
    assert!(irql <= HIGH_LEVEL, "IRQL {irql} does not exist on x64");
    set_irql(irql);
}

/// Depth of the calling thread's critical region nesting.
#[must_use]
pub fn critical_region_depth() -> u32 {
    THREAD.with(|t| t.critical_region.get())
}

/// The calling thread's simulated processor index.
pub(crate) fn current_processor(api: &str) -> u32 {
    THREAD.with(|t| {
        if let Some(p) = t.processor.get() {
            return p;
        }
        let p = with_kernel(api, |k| {
            k.next_processor.fetch_add(1, Ordering::Relaxed) % k.config.processor_count
        });
        t.processor.set(Some(p));
        p
    })
}

pub(crate) fn processor_count(api: &str) -> u32 {
    with_kernel(api, |k| k.config.processor_count)
}

/// `KeGetCurrentIrql`.
#[unsafe(no_mangle)]
pub extern "win64" fn KeGetCurrentIrql() -> KIRQL {
    require_bound("KeGetCurrentIrql");
    current_irql()
}

/// `KfRaiseIrql`.
#[unsafe(no_mangle)]
pub extern "win64" fn KfRaiseIrql(NewIrql: KIRQL) -> KIRQL {
    require_bound("KfRaiseIrql");
    let old = current_irql();
    if NewIrql < old || NewIrql > HIGH_LEVEL {
        bugcheck(
            "KfRaiseIrql",
            IRQL_NOT_GREATER_OR_EQUAL,
            [u64::from(old), u64::from(NewIrql), 0, 0],
            &format!("raise from IRQL {old} to lower IRQL {NewIrql}"),
        );
    }
    if NewIrql > old {
        with_kernel("KfRaiseIrql", |k| {
            k.irql_raises.fetch_add(1, Ordering::Relaxed)
        });
    }
    set_irql(NewIrql);
    old
}

/// `KeLowerIrql`.
#[unsafe(no_mangle)]
pub extern "win64" fn KeLowerIrql(NewIrql: KIRQL) {
    require_bound("KeLowerIrql");
    let old = current_irql();
    if NewIrql > old {
        bugcheck(
            "KeLowerIrql",
            IRQL_NOT_LESS_OR_EQUAL,
            [u64::from(old), u64::from(NewIrql), 0, 0],
            &format!("lower from IRQL {old} to higher IRQL {NewIrql}"),
        );
    }
    set_irql(NewIrql);
}

/// `KeEnterCriticalRegion`.
#[unsafe(no_mangle)]
pub extern "win64" fn KeEnterCriticalRegion() {
    require_bound("KeEnterCriticalRegion");
    require_irql("KeEnterCriticalRegion", APC_LEVEL);
    THREAD.with(|t| t.critical_region.set(t.critical_region.get() + 1));
}

/// `KeLeaveCriticalRegion`.
#[unsafe(no_mangle)]
pub extern "win64" fn KeLeaveCriticalRegion() {
    require_bound("KeLeaveCriticalRegion");
    require_irql("KeLeaveCriticalRegion", APC_LEVEL);
    let depth = critical_region_depth();
    if depth == 0 {
        bugcheck(
            "KeLeaveCriticalRegion",
            APC_INDEX_MISMATCH,
            [0; 4],
            "KeLeaveCriticalRegion without a matching KeEnterCriticalRegion",
        );
    }
    THREAD.with(|t| t.critical_region.set(depth - 1));
}

/// `KeGetCurrentProcessorNumberEx`.
///
/// # Safety
/// Kernel routine; `ProcNumber` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn KeGetCurrentProcessorNumberEx(
    ProcNumber: *mut PROCESSOR_NUMBER,
) -> u32 {
    let index = current_processor("KeGetCurrentProcessorNumberEx");
    if !ProcNumber.is_null() {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "one group of at most 64 processors"
        )]
        let number = PROCESSOR_NUMBER {
            Group: 0,
            Number: index as u8,
            Reserved: 0,
        };
        // SAFETY: the caller passes a writable PROCESSOR_NUMBER.
        unsafe { ProcNumber.write(number) };
    }
    index
}

/// `KeQueryActiveProcessorCountEx`.
#[unsafe(no_mangle)]
pub extern "win64" fn KeQueryActiveProcessorCountEx(GroupNumber: u16) -> u32 {
    let count = processor_count("KeQueryActiveProcessorCountEx");
    if GroupNumber == 0 || GroupNumber == ALL_PROCESSOR_GROUPS {
        count
    } else {
        0
    }
}
