//! `kxdp-cni`, the CNI plugin of a kxdp node (CNI spec 1.1.0; 0.4.0 and 1.0.0 configurations
//! accepted). It attaches a pod as the agent serves pods: a veth pair whose node end is named
//! for the pod (`kx` and 12 hex digits, [`kxdp_control::compile::pod_interface_name`]), the
//! pod's end with the MAC derived from its address and the pod MTU, every offload at the
//! kernel's default, and the pod's address from the node's podCIDR with a default route via
//! the pod gateway, which the agent answers for.
//!
//! - [`spec`]: the protocol: environment, configuration, errors and results;
//! - [`plugin`]: the commands (`ADD`, `DEL`, `CHECK`, `STATUS`, `GC`, `VERSION`);
//! - [`ipam`]: the address store, one locked folder per network;
//! - [`link`]: the veth pair over rtnetlink;
//! - [`agent`]: `STATUS`'s readiness question to the node's agent.
//!
//! The node's pod network comes from the file the agent writes
//! ([`kxdp_control::node_subnet`]), as flannel's plugin reads `/run/flannel/subnet.env`.

pub mod agent;
pub mod ipam;
pub mod link;
pub mod plugin;
pub mod spec;
