//! watch: what following a cluster decides — the view the watch streams keep current
//! (`view`), what each change can affect (`affected`), when coalesced changes run and over
//! which scope (`pending`), when Services whose readiness gates wait are read again (`gates`),
//! and how watchers take turns (`handover`). A watcher's run is told as a [`WatchRun`].

pub mod affected;
pub mod gates;
pub mod handover;
pub mod pending;
pub mod view;

use crate::pure::outcome::ClusterOutcome;
use serde::Serialize;

/// One run of a watcher, as told: what caused it and what it came to.
#[derive(Debug, Clone, Serialize)]
pub struct WatchRun {
    pub cluster: String,
    /// The changes that caused it, in order: `EndpointSlice default/web-x7k2p modified`.
    pub causes: Vec<String>,
    /// From the arrival of the first change to the end of the run's last write.
    pub change_to_applied_ms: u64,
    pub outcomes: Vec<ClusterOutcome>,
}

#[cfg(test)]
mod tests;
