//! Longest-prefix-match table for IPv4 routes.
//!
//! # Contract
//!
//! - A route is a prefix (an address and a length from 0 to 32) and a value. Host bits of the
//!   address are masked off on insert, so `10.244.1.7/24` and `10.244.1.0/24` are the same route;
//!   a length over 32 is refused with [`LpmError::InvalidPrefixLen`].
//! - [`Lpm::lookup`] returns the value of the longest prefix containing the address, or `None`
//!   when none does (add a `/0` route for a default).
//! - The table is built on the control side and read by workers through the snapshot: lookups
//!   take `&self` and never allocate.
//!
//! # Why a hash map per prefix length
//!
//! A node's routing table has many routes but very few distinct prefix lengths: `/32` host
//! routes, the `/24` pod CIDRs of every node, the `/16` cluster CIDR, the `/12` service CIDR and
//! the `/0` default. So the table keeps one hash map per length present, ordered longest first,
//! and a lookup masks the address and probes each map in turn until one hits. Its cost is one
//! hash probe per distinct length (at most 33, typically 5), independent of the number of routes,
//! and memory is proportional to the number of routes.
//!
//! The trade-off: a table with many distinct lengths (a full Internet table uses about 25) pays
//! a probe per length on every miss, where a multibit trie or DIR-24-8 pays a bounded number of
//! array loads at the cost of far more memory and a much more involved update. For a
//! Kubernetes node the probe count is small and the structure is trivially correct; switch if a
//! benchmark with a real table says otherwise.

use core::net::Ipv4Addr;

use crate::flow::FastMap;

/// Why a route was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// The prefix length is over 32.
    #[error("invalid IPv4 prefix length /{0}: must be 0 to 32")]
    InvalidPrefixLen(u8),
}

/// The routes of one prefix length, keyed by their masked network address.
#[derive(Clone, Debug)]
struct Level<T> {
    len: u8,
    mask: u32,
    routes: FastMap<u32, T>,
}

/// A longest-prefix-match table from IPv4 prefixes to values of type `T`.
#[derive(Clone, Debug)]
pub struct Lpm<T> {
    /// One level per prefix length with at least one route, longest first.
    levels: Vec<Level<T>>,
    /// The number of routes over all levels.
    len: usize,
}

impl<T> Default for Lpm<T> {
    fn default() -> Self {
        Lpm::new()
    }
}

impl<T> Lpm<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Lpm {
            levels: Vec::new(),
            len: 0,
        }
    }

    /// Adds the route `prefix/len`, with the host bits of `prefix` masked off, and returns the
    /// value it replaces if that exact prefix was already present.
    ///
    /// # Errors
    ///
    /// [`LpmError::InvalidPrefixLen`] if `len` is over 32; the table is unchanged.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, value: T) -> Result<Option<T>, LpmError> {
        let mask = netmask(len).ok_or(LpmError::InvalidPrefixLen(len))?;
        // Levels are sorted by descending length; compare the other way round.
        let index = match self.levels.binary_search_by(|level| len.cmp(&level.len)) {
            Ok(index) => index,
            Err(index) => {
                let level = Level {
                    len,
                    mask,
                    routes: FastMap::default(),
                };
                self.levels.insert(index, level);
                index
            }
        };
        let replaced = self.levels[index]
            .routes
            .insert(u32::from(prefix) & mask, value);
        if replaced.is_none() {
            self.len += 1;
        }
        Ok(replaced)
    }

    /// Removes the route `prefix/len` (host bits masked off) and returns its value, or `None` if
    /// there is no such route (including for a length over 32, which no route can have).
    pub fn remove(&mut self, prefix: Ipv4Addr, len: u8) -> Option<T> {
        let index = self.level_index(len)?;
        let level = &mut self.levels[index];
        let removed = level.routes.remove(&(u32::from(prefix) & level.mask))?;
        self.len -= 1;
        // Drop the empty level so lookups stop probing it.
        if level.routes.is_empty() {
            self.levels.remove(index);
        }
        Some(removed)
    }

    /// The value of exactly the route `prefix/len` (host bits masked off), not a longest match.
    pub fn get(&self, prefix: Ipv4Addr, len: u8) -> Option<&T> {
        let level = &self.levels[self.level_index(len)?];
        level.routes.get(&(u32::from(prefix) & level.mask))
    }

    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&T> {
        let addr = u32::from(addr);
        self.levels
            .iter()
            .find_map(|level| level.routes.get(&(addr & level.mask)))
    }

    /// The longest prefix containing `addr`, as its network address, its length and its value.
    pub fn lookup_prefix(&self, addr: Ipv4Addr) -> Option<(Ipv4Addr, u8, &T)> {
        let addr = u32::from(addr);
        self.levels.iter().find_map(|level| {
            let network = addr & level.mask;
            let value = level.routes.get(&network)?;
            Some((Ipv4Addr::from(network), level.len, value))
        })
    }

    /// The number of routes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no routes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of distinct prefix lengths present: the number of hash probes a lookup that
    /// finds nothing makes.
    #[inline]
    pub fn distinct_lengths(&self) -> usize {
        self.levels.len()
    }

    /// Every route as (network address, prefix length, value): longest prefixes first, in no
    /// particular order within a length.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, u8, &T)> + '_ {
        self.levels.iter().flat_map(|level| {
            level
                .routes
                .iter()
                .map(move |(&network, value)| (Ipv4Addr::from(network), level.len, value))
        })
    }

    /// The position of the level for `len`, if it has any route.
    fn level_index(&self, len: u8) -> Option<usize> {
        self.levels
            .binary_search_by(|level| len.cmp(&level.len))
            .ok()
    }
}

/// The netmask of a prefix length, or `None` if the length is over 32.
#[inline]
const fn netmask(len: u8) -> Option<u32> {
    match len {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastrand::Rng;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The node of the module docs: default, service, cluster, pod CIDRs and host routes.
    fn node_table() -> Lpm<&'static str> {
        let mut t = Lpm::new();
        for (prefix, len, value) in [
            ("0.0.0.0", 0, "default"),
            ("10.96.0.0", 12, "services"),
            ("10.244.0.0", 16, "cluster"),
            ("10.244.1.0", 24, "local pods"),
            ("10.244.2.0", 24, "node b"),
            ("192.168.1.10", 32, "node ip"),
        ] {
            assert_eq!(t.insert(ip(prefix), len, value), Ok(None));
        }
        t
    }

    #[test]
    fn longest_prefix_wins() {
        let t = node_table();
        assert_eq!(t.len(), 6);
        assert_eq!(t.distinct_lengths(), 5);
        assert_eq!(t.lookup(ip("10.244.1.7")), Some(&"local pods"));
        assert_eq!(t.lookup(ip("10.244.2.255")), Some(&"node b"));
        assert_eq!(t.lookup(ip("10.244.3.1")), Some(&"cluster"));
        assert_eq!(t.lookup(ip("10.96.0.10")), Some(&"services"));
        assert_eq!(t.lookup(ip("10.111.255.255")), Some(&"services"));
        assert_eq!(t.lookup(ip("10.112.0.0")), Some(&"default"));
        assert_eq!(t.lookup(ip("192.168.1.10")), Some(&"node ip"));
        assert_eq!(t.lookup(ip("192.168.1.11")), Some(&"default"));
        assert_eq!(
            t.lookup_prefix(ip("10.244.3.1")),
            Some((ip("10.244.0.0"), 16, &"cluster"))
        );
        assert_eq!(
            t.lookup_prefix(ip("192.168.1.10")),
            Some((ip("192.168.1.10"), 32, &"node ip"))
        );
    }

    #[test]
    fn default_route_matches_everything_and_nothing_matches_without_it() {
        let mut t = node_table();
        for a in ["0.0.0.0", "255.255.255.255", "8.8.8.8", "224.0.0.1"] {
            assert_eq!(t.lookup_prefix(ip(a)), Some((ip("0.0.0.0"), 0, &"default")));
        }
        assert_eq!(t.remove(ip("0.0.0.0"), 0), Some("default"));
        assert_eq!(t.lookup(ip("8.8.8.8")), None);
        assert_eq!(t.lookup_prefix(ip("8.8.8.8")), None);
        assert_eq!(Lpm::<u8>::new().lookup(ip("8.8.8.8")), None);
    }

    #[test]
    fn host_route_matches_only_its_address() {
        let mut t = Lpm::new();
        t.insert(ip("10.0.0.1"), 32, 1).unwrap();
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&1));
        assert_eq!(t.lookup(ip("10.0.0.0")), None);
        assert_eq!(t.lookup(ip("10.0.0.2")), None);
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
    }

    #[test]
    fn insert_replaces_and_returns_the_old_value() {
        let mut t = node_table();
        assert_eq!(t.insert(ip("10.244.2.0"), 24, "node c"), Ok(Some("node b")));
        assert_eq!(t.len(), 6);
        assert_eq!(t.lookup(ip("10.244.2.1")), Some(&"node c"));
        assert_eq!(t.get(ip("10.244.2.0"), 24), Some(&"node c"));
    }

    #[test]
    fn host_bits_are_masked_off() {
        let mut t = Lpm::new();
        assert_eq!(t.insert(ip("10.244.1.77"), 24, 'a'), Ok(None));
        assert_eq!(t.insert(ip("10.244.1.0"), 24, 'b'), Ok(Some('a')));
        assert_eq!(t.insert(ip("255.255.255.255"), 0, 'd'), Ok(None));
        assert_eq!(t.len(), 2);
        let mut routes: Vec<_> = t.iter().map(|(n, l, &v)| (n, l, v)).collect();
        routes.sort();
        assert_eq!(
            routes,
            [(ip("0.0.0.0"), 0, 'd'), (ip("10.244.1.0"), 24, 'b')]
        );
        assert_eq!(t.get(ip("10.244.1.200"), 24), Some(&'b'));
        assert_eq!(
            t.lookup_prefix(ip("10.244.1.3")),
            Some((ip("10.244.1.0"), 24, &'b'))
        );
        assert_eq!(t.remove(ip("10.244.1.255"), 24), Some('b'));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn remove_takes_only_the_exact_prefix_and_drops_empty_lengths() {
        let mut t = node_table();
        assert_eq!(t.remove(ip("10.244.0.0"), 24), None, "no such /24");
        assert_eq!(t.remove(ip("10.244.1.0"), 23), None, "no /23 at all");
        assert_eq!(t.remove(ip("10.244.1.0"), 33), None);
        assert_eq!(t.len(), 6);

        assert_eq!(t.remove(ip("10.244.1.0"), 24), Some("local pods"));
        assert_eq!(t.lookup(ip("10.244.1.7")), Some(&"cluster"));
        assert_eq!(t.distinct_lengths(), 5, "node b is still a /24");
        assert_eq!(t.remove(ip("10.244.2.0"), 24), Some("node b"));
        assert_eq!(t.distinct_lengths(), 4);
        assert_eq!(t.remove(ip("10.244.2.0"), 24), None);
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(ip("10.244.2.0"), 24), None);

        for (prefix, len) in [
            ("0.0.0.0", 0),
            ("10.96.0.0", 12),
            ("10.244.0.0", 16),
            ("192.168.1.10", 32),
        ] {
            assert!(t.remove(ip(prefix), len).is_some());
        }
        assert!(t.is_empty());
        assert_eq!(t.distinct_lengths(), 0);
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn prefix_length_over_32_is_refused() {
        let mut t = node_table();
        assert_eq!(
            t.insert(ip("10.0.0.0"), 33, "bad"),
            Err(LpmError::InvalidPrefixLen(33))
        );
        assert_eq!(t.len(), 6);
        assert_eq!(t.distinct_lengths(), 5);
        assert_eq!(t.get(ip("10.0.0.0"), 33), None);
        assert_eq!(
            LpmError::InvalidPrefixLen(33).to_string(),
            "invalid IPv4 prefix length /33: must be 0 to 32"
        );
    }

    #[test]
    fn iter_lists_every_route_longest_first() {
        let t = node_table();
        let routes: Vec<_> = t.iter().collect();
        assert_eq!(routes.len(), t.len());
        assert!(routes.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(routes.contains(&(ip("10.244.2.0"), 24, &"node b")));
        assert!(routes.contains(&(ip("0.0.0.0"), 0, &"default")));
    }

    /// The obviously correct table: a list of routes, scanned in full.
    #[derive(Default)]
    struct Reference(Vec<(u32, u8, u32)>);

    impl Reference {
        fn insert(&mut self, network: u32, len: u8, value: u32) -> Option<u32> {
            let network = network & netmask(len).unwrap();
            match self.0.iter_mut().find(|r| r.0 == network && r.1 == len) {
                Some(route) => Some(core::mem::replace(&mut route.2, value)),
                None => {
                    self.0.push((network, len, value));
                    None
                }
            }
        }

        fn remove(&mut self, network: u32, len: u8) -> Option<u32> {
            let network = network & netmask(len).unwrap();
            let index = self.0.iter().position(|r| r.0 == network && r.1 == len)?;
            Some(self.0.swap_remove(index).2)
        }

        fn lookup(&self, addr: u32) -> Option<(Ipv4Addr, u8, &u32)> {
            self.0
                .iter()
                .filter(|&&(network, len, _)| addr & netmask(len).unwrap() == network)
                .max_by_key(|r| r.1)
                .map(|(network, len, value)| (Ipv4Addr::from(*network), *len, value))
        }
    }

    #[test]
    fn matches_a_linear_scan_on_random_routes() {
        let mut rng = Rng::with_seed(0x6b78_6470_726f_7574);
        let mut lpm = Lpm::new();
        let mut reference = Reference::default();
        let mut inserted = Vec::new();

        // Half the lengths a node really uses, half anything, so both few and many distinct
        // lengths are exercised. Addresses come from a few /8s so that prefixes nest.
        let random_prefix = |rng: &mut Rng| {
            const COMMON: [u8; 6] = [0, 12, 16, 24, 24, 32];
            let len = if rng.bool() {
                COMMON[rng.usize(..COMMON.len())]
            } else {
                rng.u8(..33)
            };
            let addr = (rng.u32(..) & 0x03ff_ffff) | 0x0a00_0000;
            (addr, len)
        };
        for value in 0..3000 {
            let (addr, len) = random_prefix(&mut rng);
            let expected = reference.insert(addr, len, value);
            assert_eq!(lpm.insert(Ipv4Addr::from(addr), len, value), Ok(expected));
            inserted.push((addr, len));
        }
        assert_eq!(lpm.len(), reference.0.len());

        let check = |lpm: &Lpm<u32>, reference: &Reference, rng: &mut Rng| {
            for _ in 0..5000 {
                // Half near an inserted prefix (random host bits), half anywhere in the range.
                let addr = if rng.bool() {
                    let (network, len) = inserted[rng.usize(..inserted.len())];
                    let mask = netmask(len).unwrap();
                    (network & mask) | (rng.u32(..) & !mask)
                } else {
                    (rng.u32(..) & 0x07ff_ffff) | 0x0800_0000
                };
                let expected = reference.lookup(addr);
                assert_eq!(lpm.lookup_prefix(Ipv4Addr::from(addr)), expected);
                assert_eq!(lpm.lookup(Ipv4Addr::from(addr)), expected.map(|e| e.2));
            }
            let mut ours: Vec<_> = lpm.iter().map(|(n, l, &v)| (u32::from(n), l, v)).collect();
            let mut theirs = reference.0.clone();
            ours.sort_unstable();
            theirs.sort_unstable();
            assert_eq!(ours, theirs);
        };
        check(&lpm, &reference, &mut rng);

        // Remove about half (some twice, some never present), then check again.
        for _ in 0..2000 {
            let (addr, len) = if rng.usize(..4) == 0 {
                random_prefix(&mut rng)
            } else {
                inserted[rng.usize(..inserted.len())]
            };
            let expected = reference.remove(addr, len);
            assert_eq!(lpm.remove(Ipv4Addr::from(addr), len), expected);
        }
        assert_eq!(lpm.len(), reference.0.len());
        check(&lpm, &reference, &mut rng);
    }
}
