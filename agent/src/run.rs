//! `kxdp agent`: the node's dataplane and its control side, run until stopped.
//!
//! Start-up, in order, each step failing with a message that names what is wrong:
//! 1. the configuration: flags, then `KXDP_*` environment variables, then the YAML file given
//!    with `--config` (same names as the flags), then the defaults;
//! 2. the preflight checks ([`crate::preflight`]): capabilities, locked memory, the uplink
//!    exists;
//! 3. the uplink as the kernel sees it: MAC, MTU, IPv4 address and prefix, default gateway;
//! 4. the admin listeners: the debug API (`--admin`, an owner-only Unix socket by default;
//!    refused if a live agent serves on it) and the metrics listener (`--metrics-address`),
//!    each with a connection limit sized far below the open-files limit, whose soft value is
//!    first raised to the hard one;
//! 5. the source: the Kubernetes API (a kubeconfig, or in-cluster) or manifest files, which
//!    must parse;
//! 6. with `--host-interface`, the host veth pair, created if missing or adopted, with its
//!    settings and kernel routes re-asserted ([`crate::host_interface`]), and the MAC of its
//!    kernel end: the first change the agent makes to the node, once all else has passed.
//!
//! Then one loop owns the model, the compiler and the dataplane. A change from the source is
//! compiled and published ([`Agent::publish`]); the dataplane starts with the first snapshot
//! that compiles (it needs this node's Node object). The loop also follows the kernel's
//! netlink notifications: a pod interface is served as soon as its veth is up, whether the
//! API lists the pod already or only the veth declares it (`kxdp-cni` writes the pod and its
//! address on the veth's alias before it brings it up, [`crate::declared`]: the kubelet
//! reports the pod's address only after `ADD` returns), dropped and re-added when recreated, and a change
//! of an uplink neighbour republishes the tables. After each publish and on the slow resync it
//! asks the kernel to resolve the underlay next hops that are still missing. Every half second
//! (housekeeping) it re-reads changed manifest files, retires draining endpoints with no flow
//! left and checks that the dataplane still runs; every ten seconds (resync) it reads the link
//! and neighbour tables whole, which covers notifications the kernel dropped.
//!
//! A dataplane that fails to start for a reason that may pass (another XDP program on the
//! uplink, an rx queue still held by another socket) leaves the agent up but not ready, with
//! the cause in `/readyz`, and is tried again with a bounded backoff; one that cannot start
//! (the program refused, a core that cannot be pinned) ends the agent with the cause, as a
//! dataplane that stops by itself does. SIGINT and SIGTERM stop the workers before the agent
//! exits, and so does `--max-run`; the XDP programs stay attached, dropping the dataplane's
//! traffic, for the next agent to take over with the conntrack kept in `--state-dir`
//! ([`kxdp_xdp::state`]), or are detached with `--state-dir none`. An agent started while
//! another holds the state directory takes over from it once ready, and binds its admin
//! listeners when the other has left them.
//!
//! A source error (a manifest that does not parse, a watch error) is counted once, logged
//! once and shown in `/api/status` until the source's next good load clears it; manifests
//! are re-read only when a file changes again.
//!
//! Each live snapshot's pod CIDR, gateway and pod MTU are written to `--subnet-file` for the
//! CNI plugin when they change ([`crate::subnet_file`]); a write that fails is logged and
//! tried again on the next publish.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kxdp_control::compile::NodeSettings;
use kxdp_control::kube_source::{KubeSource, Watch};
use kxdp_control::manifest::ManifestSource;
use kxdp_control::model::Model;
use kxdp_dataplane::tables::NodeConfig;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};

use crate::admin::{AdminAddr, AdminState, Limits, Scope};
use crate::declared;
use crate::host_interface;
use crate::nodefacts::{self, NodeEvent, NodeNet};
use crate::reconcile::{Agent, HOST, UPLINK};
use crate::settings::{umem_bytes, AgentConfig, AgentError, SourceConfig};
use crate::subnet_file::SubnetFile;

/// The ports masquerade uses: above Linux's default `ip_local_port_range` (32768–60999) and
/// the NodePort range, so the XDP program steers their replies by port alone.
const MASQUERADE_PORTS: RangeInclusive<u16> = 61000..=65535;

/// How often the loop re-reads manifest files, retires draining endpoints, retries what
/// failed and checks the dataplane.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// How often the loop reads the link and neighbour tables whole (notifications can be lost
/// when the kernel's socket buffer overflows) and asks again for missing next hops.
const RESYNC: Duration = Duration::from_secs(10);

/// Run the agent until SIGINT, SIGTERM or `--max-run`.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    let open_files = raise_open_files_limit();
    // The host interface is not checked: the agent makes it when it is missing.
    let problems = crate::preflight::check(
        std::slice::from_ref(&config.uplink),
        umem_bytes(config.cores.len()),
    );
    if !problems.is_empty() {
        return Err(AgentError::Preflight(problems));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Other(format!("starting the async runtime: {e}")))?;
    runtime.block_on(run_async(config, open_files))
}

/// Raise the soft open-files limit to the hard one, as the dataplane holds a socket or two per
/// interface and worker; returns the soft limit in force.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // An unlimited hard limit is not a value the kernel takes for open files (fs.nr_open caps
    // it); a million is what systemd and container runtimes give.
    let target = hard.min(1 << 20);
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, "open files limit raised");
            target
        }
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "could not raise the open files limit");
            soft
        }
    }
}

/// The admin listeners' limits, sized from the open-files limit: together they hold at most
/// an eighth of it, so held connections never take the descriptors the dataplane needs.
fn admin_limits(open_files: u64) -> (Limits, Limits) {
    let budget = (open_files / 8) as usize;
    (
        Limits::DEBUG.capped(budget / 8),
        Limits::METRICS.capped(budget - budget / 8),
    )
}

/// Make or adopt the host pair `name` at `mtu` ([`host_interface::ensure`]); the MAC of its
/// kernel end, where frames for the node go.
async fn host_pair(
    config: &AgentConfig,
    net: &NodeNet,
    name: &str,
    mtu: u16,
) -> Result<EthernetAddress, AgentError> {
    let routes = [config.cluster_cidr, config.service_cidr];
    let pair = host_interface::ensure(net, name, u32::from(mtu), &routes)
        .await
        .map_err(|e| AgentError::Other(format!("--host-interface {name}: {e}")))?;
    if !pair.created {
        tracing::info!(
            interface = %name,
            kernel_end = %pair.kernel.name,
            index = pair.kxdp.index,
            ours = pair.ours,
            "host veth pair adopted"
        );
    }
    pair.kernel.mac.ok_or_else(|| {
        AgentError::Other(format!(
            "--host-interface {name}: its peer {} has no MAC address",
            pair.kernel.name
        ))
    })
}

/// The node as the kernel describes it: the uplink's index, and the compiler's settings.
async fn node_settings(
    config: &AgentConfig,
    net: &NodeNet,
) -> Result<(u32, NodeSettings), AgentError> {
    let uplink = net
        .interface(&config.uplink)
        .await
        .map_err(|e| AgentError::Other(format!("uplink {}: {e}", config.uplink)))?;
    let address = uplink.ipv4.ok_or_else(|| {
        AgentError::Other(format!(
            "uplink {} has no IPv4 address: kxdp uses the uplink's address as the node's \
             underlay address (give it one, as the node's network setup would)",
            config.uplink
        ))
    })?;
    let pod_mtu = config
        .pod_mtu
        .unwrap_or(NodeConfig::flannel_pod_mtu(uplink.mtu));
    // kube-proxy's `--nodeport-addresses`: the node's addresses inside the CIDRs.
    let nodeport_ips = match &config.nodeport_addresses {
        None => None,
        Some(cidrs) => {
            let all = net
                .ipv4_addresses()
                .await
                .map_err(|e| AgentError::Other(format!("--nodeport-addresses: {e}")))?;
            Some(nodeport_ips(cidrs, address.address(), &all))
        }
    };
    let gateway = net
        .default_gateway(uplink.index)
        .await
        .map_err(|e| AgentError::Other(format!("uplink {}: {e}", config.uplink)))?;
    let settings = NodeSettings {
        node: NodeConfig {
            name: config.node.clone(),
            node_ips: vec![address.address()],
            nodeport_ips,
            uplink_subnet: Ipv4Cidr::new(address.network().address(), address.prefix_len()),
            uplink_gateway: gateway,
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
            cluster_cidr: config.cluster_cidr,
            service_cidr: config.service_cidr,
            gateway_ip: Ipv4Addr::UNSPECIFIED,
            // Pods see every other host behind the uplink's MAC (each veth is its own link).
            gateway_mac: uplink.mac,
            uplink: UPLINK,
            uplink_mac: uplink.mac,
            uplink_mtu: uplink.mtu,
            pod_mtu,
            host: HOST,
            // Set by `host_pair` once the rest of the start-up has passed.
            host_mac: EthernetAddress([0; 6]),
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
        nodeports = ?settings.node.nodeport_ips(),
        workers = config.cores.len(),
        cores = ?config.cores,
        "starting"
    );
    Ok((uplink.index, settings))
}

/// The node's addresses inside `cidrs` (`--nodeport-addresses`), the uplink's first.
fn nodeport_ips(cidrs: &[Ipv4Cidr], uplink: Ipv4Addr, all: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let ips: Vec<Ipv4Addr> = std::iter::once(uplink)
        .chain(all.iter().copied().filter(|ip| *ip != uplink))
        .filter(|ip| cidrs.iter().any(|c| c.contains_addr(ip)))
        .collect();
    if ips.is_empty() {
        tracing::warn!(
            cidrs = ?cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "--nodeport-addresses: no node address is inside these CIDRs: no NodePort answers"
        );
    }
    ips
}

enum Source {
    Kube(Box<Watch>, KubeSource),
    Files(Manifests),
}

/// Manifest files, with the errors their loads have had.
struct Manifests {
    files: ManifestSource,
    /// Loads that failed.
    errors: u64,
    /// Whether the last load failed.
    failing: bool,
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
    /// that does not parse leaves the model as it was, with the error counted, logged and
    /// shown until a load succeeds; the files are not read again until they change.
    fn reread(&mut self, model: &mut Model, state: &AdminState) -> bool {
        let Source::Files(m) = self else {
            return false;
        };
        if !m.files.changed() {
            return false;
        }
        match m.files.load(model) {
            Ok(changed) => {
                if std::mem::take(&mut m.failing) {
                    tracing::info!(changed, "manifests load again: error cleared");
                } else {
                    tracing::info!(changed, "manifests re-read");
                }
                state.set_source(true, m.errors, None);
                changed
            }
            Err(e) => {
                m.errors += 1;
                m.failing = true;
                tracing::warn!(error = %e, "manifests: keeping the last good model");
                state.set_source(true, m.errors, Some(e.to_string()));
                false
            }
        }
    }
}

/// Ask the kernel to resolve each of `ips` on the uplink (failures are logged: the next
/// resync asks again).
async fn solicit(net: &NodeNet, uplink: u32, ips: Vec<Ipv4Addr>) {
    for ip in ips {
        if let Err(e) = net.solicit(uplink, ip).await {
            tracing::warn!(error = %e, "resolving an underlay next hop");
        }
    }
}

/// Read the link and neighbour tables whole into `agent`; true if the tables should be
/// recompiled.
async fn resync(net: &NodeNet, agent: &mut Agent, model: &mut Model) -> Result<bool, AgentError> {
    let read = |e: nodefacts::NodeFactsError| AgentError::Other(e.to_string());
    let links = net.links().await.map_err(read)?;
    let neighbors = net.neighbors(agent.uplink_index()).await.map_err(read)?;
    Ok(tokio::task::block_in_place(|| {
        agent.links_resynced(&links);
        let declared = declared::links_resynced(model, &links);
        agent.neighbors_resynced(neighbors, model) | declared
    }))
}

/// Bind the admin listeners and serve them: the debug API and the metrics listener.
async fn listen(
    config: &AgentConfig,
    state: &Arc<AdminState>,
    open_files: u64,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AgentError> {
    let (debug_limits, metrics_limits) = admin_limits(open_files);
    let debug_listener = crate::admin::bind(&config.admin)
        .await
        .map_err(|e| AgentError::Other(format!("debug API (--admin) on {e}")))?;
    let metrics_listener = crate::admin::bind(&config.metrics)
        .await
        .map_err(|e| AgentError::Other(format!("metrics listener (--metrics-address) on {e}")))?;
    if let AdminAddr::Tcp(_) = config.admin {
        tracing::warn!(
            admin = %config.admin,
            "the debug API is on TCP: every local user can read every service, route and flow"
        );
    }
    tracing::info!(
        admin = %debug_listener.local(),
        max_connections = debug_limits.max_connections,
        "debug API listening"
    );
    tracing::info!(
        metrics = %metrics_listener.local(),
        max_connections = metrics_limits.max_connections,
        "metrics, health and readiness listening"
    );
    Ok(vec![
        tokio::spawn(crate::admin::serve(
            debug_listener,
            Arc::clone(state),
            Scope::Debug,
            debug_limits,
        )),
        tokio::spawn(crate::admin::serve(
            metrics_listener,
            Arc::clone(state),
            Scope::Metrics,
            metrics_limits,
        )),
    ])
}

/// Whether the agent `predecessor` names no longer holds the state directory.
fn predecessor_left(config: &AgentConfig, predecessor: Option<u32>) -> bool {
    predecessor.is_some()
        && config
            .state_dir
            .as_deref()
            .and_then(|dir| kxdp_xdp::state::holder(dir).ok().flatten())
            != predecessor
}

async fn run_async(mut config: AgentConfig, open_files: u64) -> Result<(), AgentError> {
    // The state directory in effect: none where files are not kept in memory.
    config.state_dir = crate::reconcile::lasting_state(config.state_dir.as_deref());
    let net = NodeNet::connect().map_err(|e| AgentError::Other(e.to_string()))?;
    let (uplink_index, mut settings) = node_settings(&config, &net).await?;
    let source_name = match config.source {
        SourceConfig::Manifests(_) => "manifests",
        SourceConfig::Kubernetes(_) => "kubernetes",
    };
    let state = Arc::new(AdminState::new(&config.node, source_name));
    // An agent running with the same state directory is replaced once this one is ready to
    // serve (the dataplane's start asks it to leave): its listeners are free only then.
    let predecessor = config
        .state_dir
        .as_deref()
        .and_then(|dir| kxdp_xdp::state::holder(dir).ok().flatten());
    let mut servers = Vec::new();
    match predecessor {
        Some(pid) => tracing::info!(
            predecessor = pid,
            "an agent runs with this state directory: taking over from it once ready"
        ),
        None => servers = listen(&config, &state, open_files).await?,
    }
    let mut model = Model::new();
    let mut source = match &config.source {
        SourceConfig::Manifests(paths) => {
            let mut files = ManifestSource::new(paths.clone());
            files
                .load(&mut model)
                .map_err(|e| AgentError::Other(e.to_string()))?;
            Source::Files(Manifests {
                files,
                errors: 0,
                failing: false,
            })
        }
        SourceConfig::Kubernetes(kubeconfig) => {
            let client = kxdp_control::kube_source::client(kubeconfig.as_deref())
                .await
                .map_err(|e| AgentError::Other(format!("Kubernetes client: {e}")))?;
            let kube = KubeSource::new(client, &config.node);
            Source::Kube(Box::new(kube.clone().watch()), kube)
        }
    };
    // The node is changed only now that every setting, listener and the source have passed.
    if let Some(name) = &config.host_interface {
        let mtu = settings.node.pod_mtu;
        settings.node.host_mac = host_pair(&config, &net, name, mtu).await?;
    }
    let mut agent = Agent::new(&config, settings, uplink_index, Arc::clone(&state));
    let mut subnet_file = SubnetFile::new(config.subnet_file.clone());
    // Subscribe before the first read, so no change falls between the two.
    let mut events = nodefacts::watch().map_err(|e| AgentError::Other(e.to_string()))?;
    resync(&net, &mut agent, &mut model).await?;
    let mut annotated = matches!(source, Source::Files(_));
    if let Source::Files(_) = source {
        state.set_source(true, 0, None);
    }
    let mut dirty = matches!(source, Source::Files(_));
    let mut kube_errors = 0;
    let mut noticed = Instant::now();
    let deadline = config.max_run.map(|d| tokio::time::Instant::now() + d);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut resync_tick = tokio::time::interval(RESYNC);
    resync_tick.reset();
    // Each listener is made once: one made inside the loop would be registered again on
    // every turn.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| AgentError::Other(format!("SIGINT handler: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| AgentError::Other(format!("SIGTERM handler: {e}")))?;
    let result = loop {
        // A change waits to go live from when it was noticed (the proxier's health).
        if dirty {
            state.queued(noticed);
        }
        // Nothing is published before the source has listed everything once.
        if dirty && source.synced() {
            dirty = false;
            if let Err(e) = tokio::task::block_in_place(|| agent.publish(&mut model, noticed)) {
                break Err(e);
            }
            if let Some(snap) = &agent.live {
                let subnet = crate::subnet_file::from_node(&snap.node);
                match tokio::task::block_in_place(|| subnet_file.update(subnet)) {
                    Ok(true) => {
                        tracing::info!(subnet = %subnet.subnet, path = %config.subnet_file.display(), "pod network written for the CNI plugin")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, path = %config.subnet_file.display(), "writing the pod network for the CNI plugin; will retry on the next publish")
                    }
                }
            }
            // The tables may name next hops the kernel has yet to resolve.
            solicit(&net, uplink_index, agent.missing_neighbors(&model)).await;
        }
        // Taken over (or the predecessor left by itself): its listeners are free, or will be
        // in a moment (it closes them before it lets go of the state directory).
        if servers.is_empty() && predecessor_left(&config, predecessor) {
            match listen(&config, &state, open_files).await {
                Ok(s) => servers = s,
                Err(e) => tracing::warn!(error = %e, "the admin listeners; will retry"),
            }
        }
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let retry_at = agent.retry_at();
        let until_retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
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
                        // An error in this batch of events holds until a batch without one.
                        let s = watch.status();
                        let failing = s.errors > kube_errors;
                        kube_errors = s.errors;
                        state.set_source(s.synced, s.errors, s.last_error.clone().filter(|_| failing));
                    }
                }
                Err(e) => break Err(AgentError::Other(e)),
            },
            event = events.next() => match event {
                Some(NodeEvent::Link(link)) => {
                    tokio::task::block_in_place(|| agent.link_changed(&link));
                    // A pod its veth declares: compiled and published at the loop's top,
                    // then served once its veth is up.
                    if declared::link_changed(&mut model, &link) {
                        noticed = Instant::now();
                        dirty = true;
                    }
                }
                Some(NodeEvent::LinkGone { index, name }) if index == agent.uplink_index() => {
                    // Its XDP program and sockets went with it: nothing here can serve the
                    // node any more. Exit, so that the supervisor starts the agent afresh.
                    break Err(AgentError::Other(format!(
                        "the uplink {name} (index {index}) was deleted under the dataplane"
                    )));
                }
                Some(NodeEvent::LinkGone { index, name }) => {
                    tokio::task::block_in_place(|| agent.link_gone(index, &name));
                    if declared::link_gone(&mut model, &name) {
                        noticed = Instant::now();
                        dirty = true;
                    }
                }
                Some(NodeEvent::Neighbor(n)) => {
                    if agent.neighbor_changed(&n, &model) {
                        noticed = Instant::now();
                        dirty = true;
                    }
                }
                Some(NodeEvent::NeighborGone { ifindex, ip }) => {
                    let gone = nodefacts::Neighbor { ifindex, ip, mac: None };
                    if agent.neighbor_changed(&gone, &model) {
                        noticed = Instant::now();
                        dirty = true;
                    }
                }
                Some(NodeEvent::Lost) | None => {
                    // The kernel dropped notifications (a full buffer), or the socket failed
                    // (then watch again first): read everything, so nothing is missed.
                    if event.is_none() {
                        tracing::warn!("netlink socket failed: watching again and resyncing");
                        events = match nodefacts::watch() {
                            Ok(events) => events,
                            Err(e) => break Err(AgentError::Other(e.to_string())),
                        };
                    } else {
                        tracing::warn!("netlink notifications lost: resyncing");
                    }
                    match resync(&net, &mut agent, &mut model).await {
                        Ok(true) => {
                            noticed = Instant::now();
                            dirty = true;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "resyncing the link and neighbour tables"),
                    }
                }
            },
            _ = until_retry => {
                // Publishing again starts the dataplane again.
                dirty = true;
            }
            _ = resync_tick.tick() => {
                match resync(&net, &mut agent, &mut model).await {
                    Ok(true) => {
                        noticed = Instant::now();
                        dirty = true;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "resyncing the link and neighbour tables"),
                }
                solicit(&net, uplink_index, agent.missing_neighbors(&model)).await;
            }
            _ = housekeeping.tick() => {
                // The successor that took the sockets tells this agent to stop (SIGTERM); in
                // case it could not, stop here.
                if agent.replaced() {
                    tracing::info!("the dataplane was handed over to the agent that replaced this one: stopping");
                    break Ok(());
                }
                // Reading manifest files blocks: off the async threads.
                if tokio::task::block_in_place(|| source.reread(&mut model, &state)) {
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
            _ = sigint.recv() => {
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
    // The listeners first (and the socket file, if still ours: they go with the task), so a
    // successor waiting for the state directory finds them free once it has it.
    for server in servers {
        server.abort();
        let _ = server.await;
    }
    let stopped = tokio::task::block_in_place(|| agent.stop());
    result.and(stopped)
}
