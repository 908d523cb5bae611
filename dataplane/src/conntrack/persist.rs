//! Conntrack in a file, so that the flows outlive the process: the next agent on the node maps
//! the same file and carries on with every connection and NAT mapping this one tracked.
//!
//! The file (on a tmpfs such as `/run`, where a mapping is memory and nothing is written to a
//! disk) holds a header in its first huge page, then the records, then the index, each from a
//! huge-page boundary (`Conntrack::file_layout`). The header says what the bytes after it are:
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | [`MAGIC`] |
//! | 8..12 | [`LAYOUT`], the version of everything below and of the records' encoding |
//! | 12..16 | bytes per flow record |
//! | 16..24 | records (the capacity) |
//! | 24..32 | index slots |
//! | 32..48 | the clock the expiries are on (its caller-given identity: a boot id) |
//!
//! All little-endian. A reader takes a file only when every field equals what it would
//! write; anything else (another layout, another capacity, another boot's clock, a short
//! file) is refused with the field named, and the caller starts a new file. Records are
//! atomics, so another process's view of them is as sound as a worker's; the protocol that
//! makes a table consistent assumes one writer, so only one process may use a file at a time
//! (the caller's lock), and the next one calls [`Conntrack::adopt`] before any worker runs.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Conntrack, ConntrackConfig};

/// What a conntrack file starts with.
const MAGIC: [u8; 8] = *b"kxdp-ct\n";

/// The version of the file's layout and the records' encoding. A change to either (the record
/// or state word's fields, the index entry's encoding, the header) must change it, so that a
/// new agent never reads an old agent's bytes as its own.
pub const LAYOUT: u32 = 1;

const HEADER_BYTES: usize = 48;

/// What [`Conntrack::adopt`] found in the records it took over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Live flows, now in the table.
    pub flows: usize,
    /// Records caught half-written by a process that died in an insert: freed.
    pub torn: usize,
    /// Flows that expired while no one tracked them: freed.
    pub expired: usize,
    /// Records holding a key another record holds (never written by a sound table): freed.
    pub clashing: usize,
}

/// Why a conntrack file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is not one this build can read; the message names the field.
    #[error("{0}")]
    Refused(String),
    /// Reading or mapping it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn header(config: &ConntrackConfig, clock: [u8; 16]) -> [u8; HEADER_BYTES] {
    let (capacity, index_slots) = Conntrack::shape(config);
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&LAYOUT.to_le_bytes());
    h[12..16].copy_from_slice(&Conntrack::RECORD_BYTES.to_le_bytes());
    h[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
    h[24..32].copy_from_slice(&(index_slots as u64).to_le_bytes());
    h[32..48].copy_from_slice(&clock);
    h
}

impl Conntrack {
    /// An empty table for `config` in `file`, which is cut to nothing and sized for it, every
    /// byte allocated (a full file system fails this call, not a later write); its expiries
    /// are on the clock `clock` names. The file must be one no other process maps.
    pub fn create_in(
        config: ConntrackConfig,
        file: &File,
        clock: [u8; 16],
    ) -> std::io::Result<Self> {
        let (_, _, end) = Conntrack::file_layout(&config);
        file.set_len(0)?;
        crate::hugemem::allocate(file, end)?;
        file.write_all_at(&header(&config, clock), 0)?;
        Conntrack::in_file(config, file)
    }

    /// The table for `config` another process kept in `file`, with expiries on the clock
    /// `clock` names, mapped but not yet taken over: call [`Conntrack::adopt`] once that
    /// process has stopped using it, before anything else. Refused, with the field that
    /// differs, unless the header is exactly what [`Conntrack::create_in`] would write.
    pub fn open_in(
        config: ConntrackConfig,
        file: &File,
        clock: [u8; 16],
    ) -> Result<Self, OpenError> {
        let mut found = [0u8; HEADER_BYTES];
        let read = file.read_at(&mut found, 0)?;
        let wanted = header(&config, clock);
        if read < HEADER_BYTES || found[0..8] != wanted[0..8] {
            return Err(OpenError::Refused("not a kxdp conntrack file".into()));
        }
        // A header field (at most 8 bytes, little-endian) as a number.
        let word = |h: &[u8; HEADER_BYTES], r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&h[r]);
            u64::from_le_bytes(w)
        };
        for (name, r) in [
            ("layout version", 8..12),
            ("record size", 12..16),
            ("capacity", 16..24),
            ("index size", 24..32),
        ] {
            let (theirs, ours) = (word(&found, r.clone()), word(&wanted, r));
            if theirs != ours {
                return Err(OpenError::Refused(format!(
                    "its {name} is {theirs}, this agent's is {ours}"
                )));
            }
        }
        if found[32..48] != wanted[32..48] {
            return Err(OpenError::Refused(
                "its expiries are on another boot's clock".into(),
            ));
        }
        let (_, _, end) = Conntrack::file_layout(&config);
        let len = file.metadata()?.len();
        if len < end {
            return Err(OpenError::Refused(format!(
                "it is {len} bytes long, its header says {end}"
            )));
        }
        // Whatever its writer left unallocated (nothing, if it made the file here).
        crate::hugemem::allocate(file, end)?;
        Ok(Conntrack::in_file(config, file)?)
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use super::*;
    use crate::conntrack::test_support::{dnat, CLIENT, NODE};
    use crate::conntrack::{Direction, InsertError};
    use crate::flow::{proto, FlowKey};
    use crate::time::Instant;
    use crate::wire::tcp_flags::SYN;

    const CLOCK: [u8; 16] = *b"boot-0123456789a";

    fn config(capacity: u32) -> ConntrackConfig {
        ConntrackConfig {
            capacity,
            ..ConntrackConfig::default()
        }
    }

    /// A file of its own under the temporary directory, removed when dropped.
    struct Scratch(std::path::PathBuf, File);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!("kxdp-ct-{name}-{}", std::process::id()));
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .expect("a scratch file");
            Scratch(path, file)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_next_process_finds_every_live_flow_both_ways_with_its_translation() {
        let f = Scratch::new("adopt");
        let t0 = Instant::from_secs(100);
        let (dnat_flows, snat_flow, short) = {
            let ct = Conntrack::create_in(config(64), &f.1, CLOCK).unwrap();
            let flows: Vec<_> = (0..10)
                .map(|i| {
                    let (o, r) = dnat(proto::TCP, 40_000 + i);
                    ct.insert(o, r, SYN, t0).unwrap()
                })
                .collect();
            let server = "1.1.1.1".parse().unwrap();
            let out = FlowKey::new(proto::TCP, CLIENT, 5555, server, 443);
            let reply = FlowKey::new(proto::TCP, server, 443, NODE, 0);
            let snat = ct.insert_snat(out, reply, 61000..=65535, SYN, t0).unwrap();
            // An ICMP echo expires in 30 s (a new TCP flow in 60): gone by the time the next process
            // looks.
            let (o, r) = dnat(proto::ICMP, 7);
            let short = ct.insert(o, r, 0, t0).unwrap();
            ct.set_policy_epoch(&flows[0], 0, 5);
            (flows, snat, short)
        };
        let later = t0 + Duration::from_secs(45);
        let ct = Conntrack::open_in(config(64), &f.1, CLOCK).unwrap();
        let adopted = ct.adopt(later);
        assert_eq!(
            adopted,
            Adopted {
                flows: 11,
                torn: 0,
                expired: 1,
                clashing: 0
            }
        );
        assert_eq!(ct.len(), 11);
        for flow in dnat_flows.iter().chain([&snat_flow]) {
            let there = ct.lookup(&flow.original, later).expect("original key");
            assert_eq!(
                (there.direction, there.reply),
                (Direction::Original, flow.reply)
            );
            let back = ct.lookup(&flow.reply, later).expect("reply key");
            assert_eq!(
                (back.direction, back.original),
                (Direction::Reply, flow.original)
            );
        }
        assert!(ct.lookup(&short.original, later).is_none());
        // Judged by the other process's policies: to be judged again here.
        assert_eq!(ct.policy_epoch(&dnat_flows[0]), 0);
        // The SNAT port stays taken: the same client flow maps to its port again, and
        // another one cannot have it.
        assert_eq!(
            ct.lookup(&snat_flow.original, later).unwrap().reply,
            snat_flow.reply
        );
        // The free list is the records not in use: 53 more flows fit, then the table is full.
        for i in 0..53 {
            let (o, r) = dnat(proto::UDP, 1000 + i);
            ct.insert(o, r, 0, later).unwrap();
        }
        let (o, r) = dnat(proto::UDP, 2000);
        assert_eq!(ct.insert(o, r, 0, later), Err(InsertError::Full));
        assert_eq!(ct.index_stats().entries, 128);
    }

    #[test]
    fn a_record_half_written_by_a_dead_writer_is_freed_and_the_rest_kept() {
        let f = Scratch::new("torn");
        let t0 = Instant::from_secs(1);
        {
            let ct = Conntrack::create_in(config(8), &f.1, CLOCK).unwrap();
            for i in 0..3 {
                let (o, r) = dnat(proto::TCP, 100 + i);
                ct.insert(o, r, SYN, t0).unwrap();
            }
        }
        // Record 1's seqlock version made odd, as an insert that never finished leaves it
        // (records start at the first huge page; the version is a record's first word).
        let flows_at = Conntrack::file_layout(&config(8)).0;
        let record = u64::from(Conntrack::RECORD_BYTES);
        f.1.write_all_at(&3u32.to_le_bytes(), flows_at + record)
            .unwrap();
        let ct = Conntrack::open_in(config(8), &f.1, CLOCK).unwrap();
        let adopted = ct.adopt(t0);
        assert_eq!((adopted.flows, adopted.torn), (2, 1));
        let (o, _) = dnat(proto::TCP, 101);
        assert!(ct.lookup(&o, t0).is_none());
        let (o, _) = dnat(proto::TCP, 102);
        assert!(ct.lookup(&o, t0).is_some());
        // The torn record is usable again.
        let (o, r) = dnat(proto::TCP, 101);
        ct.insert(o, r, SYN, t0).unwrap();
        assert_eq!(ct.len(), 3);
    }

    #[test]
    fn a_file_of_another_shape_clock_or_kind_is_refused_naming_why() {
        let f = Scratch::new("refuse");
        drop(Conntrack::create_in(config(64), &f.1, CLOCK).unwrap());
        let refused = |c: ConntrackConfig, clock: [u8; 16]| match Conntrack::open_in(c, &f.1, clock)
        {
            Err(OpenError::Refused(why)) => why,
            Err(e) => panic!("an I/O error: {e}"),
            Ok(_) => panic!("taken"),
        };
        assert_eq!(
            refused(config(128), CLOCK),
            "its capacity is 64, this agent's is 128"
        );
        assert_eq!(
            refused(config(64), *b"another-boot-id!"),
            "its expiries are on another boot's clock"
        );
        // A layout this build does not know.
        f.1.write_all_at(&(LAYOUT + 1).to_le_bytes(), 8).unwrap();
        assert_eq!(
            refused(config(64), CLOCK),
            format!(
                "its layout version is {}, this agent's is {LAYOUT}",
                LAYOUT + 1
            )
        );
        f.1.write_all_at(b"not-ours", 0).unwrap();
        assert_eq!(refused(config(64), CLOCK), "not a kxdp conntrack file");
        f.1.set_len(0).unwrap();
        assert_eq!(refused(config(64), CLOCK), "not a kxdp conntrack file");
        // A header that fits on a file cut short.
        drop(Conntrack::create_in(config(64), &f.1, CLOCK).unwrap());
        f.1.set_len(4096).unwrap();
        assert!(refused(config(64), CLOCK).starts_with("it is 4096 bytes long"));
    }
}
