//! The `sample-ntos-ext` scenarios: programs in Rust ([`scenario`]) and the clang-built BPF
//! programs of `bpf/sample_process.c` ([`bpf_scenario`]), through the process hook and
//! through test runs (`context_create` → program → `context_destroy`).

use core::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use ebpf_ext_core_sim::bpf::{BpfError, BpfObject, BpfProgram, TestRun};
use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY};
use ebpf_ext_sys::ntdef::NTSTATUS;
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_SUCCESS};
use ebpf_ext_usersim::{Kernel, NewProcess, PROCESS_CLOCK_START, ProcessExit, ProcessIdentity};
use sample_ntos_ext::hook::ATTACH_TYPE;
use sample_ntos_ext::program::{
    HELPER_GET_ACCOUNT_DOMAIN, HELPER_GET_ACCOUNT_NAME, HELPER_GET_IMAGE_PATH, NOTIFY_CONTEXT_SIZE,
    PROGRAM_TYPE,
};
use sample_ntos_ext::{NotifyContext, OPERATION_CREATE, ProcessContext};

use crate::bpf::{
    BpfReport, expect_refused, fault_kind, hash_dump, map_of, per_cpu_total, u32_at, u64_at,
};
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

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn utf16_bytes(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The logging program: records each event and what the image-path and account-name helpers
/// return.
fn logger(
    image_helper: u64,
    account_helper: u64,
    log: Arc<Mutex<Vec<String>>>,
) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync + 'static {
    move |ctx: *mut c_void| {
        // SAFETY: the hook passes a process_md_t.
        let context = unsafe { *ctx.cast::<ProcessContext>() };
        let command = if context.command_start.is_null() {
            String::from("<none>")
        } else {
            let len =
                context.command_end.as_ptr() as usize - context.command_start.as_ptr() as usize;
            // SAFETY: the data range the context descriptor names is readable.
            utf16(unsafe { core::slice::from_raw_parts(context.command_start.as_ptr(), len) })
        };
        let mut small = [0u8; 4];
        let mut buffer = [0u8; 256];
        let call = |helper: u64, out: &mut [u8]| -> i64 {
            // SAFETY: the helpers' prototype: context, writable buffer, its size.
            let r = unsafe {
                call_helper(
                    helper,
                    [ctx as u64, out.as_mut_ptr() as u64, out.len() as u64, 0, 0],
                )
            };
            #[expect(clippy::cast_possible_truncation, reason = "helpers return an int32_t")]
            i64::from((r as u32).cast_signed())
        };
        let too_small = call(image_helper, &mut small);
        let len = call(image_helper, &mut buffer);
        let image = match usize::try_from(len) {
            Ok(0) | Err(_) => String::from("<none>"),
            Ok(n) => utf16(&buffer[..n]),
        };
        let account = call(account_helper, &mut buffer);
        let operation = if context.operation == OPERATION_CREATE {
            "create"
        } else {
            "delete"
        };
        log.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
            "{operation} pid {} parent {} creator {}:{} image {image:?} (4-byte buffer: {too_small}) account {account} sid {} command {command:?}",
            context.process_id,
            context.parent_process_id,
            context.creating_process_id,
            context.creating_thread_id,
            context.token_sid_size,
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

/// Runs the scenario with programs in Rust against `target`.
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
    let address = |id| info.helper(id).and_then(|h| h.address);
    let (Some(image_helper), Some(account_helper)) = (
        address(HELPER_GET_IMAGE_PATH),
        address(HELPER_GET_ACCOUNT_NAME),
    ) else {
        return Err("no helper address".into());
    };
    let before = kernel.process_notify_routines();
    expect!(
        before == 0,
        "notify routine registered before any program attached"
    );

    let log = Arc::new(Mutex::new(Vec::new()));
    let spec = || LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
    let logger_link = Link::attach(
        spec(),
        logger(image_helper, account_helper, Arc::clone(&log)),
    )
    .map_err(|e| format!("attach logger: {e}"))?;
    let after_first = kernel.process_notify_routines();
    expect!(
        after_first == 1,
        "notify routine not registered on the first attach"
    );
    // Denies any process whose command line asks for it.
    let denier = Link::attach(spec(), |ctx| {
        // SAFETY: the hook passes a process_md_t.
        let context = unsafe { *ctx.cast::<ProcessContext>() };
        if context.command_start.is_null() {
            return Ok(0);
        }
        let len = context.command_end.as_ptr() as usize - context.command_start.as_ptr() as usize;
        // SAFETY: the command line bytes are readable.
        let bytes = unsafe { core::slice::from_raw_parts(context.command_start.as_ptr(), len) };
        let deny = utf16(bytes).contains("--forbidden");
        Ok(if deny {
            STATUS_ACCESS_DENIED.cast_unsigned()
        } else {
            0
        })
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
            == "create pid 100 parent 4 creator 4:40 image \"\\\\??\\\\C:\\\\Windows\\\\p100.exe\" (4-byte buffer: -22) account 12 sid 12 command \"p100.exe readme.txt\"",
        "first event: {}",
        seen[0]
    );
    expect!(
        seen[2].ends_with("command \"<none>\"")
            && seen[3].starts_with("delete pid 100 parent 0")
            && seen[3].contains("image \"<none>\"")
            && seen[3].ends_with("command \"<none>\""),
        "no command line, and delete: {seen:?}"
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

/// The well-known SID S-1-5-18 (LocalSystem), as upstream's test-run test uses.
const LOCAL_SYSTEM_SID: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];

/// A test-run input as a user-mode caller writes it: `process_notify_context_t` (296 bytes:
/// the 64-byte header, `process_md_t` at 64, then the four `UNICODE_STRING`s at 224, 240,
/// 256 and 272 and `account_lookup_done` at 288, upstream's offsets written out here rather
/// than taken from the sample's structs) and the four strings packed in `data_in`;
/// `token_sid_size` is `sid`'s length.
fn test_run_input(command: &str, account: Option<(&str, &str)>, sid: &[u8]) -> (Vec<u8>, Vec<u8>) {
    test_run_input_sized(command, account, sid, u32::try_from(sid.len()).unwrap_or(0))
}

/// [`test_run_input`] with `token_sid_size` as the caller says, whatever `sid`'s length.
fn test_run_input_sized(
    command: &str,
    account: Option<(&str, &str)>,
    sid: &[u8],
    token_sid_size: u32,
) -> (Vec<u8>, Vec<u8>) {
    let mut ctx = vec![0u8; 296];
    let md = 64;
    let mut put = |at: usize, bytes: &[u8]| ctx[at..at + bytes.len()].copy_from_slice(bytes);
    put(md + 16, &1234u64.to_le_bytes());
    put(md + 24, &4u64.to_le_bytes());
    put(md + 32, &4u64.to_le_bytes());
    put(md + 40, &40u64.to_le_bytes());
    put(md + 48, &0x01DC_0000_0000_0000u64.to_le_bytes());
    put(md + 68, &0u32.to_le_bytes()); // PROCESS_OPERATION_CREATE
    put(md + 72, &token_sid_size.to_le_bytes());
    put(md + 76, sid);
    let (name, domain) = account.unwrap_or(("", ""));
    let strings = [command, "\\??\\C:\\t.exe", name, domain].map(utf16_bytes);
    for (i, s) in strings.iter().enumerate() {
        let len = u16::try_from(s.len()).unwrap_or(0);
        put(224 + 16 * i, &len.to_le_bytes());
        put(224 + 16 * i + 2, &(len + 2).to_le_bytes());
    }
    put(288, &[u8::from(account.is_some())]);
    (strings.concat(), ctx)
}

/// One test run of `program` (core-sim's `bpf_prog_test_run`): its result, `data_out` and
/// `ctx_out`.
fn test_run(
    client: &ProgramInfoClient,
    program: &BpfProgram,
    (data, ctx): &(Vec<u8>, Vec<u8>),
) -> Result<TestRun, Failure> {
    program
        .test_run(client, data, ctx, 1)
        .map_err(|e| e.to_string())
}

/// One ring-buffer record of `sample_process.c`, described.
fn describe_event(record: &[u8]) -> String {
    let prefix = (u32_at(record, 40) as usize).min(64);
    let account = (u32_at(record, 44) as usize).min(32);
    format!(
        "pid {} operation {} image path (4-byte buffer) {} image {:?} ({} bytes) account name {} {:?} domain {} command {} bytes sid {} bytes verdict {:#x}",
        u64_at(record, 0),
        u32_at(record, 8),
        u32_at(record, 12).cast_signed(),
        utf16(&record[48..48 + prefix]),
        u32_at(record, 16).cast_signed(),
        u32_at(record, 20).cast_signed(),
        utf16(&record[112..112 + account]),
        u32_at(record, 24).cast_signed(),
        u32_at(record, 28),
        u32_at(record, 36),
        u32_at(record, 32),
    )
}

/// The BPF scenario on `target`: a load-time refusal, the main program through creation and
/// deletion (deny and allow), every map, the three process helpers, test runs through
/// `context_create`/`context_destroy` (supplied account strings returned without a lookup,
/// the account looked up when none is supplied, a denial as the run's result, malformed
/// inputs refused), and a faulting program failing only its invocation.
///
/// # Errors
/// The first expectation that did not hold.
///
/// # Panics
/// If something leaked after unload (usersim's leak check).
#[expect(clippy::too_many_lines, reason = "one narrated scenario")]
pub fn bpf_scenario(
    kernel: &Kernel,
    target: Target<'_>,
    object: &BpfObject,
    say: Narrator<'_>,
) -> Result<BpfReport, Failure> {
    let mut report = BpfReport::default();
    let mut add = |line: String| report.lines.push(line);
    let crate::Opened {
        driver,
        info_client,
        info,
        ..
    } = crate::open(target, "SampleNtosEbpfExt", PROGRAM_TYPE, say)?;
    let overrun = expect_refused(object, "process/context_overrun", &info)?;
    expect!(
        matches!(overrun, BpfError::ContextAccess { offset: 144, .. }),
        "context overrun: {overrun}"
    );
    add(format!("refused: {overrun}"));
    let program = BpfProgram::load(object, "process", &info).map_err(|e| e.to_string())?;
    let link = program
        .attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE))
        .map_err(|e| e.to_string())?;
    let mut creations = Vec::new();
    for (id, command) in [
        (100, Some("p100.exe readme.txt")),
        (101, Some("p101.exe --forbidden")),
        (102, None),
    ] {
        let status = kernel.create_process(&process(id, command));
        creations.push((id, status));
        add(format!(
            "create {id} {command:?}: {}",
            crate::status::describe(status)
        ));
    }
    expect!(
        creations
            == [
                (100, STATUS_SUCCESS),
                (101, STATUS_ACCESS_DENIED),
                (102, STATUS_SUCCESS)
            ],
        "creations {creations:?}"
    );
    expect!(kernel.exit_process(100), "exit 100");
    let operations = map_of(&program, "operations")?;
    let operation = |i: u32| -> Result<u64, Failure> {
        Ok(u64_at(
            &operations
                .lookup(&i.to_le_bytes())
                .map_err(|e| e.to_string())?
                .unwrap_or_default(),
            0,
        ))
    };
    expect!(
        operation(0)? == 3 && operation(1)? == 1,
        "operations {:?} {:?}",
        operation(0),
        operation(1)
    );
    add(format!(
        "operations (array): {} creations, {} deletions",
        operation(0)?,
        operation(1)?
    ));
    let lengths = hash_dump(&map_of(&program, "image_lengths")?);
    expect!(
        lengths == "101=46 102=46",
        "image_lengths (100 removed on delete): {lengths}"
    );
    add(format!("image_lengths (hash): {lengths}"));
    let per_cpu = per_cpu_total(&map_of(&program, "per_cpu")?)?;
    expect!(per_cpu == 4, "per_cpu total {per_cpu}");
    add(format!("per_cpu (per-CPU array): total {per_cpu}"));
    let parents = hash_dump(&map_of(&program, "recent_parents")?);
    expect!(parents == "101=4 102=4", "recent_parents: {parents}");
    add(format!("recent_parents (LRU hash): {parents}"));
    let events = map_of(&program, "events")?;
    let records = events.drain_records();
    expect!(records.len() == 4, "{} ring records", records.len());
    for record in &records {
        add(format!("events (ring buffer): {}", describe_event(record)));
    }
    // Image path: -EINVAL for a short buffer, else its length; the account of the token's
    // SID (usersim's processes run as S-1-5-18: SYSTEM in NT AUTHORITY).
    let first = &records[0];
    expect!(
        u32_at(first, 12).cast_signed() == -22
            && u32_at(first, 16) == 46
            && u32_at(first, 20) == 12
            && utf16(&first[112..124]) == "SYSTEM"
            && u32_at(first, 24) == 24
            && u32_at(first, 36) == 12,
        "helpers on creation: {}",
        describe_event(first)
    );
    expect!(
        u32_at(&records[3], 20).cast_signed() == -2 && u32_at(&records[3], 36) == 0,
        "no SID, no account on delete: {}",
        describe_event(&records[3])
    );
    expect!(
        u32_at(&records[3], 16) == 0 && u32_at(&records[3], 28) == 0,
        "delete has no image or command: {}",
        describe_event(&records[3])
    );
    let printk = program.printk_lines();
    expect!(printk.len() == 4, "printk {printk:?}");
    report
        .lines
        .extend(printk.iter().map(|l| format!("printk: {l}")));
    let mut add = |line: String| report.lines.push(line);
    expect!(program.faults().is_empty(), "faults {:?}", program.faults());
    link.detach().map_err(|e| e.to_string())?;

    // Test runs: supplied account strings are returned without a lookup (strings no lookup
    // of the SID gives: S-1-5-18 is SYSTEM in NT AUTHORITY), the denial is the run's result,
    // the strings come back in data_out and the context without its pointers.
    let supplied = test_run_input(
        "t.exe --forbidden",
        Some(("ALICE", "CONTOSO")),
        &LOCAL_SYSTEM_SID,
    );
    let lookups = kernel.call_count("SecLookupAccountSid");
    let out = test_run(&info_client, &program, &supplied)?;
    let lookups = kernel.call_count("SecLookupAccountSid") - lookups;
    let result = out.return_value;
    let record = events.drain_records();
    expect!(
        result == STATUS_ACCESS_DENIED.cast_unsigned() && record.len() == 1,
        "test run: result {result:#x}, {} records",
        record.len()
    );
    let event = describe_event(&record[0]);
    expect!(
        u32_at(&record[0], 20) == 10
            && utf16(&record[0][112..122]) == "ALICE"
            && u32_at(&record[0], 24) == 14
            && u32_at(&record[0], 36) == 12
            && lookups == 0,
        "test run event: {event} ({lookups} lookups)"
    );
    expect!(
        out.data_out == supplied.0 && out.context_out.len() == NOTIFY_CONTEXT_SIZE,
        "test run output: {} data bytes, context {}",
        out.data_out.len(),
        out.context_out.len()
    );
    let pointers = [64, 72, 232, 248, 264, 280].map(|at| u64_at(&out.context_out, at));
    expect!(
        pointers == [0; 6] && u64_at(&out.context_out, 80) == 1234 && out.context_out[288] == 1,
        "context_out pointers {pointers:x?}"
    );
    add(format!(
        "test run (account supplied): result {}; {event}; data_out {} bytes as sent; context_out {} bytes, pointers cleared",
        crate::status::describe(result.cast_signed()),
        out.data_out.len(),
        out.context_out.len()
    ));
    // A lookup said done with one string missing is a failed one: -ENOENT from both account
    // helpers, and still no lookup.
    let half = test_run_input("t.exe --forbidden", Some(("ALICE", "")), &LOCAL_SYSTEM_SID);
    let lookups = kernel.call_count("SecLookupAccountSid");
    test_run(&info_client, &program, &half)?;
    let lookups = kernel.call_count("SecLookupAccountSid") - lookups;
    let record = events.drain_records();
    expect!(
        record.len() == 1
            && u32_at(&record[0], 20).cast_signed() == -2
            && u32_at(&record[0], 24).cast_signed() == -2
            && lookups == 0,
        "test run with half an account: {} ({lookups} lookups)",
        record
            .first()
            .map_or_else(String::new, |r| describe_event(r))
    );
    add(format!(
        "test run (account done, domain missing): {}",
        describe_event(&record[0])
    ));
    // Without supplied strings (lookup not done) the run looks the SID up, as ntosebpfext's
    // test runs do: into pool buffers (the caller's are empty), freed by context_destroy.
    let lookups = kernel.call_count("SecLookupAccountSid");
    // A caller's reply buffer with room for the looked-up strings (the core gives data_out
    // the rest of it), which are longer than the empty ones sent.
    let (data, ctx) = test_run_input("t.exe", None, &LOCAL_SYSTEM_SID);
    let looked_up = program
        .test_run_with_room(&info_client, &data, &ctx, 1, data.len() + 256)
        .map_err(|e| e.to_string())?;
    let lookups = kernel.call_count("SecLookupAccountSid") - lookups;
    let result = looked_up.return_value;
    let record = events.drain_records();
    expect!(
        result == 0
            && u32_at(&record[0], 20) == 12
            && utf16(&record[0][112..124]) == "SYSTEM"
            && u32_at(&record[0], 24) == 24
            && lookups == 2,
        "test run without account: {result:#x} {} ({lookups} lookups: the empty buffers, then the retry)",
        describe_event(&record[0])
    );
    let context_out = &looked_up.context_out;
    let account_lengths =
        [256, 258, 272, 274].map(|at| u16::from_le_bytes([context_out[at], context_out[at + 1]]));
    expect!(
        context_out[288] == 1
            && account_lengths[0] == 12
            && account_lengths[2] == 24
            && utf16(&looked_up.data_out) == "t.exe\\??\\C:\\t.exeSYSTEMNT AUTHORITY",
        "test run without account: context_out account strings {account_lengths:?}, lookup done {}, data_out {:?}",
        context_out[288],
        utf16(&looked_up.data_out)
    );
    add(format!(
        "test run (no account supplied): result {result}; {}; the account looked up ({lookups} lookups), back in context_out ({account_lengths:?}) and data_out ({} bytes)",
        describe_event(&record[0]),
        looked_up.data_out.len()
    ));
    // A program declaring the context as ntosebpfext's header does (bit-field operation,
    // helper by number) reads the same fields.
    let upstream =
        BpfProgram::load(object, "process/upstream_layout", &info).map_err(|e| e.to_string())?;
    let result = test_run(&info_client, &upstream, &supplied)?.return_value;
    expect!(
        result == 0x000C_0018,
        "upstream layout: {result:#x} (operation 0, 12-byte SID, 24-byte image path)"
    );
    add(format!(
        "test run of process/upstream_layout (ntosebpfext's declarations): {result:#010x}"
    ));
    let (data, ctx) = &supplied;
    let mut long = ctx.clone();
    long[224..226].copy_from_slice(&600u16.to_le_bytes());
    for (what, data_in, ctx_in) in [
        ("context one byte short", &data[..], &ctx[..295]),
        ("no context", &data[..], &[][..]),
        ("no data", &[][..], &ctx[..]),
        ("data one byte short", &data[..data.len() - 1], &ctx[..]),
        ("Length above MaximumLength", &data[..], &long[..]),
    ] {
        let refused = info_client.create_context(data_in, ctx_in).err();
        expect!(
            refused == Some(EBPF_INVALID_ARGUMENT),
            "test run with {what}: {refused:?}"
        );
        add(format!("test run with {what}: EBPF_INVALID_ARGUMENT"));
    }

    // What the notify routine read, as a BPF program records it: times, exit status, the
    // token SID and its account.
    let identity =
        BpfProgram::load(object, "process/identity", &info).map_err(|e| e.to_string())?;
    let identity_link = identity
        .attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE))
        .map_err(|e| e.to_string())?;
    let created = 0x01DC_0102_0304_0506_u64;
    let status = kernel.create_process_as(
        &process(110, Some("p110.exe")),
        &ProcessIdentity {
            create_time: Some(created.cast_signed()),
            ..ProcessIdentity::default()
        },
    );
    let exited = kernel.exit_process_with(
        110,
        &ProcessExit {
            exit_status: 0xC000_0005_u32.cast_signed(),
            exit_time: Some(0x01DC_0A0B_0C0D_0E0F),
        },
    );
    expect!(status == STATUS_SUCCESS && exited, "process 110");
    identity_link.detach().map_err(|e| e.to_string())?;
    let identities = map_of(&identity, "identities")?;
    let entry = |key: u64| -> Result<Vec<u8>, Failure> {
        identities
            .lookup(&key.to_le_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no identity for key {key}"))
    };
    let (create, delete) = (entry(220)?, entry(221)?);
    let describe = |v: &[u8]| {
        let sid_size = (u32_at(v, 20) as usize).min(68);
        let text = |at: usize, result: u32| {
            usize::try_from(result.cast_signed()).map_or_else(
                |_| format!("{}", result.cast_signed()),
                |n| utf16(&v[at..at + n.min(32)]),
            )
        };
        format!(
            "created {:#x} exited {:#x} code {:#x} sid {:?} account {}\\{}",
            u64_at(v, 0),
            u64_at(v, 8),
            u32_at(v, 16),
            &v[32..32 + sid_size],
            text(132, u32_at(v, 28)),
            text(100, u32_at(v, 24)),
        )
    };
    let (create, delete) = (describe(&create), describe(&delete));
    expect!(
        create
            == "created 0x1dc010203040506 exited 0x0 code 0x0 sid [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0] account NT AUTHORITY\\SYSTEM"
            && delete
                == "created 0x1dc010203040506 exited 0x1dc0a0b0c0d0e0f code 0xc0000005 sid [] account -2\\-2",
        "process/identity saw:\n create {create}\n delete {delete}"
    );
    add(format!("process/identity: create: {create}"));
    add(format!("process/identity: delete: {delete}"));

    let faulty =
        BpfProgram::load(object, "process/out_of_bounds", &info).map_err(|e| e.to_string())?;
    let faulty_link = faulty
        .attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE))
        .map_err(|e| e.to_string())?;
    let status = kernel.create_process(&process(103, Some("p103.exe")));
    let messages = faulty.faults();
    expect!(messages.len() == 1, "faults {messages:?}");
    add(format!(
        "process/out_of_bounds: create 103 {}: {}",
        crate::status::describe(status),
        fault_kind(&messages[0])
    ));
    let status = kernel.create_process(&process(104, None));
    expect!(
        status == STATUS_SUCCESS && faulty.faults().len() == 1,
        "no command line, no fault: {}",
        crate::status::describe(status)
    );
    faulty_link.detach().map_err(|e| e.to_string())?;
    for id in [102, 103, 104] {
        let _ = kernel.exit_process(id);
    }
    say(&format!(
        "BPF sample_process.o (clang): {} runs via link attach and test runs: deny/allow, 5 map types, the 3 process helpers; bad inputs, loads and faults refused",
        program.runs()
    ));
    // Each program's own program-information client goes with it.
    drop((program, upstream, identity, faulty));
    drop(info_client);
    driver.unload();
    kernel.assert_no_leaks();
    Ok(report)
}

/// A user account the identity scenario adds: `S-1-5-21-1-2-3-1001`, whose 50-character name
/// (100 bytes) does not fit the 80-byte inline buffer, so resolving it takes the pool retry.
pub const LONG_USER_SID: [u8; 28] = [
    1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xE9, 3, 0, 0,
];
/// Its name (`domain\name` is `CONTOSO\` this).
pub const LONG_USER_NAME: &str = "a-user-whose-account-name-is-fifty-characters-long";
/// A SID no account has: the lookup fails.
pub const UNKNOWN_SID: [u8; 28] = [
    1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 0xF4, 1, 0, 0,
];

/// Calls a `(ctx, buffer, size)` helper; returns its `int32_t` result.
fn call_string_helper(helper: u64, ctx: *mut c_void, out: &mut [u8]) -> i64 {
    // SAFETY: the process helpers' prototype: context, writable buffer, its size.
    let r = unsafe {
        call_helper(
            helper,
            [ctx as u64, out.as_mut_ptr() as u64, out.len() as u64, 0, 0],
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "helpers return an int32_t")]
    i64::from((r as u32).cast_signed())
}

/// The identity-reading program: what the notify routine put in the context (times, exit
/// status, token SID, the notify context's process and creation-info pointers and the
/// command line's `MaximumLength`) and what the account helpers return, twice (the second
/// call is served from the notification's cache).
fn identity_logger(
    name_helper: u64,
    domain_helper: u64,
    log: Arc<Mutex<Vec<String>>>,
) -> impl Fn(*mut c_void) -> Result<u32, i32> + Send + Sync + 'static {
    move |ctx: *mut c_void| {
        // SAFETY: the hook passes its NotifyContext (process_md_t first).
        let notify = unsafe { *ctx.cast::<NotifyContext>() };
        let context = notify.public;
        let mut name = [0u8; 128];
        let mut domain = [0u8; 64];
        let name_len = call_string_helper(name_helper, ctx, &mut name);
        let domain_len = call_string_helper(domain_helper, ctx, &mut domain);
        let again = call_string_helper(name_helper, ctx, &mut [0u8; 128]);
        let text = |bytes: &[u8], len: i64| {
            usize::try_from(len).map_or_else(|_| format!("{len}"), |n| utf16(&bytes[..n]))
        };
        let sid = &context.token_sid[..(context.token_sid_size as usize).min(68)];
        let operation = if context.operation == OPERATION_CREATE {
            "create"
        } else {
            "delete"
        };
        log.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
            "{operation} pid {} created {:#x} exited {:#x} code {:#x} sid {sid:?} account {}\\{} (again {again}) process {} create_info {} command {}/{}",
            context.process_id,
            context.creation_time,
            context.exit_time,
            context.process_exit_code,
            text(&domain, domain_len),
            text(&name, name_len),
            if notify.process.is_null() { "NULL" } else { "set" },
            if notify.create_info.is_null() { "NULL" } else { "set" },
            notify.command_line.length,
            notify.command_line.maximum_length,
        ));
        Ok(0)
    }
}

/// The identity scenario: what ntosebpfext reads at notify time (creation and exit times,
/// exit status, the token's user SID, the process and creation-info pointers, the command
/// line's `MaximumLength`), the account helpers resolving the SID lazily, once per
/// notification, through the inline buffers or the pool retry, failing for an unknown SID
/// and on delete, and the chain going on past a program whose invoke fails. Returns what the
/// programs saw, one line per event, then the creation statuses.
///
/// # Errors
/// The first expectation that did not hold.
///
/// # Panics
/// If something leaked after unload (usersim's leak check).
#[expect(clippy::too_many_lines, reason = "one narrated scenario")]
pub fn identity_scenario(
    kernel: &Kernel,
    target: Target<'_>,
    say: Narrator<'_>,
) -> Result<Vec<String>, Failure> {
    let crate::Opened {
        driver,
        info_client,
        info,
        ..
    } = crate::open(target, "SampleNtosEbpfExt", PROGRAM_TYPE, say)?;
    let address = |id| info.helper(id).and_then(|h| h.address);
    let (Some(name_helper), Some(domain_helper)) = (
        address(HELPER_GET_ACCOUNT_NAME),
        address(HELPER_GET_ACCOUNT_DOMAIN),
    ) else {
        return Err("no helper address".into());
    };
    kernel.add_account(&LONG_USER_SID, LONG_USER_NAME, "CONTOSO");
    let spec = || LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE);
    let failing = Link::attach(spec(), |_| Err(EBPF_NO_MEMORY))
        .map_err(|e| format!("attach failing program: {e}"))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let first = Link::attach(
        spec(),
        identity_logger(name_helper, domain_helper, Arc::clone(&log)),
    )
    .map_err(|e| format!("attach: {e}"))?;
    let second = Link::attach(
        spec(),
        identity_logger(name_helper, domain_helper, Arc::clone(&log)),
    )
    .map_err(|e| format!("attach: {e}"))?;
    let denier = Link::attach(spec(), |ctx| {
        // SAFETY: the hook passes a process_md_t.
        let context = unsafe { *ctx.cast::<ProcessContext>() };
        Ok(if context.process_id == 202 {
            STATUS_ACCESS_DENIED.cast_unsigned()
        } else {
            0
        })
    })
    .map_err(|e| format!("attach denier: {e}"))?;
    say("attached: a program whose invoke fails, two identity readers, a denier of pid 202");

    let lookups = kernel.call_count("SecLookupAccountSid");
    let mut creations = Vec::new();
    for (id, identity) in [
        (
            200,
            ProcessIdentity {
                create_time: Some(0x01DC_1234_5678_9ABC),
                ..ProcessIdentity::default()
            },
        ),
        (
            201,
            ProcessIdentity {
                create_time: None,
                user_sid: LONG_USER_SID.to_vec(),
            },
        ),
        (202, ProcessIdentity::default()),
        (
            203,
            ProcessIdentity {
                create_time: None,
                user_sid: UNKNOWN_SID.to_vec(),
            },
        ),
    ] {
        let status = kernel.create_process_as(&process(id, Some("p.exe arg")), &identity);
        say(&format!(
            "create process {id}: {}",
            crate::status::describe(status)
        ));
        creations.push((id, status));
    }
    let lookups = kernel.call_count("SecLookupAccountSid") - lookups;
    expect!(
        creations
            == [
                (200, STATUS_SUCCESS),
                (201, STATUS_SUCCESS),
                (202, STATUS_ACCESS_DENIED),
                (203, STATUS_SUCCESS)
            ],
        "creation statuses {creations:?} (the denier runs after the failing program)"
    );
    expect!(
        lookups == 5,
        "{lookups} account lookups for 4 creations with 12 account-helper calls each (one per notification, two for the pool retry)"
    );
    let exited = kernel.exit_process_with(
        200,
        &ProcessExit {
            exit_status: 0xC000_013A_u32.cast_signed(),
            exit_time: Some(0x01DC_2222_3333_4444),
        },
    );
    expect!(exited, "process 200 does not exist");
    say("exit process 200 (STATUS_CONTROL_C_EXIT)");
    expect!(
        failing.invocations() == 5 && denier.invocations() == 5,
        "the failing program ran {} times, the denier {}",
        failing.invocations(),
        denier.invocations()
    );
    for link in [failing, first, second, denier] {
        link.detach().map_err(|e| format!("detach: {e}"))?;
    }
    for id in [201, 203] {
        expect!(kernel.exit_process(id), "exit {id}");
    }
    let seen = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for line in &seen {
        say(&format!("  program saw: {line}"));
    }
    expect!(seen.len() == 10, "{} events seen: {seen:?}", seen.len());
    let system =
        "sid [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0] account NT AUTHORITY\\SYSTEM (again 12)";
    let expected_200 = format!(
        "create pid 200 created 0x1dc123456789abc exited 0x0 code 0x0 {system} process set create_info set command 18/20"
    );
    expect!(
        seen[0] == expected_200 && seen[1] == expected_200,
        "pid 200, both programs: {:?}",
        &seen[..2]
    );
    let created_201 = PROCESS_CLOCK_START + 2 * 10_000_000;
    expect!(
        seen[2]
            == format!(
                "create pid 201 created {created_201:#x} exited 0x0 code 0x0 sid {:?} account CONTOSO\\{LONG_USER_NAME} (again 100) process set create_info set command 18/20",
                &LONG_USER_SID[..]
            )
            && seen[3] == seen[2],
        "pid 201 (pool retry): {:?}",
        &seen[2..4]
    );
    expect!(
        seen[4].starts_with("create pid 202") && seen[4].contains(system),
        "pid 202: {}",
        seen[4]
    );
    expect!(
        seen[6].starts_with("create pid 203") && seen[6].contains("account -2\\-2 (again -2)"),
        "unknown SID: {}",
        seen[6]
    );
    expect!(
        seen[8]
            == "delete pid 200 created 0x1dc123456789abc exited 0x1dc222233334444 code 0xc000013a sid [] account -2\\-2 (again -2) process set create_info NULL command 0/0",
        "delete: {}",
        seen[8]
    );
    expect!(
        kernel.primary_token_references() == 0,
        "primary token references left"
    );
    drop(info_client);
    driver.unload();
    kernel.assert_no_leaks();
    say("unloaded; no leaks");
    let mut report = seen;
    report.extend(
        creations
            .iter()
            .map(|(id, status)| format!("creation {id}: {}", crate::status::describe(*status))),
    );
    Ok(report)
}

/// The account helpers of one program for one creation by a process running as `sid`, for
/// fault sweeps: loads `target`, attaches a program that calls both helpers on creation,
/// creates and exits one process, unloads. Returns what the helpers returned at the creation
/// (`None` if a fault stopped the scenario before the program ran).
///
/// # Panics
/// If the creation is not allowed (a fault must never deny a process).
pub fn account_helpers_once(kernel: &Kernel, target: Target<'_>, sid: &[u8]) -> Option<(i64, i64)> {
    // A failed `open` has unloaded what it loaded.
    let crate::Opened {
        driver,
        info_client,
        info,
        ..
    } = crate::open(target, "SampleNtosEbpfExt", PROGRAM_TYPE, &mut |_| {}).ok()?;
    kernel.add_account(&LONG_USER_SID, LONG_USER_NAME, "CONTOSO");
    let address = |id| info.helper(id).and_then(|h| h.address);
    let helpers = address(HELPER_GET_ACCOUNT_NAME).zip(address(HELPER_GET_ACCOUNT_DOMAIN));
    let seen = Arc::new(Mutex::new(None));
    let link = helpers.and_then(|(name, domain)| {
        let seen = Arc::clone(&seen);
        Link::attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE), move |ctx| {
            // SAFETY: the hook passes a process_md_t.
            if unsafe { (*ctx.cast::<ProcessContext>()).operation } != OPERATION_CREATE {
                return Ok(0);
            }
            let mut buffer = [0u8; 128];
            let results = (
                call_string_helper(name, ctx, &mut buffer),
                call_string_helper(domain, ctx, &mut buffer),
            );
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(results);
            Ok(0)
        })
        .ok()
    });
    if link.is_some() {
        let identity = ProcessIdentity {
            create_time: None,
            user_sid: sid.to_vec(),
        };
        let status = kernel.create_process_as(&process(300, None), &identity);
        assert_eq!(status, STATUS_SUCCESS, "a fault denied a creation");
        assert!(kernel.exit_process(300));
    }
    drop(link);
    drop(info_client);
    driver.unload();
    *seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one test run by hand saw ([`account_test_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTestRun {
    /// The account-name helper's result and the text it wrote.
    pub name: (i64, String),
    /// The account-domain helper's, likewise.
    pub domain: (i64, String),
    /// `data_out` (room for every string).
    pub data_out: String,
    /// `ctx_out`'s account strings: `Length`, `MaximumLength` of the name and the domain, and
    /// `account_lookup_done`.
    pub context_out: [u16; 5],
}

/// A test run by hand of a context running as `sid` with no account supplied (lookup not
/// done): `context_create` as `bpf_prog_test_run` calls it, both account helpers, then
/// `context_destroy` with room for everything; loads `target` and unloads it. `None` if a
/// fault stopped it before the helpers ran.
#[must_use]
pub fn account_test_run(kernel: &Kernel, target: Target<'_>, sid: &[u8]) -> Option<AccountTestRun> {
    account_test_run_sized(kernel, target, sid, u32::try_from(sid.len()).unwrap_or(0))
}

/// [`account_test_run`] with the context's `token_sid_size` as the caller says, whatever
/// `sid`'s length.
#[must_use]
pub fn account_test_run_sized(
    kernel: &Kernel,
    target: Target<'_>,
    sid: &[u8],
    token_sid_size: u32,
) -> Option<AccountTestRun> {
    let driver = crate::LoadedDriver::load(target, "SampleNtosEbpfExt").ok()?;
    let Ok(client) = ProgramInfoClient::attach(PROGRAM_TYPE) else {
        driver.unload();
        return None;
    };
    kernel.add_account(&LONG_USER_SID, LONG_USER_NAME, "CONTOSO");
    let info = client.info();
    let address = |id| info.helper(id).and_then(|h| h.address);
    let seen = address(HELPER_GET_ACCOUNT_NAME)
        .zip(address(HELPER_GET_ACCOUNT_DOMAIN))
        .and_then(|(name_helper, domain_helper)| {
            let (data, ctx) = test_run_input_sized("t.exe", None, sid, token_sid_size);
            let context = client.create_context(&data, &ctx).ok()?;
            let call = |helper| {
                let mut buffer = [0u8; 128];
                let len = call_string_helper(helper, context.as_ptr(), &mut buffer);
                let text =
                    usize::try_from(len).map_or_else(|_| String::new(), |n| utf16(&buffer[..n]));
                (len, text)
            };
            let (name, domain) = (call(name_helper), call(domain_helper));
            let out = context.destroy(1024, NOTIFY_CONTEXT_SIZE).ok()?;
            let at = |offset: usize| {
                out.context
                    .get(offset..offset + 2)
                    .map_or(u16::MAX, |b| u16::from_le_bytes([b[0], b[1]]))
            };
            Some(AccountTestRun {
                name,
                domain,
                data_out: utf16(&out.data),
                context_out: [
                    at(256),
                    at(258),
                    at(272),
                    at(274),
                    out.context.get(288).copied().map_or(u16::MAX, u16::from),
                ],
            })
        });
    drop(client);
    driver.unload();
    seen
}
