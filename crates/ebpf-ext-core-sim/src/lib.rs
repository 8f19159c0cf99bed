//! A stand-in for the eBPF core (`ebpfcore.sys`) on the host: the NMR **client** side of the
//! program-information and hook NPIs, so extension tests can attach to an extension's
//! providers the way the core does.
//!
//! It replaces the C test harnesses' NMR clients (netebpfext's `netebpf_ext_helper_t`,
//! ntosebpfext's `ntosebpf_ext_helper_t`) and goes further: it checks what the core checks.
//!
//! - [`ProgramInfoClient`] attaches to the program-information provider of one program type,
//!   validates its `ebpf_program_data_t` exactly as the core's `ebpf_validate_program_data`
//!   and `ebpf_program.c` do, keeps an owned copy ([`ProgramInfo`]) and calls the provider's
//!   `context_create` / `context_destroy` as `bpf_prog_test_run` does.
//! - [`Link`] is one attached program: an NMR client of the hook NPI with the core's client
//!   data (`ebpf_extension_data_t`) and program dispatch table, the checks of the core's
//!   link client (`ebpf_link.c`), and a Rust closure as "the program". [`LinkSpec`] describes
//!   the link and, for negative tests, how to malform what it presents ([`Malformation`]).
//!
//! Both call the real kernel exports (`NmrRegisterClient`, `NmrClientAttachProvider`,
//! `NmrDeregisterClient`, `NmrWaitForClientDeregisterComplete`), which `ebpf-ext-usersim`
//! implements.
//!
//! # Runtime contract
//!
//! - The calling thread has a usersim [`Kernel`](ebpf_ext_usersim::Kernel) bound (create it
//!   first, drop it last: a [`Link`] or [`ProgramInfoClient`] deregisters when dropped).
//! - Everything the provider hands over is checked for NULL before use, and provider data is
//!   read field by field, only as far as its header says it extends. A pointer that is
//!   non-NULL but dangling, or an array shorter than its declared count, cannot be detected
//!   (the real core cannot either): that is undefined behaviour in the test process.
//! - The core-sim's own allocations are Rust heap, not kernel pool: they never show up in
//!   [`Kernel::assert_no_leaks`](ebpf_ext_usersim::Kernel::assert_no_leaks); the provider's
//!   pool does.
//! - A program closure that panics aborts the process (it runs inside an `extern "win64"`
//!   callback, which cannot unwind), as a failed assertion inside any usersim callback does.
//!
//! ```no_run
//! use ebpf_ext_core_sim::{Link, LinkSpec, ProgramInfoClient};
//! use ebpf_ext_sys::ebpf_program_attach_type_guids::{
//!     EBPF_ATTACH_TYPE_SAMPLE, EBPF_PROGRAM_TYPE_SAMPLE,
//! };
//!
//! let kernel = ebpf_ext_usersim::Kernel::new();
//! // ... register the extension's providers ...
//! let info = ProgramInfoClient::attach(EBPF_PROGRAM_TYPE_SAMPLE).expect("program info");
//! assert_eq!(info.info().name, "sample");
//! let spec = LinkSpec::new(EBPF_PROGRAM_TYPE_SAMPLE, EBPF_ATTACH_TYPE_SAMPLE)
//!     .attach_parameter(&7u32.to_ne_bytes());
//! let link = Link::attach(spec, |_context| Ok(1)).expect("attached");
//! // ... make the extension fire its hook ...
//! assert_eq!(link.invocations(), 1);
//! link.detach().expect("clean detach");
//! drop(info);
//! kernel.assert_no_leaks();
//! ```
#![allow(
    clippy::std_instead_of_alloc,
    reason = "host-only crate: std is its allocator and runtime"
)]

// The kernel routines this crate calls are defined by usersim; make sure it is linked.
use ebpf_ext_usersim as _;

mod error;
mod link;
mod nmr;
mod program_info;
mod validate;

pub use error::{
    AttachProviderDataError, CoreError, HelperTable, Object, ProgramDataError, Refusal,
};
pub use link::{
    Link, LinkSpec, Malformation, Program, batch_begins, batch_ends, invalid_context_invocations,
};
pub use program_info::{
    ContextOutput, Helper, Input, ProgramInfo, ProgramInfoClient, TestRunContext,
};
