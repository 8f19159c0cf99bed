//! Layout of every `#[repr(C)]` type in this crate.
//!
//! [`LAYOUTS`] is built by a macro that also asserts, at compile time, each type's size,
//! alignment and field offsets against the numbers in the reference (WDK / mingw-w64 headers
//! for kernel types, the eBPF for Windows headers for the extension ABI). A wrong number is a
//! build error naming the type and field.
//!
//! Types that the mingw-w64 DDK headers also define carry their C name; a test compiles
//! `_Static_assert`s of the same numbers against those headers. `c_size` is false where mingw
//! itself differs from Windows: `DEVICE_OBJECT` is 0x150 bytes (16-byte aligned) on Windows
//! and 0x148 in mingw, which omits `DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT)`; its field
//! offsets agree and are checked.

#![allow(
    clippy::wildcard_imports,
    reason = "the table names types from every header module"
)]

use crate::ebpf_extension::*;
use crate::ebpf_program_types::*;
use crate::ebpf_windows::*;
use crate::netioddk::*;
use crate::ntddk::*;
use crate::ntdef::*;
use crate::ntifs::*;
use crate::wdm::*;

/// One field: its path as C spells it (`Tail.Overlay.CurrentStackLocation`) and its offset.
#[derive(Debug, Clone, Copy)]
pub struct FieldLayout {
    /// Field path in C.
    pub c: &'static str,
    /// Offset in bytes.
    pub offset: usize,
}

/// One type's layout as Rust lays it out (which the macro has already checked against the
/// reference numbers).
#[derive(Debug, Clone, Copy)]
pub struct TypeLayout {
    /// Rust type name.
    pub rust: &'static str,
    /// C type name where the mingw-w64 headers define it.
    pub c: Option<&'static str>,
    /// `size_of`.
    pub size: usize,
    /// `align_of`.
    pub align: usize,
    /// Whether the C header's `sizeof`/alignment must match too (false where mingw differs).
    pub c_size: bool,
    /// Checked fields.
    pub fields: &'static [FieldLayout],
}

/// Every checked type.
pub static LAYOUTS: &[TypeLayout] = &[
    // ---- ntdef.h -------------------------------------------------------------------------
    layout!(GUID, c = Some("GUID"), size = 16, align = 4, c_size = true, {
        Data1 => "Data1" @ 0, Data2 => "Data2" @ 4, Data3 => "Data3" @ 6, Data4 => "Data4" @ 8,
    }),
    layout!(LIST_ENTRY, c = Some("LIST_ENTRY"), size = 16, align = 8, c_size = true, {
        Flink => "Flink" @ 0, Blink => "Blink" @ 8,
    }),
    layout!(UNICODE_STRING, c = Some("UNICODE_STRING"), size = 16, align = 8, c_size = true, {
        Length => "Length" @ 0, MaximumLength => "MaximumLength" @ 2, Buffer => "Buffer" @ 8,
    }),
    layout!(LUID, c = Some("LUID"), size = 8, align = 4, c_size = true, {
        LowPart => "LowPart" @ 0, HighPart => "HighPart" @ 4,
    }),
    layout!(CLIENT_ID, c = Some("CLIENT_ID"), size = 16, align = 8, c_size = true, {
        UniqueProcess => "UniqueProcess" @ 0, UniqueThread => "UniqueThread" @ 8,
    }),
    layout!(PROCESSOR_NUMBER, c = Some("PROCESSOR_NUMBER"), size = 4, align = 2, c_size = true, {
        Group => "Group" @ 0, Number => "Number" @ 2, Reserved => "Reserved" @ 3,
    }),
    // ---- wdm.h ---------------------------------------------------------------------------
    layout!(EX_RUNDOWN_REF, c = Some("EX_RUNDOWN_REF"), size = 8, align = 8, c_size = true, {
        Count => "Count" @ 0,
    }),
    layout!(IO_STATUS_BLOCK, c = Some("IO_STATUS_BLOCK"), size = 16, align = 8, c_size = true, {
        u.Status => "Status" @ 0, u.Pointer => "Pointer" @ 0, Information => "Information" @ 8,
    }),
    layout!(DRIVER_EXTENSION, c = Some("DRIVER_EXTENSION"), size = 40, align = 8, c_size = true, {
        DriverObject => "DriverObject" @ 0, AddDevice => "AddDevice" @ 8, Count => "Count" @ 0x10,
        ServiceKeyName => "ServiceKeyName" @ 0x18,
    }),
    layout!(DRIVER_OBJECT, c = Some("DRIVER_OBJECT"), size = 0x150, align = 8, c_size = true, {
        Type => "Type" @ 0x00, Size => "Size" @ 0x02, DeviceObject => "DeviceObject" @ 0x08,
        Flags => "Flags" @ 0x10, DriverStart => "DriverStart" @ 0x18,
        DriverSize => "DriverSize" @ 0x20, DriverSection => "DriverSection" @ 0x28,
        DriverExtension => "DriverExtension" @ 0x30, DriverName => "DriverName" @ 0x38,
        HardwareDatabase => "HardwareDatabase" @ 0x48, FastIoDispatch => "FastIoDispatch" @ 0x50,
        DriverInit => "DriverInit" @ 0x58, DriverStartIo => "DriverStartIo" @ 0x60,
        DriverUnload => "DriverUnload" @ 0x68, MajorFunction => "MajorFunction" @ 0x70,
    }),
    layout!(DEVICE_OBJECT, c = Some("DEVICE_OBJECT"), size = 0x150, align = 16, c_size = false, {
        Type => "Type" @ 0x00, Size => "Size" @ 0x02, ReferenceCount => "ReferenceCount" @ 0x04,
        DriverObject => "DriverObject" @ 0x08, NextDevice => "NextDevice" @ 0x10,
        AttachedDevice => "AttachedDevice" @ 0x18, CurrentIrp => "CurrentIrp" @ 0x20,
        Timer => "Timer" @ 0x28, Flags => "Flags" @ 0x30,
        Characteristics => "Characteristics" @ 0x34, Vpb => "Vpb" @ 0x38,
        DeviceExtension => "DeviceExtension" @ 0x40, DeviceType => "DeviceType" @ 0x48,
        StackSize => "StackSize" @ 0x4C, Queue => "Queue" @ 0x50,
        AlignmentRequirement => "AlignmentRequirement" @ 0x98,
        DeviceQueue => "DeviceQueue" @ 0xA0, Dpc => "Dpc" @ 0xC8,
        ActiveThreadCount => "ActiveThreadCount" @ 0x108,
        SecurityDescriptor => "SecurityDescriptor" @ 0x110, DeviceLock => "DeviceLock" @ 0x118,
        SectorSize => "SectorSize" @ 0x130, Spare1 => "Spare1" @ 0x132,
        DeviceObjectExtension => "DeviceObjectExtension" @ 0x138, Reserved => "Reserved" @ 0x140,
    }),
    layout!(IRP, c = Some("IRP"), size = 0xD0, align = 8, c_size = true, {
        Type => "Type" @ 0x00, Size => "Size" @ 0x02, MdlAddress => "MdlAddress" @ 0x08,
        Flags => "Flags" @ 0x10, AssociatedIrp.MasterIrp => "AssociatedIrp.MasterIrp" @ 0x18,
        AssociatedIrp.IrpCount => "AssociatedIrp.IrpCount" @ 0x18,
        AssociatedIrp.SystemBuffer => "AssociatedIrp.SystemBuffer" @ 0x18,
        ThreadListEntry => "ThreadListEntry" @ 0x20, IoStatus => "IoStatus" @ 0x30,
        IoStatus.u.Status => "IoStatus.Status" @ 0x30,
        IoStatus.Information => "IoStatus.Information" @ 0x38,
        RequestorMode => "RequestorMode" @ 0x40, PendingReturned => "PendingReturned" @ 0x41,
        StackCount => "StackCount" @ 0x42, CurrentLocation => "CurrentLocation" @ 0x43,
        Cancel => "Cancel" @ 0x44, CancelIrql => "CancelIrql" @ 0x45,
        ApcEnvironment => "ApcEnvironment" @ 0x46, AllocationFlags => "AllocationFlags" @ 0x47,
        UserIosb => "UserIosb" @ 0x48, UserEvent => "UserEvent" @ 0x50, Overlay => "Overlay" @ 0x58,
        CancelRoutine => "CancelRoutine" @ 0x68, UserBuffer => "UserBuffer" @ 0x70,
        Tail.Overlay.DriverContext => "Tail.Overlay.DriverContext" @ 0x78,
        Tail.Overlay.Thread => "Tail.Overlay.Thread" @ 0x98,
        Tail.Overlay.AuxiliaryBuffer => "Tail.Overlay.AuxiliaryBuffer" @ 0xA0,
        Tail.Overlay.ListEntry => "Tail.Overlay.ListEntry" @ 0xA8,
        Tail.Overlay.CurrentStackLocation => "Tail.Overlay.CurrentStackLocation" @ 0xB8,
        Tail.Overlay.OriginalFileObject => "Tail.Overlay.OriginalFileObject" @ 0xC0,
        Tail.Apc => "Tail.Apc" @ 0x78,
    }),
    layout!(IO_STACK_LOCATION, c = Some("IO_STACK_LOCATION"), size = 0x48, align = 8, c_size = true, {
        MajorFunction => "MajorFunction" @ 0x00, MinorFunction => "MinorFunction" @ 0x01,
        Flags => "Flags" @ 0x02, Control => "Control" @ 0x03, Parameters => "Parameters" @ 0x08,
        Parameters.DeviceIoControl.OutputBufferLength => "Parameters.DeviceIoControl.OutputBufferLength" @ 0x08,
        Parameters.DeviceIoControl.InputBufferLength => "Parameters.DeviceIoControl.InputBufferLength" @ 0x10,
        Parameters.DeviceIoControl.IoControlCode => "Parameters.DeviceIoControl.IoControlCode" @ 0x18,
        Parameters.DeviceIoControl.Type3InputBuffer => "Parameters.DeviceIoControl.Type3InputBuffer" @ 0x20,
        DeviceObject => "DeviceObject" @ 0x28, FileObject => "FileObject" @ 0x30,
        CompletionRoutine => "CompletionRoutine" @ 0x38, Context => "Context" @ 0x40,
    }),
    layout!(EVENT_DESCRIPTOR, c = Some("EVENT_DESCRIPTOR"), size = 16, align = 8, c_size = true, {
        Id => "Id" @ 0, Version => "Version" @ 2, Channel => "Channel" @ 3, Level => "Level" @ 4,
        Opcode => "Opcode" @ 5, Task => "Task" @ 6, Keyword => "Keyword" @ 8,
    }),
    layout!(EVENT_DATA_DESCRIPTOR, c = Some("EVENT_DATA_DESCRIPTOR"), size = 16, align = 8, c_size = true, {
        Ptr => "Ptr" @ 0, Size => "Size" @ 8, Reserved => "Reserved" @ 12,
    }),
    layout!(EVENT_FILTER_DESCRIPTOR, c = Some("EVENT_FILTER_DESCRIPTOR"), size = 16, align = 8, c_size = true, {
        Ptr => "Ptr" @ 0, Size => "Size" @ 8, Type => "Type" @ 12,
    }),
    // ---- ntddk.h / ntifs.h ------------------------------------------------------------------
    layout!(PS_CREATE_NOTIFY_INFO, c = Some("PS_CREATE_NOTIFY_INFO"), size = 0x48, align = 8, c_size = true, {
        Size => "Size" @ 0x00, Flags => "Flags" @ 0x08, ParentProcessId => "ParentProcessId" @ 0x10,
        CreatingThreadId => "CreatingThreadId" @ 0x18, FileObject => "FileObject" @ 0x28,
        ImageFileName => "ImageFileName" @ 0x30, CommandLine => "CommandLine" @ 0x38,
        CreationStatus => "CreationStatus" @ 0x40,
    }),
    layout!(SECURITY_DESCRIPTOR, c = Some("SECURITY_DESCRIPTOR"), size = 40, align = 8, c_size = true, {
        Revision => "Revision" @ 0, Sbz1 => "Sbz1" @ 1, Control => "Control" @ 2, Owner => "Owner" @ 8,
        Group => "Group" @ 16, Sacl => "Sacl" @ 24, Dacl => "Dacl" @ 32,
    }),
    layout!(ACL, c = Some("ACL"), size = 8, align = 2, c_size = true, {
        AclRevision => "AclRevision" @ 0, Sbz1 => "Sbz1" @ 1, AclSize => "AclSize" @ 2,
        AceCount => "AceCount" @ 4, Sbz2 => "Sbz2" @ 6,
    }),
    layout!(ACCESS_ALLOWED_ACE, c = Some("ACCESS_ALLOWED_ACE"), size = 12, align = 4, c_size = true, {
        Header => "Header" @ 0, Mask => "Mask" @ 4, SidStart => "SidStart" @ 8,
    }),
    layout!(SID_AND_ATTRIBUTES, c = Some("SID_AND_ATTRIBUTES"), size = 16, align = 8, c_size = true, {
        Sid => "Sid" @ 0, Attributes => "Attributes" @ 8,
    }),
    layout!(TOKEN_USER, c = Some("TOKEN_USER"), size = 16, align = 8, c_size = true, {
        User.Sid => "User.Sid" @ 0, User.Attributes => "User.Attributes" @ 8,
    }),
    // ---- netioddk.h (not in mingw-w64: checked against the reference only) ----------------
    layout!(NPI_MODULEID, c = None, size = 24, align = 4, c_size = false, {
        Length => "Length" @ 0, Type => "Type" @ 4, u.Guid => "Guid" @ 8, u.IfLuid => "IfLuid" @ 8,
    }),
    layout!(NPI_REGISTRATION_INSTANCE, c = None, size = 40, align = 8, c_size = false, {
        Version => "Version" @ 0, Size => "Size" @ 2, NpiId => "NpiId" @ 8,
        ModuleId => "ModuleId" @ 16, Number => "Number" @ 24,
        NpiSpecificCharacteristics => "NpiSpecificCharacteristics" @ 32,
    }),
    layout!(NPI_CLIENT_CHARACTERISTICS, c = None, size = 72, align = 8, c_size = false, {
        Version => "Version" @ 0, Length => "Length" @ 2,
        ClientAttachProvider => "ClientAttachProvider" @ 8,
        ClientDetachProvider => "ClientDetachProvider" @ 16,
        ClientCleanupBindingContext => "ClientCleanupBindingContext" @ 24,
        ClientRegistrationInstance => "ClientRegistrationInstance" @ 32,
    }),
    layout!(NPI_PROVIDER_CHARACTERISTICS, c = None, size = 72, align = 8, c_size = false, {
        Version => "Version" @ 0, Length => "Length" @ 2,
        ProviderAttachClient => "ProviderAttachClient" @ 8,
        ProviderDetachClient => "ProviderDetachClient" @ 16,
        ProviderCleanupBindingContext => "ProviderCleanupBindingContext" @ 24,
        ProviderRegistrationInstance => "ProviderRegistrationInstance" @ 32,
    }),
    // ---- eBPF extension ABI (checked against ebpf-extension-abi.md) -----------------------
    layout!(ebpf_extension_header_t, c = None, size = 24, align = 8, c_size = false, {
        version => "version" @ 0, size => "size" @ 8, total_size => "total_size" @ 16,
    }),
    layout!(ebpf_extension_data_t, c = None, size = 48, align = 8, c_size = false, {
        header => "header" @ 0, data => "data" @ 24, data_size => "data_size" @ 32,
        prog_attach_flags => "prog_attach_flags" @ 40,
    }),
    layout!(ebpf_attach_provider_data_t, c = None, size = 48, align = 8, c_size = false, {
        header => "header" @ 0, supported_program_type => "supported_program_type" @ 24,
        bpf_attach_type => "bpf_attach_type" @ 40, link_type => "link_type" @ 44,
    }),
    layout!(ebpf_extension_dispatch_table_t, c = None, size = 16, align = 8, c_size = false, {
        version => "version" @ 0, count => "count" @ 2, function => "function" @ 8,
    }),
    layout!(ebpf_extension_program_dispatch_table_t, c = None, size = 40, align = 8, c_size = false, {
        version => "version" @ 0, count => "count" @ 2,
        ebpf_program_invoke_function => "ebpf_program_invoke_function" @ 8,
        ebpf_program_batch_begin_invoke_function => "ebpf_program_batch_begin_invoke_function" @ 16,
        ebpf_program_batch_invoke_function => "ebpf_program_batch_invoke_function" @ 24,
        ebpf_program_batch_end_invoke_function => "ebpf_program_batch_end_invoke_function" @ 32,
    }),
    layout!(ebpf_execution_context_state_t, c = None, size = 64, align = 8, c_size = false, {
        epoch_state => "epoch_state" @ 0, id => "id" @ 32, current_irql => "current_irql" @ 40,
        tail_call_state.next_program => "tail_call_state.next_program" @ 48,
        tail_call_state.count => "tail_call_state.count" @ 56,
    }),
    layout!(ebpf_context_descriptor_t, c = None, size = 16, align = 4, c_size = false, {
        size => "size" @ 0, data => "data" @ 4, end => "end" @ 8, meta => "meta" @ 12,
    }),
    layout!(ebpf_program_type_descriptor_t, c = None, size = 64, align = 8, c_size = false, {
        header => "header" @ 0, name => "name" @ 24, context_descriptor => "context_descriptor" @ 32,
        program_type => "program_type" @ 40, bpf_prog_type => "bpf_prog_type" @ 56,
        is_privileged => "is_privileged" @ 60,
    }),
    layout!(ebpf_helper_function_prototype_t, c = None, size = 72, align = 8, c_size = false, {
        header => "header" @ 0, helper_id => "helper_id" @ 24, name => "name" @ 32,
        return_type => "return_type" @ 40, arguments => "arguments" @ 44, flags => "flags" @ 64,
        implicit_context => "implicit_context" @ 65,
    }),
    layout!(ebpf_program_info_t, c = None, size = 64, align = 8, c_size = false, {
        header => "header" @ 0, program_type_descriptor => "program_type_descriptor" @ 24,
        count_of_program_type_specific_helpers => "count_of_program_type_specific_helpers" @ 32,
        program_type_specific_helper_prototype => "program_type_specific_helper_prototype" @ 40,
        count_of_global_helpers => "count_of_global_helpers" @ 48,
        global_helper_prototype => "global_helper_prototype" @ 56,
    }),
    layout!(ebpf_helper_function_addresses_t, c = None, size = 40, align = 8, c_size = false, {
        header => "header" @ 0, helper_function_count => "helper_function_count" @ 24,
        helper_function_address => "helper_function_address" @ 32,
    }),
    layout!(ebpf_program_data_t, c = None, size = 72, align = 8, c_size = false, {
        header => "header" @ 0, program_info => "program_info" @ 24,
        program_type_specific_helper_function_addresses => "program_type_specific_helper_function_addresses" @ 32,
        global_helper_function_addresses => "global_helper_function_addresses" @ 40,
        context_create => "context_create" @ 48, context_destroy => "context_destroy" @ 56,
        required_irql => "required_irql" @ 64, capabilities => "capabilities" @ 68,
    }),
    layout!(ebpf_program_section_info_t, c = None, size = 56, align = 8, c_size = false, {
        header => "header" @ 0, section_name => "section_name" @ 24, program_type => "program_type" @ 32,
        attach_type => "attach_type" @ 40, bpf_program_type => "bpf_program_type" @ 48,
        bpf_attach_type => "bpf_attach_type" @ 52,
    }),
    layout!(ebpf_btf_resolved_function_prototype_t, c = None, size = 64, align = 8, c_size = false, {
        header => "header" @ 0, name => "name" @ 24, return_type => "return_type" @ 32,
        arguments => "arguments" @ 36, flags => "flags" @ 56,
    }),
    layout!(ebpf_btf_resolved_function_provider_data_t, c = None, size = 48, align = 8, c_size = false, {
        header => "header" @ 0, btf_resolved_function_count => "btf_resolved_function_count" @ 24,
        btf_resolved_function_prototypes => "btf_resolved_function_prototypes" @ 32,
        btf_resolved_function_addresses => "btf_resolved_function_addresses" @ 40,
    }),
    // ---- map-information NPI (upstream-extensions.md A.4) ------------------------------------
    layout!(ebpf_base_map_provider_properties_t, c = None, size = 32, align = 8, c_size = false, {
        header => "header" @ 0, updates_original_value => "updates_original_value" @ 24,
    }),
    layout!(ebpf_base_map_provider_dispatch_table_t, c = None, size = 80, align = 8, c_size = false, {
        header => "header" @ 0, preprocess_map_create => "preprocess_map_create" @ 24,
        postprocess_map_delete => "postprocess_map_delete" @ 32,
        preprocess_associate_program_type => "preprocess_associate_program_type" @ 40,
        postprocess_map_find_element => "postprocess_map_find_element" @ 48,
        preprocess_map_update_element => "preprocess_map_update_element" @ 56,
        preprocess_map_delete_element => "preprocess_map_delete_element" @ 64,
        postprocess_map_delete_element => "postprocess_map_delete_element" @ 72,
    }),
    layout!(ebpf_map_provider_data_t, c = None, size = 48, align = 8, c_size = false, {
        header => "header" @ 0, map_type => "map_type" @ 24, base_map_type => "base_map_type" @ 28,
        base_properties => "base_properties" @ 32, base_provider_table => "base_provider_table" @ 40,
    }),
    layout!(ebpf_base_map_client_dispatch_table_t, c = None, size = 80, align = 8, c_size = false, {
        header => "header" @ 0, find_element_function => "find_element_function" @ 24,
        epoch_enter => "epoch_enter" @ 32, epoch_exit => "epoch_exit" @ 40,
        epoch_allocate_with_tag => "epoch_allocate_with_tag" @ 48,
        epoch_allocate_cache_aligned_with_tag => "epoch_allocate_cache_aligned_with_tag" @ 56,
        epoch_free => "epoch_free" @ 64, epoch_free_cache_aligned => "epoch_free_cache_aligned" @ 72,
    }),
    layout!(ebpf_map_client_data_t, c = None, size = 40, align = 8, c_size = false, {
        header => "header" @ 0, map_context_offset => "map_context_offset" @ 24,
        base_client_table => "base_client_table" @ 32,
    }),
];

// Sizes of the opaque kernel primitives the SDK embeds.
const _: () = assert!(core::mem::size_of::<EX_SPIN_LOCK>() == 4);
const _: () = assert!(core::mem::size_of::<EX_PUSH_LOCK>() == 8);
const _: () = assert!(core::mem::size_of::<EBPF_CONTEXT_HEADER>() == EBPF_CONTEXT_HEADER_SIZE);
