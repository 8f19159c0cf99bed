//! The three hot-path ratios of docs/PERFORMANCE.md, measured as paired, interleaved rounds in
//! one process: each round times every variant of a ratio back to back (A B A B …), so the
//! ratio of one round holds while the machine's speed drifts between rounds (other processes,
//! frequency changes); the reported ratio is the median of the per-round ratios.
//!
//! - `sdk / floor+primitive`, one program: the floor (the core's invoke function called
//!   directly, plus an atomic pair) plus one acquire/release of the same cache-aware rundown
//!   primitive the SDK holds per event, so what remains is the SDK's own overhead, not
//!   usersim's cost for that primitive. `sdk / floor` is printed too.
//! - `single / batched`, 64 events, one program: per-event cost of `invoke` against
//!   `with_batch`.
//! - `2 threads / 1 thread`: throughput of two threads invoking the same hook against one.
//! - The batching ratio again against core-sim's link, which stands for the real core: its
//!   invoke is begin, batch invoke and end on a state of its own (as the core's link), so a
//!   single event pays the epoch enter and exit a batch saves; printed with the core's own
//!   ratio (its invoke ×64 against begin, batch invoke ×64, end), the most any provider can
//!   save against that core.
//! - `with data pointers / without`, one program: the same invocation of a hook whose
//!   context has data pointers, which the provider writes before every invocation, against
//!   one whose context has none.
//!
//! Run: `cargo bench -p ebpf-ext-hook --bench paired` (about a minute).

#![allow(
    missing_docs,
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    clippy::cast_precision_loss,
    clippy::unnecessary_wraps,
    clippy::too_many_lines,
    reason = "benchmark harness"
)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use core::ffi::c_void;
use core::hint::black_box;
use core::mem::{MaybeUninit, size_of};
use core::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use common::{BenchHook, Invoke, call, program};
use ebpf_ext_hook::{
    AttachRequest, Attached, DataFields, HookExtension, HookProvider, ProgramContext,
};
use ebpf_ext_rundown::CacheAwareRundown;
use ebpf_ext_sys::ebpf_extension::{
    ebpf_execution_context_state_t, ebpf_extension_program_dispatch_table_t,
};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;
use ebpf_ext_usersim::{DriverObject, Kernel, set_current_irql};
use support::{ClientSpec, Link};

const ATTACH_TYPE: GUID = GUID::from_u128(0xa82e37b2_aee7_11ec_9a30_18602489beee);
const CORE_SIM_ATTACH_TYPE: GUID = GUID::from_u128(0xa82e37b3_aee7_11ec_9a30_18602489beee);
const ROUNDS: usize = 201;
const DATA_ATTACH_TYPE: GUID = GUID::from_u128(0xa82e37b4_aee7_11ec_9a30_18602489beee);

/// A context with data pointers first, as most program types lay them out.
#[repr(C)]
struct Packet {
    start: *mut u8,
    end: *mut u8,
    id: u64,
}

/// [`BenchHook`] over a context with data pointers.
struct DataHook;

impl HookExtension for DataHook {
    type Parameter = u32;
    type ClientData = ();
    type Context = Packet;
    fn on_attach(
        &self,
        _: &AttachRequest<u32>,
        _: &Attached<'_, Self>,
    ) -> ebpf_ext_sys::Result<()> {
        Ok(())
    }
}

/// The floor, optionally plus the SDK's per-event primitive (a cache-aware rundown
/// acquire/release pair on usersim).
struct Floor {
    call: (Invoke, *const c_void),
    count: AtomicU64,
    primitive: Option<CacheAwareRundown>,
}

impl Floor {
    #[inline(never)]
    fn invoke(&self, ctx: *mut c_void) -> u32 {
        let _guard = self
            .primitive
            .as_ref()
            .and_then(CacheAwareRundown::try_acquire);
        self.count.fetch_add(1, Ordering::SeqCst);
        let last = call(self.call.0, self.call.1, ctx);
        self.count.fetch_sub(1, Ordering::SeqCst);
        last
    }
}

/// Nanoseconds per call of `f` over `iters` calls.
fn time(iters: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Nanoseconds per 64 events through `provider`: invoked one by one, then in one batch.
fn single_and_batched(
    provider: &HookProvider<BenchHook>,
    ctx: &mut ProgramContext<u64>,
) -> (f64, f64) {
    let iters = 400;
    let single = time(iters, || {
        for _ in 0..64 {
            black_box(provider.invoke(&0, ctx)).ok();
        }
    });
    let batched = time(iters, || {
        provider.with_batch(&0, |batch| {
            for _ in 0..64 {
                black_box(batch.invoke(ctx)).ok();
            }
        });
    });
    (single, batched)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    let config = common::config(ATTACH_TYPE);
    // SAFETY: the device outlives the provider (dropped below, before the driver object).
    let sdk = unsafe { HookProvider::register(config, BenchHook, device) }.expect("register");
    let spec = ClientSpec {
        quiet: true,
        ..ClientSpec::wildcard()
    };
    let link = Link::attach(ATTACH_TYPE, spec, program);
    let floor = Floor {
        call: link.dispatch(),
        count: AtomicU64::new(0),
        primitive: None,
    };
    let floor_primitive = Floor {
        call: link.dispatch(),
        count: AtomicU64::new(0),
        primitive: Some(CacheAwareRundown::new(0x6863_6e42).expect("rundown")),
    };
    set_current_irql(DISPATCH_LEVEL);
    let mut ctx = ProgramContext::new(0u64);
    let raw = (&raw mut ctx.context).cast::<c_void>();

    // 1. SDK vs floor and floor + primitive, one program, interleaved.
    let (mut sdk_floor, mut sdk_primitive, mut ns) = (Vec::new(), Vec::new(), [0.0; 3]);
    for round in 0..ROUNDS {
        let iters = 20_000;
        let f = time(iters, || {
            black_box(floor.invoke(black_box(raw)));
        });
        let p = time(iters, || {
            black_box(floor_primitive.invoke(black_box(raw)));
        });
        let s = time(iters, || {
            black_box(sdk.invoke(black_box(&0), &mut ctx)).ok();
        });
        if round > 0 {
            sdk_floor.push(s / f);
            sdk_primitive.push(s / p);
            ns = [ns[0] + f, ns[1] + p, ns[2] + s];
        }
    }
    let n = (ROUNDS - 1) as f64;
    println!(
        "per event, 1 program: floor {:.1} ns, floor+primitive {:.1} ns, sdk {:.1} ns (means)",
        ns[0] / n,
        ns[1] / n,
        ns[2] / n
    );
    println!(
        "  sdk / floor+primitive = {:.3} (median of {} paired rounds); sdk / floor = {:.3}",
        median(sdk_primitive),
        ROUNDS - 1,
        median(sdk_floor)
    );

    // 2. Single vs batched, 64 events, interleaved.
    let mut batch_ratio = Vec::new();
    for round in 0..ROUNDS {
        let (single, batched) = single_and_batched(&sdk, &mut ctx);
        if round > 0 {
            batch_ratio.push(single / batched);
        }
    }
    println!(
        "batch of 64: single / batched per event = {:.3} (median)",
        median(batch_ratio)
    );
    set_current_irql(0);

    // 3. Two threads vs one, interleaved: each thread does `iters` invocations.
    let run = |threads: usize, iters: u64| {
        let start = Instant::now();
        thread::scope(|s| {
            for _ in 0..threads {
                kernel.scoped(s, || {
                    set_current_irql(DISPATCH_LEVEL);
                    let mut ctx = ProgramContext::new(0u64);
                    for _ in 0..iters {
                        black_box(sdk.invoke(&0, &mut ctx)).ok();
                    }
                    set_current_irql(0);
                });
            }
        });
        start.elapsed().as_nanos() as f64
    };
    let mut scaling = Vec::new();
    for round in 0..41 {
        let iters = 200_000;
        let one = run(1, iters);
        let two = run(2, iters);
        if round > 0 {
            scaling.push(2.0 * one / two);
        }
    }
    println!(
        "2 threads / 1 thread throughput = {:.3} (median of 40 paired rounds)",
        median(scaling)
    );

    // 4. Single vs batched against core-sim's link, and the core's own ratio, interleaved.
    let core_device = driver.create_device().expect("IoCreateDevice");
    // SAFETY: the device outlives the provider (dropped below, before the driver object).
    let on_core = unsafe {
        HookProvider::register(common::config(CORE_SIM_ATTACH_TYPE), BenchHook, core_device)
    }
    .expect("register");
    let core_link = ebpf_ext_core_sim::Link::attach(
        ebpf_ext_core_sim::LinkSpec::new(
            common::config(ATTACH_TYPE).program_type,
            CORE_SIM_ATTACH_TYPE,
        ),
        program,
    )
    .expect("core-sim link");
    // SAFETY: the link's dispatch table, alive while the link is.
    let table = unsafe {
        &*core_link
            .client_dispatch()
            .cast::<ebpf_extension_program_dispatch_table_t>()
    };
    let (invoke, begin, batch_invoke, end) = (
        table.ebpf_program_invoke_function.expect("invoke"),
        table
            .ebpf_program_batch_begin_invoke_function
            .expect("begin"),
        table
            .ebpf_program_batch_invoke_function
            .expect("batch invoke"),
        table.ebpf_program_batch_end_invoke_function.expect("end"),
    );
    let binding = core_link.client_binding_context();
    set_current_irql(DISPATCH_LEVEL);
    let (mut sdk_ratio, mut core_ratio) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let iters = 400;
        let (single, batched) = single_and_batched(&on_core, &mut ctx);
        let core_single = time(iters, || {
            for _ in 0..64 {
                black_box(call(invoke, binding, raw));
            }
        });
        let core_batched = time(iters, || {
            let mut state = MaybeUninit::<ebpf_execution_context_state_t>::zeroed();
            let state = state.as_mut_ptr().cast::<c_void>();
            let mut result = 0;
            // SAFETY: the link's batch functions and binding context, alive
            // while the link is, and a state of the state's size that stays in this frame
            // from begin to end.
            unsafe { begin(size_of::<ebpf_execution_context_state_t>(), state) };
            for _ in 0..64 {
                // SAFETY: as above.
                black_box(unsafe { batch_invoke(binding, raw, &raw mut result, state) });
            }
            // SAFETY: as above.
            unsafe { end(state) };
        });
        if round > 0 {
            sdk_ratio.push(single / batched);
            core_ratio.push(core_single / core_batched);
        }
    }
    set_current_irql(0);
    println!(
        "core-sim, batch of 64: single / batched per event = {:.3} (median); the core's own = {:.3}",
        median(sdk_ratio),
        median(core_ratio)
    );

    // 5. The same invocation with and without data pointers to write, interleaved.
    let data_device = driver.create_device().expect("IoCreateDevice");
    let fields = DataFields { start: 0, end: 8 };
    // SAFETY: the device outlives the provider (dropped below, before the driver object);
    // `fields` are `Packet`'s two pointer fields.
    let with_data = unsafe {
        HookProvider::register_with_data(
            common::config(DATA_ATTACH_TYPE),
            DataHook,
            data_device,
            Some(fields),
        )
    }
    .expect("register");
    let data_spec = ClientSpec {
        quiet: true,
        ..ClientSpec::wildcard()
    };
    let data_link = Link::attach(DATA_ATTACH_TYPE, data_spec, program);
    let mut packet = [0u8; 64];
    let mut packet_ctx = ProgramContext::with_data(
        Packet {
            start: core::ptr::null_mut(),
            end: core::ptr::null_mut(),
            id: 0,
        },
        &mut packet[..],
    );
    set_current_irql(DISPATCH_LEVEL);
    let mut data_ratio = Vec::new();
    for round in 0..ROUNDS {
        let iters = 20_000;
        let without = time(iters, || {
            black_box(sdk.invoke(black_box(&0), &mut ctx)).ok();
        });
        let with = time(iters, || {
            black_box(with_data.invoke(black_box(&0), &mut packet_ctx)).ok();
        });
        if round > 0 {
            data_ratio.push(with / without);
        }
    }
    set_current_irql(0);
    println!(
        "data pointers written / none, 1 program = {:.3} (median)",
        median(data_ratio)
    );

    drop(data_link);
    drop(with_data);
    drop(core_link);
    drop(on_core);
    drop(link);
    drop(sdk);
    drop(floor_primitive);
    kernel.wait_for_work_items();
}
