//! pure: every decision, as synchronous functions over plain values, in the order of a run.

pub mod binding;
pub mod desire;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod report;
pub mod scope;
pub mod status;
pub mod trigger;
