//! The `sample_net` program type: context layout, helpers and the program data the SDK
//! publishes.

use core::borrow::Borrow;

use ebpf_extension_common::prelude::*;

/// Program type GUID of `sample_net`.
pub const PROGRAM_TYPE: GUID = GUID::from_u128(0x1c37c7d8_8b7f_4428_b782_7253a2d00572);
/// `bpf_prog_type` number of `sample_net`.
pub const BPF_PROG_TYPE: u32 = 1000;
/// Helper id of `sample_net_get_interface_id(ctx)`.
pub const HELPER_GET_INTERFACE_ID: u32 = 0x1_0000;
/// Helper id of `sample_net_checksum(data, size)`.
pub const HELPER_CHECKSUM: u32 = 0x1_0001;

no_padding! {
    /// What a `sample_net` program sees.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct PacketContext {
        /// First byte of the packet (set by the SDK: `ProgramContext::with_data`).
        pub data_start: DataPointer,
        /// One past its last byte.
        pub data_end: DataPointer,
        /// The interface the packet arrived on.
        pub interface_id: u32,
        /// Its IP protocol number.
        pub protocol: u32,
    }
}

/// `sample_net_get_interface_id(ctx)`: the context's interface id.
fn get_interface_id(context: &PacketContext) -> u64 {
    u64::from(context.interface_id)
}

/// `sample_net_checksum(data, size)`: the 16-bit one's-complement internet checksum (RFC
/// 1071) of `size` bytes at `data` (0xFFFF for none).
fn checksum(data: Input<'_>) -> u64 {
    u64::from(internet_checksum(data.iter()))
}

/// RFC 1071 checksum: the one's complement of the one's-complement sum of the big-endian
/// 16-bit words (an odd last byte padded with a zero).
#[must_use]
pub fn internet_checksum<B: Borrow<u8>>(bytes: impl IntoIterator<Item = B>) -> u16 {
    let (mut bytes, mut sum) = (bytes.into_iter().map(|b| u64::from(*b.borrow())), 0);
    while let Some(high) = bytes.next() {
        sum += high << 8 | bytes.next().unwrap_or(0);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
    let folded = sum as u16;
    !folded
}

program_type! {
    /// The program data the program-information provider publishes.
    pub static PROGRAM_DATA = c"sample_net", PROGRAM_TYPE, BPF_PROG_TYPE;
    context PacketContext, data data_start..data_end;
    helpers {
        HELPER_GET_INTERFACE_ID, c"sample_net_get_interface_id" => get_interface_id(Context);
        HELPER_CHECKSUM, c"sample_net_checksum" => checksum(Bytes);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::internet_checksum;

    #[test]
    fn the_checksum_is_rfc_1071s() {
        let rfc_example = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(rfc_example), !0xddf2);
        let ipv4_header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(ipv4_header), 0xb861);
        assert_eq!(
            internet_checksum([0x01]),
            0xfeff,
            "an odd byte is padded with zero"
        );
        assert_eq!(internet_checksum([0u8; 0]), 0xffff, "nothing");
        assert_eq!(
            internet_checksum(std::vec![0xff; 131_076]),
            0,
            "a sum past 32 bits still folds"
        );
    }
}
