//! A worker: AF_XDP ports in, the pipeline, AF_XDP ports out.
//!
//! One worker owns a set of [`Port`]s, one per managed interface it serves. Each round it waits
//! for received frames (see [`Mode`]: sleep in `poll`, spin, or spin for a while after traffic
//! and then sleep), and for every port with frames runs one batch through its [`BatchFn`]
//! (kxdp's pipeline, [`process_batch`], unless the caller gave another) and sends each frame
//! where its verdict says: back out the same port, out
//! another port (moving the descriptor when the ports share a UMEM, as a worker's ports do;
//! copying the bytes otherwise), to the host port if there is one, or back to the free list.
//! Transmits are gathered per port and sent once per batch.
//!
//! Nothing here allocates per packet or per batch: batches live in fixed-size arrays.

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arrayvec::ArrayVec;
use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::offload::{
    self, ChecksumRequest, Coalescer, Encap, Fragmented, GroLimits, GsoBuf, OffloadError, Segments,
    Tail,
};
use kxdp_dataplane::pipeline::CHUNK as BATCH;
use kxdp_dataplane::tables::{InterfaceId, InterfaceRole};
use kxdp_dataplane::Split;
use kxdp_dataplane::{
    process_batch, Counters, DropReason, Frame, Instant, Packet, Snapshot, Verdict,
};

use crate::gso::GsoSocket;
use crate::xsk::{ChunkSink, Chunks, Desc, Port, Umem, MAX_FRAME_DESCS};

/// How a worker waits for frames.
///
/// A spinning worker that finds its rings empty yields the core (`sched_yield`) before it
/// looks again, so a client or server sharing the core runs at once instead of waiting for the
/// scheduler to preempt the worker. With traffic flowing the rings are never empty and it never
/// yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sleep in `poll` up to this many milliseconds when idle: the least CPU, but every frame
    /// that finds the worker asleep waits for it to be woken.
    Wakeup {
        /// The longest sleep.
        timeout_ms: i32,
    },
    /// Never sleep: check the rings in a loop, yielding the core when they are empty (a core
    /// of its own per worker in production; benchmarks).
    BusyPoll,
    /// Spin as in busy-poll mode for `spin_us` after the last round that found frames, then
    /// sleep as in wakeup mode. The answer to a request that comes back within the spin finds
    /// the worker awake, which halves the wakeups of a round trip; an idle worker costs nothing.
    Adaptive {
        /// How long to keep spinning after the last frame, in microseconds.
        spin_us: u32,
        /// The longest sleep.
        timeout_ms: i32,
    },
}

/// What a worker does with each batch it receives: set every packet's verdict (and rewrite its
/// frame in place), as [`process_batch`], the default, does. Another function (the perf
/// harness's bare forwarder) runs on the same sockets and the same I/O path. The worker calls
/// it once per batch, never per packet, so the indirect call costs nothing per frame.
pub type BatchFn = fn(&mut [Packet<'_>], &Snapshot, &Conntrack, &Counters, Instant);

/// Interfaces whose frames are counted one by one (by [`InterfaceId`] number).
pub const COUNTED_INTERFACES: usize = 1024;

/// Batch-size buckets: 1, 2–3, 4–7, 8–15, 16–31, 32–63, 64 frames.
pub const BATCH_BUCKETS: usize = 7;

/// The sizes each batch-size bucket counts, `(min, max)` inclusive: powers of two, the last
/// holding only a full batch. The admin API's views and metrics (whose last finite `le` is the
/// last `max`) take the bounds from here, so they cannot drift from the worker's counting.
pub const BATCH_BUCKET_BOUNDS: [(u64, u64); BATCH_BUCKETS] = {
    let mut bounds = [(0, 0); BATCH_BUCKETS];
    let mut b = 0;
    while b < BATCH_BUCKETS {
        let min = 1u64 << b;
        bounds[b] = (
            min,
            if b + 1 == BATCH_BUCKETS {
                min
            } else {
                2 * min - 1
            },
        );
        b += 1;
    }
    bounds
};

// The last bucket is exactly a full batch: a larger batch would go uncounted by its size.
const _: () = assert!(BATCH_BUCKET_BOUNDS[BATCH_BUCKETS - 1].1 == BATCH as u64);

kxdp_dataplane::counter_list! {
    /// What a worker counts of its own I/O, beside the pipeline's [`Counters`].
    pub enum IoCounter {
        Polls = 0 => ("polls", "worker rounds (one wait for frames, then a batch per port that has some)"),
        EmptyPolls = 1 => ("empty_polls", "worker rounds that found no frame on any port"),
        Rx = 2 => ("rx_frames", "frames received"),
        Tx = 3 => ("tx_frames", "frames queued for transmission"),
        TxRingFull = 4 => ("tx_ring_full", "frames dropped because a TX ring was full"),
        Copied = 5 => ("copied_frames", "frames copied between ports on different UMEMs (zero when a worker's ports share one)"),
        Cut = 6 => ("cut_frames", "frames larger than the link they left on, segmented (TCP) or fragmented by the worker"),
        Merged = 7 => ("merged_frames", "TCP segments merged into a larger frame toward a pod (GRO), counted once per segment merged"),
        RxRingFull = 8 => ("rx_ring_full", "frames the kernel dropped because a socket's RX ring was full (the worker fell behind; read from the sockets once a second)"),
        RxNoChunk = 9 => ("rx_no_chunk", "frames the kernel dropped for want of a free chunk in a socket's fill ring (read from the sockets once a second)"),
        GsoPackets = 10 => ("gso_packets", "UDP GSO packets sent to the kernel, each carrying a cut frame's VXLAN datagrams (counted in tx_frames one per datagram)"),
        GsoFailed = 11 => ("gso_failed", "UDP GSO packets not sent: the kernel refused them, or one before them in their batch as a kind it never takes (their datagrams are lost; the port's cut frames then leave through AF_XDP)"),
        ChecksumsHandedOn = 12 => ("checksums_handed_on", "TCP and UDP frames from pods and the node whose checksum left partial, for the kernel or the device to complete (AF_XDP TX metadata)"),
        ChecksumsCompleted = 13 => ("checksums_completed", "TCP and UDP frames from pods and the node whose checksum the worker completed, their destination taking no TX metadata"),
    }
}

/// A worker's I/O counters: written by the worker alone (relaxed load and store), readable
/// from any thread.
#[derive(Debug)]
#[repr(align(64))]
pub struct IoCounters {
    /// By [`IoCounter`] number.
    counts: [AtomicU64; IoCounter::COUNT],
    /// Batches received, by size (see [`BATCH_BUCKETS`]).
    batch_sizes: [AtomicU64; BATCH_BUCKETS],
    /// Frames received per interface number (the first [`COUNTED_INTERFACES`]).
    iface_rx: Box<[AtomicU64]>,
    /// Frames queued for transmission per interface number.
    iface_tx: Box<[AtomicU64]>,
    /// The worker's UMEM chunks at its last census ([`Worker::census`]): total, free, the
    /// kernel's.
    chunks: [AtomicU64; 3],
}

impl Default for IoCounters {
    fn default() -> Self {
        let zeros = || (0..COUNTED_INTERFACES).map(|_| AtomicU64::new(0)).collect();
        IoCounters {
            counts: Default::default(),
            batch_sizes: Default::default(),
            iface_rx: zeros(),
            iface_tx: zeros(),
            chunks: Default::default(),
        }
    }
}

/// A plain copy of [`IoCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoValues {
    /// By [`IoCounter`] number.
    pub counts: [u64; IoCounter::COUNT],
    /// Batches received, by size (see [`BATCH_BUCKETS`]).
    pub batch_sizes: [u64; BATCH_BUCKETS],
}

impl IoValues {
    /// The value of one counter.
    pub fn get(&self, c: IoCounter) -> u64 {
        self.counts[usize::from(c.number())]
    }

    /// The sum of `self` and `other`, counter by counter.
    pub fn plus(mut self, other: &IoValues) -> IoValues {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for (a, b) in self.batch_sizes.iter_mut().zip(other.batch_sizes) {
            *a += b;
        }
        self
    }
}

impl IoCounters {
    #[inline]
    fn add(c: &AtomicU64, n: u64) {
        // One writer: a relaxed load and store, no locked instruction.
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Count `n` of `c`. Only the owning worker may call this.
    #[inline]
    fn count(&self, c: IoCounter, n: u64) {
        IoCounters::add(&self.counts[usize::from(c.number())], n);
    }

    /// Read every counter.
    pub fn read(&self) -> IoValues {
        IoValues {
            counts: self.counts.each_ref().map(|c| c.load(Relaxed)),
            batch_sizes: self.batch_sizes.each_ref().map(|c| c.load(Relaxed)),
        }
    }

    /// Where the worker's UMEM chunks were at its last census (all zero before the first).
    pub fn chunks(&self) -> Chunks {
        let [total, free, kernel] = self.chunks.each_ref().map(|c| c.load(Relaxed));
        Chunks {
            total,
            free,
            kernel,
        }
    }

    /// Frames received and queued for transmission on interface `id` (zero beyond
    /// [`COUNTED_INTERFACES`]).
    pub fn interface(&self, id: InterfaceId) -> (u64, u64) {
        let i = usize::from(id.0);
        let read = |c: &[AtomicU64]| c.get(i).map_or(0, |c| c.load(Relaxed));
        (read(&self.iface_rx), read(&self.iface_tx))
    }

    #[inline]
    fn add_at(c: &[AtomicU64], id: InterfaceId, n: u64) {
        if let Some(c) = c.get(usize::from(id.0)) {
            IoCounters::add(c, n);
        }
    }
}

/// The batch-size bucket of a batch of `n` (at least 1) frames.
#[inline]
fn batch_bucket(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()).min(BATCH_BUCKETS as u32 - 1) as usize
}

/// Headroom left before frames copied into another port's UMEM.
const COPY_HEADROOM: usize = 256;

/// One worker's ports and counters.
#[derive(Debug)]
pub struct Worker {
    ports: Vec<(InterfaceId, Port)>,
    /// Port index + 1 by interface number (0: not served here), so a verdict finds its port
    /// by indexing; rebuilt when ports come and go.
    port_of: Vec<u16>,
    /// What `wait` polls: the waker, if any, then every port. Rebuilt when ports come and go,
    /// so a round allocates nothing.
    pollfds: Vec<libc::pollfd>,
    counters: Arc<Counters>,
    io: Arc<IoCounters>,
    forwarding: BatchFn,
    /// When the worker's rounds started finding nothing; `None` while frames keep coming.
    /// Read at the turn from busy to idle only, so a busy worker never reads the clock for it.
    idle_since: Option<std::time::Instant>,
    /// Readable when whoever drives the worker has a command for it: a sleeping worker wakes
    /// for it at once instead of at its poll timeout.
    waker: Option<std::os::unix::net::UnixDatagram>,
    /// Merges each batch's TCP segments toward a pod (GRO).
    gro: Box<Coalescer<BATCH>>,
    /// Descriptors of the frames the worker made in this batch: merged runs' chains and the
    /// pieces large frames were cut into. Its capacity is fixed at creation.
    built: Vec<Desc>,
    /// Descriptors gathered for one transmit. Its capacity is fixed at creation.
    tx: Vec<Desc>,
    /// Where a cut frame larger than a chunk is written before it is spread over chunks.
    scratch: Box<[u8]>,
    /// The batch's frames cut for the tunnel, as UDP GSO packets.
    gso: Box<GsoBuf>,
    /// The packet socket for those of each interface that has been sent some, by ifindex:
    /// kept while a port is bound to the interface, so a refusal outlives pods coming and
    /// going.
    gso_sockets: Vec<(u32, GsoState)>,
    /// Whether frames cut for the tunnel may leave as UDP GSO packets at all.
    tunnel_gso: bool,
}

/// Whether a port sends cut frames as UDP GSO packets.
#[derive(Debug)]
enum GsoState {
    Open(GsoSocket),
    /// The socket would not open (no `CAP_NET_RAW`), or the kernel refused a packet as one
    /// it will never take: AF_XDP it is.
    Off,
}

/// How many descriptors of frames it made (merged, or cut) a worker holds per batch: a batch
/// of 64 KiB frames cut for a 576-byte MTU, and then some.
const BUILT_DESCS: usize = 4096;

/// Where a frame of a batch goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Back out the port it came in on.
    Same,
    /// Out port `usize` (index).
    Other(usize),
    /// Back to the free list.
    Recycle,
}

/// A frame of a batch on its way out: where to, and its descriptors, `[start..start + count]`
/// of the batch's received ones, or of those the worker built (`built`).
#[derive(Clone, Copy)]
struct Out {
    dest: Dest,
    start: u16,
    count: u16,
    built: bool,
    /// `start..start + count` are packets of the worker's [`GsoBuf`], not descriptors.
    gso: bool,
    /// The frame's TCP or UDP checksum is left to the way out, readied (`offload::partial`).
    csum: Option<ChecksumRequest>,
}

/// What became of a frame of the batch once merged runs are known.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It leaves as the pipeline left it.
    Alone,
    /// It heads a merged run whose chain is `built[start..start + count]`.
    Heads(u16, u16),
    /// Its payload travels in another frame's chain: it has no output of its own.
    Merged,
}

/// Descriptors one receive may take: a batch's worth, and the rest of a frame that starts in it.
const RX_DESCS: usize = BATCH + MAX_FRAME_DESCS - 1;

/// UDP GSO packets a worker holds per batch: two for each frame (a 64 KiB frame at a 1500
/// underlay is two; a frame needing more, at a smaller MTU, may find the buffer full and is
/// then cut into AF_XDP frames).
const GSO_PACKETS: usize = 2 * BATCH;

/// Bytes of UDP GSO packets a worker holds per batch: a batch's received bytes in chunks of
/// at most a page (4 KiB, as [`crate::xsk::PortConfig`] allows), twice over (each datagram
/// repeats the inner headers).
const GSO_BYTES: usize = 2 * RX_DESCS * 4096;

impl Worker {
    /// A worker serving `ports`, counting into `counters`.
    pub fn new(ports: Vec<(InterfaceId, Port)>, counters: Arc<Counters>) -> Self {
        let mut w = Worker {
            ports,
            port_of: Vec::new(),
            pollfds: Vec::new(),
            counters,
            io: Arc::new(IoCounters::default()),
            forwarding: process_batch,
            idle_since: None,
            waker: None,
            gro: Box::new(Coalescer::new()),
            built: Vec::with_capacity(BUILT_DESCS),
            tx: Vec::with_capacity(BUILT_DESCS + RX_DESCS),
            scratch: vec![0; 1 << 16].into_boxed_slice(),
            gso: Box::new(GsoBuf::new(GSO_BYTES, GSO_PACKETS)),
            gso_sockets: Vec::new(),
            tunnel_gso: true,
        };
        w.ports_changed();
        w
    }

    /// Rebuild what is derived from the ports: the lookup by interface number and the poll set.
    fn ports_changed(&mut self) {
        use std::os::fd::AsRawFd;
        self.port_of.clear();
        for (j, (id, _)) in self.ports.iter().enumerate() {
            let at = usize::from(id.0);
            if self.port_of.len() <= at {
                self.port_of.resize(at + 1, 0);
            }
            self.port_of[at] = u16::try_from(j + 1).expect("fewer ports than u16::MAX");
        }
        let fds = self.waker.iter().map(|w| w.as_raw_fd());
        let fds = fds.chain(self.ports.iter().map(|(_, p)| p.fd()));
        self.pollfds.clear();
        self.pollfds.extend(fds.map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        let ports = &self.ports;
        self.gso_sockets
            .retain(|(ix, _)| ports.iter().any(|(_, p)| p.bound_to().0 == *ix));
    }

    /// Where port `j`'s interface is in `gso_sockets`, once a GSO packet was made for it.
    fn gso_entry(&self, j: usize) -> Option<usize> {
        let ifindex = self.ports[j].1.bound_to().0;
        self.gso_sockets.iter().position(|(ix, _)| *ix == ifindex)
    }

    /// The packet socket for UDP GSO packets out of port `j`'s interface, opened at first
    /// use; `None` where GSO is off (the worker then cuts into AF_XDP frames, as without it).
    fn gso_socket(&mut self, j: usize) -> Option<&GsoSocket> {
        if !self.tunnel_gso {
            return None;
        }
        let at = match self.gso_entry(j) {
            Some(at) => at,
            None => {
                let ifindex = self.ports[j].1.bound_to().0;
                let state = match GsoSocket::open(ifindex) {
                    Ok(s) => GsoState::Open(s),
                    Err(_) => GsoState::Off,
                };
                self.gso_sockets.push((ifindex, state));
                self.gso_sockets.len() - 1
            }
        };
        match &self.gso_sockets[at].1 {
            GsoState::Open(s) => Some(s),
            GsoState::Off => None,
        }
    }

    /// Whether TCP frames cut for the tunnel leave as UDP GSO packets (the default) or each
    /// as an AF_XDP frame.
    pub fn set_tunnel_gso(&mut self, on: bool) {
        self.tunnel_gso = on;
    }

    /// Wake from [`Worker::wait`] whenever `waker` has a datagram (it is set non-blocking and
    /// drained on waking). The other end of the pair is the driver's.
    pub fn set_waker(&mut self, waker: std::os::unix::net::UnixDatagram) -> io::Result<()> {
        waker.set_nonblocking(true)?;
        self.waker = Some(waker);
        self.ports_changed();
        Ok(())
    }

    /// Run `forwarding` on each batch instead of the pipeline (for the perf harness's
    /// baseline).
    pub fn set_forwarding(&mut self, forwarding: BatchFn) {
        self.forwarding = forwarding;
    }

    /// The worker's I/O counters, readable from any thread.
    pub fn io(&self) -> &Arc<IoCounters> {
        &self.io
    }

    /// Start serving `port` as interface `id` (a pod came up). Its per-interface counters
    /// start from zero (numbers are reused after a pod goes).
    pub fn add_port(&mut self, id: InterfaceId, mut port: Port) {
        for c in [&self.io.iface_rx, &self.io.iface_tx] {
            if let Some(c) = c.get(usize::from(id.0)) {
                c.store(0, Relaxed);
            }
        }
        port.fill();
        self.ports.push((id, port));
        self.ports_changed();
    }

    /// Stop serving interface `id` and hand its port back (a pod went away); frames in flight
    /// on it are dropped with it.
    pub fn remove_port(&mut self, id: InterfaceId) -> Option<Port> {
        let i = self.ports.iter().position(|(p, _)| *p == id)?;
        let (_, port) = self.ports.remove(i);
        self.ports_changed();
        // What the kernel lost on it since the last census, before the socket goes.
        self.count_losses(&port);
        Some(port)
    }

    /// Count what the kernel lost on the way into `port`'s socket since the last count.
    fn count_losses(&self, port: &Port) {
        let lost = port.new_losses();
        self.io.count(IoCounter::RxRingFull, lost.ring_full);
        self.io.count(IoCounter::RxNoChunk, lost.no_chunk);
    }

    /// Count the chunks of every UMEM the worker's ports use, and `also` (the worker's own,
    /// which outlives its ports), into [`IoCounters::chunks`]; and add the frames the kernel
    /// lost on the way into each port's socket since the last census. Call it between
    /// batches, when the worker holds no chunk: one then held is one lost. Reads every UMEM's
    /// ownership records and asks every socket, so call it rarely (once a second).
    pub fn census(&self, also: Option<&Rc<Umem>>) {
        let mut seen: Vec<&Rc<Umem>> = also.into_iter().collect();
        for (_, port) in &self.ports {
            if !seen.iter().any(|u| Rc::ptr_eq(u, port.umem())) {
                seen.push(port.umem());
            }
        }
        let sum = seen
            .iter()
            .fold(Chunks::default(), |sum, u| sum.plus(u.chunks()));
        for (c, v) in self.io.chunks.iter().zip([sum.total, sum.free, sum.kernel]) {
            c.store(v, Relaxed);
        }
        for (_, port) in &self.ports {
            self.count_losses(port);
        }
    }

    /// The worker's port on interface `id`, if it has one.
    pub fn port(&self, id: InterfaceId) -> Option<&Port> {
        self.ports.iter().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    /// The worker's ports.
    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.iter().map(|(_, p)| p)
    }

    /// The descriptors of the worker's sockets and of their UMEMs' own (on which each UMEM's
    /// first socket is bound), each once.
    pub fn socket_fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = Vec::new();
        for (_, port) in &self.ports {
            for fd in [port.fd(), port.umem().fd()] {
                if !fds.contains(&fd) {
                    fds.push(fd);
                }
            }
        }
        fds
    }

    /// The worker's counters, readable from any thread.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Wait for frames as `mode` says: sleep in `poll` until a port has frames or the timeout
    /// passes; or, spinning, yield the core if the last round found nothing and return. Load
    /// the snapshot and read the clock after this, not before: a wait can outlast a publish.
    pub fn wait(&mut self, mode: Mode) -> io::Result<()> {
        let timeout_ms = match mode {
            Mode::Wakeup { timeout_ms } => timeout_ms,
            Mode::BusyPoll => {
                if self.idle_since.is_some() {
                    std::thread::yield_now();
                }
                return Ok(());
            }
            Mode::Adaptive {
                spin_us,
                timeout_ms,
            } => match self.idle_since {
                // Frames came last round: look again at once.
                None => return Ok(()),
                Some(since) if since.elapsed().as_micros() < u128::from(spin_us) => {
                    std::thread::yield_now();
                    return Ok(());
                }
                Some(_) => timeout_ms,
            },
        };
        for fd in &mut self.pollfds {
            fd.revents = 0;
        }
        let fds = &mut self.pollfds;
        // SAFETY: `fds` holds valid pollfds, `fds.len()` of them, for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // Woken for a command: empty the waker (a syscall per command, none per frame).
        if let Some(w) = self.waker.as_ref().filter(|_| self.pollfds[0].revents != 0) {
            let mut byte = [0u8; 1];
            while w.recv(&mut byte).is_ok() {}
        }
        Ok(())
    }

    /// One batch per port that has frames, through `snap`. Returns how many were processed.
    pub fn run_batches(&mut self, snap: &Snapshot, ct: &Conntrack, now: Instant) -> usize {
        let mut total = 0;
        for i in 0..self.ports.len() {
            total += self.batch(i, snap, ct, now);
        }
        self.io.count(IoCounter::Polls, 1);
        if total == 0 {
            self.io.count(IoCounter::EmptyPolls, 1);
            if self.idle_since.is_none() {
                self.idle_since = Some(std::time::Instant::now());
            }
        } else {
            self.idle_since = None;
        }
        self.io.count(IoCounter::Rx, total as u64);
        total
    }

    /// Receive, process and send one batch of port `i`: up to [`BATCH`] frames, each of one
    /// buffer or (larger than a chunk) several. The pipeline sees each frame's first buffer and
    /// the length of the rest; the worker then trims the rest as the pipeline says and sends
    /// the frame whole.
    fn batch(&mut self, i: usize, snap: &Snapshot, ct: &Conntrack, now: Instant) -> usize {
        let mut descs = [Desc::default(); RX_DESCS];
        let ingress = self.ports[i].0;
        let port = &mut self.ports[i].1;
        port.complete();
        let n = port.receive(&mut descs);
        if n == 0 {
            port.fill();
            return 0;
        }
        // Frames: where each starts among the descriptors, and how many it has.
        let mut frames: ArrayVec<(u16, u16), BATCH> = ArrayVec::new();
        let mut firsts: ArrayVec<Desc, BATCH> = ArrayVec::new();
        let mut at = 0;
        while at < n {
            let count = descs[at..n]
                .iter()
                .position(|d| !d.more)
                .map_or(n - at, |k| k + 1);
            frames.push((at as u16, count as u16));
            firsts.push(descs[at]);
            at += count;
        }
        let frame_count = frames.len();
        IoCounters::add(&self.io.batch_sizes[batch_bucket(frame_count)], 1);
        IoCounters::add_at(&self.io.iface_rx, ingress, frame_count as u64);
        let host = snap.node.host;
        let mut outs: ArrayVec<Out, BATCH> = ArrayVec::new();
        let mut splits: ArrayVec<(usize, Split), BATCH> = ArrayVec::new();
        let mut recycle: ArrayVec<u64, RX_DESCS> = ArrayVec::new();
        let port_of = &self.port_of;
        let find = |iface: InterfaceId| {
            let j = *port_of.get(usize::from(iface.0))?;
            usize::from(j).checked_sub(1)
        };
        let (counters, forwarding) = (&self.counters, self.forwarding);
        let (gro, built) = (&mut self.gro, &mut self.built);
        built.clear();
        let mut merged = 0;
        let port = &mut self.ports[i].1;
        let chunk_mask = !(u64::from(port.frame_size()) - 1);
        port.with_chunks(&firsts, |chunks| {
            let mut packets: ArrayVec<Packet<'_>, BATCH> = ArrayVec::new();
            for ((chunk, head), &(start, count)) in chunks.zip(&frames) {
                let (start, count) = (usize::from(start), usize::from(count));
                let first = descs[start];
                let tail: usize = descs[start + 1..start + count]
                    .iter()
                    .map(|d| d.len as usize)
                    .sum();
                let frame = Frame::new(chunk, head, first.len as usize)
                    .expect("frame in its chunk")
                    .with_tail(tail);
                packets.push(Packet::new(frame, ingress));
            }
            forwarding(&mut packets, snap, ct, counters, now);
            let mut dests: ArrayVec<Dest, BATCH> = ArrayVec::new();
            for (p, frame) in packets.iter().zip(frames.iter_mut()) {
                // The pipeline may have moved the frame's start within its chunk, and cut its
                // tail: the descriptors follow.
                let range = usize::from(frame.0)..usize::from(frame.0 + frame.1);
                frame.1 = trim(&mut descs[range], &p.frame, chunk_mask, &mut recycle) as u16;
                let to = match p.verdict {
                    Verdict::Reply => Some(ingress),
                    Verdict::Transmit(iface) => Some(iface),
                    Verdict::ToHost(_) => Some(host),
                    Verdict::Drop(_) => None,
                };
                dests.push(match to.and_then(find) {
                    Some(j) if j == i => Dest::Same,
                    Some(j) => Dest::Other(j),
                    None => Dest::Recycle,
                });
            }
            let mut fates = [Fate::Alone; BATCH];
            let limits = GroLimits {
                max_ip_len: usize::from(snap.node.pod_mtu),
                max_buffers: MAX_FRAME_DESCS,
            };
            merged = coalesce_to_pods(
                gro,
                &mut packets,
                snap,
                limits,
                &descs,
                &frames,
                built,
                &mut fates,
            );
            for (k, p) in packets.iter_mut().enumerate() {
                let (start, count) = frames[k];
                let out = match fates[k] {
                    Fate::Merged => continue,
                    Fate::Heads(start, count) => Out {
                        dest: dests[k],
                        start,
                        count,
                        built: true,
                        gso: false,
                        csum: None,
                    },
                    // (Merged runs keep their checksums: see `coalesce_to_pods`.)
                    Fate::Alone => Out {
                        dest: dests[k],
                        start,
                        count,
                        built: false,
                        gso: false,
                        csum: match (p.frame.checksum_offload(), dests[k]) {
                            (Some(_), Dest::Recycle) | (None, _) => None,
                            (Some(l4), _) => offload::partial::prepare(p.frame.data_mut(), l4),
                        },
                    },
                };
                if let (Some(split), false) = (p.frame.split(), out.dest == Dest::Recycle) {
                    splits.push((outs.len(), split));
                }
                outs.push(out);
            }
        });
        self.io.count(IoCounter::Merged, merged as u64);
        for addr in recycle {
            self.ports[i].1.recycle(addr);
        }
        self.gso.clear();
        for (o, split) in splits {
            self.cut(i, &descs, &mut outs[o], split);
        }
        for out in &outs {
            if let Some(req) = out.csum {
                self.finish_checksum(i, &mut descs, out, req);
            }
        }
        self.deliver(i, &descs, &outs);
        frame_count
    }

    /// See to the checksum `out` leaves to the way out, a frame received on port `i` (in
    /// `descs`) that leaves whole: handed on in TX metadata where its destination takes it,
    /// else completed here.
    fn finish_checksum(&mut self, i: usize, descs: &mut [Desc], out: &Out, req: ChecksumRequest) {
        let j = match out.dest {
            Dest::Same => i,
            Dest::Other(j) => j,
            Dest::Recycle => return,
        };
        let first = usize::from(out.start);
        if self.ports[j].1.tx_metadata()
            && self.ports[i].1.set_checksum_request(&mut descs[first], req)
        {
            self.io.count(IoCounter::ChecksumsHandedOn, 1);
            return;
        }
        let own = &descs[first..first + usize::from(out.count)];
        self.complete_checksum(i, own, req);
    }

    /// Complete the readied checksum of the frame of `own`, received on port `i`.
    fn complete_checksum(&mut self, i: usize, own: &[Desc], req: ChecksumRequest) {
        let port = &mut self.ports[i].1;
        let mut pieces: ArrayVec<&[u8], MAX_FRAME_DESCS> = ArrayVec::new();
        pieces.extend(own.iter().map(|d| port.frame(*d)));
        let value = offload::partial::completed(&pieces, req);
        drop(pieces);
        port.write(own[0].addr + req.field() as u64, &value.to_be_bytes());
        self.io.count(IoCounter::ChecksumsCompleted, 1);
    }

    /// Cut the frame of `out` (received, in `descs`) as `split` says: a TCP frame for the
    /// tunnel into UDP GSO packets of the worker's [`GsoBuf`], where its port sends them and
    /// they fit; anything else into frames written to free chunks of port `i`'s UMEM whose
    /// descriptors go to `built`. `out` then leaves as those, and the frame's own chunks go
    /// back to the free list. A frame that cannot be cut (malformed, or no free chunk) is
    /// dropped, counted as `too_big_unsplit`.
    fn cut(&mut self, i: usize, descs: &[Desc], out: &mut Out, split: Split) {
        let to_gso = match out.dest {
            Dest::Other(j) if split.vxlan => self.gso_socket(j).is_some(),
            _ => false,
        };
        let own = &descs[usize::from(out.start)..usize::from(out.start + out.count)];
        // Segments get checksums of their own; fragments carry the datagram's, so one left to
        // the way out is completed first. The pieces are complete either way.
        if let Some(req) = out.csum.take().filter(|req| !req.tcp()) {
            self.complete_checksum(i, own, req);
        }
        let port = &self.ports[i].1;
        let mut pieces: ArrayVec<&[u8], MAX_FRAME_DESCS> = ArrayVec::new();
        pieces.extend(own.iter().map(|d| port.frame(*d)));
        let encap = if split.vxlan {
            Encap::Vxlan
        } else {
            Encap::Plain
        };
        let mtu = usize::from(split.mtu);
        let plan = Segments::new(&pieces, encap, mtu);
        // (start, count, whether those are GSO packets rather than built descriptors)
        let mut cut = None;
        if let (true, Ok(plan)) = (to_gso, &plan) {
            let first = self.gso.len();
            self.gso.seal();
            match plan.emit(&mut *self.gso) {
                Ok(_) => cut = Some((first, self.gso.len() - first, true)),
                Err(_) => self.gso.truncate(first),
            }
        }
        let start = self.built.len();
        if cut.is_none() {
            let mut sink = ChunkSink::new(port.umem(), 0, &mut self.built, &mut self.scratch);
            let done = match plan {
                Ok(plan) => plan.emit(&mut sink).is_ok(),
                Err(OffloadError::NotTcp { .. } | OffloadError::TcpFragment { .. }) => {
                    matches!(
                        offload::fragment(&pieces, encap, mtu, &mut sink),
                        Ok(Fragmented::Frames(_))
                    )
                }
                Err(_) => false,
            };
            drop(sink);
            if done {
                cut = Some((start, self.built.len() - start, false));
            }
        }
        drop(pieces);
        for d in own {
            self.ports[i].1.recycle(d.addr);
        }
        if let Some((start, count, gso)) = cut {
            self.io.count(IoCounter::Cut, 1);
            *out = Out {
                start: start as u16,
                count: count as u16,
                built: !gso,
                gso,
                ..*out
            };
        } else {
            // What was written before the failure goes back too.
            for d in self.built.drain(start..) {
                self.ports[i].1.recycle(d.addr);
            }
            self.counters.dropped(DropReason::TooBigUnsplit);
            out.dest = Dest::Recycle;
            out.count = 0;
        }
    }

    /// Send port `j` the UDP GSO packets of `out`, counting each datagram as a frame sent (or
    /// as one not queued, where the socket had no room). A refusal that says the kernel will
    /// never take them turns the port's GSO off: the rest of the batch's packets for it are
    /// lost (counted in `gso_failed`), and later frames are cut into AF_XDP frames.
    fn send_gso(&mut self, j: usize, out: &Out) {
        let range = usize::from(out.start)..usize::from(out.start + out.count);
        let Some(at) = self.gso_entry(j) else {
            self.io.count(IoCounter::GsoFailed, range.len() as u64);
            return;
        };
        for k in range.clone() {
            let GsoState::Open(socket) = &self.gso_sockets[at].1 else {
                self.io.count(IoCounter::GsoFailed, (range.end - k) as u64);
                return;
            };
            let (packet, datagrams) = self.gso.packet(k);
            match socket.send(packet) {
                Ok(()) => {
                    self.io.count(IoCounter::GsoPackets, 1);
                    self.io.count(IoCounter::Tx, datagrams as u64);
                    IoCounters::add_at(&self.io.iface_tx, self.ports[j].0, datagrams as u64);
                }
                // No room now: lost like a frame for a full TX ring; TCP sends it again.
                Err(e) if GsoSocket::is_full(&e) => {
                    self.io.count(IoCounter::TxRingFull, datagrams as u64);
                }
                Err(e) => {
                    self.io.count(IoCounter::GsoFailed, 1);
                    if GsoSocket::is_refusal(&e) {
                        self.gso_sockets[at].1 = GsoState::Off;
                    }
                }
            }
        }
    }

    /// Send a batch's frames: same-port ones in one go, others moved (or copied) to their port.
    fn deliver(&mut self, i: usize, descs: &[Desc], outs: &[Out]) {
        let built = std::mem::take(&mut self.built);
        let mut tx = std::mem::take(&mut self.tx);
        let frame = |o: &Out| {
            let range = usize::from(o.start)..usize::from(o.start + o.count);
            if o.built {
                &built[range]
            } else {
                &descs[range]
            }
        };
        tx.clear();
        for out in outs {
            match out.dest {
                Dest::Same => tx.extend(frame(out).iter().copied()),
                Dest::Recycle => {
                    for d in frame(out) {
                        self.ports[i].1.recycle(d.addr);
                    }
                }
                Dest::Other(_) => {}
            }
        }
        self.send(i, &tx);
        // Other ports, grouped so each destination transmits once: on a shared UMEM the
        // descriptors move as they are; otherwise the bytes are copied into the destination's.
        let mut dests: ArrayVec<usize, BATCH> = ArrayVec::new();
        for out in outs {
            if let Dest::Other(j) = out.dest {
                if !dests.contains(&j) {
                    dests.push(j);
                }
            }
        }
        for j in dests {
            tx.clear();
            for out in outs.iter().filter(|o| o.dest == Dest::Other(j)) {
                if out.gso {
                    // In order: what was gathered for the port leaves first.
                    if !tx.is_empty() {
                        self.send(j, &tx);
                        tx.clear();
                    }
                    self.send_gso(j, out);
                    continue;
                }
                let (src, dst) = two_mut(&mut self.ports, i, j);
                if src.1.shares_umem_with(&dst.1) {
                    tx.extend(frame(out).iter().copied());
                    continue;
                }
                let before = tx.len();
                for d in frame(out) {
                    match dst.1.alloc_copy(src.1.frame(*d), COPY_HEADROOM) {
                        Some(mut c) => {
                            if d.metadata {
                                dst.1.copy_metadata(&mut c, &src.1, *d);
                            }
                            tx.push(Desc { more: d.more, ..c });
                        }
                        None => {
                            // Out of chunks: the frame goes whole or not at all.
                            for c in tx.drain(before..) {
                                dst.1.recycle(c.addr);
                            }
                            break;
                        }
                    }
                }
                if tx.len() > before {
                    self.io.count(IoCounter::Copied, 1);
                }
                for d in frame(out) {
                    src.1.recycle(d.addr);
                }
            }
            if !tx.is_empty() {
                self.send(j, &tx);
            }
        }
        self.built = built;
        self.tx = tx;
        self.ports[i].1.fill();
    }

    /// Transmit on port `i`, counting the frames that went and those the ring had no room
    /// for (a frame of several descriptors counts once: the ring takes whole frames only).
    fn send(&mut self, i: usize, frames: &[Desc]) {
        let (id, port) = &mut self.ports[i];
        let sent = port.transmit(frames);
        let whole = |descs: &[Desc]| descs.iter().filter(|d| !d.more).count() as u64;
        let (went, left) = (whole(&frames[..sent]), whole(&frames[sent..]));
        self.io.count(IoCounter::Tx, went);
        IoCounters::add_at(&self.io.iface_tx, *id, went);
        self.io.count(IoCounter::TxRingFull, left);
    }
}

/// Fit a frame's descriptors to what the pipeline left of it: the first starts at the frame's
/// head and holds its first buffer's bytes; the rest carry `frame.tail()` bytes, the ones no
/// longer needed going to `recycle`. Returns how many descriptors the frame keeps.
fn trim(
    descs: &mut [Desc],
    frame: &Frame<'_>,
    chunk_mask: u64,
    recycle: &mut ArrayVec<u64, RX_DESCS>,
) -> usize {
    let first = &mut descs[0];
    first.addr = (first.addr & chunk_mask) + frame.head() as u64;
    first.len = frame.len() as u32;
    let mut left = frame.tail();
    let mut kept = 1;
    for d in &mut descs[1..] {
        if left == 0 {
            recycle.push(d.addr);
            continue;
        }
        d.len = d.len.min(left as u32);
        left -= d.len as usize;
        kept += 1;
    }
    for (k, d) in descs[..kept].iter_mut().enumerate() {
        d.more = k + 1 < kept;
    }
    kept
}

/// Merge the batch's TCP segments toward each pod (GRO, by the kernel's rules: see
/// `offload::coalesce`), so a stream arriving in MTU-sized segments reaches the pod as large
/// frames. A merged run leaves as one multi-buffer frame, built without copying: its first
/// frame whole (headers rewritten in place), then each other segment's payload where it lies
/// in its own chunks; its chain goes to `built`, the head's fate becomes [`Fate::Heads`] and
/// the others' [`Fate::Merged`]. Every chunk of every merged frame is in the chain once, so
/// each comes back with the transmit's completion.
///
/// Only TCP frames of some size (in the first buffer: a batch of small packets never reaches
/// the coalescer) leaving whole for a pod are looked at, of one buffer or several (jumbo frames
/// from a 9000-byte underlay take three 4 KiB chunks); a run stays within `limits`' buffers and
/// is merged only while `built` has room for its chain.
#[allow(clippy::too_many_arguments)]
fn coalesce_to_pods(
    gro: &mut Coalescer<BATCH>,
    packets: &mut [Packet<'_>],
    snap: &Snapshot,
    limits: GroLimits,
    descs: &[Desc],
    frames: &[(u16, u16)],
    built: &mut Vec<Desc>,
    fates: &mut [Fate; BATCH],
) -> usize {
    let mut merged = 0;
    /// Smaller frames are not worth merging: they are not a bulk stream's segments.
    const MIN_LEN: usize = 512;
    let candidate = |p: &Packet<'_>| match p.verdict {
        Verdict::Transmit(iface) => {
            let d = p.frame.data();
            d.len() >= MIN_LEN
                && d[23] == kxdp_dataplane::flow::proto::TCP
                && p.frame.split().is_none()
                && p.frame.checksum_offload().is_none()
                && matches!(snap.interface_role(iface), Some(InterfaceRole::Pod { .. }))
        }
        _ => false,
    };
    let mut pods: ArrayVec<InterfaceId, BATCH> = ArrayVec::new();
    for p in packets.iter() {
        if let (true, Verdict::Transmit(iface)) = (candidate(p), p.verdict) {
            if !pods.contains(&iface) {
                pods.push(iface);
            }
        }
    }
    for pod in pods {
        let mut members: ArrayVec<usize, BATCH> = ArrayVec::new();
        members.extend(
            (0..packets.len()).filter(|&k| {
                candidate(&packets[k]) && packets[k].verdict == Verdict::Transmit(pod)
            }),
        );
        if members.len() < 2 {
            continue;
        }
        // Each member's descriptors (trimmed to the frame the pipeline left).
        let own = |m: usize| {
            let (start, count) = frames[members[m]];
            &descs[usize::from(start)..usize::from(start + count)]
        };
        let mut bytes: ArrayVec<&[u8], BATCH> = ArrayVec::new();
        bytes.extend(members.iter().map(|&k| packets[k].frame.data()));
        let tail = |m: usize| Tail {
            len: packets[members[m]].frame.tail(),
            buffers: own(m).len() - 1,
        };
        if gro.coalesce_chained(&bytes, tail, limits).is_err() {
            continue;
        }
        drop(bytes);
        let runs = gro.runs();
        for run in runs.iter().filter(|r| r.is_merged()) {
            let slices = gro.slices(run);
            let needed =
                own(run.first).len() + slices.iter().map(|s| own(s.frame).len()).sum::<usize>();
            if built.capacity() - built.len() < needed {
                break;
            }
            let head = members[run.first];
            run.rewrite_first(packets[head].frame.data_mut());
            let start = built.len();
            match own(run.first) {
                // Ethernet padding cut.
                [one] => built.push(Desc {
                    len: run.first_len as u32,
                    ..*one
                }),
                chain => built.extend_from_slice(chain),
            }
            for s in slices {
                // The payload from its offset in the first buffer, then the further buffers
                // whole (the coalescer merges a chained frame only where its payload starts
                // in the first buffer and its packet ends with the last).
                let (first, rest) = own(s.frame).split_first().expect("a frame has a buffer");
                built.push(Desc {
                    addr: first.addr + s.offset as u64,
                    len: (s.len - rest.iter().map(|d| d.len as usize).sum::<usize>()) as u32,
                    ..*first
                });
                built.extend_from_slice(rest);
                fates[members[s.frame]] = Fate::Merged;
            }
            for d in &mut built[start..] {
                d.more = true;
            }
            if let Some(last) = built.last_mut() {
                last.more = false;
            }
            fates[head] = Fate::Heads(start as u16, (built.len() - start) as u16);
            merged += slices.len() + 1;
        }
    }
    merged
}

/// Two distinct elements of a slice, mutably.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_buckets_are_powers_of_two_up_to_the_batch() {
        let buckets: Vec<usize> = [1, 2, 3, 4, 7, 8, 31, 32, 63, 64]
            .into_iter()
            .map(batch_bucket)
            .collect();
        assert_eq!(buckets, [0, 1, 1, 2, 2, 3, 4, 5, 5, 6]);
        assert_eq!(batch_bucket(BATCH), BATCH_BUCKETS - 1);
        // Each size lands in the bucket whose published bounds hold it.
        for n in 1..=BATCH {
            let (min, max) = BATCH_BUCKET_BOUNDS[batch_bucket(n)];
            assert!((min..=max).contains(&(n as u64)), "{n} in {min}..={max}");
        }
        assert_eq!(
            BATCH_BUCKET_BOUNDS,
            [
                (1, 1),
                (2, 3),
                (4, 7),
                (8, 15),
                (16, 31),
                (32, 63),
                (64, 64)
            ]
        );
    }

    #[test]
    fn an_adaptive_worker_spins_after_traffic_and_then_sleeps() {
        use std::time::{Duration, Instant as Clock};
        // No ports: `poll` sleeps its whole timeout, so how long `wait` takes says whether
        // the worker slept. The spin and the timeout are long enough that a loaded machine
        // cannot blur the two.
        let mut w = Worker::new(Vec::new(), Arc::new(Counters::new()));
        let mode = Mode::Adaptive {
            spin_us: 400_000,
            timeout_ms: 2_000,
        };
        let ct = Conntrack::new(Default::default());
        let snap = kxdp_testkit::Topology::default().snapshot();
        w.run_batches(&snap, &ct, Instant::ZERO);
        let t = Clock::now();
        w.wait(mode).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "spinning, not asleep");
        std::thread::sleep(Duration::from_millis(450));
        let t = Clock::now();
        w.wait(mode).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(1_900),
            "asleep after the spin"
        );
        // Busy-poll never sleeps, idle or not.
        let t = Clock::now();
        w.wait(Mode::BusyPoll).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_sleeping_worker_wakes_for_a_command() {
        use std::os::unix::net::UnixDatagram;
        use std::time::{Duration, Instant as Clock};
        // No ports: without its waker the worker would sleep the whole 5 s.
        let mut w = Worker::new(Vec::new(), Arc::new(Counters::new()));
        let (waker, woken) = UnixDatagram::pair().unwrap();
        w.set_waker(woken).unwrap();
        let mode = Mode::Wakeup { timeout_ms: 5_000 };
        let t = Clock::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                waker.send(&[1]).unwrap();
                waker.send(&[1]).unwrap();
            });
            w.wait(mode).unwrap();
        });
        assert!(t.elapsed() < Duration::from_secs(2), "woken, not timed out");
        // The second wake-up may have come after the first wait drained the waker: one more
        // wait takes it. Then the waker is empty and a wait sleeps its (short) timeout.
        w.wait(Mode::Wakeup { timeout_ms: 300 }).unwrap();
        let t = Clock::now();
        w.wait(Mode::Wakeup { timeout_ms: 300 }).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(250), "drained");
    }
}
