//! `sample-ext`, the port of eBPF for Windows' sample extension: its header description, its
//! generated headers, and its BPF scenario (`drivers/sample-ext/bpf/sample_ext.c`) through
//! the control device (run, batch run) and through test runs (`context_create` → program →
//! `context_destroy`), reproducing what upstream's tests document: the find/replace helpers
//! rewrite "rainy" to "sunny" in the data, `bpf_get_current_pid_tgid` is 9999, a batch of
//! four events gives four results, the implicit-context helpers give 1 and 12.

use std::path::PathBuf;
use std::sync::Arc;

use ebpf_ext_core_sim::bpf::{BpfError, BpfObject, BpfProgram, GENERAL_HELPERS, TestRun};
use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
use ebpf_ext_map::{Input, ObjectMap, Objects};
use ebpf_ext_sys::ebpf_result::ebpf_result_t;
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_usersim::{Caller, FileHandle, Kernel};
use sample_ext::SampleContext;
use sample_ext::btf::BTF_MODULE;
use sample_ext::hook::{ATTACH_TYPE, BPF_ATTACH_TYPE};
use sample_ext::maps::SampleMap;
use sample_ext::program::{PID_TGID_VALUE, PROGRAM_TYPE};
use sample_ext::protocol::{
    IOCTL_SAMPLE_EBPF_EXT_CTL_RUN, IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH, REQUEST_VERSION,
    RunBatchReply, RunBatchRequest, RunReply, RunRequest, WIN32_PATH,
};

use crate::bpf::{
    BpfReport, ContextField, GENERAL_HEADER, Sample, bpf_dir, btf_declarations, fault_kind,
    program_header, read_btf, read_info, with_loaded,
};
use crate::{Failure, Narrator, Target, expect};

/// The service name of `sample-ext`.
pub const SERVICE: &str = "SampleEbpfExt";

/// `sample-ext` as the header generator sees it.
#[must_use]
pub fn sample() -> Sample {
    use core::mem::offset_of;
    let field = |declaration, name, offset| ContextField {
        declaration,
        name,
        offset,
    };
    Sample {
        dir: "sample-ext",
        service: SERVICE,
        driver_entry: sample_ext::driver_entry,
        program_type: PROGRAM_TYPE,
        section: sample_ext::program::SECTION,
        attach_type: ATTACH_TYPE,
        bpf_attach_type: BPF_ATTACH_TYPE,
        fields: vec![
            field(
                "uint8_t* data_start",
                "data_start",
                offset_of!(SampleContext, data_start),
            ),
            field(
                "uint8_t* data_end",
                "data_end",
                offset_of!(SampleContext, data_end),
            ),
            field(
                "uint32_t uint32_data",
                "uint32_data",
                offset_of!(SampleContext, uint32_data),
            ),
            field(
                "uint16_t uint16_data",
                "uint16_data",
                offset_of!(SampleContext, uint16_data),
            ),
            field(
                "uint32_t helper_data_1",
                "helper_data_1",
                offset_of!(SampleContext, helper_data_1),
            ),
            field(
                "uint32_t helper_data_2",
                "helper_data_2",
                offset_of!(SampleContext, helper_data_2),
            ),
        ],
        constants: vec![
            ("SAMPLE_PID_TGID_VALUE", PID_TGID_VALUE.to_string()),
            (
                "BPF_MAP_TYPE_SAMPLE_HASH_MAP",
                sample_ext::maps::MAP_TYPE.to_string(),
            ),
        ],
    }
}

/// The headers of `sample-ext` as they should be. Its global-helper overrides that the
/// general header already declares (by the same id) are left out of the program-type header,
/// which ends with the declarations of its BTF-resolved functions.
///
/// # Errors
/// As [`with_loaded`], [`read_info`], [`read_btf`] and [`program_header`].
pub fn headers() -> Result<Vec<(PathBuf, String)>, Failure> {
    let sample = sample();
    // One load reads both what the program type and the BTF module publish.
    let (mut info, btf) = with_loaded(&sample, || {
        Ok((read_info(&sample)?, read_btf(&sample, BTF_MODULE)?))
    })?;
    info.global_helpers
        .retain(|h| GENERAL_HELPERS.iter().all(|g| g.id != h.id));
    let include = bpf_dir(&sample)?.join("include");
    let btf = btf_declarations(BTF_MODULE, &btf);
    Ok(vec![
        (include.join(GENERAL_HEADER), crate::bpf::general_header()),
        (
            include.join(format!("{}.h", info.name)),
            program_header(&sample, &info)? + &btf,
        ),
    ])
}

/// A 32-byte `ctx_in` with these values (data pointers zero).
#[must_use]
pub fn context_in(uint32_data: u32, uint16_data: u16, helper_data: [u32; 2]) -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    bytes[16..20].copy_from_slice(&uint32_data.to_le_bytes());
    bytes[20..22].copy_from_slice(&uint16_data.to_le_bytes());
    bytes[24..28].copy_from_slice(&helper_data[0].to_le_bytes());
    bytes[28..32].copy_from_slice(&helper_data[1].to_le_bytes());
    bytes
}

fn request(header: &[u8], data: &[u8]) -> Vec<u8> {
    [header, data].concat()
}

/// Runs the hook once through the control device: status, the program's result, the data
/// as the program left it.
fn run(
    kernel: &Kernel,
    handle: &FileHandle,
    parameter: u32,
    data: &[u8],
) -> Result<(NTSTATUS, u32, Vec<u8>), Failure> {
    let header = RunRequest {
        version: REQUEST_VERSION,
        attach_parameter: parameter,
        uint32_data: 5,
        data_len: u32::try_from(data.len()).map_err(|e| e.to_string())?,
    };
    let input = request(&header.to_bytes(), data);
    let result = kernel.device_io_control(
        handle,
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN,
        &input,
        RunReply::SIZE + data.len(),
    );
    if result.status != STATUS_SUCCESS {
        return Ok((result.status, 0, Vec::new()));
    }
    let reply = RunReply::from_bytes(&result.output).ok_or("run reply too short")?;
    Ok((
        result.status,
        reply.result,
        result.output[RunReply::SIZE..].to_vec(),
    ))
}

/// Runs the hook `count` times in one batch: the reply and the data.
fn run_batch(
    kernel: &Kernel,
    handle: &FileHandle,
    count: u32,
    data: &[u8],
) -> Result<(NTSTATUS, RunBatchReply, Vec<u8>), Failure> {
    let header = RunBatchRequest {
        version: REQUEST_VERSION,
        attach_parameter: 0,
        count,
        data_len: u32::try_from(data.len()).map_err(|e| e.to_string())?,
    };
    let input = request(&header.to_bytes(), data);
    let result = kernel.device_io_control(
        handle,
        IOCTL_SAMPLE_EBPF_EXT_CTL_RUN_BATCH,
        &input,
        RunBatchReply::SIZE + data.len(),
    );
    if result.status != STATUS_SUCCESS {
        return Ok((result.status, RunBatchReply::default(), Vec::new()));
    }
    let reply = RunBatchReply::from_bytes(&result.output).ok_or("batch reply too short")?;
    Ok((
        result.status,
        reply,
        result.output[RunBatchReply::SIZE..].to_vec(),
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn word(s: &str) -> Vec<u8> {
    let mut value = s.as_bytes().to_vec();
    value.resize(32, 0);
    value
}

fn test_run(
    program: &BpfProgram,
    client: &ProgramInfoClient,
    data: &[u8],
    context: &[u8],
) -> Result<TestRun, Failure> {
    program
        .test_run(client, data, context, 1)
        .map_err(|e| format!("test run of {}: {e}", program.section()))
}

/// The custom map type of `decoy_map` in `sample_ext_maps.c`.
const DECOY_MAP_TYPE: u32 = 0x1001;

/// Another provider's custom map type: the sample's map under another type number (its
/// callbacks are `SampleMap`'s), so its context is laid out as the sample map's and the core
/// keeps it at the same offset; a program may hand it to `sample_ext_helper_map_get_value`.
#[derive(Debug)]
#[repr(transparent)]
struct Decoy(SampleMap);

impl ObjectMap for Decoy {
    const MAP_TYPE: u32 = DECOY_MAP_TYPE;
    const TAG: ebpf_ext_pool::PoolTag = ebpf_ext_pool::PoolTag::new(*b"Dcoy");
    type Object = <SampleMap as ObjectMap>::Object;

    fn create(key: u32, value: u32, entries: u32) -> Result<Self, ebpf_result_t> {
        SampleMap::create(key, value, entries).map(Decoy)
    }

    fn associate(&self, program_type: &GUID) -> Result<(), ebpf_result_t> {
        self.0.associate(program_type)
    }

    fn make(&self, k: Input<'_>, v: Input<'_>, f: u32) -> Result<Self::Object, ebpf_result_t> {
        self.0.make(k, v, f)
    }

    fn read(&self, object: &Self::Object, out: &mut [u8], f: u32) -> Result<(), ebpf_result_t> {
        self.0.read(object, out, f)
    }
}

/// The custom map: the test writes through the provider (user-mode update), the program
/// reads through `sample_ext_helper_map_get_value` (upstream: 1234 comes back), and every
/// other way in fails; a key the map lacks gives -1. A map of another custom type passed to
/// the same helper gives -1 too: the provider does not read another provider's context as
/// its own.
fn custom_map(
    object: &BpfObject,
    client: &ProgramInfoClient,
    info: &std::sync::Arc<ebpf_ext_core_sim::ProgramInfo>,
) -> Result<String, Failure> {
    // Declared first, so every program and map of its type is dropped before it (the core's
    // deregistration would wait for them; core-sim's does not).
    let _decoy = ebpf_ext_map::MapProvider::<Objects<Decoy>>::register(
        GUID::from_u128(0x0decc0ee_0000_4000_8000_000000001001),
        ebpf_ext_pool::PoolTag::new(*b"Dcoy"),
    )
    .map_err(|e| format!("the decoy map provider: {e}"))?;
    // The provider accepts only programs of type sample (upstream: custom_map_invalid.c, a
    // cgroup program with the map, fails to load).
    let mut other = (**info).clone();
    other.program_type =
        ebpf_ext_sys::ntdef::GUID::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
    let refused = BpfProgram::load(object, "sample_ext/custom_map", &std::sync::Arc::new(other))
        .err()
        .ok_or("a program of another type loaded with the sample map")?;
    expect!(
        matches!(refused, BpfError::Map(_)),
        "another type: {refused}"
    );
    let program =
        BpfProgram::load(object, "sample_ext/custom_map", info).map_err(|e| e.to_string())?;
    let map = program.map("sample_map").ok_or("no sample_map")?;
    map.update(&2u32.to_le_bytes(), &1234u32.to_le_bytes(), 0)
        .map_err(|e| format!("user-mode update of the custom map: {e}"))?;
    let read_back = map
        .lookup(&2u32.to_le_bytes())
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let found = test_run(&program, client, b"", &context_in(2, 0, [0, 0]))?;
    let results = program.map("custom_results").ok_or("no custom_results")?;
    let observed: Vec<i64> = [0u32, 1, 2, 3, 4, 5, 7]
        .into_iter()
        .map(|i| {
            results
                .lookup(&i.to_le_bytes())
                .ok()
                .flatten()
                .map_or(0, |v| u64_at(&v, 0).cast_signed())
        })
        .collect();
    let missing = test_run(&program, client, b"", &context_in(3, 0, [0, 0]))?;
    let not_supported = -i64::from(ebpf_ext_sys::ebpf_result::EBPF_OPERATION_NOT_SUPPORTED);
    expect!(
        read_back == 1234u32.to_le_bytes()
            && found.return_value == 1234
            && observed == [0, 1234, 1, not_supported, not_supported, 1, not_supported]
            && missing.return_value.cast_signed() == -1
            && map.keys() == [2u32.to_le_bytes().to_vec()],
        "custom map: read back {read_back:?}, run {} / {}, observed {observed:?}; faults {:?}",
        found.return_value,
        missing.return_value,
        program.faults()
    );
    let decoy_program =
        BpfProgram::load(object, "sample_ext/custom_map_decoy", info).map_err(|e| e.to_string())?;
    let decoy = decoy_program.map("decoy_map").ok_or("no decoy_map")?;
    decoy
        .update(&2u32.to_le_bytes(), &5678u32.to_le_bytes(), 0)
        .map_err(|e| format!("user-mode update of the decoy map: {e}"))?;
    let other_type = test_run(&decoy_program, client, b"", &context_in(2, 0, [0, 0]))?;
    let left = decoy_program
        .map("custom_results")
        .and_then(|m| m.lookup(&6u32.to_le_bytes()).ok().flatten())
        .map_or(0, |v| u64_at(&v, 0));
    expect!(
        other_type.return_value.cast_signed() == -1 && left == 0xdead,
        "the decoy map through map_get_value: {} with the output {left:#x}; faults {:?}",
        other_type.return_value.cast_signed(),
        decoy_program.faults()
    );
    // As upstream, each value is an object in the core's epoch memory, freed with its map.
    let held = ebpf_ext_core_sim::epoch_memory();
    drop((map, results, decoy, program, decoy_program));
    let freed = ebpf_ext_core_sim::epoch_memory();
    expect!(
        held.live() == 2 && freed.live() == 0 && freed.pending() == 0,
        "epoch objects: {held:?} with both maps, {freed:?} after"
    );
    Ok(format!(
        "custom map: refused for another program type; user update 1234 read back by the provider, by the program through map_get_value {}, core helpers {observed:?}, absent key {}, another custom type's map {}",
        found.return_value,
        missing.return_value.cast_signed(),
        other_type.return_value.cast_signed()
    ))
}

/// The sample-ext BPF scenario on `target`: `object` is `sample_ext.c`, `maps_object`
/// `sample_ext_maps.c`.
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
    object: &BpfObject,
    maps_object: &BpfObject,
    say: Narrator<'_>,
) -> Result<BpfReport, Failure> {
    let mut report = BpfReport::default();
    let mut add = |line: String| report.lines.push(line);
    let crate::Opened {
        driver,
        info_client,
        info,
        ..
    } = crate::open(target, SERVICE, PROGRAM_TYPE, say)?;
    let rewrite = BpfProgram::load(object, "sample_ext", &info).map_err(|e| e.to_string())?;
    let test_map = rewrite.map("test_map").ok_or("no test_map")?;
    for (key, value) in [(0u32, "rainy"), (1, "sunny")] {
        test_map
            .update(&key.to_le_bytes(), &word(value), 0)
            .map_err(|e| e.to_string())?;
    }
    let link = attach(&rewrite)?;
    let handle = kernel
        .open(WIN32_PATH, Caller::Administrator)
        .map_err(|s| format!("open: {}", crate::status::describe(s)))?;

    let city = b"Seattle is a rainy city";
    let (status, result, data) = run(kernel, &handle, 0, city)?;
    expect!(
        status == STATUS_SUCCESS && result == 42 && data == b"Seattle is a sunny city",
        "run: {} result {result} data {:?}; faults {:?}",
        crate::status::describe(status),
        text(&data),
        rewrite.faults()
    );
    add(format!("run: result {result}, data {:?}", text(&data)));
    let (status, result, data) = run(kernel, &handle, 7, b"no such word here")?;
    expect!(
        status == STATUS_SUCCESS && result == 0 && data == b"no such word here",
        "run without the word: result {result}"
    );
    add(format!("run without the word: result {result}"));

    let rainy = b"rainy rainy rainy rainy rainy";
    let (status, reply, data) = run_batch(kernel, &handle, 4, rainy)?;
    expect!(
        status == STATUS_SUCCESS
            && reply.results == 4
            && reply.result_sum == 4 * 42
            && data == b"sunny sunny sunny sunny rainy",
        "batch: {} {reply:?} {:?}",
        crate::status::describe(status),
        text(&data)
    );
    add(format!(
        "batch of 4: {} results summing {}, data {:?}",
        reply.results,
        reply.result_sum,
        text(&data)
    ));

    // Test runs: context_create over ctx_in and data_in, the program, context_destroy.
    let context = context_in(3, 4, [1, 2]);
    let out = test_run(&rewrite, &info_client, city, &context)?;
    expect!(
        out.return_value == 42
            && out.data_out == b"Seattle is a sunny city"
            && out.context_out.len() == 32
            && out.context_out[16..] == context[16..],
        "test run: {out:?}"
    );
    add(format!(
        "test run: result {}, data_out {:?}, ctx_out {} bytes",
        out.return_value,
        text(&out.data_out),
        out.context_out.len()
    ));
    for (what, context) in [
        ("empty ctx_in", Vec::new()),
        ("31-byte ctx_in", vec![0; 31]),
    ] {
        let refused = rewrite
            .test_run(&info_client, city, &context, 1)
            .err()
            .ok_or_else(|| format!("test run with {what} succeeded"))?;
        expect!(matches!(refused, BpfError::TestRun(_)), "{what}: {refused}");
        add(format!("test run with {what}: {refused}"));
    }

    let helpers =
        BpfProgram::load(object, "sample_ext/helpers", &info).map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for (uint32_data, uint16_data, data) in
        [(1u32, 10u16, &b"abc"[..]), (2, 11, b""), (1, 12, b"x")]
    {
        let context = context_in(uint32_data, uint16_data, [1, 2]);
        let out = test_run(&helpers, &info_client, data, &context)?;
        expect!(
            out.return_value == uint32_data + 1,
            "helpers returned {}; faults {:?}",
            out.return_value,
            helpers.faults()
        );
        values.push(out.return_value);
    }
    add(format!("helpers test runs returned {values:?}"));
    let results = helpers.map("results").ok_or("no results map")?;
    let result = |i: u32| {
        results
            .lookup(&i.to_le_bytes())
            .ok()
            .flatten()
            .map_or(0, |v| u64_at(&v, 0))
    };
    let observed: Vec<u64> = (0..9).map(result).collect();
    expect!(
        observed[..6] == [1, 12, PID_TGID_VALUE, 1, 1, u64::MAX] && observed[6..] == [1, 1, 1],
        "helper results {observed:?}"
    );
    add(format!(
        "implicit_1 {}, implicit_2(10) {}, pid_tgid {}, redirect_map {}, map_lookup_element NULL {}, map_get_value on an array {}",
        observed[0],
        observed[1],
        observed[2],
        observed[3],
        observed[4],
        observed[5].cast_signed()
    ));
    let per_value = helpers.map("per_value").ok_or("no per_value")?;
    let count = |k: u32| {
        per_value
            .lookup(&k.to_le_bytes())
            .ok()
            .flatten()
            .map_or(0, |v| u64_at(&v, 0))
    };
    let recent = helpers.map("recent").ok_or("no recent")?;
    let mut recent_keys: Vec<u64> = recent
        .keys()
        .iter()
        .map(|k| u64_at(&[k.as_slice(), &[0; 8]].concat(), 0))
        .collect();
    recent_keys.sort_unstable();
    let per_cpu: u64 = helpers
        .map("per_cpu")
        .ok_or("no per_cpu")?
        .lookup_per_cpu(&0u32.to_le_bytes())
        .map_err(|e| e.to_string())?
        .unwrap_or_default()
        .iter()
        .map(|v| u64_at(v, 0))
        .sum();
    let events = helpers.map("events").ok_or("no events")?.drain_records();
    expect!(
        count(1) == 2
            && count(2) == 1
            && recent_keys == [11, 12]
            && per_cpu == 3
            && events.len() == 3,
        "maps: per_value {} {}, recent {recent_keys:?}, per_cpu {per_cpu}, events {}",
        count(1),
        count(2),
        events.len()
    );
    add(format!(
        "maps: per_value 1→{} 2→{}, recent {recent_keys:?}, per_cpu {per_cpu}, {} ring records",
        count(1),
        count(2),
        events.len()
    ));

    add(custom_map(maps_object, &info_client, &info)?);

    let overrun =
        BpfProgram::load(object, "sample_ext/overrun", &info).map_err(|e| e.to_string())?;
    let fault = overrun
        .test_run(&info_client, b"tiny", &context_in(0, 0, [0, 0]), 1)
        .err()
        .ok_or("the overrun ran")?;
    add(format!("overrun: {}", fault_kind(&fault.to_string())));

    link.detach().map_err(|e| e.to_string())?;
    let (status, _, _) = run(kernel, &handle, 0, city)?;
    expect!(
        status != STATUS_SUCCESS,
        "a run with nothing attached succeeded"
    );
    add(format!(
        "run with nothing attached: {}",
        crate::status::describe(status)
    ));
    let programs = BpfProgram::load_all(object, &info).map_err(|e| e.to_string())?;
    add(tail_calls(kernel, &handle, &programs, &info_client)?);
    add(perf_events(kernel, &handle, &programs, &info_client)?);
    add(btf_resolved(kernel, &handle, &programs, &info_client)?);
    kernel.close(handle);
    drop(info_client);
    // The driver unloads with the programs still loaded: its BTF-resolved function provider
    // goes first, and the programs' clients detach from it.
    driver.unload();
    // Each program's own program-information client goes with it.
    drop((programs, rewrite, helpers, overrun));
    kernel.assert_no_leaks();
    Ok(report)
}

/// Attaches `program` to the sample's hook, as `bpf_link_create` does.
fn attach(program: &Arc<BpfProgram>) -> Result<Link, Failure> {
    program
        .attach(LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE))
        .map_err(|e| e.to_string())
}

/// The program of `section` among `programs` (an object's, loaded together).
fn program_in(programs: &[Arc<BpfProgram>], section: &str) -> Result<Arc<BpfProgram>, Failure> {
    programs
        .iter()
        .find(|p| p.section() == section)
        .cloned()
        .ok_or_else(|| format!("no program in {section}"))
}

/// Tail calls as upstream's tail-call samples make them: the caller, attached to the hook,
/// continues in `programs[0]` on the same context (42: `helper_data_1` is 1 in a run), in
/// a run, a batch (the state the hook's batch keeps) and a test run; with the slot emptied
/// the caller returns `bpf_tail_call`'s failure (-6, `0xFFFFFFFA`).
fn tail_calls(
    kernel: &Kernel,
    handle: &FileHandle,
    programs: &[Arc<BpfProgram>],
    info_client: &ProgramInfoClient,
) -> Result<String, Failure> {
    let caller = program_in(programs, "sample_ext/tail_caller")?;
    let target = program_in(programs, "sample_ext/0")?;
    let slots = caller.map("programs").ok_or("no programs map")?;
    slots.set_program(0, &target).map_err(|e| e.to_string())?;
    let link = attach(&caller)?;
    let data = b"tail";
    let (status, result, _) = run(kernel, handle, 0, data)?;
    let (batch_status, batch, _) = run_batch(kernel, handle, 3, data)?;
    let test = test_run(&caller, info_client, data, &context_in(0, 0, [1, 2]))?;
    expect!(
        status == STATUS_SUCCESS
            && result == 42
            && batch_status == STATUS_SUCCESS
            && batch.results == 3
            && batch.result_sum == 3 * 42
            && test.return_value == 42
            && target.runs() == 5,
        "tail call: run {} {result}, batch {batch:?}, test run {}, the target ran {}; faults {:?} {:?}",
        crate::status::describe(status),
        test.return_value,
        target.runs(),
        caller.faults(),
        target.faults()
    );
    slots
        .delete(&0u32.to_le_bytes())
        .map_err(|e| e.to_string())?;
    let (status, empty, _) = run(kernel, handle, 0, data)?;
    expect!(
        status == STATUS_SUCCESS && empty == 0xFFFF_FFFA,
        "tail call to an empty slot: {} {empty:#x}",
        crate::status::describe(status)
    );
    link.detach().map_err(|e| e.to_string())?;
    Ok(format!(
        "tail call: run {result}, batch of 3 summing {}, test run {}; empty slot {empty:#x}",
        batch.result_sum, test.return_value
    ))
}

/// Upstream's perf-event sample: attached to the hook, the program writes one record of the
/// run's data followed by the same bytes captured from the context's data (which the core
/// finds through the context header), in a run and in a test run.
fn perf_events(
    kernel: &Kernel,
    handle: &FileHandle,
    programs: &[Arc<BpfProgram>],
    info_client: &ProgramInfoClient,
) -> Result<String, Failure> {
    let perf = &program_in(programs, "sample_ext/perf")?;
    let link = attach(perf)?;
    let (status, result, _) = run(kernel, handle, 0, b"perf!")?;
    let test = test_run(perf, info_client, b"test", &context_in(0, 0, [1, 2]))?;
    link.detach().map_err(|e| e.to_string())?;
    let events = perf.map("perf_events").ok_or("no perf_events map")?;
    let mut records = Vec::new();
    for cpu in 0.. {
        match events.drain_cpu_records(cpu) {
            Ok(mut more) => records.append(&mut more),
            Err(_) => break,
        }
    }
    // Each processor's ring in turn: the order of records on different processors is not
    // the order they were written in.
    records.sort();
    expect!(
        status == STATUS_SUCCESS
            && result == 0
            && test.return_value == 0
            && records == [b"perf!perf!".to_vec(), b"testtest".to_vec()],
        "perf events: run {} {result}, test run {}, records {records:?}; faults {:?}",
        crate::status::describe(status),
        test.return_value,
        perf.faults()
    );
    Ok(format!(
        "perf events: {:?}",
        records.iter().map(|r| text(r)).collect::<Vec<_>>()
    ))
}

/// Upstream's BTF-resolved function sample: the program calls the module's
/// `sample_ebpf_extension_btf_lookup` by name, which the core links through the driver's
/// BTF-resolved function provider: a test run with `uint32_data` 123 gives 131 (the key plus
/// the value's 8 bytes) in the result and in `ctx_out`, a run through the hook (`uint32_data`
/// 5) gives 13.
fn btf_resolved(
    kernel: &Kernel,
    handle: &FileHandle,
    programs: &[Arc<BpfProgram>],
    info_client: &ProgramInfoClient,
) -> Result<String, Failure> {
    let program = &program_in(programs, "sample_ext/btf")?;
    let test = test_run(program, info_client, b"", &context_in(123, 0, [1, 2]))?;
    let link = attach(program)?;
    let (status, result, _) = run(kernel, handle, 0, b"btf")?;
    link.detach().map_err(|e| e.to_string())?;
    let ctx_out = test
        .context_out
        .get(16..20)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let used: Vec<String> = program
        .btf_functions()
        .iter()
        .map(|f| format!("{} of {{{}}}", f.name, f.module))
        .collect();
    expect!(
        test.return_value == 131
            && ctx_out == Some(131)
            && status == STATUS_SUCCESS
            && result == 13,
        "BTF-resolved function: test run {} ctx_out {ctx_out:?}, run {} {result}; faults {:?}",
        test.return_value,
        crate::status::describe(status),
        program.faults()
    );
    Ok(format!(
        "BTF-resolved {}: test run 123 -> {}, run 5 -> {result}",
        used.join(", "),
        test.return_value
    ))
}

/// The demo's run of sample-ext: its BPF scenario against the linked crate and, given the
/// images `--expect`ed (path to SHA-256; the loaded one is removed), against the signed
/// image too, which must load the image built and give the same report. Returns one line.
///
/// # Errors
/// A failed build, load or scenario, or an image that is not the one built or reports
/// otherwise than the linked crate.
pub fn demo(
    expected: Option<&mut std::collections::BTreeMap<PathBuf, String>>,
) -> Result<String, Failure> {
    let build = |source| crate::bpf::build(&sample(), source);
    let (object, maps) = (build("sample_ext.c")?, build("sample_ext_maps.c")?);
    let run = |kernel: &Kernel, target| scenario(kernel, target, &object, &maps, &mut |_| {});
    let linked = run(&Kernel::new(), Target::Native(sample_ext::driver_entry))?;
    let mut mode = "the linked crate";
    let mut origin = String::new();
    if let Some(expected) = expected {
        let kernel = Kernel::new();
        let loaded = crate::binary::load_sample_file(&kernel, "sample_ext")?;
        let expected_sha = expected.remove(&loaded.path);
        let is_built = expected_sha
            .as_ref()
            .is_none_or(|sha| *sha == loaded.sha256);
        let report = run(&kernel, Target::Image(&loaded.image))?;
        drop(kernel);
        loaded.image.unload();
        expect!(is_built, "{} is not the image built", loaded.path.display());
        origin = format!(
            "sample-ext: loaded {}\n  sha256 {}{}\n",
            loaded.path.display(),
            loaded.sha256,
            if expected_sha.is_some() {
                " = the image built and signed above"
            } else {
                ""
            }
        );
        expect!(
            report == linked,
            "image {report:?}\nlinked crate {linked:?}"
        );
        mode = "the signed image and the linked crate, identical";
    }
    Ok(format!(
        "{origin}sample-ext (eBPF for Windows' sample extension), BPF through core-sim in {mode}:\n  {}",
        linked.lines[..3].join("\n  ")
    ))
}
