//! kxdp's integration-test support: the namespace testbed ([`testbed`]), a kxdp node to run in
//! it ([`node`]), real clients and servers ([`clients`]) and a fake Kubernetes API server for
//! kube-rs clients ([`apiserver`]), and a two-node cluster run by `kxdp agent` processes
//! ([`cluster`]) for the demo and the agent tests. The tests themselves live in `tests/`.

pub mod apiserver;
pub mod clients;
pub mod cluster;
pub mod node;
pub mod testbed;
