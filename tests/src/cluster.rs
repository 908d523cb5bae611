//! A two-node cluster run by real `kxdp agent` processes, for the demo and the agent's
//! end-to-end tests.
//!
//! [`AgentCluster::build`] makes two kxdp nodes on one underlay (node-a 198.18.0.10, node-b
//! 198.18.0.11, as [`Testbed::two_kxdp_nodes`]), an external client (198.18.0.100), and the
//! pods it is given, each attached as a CNI plugin on a kxdp node would attach it: the host end
//! of its veth named [`pod_interface_name`], its MAC [`pod_mac`]. The manifest is copied into a
//! private directory, where tests may rewrite it and the agents re-read it; a pod scheduled later
//! gets its veth the same way ([`AgentCluster::add_pod_veth`]). [`AgentCluster::start`]
//! runs one agent per node in the node's namespace (`ip netns exec`) and, as on two machines,
//! on a CPU of its own ([`node_cpu`]; the agent pins its worker there), with the debug API on a
//! Unix socket in that directory ([`AgentCluster::admin`]), the metrics listener on its default
//! `127.0.0.1:9901` in the node's namespace ([`AgentCluster::metrics_get`] reads it from there),
//! and a time limit. Agents get SIGTERM when the cluster is dropped, and the testbed removes
//! every namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kxdp_agent::admin::{self, AdminAddr, StatusView};
use kxdp_control::compile::{pod_interface_name, pod_mac};

use crate::cni::{cni_bin, Attachment, Plugin};
use crate::node::mac_text;
use crate::testbed::{Pod, Testbed};

/// The demo cluster's manifest (`control/manifests/demo.yaml`).
pub const DEMO_MANIFEST: &str = include_str!("../../control/manifests/demo.yaml");

/// The demo cluster's pods: name, node index, address.
pub const DEMO_PODS: [(&str, usize, Ipv4Addr); 4] = [
    ("web-a", 0, Ipv4Addr::new(10, 244, 1, 10)),
    ("client-a", 0, Ipv4Addr::new(10, 244, 1, 11)),
    ("web-b", 1, Ipv4Addr::new(10, 244, 2, 10)),
    ("client-b", 1, Ipv4Addr::new(10, 244, 2, 11)),
];

/// The nodes' names, by testbed node index.
pub const NODES: [&str; 2] = ["node-a", "node-b"];

/// A pod of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterPod {
    /// Its name (namespace `default`).
    pub name: String,
    /// Its node's index.
    pub node: usize,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub ns: String,
}

/// The cluster; see the module documentation.
#[derive(Debug)]
pub struct AgentCluster {
    /// The namespaces.
    pub tb: Testbed,
    /// The pods.
    pub pods: Vec<ClusterPod>,
    /// The manifest the agents read.
    pub manifest: PathBuf,
    dir: PathBuf,
    agents: Vec<Option<Child>>,
    /// Pods [`attach_pods_by_plugin`](Self::attach_pods_by_plugin) attached: name, node and
    /// attachment, detached when the cluster is dropped.
    attached: Vec<(String, usize, Attachment)>,
}

/// The CPU node `node`'s agent runs on, as if each node were a machine: the node's index
/// among the CPUs this process may use, wrapping around where there are fewer.
pub fn node_cpu(node: usize) -> usize {
    let cpus = kxdp_agent::settings::usable_cpus().unwrap_or_else(|| vec![0]);
    cpus[node % cpus.len()]
}

/// The `kxdp` binary: `KXDP_BIN`, or beside the running executable (or its parent directory,
/// for test executables under `deps/`).
pub fn kxdp_bin() -> Result<PathBuf, String> {
    built_binary("kxdp", "KXDP_BIN", "cargo build -p kxdp-agent --bin kxdp")
}

/// Binary `name`: the path in `env_var`, or beside the running executable (or in its parent
/// directory, for test executables under `deps/`); the error says to run `build`.
pub(crate) fn built_binary(name: &str, env_var: &str, build: &str) -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(env_var) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {name} binary beside {}: build it first ({build}, with the same profile) \
                 or set {env_var}",
                exe.display()
            )
        })
}

impl AgentCluster {
    /// Build the namespaces for `pods` (name, node index, address) and copy `manifest_text`.
    pub fn build(manifest_text: &str, pods: &[(&str, usize, Ipv4Addr)]) -> Result<Self, String> {
        AgentCluster::build_with_pod_mtu(manifest_text, pods, None)
    }

    /// [`AgentCluster::build`] with pods' (and host interfaces') veths at `pod_mtu`, for agents
    /// started with `--pod-mtu` the same; `None` keeps the test bed's, the agents' default.
    pub fn build_with_pod_mtu(
        manifest_text: &str,
        pods: &[(&str, usize, Ipv4Addr)],
        pod_mtu: Option<u16>,
    ) -> Result<Self, String> {
        let mut tb = Testbed::two_kxdp_nodes(&[], &[]).map_err(|e| e.to_string())?;
        if pod_mtu.is_some() {
            tb.pod_mtu = pod_mtu;
        }
        tb.add_external().map_err(|e| e.to_string())?;
        let mut list = Vec::new();
        for (name, node, ip) in pods {
            let pod = attach_pod(&mut tb, *node, name, *ip)?;
            list.push(ClusterPod {
                name: (*name).to_owned(),
                node: *node,
                ip: *ip,
                ns: pod.ns,
            });
        }
        let dir = std::env::temp_dir().join(format!("kxdp-{}", tb.prefix()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let manifest = dir.join("cluster.yaml");
        std::fs::write(&manifest, manifest_text).map_err(|e| e.to_string())?;
        Ok(AgentCluster {
            tb,
            pods: list,
            manifest,
            dir,
            agents: vec![None, None],
            attached: Vec::new(),
        })
    }

    /// Create pod `name`'s veth on node `node` (namespace `default`, address `ip`) while the
    /// agents run, as the CNI plugin does when a pod is scheduled, and wait up to `timeout`
    /// until node `node`'s agent serves it (its status lists the host end). The pod is not
    /// added to [`pods`](Self::pods).
    pub fn add_pod_veth(
        &mut self,
        node: usize,
        name: &str,
        ip: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Pod, String> {
        let pod = attach_pod(&mut self.tb, node, name, ip)?;
        let host_side = pod_interface_name("default", name);
        let served = || {
            self.try_status(node)
                .is_ok_and(|s| s.interfaces.iter().any(|i| i.name == host_side))
        };
        if eventually(timeout, served) {
            Ok(pod)
        } else {
            Err(format!(
                "{}'s agent did not serve {host_side} (pod {name}) within {timeout:?}:\n{}",
                NODES[node],
                self.log(node)
            ))
        }
    }

    /// Node `node`'s CNI plugin (the built `kxdp-cni`), reading the subnet file node `node`'s
    /// agent writes, its addresses in the cluster's directory, `STATUS` asking the agent's
    /// metrics listener.
    pub fn plugin(&self, node: usize) -> Result<Plugin, String> {
        Ok(Plugin::new(
            cni_bin()?,
            &self.tb.nodes[node].ns,
            &self.subnet_file(node),
            &self.dir.join(format!("{}.ipam", NODES[node])),
            admin::DEFAULT_METRICS,
        ))
    }

    /// Attach `pods` (name and node index; namespace `default`) through the CNI plugin, as a
    /// container runtime on their node does once the node's agent has written its subnet
    /// file (after [`start`](Self::start)): a namespace for each, then the plugin's `ADD` in
    /// the node's namespace. Their addresses are the plugin's; the pods join
    /// [`pods`](Self::pods). The manifest is not changed: [`set_pod_ips`] rewrites addresses
    /// in a manifest's text. Dropping the cluster detaches them
    /// ([`detach_pods_by_plugin`](Self::detach_pods_by_plugin)).
    pub fn attach_pods_by_plugin(&mut self, pods: &[(&str, usize)]) -> Result<(), String> {
        for (name, node) in pods {
            let path = self.subnet_file(*node);
            if !eventually(Duration::from_secs(10), || path.exists()) {
                return Err(format!(
                    "the agent of {} wrote no subnet file {} (is it running?):\n{}",
                    NODES[*node],
                    path.display(),
                    self.log(*node)
                ));
            }
            let ns = format!("{}-n{node}{name}", self.tb.prefix());
            self.tb.add_namespace(&ns).map_err(|e| e.to_string())?;
            let attachment = self.plugin(*node)?.add(name, &ns)?;
            self.pods.push(ClusterPod {
                name: (*name).to_owned(),
                node: *node,
                ip: attachment.ip,
                ns,
            });
            self.attached.push(((*name).to_owned(), *node, attachment));
        }
        Ok(())
    }

    /// The demo's pods ([`DEMO_PODS`], on a cluster built without them and started on
    /// [`DEMO_MANIFEST`]) attached through the plugin, with the addresses it gave them
    /// written into the manifest the agents read, as the API server would report them; waits
    /// (up to `timeout`) until both agents have loaded it and serve the pods' veths.
    pub fn attach_demo_pods_by_plugin(&mut self, timeout: Duration) -> Result<(), String> {
        let before = [self.status(0).generation, self.status(1).generation];
        let pods: Vec<(&str, usize)> = DEMO_PODS.iter().map(|(n, node, _)| (*n, *node)).collect();
        self.attach_pods_by_plugin(&pods)?;
        let changes: Vec<(Ipv4Addr, Ipv4Addr)> = DEMO_PODS
            .iter()
            .map(|(name, _, ip)| (*ip, self.pod(name).ip))
            .collect();
        let text = std::fs::read_to_string(&self.manifest).map_err(|e| e.to_string())?;
        std::fs::write(&self.manifest, set_pod_ips(&text, &changes))
            .map_err(|e| format!("{}: {e}", self.manifest.display()))?;
        for node in 0..2 {
            let veths: Vec<String> = self
                .pods
                .iter()
                .filter(|p| p.node == node)
                .map(|p| pod_interface_name("default", &p.name))
                .collect();
            let loaded = || {
                self.try_status(node).is_ok_and(|s| {
                    s.generation > before[node]
                        && veths
                            .iter()
                            .all(|v| s.interfaces.iter().any(|i| &i.name == v))
                })
            };
            if !eventually(timeout, loaded) {
                return Err(format!(
                    "the agent of {} did not load the plugin's pod addresses and serve {veths:?} \
                     within {timeout:?}:\n{}",
                    NODES[node],
                    self.log(node)
                ));
            }
        }
        Ok(())
    }

    /// `DEL` every pod [`attach_pods_by_plugin`](Self::attach_pods_by_plugin) attached, as the
    /// runtime does when a pod is removed; the pods leave [`pods`](Self::pods). Every pod is
    /// tried; the errors are returned together.
    pub fn detach_pods_by_plugin(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for (name, node, attachment) in std::mem::take(&mut self.attached) {
            if let Err(e) = self.plugin(node).and_then(|p| p.del(&name, &attachment)) {
                errors.push(e);
            }
            self.pods.retain(|p| p.name != name);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The addresses node `node`'s plugin holds (the files named by an address in its store).
    pub fn plugin_allocations(&self, node: usize) -> Vec<Ipv4Addr> {
        let store = self.dir.join(format!("{}.ipam", NODES[node])).join("kxdp");
        std::fs::read_dir(store)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Node `node`'s `/api/status`, or why it could not be read.
    pub fn try_status(&self, node: usize) -> Result<StatusView, String> {
        admin::get_json(&self.admin(node), "/api/status")
    }

    /// Node `node`'s `/api/status`; panics, naming the node, when it cannot be read (for
    /// tests, where the agent is expected to answer).
    pub fn status(&self, node: usize) -> StatusView {
        self.try_status(node)
            .unwrap_or_else(|e| panic!("the status of {}: {e}", NODES[node]))
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> &ClusterPod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Node `node`'s admin API.
    pub fn admin(&self, node: usize) -> AdminAddr {
        AdminAddr::Unix(self.dir.join(format!("{}.sock", NODES[node])))
    }

    /// The address every node's agent serves metrics, health and readiness on: the default
    /// `--metrics`, the same in each node's namespace, so it is reached from inside one (as
    /// [`metrics_get`](Self::metrics_get) does).
    pub fn metrics_addr(&self) -> AdminAddr {
        admin::DEFAULT_METRICS.parse().expect("the default parses")
    }

    /// GET `path` from node `node`'s metrics listener (from inside the node's namespace),
    /// bounded by `timeout`.
    pub fn metrics_get(
        &self,
        node: usize,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let addr = self.metrics_addr();
        in_netns(&self.tb.nodes[node].ns, || {
            admin::client::get_within(&addr, path, timeout)
        })?
    }

    /// The process id of node `node`'s agent (`ip netns exec` execs it), if it was started.
    pub fn agent_pid(&self, node: usize) -> Option<u32> {
        self.agents[node].as_ref().map(Child::id)
    }

    /// Where node `node`'s agent writes its pod network for the CNI plugin (`--subnet-file`),
    /// in the cluster's private directory.
    pub fn subnet_file(&self, node: usize) -> PathBuf {
        self.dir.join(format!("{}.subnet.env", NODES[node]))
    }

    /// Where node `node`'s agent keeps the state that outlives it (`--state-dir`): on the
    /// tmpfs at /dev/shm, as /run is on a node; removed with the cluster.
    pub fn state_dir(&self, node: usize) -> PathBuf {
        PathBuf::from(format!(
            "/dev/shm/kxdp-{}-{}",
            self.tb.prefix(),
            NODES[node]
        ))
    }

    /// Start another agent on node `node` with `args` (as [`start_node`](Self::start_node)),
    /// which takes over from the one running there; returns the one replaced, to wait for.
    pub fn replace_node(
        &mut self,
        node: usize,
        max_run_s: u64,
        args: &[&str],
    ) -> Result<Option<Child>, String> {
        let old = self.agents[node].take();
        self.start_node(node, max_run_s, args)?;
        Ok(old)
    }

    /// SIGKILL node `node`'s agent, as a crash ends it, and reap it.
    pub fn kill(&mut self, node: usize) -> Result<(), String> {
        let Some(mut child) = self.agents[node].take() else {
            return Err(format!("the agent of {} is not running", NODES[node]));
        };
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map(drop).map_err(|e| e.to_string())
    }

    /// Node `node`'s agent log.
    pub fn log_path(&self, node: usize) -> PathBuf {
        self.dir.join(format!("{}.log", NODES[node]))
    }

    /// What node `node`'s agent has logged so far.
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }

    /// Start both agents (each stops by itself after `max_run_s`) on the manifest, with
    /// `extra` flags, and wait until both are ready.
    pub fn start(&mut self, max_run_s: u64, extra: &[&str]) -> Result<(), String> {
        let manifest = self.manifest.display().to_string();
        for node in 0..2 {
            let mut args = vec!["--manifest", manifest.as_str()];
            args.extend(extra);
            self.start_node(node, max_run_s, &args)?;
        }
        for node in 0..2 {
            self.wait_ready(node, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Start node `node`'s agent with `args` after the common flags (node, uplink, admin API,
    /// subnet file, time limit): the source at least. Does not wait. The agent may run only
    /// on [`node_cpu`]`(node)` unless `args` or the environment say where its workers go
    /// (`--cores`, `KXDP_CORES`).
    pub fn start_node(&mut self, node: usize, max_run_s: u64, args: &[&str]) -> Result<(), String> {
        let bin = kxdp_bin()?;
        // Appended to: an agent that replaces another logs after it.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .map_err(|e| e.to_string())?;
        let told = args.iter().any(|a| a.starts_with("--cores"));
        let mut command = if told || std::env::var_os("KXDP_CORES").is_some() {
            Command::new("ip")
        } else {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &node_cpu(node).to_string(), "ip"]);
            taskset
        };
        let child = command
            .args(["netns", "exec", &self.tb.nodes[node].ns])
            .arg(&bin)
            .args([
                "agent",
                "--node",
                NODES[node],
                "--uplink",
                "uplink",
                "--admin",
            ])
            .arg(self.admin(node).to_string())
            .arg("--subnet-file")
            .arg(self.subnet_file(node))
            .arg("--state-dir")
            .arg(self.state_dir(node))
            .args(["--max-run", &max_run_s.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        self.agents[node] = Some(child);
        Ok(())
    }

    /// Wait until node `node`'s agent answers `/readyz` with 200 and has resolved its
    /// underlay neighbours.
    pub fn wait_ready(&mut self, node: usize, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let addr = self.admin(node);
        loop {
            if let Some(child) = &mut self.agents[node] {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the agent of {} exited ({status}):\n{}",
                        NODES[node],
                        self.log(node)
                    ));
                }
            }
            let ready = matches!(admin::get(&addr, "/readyz"), Ok((200, _)));
            let resolved = ready
                && self
                    .try_status(node)
                    .is_ok_and(|s| s.neighbors.needed == s.neighbors.resolved);
            if resolved {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the agent of {} was not ready within {timeout:?}:\n{}",
                    NODES[node],
                    self.log(node)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run `kxdp <args>` (the CLI, from the root namespace).
    pub fn kxdp(&self, args: &[&str]) -> Output {
        Command::new(kxdp_bin().expect("kxdp is built"))
            .args(args)
            .output()
            .expect("kxdp runs")
    }

    /// Run `kxdp <args>` in node `node`'s namespace (`kxdp uninstall`, which acts on the
    /// node's links).
    pub fn kxdp_on(&self, node: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.tb.nodes[node].ns])
            .arg(kxdp_bin().expect("kxdp is built"))
            .args(args)
            .output()
            .expect("kxdp runs")
    }

    /// Send SIGTERM to node `node`'s agent and wait (at most 15 s) for it to exit; returns
    /// whether it exited successfully.
    pub fn stop(&mut self, node: usize) -> Result<bool, String> {
        let Some(mut child) = self.agents[node].take() else {
            return Err(format!("the agent of {} is not running", NODES[node]));
        };
        terminate(&mut child, Duration::from_secs(15))
    }

    /// Wait at most `timeout` for node `node`'s agent to exit by itself: its exit status, or
    /// `None` while it still runs (or was never started).
    pub fn wait_exit(
        &mut self,
        node: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.agents[node].as_mut()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory holding the manifest, sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Poll `f` every 50 ms until it is true or `timeout` passes; whether it became true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The value of the first line of a Prometheus text that starts with `series` (a metric's
/// name, with its labels where it has some).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Attach pod `name` (namespace `default`) to kxdp node `node` as a CNI plugin on a kxdp node
/// would: the host end of its veth named [`pod_interface_name`], its MAC [`pod_mac`].
fn attach_pod(tb: &mut Testbed, node: usize, name: &str, ip: Ipv4Addr) -> Result<Pod, String> {
    let host_side = pod_interface_name("default", name);
    tb.add_kxdp_pod(node, &host_side, ip, &mac_text(pod_mac(ip)))
        .map_err(|e| format!("pod {name}'s veth {host_side}: {e}"))
}

/// Run `f` on a thread of its own inside network namespace `ns` (as `ip netns exec` would).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            kxdp_xdp::enter_netns(ns).map_err(|e| format!("entering namespace {ns}: {e}"))?;
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// SIGTERM, then SIGKILL after `grace`; whether the process exited successfully.
fn terminate(child: &mut Child, grace: Duration) -> Result<bool, String> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output();
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status.success());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("pid {} ignored SIGTERM for {grace:?}", child.id()))
}

/// `manifest` with every pod address `from` replaced by `to` (whole addresses only: `10.244.1.1`
/// does not touch `10.244.1.10`), as the API server reports the address the runtime's plugin
/// gave a pod in its status and endpoint slices.
pub fn set_pod_ips(manifest: &str, changes: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut rest = manifest;
    'scan: while !rest.is_empty() {
        let at_boundary = !out.ends_with(|c: char| c.is_ascii_digit() || c == '.');
        if at_boundary {
            for (from, to) in changes {
                let from = from.to_string();
                if let Some(after) = rest.strip_prefix(from.as_str()) {
                    if !after.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                        out.push_str(&to.to_string());
                        rest = after;
                        continue 'scan;
                    }
                }
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl Drop for AgentCluster {
    fn drop(&mut self) {
        // Before the agents and namespaces go, as a runtime removes its pods: the plugin's
        // addresses and node ends freed.
        let _ = self.detach_pods_by_plugin();
        for child in self.agents.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = terminate(&mut child, Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for node in 0..NODES.len() {
            let _ = std::fs::remove_dir_all(self.state_dir(node));
        }
    }
}
