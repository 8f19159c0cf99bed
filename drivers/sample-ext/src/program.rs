//! The `sample` program type as upstream's sample extension publishes it
//! (`sample_ext_program_info.h`, `sample_ext.c`): context layout and descriptor, the seven
//! type-specific helpers, the two global-helper overrides, and `context_create` /
//! `context_destroy` for test runs.
//!
//! Deliberate differences from upstream, all where upstream reads or writes memory it was
//! not given:
//! - `sample_ebpf_extension_find` searches only the `size` bytes it was given (upstream reads
//!   until a NUL, past `data_end` if there is none) and the `find_size` bytes of the string
//!   to find; results, including the no-match value `0 - buffer`, are upstream's.
//! - `sample_ebpf_extension_replace` reads at most `replace_size` bytes of the replacement
//!   (upstream reads until a NUL).
//! - `sample_ext_helper_map_get_value` copies at most the 4 bytes the custom map's object
//!   holds and leaves the rest of the output alone (upstream copies `size` bytes from the
//!   4-byte object), and gives -1 for a map of another custom type (upstream reads that
//!   map's context as its own).
//! - `context_create` without data sets both data pointers to NULL (upstream keeps the
//!   caller's pointer values, which `context_destroy` then reads through), and `ctx_out`'s
//!   data pointers are NULL (upstream's are the kernel's addresses of the data).

use core::mem::offset_of;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_PROGRAM_TYPE_SAMPLE;
use ebpf_extension_common::sys::ebpf_structs::BPF_PROG_TYPE_SAMPLE;
use ebpf_extension_common::sys::wdm::DISPATCH_LEVEL;

use crate::hook::{DRIVER, TAG};

/// Program type GUID of `sample` (`EBPF_PROGRAM_TYPE_SAMPLE`).
pub const PROGRAM_TYPE: GUID = EBPF_PROGRAM_TYPE_SAMPLE;
/// `bpf_prog_type` number of `sample` (`BPF_PROG_TYPE_SAMPLE`).
pub const BPF_PROG_TYPE: u32 = BPF_PROG_TYPE_SAMPLE;
/// The section programs of this type go in (prefix-matched: `sample_ext/0` too).
pub const SECTION: &str = "sample_ext";

/// Helper id of `sample_ebpf_extension_helper_function1(ctx)`: returns 0.
pub const HELPER_FUNCTION1: u32 = 0x1_0000;
/// Helper id of `sample_ebpf_extension_find(buffer, size, find, find_size)`.
pub const HELPER_FIND: u32 = 0x1_0001;
/// Helper id of `sample_ebpf_extension_replace(buffer, size, position, replace, replace_size)`.
pub const HELPER_REPLACE: u32 = 0x1_0002;
/// Helper id of `sample_ebpf_extension_helper_implicit_1()`: the context's `helper_data_1`.
pub const HELPER_IMPLICIT_1: u32 = 0x1_0003;
/// Helper id of `sample_ebpf_extension_helper_implicit_2(value)`: `helper_data_2 + value`.
pub const HELPER_IMPLICIT_2: u32 = 0x1_0004;
/// Helper id of `sample_ext_helper_map_lookup_element(map, key)`: always NULL.
pub const HELPER_MAP_LOOKUP_ELEMENT: u32 = 0x1_0005;
/// Helper id of `sample_ext_helper_map_get_value(map, key, value, size)`.
pub const HELPER_MAP_GET_VALUE: u32 = 0x1_0006;
/// What the `bpf_get_current_pid_tgid` override returns (`SAMPLE_PID_TGID_VALUE`).
pub const PID_TGID_VALUE: u64 = 9999;

no_padding! {
    /// What a `sample` program sees (`sample_program_context_t`, 32 bytes).
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct SampleContext {
        /// First byte of the data (set by the SDK).
        pub data_start: DataPointer,
        /// One past its last byte.
        pub data_end: DataPointer,
        /// A 32-bit value (the run's processor number in upstream's profile run).
        pub uint32_data: u32,
        /// A 16-bit value.
        pub uint16_data: u16,
        /// The two bytes C leaves as padding after `uint16_data`: named, so that a test run
        /// gives `ctx_out` the bytes `ctx_in` had there (as upstream's `memcpy` does) rather
        /// than uninitialised ones.
        pub reserved: u16,
        /// What `sample_ebpf_extension_helper_implicit_1` returns.
        pub helper_data_1: u32,
        /// What `sample_ebpf_extension_helper_implicit_2` adds its argument to.
        pub helper_data_2: u32,
    }
}

const _: () = assert!(size_of::<SampleContext>() == 32);
const _: () = assert!(offset_of!(SampleContext, uint16_data) == 20);
const _: () = assert!(offset_of!(SampleContext, reserved) == 22);
const _: () = assert!(offset_of!(SampleContext, helper_data_1) == 24);
const _: () = assert!(offset_of!(SampleContext, helper_data_2) == 28);

impl SampleContext {
    /// A context with the helper values the control device sets (1 and 2, as upstream's RUN);
    /// its data is the invocation's (`ProgramContext::with_data`).
    pub const RUN: Self = SampleContext {
        data_start: DataPointer::NULL,
        data_end: DataPointer::NULL,
        uint32_data: 0,
        uint16_data: 0,
        reserved: 0,
        helper_data_1: 1,
        helper_data_2: 2,
    };
}

/// `sample_ebpf_extension_helper_function1(ctx)`: 0.
fn helper_function1(_: &SampleContext) -> u64 {
    0
}

/// The bytes of `buffer` before the first NUL, within the low 32 bits of its size
/// (upstream's sizes are `uint32_t`).
fn c_string(buffer: Input<'_>) -> Input<'_> {
    let buffer = buffer.first(buffer.len() & 0xFFFF_FFFF);
    buffer.first(buffer.iter().position(|b| b == 0).unwrap_or(buffer.len()))
}

/// `sample_ebpf_extension_find(buffer, size, find, find_size)`: the offset of the first
/// occurrence of the NUL-terminated `find` in the NUL-terminated `buffer`; `0 - buffer` if
/// there is none (upstream's value: a NULL match minus the buffer).
fn find(buffer: Input<'_>, needle: Input<'_>) -> u64 {
    let (haystack, needle) = (c_string(buffer), c_string(needle));
    if needle.is_empty() {
        return 0;
    }
    let found_at = |at: usize| {
        (at..)
            .zip(needle.iter())
            .all(|(i, b)| haystack.get(i) == Some(b))
    };
    (0..haystack.len())
        .position(found_at)
        .map_or(0u64.wrapping_sub(buffer.as_ptr() as u64), |at| at as u64)
}

/// `sample_ebpf_extension_replace(buffer, size, position, replace, replace_size)`: copies
/// the NUL-terminated `replace` over `buffer` from `position`, never writing its last byte;
/// 0, or -1 if `position` is negative or not below `size` (its low 32 bits).
fn replace(buffer: ReadableCells<'_>, position: u64, with: ReadableCells<'_>) -> u64 {
    let size = buffer.len() & 0xFFFF_FFFF;
    match usize::try_from(position.cast_signed()) {
        Ok(position) if position < size => {
            for (at, byte) in (position..size - 1).zip(c_string(with.input()).iter()) {
                // SAFETY: upstream's prototype declares the buffer readable and upstream's
                // helper rewrites it: programs written for it call it to change the buffer
                // and rely on nothing the verifier knew of the bytes it replaces.
                unsafe { buffer.set(at, byte) };
            }
            0
        }
        _ => u64::MAX,
    }
}

/// `sample_ebpf_extension_helper_implicit_1()`: the context's `helper_data_1`.
fn helper_implicit_1(context: &SampleContext) -> u64 {
    u64::from(context.helper_data_1)
}

/// `sample_ebpf_extension_helper_implicit_2(value)`: `helper_data_2 + (uint32)value`.
fn helper_implicit_2(value: u64, context: &SampleContext) -> u64 {
    u64::from(context.helper_data_2) + (value & 0xFFFF_FFFF)
}

/// `sample_ext_helper_map_lookup_element(map, key)`: NULL (the sample's custom map holds
/// objects programs may not see).
fn map_lookup_element(_: MapKey<'_>, _: &SampleContext) -> MapValueOrNull {
    MapValueOrNull::NULL
}

/// `sample_ext_helper_map_get_value(map, key, value, size)`: copies the 4-byte value the custom
/// map holds for `key` to the front of `out`; 0, or -1 if `map` is not a custom map or has no
/// such key. The output may overlap the key: a program may pass its key buffer as both.
fn map_get_value(key: MapKey<'_>, out: SharedOutput<'_>, _: &SampleContext) -> u64 {
    match DRIVER
        .get()
        .and_then(|driver| driver.maps.stored_object(key))
    {
        Some((_, object)) if !out.is_empty() => {
            for (index, byte) in object.into_iter().enumerate() {
                out.set(index, byte);
            }
            0
        }
        _ => u64::MAX,
    }
}

/// The `bpf_get_current_pid_tgid` override: [`PID_TGID_VALUE`].
fn get_current_pid_tgid() -> u64 {
    PID_TGID_VALUE
}

/// The `bpf_redirect_map` override: 1, whatever the arguments.
fn redirect_map(_: ProgramMap<'_>, _: u64, _: u64) -> u64 {
    1
}

program_type! {
    /// The program data the program-information provider publishes: both address tables,
    /// the test-run context functions, and `required_irql` DISPATCH_LEVEL. Test runs copy
    /// the context from `ctx_in` and back to `ctx_out`; programs edit `data_in` in place, and
    /// it goes back as `data_out`.
    pub static PROGRAM_DATA = c"sample", PROGRAM_TYPE, BPF_PROG_TYPE;
    context SampleContext, data data_start..data_end;
    helpers {
        HELPER_FUNCTION1, c"sample_ebpf_extension_helper_function1" => helper_function1(Context);
        HELPER_FIND, c"sample_ebpf_extension_find" => find(Bytes, Bytes);
        HELPER_REPLACE, c"sample_ebpf_extension_replace" => replace(Cells, Anything, Cells);
        HELPER_IMPLICIT_1, c"sample_ebpf_extension_helper_implicit_1" => helper_implicit_1() with context;
        HELPER_IMPLICIT_2, c"sample_ebpf_extension_helper_implicit_2" => helper_implicit_2(DontCare) with context;
        HELPER_MAP_LOOKUP_ELEMENT, c"sample_ext_helper_map_lookup_element" =>
            map_lookup_element(MapAndKey) with context -> MapValueOrNull;
        HELPER_MAP_GET_VALUE, c"sample_ext_helper_map_get_value" => map_get_value(MapAndKey, CellsMut) with context;
    }
    global helpers {
        19, c"bpf_get_current_pid_tgid" => get_current_pid_tgid();
        35, c"bpf_redirect_map" => redirect_map(Map, Anything, Anything);
    }
    test run CopyTestRun<SampleContext, { TAG.value() }>;
    .with_required_irql(DISPATCH_LEVEL)
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::{Input, ReadableCells, find, replace};

    /// `find` over copies of `buffer` and `needle`, and upstream's no-match value for that
    /// copy of `buffer` (a NULL match minus its address).
    fn find_in<const B: usize, const N: usize>(
        mut buffer: [u8; B],
        mut needle: [u8; N],
    ) -> (u64, u64) {
        let none = 0u64.wrapping_sub(buffer.as_ptr() as u64);
        let (buffer, needle) = (
            Cell::from_mut(&mut buffer[..]),
            Cell::from_mut(&mut needle[..]),
        );
        let found = find(
            Input::from(buffer.as_slice_of_cells()),
            Input::from(needle.as_slice_of_cells()),
        );
        (found, none)
    }

    #[test]
    fn find_gives_upstreams_offsets_within_the_c_strings() {
        assert_eq!(find_in(*b"it is rainy\0", *b"rainy\0").0, 6);
        assert_eq!(
            find_in(*b"rainy", *b"ny").0,
            3,
            "a match that ends at the size"
        );
        let (found, none) = find_in(*b"ab\0rainy", *b"rainy\0");
        assert_eq!(found, none, "no match past a NUL");
        assert_eq!(find_in(*b"abc", *b"\0x").0, 0, "an empty string to find");
        let (found, none) = find_in(*b"ab", *b"abc");
        assert_eq!(found, none, "a longer string to find");
    }

    fn replace_in(buffer: &mut [u8], position: u64, with: &mut [u8]) -> u64 {
        let (buffer, with) = (Cell::from_mut(buffer), Cell::from_mut(with));
        replace(
            ReadableCells::from(buffer.as_slice_of_cells()),
            position,
            ReadableCells::from(with.as_slice_of_cells()),
        )
    }

    #[test]
    fn replace_writes_the_c_string_but_never_the_last_byte() {
        let mut buffer = *b"it is rainy\0";
        assert_eq!(replace_in(&mut buffer, 6, &mut b"sunny\0".clone()), 0);
        assert_eq!(&buffer, b"it is sunny\0");
        assert_eq!(replace_in(&mut buffer, 9, &mut b"sunny\0".clone()), 0);
        assert_eq!(&buffer, b"it is sunsu\0", "stops before the last byte");
        let mut again = *b"abcd";
        assert_eq!(
            replace_in(&mut again, 4, &mut b"x".clone()),
            u64::MAX,
            "at the size"
        );
        assert_eq!(
            replace_in(&mut again, u64::MAX, &mut b"x".clone()),
            u64::MAX,
            "negative"
        );
        assert_eq!(&again, b"abcd");
    }
}
