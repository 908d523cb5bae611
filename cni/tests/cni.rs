//! `kxdp-cni` driven as containerd and CRI-O drive a plugin: the built binary, run with the
//! `CNI_*` environment and the network configuration on stdin, its stdout read as a result
//! or an error object.
//!
//! The plugin runs where a runtime runs it, in the node's network namespace: here a "node"
//! namespace each test creates, entered with `nsenter --net=` (which, unlike `ip netns exec`,
//! leaves /sys as it is), with pod namespaces made by `ip netns add` as `CNI_NETNS`. Nothing
//! is added to the machine's own namespace; the subnet file, the address store and the
//! agent's socket live in a folder the test creates. Namespaces and folder are removed by a
//! guard, also when a test fails.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use kxdp_control::compile::pod_interface_name;
use kxdp_tests::testbed::{ip, skip_unless_privileged, Testbed};
use serde_json::{json, Value};

mod common;
use common::run_plugin;

static BEDS: AtomicU32 = AtomicU32::new(0);

/// A node namespace, pod namespaces and a private folder; dropped, all are removed.
struct Bed {
    node: String,
    pods: Vec<String>,
    dir: PathBuf,
    prefix: String,
}

/// What one run of the plugin said.
#[derive(Debug)]
struct Out {
    ok: bool,
    stdout: Value,
    stderr: String,
}

impl Out {
    fn code(&self) -> u64 {
        self.stdout["code"].as_u64().unwrap_or(0)
    }

    fn details(&self) -> &str {
        self.stdout["details"].as_str().unwrap_or("")
    }
}

/// One invocation: the environment a runtime would set.
#[derive(Clone, Debug, Default)]
struct Call<'a> {
    command: Option<&'a str>,
    container: Option<&'a str>,
    netns: Option<String>,
    ifname: Option<&'a str>,
    args: Option<&'a str>,
}

impl Bed {
    fn new(subnet: &str, gateway: &str) -> Bed {
        let prefix = format!(
            "{}-cni{}",
            Testbed::process_prefix(),
            BEDS.fetch_add(1, Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("{prefix}-dir"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let node = format!("{prefix}-node");
        let bed = Bed {
            node: node.clone(),
            pods: Vec::new(),
            dir,
            prefix,
        };
        ip(None, &["netns", "add", &node]).unwrap();
        ip(Some(&node), &["link", "set", "lo", "up"]).unwrap();
        bed.write_subnet(subnet, gateway);
        bed
    }

    fn write_subnet(&self, subnet: &str, gateway: &str) {
        std::fs::write(
            self.dir.join("subnet.env"),
            format!(
                "KXDP_NETWORK=10.244.0.0/16\nKXDP_SUBNET={subnet}\nKXDP_GATEWAY={gateway}\n\
                 KXDP_MTU=1450\n"
            ),
        )
        .unwrap();
    }

    /// A new pod namespace; its path.
    fn pod(&mut self) -> String {
        let name = format!("{}-p{}", self.prefix, self.pods.len());
        ip(None, &["netns", "add", &name]).unwrap();
        self.pods.push(name.clone());
        format!("/run/netns/{name}")
    }

    /// The network configuration, with `extra` fields over the defaults.
    fn config(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": "kxdp",
            "type": "kxdp-cni",
            "subnetFile": self.dir.join("subnet.env"),
            "dataDir": self.dir.join("ipam"),
            "agentAddress": format!("unix:{}", self.dir.join("agent.sock").display()),
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// Run the plugin in the node's namespace.
    fn run(&self, call: &Call<'_>, stdin: &str) -> Out {
        let env: Vec<(&str, &str)> = [
            ("CNI_COMMAND", call.command),
            ("CNI_CONTAINERID", call.container),
            ("CNI_NETNS", call.netns.as_deref()),
            ("CNI_IFNAME", call.ifname),
            ("CNI_ARGS", call.args),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        let (ok, text, stderr) = run_plugin(&self.node, &env, stdin);
        Out {
            ok,
            stdout: if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout {text:?}: {e}"))
            },
            stderr,
        }
    }

    /// `command` for pod `netns` as container `container` with ifname eth0 and the pod's
    /// Kubernetes name `default/<container>`.
    fn attach(&self, command: &str, container: &str, netns: &str, config: &Value) -> Out {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}");
        self.run(
            &Call {
                command: Some(command),
                container: Some(container),
                netns: Some(netns.to_owned()),
                ifname: Some("eth0"),
                args: Some(&args),
            },
            &config.to_string(),
        )
    }

    /// The `kx` links of the node's namespace.
    fn node_veths(&self) -> BTreeSet<String> {
        links(&self.node)
            .into_iter()
            .filter(|l| l.starts_with("kx"))
            .collect()
    }

    /// The addresses the store holds.
    fn allocations(&self) -> BTreeSet<Ipv4Addr> {
        match std::fs::read_dir(self.dir.join("ipam/kxdp")) {
            Err(_) => BTreeSet::new(),
            Ok(d) => d
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
        }
    }

    /// The pod namespace at `netns` was deleted (as a runtime deletes it).
    fn remove_pod(&mut self, netns: &str) {
        let name = netns.trim_start_matches("/run/netns/");
        ip(None, &["netns", "del", name]).unwrap();
        self.pods.retain(|p| p != name);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The names of the links of namespace `ns` (`/run/netns/` stripped; empty: the machine's
/// own).
fn links(ns: &str) -> Vec<String> {
    let ns = ns.trim_start_matches("/run/netns/");
    let out = ip((!ns.is_empty()).then_some(ns), &["-o", "link", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_owned()))
        .collect()
}

/// `ip -n ns <args>`'s output.
fn ip_text(ns: &str, args: &[&str]) -> String {
    let ns = ns.trim_start_matches("/run/netns/");
    String::from_utf8_lossy(&ip(Some(ns), args).unwrap().stdout).into_owned()
}

/// `ethtool -k dev`'s transmit checksum line in namespace `ns`.
fn tx_checksumming(ns: &str, dev: &str) -> String {
    let ns = ns.trim_start_matches("/run/netns/");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-k", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tx-checksumming:"))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn add_check_del_as_a_runtime_drives_them() {
    if skip_unless_privileged("add_check_del_as_a_runtime_drives_them") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let pod = bed.pod();
    let config = bed.config(
        json!({"dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}}),
    );
    let add = bed.attach("ADD", "web-0", &pod, &config);
    assert!(add.ok, "{add:?}");
    let r = &add.stdout;
    let host = pod_interface_name("default", "web-0");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], host.as_str());
    assert_eq!(
        r["interfaces"][1],
        json!({"name": "eth0", "mac": "0a:58:0a:f4:01:02", "mtu": 1450, "sandbox": pod})
    );
    assert_eq!(
        r["ips"],
        json!([{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}])
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
    );
    assert_eq!(r["dns"]["nameservers"], json!(["10.96.0.10"]));

    // What the kernel has: the test bed's conventions for a kxdp pod.
    let eth0 = ip_text(&pod, &["-o", "link", "show", "eth0"]);
    assert!(
        eth0.contains("mtu 1450")
            && eth0.contains("link/ether 0a:58:0a:f4:01:02")
            && eth0.contains(",UP"),
        "{eth0}"
    );
    assert!(ip_text(&pod, &["-o", "addr", "show", "eth0"]).contains("inet 10.244.1.2/24"));
    let route = ip_text(&pod, &["route", "show", "default"]);
    assert!(route.contains("default via 10.244.1.1 dev eth0"), "{route}");
    let h = ip_text(&bed.node, &["-o", "link", "show", &host]);
    assert!(h.contains("mtu 1450") && h.contains(",UP"), "{h}");
    // The pod declared to the agent on the node's end.
    assert!(h.contains("alias kxdp-pod default/web-0 10.244.1.2"), "{h}");
    // No agent answers here: ADD asked once and succeeded anyway, saying so.
    assert!(
        add.stderr.contains("does not answer") && add.stderr.contains("returning anyway"),
        "{add:?}"
    );
    // Offloads at the kernel's defaults: the pod's stack leaves its checksums to the agent.
    assert_eq!(tx_checksumming(&bed.node, &host), "tx-checksumming: on");
    assert_eq!(tx_checksumming(&pod, "eth0"), "tx-checksumming: on");
    assert_eq!(bed.allocations(), [Ipv4Addr::new(10, 244, 1, 2)].into());
    assert!(!links("").contains(&host), "nothing in the root namespace");

    // CHECK with the ADD result passes; a route removed since fails, naming it.
    let mut with_prev = config.clone();
    with_prev["prevResult"] = r.clone();
    let check = bed.attach("CHECK", "web-0", &pod, &with_prev);
    assert!(check.ok, "{check:?}");
    ip(
        Some(pod.trim_start_matches("/run/netns/")),
        &["route", "del", "default"],
    )
    .unwrap();
    let check = bed.attach("CHECK", "web-0", &pod, &with_prev);
    assert!(!check.ok);
    assert_eq!(check.code(), 102, "{check:?}");
    assert!(
        check.details().contains("no default route via 10.244.1.1"),
        "{check:?}"
    );
    ip(Some(&bed.node), &["link", "set", &host, "mtu", "1400"]).unwrap();
    let check = bed.attach("CHECK", "web-0", &pod, &with_prev);
    assert!(
        check
            .details()
            .contains(&format!("{host}: MTU 1400 (expected 1450)")),
        "{check:?}"
    );

    // DEL removes both ends and frees the address; a second DEL succeeds too.
    let del = bed.attach("DEL", "web-0", &pod, &with_prev);
    assert!(del.ok && del.stdout.is_null(), "{del:?}");
    assert!(bed.node_veths().is_empty());
    assert_eq!(links(&pod), ["lo"]);
    assert!(bed.allocations().is_empty());
    let again = bed.attach("DEL", "web-0", &pod, &with_prev);
    assert!(again.ok, "{again:?}");
}

#[test]
fn del_after_the_namespace_is_gone_frees_the_address() {
    if skip_unless_privileged("del_after_the_namespace_is_gone_frees_the_address") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let config = bed.config(json!({}));
    let pod = bed.pod();
    let add = bed.attach("ADD", "a", &pod, &config);
    assert!(add.ok, "{add:?}");
    bed.remove_pod(&pod);
    // CHECK of a container that is gone: "container unknown", not a bad environment.
    let mut with_prev = config.clone();
    with_prev["prevResult"] = add.stdout.clone();
    let check = bed.attach("CHECK", "a", &pod, &with_prev);
    assert_eq!(check.code(), 3, "{check:?}");
    let del = bed.attach("DEL", "a", &pod, &config);
    assert!(del.ok, "{del:?}");
    assert!(bed.allocations().is_empty());
    assert!(bed.node_veths().is_empty(), "{:?}", bed.node_veths());

    // And without CNI_NETNS at all, as a runtime sends it once the namespace is gone.
    let pod = bed.pod();
    let add = bed.attach("ADD", "b", &pod, &config);
    assert_eq!(
        add.stdout["ips"][0]["address"], "10.244.1.3/24",
        "round-robin: not .2 again"
    );
    let del = bed.run(
        &Call {
            command: Some("DEL"),
            container: Some("b"),
            ifname: Some("eth0"),
            ..Call::default()
        },
        &config.to_string(),
    );
    assert!(del.ok, "{del:?}");
    assert!(bed.allocations().is_empty());
    assert!(bed.node_veths().is_empty());
    assert_eq!(links(&pod), ["lo"]);
}

#[test]
fn fifty_concurrent_adds_get_fifty_addresses_and_gc_frees_the_rest() {
    if skip_unless_privileged("fifty_concurrent_adds_get_fifty_addresses_and_gc_frees_the_rest") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let config = bed.config(json!({}));
    let pods: Vec<String> = (0..50).map(|_| bed.pod()).collect();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(n, pod)| {
                let (bed, config) = (&bed, &config);
                s.spawn(move || bed.attach("ADD", &format!("pod-{n}"), pod, config))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses = BTreeSet::new();
    for out in &outs {
        assert!(out.ok, "{out:?}");
        let a: ipnet::Ipv4Net = out.stdout["ips"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(![0, 1, 255].contains(&a.addr().octets()[3]), "{a}");
        addresses.insert(a.addr());
    }
    assert_eq!(addresses.len(), 50, "no address twice");
    assert_eq!(bed.allocations(), addresses);
    assert_eq!(bed.node_veths().len(), 50);

    // GC keeps the listed attachments and frees the others with their veths.
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = (0..10)
        .map(|n| json!({"containerID": format!("pod-{n}"), "ifname": "eth0"}))
        .collect();
    let out = bed.run(
        &Call {
            command: Some("GC"),
            ..Call::default()
        },
        &gc.to_string(),
    );
    assert!(out.ok, "{out:?}");
    assert_eq!(bed.allocations().len(), 10);
    let kept: BTreeSet<String> = (0..10)
        .map(|n| pod_interface_name("default", &format!("pod-{n}")))
        .collect();
    assert_eq!(bed.node_veths(), kept);
    for (n, pod) in pods.iter().enumerate().take(10) {
        assert!(bed.attach("DEL", &format!("pod-{n}"), pod, &config).ok);
    }
    assert!(bed.allocations().is_empty() && bed.node_veths().is_empty());
}

#[test]
fn every_error_answers_its_code_and_leaves_nothing_behind() {
    if skip_unless_privileged("every_error_answers_its_code_and_leaves_nothing_behind") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let pod = bed.pod();
    let config = bed.config(json!({}));
    let good = config.to_string();
    let add = Call {
        command: Some("ADD"),
        container: Some("c1"),
        netns: Some(pod.clone()),
        ifname: Some("eth0"),
        args: Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=c1"),
    };
    let with = |f: &dyn Fn(&mut Call<'static>)| {
        let mut c = Call {
            command: add.command,
            container: add.container,
            netns: add.netns.clone(),
            ifname: add.ifname,
            args: add.args,
        };
        f(&mut c);
        c
    };
    let config_with = |extra: Value| bed.config(extra).to_string();
    let mut no_version = config.clone();
    no_version.as_object_mut().unwrap().remove("cniVersion");
    let mut no_name = config.clone();
    no_name.as_object_mut().unwrap().remove("name");
    let regular_file = bed.dir.join("subnet.env").display().to_string();
    let garbage = bed.dir.join("garbage.env");
    std::fs::write(&garbage, "nonsense\n").unwrap();
    let cases: Vec<(&str, Call<'static>, String, u64, &str)> = vec![
        (
            "no CNI_COMMAND",
            with(&|c| c.command = None),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "unknown command",
            with(&|c| c.command = Some("FROB")),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "no container ID",
            with(&|c| c.container = None),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "no namespace",
            with(&|c| c.netns = None),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "a namespace that does not exist",
            with(&|c| c.netns = Some("/run/netns/kxdp-no-such-ns".into())),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "a namespace that is a plain file",
            with(&|c| c.netns = Some(regular_file.clone())),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "no interface name",
            with(&|c| c.ifname = None),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "a bad interface name",
            with(&|c| c.ifname = Some("eth/0")),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "bad CNI_ARGS",
            with(&|c| c.args = Some("K8S_POD_NAME")),
            good.clone(),
            4,
            "CNI_ARGS",
        ),
        (
            "not JSON",
            with(&|_| {}),
            "{\"cniVersion\":".into(),
            6,
            "stdin",
        ),
        (
            "no cniVersion",
            with(&|_| {}),
            no_version.to_string(),
            1,
            "cniVersion",
        ),
        (
            "an old cniVersion",
            with(&|_| {}),
            config_with(json!({"cniVersion": "0.3.1"})),
            1,
            "cniVersion",
        ),
        (
            "a future cniVersion",
            with(&|_| {}),
            config_with(json!({"cniVersion": "2.0.0"})),
            1,
            "cniVersion",
        ),
        ("no name", with(&|_| {}), no_name.to_string(), 7, "name"),
        (
            "a bad mtu",
            with(&|_| {}),
            config_with(json!({"mtu": "big"})),
            7,
            "mtu",
        ),
        (
            "an mtu too small",
            with(&|_| {}),
            config_with(json!({"mtu": 100})),
            7,
            "mtu",
        ),
        (
            "a bad dns",
            with(&|_| {}),
            config_with(json!({"dns": {"nameservers": ["x"]}})),
            7,
            "dns.nameservers",
        ),
        (
            "a bad agentAddress",
            with(&|_| {}),
            config_with(json!({"agentAddress": "x"})),
            7,
            "agentAddress",
        ),
        (
            "an ipam section",
            with(&|_| {}),
            config_with(json!({"ipam": {"type": "host-local"}})),
            2,
            "ipam",
        ),
        (
            "no subnet file yet",
            with(&|_| {}),
            config_with(json!({"subnetFile": bed.dir.join("nothing.env")})),
            11,
            "subnetFile",
        ),
        (
            "a subnet file that cannot be read",
            with(&|_| {}),
            config_with(json!({"subnetFile": bed.dir})),
            5,
            "subnetFile",
        ),
        (
            "a subnet file that says nothing",
            with(&|_| {}),
            config_with(json!({"subnetFile": garbage})),
            7,
            "subnetFile",
        ),
        (
            "CHECK without prevResult",
            with(&|c| c.command = Some("CHECK")),
            good.clone(),
            7,
            "prevResult",
        ),
        (
            "GC without valid attachments",
            with(&|c| c.command = Some("GC")),
            good.clone(),
            7,
            "cni.dev/valid-attachments",
        ),
        (
            "GC under 1.0.0",
            with(&|c| c.command = Some("GC")),
            config_with(json!({"cniVersion": "1.0.0", "cni.dev/valid-attachments": []})),
            1,
            "cniVersion",
        ),
    ];
    std::fs::create_dir_all(bed.dir.join("ipam")).unwrap();
    for (what, call, stdin, code, field) in &cases {
        let out = bed.run(call, stdin);
        assert!(!out.ok, "{what}: {out:?}");
        assert_eq!(out.code(), *code, "{what}: {out:?}");
        assert!(out.details().starts_with(field), "{what}: {out:?}");
        assert!(
            !out.stdout["msg"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
        assert!(
            out.stderr.contains("kxdp-cni:"),
            "{what}: the error is logged too"
        );
        assert!(
            bed.node_veths().is_empty(),
            "{what}: {:?}",
            bed.node_veths()
        );
        assert_eq!(links(&pod), ["lo"], "{what}");
        assert!(bed.allocations().is_empty(), "{what}");
    }

    // An interface of that name already in the pod: refused before anything is made.
    let p = pod.trim_start_matches("/run/netns/");
    ip(
        Some(p),
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other",
        ],
    )
    .unwrap();
    let out = bed.run(&add, &good);
    assert_eq!(out.code(), 101, "{out:?}");
    assert!(out.details().starts_with("CNI_IFNAME: eth0"), "{out:?}");
    assert!(bed.node_veths().is_empty() && bed.allocations().is_empty());
    ip(Some(p), &["link", "del", "eth0"]).unwrap();

    // The kernel refusing a step half-way (the pod already has a default route): the veth
    // and the address are rolled back.
    ip(
        Some(p),
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
    )
    .unwrap();
    ip(Some(p), &["link", "set", "d0", "up"]).unwrap();
    ip(Some(p), &["link", "set", "d1", "up"]).unwrap();
    ip(Some(p), &["addr", "add", "192.0.2.1/24", "dev", "d0"]).unwrap();
    ip(Some(p), &["route", "add", "default", "via", "192.0.2.254"]).unwrap();
    let out = bed.run(&add, &good);
    assert_eq!(out.code(), 100, "{out:?}");
    assert!(
        out.details().contains("default route via 10.244.1.1"),
        "{out:?}"
    );
    assert!(bed.node_veths().is_empty(), "{:?}", bed.node_veths());
    assert!(
        !links(&pod).contains(&"eth0".to_owned()),
        "{:?}",
        links(&pod)
    );
    assert!(bed.allocations().is_empty());
}

#[test]
fn an_exhausted_range_answers_try_again_and_the_node_stays_ready() {
    if skip_unless_privileged("an_exhausted_range_answers_try_again_and_the_node_stays_ready") {
        return;
    }
    // A /30: .0 network, .1 gateway, .3 broadcast: one pod.
    let mut bed = Bed::new("10.244.9.0/30", "10.244.9.1");
    let config = bed.config(json!({}));
    let agent = FakeAgent::start(&bed.dir.join("agent.sock"), "200 OK", "ready");
    let status = |bed: &Bed| {
        bed.run(
            &Call {
                command: Some("STATUS"),
                ..Call::default()
            },
            &config.to_string(),
        )
    };
    assert!(status(&bed).ok, "{:?}", status(&bed));
    let (p0, p1) = (bed.pod(), bed.pod());
    let first = bed.attach("ADD", "first", &p0, &config);
    assert_eq!(
        first.stdout["ips"][0]["address"], "10.244.9.2/30",
        "{first:?}"
    );
    let second = bed.attach("ADD", "second", &p1, &config);
    assert_eq!(second.code(), 11, "{second:?}");
    assert!(
        second
            .details()
            .contains("every address of 10.244.9.0/30 is taken"),
        "{second:?}"
    );
    assert_eq!(links(&p1), ["lo"]);
    assert_eq!(bed.node_veths().len(), 1);
    assert_eq!(bed.allocations().len(), 1);
    // Full is not unavailable: a failed STATUS would take the node NotReady.
    let s = status(&bed);
    assert!(s.ok, "{s:?}");
    assert!(bed.attach("DEL", "first", &p0, &config).ok);
    assert!(bed.attach("ADD", "second", &p1, &config).ok);
    assert!(bed.attach("DEL", "second", &p1, &config).ok);
    drop(agent);
}

#[test]
fn status_follows_the_agent_and_version_and_old_configs_are_answered() {
    if skip_unless_privileged("status_follows_the_agent_and_version_and_old_configs_are_answered") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let config = bed.config(json!({}));
    let run = |bed: &Bed, command: &'static str, stdin: &str| {
        bed.run(
            &Call {
                command: Some(command),
                ..Call::default()
            },
            stdin,
        )
    };
    let v = run(&bed, "VERSION", r#"{"cniVersion":"1.0.0"}"#);
    assert!(v.ok);
    assert_eq!(
        v.stdout,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );

    // No agent: not available, naming the address.
    let s = run(&bed, "STATUS", &config.to_string());
    assert_eq!(s.code(), 50, "{s:?}");
    assert!(
        s.details().starts_with("agentAddress") && s.details().contains("does not answer"),
        "{s:?}"
    );
    // An agent that is not ready: its reason.
    let socket = bed.dir.join("agent.sock");
    let agent = FakeAgent::start(
        &socket,
        "503 Service Unavailable",
        "not ready: node n: no Node object yet",
    );
    let s = run(&bed, "STATUS", &config.to_string());
    assert_eq!(s.code(), 50, "{s:?}");
    assert!(s.details().contains("no Node object yet"), "{s:?}");
    drop(agent);
    // Ready, but no subnet file yet: still not available.
    let agent = FakeAgent::start(&socket, "200 OK", "ready");
    std::fs::rename(bed.dir.join("subnet.env"), bed.dir.join("later.env")).unwrap();
    let s = run(&bed, "STATUS", &config.to_string());
    assert_eq!(s.code(), 50, "{s:?}");
    assert!(s.details().contains("subnetFile"), "{s:?}");
    std::fs::rename(bed.dir.join("later.env"), bed.dir.join("subnet.env")).unwrap();
    let s = run(&bed, "STATUS", &config.to_string());
    assert!(s.ok, "{s:?}");
    drop(agent);

    // A 0.4.0 configuration gets a 0.4.0 result, which CHECK and DEL take back.
    let old = bed.config(json!({"cniVersion": "0.4.0"}));
    let pod = bed.pod();
    let add = bed.attach("ADD", "old", &pod, &old);
    assert!(add.ok, "{add:?}");
    assert_eq!(add.stdout["cniVersion"], "0.4.0");
    assert_eq!(add.stdout["ips"][0]["version"], "4");
    assert!(add.stdout["interfaces"][1].get("mtu").is_none());
    let mut prev = old.clone();
    prev["prevResult"] = add.stdout.clone();
    assert!(bed.attach("CHECK", "old", &pod, &prev).ok);
    assert!(bed.attach("DEL", "old", &pod, &prev).ok);
    assert!(bed.allocations().is_empty());
}

/// A stand-in for the agent's `/readyz` on a Unix socket: answers every connection with
/// `status` and `body` until dropped.
struct FakeAgent {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgent {
    fn start(path: &Path, status: &'static str, body: &'static str) -> FakeAgent {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = write!(s, "HTTP/1.1 {status}\r\nconnection: close\r\n\r\n{body}\n");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        FakeAgent {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `command` for container `container` of pod `default/<pod>` in namespace `netns`.
fn call_for_pod(
    bed: &Bed,
    command: &str,
    container: &str,
    pod: &str,
    netns: &str,
    config: &Value,
) -> Out {
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
    bed.run(
        &Call {
            command: Some(command),
            container: Some(container),
            netns: Some(netns.to_owned()),
            ifname: Some("eth0"),
            args: Some(&args),
        },
        &config.to_string(),
    )
}

#[test]
fn a_new_sandbox_takes_the_pods_node_end_and_the_old_ones_del_leaves_it() {
    if skip_unless_privileged(
        "a_new_sandbox_takes_the_pods_node_end_and_the_old_ones_del_leaves_it",
    ) {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let (old, new) = (bed.pod(), bed.pod());
    let config = bed.config(json!({}));
    let host = pod_interface_name("default", "web");
    let first = call_for_pod(&bed, "ADD", "c1", "web", &old, &config);
    assert!(first.ok, "{first:?}");
    // The runtime recreated the pod's sandbox before the old one's DEL came.
    let second = call_for_pod(&bed, "ADD", "c2", "web", &new, &config);
    assert!(second.ok, "{second:?}");
    assert_eq!(bed.node_veths(), [host.clone()].into());
    let del = call_for_pod(&bed, "DEL", "c1", "web", &old, &config);
    assert!(del.ok, "{del:?}");
    assert_eq!(
        bed.node_veths(),
        [host].into(),
        "the new sandbox keeps its node end"
    );
    assert_eq!(
        bed.allocations().len(),
        1,
        "the old sandbox's address is freed"
    );
    let mut with_prev = config.clone();
    with_prev["prevResult"] = second.stdout.clone();
    let check = call_for_pod(&bed, "CHECK", "c2", "web", &new, &with_prev);
    assert!(check.ok, "{check:?}");
}

#[test]
fn a_del_after_a_refused_add_leaves_another_plugins_interface() {
    if skip_unless_privileged("a_del_after_a_refused_add_leaves_another_plugins_interface") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let pod = bed.pod();
    let ns = pod.trim_start_matches("/run/netns/").to_owned();
    ip(
        Some(&ns),
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    )
    .unwrap();
    let config = bed.config(json!({}));
    let add = bed.attach("ADD", "web-0", &pod, &config);
    assert_eq!(add.code(), 101, "{add:?}");
    // The runtime cleans up a failed ADD with a DEL; eth0 is not this plugin's to delete.
    let del = bed.attach("DEL", "web-0", &pod, &config);
    assert!(del.ok, "{del:?}");
    assert!(
        links(&pod).contains(&"eth0".to_owned()),
        "{:?}",
        links(&pod)
    );
}

#[test]
fn an_add_after_other_plugins_extends_their_result() {
    if skip_unless_privileged("an_add_after_other_plugins_extends_their_result") {
        return;
    }
    let mut bed = Bed::new("10.244.1.0/24", "10.244.1.1");
    let pod = bed.pod();
    let mut config = bed.config(json!({}));
    config["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "sandbox": pod}],
        "ips": [{"address": "192.0.2.5/24", "interface": 0}],
    });
    let add = bed.attach("ADD", "web-0", &pod, &config);
    assert!(add.ok, "{add:?}");
    let r = &add.stdout;
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "192.0.2.5/24");
    assert_eq!(r["ips"][1]["address"], "10.244.1.2/24");
    assert_eq!(r["ips"][1]["interface"], 2);
}
