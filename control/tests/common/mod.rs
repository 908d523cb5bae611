//! What the manifest tests share: this node's settings and scratch manifest files.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kxdp_control::compile::NodeSettings;
use kxdp_testkit::Topology;

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

/// A manifest file holding `text`, in a folder of this process's named `name`.
pub(crate) fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kxdp-control-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cluster.yaml");
    std::fs::write(&p, text).unwrap();
    p
}
