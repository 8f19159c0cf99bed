//! What a process notify routine reads of a process (times, exit status, the primary token's
//! user), the SID routines, and `SecLookupAccountSid` with its account table.

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;

use ebpf_ext_sys::ksecdd::SecLookupAccountSid;
use ebpf_ext_sys::ntddk::{
    PS_CREATE_NOTIFY_INFO, PsGetProcessCreateTimeQuadPart, PsGetProcessExitStatus,
    PsSetCreateProcessNotifyRoutineEx,
};
use ebpf_ext_sys::ntdef::{FALSE, TRUE, UNICODE_STRING};
use ebpf_ext_sys::ntifs::{
    LOCAL_SYSTEM_SID, PsDereferencePrimaryToken, PsGetProcessExitTime, PsReferencePrimaryToken,
    RtlCopySid, RtlLengthSid, RtlValidSid, SID_NAME_USE, SeQueryInformationToken, SidTypeUser,
    SidTypeWellKnownGroup, TOKEN_USER, TokenUser,
};
use ebpf_ext_sys::ntstatus::{
    STATUS_ACCESS_DENIED, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES, STATUS_NO_MEMORY,
    STATUS_NONE_MAPPED, STATUS_PENDING, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, ExFreePool, HIGH_LEVEL,
    IRQL_NOT_LESS_OR_EQUAL, PASSIVE_LEVEL,
};
use ebpf_ext_usersim::{
    Fault, Kernel, NewProcess, PROCESS_CLOCK_START, ProcessExit, ProcessIdentity, expect_bugcheck,
    set_current_irql,
};

/// What the routine saw: (creation?, create time, exit time, exit status, user SID).
type Seen = (bool, i64, i64, i32, Option<Vec<u8>>);

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

fn user_of(process: *mut c_void) -> Option<Vec<u8>> {
    // SAFETY: the callback's process object.
    let token = unsafe { PsReferencePrimaryToken(process) };
    let mut info = ptr::null_mut();
    // SAFETY: a referenced token, a writable slot.
    let status = unsafe { SeQueryInformationToken(token, TokenUser, &raw mut info) };
    let user = (status == STATUS_SUCCESS).then(|| {
        // SAFETY: a TOKEN_USER the routine filled.
        let sid = unsafe { (*info.cast::<TOKEN_USER>()).User.Sid };
        // SAFETY: the SID it points to.
        assert_eq!(unsafe { RtlValidSid(sid) }, TRUE);
        // SAFETY: a valid SID.
        let length = unsafe { RtlLengthSid(sid) } as usize;
        let mut copy = vec![0u8; 68];
        // SAFETY: 68 writable bytes, a valid SID.
        let copied = unsafe { RtlCopySid(68, copy.as_mut_ptr().cast(), sid) };
        assert_eq!(copied, STATUS_SUCCESS);
        // SAFETY: as above; 4 bytes are too few.
        let short = unsafe { RtlCopySid(4, copy.as_mut_ptr().cast(), sid) };
        assert_eq!(short, STATUS_BUFFER_TOO_SMALL);
        // SAFETY: the block SeQueryInformationToken allocated, freed once.
        unsafe { ExFreePool(info) };
        copy.truncate(length);
        copy
    });
    if status != STATUS_SUCCESS {
        assert_eq!(status, STATUS_INSUFFICIENT_RESOURCES);
    }
    // SAFETY: the reference taken above.
    unsafe { PsDereferencePrimaryToken(token) };
    user
}

unsafe extern "win64" fn notify(
    process: *mut c_void,
    _id: *mut c_void,
    info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // SAFETY: the callback's process object.
    let created = unsafe { PsGetProcessCreateTimeQuadPart(process) };
    // SAFETY: in the callback.
    let exited = unsafe { PsGetProcessExitTime() };
    // SAFETY: the callback's process object.
    let status = unsafe { PsGetProcessExitStatus(process) };
    let user = user_of(process);
    SEEN.with_borrow_mut(|s| s.push((!info.is_null(), created, exited, status, user)));
}

#[test]
fn notify_routines_read_times_exit_status_and_the_token_user() {
    let kernel = Kernel::new();
    // SAFETY: a routine that stays valid; removed below.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(notify, FALSE) };
    assert_eq!(status, STATUS_SUCCESS);
    let user = [1, 2, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 7, 0, 0, 0];
    assert_eq!(kernel.create_process(&NewProcess::new(1)), STATUS_SUCCESS);
    let identity = ProcessIdentity {
        create_time: Some(1234),
        user_sid: user.to_vec(),
    };
    assert_eq!(
        kernel.create_process_as(&NewProcess::new(2), &identity),
        STATUS_SUCCESS
    );
    assert!(kernel.exit_process(1));
    let exit = ProcessExit {
        exit_status: 5,
        exit_time: Some(99),
    };
    assert!(kernel.exit_process_with(2, &exit));
    // SAFETY: registered above.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(notify, TRUE) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: outside any exit notification.
    assert_eq!(unsafe { PsGetProcessExitTime() }, 0);
    let system = Some(LOCAL_SYSTEM_SID.as_bytes().to_vec());
    let step = 10_000_000;
    assert_eq!(
        SEEN.take(),
        [
            (
                true,
                PROCESS_CLOCK_START + step,
                0,
                STATUS_PENDING,
                system.clone()
            ),
            (true, 1234, 0, STATUS_PENDING, Some(user.to_vec())),
            (
                false,
                PROCESS_CLOCK_START + step,
                PROCESS_CLOCK_START + 3 * step,
                0,
                system
            ),
            (false, 1234, 99, 5, Some(user.to_vec())),
        ]
    );
    assert_eq!(kernel.primary_token_references(), 0);
    kernel.assert_no_leaks();
}

#[test]
fn the_token_user_block_is_pool_and_can_fail() {
    let kernel = Kernel::new();
    // SAFETY: as above.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(notify, FALSE) };
    assert_eq!(status, STATUS_SUCCESS);
    kernel.inject(Fault::Allocation(1));
    assert_eq!(kernel.create_process(&NewProcess::new(1)), STATUS_SUCCESS);
    assert!(kernel.exit_process(1));
    // SAFETY: as above.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(notify, TRUE) };
    assert_eq!(status, STATUS_SUCCESS);
    let seen = SEEN.take();
    assert_eq!(
        seen[0].4, None,
        "SeQueryInformationToken failed for want of pool"
    );
    assert!(seen[1].4.is_some());
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(expected = "primary token reference(s) not released")]
fn a_token_reference_not_released_is_a_leak() {
    unsafe extern "win64" fn keep(
        process: *mut c_void,
        _id: *mut c_void,
        _info: *mut PS_CREATE_NOTIFY_INFO,
    ) {
        // SAFETY: the callback's process object; the reference is kept on purpose.
        let _ = unsafe { PsReferencePrimaryToken(process) };
    }
    let kernel = Kernel::new();
    // SAFETY: as above.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(keep, FALSE) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(kernel.create_process(&NewProcess::new(1)), STATUS_SUCCESS);
    // SAFETY: as above.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(keep, TRUE) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(kernel.primary_token_references(), 1);
    kernel.assert_no_leaks();
}

fn lookup(
    sid: &[u8],
    name_room: u16,
    domain_room: u16,
) -> (i32, u32, u32, String, String, SID_NAME_USE) {
    lookup_offering(sid, name_room, domain_room, (0, 0))
}

/// [`lookup`], with the size arguments `extra` bytes larger than the strings'
/// `MaximumLength` (a caller bug when not 0).
fn lookup_offering(
    sid: &[u8],
    name_room: u16,
    domain_room: u16,
    extra: (u32, u32),
) -> (i32, u32, u32, String, String, SID_NAME_USE) {
    let mut name_buffer = vec![0u16; usize::from(name_room / 2)];
    let mut domain_buffer = vec![0u16; usize::from(domain_room / 2)];
    let mut name = UNICODE_STRING {
        Length: 0,
        MaximumLength: name_room,
        Buffer: name_buffer.as_mut_ptr(),
    };
    let mut domain = UNICODE_STRING {
        Length: 0,
        MaximumLength: domain_room,
        Buffer: domain_buffer.as_mut_ptr(),
    };
    let (mut name_size, mut domain_size, mut kind) = (
        u32::from(name_room) + extra.0,
        u32::from(domain_room) + extra.1,
        0,
    );
    // SAFETY: a readable SID; writable sizes and strings with the sizes given.
    let status = unsafe {
        SecLookupAccountSid(
            sid.as_ptr().cast(),
            &raw mut name_size,
            &raw mut name,
            &raw mut domain_size,
            &raw mut domain,
            &raw mut kind,
        )
    };
    let text = |buffer: &[u16], s: &UNICODE_STRING| {
        String::from_utf16_lossy(&buffer[..usize::from(s.Length / 2)])
    };
    (
        status,
        name_size,
        domain_size,
        text(&name_buffer, &name),
        text(&domain_buffer, &domain),
        kind,
    )
}

#[test]
fn accounts_are_looked_up_with_sizes_as_sec_lookup_account_sid_reports_them() {
    let kernel = Kernel::new();
    let system = LOCAL_SYSTEM_SID.as_bytes();
    assert_eq!(
        lookup(system, 80, 80),
        (
            STATUS_SUCCESS,
            12,
            24,
            "SYSTEM".into(),
            "NT AUTHORITY".into(),
            SidTypeWellKnownGroup
        )
    );
    let (status, name, domain, ..) = lookup(system, 80, 10);
    assert_eq!(
        (status, name, domain),
        (STATUS_BUFFER_TOO_SMALL, 12, 24),
        "the domain does not fit"
    );
    let (status, name, domain, ..) = lookup(system, 0, 0);
    assert_eq!(
        (status, name, domain),
        (STATUS_BUFFER_TOO_SMALL, 12, 24),
        "both sizes needed"
    );
    let user = [1, 1, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0];
    assert_eq!(lookup(&user, 80, 80).0, STATUS_NONE_MAPPED);
    kernel.add_account(&user, "alice", "CONTOSO");
    assert_eq!(
        lookup(&user, 80, 80),
        (
            STATUS_SUCCESS,
            10,
            14,
            "alice".into(),
            "CONTOSO".into(),
            SidTypeUser
        )
    );
    kernel.inject(Fault::Call("SecLookupAccountSid", 1));
    assert_ne!(lookup(system, 80, 80).0, STATUS_SUCCESS, "fault-injectable");
}

#[test]
fn an_injected_lookup_failure_returns_the_status_chosen() {
    let kernel = Kernel::new();
    let system = LOCAL_SYSTEM_SID.as_bytes();
    kernel.inject(Fault::CallWithStatus(
        "SecLookupAccountSid",
        1,
        STATUS_ACCESS_DENIED,
    ));
    assert_eq!(
        lookup(system, 80, 80),
        (
            STATUS_ACCESS_DENIED,
            80,
            80,
            String::new(),
            String::new(),
            0
        ),
        "the chosen status; nothing written"
    );
    kernel.inject(Fault::Call("SecLookupAccountSid", 1));
    assert_eq!(lookup(system, 80, 80).0, STATUS_NO_MEMORY, "the default");
    assert_eq!(lookup(system, 80, 80).0, STATUS_SUCCESS, "one call each");
    assert_eq!(
        kernel.faults_triggered(),
        [
            Fault::CallWithStatus("SecLookupAccountSid", 1, STATUS_ACCESS_DENIED),
            Fault::Call("SecLookupAccountSid", 1)
        ]
    );
    assert_eq!(kernel.call_count("SecLookupAccountSid"), 3);
}

#[test]
#[should_panic(expected = "cannot be chosen")]
fn a_status_cannot_be_chosen_for_other_routines() {
    let kernel = Kernel::new();
    kernel.inject(Fault::CallWithStatus(
        "IoCreateDevice",
        1,
        STATUS_ACCESS_DENIED,
    ));
}

#[test]
#[should_panic(expected = "is a success status")]
fn an_injected_status_must_be_a_failure() {
    let kernel = Kernel::new();
    kernel.inject(Fault::CallWithStatus(
        "SecLookupAccountSid",
        1,
        STATUS_SUCCESS,
    ));
}

#[test]
fn a_name_size_beyond_its_maximum_length_bugchecks() {
    let check = expect_bugcheck("a_name_size_beyond_its_maximum_length_bugchecks", || {
        let _kernel = Kernel::new();
        // The name string holds 10 bytes; the size says 12, which SYSTEM needs.
        let _ = lookup_offering(LOCAL_SYSTEM_SID.as_bytes(), 10, 80, (2, 0));
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert_eq!(check.api, "SecLookupAccountSid");
    assert_eq!(&check.parameters[1..], [12, 10, 0]);
    assert!(check.message.contains("MaximumLength"), "{check}");
}

#[test]
fn a_domain_size_beyond_its_maximum_length_bugchecks() {
    let check = expect_bugcheck("a_domain_size_beyond_its_maximum_length_bugchecks", || {
        let _kernel = Kernel::new();
        // Bugged even when the call would fail before writing (an unknown SID).
        let unknown = [1, 1, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0];
        let _ = lookup_offering(&unknown, 80, 0, (0, 1));
    });
    assert_eq!(check.code, DRIVER_VERIFIER_DETECTED_VIOLATION);
    assert_eq!(check.api, "SecLookupAccountSid");
    assert_eq!(&check.parameters[1..], [1, 0, 0]);
}

/// Calls `RtlValidSid`, `RtlLengthSid` and `RtlCopySid` (as `which` says) on LocalSystem's
/// SID at the calling thread's IRQL.
fn sid_routine(which: &str) -> u32 {
    let sid: *const c_void = LOCAL_SYSTEM_SID.as_bytes().as_ptr().cast();
    let mut copy = [0u8; 68];
    match which {
        // SAFETY: a valid SID.
        "RtlValidSid" => u32::from(unsafe { RtlValidSid(sid) }),
        // SAFETY: a valid SID.
        "RtlLengthSid" => unsafe { RtlLengthSid(sid) },
        // SAFETY: a valid SID, 68 writable bytes.
        "RtlCopySid" => unsafe { RtlCopySid(68, copy.as_mut_ptr().cast(), sid) }.cast_unsigned(),
        _ => unreachable!("{which}"),
    }
}

/// `PsReferencePrimaryToken` is PASSIVE_LEVEL only (Microsoft Learn), unlike the SID
/// routines: at APC_LEVEL it bug-checks.
#[test]
fn a_primary_token_reference_above_passive_level_bugchecks() {
    unsafe extern "win64" fn at_apc(
        process: *mut c_void,
        _id: *mut c_void,
        _info: *mut PS_CREATE_NOTIFY_INFO,
    ) {
        set_current_irql(APC_LEVEL);
        // SAFETY: the callback's process object (the IRQL is wrong).
        let _ = unsafe { PsReferencePrimaryToken(process) };
    }
    let check = expect_bugcheck(
        "a_primary_token_reference_above_passive_level_bugchecks",
        || {
            let kernel = Kernel::new();
            // SAFETY: a notify routine of this test, removed with the kernel.
            let status = unsafe { PsSetCreateProcessNotifyRoutineEx(at_apc, FALSE) };
            assert_eq!(status, STATUS_SUCCESS);
            let _ = kernel.create_process(&NewProcess::new(1));
        },
    );
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.api, "PsReferencePrimaryToken");
    assert_eq!(
        check.parameters[..2],
        [u64::from(APC_LEVEL), u64::from(PASSIVE_LEVEL)]
    );
}

#[test]
fn sid_routines_run_at_apc_level() {
    let _kernel = Kernel::new();
    set_current_irql(APC_LEVEL);
    let results = ["RtlValidSid", "RtlLengthSid", "RtlCopySid"].map(sid_routine);
    set_current_irql(PASSIVE_LEVEL);
    assert_eq!(results, [u32::from(TRUE), 12, 0]);
}

fn sid_routine_above_apc_level_bugchecks(test: &str, which: &str) {
    let check = expect_bugcheck(test, || {
        let _kernel = Kernel::new();
        set_current_irql(DISPATCH_LEVEL);
        sid_routine(which);
    });
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.api, which);
    assert_eq!(
        check.parameters[..2],
        [u64::from(DISPATCH_LEVEL), u64::from(APC_LEVEL)]
    );
}

#[test]
fn rtl_valid_sid_above_apc_level_bugchecks() {
    sid_routine_above_apc_level_bugchecks("rtl_valid_sid_above_apc_level_bugchecks", "RtlValidSid");
}

#[test]
fn rtl_length_sid_above_apc_level_bugchecks() {
    sid_routine_above_apc_level_bugchecks(
        "rtl_length_sid_above_apc_level_bugchecks",
        "RtlLengthSid",
    );
}

#[test]
fn rtl_copy_sid_above_apc_level_bugchecks() {
    sid_routine_above_apc_level_bugchecks("rtl_copy_sid_above_apc_level_bugchecks", "RtlCopySid");
}

#[test]
fn exit_time_above_dispatch_level_bugchecks() {
    let _kernel = Kernel::new();
    set_current_irql(DISPATCH_LEVEL);
    // SAFETY: outside an exit notification (0), at its highest level.
    assert_eq!(unsafe { PsGetProcessExitTime() }, 0);
    set_current_irql(PASSIVE_LEVEL);
    let check = expect_bugcheck("exit_time_above_dispatch_level_bugchecks", || {
        set_current_irql(HIGH_LEVEL);
        // SAFETY: a kernel is bound (the IRQL is wrong).
        unsafe { PsGetProcessExitTime() };
    });
    assert_eq!(check.code, IRQL_NOT_LESS_OR_EQUAL);
    assert_eq!(check.api, "PsGetProcessExitTime");
}
