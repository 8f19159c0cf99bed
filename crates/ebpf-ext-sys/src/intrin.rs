//! IRQL intrinsics.
//!
//! In a driver, `KeGetCurrentIrql` is a header inline that reads CR8; on the host it calls the
//! `KeGetCurrentIrql` export, which usersim implements with a per-thread simulated IRQL. This
//! is the crate's only platform `cfg`.

use crate::ntdef::KIRQL;

/// `KeGetCurrentIrql()`: the current processor's IRQL.
///
/// # IRQL
/// Any level.
#[cfg(all(target_arch = "x86_64", target_os = "windows"))]
#[inline]
#[must_use]
pub fn KeGetCurrentIrql() -> KIRQL {
    let cr8: u64;
    // SAFETY: reading CR8 is allowed at ring 0 (driver code always runs there) and has no side
    // effects.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags));
    }
    // CR8 holds the IRQL in bits 0..4; the upper bits are reserved zero.
    #[expect(clippy::cast_possible_truncation, reason = "masked to 4 bits")]
    let irql = (cr8 & 0xF) as KIRQL;
    irql
}

/// `KeGetCurrentIrql()`: the current processor's IRQL.
///
/// # IRQL
/// Any level.
#[cfg(not(all(target_arch = "x86_64", target_os = "windows")))]
#[inline]
#[must_use]
pub fn KeGetCurrentIrql() -> KIRQL {
    // SAFETY: the export takes no arguments and only reads the calling thread's IRQL.
    unsafe { crate::wdm::KeGetCurrentIrql() }
}

/// `KeRaiseIrql(NewIrql, &OldIrql)`: raises the IRQL and returns the previous level (the C
/// macro expands to `KfRaiseIrql`).
///
/// # Safety
/// `new_irql` must be at or above the current IRQL, and the caller must lower it back with
/// [`crate::wdm::KeLowerIrql`] to the returned value on the same thread.
///
/// # IRQL
/// Any level; raising to a lower level is a bug check.
#[inline]
#[must_use]
pub unsafe fn KeRaiseIrql(new_irql: KIRQL) -> KIRQL {
    // SAFETY: the caller upholds the raise/lower pairing.
    unsafe { crate::wdm::KfRaiseIrql(new_irql) }
}
