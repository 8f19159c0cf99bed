//! The one prerequisite list and the only place xtask starts a program: cargo-ebpf-ext's
//! (`crates/cargo-ebpf-ext/prerequisites.tsv`), whose tests check that xtask's sources start
//! programs only through it.

pub(crate) use cargo_ebpf_ext::prereqs::{Options, Tool, command, ensure, prereqs};
