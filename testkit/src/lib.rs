//! kxdp's test harness: the fixture node shared by the tests, the benches, the perf harness and
//! the walkthrough: one topology, frame builders for it, the pipeline's named cases, and
//! buffers that look like UMEM chunks (headroom for encapsulation, tailroom for ICMP); and a
//! scratch folder that goes when the test does ([`ScratchDir`]).
//!
//! It depends on `kxdp-dataplane` and nothing else of kxdp, and no production crate depends on
//! it (only dev-dependencies and the harness crates: tests, perf, benches). It is never on the
//! packet path and allocates freely. The dataplane's own unit tests cannot use it (a
//! dev-dependency cycle would give them a second copy of every type); tests that need the
//! fixture live in `dataplane/tests/` instead.

use core::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kxdp_dataplane::flow::proto;
use kxdp_dataplane::pipeline::{Frame, Packet};
use kxdp_dataplane::tables::{
    Backend, Frontend, FrontendKind, InterfaceId, LocalPod, NodeConfig, RemoteNode, ServicePort,
    ServicePortSpec, Snapshot, SnapshotInputs, TrafficPolicy,
};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::{Ipv4Cidr, MacAddr};

pub mod netpol;

/// A folder of a test's own under the temporary directory, `kxdp-NAME-PID`: made empty, and
/// removed when dropped, so a failing assertion leaves nothing behind either.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// The folder for `name` (unique among this process's tests), made empty.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kxdp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder under the temporary directory");
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Size of a fixture buffer, like an AF_XDP UMEM chunk.
pub const CHUNK_SIZE: usize = 2048;
/// Headroom before the frame, like the UMEM frame headroom the I/O layer configures.
pub const HEADROOM: usize = 256;

/// A frame in its own chunk-sized buffer.
#[derive(Clone, Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
    len: usize,
}

impl FrameBuf {
    /// Copy `frame` into a fresh chunk at [`HEADROOM`].
    pub fn new(frame: &[u8]) -> Self {
        let mut buf = vec![0u8; CHUNK_SIZE];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        FrameBuf {
            buf,
            len: frame.len(),
        }
    }

    /// Reset the chunk to hold `frame` again (benches reuse buffers).
    pub fn reset(&mut self, frame: &[u8]) {
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.len = frame.len();
    }

    /// A packet over this buffer, received on `ingress`.
    pub fn packet(&mut self, ingress: InterfaceId) -> Packet<'_> {
        let frame = Frame::new(&mut self.buf, HEADROOM, self.len).expect("frame fits its chunk");
        Packet::new(frame, ingress)
    }
}

/// A MAC address from six bytes.
pub const fn mac(b: [u8; 6]) -> MacAddr {
    kxdp_dataplane::wire::EthernetAddress(b)
}

/// The fixture: node A (this node) with two local pods, node B (another kxdp or flannel node)
/// with one, an external host beyond the uplink's gateway, and a few services.
#[derive(Clone, Debug)]
pub struct Topology {
    /// This node.
    pub node: NodeConfig,
    /// A client pod on this node.
    pub pod_a: LocalPod,
    /// A server pod on this node.
    pub pod_b: LocalPod,
    /// The other node.
    pub node_b: RemoteNode,
    /// Node B's MAC on the underlay.
    pub node_b_mac: MacAddr,
    /// A pod on node B.
    pub remote_pod_ip: Ipv4Addr,
    /// The uplink gateway's MAC.
    pub gateway_router_mac: MacAddr,
    /// A host outside the cluster, behind the gateway.
    pub external_ip: Ipv4Addr,
    /// `default/web:http`: ClusterIP 10.96.0.10:80, NodePort 30080, load balancer
    /// 198.19.1.10:80, backends pod B:8080 (local) and the remote pod:8080.
    pub web_cluster_ip: Ipv4Addr,
    /// `default/web` NodePort.
    pub web_node_port: u16,
    /// `default/web` load-balancer address.
    pub web_lb_ip: Ipv4Addr,
    /// `kube-system/dns:dns`: ClusterIP 10.96.0.53:53/UDP, backend the remote pod:53.
    pub dns_cluster_ip: Ipv4Addr,
    /// `default/empty:http`: ClusterIP 10.96.0.99:80 with no endpoints.
    pub empty_cluster_ip: Ipv4Addr,
    /// `default/self:http`: ClusterIP 10.96.0.20:80 whose only backend is pod A:8080.
    pub self_cluster_ip: Ipv4Addr,
    /// `default/api:https`: ClusterIP 10.96.0.30:443 whose only backend is pod B:8443.
    pub api_cluster_ip: Ipv4Addr,
    /// Extra generated services (for scale benches).
    pub extra_services: usize,
    /// Backends per extra service.
    pub extra_backends: usize,
}

impl Default for Topology {
    fn default() -> Self {
        let node = NodeConfig {
            name: "node-a".into(),
            node_ips: vec![Ipv4Addr::new(198, 18, 0, 1)],
            nodeport_ips: None,
            uplink_subnet: Ipv4Cidr::new(Ipv4Addr::new(198, 18, 0, 0), 24),
            uplink_gateway: Some(Ipv4Addr::new(198, 18, 0, 254)),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24),
            cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16),
            service_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12),
            gateway_ip: Ipv4Addr::new(10, 244, 1, 1),
            gateway_mac: mac([0x02, 0x6b, 0x78, 0, 0, 0x01]),
            uplink: InterfaceId(0),
            uplink_mac: mac([0x02, 0, 0xc6, 0x12, 0, 0x01]),
            uplink_mtu: 1500,
            pod_mtu: 1450,
            host: InterfaceId(1),
            host_mac: mac([0x02, 0x6b, 0x78, 0, 0, 0xfe]),
            vtep_mac: mac([0x02, 0x6b, 0x78, 0x76, 0, 0x01]),
            vxlan_vni: 1,
            vxlan_port: 8472,
            masquerade_ports: 61000..=65535,
        };
        Topology {
            node,
            pod_a: LocalPod {
                name: "default/client".into(),
                ip: Ipv4Addr::new(10, 244, 1, 10),
                iface: InterfaceId(2),
                mac: mac([0x02, 0, 0x0a, 0xf4, 0x01, 0x0a]),
                policy: None,
            },
            pod_b: LocalPod {
                name: "default/web-0".into(),
                ip: Ipv4Addr::new(10, 244, 1, 11),
                iface: InterfaceId(3),
                mac: mac([0x02, 0, 0x0a, 0xf4, 0x01, 0x0b]),
                policy: None,
            },
            node_b: RemoteNode {
                name: "node-b".into(),
                node_ip: Ipv4Addr::new(198, 18, 0, 2),
                pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24),
                vtep_mac: mac([0x02, 0x6b, 0x78, 0x76, 0, 0x02]),
            },
            node_b_mac: mac([0x02, 0, 0xc6, 0x12, 0, 0x02]),
            remote_pod_ip: Ipv4Addr::new(10, 244, 2, 20),
            gateway_router_mac: mac([0x02, 0, 0xc6, 0x12, 0, 0xfe]),
            external_ip: Ipv4Addr::new(198, 19, 0, 7),
            web_cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            web_node_port: 30080,
            web_lb_ip: Ipv4Addr::new(198, 19, 1, 10),
            dns_cluster_ip: Ipv4Addr::new(10, 96, 0, 53),
            empty_cluster_ip: Ipv4Addr::new(10, 96, 0, 99),
            self_cluster_ip: Ipv4Addr::new(10, 96, 0, 20),
            api_cluster_ip: Ipv4Addr::new(10, 96, 0, 30),
            extra_services: 0,
            extra_backends: 10,
        }
    }
}

fn service(
    name: &str,
    proto: u8,
    frontends: Vec<Frontend>,
    backends: Vec<Backend>,
) -> ServicePortSpec {
    ServicePortSpec {
        name: name.into(),
        proto,
        frontends,
        backends,
        internal_policy: TrafficPolicy::Cluster,
        external_policy: TrafficPolicy::Cluster,
        client_ip_affinity: None,
        source_ranges: Vec::new(),
    }
}

fn cluster_ip(ip: Ipv4Addr, port: u16) -> Frontend {
    Frontend {
        kind: FrontendKind::ClusterIp,
        ip: Some(ip),
        port,
    }
}

impl Topology {
    /// The fixture with `n` extra ClusterIP services of `backends` remote endpoints each.
    pub fn with_services(n: usize, backends: usize) -> Self {
        Topology {
            extra_services: n,
            extra_backends: backends,
            ..Topology::default()
        }
    }

    /// The service port specs.
    pub fn service_specs(&self) -> Vec<ServicePortSpec> {
        let mut v = vec![
            service(
                "default/web:http",
                proto::TCP,
                vec![
                    cluster_ip(self.web_cluster_ip, 80),
                    Frontend {
                        kind: FrontendKind::NodePort,
                        ip: None,
                        port: self.web_node_port,
                    },
                    Frontend {
                        kind: FrontendKind::LoadBalancer,
                        ip: Some(self.web_lb_ip),
                        port: 80,
                    },
                ],
                vec![
                    Backend::ready(self.pod_b.ip, 8080, true),
                    Backend::ready(self.remote_pod_ip, 8080, false),
                ],
            ),
            service(
                "kube-system/dns:dns",
                proto::UDP,
                vec![cluster_ip(self.dns_cluster_ip, 53)],
                vec![Backend::ready(self.remote_pod_ip, 53, false)],
            ),
            service(
                "default/empty:http",
                proto::TCP,
                vec![cluster_ip(self.empty_cluster_ip, 80)],
                vec![],
            ),
            service(
                "default/api:https",
                proto::TCP,
                vec![cluster_ip(self.api_cluster_ip, 443)],
                vec![Backend::ready(self.pod_b.ip, 8443, true)],
            ),
            service(
                "default/self:http",
                proto::TCP,
                vec![cluster_ip(self.self_cluster_ip, 80)],
                vec![Backend::ready(self.pod_a.ip, 8080, true)],
            ),
        ];
        for i in 0..self.extra_services {
            // 10.100.0.0/16 and up: inside the service CIDR, clear of the named services.
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i as u32);
            let backends = (0..self.extra_backends)
                .map(|j| {
                    let k = (i * self.extra_backends + j) as u32;
                    let ip =
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 2, 0)) + (k % 250) + 2);
                    Backend::ready(ip, 10_000 + (k / 250) as u16, false)
                })
                .collect();
            v.push(service(
                &format!("bench/svc-{i}:http"),
                proto::TCP,
                vec![cluster_ip(vip, 80)],
                backends,
            ));
        }
        v
    }

    /// The snapshot inputs.
    pub fn inputs(&self) -> SnapshotInputs {
        SnapshotInputs {
            generation: 1,
            node: self.node.clone(),
            services: self
                .service_specs()
                .into_iter()
                .map(|s| Arc::new(ServicePort::new(s)))
                .collect(),
            pods: vec![self.pod_a.clone(), self.pod_b.clone()],
            nodes: vec![self.node_b.clone()],
            neighbors: vec![
                (self.node_b.node_ip, self.node_b_mac),
                (
                    self.node.uplink_gateway.expect("fixture has a gateway"),
                    self.gateway_router_mac,
                ),
            ],
            draining_endpoints: Vec::new(),
        }
    }

    /// The snapshot.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::build(self.inputs()).expect("the fixture topology is valid")
    }

    /// A frame from pod A (through its gateway) to `dst`.
    pub fn from_pod_a(&self, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(self.pod_a.mac, self.node.gateway_mac, self.pod_a.ip, dst)
    }

    /// A frame from pod B (through its gateway) to `dst`.
    pub fn from_pod_b(&self, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(self.pod_b.mac, self.node.gateway_mac, self.pod_b.ip, dst)
    }

    /// A frame from the node's own kernel through the host interface.
    pub fn from_host(&self, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(
            self.node.host_mac,
            self.node.gateway_mac,
            self.node.primary_ip(),
            dst,
        )
    }

    /// A frame arriving on the uplink from the gateway router.
    pub fn from_outside(&self, src: Ipv4Addr, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(self.gateway_router_mac, self.node.uplink_mac, src, dst)
    }

    /// The outer envelope of VXLAN from node B to this node.
    pub fn vxlan_from_node_b(&self) -> FrameSpec {
        FrameSpec {
            udp_checksum: false,
            ..FrameSpec::new(
                self.node_b_mac,
                self.node.uplink_mac,
                self.node_b.node_ip,
                self.node.primary_ip(),
            )
        }
    }

    /// The outer envelope of VXLAN from this node to node B.
    pub fn vxlan_to_node_b(&self) -> FrameSpec {
        FrameSpec {
            udp_checksum: false,
            ..FrameSpec::new(
                self.node.uplink_mac,
                self.node_b_mac,
                self.node.primary_ip(),
                self.node_b.node_ip,
            )
        }
    }

    /// An inner frame between VTEPs, node B to this node.
    pub fn inner_from_node_b(&self, src: Ipv4Addr, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(self.node_b.vtep_mac, self.node.vtep_mac, src, dst)
    }

    /// An inner frame between VTEPs, this node to node B.
    pub fn inner_to_node_b(&self, src: Ipv4Addr, dst: Ipv4Addr) -> FrameSpec {
        FrameSpec::new(self.node.vtep_mac, self.node_b.vtep_mac, src, dst)
    }
}

/// TCP flags for the cases.
pub use kxdp_dataplane::wire::tcp_flags;

/// One packet of a named case: where it arrives and its bytes.
#[derive(Clone, Debug)]
pub struct Input {
    /// Ingress interface.
    pub ingress: InterfaceId,
    /// The frame.
    pub frame: Vec<u8>,
}

/// The pipeline's cases, one per stage, shared by the fixture tests and the benches. Each takes
/// the client's source port so a bench can spread flows; `setup` packets must be processed
/// first (they create the conntrack state the case needs).
impl Topology {
    /// `local/pod_to_pod`: pod A to pod B, TCP ACK, on one node.
    pub fn case_pod_to_pod(&self, sport: u16) -> Input {
        Input {
            ingress: self.pod_a.iface,
            frame: self
                .from_pod_a(self.pod_b.ip)
                .tcp(sport, 9000, tcp_flags::ACK, b"payload"),
        }
    }

    /// `vxlan/encap`: pod A to a pod on node B.
    pub fn case_encap(&self, sport: u16) -> Input {
        Input {
            ingress: self.pod_a.iface,
            frame: self
                .from_pod_a(self.remote_pod_ip)
                .tcp(sport, 9000, tcp_flags::ACK, b"payload"),
        }
    }

    /// `vxlan/decap`: a pod on node B to pod A, encapsulated by node B.
    pub fn case_decap(&self, dport: u16) -> Input {
        let inner = self
            .inner_from_node_b(self.remote_pod_ip, self.pod_a.ip)
            .tcp(9000, dport, tcp_flags::ACK, b"payload");
        Input {
            ingress: self.node.uplink,
            frame: self.vxlan_from_node_b().vxlan(
                49152,
                self.node.vxlan_port,
                self.node.vxlan_vni,
                &inner,
            ),
        }
    }

    /// `service/new_flow` (a SYN) or, after it, `service/dnat_established` (an ACK): pod A to
    /// `default/api`'s ClusterIP.
    pub fn case_service(&self, sport: u16, flags: u8) -> Input {
        Input {
            ingress: self.pod_a.iface,
            frame: self
                .from_pod_a(self.api_cluster_ip)
                .tcp(sport, 443, flags, b"payload"),
        }
    }

    /// `service/reverse_nat`: pod B's reply to a `case_service` flow.
    pub fn case_service_reply(&self, sport: u16) -> Input {
        Input {
            ingress: self.pod_b.iface,
            frame: self
                .from_pod_b(self.pod_a.ip)
                .tcp(8443, sport, tcp_flags::ACK, b"reply"),
        }
    }

    /// `masquerade/egress`: pod A to a host outside the cluster.
    pub fn case_egress(&self, sport: u16, flags: u8) -> Input {
        Input {
            ingress: self.pod_a.iface,
            frame: self
                .from_pod_a(self.external_ip)
                .tcp(sport, 443, flags, b"payload"),
        }
    }
}
