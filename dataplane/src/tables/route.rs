//! Longest-prefix-match route table. (Being written.)
