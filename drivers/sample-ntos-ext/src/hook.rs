//! The process hook: up to 64 programs, the notify routine registered on the first
//! attach and removed on the last detach, the deny-on-failure verdict, and the driver that
//! starts it.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::{self, AccountNames, ProcessEvent, ProcessNotify};
use ebpf_extension_common::sys::ebpf_program_attach_type_guids::EBPF_ATTACH_TYPE_PROCESS;
use ebpf_extension_common::sys::ebpf_structs::{BPF_ATTACH_TYPE_PROCESS, bpf_attach_type_t};
use ebpf_extension_common::trace::{trace_message, trace_message_status};

use crate::program::{
    Notification, NotifyContext, OPERATION_CREATE, OPERATION_DELETE, PROGRAM_DATA, PROGRAM_TYPE,
    ProcessContext, TOKEN_SID_MAX_SIZE,
};

/// `EBPF_ATTACH_TYPE_PROCESS`.
pub const ATTACH_TYPE: GUID = EBPF_ATTACH_TYPE_PROCESS;
/// `BPF_ATTACH_TYPE_PROCESS`.
pub const BPF_ATTACH_TYPE: bpf_attach_type_t = BPF_ATTACH_TYPE_PROCESS;
/// Pool tag of the sample's allocations.
pub const TAG: PoolTag = PoolTag::new(*b"SPrc");

/// The hook's callbacks: the notify routine is registered while any program is attached.
#[derive(Debug, Default)]
pub struct SampleProcessHook;

impl HookExtension for SampleProcessHook {
    type Parameter = ();
    type ClientData = ();
    type Context = Notification;

    fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }

    fn on_first_attach(&self) -> Result<()> {
        process::add::<SampleProcess>()?;
        trace_message!(INFO, EXTENSION, "process notify routine registered");
        Ok(())
    }

    fn on_last_detach(&self) {
        if process::remove::<SampleProcess>().is_ok() {
            trace_message!(INFO, EXTENSION, "process notify routine removed");
        }
    }
}

const INFO: Level = Level::Informational;
const EXTENSION: u64 = keyword::EXTENSION;

/// The hook's static description.
pub const HOOK_CONFIG: HookConfig<()> =
    HookConfig::new(ATTACH_TYPE, PROGRAM_TYPE, BPF_ATTACH_TYPE, TAG);

/// Runs every attached program for one process event, in attach order. A program whose
/// invoke fails counts as returning 0 and the chain goes on. On creation the first program
/// that returns a failure status stops the chain, and that status is returned to deny the
/// creation; on delete results are ignored.
pub(crate) fn fire(
    hook: &HookProvider<SampleProcessHook>,
    context: &mut ProgramContext<Notification>,
) -> Option<i32> {
    let create = context.context.notify.public.operation == OPERATION_CREATE;
    #[expect(clippy::cast_possible_wrap, reason = "programs return an NTSTATUS")]
    let denies = |result: u32| create && (result as i32) < 0;
    let run = hook.invoke_until_failures_as_zero(&(), context, denies);
    #[expect(clippy::cast_possible_wrap, reason = "programs return an NTSTATUS")]
    run.ok()
        .filter(|run| denies(run.result))
        .map(|run| run.result as i32)
}

/// The running extension: its hook, which detaches every program when it drops (removing the
/// notify routine) before the SDK stops the program type.
pub struct SampleProcess {
    hook: HookProvider<SampleProcessHook>,
}

impl ExtensionDriver for SampleProcess {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &crate::TRACE_PROVIDER;
    const TAG: PoolTag = TAG;

    fn start(start: &Start<'_>) -> Result<Self> {
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(&program_type, HOOK_CONFIG, SampleProcessHook)?;
        Ok(SampleProcess { hook })
    }
}

driver_entry!(static DRIVER: SampleProcess);

/// The process notify routine: builds the context and runs the programs; a denial becomes
/// the creation's status.
impl ProcessNotify for SampleProcess {
    fn notify(event: &mut ProcessEvent<'_>) {
        let Some(driver) = DRIVER.get() else {
            return;
        };
        let (creating_process_id, creating_thread_id) = event.creating_ids();
        // A copy of the kernel's string (empty, with NULL command pointers, when there is
        // none); the buffer is the kernel's.
        let command_line = event
            .command_line_string()
            .map_or(CountedString::EMPTY, |s| (*s).into());
        let mut token_sid = [0; TOKEN_SID_MAX_SIZE];
        let token_sid_size = if event.is_creation() {
            event.token_user_sid(&mut token_sid).unwrap_or(0)
        } else {
            0
        };
        #[expect(clippy::cast_possible_truncation, reason = "at most 68 bytes")]
        let token_sid_size = token_sid_size as u32;
        let notify = NotifyContext {
            public: ProcessContext {
                command_start: DataPointer::NULL,
                command_end: DataPointer::NULL,
                process_id: event.process_id(),
                parent_process_id: event.parent_process_id(),
                creating_process_id,
                creating_thread_id,
                creation_time: event.creation_time().cast_unsigned(),
                exit_time: event.exit_time().unwrap_or(0).cast_unsigned(),
                process_exit_code: event.exit_status().unwrap_or(0).cast_unsigned(),
                operation: if event.is_creation() {
                    OPERATION_CREATE
                } else {
                    OPERATION_DELETE
                },
                token_sid_size,
                token_sid,
            },
            process: event.process(),
            create_info: event.create_info(),
            command_line,
            image_file_name: event
                .image_file_name()
                .map_or(CountedString::EMPTY, |s| (*s).into()),
            account_name: CountedString::EMPTY,
            account_domain: CountedString::EMPTY,
            account_lookup_done: 0,
            reserved: [0; 7],
        };
        // The account helpers resolve into the inline buffers, or pool buffers freed with
        // the context.
        let notification = Notification {
            notify,
            accounts: AccountNames::new(TAG),
        };
        // Programs' data is the kernel's command line.
        let mut context = ProgramContext::with_data(notification, event.command_line_data());
        context.context.sync_accounts();
        let denied = fire(&driver.hook, &mut context);
        if let Some(status) = denied {
            trace_message_status!(
                Level::Informational,
                keyword::PROCESS,
                "process creation denied",
                status
            );
            event.deny(status);
        }
    }
}
