//! What the compiler reports about endpoints that leave, played through the real pipeline and
//! conntrack: a UDP flow to a DNS backend that moves is flushed and the next datagram goes to
//! the new backend; a TCP flow to a backend that leaves every service keeps getting its
//! replies translated while it drains, and the endpoint is retired once no flow is left.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use kxdp_control::compile::{Compiler, NodeSettings};
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::tcp_flags;
use kxdp_dataplane::{process_batch, Counters, Instant, Snapshot, Verdict};
use kxdp_testkit::{FrameBuf, Topology};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn fixture() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml");
    std::fs::read_to_string(p).unwrap()
}

struct Node {
    model: Model,
    compiler: Compiler,
    ct: Conntrack,
    snapshot: Arc<Snapshot>,
    now: u64,
}

impl Node {
    fn new(manifest: &str) -> Node {
        // Parsed in memory: tests run in parallel, and shared scratch files race.
        let mut model = Model::new();
        for (_, o) in parse("cluster.yaml", manifest).unwrap() {
            model.apply(&o).unwrap();
        }
        let mut node = Topology::default().node;
        node.name = "node-a".into();
        node.node_ips = vec![];
        let mut compiler = Compiler::new(NodeSettings {
            node,
            neighbors: vec![(ip("198.18.0.11"), Topology::default().node_b_mac)],
        });
        let snapshot = compiler.compile(&mut model).unwrap().snapshot;
        let ct = Conntrack::new(ConntrackConfig {
            capacity: 1024,
            ..ConntrackConfig::default()
        });
        Node {
            model,
            compiler,
            ct,
            snapshot,
            now: 1_000_000,
        }
    }

    /// Apply the slice (by key) from `manifest`, compile, and flush what the compiler says.
    fn apply_slice(&mut self, manifest: &str, key: &str) {
        let objects = parse("change.yaml", manifest).unwrap();
        let slice = objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| o.key() == key)
            .unwrap();
        assert!(self.model.apply(slice).unwrap());
        let c = self.compiler.compile(&mut self.model).unwrap();
        self.snapshot = c.snapshot;
        self.ct.flush_udp_to(&c.flush_udp);
    }

    /// One frame from a local pod through the pipeline.
    fn send(&mut self, from: Ipv4Addr, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
        let iface = self.snapshot.local_pod(from).expect("a local pod").iface;
        let mut buf = FrameBuf::new(&frame);
        let mut packets = [buf.packet(iface)];
        self.now += 1_000_000;
        process_batch(
            &mut packets,
            &self.snapshot,
            &self.ct,
            &Counters::new(),
            Instant::from_nanos(self.now),
        );
        (packets[0].verdict, packets[0].frame.data().to_vec())
    }

    fn spec(&self, from: Ipv4Addr, to: Ipv4Addr) -> FrameSpec {
        let pod = self.snapshot.local_pod(from).unwrap();
        FrameSpec::new(pod.mac, self.snapshot.node.gateway_mac, from, to)
    }

    fn flows_to(&self, endpoints: &[(&str, u8, u16)]) -> HashSet<(Ipv4Addr, u8, u16)> {
        let set = endpoints.iter().map(|(a, p, n)| (ip(a), *p, *n)).collect();
        self.ct.endpoints_with_flows(&set)
    }
}

#[test]
fn a_moved_udp_backend_is_flushed_and_the_next_datagram_goes_to_the_new_one() {
    let text = fixture();
    let mut node = Node::new(&text);
    let client = ip("10.244.1.11");
    let dns = node.spec(client, ip("10.96.0.53")).udp(40000, 53, b"query");
    let (v, _) = node.send(client, dns.clone());
    assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
    assert_eq!(node.flows_to(&[("10.244.2.20", 17, 53)]).len(), 1);

    let moved = text.replace("addresses: [10.244.2.20]", "addresses: [10.244.2.21]");
    node.apply_slice(&moved, "kube-system/dns-1");
    assert!(
        node.flows_to(&[("10.244.2.20", 17, 53)]).is_empty(),
        "the flow to the old backend was flushed"
    );
    node.send(client, dns);
    assert_eq!(node.flows_to(&[("10.244.2.21", 17, 53)]).len(), 1);
}

#[test]
fn a_tcp_backend_that_leaves_drains_then_retires() {
    // Only the local backend, so its replies come from a pod interface here.
    let text = fixture().replace(
        "  - addresses: [10.244.2.10]\n    nodeName: node-b\n    conditions: {ready: true}\n",
        "",
    );
    let mut node = Node::new(&text);
    let (client, web0) = (ip("10.244.1.11"), ip("10.244.1.10"));
    let syn = node
        .spec(client, ip("10.96.0.10"))
        .tcp(40001, 80, tcp_flags::SYN, b"");
    let (v, _) = node.send(client, syn);
    assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");

    // web-0 leaves the service (its slice now lists node-b's pod only).
    let gone = fixture().replace(
        "  - addresses: [10.244.1.10]\n    nodeName: node-a\n    conditions: {ready: true}\n",
        "",
    );
    node.apply_slice(&gone, "default/web-abc");
    let draining: Vec<_> = node.compiler.draining().copied().collect();
    assert_eq!(draining, [(web0, 6, 8080)]);

    // Its SYN-ACK still comes back from the service address.
    let syn_ack = node
        .spec(web0, client)
        .tcp(8080, 40001, tcp_flags::SYN | tcp_flags::ACK, b"");
    let (v, frame) = node.send(web0, syn_ack);
    assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
    let ip4 = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip4.source_addr(),
        ip("10.96.0.10"),
        "reverse-translated while draining"
    );

    // Retired only once no flow is left.
    let flows = |c: &Conntrack, e: &(Ipv4Addr, u8, u16)| {
        c.endpoints_with_flows(&HashSet::from([*e])).contains(e)
    };
    node.compiler.retire_draining(|e| flows(&node.ct, e));
    assert_eq!(node.compiler.draining().count(), 1, "its flow is open");
    node.ct.retain(|_, _| false);
    node.compiler.retire_draining(|e| flows(&node.ct, e));
    assert_eq!(node.compiler.draining().count(), 0);
    let c = node.compiler.compile(&mut node.model).unwrap();
    assert!(!c.snapshot.services.is_backend(web0, 6, 8080));
}
