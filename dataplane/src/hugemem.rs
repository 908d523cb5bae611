//! Large zero-initialised tables in memory the kernel may back with transparent huge pages.
//!
//! Conntrack's index and records take about 90 MB at a million flows. With 4 KiB pages nearly
//! every lookup then misses the TLB as well as the caches, and the page walk costs as much as a
//! quarter of an established packet's budget (measured: `service/dnat_established` at 1M flows).
//! Most distributions set transparent huge pages to `madvise`, so a process has to ask: this
//! module maps anonymous memory aligned to 2 MiB, asks with `MADV_HUGEPAGE`, and hands out a
//! safe slice. When the kernel says no (THP off), the memory is ordinary 4 KiB pages and works
//! the same.
//!
//! It is the one place outside the I/O layer with `unsafe`: the pipeline needs the kernel for
//! nothing else, and this is allocation, not packet handling.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// Huge page size on x86-64 and arm64 (with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Types whose all-zero bit pattern is a valid value, so freshly mapped (zero-filled) memory
/// holds valid ones.
///
/// # Safety
/// An implementor must be valid when every byte is zero and must not need dropping.
pub(crate) unsafe trait Zeroable: Sized {}

// SAFETY: an atomic integer of all-zero bytes is zero.
unsafe impl Zeroable for AtomicU64 {}
// SAFETY: an atomic integer of all-zero bytes is zero.
unsafe impl Zeroable for AtomicU32 {}

/// A fixed-length slice of zero-initialised `T` in its own anonymous mapping.
pub(crate) struct ZeroedTable<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    map: NonNull<c_void>,
    map_len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the table owns its elements like a `Box<[T]>` does.
unsafe impl<T: Zeroable + Send> Send for ZeroedTable<T> {}
// SAFETY: shared access only hands out `&[T]`, as `Box<[T]>` does.
unsafe impl<T: Zeroable + Sync> Sync for ZeroedTable<T> {}

impl<T: Zeroable> ZeroedTable<T> {
    /// `len` zeroed elements. Panics, like an allocation failure, if the memory cannot be
    /// mapped.
    pub(crate) fn new(len: usize) -> Self {
        assert!(core::mem::align_of::<T>() <= HUGE_PAGE);
        let bytes = len
            .checked_mul(core::mem::size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(HUGE_PAGE))
            .expect("table size overflows usize")
            .max(HUGE_PAGE);
        // One huge page more than needed, so the table can start on a huge-page boundary.
        let map_len = bytes + HUGE_PAGE;
        // SAFETY: a new private anonymous mapping at an address of the kernel's choosing; it
        // aliases nothing.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            panic!(
                "cannot map {map_len} bytes for a table: {}",
                std::io::Error::last_os_error()
            );
        }
        let start = (map as usize).next_multiple_of(HUGE_PAGE);
        let ptr = start as *mut c_void;
        // SAFETY: advice on pages of our own mapping ([start, start + bytes) lies inside it);
        // it changes how the kernel backs them, not their contents. Failure (THP disabled)
        // is harmless, so the result is ignored.
        let _ = unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        ZeroedTable {
            ptr: NonNull::new(ptr.cast::<T>()).expect("mmap returned a non-null mapping"),
            len,
            map: NonNull::new(map).expect("mmap returned a non-null mapping"),
            map_len,
            _owns: PhantomData,
        }
    }
}

impl<T: Zeroable> Deref for ZeroedTable<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is aligned (to a huge page) and starts `len` elements of mapped,
        // zero-filled memory that `T: Zeroable` makes valid and that lives until `drop`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for ZeroedTable<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no reference into it outlives `self`.
        let _ = unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

impl<T: Zeroable> core::fmt::Debug for ZeroedTable<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZeroedTable")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering::Relaxed;

    #[test]
    fn tables_are_zeroed_aligned_writable_and_freed() {
        for len in [1, 1000, (3 << 20) / 8] {
            let t: ZeroedTable<AtomicU64> = ZeroedTable::new(len);
            assert_eq!(t.len(), len);
            assert_eq!(t.as_ptr() as usize % HUGE_PAGE, 0);
            assert!(t.iter().all(|a| a.load(Relaxed) == 0));
            t[len - 1].store(7, Relaxed);
            assert_eq!(t[len - 1].load(Relaxed), 7);
        }
    }
}
