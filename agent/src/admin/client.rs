//! The client the `kxdp` CLI reads a running agent's admin API with.

use std::io::{Read, Write};
use std::time::Duration;

use super::AdminAddr;

/// GET `path` from the admin API at `addr`: the status and the body. For the CLI (blocking,
/// bounded by a 10 s timeout).
pub fn get(addr: &AdminAddr, path: &str) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let timeout = Some(Duration::from_secs(10));
    let mut raw = Vec::new();
    let io = |e: std::io::Error| {
        format!("cannot reach the kxdp agent's admin API at {addr}: {e} (is the agent running? --admin says where it listens)")
    };
    match addr {
        AdminAddr::Tcp(a) => {
            let mut s =
                std::net::TcpStream::connect_timeout(a, Duration::from_secs(10)).map_err(io)?;
            s.set_read_timeout(timeout).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
        AdminAddr::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p).map_err(io)?;
            s.set_read_timeout(timeout).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("the admin API at {addr} sent no HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the admin API at {addr} sent a bad status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET a JSON view, failing with the API's own message on a non-200 answer.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: &AdminAddr, path: &str) -> Result<T, String> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        return Err(format!("{path}: {status}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: unexpected answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
