//! The node's host veth pair as `kxdp agent --host-interface` makes, adopts and refuses it, and
//! as `kxdp uninstall` removes it: real agents in the node namespaces of a two-node cluster
//! (node-a's), read with `ip` and `ethtool` there.

use std::time::Duration;

use kxdp_agent::host_interface::{ALIAS, KERNEL_END};
use kxdp_tests::cluster::{eventually, AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::{self, skip_unless_privileged};

/// `ip <args>` in `ns`: its output, or the error.
fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    testbed::ip(Some(ns), args)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| e.to_string())
}

/// The index of link `dev` in `ns` (`ip -o link`: "7: host0@kxdp0: ...").
fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = ip(ns, &["-o", "link", "show", "dev", dev]).unwrap_or_else(|e| panic!("{e}"));
    out.split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no index in {out:?}"))
}

/// `ethtool -k`'s tx-checksumming line for `dev` in `ns`.
fn tx_checksumming(ns: &str, dev: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-k", dev])
        .output()
        .expect("ethtool runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tx-checksumming:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The main table's route for `cidr` in `ns`, as `ip route` prints it.
fn route(ns: &str, cidr: &str) -> String {
    ip(ns, &["route", "show", "exact", cidr])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned()
}

/// Check that node `ns` has kxdp's pair `host0`/`kxdp0`: veths, marked, up at `mtu`, transmit
/// checksum offload as the kernel makes it (on), the cluster and service CIDRs routed to the
/// kernel's end.
fn assert_pair(ns: &str, mtu: u32) {
    for dev in ["host0", KERNEL_END] {
        let details = ip(ns, &["-d", "link", "show", "dev", dev]).unwrap_or_else(|e| panic!("{e}"));
        assert!(details.contains("veth"), "{dev}: {details}");
        assert!(
            details.contains(&format!("alias {ALIAS}")),
            "{dev}: {details}"
        );
        assert!(details.contains(",UP"), "{dev}: {details}");
        assert!(details.contains(&format!("mtu {mtu} ")), "{dev}: {details}");
        assert_eq!(tx_checksumming(ns, dev), "tx-checksumming: on", "{dev}");
    }
    for cidr in ["10.244.0.0/16", "10.96.0.0/12"] {
        let r = route(ns, cidr);
        assert!(
            r.contains(&format!("dev {KERNEL_END}")) && r.contains("scope link"),
            "{cidr}: {r:?}"
        );
    }
}

/// The stdout of a command that must have succeeded.
fn succeeded(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh cluster, and node-a's namespace, where no host pair is yet.
fn cluster() -> (AgentCluster, String) {
    let c = AgentCluster::build(DEMO_MANIFEST, &DEMO_PODS).expect("the cluster builds");
    let ns = c.tb.nodes[0].ns.clone();
    assert!(
        ip(&ns, &["link", "show", "dev", "host0"]).is_err(),
        "no pair before"
    );
    (c, ns)
}

/// Start node-a's agent with `--host-interface host0`, and wait until it is ready.
fn start_with_pair(c: &mut AgentCluster) {
    let manifest = c.manifest.display().to_string();
    c.start_node(
        0,
        120,
        &["--manifest", &manifest, "--host-interface", "host0"],
    )
    .unwrap();
    c.wait_ready(0, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_agent_makes_its_host_pair_and_a_restart_adopts_it_unchanged() {
    if skip_unless_privileged("the_agent_makes_its_host_pair_and_a_restart_adopts_it_unchanged") {
        return;
    }
    let (mut c, ns) = cluster();
    start_with_pair(&mut c);
    // The uplink's MTU (1500) less VXLAN's 50: the agent's pod MTU.
    assert_pair(&ns, 1450);
    let before = (ifindex(&ns, "host0"), ifindex(&ns, KERNEL_END));

    // Someone changes the MTU and sends the services elsewhere; a restart puts both right on
    // the same links.
    ip(&ns, &["route", "replace", "10.96.0.0/12", "dev", "uplink"]).unwrap();
    testbed::ip(Some(&ns), &["link", "set", KERNEL_END, "mtu", "1400"]).unwrap();
    assert!(c.stop(0).unwrap(), "{}", c.log(0));
    start_with_pair(&mut c);
    assert_eq!(
        (ifindex(&ns, "host0"), ifindex(&ns, KERNEL_END)),
        before,
        "the same pair, adopted"
    );
    assert_pair(&ns, 1450);
    assert!(c.log(0).contains("host veth pair adopted"), "{}", c.log(0));
    assert!(c.stop(0).unwrap());

    // An interface of the name that kxdp did not make as a veth pair is refused, untouched.
    ip(&ns, &["link", "add", "hostx", "type", "bridge"]).unwrap();
    let manifest = c.manifest.display().to_string();
    c.start_node(
        0,
        120,
        &["--manifest", &manifest, "--host-interface", "hostx"],
    )
    .unwrap();
    let err = c.wait_ready(0, Duration::from_secs(30)).unwrap_err();
    assert!(
        err.contains("--host-interface hostx: hostx exists and is not a veth"),
        "{err}"
    );
    let bridge = ip(&ns, &["-d", "link", "show", "dev", "hostx"]).unwrap();
    assert!(
        bridge.contains("bridge") && !bridge.contains("alias"),
        "{bridge}"
    );
}

#[test]
fn uninstall_removes_the_pair_its_routes_and_the_subnet_file_once_pods_and_agent_are_gone() {
    if skip_unless_privileged(
        "uninstall_removes_the_pair_its_routes_and_the_subnet_file_once_pods_and_agent_are_gone",
    ) {
        return;
    }
    let (mut c, ns) = cluster();
    start_with_pair(&mut c);
    let subnet = c.subnet_file(0);
    assert!(
        eventually(Duration::from_secs(10), || subnet.exists()),
        "the agent writes {}",
        subnet.display()
    );
    // The CNI folders as the DaemonSet leaves them, with another plugin's files beside.
    let conf = c.dir().join("net.d");
    let bin = c.dir().join("bin");
    for (dir, files) in [
        (&conf, ["10-kxdp.conflist", "20-other.conflist"]),
        (&bin, ["kxdp-cni", "bridge"]),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "x").unwrap();
        }
    }
    let admin = c.admin(0).to_string();
    let subnet_text = subnet.display().to_string();
    let (conf_text, bin_text) = (conf.display().to_string(), bin.display().to_string());
    let uninstall = |c: &AgentCluster, force: bool| {
        let mut args = vec![
            "uninstall",
            "--admin",
            &admin,
            "--subnet-file",
            &subnet_text,
            "--cni-conf-dir",
            &conf_text,
            "--cni-bin-dir",
            &bin_text,
        ];
        if force {
            args.push("--force");
        }
        c.kxdp_on(0, &args)
    };

    // While the agent runs: refused, naming its API, and nothing is removed.
    let out = uninstall(&c, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("an agent answers on {admin} (--admin)")),
        "{stderr}"
    );
    assert!(subnet.exists() && conf.join("10-kxdp.conflist").exists());
    assert!(c.stop(0).unwrap());

    // Stopped, but node-a's pods still have their veths: refused, naming them.
    let out = uninstall(&c, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let pod_veth = kxdp_control::compile::pod_interface_name("default", "web-a");
    assert!(
        stderr.contains("pods still have veths on this node") && stderr.contains(&pod_veth),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_pair(&ns, 1450);

    // --force removes the pair (its routes with it), the subnet file and kxdp's CNI files.
    let stdout = succeeded(uninstall(&c, true));
    assert!(stdout.contains("removed host0, kxdp0"), "{stdout}");
    for dev in ["host0", KERNEL_END] {
        assert!(
            ip(&ns, &["link", "show", "dev", dev]).is_err(),
            "{dev} is gone"
        );
    }
    for cidr in ["10.244.0.0/16", "10.96.0.0/12"] {
        assert_eq!(route(&ns, cidr), "", "{cidr}");
    }
    assert!(!subnet.exists());
    assert!(!conf.join("10-kxdp.conflist").exists() && !bin.join("kxdp-cni").exists());
    assert!(conf.join("20-other.conflist").exists() && bin.join("bridge").exists());
    // The pods' veths are the CNI plugin's: left.
    assert!(ip(&ns, &["link", "show", "dev", &pod_veth]).is_ok());

    // Again: nothing left to remove, and that is no error.
    let stdout = succeeded(uninstall(&c, false));
    assert!(stdout.contains("none of kxdp's"), "{stdout}");
}
