//! Session affinity (`sessionAffinity: ClientIP`): which backend each client of a service port
//! was last sent to, until the port's `timeoutSeconds` pass without a new connection.
//!
//! kube-proxy keeps one list of recent clients per endpoint (iptables' `recent` match,
//! nftables' affinity sets) and refreshes a client's entry on each of its new connections; a
//! new connection from a client seen within the timeout goes to the same endpoint if that
//! endpoint is still usable. This table does the same with one entry per (service port,
//! client): the backend and when the entry expires. It is shared by every worker, like the
//! flows, so a client keeps its backend whichever worker its connections land on, and it is
//! independent of the Maglev tables: a change of endpoints moves no client whose backend stays.
//!
//! Only new flows of affinity services read or write it, so a mutex per shard is enough: the
//! established path never touches it. Memory is fixed at construction (no allocation after),
//! and a full shard refuses to remember a client rather than evicting a live one; the caller
//! counts that and balances the flow as if the service had no affinity.

use core::net::Ipv4Addr;
use std::sync::Mutex;

use crate::flow::hash_words;
use crate::time::Instant;

/// Shards, each with its own lock.
const SHARDS: usize = 64;
/// How far from its home slot an entry may sit: lookups read at most this many slots.
const PROBE: usize = 8;

/// One remembered client. `service == 0` marks a free slot.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    service: u64,
    client: u32,
    backend: u32,
    port: u16,
    expires: Instant,
}

/// The table: [`SHARDS`] shards of open-addressed slots.
#[derive(Debug)]
pub struct Affinity {
    shards: Box<[Mutex<Box<[Slot]>>]>,
    /// Slots per shard, a power of two.
    shard_slots: usize,
}

impl Affinity {
    /// A table of about `capacity` clients (rounded up to a power of two, at least one
    /// [`PROBE`] run per shard), allocated now.
    pub fn new(capacity: usize) -> Self {
        let shard_slots = capacity.div_ceil(SHARDS).next_power_of_two().max(PROBE);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![Slot::default(); shard_slots].into_boxed_slice()))
            .collect();
        Affinity {
            shards,
            shard_slots,
        }
    }

    /// The identity of a service port in this table: stable across table rebuilds, never 0.
    pub fn service_id(name: &str, proto: u8) -> u64 {
        let mut h = u64::from(proto);
        for chunk in name.as_bytes().chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = hash_words(h, u64::from_le_bytes(w));
        }
        h | 1
    }

    /// The shard and home slot of (service, client).
    fn place(&self, service: u64, client: Ipv4Addr) -> (usize, usize) {
        let h = hash_words(service, u64::from(u32::from(client)));
        (
            (h as usize) % SHARDS,
            (h >> 32) as usize & (self.shard_slots - 1),
        )
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Box<[Slot]>> {
        // A worker that panicked while holding the lock left whole slots behind (each write
        // is one assignment), so the data is still good.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The backend `client` was last sent to through `service`, if that was less than the
    /// timeout ago.
    pub fn lookup(&self, service: u64, client: Ipv4Addr, now: Instant) -> Option<(Ipv4Addr, u16)> {
        let (s, home) = self.place(service, client);
        let shard = self.shard(s);
        let c = u32::from(client);
        (0..PROBE)
            .map(|i| &shard[(home + i) & (self.shard_slots - 1)])
            .find(|e| e.service == service && e.client == c && now < e.expires)
            .map(|e| (Ipv4Addr::from(e.backend), e.port))
    }

    /// Remember that `client` was sent to `backend` through `service`, until `expires`
    /// (refreshing its entry if it has one). `false` when the client's slots are all held by
    /// other live clients: nothing is evicted.
    pub fn remember(
        &self,
        service: u64,
        client: Ipv4Addr,
        backend: (Ipv4Addr, u16),
        expires: Instant,
        now: Instant,
    ) -> bool {
        let (s, home) = self.place(service, client);
        let mut shard = self.shard(s);
        let c = u32::from(client);
        let mask = self.shard_slots - 1;
        let own = (0..PROBE).find(|i| {
            let e = &shard[(home + i) & mask];
            e.service == service && e.client == c
        });
        let free = || (0..PROBE).find(|i| now >= shard[(home + i) & mask].expires);
        let Some(i) = own.or_else(free) else {
            return false;
        };
        shard[(home + i) & mask] = Slot {
            service,
            client: c,
            backend: u32::from(backend.0),
            port: backend.1,
            expires,
        };
        true
    }

    /// Live entries (for tests and metrics: takes every lock in turn).
    pub fn len(&self, now: Instant) -> usize {
        (0..SHARDS)
            .map(|s| {
                self.shard(s)
                    .iter()
                    .filter(|e| e.service != 0 && now < e.expires)
                    .count()
            })
            .sum()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// Bytes the table takes.
    pub fn memory_bytes(&self) -> usize {
        SHARDS * self.shard_slots * core::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    const T0: Instant = Instant::from_secs(100);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 0, last)
    }

    #[test]
    fn a_client_keeps_its_backend_until_the_timeout_passes_without_a_new_connection() {
        let a = Affinity::new(1024);
        let svc = Affinity::service_id("default/web:http", 6);
        let backend = (Ipv4Addr::new(10, 244, 1, 9), 8080);
        let timeout = Duration::from_secs(10);
        assert!(a.remember(svc, ip(1), backend, T0 + timeout, T0));
        assert_eq!(
            a.lookup(svc, ip(1), T0 + Duration::from_secs(9)),
            Some(backend)
        );
        // A new connection at 9 s refreshes it to 19 s.
        let t9 = T0 + Duration::from_secs(9);
        assert!(a.remember(svc, ip(1), backend, t9 + timeout, t9));
        assert_eq!(
            a.lookup(svc, ip(1), T0 + Duration::from_secs(18)),
            Some(backend)
        );
        assert_eq!(a.lookup(svc, ip(1), T0 + Duration::from_secs(19)), None);
        // Other clients and other service ports are separate.
        assert_eq!(a.lookup(svc, ip(2), t9), None);
        let other = Affinity::service_id("default/web:https", 6);
        assert_ne!(other, svc);
        assert_eq!(a.lookup(other, ip(1), t9), None);
        assert_eq!(a.len(t9), 1);
    }

    #[test]
    fn a_full_table_refuses_new_clients_and_evicts_no_live_one() {
        let a = Affinity::new(1);
        let svc = Affinity::service_id("ns/s:p", 17);
        let backend = (Ipv4Addr::new(10, 244, 1, 9), 53);
        let later = T0 + Duration::from_secs(60);
        let total = SHARDS * PROBE;
        let mut refused = 0;
        for i in 0..4 * total as u32 {
            if !a.remember(svc, Ipv4Addr::from(i), backend, later, T0) {
                refused += 1;
            }
        }
        assert_eq!(a.len(T0), total, "every slot used");
        assert_eq!(refused, 3 * total);
        assert!(a.memory_bytes() <= total * 64);
        // Once they expire, the slots are free again.
        assert!(a.remember(svc, ip(7), backend, later + Duration::from_secs(60), later));
    }
}
