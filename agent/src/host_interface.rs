//! The node's host veth pair, which the agent creates and owns: kxdp's end (`--host-interface`,
//! e.g. `host0`) and the kernel's end ([`KERNEL_END`], `kxdp0`, a fixed name as Cilium's
//! `cilium_host` is), with the cluster's pod CIDR and the service CIDR routed to the kernel's
//! end, so the node's own processes reach pods and services through kxdp.
//!
//! [`ensure`] is idempotent and runs at every start, before the dataplane attaches:
//! - no link of that name: the pair is made in one request (both ends at the pod MTU), each
//!   end marked with the alias [`ALIAS`] (`IFLA_IFALIAS`, shown by `ip link`), which is how
//!   kxdp tells its own pair from one someone else made (the kernel ignores an alias in the
//!   creating request, so it is set right after, before either end goes up);
//! - a veth of that name whose peer is in this namespace: adopted as it is (same links, no
//!   flap), marked or not: a pair an installer made before kxdp did is used, not claimed;
//! - anything else of that name (not a veth, or a veth whose peer is in another namespace,
//!   a pod's say): refused, naming the interface, before anything is changed.
//!
//! Then the settings are re-asserted on both ends, each only where it differs: the MTU and
//! up (offloads stay as the kernel makes them: kxdp takes the partial checksums a veth with
//! transmit checksum offload hands over); and in the main table a link-scope route for each CIDR out of the kernel's end, replaced
//! where it is missing or goes elsewhere (`ip route replace CIDR dev kxdp0`).
//!
//! [`remove`] deletes every pair marked as kxdp's (its routes go with it), for `kxdp
//! uninstall` ([`crate::uninstall`]).

use std::net::Ipv4Addr;

use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_links::errno;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::nodefacts::{in_main_table, Link, NodeFactsError, NodeNet};

/// The kernel's end of the pair kxdp creates.
pub const KERNEL_END: &str = "kxdp0";

/// The alias both ends of a pair kxdp created carry.
pub const ALIAS: &str = "kxdp host interface";

/// Why the host pair could not be set up or removed; each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum HostInterfaceError {
    /// An interface of that name exists and is not a veth.
    #[error(
        "{0} exists and is not a veth: kxdp makes its host veth pair under this name; remove \
         the interface or name another"
    )]
    NotVeth(String),
    /// A veth of that name exists whose peer is not in this namespace (a pod's, say).
    #[error(
        "{0} is a veth whose peer is not in this network namespace (a pod's?): the host \
         interface pairs kxdp with this node's own stack; name another"
    )]
    PeerElsewhere(String),
    /// Reading the node's links failed.
    #[error(transparent)]
    Read(#[from] NodeFactsError),
    /// The kernel refused a change.
    #[error("{what}: {reason}")]
    Refused {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
}

fn refused(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> HostInterfaceError {
    let what = what.into();
    move |e| HostInterfaceError::Refused {
        what,
        reason: match errno(&e) {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        },
    }
}

/// The pair as [`ensure`] left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPair {
    /// kxdp's end.
    pub kxdp: Link,
    /// The kernel's end.
    pub kernel: Link,
    /// Whether this call created it.
    pub created: bool,
    /// Whether it carries kxdp's mark ([`ALIAS`]): `kxdp uninstall` removes it.
    pub ours: bool,
}

/// Make sure the host pair `name` exists with both ends at `mtu`, without transmit checksum
/// offload, up, and `routes` going to its kernel end (see the module documentation).
pub async fn ensure(
    net: &NodeNet,
    name: &str,
    mtu: u32,
    routes: &[Ipv4Cidr],
) -> Result<HostPair, HostInterfaceError> {
    let (kxdp, created) = match net.find_link(name).await? {
        Some(link) => (link, false),
        None => (create(net, name, mtu).await?, true),
    };
    if !kxdp.veth {
        return Err(HostInterfaceError::NotVeth(name.into()));
    }
    let peer = match kxdp.peer {
        Some(peer) if !kxdp.peer_elsewhere => net.link_by_index(peer).await?,
        _ => None,
    };
    let kernel = peer
        .filter(|p| p.peer == Some(kxdp.index) && !p.peer_elsewhere)
        .ok_or_else(|| HostInterfaceError::PeerElsewhere(name.into()))?;
    for end in [&kxdp, &kernel] {
        settle(net, end, mtu).await?;
    }
    for cidr in routes {
        route(net, &kernel, *cidr).await?;
    }
    let ours = kxdp.alias.as_deref() == Some(ALIAS);
    Ok(HostPair {
        kxdp: net.link(name).await?,
        kernel: net.link(&kernel.name).await?,
        created,
        ours,
    })
}

/// Create the pair `name` / [`KERNEL_END`] at `mtu`, marked as kxdp's; kxdp's end as it is then.
async fn create(net: &NodeNet, name: &str, mtu: u32) -> Result<Link, HostInterfaceError> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(KERNEL_END)
        .mtu(mtu)
        .build();
    kxdp_links::create_veth(net.handle(), name, mtu, peer)
        .await
        .map_err(refused(format!("creating veth {name} (peer {KERNEL_END})")))?;
    for end in [name, KERNEL_END] {
        let link = net.link(end).await?;
        set(
            net,
            LinkUnspec::new_with_index(link.index).alias(ALIAS),
            format!("marking {end} as kxdp's (alias {ALIAS:?})"),
        )
        .await?;
    }
    tracing::info!(
        interface = name,
        kernel_end = KERNEL_END,
        "host veth pair created"
    );
    Ok(net.link(name).await?)
}

/// Send one change of a link.
async fn set(
    net: &NodeNet,
    change: LinkMessageBuilder<LinkUnspec>,
    what: String,
) -> Result<(), HostInterfaceError> {
    net.handle()
        .link()
        .set(change.build())
        .execute()
        .await
        .map_err(refused(what))
}

/// One end's MTU and state, each changed only where it differs.
async fn settle(net: &NodeNet, end: &Link, mtu: u32) -> Result<(), HostInterfaceError> {
    if end.mtu != mtu {
        let change = LinkUnspec::new_with_index(end.index).mtu(mtu);
        set(net, change, format!("setting {} to MTU {mtu}", end.name)).await?;
    }
    if !end.up {
        let change = LinkUnspec::new_with_index(end.index).up();
        set(net, change, format!("setting {} up", end.name)).await?;
    }
    Ok(())
}

/// Whether main-table route `r` sends `cidr` straight out of link `oif`.
fn routes_to(r: &RouteMessage, cidr: Ipv4Cidr, oif: u32) -> bool {
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    in_main_table(r)
        && r.header.destination_prefix_length == cidr.prefix_len()
        && dst.unwrap_or(Ipv4Addr::UNSPECIFIED) == cidr.network().address()
        && r.attributes.contains(&RouteAttribute::Oif(oif))
        && !r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_)))
}

/// Route `cidr` out of `kernel` unless it already goes there.
async fn route(net: &NodeNet, kernel: &Link, cidr: Ipv4Cidr) -> Result<(), HostInterfaceError> {
    let routes = net.ipv4_routes().await?;
    if routes.iter().any(|r| routes_to(r, cidr, kernel.index)) {
        return Ok(());
    }
    let network = cidr.network();
    let message = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(network.address(), network.prefix_len())
        .output_interface(kernel.index)
        .scope(RouteScope::Link)
        .build();
    net.handle()
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .map_err(refused(format!(
            "routing {network} to {} (ip route replace {network} dev {})",
            kernel.name, kernel.name
        )))?;
    tracing::info!(route = %network, interface = %kernel.name, "kernel route to the host interface set");
    Ok(())
}

/// Delete every veth pair marked as kxdp's host pair (with its routes); the names of the ends
/// removed, sorted.
pub async fn remove(net: &NodeNet) -> Result<Vec<String>, HostInterfaceError> {
    let mut removed = Vec::new();
    for link in owned(net).await? {
        if removed.contains(&link.name) {
            continue;
        }
        // Deleting one end deletes both: name the peer while it is there.
        let peer = match link.peer {
            Some(index) if !link.peer_elsewhere => net.link_by_index(index).await?,
            _ => None,
        };
        match net.handle().link().del(link.index).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ENODEV) => continue,
            Err(e) => return Err(refused(format!("deleting {}", link.name))(e)),
        }
        removed.push(link.name);
        removed.extend(peer.map(|p| p.name));
    }
    removed.sort();
    Ok(removed)
}

/// The links marked as kxdp's host pair.
pub async fn owned(net: &NodeNet) -> Result<Vec<Link>, HostInterfaceError> {
    Ok(net
        .links()
        .await?
        .into_iter()
        .filter(|l| l.veth && l.alias.as_deref() == Some(ALIAS))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_message(dst: Ipv4Addr, len: u8, oif: u32, gateway: Option<Ipv4Addr>) -> RouteMessage {
        let mut r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .output_interface(oif)
            .build();
        if let Some(gw) = gateway {
            r.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        r
    }

    #[test]
    fn only_a_direct_main_table_route_of_the_same_prefix_counts() {
        let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12);
        let net = Ipv4Addr::new(10, 96, 0, 0);
        assert!(routes_to(&route_message(net, 12, 7, None), cidr, 7));
        // Another interface, another prefix, a gateway, another table: to be replaced.
        assert!(!routes_to(&route_message(net, 12, 8, None), cidr, 7));
        assert!(!routes_to(&route_message(net, 16, 7, None), cidr, 7));
        let via = Some(Ipv4Addr::new(198, 18, 0, 1));
        assert!(!routes_to(&route_message(net, 12, 7, via), cidr, 7));
        let mut other_table = route_message(net, 12, 7, None);
        other_table.header.table = 100;
        assert!(!routes_to(&other_table, cidr, 7));
        // A CIDR written with host bits is routed by its network.
        let sloppy = Ipv4Cidr::new(Ipv4Addr::new(10, 96, 1, 2), 12);
        assert!(routes_to(&route_message(net, 12, 7, None), sloppy, 7));
    }
}
