//! Routines the loader supplies when the resolver does not: what every kernel provides and a
//! user-mode implementation of the exports may lack.
//!
//! `__chkstk` (see [`crate::chkstk`]) and the C memory routines `ntoskrnl.exe` exports
//! (`memcpy`, `memmove`, `memset`, `memcmp`), in the Windows x64 convention. The host C
//! library's routines cannot be bound directly: they use the System V convention.

use core::ffi::c_int;

use crate::chkstk;

/// `memcpy`. Copies as `memmove` does, so an overlapping copy a driver makes behaves as it
/// would in most C libraries rather than aborting the test; 0 bytes touch neither pointer
/// (drivers pass NULL with a length of 0).
///
/// # Safety
/// As C `memcpy`: `src` and `dst` are valid for `count` bytes.
unsafe extern "win64" fn memcpy(dst: *mut u8, src: *const u8, count: usize) -> *mut u8 {
    if count != 0 {
        // SAFETY: the caller upholds memcpy's contract; `copy` allows overlap.
        unsafe { core::ptr::copy(src, dst, count) };
    }
    dst
}

/// `memmove`.
///
/// # Safety
/// As C `memmove`: `src` and `dst` are valid for `count` bytes.
unsafe extern "win64" fn memmove(dst: *mut u8, src: *const u8, count: usize) -> *mut u8 {
    if count != 0 {
        // SAFETY: the caller upholds memmove's contract.
        unsafe { core::ptr::copy(src, dst, count) };
    }
    dst
}

/// `memset`.
///
/// # Safety
/// As C `memset`: `dst` is valid for `count` bytes.
unsafe extern "win64" fn memset(dst: *mut u8, value: c_int, count: usize) -> *mut u8 {
    // C converts the value to unsigned char.
    let [byte, ..] = value.to_le_bytes();
    if count != 0 {
        // SAFETY: the caller upholds memset's contract.
        unsafe { core::ptr::write_bytes(dst, byte, count) };
    }
    dst
}

/// `memcmp`.
///
/// # Safety
/// As C `memcmp`: `a` and `b` are valid for `count` bytes.
unsafe extern "win64" fn memcmp(a: *const u8, b: *const u8, count: usize) -> c_int {
    if count == 0 {
        // Equal, whatever the pointers (a slice may not be made from NULL).
        return 0;
    }
    // SAFETY: the caller guarantees both buffers are readable for `count` bytes.
    let a = unsafe { core::slice::from_raw_parts(a, count) };
    // SAFETY: as above.
    let b = unsafe { core::slice::from_raw_parts(b, count) };
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map_or(0, |(x, y)| c_int::from(*x) - c_int::from(*y))
}

/// The loader's own implementation of `module!name`, if it supplies one.
pub(crate) fn lookup(module: &str, name: &str) -> Option<usize> {
    if !module.eq_ignore_ascii_case("ntoskrnl.exe") {
        return None;
    }
    let address = match name {
        "__chkstk" => chkstk::address(),
        "memcpy" => memcpy as *const () as usize,
        "memmove" => memmove as *const () as usize,
        "memset" => memset as *const () as usize,
        "memcmp" => memcmp as *const () as usize,
        _ => return None,
    };
    Some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_routines_follow_c() {
        let mut buffer = [0_u8; 8];
        let source = [1_u8, 2, 3, 4, 5, 6, 7, 8];
        // SAFETY: both buffers hold 8 bytes and do not overlap.
        unsafe { memcpy(buffer.as_mut_ptr(), source.as_ptr(), 8) };
        assert_eq!(buffer, source);
        // SAFETY: moves 6 bytes inside one 8-byte buffer.
        unsafe { memmove(buffer.as_mut_ptr().wrapping_add(2), buffer.as_ptr(), 6) };
        assert_eq!(buffer, [1, 2, 1, 2, 3, 4, 5, 6]);
        // SAFETY: 4 bytes of an 8-byte buffer.
        unsafe { memset(buffer.as_mut_ptr(), 0x1AB, 4) };
        assert_eq!(buffer, [0xAB, 0xAB, 0xAB, 0xAB, 3, 4, 5, 6]);
        // SAFETY: 8 readable bytes each.
        let order = unsafe { memcmp(buffer.as_ptr(), source.as_ptr(), 8) };
        assert!(order > 0);
        // SAFETY: as above.
        assert_eq!(unsafe { memcmp(source.as_ptr(), source.as_ptr(), 8) }, 0);
    }

    #[test]
    fn zero_bytes_touch_no_pointer_and_memcpy_tolerates_overlap() {
        let null = core::ptr::null_mut::<u8>();
        // SAFETY: 0 bytes: neither pointer is used (likewise below).
        assert_eq!(unsafe { memcmp(null, null, 0) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { memcpy(null, null, 0) }, null);
        // SAFETY: as above.
        assert_eq!(unsafe { memmove(null, null, 0) }, null);
        // SAFETY: as above.
        assert_eq!(unsafe { memset(null, 1, 0) }, null);
        let mut buffer = [1_u8, 2, 3, 4, 5, 6, 7, 8];
        // SAFETY: 6 bytes inside one 8-byte buffer, overlapping.
        unsafe { memcpy(buffer.as_mut_ptr().wrapping_add(2), buffer.as_ptr(), 6) };
        assert_eq!(buffer, [1, 2, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn only_ntoskrnl_names_are_supplied() {
        assert_eq!(lookup("NTOSKRNL.EXE", "__chkstk"), Some(chkstk::address()));
        assert!(lookup("ntoskrnl.exe", "memcpy").is_some());
        assert_eq!(lookup("NETIO.SYS", "memcpy"), None);
        assert_eq!(lookup("ntoskrnl.exe", "ExAllocatePool2"), None);
    }
}
