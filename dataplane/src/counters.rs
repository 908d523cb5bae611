//! Per-worker counters, written by one worker and read by anyone.
//!
//! Each worker owns one [`Counters`]; it is the only writer, so a bump is a relaxed load and a
//! relaxed store (a plain `mov` on x86), not a locked read-modify-write. The control side reads
//! them from another thread with [`Counters::read`]. The struct is cache-line aligned so two
//! workers' counters never share a line.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::reason::{DropReason, PassReason};

macro_rules! events {
    ( $( $variant:ident => ($label:literal, $help:literal), )* ) => {
        /// Things the pipeline did, counted per worker.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Event {
            $( #[doc = $help] $variant, )*
        }

        impl Event {
            /// Every event, in numeric order.
            pub const ALL: &'static [Event] = &[ $( Event::$variant, )* ];
            /// How many events there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in metrics.
            pub const fn name(self) -> &'static str {
                match self { $( Event::$variant => $label, )* }
            }

            /// A sentence saying what is counted.
            pub const fn help(self) -> &'static str {
                match self { $( Event::$variant => $help, )* }
            }
        }
    };
}

events! {
    RxPackets => ("rx_packets", "frames handed to the pipeline"),
    Batches => ("batches", "batches processed"),
    Transmitted => ("transmitted", "frames given a transmit verdict"),
    Replied => ("replied", "frames turned into a reply sent back out the ingress interface"),
    PassedToHost => ("passed_to_host", "frames handed to the node's kernel"),
    Dropped => ("dropped", "frames dropped, for any reason"),
    LocalForward => ("local_forward", "packets routed to a pod on this node"),
    VxlanEncap => ("vxlan_encap", "packets encapsulated toward another node"),
    VxlanDecap => ("vxlan_decap", "packets decapsulated from another node"),
    ServiceNewFlow => ("service_new_flow", "new service flows: Maglev pick and conntrack insert"),
    NatEstablished => ("nat_established", "packets translated in their original direction from an existing conntrack entry"),
    ReverseNat => ("reverse_nat", "reply packets translated back to the service or original address"),
    Hairpin => ("hairpin", "service flows where a pod reached itself and was masqueraded"),
    MasqueradeNewFlow => ("masquerade_new_flow", "new egress flows masqueraded to the node address"),
    ArpReply => ("arp_reply", "ARP requests from pods answered"),
    IcmpEchoReply => ("icmp_echo_reply", "pings of the pod gateway answered"),
    IcmpPortUnreachable => ("icmp_port_unreachable", "ICMP port unreachable sent for a service without endpoints"),
    IcmpFragNeeded => ("icmp_frag_needed", "ICMP fragmentation-needed sent for DF packets too big for the tunnel"),
    IcmpErrorTranslated => ("icmp_error_translated", "ICMP errors about a translated flow translated back"),
    IcmpTimeExceeded => ("icmp_time_exceeded", "ICMP time exceeded sent for packets whose TTL ran out here"),
}

/// One worker's counters.
#[derive(Debug)]
#[repr(align(64))]
pub struct Counters {
    events: [AtomicU64; Event::COUNT],
    drops: [AtomicU64; DropReason::COUNT],
    passes: [AtomicU64; PassReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain copy of a [`Counters`], for reporting and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterValues {
    /// By [`Event`] number.
    pub events: [u64; Event::COUNT],
    /// By [`DropReason`] number.
    pub drops: [u64; DropReason::COUNT],
    /// By [`PassReason`] number.
    pub passes: [u64; PassReason::COUNT],
}

impl CounterValues {
    /// The value of one event counter.
    pub fn event(&self, e: Event) -> u64 {
        self.events[e as usize]
    }
    /// The value of one drop counter.
    pub fn drop(&self, r: DropReason) -> u64 {
        self.drops[usize::from(r.number())]
    }
    /// The value of one pass counter.
    pub fn pass(&self, r: PassReason) -> u64 {
        self.passes[usize::from(r.number())]
    }
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: a relaxed load and store is enough and avoids a locked instruction.
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Counters {
    /// All counters at zero.
    pub const fn new() -> Self {
        Counters {
            events: [const { AtomicU64::new(0) }; Event::COUNT],
            drops: [const { AtomicU64::new(0) }; DropReason::COUNT],
            passes: [const { AtomicU64::new(0) }; PassReason::COUNT],
        }
    }

    /// Count `n` occurrences of an event. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, e: Event, n: u64) {
        bump(&self.events[e as usize], n);
    }

    /// Count one occurrence of an event. Only the owning worker may call this.
    #[inline]
    pub fn inc(&self, e: Event) {
        self.add(e, 1);
    }

    /// Count one drop. Only the owning worker may call this.
    #[inline]
    pub fn dropped(&self, r: DropReason) {
        bump(&self.drops[usize::from(r.number())], 1);
        bump(&self.events[Event::Dropped as usize], 1);
    }

    /// Count one pass to the host. Only the owning worker may call this.
    #[inline]
    pub fn passed(&self, r: PassReason) {
        bump(&self.passes[usize::from(r.number())], 1);
        bump(&self.events[Event::PassedToHost as usize], 1);
    }

    /// Read every counter; safe from any thread, each value individually exact.
    pub fn read(&self) -> CounterValues {
        CounterValues {
            events: core::array::from_fn(|i| self.events[i].load(Relaxed)),
            drops: core::array::from_fn(|i| self.drops[i].load(Relaxed)),
            passes: core::array::from_fn(|i| self.passes[i].load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_visible_to_readers_and_aligned() {
        let c = Counters::new();
        c.inc(Event::RxPackets);
        c.add(Event::RxPackets, 4);
        c.dropped(DropReason::SpoofedSource);
        c.passed(PassReason::NotIpv4);
        let v = std::thread::scope(|s| s.spawn(|| c.read()).join().unwrap());
        assert_eq!(v.event(Event::RxPackets), 5);
        assert_eq!(v.drop(DropReason::SpoofedSource), 1);
        assert_eq!(v.event(Event::Dropped), 1);
        assert_eq!(v.pass(PassReason::NotIpv4), 1);
        assert_eq!(v.event(Event::PassedToHost), 1);
        assert_eq!(core::mem::align_of::<Counters>(), 64);
    }
}
