//! The control side at scale: a cluster of `--services` services with `--endpoints` endpoints
//! each, spread over `--nodes` nodes, from the Kubernetes JSON a list returns to the first
//! published snapshot; then `--changes` single-EndpointSlice changes, each timed from the
//! changed object's JSON to its snapshot being live (published by the atomic swap the workers
//! load from), with the latency of a worker's snapshot load measured meanwhile on another
//! thread.
//!
//! Both phases run the real code: the objects are decoded from JSON into k8s-openapi types (as
//! kube decodes a list or watch event), converted into the model, compiled (incrementally for
//! a change) and published. What is not included is the HTTP transfer itself, so the same two
//! measurements are then repeated end to end: the objects served by the loopback API server of
//! the tests (`kxdp_tests::apiserver`), watched by kxdp's Kubernetes source through the real
//! kube client (paged lists of 500, chunked watch streams), from the start of the watchers to
//! the first snapshot, and from each change reaching the API server to its snapshot.
//!
//! Then NetworkPolicy at scale ([`policies_at_scale`]): `--pods` pods with labels and named
//! ports, 100 namespaces and `--policies` policies to this node's first compile, every pod's
//! compile, and `--changes` single-policy changes to the snapshot published.
//!
//! `control_scale [--services N] [--endpoints N] [--nodes N] [--changes N] [--pods N]
//! [--policies N]`

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kxdp_control::compile::{Compiler, NodeSettings};
use kxdp_control::model::{Kind, Model, Object};
use kxdp_control::policy::compile_policies;
use kxdp_testkit::{netpol, Topology};
use netpol::NAMESPACES;
use serde_json::{json, Value};

/// The command line.
#[derive(Clone, Copy, Debug)]
struct Args {
    services: u32,
    endpoints: u32,
    nodes: u32,
    changes: u32,
    pods: u32,
    policies: u32,
}

const USAGE: &str =
    "usage: control_scale [--services N] [--endpoints N] [--nodes N] [--changes N] \
                     [--pods N] [--policies N]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        services: 10_000,
        endpoints: 10,
        nodes: 100,
        changes: 1000,
        pods: 10_000,
        policies: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let n: u32 = value
            .parse()
            .map_err(|_| format!("{flag} {value}: expected a count\n{USAGE}"))?;
        match flag.as_str() {
            "--services" if (1..=60_000).contains(&n) => a.services = n,
            "--endpoints" if (1..=1000).contains(&n) => a.endpoints = n,
            "--nodes" if (2..=250).contains(&n) => a.nodes = n,
            "--changes" if n > 0 => a.changes = n,
            "--pods" if (1..=60_000).contains(&n) => a.pods = n,
            "--policies" if (1..=60_000).contains(&n) => a.policies = n,
            _ => return Err(format!("{flag} {value}: out of range or unknown\n{USAGE}")),
        }
    }
    Ok(a)
}

/// The node a cluster-wide endpoint index lands on, and its address there.
fn endpoint(k: u32, nodes: u32) -> (u32, Ipv4Addr) {
    let node = k % nodes + 1;
    let host = (k / nodes) % 250 + 2;
    (node, Ipv4Addr::new(10, 244, node as u8, host as u8))
}

fn node_json(i: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node-{i}"), "annotations": {
            "flannel.alpha.coreos.com/backend-data":
                format!("{{\"VNI\":1,\"VtepMAC\":\"02:6b:78:76:00:{:02x}\"}}", i),
            "flannel.alpha.coreos.com/public-ip": format!("198.18.{}.{}", i / 250, i % 250 + 1),
        }},
        "spec": {"podCIDR": format!("10.244.{i}.0/24")},
        "status": {"addresses": [{"type": "InternalIP",
                                  "address": format!("198.18.{}.{}", i / 250, i % 250 + 1)}]},
    })
}

fn service_json(i: u32) -> Value {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench",
                     "resourceVersion": "1", "uid": format!("svc-uid-{i}")},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                 "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    })
}

fn slice_json(i: u32, a: &Args, version: u32) -> Value {
    let endpoints: Vec<Value> = (0..a.endpoints)
        .map(|j| {
            let (node, ip) = endpoint(i * a.endpoints + j, a.nodes);
            // A change flips one endpoint's readiness back and forth.
            let ready = !(j == 0 && version % 2 == 1);
            json!({"addresses": [ip.to_string()], "nodeName": format!("node-{node}"),
                   "conditions": {"ready": ready, "serving": ready, "terminating": false},
                   "targetRef": {"kind": "Pod", "namespace": "bench",
                                 "name": format!("svc-{i}-{j}")}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "bench",
                     "resourceVersion": format!("{}", version + 2),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                                "endpointslice.kubernetes.io/managed-by":
                                    "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": endpoints,
    })
}

fn pod_json(k: u32, a: &Args) -> Value {
    let (node, ip) = endpoint(k, a.nodes);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{k}"), "namespace": "bench"},
        "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "c", "image": "c"}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// Pod `k` of the NetworkPolicy run, placed as the service endpoints are ([`endpoint`]).
fn policy_pod_json(k: u32, nodes: u32) -> Value {
    let (node, ip) = endpoint(k, nodes);
    netpol::pod(k, node, ip, 8080)
}

/// A list body's items, decoded straight from the text into k8s-openapi types, as kube does.
#[derive(serde::Deserialize)]
struct List<T> {
    items: Vec<T>,
}

fn decode_list(kind: Kind, body: &str) -> Result<Vec<Object>, String> {
    fn objects<T: serde::de::DeserializeOwned>(
        body: &str,
        wrap: fn(Box<T>) -> Object,
    ) -> Result<Vec<Object>, String> {
        let list = serde_json::from_str::<List<T>>(body).map_err(|e| e.to_string())?;
        Ok(list.items.into_iter().map(|o| wrap(Box::new(o))).collect())
    }
    match kind {
        Kind::Service => objects(body, Object::Service),
        Kind::EndpointSlice => objects(body, Object::EndpointSlice),
        Kind::Node => objects(body, Object::Node),
        Kind::Pod => objects(body, Object::Pod),
        Kind::PeerPod => objects(body, Object::PeerPod),
        Kind::Namespace => objects(body, Object::Namespace),
        Kind::NetworkPolicy => objects(body, Object::NetworkPolicy),
    }
}

/// A list body of `kind` holding `items`.
fn list(kind: &str, items: Vec<Value>) -> String {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
           "items": items})
    .to_string()
}

/// A model holding the lists' objects, decoded as kube decodes them; every object must
/// convert.
fn load(bodies: &[(Kind, String)]) -> Result<Model, String> {
    let mut model = Model::new();
    for (kind, body) in bodies {
        let objects = decode_list(*kind, body)?;
        let rejected = model.replace_kind(*kind, &objects);
        if !rejected.is_empty() {
            return Err(format!(
                "objects rejected: {:?}",
                &rejected[..rejected.len().min(3)]
            ));
        }
    }
    Ok(model)
}

/// The list bodies: one JSON text per kind, as the API server sends them.
fn lists(a: &Args) -> Vec<(Kind, String)> {
    // The pods of this node (node-1) are the endpoints that landed there.
    let pods: Vec<Value> = (0..a.services * a.endpoints)
        .filter(|k| endpoint(*k, a.nodes).0 == 1)
        .take(250)
        .map(|k| pod_json(k, a))
        .collect();
    vec![
        (
            Kind::Node,
            list("NodeList", (1..=a.nodes).map(node_json).collect()),
        ),
        (Kind::Pod, list("PodList", pods)),
        (
            Kind::Service,
            list("ServiceList", (0..a.services).map(service_json).collect()),
        ),
        (
            Kind::EndpointSlice,
            list(
                "EndpointSliceList",
                (0..a.services).map(|i| slice_json(i, a, 0)).collect(),
            ),
        ),
    ]
}

fn settings() -> NodeSettings {
    let mut node = Topology::default().node;
    node.name = "node-1".into();
    node.node_ips = vec![];
    NodeSettings {
        node,
        neighbors: vec![],
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    println!(
        "# kxdp control side: {} services, {} endpoints, {} nodes, {} changes\n",
        a.services,
        a.services * a.endpoints,
        a.nodes,
        a.changes
    );
    let bodies = lists(&a);
    let list_bytes: usize = bodies.iter().map(|(_, b)| b.len()).sum();

    // Phase 1: the lists' JSON to the first published snapshot.
    let started = Instant::now();
    let mut model = load(&bodies)?;
    let decoded = started.elapsed();
    let mut compiler = Compiler::new(settings());
    let first = compiler.compile(&mut model).map_err(|e| e.to_string())?;
    if !first.problems.is_empty() {
        return Err(format!(
            "problems: {:?}",
            &first.problems[..first.problems.len().min(5)]
        ));
    }
    let live = Arc::new(ArcSwap::new(first.snapshot));
    let first_snapshot = started.elapsed();
    let snap = live.load();
    let tables = snap.services.memory_bytes();
    let ports = snap.services.ports().len();
    drop(snap);
    let rss_after = rss();

    // Phase 2: single-slice changes, with a "worker" loading the snapshot meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (live, stop) = (Arc::clone(&live), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
            let mut generation = 0;
            while !stop.load(Relaxed) {
                let t = Instant::now();
                let s = live.load();
                let took = t.elapsed().as_nanos() as u64;
                generation = generation.max(s.generation);
                drop(s);
                h.saturating_record(took);
            }
            (h, generation)
        })
    };
    let mut changes =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut compiled_per_change = 0;
    let mut versions = vec![0u32; a.services as usize];
    for n in 0..a.changes {
        let i = (n * 7919) % a.services;
        // Each change flips one endpoint of slice i from its last state.
        versions[i as usize] += 1;
        let body = slice_json(i, &a, versions[i as usize]).to_string();
        let t = Instant::now();
        let slice: EndpointSlice = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let object = Object::EndpointSlice(Box::new(slice));
        model.apply(&object).map_err(|e| e.to_string())?;
        let c = compiler.compile(&mut model).map_err(|e| e.to_string())?;
        if c.services_compiled != 1 {
            return Err(format!(
                "a change recompiled {} services",
                c.services_compiled
            ));
        }
        compiled_per_change = compiled_per_change.max(c.services_compiled);
        live.store(c.snapshot);
        changes.saturating_record(t.elapsed().as_nanos() as u64);
    }
    stop.store(true, Relaxed);
    let (loads, seen) = worker.join().map_err(|_| "the worker thread panicked")?;
    let q = |h: &Histogram<u64>, p: f64| Duration::from_nanos(h.value_at_quantile(p));

    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| list JSON ({:.1} MB) decoded into the model | {} ms | |",
        list_bytes as f64 / 1e6,
        ms(decoded)
    );
    println!(
        "| list JSON to first snapshot ({ports} service ports) | {} ms | 1000 ms |",
        ms(first_snapshot)
    );
    println!(
        "| one EndpointSlice change to live, p50 | {} ms | |",
        ms(q(&changes, 0.5))
    );
    println!(
        "| one EndpointSlice change to live, p99 | {} ms | 10 ms |",
        ms(q(&changes, 0.99))
    );
    println!(
        "| one EndpointSlice change to live, max | {} ms | |",
        ms(q(&changes, 1.0))
    );
    println!("| services recompiled per change (most) | {compiled_per_change} | 1 |");
    println!(
        "| worker snapshot load, p50 / p99.9 / max ({} loads, saw generation {seen}) | {} / {} / {} ns | no lock |",
        loads.len(),
        q(&loads, 0.5).as_nanos(),
        q(&loads, 0.999).as_nanos(),
        q(&loads, 1.0).as_nanos()
    );
    let (api_first, api_changes) = through_api(&a, &bodies)?;
    println!(
        "| through kube and the loopback API server: watchers started to first snapshot | {} ms | 1000 ms |",
        ms(api_first)
    );
    println!(
        "| through kube and the loopback API server: change applied to live, p50 / p99 / max | {} / {} / {} ms | 10 ms (p99) |",
        ms(q(&api_changes, 0.5)),
        ms(q(&api_changes, 0.99)),
        ms(q(&api_changes, 1.0))
    );
    println!(
        "| service tables (Maglev included) | {:.1} MB | |",
        tables as f64 / 1e6
    );
    println!(
        "| process resident memory after the first snapshot (model, compiler caches, tables, and the {:.1} MB of list JSON) | {:.1} MB | |",
        list_bytes as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    policies_at_scale(&a)
}

/// NetworkPolicy at scale: `--pods` pods over the nodes and 100 namespaces, `--policies`
/// policies, from the lists' JSON to this node's first compile; the compile of every pod (what
/// `trace` and tests do); then `--changes` single-policy changes, each from the changed
/// policy's JSON to the snapshot published with this node's policies recompiled.
fn policies_at_scale(a: &Args) -> Result<(), String> {
    if a.pods > a.nodes * 250 {
        return Err(format!(
            "--pods {}: at most 250 per node ({} nodes)",
            a.pods, a.nodes
        ));
    }
    println!(
        "\n# NetworkPolicy: {} pods in {NAMESPACES} namespaces over {} nodes, {} policies, {} changes\n",
        a.pods, a.nodes, a.policies, a.changes
    );
    let local: Vec<Value> = (0..a.pods)
        .filter(|k| endpoint(*k, a.nodes).0 == 1)
        .map(|k| policy_pod_json(k, a.nodes))
        .collect();
    let bodies = vec![
        (
            Kind::Node,
            list("NodeList", (1..=a.nodes).map(node_json).collect()),
        ),
        (
            Kind::Namespace,
            list(
                "NamespaceList",
                (0..NAMESPACES).map(netpol::namespace).collect(),
            ),
        ),
        (Kind::Pod, list("PodList", local)),
        (
            Kind::PeerPod,
            list(
                "PodList",
                (0..a.pods).map(|k| policy_pod_json(k, a.nodes)).collect(),
            ),
        ),
        (
            Kind::NetworkPolicy,
            list(
                "NetworkPolicyList",
                (0..a.policies).map(|i| netpol::policy(i, 0)).collect(),
            ),
        ),
    ];
    let list_bytes: usize = bodies.iter().map(|(_, b)| b.len()).sum();

    let started = Instant::now();
    let mut model = load(&bodies)?;
    let decoded = started.elapsed();
    let mut compiler = Compiler::new(settings());
    let first = compiler.compile(&mut model).map_err(|e| e.to_string())?;
    let first_compile = started.elapsed();
    let pods_here = first.policies.len();
    let selected = first.policies.values().filter(|p| p.is_selected()).count();
    if selected == 0 {
        return Err("no pod of this node is selected by a policy: nothing measured".into());
    }
    let live = ArcSwap::new(first.snapshot);

    let t = Instant::now();
    let all = compile_policies(&model, None);
    let all_took = t.elapsed();
    if all.len() != a.pods as usize {
        return Err(format!("{} of {} pods compiled", all.len(), a.pods));
    }

    let mut changes =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut versions = vec![0u32; a.policies as usize];
    for n in 0..a.changes {
        let i = (n * 7919) % a.policies;
        // Each change moves one port of policy i from its last state.
        versions[i as usize] += 1;
        let body = netpol::policy(i, versions[i as usize]).to_string();
        let t = Instant::now();
        let policy: NetworkPolicy = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        model
            .apply(&Object::NetworkPolicy(Box::new(policy)))
            .map_err(|e| e.to_string())?;
        let c = compiler.compile(&mut model).map_err(|e| e.to_string())?;
        if !c.policies_compiled || c.services_compiled != 0 {
            return Err(format!(
                "a policy change compiled policies: {}, services: {}",
                c.policies_compiled, c.services_compiled
            ));
        }
        live.store(c.snapshot);
        changes.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let q = |p: f64| Duration::from_nanos(changes.value_at_quantile(p));

    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| list JSON ({:.1} MB) decoded into the model | {} ms | |",
        list_bytes as f64 / 1e6,
        ms(decoded)
    );
    println!(
        "| list JSON to the first compile: this node's {pods_here} pods, {selected} selected by a policy | {} ms | |",
        ms(first_compile)
    );
    println!(
        "| every pod's policies ({} pods, {} policies; `trace`'s view) | {} ms | 1000 ms |",
        a.pods,
        a.policies,
        ms(all_took)
    );
    println!(
        "| one NetworkPolicy change to this node's policies compiled and the snapshot published, p50 / p99 / max | {} / {} / {} ms | 10 ms (p99) |",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(q(1.0))
    );
    Ok(())
}

/// `object` without the resourceVersion our generator writes: the API server assigns it.
fn fresh(mut object: Value) -> Value {
    if let Some(m) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("resourceVersion");
    }
    object
}

/// The end-to-end measurement through kube and the loopback API server: (time to the first
/// snapshot, per-change latencies).
fn through_api(a: &Args, bodies: &[(Kind, String)]) -> Result<(Duration, Histogram<u64>), String> {
    use kxdp_control::kube_source::KubeSource;
    use kxdp_tests::apiserver::FakeApiServer;
    let server = FakeApiServer::start();
    for (_, body) in bodies {
        let list: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
        let kind = list["kind"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches("List");
        let api_version = match kind {
            "EndpointSlice" => "discovery.k8s.io/v1",
            _ => "v1",
        };
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            item["kind"] = kind.into();
            item["apiVersion"] = api_version.into();
            server.apply(fresh(item));
        }
    }
    let config = server.kube_config();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, usize)>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live: Arc<arc_swap::ArcSwapOption<kxdp_dataplane::Snapshot>> = Arc::default();
    let started = Instant::now();
    let thread =
        {
            let live = Arc::clone(&live);
            std::thread::spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
                    let mut compiler = Compiler::new(settings());
                    let mut model = Model::new();
                    let run = KubeSource::new(client, "node-1").run(&mut model, |model, status| {
                        match compiler.compile(model) {
                            Ok(c) => {
                                live.store(Some(c.snapshot));
                                let _ = tx.send((Instant::now(), c.services_compiled));
                            }
                            Err(e) => eprintln!("control_scale: no snapshot: {e} ({status:?})"),
                        }
                    });
                    tokio::select! {
                        () = run => {}
                        _ = stopped => {}
                    }
                    Ok(())
                })
            })
        };
    let wait = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|e| format!("no snapshot ({what}): {e}"))
    };
    let (first_at, _) = wait("first")?;
    let first = first_at - started;
    let mut h =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut versions = vec![0u32; a.services as usize];
    for n in 0..a.changes {
        let i = (n * 7919) % a.services;
        versions[i as usize] += 1;
        let t = Instant::now();
        server.apply(fresh(slice_json(i, a, versions[i as usize])));
        let (at, compiled) = wait("a change").map_err(|e| {
            let r = server.requests();
            format!("{e}; last requests: {:?}", &r[r.len().saturating_sub(8)..])
        })?;
        if compiled != 1 {
            return Err(format!("a change recompiled {compiled} services"));
        }
        h.saturating_record((at - t).as_nanos() as u64);
    }
    let _ = stop.send(());
    thread
        .join()
        .map_err(|_| "the source thread panicked".to_owned())??;
    Ok((first, h))
}

fn main() -> ExitCode {
    kxdp_perf::exit("control_scale", run())
}
