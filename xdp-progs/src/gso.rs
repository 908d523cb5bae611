//! The packet socket through which a worker hands the kernel UDP GSO packets
//! ([`kxdp_dataplane::offload::gso`]: the segments it cut for the tunnel, back to back behind
//! one set of outer headers).
//!
//! Unlike a copy-mode AF_XDP socket's frames, the packets go through the device's qdisc: with
//! `PACKET_QDISC_BYPASS` set (tried on Linux 6.18), every GSO packet sent out of a veth was
//! lost (`ENOBUFS`). On a device with several transmit queues the kernel also picks the
//! packet socket's queue (XPS, for the worker's core) while the AF_XDP socket sends on the
//! queue it is bound to: where the two differ, a flow's uncut frame could overtake the GSO
//! packet before it. On veth (no qdisc, one queue), kxdp's test bed, order holds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kxdp_dataplane::offload::gso::VNET_HDR;

use crate::xsk::setsockopt;

/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: i32 = 15;

/// The send buffer a [`GsoSocket`] asks for: a few batches of 64 KiB packets.
const SEND_BUFFER: libc::c_int = 4 << 20;

/// A packet socket that sends [`GsoBuf`](kxdp_dataplane::offload::GsoBuf) packets out of one
/// interface.
#[derive(Debug)]
pub struct GsoSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl GsoSocket {
    /// A socket sending out of interface `ifindex` of the calling thread's namespace. It
    /// receives nothing (protocol 0). Needs `CAP_NET_RAW`.
    pub fn open(ifindex: u32) -> io::Result<GsoSocket> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a socket just made and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let on: libc::c_int = 1;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            &on,
            "PACKET_VNET_HDR",
        )?;
        // Room for a batch's packets in flight (the default, about 200 KiB, holds three):
        // forced where the caller may (CAP_NET_ADMIN), else as much as `wmem_max` allows.
        let size = SEND_BUFFER;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &size, "").is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &size, "SO_SNDBUF")?;
        }
        Ok(GsoSocket { fd, ifindex })
    }

    /// The interface it sends out of.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Send one packet (virtio-net header first) out of the interface, without waiting. See
    /// [`GsoSocket::is_full`] and [`GsoSocket::is_refusal`] for what an error means.
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
    /// or the device's queue full): the packet is lost, as a frame for a full TX ring is.
    pub fn is_full(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS))
    }

    /// Whether `e`, from [`GsoSocket::send`], says this kernel or device will never take such
    /// packets (a kernel before 6.2 knows no `VIRTIO_NET_HDR_GSO_UDP_L4`: `EINVAL`), rather
    /// than that this one could not go now (the device down, memory short).
    pub fn is_refusal(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
        )
    }
}
