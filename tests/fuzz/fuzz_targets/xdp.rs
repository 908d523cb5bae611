//! The XDP steering program on arbitrary frames, run in the kernel through
//! `BPF_PROG_TEST_RUN` (as `tests/tests/xdp_decisions.rs` runs it on the fixture's cases),
//! against a reference model of its decision.
//!
//! The program is loaded once and its maps synced from one of two snapshots: the fixture
//! node, or a variant that moves every value the program reads (a second node address that
//! alone takes NodePorts, another VXLAN port and masquerade range, no VXLAN peer, UDP services
//! on external and load-balancer addresses); switching between them exercises `sync`'s diff.
//! Each run gives the loopback device (ifindex 1, attached to nothing) one role, and checks:
//!
//! - `test_run` never fails for a frame the kernel takes (see [`FRAME_LEN`]);
//! - the action, and exactly which decision counters moved, are what the model says. The
//!   model is the program's header comment written out in Rust from the frame's bytes and
//!   the snapshot (what `sync` puts in the maps): an unmanaged interface passes everything;
//!   a pod or host interface steers everything; the uplink steers VXLAN to a node address
//!   from a known node, service frontends and masquerade replies (ICMP errors quoting a
//!   masqueraded flow included), drops VXLAN to a node address from anyone else, and passes
//!   the rest, non-IPv4, malformed (truncated, options, fragments) and not the dataplane's
//!   alike. No AF_XDP socket is registered, so every steered frame is dropped and counted
//!   `no_socket` as well: each run moves one decision counter, or two for a steered frame,
//!   and never returns `XDP_REDIRECT`.
//!
//! Input: a selector byte, then the frame. The selector's bits 0-6 modulo 5 pick the role:
//! no entry in the `ifaces` map, unmanaged, uplink, pod, host; bit 7 the snapshot.
//!
//! Needs root (CAP_BPF and CAP_NET_ADMIN): without, the first run panics saying so, so CI
//! does not mistake a target that cannot load for a clean one.
#![no_main]

use core::net::Ipv4Addr;
use core::ops::RangeInclusive;
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Arc;

use kxdp_dataplane::flow::proto;
use kxdp_dataplane::tables::{
    Backend, Frontend, FrontendKind, ServicePort, ServicePortSpec, Snapshot, TrafficPolicy,
};
use kxdp_testkit::Topology;
use kxdp_xdp::{action, Decisions, IfRole, Steering, XdpDecision};
use libfuzzer_sys::fuzz_target;

/// The loopback device: it exists in every namespace and has one registered rx queue, all
/// `BPF_PROG_TEST_RUN` needs for an ingress interface. Nothing is attached to it.
const IFINDEX: u32 = 1;

/// The frame lengths `BPF_PROG_TEST_RUN` takes for this program (found by running it on Linux
/// 6.18, x86-64, 4 KiB pages; `bpf_prog_test_run_xdp`): at least `ETH_HLEN` (14) bytes (less
/// is `EINVAL`); at most what fits the linear buffer (a page less `XDP_PACKET_HEADROOM` (256)
/// and the `skb_shared_info` tailroom, 3520 bytes here) plus `MAX_SKB_FRAGS` (17) whole pages
/// of fragments, since the program is `xdp.frags`; past that the kernel refuses with `ENOMEM`.
const FRAME_LEN: RangeInclusive<usize> = 14..=3520 + 17 * 4096;

/// What the program is told about interface [`IFINDEX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// No entry in the `ifaces` map.
    Absent,
    /// An entry with this role.
    Set(IfRole),
}

const ROLES: [Role; 5] = [
    Role::Absent,
    Role::Set(IfRole::Unmanaged),
    Role::Set(IfRole::Uplink),
    Role::Set(IfRole::Pod),
    Role::Set(IfRole::Host),
];

/// A snapshot, and what `sync` puts in the program's maps from it, for the model.
struct Tables {
    snap: Snapshot,
    node_ips: HashSet<Ipv4Addr>,
    peers: HashSet<Ipv4Addr>,
    /// (address, port, protocol).
    frontends: HashSet<(Ipv4Addr, u16, u8)>,
    vxlan_port: u16,
    masquerade: RangeInclusive<u16>,
}

impl Tables {
    fn new(snap: Snapshot) -> Tables {
        let node = &snap.node;
        let mut frontends = HashSet::new();
        for port in snap.services.ports() {
            let spec = port.spec();
            for fe in &spec.frontends {
                let addrs = match (fe.kind, fe.ip) {
                    (FrontendKind::NodePort, _) | (_, None) => node.nodeport_ips().to_vec(),
                    (_, Some(ip)) => vec![ip],
                };
                frontends.extend(addrs.into_iter().map(|a| (a, fe.port, spec.proto)));
            }
        }
        Tables {
            node_ips: node.node_ips.iter().copied().collect(),
            peers: snap.remote_nodes().iter().map(|r| r.node.node_ip).collect(),
            frontends,
            vxlan_port: node.vxlan_port,
            masquerade: node.masquerade_ports.clone(),
            snap,
        }
    }

    /// The decision counter for `frame` on the uplink, as the program's `classify_uplink`
    /// (with the Ethernet check before it) should reach it.
    fn classify_uplink(&self, f: &[u8]) -> XdpDecision {
        let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let addr = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let masq = |port: u16| self.masquerade.contains(&port);
        if f.len() < 14 || be16(12) != 0x0800 {
            return XdpDecision::PassNotIpv4;
        }
        if f.len() < 34 || f[14] != 0x45 || be16(20) & 0x3fff != 0 {
            return XdpDecision::PassMalformed;
        }
        let (protocol, src, dst) = (f[23], addr(26), addr(30));
        let to_node = self.node_ips.contains(&dst);
        match protocol {
            proto::TCP | proto::UDP => {
                if f.len() < 38 {
                    return XdpDecision::PassMalformed;
                }
                let dport = be16(36);
                if protocol == proto::UDP && dport == self.vxlan_port && to_node {
                    if self.peers.contains(&src) {
                        XdpDecision::XskVxlan
                    } else {
                        XdpDecision::DropUnknownPeer
                    }
                } else if self.frontends.contains(&(dst, dport, protocol)) {
                    XdpDecision::XskService
                } else if masq(dport) && to_node {
                    XdpDecision::XskMasqReply
                } else {
                    XdpDecision::PassNotOurs
                }
            }
            proto::ICMP => {
                if f.len() < 42 {
                    return XdpDecision::PassMalformed;
                }
                let (kind, id) = (f[34], be16(38));
                // The packet an ICMP error quotes, from byte 42: ours if its source port (or
                // echo identifier) is a masquerade port. Its version is not looked at.
                let quotes_masq_flow = || match f.get(42..62) {
                    Some(q) if q[0] & 0x0f == 5 => match q[9] {
                        proto::TCP | proto::UDP => f.len() >= 64 && masq(be16(62)),
                        proto::ICMP => f.len() >= 70 && f[62] == 8 && masq(be16(66)),
                        _ => false,
                    },
                    _ => false,
                };
                if to_node
                    && ((kind == 0 && masq(id)) || (matches!(kind, 3 | 11) && quotes_masq_flow()))
                {
                    XdpDecision::XskMasqReply
                } else {
                    XdpDecision::PassNotOurs
                }
            }
            _ => XdpDecision::PassNotOurs,
        }
    }

    /// The action and the counters that move for `frame` on an interface of `role`.
    fn expect(&self, role: Role, frame: &[u8]) -> (u32, Vec<XdpDecision>) {
        let stat = match role {
            Role::Absent | Role::Set(IfRole::Unmanaged) => XdpDecision::PassUnmanaged,
            Role::Set(IfRole::Pod | IfRole::Host) => XdpDecision::XskPod,
            Role::Set(IfRole::Uplink) => self.classify_uplink(frame),
        };
        match stat {
            // Steered, but no socket is on the queue.
            XdpDecision::XskPod
            | XdpDecision::XskVxlan
            | XdpDecision::XskService
            | XdpDecision::XskMasqReply => (action::DROP, vec![stat, XdpDecision::NoSocket]),
            XdpDecision::DropUnknownPeer => (action::DROP, vec![stat]),
            _ => (action::PASS, vec![stat]),
        }
    }
}

/// The fixture node with every value the program reads moved.
fn variant(t: &Topology) -> Snapshot {
    let mut inputs = t.inputs();
    let node = &mut inputs.node;
    let second = Ipv4Addr::new(198, 18, 0, 3);
    node.node_ips.push(second);
    node.nodeport_ips = Some(vec![second]);
    node.vxlan_port = 4789;
    node.masquerade_ports = 40000..=40999;
    inputs.nodes.clear();
    let frontend = |kind, ip: Option<[u8; 4]>, port| Frontend {
        kind,
        ip: ip.map(Ipv4Addr::from),
        port,
    };
    inputs
        .services
        .push(Arc::new(ServicePort::new(ServicePortSpec {
            name: "fuzz/udp:dns".into(),
            proto: proto::UDP,
            frontends: vec![
                frontend(FrontendKind::ClusterIp, Some([10, 96, 7, 7]), 53),
                frontend(FrontendKind::ExternalIp, Some([203, 0, 113, 5]), 5353),
                frontend(FrontendKind::LoadBalancer, Some([198, 19, 1, 11]), 53),
                frontend(FrontendKind::NodePort, None, 31053),
            ],
            backends: vec![Backend::ready(t.pod_b.ip, 5353, true)],
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Local,
            client_ip_affinity: None,
            source_ranges: Vec::new(),
        })));
    Snapshot::build(inputs).expect("the variant node is valid")
}

/// The loaded program, its two table sets, and what it was last told.
struct World {
    st: Steering,
    decisions: Decisions,
    tables: [Tables; 2],
    synced: Cell<Option<usize>>,
    role: Cell<Option<Role>>,
    /// The counters after the last run: nothing else runs the program, so they are the next
    /// run's starting point.
    counters: Cell<[u64; XdpDecision::COUNT]>,
}

impl World {
    fn load() -> World {
        let st = Steering::load().unwrap_or_else(|e| {
            panic!(
                "the xdp fuzz target loads kxdp's XDP program and runs it through \
                 BPF_PROG_TEST_RUN, which needs root (CAP_BPF and CAP_NET_ADMIN): {e}"
            )
        });
        let decisions = st.decisions().expect("the program's counters");
        let counters = decisions.read().expect("reading the counters");
        let t = Topology::default();
        World {
            tables: [Tables::new(t.snapshot()), Tables::new(variant(&t))],
            st,
            decisions,
            synced: Cell::new(None),
            role: Cell::new(None),
            counters: Cell::new(counters),
        }
    }

    fn use_tables(&self, i: usize) -> &Tables {
        if self.synced.get() != Some(i) {
            self.st
                .sync(&self.tables[i].snap)
                .expect("syncing the maps");
            self.synced.set(Some(i));
        }
        &self.tables[i]
    }

    fn set_role(&self, role: Role) {
        if self.role.get() == Some(role) {
            return;
        }
        match role {
            Role::Absent => self.st.clear_interface(IFINDEX),
            Role::Set(r) => self.st.set_interface(IFINDEX, r, 0),
        }
        .expect("setting the interface's role");
        self.role.set(Some(role));
    }
}

thread_local! {
    /// The program handle is not `Sync`; libFuzzer runs every input on one thread.
    static WORLD: World = World::load();
}

fuzz_target!(|data: &[u8]| {
    let [sel, frame @ ..] = data else {
        return;
    };
    if !FRAME_LEN.contains(&frame.len()) {
        return;
    }
    WORLD.with(|w| {
        let tables = w.use_tables(usize::from(sel >> 7));
        let role = ROLES[usize::from(sel & 0x7f) % ROLES.len()];
        w.set_role(role);
        let verdict =
            w.st.test_run(frame, IFINDEX)
                .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN refused {} bytes: {e}", frame.len()));
        let after = w.decisions.read().expect("reading the counters");
        let before = w.counters.replace(after);
        let moved: Vec<XdpDecision> = XdpDecision::ALL
            .iter()
            .copied()
            .filter(|s| after[*s as usize] != before[*s as usize])
            .collect();
        for s in &moved {
            assert_eq!(
                after[*s as usize],
                before[*s as usize] + 1,
                "{s:?} moved by more than one"
            );
        }
        assert!(
            [action::DROP, action::PASS, action::REDIRECT].contains(&verdict),
            "action {verdict}"
        );
        assert_eq!(
            (verdict, moved),
            tables.expect(role, frame),
            "{role:?}, {} bytes",
            frame.len()
        );
    });
});
