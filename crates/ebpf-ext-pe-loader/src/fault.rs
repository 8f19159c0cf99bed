//! The fault handler: CR8 emulation, fault reports, and the child-process test helper.
//!
//! One `SA_SIGINFO | SA_ONSTACK` handler for SIGSEGV, SIGILL, SIGBUS, SIGFPE and SIGTRAP,
//! installed the first time an image is loaded or called. It
//! 1. emulates `mov reg, cr8` / `mov cr8, reg` executed by a loaded image (they fault in ring
//!    3) through the registered [`set_irql_source`] callbacks, and resumes after them;
//! 2. reports any other fault whose instruction is inside a loaded image (or inside the
//!    loader's `__chkstk` called from one), and any fault on the guard page of a kernel stack,
//!    as one line on stderr, then aborts the process as a bug check halts a machine. A
//!    breakpoint (`int3`, SIGTRAP) in an image counts: without a kernel debugger, Windows
//!    bug-checks on it (`KMODE_EXCEPTION_NOT_HANDLED`, `STATUS_BREAKPOINT`). A debugger that
//!    traces the process sees its own traps before any handler does;
//! 3. hands every other fault to the handler that was installed before (Rust's stack
//!    overflow handler, or the default action).
//!
//! Everything on the handler's path is async-signal-safe: atomics, `const` thread-locals,
//! formatting into a stack buffer, `write(2)` and `abort(3)`.

use alloc::string::String;
use core::ffi::{c_int, c_void};
use core::fmt::{self, Write as _};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use crate::{chkstk, registry, stack};

/// Every line the handler reports starts with this.
pub const FAULT_MARKER: &str = "fault: ";

const SIGNALS: [c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGILL,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGTRAP,
];
/// `int3`.
const INT3: u8 = 0xCC;
/// `ucontext_t` general-register index of each x86 register number (RAX = 0 … R15 = 15).
const GREG_OF_REGISTER: [c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

static INSTALL: Once = Once::new();
static PREVIOUS: OnceLock<[libc::sigaction; SIGNALS.len()]> = OnceLock::new();
static IRQL_GET: AtomicUsize = AtomicUsize::new(0);
static IRQL_SET: AtomicUsize = AtomicUsize::new(0);

/// Registers where emulated CR8 accesses read and write the IRQL.
///
/// `get` returns the calling thread's IRQL (0..=15); `set` changes it. Both run inside the
/// signal handler on the faulting thread: they must be async-signal-safe in practice (no
/// locks another thread of the process may hold across the fault). The usersim pair is
/// registered by [`use_usersim_irql`](crate::use_usersim_irql).
///
/// Without a source, a CR8 access in an image is reported as a fault.
pub fn set_irql_source(get: fn() -> u8, set: fn(u8)) {
    IRQL_SET.store(set as usize, Ordering::SeqCst);
    IRQL_GET.store(get as usize, Ordering::SeqCst);
}

/// Removes the IRQL source: CR8 accesses are reported as faults again.
pub fn clear_irql_source() {
    IRQL_GET.store(0, Ordering::SeqCst);
    IRQL_SET.store(0, Ordering::SeqCst);
}

/// The registered `(get, set)` pair.
type IrqlSource = (fn() -> u8, fn(u8));

fn irql_source() -> Option<IrqlSource> {
    let get = IRQL_GET.load(Ordering::SeqCst);
    let set = IRQL_SET.load(Ordering::SeqCst);
    if get == 0 || set == 0 {
        return None;
    }
    // SAFETY: IRQL_GET only ever holds 0 or a `fn() -> u8` stored by `set_irql_source`.
    let get = unsafe { core::mem::transmute::<usize, fn() -> u8>(get) };
    // SAFETY: IRQL_SET only ever holds 0 or a `fn(u8)` stored by `set_irql_source`.
    let set = unsafe { core::mem::transmute::<usize, fn(u8)>(set) };
    Some((get, set))
}

/// Installs the handler (once per process).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `sigaction` is a plain C struct for which all-zero is a valid value.
        let mut previous: [libc::sigaction; SIGNALS.len()] = unsafe { core::mem::zeroed() };
        for (signal, previous) in SIGNALS.iter().zip(&mut previous) {
            // SAFETY: queries the current action into a valid struct.
            unsafe { libc::sigaction(*signal, ptr::null(), previous) };
        }
        // Only this closure sets it, once.
        let _ = PREVIOUS.set(previous);
        // SAFETY: as above, all-zero is a valid `sigaction`.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: initialises the mask of a valid struct.
        unsafe { libc::sigemptyset(&raw mut action.sa_mask) };
        for signal in SIGNALS {
            // SAFETY: `action` is fully initialised and `handler` has the SA_SIGINFO signature.
            unsafe { libc::sigaction(signal, &raw const action, ptr::null_mut()) };
        }
    });
}

/// A CR8 move decoded from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cr8Access {
    /// `mov reg, cr8` (`REX.R 0F 20 /r`), into register number `0..16`.
    Read(u8),
    /// `mov cr8, reg` (`REX.R 0F 22 /r`), from register number `0..16`.
    Write(u8),
}

/// Length of the CR8 moves decoded by [`decode_cr8`].
pub(crate) const CR8_INSTRUCTION_LEN: u32 = 4;

/// Decodes `REX(R=1) 0F 20|22 ModRM(reg=0)`, the only encoding compilers emit for CR8 moves.
pub(crate) fn decode_cr8(bytes: [u8; 4]) -> Option<Cr8Access> {
    let [rex, escape, opcode, modrm] = bytes;
    // A REX prefix with REX.R set selects control register 8 together with ModRM.reg = 0.
    if rex & 0xF0 != 0x40 || rex & 0x04 == 0 || escape != 0x0F || (modrm >> 3) & 7 != 0 {
        return None;
    }
    // Control register moves always use the register form (ModRM.mod is ignored).
    let register = (modrm & 7) | ((rex & 1) << 3);
    match opcode {
        0x20 => Some(Cr8Access::Read(register)),
        0x22 => Some(Cr8Access::Write(register)),
        _ => None,
    }
}

enum Emulation {
    Done,
    NoSource,
    NotCr8,
}

fn emulate_cr8(image: &registry::ImageRecord, rip: usize, gregs: &mut [i64; 23]) -> Emulation {
    let Some(rva) = image.rva(rip) else {
        return Emulation::NotCr8;
    };
    if !image.is_executable(rva, CR8_INSTRUCTION_LEN) {
        return Emulation::NotCr8;
    }
    // SAFETY: the four bytes lie inside an executable section of a registered image, which
    // is mapped read+execute while registered.
    let bytes = unsafe { ptr::read_unaligned(rip as *const [u8; 4]) };
    let Some(access) = decode_cr8(bytes) else {
        return Emulation::NotCr8;
    };
    let Some((get, set)) = irql_source() else {
        return Emulation::NoSource;
    };
    let greg = |register: u8| {
        GREG_OF_REGISTER
            .get(usize::from(register))
            .and_then(|&g| usize::try_from(g).ok())
    };
    match access {
        Cr8Access::Read(register) => {
            if let Some(slot) = greg(register).and_then(|g| gregs.get_mut(g)) {
                *slot = i64::from(get());
            }
        }
        Cr8Access::Write(register) => {
            let value = greg(register).and_then(|g| gregs.get(g)).copied();
            let irql = value.unwrap_or_default() & 0xF;
            set(u8::try_from(irql).unwrap_or_default());
        }
    }
    if let Some(slot) = usize::try_from(libc::REG_RIP)
        .ok()
        .and_then(|i| gregs.get_mut(i))
    {
        *slot = slot.wrapping_add(i64::from(CR8_INSTRUCTION_LEN));
    }
    Emulation::Done
}

/// A fixed buffer that formats without allocating; output past its end is dropped.
struct Line {
    bytes: [u8; 1024],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

fn signal_name(signal: c_int) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGILL => "SIGILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP (breakpoint)",
        _ => "signal",
    }
}

fn write_location(line: &mut Line, address: usize) -> fmt::Result {
    match registry::with_image(address, |image| {
        image
            .rva(address)
            .map(|rva| image.write_location(&mut *line, rva))
    })
    .flatten()
    {
        Some(result) => result,
        None => write!(line, "host code at {address:#x}"),
    }
}

/// What the handler saw.
struct Fault {
    signal: c_int,
    rip: usize,
    rsp: usize,
    address: usize,
    overflow: bool,
    cr8_without_source: bool,
}

fn report(fault: &Fault) -> ! {
    let mut line = Line {
        bytes: [0; 1024],
        len: 0,
    };
    let _ = write_report(&mut line, fault);
    let text = line.bytes.get(..line.len).unwrap_or_default();
    // SAFETY: writes initialised bytes of a live buffer to stderr.
    unsafe { libc::write(libc::STDERR_FILENO, text.as_ptr().cast(), text.len()) };
    // SAFETY: abort(3) is async-signal-safe and never returns.
    unsafe { libc::abort() }
}

fn write_report(line: &mut Line, fault: &Fault) -> fmt::Result {
    line.write_str(FAULT_MARKER)?;
    line.write_str(if fault.overflow {
        "stack overflow"
    } else {
        signal_name(fault.signal)
    })?;
    line.write_str(" in ")?;
    if chkstk::contains(fault.rip) {
        // __chkstk pushes nothing: its return address, in the image, is at RSP.
        // SAFETY: RSP of a thread running the loader's __chkstk points at its return address,
        // which the call instruction just wrote.
        let caller = unsafe { ptr::read_volatile(fault.rsp as *const usize) };
        line.write_str("__chkstk called from ")?;
        write_location(line, caller)?;
    } else {
        write_location(line, fault.rip)?;
    }
    if fault.cr8_without_source {
        line.write_str(": CR8 access with no IRQL source (set_irql_source)")?;
    } else if !fault.overflow && matches!(fault.signal, libc::SIGSEGV | libc::SIGBUS) {
        write!(line, ", address {:#x}", fault.address)?;
    }
    line.write_str("\n")
}

extern "C" fn handler(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes the interrupted context, valid and exclusive
    // to this handler until it returns.
    let context_ref = unsafe { &mut *context.cast::<libc::ucontext_t>() };
    let gregs = &mut context_ref.uc_mcontext.gregs;
    let reg = |r: c_int| {
        usize::try_from(r)
            .ok()
            .and_then(|i| gregs.get(i))
            .and_then(|&v| usize::try_from(v.cast_unsigned()).ok())
            .unwrap_or_default()
    };
    let (mut rip, rsp) = (reg(libc::REG_RIP), reg(libc::REG_RSP));
    if signal == libc::SIGTRAP {
        // A trap reports the instruction after it: the `int3` is the byte before, if that
        // byte is in an image and is one.
        let breakpoint = rip.wrapping_sub(1);
        let is_int3 = |image: &registry::ImageRecord| {
            image
                .rva(breakpoint)
                .is_some_and(|rva| image.is_executable(rva, 1))
                // SAFETY: the byte lies inside an executable section of a registered image,
                // which is mapped read+execute while registered (the registry holds it).
                && unsafe { ptr::read_volatile(breakpoint as *const u8) } == INT3
        };
        if registry::with_image(breakpoint, is_int3) == Some(true) {
            rip = breakpoint;
        }
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t.
    let info_ref = unsafe { &*info };
    // SAFETY: every siginfo_t has the field (SIGSEGV, SIGILL, SIGBUS and SIGFPE set it to the
    // fault address; for SIGTRAP it is not reported).
    let address = unsafe { info_ref.si_addr() } as usize;

    let mut cr8_without_source = false;
    if signal == libc::SIGSEGV || signal == libc::SIGILL {
        match registry::with_image(rip, |image| emulate_cr8(image, rip, gregs)) {
            Some(Emulation::Done) => return,
            Some(Emulation::NoSource) => cr8_without_source = true,
            Some(Emulation::NotCr8) | None => {}
        }
    }
    let overflow = signal == libc::SIGSEGV && stack::in_guard(address);
    let in_image = registry::with_image(rip, |_| ()).is_some();
    if overflow || in_image || chkstk::contains(rip) {
        report(&Fault {
            signal,
            rip,
            rsp,
            address,
            overflow,
            cr8_without_source,
        });
    }
    chain(signal, info, context);
}

/// Passes a fault that is not ours to the handler installed before ours.
fn chain(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS.get().and_then(|previous| {
        SIGNALS
            .iter()
            .position(|&s| s == signal)
            .and_then(|i| previous.get(i))
    });
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t.
    let user_sent = unsafe { (*info).si_code } <= 0;
    // A trap (`int3`) has already executed: returning would resume after it.
    let trap = signal == libc::SIGTRAP && !user_sent;
    let action = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        if action == libc::SIG_IGN && user_sent {
            return;
        }
        // Restore the default action: a hardware fault re-executes and terminates the
        // process the usual way; a signal sent by kill(2), and a trap, which does not
        // re-execute, are raised again (the kernel does not let a trap be ignored either).
        // SAFETY: all-zero is a valid `sigaction` (SIG_DFL, empty mask, no flags).
        let default: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: installs a valid action.
        unsafe { libc::sigaction(signal, &raw const default, ptr::null_mut()) };
        if user_sent || trap {
            // SAFETY: raise(3) is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
        return;
    }
    let flags = previous.map_or(0, |p| p.sa_flags);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO action holds a handler of this signature.
        let previous = unsafe {
            core::mem::transmute::<usize, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(
                action,
            )
        };
        previous(signal, info, context);
    } else {
        // SAFETY: an action without SA_SIGINFO holds a handler of this signature.
        let previous = unsafe { core::mem::transmute::<usize, extern "C" fn(c_int)>(action) };
        previous(signal);
    }
}

/// Runs `scenario` in a child process, expecting a fault in a loaded image, and returns the
/// line the fault handler printed (it starts with [`FAULT_MARKER`]).
///
/// `test_path` is the full name of the calling test as the test harness knows it (for example
/// `"faults::crash_is_reported"` for a test in `tests/faults.rs`); see
/// [`ebpf_ext_usersim::run_dying_child`].
///
/// # Panics
/// If the child finishes without a fault report, exits successfully, or cannot be started.
pub fn expect_fault(test_path: &str, scenario: impl FnOnce()) -> String {
    ebpf_ext_usersim::run_dying_child(test_path, FAULT_MARKER, "a fault", scenario)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cr8_moves() {
        assert_eq!(
            decode_cr8([0x44, 0x0F, 0x20, 0xC0]),
            Some(Cr8Access::Read(0))
        );
        assert_eq!(
            decode_cr8([0x4C, 0x0F, 0x20, 0xC1]),
            Some(Cr8Access::Read(1))
        );
        assert_eq!(
            decode_cr8([0x45, 0x0F, 0x20, 0xC3]),
            Some(Cr8Access::Read(11))
        );
        assert_eq!(
            decode_cr8([0x44, 0x0F, 0x22, 0xC1]),
            Some(Cr8Access::Write(1))
        );
        assert_eq!(
            decode_cr8([0x4D, 0x0F, 0x22, 0xC7]),
            Some(Cr8Access::Write(15))
        );
    }

    #[test]
    fn rejects_other_control_registers_and_instructions() {
        // mov rax, cr0 (no REX.R); mov rax, cr9 (reg = 1); not a REX prefix; not 0F 20/22.
        assert_eq!(decode_cr8([0x48, 0x0F, 0x20, 0xC0]), None);
        assert_eq!(decode_cr8([0x44, 0x0F, 0x20, 0xC8]), None);
        assert_eq!(decode_cr8([0x0F, 0x20, 0xC0, 0x90]), None);
        assert_eq!(decode_cr8([0x44, 0x0F, 0x21, 0xC0]), None);
        assert_eq!(decode_cr8([0x44, 0x0E, 0x20, 0xC0]), None);
    }

    #[test]
    fn report_line_fits_and_formats() {
        let mut line = Line {
            bytes: [0; 1024],
            len: 0,
        };
        write_report(
            &mut line,
            &Fault {
                signal: libc::SIGSEGV,
                rip: 0x10,
                rsp: 0,
                address: 0x20,
                overflow: false,
                cr8_without_source: false,
            },
        )
        .unwrap();
        let text = core::str::from_utf8(&line.bytes[..line.len]).unwrap();
        assert_eq!(text, "fault: SIGSEGV in host code at 0x10, address 0x20\n");
    }
}
