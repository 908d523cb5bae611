//! The snapshot tables. (Being written.)
pub mod maglev;
pub mod route;
