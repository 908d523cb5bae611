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
        TcpServer(python_server(ns, &script, "TCP"))
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP echo server in a namespace (60 s at most): sends every datagram back to its sender.
#[derive(Debug)]
pub struct UdpEchoServer(Child);

impl UdpEchoServer {
    /// Start it in namespace `ns` on `port`.
    pub fn start(ns: &str, port: u16) -> UdpEchoServer {
        let script = format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', {port})); s.settimeout(1)\n\
             print('listening', flush=True)\n\
             end = time.time() + 60\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       data, peer = s.recvfrom(65535)\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   s.sendto(data, peer)\n"
        );
        UdpEchoServer(python_server(ns, &script, "UDP echo"))
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From namespace `ns`, send `n` datagrams of `size` bytes to the UDP echo server at
/// `addr:port`, one at a time, each waited for at most 2 s; returns how many came back whole.
pub fn udp_echo_many(ns: &str, addr: &str, port: u16, size: usize, n: u32) -> u32 {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n\
         ok = 0\n\
         for i in range({n}):\n\
         \x20   msg = bytes([i % 251]) * {size}\n\
         \x20   s.sendto(msg, ('{addr}', {port}))\n\
         \x20   try:\n\
         \x20       ok += s.recv(65535) == msg\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         print(ok)\n"
    );
    python_output(ns, &script).trim().parse().unwrap_or(0)
}

/// Run a Python server `script` in namespace `ns`; returns once it printed `listening`.
fn python_server(ns: &str, script: &str, what: &str) -> Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
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
        "the {what} server in {ns} did not start"
    );
    child
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
    python_output(ns, &script)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Run a Python client `script` in namespace `ns`, bounded by 60 s; what it printed.
fn python_output(ns: &str, script: &str) -> String {
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", ns, "python3", "-c", script])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stop `child`, a `timeout` running a command: SIGTERM, which `timeout` passes on to the
/// command (SIGKILL, as `Child::kill` sends, would end `timeout` alone and leave the command
/// running without its bound, orphaned), then reap it; SIGKILL if it lingers 5 s.
pub fn stop_bounded(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
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
    let json = iperf_json(ns, server, port, udp.then_some("20M"), 2);
    receiver_number(&json, udp, "bytes").map_or(0, |b| b as u64)
}

/// Run an iperf3 client in `ns` toward `server:port` for `secs` seconds (TCP, or UDP offered
/// at `udp_rate`, as iperf3's `-b` takes it), bounded by `secs + 15` s; returns the receiver's
/// bits per second (0 if the run failed).
pub fn iperf_rate(ns: &str, server: &str, port: u16, udp_rate: Option<&str>, secs: u32) -> f64 {
    let json = iperf_json(ns, server, port, udp_rate, secs);
    receiver_number(&json, udp_rate.is_some(), "bits_per_second").unwrap_or(0.0)
}

/// iperf3's JSON report of a run (UDP at `udp_rate` if given), bounded by `secs + 15` s.
fn iperf_json(ns: &str, server: &str, port: u16, udp_rate: Option<&str>, secs: u32) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg((secs + 15).to_string())
        .args([
            "ip", "netns", "exec", ns, "iperf3", "-c", server, "-J", "-t",
        ])
        .arg(secs.to_string())
        .arg("-p")
        .arg(port.to_string());
    if let Some(rate) = udp_rate {
        cmd.args(["-u", "-b", rate]);
    }
    String::from_utf8_lossy(&cmd.output().expect("iperf3 runs").stdout).into_owned()
}

/// A number of the receiver's summary in iperf3's JSON: TCP reports it in `sum_received`,
/// UDP in `sum`.
fn receiver_number(json: &str, udp: bool, field: &str) -> Option<f64> {
    let section = if udp { "\"sum\":" } else { "\"sum_received\":" };
    let rest = &json[json.rfind(section)?..];
    let key = format!("\"{field}\":");
    let at = rest.find(&key)? + key.len();
    rest[at..]
        .trim_start()
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+'))
        .next()?
        .parse()
        .ok()
}

/// An HTTP server in a namespace answering every GET on `port` with `body` (one line); exits
/// by itself after `lifetime_s` seconds and is killed when dropped. `start` returns once it
/// listens.
#[derive(Debug)]
pub struct HttpServer(Child);

impl HttpServer {
    /// Start it in namespace `ns`.
    pub fn start(ns: &str, port: u16, body: &str, lifetime_s: u32) -> HttpServer {
        let script = format!(
            "import http.server, threading, time\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       b = b'{body}\\n'\n\
             \x20       self.send_response(200); self.send_header('Content-Length', str(len(b)))\n\
             \x20       self.end_headers(); self.wfile.write(b)\n\
             \x20   def log_message(self, *a): pass\n\
             s = http.server.ThreadingHTTPServer(('0.0.0.0', {port}), H)\n\
             threading.Timer({lifetime_s}, s.shutdown).start()\n\
             print('listening', flush=True)\n\
             s.serve_forever()\n"
        );
        HttpServer(python_server(ns, &script, "HTTP"))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From namespace `ns`, GET `url` `n` times, each on a new connection bounded by 2 s, the
/// whole run by 60 s; returns each answer's body (trimmed) with its latency in
/// milliseconds, or "ERR <why>" (refused connections say "ERR refused").
pub fn http_get_many(ns: &str, url: &str, n: u32) -> Vec<(String, f64)> {
    let script = format!(
        "import urllib.request, time\n\
         for i in range({n}):\n\
         \x20   t = time.perf_counter()\n\
         \x20   try:\n\
         \x20       body = urllib.request.urlopen('{url}', timeout=2).read().decode().strip()\n\
         \x20   except ConnectionRefusedError:\n\
         \x20       body = 'ERR refused'\n\
         \x20   except Exception as e:\n\
         \x20       r = getattr(e, 'reason', e)\n\
         \x20       body = 'ERR refused' if isinstance(r, ConnectionRefusedError) else 'ERR ' + str(r).replace(' ', '_')\n\
         \x20   print(body, (time.perf_counter() - t) * 1000, flush=True)\n"
    );
    python_output(ns, &script)
        .lines()
        .filter_map(|l| {
            let (body, ms) = l.rsplit_once(' ')?;
            Some((body.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

/// The packets of protocol `proto` (`Tcp:`, `Udp:`) namespace `ns`'s kernel dropped for a
/// bad checksum (`InCsumErrors` of /proc/net/snmp).
pub fn checksum_errors(ns: &str, proto: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("cat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with(proto));
    let (names, values) = (lines.next().expect("names"), lines.next().expect("values"));
    let at = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .expect("InCsumErrors");
    values
        .split_whitespace()
        .nth(at)
        .expect("a value")
        .parse()
        .expect("a number")
}
