//! The SDK's one error type, and the eBPF core's mapping between `ebpf_result_t` and
//! `NTSTATUS`.
//!
//! Every crate of the SDK returns [`Result`]. An [`Error`] converts to the `NTSTATUS` a kernel
//! callback returns and to the `ebpf_result_t` an eBPF invoke returns; statuses and results
//! received from the kernel or the core convert back. Unknown codes never panic: an unknown
//! `NTSTATUS` is kept as [`Error::Status`], an unknown `ebpf_result_t` becomes
//! [`Error::Unsuccessful`].
//!
//! # Mapping
//!
//! The mapping is the core's own (`ebpf_error.h`): `ebpf_result_to_ntstatus` forward, its exact
//! inverse backward, every other `NTSTATUS` to `EBPF_FAILED`.
//!
//! | `ebpf_result_t` | `NTSTATUS` | [`Error`] |
//! |---|---|---|
//! | `EBPF_SUCCESS` (0) | `STATUS_SUCCESS` | — (`Ok`) |
//! | `EBPF_VERIFICATION_FAILED` (1) | `STATUS_VERIFIER_STOP` | `Status` |
//! | `EBPF_JIT_COMPILATION_FAILED` (2) | `STATUS_NONE_MAPPED` | `Status` |
//! | `EBPF_PROGRAM_LOAD_FAILED` (3) | `STATUS_GENERIC_COMMAND_FAILED` | `Status` |
//! | `EBPF_INVALID_FD` (4) | `STATUS_INVALID_HANDLE` | `Status` |
//! | `EBPF_INVALID_OBJECT` (5) | `STATUS_INVALID_DEVICE_REQUEST` | `InvalidDeviceRequest` |
//! | `EBPF_INVALID_ARGUMENT` (6) | `STATUS_INVALID_PARAMETER` | `InvalidParameter` |
//! | `EBPF_OBJECT_NOT_FOUND` (7) | `STATUS_OBJECT_PATH_NOT_FOUND` | `ObjectNotFound` |
//! | `EBPF_OBJECT_ALREADY_EXISTS` (8) | `STATUS_OBJECTID_EXISTS` | `Status` |
//! | `EBPF_FILE_NOT_FOUND` (9) | `STATUS_NO_SUCH_FILE` | `Status` |
//! | `EBPF_ALREADY_PINNED` (10) | `STATUS_OBJECT_NAME_EXISTS` | `Status` |
//! | `EBPF_NOT_PINNED` (11) | `STATUS_RESOURCE_NOT_OWNED` | `Status` |
//! | `EBPF_NO_MEMORY` (12) | `STATUS_NO_MEMORY` | `NoMemory` |
//! | `EBPF_PROGRAM_TOO_LARGE` (13) | `STATUS_TOO_MANY_COMMANDS` | `Status` |
//! | `EBPF_RPC_EXCEPTION` (14) | `RPC_NT_CALL_FAILED` | `Status` |
//! | `EBPF_ALREADY_INITIALIZED` (15) | `STATUS_ALREADY_INITIALIZED` | `Status` |
//! | `EBPF_ELF_PARSING_FAILED` (16) | `STATUS_INVALID_IMAGE_FORMAT` | `Status` |
//! | `EBPF_FAILED` (17) | `STATUS_UNSUCCESSFUL` | `Unsuccessful` |
//! | `EBPF_OPERATION_NOT_SUPPORTED` (18) | `STATUS_NOT_SUPPORTED` | `NotSupported` |
//! | `EBPF_KEY_NOT_FOUND` (19) | `STATUS_NOT_FOUND` | `NotFound` |
//! | `EBPF_ACCESS_DENIED` (20) | `STATUS_ACCESS_DENIED` | `AccessDenied` |
//! | `EBPF_BLOCKED_BY_POLICY` (21) | `STATUS_CONTENT_BLOCKED` | `Status` |
//! | `EBPF_ARITHMETIC_OVERFLOW` (22) | `STATUS_INTEGER_OVERFLOW` | `ArithmeticOverflow` |
//! | `EBPF_EXTENSION_FAILED_TO_LOAD` (23) | `STATUS_DRIVER_UNABLE_TO_LOAD` | `ExtensionFailedToLoad` |
//! | `EBPF_INSUFFICIENT_BUFFER` (24) | `STATUS_BUFFER_OVERFLOW` | `Status` |
//! | `EBPF_NO_MORE_KEYS` (25) | `STATUS_NO_MORE_MATCHES` | `Status` |
//! | `EBPF_KEY_ALREADY_EXISTS` (26) | `STATUS_ALREADY_REGISTERED` | `Status` |
//! | `EBPF_NO_MORE_TAIL_CALLS` (27) | `STATUS_TOO_MANY_NODES` | `Status` |
//! | `EBPF_PENDING` (28) | `STATUS_PENDING` | `Status` |
//! | `EBPF_OUT_OF_SPACE` (29) | `STATUS_INSUFFICIENT_RESOURCES` | `InsufficientResources` |
//! | `EBPF_CANCELED` (30) | `STATUS_CANCELLED` | `Status` |
//! | `EBPF_INVALID_POINTER` (31) | `STATUS_ACCESS_VIOLATION` | `Status` |
//! | `EBPF_TIMEOUT` (32) | `STATUS_TIMEOUT` | `Status` |
//! | `EBPF_STALE_ID` (33) | `STATUS_INVALID_DEVICE_STATE` | `InvalidDeviceState` |
//! | `EBPF_INVALID_STATE` (34) | `STATUS_INVALID_STATE_TRANSITION` | `Status` |
//! | any other value (negative, ≥ 35) | `STATUS_UNSUCCESSFUL` | `Unsuccessful` |
//! | `EBPF_FAILED` | any other `NTSTATUS` (e.g. `STATUS_NOINTERFACE`, `STATUS_BUFFER_TOO_SMALL`) | `NoInterface`, `BufferTooSmall`, `Status` … |
//!
//! The core's forward table checks `result > count` rather than `>=`, so it would read past
//! its table for the value 35; this mapping treats 35 as unknown.

use crate::ebpf_result::{
    EBPF_FAILED, EBPF_RESULT_COUNT, EBPF_RESULT_TO_NTSTATUS, EBPF_SUCCESS, ebpf_result_t,
};
use crate::ntdef::{NT_SUCCESS, NTSTATUS};
#[allow(
    clippy::wildcard_imports,
    reason = "the mapping names most status codes"
)]
use crate::ntstatus::*;

/// `Result` with the SDK's [`Error`].
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

/// The SDK's error: what failed, convertible to `NTSTATUS` and `ebpf_result_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `STATUS_NO_MEMORY` / `EBPF_NO_MEMORY`: a pool allocation failed.
    #[error("out of memory")]
    NoMemory,
    /// `STATUS_INSUFFICIENT_RESOURCES` / `EBPF_OUT_OF_SPACE`.
    #[error("insufficient resources")]
    InsufficientResources,
    /// `STATUS_INVALID_PARAMETER` / `EBPF_INVALID_ARGUMENT`: bad input.
    #[error("invalid parameter")]
    InvalidParameter,
    /// `STATUS_INVALID_DEVICE_REQUEST` / `EBPF_INVALID_OBJECT`.
    #[error("invalid device request")]
    InvalidDeviceRequest,
    /// `STATUS_INVALID_DEVICE_STATE` / `EBPF_STALE_ID`: the object is not in a state that
    /// allows the operation.
    #[error("invalid state")]
    InvalidDeviceState,
    /// `STATUS_ACCESS_DENIED` / `EBPF_ACCESS_DENIED`.
    #[error("access denied")]
    AccessDenied,
    /// `STATUS_NOT_FOUND` / `EBPF_KEY_NOT_FOUND`.
    #[error("not found")]
    NotFound,
    /// `STATUS_OBJECT_PATH_NOT_FOUND` / `EBPF_OBJECT_NOT_FOUND`.
    #[error("object not found")]
    ObjectNotFound,
    /// `STATUS_NOT_SUPPORTED` / `EBPF_OPERATION_NOT_SUPPORTED`.
    #[error("not supported")]
    NotSupported,
    /// `STATUS_INTEGER_OVERFLOW` / `EBPF_ARITHMETIC_OVERFLOW`.
    #[error("arithmetic overflow")]
    ArithmeticOverflow,
    /// `STATUS_DRIVER_UNABLE_TO_LOAD` / `EBPF_EXTENSION_FAILED_TO_LOAD`.
    #[error("extension failed to load")]
    ExtensionFailedToLoad,
    /// `STATUS_NOINTERFACE` (→ `EBPF_FAILED`): an NMR attach was declined.
    #[error("interface declined")]
    NoInterface,
    /// `STATUS_BUFFER_TOO_SMALL` (→ `EBPF_FAILED`).
    #[error("buffer too small")]
    BufferTooSmall,
    /// `STATUS_UNSUCCESSFUL` / `EBPF_FAILED`: generic failure, and the value for unknown
    /// `ebpf_result_t` codes.
    #[error("unsuccessful")]
    Unsuccessful,
    /// A kernel routine failed: which one, and the status it returned.
    #[error("{api} failed with NTSTATUS {status:#010x}")]
    Api {
        /// The routine, by export name.
        api: &'static str,
        /// What it returned.
        status: NTSTATUS,
    },
    /// Any other `NTSTATUS`, kept as is.
    #[error("NTSTATUS {0:#010x}")]
    Status(NTSTATUS),
}

impl Error {
    /// An [`Error::Api`] naming the routine that failed.
    #[must_use]
    pub const fn api(api: &'static str, status: NTSTATUS) -> Self {
        Error::Api { api, status }
    }

    /// The `NTSTATUS` of this error, for a kernel callback to return.
    ///
    /// It may be a success-class code: an [`Error::Status`] or [`Error::Api`] keeps the code it
    /// was made from, and some `ebpf_result_t` values map to informational ones
    /// (`EBPF_PENDING` to `STATUS_PENDING`, `EBPF_ALREADY_PINNED` to
    /// `STATUS_OBJECT_NAME_EXISTS`), so that the code maps back to the same result. Where the
    /// caller reads any `NT_SUCCESS` status as success (a `DriverEntry`, an IRP's completion),
    /// map such a code to a failure first, as the facade's driver glue does.
    #[must_use]
    pub const fn ntstatus(self) -> NTSTATUS {
        match self {
            Error::NoMemory => STATUS_NO_MEMORY,
            Error::InsufficientResources => STATUS_INSUFFICIENT_RESOURCES,
            Error::InvalidParameter => STATUS_INVALID_PARAMETER,
            Error::InvalidDeviceRequest => STATUS_INVALID_DEVICE_REQUEST,
            Error::InvalidDeviceState => STATUS_INVALID_DEVICE_STATE,
            Error::AccessDenied => STATUS_ACCESS_DENIED,
            Error::NotFound => STATUS_NOT_FOUND,
            Error::ObjectNotFound => STATUS_OBJECT_PATH_NOT_FOUND,
            Error::NotSupported => STATUS_NOT_SUPPORTED,
            Error::ArithmeticOverflow => STATUS_INTEGER_OVERFLOW,
            Error::ExtensionFailedToLoad => STATUS_DRIVER_UNABLE_TO_LOAD,
            Error::NoInterface => STATUS_NOINTERFACE,
            Error::BufferTooSmall => STATUS_BUFFER_TOO_SMALL,
            Error::Unsuccessful => STATUS_UNSUCCESSFUL,
            Error::Api { status, .. } | Error::Status(status) => status,
        }
    }

    /// The `ebpf_result_t` for this error (through its `NTSTATUS`, as the core maps it).
    #[must_use]
    pub const fn ebpf_result(self) -> ebpf_result_t {
        ntstatus_to_ebpf_result(self.ntstatus())
    }

    /// The error for a non-success `NTSTATUS` code, even an informational one (used for codes
    /// that arrive as failures, such as `STATUS_PENDING` mapped from `EBPF_PENDING`).
    #[must_use]
    pub const fn from_status_code(status: NTSTATUS) -> Self {
        match status {
            STATUS_NO_MEMORY => Error::NoMemory,
            STATUS_INSUFFICIENT_RESOURCES => Error::InsufficientResources,
            STATUS_INVALID_PARAMETER => Error::InvalidParameter,
            STATUS_INVALID_DEVICE_REQUEST => Error::InvalidDeviceRequest,
            STATUS_INVALID_DEVICE_STATE => Error::InvalidDeviceState,
            STATUS_ACCESS_DENIED => Error::AccessDenied,
            STATUS_NOT_FOUND => Error::NotFound,
            STATUS_OBJECT_PATH_NOT_FOUND => Error::ObjectNotFound,
            STATUS_NOT_SUPPORTED => Error::NotSupported,
            STATUS_INTEGER_OVERFLOW => Error::ArithmeticOverflow,
            STATUS_DRIVER_UNABLE_TO_LOAD => Error::ExtensionFailedToLoad,
            STATUS_NOINTERFACE => Error::NoInterface,
            STATUS_BUFFER_TOO_SMALL => Error::BufferTooSmall,
            STATUS_UNSUCCESSFUL => Error::Unsuccessful,
            other => Error::Status(other),
        }
    }

    /// `Ok` for a success or informational status (`NT_SUCCESS`), else the matching error.
    ///
    /// # Errors
    /// The error for any status with `NT_SUCCESS(status) == false`.
    pub const fn from_ntstatus(status: NTSTATUS) -> Result<NTSTATUS> {
        if NT_SUCCESS(status) {
            Ok(status)
        } else {
            Err(Error::from_status_code(status))
        }
    }

    /// `Ok` for `EBPF_SUCCESS`, else the error the core's mapping gives; an unknown code is
    /// [`Error::Unsuccessful`].
    ///
    /// # Errors
    /// The error for any result other than `EBPF_SUCCESS`.
    pub const fn from_ebpf_result(result: ebpf_result_t) -> Result {
        if result == EBPF_SUCCESS {
            Ok(())
        } else {
            Err(Error::from_status_code(ebpf_result_to_ntstatus(result)))
        }
    }
}

/// The core's `ebpf_result_to_ntstatus`: table lookup; negative and out-of-range values give
/// `STATUS_UNSUCCESSFUL`.
#[must_use]
pub const fn ebpf_result_to_ntstatus(result: ebpf_result_t) -> NTSTATUS {
    if result < 0 || result >= EBPF_RESULT_COUNT {
        STATUS_UNSUCCESSFUL
    } else {
        #[expect(clippy::cast_sign_loss, reason = "checked non-negative above")]
        let index = result as usize;
        EBPF_RESULT_TO_NTSTATUS[index]
    }
}

/// The core's `_ntstatus_to_ebpf_result`: the exact inverse of the table; every other status
/// gives `EBPF_FAILED`.
#[must_use]
pub const fn ntstatus_to_ebpf_result(status: NTSTATUS) -> ebpf_result_t {
    let mut i = 0;
    while i < EBPF_RESULT_TO_NTSTATUS.len() {
        if EBPF_RESULT_TO_NTSTATUS[i] == status {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_possible_wrap,
                reason = "i < 35"
            )]
            let result = i as ebpf_result_t;
            return result;
        }
        i += 1;
    }
    EBPF_FAILED
}

impl From<Error> for NTSTATUS {
    fn from(error: Error) -> NTSTATUS {
        error.ntstatus()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::wildcard_imports, reason = "tests name many codes")]
    use super::*;
    use crate::ebpf_result::*;

    #[test]
    fn every_result_round_trips_through_ntstatus() {
        for result in 0..EBPF_RESULT_COUNT {
            let status = ebpf_result_to_ntstatus(result);
            assert_eq!(ntstatus_to_ebpf_result(status), result, "result {result}");
            if result != EBPF_SUCCESS {
                let error = Error::from_ebpf_result(result).unwrap_err();
                assert_eq!(error.ntstatus(), status, "result {result}");
                assert_eq!(error.ebpf_result(), result, "result {result}");
            }
        }
    }

    #[test]
    fn reference_rows() {
        assert_eq!(ebpf_result_to_ntstatus(EBPF_NO_MEMORY), STATUS_NO_MEMORY);
        assert_eq!(
            ebpf_result_to_ntstatus(EBPF_INVALID_ARGUMENT),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            ebpf_result_to_ntstatus(EBPF_KEY_NOT_FOUND),
            STATUS_NOT_FOUND
        );
        assert_eq!(
            ebpf_result_to_ntstatus(EBPF_EXTENSION_FAILED_TO_LOAD),
            STATUS_DRIVER_UNABLE_TO_LOAD
        );
        assert_eq!(
            ebpf_result_to_ntstatus(EBPF_INVALID_STATE),
            STATUS_INVALID_STATE_TRANSITION
        );
        assert_eq!(ebpf_result_to_ntstatus(EBPF_PENDING), STATUS_PENDING);
        assert_eq!(
            ntstatus_to_ebpf_result(STATUS_INSUFFICIENT_RESOURCES),
            EBPF_OUT_OF_SPACE
        );
    }

    #[test]
    fn unknown_codes_are_generic_errors() {
        assert_eq!(ebpf_result_to_ntstatus(-1), STATUS_UNSUCCESSFUL);
        assert_eq!(
            ebpf_result_to_ntstatus(EBPF_RESULT_COUNT),
            STATUS_UNSUCCESSFUL
        );
        assert_eq!(ebpf_result_to_ntstatus(i32::MAX), STATUS_UNSUCCESSFUL);
        assert_eq!(Error::from_ebpf_result(12345), Err(Error::Unsuccessful));
        for status in [
            STATUS_NOINTERFACE,
            STATUS_BUFFER_TOO_SMALL,
            STATUS_INVALID_BUFFER_SIZE,
            STATUS_DEVICE_NOT_READY,
            STATUS_OBJECT_NAME_COLLISION,
        ] {
            assert_eq!(ntstatus_to_ebpf_result(status), EBPF_FAILED);
        }
        let odd = 0xC0DE_0001_u32.cast_signed();
        assert_eq!(Error::from_ntstatus(odd), Err(Error::Status(odd)));
        assert_eq!(Error::Status(odd).ebpf_result(), EBPF_FAILED);
    }

    #[test]
    fn ntstatus_conversions() {
        assert_eq!(Error::from_ntstatus(STATUS_SUCCESS), Ok(STATUS_SUCCESS));
        assert_eq!(Error::from_ntstatus(STATUS_PENDING), Ok(STATUS_PENDING));
        assert_eq!(Error::from_ntstatus(STATUS_NO_MEMORY), Err(Error::NoMemory));
        assert_eq!(
            Error::from_ntstatus(STATUS_NOINTERFACE),
            Err(Error::NoInterface)
        );
        let api = Error::api("NmrRegisterProvider", STATUS_INSUFFICIENT_RESOURCES);
        assert_eq!(NTSTATUS::from(api), STATUS_INSUFFICIENT_RESOURCES);
        assert_eq!(api.ebpf_result(), EBPF_OUT_OF_SPACE);
        assert_eq!(Error::NoInterface.ebpf_result(), EBPF_FAILED);
    }
}
