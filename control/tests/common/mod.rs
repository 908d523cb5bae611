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

/// A manifest file holding `text`, in a folder of this process's named `name`, removed with
/// the folder when dropped.
pub(crate) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(crate) fn scratch(name: &str, text: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("kxdp-control-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cluster.yaml");
    std::fs::write(&p, text).unwrap();
    Scratch(p)
}
