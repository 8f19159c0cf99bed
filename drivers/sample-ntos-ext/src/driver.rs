//! The driver and its process notify routine.

use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::{ProcessEvent, ProcessNotify};
use ebpf_extension_common::trace::trace_message_status;

use crate::hook::{HOOK_CONFIG, SampleProcessHook, TAG, fire};
use crate::program::{
    NotifyContext, OPERATION_CREATE, OPERATION_EXIT, PROGRAM_DATA, ProcessContext,
};

/// The running extension. Fields drop in order: the hook first (detaching every program,
/// which removes the notify routine), then its program type.
pub struct SampleProcess {
    hook: HookProvider<SampleProcessHook>,
    _program_type: ProgramInfoProvider,
}

impl ExtensionDriver for SampleProcess {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &crate::TRACE_PROVIDER;
    const TAG: PoolTag = TAG;

    fn start(start: &Start<'_>) -> Result<Self> {
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(HOOK_CONFIG, SampleProcessHook::default())?;
        Ok(SampleProcess {
            hook,
            _program_type: program_type,
        })
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
        let command = event.command_line().unwrap_or(&[]).as_ptr_range();
        let (creating_process_id, creating_thread_id) = event.creating_ids();
        let context = NotifyContext {
            public: ProcessContext {
                command_start: command.start.cast_mut(),
                command_end: command.end.cast_mut(),
                process_id: event.process_id(),
                parent_process_id: event.parent_process_id(),
                creating_process_id,
                creating_thread_id,
                operation: if event.is_creation() {
                    OPERATION_CREATE
                } else {
                    OPERATION_EXIT
                },
                reserved: 0,
            },
            image: event.image_file_name().map_or(ptr::null(), ptr::from_ref),
        };
        if let Some(status) = fire(&driver.hook, context) {
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
