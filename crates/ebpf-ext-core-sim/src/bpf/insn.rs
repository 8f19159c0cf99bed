//! BPF instructions as the core-sim handles them between parsing and the interpreter
//! ([`vm`](super::vm), which decodes the rest of the instruction set).

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
    /// Decodes one instruction as an object's text holds it (little-endian; `dst` in the low
    /// nibble of the second byte).
    pub(crate) fn from_bytes(bytes: [u8; 8]) -> Self {
        Insn {
            code: bytes[0],
            dst: bytes[1] & 0x0f,
            src: bytes[1] >> 4,
            off: i16::from_le_bytes([bytes[2], bytes[3]]),
            imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// The instruction class (low three bits of the opcode).
    pub(crate) fn class(self) -> u8 {
        self.code & 0x07
    }

    /// A helper call of `imm`.
    #[cfg(test)]
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
    #[cfg(test)]
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

/// `BPF_JMP` (64-bit jumps, calls and exit).
pub(crate) const CLASS_JMP: u8 = 0x05;
/// `BPF_JMP32`.
pub(crate) const CLASS_JMP32: u8 = 0x06;
