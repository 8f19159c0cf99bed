//! The load-time check of context accesses, as the verifier does it: every load from and
//! store to the context must lie within the context descriptor's size.
//!
//! A forward data-flow pass over the program tracks which registers hold the context
//! pointer plus a known constant (r1 on entry; copies, constant additions), merging states
//! where control flow joins (a register keeps its offset only if every path agrees).

use super::insn::{CALL, CLASS_JMP, CLASS_JMP32, EXIT, Insn, LD_DW_IMM, MOV64_REG};

const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU64: u8 = 0x07;
/// `BPF_ALU64 | BPF_ADD | BPF_K`.
const ADD64_IMM: u8 = 0x07;
/// `BPF_JMP | BPF_JA`.
const JA: u8 = 0x05;
/// `BPF_JMP32 | BPF_JA` (`gotol`): its offset is `imm`.
const GOTOL: u8 = 0x06;
/// `BPF_ATOMIC` mode of a store.
const MODE_ATOMIC: u8 = 0xc0;

/// A context access beyond the descriptor's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContextAccess {
    pub(crate) insn: usize,
    pub(crate) offset: i64,
    pub(crate) size: u8,
}

type State = [Option<i64>; 11];

fn access_size(code: u8) -> u8 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

fn merge(into: &mut State, from: &State) -> bool {
    let mut changed = false;
    for (a, b) in into.iter_mut().zip(from) {
        if a.is_some() && *a != *b {
            *a = None;
            changed = true;
        }
    }
    changed
}

fn target(pc: usize, off: i64) -> Option<usize> {
    usize::try_from(i64::try_from(pc).ok()? + 1 + off).ok()
}

/// The first access through the context pointer outside `[0, context_size)`, if any.
pub(crate) fn context_accesses(insns: &[Insn], context_size: i64) -> Option<ContextAccess> {
    let mut states: Vec<Option<State>> = vec![None; insns.len()];
    let mut entry: State = [None; 11];
    entry[1] = Some(0);
    states[0] = Some(entry);
    let mut work = vec![0usize];
    while let Some(pc) = work.pop() {
        let Some(mut state) = states[pc] else {
            continue;
        };
        let insn = insns[pc];
        let dst = usize::from(insn.dst).min(10);
        let src = usize::from(insn.src).min(10);
        let mut next = vec![pc + 1];
        let check = |base: Option<i64>, size: u8| -> Option<ContextAccess> {
            let offset = base? + i64::from(insn.off);
            (offset < 0 || offset + i64::from(size) > context_size).then_some(ContextAccess {
                insn: pc,
                offset,
                size,
            })
        };
        match insn.class() {
            _ if insn.code == LD_DW_IMM => {
                state[dst] = None;
                next = vec![pc + 2];
            }
            CLASS_LDX => {
                if let Some(bad) = check(state[src], access_size(insn.code)) {
                    return Some(bad);
                }
                state[dst] = None;
            }
            CLASS_ST => {
                if let Some(bad) = check(state[dst], access_size(insn.code)) {
                    return Some(bad);
                }
            }
            CLASS_STX => {
                if let Some(bad) = check(state[dst], access_size(insn.code)) {
                    return Some(bad);
                }
                if insn.code & 0xe0 == MODE_ATOMIC {
                    state[src] = None;
                    state[0] = None;
                }
            }
            CLASS_ALU64 if insn.code == MOV64_REG && insn.off == 0 => state[dst] = state[src],
            CLASS_ALU64 if insn.code == ADD64_IMM => {
                state[dst] = state[dst].map(|k| k + i64::from(insn.imm));
            }
            CLASS_JMP | CLASS_JMP32 => match insn.code {
                EXIT => next.clear(),
                CALL if insn.src == 1 => {
                    // A call to a function of the program: its r1–r5 are the arguments.
                    if let Some(callee) = target(pc, i64::from(insn.imm)) {
                        let mut callee_state: State = [None; 11];
                        callee_state[1..=5].copy_from_slice(&state[1..=5]);
                        push(&mut states, &mut work, callee, &callee_state);
                    }
                    state[0..=5].fill(None);
                }
                CALL => state[0..=5].fill(None),
                JA => next = target(pc, i64::from(insn.off)).into_iter().collect(),
                GOTOL => next = target(pc, i64::from(insn.imm)).into_iter().collect(),
                _ => next.extend(target(pc, i64::from(insn.off))),
            },
            _ => state[dst] = None,
        }
        for n in next {
            push(&mut states, &mut work, n, &state);
        }
    }
    None
}

fn push(states: &mut [Option<State>], work: &mut Vec<usize>, pc: usize, state: &State) {
    let Some(slot) = states.get_mut(pc) else {
        return;
    };
    match slot {
        None => {
            *slot = Some(*state);
            work.push(pc);
        }
        Some(existing) => {
            if merge(existing, state) {
                work.push(pc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_INSN: Insn = Insn {
        code: EXIT,
        dst: 0,
        src: 0,
        off: 0,
        imm: 0,
    };

    fn ldx(dst: u8, src: u8, off: i16) -> Insn {
        Insn {
            code: 0x79,
            dst,
            src,
            off,
            imm: 0,
        }
    }

    #[test]
    fn an_access_through_a_copy_of_the_context_is_checked() {
        let exit = EXIT_INSN;
        let ok = [Insn::mov64(6, 1), ldx(0, 6, 8), exit];
        assert_eq!(context_accesses(&ok, 24), None);
        let bad = [Insn::mov64(6, 1), ldx(0, 6, 24), exit];
        assert_eq!(
            context_accesses(&bad, 24),
            Some(ContextAccess {
                insn: 1,
                offset: 24,
                size: 8
            })
        );
        // After a call, r1 no longer holds the context.
        let after_call = [Insn::call(1), ldx(0, 1, 64), exit];
        assert_eq!(context_accesses(&after_call, 24), None);
    }

    #[test]
    fn gotol_is_followed_by_its_immediate_and_never_falls_through() {
        let exit = EXIT_INSN;
        let gotol = |imm| Insn {
            code: GOTOL,
            dst: 0,
            src: 0,
            off: 0,
            imm,
        };
        let jumps_to_bad = [gotol(1), exit, ldx(0, 1, 4096), exit];
        assert_eq!(
            context_accesses(&jumps_to_bad, 24).map(|a| a.insn),
            Some(2),
            "the target is checked"
        );
        let skips_bad = [gotol(1), ldx(0, 1, 4096), exit];
        assert_eq!(context_accesses(&skips_bad, 24), None, "dead code is not");
    }
}
