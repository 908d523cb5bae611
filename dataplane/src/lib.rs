//! kxdp's packet pipeline, as pure code: no sockets, no clock reads, no allocation per packet.
//!
//! The I/O layer (AF_XDP rings, UMEM, the XDP loader) hands the pipeline a batch of frames and
//! transmits what comes back; the control side compiles an immutable [`tables::Snapshot`] and
//! swaps it in whole. Everything between is here:
//!
//! - [`wire`]: typed views over header bytes (smoltcp's `wire` plus our VXLAN view), builders,
//!   and RFC 1624 incremental checksums;
//! - [`tables`]: the snapshot: services and backends with a Maglev table per service port,
//!   longest-prefix routes, local pods, remote nodes and the node's own configuration;
//! - [`conntrack`]: the one mutable table, shared by every worker, bounded, lock-free to read;
//! - [`offload`]: software TCP segmentation, IPv4 fragmentation and TCP coalescing (GSO and
//!   GRO), for frames bigger than the interface they leave through;
//! - [`pipeline`]: the batch function that turns received frames into [`pipeline::Verdict`]s;
//! - [`reason`] and [`counters`]: the one numbered list of drop and pass reasons, and the
//!   per-worker counters that count them;
//! - [`flow`]: the 5-tuple key and the fixed-seed hash every worker agrees on.

pub mod conntrack;
pub mod counters;
pub mod flow;
mod hugemem;
pub mod offload;
pub mod pipeline;
pub mod reason;
pub mod tables;
pub mod time;
pub mod wire;

pub use counters::Counters;
pub use pipeline::{process_batch, Frame, Packet, Split, Verdict};
pub use reason::{DropReason, PassReason};
pub use tables::Snapshot;
pub use time::Instant;
