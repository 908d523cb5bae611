//! The plugin and the agent together: on the demo's two-node cluster (real `kxdp agent`
//! processes in node namespaces, [`AgentCluster`]), a pod the plugin attaches on node-a from
//! the pod network the agent wrote is served by the agent and reaches pods on both nodes; its
//! DEL makes the agent forget it.
//!
//! The plugin runs in node-a's namespace (`nsenter --net=`), its configuration, subnet file
//! and addresses in the cluster's private folder. Needs the `kxdp` binary beside the test's
//! (`cargo build -p kxdp-agent --bin kxdp`, which `cargo test --workspace` does).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use kxdp_control::compile::pod_interface_name;
use kxdp_control::node_subnet::NodeSubnet;
use kxdp_tests::cluster::{eventually, AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::{ip, skip_unless_privileged};
use serde_json::{json, Value};

mod common;
use common::run_plugin;

/// A pod namespace the test made, deleted when dropped.
struct PodNs(String);

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Run the plugin in namespace `node` with `env` and `config`: whether it succeeded, stdout.
fn plugin(node: &str, env: &[(&str, &str)], config: &Value) -> (bool, Value) {
    let (ok, text, stderr) = run_plugin(node, env, &config.to_string());
    eprint!("{stderr}");
    (ok, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn an_agent_serves_the_pod_the_plugin_attached() {
    if skip_unless_privileged("an_agent_serves_the_pod_the_plugin_attached") {
        return;
    }
    // The API lists the pod at the first address the plugin hands out.
    let manifest = format!(
        "{}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cni-pod, namespace: default}}\n\
         spec: {{nodeName: node-a, containers: [{{name: c, image: c}}]}}\n\
         status: {{phase: Running, podIP: 10.244.1.2}}\n",
        DEMO_MANIFEST.trim_end()
    );
    let mut c = AgentCluster::build(&manifest, &DEMO_PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let node = c.tb.nodes[0].ns.clone();

    // The agent wrote node-a's pod network for the plugin (just after it turned ready).
    let path = c.subnet_file(0);
    assert!(
        eventually(Duration::from_secs(5), || path.exists()),
        "the agent wrote {}",
        path.display()
    );
    let written = std::fs::read_to_string(&path).expect("the agent wrote it");
    let subnet = NodeSubnet::parse(&written).unwrap();
    assert_eq!(subnet.subnet.to_string(), "10.244.1.0/24");
    assert_eq!(subnet.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(subnet.mtu, 1450);

    let config = json!({
        "cniVersion": "1.1.0",
        "name": "kxdp",
        "type": "kxdp-cni",
        "subnetFile": c.subnet_file(0),
        "dataDir": c.dir().join("ipam"),
        "agentAddress": "127.0.0.1:9901",
    });
    let (ok, out) = plugin(&node, &[("CNI_COMMAND", "STATUS")], &config);
    assert!(ok, "STATUS with a ready agent: {out}");

    let pod = PodNs(format!("{}-cnipod", c.tb.prefix()));
    ip(None, &["netns", "add", &pod.0]).unwrap();
    let netns = format!("/run/netns/{}", pod.0);
    let env = [
        ("CNI_CONTAINERID", "cni-pod-sandbox"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=cni-pod"),
    ];
    let with = |command: &'static str| {
        let mut e = vec![("CNI_COMMAND", command)];
        e.extend(env);
        e
    };
    let (ok, result) = plugin(&node, &with("ADD"), &config);
    assert!(ok, "ADD: {result}");
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/24");

    // Served as soon as its veth is up, and it reaches a pod on its node and one across.
    let host_side = pod_interface_name("default", "cni-pod");
    let served = |c: &AgentCluster| {
        c.try_status(0)
            .is_ok_and(|s| s.interfaces.iter().any(|i| i.name == host_side))
    };
    assert!(
        eventually(Duration::from_secs(10), || served(&c)),
        "node-a's agent did not serve {host_side}:\n{}",
        c.log(0)
    );
    for to in [Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 2, 10)] {
        let replies = c.tb.ping(&pod.0, to, 3, Duration::from_secs(10)).unwrap();
        assert!(replies >= 2, "ping {to} from the plugin's pod: {replies}/3");
    }

    // DEL: the veth goes, and the agent lets it go.
    let mut prev = config.clone();
    prev["prevResult"] = result;
    let (ok, out) = plugin(&node, &with("DEL"), &prev);
    assert!(ok, "DEL: {out}");
    assert!(
        eventually(Duration::from_secs(10), || !served(&c)),
        "node-a's agent still serves {host_side}"
    );
}

/// A pod the API (here the manifest) does not list: its veth's declaration is all the agent
/// knows, and that is enough to serve it by the time `ADD` returns, as a real cluster needs
/// (the kubelet reports the pod's address only after `ADD`).
#[test]
fn a_pod_the_api_does_not_list_yet_is_served_when_add_returns() {
    if skip_unless_privileged("a_pod_the_api_does_not_list_yet_is_served_when_add_returns") {
        return;
    }
    let mut c = AgentCluster::build(DEMO_MANIFEST, &DEMO_PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let node = c.tb.nodes[0].ns.clone();
    let path = c.subnet_file(0);
    assert!(
        eventually(Duration::from_secs(5), || path.exists()),
        "the agent wrote {}",
        path.display()
    );
    let config = json!({
        "cniVersion": "1.1.0",
        "name": "kxdp",
        "type": "kxdp-cni",
        "subnetFile": path,
        "dataDir": c.dir().join("ipam"),
        "agentAddress": "127.0.0.1:9901",
        "servedTimeoutMs": 5000,
    });
    let host_side = pod_interface_name("default", "unlisted");
    let served = |c: &AgentCluster| {
        c.metrics_get(0, &format!("/served/{host_side}"), Duration::from_secs(2))
            .map(|(code, _)| code)
    };
    assert_eq!(served(&c), Ok(404), "before ADD");

    let pod = PodNs(format!("{}-unlisted", c.tb.prefix()));
    ip(None, &["netns", "add", &pod.0]).unwrap();
    ip(Some(&pod.0), &["link", "set", "lo", "up"]).unwrap();
    let netns = format!("/run/netns/{}", pod.0);
    let env = [
        ("CNI_CONTAINERID", "unlisted-sandbox"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=unlisted",
        ),
    ];
    let with = |command: &'static str| {
        let mut e = vec![("CNI_COMMAND", command)];
        e.extend(env);
        e
    };
    let (ok, stdout, stderr) = run_plugin(&node, &with("ADD"), &config.to_string());
    assert!(ok, "ADD: {stdout}\n{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        !stderr.contains("returning anyway"),
        "ADD did not see its veth served: {stderr}\n{}",
        c.log(0)
    );
    // Served when ADD returned: no wait here.
    assert_eq!(served(&c), Ok(200), "after ADD:\n{}", c.log(0));
    // The declaration the agent read, on the node's end.
    let shown = Command::new("ip")
        .args(["-n", &node, "-o", "link", "show", &host_side])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    let address = result["ips"][0]["address"].as_str().unwrap();
    let ip_only = address.split('/').next().unwrap();
    assert!(
        shown.contains(&format!("alias kxdp-pod default/unlisted {ip_only}")),
        "{shown}"
    );

    // Its first ping to a pod on its node is answered at once: the first ARP request for its
    // gateway found the veth served (a lost one is retried only after a second).
    let start = std::time::Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &pod.0, "ping", "-n", "-c", "1", "-W", "3"])
        .arg(Ipv4Addr::new(10, 244, 1, 10).to_string())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "ping from the unlisted pod: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        took < Duration::from_millis(900),
        "the first ping took {took:?}: its first ARP request went unanswered"
    );
    // And across nodes: node-b learns the pod from node-a's route for the whole podCIDR.
    let replies =
        c.tb.ping(
            &pod.0,
            Ipv4Addr::new(10, 244, 2, 10),
            3,
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        replies >= 2,
        "ping node-b's pod from the unlisted pod: {replies}/3"
    );

    // DEL: the veth and its declaration go, and the agent lets the pod go.
    let mut prev = config.clone();
    prev["prevResult"] = result;
    let (ok, out) = plugin(&node, &with("DEL"), &prev);
    assert!(ok, "DEL: {out}");
    assert!(
        eventually(Duration::from_secs(10), || served(&c) == Ok(404)),
        "node-a's agent still serves {host_side}"
    );
    assert!(
        !c.status(0).interfaces.iter().any(|i| i.name == host_side),
        "still listed"
    );
}
