//! The `sample-ntos-ext` scenario.

use core::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_ext_usersim::{Kernel, NewProcess};
use sample_ntos_ext::hook::ATTACH_TYPE;
use sample_ntos_ext::program::{HELPER_GET_IMAGE_PATH, PROGRAM_TYPE};
use sample_ntos_ext::{OPERATION_CREATE, ProcessContext};

use crate::{Failure, Narrator, Target, call_helper, expect, trace_lines};

/// The sample's ETW provider name.
pub const PROVIDER: &str = "SampleNtosEbpfExtProvider";

/// What the scenario observed; equal reports mean equal behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtosReport {
    /// Program type name.
    pub program_type: String,
    /// Helper names.
    pub helpers: Vec<String>,
    /// Notify routines registered: before any attach, after the first, after the last detach.
    pub notify_routines: [usize; 3],
    /// What the logging program saw, one line per event.
    pub seen: Vec<String>,
    /// Creation statuses, per process id.
    pub creations: Vec<(usize, NTSTATUS)>,
    /// The driver's trace events.
    pub traces: Vec<String>,
}

fn utf16_bytes_to_string(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The logging program: records each event and the image path the helper returns.
fn logger(
    helper: u64,
    log: Arc<Mutex<Vec<String>>>,
) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync + 'static {
    move |ctx: *mut c_void| {
        // SAFETY: the hook passes a ProcessContext.
        let context = unsafe { *ctx.cast::<ProcessContext>() };
        let command = if context.command_start.is_null() {
            String::from("<none>")
        } else {
            let len = context.command_end as usize - context.command_start as usize;
            // SAFETY: the data range the context descriptor names is readable.
            utf16_bytes_to_string(unsafe {
                core::slice::from_raw_parts(context.command_start, len)
            })
        };
        let mut small = [0u8; 4];
        let mut buffer = [0u8; 256];
        // SAFETY: the helper's prototype: context, writable buffer, its size.
        let too_small =
            unsafe { call_helper(helper, [ctx as u64, small.as_mut_ptr() as u64, 4, 0, 0]) };
        // SAFETY: as above.
        let len =
            unsafe { call_helper(helper, [ctx as u64, buffer.as_mut_ptr() as u64, 256, 0, 0]) };
        let image = match len {
            0 => String::from("<none>"),
            u64::MAX => String::from("<too long>"),
            n => utf16_bytes_to_string(&buffer[..usize::try_from(n).unwrap_or(0)]),
        };
        let operation = if context.operation == OPERATION_CREATE {
            "create"
        } else {
            "exit"
        };
        #[expect(clippy::cast_possible_wrap, reason = "-1 is the helper's 'too small'")]
        let too_small = too_small as i64;
        log.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
            "{operation} pid {} parent {} creator {}:{} image {image:?} (4-byte buffer: {too_small}) command {command:?}",
            context.process_id,
            context.parent_process_id,
            context.creating_process_id,
            context.creating_thread_id,
        ));
        Ok(0)
    }
}

fn process(id: usize, command_line: Option<&str>) -> NewProcess {
    NewProcess {
        process_id: id,
        parent_process_id: 4,
        creating_process_id: 4,
        creating_thread_id: 40,
        image_file_name: format!("\\??\\C:\\Windows\\p{id}.exe"),
        command_line: command_line.map(str::to_owned),
    }
}

/// Runs the scenario against `target`.
///
/// # Errors
/// The first expectation that did not hold.
///
/// # Panics
/// If something leaked after unload (usersim's leak check).
#[expect(clippy::too_many_lines, reason = "one narrated scenario")]
pub fn scenario(
    kernel: &Kernel,
    target: Target<'_>,
    say: Narrator<'_>,
) -> Result<NtosReport, Failure> {
    let crate::Opened {
        driver,
        info_client,
        info,
        helpers,
    } = crate::open(target, "SampleNtosEbpfExt", PROGRAM_TYPE, say)?;
    let helper = info
        .helper(HELPER_GET_IMAGE_PATH)
        .and_then(|h| h.address)
        .ok_or("no image-path helper address")?;
    let before = kernel.process_notify_routines();
    expect!(
        before == 0,
        "notify routine registered before any program attached"
    );

    let log = Arc::new(Mutex::new(Vec::new()));
    let spec = || LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
    let logger_link = Link::attach(spec(), logger(helper, Arc::clone(&log)))
        .map_err(|e| format!("attach logger: {e}"))?;
    let after_first = kernel.process_notify_routines();
    expect!(
        after_first == 1,
        "notify routine not registered on the first attach"
    );
    // Denies any process whose command line asks for it.
    let denier = Link::attach(spec(), |ctx| {
        // SAFETY: the hook passes a ProcessContext.
        let context = unsafe { *ctx.cast::<ProcessContext>() };
        if context.command_start.is_null() {
            return Ok(0);
        }
        let len = context.command_end as usize - context.command_start as usize;
        // SAFETY: the command line bytes are readable.
        let bytes = unsafe { core::slice::from_raw_parts(context.command_start, len) };
        let deny = utf16_bytes_to_string(bytes).contains("--forbidden");
        #[expect(
            clippy::cast_sign_loss,
            reason = "an NTSTATUS returned as the program's u32"
        )]
        Ok(if deny { STATUS_ACCESS_DENIED as u32 } else { 0 })
    })
    .map_err(|e| format!("attach denier: {e}"))?;
    say(
        "attached: a logging program and a denying program (notify routine registered on the first attach)",
    );

    let mut creations = Vec::new();
    for (id, command) in [
        (100, Some("p100.exe readme.txt")),
        (101, Some("p101.exe --forbidden")),
        (102, None),
    ] {
        let status = kernel.create_process(&process(id, command));
        say(&format!(
            "create process {id} ({command:?}): {}",
            crate::status::describe(status)
        ));
        creations.push((id, status));
    }
    expect!(
        creations
            == [
                (100, STATUS_SUCCESS),
                (101, STATUS_ACCESS_DENIED),
                (102, STATUS_SUCCESS)
            ],
        "creation statuses {creations:?}"
    );
    expect!(kernel.exit_process(100), "process 100 does not exist");
    say("exit process 100");
    expect!(
        denier.invocations() == 4,
        "the denier ran {} times",
        denier.invocations()
    );

    logger_link.detach().map_err(|e| format!("detach: {e}"))?;
    expect!(
        kernel.process_notify_routines() == 1,
        "routine removed while a program is attached"
    );
    denier.detach().map_err(|e| format!("detach: {e}"))?;
    let after_last = kernel.process_notify_routines();
    expect!(
        after_last == 0,
        "notify routine not removed on the last detach"
    );
    say("detached both programs (notify routine removed on the last detach)");
    let status = kernel.create_process(&process(103, Some("p103.exe")));
    creations.push((103, status));
    expect!(
        status == STATUS_SUCCESS,
        "creation with no program: {}",
        crate::status::describe(status)
    );
    expect!(
        kernel.exit_process(102) && kernel.exit_process(103),
        "exits"
    );

    let seen = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for line in &seen {
        say(&format!("  program saw: {line}"));
    }
    expect!(seen.len() == 4, "the logger saw {} events", seen.len());
    expect!(
        seen[0]
            == "create pid 100 parent 4 creator 4:40 image \"\\\\??\\\\C:\\\\Windows\\\\p100.exe\" (4-byte buffer: -1) command \"p100.exe readme.txt\"",
        "first event: {}",
        seen[0]
    );
    expect!(
        seen[3].starts_with("exit pid 100 parent 0"),
        "exit event: {}",
        seen[3]
    );
    drop(info_client);
    driver.unload();
    kernel.assert_no_leaks();
    say("unloaded; no leaks");
    Ok(NtosReport {
        program_type: info.name.clone(),
        helpers,
        notify_routines: [before, after_first, after_last],
        seen,
        creations,
        traces: trace_lines(kernel, PROVIDER),
    })
}
