//! `kxdp agent`'s settings: flags, then `KXDP_*` environment variables, then the YAML file
//! given with `--config` (keys named as the flags), then the defaults. Every error names the
//! flag (or the file's key) that is wrong.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::xsk::PortConfig;
use serde::Deserialize;

use crate::admin::AdminAddr;
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
    /// Cores for the workers, one worker each (`0,1` or `2-3`); `auto`: one worker pinned to
    /// the last CPU of the agent's affinity mask (what a cpuset or the kubelet's static CPU
    /// manager gives it); `none`: one worker the scheduler places [default: auto].
    #[arg(long, env = "KXDP_CORES", value_name = "LIST")]
    pub cores: Option<String>,
    /// How idle workers wait: `adaptive` (spin for --spin-us after traffic, then sleep in
    /// poll), `wakeup` (sleep in poll whenever idle), or `busy-poll` (spin; a core each)
    /// [default: adaptive].
    #[arg(long, env = "KXDP_MODE")]
    pub mode: Option<String>,
    /// In adaptive mode, how long a worker keeps spinning after its last frame, in
    /// microseconds [default: 2000].
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
    /// The pods' MTU, what their interfaces are set to: kxdp delivers packets up to it to a
    /// pod whole, and segments (TCP) or fragments what leaves for a smaller link; up to
    /// 65535 keeps a pod's TCP in 64 KiB segments inside the node [default: the uplink's MTU
    /// less 50, as flannel sets it].
    #[arg(long, env = "KXDP_POD_MTU")]
    pub pod_mtu: Option<u16>,
    /// Whether TCP segments cut for the VXLAN tunnel leave as UDP GSO packets through a
    /// packet socket on the uplink (`true`: one send per pod frame, needs CAP_NET_RAW and
    /// Linux 6.2) or each as an AF_XDP frame (`false`) [default: true].
    #[arg(long, env = "KXDP_TUNNEL_GSO", value_name = "BOOL")]
    pub tunnel_gso: Option<bool>,
    /// The debug API (`/api/*`: status, services, routes, counters, conntrack, trace, which
    /// show every flow): unix:PATH, a socket only its owner may use, or ADDRESS:PORT, which
    /// every local user can read [default: unix:/run/kxdp/admin.sock].
    #[arg(long, env = "KXDP_ADMIN")]
    pub admin: Option<String>,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`): ADDRESS:PORT or unix:PATH
    /// [default: 127.0.0.1:9901].
    #[arg(long, env = "KXDP_METRICS_ADDRESS")]
    pub metrics_address: Option<String>,
    /// The node addresses NodePorts and health-check node ports answer on: those inside these
    /// CIDRs (comma-separated, as kube-proxy's flag; `primary` alone means the default; IPv6
    /// ranges are another family's and left out) [default: primary, the node's primary
    /// address, as kube-proxy's nftables mode].
    #[arg(
        long,
        env = "KXDP_NODEPORT_ADDRESSES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub nodeport_addresses: Vec<String>,
    /// Where to write the node's pod network for the CNI plugin (`kxdp-cni`), as flannel
    /// writes /run/flannel/subnet.env [default: /run/kxdp/subnet.env].
    #[arg(long, env = "KXDP_SUBNET_FILE", value_name = "FILE")]
    pub subnet_file: Option<PathBuf>,
    /// Flows the conntrack table holds [default: 262144].
    #[arg(long, env = "KXDP_CONNTRACK_SIZE")]
    pub conntrack_size: Option<u32>,
    /// Where the state that outlives the agent is kept (conntrack, and which agent holds it):
    /// a directory on a tmpfs. A new agent started with the same directory takes over from the
    /// one running, and one restarted after a crash carries on with its flows; `none` keeps
    /// the state in the process and detaches the XDP programs when the agent stops
    /// [default: /run/kxdp/state].
    #[arg(long, env = "KXDP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// The pods' MTU, if set (else flannel's, from the uplink's).
    pub pod_mtu: Option<u16>,
    /// Whether segments cut for the tunnel leave as UDP GSO packets.
    pub tunnel_gso: bool,
    /// The debug API's address.
    pub admin: AdminAddr,
    /// The metrics listener's address.
    pub metrics: AdminAddr,
    /// `--nodeport-addresses`: NodePorts answer on the node's addresses inside these; `None`:
    /// on the primary address only.
    pub nodeport_addresses: Option<Vec<Ipv4Cidr>>,
    /// Where the node's pod network is written for the CNI plugin.
    pub subnet_file: PathBuf,
    /// Conntrack capacity.
    pub conntrack_size: u32,
    /// The state directory, unless `none`.
    pub state_dir: Option<PathBuf>,
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
    /// `--cores` must name CPUs this process may run on.
    pub fn resolve(self) -> Result<AgentConfig, AgentError> {
        let usable = usable_cpus();
        self.resolve_on(usable.as_deref())
    }

    /// [`AgentArgs::resolve`] on a machine whose usable CPUs are `usable` (not checked when
    /// `None`: the kernel would not say).
    fn resolve_on(self, usable: Option<&[usize]>) -> Result<AgentConfig, AgentError> {
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
        let cores = match self.cores.or(file.cores).as_deref() {
            None | Some("auto") => vec![usable.and_then(|u| u.last().copied())],
            Some("none") => vec![None],
            Some(list) => {
                let cores = parse_cores(list).map_err(|e| config_error("--cores", e))?;
                if let Some(usable) = usable {
                    check_cores(&cores, usable).map_err(|e| config_error("--cores", e))?;
                }
                cores.into_iter().map(Some).collect()
            }
        };
        let spin_us = self.spin_us.or(file.spin_us);
        let mode = match self.mode.or(file.mode).as_deref() {
            Some("wakeup") => Mode::Wakeup { timeout_ms: 50 },
            Some("busy-poll") => Mode::BusyPoll,
            None | Some("adaptive") => Mode::Adaptive {
                spin_us: spin_us.unwrap_or(DEFAULT_SPIN_US),
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
            kxdp_control::model::parse_cidr(&text).map_err(|e| config_error(field, e))
        };
        let vtep_mac = self
            .vtep_mac
            .or(file.vtep_mac)
            .map(|m| {
                kxdp_control::model::parse_mac(&m).ok_or_else(|| {
                    config_error("--vtep-mac", format!("{m:?} is not a MAC address"))
                })
            })
            .transpose()?;
        let admin: AdminAddr = self
            .admin
            .or(file.admin)
            .unwrap_or_else(|| crate::admin::DEFAULT_ADMIN.into())
            .parse()
            .map_err(|e| config_error("--admin", e))?;
        let metrics: AdminAddr = self
            .metrics_address
            .or(file.metrics_address)
            .unwrap_or_else(|| crate::admin::DEFAULT_METRICS.into())
            .parse()
            .map_err(|e| config_error("--metrics-address", e))?;
        if admin == metrics {
            return Err(config_error(
                "--metrics-address",
                format!("{metrics} is the debug API's address (--admin) too: give each its own"),
            ));
        }
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
        let pod_mtu = self.pod_mtu.or(file.pod_mtu);
        if let Some(mtu) = pod_mtu {
            let max = max_pod_mtu();
            if !(576..=max).contains(&mtu) {
                return Err(config_error(
                    "--pod-mtu",
                    format!("{mtu} is not in 576..={max}"),
                ));
            }
        }
        let nodeport_addresses = parse_nodeport_addresses(if self.nodeport_addresses.is_empty() {
            &file.nodeport_addresses
        } else {
            &self.nodeport_addresses
        })
        .map_err(|e| config_error("--nodeport-addresses", e))?;
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
        let host_interface = self.host_interface.or(file.host_interface);
        if let Some(name) = &host_interface {
            check_host_interface(name).map_err(|e| config_error("--host-interface", e))?;
        }
        Ok(AgentConfig {
            node,
            source,
            uplink: self.uplink.or(file.uplink).unwrap_or_else(|| "eth0".into()),
            host_interface,
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
            pod_mtu,
            tunnel_gso: self.tunnel_gso.or(file.tunnel_gso).unwrap_or(true),
            admin,
            metrics,
            nodeport_addresses,
            subnet_file: self
                .subnet_file
                .or(file.subnet_file)
                .unwrap_or_else(|| kxdp_control::node_subnet::DEFAULT_PATH.into()),
            conntrack_size,
            state_dir: Some(
                self.state_dir
                    .or(file.state_dir)
                    .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            )
            .filter(|d| d.as_os_str() != "none"),
            max_run: self.max_run.or(file.max_run).map(Duration::from_secs),
            json_logs,
        })
    }
}

/// Whether `name` can be kxdp's end of the host pair: a name Linux takes, not the kernel end's
/// fixed one, and not a pod's.
fn check_host_interface(name: &str) -> Result<(), String> {
    let kernel_end = crate::host_interface::KERNEL_END;
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "{name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
        ));
    }
    if name == kernel_end {
        return Err(format!(
            "{name} is the kernel's end of the host pair kxdp makes: name kxdp's end otherwise \
             (host0)"
        ));
    }
    if kxdp_control::compile::is_pod_interface_name(name) {
        return Err(format!(
            "{name} is named as a pod's veth is (kx and 12 hex digits)"
        ));
    }
    Ok(())
}

/// `--nodeport-addresses`' list: `None` for the default (nothing given, or `primary`), else
/// the IPv4 CIDRs (IPv6 ones are skipped, as kube-proxy leaves each family's to its proxier).
fn parse_nodeport_addresses(list: &[String]) -> Result<Option<Vec<Ipv4Cidr>>, String> {
    let list: Vec<&str> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() || list == ["primary"] {
        return Ok(None);
    }
    let mut cidrs = Vec::new();
    for text in list {
        if text == "primary" {
            return Err("\"primary\" cannot be combined with CIDRs".into());
        }
        if text.contains(':') && text.contains('/') {
            continue;
        }
        cidrs.push(kxdp_control::model::parse_cidr(text).map_err(|e| e.to_string())?);
    }
    Ok(Some(cidrs))
}

/// The largest pod MTU the workers carry whole: the largest frame their ports take, less its
/// Ethernet header, and at most Linux's largest Ethernet MTU.
pub fn max_pod_mtu() -> u16 {
    let frame = PortConfig::default().max_frame();
    frame.saturating_sub(14).min(65535) as u16
}

/// How long an adaptive worker spins after its last frame, in microseconds, unless told: longer
/// than the gap between a request/response exchange's frames at 500 exchanges a second, so at
/// such rates no frame finds a worker asleep (measured with `make perf`: p50 of a ClusterIP
/// round trip across nodes 1.08x the kernel's and p99 1.26x, 1.66x in another run, against a
/// p99 of 1.95x with 200 µs and 2.5x in wakeup mode).
pub const DEFAULT_SPIN_US: u32 = 2000;

/// Where the state that outlives the agent is kept: `/run` is a tmpfs on most distributions.
pub const DEFAULT_STATE_DIR: &str = "/run/kxdp/state";

/// `0,1` or `2-3` or `0,2-3` as core numbers, at most [`MAX_QUEUES`] of them (a range is
/// measured before it is expanded, so `0-99999999999` is refused without being listed).
///
/// [`MAX_QUEUES`]: kxdp_xdp::runtime::MAX_QUEUES
pub fn parse_cores(list: &str) -> Result<Vec<usize>, String> {
    let max = kxdp_xdp::runtime::MAX_QUEUES as usize;
    let too_many = || format!("{list:?} names more than {max} cores: at most {max} workers");
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim) {
        let bad =
            || format!("{part:?} is not a core number or range (as in 0,1 or 2-3), auto or none");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                // `b - a + 1` cores, compared without the `+ 1` that could overflow.
                if b - a >= max - cores.len() {
                    return Err(too_many());
                }
                cores.extend(a..=b);
            }
            None => {
                if cores.len() == max {
                    return Err(too_many());
                }
                cores.push(part.parse().map_err(|_| bad())?);
            }
        }
    }
    let unique: HashSet<usize> = cores.iter().copied().collect();
    if unique.len() != cores.len() {
        return Err(format!("{list:?} names a core twice"));
    }
    Ok(cores)
}

/// The CPUs this process may run on: online, and in its affinity mask (which a container's
/// cpuset narrows); `None` if the kernel does not say.
pub fn usable_cpus() -> Option<Vec<usize>> {
    affinity(0).filter(|cpus| !cpus.is_empty())
}

/// The CPUs thread `tid` of this process may run on, as the kernel has them now: what a
/// pinning asked for, unless a cpuset change has since overridden it. `None` if the process
/// has no such thread (gone, its id perhaps another process's by now; 0, which the kernel
/// would take for the caller).
pub fn thread_cpus(tid: i32) -> Option<Vec<usize>> {
    if tid <= 0 || !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
        return None;
    }
    affinity(tid)
}

/// Task `pid`'s affinity mask (0: the calling thread's).
fn affinity(pid: i32) -> Option<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(pid)).ok()?;
    Some(
        (0..nix::sched::CpuSet::count())
            .filter(|c| set.is_set(*c).unwrap_or(false))
            .collect(),
    )
}

/// Every core of `cores` must be one of `usable`: a worker pinned elsewhere cannot start.
fn check_cores(cores: &[usize], usable: &[usize]) -> Result<(), String> {
    let outside: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|c| !usable.contains(c))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let (it, verb) = if outside.len() == 1 {
        ("CPU", "is")
    } else {
        ("CPUs", "are")
    };
    Err(format!(
        "{it} {} {verb} not online or not allowed to this process; the CPUs it may use are {}",
        cpu_list(&outside),
        cpu_list(usable)
    ))
}

/// `cpus` (sorted) as the kernel writes a CPU list: `0-3,6`.
pub(crate) fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The locked memory `workers` workers' UMEMs take (one UMEM each, `PortConfig::default()`).
pub fn umem_bytes(workers: usize) -> u64 {
    let umem = PortConfig::default();
    u64::from(umem.frames) * u64::from(umem.frame_size) * workers as u64
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
        let c = args().resolve_on(Some(&[0, 2, 5])).unwrap();
        assert_eq!(c.uplink, "eth0");
        assert_eq!(c.cores, vec![Some(5)]);
        assert_eq!(c.source, SourceConfig::Kubernetes(None));
        assert_eq!(c.admin, "unix:/run/kxdp/admin.sock".parse().unwrap());
        assert_eq!(c.metrics, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(c.subnet_file, PathBuf::from("/run/kxdp/subnet.env"));
        assert!(c.tunnel_gso);
        assert_eq!(
            c.mode,
            Mode::Adaptive {
                spin_us: DEFAULT_SPIN_US,
                timeout_ms: 50
            }
        );
    }

    #[test]
    fn adaptive_mode_takes_its_spin_and_nothing_else_does() {
        let mut a = args();
        a.mode = Some("adaptive".into());
        let c = a.clone().resolve().unwrap();
        assert_eq!(
            c.mode,
            Mode::Adaptive {
                spin_us: DEFAULT_SPIN_US,
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
        b.mode = Some("wakeup".into());
        b.spin_us = Some(30);
        let e = b.resolve().unwrap_err().to_string();
        assert!(e.contains("--spin-us") && e.contains("adaptive"), "{e}");
        let mut b = args();
        b.mode = Some("spin".into());
        let e = b.resolve().unwrap_err().to_string();
        assert!(e.contains("--mode") && e.contains("\"spin\""), "{e}");
    }

    #[test]
    fn one_worker_takes_the_last_allowed_cpu_unless_told_otherwise() {
        let mut a = args();
        a.cores = Some("auto".into());
        assert_eq!(
            a.clone().resolve_on(Some(&[3, 4])).unwrap().cores,
            vec![Some(4)]
        );
        // Where the kernel does not say which CPUs are allowed, nothing is pinned.
        assert_eq!(a.clone().resolve_on(None).unwrap().cores, vec![None]);
        a.cores = Some("none".into());
        assert_eq!(
            a.clone().resolve_on(Some(&[3, 4])).unwrap().cores,
            vec![None]
        );
        // By default, on this machine: its own last allowed CPU.
        let here = usable_cpus().expect("the kernel lists this process's CPUs");
        assert_eq!(args().resolve().unwrap().cores, vec![here.last().copied()]);
        a.cores = Some("nne".into());
        let e = a.resolve_on(Some(&[0])).unwrap_err().to_string();
        assert!(e.contains("--cores") && e.contains("\"nne\""), "{e}");
    }

    #[test]
    fn a_threads_cpus_are_its_own_pinning() {
        let tid = || nix::unistd::gettid().as_raw();
        let before = thread_cpus(tid()).expect("this thread's CPUs");
        let last = *before.last().unwrap();
        // A thread pins itself, then waits while this one reads its CPUs.
        let (pinned_tx, pinned) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            kxdp_xdp::pin_current_thread(last).expect("pinning needs no privilege");
            pinned_tx.send(tid()).unwrap();
            let _ = done_rx.recv();
        });
        let other_tid = pinned.recv().unwrap();
        assert_eq!(thread_cpus(other_tid), Some(vec![last]));
        // Another thread's pinning is its own.
        assert_eq!(thread_cpus(tid()), Some(before));
        done.send(()).unwrap();
        other.join().expect("thread");
        assert_eq!(thread_cpus(i32::MAX), None, "no such thread");
        assert_eq!(thread_cpus(0), None, "0 is not a thread id");
    }

    #[test]
    fn cores_must_be_cpus_this_process_may_use() {
        let mut a = args();
        a.cores = Some("0,99".into());
        let e = a
            .clone()
            .resolve_on(Some(&[0, 1, 2, 3, 6]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cores")
                && e.contains("CPU 99 is not online")
                && e.contains("the CPUs it may use are 0-3,6"),
            "{e}"
        );
        a.cores = Some("1-2".into());
        let c = a.clone().resolve_on(Some(&[0, 1, 2, 3])).unwrap();
        assert_eq!(c.cores, vec![Some(1), Some(2)]);
        assert_eq!(cpu_list(&[0, 2, 3, 4, 7]), "0,2-4,7");
        // This machine's own CPUs all pass.
        let here = usable_cpus().expect("the kernel lists this process's CPUs");
        a.cores = Some(cpu_list(&here));
        assert!(a.resolve().is_ok());
    }

    #[test]
    fn cores_parse_as_lists_and_ranges() {
        assert_eq!(parse_cores("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cores("1,1").unwrap_err().contains("twice"));
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn core_ranges_are_measured_before_they_are_listed() {
        // Listing this one first would take ~800 GB.
        let e = parse_cores("0-99999999999").unwrap_err();
        assert!(e.contains("at most 64 workers"), "{e}");
        let e = parse_cores(&format!("0-{}", usize::MAX)).unwrap_err();
        assert!(e.contains("at most 64 workers"), "{e}");
        assert_eq!(parse_cores("0-63").unwrap().len(), 64);
        assert!(parse_cores("0-64").is_err());
        assert!(parse_cores("0-62,70").is_ok());
        assert!(parse_cores("0-62,70,71").is_err());
        assert!(parse_cores("70,0-63").is_err());
    }

    #[test]
    fn flags_override_the_file_and_file_errors_name_the_field() {
        let dir = std::env::temp_dir().join(format!("kxdp-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.yaml");
        std::fs::write(
            &file,
            "node: from-file\nuplink: ens1\ncores: \"0-1\"\nmanifest: [a.yaml]\n\
             metrics-address: 127.0.0.1:9911\ntunnel-gso: false\n",
        )
        .unwrap();
        let c = AgentArgs {
            config: Some(file.clone()),
            uplink: Some("ens9".into()),
            ..AgentArgs::default()
        }
        .resolve_on(Some(&[0, 1]))
        .unwrap();
        assert_eq!(c.node, "from-file");
        assert_eq!(c.uplink, "ens9");
        assert_eq!(c.cores, vec![Some(0), Some(1)]);
        assert_eq!(c.source, SourceConfig::Manifests(vec!["a.yaml".into()]));
        assert_eq!(c.metrics, "127.0.0.1:9911".parse().unwrap());
        assert!(!c.tunnel_gso);
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
        let cases: [(Edit, &str); 13] = [
            (|a| a.node = None, "--node"),
            (|a| a.mode = Some("spin".into()), "--mode"),
            (
                |a| a.cluster_cidr = Some("10.244.0.0".into()),
                "--cluster-cidr",
            ),
            // Host bits set: refused, naming the network meant.
            (
                |a| a.service_cidr = Some("10.96.0.1/12".into()),
                "--service-cidr: \"10.96.0.1/12\" has bits set beyond the prefix length: write the network, 10.96.0.0/12",
            ),
            (|a| a.admin = Some("localhost".into()), "--admin"),
            (
                |a| a.metrics_address = Some("unix:".into()),
                "--metrics-address",
            ),
            (
                |a| {
                    a.admin = Some("127.0.0.1:9901".into());
                },
                "--metrics-address",
            ),
            (|a| a.conntrack_size = Some(0), "--conntrack-size"),
            (
                |a| a.host_interface = Some("kxdp0".into()),
                "--host-interface: kxdp0 is the kernel's end",
            ),
            (
                |a| a.host_interface = Some("a-name-far-too-long".into()),
                "--host-interface",
            ),
            (
                |a| a.host_interface = Some("kx0123456789ab".into()),
                "--host-interface",
            ),
            (
                |a| a.nodeport_addresses = vec!["198.18.0.0/15".into(), "10.1.2".into()],
                "--nodeport-addresses: \"10.1.2\"",
            ),
            (
                |a| a.nodeport_addresses = vec!["primary".into(), "10.0.0.0/8".into()],
                "--nodeport-addresses",
            ),
        ];
        for (edit, flag) in cases {
            let mut a = args();
            edit(&mut a);
            let e = a.resolve().unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn nodeport_addresses_default_to_the_primary_address_and_take_cidrs() {
        assert_eq!(args().resolve().unwrap().nodeport_addresses, None);
        let mut a = args();
        a.nodeport_addresses = vec!["primary".into()];
        assert_eq!(a.resolve().unwrap().nodeport_addresses, None);
        let mut a = args();
        a.nodeport_addresses = vec![
            "198.18.0.0/15".into(),
            " 10.0.0.0/8".into(),
            "fd00::/64".into(),
        ];
        let c = a.resolve().unwrap();
        assert_eq!(
            c.nodeport_addresses,
            Some(vec![
                Ipv4Cidr::new(std::net::Ipv4Addr::new(198, 18, 0, 0), 15),
                Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 0, 0, 0), 8),
            ])
        );
        // From the config file, as a YAML list.
        let dir = std::env::temp_dir().join(format!("kxdp-npa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.yaml");
        std::fs::write(&file, "node: n\nnodeport-addresses: [0.0.0.0/0]\n").unwrap();
        let c = AgentArgs {
            config: Some(file),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            c.nodeport_addresses,
            Some(vec![Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0)])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
