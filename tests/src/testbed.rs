//! The namespace testbed: a small cluster built from network namespaces on this machine.
//!
//! Following ../shared/DESIGN.md's conventions, everything lives in namespaces the testbed
//! creates, named with a per-run prefix so parallel tests never collide: an underlay "switch"
//! namespace with a bridge joining the nodes' uplinks (198.18.0.0/24), a namespace per node and
//! per pod, and optionally an external client on the underlay. Nothing is added to the root
//! namespace. [`Testbed`] deletes every namespace it made when dropped, on success, failure or
//! panic, and deleting a namespace deletes its interfaces with it.
//!
//! A node is built as flannel's VXLAN backend builds one with the kernel's own devices (the
//! interoperability peer kxdp must speak to): a `cni0` bridge holding the pod gateway, pods'
//! veths on it, a `flannel.1` VXLAN device (VNI 1, port 8472, a fixed VTEP MAC), and for every
//! other node a route, a permanent neighbour entry and a forwarding entry, as flanneld writes
//! them. Issue 3 adds nodes run by kxdp beside these. Kernel nodes, their pods and the
//! underlay keep every offload at its default, as a flannel node does, and so do kxdp's pods;
//! only the underlay's veths to a kxdp node run without transmit checksum offload
//! (`no_tx_offload` says why).
//!
//! Commands run through `ip` (iproute2) and are bounded: every traffic run has a count and a
//! deadline.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

/// Why the testbed could not be built or used; names the command and what it said.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A command could not be started (not installed?).
    #[error("cannot run `{command}`: {source} (install iproute2 and iputils-ping: scripts/install-deps.sh)")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Why privileged tests cannot run here, if they cannot: for a clear SKIP line.
pub fn missing_privilege() -> Option<String> {
    // `id -u` rather than a libc call: this crate has no unsafe code.
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some(
            "network namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run them as root"
                .into(),
        );
    }
    for tool in ["ip", "ping", "ethtool", "python3", "iperf3"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed: run scripts/install-deps.sh"
            ));
        }
    }
    None
}

/// Print a SKIP line for a privileged test that cannot run, or fail under CI, where a skip is
/// a failure. Returns true when the test should return early.
pub fn skip_unless_privileged(test: &str) -> bool {
    let Some(why) = missing_privilege() else {
        return false;
    };
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: cannot run under CI: {why}"
    );
    eprintln!("SKIP {test}: {why}");
    true
}

fn run(cmd: &mut Command) -> Result<Output, TestbedError> {
    run_with_input(cmd, None)
}

/// Run `cmd` (with `stdin` as its input, if given) and fail with what it said if it fails.
fn run_with_input(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, TestbedError> {
    use std::io::Write as _;
    let command = format!("{cmd:?}").replace('"', "");
    let spawn = |source| TestbedError::Spawn {
        command: command.clone(),
        source,
    };
    let out = match stdin {
        None => cmd.output().map_err(spawn)?,
        Some(text) => {
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(spawn)?;
            if let Some(mut input) = child.stdin.take() {
                let _ = input.write_all(text.as_bytes());
            }
            child.wait_with_output().map_err(spawn)?
        }
    };
    if !out.status.success() {
        return Err(TestbedError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Counter `name` of group `group` in `/proc/net/snmp` as namespace `ns` sees it (`Tcp
/// OutRsts`, `Udp NoPorts`, `Icmp OutDestUnreachs`...). Panics if it cannot be read.
pub fn snmp(ns: &str, group: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{group}:")))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (names, values) = match rows.as_slice() {
        [names, values, ..] => (names, values),
        _ => panic!("no {group} counters in {ns}'s /proc/net/snmp"),
    };
    let i = names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no counter {group} {name}"));
    values[i].parse().expect("a number")
}

/// `ip <args>`, in namespace `ns` if given (`ip -n ns <args>`); an error if it fails, naming
/// the command and what it printed.
pub fn ip(ns: Option<&str>, args: &[&str]) -> Result<Output, TestbedError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    run(cmd.args(args))
}

/// A command inside namespace `ns`.
fn exec(ns: &str, args: &[&str]) -> Result<Output, TestbedError> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Turn off transmit checksum offload on `dev` in `ns`. A veth with it on hands the peer
/// packets whose TCP/UDP checksum holds only the pseudo-header sum (`CHECKSUM_PARTIAL`), to be
/// completed by hardware that does not exist. kxdp's pods keep it on (kxdp finds such
/// checksums and hands them on, or completes them); the switch port facing a kxdp node's
/// uplink (and the node's end) keep it off, standing in for a NIC, which delivers complete
/// checksums (the kernel completes them, and segments, as it transmits there). Kernel nodes, their pods and the other switch ports keep every
/// offload at its default, as on a flannel node: the kernel path is measured as users run it.
/// (Turning tx checksumming off also turns TSO off, as TSO needs it.)
fn no_tx_offload(ns: &str, dev: &str) -> Result<(), TestbedError> {
    set_tx_offload(ns, dev, false)
}

/// Transmit checksum offload on `dev` in `ns`, on or off.
fn set_tx_offload(ns: &str, dev: &str, on: bool) -> Result<(), TestbedError> {
    let state = if on { "on" } else { "off" };
    exec(ns, &["ethtool", "-K", dev, "tx", state]).map(|_| ())
}

/// The veths in namespace `ns` (their names).
fn veths(ns: &str) -> Result<Vec<String>, TestbedError> {
    let out = ip(Some(ns), &["-o", "link", "show", "type", "veth"])?;
    // "7: eth0@if6: <BROADCAST,...> mtu 1500 ..."
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_owned())
        })
        .collect())
}

/// Counts, for the seconds given as its argument, the IPv4 frames on every interface of the
/// namespace it runs in: VXLAN frames (UDP port 8472), and frames whose outer source or
/// destination is a pod address (10.244.0.0/16). Prints both.
const UNDERLAY_SNIFFER: &str = "\
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
vxlan = leaks = 0
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if len(f) < 34 or f[12:14] != b'\\x08\\x00':
        continue
    if f[23] == 17 and len(f) >= 42 and struct.unpack('!H', f[36:38])[0] == 8472:
        vxlan += 1
    if f[26:28] == bytes([10, 244]) or f[30:32] == bytes([10, 244]):
        leaks += 1
print(vxlan, leaks)
";

/// A running underlay sniffer (see [`Testbed::watch_underlay`]).
#[derive(Debug)]
pub struct UnderlayWatch(std::process::Child);

impl UnderlayWatch {
    /// Wait for the sniffer's window to end; returns (VXLAN frames, frames carrying a pod
    /// address in their outer header).
    pub fn finish(self) -> Result<(u64, u64), TestbedError> {
        let out = self
            .0
            .wait_with_output()
            .map_err(|source| TestbedError::Spawn {
                command: "underlay sniffer".into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let n: Vec<u64> = text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        match n[..] {
            [vxlan, leaks] => Ok((vxlan, leaks)),
            _ => Err(TestbedError::Failed {
                command: "underlay sniffer".into(),
                status: "unparsable".into(),
                stderr: text,
            }),
        }
    }
}

/// One node of the testbed.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its namespace.
    pub ns: String,
    /// Underlay address.
    pub ip: Ipv4Addr,
    /// Pod CIDR's network address (a /24).
    pub pod_net: Ipv4Addr,
    /// The pods' gateway (`.1` of the pod CIDR).
    pub gateway: Ipv4Addr,
    /// The VTEP MAC of its `flannel.1` (or the one kxdp uses).
    pub vtep_mac: String,
    /// Whether the kernel runs this node's overlay (flannel-style) rather than kxdp.
    pub kernel: bool,
    /// Its pods.
    pub pods: Vec<Pod>,
}

/// One pod of the testbed.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Number of nodes (at most 200).
    pub nodes: u8,
    /// Pods per node (at most 200).
    pub pods_per_node: u8,
    /// Whether to add an external client on the underlay.
    pub external: bool,
}

/// A cluster in namespaces; dropping it removes every namespace it made.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    namespaces: Vec<String>,
    /// The underlay switch namespace.
    pub switch: String,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The external client's namespace and address, if built.
    pub external: Option<(String, Ipv4Addr)>,
    /// Queues of every veth on a kxdp node (pods and uplinks), both ends.
    queues: u8,
    /// The MTU of kxdp pods' veths and of the host interface, both ends, as a CNI plugin
    /// sets it from the agent's `--pod-mtu`: 1450 unless changed (the agent's default and
    /// flannel's: a 1500-byte underlay less VXLAN's 50 bytes); `None` leaves the veth
    /// default (1500).
    pub pod_mtu: Option<u16>,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    /// Build a cluster of flannel-style kernel nodes.
    pub fn kernel_nodes(spec: Spec) -> Result<Testbed, TestbedError> {
        assert!(spec.nodes >= 1 && spec.nodes <= 200 && spec.pods_per_node <= 200);
        let mut tb = Testbed::empty();
        tb.add_switch()?;
        for i in 0..spec.nodes {
            let node = Node {
                ns: format!("{}-n{i}", tb.prefix),
                ip: Ipv4Addr::new(198, 18, 0, 10 + i),
                pod_net: Ipv4Addr::new(10, 244, i + 1, 0),
                gateway: Ipv4Addr::new(10, 244, i + 1, 1),
                vtep_mac: format!("02:6b:78:76:00:{:02x}", i + 1),
                kernel: true,
                pods: Vec::new(),
            };
            tb.add_ns(&node.ns)?;
            tb.wire_to_switch(&node.ns, &format!("s{i}"), "uplink", node.ip, false)?;
            tb.build_kernel_node(&node)?;
            let mut node = node;
            for j in 0..spec.pods_per_node {
                let pod = Pod {
                    ns: format!("{}-n{i}p{j}", tb.prefix),
                    ip: Ipv4Addr::new(10, 244, i + 1, 10 + j),
                };
                tb.add_pod(&node, &pod, j)?;
                node.pods.push(pod);
            }
            tb.nodes.push(node);
        }
        tb.peer_kernel_nodes()?;
        if spec.external {
            tb.add_external()?;
        }
        Ok(tb)
    }

    /// One node namespace with pods attached the way kxdp attaches them: a plain veth per pod
    /// (host end `pod<j>` in the node, no address, no bridge), the pod's end `eth0` with the
    /// given MAC and address/24, default route via `gateway`, which nothing in the kernel
    /// answers for. Whatever runs the dataplane on the `pod<j>` interfaces must.
    pub fn pods_on_kxdp_node(
        pods: &[(Ipv4Addr, &str)],
        gateway: Ipv4Addr,
    ) -> Result<Testbed, TestbedError> {
        Self::pods_on_multiqueue_kxdp_node(pods, gateway, 1)
    }

    /// [`Testbed::pods_on_kxdp_node`] with `queues` receive and transmit queues on every veth
    /// of the node (at most 64), so that several workers share its traffic.
    pub fn pods_on_multiqueue_kxdp_node(
        pods: &[(Ipv4Addr, &str)],
        gateway: Ipv4Addr,
        queues: u8,
    ) -> Result<Testbed, TestbedError> {
        assert!((1..=64).contains(&queues));
        let mut tb = Testbed::empty();
        tb.queues = queues;
        let node_ns = format!("{}-n0", tb.prefix);
        tb.add_ns(&node_ns)?;
        tb.nodes.push(Node {
            ns: node_ns,
            ip: Ipv4Addr::UNSPECIFIED,
            pod_net: Ipv4Addr::from(u32::from(gateway) & 0xffff_ff00),
            gateway,
            vtep_mac: String::new(),
            kernel: false,
            pods: Vec::new(),
        });
        for (j, (pod_ip, pod_mac)) in pods.iter().enumerate() {
            tb.add_kxdp_pod(0, &format!("pod{j}"), *pod_ip, pod_mac)?;
        }
        Ok(tb)
    }

    /// Two kxdp nodes on one underlay: node 0 with `pods_a` (pod CIDR 10.244.1.0/24, uplink
    /// 198.18.0.10) and node 1 with `pods_b` (10.244.2.0/24, 198.18.0.11), pods attached as
    /// [`Testbed::pods_on_kxdp_node`] attaches them. The dataplanes are the caller's to run.
    pub fn two_kxdp_nodes(
        pods_a: &[(Ipv4Addr, &str)],
        pods_b: &[(Ipv4Addr, &str)],
    ) -> Result<Testbed, TestbedError> {
        let mut tb = Testbed::pods_on_kxdp_node(pods_a, Ipv4Addr::new(10, 244, 1, 1))?;
        tb.add_switch()?;
        let n0 = tb.nodes[0].ns.clone();
        tb.nodes[0].ip = Ipv4Addr::new(198, 18, 0, 10);
        tb.wire_to_switch(&n0, "s0", "uplink", tb.nodes[0].ip, true)?;
        let node = Node {
            ns: format!("{}-n1", tb.prefix),
            ip: Ipv4Addr::new(198, 18, 0, 11),
            pod_net: Ipv4Addr::new(10, 244, 2, 0),
            gateway: Ipv4Addr::new(10, 244, 2, 1),
            vtep_mac: String::new(),
            kernel: false,
            pods: Vec::new(),
        };
        tb.add_ns(&node.ns)?;
        tb.wire_to_switch(&node.ns, "s1", "uplink", node.ip, true)?;
        tb.nodes.push(node);
        for (j, (pod_ip, pod_mac)) in pods_b.iter().enumerate() {
            tb.add_kxdp_pod(1, &format!("pod{j}"), *pod_ip, pod_mac)?;
        }
        Ok(tb)
    }

    /// The kernel path a flannel node with kube-proxy would run, for the perf harness to
    /// compare kxdp with: one node namespace built as [`Testbed::kernel_nodes`] builds one
    /// (`cni0` bridge with the pods' gateway, `flannel.1`), its bridge given `gateway_mac`, one
    /// pod (`pod_mac`, `pod_ip`/24, MTU `mtu - 50`), and an uplink wired straight to a peer
    /// namespace `<prefix>-sink` as [`Testbed::add_uplink_peer`] wires it. The peer stands for
    /// node B: `flannel.1` routes `remote_cidr` (a /24) to it as flanneld would (route, VTEP
    /// neighbour `remote_vtep`, forwarding entry to `peer_ip`), and its underlay MAC is a
    /// permanent neighbour, since a sink answers no ARP. Returns the testbed and the peer's
    /// namespace.
    #[allow(clippy::too_many_arguments)] // one topology, every address named by the caller
    pub fn flannel_node_with_uplink_peer(
        (pod_ip, pod_mac): (Ipv4Addr, &str),
        (gateway, gateway_mac): (Ipv4Addr, &str),
        (node_ip, node_mac, vtep_mac): (Ipv4Addr, &str, &str),
        (peer_ip, peer_mac): (Ipv4Addr, &str),
        (remote_net, remote_vtep): (Ipv4Addr, &str),
        mtu: u16,
    ) -> Result<(Testbed, String), TestbedError> {
        let mut tb = Testbed::empty();
        let node = Node {
            ns: format!("{}-n0", tb.prefix),
            ip: node_ip,
            pod_net: Ipv4Addr::from(u32::from(gateway) & 0xffff_ff00),
            gateway,
            vtep_mac: vtep_mac.into(),
            kernel: true,
            pods: Vec::new(),
        };
        tb.add_ns(&node.ns)?;
        tb.nodes.push(node.clone());
        let peer = tb.add_uplink_peer(0, "sink", (node_ip, node_mac), (peer_ip, peer_mac), mtu)?;
        tb.build_kernel_node(&node)?;
        let ns = Some(node.ns.as_str());
        ip(ns, &["link", "set", "cni0", "address", gateway_mac])?;
        let inner_mtu = (mtu - 50).to_string();
        ip(ns, &["link", "set", "flannel.1", "mtu", &inner_mtu])?;
        let pod = Pod {
            ns: format!("{}-n0p0", tb.prefix),
            ip: pod_ip,
        };
        tb.add_pod(&node, &pod, 0)?;
        let pns = Some(pod.ns.as_str());
        ip(
            pns,
            &["link", "set", "eth0", "address", pod_mac, "mtu", &inner_mtu],
        )?;
        tb.nodes[0].pods.push(pod);
        tb.flannel_knows(&node.ns, remote_net, remote_vtep, peer_ip)?;
        let peer_text = peer_ip.to_string();
        ip(
            ns,
            &[
                "neigh",
                "replace",
                &peer_text,
                "lladdr",
                peer_mac,
                "dev",
                "uplink",
                "nud",
                "permanent",
            ],
        )?;
        Ok((tb, peer))
    }

    /// Run `cmd` with `stdin` as its input in namespace `ns` of this testbed (for `nft -f -`).
    pub fn exec_with_input(&self, ns: &str, cmd: &[&str], stdin: &str) -> Result<(), TestbedError> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).args(cmd);
        run_with_input(&mut command, Some(stdin)).map(|_| ())
    }

    /// Give kxdp node `node` its host interface, for tests that run the dataplane without the
    /// agent (which makes its own: `kxdp agent --host-interface`): a veth pair between the
    /// dataplane (`host0`) and the node's kernel (`kxdp0`, with `kernel_mac`, the node
    /// settings' `host_mac`), and a kernel route to the node's pods (`pod_cidr`) through it,
    /// so node processes reach pods through kxdp and pods reach the node's own addresses.
    pub fn add_host_interface(
        &mut self,
        node: usize,
        kernel_mac: &str,
        pod_cidr: &str,
    ) -> Result<(), TestbedError> {
        let ns = self.nodes[node].ns.clone();
        let n = Some(ns.as_str());
        ip(
            n,
            &[
                "link", "add", "host0", "type", "veth", "peer", "name", "kxdp0",
            ],
        )?;
        ip(n, &["link", "set", "kxdp0", "address", kernel_mac])?;
        ip(n, &["link", "set", "host0", "up"])?;
        ip(n, &["link", "set", "kxdp0", "up"])?;
        if let Some(mtu) = self.pod_mtu {
            for dev in ["host0", "kxdp0"] {
                ip(n, &["link", "set", dev, "mtu", &mtu.to_string()])?;
            }
        }
        ip(n, &["route", "add", pod_cidr, "dev", "kxdp0"])?;
        Ok(())
    }

    /// Give node `node` (kxdp's or the kernel's) an uplink wired straight to a peer namespace
    /// `<prefix>-<name>` (no switch): `uplink` in the node with `node_ip`/24 and `node_mac`,
    /// `eth0` in the peer with `peer_ip`/24 and `peer_mac`, both with `mtu`. The perf harness's sink stands there
    /// as the remote node. Both ends without transmit checksum offload on a kxdp node, with
    /// their defaults on a kernel node ([`no_tx_offload`]). Returns the peer's namespace.
    pub fn add_uplink_peer(
        &mut self,
        node: usize,
        name: &str,
        (node_ip, node_mac): (Ipv4Addr, &str),
        (peer_ip, peer_mac): (Ipv4Addr, &str),
        mtu: u16,
    ) -> Result<String, TestbedError> {
        let ns = self.nodes[node].ns.clone();
        let peer = format!("{}-{name}", self.prefix);
        self.add_ns(&peer)?;
        let args = self.veth_args("uplink", "eth0", &peer);
        ip(
            Some(&ns),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let mtu = mtu.to_string();
        for (n, dev, addr, mac) in [
            (&ns, "uplink", node_ip, node_mac),
            (&peer, "eth0", peer_ip, peer_mac),
        ] {
            ip(Some(n), &["link", "set", dev, "address", mac, "mtu", &mtu])?;
            ip(Some(n), &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(Some(n), &["link", "set", dev, "up"])?;
            if !self.nodes[node].kernel {
                no_tx_offload(n, dev)?;
            }
        }
        self.nodes[node].ip = node_ip;
        Ok(peer)
    }

    /// Add a pod to kxdp node `node` the way [`Testbed::pods_on_kxdp_node`] does, with its host
    /// end named `host_side`.
    pub fn add_kxdp_pod(
        &mut self,
        node: usize,
        host_side: &str,
        pod_ip: Ipv4Addr,
        pod_mac: &str,
    ) -> Result<Pod, TestbedError> {
        let n = self.nodes[node].clone();
        let pod = Pod {
            ns: format!("{}-n{node}{host_side}", self.prefix),
            ip: pod_ip,
        };
        self.add_ns(&pod.ns)?;
        let nns = Some(n.ns.as_str());
        let args = self.veth_args(host_side, "eth0", &pod.ns);
        ip(nns, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        ip(nns, &["link", "set", host_side, "up"])?;
        let pns = Some(pod.ns.as_str());
        ip(pns, &["link", "set", "eth0", "address", pod_mac])?;
        ip(
            pns,
            &["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"],
        )?;
        ip(pns, &["link", "set", "eth0", "up"])?;
        ip(
            pns,
            &["route", "add", "default", "via", &n.gateway.to_string()],
        )?;
        if let Some(mtu) = self.pod_mtu {
            let mtu = mtu.to_string();
            ip(nns, &["link", "set", host_side, "mtu", &mtu])?;
            ip(pns, &["link", "set", "eth0", "mtu", &mtu])?;
        }
        self.nodes[node].pods.push(pod.clone());
        Ok(pod)
    }

    /// Delete a pod's namespace (its veth goes with it), as a pod's deletion does.
    pub fn remove_pod(&mut self, pod: &Pod) -> Result<(), TestbedError> {
        ip(None, &["netns", "del", &pod.ns])?;
        self.namespaces.retain(|n| *n != pod.ns);
        for node in &mut self.nodes {
            node.pods.retain(|p| p.ns != pod.ns);
        }
        Ok(())
    }

    /// A kxdp node (node 0: plain pod veths `pod<j>`, an uplink with an address and nothing
    /// else, the dataplane to be run on it by the caller) and a flannel-style kernel node
    /// (node 1), on one underlay, with an external client on it (198.18.0.100). Node 1 is told about node 0 as flanneld would be about any
    /// node: a route to its pod CIDR through its VTEP address, a neighbour entry with
    /// `kxdp_vtep_mac`, and a forwarding entry to node 0's underlay address.
    pub fn kxdp_and_kernel_node(
        kxdp_pods: &[(Ipv4Addr, &str)],
        kxdp_gateway: Ipv4Addr,
        kxdp_vtep_mac: &str,
        kernel_pods: u8,
    ) -> Result<Testbed, TestbedError> {
        let mut tb = Testbed::pods_on_kxdp_node(kxdp_pods, kxdp_gateway)?;
        tb.add_switch()?;
        let kxdp_ip = Ipv4Addr::new(198, 18, 0, 10);
        let n0 = tb.nodes[0].ns.clone();
        tb.wire_to_switch(&n0, "s0", "uplink", kxdp_ip, true)?;
        tb.nodes[0].ip = kxdp_ip;
        tb.nodes[0].vtep_mac = kxdp_vtep_mac.to_owned();
        let mut node = Node {
            ns: format!("{}-n1", tb.prefix),
            ip: Ipv4Addr::new(198, 18, 0, 11),
            pod_net: Ipv4Addr::new(10, 244, 2, 0),
            gateway: Ipv4Addr::new(10, 244, 2, 1),
            vtep_mac: "02:6b:78:76:00:02".into(),
            kernel: true,
            pods: Vec::new(),
        };
        tb.add_ns(&node.ns)?;
        tb.wire_to_switch(&node.ns, "s1", "uplink", node.ip, false)?;
        tb.build_kernel_node(&node)?;
        for j in 0..kernel_pods {
            let pod = Pod {
                ns: format!("{}-n1p{j}", tb.prefix),
                ip: Ipv4Addr::new(10, 244, 2, 10 + j),
            };
            tb.add_pod(&node, &pod, j)?;
            node.pods.push(pod);
        }
        tb.nodes.push(node);
        tb.peer_kernel_nodes()?;
        tb.add_external()?;
        Ok(tb)
    }

    /// Add the external client: a namespace `<prefix>-ext` on the underlay at 198.18.0.100.
    pub fn add_external(&mut self) -> Result<(), TestbedError> {
        let ns = format!("{}-ext", self.prefix);
        let addr = Ipv4Addr::new(198, 18, 0, 100);
        self.add_ns(&ns)?;
        self.wire_to_switch(&ns, "sx", "eth0", addr, false)?;
        self.external = Some((ns, addr));
        Ok(())
    }

    /// Transmit checksum offload (and with it TSO) on or off on every veth of the testbed, in
    /// every namespace: for the perf harness's variant of the kernel path with the offloads
    /// kxdp's own pods run without.
    pub fn set_tx_offload_everywhere(&self, on: bool) -> Result<(), TestbedError> {
        for ns in &self.namespaces {
            for dev in veths(ns)? {
                set_tx_offload(ns, &dev, on)?;
            }
        }
        Ok(())
    }

    /// Set the underlay's MTU to `mtu` (every switch port, node uplink and the external
    /// client's `eth0`) and the pods' to `mtu - 50`, as flannel's VXLAN backend sets them
    /// from the uplink's (its CNI config's MTU: the uplink's less VXLAN's 50 bytes): both ends
    /// of every pod veth, and on kernel nodes `flannel.1` and `cni0`. kxdp nodes follow the
    /// same rule, the agent's `--pod-mtu` default: their pods' veths and host interface, and
    /// [`pod_mtu`](Self::pod_mtu) for pods added later. The peers of
    /// [`Testbed::add_uplink_peer`] keep theirs. Set it before a dataplane attaches: a veth
    /// refuses an MTU its XDP peer cannot take.
    pub fn set_underlay_mtu(&mut self, mtu: u16) -> Result<(), TestbedError> {
        assert!((118..=65000).contains(&mtu), "an underlay MTU, got {mtu}");
        let underlay = mtu.to_string();
        let pod = (mtu - 50).to_string();
        let set = |ns: &str, dev: &str, m: &str| {
            ip(Some(ns), &["link", "set", dev, "mtu", m]).map(|_| ())
        };
        // The underlay first: flannel.1 takes no MTU above its uplink's less 50.
        let mut pod_ends = Vec::new();
        if !self.switch.is_empty() {
            for port in veths(&self.switch)? {
                set(&self.switch, &port, &underlay)?;
            }
        }
        if let Some((ns, _)) = &self.external {
            set(ns, "eth0", &underlay)?;
        }
        for node in &self.nodes {
            for dev in veths(&node.ns)? {
                match dev.as_str() {
                    "uplink" => set(&node.ns, &dev, &underlay)?,
                    _ => pod_ends.push((node.ns.clone(), dev)),
                }
            }
            for p in &node.pods {
                pod_ends.push((p.ns.clone(), "eth0".to_owned()));
            }
            if node.kernel {
                set(&node.ns, "flannel.1", &pod)?;
                set(&node.ns, "cni0", &pod)?;
            }
        }
        for (ns, dev) in pod_ends {
            set(&ns, &dev, &pod)?;
        }
        self.pod_mtu = Some(mtu - 50);
        Ok(())
    }

    /// Set kxdp nodes' pod veths (both ends) and host interface to `mtu`, as a CNI plugin does
    /// from the agent's `--pod-mtu`: the underlay keeps its MTU, and kernel nodes theirs.
    pub fn set_kxdp_pod_mtu(&mut self, mtu: u16) -> Result<(), TestbedError> {
        let m = mtu.to_string();
        for node in self.nodes.iter().filter(|n| !n.kernel) {
            for dev in veths(&node.ns)?.iter().filter(|d| *d != "uplink") {
                ip(Some(&node.ns), &["link", "set", dev, "mtu", &m])?;
            }
            for p in &node.pods {
                ip(Some(&p.ns), &["link", "set", "eth0", "mtu", &m])?;
            }
        }
        self.pod_mtu = Some(mtu);
        Ok(())
    }

    /// Watch every port of the underlay switch for `secs` seconds (a raw socket in the switch
    /// namespace), counting VXLAN frames and frames whose outer header carries a pod address.
    pub fn watch_underlay(&self, secs: u32) -> Result<UnderlayWatch, TestbedError> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.switch,
                "python3",
                "-c",
                UNDERLAY_SNIFFER,
            ])
            .arg(secs.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                command: "python3 (underlay sniffer)".into(),
                source,
            })?;
        // Let it open its socket before the traffic starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(UnderlayWatch(child))
    }

    /// The MAC address of interface `dev` in namespace `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> Result<String, TestbedError> {
        let out = ip(Some(ns), &["-br", "link", "show", "dev", dev])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| TestbedError::Failed {
                command: format!("ip -n {ns} -br link show dev {dev}"),
                status: "unparsable".into(),
                stderr: text.into_owned(),
            })
    }

    /// The per-run prefix of every namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A testbed with nothing in it yet, under a fresh per-run prefix.
    fn empty() -> Testbed {
        Testbed {
            prefix: format!(
                "{}-{}",
                Testbed::process_prefix(),
                RUNS.fetch_add(1, Relaxed)
            ),
            switch: String::new(),
            namespaces: Vec::new(),
            nodes: Vec::new(),
            external: None,
            queues: 1,
            pod_mtu: Some(1450),
        }
    }

    /// `ip link add` arguments for a veth `a` (in the current namespace) to `b` (in `netns`),
    /// with this testbed's queue count on both ends.
    fn veth_args(&self, a: &str, b: &str, netns: &str) -> Vec<String> {
        let q = self.queues.to_string();
        [
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            netns,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The underlay switch: a namespace with a bridge the nodes' uplinks join.
    fn add_switch(&mut self) -> Result<(), TestbedError> {
        self.switch = format!("{}-sw", self.prefix);
        let sw = self.switch.clone();
        self.add_ns(&sw)?;
        ip(Some(&sw), &["link", "add", "br0", "type", "bridge"])?;
        ip(Some(&sw), &["link", "set", "br0", "up"])?;
        // A switch forwards frames and nothing more: where the kernel has bridge netfilter
        // (a new namespace starts with bridge-nf-call-* at 1), the switch would otherwise run
        // every frame through the IP hooks, a per-frame cost no physical underlay has.
        exec(
            &sw,
            &[
                "sh",
                "-c",
                "[ ! -d /proc/sys/net/bridge ] || sysctl -qw \
                 net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
                 net.bridge.bridge-nf-call-arptables=0",
            ],
        )?;
        Ok(())
    }

    /// A namespace named `ns` (loopback up) that the testbed removes with the rest, for a pod
    /// that a CNI plugin attaches ([`crate::cni`]).
    pub fn add_namespace(&mut self, ns: &str) -> Result<(), TestbedError> {
        self.add_ns(ns)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), TestbedError> {
        ip(None, &["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(Some(ns), &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth from `ns` (named `inner`, with `addr`/24) to the switch's bridge (port `port`).
    /// For a kxdp node's uplink (`to_kxdp`), both ends without transmit checksum offload (see
    /// [`no_tx_offload`]): the switch's end is where the kernel nodes' and the external
    /// client's partially checksummed packets would otherwise reach kxdp (without it,
    /// tests/tests/xsk_external.rs fails: a NodePort connection from the external client gets
    /// no answer). Any other keeps its defaults.
    fn wire_to_switch(
        &self,
        ns: &str,
        port: &str,
        inner: &str,
        addr: Ipv4Addr,
        to_kxdp: bool,
    ) -> Result<(), TestbedError> {
        let sw = self.switch.as_str();
        let args = self.veth_args(port, inner, ns);
        ip(
            Some(sw),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        ip(Some(sw), &["link", "set", port, "master", "br0", "up"])?;
        ip(
            Some(ns),
            &["addr", "add", &format!("{addr}/24"), "dev", inner],
        )?;
        ip(Some(ns), &["link", "set", inner, "up"])?;
        if to_kxdp {
            no_tx_offload(sw, port)?;
            no_tx_offload(ns, inner)?;
        }
        Ok(())
    }

    fn build_kernel_node(&self, node: &Node) -> Result<(), TestbedError> {
        let ns = Some(node.ns.as_str());
        exec(&node.ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ip(ns, &["link", "add", "cni0", "type", "bridge"])?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/24", node.gateway),
                "dev",
                "cni0",
            ],
        )?;
        ip(ns, &["link", "set", "cni0", "up"])?;
        let local = node.ip.to_string();
        ip(
            ns,
            &[
                "link",
                "add",
                "flannel.1",
                "address",
                &node.vtep_mac,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &local,
                "dev",
                "uplink",
                "dstport",
                "8472",
                "nolearning",
            ],
        )?;
        ip(ns, &["link", "set", "flannel.1", "mtu", "1450", "up"])?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/32", node.pod_net),
                "dev",
                "flannel.1",
            ],
        )?;
        Ok(())
    }

    /// What flanneld writes on node namespace `ns` for another node: a route to its pod CIDR
    /// (`pod_net`/24) through its VTEP address, a permanent neighbour entry with its VTEP MAC,
    /// and a forwarding entry sending that MAC to its underlay address.
    fn flannel_knows(
        &self,
        ns: &str,
        pod_net: Ipv4Addr,
        vtep_mac: &str,
        underlay: Ipv4Addr,
    ) -> Result<(), TestbedError> {
        let vtep = pod_net.to_string();
        let n = Some(ns);
        ip(
            n,
            &[
                "route",
                "add",
                &format!("{vtep}/24"),
                "via",
                &vtep,
                "dev",
                "flannel.1",
                "onlink",
            ],
        )?;
        ip(
            n,
            &[
                "neigh",
                "add",
                &vtep,
                "lladdr",
                vtep_mac,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        )?;
        run(Command::new("bridge").args([
            "-n",
            ns,
            "fdb",
            "append",
            vtep_mac,
            "dev",
            "flannel.1",
            "dst",
            &underlay.to_string(),
        ]))?;
        Ok(())
    }

    /// What flanneld writes on every node for every other: a route to its pod CIDR through its
    /// VTEP address, a permanent neighbour entry for that address, and a forwarding entry
    /// sending the VTEP MAC to the node's underlay address.
    fn peer_kernel_nodes(&self) -> Result<(), TestbedError> {
        // Only kernel nodes are configured; a kxdp node (no underlay `flannel.1`) is configured
        // by its dataplane. Kernel nodes learn about every node.
        for node in self.nodes.iter().filter(|n| n.kernel) {
            for other in self.nodes.iter().filter(|o| o.ns != node.ns) {
                self.flannel_knows(&node.ns, other.pod_net, &other.vtep_mac, other.ip)?;
            }
        }
        Ok(())
    }

    fn add_pod(&mut self, node: &Node, pod: &Pod, index: u8) -> Result<(), TestbedError> {
        self.add_ns(&pod.ns)?;
        let host_side = format!("veth{index}");
        let nns = Some(node.ns.as_str());
        ip(
            nns,
            &[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &pod.ns,
            ],
        )?;
        ip(nns, &["link", "set", &host_side, "master", "cni0", "up"])?;
        let pns = Some(pod.ns.as_str());
        ip(
            pns,
            &["addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"],
        )?;
        ip(pns, &["link", "set", "eth0", "mtu", "1450", "up"])?;
        ip(
            pns,
            &["route", "add", "default", "via", &node.gateway.to_string()],
        )?;
        // Offloads at their defaults, as flannel's CNI (the bridge plugin) leaves them.
        Ok(())
    }

    /// Ping `to` from namespace `from`: `count` echoes, each waited for at most a second, the
    /// whole run bounded by `deadline`. Ok with the number of replies.
    pub fn ping(
        &self,
        from: &str,
        to: Ipv4Addr,
        count: u32,
        deadline: Duration,
    ) -> Result<u32, TestbedError> {
        self.ping_bytes(from, to, count, 56, deadline)
    }

    /// A ping running in the background from namespace `from` to `to`: `count` echoes
    /// `interval` apart, each waited for at most a second, the run bounded by 15 s; its quiet
    /// summary (`N packets transmitted, M received`) on its stdout.
    pub fn ping_flow(
        &self,
        from: &str,
        to: Ipv4Addr,
        count: u32,
        interval: Duration,
    ) -> Result<std::process::Child, TestbedError> {
        Command::new("ip")
            .args(["netns", "exec", from, "ping", "-n", "-q", "-c"])
            .arg(count.to_string())
            .arg("-i")
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .args(["-W", "1", "-w", "15"])
            .arg(to.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                command: format!("ping {to} in {from}"),
                source,
            })
    }

    /// [`Testbed::ping`] with `payload` bytes of ICMP data per echo (ping's `-s`): past the
    /// path MTU, the sender's kernel fragments each echo.
    pub fn ping_bytes(
        &self,
        from: &str,
        to: Ipv4Addr,
        count: u32,
        payload: u32,
        deadline: Duration,
    ) -> Result<u32, TestbedError> {
        let out = Command::new("ip")
            .args(["netns", "exec", from, "ping", "-n", "-q", "-s"])
            .arg(payload.to_string())
            .arg("-c")
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "1", "-w"])
            .arg(deadline.as_secs().max(1).to_string())
            .arg(to.to_string())
            .output()
            .map_err(|source| TestbedError::Spawn {
                command: format!("ping {to} in {from}"),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "3 packets transmitted, 3 received, ..."
        let received = text
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once("transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0);
        Ok(received)
    }

    /// Packets transmitted so far by interface `dev` in namespace `ns` (`ip netns exec`
    /// remounts /sys, so the counter read is the namespace's own).
    pub fn tx_packets(&self, ns: &str, dev: &str) -> Result<u64, TestbedError> {
        let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
        let out = exec(ns, &["cat", &path])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().map_err(|_| TestbedError::Failed {
            command: format!("cat {path} in {ns}"),
            status: "unparsable".into(),
            stderr: text.into_owned(),
        })
    }

    /// The prefix of every testbed this process makes (`kx<pid>-`).
    pub fn process_prefix() -> String {
        format!("kx{}", std::process::id() % 100_000)
    }

    /// Delete every namespace whose name starts with `<prefix>-`; returns how many.
    pub fn remove_namespaces(prefix: &str) -> usize {
        let names = Testbed::live_namespaces(prefix);
        for ns in names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        names.len()
    }

    /// For programs built with `panic = "abort"` (the release profile: the demo and the perf
    /// harness), where a panic runs no `Drop` and so no testbed guard: a panic hook that
    /// deletes every namespace of this process's testbeds before the process aborts, then
    /// reports the panic as the default hook does. Agents started in them stop by themselves
    /// (`--max-run`).
    pub fn remove_namespaces_on_panic() {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let removed = Testbed::remove_namespaces(&Testbed::process_prefix());
            eprintln!("panic: removed {removed} network namespaces of this process");
            report(info);
        }));
    }

    /// Every namespace this testbed made that still exists.
    pub fn live_namespaces(prefix: &str) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Pods first, the switch last; deleting a namespace deletes its interfaces and frees
        // the peers' ends too.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
