//! A test run's data pointers are the SDK's to write: `context_create` sets them to what
//! `TestRun::data` chooses (the `data_in` it received in place, bytes the run owns, or none),
//! whatever `TestRun::create` left there, for program types declared with `program_type!`'s
//! `data` clause; a helper that receives the context mutably cannot move them; and a test
//! run's `ctx_out` never carries them.

#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_pool::{PoolArray, PoolTag};
use ebpf_ext_program_info::{
    Bytes, Context, ContextMut, CopyTestRun, DataPointer, Input, ProgramInfoProvider, TestRun,
    TestRunContext, TestRunData, TestRunInput, TestRunOutput, TypedProgramData, no_padding,
    program_type,
};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, ebpf_result_t};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_usersim::Kernel;

const TAG: PoolTag = PoolTag::new(*b"TrDp");

no_padding! {
    /// A context with its data pointers after a value, so their offsets are not 0 and 8.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct Ctx {
        value: u64,
        data_start: DataPointer,
        data_end: DataPointer,
    }
}

fn value(context: &Ctx) -> u64 {
    context.value
}

/// `ctx_in` whose pointer fields hold the caller's garbage, which `create` keeps.
fn context_in() -> Vec<u8> {
    let mut bytes = vec![0xAB; 24];
    bytes[..8].copy_from_slice(&7u64.to_ne_bytes());
    bytes
}

fn create(input: &TestRunInput<'_>) -> Result<TestRunContext<Ctx>, ebpf_result_t> {
    let context: Ctx = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
    assert_eq!(
        context.data_start.as_ptr() as usize,
        0xABAB_ABAB_ABAB_ABAB,
        "create sees the caller's bytes"
    );
    Ok(TestRunContext::new(context))
}

fn destroy(context: &TestRunContext<Ctx>, output: &mut TestRunOutput) {
    output.write_context(&context.context);
}

/// The default: programs work on the caller's `data_in`.
struct InPlace;
impl TestRun for InPlace {
    type Context = Ctx;
    const TAG: PoolTag = TAG;
    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<Ctx>, Self), ebpf_result_t> {
        Ok((create(input)?, InPlace))
    }
    fn destroy(self, context: &mut TestRunContext<Ctx>, output: &mut TestRunOutput) {
        destroy(context, output);
    }
}

/// Programs work on the run's copy of `data_in`, reversed.
struct Copied(Option<PoolArray<u8>>);
impl TestRun for Copied {
    type Context = Ctx;
    const TAG: PoolTag = TAG;
    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<Ctx>, Self), ebpf_result_t> {
        let context = create(input)?;
        let copy = match input.data() {
            None => None,
            Some(data) => {
                let mut copy = PoolArray::try_new(data.len(), TAG).map_err(|_| EBPF_NO_MEMORY)?;
                copy.copy_from_slice(data);
                copy.reverse();
                Some(copy)
            }
        };
        Ok((context, Copied(copy)))
    }
    fn destroy(self, context: &mut TestRunContext<Ctx>, output: &mut TestRunOutput) {
        destroy(context, output);
    }
    fn data(&mut self) -> TestRunData<'_> {
        self.0
            .as_deref_mut()
            .map_or(TestRunData::Owned(&mut []), TestRunData::Owned)
    }
}

/// Programs get no data.
struct Dataless;
impl TestRun for Dataless {
    type Context = Ctx;
    const TAG: PoolTag = TAG;
    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<Ctx>, Self), ebpf_result_t> {
        Ok((create(input)?, Dataless))
    }
    fn destroy(self, context: &mut TestRunContext<Ctx>, output: &mut TestRunOutput) {
        destroy(context, output);
    }
    fn data(&mut self) -> TestRunData<'_> {
        TestRunData::None
    }
}

const IN_PLACE: GUID = GUID::from_u128(0xda7a_0101_0000_4000_8000_0000_0000_0001);
const COPIED: GUID = GUID::from_u128(0xda7a_0102_0000_4000_8000_0000_0000_0001);
const DATALESS: GUID = GUID::from_u128(0xda7a_0103_0000_4000_8000_0000_0000_0001);

program_type! {
    static IN_PLACE_DATA = c"in_place", IN_PLACE, 997;
    context Ctx, data data_start..data_end;
    helpers { 0x1_0000, c"value" => value(Context); }
    test run InPlace;
}
program_type! {
    static COPIED_DATA = c"copied", COPIED, 997;
    context Ctx, data data_start..data_end;
    helpers { 0x1_0000, c"value" => value(Context); }
    test run Copied;
}
program_type! {
    static DATALESS_DATA = c"dataless", DATALESS, 997;
    context Ctx, data data_start..data_end;
    helpers { 0x1_0000, c"value" => value(Context); }
    test run Dataless;
}

const COPY: GUID = GUID::from_u128(0xda7a_0104_0000_4000_8000_0000_0000_0001);

program_type! {
    static COPY_DATA = c"copy", COPY, 997;
    context Ctx, data data_start..data_end;
    helpers { 0x1_0000, c"value" => value(Context); }
    test run CopyTestRun<Ctx, { COPY_TAG.value() }>;
}

/// The copy test run's own tag, apart from the provider's.
const COPY_TAG: PoolTag = PoolTag::new(*b"TrCp");

#[test]
fn the_copy_test_run_echoes_the_context_and_the_data() {
    let kernel = Kernel::new();
    let data_in = [1u8, 2, 3];
    let (seen, bytes, given) = created_range(&COPY_DATA, &data_in);
    assert_eq!(seen, given, "in place");
    assert_eq!(bytes, data_in);

    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&COPY_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(COPY).expect("attach");
    let ctx_in = context_in();
    let created = client.create_context(&data_in, &ctx_in).expect("create");
    assert!(
        kernel
            .pool_outstanding()
            .iter()
            .any(|usage| usage.tag == "TrCp" && usage.count == 1),
        "the run is allocated with the driver's tag: {:?}",
        kernel.pool_outstanding()
    );
    let out = created.destroy(8, 24).expect("destroy");
    assert_eq!(out.data, data_in, "data_out");
    assert_eq!(out.context_size_out, 24, "the context, without the header");
    assert_eq!(
        out.context[..8],
        7u64.to_ne_bytes(),
        "ctx_in's value echoed"
    );
    assert_eq!(out.context[8..], [0; 16], "the data pointers NULL");

    assert_eq!(
        client.create_context(&data_in, &context_in()[..23]).err(),
        Some(EBPF_INVALID_ARGUMENT),
        "ctx_in shorter than the context"
    );
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}

/// The data range a created context holds, as addresses, and its bytes; and the range of the
/// core's copy of `data_in` that `context_create` received.
fn created_range(
    data: &'static TypedProgramData<Ctx>,
    data_in: &[u8],
) -> ((usize, usize), Vec<u8>, (usize, usize)) {
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(data, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(data.program_type()).expect("attach");
    let ctx_in = context_in();
    let created = client.create_context(data_in, &ctx_in).expect("create");
    let given = created.data_in();
    let given = (given.start as usize, given.end as usize);
    // SAFETY: the program context `context_create` made, a `Ctx`, alive until destroyed.
    let context = unsafe { *created.as_ptr().cast::<Ctx>() };
    assert_eq!(context.value, 7);
    let (start, end) = (
        context.data_start.as_ptr() as usize,
        context.data_end.as_ptr() as usize,
    );
    let bytes = if start == 0 {
        Vec::new()
    } else {
        // SAFETY: the range the SDK wrote, readable until the context is destroyed.
        unsafe { core::slice::from_raw_parts(context.data_start.as_ptr(), end - start) }.to_vec()
    };
    let out = created.destroy(0, 24).expect("destroy");
    assert_eq!(out.context[..8], 7u64.to_ne_bytes());
    assert_eq!(
        out.context[8..],
        [0; 16],
        "no kernel address reaches ctx_out"
    );
    drop(client);
    drop(provider);
    ((start, end), bytes, given)
}

#[test]
fn the_default_points_programs_at_the_callers_data() {
    let kernel = Kernel::new();
    let data_in = [1u8, 2, 3];
    let (seen, bytes, given) = created_range(&IN_PLACE_DATA, &data_in);
    assert_eq!(seen, given, "the data context_create received");
    assert_eq!(bytes, data_in);
    assert_eq!(created_range(&IN_PLACE_DATA, &[]).0, (0, 0), "no data_in");
    kernel.assert_no_leaks();
}

#[test]
fn owned_bytes_are_what_programs_see() {
    let kernel = Kernel::new();
    let data_in = [1u8, 2, 3];
    let (seen, bytes, given) = created_range(&COPIED_DATA, &data_in);
    assert_ne!(seen.0, given.0, "the run's copy");
    assert_eq!(seen.1 - seen.0, 3);
    assert_eq!(bytes, [3, 2, 1]);
    assert_eq!(created_range(&COPIED_DATA, &[]).0, (0, 0), "empty: NULL");
    kernel.assert_no_leaks();
}

#[test]
fn no_data_is_null_whatever_create_left() {
    let kernel = Kernel::new();
    assert_eq!(created_range(&DATALESS_DATA, &[1, 2, 3]).0, (0, 0));
    kernel.assert_no_leaks();
}

#[test]
fn the_program_data_names_the_fields_hooks_write() {
    assert_eq!(IN_PLACE_DATA.data_fields(), Some((8, 16)));
}

no_padding! {
    /// A context whose helpers may change it.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct MutCtx {
        /// First byte of the data.
        pub data_start: DataPointer,
        /// One past its last byte.
        pub data_end: DataPointer,
        /// A made-up data pointer, from the caller's `ctx_in`.
        pub stash: DataPointer,
        /// Helper calls so far.
        pub calls: u64,
    }
}

/// What the widening helpers do: point the range at `[NULL, stash)` (a made-up pointer from
/// the caller's bytes), and count the call.
fn widen_range(context: &mut MutCtx) -> u64 {
    context.calls += 1;
    context.data_end = context.stash;
    context.data_start = DataPointer::NULL;
    context.calls
}

/// A `ContextMut` helper at the third register (after a buffer and its size).
fn widen(bytes: Input<'_>, context: &mut MutCtx) -> u64 {
    widen_range(context) + bytes.len() as u64
}

/// The same as a global-helper override.
fn widen_global(context: &mut MutCtx) -> u64 {
    widen_range(context)
}

const WIDEN: GUID = GUID::from_u128(0xda7a_0104_0000_4000_8000_0000_0000_0001);
const WIDEN_SHADOWED: GUID = GUID::from_u128(0xda7a_0106_0000_4000_8000_0000_0000_0001);
const WIDEN_WRAPPED: GUID = GUID::from_u128(0xda7a_0107_0000_4000_8000_0000_0000_0001);

/// The default test run over `C`, its context read from `ctx_in`.
struct MutRun<C>(core::marker::PhantomData<fn() -> C>);
impl<C: ebpf_ext_program_info::NoPadding> TestRun for MutRun<C> {
    type Context = C;
    const TAG: PoolTag = TAG;
    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<C>, Self), ebpf_result_t> {
        let context: C = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        Ok((
            TestRunContext::new(context),
            MutRun(core::marker::PhantomData),
        ))
    }
    fn destroy(self, context: &mut TestRunContext<C>, output: &mut TestRunOutput) {
        output.write_context(&context.context);
    }
}

program_type! {
    static WIDEN_DATA = c"widen", WIDEN, 997;
    context MutCtx, data data_start..data_end;
    helpers { 0x1_0000, c"widen" => widen(Bytes, ContextMut); }
    global helpers { 26, c"bpf_get_socket_cookie" => widen_global(ContextMut); }
    test run MutRun<MutCtx>;
}

/// The declaration in a module whose own `drop` would keep nothing.
mod shadowed {
    use super::{Bytes, ContextMut, MutCtx, MutRun, WIDEN_SHADOWED, program_type, widen};

    #[allow(dead_code, reason = "only here to shadow the prelude's")]
    fn drop<T>(value: T) {
        core::mem::forget(value);
    }

    program_type! {
        pub static WIDEN_SHADOWED_DATA = c"widen_shadowed", WIDEN_SHADOWED, 997;
        context MutCtx, data data_start..data_end;
        helpers { 0x1_0000, c"widen" => widen(Bytes, ContextMut); }
        test run MutRun<MutCtx>;
    }
}

/// A hook context that begins with the program's.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Wrapped {
    seen: MutCtx,
    extra: u64,
}
no_padding!(Wrapped {
    seen: MutCtx,
    extra: u64
});

fn widen_wrapped(bytes: Input<'_>, context: &mut Wrapped) -> u64 {
    context.extra += 1;
    widen_range(&mut context.seen) + bytes.len() as u64
}

program_type! {
    static WIDEN_WRAPPED_DATA = c"widen_wrapped", WIDEN_WRAPPED, 997;
    context MutCtx, data data_start..data_end;
    helpers<Wrapped, seen> { 0x1_0000, c"widen" => widen_wrapped(Bytes, ContextMut); }
    test run MutRun<Wrapped>;
}

type HelperFn = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;

/// Calls each named helper of `data` (as a program would) twice on a
/// test-run context whose `stash` holds a made-up address, and checks the data range is the
/// lent one after every call while the helpers' other changes stay.
fn helpers_keep_the_range<C>(data: &'static TypedProgramData<C>, helpers: &[&str]) {
    let kernel = Kernel::new();
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(data, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(data.program_type()).expect("attach");
    let info = client.info();
    let data_in = [1u8, 2, 3, 4];
    let mut ctx_in = [0u8; 40];
    ctx_in[16..24].copy_from_slice(&0x1000usize.to_ne_bytes());
    let created = client.create_context(&data_in, &ctx_in).expect("create");
    let context = created.as_ptr().cast::<MutCtx>();
    let range = created.data_in();
    let range = range.start.cast_const()..range.end.cast_const();
    let mut calls = 0;
    for name in helpers {
        let helper = info
            .helpers
            .iter()
            .chain(&info.global_helpers)
            .find(|h| h.name == *name)
            .expect("declared");
        // SAFETY: the helper address the provider published, in the eBPF helper convention.
        let f = unsafe { core::mem::transmute::<u64, HelperFn>(helper.address.expect("address")) };
        for _ in 0..2 {
            calls += 1;
            // The global override takes the context first; the others an empty buffer first.
            let registers = if helper.id < 0x1_0000 {
                [context as u64, 0, 0]
            } else {
                [0, 0, context as u64]
            };
            let [r1, r2, r3] = registers;
            // SAFETY: the arguments the prototype declares, the context where it says.
            assert_eq!(unsafe { f(r1, r2, r3, 0, 0) }, calls, "{name}");
            // SAFETY: the context `context_create` made, alive until destroyed; no reference
            // to it is live.
            let seen = unsafe { context.read() };
            assert_eq!(
                (seen.data_start.as_ptr(), seen.data_end.as_ptr()),
                (range.start, range.end),
                "{name}: the helper's changes to the data pointers are undone"
            );
            assert_eq!(seen.calls, calls, "{name}: its other changes stay");
        }
    }
    drop(created);
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}

#[test]
fn a_helper_with_the_context_mutably_cannot_move_the_data_pointers() {
    helpers_keep_the_range(&WIDEN_DATA, &["widen", "bpf_get_socket_cookie"]);
}

#[test]
fn a_drop_of_the_callers_own_does_not_stop_the_data_pointers_coming_back() {
    helpers_keep_the_range(&shadowed::WIDEN_SHADOWED_DATA, &["widen"]);
}

#[test]
fn a_larger_helper_context_keeps_the_programs_data_pointers_too() {
    helpers_keep_the_range(&WIDEN_WRAPPED_DATA, &["widen"]);
}

/// A test run without a `data` clause: its context's pointers are its own business.
struct Plain;
impl TestRun for Plain {
    type Context = [u64; 2];
    const TAG: PoolTag = TAG;
    fn create(_: &TestRunInput<'_>) -> Result<(TestRunContext<[u64; 2]>, Self), ebpf_result_t> {
        Ok((TestRunContext::new([5, 6]), Plain))
    }
    fn destroy(self, context: &mut TestRunContext<[u64; 2]>, output: &mut TestRunOutput) {
        output.write_context(&context.context);
    }
}

fn first(context: &[u64; 2]) -> u64 {
    context[0]
}

const PLAIN: GUID = GUID::from_u128(0xda7a_0105_0000_4000_8000_0000_0000_0001);

program_type! {
    static PLAIN_DATA = c"plain", PLAIN, 997;
    context [u64; 2];
    helpers { 0x1_0000, c"first" => first(Context); }
    test run Plain;
}

#[test]
fn a_test_run_without_data_pointers_is_left_alone() {
    let kernel = Kernel::new();
    assert_eq!(PLAIN_DATA.data_fields(), None);
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&PLAIN_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(PLAIN).expect("attach");
    let created = client.create_context(&[1], &[0; 16]).expect("create");
    let out = created.destroy(0, 16).expect("destroy");
    assert_eq!(
        out.context,
        [5u64.to_ne_bytes(), 6u64.to_ne_bytes()].concat()
    );
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}
