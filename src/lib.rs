//! tgb-reconciler keeps AWS load-balancer target groups converged with the endpoints of
//! Kubernetes Services, from outside the cluster.
//!
//! The tree follows the data flow, and modules depend one way (downwards in this list):
//!
//! - [`entry`]: the ways in — the command line and the Lambda handler, one code path.
//! - [`shell`]: the only code that awaits — a session over the clusters, one cluster's run
//!   under its lease, gathering what the pure core asked to read, applying the plan, and
//!   watching clusters to run each change as it comes.
//! - [`pure`]: every decision, as synchronous functions over plain values: trigger (what an
//!   event is about) → scope (what it covers) → observe (what to read, and what the reads
//!   mean) → binding (what is declared) → desire (what should be registered and opened) →
//!   plan (the difference, as a value) → status, report and metrics (what is told); and
//!   watch (the watched view of a cluster, and what each change of it runs).
//! - [`ports`]: the capabilities the shell needs from the outside world, as traits.
//! - [`adapters`]: the ports on the AWS SDK and kube — the only modules that know their types.
//! - [`state`]: what the state table keeps — the lease, ownership records, binding statuses.
//! - [`model`]: shared plain types — ids, targets, rules, and the facts read from AWS and the
//!   cluster.
//! - [`error`]: the crate's one error type.
//! - `testing` (tests and the `testing` feature only): every port in memory, and a fault wrapper.

pub mod adapters;
pub mod entry;
pub mod error;
pub mod model;
pub mod ports;
pub mod pure;
pub mod shell;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
