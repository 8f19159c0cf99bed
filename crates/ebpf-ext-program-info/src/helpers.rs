//! One declaration per helper: [`helpers!`](crate::helpers) and the argument kinds it knows.
//!
//! A helper is called by JIT-compiled or interpreted programs with five 64-bit registers. Its
//! prototype tells the verifier what each register holds; the function must then read the
//! registers the same way. `helpers!` generates both from one list — the prototype from each
//! argument kind's [`HelperArgument::TYPES`], and a trampoline in the eBPF calling convention
//! that turns the registers into the kind's typed value ([`HelperArgument::Value`]) and calls
//! the extension's safe Rust function with them — so a function whose parameters differ from
//! its prototype does not compile, and the two tables are in the same order by construction.

use core::slice;

use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    ebpf_argument_type_t,
};

/// A kind of helper argument: which prototype entries it stands for and what the helper
/// function receives for them.
///
/// # Safety
/// [`HelperArgument::take`] must read exactly `TYPES.len()` registers, and only as the
/// verifier guarantees them for `TYPES` (for example a pointer to readable memory followed by
/// its size).
pub unsafe trait HelperArgument<C: 'static> {
    /// The prototype's argument types for this kind (one or two registers).
    const TYPES: &'static [ebpf_argument_type_t];
    /// What the helper function receives.
    type Value<'a>;

    /// Reads this argument from `registers`, starting at `*at`, and advances `*at` past it.
    ///
    /// # Safety
    /// The registers are a program's call of a helper whose prototype has `TYPES` at `*at`,
    /// checked by the verifier; a context pointer points to a `C` (the extension invokes
    /// programs of this type only with a `C`); what they point to stays valid and unaliased
    /// for `'a` (the duration of the call).
    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a>;
}

/// The program's context (`PTR_TO_CTX`), received as `&C`.
#[derive(Debug)]
pub enum Context {}

// SAFETY: reads one register, a context pointer the verifier guarantees.
unsafe impl<C: 'static> HelperArgument<C> for Context {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_PTR_TO_CTX];
    type Value<'a> = &'a C;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let pointer = registers[*at] as *const C;
        *at += 1;
        // SAFETY: the verifier passes this program's context, which is a live `C` for the call
        // (the caller's contract).
        unsafe { &*pointer }
    }
}

/// Readable memory and its size (`PTR_TO_READABLE_MEM`, `CONST_SIZE`), received as `&[u8]`.
#[derive(Debug)]
pub enum Bytes {}

// SAFETY: reads two registers, a pointer and the size of readable memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for Bytes {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = &'a [u8];

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (pointer, size) = (registers[*at] as *const u8, registers[*at + 1]);
        *at += 2;
        match usize::try_from(size) {
            Ok(size) if size != 0 && !pointer.is_null() => {
                // SAFETY: the verifier guarantees `size` readable bytes at `pointer` for the call.
                unsafe { slice::from_raw_parts(pointer, size) }
            }
            _ => &[],
        }
    }
}

/// Writable memory and its size (`PTR_TO_WRITABLE_MEM`, `CONST_SIZE`), received as
/// `&mut [u8]`.
#[derive(Debug)]
pub enum BytesMut {}

// SAFETY: reads two registers, a pointer and the size of writable memory behind it.
unsafe impl<C: 'static> HelperArgument<C> for BytesMut {
    const TYPES: &'static [ebpf_argument_type_t] = &[
        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
        EBPF_ARGUMENT_TYPE_CONST_SIZE,
    ];
    type Value<'a> = &'a mut [u8];

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let (pointer, size) = (registers[*at] as *mut u8, registers[*at + 1]);
        *at += 2;
        match usize::try_from(size) {
            Ok(size) if size != 0 && !pointer.is_null() => {
                // SAFETY: the verifier guarantees `size` writable bytes at `pointer` (program
                // stack or map memory, not aliased by the context) for the call.
                unsafe { slice::from_raw_parts_mut(pointer, size) }
            }
            _ => &mut [],
        }
    }
}

/// Any 64-bit value (`ANYTHING`), received as `u64`.
#[derive(Debug)]
pub enum Anything {}

// SAFETY: reads one register as a plain number.
unsafe impl<C: 'static> HelperArgument<C> for Anything {
    const TYPES: &'static [ebpf_argument_type_t] = &[EBPF_ARGUMENT_TYPE_ANYTHING];
    type Value<'a> = u64;

    unsafe fn take<'a>(registers: &[u64; 5], at: &mut usize) -> Self::Value<'a> {
        let value = registers[*at];
        *at += 1;
        value
    }
}

/// The five prototype argument types of a helper whose arguments are `kinds` (their
/// [`HelperArgument::TYPES`] in order), unused ones `DONTCARE`.
///
/// # Panics
/// At compile time if the kinds need more than five registers.
#[must_use]
pub const fn argument_types(kinds: &[&[ebpf_argument_type_t]]) -> [ebpf_argument_type_t; 5] {
    let mut types = [0; 5];
    let mut n = 0;
    let mut k = 0;
    while k < kinds.len() {
        let mut i = 0;
        while i < kinds[k].len() {
            assert!(n < 5, "a helper takes at most five argument registers");
            types[n] = kinds[k][i];
            n += 1;
            i += 1;
        }
        k += 1;
    }
    types
}

/// Declares a program type's helpers once each: generates the prototype table and the
/// address table (with a trampoline per helper) from one list.
///
/// ```ignore
/// helpers! {
///     context PacketContext;
///     /// Prototypes, for `ProgramInfo::new`.
///     pub static HELPERS;
///     /// Addresses, for `ProgramData::with_helpers`.
///     pub static ADDRESSES;
///     HELPER_GET_INTERFACE_ID, c"sample_net_get_interface_id" => get_interface_id(Context);
///     HELPER_CHECKSUM, c"sample_net_checksum" => checksum(Bytes);
/// }
/// fn get_interface_id(context: &PacketContext) -> u64 { u64::from(context.interface_id) }
/// fn checksum(data: &[u8]) -> u64 { u64::from(internet_checksum(data)) }
/// ```
///
/// Each line is `id, name => function(kinds…)`; the kinds ([`Context`], [`Bytes`],
/// [`BytesMut`], [`Anything`]) say what the prototype declares and what the function
/// receives, and every helper returns an integer (`u64`). `context` names the type the
/// extension invokes programs of this type with (the `T` of its `ProgramContext<T>`): a
/// [`Context`] argument is received as `&T`. Ids are checked by `ProgramInfo::new` (range,
/// duplicates), and the address count by `ProgramData::with_helpers`.
#[macro_export]
macro_rules! helpers {
    (
        context $ctx:ty;
        $(#[$prototypes_meta:meta])* $prototypes_vis:vis static $prototypes:ident;
        $(#[$addresses_meta:meta])* $addresses_vis:vis static $addresses:ident;
        $( $id:expr, $name:literal => $function:ident ( $($kind:ty),* $(,)? ) ; )+
    ) => {
        $(#[$prototypes_meta])*
        $prototypes_vis static $prototypes: [$crate::HelperPrototype; [$($id),+].len()] = [
            $(
                $crate::HelperPrototype::new(
                    $id,
                    $name,
                    $crate::__sys::ebpf_base::EBPF_RETURN_TYPE_INTEGER,
                    &$crate::argument_types(
                        &[$(<$kind as $crate::HelperArgument<$ctx>>::TYPES),*]
                    ),
                )
            ),+
        ];
        $(#[$addresses_meta])*
        $addresses_vis static $addresses: $crate::HelperAddresses = {
            static FUNCTIONS: [$crate::HelperFunction; [$($id),+].len()] = [
                $({
                    unsafe extern "win64" fn trampoline(
                        r1: u64,
                        r2: u64,
                        r3: u64,
                        r4: u64,
                        r5: u64,
                    ) -> u64 {
                        let registers = [r1, r2, r3, r4, r5];
                        let mut at = 0usize;
                        let _ = &mut at;
                        $function($(
                            // SAFETY: the core calls this helper only as its prototype, built
                            // from the same kinds above, declares, with what the verifier
                            // checked; a context is the `$ctx` the extension invokes with.
                            unsafe {
                                <$kind as $crate::HelperArgument<$ctx>>::take(&registers, &mut at)
                            }
                        ),*)
                    }
                    $crate::HelperFunction::new(trampoline)
                }),+
            ];
            $crate::HelperAddresses::new(&FUNCTIONS)
        };
    };
}
