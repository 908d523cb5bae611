//! The plugin's questions to the node's agent, each a plain HTTP/1.0 `GET` to the agent's
//! metrics listener (TCP, by default `127.0.0.1:9901` in the node's namespace) or a Unix
//! socket, bounded in time:
//!
//! - `STATUS`'s: is it ready? `GET /readyz`: 200 is ready, anything else is not, with the
//!   agent's own reason (`/readyz` says why it is not ready) or why it could not be asked;
//! - `ADD`'s: does it serve the pod's veth yet? `GET /served/<ifname>` every 2 ms until 200 or
//!   a bound ([`wait_served`]); an agent that does not answer at all is asked once.

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// How long a question may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How often `ADD` asks whether its veth is served.
pub const SERVED_POLL: Duration = Duration::from_millis(2);

/// Send `GET path` on `stream`; the answer, up to 64 KiB.
fn ask(mut stream: impl std::io::Read + std::io::Write, path: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: kxdp-agent\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    Ok(answer)
}

/// `GET path` from the agent at `address` within `timeout` (each of connecting, writing and
/// reading): its status and body, or why it could not be asked.
fn get(address: &AgentAddress, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let unreachable = |e: std::io::Error| {
        format!("the kxdp agent does not answer at {address:?}: {e} (is it running on this node?)")
    };
    let answer = match address {
        AgentAddress::Tcp(a) => std::net::TcpStream::connect_timeout(a, timeout).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            ask(s, path)
        }),
        AgentAddress::Unix(p) => UnixStream::connect(p).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            ask(s, path)
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
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Ok((status, body.to_owned()))
}

/// Ask the agent at `address` whether it is ready: `Ok` if it answers 200, else why not.
pub fn ready(address: &AgentAddress) -> Result<(), String> {
    let (status, body) = get(address, "/readyz", TIMEOUT)?;
    if status == 200 {
        return Ok(());
    }
    Err(format!("the kxdp agent is not ready ({status}): {body}"))
}

/// What came of waiting for the agent to serve an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// The agent serves it, after this many questions.
    Yes(u32),
    /// The agent answered, but did not serve it within the bound.
    NotYet,
    /// The agent did not answer (asked once): why.
    NoAgent(String),
}

/// Ask the agent at `address` every [`SERVED_POLL`] whether it serves pod interface `ifname`
/// (`/served/<ifname>`: 200 yes, anything else not yet), until it does or `bound` has passed;
/// an agent that does not answer is asked once.
pub fn wait_served(address: &AgentAddress, ifname: &str, bound: Duration) -> Served {
    let path = format!("/served/{ifname}");
    let start = Instant::now();
    let mut asked = 0;
    loop {
        let left = bound.saturating_sub(start.elapsed());
        // At least a moment for the question itself, so a zero bound still asks once.
        let timeout = left.clamp(Duration::from_millis(100), TIMEOUT);
        asked += 1;
        match get(address, &path, timeout) {
            Ok((200, _)) => return Served::Yes(asked),
            Ok(_) => {}
            Err(e) if asked == 1 => return Served::NoAgent(e),
            // An agent that answered before and not now (restarting, say): as not yet.
            Err(_) => {}
        }
        if start.elapsed() + SERVED_POLL > bound {
            return Served::NotYet;
        }
        std::thread::sleep(SERVED_POLL);
    }
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
    fn waiting_for_served_stops_at_200_at_the_bound_or_at_once_without_an_agent() {
        let (a, t, dir) = serve("HTTP/1.1 200 OK\r\n\r\nserved\n");
        assert_eq!(
            wait_served(&a, "kx0", Duration::from_secs(5)),
            Served::Yes(1)
        );
        t.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        // 404 every time: asked until the bound, then not yet.
        let dir = std::env::temp_dir().join(format!("kxdp-cni-served-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = std::sync::Arc::clone(&asked);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { break };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                assert!(buf[..n].starts_with(b"GET /served/kx0 HTTP/1.0\r\n"));
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\n\r\nkx0: not served\n");
            }
        });
        let start = Instant::now();
        let got = wait_served(&AgentAddress::Unix(path), "kx0", Duration::from_millis(100));
        assert_eq!(got, Served::NotYet);
        assert!(
            start.elapsed() >= Duration::from_millis(98),
            "{:?}",
            start.elapsed()
        );
        assert!(asked.load(std::sync::atomic::Ordering::Relaxed) > 1);
        std::fs::remove_dir_all(dir).unwrap();
        // No agent: one question, at once.
        let start = Instant::now();
        let got = wait_served(
            &AgentAddress::Unix("/nonexistent/kxdp.sock".into()),
            "kx0",
            Duration::from_secs(5),
        );
        assert!(
            matches!(got, Served::NoAgent(ref e) if e.contains("does not answer")),
            "{got:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
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
