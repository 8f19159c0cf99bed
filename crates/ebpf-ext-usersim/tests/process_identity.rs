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
    STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES, STATUS_NONE_MAPPED, STATUS_PENDING,
    STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::ExFreePool;
use ebpf_ext_usersim::{
    Fault, Kernel, NewProcess, PROCESS_CLOCK_START, ProcessExit, ProcessIdentity,
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

fn process(id: usize) -> NewProcess {
    NewProcess {
        process_id: id,
        parent_process_id: 4,
        creating_process_id: 4,
        creating_thread_id: 8,
        image_file_name: "\\??\\C:\\p.exe".into(),
        command_line: None,
    }
}

#[test]
fn notify_routines_read_times_exit_status_and_the_token_user() {
    let kernel = Kernel::new();
    // SAFETY: a routine that stays valid; removed below.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(notify, FALSE) };
    assert_eq!(status, STATUS_SUCCESS);
    let user = [1, 2, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 7, 0, 0, 0];
    assert_eq!(kernel.create_process(&process(1)), STATUS_SUCCESS);
    let identity = ProcessIdentity {
        create_time: Some(1234),
        user_sid: user.to_vec(),
    };
    assert_eq!(
        kernel.create_process_as(&process(2), &identity),
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
    assert_eq!(kernel.create_process(&process(1)), STATUS_SUCCESS);
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
    assert_eq!(kernel.create_process(&process(1)), STATUS_SUCCESS);
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
    let (mut name_size, mut domain_size, mut kind) =
        (u32::from(name_room), u32::from(domain_room), 0);
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
