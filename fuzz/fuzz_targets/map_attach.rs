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

use core::ptr;

use arbitrary::Arbitrary;
use ebpf_ext_map::{CustomMap, Input, MapProvider};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ebpf_extension_uuids::EBPF_MAP_INFO_EXTENSION_IID;
use ebpf_ext_sys::ebpf_result::ebpf_result_t;
use ebpf_ext_sys::netioddk::NPI_MODULEID;
use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use ebpf_ext_usersim::{Kernel, TestClient};
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

/// Client `i`'s module id.
static MODULES: [NPI_MODULEID; MAX_CLIENTS] = {
    let mut modules = [const { NPI_MODULEID::from_guid(GUID::NULL) }; MAX_CLIENTS];
    let mut i = 0;
    while i < MAX_CLIENTS {
        modules[i] = NPI_MODULEID::from_guid(GUID::from_u128(
            0x3a9c_0102_0000_4000_8000_0000_0000_0000 | i as u128,
        ));
        i += 1;
    }
    modules
};

/// One map client: the buffers it presents, and its NMR registration, which drops first
/// (fields drop in order), so the buffers outlive it.
struct Client {
    registration: Option<TestClient>,
    client_data: Option<Vec<u8>>,
    table: Option<Vec<u8>>,
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
    fn new(input: &ClientInput) -> Client {
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
        let mut client = Client {
            registration: None,
            client_data,
            table,
        };
        let table_address = client.table.as_ref().map_or(0, |t| t.as_ptr() as u64);
        if let Some(data) = client.client_data.as_mut() {
            put(data, 32, table_address.to_le_bytes());
        }
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

    /// Registers client `index` with its client data (none if absent): it attaches to the
    /// provider now.
    fn register(&mut self, index: usize) {
        let data = self
            .client_data
            .as_ref()
            .map_or(ptr::null(), |d| d.as_ptr().cast());
        // SAFETY: the client data and the table it points to live until the registration,
        // which drops first, has deregistered.
        self.registration = Some(unsafe {
            TestClient::register(&EBPF_MAP_INFO_EXTENSION_IID, &MODULES[index], data)
        });
    }
}

fuzz_target!(|input: FuzzInput| {
    if common::verbose() {
        eprintln!("{input:#?}");
    }
    ENV.with(|env| {
        let specs = &input.clients[..input.clients.len().min(MAX_CLIENTS)];
        let mut clients: Vec<Client> = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let mut client = Client::new(spec);
            client.register(index);
            let status = client.registration.as_ref().and_then(TestClient::status);
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
            drop(clients.remove(usize::from(next) % clients.len()));
        }
        for client in clients.drain(..).rev() {
            drop(client);
        }
        env.baseline.assert_unchanged(&env.kernel);
        assert_eq!(
            env.kernel.nmr_binding_count(),
            0,
            "NMR bindings left behind"
        );
    });
});
