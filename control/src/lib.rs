//! kxdp's control side. Issue 4 builds the Kubernetes and manifest sources here; for now it
//! re-exports the snapshot types it will compile into.
pub use kxdp_dataplane::tables;
