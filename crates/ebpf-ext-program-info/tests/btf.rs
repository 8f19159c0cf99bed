//! BTF-resolved functions declared with `btf_functions!` and published by
//! `BtfFunctionProvider`: what the provider data holds, what the core's client reads from it
//! over NMR, and the functions the addresses lead to.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ffi::CStr;

use ebpf_ext_core_sim::bpf::{BtfPrototype, PublishedBtfFunction, published_btf_functions};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_program_info::{
    Anything, BtfFunctionProvider, Bytes, CellsMut, Input, SharedOutput, btf_functions,
};
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    EBPF_RETURN_TYPE_INTEGER,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER, EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER,
};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_usersim::Kernel;

const MODULE: GUID = GUID::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
const TAG: PoolTag = PoolTag::new(*b"BtfT");

/// Writes the key's low byte to every byte of `out`; returns how many.
fn add_to_each(key: u64, out: SharedOutput<'_>) -> u64 {
    #[expect(clippy::cast_possible_truncation, reason = "the low byte")]
    let byte = key as u8;
    (0..out.len()).for_each(|i| out.set(i, byte));
    out.len() as u64
}

/// The sum of the bytes.
fn sum(bytes: Input<'_>) -> u64 {
    bytes.iter().map(u64::from).sum()
}

btf_functions! {
    /// Two functions of the test module.
    static FUNCTIONS = module MODULE;
    c"test_add_to_each" => add_to_each(Anything, CellsMut);
    c"test_sum" => sum(Bytes);
}

type Function = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;

#[test]
fn the_declaration_builds_index_parallel_prototypes_and_addresses() {
    let data = FUNCTIONS.raw();
    assert_eq!(FUNCTIONS.module(), MODULE);
    assert_eq!(
        (data.header, data.btf_resolved_function_count),
        (EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER, 2)
    );
    // SAFETY: two prototypes, 'static.
    let prototypes =
        unsafe { core::slice::from_raw_parts(data.btf_resolved_function_prototypes, 2) };
    // SAFETY: two addresses, 'static.
    let addresses = unsafe { core::slice::from_raw_parts(data.btf_resolved_function_addresses, 2) };
    // SAFETY: the names are 'static C strings.
    let name = |i: usize| unsafe { CStr::from_ptr(prototypes[i].name) };
    assert_eq!((name(0), name(1)), (c"test_add_to_each", c"test_sum"));
    for p in prototypes {
        assert_eq!(p.header, EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER);
        assert_eq!((p.return_type, p.flags), (EBPF_RETURN_TYPE_INTEGER, 0));
    }
    assert_eq!(
        prototypes[0].arguments,
        [
            EBPF_ARGUMENT_TYPE_ANYTHING,
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            0,
            0
        ]
    );
    assert_eq!(
        prototypes[1].arguments,
        [
            EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            0,
            0,
            0
        ]
    );
    // The addresses are the typed functions behind the helper calling convention.
    // SAFETY: a published address, a function of five registers.
    let add = unsafe { core::mem::transmute::<u64, Function>(addresses[0]) };
    // SAFETY: as above.
    let summed = unsafe { core::mem::transmute::<u64, Function>(addresses[1]) };
    let mut bytes = [1u8, 2, 3];
    let address = bytes.as_mut_ptr() as u64;
    // SAFETY: three writable bytes at `address`.
    assert_eq!(unsafe { add(10, address, 3, 0, 0) }, 3);
    assert_eq!(bytes, [10, 10, 10]);
    // SAFETY: three readable bytes.
    assert_eq!(unsafe { summed(address, 3, 0, 0, 0) }, 30);
}

#[test]
fn the_core_reads_the_registered_functions_by_module_and_no_longer_once_deregistered() {
    let kernel = Kernel::new();
    assert!(
        published_btf_functions(MODULE).is_err(),
        "nothing registered"
    );
    let provider = BtfFunctionProvider::register(&FUNCTIONS, TAG).expect("registers");
    let published = published_btf_functions(MODULE).expect("read");
    let prototype = |arguments| BtfPrototype {
        return_type: EBPF_RETURN_TYPE_INTEGER,
        arguments,
        flags: 0,
    };
    assert_eq!(
        published,
        [
            PublishedBtfFunction {
                name: "test_add_to_each".into(),
                prototype: prototype([1, 11, 2, 0, 0]),
            },
            PublishedBtfFunction {
                name: "test_sum".into(),
                prototype: prototype([9, 2, 0, 0, 0]),
            },
        ]
    );
    assert!(
        published_btf_functions(GUID::from_u128(1)).is_err(),
        "another module"
    );
    drop(provider);
    assert!(published_btf_functions(MODULE).is_err(), "deregistered");
    kernel.assert_no_leaks();
}
