// Programs of ntosebpfext's `process` program type, built with `clang -target bpf -O2 -g -c`
// against the generated headers in include/ (run by the sample's tests/bpf.rs in both modes:
// through the process hook and through test runs).
#include "process.h"

// Events by operation: 0 creations, 1 deletions.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} operations SEC(".maps");

// Image path length (bytes) of each live process; removed on delete.
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
    int32_t image_length;
    int32_t account_name_result;
    int32_t account_domain_result;
    uint32_t command_length;
    uint32_t verdict;
    uint32_t token_sid_size;
    uint32_t image_prefix_length;
    uint32_t account_prefix_length;
    uint8_t image[64];
    uint8_t account[32];
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

// Records every creation and deletion with what the three process helpers return, keeps the
// maps, and denies creations whose command line asks for it with STATUS_ACCESS_DENIED.
SEC("process")
int process_monitor(process_context_t* ctx)
{
    struct event event;
    bpf_memset(&event, sizeof(event), 0);
    event.process_id = ctx->process_id;
    event.operation = ctx->operation;
    event.token_sid_size = ctx->token_sid_size;
    uint8_t small[4];
    event.short_buffer_result = (int32_t)bpf_process_get_image_path(ctx, small, sizeof(small));
    uint8_t image[256];
    int32_t length = (int32_t)bpf_process_get_image_path(ctx, image, sizeof(image));
    event.image_length = length;
    if (length > 0) {
        uint32_t prefix = length < (int32_t)sizeof(event.image) ? (uint32_t)length : sizeof(event.image);
        bpf_memcpy_s(event.image, sizeof(event.image), image, prefix);
        event.image_prefix_length = prefix;
    }
    uint8_t account[64];
    int32_t name = (int32_t)bpf_process_get_account_name(ctx, account, sizeof(account));
    event.account_name_result = name;
    if (name > 0) {
        uint32_t prefix = name < (int32_t)sizeof(event.account) ? (uint32_t)name : sizeof(event.account);
        bpf_memcpy_s(event.account, sizeof(event.account), account, prefix);
        event.account_prefix_length = prefix;
    }
    event.account_domain_result = (int32_t)bpf_process_get_account_domain(ctx, account, sizeof(account));
    uint8_t* start = ctx->command_start;
    uint8_t* end = ctx->command_end;
    if (start && end > start) {
        event.command_length = (uint32_t)(end - start);
    }
    uint32_t verdict = 0;
    uint64_t pid = ctx->process_id;
    if (ctx->operation == PROCESS_OPERATION_CREATE) {
        if (start && forbidden(start, end)) {
            verdict = STATUS_ACCESS_DENIED;
        }
        uint64_t image_length = length > 0 ? (uint64_t)length : 0;
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

// What the notify routine read of each process, per event (key: pid * 2 + operation): the
// times, exit status, token SID and the account it resolves to.
struct identity {
    uint64_t creation_time;
    uint64_t exit_time;
    uint32_t exit_code;
    uint32_t token_sid_size;
    int32_t name_result;
    int32_t domain_result;
    uint8_t token_sid[TOKEN_SID_MAX_SIZE];
    uint8_t name[32];
    uint8_t domain[32];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, struct identity);
    __uint(max_entries, 16);
} identities SEC(".maps");

SEC("process/identity")
int process_identity(process_context_t* ctx)
{
    struct identity identity;
    bpf_memset(&identity, sizeof(identity), 0);
    identity.creation_time = ctx->creation_time;
    identity.exit_time = ctx->exit_time;
    identity.exit_code = ctx->process_exit_code;
    uint32_t size = ctx->token_sid_size;
    identity.token_sid_size = size;
    bpf_memcpy_s(identity.token_sid, sizeof(identity.token_sid), ctx->token_sid, sizeof(ctx->token_sid));
    identity.name_result = (int32_t)bpf_process_get_account_name(ctx, identity.name, sizeof(identity.name));
    identity.domain_result =
        (int32_t)bpf_process_get_account_domain(ctx, identity.domain, sizeof(identity.domain));
    uint64_t key = ctx->process_id * 2 + ctx->operation;
    bpf_map_update_elem(&identities, &key, &identity, BPF_ANY);
    return 0;
}

// Reads one byte past the end of the command line: the invocation must fail, not the
// process.
SEC("process/out_of_bounds")
int process_out_of_bounds(process_context_t* ctx)
{
    if (ctx->command_start >= ctx->command_end) {
        return 0;
    }
    return *ctx->command_end;
}

// Reads past the end of process_md_t (the internal context behind it included): refused
// at load.
SEC("process/context_overrun")
int process_context_overrun(process_context_t* ctx)
{
    return (int)((uint64_t*)ctx)[18];
}

// The context as ntosebpfext's own header lays it out (the operation an 8-bit bit-field) and
// the image-path helper called by its number, as a program written for ntosebpfext does:
// returns operation << 24 | token_sid_size << 16 | image path length.
typedef struct {
    uint8_t* command_start;
    uint8_t* command_end;
    uint64_t process_id;
    uint64_t parent_process_id;
    uint64_t creating_process_id;
    uint64_t creating_thread_id;
    uint64_t creation_time;
    uint64_t exit_time;
    uint32_t process_exit_code;
    uint32_t operation : 8;
    uint32_t token_sid_size;
    uint8_t token_sid[68];
} upstream_layout_t;

typedef int (*upstream_image_path_t)(upstream_layout_t* ctx, uint8_t* path, uint32_t length);

SEC("process/upstream_layout")
int process_upstream_layout(upstream_layout_t* ctx)
{
    uint8_t path[128];
    int length = ((upstream_image_path_t)(0xFFFF + 1))(ctx, path, sizeof(path));
    return (int)((ctx->operation << 24) | (ctx->token_sid_size << 16) | ((uint32_t)length & 0xFFFF));
}

char _license[] SEC("license") = "MIT";
