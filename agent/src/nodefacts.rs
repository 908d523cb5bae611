//! What the agent reads from the node's kernel, over rtnetlink: its links (index, name, MAC,
//! MTU, whether up, a veth's peer), the uplink's IPv4 address, the default gateway and the
//! underlay neighbours; and, from [`watch`], the kernel's notifications when links and
//! neighbours change, so the agent reacts instead of polling.
//!
//! A netlink socket belongs to the network namespace of the thread that opens it: an agent
//! started with `ip netns exec` or `nsenter --net` sees its node's view. Each connection's I/O
//! runs as a task on the calling tokio runtime, so both [`NodeNet::connect`] and [`watch`]
//! must be called from inside one.
//!
//! Neighbours are resolved by the kernel's own machinery: [`NodeNet::solicit`] sends
//! `RTM_NEWNEIGH` with `NTF_USE`, which creates the entry if needed and makes the kernel send
//! its ARP request on the given interface (as a packet to that address would), and the answer
//! shows up as a neighbour notification.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::{Stream, StreamExt, TryStreamExt};
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_links::errno;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

/// Why a node fact could not be read. Each names the interface and what is missing.
#[derive(Debug, thiserror::Error)]
pub enum NodeFactsError {
    /// No interface of that name in this network namespace.
    #[error("interface {0} does not exist (in this network namespace)")]
    NoInterface(String),
    /// The interface has no Ethernet address.
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    /// The interface has no peer.
    #[error("interface {0} is not a veth (it has no peer)")]
    NotVeth(String),
    /// The veth's other end is in another namespace.
    #[error(
        "the peer of {0} is not in this network namespace: the host interface pairs kxdp \
         with this node's own stack"
    )]
    PeerElsewhere(String),
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's or the library's answer.
        source: rtnetlink::Error,
    },
}

pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NodeFactsError {
    let what = what.into();
    move |source| NodeFactsError::Netlink { what, source }
}

/// A link as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MAC address, if it has an Ethernet one.
    pub mac: Option<EthernetAddress>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
    /// The index of the link it is tied to (`IFLA_LINK`: a veth's peer), if another.
    pub peer: Option<u32>,
    /// Whether that link is in another network namespace (`IFLA_LINK_NETNSID`).
    pub peer_elsewhere: bool,
    /// Whether it is a veth (`IFLA_INFO_KIND` "veth").
    pub veth: bool,
    /// Its alias (`IFLA_IFALIAS`), if it has one.
    pub alias: Option<String>,
}

impl Link {
    /// Read a link message (`RTM_NEWLINK`); `None` if it has no name.
    pub fn from_message(m: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            peer: None,
            peer_elsewhere: false,
            veth: false,
            alias: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) if b.len() == 6 => {
                    link.mac = Some(EthernetAddress::from_bytes(b));
                }
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Link(peer) if *peer != 0 && *peer != m.header.index => {
                    link.peer = Some(*peer);
                }
                LinkAttribute::LinkNetNsId(_) => link.peer_elsewhere = true,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    link.veth |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

/// An interface as the start-up reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its index.
    pub index: u32,
    /// Its MAC address.
    pub mac: EthernetAddress,
    /// Its MTU.
    pub mtu: u16,
    /// Its first (primary) IPv4 address with the prefix, if it has one.
    pub ipv4: Option<Ipv4Cidr>,
}

/// A netlink connection for requests, in the calling thread's network namespace.
#[derive(Clone, Debug)]
pub struct NodeNet {
    handle: Handle,
}

impl NodeNet {
    /// Open it; its I/O runs as a task on the current tokio runtime.
    pub fn connect() -> Result<NodeNet, NodeFactsError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NodeFactsError::Socket)?;
        tokio::spawn(connection);
        Ok(NodeNet { handle })
    }

    /// The connection, for the modules that change the node's links ([`crate::host_interface`]).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Link `name`, if there is one.
    pub async fn find_link(&self, name: &str) -> Result<Option<Link>, NodeFactsError> {
        match self.link(name).await {
            Ok(link) => Ok(Some(link)),
            Err(NodeFactsError::NoInterface(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with index `index`, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NodeFactsError> {
        let mut found = self.handle.link().get().match_index(index).execute();
        match found.try_next().await {
            Ok(m) => Ok(m.as_ref().and_then(Link::from_message)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(netlink(format!("reading interface {index}"))(e)),
        }
    }

    /// Link `name`.
    pub async fn link(&self, name: &str) -> Result<Link, NodeFactsError> {
        let mut found = self.handle.link().get().match_name(name).execute();
        match found.try_next().await {
            Ok(Some(m)) => {
                Link::from_message(&m).ok_or_else(|| NodeFactsError::NoInterface(name.into()))
            }
            Ok(None) => Err(NodeFactsError::NoInterface(name.into())),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(NodeFactsError::NoInterface(name.into()))
            }
            Err(e) => Err(netlink(format!("reading interface {name}"))(e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NodeFactsError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing the interfaces"))?;
        Ok(messages.iter().filter_map(Link::from_message).collect())
    }

    /// Interface `name`: index, MAC, MTU and first IPv4 address.
    pub async fn interface(&self, name: &str) -> Result<InterfaceInfo, NodeFactsError> {
        let link = self.link(name).await?;
        let mac = link.mac.ok_or_else(|| NodeFactsError::NoMac(name.into()))?;
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("reading the addresses of {name}")))?;
        Ok(InterfaceInfo {
            index: link.index,
            mac,
            mtu: link.mtu.min(u32::from(u16::MAX)) as u16,
            ipv4: first_ipv4(&addresses, link.index),
        })
    }

    /// Every IPv4 address of the namespace's interfaces, loopback's left out (`--nodeport-
    /// addresses` picks from these, as kube-proxy picks from every interface's).
    pub async fn ipv4_addresses(&self) -> Result<Vec<Ipv4Addr>, NodeFactsError> {
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing the addresses"))?;
        Ok(ipv4_addresses(&addresses))
    }

    /// The name of the other end of veth `name`, which must be in this namespace too.
    pub async fn veth_peer(&self, name: &str) -> Result<String, NodeFactsError> {
        let link = self.link(name).await?;
        let Some(peer) = link.peer else {
            return Err(NodeFactsError::NotVeth(name.into()));
        };
        if link.peer_elsewhere {
            return Err(NodeFactsError::PeerElsewhere(name.into()));
        }
        match self.link_by_index(peer).await? {
            Some(p) if p.peer == Some(link.index) && !p.peer_elsewhere => Ok(p.name),
            _ => Err(NodeFactsError::PeerElsewhere(name.into())),
        }
    }

    /// The default IPv4 gateway through interface `index`, from the main routing table.
    pub async fn default_gateway(&self, index: u32) -> Result<Option<Ipv4Addr>, NodeFactsError> {
        Ok(default_gateway(&self.ipv4_routes().await?, index))
    }

    /// Every IPv4 route, of every table.
    pub async fn ipv4_routes(&self) -> Result<Vec<RouteMessage>, NodeFactsError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(netlink("reading the IPv4 routes"))
    }

    /// The neighbours the kernel has resolved on interface `index`.
    pub async fn neighbors(
        &self,
        index: u32,
    ) -> Result<BTreeMap<Ipv4Addr, EthernetAddress>, NodeFactsError> {
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("reading the neighbour table"))?;
        Ok(entries
            .iter()
            .filter_map(Neighbor::from_message)
            .filter(|n| n.ifindex == index)
            .filter_map(|n| Some((n.ip, n.mac?)))
            .collect())
    }

    /// Have the kernel resolve `ip` on interface `index`: `RTM_NEWNEIGH` with `NTF_USE`
    /// creates the entry if there is none and sends the ARP request, on that interface only.
    pub async fn solicit(&self, index: u32, ip: Ipv4Addr) -> Result<(), NodeFactsError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("resolving {ip} on interface {index}")))
    }
}

/// The first IPv4 address of interface `index` among `addresses`, primary ones first.
fn first_ipv4(addresses: &[AddressMessage], index: u32) -> Option<Ipv4Cidr> {
    addresses
        .iter()
        .filter(|a| a.header.index == index && a.header.family == AddressFamily::Inet)
        .min_by_key(|a| a.header.flags.contains(AddressHeaderFlags::Secondary))
        .and_then(|a| Some(Ipv4Cidr::new(own_ipv4(a)?, a.header.prefix_len)))
}

/// An address message's own IPv4 address: IFA_LOCAL is the interface's own address
/// (IFA_ADDRESS is the far end's on a point-to-point link), else IFA_ADDRESS.
fn own_ipv4(a: &AddressMessage) -> Option<Ipv4Addr> {
    let local = a.attributes.iter().find_map(|at| match at {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = a.attributes.iter().find_map(|at| match at {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    local.or(address)
}

/// Whether route `r` is in the main table (`RTA_TABLE` where the header's byte cannot hold
/// the number).
pub fn in_main_table(r: &RouteMessage) -> bool {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// Each interface's own IPv4 addresses (`IFA_LOCAL`, else `IFA_ADDRESS`), in the kernel's
/// order, without loopback ones.
fn ipv4_addresses(addresses: &[AddressMessage]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for a in addresses
        .iter()
        .filter(|a| a.header.family == AddressFamily::Inet)
    {
        if let Some(ip) = own_ipv4(a).filter(|ip| !ip.is_loopback()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The gateway of the main table's IPv4 default route out of interface `index`.
fn default_gateway(routes: &[RouteMessage], index: u32) -> Option<Ipv4Addr> {
    routes.iter().find_map(|r| {
        if r.header.address_family != AddressFamily::Inet
            || r.header.destination_prefix_length != 0
            || !in_main_table(r)
        {
            return None;
        }
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        if oif != Some(index) {
            return None;
        }
        r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
            _ => None,
        })
    })
}

/// An IPv4 neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The interface it is on.
    pub ifindex: u32,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC address while the entry is usable (reachable, stale, being confirmed, or
    /// permanent: the kernel's `NUD_VALID`, what `/proc/net/arp` calls complete); `None`
    /// while it is being resolved or has failed.
    pub mac: Option<EthernetAddress>,
}

impl Neighbor {
    /// Read a neighbour message (`RTM_NEWNEIGH`); `None` unless it is an IPv4 entry.
    pub fn from_message(m: &NeighbourMessage) -> Option<Neighbor> {
        if m.header.family != AddressFamily::Inet {
            return None;
        }
        let ip = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })?;
        let valid = matches!(
            m.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        );
        let mac = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                Some(EthernetAddress::from_bytes(b))
            }
            _ => None,
        });
        Some(Neighbor {
            ifindex: m.header.ifindex,
            ip,
            mac: mac.filter(|_| valid),
        })
    }
}

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A link appeared or changed (`RTM_NEWLINK`).
    Link(Link),
    /// A link went away (`RTM_DELLINK`).
    LinkGone {
        /// Its index.
        index: u32,
        /// Its name.
        name: String,
    },
    /// A neighbour entry appeared or changed (`RTM_NEWNEIGH`).
    Neighbor(Neighbor),
    /// A neighbour entry went away (`RTM_DELNEIGH`).
    NeighborGone {
        /// The interface it was on.
        ifindex: u32,
        /// Its address.
        ip: Ipv4Addr,
    },
    /// The kernel dropped notifications: the socket's buffer was full (`ENOBUFS`). The
    /// socket still works; whoever follows the tables must read them whole again.
    Lost,
}

impl NodeEvent {
    /// Read a notification; `None` for what the agent does not follow.
    pub fn from_message(m: &RouteNetlinkMessage) -> Option<NodeEvent> {
        match m {
            RouteNetlinkMessage::NewLink(l) => Link::from_message(l).map(NodeEvent::Link),
            RouteNetlinkMessage::DelLink(l) => Link::from_message(l).map(|l| NodeEvent::LinkGone {
                index: l.index,
                name: l.name,
            }),
            RouteNetlinkMessage::NewNeighbour(n) => {
                Neighbor::from_message(n).map(NodeEvent::Neighbor)
            }
            RouteNetlinkMessage::DelNeighbour(n) => {
                Neighbor::from_message(n).map(|n| NodeEvent::NeighborGone {
                    ifindex: n.ifindex,
                    ip: n.ip,
                })
            }
            _ => None,
        }
    }
}

/// How much the kernel may queue for the watcher before it drops notifications (it then
/// tells the socket ENOBUFS, and the stream ends; the agent resyncs and watches again).
const WATCH_BUFFER: usize = 4 << 20;

/// Subscribe to link and neighbour notifications (`RTNLGRP_LINK`, `RTNLGRP_NEIGH`) in the
/// calling thread's network namespace. Subscribe before reading the tables, so no change
/// falls between the two. Notifications the kernel had to drop come as [`NodeEvent::Lost`];
/// the stream ends if the socket fails.
pub fn watch() -> Result<impl Stream<Item = NodeEvent> + Unpin, NodeFactsError> {
    watch_with_buffer(WATCH_BUFFER)
}

/// [`watch`] with a receive buffer of `bytes`: past `net.core.rmem_max` when the agent may
/// (`CAP_NET_ADMIN`, `SO_RCVBUFFORCE`), else up to it.
pub fn watch_with_buffer(
    bytes: usize,
) -> Result<impl Stream<Item = NodeEvent> + Unpin, NodeFactsError> {
    let (mut connection, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Neigh])
            .map_err(NodeFactsError::Socket)?;
    let socket = connection.socket_mut().socket_mut();
    if nix::sys::socket::setsockopt(&*socket, nix::sys::socket::sockopt::RcvBufForce, &bytes)
        .is_err()
    {
        // Best effort: the default (about 200 KiB) holds a few thousand notifications.
        let _ = socket.set_rx_buf_sz(bytes);
    }
    tokio::spawn(connection);
    Ok(messages.filter_map(|(m, _)| {
        std::future::ready(match m.payload {
            NetlinkPayload::InnerMessage(inner) => NodeEvent::from_message(&inner),
            NetlinkPayload::Overrun(_) => Some(NodeEvent::Lost),
            _ => None,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{InfoKind, LinkInfo};
    use netlink_packet_route::neighbour::NeighbourHeader;
    use netlink_packet_route::route::RouteType;

    fn link_message(index: u32, name: &str, up: bool) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(vec![2, 0, 0xc6, 0x12, 0, 0x0a]),
            LinkAttribute::Mtu(1500),
        ];
        m
    }

    #[test]
    fn a_veth_link_is_read_with_its_peer() {
        let mut m = link_message(7, "host0", true);
        m.attributes.push(LinkAttribute::Link(8));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Veth,
            )]));
        let l = Link::from_message(&m).unwrap();
        assert_eq!(
            l,
            Link {
                index: 7,
                name: "host0".into(),
                mac: Some(EthernetAddress([2, 0, 0xc6, 0x12, 0, 0x0a])),
                mtu: 1500,
                up: true,
                peer: Some(8),
                peer_elsewhere: false,
                veth: true,
                alias: None,
            }
        );
        // IFLA_LINK naming itself (as a plain device's does) is no peer.
        let mut plain = link_message(3, "uplink", false);
        plain.attributes.push(LinkAttribute::Link(3));
        let l = Link::from_message(&plain).unwrap();
        assert_eq!((l.peer, l.up), (None, false));
        let mut elsewhere = m.clone();
        elsewhere.attributes.push(LinkAttribute::LinkNetNsId(0));
        assert!(Link::from_message(&elsewhere).unwrap().peer_elsewhere);
    }

    fn route(dst_len: u8, table: u8, oif: u32, gw: Option<Ipv4Addr>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.destination_prefix_length = dst_len;
        r.header.table = table;
        r.header.kind = RouteType::Unicast;
        r.attributes.push(RouteAttribute::Oif(oif));
        if let Some(gw) = gw {
            r.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        r
    }

    #[test]
    fn the_default_route_of_the_main_table_through_the_uplink_is_the_gateway() {
        let gw = Ipv4Addr::new(198, 18, 0, 1);
        let routes = [
            route(24, RouteHeader::RT_TABLE_MAIN, 2, None),
            route(0, 100, 2, Some(Ipv4Addr::new(198, 18, 0, 9))),
            route(
                0,
                RouteHeader::RT_TABLE_MAIN,
                5,
                Some(Ipv4Addr::new(10, 0, 0, 1)),
            ),
            route(0, RouteHeader::RT_TABLE_MAIN, 2, Some(gw)),
        ];
        assert_eq!(default_gateway(&routes, 2), Some(gw));
        assert_eq!(default_gateway(&routes, 9), None);
    }

    fn neighbour(state: NeighbourState, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: 2,
            state,
            ..NeighbourHeader::default()
        };
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        if let Some(mac) = mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        m
    }

    #[test]
    fn only_usable_neighbour_entries_have_a_mac() {
        let ip = Ipv4Addr::new(198, 18, 0, 11);
        let mac = [2, 0, 0xc6, 0x12, 0, 0x0b];
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            let n = Neighbor::from_message(&neighbour(state, ip, Some(mac))).unwrap();
            assert_eq!(n.mac, Some(EthernetAddress(mac)), "{state:?}");
        }
        for state in [NeighbourState::Incomplete, NeighbourState::Failed] {
            let n = Neighbor::from_message(&neighbour(state, ip, Some(mac))).unwrap();
            assert_eq!(n.mac, None, "{state:?}");
        }
        let n = Neighbor::from_message(&neighbour(NeighbourState::Incomplete, ip, None)).unwrap();
        assert_eq!((n.ifindex, n.ip, n.mac), (2, ip, None));
    }

    #[test]
    fn notifications_become_events() {
        let new = RouteNetlinkMessage::NewLink(link_message(9, "kx0", true));
        assert!(matches!(NodeEvent::from_message(&new), Some(NodeEvent::Link(l)) if l.index == 9));
        let gone = RouteNetlinkMessage::DelLink(link_message(9, "kx0", false));
        assert_eq!(
            NodeEvent::from_message(&gone),
            Some(NodeEvent::LinkGone {
                index: 9,
                name: "kx0".into()
            })
        );
        let ip = Ipv4Addr::new(198, 18, 0, 11);
        let del = RouteNetlinkMessage::DelNeighbour(neighbour(NeighbourState::Stale, ip, None));
        assert_eq!(
            NodeEvent::from_message(&del),
            Some(NodeEvent::NeighborGone { ifindex: 2, ip })
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn loopback_is_read_and_a_missing_interface_is_named() {
        let net = NodeNet::connect().unwrap();
        let lo = net.link("lo").await.unwrap();
        assert!(lo.mtu > 0 && lo.index > 0);
        assert_eq!(net.link_by_index(lo.index).await.unwrap(), Some(lo.clone()));
        assert!(net.links().await.unwrap().contains(&lo));
        let err = net.interface("nosuchif0").await.unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
        let err = net.veth_peer("lo").await.unwrap_err();
        assert!(err.to_string().contains("lo is not a veth"), "{err}");
    }
}
