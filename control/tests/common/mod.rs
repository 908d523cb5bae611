//! What the manifest tests share: this node's settings and scratch manifest files.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kxdp_control::compile::NodeSettings;
use kxdp_testkit::{ScratchDir, Topology};

/// node-a of the fixture topology, with no node address of its own.
pub(crate) fn settings() -> NodeSettings {
    let mut node = Topology::default().node;
    node.name = "node-a".into();
    node.node_ips = vec![];
    NodeSettings {
        node,
        neighbors: vec![],
    }
}

pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A manifest file holding `text`, in a scratch folder for `name`, with the folder's guard:
/// the folder goes when the guard is dropped.
pub(crate) fn scratch(name: &str, text: &str) -> (ScratchDir, PathBuf) {
    let dir = ScratchDir::new(&format!("control-{name}"));
    let p = dir.join("cluster.yaml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}
