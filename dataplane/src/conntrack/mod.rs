//! Connection tracking: the one mutable table, shared by every worker.
//!
//! # Contract
//!
//! A flow is stored the way Linux's nf_conntrack stores it: with its ORIGINAL key (the first
//! packet as it arrived, e.g. `client:cport -> VIP:vport`) and its REPLY key (the packet we expect
//! back after translation, e.g. `backend:bport -> client:cport`, or with SNAT
//! `backend:bport -> node:natport`). Both keys find the flow; [`FlowRef::translated`] says what a
//! packet in the matched direction is rewritten to. No two live flows share a key: [`Conntrack::insert`]
//! refuses a reply key already in use ([`InsertError::Clash`]) and [`Conntrack::insert_snat`]
//! picks a NAT port that makes it free.
//!
//! Every flow has a state and an expiry (`now + timeout(state)`, refreshed by
//! [`Conntrack::update`]). A flow is *expired* once `now >= expiry`; an expired flow is absent to
//! [`Conntrack::lookup`] and [`Conntrack::update`], is replaced by an insert of the same key, and
//! is removed by the incremental [`Conntrack::gc`]. The table is bounded: when it is full, insert
//! fails with [`InsertError::Full`]; a live flow is never evicted to make room (established
//! connections matter more than new ones).
//!
//! The code is pure: time is an argument, nothing is allocated after [`Conntrack::new`], and
//! there are no syscalls. Times have millisecond resolution and are rounded up, so a flow never
//! expires early and at most 1 ms late.
//!
//! # Where things are
//!
//! - `table.rs`: the lock-free table: seqlocked flow records, the open-addressing index, the
//!   free list and the writer lock, lookups, updates, inserts, removal and the GC walk;
//! - `state.rs`: the protocol state machine: TCP, UDP and ICMP states, their transitions and
//!   timeouts, and how often a busy flow's timer is rewritten;
//! - `affinity.rs`: session affinity, the backend each client of a `ClientIP` service was
//!   last sent to, sized with the table (a quarter as many clients as flows);
//! - `persist.rs`: the table in a file, for the next process to adopt;
//! - `snat.rs`: source NAT, choosing the port (or ICMP identifier) a new flow's replies come
//!   back to;
//! - this file: what they share: the configuration, flow references, directions and errors.

mod affinity;
mod persist;
mod snat;
mod state;
mod table;

pub use affinity::Affinity;
pub use persist::{Adopted, OpenError, LAYOUT};
pub use snat::SNAT_PORT_TRIES;
pub use state::{FlowState, Timeouts};
pub use table::{Conntrack, IndexStats};

/// TCP flag bits, as [`Conntrack::update`] and [`Conntrack::insert`] take them.
pub use crate::wire::tcp_flags;

use crate::flow::FlowKey;

/// The most flows a table can hold: keeps index entries clear of the markers and the index
/// (8 bytes per slot, 4 slots per flow) within reason.
pub const MAX_CAPACITY: u32 = 1 << 28;

/// How big the table is and how long flows live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// The most flows the table holds, `1..=`[`MAX_CAPACITY`]. Memory is allocated for all of
    /// them up front (see [`Conntrack::memory_bytes`]).
    pub capacity: u32,
    /// Timeouts by state.
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    /// 262 144 flows (about 21 MiB) with the default timeouts.
    fn default() -> Self {
        ConntrackConfig {
            capacity: 262_144,
            timeouts: Timeouts::default(),
        }
    }
}

/// Which of a flow's two keys a packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The packet went the way the flow's first packet went.
    Original,
    /// The packet is a reply.
    Reply,
}

/// A flow as a lookup or insert found it: which key matched, and both keys.
#[derive(Clone, Copy, Debug)]
pub struct FlowRef {
    /// The flow's record number, for [`Conntrack::update`] and [`Conntrack::info`].
    pub id: u32,
    /// Which key the packet matched.
    pub direction: Direction,
    /// The key of the flow's first packet, as it arrived.
    pub original: FlowKey,
    /// The key of the replies we expect, after translation.
    pub reply: FlowKey,
    /// The state word as the lookup saw it: lets [`Conntrack::update`] return without touching
    /// the record when the packet changes nothing (same state, same millisecond).
    word: u64,
}

/// Two references are equal when they name the same flow the same way; the state they saw
/// does not matter.
impl PartialEq for FlowRef {
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.direction, self.original, self.reply)
            == (other.id, other.direction, other.original, other.reply)
    }
}

impl Eq for FlowRef {}

impl FlowRef {
    /// The 5-tuple a packet in `self.direction` must be rewritten to: an original packet goes
    /// where the reply comes from, a reply goes back as if from where the original was sent.
    #[inline]
    pub fn translated(&self) -> FlowKey {
        match self.direction {
            Direction::Original => self.reply.reversed(),
            Direction::Reply => self.original.reversed(),
        }
    }

    /// The key a packet in `self.direction` has before translation.
    #[inline]
    pub fn key(&self) -> FlowKey {
        match self.direction {
            Direction::Original => self.original,
            Direction::Reply => self.reply,
        }
    }
}

/// Why a flow could not be inserted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum InsertError {
    /// The table is at capacity and no flow in it has expired.
    #[error("conntrack table full: no free or expired flow to reuse")]
    Full,
    /// The reply key (or the original key) is a key of another live flow.
    #[error("conntrack clash: the flow's reply tuple belongs to another live flow")]
    Clash,
    /// Every NAT port tried for [`Conntrack::insert_snat`] gives a reply key in use.
    #[error("no free NAT port: {SNAT_PORT_TRIES} ports tried in the range were all in use")]
    PortsExhausted,
}

#[cfg(test)]
mod test_support {
    use core::net::Ipv4Addr;

    use super::{Conntrack, ConntrackConfig};
    use crate::flow::FlowKey;

    pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
    pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    pub(super) const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
    pub(super) const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    pub(super) fn table(capacity: u32) -> Conntrack {
        Conntrack::new(ConntrackConfig {
            capacity,
            ..ConntrackConfig::default()
        })
    }

    /// `CLIENT:cport -> VIP:80` DNATed to `BACKEND:8080`.
    pub(super) fn dnat(proto: u8, cport: u16) -> (FlowKey, FlowKey) {
        (
            FlowKey::new(proto, CLIENT, cport, VIP, 80),
            FlowKey::new(proto, BACKEND, 8080, CLIENT, cport),
        )
    }
}
