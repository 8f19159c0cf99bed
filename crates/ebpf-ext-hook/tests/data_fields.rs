//! Programs' data pointers are the provider's to write: on every invocation path it sets them
//! from the `ProgramContext`'s `ContextData` (NULL without one), whatever the extension left
//! in the context, so programs never see a range that does not live while they run.

#![allow(
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    reason = "host tests"
)]

use core::ffi::c_void;
use std::sync::{Arc, Mutex};

use ebpf_ext_core_sim::{Link, LinkSpec};
use ebpf_ext_hook::{
    AttachPolicy, AttachRequest, Attached, ContextData, DataFields, Flow, HookConfig,
    HookExtension, HookProvider, ProgramContext,
};
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_sys::wdm::{DEVICE_OBJECT, IoDeleteDevice};
use ebpf_ext_sys::{Error, Result};
use ebpf_ext_usersim::{DriverObject, Kernel};

const ATTACH_TYPE: GUID = GUID::from_u128(0xda7a_0001_0000_4000_8000_0000_0000_0001);
const PROGRAM_TYPE: GUID = GUID::from_u128(0xda7a_0002_0000_4000_8000_0000_0000_0001);

/// A context with its data pointers first, as most program types lay them out.
#[repr(C)]
struct Packet {
    start: *mut u8,
    end: *mut u8,
    id: u64,
}

const FIELDS: DataFields = DataFields { start: 0, end: 8 };

/// A range no invocation lent: what a stale or forged context would hold.
fn forged(id: u64) -> Packet {
    Packet {
        start: 0x1000 as *mut u8,
        end: 0x2000 as *mut u8,
        id,
    }
}

struct Hook;

impl HookExtension for Hook {
    type Parameter = ();
    type ClientData = ();
    type Context = Packet;
    fn on_attach(&self, _: &AttachRequest<()>, _: &Attached<'_, Self>) -> Result<()> {
        Ok(())
    }
}

fn config() -> HookConfig<()> {
    HookConfig::new(ATTACH_TYPE, PROGRAM_TYPE, 1, PoolTag::new(*b"HkDf"))
        .with_policy(AttachPolicy::Unrestricted)
}

fn register(device: *mut DEVICE_OBJECT, fields: Option<DataFields>) -> Result<HookProvider<Hook>> {
    // SAFETY: the device outlives the provider (deleted after it); `fields` are `Packet`'s
    // two pointer fields (the callers pass `FIELDS` or offsets the provider must refuse).
    unsafe { HookProvider::register_with_data(config(), Hook, device, fields) }
}

/// What a program saw: its data range as addresses.
type Seen = Arc<Mutex<Vec<(usize, usize)>>>;

/// A program that records its data range and writes its first byte, as a program may.
fn attach(seen: &Seen) -> Link {
    let seen = Arc::clone(seen);
    Link::attach_without_program_type(
        LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE),
        move |ctx: *mut c_void| {
            // SAFETY: the provider passes a `Packet`.
            let packet = unsafe { &*ctx.cast::<Packet>() };
            seen.lock()
                .expect("lock")
                .push((packet.start as usize, packet.end as usize));
            if packet.start < packet.end {
                // SAFETY: the range the invocation lent, which programs may write.
                unsafe { *packet.start = 0x5A };
            }
            Ok(1)
        },
    )
    .expect("attach")
}

/// Runs one program through every invocation path with `make`'s context.
fn every_path<'d>(
    provider: &HookProvider<Hook>,
    mut make: impl FnMut() -> ProgramContext<'d, Packet>,
) {
    assert_eq!(provider.invoke(&(), &mut make()), Ok(1));
    assert_eq!(
        provider.invoke_with(&(), &mut make(), |_| true, |_, _| Flow::Continue),
        Ok(1)
    );
    assert!(provider.invoke_until(&(), &mut make(), |_| true).is_ok());
    assert!(
        provider
            .invoke_until_failures_as_zero(&(), &mut make(), |_| false)
            .is_ok()
    );
    assert_eq!(
        provider.invoke_on_expanded_stack(&(), &mut make(), |_| true, |_, _| Flow::Continue),
        Ok(1)
    );
    let clients = provider.clients();
    let client = clients.iter().next().expect("one program");
    assert_eq!(client.invoke(&mut make()), Ok(1));
    drop(clients);
    provider.with_batch(&(), |batch| {
        assert_eq!(batch.invoke(&mut make()), Ok(1));
        assert_eq!(batch.invoke(&mut make()), Ok(1));
    });
}

const PATHS: usize = 8;

/// Runs `test` with a provider that writes `Packet`'s data pointers and one attached program
/// recording what it saw, then unregisters and checks nothing leaked.
fn with_hook(test: impl FnOnce(&HookProvider<Hook>, &Seen)) {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    let provider = register(device, Some(FIELDS)).expect("register");
    let seen = Seen::default();
    let link = attach(&seen);
    test(&provider, &seen);
    drop(link);
    drop(provider);
    kernel.wait_for_work_items();
    // SAFETY: created above, deleted once, after the provider.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}

#[test]
fn every_invocation_path_points_programs_at_the_lent_bytes_only() {
    with_hook(|provider, seen| {
        let mut packet = vec![0u8; 16];
        let lent = packet.as_mut_ptr_range();
        let lent = (lent.start as usize, lent.end as usize);
        let mut id = 0;
        every_path(provider, || {
            id += 1;
            // SAFETY: the packet's 16 bytes, which nothing else touches while programs run
            // (the vector is not used until `every_path` returns).
            let data = unsafe { ContextData::from_raw_parts(packet.as_mut_ptr(), 16) };
            ProgramContext::with_data(forged(id), data)
        });
        assert_eq!(*seen.lock().expect("lock"), vec![lent; PATHS]);
        assert_eq!(packet[0], 0x5A, "programs write the lent bytes");

        seen.lock().expect("lock").clear();
        every_path(provider, || ProgramContext::new(forged(0)));
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![(0, 0); PATHS],
            "without data both pointers are NULL, whatever the extension left in them"
        );

        seen.lock().expect("lock").clear();
        every_path(provider, || {
            ProgramContext::with_data(forged(0), <&mut [u8]>::default())
        });
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![(0, 0); PATHS],
            "an empty slice is no data"
        );
    });
}

/// A program that records its data range, then overwrites the context's data pointers with
/// a range nothing lent: what the next program in the chain must not see.
fn attach_forging(seen: &Seen) -> Link {
    let seen = Arc::clone(seen);
    Link::attach_without_program_type(
        LinkSpec::new(PROGRAM_TYPE, ATTACH_TYPE),
        move |ctx: *mut c_void| {
            // SAFETY: the provider passes a `Packet`, which programs may write.
            let packet = unsafe { &mut *ctx.cast::<Packet>() };
            seen.lock()
                .expect("lock")
                .push((packet.start as usize, packet.end as usize));
            (packet.start, packet.end) = (forged(0).start, forged(0).end);
            Ok(0)
        },
    )
    .expect("attach")
}

#[test]
fn each_program_of_a_chain_gets_the_lent_range_whatever_the_one_before_stored() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    let provider = register(device, Some(FIELDS)).expect("register");
    let seen = Seen::default();
    let links = [attach_forging(&seen), attach_forging(&seen)];
    let mut packet = vec![0u8; 16];
    let lent = packet.as_mut_ptr_range();
    let lent = (lent.start as usize, lent.end as usize);
    let mut make = || {
        // SAFETY: the packet's 16 bytes, which nothing else touches while programs run.
        let data = unsafe { ContextData::from_raw_parts(packet.as_mut_ptr(), 16) };
        ProgramContext::with_data(forged(0), data)
    };
    assert_eq!(provider.invoke(&(), &mut make()), Ok(0));
    assert_eq!(
        provider.invoke_with(&(), &mut make(), |_| true, |_, _| Flow::Continue),
        Ok(0)
    );
    assert!(provider.invoke_until(&(), &mut make(), |_| false).is_ok());
    assert!(
        provider
            .invoke_until_failures_as_zero(&(), &mut make(), |_| false)
            .is_ok()
    );
    assert_eq!(
        provider.invoke_on_expanded_stack(&(), &mut make(), |_| true, |_, _| Flow::Continue),
        Ok(0)
    );
    provider.with_batch(&(), |batch| assert_eq!(batch.invoke(&mut make()), Ok(0)));
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![lent; 2 * 6],
        "both programs on each of the six paths"
    );
    drop(links);
    drop(provider);
    kernel.wait_for_work_items();
    // SAFETY: created above, deleted once, after the provider.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}

#[test]
fn a_context_reused_after_its_data_is_gone_reaches_programs_without_it() {
    with_hook(|provider, seen| {
        let mut packet = vec![7u8; 4];
        let mut context = ProgramContext::with_data(forged(1), &mut packet[..]);
        assert_eq!(provider.invoke(&(), &mut context), Ok(1));
        // The context now holds the packet's range; the packet is freed, and safe code moves
        // the context's value into a context without data.
        let stale = context.context;
        drop(packet);
        assert_ne!(
            stale.start as usize, 0,
            "the range the first invocation wrote"
        );
        assert_eq!(provider.invoke(&(), &mut ProgramContext::new(stale)), Ok(1));
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (0, 0), "the freed range never reaches a program");
    });
}

#[test]
fn data_fields_outside_the_context_are_refused() {
    let kernel = Kernel::new();
    let mut driver = DriverObject::new();
    let device = driver.create_device().expect("IoCreateDevice");
    for fields in [
        DataFields { start: 0, end: 20 },
        DataFields { start: 17, end: 8 },
        DataFields {
            start: usize::MAX,
            end: 8,
        },
    ] {
        assert_eq!(
            register(device, Some(fields)).err(),
            Some(Error::InvalidParameter),
            "{fields:?}"
        );
    }
    let provider = register(device, Some(DataFields { start: 8, end: 0 })).expect("in bounds");
    drop(provider);
    // SAFETY: created above, deleted once, after the providers.
    unsafe { IoDeleteDevice(device) };
    kernel.assert_no_leaks();
}
