//! CR8 emulation: driver code reads and writes usersim's simulated IRQL.

mod support;

use ebpf_ext_pe_loader::{
    LoadedImage, clear_irql_source, expect_fault, load, use_usersim_irql, usersim_resolver,
};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};
use ebpf_ext_usersim::{Kernel, exports::all::KeGetCurrentIrql, set_current_irql};
use support::{Built, Spec, build};

fn loaded() -> (Built, LoadedImage) {
    let built = build(&Spec::default());
    let image = load("test.sys", &built.bytes, usersim_resolver).expect("load");
    (built, image)
}

fn read_irql(built: &Built, image: &LoadedImage) -> usize {
    // SAFETY: read_irql only reads CR8 (emulated).
    unsafe { image.call(built.rva("read_irql"), []) }.expect("inside the image")
}

#[test]
fn cr8_reads_return_the_usersim_irql() {
    let _kernel = Kernel::new();
    use_usersim_irql();
    let (built, image) = loaded();
    for irql in [PASSIVE_LEVEL, 1, DISPATCH_LEVEL, HIGH_LEVEL] {
        set_current_irql(irql);
        assert_eq!(read_irql(&built, &image), usize::from(irql));
    }
}

#[test]
fn cr8_writes_set_the_usersim_irql() {
    let _kernel = Kernel::new();
    use_usersim_irql();
    let (built, image) = loaded();
    // SAFETY: write_irql moves its argument to CR8 and reads it back (both emulated).
    let read_back = unsafe { image.call(built.rva("write_irql"), [usize::from(DISPATCH_LEVEL)]) };
    assert_eq!(read_back, Some(usize::from(DISPATCH_LEVEL)));
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: as above.
    let _ = unsafe { image.call(built.rva("write_irql"), [usize::from(PASSIVE_LEVEL)]) };
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

#[test]
fn cr8_is_emulated_on_any_thread_and_stack() {
    let kernel = Kernel::new();
    use_usersim_irql();
    let (built, image) = loaded();
    let function = image.address(built.rva("read_irql")).unwrap();
    let irql = kernel
        .spawn(move || {
            set_current_irql(DISPATCH_LEVEL);
            // SAFETY: read_irql is a win64 function without arguments; called directly on this
            // thread's own stack, as usersim calls a driver's callbacks.
            let f =
                unsafe { core::mem::transmute::<usize, extern "win64" fn() -> usize>(function) };
            f()
        })
        .join()
        .unwrap();
    assert_eq!(irql, usize::from(DISPATCH_LEVEL));
    drop(image);
}

#[test]
fn cr8_without_an_irql_source_is_a_fault() {
    let line = expect_fault("cr8_without_an_irql_source_is_a_fault", || {
        let (built, image) = loaded();
        clear_irql_source();
        read_irql(&built, &image);
    });
    let rva = build(&Spec::default()).rva("read_irql");
    assert_eq!(
        line,
        format!(
            "fault: SIGSEGV in test.sys+{rva:#x} (read_irql): CR8 access with no IRQL source (set_irql_source)"
        )
    );
}

#[test]
fn other_control_registers_are_not_emulated() {
    let line = expect_fault("other_control_registers_are_not_emulated", || {
        let _kernel = Kernel::new();
        use_usersim_irql();
        let (built, image) = loaded();
        // SAFETY: faults in the child, which is the point.
        let _ = unsafe { image.call(built.rva("read_cr0"), []) };
    });
    let rva = build(&Spec::default()).rva("read_cr0");
    assert!(
        line.starts_with(&format!("fault: SIGSEGV in test.sys+{rva:#x} (read_cr0)")),
        "{line}"
    );
}
