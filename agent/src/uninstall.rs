//! `kxdp uninstall`: remove what kxdp put on a node, once its agent has stopped.
//!
//! What it removes, each only if it is there:
//! - kxdp's XDP program from every interface of the namespace (an agent that stops leaves it,
//!   dropping the dataplane's traffic until its successor takes over);
//! - the state directory (`--state-dir`: conntrack kept for the next agent);
//! - every host veth pair the agent created (marked with [`host_interface::ALIAS`]; a pair
//!   someone else made is left), and with it the kernel's routes to its kernel end;
//! - the subnet file (`--subnet-file`);
//! - with `--cni-conf-dir`, kxdp's CNI configuration ([`CNI_CONFLIST`]) in that folder, and
//!   with `--cni-bin-dir`, the plugin ([`CNI_PLUGIN`]) in that one, with the temporary files an
//!   interrupted install leaves (`.NAME.new`): files of those names only, nothing else there;
//! - with `--cni-data-dir`, the plugin's address store of the network named `kxdp` (the
//!   folder `kxdp` in it, as the plugin keeps one folder per network name).
//!
//! It refuses, naming the reason and changing nothing, while an agent answers on the debug
//! API (`--admin`): a running agent would make the pair again and serve pods through it; and
//! while pods still have veths on the node (`kx` and 12 hex digits), which would lose the
//! node's own stack. `--force` removes anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin::{self, AdminAddr};
use crate::host_interface;
use crate::nodefacts::NodeNet;

/// kxdp's CNI configuration's file name, as the DaemonSet installs it.
pub const CNI_CONFLIST: &str = "10-kxdp.conflist";

/// The CNI plugin's file name.
pub const CNI_PLUGIN: &str = "kxdp-cni";

/// The network name kxdp's configuration gives its pods, whose address store
/// `--cni-data-dir` removes.
pub const CNI_NETWORK: &str = "kxdp";

/// How long a running agent has to answer before the node counts as free of one.
const AGENT_PROBE: Duration = Duration::from_secs(2);

/// `kxdp uninstall`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct UninstallArgs {
    /// The agent's debug API (its --admin), asked whether an agent still runs.
    #[arg(long, env = "KXDP_ADMIN", default_value = admin::DEFAULT_ADMIN)]
    pub admin: AdminAddr,
    /// The agent's state directory (its --state-dir).
    #[arg(long, value_name = "DIR", default_value = crate::settings::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The agent's subnet file (its --subnet-file).
    #[arg(long, value_name = "FILE", default_value = kxdp_control::node_subnet::DEFAULT_PATH)]
    pub subnet_file: PathBuf,
    /// Remove kxdp's CNI configuration (10-kxdp.conflist) from this folder (/etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Remove the CNI plugin (kxdp-cni) from this folder (/opt/cni/bin).
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// Remove the CNI plugin's addresses of the network kxdp (the folder kxdp in this one: the
    /// plugin's dataDir, /var/lib/kxdp/ipam).
    #[arg(long, value_name = "DIR")]
    pub cni_data_dir: Option<PathBuf>,
    /// Remove even while an agent answers, or pods still have veths on the node.
    #[arg(long)]
    pub force: bool,
}

/// Remove what `args` names; the lines saying what was removed, or why nothing was.
pub fn uninstall(args: &UninstallArgs) -> Result<String, String> {
    let mut report = Vec::new();
    if admin::client::get_within(&args.admin, "/healthz", AGENT_PROBE).is_ok() {
        if !args.force {
            return Err(format!(
                "an agent answers on {} (--admin): stop it first (on a cluster, kubectl delete \
                 the kxdp DaemonSet), or remove anyway with --force",
                args.admin
            ));
        }
        report.push(format!(
            "an agent answers on {}: removing anyway (--force)",
            args.admin
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the netlink runtime: {e}"))?;
    let removed = runtime.block_on(async {
        let net = NodeNet::connect().map_err(|e| e.to_string())?;
        let pair = host_interface::owned(&net)
            .await
            .map_err(|e| e.to_string())?;
        let pods: Vec<String> = net
            .links()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| l.name)
            .filter(|n| kxdp_control::compile::is_pod_interface_name(n))
            .collect();
        if !pair.is_empty() && !pods.is_empty() {
            let pair: Vec<&str> = pair.iter().map(|l| l.name.as_str()).collect();
            if !args.force {
                return Err(format!(
                    "pods still have veths on this node ({}): removing the host pair ({}) \
                     would cut the node's own stack off them; drain the node first, or remove \
                     anyway with --force",
                    pods.join(", "),
                    pair.join(", ")
                ));
            }
            report.push(format!(
                "pods still have veths on this node ({}): removing anyway (--force)",
                pods.join(", ")
            ));
        }
        let recorded = kxdp_xdp::state::recorded_programs(&args.state_dir);
        let mut detached = Vec::new();
        for link in net.links().await.map_err(|e| e.to_string())? {
            match kxdp_xdp::detach_lasting(link.index, &recorded) {
                Ok(true) => detached.push(link.name),
                Ok(false) => {}
                Err(e) => return Err(format!("{}: {e}", link.name)),
            }
        }
        report.push(if detached.is_empty() {
            "XDP program: on no interface".to_owned()
        } else {
            format!("XDP program: detached from {}", detached.join(", "))
        });
        host_interface::remove(&net)
            .await
            .map_err(|e| e.to_string())
    })?;
    report.push(if removed.is_empty() {
        "host veth pair: none of kxdp's on this node".to_owned()
    } else {
        format!(
            "host veth pair: removed {} (and the kernel's routes to it)",
            removed.join(", ")
        )
    });
    report.push(remove_file(&args.subnet_file)?);
    report.push(match std::fs::remove_dir_all(&args.state_dir) {
        Ok(()) => format!("{}: removed", args.state_dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{}: not there", args.state_dir.display())
        }
        Err(e) => return Err(format!("removing {}: {e}", args.state_dir.display())),
    });
    if let Some(dir) = &args.cni_conf_dir {
        report.extend(remove_installed(dir, CNI_CONFLIST)?);
    }
    if let Some(dir) = &args.cni_bin_dir {
        report.extend(remove_installed(dir, CNI_PLUGIN)?);
    }
    if let Some(dir) = &args.cni_data_dir {
        let store = dir.join(CNI_NETWORK);
        report.push(match std::fs::remove_dir_all(&store) {
            Ok(()) => format!("{}: removed", store.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("{}: not there", store.display())
            }
            Err(e) => return Err(format!("removing {}: {e}", store.display())),
        });
    }
    Ok(report.join("\n"))
}

/// Remove the file `name` from `dir`, and the temporary `.NAME.new` an interrupted install may
/// have left; a line for the file.
fn remove_installed(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let leftover = dir.join(format!(".{name}.new"));
    if leftover.exists() {
        remove_file(&leftover)?;
    }
    remove_file(&dir.join(name)).map(Some)
}

/// Remove file `path`; what happened, as a line.
fn remove_file(path: &Path) -> Result<String, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(format!("{}: removed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("{}: not there", path.display()))
        }
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kxdp_s_files_are_removed_from_the_cni_folders() {
        let dir = std::env::temp_dir().join(format!("kxdp-uninstall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [CNI_CONFLIST, ".10-kxdp.conflist.new", "20-other.conflist"] {
            std::fs::write(dir.join(name), "{}").unwrap();
        }
        let line = remove_installed(&dir, CNI_CONFLIST).unwrap().unwrap();
        assert!(line.ends_with("10-kxdp.conflist: removed"), "{line}");
        assert!(!dir.join(CNI_CONFLIST).exists());
        assert!(!dir.join(".10-kxdp.conflist.new").exists());
        assert!(dir.join("20-other.conflist").exists());
        let again = remove_installed(&dir, CNI_CONFLIST).unwrap().unwrap();
        assert!(again.ends_with("not there"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
