//! Real clients and servers for the end-to-end tests, run inside namespaces and bounded in
//! time: a Python TCP server and client loop, and iperf3.

use std::process::{Child, Command, Stdio};

/// A TCP server in a namespace answering every connection on `port` with `reply` and then the
/// client's address as it saw it (`"<reply> <address>"`). It exits by itself after 60 s and
/// is killed when dropped. `start` returns once it listens.
#[derive(Debug)]
pub struct TcpServer(Child);

impl TcpServer {
    /// Start it in namespace `ns`.
    pub fn start(ns: &str, port: u16, reply: &str) -> TcpServer {
        let script = format!(
            "import socket, time\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port})); s.listen(64); s.settimeout(1)\n\
             print('listening', flush=True)\n\
             end = time.time() + 60\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       c, peer = s.accept()\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   c.sendall(('{reply} ' + peer[0]).encode()); c.close()\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        // One line once it listens, or end of file if it failed (it then says why on stderr).
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        assert_eq!(
            line.trim(),
            "listening",
            "the TCP server in {ns} did not start"
        );
        TcpServer(child)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From namespace `ns`, open `n` connections to `addr:port` one after another, each bounded
/// by 2 s, the whole run by 60 s; returns the answers, "ERR ..." for a failed connection.
pub fn connect_many(ns: &str, addr: &str, port: u16, n: u32) -> Vec<String> {
    let script = format!(
        "import socket\n\
         for i in range({n}):\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('{addr}', {port}), timeout=2)\n\
         \x20       print(c.recv(64).decode() or 'EMPTY'); c.close()\n\
         \x20   except Exception as e:\n\
         \x20       print('ERR', e)\n"
    );
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", ns, "python3", "-c", &script])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An iperf3 server for one test in a namespace; killed when dropped.
#[derive(Debug)]
pub struct IperfServer(Child);

impl IperfServer {
    /// Start it in namespace `ns` on `port`.
    pub fn start(ns: &str, port: u16) -> IperfServer {
        IperfServer(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "iperf3",
                    "-s",
                    "-1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 runs"),
        )
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run an iperf3 client in `ns` toward `server:port` for 2 s (`udp`: 20 Mbit/s of UDP),
/// bounded by 20 s; returns the bytes the receiver got (0 if the run failed).
pub fn iperf(ns: &str, server: &str, port: u16, udp: bool) -> u64 {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20", "ip", "netns", "exec", ns, "iperf3", "-c", server, "-t", "2", "-J", "-p",
    ])
    .arg(port.to_string());
    if udp {
        cmd.args(["-u", "-b", "20M"]);
    }
    let json = String::from_utf8_lossy(&cmd.output().expect("iperf3 runs").stdout).into_owned();
    // TCP: "sum_received": {.., "bytes": N, ..}; UDP reports in "sum".
    let section = if udp { "\"sum\":" } else { "\"sum_received\":" };
    json.rfind(section)
        .and_then(|at| {
            let rest = &json[at..];
            let b = rest.find("\"bytes\":")? + "\"bytes\":".len();
            rest[b..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
