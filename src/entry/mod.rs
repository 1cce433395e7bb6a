//! entry: the ways in. The command line and the Lambda handler parse their input and hand it
//! to the same [`crate::shell`] session.

pub mod answer;
pub mod args;
pub mod cli;
pub mod lambda;
pub mod logging;
