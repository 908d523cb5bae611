//! `STATUS`'s question to the node's agent: is it ready? A plain HTTP/1.0 `GET /readyz` to
//! the agent's metrics listener (TCP, by default `127.0.0.1:9901` in the node's namespace) or
//! a Unix socket, bounded in time; 200 is ready, anything else is not, with the agent's own
//! reason (`/readyz` says why it is not ready) or why it could not be asked.

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the agent answers `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAddress {
    /// `ADDRESS:PORT`.
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl AgentAddress {
    /// `ADDRESS:PORT` or `unix:PATH`.
    pub fn parse(text: &str) -> Result<AgentAddress, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{text:?} names no socket path"));
            }
            return Ok(AgentAddress::Unix(path.into()));
        }
        text.parse()
            .map(AgentAddress::Tcp)
            .map_err(|_| format!("{text:?} is not ADDRESS:PORT or unix:PATH"))
    }
}

/// How long the question may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Send `GET /readyz` on `stream`; the answer, up to 64 KiB.
fn ask(mut stream: impl std::io::Read + std::io::Write) -> std::io::Result<Vec<u8>> {
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: kxdp-agent\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    Ok(answer)
}

/// Ask the agent at `address` whether it is ready: `Ok` if it answers 200, else why not.
pub fn ready(address: &AgentAddress) -> Result<(), String> {
    let unreachable = |e: std::io::Error| {
        format!("the kxdp agent does not answer at {address:?}: {e} (is it running on this node?)")
    };
    let answer = match address {
        AgentAddress::Tcp(a) => std::net::TcpStream::connect_timeout(a, TIMEOUT).and_then(|s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            ask(s)
        }),
        AgentAddress::Unix(p) => UnixStream::connect(p).and_then(|s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            ask(s)
        }),
    }
    .map_err(unreachable)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("the answer at {address:?} is not HTTP: {text:?}"))?;
    if status == 200 {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Err(format!("the kxdp agent is not ready ({status}): {body}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A one-shot server on a Unix socket answering `reply`.
    fn serve(reply: &'static str) -> (AgentAddress, std::thread::JoinHandle<()>, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kxdp-cni-agent-{}-{}",
            std::process::id(),
            reply.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(reply.as_bytes()).unwrap();
        });
        (AgentAddress::Unix(path), t, dir)
    }

    #[test]
    fn ready_only_on_200_and_says_the_agent_s_reason() {
        let (a, t, dir) = serve("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n");
        assert_eq!(ready(&a), Ok(()));
        t.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        let (a, t, dir) = serve(
            "HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready: node n: no Node object yet\n",
        );
        let e = ready(&a).unwrap_err();
        assert!(e.contains("503") && e.contains("no Node object yet"), "{e}");
        t.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        let e = ready(&AgentAddress::Unix("/nonexistent/kxdp.sock".into())).unwrap_err();
        assert!(e.contains("does not answer"), "{e}");
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            AgentAddress::parse("127.0.0.1:9901"),
            Ok(AgentAddress::Tcp("127.0.0.1:9901".parse().unwrap()))
        );
        assert_eq!(
            AgentAddress::parse("unix:/run/kxdp/m.sock"),
            Ok(AgentAddress::Unix("/run/kxdp/m.sock".into()))
        );
        assert!(AgentAddress::parse("unix:").is_err());
        assert!(AgentAddress::parse("localhost").is_err());
    }
}
