//! Pods attached by the `kxdp-cni` binary exactly as a container runtime attaches them: the
//! plugin run inside the node's network namespace (`nsenter --net=`, which, unlike
//! `ip netns exec`, leaves /sys as it is) with only the `CNI_*` environment a runtime sets and
//! the network configuration on stdin, its stdout read as a result or a CNI error object.
//!
//! [`run_plugin`] is one raw invocation (the plugin's own tests drive every command and
//! environment through it); [`Plugin`] is a node's plugin with its configuration, for
//! [`Plugin::add`] and [`Plugin::del`] of a pod named `default/<name>` with `eth0` in a
//! namespace under `/run/netns`. The configuration names the agent's subnet file and an
//! address store in a folder the caller owns; nothing is read from or written to the machine's
//! `/etc/cni/net.d` or `/opt/cni/bin`.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::cluster::built_binary;

/// The `kxdp-cni` binary: `KXDP_CNI_BIN`, or beside the running executable (or its parent
/// directory, for test executables under `deps/`).
pub fn cni_bin() -> Result<PathBuf, String> {
    built_binary(
        "kxdp-cni",
        "KXDP_CNI_BIN",
        "cargo build -p kxdp-cni --bin kxdp-cni",
    )
}

/// Run plugin `bin` inside network namespace `node` (a name under `/run/netns`), with `env`
/// its only `CNI_*` variables (`CNI_PATH` a folder that does not exist, unless `env` sets
/// it) and `stdin` its input: whether it succeeded, its stdout and its stderr.
pub fn run_plugin(
    bin: &Path,
    node: &str,
    env: &[(&str, &str)],
    stdin: &str,
) -> Result<(bool, String, String), String> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .arg(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", "/nonexistent/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nsenter (util-linux) for {}: {e}", bin.display()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("{}: writing its configuration: {e}", bin.display()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The plugin of one node: its binary, the node's namespace and its network configuration.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// The `kxdp-cni` binary.
    pub bin: PathBuf,
    /// The node's network namespace (a name under `/run/netns`).
    pub node: String,
    /// The network configuration (`cniVersion` 1.1.0, network `kxdp`).
    pub config: Value,
}

/// What an `ADD` attached.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// The container ID it was attached as.
    pub container_id: String,
    /// The pod's namespace (`CNI_NETNS`).
    pub netns: String,
    /// The pod's address (the result's first).
    pub ip: Ipv4Addr,
    /// The whole `ADD` result, the `prevResult` of a later `CHECK` or `DEL`.
    pub result: Value,
}

impl Plugin {
    /// The plugin of node namespace `node`, reading the agent's `subnet_file`, keeping its
    /// addresses under `data_dir`, asking the agent at `agent_address` for `STATUS`.
    pub fn new(
        bin: PathBuf,
        node: &str,
        subnet_file: &Path,
        data_dir: &Path,
        agent_address: &str,
    ) -> Plugin {
        Plugin {
            bin,
            node: node.to_owned(),
            config: json!({
                "cniVersion": "1.1.0",
                "name": "kxdp",
                "type": "kxdp-cni",
                "subnetFile": subnet_file,
                "dataDir": data_dir,
                "agentAddress": agent_address,
            }),
        }
    }

    /// Run `command` for pod `default/<pod>` as container `container_id` with `eth0` in
    /// `netns`, `config` on stdin: the parsed stdout (null when empty) on success, else why.
    fn call(
        &self,
        command: &str,
        pod: &str,
        container_id: &str,
        netns: &str,
        config: &Value,
    ) -> Result<Value, String> {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args.as_str()),
        ];
        let (ok, stdout, stderr) = run_plugin(&self.bin, &self.node, &env, &config.to_string())?;
        let parsed = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .map_err(|e| format!("{command} of pod {pod}: stdout {stdout:?}: {e}"))?
        };
        if ok {
            Ok(parsed)
        } else {
            Err(format!(
                "{command} of pod {pod} on {}: {parsed} ({})",
                self.node,
                stderr.trim()
            ))
        }
    }

    /// `ADD` pod `default/<pod>` (container ID `<pod>-sandbox`) in namespace `netns` (a name
    /// under `/run/netns`).
    pub fn add(&self, pod: &str, netns: &str) -> Result<Attachment, String> {
        let container_id = format!("{pod}-sandbox");
        let path = format!("/run/netns/{netns}");
        let result = self.call("ADD", pod, &container_id, &path, &self.config)?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next()?.parse().ok())
            .ok_or_else(|| format!("ADD of pod {pod}: no IPv4 address in {result}"))?;
        Ok(Attachment {
            container_id,
            netns: path,
            ip,
            result,
        })
    }

    /// `DEL` pod `default/<pod>`'s attachment, with its `ADD` result as `prevResult`.
    pub fn del(&self, pod: &str, attachment: &Attachment) -> Result<(), String> {
        let mut config = self.config.clone();
        config["prevResult"] = attachment.result.clone();
        self.call(
            "DEL",
            pod,
            &attachment.container_id,
            &attachment.netns,
            &config,
        )
        .map(drop)
    }
}
