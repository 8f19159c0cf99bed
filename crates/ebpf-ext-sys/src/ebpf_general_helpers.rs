//! The prototypes of the core's general helpers (ids 1 to 35 of `ebpf_structs.h`'s
//! `ebpf_helper_id_t`, as `libs/execution_context/ebpf_general_helpers.c` declares them): what
//! the verifier checks a call to one of these ids against.
//!
//! The verifier never sees an extension's own prototypes for these ids: it is given the
//! program type's specific helpers and the core's general ones (`ebpf_program_get_program_info`,
//! and the store's `GlobalHelpers` for native modules). A global-helper override therefore
//! receives exactly what this table's prototype lets through, whatever the extension declares.

use crate::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE,
    EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO, EBPF_ARGUMENT_TYPE_DONTCARE,
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_ARGUMENT_TYPE_PTR_TO_MAP,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    EBPF_RETURN_TYPE_INTEGER, EBPF_RETURN_TYPE_INTEGER_OR_NO_RETURN_IF_SUCCEED,
    EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL, ebpf_argument_type_t, ebpf_return_type_t,
};

/// The prototype the verifier checks calls to one general helper against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneralHelperPrototype {
    /// `ebpf_helper_id_t`.
    pub id: u32,
    /// Return type.
    pub return_type: ebpf_return_type_t,
    /// Argument types (unused ones `DONTCARE`).
    pub arguments: [ebpf_argument_type_t; 5],
}

const DC: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_DONTCARE;
const ANY: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_ANYTHING;
const SIZE: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_CONST_SIZE;
const SIZE0: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO;
const CTX: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_CTX;
const MAP: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_MAP;
const KEY: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY;
const VALUE: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE;
const READ: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM;
const READ0: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL;
const WRITE: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM;
const INT: ebpf_return_type_t = EBPF_RETURN_TYPE_INTEGER;
const VALUE_OR_NULL: ebpf_return_type_t = EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL;

const fn helper(
    id: u32,
    return_type: ebpf_return_type_t,
    arguments: [ebpf_argument_type_t; 5],
) -> GeneralHelperPrototype {
    GeneralHelperPrototype {
        id,
        return_type,
        arguments,
    }
}

/// The core's general helpers, in id order (entry `n - 1` is id `n`).
pub const GENERAL_HELPER_PROTOTYPES: [GeneralHelperPrototype; 35] = [
    // bpf_map_lookup_elem, bpf_map_update_elem, bpf_map_delete_elem,
    // bpf_map_lookup_and_delete_elem
    helper(1, VALUE_OR_NULL, [MAP, KEY, DC, DC, DC]),
    helper(2, INT, [MAP, KEY, VALUE, ANY, DC]),
    helper(3, INT, [MAP, KEY, DC, DC, DC]),
    helper(4, VALUE_OR_NULL, [MAP, KEY, DC, DC, DC]),
    // bpf_tail_call
    helper(
        5,
        EBPF_RETURN_TYPE_INTEGER_OR_NO_RETURN_IF_SUCCEED,
        [CTX, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS, ANY, DC, DC],
    ),
    // bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_get_smp_processor_id, bpf_ktime_get_ns
    helper(6, INT, [DC; 5]),
    helper(7, INT, [DC; 5]),
    helper(8, INT, [DC; 5]),
    helper(9, INT, [DC; 5]),
    // bpf_csum_diff
    helper(10, INT, [READ0, SIZE0, READ0, SIZE0, ANY]),
    // bpf_ringbuf_output
    helper(11, INT, [MAP, READ, SIZE, ANY, DC]),
    // bpf_trace_printk2 … 5
    helper(12, INT, [READ, SIZE, DC, DC, DC]),
    helper(13, INT, [READ, SIZE, ANY, DC, DC]),
    helper(14, INT, [READ, SIZE, ANY, ANY, DC]),
    helper(15, INT, [READ, SIZE, ANY, ANY, ANY]),
    // bpf_map_push_elem, bpf_map_pop_elem, bpf_map_peek_elem
    helper(16, INT, [MAP, VALUE, ANY, DC, DC]),
    helper(17, INT, [MAP, VALUE, DC, DC, DC]),
    helper(18, INT, [MAP, VALUE, DC, DC, DC]),
    // bpf_get_current_pid_tgid, bpf_get_current_logon_id, bpf_is_current_admin
    helper(19, INT, [DC; 5]),
    helper(20, INT, [CTX, DC, DC, DC, DC]),
    helper(21, INT, [CTX, DC, DC, DC, DC]),
    // bpf_memcpy_s, bpf_memcmp_s, bpf_memset, bpf_memmove_s
    helper(22, INT, [WRITE, SIZE0, READ, SIZE0, DC]),
    helper(23, INT, [READ, SIZE0, READ, SIZE0, DC]),
    helper(24, INT, [WRITE, SIZE0, ANY, DC, DC]),
    helper(25, INT, [WRITE, SIZE0, READ, SIZE0, DC]),
    // bpf_get_socket_cookie (no implementation in the core: an extension overrides it)
    helper(26, INT, [CTX, DC, DC, DC, DC]),
    // bpf_strncpy_s, bpf_strncat_s, bpf_strnlen_s
    helper(27, INT, [WRITE, SIZE0, READ, SIZE0, DC]),
    helper(28, INT, [WRITE, SIZE0, READ, SIZE0, DC]),
    helper(29, INT, [READ, SIZE0, DC, DC, DC]),
    // bpf_ktime_get_boot_ms, bpf_ktime_get_ms
    helper(30, INT, [DC; 5]),
    helper(31, INT, [DC; 5]),
    // bpf_perf_event_output
    helper(32, INT, [CTX, MAP, ANY, READ, SIZE]),
    // bpf_get_current_process_start_key, bpf_get_current_thread_create_time
    helper(33, INT, [DC; 5]),
    helper(34, INT, [DC; 5]),
    // bpf_redirect_map (no implementation in the core: an extension overrides it)
    helper(35, INT, [MAP, ANY, ANY, DC, DC]),
];

/// The prototype of general helper `id`; `None` if the core has no general helper of that id.
#[must_use]
pub const fn general_helper_prototype(id: u32) -> Option<GeneralHelperPrototype> {
    let table = GENERAL_HELPER_PROTOTYPES;
    let mut i = 0;
    while i < table.len() {
        if table[i].id == id {
            return Some(table[i]);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{GENERAL_HELPER_PROTOTYPES, general_helper_prototype};

    #[test]
    fn the_table_is_in_id_order_from_1_and_looked_up_by_id() {
        for (index, helper) in GENERAL_HELPER_PROTOTYPES.iter().enumerate() {
            assert_eq!(helper.id as usize, index + 1);
            assert_eq!(general_helper_prototype(helper.id), Some(*helper));
        }
        assert_eq!(general_helper_prototype(0), None);
        assert_eq!(general_helper_prototype(36), None);
    }
}
