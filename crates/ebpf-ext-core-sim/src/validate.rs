//! The core's checks of what providers publish, and the copy of program data it keeps.
//!
//! Provider memory is read field by field through unaligned raw reads, only as far as each
//! object's `header.size` says it extends, and never as a Rust reference: a provider's
//! `bool` may hold any byte, and a structure of an older version may end before our
//! definition does. Every pointer is checked for NULL before it is followed; a non-NULL
//! dangling pointer cannot be detected.
//!
//! Rules (from `libs/shared/shared_common.c` and `ebpf_program.c`, see the ABI reference §4):
//! - every object: `header.version` is the current version, `header.size` is in the
//!   object's accepted list, and `header.total_size` is at least `header.size` (the newest
//!   core's `_ebpf_validate_extension_object_header`; earlier ones did not check it);
//! - program data: size 65 (through `required_irql`) or 72 (through `capabilities`);
//!   program info valid; each non-NULL helper address table valid; `required_irql` ≤
//!   HIGH_LEVEL; each non-NULL address table's count equals the matching prototype count;
//!   `capabilities` bit 0 (reserved) clear;
//! - program info: size 64; type descriptor valid; both prototype arrays valid;
//! - type descriptor: size 61; `name` non-NULL; `context_descriptor` non-NULL with
//!   `size ≥ 16`;
//! - prototype array: if `count > 0`, the array is non-NULL and each element (stride:
//!   element 0's `header.total_size`, as the core strides) has size 64, 65 or 66 and a
//!   non-NULL `name`;
//! - helper address table: size 40; `helper_function_count > 0`; the array non-NULL;
//! - attach provider data: size 48; `supported_program_type` ≠ GUID_NULL.
//!
//! Two choices where the reference leaves room:
//! - `context_descriptor->size ≥ 16` is compared as a signed `int` (a negative size is
//!   refused; a C comparison against `sizeof` would convert it to unsigned and accept it);
//! - the copy strides helper prototypes by element 0's `header.size` rounded up to 8, as the
//!   core duplicates them, and refuses an array of more than one element whose element 0's
//!   `total_size` (the validation stride) differs from that stride
//!   ([`ProgramDataError::InconsistentHelperStride`]): the core would copy memory it never
//!   validated.

use core::ffi::{CStr, c_char, c_void};
use core::mem::{offset_of, size_of};

use ebpf_ext_sys::ebpf_base::{ebpf_argument_type_t, ebpf_return_type_t};
use ebpf_ext_sys::ebpf_extension::ebpf_attach_provider_data_t;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_context_descriptor_t, ebpf_helper_function_addresses_t, ebpf_helper_function_prototype_t,
    ebpf_program_context_create_t, ebpf_program_context_destroy_t, ebpf_program_data_t,
    ebpf_program_info_t, ebpf_program_type_descriptor_t,
};
use ebpf_ext_sys::ebpf_structs::{bpf_attach_type_t, bpf_link_type};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION, EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE,
    EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
    EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE,
    EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION, EBPF_PROGRAM_DATA_CURRENT_VERSION,
    EBPF_PROGRAM_INFORMATION_CURRENT_VERSION, EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE,
    EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION,
    EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE, ebpf_extension_header_t,
};
use ebpf_ext_sys::netioddk::{NPI_MODULEID, NPI_MODULEID_TYPE, NPI_REGISTRATION_INSTANCE};
use ebpf_ext_sys::ntdef::{GUID, KIRQL};
use ebpf_ext_sys::wdm::HIGH_LEVEL;

use crate::error::{AttachProviderDataError, HelperTable, Object, ProgramDataError, Refusal};
use crate::program_info::{Helper, ProgramInfo};

/// `EBPF_SIZE_INCLUDING_FIELD(T, field)`.
macro_rules! size_including {
    ($ty:ty, $field:ident, $field_ty:ty) => {
        offset_of!($ty, $field) + size_of::<$field_ty>()
    };
}

/// The address of a field of the object at `base`, computed without dereferencing `base`.
/// `_project` is never called: it only names the field's type.
fn field_ptr<T, F>(base: *const T, offset: usize, _project: fn(&T) -> &F) -> *const F {
    base.wrapping_byte_add(offset).cast()
}

/// Reads a field of a provider object: `read!(ptr, Type, field)`. Expands to an unsafe read;
/// use it inside an `unsafe` block whose comment says why the field is readable.
macro_rules! read {
    ($base:expr, $ty:ty, $($field:ident).+) => {
        field_ptr::<$ty, _>($base, offset_of!($ty, $($field).+), |s| &s.$($field).+)
            .read_unaligned()
    };
}

/// Sizes of program data the core accepts: through `required_irql`, through `capabilities`.
pub(crate) const PROGRAM_DATA_SIZES: &[usize] = &[
    size_including!(ebpf_program_data_t, required_irql, u8),
    size_including!(ebpf_program_data_t, capabilities, u32),
];
/// Sizes of program information the core accepts.
pub(crate) const PROGRAM_INFO_SIZES: &[usize] = &[EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE];
/// Sizes of a program type descriptor the core accepts.
pub(crate) const PROGRAM_TYPE_DESCRIPTOR_SIZES: &[usize] =
    &[EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE];
/// Sizes of a helper prototype the core accepts: through `arguments`, `flags`,
/// `implicit_context`.
pub(crate) const HELPER_PROTOTYPE_SIZES: &[usize] = &[
    size_including!(
        ebpf_helper_function_prototype_t,
        arguments,
        [ebpf_argument_type_t; 5]
    ),
    size_including!(ebpf_helper_function_prototype_t, flags, u8),
    size_including!(ebpf_helper_function_prototype_t, implicit_context, u8),
];
/// Sizes of a helper address table the core accepts.
pub(crate) const HELPER_ADDRESSES_SIZES: &[usize] =
    &[EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE];

const _: () = {
    assert!(PROGRAM_DATA_SIZES[0] == 65 && PROGRAM_DATA_SIZES[1] == 72);
    assert!(HELPER_PROTOTYPE_SIZES[0] == 64);
    assert!(HELPER_PROTOTYPE_SIZES[1] == 65);
    assert!(HELPER_PROTOTYPE_SIZES[2] == 66);
};

/// `sizeof(ebpf_context_descriptor_t)`, the smallest context descriptor `size` accepted.
const MIN_CONTEXT_SIZE: i32 = 16;
const _: () = assert!(size_of::<ebpf_context_descriptor_t>() == 16);

fn check_header(
    header: &ebpf_extension_header_t,
    object: Object,
    expected: u16,
    accepted: &'static [usize],
) -> Result<(), ProgramDataError> {
    if header.version != expected {
        return Err(ProgramDataError::UnsupportedVersion {
            object,
            version: header.version,
            expected,
        });
    }
    if !accepted.contains(&header.size) {
        return Err(ProgramDataError::UnsupportedSize {
            object,
            size: header.size,
            accepted,
        });
    }
    if header.total_size < header.size {
        return Err(ProgramDataError::TotalSizeBelowSize {
            object,
            size: header.size,
            total_size: header.total_size,
        });
    }
    Ok(())
}

/// The provider's module id, as the core checks it: `MIT_GUID`, then its GUID.
///
/// # Safety
/// `instance` is NULL or NMR's provider registration instance, whose `ModuleId` is NULL or
/// readable.
pub(crate) unsafe fn provider_module_guid(
    instance: *const NPI_REGISTRATION_INSTANCE,
) -> Result<GUID, Refusal> {
    if instance.is_null() {
        return Err(Refusal::NoRegistrationInstance);
    }
    // SAFETY: `instance` is non-NULL and NMR's (caller's precondition).
    let module_id = unsafe { read!(instance, NPI_REGISTRATION_INSTANCE, ModuleId) };
    if module_id.is_null() {
        return Err(Refusal::NullModuleId);
    }
    // SAFETY: `ModuleId` is non-NULL and readable (caller's precondition).
    let module_id_type: NPI_MODULEID_TYPE = unsafe { read!(module_id, NPI_MODULEID, Type) };
    if module_id_type != ebpf_ext_sys::netioddk::MIT_GUID {
        return Err(Refusal::ModuleIdNotGuid { module_id_type });
    }
    // SAFETY: as above; for `MIT_GUID` the union holds the GUID, and any bytes are a GUID.
    let guid: GUID = unsafe {
        field_ptr(module_id, offset_of!(NPI_MODULEID, u), |m| &m.u)
            .cast::<GUID>()
            .read_unaligned()
    };
    Ok(guid)
}

/// The provider's `NpiSpecificCharacteristics`.
///
/// # Safety
/// `instance` is non-NULL and NMR's provider registration instance.
pub(crate) unsafe fn npi_specific(instance: *const NPI_REGISTRATION_INSTANCE) -> *const c_void {
    // SAFETY: the caller's precondition.
    unsafe {
        read!(
            instance,
            NPI_REGISTRATION_INSTANCE,
            NpiSpecificCharacteristics
        )
    }
}

/// What a valid hook provider publishes.
#[derive(Debug, Clone, Copy)]
#[expect(clippy::struct_field_names, reason = "the C field names")]
pub(crate) struct AttachProviderData {
    pub(crate) supported_program_type: GUID,
    pub(crate) bpf_attach_type: bpf_attach_type_t,
    pub(crate) link_type: bpf_link_type,
}

/// The core's `ebpf_validate_attach_provider_data`.
///
/// # Safety
/// `data` is NULL or readable for its header and, if the header says size 48, for 48 bytes.
pub(crate) unsafe fn validate_attach_provider_data(
    data: *const ebpf_attach_provider_data_t,
) -> Result<AttachProviderData, AttachProviderDataError> {
    if data.is_null() {
        return Err(AttachProviderDataError::NullProviderData);
    }
    // SAFETY: non-NULL; every version starts with the header.
    let header: ebpf_extension_header_t =
        unsafe { read!(data, ebpf_attach_provider_data_t, header) };
    if header.version != EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION {
        return Err(AttachProviderDataError::UnsupportedVersion {
            version: header.version,
        });
    }
    if header.size != EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE {
        return Err(AttachProviderDataError::UnsupportedSize { size: header.size });
    }
    if header.total_size < header.size {
        return Err(AttachProviderDataError::TotalSizeBelowSize {
            size: header.size,
            total_size: header.total_size,
        });
    }
    // SAFETY: `header.size` is 48: the whole current structure is there.
    let supported_program_type: GUID =
        unsafe { read!(data, ebpf_attach_provider_data_t, supported_program_type) };
    if supported_program_type == GUID::NULL {
        return Err(AttachProviderDataError::NullSupportedProgramType);
    }
    // SAFETY: as above.
    let bpf_attach_type: bpf_attach_type_t =
        unsafe { read!(data, ebpf_attach_provider_data_t, bpf_attach_type) };
    // SAFETY: as above.
    let link_type: bpf_link_type = unsafe { read!(data, ebpf_attach_provider_data_t, link_type) };
    Ok(AttachProviderData {
        supported_program_type,
        bpf_attach_type,
        link_type,
    })
}

/// The core's `ebpf_validate_program_data` plus the extra checks of `ebpf_program.c`.
///
/// # Safety
/// `data` is NULL or the provider's program data: every non-NULL pointer reachable from it
/// points to readable memory of the size its header (or count and stride) declares, and
/// names are NUL-terminated.
pub(crate) unsafe fn validate_program_data(
    data: *const ebpf_program_data_t,
) -> Result<(), ProgramDataError> {
    if data.is_null() {
        return Err(ProgramDataError::NullProgramData);
    }
    // SAFETY: non-NULL provider data (precondition); every version starts with the header.
    let header: ebpf_extension_header_t = unsafe { read!(data, ebpf_program_data_t, header) };
    check_header(
        &header,
        Object::ProgramData,
        EBPF_PROGRAM_DATA_CURRENT_VERSION,
        PROGRAM_DATA_SIZES,
    )?;
    // SAFETY: every accepted size covers the fields up to `required_irql`.
    let info: *const ebpf_program_info_t =
        unsafe { read!(data, ebpf_program_data_t, program_info) };
    // SAFETY: the precondition covers the program information.
    let (specific_count, global_count) = unsafe { validate_program_info(info) }?;
    // SAFETY: as for `program_info`.
    let specific: *const ebpf_helper_function_addresses_t = unsafe {
        read!(
            data,
            ebpf_program_data_t,
            program_type_specific_helper_function_addresses
        )
    };
    // SAFETY: as for `program_info`.
    let global: *const ebpf_helper_function_addresses_t =
        unsafe { read!(data, ebpf_program_data_t, global_helper_function_addresses) };
    let tables = [
        (specific, HelperTable::ProgramTypeSpecific, specific_count),
        (global, HelperTable::Global, global_count),
    ];
    let mut address_counts = [None, None];
    for ((table, which, _), count) in tables.iter().zip(&mut address_counts) {
        if !table.is_null() {
            // SAFETY: non-NULL table of the provider (precondition).
            *count = Some(unsafe { validate_helper_addresses(*table, *which) }?);
        }
    }
    // SAFETY: every accepted size covers `required_irql`.
    let required_irql: KIRQL = unsafe { read!(data, ebpf_program_data_t, required_irql) };
    if required_irql > HIGH_LEVEL {
        return Err(ProgramDataError::IrqlTooHigh { required_irql });
    }
    for ((_, table, prototypes), addresses) in tables.iter().zip(address_counts) {
        if let Some(addresses) = addresses
            && addresses != *prototypes
        {
            return Err(ProgramDataError::HelperCountMismatch {
                table: *table,
                prototypes: *prototypes,
                addresses,
            });
        }
    }
    // SAFETY: read only when the header says the field is present.
    let capabilities = unsafe { capabilities(data, header.size) };
    if capabilities & 1 != 0 {
        return Err(ProgramDataError::ReservedCapability { capabilities });
    }
    Ok(())
}

/// `capabilities.value`, or 0 when the program data ends before it.
///
/// # Safety
/// `data` is readable for `size` bytes.
unsafe fn capabilities(data: *const ebpf_program_data_t, size: usize) -> u32 {
    if size >= size_including!(ebpf_program_data_t, capabilities, u32) {
        // SAFETY: the field lies within `size` (checked above).
        unsafe { read!(data, ebpf_program_data_t, capabilities.value) }
    } else {
        0
    }
}

/// `ebpf_validate_program_info`; returns the two prototype counts.
///
/// # Safety
/// As [`validate_program_data`], for `info`.
unsafe fn validate_program_info(
    info: *const ebpf_program_info_t,
) -> Result<(u32, u32), ProgramDataError> {
    if info.is_null() {
        return Err(ProgramDataError::NullProgramInfo);
    }
    // SAFETY: non-NULL provider object (precondition).
    let header: ebpf_extension_header_t = unsafe { read!(info, ebpf_program_info_t, header) };
    check_header(
        &header,
        Object::ProgramInfo,
        EBPF_PROGRAM_INFORMATION_CURRENT_VERSION,
        PROGRAM_INFO_SIZES,
    )?;
    // SAFETY: size 64: the whole structure is there.
    let descriptor: *const ebpf_program_type_descriptor_t =
        unsafe { read!(info, ebpf_program_info_t, program_type_descriptor) };
    // SAFETY: precondition.
    unsafe { validate_type_descriptor(descriptor) }?;
    // SAFETY: size 64.
    let specific_count: u32 = unsafe {
        read!(
            info,
            ebpf_program_info_t,
            count_of_program_type_specific_helpers
        )
    };
    // SAFETY: size 64.
    let specific: *const ebpf_helper_function_prototype_t = unsafe {
        read!(
            info,
            ebpf_program_info_t,
            program_type_specific_helper_prototype
        )
    };
    // SAFETY: precondition.
    unsafe { validate_prototypes(specific, specific_count, HelperTable::ProgramTypeSpecific) }?;
    // SAFETY: size 64.
    let global_count: u32 = unsafe { read!(info, ebpf_program_info_t, count_of_global_helpers) };
    // SAFETY: size 64.
    let global: *const ebpf_helper_function_prototype_t =
        unsafe { read!(info, ebpf_program_info_t, global_helper_prototype) };
    // SAFETY: precondition.
    unsafe { validate_prototypes(global, global_count, HelperTable::Global) }?;
    Ok((specific_count, global_count))
}

/// `_ebpf_validate_program_type_descriptor` and `_ebpf_validate_context_descriptor`.
///
/// # Safety
/// As [`validate_program_data`], for `descriptor`.
unsafe fn validate_type_descriptor(
    descriptor: *const ebpf_program_type_descriptor_t,
) -> Result<(), ProgramDataError> {
    if descriptor.is_null() {
        return Err(ProgramDataError::NullProgramTypeDescriptor);
    }
    // SAFETY: non-NULL provider object (precondition).
    let header: ebpf_extension_header_t =
        unsafe { read!(descriptor, ebpf_program_type_descriptor_t, header) };
    check_header(
        &header,
        Object::ProgramTypeDescriptor,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION,
        PROGRAM_TYPE_DESCRIPTOR_SIZES,
    )?;
    // SAFETY: size 61 covers `name` and `context_descriptor`.
    let name: *const c_char = unsafe { read!(descriptor, ebpf_program_type_descriptor_t, name) };
    if name.is_null() {
        return Err(ProgramDataError::NullProgramTypeName);
    }
    // SAFETY: as above.
    let context: *const ebpf_context_descriptor_t = unsafe {
        read!(
            descriptor,
            ebpf_program_type_descriptor_t,
            context_descriptor
        )
    };
    if context.is_null() {
        return Err(ProgramDataError::NullContextDescriptor);
    }
    // SAFETY: non-NULL context descriptor of the provider (precondition).
    let size: i32 = unsafe { read!(context, ebpf_context_descriptor_t, size) };
    if size < MIN_CONTEXT_SIZE {
        return Err(ProgramDataError::ContextDescriptorTooSmall { size });
    }
    Ok(())
}

/// `ebpf_validate_helper_function_prototype_array`: stride = element 0's
/// `header.total_size`, exactly as the core strides (element 0's own check refuses a
/// `total_size` below its size, so the stride is at least 64).
///
/// # Safety
/// As [`validate_program_data`], for the array.
unsafe fn validate_prototypes(
    array: *const ebpf_helper_function_prototype_t,
    count: u32,
    table: HelperTable,
) -> Result<(), ProgramDataError> {
    if count == 0 {
        return Ok(());
    }
    if array.is_null() {
        return Err(ProgramDataError::NullHelperPrototypes { table, count });
    }
    // SAFETY: non-NULL array of `count > 0` elements (precondition).
    let stride: usize =
        unsafe { read!(array, ebpf_helper_function_prototype_t, header.total_size) };
    for index in 0..count {
        let element = array.wrapping_byte_add(stride.wrapping_mul(index as usize));
        // SAFETY: element `index` at the provider's stride (precondition).
        let header: ebpf_extension_header_t =
            unsafe { read!(element, ebpf_helper_function_prototype_t, header) };
        check_header(
            &header,
            Object::HelperPrototype { table, index },
            EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION,
            HELPER_PROTOTYPE_SIZES,
        )?;
        // SAFETY: every accepted size covers `name`.
        let name: *const c_char = unsafe { read!(element, ebpf_helper_function_prototype_t, name) };
        if name.is_null() {
            return Err(ProgramDataError::NullHelperName { table, index });
        }
    }
    Ok(())
}

/// `_ebpf_validate_helper_function_addresses`; returns `helper_function_count`.
///
/// # Safety
/// `table` is non-NULL and readable as the header declares.
unsafe fn validate_helper_addresses(
    table: *const ebpf_helper_function_addresses_t,
    which: HelperTable,
) -> Result<u32, ProgramDataError> {
    // SAFETY: non-NULL provider object (precondition).
    let header: ebpf_extension_header_t =
        unsafe { read!(table, ebpf_helper_function_addresses_t, header) };
    check_header(
        &header,
        Object::HelperAddresses { table: which },
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
        HELPER_ADDRESSES_SIZES,
    )?;
    // SAFETY: size 40: the whole structure is there.
    let count: u32 = unsafe {
        read!(
            table,
            ebpf_helper_function_addresses_t,
            helper_function_count
        )
    };
    if count == 0 {
        return Err(ProgramDataError::EmptyHelperAddresses { table: which });
    }
    // SAFETY: as above.
    let addresses: *const u64 = unsafe {
        read!(
            table,
            ebpf_helper_function_addresses_t,
            helper_function_address
        )
    };
    if addresses.is_null() {
        return Err(ProgramDataError::NullHelperAddressArray { table: which });
    }
    Ok(count)
}

/// Copies validated program data into an owned [`ProgramInfo`], as the core duplicates it:
/// helper prototypes at a stride of element 0's `header.size` rounded up to 8 (refusing, for
/// more than one element, an element 0 whose `total_size` says otherwise), reading `flags`
/// and `implicit_context` whenever the stride covers them, as the core copies the whole
/// stride of every element.
///
/// # Safety
/// `data` passed [`validate_program_data`], under the same precondition.
pub(crate) unsafe fn copy_program_data(
    data: *const ebpf_program_data_t,
) -> Result<ProgramInfo, ProgramDataError> {
    // SAFETY: validated program data (precondition): the header and the fields through
    // `required_irql` are present, and the pointers below are non-NULL where validation
    // required it.
    let header: ebpf_extension_header_t = unsafe { read!(data, ebpf_program_data_t, header) };
    // SAFETY: as above.
    let info: *const ebpf_program_info_t =
        unsafe { read!(data, ebpf_program_data_t, program_info) };
    // SAFETY: validated, size 64.
    let descriptor: *const ebpf_program_type_descriptor_t =
        unsafe { read!(info, ebpf_program_info_t, program_type_descriptor) };
    // SAFETY: validated, size 61.
    let name: *const c_char = unsafe { read!(descriptor, ebpf_program_type_descriptor_t, name) };
    // SAFETY: validated non-NULL; NUL-terminated (precondition).
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: validated, size 61.
    let context: *const ebpf_context_descriptor_t = unsafe {
        read!(
            descriptor,
            ebpf_program_type_descriptor_t,
            context_descriptor
        )
    };
    // SAFETY: validated non-NULL.
    let context_descriptor: ebpf_context_descriptor_t = unsafe { context.read_unaligned() };
    // SAFETY: validated, size 61.
    let program_type: GUID =
        unsafe { read!(descriptor, ebpf_program_type_descriptor_t, program_type) };
    // SAFETY: validated, size 61.
    let bpf_prog_type: u32 =
        unsafe { read!(descriptor, ebpf_program_type_descriptor_t, bpf_prog_type) };
    // SAFETY: validated, size 61 (through `is_privileged`).
    let is_privileged: c_char =
        unsafe { read!(descriptor, ebpf_program_type_descriptor_t, is_privileged) };

    // SAFETY: validated, size 64.
    let specific_count: u32 = unsafe {
        read!(
            info,
            ebpf_program_info_t,
            count_of_program_type_specific_helpers
        )
    };
    // SAFETY: validated, size 64.
    let specific: *const ebpf_helper_function_prototype_t = unsafe {
        read!(
            info,
            ebpf_program_info_t,
            program_type_specific_helper_prototype
        )
    };
    // SAFETY: validated, size 64.
    let global_count: u32 = unsafe { read!(info, ebpf_program_info_t, count_of_global_helpers) };
    // SAFETY: validated, size 64.
    let global: *const ebpf_helper_function_prototype_t =
        unsafe { read!(info, ebpf_program_info_t, global_helper_prototype) };
    // SAFETY: validated program data.
    let specific_addresses: *const ebpf_helper_function_addresses_t = unsafe {
        read!(
            data,
            ebpf_program_data_t,
            program_type_specific_helper_function_addresses
        )
    };
    // SAFETY: validated program data.
    let global_addresses: *const ebpf_helper_function_addresses_t =
        unsafe { read!(data, ebpf_program_data_t, global_helper_function_addresses) };
    // SAFETY: validated arrays and tables (precondition).
    let helpers = unsafe {
        copy_helpers(
            specific,
            specific_count,
            specific_addresses,
            HelperTable::ProgramTypeSpecific,
        )
    }?;
    // SAFETY: as above.
    let global_helpers =
        unsafe { copy_helpers(global, global_count, global_addresses, HelperTable::Global) }?;
    // SAFETY: validated program data.
    let context_create = unsafe { read!(data, ebpf_program_data_t, context_create) };
    // SAFETY: validated program data.
    let context_destroy = unsafe { read!(data, ebpf_program_data_t, context_destroy) };
    // SAFETY: validated program data.
    let required_irql: KIRQL = unsafe { read!(data, ebpf_program_data_t, required_irql) };
    // SAFETY: `header.size` bytes are readable.
    let capabilities = unsafe { capabilities(data, header.size) };
    Ok(ProgramInfo {
        name,
        program_type,
        bpf_prog_type,
        is_privileged: is_privileged != 0,
        context_descriptor,
        required_irql,
        capabilities,
        helpers,
        global_helpers,
        has_context_create: context_create.is_some(),
        has_context_destroy: context_destroy.is_some(),
        binding: crate::program_info::InfoBinding::default(),
    })
}

/// Copies one prototype array (and the matching addresses, when the table is present).
///
/// # Safety
/// The array and table passed validation (count > 0 ⇒ array non-NULL; table non-NULL ⇒ its
/// count equals `count` and its array is non-NULL).
unsafe fn copy_helpers(
    array: *const ebpf_helper_function_prototype_t,
    count: u32,
    addresses: *const ebpf_helper_function_addresses_t,
    table: HelperTable,
) -> Result<Vec<Helper>, ProgramDataError> {
    if count == 0 || array.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: validated non-NULL array (precondition).
    let first: ebpf_extension_header_t =
        unsafe { read!(array, ebpf_helper_function_prototype_t, header) };
    let stride = first.size.next_multiple_of(8);
    // With one element the two strides never meet a second one.
    if count > 1 && first.total_size != stride {
        return Err(ProgramDataError::InconsistentHelperStride {
            table,
            size: first.size,
            total_size: first.total_size,
        });
    }
    let address_array: *const u64 = if addresses.is_null() {
        core::ptr::null()
    } else {
        // SAFETY: validated non-NULL table.
        unsafe {
            read!(
                addresses,
                ebpf_helper_function_addresses_t,
                helper_function_address
            )
        }
    };
    let mut helpers = Vec::with_capacity(count as usize);
    for index in 0..count {
        let element = array.wrapping_byte_add(stride.wrapping_mul(index as usize));
        // SAFETY: element `index` of the provider's array at the duplication stride; the
        // fields through `arguments` are in every accepted version.
        let name: *const c_char = unsafe { read!(element, ebpf_helper_function_prototype_t, name) };
        if name.is_null() {
            return Err(ProgramDataError::CopyNullHelperName { table, index });
        }
        // SAFETY: as above.
        let id: u32 = unsafe { read!(element, ebpf_helper_function_prototype_t, helper_id) };
        // SAFETY: as above.
        let return_type: ebpf_return_type_t =
            unsafe { read!(element, ebpf_helper_function_prototype_t, return_type) };
        // SAFETY: as above.
        let arguments: [ebpf_argument_type_t; 5] =
            unsafe { read!(element, ebpf_helper_function_prototype_t, arguments) };
        // As the core's copy of the whole stride: a field within the stride is read whatever
        // the element's own size says.
        let has = |end: usize| stride >= end;
        let reallocate_packet = if has(HELPER_PROTOTYPE_SIZES[1]) {
            // SAFETY: `flags` lies within this element's slot (the stride).
            let flags: u8 = unsafe { read!(element, ebpf_helper_function_prototype_t, flags.bits) };
            flags & 1 != 0
        } else {
            false
        };
        let implicit_context = if has(HELPER_PROTOTYPE_SIZES[2]) {
            // SAFETY: `implicit_context` lies within this element's slot (the stride);
            // read as a byte, since the provider's `bool` may hold any value.
            let byte: u8 = unsafe {
                field_ptr::<ebpf_helper_function_prototype_t, _>(
                    element,
                    offset_of!(ebpf_helper_function_prototype_t, implicit_context),
                    |p| &p.implicit_context,
                )
                .cast::<u8>()
                .read_unaligned()
            };
            byte != 0
        } else {
            false
        };
        let address = if address_array.is_null() {
            None
        } else {
            // SAFETY: the table holds `count` addresses (validated equal counts).
            Some(unsafe { address_array.wrapping_add(index as usize).read_unaligned() })
        };
        // SAFETY: non-NULL name, NUL-terminated (precondition).
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        helpers.push(Helper {
            id,
            name,
            return_type,
            arguments,
            reallocate_packet,
            implicit_context,
            address,
        });
    }
    Ok(helpers)
}

/// The context callbacks of validated program data.
///
/// # Safety
/// `data` passed [`validate_program_data`].
pub(crate) unsafe fn context_functions(
    data: *const ebpf_program_data_t,
) -> (
    Option<ebpf_program_context_create_t>,
    Option<ebpf_program_context_destroy_t>,
) {
    // SAFETY: validated program data: every accepted size covers both fields.
    let create = unsafe { read!(data, ebpf_program_data_t, context_create) };
    // SAFETY: as above.
    let destroy = unsafe { read!(data, ebpf_program_data_t, context_destroy) };
    (create, destroy)
}
