//! The two-node clusters of the iperf3 and latency measurements: one run by `kxdp agent`s, one
//! by the kernel (flannel-style nodes with kube-proxy's rules), with the same pods, addresses
//! and services (the demo's and a UDP echo ClusterIP), and the agents' restart in another
//! worker mode.

use std::time::Duration;

use kxdp_control::compile::Compiler;
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_control::trace::trace_settings;
use kxdp_perf::kube_proxy::ruleset;
use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::{Spec, Testbed};

/// The services of the two-node comparison: the demo's, and a UDP echo ClusterIP served by
/// web-b.
const ECHO: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\n\
spec: {type: ClusterIP, clusterIP: 10.96.0.40, ports: [{name: echo, protocol: UDP, port: 7, targetPort: 7007}]}\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: default\n  labels: {kubernetes.io/service-name: echo}\n\
addressType: IPv4\nports: [{name: echo, protocol: UDP, port: 7007}]\n\
endpoints:\n  - {addresses: [10.244.2.10], nodeName: node-b, conditions: {ready: true}}\n";

/// The two-node clusters: pod namespaces by demo pod name, and what keeps them alive.
pub(crate) enum Cluster {
    Kxdp(Box<AgentCluster>),
    Kernel(Testbed),
}

impl Cluster {
    pub(crate) fn pod_ns(&self, name: &str) -> String {
        match self {
            Cluster::Kxdp(c) => c.pod(name).ns.clone(),
            Cluster::Kernel(tb) => {
                let (_, node, ip) = DEMO_PODS.iter().find(|p| p.0 == name).expect("a demo pod");
                tb.nodes[*node]
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

pub(crate) fn clusters() -> Result<(Cluster, Cluster), String> {
    let manifest = format!("{DEMO_MANIFEST}{ECHO}");
    let mut kx = AgentCluster::build(&manifest, &DEMO_PODS)?;
    kx.start(600, &[])?;
    // The kernel cluster: flannel-style nodes with the same addresses, kube-proxy's rules for
    // the same services on both.
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 2,
        external: false,
    })
    .map_err(|e| e.to_string())?;
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
    Ok((Cluster::Kxdp(Box::new(kx)), Cluster::Kernel(tb)))
}

/// Restart the kxdp cluster's agents with workers in `mode` (`busy-poll` or `adaptive`),
/// node-a's on core 0 and node-b's on core 1.
pub(crate) fn restart_agents(c: &mut Cluster, mode: &str) -> Result<(), String> {
    let Cluster::Kxdp(c) = c else {
        return Ok(());
    };
    let manifest = c.manifest.display().to_string();
    for node in 0..2 {
        c.stop(node)?;
        let core = node.to_string();
        c.start_node(
            node,
            600,
            &["--manifest", &manifest, "--mode", mode, "--cores", &core],
        )?;
    }
    for node in 0..2 {
        c.wait_ready(node, Duration::from_secs(30))?;
    }
    Ok(())
}
