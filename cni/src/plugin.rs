//! The CNI commands, each from a checked environment and configuration ([`crate::spec`]) to a
//! result or a CNI error.
//!
//! - `ADD` reads the node's pod network from the agent's subnet file (missing: code 11, the
//!   agent has not learned its podCIDR yet), takes an address ([`crate::ipam`]), and makes
//!   the pod's veth pair as the agent serves it: the node's end named for the pod
//!   ([`pod_interface_name`] of `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, or of the container ID
//!   when the runtime passes no pod), the pod's end `CNI_IFNAME` with the MAC [`pod_mac`] of
//!   its address, both at the pod MTU (`mtu`, else the agent's) with every offload at the
//!   kernel's default (the pod's stack leaves TCP and UDP checksums to the agent, which hands
//!   them on or completes them), both up; the address with the podCIDR's prefix and a default route via the
//!   gateway, which the agent answers ARP for. Before the node's end goes up its alias
//!   declares the pod and its address ([`kxdp_control::pod_declaration`], `kxdp-pod
//!   NAMESPACE/NAME IP`, the namespace empty and the container ID as the name when the
//!   runtime passes no pod), so the agent serves the pod as soon as the veth is up, before
//!   the API lists it (the kubelet reports the pod's address only after `ADD` returns). Any
//!   failure after the address is taken deletes the veth (if made) and frees the address
//!   before the error is returned. A node end left by an earlier sandbox of the same pod is
//!   replaced, as Cilium replaces its `lxc` ends. Then, the store's lock released, `ADD` asks
//!   the agent (`agentAddress`, `GET /served/<node end>`) every 2 ms until it serves the
//!   veth, for at most `servedTimeoutMs` (1 s by default), so that the pod's first packets
//!   (its ARP request for the gateway) find it served; it returns success either way: an
//!   agent that is slow serves the pod later, and `ADD` never fails for it (it says so on
//!   stderr). An agent that does not answer at all is asked once.
//! - `DEL` deletes the node's end (the pod's goes with it), or the pod's end when only it is
//!   left, and frees the address; it succeeds when the namespace, the interface or the
//!   allocation is gone already, so it may be repeated. A node end another attachment now
//!   owns (a newer sandbox of the same pod) is left alone.
//! - `CHECK` compares the pod's interface, address, default route and offload, the node's
//!   end and the address reservation with `prevResult`; the error names what differs.
//! - `STATUS` asks the agent's `/readyz` and reads the subnet file: code 50 otherwise (a full
//!   address range is ADD's code 11, never STATUS's: see [`status`]).
//! - `GC` frees every allocation whose attachment is not in `cni.dev/valid-attachments`,
//!   deleting a node end such an attachment left.
//!
//! `ADD`, `DEL` and `GC` hold the network's store lock throughout, so attachments change one
//! at a time on a node and a node end's owner cannot change between its check and its use.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use kxdp_control::compile::{pod_interface_name, pod_mac};
use kxdp_control::node_subnet::NodeSubnet;
use kxdp_control::pod_declaration::PodDeclaration;
use serde_json::Value;

use crate::agent::Served;
use crate::ipam::{IpamError, Locked, Owner, Store};
use crate::link::{self, mac_text, Net};
use crate::spec::{self, code, Attached, CniError, Command, Config, Env};

/// Run `env`'s command with the configuration text `input`: the JSON to print on success,
/// if the command prints any.
pub fn run(env: &Env, input: &str) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(spec::version_result(input)));
    }
    let config = Config::parse(input)?;
    match env.command {
        Command::Add => add(env, &config).map(Some),
        Command::Del => del(env, &config).map(|()| None),
        Command::Check => check(env, &config).map(|()| None),
        Command::Status => {
            need_version(&config, "STATUS")?;
            status(&config).map(|()| None)
        }
        Command::Gc => {
            need_version(&config, "GC")?;
            gc(&config).map(|()| None)
        }
        Command::Version => unreachable!("answered above"),
    }
}

/// STATUS and GC came with spec 1.1.0.
fn need_version(config: &Config, command: &str) -> Result<(), CniError> {
    if spec::at_least(config.version, "1.1.0") {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion: {command} needs 1.1.0, the configuration says {}",
                config.version
            ),
        ))
    }
}

fn kernel(details: String) -> CniError {
    CniError::new(code::KERNEL, "the kernel refused a change", details)
}

fn ipam_error(e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            "no free pod address on this node",
            format!("subnetFile: {e}"),
        ),
        IpamError::Io { .. } => CniError::new(
            code::IO_FAILURE,
            "the address store failed",
            format!("dataDir: {e}"),
        ),
    }
}

/// The node's pod network from the agent's file.
fn node_subnet(config: &Config) -> Result<NodeSubnet, CniError> {
    let path = &config.subnet_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "the node's pod network is not known yet",
                format!(
                    "subnetFile: {} does not exist: the kxdp agent writes it once it knows \
                     this node's podCIDR (is it running on this node?)",
                    path.display()
                ),
            ))
        }
        Err(e) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                "cannot read the node's pod network",
                format!("subnetFile: {}: {e}", path.display()),
            ))
        }
    };
    NodeSubnet::parse(&text).map_err(|e| {
        CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "the node's pod network is unreadable",
            format!("subnetFile: {}: {e}", path.display()),
        )
    })
}

/// The node end's name: the agent's convention for the pod, or the container's hash.
fn host_ifname(env: &Env) -> String {
    match env.pod() {
        Some((namespace, name)) => pod_interface_name(namespace, name),
        None => pod_interface_name("", &env.container_id),
    }
}

/// `CNI_NETNS` as text, empty when absent.
fn netns_text(env: &Env) -> String {
    env.netns
        .as_deref()
        .unwrap_or(Path::new(""))
        .display()
        .to_string()
}

fn netns(env: &Env) -> Result<std::fs::File, CniError> {
    let path = env.netns.as_deref().unwrap_or(Path::new(""));
    link::open_netns(path).map_err(|e| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid environment variable",
            format!("CNI_NETNS: {e}"),
        )
    })
}

fn add(env: &Env, config: &Config) -> Result<Value, CniError> {
    let subnet = node_subnet(config)?;
    let mtu = config.mtu.unwrap_or(subnet.mtu);
    let ns = netns(env)?;
    let host = host_ifname(env);
    let ifname = env.ifname.clone();
    let exists = link::in_netns(&ns, || Net::connect()?.link(&ifname))
        .and_then(|r| r)
        .map_err(kernel)?;
    if exists.is_some() {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "the interface exists",
            format!(
                "CNI_IFNAME: {ifname} is already in the namespace {}",
                netns_text(env)
            ),
        ));
    }
    // Before the address is taken: every failure after it must give it back.
    let net = Net::connect().map_err(kernel)?;
    let store = Store::new(&config.data_dir, &config.name);
    let locked = store.lock().map_err(ipam_error)?;
    let owner = Owner {
        container_id: env.container_id.clone(),
        ifname: ifname.clone(),
        host_ifname: host.clone(),
    };
    let ip = locked
        .allocate(subnet.subnet, subnet.gateway, &owner)
        .map_err(ipam_error)?;
    let address = Ipv4Net::new(ip, subnet.subnet.prefix_len()).expect("the subnet's prefix");
    let (namespace, name) = env.pod().unwrap_or(("", &env.container_id));
    let declared = PodDeclaration {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        ip,
    };
    // A pod that cannot be declared (a name too long for the kernel's alias) waits for the
    // API, as every pod did before declarations.
    let alias = declared
        .to_alias()
        .map_err(|e| eprintln!("kxdp-cni: {e}: the agent serves {host} once the API lists it"))
        .ok();
    let attached = attach(
        &net,
        &ns,
        &host,
        &ifname,
        alias.as_deref(),
        address,
        subnet.gateway,
        mtu,
    );
    let result = match attached {
        Ok(host_mac) => Ok(spec::chained(
            config.prev_result.as_ref(),
            spec::add_result(
                config.version,
                &Attached {
                    host_ifname: host.clone(),
                    host_mac,
                    ifname,
                    mac: mac_text(pod_mac(ip).0),
                    mtu,
                    sandbox: netns_text(env),
                    address,
                    gateway: subnet.gateway,
                },
                config.dns.as_ref(),
            ),
        )),
        Err(e) => {
            // Roll back: the veth (the pod's end goes with the node's), then the address.
            if let Ok(Some(l)) = net.link(&host) {
                let _ = net.delete(l.index);
            }
            let _ = locked.release(&env.container_id, &ifname);
            Err(kernel(e))
        }
    };
    if result.is_ok() {
        // Other ADDs need not wait for this one's agent.
        drop(locked);
        wait_served(config, &host);
    }
    result
}

/// Wait (bounded) for the agent to serve the node end `host`; whatever comes of it, `ADD`
/// succeeds: the agent serves the pod when it can.
fn wait_served(config: &Config, host: &str) {
    let address =
        crate::agent::AgentAddress::parse(&config.agent_address).expect("checked by Config::parse");
    match crate::agent::wait_served(&address, host, config.served_timeout) {
        Served::Yes(_) => {}
        Served::NotYet => eprintln!(
            "kxdp-cni: the agent did not serve {host} within servedTimeoutMs ({} ms); \
             returning anyway, it serves the pod when it can",
            config.served_timeout.as_millis()
        ),
        Served::NoAgent(e) => {
            eprintln!("kxdp-cni: {e}; returning anyway, the agent serves the pod when it runs")
        }
    }
}

/// Make the pair and configure both ends (the node's with `alias`, if any); the node end's
/// MAC.
#[allow(clippy::too_many_arguments)]
fn attach(
    net: &Net,
    ns: &std::fs::File,
    host: &str,
    ifname: &str,
    alias: Option<&str>,
    address: Ipv4Net,
    gateway: Ipv4Addr,
    mtu: u16,
) -> Result<String, String> {
    if let Some(stale) = net.link(host)? {
        eprintln!("kxdp-cni: replacing {host}, left by an earlier sandbox of this pod");
        net.delete(stale.index)?;
    }
    let mac = pod_mac(address.addr()).0;
    net.create_veth(host, ifname, mac, mtu, ns)?;
    let h = net
        .link(host)?
        .ok_or_else(|| format!("{host} vanished after it was created"))?;
    // The kernel ignores an alias in the creating request; set before the end goes up, so
    // the agent knows the pod by the time it could serve the veth.
    if let Some(alias) = alias {
        net.set_alias(h.index, host, alias)?;
    }
    net.up(h.index, host)?;
    link::in_netns(ns, || {
        let pod = Net::connect()?;
        let p = pod
            .link(ifname)?
            .ok_or_else(|| format!("{ifname} is not in the pod's namespace after creation"))?;
        pod.up(p.index, ifname)?;
        pod.add_address(p.index, ifname, address)?;
        pod.add_default_route(p.index, ifname, gateway)
    })??;
    Ok(h.mac.map(mac_text).unwrap_or_default())
}

/// Delete the node end `host` unless another attachment than (`container_id`, `ifname`)
/// owns it now; whether it was there.
fn remove_host_end(
    net: &Net,
    locked: &Locked<'_>,
    host: &str,
    container_id: &str,
    ifname: &str,
) -> Result<bool, CniError> {
    let other_owner = locked.allocations().map_err(ipam_error)?.values().any(|o| {
        o.as_ref().is_some_and(|o| {
            o.host_ifname == host && !(o.container_id == container_id && o.ifname == ifname)
        })
    });
    if other_owner {
        return Ok(false);
    }
    match net.link(host).map_err(kernel)? {
        Some(l) => {
            net.delete(l.index).map_err(kernel)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Whether `mac` is one [`pod_mac`] makes (`0a:58` and the pod's address).
fn is_pod_mac(mac: [u8; 6]) -> bool {
    let ip = Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5]);
    pod_mac(ip).0 == mac
}

fn del(env: &Env, config: &Config) -> Result<(), CniError> {
    let store = Store::new(&config.data_dir, &config.name);
    let locked = store.lock().map_err(ipam_error)?;
    let held = locked
        .find(&env.container_id, &env.ifname)
        .map_err(ipam_error)?;
    let net = Net::connect().map_err(kernel)?;
    let mut deleted = false;
    if let Some((_, owner)) = &held {
        deleted = remove_host_end(
            &net,
            &locked,
            &owner.host_ifname,
            &env.container_id,
            &env.ifname,
        )?;
    }
    if !deleted {
        // The pod's end alone (its node end renamed or gone): delete it by name, where the
        // namespace still exists. A namespace that is gone took its interfaces with it.
        if let Some(path) = &env.netns {
            if let Ok(ns) = link::open_netns(path) {
                let ifname = env.ifname.clone();
                link::in_netns(&ns, || {
                    let pod = Net::connect()?;
                    // Only an end this plugin made (its MAC is `pod_mac`'s): the DEL a
                    // runtime sends after a failed ADD must not take another plugin's.
                    match pod.link(&ifname)? {
                        Some(l) if l.veth && l.mac.is_some_and(is_pod_mac) => pod.delete(l.index),
                        _ => Ok(()),
                    }
                })
                .and_then(|r| r)
                .map_err(kernel)?;
            }
        }
    }
    locked
        .release(&env.container_id, &env.ifname)
        .map_err(ipam_error)?;
    Ok(())
}

fn check_failed(details: String) -> CniError {
    CniError::new(
        code::CHECK_FAILED,
        "the pod's network differs from the ADD result",
        details,
    )
}

fn check(env: &Env, config: &Config) -> Result<(), CniError> {
    let prev = config.prev()?;
    let prev = prev.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid network configuration",
            "prevResult: missing (CHECK compares with the ADD result)",
        )
    })?;
    let pod_if = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
        .ok_or_else(|| {
            check_failed(format!(
                "prevResult.interfaces: no interface {} in a sandbox",
                env.ifname
            ))
        })?;
    let host = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.as_deref().unwrap_or("").is_empty())
        .map(|i| i.name.clone())
        .ok_or_else(|| check_failed("prevResult.interfaces: no node interface".into()))?;
    let ip = prev
        .ips
        .iter()
        .find(|i| i.interface.is_none_or(|n| n == pod_if))
        .ok_or_else(|| check_failed("prevResult.ips: no address".into()))?;
    let ipnet::IpNet::V4(address) = ip.address else {
        return Err(check_failed(format!(
            "prevResult.ips: {} is not IPv4",
            ip.address
        )));
    };
    let gateway = match ip.gateway {
        Some(std::net::IpAddr::V4(g)) => g,
        _ => return Err(check_failed("prevResult.ips: no IPv4 gateway".into())),
    };
    let subnet = node_subnet(config)?;
    let mtu = u32::from(config.mtu.unwrap_or(subnet.mtu));

    // The reservation.
    let store = Store::new(&config.data_dir, &config.name);
    let held = store
        .lock()
        .and_then(|l| l.find(&env.container_id, &env.ifname))
        .map_err(ipam_error)?;
    match held {
        Some((held, _)) if held == address.addr() => {}
        Some((held, _)) => {
            return Err(check_failed(format!(
                "IP reservation: {}/{} holds {held}, not {}",
                env.container_id,
                env.ifname,
                address.addr()
            )))
        }
        None => {
            return Err(check_failed(format!(
                "IP reservation: {}/{} holds no address (expected {})",
                env.container_id,
                env.ifname,
                address.addr()
            )))
        }
    }

    // A namespace that is gone: the container is, and there is nothing to check (its
    // veth pair is being torn down by the kernel and may vanish under the checks below).
    if env.netns.as_deref().is_some_and(|p| !p.exists()) {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "the container is gone",
            format!("CNI_NETNS: {} does not exist", netns_text(env)),
        ));
    }

    // The node's end.
    let net = Net::connect().map_err(kernel)?;
    let h = net
        .link(&host)
        .map_err(kernel)?
        .ok_or_else(|| check_failed(format!("{host}: the node's end of the veth is missing")))?;
    let host_checks = [
        (!h.up, format!("{host}: down")),
        (
            h.mtu != mtu,
            format!("{host}: MTU {} (expected {mtu})", h.mtu),
        ),
    ];
    if let Some((_, why)) = host_checks.into_iter().find(|(bad, _)| *bad) {
        return Err(check_failed(why));
    }

    // The pod's end.
    let ns = netns(env)?;
    let ifname = env.ifname.clone();
    let want_mac = mac_text(pod_mac(address.addr()).0);
    let pod_result = link::in_netns(&ns, || -> Result<Result<(), String>, String> {
        let pod = Net::connect()?;
        let Some(p) = pod.link(&ifname)? else {
            return Ok(Err(format!("{ifname}: missing from the pod's namespace")));
        };
        let mac = p.mac.map(mac_text).unwrap_or_default();
        if !p.veth {
            return Ok(Err(format!("{ifname}: not a veth")));
        }
        if p.peer != Some(h.index) || h.peer != Some(p.index) {
            return Ok(Err(format!("{ifname}: its peer is not {host}")));
        }
        if mac != want_mac {
            return Ok(Err(format!("{ifname}: MAC {mac} (expected {want_mac})")));
        }
        if !p.up {
            return Ok(Err(format!("{ifname}: down")));
        }
        if p.mtu != mtu {
            return Ok(Err(format!("{ifname}: MTU {} (expected {mtu})", p.mtu)));
        }
        let addresses = pod.addresses(p.index)?;
        if !addresses.contains(&address) {
            return Ok(Err(format!(
                "{ifname}: address {address} missing (it has {addresses:?})"
            )));
        }
        let gateways = pod.default_gateways(p.index)?;
        if !gateways.contains(&gateway) {
            return Ok(Err(format!(
                "{ifname}: no default route via {gateway} (default routes via {gateways:?})"
            )));
        }
        Ok(Ok(()))
    });
    match pod_result {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(differs))) => Err(check_failed(differs)),
        Ok(Err(e)) | Err(e) => Err(kernel(e)),
    }
}

fn status(config: &Config) -> Result<(), CniError> {
    let not_available = |details: String| {
        CniError::new(
            code::NOT_AVAILABLE,
            "kxdp-cni cannot attach pods now",
            details,
        )
    };
    let address =
        crate::agent::AgentAddress::parse(&config.agent_address).expect("checked by Config::parse");
    crate::agent::ready(&address).map_err(|e| not_available(format!("agentAddress: {e}")))?;
    // A full address range is ADD's to answer (11, try again later), not STATUS's: runtimes
    // turn a failed STATUS into the node's NetworkReady=false, and a NotReady node gets its
    // pods evicted, which a busy node must not get for being busy.
    node_subnet(config).map_err(|e| not_available(e.details))?;
    Ok(())
}

fn gc(config: &Config) -> Result<(), CniError> {
    let valid = config.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid network configuration",
            "cni.dev/valid-attachments: missing (GC frees every attachment not listed there)",
        )
    })?;
    let valid: BTreeSet<(String, String)> = valid
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let store = Store::new(&config.data_dir, &config.name);
    let locked = store.lock().map_err(ipam_error)?;
    let net = Net::connect().map_err(kernel)?;
    // Everything that can be freed is, whatever fails on the way; the failures are reported
    // together.
    let (freed, failed) = locked.retain(&valid).map_err(ipam_error)?;
    let mut errors: Vec<String> = failed.iter().map(ToString::to_string).collect();
    for (_, owner) in freed.into_iter().filter_map(|(ip, o)| Some((ip, o?))) {
        // Freed already, so only a valid attachment can claim the node end now.
        if let Err(e) = remove_host_end(&net, &locked, &owner.host_ifname, "", "") {
            errors.push(e.details);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(kernel(errors.join("; ")))
    }
}
