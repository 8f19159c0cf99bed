//! Calls into an image on a kernel-sized stack with a guard page below it.
//!
//! Each thread keeps one stack of [`KERNEL_STACK_SIZE`] bytes above a `PROT_NONE` guard page
//! and reuses it; a nested [`call_win64`] or [`run_on_kernel_stack`] (driver code calling back
//! into Rust that calls the driver again directly) gets a fresh one. Callbacks that usersim
//! makes through [`usersim_callback_stack`](crate::usersim_callback_stack) run in place when
//! the thread is already on a kernel stack. While a call runs, the thread records where its
//! guard page is so the fault handler can tell a stack overflow from any other fault.

use core::arch::global_asm;
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;

use crate::error::{Error, Result};
use crate::fault;

pub use ebpf_ext_sys::ntddk::KERNEL_STACK_SIZE;

/// Size of the guard page below each stack.
pub const GUARD_SIZE: usize = 0x1000;
/// Size of the alternate signal stack the loader installs on threads that have none.
const ALT_STACK_SIZE: usize = 0x1_0000;

global_asm!(
    ".pushsection .text.ebpf_ext_pe_loader_call_on_stack,\"ax\",@progbits",
    ".globl ebpf_ext_pe_loader_call_on_stack",
    ".hidden ebpf_ext_pe_loader_call_on_stack",
    ".p2align 4",
    // System V: rdi = function, rsi = pointer to 4 arguments, rdx = 16-aligned stack top.
    "ebpf_ext_pe_loader_call_on_stack:",
    "    push rbp",
    "    mov rbp, rsp",
    "    mov rax, rdi",
    "    mov r11, rsi",
    "    mov rsp, rdx",
    // Home space for the four register arguments; RSP stays 16-aligned at the call.
    "    sub rsp, 32",
    "    mov rcx, [r11]",
    "    mov rdx, [r11 + 8]",
    "    mov r8, [r11 + 16]",
    "    mov r9, [r11 + 24]",
    // RBP is callee-saved in the Windows x64 convention too, so it still holds our frame.
    "    call rax",
    "    mov rsp, rbp",
    "    pop rbp",
    "    ret",
    ".popsection",
);

unsafe extern "C" {
    /// Calls the `extern "win64"` function `function` with `args[0..4]` on the stack whose
    /// top is `stack_top`, and returns its RAX.
    fn ebpf_ext_pe_loader_call_on_stack(
        function: usize,
        args: *const usize,
        stack_top: usize,
    ) -> usize;
}

/// A mapped stack with a guard page below it.
///
/// # Invariants
/// `base..base + GUARD_SIZE + KERNEL_STACK_SIZE` is a mapping this value owns; its lowest
/// page is `PROT_NONE`, the rest read-write.
struct KernelStack {
    base: usize,
}

impl KernelStack {
    fn new() -> Result<KernelStack> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                GUARD_SIZE + KERNEL_STACK_SIZE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::Map {
                errno: crate::errno(),
            });
        }
        // INVARIANT: the mapping is ours; the guard stays PROT_NONE, the stack becomes RW.
        let stack = KernelStack {
            base: base as usize,
        };
        // SAFETY: the range lies inside the mapping just created, which nothing else uses.
        let rc = unsafe {
            libc::mprotect(
                (stack.base + GUARD_SIZE) as *mut c_void,
                KERNEL_STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(Error::Protect {
                errno: crate::errno(),
            });
        }
        Ok(stack)
    }

    fn top(&self) -> usize {
        self.base + GUARD_SIZE + KERNEL_STACK_SIZE
    }

    fn guard(&self) -> (usize, usize) {
        (self.base, self.base + GUARD_SIZE)
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and no call runs on it
        // (a stack in use is never dropped: it is taken out of the cache for the call).
        unsafe {
            libc::munmap(self.base as *mut c_void, GUARD_SIZE + KERNEL_STACK_SIZE);
        }
    }
}

/// An alternate signal stack the loader installed on this thread.
///
/// # Invariants
/// `base..base + ALT_STACK_SIZE` is a mapping this value owns, registered with
/// `sigaltstack` for this thread.
struct AltStack {
    base: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let disable = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: `disable` is a valid stack_t; this runs on the owning thread at exit, not
        // inside a signal handler.
        unsafe { libc::sigaltstack(&raw const disable, ptr::null_mut()) };
        // SAFETY: the mapping is owned by this value (type invariant) and no longer registered.
        unsafe { libc::munmap(self.base as *mut c_void, ALT_STACK_SIZE) };
    }
}

thread_local! {
    static CACHED: Cell<Option<KernelStack>> = const { Cell::new(None) };
    static ALT_STACK: Cell<Option<AltStack>> = const { Cell::new(None) };
    static ALT_CHECKED: Cell<bool> = const { Cell::new(false) };
    /// The guard page of the stack the current call into an image runs on.
    static GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Whether `address` is in the guard page of the calling thread's current kernel stack.
///
/// Async-signal-safe: reads a `const`-initialised thread-local without destructor.
pub(crate) fn in_guard(address: usize) -> bool {
    GUARD
        .try_with(|g| {
            let (low, high) = g.get();
            (low..high).contains(&address)
        })
        .unwrap_or(false)
}

/// Whether the calling thread runs on a kernel stack now (inside [`call_win64`]).
pub(crate) fn on_kernel_stack() -> bool {
    GUARD.get() != (0, 0)
}

/// Makes sure the thread has an alternate signal stack, so that the fault handler can run
/// when the stack itself overflowed. Threads started by `std` have one already.
fn ensure_alt_stack() {
    if ALT_CHECKED.get() {
        return;
    }
    ALT_CHECKED.set(true);
    let mut current = libc::stack_t {
        ss_sp: ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: queries the current alternate stack into a valid stack_t.
    let rc = unsafe { libc::sigaltstack(ptr::null(), &raw mut current) };
    if rc != 0 || current.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return;
    }
    let stack = libc::stack_t {
        ss_sp: base,
        ss_flags: 0,
        ss_size: ALT_STACK_SIZE,
    };
    // SAFETY: `stack` describes the mapping just created, which stays mapped until the
    // AltStack below disables it at thread exit.
    unsafe { libc::sigaltstack(&raw const stack, ptr::null_mut()) };
    // INVARIANT: the mapping is owned and registered.
    ALT_STACK.set(Some(AltStack {
        base: base as usize,
    }));
}

/// Calls the `extern "win64"` function at `function` with up to four pointer-sized arguments,
/// on a [`KERNEL_STACK_SIZE`] stack with a guard page below it, and returns its RAX.
///
/// A stack overflow hits the guard page and is reported by the fault handler
/// (`fault: stack overflow in <module>+0x<rva> ...`) before the process aborts.
///
/// # Safety
/// `function` is the address of code that follows the Windows x64 calling convention, takes
/// at most `N` integer or pointer arguments, and does whatever it does safely with `args`
/// (for driver code: the arguments satisfy its documented contract).
///
/// # Panics
/// If no stack can be mapped (the system is out of memory or mappings).
#[must_use]
pub unsafe fn call_win64<const N: usize>(function: usize, args: [usize; N]) -> usize {
    const {
        assert!(N <= 4, "win64 passes 4 arguments in registers");
    }
    let mut registers = [0_usize; 4];
    for (slot, arg) in registers.iter_mut().zip(args) {
        *slot = arg;
    }
    fault::install();
    ensure_alt_stack();
    let stack = match CACHED.take() {
        Some(stack) => stack,
        None => KernelStack::new().unwrap_or_else(|e| panic!("cannot map a kernel stack: {e}")),
    };
    let previous_guard = GUARD.replace(stack.guard());
    // SAFETY: the caller guarantees `function` follows the win64 convention; `registers` is
    // four readable words; the stack top is 16-aligned (page-aligned) and the stack is owned
    // by this call until it returns.
    let result =
        unsafe { ebpf_ext_pe_loader_call_on_stack(function, registers.as_ptr(), stack.top()) };
    GUARD.set(previous_guard);
    CACHED.set(Some(stack));
    result
}

/// `call`, called from [`run_on_kernel_stack`]'s stack.
extern "win64" fn run_call(call: usize) -> usize {
    // SAFETY: `run_on_kernel_stack` passes the address of its `&mut dyn FnMut()`, live and
    // not otherwise used until this returns.
    let call = unsafe { &mut *(call as *mut &mut dyn FnMut()) };
    call();
    0
}

/// Runs `call` on a [`KERNEL_STACK_SIZE`] stack with a guard page below it, as
/// [`call_win64`] runs a function of an image: everything `call` runs, the image code it
/// calls and the host code that calls back, shares that stack, and an overflow is reported
/// by the fault handler. A panic in `call` aborts the process (nothing unwinds across the
/// stack switch).
///
/// # Panics
/// If no stack can be mapped (the system is out of memory or mappings).
pub fn run_on_kernel_stack(mut call: &mut dyn FnMut()) {
    let call_address = (&raw mut call) as usize;
    // SAFETY: `run_call` follows the win64 convention and takes one argument, the address of
    // a live `&mut dyn FnMut()` that nothing else uses during the call.
    let _ = unsafe { call_win64(run_call as *const () as usize, [call_address]) };
}
