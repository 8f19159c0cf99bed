// The custom map of the sample (BPF_MAP_TYPE_SAMPLE_HASH_MAP, backed by the extension's map
// provider), in an object of its own: every program of an object gets the object's maps, so
// loading any program of this object also needs a provider of DECOY_MAP_TYPE (the test's).
#include "sample.h"

// The sample's custom map (provider-backed): written by the test, read by custom_map().
struct {
    __uint(type, BPF_MAP_TYPE_SAMPLE_HASH_MAP);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 8);
} sample_map SEC(".maps");

// A custom map of another type, from another provider (the test's): its context sits where
// the sample map's does in the core's map objects, so sample-ext's provider must not take it
// for one of its own.
#define DECOY_MAP_TYPE 0x1001
struct {
    __uint(type, DECOY_MAP_TYPE);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 8);
} decoy_map SEC(".maps");

// What custom_map() observed, by index.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, int64_t);
    __uint(max_entries, 8);
} custom_results SEC(".maps");

static __always_inline void observe(uint32_t index, int64_t value)
{
    bpf_map_update_elem(&custom_results, &index, &value, BPF_ANY);
}

// The custom map through the extension's helper (upstream's custom_map_basic.c: only
// sample_ext_helper_map_get_value succeeds; the core's map helpers and
// sample_ext_helper_map_lookup_element fail). Returns the value for key uint32_data, or -1.
SEC("sample_ext/custom_map")
int custom_map(sample_context_t* ctx)
{
    uint32_t key = ctx->uint32_data;
    uint32_t value = 0;
    int64_t got = sample_ext_helper_map_get_value(&sample_map, &key, &value, sizeof(value));
    observe(0, got);
    observe(1, value);
    observe(2, bpf_map_lookup_elem(&sample_map, &key) == 0);
    uint32_t other = 7;
    observe(3, bpf_map_update_elem(&sample_map, &key, &other, BPF_ANY));
    observe(4, bpf_map_delete_elem(&sample_map, &key));
    observe(5, sample_ext_helper_map_lookup_element(&sample_map, &key) == 0);
    observe(7, bpf_map_push_elem(&sample_map, &other, 0));
    return got == 0 ? (int)value : -1;
}

// The decoy map through sample-ext's helper: not a sample map, so -1 and the output left
// alone (0xdead). Returns the helper's result; records the output at index 6.
SEC("sample_ext/custom_map_decoy")
int custom_map_decoy(sample_context_t* ctx)
{
    uint32_t key = ctx->uint32_data;
    uint32_t value = 0xdead;
    int64_t got = sample_ext_helper_map_get_value(&decoy_map, &key, &value, sizeof(value));
    observe(6, value);
    return (int)got;
}
