//! Conntrack's writer side against a model: any sequence of inserts (plain and with source
//! NAT), updates, removals, collections and adoptions (the rebuild a successor agent does) on
//! a 16-flow table, with keys from a small space so that they collide. After every step each
//! flow the model holds is found under both its keys, with the other key beside it, and the
//! table holds no more flows than the model. Time moves a millisecond a step, so within a run
//! nothing expires (the shortest timeout is 10 s); at the end a day passes and a collection
//! must empty the table.
#![no_main]

use core::net::Ipv4Addr;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig, Direction, InsertError};
use kxdp_dataplane::flow::{proto, FlowKey};
use kxdp_dataplane::Instant;
use libfuzzer_sys::fuzz_target;

const CAPACITY: usize = 16;
const SNAT_PORTS: core::ops::RangeInclusive<u16> = 61000..=61003;

/// A key from two bytes: 2 protocols x 4 x 4 x 4 x 4 addresses and ports.
fn key(a: u8, b: u8) -> FlowKey {
    let proto = if a & 0x80 != 0 {
        proto::TCP
    } else {
        proto::UDP
    };
    FlowKey::new(
        proto,
        Ipv4Addr::new(10, 0, 0, a & 3),
        1000 + u16::from((a >> 2) & 3),
        Ipv4Addr::new(10, 0, 1, b & 3),
        80 + u16::from((b >> 2) & 3),
    )
}

/// The flows the table must hold: (original, reply).
#[derive(Default)]
struct Model {
    flows: Vec<(FlowKey, FlowKey)>,
}

impl Model {
    fn by_original(&self, k: &FlowKey) -> Option<(FlowKey, FlowKey)> {
        self.flows.iter().copied().find(|(o, _)| o == k)
    }
    fn is_reply(&self, k: &FlowKey) -> bool {
        self.flows.iter().any(|(_, r)| r == k)
    }
    fn is_key(&self, k: &FlowKey) -> bool {
        self.flows.iter().any(|(o, r)| o == k || r == k)
    }
}

fn check(ct: &Conntrack, model: &Model, now: Instant) {
    assert_eq!(ct.len(), model.flows.len(), "flows in the table");
    for (o, r) in &model.flows {
        let f = ct.lookup(o, now).expect("a flow under its original key");
        assert_eq!((f.direction, f.reply), (Direction::Original, *r));
        let f = ct.lookup(r, now).expect("a flow under its reply key");
        assert_eq!((f.direction, f.original), (Direction::Reply, *o));
    }
    assert_eq!(ct.index_stats().entries, 2 * model.flows.len());
}

fuzz_target!(|data: &[u8]| {
    let ct = Conntrack::new(ConntrackConfig {
        capacity: CAPACITY as u32,
        ..ConntrackConfig::default()
    });
    let mut model = Model::default();
    let mut now = Instant::from_secs(1000);
    for op in data.chunks_exact(5) {
        now = Instant::from_nanos(now.as_nanos() + 1_000_000);
        let (o, r, flags) = (key(op[1], op[2]), key(op[3], op[4]), op[3]);
        match op[0] % 7 {
            0 => {
                let got = ct.insert(o, r, flags & 0x17, now);
                let want = if let Some(existing) = model.by_original(&o) {
                    Ok(existing.1)
                } else if model.is_reply(&o) || r == o || model.is_key(&r) {
                    Err(InsertError::Clash)
                } else if model.flows.len() == CAPACITY {
                    Err(InsertError::Full)
                } else {
                    model.flows.push((o, r));
                    Ok(r)
                };
                assert_eq!(got.map(|f| f.reply), want, "insert {o:?} -> {r:?}");
            }
            1 => {
                let got = ct.insert_snat(o, r, SNAT_PORTS, flags & 0x17, now);
                match (got, model.by_original(&o)) {
                    (Ok(f), Some(existing)) => assert_eq!(f.reply, existing.1),
                    (Ok(f), None) => {
                        assert!(!model.is_reply(&o), "SNAT over another flow's reply key");
                        assert!(SNAT_PORTS.contains(&f.reply.dst_port));
                        assert_eq!(
                            FlowKey {
                                dst_port: r.dst_port,
                                ..f.reply
                            },
                            r
                        );
                        assert!(f.reply != o && !model.is_key(&f.reply), "a NAT port in use");
                        assert!(model.flows.len() < CAPACITY);
                        model.flows.push((o, f.reply));
                    }
                    (Err(InsertError::Clash), None) => assert!(model.is_reply(&o)),
                    (Err(InsertError::Full), None) => assert_eq!(model.flows.len(), CAPACITY),
                    (Err(InsertError::PortsExhausted), None) => {
                        assert!(SNAT_PORTS.clone().all(|p| {
                            let c = FlowKey { dst_port: p, ..r };
                            c == o || model.is_key(&c)
                        }));
                    }
                    (Err(e), Some(_)) => panic!("{e} for an existing flow"),
                }
            }
            2 => {
                if let Some(f) = ct.lookup(&o, now) {
                    assert!(ct.remove(&f));
                    model.flows.retain(|(mo, _)| *mo != f.original);
                } else {
                    assert!(!model.is_key(&o), "{o:?} is a key, yet not found");
                }
            }
            3 => {
                if let Some(f) = ct.lookup(&o, now) {
                    ct.update(&f, flags & 0x17, now);
                }
            }
            4 => assert_eq!(ct.gc(now, usize::from(op[1])), 0, "nothing has expired"),
            5 => {
                let adopted = ct.adopt(now);
                assert_eq!(adopted.flows, model.flows.len());
                assert_eq!((adopted.torn, adopted.expired, adopted.clashing), (0, 0, 0));
            }
            _ => {
                // A key nobody holds is not found.
                if !model.is_key(&o) {
                    assert!(ct.lookup(&o, now).is_none(), "{o:?} found, held by none");
                }
            }
        }
        check(&ct, &model, now);
    }
    // A day later every flow has expired: one full collection empties the table.
    let later = Instant::from_nanos(now.as_nanos() + 86_401 * 1_000_000_000);
    ct.gc(later, CAPACITY);
    assert_eq!(ct.len(), 0);
    assert_eq!(ct.index_stats().entries, 0);
});
