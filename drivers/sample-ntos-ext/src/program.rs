//! The `process` program type of ntosebpfext: `process_md_t`, the three process helpers
//! (the account ones resolving the token's SID lazily, once per notification), the notify
//! routine's internal context and the `context_create`/`context_destroy` pair that builds it
//! for test runs (`bpf_prog_test_run`).

use core::ffi::c_void;
use core::mem::size_of;
use core::slice;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::AccountNames;
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_PROGRAM_TYPE_PROCESS;
use ebpf_extension_common::sys::ebpf_structs::BPF_PROG_TYPE_PROCESS;
use ebpf_extension_common::sys::wdm::PASSIVE_LEVEL;
use ebpf_extension_common::trace::trace_message_status;

use crate::test_run;

/// `EBPF_PROGRAM_TYPE_PROCESS`.
pub const PROGRAM_TYPE: GUID = EBPF_PROGRAM_TYPE_PROCESS;
/// `BPF_PROG_TYPE_PROCESS`.
pub const BPF_PROG_TYPE: u32 = BPF_PROG_TYPE_PROCESS;
/// `BPF_FUNC_process_get_image_path`.
pub const HELPER_GET_IMAGE_PATH: u32 = 0x1_0000;
/// `BPF_FUNC_process_get_account_name`.
pub const HELPER_GET_ACCOUNT_NAME: u32 = 0x1_0001;
/// `BPF_FUNC_process_get_account_domain`.
pub const HELPER_GET_ACCOUNT_DOMAIN: u32 = 0x1_0002;
/// `PROCESS_OPERATION_CREATE`.
pub const OPERATION_CREATE: u32 = 0;
/// `PROCESS_OPERATION_DELETE`.
pub const OPERATION_DELETE: u32 = 1;
/// `TOKEN_SID_MAX_SIZE`.
pub const TOKEN_SID_MAX_SIZE: usize = 68;
/// Size of the test-run context (`process_notify_context_t`, its 64-byte header included).
pub const NOTIFY_CONTEXT_SIZE: usize = size_of::<TestRunContext<NotifyContext>>();

no_padding! {
    /// What a `process` program sees: ntosebpfext's `process_md_t` (144 bytes).
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct ProcessContext {
        /// First byte of the command line (UTF-16LE, no terminator; set by the SDK); NULL on
        /// delete.
        pub command_start: DataPointer,
        /// One past its last byte.
        pub command_end: DataPointer,
        /// The process.
        pub process_id: u64,
        /// Its parent (creation only).
        pub parent_process_id: u64,
        /// The creating process (creation only).
        pub creating_process_id: u64,
        /// The creating thread (creation only).
        pub creating_thread_id: u64,
        /// Creation time (FILETIME).
        pub creation_time: u64,
        /// Exit time (FILETIME; delete only).
        pub exit_time: u64,
        /// Exit status (delete only).
        pub process_exit_code: u32,
        /// [`OPERATION_CREATE`] or [`OPERATION_DELETE`] (upstream: an 8-bit bit-field here).
        pub operation: u32,
        /// Bytes of `token_sid` in use; 0 if not captured.
        pub token_sid_size: u32,
        /// The primary token's user SID (creation only).
        pub token_sid: [u8; TOKEN_SID_MAX_SIZE],
    }
}

no_padding! {
    /// The notify routine's context (`process_notify_context_t` after its header): the program's
    /// view first, then what only helpers read.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct NotifyContext {
        /// What programs see.
        pub public: ProcessContext,
        /// The `PEPROCESS` (NULL in test runs).
        pub process: *mut c_void,
        /// The `PPS_CREATE_NOTIFY_INFO` (NULL in test runs).
        pub create_info: *mut c_void,
        /// The command line.
        pub command_line: CountedString,
        /// The image file name.
        pub image_file_name: CountedString,
        /// The account name: [`Notification::accounts`]' string, copied after each change.
        pub account_name: CountedString,
        /// The account domain, likewise.
        pub account_domain: CountedString,
        /// Whether the account strings are final (test runs may supply them).
        pub account_lookup_done: u8,
        /// The bytes C leaves as padding at the end: named, so `ctx_out` echoes `ctx_in`'s.
        pub reserved: [u8; 7],
    }
}

/// What programs run with and helpers receive: the notify context in ntosebpfext's layout,
/// then the account strings it points to (their owner: programs see only the first 144
/// bytes, and test runs read and write only the layout).
#[repr(C)]
pub struct Notification {
    /// The context in ntosebpfext's layout.
    pub notify: NotifyContext,
    /// The account of the token's SID, resolved by the first account helper call.
    pub accounts: AccountNames,
}

const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

/// Copies `source` into `out`: its length in bytes; `-EINVAL` if `out` is shorter; 0 if empty.
fn copy_bytes(source: &[u8], mut out: Output<'_>) -> u64 {
    let result = if out.write_at(0, source) {
        i32::try_from(source.len()).unwrap_or(-EINVAL)
    } else {
        -EINVAL
    };
    i64::from(result).cast_unsigned()
}

fn get_image_path(notification: &Notification, out: Output<'_>) -> u64 {
    let image = &notification.notify.image_file_name;
    if image.buffer.is_null() {
        // Only ever with Length 0: the notify routine and test runs set no other.
        return copy_bytes(&[], out);
    }
    // SAFETY: the image name holds `Length` readable bytes while programs run: the kernel's
    // string (notify routine) or the test run's copy, which the context does not outlive.
    let bytes = unsafe { slice::from_raw_parts(image.buffer.cast(), usize::from(image.length)) };
    copy_bytes(bytes, out)
}

impl Notification {
    /// Points the context's account strings (upstream's layout) at the current buffers.
    pub(crate) fn sync_accounts(&mut self) {
        let [name, domain] = self.accounts.strings();
        self.notify.account_name.set(&name);
        self.notify.account_domain.set(&domain);
        self.notify.account_lookup_done = u8::from(self.accounts.looked_up());
    }
}

/// The account string, or `-ENOENT` if the token's SID does not resolve (looked up by the
/// first account helper call of the notification, for every later call and program).
///
/// As ntosebpfext: `token_sid_size` says only whether a SID was captured (0: none); the SID
/// is the one `token_sid` holds, as long as its own header says (a test run's or a
/// program's other sizes change nothing).
fn account(notification: &mut Notification, domain: bool, out: Output<'_>) -> u64 {
    let public = &notification.notify.public;
    let token_sid = public.token_sid;
    let sid: &[u8] = if public.token_sid_size == 0 {
        &[]
    } else {
        &token_sid
    };
    let first = !notification.accounts.looked_up();
    let resolved = notification.accounts.resolve(sid);
    notification.sync_accounts();
    match resolved {
        Err(status) => {
            if first {
                trace_message_status!(
                    Level::Warning,
                    keyword::PROCESS,
                    "account lookup failed",
                    status
                );
            }
            i64::from(-ENOENT).cast_unsigned()
        }
        Ok(()) if domain => copy_bytes(notification.accounts.domain().unwrap_or(&[]), out),
        Ok(()) => copy_bytes(notification.accounts.name().unwrap_or(&[]), out),
    }
}

fn get_account_name(notification: &mut Notification, out: Output<'_>) -> u64 {
    account(notification, false, out)
}

fn get_account_domain(notification: &mut Notification, out: Output<'_>) -> u64 {
    account(notification, true, out)
}

program_type! {
    /// The program data the program-information provider publishes.
    pub static PROGRAM_DATA = c"process", PROGRAM_TYPE, BPF_PROG_TYPE;
    context ProcessContext, data command_start..command_end;
    helpers<Notification, notify.public> {
        HELPER_GET_IMAGE_PATH, c"bpf_process_get_image_path" => get_image_path(Context, BytesMut);
        HELPER_GET_ACCOUNT_NAME, c"bpf_process_get_account_name" => get_account_name(ContextMut, BytesMut);
        HELPER_GET_ACCOUNT_DOMAIN, c"bpf_process_get_account_domain" => get_account_domain(ContextMut, BytesMut);
    }
    test run test_run::ProcessTestRun;
    .with_required_irql(PASSIVE_LEVEL)
}
