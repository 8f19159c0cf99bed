//! Faults in images are reported with module, RVA and function, then abort; stack overflows
//! on the kernel stack are caught by its guard page; other faults are left alone.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use ebpf_ext_pe_loader::{
    KERNEL_STACK_SIZE, LoadedImage, call_win64, expect_fault, load, run_on_kernel_stack,
    usersim_callback_stack, usersim_resolver,
};
use support::{Built, Spec, build};

fn loaded() -> (Built, LoadedImage) {
    let built = build(&Spec::default());
    let image = load("test.sys", &built.bytes, usersim_resolver).expect("load");
    (built, image)
}

fn rva(name: &str) -> u32 {
    build(&Spec::default()).rva(name)
}

#[test]
fn null_dereference_is_reported_with_module_rva_and_function() {
    let line = expect_fault(
        "null_dereference_is_reported_with_module_rva_and_function",
        || {
            let (built, image) = loaded();
            // SAFETY: crashes the child, which is the point.
            let _ = unsafe { image.call(built.rva("crash"), []) };
        },
    );
    // `xor eax, eax` is 2 bytes; the load faults.
    assert_eq!(
        line,
        format!(
            "fault: SIGSEGV in test.sys+{:#x} (crash+0x2), address 0x0",
            rva("crash") + 2
        )
    );
}

#[test]
fn illegal_instruction_is_reported() {
    let line = expect_fault("illegal_instruction_is_reported", || {
        let (built, image) = loaded();
        // SAFETY: crashes the child, which is the point.
        let _ = unsafe { image.call(built.rva("illegal"), []) };
    });
    assert_eq!(
        line,
        format!("fault: SIGILL in test.sys+{:#x} (illegal)", rva("illegal"))
    );
}

#[test]
fn a_breakpoint_is_reported_at_its_int3() {
    let line = expect_fault("a_breakpoint_is_reported_at_its_int3", || {
        let (built, image) = loaded();
        // SAFETY: traps in the child, which is the point.
        let _ = unsafe { image.call(built.rva("breakpoint"), []) };
    });
    assert_eq!(
        line,
        format!(
            "fault: SIGTRAP (breakpoint) in test.sys+{:#x} (breakpoint+0x1)",
            rva("breakpoint") + 1
        )
    );
}

#[test]
fn fault_on_an_ordinary_thread_is_reported() {
    let line = expect_fault("fault_on_an_ordinary_thread_is_reported", || {
        let (built, image) = loaded();
        let function = image.address(built.rva("crash")).unwrap();
        std::thread::spawn(move || {
            // SAFETY: a win64 function without arguments; crashes the child, the point.
            let f = unsafe { core::mem::transmute::<usize, extern "win64" fn()>(function) };
            f();
        })
        .join()
        .unwrap();
    });
    assert!(line.starts_with("fault: SIGSEGV in test.sys+"), "{line}");
    assert!(line.contains("(crash+0x2)"), "{line}");
}

#[test]
fn stack_overflow_hits_the_guard_page() {
    let line = expect_fault("stack_overflow_hits_the_guard_page", || {
        let (built, image) = loaded();
        // SAFETY: recurses without end; the child dies, the point.
        let _ = unsafe { image.call(built.rva("recurse"), []) };
    });
    assert_eq!(
        line,
        format!(
            "fault: stack overflow in test.sys+{:#x} (recurse)",
            rva("recurse")
        )
    );
}

/// The calling thread's stack, as pthreads reports it.
fn thread_stack() -> core::ops::Range<usize> {
    // SAFETY: all-zero is a valid `pthread_attr_t` for pthread_getattr_np to initialise.
    let mut attr: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    // SAFETY: no precondition.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: the calling thread and a writable attribute object.
    let got = unsafe { libc::pthread_getattr_np(me, &raw mut attr) };
    assert_eq!(got, 0);
    let (mut low, mut size) = (core::ptr::null_mut(), 0);
    // SAFETY: an initialised attribute object and writable outputs.
    let got = unsafe { libc::pthread_attr_getstack(&raw const attr, &raw mut low, &raw mut size) };
    assert_eq!(got, 0);
    // SAFETY: initialised above and destroyed once.
    unsafe { libc::pthread_attr_destroy(&raw mut attr) };
    low as usize..low as usize + size
}

#[test]
fn a_callback_into_an_image_runs_on_a_kernel_stack() {
    let (built, image) = loaded();
    let routine = image.address(built.rva("read_global")).unwrap();
    let mut at = 0;
    let claimed = usersim_callback_stack(routine, &mut || {
        let local = 0_u8;
        at = core::hint::black_box(&raw const local) as usize;
    });
    assert!(claimed);
    assert_ne!(at, 0, "the call ran");
    assert!(
        !thread_stack().contains(&at),
        "ran on the thread's own stack: {at:#x}"
    );

    // A callback made from one shares its stack, as on Windows.
    let (mut outer, mut inner) = (0, 0);
    usersim_callback_stack(routine, &mut || {
        let local = 0_u8;
        outer = core::hint::black_box(&raw const local) as usize;
        usersim_callback_stack(routine, &mut || {
            let local = 0_u8;
            inner = core::hint::black_box(&raw const local) as usize;
        });
    });
    assert!(
        inner < outer && outer - inner < KERNEL_STACK_SIZE,
        "a nested callback got a stack of its own: {outer:#x}, then {inner:#x}"
    );

    let mut ran = false;
    let host = thread_stack as *const () as usize;
    assert!(
        !usersim_callback_stack(host, &mut || ran = true),
        "a routine outside every image is not claimed"
    );
    assert!(!ran, "and not run");
}

/// Recurses 200 times with a frame of at least 1 KiB: 200 KiB of stack or more, far more than
/// a kernel stack, less than the 2 MiB of a test's thread.
fn deep(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 128]);
    if depth == 200 {
        return frame[0];
    }
    deep(depth + 1) + frame[usize::try_from(depth % 128).unwrap()]
}

#[test]
fn a_callback_too_deep_for_the_kernel_stack_overflows_its_guard_page() {
    // On the test's own stack the recursion returns (the sum of its frames' values).
    assert_eq!(deep(0), (0..=200).sum::<u64>());
    let line = expect_fault(
        "a_callback_too_deep_for_the_kernel_stack_overflows_its_guard_page",
        || {
            run_on_kernel_stack(&mut || {
                core::hint::black_box(deep(0));
            });
        },
    );
    assert!(
        line.starts_with("fault: stack overflow in host code"),
        "{line}"
    );
    // The recursion needs 200 KiB or more: more than the kernel stack.
    const { assert!(KERNEL_STACK_SIZE < 200 << 10) };
}

#[test]
fn stack_overflow_is_caught_on_a_thread_without_an_alternate_signal_stack() {
    let line = expect_fault(
        "stack_overflow_is_caught_on_a_thread_without_an_alternate_signal_stack",
        || {
            let (built, image) = loaded();
            let recurse = built.rva("recurse");
            std::thread::spawn(move || {
                let disable = libc::stack_t {
                    ss_sp: core::ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                // SAFETY: disables this thread's alternate signal stack (std's stays mapped
                // until the thread exits); the loader must install its own.
                unsafe { libc::sigaltstack(&raw const disable, core::ptr::null_mut()) };
                // SAFETY: recurses without end; the child dies, the point.
                let _ = unsafe { image.call(recurse, []) };
            })
            .join()
            .unwrap();
        },
    );
    assert_eq!(
        line,
        format!(
            "fault: stack overflow in test.sys+{:#x} (recurse)",
            rva("recurse")
        )
    );
}

#[test]
fn stack_overflow_in_chkstk_names_its_caller() {
    let line = expect_fault("stack_overflow_in_chkstk_names_its_caller", || {
        let (built, image) = loaded();
        // SAFETY: a 64 KiB frame on a 24 KiB stack: __chkstk hits the guard page.
        let _ = unsafe { image.call(built.rva("big_frame"), [0x1_0000]) };
    });
    // The call to __chkstk ends 12 bytes into big_frame.
    assert_eq!(
        line,
        format!(
            "fault: stack overflow in __chkstk called from test.sys+{:#x} (big_frame+0xc)",
            rva("big_frame") + 12
        )
    );
}

#[test]
fn stack_overflow_in_host_code_on_a_kernel_stack_is_caught() {
    extern "win64" fn deep(depth: usize) -> usize {
        if core::hint::black_box(depth) == usize::MAX {
            return 0;
        }
        let buffer = core::hint::black_box([0_u8; 512]);
        deep(depth + 1) + usize::from(buffer[depth % 512])
    }
    let line = expect_fault(
        "stack_overflow_in_host_code_on_a_kernel_stack_is_caught",
        || {
            let _ = loaded();
            // SAFETY: recurses until the guard page; the child dies, the point.
            let _ = unsafe { call_win64(deep as *const () as usize, [0]) };
        },
    );
    assert!(
        line.starts_with("fault: stack overflow in host code at 0x"),
        "{line}"
    );
}

const OTHER_CHILD: &str = "EBPF_EXT_PE_LOADER_TEST_OTHER_FAULT";

/// Runs `test` again in a child process, where `fault` runs outside any image with the
/// loader's handler installed, and checks that the default action of `signal` ended it and
/// the handler reported nothing. In the child, this runs `fault` and exits.
fn dies_by_default_action(test: &str, signal: i32, fault: fn()) {
    if std::env::var_os(OTHER_CHILD).is_some() {
        let (_built, image) = loaded();
        fault();
        drop(image);
        std::process::exit(0);
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env(OTHER_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), Some(signal), "{stderr}");
    assert!(!stderr.contains("fault: "), "{stderr}");
}

#[test]
fn faults_outside_images_go_to_the_previous_handler() {
    dies_by_default_action(
        "faults_outside_images_go_to_the_previous_handler",
        libc::SIGSEGV,
        // SAFETY: deliberately faults outside any image: the default action must kill us.
        || unsafe {
            core::ptr::read_volatile(core::ptr::null::<u8>().wrapping_add(8));
        },
    );
}

#[test]
fn a_breakpoint_outside_images_still_ends_the_process() {
    dies_by_default_action(
        "a_breakpoint_outside_images_still_ends_the_process",
        libc::SIGTRAP,
        // SAFETY: a breakpoint in host code: the default action must still kill us (a trap
        // does not re-execute, so the handler raises it again).
        || unsafe { core::arch::asm!("int3") },
    );
}
