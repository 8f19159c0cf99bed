//! PoolBox and PoolAllocator against usersim.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU32, Ordering};

use ebpf_ext_pool::{PoolAllocator, PoolArray, PoolBox, PoolTag};
use ebpf_ext_sys::Error;
use ebpf_ext_usersim::{Fault, Kernel};

const TAG: PoolTag = PoolTag::new(*b"PbTs");

struct Counted<'a>(&'a AtomicU32);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn box_holds_value_and_frees_with_tag() {
    let kernel = Kernel::new();
    let drops = AtomicU32::new(0);
    let mut b = PoolBox::try_new((42u64, Counted(&drops)), TAG).expect("allocate");
    b.0 += 1;
    assert_eq!(b.0, 43);
    assert_eq!(kernel.pool_outstanding()[0].tag, "PbTs");
    drop(b);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    kernel.assert_no_leaks();
}

#[test]
fn allocation_failure_is_an_error_and_drops_the_value() {
    let kernel = Kernel::new();
    let drops = AtomicU32::new(0);
    kernel.inject(Fault::Allocation(1));
    let result = PoolBox::try_new(Counted(&drops), TAG);
    assert!(matches!(result, Err(Error::InsufficientResources)));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    kernel.assert_no_leaks();
}

#[test]
fn raw_round_trip() {
    let kernel = Kernel::new();
    let raw = PoolBox::try_new(7u32, TAG).expect("allocate").into_raw();
    // SAFETY: `raw` came from into_raw with the same tag.
    let back = unsafe { PoolBox::from_raw(raw, TAG) };
    assert_eq!(*back, 7);
    drop(back);
    kernel.assert_no_leaks();
}

#[test]
fn array_raw_round_trip() {
    let kernel = Kernel::new();
    let mut array = PoolArray::<u16>::try_new(5, TAG).expect("allocate");
    array[4] = 9;
    let (ptr, len) = array.into_raw();
    assert_eq!(len, 5);
    assert_eq!(
        kernel.pool_outstanding().len(),
        1,
        "still allocated while raw"
    );
    // SAFETY: `ptr` and `len` came from into_raw with the same tag.
    let back = unsafe { PoolArray::from_raw(ptr, len, TAG) };
    assert_eq!(back[4], 9);
    drop(back);
    kernel.assert_no_leaks();
}

#[test]
fn global_allocator_alignments() {
    let kernel = Kernel::new();
    let alloc = PoolAllocator::new(TAG);
    for (size, align) in [(1, 1), (24, 8), (100, 16), (200, 64), (5000, 4096)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero layout.
        let p = unsafe { alloc.alloc(layout) };
        assert!(
            !p.is_null() && (p as usize).is_multiple_of(align),
            "{size}/{align}"
        );
        // SAFETY: allocated above with this layout.
        unsafe { alloc.dealloc(p, layout) };
    }
    // Layouts the pool cannot honour: NULL rather than a misaligned block.
    for (size, align) in [(64, 128), (4096, 8192), (10_000, 16_384)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        assert!(
            !ebpf_ext_pool::pool_can_align(size, align),
            "{size}/{align}"
        );
        // SAFETY: a non-zero layout; the pool cannot honour it and returns NULL.
        assert!(unsafe { alloc.alloc(layout) }.is_null(), "{size}/{align}");
    }
    kernel.assert_no_leaks();
}

#[test]
fn array_is_default_initialised_and_freed() {
    let kernel = Kernel::new();
    let mut a: PoolArray<u64> = PoolArray::try_new(10, TAG).expect("allocate");
    assert!(a.iter().all(|&v| v == 0));
    a[9] = 5;
    assert_eq!(a.iter().sum::<u64>(), 5);
    drop(a);
    kernel.inject(Fault::Allocation(1));
    assert!(PoolArray::<u64>::try_new(4, TAG).is_err());
    assert!(
        PoolArray::<u64>::try_new(usize::MAX, TAG).is_err(),
        "size overflow is an error, not a panic"
    );
    kernel.assert_no_leaks();
}

/// An element whose `Default` unwinds on its third call, counting the drops of the others.
struct Fragile;

thread_local! {
    static MADE: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
    static DROPPED: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

impl Default for Fragile {
    fn default() -> Self {
        let made = MADE.with(|m| m.replace(m.get() + 1));
        assert!(made < 2, "the third element fails");
        Fragile
    }
}

impl Drop for Fragile {
    fn drop(&mut self) {
        DROPPED.with(|d| d.set(d.get() + 1));
    }
}

/// A `Default` that unwinds part-way (host builds; drivers abort on panic) leaves neither the
/// pool block nor the elements made before it.
#[test]
fn an_array_whose_element_default_unwinds_frees_what_it_made() {
    let kernel = Kernel::new();
    let unwound = std::panic::catch_unwind(|| PoolArray::<Fragile>::try_new(4, TAG));
    assert!(unwound.is_err());
    assert_eq!(
        DROPPED.with(core::cell::Cell::get),
        2,
        "the two elements made"
    );
    kernel.assert_no_leaks();
}

/// A value the allocation cannot hold comes back from `try_new_or_return` (its caller may
/// have to undo what it stands for); one it can is boxed.
#[test]
fn try_new_or_return_hands_the_value_back_when_the_allocation_fails() {
    let kernel = Kernel::new();
    let drops = AtomicU32::new(0);
    kernel.inject(Fault::Allocation(1));
    let refused = PoolBox::try_new_or_return(Counted(&drops), TAG);
    let back = refused.err().expect("handed back");
    assert_eq!(drops.load(Ordering::SeqCst), 0, "not dropped: handed back");
    let boxed = PoolBox::try_new_or_return(back, TAG).ok().expect("boxed");
    drop(boxed);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    kernel.assert_no_leaks();
}

/// A type aligned beyond pool's 16 bytes is boxed at its alignment when pool can honour it
/// (up to a cache line, with `POOL_FLAG_CACHE_ALIGNED`), and refused otherwise; never
/// misaligned.
#[test]
fn an_over_aligned_value_is_boxed_at_its_alignment_or_refused() {
    #[repr(align(64))]
    struct Line([u8; 64]);
    #[repr(align(128))]
    struct Wide(#[allow(dead_code, reason = "only its size and alignment matter")] [u8; 128]);
    let kernel = Kernel::new();
    let line = PoolBox::try_new(Line([7; 64]), TAG).expect("a cache line is honoured");
    assert!(line.as_ptr().is_aligned(), "{:p}", line.as_ptr());
    assert_eq!(line.0[63], 7);
    drop(line);
    assert_eq!(
        PoolBox::try_new(Wide([0; 128]), TAG).err(),
        Some(Error::InsufficientResources),
        "128-byte alignment below a page: pool cannot honour it"
    );
    kernel.assert_no_leaks();
}
