//! The node's links as kxdp sets them up, in one place for the two programs that make them:
//! the CNI plugin (a pod's veth pair) and the agent (the node's host veth pair).
//!
//! - [`create_veth`]: a veth pair in one `RTM_NEWLINK` request, as `ip link add NAME type veth
//!   peer name PEER` makes it, the peer's settings (name, MAC, MTU, namespace) in the same
//!   request, so no half-named interface ever appears;
//! - [`errno`]: the errno of a kernel refusal, for the callers' messages.
//!
//! Netlink rather than running `ip`: neither program needs it on the node (some node images
//! ship without it), and a failure comes back as an errno the caller can name. Every request
//! works in the network namespace of the thread that opened the connection.

use netlink_packet_route::link::{InfoData, InfoVeth, LinkMessage};
use rtnetlink::{Handle, LinkVeth};

/// The errno of a kernel refusal, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Create veth `name` at `mtu` in the connection's namespace, with its peer as `peer` describes
/// it (built with `rtnetlink::LinkMessageBuilder::<LinkUnspec>`: at least its name; its MAC,
/// MTU and namespace where it is to have them).
pub async fn create_veth(
    handle: &Handle,
    name: &str,
    mtu: u32,
    peer: LinkMessage,
) -> Result<(), rtnetlink::Error> {
    let message = LinkVeth::new(name, "")
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle.link().add(message).execute().await
}
