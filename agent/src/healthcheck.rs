//! Health-check node ports: for each LoadBalancer service with `externalTrafficPolicy: Local`,
//! an HTTP server on its `spec.healthCheckNodePort`, as kube-proxy's `ServiceHealthServer`
//! (pkg/proxy/healthcheck/service_health.go) runs them, so a cloud load balancer sends the
//! service's traffic only to nodes with a ready endpoint of it.
//!
//! Every path of a `GET` answers (kube-proxy serves any), with kube-proxy's body
//! `{"service": {"namespace", "name"}, "localEndpoints": N, "serviceProxyHealthy": bool}`,
//! `Content-Type: application/json`, `X-Content-Type-Options: nosniff` and
//! `X-Load-Balancing-Endpoint-Weight: N`: 200 when the node has a ready endpoint of the
//! service and the agent is healthy (its `/healthz`), 503 otherwise.
//!
//! Each port listens on the NodePort addresses (`--nodeport-addresses`, by default the
//! primary address), as kube-proxy listens on its node port addresses. The traffic reaches
//! the node's kernel: no service frontend claims these ports, so the XDP program passes them
//! on. [`HealthChecks::sync`] opens the ports of services that came, closes those of services
//! that went (or whose port or addresses changed) and updates the counts the servers answer
//! with; a port that cannot be bound (another process holds it) is left out, named in the
//! problems it returns, and tried again on the next sync, as kube-proxy does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use kxdp_control::compile::HealthCheck;
use tokio::task::AbortHandle;

use crate::admin::conns::{Connections, Limits};
use crate::admin::server::{reply, serve_with, Body, Handler};
use crate::admin::{AdminState, Listener};

/// Local ready endpoints by service key; what the servers answer from.
type Counts = Arc<RwLock<BTreeMap<String, usize>>>;

/// One service's open port.
#[derive(Debug)]
struct Open {
    port: u16,
    addrs: Vec<Ipv4Addr>,
    servers: Vec<AbortHandle>,
}

impl Drop for Open {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// The health-check servers; see the module documentation.
#[derive(Debug)]
pub struct HealthChecks {
    open: BTreeMap<String, Open>,
    counts: Counts,
    state: Arc<AdminState>,
    /// The bind errors last reported, by service: each is logged when it first occurs.
    failed: BTreeMap<String, String>,
}

/// The answer for service `key` with `count` ready local endpoints, the agent `healthy` or not.
pub fn answer(key: &str, count: usize, healthy: bool) -> Response<Body> {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        serde_json::Value::from(namespace),
        serde_json::Value::from(name),
    );
    let status = if count > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = reply(status, "application/json", body);
    let headers = r.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-load-balancing-endpoint-weight", HeaderValue::from(count));
    r
}

impl HealthChecks {
    /// None open yet; the servers read the agent's health from `state`.
    pub fn new(state: Arc<AdminState>) -> HealthChecks {
        HealthChecks {
            open: BTreeMap::new(),
            counts: Arc::default(),
            state,
            failed: BTreeMap::new(),
        }
    }

    /// Serve exactly `checks` on `addrs`; returns a problem per port that could not be
    /// opened. Must run inside the tokio runtime (the servers are its tasks).
    pub fn sync(&mut self, checks: &[HealthCheck], addrs: &[Ipv4Addr]) -> Vec<String> {
        {
            let mut counts = self.counts.write().unwrap_or_else(|e| e.into_inner());
            *counts = checks
                .iter()
                .map(|c| (c.service.clone(), c.local_endpoints))
                .collect();
        }
        let wanted: BTreeMap<&str, u16> = checks
            .iter()
            .map(|c| (c.service.as_str(), c.port))
            .collect();
        self.open.retain(|key, open| {
            let keep = wanted.get(key.as_str()) == Some(&open.port) && open.addrs == addrs;
            if !keep {
                tracing::info!(service = %key, port = open.port, "health check port closed");
            }
            keep
        });
        let mut problems = Vec::new();
        let mut failed = BTreeMap::new();
        for (key, port) in wanted {
            if self.open.contains_key(key) {
                continue;
            }
            match self.listen(key, port, addrs) {
                Ok(open) => {
                    tracing::info!(service = %key, port, addresses = ?addrs, "health check port open");
                    self.open.insert(key.to_owned(), open);
                }
                Err(why) => {
                    let problem = format!(
                        "Service {key}: spec.healthCheckNodePort {port} cannot be served: {why} \
                         (tried again on the next change)"
                    );
                    if self.failed.get(key) != Some(&problem) {
                        tracing::warn!(service = %key, port, error = %why, "health check port");
                    }
                    failed.insert(key.to_owned(), problem.clone());
                    problems.push(problem);
                }
            }
        }
        self.failed = failed;
        problems
    }

    /// The ports open now: service key to port.
    pub fn open(&self) -> BTreeMap<String, u16> {
        self.open.iter().map(|(k, o)| (k.clone(), o.port)).collect()
    }

    /// Bind `port` on every address (all or none) and serve each.
    fn listen(&self, key: &str, port: u16, addrs: &[Ipv4Addr]) -> Result<Open, String> {
        let mut listeners = Vec::new();
        for ip in addrs {
            let addr = SocketAddr::from((*ip, port));
            // std's bind sets SO_REUSEADDR, so a port closed a moment ago binds again.
            let l = std::net::TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("{addr}: {e}"))?;
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| format!("{addr}: {e}"))?;
            listeners.push(Listener::Tcp(l, addr));
        }
        let counts = Arc::clone(&self.counts);
        let state = Arc::clone(&self.state);
        let service = key.to_owned();
        let handler: Handler = Arc::new(move |method, _path, _query| {
            if method != hyper::Method::GET {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "only GET\n".into(),
                );
            }
            let count = counts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&service)
                .copied()
                .unwrap_or(0);
            let healthy = state
                .proxy_health(std::time::SystemTime::now(), std::time::Instant::now())
                .healthy;
            answer(&service, count, healthy)
        });
        let servers = listeners
            .into_iter()
            .map(|l| {
                let connections = Arc::new(Connections::new("health-check", Limits::METRICS));
                tokio::spawn(serve_with(l, connections, Arc::clone(&handler))).abort_handle()
            })
            .collect();
        Ok(Open {
            port,
            addrs: addrs.to_vec(),
            servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn text(r: Response<Body>) -> (u16, String, String) {
        let status = r.status().as_u16();
        let header = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
        let (ct, weight) = (
            header("content-type"),
            header("x-load-balancing-endpoint-weight"),
        );
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        (
            status,
            format!("{ct} {weight}"),
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[test]
    fn the_answer_is_kube_proxys_body_headers_and_status() {
        let (status, headers, body) = text(answer("shop/lb", 2, true));
        assert_eq!(status, 200);
        assert_eq!(headers, "application/json 2");
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["service"]["name"], "lb");
        // No local endpoint, or an unhealthy agent: 503, with the count still said.
        let (status, headers, body) = text(answer("shop/lb", 0, true));
        assert_eq!((status, headers.as_str()), (503, "application/json 0"));
        assert!(body.contains("\"localEndpoints\": 0"), "{body}");
        let (status, _, body) = text(answer("shop/lb", 3, false));
        assert_eq!(status, 503);
        assert!(body.contains("\"serviceProxyHealthy\": false"), "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn ports_open_and_close_with_their_services_and_a_taken_one_is_a_problem() {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let mut checks = HealthChecks::new(state);
        let lo = [Ipv4Addr::LOCALHOST];
        // A port someone else holds.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let check = |service: &str, port, local_endpoints| HealthCheck {
            service: service.into(),
            port,
            local_endpoints,
        };
        let problems = checks.sync(
            &[
                check("shop/a", free_port, 1),
                check("shop/b", taken_port, 0),
            ],
            &lo,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("Service shop/b") && problems[0].contains(&taken_port.to_string()),
            "{problems:?}"
        );
        assert_eq!(
            checks.open(),
            BTreeMap::from([("shop/a".into(), free_port)])
        );
        let get = |port: u16| {
            crate::admin::client::get(
                &crate::admin::AdminAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
                "/anything",
            )
        };
        let (code, body) = tokio::task::spawn_blocking(move || get(free_port).unwrap())
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        // The endpoint goes: 503 on the same port.
        checks.sync(&[check("shop/a", free_port, 0)], &lo);
        let (code, _) = tokio::task::spawn_blocking(move || get(free_port).unwrap())
            .await
            .unwrap();
        assert_eq!(code, 503);
        // The service goes: the port closes.
        checks.sync(&[], &lo);
        assert!(checks.open().is_empty());
        let closed = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if get(free_port).is_err() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            false
        })
        .await
        .unwrap();
        assert!(closed, "the port still answers");
        drop(taken);
    }
}
