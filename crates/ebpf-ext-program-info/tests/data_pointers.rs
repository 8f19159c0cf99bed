//! A test run's data pointers are the SDK's to write: `context_create` sets them to what
//! `TestRun::data` chooses (the caller's `data_in` in place, bytes the run owns, or none),
//! whatever `TestRun::create` left there, for program types declared with `program_type!`'s
//! `data` clause; a helper that receives the context mutably cannot move them; and a test
//! run's `ctx_out` never carries them.

#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_pool::{PoolArray, PoolTag};
use ebpf_ext_program_info::{
    Context, ContextMut, DataPointer, ProgramInfoProvider, TestRun, TestRunContext, TestRunData,
    TestRunInput, TestRunOutput, TypedProgramData, no_padding, program_type,
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

/// The data range a created context holds, as addresses, and its bytes.
fn created_range(
    data: &'static TypedProgramData<Ctx>,
    data_in: &[u8],
) -> ((usize, usize), Vec<u8>) {
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(data, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(data.program_type()).expect("attach");
    let ctx_in = context_in();
    let created = client.create_context(data_in, &ctx_in).expect("create");
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
    ((start, end), bytes)
}

#[test]
fn the_default_points_programs_at_the_callers_data() {
    let kernel = Kernel::new();
    let data_in = [1u8, 2, 3];
    let range = data_in.as_ptr_range();
    let (seen, bytes) = created_range(&IN_PLACE_DATA, &data_in);
    assert_eq!(seen, (range.start as usize, range.end as usize));
    assert_eq!(bytes, data_in);
    assert_eq!(created_range(&IN_PLACE_DATA, &[]).0, (0, 0), "no data_in");
    kernel.assert_no_leaks();
}

#[test]
fn owned_bytes_are_what_programs_see() {
    let kernel = Kernel::new();
    let data_in = [1u8, 2, 3];
    let (seen, bytes) = created_range(&COPIED_DATA, &data_in);
    assert_ne!(seen.0, data_in.as_ptr() as usize, "the run's copy");
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
    /// A context whose helper may change it.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct MutCtx {
        data_start: DataPointer,
        data_end: DataPointer,
        /// A data pointer the helper keeps from an earlier call.
        stash: DataPointer,
        calls: u64,
    }
}

/// A `ContextMut` helper that tries to widen the range programs see: from NULL to a pointer
/// it kept.
fn widen(context: &mut MutCtx) -> u64 {
    context.calls += 1;
    context.stash = context.data_end;
    context.data_start = DataPointer::NULL;
    context.data_end = DataPointer::default();
    core::mem::swap(&mut context.data_end, &mut context.stash);
    context.calls
}

const WIDEN: GUID = GUID::from_u128(0xda7a_0104_0000_4000_8000_0000_0000_0001);

/// The default test run over `MutCtx`.
struct MutRun;
impl TestRun for MutRun {
    type Context = MutCtx;
    const TAG: PoolTag = TAG;
    fn create(input: &TestRunInput<'_>) -> Result<(TestRunContext<MutCtx>, Self), ebpf_result_t> {
        let context: MutCtx = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        Ok((TestRunContext::new(context), MutRun))
    }
    fn destroy(self, context: &mut TestRunContext<MutCtx>, output: &mut TestRunOutput) {
        output.write_context(&context.context);
    }
}

program_type! {
    static WIDEN_DATA = c"widen", WIDEN, 997;
    context MutCtx, data data_start..data_end;
    helpers { 0x1_0000, c"widen" => widen(ContextMut); }
    test run MutRun;
}

type HelperFn = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;

#[test]
fn a_helper_with_the_context_mutably_cannot_move_the_data_pointers() {
    let kernel = Kernel::new();
    // SAFETY: the test's one provider of the type; no hook invokes its programs.
    let provider = unsafe { ProgramInfoProvider::register(&WIDEN_DATA, TAG) }.expect("register");
    let client = ProgramInfoClient::attach(WIDEN).expect("attach");
    let address = client.info().helpers[0].address.expect("address");
    // SAFETY: the helper address the provider published, in the eBPF helper convention.
    let widen = unsafe { core::mem::transmute::<u64, HelperFn>(address) };
    let data_in = [1u8, 2, 3, 4];
    let ctx_in = [0u8; 32];
    let created = client.create_context(&data_in, &ctx_in).expect("create");
    let context = created.as_ptr().cast::<MutCtx>();
    let range = data_in.as_ptr_range();
    for call in 1..=2 {
        // SAFETY: the helper's one argument is the program's context, as a program passes it.
        assert_eq!(unsafe { widen(context as u64, 0, 0, 0, 0) }, call);
        // SAFETY: the context `context_create` made, alive until destroyed; no reference to
        // it is live.
        let seen = unsafe { context.read() };
        assert_eq!(
            (seen.data_start.as_ptr(), seen.data_end.as_ptr()),
            (range.start, range.end),
            "the helper's changes to the data pointers are undone"
        );
        assert_eq!(seen.calls, call, "its other changes stay");
    }
    let out = created.destroy(0, 32).expect("destroy");
    assert_eq!(out.context[24..], 2u64.to_ne_bytes());
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
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
