//! core-sim's reader of an object's `.BTF`: `ebpf_ext_core_sim::bpf::btf_externs` on
//! arbitrary bytes, which BPF objects of any origin reach when they load.
//!
//! Besides "no panic, no out-of-bounds read": every function found has a type id of at least
//! 1, a non-empty name (clang names every extern), and reading the same bytes again gives the
//! same result (the reader keeps no state).
//!
//! Seeds: `seeds/btf_externs/` from `seeds/make_seeds.py` (well-formed BTF with an extern
//! function and its `module_id` tag, and the kinds around it).
#![no_main]

use ebpf_ext_core_sim::bpf::btf_externs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let found = btf_externs(bytes);
    if let Ok(functions) = &found {
        for (id, function) in functions {
            assert!(*id >= 1, "type ids start at 1");
            assert!(!function.name.is_empty(), "an extern has a name");
        }
    }
    assert_eq!(btf_externs(bytes), found, "the same bytes read the same");
});
