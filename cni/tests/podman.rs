//! `kxdp-cni` under a real CNI client: Debian's podman 4.3, whose CNI backend runs plugins
//! through libcni, attaches a container with it and detaches it on `podman rm`.
//!
//! Podman runs in a node namespace the test creates (`nsenter --net=`), so the veth it has
//! the plugin make lands there; its configuration (`CONTAINERS_CONF`: the CNI backend, the
//! test's plugin folder and network configuration folder), storage (`--root`, `--runroot`,
//! `--tmpdir`, driver vfs) and the container's root file system (host binaries and their
//! libraries, `--rootfs`: no image can be pulled here) are in the test's folder. Every podman
//! runs inside one private mount namespace (a holder process's), where the test's folders
//! are mounted over what podman and its libraries would otherwise write on the machine:
//! `/var/lib` (libcni's result cache, `/var/lib/cni`, which podman 4.3 cannot move) and
//! `/run` (crun's state and podman's locks), keeping `/run/netns`, where podman makes the
//! container's namespace.
//!
//! What this machine's container runtime needs, and why:
//! - `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`: podman asks crun to raise both
//!   limits, which fails in a container without CAP_SYS_RESOURCE ("crun: setrlimit
//!   `RLIMIT_NOFILE`: Operation not permitted"); lowering them is allowed;
//! - `--cgroups disabled` and `--cgroup-manager cgroupfs` (no systemd), and, on a hybrid
//!   cgroup host (v1 controllers with a v2 tree at /sys/fs/cgroup/unified), that v2 tree
//!   unmounted in the private mount namespace: crun refuses hybrid mode even with cgroups
//!   disabled ("crun: cgroups in hybrid mode not supported, drop all controllers from
//!   cgroupv2").
//!
//! Podman 4.3's libcni (1.1) knows result versions up to 1.0.0 ("unsupported CNI result
//! version \"1.1.0\""), so the network list says `cniVersion` 1.0.0; it never sends CHECK,
//! STATUS or GC (libcni 1.1 has no STATUS or GC, and podman calls no CHECK): the test runs
//! the plugin's CHECK itself with the result libcni cached for podman.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kxdp_control::compile::{pod_interface_name, pod_mac};
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{ip, skip_unless_privileged, Testbed};
use serde_json::{json, Value};

/// The plugin binary cargo built for this test.
const BIN: &str = env!("CARGO_BIN_EXE_kxdp-cni");

/// The folder, the node namespace, the mount namespace holder; dropped, podman's containers,
/// the holder, the namespace and the folder are removed.
struct Podman {
    dir: PathBuf,
    node: String,
    holder: Child,
}

impl Podman {
    fn new() -> Podman {
        let prefix = format!("{}-podman", Testbed::process_prefix());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "bin", "net.d", "ipam", "storage", "runroot", "tmp", "var-lib", "run",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let node = format!("{prefix}-node");
        ip(None, &["netns", "add", &node]).unwrap();
        ip(Some(&node), &["link", "set", "lo", "up"]).unwrap();

        // The plugin, behind a wrapper that logs the commands libcni sends.
        let wrapper = dir.join("bin/kxdp-cni");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$CNI_COMMAND\" >> {}\nexec {BIN} \"$@\"\n",
                dir.join("calls").display()
            ),
        )
        .unwrap();
        chmod_x(&wrapper);
        std::fs::write(
            dir.join("subnet.env"),
            "KXDP_NETWORK=10.244.0.0/16\nKXDP_SUBNET=10.244.1.0/24\nKXDP_GATEWAY=10.244.1.1\n\
             KXDP_MTU=1450\n",
        )
        .unwrap();
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "kxdp",
            "plugins": [{
                "type": "kxdp-cni",
                "subnetFile": dir.join("subnet.env"),
                "dataDir": dir.join("ipam"),
                "agentAddress": format!("unix:{}", dir.join("agent.sock").display()),
            }],
        });
        std::fs::write(dir.join("net.d/kxdp.conflist"), conflist.to_string()).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                 network_config_dir = \"{}\"\n",
                dir.join("bin").display(),
                dir.join("net.d").display()
            ),
        )
        .unwrap();
        make_rootfs(&dir.join("rootfs"));

        // The private mount namespace, held by a shell that says when it is set up.
        let setup = format!(
            "set -e\n\
             if mountpoint -q /sys/fs/cgroup/unified; then umount -n /sys/fs/cgroup/unified; fi\n\
             mount -n --bind {d}/var-lib /var/lib\n\
             mkdir -p {d}/run/netns\n\
             mount -n --bind /run/netns {d}/run/netns\n\
             mount -n --rbind {d}/run /run\n\
             echo ready\n\
             exec sleep 300\n",
            d = dir.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &setup])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare runs (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pm = Podman { dir, node, holder };
        assert_eq!(line.trim(), "ready", "the mount namespace was not set up");
        pm
    }

    /// `nsenter` into the holder's mount namespace and the node's network namespace.
    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg(format!("--net=/run/netns/{}", self.node));
        c
    }

    /// Run podman with `args` on the test's configuration and storage: stdout, or a panic
    /// with what it said.
    fn podman(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_podman(args);
        assert!(ok, "podman {args:?}: {stderr}");
        stdout
    }

    fn try_podman(&self, args: &[&str]) -> (bool, String, String) {
        let d = &self.dir;
        let out = self
            .nsenter()
            .arg("env")
            .arg(format!(
                "CONTAINERS_CONF={}",
                d.join("containers.conf").display()
            ))
            .arg("podman")
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .args(args)
            .output()
            .expect("podman runs (scripts/install-deps.sh installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The commands the plugin was run with, in order.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The addresses the plugin's store holds.
    fn allocations(&self) -> Vec<Ipv4Addr> {
        std::fs::read_dir(self.dir.join("ipam/kxdp"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `kx` links of the node's namespace.
    fn node_veths(&self) -> Vec<String> {
        let out = ip(Some(&self.node), &["-o", "link", "show"]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_owned()))
            .filter(|l| l.starts_with("kx"))
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.try_podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A root file system of the machine's `sleep`, `cat` and `ip` with the libraries `ldd`
/// names, and the folders the runtime mounts over.
fn make_rootfs(root: &Path) {
    for bin in ["/bin/sleep", "/bin/cat", "/sbin/ip"] {
        let ldd = Command::new("ldd").arg(bin).output().expect("ldd runs");
        let libs = String::from_utf8_lossy(&ldd.stdout).into_owned();
        let files = std::iter::once(bin.to_owned()).chain(
            libs.split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(str::to_owned),
        );
        for file in files {
            let to = root.join(file.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&file, &to).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    for d in ["proc", "sys", "dev", "etc", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

#[test]
fn podman_attaches_a_container_with_the_plugin_and_detaches_it_on_rm() {
    if skip_unless_privileged("podman_attaches_a_container_with_the_plugin_and_detaches_it_on_rm") {
        return;
    }
    let pm = Podman::new();

    // Podman reads kxdp's network list from the test's folder.
    let names = pm.podman(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(names.lines().any(|n| n == "kxdp"), "{names}");
    let inspect: Value = serde_json::from_str(&pm.podman(&["network", "inspect", "kxdp"])).unwrap();
    assert_eq!(inspect[0]["driver"], "kxdp-cni", "{inspect}");

    // `podman run`: libcni runs the plugin's ADD for the container's namespace.
    let rootfs = pm.dir.join("rootfs").display().to_string();
    let id = pm
        .podman(&[
            "run",
            "--detach",
            "--name",
            "kxdp-c1",
            "--network",
            "kxdp",
            "--cgroups",
            "disabled",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--rootfs",
            &rootfs,
            "/bin/sleep",
            "120",
        ])
        .trim()
        .to_owned();
    assert!(pm.calls().iter().any(|c| c == "ADD"), "{:?}", pm.calls());
    let ip4 = Ipv4Addr::new(10, 244, 1, 2);
    assert_eq!(
        pm.allocations(),
        [ip4],
        "the first address of the node's subnet"
    );
    // No Kubernetes pod in CNI_ARGS: the node's end is named for the container ID.
    let host = pod_interface_name("", &id);
    assert_eq!(pm.node_veths(), std::slice::from_ref(&host));
    // And it declares the container to the agent by its ID, no namespace.
    let shown = ip(Some(&pm.node), &["-o", "link", "show", &host]).unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("alias kxdp-pod /{id} 10.244.1.2")),
        "{shown}"
    );
    let mac = mac_text(pod_mac(ip4));
    let net: Value = serde_json::from_str(&pm.podman(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks.kxdp}}",
        "kxdp-c1",
    ]))
    .unwrap();
    assert_eq!(net["IPAddress"], "10.244.1.2", "{net}");
    assert_eq!(net["IPPrefixLen"], 24, "{net}");
    assert_eq!(net["Gateway"], "10.244.1.1", "{net}");
    assert_eq!(net["MacAddress"], mac.as_str(), "{net}");

    // Inside the container (`podman exec`): the pod's end as the plugin made it.
    let eth0 = pm.podman(&["exec", "kxdp-c1", "/sbin/ip", "-o", "addr", "show", "eth0"]);
    assert!(eth0.contains("inet 10.244.1.2/24"), "{eth0}");
    let link = pm.podman(&["exec", "kxdp-c1", "/sbin/ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450") && link.contains(&mac), "{link}");
    let routes = pm.podman(&["exec", "kxdp-c1", "/sbin/ip", "route"]);
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );

    // Podman sends no CHECK; the plugin's CHECK passes on the result libcni cached for it.
    let cached: Value = serde_json::from_str(
        &std::fs::read_to_string(pm.dir.join(format!("var-lib/cni/results/kxdp-{id}-eth0")))
            .expect("libcni cached the ADD result under the test's /var/lib"),
    )
    .unwrap();
    let sandbox = pm
        .podman(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            "kxdp-c1",
        ])
        .trim()
        .to_owned();
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(pm.dir.join("net.d/kxdp.conflist")).unwrap())
            .unwrap();
    let mut config = list["plugins"][0].clone();
    config["cniVersion"] = list["cniVersion"].clone();
    config["name"] = list["name"].clone();
    config["prevResult"] = cached["result"].clone();
    let mut check = pm
        .nsenter()
        .arg(BIN)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs([
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", sandbox.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "CHECK on podman's cached result: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pm.calls().iter().any(|c| c == "CHECK"), "{:?}", pm.calls());

    // `podman rm`: libcni runs DEL; the address and the veth are gone.
    pm.podman(&["rm", "--force", "--time", "0", "kxdp-c1"]);
    assert_eq!(
        pm.calls().last().map(String::as_str),
        Some("DEL"),
        "{:?}",
        pm.calls()
    );
    assert_eq!(pm.allocations(), Vec::<Ipv4Addr>::new());
    assert_eq!(pm.node_veths(), Vec::<String>::new());
}
