//! Basic NT types (`ntdef.h`, `minwindef.h`): status, GUID, lists, strings, LUID.

use core::ffi::c_void;

/// `NTSTATUS`: a signed 32-bit status; negative values are errors.
pub type NTSTATUS = i32;
/// `BOOLEAN`: one byte, `TRUE` (1) or `FALSE` (0).
pub type BOOLEAN = u8;
/// `KIRQL`: interrupt request level of a processor.
pub type KIRQL = u8;
/// `KPROCESSOR_MODE`: `KernelMode` (0) or `UserMode` (1).
pub type KPROCESSOR_MODE = i8;
/// `HANDLE`: an opaque pointer-sized handle.
pub type HANDLE = *mut c_void;

/// `TRUE` as a `BOOLEAN`.
pub const TRUE: BOOLEAN = 1;
/// `FALSE` as a `BOOLEAN`.
pub const FALSE: BOOLEAN = 0;
/// `KernelMode`.
pub const KernelMode: KPROCESSOR_MODE = 0;
/// `UserMode`.
pub const UserMode: KPROCESSOR_MODE = 1;

/// `NT_SUCCESS(status)`: true for success and informational codes (`status >= 0`).
#[must_use]
pub const fn NT_SUCCESS(status: NTSTATUS) -> bool {
    status >= 0
}

/// `GUID`: 16 bytes, 4-byte aligned; `Data1..3` little-endian in memory.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct GUID {
    /// First 32 bits.
    pub Data1: u32,
    /// Next 16 bits.
    pub Data2: u16,
    /// Next 16 bits.
    pub Data3: u16,
    /// Last 8 bytes, in order.
    pub Data4: [u8; 8],
}

impl GUID {
    /// The all-zero GUID (`GUID_NULL`).
    pub const NULL: GUID = GUID::from_u128(0);

    /// Parses a GUID's registry form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hexadecimal
    /// digits of either case, with or without the braces around it (both or neither);
    /// `None` for anything else (no spaces, signs or missing digits).
    #[must_use]
    pub fn parse(text: &str) -> Option<GUID> {
        let digits = match text.strip_prefix('{') {
            Some(braced) => braced.strip_suffix('}')?,
            None => text,
        };
        if digits.len() != 36 {
            return None;
        }
        let mut value: u128 = 0;
        for (at, byte) in digits.bytes().enumerate() {
            if matches!(at, 8 | 13 | 18 | 23) {
                if byte != b'-' {
                    return None;
                }
            } else {
                value = value << 4 | u128::from(char::from(byte).to_digit(16)?);
            }
        }
        Some(GUID::from_u128(value))
    }

    /// Builds a GUID from its textual form read as one 128-bit number:
    /// `2934ad50-2154-44b6-9622-6c528c068411` is `0x2934ad50_2154_44b6_9622_6c528c068411`.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each field takes its own bits"
    )]
    pub const fn from_u128(value: u128) -> GUID {
        let tail = (value as u64).to_be_bytes();
        GUID {
            Data1: (value >> 96) as u32,
            Data2: (value >> 80) as u16,
            Data3: (value >> 64) as u16,
            Data4: tail,
        }
    }

    /// The GUID as one 128-bit number (the inverse of [`GUID::from_u128`]).
    #[must_use]
    pub const fn to_u128(&self) -> u128 {
        ((self.Data1 as u128) << 96)
            | ((self.Data2 as u128) << 80)
            | ((self.Data3 as u128) << 64)
            | (u64::from_be_bytes(self.Data4) as u128)
    }

    /// The 16 bytes as they lie in memory (`Data1..3` little-endian).
    #[must_use]
    pub const fn to_bytes_le(&self) -> [u8; 16] {
        let d1 = self.Data1.to_le_bytes();
        let d2 = self.Data2.to_le_bytes();
        let d3 = self.Data3.to_le_bytes();
        let d4 = self.Data4;
        [
            d1[0], d1[1], d1[2], d1[3], d2[0], d2[1], d3[0], d3[1], d4[0], d4[1], d4[2], d4[3],
            d4[4], d4[5], d4[6], d4[7],
        ]
    }

    /// Reads a GUID from its 16 in-memory bytes.
    #[must_use]
    pub const fn from_bytes_le(b: [u8; 16]) -> GUID {
        GUID {
            Data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Data2: u16::from_le_bytes([b[4], b[5]]),
            Data3: u16::from_le_bytes([b[6], b[7]]),
            Data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }
}

impl core::fmt::Display for GUID {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let d = &self.Data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.Data1, self.Data2, self.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

/// `LIST_ENTRY`: a doubly linked list link.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LIST_ENTRY {
    /// Next entry.
    pub Flink: *mut LIST_ENTRY,
    /// Previous entry.
    pub Blink: *mut LIST_ENTRY,
}

/// `UNICODE_STRING`: a counted UTF-16 string (lengths in bytes, no terminator required).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UNICODE_STRING {
    /// Length of the string in bytes.
    pub Length: u16,
    /// Size of the buffer in bytes.
    pub MaximumLength: u16,
    /// The UTF-16 code units.
    pub Buffer: *mut u16,
}

/// `LUID`: a locally unique identifier (8 bytes, 4-byte aligned).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LUID {
    /// Low 32 bits.
    pub LowPart: u32,
    /// High 32 bits.
    pub HighPart: i32,
}

/// `CLIENT_ID`: a process id and a thread id.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CLIENT_ID {
    /// Process id.
    pub UniqueProcess: HANDLE,
    /// Thread id.
    pub UniqueThread: HANDLE,
}

/// `PROCESSOR_NUMBER`: processor group and number within the group.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PROCESSOR_NUMBER {
    /// Processor group.
    pub Group: u16,
    /// Processor number within the group.
    pub Number: u8,
    /// Reserved, zero.
    pub Reserved: u8,
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;

    use super::GUID;

    #[test]
    fn a_guid_parses_from_its_registry_form_with_or_without_braces() {
        let guid = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);
        assert_eq!(GUID::parse(&guid.to_string()), Some(guid), "Display's form");
        for text in [
            "{8F6C1F83-CE4C-4B58-8B91-654A29E23B7C}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}",
            "8F6c1f83-ce4c-4b58-8b91-654a29e23b7C",
        ] {
            assert_eq!(GUID::parse(text), Some(guid), "{text}");
        }
        for bad in [
            "",
            "{}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c",
            "8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}",
            "{{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}}",
            "{8f6c1f83-ce4c-4b58-8b91654a29e23b7c}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c0}",
            "{+f6c1f83-ce4c-4b58-8b91-654a29e23b7c}",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7g}",
            "{8f6c1f83ece4c-4b58-8b91-654a29e23b7c}",
            " 8f6c1f83-ce4c-4b58-8b91-654a29e23b7c",
            "8f6c1f83ce4c4b588b91654a29e23b7c",
            "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7é}",
        ] {
            assert_eq!(GUID::parse(bad), None, "{bad:?}");
        }
    }
}
