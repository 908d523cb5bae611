//! An admin listener's connection table: how many connections it holds at once, which one
//! goes when a new one arrives at the limit, and when a connection has taken too long.
//!
//! Why: any local user can open connections to a TCP listener as fast as they like and hold
//! them without sending a byte, or trickle a request's headers a byte at a time. Each held
//! connection costs the agent a file descriptor; unbounded, they starve it of descriptors (a
//! new pod's AF_XDP socket needs some) and `/healthz` goes unanswered. So:
//!
//! - A listener holds at most [`Limits::max_connections`], far below `RLIMIT_NOFILE`.
//! - It keeps accepting at the limit. A listener that stopped accepting would leave every new
//!   connection, the kubelet's probe included, queued in the kernel behind the attacker's
//!   until those time out; one that accepted and closed the newcomer would refuse the probe
//!   for as long as the attack lasts. Instead each newcomer evicts the connection quiet the
//!   longest: the one whose last sign of life (its accept, or the arrival of its last request)
//!   came first, whatever it did before. A prompt client (connect, then send its request) is
//!   the newest in the table and the last to go: it outlives `max_connections` newer
//!   connections, which even at 20,000 connections a second is tens of milliseconds, while
//!   its request arrives in well under one. Connections that sent a request and then hold on
//!   (kept alive, or trickling the next one) earn no protection by it. The attacker pays for
//!   the flood; the probe does not.
//! - Headers must arrive in full within [`Limits::header_timeout`] of the connection's start or
//!   of its previous response (hyper's header-read timer, which also ends keep-alive idling).
//! - A connection still open [`Limits::response_timeout`] after its last request began (a
//!   client that does not read its response) is closed by [`Connections::reap`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::lock;

/// A listener's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive (and a kept-alive connection may idle).
    pub header_timeout: Duration,
    /// How long a connection may stay open after its last request began.
    pub response_timeout: Duration,
}

impl Limits {
    /// The metrics listener's: a scraper or a probe needs one connection at a time, a few
    /// tools at once stay far below the limit.
    pub const METRICS: Limits = Limits {
        max_connections: 256,
        header_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(30),
    };

    /// The debug API's (owner-only socket; a CLI or two at a time).
    pub const DEBUG: Limits = Limits {
        max_connections: 32,
        header_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(60),
    };

    /// These limits with at most `max` connections (at least one).
    pub fn capped(self, max: usize) -> Limits {
        Limits {
            max_connections: self.max_connections.min(max).max(1),
            ..self
        }
    }
}

/// A listener's connection table; see the module documentation.
#[derive(Debug)]
pub struct Connections {
    /// The listener's name in metrics: `metrics` or `debug`.
    pub name: &'static str,
    limits: Limits,
    epoch: Instant,
    table: Mutex<Table>,
    /// Orders signs of life (accepts, requests): the eviction order.
    stamps: AtomicU64,
    accepted: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    slots: HashMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    accepted_ms: u64,
    activity: Arc<Activity>,
    abort: AbortHandle,
}

/// What a connection has done: requests begun, when the last one began, and the stamp of
/// its last sign of life.
#[derive(Debug, Default)]
struct Activity {
    requests: AtomicU64,
    last_request_ms: AtomicU64,
    last_seen: AtomicU64,
}

/// A connection's place in the table: freed when dropped (when its task ends or is aborted).
#[derive(Debug)]
pub struct Ticket {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Ticket {
    /// A request's headers have arrived.
    pub fn request(&self) {
        self.activity
            .last_seen
            .store(self.connections.stamps.fetch_add(1, Relaxed), Relaxed);
        self.activity.requests.fetch_add(1, Relaxed);
        self.activity
            .last_request_ms
            .store(self.connections.now_ms(), Relaxed);
    }

    /// The connection ended for a timeout (hyper's header-read timer).
    pub fn timed_out(&self) {
        self.connections.timed_out.fetch_add(1, Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.connections.table).slots.remove(&self.id);
    }
}

impl Connections {
    /// An empty table for the listener `name`.
    pub fn new(name: &'static str, limits: Limits) -> Connections {
        Connections {
            name,
            limits,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            stamps: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }

    /// The limits it holds connections to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Take in a new connection: make room (evicting, see the module documentation), then
    /// `start` its task with the ticket that holds its place and returns the task's handle.
    pub fn admit(self: &Arc<Self>, start: impl FnOnce(Ticket) -> AbortHandle) {
        let mut victims = Vec::new();
        {
            let mut table = lock(&self.table);
            while table.slots.len() >= self.limits.max_connections {
                let Some(id) = table
                    .slots
                    .iter()
                    .min_by_key(|(_, slot)| slot.activity.last_seen.load(Relaxed))
                    .map(|(id, _)| *id)
                else {
                    break;
                };
                if let Some(slot) = table.slots.remove(&id) {
                    victims.push(slot.abort);
                }
            }
            let id = table.next;
            table.next += 1;
            let activity = Arc::new(Activity {
                last_seen: AtomicU64::new(self.stamps.fetch_add(1, Relaxed)),
                ..Activity::default()
            });
            let ticket = Ticket {
                connections: Arc::clone(self),
                id,
                activity: Arc::clone(&activity),
            };
            // Started under the lock: a task that ends at once frees its place (the ticket's
            // drop takes the lock) only after the place is taken.
            let abort = start(ticket);
            table.slots.insert(
                id,
                Slot {
                    accepted_ms: self.now_ms(),
                    activity,
                    abort,
                },
            );
        }
        self.accepted.fetch_add(1, Relaxed);
        self.evicted.fetch_add(victims.len() as u64, Relaxed);
        for v in victims {
            v.abort();
        }
    }

    /// Close connections past their time: no complete request within twice the header
    /// timeout (hyper's own timer should have closed them), or open `response_timeout` after
    /// their last request began. Returns how many.
    pub fn reap_once(&self) -> usize {
        let now = self.now_ms();
        let headers = 2 * self.limits.header_timeout.as_millis() as u64;
        let response = self.limits.response_timeout.as_millis() as u64;
        let mut late = Vec::new();
        {
            let mut table = lock(&self.table);
            table.slots.retain(|_, slot| {
                let over = match slot.activity.requests.load(Relaxed) {
                    0 => now.saturating_sub(slot.accepted_ms) > headers,
                    _ => now.saturating_sub(slot.activity.last_request_ms.load(Relaxed)) > response,
                };
                if over {
                    late.push(slot.abort.clone());
                }
                !over
            });
        }
        self.timed_out.fetch_add(late.len() as u64, Relaxed);
        for a in &late {
            a.abort();
        }
        late.len()
    }

    /// [`Connections::reap_once`] every second, until the task is dropped.
    pub async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reap_once();
        }
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        lock(&self.table).slots.len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Connections evicted so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// Connections closed so far for taking too long.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A connection whose task waits until aborted or its sender (in `ends`) is dropped.
    struct Client {
        alive: Arc<AtomicBool>,
        requests: tokio::sync::mpsc::UnboundedSender<()>,
    }

    impl Client {
        fn alive(&self) -> bool {
            self.alive.load(Relaxed)
        }

        /// Its next request arrives.
        async fn request(&self) {
            self.requests.send(()).expect("the connection is open");
            settle().await;
        }
    }

    fn connect(
        conns: &Arc<Connections>,
        ends: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Client {
        struct Alive(Arc<AtomicBool>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.store(false, Relaxed);
            }
        }
        let alive = Arc::new(AtomicBool::new(true));
        let (end, mut ended) = tokio::sync::oneshot::channel::<()>();
        ends.push(end);
        let (requests, mut requested) = tokio::sync::mpsc::unbounded_channel();
        let flag = Alive(Arc::clone(&alive));
        conns.admit(|ticket| {
            tokio::spawn(async move {
                let _alive = flag;
                loop {
                    tokio::select! {
                        _ = &mut ended => break,
                        Some(()) = requested.recv() => ticket.request(),
                    }
                }
            })
            .abort_handle()
        });
        Client { alive, requests }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_quiet_the_longest_goes_first() {
        let conns = Arc::new(Connections::new("metrics", Limits::METRICS.capped(3)));
        let mut ends = Vec::new();
        // Two connections that each sent a request and hold on, then a prompt client.
        let a = connect(&conns, &mut ends);
        a.request().await;
        let b = connect(&conns, &mut ends);
        b.request().await;
        let probe = connect(&conns, &mut ends);
        assert_eq!(conns.open(), 3);
        // A flood: its first connection evicts the one quiet the longest, not the probe.
        let c = connect(&conns, &mut ends);
        settle().await;
        assert!(!a.alive(), "quiet since its request: evicted");
        assert!(b.alive() && probe.alive() && c.alive());
        assert_eq!((conns.open(), conns.evicted(), conns.accepted()), (3, 1, 4));
        probe.request().await;
        let d = connect(&conns, &mut ends);
        let e = connect(&conns, &mut ends);
        settle().await;
        assert!(
            !b.alive() && !c.alive(),
            "b, then c: quiet longer than the probe"
        );
        assert!(probe.alive() && d.alive() && e.alive());
        // Connections that end free their places.
        drop(ends);
        settle().await;
        assert_eq!((conns.open(), conns.evicted()), (0, 3));
    }

    #[tokio::test]
    async fn connections_past_their_time_are_reaped() {
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(10),
            response_timeout: Duration::from_millis(100),
        };
        let conns = Arc::new(Connections::new("debug", limits));
        let mut ends = Vec::new();
        let silent = connect(&conns, &mut ends);
        let served = connect(&conns, &mut ends);
        served.request().await;
        assert_eq!(conns.reap_once(), 0, "nothing is late yet");
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            conns.reap_once(),
            1,
            "no request within twice the header timeout"
        );
        settle().await;
        assert!(!silent.alive() && served.alive());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(conns.reap_once(), 1, "still open long after its request");
        settle().await;
        assert!(!served.alive());
        assert_eq!((conns.open(), conns.timed_out()), (0, 2));
    }
}
