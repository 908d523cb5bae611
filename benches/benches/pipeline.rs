//! Pipeline benches (being written).
fn main() {}
