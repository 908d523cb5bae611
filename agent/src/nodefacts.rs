//! What the agent reads from the node's kernel: the uplink's MAC, MTU and IPv4 address, the
//! default gateway, and the underlay neighbours the kernel has resolved. All of it is read in
//! the calling thread's network namespace (`getifaddrs`, an ioctl, `/proc/net`), so an agent
//! started with `ip netns exec` or `nsenter --net` sees its node's view.

use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};

use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};

/// An interface as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its MAC address.
    pub mac: EthernetAddress,
    /// Its MTU.
    pub mtu: u16,
    /// Its first IPv4 address with the prefix, if it has one.
    pub ipv4: Option<Ipv4Cidr>,
}

/// Read interface `name`.
pub fn interface(name: &str) -> io::Result<InterfaceInfo> {
    let mut mac = None;
    let mut ipv4 = None;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null element of the list getifaddrs returned, alive until
        // freeifaddrs.
        let entry = unsafe { &*cur };
        cur = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let entry_name = unsafe { CStr::from_ptr(entry.ifa_name) };
        if entry_name.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points at a sockaddr of the list.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        match family {
            libc::AF_PACKET => {
                // SAFETY: an AF_PACKET address is a sockaddr_ll.
                let ll = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
                if ll.sll_halen == 6 {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(&ll.sll_addr[..6]);
                    mac = Some(EthernetAddress(b));
                }
            }
            libc::AF_INET if ipv4.is_none() && !entry.ifa_netmask.is_null() => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let addr = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: its netmask, non-null, is one too.
                let mask = unsafe { &*(entry.ifa_netmask as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                let prefix = u32::from_be(mask.sin_addr.s_addr).count_ones() as u8;
                ipv4 = Some(Ipv4Cidr::new(ip, prefix));
            }
            _ => {}
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once, after the last use of it.
    unsafe { libc::freeifaddrs(list) };
    let mac = mac.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface {name} does not exist (or has no MAC address)"),
        )
    })?;
    Ok(InterfaceInfo {
        mac,
        mtu: mtu(name)?,
        ipv4,
    })
}

/// The name of the other end of veth `name`, which must be in this namespace too (read from
/// `/sys/class/net/<name>/iflink`, the peer's interface index).
pub fn veth_peer(name: &str) -> io::Result<String> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let read = |dev: &str, file: &str| -> io::Result<u32> {
        let path = format!("/sys/class/net/{dev}/{file}");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("interface {dev}: {path}: {e}")))?;
        text.trim()
            .parse()
            .map_err(|_| invalid(format!("interface {dev}: {file} is {text:?}")))
    };
    // An interface whose iflink is its own index has no peer.
    let (index, peer) = (read(name, "ifindex")?, read(name, "iflink")?);
    if peer == index || peer == 0 {
        return Err(invalid(format!(
            "interface {name} is not a veth (it has no peer)"
        )));
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let named = unsafe { libc::if_indextoname(peer, buf.as_mut_ptr()) };
    if named.is_null() {
        return Err(invalid(format!(
            "the peer of {name} (interface {peer}) is not in this network namespace: the host \
             interface pairs kxdp with this node's own stack"
        )));
    }
    // SAFETY: if_indextoname succeeded, so `buf` holds a NUL-terminated name.
    let peer_name = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // The index is the peer's in its own namespace: the interface that has it here is the
    // peer only if it points back.
    if read(&peer_name, "iflink")? != index {
        return Err(invalid(format!(
            "the peer of {name} is not in this network namespace: the host interface pairs \
             kxdp with this node's own stack"
        )));
    }
    Ok(peer_name)
}

fn mtu(name: &str) -> io::Result<u16> {
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming the interface; SIOCGIFMTU fills ifru_mtu.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.clamp(0, i32::from(u16::MAX)) as u16)
}

/// The default IPv4 gateway through `dev`, from the kernel's routing table.
pub fn default_gateway(dev: &str) -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&table, dev)
}

fn parse_default_gateway(table: &str, dev: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (iface, dest, gw, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
        if *iface != dev || *dest != "00000000" || *mask != "00000000" {
            return None;
        }
        // /proc/net/route prints each address as the hex of its native-endian word.
        let gw = u32::from_str_radix(gw, 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// The neighbours the kernel has resolved on `dev` (complete entries of `/proc/net/arp`).
pub fn neighbors(dev: &str) -> Vec<(Ipv4Addr, EthernetAddress)> {
    let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    parse_arp(&table, dev)
}

fn parse_arp(table: &str, dev: &str) -> Vec<(Ipv4Addr, EthernetAddress)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (ip, flags, mac, iface) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
            let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2;
            if *iface != dev || complete == 0 {
                return None;
            }
            Some((ip.parse().ok()?, kxdp_control::model::parse_mac(mac)?))
        })
        .collect()
}

/// Have the kernel resolve `ip`'s MAC address: send it one empty datagram to the discard
/// port, which makes the kernel ask with ARP (the answer then shows in [`neighbors`]).
pub fn solicit(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_is_read_from_the_kernel_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     uplink\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     uplink\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(table, "uplink"),
            Some(Ipv4Addr::new(198, 18, 0, 1))
        );
        assert_eq!(parse_default_gateway(table, "eth0"), None);
    }

    #[test]
    fn only_complete_arp_entries_of_the_interface_count() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     198.18.0.11      0x1         0x2         02:00:c6:12:00:0b     *        uplink\n\
                     198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        uplink\n\
                     198.18.0.13      0x1         0x2         02:00:c6:12:00:0d     *        eth9\n";
        assert_eq!(
            parse_arp(table, "uplink"),
            vec![(
                Ipv4Addr::new(198, 18, 0, 11),
                EthernetAddress([2, 0, 0xc6, 0x12, 0, 0x0b])
            )]
        );
    }

    #[test]
    fn loopback_is_read_and_a_missing_interface_is_named() {
        let lo = interface("lo").unwrap();
        assert!(lo.mtu > 0);
        let err = interface("nosuchif0").unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }
}
