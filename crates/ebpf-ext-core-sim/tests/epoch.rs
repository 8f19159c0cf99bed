//! The core's epoch functions in the map client's dispatch table, called as a map provider
//! calls them: memory under epoch control, given back only once no epoch that could see it
//! remains, and every misuse caught with the bug check the core would raise (in a child
//! process).
#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

use core::ffi::c_void;
use core::ptr;
use std::sync::mpsc;

use ebpf_ext_core_sim::bpf::map_client_dispatch_table;
use ebpf_ext_core_sim::{CACHE_LINE, Contract, EpochMemory, epoch_memory, in_epoch};
use ebpf_ext_sys::ebpf_extension::{EBPF_EPOCH_STATE_SIZE, ebpf_base_map_client_dispatch_table_t};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use ebpf_ext_usersim::{Fault, Kernel, expect_bugcheck, run_dying_child, set_current_irql};

/// Pool tag of the test's epoch memory: "Epch".
const TAG: u32 = u32::from_le_bytes(*b"Epch");

/// An epoch state as a provider keeps one: 32 bytes, 8-aligned, at one address.
type State = [u64; EBPF_EPOCH_STATE_SIZE / 8];

fn table() -> &'static ebpf_base_map_client_dispatch_table_t {
    map_client_dispatch_table()
}

fn enter(state: &mut State) {
    let enter = table().epoch_enter.expect("epoch_enter");
    // SAFETY: 32 writable bytes that stay put until the matching exit.
    unsafe { enter(state.as_mut_ptr().cast()) };
}

fn exit(state: &mut State) {
    let exit = table().epoch_exit.expect("epoch_exit");
    // SAFETY: the state `enter` was given.
    unsafe { exit(state.as_mut_ptr().cast()) };
}

fn allocate(size: usize) -> *mut c_void {
    let allocate = table().epoch_allocate_with_tag.expect("allocate");
    // SAFETY: the core's allocator; any size and tag.
    unsafe { allocate(size, TAG) }
}

fn allocate_aligned(size: usize) -> *mut c_void {
    let allocate = table()
        .epoch_allocate_cache_aligned_with_tag
        .expect("allocate aligned");
    // SAFETY: as above.
    unsafe { allocate(size, TAG) }
}

fn free(memory: *mut c_void) {
    let free = table().epoch_free.expect("free");
    // SAFETY: the core's free; misuse is what some tests check.
    unsafe { free(memory) };
}

fn free_aligned(memory: *mut c_void) {
    let free = table().epoch_free_cache_aligned.expect("free aligned");
    // SAFETY: as above.
    unsafe { free(memory) };
}

/// Runs `scenario` in a child process and returns the contract its bug check names.
fn caught(test: &str, scenario: impl FnOnce()) -> Contract {
    let check = expect_bugcheck(test, scenario);
    Contract::of(&check).unwrap_or_else(|| panic!("{test}: not a core-sim contract: {check}"))
}

#[test]
fn the_core_offers_all_six_epoch_functions() {
    let table = table();
    assert!(table.find_element_function.is_some());
    assert!(table.epoch_enter.is_some());
    assert!(table.epoch_exit.is_some());
    assert!(table.epoch_allocate_with_tag.is_some());
    assert!(table.epoch_allocate_cache_aligned_with_tag.is_some());
    assert!(table.epoch_free.is_some());
    assert!(table.epoch_free_cache_aligned.is_some());
    assert_eq!((table.header.version, table.header.size), (1, 80));
}

#[test]
fn epoch_memory_is_zeroed_pool_of_the_callers_tag_given_back_when_the_epoch_ends() {
    let kernel = Kernel::new();
    assert!(!in_epoch());
    let mut state = State::default();
    enter(&mut state);
    assert!(in_epoch());
    assert_ne!(
        state,
        State::default(),
        "enter writes its record into the state"
    );
    let plain = allocate(24);
    let aligned = allocate_aligned(100);
    assert!(!plain.is_null() && !aligned.is_null());
    assert_eq!(plain as usize % 8, 0);
    assert_eq!(aligned as usize % CACHE_LINE, 0);
    // SAFETY: 24 bytes the allocator just returned.
    let plain_bytes = unsafe { core::slice::from_raw_parts_mut(plain.cast::<u8>(), 24) };
    // SAFETY: 100 bytes the allocator just returned.
    let aligned_bytes = unsafe { core::slice::from_raw_parts_mut(aligned.cast::<u8>(), 100) };
    assert!(
        plain_bytes
            .iter()
            .chain(aligned_bytes.iter())
            .all(|&b| b == 0)
    );
    plain_bytes.fill(0x11);
    aligned_bytes.fill(0x22);
    assert_eq!(
        kernel.pool_outstanding_with_tag("Epch"),
        2,
        "pool of the caller's tag"
    );
    free(plain);
    free_aligned(aligned);
    free(ptr::null_mut());
    free_aligned(ptr::null_mut());
    assert_eq!(
        epoch_memory(),
        EpochMemory {
            allocated: 2,
            freed: 2,
            reclaimed: 0
        },
        "the freeing epoch may still read them"
    );
    assert_eq!(kernel.pool_outstanding_with_tag("Epch"), 2);
    exit(&mut state);
    assert!(!in_epoch());
    assert_eq!(epoch_memory().pending(), 0);
    assert_eq!(epoch_memory().reclaimed, 2);
    kernel.assert_no_leaks();
}

#[test]
fn nested_epochs_give_back_at_the_outermost_exit() {
    let kernel = Kernel::new();
    let (mut outer, mut inner) = (State::default(), State::default());
    enter(&mut outer);
    enter(&mut inner);
    free(allocate(8));
    exit(&mut inner);
    assert_eq!(epoch_memory().pending(), 1, "still inside the outer epoch");
    exit(&mut outer);
    assert_eq!(epoch_memory().pending(), 0);
    kernel.assert_no_leaks();
}

#[test]
fn memory_freed_while_another_thread_is_inside_an_epoch_waits_for_that_epoch() {
    let kernel = Kernel::new();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let reader = kernel.spawn(move || {
        let mut state = State::default();
        enter(&mut state);
        entered_tx.send(()).expect("main waits");
        leave_rx.recv().expect("main says when");
        exit(&mut state);
    });
    entered_rx.recv().expect("the reader entered");
    let mut state = State::default();
    enter(&mut state);
    free(allocate(16));
    exit(&mut state);
    assert_eq!(
        epoch_memory().pending(),
        1,
        "the reader entered before the free and may hold the memory"
    );
    assert_eq!(kernel.pool_outstanding_with_tag("Epch"), 1);
    // An epoch entered after the free does not hold it back.
    let (late_tx, late_rx) = mpsc::channel();
    let (late_leave_tx, late_leave_rx) = mpsc::channel::<()>();
    let late = kernel.spawn(move || {
        let mut state = State::default();
        enter(&mut state);
        late_tx.send(()).expect("main waits");
        late_leave_rx.recv().expect("main says when");
        exit(&mut state);
    });
    late_rx.recv().expect("the late reader entered");
    leave_tx.send(()).expect("the reader waits");
    reader.join().expect("reader");
    assert_eq!(
        epoch_memory().pending(),
        0,
        "given back at the reader's exit"
    );
    assert_eq!(kernel.pool_outstanding_with_tag("Epch"), 0);
    late_leave_tx.send(()).expect("the late reader waits");
    late.join().expect("late reader");
    kernel.assert_no_leaks();
}

#[test]
fn an_allocation_the_pool_refuses_is_null_and_counts_nothing() {
    let kernel = Kernel::new();
    let mut state = State::default();
    enter(&mut state);
    kernel.inject(Fault::Allocation(1));
    assert!(allocate(8).is_null());
    kernel.inject(Fault::Allocation(1));
    assert!(allocate_aligned(8).is_null());
    assert!(allocate(usize::MAX - 8).is_null(), "size overflow");
    assert_eq!(epoch_memory(), EpochMemory::default());
    exit(&mut state);
    kernel.assert_no_leaks();
}

#[test]
fn enter_and_exit_raise_to_dispatch_and_keep_the_callers_irql() {
    let kernel = Kernel::new();
    let mut state = State::default();
    let raises = kernel.irql_raises();
    enter(&mut state);
    exit(&mut state);
    assert_eq!(kernel.irql_raises() - raises, 2);
    set_current_irql(DISPATCH_LEVEL);
    enter(&mut state);
    exit(&mut state);
    set_current_irql(PASSIVE_LEVEL);
    assert_eq!(kernel.irql_raises() - raises, 2, "none at DISPATCH_LEVEL");
}

#[test]
fn allocating_outside_an_epoch_is_caught() {
    let contract = caught("allocating_outside_an_epoch_is_caught", || {
        let _kernel = Kernel::new();
        let _ = allocate(8);
    });
    assert_eq!(contract, Contract::OutsideEpoch);
}

#[test]
fn freeing_outside_an_epoch_is_caught() {
    let contract = caught("freeing_outside_an_epoch_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let memory = allocate(8);
        exit(&mut state);
        free(memory);
    });
    assert_eq!(contract, Contract::OutsideEpoch);
}

/// The core's lookup hands out a value that lives only until the caller's epoch ends, so a
/// provider may call it only inside one.
#[test]
fn finding_an_element_outside_an_epoch_is_caught() {
    let contract = caught("finding_an_element_outside_an_epoch_is_caught", || {
        let _kernel = Kernel::new();
        let find = table().find_element_function.expect("find");
        let (key, mut value) = (0u32, core::ptr::null_mut());
        // SAFETY: valid pointers (the map is not one of the core's: the epoch check comes
        // first).
        let _ = unsafe {
            find(
                core::ptr::from_ref(&key).cast(),
                core::ptr::from_ref(&key).cast(),
                &raw mut value,
            )
        };
    });
    assert_eq!(contract, Contract::OutsideEpoch);
}

#[test]
fn allocating_zero_bytes_is_caught() {
    let contract = caught("allocating_zero_bytes_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let _ = allocate(0);
    });
    assert_eq!(contract, Contract::EpochAllocateZero);
}

#[test]
fn freeing_twice_is_caught() {
    let contract = caught("freeing_twice_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let memory = allocate(8);
        free(memory);
        free(memory);
    });
    assert_eq!(contract, Contract::EpochMemoryInvalid);
}

#[test]
fn freeing_with_the_other_free_is_caught() {
    let contract = caught("freeing_with_the_other_free_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        free(allocate_aligned(8));
    });
    assert_eq!(contract, Contract::EpochMemoryInvalid);
}

#[test]
fn freeing_memory_of_another_allocator_is_caught() {
    let contract = caught("freeing_memory_of_another_allocator_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let mut own = [0u64; 4];
        free(own.as_mut_ptr().cast());
    });
    assert_eq!(contract, Contract::EpochMemoryInvalid);
}

#[test]
fn exit_with_a_moved_state_is_caught() {
    let contract = caught("exit_with_a_moved_state_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let mut moved = state;
        exit(&mut moved);
    });
    assert_eq!(contract, Contract::EpochStateMoved);
}

#[test]
fn exit_with_an_overwritten_record_is_caught() {
    let contract = caught("exit_with_an_overwritten_record_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        state[2] ^= 1;
        exit(&mut state);
    });
    assert_eq!(contract, Contract::EpochStateMoved);
}

#[test]
fn exit_twice_is_caught() {
    let contract = caught("exit_twice_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        exit(&mut state);
        exit(&mut state);
    });
    assert_eq!(contract, Contract::EpochStateMoved);
}

#[test]
fn enter_twice_on_one_state_is_caught() {
    let contract = caught("enter_twice_on_one_state_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        enter(&mut state);
    });
    assert_eq!(contract, Contract::EpochStateReused);
}

#[test]
fn exit_at_another_irql_is_caught() {
    let contract = caught("exit_at_another_irql_is_caught", || {
        let _kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        set_current_irql(DISPATCH_LEVEL);
        exit(&mut state);
    });
    assert_eq!(contract, Contract::EpochExitIrql);
}

#[test]
fn exit_on_another_thread_is_caught() {
    let contract = caught("exit_on_another_thread_is_caught", || {
        let kernel = Kernel::new();
        let mut state = State::default();
        enter(&mut state);
        let address = state.as_mut_ptr() as usize;
        kernel
            .spawn(move || {
                let exit = table().epoch_exit.expect("epoch_exit");
                // SAFETY: the state lives in the parent's frame, which waits for this thread.
                unsafe { exit(address as *mut c_void) };
            })
            .join()
            .expect("the bug check stops the process first");
    });
    assert_eq!(contract, Contract::EpochOtherThread);
}

#[test]
fn a_null_state_is_caught() {
    let contract = caught("a_null_state_is_caught", || {
        let _kernel = Kernel::new();
        let enter = table().epoch_enter.expect("epoch_enter");
        // SAFETY: what the test checks: the core writes through the state.
        unsafe { enter(ptr::null_mut()) };
    });
    assert_eq!(contract, Contract::NullPointer);
}

/// An epoch belongs to the simulated kernel it was entered on: a thread that binds another
/// kernel before it leaves is stopped (its slot and its pool are the first kernel's), not
/// left to reclaim one kernel's memory through another's pool.
#[test]
fn binding_another_kernel_inside_an_epoch_is_refused() {
    const REFUSAL: &str = "a thread inside an epoch of one simulated kernel bound another";
    let line = run_dying_child(
        "binding_another_kernel_inside_an_epoch_is_refused",
        REFUSAL,
        "the refusal",
        || {
            let _first = Kernel::new();
            let mut state = State::default();
            enter(&mut state);
            let _second = Kernel::new();
            let _ = allocate(8);
        },
    );
    assert!(line.starts_with(REFUSAL), "{line}");
}
