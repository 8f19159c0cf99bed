//! `NTSTATUS` values (`ntstatus.h`) used by the SDK and by the eBPF core's status mapping.

use crate::ntdef::NTSTATUS;
/// The operation succeeded. (`0x00000000`)
pub const STATUS_SUCCESS: NTSTATUS = 0x0000_0000;
/// A wait timed out. (`0x00000102`)
pub const STATUS_TIMEOUT: NTSTATUS = 0x0000_0102;
/// The operation was started and completes later. (`0x00000103`)
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103;
/// Informational: the object name already exists. (`0x40000000`)
pub const STATUS_OBJECT_NAME_EXISTS: NTSTATUS = 0x4000_0000;
/// Informational: the UUID is unique only on this machine. (`0x40020056`)
pub const RPC_NT_UUID_LOCAL_ONLY: NTSTATUS = 0x4002_0056;
/// Warning: the data did not fit the buffer. (`0x80000005`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005_u32 as NTSTATUS;
/// Generic failure. (`0xC0000001`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32 as NTSTATUS;
/// The function is not implemented. (`0xC0000002`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NOT_IMPLEMENTED: NTSTATUS = 0xC000_0002_u32 as NTSTATUS;
/// An invalid memory access. (`0xC0000005`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_ACCESS_VIOLATION: NTSTATUS = 0xC000_0005_u32 as NTSTATUS;
/// An invalid handle. (`0xC0000008`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32 as NTSTATUS;
/// An invalid parameter. (`0xC000000D`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as NTSTATUS;
/// The file does not exist. (`0xC000000F`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NO_SUCH_FILE: NTSTATUS = 0xC000_000F_u32 as NTSTATUS;
/// The request is not valid for this device. (`0xC0000010`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as NTSTATUS;
/// Not enough memory. (`0xC0000017`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NO_MEMORY: NTSTATUS = 0xC000_0017_u32 as NTSTATUS;
/// Access denied. (`0xC0000022`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_ACCESS_DENIED: NTSTATUS = 0xC000_0022_u32 as NTSTATUS;
/// The buffer is too small. (`0xC0000023`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32 as NTSTATUS;
/// The object name was not found. (`0xC0000034`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as NTSTATUS;
/// The object name already exists. (`0xC0000035`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_OBJECT_NAME_COLLISION: NTSTATUS = 0xC000_0035_u32 as NTSTATUS;
/// The object path was not found. (`0xC000003A`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_OBJECT_PATH_NOT_FOUND: NTSTATUS = 0xC000_003A_u32 as NTSTATUS;
/// Unknown revision. (`0xC0000058`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_UNKNOWN_REVISION: NTSTATUS = 0xC000_0058_u32 as NTSTATUS;
/// None mapped. (`0xC0000073`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NONE_MAPPED: NTSTATUS = 0xC000_0073_u32 as NTSTATUS;
/// Invalid security descriptor. (`0xC0000079`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_SECURITY_DESCR: NTSTATUS = 0xC000_0079_u32 as NTSTATUS;
/// Invalid image format. (`0xC000007B`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_IMAGE_FORMAT: NTSTATUS = 0xC000_007B_u32 as NTSTATUS;
/// Integer overflow. (`0xC0000095`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INTEGER_OVERFLOW: NTSTATUS = 0xC000_0095_u32 as NTSTATUS;
/// Insufficient system resources. (`0xC000009A`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as NTSTATUS;
/// The device is not ready. (`0xC00000A3`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = 0xC000_00A3_u32 as NTSTATUS;
/// The request is not supported. (`0xC00000BB`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32 as NTSTATUS;
/// Too many commands. (`0xC00000C1`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_TOO_MANY_COMMANDS: NTSTATUS = 0xC000_00C1_u32 as NTSTATUS;
/// An internal error. (`0xC00000E5`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INTERNAL_ERROR: NTSTATUS = 0xC000_00E5_u32 as NTSTATUS;
/// The third parameter is invalid. (`0xC00000F1`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_PARAMETER_3: NTSTATUS = 0xC000_00F1_u32 as NTSTATUS;
/// The fourth parameter is invalid. (`0xC00000F2`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_PARAMETER_4: NTSTATUS = 0xC000_00F2_u32 as NTSTATUS;
/// The stack could not be extended. (`0xC00000FD`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_STACK_OVERFLOW: NTSTATUS = 0xC000_00FD_u32 as NTSTATUS;
/// The operation was cancelled. (`0xC0000120`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as NTSTATUS;
/// The device is in an invalid state. (`0xC0000184`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as NTSTATUS;
/// Invalid buffer size. (`0xC0000206`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_BUFFER_SIZE: NTSTATUS = 0xC000_0206_u32 as NTSTATUS;
/// Too many nodes. (`0xC000020E`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_TOO_MANY_NODES: NTSTATUS = 0xC000_020E_u32 as NTSTATUS;
/// Not found. (`0xC0000225`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NOT_FOUND: NTSTATUS = 0xC000_0225_u32 as NTSTATUS;
/// The object id already exists. (`0xC000022B`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_OBJECTID_EXISTS: NTSTATUS = 0xC000_022B_u32 as NTSTATUS;
/// Retry the operation. (`0xC000022D`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_RETRY: NTSTATUS = 0xC000_022D_u32 as NTSTATUS;
/// The resource is not owned. (`0xC0000264`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_RESOURCE_NOT_OWNED: NTSTATUS = 0xC000_0264_u32 as NTSTATUS;
/// The driver could not be loaded. (`0xC000026C`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_DRIVER_UNABLE_TO_LOAD: NTSTATUS = 0xC000_026C_u32 as NTSTATUS;
/// No more matches. (`0xC0000273`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NO_MORE_MATCHES: NTSTATUS = 0xC000_0273_u32 as NTSTATUS;
/// The requested interface is not supported (NMR: attach declined). (`0xC00002B9`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_NOINTERFACE: NTSTATUS = 0xC000_02B9_u32 as NTSTATUS;
/// Verifier stop. (`0xC0000421`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_VERIFIER_STOP: NTSTATUS = 0xC000_0421_u32 as NTSTATUS;
/// Already initialised. (`0xC0000510`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_ALREADY_INITIALIZED: NTSTATUS = 0xC000_0510_u32 as NTSTATUS;
/// Already registered. (`0xC0000718`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_ALREADY_REGISTERED: NTSTATUS = 0xC000_0718_u32 as NTSTATUS;
/// Content blocked by policy. (`0xC0000804`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_CONTENT_BLOCKED: NTSTATUS = 0xC000_0804_u32 as NTSTATUS;
/// Invalid state transition. (`0xC000A003`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_STATE_TRANSITION: NTSTATUS = 0xC000_A003_u32 as NTSTATUS;
/// The remote procedure call failed. (`0xC002001B`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const RPC_NT_CALL_FAILED: NTSTATUS = 0xC002_001B_u32 as NTSTATUS;
/// Generic command failed. (`0xC0150026`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_GENERIC_COMMAND_FAILED: NTSTATUS = 0xC015_0026_u32 as NTSTATUS;
/// Invalid ACL. (`0xC0000077`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_ACL: NTSTATUS = 0xC000_0077_u32 as NTSTATUS;
/// Invalid SID. (`0xC0000078`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_INVALID_SID: NTSTATUS = 0xC000_0078_u32 as NTSTATUS;
/// Revision mismatch. (`0xC0000059`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_REVISION_MISMATCH: NTSTATUS = 0xC000_0059_u32 as NTSTATUS;
/// Allotted space exceeded. (`0xC0000099`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_ALLOTTED_SPACE_EXCEEDED: NTSTATUS = 0xC000_0099_u32 as NTSTATUS;
/// Datatype misalignment (a warning). (`0x80000002`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_DATATYPE_MISALIGNMENT: NTSTATUS = 0x8000_0002_u32 as NTSTATUS;
/// Procedure not found. (`0xC000007A`)
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are written as unsigned hex"
)]
pub const STATUS_PROCEDURE_NOT_FOUND: NTSTATUS = 0xC000_007A_u32 as NTSTATUS;
