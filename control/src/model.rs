//! The cluster as kxdp needs it: what each Service, EndpointSlice, Node, Pod, Namespace and
//! NetworkPolicy says that matters to the dataplane, keyed by object, with the services whose
//! tables a change touches.
//!
//! Kubernetes objects are converted once, on arrival ([`service_from`], [`slice_from`],
//! [`node_from`], [`pod_from`], and for NetworkPolicy and Namespace
//! [`crate::netpol::policy_from`] and [`crate::netpol::namespace_from`]); a malformed one gets an
//! [`ObjectError`] naming the object and the field, and the model keeps what it had.
//!
//! Pods come in two kinds: [`Kind::Pod`], the pods the node serves (the Kubernetes source
//! watches this node's only), and [`Kind::PeerPod`], every pod of the cluster as a
//! NetworkPolicy peer (its namespace, labels, address and named ports). A source that lists
//! every pod as [`Kind::Pod`] (manifests) needs no peer pods: [`Model::policy_pods`] joins both. Objects kube-proxy ignores (headless and
//! ExternalName services, services of another proxy, FQDN and IPv6 slices) convert to `None`.
//!
//! [`Model`] records which services a change touches (a service, or any slice of it), so the
//! compiler rebuilds only those; a change that converts to what the model already holds (a
//! status update, an annotation kxdp does not read) touches nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};

use crate::netpol::{namespace_from, policy_from, NamespaceInfo, PolicyInfo};
use crate::pod_declaration::PodDeclaration;

/// An object kxdp could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {problem}")]
pub struct ObjectError {
    /// `Kind namespace/name`.
    pub object: String,
    /// The field at fault, as a path (`spec.ports[0].port`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(object: &str, field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
    ObjectError {
        object: object.to_owned(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// `namespace/name`, the key of a namespaced object.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The label kube-proxy skips services by: they belong to another proxy.
pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// The label kube-proxy skips services by: headless (set by the endpoints controller).
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// The label joining an EndpointSlice to its Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The annotation the endpoints controllers set on an EndpointSlice (and Endpoints): when the
/// change behind its last update happened (a pod became ready, a service changed). kube-proxy
/// measures network programming latency from it.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// A pod's MAC, when the CNI plugin chose one other than the one derived from its address.
pub const POD_MAC: &str = "kxdp.io/mac";
/// flannel's annotations, shared so kxdp and flannel nodes form one overlay.
pub const FLANNEL_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// See [`FLANNEL_BACKEND_DATA`].
pub const FLANNEL_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// See [`FLANNEL_BACKEND_DATA`].
pub const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// See [`FLANNEL_BACKEND_DATA`].
pub const FLANNEL_KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset: three hours, as the API server
/// defaults it.
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10_800;

/// The well-known label of a node's zone, which `hints.forZones` name.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// `ports[].name` (may be empty when the service has one port).
    pub name: String,
    /// IP protocol number.
    pub proto: u8,
    /// `ports[].port`.
    pub port: u16,
    /// `ports[].nodePort`, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

/// What kxdp reads from a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The IPv4 cluster IP.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The field it came from, as the object wrote it (`spec.clusterIP`, or
    /// `spec.clusterIPs[1]` when the first is IPv6), for problems to name.
    pub cluster_ip_field: String,
    /// TCP and UDP ports (SCTP is not served).
    pub ports: Vec<ServicePortInfo>,
    /// `spec.externalIPs` (IPv4).
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (IPv4).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `spec.externalTrafficPolicy: Local` (NodePort and LoadBalancer services).
    pub external_local: bool,
    /// `spec.sessionAffinity: ClientIP`: `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// (10800 when unset, as the API server defaults it).
    pub client_ip_affinity: Option<u32>,
    /// `spec.loadBalancerSourceRanges` (IPv4; IPv6 ranges are another family's).
    pub source_ranges: Vec<Ipv4Cidr>,
    /// `spec.healthCheckNodePort`, for a LoadBalancer service with `externalTrafficPolicy:
    /// Local` (the API server allocates it): the node answers load balancers' health checks
    /// on it.
    pub health_check_node_port: Option<u16>,
}

/// One endpoint address of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The address.
    pub ip: Ipv4Addr,
    /// `conditions.ready` (unset: true).
    pub ready: bool,
    /// `conditions.serving` (unset: as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset: false).
    pub terminating: bool,
    /// `nodeName`.
    pub node: Option<String>,
    /// `hints.forZones[].name`: the zones the EndpointSlice controller meant it for.
    pub for_zones: Vec<String>,
    /// `hints.forNodes[].name`: the nodes it is meant for (`trafficDistribution:
    /// PreferSameNode`).
    pub for_nodes: Vec<String>,
}

/// What kxdp reads from an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The service's key (`namespace/name`), from the `kubernetes.io/service-name` label.
    pub service: String,
    /// Ports: name, protocol number, port.
    pub ports: Vec<(String, u8, u16)>,
    /// Endpoint addresses.
    pub endpoints: Vec<EndpointInfo>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation, if it parses.
    pub trigger_time: Option<SystemTime>,
}

/// What kxdp reads from a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The first IPv4 `InternalIP` of `status.addresses`.
    pub internal_ip: Option<Ipv4Addr>,
    /// flannel's `public-ip` annotation: the VXLAN endpoint, if not the internal IP.
    pub public_ip: Option<Ipv4Addr>,
    /// `spec.podCIDR` (IPv4).
    pub pod_cidr: Option<Ipv4Cidr>,
    /// The VTEP MAC from flannel's `backend-data` annotation.
    pub vtep_mac: Option<EthernetAddress>,
    /// The `topology.kubernetes.io/zone` label: where topology hints for zones point.
    pub zone: Option<String>,
}

impl NodeInfo {
    /// Where VXLAN for this node goes: the public IP if set, else the internal IP.
    pub fn underlay_ip(&self) -> Option<Ipv4Addr> {
        self.public_ip.or(self.internal_ip)
    }
}

/// What kxdp reads from a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `status.podIP` (IPv4).
    pub ip: Ipv4Addr,
    /// `spec.nodeName`.
    pub node: String,
    /// The `kxdp.io/mac` annotation, if the CNI plugin set one.
    pub mac: Option<EthernetAddress>,
    /// `metadata.namespace`: what a policy's `podSelector` is scoped to.
    pub namespace: String,
    /// `metadata.labels`: what policies select by.
    pub labels: BTreeMap<String, String>,
    /// The named ports of its containers (`spec.containers[].ports[]` with a `name`): name,
    /// protocol number (6, 17, 132), port; what a policy's named port resolves to.
    pub named_ports: Vec<(String, u8, u16)>,
}

fn proto(object: &str, field: &str, p: Option<&str>) -> Result<Option<u8>, ObjectError> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Some(6)),
        "UDP" => Ok(Some(17)),
        "SCTP" => Ok(None),
        other => Err(err(object, field, format!("unknown protocol {other:?}"))),
    }
}

/// A protocol as a NetworkPolicy or a container port names it: SCTP included (kxdp does not
/// forward SCTP, but a policy naming it must still compile: its rules never match TCP or UDP).
pub(crate) fn policy_proto(object: &str, field: &str, p: Option<&str>) -> Result<u8, ObjectError> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(6),
        "UDP" => Ok(17),
        "SCTP" => Ok(132),
        other => Err(err(object, field, format!("unknown protocol {other:?}"))),
    }
}

fn port(object: &str, field: &str, p: i32) -> Result<u16, ObjectError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err(object, field, format!("{p} is not a port number")))
}

/// Parse an address that may be IPv6 (skipped: `None`) or IPv4.
fn ipv4(object: &str, field: &str, text: &str) -> Result<Option<Ipv4Addr>, ObjectError> {
    if text.contains(':') {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| err(object, field, format!("{text:?} is not an IP address")))
}

/// A MAC address as `ip` prints it (`02:6b:78:76:00:01`).
pub fn mac_text(mac: EthernetAddress) -> String {
    mac.0.map(|b| format!("{b:02x}")).join(":")
}

/// A MAC address in the usual colon form.
pub fn parse_mac(text: &str) -> Option<EthernetAddress> {
    let mut b = [0u8; 6];
    let mut parts = text.split(':');
    for o in &mut b {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(EthernetAddress(b))
}

/// Why a CIDR was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `address/length` with an IPv4 address and a length up to 32.
    #[error("{0:?} is not an IPv4 CIDR (address/length, as 10.244.0.0/16)")]
    Syntax(String),
    /// Bits set beyond the prefix length: ambiguous between the network and one address, so
    /// refused, as kube-apiserver's strict CIDR validation refuses it.
    #[error("{text:?} has bits set beyond the prefix length: write the network, {network}")]
    HostBits {
        /// What was written.
        text: String,
        /// The network it lies in.
        network: ipnet::Ipv4Net,
    },
}

/// A subnet such as `10.244.1.0/24`, parsed with `ipnet` and converted to the dataplane's
/// [`Ipv4Cidr`] here, at the boundary.
///
/// A subnet with bits set beyond its prefix length (`10.244.1.1/24`) is refused, naming the
/// network it lies in: kube-apiserver's strict IP/CIDR validation (KEP-4858) refuses such
/// values in `spec.podCIDR(s)` ("must not have bits set beyond the prefix length"), and older
/// servers only warned that the value is ambiguous; a network kxdp routes by must not be
/// guessed. Leading zeros (`010.244.0.0/16`, `/016`) are refused too, as strict validation does.
pub fn parse_cidr(text: &str) -> Result<Ipv4Cidr, CidrError> {
    let syntax = || CidrError::Syntax(text.to_owned());
    // `ipnet` reads leading zeros as decimal where libc would read octal: refuse them.
    let leading_zero = text
        .split(['.', '/'])
        .any(|part| part.len() > 1 && part.starts_with('0'));
    if leading_zero {
        return Err(syntax());
    }
    let net: ipnet::Ipv4Net = text.parse().map_err(|_| syntax())?;
    if net.addr() != net.network() {
        return Err(CidrError::HostBits {
            text: text.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(Ipv4Cidr::new(net.network(), net.prefix_len()))
}

/// The addresses of an object that carries them twice, as the API server fills both: a single
/// field (`spec.clusterIP`, `status.podIP`) and a list whose first entry repeats it
/// (`spec.clusterIPs`, `status.podIPs`). Each address comes with the field the object used for
/// it, so an error names what the file says: the single field for the list's first entry when
/// both say the same, the list's entry otherwise.
fn named_ips<'a>(
    single: Option<&'a str>,
    listed: &[&'a str],
    single_field: &str,
    listed_field: impl Fn(usize) -> String,
) -> Vec<(String, &'a str)> {
    if listed.is_empty() {
        return single
            .map(|ip| (single_field.to_owned(), ip))
            .into_iter()
            .collect();
    }
    listed
        .iter()
        .enumerate()
        .map(|(i, ip)| match single {
            Some(s) if i == 0 && s == *ip => (single_field.to_owned(), *ip),
            _ => (listed_field(i), *ip),
        })
        .collect()
}

/// A Service as kxdp sees it; `None` for the ones kube-proxy does not serve.
pub fn service_from(svc: &Service) -> Result<Option<ServiceInfo>, ObjectError> {
    let object = format!(
        "Service {}",
        key(&svc.namespace().unwrap_or_default(), &svc.name_any())
    );
    let labels = svc.labels();
    if labels.contains_key(SERVICE_PROXY_NAME) || labels.contains_key(HEADLESS) {
        return Ok(None);
    }
    let Some(spec) = &svc.spec else {
        return Err(err(&object, "spec", "missing"));
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Ok(None);
    }
    if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer") {
        return Err(err(&object, "spec.type", format!("unknown type {kind:?}")));
    }
    // The API server fills both `clusterIPs` and `clusterIP` (the first of the list); a
    // manifest may say either. Errors name the field the object used.
    let listed: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let single = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
    if let (Some(first), Some(single)) = (listed.first(), single) {
        if *first != single {
            return Err(err(
                &object,
                "spec.clusterIPs[0]",
                format!("{first:?} must equal spec.clusterIP {single:?}"),
            ));
        }
    }
    let ips = named_ips(single, &listed, "spec.clusterIP", |i| {
        format!("spec.clusterIPs[{i}]")
    });
    if ips.iter().any(|(_, ip)| *ip == "None") {
        return Ok(None);
    }
    let mut cluster_ip = None;
    for (field, ip) in &ips {
        if let Some(v4) = ipv4(&object, field, ip)? {
            cluster_ip.get_or_insert((v4, field.clone()));
        }
    }
    let (cluster_ip, cluster_ip_field) = cluster_ip.unzip();
    let external = matches!(kind, "NodePort" | "LoadBalancer");
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let Some(proto) = proto(&object, &field("protocol"), p.protocol.as_deref())? else {
            continue;
        };
        let node_port = match p.node_port {
            Some(n) if external => Some(port(&object, &field("nodePort"), n)?),
            _ => None,
        };
        ports.push(ServicePortInfo {
            name: p.name.clone().unwrap_or_default(),
            proto,
            port: port(&object, &field("port"), p.port)?,
            node_port,
        });
    }
    let mut external_ips = Vec::new();
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.extend(ipv4(&object, &format!("spec.externalIPs[{i}]"), ip)?);
    }
    let mut load_balancer_ips = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        if let Some(ip) = &ing.ip {
            let field = format!("status.loadBalancer.ingress[{i}].ip");
            load_balancer_ips.extend(ipv4(&object, &field, ip)?);
        }
    }
    if kind != "LoadBalancer" {
        load_balancer_ips.clear();
    }
    let client_ip_affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
            // The API server's range: more than 0, at most a day.
            let seconds = u32::try_from(timeout)
                .ok()
                .filter(|t| (1..=86_400).contains(t))
                .ok_or_else(|| {
                    err(
                        &object,
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{timeout} is outside 1..=86400"),
                    )
                })?;
            Some(seconds)
        }
        None | Some("None") => None,
        Some(other) => {
            return Err(err(
                &object,
                "spec.sessionAffinity",
                format!("unknown affinity {other:?} (ClientIP or None)"),
            ))
        }
    };
    let external_local = external && spec.external_traffic_policy.as_deref() == Some("Local");
    // As kube-proxy: only a LoadBalancer service with the Local policy has its port served.
    let health_check_node_port = match spec.health_check_node_port {
        Some(n) if kind == "LoadBalancer" && external_local => {
            Some(port(&object, "spec.healthCheckNodePort", n)?)
        }
        _ => None,
    };
    // As kube-proxy reads them: spaces trimmed, host bits masked (the API server has accepted
    // both), IPv6 ranges left to that family.
    let mut source_ranges = Vec::new();
    for (i, text) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        let text = text.trim();
        if text.contains(':') {
            continue;
        }
        let net: ipnet::Ipv4Net = text.parse().map_err(|_| {
            err(
                &object,
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("{text:?} is not an IPv4 CIDR (address/length, as 203.0.113.0/24)"),
            )
        })?;
        source_ranges.push(Ipv4Cidr::new(net.network(), net.prefix_len()));
    }
    Ok(Some(ServiceInfo {
        cluster_ip,
        cluster_ip_field: cluster_ip_field.unwrap_or_default(),
        ports,
        external_ips,
        load_balancer_ips,
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        external_local,
        client_ip_affinity,
        source_ranges,
        health_check_node_port,
    }))
}

/// An EndpointSlice as kxdp sees it; `None` for FQDN and IPv6 slices and slices of no service.
pub fn slice_from(slice: &EndpointSlice) -> Result<Option<SliceInfo>, ObjectError> {
    let ns = slice.namespace().unwrap_or_default();
    let object = format!("EndpointSlice {}", key(&ns, &slice.name_any()));
    if slice.address_type != "IPv4" {
        return Ok(None);
    }
    let Some(service) = slice.labels().get(SERVICE_NAME) else {
        return Ok(None);
    };
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let field = |f: &str| format!("ports[{i}].{f}");
        let Some(proto) = proto(&object, &field("protocol"), p.protocol.as_deref())? else {
            continue;
        };
        // A port without a number means "all ports" only for selector-less services, which
        // kube-proxy does not serve either.
        let Some(number) = p.port else { continue };
        ports.push((
            p.name.clone().unwrap_or_default(),
            proto,
            port(&object, &field("port"), number)?,
        ));
    }
    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let c = ep.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        for (j, a) in ep.addresses.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            let ip = ipv4(&object, &field, a)?
                .ok_or_else(|| err(&object, &field, "an IPv6 address in an IPv4 slice"))?;
            endpoints.push(EndpointInfo {
                ip,
                ready,
                serving,
                terminating,
                node: ep.node_name.clone(),
                for_zones: hint_names(ep.hints.as_ref().and_then(|h| h.for_zones.as_ref())),
                for_nodes: hint_names(ep.hints.as_ref().and_then(|h| h.for_nodes.as_ref())),
            });
        }
    }
    // A trigger time that does not parse is only a metric lost: the slice still serves.
    let trigger_time = slice
        .annotations()
        .get(LAST_CHANGE_TRIGGER_TIME)
        .and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(SystemTime::from);
    Ok(Some(SliceInfo {
        service: key(&ns, service),
        ports,
        endpoints,
        trigger_time,
    }))
}

/// The names of an endpoint's hints of one kind (zones or nodes); empty when it has none.
fn hint_names<T: HintName>(hints: Option<&Vec<T>>) -> Vec<String> {
    hints
        .into_iter()
        .flatten()
        .map(|h| h.name().to_owned())
        .collect()
}

/// A hint with a name: `ForZone` or `ForNode`.
trait HintName {
    fn name(&self) -> &str;
}

impl HintName for k8s_openapi::api::discovery::v1::ForZone {
    fn name(&self) -> &str {
        &self.name
    }
}

impl HintName for k8s_openapi::api::discovery::v1::ForNode {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A Node as kxdp sees it.
pub fn node_from(node: &Node) -> Result<NodeInfo, ObjectError> {
    let object = format!("Node {}", node.name_any());
    let annotations = node.annotations();
    let mut internal_ip = None;
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for (i, a) in addresses.into_iter().flatten().enumerate() {
        if a.type_ != "InternalIP" {
            continue;
        }
        let field = format!("status.addresses[{i}].address");
        if let Some(ip) = ipv4(&object, &field, &a.address)? {
            internal_ip.get_or_insert(ip);
        }
    }
    let public_ip = match annotations.get(FLANNEL_PUBLIC_IP) {
        Some(text) => {
            let field = format!("metadata.annotations[{FLANNEL_PUBLIC_IP}]");
            Some(
                text.parse()
                    .map_err(|_| err(&object, field, format!("{text:?} is not an IPv4 address")))?,
            )
        }
        None => None,
    };
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<&str> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let from_list = !cidrs.is_empty();
    if !from_list {
        cidrs.extend(spec.and_then(|s| s.pod_cidr.as_deref()));
    }
    let mut pod_cidr = None;
    for (i, c) in cidrs.iter().enumerate() {
        if c.contains(':') {
            continue;
        }
        let field = if from_list {
            format!("spec.podCIDRs[{i}]")
        } else {
            "spec.podCIDR".to_owned()
        };
        let cidr = parse_cidr(c).map_err(|e| err(&object, field, e.to_string()))?;
        pod_cidr.get_or_insert(cidr);
    }
    let vtep_mac = match annotations.get(FLANNEL_BACKEND_DATA) {
        Some(text) => {
            let field = format!("metadata.annotations[{FLANNEL_BACKEND_DATA}]");
            let data: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| err(&object, &field, format!("not JSON: {e}")))?;
            let mac = data
                .get("VtepMAC")
                .and_then(|m| m.as_str())
                .ok_or_else(|| err(&object, &field, "no VtepMAC"))?;
            Some(parse_mac(mac).ok_or_else(|| {
                err(
                    &object,
                    &field,
                    format!("VtepMAC {mac:?} is not a MAC address"),
                )
            })?)
        }
        None => None,
    };
    Ok(NodeInfo {
        internal_ip,
        public_ip,
        pod_cidr,
        vtep_mac,
        zone: node.labels().get(ZONE_LABEL).cloned(),
    })
}

/// A Pod as kxdp sees it; `None` for host-network pods, pods without an IPv4 address yet, and
/// pods that have finished.
pub fn pod_from(pod: &Pod) -> Result<Option<PodInfo>, ObjectError> {
    let object = format!(
        "Pod {}",
        key(&pod.namespace().unwrap_or_default(), &pod.name_any())
    );
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return Ok(None);
    }
    let Some(node) = spec.and_then(|s| s.node_name.clone()) else {
        return Ok(None);
    };
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(None);
    }
    // As for a Service's cluster IPs: the API server fills both `podIPs` and `podIP`; errors
    // name the field the object used.
    let listed: Vec<&str> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    let single = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty());
    let ips = named_ips(single, &listed, "status.podIP", |i| {
        format!("status.podIPs[{i}].ip")
    });
    let mut ip = None;
    for (field, text) in &ips {
        if let Some(v4) = ipv4(&object, field, text)? {
            ip.get_or_insert(v4);
        }
    }
    let Some(ip) = ip else { return Ok(None) };
    let mac = match pod.annotations().get(POD_MAC) {
        Some(text) => Some(parse_mac(text).ok_or_else(|| {
            err(
                &object,
                format!("metadata.annotations[{POD_MAC}]"),
                format!("{text:?} is not a MAC address"),
            )
        })?),
        None => None,
    };
    let mut named_ports = Vec::new();
    for (c, container) in spec.into_iter().flat_map(|s| &s.containers).enumerate() {
        for (i, p) in container.ports.iter().flatten().enumerate() {
            let Some(name) = p.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let field = |f: &str| format!("spec.containers[{c}].ports[{i}].{f}");
            let proto = policy_proto(&object, &field("protocol"), p.protocol.as_deref())?;
            let port = port(&object, &field("containerPort"), p.container_port)?;
            named_ports.push((name, proto, port));
        }
    }
    named_ports.sort();
    Ok(Some(PodInfo {
        ip,
        node,
        mac,
        namespace: pod.namespace().unwrap_or_default(),
        labels: pod.labels().clone(),
        named_ports,
    }))
}

/// The kinds of object the model holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Services.
    Service,
    /// EndpointSlices.
    EndpointSlice,
    /// Nodes.
    Node,
    /// Pods.
    Pod,
    /// Namespaces (their labels, for NetworkPolicy peers).
    Namespace,
    /// `networking.k8s.io/v1` NetworkPolicies.
    NetworkPolicy,
    /// Pods of every node, as NetworkPolicy peers (same conversion as [`Kind::Pod`]).
    PeerPod,
}

/// The cluster model, with what changed since the compiler last looked.
#[derive(Debug, Default)]
pub struct Model {
    services: BTreeMap<String, ServiceInfo>,
    slices: BTreeMap<String, SliceInfo>,
    slices_by_service: BTreeMap<String, BTreeSet<String>>,
    nodes: BTreeMap<String, NodeInfo>,
    pods: BTreeMap<String, PodInfo>,
    /// Pods their veths declare (see [`crate::pod_declaration`]), by the veth's name.
    declared: BTreeMap<String, PodDeclaration>,
    namespaces: BTreeMap<String, NamespaceInfo>,
    policies: BTreeMap<String, PolicyInfo>,
    /// Pods of every node, as policy peers ([`Kind::PeerPod`]).
    peer_pods: BTreeMap<String, PodInfo>,
    dirty_services: HashSet<String>,
    nodes_dirty: bool,
    pods_dirty: bool,
    /// Namespaces, policies or peer pods changed (pods changing is `pods_dirty`).
    policy_dirty: bool,
    /// Trigger times of slice changes not yet taken ([`Model::take_trigger_times`]).
    trigger_times: Vec<SystemTime>,
}

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    /// Set (or with `None` remove) service `key`; returns whether anything changed.
    pub fn set_service(&mut self, key: &str, info: Option<ServiceInfo>) -> bool {
        let changed = set(&mut self.services, key, info);
        if changed {
            self.dirty_services.insert(key.to_owned());
        }
        changed
    }

    /// Set (or with `None` remove) EndpointSlice `key`; returns whether anything changed.
    pub fn set_slice(&mut self, key: &str, info: Option<SliceInfo>) -> bool {
        let old_service = self.slices.get(key).map(|s| s.service.clone());
        let old_trigger = self.slices.get(key).and_then(|s| s.trigger_time);
        let new_service = info.as_ref().map(|s| s.service.clone());
        let new_trigger = info.as_ref().and_then(|s| s.trigger_time);
        let changed = set(&mut self.slices, key, info);
        if !changed {
            return false;
        }
        // As kube-proxy: a change that carries a new trigger time is measured once.
        if let Some(t) = new_trigger.filter(|t| Some(*t) != old_trigger) {
            self.trigger_times.push(t);
        }
        if let Some(s) = old_service {
            if let Some(set) = self.slices_by_service.get_mut(&s) {
                set.remove(key);
                if set.is_empty() {
                    self.slices_by_service.remove(&s);
                }
            }
            self.dirty_services.insert(s);
        }
        if let Some(s) = new_service {
            self.slices_by_service
                .entry(s.clone())
                .or_default()
                .insert(key.to_owned());
            self.dirty_services.insert(s);
        }
        true
    }

    /// Set (or with `None` remove) node `name`; returns whether anything changed.
    pub fn set_node(&mut self, name: &str, info: Option<NodeInfo>) -> bool {
        let changed = set(&mut self.nodes, name, info);
        self.nodes_dirty |= changed;
        changed
    }

    /// Set (or with `None` remove) pod `key`; returns whether anything changed.
    pub fn set_pod(&mut self, key: &str, info: Option<PodInfo>) -> bool {
        let changed = set(&mut self.pods, key, info);
        self.pods_dirty |= changed;
        changed
    }

    /// Set (or with `None` remove) the pod that veth `ifname` declares; returns whether
    /// anything changed. Not an API object: the compiler serves a declared pod the API does
    /// not list (yet), the API's pod winning when both exist.
    pub fn set_declared(&mut self, ifname: &str, pod: Option<PodDeclaration>) -> bool {
        let changed = set(&mut self.declared, ifname, pod);
        self.pods_dirty |= changed;
        changed
    }

    /// Replace every declaration with `declared` (a whole link table, read again); returns
    /// whether anything changed.
    pub fn replace_declared(&mut self, declared: BTreeMap<String, PodDeclaration>) -> bool {
        let changed = declared != self.declared;
        if changed {
            self.declared = declared;
            self.pods_dirty = true;
        }
        changed
    }

    /// Every declared pod, by its veth's name.
    pub fn declared(&self) -> &BTreeMap<String, PodDeclaration> {
        &self.declared
    }

    /// Set (or with `None` remove) namespace `name`; returns whether anything changed.
    pub fn set_namespace(&mut self, name: &str, info: Option<NamespaceInfo>) -> bool {
        let changed = set(&mut self.namespaces, name, info);
        self.policy_dirty |= changed;
        changed
    }

    /// Set (or with `None` remove) NetworkPolicy `key`; returns whether anything changed.
    pub fn set_policy(&mut self, key: &str, info: Option<PolicyInfo>) -> bool {
        let changed = set(&mut self.policies, key, info);
        self.policy_dirty |= changed;
        changed
    }

    /// Set (or with `None` remove) peer pod `key` (a pod of any node); returns whether anything
    /// changed.
    ///
    /// Peers matter only to policies: while there is none, a peer's change leaves the model
    /// clean (nothing to recompile or publish); the first policy compiles against the peers
    /// held by then.
    pub fn set_peer_pod(&mut self, key: &str, info: Option<PodInfo>) -> bool {
        let changed = set(&mut self.peer_pods, key, info);
        self.policy_dirty |= changed && !self.policies.is_empty();
        changed
    }

    /// Every pod a NetworkPolicy may name as a peer, by key: the peer pods, and the served
    /// pods, which win where both hold a key (the node's own watch may be ahead of the
    /// cluster-wide one).
    pub fn policy_pods(&self) -> impl Iterator<Item = (&String, &PodInfo)> + '_ {
        self.peer_pods
            .iter()
            .filter(|(k, _)| !self.pods.contains_key(*k))
            .chain(&self.pods)
    }

    /// Every namespace, by name.
    pub fn namespaces(&self) -> &BTreeMap<String, NamespaceInfo> {
        &self.namespaces
    }

    /// Every NetworkPolicy, by key.
    pub fn policies(&self) -> &BTreeMap<String, PolicyInfo> {
        &self.policies
    }

    /// Keys of every object of `kind`, for a relist to find the ones it no longer lists.
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::EndpointSlice => self.slices.keys().cloned().collect(),
            Kind::Node => self.nodes.keys().cloned().collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::Namespace => self.namespaces.keys().cloned().collect(),
            Kind::NetworkPolicy => self.policies.keys().cloned().collect(),
            Kind::PeerPod => self.peer_pods.keys().cloned().collect(),
        }
    }

    /// Remove object `key` of `kind`.
    pub fn remove(&mut self, kind: Kind, key: &str) -> bool {
        match kind {
            Kind::Service => self.set_service(key, None),
            Kind::EndpointSlice => self.set_slice(key, None),
            Kind::Node => self.set_node(key, None),
            Kind::Pod => self.set_pod(key, None),
            Kind::Namespace => self.set_namespace(key, None),
            Kind::NetworkPolicy => self.set_policy(key, None),
            Kind::PeerPod => self.set_peer_pod(key, None),
        }
    }

    /// Every service, by key.
    pub fn services(&self) -> &BTreeMap<String, ServiceInfo> {
        &self.services
    }

    /// The slices of service `key`.
    pub fn slices_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a SliceInfo> + 'a {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
    }

    /// Every node, by name.
    pub fn nodes(&self) -> &BTreeMap<String, NodeInfo> {
        &self.nodes
    }

    /// Every pod, by key.
    pub fn pods(&self) -> &BTreeMap<String, PodInfo> {
        &self.pods
    }

    /// Take what changed since the last call: the services to recompile, and whether nodes,
    /// pods and what policies depend on changed.
    pub fn take_changes(&mut self) -> Changes {
        Changes {
            services: std::mem::take(&mut self.dirty_services),
            nodes: std::mem::take(&mut self.nodes_dirty),
            pods: std::mem::take(&mut self.pods_dirty),
            policy: std::mem::take(&mut self.policy_dirty),
        }
    }

    /// The trigger times (`endpoints.kubernetes.io/last-change-trigger-time`) of the slice
    /// changes since the last call: once these changes are live, each is one observation of
    /// the network programming latency.
    pub fn take_trigger_times(&mut self) -> Vec<SystemTime> {
        std::mem::take(&mut self.trigger_times)
    }

    /// Whether nothing changed since the last [`Model::take_changes`].
    pub fn is_clean(&self) -> bool {
        self.dirty_services.is_empty()
            && !self.nodes_dirty
            && !self.pods_dirty
            && !self.policy_dirty
    }

    /// Object counts: services, slices, nodes, pods.
    pub fn counts(&self) -> [usize; 4] {
        [
            self.services.len(),
            self.slices.len(),
            self.nodes.len(),
            self.pods.len(),
        ]
    }
}

/// What changed in a [`Model`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Services (keys) whose tables must be rebuilt.
    pub services: HashSet<String>,
    /// Whether any node changed.
    pub nodes: bool,
    /// Whether any pod changed.
    pub pods: bool,
    /// Whether any namespace or NetworkPolicy changed, or a peer pod while some policy
    /// exists ([`Model::set_peer_pod`]).
    pub policy: bool,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.nodes && !self.pods && !self.policy
    }
}

fn set<T: PartialEq>(map: &mut BTreeMap<String, T>, key: &str, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            if map.get(key) == Some(&v) {
                return false;
            }
            map.insert(key.to_owned(), v);
            true
        }
        None => map.remove(key).is_some(),
    }
}

/// One Kubernetes object of a kind the model holds.
#[derive(Clone, Debug)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A Node.
    Node(Box<Node>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Namespace.
    Namespace(Box<Namespace>),
    /// A NetworkPolicy.
    NetworkPolicy(Box<NetworkPolicy>),
    /// A Pod of any node, as a NetworkPolicy peer.
    PeerPod(Box<Pod>),
}

impl Object {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::PeerPod(_) => Kind::PeerPod,
        }
    }

    /// Its key in the model: `namespace/name`, or the name for a Node or a Namespace.
    pub fn key(&self) -> String {
        match self {
            Object::Service(o) => key(&o.namespace().unwrap_or_default(), &o.name_any()),
            Object::EndpointSlice(o) => key(&o.namespace().unwrap_or_default(), &o.name_any()),
            Object::Node(o) => o.name_any(),
            Object::Pod(o) | Object::PeerPod(o) => {
                key(&o.namespace().unwrap_or_default(), &o.name_any())
            }
            Object::Namespace(o) => o.name_any(),
            Object::NetworkPolicy(o) => key(&o.namespace().unwrap_or_default(), &o.name_any()),
        }
    }
}

impl Model {
    /// Put `object` in the model (replacing what its key held); an object kxdp does not serve
    /// removes what the key held. Returns whether anything changed; on error the model is
    /// unchanged.
    pub fn apply(&mut self, object: &Object) -> Result<bool, ObjectError> {
        let k = object.key();
        Ok(match object {
            Object::Service(o) => {
                let info = service_from(o)?;
                self.set_service(&k, info)
            }
            Object::EndpointSlice(o) => {
                let info = slice_from(o)?;
                self.set_slice(&k, info)
            }
            Object::Node(o) => {
                let info = node_from(o)?;
                self.set_node(&k, Some(info))
            }
            Object::Pod(o) => {
                let info = pod_from(o)?;
                self.set_pod(&k, info)
            }
            Object::Namespace(o) => self.set_namespace(&k, Some(namespace_from(o))),
            Object::NetworkPolicy(o) => {
                let info = policy_from(o)?;
                self.set_policy(&k, Some(info))
            }
            Object::PeerPod(o) => {
                let info = pod_from(o)?;
                self.set_peer_pod(&k, info)
            }
        })
    }

    /// Make the objects of `kind` exactly `objects` (a full list, after a relist): apply each,
    /// and remove the ones not listed. Objects that do not convert are reported and left as
    /// they were.
    pub fn replace_kind(&mut self, kind: Kind, objects: &[Object]) -> Vec<ObjectError> {
        let mut errors = Vec::new();
        let mut listed = HashSet::new();
        for o in objects.iter().filter(|o| o.kind() == kind) {
            listed.insert(o.key());
            if let Err(e) = self.apply(o) {
                errors.push(e);
            }
        }
        for k in self.keys(kind) {
            if !listed.contains(&k) {
                self.remove(kind, &k);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, ip: &str) -> Box<Pod> {
        Box::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "c",
                    "ports": [{"name": "http", "containerPort": 8080},
                              {"containerPort": 9090}]}]},
                "status": {"phase": "Running", "podIP": ip}}))
            .unwrap(),
        )
    }

    #[test]
    fn peer_pods_matter_only_once_a_policy_exists_and_served_pods_win() {
        let mut model = Model::new();
        assert!(model
            .apply(&Object::PeerPod(pod("a", "node-b", "10.0.2.1")))
            .unwrap());
        assert!(
            model.is_clean(),
            "no policy: a peer changes nothing to compile"
        );
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns"}, "spec": {"podSelector": {}}}))
        .unwrap();
        model.apply(&Object::NetworkPolicy(Box::new(np))).unwrap();
        assert!(model.take_changes().policy);
        model
            .apply(&Object::PeerPod(pod("b", "node-b", "10.0.2.2")))
            .unwrap();
        assert!(
            model.take_changes().policy,
            "with a policy, a peer recompiles"
        );
        // The node's own watch says more recently where pod a is.
        model
            .apply(&Object::Pod(pod("a", "node-a", "10.0.1.1")))
            .unwrap();
        let peers: Vec<(&String, Ipv4Addr)> = model.policy_pods().map(|(k, p)| (k, p.ip)).collect();
        assert_eq!(
            peers,
            [
                (&"ns/b".to_owned(), Ipv4Addr::new(10, 0, 2, 2)),
                (&"ns/a".to_owned(), Ipv4Addr::new(10, 0, 1, 1)),
            ]
        );
        let a = &model.pods()["ns/a"];
        assert_eq!(
            a.named_ports,
            [("http".to_owned(), 6, 8080)],
            "named ports only"
        );
        assert_eq!(a.labels["app"], "a");
        assert_eq!(a.namespace, "ns");
    }

    #[test]
    fn cidrs_parse_with_ipnet_and_refuse_host_bits_naming_the_network() {
        let c = parse_cidr("10.244.1.0/24").unwrap();
        assert_eq!(
            (c.address(), c.prefix_len()),
            (Ipv4Addr::new(10, 244, 1, 0), 24)
        );
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(parse_cidr("10.1.2.3/32").unwrap().prefix_len(), 32);
        let e = parse_cidr("10.244.1.1/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.244.1.1/24\" has bits set beyond the prefix length: write the network, 10.244.1.0/24"
        );
        for bad in [
            "10.244.0.0",
            "10.244.0.0/33",
            "10.244.0.0/",
            "/16",
            "10.244.0/16",
            "fd00::/64",
            "nonsense",
            "010.244.0.0/16",
            "10.244.0.0/016",
            "10.244.0.0/+16",
            " 10.244.0.0/16",
        ] {
            assert_eq!(
                parse_cidr(bad),
                Err(CidrError::Syntax(bad.into())),
                "{bad:?} is refused as not a CIDR"
            );
        }
    }
}
