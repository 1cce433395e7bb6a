//! pure: every decision, as synchronous functions over plain values. A run goes trigger →
//! scope → observe → binding → desire → plan → course → outcome → status, report, metrics;
//! pace says how much of each AWS API rate bucket one process of the deployment may draw.

pub mod binding;
pub mod course;
pub mod desire;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod pace;
pub mod plan;
pub mod report;
pub mod scope;
pub mod status;
pub mod trigger;
pub mod watch;
