//! The client the `kxdp` CLI (and the tests) read a running agent's admin API with: hyper's
//! HTTP/1.1 client over TCP or a Unix socket, on a small current-thread runtime of its own,
//! every request bounded by [`TIMEOUT`].
//!
//! Errors name the address and say whether an agent runs there: nothing at the path or port
//! (not running, or listening elsewhere), no permission (the debug socket is its owner's), or
//! running but not answering in time. Blocking: not for use inside an async runtime.

use std::io;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;

use super::AdminAddr;

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// GET `path` from the admin API at `addr`: the status and the body.
pub fn get(addr: &AdminAddr, path: &str) -> Result<(u16, String), String> {
    get_within(addr, path, TIMEOUT)
}

/// [`get`], bounded by `timeout`.
pub fn get_within(
    addr: &AdminAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the admin API client's runtime: {e}"))?;
    let mut connected = false;
    runtime.block_on(async {
        match tokio::time::timeout(timeout, request(addr, path, &mut connected)).await {
            Ok(result) => result,
            Err(_) if connected => Err(format!(
                "the kxdp agent at {addr} accepted the connection but did not answer {path} \
                 within {timeout:?}: it runs, but is stuck or overloaded"
            )),
            Err(_) => Err(format!(
                "cannot reach the kxdp agent's admin API at {addr}: no connection within \
                 {timeout:?} (is the address right, and reachable from here?)"
            )),
        }
    })
}

/// `path` from `addr`; sets `connected` once the connection is made, so that a timeout can
/// say whether anything answered at the address.
async fn request(
    addr: &AdminAddr,
    path: &str,
    connected: &mut bool,
) -> Result<(u16, String), String> {
    let unreachable = |e: io::Error| unreachable_error(addr, &e);
    let (status, body) = match addr {
        AdminAddr::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(unreachable)?;
            *connected = true;
            exchange(addr, s, path).await?
        }
        AdminAddr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(unreachable)?;
            *connected = true;
            exchange(addr, s, path).await?
        }
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Why `addr` could not be reached, in words that say whether the agent runs.
fn unreachable_error(addr: &AdminAddr, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::NotFound => {
            "no such socket: the agent is not running, or listens elsewhere (--admin)"
        }
        io::ErrorKind::ConnectionRefused => {
            "connection refused: the agent is not running, or listens elsewhere (--admin)"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied: the debug socket is its owner's only (run kxdp as the agent's \
             user, root)"
        }
        _ => "cannot connect",
    };
    format!("cannot reach the kxdp agent's admin API at {addr}: {why} ({e})")
}

async fn exchange<S>(addr: &AdminAddr, stream: S, path: &str) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let broken = |e: hyper::Error| {
        if e.is_canceled() || e.is_incomplete_message() {
            format!(
                "the kxdp agent at {addr} closed the connection before answering {path} (it runs; \
                 busy with too many connections?)"
            )
        } else {
            format!("the kxdp agent at {addr} failed to answer {path}: {e}")
        }
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(broken)?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("cannot ask the kxdp agent at {addr} for {path:?}: {e}"))?;
    let response = sender.send_request(request).await.map_err(broken)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(broken)?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

/// GET a JSON view, failing with the API's own message on a non-200 answer.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: &AdminAddr, path: &str) -> Result<T, String> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        return Err(format!(
            "the kxdp agent at {addr} refused {path} ({status}): {}",
            body.trim()
        ));
    }
    serde_json::from_str(&body).map_err(|e| {
        format!(
            "the kxdp agent at {addr} answered {path} with JSON this kxdp cannot read ({e}): \
             are the agent and the kxdp command the same version?"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_the_agent_runs() {
        let dir = std::env::temp_dir().join(format!("kxdp-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("none.sock");
        let e = get(&AdminAddr::Unix(path.clone()), "/healthz").unwrap_err();
        assert!(
            e.contains(&format!("unix:{}", path.display())) && e.contains("not running"),
            "{e}"
        );
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = get(&AdminAddr::Tcp(port), "/healthz").unwrap_err();
        assert!(
            e.contains(&port.to_string()) && e.contains("not running"),
            "{e}"
        );
        // Something that accepts and never answers.
        let silent = std::os::unix::net::UnixListener::bind(dir.join("silent.sock")).unwrap();
        let e = get_within(
            &AdminAddr::Unix(dir.join("silent.sock")),
            "/healthz",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.contains("did not answer") && e.contains("it runs"), "{e}");
        drop(silent);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
