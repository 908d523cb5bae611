//! Transmit checksum offload, read and turned off through the legacy ethtool ioctl: the one
//! request `ethtool -K DEV tx off` amounts to (`ETHTOOL_STXCSUM`, which clears every transmit
//! checksum feature; the kernel then drops TSO, which needs it).
//!
//! An ioctl on a socket of the calling thread's network namespace, so it acts on the
//! interface of that name there.

use std::os::fd::AsRawFd as _;

/// `struct ethtool_value` (linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// One `SIOCETHTOOL` request with a `struct ethtool_value` on interface `name` of the calling
/// thread's namespace; the value the kernel leaves in it.
fn ethtool_value(name: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut value = EthtoolValue { cmd, data };
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (dst, src) in ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let mut ifr = libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&mut value as *mut EthtoolValue).cast(),
        },
    };
    // SAFETY: `ifr` is a valid ifreq naming the interface, whose data pointer points at
    // `value`, a live `struct ethtool_value` the kernel reads and writes for these two
    // commands; both outlive the call, and `sock` is an open socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turn transmit checksum offload off on `name` (`ethtool -K NAME tx off`): kxdp's copy-mode
/// AF_XDP forwards frames as they are, and a veth with it on hands over TCP and UDP packets
/// whose checksum holds only the pseudo-header sum, which the receiver then drops.
pub fn tx_checksum_off(name: &str) -> Result<(), String> {
    ethtool_value(name, ETHTOOL_STXCSUM, 0)
        .map(|_| ())
        .map_err(|e| format!("turning transmit checksum offload off on {name}: {e}"))
}

/// Whether transmit checksum offload is on for `name`.
pub fn tx_checksum(name: &str) -> Result<bool, String> {
    ethtool_value(name, ETHTOOL_GTXCSUM, 0)
        .map(|v| v != 0)
        .map_err(|e| format!("reading the transmit checksum offload of {name}: {e}"))
}
