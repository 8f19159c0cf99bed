//! `ebpf_result.h`: the eBPF core's result codes, and the core's own mapping to and from
//! `NTSTATUS` (`ebpf_error.h`).

use crate::ntdef::NTSTATUS;
#[allow(clippy::wildcard_imports, reason = "the table names 35 status codes")]
use crate::ntstatus::*;

/// `ebpf_result_t`: a 4-byte C enum. Held as an integer because a value received from the
/// core may be outside the known range.
pub type ebpf_result_t = i32;

/// `EBPF_SUCCESS` (0).
pub const EBPF_SUCCESS: ebpf_result_t = 0;
/// `EBPF_VERIFICATION_FAILED` (1).
pub const EBPF_VERIFICATION_FAILED: ebpf_result_t = 1;
/// `EBPF_JIT_COMPILATION_FAILED` (2).
pub const EBPF_JIT_COMPILATION_FAILED: ebpf_result_t = 2;
/// `EBPF_PROGRAM_LOAD_FAILED` (3).
pub const EBPF_PROGRAM_LOAD_FAILED: ebpf_result_t = 3;
/// `EBPF_INVALID_FD` (4).
pub const EBPF_INVALID_FD: ebpf_result_t = 4;
/// `EBPF_INVALID_OBJECT` (5).
pub const EBPF_INVALID_OBJECT: ebpf_result_t = 5;
/// `EBPF_INVALID_ARGUMENT` (6).
pub const EBPF_INVALID_ARGUMENT: ebpf_result_t = 6;
/// `EBPF_OBJECT_NOT_FOUND` (7).
pub const EBPF_OBJECT_NOT_FOUND: ebpf_result_t = 7;
/// `EBPF_OBJECT_ALREADY_EXISTS` (8).
pub const EBPF_OBJECT_ALREADY_EXISTS: ebpf_result_t = 8;
/// `EBPF_FILE_NOT_FOUND` (9).
pub const EBPF_FILE_NOT_FOUND: ebpf_result_t = 9;
/// `EBPF_ALREADY_PINNED` (10).
pub const EBPF_ALREADY_PINNED: ebpf_result_t = 10;
/// `EBPF_NOT_PINNED` (11).
pub const EBPF_NOT_PINNED: ebpf_result_t = 11;
/// `EBPF_NO_MEMORY` (12).
pub const EBPF_NO_MEMORY: ebpf_result_t = 12;
/// `EBPF_PROGRAM_TOO_LARGE` (13).
pub const EBPF_PROGRAM_TOO_LARGE: ebpf_result_t = 13;
/// `EBPF_RPC_EXCEPTION` (14).
pub const EBPF_RPC_EXCEPTION: ebpf_result_t = 14;
/// `EBPF_ALREADY_INITIALIZED` (15).
pub const EBPF_ALREADY_INITIALIZED: ebpf_result_t = 15;
/// `EBPF_ELF_PARSING_FAILED` (16).
pub const EBPF_ELF_PARSING_FAILED: ebpf_result_t = 16;
/// `EBPF_FAILED` (17).
pub const EBPF_FAILED: ebpf_result_t = 17;
/// `EBPF_OPERATION_NOT_SUPPORTED` (18).
pub const EBPF_OPERATION_NOT_SUPPORTED: ebpf_result_t = 18;
/// `EBPF_KEY_NOT_FOUND` (19).
pub const EBPF_KEY_NOT_FOUND: ebpf_result_t = 19;
/// `EBPF_ACCESS_DENIED` (20).
pub const EBPF_ACCESS_DENIED: ebpf_result_t = 20;
/// `EBPF_BLOCKED_BY_POLICY` (21).
pub const EBPF_BLOCKED_BY_POLICY: ebpf_result_t = 21;
/// `EBPF_ARITHMETIC_OVERFLOW` (22).
pub const EBPF_ARITHMETIC_OVERFLOW: ebpf_result_t = 22;
/// `EBPF_EXTENSION_FAILED_TO_LOAD` (23).
pub const EBPF_EXTENSION_FAILED_TO_LOAD: ebpf_result_t = 23;
/// `EBPF_INSUFFICIENT_BUFFER` (24).
pub const EBPF_INSUFFICIENT_BUFFER: ebpf_result_t = 24;
/// `EBPF_NO_MORE_KEYS` (25).
pub const EBPF_NO_MORE_KEYS: ebpf_result_t = 25;
/// `EBPF_KEY_ALREADY_EXISTS` (26).
pub const EBPF_KEY_ALREADY_EXISTS: ebpf_result_t = 26;
/// `EBPF_NO_MORE_TAIL_CALLS` (27).
pub const EBPF_NO_MORE_TAIL_CALLS: ebpf_result_t = 27;
/// `EBPF_PENDING` (28).
pub const EBPF_PENDING: ebpf_result_t = 28;
/// `EBPF_OUT_OF_SPACE` (29).
pub const EBPF_OUT_OF_SPACE: ebpf_result_t = 29;
/// `EBPF_CANCELED` (30).
pub const EBPF_CANCELED: ebpf_result_t = 30;
/// `EBPF_INVALID_POINTER` (31).
pub const EBPF_INVALID_POINTER: ebpf_result_t = 31;
/// `EBPF_TIMEOUT` (32).
pub const EBPF_TIMEOUT: ebpf_result_t = 32;
/// `EBPF_STALE_ID` (33).
pub const EBPF_STALE_ID: ebpf_result_t = 33;
/// `EBPF_INVALID_STATE` (34).
pub const EBPF_INVALID_STATE: ebpf_result_t = 34;
/// `EBPF_RESULT_COUNT`: number of defined results.
pub const EBPF_RESULT_COUNT: ebpf_result_t = 35;

/// The core's `_ebpf_result_mapping[]`: result `i` maps to `EBPF_RESULT_TO_NTSTATUS[i]`.
pub const EBPF_RESULT_TO_NTSTATUS: [NTSTATUS; 35] = [
    STATUS_SUCCESS,
    STATUS_VERIFIER_STOP,
    STATUS_NONE_MAPPED,
    STATUS_GENERIC_COMMAND_FAILED,
    STATUS_INVALID_HANDLE,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_OBJECTID_EXISTS,
    STATUS_NO_SUCH_FILE,
    STATUS_OBJECT_NAME_EXISTS,
    STATUS_RESOURCE_NOT_OWNED,
    STATUS_NO_MEMORY,
    STATUS_TOO_MANY_COMMANDS,
    RPC_NT_CALL_FAILED,
    STATUS_ALREADY_INITIALIZED,
    STATUS_INVALID_IMAGE_FORMAT,
    STATUS_UNSUCCESSFUL,
    STATUS_NOT_SUPPORTED,
    STATUS_NOT_FOUND,
    STATUS_ACCESS_DENIED,
    STATUS_CONTENT_BLOCKED,
    STATUS_INTEGER_OVERFLOW,
    STATUS_DRIVER_UNABLE_TO_LOAD,
    STATUS_BUFFER_OVERFLOW,
    STATUS_NO_MORE_MATCHES,
    STATUS_ALREADY_REGISTERED,
    STATUS_TOO_MANY_NODES,
    STATUS_PENDING,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_CANCELLED,
    STATUS_ACCESS_VIOLATION,
    STATUS_TIMEOUT,
    STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_STATE_TRANSITION,
];
