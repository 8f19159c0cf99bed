//! Per-event invocation cost of the hook provider, against baselines measured in the same run
//! on the same primitives (usersim's): the floor (N indirect calls plus one atomic
//! increment/decrement pair) and a replica of netebpfext's algorithm (shared spin lock held
//! while copying the client array and acquiring each client's rundown, then invoke, then
//! release each rundown). Also: 2 threads vs 1 on the same hook, and batched vs single
//! invocation over 64 events. Ratios are reported in docs/PERFORMANCE.md.

#![allow(
    missing_docs,
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    clippy::unnecessary_wraps,
    clippy::semicolon_if_nothing_returned,
    reason = "benchmark harness"
)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use core::ffi::c_void;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{BenchHook, Invoke, call, program};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ebpf_ext_hook::{HookProvider, ProgramContext};
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::{
    DEVICE_OBJECT, DISPATCH_LEVEL, EX_RUNDOWN_REF, EX_SPIN_LOCK, ExAcquireRundownProtection,
    ExAcquireSpinLockShared, ExReleaseRundownProtection, ExReleaseSpinLockShared,
};
use ebpf_ext_usersim::{DriverObject, Kernel, set_current_irql};
use support::{ClientSpec, Link};

const ATTACH_TYPE: GUID = GUID::from_u128(0xa82e37b1_aee7_11ec_9a30_18602489beee);
const COUNTS: [usize; 4] = [0, 1, 4, 16];

struct World {
    kernel: Kernel,
    _driver: DriverObject,
    device: *mut DEVICE_OBJECT,
}

fn world() -> World {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    World {
        kernel,
        _driver: driver,
        device,
    }
}

fn provider(world: &World, n: usize) -> (HookProvider<BenchHook>, Vec<Link>) {
    let config = common::config(ATTACH_TYPE);
    // SAFETY: the device outlives the provider (the world is dropped last).
    let provider =
        unsafe { HookProvider::register(config, BenchHook, world.device) }.expect("register");
    let spec = ClientSpec {
        quiet: true,
        ..ClientSpec::wildcard()
    };
    let links = (0..n)
        .map(|_| Link::attach(ATTACH_TYPE, spec.clone(), program))
        .collect();
    (provider, links)
}

/// The floor: N indirect calls (of the same core invoke function the SDK calls) plus one
/// atomic increment/decrement pair.
struct Floor {
    calls: Vec<(Invoke, *const c_void)>,
    count: AtomicU64,
}

impl Floor {
    #[inline(never)]
    fn invoke(&self, ctx: *mut c_void) -> u32 {
        self.count.fetch_add(1, Ordering::SeqCst);
        let mut last = 0;
        for (f, binding) in &self.calls {
            last = call(*f, *binding, ctx);
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        last
    }
}

/// netebpfext's algorithm on usersim's primitives.
struct Replica {
    lock: EX_SPIN_LOCK,
    clients: Vec<(Box<EX_RUNDOWN_REF>, (Invoke, *const c_void))>,
}

impl Replica {
    #[inline(never)]
    fn invoke(&mut self, ctx: *mut c_void) -> u32 {
        let mut copy: [Option<(*mut EX_RUNDOWN_REF, (Invoke, *const c_void))>; 16] = [None; 16];
        // SAFETY: the lock lives in `self`; shared acquire/release pair.
        let old = unsafe { ExAcquireSpinLockShared(&raw mut self.lock) };
        for (i, (rundown, f)) in self.clients.iter_mut().enumerate().take(16) {
            let r: *mut EX_RUNDOWN_REF = &raw mut **rundown;
            // SAFETY: an initialised (zeroed) rundown reference.
            if unsafe { ExAcquireRundownProtection(r) } != 0 {
                copy[i] = Some((r, *f));
            }
        }
        // SAFETY: held shared above.
        unsafe { ExReleaseSpinLockShared(&raw mut self.lock, old) };
        let mut last = 0;
        for (_, (f, binding)) in copy.iter().flatten() {
            last = call(*f, *binding, ctx);
        }
        for (r, _) in copy.iter().flatten() {
            // SAFETY: acquired above.
            unsafe { ExReleaseRundownProtection(*r) };
        }
        last
    }
}

fn configure(c: &mut Criterion) -> &mut Criterion {
    c
}

fn per_event(c: &mut Criterion) {
    let w = world();
    set_current_irql(DISPATCH_LEVEL);
    let mut group = configure(c).benchmark_group("per_event");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for n in COUNTS {
        set_current_irql(0);
        let (sdk, links) = provider(&w, n);
        set_current_irql(DISPATCH_LEVEL);
        let floor = Floor {
            calls: links.iter().map(Link::dispatch).collect(),
            count: AtomicU64::new(0),
        };
        let mut replica = Replica {
            lock: 0,
            clients: links
                .iter()
                .map(|l| (Box::new(EX_RUNDOWN_REF::default()), l.dispatch()))
                .collect(),
        };
        let mut ctx = ProgramContext::new(0u64);
        let raw = (&raw mut ctx.context).cast::<c_void>();
        group.bench_with_input(BenchmarkId::new("floor", n), &n, |b, _| {
            b.iter(|| floor.invoke(black_box(raw)))
        });
        group.bench_with_input(BenchmarkId::new("netebpfext_replica", n), &n, |b, _| {
            b.iter(|| replica.invoke(black_box(raw)))
        });
        group.bench_with_input(BenchmarkId::new("sdk", n), &n, |b, _| {
            b.iter(|| sdk.invoke(black_box(&0), &mut ctx))
        });
        set_current_irql(0);
        drop(links);
        drop(sdk);
        set_current_irql(DISPATCH_LEVEL);
    }
    group.finish();
    set_current_irql(0);
    w.kernel.wait_for_work_items();
}

fn threads(c: &mut Criterion) {
    let w = world();
    let (sdk, links) = provider(&w, 1);
    let mut group = configure(c).benchmark_group("threads");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for threads in [1usize, 2] {
        // Time for `threads` threads to perform `iters` invocations each: the throughput ratio
        // is 2 × t(1) / t(2).
        group.bench_with_input(
            BenchmarkId::new("sdk_invoke", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    thread::scope(|s| {
                        for _ in 0..threads {
                            w.kernel.scoped(s, || {
                                set_current_irql(DISPATCH_LEVEL);
                                let mut ctx = ProgramContext::new(0u64);
                                for _ in 0..iters {
                                    black_box(sdk.invoke(&0, &mut ctx)).ok();
                                }
                                set_current_irql(0);
                            });
                        }
                    });
                    start.elapsed()
                });
            },
        );
    }
    group.finish();
    drop(links);
    drop(sdk);
    w.kernel.wait_for_work_items();
}

fn batching(c: &mut Criterion) {
    let w = world();
    let (sdk, links) = provider(&w, 1);
    set_current_irql(DISPATCH_LEVEL);
    let mut group = configure(c).benchmark_group("batch_64_events");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let mut ctx = ProgramContext::new(0u64);
    group.bench_function("single", |b| {
        b.iter(|| {
            for _ in 0..64 {
                black_box(sdk.invoke(&0, &mut ctx)).ok();
            }
        });
    });
    group.bench_function("batched", |b| {
        b.iter(|| {
            sdk.with_batch(&0, |batch| {
                for _ in 0..64 {
                    black_box(batch.invoke(&mut ctx)).ok();
                }
            });
        });
    });
    group.finish();
    set_current_irql(0);
    drop(links);
    drop(sdk);
    w.kernel.wait_for_work_items();
}

criterion_group!(benches, per_event, threads, batching);
criterion_main!(benches);
