//! `kxdp agent`: the node's dataplane and its control side, run until stopped.
//!
//! Start-up, in order, each step failing with a message that names what is wrong:
//! 1. the configuration: flags, then `KXDP_*` environment variables, then the YAML file given
//!    with `--config` (same names as the flags), then the defaults;
//! 2. the preflight checks ([`crate::preflight`]): capabilities, locked memory, the uplink
//!    and the host interface exist;
//! 3. the uplink as the kernel sees it: MAC, MTU, IPv4 address and prefix, default gateway;
//!    and with `--host-interface`, the MAC of the kernel's end of the host veth pair;
//! 4. the admin API's listener;
//! 5. the source: the Kubernetes API (a kubeconfig, or in-cluster) or manifest files, which
//!    must parse.
//!
//! Then one loop owns the model, the compiler and the dataplane. A change from the source is
//! compiled and published ([`Agent::publish`]); the dataplane starts with the first snapshot
//! that compiles (it needs this node's Node object). Every half second the loop also:
//! serves pod interfaces that appeared since (a CNI plugin creates a pod's veth after the API
//! lists the pod), drops and re-adds those that were recreated, asks the kernel for the MAC
//! addresses of underlay next hops and republishes when they change, and retires draining
//! endpoints with no flow left. SIGINT and SIGTERM stop the workers and detach every XDP
//! program before the agent exits; so does `--max-run`.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::tables::{InterfaceId, NodeConfig};
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_dataplane::Snapshot;
use kxdp_xdp::runtime::{Change, Config as DataplaneConfig, Dataplane, Managed};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::xsk::PortConfig;
use kxdp_xdp::IfRole;
use serde::Deserialize;

use crate::admin::{AdminAddr, AdminState, DataplaneView};
use crate::compile::{Compiled, Compiler, NodeSettings};
use crate::kube_source::{KubeSource, Watch};
use crate::manifest::ManifestSource;
use crate::model::Model;
use crate::netinfo;
use crate::preflight::PreflightError;

/// `kxdp agent`'s flags. Each may also come from the environment (`KXDP_<NAME>`) or the
/// config file, which is read into this same struct by the flags' names.
#[derive(clap::Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentArgs {
    /// A YAML file with any of these settings, named as the flags are (`node: node-a`,
    /// `manifest: [a.yaml]`, `cores: "0,1"`); flags and environment override it.
    #[arg(long, env = "KXDP_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's name (its Node object).
    #[arg(long, env = "KXDP_NODE")]
    pub node: Option<String>,
    /// Read the cluster from these manifest files (re-read when they change) instead of the
    /// Kubernetes API.
    #[arg(long = "manifest", value_name = "FILE")]
    #[serde(rename = "manifest", default)]
    pub manifests: Vec<PathBuf>,
    /// The kubeconfig file; without it (and without --manifest), KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account.
    #[arg(long, env = "KXDP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's uplink interface [default: eth0].
    #[arg(long, env = "KXDP_UPLINK", value_name = "IFACE")]
    pub uplink: Option<String>,
    /// kxdp's end of the veth pair to this node's own stack, whose other end the kernel
    /// routes the pod and service CIDRs to: the node reaches pods and services through it,
    /// and pods reach the node's addresses [default: none; pods then reach the node only
    /// through NodePorts].
    #[arg(long, env = "KXDP_HOST_INTERFACE", value_name = "IFACE")]
    pub host_interface: Option<String>,
    /// Cores for the workers, one worker each (`0,1` or `2-3`) [default: one unpinned worker].
    #[arg(long, env = "KXDP_CORES", value_name = "LIST")]
    pub cores: Option<String>,
    /// How idle workers wait: `wakeup` (sleep in poll), `busy-poll` (spin; a core each), or
    /// `adaptive` (spin for --spin-us after traffic, then sleep) [default: wakeup].
    #[arg(long, env = "KXDP_MODE")]
    pub mode: Option<String>,
    /// In adaptive mode, how long a worker keeps spinning after its last frame, in
    /// microseconds [default: 200].
    #[arg(long, env = "KXDP_SPIN_US")]
    pub spin_us: Option<u32>,
    /// The cluster's pod CIDR [default: 10.244.0.0/16].
    #[arg(long, env = "KXDP_CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
    /// The service CIDR [default: 10.96.0.0/12].
    #[arg(long, env = "KXDP_SERVICE_CIDR")]
    pub service_cidr: Option<String>,
    /// This node's VTEP MAC when its Node object publishes none [default: the uplink's MAC].
    #[arg(long, env = "KXDP_VTEP_MAC")]
    pub vtep_mac: Option<String>,
    /// The admin API: ADDRESS:PORT or unix:PATH [default: 127.0.0.1:9901].
    #[arg(long, env = "KXDP_ADMIN")]
    pub admin: Option<String>,
    /// Flows the conntrack table holds [default: 262144].
    #[arg(long, env = "KXDP_CONNTRACK_SIZE")]
    pub conntrack_size: Option<u32>,
    /// Stop by itself after this many seconds (demos and tests bound every run).
    #[arg(long, env = "KXDP_MAX_RUN")]
    pub max_run: Option<u64>,
    /// Log format: `text` or `json` [default: text]; RUST_LOG filters (default `info`).
    #[arg(long, env = "KXDP_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// Where the cluster comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    /// Manifest files.
    Manifests(Vec<PathBuf>),
    /// The Kubernetes API, through this kubeconfig or the usual places.
    Kubernetes(Option<PathBuf>),
}

/// The agent's resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// This node.
    pub node: String,
    /// The source.
    pub source: SourceConfig,
    /// The uplink's name.
    pub uplink: String,
    /// kxdp's end of the host veth pair, if there is one.
    pub host_interface: Option<String>,
    /// One worker per entry, pinned to the core given.
    pub cores: Vec<Option<usize>>,
    /// How workers wait.
    pub mode: Mode,
    /// The cluster's pod CIDR.
    pub cluster_cidr: Ipv4Cidr,
    /// The service CIDR.
    pub service_cidr: Ipv4Cidr,
    /// The VTEP MAC, if set.
    pub vtep_mac: Option<EthernetAddress>,
    /// The admin API's address.
    pub admin: AdminAddr,
    /// Conntrack capacity.
    pub conntrack_size: u32,
    /// Run at most this long.
    pub max_run: Option<Duration>,
    /// `json` logs rather than text.
    pub json_logs: bool,
}

/// Why the agent did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is wrong: which, where it came from, and why.
    #[error("configuration: {0}")]
    Config(String),
    /// The machine or process lacks something the dataplane needs.
    #[error("{}", .0.iter().map(|p| format!("preflight: {p}")).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<PreflightError>),
    /// Anything else, said in full.
    #[error("{0}")]
    Other(String),
}

fn config_error(field: &str, problem: impl std::fmt::Display) -> AgentError {
    AgentError::Config(format!("{field}: {problem}"))
}

impl AgentArgs {
    /// Merge flags and environment (already in `self`) over the config file and the defaults.
    pub fn resolve(self) -> Result<AgentConfig, AgentError> {
        let file = match &self.config {
            None => AgentArgs::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| config_error("--config", format!("{}: {e}", path.display())))?;
                let de = serde_yaml::Deserializer::from_str(&text);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    AgentError::Config(format!("{}: {}: {}", path.display(), e.path(), e.inner()))
                })?
            }
        };
        let node = self
            .node
            .or(file.node)
            .ok_or_else(|| config_error("--node", "this node's name is required (or KXDP_NODE)"))?;
        let manifests = if self.manifests.is_empty() {
            file.manifests
        } else {
            self.manifests
        };
        let source = if manifests.is_empty() {
            SourceConfig::Kubernetes(self.kubeconfig.or(file.kubeconfig))
        } else {
            SourceConfig::Manifests(manifests)
        };
        let cores = match self.cores.or(file.cores) {
            None => vec![None],
            Some(list) => parse_cores(&list)
                .map_err(|e| config_error("--cores", e))?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let spin_us = self.spin_us.or(file.spin_us);
        let mode = match self.mode.or(file.mode).as_deref() {
            None | Some("wakeup") => Mode::Wakeup { timeout_ms: 50 },
            Some("busy-poll") => Mode::BusyPoll,
            Some("adaptive") => Mode::Adaptive {
                spin_us: spin_us.unwrap_or(200),
                timeout_ms: 50,
            },
            Some(other) => {
                return Err(config_error(
                    "--mode",
                    format!("{other:?} is not wakeup, busy-poll or adaptive"),
                ))
            }
        };
        if spin_us.is_some() && !matches!(mode, Mode::Adaptive { .. }) {
            return Err(config_error("--spin-us", "applies to --mode adaptive only"));
        }
        let cidr = |field: &str, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.into());
            crate::model::parse_cidr(&text)
                .ok_or_else(|| config_error(field, format!("{text:?} is not an IPv4 CIDR")))
        };
        let vtep_mac = self
            .vtep_mac
            .or(file.vtep_mac)
            .map(|m| {
                crate::model::parse_mac(&m).ok_or_else(|| {
                    config_error("--vtep-mac", format!("{m:?} is not a MAC address"))
                })
            })
            .transpose()?;
        let admin = self
            .admin
            .or(file.admin)
            .unwrap_or_else(|| "127.0.0.1:9901".into())
            .parse()
            .map_err(|e| config_error("--admin", e))?;
        let conntrack_size = self
            .conntrack_size
            .or(file.conntrack_size)
            .unwrap_or(262_144);
        if !(1..=kxdp_dataplane::conntrack::MAX_CAPACITY).contains(&conntrack_size) {
            return Err(config_error(
                "--conntrack-size",
                format!(
                    "{conntrack_size} is not in 1..={}",
                    kxdp_dataplane::conntrack::MAX_CAPACITY
                ),
            ));
        }
        let json_logs = match self.log_format.or(file.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(config_error(
                    "--log-format",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        Ok(AgentConfig {
            node,
            source,
            uplink: self.uplink.or(file.uplink).unwrap_or_else(|| "eth0".into()),
            host_interface: self.host_interface.or(file.host_interface),
            cores,
            mode,
            cluster_cidr: cidr(
                "--cluster-cidr",
                self.cluster_cidr.or(file.cluster_cidr),
                "10.244.0.0/16",
            )?,
            service_cidr: cidr(
                "--service-cidr",
                self.service_cidr.or(file.service_cidr),
                "10.96.0.0/12",
            )?,
            vtep_mac,
            admin,
            conntrack_size,
            max_run: self.max_run.or(file.max_run).map(Duration::from_secs),
            json_logs,
        })
    }
}

/// `0,1` or `2-3` or `0,2-3` as core numbers.
pub fn parse_cores(list: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim) {
        let bad = || format!("{part:?} is not a core number or range (as in 0,1 or 2-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    let unique: HashSet<usize> = cores.iter().copied().collect();
    if unique.len() != cores.len() {
        return Err(format!("{list:?} names a core twice"));
    }
    if cores.len() > kxdp_xdp::runtime::MAX_QUEUES as usize {
        return Err(format!("at most {} workers", kxdp_xdp::runtime::MAX_QUEUES));
    }
    Ok(cores)
}

/// The ports masquerade uses: above Linux's default `ip_local_port_range` (32768–60999) and
/// the NodePort range, so the XDP program steers their replies by port alone.
const MASQUERADE_PORTS: RangeInclusive<u16> = 61000..=65535;

/// How often the loop looks after interfaces, neighbours and draining endpoints.
const TICK: Duration = Duration::from_millis(500);

/// The locked memory `workers` workers' UMEMs take (one UMEM each, `PortConfig::default()`).
pub fn umem_bytes(workers: usize) -> u64 {
    let umem = PortConfig::default();
    u64::from(umem.frames) * u64::from(umem.frame_size) * workers as u64
}

/// Run the agent until SIGINT, SIGTERM or `--max-run`.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    let interfaces: Vec<String> = std::iter::once(&config.uplink)
        .chain(&config.host_interface)
        .cloned()
        .collect();
    let problems = crate::preflight::check(&interfaces, umem_bytes(config.cores.len()));
    if !problems.is_empty() {
        return Err(AgentError::Preflight(problems));
    }
    let uplink = netinfo::interface(&config.uplink)
        .map_err(|e| AgentError::Other(format!("uplink {}: {e}", config.uplink)))?;
    let address = uplink.ipv4.ok_or_else(|| {
        AgentError::Other(format!(
            "uplink {} has no IPv4 address: kxdp uses the uplink's address as the node's \
             underlay address (give it one, as the node's network setup would)",
            config.uplink
        ))
    })?;
    // The kernel's end of the host pair: frames for the node go to its MAC.
    let host_mac = match &config.host_interface {
        None => EthernetAddress([0; 6]),
        Some(name) => {
            netinfo::veth_peer(name)
                .and_then(|peer| netinfo::interface(&peer))
                .map_err(|e| AgentError::Other(format!("--host-interface {name}: {e}")))?
                .mac
        }
    };
    let settings = NodeSettings {
        node: NodeConfig {
            name: config.node.clone(),
            node_ips: vec![address.address()],
            uplink_subnet: Ipv4Cidr::new(address.network().address(), address.prefix_len()),
            uplink_gateway: netinfo::default_gateway(&config.uplink),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
            cluster_cidr: config.cluster_cidr,
            service_cidr: config.service_cidr,
            gateway_ip: Ipv4Addr::UNSPECIFIED,
            // Pods see every other host behind the uplink's MAC (each veth is its own link).
            gateway_mac: uplink.mac,
            uplink: UPLINK,
            uplink_mac: uplink.mac,
            uplink_mtu: uplink.mtu,
            host: HOST,
            host_mac,
            vtep_mac: config.vtep_mac.unwrap_or(uplink.mac),
            vxlan_vni: 1,
            vxlan_port: 8472,
            masquerade_ports: MASQUERADE_PORTS,
        },
        neighbors: Vec::new(),
    };
    tracing::info!(
        node = %config.node,
        uplink = %config.uplink,
        address = %address,
        mtu = uplink.mtu,
        gateway = ?settings.node.uplink_gateway,
        workers = config.cores.len(),
        "starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Other(format!("starting the async runtime: {e}")))?;
    runtime.block_on(run_async(config, settings))
}

/// The uplink's and the host interface's numbers in every snapshot the agent builds.
const UPLINK: InterfaceId = InterfaceId(0);
const HOST: InterfaceId = InterfaceId(1);

enum Source {
    Kube(Box<Watch>, KubeSource),
    Files(ManifestSource),
}

impl Source {
    /// Wait for the next change from the Kubernetes API and apply it to `model`; true if it
    /// should be published. Manifest files are looked at on the loop's tick instead
    /// ([`Source::reread`]), so this never returns for them.
    async fn next(&mut self, model: &mut Model) -> Result<bool, String> {
        match self {
            Source::Kube(watch, _) => watch
                .next(model)
                .await
                .ok_or_else(|| "the Kubernetes watchers ended".to_owned()),
            Source::Files(_) => std::future::pending().await,
        }
    }

    /// Whether the source has listed everything once (manifests always have).
    fn synced(&self) -> bool {
        match self {
            Source::Kube(watch, _) => watch.status().synced,
            Source::Files(_) => true,
        }
    }

    /// Re-read changed manifest files into `model`; true if it should be published. A file
    /// that does not parse leaves the model as it was, with the error reported.
    fn reread(&mut self, model: &mut Model, state: &AdminState) -> bool {
        let Source::Files(files) = self else {
            return false;
        };
        if !files.changed() {
            return false;
        }
        match files.load(model) {
            Ok(changed) => {
                tracing::info!(changed, "manifests re-read");
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "manifests: keeping the last good model");
                state.set_error(e.to_string());
                false
            }
        }
    }
}

async fn run_async(config: AgentConfig, settings: NodeSettings) -> Result<(), AgentError> {
    let source_name = match config.source {
        SourceConfig::Manifests(_) => "manifests",
        SourceConfig::Kubernetes(_) => "kubernetes",
    };
    let state = Arc::new(AdminState::new(&config.node, source_name));
    let listener = crate::admin::bind(&config.admin)
        .await
        .map_err(|e| AgentError::Other(format!("admin API on {}: {e}", config.admin)))?;
    tracing::info!(admin = %config.admin, "admin API listening");
    let server = tokio::spawn(crate::admin::serve(listener, Arc::clone(&state)));
    let mut model = Model::new();
    let mut source = match &config.source {
        SourceConfig::Manifests(paths) => {
            let mut files = ManifestSource::new(paths.clone());
            files
                .load(&mut model)
                .map_err(|e| AgentError::Other(e.to_string()))?;
            Source::Files(files)
        }
        SourceConfig::Kubernetes(kubeconfig) => {
            let client = crate::kube_source::client(kubeconfig.as_deref())
                .await
                .map_err(|e| AgentError::Other(format!("Kubernetes client: {e}")))?;
            let kube = KubeSource::new(client, &config.node);
            Source::Kube(Box::new(kube.clone().watch()), kube)
        }
    };
    let mut agent = Agent::new(&config, settings, Arc::clone(&state));
    let mut annotated = matches!(source, Source::Files(_));
    if let Source::Files(_) = source {
        state.set_source(true, 0, None);
    }
    let mut dirty = matches!(source, Source::Files(_));
    let mut noticed = Instant::now();
    let deadline = config.max_run.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(TICK);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Other(format!("SIGTERM handler: {e}")))?;
    let result = loop {
        // Nothing is published before the source has listed everything once.
        if dirty && source.synced() {
            tokio::task::block_in_place(|| agent.publish(&mut model, noticed));
            dirty = false;
        }
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = source.next(&mut model) => match next {
                Ok(publish) => {
                    if publish {
                        noticed = Instant::now();
                        dirty = true;
                    }
                    if let Source::Kube(watch, _) = &source {
                        let s = watch.status();
                        state.set_source(s.synced, s.errors, s.last_error.clone());
                    }
                }
                Err(e) => break Err(AgentError::Other(e)),
            },
            _ = tick.tick() => {
                if source.reread(&mut model, &state) {
                    noticed = Instant::now();
                    dirty = true;
                }
                if !annotated {
                    if let (Source::Kube(_, kube), Some(snap)) = (&source, agent.live.as_ref()) {
                        let node = &snap.node;
                        match kube.publish_node_annotations(node.vxlan_vni, node.vtep_mac, node.primary_ip()).await {
                            Ok(()) => annotated = true,
                            Err(e) => tracing::warn!(error = %e, "publishing the node's flannel annotations; will retry"),
                        }
                    }
                }
                match tokio::task::block_in_place(|| agent.maintain(&model)) {
                    Ok(true) => {
                        noticed = Instant::now();
                        dirty = true;
                    }
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping");
                break Ok(());
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping");
                break Ok(());
            }
            _ = until_deadline => {
                tracing::info!("--max-run reached: stopping");
                break Ok(());
            }
        }
    };
    let stopped = tokio::task::block_in_place(|| agent.stop());
    server.abort();
    result.and(stopped)
}

/// The loop's state: the compiler and what the dataplane serves.
struct Agent {
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
    live: Option<Arc<Snapshot>>,
    modes: BTreeMap<String, String>,
    state: Arc<AdminState>,
    logged_problems: HashSet<String>,
}

impl Agent {
    fn new(config: &AgentConfig, settings: NodeSettings, state: Arc<AdminState>) -> Agent {
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
    fn publish(&mut self, model: &mut Model, noticed: Instant) {
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
    fn maintain(&mut self, model: &Model) -> Result<bool, AgentError> {
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
        let known = netinfo::neighbors(&self.uplink);
        let missing: Vec<Ipv4Addr> = wanted
            .iter()
            .filter(|ip| !known.iter().any(|(k, _)| k == *ip))
            .copied()
            .collect();
        for ip in &missing {
            netinfo::solicit(*ip);
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
    fn stop(&mut self) -> Result<(), AgentError> {
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

/// Set up logging: text or JSON lines on stderr, filtered by RUST_LOG (default `info`).
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs {
            node: Some("node-a".into()),
            ..AgentArgs::default()
        }
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let c = args().resolve().unwrap();
        assert_eq!(c.uplink, "eth0");
        assert_eq!(c.cores, vec![None]);
        assert_eq!(c.source, SourceConfig::Kubernetes(None));
        assert_eq!(c.admin, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(c.mode, Mode::Wakeup { timeout_ms: 50 });
    }

    #[test]
    fn adaptive_mode_takes_its_spin_and_nothing_else_does() {
        let mut a = args();
        a.mode = Some("adaptive".into());
        let c = a.clone().resolve().unwrap();
        assert_eq!(
            c.mode,
            Mode::Adaptive {
                spin_us: 200,
                timeout_ms: 50
            }
        );
        a.spin_us = Some(30);
        assert_eq!(
            a.resolve().unwrap().mode,
            Mode::Adaptive {
                spin_us: 30,
                timeout_ms: 50
            }
        );
        let mut b = args();
        b.spin_us = Some(30);
        let e = b.resolve().unwrap_err().to_string();
        assert!(e.contains("--spin-us") && e.contains("adaptive"), "{e}");
        let mut b = args();
        b.mode = Some("spin".into());
        let e = b.resolve().unwrap_err().to_string();
        assert!(e.contains("--mode") && e.contains("\"spin\""), "{e}");
    }

    #[test]
    fn cores_parse_as_lists_and_ranges() {
        assert_eq!(parse_cores("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cores("1,1").unwrap_err().contains("twice"));
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn flags_override_the_file_and_file_errors_name_the_field() {
        let dir = std::env::temp_dir().join(format!("kxdp-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.yaml");
        std::fs::write(
            &file,
            "node: from-file\nuplink: ens1\ncores: \"0-1\"\nmanifest: [a.yaml]\n",
        )
        .unwrap();
        let c = AgentArgs {
            config: Some(file.clone()),
            uplink: Some("ens9".into()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.node, "from-file");
        assert_eq!(c.uplink, "ens9");
        assert_eq!(c.cores, vec![Some(0), Some(1)]);
        assert_eq!(c.source, SourceConfig::Manifests(vec!["a.yaml".into()]));
        std::fs::write(&file, "node: n\nconntrack-size: lots\n").unwrap();
        let e = AgentArgs {
            config: Some(file.clone()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("conntrack-size"), "{e}");
        std::fs::write(&file, "node: n\nuplnk: eth0\n").unwrap();
        let e = AgentArgs {
            config: Some(file),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("uplnk"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_flag() {
        type Edit = fn(&mut AgentArgs);
        let cases: [(Edit, &str); 5] = [
            (|a| a.node = None, "--node"),
            (|a| a.mode = Some("spin".into()), "--mode"),
            (
                |a| a.cluster_cidr = Some("10.244.0.0".into()),
                "--cluster-cidr",
            ),
            (|a| a.admin = Some("localhost".into()), "--admin"),
            (|a| a.conntrack_size = Some(0), "--conntrack-size"),
        ];
        for (edit, flag) in cases {
            let mut a = args();
            edit(&mut a);
            let e = a.resolve().unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
    }
}
