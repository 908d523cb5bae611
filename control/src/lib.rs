//! kxdp's control side: the cluster model, its sources, the compiler that turns it into the
//! dataplane's snapshots, and `trace`, which runs one packet through the pipeline against them.
//!
//! Control flows one way: a source (the Kubernetes API through kube's watchers, or manifest
//! files) converts objects into the [`model::Model`], which records what changed; the
//! [`compile::Compiler`] rebuilds what changed into a new [`Snapshot`](kxdp_dataplane::Snapshot)
//! for the runtime to publish by an atomic swap. Nothing here does packet I/O or touches the
//! node: the agent crate joins this side to the I/O crate.
pub mod compile;
pub mod json;
pub mod kube_source;
pub mod manifest;
pub mod model;
pub mod netpol;
pub mod node_subnet;
pub mod pod_declaration;
pub mod policy;
pub mod trace;

pub use kxdp_dataplane::tables;
