//! The node's pod network for the CNI plugin (`--subnet-file`, by default
//! `/run/kxdp/subnet.env`), written as flannel writes `/run/flannel/subnet.env`: whenever a
//! live snapshot names a pod CIDR, gateway, cluster CIDR or pod MTU other than the last one
//! written, or the file is gone (format: [`kxdp_control::node_subnet`]).
//!
//! The file is replaced whole: the text goes to a temporary file beside it, which is synced
//! and renamed over the old one, so a plugin reading it at any moment sees the old text or
//! the new, never a part. The folder is created if missing (with the process's umask: the
//! plugin runs as root, and the file holds nothing secret).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use kxdp_control::node_subnet::NodeSubnet;
use kxdp_dataplane::tables::NodeConfig;
use kxdp_dataplane::wire::Ipv4Cidr;

/// The node's pod network as a live snapshot's configuration says it.
pub fn from_node(node: &NodeConfig) -> NodeSubnet {
    let net = |c: Ipv4Cidr| {
        Ipv4Net::new(c.network().address(), c.prefix_len())
            .expect("a smoltcp CIDR's prefix is at most 32")
    };
    NodeSubnet {
        network: net(node.cluster_cidr),
        subnet: net(node.pod_cidr),
        gateway: node.gateway_ip,
        mtu: node.pod_mtu,
    }
}

/// Writes the file when what it says changes.
#[derive(Debug)]
pub struct SubnetFile {
    path: PathBuf,
    written: Option<NodeSubnet>,
}

impl SubnetFile {
    /// A writer for `path`; nothing is written yet.
    pub fn new(path: PathBuf) -> SubnetFile {
        SubnetFile {
            path,
            written: None,
        }
    }

    /// Write `subnet` unless it is what this writer last wrote and the file is still there;
    /// true if it wrote.
    pub fn update(&mut self, subnet: NodeSubnet) -> std::io::Result<bool> {
        // A file removed since (a cleared /run) is written again at the next publish.
        if self.written == Some(subnet) && self.path.exists() {
            return Ok(false);
        }
        write_atomically(&self.path, subnet.render().as_bytes())?;
        self.written = Some(subnet);
        Ok(true)
    }
}

/// Replace `path` with `bytes`: a synced temporary file renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn subnet(third: u8, mtu: u16) -> NodeSubnet {
        NodeSubnet {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: format!("10.244.{third}.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, third, 1),
            mtu,
        }
    }

    #[test]
    fn writes_when_the_subnet_changes_and_replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("kxdp-subnet-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/kxdp/subnet.env");
        let mut file = SubnetFile::new(path.clone());
        assert!(file.update(subnet(1, 1450)).unwrap(), "the first write");
        let read = || NodeSubnet::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read(), subnet(1, 1450));
        assert!(!file.update(subnet(1, 1450)).unwrap(), "nothing changed");
        assert!(
            file.update(subnet(2, 65535)).unwrap(),
            "a new pod CIDR and MTU"
        );
        assert_eq!(read(), subnet(2, 65535));
        std::fs::remove_file(&path).unwrap();
        assert!(
            file.update(subnet(2, 65535)).unwrap(),
            "a removed file comes back"
        );
        assert_eq!(read(), subnet(2, 65535));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["subnet.env"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_node_takes_the_live_configuration() {
        let mut node = kxdp_testkit::Topology::default().node;
        node.pod_cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 7, 9), 24);
        node.gateway_ip = Ipv4Addr::new(10, 244, 7, 1);
        node.pod_mtu = 9000;
        let s = from_node(&node);
        assert_eq!(s.subnet, "10.244.7.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(s.gateway, Ipv4Addr::new(10, 244, 7, 1));
        assert_eq!(s.mtu, 9000);
        assert_eq!(s.network, "10.244.0.0/16".parse::<Ipv4Net>().unwrap());
    }
}
