//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4).
//!
//! A [`Maglev`] table maps a flow hash to an index into the caller's backend list. The control
//! side builds one per service port when the backends change; workers only call
//! [`Maglev::pick`], which is one multiply, one shift and one load.
//!
//! # Contract
//!
//! - **Identity, not position.** Each backend's preference list (its permutation of the table
//!   slots) comes from a fixed-seed hash of its `(address, port)`, never from where it sits in
//!   the list. When another backend comes or goes, a backend keeps its preferences, so most
//!   flows keep their backend. Maglev is not perfectly minimal: it trades a little extra
//!   disruption for near-perfect balance. Measured at [`Maglev::size_for`]'s sizes on 100 000
//!   flows, removing one of 10 backends moves about 1.2/N of the flows (ideal: 1/N) and one of
//!   100 about 2.4/N; put the other way, 97-99% of the flows whose backend is still there keep
//!   it. The excess shrinks as `M/N` grows.
//! - **Same size only.** All of the above holds between tables of the same size. A table of
//!   another size is a different table: see [`Maglev::size_for`].
//! - **Deterministic.** The same backends in the same order and the same size give the same
//!   table on every node, every worker and after every restart. The hash seeds and the slot
//!   reduction in [`Maglev::pick`] are part of that contract: changing either moves every flow
//!   in the cluster.
//! - **Balanced.** The population loop hands out slots round-robin, so every backend owns
//!   `floor(M/N)` or `ceil(M/N)` slots (when `N <= M`). With `M >= 100 N` (what
//!   [`Maglev::size_for`] gives up to 655 backends) every share of flows is within 1% of `1/N`.
//! - **Order matters for ties.** The caller's order decides who wins a contested slot, so callers
//!   should pass backends in a canonical order (sorted), not in watch-event order.
//! - **No weights.** Every backend gets an equal share; duplicate entries are allowed and simply
//!   get a share each.
//!
//! Building costs `O(M log M)` expected time (the paper's bound for `M >> N`) and `O(N)` extra
//! memory: permutations are walked incrementally, never materialised.

use core::fmt;
use core::net::Ipv4Addr;

use crate::flow::hash_words;

/// Seed of the hash that gives a backend's first preferred slot (`offset`). ASCII "mgl_offs".
/// Changing it moves every flow: don't.
const OFFSET_SEED: u64 = 0x6d67_6c5f_6f66_6673;

/// Seed of the hash that gives a backend's stride through the table (`skip`). ASCII "mgl_skip".
/// Changing it moves every flow: don't.
const SKIP_SEED: u64 = 0x6d67_6c5f_736b_6970;

/// Table sizes [`Maglev::size_for`] chooses from: the largest prime below each power of two from
/// 2^8 to 2^16. Doubling steps keep a table at most about twice the `100 N` target with few
/// steps to cross (each crossing remaps everything, see [`Maglev::size_for`]); the largest,
/// 65 521, costs 128 KiB per service port and about 1.5 ms to build.
const TABLE_SIZES: [usize; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// A slot not yet filled while building. Backend indices stop at `u16::MAX - 1` because at most
/// `u16::MAX` backends are allowed, so this never collides with a real index.
const EMPTY: u16 = u16::MAX;

/// A Maglev lookup table: each slot holds an index into the backend list it was built from.
///
/// Immutable once built; share it through the snapshot.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u16]>,
}

impl Maglev {
    /// Builds the table for `backends` (in the caller's order; the indices [`Maglev::pick`]
    /// returns are positions in this slice) with `size` slots.
    ///
    /// An empty backend list gives an empty table, whose [`Maglev::pick`] is always `None`.
    /// Use [`Maglev::size_for`] to choose `size`.
    ///
    /// # Panics
    ///
    /// If `size` is not prime (the permutations would not cover every slot, and the population
    /// loop would not terminate), or if there are more than `u16::MAX` backends. Both are
    /// programming errors on the control side, never a consequence of packet input.
    pub fn new(backends: &[(Ipv4Addr, u16)], size: usize) -> Maglev {
        assert!(is_prime(size), "Maglev table size {size} is not prime");
        assert!(
            backends.len() <= usize::from(u16::MAX),
            "Maglev supports at most {} backends, got {}",
            u16::MAX,
            backends.len()
        );
        if backends.is_empty() {
            return Maglev {
                table: Box::default(),
            };
        }

        // Each backend's permutation is `(offset + j * skip) % size` for j = 0, 1, ...; with
        // `size` prime and `1 <= skip < size` it visits every slot exactly once. `cursor` holds
        // the next candidate, i.e. the permutation at `next[i]` in the paper's pseudocode.
        let m = size as u64;
        let (mut cursor, skip): (Vec<usize>, Vec<usize>) = backends
            .iter()
            .map(|&(ip, port)| {
                let identity = (u64::from(u32::from(ip)) << 16) | u64::from(port);
                let offset = hash_words(identity, OFFSET_SEED) % m;
                let skip = hash_words(identity, SKIP_SEED) % (m - 1) + 1;
                (offset as usize, skip as usize)
            })
            .unzip();

        let mut table = vec![EMPTY; size].into_boxed_slice();
        let mut filled = 0;
        'population: loop {
            for (index, (cursor, &skip)) in cursor.iter_mut().zip(&skip).enumerate() {
                let mut slot = *cursor;
                while table[slot] != EMPTY {
                    slot = wrapping_step(slot, skip, size);
                }
                table[slot] = index as u16;
                *cursor = wrapping_step(slot, skip, size);
                filled += 1;
                if filled == size {
                    break 'population;
                }
            }
        }
        Maglev { table }
    }

    /// The table size for `backends` backends: the smallest size in a fixed list of primes
    /// (251, 509, 1021, ... 65 521: the largest prime below each power of two) that is at least
    /// `100 * backends`, following the paper's `M >> N` guidance; 65 521 when none is.
    ///
    /// Deterministic and monotone in `backends`, so every node picks the same size for the same
    /// backend count. Beyond 655 backends the table stays at 65 521 slots and balance degrades
    /// gracefully (each backend still gets `floor(M/N)` or `ceil(M/N)` slots).
    ///
    /// Crossing a step costs: a new size is a new table, and a flow keeps its backend only by
    /// chance (going from 10 to 11 backends, 1021 to 2039 slots, moves 92% of the flows).
    /// Established connections are pinned by conntrack, so this only hurts flows this node has
    /// no entry for, such as one that ECMP moved here from another node. A caller that cares
    /// more about that than about memory should give every service one fixed size (Cilium
    /// defaults to 16 381, Katran uses 65 537) instead of calling this.
    pub const fn size_for(backends: usize) -> usize {
        let target = backends.saturating_mul(100);
        let mut i = 0;
        while i < TABLE_SIZES.len() {
            if TABLE_SIZES[i] >= target {
                return TABLE_SIZES[i];
            }
            i += 1;
        }
        TABLE_SIZES[TABLE_SIZES.len() - 1]
    }

    /// The backend index for a flow hash, or `None` if the table is empty.
    ///
    /// The slot is `(hash * len) >> 64` (Lemire's multiply-shift range reduction) rather than
    /// `hash % len`: one widening multiply instead of a 20-to-90-cycle division, and just as
    /// uniform for a well-mixed 64-bit hash such as [`crate::flow::FlowKey::hash`]. It reads the
    /// hash's high bits, so the hash must be mixed in every bit (ours is). The mapping is part of
    /// the contract: every node must reduce the same way.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<u16> {
        let slot = ((u128::from(hash) * self.table.len() as u128) >> 64) as usize;
        // For an empty table `slot` is 0 and `get` returns `None`: the bounds check is the
        // emptiness check.
        self.table.get(slot).copied()
    }

    /// The number of slots (0 for an empty table).
    #[inline]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table has no slots, i.e. was built from no backends.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The heap memory the table occupies, in bytes (two per slot).
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of_val::<[u16]>(&self.table)
    }
}

impl fmt::Debug for Maglev {
    /// The size only: a table has up to 65 521 entries, which would drown any log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

/// `(slot + skip) % size` for `slot < size` and `skip < size`, without a division.
#[inline]
fn wrapping_step(slot: usize, skip: usize, size: usize) -> usize {
    let next = slot + skip;
    if next >= size {
        next - size
    } else {
        next
    }
}

/// Trial division; only run when building a table, on sizes up to a few tens of thousands.
const fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d <= n / d {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::fmix64;

    fn backends(n: usize) -> Vec<(Ipv4Addr, u16)> {
        (0..n)
            .map(|i| {
                (
                    Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250 + 1) as u8),
                    8080,
                )
            })
            .collect()
    }

    /// Pseudo-random flow hashes, as the pipeline would feed them.
    fn flow_hashes(count: u64) -> impl Iterator<Item = u64> {
        (0..count).map(|i| fmix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed))
    }

    /// Picks for every flow hash, as backend identities rather than indices (indices shift when
    /// a backend is removed from the middle of the list).
    fn assignments(list: &[(Ipv4Addr, u16)], flows: u64) -> Vec<(Ipv4Addr, u16)> {
        let maglev = Maglev::new(list, Maglev::size_for(list.len()));
        flow_hashes(flows)
            .map(|h| list[usize::from(maglev.pick(h).expect("non-empty table"))])
            .collect()
    }

    /// How a change of backends moves 100 000 flows: the fraction of all flows that changed
    /// backend, and the collateral: the fraction of the flows whose backend is still there that
    /// were moved anyway, to another backend that was already there. A perfect consistent hash
    /// has no collateral (only the removed backend's flows move, or only the newcomer's share).
    fn disruption(before: &[(Ipv4Addr, u16)], after: &[(Ipv4Addr, u16)]) -> (f64, f64) {
        const FLOWS: u64 = 100_000;
        let old = assignments(before, FLOWS);
        let new = assignments(after, FLOWS);
        let moved = old.iter().zip(&new).filter(|(o, n)| o != n).count();
        let kept_backend = old.iter().filter(|o| after.contains(o)).count();
        let collateral = (old.iter().zip(&new))
            .filter(|(o, n)| o != n && after.contains(o) && before.contains(n))
            .count();
        (
            moved as f64 / FLOWS as f64,
            collateral as f64 / kept_backend as f64,
        )
    }

    #[test]
    fn same_input_gives_the_same_table() {
        let list = backends(10);
        let a = Maglev::new(&list, Maglev::size_for(10));
        let b = Maglev::new(&list.clone(), Maglev::size_for(10));
        assert_eq!(a, b);
        assert!(a.table.iter().all(|&i| usize::from(i) < list.len()));
    }

    #[test]
    fn table_matches_an_independent_implementation() {
        // A golden prefix: if this changes, every service flow in a running cluster moves on
        // upgrade. Computed independently (Python, from the paper's pseudocode, the seeds above
        // and flow::hash_words).
        let list = [
            (Ipv4Addr::new(10, 244, 1, 5), 8080),
            (Ipv4Addr::new(10, 244, 2, 7), 8080),
            (Ipv4Addr::new(10, 244, 3, 9), 443),
        ];
        let maglev = Maglev::new(&list, 251);
        assert_eq!(
            &maglev.table[..16],
            &[1, 2, 2, 0, 0, 2, 0, 0, 1, 0, 2, 2, 2, 0, 0, 1]
        );
        // And the whole table, through a position-weighted sum.
        let weighted: usize = (maglev.table.iter().enumerate())
            .map(|(slot, &i)| (slot + 1) * usize::from(i))
            .sum();
        assert_eq!(weighted, 32419);
    }

    #[test]
    fn every_backend_gets_its_share() {
        for n in [1, 2, 3, 10, 100] {
            let size = Maglev::size_for(n);
            let maglev = Maglev::new(&backends(n), size);
            assert_eq!(maglev.len(), size);
            let mut counts = vec![0usize; n];
            for &i in maglev.table.iter() {
                counts[usize::from(i)] += 1;
            }
            let fair = size as f64 / n as f64;
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            eprintln!("N={n} M={size}: slots per backend {min}..={max}, fair share {fair:.1}");
            for (i, &c) in counts.iter().enumerate() {
                assert!(
                    (0.9 * fair..=1.1 * fair).contains(&(c as f64)),
                    "N={n}: backend {i} has {c} slots, fair share {fair:.1}"
                );
            }
            // The population loop is round-robin: shares differ by at most one slot.
            assert!(max - min <= 1, "N={n}: shares {min}..={max}");
        }
    }

    /// Where in the list a backend is removed or added: the ends and the middle, so the indices
    /// of the others shift or not.
    fn positions(n: usize) -> [usize; 5] {
        [0, n / 4, n / 2, 3 * n / 4, n - 1]
    }

    #[test]
    fn removing_a_backend_moves_few_flows() {
        // Measured over the five positions: N=10 (M=1021) moves 1.18/N to 1.28/N of the flows,
        // with 2.1% to 3.2% collateral; N=100 (M=16381) moves 2.25/N to 2.43/N, with 1.3% to
        // 1.5% collateral. Maglev's excess over the ideal 1/N grows with N at a fixed M/N
        // (paper, figure 9) and shrinks as M/N grows. The bounds sit just above the figures.
        for (n, max_moved_times_n, max_collateral) in [(10, 1.35, 0.035), (100, 2.6, 0.016)] {
            let before = backends(n);
            for position in positions(n) {
                let mut after = before.clone();
                after.remove(position);
                let (moved, collateral) = disruption(&before, &after);
                eprintln!(
                    "remove #{position} of {n} (M={}->{}): moved {:.3}% of flows = {:.2}/N, \
                     collateral {:.3}%",
                    Maglev::size_for(n),
                    Maglev::size_for(n - 1),
                    moved * 100.0,
                    moved * n as f64,
                    collateral * 100.0
                );
                // Every flow of the removed backend must move: at least its 1/N share.
                assert!(moved >= 0.95 / n as f64, "N={n}: moved {moved}");
                assert!(
                    moved * n as f64 <= max_moved_times_n,
                    "N={n}: moved {moved}"
                );
                assert!(collateral <= max_collateral, "N={n}: {collateral}");
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_few_flows() {
        // 9 -> 10 and 99 -> 100 keep the table size (see `resizing_moves_almost_every_flow`).
        // Measured over the five positions: 9 -> 10 moves 1.24/N to 1.25/N of the flows, with
        // 2.4% to 2.5% collateral; 99 -> 100 moves 2.39/N, with 1.4% collateral.
        for (n, max_moved_times_n, max_collateral) in [(9, 1.35, 0.03), (99, 2.6, 0.016)] {
            assert_eq!(Maglev::size_for(n), Maglev::size_for(n + 1));
            let grown = backends(n + 1);
            let newcomer = grown[n];
            for position in positions(n + 1) {
                let mut after = backends(n);
                after.insert(position, newcomer);
                let (moved, collateral) = disruption(&backends(n), &after);
                let n_after = (n + 1) as f64;
                eprintln!(
                    "add #{position} to {n} (M={}): moved {:.3}% of flows = {:.2}/N, \
                     collateral {:.3}%",
                    Maglev::size_for(n + 1),
                    moved * 100.0,
                    moved * n_after,
                    collateral * 100.0
                );
                // The newcomer's 1/N share has to come from somewhere.
                assert!(moved >= 0.95 / n_after, "N={n}: moved {moved}");
                assert!(moved * n_after <= max_moved_times_n, "N={n}: moved {moved}");
                assert!(collateral <= max_collateral, "N={n}: {collateral}");
            }
        }
    }

    #[test]
    fn resizing_moves_almost_every_flow() {
        // 10 -> 11 backends crosses a size step (1021 -> 2039 slots). A new size is a new table:
        // a flow keeps its backend only by chance (about 1/N). This pins the cost that
        // `size_for`'s documentation warns about.
        assert_ne!(Maglev::size_for(10), Maglev::size_for(11));
        let mut after = backends(10);
        after.push(backends(11)[10]);
        let (moved, _) = disruption(&backends(10), &after);
        eprintln!(
            "add 1 to 10 with resize: moved {:.2}% of flows",
            moved * 100.0
        );
        assert!(moved >= 0.85, "moved {moved}");
    }

    #[test]
    fn empty_table_picks_nothing() {
        let maglev = Maglev::new(&[], Maglev::size_for(0));
        assert!(maglev.is_empty());
        assert_eq!(maglev.len(), 0);
        assert_eq!(maglev.memory_bytes(), 0);
        for h in [0, 1, u64::MAX] {
            assert_eq!(maglev.pick(h), None);
        }
    }

    #[test]
    fn pick_covers_the_whole_table() {
        let maglev = Maglev::new(&backends(3), 251);
        assert_eq!(maglev.pick(0), Some(maglev.table[0]));
        assert_eq!(maglev.pick(u64::MAX), Some(maglev.table[250]));
        assert_eq!(maglev.memory_bytes(), 502);
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn non_prime_size_is_refused() {
        let _ = Maglev::new(&backends(2), 256);
    }

    #[test]
    fn size_for_is_prime_monotone_and_bounded() {
        assert!(TABLE_SIZES.windows(2).all(|w| w[0] < w[1]));
        let mut previous = 0;
        for n in 0..2000 {
            let size = Maglev::size_for(n);
            assert!(
                (2..size)
                    .take_while(|d| d * d <= size)
                    .all(|d| size % d != 0),
                "{size} is not prime"
            );
            assert!(size >= previous, "size_for({n}) = {size} < {previous}");
            assert!((251..=65_521).contains(&size));
            assert!(size >= 100 * n || size == 65_521, "size_for({n}) = {size}");
            previous = size;
        }
        assert_eq!(Maglev::size_for(0), 251);
        assert_eq!(Maglev::size_for(3), 509);
        assert_eq!(Maglev::size_for(10), 1021);
        assert_eq!(Maglev::size_for(100), 16381);
        assert_eq!(Maglev::size_for(usize::MAX), 65_521);
    }
}
