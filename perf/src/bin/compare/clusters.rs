//! The two-node clusters of the iperf3 and latency measurements, at one underlay MTU: one run
//! by `kxdp agent`s, one by the kernel (flannel-style nodes with kube-proxy's rules, every
//! offload at its default, as a flannel node runs), with the same pods, addresses and services
//! (the demo's and a UDP echo ClusterIP), the kernel's pods at the underlay's MTU less 50
//! ([`Testbed::set_underlay_mtu`], flannel's rule); and the agents' restart in another worker
//! mode.
//!
//! kxdp's agents may fail to start, or to serve a pod, at an MTU kxdp does not take: the
//! clusters are still built and the failure kept, for the report to show rather than hide.
//! kxdp's agents run with `--pod-mtu` [`KXDP_POD_MTU`], what its pods' veths are set to: the
//! large frames inside the node that carry a pod's TCP in 64 KiB segments, as a flannel node's
//! pods send theirs through `cni0` with the kernel's default offloads.

use std::time::Duration;

use kxdp_control::compile::Compiler;
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_control::trace::trace_settings;
use kxdp_perf::kube_proxy::ruleset;
use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::{Spec, Testbed};

use crate::iperf::NOT_STARTED;

/// The services of the two-node comparison: the demo's, and a UDP echo ClusterIP served by
/// web-b.
const ECHO: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\n\
spec: {type: ClusterIP, clusterIP: 10.96.0.40, ports: [{name: echo, protocol: UDP, port: 7, targetPort: 7007}]}\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: default\n  labels: {kubernetes.io/service-name: echo}\n\
addressType: IPv4\nports: [{name: echo, protocol: UDP, port: 7007}]\n\
endpoints:\n  - {addresses: [10.244.2.10], nodeName: node-b, conditions: {ready: true}}\n";

/// kxdp's pods' MTU and its agents' `--pod-mtu`: Linux's largest Ethernet MTU.
pub(crate) const KXDP_POD_MTU: u16 = 65535;

/// How long an agent may run: longer than any profile's measurements, which stop it sooner.
const AGENT_MAX_RUN_S: u64 = 3600;

/// Which of the two clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Kxdp,
    Kernel,
}

/// Both clusters at one underlay MTU.
pub(crate) struct Clusters {
    pub(crate) mtu: u16,
    pub(crate) kxdp: Box<AgentCluster>,
    /// Why kxdp's agents did not start, or did not serve every pod, at this MTU.
    pub(crate) kxdp_failed: Option<String>,
    pub(crate) kernel: Testbed,
}

impl Clusters {
    /// The namespace of demo pod `name` in cluster `which`.
    pub(crate) fn pod_ns(&self, which: Which, name: &str) -> String {
        match which {
            Which::Kxdp => self.kxdp.pod(name).ns.clone(),
            Which::Kernel => {
                let (_, node, ip) = DEMO_PODS.iter().find(|p| p.0 == name).expect("a demo pod");
                self.kernel.nodes[*node]
                    .pods
                    .iter()
                    .find(|p| p.ip == *ip)
                    .expect("the pod")
                    .ns
                    .clone()
            }
        }
    }
}

/// Build both clusters with underlay MTU `mtu`, and start kxdp's agents with their defaults
/// (adaptive mode, one worker pinned to the last CPU the agent may use), node-a's agent on
/// core 0 and node-b's on core 1, as on two machines
/// ([`node_cpu`](kxdp_tests::cluster::node_cpu)).
pub(crate) fn clusters(mtu: u16) -> Result<Clusters, String> {
    let manifest = format!("{DEMO_MANIFEST}{ECHO}");
    let mut kx = AgentCluster::build(&manifest, &DEMO_PODS)?;
    kx.tb
        .set_underlay_mtu(mtu)
        .and_then(|()| kx.tb.set_kxdp_pod_mtu(KXDP_POD_MTU))
        .map_err(|e| format!("kxdp's cluster at MTU {mtu}: {e}"))?;
    let pod_mtu = KXDP_POD_MTU.to_string();
    let kxdp_failed = match kx.start(AGENT_MAX_RUN_S, &["--pod-mtu", &pod_mtu]) {
        Err(e) => Some(format!("{NOT_STARTED}: {}", agent_error(&e))),
        Ok(()) => unserved(&kx),
    };
    // The kernel cluster: flannel-style nodes with the same addresses, kube-proxy's rules for
    // the same services on both.
    let mut tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 2,
        external: false,
    })
    .map_err(|e| e.to_string())?;
    tb.set_underlay_mtu(mtu)
        .map_err(|e| format!("the kernel's cluster at MTU {mtu}: {e}"))?;
    for (i, node) in ["node-a", "node-b"].iter().enumerate() {
        let mut model = Model::new();
        for (_, o) in parse("demo", &manifest).map_err(|e| e.to_string())? {
            model.apply(&o).map_err(|e| e.to_string())?;
        }
        let settings = trace_settings(
            &model,
            node,
            kxdp_control::model::parse_cidr("10.244.0.0/16").expect("a CIDR"),
            kxdp_control::model::parse_cidr("10.96.0.0/12").expect("a CIDR"),
        );
        let snap = Compiler::new(settings)
            .compile(&mut model)
            .map_err(|e| e.to_string())?
            .snapshot;
        tb.exec_with_input(&tb.nodes[i].ns, &["nft", "-f", "-"], &ruleset(&snap))
            .map_err(|e| e.to_string())?;
    }
    Ok(Clusters {
        mtu,
        kxdp: Box::new(kx),
        kxdp_failed,
        kernel: tb,
    })
}

/// The pod interfaces an agent could not serve, with why (`/api/status`), after a moment
/// for them to be tried; none when every pod is served.
fn unserved(c: &AgentCluster) -> Option<String> {
    std::thread::sleep(Duration::from_millis(500));
    let errors: Vec<String> = (0..2)
        .flat_map(|node| match c.try_status(node) {
            Ok(s) => s.interface_errors,
            Err(e) => vec![format!("status: {e}")],
        })
        .collect();
    (!errors.is_empty()).then(|| format!("pods not served: {}", errors.join("; ")))
}

/// What says why an agent failed, not its whole log: the log's last line (the agent's exit
/// message), with libbpf's reason where it gave one.
fn agent_error(e: &str) -> String {
    let lines: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let last = lines.last().copied().unwrap_or("no reason given");
    let why = match lines.iter().rev().find(|l| l.starts_with("libbpf:")) {
        Some(libbpf) if *libbpf != last => format!("{last} ({libbpf})"),
        _ => last.to_owned(),
    };
    why.chars().take(400).collect()
}

/// Restart kxdp's agents with workers in `mode` (`adaptive`, `wakeup` or `busy-poll`): pinned
/// as by default, each agent on its node's core
/// ([`node_cpu`](kxdp_tests::cluster::node_cpu)), or left with every core and `--cores none`,
/// the scheduler placing their workers.
pub(crate) fn restart_agents(c: &mut AgentCluster, mode: &str, pinned: bool) -> Result<(), String> {
    let manifest = c.manifest.display().to_string();
    let pod_mtu = KXDP_POD_MTU.to_string();
    let mut args = vec![
        "--manifest",
        &manifest,
        "--mode",
        mode,
        "--pod-mtu",
        &pod_mtu,
    ];
    if !pinned {
        args.extend(["--cores", "none"]);
    }
    for node in 0..2 {
        c.stop(node)?;
        c.start_node(node, AGENT_MAX_RUN_S, &args)?;
    }
    for node in 0..2 {
        c.wait_ready(node, Duration::from_secs(30))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_failure_is_told_by_its_exit_message_and_libbpfs_reason() {
        let e = "the agent of node-a exited (exit status: 1):\n\
                 2026-01-01T00:00:00Z  INFO kxdp_agent::run: starting node=node-a mtu=9000\n\
                 libbpf: prog 'kxdp_steer': failed to attach to xdp: Numerical result out of range\n\
                 kxdp: the dataplane cannot start: interface uplink: failed to attach XDP program\n\n";
        assert_eq!(
            agent_error(e),
            "kxdp: the dataplane cannot start: interface uplink: failed to attach XDP program \
             (libbpf: prog 'kxdp_steer': failed to attach to xdp: Numerical result out of range)"
        );
        assert_eq!(agent_error("timed out"), "timed out");
    }
}
