//! Write the seed corpora: every named case of the fixture topology (the frames the pipeline
//! tests and benches use), as `parse` takes them (a frame) and as `pipeline` takes them (a
//! record of interface selector, length, frame), the embedded default manifest for
//! `manifest`, a plugin configuration as a runtime hands it over for `cni`, and a run of every
//! operation for `conntrack`. Run from this folder: `cargo run --example seeds`.

use kxdp_testkit::{tcp_flags as f, Input, Topology};

fn main() -> std::io::Result<()> {
    let t = Topology::default();
    let cases: Vec<(&str, Input)> = vec![
        ("pod_to_pod", t.case_pod_to_pod(1000)),
        ("encap", t.case_encap(1001)),
        ("decap", t.case_decap(1002)),
        ("service_syn", t.case_service(1003, f::SYN)),
        ("service_ack", t.case_service(1003, f::ACK)),
        ("service_reply", t.case_service_reply(1003)),
        ("egress_syn", t.case_egress(1004, f::SYN)),
    ];
    let selector = |iface| {
        [t.pod_a.iface, t.pod_b.iface, t.node.uplink, t.node.host]
            .iter()
            .position(|i| *i == iface)
            .unwrap_or(4) as u8
    };
    for dir in [
        "corpus/parse",
        "corpus/pipeline",
        "corpus/manifest",
        "corpus/cni",
        "corpus/conntrack",
    ] {
        std::fs::create_dir_all(dir)?;
    }
    let mut batch = Vec::new();
    for (name, input) in &cases {
        std::fs::write(format!("corpus/parse/{name}"), &input.frame)?;
        let mut record = vec![selector(input.ingress), input.frame.len().min(255) as u8];
        record.extend(&input.frame[..input.frame.len().min(255)]);
        std::fs::write(format!("corpus/pipeline/{name}"), &record)?;
        batch.extend(&record);
    }
    // All of them in one batch, the SYNs before the packets of their flows.
    std::fs::write("corpus/pipeline/all_cases", &batch)?;
    std::fs::write(
        "corpus/manifest/default",
        include_str!("../../../control/manifests/default.yaml"),
    )?;
    // The plugin's entry of deploy/kxdp.yaml's conflist, as a runtime passes it (name and
    // version from the list), with a previous plugin's result.
    std::fs::write(
        "corpus/cni/config",
        r#"{"cniVersion":"1.1.0","name":"kxdp","type":"kxdp-cni","subnetFile":"/run/kxdp/subnet.env","dataDir":"/var/lib/kxdp/ipam","agentAddress":"127.0.0.1:9901","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}]}}"#,
    )?;
    // conntrack: records of (operation, four key bytes); each operation a few times over
    // colliding keys, then an adoption and a removal.
    let mut ops = Vec::new();
    for (i, op) in [0u8, 1, 0, 3, 1, 2, 4, 5, 6, 0, 1, 5, 2, 3]
        .iter()
        .enumerate()
    {
        let i = i as u8;
        ops.extend([*op, 0x80 | i, i / 2, 0x02 | (i << 2), i]);
    }
    std::fs::write("corpus/conntrack/ops", &ops)?;
    Ok(())
}
