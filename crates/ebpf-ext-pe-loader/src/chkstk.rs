//! The loader's `__chkstk`, supplied to images that import it from `ntoskrnl.exe`.
//!
//! MSVC x64 convention: the frame size is in RAX; every page between the caller's stack
//! pointer and `RSP - RAX` is touched, top down, so that a guard page is hit in order (on
//! Windows it grows the stack; here it reports a stack overflow). Only R10, R11 and the
//! flags change; RSP is not moved (the caller subtracts RAX itself).

use core::arch::global_asm;

global_asm!(
    ".pushsection .text.ebpf_ext_pe_loader_chkstk,\"ax\",@progbits",
    ".globl ebpf_ext_pe_loader_chkstk",
    ".hidden ebpf_ext_pe_loader_chkstk",
    ".globl ebpf_ext_pe_loader_chkstk_end",
    ".hidden ebpf_ext_pe_loader_chkstk_end",
    ".p2align 4",
    "ebpf_ext_pe_loader_chkstk:",
    // r10 = lowest address the caller will use: its RSP (above our return address) - RAX,
    // clamped at 0 on underflow.
    "    lea r10, [rsp + 8]",
    "    sub r10, rax",
    "    jae 2f",
    "    xor r10, r10",
    "2:",
    "    and r10, -0x1000",
    // r11 = the page holding the caller's RSP; touch each page below it down to r10.
    "    lea r11, [rsp + 8]",
    "    and r11, -0x1000",
    "3:",
    "    cmp r11, r10",
    "    jbe 4f",
    "    sub r11, 0x1000",
    "    test byte ptr [r11], 0",
    "    jmp 3b",
    "4:",
    "    ret",
    "ebpf_ext_pe_loader_chkstk_end:",
    "    int3",
    ".popsection",
);

unsafe extern "C" {
    /// The routine above; not callable from Rust (it takes its argument in RAX).
    safe fn ebpf_ext_pe_loader_chkstk();
    /// The byte after the routine's last instruction.
    safe static ebpf_ext_pe_loader_chkstk_end: u8;
}

/// Address of the loader's `__chkstk`.
pub(crate) fn address() -> usize {
    ebpf_ext_pe_loader_chkstk as *const () as usize
}

/// Whether `rip` is inside the loader's `__chkstk`.
pub(crate) fn contains(rip: usize) -> bool {
    let end = (&raw const ebpf_ext_pe_loader_chkstk_end) as usize;
    (address()..end).contains(&rip)
}

#[cfg(test)]
mod tests {
    use core::arch::asm;

    use super::*;

    /// Calls `__chkstk` with the general-purpose registers it must preserve holding a
    /// pattern, and checks each comes back unchanged (RBX and RBP cannot be operands; the
    /// routine does not name them).
    fn probe(size: u64) {
        let pattern = |i: u64| 0x1111_1111_1111_1111_u64.wrapping_mul(i);
        let (mut rax, mut rcx, mut rdx, mut rsi, mut rdi) =
            (size, pattern(3), pattern(4), pattern(5), pattern(6));
        let (mut r8, mut r9, mut r12, mut r13) = (pattern(7), pattern(8), pattern(9), pattern(10));
        let (rsp_before, rsp_after): (u64, u64);
        // SAFETY: the routine only reads stack pages between RSP and RSP - size, which the
        // test thread's stack has (the sizes stay well below its 2 MiB); it clobbers R10 and
        // R11 (declared) and the flags.
        unsafe {
            asm!(
                "mov r14, rsp",
                "call {f}",
                "mov r15, rsp",
                f = sym ebpf_ext_pe_loader_chkstk,
                out("r14") rsp_before,
                out("r15") rsp_after,
                inout("rax") rax, inout("rcx") rcx, inout("rdx") rdx,
                inout("rsi") rsi, inout("rdi") rdi, inout("r8") r8, inout("r9") r9,
                inout("r12") r12, inout("r13") r13,
                out("r10") _, out("r11") _,
            );
        }
        assert_eq!(rsp_before, rsp_after);
        assert_eq!(
            [rax, rcx, rdx, rsi, rdi, r8, r9, r12, r13],
            [
                size,
                pattern(3),
                pattern(4),
                pattern(5),
                pattern(6),
                pattern(7),
                pattern(8),
                pattern(9),
                pattern(10)
            ]
        );
    }

    #[test]
    fn preserves_registers_for_small_and_large_frames() {
        for size in [0, 8, 0xFFF, 0x1000, 0x1001, 0x5000, 0x4_0000] {
            probe(size);
        }
    }

    #[test]
    fn range_covers_the_routine() {
        assert!(contains(address()));
        assert!(!contains(address().wrapping_sub(1)));
    }
}
