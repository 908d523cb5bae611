//! A node's dataplane at run time: a control thread and its poll-mode workers.
//!
//! [`Dataplane::start`] spawns a control thread that loads the steering program, fills its maps,
//! attaches it to every managed interface, registers the workers' sockets and collects expired
//! flows, and one worker thread per configured core, pinned to it. Worker `q` has its own UMEM
//! and one AF_XDP socket on rx queue `q` of every managed interface that has such a queue, so
//! the kernel's spreading of flows over queues spreads them over workers, and a frame moves
//! between a worker's interfaces as a descriptor. A socket of interface `i` on queue `q` sits at
//! XSKMAP slot `64 * i + q`.
//!
//! Workers share one conntrack table (lookups are lock-free; only new flows take its writer
//! lock), so a flow whose two directions arrive on different queues is still one flow. A new
//! snapshot is published by an atomic pointer swap (`ArcSwap`); each worker loads the current
//! one once per round. Publishing never waits for a worker, a worker never waits on a lock,
//! and an old snapshot is freed when the last worker that loaded it lets go.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};

use arc_swap::ArcSwap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallClock};

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::CounterValues;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::{Counters, Instant, Snapshot};

use crate::state::Taken;
use crate::worker::{BatchFn, IoCounters, IoValues, Mode, Worker};
use crate::xsk::{HandedUmem, Port, PortConfig, Umem};
use crate::{enter_netns, ifindex, Attachment, Decisions, IfRole, Steering, XdpMode};

/// XSKMAP slots per interface: the most queues (and so workers) an interface is served on
/// (`KXDP_MAX_QUEUES` in the XDP program's header).
pub const MAX_QUEUES: u32 = 64;

/// The most interfaces served at once, uplink and host interface included
/// (`KXDP_MAX_IFACES`): the XSKMAP holds `MAX_INTERFACES * MAX_QUEUES` sockets. Slots of an
/// interface that is no longer served are reused.
pub const MAX_INTERFACES: u32 = 256;

/// One interface the dataplane drives.
#[derive(Clone, Debug)]
pub struct Managed {
    /// Its name in the node's namespace.
    pub name: String,
    /// The snapshot's number for it.
    pub id: InterfaceId,
    /// What it is.
    pub role: IfRole,
}

impl Managed {
    /// A pod's host-side veth.
    pub fn pod(name: &str, id: InterfaceId) -> Managed {
        Managed {
            name: name.into(),
            id,
            role: IfRole::Pod,
        }
    }

    /// The node's uplink.
    pub fn uplink(name: &str, id: InterfaceId) -> Managed {
        Managed {
            name: name.into(),
            id,
            role: IfRole::Uplink,
        }
    }

    /// The host interface toward the node's own stack.
    pub fn host(name: &str, id: InterfaceId) -> Managed {
        Managed {
            name: name.into(),
            id,
            role: IfRole::Host,
        }
    }
}

/// How to run the dataplane.
#[derive(Clone, Debug)]
pub struct Config {
    /// Run in this network namespace (as `ip netns` names it) rather than the caller's.
    pub netns: Option<String>,
    /// One worker per entry, pinned to the core given (or left to the scheduler).
    pub workers: Vec<Option<usize>>,
    /// How workers wait for frames.
    pub mode: Mode,
    /// The shared conntrack table.
    pub conntrack: ConntrackConfig,
    /// Each worker's UMEM.
    pub port: PortConfig,
    /// Stop by itself after this long (tests and benchmarks bound every run).
    pub max_run: Option<Duration>,
    /// What each worker runs on a batch: the pipeline ([`kxdp_dataplane::process_batch`], the
    /// default), or the perf harness's baseline forwarder.
    pub forwarding: BatchFn,
    /// Whether TCP frames cut for the tunnel leave as UDP GSO packets through a packet socket
    /// on the uplink (the default), or each as an AF_XDP frame.
    pub tunnel_gso: bool,
    /// Whether a worker's sockets share its UMEM (frames move between interfaces as
    /// descriptors), or each socket has its own (frames are copied between them): for drivers
    /// that cannot share a UMEM between devices.
    pub shared_umem: bool,
    /// Make the dataplane outlive the process ([`crate::state`]): conntrack in a file in this
    /// directory, taken over from the process that held it (asked to leave once everything
    /// else is ready), and programs attached so that they stay when the process ends, dropping
    /// the dataplane's traffic until a successor's replace them. None: conntrack in process
    /// memory, programs detached when the dataplane stops.
    pub state_dir: Option<std::path::PathBuf>,
    /// Pod interfaces the start's snapshot has already. A predecessor's sockets on them, if
    /// handed over, are served from the start; every pod is still added ([`Change::Add`]),
    /// which registers its sockets and attaches the program (a socket handed over and never
    /// added is closed after a few seconds).
    pub pods: Vec<Managed>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            netns: None,
            workers: vec![None],
            mode: Mode::Wakeup { timeout_ms: 50 },
            conntrack: ConntrackConfig::default(),
            port: PortConfig::default(),
            max_run: None,
            forwarding: kxdp_dataplane::process_batch,
            tunnel_gso: true,
            shared_umem: true,
            state_dir: None,
            pods: Vec::new(),
        }
    }
}

/// A change to a running dataplane: a new snapshot, with an interface that came or went.
#[derive(Debug)]
pub enum Change {
    /// Start serving this interface (a pod came up), then publish the snapshot.
    Add(Managed, Arc<Snapshot>),
    /// Publish the snapshot, then stop serving this interface (a pod went away).
    Remove(InterfaceId, Arc<Snapshot>),
    /// Publish the snapshot (as the control side's compiler shares it), then flush the UDP
    /// flows to these endpoints (address, port): they left every service.
    Publish(Arc<Snapshot>, Vec<(std::net::Ipv4Addr, u16)>),
}

/// Why the dataplane did not start. Whoever starts it decides by [`StartError::may_pass`]
/// whether to try again later or give up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Another XDP program holds an interface's hook. It may go (an agent being replaced
    /// detaches its program when it exits; an operator removes it), so this may pass.
    #[error(
        "interface {interface}: another XDP program is attached ({program}); kxdp does not \
         share an interface's XDP hook: {}", program.how_to_remove(interface)
    )]
    Occupied {
        /// The interface.
        interface: String,
        /// The program there.
        program: crate::ForeignProgram,
    },
    /// An rx queue another AF_XDP socket holds (EBUSY): one closed a moment ago (the kernel
    /// frees its queue from a work queue, after the close returns), or another program's.
    #[error("{0}")]
    QueueBusy(String),
    /// Something else that may pass by itself: an interface missing for now, a thread slow
    /// to report.
    #[error("{0}")]
    Transient(String),
    /// Something that will not pass by trying again: the program refused (privilege,
    /// verifier), a core that cannot be pinned, memory for the UMEMs.
    #[error("{0}")]
    Fatal(String),
}

impl StartError {
    /// Whether trying again later may succeed.
    pub fn may_pass(&self) -> bool {
        !matches!(self, StartError::Fatal(_))
    }
}

impl From<StartError> for String {
    fn from(e: StartError) -> String {
        e.to_string()
    }
}

fn fatal(e: impl std::fmt::Display) -> StartError {
    StartError::Fatal(e.to_string())
}

/// What a worker shares with everyone: its counters, and its thread.
#[derive(Clone, Debug)]
pub struct WorkerStats {
    /// The pipeline's counters.
    pub counters: Arc<Counters>,
    /// The I/O counters.
    pub io: Arc<IoCounters>,
    /// The worker thread's id (`gettid`), for asking the kernel where it may run.
    pub tid: i32,
}

/// A running dataplane; stops and frees everything when finished or dropped, and detaches its
/// programs unless they are to outlive it ([`Config::state_dir`]).
#[derive(Debug)]
pub struct Dataplane {
    stop: Arc<AtomicBool>,
    /// Set before `start` returns.
    ct: Option<Arc<Conntrack>>,
    /// What taking the state directory found, with a state directory (boxed: rarely read).
    taken: Option<Box<Taken>>,
    workers: Vec<WorkerStats>,
    /// The interfaces served and the XDP mode each got, kept by the control thread.
    modes: Arc<Mutex<Vec<(String, XdpMode)>>>,
    /// Set before `start` returns.
    decisions: Option<Arc<Decisions>>,
    /// Set once a successor has taken over: [`HANDED`] the sockets, or [`LEFT`] without them
    /// ([`crate::handover`]).
    replaced: Arc<AtomicU8>,
    requests: mpsc::Sender<Request>,
    control: Option<JoinHandle<Result<(), String>>>,
}

/// The number of receive queues of interface `name` in the calling thread's namespace, as
/// ethtool reports its channels (1 if the driver does not say).
pub fn rx_queues(name: &str) -> std::io::Result<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut Channels,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    if name.len() >= 16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface name {name} is too long"),
        ));
    }
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut ch,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: socket() has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `req` is a valid ifreq whose data points at a valid ethtool_channels, both alive
    // for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(1),
            _ => Err(err),
        };
    }
    Ok((ch.rx_count + ch.combined_count).max(1))
}

/// [`Dataplane::replaced`]: the successor was handed the sockets.
const HANDED: u8 = 1;
/// [`Dataplane::replaced`]: the successor was told why not, and binds its own.
const LEFT: u8 = 2;

/// What the control thread is asked.
enum Request {
    /// Apply a change, and say how it went.
    Change(Change, mpsc::Sender<Result<(), String>>),
    /// A successor connected to the handover socket.
    HandOver(OwnedFd),
    /// Stop.
    Stop,
}

/// What the control thread tells a worker.
enum Command {
    /// Start with this conntrack table, once it is known (taken over from a predecessor), and
    /// with the UMEM and sockets a predecessor handed over, if any: the first command. The
    /// reply says how many sockets were adopted, or why none; an error, that the worker
    /// cannot serve.
    Start(Box<Starting>),
    /// Stop between two batches and describe the UMEM and sockets for a successor.
    HandOver(mpsc::Sender<Result<HandedUmem, String>>),
    /// Open a socket on this interface (XSKMAP base given) and report its fd, if the
    /// interface has the worker's queue.
    Add(
        Managed,
        u32,
        mpsc::Sender<Result<Option<(u32, i32)>, StartError>>,
    ),
    Remove(InterfaceId, mpsc::Sender<()>),
}

/// What a worker starts with.
struct Starting {
    ct: Arc<Conntrack>,
    /// What a predecessor's worker of the same number handed over.
    handed: Option<HandedUmem>,
    /// The interfaces the start's snapshot knows, by index: handed sockets on them are
    /// served at once.
    known: Vec<(u32, InterfaceId)>,
    /// How many sockets were adopted, or why none; an error, that the worker cannot serve.
    reply: mpsc::Sender<Result<Result<usize, String>, StartError>>,
}

/// How long a worker has to stop and describe its sockets for a successor: a batch at most
/// (the successor waits `handover::WAIT` for each message).
const HANDOVER_REPLY: Duration = Duration::from_secs(1);

/// How long a socket handed over may wait to be claimed by an add of its interface before it
/// is closed: longer than the adds' waits for busy queues (about 2 s each).
const UNCLAIMED: Duration = Duration::from_secs(10);

/// How long the control side waits for a worker to act on a command.
const WORKER_REPLY: Duration = Duration::from_secs(10);

/// The longest pause between tries at a queue still held by a closed socket: the pauses
/// double from [`QUEUE_RELEASE_PAUSE_MIN`], so an add waits about 2 s in all before it reports
/// the queue busy.
const QUEUE_RELEASE_PAUSE_MAX: Duration = Duration::from_millis(1024);

/// The first pause: a queue a predecessor's socket held is usually free a few milliseconds
/// after the close, and every millisecond waited here is one the node's traffic is dropped.
const QUEUE_RELEASE_PAUSE_MIN: Duration = Duration::from_micros(500);

/// How long after kxdp closed an interface's sockets an add waits for its queues to be freed.
const QUEUE_RELEASE: Duration = Duration::from_secs(3);

impl Dataplane {
    /// Start the dataplane over `ifaces` with `snapshot`. Returns once the program is attached
    /// and every worker's sockets are bound and registered, or with why not (and whether that
    /// may pass).
    pub fn start(
        config: Config,
        ifaces: Vec<Managed>,
        snapshot: impl Into<Arc<Snapshot>>,
    ) -> Result<Dataplane, StartError> {
        let snapshot = snapshot.into();
        assert!(
            !config.workers.is_empty() && config.workers.len() <= MAX_QUEUES as usize,
            "1 to {MAX_QUEUES} workers"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let started = WallClock::now();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests, requests_rx) = mpsc::channel();
        let modes = Arc::new(Mutex::new(Vec::new()));
        let replaced = Arc::new(AtomicU8::new(0));
        let control = {
            let stop = Arc::clone(&stop);
            let modes = Arc::clone(&modes);
            let replaced = Arc::clone(&replaced);
            let requests = (requests.clone(), requests_rx);
            std::thread::Builder::new()
                .name("kxdp-control".into())
                .spawn(move || {
                    control(
                        config, ifaces, snapshot, modes, started, stop, replaced, ready_tx,
                        requests,
                    )
                })
                .map_err(|e| fatal(format!("spawning the control thread: {e}")))?
        };
        let mut dp = Dataplane {
            stop,
            ct: None,
            taken: None,
            workers: Vec::new(),
            modes,
            decisions: None,
            replaced,
            requests,
            control: Some(control),
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    StartError::Transient("the control thread did not report within 30 s".into())
                }
                mpsc::RecvTimeoutError::Disconnected => {
                    fatal("the control thread ended without reporting")
                }
            });
        match ready {
            Ok(Ok(ready)) => {
                dp.workers = ready.workers;
                dp.decisions = Some(ready.decisions);
                dp.ct = Some(ready.ct);
                dp.taken = ready.taken.map(Box::new);
                Ok(dp)
            }
            Ok(Err(e)) | Err(e) => {
                // Stop a control thread still setting up (the timeout), then join it to
                // surface a panic's message rather than a closed channel.
                dp.stop.store(true, Relaxed);
                let joined = dp.control.take().map(JoinHandle::join);
                match joined {
                    Some(Err(_)) => Err(fatal(format!("{e} (the control thread panicked)"))),
                    _ => Err(e),
                }
            }
        }
    }

    /// Each worker's counters, in worker order.
    pub fn workers(&self) -> &[WorkerStats] {
        &self.workers
    }

    /// The XDP program's decision counters, readable from any thread while it runs.
    pub fn decisions(&self) -> &Arc<Decisions> {
        self.decisions
            .as_ref()
            .expect("a dataplane that started has its program's counters")
    }

    /// The shared conntrack table (to list flows, and to ask which draining endpoints still
    /// have some).
    pub fn conntrack(&self) -> &Arc<Conntrack> {
        self.ct
            .as_ref()
            .expect("a dataplane that started has its conntrack")
    }

    /// What taking the state directory found: the predecessor replaced, the flows adopted.
    /// None without a state directory.
    pub fn taken(&self) -> Option<&Taken> {
        self.taken.as_deref()
    }

    /// The pipeline's clock now (conntrack expiries are on it): [`crate::state::now`].
    pub fn now(&self) -> Instant {
        crate::state::now()
    }

    /// Whether a successor took over (and so the dataplane stopped): the process has been
    /// replaced.
    pub fn replaced(&self) -> bool {
        self.replaced.load(Relaxed) != 0
    }

    /// Whether the successor that took over was handed the sockets.
    pub fn handed_over(&self) -> bool {
        self.replaced.load(Relaxed) == HANDED
    }

    /// Whether the dataplane still runs: false once it stopped by itself (its time limit, a
    /// worker's failure, a successor it handed over to).
    pub fn running(&self) -> bool {
        self.control.as_ref().is_some_and(|c| !c.is_finished())
    }

    /// The interfaces served now, by name, and the XDP mode each got.
    pub fn modes(&self) -> Vec<(String, XdpMode)> {
        self.modes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The pipeline's counters, summed over workers, read while they run.
    pub fn counters(&self) -> CounterValues {
        sum_counters(self.workers.iter().map(|w| w.counters.read()))
    }

    /// The I/O counters, summed over workers, read while they run.
    pub fn io(&self) -> IoValues {
        self.workers
            .iter()
            .fold(IoValues::default(), |total, w| total.plus(&w.io.read()))
    }

    /// Apply a change while traffic flows; returns once every worker has applied it.
    pub fn change(&self, change: Change) -> Result<(), String> {
        let (done_tx, done_rx) = mpsc::channel();
        self.requests
            .send(Request::Change(change, done_tx))
            .map_err(|_| "the dataplane has stopped".to_owned())?;
        done_rx
            .recv_timeout(WORKER_REPLY * 2)
            .map_err(|e| format!("the dataplane did not apply the change: {e}"))?
    }

    /// Stop every thread, detach the program, free the sockets; returns the summed counters.
    pub fn finish(mut self) -> Result<CounterValues, String> {
        self.stop.store(true, Relaxed);
        // Wake the control thread now, not at its next collection: a successor waits for it
        // to stop.
        let _ = self.requests.send(Request::Stop);
        let control = self.control.take().expect("running until finished");
        control
            .join()
            .map_err(|_| "the control thread panicked".to_owned())??;
        Ok(self.counters())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = self.requests.send(Request::Stop);
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

/// Sum counter copies.
pub fn sum_counters(values: impl Iterator<Item = CounterValues>) -> CounterValues {
    let mut total = Counters::new().read();
    for v in values {
        for (t, x) in total.events.iter_mut().zip(v.events) {
            *t += x;
        }
        for (t, x) in total.drops.iter_mut().zip(v.drops) {
            *t += x;
        }
        for (t, x) in total.passes.iter_mut().zip(v.passes) {
            *t += x;
        }
    }
    total
}

/// What the control thread reports once everything runs.
struct Started {
    workers: Vec<WorkerStats>,
    decisions: Arc<Decisions>,
    ct: Arc<Conntrack>,
    taken: Option<Taken>,
}

type Ready = Result<Started, StartError>;

/// A worker thread seen from the control thread.
struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    /// A datagram here wakes the worker from its poll to read `commands`.
    waker: std::os::unix::net::UnixDatagram,
    thread: JoinHandle<Result<(), String>>,
}

impl WorkerHandle {
    /// Hand the worker `command` and wake it.
    fn send(&self, command: Command) -> Result<(), StartError> {
        self.commands
            .send(command)
            .map_err(|_| fatal("a worker has stopped"))?;
        // A full buffer means wake-ups are pending already.
        let _ = self.waker.send(&[1]);
        Ok(())
    }
}

/// The control thread's state.
struct Control {
    steering: Steering,
    /// The shared table, once the state is taken over (workers start with it).
    ct: Option<Arc<Conntrack>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    workers: Vec<WorkerHandle>,
    links: Vec<Served>,
    /// What `links` serves, by name, for [`Dataplane::modes`].
    modes: Arc<Mutex<Vec<(String, XdpMode)>>>,
    /// XSKMAP bases given back by interfaces no longer served, reused before new ones.
    free_bases: Vec<u32>,
    /// The first base never handed out.
    next_base: u32,
    /// Interfaces (by ifindex) whose sockets a removal closed, and when: the kernel frees
    /// their queues shortly after the close.
    released: Vec<(u32, WallClock)>,
    /// When the state was taken from a predecessor (or, with none, the dataplane started):
    /// every queue the predecessor held (its pods' too, which are added after the start) is
    /// being freed by the kernel for [`QUEUE_RELEASE`] after.
    started: WallClock,
    /// Whether programs are attached to outlive the process ([`Config::state_dir`]).
    lasting: bool,
    /// The programs predecessors left attached, replaced by ours.
    predecessor_programs: Vec<u32>,
}

/// An interface the control thread attached the program to.
struct Served {
    id: InterfaceId,
    name: String,
    mode: XdpMode,
    ifindex: u32,
    xsk_base: u32,
    /// Detached when the interface is no longer served; dropped as it is when the dataplane
    /// stops, which detaches a link but leaves a lasting attachment.
    link: Attachment,
}

impl Control {
    /// Have every worker open its socket on `m` (or take up the one a predecessor handed
    /// over), register them, and attach the program to `m`. If anything fails, what was done
    /// is undone, so a failed add leaves neither an attachment nor sockets behind, and its
    /// XSKMAP slots go back only once no socket holds them. A busy queue is waited for when
    /// it may be one kxdp released a moment ago: at start and shortly after (a kxdp that ran
    /// before, whose sockets the kernel frees some time after their close), or when `m`'s
    /// sockets were closed lately; held by anyone else, it fails the add at once.
    ///
    /// The sockets come first: a socket handed over keeps receiving through the
    /// predecessor's program until ours replaces it, with the socket already in our XSKMAP,
    /// so no frame meets an empty slot.
    fn add(&mut self, m: &Managed, starting: bool) -> Result<XdpMode, StartError> {
        // The interface may come back (or be renamed back): worth another try.
        let index = ifindex(&m.name)
            .map_err(|e| StartError::Transient(format!("interface {}: {e}", m.name)))?;
        let base = self.free_bases.pop().or_else(|| {
            (self.next_base < MAX_INTERFACES * MAX_QUEUES).then(|| {
                self.next_base += MAX_QUEUES;
                self.next_base - MAX_QUEUES
            })
        });
        // A full table may empty as pods go: worth another try too.
        let base = base.ok_or_else(|| {
            StartError::Transient(format!(
                "interface {}: kxdp serves at most {MAX_INTERFACES} interfaces at once, \
                 the uplink and the host interface included",
                m.name
            ))
        })?;
        if let Err(e) = self.steering.set_interface(index, m.role, base) {
            let _ = self.steering.clear_interface(index);
            self.free_bases.push(base);
            return Err(fatal(e));
        }
        // A queue whose socket kxdp closed a moment ago (the same interface served again) is
        // freed by the kernel shortly after: wait for it here, on the control thread, so
        // that no worker ever sleeps and stalls the traffic of its other ports.
        self.released.retain(|(_, at)| at.elapsed() < QUEUE_RELEASE);
        let ours = starting
            || self.started.elapsed() < QUEUE_RELEASE
            || self.released.iter().any(|(i, _)| *i == index);
        let mut pause = QUEUE_RELEASE_PAUSE_MIN;
        let opened = loop {
            match self.open_sockets(m, base) {
                // The workers that opened their sockets keep them (an add of an interface a
                // worker serves already is answered with its socket), so a socket handed over
                // and served is never closed and reopened here.
                Err(StartError::QueueBusy(_)) if ours && pause <= QUEUE_RELEASE_PAUSE_MAX => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                opened => break opened,
            }
        };
        let attached = opened.and_then(|()| {
            let attached = if self.lasting {
                self.steering
                    .attach_lasting(index, &self.predecessor_programs)
            } else {
                self.steering.attach(index)
            };
            attached.map_err(|e| match e {
                crate::XdpError::Occupied { program, .. } => StartError::Occupied {
                    interface: m.name.clone(),
                    program,
                },
                other => fatal(format!("interface {}: {other}", m.name)),
            })
        });
        match attached {
            Ok(link) => {
                let mode = link.mode;
                self.links.push(Served {
                    id: m.id,
                    name: m.name.clone(),
                    mode,
                    ifindex: index,
                    xsk_base: base,
                    link,
                });
                Ok(mode)
            }
            // Undone, the interface can be tried again; if undoing failed too, what is left
            // behind (sockets) would make every retry fail: give up.
            Err(e) => {
                let undone = self.close_sockets(m.id);
                let _ = self.steering.clear_interface(index);
                self.free_bases.push(base);
                match undone {
                    Ok(()) => Err(e),
                    Err(undo) => Err(fatal(format!("{e}; undoing it failed: {undo}"))),
                }
            }
        }
    }

    /// Have every worker open its socket on `m`, and register each at its XSKMAP slot.
    fn open_sockets(&mut self, m: &Managed, base: u32) -> Result<(), StartError> {
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            w.send(Command::Add(m.clone(), base, tx))?;
            replies.push(rx);
        }
        // Every reply is awaited, so no worker is still opening a socket when this returns.
        let mut result = Ok(());
        for rx in replies {
            let reply = rx.recv_timeout(WORKER_REPLY).map_err(|e| {
                StartError::Transient(format!("a worker did not open {}: {e}", m.name))
            });
            match reply.and_then(|r| r) {
                Ok(Some((slot, fd))) if result.is_ok() => {
                    result = self.steering.register_socket(slot, fd).map_err(fatal);
                }
                Ok(_) => {}
                Err(e) => result = result.and(Err(e)),
            }
        }
        result
    }

    /// Steer what the new snapshot owns, then swap it in: every worker's next round uses it.
    fn publish(&mut self, snap: Arc<Snapshot>) -> Result<(), String> {
        self.steering.sync(&snap).map_err(|e| e.to_string())?;
        self.snapshot.store(snap);
        Ok(())
    }

    /// Stop every worker (each closes its sockets as it ends) and wait for them; the first
    /// worker's error, if any.
    fn stop_workers(&mut self, stop: &AtomicBool) -> Result<(), String> {
        stop.store(true, Relaxed);
        for w in &self.workers {
            let _ = w.waker.send(&[1]);
        }
        let mut result = Ok(());
        for w in self.workers.drain(..) {
            // Closed, so a worker still waiting for its start stops waiting.
            drop(w.commands);
            let r = w
                .thread
                .join()
                .unwrap_or_else(|_| Err("a worker panicked".into()));
            result = result.and(r);
        }
        result
    }

    /// Have every worker stop between two batches and describe its UMEM and sockets for a
    /// successor. The workers stop whatever comes of it (joined by [`Control::stop_workers`]):
    /// what was described, by worker number, or why nothing was.
    fn hand_over(&mut self, stop: &AtomicBool) -> Result<Vec<(u32, HandedUmem)>, String> {
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            // A worker that is gone cannot answer: its reply is an error below.
            let _ = w.send(Command::HandOver(tx));
            replies.push(rx);
        }
        let mut handed = Vec::new();
        let mut why = None;
        let mut silent = false;
        for (q, rx) in replies.into_iter().enumerate() {
            match rx.recv_timeout(HANDOVER_REPLY) {
                Ok(Ok(umem)) => handed.push((q as u32, umem)),
                Ok(Err(e)) => why = why.or(Some(e)),
                Err(e) => {
                    silent = true;
                    why = why.or(Some(format!("worker {q} did not answer: {e}")));
                }
            }
        }
        // Those that answered have stopped serving (`stop_workers` joins them later); one that
        // did not may still be in a batch, writing conntrack: it is joined now, before the
        // directory is let go.
        stop.store(true, Relaxed);
        if silent {
            let _ = self.stop_workers(stop);
        }
        match (handed.is_empty(), why) {
            (true, Some(why)) => Err(why),
            _ => Ok(handed),
        }
    }

    /// Have every worker close its socket on interface `id`, if it has one.
    fn close_sockets(&mut self, id: InterfaceId) -> Result<(), String> {
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            w.send(Command::Remove(id, tx))?;
            replies.push(rx);
        }
        for rx in replies {
            rx.recv_timeout(WORKER_REPLY)
                .map_err(|e| format!("a worker did not remove interface {id:?}: {e}"))?;
        }
        Ok(())
    }

    fn remove(&mut self, id: InterfaceId) -> Result<(), String> {
        self.close_sockets(id)?;
        // Closing the sockets took them out of the XSKMAP; then the program is detached. The
        // interface's slots are free for the next one, and its ifindex is forgotten (the
        // kernel may give the number to another interface).
        while let Some(i) = self.links.iter().position(|s| s.id == id) {
            let served = self.links.swap_remove(i);
            self.free_bases.push(served.xsk_base);
            served.link.detach().map_err(|e| e.to_string())?;
            self.steering
                .clear_interface(served.ifindex)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Apply `change`, then tell [`Dataplane::modes`] what is served.
    fn apply(&mut self, change: Change) -> Result<(), String> {
        let applied = self.apply_only(change);
        self.report_modes();
        applied
    }

    fn report_modes(&self) {
        let served = self
            .links
            .iter()
            .map(|s| (s.name.clone(), s.mode))
            .collect();
        *self
            .modes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = served;
    }

    fn apply_only(&mut self, change: Change) -> Result<(), String> {
        match change {
            Change::Add(m, snap) => {
                self.add(&m, false)?;
                self.publish(snap)
            }
            Change::Remove(id, snap) => {
                self.publish(snap)?;
                let now = WallClock::now();
                let closed = self.links.iter().filter(|l| l.id == id);
                let closed: Vec<_> = closed.map(|l| (l.ifindex, now)).collect();
                self.released.extend(closed);
                self.remove(id)
            }
            Change::Publish(snap, flush) => {
                self.publish(snap)?;
                // After the swap, so no worker creates a flow the flush would miss.
                if let Some(ct) = &self.ct {
                    ct.flush_udp_to(&flush);
                }
                Ok(())
            }
        }
    }
}

/// How often expired flows are collected, and how many slots one pass scans at most.
const GC_EVERY: Duration = Duration::from_millis(200);
const GC_SCAN: usize = 1 << 16;

/// How often a worker counts where its UMEM chunks are (`kxdp_worker_umem_chunks`).
const CENSUS_EVERY_NS: u64 = 1_000_000_000;

// The thread's whole state, moved in once.
#[allow(clippy::too_many_arguments)]
fn control(
    config: Config,
    ifaces: Vec<Managed>,
    snapshot: Arc<Snapshot>,
    modes: Arc<Mutex<Vec<(String, XdpMode)>>>,
    started: WallClock,
    stop: Arc<AtomicBool>,
    replaced: Arc<AtomicU8>,
    ready: mpsc::Sender<Ready>,
    (requester, requests): (mpsc::Sender<Request>, mpsc::Receiver<Request>),
) -> Result<(), String> {
    let setup = (|| -> Result<_, StartError> {
        if let Some(ns) = &config.netns {
            enter_netns(ns).map_err(|e| fatal(format!("entering namespace {ns}: {e}")))?;
        }
        // The workers first: making their UMEMs is the slowest part of a start, done while
        // the program loads and the state is prepared. A worker makes its UMEM only if no
        // predecessor holds the state directory (one that does hands its UMEMs over); if the
        // start fails before the workers are joined, their commands close and they end.
        let predecessor_now = config
            .state_dir
            .as_deref()
            .is_some_and(|dir| crate::state::holder(dir).ok().flatten().is_some());
        let snap = Arc::new(ArcSwap::new(Arc::clone(&snapshot)));
        let mut spawned = Vec::new();
        for (q, core) in config.workers.iter().enumerate() {
            spawned.push(spawn_worker(
                &config,
                q,
                *core,
                &snap,
                &stop,
                !predecessor_now,
            )?);
        }
        let steering = Steering::load().map_err(fatal)?;
        steering.sync(&snapshot).map_err(fatal)?;
        // Everything that can be readied while a predecessor still runs is: the program and
        // its maps, the state file mapped, the workers and their UMEMs.
        let preparing = config
            .state_dir
            .as_deref()
            .map(|dir| crate::state::Preparing::start(dir, config.conntrack))
            .transpose()
            .map_err(fatal)?;
        // A predecessor that holds the directory is asked for its sockets once ours are ready
        // to take them; the workers make UMEMs of their own only if it hands none.
        let predecessor = preparing
            .as_ref()
            .is_some_and(|p| p.predecessor().is_some());
        let mut ctl = Control {
            steering,
            ct: None,
            snapshot: Arc::clone(&snap),
            workers: Vec::new(),
            links: Vec::new(),
            modes,
            free_bases: Vec::new(),
            next_base: 0,
            released: Vec::new(),
            started: WallClock::now(),
            lasting: config.state_dir.is_some(),
            predecessor_programs: preparing
                .as_ref()
                .map(|p| p.predecessor_programs().to_vec())
                .unwrap_or_default(),
        };
        // Whatever fails from here on, the workers started so far stop (closing their
        // sockets) before the start reports, so a retry finds their queues free.
        // The state directory once taken: released only after the workers have stopped, on
        // failure too, so no successor adopts a table they may still write.
        let mut held = None;
        let built = (|| -> Result<_, StartError> {
            let ctl = &mut ctl;
            let held = &mut held;
            let mut stats = Vec::new();
            for (q, (handle, stats_rx)) in spawned.drain(..).enumerate() {
                ctl.workers.push(handle);
                let s = stats_rx.recv_timeout(WORKER_REPLY).map_err(|e| {
                    StartError::Transient(format!("worker {q} did not start: {e}"))
                })??;
                stats.push(s);
            }
            // Handed over, the predecessor's sockets wait (receiving) until ours read them;
            // otherwise, from here until the sockets are bound, the node's dataplane traffic
            // is dropped (the predecessor's program, without its sockets): keep it short.
            let handed = match (&config.state_dir, predecessor && config.shared_umem) {
                (Some(dir), true) => Some(crate::handover::request(dir).map_err(|e| e.to_string())),
                _ => None,
            };
            let (ct, mut taken) = match preparing {
                Some(p) => {
                    let program = ctl.steering.program_id().map_err(fatal)?;
                    let handed_some = matches!(handed, Some(Ok(_)));
                    let (ct, taken_dir, taken) = p.take(program, handed_some).map_err(fatal)?;
                    ctl.started = WallClock::now();
                    *held = Some(taken_dir);
                    (ct, Some(taken))
                }
                None => (Conntrack::new(config.conntrack), None),
            };
            let ct = Arc::new(ct);
            ctl.ct = Some(Arc::clone(&ct));
            let (mut umems, mut why) = match handed {
                Some(Ok(umems)) => (umems, None),
                Some(Err(e)) => (Vec::new(), Some(e)),
                None => (Vec::new(), None),
            };
            let known: Vec<(u32, InterfaceId)> = ifaces
                .iter()
                .chain(&config.pods)
                .filter_map(|m| ifindex(&m.name).ok().map(|i| (i, m.id)))
                .collect();
            let mut replies = Vec::new();
            for (q, w) in ctl.workers.iter().enumerate() {
                let mine = umems.iter().position(|(i, _)| *i as usize == q);
                let (reply, rx) = mpsc::channel();
                w.send(Command::Start(Box::new(Starting {
                    ct: Arc::clone(&ct),
                    handed: mine.map(|i| umems.swap_remove(i).1),
                    known: known.clone(),
                    reply,
                })))?;
                replies.push(rx);
            }
            // A predecessor's workers this process does not have: their sockets close here.
            drop(umems);
            let mut adopted = 0;
            for (q, rx) in replies.into_iter().enumerate() {
                let reply = rx
                    .recv_timeout(WORKER_REPLY)
                    .map_err(|e| StartError::Transient(format!("worker {q} did not start: {e}")))?;
                match reply? {
                    Ok(n) => adopted += n,
                    Err(e) => why = why.or(Some(e)),
                }
            }
            if let Some(t) = &mut taken {
                t.handover = match (predecessor, why) {
                    (false, _) => None,
                    (true, Some(why)) if adopted == 0 => Some(Err(why)),
                    (true, _) => Some(Ok(adopted)),
                };
            }
            // The first socket on each worker's UMEM stays bound until the UMEM goes (see
            // `xsk`): give it the interface that lives longest, the uplink, then the host's.
            let mut ordered: Vec<&Managed> = ifaces.iter().collect();
            ordered.sort_by_key(|m| match m.role {
                IfRole::Uplink => 0,
                IfRole::Host => 1,
                _ => 2,
            });
            for m in ordered {
                // A kxdp that ran before (an agent being replaced) may have just closed its
                // sockets here.
                ctl.add(m, true)?;
            }
            if let Some(t) = &mut taken {
                t.dark = t.taken_at.elapsed();
            }
            ctl.report_modes();
            let decisions = ctl.steering.decisions().map_err(fatal)?;
            Ok(Started {
                workers: stats,
                decisions: Arc::new(decisions),
                ct,
                taken,
            })
        })();
        match built {
            Ok(started) => Ok((ctl, started, held)),
            Err(e) => {
                let _ = ctl.stop_workers(&stop);
                drop(held);
                Err(e)
            }
        }
    })();
    let (mut ctl, mut held, acceptor) = match setup {
        Ok((ctl, started, held)) => {
            // A successor may ask for the sockets: a thread waits for it on the handover socket.
            // Without one (it could not be made), a successor has this process leave instead.
            let acceptor = config
                .state_dir
                .as_deref()
                .and_then(|dir| crate::handover::listen(dir).ok())
                .map(Arc::new)
                .and_then(|listener| {
                    let (l, requester) = (Arc::clone(&listener), requester.clone());
                    let thread = std::thread::Builder::new()
                        .name("kxdp-handover".into())
                        .spawn(move || {
                            // Until the listener is shut down (or the control thread gone).
                            loop {
                                match crate::handover::accept(&l) {
                                    Ok(conn) => {
                                        if requester.send(Request::HandOver(conn)).is_err() {
                                            break;
                                        }
                                    }
                                    // Shut down.
                                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                                    // Interrupted, or out of descriptors for a moment.
                                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                                }
                            }
                        })
                        .ok()?;
                    Some((listener, thread))
                });
            let _ = ready.send(Ok(started));
            (ctl, held, acceptor)
        }
        Err(e) => {
            stop.store(true, Relaxed);
            let message = e.to_string();
            let _ = ready.send(Err(e));
            return Err(message);
        }
    };
    drop(requester);
    let mut last_gc = WallClock::now();
    while !stop.load(Relaxed) && config.max_run.is_none_or(|m| started.elapsed() < m) {
        match requests.recv_timeout(GC_EVERY) {
            Ok(Request::Change(change, done)) => {
                let r = ctl.apply(change);
                let _ = done.send(r);
            }
            Ok(Request::HandOver(conn)) => {
                if let Err(e) = crate::handover::read_hello(&conn) {
                    let _ = crate::handover::refuse(&conn, &e.to_string());
                    continue;
                }
                if !config.shared_umem {
                    let _ = crate::handover::refuse(&conn, "its sockets do not share UMEMs");
                    continue;
                }
                // The workers stop between two batches; then the directory is let go (no
                // one here writes conntrack any more), and the successor gets the sockets.
                let handed = ctl.hand_over(&stop);
                // Every worker has stopped: no one here writes conntrack any more.
                drop(held.take());
                // The workers have stopped whatever comes of it. Replaced if the successor
                // heard the answer: handed the sockets, or told why not (then it binds its
                // own). If it went away meanwhile, the dataplane ends as after a failure (the
                // agent exits non-zero, and its supervisor starts one that binds afresh).
                let answered = match handed {
                    Ok(umems) => crate::handover::answer(&conn, &umems).map(|()| true),
                    Err(e) => crate::handover::refuse(&conn, &e).map(|()| false),
                };
                if let Ok(handed_over) = answered {
                    replaced.store(if handed_over { HANDED } else { LEFT }, Relaxed);
                }
                break;
            }
            Ok(Request::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if ctl.workers.iter().any(|w| w.thread.is_finished()) {
            break;
        }
        if last_gc.elapsed() >= GC_EVERY {
            if let Some(ct) = &ctl.ct {
                ct.gc(crate::state::now(), GC_SCAN);
            }
            last_gc = WallClock::now();
        }
    }
    if let Some((listener, thread)) = acceptor {
        crate::handover::shut(&listener);
        let _ = thread.join();
    }
    let stopped = ctl.stop_workers(&stop);
    // The sockets are closed and no one writes conntrack any more: a successor waiting for
    // the state directory may have it now.
    drop(held);
    // Dropping the links detaches the program; lasting attachments stay, dropping.
    drop(ctl);
    stopped
}

struct WorkerSetup {
    /// The worker's end of its waker pair.
    woken: std::os::unix::net::UnixDatagram,
    core: Option<usize>,
    netns: Option<String>,
    forwarding: BatchFn,
    tunnel_gso: bool,
    shared_umem: bool,
    /// Make the UMEM while setting up, rather than at the start if none is handed over.
    umem_at_setup: bool,
    running: Running,
}

/// What a worker needs once it serves.
struct Running {
    queue: u32,
    mode: Mode,
    port: PortConfig,
    snap: Arc<ArcSwap<Snapshot>>,
    stop: Arc<AtomicBool>,
}

/// Spawn worker `q` (pinned to `core`, if given): its handle, and where it reports its
/// counters once set up.
fn spawn_worker(
    config: &Config,
    q: usize,
    core: Option<usize>,
    snap: &Arc<ArcSwap<Snapshot>>,
    stop: &Arc<AtomicBool>,
    umem_at_setup: bool,
) -> Result<
    (
        WorkerHandle,
        mpsc::Receiver<Result<WorkerStats, StartError>>,
    ),
    StartError,
> {
    let (tx, rx) = mpsc::channel();
    let (stats_tx, stats_rx) = mpsc::channel();
    let (waker, woken) = std::os::unix::net::UnixDatagram::pair()
        .map_err(|e| fatal(format!("worker {q}: its waker: {e}")))?;
    // A busy worker never drains its waker: once the buffer is full, wake-ups are pending
    // anyway, and a send must fail rather than block the control thread.
    waker
        .set_nonblocking(true)
        .map_err(|e| fatal(format!("worker {q}: its waker: {e}")))?;
    let w = WorkerSetup {
        woken,
        core,
        netns: config.netns.clone(),
        forwarding: config.forwarding,
        tunnel_gso: config.tunnel_gso,
        shared_umem: config.shared_umem,
        umem_at_setup,
        running: Running {
            queue: q as u32,
            mode: config.mode,
            port: config.port,
            snap: Arc::clone(snap),
            stop: Arc::clone(stop),
        },
    };
    let thread = std::thread::Builder::new()
        .name(format!("kxdp-worker-{q}"))
        .spawn(move || run_worker(w, rx, stats_tx))
        .map_err(|e| fatal(format!("spawning worker {q}: {e}")))?;
    let handle = WorkerHandle {
        commands: tx,
        waker,
        thread,
    };
    Ok((handle, stats_rx))
}

fn run_worker(
    w: WorkerSetup,
    commands: mpsc::Receiver<Command>,
    stats: mpsc::Sender<Result<WorkerStats, StartError>>,
) -> Result<(), String> {
    let q = w.running.queue;
    let setup = (|| -> Result<_, StartError> {
        if let Some(ns) = &w.netns {
            enter_netns(ns)
                .map_err(|e| fatal(format!("worker {q}: entering namespace {ns}: {e}")))?;
        }
        if let Some(core) = w.core {
            crate::pin_current_thread(core)
                .map_err(|e| fatal(format!("worker {q}: pinning to core {core}: {e}")))?;
        }
        // One UMEM for all of the worker's sockets, unless each is to have its own.
        (w.shared_umem && w.umem_at_setup)
            .then(|| Umem::new(w.running.port).map_err(|e| fatal(format!("worker {q}: UMEM: {e}"))))
            .transpose()
    })();
    let mut umem = match setup {
        Ok(u) => u,
        Err(e) => {
            let message = e.to_string();
            let _ = stats.send(Err(e));
            return Err(message);
        }
    };
    let mut worker = Worker::new(Vec::new(), Arc::new(Counters::new()));
    worker.set_forwarding(w.forwarding);
    worker.set_tunnel_gso(w.tunnel_gso);
    if let Err(e) = worker.set_waker(w.woken) {
        let e = fatal(format!("worker {q}: its waker: {e}"));
        let message = e.to_string();
        let _ = stats.send(Err(e));
        return Err(message);
    }
    let _ = stats.send(Ok(WorkerStats {
        counters: Arc::clone(worker.counters()),
        io: Arc::clone(worker.io()),
        // SAFETY: gettid has no preconditions.
        tid: unsafe { libc::gettid() },
    }));
    // The table comes once the state is taken over; a closed channel means the start failed.
    let Starting {
        ct,
        handed,
        known,
        reply: started,
    } = loop {
        match commands.recv() {
            Ok(Command::Start(s)) => break *s,
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    };
    // A predecessor's sockets on interfaces the snapshot knows are served at once (the
    // predecessor's program still steers to them); the others wait, parked, until the
    // control thread adds their interfaces. Either kind not added within `QUEUE_RELEASE` is
    // closed.
    let mut parked = Vec::new();
    let mut unconfirmed = Vec::new();
    let adopted = match handed.map(Umem::adopt) {
        Some(Ok((u, ports))) => {
            umem = Some(u);
            let n = ports.len();
            for port in ports {
                let (index, queue) = port.bound_to();
                match known.iter().find(|(i, _)| *i == index) {
                    Some((_, id)) if queue == q && worker.port(*id).is_none() => {
                        worker.add_port(*id, port);
                        unconfirmed.push(*id);
                    }
                    _ => parked.push(port),
                }
            }
            Ok(n)
        }
        Some(Err(e)) => Err(format!("worker {q}: adopting the UMEM handed over: {e}")),
        None => Ok(0),
    };
    if w.shared_umem && umem.is_none() {
        match Umem::new(w.running.port) {
            Ok(u) => umem = Some(u),
            Err(e) => {
                let message = format!("worker {q}: UMEM: {e}");
                let _ = started.send(Err(fatal(&message)));
                return Err(message);
            }
        }
    }
    let _ = started.send(Ok(adopted));
    let served = serve(
        &mut worker,
        &w.running,
        &commands,
        umem.as_ref(),
        &ct,
        (&mut parked, &mut unconfirmed),
    );
    // Handed over: the successor is being sent the sockets. Closing ours and unmapping the
    // UMEM would take CPU from it, so that waits until the control thread is done.
    if served == Ok(true) {
        while commands.recv().is_ok() {}
    }
    release(worker, parked, umem);
    served.map(|_| ())
}

/// The port of `parked` bound to queue `q` of interface `name`, taken out.
fn unpark(parked: &mut Vec<Port>, name: &str, q: u32) -> Option<Port> {
    let index = ifindex(name).ok()?;
    let i = parked.iter().position(|p| p.bound_to() == (index, q))?;
    Some(parked.swap_remove(i))
}

/// Run `worker` until told to stop: its commands, then a round of batches, again and again.
/// True if it stopped to hand its sockets over.
fn serve(
    worker: &mut Worker,
    w: &Running,
    commands: &mpsc::Receiver<Command>,
    umem: Option<&Rc<Umem>>,
    ct: &Conntrack,
    (parked, unconfirmed): (&mut Vec<Port>, &mut Vec<InterfaceId>),
) -> Result<bool, String> {
    let q = w.queue;
    let mut next_census = Instant::from_nanos(0);
    let unclaimed_after =
        Instant::from_nanos(crate::state::now().as_nanos() + UNCLAIMED.as_nanos() as u64);
    while !w.stop.load(Relaxed) {
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Add(m, base, reply) if worker.port(m.id).is_some() => {
                    // Handed over and served since the start: now added.
                    unconfirmed.retain(|id| *id != m.id);
                    let fd = worker.port(m.id).map(Port::fd);
                    let _ = reply.send(Ok(fd.map(|fd| (base + q, fd))));
                }
                Command::Add(m, base, reply) => {
                    let opened = match unpark(parked, &m.name, q) {
                        Some(port) => Ok(Some(port)),
                        None => open(&m, q, umem, w.port),
                    };
                    let opened = opened.map(|port| {
                        port.map(|port| {
                            let fd = port.fd();
                            worker.add_port(m.id, port);
                            (base + q, fd)
                        })
                    });
                    let _ = reply.send(opened);
                }
                Command::Remove(id, reply) => {
                    drop(worker.remove_port(id));
                    let _ = reply.send(());
                }
                Command::HandOver(reply) => {
                    // Between two batches: the worker holds no frame.
                    let handed = match umem {
                        Some(u) => u
                            .hand_over(worker.ports().chain(parked.iter()))
                            .map_err(|e| format!("worker {q}: {e}")),
                        None => Err(format!("worker {q}: its sockets do not share a UMEM")),
                    };
                    let _ = reply.send(handed);
                    return Ok(true);
                }
                Command::Start(..) => {}
            }
        }
        worker
            .wait(w.mode)
            .map_err(|e| format!("worker {q}: {e}"))?;
        let now = crate::state::now();
        worker.run_batches(&w.snap.load(), ct, now);
        if now >= next_census {
            worker.census(umem);
            next_census = Instant::from_nanos(now.as_nanos() + CENSUS_EVERY_NS);
            // Handed sockets nobody claimed, looked for as seldom as the census.
            if !(parked.is_empty() && unconfirmed.is_empty()) && now >= unclaimed_after {
                parked.clear();
                for id in unconfirmed.drain(..) {
                    drop(worker.remove_port(id));
                }
            }
        }
    }
    Ok(false)
}

/// Close a stopping worker's sockets and UMEM, all at once. The kernel releases a bound
/// AF_XDP socket only after an RCU grace period (`xsk_unbind_dev`), so closing them one after
/// another, as dropping the worker does, takes a grace period per socket, and a successor
/// waits for every queue to be free. Holding a duplicate of each descriptor makes the worker's
/// own closes cheap (the kernel releases a socket at its last close); the duplicates are then
/// closed together, one thread each, so the grace periods overlap. Returns once all are
/// released.
fn release(worker: Worker, parked: Vec<Port>, umem: Option<Rc<Umem>>) {
    use std::os::fd::BorrowedFd;
    let mut fds = worker.socket_fds();
    fds.extend(
        parked
            .iter()
            .map(Port::fd)
            .filter(|fd| umem.as_ref().is_none_or(|u| u.fd() != *fd)),
    );
    if let Some(u) = &umem {
        if !fds.contains(&u.fd()) {
            fds.push(u.fd());
        }
    }
    let copies: Vec<OwnedFd> = fds
        .into_iter()
        .filter_map(|fd| {
            // SAFETY: each descriptor is open until `worker` and `umem` are dropped, below.
            let open = unsafe { BorrowedFd::borrow_raw(fd) };
            open.try_clone_to_owned().ok()
        })
        .collect();
    drop(worker);
    drop(parked);
    drop(umem);
    std::thread::scope(|s| {
        for fd in copies {
            // A thread that cannot be made drops its closure, and so closes the descriptor
            // here, in turn.
            let _ = std::thread::Builder::new().spawn_scoped(s, move || drop(fd));
        }
    });
}

/// Worker `q`'s socket on `m` (on the worker's UMEM if given, else on its own), or none if `m`
/// has no queue `q`. A queue another AF_XDP socket still holds (EBUSY) or an interface that
/// went away may pass; anything else will not.
fn open(
    m: &Managed,
    q: u32,
    umem: Option<&std::rc::Rc<Umem>>,
    config: PortConfig,
) -> Result<Option<Port>, StartError> {
    let classify = |e: std::io::Error, what: String| match crate::xsk::errno(&e) {
        Some(libc::EBUSY) => StartError::QueueBusy(format!(
            "{what}: {e}: another AF_XDP socket holds the queue"
        )),
        Some(libc::ENODEV | libc::ENXIO) => StartError::Transient(format!("{what}: {e}")),
        _ => fatal(format!("{what}: {e}")),
    };
    let queues =
        rx_queues(&m.name).map_err(|e| classify(e, format!("{}: reading its queues", m.name)))?;
    if q >= queues {
        return Ok(None);
    }
    let port = match umem {
        // Sharing goes through the UMEM's first socket; if its interface has gone (a pod
        // that came first was deleted), the kernel says EBADF, and this socket gets a UMEM of
        // its own: frames between it and the others are copied.
        Some(umem) => {
            Port::open_shared(&m.name, q, umem).or_else(|e| match crate::xsk::errno(&e) {
                Some(libc::EBADF) => Port::open(&m.name, q, config),
                _ => Err(e),
            })
        }
        None => Port::open(&m.name, q, config),
    };
    port.map(Some)
        .map_err(|e| classify(e, format!("{} queue {q}", m.name)))
}
