//! `process::AccountNames`: ntosebpfext's account resolution (inline buffers, one pool
//! retry, sizes above a `UNICODE_STRING`'s refused, failures cleared and remembered, pool
//! buffers freed on drop) against usersim's `SecLookupAccountSid`.
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use ebpf_ext_usersim::{Fault, Kernel};
use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::AccountNames;
use ebpf_extension_common::sys::ntifs::LOCAL_SYSTEM_SID;
use ebpf_extension_common::sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_SID, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};

const TAG: PoolTag = PoolTag::new(*b"Acct");
/// S-1-5-21-1-2-3-1001.
const USER_SID: [u8; 28] = [
    1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xE9, 3, 0, 0,
];

fn text(bytes: Option<&[u8]>) -> Option<String> {
    let units: Vec<u16> = bytes?
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    Some(String::from_utf16_lossy(&units))
}

fn lookups(kernel: &Kernel) -> u64 {
    kernel.call_count("SecLookupAccountSid")
}

#[test]
fn a_short_account_resolves_inline_once() {
    let kernel = Kernel::new();
    let mut accounts = AccountNames::new(TAG);
    assert_eq!(text(accounts.name()).as_deref(), Some(""), "inline, empty");
    assert!(!accounts.looked_up());
    assert_eq!(accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()), Ok(()));
    assert_eq!(accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()), Ok(()));
    assert_eq!(lookups(&kernel), 1, "looked up once");
    assert_eq!(kernel.allocation_count(), 0, "no pool buffer");
    assert_eq!(text(accounts.name()).as_deref(), Some("SYSTEM"));
    assert_eq!(text(accounts.domain()).as_deref(), Some("NT AUTHORITY"));
    let [name, domain] = accounts.strings();
    assert_eq!(
        (
            name.Length,
            name.MaximumLength,
            domain.Length,
            domain.MaximumLength
        ),
        (12, 80, 24, 80)
    );
    assert!(!name.Buffer.is_null() && !domain.Buffer.is_null());
    drop(accounts);
    kernel.assert_no_leaks();
}

#[test]
fn a_long_name_takes_one_pool_buffer_and_one_retry_freed_on_drop() {
    let kernel = Kernel::new();
    let long = "n".repeat(41);
    kernel.add_account(&USER_SID, &long, "CONTOSO");
    let mut accounts = AccountNames::new(TAG);
    assert_eq!(accounts.resolve(&USER_SID), Ok(()));
    assert_eq!(
        (lookups(&kernel), kernel.allocation_count()),
        (2, 1),
        "the retry, with a pool buffer for the name only"
    );
    assert_eq!(text(accounts.name()), Some(long));
    assert_eq!(text(accounts.domain()).as_deref(), Some("CONTOSO"));
    let [name, domain] = accounts.strings();
    assert_eq!((name.MaximumLength, domain.MaximumLength), (82, 80));
    drop(accounts);
    kernel.assert_no_leaks();
}

#[test]
fn a_name_longer_than_a_unicode_string_fails_with_buffer_overflow() {
    let kernel = Kernel::new();
    kernel.add_account(&USER_SID, &"n".repeat(40_000), "CONTOSO");
    let mut accounts = AccountNames::new(TAG);
    assert_eq!(accounts.resolve(&USER_SID), Err(STATUS_BUFFER_OVERFLOW));
    assert_eq!(
        accounts.resolve(&USER_SID),
        Err(STATUS_BUFFER_OVERFLOW),
        "remembered"
    );
    assert_eq!((lookups(&kernel), kernel.allocation_count()), (1, 0));
    assert_eq!(
        (accounts.name(), accounts.domain()),
        (None, None),
        "cleared"
    );
    let [name, domain] = accounts.strings();
    assert!(name.Buffer.is_null() && domain.Buffer.is_null());
    assert_eq!((name.MaximumLength, domain.MaximumLength), (0, 0));
    drop(accounts);
    kernel.assert_no_leaks();
}

#[test]
fn failures_clear_both_strings_and_free_what_the_retry_took() {
    // A failed retry allocation, and a failed lookup.
    let kernel = Kernel::new();
    kernel.add_account(
        &USER_SID,
        &"n".repeat(41),
        "a-domain-whose-name-does-not-fit-in-eighty-bytes",
    );
    kernel.inject(Fault::Allocation(2));
    let mut accounts = AccountNames::new(TAG);
    assert_eq!(
        accounts.resolve(&USER_SID),
        Err(STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!((accounts.name(), accounts.domain()), (None, None));
    assert_eq!(
        kernel.faults_triggered(),
        [Fault::Allocation(2)],
        "the domain's buffer failed after the name's was taken"
    );
    kernel.assert_no_leaks();
    let kernel = Kernel::new();
    kernel.inject(Fault::Call("SecLookupAccountSid", 1));
    let mut accounts = AccountNames::new(TAG);
    let failed = accounts.resolve(LOCAL_SYSTEM_SID.as_bytes());
    assert!(failed.is_err_and(|status| status != STATUS_SUCCESS));
    assert_eq!(accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()), failed);
    assert_eq!(lookups(&kernel), 1, "not retried");
    assert_eq!((accounts.name(), accounts.domain()), (None, None));
    let mut accounts = AccountNames::new(TAG);
    assert!(accounts.resolve(&[1, 1, 0]).is_err(), "not a whole SID");
    drop(accounts);
    kernel.assert_no_leaks();
}

#[test]
fn any_lookup_failure_status_is_returned_cleared_and_remembered() {
    /// `SEC_E_INTERNAL_ERROR` (an SSPI status, `winerror.h`).
    const SEC_E_INTERNAL_ERROR: i32 = 0x8009_0304_u32.cast_signed();
    for status in [STATUS_ACCESS_DENIED, SEC_E_INTERNAL_ERROR] {
        let kernel = Kernel::new();
        kernel.inject(Fault::CallWithStatus("SecLookupAccountSid", 1, status));
        let mut accounts = AccountNames::new(TAG);
        assert_eq!(accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()), Err(status));
        assert_eq!(
            accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()),
            Err(status),
            "remembered"
        );
        assert_eq!(lookups(&kernel), 1, "not retried");
        assert_eq!(
            (accounts.name(), accounts.domain()),
            (None, None),
            "cleared"
        );
        drop(accounts);
        kernel.assert_no_leaks();
    }
}

/// A supplied string: `text` in a pool buffer two bytes longer.
fn supplied(text: &str) -> (PoolArray<u8>, usize) {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut pool = PoolArray::try_new(bytes.len() + 2, TAG).expect("pool");
    pool[..bytes.len()].copy_from_slice(&bytes);
    (pool, bytes.len())
}

#[test]
fn supplied_strings_are_the_result_or_the_lookup_s_first_buffers() {
    let kernel = Kernel::new();
    let mut given = AccountNames::supplied(Some(supplied("me")), Some(supplied("HOME")), true, TAG);
    assert_eq!(given.resolve(LOCAL_SYSTEM_SID.as_bytes()), Ok(()));
    assert_eq!(text(given.name()).as_deref(), Some("me"));
    let mut half = AccountNames::supplied(Some(supplied("me")), None, true, TAG);
    assert_eq!(
        half.resolve(LOCAL_SYSTEM_SID.as_bytes()),
        Err(STATUS_UNSUCCESSFUL),
        "a looked-up result needs both strings"
    );
    assert_eq!(lookups(&kernel), 0, "supplied results are not looked up");
    let mut into = AccountNames::supplied(Some(supplied("0123456789")), None, false, TAG);
    assert_eq!(into.resolve(LOCAL_SYSTEM_SID.as_bytes()), Ok(()));
    assert_eq!(
        (
            lookups(&kernel),
            text(into.name()).as_deref(),
            text(into.domain()).as_deref()
        ),
        (2, Some("SYSTEM"), Some("NT AUTHORITY")),
        "the supplied 22-byte name buffer holds SYSTEM; the NULL domain takes the retry"
    );
    assert_eq!(into.strings()[0].MaximumLength, 22);
    drop((given, half, into));
    kernel.assert_no_leaks();
}

/// Above PASSIVE_LEVEL (a helper a profile request fires at DISPATCH_LEVEL) the lookup is
/// refused with a status and a trace event instead of calling `SecLookupAccountSid`, which
/// needs PASSIVE_LEVEL; nothing is remembered, so a lookup at PASSIVE_LEVEL still works.
#[test]
fn a_lookup_above_passive_level_is_refused_not_made_and_not_remembered() {
    tracelogging::define_provider!(
        TRACE,
        "AccountsAtDispatchTestProvider",
        id("9d3a6f21-0c84-4e5b-a7d2-51b8e6c0f493")
    );
    let kernel = Kernel::new();
    let tracing = ebpf_extension_common::trace::Tracing::start(&TRACE).expect("tracing");
    let mut accounts = AccountNames::new(TAG);
    let refused =
        ebpf_extension_common::irql::at_dispatch(|| accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()));
    assert_eq!(refused, Some(Err(STATUS_INVALID_DEVICE_STATE)));
    assert_eq!(lookups(&kernel), 0, "no lookup at DISPATCH_LEVEL");
    assert!(!accounts.looked_up(), "nothing remembered");
    assert_eq!(
        kernel.etw_message_count("account lookup refused above PASSIVE_LEVEL"),
        1
    );
    assert_eq!(accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()), Ok(()));
    assert_eq!(text(accounts.name()).as_deref(), Some("SYSTEM"));
    // Once recorded, the result is returned at any level.
    let again =
        ebpf_extension_common::irql::at_dispatch(|| accounts.resolve(LOCAL_SYSTEM_SID.as_bytes()));
    assert_eq!(again, Some(Ok(())));
    assert_eq!(lookups(&kernel), 1);
    drop(accounts);
    drop(tracing);
    kernel.assert_no_leaks();
}

tracelogging::define_provider!(
    TRACE,
    "AccountNamesTestProvider",
    id("7c2e9a41-0b5d-4f63-a8e1-3d9c5b7f2a60")
);

/// A SID can come from a test run's context, which user mode writes: one that is not whole
/// (shorter than its header says) or not valid is refused with `STATUS_INVALID_SID` and a
/// trace event, without a lookup.
#[test]
fn a_sid_that_is_not_whole_and_valid_is_refused_and_traced() {
    let kernel = Kernel::new();
    ebpf_extension_common::trace::initiate(&TRACE).expect("tracing");
    let refused = "account lookup refused: not a whole, valid SID";
    let mut revision_2 = USER_SID;
    revision_2[0] = 2;
    let cases: [&[u8]; 3] = [&[1, 1, 0], &USER_SID[..27], &revision_2];
    for (n, sid) in cases.into_iter().enumerate() {
        let mut accounts = AccountNames::new(TAG);
        assert_eq!(accounts.resolve(sid), Err(STATUS_INVALID_SID), "{sid:?}");
        assert_eq!(kernel.etw_messages_containing(refused), n + 1, "{sid:?}");
    }
    assert_eq!(lookups(&kernel), 0);
    ebpf_extension_common::trace::terminate();
    kernel.assert_no_leaks();
}
