//! Binding an admin listener: a TCP address, or a Unix socket this agent owns.
//!
//! A Unix socket path is taken with care, as the debug API behind it shows every flow:
//! - a missing parent directory is created with mode 0700;
//! - an existing path is connected to first: if anything answers, another agent serves there
//!   and this one refuses to start, naming the path (and the other's pid, from
//!   `SO_PEERCRED`); if nothing listens (a socket left by an agent that died), it is
//!   replaced; a path that is not a socket is never replaced;
//! - the socket is created with mode 0600 (owner only), under a umask that keeps it from
//!   being reachable by others even for a moment;
//! - when the listener is dropped, the path is removed only if it is still the socket this
//!   agent bound (same device and inode), never a successor's.
//!
//! Two agents starting at the same instant on the same stale path can still both replace it;
//! the later bind wins and the earlier one's socket is unreachable. Starting agents is the
//! init system's job, which does not do that.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::{umask, Mode};

use super::AdminAddr;

/// A bound admin listener.
#[derive(Debug)]
pub enum Listener {
    /// On TCP, at the address it got (a port 0 resolved).
    Tcp(tokio::net::TcpListener, std::net::SocketAddr),
    /// On a Unix socket, removed when dropped if it is still ours.
    Unix(tokio::net::UnixListener, OwnedSocket),
}

impl Listener {
    /// Where it listens (a TCP port 0 resolved).
    pub fn local(&self) -> AdminAddr {
        match self {
            Listener::Tcp(_, a) => AdminAddr::Tcp(*a),
            Listener::Unix(_, s) => AdminAddr::Unix(s.path.clone()),
        }
    }
}

/// A Unix socket path this agent bound: its device and inode, to recognise it at exit.
#[derive(Debug)]
pub struct OwnedSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => tracing::info!(
                path = %self.path.display(),
                "admin socket: the path is another agent's socket now; left in place"
            ),
            Err(_) => {}
        }
    }
}

/// Bind `addr` (before anything else starts, so a taken address fails the start). Errors
/// say what is wrong with the address and what to do.
pub async fn bind(addr: &AdminAddr) -> Result<Listener, String> {
    match addr {
        AdminAddr::Tcp(a) => bind_tcp(*a).map_err(|e| format!("{a}: {e}")),
        AdminAddr::Unix(p) => bind_unix(p)
            .await
            .map_err(|e| format!("unix:{}: {e}", p.display())),
    }
}

/// The accept queue's length: the kernel's most (`net.core.somaxconn`, 4096 by default), as
/// Go's net package asks for. A burst of connections waits there, instead of having its SYNs
/// dropped (a second's wait each) while the accept loop catches up.
const BACKLOG: u32 = 4096;

fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<Listener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    let local = listener.local_addr()?;
    Ok(Listener::Tcp(listener, local))
}

/// What is at a socket path before we bind it.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    Stale,
}

async fn bind_unix(path: &Path) -> Result<Listener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    if look(path).await? == Found::Stale {
        std::fs::remove_file(path).map_err(|e| format!("removing the stale socket: {e}"))?;
        tracing::info!(path = %path.display(), "admin socket: replaced a stale socket nobody listened on");
    }
    // The umask is the process's: this runs at start-up, before the agent creates any other
    // file, and is put back at once.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod 0600: {e}"))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    Ok(Listener::Unix(
        listener,
        OwnedSocket {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

/// Whether `path` is free, a stale socket, or (an error) in use or not ours to replace.
async fn look(path: &Path) -> Result<Found, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(e.to_string()),
        Ok(m) => m,
    };
    if !meta.file_type().is_socket() {
        return Err("exists and is not a socket; refusing to replace it".into());
    }
    let connect = tokio::net::UnixStream::connect(path);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(stream)) => {
            let pid =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map(|c| format!(" (pid {})", c.pid()))
                    .unwrap_or_default();
            Err(format!(
                "a live kxdp agent{pid} is serving on this socket: stop it first, or give this \
                 agent another --admin path"
            ))
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Found::Stale),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Nothing),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(
            "a live process is listening on this socket (its queue is full): stop it first, or \
             give this agent another --admin path"
                .into(),
        ),
        Ok(Err(e)) => Err(format!("cannot tell whether an agent serves on it: {e}")),
        Err(_) => Err(
            "a process holds this socket but did not accept within 2 s: stop it first, or give \
             this agent another --admin path"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of this process, removed when the test ends, passed or failed.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("kxdp-listen-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn unix(path: &Path) -> AdminAddr {
        AdminAddr::Unix(path.to_owned())
    }

    #[tokio::test]
    async fn a_socket_is_owner_only_in_a_private_directory() {
        let dir = Scratch::new("mode");
        let path = dir.join("run/kxdp/admin.sock");
        let l = bind(&unix(&path)).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(l.local().to_string(), format!("unix:{}", path.display()));
        drop(l);
        assert!(!path.exists(), "removed at exit");
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = Scratch::new("live");
        std::fs::create_dir_all(&*dir).unwrap();
        let path = dir.join("admin.sock");
        let first = bind(&unix(&path)).await.unwrap();
        let e = bind(&unix(&path)).await.unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(
            e.contains("live kxdp agent") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        assert!(path.exists(), "the live socket is left alone");
        drop(first);

        // A socket whose process died without removing it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let second = bind(&unix(&path)).await.unwrap();
        std::os::unix::net::UnixStream::connect(&path).expect("the new socket answers");
        drop(second);

        // Something that is not a socket is never replaced.
        std::fs::write(&path, "not a socket").unwrap();
        let e = bind(&unix(&path)).await.unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn only_our_own_socket_is_removed_at_exit() {
        let dir = Scratch::new("ours");
        std::fs::create_dir_all(&*dir).unwrap();
        let path = dir.join("admin.sock");
        let old = bind(&unix(&path)).await.unwrap();
        // Someone removed it and another agent bound the path since.
        std::fs::remove_file(&path).unwrap();
        let new = bind(&unix(&path)).await.unwrap();
        drop(old);
        assert!(path.exists(), "the other agent's socket stays");
        std::os::unix::net::UnixStream::connect(&path).expect("and answers");
        drop(new);
        assert!(!path.exists());
    }
}
