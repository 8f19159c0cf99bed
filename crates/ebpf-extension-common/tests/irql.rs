//! The scoped IRQL raise and `repeat`'s stretches at DISPATCH_LEVEL.

use ebpf_ext_usersim::Kernel;
use ebpf_extension_common::irql::{at_dispatch, at_level, repeat};
use ebpf_extension_common::sys::intrin::{KeGetCurrentIrql, KeRaiseIrql};
use ebpf_extension_common::sys::wdm::{APC_LEVEL, DISPATCH_LEVEL, KeLowerIrql, PASSIVE_LEVEL};

#[test]
fn the_closure_runs_at_dispatch_and_the_irql_comes_back() {
    let kernel = Kernel::new();
    let seen = at_dispatch(KeGetCurrentIrql);
    assert_eq!(seen, Some(DISPATCH_LEVEL));
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    assert_eq!(at_level(APC_LEVEL, KeGetCurrentIrql), Some(APC_LEVEL));
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    assert_eq!(kernel.irql_raises(), 2);
    kernel.assert_no_leaks();
}

#[test]
fn scopes_nest_and_each_lowers_to_where_it_began() {
    let _kernel = Kernel::new();
    let levels = at_level(APC_LEVEL, || {
        let inner = at_dispatch(KeGetCurrentIrql);
        (inner, KeGetCurrentIrql())
    });
    assert_eq!(levels, Some((Some(DISPATCH_LEVEL), APC_LEVEL)));
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn above_the_level_the_closure_does_not_run() {
    let _kernel = Kernel::new();
    // SAFETY: raised from PASSIVE_LEVEL and lowered back below, on this thread.
    let old = unsafe { KeRaiseIrql(DISPATCH_LEVEL) };
    let mut ran = false;
    assert_eq!(at_level(APC_LEVEL, || ran = true), None);
    assert!(!ran, "raising to a lower level would be a bug check");
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: back to the level raised from.
    unsafe { KeLowerIrql(old) };
}

#[test]
fn a_level_above_dispatch_is_refused() {
    let kernel = Kernel::new();
    let mut ran = false;
    assert_eq!(at_level(DISPATCH_LEVEL + 1, || ran = true), None);
    assert_eq!(at_level(16, || ran = true), None, "not an IRQL");
    assert!(!ran);
    assert_eq!(kernel.irql_raises(), 0);
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn an_unwinding_closure_still_lowers_the_irql() {
    let _kernel = Kernel::new();
    let unwound = std::panic::catch_unwind(|| at_dispatch(|| panic!("a failing closure")));
    assert!(unwound.is_err());
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn repeat_runs_stretches_at_dispatch_and_lowers_between_them() {
    let kernel = Kernel::new();
    let mut levels = Vec::new();
    let done: Result<(), ()> = repeat(10, Some(4), || {
        levels.push(KeGetCurrentIrql());
        Ok(())
    });
    assert_eq!(done, Ok(()));
    assert_eq!(levels, vec![DISPATCH_LEVEL; 10]);
    assert_eq!(kernel.irql_raises(), 3, "stretches of 4, 4 and 2");
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    let mut calls = 0;
    let stopped = repeat(10, None, || {
        calls += 1;
        if calls == 3 { Err(calls) } else { Ok(()) }
    });
    assert_eq!((stopped, calls), (Err(3), 3), "the first error stops it");
    assert_eq!(kernel.irql_raises(), 3, "no stretch: no raise");
    // Called at DISPATCH_LEVEL, the IRQL has nowhere lower to go between stretches (the docs
    // say so: keep such runs short).
    let mut levels = Vec::new();
    let done: Result<(), ()> = at_dispatch(|| {
        repeat(10, Some(4), || {
            levels.push(KeGetCurrentIrql());
            Ok(())
        })
    })
    .expect("from PASSIVE_LEVEL");
    assert_eq!(done, Ok(()));
    assert_eq!(levels, vec![DISPATCH_LEVEL; 10]);
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}
