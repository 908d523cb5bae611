//! kxdp's control side: the cluster model, its sources, and the compiler that turns it into the
//! dataplane's snapshots.
//!
//! Control flows one way: a source (the Kubernetes API through kube's watchers, or manifest
//! files) converts objects into the [`model::Model`], which records what changed; the
//! [`compile::Compiler`] rebuilds what changed into a new [`Snapshot`](kxdp_dataplane::Snapshot)
//! for the runtime to publish by an atomic swap.
pub mod admin;
pub mod agent;
pub mod compile;
pub mod kube_source;
pub mod manifest;
pub mod model;
pub mod netinfo;
pub mod preflight;
pub mod render;
pub mod trace;

pub use kxdp_dataplane::tables;
