//! BPF ELF programs (C compiled here with `clang -target bpf` into a directory of this test's
//! own) loaded against a test provider's program information and run by core-sim: helper
//! resolution by the core's id ranges (a global override beats the general helper; a
//! program-type helper gets the context as its sixth argument), the general helpers, maps
//! from test code, and the load-time and run-time refusals.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

mod common;

use std::sync::Arc;

use common::{
    Addresses, HookProvider, InfoProvider, ProgramDataSpec, Proto, TEST_ATTACH_TYPE,
    TEST_PROGRAM_TYPE, TestContext,
};
use ebpf_ext_core_sim::bpf::{
    BPF_EXIST, BPF_NOEXIST, BpfError, BpfMap, BpfObject, BpfProgram, BtfFunctionUse, BtfPrototype,
    CORE_SIM_LOGON_ID, CORE_SIM_PROCESS_START_KEY, MapError, compile_c,
};
use ebpf_ext_core_sim::{LinkSpec, ProgramInfo, ProgramInfoClient, Refusal};
use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_ANYTHING, EBPF_ARGUMENT_TYPE_DONTCARE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS,
};
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID;
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_btf_resolved_function_prototype_t, ebpf_btf_resolved_function_provider_data_t,
};
use ebpf_ext_sys::ebpf_result::{
    EBPF_EXTENSION_FAILED_TO_LOAD, EBPF_INVALID_ARGUMENT, EBPF_INVALID_FD, EBPF_KEY_ALREADY_EXISTS,
    EBPF_KEY_NOT_FOUND, EBPF_OUT_OF_SPACE, EBPF_SUCCESS,
};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER, EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER,
};
use ebpf_ext_sys::netioddk::MIT_GUID;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::ntstatus::{STATUS_INVALID_DEVICE_STATE, STATUS_NOINTERFACE};
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;
use ebpf_ext_usersim::Kernel;

/// The test program type's declarations, by hand (the samples' are generated).
const PRELUDE: &str = r"
typedef unsigned long long uint64_t;
typedef unsigned int uint32_t;
typedef unsigned char uint8_t;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, value) int (*name)[value]
#define __type(name, type) typeof(type)* name
struct test_context { uint64_t value; uint64_t flags; uint8_t* data_start; uint8_t* data_end; };
static void* (*bpf_map_lookup_elem)(void* map, const void* key) = (void*)1;
static long (*bpf_map_update_elem)(void* map, const void* key, const void* value, uint64_t flags) = (void*)2;
static long (*bpf_map_delete_elem)(void* map, const void* key) = (void*)3;
static void* (*bpf_map_lookup_and_delete_elem)(void* map, const void* key) = (void*)4;
static long (*bpf_ringbuf_output)(void* map, const void* data, uint64_t size, uint64_t flags) = (void*)11;
static long (*bpf_trace_printk3)(const char* fmt, uint32_t size, uint64_t a) = (void*)13;
static uint64_t (*bpf_get_current_pid_tgid)(void) = (void*)19;
static int (*bpf_memcmp_s)(const void* a, uint64_t a_size, const void* b, uint64_t b_size) = (void*)23;
static uint64_t (*bpf_strnlen_s)(const char* s, uint64_t size) = (void*)29;
static uint64_t (*bpf_memset)(void* m, uint64_t size, int value) = (void*)24;
static uint64_t (*test_get_a)(void* ctx) = (void*)0x10001;
static uint64_t (*test_context_value)(void* ctx) = (void*)0x10002;
static uint64_t (*bpf_tail_call)(void* ctx, void* map, uint32_t index) = (void*)5;
static long (*bpf_perf_event_output)(void* ctx, void* map, uint64_t flags, void* data, uint64_t size) = (void*)32;
static uint64_t (*bpf_get_socket_cookie)(void* ctx) = (void*)26;
static long (*bpf_map_push_elem)(void* map, const void* value, uint64_t flags) = (void*)16;
static long (*bpf_map_pop_elem)(void* map, void* value) = (void*)17;
static long (*bpf_map_peek_elem)(void* map, void* value) = (void*)18;
static int (*bpf_csum_diff)(const void* from, int from_size, const void* to, int to_size, int seed) = (void*)10;
static uint64_t (*bpf_get_current_logon_id)(const void* ctx) = (void*)20;
static int (*bpf_is_current_admin)(const void* ctx) = (void*)21;
static int (*bpf_strncpy_s)(char* d, uint64_t d_size, const char* s, uint64_t count) = (void*)27;
static int (*bpf_strncat_s)(char* d, uint64_t d_size, const char* s, uint64_t count) = (void*)28;
static uint64_t (*undeclared)(void) = (void*)0x10009;
static uint64_t (*test_clobber_header)(void* ctx, uint64_t value, uint64_t slot) = (void*)0x10003;
static uint64_t (*bpf_get_current_process_start_key)(void) = (void*)33;
static long long (*bpf_get_current_thread_create_time)(void) = (void*)34;
";

const PROGRAMS: &str = r#"
struct { __uint(type, 2); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 16); } results SEC(".maps");
struct { __uint(type, 8); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 2); } lru SEC(".maps");
struct { __uint(type, 13); __uint(max_entries, 4096); } ring SEC(".maps");
struct { __uint(type, 2); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 4); } scratch SEC(".maps");
struct { __uint(type, 5); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 4); } percpu SEC(".maps");

struct { __uint(type, 10); __type(value, uint32_t); __uint(max_entries, 2); } queue SEC(".maps");
struct { __uint(type, 1); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 16); } hash SEC(".maps");
struct { __uint(type, 12); __type(value, uint32_t); __uint(max_entries, 2); } stack SEC(".maps");

static void put(uint32_t key, uint64_t value) { bpf_map_update_elem(&results, &key, &value, 0); }

SEC("test_prog")
int resolve(struct test_context* ctx)
{
    put(0, bpf_get_current_pid_tgid());
    put(1, test_get_a(ctx));
    put(2, test_context_value(ctx));
    uint64_t sum = 0;
    for (uint8_t* p = ctx->data_start; p < ctx->data_end; p++) sum += *p;
    put(3, sum);
    char a[4] = "abc", b[4] = "abd";
    put(4, (uint64_t)(long)bpf_memcmp_s(a, 3, b, 3));
    put(5, bpf_strnlen_s(a, sizeof(a)));
    static const char format[] = "value %u";
    bpf_trace_printk3(format, sizeof(format), ctx->value);
    uint32_t key = 7;
    uint64_t* seeded = bpf_map_lookup_elem(&results, &key);
    if (seeded) *seeded += 1;
    for (uint32_t k = 0; k < 3; k++) { uint64_t v = k; bpf_map_update_elem(&lru, &k, &v, 0); }
    uint64_t record[32] = {0x1122334455667788ULL};
    long first = bpf_ringbuf_output(&ring, record, sizeof(record), 0);
    long full = 0;
    for (int i = 0; i < 16; i++) full = bpf_ringbuf_output(&ring, record, sizeof(record), 0);
    put(6, (uint64_t)(first * 1000 + full));
    return (int)ctx->flags;
}

// Arrays as the core updates and deletes them, the map helpers on a ring buffer, and memset.
SEC("test_prog/arrays")
int arrays(struct test_context* ctx)
{
    uint32_t k = 3, far = 4;
    uint64_t five = 5;
    put(0, (uint64_t)bpf_map_update_elem(&scratch, &k, &five, 1));
    put(1, (uint64_t)bpf_map_update_elem(&scratch, &k, &five, 4));
    uint64_t* v = bpf_map_lookup_elem(&scratch, &k);
    put(2, v ? *v : 99);
    put(3, (uint64_t)bpf_map_delete_elem(&scratch, &k));
    put(4, v ? *v : 99);
    put(5, (uint64_t)bpf_map_delete_elem(&scratch, &far));
    put(6, (uint64_t)bpf_map_update_elem(&percpu, &k, &five, 1));
    put(7, (uint64_t)bpf_map_update_elem(&percpu, &far, &five, 0));
    put(8, (uint64_t)bpf_map_update_elem(&ring, &k, &five, 0));
    put(9, (uint64_t)bpf_map_delete_elem(&ring, &k));
    uint64_t buffer = 0;
    put(10, bpf_memset(&buffer, 8, 0x41) == (uint64_t)&buffer);
    put(11, buffer);
    return 0;
}

SEC("test_prog/general")
int more_general_helpers(struct test_context* ctx)
{
    uint8_t from[4] = {1, 0, 2, 0}, to[4] = {5, 0, 7, 0};
    put(0, (uint64_t)(long)bpf_csum_diff(from, 4, to, 4, 0));
    put(1, (uint64_t)(long)bpf_csum_diff(0, 4, to, 4, 3));
    put(2, (uint64_t)(long)bpf_csum_diff(from, 2, to, 4, 0));
    put(3, bpf_get_current_logon_id(ctx));
    put(4, (uint64_t)(long)bpf_is_current_admin(ctx));
    uint64_t buffer = 0x7878787878787878ULL;
    char abc[3] = {'a', 'b', 'c'}, defgh[5] = {'d', 'e', 'f', 'g', 'h'};
    put(5, (uint64_t)(long)bpf_strncpy_s((char*)&buffer, 8, abc, 3));
    put(6, buffer);
    put(7, (uint64_t)(long)bpf_strncat_s((char*)&buffer, 8, defgh, 5));
    put(8, buffer);
    put(9, (uint64_t)(long)bpf_strncpy_s((char*)&buffer, 0, abc, 1));
    put(10, bpf_get_current_process_start_key());
    put(11, (uint64_t)bpf_get_current_thread_create_time());
    put(12, (uint64_t)bpf_get_current_thread_create_time());
    return 0;
}

/// Pushes 1, 2, 3 (the third again with BPF_EXIST, dropping the oldest), then peeks and pops
/// until empty; results under `base`..`base + 4`.
static void queue_or_stack(void* map, uint32_t base)
{
    uint32_t one = 1, two = 2, three = 3, seen = 0, popped = 0, last = 0;
    long ok = bpf_map_push_elem(map, &one, 0) + bpf_map_push_elem(map, &two, 0);
    put(base + 1, (uint64_t)bpf_map_push_elem(map, &three, 0));
    ok += bpf_map_push_elem(map, &three, 2);
    ok += bpf_map_peek_elem(map, &seen) + bpf_map_pop_elem(map, &popped);
    ok += bpf_map_pop_elem(map, &last);
    put(base, (uint64_t)ok);
    put(base + 2, (uint64_t)bpf_map_pop_elem(map, &last));
    put(base + 3, (uint64_t)bpf_map_peek_elem(map, &last));
    put(base + 4, seen << 16 | popped << 8 | last);
}

SEC("test_prog/queues")
int queues(struct test_context* ctx)
{
    queue_or_stack(&queue, 0);
    queue_or_stack(&stack, 5);
    uint64_t value = 0;
    uint32_t no_key = 0;
    put(10, (uint64_t)bpf_map_push_elem(&results, &value, 0));
    put(11, (uint64_t)bpf_map_push_elem(&ring, &value, 0));
    put(12, (uint64_t)bpf_map_delete_elem(&queue, &no_key));
    put(13, (uint64_t)bpf_map_pop_elem(&ring, &value));
    uint32_t nine = 9;
    put(14, (uint64_t)bpf_map_update_elem(&queue, &no_key, &nine, 0));
    return 0;
}

// A lookup in a queue or stack: its next value, in place (NULL when empty).
SEC("test_prog/lookup_queue")
int lookup_queue(struct test_context* ctx)
{
    uint32_t no_key = 0, one = 1, two = 2, seven = 7, eight = 8;
    uint32_t* empty = bpf_map_lookup_elem(&stack, &no_key);
    bpf_map_push_elem(&stack, &one, 0);
    bpf_map_push_elem(&stack, &two, 0);
    bpf_map_push_elem(&queue, &seven, 0);
    bpf_map_push_elem(&queue, &eight, 0);
    uint32_t* newest = bpf_map_lookup_elem(&stack, &no_key);
    uint32_t* oldest = bpf_map_lookup_elem(&queue, &no_key);
    if (!newest || !oldest)
        return -1;
    *newest += 40;
    *oldest += 1;
    return (empty == 0) << 16 | *oldest << 8 | *newest;
}

// A looked-up value kept while the full queue drops it for another, then pushed again from
// where the lookup left it; returns the push's result * 1000 + the looked-up value.
SEC("test_prog/queue_push_looked_up")
int queue_push_looked_up(struct test_context* ctx)
{
    uint32_t no_key = 0, seven = 7, twenty = 20, nine = 9;
    bpf_map_push_elem(&queue, &seven, 0);
    bpf_map_push_elem(&queue, &twenty, 0);
    uint32_t* oldest = bpf_map_lookup_elem(&queue, &no_key);
    if (!oldest)
        return -1;
    bpf_map_push_elem(&queue, &nine, 2);
    long pushed = bpf_map_push_elem(&queue, oldest, 2);
    return (int)(pushed * 1000 + *oldest);
}

SEC("test_prog/lookup_and_delete")
int lookup_and_delete(struct test_context* ctx)
{
    uint32_t one = 1, none = 0, five = 5;
    uint64_t* taken = bpf_map_lookup_and_delete_elem(&hash, &one);
    uint64_t replaced = 99;
    bpf_map_update_elem(&hash, &one, &replaced, 0);
    put(0, taken ? *taken : 0);
    put(1, bpf_map_lookup_and_delete_elem(&hash, &none) == 0);
    bpf_map_push_elem(&queue, &five, 0);
    uint32_t* popped = bpf_map_lookup_and_delete_elem(&queue, &none);
    put(2, popped ? *popped : 0);
    put(3, bpf_map_lookup_and_delete_elem(&results, &none) == 0);
    if (taken) *taken = 7;
    uint64_t more = 0;
    for (uint32_t key = 10; key < 20; key++) more += bpf_map_lookup_and_delete_elem(&hash, &key) != 0;
    put(4, more);
    return 0;
}

SEC("test_prog/kept_guard")
int kept_guard(struct test_context* ctx)
{
    uint32_t one = 1;
    volatile uint8_t* taken = bpf_map_lookup_and_delete_elem(&hash, &one);
    return taken ? taken[ctx->value] : -1;
}

static const uint32_t constant = 5;

SEC("test_prog/pop_into_rodata")
int pop_into_rodata(struct test_context* ctx)
{
    uint32_t one = 1;
    bpf_map_push_elem(&queue, &one, 0);
    return (int)bpf_map_pop_elem(&queue, (void*)&constant);
}

SEC("test_prog/stack_overrun")
int stack_overrun(struct test_context* ctx)
{
    volatile uint8_t buffer[8];
    buffer[0] = 1;
    return ((volatile uint8_t*)buffer)[ctx->value];
}

SEC("test_prog/not_the_context")
int not_the_context(struct test_context* ctx)
{
    uint64_t local = 0;
    return (int)test_get_a(&local);
}

SEC("test_prog/socket_cookie")
int socket_cookie(struct test_context* ctx) { return (int)bpf_get_socket_cookie(ctx); }

SEC("test_prog/undeclared")
int call_undeclared(struct test_context* ctx) { return (int)undeclared(); }

SEC("test_prog/context_overrun")
int context_overrun(struct test_context* ctx) { return (int)((uint64_t*)ctx)[4]; }

char _license[] SEC("license") = "MIT";
"#;

/// The current time as a FILETIME (100 ns units since 1601).
fn filetime_now() -> i64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    116_444_736_000_000_000 + i64::try_from(since_unix.as_nanos() / 100).expect("fits")
}

/// Builds the test programs into a temporary directory of this call's own.
fn object() -> BpfObject {
    compile(&format!("{PRELUDE}{PROGRAMS}"))
}

/// Builds `c` into a temporary directory of this call's own.
fn compile(c: &str) -> BpfObject {
    compile_for("generic", c).0
}

/// A program (section `test_prog`) that returns `expression`, a C expression over `ctx`.
fn returning(expression: &str) -> BpfObject {
    compile(&format!(
        r#"{PRELUDE}
SEC("test_prog")
int prog(struct test_context* ctx) {{ return (int){expression}; }}
char _license[] SEC("license") = "MIT";
"#
    ))
}

/// Runs `program` once, directly, on a context of value 1.
fn run_once(program: &BpfProgram) -> Result<u64, BpfError> {
    let mut hooked = HookedContext::of(1, 0);
    // SAFETY: a context of the program type.
    unsafe { program.run(hooked.ptr()) }
}

/// Builds `c` for `-mcpu=cpu` into a temporary directory of this call's own: the object,
/// and its bytes.
fn compile_for(cpu: &str, c: &str) -> (BpfObject, Vec<u8>) {
    let bytes = compile_c(c, &[&format!("-mcpu={cpu}")]).expect("clang");
    (BpfObject::parse(&bytes).expect("parses"), bytes)
}

/// Writes `value` over slot `slot` (0 or 1) of the header in front of the context it
/// receives (what an extension that does not keep the core's header would do).
extern "win64" fn clobber_header(
    _: u64,
    value: u64,
    slot: u64,
    _: u64,
    _: u64,
    context: u64,
) -> u64 {
    // SAFETY: the core-sim passes the program context sixth; the test provider's contexts
    // (and the tests' own) have their 64-byte header in front.
    unsafe { ((context - 64 + 8 * (slot & 1)) as *mut u64).write_unaligned(value) };
    0
}

extern "win64" fn pid_override(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0x1234
}
/// The override of a second image of the extension.
extern "win64" fn pid_override_2(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0x5678
}
extern "win64" fn get_a(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0xA
}
/// Reads the context it receives as the core passes it: the sixth argument.
extern "win64" fn context_value(_: u64, _: u64, _: u64, _: u64, _: u64, context: u64) -> u64 {
    // SAFETY: the core-sim passes the program context, a TestContext, sixth.
    unsafe { (*(context as *const TestContext)).value * 2 }
}

fn spec() -> ProgramDataSpec {
    let mut spec = ProgramDataSpec::valid();
    let mut a = Proto::new(0x1_0001, c"test_get_a");
    a.arguments = [EBPF_ARGUMENT_TYPE_PTR_TO_CTX, 0, 0, 0, 0];
    let mut implicit = Proto::new(0x1_0002, c"test_context_value");
    implicit.arguments = [EBPF_ARGUMENT_TYPE_PTR_TO_CTX, 0, 0, 0, 0];
    implicit.implicit_context = true;
    let mut pid = Proto::new(19, c"bpf_get_current_pid_tgid");
    pid.arguments = [EBPF_ARGUMENT_TYPE_DONTCARE; 5];
    let mut clobber = Proto::new(0x1_0003, c"test_clobber_header");
    clobber.arguments = [
        EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
        EBPF_ARGUMENT_TYPE_ANYTHING,
        EBPF_ARGUMENT_TYPE_ANYTHING,
        0,
        0,
    ];
    spec.helpers = vec![a, implicit, clobber];
    spec.global_helpers = vec![pid];
    spec.helper_addresses = Some(Addresses::new(vec![
        get_a as *const () as u64,
        context_value as *const () as u64,
        clobber_header as *const () as u64,
    ]));
    spec.global_addresses = Some(Addresses::new(vec![pid_override as *const () as u64]));
    spec
}

fn context(value: u64, flags: u64) -> Vec<u8> {
    let context = HookedContext::of(value, flags).context;
    // SAFETY: a plain repr(C) value viewed as its bytes.
    unsafe {
        core::slice::from_raw_parts((&raw const context).cast::<u8>(), size_of::<TestContext>())
    }
    .to_vec()
}

/// Runs `program` once over a context of `context(0, 0)` without data, as its provider creates
/// it, and checks that it returned 0 without a fault.
fn run_clean(client: &ProgramInfoClient, program: &BpfProgram) {
    let bytes = context(0, 0);
    let context = client.create_context(&[], &bytes).expect("context");
    // SAFETY: a context of the program type from its provider's context_create.
    assert_eq!(unsafe { program.run(context.as_ptr()) }, Ok(0));
    assert!(program.faults().is_empty(), "{:?}", program.faults());
}

/// The `u64` a program stored under `key` of its `results` array.
fn result(results: &BpfMap, key: u32) -> u64 {
    let value = results
        .lookup(&key.to_le_bytes())
        .expect("lookup")
        .expect("present");
    u64::from_le_bytes(value[..8].try_into().expect("8 bytes"))
}

fn with_info(test: impl FnOnce(&ProgramInfoClient, &Arc<ProgramInfo>)) {
    with_kernel_and_info(|_, client, info| test(client, info));
}

fn with_kernel_and_info(test: impl FnOnce(&Kernel, &ProgramInfoClient, &Arc<ProgramInfo>)) {
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let info = client.info();
    test(&kernel, &client, &info);
    drop(client);
    provider.deregister();
    drop(kernel);
}

/// What the tail-call override below returns (0: the call succeeded).
static OVERRIDE_RESULT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "win64" fn tail_call_override(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    OVERRIDE_RESULT.load(std::sync::atomic::Ordering::SeqCst)
}

/// A provider's override of `bpf_tail_call` (id 5) ends its caller as the core's does: a
/// caller whose tail call succeeded (0) returns 0 at once, as native code does after any
/// helper with that id.
#[test]
fn a_caller_returns_at_once_when_a_providers_tail_call_override_succeeds() {
    let object = compile(&format!(
        r#"{PRELUDE}
struct {{ __uint(type, 3); __type(key, uint32_t); __type(value, uint32_t); __uint(max_entries, 1); }} programs SEC(".maps");
SEC("test_prog")
int caller(struct test_context* ctx) {{ bpf_tail_call(ctx, &programs, 0); return 42; }}
char _license[] SEC("license") = "MIT";
"#
    ));
    let kernel = Kernel::new();
    let mut spec = spec();
    let mut tail_call = Proto::new(5, c"bpf_tail_call");
    tail_call.arguments = [
        EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
        EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS,
        EBPF_ARGUMENT_TYPE_ANYTHING,
        0,
        0,
    ];
    spec.global_helpers.push(tail_call);
    spec.global_addresses = Some(Addresses::new(vec![
        pid_override as *const () as u64,
        tail_call_override as *const () as u64,
    ]));
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let bytes = context(0, 0);
    let at = client.create_context(&[], &bytes).expect("context");
    // SAFETY: a context of the program type from its provider's context_create.
    let run = || unsafe { program.run(at.as_ptr()) };
    assert_eq!(run(), Ok(0), "returned at once");
    OVERRIDE_RESULT.store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(run(), Ok(42), "a failed tail call goes on");
    drop(at);
    drop(program);
    drop(client);
    provider.deregister();
    drop(kernel);
}

extern "win64" fn cookie_override(r1: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    r1
}

/// The verifier checks a call to a general helper's id against the core's prototype, never
/// the provider's declaration of its override: an override of `bpf_get_socket_cookie` (26,
/// the core's prototype: the context) declared as taking anything still gets only the
/// context, and a program passing something else is refused; an override of an id the core
/// has no general helper of leaves calls to it unknown.
#[test]
fn overrides_are_checked_against_the_cores_prototypes() {
    let object = compile(&format!(
        r#"{PRELUDE}
static uint64_t (*not_general)(void) = (void*)100;
SEC("test_prog")
int with_context(struct test_context* ctx) {{ return bpf_get_socket_cookie(ctx) == (uint64_t)ctx; }}
SEC("test_prog/other")
int with_other(struct test_context* ctx) {{ return bpf_get_socket_cookie((void*)ctx->value) != 0; }}
SEC("test_prog/unknown")
int unknown(struct test_context* ctx) {{ return not_general(); }}
char _license[] SEC("license") = "MIT";
"#
    ));
    let kernel = Kernel::new();
    let mut spec = spec();
    let mut cookie = Proto::new(26, c"bpf_get_socket_cookie");
    cookie.arguments = [EBPF_ARGUMENT_TYPE_ANYTHING, 0, 0, 0, 0];
    let mut other = Proto::new(100, c"not_general");
    other.arguments = [EBPF_ARGUMENT_TYPE_DONTCARE; 5];
    spec.global_helpers.extend([cookie, other]);
    spec.global_addresses = Some(Addresses::new(vec![
        pid_override as *const () as u64,
        cookie_override as *const () as u64,
        pid_override as *const () as u64,
    ]));
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let info = client.info();
    let bytes = context(0x5000, 0);
    let at = client.create_context(&[], &bytes).expect("context");
    let program = BpfProgram::load(&object, "test_prog", &info).expect("loads");
    // SAFETY: a context of the program type from its provider's context_create.
    let got = unsafe { program.run(at.as_ptr()) };
    assert_eq!(got, Ok(1), "the override got the context");
    let other = BpfProgram::load(&object, "test_prog/other", &info).expect("loads");
    // SAFETY: as above.
    let refused = unsafe { other.run(at.as_ptr()) };
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not the program context")),
        "checked against the core's prototype, not the declared one: {refused:?}"
    );
    let unknown = BpfProgram::load(&object, "test_prog/unknown", &info);
    assert!(
        matches!(unknown, Err(BpfError::UndeclaredHelper { id: 100, .. })),
        "{unknown:?}"
    );
    drop(at);
    drop((program, other, client));
    provider.deregister();
    drop(kernel);
}

#[test]
fn helpers_resolve_by_the_cores_id_ranges_and_maps_are_shared_with_the_test() {
    let object = object();
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog", info).expect("loads");
        let results = program.map("results").expect("results map");
        results
            .update(&7u32.to_le_bytes(), &41u64.to_le_bytes(), BPF_EXIST)
            .expect("the test writes a value");
        let data = [1u8, 2, 3, 4];
        let bytes = context(21, 5);
        let context = client.create_context(&data, &bytes).expect("context");
        // SAFETY: a context of the program type from its provider's context_create.
        let r0 = unsafe { program.run(context.as_ptr()) }.expect("runs");
        assert_eq!(r0, 5, "r0 is the program's return value");
        let value = |key: u32| result(&results, key);
        assert_eq!(
            value(0),
            0x1234,
            "id 19: the provider's global override wins"
        );
        assert_eq!(value(1), 0xA, "a program-type helper through its address");
        assert_eq!(
            value(2),
            42,
            "the implicit-context helper read the context sixth"
        );
        assert_eq!(value(3), 10, "the program summed its [data, end) range");
        assert_eq!(value(4), u64::MAX, "memcmp_s: abc < abd");
        assert_eq!(value(5), 3, "strnlen_s");
        assert_eq!(
            value(6),
            (-12i64).cast_unsigned(),
            "ring buffer: the first record fits (0), the last finds it full (-12)"
        );
        assert_eq!(
            value(7),
            42,
            "the program read and incremented the test's value"
        );
        assert_eq!(program.printk_lines(), ["value 21"]);
        let lru = program.map("lru").expect("lru");
        assert_eq!(
            lru.keys(),
            [1u32.to_le_bytes().to_vec(), 2u32.to_le_bytes().to_vec()],
            "the least recently used key was evicted"
        );
        assert_eq!(
            lru.update(&1u32.to_le_bytes(), &0u64.to_le_bytes(), BPF_NOEXIST),
            Err(MapError::Result(EBPF_KEY_ALREADY_EXISTS))
        );
        assert_eq!(
            lru.delete(&9u32.to_le_bytes()),
            Err(MapError::Result(EBPF_KEY_NOT_FOUND))
        );
        let records = program.map("ring").expect("ring").drain_records();
        assert_eq!(
            records.len(),
            15,
            "4096 bytes hold fifteen records of 256 bytes and an 8-byte header"
        );
        assert_eq!(records[0].len(), 256);
        assert_eq!(records[0][..8], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert!(program.faults().is_empty());
    });
}

/// The core's array update refuses `BPF_NOEXIST` (an array's entries always exist) and checks
/// no other flag; a program's update of a per-CPU array writes its processor's copy whatever
/// the flags; a delete zeroes the value; a ring buffer has no update or delete; `bpf_memset`
/// returns the buffer's address.
#[test]
fn arrays_ring_buffers_and_memset_answer_as_the_cores() {
    let object = object();
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog/arrays", info).expect("loads");
        let results = program.map("results").expect("results map");
        run_clean(client, &program);
        let value = |key: u32| result(&results, key).cast_signed();
        assert_eq!(
            value(0),
            -6,
            "BPF_NOEXIST on an array: EBPF_INVALID_ARGUMENT"
        );
        assert_eq!(value(1), 0, "an unknown flag: not checked");
        assert_eq!(value(2), 5);
        assert_eq!(value(3), 0, "delete from an array");
        assert_eq!(value(4), 0, "zeroes the value in place");
        assert_eq!(value(5), -6, "delete past the end: EBPF_INVALID_ARGUMENT");
        assert_eq!(
            value(6),
            0,
            "a program's BPF_NOEXIST on a per-CPU array: written"
        );
        assert_eq!(value(7), -6, "past the end of a per-CPU array");
        assert_eq!(
            value(8),
            -18,
            "update of a ring buffer: EBPF_OPERATION_NOT_SUPPORTED"
        );
        assert_eq!(value(9), -18, "delete from a ring buffer");
        assert_eq!(value(10), 1, "bpf_memset returns the buffer");
        assert_eq!(value(11), 0x4141_4141_4141_4141);
        let copies = program
            .map("percpu")
            .expect("percpu")
            .lookup_per_cpu(&3u32.to_le_bytes())
            .expect("per-CPU")
            .expect("in range");
        assert_eq!(
            copies
                .iter()
                .filter(|c| c[..] == 5u64.to_le_bytes())
                .count(),
            1,
            "one processor's copy: {copies:?}"
        );
        // Test code updates as the core's user-mode update does: the same refusal.
        let scratch = program.map("scratch").expect("scratch");
        assert_eq!(
            scratch.update(&1u32.to_le_bytes(), &7u64.to_le_bytes(), BPF_NOEXIST),
            Err(MapError::Result(EBPF_INVALID_ARGUMENT))
        );
        assert_eq!(
            scratch.update(&1u32.to_le_bytes(), &7u64.to_le_bytes(), BPF_EXIST),
            Ok(())
        );
        assert_eq!(scratch.delete(&1u32.to_le_bytes()), Ok(()));
        assert_eq!(result(&scratch, 1), 0, "deleted: zero");
    });
}

/// A ring buffer's or perf event array's rings are a power of two of whole pages, and a ring
/// buffer has no key: anything else fails the map's creation, so the load.
#[test]
fn rings_that_are_not_whole_pages_in_a_power_of_two_are_refused() {
    for (map, refused) in [
        ("__uint(type, 13); __uint(max_entries, 4096);", false),
        ("__uint(type, 13); __uint(max_entries, 16384);", false),
        ("__uint(type, 14); __uint(max_entries, 4096);", false),
        ("__uint(type, 13); __uint(max_entries, 64);", true),
        ("__uint(type, 13); __uint(max_entries, 1000);", true),
        ("__uint(type, 13); __uint(max_entries, 12288);", true),
        ("__uint(type, 14); __uint(max_entries, 64);", true),
        (
            "__uint(type, 13); __type(key, uint32_t); __uint(max_entries, 4096);",
            true,
        ),
    ] {
        let object = compile(&format!(
            r#"{PRELUDE}
struct {{ {map} }} rings SEC(".maps");
SEC("test_prog")
int output(struct test_context* ctx) {{ uint64_t v = 1; return (int)bpf_ringbuf_output(&rings, &v, 8, 0); }}
char _license[] SEC("license") = "MIT";
"#
        ));
        with_info(|_, info| {
            let loaded = BpfProgram::load(&object, "test_prog", info);
            assert_eq!(loaded.is_err(), refused, "{map}");
            if let Err(error) = loaded {
                assert!(matches!(error, BpfError::Map(_)), "{map}: {error}");
            }
        });
    }
}

#[test]
fn checksum_string_and_identity_helpers_behave_as_the_cores() {
    let object = object();
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog/general", info).expect("loads");
        let results = program.map("results").expect("results map");
        let bytes = context(0, 0);
        let context = client.create_context(&[], &bytes).expect("context");
        let value = |key: u32| result(&results, key);
        let before = filetime_now();
        // SAFETY: a context of the program type from its provider's context_create.
        assert_eq!(unsafe { program.run(context.as_ptr()) }, Ok(0));
        let after = filetime_now();
        assert!(program.faults().is_empty(), "{:?}", program.faults());
        assert_eq!(value(10), CORE_SIM_PROCESS_START_KEY);
        let created = value(11).cast_signed();
        assert!(
            (before..=after).contains(&created),
            "a FILETIME of this thread: {before} <= {created} <= {after}"
        );
        assert_eq!(value(12), value(11), "the same thread, the same time");
        assert_eq!(
            value(0),
            5 + 7 + 0xFFFE + 0xFFFD,
            "csum_diff: to + !from, unfolded"
        );
        assert_eq!(
            value(1),
            3 + 5 + 7,
            "a NULL `from` adds nothing; the seed is added"
        );
        assert_eq!(
            value(2),
            (-22i64).cast_unsigned(),
            "a size not a multiple of 4"
        );
        assert_eq!(value(3), CORE_SIM_LOGON_ID, "logon id below DISPATCH_LEVEL");
        assert_eq!(value(4), u64::MAX, "is_current_admin: -1, as the core's");
        assert_eq!(value(5), 0, "strncpy_s fits");
        assert_eq!(
            value(6).to_le_bytes(),
            *b"abc\0\0\0\0\0",
            "filled behind the NUL"
        );
        assert_eq!(
            value(7),
            i64::from(0x8000_0005u32.cast_signed()).cast_unsigned(),
            "strncat_s cut: STATUS_BUFFER_OVERFLOW"
        );
        assert_eq!(value(8).to_le_bytes(), *b"abcdefg\0", "cut and terminated");
        assert_eq!(
            value(9),
            i64::from(0xC000_000Du32.cast_signed()).cast_unsigned(),
            "size 0: STATUS_INVALID_PARAMETER"
        );

        // SAFETY: raising from PASSIVE_LEVEL; lowered back below on this thread.
        let old = unsafe { ebpf_ext_sys::intrin::KeRaiseIrql(DISPATCH_LEVEL) };
        // SAFETY: as above.
        let run = unsafe { program.run(context.as_ptr()) };
        // SAFETY: the value the raise returned.
        unsafe { ebpf_ext_sys::wdm::KeLowerIrql(old) };
        assert_eq!(run, Ok(0));
        assert_eq!(value(3), 0, "no logon id at DISPATCH_LEVEL");
    });
}

#[test]
fn queues_and_stacks_push_pop_and_peek_in_their_order() {
    let object = object();
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog/queues", info).expect("loads");
        let results = program.map("results").expect("results map");
        let bytes = context(0, 0);
        let context = client.create_context(&[], &bytes).expect("context");
        // SAFETY: a context of the program type from its provider's context_create.
        assert_eq!(unsafe { program.run(context.as_ptr()) }, Ok(0));
        assert!(program.faults().is_empty(), "{:?}", program.faults());
        let value = |key: u32| result(&results, key).cast_signed();
        // Under base: every push, peek and pop that should succeed (0), a push when full
        // (-29), a pop and a peek when empty (-7), then peeked << 16 | popped << 8 | last.
        let order = |(seen, popped, last): (i64, i64, i64)| seen << 16 | popped << 8 | last;
        for (base, what, expected) in [
            (0, "queue: 1 dropped by BPF_EXIST, oldest first", (2, 2, 3)),
            (5, "stack: 1 dropped by BPF_EXIST, newest first", (3, 3, 2)),
        ] {
            let got: Vec<i64> = (base..base + 5).map(value).collect();
            assert_eq!(got, [0, -29, -7, -7, order(expected)], "{what}");
        }
        assert_eq!(value(10), -6, "push to an array: EBPF_INVALID_ARGUMENT");
        assert_eq!(
            value(11),
            -18,
            "push to a ring buffer: EBPF_OPERATION_NOT_SUPPORTED"
        );
        assert_eq!(
            value(12),
            -18,
            "delete from a queue: EBPF_OPERATION_NOT_SUPPORTED"
        );
        assert_eq!(value(13), -18, "pop from a ring buffer: not supported");
        assert_eq!(value(14), 0, "update of a queue: a push");

        // Test code pushes as the core's user-mode update does, and pops.
        let queue = program.map("queue").expect("queue");
        assert_eq!(
            queue.queued_values(),
            Ok(vec![9u32.to_le_bytes().to_vec()]),
            "the program's update"
        );
        for v in [7u32, 8, 9] {
            queue
                .update(&[], &v.to_le_bytes(), BPF_EXIST)
                .expect("push");
        }
        let expected = [8u32.to_le_bytes().to_vec(), 9u32.to_le_bytes().to_vec()];
        assert_eq!(
            queue.queued_values(),
            Ok(expected.to_vec()),
            "9 and 7 dropped"
        );
        assert_eq!(queue.pop(), Ok(Some(expected[0].clone())));
        assert_eq!(queue.queued_values(), Ok(expected[1..].to_vec()));
        assert_eq!(
            queue.update(&[], &1u32.to_le_bytes(), 0),
            Ok(()),
            "room for one"
        );
        assert_eq!(
            queue.update(&[], &2u32.to_le_bytes(), 0),
            Err(MapError::Result(EBPF_OUT_OF_SPACE))
        );
        assert_eq!(
            queue.lookup(&[]),
            Err(MapError::WrongMapType(10)),
            "no keyed lookup"
        );
        assert_eq!(results.pop(), Err(MapError::WrongMapType(2)));

        let lookup = BpfProgram::load(&object, "test_prog/lookup_queue", info).expect("loads");
        // SAFETY: as above.
        let found = unsafe { lookup.run(context.as_ptr()) };
        assert_eq!(
            found,
            Ok(0x01_08_2A),
            "NULL when empty, 8, 42: {:?}",
            lookup.faults()
        );
        let values = |map: &str| {
            let map = lookup.map(map).expect("map");
            let values = map.queued_values().expect("values");
            values
                .iter()
                .map(|v| u32::from_le_bytes(v[..4].try_into().expect("4 bytes")))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values("stack"),
            [1, 42],
            "the stack's newest value, changed in place"
        );
        assert_eq!(
            values("queue"),
            [8, 8],
            "the queue's oldest value (7), changed in place"
        );

        let rodata = BpfProgram::load(&object, "test_prog/pop_into_rodata", info).expect("loads");
        // SAFETY: as above.
        let refused = unsafe { rodata.run(context.as_ptr()) };
        assert!(
            matches!(&refused, Err(BpfError::Fault { message, .. }) if message.contains("read-only")),
            "{refused:?}"
        );
    });
}

#[test]
fn a_looked_up_queue_value_is_pushed_again_and_kept() {
    let object = object();
    with_info(|client, info| {
        let bytes = context(0, 0);
        let context = client.create_context(&[], &bytes).expect("context");
        let again =
            BpfProgram::load(&object, "test_prog/queue_push_looked_up", info).expect("loads");
        // SAFETY: a context of the program type from its provider's context_create.
        let kept = unsafe { again.run(context.as_ptr()) };
        assert_eq!(
            kept,
            Ok(7),
            "pushed, and the looked-up value kept: {:?}",
            again.faults()
        );
        let queue = again.map("queue").expect("queue");
        assert_eq!(
            queue.queued_values(),
            Ok(vec![
                9u32.to_le_bytes().to_vec(),
                7u32.to_le_bytes().to_vec()
            ])
        );
    });
}

#[test]
fn lookup_and_delete_takes_values_the_program_keeps_for_the_invocation() {
    let object = object();
    with_info(|client, info| {
        let program =
            BpfProgram::load(&object, "test_prog/lookup_and_delete", info).expect("loads");
        let results = program.map("results").expect("results map");
        let hash = program.map("hash").expect("hash");
        hash.update(&1u32.to_le_bytes(), &41u64.to_le_bytes(), BPF_NOEXIST)
            .expect("seeded");
        for key in 10u32..20 {
            hash.update(
                &key.to_le_bytes(),
                &u64::from(key).to_le_bytes(),
                BPF_NOEXIST,
            )
            .expect("seeded");
        }
        run_clean(client, &program);
        let value = |key: u32| result(&results, key);
        assert_eq!(
            value(0),
            41,
            "the value taken out stays readable after its slot is reused"
        );
        assert_eq!(value(1), 1, "an absent key: NULL");
        assert_eq!(value(2), 5, "a queue: its next value");
        assert_eq!(value(3), 1, "an array: NULL, as the core refuses it");
        assert_eq!(
            value(4),
            6,
            "eight values per invocation (two taken before the loop): the rest NULL"
        );
        assert_eq!(
            hash.lookup(&1u32.to_le_bytes()),
            Ok(Some(99u64.to_le_bytes().to_vec())),
            "the write through the taken value went to the program's copy"
        );
        assert_eq!(
            hash.keys().len(),
            1 + 4,
            "key 1 again, and the four the loop could not take"
        );

        // A kept value is followed by bytes no program may address.
        let guarded = BpfProgram::load(&object, "test_prog/kept_guard", info).expect("loads");
        let guarded_hash = guarded.map("hash").expect("its own hash map");
        let value = 0x0807_0605_0403_0201u64.to_le_bytes();
        let run_at = |offset: u64| {
            guarded_hash
                .update(&1u32.to_le_bytes(), &value, 0)
                .expect("seeded");
            let bytes = self::context(offset, 0);
            let at = client.create_context(&[], &bytes).expect("context");
            // SAFETY: as above.
            unsafe { guarded.run(at.as_ptr()) }
        };
        assert_eq!(run_at(7), Ok(8), "the last byte of the value");
        let past = run_at(8);
        assert!(matches!(past, Err(BpfError::Fault { .. })), "{past:?}");
    });
}

/// Programs built for `-mcpu=v3` (32-bit jumps and arithmetic, which clang emits there) run
/// as the same programs built for the generic CPU do: same results, same maps.
#[test]
fn programs_built_for_cpu_v3_behave_as_the_generic_build() {
    let source = format!("{PRELUDE}{PROGRAMS}");
    let (generic, generic_bytes) = compile_for("generic", &source);
    let (v3, v3_bytes) = compile_for("v3", &source);
    assert_ne!(generic_bytes, v3_bytes, "clang built different code");
    with_info(|client, info| {
        let outcome = |object: &BpfObject, section: &str| {
            let program = BpfProgram::load(object, section, info).expect("loads");
            let (data, bytes) = ([1u8, 2, 3, 250], context(3, 7));
            let at = client.create_context(&data, &bytes).expect("context");
            // SAFETY: a context of the program type from its provider's context_create.
            let run = unsafe { program.run(at.as_ptr()) };
            let maps: Vec<_> = ["results", "lru", "queue", "hash", "stack"]
                .iter()
                .filter_map(|name| program.map(name))
                .map(|map| {
                    let mut keys = map.keys();
                    keys.sort();
                    let values: Vec<_> = keys.iter().map(|k| map.lookup(k)).collect();
                    (keys, values)
                })
                .collect();
            (run, maps, program.faults())
        };
        for section in [
            "test_prog",
            "test_prog/general",
            "test_prog/queues",
            "test_prog/lookup_and_delete",
            "test_prog/stack_overrun",
        ] {
            let built_for_v3 = outcome(&v3, section);
            assert_eq!(built_for_v3, outcome(&generic, section), "{section}");
            assert!(built_for_v3.0.is_ok(), "{section}: {:?}", built_for_v3.0);
        }
    });
}

/// A load that starts inside a map value and ends past it faults: every byte is checked,
/// not only the first.
#[test]
fn a_load_that_runs_past_a_map_value_faults() {
    let object = compile(&format!(
        r#"{PRELUDE}
struct {{ __uint(type, 2); __type(key, uint32_t); __type(value, uint32_t); __uint(max_entries, 1); }} small SEC(".maps");
SEC("test_prog")
int straddle(struct test_context* ctx)
{{
    uint32_t key = 0;
    volatile uint8_t* value = bpf_map_lookup_elem(&small, &key);
    return value ? *(volatile uint32_t*)(value + ctx->value) : -1;
}}
char _license[] SEC("license") = "MIT";
"#
    ));
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog", info).expect("loads");
        let run_at = |offset: u64| {
            let bytes = context(offset, 0);
            let at = client.create_context(&[], &bytes).expect("context");
            // SAFETY: a context of the program type from its provider's context_create.
            unsafe { program.run(at.as_ptr()) }
        };
        assert_eq!(run_at(0), Ok(0), "the whole value");
        for offset in 1..4 {
            let fault = run_at(offset).expect_err("runs past the value");
            assert!(
                fault.to_string().contains("out of bounds load of 4 bytes"),
                "{fault}"
            );
        }
    });
}

#[test]
fn lookup_and_delete_refuses_maps_whose_values_it_cannot_keep() {
    let object = compile(&format!(
        r#"{PRELUDE}
struct big {{ uint8_t bytes[0x10008]; }};
struct {{ __uint(type, 1); __type(key, uint32_t); __type(value, struct big); __uint(max_entries, 1); }} big SEC(".maps");
SEC("test_prog")
int take(struct test_context* ctx) {{ uint32_t key = 0; return bpf_map_lookup_and_delete_elem(&big, &key) != 0; }}
char _license[] SEC("license") = "MIT";
"#
    ));
    with_info(|_, info| {
        let refused = BpfProgram::load(&object, "test_prog", info).expect_err("refused");
        assert!(
            matches!(&refused, BpfError::Map(message) if message.contains("65544")),
            "{refused}"
        );
    });
}

#[test]
fn out_of_bounds_accesses_fail_the_invocation_not_the_process() {
    let object = object();
    with_info(|client, info| {
        let program = BpfProgram::load(&object, "test_prog/stack_overrun", info).expect("loads");
        let (small, large) = (context(3, 0), context(4096, 0));
        let inside = client.create_context(&[], &small).expect("context");
        // SAFETY: a context of the program type.
        assert_eq!(unsafe { program.run(inside.as_ptr()) }, Ok(0));
        let outside = client.create_context(&[], &large).expect("context");
        // SAFETY: as above.
        let fault = unsafe { program.run(outside.as_ptr()) }.expect_err("out of bounds");
        assert!(fault.to_string().contains("out of bounds"), "{fault}");
        assert_eq!(program.faults().len(), 1);
        let wrong = BpfProgram::load(&object, "test_prog/not_the_context", info).expect("loads");
        // SAFETY: as above.
        let fault = unsafe { wrong.run(inside.as_ptr()) }.expect_err("not the context");
        assert!(
            fault.to_string().contains("test_get_a")
                && fault.to_string().contains("not the program context"),
            "{fault}"
        );
    });
}

#[test]
fn the_verifiers_refusals_come_before_the_program_runs() {
    let object = object();
    with_info(|_, info| {
        let refused = |section| BpfProgram::load(&object, section, info).expect_err(section);
        assert!(matches!(
            refused("test_prog/undeclared"),
            BpfError::UndeclaredHelper { id: 0x10009, .. }
        ));
        assert!(matches!(
            refused("test_prog/socket_cookie"),
            BpfError::UnsupportedHelper { id: 26, .. }
        ));
        let overrun = refused("test_prog/context_overrun");
        assert!(
            matches!(
                overrun,
                BpfError::ContextAccess {
                    offset: 32,
                    size: 8,
                    context_size: 32,
                    ..
                }
            ),
            "{overrun}"
        );
        assert!(matches!(
            refused("no_such_section"),
            BpfError::NoSuchSection { .. }
        ));
    });
}

/// Programs that tail-call through `programs`, recording in `results` what ran.
const TAIL_CALLS: &str = r#"
struct { __uint(type, 3); __type(key, uint32_t); __type(value, uint32_t); __uint(max_entries, 40); } programs SEC(".maps");
struct { __uint(type, 2); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 16); } results SEC(".maps");

static inline __attribute__((always_inline)) void put(uint32_t key, uint64_t value)
{
    bpf_map_update_elem(&results, &key, &value, 0);
}

SEC("test_prog")
int caller(struct test_context* ctx)
{
    put(0, 1);
    long result = bpf_tail_call(ctx, &programs, (uint32_t)ctx->value);
    put(1, 1000 + (uint64_t)result);
    return 7;
}

SEC("test_prog/callee")
int callee(struct test_context* ctx)
{
    put(2, ctx->value);
    ctx->flags = 99;
    return 42;
}

// Counts its runs in results[3], tail-calls programs[1]; returns the count.
SEC("test_prog/chain")
int chain(struct test_context* ctx)
{
    uint32_t key = 3;
    uint64_t* runs = bpf_map_lookup_elem(&results, &key);
    if (!runs)
        return -1;
    *runs += 1;
    put(4, (uint64_t)bpf_tail_call(ctx, &programs, 1));
    return (int)*runs;
}

// Writes ctx->flags over slot 0 of the context header, then tail-calls programs[ctx->value].
SEC("test_prog/clobber")
int clobber(struct test_context* ctx)
{
    test_clobber_header(ctx, ctx->flags, 0);
    return (int)bpf_tail_call(ctx, &programs, (uint32_t)ctx->value);
}

// The map helpers on a program array.
SEC("test_prog/array_helpers")
int array_helpers(struct test_context* ctx)
{
    uint32_t zero = 0, past = 40, id = 0;
    put(5, bpf_map_lookup_elem(&programs, &zero) == 0);
    put(6, (uint64_t)bpf_map_update_elem(&programs, &zero, &id, 0));
    put(7, (uint64_t)bpf_map_delete_elem(&programs, &zero));
    put(8, (uint64_t)bpf_map_delete_elem(&programs, &past));
    return 0;
}

char _license[] SEC("license") = "MIT";
"#;

/// The test run's return value and `ctx_out`'s `flags`.
fn tail_run(program: &BpfProgram, client: &ProgramInfoClient, value: u64) -> (u32, u64) {
    let out = program
        .test_run(client, &[1, 2], &context(value, 0), 1)
        .expect("test run");
    let flags = u64::from_le_bytes(out.context_out[8..16].try_into().expect("8 bytes"));
    (out.return_value, flags)
}

/// The program of `section` among `programs`.
fn section(programs: &[Arc<BpfProgram>], section: &str) -> Arc<BpfProgram> {
    let found = programs.iter().find(|p| p.section() == section);
    Arc::clone(found.expect(section))
}

#[test]
fn a_tail_call_continues_in_the_array_program_and_the_caller_returns_at_once() {
    let object = compile(&format!("{PRELUDE}{TAIL_CALLS}"));
    with_info(|client, info| {
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let (caller, target) = (
            section(&programs, "test_prog"),
            section(&programs, "test_prog/callee"),
        );
        let (slots, results) = (
            caller.map("programs").expect("array"),
            caller.map("results").expect("results"),
        );
        assert!(
            Arc::ptr_eq(&slots, &target.map("programs").expect("array")),
            "one object's programs share its maps"
        );
        slots.set_program(5, &target).expect("set");

        assert_eq!(
            tail_run(&caller, client, 5),
            (42, 99),
            "the target's result and context"
        );
        assert_eq!(result(&results, 0), 1, "the caller ran");
        assert_eq!(
            result(&results, 1),
            0,
            "and returned at its successful tail call"
        );
        assert_eq!(
            result(&results, 2),
            5,
            "the target saw the caller's context"
        );
        assert_eq!((caller.runs(), target.runs()), (1, 1));

        for (index, what) in [(6, "an empty slot"), (40, "past the end")] {
            assert_eq!(
                tail_run(&caller, client, index).0,
                7,
                "{what}: the caller goes on"
            );
            assert_eq!(
                result(&results, 1),
                1000 - 6,
                "{what}: -EBPF_INVALID_ARGUMENT"
            );
        }
        slots.delete(&5u32.to_le_bytes()).expect("emptied");
        assert_eq!(tail_run(&caller, client, 5).0, 7, "an emptied slot");
        assert_eq!(target.runs(), 1);
    });
}

#[test]
fn tail_calls_stop_after_thirty_three_and_need_the_invocations_state() {
    let object = compile(&format!("{PRELUDE}{TAIL_CALLS}"));
    with_info(|client, info| {
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let chain = section(&programs, "test_prog/chain");
        let slots = chain.map("programs").expect("array");
        slots.set_program(1, &chain).expect("set");
        let results = chain.map("results").expect("results");
        assert_eq!(
            tail_run(&chain, client, 0).0,
            34,
            "the last program's result"
        );
        assert_eq!(result(&results, 3), 34, "the program and 33 tail calls");
        assert_eq!(chain.runs(), 34);
        assert_eq!(
            result(&results, 4),
            (-27i64).cast_unsigned(),
            "the 34th call: EBPF_NO_MORE_TAIL_CALLS"
        );

        // Run directly, the program has no execution state: the call fails as the core's
        // does without one.
        let bytes = context(0, 0);
        let context_of = client.create_context(&[], &bytes).expect("context");
        // SAFETY: a context of the program type from its provider's context_create.
        assert_eq!(unsafe { chain.run(context_of.as_ptr()) }, Ok(35));
        assert_eq!(result(&results, 4), (-6i64).cast_unsigned());
        drop(context_of);

        // An extension that overwrote the header's state slot: a fault where the core would
        // write through it; NULL there, or an empty slot, fails the call as in the core.
        let clobber = section(&programs, "test_prog/clobber");
        let run =
            |slot: u64, header: u64| clobber.test_run(client, &[1], &context(slot, header), 1);
        let fault = run(1, 0xDEAD).expect_err("faults");
        assert!(
            fault
                .to_string()
                .contains("slot 0 of the context header holds 0xdead"),
            "{fault}"
        );
        assert_eq!(
            run(2, 0xDEAD).map(|r| r.return_value),
            Ok(0xFFFF_FFFA),
            "empty slot"
        );
        assert_eq!(
            run(1, 0).map(|r| r.return_value),
            Ok(0xFFFF_FFFA),
            "no state"
        );
    });
}

/// A context as a hook passes it: the core's header, then the test program type's context.
#[repr(C)]
struct HookedContext {
    header: [u64; 8],
    context: TestContext,
}

impl HookedContext {
    /// `context` behind a zeroed header.
    fn new(context: TestContext) -> Self {
        HookedContext {
            header: [0; 8],
            context,
        }
    }

    /// A context of `value` and `flags` with no data.
    fn of(value: u64, flags: u64) -> Self {
        Self::new(TestContext {
            value,
            flags,
            data_start: core::ptr::null(),
            data_end: core::ptr::null(),
        })
    }

    /// The pointer a program sees: just past the header.
    fn ptr(&mut self) -> *mut core::ffi::c_void {
        (&raw mut self.context).cast()
    }
}

#[test]
fn a_hooks_invocations_each_get_thirty_three_tail_calls() {
    let object = compile(&format!("{PRELUDE}{TAIL_CALLS}"));
    with_info(|_, info| {
        let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let chain = section(&programs, "test_prog/chain");
        chain
            .map("programs")
            .expect("array")
            .set_program(1, &chain)
            .expect("set");
        let link = chain
            .attach(LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE))
            .expect("attached");
        let mut hooked = HookedContext::of(0, 0);
        let context_ptr = hooked.ptr();
        assert_eq!(hook.state.invoke(0, context_ptr), (EBPF_SUCCESS, 34));

        // A batch reuses one state: each invocation starts its count again.
        let client = hook.state.client(0);
        let table = client.table.expect("dispatch table");
        let (begin, invoke, end) = (
            table
                .ebpf_program_batch_begin_invoke_function
                .expect("begin"),
            table.ebpf_program_batch_invoke_function.expect("invoke"),
            table.ebpf_program_batch_end_invoke_function.expect("end"),
        );
        let mut state = [0u64; 8];
        let state_ptr = state.as_mut_ptr().cast::<core::ffi::c_void>();
        // SAFETY: a 64-byte state, begun, invoked and ended on this thread.
        assert_eq!(unsafe { begin(64, state_ptr) }, EBPF_SUCCESS);
        for expected in [68, 102] {
            let mut result = 0;
            // SAFETY: the begun state, the link's binding context, a context with its header.
            let status = unsafe {
                invoke(
                    client.binding_context as *const core::ffi::c_void,
                    context_ptr,
                    &raw mut result,
                    state_ptr,
                )
            };
            assert_eq!((status, result), (EBPF_SUCCESS, expected));
        }
        // SAFETY: as above.
        assert_eq!(unsafe { end(state_ptr) }, EBPF_SUCCESS);
        assert_eq!(chain.runs(), 102);
        link.detach().expect("detached");
        hook.deregister();
    });
}

#[test]
fn program_arrays_take_programs_of_one_type_by_index() {
    let object = compile(&format!("{PRELUDE}{TAIL_CALLS}"));
    let other_type = GUID::from_u128(0x7e57_0000_0000_0000_0000_0000_0000_0002);
    with_info(|client, info| {
        let other_spec = ProgramDataSpec {
            program_type: other_type,
            ..spec()
        };
        let other_provider = InfoProvider::register(other_type, &other_spec);
        let other_client = ProgramInfoClient::attach(other_type).expect("attached");
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let caller = &programs[0];
        let slots = caller.map("programs").expect("array");
        let stranger =
            BpfProgram::load(&object, "test_prog/callee", &other_client.info()).expect("loads");
        assert_eq!(
            slots.set_program(0, &stranger),
            Err(MapError::Result(EBPF_INVALID_FD)),
            "a program of another type"
        );
        let mut wider = info.unbound();
        wider.context_descriptor.size = 4096;
        let wide = BpfProgram::load(&object, "test_prog/callee", &Arc::new(wider)).expect("loads");
        assert_eq!(
            slots.set_program(0, &wide),
            Err(MapError::Result(EBPF_INVALID_FD)),
            "a program of the type with another context layout"
        );
        assert!(
            matches!(
                wide.test_run(client, &[1], &context(0, 0), 1),
                Err(BpfError::TestRun(_))
            ),
            "nor does a test run give it a context of another layout"
        );
        assert_eq!(
            slots.set_program(40, caller),
            Err(MapError::Result(EBPF_INVALID_ARGUMENT)),
            "past the end"
        );
        let results = caller.map("results").expect("results");
        assert_eq!(
            results.set_program(0, caller),
            Err(MapError::WrongMapType(2))
        );
        assert_eq!(
            slots.update(&0u32.to_le_bytes(), &0u32.to_le_bytes(), 0),
            Err(MapError::WrongMapType(3)),
            "test code sets programs, not ids"
        );
        slots.set_program(0, caller).expect("set");
        assert!(slots.program_at(0).is_some_and(|p| Arc::ptr_eq(&p, caller)));
        assert!(slots.program_at(40).is_none(), "past the end");

        // From a program: no lookup, no update, delete empties the slot.
        let helpers = section(&programs, "test_prog/array_helpers");
        assert_eq!(
            helpers
                .test_run(client, &[1], &context(0, 0), 1)
                .map(|r| r.return_value),
            Ok(0)
        );
        let value = |key| result(&results, key);
        assert_eq!(value(5), 1, "lookup: NULL");
        assert_eq!(
            value(6),
            (-18i64).cast_unsigned(),
            "update: EBPF_OPERATION_NOT_SUPPORTED"
        );
        assert_eq!(
            (value(7), value(8)),
            (0, (-7i64).cast_unsigned()),
            "delete; past the end"
        );
        assert!(slots.program_at(0).is_none(), "emptied by the program");

        slots.set_program(0, caller).expect("set");
        drop(programs);
        assert!(
            slots.program_at(0).is_none(),
            "the array does not keep a program alive"
        );
        drop((stranger, wide));
        drop(other_client);
        other_provider.deregister();
    });
}

/// Programs that write perf events.
const PERF_EVENTS: &str = r#"
struct { __uint(type, 14); __type(key, uint32_t); __type(value, uint32_t); __uint(max_entries, 4096); } events SEC(".maps");
struct { __uint(type, 2); __type(key, uint32_t); __type(value, uint64_t); __uint(max_entries, 1); } other SEC(".maps");

// A record of ctx->value, with ctx->flags as the helper's flags.
SEC("test_prog/perf")
int perf(struct test_context* ctx)
{
    uint64_t value = ctx->value;
    return (int)bpf_perf_event_output(ctx, &events, ctx->flags, &value, sizeof(value));
}

// The same after writing ctx->value over slot 1 of the context header.
SEC("test_prog/perf_clobber")
int perf_clobber(struct test_context* ctx)
{
    uint64_t value = 1;
    test_clobber_header(ctx, ctx->value, 1);
    return (int)bpf_perf_event_output(ctx, &events, ctx->flags, &value, sizeof(value));
}

// The map helpers on a perf event array: 7 when update and delete give
// -EBPF_OPERATION_NOT_SUPPORTED and lookup NULL.
SEC("test_prog/perf_map_ops")
int perf_map_ops(struct test_context* ctx)
{
    uint32_t key = 0, value = 0;
    int update = bpf_map_update_elem(&events, &key, &value, 0) == -18;
    int delete = bpf_map_delete_elem(&events, &key) == -18;
    int lookup = bpf_map_lookup_elem(&events, &key) == 0;
    return update | delete << 1 | lookup << 2;
}

SEC("test_prog/perf_wrong_map")
int perf_wrong_map(struct test_context* ctx)
{
    uint64_t value = 1;
    return (int)bpf_perf_event_output(ctx, &other, 0xffffffffULL, &value, sizeof(value));
}

char _license[] SEC("license") = "MIT";
"#;

/// `EBPF_MAP_FLAG_CURRENT_CPU`.
const CURRENT_CPU: u64 = 0xFFFF_FFFF;

/// Every processor's records, in processor order, and the records lost.
fn perf_records(map: &BpfMap) -> (Vec<Vec<u8>>, u64) {
    let (mut records, mut lost) = (Vec::new(), 0);
    for cpu in 0.. {
        let Ok(mut more) = map.drain_cpu_records(cpu) else {
            break;
        };
        records.append(&mut more);
        lost += map.lost_records(cpu).expect("a processor");
    }
    (records, lost)
}

#[test]
fn perf_events_go_to_the_running_processors_ring_with_context_data_on_request() {
    let object = compile(&format!("{PRELUDE}{PERF_EVENTS}"));
    with_info(|client, info| {
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let perf = section(&programs, "test_prog/perf");
        let events = perf.map("events").expect("events");
        let run = |value: u64, flags: u64| {
            perf.test_run(client, &[1, 2, 3], &context(value, flags), 1)
                .expect("runs")
                .return_value
        };
        let record = |value: u64, data: &[u8]| [&value.to_le_bytes()[..], data].concat();

        assert_eq!(run(7, CURRENT_CPU), 0);
        assert_eq!(
            run(8, CURRENT_CPU | 2 << 32),
            0,
            "with 2 bytes of context data"
        );
        assert_eq!(
            perf_records(&events),
            (vec![record(7, &[]), record(8, &[1, 2])], 0)
        );

        let invalid = (-6i32).cast_unsigned();
        assert_eq!(
            run(9, CURRENT_CPU | 4 << 32),
            invalid,
            "more context data than there is"
        );
        assert_eq!(
            run(9, 5_000),
            invalid,
            "any number but the running processor's"
        );
        assert_eq!(
            perf_records(&events),
            (vec![], 0),
            "none of them written or lost"
        );
        assert_eq!(run(8, CURRENT_CPU | 1 << 60), 0, "bits 52-63 are ignored");
        assert_eq!(
            run(8, CURRENT_CPU | 0xFFF << 52 | 2 << 32),
            0,
            "with a length too"
        );
        assert_eq!(
            perf_records(&events),
            (vec![record(8, &[]), record(8, &[1, 2])], 0)
        );

        // The test provider's test runs are at DISPATCH_LEVEL: the running processor's own
        // number, and only it, is as good as CURRENT_CPU there.
        let accepted: Vec<u64> = (0..64).filter(|&index| run(10, index) == 0).collect();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        let cpu = usize::try_from(accepted[0]).expect("small");
        assert_eq!(events.drain_cpu_records(cpu), Ok(vec![record(10, &[])]));

        // A plain run: core-sim gives it no context descriptor, so no context data to
        // capture (checked before the processor, as the core does), and an explicit
        // processor number below DISPATCH_LEVEL is refused.
        let not_supported = Ok((-18i64).cast_unsigned());
        let plain_run = |flags: u64| {
            let bytes = context(1, flags);
            let plain = client.create_context(&[1], &bytes).expect("context");
            // SAFETY: a context of the program type from its provider's context_create.
            unsafe { perf.run(plain.as_ptr()) }
        };
        assert_eq!(plain_run(CURRENT_CPU | 1 << 32), not_supported);
        assert_eq!(plain_run(0x1388 | 1 << 32), not_supported, "the data first");
        assert_eq!(
            plain_run(accepted[0]),
            Ok((-6i64).cast_unsigned()),
            "PASSIVE_LEVEL"
        );

        let ops = section(&programs, "test_prog/perf_map_ops");
        let out = ops.test_run(client, &[1], &context(0, 0), 1).expect("runs");
        assert_eq!(
            out.return_value, 7,
            "update and delete refused, lookup NULL"
        );

        let wrong = section(&programs, "test_prog/perf_wrong_map");
        let fault = wrong
            .test_run(client, &[1], &context(0, 0), 1)
            .expect_err("faults");
        assert!(
            fault.to_string().contains("not a perf event array"),
            "{fault}"
        );

        let clobber = section(&programs, "test_prog/perf_clobber");
        let fault = clobber
            .test_run(client, &[1], &context(0xBAD, CURRENT_CPU | 1 << 32), 1)
            .expect_err("faults");
        assert!(
            fault
                .to_string()
                .contains("slot 1 of the context header holds 0xbad"),
            "{fault}"
        );
    });
}

/// A record over a perf ring's size is refused and counted as lost; a full ring loses the
/// records it has no room for.
#[test]
fn a_perf_ring_refuses_records_over_its_size_and_loses_those_it_has_no_room_for() {
    let object = compile(&format!("{PRELUDE}{PERF_EVENTS}"));
    with_info(|client, info| {
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let perf = section(&programs, "test_prog/perf");
        let events = perf.map("events").expect("events");
        let invalid = (-6i32).cast_unsigned();
        // A record over the ring's 4096 bytes: refused, and counted as lost.
        let with_data = |value: u64, data: &[u8]| {
            let context = context(value, CURRENT_CPU | (data.len() as u64) << 32);
            perf.test_run(client, data, &context, 1)
                .expect("runs")
                .return_value
        };
        assert_eq!(with_data(1, &[0xAB; 4096]), invalid);
        assert_eq!(perf_records(&events), (vec![], 1));

        // 4096 bytes hold four records of 1016 bytes and an 8-byte header; the fifth is lost.
        let results: Vec<u32> = (0..5).map(|v| with_data(v, &[0xCD; 1008])).collect();
        assert_eq!(results, [0, 0, 0, 0, (-12i32).cast_unsigned()]);
        let (records, lost) = perf_records(&events);
        assert_eq!((records.len(), lost), (4, 2), "lost counts since creation");
    });
}

#[test]
fn a_hooks_invocation_gives_perf_events_the_context_data() {
    let object = compile(&format!("{PRELUDE}{PERF_EVENTS}"));
    with_info(|_, info| {
        let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
        let programs = BpfProgram::load_all(&object, info).expect("loads");
        let perf = section(&programs, "test_prog/perf");
        let link = perf
            .attach(LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE))
            .expect("attached");
        let data = [5u8, 6, 7];
        let mut hooked = HookedContext::new(TestContext {
            value: 3,
            flags: CURRENT_CPU | 3 << 32,
            data_start: data.as_ptr(),
            data_end: data.as_ptr().wrapping_add(data.len()),
        });
        let context_ptr = hooked.ptr();
        assert_eq!(hook.state.invoke(0, context_ptr), (EBPF_SUCCESS, 0));
        // SAFETY: the invoke put the program's context descriptor in slot 1.
        let descriptor = unsafe {
            (hooked.header[1] as *const ebpf_ext_sys::ebpf_program_types::ebpf_context_descriptor_t)
                .read()
        };
        assert_eq!(
            descriptor, info.context_descriptor,
            "slot 1: the descriptor"
        );
        let events = perf.map("events").expect("events");
        assert_eq!(
            perf_records(&events),
            (vec![[&3u64.to_le_bytes()[..], &data].concat()], 0)
        );
        // No data at all: shorter than asked.
        hooked.context.data_end = hooked.context.data_start;
        let context_ptr = hooked.ptr();
        assert_eq!(
            hook.state.invoke(0, context_ptr),
            (EBPF_SUCCESS, (-6i32).cast_unsigned())
        );
        link.detach().expect("detached");
        hook.deregister();
    });
}

// ---- BTF-resolved functions --------------------------------------------------------------

const BTF_FUNCTIONS: &str = r#"
#define MODULE(g) __attribute__((section(".ksyms"), btf_decl_tag("module_id:" g)))
extern uint64_t test_btf_lookup(uint64_t key, void* value, uint64_t size) MODULE("{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}");
extern uint64_t test_btf_wait(uint64_t a) MODULE("{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}");
extern uint64_t test_btf_untagged(uint64_t a) __attribute__((section(".ksyms")));

SEC("test_prog/btf")
int btf(struct test_context* ctx)
{
    uint64_t value = 0;
    uint64_t sum = test_btf_lookup(ctx->value, &value, sizeof(value));
    // A helper too: its id, not the function's BTF id, is the program's helper id.
    if (bpf_get_current_pid_tgid() != 0x1234)
        return -1;
    return (int)(sum * 1000 + value);
}

// The call in a function of .text, which the program calls.
static __attribute__((noinline)) uint64_t lookup_twice(uint64_t key)
{
    uint64_t value = 0;
    return test_btf_lookup(key, &value, sizeof(value)) + value;
}

SEC("test_prog/btf_subprogram")
int btf_subprogram(struct test_context* ctx) { return (int)lookup_twice(ctx->value); }

SEC("test_prog/btf_overrun")
int btf_overrun(struct test_context* ctx)
{
    uint64_t value = 0;
    return (int)test_btf_lookup(1, &value, 16);
}

SEC("test_prog/btf_wait")
int btf_wait(struct test_context* ctx) { return (int)test_btf_wait(ctx->value); }

SEC("test_prog/btf_untagged")
int btf_untagged(struct test_context* ctx) { return (int)test_btf_untagged(1); }

// Reads 8 bytes past the 32-byte context: refused by the program's checks.
SEC("test_prog/btf_refused")
int btf_refused(struct test_context* ctx)
{
    uint64_t value = 0;
    return (int)test_btf_lookup(((uint64_t*)ctx)[4], &value, sizeof(value));
}
"#;

/// The module the test's BTF-resolved functions come from.
const BTF_MODULE: GUID = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);

/// `test_btf_lookup(key, value, size)`: stores `key` in the 8 bytes at `value` if there are
/// that many; returns `key + size`.
extern "win64" fn btf_lookup(key: u64, value: u64, size: u64, _: u64, _: u64) -> u64 {
    if value != 0 && size >= 8 {
        // SAFETY: the core-sim checked `size` bytes at `value` against the prototype.
        unsafe { (value as *mut u64).write_unaligned(key) };
    }
    key.wrapping_add(size)
}

/// The gate `test_btf_wait` blocks on, and whether it is blocking.
static BTF_GATE: std::sync::LazyLock<common::Gate> = std::sync::LazyLock::new(Default::default);
static BTF_WAITING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `test_btf_wait(a)`: for 5, blocks until [`BTF_GATE`] opens; returns `a`.
extern "win64" fn btf_wait(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    if a == 5 {
        BTF_WAITING.store(true, core::sync::atomic::Ordering::SeqCst);
        BTF_GATE.wait();
    }
    a
}

/// A BTF prototype with this header, name and arguments.
fn btf_prototype(
    header: ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t,
    name: Option<&'static core::ffi::CStr>,
    arguments: [i32; 5],
) -> ebpf_btf_resolved_function_prototype_t {
    ebpf_btf_resolved_function_prototype_t {
        header,
        name: name.map_or(core::ptr::null(), core::ffi::CStr::as_ptr),
        return_type: 0,
        arguments,
        flags: 0,
    }
}

/// Leaked provider data over `prototypes` and `addresses` (the count is the prototypes').
fn btf_data(
    prototypes: Vec<ebpf_btf_resolved_function_prototype_t>,
    addresses: Vec<u64>,
) -> *const core::ffi::c_void {
    let count = u32::try_from(prototypes.len()).expect("few");
    let prototypes = Box::leak(prototypes.into_boxed_slice());
    let addresses = Box::leak(addresses.into_boxed_slice());
    let data = Box::leak(Box::new(ebpf_btf_resolved_function_provider_data_t {
        header: EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_DATA_HEADER,
        btf_resolved_function_count: count,
        btf_resolved_function_prototypes: prototypes.as_ptr(),
        btf_resolved_function_addresses: addresses.as_ptr(),
    }));
    core::ptr::from_ref(data).cast()
}

/// The test module's two functions: lookup with `lookup_arguments`, and wait (whose one
/// argument is `ANYTHING`, or `CONST_SIZE` with `odd_wait`).
fn btf_module(lookup_arguments: [i32; 5], odd_wait: bool) -> *const core::ffi::c_void {
    btf_data(
        vec![
            btf_prototype(
                EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
                Some(c"test_btf_lookup"),
                lookup_arguments,
            ),
            btf_prototype(
                EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
                Some(c"test_btf_wait"),
                [
                    if odd_wait {
                        2
                    } else {
                        EBPF_ARGUMENT_TYPE_ANYTHING
                    },
                    0,
                    0,
                    0,
                    0,
                ],
            ),
        ],
        vec![btf_lookup as *const () as u64, btf_wait as *const () as u64],
    )
}

/// `[ANYTHING, PTR_TO_READABLE_MEM, CONST_SIZE]`, as upstream's sample declares its lookup.
const LOOKUP_ARGUMENTS: [i32; 5] = [1, 9, 2, 0, 0];

#[test]
fn a_btf_resolved_function_is_called_through_its_modules_provider() {
    let object = compile(&format!("{PRELUDE}{BTF_FUNCTIONS}"));
    with_info(|client, info| {
        let refused = BpfProgram::load(&object, "test_prog/btf", info).expect_err("no provider");
        assert!(
            matches!(&refused, BpfError::BtfFunction { message, .. }
                if message.contains("no provider") && message.contains(&BTF_MODULE.to_string())),
            "{refused}"
        );
        let other =
            common::register_btf_provider(GUID::from_u128(7), btf_module(LOOKUP_ARGUMENTS, false));
        assert!(
            BpfProgram::load(&object, "test_prog/btf", info).is_err(),
            "another module's provider is declined"
        );
        assert_eq!(
            other
                .state
                .attaches
                .load(core::sync::atomic::Ordering::SeqCst),
            0
        );
        let provider =
            common::register_btf_provider(BTF_MODULE, btf_module(LOOKUP_ARGUMENTS, false));
        let program = BpfProgram::load(&object, "test_prog/btf", info).expect("loads");
        let bytes = context(40, 0);
        let ctx = client.create_context(&[], &bytes).expect("context");
        // SAFETY: a context of the program type from its provider's context_create.
        let r0 = unsafe { program.run(ctx.as_ptr()) }.expect("runs");
        assert_eq!(
            r0,
            48 * 1000 + 40,
            "key + size, and the key stored in the value"
        );
        assert_eq!(
            program.btf_functions(),
            [BtfFunctionUse {
                module: BTF_MODULE,
                name: "test_btf_lookup".into(),
                prototype: BtfPrototype {
                    return_type: 0,
                    arguments: LOOKUP_ARGUMENTS,
                    flags: 0,
                },
            }]
        );
        assert_eq!(
            program.helper_ids(),
            [19],
            "the helper's id, and none for the BTF-resolved function"
        );
        let hashed = ebpf_ext_core_sim::program_info_hash_input_with_btf(
            info,
            &program.helper_ids(),
            &program.btf_functions(),
        )
        .expect("known");
        let mut expected = ebpf_ext_core_sim::program_info_hash_input(info, &[19]).expect("known");
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&BTF_MODULE.to_bytes_le());
        expected.extend_from_slice(b"test_btf_lookup");
        for v in [0, 1, 9, 2, 0, 0, 0u32] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(hashed, expected, "helpers, then the one function");

        let sub = BpfProgram::load(&object, "test_prog/btf_subprogram", info).expect("loads");
        // SAFETY: as above.
        let r0 = unsafe { sub.run(ctx.as_ptr()) }.expect("runs");
        assert_eq!(r0, 48 + 40, "called from a .text function");
        drop(sub);

        let overrun = BpfProgram::load(&object, "test_prog/btf_overrun", info).expect("loads");
        // SAFETY: as above.
        let fault = unsafe { overrun.run(ctx.as_ptr()) }.expect_err("16 bytes of an 8-byte value");
        assert!(fault.to_string().contains("test_btf_lookup"), "{fault}");

        let untagged =
            BpfProgram::load(&object, "test_prog/btf_untagged", info).expect_err("no module tag");
        assert!(untagged.to_string().contains("module_id"), "{untagged}");
        drop((program, overrun, ctx));
        provider.deregister();
        other.deregister();
    });
}

#[test]
fn a_program_is_checked_before_it_binds_and_reading_a_module_binds_nothing() {
    let object = compile(&format!("{PRELUDE}{BTF_FUNCTIONS}"));
    with_info(|_, info| {
        let provider =
            common::register_btf_provider(BTF_MODULE, btf_module(LOOKUP_ARGUMENTS, false));
        let attaches = || {
            provider
                .state
                .attaches
                .load(core::sync::atomic::Ordering::SeqCst)
        };
        let refused = BpfProgram::load(&object, "test_prog/btf_refused", info)
            .expect_err("beyond the context");
        assert!(
            matches!(refused, BpfError::ContextAccess { offset: 32, .. }),
            "{refused}"
        );
        assert_eq!(attaches(), 0, "a refused program binds to no provider");
        let published = ebpf_ext_core_sim::bpf::published_btf_functions(BTF_MODULE).expect("read");
        assert_eq!(published.len(), 2);
        assert_eq!(
            attaches(),
            0,
            "reading what a module publishes binds nothing"
        );
        let program = BpfProgram::load(&object, "test_prog/btf", info).expect("loads");
        assert_eq!(attaches(), 1, "a program that loads binds once");
        drop(program);
        // A second provider of the module, with another prototype: what is read is the first
        // one's, which a load binds to.
        let other = common::register_btf_provider(
            BTF_MODULE,
            btf_module([EBPF_ARGUMENT_TYPE_ANYTHING, 11, 2, 0, 0], false),
        );
        let published = ebpf_ext_core_sim::bpf::published_btf_functions(BTF_MODULE).expect("read");
        assert_eq!(published[0].prototype.arguments, LOOKUP_ARGUMENTS);
        let program = BpfProgram::load(&object, "test_prog/btf", info).expect("loads");
        assert_eq!(
            program.btf_functions()[0].prototype.arguments,
            LOOKUP_ARGUMENTS
        );
        assert_eq!(attaches(), 2);
        drop(program);
        other.deregister();
        provider.deregister();
    });
}

#[test]
fn invocations_fail_while_the_provider_is_detached_and_its_detach_waits_for_them() {
    let object = compile(&format!("{PRELUDE}{BTF_FUNCTIONS}"));
    with_kernel_and_info(|kernel, _, info| {
        let provider =
            common::register_btf_provider(BTF_MODULE, btf_module(LOOKUP_ARGUMENTS, false));
        let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
        let wait = BpfProgram::load(&object, "test_prog/btf_wait", info).expect("loads");
        let link = wait
            .attach(LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE))
            .expect("attached");
        let invoke = |value: u64| {
            let mut hooked = HookedContext::of(value, 0);
            hook.state.invoke(0, hooked.ptr())
        };
        let detached = core::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let running = kernel.scoped(scope, || invoke(5));
            common::wait_until("the function runs", || {
                BTF_WAITING.load(core::sync::atomic::Ordering::SeqCst)
            });
            kernel.scoped(scope, || {
                common::deregister_btf(&provider);
                detached.store(true, core::sync::atomic::Ordering::SeqCst);
            });
            // Once the detach has begun, a new invocation fails at once rather than wait.
            // They run on a thread of their own, so one that waits fails the test (the gate
            // opened, so everything drains) instead of hanging it.
            let (failed, failing) = std::sync::mpsc::channel();
            let invoke = &invoke;
            kernel.scoped(scope, move || {
                while invoke(9) != (EBPF_EXTENSION_FAILED_TO_LOAD, 0) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                failed.send(()).expect("the test waits");
            });
            if failing
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_err()
            {
                BTF_GATE.open();
                panic!("no invocation failed at once while the provider detached: one waited");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(
                !detached.load(core::sync::atomic::Ordering::SeqCst),
                "the provider's detach waits for the running invocation"
            );
            BTF_GATE.open();
            assert_eq!(running.join().expect("ran"), (EBPF_SUCCESS, 5));
            common::wait_until("the provider detached", || {
                detached.load(core::sync::atomic::Ordering::SeqCst)
            });
        });
        let runs = wait.runs();
        assert_eq!(
            invoke(6),
            (EBPF_EXTENSION_FAILED_TO_LOAD, 0),
            "no provider: the invocation fails"
        );
        assert_eq!(wait.runs(), runs, "and nothing runs");
        // Another prototype of the function than the one the program was checked against:
        // declined.
        let declines_before = kernel.nmr_declines().len();
        let changed = common::register_btf_provider(
            BTF_MODULE,
            btf_module([EBPF_ARGUMENT_TYPE_ANYTHING, 11, 2, 0, 0], true),
        );
        assert_eq!(invoke(7), (EBPF_EXTENSION_FAILED_TO_LOAD, 0));
        changed.deregister();
        let again = common::register_btf_provider(BTF_MODULE, btf_module(LOOKUP_ARGUMENTS, false));
        assert_eq!(invoke(8), (EBPF_SUCCESS, 8), "a provider attached again");
        let second = common::register_btf_provider(BTF_MODULE, btf_module(LOOKUP_ARGUMENTS, false));
        assert_eq!(
            second
                .state
                .attaches
                .load(core::sync::atomic::Ordering::SeqCst),
            0,
            "a second provider of an attached module is declined"
        );
        let declined: Vec<_> = kernel.nmr_declines()[declines_before..]
            .iter()
            .map(|d| (d.npi_id, d.provider_module, d.status))
            .collect();
        let btf = |status| (EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID, BTF_MODULE, status);
        assert_eq!(
            declined,
            [btf(STATUS_NOINTERFACE), btf(STATUS_INVALID_DEVICE_STATE)],
            "the changed prototype, then the second provider, each declined by the program's client"
        );
        link.detach().expect("detached");
        assert_eq!(
            Arc::strong_count(&wait),
            1,
            "a dead link releases its program (and so its clients)"
        );
        drop(wait);
        second.deregister();
        again.deregister();
        hook.deregister();
    });
}

#[test]
fn provider_data_the_core_would_refuse_is_declined_with_the_reason() {
    let object = compile(&format!("{PRELUDE}{BTF_FUNCTIONS}"));
    let good = || {
        btf_prototype(
            EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
            Some(c"test_btf_lookup"),
            LOOKUP_ARGUMENTS,
        )
    };
    let address = btf_lookup as *const () as u64;
    let header = |version, size, total_size| ebpf_ext_sys::ebpf_windows::ebpf_extension_header_t {
        version,
        size,
        total_size,
    };
    // Valid provider data with its own header replaced.
    let with_header = |provider_header| {
        let data = btf_data(vec![good()], vec![address]);
        // SAFETY: the data just leaked, written before registration.
        unsafe {
            (*data
                .cast_mut()
                .cast::<ebpf_btf_resolved_function_provider_data_t>())
            .header = provider_header;
        }
        data
    };
    let cases: Vec<(&str, *const core::ffi::c_void)> = vec![
        ("no functions", btf_data(vec![], vec![])),
        (
            "header",
            btf_data(
                vec![btf_prototype(
                    header(1, 64, 64),
                    Some(c"test_btf_lookup"),
                    LOOKUP_ARGUMENTS,
                )],
                vec![address],
            ),
        ),
        (
            "header",
            btf_data(
                vec![btf_prototype(
                    header(2, 60, 64),
                    Some(c"test_btf_lookup"),
                    LOOKUP_ARGUMENTS,
                )],
                vec![address],
            ),
        ),
        (
            "no name",
            btf_data(
                vec![btf_prototype(
                    EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
                    None,
                    LOOKUP_ARGUMENTS,
                )],
                vec![address],
            ),
        ),
        (
            "publishes no function test_btf_lookup",
            btf_data(
                vec![btf_prototype(
                    EBPF_BTF_RESOLVED_FUNCTION_PROTOTYPE_HEADER,
                    Some(c"test_btf_other"),
                    LOOKUP_ARGUMENTS,
                )],
                vec![address],
            ),
        ),
        ("address 0", btf_data(vec![good()], vec![0])),
        ("provider data header", with_header(header(1, 40, 48))),
        ("size: 48, total_size: 0", with_header(header(1, 48, 0))),
        ("no provider data", core::ptr::null()),
    ];
    with_info(|_, info| {
        for (why, data) in cases {
            let provider = common::register_btf_provider(BTF_MODULE, data);
            let refused = BpfProgram::load(&object, "test_prog/btf", info).expect_err("declined");
            assert!(refused.to_string().contains(why), "{why}: {refused}");
            assert_eq!(
                provider
                    .state
                    .attaches
                    .load(core::sync::atomic::Ordering::SeqCst),
                0
            );
            provider.deregister();
        }
    });
}

/// The gate `pid_wait` blocks on, and whether it is blocking.
static PID_GATE: std::sync::LazyLock<common::Gate> = std::sync::LazyLock::new(Default::default);
static PID_WAITING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A `bpf_get_current_pid_tgid` override that, for a context whose value is 5, blocks until
/// [`PID_GATE`] opens; returns 0x1234.
extern "win64" fn pid_wait(_: u64, _: u64, _: u64, _: u64, _: u64, context: u64) -> u64 {
    // SAFETY: the core-sim passes the program context, a TestContext, sixth.
    if unsafe { (*(context as *const TestContext)).value } == 5 {
        PID_WAITING.store(true, core::sync::atomic::Ordering::SeqCst);
        PID_GATE.wait();
    }
    0x1234
}

/// As the core: a program-information provider's detach waits for the runs in flight of
/// programs loaded with its data (its rundown), and afterwards those programs do not run
/// (invoke: `EBPF_EXTENSION_FAILED_TO_LOAD`, result 0) until a provider of the type attaches
/// again and their helpers re-resolve against it: then they call the new addresses.
#[test]
fn programs_of_a_detached_program_information_provider_do_not_run() {
    let object = returning("bpf_get_current_pid_tgid()");
    let kernel = Kernel::new();
    let mut spec = spec();
    spec.global_addresses = Some(Addresses::new(vec![pid_wait as *const () as u64]));
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = Arc::new(BpfProgram::load(&object, "test_prog", &client.info()).expect("loads"));
    let hook = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = program
        .attach(LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE))
        .expect("attached");
    let invoke = |value: u64| {
        let mut hooked = HookedContext::of(value, 0);
        hook.state.invoke(0, hooked.ptr())
    };
    assert_eq!(invoke(1), (EBPF_SUCCESS, 0x1234));

    let detached = core::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let running = kernel.scoped(scope, || invoke(5));
        common::wait_until("the helper runs", || {
            PID_WAITING.load(core::sync::atomic::Ordering::SeqCst)
        });
        kernel.scoped(scope, || {
            common::deregister_btf(&provider);
            detached.store(true, core::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Read before the gate opens, asserted after (the scope would wait for the blocked
        // helper if the assertion failed first).
        let waited = !detached.load(core::sync::atomic::Ordering::SeqCst);
        PID_GATE.open();
        assert!(waited, "the provider's detach waits for the run in flight");
        assert_eq!(running.join().expect("ran"), (EBPF_SUCCESS, 0x1234));
        common::wait_until("the provider detached", || {
            detached.load(core::sync::atomic::Ordering::SeqCst)
        });
    });
    let runs = program.runs();
    assert_eq!(invoke(1), (EBPF_EXTENSION_FAILED_TO_LOAD, 0));
    let mut hooked = HookedContext::of(1, 0);
    // SAFETY: a context of the program type.
    let run = unsafe { program.run(hooked.ptr()) };
    assert!(
        matches!(run, Err(BpfError::ProgramInfoDetached { .. })),
        "{run:?}"
    );
    assert_eq!(program.runs(), runs, "nothing ran");

    // The extension loaded again (say, a new image of the same driver): its override is at
    // another address, which the program calls from now on.
    spec.global_addresses = Some(Addresses::new(vec![pid_override_2 as *const () as u64]));
    let again = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    assert_eq!(
        invoke(1),
        (EBPF_SUCCESS, 0x5678),
        "the program loaded before runs again, with the new address"
    );
    assert_eq!(program.program_info_refusal(), None);
    drop(link);
    drop(program);
    hook.deregister();
    drop(client);
    again.deregister();
    kernel.assert_no_leaks();
}

/// As the core's attach for a program already loaded: a provider whose program data hashes
/// differently over the program's helpers (here a changed prototype of a helper it calls) is
/// refused by that program's own client before the provider sees it, and the program stays
/// unable to run, while a client with no such program (the test's) attaches; a program loaded
/// against the new data runs, and so does the old one once a provider with the original data
/// is back.
#[test]
fn a_reattached_provider_whose_helpers_changed_does_not_run_programs_loaded_before() {
    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let original = spec();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &original);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    assert_eq!(run_once(&program), Ok(0xA));
    let old_info = client.info();
    provider.deregister();

    // The next image declares test_get_a with another argument type.
    let mut changed = spec();
    changed.helpers[0].arguments[0] = EBPF_ARGUMENT_TYPE_ANYTHING;
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &changed);
    let own = program.info_client().expect("the program's own client");
    assert!(
        !own.is_attached(),
        "the program's client refuses the new provider"
    );
    assert!(
        matches!(
            own.last_refusal(),
            Some(Refusal::ProgramDoesNotBind(ref why)) if why.contains("hash")
        ),
        "{:?}",
        own.last_refusal()
    );
    assert!(
        client.is_attached(),
        "a client without the program attaches"
    );
    assert_eq!(
        provider
            .state
            .attaches
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the provider saw the test's client only"
    );
    assert!(
        matches!(
            run_once(&program),
            Err(BpfError::ProgramInfoDetached { .. })
        ),
        "the program loaded against the old prototype does not run"
    );
    let refusal = program.program_info_refusal().expect("a refusal");
    assert!(refusal.contains("hash"), "{refusal}");
    let test_run = program.test_run(&client, &[], &context(1, 0), 1);
    assert!(
        matches!(test_run, Err(BpfError::TestRun(_))),
        "a test run goes through the program's own client, which has no provider: {test_run:?}"
    );
    let fresh = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    assert_eq!(
        run_once(&fresh),
        Ok(0xA),
        "a program loaded against the new data runs"
    );
    let seen =
        |counter: &std::sync::atomic::AtomicU32| counter.load(std::sync::atomic::Ordering::SeqCst);
    let (attaches, detaches) = (
        seen(&provider.state.attaches),
        seen(&provider.state.detaches),
    );
    let stale = BpfProgram::load(&object, "test_prog", &old_info);
    assert!(
        matches!(&stale, Err(BpfError::ProgramInfoUnavailable { message, .. }) if message.contains("hash")),
        "a program checked against the old data does not load: {stale:?}"
    );
    // As the core, which checks a program's hash only once the program is created: its
    // client's first attach is not checked, the load fails afterwards and frees the client.
    assert_eq!(
        (
            seen(&provider.state.attaches),
            seen(&provider.state.detaches)
        ),
        (attaches + 1, detaches + 1),
        "the provider saw the stale program's client attach and detach"
    );
    drop(fresh);
    provider.deregister();

    // The original image again: the program's hash matches, it runs.
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &original);
    assert_eq!(run_once(&program), Ok(0xA));
    assert_eq!(program.program_info_refusal(), None);
    drop(program);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// A program that calls a general helper the core has no implementation of (26,
/// `bpf_get_socket_cookie`, which an extension overrides) is hashed with the core's prototype
/// of it like any other: a provider re-registered with another context size is refused by
/// the program's client, and the program does not run over that context.
#[test]
fn a_program_calling_an_override_only_helper_refuses_a_provider_with_another_context() {
    let object = compile(&format!(
        r#"{PRELUDE}
SEC("test_prog")
int cookie(struct test_context* ctx) {{ return bpf_get_socket_cookie(ctx) == (uint64_t)ctx; }}
char _license[] SEC("license") = "MIT";
"#
    ));
    let kernel = Kernel::new();
    let with_cookie = |context_size: Option<u16>| {
        let mut spec = spec();
        let mut cookie = Proto::new(26, c"bpf_get_socket_cookie");
        cookie.arguments = [EBPF_ARGUMENT_TYPE_PTR_TO_CTX, 0, 0, 0, 0];
        spec.global_helpers.push(cookie);
        spec.global_addresses = Some(Addresses::new(vec![
            pid_override as *const () as u64,
            cookie_override as *const () as u64,
        ]));
        if let (Some(size), Some(context)) = (context_size, spec.context.as_mut()) {
            context.size = i32::from(size);
        }
        spec
    };
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &with_cookie(None));
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    drop(client);
    provider.deregister();

    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &with_cookie(Some(40)));
    let own = program.info_client().expect("the program's own client");
    assert!(
        !own.is_attached(),
        "the context descriptor is hashed: the program's client refuses the provider"
    );
    assert!(
        matches!(&own.last_refusal(), Some(Refusal::ProgramDoesNotBind(why)) if why.contains("hash")),
        "{:?}",
        own.last_refusal()
    );
    assert!(
        matches!(
            run_once(&program),
            Err(BpfError::ProgramInfoDetached { .. })
        ),
        "the program does not run against the other context"
    );
    drop(program);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// As the core, whose program-information detach skips the epoch synchronize while the
/// program has no object id: a load that fails after its client attached (a stale hash)
/// returns while another thread is still inside an epoch, where the free of a loaded
/// program (its client's detach) waits for that epoch to end.
#[test]
fn a_load_that_fails_does_not_wait_for_the_epochs_of_other_threads() {
    use core::sync::atomic::{AtomicBool, Ordering};
    use core::time::Duration;

    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let old_info = ProgramInfoClient::attach(TEST_PROGRAM_TYPE)
        .expect("attached")
        .info();
    provider.deregister();
    let mut changed = spec();
    changed.helpers[0].arguments[0] = EBPF_ARGUMENT_TYPE_ANYTHING;
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &changed);

    let left = Arc::new(AtomicBool::new(false));
    let (entered, wait_entered) = std::sync::mpsc::channel();
    let (leave, wait_leave) = std::sync::mpsc::channel::<()>();
    let holder = kernel.spawn({
        let left = Arc::clone(&left);
        move || {
            let table = ebpf_ext_core_sim::bpf::map_client_dispatch_table();
            let mut state = [0_u64; ebpf_ext_sys::ebpf_extension::EBPF_EPOCH_STATE_SIZE / 8];
            // SAFETY: 32 writable bytes that stay put until the matching exit.
            unsafe { table.epoch_enter.expect("epoch_enter")(state.as_mut_ptr().cast()) };
            entered.send(()).expect("the test waits");
            // A detach that waits for this epoch wrongly ends it after the timeout.
            let _ = wait_leave.recv_timeout(Duration::from_secs(10));
            // SAFETY: the state the enter was given.
            unsafe { table.epoch_exit.expect("epoch_exit")(state.as_mut_ptr().cast()) };
            left.store(true, Ordering::SeqCst);
        }
    });
    wait_entered.recv().expect("the holder entered its epoch");
    let stale = BpfProgram::load(&object, "test_prog", &old_info);
    assert!(
        matches!(&stale, Err(BpfError::ProgramInfoUnavailable { .. })),
        "{stale:?}"
    );
    assert!(
        !left.load(Ordering::SeqCst),
        "the failed load returned while the other thread's epoch was still open"
    );
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let loaded = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let dropper = kernel.spawn(move || drop(loaded));
    let started = std::time::Instant::now();
    while ebpf_ext_core_sim::epoch_synchronize_waiters() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the free of a loaded program waits for the open epoch"
        );
        std::thread::yield_now();
    }
    assert!(!dropper.is_finished() && !left.load(Ordering::SeqCst));
    leave.send(()).expect("the holder waits");
    holder.join().expect("the holder");
    dropper.join().expect("the dropper");
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// A program dropped on a thread with no kernel bound bug-checks where its client
/// deregisters, naming that call, as any client dropped there does.
#[test]
fn a_program_dropped_with_no_kernel_bound_bug_checks_in_its_deregistration() {
    let check = ebpf_ext_usersim::expect_bugcheck(
        "a_program_dropped_with_no_kernel_bound_bug_checks_in_its_deregistration",
        || {
            let _kernel = Kernel::new();
            let _provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
            let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
            let program =
                BpfProgram::load(&returning("1"), "test_prog", &client.info()).expect("loads");
            // A plain thread: no kernel is bound to it.
            std::thread::spawn(move || drop(program))
                .join()
                .expect("the drop");
        },
    );
    assert_eq!(
        (check.code, check.api.as_str()),
        (ebpf_ext_usersim::NO_KERNEL_BOUND, "NmrDeregisterClient"),
        "{check}"
    );
}

/// Stress: programs load with a provider's data while that provider and one whose helpers
/// changed take turns (the second's attaches slowed, so a load often lands while its own
/// client has no provider or is being attached to the changed one). As the core's load,
/// which checks the program against the data its client holds when the program is created,
/// a load either binds the program to the original provider or fails: no program loads
/// whose client is attached to a provider it refused, and none loads while its client has no
/// provider. Checked each time the changed provider has attached every client.
#[test]
fn a_load_racing_a_provider_swap_binds_or_fails() {
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use core::time::Duration;
    use std::sync::Mutex;

    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let original = spec();
    let mut changed = spec();
    changed.helpers[0].arguments[0] = EBPF_ARGUMENT_TYPE_ANYTHING;
    let mut provider = Some(InfoProvider::register(TEST_PROGRAM_TYPE, &original));
    let info = ProgramInfoClient::attach(TEST_PROGRAM_TYPE)
        .expect("attached")
        .info();
    let (stop, failed) = (AtomicBool::new(false), AtomicU32::new(0));
    let loaded: Mutex<Vec<Arc<BpfProgram>>> = Mutex::default();
    let mut checked = 0_usize;
    std::thread::scope(|scope| {
        let loading = kernel.scoped(scope, || {
            while !stop.load(Ordering::SeqCst) {
                match BpfProgram::load(&object, "test_prog", &info) {
                    Ok(program) => loaded.lock().unwrap().push(program),
                    Err(BpfError::ProgramInfoUnavailable { .. }) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => panic!("neither loaded nor refused: {other}"),
                }
            }
        });
        let _stop = Stop(&stop);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            provider.take().expect("a provider").deregister();
            let swapped = common::with_attach_delay(Duration::from_micros(200), || {
                InfoProvider::register(TEST_PROGRAM_TYPE, &changed)
            });
            // Every client registered now has been offered the changed provider.
            for program in loaded.lock().unwrap().drain(..) {
                let own = program.info_client().expect("the program's own client");
                assert!(
                    !(own.is_attached() && program.program_info_refusal().is_some()),
                    "a program loaded whose client attached a provider it refuses: {:?}",
                    program.program_info_refusal()
                );
                checked += 1;
            }
            swapped.deregister();
            provider = Some(InfoProvider::register(TEST_PROGRAM_TYPE, &original));
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        loading.join().expect("the loader");
    });
    assert!(
        checked > 0 && failed.load(Ordering::SeqCst) > 0,
        "both outcomes seen: {checked} loaded, {} refused",
        failed.load(Ordering::SeqCst)
    );
    loaded.lock().unwrap().clear();
    provider.take().expect("a provider").deregister();
    kernel.assert_no_leaks();
}

/// As the core, where each program has a client of its own: of two programs loaded before a
/// provider re-registered with changed data, the one whose helpers the change touches refuses
/// the provider and stays unable to run, the other attaches it and runs.
#[test]
fn each_program_binds_a_reattached_provider_by_itself() {
    let calls_a = returning("test_get_a(ctx)");
    let calls_nothing = returning("7");
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let uses_helper = BpfProgram::load(&calls_a, "test_prog", &client.info()).expect("loads");
    let plain = BpfProgram::load(&calls_nothing, "test_prog", &client.info()).expect("loads");
    drop(client);
    provider.deregister();

    let mut changed = spec();
    changed.helpers[0].arguments[0] = EBPF_ARGUMENT_TYPE_ANYTHING;
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &changed);
    assert_eq!(
        provider
            .state
            .attaches
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "attached for the program that binds only"
    );
    let plain_client = plain.info_client().expect("its client");
    assert!(plain_client.is_attached());
    assert_eq!(
        *provider.state.client_module.lock().unwrap(),
        Some((MIT_GUID, plain_client.module_id())),
        "the provider saw that program's client"
    );
    assert_eq!(run_once(&plain), Ok(7));
    assert!(matches!(
        run_once(&uses_helper),
        Err(BpfError::ProgramInfoDetached { .. })
    ));
    assert!(matches!(
        uses_helper
            .info_client()
            .expect("its client")
            .last_refusal(),
        Some(Refusal::ProgramDoesNotBind(_))
    ));
    let refusal = uses_helper.program_info_refusal().expect("a refusal");
    assert!(refusal.contains("hash"), "{refusal}");
    drop((uses_helper, plain));
    provider.deregister();
    kernel.assert_no_leaks();
}

/// As the core's `ebpf_program_create`: every program registers a program-information client
/// of its own, with a module id of its own, which the provider attaches during the load; the
/// program's free deregisters it (the provider sees the detach), and a program of a type no
/// provider publishes does not load.
#[test]
fn every_program_has_a_program_information_client_of_its_own() {
    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let attaches = || {
        provider
            .state
            .attaches
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let detaches = || {
        provider
            .state
            .detaches
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let first = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let second = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    assert_eq!(attaches(), 3, "the test's client and one per program");
    let modules: Vec<GUID> = [&first, &second]
        .iter()
        .map(|p| p.info_client().expect("a client").module_id())
        .collect();
    assert_ne!(modules[0], modules[1]);
    assert!(!modules.contains(&client.module_id()));
    assert_eq!(
        *provider.state.client_module.lock().unwrap(),
        Some((MIT_GUID, modules[1])),
        "the provider saw the second program's client last"
    );
    drop(first);
    assert_eq!(detaches(), 1, "freeing a program detaches its client");
    assert_eq!(run_once(&second), Ok(0xA));
    drop(second);
    assert_eq!(detaches(), 2);

    let unbound =
        BpfProgram::load(&object, "test_prog", &Arc::new(client.info().unbound())).expect("loads");
    assert!(unbound.info_client().is_none(), "data built by hand");
    assert_eq!(attaches(), 3);
    drop(unbound);
    let kept = client.info();
    drop(client);
    provider.deregister();
    let orphan = BpfProgram::load(&object, "test_prog", &kept);
    assert!(
        matches!(orphan, Err(BpfError::ProgramInfoUnavailable { .. })),
        "no provider of the type: {orphan:?}"
    );
    kernel.assert_no_leaks();
}

/// The program [`pid_frees_a_program`] drops, inside the run of another.
static FREED_IN_RUN: std::sync::Mutex<Option<Arc<BpfProgram>>> = std::sync::Mutex::new(None);

/// A `bpf_get_current_pid_tgid` override that drops the last reference to the program in
/// [`FREED_IN_RUN`], inside the epoch of the run that called it; returns 0x4321.
extern "win64" fn pid_frees_a_program(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    let program = FREED_IN_RUN.lock().unwrap().take();
    assert!(ebpf_ext_core_sim::in_epoch(), "inside the run's epoch");
    drop(program);
    0x4321
}

/// As the core, which frees a program from an epoch work item: a program whose last
/// reference goes inside an epoch (here in a helper, during another program's run)
/// deregisters its client from a worker thread once the epoch has ended, rather than on its
/// own thread, where the detach's wait for the epochs active would wait for itself.
#[test]
fn a_program_freed_inside_an_epoch_deregisters_its_client_from_a_worker() {
    let object = returning("bpf_get_current_pid_tgid()");
    let kernel = Kernel::new();
    let mut spec = spec();
    spec.global_addresses = Some(Addresses::new(vec![
        pid_frees_a_program as *const () as u64,
    ]));
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let runner = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let freed = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    *FREED_IN_RUN.lock().unwrap() = Some(freed);
    let running = {
        let runner = Arc::clone(&runner);
        kernel.spawn(move || run_once(&runner))
    };
    common::wait_until("the run returns", || running.is_finished());
    assert_eq!(running.join().expect("ran"), Ok(0x4321));
    kernel.wait_for_work_items();
    assert_eq!(
        provider
            .state
            .detaches
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the freed program's client detached"
    );
    drop(runner);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// A second provider of the type, whose data would bind none of the client's programs, is
/// refused as a second provider (the core checks "already attached" before the hash), and
/// the programs bound to the first keep running with no refusal recorded.
#[test]
fn a_second_provider_with_changed_data_is_refused_as_a_second_provider() {
    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let first = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let mut changed = spec();
    changed.helpers[0].arguments[0] = EBPF_ARGUMENT_TYPE_ANYTHING;
    let second = InfoProvider::register(TEST_PROGRAM_TYPE, &changed);
    assert_eq!(client.last_refusal(), Some(Refusal::SecondProvider));
    assert_eq!(
        program.info_client().expect("its client").last_refusal(),
        Some(Refusal::SecondProvider)
    );
    assert_eq!(program.program_info_refusal(), None);
    assert_eq!(
        run_once(&program),
        Ok(0xA),
        "still bound to the first provider"
    );
    drop(program);
    drop(client);
    second.deregister();
    first.deregister();
    kernel.assert_no_leaks();
}

/// A helper the program calls that the reattached provider still declares, but without an
/// address (no table of global-helper addresses), does not re-resolve: the hash is the same
/// (overrides are not hashed), yet the program stays unable to run.
#[test]
fn a_reattached_provider_without_the_helper_address_does_not_run_programs_loaded_before() {
    let object = returning("bpf_get_current_pid_tgid()");
    let kernel = Kernel::new();
    let original = spec();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &original);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    assert_eq!(run_once(&program), Ok(0x1234));
    drop(client);
    provider.deregister();

    // Overrides are not hashed: the same hash, but the override has no address now.
    let mut without = spec();
    without.global_addresses = None;
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &without);
    assert!(
        !program.info_client().expect("its client").is_attached(),
        "refused before the provider saw the client"
    );
    assert_eq!(
        provider
            .state
            .attaches
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let run = run_once(&program);
    assert!(
        matches!(run, Err(BpfError::ProgramInfoDetached { .. })),
        "{run:?}"
    );
    let refusal = program.program_info_refusal().expect("a refusal");
    assert!(refusal.contains("0x13"), "{refusal}");
    drop(program);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// Overrides of general helpers are not hashed, so a reattached provider may add or drop one:
/// as the core resolves at load (C.7), a program loaded before then calls the new override,
/// or falls back to the core's general helper.
#[test]
fn a_reattached_provider_may_add_or_drop_an_override() {
    let object = returning("bpf_get_current_pid_tgid()");
    let kernel = Kernel::new();
    let mut without = spec();
    without.global_helpers = Vec::new();
    without.global_addresses = None;

    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &without);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    let core_value = run_once(&program).expect("the core's helper");
    assert_ne!(core_value, 0x1234);
    provider.deregister();

    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    assert_eq!(run_once(&program), Ok(0x1234), "the new override");
    provider.deregister();

    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &without);
    assert_eq!(
        run_once(&program),
        Ok(core_value),
        "the core's helper again"
    );
    assert_eq!(program.program_info_refusal(), None);
    drop(program);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// A program loaded with a copy of program data kept from before a detach binds to the
/// provider attached now, as a program the core loads does (it is not left waiting for
/// another attach).
#[test]
fn a_program_loaded_with_data_from_before_a_detach_binds_to_the_current_provider() {
    let object = returning("test_get_a(ctx)");
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let kept = client.info();
    provider.deregister();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let program = BpfProgram::load(&object, "test_prog", &kept).expect("loads");
    assert_eq!(run_once(&program), Ok(0xA));
    drop(program);
    drop(kept);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// A test run whose output room cannot be allocated fails before the provider creates a
/// context (which it would otherwise leave undestroyed), and the next run works.
#[test]
fn a_test_run_with_room_that_cannot_be_allocated_fails_before_the_provider_is_called() {
    let object = returning("0");
    let kernel = Kernel::new();
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &spec());
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let program = BpfProgram::load(&object, "test_prog", &client.info()).expect("loads");
    for room in [usize::MAX, isize::MAX.unsigned_abs() + 1] {
        common::CONTEXT_CALL_IRQLS.with(|irqls| irqls.set((0xFF, 0xFF)));
        let failed = program.test_run_with_room(&client, &[1, 2, 3], &context(7, 0), 1, room);
        assert!(
            matches!(&failed, Err(BpfError::TestRun(why)) if why.contains("no memory")),
            "room {room}: {failed:?}"
        );
        assert_eq!(
            common::CONTEXT_CALL_IRQLS.with(core::cell::Cell::get),
            (0xFF, 0xFF),
            "room {room}: neither context_create nor context_destroy ran"
        );
    }
    let run = program
        .test_run(&client, &[1, 2, 3], &context(7, 0), 1)
        .expect("a run with room runs");
    assert_eq!(run.data_out, [1, 2, 3]);
    drop(program);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}

/// As the core's test run: a context a failed `context_create` left is destroyed into the
/// caller's output buffers (their sizes in the size slots), and the run fails.
#[test]
fn a_failed_creates_context_is_destroyed_into_the_callers_output_buffers() {
    let object = returning("0");
    let kernel = Kernel::new();
    let mut failing = spec();
    failing.context_create = Some(common::failing_create);
    let provider = InfoProvider::register(TEST_PROGRAM_TYPE, &failing);
    let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
    let info = client.info();
    let program = BpfProgram::load(&object, "test_prog", &info).expect("loads");
    let destroys = || common::CONTEXT_DESTROYS.with(core::cell::Cell::get);
    let before = destroys();
    let failed = program.test_run_with_room(&client, &[1, 2, 3], &context(7, 0), 1, 16);
    assert!(
        matches!(failed, Err(BpfError::TestRun(_))),
        "the run fails: {failed:?}"
    );
    assert_eq!(destroys() - before, 1);
    assert_eq!(
        common::CONTEXT_DESTROY_ROOM.with(core::cell::Cell::get),
        (Some(16), Some(size_of::<TestContext>())),
        "the run's output room: 16 data bytes and the context's size"
    );
    drop(program);
    drop(client);
    provider.deregister();
    kernel.assert_no_leaks();
}
