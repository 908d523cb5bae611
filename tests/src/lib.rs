//! kxdp's integration-test support: the namespace testbed ([`testbed`]), a kxdp node to run in
//! it ([`node`]) and real clients and servers ([`clients`]). The tests themselves live in `tests/`.

pub mod clients;
pub mod node;
pub mod testbed;
