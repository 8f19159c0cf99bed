// Programs of type sample_net, built with `clang -target bpf -O2 -g -c` against the
// generated headers in include/ (run by the sample's tests/bpf.rs in both modes).
#include "sample_net.h"

// Counters by index: 0 invocations, 1 bytes seen, 2 last checksum, 3 last interface.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 4);
} counters SEC(".maps");

// Packets per interface.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 16);
} per_interface SEC(".maps");

// Packets per processor.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} per_cpu SEC(".maps");

// The length of the last packet of the two most recently seen protocols.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} recent_protocols SEC(".maps");

// One record per packet.
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

struct event {
    uint32_t interface_id;
    uint32_t length;
    uint32_t checksum;
    uint32_t verdict;
    uint8_t head[8];
};

static __always_inline void add(void* map, uint32_t key, uint64_t amount)
{
    uint64_t* value = bpf_map_lookup_elem(map, &key);
    if (value) {
        *value += amount;
    } else {
        bpf_map_update_elem(map, &key, &amount, BPF_NOEXIST);
    }
}

// Counts, checksums and records every packet; blocks packets that start with 0xBB, marks
// (first byte 0xAA) those that start with 0x11, forgets an interface's count on 0xDD.
SEC("sample_net")
int sample_net_program(sample_net_context_t* ctx)
{
    uint8_t* data = ctx->data_start;
    uint8_t* end = ctx->data_end;
    uint32_t length = (uint32_t)(end - data);
    uint32_t interface_id = (uint32_t)sample_net_get_interface_id(ctx);
    uint32_t verdict = VERDICT_PERMIT;
    struct event event;
    bpf_memset(&event, sizeof(event), 0);
    event.interface_id = interface_id;
    event.length = length;
    if (data + 1 <= end) {
        event.checksum = (uint32_t)sample_net_checksum(data, length);
        if (data[0] == 0xBB) {
            verdict = VERDICT_BLOCK;
        } else if (data[0] == 0x11) {
            data[0] = 0xAA;
        }
        uint32_t head = length < sizeof(event.head) ? length : sizeof(event.head);
        bpf_memcpy_s(event.head, sizeof(event.head), data, head);
    }
    event.verdict = verdict;

    add(&counters, 0, 1);
    add(&counters, 1, length);
    uint32_t key = 2;
    uint64_t value = event.checksum;
    bpf_map_update_elem(&counters, &key, &value, BPF_ANY);
    key = 3;
    value = interface_id;
    bpf_map_update_elem(&counters, &key, &value, BPF_EXIST);
    add(&per_interface, interface_id, 1);
    if (data + 1 <= end && data[0] == 0xDD) {
        bpf_map_delete_elem(&per_interface, &interface_id);
    }
    add(&per_cpu, 0, 1);
    uint32_t protocol = ctx->protocol;
    value = length;
    bpf_map_update_elem(&recent_protocols, &protocol, &value, BPF_ANY);
    bpf_ringbuf_output(&events, &event, sizeof(event), 0);
    bpf_printk("interface %u: %u bytes, verdict %u", interface_id, length, verdict);
    return verdict;
}

// Reads one byte past the end of the packet: the invocation must fail, not the process.
SEC("sample_net/out_of_bounds")
int sample_net_out_of_bounds(sample_net_context_t* ctx)
{
    return *ctx->data_end;
}

// Calls a helper id the program type does not declare: refused at load.
static int64_t (*undeclared_helper)(void* ctx) = (void*)0x10002;
SEC("sample_net/undeclared_helper")
int sample_net_undeclared_helper(sample_net_context_t* ctx) { return (int)undeclared_helper(ctx); }

// Reads past the end of the context: refused at load.
SEC("sample_net/context_overrun")
int sample_net_context_overrun(sample_net_context_t* ctx) { return (int)((uint64_t*)ctx)[3]; }

// Passes the checksum helper more bytes than the packet holds: the helper's prototype says
// its first argument is readable memory of the second argument's size, so the call fails.
SEC("sample_net/helper_overrun")
int sample_net_helper_overrun(sample_net_context_t* ctx)
{
    uint8_t* data = ctx->data_start;
    uint8_t* end = ctx->data_end;
    return (int)sample_net_checksum(data, (uint32_t)(end - data) + 16);
}

char _license[] SEC("license") = "MIT";
