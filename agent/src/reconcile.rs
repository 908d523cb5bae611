//! The agent's reconciler: it owns the compiler and the dataplane, makes each compiled
//! snapshot live (starting the dataplane with the first one), serves exactly the pod
//! interfaces the live snapshot has and the kernel shows up, follows the underlay neighbours
//! the kernel resolved, and retires draining endpoints once conntrack holds no flow to them.
//!
//! It does no I/O toward the kernel's tables itself: the run loop feeds it what netlink says
//! ([`Agent::link_changed`], [`Agent::neighbor_changed`], and whole tables on a resync) and
//! asks it which next hops to resolve ([`Agent::missing_neighbors`]). A dataplane that cannot
//! start for a reason that may pass (another XDP program on the uplink, an rx queue still
//! held) is tried again with a bounded backoff ([`Agent::retry_at`]) while `/readyz` says why;
//! one that cannot start for good ends the agent with the cause.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kxdp_control::compile::{Compiled, Compiler, NodeSettings};
use kxdp_control::model::Model;
use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::wire::EthernetAddress;
use kxdp_dataplane::Snapshot;
use kxdp_xdp::runtime::{Change, Config as DataplaneConfig, Dataplane, Managed, StartError};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::IfRole;

use crate::admin::{AdminState, DataplaneView};
use crate::healthcheck::HealthChecks;
use crate::nodefacts::{Link, Neighbor};
use crate::settings::{AgentConfig, AgentError};

/// The uplink's and the host interface's numbers in every snapshot the agent builds.
pub(crate) const UPLINK: InterfaceId = InterfaceId(0);
pub(crate) const HOST: InterfaceId = InterfaceId(1);

/// The first wait before starting the dataplane again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// When to try again (starting the dataplane, serving pod interfaces): after `RETRY_FIRST`,
/// doubling up to `RETRY_MAX`.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    /// A try failed: the wait before the next one.
    fn failed(&mut self, now: Instant) -> Duration {
        self.delay = if self.delay.is_zero() {
            RETRY_FIRST
        } else {
            (self.delay * 2).min(RETRY_MAX)
        };
        self.next = Some(now + self.delay);
        self.delay
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// The loop's state: the compiler and what the dataplane serves.
pub(crate) struct Agent {
    uplink: String,
    host: Option<String>,
    cores: Vec<Option<usize>>,
    mode: Mode,
    tunnel_gso: bool,
    conntrack_size: u32,
    /// Where the dataplane's lasting state is kept, if it outlives the agent.
    state_dir: Option<std::path::PathBuf>,
    compiler: Compiler,
    dataplane: Option<Dataplane>,
    /// Pod interfaces served: name to (number, ifindex when added).
    served: BTreeMap<String, (InterfaceId, u32)>,
    /// Pod interfaces the live snapshot has.
    wanted: Vec<(String, InterfaceId)>,
    /// The namespace's links as netlink reported them: name to (ifindex, up).
    links: BTreeMap<String, (u32, bool)>,
    /// Pod interfaces that could not be served or released, with why: tried again on the
    /// first housekeeping round after `interface_retry`, and shown in `/api/status` meanwhile.
    interface_errors: BTreeMap<String, String>,
    interface_retry: Backoff,
    /// The uplink's ifindex, and the neighbours the kernel has resolved on it.
    uplink_index: u32,
    neighbors: BTreeMap<Ipv4Addr, EthernetAddress>,
    start_retry: Backoff,
    pub(crate) live: Option<Arc<Snapshot>>,
    state: Arc<AdminState>,
    logged_problems: HashSet<String>,
    health_checks: HealthChecks,
}

impl Agent {
    pub(crate) fn new(
        config: &AgentConfig,
        settings: NodeSettings,
        uplink_index: u32,
        state: Arc<AdminState>,
    ) -> Agent {
        Agent {
            uplink: config.uplink.clone(),
            host: config.host_interface.clone(),
            cores: config.cores.clone(),
            mode: config.mode,
            tunnel_gso: config.tunnel_gso,
            conntrack_size: config.conntrack_size,
            state_dir: config.state_dir.clone(),
            compiler: Compiler::new(settings),
            dataplane: None,
            served: BTreeMap::new(),
            wanted: Vec::new(),
            links: BTreeMap::new(),
            interface_errors: BTreeMap::new(),
            uplink_index,
            neighbors: BTreeMap::new(),
            start_retry: Backoff::default(),
            interface_retry: Backoff::default(),
            live: None,
            health_checks: HealthChecks::new(Arc::clone(&state)),
            state,
            logged_problems: HashSet::new(),
        }
    }

    /// Compile the model and make the result live (starting the dataplane the first time).
    /// Fails only when the dataplane cannot start for good; a start that may succeed later
    /// is scheduled again ([`Agent::retry_at`]) and reported through the admin state.
    pub(crate) fn publish(
        &mut self,
        model: &mut Model,
        noticed: Instant,
    ) -> Result<(), AgentError> {
        // A scheduled start retry is spent by this publish, whatever comes of it: a start that
        // fails again schedules the next one, and a model that no longer compiles waits for
        // the change that fixes it (a retry left in the past would fire at once, forever).
        self.start_retry.next = None;
        let started = Instant::now();
        let compiled = match self.compiler.compile(model) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "not published");
                self.state.set_error(e.to_string());
                return Ok(());
            }
        };
        for p in &compiled.problems {
            if self.logged_problems.insert(p.clone()) {
                tracing::warn!(problem = %p, "left out of the tables");
            }
        }
        let generation = compiled.snapshot.generation;
        let health_checks = compiled.health_checks.clone();
        let result = if self.dataplane.is_some() {
            self.update(compiled)
        } else {
            match self.start(compiled) {
                Ok(problems) => {
                    self.start_retry.succeeded();
                    Ok(problems)
                }
                Err(e) if e.may_pass() => {
                    let delay = self.start_retry.failed(Instant::now());
                    tracing::error!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "the dataplane did not start; trying again"
                    );
                    self.state.set_error(format!(
                        "the dataplane did not start: {e} (trying again in {delay:?})"
                    ));
                    return Ok(());
                }
                Err(e) => {
                    let why = format!("the dataplane cannot start: {e}");
                    self.state.set_error(why.clone());
                    return Err(AgentError::Other(why));
                }
            }
        };
        match result {
            Ok(mut problems) => {
                let latency = noticed.elapsed();
                // The tables are live in the workers now: each trigger time is measured
                // against this moment, as kube-proxy's network programming latency is.
                let live = std::time::SystemTime::now();
                self.state.programmed(&model.take_trigger_times(), live);
                self.state.synced_in(started.elapsed());
                if let Some(snap) = &self.live {
                    let addrs = snap.node.nodeport_ips().to_vec();
                    problems.extend(self.health_checks.sync(&health_checks, &addrs));
                }
                tracing::info!(
                    generation,
                    latency_us = latency.as_micros() as u64,
                    pods = self.wanted.len(),
                    "snapshot live"
                );
                if let Some(snap) = &self.live {
                    self.state.published(Arc::clone(snap), latency, problems);
                }
                self.report_interfaces();
            }
            Err(e) => {
                tracing::error!(error = %e, "publishing");
                self.state.set_error(e);
            }
        }
        Ok(())
    }

    /// When to try starting the dataplane again, if a start failed in a way that may pass.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.start_retry.next
    }

    fn start(&mut self, compiled: Compiled) -> Result<Vec<String>, StartError> {
        let mut ifaces = vec![Managed {
            name: self.uplink.clone(),
            id: UPLINK,
            role: IfRole::Uplink,
        }];
        if let Some(host) = &self.host {
            ifaces.push(Managed {
                name: host.clone(),
                id: HOST,
                role: IfRole::Host,
            });
        }
        let config = DataplaneConfig {
            workers: self.cores.clone(),
            mode: self.mode,
            tunnel_gso: self.tunnel_gso,
            conntrack: ConntrackConfig {
                capacity: self.conntrack_size,
                ..ConntrackConfig::default()
            },
            state_dir: self.state_dir.clone(),
            // A predecessor's sockets on these are served from the start.
            pods: compiled
                .interfaces
                .iter()
                .filter(|(name, _)| matches!(self.links.get(name.as_str()), Some((_, true))))
                .map(|(name, id)| Managed::pod(name, *id))
                .collect(),
            ..DataplaneConfig::default()
        };
        // The node's own interfaces only: a pod interface that cannot be served (another XDP
        // program on it, say) must not keep the node from starting. The pods follow below,
        // each on its own.
        let dp = Dataplane::start(config, ifaces, Arc::clone(&compiled.snapshot))?;
        let now = dp.now();
        self.state.set_dataplane(DataplaneView {
            workers: dp.workers().to_vec(),
            cores: self.cores.clone(),
            conntrack: Arc::clone(dp.conntrack()),
            clock_origin: Instant::now() - Duration::from_nanos(now.as_nanos()),
            decisions: Some(Arc::clone(dp.decisions())),
        });
        if let Some(t) = dp.taken() {
            log_taken(t, self.state_dir.as_deref());
        }
        tracing::info!(modes = ?dp.modes(), "dataplane started");
        self.dataplane = Some(dp);
        self.served = BTreeMap::new();
        self.wanted = compiled.interfaces;
        self.live = Some(compiled.snapshot);
        if let Err(e) = self.sync_interfaces(None) {
            tracing::warn!(error = %e, "pod interfaces");
        }
        Ok(compiled.problems)
    }

    fn update(&mut self, compiled: Compiled) -> Result<Vec<String>, String> {
        self.wanted = compiled.interfaces;
        self.live = Some(Arc::clone(&compiled.snapshot));
        self.sync_interfaces(Some(compiled.flush_udp))?;
        Ok(compiled.problems)
    }

    /// Serve exactly the wanted interfaces that exist and are up, with the live snapshot;
    /// publish it (with a UDP flush) when `flush` is given. An interface that cannot be
    /// released or served holds back neither the others nor the publish: it is logged (once
    /// per error), shown in `/api/status` and tried again after 0.5 s, doubling to 10 s.
    /// Fails only when the publish does.
    fn sync_interfaces(&mut self, flush: Option<Vec<(Ipv4Addr, u16)>>) -> Result<(), String> {
        let (Some(dp), Some(snap)) = (&self.dataplane, &self.live) else {
            return Ok(());
        };
        let wanted: BTreeMap<&str, InterfaceId> = self
            .wanted
            .iter()
            .map(|(n, id)| (n.as_str(), *id))
            .collect();
        // Gone from the tables, renumbered, or recreated (a new ifindex) since it was added.
        let stale: Vec<(String, InterfaceId)> = self
            .served
            .iter()
            .filter(|(name, (id, index))| {
                wanted.get(name.as_str()) != Some(id)
                    || self.links.get(name.as_str()).map(|l| l.0) != Some(*index)
            })
            .map(|(name, (id, _))| (name.clone(), *id))
            .collect();
        let mut failed = BTreeMap::new();
        let mut changed = false;
        for (name, id) in &stale {
            match dp.change(Change::Remove(*id, Arc::clone(snap))) {
                Ok(()) => {
                    self.served.remove(name);
                    tracing::info!(interface = %name, "pod interface released");
                    changed = true;
                }
                // Still served as far as the agent knows: released on the next round.
                Err(e) => {
                    failed.insert(name.clone(), format!("not released: {e}"));
                }
            }
        }
        for (name, id) in &wanted {
            if self.served.contains_key(*name) {
                continue;
            }
            let Some((index, true)) = self.links.get(*name).copied() else {
                continue;
            };
            match dp.change(Change::Add(Managed::pod(name, *id), Arc::clone(snap))) {
                Ok(()) => {
                    self.served.insert((*name).to_owned(), (*id, index));
                    tracing::info!(interface = %name, "pod interface served");
                    changed = true;
                }
                // It may have gone again (then its removal comes as an event), be busy for a
                // moment, or hold another XDP program until someone removes it.
                Err(e) => {
                    failed.insert((*name).to_owned(), format!("not served: {e}"));
                }
            }
        }
        // Whatever happened to the interfaces: the compiler handed its UDP flush over once.
        let published = match flush {
            Some(flush) => dp.change(Change::Publish(Arc::clone(snap), flush)),
            None => Ok(()),
        };
        if failed.is_empty() {
            self.interface_retry.succeeded();
        } else {
            self.interface_retry.failed(Instant::now());
        }
        self.note_interface_errors(failed);
        if changed {
            self.report_interfaces();
        }
        published
    }

    /// The interfaces this sync could not serve or release: each new error is logged, and
    /// the list goes to the admin state.
    fn note_interface_errors(&mut self, failed: BTreeMap<String, String>) {
        if failed == self.interface_errors {
            return;
        }
        for (name, why) in &failed {
            if self.interface_errors.get(name) != Some(why) {
                tracing::warn!(interface = %name, error = %why, "pod interface; trying again");
            }
        }
        for name in self.interface_errors.keys() {
            if !failed.contains_key(name) {
                tracing::info!(interface = %name, "pod interface error cleared");
            }
        }
        self.state.set_interface_errors(
            failed
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect(),
        );
        self.interface_errors = failed;
    }

    fn report_interfaces(&self) {
        let modes = self
            .dataplane
            .as_ref()
            .map(Dataplane::modes)
            .unwrap_or_default();
        let mode = |name: &str| match modes.iter().find(|(n, _)| n == name) {
            Some((_, mode)) => format!("{mode:?}").to_lowercase(),
            None => "not attached".to_owned(),
        };
        let mut list = vec![(
            self.uplink.clone(),
            UPLINK,
            "uplink".to_owned(),
            mode(&self.uplink),
        )];
        if let Some(host) = &self.host {
            list.push((host.clone(), HOST, "host".into(), mode(host)));
        }
        for (name, (id, _)) in &self.served {
            list.push((name.clone(), *id, "pod".into(), mode(name)));
        }
        self.state.set_interfaces(list);
    }

    /// Whether a link change can matter: a pod interface the tables want or one served.
    fn concerns(&self, name: &str) -> bool {
        self.served.contains_key(name) || self.wanted.iter().any(|(n, _)| n == name)
    }

    fn sync_logged(&mut self) {
        if let Err(e) = self.sync_interfaces(None) {
            tracing::warn!(error = %e, "pod interfaces");
        }
    }

    /// A link appeared or changed (`RTM_NEWLINK`): a wanted pod veth that is up is served at
    /// once; one recreated under its name (a new ifindex) is released and served again.
    pub(crate) fn link_changed(&mut self, link: &Link) {
        // A rename keeps the index: the old name is gone.
        let renamed: Vec<String> = self
            .links
            .iter()
            .filter(|(name, (index, _))| *index == link.index && **name != link.name)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &renamed {
            self.links.remove(name);
        }
        let before = self.links.insert(link.name.clone(), (link.index, link.up));
        let changed = before != Some((link.index, link.up)) || !renamed.is_empty();
        if changed && (self.concerns(&link.name) || renamed.iter().any(|n| self.concerns(n))) {
            self.sync_logged();
        }
    }

    /// A link went away (`RTM_DELLINK`).
    pub(crate) fn link_gone(&mut self, index: u32, name: &str) {
        if self.links.get(name).is_some_and(|l| l.0 == index) {
            self.links.remove(name);
            if self.concerns(name) {
                self.sync_logged();
            }
        }
    }

    /// The whole link table, read again (at start and on the periodic resync, which covers
    /// notifications the kernel dropped).
    pub(crate) fn links_resynced(&mut self, links: &[Link]) {
        let table: BTreeMap<String, (u32, bool)> = links
            .iter()
            .map(|l| (l.name.clone(), (l.index, l.up)))
            .collect();
        if table != self.links {
            self.links = table;
            self.sync_logged();
        }
    }

    /// A neighbour entry changed (`RTM_NEWNEIGH`, `RTM_DELNEIGH` as `mac: None`); true if the
    /// tables should be recompiled (an uplink neighbour's MAC came, went or changed).
    pub(crate) fn neighbor_changed(&mut self, n: &Neighbor, model: &Model) -> bool {
        if n.ifindex != self.uplink_index {
            return false;
        }
        let before = match n.mac {
            Some(mac) => self.neighbors.insert(n.ip, mac),
            None => self.neighbors.remove(&n.ip),
        };
        before != n.mac && self.use_neighbors(model)
    }

    /// The uplink's neighbours, read again; true if the tables should be recompiled.
    pub(crate) fn neighbors_resynced(
        &mut self,
        neighbors: BTreeMap<Ipv4Addr, EthernetAddress>,
        model: &Model,
    ) -> bool {
        if neighbors == self.neighbors {
            return false;
        }
        self.neighbors = neighbors;
        self.use_neighbors(model)
    }

    /// Every neighbour the kernel knows on the uplink goes to the compiler: the next hops the
    /// tables need, and the underlay hosts that reached this node (NodePort clients on the
    /// subnet), whose ARP requests the kernel answered and learned from.
    fn use_neighbors(&mut self, model: &Model) -> bool {
        let known = self.neighbors.iter().map(|(ip, mac)| (*ip, *mac)).collect();
        let recompile = self.compiler.set_neighbors(known);
        let (wanted, resolved) = self.report_neighbors(model);
        if recompile {
            tracing::info!(resolved, wanted, "underlay neighbours changed");
        }
        recompile
    }

    /// Tells the admin state how many next hops the tables need and how many of them have a
    /// MAC address (and how many endpoints drain); returns those two counts, wanted first.
    fn report_neighbors(&self, model: &Model) -> (usize, usize) {
        let wanted = self.compiler.wanted_neighbors(model);
        let resolved = wanted
            .iter()
            .filter(|ip| self.neighbors.contains_key(ip))
            .count();
        self.state
            .set_neighbors_and_draining([wanted.len(), resolved], self.compiler.draining().count());
        (wanted.len(), resolved)
    }

    /// The next hops the tables need whose MAC the kernel has not resolved: the loop asks the
    /// kernel to resolve them, and the answer comes back as a neighbour notification.
    pub(crate) fn missing_neighbors(&self, model: &Model) -> Vec<Ipv4Addr> {
        self.compiler
            .wanted_neighbors(model)
            .into_iter()
            .filter(|ip| !self.neighbors.contains_key(ip))
            .collect()
    }

    /// The uplink's ifindex.
    pub(crate) fn uplink_index(&self) -> u32 {
        self.uplink_index
    }

    /// The housekeeping round; true if the tables should be recompiled. Fails when the
    /// dataplane stopped by itself.
    pub(crate) fn maintain(&mut self, model: &Model) -> Result<bool, AgentError> {
        if let Some(dp) = &self.dataplane {
            if !dp.running() && !dp.replaced() {
                self.state.set_stopped();
                return Err(AgentError::Other("the dataplane stopped by itself".into()));
            }
        }
        let due = self
            .interface_retry
            .next
            .is_none_or(|at| Instant::now() >= at);
        if due && !self.interface_errors.is_empty() {
            self.sync_logged();
        }
        let mut recompile = false;
        let draining: HashSet<(Ipv4Addr, u8, u16)> = self.compiler.draining().copied().collect();
        if let (false, Some(dp)) = (draining.is_empty(), &self.dataplane) {
            let with_flows = dp.conntrack().endpoints_with_flows(&draining);
            if with_flows.len() < draining.len() {
                self.compiler.retire_draining(|e| with_flows.contains(e));
                tracing::info!(
                    retired = draining.len() - with_flows.len(),
                    "draining endpoints without flows retired"
                );
                recompile = true;
            }
        }
        self.report_neighbors(model);
        Ok(recompile)
    }

    /// Whether the dataplane was handed over to an agent that replaced this one.
    pub(crate) fn replaced(&self) -> bool {
        self.dataplane.as_ref().is_some_and(|dp| dp.replaced())
    }

    /// Stop the workers; detach the programs, unless they are to outlive the agent.
    pub(crate) fn stop(&mut self) -> Result<(), AgentError> {
        self.state.set_stopped();
        let Some(dp) = self.dataplane.take() else {
            return Ok(());
        };
        let (replaced, handed) = (dp.replaced(), dp.handed_over());
        let counters = dp
            .finish()
            .map_err(|e| AgentError::Other(format!("stopping the dataplane: {e}")))?;
        let dropped: u64 = counters.drops.iter().sum();
        let rx = counters.events[kxdp_dataplane::counters::Event::RxPackets as usize];
        match &self.state_dir {
            Some(_) if handed => tracing::info!(
                rx,
                dropped,
                "stopped; the sockets, flows and programs were handed to the agent that \
                 replaced this one"
            ),
            Some(_) if replaced => tracing::warn!(
                rx,
                dropped,
                "stopped; the agent that replaced this one takes the flows and programs over, \
                 but could not be handed the sockets: it binds its own"
            ),
            Some(dir) => tracing::info!(
                rx,
                dropped,
                state_dir = %dir.display(),
                "stopped; XDP programs left in place, dropping the dataplane's traffic until \
                 the next agent takes over (kxdp uninstall removes them)"
            ),
            None => tracing::info!(rx, dropped, "stopped; XDP programs detached"),
        }
        Ok(())
    }
}

/// The state directory to run with: `dir` if its file system keeps files in memory. On a disk
/// the kernel would write conntrack's every change back to it, so the state then stays in the
/// process (and the programs are detached when the agent stops), with a warning.
pub(crate) fn lasting_state(dir: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let dir = dir?;
    let existing = dir.ancestors().find(|d| d.exists())?;
    match kxdp_xdp::state::in_memory(existing) {
        Ok(true) => Some(dir.to_owned()),
        Ok(false) => {
            tracing::warn!(
                state_dir = %dir.display(),
                "the state directory is not on a tmpfs: conntrack is kept in the process and \
                 will not survive a restart (mount a tmpfs there, or choose a directory on one)"
            );
            None
        }
        Err(e) => {
            tracing::warn!(state_dir = %dir.display(), error = %e, "the state directory cannot be examined: conntrack is kept in the process");
            None
        }
    }
}

/// Say what taking the state directory found.
fn log_taken(t: &kxdp_xdp::state::Taken, dir: Option<&std::path::Path>) {
    let dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
    if let Some(pid) = t.predecessor {
        tracing::info!(
            predecessor = pid,
            killed = t.killed,
            waited_ms = t.waited.as_secs_f64() * 1e3,
            dark_ms = t.dark.as_secs_f64() * 1e3,
            "took over from the running agent"
        );
    }
    match &t.handover {
        Some(Ok(sockets)) => tracing::info!(
            sockets,
            "its sockets were handed over: their traffic waited in their rings, none dropped"
        ),
        Some(Err(why)) => tracing::warn!(
            reason = %why,
            "nothing was handed over: sockets bound afresh, traffic dropped meanwhile"
        ),
        None => {}
    }
    match (&t.adopted, &t.fresh_because) {
        (Some((a, took)), _) => tracing::info!(
            state_dir = %dir,
            took_ms = took.as_secs_f64() * 1e3,
            flows = a.flows,
            expired = a.expired,
            torn = a.torn,
            clashing = a.clashing,
            "conntrack adopted"
        ),
        (None, Some(why)) => tracing::info!(
            state_dir = %dir,
            reason = %why,
            "conntrack starts empty: the file there was not taken"
        ),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_retries_back_off_to_a_bound_and_start_over_after_success() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let waits: Vec<u64> = (0..7).map(|_| b.failed(t).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(b.next, Some(t + RETRY_MAX));
        b.succeeded();
        assert_eq!(b.next, None);
        assert_eq!(b.failed(t), RETRY_FIRST);
    }

    #[test]
    fn a_start_retry_is_spent_even_when_the_model_no_longer_compiles() {
        let config = crate::settings::AgentArgs {
            node: Some("node-a".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        // No Node object: the model does not compile.
        let mut model = Model::new();
        let settings = kxdp_control::trace::trace_settings(
            &model,
            "node-a",
            config.cluster_cidr,
            config.service_cidr,
        );
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let mut agent = Agent::new(&config, settings, 1, Arc::clone(&state));
        // A start failed in a way that may pass, and its retry is due: the loop publishes.
        agent.start_retry.failed(Instant::now() - RETRY_MAX);
        assert!(agent.retry_at().is_some_and(|at| at <= Instant::now()));
        agent.publish(&mut model, Instant::now()).unwrap();
        // Left due, the loop would wake at once and publish again, forever.
        assert_eq!(agent.retry_at(), None);
        assert!(state.current_error().is_some_and(|e| e.contains("node-a")));
    }
}
