//! The changes a watcher has not planned yet, coalesced: changes that arrive together run as
//! one reconcile, which starts once the cluster has been quiet briefly, and never later than
//! [`MAX_DELAY`] after the first of them.

use crate::pure::course::Look;
use crate::pure::scope::Scope;
use crate::pure::watch::affected::Affected;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a watcher waits for more changes after the last one.
pub const QUIET: Duration = Duration::from_millis(50);
/// How long the first change may wait for the ones that follow it.
pub const MAX_DELAY: Duration = Duration::from_millis(200);
/// How many causes a run keeps, for its log line; the rest are counted.
const CAUSES_KEPT: usize = 20;

/// Changes waiting for a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    everything: bool,
    /// Whether a change of the cluster is among them (not only rechecks of readiness gates).
    changed: bool,
    services: BTreeSet<String>,
    /// What happened, in order: `EndpointSlice default/web-abc modified`.
    causes: Vec<String>,
    more_causes: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A run the pending changes call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub scope: Scope,
    pub causes: Vec<String>,
    /// When the first of the changes arrived: where change-to-applied is counted from.
    pub since: Instant,
    /// Whether it only rechecks readiness gates: such a run looks before it takes the lease,
    /// since most rechecks find the targets still checking and nothing to write.
    pub rechecks_only: bool,
}

impl Due {
    /// Whether the run may take what AWS facts it needs besides targets (the target groups
    /// and their tags, VPC CIDRs) from the watcher's last sweep: a run narrowed to Services
    /// changes targets only, and a sweep reads everything afresh.
    pub fn reuses_sweep_facts(&self) -> bool {
        matches!(self.scope, Scope::Services(_))
    }

    /// How its run goes for the lease: rechecks alone look first, changes take it at once.
    pub fn look(&self) -> Look {
        if self.rechecks_only {
            Look::First
        } else {
            Look::Skip
        }
    }
}

impl Pending {
    /// Adds one change, arrived at `now`.
    pub fn add(&mut self, affected: Affected, cause: Option<String>, now: Instant) {
        if affected != Affected::Nothing {
            self.changed = true;
        }
        self.add_affected(affected, cause, now);
    }

    /// Adds a recheck of Services whose readiness gates wait, due at `now`.
    pub fn add_recheck(&mut self, services: BTreeSet<String>, now: Instant) {
        if services.is_empty() {
            return;
        }
        let cause = format!(
            "readiness gates waiting in {}",
            services.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        self.add_affected(Affected::Services(services), Some(cause), now);
    }

    fn add_affected(&mut self, affected: Affected, cause: Option<String>, now: Instant) {
        match affected {
            Affected::Nothing => return,
            Affected::Everything => self.everything = true,
            Affected::Services(services) => self.services.extend(services),
        }
        if let Some(cause) = cause {
            if self.causes.len() < CAUSES_KEPT {
                self.causes.push(cause);
            } else {
                self.more_causes += 1;
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending changes are due to run: after a quiet spell, at most [`MAX_DELAY`]
    /// after the first. `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + QUIET).min(first + MAX_DELAY))
    }

    /// Takes the pending changes as a run, if they are due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        if self.due_at()? > now {
            return None;
        }
        let taken = std::mem::take(self);
        let scope = if taken.everything {
            Scope::Cluster
        } else {
            Scope::Services(taken.services)
        };
        let mut causes = taken.causes;
        if taken.more_causes > 0 {
            causes.push(format!("and {} more", taken.more_causes));
        }
        Some(Due {
            scope,
            causes,
            since: taken.first?,
            rechecks_only: !taken.changed,
        })
    }
}
