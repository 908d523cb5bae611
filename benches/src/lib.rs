//! kxdp criterion benchmarks live in `benches/`.
