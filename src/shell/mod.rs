//! shell: the only code that awaits. It gathers what the pure core asks to read, hands the
//! values over, and executes the plan it gets back; it decides nothing itself.

pub mod apply;
pub mod cluster_run;
pub mod gather;
pub mod progress;
pub mod session;
pub mod watch;

#[cfg(test)]
mod deadline_tests;
