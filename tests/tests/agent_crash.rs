//! The agent never keeps running with a dead worker: when the dataplane stops by itself (here,
//! the uplink its workers serve is deleted under them) the agent exits non-zero at once, with
//! the cause in its log, so that its supervisor restarts it.

use std::time::{Duration, Instant};

use kxdp_tests::cluster::AgentCluster;
use kxdp_tests::cluster::{DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};
use kxdp_tests::testbed::skip_unless_privileged;

#[test]
fn losing_the_uplink_under_the_workers_exits_the_agent_non_zero() {
    if skip_unless_privileged("losing_the_uplink_under_the_workers_exits_the_agent_non_zero") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let ns = c.tb.nodes[0].ns.clone();
    let out = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "del", "uplink"])
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted = Instant::now();
    let status = c.wait_exit(0, Duration::from_secs(10));
    let took = deleted.elapsed();
    let log = c.log(0);
    let status = status.unwrap_or_else(|| panic!("the agent still runs 10 s later:\n{log}"));
    assert!(!status.success(), "exited {status}:\n{log}");
    assert!(
        took < Duration::from_secs(3),
        "exited after {took:?}:\n{log}"
    );
    assert!(
        log.contains("uplink"),
        "the log does not name the cause:\n{log}"
    );
    // The other node's agent is untouched.
    assert!(c.try_status(1).is_ok(), "{}", c.log(1));
}
