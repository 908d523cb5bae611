//! The protocol state machine: where a flow is in its life, and how long it lives there.
//!
//! [`FlowState`] is a flow's state (TCP opening, established, closing, closed; UDP one way or
//! both ways; ICMP echo), [`FlowState::initial`] and [`FlowState::next`] the transitions a
//! packet makes, [`Timeouts`] how long each state lives after the last packet. `Timers` is the
//! form the table reads on every update: the expiry a packet sets, and the step below which a
//! busy flow's timer is not rewritten. All of it is pure; the table (`table.rs`) stores the
//! state in each record's state word and applies a packet's transition with a CAS.

use core::time::Duration;

use super::Direction;
use crate::flow::proto;
use crate::time::Instant;
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

/// How long a flow lives after its last packet, by state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake in progress (SYN seen, handshake not completed).
    pub tcp_opening: Duration,
    /// TCP connection established.
    pub tcp_established: Duration,
    /// A FIN has been seen in either direction.
    pub tcp_closing: Duration,
    /// A RST has been seen.
    pub tcp_closed: Duration,
    /// UDP (and any protocol other than TCP and ICMP) with traffic one way only.
    pub udp: Duration,
    /// UDP with traffic both ways.
    pub udp_stream: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for Timeouts {
    /// Linux's nf_conntrack defaults, with kube-proxy's `conntrack-tcp-timeout-established` of
    /// one day.
    fn default() -> Self {
        Timeouts {
            tcp_opening: Duration::from_secs(60),
            tcp_established: Duration::from_secs(86_400),
            tcp_closing: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The timeout of a flow in `state`.
    pub fn for_state(&self, state: FlowState) -> Duration {
        match state {
            FlowState::TcpOpening => self.tcp_opening,
            FlowState::TcpEstablished => self.tcp_established,
            FlowState::TcpClosing => self.tcp_closing,
            FlowState::TcpClosed => self.tcp_closed,
            FlowState::Udp => self.udp,
            FlowState::UdpStream => self.udp_stream,
            FlowState::Icmp => self.icmp,
        }
    }
}

/// Where a flow is in its life; each state has its own timeout (see [`Timeouts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// TCP: SYN seen, handshake not complete.
    TcpOpening,
    /// TCP: handshake complete, or picked up mid-stream.
    TcpEstablished,
    /// TCP: FIN seen in either direction.
    TcpClosing,
    /// TCP: RST seen.
    TcpClosed,
    /// UDP (or another protocol) with packets in the original direction only.
    Udp,
    /// UDP (or another protocol) with packets in both directions.
    UdpStream,
    /// ICMP echo.
    Icmp,
}

impl FlowState {
    /// The stable snake_case name operators see (`kxdp conntrack`).
    pub const fn name(self) -> &'static str {
        match self {
            FlowState::TcpOpening => "tcp_opening",
            FlowState::TcpEstablished => "tcp_established",
            FlowState::TcpClosing => "tcp_closing",
            FlowState::TcpClosed => "tcp_closed",
            FlowState::Udp => "udp",
            FlowState::UdpStream => "udp_stream",
            FlowState::Icmp => "icmp",
        }
    }

    /// The state's code in the state word; 0 means the record is free.
    pub(super) const fn code(self) -> u64 {
        match self {
            FlowState::TcpOpening => 1,
            FlowState::TcpEstablished => 2,
            FlowState::TcpClosing => 3,
            FlowState::TcpClosed => 4,
            FlowState::Udp => 5,
            FlowState::UdpStream => 6,
            FlowState::Icmp => 7,
        }
    }

    pub(super) const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => FlowState::TcpOpening,
            2 => FlowState::TcpEstablished,
            3 => FlowState::TcpClosing,
            4 => FlowState::TcpClosed,
            5 => FlowState::Udp,
            6 => FlowState::UdpStream,
            7 => FlowState::Icmp,
            _ => return None,
        })
    }

    /// The state of a new flow whose first packet has protocol `proto` and TCP flags `flags`.
    ///
    /// TCP starting with a SYN (with or without ACK) is opening; TCP starting without one is a
    /// connection picked up mid-stream (after an agent restart, say) and is taken as
    /// established, like Linux's `nf_conntrack_tcp_loose`. The first packet's own FIN or RST
    /// then applies as it would to any packet.
    pub fn initial(proto: u8, flags: u8) -> FlowState {
        match proto {
            proto::TCP => {
                let start = if flags & SYN != 0 {
                    FlowState::TcpOpening
                } else {
                    FlowState::TcpEstablished
                };
                start.next(false, Direction::Original, flags).0
            }
            proto::ICMP => FlowState::Icmp,
            _ => FlowState::Udp,
        }
    }

    /// The state and seen-reply bit after a packet in `direction` with TCP flags `flags`
    /// (0 for UDP and ICMP), given the current state and whether a reply has been seen.
    ///
    /// - RST in either direction closes a TCP flow; FIN in either direction starts closing it
    ///   (a closed flow stays closed).
    /// - An opening flow is established once a reply has been seen and a packet with ACK and
    ///   without SYN arrives.
    /// - A bare SYN in the original direction on a closing or closed flow reopens it: the
    ///   client reused its port for a new connection (Linux does the same from TIME_WAIT and
    ///   CLOSE). Without this the new connection would keep the short closed timer.
    /// - UDP becomes a stream once a reply has been seen.
    pub fn next(self, seen_reply: bool, direction: Direction, flags: u8) -> (FlowState, bool) {
        use FlowState::*;
        let seen = seen_reply || direction == Direction::Reply;
        let state = match self {
            TcpOpening | TcpEstablished | TcpClosing | TcpClosed => {
                if flags & RST != 0 {
                    TcpClosed
                } else if matches!(self, TcpClosing | TcpClosed)
                    && direction == Direction::Original
                    && flags & (SYN | ACK | FIN) == SYN
                {
                    return (TcpOpening, false);
                } else if self == TcpClosed {
                    TcpClosed
                } else if flags & FIN != 0 {
                    TcpClosing
                } else if self == TcpOpening && seen && flags & (SYN | ACK) == ACK {
                    TcpEstablished
                } else {
                    self
                }
            }
            Udp | UdpStream if seen => UdpStream,
            Udp | UdpStream | Icmp => self,
        };
        (state, seen)
    }
}

/// Upper bound of [`Timers::refresh_ms`].
const REFRESH_MAX_MS: u64 = 1_000;

/// The [`Timeouts`] as the table reads them on every update: nanoseconds by
/// [`FlowState::code`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Timers {
    nanos: [u64; 8],
}

impl Timers {
    pub(super) fn new(timeouts: &Timeouts) -> Self {
        let mut nanos = [0; 8];
        for code in 1..8 {
            if let Some(state) = FlowState::from_code(code) {
                let timeout = timeouts.for_state(state).as_nanos();
                nanos[code as usize] = u64::try_from(timeout).unwrap_or(u64::MAX);
            }
        }
        Timers { nanos }
    }

    /// How far an expiry must move before an update writes it: 1/32 of the state's timeout,
    /// at most a second (so a 30 s UDP flow's timer is refreshed every ~0.94 s of traffic, an
    /// established TCP flow's every second).
    #[inline]
    pub(super) fn refresh_ms(&self, state: FlowState) -> u64 {
        (self.nanos[state.code() as usize] / 32 / 1_000_000).min(REFRESH_MAX_MS)
    }

    /// Expiry of a flow entering `state` at `now`, in whole milliseconds rounded up.
    #[inline]
    pub(super) fn expiry_ms(&self, state: FlowState, now: Instant) -> u64 {
        let timeout = self.nanos[state.code() as usize];
        now.as_nanos().saturating_add(timeout).div_ceil(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::test_support::{dnat, table};
    use crate::conntrack::{Conntrack, ConntrackConfig, FlowRef};

    #[test]
    fn every_state_expires_exactly_after_its_own_timeout() {
        // Distinct timeouts, so using the wrong state's timeout fails the test.
        let timeouts = Timeouts {
            tcp_opening: Duration::from_secs(11),
            tcp_established: Duration::from_secs(12),
            tcp_closing: Duration::from_secs(13),
            tcp_closed: Duration::from_secs(14),
            udp: Duration::from_secs(15),
            udp_stream: Duration::from_secs(16),
            icmp: Duration::from_secs(17),
        };
        use Direction::{Original, Reply};
        /// (state reached, protocol, first packet's flags, later packets' directions and flags)
        type Case = (FlowState, u8, u8, &'static [(Direction, u8)]);
        let cases: &[Case] = &[
            (
                FlowState::TcpOpening,
                proto::TCP,
                SYN,
                &[(Reply, SYN | ACK)],
            ),
            (
                FlowState::TcpEstablished,
                proto::TCP,
                SYN,
                &[(Reply, SYN | ACK), (Original, ACK)],
            ),
            (
                FlowState::TcpClosing,
                proto::TCP,
                ACK,
                &[(Original, FIN | ACK)],
            ),
            (FlowState::TcpClosed, proto::TCP, ACK, &[(Reply, RST)]),
            (FlowState::Udp, proto::UDP, 0, &[(Original, 0)]),
            (FlowState::UdpStream, proto::UDP, 0, &[(Reply, 0)]),
            (FlowState::Icmp, proto::ICMP, 0, &[(Reply, 0)]),
        ];
        for &(state, protocol, first, later) in cases {
            let ct = Conntrack::new(ConntrackConfig {
                capacity: 4,
                timeouts,
            });
            let (original, reply) = dnat(protocol, 40000);
            let t0 = Instant::from_secs(100);
            let flow = ct.insert(original, reply, first, t0).unwrap();
            // The last packet is at t1; the timeout counts from there.
            let t1 = Instant::from_secs(101);
            for &(direction, flags) in later {
                let seen = ct
                    .lookup(
                        if direction == Original {
                            &original
                        } else {
                            &reply
                        },
                        t1,
                    )
                    .unwrap();
                assert_eq!(seen.direction, direction);
                ct.update(&seen, flags, t1);
            }
            let expiry = t1 + timeouts.for_state(state);
            assert_eq!(ct.info(flow.id), Some((state, expiry)), "{state:?}");
            let just_before = Instant::from_nanos(expiry.as_nanos() - 1);
            assert!(ct.lookup(&original, just_before).is_some(), "{state:?}");
            assert!(ct.lookup(&reply, just_before).is_some(), "{state:?}");
            assert_eq!(ct.lookup(&original, expiry), None, "{state:?}");
            assert_eq!(ct.lookup(&reply, expiry), None, "{state:?}");
            // gc agrees with lookup on the boundary.
            assert_eq!(ct.gc(just_before, 4), 0, "{state:?}");
            assert_eq!(ct.gc(expiry, 4), 1, "{state:?}");
            assert!(ct.is_empty());
        }
    }

    #[test]
    fn expiry_is_rounded_up_to_the_millisecond_never_early() {
        let ct = table(4);
        let (original, reply) = dnat(proto::UDP, 1);
        let t0 = Instant::from_nanos(5_000_000_001); // 5 s and 1 ns
        let flow = ct.insert(original, reply, 0, t0).unwrap();
        let exact = t0 + Timeouts::default().udp;
        assert_eq!(ct.info(flow.id).unwrap().1, Instant::from_millis(35_001));
        assert!(ct.lookup(&original, exact).is_some());
        assert!(ct.lookup(&original, Instant::from_millis(35_001)).is_none());
    }

    #[test]
    fn busy_flows_refresh_their_timer_in_steps_never_backwards() {
        let ct = table(16);
        let (original, reply) = dnat(proto::UDP, 40000);
        let t0 = Instant::from_secs(10);
        let flow = ct.insert(original, reply, 0, t0).unwrap();
        let expiry = |ct: &Conntrack| ct.info(flow.id).unwrap().1;
        assert_eq!(expiry(&ct), t0 + Duration::from_secs(30));
        // UDP's step is 30 s / 32 = 937 ms: a packet 500 ms later writes nothing...
        let seen = ct.lookup(&original, t0).unwrap();
        ct.update(&seen, 0, t0 + Duration::from_millis(500));
        assert_eq!(expiry(&ct), t0 + Duration::from_secs(30));
        // ...one 937 ms later moves the timer to 30 s after it.
        let later = t0 + Duration::from_millis(937);
        ct.update(&ct.lookup(&original, later).unwrap(), 0, later);
        assert_eq!(expiry(&ct), later + Duration::from_secs(30));
        // A lagging worker's clock never moves it back.
        ct.update(&ct.lookup(&original, t0).unwrap(), 0, t0);
        assert_eq!(expiry(&ct), later + Duration::from_secs(30));
        // A state change is written at once, step or not.
        let back = ct.lookup(&reply, later).unwrap();
        ct.update(&back, 0, later);
        assert_eq!(ct.info(flow.id).unwrap().0, FlowState::UdpStream);
        assert_eq!(expiry(&ct), later + Duration::from_secs(120));
    }

    #[test]
    fn tcp_handshake_close_and_reset() {
        let ct = table(16);
        let now = Instant::from_secs(1);
        let state = |flow: &FlowRef| ct.info(flow.id).unwrap().0;
        let (original, reply) = dnat(proto::TCP, 40000);

        let flow = ct.insert(original, reply, SYN, now).unwrap();
        assert_eq!(state(&flow), FlowState::TcpOpening);
        // An ACK before any reply (a spoofed third packet) does not establish.
        ct.update(&flow, ACK, now);
        assert_eq!(state(&flow), FlowState::TcpOpening);
        let back = ct.lookup(&reply, now).unwrap();
        ct.update(&back, SYN | ACK, now);
        assert_eq!(state(&flow), FlowState::TcpOpening);
        ct.update(&flow, ACK, now);
        assert_eq!(state(&flow), FlowState::TcpEstablished);
        ct.update(&flow, ACK | 0x08, now); // PSH|ACK: data
        assert_eq!(state(&flow), FlowState::TcpEstablished);
        ct.update(&back, FIN | ACK, now);
        assert_eq!(state(&flow), FlowState::TcpClosing);
        ct.update(&flow, ACK, now);
        assert_eq!(state(&flow), FlowState::TcpClosing);
        ct.update(&flow, RST, now);
        assert_eq!(state(&flow), FlowState::TcpClosed);
        ct.update(&flow, FIN | ACK, now);
        assert_eq!(state(&flow), FlowState::TcpClosed, "closed stays closed");
        // The client reuses its port for a new connection.
        ct.update(&flow, SYN, now);
        assert_eq!(state(&flow), FlowState::TcpOpening);
        ct.update(&flow, ACK, now);
        assert_eq!(
            state(&flow),
            FlowState::TcpOpening,
            "reopened flow waits for a new reply"
        );

        // RST straight from opening.
        let (o2, r2) = dnat(proto::TCP, 40001);
        let f2 = ct.insert(o2, r2, SYN, now).unwrap();
        ct.update(&ct.lookup(&r2, now).unwrap(), RST | ACK, now);
        assert_eq!(state(&f2), FlowState::TcpClosed);

        // Mid-stream pickup: established at once; a FIN pickup is closing.
        let (o3, r3) = dnat(proto::TCP, 40002);
        let f3 = ct.insert(o3, r3, ACK, now).unwrap();
        assert_eq!(state(&f3), FlowState::TcpEstablished);
        let (o4, r4) = dnat(proto::TCP, 40003);
        let f4 = ct.insert(o4, r4, FIN | ACK, now).unwrap();
        assert_eq!(state(&f4), FlowState::TcpClosing);
        // A SYN on an established flow is a retransmission, not a reopen.
        ct.update(&f3, SYN, now);
        assert_eq!(state(&f3), FlowState::TcpEstablished);
    }

    #[test]
    fn udp_becomes_a_stream_only_after_a_reply() {
        let ct = table(4);
        let now = Instant::from_secs(1);
        let (original, reply) = dnat(proto::UDP, 5353);
        let flow = ct.insert(original, reply, 0, now).unwrap();
        ct.update(&flow, 0, now);
        assert_eq!(ct.info(flow.id).unwrap().0, FlowState::Udp);
        ct.update(&ct.lookup(&reply, now).unwrap(), 0, now);
        assert_eq!(ct.info(flow.id).unwrap().0, FlowState::UdpStream);
        ct.update(&flow, 0, now);
        assert_eq!(ct.info(flow.id).unwrap().0, FlowState::UdpStream);
    }

    #[test]
    fn refresh_never_moves_expiry_backwards_within_a_state() {
        let ct = table(4);
        let (original, reply) = dnat(proto::UDP, 1);
        let flow = ct
            .insert(original, reply, 0, Instant::from_secs(10))
            .unwrap();
        ct.update(&flow, 0, Instant::from_secs(20));
        ct.update(&flow, 0, Instant::from_secs(15)); // a worker with an older batch clock
        assert_eq!(ct.info(flow.id).unwrap().1, Instant::from_secs(50));
        // But a state change takes its own (shorter or longer) timeout.
        ct.update(
            &ct.lookup(&reply, Instant::from_secs(15)).unwrap(),
            0,
            Instant::from_secs(15),
        );
        assert_eq!(
            ct.info(flow.id).unwrap(),
            (FlowState::UdpStream, Instant::from_secs(135))
        );
    }
}
