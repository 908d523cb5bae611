//! What outlives a dataplane process: its conntrack, in a file under a state directory that
//! one process holds at a time, and the clock its expiries are on.
//!
//! A dataplane started with a state directory ([`crate::runtime::Config::state_dir`]):
//! 1. locks `DIR/owner` (`flock`); if another process holds it, reads that process's id from
//!    the file: its predecessor, to be replaced;
//! 2. maps `DIR/conntrack` if the file is one it can read ([`Conntrack::open_in`]), else
//!    prepares a new one beside it (the reason is logged), all while the predecessor runs;
//! 3. asks the predecessor to leave (SIGTERM), waits until its lock is released (a
//!    dataplane releases it as soon as its workers have stopped, and the kernel does when a
//!    process dies), and kills it if it has not left within [`LEAVE`];
//! 4. takes the file over ([`Conntrack::adopt`]) or puts the new one in its place, and
//!    writes its own process id into `DIR/owner` and its steering program's id into
//!    `DIR/program`: the program that stays attached after it, which the next agent (or
//!    `kxdp uninstall`) knows as kxdp's by that id, without the privilege of reading names.
//!
//! The directory should be on a tmpfs (`/run` is one on most distributions): a mapped file
//! there is memory. On a disk file system the kernel would write every change to conntrack
//! back to the disk, so the state is then kept in process memory instead, with a warning.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallClock};

use kxdp_dataplane::conntrack::{Adopted, Conntrack, ConntrackConfig, OpenError};
use kxdp_dataplane::Instant;

/// How long a predecessor has to leave after SIGTERM before it is killed.
pub const LEAVE: Duration = Duration::from_secs(5);

/// The pipeline's clock: `CLOCK_MONOTONIC`, the time since boot, which every process on the
/// node reads alike, so expiries written by one process mean the same to the next.
pub fn now() -> Instant {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is, and reads nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always readable");
    Instant::from_nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The identity of [`now`]'s clock: this boot's id (`/proc/sys/kernel/random/boot_id`), as 16
/// bytes. Expiries from another boot are meaningless on this one.
pub fn clock_id() -> std::io::Result<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let hex: Vec<u8> = text.trim().bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut id = [0u8; 16];
    if hex.len() != 32 {
        return Err(std::io::Error::other(format!(
            "boot id {text:?} is not a UUID"
        )));
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).expect("hex digits are ASCII");
        id[i] = u8::from_str_radix(s, 16).expect("two hex digits");
    }
    Ok(id)
}

/// How the state directory was found, for the log.
#[derive(Debug)]
pub struct Taken {
    /// The process replaced, if one held the directory.
    pub predecessor: Option<u32>,
    /// Whether it had to be killed.
    pub killed: bool,
    /// How long the wait for it took.
    pub waited: Duration,
    /// The flows taken over, if the file was, and how long that took.
    pub adopted: Option<(Adopted, Duration)>,
    /// Why the file there was not taken over, if it was not.
    pub fresh_because: Option<String>,
    /// When the directory was ours (the predecessor's workers had stopped).
    pub taken_at: WallClock,
    /// From then until the node's own interfaces had this process's sockets (the runtime
    /// fills it in): how long the node's dataplane traffic was dropped at most, besides the
    /// moment the predecessor took to release the directory after its workers stopped.
    pub dark: Duration,
}

/// A state directory, held: the lock on `DIR/owner`, released when dropped.
#[derive(Debug)]
pub struct Held {
    _owner: File,
}

/// The state directory being taken: prepared while a predecessor may still run, then
/// [`Preparing::take`]n.
#[derive(Debug)]
pub struct Preparing {
    dir: PathBuf,
    owner: File,
    predecessor: Option<u32>,
    program: Option<u32>,
    conntrack: Prepared,
}

#[derive(Debug)]
enum Prepared {
    /// The file there, mapped, to be adopted.
    Existing(Conntrack),
    /// A new one at `DIR/conntrack.new`, to replace it; why the file there was not taken.
    Fresh(Conntrack, String),
}

/// The steering program the last agent with state directory `dir` recorded (`DIR/program`).
pub fn recorded_program(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("program"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `dir`'s file system keeps files in memory (tmpfs, ramfs, hugetlbfs).
pub fn in_memory(dir: &Path) -> std::io::Result<bool> {
    const TMPFS: i64 = 0x0102_1994;
    const RAMFS: i64 = 0x8584_58f6_u32 as i64;
    const HUGETLBFS: i64 = 0x9584_58f6_u32 as i64;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: an all-zero statfs is a valid value for statfs to overwrite.
    let mut st: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` a statfs, both alive for the call.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86-64, not everywhere
    let kind = st.f_type as i64;
    Ok(matches!(kind, TMPFS | RAMFS | HUGETLBFS))
}

fn flock(file: &File, how: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own; it touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), how) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Write this process's id into the owner file, for operators (`cat DIR/owner`).
fn write_pid(owner: &mut File) -> std::io::Result<()> {
    owner.set_len(0)?;
    owner.rewind()?;
    writeln!(owner, "{}", std::process::id())
}

/// The process holding state directory `dir`, if one does.
pub fn holder(dir: &Path) -> std::io::Result<Option<u32>> {
    let owner = match File::open(dir.join("owner")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match flock(&owner, libc::LOCK_SH | libc::LOCK_NB) {
        // Free (ours for a moment, released as `owner` closes).
        Ok(()) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => lock_holder(&owner).map(Some),
        Err(e) => Err(e),
    }
}

/// The process holding the `flock` on `file`, as the kernel lists it in `/proc/locks` (not
/// as the file says: a holder that just took the lock may not have written its id yet).
fn lock_holder(file: &File) -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    let dev = meta.dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks")?;
    parse_lock_holder(&locks, &wanted).ok_or_else(|| {
        std::io::Error::other("the lock is held, but /proc/locks lists no holder (it just left?)")
    })
}

/// The pid of the granted `FLOCK` on `file` (`MAJ:MIN:INODE`) in `/proc/locks`' text.
fn parse_lock_holder(locks: &str, file: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        // `N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE START END`; waiters have `->`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, f, ..] if *f == file => pid.parse().ok(),
            _ => None,
        }
    })
}

impl Preparing {
    /// Lock `dir` (made owner-only if missing) or find who holds it, and map or prepare its
    /// conntrack file for `config`, expiries on [`clock_id`]'s clock. Nothing the holder uses
    /// is changed.
    pub fn start(dir: &Path, config: ConntrackConfig) -> Result<Preparing, String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("state directory {}: {what}: {e}", dir.display())
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail("creating it", e))?;
        }
        let mut owner = open_rw(&dir.join("owner")).map_err(|e| fail("owner", e))?;
        // Twice: a holder may leave between the try and the look at who holds it.
        let mut predecessor = None;
        for last in [false, true] {
            match flock(&owner, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {
                    write_pid(&mut owner).map_err(|e| fail("writing owner", e))?;
                    predecessor = None;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                    match lock_holder(&owner) {
                        Ok(pid) => {
                            predecessor = Some(pid);
                            break;
                        }
                        Err(e) if last => return Err(fail("finding who holds owner", e)),
                        Err(_) => {}
                    }
                }
                Err(e) => return Err(fail("locking owner", e)),
            }
        }
        let clock = clock_id().map_err(|e| fail("reading the boot id", e))?;
        let path = dir.join("conntrack");
        let existing = match File::options().read(true).write(true).open(&path) {
            Ok(file) => Conntrack::open_in(config, &file, clock).map_err(|e| match e {
                OpenError::Refused(why) => why,
                OpenError::Io(e) => e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("there was none".into()),
            Err(e) => Err(e.to_string()),
        };
        let conntrack = match existing {
            Ok(ct) => Prepared::Existing(ct),
            Err(why) => {
                let new = dir.join("conntrack.new");
                let file = open_rw(&new).map_err(|e| fail("conntrack.new", e))?;
                let ct = Conntrack::create_in(config, &file, clock)
                    .map_err(|e| fail("sizing conntrack.new", e))?;
                Prepared::Fresh(ct, why)
            }
        };
        Ok(Preparing {
            dir: dir.to_owned(),
            owner,
            predecessor,
            program: recorded_program(dir),
            conntrack,
        })
    }

    /// The process holding the directory now, if any.
    pub fn predecessor(&self) -> Option<u32> {
        self.predecessor
    }

    /// The steering program the last holder left attached, if it recorded one.
    pub fn predecessor_program(&self) -> Option<u32> {
        self.program
    }

    /// Have the predecessor leave (see the module), then take its flows over: the table to
    /// run with, the held directory and what happened. `program` is this process's steering
    /// program, recorded for the next.
    pub fn take(mut self, program: u32) -> Result<(Conntrack, Held, Taken), String> {
        let started = WallClock::now();
        let killed = match self.predecessor {
            Some(pid) => self.wait_for(pid)?,
            None => false,
        };
        let mut taken = Taken {
            predecessor: self.predecessor,
            killed,
            waited: started.elapsed(),
            adopted: None,
            fresh_because: None,
            taken_at: WallClock::now(),
            dark: Duration::ZERO,
        };
        if self.predecessor.is_some() {
            write_pid(&mut self.owner).map_err(|e| {
                format!("state directory {}: writing owner: {e}", self.dir.display())
            })?;
        }
        std::fs::write(self.dir.join("program"), format!("{program}\n")).map_err(|e| {
            format!(
                "state directory {}: writing program: {e}",
                self.dir.display()
            )
        })?;
        let ct = match self.conntrack {
            Prepared::Existing(ct) => {
                let t = WallClock::now();
                let adopted = ct.adopt(now());
                taken.adopted = Some((adopted, t.elapsed()));
                ct
            }
            Prepared::Fresh(ct, why) => {
                std::fs::rename(self.dir.join("conntrack.new"), self.dir.join("conntrack"))
                    .map_err(|e| {
                        format!(
                            "state directory {}: placing conntrack: {e}",
                            self.dir.display()
                        )
                    })?;
                taken.fresh_because = Some(why);
                ct
            }
        };
        Ok((ct, Held { _owner: self.owner }, taken))
    }

    /// SIGTERM `pid`, and wait for the lock it holds; SIGKILL it after [`LEAVE`]. Whether it
    /// was killed.
    fn wait_for(&self, pid: u32) -> Result<bool, String> {
        let signal = |sig| {
            // SAFETY: kill() sends a signal; it touches no memory of ours.
            unsafe { libc::kill(pid as libc::pid_t, sig) }
        };
        // Gone already (its lock is then free, and taken below).
        let _ = signal(libc::SIGTERM);
        let asked = WallClock::now();
        let mut killed = false;
        loop {
            match flock(&self.owner, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(killed),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => {
                    return Err(format!(
                        "state directory {}: locking owner: {e}",
                        self.dir.display()
                    ))
                }
            }
            if !killed && asked.elapsed() > LEAVE {
                let _ = signal(libc::SIGKILL);
                killed = true;
            }
            if asked.elapsed() > 2 * LEAVE {
                return Err(format!(
                    "state directory {}: process {pid} holds it and did not leave when killed",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_the_granted_flock_on_the_file_not_a_waiter() {
        let locks = "1: POSIX  ADVISORY  WRITE 700 00:1a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 812 fd:00:1234 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 900 fd:00:1234 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 813 fd:00:12345 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, "fd:00:1234"), Some(812));
        assert_eq!(parse_lock_holder(locks, "fd:00:12345"), Some(813));
        assert_eq!(parse_lock_holder(locks, "00:1a:99"), None);
    }

    #[test]
    fn the_clock_is_this_boots_and_moves_on() {
        let a = now();
        assert_eq!(clock_id().unwrap(), clock_id().unwrap());
        assert!(now() >= a);
    }
}
