// Programs of type "sample" (eBPF for Windows' sample extension), built with
// `clang -target bpf -O2 -g -c` against the generated headers in include/ and run by the
// sample's tests/bpf.rs through link attach and through test runs, in both modes.
#include "sample.h"

// [0] the word to find, [1] its replacement (written by the test, as upstream's test does).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, char[32]);
    __uint(max_entries, 2);
} test_map SEC(".maps");

// What the helpers returned, by index (see helpers()).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 16);
} results SEC(".maps");

// Invocations per uint32_data value.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 8);
} per_value SEC(".maps");

// Invocations per processor.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} per_cpu SEC(".maps");

// Data length of the two most recent uint16_data values.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} recent SEC(".maps");

// One record per helpers() run.
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

// Programs a tail call continues in, by index (filled by the test, as upstream's tail-call
// tests fill theirs).
struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 10);
} programs SEC(".maps");

// Records of the data the hook ran over, a ring per processor.
struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 4096);
} perf_events SEC(".maps");

// implicit_2 as programs call it: one value in r1 (its prototype declares none).
static int64_t (*implicit_2_of)(uint32_t value) = (void*)SAMPLE_EBPF_EXTENSION_HELPER_IMPLICIT_2_ID;

static __always_inline void put(uint32_t index, uint64_t value)
{
    bpf_map_update_elem(&results, &index, &value, BPF_ANY);
}

static __always_inline void count(void* map, uint32_t key, uint64_t amount)
{
    uint64_t* value = bpf_map_lookup_elem(map, &key);
    if (value) {
        *value += amount;
    } else {
        bpf_map_update_elem(map, &key, &amount, BPF_NOEXIST);
    }
}

// Upstream's documented behaviour (test_sample_ebpf.c): find test_map[0] in the data and
// replace it with test_map[1]; 42 when replaced, 0 when the word is absent, -1 when the map
// is not set up.
SEC("sample_ext")
int rewrite(sample_context_t* ctx)
{
    uint32_t key = 0;
    char* find = bpf_map_lookup_elem(&test_map, &key);
    key = 1;
    char* with = bpf_map_lookup_elem(&test_map, &key);
    if (!find || !with) {
        return -1;
    }
    if (sample_ebpf_extension_helper_function1(ctx) != 0) {
        return -2;
    }
    uint8_t* data = ctx->data_start;
    uint8_t* end = ctx->data_end;
    if (data >= end) {
        return 0;
    }
    uint32_t size = (uint32_t)(end - data);
    int64_t position = sample_ebpf_extension_find(data, size, find, 32);
    if (sample_ebpf_extension_replace(data, size, position, with, 32) < 0) {
        return 0;
    }
    return 42;
}

struct event {
    uint32_t uint32_data;
    uint32_t helper_data_1;
    uint64_t implicit_2;
    uint64_t pid_tgid;
};

// Every other helper: the implicit-context pair (upstream: helper_data 1 and 2 give 1 and
// 12), the overrides, the custom-map helpers on a built-in map, and general helpers; every
// map type. Returns uint32_data + helper_data_1 (the hook reports it).
SEC("sample_ext/helpers")
int helpers(sample_context_t* ctx)
{
    uint64_t implicit_1 = sample_ebpf_extension_helper_implicit_1();
    uint64_t implicit_2 = implicit_2_of(10);
    uint64_t pid_tgid = bpf_get_current_pid_tgid();
    uint32_t key = 0;
    uint64_t redirect = bpf_redirect_map(&per_value, 7, 0);
    void* object = sample_ext_helper_map_lookup_element(&results, &key);
    uint32_t value = 0;
    int64_t got = sample_ext_helper_map_get_value(&results, &key, &value, sizeof(value));
    put(0, implicit_1);
    put(1, implicit_2);
    put(2, pid_tgid);
    put(3, redirect);
    put(4, object == 0);
    put(5, (uint64_t)got);
    uint64_t before = bpf_ktime_get_ns();
    uint64_t after = bpf_ktime_get_boot_ns();
    put(6, after >= before);
    put(7, bpf_ktime_get_ms() <= bpf_ktime_get_boot_ms() + 1000);
    put(8, bpf_get_smp_processor_id() < 1024);
    bpf_get_prandom_u32();
    count(&per_value, ctx->uint32_data, 1);
    count(&per_cpu, 0, 1);
    uint32_t recent_key = ctx->uint16_data;
    uint64_t length = (uint64_t)(ctx->data_end - ctx->data_start);
    bpf_map_update_elem(&recent, &recent_key, &length, BPF_ANY);
    struct event event = {ctx->uint32_data, ctx->helper_data_1, implicit_2, pid_tgid};
    bpf_ringbuf_output(&events, &event, sizeof(event), 0);
    return (int)(ctx->uint32_data + ctx->helper_data_1);
}

// Reads beyond the data: fails only its invocation.
SEC("sample_ext/overrun")
int overrun(sample_context_t* ctx)
{
    uint8_t* data = ctx->data_start;
    return data[4096];
}

// Upstream's tail-call samples: the caller continues in programs[0], which returns 42; with
// that slot empty the call fails and the caller returns what it returned (-6,
// -EBPF_INVALID_ARGUMENT).
SEC("sample_ext/tail_caller")
int tail_caller(sample_context_t* ctx)
{
    return (int)bpf_tail_call(ctx, &programs, 0);
}

// programs[0]: runs on the caller's context.
SEC("sample_ext/0")
int tail_callee(sample_context_t* ctx)
{
    return 37 + (int)ctx->helper_data_1 * 5;
}

// Upstream's perf-event sample: one record of the data, then the same bytes captured from
// the context's data by the core; returns the helper's result.
SEC("sample_ext/perf")
int perf(sample_context_t* ctx)
{
    uint8_t* start = ctx->data_start;
    uint64_t size = (uint64_t)(ctx->data_end - ctx->data_start);
    if (size == 0 || size > 64)
        return -1;
    uint64_t flags = EBPF_MAP_FLAG_CURRENT_CPU | size << EBPF_MAP_FLAG_CTX_LENGTH_SHIFT;
    return (int)bpf_perf_event_output(ctx, &perf_events, flags, start, size);
}

// Upstream's BTF-resolved function sample (uint32_data 123 gives 131): the module's lookup
// stores the key in the value and returns key + size. The result goes into uint32_data and
// is returned; -1 if the value does not hold the key.
SEC("sample_ext/btf")
int btf_resolved(sample_context_t* ctx)
{
    uint64_t value = 0;
    int64_t result = sample_ebpf_extension_btf_lookup(ctx->uint32_data, &value, sizeof(value));
    if (value != ctx->uint32_data)
        return -1;
    ctx->uint32_data = (uint32_t)result;
    return (int)result;
}
