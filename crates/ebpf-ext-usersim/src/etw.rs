//! ETW for kernel providers: registration, enablement through the enable callback, and a
//! capture of every event a session would receive, decoded from its TraceLogging metadata.
//!
//! By default every registered provider is enabled at every level (0xFF) and keyword
//! (match-any all ones, match-all 0), as a session started with
//! `logman ... 0xffffffffffffffff 0xff` would; tests change that per provider with
//! [`Kernel::etw_enable`] / [`Kernel::etw_disable`], which call the provider's enable callback
//! exactly as ETW does (control code 1 or 0, source id GUID_NULL, no filter data). The
//! "already enabled" notification is delivered synchronously inside `EtwRegister`, after the
//! handle is written.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::{BTreeMap, HashMap};

use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, ETWENABLECALLBACK, EVENT_ACTIVITY_CTRL_CREATE_ID, EVENT_ACTIVITY_CTRL_CREATE_SET_ID,
    EVENT_ACTIVITY_CTRL_GET_ID, EVENT_ACTIVITY_CTRL_GET_SET_ID, EVENT_ACTIVITY_CTRL_SET_ID,
    EVENT_CONTROL_CODE_DISABLE_PROVIDER, EVENT_CONTROL_CODE_ENABLE_PROVIDER, EVENT_DATA_DESCRIPTOR,
    EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA, EVENT_DATA_DESCRIPTOR_TYPE_NONE,
    EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA, EVENT_DESCRIPTOR, EVENT_INFO_CLASS,
    EventProviderBinaryTrackInfo, EventProviderSetTraits, HIGH_LEVEL, PASSIVE_LEVEL, REGHANDLE,
};

use crate::kernel::{
    Kernel, THREAD, allocation_fails, call_fails, lock, require_irql, with_kernel,
};
pub use crate::tracelogging::{DecodeError, Field, Value};
use crate::tracelogging::{decode_event_metadata, decode_payload, decode_provider_metadata};

/// A session's enablement of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enablement {
    /// Highest level delivered (0 delivers only level-0 events... and every event has level ≥ 0,
    /// so 0 means "log-always only").
    pub level: u8,
    /// Keyword bits of which at least one must be set in an event's keyword.
    pub match_any: u64,
    /// Keyword bits that must all be set.
    pub match_all: u64,
}

impl Enablement {
    /// Every level and keyword.
    pub const ALL: Enablement = Enablement {
        level: 0xFF,
        match_any: u64::MAX,
        match_all: 0,
    };

    /// Whether an event with this level and keyword is delivered (ETW's rule).
    #[must_use]
    pub fn wants(&self, level: u8, keyword: u64) -> bool {
        (level == 0 || level <= self.level)
            && (keyword == 0
                || (keyword & self.match_any != 0 && keyword & self.match_all == self.match_all))
    }
}

struct Registration {
    provider: GUID,
    callback: Option<ETWENABLECALLBACK>,
    context: usize,
    traits: Option<Vec<u8>>,
    enabled: Option<Enablement>,
}

#[derive(Default)]
pub(crate) struct EtwState {
    registrations: BTreeMap<u64, Registration>,
    next_handle: u64,
    /// Per-provider configuration; `None` inside means disabled.
    config: HashMap<GUID, Option<Enablement>>,
    default_disabled: bool,
    events: Vec<CapturedEvent>,
}

impl EtwState {
    fn enablement_for(&self, provider: &GUID) -> Option<Enablement> {
        match self.config.get(provider) {
            Some(configured) => *configured,
            None if self.default_disabled => None,
            None => Some(Enablement::ALL),
        }
    }
}

/// One event a session received.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    /// Provider GUID.
    pub provider: GUID,
    /// Provider name, from the event's provider metadata (or the traits set at register).
    pub provider_name: Option<String>,
    /// Event name (empty if the event carried no TraceLogging metadata).
    pub name: String,
    /// Level.
    pub level: u8,
    /// Keyword.
    pub keyword: u64,
    /// Opcode (1 start, 2 stop).
    pub opcode: u8,
    /// Channel (11 for TraceLogging).
    pub channel: u8,
    /// Decoded fields.
    pub fields: Vec<Field>,
    /// Activity id passed to `EtwWriteTransfer`.
    pub activity_id: Option<GUID>,
    /// Related activity id.
    pub related_activity_id: Option<GUID>,
    /// Why the event could not be decoded, if it could not.
    pub decode_error: Option<String>,
}

impl CapturedEvent {
    /// The value of the field named `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }
}

impl Kernel {
    /// Live ETW provider registrations.
    #[must_use]
    pub fn etw_registrations(&self) -> usize {
        lock(&self.inner().etw).registrations.len()
    }

    /// Events captured so far.
    #[must_use]
    pub fn etw_events(&self) -> Vec<CapturedEvent> {
        lock(&self.inner().etw).events.clone()
    }

    /// Forgets captured events.
    pub fn etw_clear(&self) {
        lock(&self.inner().etw).events.clear();
    }

    /// The traits blob a provider set with `EtwSetInformation(EventProviderSetTraits)`.
    #[must_use]
    pub fn etw_provider_traits(&self, provider: GUID) -> Option<Vec<u8>> {
        lock(&self.inner().etw)
            .registrations
            .values()
            .find(|r| r.provider == provider)
            .and_then(|r| r.traits.clone())
    }

    /// Enables `provider` for a session with the given level and keywords (calls the enable
    /// callback of every registration of it).
    pub fn etw_enable(&self, provider: GUID, enablement: Enablement) {
        self.etw_configure(provider, Some(enablement));
    }

    /// Disables `provider` (calls its enable callback with control code 0).
    pub fn etw_disable(&self, provider: GUID) {
        self.etw_configure(provider, None);
    }

    /// Whether providers with no explicit configuration start enabled (the default) or
    /// disabled.
    pub fn etw_enable_by_default(&self, enabled: bool) {
        lock(&self.inner().etw).default_disabled = !enabled;
    }

    fn etw_configure(&self, provider: GUID, enablement: Option<Enablement>) {
        let calls: Vec<(ETWENABLECALLBACK, usize)> = {
            let mut etw = lock(&self.inner().etw);
            etw.config.insert(provider, enablement);
            etw.registrations
                .values_mut()
                .filter(|r| r.provider == provider)
                .filter_map(|r| {
                    r.enabled = enablement;
                    r.callback.map(|cb| (cb, r.context))
                })
                .collect()
        };
        for (callback, context) in calls {
            notify(callback, context, enablement);
        }
    }
}

fn notify(callback: ETWENABLECALLBACK, context: usize, enablement: Option<Enablement>) {
    let source = GUID::NULL;
    let (code, e) = match enablement {
        Some(e) => (EVENT_CONTROL_CODE_ENABLE_PROVIDER, e),
        None => (
            EVENT_CONTROL_CODE_DISABLE_PROVIDER,
            Enablement {
                level: 0,
                match_any: 0,
                match_all: 0,
            },
        ),
    };
    // SAFETY: the provider registered this callback and context and keeps them valid until
    // EtwUnregister; ETW calls it at PASSIVE_LEVEL with these arguments.
    unsafe {
        callback(
            &raw const source,
            code,
            e.level,
            e.match_any,
            e.match_all,
            ptr::null(),
            context as *mut c_void,
        );
    };
}

/// `EtwRegister`.
///
/// # Safety
/// Kernel routine; `ProviderId` and `RegHandle` are valid when non-NULL.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwRegister(
    ProviderId: *const GUID,
    EnableCallback: Option<ETWENABLECALLBACK>,
    CallbackContext: *mut c_void,
    RegHandle: *mut REGHANDLE,
) -> NTSTATUS {
    const API: &str = "EtwRegister";
    require_irql(API, PASSIVE_LEVEL);
    if ProviderId.is_null() || RegHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-null provider id supplied by the caller.
    let provider = unsafe { *ProviderId };
    let registered = with_kernel(API, |k| {
        if call_fails(k, API) || allocation_fails(k) {
            return None;
        }
        let mut etw = lock(&k.etw);
        etw.next_handle += 1;
        let handle = 0x4554_5700_0000 + etw.next_handle;
        let enabled = etw.enablement_for(&provider);
        etw.registrations.insert(
            handle,
            Registration {
                provider,
                callback: EnableCallback,
                context: CallbackContext as usize,
                traits: None,
                enabled,
            },
        );
        Some((handle, enabled))
    });
    let Some((handle, enabled)) = registered else {
        return STATUS_NO_MEMORY;
    };
    // SAFETY: non-null out pointer supplied by the caller.
    unsafe { RegHandle.write(handle) };
    if let (Some(callback), Some(e)) = (EnableCallback, enabled) {
        notify(callback, CallbackContext as usize, Some(e));
    }
    STATUS_SUCCESS
}

/// `EtwUnregister`.
#[unsafe(no_mangle)]
pub extern "win64" fn EtwUnregister(RegHandle: REGHANDLE) -> NTSTATUS {
    const API: &str = "EtwUnregister";
    require_irql(API, PASSIVE_LEVEL);
    with_kernel(API, |k| {
        if lock(&k.etw).registrations.remove(&RegHandle).is_some() {
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_HANDLE
        }
    })
}

/// `EtwSetInformation`: class 2 (`EventProviderSetTraits`) stores the traits blob; class 0 is
/// accepted and ignored; others are `STATUS_INVALID_DEVICE_REQUEST`.
///
/// # Safety
/// Kernel routine; `EventInformation` holds `InformationLength` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwSetInformation(
    RegHandle: REGHANDLE,
    InformationClass: EVENT_INFO_CLASS,
    EventInformation: *const c_void,
    InformationLength: u32,
) -> NTSTATUS {
    const API: &str = "EtwSetInformation";
    require_irql(API, PASSIVE_LEVEL);
    if EventInformation.is_null() && InformationLength != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    let blob = if InformationLength == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller passes `InformationLength` readable bytes.
        unsafe {
            core::slice::from_raw_parts(EventInformation.cast::<u8>(), InformationLength as usize)
        }
        .to_vec()
    };
    with_kernel(API, |k| {
        let mut etw = lock(&k.etw);
        let Some(registration) = etw.registrations.get_mut(&RegHandle) else {
            return STATUS_INVALID_HANDLE;
        };
        if InformationClass == EventProviderSetTraits {
            registration.traits = Some(blob);
            STATUS_SUCCESS
        } else if InformationClass == EventProviderBinaryTrackInfo {
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_DEVICE_REQUEST
        }
    })
}

/// `EtwWriteTransfer`: captures the event if a session wants it, decoding its TraceLogging
/// metadata.
///
/// # Safety
/// Kernel routine; the descriptor array holds `UserDataCount` entries, each pointing to
/// `Size` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwWriteTransfer(
    RegHandle: REGHANDLE,
    EventDescriptor: *const EVENT_DESCRIPTOR,
    ActivityId: *const GUID,
    RelatedActivityId: *const GUID,
    UserDataCount: u32,
    UserData: *const EVENT_DATA_DESCRIPTOR,
) -> NTSTATUS {
    const API: &str = "EtwWriteTransfer";
    require_irql(API, HIGH_LEVEL);
    if EventDescriptor.is_null() || (UserData.is_null() && UserDataCount != 0) {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-null descriptor supplied by the caller.
    let descriptor = unsafe { *EventDescriptor };
    let target = with_kernel(API, |k| {
        let etw = lock(&k.etw);
        etw.registrations
            .get(&RegHandle)
            .map(|r| (r.provider, r.enabled, r.traits.clone()))
    });
    let Some((provider, enabled, traits)) = target else {
        return STATUS_INVALID_HANDLE;
    };
    if !enabled.is_some_and(|e| e.wants(descriptor.Level, descriptor.Keyword)) {
        return STATUS_SUCCESS;
    }
    let descriptors = if UserDataCount == 0 {
        &[][..]
    } else {
        // SAFETY: the caller passes `UserDataCount` descriptors.
        unsafe { core::slice::from_raw_parts(UserData, UserDataCount as usize) }
    };
    let (mut provider_meta, mut event_meta, mut payload) = (None, None, Vec::new());
    for d in descriptors {
        let bytes = if d.Size == 0 {
            &[][..]
        } else {
            // SAFETY: each descriptor points to `Size` readable bytes (caller's contract).
            unsafe {
                core::slice::from_raw_parts(
                    usize::try_from(d.Ptr).unwrap_or(0) as *const u8,
                    d.Size as usize,
                )
            }
        };
        match d.Reserved {
            EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA => provider_meta = Some(bytes),
            EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA => event_meta = Some(bytes),
            EVENT_DATA_DESCRIPTOR_TYPE_NONE => payload.extend_from_slice(bytes),
            _ => {}
        }
    }
    let provider_name = provider_meta
        .or(traits.as_deref())
        .and_then(|m| decode_provider_metadata(m).ok());
    let (name, fields, decode_error) = match event_meta.map(decode_event_metadata) {
        None => (
            String::new(),
            Vec::new(),
            Some("no TraceLogging event metadata".to_owned()),
        ),
        Some(Err(e)) => (String::new(), Vec::new(), Some(e.0)),
        Some(Ok(meta)) => match decode_payload(&meta, &payload) {
            Ok(fields) => (meta.name, fields, None),
            Err(e) => (meta.name, Vec::new(), Some(e.0)),
        },
    };
    let read_guid = |p: *const GUID| {
        // SAFETY: non-null activity ids supplied by the caller are readable.
        (!p.is_null()).then(|| unsafe { *p })
    };
    let event = CapturedEvent {
        provider,
        provider_name,
        name,
        level: descriptor.Level,
        keyword: descriptor.Keyword,
        opcode: descriptor.Opcode,
        channel: descriptor.Channel,
        fields,
        activity_id: read_guid(ActivityId),
        related_activity_id: read_guid(RelatedActivityId),
        decode_error,
    };
    with_kernel(API, |k| lock(&k.etw).events.push(event));
    STATUS_SUCCESS
}

static NEXT_ACTIVITY: AtomicU64 = AtomicU64::new(1);

/// `EtwActivityIdControl`: the calling thread's activity id.
///
/// # Safety
/// Kernel routine; `ActivityId` is valid when non-NULL.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwActivityIdControl(
    ControlCode: u32,
    ActivityId: *mut GUID,
) -> NTSTATUS {
    const API: &str = "EtwActivityIdControl";
    require_irql(
        API,
        if ControlCode == EVENT_ACTIVITY_CTRL_CREATE_ID {
            HIGH_LEVEL
        } else {
            APC_LEVEL
        },
    );
    if ActivityId.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let create = || {
        GUID::from_u128(
            0xACE0_0000_0000_4000_8000_0000_0000_0000
                | u128::from(NEXT_ACTIVITY.fetch_add(1, Ordering::Relaxed)),
        )
    };
    THREAD.with(|t| {
        // SAFETY: non-null, supplied by the caller.
        let given = unsafe { *ActivityId };
        let current = t.activity_id.get();
        let (store, output) = match ControlCode {
            EVENT_ACTIVITY_CTRL_GET_ID => (None, Some(current)),
            EVENT_ACTIVITY_CTRL_SET_ID => (Some(given), None),
            EVENT_ACTIVITY_CTRL_CREATE_ID => (None, Some(create())),
            EVENT_ACTIVITY_CTRL_GET_SET_ID => (Some(given), Some(current)),
            EVENT_ACTIVITY_CTRL_CREATE_SET_ID => (Some(create()), Some(current)),
            _ => return STATUS_INVALID_PARAMETER,
        };
        if let Some(id) = store {
            t.activity_id.set(id);
        }
        if let Some(id) = output {
            // SAFETY: non-null, supplied by the caller.
            unsafe { ActivityId.write(id) };
        }
        STATUS_SUCCESS
    })
}
