//! Loads an x64 Windows kernel driver image (a `.sys` file as lld-link or link.exe produce
//! with `/DRIVER`: PE32+, AMD64, subsystem NATIVE) into the current Linux process and runs it
//! against [`ebpf-ext-usersim`](ebpf_ext_usersim). This is the third level of proof of the
//! SDK: the very bytes that ship, driven by the same host tests.
//!
//! # What it does
//!
//! 1. [`parse`] validates the file without trusting any field (signatures, machine, PE32+,
//!    subsystem, alignments, sizes, the section table and every section's file and virtual
//!    range, the import, base relocation, exception and export directories, the entry point)
//!    and returns a [`PeImage`], or an [`Error`] naming what is malformed. No panic, no
//!    out-of-bounds read, whatever the input.
//! 2. [`load`] maps `SizeOfImage` bytes anonymously at an address the kernel chooses (so not
//!    at `ImageBase`), copies the headers and sections, applies the base relocations (DIR64;
//!    ABSOLUTE is padding; anything else is an error), binds every import by module and name
//!    through a resolver (every unresolved `module!name` is listed in one error), and gives
//!    each section its protection (R, RW or RX; W+X is rejected by [`parse`]). Gaps between
//!    sections are `PROT_NONE`. [`usersim_resolver`] binds to usersim's exports.
//! 3. What the kernel provides implicitly: `__chkstk` (imported from `ntoskrnl.exe`) is
//!    supplied by the loader unless the resolver binds it, and so are `memcpy`, `memmove`,
//!    `memset` and `memcmp` (the host C library's use the System V convention). CR8 moves
//!    (`mov reg, cr8`, `mov cr8, reg`: how driver code reads and sets the IRQL) fault in
//!    ring 3; a signal handler emulates them for code inside a loaded image, through the
//!    callbacks given to [`set_irql_source`] ([`use_usersim_irql`] for usersim's simulated
//!    IRQL).
//! 4. [`LoadedImage::call_driver_entry`], [`LoadedImage::call`] and [`call_win64`] call into
//!    the image with the Windows x64 convention on a separate [`KERNEL_STACK_SIZE`] (24 KiB)
//!    stack with a guard page below it, as a driver would run on Windows. Callbacks the
//!    driver registers (dispatch routines, NMR, ETW and process notify callbacks, work items)
//!    are called by usersim, on its own threads; with [`usersim_callback_stack`] registered
//!    ([`ebpf_ext_usersim::set_callback_stack`]) they run on such a stack too.
//! 5. Dropping the [`LoadedImage`] unmaps it. [`symbolize`] names the image, RVA and function
//!    of any address inside a loaded image.
//!
//! # Faults
//!
//! A fault (SIGSEGV, SIGILL, SIGBUS, SIGFPE, or SIGTRAP from an `int3`, which Windows
//! bug-checks without a kernel debugger) whose instruction is in a loaded image, or in
//! the loader's `__chkstk` called from one, and any fault on a kernel stack's guard page, is
//! reported on stderr as one line and the process aborts, as a bug check halts a machine:
//!
//! ```text
//! fault: SIGSEGV in sample.sys+0x1234 (DriverEntry+0x34), address 0x0
//! fault: stack overflow in sample.sys+0x1200 (recurse)
//! fault: stack overflow in __chkstk called from sample.sys+0x1310 (function at 0x1300+0x10)
//! ```
//!
//! Functions are found from the exception directory (`.pdata`, which covers every function
//! with a frame) and named by the image's exports, its entry point (`DriverEntry`) and, when
//! [`load_file`] finds `<image>.pdb` beside the image and it is the image's ([`Pdb::matches`]),
//! the procedures of the PDB. Faults elsewhere go to the handler installed before (Rust's own
//! stack-overflow handler, or the default action). Tests check a fault in a child process
//! with [`expect_fault`].
//!
//! # Limits
//!
//! - Host only: Linux on x86_64.
//! - Only the CR8 moves are emulated. Other privileged instructions (`cli`, `sti`, `rdmsr`,
//!   `invlpg`…) and accesses to the processor block through GS (`gs:[0x188]` for the
//!   current thread, `KeGetCurrentProcessorNumber` inlines, `__readgsqword`) are **not**
//!   emulated: they are reported as faults. On Linux GS is 0 in user mode.
//! - Structured exception handling is not supported (no unwinding through driver frames);
//!   TLS and delay-load directories are ignored; imports by ordinal are rejected.
//! - The signal handler is process-wide and installed once; it chains to the previous one
//!   for faults that are not the images'.
//! - Sections keep their memory after `DriverEntry` (INIT and discardable sections are not
//!   freed).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]
#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host-only crate: std is its allocator and runtime"
)]

extern crate alloc;

mod chkstk;
mod error;
mod fault;
mod image;
mod pdb_names;
pub mod pe;
mod registry;
mod stack;
mod supplied;
mod usersim;

pub use error::{Error, Result};
pub use fault::{FAULT_MARKER, clear_irql_source, expect_fault, set_irql_source};
pub(crate) use image::errno;
pub use image::{
    LoadOptions, LoadedImage, load, load_file, load_file_bytes, load_file_parsed, load_with,
};
pub use pdb_names::Pdb;
pub use pe::{CodeView, PeImage, parse};
pub use registry::{Function, Symbol, image_dll_characteristics, symbolize};
pub use stack::{GUARD_SIZE, KERNEL_STACK_SIZE, call_win64, run_on_kernel_stack};
pub use usersim::{
    use_usersim_irql, usersim_callback_stack, usersim_image_flags, usersim_resolver,
};
