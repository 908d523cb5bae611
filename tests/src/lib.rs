//! kxdp's integration-test support: the namespace testbed ([`testbed`]) and a kxdp node to run
//! in it ([`node`]). The tests themselves live in `tests/`.

pub mod node;
pub mod testbed;
