//! The deployment (`deploy/kxdp.yaml`, `deploy/Dockerfile`) checked without a cluster, which
//! these machines do not have:
//!
//! - every manifest document parses into its k8s-openapi type and serializes back to the same
//!   JSON, so no field is misspelt or misplaced (k8s-openapi ignores unknown fields: a lost
//!   field shows only in the round trip);
//! - the ClusterRole grants exactly [`API_ACCESS`], and the Kubernetes source, run against the
//!   recording API server, makes no request outside it and uses all of it; so a watcher added
//!   to the source without its RBAC line fails here, and so does a role left broader than the
//!   code;
//! - the DaemonSet's command line parses with the agent's own flags and, with the ConfigMap's
//!   `agent.yaml`, resolves with the agent's own settings code; the conflist parses with the
//!   plugin's own configuration parser and points at the agent's subnet file and listener,
//!   which the probes ask too;
//! - the uninstall DaemonSet (`deploy/uninstall.yaml`) runs `kxdp uninstall` with flags its
//!   own parser takes, pointing at the agent's debug API and subnet file and at the node's
//!   folders the install writes to, with the one capability it needs;
//! - the Dockerfile builds both binaries with `--locked` and installs the plugin where the
//!   init container copies it from. (It is not built here: no container registry is
//!   reachable from these machines.)

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kxdp_agent::admin::AdminAddr;
use kxdp_agent::settings::AgentArgs;
use kxdp_control::kube_source::{KubeSource, API_ACCESS};
use kxdp_control::model::Model;
use kxdp_dataplane::wire::EthernetAddress;
use kxdp_tests::apiserver::{FakeApiServer, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const MANIFEST: &str = include_str!("../../deploy/kxdp.yaml");
const UNINSTALL: &str = include_str!("../../deploy/uninstall.yaml");
const DOCKERFILE: &str = include_str!("../../deploy/Dockerfile");
const NAMESPACE: &str = "kube-system";
const BOUND: Duration = Duration::from_secs(15);

/// The manifest's documents, as JSON.
fn documents() -> Vec<Value> {
    documents_of("deploy/kxdp.yaml", MANIFEST)
}

/// The documents of manifest `text` (named `file`), as JSON.
fn documents_of(file: &str, text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{file} document {i}: {e}"))
        })
        .collect()
}

/// Where `a` and `b` first differ, as a JSON path, if they do.
fn difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => difference(&format!("{path}.{k}"), p, q),
                (p, q) => Some(format!("{path}.{k}: {p:?} in the manifest, {q:?} after")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(&format!("{path}[{i}]"), p, q)),
        _ => (a != b).then(|| format!("{path}: {a} in the manifest, {b} after")),
    }
}

/// `doc` as a `T`, after checking that it serializes back to the same JSON.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
    let t: T = serde_path_to_error::deserialize(doc.clone())
        .unwrap_or_else(|e| panic!("{what}: {}: {}", e.path(), e.inner()));
    let back = serde_json::to_value(&t).expect("serializes");
    if let Some(d) = difference("", doc, &back) {
        panic!("{what} does not survive a round trip through k8s-openapi (a field it does not know?): {d}");
    }
    t
}

/// Every manifest, typed; each kind exactly once.
struct Deployment {
    account: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    config: ConfigMap,
    daemonset: DaemonSet,
}

fn deployment() -> Deployment {
    let docs = documents();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?"))
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ],
        "deploy/kxdp.yaml holds each of these once"
    );
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .expect("checked above")
    };
    Deployment {
        account: typed(of("ServiceAccount")),
        role: typed(of("ClusterRole")),
        binding: typed(of("ClusterRoleBinding")),
        config: typed(of("ConfigMap")),
        daemonset: typed(of("DaemonSet")),
    }
}

#[test]
fn every_manifest_round_trips_through_its_kubernetes_type() {
    let d = deployment();
    for (what, ns) in [
        ("ServiceAccount", &d.account.metadata.namespace),
        ("ConfigMap", &d.config.metadata.namespace),
        ("DaemonSet", &d.daemonset.metadata.namespace),
    ] {
        assert_eq!(ns.as_deref(), Some(NAMESPACE), "{what}'s namespace");
    }
}

/// (group, resource, verb) triples.
type Grants = BTreeSet<(String, String, String)>;

fn required() -> Grants {
    API_ACCESS
        .iter()
        .flat_map(|a| {
            a.verbs
                .iter()
                .map(|v| (a.group.to_owned(), a.resource.to_owned(), (*v).to_owned()))
        })
        .collect()
}

#[test]
fn the_cluster_role_grants_exactly_what_the_source_calls() {
    let d = deployment();
    let mut granted = Grants::new();
    for (i, rule) in d.role.rules.iter().flatten().enumerate() {
        assert!(
            rule.non_resource_urls.is_none() && rule.resource_names.is_none(),
            "rules[{i}]: no URLs or names are needed"
        );
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    for x in [g, r, v] {
                        assert_ne!(x, "*", "rules[{i}]: no wildcards");
                    }
                    granted.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    assert_eq!(granted, required(), "ClusterRole kxdp against API_ACCESS");

    let role = d.role.metadata.name.as_deref();
    assert_eq!(d.binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(d.binding.role_ref.name.as_str()), role);
    let account = d.account.metadata.name.clone();
    let subjects = d.binding.subjects.expect("the binding has a subject");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.as_ref());
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    let pod = d.daemonset.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name, account, "the DaemonSet's account");
}

/// A request the API server saw, as RBAC names it.
fn rbac_of(request: &str) -> (String, String, String) {
    let (method, target) = request.split_once(' ').expect("METHOD target");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/..., then namespaces/NS/ optionally.
    let (group, mut rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("{request}: not a resource request"),
    };
    if let ["namespaces", _, inner @ ..] = rest {
        if !inner.is_empty() {
            rest = inner;
        }
    }
    let (resource, named) = match rest {
        [resource] => (*resource, false),
        [resource, _name] => (*resource, true),
        _ => panic!("{request}: an unexpected path"),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named, watch) {
        ("GET", _, true) => "watch",
        ("GET", false, false) => "list",
        ("GET", true, false) => "get",
        ("PATCH", true, _) => "patch",
        ("PUT", true, _) => "update",
        ("POST", false, _) => "create",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => panic!("{request}: an unexpected method"),
    };
    (group.into(), resource.into(), verb.into())
}

#[test]
fn the_requests_parser_names_verbs_as_rbac_does() {
    let t = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
    assert_eq!(
        rbac_of("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn&limit=500"),
        t("", "pods", "list")
    );
    assert_eq!(
        rbac_of("GET /apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=1"),
        t("discovery.k8s.io", "endpointslices", "watch")
    );
    assert_eq!(
        rbac_of("PATCH /api/v1/nodes/node-a?"),
        t("", "nodes", "patch")
    );
    assert_eq!(
        rbac_of("GET /api/v1/namespaces/default/services/web"),
        t("", "services", "get")
    );
    assert_eq!(
        rbac_of("GET /api/v1/namespaces/default"),
        t("", "namespaces", "get")
    );
}

/// What the agent does with the API (`kxdp agent` uses the source through exactly these two
/// entry points: `publish_node_annotations` and `watch`), recorded by the API server.
#[test]
fn the_source_calls_nothing_outside_api_access_and_all_of_it() {
    let server = FakeApiServer::start();
    server.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.10"}]}}));
    server.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "c"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.11"}}));
    server.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    server.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.11"], "conditions": {"ready": true}}]}),
    );
    let config = server.kube_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = kube::Client::try_from(config).expect("client");
        let source = KubeSource::new(client, "node-a");
        source
            .publish_node_annotations(
                1,
                EthernetAddress([0x02, 0x6b, 0x78, 0x76, 0, 1]),
                Ipv4Addr::new(198, 18, 0, 10),
            )
            .await
            .expect("the Node is patched");
        let mut model = Model::new();
        let mut watch = source.watch();
        let all = [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Nodes,
            Resource::Pods,
            Resource::Namespaces,
            Resource::NetworkPolicies,
        ];
        let deadline = tokio::time::Instant::now() + BOUND;
        // Drive the watchers until every one has listed and opened its watch.
        while !(watch.status().synced && all.iter().all(|r| server.open_watches(*r) > 0)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the source did not list and watch everything within {BOUND:?}: {:?}",
                server.requests()
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), watch.next(&mut model)).await;
        }
    });
    let requests = server.requests();
    let seen: Grants = requests.iter().map(|r| rbac_of(r)).collect();
    let required = required();
    let outside: Vec<&String> = requests
        .iter()
        .filter(|r| !required.contains(&rbac_of(r)))
        .collect();
    assert!(
        outside.is_empty(),
        "requests API_ACCESS (and so the ClusterRole) does not cover: {outside:?}"
    );
    let unused: Vec<_> = required.difference(&seen).collect();
    assert!(
        unused.is_empty(),
        "API_ACCESS lists calls the source never made: {unused:?}"
    );
}

fn agent_container(d: &Deployment) -> Container {
    let pod = d.daemonset.spec.clone().unwrap().template.spec.unwrap();
    assert!(
        pod.host_network.unwrap_or(false),
        "the agent runs on the host network"
    );
    pod.containers
        .into_iter()
        .find(|c| c.name == "agent")
        .expect("a container named agent")
}

/// The ConfigMap's key `key`.
fn config_value<'a>(d: &'a Deployment, key: &str) -> &'a str {
    d.config
        .data
        .as_ref()
        .and_then(|m| m.get(key))
        .unwrap_or_else(|| panic!("ConfigMap kxdp-config has no {key}"))
}

#[test]
fn the_agent_takes_its_command_line_and_config_file() {
    let d = deployment();
    let agent = agent_container(&d);
    let command = agent.command.clone().unwrap_or_default();
    assert_eq!(
        command,
        ["/usr/local/bin/kxdp", "agent"],
        "the agent's command"
    );
    assert!(DOCKERFILE.contains("COPY --from=build /out/kxdp /usr/local/bin/kxdp"));
    // The kubelet expands $(NODE_NAME) from the downward API.
    let node_env = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME in the agent's environment");
    let field = node_env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref());
    assert_eq!(field.map(|f| f.field_path.as_str()), Some("spec.nodeName"));

    // The config file as the pod sees it: the ConfigMap mounted at /etc/kxdp.
    let mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "config")
        .expect("the config volume is mounted");
    assert_eq!(mount.mount_path, "/etc/kxdp");
    let dir = kxdp_testkit::ScratchDir::new("deploy");
    let file = dir.join("agent.yaml");
    std::fs::write(&file, config_value(&d, "agent.yaml")).unwrap();

    let mut argv = vec!["agent".to_owned()];
    for a in agent.args.iter().flatten() {
        argv.push(match a.as_str() {
            "$(NODE_NAME)" => "node-a".to_owned(),
            "/etc/kxdp/agent.yaml" => file.display().to_string(),
            other => {
                assert!(!other.contains("$("), "{other}: an unknown variable");
                other.to_owned()
            }
        });
    }
    let cmd = AgentArgs::augment_args(clap::Command::new("agent"));
    let matches = cmd
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("the DaemonSet's args {argv:?}: {e}"));
    let args = AgentArgs::from_arg_matches(&matches).expect("the agent's flags");
    assert_eq!(
        args.config.as_deref(),
        Some(file.as_path()),
        "--config is given"
    );
    let resolved = args
        .resolve()
        .unwrap_or_else(|e| panic!("the agent refuses its settings: {e}"));
    assert_eq!(resolved.node, "node-a");

    // The agent makes the host pair itself, under a name it takes.
    let host = resolved.host_interface.as_deref();
    assert!(
        host.is_some_and(|h| h != kxdp_agent::host_interface::KERNEL_END),
        "agent.yaml names kxdp's end of the host pair: {host:?}"
    );
    let pod = d.daemonset.spec.clone().unwrap().template.spec.unwrap();
    let inits: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        ["install-cni"],
        "no init container makes the host pair"
    );
    assert_eq!(
        resolved.source,
        kxdp_agent::settings::SourceConfig::Kubernetes(None),
        "the in-cluster service account"
    );

    // The probes ask the metrics listener, on the node's loopback.
    let AdminAddr::Tcp(metrics) = resolved.metrics else {
        panic!("metrics-address must be TCP for the kubelet's probes");
    };
    for (what, probe, path) in [
        ("readiness", &agent.readiness_probe, "/readyz"),
        ("liveness", &agent.liveness_probe, "/livez"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .unwrap_or_else(|| panic!("a {what} probe over HTTP"));
        assert_eq!(get.path.as_deref(), Some(path), "{what} probe");
        assert_eq!(get.host.as_deref(), Some(metrics.ip().to_string().as_str()));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(metrics.port().into())
        );
    }

    // The conflist, as libcni hands each plugin its configuration (name and cniVersion set).
    let list: Value =
        serde_json::from_str(config_value(&d, "10-kxdp.conflist")).expect("the conflist is JSON");
    let plugins = list["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 1);
    let mut plugin = plugins[0].clone();
    assert_eq!(
        plugin["type"], "kxdp-cni",
        "the binary the init container installs"
    );
    let known = [
        "type",
        "subnetFile",
        "dataDir",
        "agentAddress",
        "mtu",
        "dns",
    ];
    for key in plugin.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "conflist: {key} is not kxdp-cni's"
        );
    }
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    let cni = kxdp_cni::spec::Config::parse(&plugin.to_string())
        .unwrap_or_else(|e| panic!("kxdp-cni refuses the conflist: {e:?}"));
    assert_eq!(cni.version, "1.1.0");
    assert_eq!(
        cni.subnet_file, resolved.subnet_file,
        "the agent's subnet file"
    );
    assert_eq!(
        cni.agent_address,
        metrics.to_string(),
        "the agent's metrics listener"
    );
    // The subnet file reaches the node (where the plugin runs) through a hostPath.
    let run = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| resolved.subnet_file.starts_with(&m.mount_path))
        .expect("the subnet file's folder is mounted");
    let pod = d.daemonset.spec.clone().unwrap().template.spec.unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == run.name)
        .unwrap();
    assert_eq!(
        volume.host_path.as_ref().map(|h| h.path.as_str()),
        Some(run.mount_path.as_str()),
        "the subnet file's folder is the node's own"
    );
}

#[test]
fn the_agent_gets_the_capabilities_preflight_checks_and_no_more() {
    let d = deployment();
    let agent = agent_container(&d);
    let sc = agent.security_context.expect("a security context");
    assert_ne!(
        sc.privileged,
        Some(true),
        "capabilities rather than privileged"
    );
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    let added: BTreeSet<String> = caps.add.unwrap_or_default().into_iter().collect();
    // Preflight asks for CAP_IPC_LOCK where RLIMIT_MEMLOCK is below the UMEMs' size, which a
    // container runtime's default limit may be.
    let needed: BTreeSet<String> = kxdp_agent::preflight::NEEDED
        .iter()
        .map(|c| c.name.trim_start_matches("cap_").to_uppercase())
        .chain(["IPC_LOCK".to_owned()])
        .collect();
    assert_eq!(added, needed);
}

#[test]
fn the_dockerfile_builds_both_binaries_locked_into_a_slim_image() {
    let stages: Vec<&str> = DOCKERFILE
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(stages[0].contains("bookworm") && stages[0].starts_with("FROM rust:"));
    assert!(stages[0].ends_with(" AS build"));
    assert_eq!(stages[1], "FROM debian:bookworm-slim");
    for build in ["-p kxdp-agent --bin kxdp", "-p kxdp-cni --bin kxdp-cni"] {
        let line = DOCKERFILE
            .lines()
            .find(|l| l.contains(build))
            .unwrap_or_else(|| panic!("the Dockerfile builds {build}"));
        assert!(line.contains("--release --locked"), "{line}");
    }
    // The init container installs the plugin from where the image puts it.
    let d = deployment();
    let pod = d.daemonset.spec.unwrap().template.spec.unwrap();
    let install = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .expect("an install-cni init container");
    let script = install.command.clone().unwrap().join(" ");
    assert!(script.contains("/usr/local/lib/kxdp/kxdp-cni"));
    assert!(DOCKERFILE.contains("/usr/local/lib/kxdp/kxdp-cni"));
    assert!(script.contains("/etc/kxdp/10-kxdp.conflist"));
}

#[test]
fn the_uninstall_daemonset_runs_kxdp_uninstall_on_what_the_install_put_there() {
    use kxdp_agent::uninstall::{UninstallArgs, CNI_CONFLIST, CNI_NETWORK, CNI_PLUGIN};
    let docs = documents_of("deploy/uninstall.yaml", UNINSTALL);
    assert_eq!(docs.len(), 1, "deploy/uninstall.yaml holds one DaemonSet");
    let ds: DaemonSet = typed(&docs[0]);
    assert_eq!(ds.metadata.namespace.as_deref(), Some(NAMESPACE));
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert!(
        pod.host_network.unwrap_or(false),
        "the host pair is the node's"
    );
    let init = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(init.len(), 1);
    let un = &init[0];
    assert_eq!(
        un.command.clone().unwrap_or_default(),
        ["/usr/local/bin/kxdp", "uninstall"]
    );
    let argv: Vec<String> = std::iter::once("uninstall".to_owned())
        .chain(un.args.clone().unwrap_or_default())
        .collect();
    let matches = UninstallArgs::augment_args(clap::Command::new("uninstall"))
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("the uninstall args {argv:?}: {e}"));
    let args = UninstallArgs::from_arg_matches(&matches).expect("kxdp uninstall's flags");
    assert!(!args.force, "it waits for the agent and the pods");

    // The agent's debug API and subnet file, as the install runs it, through the same folder.
    let d = deployment();
    // A file of its own: the scratch folder is the other test's, removed when it ends.
    let file = std::env::temp_dir().join(format!("kxdp-uninstall-{}.yaml", std::process::id()));
    std::fs::write(&file, config_value(&d, "agent.yaml")).unwrap();
    let agent = kxdp_agent::settings::AgentArgs {
        config: Some(file.clone()),
        node: Some("node-a".into()),
        ..Default::default()
    }
    .resolve();
    let _ = std::fs::remove_file(&file);
    let agent = agent.expect("the agent's settings");
    assert_eq!(args.admin, agent.admin);
    assert_eq!(args.subnet_file, agent.subnet_file);
    // Each folder is the node's own, the one the install writes kxdp's files to.
    let host_path = |inside: &std::path::Path| {
        let mount = un
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| inside.starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("{} is not mounted", inside.display()));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        let node = volume.host_path.as_ref().expect("a hostPath").path.clone();
        std::path::Path::new(&node).join(inside.strip_prefix(&mount.mount_path).unwrap())
    };
    assert_eq!(host_path(&args.subnet_file), agent.subnet_file);
    let install = d.daemonset.spec.clone().unwrap().template.spec.unwrap();
    let script = install.init_containers.unwrap()[0]
        .command
        .clone()
        .unwrap()
        .join(" ");
    for (dir, name, node) in [
        (&args.cni_conf_dir, CNI_CONFLIST, "/etc/cni/net.d"),
        (&args.cni_bin_dir, CNI_PLUGIN, "/opt/cni/bin"),
    ] {
        let dir = dir
            .as_ref()
            .unwrap_or_else(|| panic!("{name}'s folder is given"));
        assert_eq!(host_path(dir), std::path::Path::new(node));
        assert!(
            script.contains(&format!("/host{node}/{name}")),
            "the install writes {node}/{name}"
        );
    }
    let list: Value = serde_json::from_str(config_value(&d, "10-kxdp.conflist")).unwrap();
    assert_eq!(
        list["name"], CNI_NETWORK,
        "the network whose addresses it removes"
    );
    let data = args
        .cni_data_dir
        .as_ref()
        .expect("the address store's folder");
    assert_eq!(
        host_path(data),
        std::path::Path::new(list["plugins"][0]["dataDir"].as_str().unwrap())
    );
    // Deleting links takes NET_ADMIN, and nothing else.
    let caps = un
        .security_context
        .clone()
        .and_then(|s| s.capabilities)
        .expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_owned()]));
}
