//! AF_XDP sockets on libxdp's rings.
//!
//! A [`Port`] is one AF_XDP socket bound to one queue of one interface, with its own UMEM: a
//! mapped area of equal chunks that the kernel receives into and transmits from, and four rings
//! (fill, completion, RX, TX) shared with the kernel. Every chunk is always in exactly one
//! place: our free list, the fill ring, received and being processed, or the TX ring until the
//! completion ring returns it. That bookkeeping is the safety argument for handing out
//! `&mut [u8]` views of chunks.
//!
//! The rings are driven through libxdp's own helpers (libxdp-sys) rather than a higher-level
//! crate because the pipeline moves a frame's start inside its chunk (VXLAN encapsulation
//! prepends 50 bytes, decapsulation strips them): a transmit descriptor carries whatever
//! address and length the pipeline left, which xsk-rs's frame descriptors cannot express.
//!
//! Binding is in copy mode with need_wakeup, what veth supports; transmit kicks the kernel
//! (`sendto`) whenever the TX ring needs a wakeup, not only after adding descriptors, since
//! copy mode otherwise stalls once the ring is full.

use std::ffi::CString;
use std::io;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use libxdp_sys as xdp;

/// A port's sizes.
#[derive(Clone, Copy, Debug)]
pub struct PortConfig {
    /// Chunks in the UMEM.
    pub frames: u32,
    /// Bytes per chunk (a power of two, at most the page size).
    pub frame_size: u32,
    /// Headroom the kernel leaves before a received frame, for the pipeline to grow into.
    pub headroom: u32,
    /// Entries per ring.
    pub ring_size: u32,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            frames: 4096,
            frame_size: 2048,
            headroom: 256,
            ring_size: 1024,
        }
    }
}

/// One received or to-be-sent frame: its address in the UMEM and its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Offset of the frame's first byte in the UMEM.
    pub addr: u64,
    /// Frame length.
    pub len: u32,
}

/// An AF_XDP socket with its UMEM and rings.
#[derive(Debug)]
pub struct Port {
    area: NonNull<u8>,
    area_len: usize,
    umem: *mut xdp::xsk_umem,
    xsk: *mut xdp::xsk_socket,
    // Boxed: libxdp keeps pointers to these ring structs.
    fill: Box<xdp::xsk_ring_prod>,
    comp: Box<xdp::xsk_ring_cons>,
    rx: Box<xdp::xsk_ring_cons>,
    tx: Box<xdp::xsk_ring_prod>,
    frame_size: u32,
    /// Chunks we hold, by base address.
    free: Vec<u64>,
}

// SAFETY: the socket, UMEM and rings are owned by this value and used only through `&mut self`;
// nothing ties them to the thread that created them.
unsafe impl Send for Port {}

fn os_err(what: &str, rc: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(-rc);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Port {
    /// Bind an AF_XDP socket to `queue` of interface `ifname` in the calling thread's network
    /// namespace. No XDP program is loaded: the caller attaches its own and registers the
    /// socket in its XSKMAP (see `Steering::register_socket`).
    pub fn open(ifname: &str, queue: u32, config: PortConfig) -> io::Result<Port> {
        assert!(config.frame_size.is_power_of_two() && config.frames > 0);
        let area_len = config.frames as usize * config.frame_size as usize;
        // SAFETY: a new private anonymous mapping; it aliases nothing.
        let area = unsafe {
            libc::mmap(
                ptr::null_mut(),
                area_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let area = NonNull::new(area.cast::<u8>()).expect("mmap does not return null");
        let mut port = Port {
            area,
            area_len,
            umem: ptr::null_mut(),
            xsk: ptr::null_mut(),
            // SAFETY: the ring structs are plain C data for libxdp to fill in; all-zero is
            // their state before creation.
            fill: Box::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            comp: Box::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            rx: Box::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            tx: Box::new(unsafe { core::mem::zeroed() }),
            frame_size: config.frame_size,
            free: (0..config.frames)
                .map(|i| u64::from(i) * u64::from(config.frame_size))
                .collect(),
        };
        let umem_config = xdp::xsk_umem_config {
            fill_size: config.ring_size * 2,
            comp_size: config.ring_size,
            frame_size: config.frame_size,
            frame_headroom: config.headroom,
            flags: 0,
        };
        // SAFETY: the area is ours and outlives the UMEM (dropped after it); the ring structs
        // are boxed, so their addresses stay valid for libxdp.
        let rc = unsafe {
            xdp::xsk_umem__create(
                &mut port.umem,
                port.area.as_ptr().cast::<c_void>(),
                area_len as u64,
                &mut *port.fill,
                &mut *port.comp,
                &umem_config,
            )
        };
        if rc != 0 {
            return Err(os_err("creating the UMEM", rc));
        }
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        let socket_config = xdp::xsk_socket_config {
            rx_size: config.ring_size,
            tx_size: config.ring_size,
            __bindgen_anon_1: xdp::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: xdp::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: (xdp::XDP_COPY | xdp::XDP_USE_NEED_WAKEUP) as u16,
        };
        // Binding right after another socket on the same queue closed can fail once with
        // EBUSY: retry a few times.
        let mut rc = 0;
        for attempt in 0..5 {
            // SAFETY: valid UMEM, name and boxed rings; on success the socket refers to them
            // until `xsk_socket__delete` in `drop`.
            rc = unsafe {
                xdp::xsk_socket__create(
                    &mut port.xsk,
                    name.as_ptr(),
                    queue,
                    port.umem,
                    &mut *port.rx,
                    &mut *port.tx,
                    &socket_config,
                )
            };
            if rc != -libc::EBUSY {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
        }
        if rc != 0 {
            return Err(os_err(
                &format!("binding AF_XDP to {ifname} queue {queue}"),
                rc,
            ));
        }
        Ok(port)
    }

    /// Bytes per chunk; chunks are aligned to it.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The socket's file descriptor, for the XSKMAP and for `poll`.
    pub fn fd(&self) -> i32 {
        // SAFETY: `xsk` is a live socket until drop.
        unsafe { xdp::xsk_socket__fd(self.xsk) }
    }

    /// Give the kernel free chunks to receive into.
    pub fn fill(&mut self) {
        let held = self.free.len().min(u32::MAX as usize) as u32;
        // Reserving is all or nothing: ask for what the ring has room for.
        // SAFETY: the fill ring is live.
        let want = unsafe { xdp::xsk_prod_nb_free(&mut *self.fill, held) }.min(held);
        if want == 0 {
            return;
        }
        let mut idx = 0u32;
        // SAFETY: the fill ring is live; reserve writes only `idx`.
        let n = unsafe { xdp::xsk_ring_prod__reserve(&mut *self.fill, want, &mut idx) };
        for i in 0..n {
            let addr = self.free.pop().expect("reserved no more than we hold");
            // SAFETY: slot `idx + i` was reserved above and is ours to write until submit.
            let slot = unsafe { xdp::xsk_ring_prod__fill_addr(&mut *self.fill, idx + i) };
            // SAFETY: `slot` points into the mapped fill ring.
            unsafe { *slot = addr };
        }
        // SAFETY: exactly `n` slots were reserved and written.
        unsafe { xdp::xsk_ring_prod__submit(&mut *self.fill, n) };
    }

    /// Wait up to `timeout_ms` for received frames; true if there are some.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc > 0)
    }

    /// Take up to `out.len()` received frames.
    pub fn receive(&mut self, out: &mut [Desc]) -> usize {
        let mut idx = 0u32;
        let want = out.len().min(u32::MAX as usize) as u32;
        // SAFETY: the RX ring is live; peek writes only `idx`.
        let n = unsafe { xdp::xsk_ring_cons__peek(&mut *self.rx, want, &mut idx) };
        for (i, d) in out.iter_mut().take(n as usize).enumerate() {
            // SAFETY: slot `idx + i` was returned by peek and is valid until release.
            let slot = unsafe { xdp::xsk_ring_cons__rx_desc(&*self.rx, idx + i as u32) };
            // SAFETY: `slot` points into the mapped RX ring.
            let desc = unsafe { *slot };
            *d = Desc {
                addr: desc.addr,
                len: desc.len,
            };
        }
        // SAFETY: releasing exactly the `n` slots peeked.
        unsafe { xdp::xsk_ring_cons__release(&mut *self.rx, n) };
        n as usize
    }

    /// The chunk holding `addr` and the frame's offset in it.
    #[inline]
    pub fn chunk_of(&self, addr: u64) -> (u64, usize) {
        let base = addr & !u64::from(self.frame_size - 1);
        (base, (addr - base) as usize)
    }

    /// Mutable views of the chunks of `frames` (received, so distinct and held by us), each
    /// with the frame's offset in it, passed to `f`. The views live only for the call.
    pub fn with_chunks<R>(
        &mut self,
        frames: &[Desc],
        f: impl FnOnce(&mut dyn Iterator<Item = (&mut [u8], usize)>) -> R,
    ) -> R {
        let size = self.frame_size as usize;
        let area = self.area.as_ptr();
        let area_len = self.area_len;
        let mut it = frames.iter().map(|d| {
            let (base, head) = (
                d.addr & !(size as u64 - 1),
                (d.addr & (size as u64 - 1)) as usize,
            );
            assert!(
                base as usize + size <= area_len,
                "descriptor outside the UMEM"
            );
            // SAFETY: `base + size` is within the mapping (asserted above).
            let start = unsafe { area.add(base as usize) };
            // SAFETY: `start` begins a chunk inside our mapping; received descriptors name
            // distinct chunks the kernel has handed back to us, so no two views alias, and
            // `&mut self` keeps every other user of the area away while `f` runs.
            let chunk = unsafe { std::slice::from_raw_parts_mut(start, size) };
            (chunk, head)
        });
        f(&mut it)
    }

    /// Queue frames for transmission (their chunks pass to the kernel until completion) and
    /// kick the kernel if it asks. Returns how many were queued; the rest go back to the
    /// free list (dropped).
    pub fn transmit(&mut self, frames: &[Desc]) -> usize {
        let mut idx = 0u32;
        let asked = frames.len().min(u32::MAX as usize) as u32;
        // Reserving is all or nothing: ask for what the ring has room for.
        // SAFETY: the TX ring is live.
        let want = unsafe { xdp::xsk_prod_nb_free(&mut *self.tx, asked) }.min(asked);
        // SAFETY: the TX ring is live; reserve writes only `idx`.
        let n = unsafe { xdp::xsk_ring_prod__reserve(&mut *self.tx, want, &mut idx) };
        for (i, f) in frames.iter().take(n as usize).enumerate() {
            // SAFETY: slot `idx + i` was reserved above.
            let desc = unsafe { xdp::xsk_ring_prod__tx_desc(&mut *self.tx, idx + i as u32) };
            // SAFETY: `desc` points into the mapped TX ring.
            unsafe {
                (*desc).addr = f.addr;
            }
            // SAFETY: as above.
            unsafe {
                (*desc).len = f.len;
            }
            // SAFETY: as above.
            unsafe {
                (*desc).options = 0;
            }
        }
        // SAFETY: exactly `n` slots were reserved and written.
        unsafe { xdp::xsk_ring_prod__submit(&mut *self.tx, n) };
        for f in &frames[n as usize..] {
            self.recycle(f.addr);
        }
        self.kick();
        n as usize
    }

    /// In copy mode the kernel sends only when kicked: kick whenever the TX ring needs it.
    fn kick(&mut self) {
        // SAFETY: the TX ring is live.
        if unsafe { xdp::xsk_ring_prod__needs_wakeup(&*self.tx) } != 0 {
            // SAFETY: a zero-length sendto on our own socket: the AF_XDP wakeup.
            let _ = unsafe {
                libc::sendto(
                    self.fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
        }
    }

    /// Take back chunks the kernel has finished sending.
    pub fn complete(&mut self) {
        let mut idx = 0u32;
        // SAFETY: the completion ring is live; peek writes only `idx`.
        let n = unsafe { xdp::xsk_ring_cons__peek(&mut *self.comp, u32::MAX, &mut idx) };
        for i in 0..n {
            // SAFETY: slot `idx + i` was returned by peek.
            let slot = unsafe { xdp::xsk_ring_cons__comp_addr(&*self.comp, idx + i) };
            // SAFETY: `slot` points into the mapped completion ring.
            let addr = unsafe { *slot };
            self.recycle(addr);
        }
        // SAFETY: releasing exactly the `n` slots peeked.
        unsafe { xdp::xsk_ring_cons__release(&mut *self.comp, n) };
        if n > 0 {
            self.kick();
        }
    }

    /// A held frame's bytes (received and not yet sent or recycled).
    pub fn frame(&self, d: Desc) -> &[u8] {
        let end = d.addr as usize + d.len as usize;
        let (base, _) = self.chunk_of(d.addr);
        assert!(
            end <= self.area_len && end <= base as usize + self.frame_size as usize,
            "frame outside its chunk"
        );
        // SAFETY: `d.addr` is inside our mapping (asserted).
        let start = unsafe { self.area.as_ptr().add(d.addr as usize) };
        // SAFETY: the range lies inside one chunk of our mapping (asserted); the chunk is
        // held by us, so the kernel does not write it, and `&self` excludes our own writers.
        unsafe { std::slice::from_raw_parts(start, d.len as usize) }
    }

    /// Copy `data` into a free chunk (after `headroom` bytes) and return its descriptor, or
    /// `None` when every chunk is in use.
    pub fn alloc_copy(&mut self, data: &[u8], headroom: usize) -> Option<Desc> {
        if headroom + data.len() > self.frame_size as usize {
            return None;
        }
        let base = self.free.pop()?;
        let addr = base + headroom as u64;
        // SAFETY: `addr` is inside the free chunk at `base`, in our mapping.
        let start = unsafe { self.area.as_ptr().add(addr as usize) };
        // SAFETY: `base` is a free chunk of our mapping, so nothing else reads or writes it,
        // and `headroom + data.len()` fits in it (checked).
        let dst = unsafe { std::slice::from_raw_parts_mut(start, data.len()) };
        dst.copy_from_slice(data);
        Some(Desc {
            addr,
            len: data.len() as u32,
        })
    }

    /// Return a frame's chunk to the free list.
    pub fn recycle(&mut self, addr: u64) {
        let (base, _) = self.chunk_of(addr);
        self.free.push(base);
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if !self.xsk.is_null() {
            // SAFETY: the socket is live and deleted once.
            unsafe { xdp::xsk_socket__delete(self.xsk) };
        }
        if !self.umem.is_null() {
            // SAFETY: no socket uses the UMEM any more.
            let _ = unsafe { xdp::xsk_umem__delete(self.umem) };
        }
        // SAFETY: unmaps exactly our area, which nothing references any more.
        let _ = unsafe { libc::munmap(self.area.as_ptr().cast::<c_void>(), self.area_len) };
    }
}
