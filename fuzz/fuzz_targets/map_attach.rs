//! Map client data and the core's client dispatch table against `ebpf-ext-map`'s
//! `MapProvider`.
//!
//! One input is a list of map clients, each an NMR client of the map-information NPI whose
//! client data (`ebpf_map_client_data_t`: header version and size, `map_context_offset`,
//! `base_client_table`) and dispatch table (header version and size, each of the seven
//! function slots NULL or set) come from the input, then an order in which they deregister.
//! Every client registers while the ones before it are still attached, through usersim's real
//! NMR.
//!
//! The client data is allocated with exactly `max(header, header.size)` bytes and the table
//! with exactly `max(header, header.size)` bytes, so AddressSanitizer reports any read past
//! what the client declared. The functions in the table must not be called at attach: each
//! one aborts if it is.
//!
//! Properties checked besides "no crash, no leak": the provider accepts a client exactly when
//! its client data is version 1 of 40 bytes and it has no table or a version-1 table of a size
//! that has the lookup (32, 64, or 80 bytes and more); it refuses the others with
//! `STATUS_INVALID_PARAMETER`.
#![no_main]

mod common;

use core::ffi::c_void;
use core::ptr;
use std::sync::Mutex;

use arbitrary::Arbitrary;
use ebpf_ext_map::{CustomMap, Input, MapProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_MAP_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::ebpf_result_t;
use ebpf_ext_sys::netioddk::{
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE, NmrClientAttachProvider,
    NmrDeregisterClient, NmrRegisterClient, NmrWaitForClientDeregisterComplete,
};
use ebpf_ext_sys::ntdef::{GUID, HANDLE, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS};
use ebpf_ext_usersim::Kernel;
use libfuzzer_sys::fuzz_target;

const TAG: PoolTag = PoolTag::new(*b"FzMp");
const PROVIDER_MODULE: GUID = GUID::from_u128(0x3a9c_0101_0000_4000_8000_0000_0000_0001);
const MAX_CLIENTS: usize = 6;
/// Bytes of `ebpf_extension_header_t` (version, size, total size).
const HEADER: usize = 24;
/// Bytes of the current `ebpf_map_client_data_t`.
const CLIENT_DATA: usize = 40;
/// Bytes of the current `ebpf_base_map_client_dispatch_table_t`.
const TABLE: usize = 80;

tracelogging::define_provider!(
    TRACE,
    "EbpfExtFuzzMapProvider",
    id("0b5e8c21-7d4f-4a96-b3e0-2c9f61a7d854")
);

// ---- the input ------------------------------------------------------------------------------

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Current,
    Any(u16),
}

#[derive(Arbitrary, Debug, Clone)]
struct Table {
    /// XORed with the current version (1), so 0 is the current one.
    version: u16,
    size: Size,
    /// XORed with 80 (the current total size).
    total_size: u64,
    /// Each of the seven functions' slot: NULL when set.
    null_slots: [bool; 7],
}

/// Fields are arranged so that all-zero input bytes describe what the core presents.
#[derive(Arbitrary, Debug, Clone)]
struct ClientInput {
    /// No client data at all.
    no_client_data: bool,
    /// XORed with the current version (1).
    version: u16,
    size: Size,
    /// XORed with 40 (the current total size).
    total_size: u64,
    map_context_offset: u64,
    /// `None`: a NULL `base_client_table`.
    table: Option<Table>,
}

#[derive(Arbitrary, Debug)]
struct FuzzInput {
    clients: Vec<ClientInput>,
    /// Which attached client deregisters next (modulo those left).
    detach_order: Vec<u8>,
}

// ---- the provider ---------------------------------------------------------------------------

#[derive(Debug)]
struct FuzzMap;

impl CustomMap for FuzzMap {
    const MAP_TYPE: u32 = 4101;
    const UPDATES_ORIGINAL_VALUE: bool = false;
    const TAG: PoolTag = TAG;

    fn create(_: u32, value_size: u32, _: u32) -> Result<(Self, u32), ebpf_result_t> {
        Ok((FuzzMap, value_size))
    }

    fn associate(&self, _: &GUID) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn find(&self, _: Input<'_>, _: Input<'_>, _: &mut [u8], _: u32) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn update(
        &self,
        _: Input<'_>,
        _: Input<'_>,
        _: &mut [u8],
        _: u32,
    ) -> Result<(), ebpf_result_t> {
        Ok(())
    }

    fn delete_element(&self, _: Input<'_>, _: Input<'_>, _: u32) {}
}

struct Env {
    kernel: Kernel,
    _provider: MapProvider<FuzzMap>,
    baseline: common::Baseline,
}

thread_local! {
    /// Created on the fuzzing thread at the first input and never dropped (see hook_attach).
    static ENV: &'static Env = Box::leak(Box::new(Env::new()));
}

impl Env {
    fn new() -> Env {
        let kernel = Kernel::new();
        ebpf_ext_trace::initiate(&TRACE).expect("tracing");
        let provider = MapProvider::<FuzzMap>::register(PROVIDER_MODULE, TAG).expect("register");
        let baseline = common::Baseline::of(&kernel);
        Env {
            kernel,
            _provider: provider,
            baseline,
        }
    }
}

// ---- the clients (the eBPF core's side) -----------------------------------------------------

/// Every function of the core's table: the provider must not call any of them at attach.
unsafe extern "win64" fn never_called() -> u64 {
    eprintln!("a function of the core's dispatch table was called at attach");
    std::process::abort()
}

struct Client {
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    module: NPI_MODULEID,
    client_data: Option<Vec<u8>>,
    table: Option<Vec<u8>>,
    status: Mutex<Option<NTSTATUS>>,
    handle: HANDLE,
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    context: *mut c_void,
    _: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the context registered is a `Client` alive until its deregistration completes.
    let client = unsafe { &*context.cast::<Client>() };
    let (mut provider_binding, mut provider_dispatch) = (ptr::null_mut(), ptr::null());
    // SAFETY: inside ClientAttachProvider, with NMR's binding handle; out slots are locals.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            context,
            ptr::null(),
            &raw mut provider_binding,
            &raw mut provider_dispatch,
        )
    };
    *client.status.lock().expect("status lock") = Some(status);
    status
}

unsafe extern "win64" fn client_detach(_: *mut c_void) -> NTSTATUS {
    STATUS_SUCCESS
}

fn put<const N: usize>(buffer: &mut [u8], offset: usize, bytes: [u8; N]) {
    if let Some(slot) = buffer.get_mut(offset..offset + N) {
        slot.copy_from_slice(&bytes);
    }
}

fn declared(size: Size, current: usize) -> usize {
    match size {
        Size::Current => current,
        Size::Any(n) => usize::from(n),
    }
}

impl Client {
    fn new(input: &ClientInput, index: usize) -> Box<Client> {
        let table = input.table.as_ref().map(|t| {
            let size = declared(t.size, TABLE);
            let mut table = vec![0u8; size.max(HEADER)];
            put(&mut table, 0, (t.version ^ 1).to_le_bytes());
            put(&mut table, 8, (size as u64).to_le_bytes());
            put(&mut table, 16, (t.total_size ^ TABLE as u64).to_le_bytes());
            for (slot, null) in t.null_slots.iter().enumerate() {
                let function = if *null {
                    0
                } else {
                    never_called as *const () as u64
                };
                put(&mut table, HEADER + 8 * slot, function.to_le_bytes());
            }
            table
        });
        let client_data = (!input.no_client_data).then(|| {
            let size = declared(input.size, CLIENT_DATA);
            let mut data = vec![0u8; size.max(HEADER)];
            put(&mut data, 0, (input.version ^ 1).to_le_bytes());
            put(&mut data, 8, (size as u64).to_le_bytes());
            put(
                &mut data,
                16,
                (input.total_size ^ CLIENT_DATA as u64).to_le_bytes(),
            );
            put(&mut data, 24, input.map_context_offset.to_le_bytes());
            // `base_client_table` (offset 32) once the table has its final address.
            data
        });
        let mut client = Box::new(Client {
            characteristics: NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: size_of::<NPI_CLIENT_CHARACTERISTICS>() as u16,
                ClientAttachProvider: Some(client_attach),
                ClientDetachProvider: Some(client_detach),
                ClientCleanupBindingContext: None,
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
                    NpiId: &EBPF_MAP_INFO_EXTENSION_IID,
                    ModuleId: ptr::null(),
                    Number: 0,
                    NpiSpecificCharacteristics: ptr::null(),
                },
            },
            module: NPI_MODULEID::from_guid(GUID::from_u128(
                0x3a9c_0102_0000_4000_8000_0000_0000_0000 | index as u128,
            )),
            client_data,
            table,
            status: Mutex::new(None),
            handle: ptr::null_mut(),
        });
        let table_address = client.table.as_ref().map_or(0, |t| t.as_ptr() as u64);
        if let Some(data) = client.client_data.as_mut() {
            put(data, 32, table_address.to_le_bytes());
        }
        let instance = &mut client.characteristics.ClientRegistrationInstance;
        instance.ModuleId = &raw const client.module;
        instance.NpiSpecificCharacteristics = client
            .client_data
            .as_ref()
            .map_or(ptr::null(), |d| d.as_ptr().cast());
        client
    }

    /// What the provider must answer: the client data is version 1 of 40 bytes, and the table
    /// is absent or a version-1 one of a size with the lookup.
    fn expected(input: &ClientInput) -> NTSTATUS {
        let data_ok = !input.no_client_data
            && input.version == 0
            && declared(input.size, CLIENT_DATA) == CLIENT_DATA;
        let table_ok = input.table.as_ref().is_none_or(|t| {
            let size = declared(t.size, TABLE);
            t.version == 0 && (size == 32 || size == 64 || size >= TABLE)
        });
        if data_ok && table_ok {
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_PARAMETER
        }
    }

    fn register(&mut self) {
        let context = ptr::from_mut(self).cast::<c_void>();
        // SAFETY: the characteristics and everything they point to live in the box until the
        // deregistration in `deregister` completes.
        let status = unsafe {
            NmrRegisterClient(
                &raw const self.characteristics,
                context,
                &raw mut self.handle,
            )
        };
        assert_eq!(status, STATUS_SUCCESS, "NmrRegisterClient");
    }

    fn deregister(&self) {
        // SAFETY: the handle registered in `register`, deregistered once.
        if unsafe { NmrDeregisterClient(self.handle) } == STATUS_PENDING {
            // SAFETY: as above; deregistration started.
            unsafe { NmrWaitForClientDeregisterComplete(self.handle) };
        }
    }
}

fuzz_target!(|input: FuzzInput| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| {
        let specs = &input.clients[..input.clients.len().min(MAX_CLIENTS)];
        let mut clients: Vec<Box<Client>> = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let mut client = Client::new(spec, index);
            client.register();
            let status = client.status.lock().expect("status lock").take();
            assert_eq!(
                status,
                Some(Client::expected(spec)),
                "client {index}: {spec:?}"
            );
            clients.push(client);
        }
        for &next in &input.detach_order {
            if clients.is_empty() {
                break;
            }
            let client = clients.remove(usize::from(next) % clients.len());
            client.deregister();
        }
        for client in clients.drain(..).rev() {
            client.deregister();
        }
        env.baseline.assert_unchanged(&env.kernel);
        assert_eq!(
            env.kernel.nmr_binding_count(),
            0,
            "NMR bindings left behind"
        );
    });
});
