//! kxdp's integration-test support: the namespace testbed ([`testbed`]), a kxdp node to run in
//! it ([`node`]), real clients and servers ([`clients`]) and a fake Kubernetes API server for
//! kube-rs clients ([`apiserver`]). The tests themselves live in `tests/`.

pub mod apiserver;
pub mod clients;
pub mod node;
pub mod testbed;
