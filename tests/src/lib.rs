//! kxdp's integration-test support: the namespace testbed ([`testbed`]), a kxdp node to run in
//! it ([`node`]), real clients and servers ([`clients`]) and a fake Kubernetes API server for
//! kube-rs clients ([`apiserver`]), a two-node cluster run by `kxdp agent` processes
//! ([`cluster`]) for the demo and the agent tests, and pods attached by the `kxdp-cni` binary
//! as a container runtime attaches them ([`cni`]). The tests themselves live in `tests/`.

pub mod apiserver;
pub mod clients;
pub mod cluster;
pub mod cni;
pub mod demo;
pub mod node;
pub mod testbed;
