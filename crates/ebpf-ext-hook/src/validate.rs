//! Validation of the client data and dispatch table a link (hook client) presents at attach.

use core::ffi::c_void;
use core::mem::size_of;

use ebpf_ext_sys::ebpf_extension::{
    EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT, ebpf_extension_data_t,
    ebpf_extension_program_dispatch_table_t, ebpf_program_batch_begin_invoke_function_t,
    ebpf_program_batch_end_invoke_function_t, ebpf_program_batch_invoke_function_t,
    ebpf_program_invoke_function_t,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION, EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION_SIZE,
    ebpf_extension_header_t,
};
use ebpf_ext_sys::netioddk::NPI_REGISTRATION_INSTANCE;

use crate::{AttachParameter, AttachPolicy};

/// Why a client was rejected. Every rejection is `STATUS_INVALID_PARAMETER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// NMR passed no client registration instance.
    NoRegistrationInstance,
    /// The client registration instance has no `NpiSpecificCharacteristics`.
    NoClientData,
    /// `header.version` is not `EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION`.
    UnsupportedVersion,
    /// `header.size` is smaller than the current version's size.
    HeaderSizeTooSmall,
    /// `header.total_size` is smaller than `header.size`.
    TotalSizeTooSmall,
    /// `data_size` is neither 0 nor the size of the hook's attach parameter.
    AttachParameterSize,
    /// `data_size` is non-zero but `data` is NULL.
    NullAttachParameter,
    /// No client dispatch table.
    NoDispatchTable,
    /// The dispatch table's `version` is not `EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT` (1),
    /// the only layout whose entries this provider knows how to read.
    UnsupportedDispatchVersion,
    /// The dispatch table's `count` (its size, in entries) is 0: too small to hold the
    /// invoke entry.
    EmptyDispatchTable,
    /// The dispatch table's invoke entry (offset 8) is NULL.
    NoInvokeFunction,
}

impl Rejection {
    /// A short description for the trace event.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Rejection::NoRegistrationInstance => "no client registration instance",
            Rejection::NoClientData => "no client data (NpiSpecificCharacteristics is NULL)",
            Rejection::UnsupportedVersion => "unsupported client data version",
            Rejection::HeaderSizeTooSmall => "client data header size too small",
            Rejection::TotalSizeTooSmall => "client data total_size smaller than size",
            Rejection::AttachParameterSize => "attach parameter size differs from the hook's",
            Rejection::NullAttachParameter => "attach parameter size non-zero but data NULL",
            Rejection::NoDispatchTable => "no client dispatch table",
            Rejection::UnsupportedDispatchVersion => "unsupported client dispatch table version",
            Rejection::EmptyDispatchTable => {
                "client dispatch table count is 0 (too small for the invoke entry)"
            }
            Rejection::NoInvokeFunction => "client dispatch table has no invoke function",
        }
    }
}

/// The batch entries of a dispatch table, present only when `count >= 4` and all non-NULL.
#[derive(Clone, Copy)]
pub(crate) struct BatchFunctions {
    pub(crate) begin: ebpf_program_batch_begin_invoke_function_t,
    pub(crate) invoke: ebpf_program_batch_invoke_function_t,
    pub(crate) end: ebpf_program_batch_end_invoke_function_t,
}

/// What a valid client presented.
pub(crate) struct ValidClient<P> {
    /// `None` for a wildcard attach.
    pub(crate) parameter: Option<P>,
    pub(crate) prog_attach_flags: u64,
    pub(crate) invoke: ebpf_program_invoke_function_t,
    pub(crate) batch: Option<BatchFunctions>,
}

/// Validates the client registration instance and dispatch table.
///
/// # Safety
/// `instance` and `dispatch` are what NMR passed to `ProviderAttachClient`: NULL or valid for
/// reads of what they claim (the client data for `header.size` bytes and `data_size` bytes of
/// attach parameter; the dispatch table for `8 + 8 * count` bytes).
pub(crate) unsafe fn validate<P: AttachParameter>(
    instance: *const NPI_REGISTRATION_INSTANCE,
    dispatch: *const c_void,
    policy: AttachPolicy,
    wildcard: Option<P>,
) -> Result<ValidClient<P>, Rejection> {
    if instance.is_null() {
        return Err(Rejection::NoRegistrationInstance);
    }
    // SAFETY: non-null instance supplied by NMR.
    let data = unsafe { (*instance).NpiSpecificCharacteristics }.cast::<ebpf_extension_data_t>();
    if data.is_null() {
        return Err(Rejection::NoClientData);
    }
    // SAFETY: the header is the first member of any version of the client data.
    let header = unsafe { data.cast::<ebpf_extension_header_t>().read_unaligned() };
    if header.version != EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION {
        return Err(Rejection::UnsupportedVersion);
    }
    if header.size < EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION_SIZE {
        return Err(Rejection::HeaderSizeTooSmall);
    }
    if header.total_size < header.size {
        return Err(Rejection::TotalSizeTooSmall);
    }
    // SAFETY: `header.size` covers the whole current structure (checked above).
    let client = unsafe { data.read_unaligned() };
    let parameter = if policy == AttachPolicy::Unrestricted || client.data_size == 0 {
        None
    } else if client.data_size != size_of::<P>() {
        return Err(Rejection::AttachParameterSize);
    } else if client.data.is_null() {
        return Err(Rejection::NullAttachParameter);
    } else {
        // SAFETY: `data` is non-null and holds `size_of::<P>()` bytes (the client's promise);
        // `P: AttachParameter` is valid for any bit pattern.
        let value = unsafe { client.data.cast::<P>().read_unaligned() };
        if wildcard == Some(value) {
            None
        } else {
            Some(value)
        }
    };
    if dispatch.is_null() {
        return Err(Rejection::NoDispatchTable);
    }
    let table = dispatch.cast::<ebpf_extension_program_dispatch_table_t>();
    let entry = |offset: usize| table.wrapping_byte_add(offset);
    // SAFETY: every dispatch table starts with `version` and `count`.
    let version = unsafe { table.cast::<u16>().read_unaligned() };
    if version != EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT {
        return Err(Rejection::UnsupportedDispatchVersion);
    }
    // SAFETY: as above.
    let count = unsafe { table.wrapping_byte_add(2).cast::<u16>().read_unaligned() };
    if count == 0 {
        return Err(Rejection::EmptyDispatchTable);
    }
    // SAFETY: `count >= 1`, so the entry at offset 8 exists; a function pointer and `Option`
    // of it share the layout of a `usize` (0 = None).
    let invoke: Option<ebpf_program_invoke_function_t> = unsafe {
        entry(8)
            .cast::<Option<ebpf_program_invoke_function_t>>()
            .read_unaligned()
    };
    let Some(invoke) = invoke else {
        return Err(Rejection::NoInvokeFunction);
    };
    let batch = if count >= 4 {
        // SAFETY: `count >= 4`, so the entries at 16, 24 and 32 exist (function pointers, 0 =
        // None).
        let begin: Option<ebpf_program_batch_begin_invoke_function_t> = unsafe {
            entry(16)
                .cast::<Option<ebpf_program_batch_begin_invoke_function_t>>()
                .read_unaligned()
        };
        // SAFETY: as above.
        let batch_invoke: Option<ebpf_program_batch_invoke_function_t> = unsafe {
            entry(24)
                .cast::<Option<ebpf_program_batch_invoke_function_t>>()
                .read_unaligned()
        };
        // SAFETY: as above.
        let end: Option<ebpf_program_batch_end_invoke_function_t> = unsafe {
            entry(32)
                .cast::<Option<ebpf_program_batch_end_invoke_function_t>>()
                .read_unaligned()
        };
        match (begin, batch_invoke, end) {
            (Some(begin), Some(invoke), Some(end)) => Some(BatchFunctions { begin, invoke, end }),
            _ => None,
        }
    } else {
        None
    };
    Ok(ValidClient {
        parameter,
        prog_attach_flags: client.prog_attach_flags,
        invoke,
        batch,
    })
}

// The offsets read above are the ABI's (ebpf-extension-abi.md §2).
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(ebpf_extension_program_dispatch_table_t, version) == 0);
    assert!(offset_of!(ebpf_extension_program_dispatch_table_t, count) == 2);
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_invoke_function
        ) == 8
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_begin_invoke_function
        ) == 16
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_invoke_function
        ) == 24
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_end_invoke_function
        ) == 32
    );
};
