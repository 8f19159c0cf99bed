//! Minimal test-only providers written against raw NMR (like usersim's `tests/nmr.rs`): a
//! program-information provider publishing data a test describes field by field, and a hook
//! provider that records what each client presented and can invoke it.
#![allow(dead_code, reason = "each test file uses a different part")]

use core::ffi::{CStr, c_void};
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use core::time::Duration;
use std::sync::{Condvar, Mutex};
use std::thread;

use ebpf_ext_sys::ebpf_base::{
    EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_DONTCARE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_RETURN_TYPE_INTEGER, ebpf_argument_type_t,
    ebpf_return_type_t,
};
use ebpf_ext_sys::ebpf_extension::{
    ebpf_attach_provider_data_t, ebpf_extension_data_t, ebpf_extension_program_dispatch_table_t,
};
use ebpf_ext_sys::ebpf_extension_uuids::{
    EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID, EBPF_HOOK_EXTENSION_IID,
    EBPF_PROGRAM_INFO_EXTENSION_IID,
};
use ebpf_ext_sys::ebpf_program_types::{
    ebpf_context_descriptor_t, ebpf_helper_function_addresses_t,
    ebpf_helper_function_prototype_flags_t, ebpf_helper_function_prototype_t,
    ebpf_program_context_create_t, ebpf_program_context_destroy_t, ebpf_program_data_t,
    ebpf_program_info_t, ebpf_program_type_descriptor_t, program_data_capabilities_t,
};
use ebpf_ext_sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_ext_sys::ebpf_structs::{BPF_LINK_TYPE_PLAIN, bpf_attach_type_t};
use ebpf_ext_sys::ebpf_windows::{
    EBPF_ATTACH_PROVIDER_DATA_HEADER, EBPF_HELPER_FUNCTION_ADDRESSES_HEADER,
    EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER, EBPF_PROGRAM_DATA_HEADER,
    EBPF_PROGRAM_INFORMATION_HEADER, EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER, ebpf_extension_header_t,
};
use ebpf_ext_sys::netioddk::{
    NPI_MODULEID, NPI_PROVIDER_CHARACTERISTICS, NPI_REGISTRATION_INSTANCE, NmrRegisterProvider,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_PENDING, STATUS_SUCCESS};
use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, POOL_FLAG_NON_PAGED};

/// The program type the test providers describe.
pub(crate) const TEST_PROGRAM_TYPE: GUID =
    GUID::from_u128(0x7e57_0001_0000_4000_8000_0000_0000_0001);
/// Another program type.
pub(crate) const OTHER_PROGRAM_TYPE: GUID =
    GUID::from_u128(0x7e57_0002_0000_4000_8000_0000_0000_0002);
/// The attach type the test hook provider serves.
pub(crate) const TEST_ATTACH_TYPE: GUID =
    GUID::from_u128(0x7e57_0003_0000_4000_8000_0000_0000_0003);
/// Another attach type.
pub(crate) const OTHER_ATTACH_TYPE: GUID =
    GUID::from_u128(0x7e57_0004_0000_4000_8000_0000_0000_0004);
/// `bpf_attach_type` of the test hook.
pub(crate) const TEST_BPF_ATTACH_TYPE: bpf_attach_type_t = 42;
/// Pool tag of the test providers.
pub(crate) const TAG: u32 = u32::from_le_bytes(*b"CsTs");

/// Handle-only NMR and pool routines: usersim validates handles, so these are safe here.
pub(crate) mod safe {
    use core::ffi::c_void;

    use ebpf_ext_sys::ntdef::{HANDLE, NTSTATUS};

    pub(crate) fn deregister_provider(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle.
        unsafe { ebpf_ext_sys::netioddk::NmrDeregisterProvider(h) }
    }

    pub(crate) fn wait_provider(h: HANDLE) -> NTSTATUS {
        // SAFETY: usersim validates the handle.
        unsafe { ebpf_ext_sys::netioddk::NmrWaitForProviderDeregisterComplete(h) }
    }

    pub(crate) fn detach_client_complete(h: HANDLE) {
        // SAFETY: usersim validates the binding handle and bug-checks a bad one.
        unsafe { ebpf_ext_sys::netioddk::NmrProviderDetachClientComplete(h) }
    }

    pub(crate) fn alloc(size: usize) -> *mut c_void {
        // SAFETY: a plain tagged allocation.
        unsafe { ebpf_ext_sys::wdm::ExAllocatePool2(super::POOL_FLAG_NON_PAGED, size, super::TAG) }
    }

    pub(crate) fn free(p: *mut c_void) {
        // SAFETY: `p` came from `alloc` and is freed once (the callers' bookkeeping).
        unsafe { ebpf_ext_sys::wdm::ExFreePoolWithTag(p, super::TAG) }
    }
}

/// A gate a program blocks on until the test opens it.
#[derive(Default)]
pub(crate) struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    pub(crate) fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Polls `condition` every millisecond for up to 10 s.
pub(crate) fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting until {what}");
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn registration_instance(
    npi_id: &'static GUID,
    module_id: &'static NPI_MODULEID,
    data: *const c_void,
) -> NPI_REGISTRATION_INSTANCE {
    NPI_REGISTRATION_INSTANCE {
        Version: 0,
        Size: 40,
        NpiId: npi_id,
        ModuleId: module_id,
        Number: 0,
        NpiSpecificCharacteristics: data,
    }
}

fn register_provider(
    npi_id: &'static GUID,
    module_id: NPI_MODULEID,
    data: *const c_void,
    context: *const c_void,
    attach: ebpf_ext_sys::netioddk::NPI_PROVIDER_ATTACH_CLIENT_FN,
    detach: ebpf_ext_sys::netioddk::NPI_PROVIDER_DETACH_CLIENT_FN,
    cleanup: ebpf_ext_sys::netioddk::NPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN,
) -> HANDLE {
    let chars = leak(NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        Length: 72,
        ProviderAttachClient: Some(attach),
        ProviderDetachClient: Some(detach),
        ProviderCleanupBindingContext: Some(cleanup),
        ProviderRegistrationInstance: registration_instance(npi_id, leak(module_id), data),
    });
    let mut handle = ptr::null_mut();
    // SAFETY: the leaked characteristics, data and context outlive the registration.
    let status = unsafe { NmrRegisterProvider(chars, context.cast_mut(), &raw mut handle) };
    assert_eq!(status, STATUS_SUCCESS, "NmrRegisterProvider");
    handle
}

fn deregister(handle: HANDLE) {
    let status = safe::deregister_provider(handle);
    assert!(
        status == STATUS_PENDING || status == STATUS_SUCCESS,
        "{status:#x}"
    );
    assert_eq!(safe::wait_provider(handle), STATUS_SUCCESS);
}

// ---------------------------------------------------------------------------------------------
// Program-information provider.
// ---------------------------------------------------------------------------------------------

/// One helper prototype as a test describes it.
#[derive(Clone)]
pub(crate) struct Proto {
    pub(crate) header: ebpf_extension_header_t,
    pub(crate) id: u32,
    /// `None`: a NULL name.
    pub(crate) name: Option<&'static CStr>,
    pub(crate) return_type: ebpf_return_type_t,
    pub(crate) arguments: [ebpf_argument_type_t; 5],
    pub(crate) reallocate_packet: bool,
    pub(crate) implicit_context: bool,
}

impl Proto {
    pub(crate) fn new(id: u32, name: &'static CStr) -> Self {
        Proto {
            header: EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER,
            id,
            name: Some(name),
            return_type: EBPF_RETURN_TYPE_INTEGER,
            arguments: [
                EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
                EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
                EBPF_ARGUMENT_TYPE_CONST_SIZE,
                EBPF_ARGUMENT_TYPE_DONTCARE,
                EBPF_ARGUMENT_TYPE_DONTCARE,
            ],
            reallocate_packet: false,
            implicit_context: false,
        }
    }
}

/// A helper address table as a test describes it.
#[derive(Clone)]
pub(crate) struct Addresses {
    pub(crate) header: ebpf_extension_header_t,
    /// `helper_function_count` (defaults to `addresses.len()`).
    pub(crate) count: u32,
    /// `None`: a NULL array.
    pub(crate) values: Option<Vec<u64>>,
}

impl Addresses {
    pub(crate) fn new(addresses: Vec<u64>) -> Self {
        Addresses {
            header: EBPF_HELPER_FUNCTION_ADDRESSES_HEADER,
            count: u32::try_from(addresses.len()).unwrap(),
            values: Some(addresses),
        }
    }
}

/// A whole `ebpf_program_data_t` as a test describes it; `build` lays it out.
#[derive(Clone)]
#[expect(clippy::struct_excessive_bools, reason = "one switch per malformation")]
pub(crate) struct ProgramDataSpec {
    pub(crate) null_data: bool,
    pub(crate) data_header: ebpf_extension_header_t,
    pub(crate) null_info: bool,
    pub(crate) info_header: ebpf_extension_header_t,
    pub(crate) null_descriptor: bool,
    pub(crate) descriptor_header: ebpf_extension_header_t,
    pub(crate) name: Option<&'static CStr>,
    pub(crate) context: Option<ebpf_context_descriptor_t>,
    pub(crate) program_type: GUID,
    pub(crate) bpf_prog_type: u32,
    pub(crate) is_privileged: bool,
    pub(crate) helpers: Vec<Proto>,
    /// Overrides the count (defaults to `helpers.len()`).
    pub(crate) helper_count: Option<u32>,
    pub(crate) null_helpers: bool,
    pub(crate) global_helpers: Vec<Proto>,
    pub(crate) global_count: Option<u32>,
    pub(crate) null_global_helpers: bool,
    pub(crate) helper_addresses: Option<Addresses>,
    pub(crate) global_addresses: Option<Addresses>,
    pub(crate) context_create: Option<ebpf_program_context_create_t>,
    pub(crate) context_destroy: Option<ebpf_program_context_destroy_t>,
    pub(crate) required_irql: u8,
    pub(crate) capabilities: u32,
}

pub(crate) extern "win64" fn helper_a() -> u64 {
    1
}
pub(crate) extern "win64" fn helper_b() -> u64 {
    2
}
pub(crate) extern "win64" fn helper_pid() -> u64 {
    3
}

pub(crate) fn helper_a_address() -> u64 {
    helper_a as *const () as usize as u64
}
pub(crate) fn helper_b_address() -> u64 {
    helper_b as *const () as usize as u64
}
pub(crate) fn helper_pid_address() -> u64 {
    helper_pid as *const () as usize as u64
}

/// Which of the helpers above `address` is, by what it returns (1, 2 or 3): an optimised
/// build may give one function two addresses (a copy per codegen unit), so an address taken
/// here need not equal one taken elsewhere for the same function.
pub(crate) fn helper_at(address: Option<u64>) -> Option<u64> {
    type Helper = extern "win64" fn() -> u64;
    let address = usize::try_from(address?).ok()?;
    // SAFETY: the tests publish only `helper_a`, `helper_b` and `helper_pid` (a NULL address
    // is `None` above), each an `extern "win64" fn() -> u64`.
    let helper = unsafe { core::mem::transmute::<usize, Helper>(address) };
    Some(helper())
}

/// The program context of the test program type.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TestContext {
    pub(crate) value: u64,
    pub(crate) flags: u64,
    pub(crate) data_start: *const u8,
    pub(crate) data_end: *const u8,
}

/// What `context_create` allocates: the core's header, then the context.
#[repr(C)]
struct TestContextWrapper {
    header: [u64; 8],
    context: TestContext,
}

thread_local! {
    /// The IRQL the last `test_context_create` and `test_context_destroy` on this thread ran
    /// at.
    pub(crate) static CONTEXT_CALL_IRQLS: core::cell::Cell<(u8, u8)> =
        const { core::cell::Cell::new((0xFF, 0xFF)) };
    /// Calls of `test_context_destroy` on this thread.
    pub(crate) static CONTEXT_DESTROYS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
    /// The output room the last `test_context_destroy` on this thread was given: data, then
    /// context, each `None` for a NULL buffer, else its size slot.
    pub(crate) static CONTEXT_DESTROY_ROOM: core::cell::Cell<(Option<usize>, Option<usize>)> =
        const { core::cell::Cell::new((None, None)) };
}

/// `context_create` of the test type that creates the context, leaves it in the out slot,
/// and fails.
#[allow(dead_code, reason = "not every test file uses it")]
pub(crate) unsafe extern "win64" fn failing_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    // SAFETY: the caller's arguments, passed on.
    let created =
        unsafe { test_context_create(data_in, data_size_in, context_in, context_size_in, context) };
    assert_eq!(created, EBPF_SUCCESS);
    ebpf_ext_sys::ebpf_result::EBPF_NO_MEMORY
}

/// `context_create` of the test program type: the context input must be a whole
/// `TestContext`; the data input (optional) is pointed at, not copied.
pub(crate) unsafe extern "win64" fn test_context_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    let irql = ebpf_ext_sys::intrin::KeGetCurrentIrql();
    CONTEXT_CALL_IRQLS.with(|c| c.set((irql, c.get().1)));
    if context.is_null() || context_in.is_null() || context_size_in != size_of::<TestContext>() {
        return EBPF_INVALID_ARGUMENT;
    }
    if data_in.is_null() && data_size_in != 0 {
        return EBPF_INVALID_ARGUMENT;
    }
    let wrapper = safe::alloc(size_of::<TestContextWrapper>()).cast::<TestContextWrapper>();
    if wrapper.is_null() {
        return EBPF_NO_MEMORY;
    }
    // SAFETY: checked size above.
    let mut value = unsafe { context_in.cast::<TestContext>().read_unaligned() };
    value.data_start = data_in;
    value.data_end = data_in.wrapping_add(data_size_in);
    // SAFETY: a fresh allocation of the wrapper's size.
    unsafe {
        wrapper.write(TestContextWrapper {
            header: [0; 8],
            context: value,
        });
    }
    // SAFETY: out parameter of the caller.
    unsafe { context.write(wrapper.wrapping_byte_add(64).cast()) };
    EBPF_SUCCESS
}

/// `context_destroy` of the test program type.
pub(crate) unsafe extern "win64" fn test_context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    let irql = ebpf_ext_sys::intrin::KeGetCurrentIrql();
    CONTEXT_CALL_IRQLS.with(|c| c.set((c.get().0, irql)));
    CONTEXT_DESTROYS.with(|c| c.set(c.get() + 1));
    if context.is_null() {
        return;
    }
    let wrapper = context.wrapping_byte_sub(64);
    // SAFETY: `context` came from `test_context_create`, 64 bytes into a wrapper.
    let mut value = unsafe { context.cast::<TestContext>().read() };
    let data_len = (value.data_end as usize).wrapping_sub(value.data_start as usize);
    // SAFETY: size slots of the caller.
    let data_capacity = unsafe { data_size_out.read() };
    // SAFETY: as above.
    let context_room = unsafe { context_size_out.read() };
    let room = |buffer: *mut u8, size| (!buffer.is_null()).then_some(size);
    let seen = (
        room(data_out, data_capacity),
        room(context_out, context_room),
    );
    CONTEXT_DESTROY_ROOM.with(|r| r.set(seen));
    if !data_out.is_null() && data_capacity >= data_len {
        // SAFETY: the data the context points at (the caller's `data_in`) into a large
        // enough buffer.
        unsafe { ptr::copy_nonoverlapping(value.data_start, data_out, data_len) };
        // SAFETY: as above.
        unsafe { data_size_out.write(data_len) };
    } else {
        // SAFETY: as above.
        unsafe { data_size_out.write(0) };
    }
    // SAFETY: size slot of the caller.
    let context_capacity = unsafe { context_size_out.read() };
    if !context_out.is_null() && context_capacity >= size_of::<TestContext>() {
        value.data_start = ptr::null();
        value.data_end = ptr::null();
        // SAFETY: large enough buffer.
        unsafe { context_out.cast::<TestContext>().write_unaligned(value) };
        // SAFETY: as above.
        unsafe { context_size_out.write(size_of::<TestContext>()) };
    } else {
        // SAFETY: as above.
        unsafe { context_size_out.write(0) };
    }
    safe::free(wrapper.cast());
}

impl ProgramDataSpec {
    /// Valid data: name "test_prog", context {32, 16, 24, -1}, two program-type-specific
    /// helpers and one global override with addresses, DISPATCH_LEVEL, context callbacks.
    pub(crate) fn valid() -> Self {
        let mut b = Proto::new(0x1_0002, c"test_get_b");
        b.implicit_context = true;
        b.reallocate_packet = true;
        let mut pid = Proto::new(14, c"bpf_get_current_pid_tgid");
        pid.implicit_context = true;
        pid.arguments = [EBPF_ARGUMENT_TYPE_DONTCARE; 5];
        ProgramDataSpec {
            null_data: false,
            data_header: EBPF_PROGRAM_DATA_HEADER,
            null_info: false,
            info_header: EBPF_PROGRAM_INFORMATION_HEADER,
            null_descriptor: false,
            descriptor_header: EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER,
            name: Some(c"test_prog"),
            context: Some(ebpf_context_descriptor_t {
                size: 32,
                data: 16,
                end: 24,
                meta: -1,
            }),
            program_type: TEST_PROGRAM_TYPE,
            bpf_prog_type: 1000,
            is_privileged: true,
            helpers: vec![Proto::new(0x1_0001, c"test_get_a"), b],
            helper_count: None,
            null_helpers: false,
            global_helpers: vec![pid],
            global_count: None,
            null_global_helpers: false,
            helper_addresses: Some(Addresses::new(vec![helper_a_address(), helper_b_address()])),
            global_addresses: Some(Addresses::new(vec![helper_pid_address()])),
            context_create: Some(test_context_create),
            context_destroy: Some(test_context_destroy),
            required_irql: DISPATCH_LEVEL,
            capabilities: 0,
        }
    }

    /// Lays the data out in leaked memory; returns the `NpiSpecificCharacteristics`.
    pub(crate) fn build(&self) -> *const c_void {
        if self.null_data {
            return ptr::null();
        }
        let context: *const ebpf_context_descriptor_t =
            self.context.map_or(ptr::null(), |c| leak(c));
        let descriptor: *const ebpf_program_type_descriptor_t = if self.null_descriptor {
            ptr::null()
        } else {
            leak(ebpf_program_type_descriptor_t {
                header: self.descriptor_header,
                name: self.name.map_or(ptr::null(), CStr::as_ptr),
                context_descriptor: context,
                program_type: self.program_type,
                bpf_prog_type: self.bpf_prog_type,
                is_privileged: i8::from(self.is_privileged),
            })
        };
        let prototypes =
            |protos: &[Proto], null: bool| -> *const ebpf_helper_function_prototype_t {
                if null || protos.is_empty() {
                    return ptr::null();
                }
                let array: Vec<ebpf_helper_function_prototype_t> = protos
                    .iter()
                    .map(|p| ebpf_helper_function_prototype_t {
                        header: p.header,
                        helper_id: p.id,
                        name: p.name.map_or(ptr::null(), CStr::as_ptr),
                        return_type: p.return_type,
                        arguments: p.arguments,
                        flags: ebpf_helper_function_prototype_flags_t {
                            bits: u8::from(p.reallocate_packet),
                        },
                        implicit_context: p.implicit_context,
                    })
                    .collect();
                array.leak().as_ptr()
            };
        let count = |protos: &[Proto], over: Option<u32>| {
            over.unwrap_or_else(|| u32::try_from(protos.len()).unwrap())
        };
        let info: *const ebpf_program_info_t = if self.null_info {
            ptr::null()
        } else {
            leak(ebpf_program_info_t {
                header: self.info_header,
                program_type_descriptor: descriptor,
                count_of_program_type_specific_helpers: count(&self.helpers, self.helper_count),
                program_type_specific_helper_prototype: prototypes(
                    &self.helpers,
                    self.null_helpers,
                ),
                count_of_global_helpers: count(&self.global_helpers, self.global_count),
                global_helper_prototype: prototypes(&self.global_helpers, self.null_global_helpers),
            })
        };
        let table = |a: &Option<Addresses>| -> *const ebpf_helper_function_addresses_t {
            a.as_ref().map_or(ptr::null(), |a| {
                leak(ebpf_helper_function_addresses_t {
                    header: a.header,
                    helper_function_count: a.count,
                    helper_function_address: a
                        .values
                        .as_ref()
                        .map_or(ptr::null(), |v| v.clone().leak().as_ptr()),
                })
            })
        };
        let data = leak(ebpf_program_data_t {
            header: self.data_header,
            program_info: info,
            program_type_specific_helper_function_addresses: table(&self.helper_addresses),
            global_helper_function_addresses: table(&self.global_addresses),
            context_create: self.context_create,
            context_destroy: self.context_destroy,
            required_irql: self.required_irql,
            capabilities: program_data_capabilities_t {
                value: self.capabilities,
            },
        });
        ptr::from_ref(data).cast()
    }
}

/// Test-side state of a program-information provider.
#[derive(Default)]
pub(crate) struct InfoProviderState {
    /// Returned by `ProviderAttachClient` (0 = attach).
    pub(crate) attach_status: AtomicI32,
    pub(crate) attaches: AtomicU32,
    pub(crate) detaches: AtomicU32,
    pub(crate) cleanups: AtomicU32,
    pub(crate) client_module: Mutex<Option<(i32, GUID)>>,
    /// The `reserved` field of the client dispatch table the last attach received; `None`
    /// if it was NULL.
    pub(crate) client_dispatch: Mutex<Option<i32>>,
}

std::thread_local! {
    /// How long this thread's program-information attaches sleep before they attach
    /// ([`with_attach_delay`]).
    static ATTACH_DELAY: core::cell::Cell<core::time::Duration> =
        const { core::cell::Cell::new(core::time::Duration::ZERO) };
}

/// Runs `f` with each program-information attach made on this thread (a provider
/// registering attaches its existing clients on the registering thread) sleeping `delay`
/// first: it widens the time during which the client is being attached.
pub(crate) fn with_attach_delay<T>(delay: core::time::Duration, f: impl FnOnce() -> T) -> T {
    ATTACH_DELAY.with(|d| d.set(delay));
    let result = f();
    ATTACH_DELAY.with(|d| d.set(core::time::Duration::ZERO));
    result
}

fn info_state(ctx: *const c_void) -> &'static InfoProviderState {
    // SAFETY: every program-information provider context here is a leaked state.
    unsafe { &*ctx.cast::<InfoProviderState>() }
}

unsafe extern "win64" fn info_attach(
    _binding: HANDLE,
    ctx: *mut c_void,
    client: *const NPI_REGISTRATION_INSTANCE,
    _client_binding: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    let s = info_state(ctx);
    let delay = ATTACH_DELAY.with(core::cell::Cell::get);
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    // SAFETY: a non-NULL client dispatch of the program-information NPI is `{int reserved}`.
    *s.client_dispatch.lock().unwrap() =
        (!client_dispatch.is_null()).then(|| unsafe { client_dispatch.cast::<i32>().read() });
    let status = s.attach_status.load(Ordering::SeqCst);
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: NMR's client registration instance.
    let module_id = unsafe { (*client).ModuleId };
    // SAFETY: its module id.
    let module = unsafe { *module_id };
    *s.client_module.lock().unwrap() = Some((module.Type, module.guid().unwrap_or_default()));
    let binding =
        safe::alloc(size_of::<*const InfoProviderState>()).cast::<*const InfoProviderState>();
    assert!(!binding.is_null());
    // SAFETY: a fresh allocation of the right size.
    unsafe { binding.write(s) };
    s.attaches.fetch_add(1, Ordering::SeqCst);
    // SAFETY: NMR's out slots.
    unsafe { provider_binding.write(binding.cast()) };
    // SAFETY: as above.
    unsafe { provider_dispatch.write(ptr::null()) };
    STATUS_SUCCESS
}

fn info_binding_state(binding: *mut c_void) -> &'static InfoProviderState {
    // SAFETY: the binding context this provider allocated at attach holds its leaked state.
    let state = unsafe { binding.cast::<*const InfoProviderState>().read() };
    // SAFETY: a leaked state.
    unsafe { &*state }
}

unsafe extern "win64" fn info_detach(binding: *mut c_void) -> NTSTATUS {
    info_binding_state(binding)
        .detaches
        .fetch_add(1, Ordering::SeqCst);
    STATUS_SUCCESS
}

unsafe extern "win64" fn info_cleanup(binding: *mut c_void) {
    info_binding_state(binding)
        .cleanups
        .fetch_add(1, Ordering::SeqCst);
    safe::free(binding);
}

/// A registered program-information provider.
pub(crate) struct InfoProvider {
    handle: usize,
    pub(crate) state: &'static InfoProviderState,
}

impl InfoProvider {
    /// Registers `spec`'s data under a `MIT_GUID` module id of `program_type`.
    pub(crate) fn register(program_type: GUID, spec: &ProgramDataSpec) -> Self {
        Self::register_raw(NPI_MODULEID::from_guid(program_type), spec.build(), 0)
    }

    /// Registers with any module id and data; `attach_status` is what its attach returns.
    pub(crate) fn register_raw(
        module_id: NPI_MODULEID,
        data: *const c_void,
        attach_status: NTSTATUS,
    ) -> Self {
        Self::register_npi(
            &EBPF_PROGRAM_INFO_EXTENSION_IID,
            module_id,
            data,
            attach_status,
        )
    }

    /// A provider of `npi_id` with these callbacks (which depend on no NPI).
    fn register_npi(
        npi_id: &'static GUID,
        module_id: NPI_MODULEID,
        data: *const c_void,
        attach_status: NTSTATUS,
    ) -> Self {
        let state = leak(InfoProviderState::default());
        state.attach_status.store(attach_status, Ordering::SeqCst);
        let handle = register_provider(
            npi_id,
            module_id,
            data,
            ptr::from_ref(state).cast(),
            info_attach,
            info_detach,
            info_cleanup,
        );
        InfoProvider {
            handle: handle as usize,
            state,
        }
    }

    pub(crate) fn deregister(self) {
        deregister(self.handle as HANDLE);
    }
}

/// Deregisters a provider from another thread than the one that owns it (waiting).
pub(crate) fn deregister_btf(provider: &InfoProvider) {
    deregister(provider.handle as HANDLE);
}

/// A registered BTF-resolved function provider (the program-information provider's
/// callbacks, which depend on no NPI): `module` is its NMR module id, `data` its
/// `NpiSpecificCharacteristics`, leaked.
pub(crate) fn register_btf_provider(module: GUID, data: *const c_void) -> InfoProvider {
    InfoProvider::register_npi(
        &EBPF_BTF_RESOLVED_FUNCTION_EXTENSION_IID,
        NPI_MODULEID::from_guid(module),
        data,
        STATUS_SUCCESS,
    )
}

// ---------------------------------------------------------------------------------------------
// Hook provider.
// ---------------------------------------------------------------------------------------------

/// What one client presented at attach, as the test hook provider saw it.
#[derive(Debug, Clone)]
pub(crate) struct ClientView {
    pub(crate) binding: usize,
    pub(crate) npi_id: GUID,
    pub(crate) module_type: i32,
    pub(crate) module_guid: GUID,
    /// `NpiSpecificCharacteristics`.
    pub(crate) client_data: usize,
    /// The client data header, when the client data is non-NULL.
    pub(crate) header: Option<ebpf_extension_header_t>,
    /// `data` (as an address).
    pub(crate) data: usize,
    /// `data_size`.
    pub(crate) data_size: usize,
    /// `prog_attach_flags`.
    pub(crate) flags: u64,
    /// Up to 4 KiB of the attach parameter, when `data` is non-NULL.
    pub(crate) parameter: Vec<u8>,
    pub(crate) binding_context: usize,
    pub(crate) dispatch: usize,
    /// The dispatch table, when non-NULL.
    pub(crate) table: Option<ebpf_extension_program_dispatch_table_t>,
}

/// Test-side state of a hook provider.
#[derive(Default)]
pub(crate) struct HookState {
    /// Returned by `ProviderAttachClient` (0 = attach).
    pub(crate) attach_status: AtomicI32,
    /// Return `STATUS_PENDING` from detach; the test completes it.
    pub(crate) pend_detach: AtomicBool,
    pub(crate) attaches: AtomicU32,
    pub(crate) offers: AtomicU32,
    pub(crate) detaches: AtomicU32,
    pub(crate) cleanups: AtomicU32,
    /// Every attach offer, in order (including those it refused).
    pub(crate) offered: Mutex<Vec<ClientView>>,
    /// Attached clients.
    pub(crate) clients: Mutex<Vec<ClientView>>,
    /// Binding handles whose detach is pending.
    pub(crate) pending: Mutex<Vec<usize>>,
    /// Invocations in flight through this provider (its "rundown").
    pub(crate) in_flight: AtomicU32,
    /// Invoke each client once from inside the attach callback, before attaching it.
    pub(crate) invoke_in_attach: AtomicBool,
    /// What those invocations returned (status, result), in order.
    pub(crate) attach_invocations: Mutex<Vec<(ebpf_result_t, u32)>>,
}

fn hook_state(ctx: *const c_void) -> &'static HookState {
    // SAFETY: every hook provider context here is a leaked state.
    unsafe { &*ctx.cast::<HookState>() }
}

/// The per-client binding context the hook provider allocates from pool.
#[repr(C)]
struct HookBinding {
    state: *const HookState,
    binding: usize,
}

/// Reads what a client presented.
///
/// # Safety
/// NMR's arguments to `ProviderAttachClient` from the core-sim, which backs at least 48
/// bytes of client data, the attach parameter up to `data_size` and a 40-byte dispatch table.
unsafe fn view(
    binding: HANDLE,
    client: *const NPI_REGISTRATION_INSTANCE,
    client_binding: *mut c_void,
    client_dispatch: *const c_void,
) -> ClientView {
    // SAFETY: NMR's client registration instance.
    let instance = unsafe { *client };
    // SAFETY: as above.
    let npi_id = unsafe { *instance.NpiId };
    // SAFETY: as above.
    let module = unsafe { *instance.ModuleId };
    let client_data = instance
        .NpiSpecificCharacteristics
        .cast::<ebpf_extension_data_t>();
    let data = if client_data.is_null() {
        None
    } else {
        // SAFETY: the core-sim backs at least 48 bytes.
        Some(unsafe { client_data.read() })
    };
    let parameter = match data {
        Some(d) if !d.data.is_null() => {
            let len = d.data_size.min(4096);
            // SAFETY: the core-sim backs `data_size` bytes (up to 64 KiB).
            unsafe { core::slice::from_raw_parts(d.data.cast::<u8>(), len) }.to_vec()
        }
        _ => Vec::new(),
    };
    let table = if client_dispatch.is_null() {
        None
    } else {
        // SAFETY: the core-sim's tables are 40 bytes.
        Some(unsafe {
            client_dispatch
                .cast::<ebpf_extension_program_dispatch_table_t>()
                .read()
        })
    };
    ClientView {
        binding: binding as usize,
        npi_id,
        module_type: module.Type,
        module_guid: module.guid().unwrap_or_default(),
        client_data: client_data as usize,
        header: data.map(|d| d.header),
        data: data.map_or(0, |d| d.data as usize),
        data_size: data.map_or(0, |d| d.data_size),
        flags: data.map_or(0, |d| d.prog_attach_flags),
        parameter,
        binding_context: client_binding as usize,
        dispatch: client_dispatch as usize,
        table,
    }
}

unsafe extern "win64" fn hook_attach(
    binding: HANDLE,
    ctx: *mut c_void,
    client: *const NPI_REGISTRATION_INSTANCE,
    client_binding: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    let s = hook_state(ctx);
    s.offers.fetch_add(1, Ordering::SeqCst);
    // SAFETY: NMR's arguments, presented by the core-sim.
    let client_view = unsafe { view(binding, client, client_binding, client_dispatch) };
    s.offered.lock().unwrap().push(client_view.clone());
    let status = s.attach_status.load(Ordering::SeqCst);
    if status != STATUS_SUCCESS {
        return status;
    }
    let hook_binding = safe::alloc(size_of::<HookBinding>()).cast::<HookBinding>();
    assert!(!hook_binding.is_null());
    // SAFETY: a fresh allocation of the right size.
    unsafe {
        hook_binding.write(HookBinding {
            state: s,
            binding: binding as usize,
        });
    }
    if s.invoke_in_attach.load(Ordering::SeqCst) {
        let mut context = HookContext::new(0);
        let invoked = s.invoke_raw(&client_view, client_binding.cast_const(), context.ptr());
        s.attach_invocations.lock().unwrap().push(invoked);
    }
    s.clients.lock().unwrap().push(client_view);
    s.attaches.fetch_add(1, Ordering::SeqCst);
    // SAFETY: NMR's out slots.
    unsafe { provider_binding.write(hook_binding.cast()) };
    // SAFETY: as above.
    unsafe { provider_dispatch.write(ptr::null()) };
    STATUS_SUCCESS
}

unsafe extern "win64" fn hook_detach(provider_binding: *mut c_void) -> NTSTATUS {
    // SAFETY: the binding context this provider allocated at attach.
    let b = unsafe { provider_binding.cast::<HookBinding>().read() };
    // SAFETY: the leaked state.
    let s = unsafe { &*b.state };
    s.detaches.fetch_add(1, Ordering::SeqCst);
    s.clients.lock().unwrap().retain(|c| c.binding != b.binding);
    if s.pend_detach.load(Ordering::SeqCst) {
        s.pending.lock().unwrap().push(b.binding);
        STATUS_PENDING
    } else {
        STATUS_SUCCESS
    }
}

unsafe extern "win64" fn hook_cleanup(provider_binding: *mut c_void) {
    // SAFETY: the binding context this provider allocated at attach.
    let b = unsafe { provider_binding.cast::<HookBinding>().read() };
    // SAFETY: the leaked state.
    unsafe { &*b.state }.cleanups.fetch_add(1, Ordering::SeqCst);
    safe::free(provider_binding);
}

/// A registered hook provider.
pub(crate) struct HookProvider {
    handle: usize,
    pub(crate) state: &'static HookState,
}

/// Valid attach provider data for the test hook.
pub(crate) fn hook_data(program_type: GUID) -> ebpf_attach_provider_data_t {
    ebpf_attach_provider_data_t {
        header: EBPF_ATTACH_PROVIDER_DATA_HEADER,
        supported_program_type: program_type,
        bpf_attach_type: TEST_BPF_ATTACH_TYPE,
        link_type: BPF_LINK_TYPE_PLAIN,
    }
}

impl HookProvider {
    /// A valid hook provider of `attach_type` for `program_type`.
    pub(crate) fn register(attach_type: GUID, program_type: GUID) -> Self {
        Self::register_with(
            NPI_MODULEID::from_guid(attach_type),
            Some(hook_data(program_type)),
            STATUS_SUCCESS,
            false,
        )
    }

    /// A valid hook provider that invokes each client once from inside its attach callback
    /// (see [`HookState::attach_invocations`]).
    pub(crate) fn register_invoking_in_attach(attach_type: GUID, program_type: GUID) -> Self {
        let state = leak(HookState::default());
        state.invoke_in_attach.store(true, Ordering::SeqCst);
        Self::register_state(
            state,
            NPI_MODULEID::from_guid(attach_type),
            Some(hook_data(program_type)),
        )
    }

    /// Any module id and attach provider data (`None`: NULL); `attach_status` is what its
    /// attach returns; `pend_detach` makes its detach return `STATUS_PENDING`.
    pub(crate) fn register_with(
        module_id: NPI_MODULEID,
        data: Option<ebpf_attach_provider_data_t>,
        attach_status: NTSTATUS,
        pend_detach: bool,
    ) -> Self {
        let state = leak(HookState::default());
        state.attach_status.store(attach_status, Ordering::SeqCst);
        state.pend_detach.store(pend_detach, Ordering::SeqCst);
        Self::register_state(state, module_id, data)
    }

    fn register_state(
        state: &'static HookState,
        module_id: NPI_MODULEID,
        data: Option<ebpf_attach_provider_data_t>,
    ) -> Self {
        let data: *const c_void = data.map_or(ptr::null(), |d| ptr::from_ref(leak(d)).cast());
        let handle = register_provider(
            &EBPF_HOOK_EXTENSION_IID,
            module_id,
            data,
            ptr::from_ref(state).cast(),
            hook_attach,
            hook_detach,
            hook_cleanup,
        );
        HookProvider {
            handle: handle as usize,
            state,
        }
    }

    pub(crate) fn handle(&self) -> HANDLE {
        self.handle as HANDLE
    }

    pub(crate) fn deregister(self) {
        deregister(self.handle as HANDLE);
    }
}

/// A program context as an extension passes it to invoke: the 64-byte header the core
/// writes, then the context itself (a `u32`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct HookContext {
    pub(crate) header: [u64; 8],
    pub(crate) value: u32,
}

impl HookContext {
    pub(crate) fn new(value: u32) -> Self {
        HookContext {
            header: [0; 8],
            value,
        }
    }

    /// The pointer a program sees: just past the header.
    pub(crate) fn ptr(&mut self) -> *mut c_void {
        (&raw mut self.value).cast()
    }
}

impl HookState {
    /// Invokes attached client `index` with a fresh [`HookContext`] holding `value`.
    pub(crate) fn invoke_value(&self, index: usize, value: u32) -> (ebpf_result_t, u32) {
        let mut context = HookContext::new(value);
        self.invoke(index, context.ptr())
    }

    /// The attached client `index`.
    pub(crate) fn client(&self, index: usize) -> ClientView {
        self.clients.lock().unwrap()[index].clone()
    }

    /// Invokes attached client `index` as an extension does: the invoke entry of its
    /// dispatch table with its binding context; returns the result and `*result`.
    pub(crate) fn invoke(
        &self,
        index: usize,
        program_context: *mut c_void,
    ) -> (ebpf_result_t, u32) {
        let client = self.client(index);
        self.invoke_raw(
            &client,
            client.binding_context as *const c_void,
            program_context,
        )
    }

    /// Invokes `client`'s invoke entry with any binding context.
    pub(crate) fn invoke_raw(
        &self,
        client: &ClientView,
        binding_context: *const c_void,
        program_context: *mut c_void,
    ) -> (ebpf_result_t, u32) {
        let invoke = client
            .table
            .and_then(|t| t.ebpf_program_invoke_function)
            .expect("invoke entry");
        // Not 0: a failed invocation must set it to 0 itself.
        let mut result = 0xDEAD_BEEF_u32;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the client's invoke with a binding context the test chose (the core-sim
        // checks it) while the client is attached or its detach is pending.
        let status = unsafe { invoke(binding_context, program_context, &raw mut result) };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        (status, result)
    }

    /// Completes every pending detach.
    pub(crate) fn complete_pending(&self) {
        let pending: Vec<usize> = self.pending.lock().unwrap().drain(..).collect();
        for binding in pending {
            safe::detach_client_complete(binding as HANDLE);
        }
    }
}
