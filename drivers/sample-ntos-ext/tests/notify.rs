//! What the notify routine reads of a process and gives programs (creation and exit times,
//! exit status, the token's user SID, the process and creation-info pointers, the command
//! line as the kernel gave it), the account helpers' lazy, cached resolution with its pool
//! retry, and the chain going on past a failed invoke; with every allocation and
//! `SecLookupAccountSid` failure swept.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_sys::ntifs::LOCAL_SYSTEM_SID;
use ebpf_ext_sys::ntstatus::STATUS_INSUFFICIENT_RESOURCES;
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{Fault, Kernel, sweep_allocation_failures, sweep_call_failures};
use sample_harness::Target;
use sample_harness::bpf::in_both_modes;
use sample_harness::ntos::{
    LONG_USER_NAME, LONG_USER_SID, account_helpers_once, identity_scenario,
};
use sample_ntos_ext::driver_entry;

const ENOENT: i64 = -2;

#[test]
fn programs_see_the_process_identity_and_the_accounts_it_resolves_to() {
    let kernel = Kernel::new();
    let report = identity_scenario(&kernel, Target::Native(driver_entry), &mut |_| {})
        .expect("identity scenario");
    assert_eq!(report.len(), 14, "{report:#?}");
}

#[test]
fn the_signed_image_reads_the_process_identity_as_the_linked_crate() {
    let report = in_both_modes("sample_ntos_ext", driver_entry, |kernel, target| {
        identity_scenario(kernel, target, &mut |_| {})
    })
    .expect("both modes");
    assert_eq!(report.len(), 14, "{report:#?}");
}

#[test]
fn the_signed_image_sweeps_its_account_faults_cleanly() {
    let loader = Kernel::new();
    let image = sample_harness::binary::load_sample(&loader, "sample_ntos_ext").expect("image");
    let scenario = |kernel: &Kernel| {
        let _ = account_helpers_once(kernel, Target::Image(&image), &LONG_USER_SID);
    };
    assert_eq!(
        account_helpers_once(&Kernel::new(), Target::Image(&image), &LONG_USER_SID),
        Some((i64::try_from(LONG_USER_NAME.len() * 2).unwrap(), 14)),
        "ksecdd.sys's SecLookupAccountSid bound and the pool retry taken"
    );
    assert!(sweep_allocation_failures(scenario) > 5);
    assert!(sweep_call_failures(scenario) >= 1);
    drop(loader);
    image.unload();
}

#[test]
fn both_account_helpers_resolve_the_system_and_a_long_user_name() {
    let kernel = Kernel::new();
    assert_eq!(
        account_helpers_once(
            &kernel,
            Target::Native(driver_entry),
            LOCAL_SYSTEM_SID.as_bytes()
        ),
        Some((12, 24)),
        "SYSTEM / NT AUTHORITY"
    );
    kernel.assert_no_leaks();
    let kernel = Kernel::new();
    let name_bytes = i64::try_from(LONG_USER_NAME.len() * 2).unwrap();
    assert_eq!(
        account_helpers_once(&kernel, Target::Native(driver_entry), &LONG_USER_SID),
        Some((name_bytes, 14)),
        "a name longer than the inline buffer: the pool retry, freed at the end of the notification"
    );
    kernel.assert_no_leaks();
}

#[test]
fn a_failed_retry_allocation_fails_both_helpers_and_leaks_nothing() {
    // The allocations of one run: find the one the retry makes (the last during the
    // notification: SeQueryInformationToken's comes first).
    let count = |kernel: &Kernel| kernel.allocation_count();
    let clean = Kernel::new();
    account_helpers_once(
        &clean,
        Target::Native(driver_entry),
        LOCAL_SYSTEM_SID.as_bytes(),
    );
    let without_retry = count(&clean);
    let clean = Kernel::new();
    account_helpers_once(&clean, Target::Native(driver_entry), &LONG_USER_SID);
    let with_retry = count(&clean);
    assert_eq!(
        with_retry,
        without_retry + 1,
        "the long name takes exactly one pool buffer (the domain fits inline)"
    );
    let kernel = Kernel::new();
    // Allocations are counted in order; the retry's is the last before unload's frees, and
    // unload allocates nothing, so it is the last one.
    kernel.inject(Fault::Allocation(with_retry));
    assert_eq!(
        account_helpers_once(&kernel, Target::Native(driver_entry), &LONG_USER_SID),
        Some((ENOENT, ENOENT)),
        "the failed retry fails the lookup, and the domain helper's later call too"
    );
    assert_eq!(kernel.faults_triggered(), [Fault::Allocation(with_retry)]);
    let failures: Vec<_> = kernel
        .etw_events()
        .into_iter()
        .filter(|e| e.field("Message") == Some(&Value::Str("account lookup failed".into())))
        .map(|e| e.field("status").cloned())
        .collect();
    assert_eq!(
        failures,
        [Some(Value::U64(u64::from(
            STATUS_INSUFFICIENT_RESOURCES.cast_unsigned()
        )))],
        "one lookup, failed for want of the retry buffer (not for want of the SID: that would be STATUS_INVALID_SID)"
    );
    kernel.assert_no_leaks();
}

#[test]
fn every_allocation_and_lookup_failure_is_clean() {
    let scenario = |kernel: &Kernel| {
        let _ = account_helpers_once(kernel, Target::Native(driver_entry), &LONG_USER_SID);
    };
    assert!(sweep_allocation_failures(scenario) > 5);
    assert!(sweep_call_failures(scenario) >= 1);
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("SecLookupAccountSid", 1));
    assert_eq!(
        account_helpers_once(
            &kernel,
            Target::Native(driver_entry),
            LOCAL_SYSTEM_SID.as_bytes()
        ),
        Some((ENOENT, ENOENT)),
        "a failed lookup is -ENOENT for both helpers, and not retried"
    );
    assert_eq!(kernel.call_count("SecLookupAccountSid"), 1);
    kernel.assert_no_leaks();
}
