//! Maglev consistent hashing. (Being written.)
