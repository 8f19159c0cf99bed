//! The control device's user-mode interface: [`WIN32_PATH`] (SYSTEM or Administrators only),
//! IOCTL codes and request/reply layouts (little-endian, `#[repr(C)]`, no padding); the
//! profile request's are the SDK's (`ebpf_extension_common::profile`).

use ebpf_extension_common::profile;
use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

/// The path user mode opens.
pub const WIN32_PATH: &str = "\\\\.\\SampleNetEbpfExt";

/// Fire the hook once: [`RunRequest`] + packet in, [`RunReply`] + the packet (as the programs
/// left it) out.
pub const IOCTL_SAMPLE_NET_RUN: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Fire the hook `iterations` times: [`Profile`].
pub const IOCTL_SAMPLE_NET_PROFILE: u32 =
    CTL_CODE(FILE_DEVICE_NETWORK, 0x801, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// `version` of every request: "SNX1".
pub const REQUEST_VERSION: u32 = u32::from_le_bytes(*b"SNX1");
/// Largest packet a request may carry.
pub const MAX_PACKET: usize = 0x1_0000;

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
}

ebpf_extension_common::ioctl! {
    /// `IOCTL_SAMPLE_NET_RUN`, typed: the SDK checks version, lengths, alignment and ranges.
    pub Run = IOCTL_SAMPLE_NET_RUN, RunRequest => RunReply,
        version REQUEST_VERSION, payload data_len up to MAX_PACKET, field protocol in ..=255;
}

/// `IOCTL_SAMPLE_NET_PROFILE`: the SDK's profile request, its `parameter` the interface id.
pub type Profile = profile::Profile<IOCTL_SAMPLE_NET_PROFILE, REQUEST_VERSION, MAX_PACKET>;
