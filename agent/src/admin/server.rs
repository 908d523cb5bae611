//! The admin API's HTTP server: routes a request to its answer, and serves a bound listener.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::state::{lock, AdminState};
use super::views::{parse_endpoint, parse_proto, FlowFilter};
use super::AdminAddr;

/// A URL query string's parameters (no percent-decoding is needed for what the API takes).
pub fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
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

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
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

/// Answer one request.
pub fn handle(
    state: &AdminState,
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
    let params = query_params(query);
    match path {
        "/healthz" => {
            if state.stopped.load(Relaxed) {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "dataplane stopped\n".into(),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        "/readyz" => {
            if state.ready.load(Relaxed) && !state.stopped.load(Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                let why = lock(&state.inner)
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "waiting for the first snapshot".into());
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                )
            }
        }
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", state.metrics()),
        "/api/status" => json(&state.status()),
        "/api/services" => json(&state.services()),
        "/api/routes" => json(&state.routes()),
        "/api/counters" => json(&state.counters_view()),
        "/api/conntrack" => {
            let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(l)) => l,
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
    let entry = match params.get("from").map_or("pod", String::as_str) {
        "pod" => Entry::Pod,
        "uplink" => Entry::Uplink,
        "host" => Entry::Host,
        other => return Err(format!("from: {other:?} is not pod, uplink or host")),
    };
    let proto = params.get("proto").map_or("tcp", String::as_str);
    let input = TraceInput {
        entry,
        src: endpoint("src")?,
        dst: endpoint("dst")?,
        proto: parse_proto(proto).ok_or(format!("proto: {proto:?} is not tcp, udp or icmp"))?,
    };
    trace(&snap, &input).map_err(|e| e.to_string())
}

/// Bind the admin API's listener (before anything else starts, so a taken address fails the
/// start). A stale Unix socket file is replaced.
pub async fn bind(addr: &AdminAddr) -> std::io::Result<Listener> {
    match addr {
        AdminAddr::Tcp(a) => tokio::net::TcpListener::bind(a).await.map(Listener::Tcp),
        AdminAddr::Unix(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(p);
            tokio::net::UnixListener::bind(p).map(|l| Listener::Unix(l, p.clone()))
        }
    }
}

/// A bound admin listener.
#[derive(Debug)]
pub enum Listener {
    /// On TCP.
    Tcp(tokio::net::TcpListener),
    /// On a Unix socket (removed when dropped).
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Serve the admin API until the task is dropped.
pub async fn serve(listener: Listener, state: Arc<AdminState>) {
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = handle(&state, req.method(), req.uri().path(), req.uri().query());
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match conn {
                Conn::Tcp(s) => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                        .await
                }
                Conn::Unix(s) => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin API connection");
            }
        });
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

    #[test]
    fn flow_filters_name_the_bad_parameter() {
        let q = query_params(Some("proto=udp&addr=10.0.0.1&port=53"));
        let f = FlowFilter::from_query(&q).unwrap();
        assert_eq!(
            f,
            FlowFilter {
                proto: Some(17),
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
        let state = AdminState::new("node-a", "manifests");
        let get = |p: &str| handle(&state, &hyper::Method::GET, p, None).status();
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        let m = state.metrics();
        assert!(m.contains("kxdp_ready 0\n"), "{m}");
        assert!(
            m.contains("kxdp_drops_total{reason=\"neighbor_unresolved\"} 0"),
            "{m}"
        );
        state.set_stopped();
        assert_eq!(get("/healthz"), StatusCode::SERVICE_UNAVAILABLE);
    }
}
