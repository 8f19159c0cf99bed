//! The control device's user-mode interface: names, IOCTL codes and request/reply layouts
//! (all little-endian, `#[repr(C)]`, no padding). A user-mode client opens
//! [`WIN32_PATH`] (SYSTEM or Administrators only) and sends `DeviceIoControl` requests with
//! one buffer for input and output (`METHOD_BUFFERED`).

use ebpf_extension_common::sys::wdm::{
    CTL_CODE, FILE_ANY_ACCESS, FILE_DEVICE_NETWORK, METHOD_BUFFERED,
};

/// Kernel name of the control device.
pub const DEVICE_NAME: &str = "\\Device\\SampleNetEbpfExt";
/// Its symbolic link.
pub const LINK_NAME: &str = "\\GLOBAL??\\SampleNetEbpfExt";
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

macro_rules! wire {
    ($name:ident, $size:literal) => {
        impl $name {
            /// Size on the wire.
            pub const SIZE: usize = $size;

            /// The bytes of this value.
            #[must_use]
            pub fn to_bytes(&self) -> [u8; $size] {
                const _: () = assert!(core::mem::size_of::<$name>() == $size);
                // SAFETY: a `repr(C)` struct of integers with no padding (size asserted).
                unsafe { core::mem::transmute_copy(self) }
            }

            /// Reads a value from the start of `bytes` (any alignment); `None` if too short.
            #[must_use]
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                let bytes = bytes.get(..$size)?;
                // SAFETY: `$size` readable bytes; every bit pattern is valid for integers.
                Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<$name>()) })
            }
        }
    };
}

/// `IOCTL_SAMPLE_NET_RUN` input header; `data_len` packet bytes follow.
#[repr(C)]
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
wire!(RunRequest, 16);

/// `IOCTL_SAMPLE_NET_RUN` output header; the packet follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunReply {
    /// `VERDICT_PERMIT` or `VERDICT_BLOCK`.
    pub verdict: u32,
    /// Programs that ran.
    pub programs_run: u32,
}
wire!(RunReply, 8);

/// `IOCTL_SAMPLE_NET_PROFILE` input header; `data_len` packet bytes follow.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileRequest {
    /// [`REQUEST_VERSION`].
    pub version: u32,
    /// Interface id.
    pub interface_id: u32,
    /// 1..=[`MAX_ITERATIONS`].
    pub iterations: u64,
    /// [`PROFILE_AT_DISPATCH`] or 0.
    pub flags: u32,
    /// Packet length; the input length must be exactly `SIZE + data_len`.
    pub data_len: u32,
}
wire!(ProfileRequest, 24);

/// `IOCTL_SAMPLE_NET_PROFILE` output.
#[repr(C)]
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
wire!(ProfileReply, 32);
