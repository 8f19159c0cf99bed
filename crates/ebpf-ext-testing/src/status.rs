//! NTSTATUS values as a kernel engineer reads them: hex, with the name where the project
//! knows it (every status `ebpf-ext-sys` defines).

use ebpf_ext_sys::ntdef::NTSTATUS;

/// `(value, name)` of every status `ebpf-ext-sys` defines.
macro_rules! named {
    ($($name:ident,)*) => {
        &[$((ebpf_ext_sys::ntstatus::$name, stringify!($name)),)*]
    };
}

const NAMES: &[(NTSTATUS, &str)] = named![
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    STATUS_PENDING,
    STATUS_OBJECT_NAME_EXISTS,
    STATUS_BUFFER_OVERFLOW,
    STATUS_UNSUCCESSFUL,
    STATUS_NOT_IMPLEMENTED,
    STATUS_ACCESS_VIOLATION,
    STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER,
    STATUS_NO_SUCH_FILE,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_NO_MEMORY,
    STATUS_ACCESS_DENIED,
    STATUS_BUFFER_TOO_SMALL,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_UNKNOWN_REVISION,
    STATUS_NONE_MAPPED,
    STATUS_INVALID_SECURITY_DESCR,
    STATUS_INVALID_IMAGE_FORMAT,
    STATUS_INTEGER_OVERFLOW,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_DEVICE_NOT_READY,
    STATUS_NOT_SUPPORTED,
    STATUS_TOO_MANY_COMMANDS,
    STATUS_INVALID_PARAMETER_3,
    STATUS_INVALID_PARAMETER_4,
    STATUS_STACK_OVERFLOW,
    STATUS_CANCELLED,
    STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_BUFFER_SIZE,
    STATUS_TOO_MANY_NODES,
    STATUS_NOT_FOUND,
    STATUS_OBJECTID_EXISTS,
    STATUS_RETRY,
    STATUS_RESOURCE_NOT_OWNED,
    STATUS_DRIVER_UNABLE_TO_LOAD,
    STATUS_NO_MORE_MATCHES,
    STATUS_NOINTERFACE,
    STATUS_VERIFIER_STOP,
    STATUS_ALREADY_INITIALIZED,
    STATUS_ALREADY_REGISTERED,
    STATUS_CONTENT_BLOCKED,
    STATUS_INVALID_STATE_TRANSITION,
    STATUS_GENERIC_COMMAND_FAILED,
    STATUS_INVALID_ACL,
    STATUS_INVALID_SID,
    STATUS_REVISION_MISMATCH,
    STATUS_ALLOTTED_SPACE_EXCEEDED,
    STATUS_DATATYPE_MISALIGNMENT,
    STATUS_PROCEDURE_NOT_FOUND,
];

/// The name of `status`, if `ebpf-ext-sys` defines it.
#[must_use]
pub fn name(status: NTSTATUS) -> Option<&'static str> {
    NAMES.iter().find(|(v, _)| *v == status).map(|(_, n)| *n)
}

/// `0xC000000D STATUS_INVALID_PARAMETER`, or just the hex for a status the project does not
/// name.
#[must_use]
pub fn describe(status: NTSTATUS) -> String {
    let hex = format!("{:#010X}", status.cast_unsigned()).replacen("0X", "0x", 1);
    match name(status) {
        Some(name) => format!("{hex} {name}"),
        None => hex,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebpf_ext_sys::ntstatus::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};

    #[test]
    fn statuses_read_as_hex_and_name() {
        assert_eq!(describe(STATUS_SUCCESS), "0x00000000 STATUS_SUCCESS");
        assert_eq!(
            describe(STATUS_INVALID_PARAMETER),
            "0xC000000D STATUS_INVALID_PARAMETER"
        );
        assert_eq!(describe(0xC0DE_0001_u32.cast_signed()), "0xC0DE0001");
    }

    #[test]
    fn no_two_names_share_a_value() {
        for (i, (value, name)) in NAMES.iter().enumerate() {
            assert!(
                NAMES[..i].iter().all(|(v, _)| v != value),
                "{name} repeats a value"
            );
        }
    }
}
