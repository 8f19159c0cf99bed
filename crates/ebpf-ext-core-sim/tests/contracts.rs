//! The core's contracts with a hook provider, each broken on purpose by a misbehaving test
//! provider and caught by the core-sim with the bug check the core would raise (in a child
//! process: a bug check stops the machine).
#![allow(clippy::std_instead_of_alloc, reason = "host tests")]

mod common;

use core::ffi::c_void;
use core::ptr;

use common::{
    ClientView, HookContext, HookProvider, HookState, TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE,
};
use ebpf_ext_core_sim::{
    BAD_POOL_HEADER, Contract, FAST_FAIL_CORRUPT_LIST_ENTRY, KERNEL_SECURITY_CHECK_FAILURE, Link,
    LinkSpec, ProgramInfoClient,
};
use ebpf_ext_sys::ebpf_extension::{
    ebpf_extension_program_dispatch_table_t, ebpf_program_batch_begin_invoke_function_t,
    ebpf_program_batch_end_invoke_function_t, ebpf_program_batch_invoke_function_t,
};
use ebpf_ext_sys::ebpf_result::{EBPF_INVALID_ARGUMENT, EBPF_SUCCESS};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use ebpf_ext_usersim::{Kernel, expect_bugcheck, set_current_irql};

/// Runs `scenario` in a child process and returns the contract its bug check names.
fn caught(test: &str, scenario: impl FnOnce()) -> Contract {
    let check = expect_bugcheck(test, scenario);
    Contract::of(&check).unwrap_or_else(|| panic!("{test}: not a core-sim contract: {check}"))
}

/// A kernel, a test hook provider and one attached link returning 1.
struct World {
    link: Link,
    provider: HookProvider,
    kernel: Kernel,
}

impl World {
    fn new() -> Self {
        let kernel = Kernel::new();
        let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
        let link = Link::attach_without_program_type(
            LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE),
            |_| Ok(1),
        )
        .expect("attached");
        World {
            link,
            provider,
            kernel,
        }
    }

    fn table(&self) -> ebpf_extension_program_dispatch_table_t {
        self.provider.state.client(0).table.expect("dispatch table")
    }

    fn batch(
        &self,
    ) -> (
        ebpf_program_batch_begin_invoke_function_t,
        ebpf_program_batch_invoke_function_t,
        ebpf_program_batch_end_invoke_function_t,
    ) {
        let table = self.table();
        (
            table.ebpf_program_batch_begin_invoke_function.unwrap(),
            table.ebpf_program_batch_invoke_function.unwrap(),
            table.ebpf_program_batch_end_invoke_function.unwrap(),
        )
    }

    /// Batch-invokes the link with `state`.
    fn batch_invoke(&self, state: *const c_void) -> u32 {
        let (_, invoke, _) = self.batch();
        let mut context = HookContext::new(0);
        let mut result = 0;
        // SAFETY: the link's binding context and a context with its header; the state is the
        // test's choice (the core-sim checks it).
        let status = unsafe {
            invoke(
                self.link.client_binding_context(),
                context.ptr(),
                &raw mut result,
                state,
            )
        };
        assert_eq!(status, EBPF_SUCCESS);
        result
    }
}

/// Invokes `client`'s link through the binding context the provider kept at attach, as a
/// provider that goes on using it late does (the core-sim is to catch it).
fn invoke_kept_binding(hook: &HookState, client: &ClientView) {
    let mut context = HookContext::new(0);
    let _ = hook.invoke_raw(
        client,
        client.binding_context as *const c_void,
        context.ptr(),
    );
}

/// The state a test provider begins a batch with (64 bytes, 8-aligned).
type State = [u64; 8];

fn begin(world: &World, state: &mut State) {
    let (begin, _, _) = world.batch();
    assert_eq!(
        // SAFETY: 64 writable bytes.
        unsafe { begin(64, state.as_mut_ptr().cast()) },
        EBPF_SUCCESS
    );
}

fn end(world: &World, state: &mut State) {
    let (_, _, end) = world.batch();
    // SAFETY: 64 writable bytes; whether they were begun is what the core-sim checks.
    assert_eq!(unsafe { end(state.as_mut_ptr().cast()) }, EBPF_SUCCESS);
}

/// The defect the hook provider once had: begin with a local, then move it (here: copy it)
/// and invoke with the copy.
#[test]
fn batch_invoke_with_a_moved_state_is_caught() {
    let contract = caught("batch_invoke_with_a_moved_state_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        begin(&world, &mut state);
        let moved = Box::new(state);
        world.batch_invoke(moved.as_ptr().cast());
    });
    assert_eq!(contract, Contract::BatchStateMoved);
    assert_eq!(
        Contract::BatchStateMoved.bugcheck(),
        (KERNEL_SECURITY_CHECK_FAILURE, FAST_FAIL_CORRUPT_LIST_ENTRY)
    );
}

#[test]
fn batch_end_with_a_moved_state_is_caught() {
    let contract = caught("batch_end_with_a_moved_state_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        begin(&world, &mut state);
        let mut moved = Box::new(state);
        end(&world, &mut moved);
    });
    assert_eq!(contract, Contract::BatchStateMoved);
}

/// A provider that re-initialises its state in place between begin and end (zeroing it, or
/// assigning a fresh one over it) breaks the core's list links stored there.
#[test]
fn batch_end_with_a_state_overwritten_in_place_is_caught() {
    let contract = caught(
        "batch_end_with_a_state_overwritten_in_place_is_caught",
        || {
            let world = World::new();
            let mut state = State::default();
            begin(&world, &mut state);
            state = State::default();
            end(&world, &mut state);
        },
    );
    assert_eq!(contract, Contract::BatchStateMoved);
}

#[test]
fn batch_end_with_the_state_as_begin_left_it_passes() {
    let world = World::new();
    let mut state = State::default();
    begin(&world, &mut state);
    // Bytes past the core's record (the thread, IRQL and tail-call state) are the core's
    // too, but only its record is unlinked through.
    end(&world, &mut state);
}

#[test]
fn batch_invoke_without_begin_is_caught() {
    let contract = caught("batch_invoke_without_begin_is_caught", || {
        let world = World::new();
        let state = State::default();
        world.batch_invoke(state.as_ptr().cast());
    });
    assert_eq!(contract, Contract::BatchStateMoved);
}

#[test]
fn batch_end_twice_is_caught() {
    let contract = caught("batch_end_twice_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        begin(&world, &mut state);
        end(&world, &mut state);
        end(&world, &mut state);
    });
    assert_eq!(contract, Contract::BatchStateMoved);
}

#[test]
fn batch_begin_twice_on_one_state_is_caught() {
    let contract = caught("batch_begin_twice_on_one_state_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        begin(&world, &mut state);
        begin(&world, &mut state);
    });
    assert_eq!(contract, Contract::BatchStateReused);
}

#[test]
fn batch_end_at_another_irql_is_caught() {
    let contract = caught("batch_end_at_another_irql_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        begin(&world, &mut state);
        set_current_irql(DISPATCH_LEVEL);
        end(&world, &mut state);
    });
    assert_eq!(contract, Contract::BatchEndIrql);
}

#[test]
fn batch_end_on_another_thread_is_caught() {
    let contract = caught("batch_end_on_another_thread_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        set_current_irql(DISPATCH_LEVEL);
        begin(&world, &mut state);
        set_current_irql(PASSIVE_LEVEL);
        let (_, _, end) = world.batch();
        let address = state.as_mut_ptr() as usize;
        world
            .kernel
            .spawn(move || {
                set_current_irql(DISPATCH_LEVEL);
                // SAFETY: the state lives in the parent's frame, which waits for this thread.
                unsafe { end((address as *mut u64).cast()) }
            })
            .join()
            .expect("the bug check stops the process first");
    });
    assert_eq!(contract, Contract::BatchOtherThread);
}

#[test]
fn batch_begin_with_a_null_state_is_caught() {
    let contract = caught("batch_begin_with_a_null_state_is_caught", || {
        let world = World::new();
        let (begin, _, _) = world.batch();
        // SAFETY: NULL is what the core-sim must catch.
        let _ = unsafe { begin(64, ptr::null_mut()) };
    });
    assert_eq!(contract, Contract::NullPointer);
}

#[test]
fn batch_begin_with_a_null_state_and_a_short_size_is_refused_first() {
    let world = World::new();
    let (begin, _, _) = world.batch();
    // SAFETY: the core checks the size before the state, so the state is never touched.
    let status = unsafe { begin(8, ptr::null_mut()) };
    assert_eq!(status, EBPF_INVALID_ARGUMENT);
    let World {
        link,
        provider,
        kernel,
    } = world;
    link.detach().expect("clean detach");
    provider.deregister();
    kernel.assert_no_leaks();
}

#[test]
fn invoke_above_dispatch_is_caught() {
    let contract = caught("invoke_above_dispatch_is_caught", || {
        let world = World::new();
        set_current_irql(DISPATCH_LEVEL + 1);
        let _ = world.provider.state.invoke_value(0, 0);
    });
    assert_eq!(contract, Contract::IrqlAboveDispatch);
}

#[test]
fn batch_begin_above_dispatch_is_caught() {
    let contract = caught("batch_begin_above_dispatch_is_caught", || {
        let world = World::new();
        let mut state = State::default();
        set_current_irql(DISPATCH_LEVEL + 1);
        begin(&world, &mut state);
    });
    assert_eq!(contract, Contract::IrqlAboveDispatch);
}

#[test]
fn invoke_with_a_null_context_is_caught() {
    let contract = caught("invoke_with_a_null_context_is_caught", || {
        let world = World::new();
        let _ = world.provider.state.invoke(0, ptr::null_mut());
    });
    assert_eq!(contract, Contract::NullProgramContext);
}

#[test]
fn invoke_with_a_null_result_is_caught() {
    let contract = caught("invoke_with_a_null_result_is_caught", || {
        let world = World::new();
        let invoke = world.table().ebpf_program_invoke_function.unwrap();
        let mut context = HookContext::new(0);
        // SAFETY: a NULL result is what the core-sim must catch.
        let _ = unsafe {
            invoke(
                world.link.client_binding_context(),
                context.ptr(),
                ptr::null_mut(),
            )
        };
    });
    assert_eq!(contract, Contract::NullPointer);
}

#[test]
fn invoke_with_a_binding_context_that_is_not_a_link_is_caught() {
    let contract = caught(
        "invoke_with_a_binding_context_that_is_not_a_link_is_caught",
        || {
            let world = World::new();
            let client = world.provider.state.client(0);
            let not_a_link = [0u64; 8];
            let mut context = HookContext::new(0);
            let _ =
                world
                    .provider
                    .state
                    .invoke_raw(&client, not_a_link.as_ptr().cast(), context.ptr());
        },
    );
    assert_eq!(contract, Contract::NotALink);
}

#[test]
fn invoke_with_a_misaligned_binding_context_is_caught() {
    let contract = caught("invoke_with_a_misaligned_binding_context_is_caught", || {
        let world = World::new();
        let client = world.provider.state.client(0);
        let mut context = HookContext::new(0);
        let _ = world.provider.state.invoke_raw(
            &client,
            world.link.client_binding_context().wrapping_byte_add(1),
            context.ptr(),
        );
    });
    assert_eq!(contract, Contract::NotALink);
}

/// A provider that completes its detach and then still invokes the link.
#[test]
fn invoke_after_the_detach_completed_is_caught() {
    let contract = caught("invoke_after_the_detach_completed_is_caught", || {
        let world = World::new();
        let client = world.provider.state.client(0);
        world.link.detach().expect("clean detach");
        invoke_kept_binding(world.provider.state, &client);
    });
    assert_eq!(contract, Contract::InvokeAfterDetach);
}

/// A provider that deregisters (NMR detaches it from the link, and it completes its detach)
/// and then still invokes the binding it kept: the link is alive (its user has not detached
/// it), but NMR has finished with the binding and the core may free the link at any time.
#[test]
fn invoke_after_the_provider_completed_its_own_detach_is_caught() {
    let contract = caught(
        "invoke_after_the_provider_completed_its_own_detach_is_caught",
        || {
            let world = World::new();
            let state = world.provider.state;
            let client = state.client(0);
            world.provider.deregister();
            assert!(!world.link.is_attached(), "NMR detached the link");
            invoke_kept_binding(state, &client);
        },
    );
    assert_eq!(contract, Contract::InvokeAfterDetach);
}

/// A link whose provider deregistered is offered to a new provider of its hook, which
/// invokes it from inside its attach callback (the core allows it): a binding being attached
/// is held, so the invoke runs.
#[test]
fn a_new_provider_may_invoke_a_link_from_inside_its_attach() {
    let World {
        link,
        provider,
        kernel,
    } = World::new();
    provider.deregister();
    assert!(!link.is_attached(), "the first provider went");
    let again = HookProvider::register_invoking_in_attach(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    assert!(link.is_attached(), "offered to the new provider");
    assert_eq!(
        *again.state.attach_invocations.lock().unwrap(),
        [(EBPF_SUCCESS, 1)],
        "the invoke from inside the attach ran the program"
    );
    link.detach().expect("clean detach");
    again.deregister();
    kernel.assert_no_leaks();
}

/// A provider that completes its detach while one of its invocations still runs, and then
/// starts another: the link is dead from the moment the detach completed, so the late
/// invocation is caught even though the link's detach is still waiting for the first.
#[test]
fn invoke_while_the_detach_waits_for_a_running_one_is_caught() {
    let contract = caught(
        "invoke_while_the_detach_waits_for_a_running_one_is_caught",
        || {
            let kernel = Kernel::new();
            let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
            let hook = provider.state;
            let gate = std::sync::Arc::new(common::Gate::default());
            let program_gate = std::sync::Arc::clone(&gate);
            let link = Link::attach_without_program_type(
                LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE),
                move |_| {
                    program_gate.wait();
                    Ok(1)
                },
            )
            .expect("attached");
            let client = hook.client(0);
            let state = link.client_binding_context();
            let _running = kernel.spawn(move || hook.invoke_value(0, 0));
            common::wait_until("the invocation runs", || link.in_flight() == 1);
            let _detaching = kernel.spawn(move || link.detach());
            // The link's state starts with its magic ("CoreLink" while live); once it is no
            // longer that, the detach has marked the link dead and is waiting for the first
            // invocation.
            common::wait_until("the link is dead", || {
                // SAFETY: a link's state is never freed, and its first field is the magic.
                let magic = unsafe { &*state.cast::<core::sync::atomic::AtomicU64>() };
                magic.load(core::sync::atomic::Ordering::SeqCst) != u64::from_be_bytes(*b"CoreLink")
            });
            invoke_kept_binding(hook, &client);
        },
    );
    assert_eq!(contract, Contract::InvokeAfterDetach);
}

/// The core writes slot 0 (execution state) and slot 1 (context descriptor) of the 64 bytes
/// in front of the context: a provider that passes a context without the header has whatever
/// precedes it overwritten, as with the real core.
#[test]
fn the_core_writes_the_header_in_front_of_the_context() {
    #[repr(C)]
    struct NoHeader {
        neighbour: [u64; 8],
        value: u32,
    }
    let world = World::new();
    let mut bare = NoHeader {
        neighbour: [0xAAAA_AAAA_AAAA_AAAA; 8],
        value: 0,
    };
    let (status, _) = world.provider.state.invoke(0, (&raw mut bare.value).cast());
    assert_eq!(status, EBPF_SUCCESS);
    assert_ne!(bare.neighbour[0], 0xAAAA_AAAA_AAAA_AAAA, "slot 0 written");
    assert_eq!(bare.neighbour[1], 0, "slot 1 written");
    assert_eq!(bare.neighbour[2..], [0xAAAA_AAAA_AAAA_AAAA; 6]);

    let mut state = State::default();
    begin(&world, &mut state);
    let (_, invoke, _) = world.batch();
    let mut context = HookContext::new(0);
    let mut result = 0;
    // SAFETY: a begun state, the link's binding context, a context with its header.
    let status = unsafe {
        invoke(
            world.link.client_binding_context(),
            context.ptr(),
            &raw mut result,
            state.as_ptr().cast(),
        )
    };
    assert_eq!(status, EBPF_SUCCESS);
    assert_eq!(context.header[0], state.as_ptr() as u64);
    end(&world, &mut state);
    let World { link, provider, .. } = world;
    link.detach().expect("detach");
    provider.deregister();
}

/// The core frees the attach parameter it presented (`client_data->data`), and the client
/// data itself (part of its link object), once the detach has completed: a provider that kept
/// either pointer reads freed-pool poison.
#[test]
fn the_attach_parameter_is_gone_after_the_detach() {
    let kernel = Kernel::new();
    let provider = HookProvider::register(TEST_ATTACH_TYPE, TEST_PROGRAM_TYPE);
    let link = Link::attach_without_program_type(
        LinkSpec::new(TEST_PROGRAM_TYPE, TEST_ATTACH_TYPE).attach_parameter(&[1, 2, 3, 4]),
        |_| Ok(1),
    )
    .expect("attached");
    let seen = provider.state.client(0);
    assert_eq!(seen.parameter, [1, 2, 3, 4]);
    let data = seen.data as *const [u8; 4];
    // The client data itself (`NpiSpecificCharacteristics`): part of the core's link object.
    let client_data = link.client_data().cast::<[u8; 48]>();
    let header = link.client_data_header();
    assert_eq!((header.version, header.size), (1, 48));
    link.detach().expect("detach");
    // SAFETY: the core-sim keeps a detached link's memory (poisoned) for the process's life.
    let after = unsafe { data.read() };
    assert_eq!(after, [ebpf_ext_usersim::FREED_POISON; 4]);
    // SAFETY: as above; the client data is 48 bytes.
    let after = unsafe { client_data.read() };
    assert_eq!(
        after,
        [ebpf_ext_usersim::FREED_POISON; 48],
        "the client data is freed with the link"
    );
    provider.deregister();
    drop(kernel);
}

/// `context_create` that allocates the context alone, with no room for the core's header in
/// front of it.
unsafe extern "win64" fn headerless_create(
    _data_in: *const u8,
    _data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_ext_sys::ebpf_result::ebpf_result_t {
    let p = common::safe::alloc(context_size_in).cast::<u8>();
    // SAFETY: `context_size_in` bytes of input into a fresh allocation of that size.
    unsafe { ptr::copy_nonoverlapping(context_in, p, context_size_in) };
    // SAFETY: the caller's out slot.
    unsafe { context.write(p.cast()) };
    EBPF_SUCCESS
}

/// The defect a hand-written test provider once had, which corrupted the heap in front of
/// the context one run in fifty: the core's header write is caught instead.
#[test]
fn a_test_run_context_without_room_for_the_header_is_caught() {
    let contract = caught(
        "a_test_run_context_without_room_for_the_header_is_caught",
        || {
            let _kernel = Kernel::new();
            let mut spec = common::ProgramDataSpec::valid();
            spec.context_create = Some(headerless_create);
            let _provider = common::InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
            let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
            let context = [0u8; size_of::<common::TestContext>()];
            let _ = client.create_context(&[], &context);
        },
    );
    assert_eq!(contract, Contract::NoContextHeader);
    assert_eq!(Contract::NoContextHeader.bugcheck(), (BAD_POOL_HEADER, 0));
}

/// `context_create` that claims success but gives no context.
unsafe extern "win64" fn null_create(
    _data_in: *const u8,
    _data_size_in: usize,
    _context_in: *const u8,
    _context_size_in: usize,
    _context: *mut *mut c_void,
) -> ebpf_ext_sys::ebpf_result::ebpf_result_t {
    EBPF_SUCCESS
}

/// `context_destroy` of the test type that then reports one `data_out` byte more than it was
/// given room for.
unsafe extern "win64" fn oversized_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    // SAFETY: the caller's size slot.
    let room = unsafe { data_size_out.read() };
    // SAFETY: the caller's arguments, passed on.
    unsafe {
        common::test_context_destroy(
            context,
            data_out,
            data_size_out,
            context_out,
            context_size_out,
        );
    }
    // SAFETY: as above.
    unsafe { data_size_out.write(room + 1) };
}

#[test]
fn a_test_run_context_created_null_is_caught() {
    let contract = caught("a_test_run_context_created_null_is_caught", || {
        let _kernel = Kernel::new();
        let mut spec = common::ProgramDataSpec::valid();
        spec.context_create = Some(null_create);
        let _provider = common::InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
        let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
        let context = [0u8; size_of::<common::TestContext>()];
        let _ = client.create_context(&[], &context);
    });
    assert_eq!(contract, Contract::NullTestRunContext);
}

#[test]
fn a_test_run_reporting_more_output_than_its_room_is_caught() {
    let contract = caught(
        "a_test_run_reporting_more_output_than_its_room_is_caught",
        || {
            let _kernel = Kernel::new();
            let mut spec = common::ProgramDataSpec::valid();
            spec.context_destroy = Some(oversized_destroy);
            let _provider = common::InfoProvider::register(TEST_PROGRAM_TYPE, &spec);
            let client = ProgramInfoClient::attach(TEST_PROGRAM_TYPE).expect("attached");
            let context = [0u8; size_of::<common::TestContext>()];
            let created = client.create_context(b"data", &context).expect("created");
            let _ = created.destroy(16, size_of::<common::TestContext>());
        },
    );
    assert_eq!(contract, Contract::TestRunOutputTooLarge);
}
