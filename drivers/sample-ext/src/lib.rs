//! A port of eBPF for Windows' sample extension (`undocked/tests/sample/ext`,
//! `sample_ext.sys`), written on `ebpf-extension-common` and binary compatible with it:
//! programs compiled for the upstream sample run unchanged against this driver.
//!
//! - **Program type** `sample` ([`program`]): GUID {f788ef4a-207d-4dc3-85cf-0f2ea107213c},
//!   `BPF_PROG_TYPE_SAMPLE` 999, section `sample_ext`; programs see a [`SampleContext`]
//!   (32 bytes, data pointers at 0 and 8) and may call the seven type-specific helpers
//!   (ids 0x10000–0x10006, two of them with the implicit context) and the two global-helper
//!   overrides (`bpf_get_current_pid_tgid` returns 9999, `bpf_redirect_map` returns 1).
//!   `context_create`/`context_destroy` serve `bpf_prog_test_run`.
//! - **Hook** ([`hook`]): attach type {f788ef4b-…}, `BPF_ATTACH_TYPE_SAMPLE` 8, link type
//!   UNSPEC; one program per attach parameter; a run invokes one program, a batch run invokes
//!   it once per event inside one `batch_begin`/`batch_end`.
//! - **Custom map** ([`maps`]): `BPF_MAP_TYPE_SAMPLE_HASH_MAP` (15) on a hash map, through
//!   the map-information NPI; programs read it with `sample_ext_helper_map_get_value` only.
//! - **BTF-resolved function** ([`btf`]): `sample_ebpf_extension_btf_lookup` in module
//!   {8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}, which programs of any type call by name.
//! - **Control device** `\\.\SampleEbpfExtIoDevice` ([`protocol`]): run the hook once or as a
//!   batch over a buffer the programs may rewrite.
//!
//! Where this port differs from upstream on purpose, [`program`], [`hook`] and [`protocol`] say
//! so. The compatibility is for programs: the control device's protocol is this port's own,
//! so upstream's user-mode sample application cannot drive this driver.
#![no_std]

pub mod btf;
pub mod hook;
pub mod maps;
pub mod program;
pub mod protocol;

pub use hook::driver_entry;
pub use program::SampleContext;

tracelogging::define_provider!(
    TRACE_PROVIDER,
    "SampleEbpfExtProvider",
    id("5b1d9a6e-3c47-4f0a-9e2b-7d61c0a8f4e3")
);
