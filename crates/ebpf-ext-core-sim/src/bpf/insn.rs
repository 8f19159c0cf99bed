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

/// `BPF_JMP | BPF_JNE | BPF_K`.
pub(crate) const JNE_IMM: u8 = 0x55;
/// `BPF_JMP` (64-bit jumps, calls and exit).
pub(crate) const CLASS_JMP: u8 = 0x05;
/// `BPF_JMP32`.
pub(crate) const CLASS_JMP32: u8 = 0x06;
/// `BPF_JMP32 | BPF_JA` (`gotol`): a jump whose offset is in `imm`.
const GOTOL: u8 = 0x06;

impl Insn {
    /// `return r0`.
    pub(crate) fn exit() -> Self {
        Insn {
            code: EXIT,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        }
    }

    /// `if dst != imm goto +off`.
    pub(crate) fn jne_imm(dst: u8, imm: i32, off: i16) -> Self {
        Insn {
            code: JNE_IMM,
            dst,
            src: 0,
            off,
            imm,
        }
    }

    /// Whether its `off` is a jump relative to the next instruction (every jump but calls,
    /// exit and `gotol`).
    fn jumps_by_off(self) -> bool {
        matches!(self.class(), CLASS_JMP | CLASS_JMP32)
            && !matches!(self.code & 0xf0, 0x80 | 0x90)
            && self.code != GOTOL
    }

    /// Whether it is a local (BPF-to-BPF) call, whose `imm` is relative to the next
    /// instruction.
    fn calls_locally(self) -> bool {
        self.code == CALL && self.src == 1
    }
}

/// `insns` with each instruction for which `replace` gives a sequence replaced by that
/// sequence, and every jump and local call re-aimed at the instruction it aimed at before (a
/// jump to a replaced instruction lands on the start of its sequence). A sequence runs
/// through to the instruction after it: it may hold the instruction it replaces, but no jump
/// out of itself.
///
/// # Errors
/// A jump that no longer fits its 16-bit offset, one aimed outside the program, or `gotol`.
fn expand(
    insns: &[Insn],
    replace: impl Fn(&Insn) -> Option<Vec<Insn>>,
) -> Result<Vec<Insn>, String> {
    let sequences: Vec<Option<Vec<Insn>>> = insns.iter().map(&replace).collect();
    let moved = Moved::new(
        sequences.iter().map(|s| s.as_ref().map_or(1, Vec::len)),
        true,
    );
    let mut out = Vec::with_capacity(insns.len());
    for (from, (insn, sequence)) in insns.iter().zip(sequences).enumerate() {
        refuse_gotol(from, insn)?;
        match sequence {
            Some(sequence) => out.extend(sequence),
            None => out.push(moved.reaim(from, *insn)?),
        }
    }
    Ok(out)
}

/// Where each instruction of a program lands when some are replaced by sequences of other
/// lengths, for re-aiming the jumps and local calls between them.
struct Moved {
    /// The new place of each old instruction, then of the end.
    places: Vec<i64>,
    /// Whether a jump may aim at the end (`false` once code is appended after it).
    end_is_target: bool,
}

impl Moved {
    /// The places of instructions that become `sizes` instructions each.
    fn new(sizes: impl Iterator<Item = usize>, end_is_target: bool) -> Self {
        let mut places = Vec::new();
        let mut at = 0i64;
        for size in sizes {
            places.push(at);
            at += i64::try_from(size).unwrap_or(i64::MAX);
        }
        places.push(at);
        Moved {
            places,
            end_is_target,
        }
    }

    /// Where the program's old end lands (where appended code starts).
    fn end(&self) -> i64 {
        self.places.last().copied().unwrap_or(0)
    }

    /// The new place of the instruction that old instruction `from` aimed at, `relative` to
    /// the instruction after it.
    fn target(&self, from: usize, relative: i64) -> Result<i64, String> {
        let last = self.places.len() - if self.end_is_target { 1 } else { 2 };
        i64::try_from(from)
            .ok()
            .map(|from| from + 1 + relative)
            .and_then(|target| usize::try_from(target).ok())
            .filter(|&target| target <= last)
            .and_then(|target| self.places.get(target).copied())
            .ok_or_else(|| format!("instruction {from} jumps outside the program"))
    }

    /// Old instruction `from`, kept, with its jump or local call re-aimed at the new place of
    /// what it aimed at.
    fn reaim(&self, from: usize, mut insn: Insn) -> Result<Insn, String> {
        if insn.jumps_by_off() {
            let off = self.target(from, i64::from(insn.off))? - self.places[from] - 1;
            insn.off = jump_offset(from, off)?;
        } else if insn.calls_locally() {
            let imm = self.target(from, i64::from(insn.imm))? - self.places[from] - 1;
            insn.imm = i32::try_from(imm)
                .map_err(|_| format!("instruction {from}: a call of {imm} no longer fits"))?;
        }
        Ok(insn)
    }
}

/// `off` as a jump's 16-bit offset, for the message naming instruction `from`.
fn jump_offset(from: usize, off: i64) -> Result<i16, String> {
    i16::try_from(off).map_err(|_| format!("instruction {from}: a jump of {off} no longer fits"))
}

/// Refuses `gotol` (its offset is in `imm`; not in the interpreter's instruction set either).
fn refuse_gotol(from: usize, insn: &Insn) -> Result<(), String> {
    if insn.code == GOTOL {
        return Err(format!("instruction {from}: gotol is not supported"));
    }
    Ok(())
}

/// `insns` with `if r0 != 0 goto +1; exit` after every call of `call_imm`, and every jump
/// and local call re-aimed at the instruction it aimed at before: what native code does after
/// `bpf_tail_call` (a caller whose tail call succeeded returns 0 at once; the core then runs
/// the callee). A jump to the instruction after such a call lands after the check, so only
/// the call's own result is tested.
///
/// # Errors
/// A jump that no longer fits its 16-bit offset, or one aimed outside the program.
pub(crate) fn stop_after_calls_of(insns: &[Insn], call_imm: i32) -> Result<Vec<Insn>, String> {
    expand(insns, |insn| {
        (insn.code == CALL && insn.src == 0 && insn.imm == call_imm)
            .then(|| vec![*insn, Insn::jne_imm(0, 0, 1), Insn::exit()])
    })
}

/// `BPF_ALU64 | BPF_NEG`.
const NEG64: u8 = 0x87;
/// `BPF_ALU | BPF_MOD | BPF_K` and `| BPF_X`.
const MOD32: [u8; 2] = [0x94, 0x9c];
/// `BPF_ALU | BPF_MOV | BPF_X`: `dst = (u32)src`.
const MOV32_REG: u8 = 0xbc;
/// `BPF_ALU64 | BPF_ADD | BPF_K`.
const ADD64_IMM: u8 = 0x07;

/// `insns` with the instructions `rbpf` 0.4.1 runs unlike the ISA made to run as it says:
/// a 64-bit negation becomes `dst ^= -1; dst += 1` (the same value, where `rbpf` negates a
/// signed integer and panics, in a debug build, on the most negative one), and a 32-bit
/// modulo is followed by `wdst = wdst` (its result is zero-extended, where `rbpf` leaves the
/// upper half of a modulo by zero).
///
/// # Errors
/// As [`stop_after_calls_of`].
pub(crate) fn isa_fixes(insns: &[Insn]) -> Result<Vec<Insn>, String> {
    let alu = |code, dst, src, imm| Insn {
        code,
        dst,
        src,
        off: 0,
        imm,
    };
    expand(insns, |insn| match insn.code {
        NEG64 => Some(vec![
            alu(XOR64_IMM, insn.dst, 0, -1),
            alu(ADD64_IMM, insn.dst, 0, 1),
        ]),
        code if MOD32.contains(&code) => Some(vec![*insn, alu(MOV32_REG, insn.dst, insn.dst, 0)]),
        _ => None,
    })
}

/// The first instruction of ISA version 4 that `rbpf` 0.4 would run as something else:
/// signed division or modulo (`off` 1) and sign-extending moves (`off` 8, 16 or 32), which it
/// runs by their opcode alone (unsigned, and a plain move). `None` when there is none.
pub(crate) fn unsupported_v4(insns: &[Insn]) -> Option<usize> {
    insns.iter().position(|insn| {
        matches!(insn.class(), 0x04 | 0x07) // ALU, ALU64
            && matches!(insn.code & 0xf0, 0x30 | 0x90 | 0xb0) // DIV, MOD, MOV
            && insn.off != 0
    })
}

/// `BPF_ALU64 | BPF_XOR | BPF_K`: `dst ^= imm` (the immediate sign-extended).
const XOR64_IMM: u8 = 0xa7;
/// `BPF_JMP | BPF_JA`.
const JA: u8 = 0x05;

/// The 64-bit conditional jumps on an immediate that `rbpf` 0.4 compares against the
/// immediate zero-extended, and the jump each becomes when both sides are complemented
/// (`!a` against `!b` reverses an unsigned order).
const ZERO_EXTENDED_JUMPS: [(u8, u8); 6] = [
    (0x15, 0x15), // JEQ
    (0x55, 0x55), // JNE
    (0x25, 0xa5), // JGT → JLT
    (0x35, 0xb5), // JGE → JLE
    (0xa5, 0x25), // JLT → JGT
    (0xb5, 0x35), // JLE → JGE
];

/// `insns` with every 64-bit conditional jump on a negative immediate made to compare, in
/// `rbpf` 0.4, as the ISA says (and the core's runtimes do): against the immediate
/// sign-extended. `rbpf` 0.4.1 zero-extends it for `==`, `!=` and the unsigned orders, so
/// `if (r == -18)` never held. Each such jump `if dst OP imm goto T` becomes
/// `dst ^= -1; if dst OP' !imm goto S; dst ^= -1`, where `!imm` is non-negative (so its
/// zero and sign extensions agree) and `OP'` is `OP` with the order reversed; `S`, appended
/// after the program, is `dst ^= -1; goto T`. Every other jump keeps its target; a jump to a
/// rewritten jump lands on its first instruction.
///
/// # Errors
/// A jump aimed outside the program (or at its end), one that no longer fits its offset, a
/// rewritten jump on `r10` (which may not be written), or a program whose last instruction
/// could fall through into the appended code.
pub(crate) fn sign_extend_jump_immediates(insns: &[Insn]) -> Result<Vec<Insn>, String> {
    let rewritten = |insn: &Insn| {
        (insn.imm < 0)
            .then(|| {
                ZERO_EXTENDED_JUMPS
                    .iter()
                    .find(|(code, _)| *code == insn.code)
            })
            .flatten()
            .map(|&(_, reversed)| reversed)
    };
    if !insns.iter().any(|i| rewritten(i).is_some()) {
        return Ok(insns.to_vec());
    }
    if !insns
        .last()
        .is_some_and(|last| matches!(last.code, EXIT | JA))
    {
        return Err("the last instruction is neither exit nor a jump".into());
    }
    // Appended code follows the old end, so no jump may aim at it any more.
    let moved = Moved::new(
        insns
            .iter()
            .map(|insn| if rewritten(insn).is_some() { 3 } else { 1 }),
        false,
    );
    let flip = |dst: u8| Insn {
        code: XOR64_IMM,
        dst,
        src: 0,
        off: 0,
        imm: -1,
    };
    let mut out = Vec::new();
    let mut trampolines: Vec<(usize, u8, i64)> = Vec::new();
    for (from, insn) in insns.iter().enumerate() {
        refuse_gotol(from, insn)?;
        let Some(reversed) = rewritten(insn) else {
            out.push(moved.reaim(from, *insn)?);
            continue;
        };
        if insn.dst == 10 {
            return Err(format!(
                "instruction {from}: a comparison of r10 with a negative immediate"
            ));
        }
        let target = moved.target(from, i64::from(insn.off))?;
        let trampoline = moved.end() + 2 * i64::try_from(trampolines.len()).unwrap_or(i64::MAX);
        trampolines.push((from, insn.dst, target));
        out.push(flip(insn.dst));
        out.push(Insn {
            code: reversed,
            dst: insn.dst,
            src: 0,
            off: jump_offset(from, trampoline - (moved.places[from] + 1) - 1)?,
            imm: !insn.imm,
        });
        out.push(flip(insn.dst));
    }
    for (from, dst, target) in trampolines {
        let at = i64::try_from(out.len()).unwrap_or(i64::MAX);
        out.push(flip(dst));
        out.push(Insn {
            code: JA,
            dst: 0,
            src: 0,
            off: jump_offset(from, target - (at + 1) - 1)?,
            imm: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mov_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: 0xb7,
            dst,
            src: 0,
            off: 0,
            imm,
        }
    }

    fn ja(off: i16) -> Insn {
        Insn {
            code: 0x05,
            dst: 0,
            src: 0,
            off,
            imm: 0,
        }
    }

    #[test]
    fn a_check_follows_each_tail_call_and_jumps_keep_their_targets() {
        // 0: ja +2 (to 3)   1: call 5   2: ja -3 (to 0)   3: call 5   4: exit
        let insns = [ja(2), Insn::call(5), ja(-3), Insn::call(5), Insn::exit()];
        let out = stop_after_calls_of(&insns, 5).expect("rewritten");
        let expected = [
            ja(4), // to the second call, now at 5
            Insn::call(5),
            Insn::jne_imm(0, 0, 1),
            Insn::exit(),
            ja(-5), // back to 0
            Insn::call(5),
            Insn::jne_imm(0, 0, 1),
            Insn::exit(),
            Insn::exit(),
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn a_jump_to_just_after_a_call_skips_the_check() {
        // 0: mov r0, 1   1: call 5   2: mov r0, 7   3: exit   4: ja -3 (to 2)
        let insns = [
            mov_imm(0, 1),
            Insn::call(5),
            mov_imm(0, 7),
            Insn::exit(),
            ja(-3), // to 2, just after the call
        ];
        let out = stop_after_calls_of(&insns, 5).expect("rewritten");
        assert_eq!(out.len(), 7);
        // The jump now at 6 lands on 4, the `mov r0, 7` after the inserted check.
        assert_eq!(out[6], ja(-3));
        assert_eq!(out[4], mov_imm(0, 7));
    }

    #[test]
    fn other_calls_are_left_alone_and_bad_jumps_are_refused() {
        let insns = [Insn::call(1), Insn::exit()];
        assert_eq!(stop_after_calls_of(&insns, 5).expect("unchanged"), insns);
        let out_of_range = [ja(5), Insn::call(5), Insn::exit()];
        assert!(stop_after_calls_of(&out_of_range, 5).is_err());
        let mut gotol = ja(0);
        gotol.code = GOTOL;
        assert!(stop_after_calls_of(&[gotol, Insn::exit()], 5).is_err());
        // 16,383 calls before a jump back over all of them: 32,766 more slots, too far.
        let mut far = vec![Insn::call(5); 16_383];
        far.push(ja(-16_384));
        assert!(stop_after_calls_of(&far, 5).is_err());
    }

    /// Random programs of calls, jumps and other instructions: every instruction keeps its
    /// place in order, every jump its target, and each tail-call site gets its check.
    #[test]
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        reason = "indices of programs under 50 instructions"
    )]
    fn random_programs_keep_every_target() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for _ in 0..2_000 {
            let len = 1 + next(40) as usize;
            let insns: Vec<Insn> = (0..len)
                .map(|at| {
                    let off =
                        i16::try_from(next(len as u64 + 2) as i64 - at as i64 - 1).expect("small");
                    match next(6) {
                        0 => Insn::call(5),
                        1 => Insn::call(1),
                        2 => ja(off),
                        3 => Insn {
                            code: 0x1d, // JMP | JEQ | X
                            dst: 1,
                            src: 2,
                            off,
                            imm: 0,
                        },
                        4 => Insn::exit(),
                        _ => mov_imm(0, 3),
                    }
                })
                .collect();
            let Ok(out) = stop_after_calls_of(&insns, 5) else {
                // Only a jump past the end is refused here.
                assert!(insns.iter().enumerate().any(
                    |(at, i)| i.jumps_by_off() && at as i64 + 1 + i64::from(i.off) > len as i64
                ));
                continue;
            };
            let mut moved = Vec::new();
            let mut place = 0usize;
            for insn in &insns {
                moved.push(place);
                place += if insn.code == CALL && insn.imm == 5 {
                    3
                } else {
                    1
                };
            }
            moved.push(place);
            assert_eq!(out.len(), place);
            for (at, insn) in insns.iter().enumerate() {
                let now = out[moved[at]];
                assert_eq!((now.code, now.imm), (insn.code, insn.imm));
                if insn.jumps_by_off() {
                    let target = usize::try_from(at as i64 + 1 + i64::from(insn.off)).expect("in");
                    let landed = moved[at] as i64 + 1 + i64::from(now.off);
                    assert_eq!(landed, moved[target] as i64);
                }
                if insn.code == CALL && insn.imm == 5 {
                    assert_eq!(
                        out[moved[at] + 1..moved[at] + 3],
                        [Insn::jne_imm(0, 0, 1), Insn::exit()]
                    );
                }
            }
        }
    }

    /// Runs `insns` in `rbpf` and returns `r0`.
    fn run(insns: &[Insn]) -> u64 {
        let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_bytes()).collect();
        let vm = rbpf::EbpfVmNoData::new(Some(&bytes)).expect("verifies");
        vm.execute_program().expect("runs")
    }

    /// `r1 = value` (two slots).
    fn load(value: u64) -> [Insn; 2] {
        #[allow(clippy::cast_possible_truncation, reason = "the halves of lddw")]
        let (low, high) = (value as u32, (value >> 32) as u32);
        [
            Insn {
                code: LD_DW_IMM,
                dst: 1,
                src: 0,
                off: 0,
                imm: low.cast_signed(),
            },
            Insn {
                code: 0,
                dst: 0,
                src: 0,
                off: 0,
                imm: high.cast_signed(),
            },
        ]
    }

    /// Every rewritten jump against every interesting value: taken exactly when the ISA's
    /// comparison (the immediate sign-extended) holds, and `r1` unchanged on both paths.
    #[test]
    fn jumps_on_negative_immediates_compare_sign_extended() {
        type Holds = fn(u64, u64) -> bool;
        let ops: [(u8, Holds); 6] = [
            (0x15, |a, b| a == b),
            (0x55, |a, b| a != b),
            (0x25, |a, b| a > b),
            (0x35, |a, b| a >= b),
            (0xa5, |a, b| a < b),
            (0xb5, |a, b| a <= b),
        ];
        for imm in [-1, -18, -2, i32::MIN] {
            let extended = i64::from(imm).cast_unsigned();
            let zero_extended = u64::from(imm.cast_unsigned());
            for value in [
                extended,
                extended.wrapping_sub(1),
                extended.wrapping_add(1),
                zero_extended,
                0,
                u64::MAX,
                1,
            ] {
                for (code, holds) in ops {
                    // r0 = taken; r2 = r1 on the path taken, compared with what was loaded.
                    let [low, high] = load(value);
                    let program = [
                        low,
                        high,
                        mov_imm(0, 0),
                        Insn {
                            code,
                            dst: 1,
                            src: 0,
                            off: 1,
                            imm,
                        },
                        ja(1),
                        mov_imm(0, 1),
                        // r0 |= (r1 != value) << 1, with value in r3
                        Insn {
                            code: 0xbf,
                            dst: 2,
                            src: 1,
                            off: 0,
                            imm: 0,
                        },
                        Insn {
                            code: LD_DW_IMM,
                            dst: 3,
                            src: 0,
                            off: 0,
                            imm: load(value)[0].imm,
                        },
                        Insn {
                            code: 0,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: load(value)[1].imm,
                        },
                        Insn {
                            code: 0x5d,
                            dst: 2,
                            src: 3,
                            off: 1,
                            imm: 0,
                        }, // if r2 != r3 goto +1
                        ja(1),
                        Insn {
                            code: 0x47,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: 2,
                        }, // r0 |= 2
                        Insn::exit(),
                    ];
                    let fixed = sign_extend_jump_immediates(&program).expect("rewritten");
                    let expected = u64::from(holds(value, extended));
                    assert_eq!(
                        run(&fixed),
                        expected,
                        "{code:#x} {value:#x} against {imm}: taken as the ISA says, r1 kept"
                    );
                }
            }
        }
    }

    #[test]
    fn jumps_around_a_rewritten_jump_keep_their_targets() {
        let jeq = |imm, off| Insn {
            code: 0x15,
            dst: 1,
            src: 0,
            off,
            imm,
        };
        // 0: ja +1 (to 2)  1: exit  2: jeq r1, -5, -2 (to 1)  3: jeq r1, 7, -3 (to 1)  4: exit
        let insns = [ja(1), Insn::exit(), jeq(-5, -2), jeq(7, -3), Insn::exit()];
        let out = sign_extend_jump_immediates(&insns).expect("rewritten");
        // New places: 0, 1, 2 (+2), 5, 6; the trampoline at 7.
        assert_eq!(out[0], ja(1), "to the rewritten jump's first instruction");
        assert_eq!(
            out[3],
            Insn {
                code: 0x15,
                dst: 1,
                src: 0,
                off: 3,
                imm: 4
            },
            "to 7"
        );
        assert_eq!(
            out[5],
            jeq(7, -5),
            "a non-negative immediate is left alone; to 1"
        );
        assert_eq!(
            out[7..],
            [
                Insn {
                    code: XOR64_IMM,
                    dst: 1,
                    src: 0,
                    off: 0,
                    imm: -1
                },
                ja(-8)
            ]
        );
        let jeq32 = Insn {
            code: 0x16,
            ..jeq(-1, -2)
        };
        let unchanged = [jeq(7, 0), Insn::exit(), jeq32];
        assert_eq!(
            sign_extend_jump_immediates(&unchanged).expect("as is"),
            unchanged,
            "a non-negative immediate, and a 32-bit jump"
        );
        let ends_with_ja = [jeq(-1, 0), Insn::exit(), ja(-3)];
        let out = sign_extend_jump_immediates(&ends_with_ja).expect("rewritten");
        assert_eq!(
            out[4],
            ja(-5),
            "back to the rewritten jump's first instruction"
        );
        assert!(
            sign_extend_jump_immediates(&[jeq(-1, 1), Insn::exit()]).is_err(),
            "to the end"
        );
        let falls_through = [jeq(-1, 1), Insn::exit(), jeq(-1, -3)];
        assert!(
            sign_extend_jump_immediates(&falls_through).is_err(),
            "into the appended code"
        );
        let r10 = [
            Insn {
                dst: 10,
                ..jeq(-1, 0)
            },
            Insn::exit(),
        ];
        assert!(sign_extend_jump_immediates(&r10).is_err());
    }

    /// Two sites on two registers, one jumping back: each taken as the ISA says.
    #[test]
    fn several_rewritten_jumps_run_as_the_isa_says() {
        let add = |dst, imm| Insn {
            code: 0x07,
            dst,
            src: 0,
            off: 0,
            imm,
        };
        let jump = |code, dst, imm, off| Insn {
            code,
            dst,
            src: 0,
            off,
            imm,
        };
        let program = [
            mov_imm(0, 0),         // 0: r0 = 0
            mov_imm(1, -3),        // 1: r1 = -3 (sign-extended)
            mov_imm(2, -1),        // 2: r2 = -1
            add(0, 1),             // 3: loop: r0 += 1
            add(1, 1),             // 4: r1 += 1
            jump(0x55, 1, -1, -3), // 5: if r1 != -1 goto loop (two turns)
            jump(0x15, 2, -1, 1),  // 6: if r2 == -1 goto 8
            add(0, 100),           // 7: not run
            add(0, 10),            // 8: r0 += 10
            Insn::exit(),          // 9
        ];
        let fixed = sign_extend_jump_immediates(&program).expect("rewritten");
        assert_eq!(
            run(&fixed),
            12,
            "two turns of the loop, then the taken jump"
        );
    }

    #[test]
    fn negation_and_32_bit_modulo_run_as_the_isa_says() {
        let [low, high] = load(1 << 63); // i64::MIN
        let neg = Insn {
            code: NEG64,
            dst: 1,
            src: 0,
            off: 0,
            imm: 0,
        };
        let r0_is_r1 = Insn::mov64(0, 1);
        let program = [low, high, neg, r0_is_r1, Insn::exit()];
        assert_eq!(
            run(&isa_fixes(&program).expect("rewritten")),
            1 << 63,
            "-i64::MIN"
        );
        let [low, high] = load(0x1_0000_0005);
        let mod_zero = Insn {
            code: 0x9c, // w1 %= w2, with r2 = 0
            dst: 1,
            src: 2,
            off: 0,
            imm: 0,
        };
        let program = [low, high, mov_imm(2, 0), mod_zero, r0_is_r1, Insn::exit()];
        assert_eq!(
            run(&program),
            0x1_0000_0005,
            "rbpf alone keeps the upper half"
        );
        assert_eq!(
            run(&isa_fixes(&program).expect("rewritten")),
            5,
            "zero-extended"
        );
        // A jump over a rewritten instruction keeps its target.
        let [low, high] = load(3);
        let jumpy = [low, high, ja(1), neg, r0_is_r1, Insn::exit()];
        let fixed = isa_fixes(&jumpy).expect("rewritten");
        assert_eq!(fixed[2], ja(2));
        assert_eq!(run(&fixed), 3);
    }

    #[test]
    fn v4_instructions_rbpf_would_misrun_are_found() {
        let sdiv = Insn {
            code: 0x3f, // ALU64 | DIV | X
            dst: 1,
            src: 2,
            off: 1,
            imm: 0,
        };
        let movsx = Insn {
            code: 0xbc, // ALU | MOV | X
            dst: 1,
            src: 2,
            off: 8,
            imm: 0,
        };
        assert_eq!(unsupported_v4(&[Insn::exit()]), None);
        assert_eq!(
            unsupported_v4(&[Insn::mov64(1, 2), sdiv, Insn::exit()]),
            Some(1)
        );
        assert_eq!(unsupported_v4(&[movsx, Insn::exit()]), Some(0));
        assert_eq!(
            unsupported_v4(&[Insn { off: 0, ..sdiv }, Insn::exit()]),
            None
        );
    }

    #[test]
    fn conditional_and_32_bit_jumps_lddw_and_local_calls_are_re_aimed() {
        let jeq32 = |off| Insn {
            code: 0x16, // JMP32 | JEQ | K
            dst: 1,
            src: 0,
            off,
            imm: 0,
        };
        let jgt = |off| Insn {
            code: 0x25, // JMP | JGT | K
            dst: 1,
            src: 0,
            off,
            imm: 3,
        };
        let lddw = [
            Insn {
                code: LD_DW_IMM,
                dst: 2,
                src: 0,
                off: 0,
                imm: 1,
            },
            Insn {
                code: 0,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            },
        ];
        let local_call = |imm| Insn {
            code: CALL,
            dst: 0,
            src: 1,
            off: 0,
            imm,
        };
        // 0: jeq32 +4 (to 5)  1: call 5  2-3: lddw  4: jgt -5 (to 0)  5: call local +1 (to 7)
        // 6: exit  7: call 5  8: exit
        let insns = [
            jeq32(4),
            Insn::call(5),
            lddw[0],
            lddw[1],
            jgt(-5),
            local_call(1),
            Insn::exit(),
            Insn::call(5),
            Insn::exit(),
        ];
        let out = stop_after_calls_of(&insns, 5).expect("rewritten");
        // New places: 0, 1 (+2), 4, 5, 6, 7, 8, 9 (+2), 12.
        assert_eq!(out[0], jeq32(6), "to the local call, now at 7");
        assert_eq!(out[4..6], lddw, "lddw moves whole");
        assert_eq!(out[6], jgt(-7), "back to 0");
        assert_eq!(
            out[7],
            local_call(1),
            "to the call at 9, still one past the exit"
        );
        assert_eq!(out[9], Insn::call(5));
        assert_eq!(out[10..12], [Insn::jne_imm(0, 0, 1), Insn::exit()]);
        assert_eq!(out.len(), 13);
    }
}
