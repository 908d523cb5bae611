//! The agent's admin API, and the client the `kxdp` CLI reads it with.
//!
//! Two listeners, as kube-proxy and Cilium's agent split theirs:
//!
//! - **metrics** (`--metrics-address`, default TCP `127.0.0.1:9901`): `/metrics`, `/healthz`,
//!   `/livez`, `/readyz`, for Prometheus and the kubelet, and `/served/<interface>` for the CNI
//!   plugin. Any local user can reach it; it shows counts and whether a named interface is
//!   served, never addresses or flows.
//! - **debug** (`--admin`, default the Unix socket `/run/kxdp/admin.sock`, mode 0600 in a
//!   0700 directory when the agent creates it): those three and the JSON views under `/api/`,
//!   which show every service, route and flow; the `kxdp` CLI's default. A TCP address can be
//!   asked for (`--admin 127.0.0.1:9902`): then every local user reads every flow.
//!
//! | path | answer |
//! |---|---|
//! | `/healthz`, `/livez` | kube-proxy's proxier health ([`health`]): 200 with `{"lastUpdated", "currentTime"}`, 503 once the dataplane stopped or a change has waited 60 s to go live |
//! | `/readyz` | 200 once the first snapshot is live, 503 with the reason before |
//! | `/served/<interface>` | 200 once the pod interface is served (XDP attached, sockets bound, the snapshot with its pod published: when the agent logs "pod interface served"), 404 otherwise; `kxdp-cni`'s `ADD` waits for it |
//! | `/metrics` | Prometheus text 0.0.4 ([`metrics`]): drops per reason, events, rx/tx per worker and per interface, batch sizes, conntrack size and pressure, snapshot generation and update latency, source errors, admin connections, `kxdp_build_info`, `process_*` |
//! | `/api/status` | [`StatusView`] (debug listener only, as every `/api/` path) |
//! | `/api/services` | [`ServiceView`] per service port |
//! | `/api/conntrack?proto=&addr=&port=&limit=` | [`FlowsView`]: flows matching every filter given |
//! | `/api/routes` | [`RouteView`] per destination |
//! | `/api/counters` | [`CountersView`] |
//! | `/api/trace?from=&src=&dst=&proto=&format=text` | a [`kxdp_control::trace::Trace`] of one packet through the live tables |
//!
//! The JSON views are what `kxdp status|services|conntrack|routes|counters --json` print.
//! Each listener holds a bounded number of connections and times out slow ones
//! ([`conns`]), so held or trickling connections cannot starve the agent.
//!
//! By concern: [`views`] (the JSON types and the views built from a snapshot), [`state`] (what
//! the agent writes and the API reads), [`metrics`] and [`process`] (the Prometheus
//! exposition), [`listen`] (binding, the Unix socket's ownership), [`conns`] (connection
//! limits), [`server`] (HTTP routing and serving), [`client`] (what the CLI reads it with).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod client;
pub mod conns;
mod encode;
pub mod health;
pub mod listen;
pub mod metrics;
pub mod process;
pub mod server;
pub mod state;
pub mod views;

pub use client::{get, get_json};
pub use conns::Limits;
pub use listen::{bind, Listener};
pub use server::{handle, serve, Scope};
pub use state::{AdminState, DataplaneView};
pub use views::*;

/// Lock `m` even if a thread panicked holding it: a panic elsewhere must not take the admin
/// API down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The debug API's default address (the CLI's too).
pub const DEFAULT_ADMIN: &str = "unix:/run/kxdp/admin.sock";

/// The metrics listener's default address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9901";

/// Where an admin listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    /// A TCP address (keep it on localhost).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/run/kxdp.sock".into());
            }
            return Ok(AdminAddr::Unix(path.into()));
        }
        s.parse()
            .map(AdminAddr::Tcp)
            .map_err(|_| format!("{s:?} is neither ADDRESS:PORT (127.0.0.1:9901) nor unix:PATH"))
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(a) => write!(f, "{a}"),
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_parse_and_print_back() {
        for text in ["127.0.0.1:9901", "unix:/run/kxdp/agent.sock"] {
            let a: AdminAddr = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        assert!("unix:".parse::<AdminAddr>().is_err());
        let e = "localhost".parse::<AdminAddr>().unwrap_err();
        assert!(e.contains("unix:PATH"), "{e}");
    }
}
