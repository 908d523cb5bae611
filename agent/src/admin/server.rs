//! The admin API's HTTP server: routes a request to its answer ([`handle`]), and serves a
//! bound listener ([`serve`]) within its connection limits ([`super::conns`]).
//!
//! What a listener answers depends on its [`Scope`]: the metrics listener (TCP, reachable by
//! every local user) only `/metrics`, `/healthz`, `/readyz` and `/served/<interface>`; the
//! debug API (an owner-only Unix socket by default) those and every `/api/` view.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use kxdp_control::json::Proto;
use serde::Serialize;

use super::conns::{Connections, Limits, Ticket};
use super::listen::Listener;
use super::state::AdminState;
use super::views::{parse_endpoint, FlowFilter};

/// What a listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/metrics`, `/healthz`, `/readyz`, `/served/<interface>`.
    Metrics,
    /// Those and the debug views under `/api/`.
    Debug,
}

impl Scope {
    /// The listener's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Metrics => "metrics",
            Scope::Debug => "debug",
        }
    }
}

/// A URL query string's parameters (no percent-decoding is needed for what the API takes).
fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A response's body.
pub type Body = Full<Bytes>;

/// The most flows one `/api/conntrack` answer lists (the default is 100); `matched` still
/// counts them all.
pub const MAX_FLOWS_LISTED: usize = 10_000;

pub(crate) fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string_pretty(value) {
        Ok(text) => reply(StatusCode::OK, "application/json", text),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// Answer one request on a listener of `scope`.
pub fn handle(
    state: &Arc<AdminState>,
    scope: Scope,
    method: &hyper::Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    if method != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    if scope == Scope::Metrics && path.starts_with("/api/") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("{path}: the debug API is on the agent's --admin socket, not here\n"),
        );
    }
    let params = query_params(query);
    match path {
        // kube-proxy's proxier health (pkg/proxy/healthcheck/proxier_health.go).
        "/healthz" | "/livez" => {
            let health = state.proxy_health(std::time::SystemTime::now(), Instant::now());
            let status = if health.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut r = reply(status, "application/json", health.json());
            r.headers_mut().insert(
                "x-content-type-options",
                hyper::header::HeaderValue::from_static("nosniff"),
            );
            r
        }
        "/readyz" => {
            if state.ready() && !state.stopped.load(Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                let why = state
                    .current_error()
                    .unwrap_or_else(|| "waiting for the first snapshot".into());
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                )
            }
        }
        // For the CNI plugin's ADD, which waits (bounded) for its pod's veth to be served.
        // Only whether: the interface's name is a hash, and nothing else is told.
        served if served.starts_with("/served/") => {
            let name = &served["/served/".len()..];
            if state.serves_pod_interface(name) {
                reply(StatusCode::OK, "text/plain", "served\n".into())
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("{name}: not served\n"),
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(state),
        ),
        "/api/status" => json(&state.status()),
        "/api/services" => json(&state.services()),
        "/api/routes" => json(&state.routes()),
        "/api/policies" => json(&state.policies()),
        "/api/counters" => json(&state.counters_view()),
        "/api/conntrack" => {
            let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(l)) if l <= MAX_FLOWS_LISTED => l,
                Some(Ok(_)) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("limit: at most {MAX_FLOWS_LISTED} flows per request\n"),
                    )
                }
                Some(Err(_)) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "limit: not a number\n".into(),
                    )
                }
            };
            match FlowFilter::from_query(&params) {
                Ok(filter) => json(&state.flows(&filter, limit)),
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            }
        }
        "/api/trace" => match trace_live(state, &params) {
            Ok(t) if params.get("format").map(String::as_str) == Some("text") => {
                reply(StatusCode::OK, "text/plain", t.to_string())
            }
            Ok(t) => json(&t),
            Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no such path: {path}\n"),
        ),
    }
}

/// `/api/trace`: one packet through the live tables.
fn trace_live(
    state: &AdminState,
    params: &BTreeMap<String, String>,
) -> Result<kxdp_control::trace::Trace, String> {
    use kxdp_control::trace::{trace, Entry, TraceInput};
    let snap = state.snapshot().ok_or("no snapshot is live yet")?;
    let endpoint = |name: &str| -> Result<(Ipv4Addr, u16), String> {
        let text = params.get(name).ok_or(format!("{name}: missing"))?;
        parse_endpoint(text).map_err(|e| format!("{name}: {e}"))
    };
    let entry: Entry = params
        .get("from")
        .map_or("pod", String::as_str)
        .parse()
        .map_err(|e| format!("from: {e}"))?;
    let proto: Proto = params
        .get("proto")
        .map_or("tcp", String::as_str)
        .parse()
        .map_err(|e| format!("proto: {e}"))?;
    let input = TraceInput {
        entry,
        src: endpoint("src")?,
        dst: endpoint("dst")?,
        proto: proto.number(),
    };
    trace(&snap, &input).map_err(|e| e.to_string())
}

/// What answers a listener's requests: method, path, query to the response.
pub type Handler =
    Arc<dyn Fn(&hyper::Method, &str, Option<&str>) -> Response<Body> + Send + Sync + 'static>;

/// Serve `listener` as a `scope` listener within `limits` until the task is dropped.
pub async fn serve(listener: Listener, state: Arc<AdminState>, scope: Scope, limits: Limits) {
    let connections = Arc::new(Connections::new(scope.name(), limits));
    state.add_listener(Arc::clone(&connections));
    let handler: Handler =
        Arc::new(move |method, path, query| handle(&state, scope, method, path, query));
    serve_with(listener, connections, handler).await;
}

/// Serve `listener` with `handler`, within the limits of `connections` (the listener's table),
/// until the task is dropped. Each answer is made on the blocking pool.
pub async fn serve_with(listener: Listener, connections: Arc<Connections>, handler: Handler) {
    let name = connections.name;
    let limits = connections.limits();
    let reaper = tokio::spawn(Arc::clone(&connections).reap());
    let _reaper = AbortOnDrop(reaper.abort_handle());
    let http = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // Requests are a line and a few headers; this bounds a connection's buffer.
            .max_buf_size(16 * 1024);
        Arc::new(b)
    };
    loop {
        let accepted = match &listener {
            Listener::Tcp(l, _) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: the limits keep the agent far from them, but never spin.
                tracing::warn!(listener = name, error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let http = Arc::clone(&http);
        connections.admit(move |ticket| {
            tokio::spawn(async move {
                match conn {
                    Conn::Tcp(s) => connection(&http, s, handler, name, ticket).await,
                    Conn::Unix(s) => connection(&http, s, handler, name, ticket).await,
                }
            })
            .abort_handle()
        });
    }
}

/// Serve one connection; its ticket holds its place in the listener's table until it ends.
async fn connection<S>(
    http: &hyper::server::conn::http1::Builder,
    stream: S,
    handler: Handler,
    name: &'static str,
    ticket: Ticket,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ticket = Arc::new(ticket);
    let seen = Arc::clone(&ticket);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        seen.request();
        let handler = Arc::clone(&handler);
        let (method, uri) = (req.method().clone(), req.uri().clone());
        // An answer may walk all of conntrack or render every metric: on the blocking pool,
        // never on a thread the agent's loop and the other connections need.
        async move {
            let answer =
                tokio::task::spawn_blocking(move || handler(&method, uri.path(), uri.query()))
                    .await
                    .unwrap_or_else(|e| {
                        reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            format!("the request failed: {e}\n"),
                        )
                    });
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    if let Err(e) = http.serve_connection(io, service).await {
        if e.is_timeout() {
            ticket.timed_out();
        }
        tracing::debug!(listener = name, error = %e, "admin API connection");
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

#[cfg(test)]
mod tests {
    use super::super::views::FlowFilter;
    use super::*;
    use kxdp_dataplane::tables::InterfaceId;

    #[test]
    fn a_conntrack_listing_is_bounded() {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let status = |query: &str| {
            let get = hyper::Method::GET;
            handle(&state, Scope::Debug, &get, "/api/conntrack", Some(query)).status()
        };
        assert_eq!(status("limit=10000"), StatusCode::OK);
        assert_eq!(status("limit=10001"), StatusCode::BAD_REQUEST);
        assert_eq!(status("limit=lots"), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn flow_filters_name_the_bad_parameter() {
        let q = query_params(Some("proto=udp&addr=10.0.0.1&port=53"));
        let f = FlowFilter::from_query(&q).unwrap();
        assert_eq!(
            f,
            FlowFilter {
                proto: Some(Proto::Udp),
                addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
                port: Some(53)
            }
        );
        let e = FlowFilter::from_query(&query_params(Some("port=http"))).unwrap_err();
        assert!(e.starts_with("port:"), "{e}");
        let e = FlowFilter::from_query(&query_params(Some("proto=sctp"))).unwrap_err();
        assert!(e.starts_with("proto:"), "{e}");
    }

    #[test]
    fn a_starting_agent_is_healthy_but_not_ready_and_metrics_say_so() {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let get = |p: &str| handle(&state, Scope::Debug, &hyper::Method::GET, p, None).status();
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        let m = super::super::metrics::render(&state);
        assert!(m.contains("kxdp_ready 0\n"), "{m}");
        assert!(
            m.contains("kxdp_drops_total{reason=\"neighbor_unresolved\"} 0"),
            "{m}"
        );
        state.set_stopped();
        assert_eq!(get("/healthz"), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn served_answers_200_only_for_a_served_pod_interface_on_both_listeners() {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let get = |scope, p: &str| handle(&state, scope, &hyper::Method::GET, p, None).status();
        for scope in [Scope::Metrics, Scope::Debug] {
            assert_eq!(get(scope, "/served/kx0123456789ab"), StatusCode::NOT_FOUND);
        }
        state.set_interfaces(vec![
            (
                "eth0".into(),
                InterfaceId(0),
                "uplink".into(),
                "native".into(),
            ),
            (
                "kx0123456789ab".into(),
                InterfaceId(2),
                "pod".into(),
                "native".into(),
            ),
        ]);
        for scope in [Scope::Metrics, Scope::Debug] {
            assert_eq!(get(scope, "/served/kx0123456789ab"), StatusCode::OK);
            assert_eq!(get(scope, "/served/kx0123456789ac"), StatusCode::NOT_FOUND);
            assert_eq!(
                get(scope, "/served/eth0"),
                StatusCode::NOT_FOUND,
                "not a pod's"
            );
            assert_eq!(get(scope, "/served/"), StatusCode::NOT_FOUND);
        }
        state.set_interfaces(vec![]);
        assert_eq!(
            get(Scope::Metrics, "/served/kx0123456789ab"),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_metrics_listener_answers_health_and_metrics_but_no_debug_view() {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let get = |p: &str| handle(&state, Scope::Metrics, &hyper::Method::GET, p, None);
        assert_eq!(get("/healthz").status(), StatusCode::OK);
        assert_eq!(get("/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/metrics").status(), StatusCode::OK);
        for path in [
            "/api/status",
            "/api/conntrack",
            "/api/services",
            "/api/policies",
            "/api/trace",
        ] {
            assert_eq!(get(path).status(), StatusCode::NOT_FOUND, "{path}");
        }
        for path in ["/api/status", "/api/policies"] {
            let debug = handle(&state, Scope::Debug, &hyper::Method::GET, path, None);
            assert_eq!(debug.status(), StatusCode::OK, "{path}");
        }
    }

    /// A listener with room for 8 connections, flooded with idle and trickling ones, still
    /// answers a prompt client, and never holds more than its limit.
    #[test]
    fn a_flooded_listener_still_answers_and_holds_no_more_than_its_limit() {
        use std::io::Write as _;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
        };
        let listener = runtime
            .block_on(super::super::listen::bind(&"127.0.0.1:0".parse().unwrap()))
            .unwrap();
        let addr = listener.local();
        let crate::admin::AdminAddr::Tcp(tcp) = addr else {
            panic!("{addr}")
        };
        runtime.spawn(serve(listener, Arc::clone(&state), Scope::Metrics, limits));
        let mut held = Vec::new();
        for i in 0..200 {
            let mut s = std::net::TcpStream::connect(tcp).unwrap();
            if i % 10 == 0 {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            held.push(s);
        }
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let (code, body) = crate::admin::client::get(&addr, "/healthz").unwrap();
            assert_eq!(code, 200, "{body}");
            assert!(body.starts_with("{\"lastUpdated\": "), "{body}");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{:?}",
                start.elapsed()
            );
            let (code, _) = crate::admin::get(&addr, "/metrics").unwrap();
            assert_eq!(code, 200);
            let (code, body) = crate::admin::get(&addr, "/api/conntrack").unwrap();
            assert_eq!(code, 404, "{body}");
        }
        let listeners = crate::admin::lock(&state.listeners).clone();
        let conns = &listeners[0];
        assert!(conns.open() <= 8, "{}", conns.open());
        assert!(conns.evicted() >= 192, "{}", conns.evicted());
        // Connections that trickle their headers time out without a complete request.
        let mut slow: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(tcp).unwrap())
            .collect();
        for _ in 0..5 {
            for s in &mut slow {
                let _ = s.write_all(b"X");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(conns.open(), 0, "every held connection timed out");
        assert!(conns.timed_out() >= 3, "{}", conns.timed_out());
        drop(held);
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
