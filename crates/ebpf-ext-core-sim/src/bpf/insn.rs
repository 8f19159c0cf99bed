//! BPF instructions as the core-sim handles them between parsing and the interpreter.

/// `BPF_LD | BPF_IMM | BPF_DW`: the two-slot 64-bit immediate load.
pub(crate) const LD_DW_IMM: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
pub(crate) const CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`.
pub(crate) const EXIT: u8 = 0x95;
/// `BPF_ALU64 | BPF_MOV | BPF_X`.
pub(crate) const MOV64_REG: u8 = 0xbf;

/// One 8-byte BPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    pub(crate) dst: u8,
    pub(crate) src: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

impl Insn {
    /// The instruction class (low three bits of the opcode).
    pub(crate) fn class(self) -> u8 {
        self.code & 0x07
    }

    /// Its encoding, little-endian.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[0] = self.code;
        bytes[1] = (self.dst & 0x0f) | (self.src << 4);
        bytes[2..4].copy_from_slice(&self.off.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.imm.to_le_bytes());
        bytes
    }

    /// A helper call of `imm`.
    pub(crate) fn call(imm: i32) -> Self {
        Insn {
            code: CALL,
            dst: 0,
            src: 0,
            off: 0,
            imm,
        }
    }

    /// `dst = src` (64-bit).
    pub(crate) fn mov64(dst: u8, src: u8) -> Self {
        Insn {
            code: MOV64_REG,
            dst,
            src,
            off: 0,
            imm: 0,
        }
    }
}
