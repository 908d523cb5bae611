//! What outlives a dataplane process: its conntrack, in a file under a state directory that
//! one process holds at a time, and the clock its expiries are on.
//!
//! A dataplane started with a state directory ([`crate::runtime::Config::state_dir`]):
//! 1. locks `DIR/owner` (`flock`); if another process holds it, finds that process in
//!    `/proc/locks`: its predecessor, to be replaced;
//! 2. maps `DIR/conntrack` if the file is one it can read ([`Conntrack::open_in`]), else
//!    prepares a new one beside it (`conntrack.new.PID`; the reason is logged), all while the
//!    predecessor runs;
//! 3. asks the predecessor to leave (SIGTERM), waits until its lock is released (a
//!    dataplane releases it as soon as its workers have stopped, and the kernel does when a
//!    process dies), and kills it if it has not left within [`LEAVE`]; a predecessor in
//!    another PID namespace (another container) is only waited for;
//! 4. takes the file over ([`Conntrack::adopt`]; if the file was replaced meanwhile, the one
//!    there now) or puts the new one in its place, and writes its own process id into
//!    `DIR/owner` and its steering program's id at the head of `DIR/programs`: the programs
//!    that stay attached after agents, which the next agent (or `kxdp uninstall`) knows as
//!    kxdp's by their ids, without the privilege of reading names.
//!
//! The directory should be on a tmpfs (`/run` is one on most distributions): a mapped file
//! there is memory, allocated whole when the file is made (a full tmpfs fails the start
//! rather than a worker's write). On a disk file system the kernel would write every change to conntrack
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
    /// The process replaced, if one held the directory: its pid, 0 if it runs in another PID
    /// namespace (a container), where it could only be waited for.
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
    /// moment the predecessor took to release the directory after its workers stopped. With
    /// the sockets handed over, nothing is dropped: their rings held the traffic meanwhile.
    pub dark: Duration,
    /// With a predecessor: how many of its sockets were handed over and taken up
    /// ([`crate::handover`]), or why none were (the runtime fills it in).
    pub handover: Option<Result<usize, String>>,
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
    config: ConntrackConfig,
    clock: [u8; 16],
    owner: File,
    predecessor: Option<u32>,
    /// The predecessor's process, opened while it held the directory (so never another
    /// process that reused its id), to tell it to stop once it handed its sockets over.
    predecessor_process: Option<std::os::fd::OwnedFd>,
    programs: Vec<u32>,
    conntrack: Prepared,
}

#[derive(Debug)]
enum Prepared {
    /// The file there (device and inode), mapped, to be adopted.
    Existing(Conntrack, (u64, u64)),
    /// A new one at this path in the directory, to replace it; why the file there was not
    /// taken.
    Fresh(Conntrack, PathBuf, String),
}

/// How many steering programs `DIR/programs` remembers: kxdp's own, known by id where the
/// privilege to read a program's name (CAP_SYS_ADMIN) is missing. An agent that died before
/// it replaced its predecessor's program on every interface leaves that one in place, so a
/// few generations are kept.
const PROGRAMS_KEPT: usize = 8;

/// The steering programs the last agents with state directory `dir` attached, newest first
/// (`DIR/programs`).
pub fn recorded_programs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("programs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `dir`'s file system keeps files in memory and takes them as written (tmpfs,
/// ramfs; not hugetlbfs, whose files cannot be written or sized that way).
pub fn in_memory(dir: &Path) -> std::io::Result<bool> {
    const TMPFS: i64 = 0x0102_1994;
    const RAMFS: i64 = 0x8584_58f6_u32 as i64;
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
    Ok(matches!(kind, TMPFS | RAMFS))
}

/// A descriptor of process `pid` (`pidfd_open`, Linux 5.3), if it can be had.
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a new descriptor owned by nothing else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Send `signal` to the process behind `process` (a pidfd): never to another that reused its
/// id.
fn pidfd_signal(process: &std::os::fd::OwnedFd, signal: libc::c_int) {
    // SAFETY: pidfd_send_signal with no siginfo (null) and no flags reads no memory of ours.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            process.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
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

/// The file's device and inode.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The process holding state directory `dir`, if one does: its pid as this process's PID
/// namespace sees it, 0 if it runs in another. Takes no lock of its own.
pub fn holder(dir: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::metadata(dir.join("owner")) {
        Ok(meta) => lock_holder(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The process holding the exclusive `flock` on the file `meta` describes, as the kernel
/// lists it in `/proc/locks` (not as the file says: a holder that just took the lock may not
/// have written its id yet).
fn lock_holder(meta: &std::fs::Metadata) -> std::io::Result<Option<u32>> {
    let (dev, ino) = identity(meta);
    let wanted = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(parse_lock_holder(&locks, &wanted))
}

/// The pid of the granted exclusive `FLOCK` on `file` (`MAJ:MIN:INODE`) in `/proc/locks`'
/// text (0 for a holder in another PID namespace).
fn parse_lock_holder(locks: &str, file: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        // `N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE START END`; waiters have `->`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, f, ..] if *f == file => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The conntrack file of `dir` mapped if it is one this build reads, else a new one beside it
/// (named for this process, so that no two agents preparing at once share one).
fn prepare_conntrack(
    dir: &Path,
    config: ConntrackConfig,
    clock: [u8; 16],
) -> Result<Prepared, String> {
    let fail =
        |what: &str, e: std::io::Error| format!("state directory {}: {what}: {e}", dir.display());
    let existing = match File::options()
        .read(true)
        .write(true)
        .open(dir.join("conntrack"))
    {
        Ok(file) => file.metadata().map_err(|e| e.to_string()).and_then(|meta| {
            Conntrack::open_in(config, &file, clock)
                .map(|ct| (ct, identity(&meta)))
                .map_err(|e| match e {
                    OpenError::Refused(why) => why,
                    OpenError::Io(e) => e.to_string(),
                })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("there was none".into()),
        Err(e) => Err(e.to_string()),
    };
    match existing {
        Ok((ct, id)) => Ok(Prepared::Existing(ct, id)),
        Err(why) => {
            use std::os::unix::fs::OpenOptionsExt;
            let name = format!("conntrack.new.{}", std::process::id());
            let path = dir.join(&name);
            // Left by a process of the same id that died preparing.
            let _ = std::fs::remove_file(&path);
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| fail(&name, e))?;
            let ct = Conntrack::create_in(config, &file, clock)
                .map_err(|e| fail(&format!("sizing {name}"), e))?;
            Ok(Prepared::Fresh(ct, path, why))
        }
    }
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
                    let meta = owner.metadata().map_err(|e| fail("owner", e))?;
                    match lock_holder(&meta).map_err(|e| fail("reading /proc/locks", e))? {
                        Some(pid) => {
                            predecessor = Some(pid);
                            break;
                        }
                        None if last => {
                            return Err(format!(
                                "state directory {}: its lock is held, but /proc/locks names no \
                                 holder",
                                dir.display()
                            ))
                        }
                        None => {}
                    }
                }
                Err(e) => return Err(fail("locking owner", e)),
            }
        }
        let clock = clock_id().map_err(|e| fail("reading the boot id", e))?;
        let conntrack = prepare_conntrack(dir, config, clock)?;
        // A predecessor in this very process (two dataplanes in one test) is never signalled.
        let predecessor_process = predecessor
            .filter(|pid| *pid > 0 && *pid != std::process::id())
            .and_then(pidfd_open);
        Ok(Preparing {
            dir: dir.to_owned(),
            config,
            clock,
            owner,
            predecessor,
            predecessor_process,
            programs: recorded_programs(dir),
            conntrack,
        })
    }

    /// The process holding the directory when it was prepared: its pid (0 in another PID
    /// namespace).
    pub fn predecessor(&self) -> Option<u32> {
        self.predecessor
    }

    /// The steering programs earlier agents left attached, newest first.
    pub fn predecessor_programs(&self) -> &[u32] {
        &self.programs
    }

    /// Have the predecessor leave (see the module), then take its flows over: the table to
    /// run with, the held directory and what happened. `program` is this process's steering
    /// program, recorded for the next. A predecessor that `handed` its sockets over has let
    /// go of the directory already; it is told to stop (SIGTERM) once the directory is ours.
    pub fn take(mut self, program: u32, handed: bool) -> Result<(Conntrack, Held, Taken), String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("state directory {}: {what}: {e}", self.dir.display())
        };
        let started = WallClock::now();
        let killed = match self.predecessor {
            Some(pid) => self.wait_for(pid)?,
            None => false,
        };
        let waited = started.elapsed();
        if self.predecessor.is_some() {
            write_pid(&mut self.owner).map_err(|e| fail("writing owner", e))?;
        }
        if let (true, Some(process)) = (handed, &self.predecessor_process) {
            pidfd_signal(process, libc::SIGTERM);
        }
        let mut programs = vec![program];
        programs.extend(self.programs.iter().filter(|id| **id != program));
        programs.truncate(PROGRAMS_KEPT);
        let text: String = programs.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(self.dir.join("programs"), text).map_err(|e| fail("writing programs", e))?;
        // The file mapped while the predecessor ran may have been replaced since (by another
        // agent that took the directory first and then left): take what is there now.
        if let Prepared::Existing(_, id) = &self.conntrack {
            let now_there = std::fs::metadata(self.dir.join("conntrack")).map(|m| identity(&m));
            if now_there.ok() != Some(*id) {
                self.conntrack = prepare_conntrack(&self.dir, self.config, self.clock)?;
            }
        }
        let mut taken = Taken {
            predecessor: self.predecessor,
            killed,
            waited,
            adopted: None,
            fresh_because: None,
            taken_at: WallClock::now(),
            dark: Duration::ZERO,
            handover: None,
        };
        let ct = match self.conntrack {
            Prepared::Existing(ct, _) => {
                let t = WallClock::now();
                let adopted = ct.adopt(now());
                taken.adopted = Some((adopted, t.elapsed()));
                ct
            }
            Prepared::Fresh(ct, path, why) => {
                std::fs::rename(&path, self.dir.join("conntrack"))
                    .map_err(|e| fail("placing conntrack", e))?;
                taken.fresh_because = Some(why);
                ct
            }
        };
        Ok((ct, Held { _owner: self.owner }, taken))
    }

    /// Wait for the lock `pid` holds: SIGTERM it, and SIGKILL it after [`LEAVE`], as long as
    /// it is still the holder (never a process that took the lock since, nor a pid that may
    /// have been reused). A holder in another PID namespace (pid 0) cannot be signalled from
    /// here: it is waited for, as its own supervisor stops it (a DaemonSet's rolling update).
    /// Whether it was killed.
    fn wait_for(&self, pid: u32) -> Result<bool, String> {
        let dir = self.dir.display();
        let signal = |sig| {
            // SAFETY: kill() sends a signal; it touches no memory of ours. `pid` is positive
            // (checked by the callers below): never 0 (our process group) or -1 (everyone).
            unsafe { libc::kill(pid as libc::pid_t, sig) }
        };
        let asked = WallClock::now();
        let mut termed = false;
        let mut killed = false;
        loop {
            match flock(&self.owner, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(killed),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => return Err(format!("state directory {dir}: locking owner: {e}")),
            }
            let meta = self
                .owner
                .metadata()
                .map_err(|e| format!("state directory {dir}: owner: {e}"))?;
            let now_held_by = lock_holder(&meta)
                .map_err(|e| format!("state directory {dir}: reading /proc/locks: {e}"))?;
            match now_held_by {
                // Released between the try and the look: try again at once.
                None => continue,
                Some(other) if other != pid => {
                    return Err(format!(
                        "state directory {dir}: another agent (pid {other}) took it over first"
                    ))
                }
                Some(_) => {}
            }
            let signalled = pid > 0 && pid != std::process::id();
            if signalled && !termed {
                signal(libc::SIGTERM);
                termed = true;
            }
            if signalled && !killed && asked.elapsed() > LEAVE {
                signal(libc::SIGKILL);
                killed = true;
            }
            if asked.elapsed() > 2 * LEAVE {
                return Err(if pid > 0 {
                    format!(
                        "state directory {dir}: process {pid} holds it and did not leave when \
                         killed"
                    )
                } else {
                    format!(
                        "state directory {dir}: an agent in another PID namespace holds it and \
                         did not leave within {:?}: stop it (delete its pod), or run agents \
                         with the host's PID namespace so that the new one can ask it to leave",
                        2 * LEAVE
                    )
                });
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
                     3: FLOCK  ADVISORY  WRITE 813 fd:00:12345 0 EOF\n\
                     4: FLOCK  ADVISORY  READ 814 fd:00:777 0 EOF\n\
                     5: FLOCK  ADVISORY  WRITE 0 fd:00:888 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, "fd:00:1234"), Some(812));
        assert_eq!(parse_lock_holder(locks, "fd:00:12345"), Some(813));
        assert_eq!(parse_lock_holder(locks, "00:1a:99"), None);
        // A shared lock is no holder's; a holder in another PID namespace shows as 0.
        assert_eq!(parse_lock_holder(locks, "fd:00:777"), None);
        assert_eq!(parse_lock_holder(locks, "fd:00:888"), Some(0));
    }

    #[test]
    fn a_holder_is_asked_to_leave_and_its_table_taken_over() {
        let dir = std::env::temp_dir().join(format!("kxdp-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = ConntrackConfig {
            capacity: 64,
            ..ConntrackConfig::default()
        };
        // A first owner, gone: its table is in the file, its program recorded.
        let (ct, held, taken) = Preparing::start(&dir, config)
            .unwrap()
            .take(7, false)
            .unwrap();
        assert_eq!(taken.predecessor, None);
        assert_eq!(taken.fresh_because.as_deref(), Some("there was none"));
        let t = now();
        let (o, r) = (
            kxdp_dataplane::flow::FlowKey::new(6, [10, 0, 0, 1].into(), 1, [10, 0, 0, 2].into(), 2),
            kxdp_dataplane::flow::FlowKey::new(6, [10, 0, 0, 2].into(), 2, [10, 0, 0, 1].into(), 1),
        );
        ct.insert(o, r, 0x02, t).unwrap();
        drop((ct, held));
        // A running holder (flock(1), which holds the lock itself and leaves on SIGTERM).
        let mut holder = std::process::Command::new("flock")
            .arg("-o")
            .arg(dir.join("owner"))
            .args(["sleep", "30"])
            .spawn()
            .expect("flock(1) from util-linux");
        let pid = holder.id();
        let deadline = WallClock::now() + Duration::from_secs(5);
        while holder_of(&dir) != Some(pid) {
            assert!(WallClock::now() < deadline, "flock never took the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        let preparing = Preparing::start(&dir, config).unwrap();
        assert_eq!(preparing.predecessor_programs(), &[7]);
        let (ct, _held, taken) = preparing.take(9, false).unwrap();
        assert_eq!((taken.predecessor, taken.killed), (Some(pid), false));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(holder.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert_eq!(taken.adopted.map(|(a, _)| a.flows), Some(1));
        assert!(ct.lookup(&r, now()).is_some(), "the flow, both ways");
        assert_eq!(recorded_programs(&dir), vec![9, 7]);
        assert_eq!(holder_of(&dir), Some(std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn holder_of(dir: &Path) -> Option<u32> {
        holder(dir).unwrap()
    }

    #[test]
    fn the_clock_is_this_boots_and_moves_on() {
        let a = now();
        assert_eq!(clock_id().unwrap(), clock_id().unwrap());
        assert!(now() >= a);
    }
}
