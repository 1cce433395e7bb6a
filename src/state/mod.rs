//! state: what the state table keeps between runs.

pub mod lease;
pub mod ownership;
pub mod status;
