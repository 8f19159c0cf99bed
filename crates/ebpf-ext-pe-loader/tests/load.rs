//! Loading built images: relocation at random addresses, import binding (test resolver and
//! usersim), `__chkstk`, protections, symbolization and unloading.

mod support;

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::time::Instant;

use ebpf_ext_pe_loader::{
    Error, LoadOptions, call_win64, load, load_with, parse, symbolize, usersim_resolver,
};
use ebpf_ext_sys::wdm::POOL_FLAG_NON_PAGED;
use ebpf_ext_usersim::{DriverObject, Kernel};
use support::{
    DATA, ENTRY_ADDEND, FILE_HEADER, GLOBAL_VALUE, IMAGE_BASE, RDATA, SCN_DATA, Spec, TEXT,
    XorShift, build, sec,
};

const TAG: u32 = u32::from_le_bytes(*b"PeLd");

extern "win64" fn add4(a: usize, b: usize, c: usize, d: usize) -> usize {
    a + 2 * b + 3 * c + 4 * d
}

extern "win64" fn dummy() -> usize {
    0
}

fn test_resolver(module: &str, name: &str) -> Option<usize> {
    match (module.to_ascii_lowercase().as_str(), name) {
        ("test.dll", "add4") => Some(add4 as *const () as usize),
        ("ntoskrnl.exe", "KeGetCurrentIrql") => Some(dummy as *const () as usize),
        _ => None,
    }
}

fn test_spec() -> Spec {
    Spec::with_imports(&[
        ("test.dll", &["add4"]),
        ("ntoskrnl.exe", &["KeGetCurrentIrql", "__chkstk"]),
    ])
}

#[test]
fn driver_entry_returns_its_argument_plus_a_constant() {
    let built = build(&test_spec());
    let image = load("test.sys", &built.bytes, test_resolver).expect("load");
    assert_ne!(image.base() as u64, IMAGE_BASE);
    assert_eq!(
        image.entry_point(),
        image.base() + built.rva("DriverEntry") as usize
    );
    // SAFETY: the test DriverEntry only adds a constant to its first argument.
    let status = unsafe { image.call_driver_entry(0x100 as *mut c_void, ptr::null()) };
    assert_eq!(status, i32::try_from(0x100 + ENTRY_ADDEND).unwrap());
}

#[test]
fn relocations_hold_at_random_addresses() {
    let built = build(&test_spec());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut bases = Vec::new();
    let mut images = Vec::new();
    let mut at_hint = 0;
    for round in 0..40 {
        let mut hint_used = None;
        let options = if round % 2 == 0 {
            LoadOptions::new()
        } else {
            // Page-aligned, anywhere in the lower 47-bit half (the kernel moves it if taken).
            let hint = usize::try_from(rng.next() % 0x7000_0000_0000).unwrap() & !0xFFFF;
            hint_used = Some(hint);
            LoadOptions::new().address_hint(hint)
        };
        let image = load_with("test.sys", &built.bytes, &options, test_resolver).expect("load");
        let base = image.base();
        assert_ne!(base as u64, IMAGE_BASE);
        if hint_used == Some(base) {
            at_hint += 1;
        }
        let rva = |name| built.rva(name);
        // SAFETY: get_global_pointer only reads .data.
        let pointer = unsafe { image.call(rva("get_global_pointer"), []) };
        // SAFETY: read_global only reads .data and .rdata.
        let value = unsafe { image.call(rva("read_global"), []) };
        assert_eq!(pointer, Some(base + built.global_rva as usize));
        assert_eq!(value.map(|v| v as u64), Some(GLOBAL_VALUE));
        bases.push(base);
        images.push(image);
    }
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 40, "every live image has its own address");
    assert!(
        at_hint >= 10,
        "most random hints are free: {at_hint} of 20 honoured"
    );
}

#[test]
fn imports_bind_through_the_resolver() {
    let built = build(&test_spec());
    let image = load("test.sys", &built.bytes, test_resolver).expect("load");
    // SAFETY: call_add4 forwards its four arguments to add4.
    let sum = unsafe { image.call(built.rva("call_add4"), [1, 10, 100, 1000]) };
    assert_eq!(sum, Some(1 + 20 + 300 + 4000));
}

#[test]
fn module_names_match_case_insensitively() {
    let built = build(&Spec::with_imports(&[
        ("NTOSKRNL.EXE", &["ExAllocatePool2"]),
        ("netio.sys", &["NmrDeregisterProvider"]),
        ("KSECDD.SYS", &["SecLookupAccountSid"]),
    ]));
    let mut seen = Vec::new();
    let image = load("test.sys", &built.bytes, |module, name| {
        seen.push(format!("{module}!{name}"));
        usersim_resolver(module, name)
    })
    .expect("load");
    assert_eq!(
        seen,
        [
            "NTOSKRNL.EXE!ExAllocatePool2",
            "netio.sys!NmrDeregisterProvider",
            "KSECDD.SYS!SecLookupAccountSid"
        ]
    );
    drop(image);
    assert_eq!(
        usersim_resolver("ksecdd.sys", "SecLookupAccountSid"),
        Some(ebpf_ext_usersim::exports::all::SecLookupAccountSid as *const () as usize),
        "ksecdd.sys's export binds to usersim's"
    );
    assert_eq!(
        usersim_resolver("ntoskrnl.exe", "SecLookupAccountSid"),
        None,
        "and only from its own module"
    );
}

#[test]
fn usersim_pool_through_the_image() {
    let kernel = Kernel::new();
    kernel.bind_current_thread();
    let built = build(&Spec::default());
    let image = load("test.sys", &built.bytes, usersim_resolver).expect("load");
    let before = kernel.allocation_count();
    let flags = usize::try_from(POOL_FLAG_NON_PAGED).unwrap();
    // SAFETY: the thunk forwards to usersim's ExAllocatePool2 with valid arguments.
    let block = unsafe { image.call(built.rva("call_ExAllocatePool2"), [flags, 64, TAG as usize]) }
        .expect("rva inside the image");
    assert_ne!(block, 0);
    assert_eq!(kernel.allocation_count(), before + 1);
    // SAFETY: frees the block just allocated, with its tag.
    let _ = unsafe { image.call(built.rva("call_ExFreePoolWithTag"), [block, TAG as usize]) };
    kernel.assert_no_leaks();
}

#[test]
fn unresolved_imports_are_all_listed() {
    let built = build(&Spec::with_imports(&[
        (
            "ntoskrnl.exe",
            &["ExAllocatePool2", "NoSuchRoutine", "__chkstk"],
        ),
        ("NETIO.SYS", &["NmrRegisterProvider", "NmrMissing"]),
        ("HAL.dll", &["KeStallExecutionProcessor"]),
    ]));
    let error = load("test.sys", &built.bytes, usersim_resolver).unwrap_err();
    assert_eq!(
        error,
        Error::UnresolvedImports(vec![
            "ntoskrnl.exe!NoSuchRoutine".to_owned(),
            "NETIO.SYS!NmrMissing".to_owned(),
            "HAL.dll!KeStallExecutionProcessor".to_owned(),
        ])
    );
    let message = error.to_string();
    assert!(message.contains("ntoskrnl.exe!NoSuchRoutine, NETIO.SYS!NmrMissing, HAL.dll!"));
}

#[test]
fn a_zero_address_counts_as_unresolved() {
    let built = build(&test_spec());
    let error = load("test.sys", &built.bytes, |_, _| Some(0)).unwrap_err();
    assert_eq!(
        error,
        Error::UnresolvedImports(vec![
            "test.dll!add4".to_owned(),
            "ntoskrnl.exe!KeGetCurrentIrql".to_owned()
        ])
    );
}

#[test]
fn chkstk_is_supplied_unless_the_resolver_binds_it() {
    let built = build(&test_spec());
    let mut asked = Vec::new();
    let image = load("test.sys", &built.bytes, |module, name| {
        asked.push(name.to_owned());
        test_resolver(module, name)
    })
    .expect("load");
    assert!(
        asked.contains(&"__chkstk".to_owned()),
        "the resolver is asked first"
    );
    for size in [0x10, 0x1000, 0x2345, 0x5000] {
        // SAFETY: big_frame probes and uses a frame of `size` bytes, within the 24 KiB stack.
        let result = unsafe { image.call(built.rva("big_frame"), [size]) };
        assert_eq!(result, Some(size));
    }
    drop(image);

    // A resolver that binds __chkstk wins (here to a routine of its own).
    let mut bound = None;
    let image = load("test.sys", &built.bytes, |module, name| {
        if name == "__chkstk" {
            bound = Some(dummy as *const () as usize);
            return bound;
        }
        test_resolver(module, name)
    })
    .expect("load");
    let iat = parse(&built.bytes).unwrap().imports()[1].imports[1].iat_rva;
    // SAFETY: the IAT slot lies inside the mapped image, readable.
    let slot = unsafe { ptr::read((image.base() + iat as usize) as *const usize) };
    assert_eq!(Some(slot), bound);
}

#[test]
fn memory_routines_are_supplied_in_the_windows_convention() {
    let built = build(&Spec::with_imports(&[(
        "ntoskrnl.exe",
        &["memset", "memcpy", "memmove", "memcmp"],
    )]));
    let image = load("test.sys", &built.bytes, |_, _| None).expect("load");
    let mut buffer = [0_u8; 16];
    let source = *b"0123456789abcdef";
    let call = |name: &str, args: [usize; 3]| {
        // SAFETY: the thunks forward to the C memory routines with buffers of this test.
        unsafe { image.call(built.rva(&format!("call_{name}")), args) }.unwrap()
    };
    let dst = buffer.as_mut_ptr() as usize;
    assert_eq!(call("memset", [dst, 0x15A, 16]), dst);
    assert_eq!(buffer, [0x5A; 16]);
    assert_eq!(call("memcpy", [dst, source.as_ptr() as usize, 16]), dst);
    assert_eq!(&buffer, &source);
    call("memmove", [dst + 1, dst, 15]);
    assert_eq!(&buffer, b"00123456789abcde");
    let order = call("memcmp", [dst, source.as_ptr() as usize, 16]);
    let eax = u32::try_from(order & 0xFFFF_FFFF).unwrap();
    assert_eq!(eax.cast_signed(), -1, "'0' - '1' in EAX");
}

#[test]
fn ordinal_imports_are_rejected() {
    let built = build(&Spec::with_imports(&[(
        "ntoskrnl.exe",
        &["ExAllocatePool2", "#17"],
    )]));
    let error = load("test.sys", &built.bytes, usersim_resolver).unwrap_err();
    assert_eq!(
        error,
        Error::ImportByOrdinal {
            module: "ntoskrnl.exe".to_owned(),
            ordinal: 17
        }
    );
}

#[test]
fn relocation_types_other_than_dir64_are_rejected() {
    let mut spec = test_spec();
    // IMAGE_REL_BASED_HIGHLOW at offset 8 of the .data page.
    spec.extra_relocations.push(0x3008);
    let built = build(&spec);
    parse(&built.bytes).expect("a HIGHLOW relocation is well-formed");
    let error = load("test.sys", &built.bytes, test_resolver).unwrap_err();
    assert_eq!(
        error,
        Error::UnsupportedRelocation {
            rva: built.sections[DATA].0 + 8,
            kind: 3
        }
    );
}

#[test]
fn stripped_relocations_are_rejected() {
    let mut built = build(&test_spec());
    let characteristics = built.u16(FILE_HEADER + 18);
    built.set_u16(FILE_HEADER + 18, characteristics | 1);
    let error = load("test.sys", &built.bytes, test_resolver).unwrap_err();
    assert_eq!(error, Error::RelocationsStripped);
}

#[test]
fn writable_and_executable_sections_are_rejected() {
    let mut built = build(&test_spec());
    let header = support::Built::section_header(TEXT) + sec::CHARACTERISTICS;
    built.set_u32(header, support::SCN_TEXT | 0x8000_0000);
    let error = load("test.sys", &built.bytes, test_resolver).unwrap_err();
    assert_eq!(
        error,
        Error::WritableAndExecutable {
            section: ".text".to_owned()
        }
    );
    let mut built = build(&test_spec());
    let header = support::Built::section_header(DATA) + sec::CHARACTERISTICS;
    built.set_u32(header, SCN_DATA | 0x2000_0000);
    assert!(matches!(
        load("test.sys", &built.bytes, test_resolver),
        Err(Error::WritableAndExecutable { section }) if section == ".data"
    ));
}

/// Whether `address` is readable and writable, as the kernel reports in /proc/self/maps.
fn protection_of(address: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let (range, rest) = line.split_once(' ').unwrap();
        let (low, high) = range.split_once('-').unwrap();
        let low = usize::from_str_radix(low, 16).unwrap();
        let high = usize::from_str_radix(high, 16).unwrap();
        if (low..high).contains(&address) {
            return rest[..4].to_owned();
        }
    }
    panic!("{address:#x} is not mapped");
}

#[test]
fn sections_get_their_protections() {
    let built = build(&test_spec());
    let image = load("test.sys", &built.bytes, test_resolver).expect("load");
    let at = |rva: u32| image.base() + rva as usize;
    assert_eq!(protection_of(at(0)), "r--p");
    assert_eq!(protection_of(at(built.sections[TEXT].0)), "r-xp");
    assert_eq!(protection_of(at(built.sections[RDATA].0)), "r--p");
    assert_eq!(protection_of(at(built.sections[DATA].0)), "rw-p");
    assert_eq!(image.size(), built.size_of_image as usize);
}

#[test]
fn symbolize_names_functions_and_forgets_unloaded_images() {
    // The table of loaded images is the process's: other tests running on other threads map
    // their images beside this one, or at its address once it is unloaded. A name of its own
    // tells this image apart.
    const NAME: &str = "symbolize.sys";
    let built = build(&test_spec());
    let image = load(NAME, &built.bytes, test_resolver).expect("load");
    let crash = image.base() + built.rva("crash") as usize;
    let symbol = symbolize(crash + 2).expect("inside the image");
    assert_eq!(symbol.module, NAME);
    assert_eq!(symbol.rva, built.rva("crash") + 2);
    let function = symbol.function.clone().expect("from .pdata");
    assert_eq!(function.start, built.rva("crash"));
    assert_eq!(function.name.as_deref(), Some("crash"));
    assert_eq!(
        symbol.to_string(),
        format!("{NAME}+{:#x} (crash+0x2)", built.rva("crash") + 2)
    );
    assert_eq!(image.symbolize(crash + 2), Some(symbol));
    assert_eq!(image.export("crash"), Some(crash));
    assert_eq!(image.export("nothing"), None);
    assert!(symbolize(image.base() + image.size()).is_none_or(|s| s.module != NAME));
    image.unload();
    assert!(symbolize(crash).is_none_or(|s| s.module != NAME));
}

#[test]
fn image_flags_are_known_by_address_while_loaded() {
    // A name of its own: once unloaded, another test's image may be mapped at its address.
    const NAME: &str = "flags.sys";
    let built = build(&test_spec());
    let image = load(NAME, &built.bytes, test_resolver).expect("load");
    let inside = image.base() + built.rva("crash") as usize;
    let flags = image.dll_characteristics();
    assert_eq!(
        ebpf_ext_pe_loader::image_dll_characteristics(inside),
        Some(flags)
    );
    assert_eq!(
        ebpf_ext_pe_loader::usersim_image_flags(inside),
        Some(flags & 0x0080 != 0)
    );
    image.unload();
    let someone_else = || symbolize(inside).is_some_and(|s| s.module != NAME);
    assert!(ebpf_ext_pe_loader::image_dll_characteristics(inside).is_none() || someone_else());
    assert!(ebpf_ext_pe_loader::usersim_image_flags(inside).is_none() || someone_else());
}

#[test]
fn without_exports_functions_are_named_by_start() {
    let mut spec = test_spec();
    spec.exports = false;
    let built = build(&spec);
    let image = load("test.sys", &built.bytes, test_resolver).expect("load");
    let crash = built.rva("crash");
    let symbol = symbolize(image.base() + crash as usize + 2).expect("inside the image");
    assert_eq!(
        symbol.to_string(),
        format!("test.sys+{:#x} (function at {crash:#x}+0x2)", crash + 2)
    );
    let entry = symbolize(image.entry_point()).expect("inside the image");
    assert_eq!(
        entry.function.and_then(|f| f.name).as_deref(),
        Some("DriverEntry")
    );
}

#[test]
fn call_win64_passes_four_arguments_on_a_kernel_stack() {
    extern "win64" fn stack_pointer(a: usize, b: usize, c: usize, d: usize) -> usize {
        let rsp: usize;
        // SAFETY: reads RSP only.
        unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
        assert_eq!((a, b, c, d), (1, 2, 3, 4));
        rsp
    }
    // SAFETY: a win64 function of this test.
    let rsp = unsafe { call_win64(stack_pointer as *const () as usize, [1, 2, 3, 4]) };
    // Near the top of a 24 KiB read-write stack with an inaccessible guard page below.
    let top = rsp.next_multiple_of(0x1000);
    assert!(top - rsp < 0x400, "rsp {rsp:#x} is near a fresh stack top");
    assert_eq!(protection_of(top - 1), "rw-p");
    assert_eq!(protection_of(top - 0x6000), "rw-p");
    assert_eq!(protection_of(top - 0x6000 - 1), "---p");
    // SAFETY: as above.
    let again = unsafe { call_win64(stack_pointer as *const () as usize, [1, 2, 3, 4]) };
    assert_eq!(rsp, again, "the thread reuses its kernel stack");
}

/// What the work item routine of [`an_image_kept_by_its_driver_object_outlives_its_work_items`]
/// shares with the test.
struct Returning {
    item: *mut ebpf_ext_sys::wdm::IO_WORKITEM,
    started: AtomicBool,
    may_return: AtomicBool,
}

unsafe extern "win64" fn returning_routine(
    _device: *mut ebpf_ext_sys::wdm::DEVICE_OBJECT,
    context: *mut c_void,
) {
    // SAFETY: the test passes a `Returning` that outlives the work item.
    let returning = unsafe { &*context.cast::<Returning>() };
    // SAFETY: dequeued before the routine runs, so it may be freed here.
    unsafe { ebpf_ext_sys::wdm::IoFreeWorkItem(returning.item) };
    returning.started.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while !returning.may_return.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::yield_now();
    }
}

/// ebpf-for-windows issue #2197 with a loaded image: given to its driver object, the image
/// stays mapped while a work item routine of the driver is still returning after the unload
/// deleted the device, and is unmapped once the routine has returned.
#[test]
fn an_image_kept_by_its_driver_object_outlives_its_work_items() {
    // A name of its own: once unloaded, another test's image may be mapped at its address.
    const NAME: &str = "workitem.sys";
    let kernel = Kernel::new();
    let built = build(&test_spec());
    let image = load(NAME, &built.bytes, test_resolver).expect("load");
    let inside = image.base() + built.rva("crash") as usize;
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    // SAFETY: a live device object.
    let item = unsafe { ebpf_ext_sys::wdm::IoAllocateWorkItem(device) };
    assert!(!item.is_null());
    let returning = Returning {
        item,
        started: AtomicBool::new(false),
        may_return: AtomicBool::new(false),
    };
    // SAFETY: a live, unqueued item; `returning` outlives the routine (waited for below).
    unsafe {
        ebpf_ext_sys::wdm::IoQueueWorkItem(
            item,
            returning_routine,
            ebpf_ext_sys::wdm::DelayedWorkQueue,
            ptr::from_ref(&returning).cast_mut().cast(),
        );
    };
    while !returning.started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // The unload: delete the device; the I/O manager then lets go of the driver object,
    // which holds the image.
    // SAFETY: the driver's device, deleted once.
    unsafe { ebpf_ext_sys::wdm::IoDeleteDevice(device) };
    driver.keep_alive(image);
    drop(driver);
    assert!(
        symbolize(inside).is_some_and(|s| s.module == NAME),
        "the image was unmapped while a work item routine of the driver was still returning"
    );
    returning.may_return.store(true, Ordering::SeqCst);
    kernel.wait_for_work_items();
    assert!(
        symbolize(inside).is_none_or(|s| s.module != NAME),
        "the image is unmapped once the routine has returned"
    );
    kernel.assert_no_leaks();
}
