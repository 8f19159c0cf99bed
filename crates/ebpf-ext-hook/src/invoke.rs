//! Running programs: every matching program, a filtered subset with a verdict, on an
//! expanded stack, and batched.

use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr;

use ebpf_ext_nmr::foreign;
use ebpf_ext_sys::ebpf_extension::{
    ebpf_execution_context_state_t, ebpf_program_batch_end_invoke_function_t,
};
use ebpf_ext_sys::ebpf_result::EBPF_SUCCESS;
use ebpf_ext_sys::ntddk::KeExpandKernelStackAndCalloutEx;
use ebpf_ext_sys::ntdef::{FALSE, NTSTATUS};
use ebpf_ext_sys::ntstatus::STATUS_SUCCESS;
use ebpf_ext_sys::{Error, Result};

use crate::client::{ClientRef, Entry, live};
use crate::config::{DataFields, Flow, HookExtension, ProgramContext};
use crate::provider::HookProvider;
use crate::snapshot::SnapshotGuard;

/// What [`HookProvider::invoke_until`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation {
    /// The last program's result (the one `stop` accepted, if any did).
    pub result: u32,
    /// How many programs ran.
    pub programs_run: u32,
}

/// Stack `invoke_on_expanded_stack` asks for (`NET_EBPF_EXT_STACK_EXPANSION_SIZE`).
pub const STACK_EXPANSION_SIZE: usize = 16 * 1024;

impl<E: HookExtension> HookProvider<E> {
    /// Runs every program attached for `parameter` (specific ones, then wildcards) and returns
    /// the last verdict (netebpfext's `net_ebpf_extension_hook_invoke_programs`).
    ///
    /// Programs are invoked with the hook's context type, [`HookExtension::Context`] (what
    /// their helpers read), here and through [`ClientRef::invoke`](crate::ClientRef::invoke)
    /// and [`Batch::invoke`]:
    ///
    /// ```
    /// # use ebpf_ext_usersim as _;
    /// # use ebpf_ext_hook::*;
    /// # struct Hook;
    /// # impl HookExtension for Hook {
    /// #     type Parameter = (); type ClientData = (); type Context = u64;
    /// #     fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> ebpf_ext_sys::Result<()> { Ok(()) }
    /// # }
    /// fn fire(hook: &HookProvider<Hook>) {
    ///     let _ = hook.invoke(&(), &mut ProgramContext::new(7u64));
    ///     for client in hook.clients().iter() {
    ///         let _ = client.invoke(&mut ProgramContext::new(7u64));
    ///     }
    /// }
    /// ```
    ///
    /// ```compile_fail
    /// # use ebpf_ext_usersim as _;
    /// # use ebpf_ext_hook::*;
    /// # struct Hook;
    /// # impl HookExtension for Hook {
    /// #     type Parameter = (); type ClientData = (); type Context = u64;
    /// #     fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> ebpf_ext_sys::Result<()> { Ok(()) }
    /// # }
    /// fn fire(hook: &HookProvider<Hook>) {
    ///     let _ = hook.invoke(&(), &mut ProgramContext::new(7u8)); // one byte for a u64
    /// }
    /// ```
    ///
    /// ```compile_fail
    /// # use ebpf_ext_usersim as _;
    /// # use ebpf_ext_hook::*;
    /// # struct Hook;
    /// # impl HookExtension for Hook {
    /// #     type Parameter = (); type ClientData = (); type Context = u64;
    /// #     fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> ebpf_ext_sys::Result<()> { Ok(()) }
    /// # }
    /// fn fire(hook: &HookProvider<Hook>) {
    ///     for client in hook.clients().iter() {
    ///         let _ = client.invoke(&mut ProgramContext::new(7u8)); // one byte for a u64
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] (`EBPF_OBJECT_NOT_FOUND`) if no program ran; the first invoke
    /// failure otherwise.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn invoke(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<'_, E::Context>,
    ) -> Result<u32> {
        self.invoke_with(parameter, context, |_| true, |_, _| Flow::Continue)
    }

    /// Like [`HookProvider::invoke`], running only programs `filter` selects, and asking
    /// `verdict` after each program whether to go on
    /// (`net_ebpf_extension_hook_invoke_filtered_programs` with `process_verdict`). `verdict`
    /// gets the context as the program left it, and its result: what netebpfext's connect
    /// hooks read to stop at a redirect.
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn invoke_with(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<'_, E::Context>,
        mut filter: impl FnMut(&ClientRef<'_, E>) -> bool,
        mut verdict: impl FnMut(&E::Context, u32) -> Flow,
    ) -> Result<u32> {
        let snapshot = self.state().snapshots.read();
        let mut outcome = Err(Error::ObjectNotFound);
        for client in live(snapshot.entries()) {
            if !client.matches(parameter) || !filter(&ClientRef { client }) {
                continue;
            }
            // Written before each program, not once per call: what one program stored in
            // them is never the next one's range.
            // SAFETY: the offsets `register_with_data`'s caller vouched for, of `E::Context`.
            let program = unsafe { context.program_pointer(self.state().data_fields) };
            let result = client.invoke(program)?;
            outcome = Ok(result);
            // SAFETY: `program` points at `context.context`, an `E::Context`, borrowed mutably
            // for this call; no program runs while `verdict` reads it, and the reference ends
            // before the next one does. (Read through `program`, which the programs wrote
            // through, not through `context`.)
            let seen = unsafe { &*program.cast::<E::Context>() };
            if verdict(seen, result) == Flow::Stop {
                break;
            }
        }
        outcome
    }

    /// Runs the programs attached for `parameter` in order until `stop` says a result is
    /// final, and says what ran: the common shape of a verdict hook (netebpfext's
    /// `process_verdict` callbacks, ntosebpfext's deny-on-failure).
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn invoke_until(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<'_, E::Context>,
        mut stop: impl FnMut(u32) -> bool,
    ) -> Result<Invocation> {
        let mut programs_run = 0;
        let result = self.invoke_with(
            parameter,
            context,
            |_| true,
            |_, result| {
                programs_run += 1;
                if stop(result) {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        )?;
        Ok(Invocation {
            result,
            programs_run,
        })
    }

    /// Like [`HookProvider::invoke_until`], except that a program whose invoke fails counts
    /// as having returned 0 and the chain goes on: ntosebpfext's process hook, where a failed
    /// program neither denies the creation nor keeps later programs from running. Each
    /// failure is traced (an `EbpfExtGenericMessage` "program invoke failed" at error level,
    /// keyword `EXTENSION`, with the core's status as an `NTSTATUS`). A program that is
    /// detaching (the core has begun its detach, or a publish has already left it out) is not
    /// run and not counted, as upstream's loop skips a client whose rundown it cannot enter;
    /// unlike upstream's, the skip is not traced.
    ///
    /// [`Invocation::programs_run`] counts every program invoked, failed ones included;
    /// [`Invocation::result`] is the last result considered (0 for a failure).
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] (`EBPF_OBJECT_NOT_FOUND`) if no program is attached for
    /// `parameter`; never an invoke failure.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn invoke_until_failures_as_zero(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<'_, E::Context>,
        mut stop: impl FnMut(u32) -> bool,
    ) -> Result<Invocation> {
        let snapshot = self.state().snapshots.read();
        let mut outcome = Err(Error::ObjectNotFound);
        let mut programs_run = 0;
        for client in live(snapshot.entries()) {
            if !client.matches(parameter) {
                continue;
            }
            programs_run += 1;
            // SAFETY: the offsets `register_with_data`'s caller vouched for, of `E::Context`.
            let program = unsafe { context.program_pointer(self.state().data_fields) };
            let result = client.invoke(program).unwrap_or_else(|error| {
                ebpf_ext_trace::trace_message_status!(
                    ebpf_ext_trace::Level::Error,
                    ebpf_ext_trace::keyword::EXTENSION,
                    "program invoke failed",
                    error.ntstatus()
                );
                0
            });
            outcome = Ok(Invocation {
                result,
                programs_run,
            });
            if stop(result) {
                break;
            }
        }
        outcome
    }

    /// [`HookProvider::invoke_with`] on a kernel stack expanded by
    /// [`STACK_EXPANSION_SIZE`] bytes (`KeExpandKernelStackAndCalloutEx`, no wait), as
    /// netebpfext's `net_ebpf_extension_hook_expand_stack_and_invoke_programs`.
    ///
    /// # Errors
    /// [`Error::Unsuccessful`] (`EBPF_FAILED`) if the stack cannot be expanded; otherwise as
    /// [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL.
    pub fn invoke_on_expanded_stack(
        &self,
        parameter: &E::Parameter,
        context: &mut ProgramContext<'_, E::Context>,
        mut filter: impl FnMut(&ClientRef<'_, E>) -> bool,
        mut verdict: impl FnMut(&E::Context, u32) -> Flow,
    ) -> Result<u32> {
        let mut outcome = Err(Error::Unsuccessful);
        let mut call = || outcome = self.invoke_with(parameter, context, &mut filter, &mut verdict);
        let status = expand_stack(&mut call);
        if status != STATUS_SUCCESS {
            ebpf_ext_trace::trace_api_failure!(
                ebpf_ext_trace::keyword::EXTENSION,
                "KeExpandKernelStackAndCalloutEx",
                status
            );
            return Err(Error::Unsuccessful);
        }
        outcome
    }

    /// Runs `f` with a batch: one snapshot and one `batch_begin` for many events, then
    /// [`Batch::invoke`] per event inside `f`, and `batch_end` when `f` returns (or unwinds).
    /// Programs whose dispatch table has no batch entries are invoked singly inside the batch.
    ///
    /// The core's execution-context state lives in this call's frame: the core links its
    /// address into a per-processor list at `batch_begin`, so that very address is what every
    /// batch invoke and the one `batch_end` receive. The batch is only lent to `f`, so safe code
    /// can neither move its state nor leak it (and with it the snapshot a detach waits for).
    /// For example, `provider.with_batch(&parameter, |batch| events.iter_mut().map(|e|
    /// batch.invoke(e)).collect::<Vec<_>>())` runs a whole receive queue in one batch.
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL. `f` must return at the IRQL it was called at: the core's
    /// `batch_end` requires the IRQL of `batch_begin` (and, at DISPATCH_LEVEL, the processor).
    /// The batch holds the snapshot, so an attach or a detach of this hook (each publishes a
    /// new snapshot and waits out the old one's readers) waits until `f` returns: keep batches
    /// short.
    ///
    /// # Locking
    /// Takes no lock; `f` must not wait for an attach or a detach of this hook (it would wait
    /// for itself).
    pub fn with_batch<R>(&self, parameter: &E::Parameter, f: impl FnOnce(&Batch<'_, E>) -> R) -> R {
        let snapshot = self.state().snapshots.read();
        // The core's state: all-zero is its initial value. It stays in this frame, never
        // moved, until `_end` (declared after it, so dropped before it) has ended the batch.
        let mut state = MaybeUninit::<ebpf_execution_context_state_t>::zeroed();
        let state_ptr = foreign::to_foreign_mut(&mut state);
        let first = live(snapshot.entries()).find(|c| c.matches(parameter) && c.batch.is_some());
        let end = first.and_then(|c| c.batch).and_then(|b| {
            // SAFETY: the core's batch-begin function, valid while the client is reachable
            // (the snapshot is held); `state_ptr` is `size_of` the state, writable, and stays
            // at this address until the matching end below.
            let status =
                unsafe { (b.begin)(size_of::<ebpf_execution_context_state_t>(), state_ptr) };
            (status == EBPF_SUCCESS).then_some(b.end)
        });
        let batch = Batch {
            snapshot,
            parameter: *parameter,
            data_fields: self.state().data_fields,
            state: state_ptr,
            batched: end.is_some(),
        };
        let _end = BatchEnd {
            end,
            state: state_ptr,
        };
        f(&batch)
    }
}

/// Many events through one snapshot and one `batch_begin`/`batch_end` pair, lent to the
/// closure of [`HookProvider::with_batch`].
///
/// # Invariants
/// `state` points to the core's execution-context state in the frame of the `with_batch` call
/// that lent this batch; when `batched`, `batch_begin` accepted it and `batch_end` has not run
/// yet. The batch is neither `Send` nor `Sync` (raw pointer): it is used on the thread that
/// began it.
pub struct Batch<'a, E: HookExtension> {
    snapshot: SnapshotGuard<'a, Entry<E>>,
    parameter: E::Parameter,
    data_fields: Option<DataFields>,
    state: *mut c_void,
    batched: bool,
}

impl<E: HookExtension> Batch<'_, E> {
    /// Runs the matching programs for one event, as [`HookProvider::invoke`].
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL, the IRQL `with_batch` was called at.
    #[inline]
    pub fn invoke(&self, context: &mut ProgramContext<'_, E::Context>) -> Result<u32> {
        self.invoke_until(context, |_| false).map(|run| run.result)
    }

    /// Runs the matching programs for one event in order until `stop` says a result is
    /// final, as [`HookProvider::invoke_until`] (`|_| true` runs only the first: the one
    /// program a single-program hook runs per event).
    ///
    /// # Errors
    /// As [`HookProvider::invoke`].
    ///
    /// # IRQL
    /// ≤ DISPATCH_LEVEL, the IRQL `with_batch` was called at.
    #[inline]
    pub fn invoke_until(
        &self,
        context: &mut ProgramContext<'_, E::Context>,
        mut stop: impl FnMut(u32) -> bool,
    ) -> Result<Invocation> {
        let mut outcome = Err(Error::ObjectNotFound);
        let mut programs_run = 0;
        for client in live(self.snapshot.entries()) {
            if !client.matches(&self.parameter) {
                continue;
            }
            // SAFETY: the provider's data fields, which `register_with_data`'s caller vouched
            // for.
            let program = unsafe { context.program_pointer(self.data_fields) };
            let result = match client.batch {
                Some(b) if self.batched => {
                    let mut result = 0u32;
                    // SAFETY: the core's batch-invoke function and binding context, valid while
                    // the client is reachable; `state` is the address batch_begin accepted
                    // (type invariant).
                    let status = unsafe {
                        (b.invoke)(
                            client.binding_context,
                            program,
                            &raw mut result,
                            self.state.cast_const(),
                        )
                    };
                    if status != EBPF_SUCCESS {
                        return Err(Error::from_ebpf_result(status)
                            .err()
                            .unwrap_or(Error::Unsuccessful));
                    }
                    result
                }
                _ => client.invoke(program)?,
            };
            programs_run += 1;
            outcome = Ok(Invocation {
                result,
                programs_run,
            });
            if stop(result) {
                break;
            }
        }
        outcome
    }
}

/// Ends a begun batch exactly once, when `with_batch` returns or unwinds.
struct BatchEnd {
    end: Option<ebpf_program_batch_end_invoke_function_t>,
    state: *mut c_void,
}

impl Drop for BatchEnd {
    fn drop(&mut self) {
        if let Some(end) = self.end {
            // SAFETY: the state batch_begin accepted, at the address it was begun at, still
            // alive in `with_batch`'s frame; the snapshot keeping the core's function valid is
            // dropped after this guard.
            let _ = unsafe { end(self.state) };
        }
    }
}

unsafe extern "win64" fn expand_stack_callout<F: FnMut()>(parameter: *mut c_void) {
    // SAFETY: `expand_stack` passes its `F`, alive and not otherwise borrowed for the call.
    if let Some(f) = unsafe { foreign::from_foreign_mut::<F>(parameter) } {
        f();
    }
}

fn expand_stack<F: FnMut()>(f: &mut F) -> NTSTATUS {
    // SAFETY: the callout runs `f` synchronously on this thread before the call returns.
    unsafe {
        KeExpandKernelStackAndCalloutEx(
            expand_stack_callout::<F>,
            foreign::to_foreign_mut(f),
            STACK_EXPANSION_SIZE,
            FALSE,
            ptr::null_mut(),
        )
    }
}
