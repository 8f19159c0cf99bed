//! The control device's user-mode interface: [`WIN32_PATH`] (SYSTEM or Administrators
//! only), IOCTL codes and request/reply layouts (little-endian, `#[repr(C)]`, no padding).
//!
//! The device and link names and the codes are upstream's (`sample_ext_ioctls.h`); the
//! request layouts are this port's own (typed, versioned, checked by the SDK), not upstream's:
//! - every request starts with its header and version, so upstream's unversioned RUN (the
//!   data alone) and its RUN_BATCH request (`count`, then the data) are refused;
//! - each reply starts with its header, the data after it (upstream's RUN replies with the
//!   data alone, and no program result);
//! - PROFILE (code 2) is the SDK's profile request (`ebpf_extension_common::profile`, see
//!   [`Profile`] for what stays upstream's);
//! - an unknown code gets `STATUS_INVALID_DEVICE_REQUEST` (upstream: `STATUS_UNSUCCESSFUL`).

use ebpf_extension_common::profile;
use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

/// The path user mode opens.
pub const WIN32_PATH: &str = "\\\\.\\SampleEbpfExtIoDevice";

/// Run the hook once over the data: [`RunRequest`] + data in, [`RunReply`] + the data (as
/// the program left it) out (`IOCTL_SAMPLE_EBPF_EXT_CTL_RUN`).
pub const IOCTL_SAMPLE_EBPF_EXT_CTL_RUN: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 0, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Run the hook `count` times over one context in one batch: [`RunBatchRequest`] + data in,
/// [`RunBatchReply`] + the data out (`IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH`).
pub const IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 1, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// Fire the hook `iterations` times: [`Profile`] (`IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE`).
pub const IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 2, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// `version` of every request: "SEXT", as upstream's run request.
pub const REQUEST_VERSION: u32 = 0x5345_5854;
/// Largest data a request may carry.
pub const MAX_DATA: usize = 0x1_0000;
/// Most invocations one batch may ask for.
pub const MAX_BATCH: u32 = 1024;

ebpf_extension_common::wire! {
    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN` input header; `data_len` data bytes follow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunRequest {
        /// [`REQUEST_VERSION`].
        pub version: u32,
        /// Selects the program: the one attached with this parameter, else one attached
        /// without a parameter.
        pub attach_parameter: u32,
        /// The context's `uint32_data`.
        pub uint32_data: u32,
        /// Data length; the input length must be exactly `SIZE + data_len`.
        pub data_len: u32,
    }

    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN` output header; the data follows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunReply {
        /// The program's return value.
        pub result: u32,
        /// Programs that ran (1).
        pub programs_run: u32,
    }

    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH` input header; `data_len` data bytes follow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunBatchRequest {
        /// [`REQUEST_VERSION`].
        pub version: u32,
        /// As [`RunRequest::attach_parameter`].
        pub attach_parameter: u32,
        /// Invocations, 1..=[`MAX_BATCH`].
        pub count: u32,
        /// Data length; the input length must be exactly `SIZE + data_len`.
        pub data_len: u32,
    }

    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH` output header; the data follows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunBatchReply {
        /// Invocations that returned a result (one per event).
        pub results: u32,
        /// The sum of their results (low 32 bits).
        pub result_sum: u32,
    }
}

ebpf_extension_common::ioctl! {
    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN`, typed: the SDK checks version, lengths, alignment and ranges.
    pub Run = IOCTL_SAMPLE_EBPF_EXT_CTL_RUN, RunRequest => RunReply,
        version REQUEST_VERSION, payload data_len up to MAX_DATA;
    /// `IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH`, typed.
    pub RunBatch = IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH, RunBatchRequest => RunBatchReply,
        version REQUEST_VERSION, payload data_len up to MAX_DATA, field count in 1..=MAX_BATCH;
}

/// `IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE`: the SDK's profile request.
///
/// As upstream's: every iteration runs the program over one context (what a program writes
/// to it, the next sees), with the data as its data, 0 helper data and, in `uint32_data`, the
/// number of the processor the request started on.
///
/// Not as upstream's, which runs its one attached program and ignores what an invocation
/// returns: `parameter` selects the program as [`RunRequest::attach_parameter`] does
/// (`STATUS_NOT_FOUND` if none; upstream: `STATUS_UNSUCCESSFUL` without a program); the first
/// failed invocation ends the request with `STATUS_UNSUCCESSFUL`; 0 iterations are refused;
/// the request is versioned and the reply is the SDK's [`ProfileReply`](profile::ProfileReply)
/// without the data (upstream's reply is `duration` over the whole output buffer, the data
/// as the programs left it after it); the IRQL is raised when asked (upstream's flag for it
/// is 0, so its `flags & 0` never raises).
pub type Profile = profile::Profile<IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE, REQUEST_VERSION, MAX_DATA>;
