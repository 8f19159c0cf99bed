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
//! - [`bpf`] runs real programs instead of closures: BPF ELF objects compiled with
//!   `clang -target bpf`, checked at load as the verifier would, their helpers resolved by id
//!   as the core does (general helpers, the extension's global overrides, program-type helpers
//!   through the addresses the provider published), their maps readable and writable from the
//!   test, their memory accesses confined; attached through a [`Link`] like any program.
//! - Custom maps: a map of a type the core does not have is backed by the extension's map
//!   provider (the map-information NPI: one NMR client per map, the provider's callbacks for
//!   create, program association, lookup, update and delete, the provider's context in the
//!   map object extension helpers receive); see the `bpf` module's `custom` maps.
//! - [`bpf::BpfProgram::test_run`] is `bpf_prog_test_run`: the provider's `context_create`
//!   over `ctx_in`/`data_in`, the program at `required_irql`, `context_destroy` into
//!   `ctx_out`/`data_out`.
//! - [`program_info_hash`] computes the program-information identity hash the core checks
//!   (and bpf2c embeds in native images) for a program type and the helpers a program uses.
//!
//! # The core's contracts, enforced
//!
//! Every assumption the core makes about a provider, and how the core-sim fails when a
//! provider breaks it (bug checks stop the process; tests catch them in a child process with
//! `ebpf_ext_usersim::expect_bugcheck` and name them with [`Contract::of`]; the test that
//! proves each one is in brackets, `tests/<file>.rs`).
//!
//! Hook (link) side, [`Link`]:
//! - Batch state at one address from begin to end: a batch invoke or end with any other
//!   address (a moved or copied state) → bug check `0x139`/`FAST_FAIL_CORRUPT_LIST_ENTRY`,
//!   [`Contract::BatchStateMoved`] (contracts: `batch_invoke_with_a_moved_state_is_caught`,
//!   `batch_end_with_a_moved_state_is_caught`, `batch_invoke_without_begin_is_caught`).
//! - One end per begin: a second end → the same bug check (contracts:
//!   `batch_end_twice_is_caught`); a second begin of a begun state → `0x139`,
//!   [`Contract::BatchStateReused`] (contracts: `batch_begin_twice_on_one_state_is_caught`).
//! - Begin and end at one IRQL → `0x1E`/`STATUS_ASSERTION_FAILURE`, [`Contract::BatchEndIrql`]
//!   (contracts: `batch_end_at_another_irql_is_caught`).
//! - Begin, invoke and end on one thread (processor) → `0x139`/`FAST_FAIL_INVALID_ARG`,
//!   [`Contract::BatchOtherThread`] (contracts: `batch_end_on_another_thread_is_caught`).
//! - Batch state of at least 64 bytes → `EBPF_INVALID_ARGUMENT` (link:
//!   `batch_begin_invoke_end`); a NULL state or `result` → `0x1E`/`STATUS_ACCESS_VIOLATION`,
//!   [`Contract::NullPointer`] (contracts: `batch_begin_with_a_null_state_is_caught`,
//!   `invoke_with_a_null_result_is_caught`).
//! - Invoke, batch begin, invoke and end at ≤ DISPATCH_LEVEL → `0x0A`
//!   `IRQL_NOT_LESS_OR_EQUAL`, [`Contract::IrqlAboveDispatch`] (contracts:
//!   `invoke_above_dispatch_is_caught`, `batch_begin_above_dispatch_is_caught`).
//! - A program context, never NULL → `0x1E`/`STATUS_ASSERTION_FAILURE`,
//!   [`Contract::NullProgramContext`] (contracts: `invoke_with_a_null_context_is_caught`).
//! - The 64-byte context header in front of the context: the core-sim writes slot 0
//!   (execution state) and slot 1 (descriptor) on every invoke, as the core does, so a context
//!   without it has its neighbour overwritten; not otherwise detectable (contracts:
//!   `the_core_writes_the_header_in_front_of_the_context`).
//! - Only the binding context received at attach → `0x1E`/`STATUS_ACCESS_VIOLATION`,
//!   [`Contract::NotALink`] (contracts:
//!   `invoke_with_a_binding_context_that_is_not_a_link_is_caught`,
//!   `invoke_with_a_misaligned_binding_context_is_caught`).
//! - No invoke once the detach has completed, whether the link's user detached it or the
//!   provider deregistered (NMR has then finished with the binding, and the core may free
//!   the link) → `0x1E`/`STATUS_ACCESS_VIOLATION`, [`Contract::InvokeAfterDetach`]
//!   (contracts: `invoke_after_the_detach_completed_is_caught`,
//!   `invoke_after_the_provider_completed_its_own_detach_is_caught`); detached links are
//!   never freed, so this is a check, not a use after free.
//! - No use of `client_data->data` once the detach has completed: the core frees it, the
//!   core-sim fills it with usersim's freed-pool poison (by effect; contracts:
//!   `the_attach_parameter_is_gone_after_the_detach`).
//! - No detach completed while an invocation runs → [`CoreError::DetachedWhileInvoking`] from
//!   [`Link::detach`] (link:
//!   `a_provider_completing_detach_under_a_running_invocation_is_reported`); a pending detach
//!   is waited for (link: `detach_waits_until_the_extension_completes_its_pending_detach`).
//! - A link needs a program-information provider of its program type, as the core's program
//!   does: without one [`Link::attach`] fails with [`CoreError::ExtensionFailedToLoad`] and no
//!   hook provider sees an attach (link:
//!   `a_program_of_a_type_nobody_publishes_never_reaches_a_hook`; a hook tested alone links
//!   with [`Link::attach_without_program_type`]). A link holds that provider; once it is
//!   gone, an invocation returns `EBPF_EXTENSION_FAILED_TO_LOAD` with result 0 and runs
//!   nothing (link: `an_invocation_after_the_program_information_provider_left_fails`).
//! - Attach provider data version 1, size 48, program type set, `ModuleId` a `MIT_GUID`
//!   → the provider is refused (`STATUS_INVALID_PARAMETER`, [`Refusal`]) and
//!   [`Link::attach`] fails with [`CoreError::ExtensionFailedToLoad`] (link:
//!   `the_core_refuses_invalid_hook_providers`); one provider per link (link:
//!   `a_second_provider_for_the_same_link_is_refused`); the provider's attach status is
//!   reported (link: `the_providers_attach_status_propagates`).
//!
//! Map-provider side, the epoch functions of the map client's dispatch table
//! ([`bpf::map_client_dispatch_table`]; memory freed under epoch control goes back to the
//! pool once every epoch that was active at the free has ended, on any thread: [`epoch_memory`]
//! counts it):
//! - `epoch_exit` with a state `epoch_enter` recorded on this thread, unchanged → `0x139`/
//!   `FAST_FAIL_CORRUPT_LIST_ENTRY`, [`Contract::EpochStateMoved`] (epoch:
//!   `exit_with_a_moved_state_is_caught`, `exit_with_an_overwritten_record_is_caught`,
//!   `exit_twice_is_caught`); no second enter on an entered state → the same,
//!   [`Contract::EpochStateReused`]; exit at enter's IRQL → `0x1E`/`STATUS_ASSERTION_FAILURE`,
//!   [`Contract::EpochExitIrql`]; on enter's thread → `0x139`/`FAST_FAIL_INVALID_ARG`,
//!   [`Contract::EpochOtherThread`] (epoch: one test each).
//! - `epoch_free` and `epoch_free_cache_aligned` only of memory the matching allocator
//!   returned, once → `0x139`/`FAST_FAIL_HEAP_METADATA_CORRUPTION`,
//!   [`Contract::EpochMemoryInvalid`] (epoch: `freeing_twice_is_caught`,
//!   `freeing_with_the_other_free_is_caught`, `freeing_memory_of_another_allocator_is_caught`);
//!   no allocation of 0 bytes → `0x1E`, [`Contract::EpochAllocateZero`].
//! - The map client's `find_element_function` inside an epoch → `0x1E`,
//!   [`Contract::OutsideEpoch`] (epoch: `finding_an_element_outside_an_epoch_is_caught`).
//! - Allocations and frees inside an epoch (program runs, batches and the provider's map
//!   callbacks are inside the core's own, except a map's teardown, which the core runs
//!   outside any) → `0x1E`, [`Contract::OutsideEpoch`] (epoch:
//!   `allocating_outside_an_epoch_is_caught`, `freeing_outside_an_epoch_is_caught`; and
//!   `ebpf-ext-map`'s epoch tests: `freeing_in_a_maps_teardown_without_an_epoch_is_caught`).
//!
//! Program-information side, [`ProgramInfoClient`]:
//! - `ebpf_validate_program_data` and `ebpf_program.c`'s checks (versions, sizes, NULL
//!   pointers, helper counts, `required_irql`, reserved capabilities, strides) → refused with
//!   `STATUS_INVALID_PARAMETER` and a [`ProgramDataError`] (`program_info`:
//!   `every_rule_of_the_core_refuses_its_bad_input`, `versions_the_core_accepts`,
//!   `module_id_must_be_a_guid`, `a_second_provider_of_the_type_is_refused`).
//! - One client per program, as `ebpf_program_create` registers: `BpfProgram::load` with
//!   program data a provider published registers a client of the program's own (its own
//!   module id), which the provider must attach during the load, else the load fails
//!   (`BpfError::ProgramInfoUnavailable`); the program's free deregisters it, at once at
//!   PASSIVE_LEVEL outside an epoch, else from a worker thread, as the core's epoch work item
//!   (`bpf`: `every_program_has_a_program_information_client_of_its_own`).
//! - A provider that registers again with program data that does not bind a loaded program
//!   (its program-information hash over the program's helpers changed, or a helper it calls
//!   no longer resolves) is refused by that program's client before it sees the client; the
//!   client keeps [`Refusal::ProgramDoesNotBind`] ([`ProgramInfoClient::last_refusal`]) and
//!   the program its reason, and the other programs' clients attach it (`bpf`:
//!   `a_reattached_provider_whose_helpers_changed_does_not_run_programs_loaded_before`,
//!   `each_program_binds_a_reattached_provider_by_itself`).
//! - Helper resolution by id range: ids from 0xFFFF in the type-specific table only, smaller
//!   ones in the global overrides only ([`ProgramInfo::helper`]; `program_info`:
//!   `helpers_resolve_by_the_cores_id_ranges`).
//! - `context_create` and `context_destroy` both present, else `EBPF_INVALID_ARGUMENT`;
//!   64 writable bytes in front of a created context, written once per test run (by effect,
//!   as above) (`program_info`: `context_create_and_destroy_as_test_run_does`); test runs at
//!   `required_irql` (`program_info`: `runs_at_the_required_irql`).
//! - A context a failed `context_create` left in its out slot is destroyed, as the core's
//!   test run does whether the create succeeded or not: by `BpfProgram::test_run*` into the
//!   run's output buffers, as the core passes the caller's; by `create_context`, which learns
//!   no room, into none (`program_info`: `a_context_left_by_a_failed_create_is_destroyed`;
//!   `bpf`: `a_failed_creates_context_is_destroyed_into_the_callers_output_buffers`); a successful
//!   create with a NULL context → `0x1E`, [`Contract::NullTestRunContext`]; a
//!   `context_destroy` reporting more output than its room → `0x1E`,
//!   [`Contract::TestRunOutputTooLarge`] (`contracts`: `a_test_run_context_created_null_is_caught`,
//!   `a_test_run_reporting_more_output_than_its_room_is_caught`).
//!
//! Where the core-sim is stricter than the core: a batch invoke with a moved state fails at
//! once (the core fails at end, or corrupts memory); an end on another thread fails at any
//! IRQL (the core has a slow path below DISPATCH_LEVEL), and so does an `epoch_exit` on
//! another thread; epoch memory used outside an epoch fails at once (upstream leaves it
//! undefined). Every extension header the core-sim validates (program information, its
//! descriptor, helper prototypes, address tables, program data, attach provider data,
//! BTF-resolved function data, custom map headers) must have `total_size` at least `size`,
//! as upstream's newest validators require; the core the reference sheets describe checks
//! only version and size there, and accepts ntosebpfext's released headers, whose
//! `total_size` is 0, which the core-sim refuses (`TotalSizeBelowSize`). The SDK writes full
//! headers. Not enforced: a batch that is never
//! ended (the core's epoch reclamation would stall; [`open_batches`] lets a test check it);
//! a late invoke by a provider whose binding has been replaced by another provider's (the
//! link's binding context is the same for both).
//!
//! Both call the real kernel exports (`NmrRegisterClient`, `NmrClientAttachProvider`,
//! `NmrDeregisterClient`, `NmrWaitForClientDeregisterComplete`), which `ebpf-ext-usersim`
//! implements.
//!
//! # Runtime contract
//!
//! - The calling thread has a usersim [`Kernel`](ebpf_ext_usersim::Kernel) bound (create it
//!   first, drop it last: a [`Link`], a [`ProgramInfoClient`] or a loaded
//!   [`BpfProgram`](bpf::BpfProgram), whose own program-information client goes with it,
//!   deregisters when dropped).
//! - Everything the provider hands over is checked for NULL before use, and provider data is
//!   read field by field, only as far as its header says it extends. A pointer that is
//!   non-NULL but dangling, or an array shorter than its declared count, cannot be detected
//!   (the real core cannot either): that is undefined behaviour in the test process.
//! - The core-sim's own allocations are Rust heap, not kernel pool: they never show up in
//!   [`Kernel::assert_no_leaks`](ebpf_ext_usersim::Kernel::assert_no_leaks); the provider's
//!   pool does, and so does epoch memory, which is pool of the tag the provider asked for.
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

mod batch;
pub mod bpf;
mod contract;
mod epoch;
mod error;
mod hash;
mod link;
mod nmr;
mod program_info;
mod validate;

pub use batch::{batch_begins, batch_ends, open_batches};
pub use contract::{
    BAD_POOL_HEADER, Contract, FAST_FAIL_CORRUPT_LIST_ENTRY, FAST_FAIL_HEAP_METADATA_CORRUPTION,
    FAST_FAIL_INVALID_ARG, IRQL_NOT_LESS_OR_EQUAL, KERNEL_SECURITY_CHECK_FAILURE,
    KMODE_EXCEPTION_NOT_HANDLED, STATUS_ACCESS_VIOLATION, STATUS_ASSERTION_FAILURE,
};
pub use epoch::{CACHE_LINE, EpochMemory, epoch_memory, epoch_synchronize_waiters, in_epoch};
pub use error::{
    AttachProviderDataError, CoreError, HelperTable, Object, ProgramDataError, Refusal,
};
pub use hash::{
    UnknownHelper, program_info_hash, program_info_hash_input, program_info_hash_input_with_btf,
    program_info_hash_with_btf,
};
pub use link::{DetachWatch, Link, LinkSpec, Malformation, Program};
pub use program_info::{
    ContextOutput, Helper, Input, ProgramInfo, ProgramInfoClient, TestRunContext,
};
