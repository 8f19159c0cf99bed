//! Kernel declarations from `wdm.h`: IRQL, pool, rundown protection, executive spin locks,
//! push locks, work items, driver and device objects, IRPs, debug output, bug checks and ETW.
//!
//! Every routine is a real `ntoskrnl.exe` export, declared with its exact x64 signature in the
//! kernel calling convention (`extern "win64"`). The IRQL given for each routine is the highest
//! level it may be called at; usersim checks it.

use core::ffi::{c_char, c_void};
use core::marker::{PhantomData, PhantomPinned};

use crate::ntdef::{BOOLEAN, GUID, KIRQL, KPROCESSOR_MODE, LIST_ENTRY, NTSTATUS, UNICODE_STRING};

// ---------------------------------------------------------------------------------------------
// IRQL
// ---------------------------------------------------------------------------------------------

/// `PASSIVE_LEVEL` (0): normal thread execution.
pub const PASSIVE_LEVEL: KIRQL = 0;
/// `LOW_LEVEL` (0).
pub const LOW_LEVEL: KIRQL = 0;
/// `APC_LEVEL` (1): asynchronous procedure calls masked.
pub const APC_LEVEL: KIRQL = 1;
/// `DISPATCH_LEVEL` (2): no thread dispatching; no waits, no paged memory.
pub const DISPATCH_LEVEL: KIRQL = 2;
/// `CMCI_LEVEL` (5).
pub const CMCI_LEVEL: KIRQL = 5;
/// `SYNCH_LEVEL` (12 on x64).
pub const SYNCH_LEVEL: KIRQL = 12;
/// `CLOCK_LEVEL` (13).
pub const CLOCK_LEVEL: KIRQL = 13;
/// `IPI_LEVEL` (14).
pub const IPI_LEVEL: KIRQL = 14;
/// `HIGH_LEVEL` (15 on x64; 31 on x86).
pub const HIGH_LEVEL: KIRQL = 15;

// ---------------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------------

/// `POOL_FLAGS` for `ExAllocatePool2`.
pub type POOL_FLAGS = u64;
/// Charge quota to the requesting process.
pub const POOL_FLAG_USE_QUOTA: POOL_FLAGS = 0x1;
/// Do not zero the allocation.
pub const POOL_FLAG_UNINITIALIZED: POOL_FLAGS = 0x2;
/// Reserved for the OS.
pub const POOL_FLAG_SESSION: POOL_FLAGS = 0x4;
/// Cache-line aligned allocation.
pub const POOL_FLAG_CACHE_ALIGNED: POOL_FLAGS = 0x8;
/// Raise an exception instead of returning NULL (never used by the SDK).
pub const POOL_FLAG_RAISE_ON_FAILURE: POOL_FLAGS = 0x20;
/// Non-paged, non-executable pool.
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x40;
/// Non-paged, executable pool.
pub const POOL_FLAG_NON_PAGED_EXECUTE: POOL_FLAGS = 0x80;
/// Paged pool.
pub const POOL_FLAG_PAGED: POOL_FLAGS = 0x100;
/// Low 32 bits: required flags (an unknown one fails the allocation).
pub const POOL_FLAG_REQUIRED_MASK: POOL_FLAGS = 0x0000_0000_FFFF_FFFF;
/// Required flags Windows knows (`USE_QUOTA` through `RESERVED3`).
pub const POOL_FLAG_LAST_KNOWN_REQUIRED: POOL_FLAGS = 0x400;
/// Optional flag: allocate from special pool.
pub const POOL_FLAG_SPECIAL_POOL: POOL_FLAGS = 0x1_0000_0000;

/// `POOL_TYPE` (legacy pool type, used by `ExAllocateCacheAwareRundownProtection`).
pub type POOL_TYPE = i32;
/// `NonPagedPool`.
pub const NonPagedPool: POOL_TYPE = 0;
/// `PagedPool`.
pub const PagedPool: POOL_TYPE = 1;
/// `NonPagedPoolNx`: non-paged, non-executable.
pub const NonPagedPoolNx: POOL_TYPE = 512;

/// `PAGE_SIZE` on x64.
pub const PAGE_SIZE: usize = 0x1000;

/// Bug check `BAD_POOL_CALLER`.
pub const BAD_POOL_CALLER: u32 = 0xC2;
/// Bug check `IRQL_NOT_LESS_OR_EQUAL`.
pub const IRQL_NOT_LESS_OR_EQUAL: u32 = 0x0A;
/// Bug check `IRQL_NOT_GREATER_OR_EQUAL`.
pub const IRQL_NOT_GREATER_OR_EQUAL: u32 = 0x09;
/// Bug check `DRIVER_VERIFIER_DETECTED_VIOLATION`.
pub const DRIVER_VERIFIER_DETECTED_VIOLATION: u32 = 0xC4;
/// Bug check `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`.
pub const DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS: u32 = 0xCE;

// ---------------------------------------------------------------------------------------------
// Rundown protection and locks
// ---------------------------------------------------------------------------------------------

/// `EX_RUNDOWN_REF`: 8 bytes (a count or a wait-block pointer); zero when initialised.
///
/// The kernel owns the contents: hold it behind interior mutability and never copy it while
/// in use.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EX_RUNDOWN_REF {
    /// Reference count (shifted left by one) or wait-block pointer; bit 0 is "run-down active".
    pub Count: usize,
}

/// `EX_RUNDOWN_REF_CACHE_AWARE`: opaque; allocated by `ExAllocateCacheAwareRundownProtection`
/// or placed in storage of `ExSizeOfRundownProtectionCacheAware()` bytes.
#[repr(C)]
pub struct EX_RUNDOWN_REF_CACHE_AWARE {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `EX_SPIN_LOCK`: a 32-bit reader/writer spin lock; 0 = free. Non-paged storage.
pub type EX_SPIN_LOCK = i32;
/// `EX_PUSH_LOCK`: a pointer-sized reader/writer lock; 0 = free.
pub type EX_PUSH_LOCK = usize;
/// `KSPIN_LOCK`: a pointer-sized spin lock.
pub type KSPIN_LOCK = usize;
/// `EX_DEFAULT_PUSH_LOCK_FLAGS`.
pub const EX_DEFAULT_PUSH_LOCK_FLAGS: u32 = 0;

// ---------------------------------------------------------------------------------------------
// Work items
// ---------------------------------------------------------------------------------------------

/// `IO_WORKITEM`: opaque work item allocated by `IoAllocateWorkItem`.
#[repr(C)]
pub struct IO_WORKITEM {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}
/// `PIO_WORKITEM`.
pub type PIO_WORKITEM = *mut IO_WORKITEM;

/// `IO_WORKITEM_ROUTINE`: runs at PASSIVE_LEVEL in a system worker thread.
pub type IO_WORKITEM_ROUTINE =
    unsafe extern "win64" fn(DeviceObject: *mut DEVICE_OBJECT, Context: *mut c_void);

/// `WORK_QUEUE_TYPE`.
pub type WORK_QUEUE_TYPE = i32;
/// `CriticalWorkQueue`.
pub const CriticalWorkQueue: WORK_QUEUE_TYPE = 0;
/// `DelayedWorkQueue`: the queue drivers must use.
pub const DelayedWorkQueue: WORK_QUEUE_TYPE = 1;
/// `HyperCriticalWorkQueue`.
pub const HyperCriticalWorkQueue: WORK_QUEUE_TYPE = 2;
/// `NormalWorkQueue`.
pub const NormalWorkQueue: WORK_QUEUE_TYPE = 3;
/// `BackgroundWorkQueue`.
pub const BackgroundWorkQueue: WORK_QUEUE_TYPE = 4;
/// `RealTimeWorkQueue`.
pub const RealTimeWorkQueue: WORK_QUEUE_TYPE = 5;
/// `SuperCriticalWorkQueue`.
pub const SuperCriticalWorkQueue: WORK_QUEUE_TYPE = 6;
/// `MaximumWorkQueue`.
pub const MaximumWorkQueue: WORK_QUEUE_TYPE = 7;
/// `CustomPriorityWorkQueue`: queue at 32 + priority.
pub const CustomPriorityWorkQueue: WORK_QUEUE_TYPE = 32;

// ---------------------------------------------------------------------------------------------
// Driver and device objects, IRPs
// ---------------------------------------------------------------------------------------------

/// `IRP_MJ_CREATE`.
pub const IRP_MJ_CREATE: u8 = 0x00;
/// `IRP_MJ_CLOSE`.
pub const IRP_MJ_CLOSE: u8 = 0x02;
/// `IRP_MJ_DEVICE_CONTROL`.
pub const IRP_MJ_DEVICE_CONTROL: u8 = 0x0E;
/// `IRP_MJ_CLEANUP`.
pub const IRP_MJ_CLEANUP: u8 = 0x12;
/// `IRP_MJ_MAXIMUM_FUNCTION`.
pub const IRP_MJ_MAXIMUM_FUNCTION: u8 = 0x1B;

/// `METHOD_BUFFERED`.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`.
pub const FILE_WRITE_ACCESS: u32 = 2;
/// `FILE_DEVICE_NETWORK`.
pub const FILE_DEVICE_NETWORK: u32 = 0x12;
/// `FILE_DEVICE_UNKNOWN`.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `FILE_DEVICE_SECURE_OPEN` device characteristic.
pub const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;
/// `FILE_AUTOGENERATED_DEVICE_NAME` device characteristic.
pub const FILE_AUTOGENERATED_DEVICE_NAME: u32 = 0x80;
/// `DO_BUFFERED_IO`.
pub const DO_BUFFERED_IO: u32 = 0x4;
/// `DO_DIRECT_IO`.
pub const DO_DIRECT_IO: u32 = 0x10;
/// `DO_DEVICE_INITIALIZING`.
pub const DO_DEVICE_INITIALIZING: u32 = 0x80;
/// `IO_NO_INCREMENT`.
pub const IO_NO_INCREMENT: i8 = 0;
/// `IO_NETWORK_INCREMENT`.
pub const IO_NETWORK_INCREMENT: i8 = 2;

/// `CTL_CODE(DeviceType, Function, Method, Access)`.
#[must_use]
pub const fn CTL_CODE(DeviceType: u32, Function: u32, Method: u32, Access: u32) -> u32 {
    (DeviceType << 16) | (Access << 14) | (Function << 2) | Method
}

/// `DRIVER_INITIALIZE` (`DriverEntry`), called at PASSIVE_LEVEL.
pub type DRIVER_INITIALIZE = unsafe extern "win64" fn(
    DriverObject: *mut DRIVER_OBJECT,
    RegistryPath: *mut UNICODE_STRING,
) -> NTSTATUS;
/// `DRIVER_UNLOAD`, called at PASSIVE_LEVEL.
pub type DRIVER_UNLOAD = unsafe extern "win64" fn(DriverObject: *mut DRIVER_OBJECT);
/// `DRIVER_DISPATCH`: an IRP handler.
pub type DRIVER_DISPATCH =
    unsafe extern "win64" fn(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS;
/// `PDRIVER_DISPATCH` (nullable).
pub type PDRIVER_DISPATCH = Option<DRIVER_DISPATCH>;

/// `DRIVER_EXTENSION` (the fields a WDM driver reads).
#[repr(C)]
#[derive(Debug)]
pub struct DRIVER_EXTENSION {
    /// Back pointer to the driver object.
    pub DriverObject: *mut DRIVER_OBJECT,
    /// `AddDevice` routine (PnP drivers only).
    pub AddDevice: *mut c_void,
    /// Reinitialisation count.
    pub Count: u32,
    /// Service key name.
    pub ServiceKeyName: UNICODE_STRING,
}

/// `DRIVER_OBJECT` (0x150 bytes).
#[repr(C)]
pub struct DRIVER_OBJECT {
    /// `IO_TYPE_DRIVER` (4).
    pub Type: i16,
    /// Size of this structure.
    pub Size: i16,
    /// First device object created by the driver (then `NextDevice`).
    pub DeviceObject: *mut DEVICE_OBJECT,
    /// Driver flags.
    pub Flags: u32,
    /// Image base.
    pub DriverStart: *mut c_void,
    /// Image size.
    pub DriverSize: u32,
    /// Loader entry.
    pub DriverSection: *mut c_void,
    /// Driver extension.
    pub DriverExtension: *mut DRIVER_EXTENSION,
    /// `\Driver\Name`.
    pub DriverName: UNICODE_STRING,
    /// Hardware database path.
    pub HardwareDatabase: *mut UNICODE_STRING,
    /// Fast I/O dispatch table.
    pub FastIoDispatch: *mut c_void,
    /// `DriverEntry`.
    pub DriverInit: Option<DRIVER_INITIALIZE>,
    /// `StartIo` routine.
    pub DriverStartIo: *mut c_void,
    /// Unload routine, set by the driver.
    pub DriverUnload: Option<DRIVER_UNLOAD>,
    /// IRP dispatch routines, indexed by `IRP_MJ_*`.
    pub MajorFunction: [PDRIVER_DISPATCH; 28],
}

/// `DEVICE_OBJECT` (0x150 bytes, 16-byte aligned on Windows; mingw-w64 omits the alignment and
/// declares 0x148 bytes: the field offsets agree).
#[repr(C, align(16))]
pub struct DEVICE_OBJECT {
    /// `IO_TYPE_DEVICE` (3).
    pub Type: i16,
    /// Size of the object and its extension.
    pub Size: u16,
    /// Reference count.
    pub ReferenceCount: i32,
    /// Owning driver.
    pub DriverObject: *mut DRIVER_OBJECT,
    /// Next device of the same driver.
    pub NextDevice: *mut DEVICE_OBJECT,
    /// Attached (filter) device.
    pub AttachedDevice: *mut DEVICE_OBJECT,
    /// Current IRP (StartIo drivers).
    pub CurrentIrp: *mut IRP,
    /// I/O timer.
    pub Timer: *mut c_void,
    /// `DO_*` flags.
    pub Flags: u32,
    /// `FILE_*` device characteristics.
    pub Characteristics: u32,
    /// Volume parameter block.
    pub Vpb: *mut c_void,
    /// Device extension (zeroed by `IoCreateDevice`).
    pub DeviceExtension: *mut c_void,
    /// `FILE_DEVICE_*` type.
    pub DeviceType: u32,
    /// Stack size (1 for a device that is not layered).
    pub StackSize: i8,
    /// `Queue` (union of `ListEntry` and `WAIT_CONTEXT_BLOCK`), opaque.
    pub Queue: [u64; 9],
    /// Buffer alignment requirement.
    pub AlignmentRequirement: u32,
    /// `KDEVICE_QUEUE`, opaque.
    pub DeviceQueue: [u64; 5],
    /// `KDPC`, opaque.
    pub Dpc: [u64; 8],
    /// Active thread count.
    pub ActiveThreadCount: u32,
    /// Security descriptor.
    pub SecurityDescriptor: *mut c_void,
    /// `KEVENT`, opaque.
    pub DeviceLock: [u64; 3],
    /// Sector size.
    pub SectorSize: u16,
    /// Spare.
    pub Spare1: u16,
    /// Device object extension.
    pub DeviceObjectExtension: *mut c_void,
    /// Reserved.
    pub Reserved: *mut c_void,
}

/// `IO_STATUS_BLOCK`'s first member: a status or a pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IO_STATUS_BLOCK_0 {
    /// Completion status.
    pub Status: NTSTATUS,
    /// Reserved pointer view.
    pub Pointer: *mut c_void,
}

/// `IO_STATUS_BLOCK`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IO_STATUS_BLOCK {
    /// `Status` / `Pointer` (anonymous union in C).
    pub u: IO_STATUS_BLOCK_0,
    /// Request-dependent value, for example bytes transferred.
    pub Information: usize,
}

/// `IRP.AssociatedIrp` union.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IRP_ASSOCIATED {
    /// Master IRP of an associated IRP.
    pub MasterIrp: *mut IRP,
    /// Associated IRP count.
    pub IrpCount: i32,
    /// `METHOD_BUFFERED` system buffer.
    pub SystemBuffer: *mut c_void,
}

/// `IRP.Tail.Overlay`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IRP_TAIL_OVERLAY {
    /// Driver-owned context (union with `DeviceQueueEntry`).
    pub DriverContext: [*mut c_void; 4],
    /// Requesting thread.
    pub Thread: *mut c_void,
    /// Auxiliary buffer.
    pub AuxiliaryBuffer: *mut c_char,
    /// List link.
    pub ListEntry: LIST_ENTRY,
    /// Current stack location (`IoGetCurrentIrpStackLocation`).
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    /// Original file object.
    pub OriginalFileObject: *mut c_void,
    /// IRP extension (newer builds).
    pub IrpExtension: *mut c_void,
}

/// `IRP.Tail` union.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IRP_TAIL {
    /// The overlay used while a driver owns the IRP.
    pub Overlay: IRP_TAIL_OVERLAY,
    /// `KAPC` view, opaque.
    pub Apc: [u64; 11],
}

/// `IRP` (0xD0 bytes).
#[repr(C)]
pub struct IRP {
    /// `IO_TYPE_IRP` (6).
    pub Type: i16,
    /// Size of the IRP with its stack locations.
    pub Size: u16,
    /// Allocation processor (newer builds; padding in older headers).
    pub AllocationProcessorNumber: u16,
    /// Reserved.
    pub Reserved: u16,
    /// MDL for direct I/O.
    pub MdlAddress: *mut c_void,
    /// IRP flags.
    pub Flags: u32,
    /// `MasterIrp` / `IrpCount` / `SystemBuffer`.
    pub AssociatedIrp: IRP_ASSOCIATED,
    /// Thread list link.
    pub ThreadListEntry: LIST_ENTRY,
    /// Completion status and information.
    pub IoStatus: IO_STATUS_BLOCK,
    /// Mode of the requester.
    pub RequestorMode: KPROCESSOR_MODE,
    /// Set when the IRP was pended.
    pub PendingReturned: BOOLEAN,
    /// Number of stack locations.
    pub StackCount: i8,
    /// Current stack location index.
    pub CurrentLocation: i8,
    /// Cancel flag.
    pub Cancel: BOOLEAN,
    /// IRQL at cancel.
    pub CancelIrql: KIRQL,
    /// APC environment.
    pub ApcEnvironment: i8,
    /// Allocation flags.
    pub AllocationFlags: u8,
    /// User I/O status block.
    pub UserIosb: *mut IO_STATUS_BLOCK,
    /// User event.
    pub UserEvent: *mut c_void,
    /// `Overlay` union (APC parameters / allocation size), opaque.
    pub Overlay: [u64; 2],
    /// Cancel routine.
    pub CancelRoutine: *mut c_void,
    /// User buffer.
    pub UserBuffer: *mut c_void,
    /// `Tail` union.
    pub Tail: IRP_TAIL,
}

/// `IO_STACK_LOCATION.Parameters.DeviceIoControl` (x64: pointer-aligned members).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IO_STACK_LOCATION_DEVICE_IO_CONTROL {
    /// Output buffer length.
    pub OutputBufferLength: u32,
    /// Padding (members are pointer-aligned on x64).
    pub Padding0: u32,
    /// Input buffer length.
    pub InputBufferLength: u32,
    /// Padding (members are pointer-aligned on x64).
    pub Padding1: u32,
    /// Control code.
    pub IoControlCode: u32,
    /// Padding (members are pointer-aligned on x64).
    pub Padding2: u32,
    /// `METHOD_NEITHER` input buffer.
    pub Type3InputBuffer: *mut c_void,
}

/// `IO_STACK_LOCATION.Parameters` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub union IO_STACK_LOCATION_PARAMETERS {
    /// `IRP_MJ_DEVICE_CONTROL` parameters.
    pub DeviceIoControl: IO_STACK_LOCATION_DEVICE_IO_CONTROL,
    /// Every other request's parameters, opaque.
    pub Others: [u64; 4],
}

/// `IO_STACK_LOCATION` (0x48 bytes).
#[repr(C)]
pub struct IO_STACK_LOCATION {
    /// `IRP_MJ_*`.
    pub MajorFunction: u8,
    /// `IRP_MN_*`.
    pub MinorFunction: u8,
    /// Flags.
    pub Flags: u8,
    /// Control flags.
    pub Control: u8,
    /// Request parameters.
    pub Parameters: IO_STACK_LOCATION_PARAMETERS,
    /// Target device.
    pub DeviceObject: *mut DEVICE_OBJECT,
    /// File object.
    pub FileObject: *mut c_void,
    /// Completion routine.
    pub CompletionRoutine: *mut c_void,
    /// Completion context.
    pub Context: *mut c_void,
}

/// `IoGetCurrentIrpStackLocation(Irp)` (a header inline in C).
///
/// # Safety
/// `irp` must point to a valid IRP owned by the caller.
#[must_use]
pub unsafe fn IoGetCurrentIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is a valid IRP.
    let tail = unsafe { &(*irp).Tail };
    // SAFETY: the overlay is the active view of the tail while a driver owns the IRP.
    unsafe { tail.Overlay.CurrentStackLocation }
}

// ---------------------------------------------------------------------------------------------
// Debug output
// ---------------------------------------------------------------------------------------------

/// `DPFLTR_ERROR_LEVEL`.
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
/// `DPFLTR_WARNING_LEVEL`.
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
/// `DPFLTR_TRACE_LEVEL`.
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
/// `DPFLTR_INFO_LEVEL`.
pub const DPFLTR_INFO_LEVEL: u32 = 3;
/// `DPFLTR_IHVDRIVER_ID`.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_IHVNETWORK_ID`.
pub const DPFLTR_IHVNETWORK_ID: u32 = 80;
/// `DPFLTR_DEFAULT_ID`.
pub const DPFLTR_DEFAULT_ID: u32 = 101;

unsafe extern "win64" {
    /// [`DbgPrintEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-dbgprintex):
    /// printf-like debug output. The SDK only ever passes the format `"%s"` and one
    /// NUL-terminated string, the shape usersim implements.
    ///
    /// # IRQL
    /// Any level up to DIRQL for `%s`.
    pub fn DbgPrintEx(ComponentId: u32, Level: u32, Format: *const c_char, ...) -> u32;
}

// ---------------------------------------------------------------------------------------------
// ETW
// ---------------------------------------------------------------------------------------------

/// `REGHANDLE`: an ETW provider registration handle.
pub type REGHANDLE = u64;

/// `EVENT_DESCRIPTOR` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EVENT_DESCRIPTOR {
    /// Event id (0 for TraceLogging).
    pub Id: u16,
    /// Event version.
    pub Version: u8,
    /// Channel (11 for TraceLogging).
    pub Channel: u8,
    /// Level (0 log-always .. 5 verbose).
    pub Level: u8,
    /// Opcode (1 start, 2 stop).
    pub Opcode: u8,
    /// Task.
    pub Task: u16,
    /// Keyword bits.
    pub Keyword: u64,
}

/// `EVENT_DATA_DESCRIPTOR` (16 bytes). TraceLogging puts a descriptor type in `Reserved`:
/// 0 = data, 1 = event metadata, 2 = provider metadata.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EVENT_DATA_DESCRIPTOR {
    /// Address of the data.
    pub Ptr: u64,
    /// Size in bytes.
    pub Size: u32,
    /// Descriptor type (TraceLogging) or zero.
    pub Reserved: u32,
}

/// `EVENT_FILTER_DESCRIPTOR` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EVENT_FILTER_DESCRIPTOR {
    /// Address of the filter data.
    pub Ptr: u64,
    /// Size in bytes.
    pub Size: u32,
    /// Filter type.
    pub Type: u32,
}

/// `EVENT_DATA_DESCRIPTOR_TYPE_NONE`: payload data.
pub const EVENT_DATA_DESCRIPTOR_TYPE_NONE: u32 = 0;
/// `EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA`.
pub const EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA: u32 = 1;
/// `EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA`.
pub const EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA: u32 = 2;

/// `EVENT_CONTROL_CODE_DISABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_DISABLE_PROVIDER: u32 = 0;
/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_ENABLE_PROVIDER: u32 = 1;
/// `EVENT_CONTROL_CODE_CAPTURE_STATE`.
pub const EVENT_CONTROL_CODE_CAPTURE_STATE: u32 = 2;

/// `EVENT_ACTIVITY_CTRL_GET_ID`.
pub const EVENT_ACTIVITY_CTRL_GET_ID: u32 = 1;
/// `EVENT_ACTIVITY_CTRL_SET_ID`.
pub const EVENT_ACTIVITY_CTRL_SET_ID: u32 = 2;
/// `EVENT_ACTIVITY_CTRL_CREATE_ID`.
pub const EVENT_ACTIVITY_CTRL_CREATE_ID: u32 = 3;
/// `EVENT_ACTIVITY_CTRL_GET_SET_ID`.
pub const EVENT_ACTIVITY_CTRL_GET_SET_ID: u32 = 4;
/// `EVENT_ACTIVITY_CTRL_CREATE_SET_ID`.
pub const EVENT_ACTIVITY_CTRL_CREATE_SET_ID: u32 = 5;

/// `EVENT_INFO_CLASS`.
pub type EVENT_INFO_CLASS = i32;
/// `EventProviderBinaryTrackInfo`.
pub const EventProviderBinaryTrackInfo: EVENT_INFO_CLASS = 0;
/// `EventProviderSetTraits`: TraceLogging's provider-traits blob.
pub const EventProviderSetTraits: EVENT_INFO_CLASS = 2;

/// `ETWENABLECALLBACK`: called at PASSIVE_LEVEL when a session enables, disables or captures
/// the provider.
pub type ETWENABLECALLBACK = unsafe extern "win64" fn(
    SourceId: *const GUID,
    ControlCode: u32,
    Level: u8,
    MatchAnyKeyword: u64,
    MatchAllKeyword: u64,
    FilterData: *const EVENT_FILTER_DESCRIPTOR,
    CallbackContext: *mut c_void,
);

kernel_imports! {
    module = "ntoskrnl.exe";

    /// [`KeDelayExecutionThread`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kedelayexecutionthread):
    /// puts the current thread to sleep for `*Interval` (negative: relative, in 100 ns units;
    /// positive: an absolute system time). IRQL ≤ APC_LEVEL.
    pub fn KeDelayExecutionThread(WaitMode: KPROCESSOR_MODE, Alertable: BOOLEAN, Interval: *const i64) -> NTSTATUS;

    /// [`ExAllocatePool2`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2):
    /// allocates zeroed pool (unless `POOL_FLAG_UNINITIALIZED`); NULL on failure or `Tag == 0`.
    /// IRQL ≤ DISPATCH_LEVEL (≤ APC_LEVEL for paged pool).
    pub fn ExAllocatePool2(Flags: POOL_FLAGS, NumberOfBytes: usize, Tag: u32) -> *mut c_void;
    /// [`ExFreePoolWithTag`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exfreepoolwithtag):
    /// frees pool; the tag must match the allocation's. IRQL ≤ DISPATCH_LEVEL (non-paged).
    pub fn ExFreePoolWithTag(P: *mut c_void, Tag: u32);
    /// [`ExFreePool`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exfreepool):
    /// frees pool without a tag check. IRQL ≤ DISPATCH_LEVEL (non-paged).
    pub fn ExFreePool(P: *mut c_void);

    /// [`ExInitializeRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exinitializerundownprotection).
    /// IRQL ≤ APC_LEVEL.
    pub fn ExInitializeRundownProtection(RunRef: *mut EX_RUNDOWN_REF);
    /// [`ExReInitializeRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotection):
    /// only after the object was run down. IRQL ≤ APC_LEVEL.
    pub fn ExReInitializeRundownProtection(RunRef: *mut EX_RUNDOWN_REF);
    /// [`ExAcquireRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exacquirerundownprotection):
    /// TRUE if a reference was taken; FALSE once a wait has begun. IRQL ≤ DISPATCH_LEVEL.
    pub fn ExAcquireRundownProtection(RunRef: *mut EX_RUNDOWN_REF) -> BOOLEAN;
    /// [`ExReleaseRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreleaserundownprotection).
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn ExReleaseRundownProtection(RunRef: *mut EX_RUNDOWN_REF);
    /// [`ExWaitForRundownProtectionRelease`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exwaitforrundownprotectionrelease):
    /// refuses new references and blocks until all are released. IRQL ≤ APC_LEVEL.
    pub fn ExWaitForRundownProtectionRelease(RunRef: *mut EX_RUNDOWN_REF);
    /// [`ExRundownCompleted`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exrundowncompleted):
    /// after a wait, later waits return at once and acquires keep failing. Until it is
    /// called, a wait that had to block leaves the reference pointing at its wait block, and
    /// another wait on it is invalid. IRQL ≤ APC_LEVEL.
    pub fn ExRundownCompleted(RunRef: *mut EX_RUNDOWN_REF);
    /// [`ExAllocateCacheAwareRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatecacheawarerundownprotection):
    /// NULL on allocation failure. IRQL ≤ APC_LEVEL.
    pub fn ExAllocateCacheAwareRundownProtection(PoolType: POOL_TYPE, PoolTag: u32) -> *mut EX_RUNDOWN_REF_CACHE_AWARE;
    /// [`ExFreeCacheAwareRundownProtection`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exfreecacheawarerundownprotection).
    /// IRQL ≤ APC_LEVEL.
    pub fn ExFreeCacheAwareRundownProtection(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE);
    /// [`ExSizeOfRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exsizeofrundownprotectioncacheaware).
    /// IRQL ≤ APC_LEVEL.
    pub fn ExSizeOfRundownProtectionCacheAware() -> usize;
    /// [`ExInitializeRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exinitializerundownprotectioncacheaware).
    /// IRQL ≤ APC_LEVEL.
    pub fn ExInitializeRundownProtectionCacheAware(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE, RunRefSize: usize);
    /// [`ExAcquireRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exacquirerundownprotectioncacheaware).
    /// IRQL ≤ DISPATCH_LEVEL (as the non-cache-aware form; the docs leave it blank).
    pub fn ExAcquireRundownProtectionCacheAware(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE) -> BOOLEAN;
    /// [`ExReleaseRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreleaserundownprotectioncacheaware).
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn ExReleaseRundownProtectionCacheAware(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE);
    /// [`ExReInitializeRundownProtectionCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreinitializerundownprotectioncacheaware):
    /// only after the reference was run down. IRQL ≤ APC_LEVEL.
    pub fn ExReInitializeRundownProtectionCacheAware(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE);
    /// [`ExWaitForRundownProtectionReleaseCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exwaitforrundownprotectionreleasecacheaware).
    /// IRQL ≤ APC_LEVEL.
    pub fn ExWaitForRundownProtectionReleaseCacheAware(RunRef: *mut EX_RUNDOWN_REF_CACHE_AWARE);
    /// [`ExRundownCompletedCacheAware`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exrundowncompletedcacheaware):
    /// after a wait, later waits return at once and acquires keep failing. IRQL ≤ APC_LEVEL.
    pub fn ExRundownCompletedCacheAware(RunRefCacheAware: *mut EX_RUNDOWN_REF_CACHE_AWARE);

    /// [`ExAcquireSpinLockShared`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exacquirespinlockshared):
    /// raises to DISPATCH_LEVEL and returns the previous IRQL. IRQL ≤ DISPATCH_LEVEL.
    pub fn ExAcquireSpinLockShared(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL;
    /// [`ExReleaseSpinLockShared`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreleasespinlockshared).
    /// IRQL = DISPATCH_LEVEL.
    pub fn ExReleaseSpinLockShared(SpinLock: *mut EX_SPIN_LOCK, OldIrql: KIRQL);
    /// [`ExAcquireSpinLockExclusive`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exacquirespinlockexclusive).
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn ExAcquireSpinLockExclusive(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL;
    /// [`ExReleaseSpinLockExclusive`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exreleasespinlockexclusive).
    /// IRQL = DISPATCH_LEVEL.
    pub fn ExReleaseSpinLockExclusive(SpinLock: *mut EX_SPIN_LOCK, OldIrql: KIRQL);

    /// [`ExInitializePushLock`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exinitializepushlock).
    pub fn ExInitializePushLock(PushLock: *mut EX_PUSH_LOCK);
    /// `ExAcquirePushLockExclusiveEx` (what the `ExAcquirePushLockExclusive` macro calls).
    /// IRQL ≤ APC_LEVEL, inside a critical region.
    pub fn ExAcquirePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);
    /// `ExAcquirePushLockSharedEx`. IRQL ≤ APC_LEVEL, inside a critical region.
    pub fn ExAcquirePushLockSharedEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);
    /// `ExReleasePushLockExclusiveEx`. IRQL ≤ DISPATCH_LEVEL.
    pub fn ExReleasePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);
    /// `ExReleasePushLockSharedEx`. IRQL ≤ DISPATCH_LEVEL.
    pub fn ExReleasePushLockSharedEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);

    /// `KeGetCurrentIrql` export (drivers read CR8 inline instead: see [`crate::intrin`]).
    pub fn KeGetCurrentIrql() -> KIRQL;
    /// [`KfRaiseIrql`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keraiseirql):
    /// raises the IRQL and returns the previous one. Raising to a lower level bugchecks.
    pub fn KfRaiseIrql(NewIrql: KIRQL) -> KIRQL;
    /// [`KeLowerIrql`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kelowerirql):
    /// restores the IRQL returned by the preceding raise.
    pub fn KeLowerIrql(NewIrql: KIRQL);

    /// [`IoAllocateWorkItem`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioallocateworkitem):
    /// NULL if resources are short. IRQL ≤ DISPATCH_LEVEL.
    pub fn IoAllocateWorkItem(DeviceObject: *mut DEVICE_OBJECT) -> PIO_WORKITEM;
    /// [`IoQueueWorkItem`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioqueueworkitem):
    /// the routine runs at PASSIVE_LEVEL on a system worker thread. IRQL ≤ DISPATCH_LEVEL.
    pub fn IoQueueWorkItem(IoWorkItem: PIO_WORKITEM, WorkerRoutine: IO_WORKITEM_ROUTINE, QueueType: WORK_QUEUE_TYPE, Context: *mut c_void);
    /// [`IoFreeWorkItem`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreeworkitem):
    /// only when not queued (allowed inside its own routine). IRQL ≤ DISPATCH_LEVEL.
    pub fn IoFreeWorkItem(IoWorkItem: PIO_WORKITEM);

    /// [`IoCreateDevice`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocreatedevice).
    /// IRQL ≤ APC_LEVEL.
    pub fn IoCreateDevice(DriverObject: *mut DRIVER_OBJECT, DeviceExtensionSize: u32, DeviceName: *mut UNICODE_STRING, DeviceType: u32, DeviceCharacteristics: u32, Exclusive: BOOLEAN, DeviceObject: *mut *mut DEVICE_OBJECT) -> NTSTATUS;
    /// [`IoDeleteDevice`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iodeletedevice).
    /// IRQL ≤ APC_LEVEL.
    pub fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT);
    /// [`IoCreateSymbolicLink`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocreatesymboliclink).
    /// IRQL = PASSIVE_LEVEL.
    pub fn IoCreateSymbolicLink(SymbolicLinkName: *mut UNICODE_STRING, DeviceName: *mut UNICODE_STRING) -> NTSTATUS;
    /// [`IoDeleteSymbolicLink`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iodeletesymboliclink).
    /// IRQL = PASSIVE_LEVEL.
    pub fn IoDeleteSymbolicLink(SymbolicLinkName: *mut UNICODE_STRING) -> NTSTATUS;
    /// [`IofCompleteRequest`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocompleterequest)
    /// (`IoCompleteRequest`). IRQL ≤ DISPATCH_LEVEL.
    pub fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: i8);

    /// [`KeBugCheckEx`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kebugcheckex):
    /// stops the system. Any IRQL.
    pub fn KeBugCheckEx(BugCheckCode: u32, BugCheckParameter1: usize, BugCheckParameter2: usize, BugCheckParameter3: usize, BugCheckParameter4: usize) -> !;

    /// [`EtwRegister`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-etwregister).
    /// IRQL = PASSIVE_LEVEL.
    pub fn EtwRegister(ProviderId: *const GUID, EnableCallback: Option<ETWENABLECALLBACK>, CallbackContext: *mut c_void, RegHandle: *mut REGHANDLE) -> NTSTATUS;
    /// [`EtwUnregister`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-etwunregister)
    /// (the handle is passed by value). IRQL = PASSIVE_LEVEL.
    pub fn EtwUnregister(RegHandle: REGHANDLE) -> NTSTATUS;
    /// [`EtwSetInformation`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-etwsetinformation).
    /// IRQL = PASSIVE_LEVEL.
    pub fn EtwSetInformation(RegHandle: REGHANDLE, InformationClass: EVENT_INFO_CLASS, EventInformation: *const c_void, InformationLength: u32) -> NTSTATUS;
    /// [`EtwWriteTransfer`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-etwwritetransfer).
    /// Any IRQL (non-paged data above APC_LEVEL).
    pub fn EtwWriteTransfer(RegHandle: REGHANDLE, EventDescriptor: *const EVENT_DESCRIPTOR, ActivityId: *const GUID, RelatedActivityId: *const GUID, UserDataCount: u32, UserData: *const EVENT_DATA_DESCRIPTOR) -> NTSTATUS;
    /// [`EtwActivityIdControl`](https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-etwactivityidcontrol).
    /// IRQL < DISPATCH_LEVEL, except `EVENT_ACTIVITY_CTRL_CREATE_ID` at any level.
    pub fn EtwActivityIdControl(ControlCode: u32, ActivityId: *mut GUID) -> NTSTATUS;
}
