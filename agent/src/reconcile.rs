//! The agent's reconciler: it owns the compiler and the dataplane, makes each compiled
//! snapshot live (starting the dataplane with the first one), serves exactly the pod
//! interfaces the live snapshot has and the kernel shows, keeps underlay neighbours resolved,
//! and retires draining endpoints once conntrack holds no flow to them.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kxdp_control::compile::{Compiled, Compiler, NodeSettings};
use kxdp_control::model::Model;
use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::Snapshot;
use kxdp_xdp::runtime::{Change, Config as DataplaneConfig, Dataplane, Managed};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::IfRole;

use crate::admin::{AdminState, DataplaneView};
use crate::nodefacts;
use crate::settings::{AgentConfig, AgentError};

/// The uplink's and the host interface's numbers in every snapshot the agent builds.
pub(crate) const UPLINK: InterfaceId = InterfaceId(0);
pub(crate) const HOST: InterfaceId = InterfaceId(1);

/// The loop's state: the compiler and what the dataplane serves.
pub(crate) struct Agent {
    uplink: String,
    host: Option<String>,
    cores: Vec<Option<usize>>,
    mode: Mode,
    conntrack_size: u32,
    compiler: Compiler,
    dataplane: Option<Dataplane>,
    /// Pod interfaces served: name to (number, ifindex when added).
    served: BTreeMap<String, (InterfaceId, u32)>,
    /// Pod interfaces the live snapshot has.
    wanted: Vec<(String, InterfaceId)>,
    pub(crate) live: Option<Arc<Snapshot>>,
    modes: BTreeMap<String, String>,
    state: Arc<AdminState>,
    logged_problems: HashSet<String>,
}

impl Agent {
    pub(crate) fn new(
        config: &AgentConfig,
        settings: NodeSettings,
        state: Arc<AdminState>,
    ) -> Agent {
        Agent {
            uplink: config.uplink.clone(),
            host: config.host_interface.clone(),
            cores: config.cores.clone(),
            mode: config.mode,
            conntrack_size: config.conntrack_size,
            compiler: Compiler::new(settings),
            dataplane: None,
            served: BTreeMap::new(),
            wanted: Vec::new(),
            live: None,
            modes: BTreeMap::new(),
            state,
            logged_problems: HashSet::new(),
        }
    }

    /// Compile the model and make the result live (starting the dataplane the first time).
    pub(crate) fn publish(&mut self, model: &mut Model, noticed: Instant) {
        let compiled = match self.compiler.compile(model) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "not published");
                self.state.set_error(e.to_string());
                return;
            }
        };
        for p in &compiled.problems {
            if self.logged_problems.insert(p.clone()) {
                tracing::warn!(problem = %p, "left out of the tables");
            }
        }
        let generation = compiled.snapshot.generation;
        let result = if self.dataplane.is_some() {
            self.update(compiled)
        } else {
            self.start(compiled)
        };
        match result {
            Ok(problems) => {
                let latency = noticed.elapsed();
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
    }

    fn start(&mut self, compiled: Compiled) -> Result<Vec<String>, String> {
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
        let mut served = BTreeMap::new();
        for (name, id) in &compiled.interfaces {
            if let Ok(index) = kxdp_xdp::ifindex(name) {
                ifaces.push(Managed::pod(name, *id));
                served.insert(name.clone(), (*id, index));
            }
        }
        let config = DataplaneConfig {
            workers: self.cores.clone(),
            mode: self.mode,
            conntrack: ConntrackConfig {
                capacity: self.conntrack_size,
                ..ConntrackConfig::default()
            },
            ..DataplaneConfig::default()
        };
        let dp = Dataplane::start(config, ifaces, Arc::clone(&compiled.snapshot))
            .map_err(|e| format!("starting the dataplane: {e}"))?;
        for (name, mode) in dp.modes() {
            self.modes
                .insert(name.clone(), format!("{mode:?}").to_lowercase());
        }
        let now = dp.now();
        self.state.set_dataplane(DataplaneView {
            workers: dp.workers().to_vec(),
            cores: self.cores.clone(),
            conntrack: Arc::clone(dp.conntrack()),
            clock_origin: Instant::now() - Duration::from_nanos(now.as_nanos()),
            decisions: Arc::clone(dp.decisions()),
        });
        tracing::info!(
            interfaces = served.len() + 1 + usize::from(self.host.is_some()),
            modes = ?dp.modes(),
            "dataplane started"
        );
        self.dataplane = Some(dp);
        self.served = served;
        self.wanted = compiled.interfaces;
        self.live = Some(compiled.snapshot);
        Ok(compiled.problems)
    }

    fn update(&mut self, compiled: Compiled) -> Result<Vec<String>, String> {
        self.wanted = compiled.interfaces;
        self.live = Some(Arc::clone(&compiled.snapshot));
        self.sync_interfaces(Some(compiled.flush_udp))?;
        Ok(compiled.problems)
    }

    /// Serve exactly the wanted interfaces that exist, with the live snapshot; publish it
    /// (with a UDP flush) when `flush` is given.
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
                    || kxdp_xdp::ifindex(name).ok() != Some(*index)
            })
            .map(|(name, (id, _))| (name.clone(), *id))
            .collect();
        for (name, id) in &stale {
            dp.change(Change::Remove(*id, Arc::clone(snap)))?;
            self.served.remove(name);
            tracing::info!(interface = %name, "pod interface released");
        }
        let mut added = false;
        for (name, id) in &wanted {
            if self.served.contains_key(*name) {
                continue;
            }
            let Ok(index) = kxdp_xdp::ifindex(name) else {
                continue;
            };
            match dp.change(Change::Add(Managed::pod(name, *id), Arc::clone(snap))) {
                Ok(()) => {
                    self.served.insert((*name).to_owned(), (*id, index));
                    tracing::info!(interface = %name, "pod interface served");
                    added = true;
                }
                // It may have gone again; the next tick retries.
                Err(e) => tracing::warn!(interface = %name, error = %e, "serving pod interface"),
            }
        }
        if let Some(flush) = flush {
            dp.change(Change::Publish(Arc::clone(snap), flush))?;
        }
        if added || !stale.is_empty() {
            self.report_interfaces();
        }
        Ok(())
    }

    fn report_interfaces(&self) {
        let mode = |name: &str| {
            self.modes
                .get(name)
                .cloned()
                .unwrap_or_else(|| "skb".into())
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

    /// The periodic work; true if the tables should be recompiled.
    pub(crate) fn maintain(&mut self, model: &Model) -> Result<bool, AgentError> {
        if let Some(dp) = &self.dataplane {
            if !dp.running() {
                self.state.set_stopped();
                return Err(AgentError::Other("the dataplane stopped by itself".into()));
            }
        }
        if let Err(e) = self.sync_interfaces(None) {
            tracing::warn!(error = %e, "pod interfaces");
        }
        // Every neighbour the kernel knows on the uplink: the next hops the tables need, and
        // the underlay hosts that reached this node (NodePort clients on the subnet), whose
        // ARP requests the kernel answered and learned from.
        let wanted = self.compiler.wanted_neighbors(model);
        let known = nodefacts::neighbors(&self.uplink);
        let missing: Vec<Ipv4Addr> = wanted
            .iter()
            .filter(|ip| !known.iter().any(|(k, _)| k == *ip))
            .copied()
            .collect();
        for ip in &missing {
            nodefacts::solicit(*ip);
        }
        let resolved = wanted.len() - missing.len();
        let mut recompile = self.compiler.set_neighbors(known);
        if recompile {
            tracing::info!(
                resolved,
                wanted = wanted.len(),
                "underlay neighbours changed"
            );
        }
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
        self.state
            .set_neighbors_and_draining([wanted.len(), resolved], self.compiler.draining().count());
        Ok(recompile)
    }

    /// Stop the workers and detach everything.
    pub(crate) fn stop(&mut self) -> Result<(), AgentError> {
        self.state.set_stopped();
        let Some(dp) = self.dataplane.take() else {
            return Ok(());
        };
        let counters = dp
            .finish()
            .map_err(|e| AgentError::Other(format!("stopping the dataplane: {e}")))?;
        let dropped: u64 = counters.drops.iter().sum();
        tracing::info!(
            rx = counters.events[kxdp_dataplane::counters::Event::RxPackets as usize],
            dropped,
            "stopped; XDP programs detached"
        );
        Ok(())
    }
}
