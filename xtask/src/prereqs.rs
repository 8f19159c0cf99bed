//! The one prerequisite list and the only place xtask starts a program: cargo-ebpf-ext's
//! (`crates/cargo-ebpf-ext/prerequisites.tsv`), whose tests check that xtask's sources start
//! programs only through it.

pub(crate) use cargo_ebpf_ext::prereqs::{Options, Scope, Tool, command, ensure};

/// `cargo xtask prereqs`: as `cargo ebpf-ext prereqs`, always with this workspace's own lines
/// (`--sdk`).
pub(crate) fn prereqs(options: &Options) -> anyhow::Result<()> {
    cargo_ebpf_ext::prereqs::prereqs(&Options {
        install: options.install,
        sdk: true,
        markdown: options.markdown,
    })
}
