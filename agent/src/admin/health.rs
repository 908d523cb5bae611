//! kube-proxy's proxier health, as `/healthz` and `/livez` answer it, and the fixed-bucket
//! histograms of the programming metrics.
//!
//! As kube-proxy's `proxierHealthServer`: the agent is healthy while nothing waits to be
//! programmed, and while the oldest change waiting (noticed, not yet live) has waited less
//! than [`STALE_AFTER`]; unhealthy once the dataplane stopped. kube-proxy's threshold is twice
//! its sync period (30 s by default, so 60 s); kxdp programs each change as it comes and has
//! no sync period, so it keeps kube-proxy's default 60 s: load balancers and probes tuned for
//! kube-proxy see the same margin, and it covers the dataplane's start backoff (10 s at most)
//! several times over. The answer is kube-proxy's JSON, `{"lastUpdated": ..., "currentTime":
//! ...}`, with RFC 3339 times (kube-proxy prints Go's `time.Time` format) and without
//! kube-proxy's `nodeEligible` (kxdp does not read the Node's deletion taints): `lastUpdated`
//! is the current time while healthy, as kube-proxy answers, else when the tables last went
//! live.

use std::time::{Duration, Instant, SystemTime};

/// How long a change may wait to go live before the agent is unhealthy.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// The proxier's health at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHealth {
    /// Whether `/healthz` answers 200.
    pub healthy: bool,
    /// When the tables last went live (`None`: never).
    pub last_updated: Option<SystemTime>,
    /// The time of the answer.
    pub current: SystemTime,
}

impl ProxyHealth {
    /// The health of an agent whose oldest change waiting was noticed at `pending_since`,
    /// that last went live at `last_updated`, and whose dataplane `stopped` or not, at `now`
    /// (`wall`, the same moment by the wall clock).
    pub fn at(
        now: Instant,
        wall: SystemTime,
        pending_since: Option<Instant>,
        last_updated: Option<SystemTime>,
        stopped: bool,
    ) -> ProxyHealth {
        let fresh = pending_since.is_none_or(|at| now.saturating_duration_since(at) < STALE_AFTER);
        ProxyHealth {
            healthy: fresh && !stopped,
            last_updated,
            current: wall,
        }
    }

    /// kube-proxy's body: `{"lastUpdated": "...","currentTime": "..."}`.
    pub fn json(&self) -> String {
        let last = if self.healthy {
            Some(self.current)
        } else {
            self.last_updated
        };
        let last = last.map_or_else(String::new, rfc3339);
        format!(
            "{{\"lastUpdated\": {:?},\"currentTime\": {:?}}}",
            last,
            rfc3339(self.current)
        )
    }
}

/// `t` in RFC 3339, UTC, to the nanosecond.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A histogram over fixed bucket bounds (seconds): a count per bucket (the last one past the
/// largest bound), their sum.
#[derive(Clone, Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Buckets {
    /// An empty one over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Count one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        let i = self.bounds.partition_point(|b| *b < seconds);
        self.counts[i] += 1;
        self.sum += seconds;
    }

    /// (upper bound, count in that bucket) per bucket, `+Inf` last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// `kxdp_network_programming_duration_seconds`' bounds: kube-proxy's
/// `network_programming_duration_seconds` goes from 0.25 s to 5 min with steps made for
/// iptables; kxdp's changes go live in milliseconds, so the low end is finer.
pub const PROGRAMMING_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// `kxdp_sync_duration_seconds`' bounds (kube-proxy's `sync_proxy_rules_duration_seconds`
/// uses exponential buckets from 1 ms; kxdp's compile and swap take microseconds to
/// milliseconds).
pub const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_once_a_change_waits_past_the_threshold_or_the_dataplane_stopped() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let live = Some(wall - Duration::from_secs(90));
        // Nothing waiting: healthy, whenever the last update was (kube-proxy's semantics).
        let h = ProxyHealth::at(t0 + STALE_AFTER * 3, wall, None, live, false);
        assert!(h.healthy);
        assert_eq!(
            h.json(),
            r#"{"lastUpdated": "2026-01-02T03:04:05.000000000Z","currentTime": "2026-01-02T03:04:05.000000000Z"}"#
        );
        // A change waiting, not late yet: healthy.
        let pending = Some(t0);
        assert!(ProxyHealth::at(t0 + STALE_AFTER / 2, wall, pending, live, false).healthy);
        // Late: unhealthy, and lastUpdated says when the tables last went live.
        let h = ProxyHealth::at(t0 + STALE_AFTER, wall, pending, live, false);
        assert!(!h.healthy);
        assert_eq!(
            h.json(),
            r#"{"lastUpdated": "2026-01-02T03:02:35.000000000Z","currentTime": "2026-01-02T03:04:05.000000000Z"}"#
        );
        assert!(
            !ProxyHealth::at(t0, wall, None, live, true).healthy,
            "stopped"
        );
    }

    #[test]
    fn buckets_count_each_observation_in_its_bucket() {
        let mut b = Buckets::new(&[0.1, 1.0]);
        for s in [0.05, 0.1, 0.5, 7.0] {
            b.observe(s);
        }
        assert_eq!(b.buckets(), [(0.1, 2), (1.0, 1), (f64::INFINITY, 1)]);
        assert_eq!(b.count(), 4);
        assert!((b.sum() - 7.65).abs() < 1e-9);
    }
}
