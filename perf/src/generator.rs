//! The harness's packet generator: one template frame sent out of a pod's interface as fast as
//! one core can, spread over UDP source ports, by whichever of two means the kernel allows.
//!
//! - **Live frames** (first choice): the perf XDP program run through `BPF_PROG_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` ([`PerfPrograms::generate`]); on a veth its frames land in
//!   the peer's XDP without an skb, so it outruns the forwarders it feeds.
//! - **AF_XDP** (where the kernel refuses live frames: some builds answer `EPERM` to the flag
//!   even for root): a copy-mode AF_XDP socket on the interface's queue 0 transmitting from its
//!   own UMEM. Each frame costs the kernel an skb and a copy on the generator's core, so it
//!   offers less; the harness prints the offered rate beside the forwarded one, and which
//!   generator ran, so a generator-bound row shows as one.
//!
//! Which one is decided on the first [`Generator::send`]: a refused live run sends nothing.

use std::io;

use kxdp_xdp::xsk::{Desc, Port, PortConfig};
use kxdp_xdp::XdpError;

use crate::programs::PerfPrograms;

/// First UDP source port of the generated flows (as the live-frames program uses).
const FIRST_PORT: u16 = 10_000;

/// Frames per AF_XDP transmit (a frame larger than a chunk takes several descriptors).
const XSK_BATCH: usize = 64;

/// The means a [`Generator`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Means {
    /// `BPF_PROG_RUN` in live-frames mode.
    LiveFrames,
    /// A copy-mode AF_XDP socket's transmit ring.
    AfXdp,
}

impl Means {
    /// How a report names it.
    pub fn name(self) -> &'static str {
        match self {
            Means::LiveFrames => "BPF_PROG_RUN live frames",
            Means::AfXdp => "AF_XDP copy-mode transmit",
        }
    }
}

/// A generator bound to one interface of the calling thread's namespace.
#[derive(Debug)]
pub struct Generator {
    ifname: String,
    frame: Vec<u8>,
    flows: u16,
    live: Option<(PerfPrograms, u32)>,
    xsk: Option<XskGen>,
}

/// The AF_XDP side: the port, and the next flow's index.
#[derive(Debug)]
struct XskGen {
    port: Port,
    seq: u32,
    batch: Vec<Desc>,
}

impl Generator {
    /// A generator sending `frame` (Ethernet/IPv4/UDP without options, UDP checksum zero) out
    /// of `ifname` over `flows` source ports (10000 and up).
    pub fn new(ifname: &str, frame: &[u8], flows: u32) -> Result<Generator, String> {
        if frame.len() < 42 {
            return Err(format!("a {}-byte frame has no UDP header", frame.len()));
        }
        let flows = u16::try_from(flows.clamp(1, 50_000)).unwrap_or(1);
        let progs = PerfPrograms::load().map_err(|e| e.to_string())?;
        progs
            .set_flows(u32::from(flows))
            .map_err(|e| e.to_string())?;
        let index = kxdp_xdp::ifindex(ifname).map_err(|e| e.to_string())?;
        Ok(Generator {
            ifname: ifname.to_owned(),
            frame: frame.to_vec(),
            flows,
            live: Some((progs, index)),
            xsk: None,
        })
    }

    /// A generator that sends through AF_XDP only, whatever the kernel allows.
    pub fn af_xdp(ifname: &str, frame: &[u8], flows: u32) -> Result<Generator, String> {
        let mut g = Generator::new(ifname, frame, flows)?;
        g.live = None;
        Ok(g)
    }

    /// The means in use: live frames until the kernel has refused them.
    pub fn means(&self) -> Means {
        if self.live.is_some() {
            Means::LiveFrames
        } else {
            Means::AfXdp
        }
    }

    /// Send about `count` frames; returns how many the kernel took (all of them in live mode;
    /// those queued for transmission through AF_XDP, which stops short when its ring is full).
    pub fn send(&mut self, count: u32) -> Result<u32, String> {
        if let Some((progs, index)) = &self.live {
            match progs.generate(&self.frame, *index, count) {
                Ok(()) => return Ok(count),
                Err(XdpError::Bpf { source, .. })
                    if source.kind() == libbpf_rs::ErrorKind::PermissionDenied =>
                {
                    self.live = None;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if self.xsk.is_none() {
            self.xsk = Some(
                XskGen::open(&self.ifname)
                    .map_err(|e| format!("AF_XDP on {}: {e}", self.ifname))?,
            );
        }
        let Some(x) = self.xsk.as_mut() else {
            return Err("no generator".into());
        };
        Ok(x.send(&mut self.frame, self.flows, count))
    }
}

impl XskGen {
    fn open(ifname: &str) -> io::Result<XskGen> {
        let config = PortConfig {
            frames: 4096,
            ..PortConfig::default()
        };
        Ok(XskGen {
            port: Port::open(ifname, 0, config)?,
            seq: 0,
            batch: Vec::with_capacity(XSK_BATCH),
        })
    }

    /// Queue up to `count` frames, each a copy of `frame` with the next flow's source port; a
    /// frame larger than a chunk goes as several buffers (multi-buffer AF_XDP).
    fn send(&mut self, frame: &mut [u8], flows: u16, count: u32) -> u32 {
        // What a chunk holds after the room every transmitted buffer needs before it.
        let piece = (self.port.frame_size() - self.port.umem().tx_headroom()) as usize;
        let mut sent = 0u32;
        while sent < count {
            self.port.complete();
            self.batch.clear();
            let mut frames = 0;
            while frames < XSK_BATCH.min((count - sent) as usize) {
                let port = FIRST_PORT + (self.seq % u32::from(flows)) as u16;
                frame[34..36].copy_from_slice(&port.to_be_bytes());
                if !self.queue(frame, piece) {
                    break;
                }
                self.seq = self.seq.wrapping_add(1);
                frames += 1;
            }
            if frames == 0 {
                // Every chunk is in flight: a full ring; what the kernel takes next is later.
                return sent;
            }
            let queued = self.port.transmit(&self.batch);
            sent += self.batch[..queued].iter().filter(|d| !d.more).count() as u32;
            if queued < self.batch.len() {
                return sent;
            }
        }
        sent
    }

    /// Copy `frame` into free chunks, `piece` bytes each, and add its descriptors to the batch;
    /// false (and nothing added) when the chunks run out.
    fn queue(&mut self, frame: &[u8], piece: usize) -> bool {
        let start = self.batch.len();
        for bytes in frame.chunks(piece) {
            let Some(mut d) = self.port.alloc_copy(bytes, 0) else {
                for d in self.batch.drain(start..) {
                    self.port.recycle(d.addr);
                }
                return false;
            };
            d.more = true;
            self.batch.push(d);
        }
        if let Some(last) = self.batch.last_mut() {
            last.more = false;
        }
        true
    }
}
