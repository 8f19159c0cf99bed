//! Pool: `ExAllocatePool2`, `ExFreePoolWithTag`, `ExFreePool`.
//!
//! Allocations are tagged and counted per tag; memory is zeroed unless
//! `POOL_FLAG_UNINITIALIZED` (then filled with 0xCC); freed memory is poisoned with 0xDF and
//! kept in quarantine for a while so a use after free reads poison, and a second free of the
//! same block is recognised. Double free, tag mismatch and freeing an unknown address are bug
//! checks `BAD_POOL_CALLER` (0xC2) with Windows' first parameters.

use core::alloc::Layout;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::Ordering;
use std::alloc;
use std::collections::{BTreeMap, HashMap, VecDeque};

use ebpf_ext_sys::wdm::{
    APC_LEVEL, BAD_POOL_CALLER, DISPATCH_LEVEL, PAGE_SIZE, POOL_FLAG_CACHE_ALIGNED,
    POOL_FLAG_LAST_KNOWN_REQUIRED, POOL_FLAG_NON_PAGED, POOL_FLAG_NON_PAGED_EXECUTE,
    POOL_FLAG_PAGED, POOL_FLAG_RAISE_ON_FAILURE, POOL_FLAG_REQUIRED_MASK, POOL_FLAG_UNINITIALIZED,
    POOL_FLAGS,
};

use crate::kernel::{
    Kernel, allocation_fails, bugcheck, call_fails, current_irql, lock, require_irql,
    try_with_kernel, with_kernel,
};

/// Byte written over freed pool.
pub const FREED_POISON: u8 = 0xDF;
/// Byte written over `POOL_FLAG_UNINITIALIZED` allocations.
pub const UNINITIALIZED_FILL: u8 = 0xCC;
const QUARANTINE_BLOCKS: usize = 4096;
const QUARANTINE_BYTES: usize = 16 << 20;

struct Block {
    tag: u32,
    layout: Layout,
    paged: bool,
}

#[derive(Default)]
pub(crate) struct PoolState {
    live: HashMap<usize, Block>,
    /// The live paged blocks, start → size (also in `live`): where a lock or a rundown
    /// reference may not be used at DISPATCH_LEVEL.
    paged: BTreeMap<usize, usize>,
    quarantine: VecDeque<(usize, Layout)>,
    quarantined: HashMap<usize, u32>,
    quarantine_bytes: usize,
    total_allocations: u64,
}

impl PoolState {
    /// Frees everything (the kernel is going away).
    pub(crate) fn release_all(&mut self) {
        self.paged.clear();
        for (addr, block) in self.live.drain() {
            // SAFETY: `addr` was returned by `alloc` with this layout and not freed.
            unsafe { alloc::dealloc(addr as *mut u8, block.layout) };
        }
        while let Some((addr, layout)) = self.quarantine.pop_front() {
            // SAFETY: quarantined blocks came from `alloc` with this layout and were not freed.
            unsafe { alloc::dealloc(addr as *mut u8, layout) };
        }
        self.quarantined.clear();
    }
}

/// Outstanding allocations of one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagUsage {
    /// The tag, as its four characters (`'Nfbe'` reads "ebfN" in memory order).
    pub tag: String,
    /// Allocations not yet freed.
    pub count: usize,
    /// Their total size in bytes.
    pub bytes: usize,
}

/// Renders a pool tag as its characters in memory order, as debuggers show them.
#[must_use]
pub fn tag_name(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect()
}

impl Kernel {
    /// Outstanding allocations, per tag, sorted by tag.
    #[must_use]
    pub fn pool_outstanding(&self) -> Vec<TagUsage> {
        let pool = lock(&self.inner().pool);
        let mut by_tag: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for block in pool.live.values() {
            let entry = by_tag.entry(block.tag).or_default();
            entry.0 += 1;
            entry.1 += block.layout.size();
        }
        by_tag
            .into_iter()
            .map(|(tag, (count, bytes))| TagUsage {
                tag: tag_name(tag),
                count,
                bytes,
            })
            .collect()
    }

    /// Outstanding allocations of the tag whose characters (in memory order, as
    /// [`TagUsage::tag`]) are `tag`.
    #[must_use]
    pub fn pool_outstanding_with_tag(&self, tag: &str) -> usize {
        self.pool_outstanding()
            .iter()
            .filter(|usage| usage.tag == tag)
            .map(|usage| usage.count)
            .sum()
    }

    /// Allocations made since the kernel was created.
    #[must_use]
    pub fn pool_total_allocations(&self) -> u64 {
        lock(&self.inner().pool).total_allocations
    }

    /// Panics with a leak report if any pool allocation is outstanding, or any NMR
    /// registration, device object, work item or ETW registration is still alive.
    ///
    /// It first waits for every queued work item to run, so call it neither from a work
    /// routine nor from a thread a queued routine waits for (one inside a core-sim epoch, say,
    /// while a program's deferred free waits for that epoch to end): a routine still queued
    /// or running may yet free what it holds (a system work item of a simulated component
    /// frees what it was given), and a device object the driver deleted while a work item of
    /// it was queued or running is freed when the routine returns (see `IoQueueWorkItem`),
    /// which is when Windows would unload the driver and Driver Verifier check its pool.
    ///
    /// # Panics
    /// On the first kind of leak found, listing what leaked.
    pub fn assert_no_leaks(&self) {
        self.wait_for_work_items();
        let leaks = self.pool_outstanding();
        assert!(leaks.is_empty(), "pool leak: {leaks:?}");
        self.assert_no_object_leaks();
    }
}

/// Allocates kernel pool for `api` (which counts as an allocation for fault injection).
/// Returns NULL on an injected failure.
pub(crate) fn pool_alloc(
    api: &'static str,
    flags: POOL_FLAGS,
    size: usize,
    tag: u32,
) -> *mut c_void {
    with_kernel(api, |k| {
        if allocation_fails(k) {
            return ptr::null_mut();
        }
        let align = if size >= PAGE_SIZE {
            PAGE_SIZE
        } else if flags & POOL_FLAG_CACHE_ALIGNED != 0 {
            64
        } else {
            16
        };
        let Ok(layout) = Layout::from_size_align(size.max(1), align) else {
            return ptr::null_mut();
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc(layout) };
        if p.is_null() {
            return ptr::null_mut();
        }
        let fill = if flags & POOL_FLAG_UNINITIALIZED != 0 {
            UNINITIALIZED_FILL
        } else {
            0
        };
        // SAFETY: `p` is a fresh allocation of `layout.size()` bytes.
        unsafe { ptr::write_bytes(p, fill, layout.size()) };
        let mut pool = lock(&k.pool);
        pool.total_allocations += 1;
        pool.quarantined.remove(&(p as usize));
        let paged = flags & POOL_FLAG_PAGED != 0;
        if paged {
            pool.paged.insert(p as usize, layout.size());
            k.paged_blocks.fetch_add(1, Ordering::Relaxed);
        }
        pool.live.insert(p as usize, Block { tag, layout, paged });
        p.cast()
    })
}

/// The live pool allocation of the kernel bound to the calling thread that holds `address`
/// (its first byte to one past its last); `None` if no live allocation holds it (the address
/// is on a stack, in an image, in host memory, or freed) or no kernel is bound.
///
/// What tests and core-sim use to tell whether a provider handed over a pointer with room
/// the core may write in front of it (a test-run context's header). It scans every live
/// allocation: not for hot paths.
#[must_use]
pub fn pool_allocation_containing(address: usize) -> Option<core::ops::Range<usize>> {
    try_with_kernel(|k| {
        lock(&k.pool)
            .live
            .iter()
            .map(|(&start, block)| start..start + block.layout.size())
            .find(|range| range.contains(&address))
    })
    .flatten()
}

/// Whether `address` lies in a live paged pool block of the bound kernel.
pub(crate) fn in_paged_pool(address: usize) -> bool {
    try_with_kernel(|k| {
        // Most kernels never allocate paged pool: no lock taken for them.
        k.paged_blocks.load(Ordering::Relaxed) != 0
            && lock(&k.pool)
                .paged
                .range(..=address)
                .next_back()
                .is_some_and(|(&start, &size)| address - start < size)
    })
    .unwrap_or(false)
}

/// Bug-checks `IRQL_NOT_LESS_OR_EQUAL` if `what` (a lock, a rundown reference or data that
/// `api` uses at `address`) lies in paged pool while the thread is above APC_LEVEL, or will
/// be once `api` raises to DISPATCH_LEVEL (`raises`): Windows touches it there, and a page
/// fault at DISPATCH_LEVEL bug-checks (only when the page is out, so at random; here always).
pub(crate) fn require_nonpaged(api: &'static str, address: usize, what: &str, raises: bool) {
    if !raises && current_irql() <= APC_LEVEL {
        return;
    }
    if in_paged_pool(address) {
        let irql = current_irql().max(if raises { DISPATCH_LEVEL } else { 0 });
        bugcheck(
            api,
            ebpf_ext_sys::wdm::IRQL_NOT_LESS_OR_EQUAL,
            [address as u64, u64::from(irql), 0, 0],
            &format!(
                "{what} at {address:#x} is in paged pool, used at IRQL {irql} (it must be non-paged)"
            ),
        );
    }
}

/// Frees pool for `api`; `tag` of `None` skips the tag check (`ExFreePool`).
pub(crate) fn pool_free(api: &'static str, p: *mut c_void, tag: Option<u32>) {
    with_kernel(api, |k| {
        let addr = p as usize;
        let mut pool = lock(&k.pool);
        let Some(block) = pool.live.remove(&addr) else {
            let freed_tag = pool.quarantined.get(&addr).copied();
            drop(pool);
            match freed_tag {
                Some(t) => bugcheck(
                    api,
                    BAD_POOL_CALLER,
                    [0x07, 0, addr as u64, u64::from(t)],
                    &format!(
                        "double free of pool block {addr:#x} (tag '{}')",
                        tag_name(t)
                    ),
                ),
                None => bugcheck(
                    api,
                    BAD_POOL_CALLER,
                    [0x46, addr as u64, 0, 0],
                    &format!("free of an address that is not a pool allocation: {addr:#x}"),
                ),
            }
        };
        let irql = current_irql();
        let max = if block.paged {
            APC_LEVEL
        } else {
            DISPATCH_LEVEL
        };
        if irql > max {
            let tag_found = block.tag;
            pool.live.insert(addr, block);
            drop(pool);
            bugcheck(
                api,
                BAD_POOL_CALLER,
                [0x09, u64::from(irql), u64::from(tag_found), addr as u64],
                &format!("pool freed at IRQL {irql}, above {max}"),
            );
        }
        if let Some(tag) = tag
            && tag != block.tag
        {
            let found = block.tag;
            pool.live.insert(addr, block);
            drop(pool);
            bugcheck(
                api,
                BAD_POOL_CALLER,
                [0x0A, addr as u64, u64::from(found), u64::from(tag)],
                &format!(
                    "freed with tag '{}' but allocated with tag '{}'",
                    tag_name(tag),
                    tag_name(found)
                ),
            );
        }
        if block.paged {
            pool.paged.remove(&addr);
            k.paged_blocks.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: the block is live, `layout.size()` bytes long, and now owned by the quarantine.
        unsafe { ptr::write_bytes(p.cast::<u8>(), FREED_POISON, block.layout.size()) };
        pool.quarantine.push_back((addr, block.layout));
        pool.quarantined.insert(addr, block.tag);
        pool.quarantine_bytes += block.layout.size();
        while pool.quarantine.len() > QUARANTINE_BLOCKS || pool.quarantine_bytes > QUARANTINE_BYTES
        {
            let Some((old, layout)) = pool.quarantine.pop_front() else {
                break;
            };
            pool.quarantined.remove(&old);
            pool.quarantine_bytes -= layout.size();
            // SAFETY: quarantined blocks came from `alloc` with this layout and were not freed.
            unsafe { alloc::dealloc(old as *mut u8, layout) };
        }
    });
}

/// `ExAllocatePool2`.
///
/// # Safety
/// Kernel routine; see [`ebpf_ext_sys::wdm::ExAllocatePool2`].
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExAllocatePool2(
    Flags: POOL_FLAGS,
    NumberOfBytes: usize,
    Tag: u32,
) -> *mut c_void {
    const API: &str = "ExAllocatePool2";
    let paged = Flags & POOL_FLAG_PAGED != 0;
    require_irql(API, if paged { APC_LEVEL } else { DISPATCH_LEVEL });
    if Flags & POOL_FLAG_RAISE_ON_FAILURE != 0 {
        bugcheck(
            API,
            BAD_POOL_CALLER,
            [0x9B, Flags, 0, 0],
            "POOL_FLAG_RAISE_ON_FAILURE: exceptions cannot cross the kernel boundary here",
        );
    }
    let kinds = [
        POOL_FLAG_NON_PAGED,
        POOL_FLAG_NON_PAGED_EXECUTE,
        POOL_FLAG_PAGED,
    ];
    let kind_count = kinds.iter().filter(|&&k| Flags & k != 0).count();
    let unknown_required =
        Flags & POOL_FLAG_REQUIRED_MASK & !((POOL_FLAG_LAST_KNOWN_REQUIRED << 1) - 1) != 0;
    if with_kernel(API, |k| call_fails(k, API)) || Tag == 0 || kind_count != 1 || unknown_required {
        return ptr::null_mut();
    }
    pool_alloc(API, Flags, NumberOfBytes, Tag)
}

/// `ExFreePoolWithTag`.
///
/// # Safety
/// Kernel routine; see [`ebpf_ext_sys::wdm::ExFreePoolWithTag`].
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExFreePoolWithTag(P: *mut c_void, Tag: u32) {
    require_irql("ExFreePoolWithTag", DISPATCH_LEVEL);
    pool_free("ExFreePoolWithTag", P, Some(Tag));
}

/// `ExFreePool`.
///
/// # Safety
/// Kernel routine; see [`ebpf_ext_sys::wdm::ExFreePool`].
#[unsafe(no_mangle)]
pub unsafe extern "win64" fn ExFreePool(P: *mut c_void) {
    require_irql("ExFreePool", DISPATCH_LEVEL);
    pool_free("ExFreePool", P, None);
}
