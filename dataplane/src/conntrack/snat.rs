//! Source NAT: the port (or ICMP echo identifier) a new flow's replies come back to.
//!
//! A masqueraded or hairpinned flow leaves from an address shared by many clients (the node's
//! or the gateway's), so its reply key is only unique once a port is chosen for it.
//! [`Conntrack::insert_snat`] picks one from the configured range, starting at a hash of the
//! flow (so different flows try different ports first), and claims it under the table's writer lock (see
//! `table.rs`) in the same step as the insert, so no two live flows get one port toward the
//! same peer.

use core::ops::RangeInclusive;

use super::{Conntrack, FlowRef, InsertError};
use crate::flow::FlowKey;
use crate::time::Instant;

/// How many consecutive NAT ports [`Conntrack::insert_snat`] tries before giving up.
pub const SNAT_PORT_TRIES: u32 = 64;

impl Conntrack {
    /// Like [`Conntrack::insert`], but with source NAT: `reply.dst_port` is chosen from `ports`
    /// so that the reply key is free. The search starts at a hash of `original` within the
    /// range and tries [`SNAT_PORT_TRIES`] consecutive ports (wrapping). For ICMP echo the
    /// identifier is in the port fields, so the same call picks a NAT identifier.
    ///
    /// # Errors
    ///
    /// [`InsertError::Clash`] if `original` is the reply key of another live flow;
    /// [`InsertError::Full`] as for [`Conntrack::insert`];
    /// [`InsertError::PortsExhausted`] if every port tried gives a reply key in use (or the
    /// range is empty).
    pub fn insert_snat(
        &self,
        original: FlowKey,
        reply: FlowKey,
        ports: RangeInclusive<u16>,
        tcp_flags: u8,
        now: Instant,
    ) -> Result<FlowRef, InsertError> {
        let mut writer = self.lock();
        if let Some(existing) = self.claim_original(&mut writer, &original, tcp_flags, now)? {
            return Ok(existing);
        }
        // Full before port search, so a full table is reported as such.
        if !self.ensure_free(&mut writer, now) {
            return Err(InsertError::Full);
        }
        let (first, last) = (*ports.start(), *ports.end());
        if first > last {
            return Err(InsertError::PortsExhausted);
        }
        let span = u32::from(last - first) + 1;
        let start = (original.hash() % u64::from(span)) as u32;
        for attempt in 0..span.min(SNAT_PORT_TRIES) {
            let port = first + ((start + attempt) % span) as u16;
            let candidate = FlowKey {
                dst_port: port,
                ..reply
            };
            if self.claim_reply(&mut writer, &original, &candidate, now) {
                return Ok(self.commit(&mut writer, original, candidate, tcp_flags, now));
            }
        }
        Err(InsertError::PortsExhausted)
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;
    use core::time::Duration;
    use std::collections::HashSet;

    use crate::conntrack::test_support::{dnat, table, BACKEND, CLIENT, NODE, VIP};
    use crate::conntrack::{Direction, FlowState, InsertError};
    use crate::flow::{proto, FlowKey};
    use crate::time::Instant;
    use crate::wire::tcp_flags::SYN;

    #[test]
    fn snat_flow_is_found_both_ways_and_translated() {
        let ct = table(16);
        let now = Instant::from_secs(1);
        let original = FlowKey::new(proto::TCP, CLIENT, 40000, VIP, 80);
        let reply = FlowKey::new(proto::TCP, BACKEND, 8080, NODE, 0);
        let flow = ct
            .insert_snat(original, reply, 30000..=30010, SYN, now)
            .unwrap();
        let nat_port = flow.reply.dst_port;
        assert!((30000..=30010).contains(&nat_port));
        assert_eq!(
            flow.reply,
            FlowKey {
                dst_port: nat_port,
                ..reply
            }
        );

        let forward = ct.lookup(&original, now).unwrap();
        assert_eq!(
            forward.translated(),
            FlowKey::new(proto::TCP, NODE, nat_port, BACKEND, 8080)
        );
        let back = ct.lookup(&flow.reply, now).unwrap();
        assert_eq!(back.direction, Direction::Reply);
        assert_eq!(
            back.translated(),
            FlowKey::new(proto::TCP, VIP, 80, CLIENT, 40000)
        );
        // The un-NATed reply key is not a key of the flow.
        if nat_port != 0 {
            assert_eq!(ct.lookup(&reply, now), None);
        }
    }

    #[test]
    fn icmp_echo_snat_picks_an_identifier() {
        let ct = table(16);
        let now = Instant::from_secs(1);
        // Echo request: identifier in src_port; reply carries it in dst_port.
        let original = FlowKey::new(proto::ICMP, CLIENT, 0x1234, BACKEND, 0);
        let reply = FlowKey::new(proto::ICMP, BACKEND, 0, NODE, 0);
        let flow = ct.insert_snat(original, reply, 1..=0xffff, 0, now).unwrap();
        assert_eq!(ct.info(flow.id).unwrap().0, FlowState::Icmp);
        let back = ct.lookup(&flow.reply, now).unwrap();
        assert_eq!(back.translated(), original.reversed());
        // The request leaves from the node with the NAT identifier.
        let request = flow.translated();
        assert_eq!(
            (request.src_ip, request.src_port),
            (NODE, flow.reply.dst_port)
        );
        assert_eq!((request.dst_ip, request.dst_port), (BACKEND, 0));
    }

    #[test]
    fn snat_ports_are_distinct_and_run_out() {
        let ct = table(2048);
        let now = Instant::from_secs(1);
        let reply = FlowKey::new(proto::TCP, BACKEND, 8080, NODE, 0);
        let mut ports = HashSet::new();
        for i in 0..1500u32 {
            let client = Ipv4Addr::from(u32::from(CLIENT) + i % 7);
            let original = FlowKey::new(proto::TCP, client, 30000 + i as u16, BACKEND, 8080);
            let flow = ct
                .insert_snat(original, reply, 20000..=29999, SYN, now)
                .unwrap();
            assert!((20000..=29999).contains(&flow.reply.dst_port));
            assert!(ports.insert(flow.reply.dst_port), "port reused");
            assert_eq!(ct.lookup(&flow.reply, now).unwrap().original, original);
        }

        // A four-port range holds four flows to one destination, then runs out.
        let small = table(16);
        let mut flows = Vec::new();
        for cport in 0..4 {
            let original = FlowKey::new(proto::UDP, CLIENT, cport, BACKEND, 53);
            let reply = FlowKey::new(proto::UDP, BACKEND, 53, NODE, 0);
            flows.push(
                small
                    .insert_snat(original, reply, 40000..=40003, 0, now)
                    .unwrap(),
            );
        }
        let original = FlowKey::new(proto::UDP, CLIENT, 99, BACKEND, 53);
        let reply = FlowKey::new(proto::UDP, BACKEND, 53, NODE, 0);
        assert_eq!(
            small.insert_snat(original, reply, 40000..=40003, 0, now),
            Err(InsertError::PortsExhausted)
        );
        // Another destination may reuse the same ports.
        let other_dst = FlowKey::new(proto::UDP, BACKEND, 54, NODE, 0);
        let o2 = FlowKey::new(proto::UDP, CLIENT, 99, BACKEND, 54);
        assert!(small
            .insert_snat(o2, other_dst, 40000..=40003, 0, now)
            .is_ok());
        // Once one expires its port is reused.
        let later = now + Duration::from_secs(30);
        let flow = small
            .insert_snat(original, reply, 40000..=40003, 0, later)
            .unwrap();
        assert!((40000..=40003).contains(&flow.reply.dst_port));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 5..=4;
        assert_eq!(
            small.insert_snat(dnat(proto::UDP, 1).0, reply, empty, 0, later),
            Err(InsertError::PortsExhausted)
        );
    }
}
