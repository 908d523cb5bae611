//! Wire views. (Being written.)
