//! AF_XDP sockets on libxdp's rings, sharing one UMEM per worker.
//!
//! A [`Umem`] is a mapped area of equal chunks that the kernel receives into and transmits
//! from. A [`Port`] is one AF_XDP socket bound to one queue of one interface, with its own four
//! rings (fill, completion, RX, TX) shared with the kernel. All the ports of a worker share one
//! UMEM (`XDP_SHARED_UMEM`, which the kernel allows across interfaces as long as each socket
//! has its own fill and completion rings), so a frame received on one port is sent on another
//! by moving its descriptor, not its bytes.
//!
//! Every chunk is always in exactly one place: the UMEM's free list, a fill ring, received and
//! being processed, or a TX ring until a completion ring returns it. That bookkeeping is the
//! safety argument for handing out `&mut [u8]` views of chunks. The UMEM also records which
//! port's rings hold each chunk it has handed to the kernel, so that a port closed while pods
//! come and go gives back the chunks left in its fill and TX rings instead of leaking them. A
//! UMEM and its ports belong to one worker thread (`Rc`, not `Arc`).
//!
//! libxdp binds a UMEM's first socket on the UMEM's own file descriptor, which stays open (and
//! bound) until the UMEM is deleted, and later sockets share the UMEM through it: give the
//! first socket the most stable interface (the uplink).
//!
//! The rings are driven through libxdp's own helpers (libxdp-sys) rather than a higher-level
//! crate because the pipeline moves a frame's start inside its chunk (VXLAN encapsulation
//! prepends 50 bytes, decapsulation strips them): a transmit descriptor carries whatever
//! address and length the pipeline left, which xsk-rs's frame descriptors cannot express.
//!
//! Binding is in copy mode with need_wakeup, what veth supports; transmit kicks the kernel
//! (`sendto`) whenever the TX ring needs a wakeup, not only after adding descriptors, since
//! copy mode otherwise stalls once the ring is full.
//!
//! # Frames larger than a chunk
//!
//! A UMEM's first socket binds with `XDP_USE_SG` (the kernel keeps it as a flag of the UMEM,
//! and the sockets sharing it inherit it), so a frame larger than a chunk arrives in several
//! descriptors, each but the last marked [`Desc::more`] (`XDP_PKT_CONTD`), and is sent the same
//! way. The first descriptor holds at least the first `chunk - headroom - 256` bytes, so every
//! header is in it. The kernel publishes a frame's descriptors together, so a receive that
//! ends inside a frame reads on to its end. In copy mode a transmitted frame becomes one skb,
//! whose fragments are at most the kernel's `MAX_SKB_FRAGS` (17): [`MAX_FRAME_DESCS`]
//! descriptors per frame at most, which with 4 KiB chunks carries a 64 KiB frame.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::io;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::rc::Rc;

use kxdp_dataplane::offload::FrameSink;
use libxdp_sys as xdp;

/// Sizes of a UMEM and of its ports' rings.
#[derive(Clone, Copy, Debug)]
pub struct PortConfig {
    /// Chunks in the UMEM (shared by all its ports).
    pub frames: u32,
    /// Bytes per chunk (a power of two, at most the page size).
    pub frame_size: u32,
    /// Headroom the kernel leaves before a received frame, for the pipeline to grow into.
    pub headroom: u32,
    /// Entries per ring of each port. The default, 1024, is measured: with 512 a burst of
    /// segments cut from one 64 KiB frame overran the receiving node's socket while its
    /// worker waited for a core (TCP across nodes retransmitted thousands of times a run);
    /// with 2048 the chunks a port cycles through outgrow the caches and 1464-byte packet
    /// rates fell 10 to 15%. A port's fill ring holds at most its [`fill_share`].
    pub ring_size: u32,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            frames: 16384,
            frame_size: 4096,
            headroom: 0,
            ring_size: 1024,
        }
    }
}

impl PortConfig {
    /// The largest frame a port receives and sends whole: [`MAX_FRAME_DESCS`] buffers of what
    /// a chunk holds after the headroom.
    pub fn max_frame(&self) -> usize {
        let per_chunk = self
            .frame_size
            .saturating_sub(KERNEL_HEADROOM + self.headroom);
        MAX_FRAME_DESCS * per_chunk as usize
    }
}

/// The kernel's headroom before every received buffer, on top of [`PortConfig::headroom`]
/// (`XDP_PACKET_HEADROOM`): a received frame starts this far into its chunk, and the pipeline
/// may grow into it.
pub const KERNEL_HEADROOM: u32 = 256;

/// The most descriptors one transmitted frame may have: in copy mode the kernel builds one
/// skb per frame, its first buffer and up to `MAX_SKB_FRAGS` (17) fragments.
pub const MAX_FRAME_DESCS: usize = 18;

/// `XDP_USE_SG` (linux/if_xdp.h, 6.6): frames larger than a chunk span several descriptors.
const XDP_USE_SG: u16 = 1 << 4;

/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, 6.17): how many frames one kick of a copy-mode
/// socket sends, instead of the kernel's [`KERNEL_TX_BATCH`].
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;

/// Frames a copy-mode socket sends per kick unless told otherwise (`TX_BATCH_SIZE`).
const KERNEL_TX_BATCH: u32 = 32;

/// `XDP_PKT_CONTD` (linux/if_xdp.h): the frame continues in the next descriptor.
const XDP_PKT_CONTD: u32 = 1;

/// One buffer of a received or to-be-sent frame: its address in the UMEM, its length, and
/// whether the frame continues in the next descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Offset of the buffer's first byte in the UMEM.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// More of the frame follows in the next descriptor (all but a frame's last buffer).
    pub more: bool,
}

impl Desc {
    /// A frame in one buffer.
    pub fn single(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            more: false,
        }
    }
}

fn os_err(what: &str, rc: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(-rc);
    io::Error::new(
        e.kind(),
        OsError {
            what: format!("{what}: {e}"),
            errno: -rc,
        },
    )
}

/// A failed libxdp call: what was being done, and the errno, kept for callers that decide by it.
#[derive(Debug)]
struct OsError {
    what: String,
    errno: i32,
}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for OsError {}

/// The errno behind an error from this module.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|r| r.downcast_ref::<OsError>())
            .map(|o| o.errno)
    })
}

/// Fill and completion rings, boxed: libxdp keeps pointers to them.
type FillComp = (Box<xdp::xsk_ring_prod>, Box<xdp::xsk_ring_cons>);

fn zeroed_rings() -> FillComp {
    // SAFETY: ring structs are plain C data for libxdp to fill in; all-zero is their state
    // before creation.
    let fill = Box::new(unsafe { core::mem::zeroed::<xdp::xsk_ring_prod>() });
    // SAFETY: as above.
    let comp = Box::new(unsafe { core::mem::zeroed::<xdp::xsk_ring_cons>() });
    (fill, comp)
}

/// A UMEM: the frame area and its free list, shared by a worker's ports.
#[derive(Debug)]
pub struct Umem {
    area: NonNull<u8>,
    area_len: usize,
    umem: *mut xdp::xsk_umem,
    frame_size: u32,
    ring_size: u32,
    /// Chunks no ring holds, by base address.
    free: RefCell<Vec<u64>>,
    /// By chunk index: the port whose fill or TX ring holds it, or [`NO_PORT`].
    owner: RefCell<Vec<u32>>,
    /// The last port number handed out.
    ports: Cell<u32>,
    /// Ports on this UMEM not yet dropped: they share its chunks ([`fill_share`]).
    live: Cell<u32>,
    /// Chunks in the UMEM.
    frames: u32,
    /// The fill and completion rings created with the UMEM, for its first socket.
    first_rings: RefCell<Option<FillComp>>,
}

impl Umem {
    /// Map the frame area and register it with the kernel.
    pub fn new(config: PortConfig) -> io::Result<Rc<Umem>> {
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
        let (mut fill, mut comp) = zeroed_rings();
        let mut umem = Umem {
            area,
            area_len,
            umem: ptr::null_mut(),
            frame_size: config.frame_size,
            ring_size: config.ring_size,
            free: RefCell::new(
                (0..config.frames)
                    .map(|i| u64::from(i) * u64::from(config.frame_size))
                    .collect(),
            ),
            owner: RefCell::new(vec![NO_PORT; config.frames as usize]),
            ports: Cell::new(NO_PORT),
            live: Cell::new(0),
            frames: config.frames,
            first_rings: RefCell::new(None),
        };
        let umem_config = xdp::xsk_umem_config {
            fill_size: config.ring_size,
            comp_size: config.ring_size,
            frame_size: config.frame_size,
            frame_headroom: config.headroom,
            flags: 0,
        };
        // SAFETY: the area is ours and outlives the UMEM (`drop` deletes the UMEM first); the
        // ring structs are boxed, so their addresses stay valid for libxdp.
        let rc = unsafe {
            xdp::xsk_umem__create(
                &mut umem.umem,
                umem.area.as_ptr().cast::<c_void>(),
                area_len as u64,
                &mut *fill,
                &mut *comp,
                &umem_config,
            )
        };
        if rc != 0 {
            return Err(os_err("creating the UMEM", rc));
        }
        *umem.first_rings.borrow_mut() = Some((fill, comp));
        Ok(Rc::new(umem))
    }

    /// Bytes per chunk; chunks are aligned to it.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The base of the chunk holding `addr`.
    #[inline]
    pub fn chunk_base(&self, addr: u64) -> u64 {
        addr & !u64::from(self.frame_size - 1)
    }

    /// Return a frame's chunk to the free list.
    pub fn recycle(&self, addr: u64) {
        self.free.borrow_mut().push(self.chunk_base(addr));
    }

    /// The bytes of a buffer the caller holds (received, or made, and not yet sent or
    /// recycled).
    pub fn frame(&self, d: Desc) -> &[u8] {
        let end = d.addr as usize + d.len as usize;
        let base = self.chunk_base(d.addr);
        assert!(
            end <= self.area_len && end <= base as usize + self.frame_size as usize,
            "frame outside its chunk"
        );
        // SAFETY: `d.addr` is inside the mapping (asserted).
        let start = unsafe { self.area.as_ptr().add(d.addr as usize) };
        // SAFETY: the range lies inside one chunk of the mapping (asserted); the chunk is held
        // by the caller, so the kernel does not write it, and `&self` excludes the worker's
        // own writers (views of chunks are handed out only through `&mut` of a port or sink).
        unsafe { std::slice::from_raw_parts(start, d.len as usize) }
    }

    /// The UMEM's own descriptor, on which its first socket is bound (see the module
    /// documentation).
    pub fn fd(&self) -> i32 {
        // SAFETY: the UMEM is live until drop.
        unsafe { xdp::xsk_umem__fd(self.umem) }
    }

    /// Chunks on the free list.
    pub fn free_chunks(&self) -> usize {
        self.free.borrow().len()
    }

    /// Where the chunks are now. Between batches the worker holds none, so a chunk that is
    /// neither free nor in a ring is one lost.
    pub fn chunks(&self) -> Chunks {
        let kernel = self
            .owner
            .borrow()
            .iter()
            .filter(|o| **o != NO_PORT)
            .count();
        Chunks {
            total: u64::from(self.frames),
            free: self.free.borrow().len() as u64,
            kernel: kernel as u64,
        }
    }

    /// The index of the chunk holding `addr`.
    #[inline]
    fn chunk_index(&self, addr: u64) -> usize {
        (addr / u64::from(self.frame_size)) as usize
    }

    /// Record that `port`'s rings (or nobody's: [`NO_PORT`]) hold the chunks of `addrs`.
    #[inline]
    fn set_owner(&self, addrs: impl Iterator<Item = u64>, port: u32) {
        let mut owner = self.owner.borrow_mut();
        for a in addrs {
            let i = self.chunk_index(a);
            owner[i] = port;
        }
    }

    /// Put back on the free list every chunk `port`'s rings held: the port is closed and the
    /// kernel will not use them again.
    fn reclaim(&self, port: u32) {
        let mut owner = self.owner.borrow_mut();
        let mut free = self.free.borrow_mut();
        for (i, o) in owner.iter_mut().enumerate() {
            if *o == port {
                *o = NO_PORT;
                free.push(i as u64 * u64::from(self.frame_size));
            }
        }
    }
}

/// New frames written into free chunks of a [`Umem`] (after `headroom` bytes), their
/// descriptors appended to a list: where the frames a large one is cut into (segments,
/// fragments) go. Implements the offload library's [`FrameSink`]. A frame that fits a chunk
/// is written in place; a larger one (a segment for a jumbo uplink) is written into the
/// caller's scratch buffer and then copied into as many chunks as it takes, one descriptor
/// each ([`Desc::more`]). The list never grows past the capacity it came with (no allocation
/// per packet): a full list is out of buffers, like an empty free list.
#[derive(Debug)]
pub struct ChunkSink<'a> {
    umem: &'a Umem,
    headroom: u32,
    out: &'a mut Vec<Desc>,
    scratch: &'a mut [u8],
    open: Open,
}

/// The buffer a [`ChunkSink`] handed out and has not had committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    /// The chunk at this base.
    Chunk(u64),
    /// The scratch buffer.
    Scratch,
}

impl<'a> ChunkSink<'a> {
    /// A sink writing into `umem`'s free chunks, listing the frames in `out`, with `scratch`
    /// for frames larger than a chunk.
    pub fn new(
        umem: &'a Umem,
        headroom: u32,
        out: &'a mut Vec<Desc>,
        scratch: &'a mut [u8],
    ) -> Self {
        ChunkSink {
            umem,
            headroom,
            out,
            scratch,
            open: Open::None,
        }
    }

    /// Bytes of a frame each chunk holds.
    fn room(&self) -> usize {
        self.umem.frame_size.saturating_sub(self.headroom) as usize
    }

    /// A free chunk's bytes after the headroom.
    fn chunk(&mut self, base: u64) -> &mut [u8] {
        let at = base as usize + self.headroom as usize;
        let room = self.room();
        assert!(at + room <= self.umem.area_len, "chunk inside the UMEM");
        // SAFETY: `at` is inside the mapping (asserted).
        let start = unsafe { self.umem.area.as_ptr().add(at) };
        // SAFETY: the chunk at `base` came off the free list, so no ring and no other view
        // holds it; it stays this sink's until its descriptor leaves through `out` (or it is
        // given back on drop), and the view ends with this borrow of the sink.
        unsafe { std::slice::from_raw_parts_mut(start, room) }
    }
}

impl FrameSink for ChunkSink<'_> {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        let room = self.room();
        if room == 0 {
            return None;
        }
        let chunks = len.div_ceil(room).max(1);
        if self.out.capacity() - self.out.len() < chunks {
            return None;
        }
        if len > room {
            // Every chunk the copy will take must be there, so that `commit` cannot fail.
            let free = self.umem.free.borrow().len();
            if let Open::Chunk(base) = self.open {
                self.umem.recycle(base);
            }
            if len > self.scratch.len() || free + usize::from(self.open != Open::None) < chunks {
                self.open = Open::None;
                return None;
            }
            self.open = Open::Scratch;
            return Some(&mut self.scratch[..]);
        }
        let base = match self.open {
            Open::Chunk(base) => base,
            _ => self.umem.free.borrow_mut().pop()?,
        };
        self.open = Open::Chunk(base);
        Some(self.chunk(base))
    }

    fn commit(&mut self, len: usize) {
        let headroom = u64::from(self.headroom);
        match std::mem::replace(&mut self.open, Open::None) {
            Open::Chunk(base) => self.out.push(Desc::single(base + headroom, len as u32)),
            Open::Scratch => {
                let room = self.room();
                let mut at = 0;
                while at < len {
                    let n = room.min(len - at);
                    let base = self
                        .umem
                        .free
                        .borrow_mut()
                        .pop()
                        .expect("reserved in buffer");
                    let (chunk, scratch) =
                        (self.chunk(base).as_mut_ptr(), &self.scratch[at..at + n]);
                    // SAFETY: `chunk` starts `room >= n` writable bytes of a free chunk (see
                    // `chunk`), which the scratch buffer (the caller's memory) does not overlap.
                    unsafe { std::ptr::copy_nonoverlapping(scratch.as_ptr(), chunk, n) };
                    at += n;
                    self.out.push(Desc {
                        addr: base + headroom,
                        len: n as u32,
                        more: at < len,
                    });
                }
            }
            Open::None => panic!("a buffer was handed out"),
        }
    }
}

impl Drop for ChunkSink<'_> {
    fn drop(&mut self) {
        if let Open::Chunk(base) = self.open {
            self.umem.recycle(base);
        }
    }
}

/// A count of a UMEM's chunks by where they are ([`Umem::chunks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    /// Chunks in the UMEM.
    pub total: u64,
    /// On the free list.
    pub free: u64,
    /// In a fill or TX ring: the kernel's until it gives them back.
    pub kernel: u64,
}

impl Chunks {
    /// Chunks neither free nor the kernel's: in the worker's hands.
    pub fn held(&self) -> u64 {
        self.total.saturating_sub(self.free + self.kernel)
    }

    /// The sum of `self` and `other`, field by field.
    pub fn plus(self, other: Chunks) -> Chunks {
        Chunks {
            total: self.total + other.total,
            free: self.free + other.free,
            kernel: self.kernel + other.kernel,
        }
    }
}

/// No port: the chunk is on the free list or in the worker's hands.
const NO_PORT: u32 = 0;

impl Drop for Umem {
    fn drop(&mut self) {
        if !self.umem.is_null() {
            // SAFETY: every port holds an `Rc` to this UMEM, so none is left: no socket uses it.
            let _ = unsafe { xdp::xsk_umem__delete(self.umem) };
        }
        // SAFETY: unmaps exactly our area, which nothing references any more.
        let _ = unsafe { libc::munmap(self.area.as_ptr().cast::<c_void>(), self.area_len) };
    }
}

/// An AF_XDP socket with its rings, on a shared [`Umem`].
#[derive(Debug)]
pub struct Port {
    umem: Rc<Umem>,
    xsk: *mut xdp::xsk_socket,
    fill: Box<xdp::xsk_ring_prod>,
    comp: Box<xdp::xsk_ring_cons>,
    rx: Box<xdp::xsk_ring_cons>,
    tx: Box<xdp::xsk_ring_prod>,
    /// This port's number in its UMEM's ownership records.
    id: u32,
}

impl Port {
    /// Bind an AF_XDP socket to `queue` of interface `ifname` (in the calling thread's network
    /// namespace) with a UMEM of its own. See [`Port::open_shared`].
    pub fn open(ifname: &str, queue: u32, config: PortConfig) -> io::Result<Port> {
        Port::open_shared(ifname, queue, &Umem::new(config)?)
    }

    /// Bind an AF_XDP socket to `queue` of interface `ifname` on `umem`. No XDP program is
    /// loaded: the caller attaches its own and registers the socket in its XSKMAP (see
    /// `Steering::register_socket`).
    pub fn open_shared(ifname: &str, queue: u32, umem: &Rc<Umem>) -> io::Result<Port> {
        // The UMEM's first socket takes the rings created with it; the others get their own.
        let first = umem.first_rings.borrow_mut().take();
        let took_first = first.is_some();
        let (fill, comp) = first.unwrap_or_else(zeroed_rings);
        let (rx, tx) = {
            // SAFETY: as in `zeroed_rings`.
            let rx = Box::new(unsafe { core::mem::zeroed::<xdp::xsk_ring_cons>() });
            // SAFETY: as in `zeroed_rings`.
            let tx = Box::new(unsafe { core::mem::zeroed::<xdp::xsk_ring_prod>() });
            (rx, tx)
        };
        // Numbers wrap after 2^32 - 1 ports; 0 is nobody.
        let id = umem.ports.get().wrapping_add(1).max(1);
        umem.ports.set(id);
        umem.live.set(umem.live.get() + 1);
        let mut port = Port {
            umem: Rc::clone(umem),
            xsk: ptr::null_mut(),
            fill,
            comp,
            rx,
            tx,
            id,
        };
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        let socket_config = xdp::xsk_socket_config {
            rx_size: umem.ring_size,
            tx_size: umem.ring_size,
            __bindgen_anon_1: xdp::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: xdp::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            // Only the UMEM's first socket binds with these flags; the kernel refuses flags on
            // a socket that shares a UMEM (libxdp then sends only XDP_SHARED_UMEM), and
            // such a socket takes copy mode, need_wakeup and SG from the first.
            bind_flags: (xdp::XDP_COPY | xdp::XDP_USE_NEED_WAKEUP) as u16 | XDP_USE_SG,
        };
        // SAFETY: valid UMEM, name and boxed rings; on success the socket refers to them
        // until `xsk_socket__delete` in `drop`, and the `Rc` keeps the UMEM alive as long.
        let rc = unsafe {
            xdp::xsk_socket__create_shared(
                &mut port.xsk,
                name.as_ptr(),
                queue,
                umem.umem,
                &mut *port.rx,
                &mut *port.tx,
                &mut *port.fill,
                &mut *port.comp,
                &socket_config,
            )
        };
        if rc != 0 {
            // libxdp still holds the UMEM's first rings by address (it lets go of them only
            // when a socket takes them): give the same boxes back for the next try, or it
            // would copy them from freed memory.
            if took_first {
                let fill = core::mem::replace(&mut port.fill, zeroed_rings().0);
                let comp = core::mem::replace(&mut port.comp, zeroed_rings().1);
                *umem.first_rings.borrow_mut() = Some((fill, comp));
            }
            return Err(os_err(
                &format!("binding AF_XDP to {ifname} queue {queue}"),
                rc,
            ));
        }
        // One kick sends the whole ring where the kernel lets us say so; older kernels refuse
        // the option and `kick` kicks again instead.
        let budget: u32 = umem.ring_size;
        // SAFETY: a u32 option value of the size given, on our own socket.
        let _ = unsafe {
            libc::setsockopt(
                port.fd(),
                libc::SOL_XDP,
                XDP_MAX_TX_SKB_BUDGET,
                (&budget as *const u32).cast::<c_void>(),
                core::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        Ok(port)
    }

    /// The UMEM this port uses.
    pub fn umem(&self) -> &Rc<Umem> {
        &self.umem
    }

    /// Whether `other` uses the same UMEM, so frames move between the two without copying.
    pub fn shares_umem_with(&self, other: &Port) -> bool {
        Rc::ptr_eq(&self.umem, &other.umem)
    }

    /// Bytes per chunk; chunks are aligned to it.
    pub fn frame_size(&self) -> u32 {
        self.umem.frame_size
    }

    /// The socket's file descriptor, for the XSKMAP and for `poll`.
    pub fn fd(&self) -> i32 {
        // SAFETY: `xsk` is a live socket until drop.
        unsafe { xdp::xsk_socket__fd(self.xsk) }
    }

    /// Give the kernel free chunks to receive into: up to this port's share of the UMEM
    /// ([`fill_share`]) in its fill ring.
    pub fn fill(&mut self) {
        let mut free = self.umem.free.borrow_mut();
        let held = free.len().min(u32::MAX as usize) as u32;
        let ring = self.umem.ring_size;
        let share = fill_share(self.umem.frames, self.umem.live.get(), ring);
        // Asked for the whole ring, the kernel's count of free slots is exact.
        // SAFETY: the fill ring is live.
        let room = unsafe { xdp::xsk_prod_nb_free(&mut *self.fill, ring) }.min(ring);
        let in_ring = ring - room;
        // Reserving is all or nothing: ask for what the ring has room for.
        let want = share.saturating_sub(in_ring).min(room).min(held);
        if want == 0 {
            return;
        }
        let mut idx = 0u32;
        // SAFETY: the fill ring is live; reserve writes only `idx`.
        let n = unsafe { xdp::xsk_ring_prod__reserve(&mut *self.fill, want, &mut idx) };
        let mut owner = self.umem.owner.borrow_mut();
        for i in 0..n {
            let addr = free.pop().expect("reserved no more than we hold");
            let chunk = self.umem.chunk_index(addr);
            owner[chunk] = self.id;
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

    /// Take received buffers into `out`: up to `out.len() - MAX_FRAME_DESCS + 1`, and then on
    /// to the end of the frame the last of them belongs to, so `out` ends with a whole frame.
    /// Returns how many.
    ///
    /// A frame with more descriptors than [`MAX_FRAME_DESCS`] (the kernel never makes one from
    /// a frame it accepts) is read to its end all the same and its buffers put back on the free
    /// list; they are not in `out`.
    pub fn receive(&mut self, out: &mut [Desc]) -> usize {
        assert!(out.len() >= MAX_FRAME_DESCS, "room for a whole frame");
        let first = self.peek_into(out, out.len() - MAX_FRAME_DESCS + 1);
        let mut n = first;
        // The kernel publishes a frame's descriptors together: the rest is there already.
        while n > 0 && out[n - 1].more {
            if n == out.len() {
                // Too long a frame: drop it whole, reading on past its end.
                let start = out[..n].iter().rposition(|d| !d.more).map_or(0, |i| i + 1);
                for d in &out[start..n] {
                    self.umem.recycle(d.addr);
                }
                n = start;
                let mut spare = [Desc::default(); 1];
                loop {
                    if self.peek_into(&mut spare, 1) == 0 {
                        break;
                    }
                    self.umem.recycle(spare[0].addr);
                    if !spare[0].more {
                        break;
                    }
                }
                break;
            }
            if self.peek_into(&mut out[n..], 1) == 0 {
                // Not reached (the kernel publishes frames whole); keep the halves apart.
                break;
            }
            n += 1;
        }
        n
    }

    /// Take up to `want` received buffers into the front of `out`.
    fn peek_into(&mut self, out: &mut [Desc], want: usize) -> usize {
        let mut idx = 0u32;
        let want = want.min(out.len()).min(u32::MAX as usize) as u32;
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
                more: desc.options & XDP_PKT_CONTD != 0,
            };
        }
        // SAFETY: releasing exactly the `n` slots peeked.
        unsafe { xdp::xsk_ring_cons__release(&mut *self.rx, n) };
        self.umem
            .set_owner(out[..n as usize].iter().map(|d| d.addr), NO_PORT);
        n as usize
    }

    /// Mutable views of the chunks of `frames` (received, so distinct and held by us), each
    /// with the frame's offset in it, passed to `f`. The views live only for the call.
    pub fn with_chunks<R>(
        &mut self,
        frames: &[Desc],
        f: impl FnOnce(&mut dyn Iterator<Item = (&mut [u8], usize)>) -> R,
    ) -> R {
        let umem = Rc::clone(&self.umem);
        let size = umem.frame_size as usize;
        let area = umem.area.as_ptr();
        let area_len = umem.area_len;
        let mut it = frames.iter().map(|d| {
            let base = umem.chunk_base(d.addr);
            let head = (d.addr - base) as usize;
            assert!(
                base as usize + size <= area_len,
                "descriptor outside the UMEM"
            );
            // SAFETY: `base + size` is within the mapping (asserted above).
            let start = unsafe { area.add(base as usize) };
            // SAFETY: `start` begins a chunk inside the mapping; received descriptors name
            // distinct chunks the kernel has handed back to us, so no two views alias, and the
            // worker owning the UMEM does nothing else with them while `f` runs.
            let chunk = unsafe { std::slice::from_raw_parts_mut(start, size) };
            (chunk, head)
        });
        f(&mut it)
    }

    /// Queue frames of this port's UMEM for transmission (their chunks pass to the kernel
    /// until completion) and kick the kernel if it asks. `frames` holds whole frames (a frame
    /// of several buffers is its descriptors in order, each but the last marked
    /// [`Desc::more`]). Returns how many descriptors were queued, only ever whole frames; the
    /// rest go back to the free list (dropped).
    pub fn transmit(&mut self, frames: &[Desc]) -> usize {
        let mut idx = 0u32;
        let asked = frames.len().min(u32::MAX as usize) as u32;
        // Reserving is all or nothing: ask for what the ring has room for, and no part of a
        // frame that would not fit whole.
        // SAFETY: the TX ring is live.
        let room = unsafe { xdp::xsk_prod_nb_free(&mut *self.tx, asked) }.min(asked) as usize;
        let whole = frames[..room]
            .iter()
            .rposition(|d| !d.more)
            .map_or(0, |i| i + 1);
        let want = whole as u32;
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
                (*desc).options = if f.more { XDP_PKT_CONTD } else { 0 };
            }
        }
        // SAFETY: exactly `n` slots were reserved and written.
        unsafe { xdp::xsk_ring_prod__submit(&mut *self.tx, n) };
        self.umem
            .set_owner(frames[..n as usize].iter().map(|f| f.addr), self.id);
        for f in &frames[n as usize..] {
            self.umem.recycle(f.addr);
        }
        self.kick();
        n as usize
    }

    /// In copy mode the kernel sends only when kicked, and each kick sends at most its TX
    /// budget (32 frames, unless [`Port::open_shared`] could raise it to the ring's size):
    /// kick whenever the TX ring needs it, again while the kernel says it stopped at its budget
    /// (EAGAIN) and the last kick took descriptors off the ring (EAGAIN also means a full
    /// completion ring or a busy device, which another kick now would not change), at most
    /// once per budget's worth of the ring.
    fn kick(&mut self) {
        let ring = self.umem.ring_size;
        let mut free = u32::MAX;
        for _ in 0..=ring / KERNEL_TX_BATCH {
            // SAFETY: the TX ring is live.
            if unsafe { xdp::xsk_ring_prod__needs_wakeup(&*self.tx) } == 0 {
                return;
            }
            // SAFETY: the TX ring is live; asking for the whole ring reads the kernel's
            // consumer index afresh.
            let now = unsafe { xdp::xsk_prod_nb_free(&mut *self.tx, ring) };
            if now == free {
                return;
            }
            free = now;
            // SAFETY: a zero-length sendto on our own socket: the AF_XDP wakeup.
            let rc = unsafe {
                libc::sendto(
                    self.fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                return;
            }
        }
    }

    /// Take back chunks the kernel has finished sending.
    pub fn complete(&mut self) {
        let mut idx = 0u32;
        // SAFETY: the completion ring is live; peek writes only `idx`.
        let n = unsafe { xdp::xsk_ring_cons__peek(&mut *self.comp, u32::MAX, &mut idx) };
        let mut owner = self.umem.owner.borrow_mut();
        for i in 0..n {
            // SAFETY: slot `idx + i` was returned by peek.
            let slot = unsafe { xdp::xsk_ring_cons__comp_addr(&*self.comp, idx + i) };
            // SAFETY: `slot` points into the mapped completion ring.
            let addr = unsafe { *slot };
            owner[self.umem.chunk_index(addr)] = NO_PORT;
            self.umem.recycle(addr);
        }
        drop(owner);
        // SAFETY: releasing exactly the `n` slots peeked.
        unsafe { xdp::xsk_ring_cons__release(&mut *self.comp, n) };
        if n > 0 {
            self.kick();
        }
    }

    /// Return a frame's chunk to the free list.
    pub fn recycle(&mut self, addr: u64) {
        self.umem.recycle(addr);
    }

    /// A held frame's bytes (received and not yet sent or recycled).
    pub fn frame(&self, d: Desc) -> &[u8] {
        self.umem.frame(d)
    }

    /// Copy `data` into a free chunk of this port's UMEM (after `headroom` bytes) and return
    /// its descriptor, or `None` when every chunk is in use.
    pub fn alloc_copy(&mut self, data: &[u8], headroom: usize) -> Option<Desc> {
        if headroom + data.len() > self.umem.frame_size as usize {
            return None;
        }
        let base = self.umem.free.borrow_mut().pop()?;
        let addr = base + headroom as u64;
        // SAFETY: `addr` is inside the free chunk at `base`, in the mapping.
        let start = unsafe { self.umem.area.as_ptr().add(addr as usize) };
        // SAFETY: `base` is a free chunk of the mapping, so nothing else reads or writes it,
        // and `headroom + data.len()` fits in it (checked).
        let dst = unsafe { std::slice::from_raw_parts_mut(start, data.len()) };
        dst.copy_from_slice(data);
        Some(Desc::single(addr, data.len() as u32))
    }
}

/// How many chunks a port keeps in its fill ring, for the kernel to receive into: half the
/// UMEM shared among its `live` ports (the other half is for frames being processed, queued
/// to send, or waiting in RX rings), at most the ring and at least [`MIN_FILL`] (or the
/// ring, if smaller). A deep fill ring lets a burst wait for a descheduled worker instead of
/// being dropped, but a fill ring sized by the ring alone would let a few ports hold every
/// chunk and starve the others: at 2048 entries, eight ports.
pub fn fill_share(frames: u32, live: u32, ring: u32) -> u32 {
    (frames / 2 / live.max(1)).clamp(MIN_FILL.min(ring), ring)
}

/// The fewest chunks a port keeps in its fill ring however many ports share the UMEM.
const MIN_FILL: u32 = 64;

impl Drop for Port {
    fn drop(&mut self) {
        self.umem.live.set(self.umem.live.get().saturating_sub(1));
        if self.xsk.is_null() {
            return;
        }
        let on_umem_fd = self.fd() == self.umem.fd();
        // SAFETY: the socket is live and deleted once; the UMEM outlives it (our `Rc`).
        unsafe { xdp::xsk_socket__delete(self.xsk) };
        // Closing the socket released it: the kernel no longer reads its fill ring or sends
        // from its TX ring, so their chunks are free again. The UMEM's first socket is not
        // closed (libxdp keeps the UMEM's descriptor open): its chunks stay where they are.
        if !on_umem_fd {
            self.umem.reclaim(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_share_half_the_umem_in_their_fill_rings() {
        // Few ports: each fills its ring, and half the UMEM stays free for frames in flight.
        assert_eq!(fill_share(16384, 1, 2048), 2048);
        assert_eq!(fill_share(16384, 4, 2048), 2048);
        // A node with many pods: the chunks are spread, never all held by the first ports.
        assert_eq!(fill_share(16384, 8, 2048), 1024);
        assert_eq!(fill_share(16384, 110, 2048), 74);
        assert!(110 * fill_share(16384, 110, 2048) <= 16384 / 2);
        // Still enough to receive a burst, and never more than the ring.
        assert_eq!(fill_share(16384, 1000, 2048), MIN_FILL);
        assert_eq!(fill_share(16384, 1000, 32), 32);
        assert_eq!(fill_share(16384, 0, 512), 512);
    }
}
