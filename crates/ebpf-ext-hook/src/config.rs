//! What an extension declares about its hook: the attach parameter type, the static
//! configuration, the callbacks, and the context programs see.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::ptr;

use ebpf_ext_nmr::foreign;
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::Result;
use ebpf_ext_sys::ebpf_extension::EBPF_CONTEXT_HEADER;
use ebpf_ext_sys::ebpf_structs::{BPF_LINK_TYPE_UNSPEC, bpf_attach_type_t, bpf_link_type};
use ebpf_ext_sys::ntdef::GUID;

use crate::client::Attached;
use crate::policy::AttachPolicy;

/// A plain-data attach parameter, compared bytewise as netebpfext does.
///
/// The provider compares parameters with `==`, so `PartialEq` must be bytewise equality: the
/// derived one of integers, byte arrays and structs of them is, a float's is not (two links
/// with one NaN's bytes would count as different, and `0.0` and `-0.0` as one).
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value (the provider reads it
/// from memory the core supplies), and the type must have no padding.
pub unsafe trait AttachParameter:
    Copy + Default + PartialEq + Send + Sync + 'static
{
}

// SAFETY: integers and byte arrays accept any bit pattern and have no padding.
unsafe impl AttachParameter for u8 {}
// SAFETY: as above.
unsafe impl AttachParameter for u16 {}
// SAFETY: as above.
unsafe impl AttachParameter for u32 {}
// SAFETY: as above.
unsafe impl AttachParameter for u64 {}
// SAFETY: as above.
unsafe impl AttachParameter for i32 {}
// SAFETY: as above.
unsafe impl AttachParameter for i64 {}
// SAFETY: as above.
unsafe impl<const N: usize> AttachParameter for [u8; N] where [u8; N]: Default {}
// SAFETY: GUID is four integer fields without padding (16 bytes, align 4).
unsafe impl AttachParameter for GUID {}
// SAFETY: zero-sized: the hook takes no parameter.
unsafe impl AttachParameter for () {}

/// Static description of a hook.
#[derive(Debug, Clone, Copy)]
pub struct HookConfig<P> {
    /// Attach type GUID: the provider's NMR module id, matched by the core.
    pub attach_type: GUID,
    /// Program type the hook accepts (`supported_program_type`).
    pub program_type: GUID,
    /// `bpf_attach_type` number.
    pub bpf_attach_type: bpf_attach_type_t,
    /// `bpf_link_type` number.
    pub link_type: bpf_link_type,
    /// Attach policy.
    pub policy: AttachPolicy,
    /// The parameter value that means "any" (a zero `data_size` always does).
    pub wildcard: Option<P>,
    /// Most programs attached at once (the capacity of each published snapshot).
    pub max_clients: usize,
    /// Pool tag for the provider's allocations.
    pub tag: PoolTag,
}

impl<P: Copy> HookConfig<P> {
    /// A hook of `attach_type` for programs of `program_type`, with the common settings: link
    /// type `BPF_LINK_TYPE_UNSPEC`, [`AttachPolicy::Unrestricted`], no wildcard value, at most
    /// 64 programs attached at once. The `with_` methods change one each.
    #[must_use]
    pub const fn new(
        attach_type: GUID,
        program_type: GUID,
        bpf_attach_type: bpf_attach_type_t,
        tag: PoolTag,
    ) -> Self {
        HookConfig {
            attach_type,
            program_type,
            bpf_attach_type,
            link_type: BPF_LINK_TYPE_UNSPEC,
            policy: AttachPolicy::Unrestricted,
            wildcard: None,
            max_clients: 64,
            tag,
        }
    }

    /// The attach policy.
    #[must_use]
    pub const fn with_policy(self, policy: AttachPolicy) -> Self {
        HookConfig { policy, ..self }
    }

    /// The parameter value that means "any".
    #[must_use]
    pub const fn with_wildcard(self, wildcard: P) -> Self {
        HookConfig {
            wildcard: Some(wildcard),
            ..self
        }
    }

    /// The `bpf_link_type` number.
    #[must_use]
    pub const fn with_link_type(self, link_type: bpf_link_type) -> Self {
        HookConfig { link_type, ..self }
    }

    /// Most programs attached at once. `HookProvider::register` refuses 0 with
    /// `Error::InvalidParameter` and a trace event (this builder does not panic, so a value
    /// computed at run time, read from the registry say, cannot bug-check the driver).
    #[must_use]
    pub const fn with_max_clients(self, max_clients: usize) -> Self {
        HookConfig {
            max_clients,
            ..self
        }
    }
}

/// What a link asks for when it attaches.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<P> {
    /// The attach parameter, `None` for a wildcard attach (or under
    /// [`AttachPolicy::Unrestricted`]).
    pub parameter: Option<P>,
    /// `prog_attach_flags` from the client data (no defined values; passed through).
    pub prog_attach_flags: u64,
    /// The link's NMR module id.
    pub client_module_id: GUID,
}

/// The extension's side of a hook: its callbacks and data.
///
/// The provider calls the callbacks one at a time, at PASSIVE_LEVEL under its writer lock,
/// in this order for each program: [`on_first_attach`](HookExtension::on_first_attach) when
/// no program is attached, [`on_attach`](HookExtension::on_attach), then once the program is
/// detached [`on_detach`](HookExtension::on_detach), and
/// [`on_last_detach`](HookExtension::on_last_detach) when it was the last one attached.
///
/// The first-attach and last-detach pair suits a kernel callback that should be registered
/// only while programs are attached, such as a process notify routine:
///
/// ```ignore
/// impl HookExtension for ProcessHook {
///     // ...
///     fn on_first_attach(&self) -> Result<()> {
///         process::add::<ProcessHook>()
///     }
///
///     fn on_last_detach(&self) {
///         let _ = process::remove::<ProcessHook>();
///     }
/// }
/// ```
///
/// Dropping the [`HookProvider`](crate::HookProvider) detaches every program, so a callback
/// added on the first attach is removed before the provider is gone.
pub trait HookExtension: Send + Sync + Sized + 'static {
    /// Attach parameter type (`()` for none).
    type Parameter: AttachParameter;
    /// Data the extension keeps per attached program. It is dropped with the program's
    /// binding in NMR's cleanup callback, at IRQL ≤ DISPATCH_LEVEL: its `Drop` may neither
    /// block nor touch pageable memory.
    type ClientData: Send + Sync + 'static;
    /// The context programs are invoked with (the `T` of [`ProgramContext<T>`]): the type the
    /// program type's helpers receive, which is what makes reading it in a helper sound. The
    /// facade's `Start::hook` admits a hook only for a program type whose helpers read it.
    ///
    /// The context's data pointers (the fields the program type's context descriptor names)
    /// are not the extension's to set: a provider registered with their offsets (the facade's
    /// `Start::hook`, [`HookProvider::register_with_data`](crate::HookProvider::register_with_data))
    /// writes them from the [`ProgramContext`]'s [`ContextData`] before each invocation.
    type Context: 'static;

    /// Called when a program attaches while none is attached, before
    /// [`HookExtension::on_attach`], at PASSIVE_LEVEL under the provider's writer lock. An
    /// error refuses the attach with `STATUS_ACCESS_DENIED`, and `on_attach` is not called.
    ///
    /// A program counts as attached from the end of a successful attach (its `on_attach`
    /// returned `Ok` and the provider allocated its client) until its `on_detach` has run; a
    /// program being detached still counts until then. If the attach
    /// is refused after this returned `Ok` (by `on_attach`, or because the provider could
    /// not allocate the client), [`HookExtension::on_last_detach`] undoes it.
    ///
    /// # Errors
    /// Whatever the extension decides; the attach is then refused.
    fn on_first_attach(&self) -> Result<()> {
        Ok(())
    }

    /// Called for every attach that passed validation and the attach policy, at PASSIVE_LEVEL
    /// under the provider's writer lock. An error rejects the attach with
    /// `STATUS_ACCESS_DENIED`.
    ///
    /// # Errors
    /// Whatever the extension decides; the attach is then refused.
    fn on_attach(
        &self,
        request: &AttachRequest<Self::Parameter>,
        attached: &Attached<'_, Self>,
    ) -> Result<Self::ClientData>;

    /// Called at PASSIVE_LEVEL once a detaching program can no longer be invoked, before the
    /// detach completes, under the provider's writer lock like [`HookExtension::on_attach`]:
    /// the two never overlap, so state they share needs no lock of its own.
    ///
    /// A detaching program no longer counts against the attach policy (it is not in
    /// [`Attached`]), so a new program may attach with the same parameter before this runs:
    /// that program's `on_attach` can come first. An extension that keeps a resource per
    /// parameter (a filter per interface) counts its users rather than creating it in
    /// `on_attach` and deleting it here.
    fn on_detach(&self, client: &Self::ClientData) {
        let _ = client;
    }

    /// Called at PASSIVE_LEVEL under the provider's writer lock after the
    /// [`HookExtension::on_detach`] of the last attached program, and to undo
    /// [`HookExtension::on_first_attach`] when the attach it admitted is refused afterwards.
    /// Each call follows one successful `on_first_attach`.
    fn on_last_detach(&self) {}
}

/// Where a program type's context keeps its data pointers: the byte offsets of the two
/// pointer fields the context descriptor names (`data_start` and `data_end`), which the
/// provider writes before every invocation from the [`ProgramContext`]'s [`ContextData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFields {
    /// Offset of the field holding the first byte's address.
    pub start: usize,
    /// Offset of the field holding the address one past the last byte.
    pub end: usize,
}

/// The bytes programs see through the context's data pointers during one invocation (a
/// packet, a command line): borrowed for `'d`, so they outlive every invocation of the
/// [`ProgramContext`] that holds them.
///
/// Programs may write them, as the verifier allows for the data of any program type.
#[derive(Debug)]
pub struct ContextData<'d> {
    start: *mut u8,
    end: *mut u8,
    _bytes: PhantomData<&'d mut [u8]>,
}

// SAFETY: an exclusive borrow of bytes, as a `&'d mut [u8]` is (which is `Send`).
unsafe impl Send for ContextData<'_> {}
// SAFETY: as above (a `&'d mut [u8]` is `Sync`); shared, it only gives the addresses.
unsafe impl Sync for ContextData<'_> {}

impl ContextData<'static> {
    /// No data: both pointers NULL.
    pub const NONE: Self = ContextData {
        start: ptr::null_mut(),
        end: ptr::null_mut(),
        _bytes: PhantomData,
    };
}

impl<'d> ContextData<'d> {
    /// The bytes of `data` (both pointers NULL if it is empty).
    #[must_use]
    pub fn new(data: &'d mut [u8]) -> Self {
        if data.is_empty() {
            return ContextData::NONE;
        }
        let range = data.as_mut_ptr_range();
        ContextData {
            start: range.start,
            end: range.end,
            _bytes: PhantomData,
        }
    }

    /// `len` bytes at `start` that no Rust reference covers (a buffer the kernel lends).
    /// Unlike [`ContextData::new`], an empty buffer keeps its `start` (programs see
    /// `start..start`, as a kernel string with `Length` 0 gives upstream's programs).
    ///
    /// # Safety
    /// `start` is NULL with `len` 0, or valid for reads and writes of `len` bytes for `'d`,
    /// and nothing else reads or writes them while an invocation runs.
    #[must_use]
    pub const unsafe fn from_raw_parts(start: *mut u8, len: usize) -> Self {
        ContextData {
            start,
            end: start.wrapping_add(len),
            _bytes: PhantomData,
        }
    }

    /// The first byte's address.
    #[must_use]
    pub fn start(&self) -> *const u8 {
        self.start
    }

    /// The number of bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        (self.end as usize).wrapping_sub(self.start as usize)
    }

    /// Whether there are no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'d> From<&'d mut [u8]> for ContextData<'d> {
    fn from(data: &'d mut [u8]) -> Self {
        ContextData::new(data)
    }
}

/// The program context the provider passes to programs: the 64-byte header the core owns,
/// then the extension's context. Programs see a pointer to `context`.
///
/// The context's data pointers (the fields the program type's context descriptor names) are
/// the provider's to write: before each invocation it sets them to the bounds of this
/// value's [`ContextData`] (NULL when there is none), so programs, which the verifier lets
/// access whatever lies between them, only ever see bytes borrowed for `'d`. A value the
/// extension leaves in those fields is never what programs see (and a helper that receives
/// the context mutably has them put back when it returns: `program_type!` declares where they
/// lie to its helpers). This holds for providers registered with the data fields
/// (`HookProvider::register_with_data`, as the facade's `Start::hook` does); without them the
/// fields are left as the extension built them (`HookProvider::register`'s contract).
#[repr(C)]
#[derive(Debug)]
pub struct ProgramContext<'d, T> {
    header: EBPF_CONTEXT_HEADER,
    /// The extension's program context.
    pub context: T,
    data: ContextData<'d>,
}

impl<T> ProgramContext<'static, T> {
    /// Wraps a context with a zeroed header and no data.
    pub const fn new(context: T) -> Self {
        ProgramContext {
            header: [0; 8],
            context,
            data: ContextData::NONE,
        }
    }
}

impl<'d, T> ProgramContext<'d, T> {
    /// Wraps a context with a zeroed header, over `data`.
    pub fn with_data(context: T, data: impl Into<ContextData<'d>>) -> Self {
        ProgramContext {
            header: [0; 8],
            context,
            data: data.into(),
        }
    }

    /// The bytes programs see.
    pub fn data(&self) -> &ContextData<'d> {
        &self.data
    }

    /// The pointer programs receive (the extension's context, just after the header), with
    /// the data pointers at `fields` set to this value's data.
    ///
    /// # Safety
    /// `fields`, if any, are the offsets of two pointer fields of `T` (what
    /// `HookProvider::register_with_data`'s caller promised).
    ///
    /// The pointer is derived from the whole value, not from `context` alone: the core writes
    /// the header in front of it on every invocation, and its provenance must cover those
    /// bytes too.
    pub(crate) unsafe fn program_pointer(&mut self, fields: Option<DataFields>) -> *mut c_void {
        let values = [self.data.start, self.data.end];
        let whole = ptr::from_mut(self).cast::<u8>();
        // `repr(C)`: the context is at its field offset, inside the value.
        let context = whole.wrapping_add(offset_of!(Self, context));
        if let Some(fields) = fields {
            // SAFETY: the offsets of two pointer fields of `T` (this function's contract),
            // inside the context, which is borrowed mutably here (through `self`).
            unsafe { foreign::write_pointer_fields(context, [fields.start, fields.end], values) };
        }
        context.cast()
    }
}

/// Whether to go on to the next program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Run the next matching program.
    Continue,
    /// Stop: the verdict is final.
    Stop,
}
