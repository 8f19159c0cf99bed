//! BTF-resolved function providers ([`BtfFunctions`], [`btf_functions!`](crate::btf_functions!),
//! [`BtfFunctionProvider`]).

use core::ffi::CStr;

use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX, EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP, EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE,
};

use ebpf_ext_nmr::Provider;
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::Result;
use ebpf_ext_sys::ebpf_base::{ebpf_argument_type_t, ebpf_return_type_t};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_btf_resolved_function_prototype_t, ebpf_btf_resolved_function_provider_data_t,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER, EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER,
    EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
};
use ebpf_ext_sys::netioddk::NPIID;
use ebpf_ext_sys::ntdef::GUID;

use crate::{HelperFunction, PublishedData, StaticNpi, five_arguments};

/// The prototype of one BTF-resolved function (`ebpf_btf_resolved_function_prototype_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct BtfFunctionPrototype(ebpf_btf_resolved_function_prototype_t);
static_abi!(BtfFunctionPrototype);

impl BtfFunctionPrototype {
    /// A prototype: name, return type and up to five argument types; flags 0.
    ///
    /// # Panics
    /// At compile time if there are more than five arguments, a `DONTCARE` comes before
    /// another type (the verifier would check nothing after it), or the name is not a C
    /// identifier (it is the C declaration's name and the store's registry key name) or is
    /// longer than `EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH`.
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::BtfFunctionPrototype;
    /// # use ebpf_ext_sys::ebpf_base::*;
    /// static P: BtfFunctionPrototype = BtfFunctionPrototype::new(
    ///     c"f",
    ///     EBPF_RETURN_TYPE_INTEGER,
    ///     &[EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_DONTCARE, EBPF_ARGUMENT_TYPE_ANYTHING],
    /// );
    /// ```
    ///
    /// ```
    /// # use ebpf_ext_program_info::BtfFunctionPrototype;
    /// # use ebpf_ext_sys::ebpf_base::*;
    /// static P: BtfFunctionPrototype = BtfFunctionPrototype::new(
    ///     c"f",
    ///     EBPF_RETURN_TYPE_INTEGER,
    ///     &[EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_DONTCARE],
    /// );
    /// ```
    #[must_use]
    pub const fn new(
        name: &'static CStr,
        return_type: ebpf_return_type_t,
        arguments: &[ebpf_argument_type_t],
    ) -> Self {
        assert!(
            is_identifier(name.to_bytes()),
            "a function's name is a C identifier"
        );
        assert!(
            name.count_bytes() < EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
            "the name is too long"
        );
        BtfFunctionPrototype(ebpf_btf_resolved_function_prototype_t {
            header: EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
            name: name.as_ptr(),
            return_type,
            arguments: five_arguments(arguments),
            flags: 0,
        })
    }

    /// The same prototype with `flags`.
    #[must_use]
    pub const fn with_flags(mut self, flags: u32) -> Self {
        self.0.flags = flags;
        self
    }

    /// The raw prototype.
    #[must_use]
    pub const fn raw(&self) -> &ebpf_btf_resolved_function_prototype_t {
        &self.0
    }
}

/// Whether `name` is a C identifier: a letter or `_`, then letters, digits and `_`.
const fn is_identifier(name: &[u8]) -> bool {
    if name.is_empty() || name[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if !(name[i].is_ascii_alphanumeric() || name[i] == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether two names are the same but for ASCII case: the store keeps each under a
/// registry key, and registry key names ignore case (`const`).
const fn same_name(a: &CStr, b: &CStr) -> bool {
    let (a, b) = (a.to_bytes(), b.to_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if !a[i].eq_ignore_ascii_case(&b[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// The argument types of a BTF-resolved function of these kinds: as [`argument_types`],
/// without the program's context or a map, which a function callable from programs of any
/// type has no typed use for.
///
/// # Panics
/// At compile time for a context (`Context`, `ContextMut`) or map (`Map`, `MapAndKey`)
/// argument.
///
/// [`argument_types`]: crate::argument_types
#[must_use]
pub const fn btf_argument_types(kinds: &[&[ebpf_argument_type_t]]) -> [ebpf_argument_type_t; 5] {
    let types = crate::argument_types(kinds);
    let mut i = 0;
    while i < types.len() {
        let t = types[i];
        assert!(
            t != EBPF_ARGUMENT_TYPE_PTR_TO_CTX && t != EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL,
            "a BTF-resolved function receives no program context"
        );
        assert!(
            t != EBPF_ARGUMENT_TYPE_PTR_TO_MAP
                && t != EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY
                && t != EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE,
            "a BTF-resolved function takes no map"
        );
        i += 1;
    }
    types
}

/// The functions one module exports to programs of any type, by name (eBPF for Windows'
/// BTF-resolved functions, `EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID`; Linux calls them
/// kfuncs): its module GUID and the provider data
/// (`ebpf_btf_resolved_function_provider_data_t`) over index-parallel prototypes and
/// addresses.
///
/// A program declares such a function as an `extern` in its `.ksyms` section with the BTF
/// declaration tag `module_id:{GUID}`. When it loads, the core attaches to the provider whose
/// NMR module id is that GUID ([`BtfFunctionProvider`]) and calls the function through the
/// address published for that name; while the provider is deregistered the program's
/// invocations fail. A function receives the five argument registers its prototype declares
/// (the core passes the program's context sixth, which the SDK's functions never read).
///
/// Declare them with [`btf_functions!`](crate::btf_functions!) (name, argument kinds and the
/// Rust function together) and register them with `Start::btf_functions` (the facade) or
/// [`BtfFunctionProvider::register`].
#[derive(Debug)]
pub struct BtfFunctions {
    module: GUID,
    data: ebpf_btf_resolved_function_provider_data_t,
}
static_abi!(BtfFunctions);

impl BtfFunctions {
    /// The functions `prototypes` describe, implemented by `functions` in the same order,
    /// exported under `module`. [`btf_functions!`](crate::btf_functions!) builds both tables
    /// from one list.
    ///
    /// # Panics
    /// At compile time if the module is GUID_NULL, there are no functions (the core refuses
    /// an empty provider), the two tables differ in length, or two prototypes share a name
    /// (programs find functions by name):
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_sys::ntdef::GUID;
    /// # unsafe extern "win64" fn f(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 { 0 }
    /// static PROTOTYPES: [BtfFunctionPrototype; 2] =
    ///     [BtfFunctionPrototype::new(c"f", 1, &[]), BtfFunctionPrototype::new(c"F", 1, &[])];
    /// static FUNCTIONS: [HelperFunction; 2] = [HelperFunction::new(f), HelperFunction::new(f)];
    /// // "f" and "F" (one registry key): does not compile.
    /// // SAFETY: `f` reads no argument.
    /// static MODULE: BtfFunctions =
    ///     unsafe { BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS) };
    /// ```
    ///
    /// ```compile_fail
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_sys::ntdef::GUID;
    /// # unsafe extern "win64" fn f(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 { 0 }
    /// static PROTOTYPES: [BtfFunctionPrototype; 2] =
    ///     [BtfFunctionPrototype::new(c"f", 1, &[]), BtfFunctionPrototype::new(c"g", 1, &[])];
    /// static FUNCTIONS: [HelperFunction; 1] = [HelperFunction::new(f)];
    /// // Two prototypes, one address: does not compile.
    /// // SAFETY: `f` reads no argument.
    /// static MODULE: BtfFunctions =
    ///     unsafe { BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS) };
    /// ```
    ///
    /// The same two tables with names "f" and "g" and two addresses compile:
    ///
    /// ```
    /// # use ebpf_ext_program_info::*;
    /// # use ebpf_ext_sys::ntdef::GUID;
    /// # unsafe extern "win64" fn f(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 { 0 }
    /// static PROTOTYPES: [BtfFunctionPrototype; 2] =
    ///     [BtfFunctionPrototype::new(c"f", 1, &[]), BtfFunctionPrototype::new(c"g", 1, &[])];
    /// static FUNCTIONS: [HelperFunction; 2] = [HelperFunction::new(f), HelperFunction::new(f)];
    /// // SAFETY: `f` reads no argument.
    /// static MODULE: BtfFunctions =
    ///     unsafe { BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS) };
    /// ```
    ///
    /// # Safety
    /// Each function may be called, as the verifier allows for its prototype, by programs of
    /// any type: with the five argument registers the prototype declares (pointers to memory
    /// of the sizes it declares), and the program's context sixth, whose type it cannot know
    /// and must not read. [`btf_functions!`](crate::btf_functions!) builds trampolines that
    /// read exactly what the prototype declares.
    #[must_use]
    pub const unsafe fn new(
        module: GUID,
        prototypes: &'static [BtfFunctionPrototype],
        functions: &'static [HelperFunction],
    ) -> Self {
        assert!(
            module.Data1 != 0
                || module.Data2 != 0
                || module.Data3 != 0
                || u64::from_ne_bytes(module.Data4) != 0,
            "the module GUID must not be GUID_NULL"
        );
        assert!(
            !prototypes.is_empty(),
            "a provider exports at least one function"
        );
        assert!(
            prototypes.len() == functions.len(),
            "one address per prototype"
        );
        assert!(prototypes.len() <= u32::MAX as usize, "too many functions");
        let mut i = 0;
        while i < prototypes.len() {
            let mut j = i + 1;
            while j < prototypes.len() {
                // SAFETY: every name comes from a `&'static CStr` (`BtfFunctionPrototype::new`).
                let a = unsafe { CStr::from_ptr(prototypes[i].0.name) };
                // SAFETY: as above.
                let b = unsafe { CStr::from_ptr(prototypes[j].0.name) };
                assert!(!same_name(a, b), "two functions share a name");
                j += 1;
            }
            i += 1;
        }
        BtfFunctions {
            module,
            data: ebpf_btf_resolved_function_provider_data_t {
                header: EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER,
                #[expect(clippy::cast_possible_truncation, reason = "checked above")]
                btf_resolved_function_count: prototypes.len() as u32,
                // `BtfFunctionPrototype` is transparent over the core's prototype.
                btf_resolved_function_prototypes: prototypes.as_ptr().cast(),
                // `HelperFunction` is a transparent pointer, laid out like the core's uint64_t
                // array.
                btf_resolved_function_addresses: functions.as_ptr().cast::<u64>(),
            },
        }
    }

    /// The module GUID programs name in their `module_id:{GUID}` declaration tag.
    #[must_use]
    pub const fn module(&self) -> GUID {
        self.module
    }

    /// The provider data published over NMR.
    #[must_use]
    pub const fn raw(&self) -> &ebpf_btf_resolved_function_provider_data_t {
        &self.data
    }
}

/// Declares a module's BTF-resolved functions once — name, argument kinds and the Rust
/// function together — and builds the [`BtfFunctions`] to register from that one list, so the
/// prototypes and the addresses cannot disagree.
///
/// The argument kinds are [`helpers!`](crate::helpers!)'s memory and number kinds
/// (`Anything`, `DontCare`, `Bytes`, `Cells`, `BytesMut`, `CellsMut`), with the same typed
/// values and the same aliasing rules; `Context`, `ContextMut`, `Map` and `MapAndKey` do not
/// compile, since programs of any type call the function. It returns a `u64`.
///
/// # IRQL
/// A function runs at the IRQL of the program that calls it, which its program type's hooks
/// choose (up to DISPATCH_LEVEL for the SDK's hooks): it must not block or touch paged
/// memory.
///
/// ```
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_sys::ntdef::GUID;
/// /// Stores `key` in the first bytes of `value`; returns how many were written.
/// fn lookup(key: u64, mut value: Output<'_>) -> u64 {
///     let bytes = key.to_le_bytes();
///     let n = bytes.len().min(value.len());
///     if value.write_at(0, &bytes[..n]) { n as u64 } else { 0 }
/// }
/// btf_functions! {
///     /// The module's functions.
///     pub static FUNCTIONS = module GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);
///     c"my_driver_lookup" => lookup(Anything, BytesMut);
/// }
/// assert_eq!(FUNCTIONS.raw().btf_resolved_function_count, 1);
/// ```
///
/// A function that asks for the program's context does not compile:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_sys::ntdef::GUID;
/// fn peek(_: &()) -> u64 { 0 }
/// btf_functions! {
///     static FUNCTIONS = module GUID::from_u128(1);
///     c"peek" => peek(Context);
/// }
/// ```
///
/// Nor does a name that is not a C identifier:
///
/// ```compile_fail
/// # use ebpf_ext_program_info::*;
/// # use ebpf_ext_sys::ntdef::GUID;
/// fn zero() -> u64 { 0 }
/// btf_functions! {
///     static FUNCTIONS = module GUID::from_u128(1);
///     c"my-driver\\zero" => zero();
/// }
/// ```
#[macro_export]
macro_rules! btf_functions {
    (
        $(#[$meta:meta])*
        $vis:vis static $static_name:ident = module $module:expr;
        $(
            $name:literal => $function:ident ( $($kind:ty),* $(,)? ) ;
        )+
    ) => {
        $(#[$meta])*
        $vis static $static_name: $crate::BtfFunctions = {
            static __EBPF_EXT_PROTOTYPES: [$crate::BtfFunctionPrototype; [$($name),+].len()] = [
                $({
                    $crate::check_overlap(
                        &[$(<$kind as $crate::HelperArgument<()>>::MEMORY),*],
                        false,
                    );
                    $crate::BtfFunctionPrototype::new(
                        $name,
                        <::core::primitive::u64 as $crate::HelperReturn>::TYPE,
                        &$crate::btf_argument_types(
                            &[$(<$kind as $crate::HelperArgument<()>>::TYPES),*]
                        ),
                    )
                }),+
            ];
            // No program context, so no data pointers to keep.
            #[allow(dead_code, reason = "read only by `ContextMut` arguments")]
            const __EBPF_EXT_DATA_POINTERS: $crate::DataPointerOffsets<()> =
                $crate::DataPointerOffsets::NONE;
            static __EBPF_EXT_FUNCTIONS: [$crate::HelperFunction; [$($name),+].len()] = [
                $(
                    $crate::helpers!(
                        @trampoline [] (); ::core::primitive::u64; $function; $($kind),*
                    )
                ),+
            ];
            // SAFETY: each trampoline reads exactly the registers its prototype, built from
            // the same kinds, declares (none of them the program's context or a map), and
            // never the sixth.
            unsafe {
                $crate::BtfFunctions::new($module, &__EBPF_EXT_PROTOTYPES, &__EBPF_EXT_FUNCTIONS)
            }
        };
    };
}

// SAFETY: the provider data of `BtfFunctions`, whose functions take what their prototypes
// declare and read no program context (`BtfFunctions::new`'s contract).
unsafe impl PublishedData for BtfFunctions {
    type Characteristics = ebpf_btf_resolved_function_provider_data_t;
    const NPI_ID: &'static NPIID = &EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID;

    fn characteristics(&self) -> &ebpf_btf_resolved_function_provider_data_t {
        &self.data
    }
}

/// A registered BTF-resolved function provider; dropping it deregisters and waits until
/// every core client has detached, after which no program calls its functions.
///
/// # IRQL
/// Register and drop at PASSIVE_LEVEL. The functions run at the IRQL of the programs that
/// call them.
///
/// # Locking
/// Takes no lock of its own; NMR serialises the callbacks per binding.
pub struct BtfFunctionProvider {
    _provider: Provider<StaticNpi<BtfFunctions>>,
}

impl BtfFunctionProvider {
    /// Registers `functions` as an NMR provider of the BTF-resolved function NPI, with their
    /// module GUID as the NMR module id (how the core finds it).
    ///
    /// # Errors
    /// [`ebpf_ext_sys::Error::InsufficientResources`] if the context cannot be allocated; the
    /// status of `NmrRegisterProvider` as [`ebpf_ext_sys::Error::Api`] if it fails.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL.
    pub fn register(functions: &'static BtfFunctions, tag: PoolTag) -> Result<Self> {
        let provider = Provider::register(functions.module, StaticNpi { data: functions }, tag)?;
        Ok(BtfFunctionProvider {
            _provider: provider,
        })
    }
}
