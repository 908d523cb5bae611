//! Per-worker counters, written by one worker and read by anyone.
//!
//! Each worker owns one [`Counters`]; it is the only writer, so a bump is a relaxed load and a
//! relaxed store (a plain `mov` on x86), not a locked read-modify-write. The control side reads
//! them from another thread with [`Counters::read`]. The struct is cache-line aligned so two
//! workers' counters never share a line.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::reason::{DropReason, PassReason};

/// A list of named counters: drop and pass reasons, pipeline events, and the I/O crate's lists
/// (the XDP program's decisions, the workers' I/O). Each is declared once with
/// [`counter_list!`](crate::counter_list), and everything that reports counters (the metrics, the
/// CLI's tables, `kxdp trace`) goes through this trait, so a new list, or a new member of one,
/// reaches every report without being written out again.
pub trait CounterList: Copy + core::fmt::Debug + 'static {
    /// Every member, in number order.
    const ALL: &'static [Self];
    /// The stable snake_case name, used as a metric label and in traces.
    fn name(self) -> &'static str;
    /// A sentence saying what is counted.
    fn help(self) -> &'static str;
    /// The member's number: its index in [`CounterList::ALL`] and in arrays of counters.
    fn index(self) -> usize;
}

/// Declare a list of counters: a `#[repr(u8)]` enum whose members carry a number, a stable
/// snake_case name and a help sentence, with `ALL`, `COUNT`, `name()`, `help()`, `number()`,
/// `from_number()`, `from_name()`, `Display` and [`CounterList`]. Numbers must be dense and in
/// order (checked when the crate compiles), so a member's number is its index in counter arrays.
///
/// ```
/// kxdp_dataplane::counter_list! {
///     /// What a tool counts.
///     pub enum Seen {
///         Good = 0 => ("good", "frames that were fine"),
///         Bad = 1 => ("bad", "frames that were not"),
///     }
/// }
/// assert_eq!(Seen::from_name("bad"), Some(Seen::Bad));
/// assert_eq!(Seen::COUNT, 2);
/// ```
///
/// A gap in the numbers does not compile:
///
/// ```compile_fail
/// kxdp_dataplane::counter_list! {
///     pub enum Gap {
///         First = 0 => ("first", "the first"),
///         Third = 2 => ("third", "a number skipped"),
///     }
/// }
/// ```
#[macro_export]
macro_rules! counter_list {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $variant:ident = $num:literal => ($label:literal, $help:literal), )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        $vis enum $name {
            $( #[doc = $help] $variant = $num, )*
        }

        impl $name {
            /// Every member, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];
            /// How many members there are; counters are arrays of this size.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in metrics and traces.
            pub const fn name(self) -> &'static str {
                match self { $( $name::$variant => $label, )* }
            }

            /// A sentence saying what happened.
            pub const fn help(self) -> &'static str {
                match self { $( $name::$variant => $help, )* }
            }

            /// The member's stable number, its index in counter arrays.
            #[inline]
            pub const fn number(self) -> u8 {
                self as u8
            }

            /// The member with this number, if there is one.
            pub fn from_number(n: u8) -> Option<Self> {
                Self::ALL.get(usize::from(n)).copied()
            }

            /// The member with this name, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.name() == name)
            }
        }

        // Numbers are dense and in order, so that a number is an index.
        const _: () = {
            let mut i = 0;
            while i < $name::COUNT {
                assert!($name::ALL[i] as usize == i, "counter list numbers must be dense and in order");
                i += 1;
            }
        };

        impl $crate::counters::CounterList for $name {
            const ALL: &'static [Self] = $name::ALL;
            #[inline]
            fn name(self) -> &'static str {
                $name::name(self)
            }
            #[inline]
            fn help(self) -> &'static str {
                $name::help(self)
            }
            #[inline]
            fn index(self) -> usize {
                usize::from(self as u8)
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

crate::counter_list! {
    /// Things the pipeline did, counted per worker.
    pub enum Event {
        RxPackets = 0 => ("rx_packets", "frames handed to the pipeline"),
        Batches = 1 => ("batches", "batches processed"),
        Transmitted = 2 => ("transmitted", "frames given a transmit verdict"),
        Replied = 3 => ("replied", "frames turned into a reply sent back out the ingress interface"),
        PassedToHost = 4 => ("passed_to_host", "frames handed to the node's kernel"),
        Dropped = 5 => ("dropped", "frames dropped, for any reason"),
        LocalForward = 6 => ("local_forward", "packets routed to a pod on this node"),
        VxlanEncap = 7 => ("vxlan_encap", "packets encapsulated toward another node"),
        VxlanDecap = 8 => ("vxlan_decap", "packets decapsulated from another node"),
        ServiceNewFlow = 9 => ("service_new_flow", "new service flows: Maglev pick and conntrack insert"),
        NatEstablished = 10 => ("nat_established", "packets translated in their original direction from an existing conntrack entry"),
        ReverseNat = 11 => ("reverse_nat", "reply packets translated back to the service or original address"),
        Hairpin = 12 => ("hairpin", "service flows where a pod reached itself and was masqueraded"),
        MasqueradeNewFlow = 13 => ("masquerade_new_flow", "new egress flows masqueraded to the node address"),
        ArpReply = 14 => ("arp_reply", "ARP requests from pods answered"),
        IcmpEchoReply = 15 => ("icmp_echo_reply", "pings of the pod gateway answered"),
        IcmpPortUnreachable = 16 => ("icmp_port_unreachable", "ICMP port unreachable sent for a service without endpoints, or a service address on a port it lacks"),
        IcmpFragNeeded = 17 => ("icmp_frag_needed", "ICMP fragmentation-needed sent for DF packets too big for the tunnel"),
        IcmpErrorTranslated = 18 => ("icmp_error_translated", "ICMP errors about a translated flow translated back"),
        IcmpTimeExceeded = 19 => ("icmp_time_exceeded", "ICMP time exceeded sent for packets whose TTL ran out here"),
        AffinityTableFull = 20 => ("affinity_table_full", "new flows of ClientIP-affinity services whose client the full affinity table could not remember (balanced without affinity)"),
        PolicyNewFlow = 21 => ("policy_new_flow", "new flows of a pod NetworkPolicies select, judged and allowed, tracked so the rest of the flow is not judged again"),
        PolicyEstablished = 22 => ("policy_established", "packets of a pod-to-pod flow tracked for NetworkPolicy, passed by its conntrack entry"),
        PolicyRevalidated = 23 => ("policy_revalidated", "tracked flows of a pod NetworkPolicies select judged again, and still allowed, after the policies changed"),
    }
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
        self.events[usize::from(e.number())]
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
        bump(&self.events[usize::from(e.number())], n);
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
pub(crate) mod tests {
    use super::*;

    /// A list's numbers are its indexes, its names distinct, snake_case and round-trip.
    pub(crate) fn check_list<L: CounterList + PartialEq>() {
        let mut names: Vec<&str> = L::ALL.iter().map(|m| m.name()).collect();
        // Their order is checked when the list compiles (`counter_list!`).
        for m in L::ALL {
            assert!(!m.help().is_empty(), "{m:?} has no help");
            let n = m.name();
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), L::ALL.len(), "names are distinct");
    }

    #[test]
    fn events_are_a_counter_list() {
        check_list::<Event>();
        assert_eq!(Event::from_name("vxlan_encap"), Some(Event::VxlanEncap));
    }

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
