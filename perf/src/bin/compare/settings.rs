//! The settings each path runs with, read off its topology at run time rather than assumed:
//! for every device in every namespace of a testbed, its MTU and XDP program (`ip -d -j
//! link`), its offloads (`ethtool -k`) and, for a VXLAN device, its outer UDP checksum;
//! grouped by the device's role ([`capture`]), and the table of what differs between kxdp's
//! path and the kernel's ([`diff_table`]).

use std::process::Command;

use kxdp_tests::testbed::Testbed;
use serde_json::Value;

/// The offloads shown: `ethtool -k`'s name and the report's. TSO is IPv4's own flag: the
/// group `tcp-segmentation-offload` reads `on` while any member is (`tx-tcp-accecn-segmentation`
/// stays on when checksum offload goes off and takes TSO with it).
const FEATURES: [(&str, &str); 5] = [
    ("tx-checksumming", "tx-csum"),
    ("scatter-gather", "SG"),
    ("tx-tcp-segmentation", "TSO"),
    ("generic-segmentation-offload", "GSO"),
    ("generic-receive-offload", "GRO"),
];

/// One device as found: its role in the topology, its name, and its settings as (name,
/// value) in a fixed order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Device {
    pub(crate) role: &'static str,
    pub(crate) name: String,
    pub(crate) settings: Vec<(&'static str, String)>,
}

/// The roles, in the order the tables list them.
const ROLES: [&str; 10] = [
    "pod end of the pod veth (eth0)",
    "node end of the pod veth",
    "cni0 (bridge)",
    "flannel.1 (VXLAN)",
    "host interface (host0, kxdp0)",
    "node uplink",
    "underlay switch ports",
    "underlay switch bridge",
    "external client",
    SINK_ROLE,
];

/// The role of the perf topology's sink.
pub(crate) const SINK_ROLE: &str = "sink (stands for node B)";

/// Every device (but loopback) of `tb`'s namespaces, and of `extra` namespaces with the role
/// given there.
pub(crate) fn capture(
    tb: &Testbed,
    extra: &[(String, &'static str)],
) -> Result<Vec<Device>, String> {
    let mut out = Vec::new();
    let mut add = |ns: &str, role: &dyn Fn(&str, &str) -> &'static str| -> Result<(), String> {
        for (name, link) in links(ns)? {
            let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("");
            if name == "lo" {
                continue;
            }
            out.push(Device {
                role: role(&name, kind),
                settings: settings(ns, &name, &link)?,
                name,
            });
        }
        Ok(())
    };
    if !tb.switch.is_empty() {
        add(&tb.switch, &|_, kind| {
            if kind == "bridge" {
                ROLES[7]
            } else {
                ROLES[6]
            }
        })?;
    }
    for node in &tb.nodes {
        add(&node.ns, &|name, _| match name {
            "uplink" => ROLES[5],
            "cni0" => ROLES[2],
            "flannel.1" => ROLES[3],
            "host0" | "kxdp0" => ROLES[4],
            _ => ROLES[1],
        })?;
        for pod in &node.pods {
            add(&pod.ns, &|_, _| ROLES[0])?;
        }
    }
    if let Some((ns, _)) = &tb.external {
        add(ns, &|_, _| ROLES[8])?;
    }
    for (ns, role) in extra {
        add(ns, &|_, _| role)?;
    }
    Ok(out)
}

/// `ip -d -j link` of namespace `ns`: (name, its JSON).
fn links(ns: &str) -> Result<Vec<(String, Value)>, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "-j", "link", "show"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ip -n {ns} -d -j link show: {e}"))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| Some((l["ifname"].as_str()?.to_owned(), l.clone())))
                .collect()
        })
        .unwrap_or_default())
}

/// A device's settings: MTU, the offloads of [`FEATURES`], its XDP program, and a VXLAN
/// device's outer UDP checksum.
fn settings(ns: &str, dev: &str, link: &Value) -> Result<Vec<(&'static str, String)>, String> {
    let ethtool = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-k", dev])
        .output()
        .map_err(|e| format!("ethtool: {e}"))?;
    let features = parse_ethtool(&String::from_utf8_lossy(&ethtool.stdout));
    let mut s = vec![(
        "MTU",
        link["mtu"].as_u64().map_or("?".into(), |m| m.to_string()),
    )];
    for (long, short) in FEATURES {
        let value = features
            .iter()
            .find(|f| f.0 == long)
            .map_or("?".to_owned(), |f| f.1.clone());
        s.push((short, value));
    }
    s.push(("XDP", xdp(link)));
    if link["linkinfo"]["info_kind"] == "bridge" {
        // Bridge netfilter is the namespace's, and costs every bridged frame the IP hooks.
        let nf = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-n"])
            .arg("net.bridge.bridge-nf-call-iptables")
            .output()
            .map_err(|e| format!("sysctl: {e}"))?;
        let value = match String::from_utf8_lossy(&nf.stdout).trim() {
            "1" => "on",
            "0" => "off",
            _ => "not built",
        };
        s.push(("bridge netfilter", value.into()));
    }
    if link["linkinfo"]["info_kind"] == "vxlan" {
        let csum = link["linkinfo"]["info_data"]["udp_csum"].as_bool();
        s.push((
            "outer UDP checksum",
            csum.map_or("?", |c| if c { "on" } else { "off" }).into(),
        ));
    }
    Ok(s)
}

/// `ethtool -k`'s features, groups and their members alike: (name, on or off), `[fixed]` and
/// `[requested on]` dropped.
fn parse_ethtool(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with("Features for"))
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let value = value.split_whitespace().next()?;
            Some((name.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// The XDP program on a device, from its `ip -d -j link` JSON: `none`, or its mode and name.
fn xdp(link: &Value) -> String {
    let x = &link["xdp"];
    if x.is_null() {
        return "none".into();
    }
    let mode = match x["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offloaded",
        Some(4) => "several",
        _ => "attached",
    };
    let name = x["prog"]["name"]
        .as_str()
        .or_else(|| x["attached"][0]["prog"]["name"].as_str());
    match name {
        Some(n) => format!("{mode} ({n})"),
        None => mode.into(),
    }
}

/// One role's settings on one path, as items (`MTU 1450`, `TSO on`): one value per setting
/// where its devices agree, else each value with its devices.
fn summary(devices: &[&Device]) -> Vec<(&'static str, String)> {
    let Some(first) = devices.first() else {
        return Vec::new();
    };
    first
        .settings
        .iter()
        .map(|(key, _)| {
            let mut values: Vec<(String, Vec<&str>)> = Vec::new();
            for d in devices {
                let v = d
                    .settings
                    .iter()
                    .find(|s| s.0 == *key)
                    .map_or("?".to_owned(), |s| s.1.clone());
                match values.iter_mut().find(|x| x.0 == v) {
                    Some(x) => x.1.push(&d.name),
                    None => values.push((v, vec![&d.name])),
                }
            }
            let text = if values.len() == 1 {
                values.remove(0).0
            } else {
                values
                    .iter()
                    .map(|(v, names)| format!("{v} ({})", names.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            (*key, text)
        })
        .collect()
}

/// The markdown table of every role on either path, kernel then kxdp, each setting in bold
/// where the two paths differ; and those differences by role (`role: key kernel's vs
/// kxdp's`).
pub(crate) fn diff_table(kernel: &[Device], kxdp: &[Device]) -> (String, Vec<String>) {
    let mut md = String::from("| device | kernel path | kxdp path |\n|---|---|---|\n");
    let mut differences = Vec::new();
    for role in ROLES {
        let k: Vec<&Device> = kernel.iter().filter(|d| d.role == role).collect();
        let x: Vec<&Device> = kxdp.iter().filter(|d| d.role == role).collect();
        if k.is_empty() && x.is_empty() {
            continue;
        }
        let (ks, xs) = (summary(&k), summary(&x));
        let cell = |mine: &[(&str, String)], other: &[(&str, String)], present: bool| {
            if !present {
                return "—".to_owned();
            }
            mine.iter()
                .map(|(key, v)| {
                    let differs = !other.is_empty()
                        && other.iter().find(|o| o.0 == *key).is_none_or(|o| o.1 != *v);
                    if differs {
                        format!("**{key} {v}**")
                    } else {
                        format!("{key} {v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        md.push_str(&format!(
            "| {role} | {} | {} |\n",
            cell(&ks, &xs, !k.is_empty()),
            cell(&xs, &ks, !x.is_empty())
        ));
        if !k.is_empty() && !x.is_empty() {
            let items: Vec<String> = ks
                .iter()
                .filter_map(|(key, v)| {
                    let theirs = xs.iter().find(|o| o.0 == *key).map(|o| o.1.as_str());
                    (theirs != Some(v.as_str()))
                        .then(|| format!("{key} {v} vs {}", theirs.unwrap_or("absent")))
                })
                .collect();
            if !items.is_empty() {
                differences.push(format!("{role}: {}", items.join(", ")));
            }
        }
    }
    (md, differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_gives_every_feature_without_its_notes() {
        let text = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\
                    \ttx-checksum-ip-generic: off\nscatter-gather: on\n\
                    tcp-segmentation-offload: on\n\ttx-tcp-segmentation: off [requested on]\n\
                    \ttx-tcp-accecn-segmentation: on\n\
                    generic-receive-offload: off\nlarge-receive-offload: off [fixed]\n";
        let f = parse_ethtool(text);
        assert!(f.contains(&("tx-checksumming".into(), "off".into())));
        assert!(f.contains(&("tx-checksum-ip-generic".into(), "off".into())));
        assert!(f.contains(&("tx-tcp-segmentation".into(), "off".into())));
        assert!(f.contains(&("large-receive-offload".into(), "off".into())));
        assert!(!f.iter().any(|x| x.0.starts_with("Features")));
    }

    #[test]
    fn xdp_says_mode_and_program() {
        let none = serde_json::json!({"ifname": "uplink", "mtu": 1500});
        assert_eq!(xdp(&none), "none");
        let native =
            serde_json::json!({"xdp": {"mode": 1, "prog": {"id": 7, "name": "kxdp_steer"}}});
        assert_eq!(xdp(&native), "native (kxdp_steer)");
        let generic = serde_json::json!({"xdp": {"mode": 2}});
        assert_eq!(xdp(&generic), "generic");
    }

    fn dev(role: &'static str, name: &str, s: &[(&'static str, &str)]) -> Device {
        Device {
            role,
            name: name.into(),
            settings: s.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn the_table_marks_what_differs_and_lists_it() {
        let kernel = vec![
            dev(ROLES[0], "eth0", &[("MTU", "1450"), ("tx-csum", "on")]),
            dev(ROLES[2], "cni0", &[("MTU", "1450")]),
        ];
        let kxdp = vec![
            dev(ROLES[0], "eth0", &[("MTU", "1450"), ("tx-csum", "off")]),
            dev(ROLES[0], "eth0", &[("MTU", "1450"), ("tx-csum", "off")]),
        ];
        let (md, diffs) = diff_table(&kernel, &kxdp);
        assert!(
            md.contains("| pod end of the pod veth (eth0) | MTU 1450, **tx-csum on** | MTU 1450, **tx-csum off** |"),
            "{md}"
        );
        assert!(md.contains("| cni0 (bridge) | MTU 1450 | — |"), "{md}");
        assert_eq!(
            diffs,
            vec!["pod end of the pod veth (eth0): tx-csum on vs off"]
        );
    }

    #[test]
    fn devices_of_a_role_that_disagree_are_named() {
        let a = dev(ROLES[6], "s0", &[("tx-csum", "off")]);
        let b = dev(ROLES[6], "s1", &[("tx-csum", "on")]);
        assert_eq!(
            summary(&[&a, &b]),
            vec![("tx-csum", "off (s0) / on (s1)".to_owned())]
        );
    }
}
