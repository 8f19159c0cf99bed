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
use ebpf_ext_sys::ntstatus::{STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES};
use ebpf_ext_usersim::tracelogging::Value;
use ebpf_ext_usersim::{Fault, Kernel, sweep_allocation_failures, sweep_call_failures};
use sample_harness::Target;
use sample_harness::bpf::in_both_modes;
use sample_harness::ntos::{
    AccountTestRun, LONG_USER_NAME, LONG_USER_SID, account_helpers_once, account_test_run,
    account_test_run_sized, identity_scenario,
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
    if sample_harness::binary::native_only("account fault sweep of the image") {
        return;
    }
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

#[test]
fn any_lookup_failure_status_is_enoent_and_not_retried() {
    /// `SEC_E_INTERNAL_ERROR` (an SSPI status, `winerror.h`).
    const SEC_E_INTERNAL_ERROR: i32 = 0x8009_0304_u32.cast_signed();
    for status in [STATUS_ACCESS_DENIED, SEC_E_INTERNAL_ERROR] {
        let kernel = Kernel::new();
        kernel.inject(Fault::CallWithStatus("SecLookupAccountSid", 1, status));
        assert_eq!(
            account_helpers_once(
                &kernel,
                Target::Native(driver_entry),
                LOCAL_SYSTEM_SID.as_bytes()
            ),
            Some((ENOENT, ENOENT)),
            "a lookup failed with {status:#x} is -ENOENT for both helpers"
        );
        assert_eq!(
            kernel.faults_triggered(),
            [Fault::CallWithStatus("SecLookupAccountSid", 1, status)]
        );
        assert_eq!(
            kernel.call_count("SecLookupAccountSid"),
            1,
            "the failure ({status:#x}) is remembered, not retried"
        );
        kernel.assert_no_leaks();
    }
}

#[test]
fn a_test_run_without_supplied_strings_looks_the_account_up_and_frees_its_buffers() {
    let kernel = Kernel::new();
    let run = account_test_run(
        &kernel,
        Target::Native(driver_entry),
        LOCAL_SYSTEM_SID.as_bytes(),
    )
    .expect("test run");
    kernel.assert_no_leaks();
    let AccountTestRun {
        name,
        domain,
        data_out,
        context_out,
    } = run;
    assert_eq!(
        name,
        (12, "SYSTEM".to_owned()),
        "ntosebpfext looks it up too"
    );
    assert_eq!(domain, (24, "NT AUTHORITY".to_owned()));
    assert_eq!(
        data_out, "t.exe\\??\\C:\\t.exeSYSTEMNT AUTHORITY",
        "data_out: the strings as the run left them"
    );
    let [name_length, name_max, domain_length, domain_max, done] = context_out;
    assert_eq!(
        (name_length, domain_length, done),
        (12, 24, 1),
        "ctx_out: the looked-up strings (pointers cleared), the lookup done"
    );
    assert!(
        name_max >= 12 && domain_max >= 24,
        "the retry's pool buffers: {name_max}, {domain_max}"
    );
}

#[test]
fn test_runs_sweep_their_lookup_faults_cleanly_in_both_modes() {
    fn run(kernel: &Kernel, target: Target<'_>) -> Option<AccountTestRun> {
        account_test_run(kernel, target, &LONG_USER_SID)
    }
    let both = in_both_modes("sample_ntos_ext", driver_entry, |kernel, target| {
        Ok(run(kernel, target))
    })
    .expect("both modes")
    .expect("test run");
    assert_eq!(
        (both.name.1.as_str(), both.domain.1.as_str()),
        (LONG_USER_NAME, "CONTOSO")
    );
    assert!(
        sweep_allocation_failures(|kernel| drop(run(kernel, Target::Native(driver_entry)))) > 5
    );
    assert!(sweep_call_failures(|kernel| drop(run(kernel, Target::Native(driver_entry)))) >= 1);
    if sample_harness::binary::native_only("test-run fault sweep of the image") {
        return;
    }
    let loader = Kernel::new();
    let image = sample_harness::binary::load_sample(&loader, "sample_ntos_ext").expect("image");
    assert!(sweep_allocation_failures(|kernel| drop(run(kernel, Target::Image(&image)))) > 5);
    drop(loader);
    image.unload();
}

/// As ntosebpfext, `token_sid_size` says only whether a SID was captured: the account helpers
/// look up the SID `token_sid` holds, as long as its own header says, whether the size a test
/// run (or a program) gives is short of it or past the array; 0 means none, and `-ENOENT`.
#[test]
fn the_account_helpers_read_the_sid_token_sid_holds_unless_its_size_is_0() {
    let sid = LOCAL_SYSTEM_SID.as_bytes();
    for size in [8, 12, 68, 0x100] {
        let kernel = Kernel::new();
        let run = account_test_run_sized(&kernel, Target::Native(driver_entry), sid, size)
            .expect("test run");
        kernel.assert_no_leaks();
        assert_eq!(
            (run.name, run.domain),
            ((12, "SYSTEM".to_owned()), (24, "NT AUTHORITY".to_owned())),
            "token_sid_size {size}"
        );
    }
    let kernel = Kernel::new();
    let run =
        account_test_run_sized(&kernel, Target::Native(driver_entry), sid, 0).expect("test run");
    kernel.assert_no_leaks();
    assert_eq!(
        (run.name.0, run.domain.0),
        (-2, -2),
        "no SID captured: -ENOENT"
    );
    assert_eq!(
        kernel.call_count("SecLookupAccountSid"),
        0,
        "nothing to look up"
    );
}
