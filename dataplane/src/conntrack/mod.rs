//! Connection tracking: the one mutable table, shared by every worker.
//!
//! Being split by concern: for now everything is in `table.rs`, moved here whole so that its
//! history follows it.

mod table;

pub use table::*;
