//! A kxdp node for end-to-end tests: the steering program attached to the node's managed
//! interfaces, an AF_XDP port on each, and a worker (wakeup mode) running the pipeline over
//! them in a thread inside the node's namespace, until stopped.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallClock};

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::CounterValues;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::testkit::Topology;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_dataplane::{Counters, Instant, Snapshot};

use crate::testbed::Testbed;
use kxdp_xdp::worker::{IoCounters, IoValues, Mode, Worker};
use kxdp_xdp::xsk::{Port, PortConfig, Umem};
use kxdp_xdp::{enter_netns, ifindex, IfRole, Steering};

/// One interface the node's dataplane drives.
#[derive(Clone, Debug)]
pub struct Managed {
    /// Its name in the node's namespace.
    pub name: String,
    /// The snapshot's number for it.
    pub id: InterfaceId,
    /// What it is.
    pub role: IfRole,
}

/// A change to a running node: a new snapshot, with an interface that came or went.
#[derive(Debug)]
pub enum Change {
    /// Start serving this interface (a pod came up), then use the snapshot.
    Add(Managed, Snapshot),
    /// Use the snapshot, then stop serving this interface (a pod went away).
    Remove(InterfaceId, Snapshot),
}

impl Managed {
    /// A pod's veth, host end `name`.
    pub fn pod(name: &str, id: InterfaceId) -> Managed {
        Managed {
            name: name.into(),
            id,
            role: IfRole::Pod,
        }
    }

    /// The node's uplink, named `uplink` in the testbed.
    pub fn uplink(id: InterfaceId) -> Managed {
        Managed {
            name: "uplink".into(),
            id,
            role: IfRole::Uplink,
        }
    }
}

/// A running kxdp node; stops (and detaches) when finished or dropped.
#[derive(Debug)]
pub struct KxdpNode {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    io: Arc<IoCounters>,
    changes: mpsc::Sender<(Change, mpsc::Sender<Result<(), String>>)>,
    worker: Option<JoinHandle<Result<CounterValues, String>>>,
}

/// A MAC address as `ip` prints it.
pub fn mac_text(mac: EthernetAddress) -> String {
    mac.0.map(|b| format!("{b:02x}")).join(":")
}

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

impl KxdpNode {
    /// Start the dataplane in namespace `ns` over `ifaces` with `snapshot`, in wakeup mode.
    /// Returns once the program is attached and the sockets are bound, or with why not.
    pub fn start(ns: &str, ifaces: Vec<Managed>, snapshot: Snapshot) -> Result<KxdpNode, String> {
        Self::start_with(ns, ifaces, snapshot, Mode::Wakeup { timeout_ms: 50 }, None)
    }

    /// [`KxdpNode::start`] with the worker's mode and, optionally, the core it is pinned to.
    pub fn start_with(
        ns: &str,
        ifaces: Vec<Managed>,
        snapshot: Snapshot,
        mode: Mode,
        core: Option<usize>,
    ) -> Result<KxdpNode, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (changes, changes_rx) = mpsc::channel();
        let worker = {
            let (ns, stop) = (ns.to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || {
                run(ns, ifaces, snapshot, mode, core, stop, ready_tx, changes_rx)
            })
        };
        let ready = ready_rx.recv_timeout(Duration::from_secs(20));
        let mut node = KxdpNode {
            stop,
            counters: Arc::new(Counters::new()),
            io: Arc::new(IoCounters::default()),
            changes,
            worker: Some(worker),
        };
        let (counters, io) = ready.map_err(|e| format!("the worker did not report: {e}"))??;
        node.counters = counters;
        node.io = io;
        Ok(node)
    }

    /// The pipeline's counters, read while the worker runs.
    pub fn counters(&self) -> CounterValues {
        self.counters.read()
    }

    /// The worker's I/O counters, read while it runs.
    pub fn io(&self) -> IoValues {
        self.io.read()
    }

    /// Apply a change while traffic flows; returns once the worker has applied it.
    pub fn change(&self, change: Change) -> Result<(), String> {
        let (done_tx, done_rx) = mpsc::channel();
        self.changes
            .send((change, done_tx))
            .map_err(|_| "the worker has stopped".to_owned())?;
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("the worker did not apply the change: {e}"))?
    }

    /// Stop the node and return its worker's counters.
    pub fn finish(mut self) -> Result<CounterValues, String> {
        self.stop.store(true, Relaxed);
        let worker = self.worker.take().expect("running until finished");
        worker
            .join()
            .map_err(|_| "the worker panicked".to_owned())?
    }
}

impl Drop for KxdpNode {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

type ChangeRequest = (Change, mpsc::Sender<Result<(), String>>);

/// What the worker shares with the test thread: its counters.
type Shared = (Arc<Counters>, Arc<IoCounters>);

/// Attach the program to `m` and bind a port on it, on `umem`, at XSKMAP slot `base`.
fn bring_up(
    st: &Steering,
    umem: &std::rc::Rc<Umem>,
    m: &Managed,
    base: u32,
) -> Result<(kxdp_xdp::Attachment, Port), String> {
    let index = ifindex(&m.name).map_err(|e| format!("{}: {e}", m.name))?;
    st.set_interface(index, m.role, base)
        .map_err(|e| e.to_string())?;
    let link = st.attach(index).map_err(|e| e.to_string())?;
    let port = Port::open_shared(&m.name, 0, umem).map_err(|e| e.to_string())?;
    st.register_socket(base, port.fd())
        .map_err(|e| e.to_string())?;
    Ok((link, port))
}

#[allow(clippy::too_many_arguments)] // One thread's whole configuration, passed once.
fn run(
    ns: String,
    ifaces: Vec<Managed>,
    mut snap: Snapshot,
    mode: Mode,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<Shared, String>>,
    changes: mpsc::Receiver<ChangeRequest>,
) -> Result<CounterValues, String> {
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 4096,
        ..ConntrackConfig::default()
    });
    let setup = (|| -> Result<_, String> {
        enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
        if let Some(core) = core {
            kxdp_xdp::pin_current_thread(core).map_err(|e| format!("pinning to {core}: {e}"))?;
        }
        let st = Steering::load().map_err(|e| e.to_string())?;
        st.sync(&snap).map_err(|e| e.to_string())?;
        // One UMEM for all of this worker's ports: frames move between them without copies.
        let umem = Umem::new(PortConfig::default()).map_err(|e| e.to_string())?;
        let mut links = Vec::new();
        let mut ports = Vec::new();
        for (j, m) in ifaces.iter().enumerate() {
            let (link, port) = bring_up(&st, &umem, m, 64 * j as u32)?;
            links.push((m.id, link));
            ports.push((m.id, port));
        }
        Ok((st, umem, links, ports))
    })();
    let (st, umem, mut links, ports) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let mut worker = Worker::new(ports, Arc::new(Counters::new()));
    worker.prime();
    let _ = ready.send(Ok((Arc::clone(worker.counters()), Arc::clone(worker.io()))));
    let started = WallClock::now();
    let mut next_base = 64 * ifaces.len() as u32;
    while !stop.load(Relaxed) && started.elapsed() < MAX_RUN {
        while let Ok((change, done)) = changes.try_recv() {
            let result = match change {
                Change::Add(m, new_snap) => {
                    bring_up(&st, &umem, &m, next_base).map(|(link, port)| {
                        next_base += 64;
                        links.push((m.id, link));
                        worker.add_port(m.id, port);
                        snap = new_snap;
                    })
                }
                Change::Remove(id, new_snap) => {
                    snap = new_snap;
                    drop(worker.remove_port(id));
                    links.retain(|(l, _)| *l != id);
                    Ok(())
                }
            };
            let _ = done.send(result);
        }
        let now = Instant::from_nanos(started.elapsed().as_nanos() as u64);
        worker
            .poll_once(&snap, &ct, now, mode)
            .map_err(|e| e.to_string())?;
    }
    Ok(worker.counters().read())
}
