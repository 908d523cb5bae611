//! AF_XDP sockets sharing one UMEM per worker, driven by libxdp's ring helpers.
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
//! A UMEM registers its area on a socket of its own, on which its first port is bound; that
//! socket stays open (and bound) until the UMEM is dropped, and later sockets share the UMEM
//! through it: give the first socket the most stable interface (the uplink).
//!
//! The sockets and their rings are set up here (socket options, `mmap` of each ring at the
//! offsets the kernel gives) and driven through libxdp's ring helpers (libxdp-sys), rather
//! than by a higher-level crate, for two reasons. The pipeline moves a frame's start inside its
//! chunk (VXLAN encapsulation prepends 50 bytes, decapsulation strips them): a transmit
//! descriptor carries whatever address and length the pipeline left, which xsk-rs's frame
//! descriptors cannot express. And a successor process takes a UMEM and its bound sockets over
//! ([`Umem::hand_over`], [`Umem::adopt`]): the area is a memory file it maps too, and it maps
//! each socket's rings again (which Linux allows for a bound socket since 6.4) and reads on
//! from the indexes left in them, which no library that creates its own sockets can do.
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::Ordering::Acquire;

use kxdp_dataplane::offload::{ChecksumRequest, FrameSink};
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
    /// Entries per ring of each port. The default, 4096, is measured: a pod's 64 KiB frame
    /// takes 18 RX descriptors, and with 1024 four iperf3 streams between two pods of a node
    /// overran the sender's RX ring (22,000 frames dropped in 10 s, as many retransmits);
    /// across nodes the segments of one 64 KiB frame arrive in one burst, and a fill ring of
    /// 1024 ran dry. At 4096 neither socket lost a frame in those TCP runs and TCP
    /// retransmitted nothing. A port's fill ring holds at most its [`fill_share`] of the
    /// UMEM's chunks (its RX ring may hold as many again while its worker is behind); each
    /// socket's four rings take 192 KiB of kernel memory. Whether the larger footprint costs
    /// packet rate (with 2048 entries, 1464-byte rates once fell 10 to 15% under a
    /// live-frames generator) cannot be measured where the kernel refuses live frames: the
    /// AF_XDP generator then limits every forwarder. Sockets taken over from a predecessor
    /// keep the rings they were made with.
    pub ring_size: u32,
    /// Register the UMEM with room for AF_XDP TX metadata ([`TX_METADATA_LEN`] bytes before
    /// each transmitted frame), so a frame can leave with its TCP or UDP checksum to be
    /// completed by the kernel or the device ([`Port::request_checksum`]). Kernels without it
    /// (before 6.11) refuse the registration; the UMEM is then made without.
    pub tx_metadata: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            frames: 16384,
            frame_size: 4096,
            headroom: 0,
            ring_size: 4096,
            tx_metadata: true,
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

/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, 6.17): how many frames one kick of a copy-mode
/// socket sends, instead of the kernel's [`KERNEL_TX_BATCH`].
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;

/// Frames a copy-mode socket sends per kick unless told otherwise (`TX_BATCH_SIZE`).
const KERNEL_TX_BATCH: u32 = 32;

/// `XDP_PKT_CONTD` (linux/if_xdp.h): the frame continues in the next descriptor.
const XDP_PKT_CONTD: u32 = 1;

/// Bytes of TX metadata before a transmitted frame: `struct xsk_tx_metadata` (linux/if_xdp.h,
/// 6.14 on: flags, then the checksum request's start and offset, then a launch time). The
/// kernel finds it at the descriptor's address less this, and reads only what the flags ask.
pub const TX_METADATA_LEN: u32 = 24;

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
    /// The [`TX_METADATA_LEN`] bytes before `addr` hold TX metadata for the frame (its first
    /// descriptor only): `XDP_TX_METADATA` ([`Port::request_checksum`]).
    pub metadata: bool,
}

impl Desc {
    /// A frame in one buffer.
    pub fn single(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            more: false,
            metadata: false,
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

/// A mapping of one of a socket's rings, unmapped when dropped.
#[derive(Debug)]
struct Mapping {
    base: NonNull<c_void>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly this mapping, which no ring struct refers to any more (they
        // are dropped with it, see `Rings`).
        let _ = unsafe { libc::munmap(self.base.as_ptr(), self.len) };
    }
}

/// The four rings of one AF_XDP socket, mapped, described for libxdp's ring helpers (boxed:
/// their addresses stay put).
#[derive(Debug)]
struct Rings {
    fill: Box<xdp::xsk_ring_prod>,
    comp: Box<xdp::xsk_ring_cons>,
    rx: Box<xdp::xsk_ring_cons>,
    tx: Box<xdp::xsk_ring_prod>,
    /// Declared last: dropped after the descriptions that point into them.
    _maps: [Mapping; 4],
}

/// The fields of a ring description, read from a mapping of it.
struct RingView {
    producer: *mut u32,
    consumer: *mut u32,
    ring: *mut c_void,
    flags: *mut u32,
    /// The kernel's indexes now.
    prod_now: u32,
    cons_now: u32,
}

/// Set option `opt` at `level` (`SOL_XDP` for AF_XDP's own) of socket `fd` to `value`; an
/// error names `what`.
pub(crate) fn setsockopt<T>(
    fd: i32,
    level: i32,
    opt: i32,
    value: &T,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size given; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast::<c_void>(),
            core::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(os_err(what, -e.raw_os_error().unwrap_or(libc::EIO)));
    }
    Ok(())
}

/// Read option `opt` of AF_XDP socket `fd` into a `T`; an error names `what`, and a reply
/// shorter than `T` is one (an older kernel's layout).
///
/// # Safety
/// `T` must be a plain C struct for which all-zero bytes are a valid value (the kernel's
/// `xdp_*` option structs).
unsafe fn getsockopt<T>(fd: i32, opt: i32, what: &str) -> io::Result<T> {
    let mut value = core::mem::MaybeUninit::<T>::zeroed();
    let mut len = core::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and describe each other; the kernel writes at most
    // `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            value.as_mut_ptr().cast::<c_void>(),
            &mut len,
        )
    };
    if rc != 0 || len as usize != core::mem::size_of::<T>() {
        let e = io::Error::last_os_error();
        return Err(os_err(what, -e.raw_os_error().unwrap_or(libc::EINVAL)));
    }
    // SAFETY: zeroed bytes are a valid `T` (the caller's promise), and the kernel filled it.
    Ok(unsafe { value.assume_init() })
}

impl Rings {
    /// Give socket `fd` (not bound yet) four rings of `size` entries each.
    fn create(fd: i32, size: u32) -> io::Result<Rings> {
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "sizing the fill ring"),
            (libc::XDP_UMEM_COMPLETION_RING, "sizing the completion ring"),
            (libc::XDP_RX_RING, "sizing the RX ring"),
            (libc::XDP_TX_RING, "sizing the TX ring"),
        ] {
            setsockopt(fd, libc::SOL_XDP, opt, &size, what)?;
        }
        Rings::map(fd, size)
    }

    /// Map socket `fd`'s four rings of `size` entries, which exist already, and describe them
    /// from the indexes the kernel and the socket's last user left: a socket handed over by
    /// another process is taken up where that process stopped (the kernel lets a bound
    /// socket's rings be mapped again since Linux 6.4).
    fn map(fd: i32, size: u32) -> io::Result<Rings> {
        // SAFETY: `xdp_mmap_offsets` is a plain C struct of integers.
        let off: libc::xdp_mmap_offsets = unsafe {
            getsockopt(
                fd,
                libc::XDP_MMAP_OFFSETS,
                "reading the ring offsets (a kernel with need_wakeup, 5.4 or later)",
            )
        }?;
        let desc = core::mem::size_of::<libc::xdp_desc>();
        let (fill, fill_map) = map_one(fd, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING, size, 8)?;
        let (comp, comp_map) = map_one(fd, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING, size, 8)?;
        let (rx, rx_map) = map_one(fd, &off.rx, libc::XDP_PGOFF_RX_RING as u64, size, desc)?;
        let (tx, tx_map) = map_one(fd, &off.tx, libc::XDP_PGOFF_TX_RING as u64, size, desc)?;
        // Producer rings keep their consumer index a ring ahead (as libxdp does), consumer
        // rings as it is. The two are distinct C types of one layout.
        macro_rules! describe {
            ($ty:ident, $v:expr, $ahead:expr) => {{
                let v: RingView = $v;
                Box::new(xdp::$ty {
                    cached_prod: v.prod_now,
                    cached_cons: v.cons_now.wrapping_add($ahead),
                    mask: size - 1,
                    size,
                    producer: v.producer,
                    consumer: v.consumer,
                    ring: v.ring,
                    flags: v.flags,
                })
            }};
        }
        let prod = |v: RingView| describe!(xsk_ring_prod, v, size);
        let cons = |v: RingView| describe!(xsk_ring_cons, v, 0);
        Ok(Rings {
            fill: prod(fill),
            comp: cons(comp),
            rx: cons(rx),
            tx: prod(tx),
            _maps: [fill_map, comp_map, rx_map, tx_map],
        })
    }
}

/// Map one ring of `fd` at page offset `pgoff`: `size` entries of `entry` bytes after the
/// header the offsets describe.
fn map_one(
    fd: i32,
    off: &libc::xdp_ring_offset,
    pgoff: u64,
    size: u32,
    entry: usize,
) -> io::Result<(RingView, Mapping)> {
    let len = off.desc as usize + size as usize * entry;
    // SAFETY: a new shared mapping of the socket's ring; it aliases no Rust memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(os_err(
            "mapping a ring",
            -e.raw_os_error().unwrap_or(libc::EINVAL),
        ));
    }
    let map = Mapping {
        base: NonNull::new(base).expect("mmap does not return null"),
        len,
    };
    let at = |o: u64| base.cast::<u8>().wrapping_add(o as usize);
    let (producer, consumer) = (
        at(off.producer).cast::<u32>(),
        at(off.consumer).cast::<u32>(),
    );
    let load = |p: *mut u32| {
        // SAFETY: `p` lies in the mapping (the kernel's offsets), an aligned u32 that the
        // kernel updates atomically; reading it atomically is how the rings are shared.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(p) }.load(Acquire)
    };
    let (prod_now, cons_now) = (load(producer), load(consumer));
    let view = RingView {
        producer,
        consumer,
        ring: at(off.desc).cast::<c_void>(),
        flags: at(off.flags).cast::<u32>(),
        prod_now,
        cons_now,
    };
    Ok((view, map))
}

/// A new AF_XDP socket.
fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(os_err(
            "creating an AF_XDP socket",
            -e.raw_os_error().unwrap_or(libc::EINVAL),
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A UMEM: the frame area and its free list, shared by a worker's ports.
///
/// The area is a memory file (`memfd`) mapped shared, so that another process can map the
/// same chunks: a successor takes over a UMEM, and the sockets on it, with the frames in
/// flight ([`Umem::hand_over`]).
#[derive(Debug)]
pub struct Umem {
    area: NonNull<u8>,
    area_len: usize,
    /// The memory file behind the area.
    memfd: OwnedFd,
    /// The UMEM's socket: the area is registered on it, and its first port is bound on it.
    socket: OwnedFd,
    frame_size: u32,
    headroom: u32,
    ring_size: u32,
    /// Bytes of TX metadata registered before each frame: [`TX_METADATA_LEN`], or 0 where
    /// the kernel refused it (or it was not asked for).
    tx_metadata_len: u32,
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
    /// The rings of the UMEM's socket, until its first port takes them.
    first_rings: RefCell<Option<Rings>>,
}

impl Umem {
    /// Map the frame area and register it with the kernel.
    pub fn new(config: PortConfig) -> io::Result<Rc<Umem>> {
        assert!(config.frame_size.is_power_of_two() && config.frames > 0);
        let area_len = config.frames as usize * config.frame_size as usize;
        // SAFETY: the name is NUL-terminated; memfd_create reads nothing else.
        let fd = unsafe { libc::memfd_create(c"kxdp-umem".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(memfd.try_clone()?).set_len(area_len as u64)?;
        let area = map_area(&memfd, area_len)?;
        let mut umem = Umem {
            area,
            area_len,
            memfd,
            socket: xdp_socket()?,
            frame_size: config.frame_size,
            headroom: config.headroom,
            ring_size: config.ring_size,
            tx_metadata_len: 0,
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
        let mut reg = libc::xdp_umem_reg {
            addr: umem.area.as_ptr() as u64,
            len: area_len as u64,
            chunk_size: config.frame_size,
            headroom: config.headroom,
            flags: 0,
            tx_metadata_len: 0,
        };
        let register = |reg: &libc::xdp_umem_reg| {
            setsockopt(
                umem.socket.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_UMEM_REG,
                reg,
                "registering the UMEM",
            )
        };
        // With TX metadata where asked and the kernel knows the flag (6.11 on; 6.8 to 6.10
        // read the length without it, and are left without metadata here): a refusal of the
        // flag leaves the socket unregistered, so the plain registration follows.
        let with_metadata = config.tx_metadata && {
            reg.flags = libc::XDP_UMEM_TX_METADATA_LEN;
            reg.tx_metadata_len = TX_METADATA_LEN;
            register(&reg).is_ok()
        };
        if with_metadata {
            umem.tx_metadata_len = TX_METADATA_LEN;
        } else {
            reg.flags = 0;
            reg.tx_metadata_len = 0;
            register(&reg)?;
        }
        let rings = Rings::create(umem.socket.as_raw_fd(), config.ring_size)?;
        umem.first_rings = RefCell::new(Some(rings));
        Ok(Rc::new(umem))
    }

    /// Bytes per chunk; chunks are aligned to it.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Whether frames sent from this UMEM may carry TX metadata ([`Port::set_checksum_request`]).
    pub fn tx_metadata(&self) -> bool {
        self.tx_metadata_len != 0
    }

    /// Bytes every transmitted buffer needs before it in its chunk: with TX metadata
    /// registered, the kernel takes the [`TX_METADATA_LEN`] bytes before any descriptor's
    /// address for its metadata, and refuses (drops, its chunk never completed) a descriptor
    /// with fewer, whether or not it asks for metadata.
    pub fn tx_headroom(&self) -> u32 {
        self.tx_metadata_len
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
        self.socket.as_raw_fd()
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
    /// for frames larger than a chunk. The headroom is at least what every transmitted frame
    /// needs before it ([`Umem::tx_headroom`]).
    pub fn new(
        umem: &'a Umem,
        headroom: u32,
        out: &'a mut Vec<Desc>,
        scratch: &'a mut [u8],
    ) -> Self {
        ChunkSink {
            umem,
            headroom: headroom.max(umem.tx_headroom()),
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
                        metadata: false,
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

/// How long after a handover the predecessor may still hold copies of the sockets.
const PREDECESSOR_CLOSES: std::time::Duration = std::time::Duration::from_secs(1);

/// No port: the chunk is on the free list or in the worker's hands.
const NO_PORT: u32 = 0;

impl Drop for Umem {
    fn drop(&mut self) {
        // Every port holds an `Rc` to this UMEM, so none is left: the socket (closed with the
        // fields) is the last that uses the area.
        // SAFETY: unmaps exactly our area, which nothing in this process references any more.
        let _ = unsafe { libc::munmap(self.area.as_ptr().cast::<c_void>(), self.area_len) };
    }
}

/// An AF_XDP socket with its rings, on a shared [`Umem`].
#[derive(Debug)]
pub struct Port {
    umem: Rc<Umem>,
    /// The socket, unless the port is bound on the UMEM's own (which the UMEM keeps).
    own: Option<OwnedFd>,
    fill: Box<xdp::xsk_ring_prod>,
    comp: Box<xdp::xsk_ring_cons>,
    rx: Box<xdp::xsk_ring_cons>,
    tx: Box<xdp::xsk_ring_prod>,
    /// The rings' mappings, unmapped after the descriptions above are gone.
    _maps: [Mapping; 4],
    /// This port's number in its UMEM's ownership records.
    id: u32,
    /// Where it is bound: interface index and queue.
    ifindex: u32,
    queue: u32,
    /// When it was taken over from a predecessor, if it was.
    adopted: Option<std::time::Instant>,
    /// The kernel's loss counts when last read ([`Port::new_losses`]).
    losses: Cell<Losses>,
}

/// Frames the kernel lost on their way into a socket, as it counts them (`XDP_STATISTICS`):
/// since the socket was opened, or, as [`Port::new_losses`] gives them, since the last read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// The socket's RX ring had no room: its worker did not keep up.
    pub ring_full: u64,
    /// No chunk to receive into (the fill ring empty), or a frame the socket cannot take.
    pub no_chunk: u64,
}

impl Losses {
    /// What the kernel has counted on socket `fd`; `None` if it does not say (not an AF_XDP
    /// socket, or a kernel older than 5.9, which lacks the ring-full count).
    fn read(fd: i32) -> Option<Losses> {
        // SAFETY: `xdp_statistics` is a plain C struct of integers.
        let st: libc::xdp_statistics =
            unsafe { getsockopt(fd, libc::XDP_STATISTICS, "reading the statistics") }.ok()?;
        Some(Losses {
            ring_full: st.rx_ring_full,
            no_chunk: st.rx_dropped,
        })
    }
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
        let what = format!("binding AF_XDP to {ifname} queue {queue}");
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: `name` is NUL-terminated; if_nametoindex reads nothing else.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(os_err(&what, -libc::ENODEV));
        }
        // The UMEM's first port is bound on the UMEM's socket, with the rings made with it;
        // the others get a socket and rings of their own and share the UMEM through it.
        let first = umem.first_rings.borrow_mut().take();
        let (own, rings) = match first {
            Some(rings) => (None, rings),
            None => {
                let socket = xdp_socket()?;
                let rings = Rings::create(socket.as_raw_fd(), umem.ring_size)?;
                (Some(socket), rings)
            }
        };
        let fd = own.as_ref().unwrap_or(&umem.socket).as_raw_fd();
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            // Only the UMEM's first socket binds with flags; the kernel refuses them on a
            // socket that shares a UMEM, which takes copy mode, need_wakeup and SG from the
            // first.
            sxdp_flags: match own {
                None => libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP | libc::XDP_USE_SG,
                Some(_) => libc::XDP_SHARED_UMEM,
            },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: match own {
                None => 0,
                Some(_) => umem.socket.as_raw_fd() as u32,
            },
        };
        // SAFETY: `addr` is a live sockaddr_xdp of the size given; the kernel only reads it.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_xdp).cast::<libc::sockaddr>(),
                core::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            // The UMEM's socket stays unbound: its rings wait for the next try.
            if own.is_none() {
                *umem.first_rings.borrow_mut() = Some(rings);
            }
            return Err(os_err(&what, -errno));
        }
        let port = Port::on(umem, own, rings, ifindex, queue);
        // One kick sends the whole ring where the kernel lets us say so; older kernels refuse
        // the option and `kick` kicks again instead.
        let budget: u32 = umem.ring_size;
        let _ = setsockopt(
            port.fd(),
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            &budget,
            "the TX budget",
        );
        Ok(port)
    }

    /// A port on `umem` with `rings`, numbered next.
    fn on(umem: &Rc<Umem>, own: Option<OwnedFd>, rings: Rings, ifindex: u32, queue: u32) -> Port {
        // Numbers wrap before `UNKNOWN_PORT`; 0 is nobody.
        let id = match umem.ports.get() {
            n if n >= UNKNOWN_PORT - 1 => 1,
            n => n + 1,
        };
        umem.ports.set(id);
        umem.live.set(umem.live.get() + 1);
        let Rings {
            fill,
            comp,
            rx,
            tx,
            _maps,
        } = rings;
        Port {
            umem: Rc::clone(umem),
            own,
            fill,
            comp,
            rx,
            tx,
            _maps,
            id,
            ifindex,
            queue,
            adopted: None,
            losses: Cell::new(Losses::default()),
        }
        .counting_from_now()
    }

    /// Count losses from the kernel's present counts: a socket taken over keeps the counts of
    /// its life before, which its predecessor reported.
    fn counting_from_now(self) -> Port {
        self.losses.set(Losses::read(self.fd()).unwrap_or_default());
        self
    }

    /// The frames the kernel lost on their way into this socket since the last call (one
    /// `getsockopt`; call it rarely, as the worker's census does once a second).
    pub fn new_losses(&self) -> Losses {
        let Some(now) = Losses::read(self.fd()) else {
            return Losses::default();
        };
        let before = self.losses.replace(now);
        Losses {
            ring_full: now.ring_full.saturating_sub(before.ring_full),
            no_chunk: now.no_chunk.saturating_sub(before.no_chunk),
        }
    }

    /// Where the port is bound: its interface's index and the queue.
    pub fn bound_to(&self) -> (u32, u32) {
        (self.ifindex, self.queue)
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
        self.own.as_ref().unwrap_or(&self.umem.socket).as_raw_fd()
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
                metadata: false,
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
                (*desc).options = if f.more { XDP_PKT_CONTD } else { 0 }
                    | if f.metadata { libc::XDP_TX_METADATA } else { 0 };
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

    /// Whether frames this port sends may carry TX metadata ([`Port::set_checksum_request`]).
    pub fn tx_metadata(&self) -> bool {
        self.umem.tx_metadata()
    }

    /// Ask, in TX metadata before the held frame whose first descriptor is `d`, that the frame
    /// leave with its L4 checksum completed downstream (`XDP_TXMD_FLAGS_CHECKSUM`): the kernel
    /// makes it a `CHECKSUM_PARTIAL` skb, which the device (or the kernel, where the device
    /// cannot) completes, or a receiving stack on this host takes as it is, as it takes such
    /// a packet from a veth. The field must hold the pseudo-header sum
    /// (`offload::partial::prepare`). Marks `d` ([`Desc::metadata`]); false, and nothing
    /// written, where the chunk has no [`TX_METADATA_LEN`] bytes before the frame. Only for a
    /// port that [has](Port::tx_metadata) metadata, or a frame copied to one
    /// ([`Port::copy_metadata`]).
    pub fn set_checksum_request(&mut self, d: &mut Desc, req: ChecksumRequest) -> bool {
        let mut meta = [0u8; TX_METADATA_LEN as usize];
        meta[..8].copy_from_slice(&u64::from(libc::XDP_TXMD_FLAGS_CHECKSUM).to_ne_bytes());
        meta[8..10].copy_from_slice(&req.start.to_ne_bytes());
        meta[10..12].copy_from_slice(&req.offset.to_ne_bytes());
        self.put_metadata(d, &meta)
    }

    /// Copy the TX metadata of `src`, a held frame of `from`, before `d`, a frame of this
    /// port's UMEM made from it ([`Port::alloc_copy`]); as [`Port::set_checksum_request`].
    pub fn copy_metadata(&mut self, d: &mut Desc, from: &Port, src: Desc) -> bool {
        let len = TX_METADATA_LEN as u64;
        if src.addr - from.umem.chunk_base(src.addr) < len {
            return false;
        }
        let mut meta = [0u8; TX_METADATA_LEN as usize];
        meta.copy_from_slice(
            from.umem
                .frame(Desc::single(src.addr - len, TX_METADATA_LEN)),
        );
        self.put_metadata(d, &meta)
    }

    fn put_metadata(&mut self, d: &mut Desc, meta: &[u8; TX_METADATA_LEN as usize]) -> bool {
        let len = TX_METADATA_LEN as u64;
        if d.addr - self.umem.chunk_base(d.addr) < len {
            return false;
        }
        self.write(d.addr - len, meta);
        d.metadata = true;
        true
    }

    /// Write `bytes` at `addr`, inside one chunk of this port's UMEM that the caller holds.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let end = addr as usize + bytes.len();
        let base = self.umem.chunk_base(addr) as usize;
        assert!(
            end <= self.umem.area_len && end <= base + self.umem.frame_size as usize,
            "write outside its chunk"
        );
        // SAFETY: `addr` is inside the mapping (asserted).
        let dst = unsafe { self.umem.area.as_ptr().add(addr as usize) };
        // SAFETY: the range lies inside one chunk of the mapping (asserted), which the caller
        // holds, so the kernel does not touch it and no view of it is alive (views are handed
        // out only through `&mut` of a port or sink, and this takes `&mut self`).
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }

    /// Copy `data` into a free chunk of this port's UMEM (after `headroom` bytes, at least
    /// [`Umem::tx_headroom`]) and return its descriptor, or `None` when every chunk is in use.
    pub fn alloc_copy(&mut self, data: &[u8], headroom: usize) -> Option<Desc> {
        let headroom = headroom.max(self.umem.tx_headroom() as usize);
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
        // Closing the socket releases it: the kernel no longer reads its fill ring or sends
        // from its TX ring, so their chunks are free again. The UMEM's socket is not closed
        // (the UMEM keeps it): its chunks stay where they are.
        if let Some(socket) = self.own.take() {
            drop(socket);
            // A socket taken over a moment ago may still be open in the predecessor, which
            // closes its copies as it ends: until then the kernel may fill its chunks, which
            // stay counted as the kernel's (lost to the UMEM) rather than be reused.
            if self
                .adopted
                .is_none_or(|at| at.elapsed() > PREDECESSOR_CLOSES)
            {
                self.umem.reclaim(self.id);
            }
        }
    }
}

/// Map `len` bytes of memory file `memfd`, shared, for a UMEM's area.
fn map_area(memfd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a new shared mapping of our memory file; it aliases no Rust memory.
    let area = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if area == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // Huge pages where the kernel gives them to shared memory (`shmem_enabled` advise or
    // always): fewer TLB misses over the area. Without them, 4 KiB pages, as before.
    // SAFETY: advice about our own mapping; it changes no contents.
    let _ = unsafe { libc::madvise(area, len, libc::MADV_HUGEPAGE) };
    Ok(NonNull::new(area.cast::<u8>()).expect("mmap does not return null"))
}

/// A UMEM and its ports as a process hands them to its successor ([`Umem::hand_over`],
/// [`Umem::adopt`]): descriptors to pass (`SCM_RIGHTS`), the geometry, and where each chunk
/// is. The predecessor stops using them once handed; the successor goes on where it stopped.
#[derive(Debug)]
pub struct HandedUmem {
    /// The memory file of the area.
    pub memfd: OwnedFd,
    /// The UMEM's socket.
    pub socket: OwnedFd,
    /// Chunks, bytes per chunk, headroom and ring entries ([`PortConfig`]).
    pub frames: u32,
    /// Bytes per chunk.
    pub frame_size: u32,
    /// Headroom before received frames.
    pub headroom: u32,
    /// Entries per ring.
    pub ring_size: u32,
    /// Bytes of TX metadata the UMEM was registered with.
    pub tx_metadata_len: u32,
    /// Whether the UMEM's socket is still unbound (no port has taken its rings).
    pub unbound: bool,
    /// By chunk: 0 if free, [`HANDED_UNKNOWN`] if in the rings of a socket not handed over
    /// (never to be used again), else 1 + the index in `ports` of the port whose rings hold it.
    pub owner: Vec<u16>,
    /// The ports on the UMEM.
    pub ports: Vec<HandedPort>,
}

/// In [`HandedUmem::owner`]: a chunk in the rings of a socket that was not handed over.
pub const HANDED_UNKNOWN: u16 = u16::MAX;

/// Who holds the chunks of [`HANDED_UNKNOWN`] in an adopted UMEM: no port's number (they wrap
/// before reaching it).
const UNKNOWN_PORT: u32 = u32::MAX;

/// A bound socket handed over with its UMEM.
#[derive(Debug)]
pub struct HandedPort {
    /// Its descriptor; none for the port bound on the UMEM's own socket.
    pub fd: Option<OwnedFd>,
    /// The interface it is bound to, by index.
    pub ifindex: u32,
    /// The queue.
    pub queue: u32,
}

impl Umem {
    /// Describe this UMEM and `ports`, all those on it, for a successor ([`Umem::adopt`]).
    /// Call it between batches, when the worker holds no chunk (one held then is one lost,
    /// and goes over as free). The descriptors are duplicates: this process may close its own.
    pub fn hand_over<'a>(&self, ports: impl Iterator<Item = &'a Port>) -> io::Result<HandedUmem> {
        let mut index = std::collections::HashMap::new();
        let mut handed = Vec::new();
        for p in ports.filter(|p| ptr::eq(&*p.umem, self)) {
            let fd = p.own.as_ref().map(OwnedFd::try_clone).transpose()?;
            handed.push(HandedPort {
                fd,
                ifindex: p.ifindex,
                queue: p.queue,
            });
            let n = u16::try_from(handed.len())
                .map_err(|_| io::Error::other("too many ports on one UMEM"))?;
            index.insert(p.id, n);
        }
        let owner = self.owner.borrow();
        Ok(HandedUmem {
            memfd: self.memfd.try_clone()?,
            socket: self.socket.try_clone()?,
            frames: self.frames,
            frame_size: self.frame_size,
            headroom: self.headroom,
            ring_size: self.ring_size,
            tx_metadata_len: self.tx_metadata_len,
            unbound: self.first_rings.borrow().is_some(),
            // A chunk in the rings of a port not handed (the UMEM's socket, still bound after
            // its port was dropped) may still be filled by the kernel: never free.
            owner: owner
                .iter()
                .map(|o| match (*o, index.get(o)) {
                    (NO_PORT, _) => 0,
                    (_, Some(i)) => *i,
                    (_, None) => HANDED_UNKNOWN,
                })
                .collect(),
            ports: handed,
        })
    }

    /// Take over a UMEM a predecessor handed over, and its ports in the order handed, each
    /// with its rings as the predecessor left them. Refuses a description that does not hold
    /// together (an area smaller than its chunks, a chunk owned by no port handed).
    pub fn adopt(h: HandedUmem) -> io::Result<(Rc<Umem>, Vec<Port>)> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let ports = h.ports.len();
        if !h.frame_size.is_power_of_two()
            || h.frames == 0
            || !h.ring_size.is_power_of_two()
            || h.owner.len() != h.frames as usize
            || !matches!(h.tx_metadata_len, 0 | TX_METADATA_LEN)
        {
            return Err(bad("a UMEM's geometry does not hold together"));
        }
        if ports >= usize::from(HANDED_UNKNOWN)
            || h.owner
                .iter()
                .any(|o| *o != HANDED_UNKNOWN && usize::from(*o) > ports)
        {
            return Err(bad("a chunk is held by a port not handed over"));
        }
        let on_socket = h.ports.iter().filter(|p| p.fd.is_none()).count();
        if on_socket > usize::from(!h.unbound) {
            return Err(bad(
                "the UMEM's socket is unbound, or bound for more than one port",
            ));
        }
        let area_len = h.frames as usize * h.frame_size as usize;
        let file = std::fs::File::from(h.memfd.try_clone()?);
        if (file.metadata()?.len() as usize) < area_len {
            return Err(bad("a UMEM's memory file is smaller than its chunks"));
        }
        let area = map_area(&h.memfd, area_len)?;
        let first_rings = match h.unbound {
            true => Some(Rings::map(h.socket.as_raw_fd(), h.ring_size)?),
            false => None,
        };
        let umem = Rc::new(Umem {
            area,
            area_len,
            memfd: h.memfd,
            socket: h.socket,
            frame_size: h.frame_size,
            headroom: h.headroom,
            ring_size: h.ring_size,
            tx_metadata_len: h.tx_metadata_len,
            free: RefCell::new(
                (0..h.frames)
                    .filter(|i| h.owner[*i as usize] == 0)
                    .map(|i| u64::from(i) * u64::from(h.frame_size))
                    .collect(),
            ),
            // Ports are numbered in the order handed, from 1 (see `Port::on`).
            owner: RefCell::new(
                h.owner
                    .iter()
                    .map(|o| match *o {
                        HANDED_UNKNOWN => UNKNOWN_PORT,
                        o => u32::from(o),
                    })
                    .collect(),
            ),
            ports: Cell::new(NO_PORT),
            live: Cell::new(0),
            frames: h.frames,
            first_rings: RefCell::new(first_rings),
        });
        let mut adopted = Vec::with_capacity(ports);
        for p in h.ports {
            let fd = p.fd.as_ref().unwrap_or(&umem.socket).as_raw_fd();
            let rings = Rings::map(fd, umem.ring_size)?;
            let mut port = Port::on(&umem, p.fd, rings, p.ifindex, p.queue);
            port.adopted = Some(std::time::Instant::now());
            adopted.push(port);
        }
        Ok((umem, adopted))
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
