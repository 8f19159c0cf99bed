//! core-sim's BPF interpreter: `ebpf_ext_core_sim::bpf::interpret` on arbitrary instructions
//! over a 64-byte buffer, which programs of any origin reach when they run.
//!
//! Besides "no panic, no access outside the buffer or the interpreter's stack"
//! (AddressSanitizer reports one in another allocation): the 16 bytes on either side of the
//! buffer, in the same allocation, are left as they were, and a fault or refusal names an
//! instruction of the program. (Running twice need not agree: a program may return or store
//! an address.)
//!
//! Input: the buffer's 64 bytes, then the instructions. Seeds: `seeds/bpf_interpret/` from
//! `seeds/make_seeds.py` (loads and stores, a local call, atomics, a loop).
#![no_main]

use ebpf_ext_core_sim::bpf::interpret;
use libfuzzer_sys::fuzz_target;

/// Instructions one input may run: enough for the seeds' loops, few enough to keep inputs fast.
const STEPS: u64 = 10_000;
const MEMORY: usize = 64;
const GUARD: usize = 16;
const PATTERN: u8 = 0xA5;

fuzz_target!(|input: &[u8]| {
    let (memory, code) = input.split_at(input.len().min(MEMORY));
    let mut allocation = [PATTERN; GUARD + MEMORY + GUARD];
    let buffer = &mut allocation[GUARD..GUARD + MEMORY];
    buffer[..memory.len()].copy_from_slice(memory);
    let result = interpret(code, buffer, STEPS);
    assert!(
        allocation[..GUARD]
            .iter()
            .chain(&allocation[GUARD + MEMORY..])
            .all(|&b| b == PATTERN),
        "a byte beside the buffer changed: {result:?}"
    );
    if let Err(message) = &result {
        let instruction = message
            .strip_prefix("instruction ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok());
        match instruction {
            Some(at) => assert!(at < code.len() / 8, "{message}: past the program"),
            None => assert_eq!(
                message, "no instructions",
                "a message without its instruction"
            ),
        }
    }
});
