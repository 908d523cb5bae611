//! Handing a running dataplane's sockets to its successor, so that replacing the agent drops
//! nothing.
//!
//! A dataplane with a state directory listens on `DIR/handover`, a Unix `SOCK_SEQPACKET`
//! socket (the directory is its owner's alone). A successor, ready to serve, connects and
//! says which layout it speaks ([`VERSION`]). The running dataplane then stops its workers
//! between two batches (no frame in their hands), lets go of the state directory, and sends,
//! per worker, its UMEM and every AF_XDP socket on it ([`HandedUmem`]) with the descriptors
//! attached (`SCM_RIGHTS`): the UMEM's memory file and socket, and each port's socket. The
//! sockets stay bound and registered in the old program's XSKMAP throughout, so the kernel
//! keeps receiving into their rings while neither process reads them; the successor maps the
//! same rings and the same area, registers the sockets in its own XSKMAP, replaces the
//! programs, and reads on from where its predecessor stopped.
//!
//! A successor that does not know the layout it is offered, or a predecessor that does not
//! know the one asked for, says so and nothing is handed: the successor then has its
//! predecessor leave and binds sockets of its own (a gap of tens of milliseconds).
//!
//! Messages, little-endian, one per packet:
//! - hello (successor): `KXDPHAND`, version `u32`;
//! - UMEM: kind 1, worker `u32`, frames, chunk size, headroom, ring entries, TX metadata
//!   bytes (`u32` each), the socket unbound (`u8`), ports `u32`, then the owner of each chunk (`u16`: 0 free, `0xffff`
//!   in a socket not handed over, else 1 + the port's index); descriptors: the memory file and
//!   the UMEM's socket;
//! - port (one per port of the UMEM before, in order): kind 2, interface index, queue (`u32`
//!   each); descriptor: its socket, or none for the port bound on the UMEM's socket;
//! - end: kind 3, UMEMs sent `u32`;
//! - refused: kind 4, why (UTF-8).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};

use crate::xsk::{HandedPort, HandedUmem};

/// The layout of what is handed over: a successor adopts only this one.
pub const VERSION: u32 = 2;

const HELLO: &[u8; 8] = b"KXDPHAND";
const UMEM: u8 = 1;
const PORT: u8 = 2;
const END: u8 = 3;
const REFUSED: u8 = 4;

/// How long a successor waits for everything to be handed.
const WAIT: Duration = Duration::from_secs(2);

/// The largest message: a UMEM of 2^20 chunks' owners.
const MAX_MESSAGE: usize = 64 + 2 * (1 << 20);

/// The socket's path in state directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("handover")
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Listen at `dir`'s handover socket (replacing a predecessor's file: whoever calls this holds
/// the directory).
pub fn listen(dir: &Path) -> std::io::Result<OwnedFd> {
    let path = path(dir);
    let _ = std::fs::remove_file(&path);
    let fd = seqpacket()?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
    socket::listen(&fd, socket::Backlog::new(4)?)?;
    Ok(fd)
}

/// The next successor that connected, or an error once the listener is shut down.
pub fn accept(listener: &OwnedFd) -> std::io::Result<OwnedFd> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wake a thread blocked in [`accept`] on `listener`: it returns an error.
pub fn shut(listener: &OwnedFd) {
    let _ = socket::shutdown(listener.as_raw_fd(), socket::Shutdown::Both);
}

fn send(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &cmsg[..] };
    socket::sendmsg::<()>(
        fd.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        // A successor gone mid-way is an error here, not a SIGPIPE.
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// One message and the descriptors that came with it.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    // Room for as many descriptors as one message can carry (`SCM_MAX_FD`), so that none is
    // cut off, and left open, before the count is checked.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel installed these descriptors in this process for us alone.
            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(std::io::Error::other("a message was cut short"));
    }
    Ok((msg.bytes, fds))
}

/// Read a successor's hello on `conn`: Ok if it asks for [`VERSION`].
pub fn read_hello(conn: &OwnedFd) -> std::io::Result<()> {
    set_timeout(conn, WAIT)?;
    let mut buf = [0u8; 64];
    let (n, _) = receive(conn, &mut buf)?;
    match &buf[..n] {
        [h @ .., a, b, c, d] if h == HELLO => {
            let v = u32::from_le_bytes([*a, *b, *c, *d]);
            if v == VERSION {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "the successor asks for handover layout {v}; this agent knows {VERSION}"
                )))
            }
        }
        _ => Err(std::io::Error::other("not a handover request")),
    }
}

/// Tell the successor on `conn` why nothing is handed.
pub fn refuse(conn: &OwnedFd, why: &str) -> std::io::Result<()> {
    let mut msg = vec![REFUSED];
    msg.extend_from_slice(why.as_bytes());
    send(conn, &msg, &[])
}

/// Send each worker's UMEM and ports (by worker number) on `conn`.
pub fn answer(conn: &OwnedFd, umems: &[(u32, HandedUmem)]) -> std::io::Result<()> {
    // Room for the largest message, where the privilege to exceed the system's limit is ours.
    let _ = socket::setsockopt(conn, socket::sockopt::SndBufForce, &(2 * MAX_MESSAGE));
    for (worker, u) in umems {
        let mut msg = vec![UMEM];
        for v in [
            *worker,
            u.frames,
            u.frame_size,
            u.headroom,
            u.ring_size,
            u.tx_metadata_len,
        ] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.push(u8::from(u.unbound));
        msg.extend_from_slice(&(u.ports.len() as u32).to_le_bytes());
        for o in &u.owner {
            msg.extend_from_slice(&o.to_le_bytes());
        }
        send(conn, &msg, &[u.memfd.as_raw_fd(), u.socket.as_raw_fd()])?;
        for p in &u.ports {
            let mut msg = vec![PORT];
            msg.extend_from_slice(&p.ifindex.to_le_bytes());
            msg.extend_from_slice(&p.queue.to_le_bytes());
            let fds: Vec<RawFd> = p.fd.iter().map(AsRawFd::as_raw_fd).collect();
            send(conn, &msg, &fds)?;
        }
    }
    let mut end = vec![END];
    end.extend_from_slice(&(umems.len() as u32).to_le_bytes());
    send(conn, &end, &[])
}

fn set_timeout(fd: &OwnedFd, t: Duration) -> std::io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(t.as_secs() as _, t.subsec_micros() as _);
    socket::setsockopt(fd, socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

/// Little-endian `u32`s from the front of a message.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> std::io::Result<u8> {
        let (head, rest) = self
            .0
            .split_first()
            .ok_or_else(|| std::io::Error::other("a message is too short"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| std::io::Error::other("a message is too short"))?;
        self.0 = rest;
        Ok(u32::from_le_bytes(*head))
    }
}

/// Ask the dataplane holding state directory `dir` to hand its sockets over: each worker's
/// UMEM and ports, by worker number. An error says why nothing (usable) was handed; the
/// predecessor may then have stopped its workers all the same.
pub fn request(dir: &Path) -> std::io::Result<Vec<(u32, HandedUmem)>> {
    request_layout(dir, VERSION)
}

/// [`request`], asking for layout `version`: another than [`VERSION`] is for tests of a
/// predecessor's refusal.
pub fn request_layout(dir: &Path, version: u32) -> std::io::Result<Vec<(u32, HandedUmem)>> {
    let conn = seqpacket()?;
    socket::connect(conn.as_raw_fd(), &UnixAddr::new(&path(dir))?)?;
    set_timeout(&conn, WAIT)?;
    let mut hello = HELLO.to_vec();
    hello.extend_from_slice(&version.to_le_bytes());
    send(&conn, &hello, &[])?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut receiving = Receiving::default();
    loop {
        let (n, fds) = receive(&conn, &mut buf)?;
        if let Some(umems) = receiving.take(&buf[..n], fds)? {
            return Ok(umems);
        }
    }
}

/// What a successor has made of its predecessor's messages so far.
#[derive(Debug, Default)]
pub struct Receiving {
    umems: Vec<(u32, HandedUmem)>,
    /// Ports the last UMEM announced that have not come yet.
    ports_due: usize,
}

impl Receiving {
    /// Take one message and the descriptors that came with it: every UMEM and port handed,
    /// once the end has come; an error for a message that does not fit (the descriptors
    /// taken so far are closed with `self`).
    pub fn take(
        &mut self,
        msg: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> std::io::Result<Option<Vec<(u32, HandedUmem)>>> {
        let (kind, body) = msg
            .split_first()
            .ok_or_else(|| std::io::Error::other("the predecessor closed the connection"))?;
        let mut r = Reader(body);
        match *kind {
            UMEM if self.ports_due == 0 => {
                let worker = r.u32()?;
                let [frames, frame_size, headroom, ring_size, tx_metadata_len] =
                    [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?];
                let unbound = r.u8()?;
                let ports_due = r.u32()? as usize;
                if r.0.len() != 2 * frames as usize || fds.len() != 2 {
                    return Err(std::io::Error::other(
                        "a UMEM message does not hold together",
                    ));
                }
                let owner =
                    r.0.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                let socket = fds.pop().expect("two descriptors");
                let memfd = fds.pop().expect("two descriptors");
                self.ports_due = ports_due;
                self.umems.push((
                    worker,
                    HandedUmem {
                        memfd,
                        socket,
                        frames,
                        frame_size,
                        headroom,
                        ring_size,
                        tx_metadata_len,
                        unbound: unbound != 0,
                        owner,
                        ports: Vec::with_capacity(ports_due.min(1024)),
                    },
                ));
                Ok(None)
            }
            PORT if self.ports_due > 0 => {
                let (ifindex, queue) = (r.u32()?, r.u32()?);
                if fds.len() > 1 {
                    return Err(std::io::Error::other(
                        "a port came with several descriptors",
                    ));
                }
                let (_, u) = self.umems.last_mut().expect("a port follows its UMEM");
                u.ports.push(HandedPort {
                    fd: fds.pop(),
                    ifindex,
                    queue,
                });
                self.ports_due -= 1;
                Ok(None)
            }
            END if self.ports_due == 0 => {
                let sent = r.u32()? as usize;
                if sent != self.umems.len() {
                    return Err(std::io::Error::other(format!(
                        "{sent} UMEMs were sent, {} came",
                        self.umems.len()
                    )));
                }
                Ok(Some(std::mem::take(&mut self.umems)))
            }
            REFUSED => Err(std::io::Error::other(format!(
                "the running agent refused: {}",
                String::from_utf8_lossy(body)
            ))),
            _ => Err(std::io::Error::other("messages out of order")),
        }
    }
}
