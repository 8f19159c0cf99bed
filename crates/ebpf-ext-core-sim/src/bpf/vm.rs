//! core-sim's BPF interpreter: the instruction set as RFC 9669 defines it, ISA version 4
//! included (signed division and modulo, sign-extending moves and loads, byte swaps, `gotol`,
//! atomic operations), run over raw addresses.
//!
//! - **Memory.** Every load, store and atomic operation must lie wholly inside the stack or
//!   one of the regions the caller names (the context, the data, map values, kept values);
//!   anything else (and a store into read-only data) ends the run with a fault naming the
//!   instruction. Memory is read and written through raw pointers only: no Rust reference to
//!   program memory is held across a run, so a helper may write what the program reads.
//!   Programs on other threads may use the same map values at the same time, as programs on
//!   other processors do in the kernel: those races are the programs' (the core takes no
//!   lock either), and they are data races by Rust's rules as they are by C's.
//! - **Stack.** [`FRAME_SIZE`] bytes per frame, [`MAX_FRAMES`] frames: `r10` is the top of
//!   the running function's frame, and a local call (`call` with `src` 1) moves it down one
//!   frame and keeps `r6`–`r9` for the caller, as the core's interpreter does.
//! - **Helpers.** A helper call (`call` with `src` 0) passes its immediate and `r1`–`r5` to
//!   the caller's function; `None` from it ends the run at once with `r0` 0 (a fault the
//!   helper recorded, or a successful tail call: the caller returns, as native code does).
//! - **Termination.** A run executes at most [`MAX_STEPS`] instructions. The core's verifier
//!   proves every loop bounded; core-sim has no verifier, so a loop it would refuse ends in
//!   a fault instead of hanging the test.
//!
//! Arithmetic follows the RFC where C leaves a choice: division by zero gives 0, modulo by
//! zero leaves the dividend (its low half, zero-extended, in 32-bit arithmetic), the most
//! negative value divided by -1 is itself and its remainder 0, shift counts are masked to the
//! operand width, and 32-bit results are zero-extended.

use core::cell::UnsafeCell;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::insn::Insn;

/// Bytes of one stack frame: the program's, and each local function's.
pub(crate) const FRAME_SIZE: u64 = 512;
/// Frames at most: the program and seven nested local calls (the verifier's limit).
pub(crate) const MAX_FRAMES: usize = 8;
/// Instructions one run may execute.
pub(crate) const MAX_STEPS: u64 = 1 << 24;

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;

const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;

const SIZE_W: u8 = 0x00;
const SIZE_H: u8 = 0x08;
const SIZE_B: u8 = 0x10;
const SIZE_DW: u8 = 0x18;

/// The source bit: the operand is `src`, not the immediate.
const SOURCE_X: u8 = 0x08;

const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const MUL: u8 = 0x20;
const DIV: u8 = 0x30;
const OR: u8 = 0x40;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const NEG: u8 = 0x80;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const ARSH: u8 = 0xc0;
const END: u8 = 0xd0;

const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JGE: u8 = 0x30;
const JSET: u8 = 0x40;
const JNE: u8 = 0x50;
const JSGT: u8 = 0x60;
const JSGE: u8 = 0x70;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const JLT: u8 = 0xa0;
const JLE: u8 = 0xb0;
const JSLT: u8 = 0xc0;
const JSLE: u8 = 0xd0;

/// Atomic operations (`imm` of an atomic store), before the fetch bit.
const ATOMIC_FETCH: i32 = 0x01;
const ATOMIC_XCHG: i32 = 0xe1;
const ATOMIC_CMPXCHG: i32 = 0xf1;

/// Bytes an access of `code`'s size field moves.
fn access_size(code: u8) -> u64 {
    match code & 0x18 {
        SIZE_W => 4,
        SIZE_H => 2,
        SIZE_B => 1,
        _ => 8,
    }
}

/// Whether the instruction at `at` is the second half of a 64-bit immediate load.
fn second_halves(insns: &[Insn]) -> Vec<bool> {
    let mut halves = vec![false; insns.len()];
    let mut at = 0;
    while at < insns.len() {
        if insns[at].code == CLASS_LD | MODE_IMM | SIZE_DW {
            if let Some(half) = halves.get_mut(at + 1) {
                *half = true;
            }
            at += 2;
        } else {
            at += 1;
        }
    }
    halves
}

/// Checks what the interpreter relies on: known opcodes and operands, registers `r0`–`r10`
/// (`r10` never written), complete 64-bit immediate loads, jump and call targets inside the
/// program and not inside such a load, no division or modulo by an immediate zero, shift
/// counts within the operand, and a last instruction that cannot fall off the end.
///
/// # Errors
/// The first problem, naming its instruction.
#[expect(
    clippy::too_many_lines,
    reason = "one match over the instruction classes"
)]
pub(crate) fn verify(insns: &[Insn]) -> Result<(), String> {
    if insns.is_empty() {
        return Err("no instructions".into());
    }
    let halves = second_halves(insns);
    let target = |at: usize, relative: i64| -> Result<(), String> {
        let to = i64::try_from(at)
            .ok()
            .and_then(|at| at.checked_add(1)?.checked_add(relative));
        match to.and_then(|to| usize::try_from(to).ok()) {
            Some(to) if to < insns.len() && !halves[to] => Ok(()),
            _ => Err(format!(
                "instruction {at}: jumps to {}, outside the program or into a 64-bit load",
                to.map_or_else(|| "nowhere".to_owned(), |to| to.to_string())
            )),
        }
    };
    let mut at = 0;
    while at < insns.len() {
        let insn = insns[at];
        let bad = |what: &str| {
            Err(format!(
                "instruction {at}: {what} (opcode {:#04x})",
                insn.code
            ))
        };
        if insn.dst > 10 || insn.src > 10 {
            return bad("a register beyond r10");
        }
        let op = insn.code & 0xf0;
        match insn.class() {
            CLASS_LD => {
                if insn.code != CLASS_LD | MODE_IMM | SIZE_DW || insn.src != 0 {
                    return bad("an unsupported load");
                }
                let Some(next) = insns.get(at + 1) else {
                    return bad("a 64-bit load without its second half");
                };
                if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                    return bad("a 64-bit load with a malformed second half");
                }
                if insn.dst == 10 {
                    return bad("a write to r10");
                }
                at += 2;
                continue;
            }
            CLASS_LDX => {
                let mode = insn.code & 0xe0;
                let sign_extends_dw = mode == MODE_MEMSX && insn.code & 0x18 == SIZE_DW;
                if !(mode == MODE_MEM || mode == MODE_MEMSX) || sign_extends_dw {
                    return bad("an unsupported load");
                }
                if insn.dst == 10 {
                    return bad("a write to r10");
                }
            }
            CLASS_ST if insn.code & 0xe0 != MODE_MEM => return bad("an unsupported store"),
            CLASS_STX => match insn.code & 0xe0 {
                MODE_MEM => {}
                MODE_ATOMIC => {
                    let size = insn.code & 0x18;
                    let operation = insn.imm & !ATOMIC_FETCH;
                    let arithmetic = [ADD, OR, AND, XOR]
                        .iter()
                        .any(|&o| i32::from(o) == operation);
                    let known = arithmetic || insn.imm == ATOMIC_XCHG || insn.imm == ATOMIC_CMPXCHG;
                    if !(size == SIZE_W || size == SIZE_DW) || !known {
                        return bad("an unsupported atomic operation");
                    }
                    let fetches_into_src =
                        insn.imm != ATOMIC_CMPXCHG && insn.imm & ATOMIC_FETCH != 0;
                    if fetches_into_src && insn.src == 10 {
                        return bad("a write to r10");
                    }
                }
                _ => return bad("an unsupported store"),
            },
            CLASS_ALU | CLASS_ALU64 => verify_alu(insn, at)?,
            CLASS_JMP | CLASS_JMP32 => {
                let jmp32 = insn.class() == CLASS_JMP32;
                if matches!(op, JA | CALL | EXIT) && insn.code & SOURCE_X != 0 {
                    return bad("an unknown jump");
                }
                match op {
                    JA if jmp32 => target(at, i64::from(insn.imm))?,
                    JA => target(at, i64::from(insn.off))?,
                    CALL if !jmp32 => match insn.src {
                        0 => {}
                        1 => target(at, i64::from(insn.imm))?,
                        _ => return bad("an unresolved call"),
                    },
                    EXIT if !jmp32 => {}
                    JEQ | JGT | JGE | JSET | JNE | JSGT | JSGE | JLT | JLE | JSLT | JSLE => {
                        target(at, i64::from(insn.off))?;
                    }
                    _ => return bad("an unknown jump"),
                }
            }
            _ => {}
        }
        at += 1;
    }
    let last = insns[insns.len() - 1];
    let ends = matches!(last.code, 0x95 | 0x05 | 0x06) && !halves[insns.len() - 1];
    if !ends {
        return Err(format!(
            "instruction {}: the last instruction is neither exit nor a jump",
            insns.len() - 1
        ));
    }
    Ok(())
}

/// The arithmetic part of [`verify`].
fn verify_alu(insn: Insn, at: usize) -> Result<(), String> {
    let bad = |what: &str| {
        Err(format!(
            "instruction {at}: {what} (opcode {:#04x})",
            insn.code
        ))
    };
    let alu64 = insn.class() == CLASS_ALU64;
    let register = insn.code & SOURCE_X != 0;
    let width: i32 = if alu64 { 64 } else { 32 };
    if insn.dst == 10 {
        return bad("a write to r10");
    }
    match insn.code & 0xf0 {
        LSH | RSH | ARSH if insn.off != 0 => return bad("an unknown arithmetic instruction"),
        LSH | RSH | ARSH if !register && !(0..width).contains(&insn.imm) => {
            return bad("a shift by more than the operand's width");
        }
        LSH | RSH | ARSH => {}
        ADD | SUB | MUL | OR | AND | XOR | MOV if insn.off == 0 => {}
        DIV | MOD if insn.off == 0 || insn.off == 1 => {
            if !register && insn.imm == 0 {
                return bad("a division or modulo by zero");
            }
        }
        NEG if !register && insn.off == 0 => {}
        MOV if register && (insn.off == 8 || insn.off == 16 || (alu64 && insn.off == 32)) => {}
        END if matches!(insn.imm, 16 | 32 | 64) && !(alu64 && register) => {}
        _ => return bad("an unknown arithmetic instruction"),
    }
    Ok(())
}

/// The stack of one run: [`MAX_FRAMES`] frames of [`FRAME_SIZE`] bytes, zeroed.
pub(crate) struct Stack {
    words: Box<[UnsafeCell<u64>]>,
}

impl Stack {
    /// A zeroed stack.
    pub(crate) fn new() -> Self {
        #[expect(clippy::cast_possible_truncation, reason = "a few KiB")]
        let words = MAX_FRAMES * FRAME_SIZE as usize / 8;
        Stack {
            words: (0..words).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    /// Its addresses.
    pub(crate) fn range(&self) -> Range<u64> {
        let start = UnsafeCell::raw_get(self.words.as_ptr()) as u64;
        start..start + (self.words.len() * 8) as u64
    }
}

/// Values that come and go (a custom map's): which addresses hold one now.
pub(crate) trait ValueSet {
    /// Whether `[address, address + len)` lies wholly in one value.
    fn holds(&self, address: u64, len: u64) -> bool;
}

/// Memory a program may reach besides its stack.
#[derive(Clone)]
pub(crate) enum Region<'a> {
    /// `[range.start, range.end)`.
    Flat { range: Range<u64>, writable: bool },
    /// `count` values of `size` bytes, one every `stride` bytes from `start`: a map's values.
    Strided {
        start: u64,
        stride: u64,
        size: u64,
        count: u64,
        writable: bool,
    },
    /// Writable values looked up at each access.
    Values(&'a dyn ValueSet),
}

impl Region<'_> {
    /// A writable range.
    pub(crate) fn flat(range: Range<u64>) -> Self {
        Region::Flat {
            range,
            writable: true,
        }
    }

    /// Whether `[address, address + len)` lies wholly in it (in one value of a strided
    /// region): `Some(writable)`, or `None`.
    pub(crate) fn holds(&self, address: u64, len: u64) -> Option<bool> {
        let end = address.checked_add(len)?;
        match *self {
            Region::Flat {
                ref range,
                writable,
            } => (range.start < range.end && range.start <= address && end <= range.end)
                .then_some(writable),
            Region::Strided {
                start,
                stride,
                size,
                count,
                writable,
            } => {
                let offset = address.checked_sub(start)?;
                let (index, within) = (offset.checked_div(stride)?, offset % stride);
                (size > 0 && index < count && within.checked_add(len)? <= size).then_some(writable)
            }
            Region::Values(values) => values.holds(address, len).then_some(true),
        }
    }
}

/// What a run may touch.
pub(crate) struct Machine<'a> {
    /// The program, checked by [`verify`].
    pub(crate) code: &'a [Insn],
    /// The run's stack.
    pub(crate) stack: &'a Stack,
    /// Everything else the program may load from (and store to, where writable).
    pub(crate) regions: &'a [Region<'a>],
    /// Instructions the run may execute ([`MAX_STEPS`] for programs).
    pub(crate) max_steps: u64,
}

impl Machine<'_> {
    /// The address of `[address, address + size)` if it lies in the stack or one region (a
    /// writable one for a store).
    fn reach(
        &self,
        at: usize,
        address: u64,
        size: u64,
        write: bool,
        what: &str,
    ) -> Result<*mut u8, String> {
        let stack = Region::flat(self.stack.range());
        let found = core::iter::once(&stack)
            .chain(self.regions)
            .find_map(|region| region.holds(address, size));
        match found {
            Some(false) if write => Err(format!(
                "instruction {at}: {what} of {size} bytes into read-only data at {address:#x}"
            )),
            #[expect(clippy::cast_possible_truncation, reason = "64-bit host")]
            Some(_) => Ok(core::ptr::with_exposed_provenance_mut(address as usize)),
            None => Err(format!(
                "instruction {at}: out of bounds {what} of {size} bytes at {address:#x}"
            )),
        }
    }

    /// Loads `size` bytes at `address`, zero-extended.
    fn load(&self, at: usize, address: u64, size: u64) -> Result<u64, String> {
        let p = self.reach(at, address, size, false, "load")?;
        Ok(match size {
            // SAFETY: inside a region the caller of `run` promised readable for the run,
            // `size` bytes long (checked).
            1 => u64::from(unsafe { p.read() }),
            // SAFETY: as above; unaligned.
            2 => u64::from(unsafe { p.cast::<u16>().read_unaligned() }),
            // SAFETY: as above.
            4 => u64::from(unsafe { p.cast::<u32>().read_unaligned() }),
            // SAFETY: as above.
            _ => unsafe { p.cast::<u64>().read_unaligned() },
        })
    }

    /// Stores the low `size` bytes of `value` at `address`.
    fn store(&self, at: usize, address: u64, size: u64, value: u64) -> Result<(), String> {
        let p = self.reach(at, address, size, true, "store")?;
        #[expect(clippy::cast_possible_truncation, reason = "the low bytes are stored")]
        match size {
            // SAFETY: inside a region the caller of `run` promised writable for the run,
            // `size` bytes long (checked).
            1 => unsafe { p.write(value as u8) },
            // SAFETY: as above; unaligned.
            2 => unsafe { p.cast::<u16>().write_unaligned(value as u16) },
            // SAFETY: as above.
            4 => unsafe { p.cast::<u32>().write_unaligned(value as u32) },
            // SAFETY: as above.
            _ => unsafe { p.cast::<u64>().write_unaligned(value) },
        }
        Ok(())
    }

    /// An atomic operation (`insn.imm`) of `size` bytes at `address` with `value`; `r0` is
    /// the comparand of a compare-exchange. The old value.
    fn atomic(
        &self,
        at: usize,
        insn: Insn,
        address: u64,
        value: u64,
        r0: u64,
    ) -> Result<u64, String> {
        let size = access_size(insn.code);
        let p = self.reach(at, address, size, true, "atomic operation")?;
        if !address.is_multiple_of(size) {
            return Err(format!(
                "instruction {at}: a misaligned atomic operation at {address:#x}"
            ));
        }
        /// The operation on `cell` (an `AtomicU64` or `AtomicU32`): its old value.
        macro_rules! apply {
            ($cell:expr, $value:expr, $r0:expr) => {{
                let (cell, order) = ($cell, Ordering::SeqCst);
                match insn.imm {
                    ATOMIC_XCHG => cell.swap($value, order),
                    ATOMIC_CMPXCHG => cell
                        .compare_exchange($r0, $value, order, order)
                        .unwrap_or_else(|seen| seen),
                    _ => match u8::try_from(insn.imm & !ATOMIC_FETCH).unwrap_or(u8::MAX) {
                        ADD => cell.fetch_add($value, order),
                        OR => cell.fetch_or($value, order),
                        AND => cell.fetch_and($value, order),
                        _ => cell.fetch_xor($value, order),
                    },
                }
            }};
        }
        if size == 8 {
            // SAFETY: inside a region the caller of `run` promised writable for the run,
            // aligned (checked). A plain access to the same bytes by a program on another
            // thread races with it, as it would in the kernel (see the module docs).
            let cell = unsafe { AtomicU64::from_ptr(p.cast()) };
            Ok(apply!(cell, value, r0))
        } else {
            // SAFETY: as above.
            let cell = unsafe { AtomicU32::from_ptr(p.cast()) };
            #[expect(clippy::cast_possible_truncation, reason = "a 32-bit operation")]
            let (value, r0) = (value as u32, r0 as u32);
            Ok(u64::from(apply!(cell, value, r0)))
        }
    }
}

/// Defines `$name(op, dst, src, off)`: `dst OP src` in the arithmetic of `$u` (shift counts
/// masked with `$mask`; `off` 1 makes division and modulo signed, and a non-zero `off` makes a
/// move sign-extend the low `off` bits of `src`).
macro_rules! arithmetic {
    ($(#[$doc:meta])* $name:ident, $u:ty, $mask:literal) => {
        $(#[$doc])*
        fn $name(op: u8, dst: $u, src: $u, off: i16) -> $u {
            match op {
                ADD => dst.wrapping_add(src),
                SUB => dst.wrapping_sub(src),
                MUL => dst.wrapping_mul(src),
                DIV if src == 0 => 0,
                DIV if off == 1 => dst
                    .cast_signed()
                    .wrapping_div(src.cast_signed())
                    .cast_unsigned(),
                DIV => dst / src,
                MOD if src == 0 => dst,
                MOD if off == 1 => dst
                    .cast_signed()
                    .wrapping_rem(src.cast_signed())
                    .cast_unsigned(),
                MOD => dst % src,
                OR => dst | src,
                AND => dst & src,
                XOR => dst ^ src,
                LSH => dst << (src & $mask),
                RSH => dst >> (src & $mask),
                ARSH => (dst.cast_signed() >> (src & $mask)).cast_unsigned(),
                NEG => dst.wrapping_neg(),
                MOV if off == 0 => src,
                MOV => {
                    // `off` is 8, 16 or (64-bit) 32: verified.
                    let unused = <$u>::BITS - u32::from(off.unsigned_abs());
                    ((src << unused).cast_signed() >> unused).cast_unsigned()
                }
                _ => unreachable!("verified"),
            }
        }
    };
}

arithmetic!(
    /// `dst OP src` in 64-bit arithmetic.
    alu64,
    u64,
    63
);
arithmetic!(
    /// `dst OP src` in 32-bit arithmetic.
    alu32,
    u32,
    31
);

/// A byte-order conversion: `to_big` swaps (the host is little-endian), else truncates.
fn end(dst: u64, width: i32, to_big: bool) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low bytes are converted"
    )]
    match (width, to_big) {
        (16, true) => u64::from((dst as u16).swap_bytes()),
        (16, false) => u64::from(dst as u16),
        (32, true) => u64::from((dst as u32).swap_bytes()),
        (32, false) => u64::from(dst as u32),
        (_, true) => dst.swap_bytes(),
        (_, false) => dst,
    }
}

/// Whether a conditional jump's condition holds.
fn holds(op: u8, a: u64, b: u64, jmp32: bool) -> bool {
    #[expect(clippy::cast_possible_truncation, reason = "32-bit comparisons")]
    let (a, b, sa, sb) = if jmp32 {
        let (a, b) = (u64::from(a as u32), u64::from(b as u32));
        (
            a,
            b,
            i64::from((a as u32).cast_signed()),
            i64::from((b as u32).cast_signed()),
        )
    } else {
        (a, b, a.cast_signed(), b.cast_signed())
    };
    match op {
        JEQ => a == b,
        JGT => a > b,
        JGE => a >= b,
        JSET => a & b != 0,
        JNE => a != b,
        JSGT => sa > sb,
        JSGE => sa >= sb,
        JLT => a < b,
        JLE => a <= b,
        JSLT => sa < sb,
        _ => sa <= sb,
    }
}

/// `pc + 1 + relative`, within the verified program.
fn jump(pc: usize, relative: i64) -> usize {
    let to = i64::try_from(pc).unwrap_or(i64::MAX) + 1 + relative;
    usize::try_from(to).unwrap_or(usize::MAX)
}

/// Runs `machine.code` with `r1` and `r10` at the top of the stack; `call` runs helper
/// `imm` with `r1`–`r5` (`None`: the run ends now, returning 0). The program's `r0`.
///
/// # Errors
/// A fault, naming the instruction: an access outside the machine's memory, a misaligned
/// atomic operation, too many nested calls, or more than `machine.max_steps` instructions.
///
/// # Safety
/// `machine.code` passed [`verify`], and every region in `machine.regions` is memory valid
/// for reads (and writes, where writable) for the whole run. Programs on other threads may
/// use the same bytes meanwhile: those races are the programs' (see the module docs).
#[expect(
    clippy::too_many_lines,
    reason = "one match over the instruction classes"
)]
pub(crate) unsafe fn run(
    machine: &Machine<'_>,
    r1: u64,
    call: &mut dyn FnMut(u32, [u64; 5]) -> Option<u64>,
) -> Result<u64, String> {
    let code = machine.code;
    let mut reg = [0u64; 11];
    reg[1] = r1;
    reg[10] = machine.stack.range().end;
    // Per active local call: where to return, the caller's r6–r9 and r10.
    let mut frames: Vec<(usize, [u64; 5])> = Vec::new();
    let mut pc = 0usize;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > machine.max_steps {
            return Err(format!(
                "instruction {pc}: more than {} instructions in one run (a loop the verifier \
                 would refuse)",
                machine.max_steps
            ));
        }
        let Some(&insn) = code.get(pc) else {
            return Err(format!("instruction {pc}: past the end of the program"));
        };
        let at = pc;
        pc += 1;
        let (dst, src) = (usize::from(insn.dst), usize::from(insn.src));
        let op = insn.code & 0xf0;
        let register = insn.code & SOURCE_X != 0;
        let imm64 = i64::from(insn.imm).cast_unsigned();
        match insn.class() {
            CLASS_LD => {
                let high = code.get(pc).map_or(0, |next| next.imm.cast_unsigned());
                reg[dst] = u64::from(insn.imm.cast_unsigned()) | u64::from(high) << 32;
                pc += 1;
            }
            CLASS_LDX => {
                let address = reg[src].wrapping_add(i64::from(insn.off).cast_unsigned());
                let size = access_size(insn.code);
                let value = machine.load(at, address, size)?;
                reg[dst] = if insn.code & 0xe0 == MODE_MEMSX {
                    #[expect(clippy::cast_possible_truncation, reason = "sign-extends the load")]
                    match size {
                        1 => i64::from(value as i8).cast_unsigned(),
                        2 => i64::from(value as i16).cast_unsigned(),
                        _ => i64::from(value as i32).cast_unsigned(),
                    }
                } else {
                    value
                };
            }
            CLASS_ST => {
                let address = reg[dst].wrapping_add(i64::from(insn.off).cast_unsigned());
                machine.store(at, address, access_size(insn.code), imm64)?;
            }
            CLASS_STX => {
                let address = reg[dst].wrapping_add(i64::from(insn.off).cast_unsigned());
                if insn.code & 0xe0 == MODE_ATOMIC {
                    let old = machine.atomic(at, insn, address, reg[src], reg[0])?;
                    if insn.imm == ATOMIC_CMPXCHG {
                        reg[0] = old;
                    } else if insn.imm & ATOMIC_FETCH != 0 {
                        reg[src] = old;
                    }
                } else {
                    machine.store(at, address, access_size(insn.code), reg[src])?;
                }
            }
            CLASS_ALU64 if op == END => reg[dst] = end(reg[dst], insn.imm, true),
            CLASS_ALU64 => {
                let operand = if register { reg[src] } else { imm64 };
                reg[dst] = alu64(op, reg[dst], operand, insn.off);
            }
            CLASS_ALU if op == END => reg[dst] = end(reg[dst], insn.imm, register),
            CLASS_ALU => {
                #[expect(clippy::cast_possible_truncation, reason = "32-bit arithmetic")]
                let operand = if register {
                    reg[src] as u32
                } else {
                    insn.imm.cast_unsigned()
                };
                #[expect(clippy::cast_possible_truncation, reason = "32-bit arithmetic")]
                let result = alu32(op, reg[dst] as u32, operand, insn.off);
                reg[dst] = u64::from(result);
            }
            class => {
                let jmp32 = class == CLASS_JMP32;
                match op {
                    JA if jmp32 => pc = jump(at, i64::from(insn.imm)),
                    JA => pc = jump(at, i64::from(insn.off)),
                    CALL if insn.src == 1 => {
                        if frames.len() + 1 >= MAX_FRAMES {
                            return Err(format!(
                                "instruction {at}: a local call beyond {MAX_FRAMES} frames"
                            ));
                        }
                        frames.push((pc, [reg[6], reg[7], reg[8], reg[9], reg[10]]));
                        reg[10] -= FRAME_SIZE;
                        pc = jump(at, i64::from(insn.imm));
                    }
                    CALL => {
                        let args = [reg[1], reg[2], reg[3], reg[4], reg[5]];
                        match call(insn.imm.cast_unsigned(), args) {
                            Some(r0) => reg[0] = r0,
                            None => return Ok(0),
                        }
                    }
                    EXIT => match frames.pop() {
                        None => return Ok(reg[0]),
                        Some((back, [r6, r7, r8, r9, r10])) => {
                            [reg[6], reg[7], reg[8], reg[9], reg[10]] = [r6, r7, r8, r9, r10];
                            pc = back;
                        }
                    },
                    _ => {
                        let b = if register { reg[src] } else { imm64 };
                        if holds(op, reg[dst], b, jmp32) {
                            pc = jump(at, i64::from(insn.off));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn exit() -> Insn {
        op(0x95, 0, 0, 0, 0)
    }

    /// `dst = value` (two slots).
    fn lddw(dst: u8, value: u64) -> [Insn; 2] {
        #[expect(clippy::cast_possible_truncation, reason = "the halves of lddw")]
        let (low, high) = (value as u32, (value >> 32) as u32);
        [
            op(0x18, dst, 0, 0, low.cast_signed()),
            op(0, 0, 0, 0, high.cast_signed()),
        ]
    }

    /// Verifies and runs `code` with `r1` = `r1`, `ranges` as writable regions besides the
    /// stack, and helpers that return the sum of their id and arguments (id 99 ends the run).
    fn run_with(code: &[Insn], r1: u64, ranges: &[Range<u64>]) -> Result<u64, String> {
        let regions: Vec<Region> = ranges.iter().cloned().map(Region::flat).collect();
        run_in(code, r1, &regions)
    }

    /// As [`run_with`], over `regions`.
    fn run_in(code: &[Insn], r1: u64, regions: &[Region<'_>]) -> Result<u64, String> {
        verify(code)?;
        let stack = Stack::new();
        let machine = Machine {
            code,
            stack: &stack,
            regions,
            max_steps: MAX_STEPS,
        };
        let mut call = |id: u32, args: [u64; 5]| {
            (id != 99).then(|| args.iter().fold(u64::from(id), |a, b| a.wrapping_add(*b)))
        };
        // SAFETY: verified; the regions are the callers' live buffers.
        unsafe { run(&machine, r1, &mut call) }
    }

    fn run_code(code: &[Insn]) -> u64 {
        run_with(code, 0, &[]).expect("runs")
    }

    /// `r0 = a; r0 OP= b` as `code` (`b` in r1, or the immediate), then exit.
    fn binary(code: u8, a: u64, b: u64, off: i16) -> u64 {
        let [l0, h0] = lddw(0, a);
        let [l1, h1] = lddw(1, b);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "immediate forms take 32 bits"
        )]
        let imm = b as i32;
        run_code(&[l0, h0, l1, h1, op(code, 0, 1, off, imm), exit()])
    }

    #[test]
    fn arithmetic_follows_the_rfc_where_c_leaves_a_choice() {
        let min = 1u64 << 63;
        let minus_one = u64::MAX;
        // 64-bit: 0x3f div, 0x9f mod, by register.
        assert_eq!(binary(0x3f, 7, 0, 0), 0, "division by zero gives 0");
        assert_eq!(
            binary(0x9f, 7, 0, 0),
            7,
            "modulo by zero keeps the dividend"
        );
        assert_eq!(binary(0x3f, minus_one, 2, 0), u64::MAX / 2, "unsigned");
        assert_eq!(
            binary(0x3f, (-7i64).cast_unsigned(), 2, 1),
            (-3i64).cast_unsigned(),
            "sdiv truncates"
        );
        assert_eq!(
            binary(0x9f, (-7i64).cast_unsigned(), 2, 1),
            minus_one,
            "smod takes the dividend's sign"
        );
        assert_eq!(binary(0x3f, min, minus_one, 1), min, "MIN / -1 is MIN");
        assert_eq!(binary(0x9f, min, minus_one, 1), 0, "MIN % -1 is 0");
        assert_eq!(binary(0x3f, 7, 0, 1), 0, "sdiv by zero");
        assert_eq!(binary(0x9f, 7, 0, 1), 7, "smod by zero");
        // 32-bit results are zero-extended, modulo by zero included.
        assert_eq!(
            binary(0x9c, 0x1_0000_0005, 0, 0),
            5,
            "32-bit modulo by zero"
        );
        assert_eq!(
            binary(0x3c, 0x1_0000_0005, 0, 0),
            0,
            "32-bit division by zero"
        );
        assert_eq!(
            binary(0x3c, 0xFFFF_FFF9, 2, 1),
            0xFFFF_FFFD,
            "32-bit sdiv: -7 / 2"
        );
        assert_eq!(
            binary(0x0c, 0xFFFF_FFFF, 1, 0),
            0,
            "32-bit add wraps, upper half clear"
        );
        assert_eq!(binary(0x04, 0xFFFF_FFFF, 1, 0), 0, "with an immediate too");
        // Immediates are sign-extended in 64-bit arithmetic.
        assert_eq!(binary(0x07, 5, minus_one, 0), 4, "r0 += -1");
        // Shifts: counts masked, arithmetic shifts keep the sign.
        assert_eq!(binary(0x6f, 1, 65, 0), 2, "64-bit shift by 65 is by 1");
        assert_eq!(binary(0x6c, 1, 33, 0), 2, "32-bit shift by 33 is by 1");
        assert_eq!(binary(0xcf, min, 63, 0), minus_one);
        assert_eq!(
            binary(0xcc, 0x8000_0000, 31, 0),
            0xFFFF_FFFF,
            "32-bit arsh, zero-extended"
        );
        assert_eq!(binary(0x7f, min, 63, 0), 1);
        // Negation, the most negative value included.
        assert_eq!(binary(0x87, min, 0, 0), min);
        assert_eq!(binary(0x84, 0x1_0000_0001, 0, 0), 0xFFFF_FFFF);
        // Sign-extending moves (register source only).
        assert_eq!(binary(0xbf, 0, 0x80, 8), (-128i64).cast_unsigned());
        assert_eq!(binary(0xbf, 0, 0x8000, 16), (-32768i64).cast_unsigned());
        assert_eq!(
            binary(0xbf, 0, 0x8000_0000, 32),
            (-(1i64 << 31)).cast_unsigned()
        );
        assert_eq!(
            binary(0xbc, 0, 0x80, 8),
            0xFFFF_FF80,
            "32-bit: zero-extended after"
        );
        assert_eq!(binary(0xbc, 0, 0x1_0000_0002, 0), 2, "a plain 32-bit move");
    }

    #[test]
    fn byte_order_conversions() {
        let value = 0x1122_3344_5566_7788;
        let conv = |code: u8, width: i32| {
            let [low, high] = lddw(0, value);
            run_code(&[low, high, op(code, 0, 0, 0, width), exit()])
        };
        assert_eq!(conv(0xd4, 16), 0x7788, "to little-endian: truncated");
        assert_eq!(conv(0xd4, 32), 0x5566_7788);
        assert_eq!(conv(0xd4, 64), value);
        assert_eq!(conv(0xdc, 16), 0x8877, "to big-endian: swapped");
        assert_eq!(conv(0xdc, 32), 0x8877_6655);
        assert_eq!(conv(0xdc, 64), 0x8877_6655_4433_2211);
        assert_eq!(conv(0xd7, 16), 0x8877, "bswap (ISA v4)");
        assert_eq!(conv(0xd7, 64), 0x8877_6655_4433_2211);
    }

    /// Every conditional jump on a negative immediate, against values near it: taken exactly
    /// when the ISA's comparison (the immediate sign-extended, or its low 32 bits in JMP32)
    /// holds.
    #[test]
    fn conditional_jumps_compare_as_the_isa_says() {
        type Holds = fn(u64, u64) -> bool;
        let ops: [(u8, Holds); 11] = [
            (0x10, |a, b| a == b),
            (0x50, |a, b| a != b),
            (0x20, |a, b| a > b),
            (0x30, |a, b| a >= b),
            (0xa0, |a, b| a < b),
            (0xb0, |a, b| a <= b),
            (0x40, |a, b| a & b != 0),
            (0x60, |a, b| a.cast_signed() > b.cast_signed()),
            (0x70, |a, b| a.cast_signed() >= b.cast_signed()),
            (0xc0, |a, b| a.cast_signed() < b.cast_signed()),
            (0xd0, |a, b| a.cast_signed() <= b.cast_signed()),
        ];
        for imm in [-1, -18, i32::MIN, 5] {
            let extended = i64::from(imm).cast_unsigned();
            for value in [
                extended,
                extended.wrapping_sub(1),
                extended.wrapping_add(1),
                u64::from(imm.cast_unsigned()),
                0,
                u64::MAX,
                1 << 32,
            ] {
                for (jop, holds) in ops {
                    for jmp32 in [false, true] {
                        let [low, high] = lddw(1, value);
                        let class = if jmp32 { CLASS_JMP32 } else { CLASS_JMP };
                        let program = [
                            low,
                            high,
                            op(0xb7, 0, 0, 0, 0),
                            op(class | jop, 1, 0, 1, imm),
                            exit(),
                            op(0xb7, 0, 0, 0, 1),
                            exit(),
                        ];
                        let expected = if jmp32 {
                            let (a, b) = (value & 0xFFFF_FFFF, u64::from(imm.cast_unsigned()));
                            let widen = |x: u64| (x.cast_signed() << 32 >> 32).cast_unsigned();
                            if matches!(jop, 0x60 | 0x70 | 0xc0 | 0xd0) {
                                holds(widen(a), widen(b))
                            } else {
                                holds(a, b)
                            }
                        } else {
                            holds(value, extended)
                        };
                        assert_eq!(
                            run_code(&program),
                            u64::from(expected),
                            "{:#x} {value:#x} against {imm}",
                            class | jop
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn loads_and_stores_stay_inside_their_region() {
        let mut buffer = [0u8; 16];
        let base = buffer.as_mut_ptr() as u64;
        let range = base..base + 16;
        let region = core::slice::from_ref(&range);
        // *(u64 *)(r1 + 8) = 0x1122..; r0 = *(u32 *)(r1 + 12), sign-extending byte load of r1+15.
        let [low, high] = lddw(2, 0x8122_3344_5566_7788);
        let program = [
            low,
            high,
            op(0x7b, 1, 2, 8, 0),
            op(0x61, 0, 1, 12, 0),
            op(0x91, 3, 1, 15, 0),
            op(0x0f, 0, 3, 0, 0),
            exit(),
        ];
        let r0 = run_with(&program, base, region).expect("runs");
        assert_eq!(r0, 0x8122_3344u64.wrapping_add((-127i64).cast_unsigned()));
        assert_eq!(buffer[8..], 0x8122_3344_5566_7788u64.to_le_bytes());
        // An access that starts inside and ends one byte past the region faults.
        let past = [op(0x79, 0, 1, 9, 0), exit()];
        let fault = run_with(&past, base, region).expect_err("past the end");
        assert!(
            fault.starts_with("instruction 0: out of bounds load of 8 bytes"),
            "{fault}"
        );
        let store_past = [op(0x62, 1, 0, 13, 7), exit()];
        let fault = run_with(&store_past, base, region).expect_err("past the end");
        assert!(fault.contains("out of bounds store of 4 bytes"), "{fault}");
        let below = [op(0x71, 0, 1, -1, 0), exit()];
        assert!(run_with(&below, base, region).is_err(), "one byte before");
        let wraps = [op(0x79, 0, 1, 0, 0), exit()];
        assert!(
            run_with(&wraps, u64::MAX - 3, region).is_err(),
            "an address that wraps"
        );
    }

    #[test]
    fn read_only_regions_refuse_stores_and_strided_regions_hold_only_their_values() {
        let mut words = [7u64, 0, 9, 0];
        let base = words.as_mut_ptr() as u64;
        let read_only = [Region::Flat {
            range: base..base + 8,
            writable: false,
        }];
        let run_over = |code: &[Insn], regions: &[Region]| run_in(code, base, regions);
        assert_eq!(run_over(&[op(0x79, 0, 1, 0, 0), exit()], &read_only), Ok(7));
        let fault = run_over(&[op(0x7a, 1, 0, 0, 1), exit()], &read_only).expect_err("store");
        assert!(
            fault.contains("store of 8 bytes into read-only data"),
            "{fault}"
        );
        let fault = run_over(&[op(0xdb, 1, 0, 0, 0), exit()], &read_only).expect_err("atomic");
        assert!(
            fault.contains("atomic operation of 8 bytes into read-only"),
            "{fault}"
        );
        // Two 8-byte values, one every 16 bytes: the gaps between them are not memory.
        let values = [Region::Strided {
            start: base,
            stride: 16,
            size: 8,
            count: 2,
            writable: true,
        }];
        assert_eq!(run_over(&[op(0x79, 0, 1, 16, 0), exit()], &values), Ok(9));
        for (offset, size_code) in [(8, 0x79), (12, 0x61), (4, 0x79), (20, 0x79), (32, 0x71)] {
            let fault = run_over(&[op(size_code, 0, 1, offset, 0), exit()], &values);
            assert!(fault.is_err(), "offset {offset}: {fault:?}");
        }
        assert_eq!(words[0], 7, "nothing stored");
    }

    #[test]
    fn atomic_operations_return_the_old_value_where_asked() {
        let mut word = [10u64];
        let base = word.as_mut_ptr() as u64;
        let range = base..base + 8;
        let region = core::slice::from_ref(&range);
        let atomic = |imm| op(0xdb, 1, 2, 0, imm);
        let program = [
            op(0xb7, 2, 0, 0, 5),
            atomic(0x00), // *r1 += 5 -> 15
            op(0xb7, 2, 0, 0, 1),
            atomic(0x01),         // r2 = fetch_add(1) -> 15; *r1 = 16
            op(0xbf, 6, 2, 0, 0), // r6 = 15
            op(0xb7, 2, 0, 0, 100),
            atomic(0xe1),         // r2 = xchg(100) -> 16
            op(0x0f, 6, 2, 0, 0), // r6 = 31
            op(0xb7, 0, 0, 0, 100),
            op(0xb7, 2, 0, 0, 7),
            atomic(0xf1),         // r0 = cmpxchg(100 -> 7) -> 100
            op(0x0f, 0, 6, 0, 0), // r0 = 131
            exit(),
        ];
        assert_eq!(run_with(&program, base, region), Ok(131));
        assert_eq!(word[0], 7);
        let misaligned = [op(0xb7, 2, 0, 0, 1), op(0xc3, 1, 2, 1, 0), exit()];
        let fault = run_with(&misaligned, base, region).expect_err("misaligned");
        assert!(fault.contains("misaligned"), "{fault}");
    }

    #[test]
    fn local_calls_have_their_own_frame_and_keep_r6_to_r9() {
        let program = [
            op(0xb7, 6, 0, 0, 6),      // 0: r6 = 6
            op(0x7a, 10, 0, -8, 40),   // 1: *(u64 *)(r10 - 8) = 40
            op(0x85, 0, 1, 0, 3),      // 2: call local 6
            op(0x79, 1, 10, -8, 0),    // 3: r1 = *(r10 - 8): still 40
            op(0x0f, 0, 1, 0, 0),      // 4: r0 += r1
            op(0x0f, 0, 6, 0, 0),      // 5: r0 += r6 (6, not 99) -- falls into 6? no:
            exit(),                    // 6
            op(0xb7, 6, 0, 0, 99),     // 7: callee: r6 = 99
            op(0x7a, 10, 0, -8, 1000), // 8: its own frame
            op(0xb7, 0, 0, 0, 1),      // 9: r0 = 1
            exit(),                    // 10
        ];
        // The call at 2 aims at 2 + 1 + 3 = 6, an exit; aim at 7 instead.
        let mut program = program;
        program[2].imm = 4;
        assert_eq!(run_code(&program), 1 + 40 + 6);
        let recursive = [op(0x85, 0, 1, 0, -1), exit()];
        let fault = run_with(&recursive, 0, &[]).expect_err("too deep");
        assert!(fault.contains("a local call beyond 8 frames"), "{fault}");
    }

    #[test]
    fn helpers_get_r1_to_r5_and_may_end_the_run() {
        let mut program = vec![];
        for (reg, value) in (1u8..=5).zip([1, 10, 100, 1000, 10_000]) {
            program.push(op(0xb7, reg, 0, 0, value));
        }
        program.extend([op(0x85, 0, 0, 0, 7), exit()]);
        assert_eq!(run_code(&program), 11_118);
        let ends = [
            op(0xb7, 0, 0, 0, 5),
            op(0x85, 0, 0, 0, 99),
            op(0xb7, 0, 0, 0, 6),
            exit(),
        ];
        assert_eq!(run_code(&ends), 0, "the run ends at the call, with 0");
    }

    #[test]
    fn gotol_and_an_endless_loop() {
        let gotol = [
            op(0xb7, 0, 0, 0, 1),
            op(0x06, 0, 0, 0, 1),
            op(0xb7, 0, 0, 0, 2),
            exit(),
        ];
        assert_eq!(run_code(&gotol), 1);
        let endless = [op(0x05, 0, 0, -1, 0)];
        let fault = run_with(&endless, 0, &[]).expect_err("endless");
        assert!(fault.contains("more than 16777216 instructions"), "{fault}");
    }

    #[test]
    fn verify_refuses_what_the_interpreter_cannot_run() {
        let refused = |code: &[Insn], why: &str| {
            let message = verify(code).expect_err(why);
            assert!(message.contains(why), "{message} (expected {why})");
        };
        assert_eq!(verify(&[exit()]), Ok(()));
        refused(&[], "no instructions");
        refused(&[op(0xb7, 11, 0, 0, 0), exit()], "beyond r10");
        refused(&[op(0xb7, 10, 0, 0, 0), exit()], "a write to r10");
        refused(&[op(0x79, 10, 1, 0, 0), exit()], "a write to r10");
        refused(&[op(0x18, 0, 0, 0, 0)], "without its second half");
        refused(
            &[op(0x18, 0, 1, 0, 0), op(0, 0, 0, 0, 0), exit()],
            "unsupported load",
        );
        refused(&[op(0x05, 0, 0, 5, 0), exit()], "outside the program");
        let [low, high] = lddw(0, 1);
        refused(
            &[op(0x05, 0, 0, 1, 0), low, high, exit()],
            "into a 64-bit load",
        );
        refused(&[op(0x37, 0, 0, 0, 0), exit()], "by zero");
        refused(&[op(0x97, 0, 0, 1, 0), exit()], "by zero");
        refused(&[op(0x67, 0, 0, 0, 64), exit()], "shift by more");
        refused(&[op(0x64, 0, 0, 0, 32), exit()], "shift by more");
        refused(&[op(0xbc, 0, 1, 32, 0), exit()], "unknown arithmetic");
        refused(&[op(0xd4, 0, 0, 0, 8), exit()], "unknown arithmetic");
        refused(&[op(0xf7, 0, 0, 0, 0), exit()], "unknown arithmetic");
        refused(&[op(0x85, 0, 2, 0, 7), exit()], "unresolved call");
        refused(&[op(0x20, 0, 0, 0, 0), exit()], "unsupported load");
        refused(&[op(0x99, 0, 1, 0, 0), exit()], "unsupported load");
        refused(&[op(0xdb, 1, 2, 0, 0x10), exit()], "unsupported atomic");
        refused(&[op(0xdb, 1, 10, 0, 0x01), exit()], "a write to r10");
        refused(&[op(0xdb, 1, 10, 0, 0xe1), exit()], "a write to r10");
        assert_eq!(
            verify(&[op(0xdb, 1, 10, 0, 0x00), exit()]),
            Ok(()),
            "no fetch: r10 read"
        );
        assert_eq!(
            verify(&[op(0xdb, 1, 10, 0, 0xf1), exit()]),
            Ok(()),
            "cmpxchg writes r0"
        );
        refused(&[op(0x8d, 0, 0, 0, 1), exit()], "unknown jump");
        refused(&[op(0x0d, 0, 0, 0, 0), exit()], "unknown jump");
        refused(&[op(0x9d, 0, 0, 0, 0)], "unknown jump");
        refused(&[op(0x0e, 0, 0, 0, 0), exit()], "unknown jump");
        refused(&[op(0xb7, 0, 0, 0, 0)], "neither exit nor a jump");
        refused(&[op(0x15, 0, 0, -1, 0)], "neither exit nor a jump");
    }
}
