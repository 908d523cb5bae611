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
//! A table may also live in a file ([`ZeroedTable::in_file`]): conntrack's, when it is to
//! outlive the process (see `conntrack/persist.rs`). A shared mapping of a tmpfs file gets huge
//! pages only where the kernel's `shmem_enabled` allows it.
//!
//! It is the one place outside the I/O layer with `unsafe`: the pipeline needs the kernel for
//! nothing else, and this is allocation, not packet handling.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// Huge page size on x86-64 and arm64 (with 4 KiB base pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

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
        let bytes = Self::bytes(len);
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
        Self::advise(start as *mut c_void, bytes);
        ZeroedTable {
            ptr: NonNull::new(start as *mut T).expect("mmap returned a non-null mapping"),
            len,
            map: NonNull::new(map).expect("mmap returned a non-null mapping"),
            map_len,
            _owns: PhantomData,
        }
    }

    /// `len` elements stored in `file` from byte `offset` (a multiple of [`HUGE_PAGE`]), shared
    /// with every other mapping of the file: what one process writes there, the next one to
    /// map the file finds. The file must already extend over them ([`ZeroedTable::bytes`]);
    /// bytes never written read as zero, a valid `T`.
    ///
    /// Whatever else maps the file may write the elements too: `T` must be made of atomics
    /// (as every `Zeroable` here is), and the caller must not let two writers at once follow
    /// a protocol that assumes one.
    pub(crate) fn in_file(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        assert_eq!(
            offset % HUGE_PAGE as u64,
            0,
            "a table starts on a huge page"
        );
        let bytes = Self::bytes(len);
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::other("table offset past off_t"))?;
        // SAFETY: a new shared mapping of the file at an address of the kernel's choosing; it
        // aliases no Rust object. Other mappings of the same file see the same bytes, which
        // is why `T` is restricted to atomics (see above).
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated now: a successor maps the file before its predecessor leaves, so
                // the page faults are not paid while the node's traffic waits for it.
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                offset,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Self::advise(map, bytes);
        Ok(ZeroedTable {
            ptr: NonNull::new(map.cast::<T>()).expect("mmap returned a non-null mapping"),
            len,
            map: NonNull::new(map).expect("mmap returned a non-null mapping"),
            map_len: bytes,
            _owns: PhantomData,
        })
    }

    /// Bytes a table of `len` elements occupies: whole huge pages, at least one.
    pub(crate) fn bytes(len: usize) -> usize {
        assert!(core::mem::align_of::<T>() <= HUGE_PAGE);
        len.checked_mul(core::mem::size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(HUGE_PAGE))
            .expect("table size overflows usize")
            .max(HUGE_PAGE)
    }

    /// Ask for huge pages on `[start, start + bytes)`, pages of a mapping of ours.
    fn advise(start: *mut c_void, bytes: usize) {
        // SAFETY: advice on pages of our own mapping; it changes how the kernel backs them,
        // not their contents. Failure (THP disabled, or for shared memory
        // `shmem_enabled` set to never) is harmless, so the result is ignored.
        let _ = unsafe { libc::madvise(start, bytes, libc::MADV_HUGEPAGE) };
    }
}

/// Give `file` `len` bytes of storage now (extending it to `len` if shorter), so that writes
/// through a mapping never find the file system full: on a tmpfs that would be SIGBUS in
/// whichever thread wrote first.
pub(crate) fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::other("file past off_t"))?;
    // SAFETY: posix_fallocate on a descriptor we own; it touches no memory of ours.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
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
