//! The pod's veth pair, as the kernel sees it: created, checked and deleted over rtnetlink;
//! the requests the agent makes too (its host veth pair) live in `kxdp_links`, and this module adds what only
//! the plugin does: the pod's namespace, its address and default route, and CHECK's reads.
//!
//! Netlink rather than running `ip` and `ethtool` as the test bed does: the plugin then needs
//! no tools on the node (some node images ship neither), a request's failure comes back as
//! an errno we can name, and CHECK reads typed attributes instead of parsing `ip`'s text.
//!
//! A netlink socket works in the network namespace of the thread that opens it, so
//! [`in_netns`] runs a closure on a thread of its own that has joined the pod's namespace
//! (`setns(2)`), and [`Net`] opens its socket there. The plugin's own thread stays in the
//! node's namespace.
//!
//! The pair is made in one request, as `ip link add NAME type veth peer name IFNAME netns
//! POD` makes it: the node's end in the node's namespace, the pod's end directly in the pod's
//! namespace under its final name, with its MAC and both ends' MTU, so no half-named
//! interface ever appears in the node's namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::Path;

use futures_util::TryStreamExt as _;
use ipnet::Ipv4Net;
use kxdp_links::errno;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// A link as this plugin reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its MAC, if it has one.
    pub mac: Option<[u8; 6]>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is up (`IFF_UP`).
    pub up: bool,
    /// Whether it is a veth.
    pub veth: bool,
    /// The index of its peer (in whichever namespace the peer is).
    pub peer: Option<u32>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            veth: false,
            peer: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut mac = [0; 6];
                    mac.copy_from_slice(b);
                    link.mac = Some(mac);
                }
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Link(peer) => link.peer = Some(*peer),
                LinkAttribute::LinkInfo(infos) => {
                    link.veth |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        link
    }
}

/// A MAC as `0a:58:0a:f4:01:02`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What was asked and the kernel's answer.
fn refused(what: String) -> impl FnOnce(rtnetlink::Error) -> String {
    move |e| match errno(&e) {
        Some(n) => format!("{what}: {}", std::io::Error::from_raw_os_error(n)),
        None => format!("{what}: {e}"),
    }
}

/// A netlink connection in the calling thread's network namespace, with a runtime of its own
/// to drive it (the plugin is otherwise synchronous).
#[derive(Debug)]
pub struct Net {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Net {
    /// Open it in the calling thread's namespace.
    pub fn connect() -> Result<Net, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("starting the netlink runtime: {e}"))?;
        let handle = runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()
                .map_err(|e| format!("opening a netlink socket: {e}"))?;
            tokio::spawn(connection);
            Ok::<_, String>(handle)
        })?;
        Ok(Net { runtime, handle })
    }

    /// Link `name`, if there is one.
    pub fn link(&self, name: &str) -> Result<Option<Link>, String> {
        self.runtime.block_on(async {
            let mut found = self.handle.link().get().match_name(name).execute();
            match found.try_next().await {
                Ok(m) => Ok(m.as_ref().map(Link::from_message)),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
                Err(e) => Err(refused(format!("reading interface {name}"))(e)),
            }
        })
    }

    /// Delete link `index`; a link already gone is not an error.
    pub fn delete(&self, index: u32) -> Result<(), String> {
        self.runtime.block_on(async {
            match self.handle.link().del(index).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
                Err(e) => Err(refused(format!("deleting interface {index}"))(e)),
            }
        })
    }

    /// Create veth `host` in this namespace, its peer `ifname` (with `mac`) in the namespace
    /// `pod_ns` is open on, both at `mtu`.
    pub fn create_veth(
        &self,
        host: &str,
        ifname: &str,
        mac: [u8; 6],
        mtu: u16,
        pod_ns: &File,
    ) -> Result<(), String> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ifname)
            .address(mac.to_vec())
            .mtu(u32::from(mtu))
            .setns_by_fd(pod_ns.as_raw_fd())
            .build();
        self.runtime.block_on(async {
            kxdp_links::create_veth(&self.handle, host, u32::from(mtu), peer)
                .await
                .map_err(refused(format!(
                    "creating veth {host} (peer {ifname} in the pod's namespace)"
                )))
        })
    }

    /// Set link `index`'s (named `name`) alias (`IFLA_IFALIAS`) to `alias`.
    pub fn set_alias(&self, index: u32, name: &str, alias: &str) -> Result<(), String> {
        self.runtime.block_on(async {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).alias(alias).build())
                .execute()
                .await
                .map_err(refused(format!("setting {name}'s alias to {alias:?}")))
        })
    }

    /// Bring link `index` (named `name`) up.
    pub fn up(&self, index: u32, name: &str) -> Result<(), String> {
        self.runtime.block_on(async {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(refused(format!("setting {name} up")))
        })
    }

    /// Give link `index` (named `name`) `address`.
    pub fn add_address(&self, index: u32, name: &str, address: Ipv4Net) -> Result<(), String> {
        self.runtime.block_on(async {
            self.handle
                .address()
                .add(index, IpAddr::V4(address.addr()), address.prefix_len())
                .execute()
                .await
                .map_err(refused(format!("adding {address} to {name}")))
        })
    }

    /// The IPv4 addresses of link `index`.
    pub fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, String> {
        self.runtime.block_on(async {
            let messages: Vec<AddressMessage> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(refused(format!(
                    "reading the addresses of interface {index}"
                )))?;
            Ok(messages
                .iter()
                .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
                .filter_map(|m| {
                    let ip = m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    Ipv4Net::new(ip, m.header.prefix_len).ok()
                })
                .collect())
        })
    }

    /// Add the default route via `gateway` out of link `index` (named `name`).
    pub fn add_default_route(
        &self,
        index: u32,
        name: &str,
        gateway: Ipv4Addr,
    ) -> Result<(), String> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.runtime.block_on(async {
            self.handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(refused(format!(
                    "adding the default route via {gateway} dev {name}"
                )))
        })
    }

    /// The gateways of the main table's IPv4 default routes out of link `index`.
    pub fn default_gateways(&self, index: u32) -> Result<Vec<Ipv4Addr>, String> {
        self.runtime.block_on(async {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .map_err(refused("reading the IPv4 routes".into()))?;
            Ok(routes
                .iter()
                // The main table's number fits the header's byte: no RTA_TABLE to read.
                .filter(|r| {
                    r.header.destination_prefix_length == 0
                        && r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.attributes.contains(&RouteAttribute::Oif(index))
                })
                .filter_map(|r| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
                        _ => None,
                    })
                })
                .collect())
        })
    }
}

/// Run `f` on a thread of its own inside the network namespace at `path` (a `CNI_NETNS`).
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the pod's network namespace: {e}"))?;
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Open the network namespace at `path`, checking that it is one.
pub fn open_netns(path: &Path) -> Result<File, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // A network namespace file lives on nsfs; anything else (a plain file, a typo'd
    // folder) would make setns fail later with a less telling EINVAL.
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| format!("{}: {e}", path.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(format!("{} is not a network namespace", path.display()));
    }
    Ok(file)
}
