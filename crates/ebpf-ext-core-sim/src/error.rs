//! What the core-sim reports: why a provider was refused, and why an attach or detach failed.

use core::fmt;

use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_FAILED, EBPF_NO_MEMORY, ebpf_result_t,
};
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_INVALID_PARAMETER;

/// Which helper table of the program data an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelperTable {
    /// `program_type_specific_helper_prototype` /
    /// `program_type_specific_helper_function_addresses`.
    ProgramTypeSpecific,
    /// `global_helper_prototype` / `global_helper_function_addresses` (overrides of global
    /// helpers).
    Global,
}

impl fmt::Display for HelperTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HelperTable::ProgramTypeSpecific => "program-type-specific",
            HelperTable::Global => "global",
        })
    }
}

/// One versioned object of the program data (each starts with an `ebpf_extension_header_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// `ebpf_program_data_t`.
    ProgramData,
    /// `ebpf_program_info_t`.
    ProgramInfo,
    /// `ebpf_program_type_descriptor_t`.
    ProgramTypeDescriptor,
    /// One `ebpf_helper_function_prototype_t`; `index` counts elements at the core's
    /// validation stride (element 0's `header.total_size`).
    HelperPrototype {
        /// The table.
        table: HelperTable,
        /// Element index.
        index: u32,
    },
    /// An `ebpf_helper_function_addresses_t`.
    HelperAddresses {
        /// The table.
        table: HelperTable,
    },
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::ProgramData => f.write_str("program data (ebpf_program_data_t)"),
            Object::ProgramInfo => f.write_str("program information (ebpf_program_info_t)"),
            Object::ProgramTypeDescriptor => {
                f.write_str("program type descriptor (ebpf_program_type_descriptor_t)")
            }
            Object::HelperPrototype { table, index } => {
                write!(f, "{table} helper prototype {index}")
            }
            Object::HelperAddresses { table } => write!(f, "{table} helper address table"),
        }
    }
}

/// A defect of a program-information provider's `ebpf_program_data_t`: one variant per rule
/// of the core (`libs/shared/shared_common.c` and `ebpf_program.c`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramDataError {
    /// The provider's `NpiSpecificCharacteristics` is NULL.
    #[error("the provider's NpiSpecificCharacteristics (ebpf_program_data_t) is NULL")]
    NullProgramData,
    /// `header.version` is not the current version of the object.
    #[error("{object}: header.version is {version}, the core requires {expected}")]
    UnsupportedVersion {
        /// The object.
        object: Object,
        /// Its `header.version`.
        version: u16,
        /// The version the core requires.
        expected: u16,
    },
    /// `header.size` is not one the core accepts for the object.
    #[error("{object}: header.size is {size}, the core accepts only {accepted:?}")]
    UnsupportedSize {
        /// The object.
        object: Object,
        /// Its `header.size`.
        size: usize,
        /// The sizes the core accepts.
        accepted: &'static [usize],
    },
    /// `header.total_size` is below `header.size`: the object claims to end before the
    /// fields its size says it has.
    #[error("{object}: header.total_size is {total_size}, below header.size {size}")]
    TotalSizeBelowSize {
        /// The object.
        object: Object,
        /// Its `header.size`.
        size: usize,
        /// Its `header.total_size`.
        total_size: usize,
    },
    /// `program_info` is NULL.
    #[error("program_data.program_info is NULL")]
    NullProgramInfo,
    /// `program_type_descriptor` is NULL.
    #[error("program_info.program_type_descriptor is NULL")]
    NullProgramTypeDescriptor,
    /// The type descriptor's `name` is NULL.
    #[error("program type descriptor: name is NULL")]
    NullProgramTypeName,
    /// The type descriptor's `context_descriptor` is NULL.
    #[error("program type descriptor: context_descriptor is NULL")]
    NullContextDescriptor,
    /// `context_descriptor->size` is below `sizeof(ebpf_context_descriptor_t)` (16).
    #[error("context descriptor: size is {size}, the core requires at least 16")]
    ContextDescriptorTooSmall {
        /// The descriptor's `size`.
        size: i32,
    },
    /// A helper prototype count is non-zero but the prototype array is NULL.
    #[error("{table} helper prototypes: count is {count} but the array is NULL")]
    NullHelperPrototypes {
        /// The table.
        table: HelperTable,
        /// The declared count.
        count: u32,
    },
    /// A helper prototype's `name` is NULL.
    #[error("{table} helper prototype {index}: name is NULL")]
    NullHelperName {
        /// The table.
        table: HelperTable,
        /// Element index at the core's validation stride.
        index: u32,
    },
    /// A helper address table has `helper_function_count` 0.
    #[error("{table} helper address table: helper_function_count is 0")]
    EmptyHelperAddresses {
        /// The table.
        table: HelperTable,
    },
    /// A helper address table's `helper_function_address` array is NULL.
    #[error("{table} helper address table: helper_function_address is NULL")]
    NullHelperAddressArray {
        /// The table.
        table: HelperTable,
    },
    /// A helper address table's count differs from the matching prototype count.
    #[error(
        "{table} helpers: {addresses} address(es) for {prototypes} prototype(s); the counts must be equal"
    )]
    HelperCountMismatch {
        /// The table.
        table: HelperTable,
        /// Prototype count in the program information.
        prototypes: u32,
        /// `helper_function_count` of the address table.
        addresses: u32,
    },
    /// `required_irql` is above `HIGH_LEVEL`.
    #[error("required_irql is {required_irql}, above HIGH_LEVEL (15)")]
    IrqlTooHigh {
        /// The provider's `required_irql`.
        required_irql: u8,
    },
    /// The reserved bit 0 of `capabilities` is set.
    #[error("capabilities is {capabilities:#x}: the reserved bit 0 must be clear")]
    ReservedCapability {
        /// The raw `capabilities` value.
        capabilities: u32,
    },
    /// Element 0 of a helper prototype array of more than one element has a
    /// `header.total_size` that is not its `header.size` rounded up to 8: the core would validate the array at one stride
    /// (`total_size`) and copy it at another, reading memory it never validated. The core does
    /// not check this; the core-sim refuses rather than read outside the provider's array.
    #[error(
        "{table} helper prototypes: element 0 has size {size} but total_size {total_size}; the core validates at total_size and copies at size rounded up to 8"
    )]
    InconsistentHelperStride {
        /// The table.
        table: HelperTable,
        /// Element 0's `header.size`.
        size: usize,
        /// Element 0's `header.total_size`.
        total_size: usize,
    },
    /// Copying the helper prototypes (stride: element 0's `header.size` rounded up to 8, as
    /// the core duplicates them) met a prototype with a NULL name. Validation strides by
    /// element 0's `header.total_size`, which must now equal the copy's stride, so this is
    /// met only when the provider's memory changes between the check and the copy.
    #[error(
        "{table} helper prototype {index}: name is NULL when copied at the core's duplication stride"
    )]
    CopyNullHelperName {
        /// The table.
        table: HelperTable,
        /// Element index at the duplication stride.
        index: u32,
    },
}

/// A defect of a hook provider's `ebpf_attach_provider_data_t` (the core's
/// `ebpf_validate_attach_provider_data`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachProviderDataError {
    /// The provider's `NpiSpecificCharacteristics` is NULL.
    #[error("the hook provider's NpiSpecificCharacteristics (ebpf_attach_provider_data_t) is NULL")]
    NullProviderData,
    /// `header.version` is not 1.
    #[error("attach provider data: header.version is {version}, the core requires 1")]
    UnsupportedVersion {
        /// The provider's `header.version`.
        version: u16,
    },
    /// `header.size` is not 48.
    #[error("attach provider data: header.size is {size}, the core accepts only 48")]
    UnsupportedSize {
        /// The provider's `header.size`.
        size: usize,
    },
    /// `header.total_size` is below `header.size`.
    #[error("attach provider data: header.total_size is {total_size}, below header.size {size}")]
    TotalSizeBelowSize {
        /// The provider's `header.size`.
        size: usize,
        /// The provider's `header.total_size`.
        total_size: usize,
    },
    /// `supported_program_type` is `GUID_NULL`.
    #[error("attach provider data: supported_program_type is GUID_NULL")]
    NullSupportedProgramType,
}

/// Why the core-sim's `ClientAttachProvider` refused a provider with
/// `STATUS_INVALID_PARAMETER`, before calling `NmrClientAttachProvider`.
///
/// A provider that is merely "not for me" (another program type or attach type) is declined
/// and not recorded as a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// NMR passed no provider registration instance.
    #[error("no provider registration instance")]
    NoRegistrationInstance,
    /// The provider's `ModuleId` is NULL.
    #[error("the provider's ModuleId is NULL")]
    NullModuleId,
    /// The provider's `ModuleId->Type` is not `MIT_GUID`.
    #[error("the provider's ModuleId->Type is {module_id_type}, not MIT_GUID (1)")]
    ModuleIdNotGuid {
        /// The provider's `ModuleId->Type`.
        module_id_type: i32,
    },
    /// The program-information provider's program data is invalid.
    #[error("invalid program data: {0}")]
    InvalidProgramData(ProgramDataError),
    /// The hook provider's attach provider data is invalid.
    #[error("invalid attach provider data: {0}")]
    InvalidAttachProviderData(AttachProviderDataError),
    /// A provider is already attached (or attaching) to this client.
    #[error("a provider is already attached to this client")]
    SecondProvider,
    /// The client is a program's own ([`BpfProgram::info_client`]), and the provider's
    /// program data does not bind that program: the program-information hash over its
    /// helpers differs from the data it was loaded with, or a helper it calls no longer
    /// resolves. As the core's client of each program, it refuses before the provider sees it.
    ///
    /// [`BpfProgram::info_client`]: crate::bpf::BpfProgram::info_client
    #[error("the client's program does not bind to the provider's program data: {0}")]
    ProgramDoesNotBind(String),
}

impl Refusal {
    /// The status the core's `ClientAttachProvider` returns for this refusal
    /// (`STATUS_INVALID_PARAMETER` for every one).
    #[must_use]
    pub const fn status(&self) -> NTSTATUS {
        STATUS_INVALID_PARAMETER
    }
}

/// A core-sim operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// `NmrRegisterClient` failed.
    #[error("NmrRegisterClient failed with NTSTATUS {status:#010x}")]
    RegisterClient {
        /// Its status.
        status: NTSTATUS,
    },
    /// No provider attached (the core's `EBPF_EXTENSION_FAILED_TO_LOAD`).
    #[error("extension failed to load (EBPF_EXTENSION_FAILED_TO_LOAD): {reason}")]
    ExtensionFailedToLoad {
        /// Why, in words.
        reason: String,
        /// The last provider the core-sim refused (for a program-information client, only
        /// providers whose module GUID is the requested program type, or whose module id is
        /// not a GUID, are recorded). `None` if it refused none.
        refusal: Option<Refusal>,
        /// What the last `NmrClientAttachProvider` returned (the provider's
        /// `ProviderAttachClient` status, e.g. `STATUS_ACCESS_DENIED`), or `None` if the
        /// core-sim never called it.
        provider_status: Option<NTSTATUS>,
    },
    /// The program-information provider is not attached (it deregistered).
    #[error("the program-information provider is not attached")]
    NotAttached,
    /// The hook provider completed its detach of a link while invocations of that link were
    /// still running: the real core would free the program under them. The core-sim waits
    /// for them before freeing anything.
    #[error(
        "the hook provider completed its detach while {in_flight} invocation(s) of the link were still running"
    )]
    DetachedWhileInvoking {
        /// Invocations running when deregistration completed.
        in_flight: u64,
    },
    /// `NmrDeregisterClient` or `NmrWaitForClientDeregisterComplete` failed; the client's
    /// memory is leaked so NMR can never see it freed.
    #[error("{api} failed with NTSTATUS {status:#010x}")]
    Deregister {
        /// The routine.
        api: &'static str,
        /// Its status.
        status: NTSTATUS,
    },
    /// A test run's output buffers (`data_out`, `ctx_out`) could not be allocated. The caller
    /// asks for their sizes, so this is the caller's error, found before any provider is
    /// called (`EBPF_NO_MEMORY`).
    #[error("no memory for test-run output buffers of {data} and {context} bytes")]
    NoMemory {
        /// Bytes asked for `data_out`.
        data: usize,
        /// Bytes asked for `ctx_out`.
        context: usize,
    },
}

impl CoreError {
    /// The refusal behind an [`CoreError::ExtensionFailedToLoad`], if any.
    #[must_use]
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            CoreError::ExtensionFailedToLoad { refusal, .. } => refusal.as_ref(),
            _ => None,
        }
    }

    /// The provider status behind an [`CoreError::ExtensionFailedToLoad`], if any.
    #[must_use]
    pub fn provider_status(&self) -> Option<NTSTATUS> {
        match self {
            CoreError::ExtensionFailedToLoad {
                provider_status, ..
            } => *provider_status,
            _ => None,
        }
    }

    /// The `ebpf_result_t` the core would report for this error.
    #[must_use]
    pub fn ebpf_result(&self) -> ebpf_result_t {
        match self {
            CoreError::ExtensionFailedToLoad { .. } | CoreError::NotAttached => {
                EBPF_EXTENSION_FAILED_TO_LOAD
            }
            CoreError::NoMemory { .. } => EBPF_NO_MEMORY,
            _ => EBPF_FAILED,
        }
    }
}

/// Builds the `ExtensionFailedToLoad` error of a client that did not attach.
pub(crate) fn failed_to_load(
    what: &str,
    wanted: GUID,
    refusal: Option<Refusal>,
    provider_status: Option<NTSTATUS>,
    declined: u32,
) -> CoreError {
    let reason = if let Some(refusal) = &refusal {
        format!("the core refused the {what} provider: {refusal}")
    } else if let Some(status) = provider_status {
        format!("the {what} provider's ProviderAttachClient returned {status:#010x}")
    } else if declined > 0 {
        format!("no {what} provider for {wanted} ({declined} other provider(s) were not for it)")
    } else {
        format!("no {what} provider is registered")
    };
    CoreError::ExtensionFailedToLoad {
        reason,
        refusal,
        provider_status,
    }
}
