//! Test runs through [`TestRun`] and the SDK's `context_create` / `context_destroy`, as the
//! eBPF core (core-sim) calls them, and called directly with the malformed arguments the core
//! never passes.

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr;

use ebpf_ext_core_sim::{Input, ProgramInfoClient};
use ebpf_ext_pool::{PoolArray, PoolTag};
use ebpf_ext_program_info::{
    ContextDescriptor, CopyTestRun, CountedString, PackedStrings, ProgramData, ProgramInfo,
    ProgramInfoProvider, ProgramTypeDescriptor, TestRun, TestRunContext, TestRunInput,
    TestRunOutput, no_padding,
};
use ebpf_ext_sys::ebpf_result::{
    EBPF_FAILED, EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ntdef::{GUID, UNICODE_STRING};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, KeGetCurrentIrql};
use ebpf_ext_usersim::{Fault, Kernel, sweep_allocation_failures};

fn irql() -> u8 {
    // SAFETY: reads the current thread's IRQL; callable at any level.
    unsafe { KeGetCurrentIrql() }
}

const PROGRAM_TYPE: GUID = GUID::from_u128(0x5e5e_0001_0000_4000_8000_0000_0000_0001);
const TAG: PoolTag = PoolTag::new(*b"TrTs");

/// Registers `data`'s provider: the test's only provider of the type, and no hook invokes its
/// programs.
fn register(data: &'static ProgramData) -> ebpf_ext_sys::Result<ProgramInfoProvider> {
    // SAFETY: as above.
    unsafe { ProgramInfoProvider::register(data, TAG) }
}
/// What `Echo::create` puts in header slot 7: must come back in `ctx_out`.
const MARKER: u64 = 0x5EED_5EED;
/// A `value` that makes `Echo::create` fail with `EBPF_SUCCESS` (which the SDK must not pass
/// on as success).
const FAIL_WITH_SUCCESS: u64 = u64::MAX;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct EchoContext {
    data_start: *mut u8,
    data_end: *mut u8,
    value: u64,
}
no_padding!(EchoContext {
    data_start: *mut u8,
    data_end: *mut u8,
    value: u64
});

/// A test run that copies the data (so a run owns an allocation of its own) and points the
/// context at the copy.
struct Echo {
    copy: Option<PoolArray<u8>>,
}

impl TestRun for Echo {
    type Context = EchoContext;
    const TAG: PoolTag = TAG;

    fn create(
        input: &TestRunInput<'_>,
    ) -> Result<(TestRunContext<EchoContext>, Self), ebpf_result_t> {
        assert_eq!(irql(), DISPATCH_LEVEL, "create runs at required_irql");
        let mut context: EchoContext = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        if context.value == FAIL_WITH_SUCCESS {
            return Err(EBPF_SUCCESS);
        }
        let mut copy = match input.data() {
            None => None,
            Some(data) => {
                let mut copy = PoolArray::try_new(data.len(), TAG).map_err(|_| EBPF_NO_MEMORY)?;
                copy.copy_from_slice(data);
                Some(copy)
            }
        };
        let range = copy
            .as_mut()
            .map_or(ptr::null_mut()..ptr::null_mut(), |c| c.as_mut_ptr_range());
        (context.data_start, context.data_end) = (range.start, range.end);
        let mut context = TestRunContext::new(context);
        context.header[7] = MARKER;
        Ok((context, Echo { copy }))
    }

    fn destroy(self, context: &mut TestRunContext<EchoContext>, output: &mut TestRunOutput) {
        assert_eq!(irql(), DISPATCH_LEVEL, "destroy runs at required_irql");
        context.context.value += 1;
        output.write_header_and_context(context);
        if let Some(copy) = &self.copy {
            output.write_data(copy);
        }
    }
}

static CONTEXT: ContextDescriptor = ContextDescriptor::of::<EchoContext>(
    Some(offset_of!(EchoContext, data_start)),
    Some(offset_of!(EchoContext, data_end)),
    None,
);
static DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"echo", &CONTEXT, PROGRAM_TYPE, 998, false);
static INFO: ProgramInfo = ProgramInfo::new(&DESCRIPTOR, &[], &[]);
static DATA: ProgramData =
    // SAFETY: `Echo::create` points the data pointers at its own copy of the data, every run.
    unsafe { ProgramData::new(&INFO).with_test_run_data::<Echo, NONE, NONE>() }
            .with_required_irql(DISPATCH_LEVEL)
            .checked();
/// The offset `with_test_run_data` takes for "no field": the run sets its pointers itself.
const NONE: usize = usize::MAX;

/// `ctx_in` for an [`EchoContext`] with `value` (the pointers are the caller's garbage).
fn context_in(value: u64) -> Vec<u8> {
    let mut bytes = vec![0xAA; 24];
    bytes[16..].copy_from_slice(&value.to_ne_bytes());
    bytes
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_ne_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

struct Setup {
    kernel: Kernel,
    provider: ProgramInfoProvider,
    client: ProgramInfoClient,
}

impl Setup {
    fn new() -> Self {
        let kernel = Kernel::new();
        let provider = register(&DATA).expect("register");
        let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
        Setup {
            kernel,
            provider,
            client,
        }
    }

    fn end(self) {
        drop(self.client);
        drop(self.provider);
        self.kernel.assert_no_leaks();
    }
}

#[test]
fn a_run_builds_the_context_with_its_header_and_writes_it_back() {
    let setup = Setup::new();
    let client = &setup.client;
    let data = b"Seattle".to_vec();
    let ctx = context_in(41);
    let out = client.at_required_irql(|| {
        let created = client.create_context(&data, &ctx).expect("create");
        let pointer = created.as_ptr();
        // SAFETY: the context the provider made: an EchoContext...
        let context = unsafe { pointer.cast::<EchoContext>().read() };
        // SAFETY: ...with 64 header bytes in front.
        let header_7 = unsafe { pointer.wrapping_byte_sub(8).cast::<u64>().read() };
        assert_eq!(context.value, 41);
        assert_eq!(
            header_7, MARKER,
            "the header the extension set is in front of the context"
        );
        assert_ne!(
            context.data_start.cast_const(),
            data.as_ptr(),
            "a copy of the data"
        );
        assert_eq!(context.data_end as usize - context.data_start as usize, 7);
        created.destroy(100, 200).expect("destroy")
    });
    assert_eq!(
        (out.data_size_out, out.data.as_slice()),
        (7, &b"Seattle"[..])
    );
    assert_eq!(out.context_size_out, 64 + 24, "header and context");
    assert_eq!(
        (u64_at(&out.context, 0), u64_at(&out.context, 8)),
        (0, 0),
        "slots 0 and 1, the core's (kernel addresses): zero"
    );
    assert_eq!(u64_at(&out.context, 56), MARKER);
    assert_eq!(
        u64_at(&out.context, 64 + 16),
        42,
        "the context as destroy left it"
    );
    setup.end();
}

#[test]
fn outputs_that_do_not_fit_are_reported_with_size_zero() {
    let setup = Setup::new();
    let client = &setup.client;
    let ctx = context_in(1);
    client.at_required_irql(|| {
        let created = client.create_context(b"Seattle", &ctx).expect("create");
        let out = created.destroy(6, 64 + 23).expect("destroy");
        assert_eq!((out.data_size_out, out.context_size_out), (0, 0));
        // No data in: nothing out, whatever the room.
        let created = client.create_context(&[], &ctx).expect("create");
        let out = created.destroy(100, 0).expect("destroy");
        assert_eq!((out.data_size_out, out.context_size_out), (0, 0));
    });
    setup.end();
}

#[test]
fn refusals_and_allocation_failures_leak_nothing() {
    let setup = Setup::new();
    let client = &setup.client;
    client.at_required_irql(|| {
        for bad in [
            Input::Null { size: 24 },
            Input::Bytes(&[0; 23]),
            Input::Bytes(&[]),
        ] {
            assert_eq!(
                client.create_context_with(Input::Bytes(b"x"), bad).err(),
                Some(EBPF_INVALID_ARGUMENT),
                "{bad:?}"
            );
        }
        // Allocation 1 is the extension's copy, allocation 2 the SDK's run (which drops the
        // copy when it fails).
        let before = setup.kernel.pool_outstanding();
        for n in [1, 2] {
            setup.kernel.inject(Fault::Allocation(n));
            assert_eq!(
                client.create_context(b"data", &context_in(1)).err(),
                Some(EBPF_NO_MEMORY),
                "allocation {n}"
            );
            assert_eq!(
                setup.kernel.pool_outstanding(),
                before,
                "allocation {n}: nothing left"
            );
        }
    });
    setup.end();
}

#[test]
fn every_allocation_failure_is_clean() {
    let points = sweep_allocation_failures(|_| {
        let Ok(provider) = register(&DATA) else {
            return;
        };
        if let Ok(client) = ProgramInfoClient::attach(PROGRAM_TYPE) {
            client.at_required_irql(|| {
                if let Ok(created) = client.create_context(b"data", &context_in(1)) {
                    let _ = created.destroy(8, 88);
                }
            });
        }
        drop(provider);
    });
    assert!(points >= 4, "swept {points}");
}

tracelogging::define_provider!(
    TRACE,
    "ProgramInfoTestRunTestProvider",
    id("2c8e7a41-5d3b-4f96-a1e0-7b9c4d2f6e15")
);

#[test]
fn the_trampolines_refuse_what_the_core_never_passes() {
    let setup = Setup::new();
    ebpf_ext_trace::initiate(&TRACE).expect("tracing");
    let raw = DATA.raw();
    let (create, destroy) = (
        raw.context_create.expect("create"),
        raw.context_destroy.expect("destroy"),
    );
    let ctx = context_in(5);
    setup.client.at_required_irql(|| {
        // SAFETY: valid inputs; a NULL out slot, which the trampoline refuses.
        let result = unsafe { create(ptr::null(), 0, ctx.as_ptr(), ctx.len(), ptr::null_mut()) };
        assert_eq!(result, EBPF_INVALID_ARGUMENT);
        let (mut data_size, mut context_size) = (16usize, 16usize);
        // SAFETY: a NULL context; writable size slots and no buffers.
        unsafe {
            destroy(
                ptr::null_mut(),
                ptr::null_mut(),
                &raw mut data_size,
                ptr::null_mut(),
                &raw mut context_size,
            );
        }
        assert_eq!(
            (data_size, context_size),
            (0, 0),
            "nothing written, sizes 0"
        );
        let mut context: *mut c_void = ptr::null_mut();
        let fails = context_in(FAIL_WITH_SUCCESS);
        // SAFETY: valid inputs and out slot.
        let result = unsafe {
            create(
                ptr::null(),
                0,
                fails.as_ptr(),
                fails.len(),
                &raw mut context,
            )
        };
        assert_eq!(
            (result, context),
            (EBPF_FAILED, ptr::null_mut()),
            "an error that claims success is not passed on as one"
        );
        assert_eq!(
            setup.kernel.etw_message_count(
                "test run context_create failed with EBPF_SUCCESS: reported as EBPF_FAILED"
            ),
            1,
            "and is traced"
        );
        // SAFETY: valid inputs and out slot.
        let result = unsafe { create(ptr::null(), 0, ctx.as_ptr(), ctx.len(), &raw mut context) };
        assert_eq!(result, EBPF_SUCCESS);
        // SAFETY: the context just created, destroyed once; NULL size slots and buffers.
        unsafe {
            destroy(
                context,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            );
        }
    });
    setup.kernel.wait_for_work_items();
    ebpf_ext_trace::terminate();
    setup.end();
}

const COPY_PROGRAM_TYPE: GUID = GUID::from_u128(0x5e5e_0002_0000_4000_8000_0000_0000_0001);
/// The same layout without data pointers, which a plain copy of `ctx_in` may have.
static COPY_CONTEXT: ContextDescriptor = ContextDescriptor::of::<EchoContext>(None, None, None);
static COPY_DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"copy", &COPY_CONTEXT, COPY_PROGRAM_TYPE, 997, false);
static COPY_INFO: ProgramInfo = ProgramInfo::new(&COPY_DESCRIPTOR, &[], &[]);
static COPY_DATA: ProgramData = ProgramData::new(&COPY_INFO)
    .with_test_run::<CopyTestRun<EchoContext>>()
    .checked();

/// The core passes `ctx_in` and `ctx_out` where they lie in its request and reply buffers,
/// right after the data: at any alignment. Both are read and written byte-wise (a debug
/// build checks the alignment of typed reads and writes, so a regression to one fails here).
#[test]
fn a_context_in_and_out_at_odd_addresses_are_copied_bytewise() {
    let kernel = Kernel::new();
    let provider = register(&COPY_DATA).expect("register");
    let raw = COPY_DATA.raw();
    let (create, destroy) = (
        raw.context_create.expect("create"),
        raw.context_destroy.expect("destroy"),
    );
    let ctx = context_in(5);
    // ctx_in at offset 1, ctx_out at offset 1 of a second buffer: neither 8-byte aligned.
    let mut input = vec![0u8; ctx.len() + 1];
    input[1..].copy_from_slice(&ctx);
    let mut output = vec![0u8; ctx.len() + 1];
    let mut context: *mut c_void = ptr::null_mut();
    // SAFETY: the caller's context (`ctx.len()` bytes at offset 1), an out slot; no data.
    let result = unsafe {
        create(
            ptr::null(),
            0,
            input.as_ptr().wrapping_add(1),
            ctx.len(),
            &raw mut context,
        )
    };
    assert_eq!(result, EBPF_SUCCESS);
    let mut context_size = ctx.len();
    // SAFETY: the context just created, destroyed once; `ctx.len()` writable bytes at offset 1.
    unsafe {
        destroy(
            context,
            ptr::null_mut(),
            ptr::null_mut(),
            output.as_mut_ptr().wrapping_add(1),
            &raw mut context_size,
        );
    }
    assert_eq!(context_size, ctx.len());
    assert_eq!(output[1..], ctx[..], "ctx_out: the context");
    assert_eq!(output[0], 0, "nothing written before ctx_out");
    drop(provider);
    kernel.assert_no_leaks();
}

/// A reply may share the request's buffer (`METHOD_BUFFERED`), so `ctx_out` can lie over the
/// tail of `data_in`: the copied run writes `data_out` before it writes the context.
#[test]
fn a_copied_run_writes_data_out_before_a_context_out_over_data_in() {
    let kernel = Kernel::new();
    let provider = register(&COPY_DATA).expect("register");
    let raw = COPY_DATA.raw();
    let (create, destroy) = (
        raw.context_create.expect("create"),
        raw.context_destroy.expect("destroy"),
    );
    // data_in at 64..96; data_out at 0..32; ctx_out at 80..104, over data_in's second half.
    let mut buffer = vec![0u8; 128];
    let pattern: Vec<u8> = (1..=32).collect();
    buffer[64..96].copy_from_slice(&pattern);
    let base = buffer.as_mut_ptr();
    let ctx = context_in(3);
    let mut context: *mut c_void = ptr::null_mut();
    // SAFETY: 32 readable and writable bytes of `buffer`, the caller's context, an out slot.
    let result = unsafe {
        create(
            base.wrapping_add(64),
            32,
            ctx.as_ptr(),
            ctx.len(),
            &raw mut context,
        )
    };
    assert_eq!(result, EBPF_SUCCESS);
    let (mut data_size, mut context_size) = (32usize, ctx.len());
    // SAFETY: the context just created, destroyed once; both outputs inside `buffer`.
    unsafe {
        destroy(
            context,
            base,
            &raw mut data_size,
            base.wrapping_add(80),
            &raw mut context_size,
        );
    }
    assert_eq!((data_size, context_size), (32, ctx.len()));
    assert_eq!(buffer[..32], pattern[..], "data_out: data_in as it came in");
    assert_eq!(buffer[80..104], ctx[..], "ctx_out: the context");
    drop(provider);
    kernel.assert_no_leaks();
}

fn string(length: u16, maximum: u16) -> CountedString {
    CountedString {
        length,
        maximum_length: maximum,
        ..CountedString::EMPTY
    }
}

#[test]
fn packed_strings_are_copied_into_buffers_of_their_maximum_length() {
    let kernel = Kernel::new();
    let tag = PoolTag::new(*b"Pack");
    let data = b"abcdefXYZ!";
    let [mut a, mut empty, mut b] = [string(6, 8), string(0, 4), string(4, 4)];
    let mut copies =
        PackedStrings::copy_in(data, [&mut a, &mut empty, &mut b], tag).expect("copied");
    assert_eq!(
        (copies.get(0), copies.get(1), copies.get(2)),
        (&b"abcdef"[..], &b""[..], &b"XYZ!"[..])
    );
    assert_eq!(
        (a.maximum_length, empty.maximum_length, b.maximum_length),
        (8, 0, 4)
    );
    assert!(empty.buffer.is_null() && !a.buffer.is_null());
    assert_eq!(kernel.allocation_count(), 2, "none for the empty string");
    let (taken, length) = copies.take(0).expect("a's copy");
    assert_eq!(
        (
            taken.len(),
            length,
            taken.as_ptr().cast_mut().cast(),
            copies.get(0)
        ),
        (8, 6, a.buffer, &b""[..])
    );
    assert!(copies.take(0).is_none() && copies.take(1).is_none() && copies.take(9).is_none());
    drop((taken, copies));
    kernel.assert_no_leaks();
}

#[test]
fn packed_strings_refuse_short_data_and_lengths_above_their_maximum_untouched() {
    let kernel = Kernel::new();
    let tag = PoolTag::new(*b"Pack");
    let [mut a, mut b] = [string(6, 8), string(4, 4)];
    let refused = PackedStrings::copy_in(b"abcdefXYZ", [&mut a, &mut b], tag).err();
    assert_eq!(refused, Some(EBPF_INVALID_ARGUMENT), "data one byte short");
    let mut long = string(5, 4);
    let refused = PackedStrings::copy_in(b"abcde", [&mut long], tag).err();
    assert_eq!(
        refused,
        Some(EBPF_INVALID_ARGUMENT),
        "Length above MaximumLength"
    );
    assert_eq!(
        (a.maximum_length, b.maximum_length, long.maximum_length),
        (8, 4, 4)
    );
    assert_eq!(kernel.allocation_count(), 0);
    kernel.inject(Fault::Allocation(2));
    let failed = PackedStrings::copy_in(b"abcdefXYZ!", [&mut a, &mut b], tag).err();
    assert_eq!(failed, Some(EBPF_NO_MEMORY), "the second copy");
    kernel.assert_no_leaks();
}

#[test]
fn packed_strings_leave_no_buffer_behind_when_they_fail() {
    let kernel = Kernel::new();
    let tag = PoolTag::new(*b"Pack");
    // What a caller's ctx_in leaves in the buffers: garbage, never to be used.
    let garbage = ptr::dangling_mut::<u16>();
    let with_garbage = |length, maximum| CountedString {
        buffer: garbage,
        ..string(length, maximum)
    };
    for n in [1, 2, 3] {
        let [mut a, mut empty, mut b, mut c] = [
            with_garbage(6, 8),
            with_garbage(0, 4),
            with_garbage(3, 4),
            with_garbage(1, 1),
        ];
        kernel.inject(Fault::Allocation(n));
        let failed =
            PackedStrings::copy_in(b"abcdefXYZ!", [&mut a, &mut empty, &mut b, &mut c], tag).err();
        assert_eq!(failed, Some(EBPF_NO_MEMORY), "copy {n}");
        assert!(
            [&a, &empty, &b, &c].iter().all(|s| s.buffer.is_null()),
            "copy {n}: no string points at a freed copy or at the caller's garbage"
        );
        assert!(
            kernel.pool_outstanding().is_empty(),
            "copy {n}: the others freed"
        );
    }
    let [mut a, mut long] = [with_garbage(6, 8), with_garbage(5, 4)];
    let refused = PackedStrings::copy_in(b"abcdefXYZ!", [&mut a, &mut long], tag).err();
    assert_eq!(refused, Some(EBPF_INVALID_ARGUMENT));
    assert!(a.buffer.is_null() && long.buffer.is_null());
    kernel.assert_no_leaks();
}

#[test]
fn a_counted_string_is_a_unicode_string_whose_padding_bytes_are_kept() {
    assert_eq!(
        (
            size_of::<CountedString>(),
            offset_of!(CountedString, buffer)
        ),
        (
            size_of::<UNICODE_STRING>(),
            offset_of!(UNICODE_STRING, Buffer)
        )
    );
    let mut units = [0u16; 4];
    let kernel_string = UNICODE_STRING {
        Length: 6,
        MaximumLength: 8,
        Buffer: units.as_mut_ptr(),
    };
    let mut counted = CountedString {
        reserved: 0x2164_6170,
        ..CountedString::EMPTY
    };
    counted.set(&kernel_string);
    assert_eq!(
        (counted.length, counted.maximum_length, counted.buffer),
        (6, 8, units.as_mut_ptr())
    );
    assert_eq!(counted.reserved, 0x2164_6170, "set keeps the padding bytes");
    let handed_back = counted.without_buffer();
    assert!(handed_back.buffer.is_null());
    assert_eq!(
        (
            handed_back.length,
            handed_back.maximum_length,
            handed_back.reserved
        ),
        (6, 8, 0x2164_6170)
    );
    assert_eq!(
        CountedString::from(kernel_string),
        CountedString {
            reserved: 0,
            ..counted
        }
    );
}

/// Without context functions any `required_irql` up to HIGH_LEVEL is accepted, and with
/// them DISPATCH_LEVEL is (see the next test for the refusal).
#[test]
fn context_functions_at_dispatch_level_and_none_above_it_are_accepted() {
    let without = ProgramData::new(&INFO)
        .with_required_irql(DISPATCH_LEVEL + 1)
        .checked();
    assert_eq!(without.raw().required_irql, DISPATCH_LEVEL + 1);
    // SAFETY: as for `DATA`.
    let at_dispatch = unsafe { ProgramData::new(&INFO).with_test_run_data::<Echo, NONE, NONE>() }
        .with_required_irql(DISPATCH_LEVEL)
        .checked();
    assert_eq!(at_dispatch.raw().required_irql, DISPATCH_LEVEL);
}

/// Context functions run at `required_irql` and allocate pool: above DISPATCH_LEVEL the
/// program data is refused (at compile time in a `static`; here, evaluated at run time, as a
/// panic with the same message).
#[test]
#[should_panic(expected = "context functions with required_irql above DISPATCH_LEVEL")]
fn context_functions_above_dispatch_level_are_refused() {
    // SAFETY: as for `DATA`.
    let _ = unsafe { ProgramData::new(&INFO).with_test_run_data::<Echo, NONE, NONE>() }
        .with_required_irql(DISPATCH_LEVEL + 1)
        .checked();
}

/// A test run whose `destroy` writes the whole header to `ctx_out` as it finds it.
struct RawHeader;

impl TestRun for RawHeader {
    type Context = EchoContext;
    const TAG: PoolTag = TAG;

    fn create(
        input: &TestRunInput<'_>,
    ) -> Result<(TestRunContext<EchoContext>, Self), ebpf_result_t> {
        let mut context: EchoContext = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        (context.data_start, context.data_end) = (ptr::null_mut(), ptr::null_mut());
        Ok((TestRunContext::new(context), RawHeader))
    }

    fn destroy(self, context: &mut TestRunContext<EchoContext>, output: &mut TestRunOutput) {
        output.write_context(&context.header);
    }
}

static RAW_HEADER_DESCRIPTOR: ProgramTypeDescriptor =
    ProgramTypeDescriptor::new(c"raw_header", &COPY_CONTEXT, PROGRAM_TYPE, 996, false);
static RAW_HEADER_INFO: ProgramInfo = ProgramInfo::new(&RAW_HEADER_DESCRIPTOR, &[], &[]);
static RAW_HEADER_DATA: ProgramData = ProgramData::new(&RAW_HEADER_INFO)
    .with_test_run::<RawHeader>()
    .checked();

/// The core writes kernel addresses into header slots 0 and 1 (core-sim writes its copy of
/// the context descriptor's address into slot 1); however `destroy` writes the header, they
/// reach `ctx_out` as zero.
#[test]
fn the_cores_header_slots_never_reach_ctx_out() {
    let kernel = Kernel::new();
    let provider = register(&RAW_HEADER_DATA).expect("register");
    let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
    let ctx = context_in(5);
    let created = client.create_context(&[], &ctx).expect("created");
    let out = created.destroy(0, 64).expect("destroyed");
    assert_eq!(out.context_size_out, 64);
    assert_eq!(out.context[..16], [0; 16], "slots 0 and 1");
    drop(client);
    drop(provider);
    kernel.assert_no_leaks();
}
