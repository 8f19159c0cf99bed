//! Provider program data against core-sim's validation: `ebpf-ext-core-sim`'s
//! `ProgramInfoClient::attach`, which checks a program-information provider's
//! `ebpf_program_data_t` (program info, type descriptor, context descriptor, both helper
//! prototype arrays, both helper address tables, IRQL, capabilities) as the eBPF core does and
//! copies it.
//!
//! The input describes every object of the program data: each header (version, size,
//! total_size), each pointer NULL or not, counts and strides, names, helper ids and types. The
//! target builds the objects, registers a raw NMR provider of the program-information NPI that
//! publishes them, and attaches core-sim's client to it through usersim's NMR.
//!
//! Every object is allocated with exactly the bytes its header declares (at least its header;
//! prototype arrays: `count` elements at the larger of the two strides the core uses; address
//! arrays: `count` entries), so AddressSanitizer reports a read past what the provider
//! declared. Names are NUL-terminated, as the contract requires.
//!
//! Properties checked besides "no crash, no leak": accepted program data has the current
//! version and an accepted size, a non-NULL program info, an IRQL ≤ HIGH_LEVEL and the
//! reserved capability clear; the copy holds as many helpers as declared, with the names
//! published.
#![no_main]

mod common;

use core::ffi::c_void;
use core::ptr;

use arbitrary::Arbitrary;
use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_PROGRAM_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::ebpf_result_t;
use ebpf_ext_sys::netioddk::{
    NPI_MODULEID, NPI_MODULEID_0, NPI_PROVIDER_CHARACTERISTICS, NPI_REGISTRATION_INSTANCE,
    NmrDeregisterProvider, NmrRegisterProvider, NmrWaitForProviderDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_PENDING, STATUS_SUCCESS};
use ebpf_ext_usersim::{Kernel, TagUsage};
use libfuzzer_sys::fuzz_target;

const PROGRAM_TYPE: GUID = GUID::from_u128(0xf0f0_1001_aeec_11ec_9a30_1860_2489_beee);
const MAX_HELPERS: usize = 8;
const HIGH_LEVEL: u8 = 15;

// ---- the input ------------------------------------------------------------------------------

/// Present (first variant: zero input bytes mean "present") or NULL.
#[derive(Arbitrary, Debug)]
enum Pointer<T> {
    Present(T),
    Null,
}

impl<T> Pointer<T> {
    fn as_ref(&self) -> Option<&T> {
        match self {
            Pointer::Present(t) => Some(t),
            Pointer::Null => None,
        }
    }
}

/// A header; zero bytes give the current version and size.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Header {
    /// XORed with the current version (1).
    version: u16,
    size: Size,
    /// XORed with the object's current total size.
    total_size: u16,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Current,
    /// The other accepted size, where there is one (program data: 65; prototypes: 64 or 65).
    Older(bool),
    Any(u16),
}

impl Header {
    /// (version, size, total_size) for an object whose current size is `size`, older accepted
    /// sizes `older`, total size `total`.
    fn resolve(self, size: usize, older: &[usize], total: usize) -> (u16, usize, usize) {
        let declared = match self.size {
            Size::Current => size,
            Size::Older(b) => older
                .get(usize::from(b))
                .or(older.first())
                .copied()
                .unwrap_or(size),
            Size::Any(n) => usize::from(n),
        };
        (
            self.version ^ 1,
            declared,
            usize::from(self.total_size) ^ total,
        )
    }
}

/// NULL (first variant: zero input bytes mean "absent") or present.
#[derive(Arbitrary, Debug)]
enum Optional<T> {
    Null,
    Present(T),
}

impl<T> Optional<T> {
    fn as_ref(&self) -> Option<&T> {
        match self {
            Optional::Present(t) => Some(t),
            Optional::Null => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Descriptor {
    header: Header,
    name: Pointer<Vec<u8>>,
    context: Pointer<[i32; 4]>,
    program_type: u128,
    bpf_prog_type: u32,
    is_privileged: u8,
}

#[derive(Arbitrary, Debug)]
struct Prototype {
    header: Header,
    helper_id: u32,
    name: Pointer<Vec<u8>>,
    return_type: i32,
    arguments: [i32; 5],
    flags: u8,
    implicit_context: u8,
}

#[derive(Arbitrary, Debug)]
enum Count {
    /// The number of elements given.
    Actual,
    Any(u8),
}

#[derive(Arbitrary, Debug)]
enum Stride {
    /// Element 0's `total_size` is the stride the elements are laid out at.
    Consistent,
    Zero,
    Any(u8),
}

#[derive(Arbitrary, Debug)]
struct Prototypes {
    count: Count,
    /// Element 0's `header.total_size` (the stride the core validates at).
    stride: Stride,
    array: Pointer<Vec<Prototype>>,
}

#[derive(Arbitrary, Debug)]
struct Addresses {
    header: Header,
    /// `helper_function_count`: `Actual` is the matching prototype count.
    count: Count,
    array: Pointer<()>,
}

#[derive(Arbitrary, Debug)]
struct Info {
    header: Header,
    descriptor: Pointer<Descriptor>,
    specific: Prototypes,
    global: Prototypes,
}

#[derive(Arbitrary, Debug)]
struct ProgramData {
    header: Header,
    info: Pointer<Info>,
    specific_addresses: Optional<Addresses>,
    global_addresses: Optional<Addresses>,
    no_context_create: bool,
    no_context_destroy: bool,
    required_irql: u8,
    capabilities: u32,
}

#[derive(Arbitrary, Debug)]
enum Module {
    /// `MIT_GUID`, the program type.
    ProgramType,
    Raw {
        length: u16,
        kind: i32,
        id: u128,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    module: Module,
    data: Pointer<ProgramData>,
}

// ---- building the objects -------------------------------------------------------------------

/// Every buffer of one input; pointers between them stay valid while this lives (a `Vec`'s
/// heap buffer does not move when the `Vec` itself does).
#[derive(Default)]
struct Arena {
    buffers: Vec<Vec<u8>>,
}

impl Arena {
    /// A zeroed buffer of exactly `len` bytes; returns its address.
    fn alloc(&mut self, len: usize) -> (usize, &mut [u8]) {
        self.buffers.push(vec![0; len]);
        let buffer = self.buffers.last_mut().expect("just pushed");
        (buffer.as_ptr() as usize, buffer.as_mut_slice())
    }

    /// A NUL-terminated copy of `name`.
    fn c_string(&mut self, name: &[u8]) -> u64 {
        let (address, buffer) = self.alloc(name.len() + 1);
        buffer[..name.len()].copy_from_slice(name);
        address as u64
    }

    /// An object of `declared` bytes (at least its 24-byte header), with the header written.
    fn object(&mut self, (version, size, total): (u16, usize, usize)) -> (u64, &mut [u8]) {
        let (address, buffer) = self.alloc(size.max(24));
        put(buffer, 0, version.to_le_bytes());
        put(buffer, 8, (size as u64).to_le_bytes());
        put(buffer, 16, (total as u64).to_le_bytes());
        (address as u64, buffer)
    }
}

/// Writes `bytes` at `offset` if the object extends that far (an older, shorter version has
/// no such field).
fn put<const N: usize>(buffer: &mut [u8], offset: usize, bytes: [u8; N]) {
    if let Some(slot) = buffer.get_mut(offset..offset + N) {
        slot.copy_from_slice(&bytes);
    }
}

unsafe extern "win64" fn context_create(
    _data_in: *const u8,
    _data_size_in: usize,
    _context_in: *const u8,
    _context_size_in: usize,
    _context: *mut *mut c_void,
) -> ebpf_result_t {
    panic!("core-sim called context_create during attach")
}

unsafe extern "win64" fn context_destroy(
    _context: *mut c_void,
    _data_out: *mut u8,
    _data_size_out: *mut usize,
    _context_out: *mut u8,
    _context_size_out: *mut usize,
) {
    panic!("core-sim called context_destroy during attach")
}

/// What was published, for checking the copy.
#[derive(Default)]
struct Published {
    specific_count: usize,
    global_count: usize,
    descriptor_name: Option<Vec<u8>>,
}

/// Builds a prototype array; returns its address and declared count.
fn prototypes(arena: &mut Arena, p: &Prototypes) -> (u64, u32) {
    let given = p.array.as_ref().map_or(0, |a| a.len().min(MAX_HELPERS));
    let count = match p.count {
        Count::Actual => given,
        Count::Any(n) => usize::from(n % 32),
    };
    let Some(elements) = p.array.as_ref() else {
        return (0, count as u32);
    };
    let elements = &elements[..given];
    // Layout stride: element 0's size rounded up to 8 (the core's copy stride), at least 64
    // (the fields through `arguments`, present in every accepted version).
    let first = elements
        .first()
        .map(|e| e.header.resolve(66, &[64, 65], 72));
    let layout = first.map_or(72, |(_, size, _)| size.clamp(64, 72).next_multiple_of(8));
    let total_0 = match p.stride {
        Stride::Consistent => layout,
        Stride::Zero => 0,
        Stride::Any(n) => usize::from(n),
    };
    // Readable at both strides for `count` elements.
    let len = count * layout.max(total_0).max(40);
    let names: Vec<u64> = elements
        .iter()
        .map(|e| e.name.as_ref().map_or(0, |n| arena.c_string(n)))
        .collect();
    let (address, buffer) = arena.alloc(len);
    for (index, (element, name)) in elements.iter().zip(names).enumerate().take(count) {
        let (version, size, total) = element.header.resolve(66, &[64, 65], 72);
        let total = if index == 0 { total_0 } else { total };
        let base = index * layout;
        let slot = &mut buffer[base..(base + layout).min(len)];
        put(slot, 0, version.to_le_bytes());
        put(slot, 8, (size as u64).to_le_bytes());
        put(slot, 16, (total as u64).to_le_bytes());
        put(slot, 24, element.helper_id.to_le_bytes());
        put(slot, 32, name.to_le_bytes());
        put(slot, 40, element.return_type.to_le_bytes());
        for (i, argument) in element.arguments.iter().enumerate() {
            put(slot, 44 + 4 * i, argument.to_le_bytes());
        }
        put(slot, 64, [element.flags]);
        put(slot, 65, [element.implicit_context]);
    }
    (address as u64, count as u32)
}

fn addresses(arena: &mut Arena, a: &Addresses, prototypes: u32) -> u64 {
    let count = match a.count {
        Count::Actual => prototypes,
        Count::Any(n) => u32::from(n % 32),
    };
    let array = match a.array {
        Pointer::Present(()) => {
            let (address, buffer) = arena.alloc(8 * count as usize);
            for (i, entry) in buffer.chunks_mut(8).enumerate() {
                entry.copy_from_slice(&(0x1000 + i as u64).to_le_bytes());
            }
            address as u64
        }
        Pointer::Null => 0,
    };
    let (address, buffer) = arena.object(a.header.resolve(40, &[], 40));
    put(buffer, 24, count.to_le_bytes());
    put(buffer, 32, array.to_le_bytes());
    address
}

/// Builds the program data; returns its address (0: NULL).
fn program_data(arena: &mut Arena, data: &ProgramData, published: &mut Published) -> u64 {
    let (info, specific_count, global_count) = match data.info.as_ref() {
        None => (0, 0, 0),
        Some(info) => {
            let descriptor = match info.descriptor.as_ref() {
                None => 0,
                Some(d) => {
                    let name = d.name.as_ref().map_or(0, |n| {
                        published.descriptor_name = Some(n.clone());
                        arena.c_string(n)
                    });
                    let context = d.context.as_ref().map_or(0, |c| {
                        let (address, buffer) = arena.alloc(16);
                        for (i, v) in c.iter().enumerate() {
                            // Zero bytes: a 16-byte context (size ≥ 16 is required).
                            let v = if i == 0 { v ^ 16 } else { *v };
                            put(buffer, 4 * i, v.to_le_bytes());
                        }
                        address as u64
                    });
                    let (address, buffer) = arena.object(d.header.resolve(61, &[], 64));
                    put(buffer, 24, name.to_le_bytes());
                    put(buffer, 32, context.to_le_bytes());
                    put(buffer, 40, d.program_type.to_le_bytes());
                    put(buffer, 56, d.bpf_prog_type.to_le_bytes());
                    put(buffer, 60, [d.is_privileged]);
                    address
                }
            };
            let (specific, specific_count) = prototypes(arena, &info.specific);
            let (global, global_count) = prototypes(arena, &info.global);
            let (address, buffer) = arena.object(info.header.resolve(64, &[], 64));
            put(buffer, 24, descriptor.to_le_bytes());
            put(buffer, 32, specific_count.to_le_bytes());
            put(buffer, 40, specific.to_le_bytes());
            put(buffer, 48, global_count.to_le_bytes());
            put(buffer, 56, global.to_le_bytes());
            (address, specific_count, global_count)
        }
    };
    published.specific_count = specific_count as usize;
    published.global_count = global_count as usize;
    let specific = data
        .specific_addresses
        .as_ref()
        .map_or(0, |a| addresses(arena, a, specific_count));
    let global = data
        .global_addresses
        .as_ref()
        .map_or(0, |a| addresses(arena, a, global_count));
    let (address, buffer) = arena.object(data.header.resolve(72, &[65], 72));
    put(buffer, 24, info.to_le_bytes());
    put(buffer, 32, specific.to_le_bytes());
    put(buffer, 40, global.to_le_bytes());
    let create = if data.no_context_create {
        0
    } else {
        context_create as *const () as u64
    };
    let destroy = if data.no_context_destroy {
        0
    } else {
        context_destroy as *const () as u64
    };
    put(buffer, 48, create.to_le_bytes());
    put(buffer, 56, destroy.to_le_bytes());
    put(buffer, 64, [data.required_irql % 32]);
    put(buffer, 68, data.capabilities.to_le_bytes());
    address
}

// ---- the provider ---------------------------------------------------------------------------

unsafe extern "win64" fn provider_attach(
    _binding: HANDLE,
    context: *mut c_void,
    _client: *const NPI_REGISTRATION_INSTANCE,
    _client_binding_context: *mut c_void,
    _client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    // SAFETY: NMR passes writable slots.
    unsafe { provider_binding_context.write(context) };
    // SAFETY: as above.
    unsafe { provider_dispatch.write(ptr::null()) };
    STATUS_SUCCESS
}

unsafe extern "win64" fn provider_detach(_binding_context: *mut c_void) -> NTSTATUS {
    STATUS_SUCCESS
}

struct Env {
    kernel: Kernel,
    baseline: Vec<TagUsage>,
}

thread_local! {
    /// Created on the fuzzing thread and never dropped (see hook_attach.rs).
    static ENV: &'static Env = Box::leak(Box::new({
        let kernel = Kernel::new();
        let baseline = kernel.pool_outstanding();
        Env { kernel, baseline }
    }));
}

fn scenario(env: &Env, input: &Input) {
    let mut arena = Arena::default();
    let mut published = Published::default();
    let data = input
        .data
        .as_ref()
        .map_or(0, |d| program_data(&mut arena, d, &mut published));
    let module_id = match input.module {
        Module::ProgramType => NPI_MODULEID::from_guid(PROGRAM_TYPE),
        Module::Raw { length, kind, id } => NPI_MODULEID {
            Length: length,
            Type: kind,
            u: NPI_MODULEID_0 {
                Guid: GUID::from_u128(id),
            },
        },
    };
    let npi_id = EBPF_PROGRAM_INFO_EXTENSION_IID;
    let characteristics = NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        Length: size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
        ProviderAttachClient: Some(provider_attach),
        ProviderDetachClient: Some(provider_detach),
        ProviderCleanupBindingContext: None,
        ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: &raw const npi_id,
            ModuleId: &raw const module_id,
            Number: 0,
            NpiSpecificCharacteristics: data as *const c_void,
        },
    };
    let mut handle = ptr::null_mut();
    // SAFETY: the characteristics, module id and program data outlive the registration
    // (deregistered and waited for below).
    let status = unsafe {
        NmrRegisterProvider(&raw const characteristics, ptr::null_mut(), &raw mut handle)
    };
    assert_eq!(status, STATUS_SUCCESS, "NmrRegisterProvider");
    let attached = ProgramInfoClient::attach(PROGRAM_TYPE);
    if common::verbose() {
        eprintln!("{attached:?}");
    }
    if let Ok(client) = attached {
        check_accepted(data, &published, &client);
        client.detach().expect("detach");
    }
    // SAFETY: our registration, deregistered once.
    let status = unsafe { NmrDeregisterProvider(handle) };
    assert!(status == STATUS_SUCCESS || status == STATUS_PENDING);
    // SAFETY: as above.
    let _ = unsafe { NmrWaitForProviderDeregisterComplete(handle) };
    drop(arena);
    env.kernel.wait_for_work_items();
    assert_eq!(env.kernel.pool_outstanding(), env.baseline, "pool leaked");
    assert!(
        env.kernel.nmr_registrations().is_empty(),
        "NMR registrations left"
    );
    assert_eq!(env.kernel.nmr_binding_count(), 0, "NMR bindings left");
}

/// What accepted program data must have been.
fn check_accepted(data: u64, published: &Published, client: &ProgramInfoClient) {
    assert_ne!(data, 0, "NULL program data accepted");
    let bytes = data as *const u8;
    // SAFETY: the program data is at least 24 bytes (its header), alive in the arena.
    let (version, size) = unsafe {
        (
            bytes.cast::<u16>().read_unaligned(),
            bytes.add(8).cast::<u64>().read_unaligned(),
        )
    };
    assert_eq!(version, 1, "program data of another version accepted");
    assert!(
        size == 65 || size == 72,
        "program data of size {size} accepted"
    );
    // SAFETY: size ≥ 65: the fields through `required_irql` are there.
    let (info, irql) = unsafe {
        (
            bytes.add(24).cast::<u64>().read_unaligned(),
            bytes.add(64).read(),
        )
    };
    assert_ne!(info, 0, "NULL program info accepted");
    assert!(irql <= HIGH_LEVEL, "required_irql {irql} accepted");
    let info = client.info();
    assert_eq!(info.required_irql, irql);
    assert_eq!(info.capabilities & 1, 0, "reserved capability accepted");
    assert_eq!(info.helpers.len(), published.specific_count);
    assert_eq!(info.global_helpers.len(), published.global_count);
    let name = published
        .descriptor_name
        .as_ref()
        .expect("a type descriptor without a name accepted");
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    assert_eq!(info.name, String::from_utf8_lossy(&name[..end]));
    for helper in info.helpers.iter().chain(&info.global_helpers) {
        let _ = info.helper(helper.id);
    }
}

fuzz_target!(|input: Input| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| scenario(env, &input));
});
