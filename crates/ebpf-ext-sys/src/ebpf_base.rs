//! prevail's `ebpf_base.h`: helper return and argument types.

/// `ebpf_return_type_t`.
pub type ebpf_return_type_t = i32;
/// `EBPF_RETURN_TYPE_INTEGER`.
pub const EBPF_RETURN_TYPE_INTEGER: ebpf_return_type_t = 0;
/// `EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL`.
pub const EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL: ebpf_return_type_t = 1;
/// `EBPF_RETURN_TYPE_INTEGER_OR_NO_RETURN_IF_SUCCEED`.
pub const EBPF_RETURN_TYPE_INTEGER_OR_NO_RETURN_IF_SUCCEED: ebpf_return_type_t = 2;
/// `EBPF_RETURN_TYPE_UNSUPPORTED`.
pub const EBPF_RETURN_TYPE_UNSUPPORTED: ebpf_return_type_t = 3;

/// `ebpf_argument_type_t`.
pub type ebpf_argument_type_t = i32;
/// `EBPF_ARGUMENT_TYPE_DONTCARE`.
pub const EBPF_ARGUMENT_TYPE_DONTCARE: ebpf_argument_type_t = 0;
/// `EBPF_ARGUMENT_TYPE_ANYTHING`.
pub const EBPF_ARGUMENT_TYPE_ANYTHING: ebpf_argument_type_t = 1;
/// `EBPF_ARGUMENT_TYPE_CONST_SIZE`.
pub const EBPF_ARGUMENT_TYPE_CONST_SIZE: ebpf_argument_type_t = 2;
/// `EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO`.
pub const EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO: ebpf_argument_type_t = 3;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_CTX`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CTX: ebpf_argument_type_t = 4;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_MAP`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP: ebpf_argument_type_t = 5;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS: ebpf_argument_type_t = 6;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY: ebpf_argument_type_t = 7;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE: ebpf_argument_type_t = 8;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM: ebpf_argument_type_t = 9;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL: ebpf_argument_type_t = 10;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM: ebpf_argument_type_t = 11;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_STACK`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_STACK: ebpf_argument_type_t = 12;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL: ebpf_argument_type_t = 13;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL: ebpf_argument_type_t = 14;
/// `EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL`.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL: ebpf_argument_type_t = 15;
/// `EBPF_ARGUMENT_TYPE_UNSUPPORTED`.
pub const EBPF_ARGUMENT_TYPE_UNSUPPORTED: ebpf_argument_type_t = 33;
