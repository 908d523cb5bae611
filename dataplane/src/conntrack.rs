//! Connection tracking: the one mutable table, shared by every worker.
//! (Being written: see the API contract in the helper brief.)
