//! ETW for kernel providers: registration, enablement through the enable callback, and a
//! capture of every event a session would receive, decoded from its TraceLogging metadata.
//!
//! # Sessions
//!
//! By default every registered provider is enabled at every level (0xFF) and every keyword
//! (match-any all ones, match-all 0), as a session started with
//! `logman ... 0xffffffffffffffff 0xff` would. Tests change that per provider with
//! [`Kernel::etw_enable`] / [`Kernel::etw_disable`], and for providers without their own
//! setting with [`Kernel::etw_default`]. A change reaches each affected registration through its
//! enable callback exactly as ETW delivers it: control code 1 (enable) with the level and
//! keywords, or 0 (disable) with zeros; `SourceId` pointing to GUID_NULL; no filter data; at
//! PASSIVE_LEVEL; never under usersim's lock, so a callback may call any ETW routine.
//!
//! The "already enabled" notification is delivered synchronously inside `EtwRegister`, after
//! the handle is written (whether Windows does it synchronously is unconfirmed; the
//! `tracelogging` crate copes with both). Callbacks are serialised, and `EtwUnregister` waits
//! for a callback running on another thread, so none runs once `EtwUnregister` has returned:
//! the guarantee a driver relies on before it unloads.
//!
//! # Capture
//!
//! `EtwWriteTransfer` applies ETW's filter (an event passes when its level is 0 or at most the
//! enabled level, and its keyword is 0 or has a match-any bit and every match-all bit), then
//! decodes the TraceLogging descriptors (type 2 provider metadata, type 1 event metadata, type
//! 0 payload, concatenated in order) with [`crate::tracelogging`] into a [`CapturedEvent`]. An
//! event that cannot be decoded is still captured, with [`CapturedEvent::decode_error`] set.
//!
//! # Handles
//!
//! On Windows a registration handle stands for the kernel's registration object, which
//! `EtwUnregister` frees. So `EtwUnregister`, `EtwSetInformation` and `EtwWriteTransfer` with
//! a non-zero handle that is not registered (one already unregistered, or a value
//! `EtwRegister` never wrote) bug-check `DRIVER_VERIFIER_DETECTED_VIOLATION` here, where
//! Windows would use freed or foreign memory. Handle 0, which a provider holds before it
//! registers and after it unregisters, gives `STATUS_INVALID_HANDLE` (what Windows does with 0
//! is unconfirmed).

use core::ffi::c_void;
use core::ops::Range;
use core::ptr;
use core::sync::atomic::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use ebpf_ext_sys::ntdef::{GUID, NTSTATUS};
use ebpf_ext_sys::ntstatus::{
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use ebpf_ext_sys::wdm::{
    APC_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, ETWENABLECALLBACK,
    EVENT_ACTIVITY_CTRL_CREATE_ID, EVENT_ACTIVITY_CTRL_CREATE_SET_ID, EVENT_ACTIVITY_CTRL_GET_ID,
    EVENT_ACTIVITY_CTRL_GET_SET_ID, EVENT_ACTIVITY_CTRL_SET_ID,
    EVENT_CONTROL_CODE_DISABLE_PROVIDER, EVENT_CONTROL_CODE_ENABLE_PROVIDER, EVENT_DATA_DESCRIPTOR,
    EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA, EVENT_DATA_DESCRIPTOR_TYPE_NONE,
    EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA, EVENT_DESCRIPTOR, EVENT_INFO_CLASS,
    EventProviderBinaryTrackInfo, EventProviderSetTraits, HIGH_LEVEL, PASSIVE_LEVEL, REGHANDLE,
};

use crate::kernel::{
    Inner, Kernel, THREAD, allocation_fails, bugcheck, call_fails, current_irql, lock,
    require_bound, require_irql, set_irql, with_kernel,
};
pub use crate::tracelogging::{DecodeError, Field, Value};
use crate::tracelogging::{decode_event_metadata, decode_payload, decode_provider_metadata};

/// Registration handles count up from here ("ETW"), so a handle is never 0.
const HANDLE_BASE: u64 = 0x4554_5700_0000;

/// What `api` gets for `handle`, which is not registered: `STATUS_INVALID_HANDLE` for 0 (a
/// provider's handle before it registers and after it unregisters); any other value is a
/// registration object Windows has freed or never had, so a bug check (see the module docs).
fn unregistered(api: &'static str, handle: REGHANDLE) -> NTSTATUS {
    if handle == 0 {
        return STATUS_INVALID_HANDLE;
    }
    bugcheck(
        api,
        DRIVER_VERIFIER_DETECTED_VIOLATION,
        [handle, 0, 0, 0],
        &format!(
            "{api} with ETW registration handle {handle:#x}, which is not registered \
             (EtwUnregister already ended it, or EtwRegister never returned it)"
        ),
    )
}

/// Activity ids `EVENT_ACTIVITY_CTRL_CREATE_ID` makes: this prefix, then the kernel's counter
/// in the low 64 bits (locally unique, as Windows promises, not a real UUID).
const ACTIVITY_ID_PREFIX: u128 = 0xACE0_0000_0000_4000_0000_0000_0000_0000;

/// How a session has a provider enabled: the `Level`, `MatchAnyKeyword` and `MatchAllKeyword`
/// its enable callback receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enablement {
    /// Highest event level delivered (1 critical .. 5 verbose, 0xFF everything). Level-0
    /// (log-always) events pass whatever this is.
    pub level: u8,
    /// Keyword bits of which an event's keyword must have at least one (unless it is 0).
    pub match_any: u64,
    /// Keyword bits an event's keyword must all have (unless it is 0).
    pub match_all: u64,
}

impl Enablement {
    /// Every level and every keyword (the default).
    pub const ALL: Enablement = Enablement {
        level: 0xFF,
        match_any: u64::MAX,
        match_all: 0,
    };

    /// Enablement at `level` with keywords `match_any`/`match_all`.
    #[must_use]
    pub const fn new(level: u8, match_any: u64, match_all: u64) -> Enablement {
        Enablement {
            level,
            match_any,
            match_all,
        }
    }

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
    /// Copy of the `EventProviderSetTraits` blob.
    traits: Option<Vec<u8>>,
    /// What the enable callback last told the provider (`None`: disabled).
    enabled: Option<Enablement>,
}

/// ETW state of one simulated kernel.
pub(crate) struct EtwState {
    registrations: BTreeMap<REGHANDLE, Registration>,
    next_handle: u64,
    /// Per-provider session setting; `None` inside means disabled.
    config: HashMap<GUID, Option<Enablement>>,
    /// Setting of providers not in `config`.
    default: Option<Enablement>,
    events: Vec<CapturedEvent>,
    /// The thread delivering enable callbacks, and its nesting depth.
    notifier: Option<(ThreadId, u32)>,
}

impl Default for EtwState {
    fn default() -> Self {
        EtwState {
            registrations: BTreeMap::new(),
            next_handle: 0,
            config: HashMap::new(),
            default: Some(Enablement::ALL),
            events: Vec::new(),
            notifier: None,
        }
    }
}

impl EtwState {
    /// Registrations (not unregistered) whose enable callback lies in `image`.
    pub(crate) fn references_into(&self, image: &Range<usize>) -> Vec<(usize, String)> {
        self.registrations
            .values()
            .filter_map(|r| {
                let callback = r.callback? as usize;
                image.contains(&callback).then(|| {
                    let what = format!("ETW enable callback of provider {:?}", r.provider);
                    (callback, what)
                })
            })
            .collect()
    }

    fn enablement_for(&self, provider: &GUID) -> Option<Enablement> {
        self.config.get(provider).copied().unwrap_or(self.default)
    }
}

/// The calling thread's turn to deliver enable callbacks; ends (and wakes waiters) on drop.
struct CallbackTurn<'a> {
    inner: &'a Inner,
}

/// Waits until no other thread delivers enable callbacks, then takes the turn (reentrantly:
/// a callback may cause more callbacks on its own thread).
fn begin_callbacks<'a>(
    inner: &'a Inner,
    mut etw: MutexGuard<'a, EtwState>,
) -> (MutexGuard<'a, EtwState>, CallbackTurn<'a>) {
    let me = thread::current().id();
    while etw.notifier.is_some_and(|(owner, _)| owner != me) {
        etw = inner
            .etw_callbacks_idle
            .wait(etw)
            .unwrap_or_else(PoisonError::into_inner);
    }
    let depth = etw.notifier.map_or(0, |(_, depth)| depth);
    etw.notifier = Some((me, depth + 1));
    (etw, CallbackTurn { inner })
}

impl Drop for CallbackTurn<'_> {
    fn drop(&mut self) {
        let mut etw = lock(&self.inner.etw);
        etw.notifier = match etw.notifier {
            Some((owner, depth)) if depth > 1 => Some((owner, depth - 1)),
            _ => None,
        };
        drop(etw);
        self.inner.etw_callbacks_idle.notify_all();
    }
}

/// Calls an enable callback as ETW does: at PASSIVE_LEVEL, source GUID_NULL, no filter data.
fn deliver(callback: ETWENABLECALLBACK, context: usize, enablement: Option<Enablement>) {
    let source = GUID::NULL;
    let (code, e) = match enablement {
        Some(e) => (EVENT_CONTROL_CODE_ENABLE_PROVIDER, e),
        None => (
            EVENT_CONTROL_CODE_DISABLE_PROVIDER,
            Enablement::new(0, 0, 0),
        ),
    };
    let irql = current_irql();
    set_irql(PASSIVE_LEVEL);
    crate::kernel::call_driver_callback(
        "ETWENABLECALLBACK",
        callback as usize,
        crate::kernel::CalledFrom::SystemService,
        // SAFETY: the provider registered this callback and context and keeps them valid
        // until EtwUnregister returns, which waits for callbacks in flight; ETW calls it at
        // PASSIVE_LEVEL with these arguments.
        || unsafe {
            callback(
                &raw const source,
                code,
                e.level,
                e.match_any,
                e.match_all,
                ptr::null(),
                context as *mut c_void,
            );
        },
    );
    set_irql(irql);
}

/// One event a session received.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    /// Provider GUID (of the registration the event was written through).
    pub provider: GUID,
    /// Provider name, from the event's provider metadata, else from the traits the provider
    /// set with `EtwSetInformation`.
    pub provider_name: Option<String>,
    /// Event name (empty if the event carried no decodable TraceLogging metadata).
    pub name: String,
    /// Level.
    pub level: u8,
    /// Keyword.
    pub keyword: u64,
    /// Opcode (0 info, 1 start, 2 stop).
    pub opcode: u8,
    /// Channel (11 for TraceLogging).
    pub channel: u8,
    /// Decoded fields, in order (empty when decoding failed).
    pub fields: Vec<Field>,
    /// Activity id: the one passed to `EtwWriteTransfer`, else the writing thread's (see
    /// `EtwActivityIdControl`); `None` when that is GUID_NULL.
    pub activity_id: Option<GUID>,
    /// Related activity id passed to `EtwWriteTransfer`.
    pub related_activity_id: Option<GUID>,
    /// Why the event could not be (fully) decoded, if it could not.
    pub decode_error: Option<String>,
}

impl CapturedEvent {
    /// The value of the first field named `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }
}

impl Kernel {
    /// Live ETW provider registrations (`EtwRegister` without its `EtwUnregister`).
    #[must_use]
    pub fn etw_registrations(&self) -> usize {
        lock(&self.inner().etw).registrations.len()
    }

    /// Events captured so far, oldest first.
    #[must_use]
    pub fn etw_events(&self) -> Vec<CapturedEvent> {
        lock(&self.inner().etw).events.clone()
    }

    /// The `Message` string of each captured event that has one (the SDK's trace messages),
    /// oldest first.
    #[must_use]
    pub fn etw_messages(&self) -> Vec<String> {
        lock(&self.inner().etw)
            .events
            .iter()
            .filter_map(|e| match e.field("Message") {
                Some(Value::Str(message)) => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many captured events have the `Message` `message`, exactly.
    #[must_use]
    pub fn etw_message_count(&self, message: &str) -> usize {
        self.etw_messages().iter().filter(|m| *m == message).count()
    }

    /// How many captured events have a `Message` containing `text`.
    #[must_use]
    pub fn etw_messages_containing(&self, text: &str) -> usize {
        self.etw_messages()
            .iter()
            .filter(|m| m.contains(text))
            .count()
    }

    /// Forgets captured events.
    pub fn etw_clear(&self) {
        lock(&self.inner().etw).events.clear();
    }

    /// A copy of the traits blob a registration of `provider` set with
    /// `EtwSetInformation(EventProviderSetTraits)`.
    #[must_use]
    pub fn etw_provider_traits(&self, provider: GUID) -> Option<Vec<u8>> {
        lock(&self.inner().etw)
            .registrations
            .values()
            .find(|r| r.provider == provider)
            .and_then(|r| r.traits.clone())
    }

    /// How registrations of `provider` are enabled now (`None`: disabled), or would be if it
    /// registered now.
    #[must_use]
    pub fn etw_enablement(&self, provider: GUID) -> Option<Enablement> {
        lock(&self.inner().etw).enablement_for(&provider)
    }

    /// A session enables `provider` with this level and keywords: every registration of it
    /// gets an enable callback (control code 1), as do later registrations.
    pub fn etw_enable(&self, provider: GUID, enablement: Enablement) {
        self.etw_reconfigure(Some(provider), |etw| {
            etw.config.insert(provider, Some(enablement));
        });
    }

    /// The sessions stop listening to `provider`: registrations that were enabled get a
    /// disable callback (control code 0); later registrations start disabled.
    pub fn etw_disable(&self, provider: GUID) {
        self.etw_reconfigure(None, |etw| {
            etw.config.insert(provider, None);
        });
    }

    /// The setting of providers that [`etw_enable`](Kernel::etw_enable) /
    /// [`etw_disable`](Kernel::etw_disable) did not name (initially `Some(Enablement::ALL)`).
    /// Registered providers it affects get their enable callback.
    pub fn etw_default(&self, enablement: Option<Enablement>) {
        self.etw_reconfigure(None, |etw| etw.default = enablement);
    }

    /// Shorthand for [`etw_default`](Kernel::etw_default) with [`Enablement::ALL`] or `None`.
    pub fn etw_enable_by_default(&self, enabled: bool) {
        self.etw_default(enabled.then_some(Enablement::ALL));
    }

    /// Applies a configuration change and delivers the enable callbacks it causes: to every
    /// registration whose enablement changed, and to those of `renew` if enabled (a session
    /// enabling a provider again notifies it again).
    fn etw_reconfigure(&self, renew: Option<GUID>, change: impl FnOnce(&mut EtwState)) {
        let inner: &Inner = self.inner();
        let (mut etw, turn) = begin_callbacks(inner, lock(&inner.etw));
        change(&mut etw);
        let state = &mut *etw;
        let mut due = Vec::new();
        for (&handle, r) in &mut state.registrations {
            let now = state
                .config
                .get(&r.provider)
                .copied()
                .unwrap_or(state.default);
            let renewed = now.is_some() && renew == Some(r.provider);
            if now != r.enabled || renewed {
                r.enabled = now;
                if let Some(callback) = r.callback {
                    due.push((handle, callback, r.context));
                }
            }
        }
        drop(etw);
        for (handle, callback, context) in due {
            // An earlier callback (on this thread) may have unregistered it or changed it.
            let current = lock(&inner.etw)
                .registrations
                .get(&handle)
                .map(|r| r.enabled);
            if let Some(enablement) = current {
                deliver(callback, context, enablement);
            }
        }
        drop(turn);
    }
}

/// `EtwRegister`: registers a provider; delivers the "already enabled" callback before
/// returning when a session has the provider enabled.
///
/// Fails with `STATUS_INVALID_PARAMETER` for a NULL `ProviderId` or `RegHandle`, and with
/// `STATUS_NO_MEMORY` when a [`Fault::Call`](crate::Fault::Call)`("EtwRegister", n)` or an
/// allocation fault fires. IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// Kernel routine; `ProviderId` and `RegHandle` are valid when non-NULL; the callback and
/// context stay valid until `EtwUnregister`.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwRegister(
    ProviderId: *const GUID,
    EnableCallback: Option<ETWENABLECALLBACK>,
    CallbackContext: *mut c_void,
    RegHandle: *mut REGHANDLE,
) -> NTSTATUS {
    const API: &str = "EtwRegister";
    let inner = with_kernel(API, Arc::clone);
    require_irql(API, PASSIVE_LEVEL);
    if ProviderId.is_null() || RegHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a non-NULL provider id from the caller is readable.
    let provider = unsafe { *ProviderId };
    if call_fails(&inner, API) || allocation_fails(&inner) {
        return STATUS_NO_MEMORY;
    }
    let (mut etw, turn) = begin_callbacks(&inner, lock(&inner.etw));
    etw.next_handle += 1;
    let handle = HANDLE_BASE + etw.next_handle;
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
    drop(etw);
    // SAFETY: a non-NULL handle pointer from the caller is writable.
    unsafe { RegHandle.write(handle) };
    if let (Some(callback), Some(_)) = (EnableCallback, enabled) {
        deliver(callback, CallbackContext as usize, enabled);
    }
    drop(turn);
    STATUS_SUCCESS
}

/// `EtwUnregister`: ends a registration; no callback. Waits for an enable callback another
/// thread is delivering, so none runs after it returns. A handle that is not registered is
/// `STATUS_INVALID_HANDLE` if 0 and a bug check otherwise (see the module docs). IRQL:
/// PASSIVE_LEVEL.
#[unsafe(no_mangle)]
pub extern "win64" fn EtwUnregister(RegHandle: REGHANDLE) -> NTSTATUS {
    const API: &str = "EtwUnregister";
    require_bound(API);
    require_irql(API, PASSIVE_LEVEL);
    with_kernel(API, |k| {
        let mut etw = lock(&k.etw);
        if etw.registrations.remove(&RegHandle).is_none() {
            drop(etw);
            return unregistered(API, RegHandle);
        }
        let me = thread::current().id();
        while etw.notifier.is_some_and(|(owner, _)| owner != me) {
            etw = k
                .etw_callbacks_idle
                .wait(etw)
                .unwrap_or_else(PoisonError::into_inner);
        }
        STATUS_SUCCESS
    })
}

/// `EtwSetInformation`: class 2 (`EventProviderSetTraits`) stores a copy of the traits blob;
/// class 0 (`EventProviderBinaryTrackInfo`) is accepted and ignored; other classes are
/// `STATUS_INVALID_DEVICE_REQUEST`. `STATUS_INVALID_PARAMETER` for traits at NULL with a
/// non-zero length. A handle that is not registered is `STATUS_INVALID_HANDLE` if 0 and a bug
/// check otherwise (see the module docs). IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// Kernel routine; `EventInformation` holds `InformationLength` readable bytes when non-NULL.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwSetInformation(
    RegHandle: REGHANDLE,
    InformationClass: EVENT_INFO_CLASS,
    EventInformation: *const c_void,
    InformationLength: u32,
) -> NTSTATUS {
    const API: &str = "EtwSetInformation";
    require_bound(API);
    require_irql(API, PASSIVE_LEVEL);
    with_kernel(API, |k| {
        let mut etw = lock(&k.etw);
        let Some(registration) = etw.registrations.get_mut(&RegHandle) else {
            drop(etw);
            return unregistered(API, RegHandle);
        };
        if InformationClass == EventProviderBinaryTrackInfo {
            return STATUS_SUCCESS;
        }
        if InformationClass != EventProviderSetTraits {
            return STATUS_INVALID_DEVICE_REQUEST;
        }
        let blob = if InformationLength == 0 {
            Vec::new()
        } else if EventInformation.is_null() {
            return STATUS_INVALID_PARAMETER;
        } else {
            // SAFETY: the caller passes `InformationLength` readable bytes.
            unsafe {
                core::slice::from_raw_parts(
                    EventInformation.cast::<u8>(),
                    InformationLength as usize,
                )
            }
            .to_vec()
        };
        registration.traits = Some(blob);
        STATUS_SUCCESS
    })
}

/// The bytes an `EVENT_DATA_DESCRIPTOR` points to, or why they cannot be read.
///
/// # Safety
/// A non-NULL `Ptr` points to `Size` readable bytes.
unsafe fn descriptor_bytes(d: &EVENT_DATA_DESCRIPTOR) -> Result<&[u8], String> {
    if d.Size == 0 {
        return Ok(&[]);
    }
    let address = match usize::try_from(d.Ptr) {
        Ok(0) | Err(_) => {
            return Err(format!(
                "data descriptor at {:#x} with {} bytes",
                d.Ptr, d.Size
            ));
        }
        Ok(address) => address,
    };
    // SAFETY: the caller's contract: a non-NULL pointer to `Size` readable bytes.
    Ok(unsafe { core::slice::from_raw_parts(address as *const u8, d.Size as usize) })
}

/// Above APC_LEVEL, everything `EtwWriteTransfer` reads must be non-paged, whether or not a
/// session wants the event: the structures it is given and the data they point to.
fn require_nonpaged_event(structures: [(usize, &str); 4], descriptors: &[EVENT_DATA_DESCRIPTOR]) {
    const API: &str = "EtwWriteTransfer";
    let data = descriptors
        .iter()
        .filter(|d| d.Size != 0)
        .map(|d| (usize::try_from(d.Ptr).unwrap_or(0), "event data"));
    for (address, what) in structures.into_iter().chain(data) {
        crate::pool::require_nonpaged(API, address, what, false);
    }
}

/// `EtwWriteTransfer`: captures the event if a session wants it (see the module docs),
/// decoding its TraceLogging metadata; otherwise drops it. Returns `STATUS_SUCCESS` either
/// way, and `STATUS_INVALID_PARAMETER` for a NULL event descriptor or descriptor array. A
/// handle that is not registered is `STATUS_INVALID_HANDLE` if 0 and a bug check otherwise
/// (see the module docs). IRQL: any; above APC_LEVEL, a descriptor, activity id or data in
/// paged pool is a bug check (`IRQL_NOT_LESS_OR_EQUAL`), whether or not the event is wanted.
///
/// # Safety
/// Kernel routine; `EventDescriptor` is valid; `UserData` holds `UserDataCount` descriptors,
/// each pointing to `Size` readable bytes; activity ids are valid when non-NULL.
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
    require_bound(API);
    require_irql(API, HIGH_LEVEL);
    if EventDescriptor.is_null() || (UserData.is_null() && UserDataCount != 0) {
        return STATUS_INVALID_PARAMETER;
    }
    let descriptors = if UserDataCount == 0 {
        &[][..]
    } else {
        // SAFETY: the caller passes `UserDataCount` descriptors.
        unsafe { core::slice::from_raw_parts(UserData, UserDataCount as usize) }
    };
    require_nonpaged_event(
        [
            (EventDescriptor as usize, "the event descriptor"),
            (UserData as usize, "the data descriptors"),
            (ActivityId as usize, "the activity id"),
            (RelatedActivityId as usize, "the related activity id"),
        ],
        descriptors,
    );
    // SAFETY: a non-NULL event descriptor from the caller is readable.
    let descriptor = unsafe { *EventDescriptor };
    let target = with_kernel(API, |k| {
        lock(&k.etw)
            .registrations
            .get(&RegHandle)
            .map(|r| (r.provider, r.enabled))
    });
    let Some((provider, enabled)) = target else {
        return unregistered(API, RegHandle);
    };
    if !enabled.is_some_and(|e| e.wants(descriptor.Level, descriptor.Keyword)) {
        return STATUS_SUCCESS;
    }
    let mut problems = Vec::new();
    let (mut provider_meta, mut event_meta, mut payload) = (None, None, Vec::new());
    for (i, d) in descriptors.iter().enumerate() {
        // SAFETY: each descriptor points to `Size` readable bytes (the caller's contract).
        let bytes = match unsafe { descriptor_bytes(d) } {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(format!("descriptor {i}: {e}"));
                continue;
            }
        };
        match d.Reserved {
            EVENT_DATA_DESCRIPTOR_TYPE_PROVIDER_METADATA => provider_meta = Some(bytes),
            EVENT_DATA_DESCRIPTOR_TYPE_EVENT_METADATA => event_meta = Some(bytes),
            EVENT_DATA_DESCRIPTOR_TYPE_NONE => payload.extend_from_slice(bytes),
            other => problems.push(format!("descriptor {i}: unknown type {other}")),
        }
    }
    let provider_name = match provider_meta {
        Some(meta) => decode_provider_metadata(meta).ok(),
        None => with_kernel(API, |k| {
            lock(&k.etw)
                .registrations
                .get(&RegHandle)
                .and_then(|r| r.traits.as_deref().map(decode_provider_metadata))
        })
        .and_then(Result::ok),
    };
    let (name, fields) = match event_meta.map(decode_event_metadata) {
        None => {
            problems.push("no TraceLogging event metadata".to_owned());
            (String::new(), Vec::new())
        }
        Some(Err(e)) => {
            problems.push(e.0);
            (String::new(), Vec::new())
        }
        Some(Ok(meta)) => match decode_payload(&meta, &payload) {
            Ok(fields) => (meta.name, fields),
            Err(e) => {
                problems.push(e.0);
                (meta.name, Vec::new())
            }
        },
    };
    let activity_id = if ActivityId.is_null() {
        THREAD.with(|t| t.activity_id.get())
    } else {
        // SAFETY: a non-NULL activity id from the caller is readable.
        unsafe { *ActivityId }
    };
    let related_activity_id = (!RelatedActivityId.is_null()).then(|| {
        // SAFETY: a non-NULL related activity id from the caller is readable.
        unsafe { *RelatedActivityId }
    });
    let event = CapturedEvent {
        provider,
        provider_name,
        name,
        level: descriptor.Level,
        keyword: descriptor.Keyword,
        opcode: descriptor.Opcode,
        channel: descriptor.Channel,
        fields,
        activity_id: (activity_id != GUID::NULL).then_some(activity_id),
        related_activity_id,
        decode_error: (!problems.is_empty()).then(|| problems.join("; ")),
    };
    with_kernel(API, |k| lock(&k.etw).events.push(event));
    STATUS_SUCCESS
}

/// `EtwActivityIdControl`: the calling thread's activity id. `GET_ID` (1) reads it, `SET_ID`
/// (2) sets it, `CREATE_ID` (3) makes a new locally unique id, `GET_SET_ID` (4) swaps,
/// `CREATE_SET_ID` (5) sets a new id and returns the previous one. `STATUS_INVALID_PARAMETER`
/// for a NULL pointer or another code. IRQL: below DISPATCH_LEVEL, any for `CREATE_ID`.
///
/// # Safety
/// Kernel routine; `ActivityId` is valid for reads and writes when non-NULL.
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn EtwActivityIdControl(
    ControlCode: u32,
    ActivityId: *mut GUID,
) -> NTSTATUS {
    const API: &str = "EtwActivityIdControl";
    require_bound(API);
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
        let n = with_kernel(API, |k| k.next_activity.fetch_add(1, Ordering::Relaxed));
        GUID::from_u128(ACTIVITY_ID_PREFIX | u128::from(n))
    };
    // SAFETY: `ActivityId` is non-NULL and valid for reads (the caller's contract).
    let read = || unsafe { *ActivityId };
    // SAFETY: `ActivityId` is non-NULL and valid for writes (the caller's contract).
    let write = |id: GUID| unsafe { ActivityId.write(id) };
    THREAD.with(|t| {
        let current = t.activity_id.get();
        match ControlCode {
            EVENT_ACTIVITY_CTRL_GET_ID => write(current),
            EVENT_ACTIVITY_CTRL_SET_ID => t.activity_id.set(read()),
            EVENT_ACTIVITY_CTRL_CREATE_ID => write(create()),
            EVENT_ACTIVITY_CTRL_GET_SET_ID => {
                t.activity_id.set(read());
                write(current);
            }
            EVENT_ACTIVITY_CTRL_CREATE_SET_ID => {
                t.activity_id.set(create());
                write(current);
            }
            _ => return STATUS_INVALID_PARAMETER,
        }
        STATUS_SUCCESS
    })
}
