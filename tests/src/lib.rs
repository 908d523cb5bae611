//! kxdp's integration-test support: the namespace testbed ([`testbed`]). The tests themselves
//! live in `tests/`.

pub mod testbed;
