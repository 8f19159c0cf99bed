// Programs of type sample_process, built with `clang -target bpf -O2 -g -c` against the
// generated headers in include/ (run by the sample's tests/bpf.rs in both modes).
#include "sample_process.h"

// Events by operation: 0 creations, 1 exits.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} operations SEC(".maps");

// Image path length (bytes) of each live process; removed on exit.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 64);
} image_lengths SEC(".maps");

// Events per processor.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} per_cpu SEC(".maps");

// Parent of the two most recently created processes.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} recent_parents SEC(".maps");

// One record per event: what the program saw.
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 8192);
} events SEC(".maps");

struct event {
    uint64_t process_id;
    uint32_t operation;
    int32_t short_buffer_result;
    uint32_t image_length;
    uint32_t command_length;
    uint32_t verdict;
    uint32_t image_prefix_length;
    uint8_t image[64];
};

static __always_inline void count(void* map, uint32_t key)
{
    uint64_t* value = bpf_map_lookup_elem(map, &key);
    if (value) {
        *value += 1;
    }
}

// Whether the UTF-16LE command line in [start, end) contains "--forbidden".
static __always_inline int forbidden(uint8_t* start, uint8_t* end)
{
    static const char pattern[] = "--forbidden";
    for (uint32_t i = 0; i < 256; i += 2) {
        uint8_t* at = start + i;
        if (at + 2 * (sizeof(pattern) - 1) > end) {
            return 0;
        }
        int match = 1;
        for (uint32_t j = 0; j < sizeof(pattern) - 1; j++) {
            if (at[2 * j] != (uint8_t)pattern[j] || at[2 * j + 1] != 0) {
                match = 0;
                break;
            }
        }
        if (match) {
            return 1;
        }
    }
    return 0;
}

// Records every creation and exit, keeps the maps, denies creations whose command line
// asks for it.
SEC("sample_process")
int sample_process_program(sample_process_context_t* ctx)
{
    struct event event;
    bpf_memset(&event, sizeof(event), 0);
    event.process_id = ctx->process_id;
    event.operation = ctx->operation;
    uint8_t small[4];
    event.short_buffer_result = (int32_t)sample_process_get_image_path(ctx, small, sizeof(small));
    uint8_t image[256];
    int64_t length = sample_process_get_image_path(ctx, image, sizeof(image));
    if (length > 0) {
        event.image_length = (uint32_t)length;
        uint32_t prefix = length < (int64_t)sizeof(event.image) ? (uint32_t)length : sizeof(event.image);
        bpf_memcpy_s(event.image, sizeof(event.image), image, prefix);
        event.image_prefix_length = prefix;
    }
    uint8_t* start = ctx->command_start;
    uint8_t* end = ctx->command_end;
    if (start && end > start) {
        event.command_length = (uint32_t)(end - start);
    }
    uint32_t verdict = 0;
    uint64_t pid = ctx->process_id;
    if (ctx->operation == OPERATION_CREATE) {
        if (start && forbidden(start, end)) {
            verdict = STATUS_ACCESS_DENIED;
        }
        uint64_t image_length = event.image_length;
        bpf_map_update_elem(&image_lengths, &pid, &image_length, BPF_ANY);
        uint64_t parent = ctx->parent_process_id;
        bpf_map_update_elem(&recent_parents, &pid, &parent, BPF_ANY);
    } else {
        bpf_map_delete_elem(&image_lengths, &pid);
    }
    event.verdict = verdict;
    count(&operations, ctx->operation);
    count(&per_cpu, 0);
    bpf_ringbuf_output(&events, &event, sizeof(event), 0);
    bpf_printk("process %u operation %u verdict %x", pid, ctx->operation, verdict);
    return verdict;
}

// Reads one byte past the end of the command line: the invocation must fail, not the
// process.
SEC("sample_process/out_of_bounds")
int sample_process_out_of_bounds(sample_process_context_t* ctx)
{
    if (ctx->command_start >= ctx->command_end) {
        return 0;
    }
    return *ctx->command_end;
}

// Reads past the end of the context: refused at load.
SEC("sample_process/context_overrun")
int sample_process_context_overrun(sample_process_context_t* ctx)
{
    return (int)((uint64_t*)ctx)[7];
}

char _license[] SEC("license") = "MIT";
