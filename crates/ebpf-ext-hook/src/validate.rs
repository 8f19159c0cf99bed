//! Validation of the client data and dispatch table a link (hook client) presents at attach.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ebpf_ext_sys::ebpf_extension::{
    EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT, ebpf_extension_data_t,
    ebpf_extension_program_dispatch_table_t, ebpf_program_batch_begin_invoke_function_t,
    ebpf_program_batch_end_invoke_function_t, ebpf_program_batch_invoke_function_t,
    ebpf_program_invoke_function_t,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION, EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE,
    ebpf_extension_header_t,
};
use ebpf_ext_sys::netioddk::NPI_REGISTRATION_INSTANCE;

use crate::config::AttachParameter;
use crate::policy::AttachPolicy;

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
    // SAFETY: the caller's contract is `Presented::new`'s.
    let presented = unsafe { Presented::new(instance, dispatch) };
    validate_presented(&presented, policy, wildcard)
}

/// The rules of [`validate`], in order, over what the client presented.
fn validate_presented<P: AttachParameter>(
    presented: &Presented,
    policy: AttachPolicy,
    wildcard: Option<P>,
) -> Result<ValidClient<P>, Rejection> {
    if !presented.has_instance() {
        return Err(Rejection::NoRegistrationInstance);
    }
    let Some(header) = presented.header() else {
        return Err(Rejection::NoClientData);
    };
    if header.version != EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION {
        return Err(Rejection::UnsupportedVersion);
    }
    if header.size < EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE {
        return Err(Rejection::HeaderSizeTooSmall);
    }
    if header.total_size < header.size {
        return Err(Rejection::TotalSizeTooSmall);
    }
    let Some(client) = presented.client_data() else {
        return Err(Rejection::HeaderSizeTooSmall);
    };
    let parameter = if !policy.reads_parameter() || client.data_size == 0 {
        None
    } else if client.data_size != size_of::<P>() {
        return Err(Rejection::AttachParameterSize);
    } else if client.data.is_null() {
        return Err(Rejection::NullAttachParameter);
    } else {
        let Some(value) = presented.parameter::<P>() else {
            return Err(Rejection::NullAttachParameter);
        };
        if wildcard == Some(value) {
            None
        } else {
            Some(value)
        }
    };
    let Some(table) = presented.dispatch_header() else {
        return Err(Rejection::NoDispatchTable);
    };
    if table.version != EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT {
        return Err(Rejection::UnsupportedDispatchVersion);
    }
    if table.count == 0 {
        return Err(Rejection::EmptyDispatchTable);
    }
    let Some(invoke) = presented.invoke_entry() else {
        return Err(Rejection::NoInvokeFunction);
    };
    let batch = if table.count >= 4 {
        presented.batch_entries()
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

/// The function pointer types of the dispatch table's entries.
trait DispatchFunction: Copy {}
impl DispatchFunction for ebpf_program_invoke_function_t {}
impl DispatchFunction for ebpf_program_batch_begin_invoke_function_t {}
impl DispatchFunction for ebpf_program_batch_invoke_function_t {}
impl DispatchFunction for ebpf_program_batch_end_invoke_function_t {}

/// The `version` and `count` every dispatch table starts with.
#[derive(Clone, Copy)]
struct DispatchHeader {
    version: u16,
    count: u16,
}

/// What NMR passed to `ProviderAttachClient`, each part read only as far as it says it
/// extends: every method is safe on its own, so the rules above stay safe code.
///
/// # Invariants
/// `instance` and `dispatch` satisfy [`validate`]'s safety contract.
struct Presented {
    instance: *const NPI_REGISTRATION_INSTANCE,
    dispatch: *const c_void,
}

impl Presented {
    /// # Safety
    /// As [`validate`].
    unsafe fn new(instance: *const NPI_REGISTRATION_INSTANCE, dispatch: *const c_void) -> Self {
        // INVARIANT: the caller's contract.
        Presented { instance, dispatch }
    }

    fn has_instance(&self) -> bool {
        !self.instance.is_null()
    }

    /// The client data (`NpiSpecificCharacteristics`), NULL without an instance.
    fn data(&self) -> *const ebpf_extension_data_t {
        if self.instance.is_null() {
            return ptr::null();
        }
        // SAFETY: a non-NULL instance supplied by NMR (type invariant).
        unsafe { (*self.instance).NpiSpecificCharacteristics }.cast()
    }

    /// The client data header; `None` without client data.
    fn header(&self) -> Option<ebpf_extension_header_t> {
        let data = self.data();
        if data.is_null() {
            return None;
        }
        // SAFETY: the header is the first member of any version of the client data.
        Some(unsafe { data.cast::<ebpf_extension_header_t>().read_unaligned() })
    }

    /// The whole current client data, when its header says it is that large.
    fn client_data(&self) -> Option<ebpf_extension_data_t> {
        let header = self.header()?;
        if header.size < EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE {
            return None;
        }
        // SAFETY: `header.size` covers the whole current structure (checked above), and the
        // client data is readable for `header.size` bytes (type invariant).
        Some(unsafe { self.data().read_unaligned() })
    }

    /// The attach parameter, when the client data points to exactly a `P`.
    fn parameter<P: AttachParameter>(&self) -> Option<P> {
        let client = self.client_data()?;
        if client.data.is_null() || client.data_size != size_of::<P>() {
            return None;
        }
        // SAFETY: `data` is non-null and holds `data_size` = `size_of::<P>()` bytes (type
        // invariant); `P: AttachParameter` is valid for any bit pattern.
        Some(unsafe { client.data.cast::<P>().read_unaligned() })
    }

    /// The dispatch table's `version` and `count`; `None` without a table.
    fn dispatch_header(&self) -> Option<DispatchHeader> {
        if self.dispatch.is_null() {
            return None;
        }
        // SAFETY: every dispatch table starts with `version` and `count`.
        let version = unsafe { self.dispatch.cast::<u16>().read_unaligned() };
        // SAFETY: as above.
        let count = unsafe {
            self.dispatch
                .wrapping_byte_add(2)
                .cast::<u16>()
                .read_unaligned()
        };
        Some(DispatchHeader { version, count })
    }

    /// Entry `index` (0: invoke, at offset 8) when the table has it; `None` for a NULL entry.
    fn entry<F: DispatchFunction>(&self, index: u16) -> Option<F> {
        let table = self.dispatch_header()?;
        if index >= table.count {
            return None;
        }
        let offset = 8 + 8 * usize::from(index);
        // SAFETY: the table holds `count` entries after its 8-byte header (type invariant) and
        // `index < count`; `F` is a function pointer type (`DispatchFunction`), and a function
        // pointer and `Option` of it share the layout of a `usize` (0 = `None`).
        unsafe {
            self.dispatch
                .wrapping_byte_add(offset)
                .cast::<Option<F>>()
                .read_unaligned()
        }
    }

    /// The invoke entry, when the table has a non-NULL one.
    fn invoke_entry(&self) -> Option<ebpf_program_invoke_function_t> {
        self.entry(0)
    }

    /// The three batch entries, when the table has all of them non-NULL.
    fn batch_entries(&self) -> Option<BatchFunctions> {
        Some(BatchFunctions {
            begin: self.entry::<ebpf_program_batch_begin_invoke_function_t>(1)?,
            invoke: self.entry::<ebpf_program_batch_invoke_function_t>(2)?,
            end: self.entry::<ebpf_program_batch_end_invoke_function_t>(3)?,
        })
    }
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

#[cfg(test)]
mod tests {
    //! Rules that NMR's callers never exercise (it always passes an instance, and `validate`
    //! checks sizes before it reads the parameter), tested on the safe reader directly so that
    //! weakening them cannot go unnoticed (they were missed mutants).

    use super::*;

    fn client_data(data: *const c_void, data_size: usize) -> ebpf_extension_data_t {
        ebpf_extension_data_t {
            header: ebpf_extension_header_t {
                version: EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION,
                size: EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE,
                total_size: size_of::<ebpf_extension_data_t>(),
            },
            data,
            data_size,
            prog_attach_flags: 0,
        }
    }

    fn instance(data: &ebpf_extension_data_t) -> NPI_REGISTRATION_INSTANCE {
        NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: 40,
            NpiId: ptr::null(),
            ModuleId: ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: ptr::from_ref(data).cast(),
        }
    }

    #[test]
    fn no_instance_is_its_own_rejection() {
        // SAFETY: NULL instance and dispatch table are allowed.
        let presented = unsafe { Presented::new(ptr::null(), ptr::null()) };
        assert!(matches!(
            validate_presented::<u32>(&presented, AttachPolicy::SingleAttach, None),
            Err(Rejection::NoRegistrationInstance)
        ));
    }

    #[test]
    fn the_parameter_is_read_only_when_present_and_exactly_its_size() {
        let value = 7u32;
        let cases = [
            (ptr::null(), size_of::<u32>(), None),
            (ptr::from_ref(&value).cast(), size_of::<u16>(), None),
            (ptr::from_ref(&value).cast(), size_of::<u32>(), Some(7)),
        ];
        for (data, data_size, expected) in cases {
            let data = client_data(data, data_size);
            let instance = instance(&data);
            // SAFETY: the instance, its client data and the `u32` it may point to outlive
            // `presented`; a non-NULL `data` is readable for `data_size` bytes.
            let presented = unsafe { Presented::new(&raw const instance, ptr::null()) };
            assert_eq!(
                presented.parameter::<u32>(),
                expected,
                "data_size {data_size}"
            );
        }
    }
}
