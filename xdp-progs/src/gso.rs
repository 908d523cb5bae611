//! Segments cut for the tunnel, handed to the kernel as one UDP GSO packet per run.
//!
//! On a veth underlay each frame sent through a copy-mode AF_XDP socket costs the kernel an
//! skb and a copy on the sending core, and every hop after it (the switch's bridge) handles
//! it alone. The TCP segments a worker cuts from a pod's large frame for the VXLAN tunnel are
//! all alike but for their payload, so they can leave as what Linux calls a UDP GSO packet
//! (`SKB_GSO_UDP_L4`): one skb whose UDP payload is the segments' VXLAN packets back to back,
//! `gso_size` bytes each but the last, sent through a packet socket with a virtio-net header
//! (`PACKET_VNET_HDR`, as a virtual NIC hands the kernel a TSO frame). The kernel cuts it
//! into UDP datagrams where a device cannot carry it whole (on the NIC, if it segments UDP;
//! in software otherwise), repeating the outer Ethernet, IPv4 and UDP headers with their
//! lengths, IP IDs and checksums (`__udp_gso_segment`, `inet_gso_segment`) and computing each
//! datagram's UDP checksum. What arrives is what the worker's own cutting would have sent,
//! with a UDP checksum where kxdp's template has zero (both are valid VXLAN).
//!
//! [`GsoBuf`] is the [`FrameSink`] the cutting writes into: each segment after a packet's
//! first is written over the tail of the one before (its outer headers, which the kernel
//! repeats, are dropped and the 42 bytes they covered put back), so a packet's payload is
//! contiguous without a second copy. [`GsoSocket`] sends the packets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use arrayvec::ArrayVec;
use kxdp_dataplane::offload::FrameSink;
use kxdp_dataplane::wire::checksum::{fold, pseudo_header, sum};

/// Outer Ethernet, IPv4 (no options) and UDP: what the kernel repeats in every datagram.
pub const OUTER_HEADERS: usize = 14 + 20 + 8;

/// The virtio-net header before each packet (`struct virtio_net_hdr`, little-endian here).
const VNET_HDR: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the kernel completes the checksum at `csum_start`.
const NEEDS_CSUM: u8 = 1;

/// `VIRTIO_NET_HDR_GSO_UDP_L4` (Linux 6.2).
const GSO_UDP_L4: u8 = 5;

/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: i32 = 15;

/// The send buffer a [`GsoSocket`] asks for: a few batches of 64 KiB packets.
const SEND_BUFFER: libc::c_int = 4 << 20;

/// Datagrams per packet, at most: the kernel's `UDP_MAX_SEGMENTS` in older kernels.
const MAX_SEGMENTS: usize = 64;

/// Packets a buffer holds: a batch's large frames, each cut into at most a few packets.
const MAX_PACKETS: usize = 32;

/// Bytes a buffer holds: [`MAX_PACKETS`] packets' worth of 64 KiB frames, and then some.
const BUF_BYTES: usize = 8 << 16;

/// One packet of a [`GsoBuf`]: `[start..end]` of its bytes, virtio-net header first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packet {
    start: usize,
    end: usize,
    /// UDP payload bytes of each datagram but the last (`gso_size`).
    segment: usize,
    /// Datagrams.
    count: usize,
    /// The last one written was shorter than `segment`: nothing may follow it.
    short: bool,
}

/// Where the sink's open buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    /// A new packet's first segment, at this offset (after its virtio-net header).
    First(usize),
    /// A segment appended at this offset, over the 42 bytes saved in `saved`.
    Appended(usize),
}

/// The packets of a batch's cut frames, ready to send.
#[derive(Debug)]
pub struct GsoBuf {
    buf: Box<[u8]>,
    packets: ArrayVec<Packet, MAX_PACKETS>,
    open: Open,
    saved: [u8; OUTER_HEADERS],
}

impl Default for GsoBuf {
    fn default() -> Self {
        GsoBuf {
            buf: vec![0; BUF_BYTES].into_boxed_slice(),
            packets: ArrayVec::new(),
            open: Open::None,
            saved: [0; OUTER_HEADERS],
        }
    }
}

impl GsoBuf {
    /// Forget every packet (a new batch).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.open = Open::None;
    }

    /// How many packets the buffer holds.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Packet `k`, virtio-net header first, its headers completed; and how many datagrams
    /// it carries.
    pub fn packet(&mut self, k: usize) -> (&[u8], usize) {
        let p = self.packets[k];
        let bytes = &mut self.buf[p.start..p.end];
        finish(bytes, p.segment, p.count);
        (&self.buf[p.start..p.end], p.count)
    }

    /// Whether the open packet can take a segment of `len` bytes (outer headers included).
    fn fits(&self, len: usize) -> bool {
        let Some(p) = self.packets.last() else {
            return false;
        };
        let payload = len.saturating_sub(OUTER_HEADERS);
        let udp_len = 8 + (p.end - p.start - VNET_HDR - OUTER_HEADERS) + payload;
        !p.short
            && p.count < MAX_SEGMENTS
            && payload <= p.segment
            && 20 + udp_len <= usize::from(u16::MAX)
            && p.end + payload <= self.buf.len()
    }

    /// Drop the packets from the `n`th on (a frame whose cutting failed part way).
    pub fn truncate(&mut self, n: usize) {
        self.packets.truncate(n);
        self.open = Open::None;
    }

    /// Stop adding to the last packet: the next segment starts a new one (each frame's
    /// segments start their own packets).
    pub fn seal(&mut self) {
        if let Some(p) = self.packets.last_mut() {
            p.short = true;
        }
    }
}

impl FrameSink for GsoBuf {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        if len <= OUTER_HEADERS {
            return None;
        }
        if self.fits(len) {
            let at = self.packets.last()?.end - OUTER_HEADERS;
            self.saved
                .copy_from_slice(&self.buf[at..at + OUTER_HEADERS]);
            self.open = Open::Appended(at);
            return Some(&mut self.buf[at..at + len]);
        }
        if self.packets.is_full() {
            return None;
        }
        let start = self.packets.last().map_or(0, |p| p.end);
        let at = start + VNET_HDR;
        if at + len > self.buf.len() {
            return None;
        }
        self.open = Open::First(at);
        Some(&mut self.buf[at..at + len])
    }

    fn commit(&mut self, len: usize) {
        let payload = len - OUTER_HEADERS;
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::First(at) => self.packets.push(Packet {
                start: at - VNET_HDR,
                end: at + len,
                segment: payload,
                count: 1,
                short: false,
            }),
            Open::Appended(at) => {
                self.buf[at..at + OUTER_HEADERS].copy_from_slice(&self.saved);
                if let Some(p) = self.packets.last_mut() {
                    p.end += payload;
                    p.count += 1;
                    p.short = payload < p.segment;
                }
            }
        }
    }
}

/// Complete a packet's virtio-net header and outer headers: the lengths of the whole, a
/// fresh IPv4 checksum, and for several datagrams the UDP checksum's pseudo-header part, for
/// the kernel to finish per datagram. A packet of one datagram is sent as it was cut.
fn finish(bytes: &mut [u8], segment: usize, count: usize) {
    let (hdr, frame) = bytes.split_at_mut(VNET_HDR);
    hdr.fill(0);
    if count < 2 {
        return;
    }
    let udp_len = (frame.len() - 14 - 20) as u16;
    let ip_len = udp_len + 20;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[24..26].fill(0);
    let ip_check = fold(sum(&frame[14..34], 0));
    frame[24..26].copy_from_slice(&ip_check.to_be_bytes());
    frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
    let addr =
        |at: usize| std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let pseudo = !fold(pseudo_header(addr(26), addr(30), 17, udp_len));
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    hdr[0] = NEEDS_CSUM;
    hdr[1] = GSO_UDP_L4;
    hdr[2..4].copy_from_slice(&(OUTER_HEADERS as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&(segment as u16).to_le_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
}

/// Set socket option `opt` at `level` of `fd` to `value`.
fn set_int(fd: &OwnedFd, level: i32, opt: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int of the size given; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A packet socket that sends [`GsoBuf`] packets out of one interface.
#[derive(Debug)]
pub struct GsoSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl GsoSocket {
    /// A socket sending out of interface `ifindex` of the calling thread's namespace. It
    /// receives nothing (protocol 0).
    pub fn open(ifindex: u32) -> io::Result<GsoSocket> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a socket just made and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_int(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        // Room for a batch's packets in flight (the default, about 200 KiB, holds three):
        // forced where the caller may (CAP_NET_ADMIN), else as much as `wmem_max` allows.
        if set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SEND_BUFFER).is_err() {
            set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER)?;
        }
        Ok(GsoSocket { fd, ifindex })
    }

    /// Send one packet (virtio-net header first) out of the interface, without waiting: an
    /// error of [`GsoSocket::is_full`] says the socket or the device had no room now.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut to: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&packet[VNET_HDR..VNET_HDR + 6]);
        // SAFETY: `packet` and `to` are live for the call; the kernel only reads them.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                libc::MSG_DONTWAIT,
                (&to as *const libc::sockaddr_ll).cast(),
                core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether `e`, from [`GsoSocket::send`], means no room for now (the socket's send buffer
    /// or the device's queue full) rather than a packet the kernel will never take.
    pub fn is_full(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kxdp_dataplane::offload::{Encap, Segments};
    use kxdp_dataplane::wire::build::FrameSpec;
    use kxdp_dataplane::wire::tcp_flags;
    use kxdp_dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;

    /// Each frame in a `Vec` of its own: the cutting as AF_XDP frames get it.
    #[derive(Default)]
    struct Frames {
        frames: Vec<Vec<u8>>,
        open: Vec<u8>,
    }

    impl FrameSink for Frames {
        fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
            self.open = vec![0; len];
            Some(&mut self.open)
        }
        fn commit(&mut self, len: usize) {
            self.open.truncate(len);
            self.frames.push(std::mem::take(&mut self.open));
        }
    }

    /// A pod's 64000-byte TCP segment in VXLAN, as a worker cuts it.
    fn frame() -> Vec<u8> {
        let mac = |b| MacAddr::from_bytes(&[2, 0, 0, 0, 0, b]);
        let inner = FrameSpec::new(
            mac(1),
            mac(2),
            Ipv4Addr::new(10, 244, 1, 10),
            Ipv4Addr::new(10, 244, 2, 10),
        );
        let payload: Vec<u8> = (0..64_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let inner = inner.tcp(40_000, 5201, tcp_flags::ACK | tcp_flags::PSH, &payload);
        let mut outer = FrameSpec::new(
            mac(3),
            mac(4),
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 11),
        );
        outer.udp_checksum = false;
        outer.vxlan(51_000, 8472, 1, &inner)
    }

    #[test]
    fn packets_carry_the_cut_segments_back_to_back_with_headers_for_the_kernel() {
        let frame = frame();
        let pieces = [frame.as_slice()];
        let plan = Segments::new(&pieces, Encap::Vxlan, 1500).expect("a TCP frame");
        let mut frames = Frames::default();
        plan.emit(&mut frames).expect("cut");
        let mut gso = GsoBuf::default();
        gso.seal();
        assert_eq!(plan.emit(&mut gso), Ok(frames.frames.len()));
        // 46 datagrams of 1472 bytes would make a UDP packet longer than IPv4 allows: two.
        assert_eq!(gso.len(), 2);
        let mut datagrams = frames.frames.iter();
        for k in 0..gso.len() {
            let (packet, count) = gso.packet(k);
            let (hdr, p) = packet.split_at(VNET_HDR);
            let word = |at: usize| u16::from_le_bytes([hdr[at], hdr[at + 1]]);
            let be = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
            let segment = usize::from(word(4));
            assert_eq!((hdr[0], hdr[1]), (NEEDS_CSUM, GSO_UDP_L4));
            assert_eq!((word(2), word(6), word(8)), (42, 34, 6));
            assert_eq!(usize::from(be(16)), p.len() - 14, "IPv4 total length");
            assert_eq!(fold(sum(&p[14..34], 0)), 0, "IPv4 header checksum");
            assert_eq!(usize::from(be(38)), p.len() - 34, "UDP length");
            let pseudo = pseudo_header(
                Ipv4Addr::new(198, 18, 0, 10),
                Ipv4Addr::new(198, 18, 0, 11),
                17,
                be(38),
            );
            assert_eq!(
                be(40),
                !fold(pseudo),
                "the UDP checksum's pseudo-header part"
            );
            // The kernel's cutting: the outer headers, then `segment` bytes at a time.
            let mut n = 0;
            for chunk in p[OUTER_HEADERS..].chunks(segment) {
                let cut = datagrams.next().expect("as many datagrams as frames");
                assert_eq!(&p[..12], &cut[..12], "Ethernet addresses");
                assert_eq!(&p[26..38], &cut[26..38], "addresses and ports");
                assert_eq!(chunk, &cut[OUTER_HEADERS..], "datagram {n} of packet {k}");
                n += 1;
            }
            assert_eq!(n, count);
        }
        assert!(datagrams.next().is_none());
        // A second frame starts its own packets.
        gso.seal();
        plan.emit(&mut gso).expect("cut again");
        assert_eq!(gso.len(), 4);
        gso.truncate(2);
        assert_eq!(gso.len(), 2);
    }

    #[test]
    fn a_full_buffer_refuses_the_next_frame() {
        let frame = frame();
        let pieces = [frame.as_slice()];
        let plan = Segments::new(&pieces, Encap::Vxlan, 1500).expect("a TCP frame");
        let mut gso = GsoBuf::default();
        let mut fitted = 0;
        loop {
            gso.seal();
            let before = gso.len();
            if plan.emit(&mut gso).is_err() {
                gso.truncate(before);
                break;
            }
            fitted += 1;
            assert!(fitted <= MAX_PACKETS, "the buffer never filled");
        }
        assert!(fitted >= 7, "{fitted} frames fitted");
        assert_eq!(gso.len(), fitted * 2);
    }
}
