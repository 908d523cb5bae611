//! The CNI protocol as the runtime speaks it (spec 1.1.0; configurations of 0.4.0 and 1.0.0
//! accepted): the `CNI_*` environment, the plugin configuration on stdin, the error object
//! and the result, each version's shape.
//!
//! Everything here is checked before the plugin touches the node: an environment variable
//! that is missing or malformed is code 4 naming it, input that is not JSON is 6, a
//! configuration of a version this plugin does not speak is 1, and a field that is missing or
//! has a bad value is 7 naming the field (its JSON path). Fields this plugin does not know are
//! ignored, as flannel's and Cilium's plugins ignore them (runtimes add their own).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest: what errors are labelled with when the input names no version we speak.
pub const LATEST: &str = "1.1.0";

/// Where the pods' allocations are kept unless the configuration says otherwise (one folder
/// per network below it).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kxdp/ipam";

/// The agent's metrics listener, which answers `/readyz`, unless the configuration says
/// otherwise.
pub const DEFAULT_AGENT_ADDRESS: &str = "127.0.0.1:9901";

/// How long `ADD` waits for the agent to serve the pod's veth, unless `servedTimeoutMs` says.
pub const DEFAULT_SERVED_TIMEOUT_MS: u64 = 1000;

/// The longest `servedTimeoutMs` taken.
pub const MAX_SERVED_TIMEOUT_MS: u64 = 60_000;

/// The spec's well-known error codes, and this plugin's own (100 and up).
pub mod code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field this plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or gone (`CHECK` of a namespace that no longer exists).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A `CNI_*` environment variable is missing or malformed.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// Reading or writing a file failed.
    pub const IO_FAILURE: u32 = 5;
    /// The input is not JSON.
    pub const DECODING_FAILURE: u32 = 6;
    /// A configuration field is missing or wrong.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// A condition that should clear up: the agent has not written the node's pod network
    /// yet, or every address is taken.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// `STATUS`: the plugin cannot serve `ADD` now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The kernel refused a change (netlink or ethtool).
    pub const KERNEL: u32 = 100;
    /// `ADD`: an interface of the requested name is already in the pod's namespace.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// `CHECK`: the pod's network differs from the `ADD` result.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error object: printed on stdout, and the plugin exits non-zero.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The spec's code ([`code`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// What is wrong, naming the variable, field or object.
    pub details: String,
}

impl CniError {
    /// An error with `code`, `msg` and `details`.
    pub fn new(code: u32, msg: &str, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object, labelled with `version`.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

fn env_error(details: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_ENVIRONMENT,
        "invalid environment variable",
        details,
    )
}

fn config_error(details: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_NETWORK_CONFIG,
        "invalid network configuration",
        details,
    )
}

/// What the runtime asks (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach it.
    Del,
    /// Verify an attachment.
    Check,
    /// Whether `ADD` can be served.
    Status,
    /// Release what no listed attachment holds.
    Gc,
    /// The versions spoken.
    Version,
}

/// The `CNI_*` environment, checked for the command it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (`ADD`, `DEL`, `CHECK`).
    pub container_id: String,
    /// `CNI_NETNS`: required for `ADD` and `CHECK`, optional for `DEL`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (`ADD`, `DEL`, `CHECK`).
    pub ifname: String,
    /// `CNI_ARGS`, as key and value.
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Read it from `get` (`std::env::var` in the binary).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(env_error(format!(
                    "CNI_COMMAND: {other:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"
                )))
            }
            None => return Err(env_error("CNI_COMMAND: not set")),
        };
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: BTreeMap::new(),
        };
        if !matches!(command, Command::Add | Command::Del | Command::Check) {
            return Ok(env);
        }
        let required = |name: &str| {
            get(name)
                .ok_or_else(|| env_error(format!("{name}: not set (required for {command:?})")))
        };
        env.container_id = required("CNI_CONTAINERID")?;
        check_container_id(&env.container_id)?;
        env.ifname = required("CNI_IFNAME")?;
        check_ifname(&env.ifname)?;
        env.netns = match command {
            Command::Del => get("CNI_NETNS").map(PathBuf::from),
            _ => Some(required("CNI_NETNS")?.into()),
        };
        if let Some(args) = get("CNI_ARGS") {
            env.args = parse_args(&args)?;
        }
        Ok(env)
    }

    /// The pod's Kubernetes namespace and name, when the runtime passed them (`CNI_ARGS`
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME`, as the kubelet's runtimes do).
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((
            self.args.get("K8S_POD_NAMESPACE")?.as_str(),
            self.args.get("K8S_POD_NAME")?.as_str(),
        ))
    }
}

fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(env_error(format!(
            "CNI_CONTAINERID: {id:?} must start with a letter or digit, followed by letters, \
             digits, '_', '.' or '-'"
        )))
    }
}

fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(env_error(format!(
            "CNI_IFNAME: {name:?} is not an interface name (at most 15 bytes, not . or .., \
             no '/', ':' or white space)"
        )))
    } else {
        Ok(())
    }
}

/// `FOO=bar;BAZ=1` as key and value; a pair without `=` is an error naming `CNI_ARGS`.
fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    text.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                env_error(format!("CNI_ARGS: {pair:?} is not KEY=VALUE (in {text:?})"))
            })?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// An attachment the runtime still holds (`GC`'s `cni.dev/valid-attachments`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// Its `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its `CNI_IFNAME`.
    pub ifname: String,
}

/// The `dns` section, passed through to the result.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers, in order.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    /// The local domain.
    pub domain: Option<String>,
    /// Search domains, in order.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The configuration as it arrives, before defaults and checks.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    name: Option<String>,
    mtu: Option<u32>,
    subnet_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    agent_address: Option<String>,
    served_timeout_ms: Option<u64>,
    dns: Option<Dns>,
    ipam: Option<Value>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// The plugin configuration, checked, with its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `cniVersion`: one of [`SUPPORTED_VERSIONS`].
    pub version: &'static str,
    /// `name`: the network's name; its allocations live in `data_dir/name`.
    pub name: String,
    /// `mtu`: the pods' MTU, else the one the agent wrote in the subnet file.
    pub mtu: Option<u16>,
    /// `subnetFile`: where the agent writes the node's pod network.
    pub subnet_file: PathBuf,
    /// `dataDir`: the allocation store's parent folder.
    pub data_dir: PathBuf,
    /// `agentAddress`: the agent's listener answering `/readyz` (`ADDRESS:PORT` or
    /// `unix:PATH`).
    pub agent_address: String,
    /// `servedTimeoutMs`: how long `ADD` waits for the agent to serve the pod's veth before
    /// it returns anyway.
    pub served_timeout: std::time::Duration,
    /// `dns`, returned in the result.
    pub dns: Option<Dns>,
    /// `prevResult` as given: the result of the plugins before this one (`ADD`, which
    /// extends it), or of the whole chain's `ADD` (`CHECK`, which reads it with
    /// [`Config::prev`]). `DEL` ignores it: a teardown must not fail on a result it does
    /// not need.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (`GC`).
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The configuration's `cniVersion`, if it is one this plugin speaks; for labelling errors.
pub fn version_of(input: &str) -> Option<&'static str> {
    let v: Value = serde_json::from_str(input).ok()?;
    let v = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.into_iter().find(|s| *s == v)
}

/// Whether version `a` is at least `b` (both among [`SUPPORTED_VERSIONS`]).
pub fn at_least(a: &str, b: &str) -> bool {
    let rank = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    rank(a) >= rank(b)
}

impl Config {
    /// `prevResult`, read as an `ADD` result; `None` when there is none.
    pub fn prev(&self) -> Result<Option<PrevResult>, CniError> {
        self.prev_result
            .clone()
            .map(|v| {
                serde_path_to_error::deserialize(v)
                    .map_err(|e| config_error(format!("prevResult.{}: {}", e.path(), e.inner())))
            })
            .transpose()
    }

    /// Read and check the configuration text from stdin.
    pub fn parse(input: &str) -> Result<Config, CniError> {
        let value: Value = serde_json::from_str(input).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "the network configuration is not JSON",
                format!("stdin: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                "the network configuration is not a JSON object",
                format!("stdin: {value}"),
            ));
        }
        let version = match value.get("cniVersion") {
            None => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "incompatible CNI version",
                    format!("cniVersion: missing; this plugin speaks {SUPPORTED_VERSIONS:?}"),
                ))
            }
            Some(v) => SUPPORTED_VERSIONS
                .into_iter()
                .find(|s| v.as_str() == Some(s))
                .ok_or_else(|| {
                    CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        "incompatible CNI version",
                        format!("cniVersion: {v} is not one of {SUPPORTED_VERSIONS:?}"),
                    )
                })?,
        };
        let raw: RawConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| config_error(format!("{}: {}", e.path(), e.inner())))?;
        if let Some(ipam) = raw.ipam {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field",
                format!(
                    "ipam: {ipam}: kxdp-cni assigns addresses itself, from the node's podCIDR \
                     in subnetFile; remove the ipam section"
                ),
            ));
        }
        let name = raw
            .name
            .ok_or_else(|| config_error("name: missing (the network's name)"))?;
        let mut chars = name.chars();
        let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(config_error(format!(
                "name: {name:?} must start with a letter or digit, followed by letters, digits, \
                 '_', '.' or '-'"
            )));
        }
        let mtu = raw
            .mtu
            .map(|m| {
                u16::try_from(m)
                    .ok()
                    .filter(|m| *m >= 576)
                    .ok_or_else(|| config_error(format!("mtu: {m} is not in 576..=65535")))
            })
            .transpose()?;
        let agent_address = raw
            .agent_address
            .unwrap_or_else(|| DEFAULT_AGENT_ADDRESS.into());
        crate::agent::AgentAddress::parse(&agent_address)
            .map_err(|e| config_error(format!("agentAddress: {e}")))?;
        let served_timeout_ms = raw.served_timeout_ms.unwrap_or(DEFAULT_SERVED_TIMEOUT_MS);
        if served_timeout_ms > MAX_SERVED_TIMEOUT_MS {
            return Err(config_error(format!(
                "servedTimeoutMs: {served_timeout_ms} is over {MAX_SERVED_TIMEOUT_MS} (ADD \
                 would hold the runtime that long when the agent is slow)"
            )));
        }
        let prev_result = raw.prev_result;
        Ok(Config {
            version,
            name,
            mtu,
            subnet_file: raw
                .subnet_file
                .unwrap_or_else(|| kxdp_control::node_subnet::DEFAULT_PATH.into()),
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            agent_address,
            served_timeout: std::time::Duration::from_millis(served_timeout_ms),
            dns: raw.dns,
            prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }
}

/// What `CHECK` reads of the `ADD` result it is given.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PrevResult {
    /// The interfaces.
    #[serde(default)]
    pub interfaces: Vec<ResultInterface>,
    /// The addresses.
    #[serde(default)]
    pub ips: Vec<ResultIp>,
    /// The routes.
    #[serde(default)]
    pub routes: Vec<ResultRoute>,
}

/// An interface of a result.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ResultInterface {
    /// Its name.
    pub name: String,
    /// Its MAC, as text.
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace it is in; none for the node's.
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// An address of a result.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResultIp {
    /// The address and prefix.
    pub address: ipnet::IpNet,
    /// The gateway.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into the interfaces.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// A route of a result.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResultRoute {
    /// The destination.
    pub dst: ipnet::IpNet,
    /// The next hop.
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

/// What `ADD` did, for the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The node's end of the veth.
    pub host_ifname: String,
    /// Its MAC.
    pub host_mac: String,
    /// The pod's end (`CNI_IFNAME`).
    pub ifname: String,
    /// Its MAC.
    pub mac: String,
    /// Both ends' MTU.
    pub mtu: u16,
    /// `CNI_NETNS`.
    pub sandbox: String,
    /// The pod's address, with the node subnet's prefix.
    pub address: Ipv4Net,
    /// The pods' gateway.
    pub gateway: Ipv4Addr,
}

/// The `ADD` result in `version`'s shape: 1.1.0 gives interfaces their MTU; 0.4.0 gives
/// each address its IP version.
pub fn add_result(version: &str, a: &Attached, dns: Option<&Dns>) -> Value {
    let mtu11 = at_least(version, "1.1.0");
    let mut host = json!({"name": a.host_ifname, "mac": a.host_mac});
    let mut pod = json!({"name": a.ifname, "mac": a.mac, "sandbox": a.sandbox});
    if mtu11 {
        host["mtu"] = json!(a.mtu);
        pod["mtu"] = json!(a.mtu);
    }
    let mut ip = json!({
        "address": a.address.to_string(),
        "gateway": a.gateway.to_string(),
        "interface": 1,
    });
    if !at_least(version, "1.0.0") {
        ip["version"] = json!("4");
    }
    let mut result = json!({
        "cniVersion": version,
        "interfaces": [host, pod],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": a.gateway.to_string()}],
    });
    if let Some(d) = dns {
        let mut dns = json!({});
        if !d.nameservers.is_empty() {
            dns["nameservers"] = json!(d.nameservers);
        }
        if let Some(domain) = &d.domain {
            dns["domain"] = json!(domain);
        }
        if !d.search.is_empty() {
            dns["search"] = json!(d.search);
        }
        if !d.options.is_empty() {
            dns["options"] = json!(d.options);
        }
        result["dns"] = dns;
    }
    result
}

/// `ours` (an [`add_result`]) after the result of the plugins before this one in its chain,
/// as the spec asks of a chained plugin: their interfaces, addresses and routes first, then
/// ours, our addresses' `interface` indexes moved past theirs; our `dns` where we have one,
/// else theirs.
pub fn chained(prev: Option<&Value>, mut ours: Value) -> Value {
    let Some(prev) = prev else {
        return ours;
    };
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned();
    let theirs = list(prev, "interfaces").unwrap_or_default();
    let shift = theirs.len() as u64;
    let mut interfaces = theirs;
    interfaces.extend(list(&ours, "interfaces").unwrap_or_default());
    let mut ips = list(prev, "ips").unwrap_or_default();
    ips.extend(
        list(&ours, "ips")
            .unwrap_or_default()
            .into_iter()
            .map(|mut ip| {
                if let Some(i) = ip.get("interface").and_then(Value::as_u64) {
                    ip["interface"] = json!(i + shift);
                }
                ip
            }),
    );
    let mut routes = list(prev, "routes").unwrap_or_default();
    routes.extend(list(&ours, "routes").unwrap_or_default());
    ours["interfaces"] = json!(interfaces);
    ours["ips"] = json!(ips);
    ours["routes"] = json!(routes);
    if ours.get("dns").is_none() {
        if let Some(dns) = prev.get("dns") {
            ours["dns"] = dns.clone();
        }
    }
    ours
}

/// The `VERSION` result.
pub fn version_result(input: &str) -> Value {
    let asked = serde_json::from_str::<Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| LATEST.into());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_environment_is_checked_for_the_command() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ];
        let e = env(&add).unwrap();
        assert_eq!(e.pod(), Some(("default", "web-0")));
        let missing = |name: &str| {
            let vars: Vec<_> = add.iter().copied().filter(|(k, _)| *k != name).collect();
            env(&vars).unwrap_err()
        };
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let e = missing(var);
            assert_eq!(e.code, code::INVALID_ENVIRONMENT);
            assert!(e.details.starts_with(var), "{e}");
        }
        // DEL does without the namespace; VERSION without anything else.
        let del: Vec<_> = add
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(env(&del).unwrap().netns, None);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        for (var, bad) in [
            ("CNI_COMMAND", "FROB"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "sixteen-bytes-xx"),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ] {
            let vars: Vec<_> = add
                .iter()
                .map(|&(k, v)| if k == var { (k, bad) } else { (k, v) })
                .collect();
            let e = env(&vars).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENVIRONMENT, "{var}={bad}");
            assert!(e.details.starts_with(var), "{e}");
        }
    }

    #[test]
    fn configurations_are_checked_field_by_field() {
        let ok = r#"{"cniVersion":"1.1.0","name":"kxdp","type":"kxdp-cni","extra":1}"#;
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.version, "1.1.0");
        assert_eq!(c.subnet_file, PathBuf::from("/run/kxdp/subnet.env"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/kxdp/ipam"));
        assert_eq!(c.agent_address, "127.0.0.1:9901");
        assert_eq!(c.served_timeout, std::time::Duration::from_secs(1));
        let c = Config::parse(r#"{"cniVersion":"1.1.0","name":"n","servedTimeoutMs":0}"#).unwrap();
        assert_eq!(c.served_timeout, std::time::Duration::ZERO);
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","name":"n","servedTimeoutMs":60001}"#,
                code::INVALID_NETWORK_CONFIG,
                "servedTimeoutMs",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","servedTimeoutMs":-1}"#,
                code::INVALID_NETWORK_CONFIG,
                "servedTimeoutMs",
            ),
            ("{", code::DECODING_FAILURE, "stdin"),
            ("[]", code::DECODING_FAILURE, "stdin"),
            (r#"{"name":"n"}"#, code::INCOMPATIBLE_VERSION, "cniVersion"),
            (
                r#"{"cniVersion":"0.3.1","name":"n"}"#,
                code::INCOMPATIBLE_VERSION,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0"}"#,
                code::INVALID_NETWORK_CONFIG,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b"}"#,
                code::INVALID_NETWORK_CONFIG,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#,
                code::INVALID_NETWORK_CONFIG,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":70000}"#,
                code::INVALID_NETWORK_CONFIG,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","dns":{"nameservers":["x"]}}"#,
                code::INVALID_NETWORK_CONFIG,
                "dns.nameservers[0]",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","agentAddress":"nowhere"}"#,
                code::INVALID_NETWORK_CONFIG,
                "agentAddress",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
                code::UNSUPPORTED_FIELD,
                "ipam",
            ),
        ];
        for (input, want, field) in cases {
            let e = Config::parse(input).unwrap_err();
            assert_eq!(e.code, want, "{input}: {e}");
            assert!(e.details.starts_with(field), "{input}: {e}");
        }
        // A prevResult is read only where it is needed (CHECK), naming the field there.
        let c = Config::parse(
            r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
        )
        .expect("DEL and ADD take any prevResult");
        let e = c.prev().unwrap_err();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        assert!(e.details.starts_with("prevResult.ips[0].address"), "{e}");
    }

    #[test]
    fn an_add_result_follows_the_chain_before_it() {
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "other0"}],
            "ips": [{"address": "192.0.2.5/24", "interface": 0}],
            "routes": [{"dst": "192.0.2.0/24"}],
            "dns": {"nameservers": ["192.0.2.53"]},
        });
        let ours = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "kxabc"}, {"name": "eth0"}],
            "ips": [{"address": "10.244.1.7/24", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
        });
        let r = chained(Some(&prev), ours.clone());
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["interfaces"][0]["name"], "other0");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["ips"][1]["address"], "10.244.1.7/24");
        assert_eq!(
            r["ips"][1]["interface"], 2,
            "eth0 is now the third interface"
        );
        assert_eq!(r["routes"].as_array().unwrap().len(), 2);
        assert_eq!(r["dns"]["nameservers"][0], "192.0.2.53");
        assert_eq!(chained(None, ours.clone()), ours);
    }

    fn attached() -> Attached {
        Attached {
            host_ifname: "kx0123456789ab".into(),
            host_mac: "02:00:00:00:00:01".into(),
            ifname: "eth0".into(),
            mac: "0a:58:0a:f4:01:02".into(),
            mtu: 1450,
            sandbox: "/run/netns/p".into(),
            address: "10.244.1.2/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 1, 1),
        }
    }

    #[test]
    fn results_take_their_version_s_shape() {
        let dns = Dns {
            nameservers: vec!["10.96.0.10".parse().unwrap()],
            search: vec!["svc.cluster.local".into()],
            ..Dns::default()
        };
        let r = add_result("1.1.0", &attached(), Some(&dns));
        assert_eq!(r["interfaces"][1]["mtu"], 1450);
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["gw"], "10.244.1.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        let r = add_result("1.0.0", &attached(), None);
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert!(r.get("dns").is_none());
        let r = add_result("0.4.0", &attached(), None);
        assert_eq!(r["ips"][0]["version"], "4");
        // The result reads back as CHECK's prevResult.
        let prev: PrevResult = serde_json::from_value(r).unwrap();
        assert_eq!(prev.ips[0].address, "10.244.1.2/24".parse().unwrap());
        assert_eq!(prev.interfaces[1].name, "eth0");
    }

    #[test]
    fn version_echoes_the_asked_version() {
        let v = version_result(r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        assert_eq!(version_result("")["cniVersion"], "1.1.0");
        assert!(at_least("1.1.0", "1.0.0") && !at_least("0.4.0", "1.1.0"));
    }
}
