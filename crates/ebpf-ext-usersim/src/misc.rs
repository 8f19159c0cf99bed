//! Stack expansion, debug output and bug checks.

use core::ffi::{CStr, c_char, c_void};
use core::sync::atomic::Ordering;

use ebpf_ext_sys::ntddk::{EXPAND_STACK_CALLOUT, MAXIMUM_EXPANSION_SIZE};
use ebpf_ext_sys::ntdef::{BOOLEAN, KPROCESSOR_MODE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_PARAMETER, STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER_4,
    STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DISPATCH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, HIGH_LEVEL,
    IRQL_NOT_LESS_OR_EQUAL,
};

use crate::kernel::{
    DebugMessage, bugcheck, call_fails, current_irql, lock, require_irql, with_kernel,
};

/// `KeDelayExecutionThread`: sleeps the host thread for a relative interval (negative, in
/// 100 ns units; zero yields). An absolute time (positive) counts as already due: usersim has
/// no system clock. Not alertable whatever `Alertable` says (usersim delivers no APCs).
///
/// # Safety
/// Kernel routine; `Interval` points to a readable `i64`.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn KeDelayExecutionThread(
    WaitMode: KPROCESSOR_MODE,
    Alertable: BOOLEAN,
    Interval: *const i64,
) -> NTSTATUS {
    const API: &str = "KeDelayExecutionThread";
    require_irql(API, APC_LEVEL);
    let _ = (WaitMode, Alertable);
    with_kernel(API, |k| k.delays.fetch_add(1, Ordering::Relaxed));
    if Interval.is_null() {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [0; 4],
            "KeDelayExecutionThread called with a NULL interval",
        );
    }
    // SAFETY: checked non-NULL; the caller's contract makes it readable.
    let interval = unsafe { Interval.read_unaligned() };
    match interval {
        0 => std::thread::yield_now(),
        i64::MIN..0 => {
            let hundreds = interval.unsigned_abs();
            std::thread::sleep(core::time::Duration::from_nanos(
                hundreds.saturating_mul(100),
            ));
        }
        _ => {}
    }
    STATUS_SUCCESS
}

/// `KeExpandKernelStackAndCalloutEx`: runs the callout on the calling thread (host threads
/// have far more than `MAXIMUM_EXPANSION_SIZE` of stack) after the documented checks.
///
/// # Safety
/// Kernel routine; `Callout(Parameter)` must be safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn KeExpandKernelStackAndCalloutEx(
    Callout: EXPAND_STACK_CALLOUT,
    Parameter: *mut c_void,
    Size: usize,
    Wait: BOOLEAN,
    Context: *mut c_void,
) -> NTSTATUS {
    const API: &str = "KeExpandKernelStackAndCalloutEx";
    require_irql(API, DISPATCH_LEVEL);
    if Size > MAXIMUM_EXPANSION_SIZE {
        return STATUS_INVALID_PARAMETER_3;
    }
    let irql = current_irql();
    if Wait != 0 && irql >= DISPATCH_LEVEL {
        return STATUS_INVALID_PARAMETER_4;
    }
    if !Context.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    if with_kernel(API, |k| call_fails(k, API)) {
        return STATUS_NO_MEMORY;
    }
    // SAFETY: the caller supplies a callout that may be called with its parameter.
    unsafe { Callout(Parameter) };
    let after = current_irql();
    if after != irql {
        bugcheck(
            API,
            IRQL_NOT_LESS_OR_EQUAL,
            [u64::from(irql), u64::from(after), 0, 0],
            "stack-expansion callout returned at a different IRQL",
        );
    }
    with_kernel(API, |k| k.stack_expansions.fetch_add(1, Ordering::Relaxed));
    STATUS_SUCCESS
}

/// `DbgPrintEx`, in the one shape the SDK uses: format `"%s"` and one string argument (Rust
/// cannot define a variadic function; the x64 convention passes these four arguments in the
/// same registers either way). Any other format is a bug check naming the format.
///
/// # Safety
/// Kernel routine; `Format` and `Arg` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn DbgPrintEx(
    ComponentId: u32,
    Level: u32,
    Format: *const c_char,
    Arg: *const c_char,
) -> u32 {
    const API: &str = "DbgPrintEx";
    require_irql(API, HIGH_LEVEL);
    // SAFETY: the caller passes a NUL-terminated format.
    let format = unsafe { CStr::from_ptr(Format) }
        .to_string_lossy()
        .into_owned();
    if format != "%s" {
        bugcheck(
            API,
            DRIVER_VERIFIER_DETECTED_VIOLATION,
            [0; 4],
            &format!("usersim's DbgPrintEx implements only the format \"%s\", got {format:?}"),
        );
    }
    // SAFETY: with "%s" the argument is a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(Arg) }
        .to_string_lossy()
        .into_owned();
    with_kernel(API, |k| {
        lock(&k.debug_output).push(DebugMessage {
            component: ComponentId,
            level: Level,
            text,
        });
    });
    0
}

/// `KeBugCheckEx`: records the bug check and aborts the process.
#[unsafe(no_mangle)]
pub extern "win64" fn KeBugCheckEx(
    BugCheckCode: u32,
    BugCheckParameter1: usize,
    BugCheckParameter2: usize,
    BugCheckParameter3: usize,
    BugCheckParameter4: usize,
) -> ! {
    bugcheck(
        "KeBugCheckEx",
        BugCheckCode,
        [
            BugCheckParameter1 as u64,
            BugCheckParameter2 as u64,
            BugCheckParameter3 as u64,
            BugCheckParameter4 as u64,
        ],
        "the driver called KeBugCheckEx",
    )
}
