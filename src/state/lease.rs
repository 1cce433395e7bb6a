//! lease: one writer per cluster at a time. Events arrive in bursts (one console edit can raise
//! several CloudTrail events), and two runs applying the same plan at once would race each
//! other's make-before-break order. The lease lives in the state table; these are its terms and
//! answers, the adapter implements them with conditional writes.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a lease lasts when nothing says otherwise: Lambda's longest timeout (900 s) plus a
/// margin, so a lease never expires under a run that is still allowed to write.
pub const DEFAULT_LEASE_SECONDS: u64 = 960;

/// How often a holder runs again for events that arrived while it held the lease, before it
/// releases anyway (the next sweep covers whatever is left).
pub const MAX_RUNS_PER_LEASE: u32 = 3;

/// Who asks for a lease and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseTerms {
    /// Unique per invocation, so a run never mistakes another's lease for its own.
    pub holder: String,
    pub seconds: u64,
}

impl LeaseTerms {
    /// `origin` names the invocation for people reading the table (a Lambda request id, or
    /// `cli`); a process id, the time and a counter make it unique.
    pub fn new(origin: &str, seconds: u64) -> Self {
        Self {
            holder: unique_holder(origin),
            seconds,
        }
    }
}

/// A name for a holder of a lease or of a place on a roster: `origin` for people reading the
/// table, then a process id, the time and a counter, which make it unique.
pub fn unique_holder(origin: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{origin}/{}/{nanos:x}/{n}", std::process::id())
}

/// The answer to asking for a cluster's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseClaim {
    Acquired,
    /// Someone else holds it; it is now marked dirty, so its holder runs once more before
    /// letting go. This run does nothing: never wait, never queue.
    Busy {
        holder: String,
    },
}

/// The answer to letting a lease go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRelease {
    Released,
    /// Events came in while it was held: the lease is kept (and renewed) for one more run.
    RunAgain,
    /// It had expired and another run took it; ours wrote nothing after losing it.
    Lost,
}

/// The answer to asking for a cluster's watch lease: one watcher follows a cluster at a time,
/// the others stand by until it lets go or lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchClaim {
    Acquired,
    /// Someone else watches the cluster, until `until_ms` (epoch milliseconds) unless renewed.
    HeldBy {
        holder: String,
        until_ms: u64,
    },
}
