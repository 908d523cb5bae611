//! A kxdp node for end-to-end tests: the runtime ([`Dataplane`]) in the node's namespace, in
//! wakeup mode with a small conntrack table, bounded in time, until stopped.

use std::time::Duration;

use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::counters::CounterValues;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;

use crate::testbed::Testbed;
pub use kxdp_xdp::runtime::Config;
use kxdp_xdp::runtime::Dataplane;
pub use kxdp_xdp::runtime::{Change, Managed};
use kxdp_xdp::worker::{IoValues, Mode};

pub use kxdp_control::model::mac_text;

/// A MAC address from `ip`'s text.
pub fn parse_mac(text: &str) -> EthernetAddress {
    let mut b = [0u8; 6];
    for (o, part) in b.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("a MAC address");
    }
    EthernetAddress(b)
}

/// The fixture's snapshot inputs ([`Topology::inputs`]) for node 0 of a testbed built by
/// [`Testbed::kxdp_and_kernel_node`]: the testbed's underlay addresses and MACs, node 1 as the
/// remote node, and the external client (if any) as a neighbour.
pub fn mixed_inputs(t: &Topology, tb: &Testbed) -> Result<SnapshotInputs, String> {
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);
    let mac = |ns: &str, dev: &str| {
        tb.mac(ns, dev)
            .map(|m| parse_mac(&m))
            .map_err(|e| e.to_string())
    };
    let mut inputs = t.inputs();
    inputs.node.node_ips = vec![kx.ip];
    inputs.node.uplink_mac = mac(&kx.ns, "uplink")?;
    inputs.nodes[0].node_ip = kernel.ip;
    inputs.nodes[0].pod_cidr = Ipv4Cidr::new(kernel.pod_net, 24);
    inputs.nodes[0].vtep_mac = parse_mac(&kernel.vtep_mac);
    inputs.neighbors = vec![(kernel.ip, mac(&kernel.ns, "uplink")?)];
    if let Some((ext_ns, ext_ip)) = &tb.external {
        inputs.neighbors.push((*ext_ip, mac(ext_ns, "eth0")?));
    }
    Ok(inputs)
}

/// Longest a test node runs, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(60);

/// The testbed of [`Testbed::kxdp_and_kernel_node`] for the fixture topology `t`: its pod A
/// on the kxdp node, one pod on the kernel node, and the external client.
pub fn fixture_and_kernel_node(t: &Topology) -> Result<Testbed, String> {
    Testbed::kxdp_and_kernel_node(
        &[(t.pod_a.ip, &mac_text(t.pod_a.mac))],
        t.node.gateway_ip,
        &mac_text(t.node.vtep_mac),
        1,
    )
    .map_err(|e| e.to_string())
}

/// A running kxdp node; stops (and detaches) when finished or dropped.
#[derive(Debug)]
pub struct KxdpNode(Dataplane);

impl KxdpNode {
    /// Start the dataplane in namespace `ns` over `ifaces` with `snapshot`: one worker in
    /// wakeup mode. Returns once the program is attached and the sockets are bound.
    pub fn start(ns: &str, ifaces: Vec<Managed>, snapshot: Snapshot) -> Result<KxdpNode, String> {
        Self::start_with(
            ns,
            ifaces,
            snapshot,
            Mode::Wakeup { timeout_ms: 50 },
            &[None],
        )
    }

    /// [`KxdpNode::start`] with the workers' mode and one worker per entry of `workers`,
    /// pinned to the core given, if any.
    pub fn start_with(
        ns: &str,
        ifaces: Vec<Managed>,
        snapshot: Snapshot,
        mode: Mode,
        workers: &[Option<usize>],
    ) -> Result<KxdpNode, String> {
        Self::start_configured(ns, ifaces, snapshot, |c| {
            c.mode = mode;
            c.workers = workers.to_vec();
        })
    }

    /// [`KxdpNode::start`] with the runtime's configuration edited by `edit`.
    pub fn start_configured(
        ns: &str,
        ifaces: Vec<Managed>,
        snapshot: Snapshot,
        edit: impl FnOnce(&mut Config),
    ) -> Result<KxdpNode, String> {
        let mut config = Config {
            netns: Some(ns.to_owned()),
            conntrack: ConntrackConfig {
                capacity: 4096,
                ..ConntrackConfig::default()
            },
            max_run: Some(MAX_RUN),
            ..Config::default()
        };
        edit(&mut config);
        Dataplane::start(config, ifaces, snapshot)
            .map(KxdpNode)
            .map_err(String::from)
    }

    /// The pipeline's counters, summed over workers, read while they run.
    pub fn counters(&self) -> CounterValues {
        self.0.counters()
    }

    /// The I/O counters, summed over workers, read while they run.
    pub fn io(&self) -> IoValues {
        self.0.io()
    }

    /// The XDP program's decision counters, by [`kxdp_xdp::XdpDecision`] number.
    pub fn xdp_decisions(&self) -> Result<[u64; kxdp_xdp::XdpDecision::COUNT], String> {
        self.0.decisions().read().map_err(|e| e.to_string())
    }

    /// Each worker's I/O counters.
    pub fn worker_io(&self) -> Vec<IoValues> {
        self.0.workers().iter().map(|w| w.io.read()).collect()
    }

    /// Apply a change while traffic flows; returns once every worker has applied it.
    pub fn change(&self, change: Change) -> Result<(), String> {
        self.0.change(change)
    }

    /// What taking the state directory found, with one ([`Config::state_dir`]).
    pub fn taken(&self) -> Option<&kxdp_xdp::state::Taken> {
        self.0.taken()
    }

    /// Whether the node handed its sockets to a successor (and so stopped).
    pub fn replaced(&self) -> bool {
        self.0.replaced()
    }

    /// Stop the node and return its workers' summed counters.
    pub fn finish(self) -> Result<CounterValues, String> {
        self.0.finish()
    }
}
