//! The control device's user-mode interface: [`WIN32_PATH`] (SYSTEM or Administrators only),
//! IOCTL codes and request/reply layouts (little-endian, `#[repr(C)]`, no padding).

use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

/// The path user mode opens.
pub const WIN32_PATH: &str = "\\\\.\\SampleNetEbpfExt";

/// Fire the hook once: [`RunRequest`] + packet in, [`RunReply`] + the packet (as the programs
/// left it) out.
pub const IOCTL_SAMPLE_NET_RUN: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Fire the hook `iterations` times: [`ProfileRequest`] + packet in, [`ProfileReply`] out.
pub const IOCTL_SAMPLE_NET_PROFILE: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 0x801, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// `version` of every request: "SNX1".
pub const REQUEST_VERSION: u32 = u32::from_le_bytes(*b"SNX1");
/// Largest packet a request may carry.
pub const MAX_PACKET: usize = 0x1_0000;
/// Most iterations a profile request may ask for.
pub const MAX_ITERATIONS: u64 = 10_000_000;
/// [`ProfileRequest::flags`]: run the programs at DISPATCH_LEVEL, as a network stack does.
pub const PROFILE_AT_DISPATCH: u32 = 0x1;

ebpf_extension_common::wire! {
    /// `IOCTL_SAMPLE_NET_RUN` input header; `data_len` packet bytes follow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunRequest {
        /// [`REQUEST_VERSION`].
        pub version: u32,
        /// Interface the packet "arrived on": selects the programs.
        pub interface_id: u32,
        /// IP protocol number (0..=255).
        pub protocol: u32,
        /// Packet length; the input length must be exactly `SIZE + data_len`.
        pub data_len: u32,
    }

    /// `IOCTL_SAMPLE_NET_RUN` output header; the packet follows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct RunReply {
        /// `VERDICT_PERMIT` or `VERDICT_BLOCK`.
        pub verdict: u32,
        /// Programs that ran.
        pub programs_run: u32,
    }

    /// `IOCTL_SAMPLE_NET_PROFILE` input header; `data_len` packet bytes follow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ProfileRequest {
        /// [`REQUEST_VERSION`].
        pub version: u32,
        /// Interface id.
        pub interface_id: u32,
        /// 1..=[`MAX_ITERATIONS`].
        pub iterations: u64,
        /// [`PROFILE_AT_DISPATCH`] or 0 (the only flag, so the SDK checks it as a range).
        pub flags: u32,
        /// Packet length; the input length must be exactly `SIZE + data_len`.
        pub data_len: u32,
    }

    /// `IOCTL_SAMPLE_NET_PROFILE` output.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ProfileReply {
        /// Performance-counter ticks the iterations took.
        pub duration: u64,
        /// Performance-counter ticks per second.
        pub frequency: u64,
        /// Iterations run.
        pub iterations: u64,
        /// Verdict of the last iteration.
        pub verdict: u32,
        /// Programs run in the last iteration.
        pub programs_run: u32,
    }
}

ebpf_extension_common::ioctl! {
    /// `IOCTL_SAMPLE_NET_RUN`, typed: the SDK checks version, lengths, alignment and ranges.
    pub Run = IOCTL_SAMPLE_NET_RUN, RunRequest => RunReply,
        version REQUEST_VERSION, payload data_len up to MAX_PACKET, field protocol in ..=255;
    /// `IOCTL_SAMPLE_NET_PROFILE`, typed.
    pub Profile = IOCTL_SAMPLE_NET_PROFILE, ProfileRequest => ProfileReply,
        version REQUEST_VERSION, payload data_len up to MAX_PACKET,
        field iterations in 1..=MAX_ITERATIONS, field flags in ..=PROFILE_AT_DISPATCH;
}
