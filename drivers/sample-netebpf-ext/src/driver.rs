//! The driver: what it starts, and how its control device answers.

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::wdm::FILE_DEVICE_NETWORK;

use crate::hook::{HOOK_CONFIG, SampleNetHook, TAG};
use crate::program::PROGRAM_DATA;
use crate::protocol::{Profile, Run};

/// The running extension. Fields drop in order: the hook first, then its program type.
pub struct SampleNet {
    hook: HookProvider<SampleNetHook>,
    _program_type: ProgramInfoProvider,
}

impl ExtensionDriver for SampleNet {
    const TRACE_PROVIDER: &'static tracelogging::Provider = &crate::TRACE_PROVIDER;
    const TAG: PoolTag = TAG;
    const CONTROL_DEVICE: Option<ControlDeviceNames> = Some(ControlDeviceNames {
        name: utf16!("\\Device\\SampleNetEbpfExt"),
        link: utf16!("\\GLOBAL??\\SampleNetEbpfExt"),
        device_type: FILE_DEVICE_NETWORK,
    });

    fn start(start: &Start<'_>) -> Result<Self> {
        let program_type = start.program_type(&PROGRAM_DATA)?;
        let hook = start.hook(HOOK_CONFIG, SampleNetHook::default())?;
        Ok(SampleNet {
            hook,
            _program_type: program_type,
        })
    }

    fn device_control(&self, request: Request<'_>) -> Completion {
        match request.code() {
            Run::CODE => request.handle(|call| crate::control::run(&self.hook, call)),
            Profile::CODE => request.handle(|call| crate::control::profile(&self.hook, call)),
            _ => request.unknown(),
        }
    }
}

driver_entry!(static DRIVER: SampleNet);
