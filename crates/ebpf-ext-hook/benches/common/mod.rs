//! What both hot-path benchmarks share: the hook they register, the program their links run,
//! and the one way every variant calls the core's invoke function.

use core::ffi::c_void;
use core::hint::black_box;

use ebpf_ext_hook::{AttachPolicy, AttachRequest, Attached, HookConfig, HookExtension};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::Result;
use ebpf_ext_sys::ntdef::GUID;

/// A hook that admits every program.
pub(crate) struct BenchHook;

impl HookExtension for BenchHook {
    type Parameter = u32;
    type ClientData = ();
    type Context = u64;
    fn on_attach(&self, _: &AttachRequest<u32>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

/// The program every link runs: as cheap as a program can be.
pub(crate) fn program(ctx: *mut c_void) -> core::result::Result<u32, i32> {
    Ok(u32::from(!ctx.is_null()))
}

/// The configuration of the benchmarks' hook (any number of programs, no parameter).
pub(crate) fn config(attach_type: GUID) -> HookConfig<u32> {
    HookConfig {
        attach_type,
        program_type: GUID::from_u128(1),
        bpf_attach_type: 1,
        link_type: 1,
        policy: AttachPolicy::Unrestricted,
        wildcard: None,
        max_clients: 64,
        tag: PoolTag::new(*b"Bnch"),
    }
}

/// The core's invoke function of a link.
pub(crate) type Invoke = ebpf_ext_sys::ebpf_extension::ebpf_program_invoke_function_t;

/// Calls the core's invoke function, as every variant must.
#[inline]
pub(crate) fn call(f: Invoke, binding: *const c_void, ctx: *mut c_void) -> u32 {
    let mut result = 0;
    // SAFETY: the link's invoke function with its own binding context, alive for the bench.
    let _ = unsafe { black_box(f)(binding, ctx, &raw mut result) };
    result
}
