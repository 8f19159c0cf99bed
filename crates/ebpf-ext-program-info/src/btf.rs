//! A BTF-resolved function provider: functions a driver exports to eBPF programs by name,
//! under a module GUID, independently of any program type (eBPF for Windows'
//! `EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID`; Linux calls them kfuncs).
//!
//! A program declares such a function as an `extern` in its `.ksyms` section with the BTF
//! declaration tag `module_id:{GUID}`; when it loads, the core attaches to the provider whose
//! NMR module id is that GUID and calls the function through the address the provider
//! publishes for that name. So the provider's module id is the module GUID, and a function
//! is found by its name, not by an id.
//!
//! Declare the functions with [`btf_functions!`] (name, argument kinds and the Rust function
//! together, as [`helpers!`](crate::helpers!) does for helpers) and register them with
//! [`BtfFunctionProvider::register`] while the driver runs:
//!
//! ```ignore
//! fn lookup(key: u64, value: &[Cell<u8>]) -> u64 { /* ... */ }
//! btf_functions! {
//!     /// What the provider publishes.
//!     pub static FUNCTIONS = module MODULE_GUID;
//!     c"my_driver_lookup" => lookup(Anything, Cells);
//! }
//! let provider = BtfFunctionProvider::register(&FUNCTIONS, TAG)?;
//! ```
//!
//! A BTF-resolved function receives its five registers only: no program context, since any
//! program type may call it.

use core::ffi::CStr;

use ebpf_ext_nmr::{AttachingClient, Bound, Detach, NpiProvider, Provider};
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
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_INSUFFICIENT_RESOURCES;

use crate::HelperFunction;

/// The prototype of one BTF-resolved function (`ebpf_btf_resolved_function_prototype_t`).
#[repr(transparent)]
#[derive(Debug)]
pub struct BtfFunctionPrototype(ebpf_btf_resolved_function_prototype_t);
static_abi!(BtfFunctionPrototype);

impl BtfFunctionPrototype {
    /// A prototype: name, return type and up to five argument types; flags 0.
    ///
    /// # Panics
    /// At compile time if there are more than five arguments, or the name is empty or longer
    /// than `EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH`.
    #[must_use]
    pub const fn new(
        name: &'static CStr,
        return_type: ebpf_return_type_t,
        arguments: &[ebpf_argument_type_t],
    ) -> Self {
        assert!(
            arguments.len() <= 5,
            "a function takes at most five arguments"
        );
        assert!(!name.is_empty(), "a function needs a name");
        assert!(
            name.count_bytes() < EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
            "the name is too long"
        );
        let mut args = [0; 5];
        let mut i = 0;
        while i < arguments.len() {
            args[i] = arguments[i];
            i += 1;
        }
        BtfFunctionPrototype(ebpf_btf_resolved_function_prototype_t {
            header: EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
            name: name.as_ptr(),
            return_type,
            arguments: args,
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

/// Whether two names are the same bytes (`const`).
const fn same_name(a: &CStr, b: &CStr) -> bool {
    let (a, b) = (a.to_bytes(), b.to_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The functions one module exports: its module GUID and the provider data
/// (`ebpf_btf_resolved_function_provider_data_t`) over index-parallel prototypes and
/// addresses.
#[derive(Debug)]
pub struct BtfFunctions {
    module: GUID,
    data: ebpf_btf_resolved_function_provider_data_t,
}
static_abi!(BtfFunctions);

impl BtfFunctions {
    /// The functions `prototypes` describe, implemented by `functions` in the same order,
    /// exported under `module`. [`btf_functions!`] builds both tables from one list.
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
    ///     [BtfFunctionPrototype::new(c"f", 1, &[]), BtfFunctionPrototype::new(c"f", 1, &[])];
    /// static FUNCTIONS: [HelperFunction; 2] = [HelperFunction::new(f), HelperFunction::new(f)];
    /// // Two functions named "f": does not compile.
    /// static MODULE: BtfFunctions =
    ///     BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS);
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
    /// static MODULE: BtfFunctions =
    ///     BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS);
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
    /// static MODULE: BtfFunctions =
    ///     BtfFunctions::new(GUID::from_u128(1), &PROTOTYPES, &FUNCTIONS);
    /// ```
    #[must_use]
    pub const fn new(
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
/// The argument kinds are [`helpers!`](crate::helpers!)'s (`Anything`, `Bytes`, `Cells`,
/// `BytesMut`, `CellsMut`, `DontCare`, …), with the same typed values; a function receives no
/// program context. An optional `-> Ret` gives the return kind, as for helpers.
///
/// ```ignore
/// btf_functions! {
///     /// The module's functions.
///     pub static FUNCTIONS = module MODULE_GUID;
///     c"my_driver_lookup" => lookup(Anything, Cells);
/// }
/// ```
#[macro_export]
macro_rules! btf_functions {
    (
        $(#[$meta:meta])*
        $vis:vis static $static_name:ident = module $module:expr;
        $(
            $name:literal => $function:ident ( $($kind:ty),* $(,)? ) $(-> $ret:ty)? ;
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
                        <$crate::helpers!(@return $($ret)?) as $crate::HelperReturn>::TYPE,
                        &$crate::argument_types(
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
                    $crate::helpers!(@trampoline [] ();
                        $crate::helpers!(@return $($ret)?); $function; $($kind),*)
                ),+
            ];
            $crate::BtfFunctions::new($module, &__EBPF_EXT_PROTOTYPES, &__EBPF_EXT_FUNCTIONS)
        };
    };
}

/// The BTF-resolved function NPI as [`ebpf_ext_nmr`] sees it.
struct BtfNpi {
    functions: &'static BtfFunctions,
}

/// What the provider keeps per attached core client (one per loaded program that calls the
/// module's functions).
struct CoreClient {
    _module: GUID,
}

// SAFETY: the characteristics are the provider data of `BtfFunctions`, whose addresses are
// functions in the helper calling convention taking what their prototypes declare (built
// together by `btf_functions!`, or by a caller of `BtfFunctions::new` with `HelperFunction`s,
// whose `unsafe` functions carry that obligation), and which read no program context.
unsafe impl NpiProvider for BtfNpi {
    type Characteristics = ebpf_btf_resolved_function_provider_data_t;
    type Binding = CoreClient;
    const NPI_ID: &'static NPIID = &EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID;

    fn characteristics(&self) -> &ebpf_btf_resolved_function_provider_data_t {
        &self.functions.data
    }

    fn attach(
        &self,
        client: &AttachingClient<'_>,
    ) -> core::result::Result<Bound<CoreClient>, NTSTATUS> {
        client
            .allocate(CoreClient {
                _module: client.module_id(),
            })
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)
    }

    fn detach(_: &CoreClient) -> Detach {
        // The provider never calls into the core; the core stops calling the functions
        // (waiting for running programs) before its detach returns.
        Detach::Complete
    }
}

/// A registered BTF-resolved function provider; dropping it deregisters and waits until
/// every core client has detached, after which no program calls its functions.
///
/// # IRQL
/// Register and drop at PASSIVE_LEVEL. The functions run at the IRQL of the programs that
/// call them (up to DISPATCH_LEVEL).
///
/// # Locking
/// Takes no lock of its own; NMR serialises the callbacks per binding.
pub struct BtfFunctionProvider {
    _provider: Provider<BtfNpi>,
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
        let provider = Provider::register(functions.module, BtfNpi { functions }, tag)?;
        Ok(BtfFunctionProvider {
            _provider: provider,
        })
    }
}
