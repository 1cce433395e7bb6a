//! Readiness gates wait on target health, which no watch reports. While any gate of a Service
//! has not passed, the watcher plans that Service again: soon at first, then less often while
//! nothing moves, until every gate has settled. It is the only AWS polling a watcher does,
//! one target-health read per waiting Service, paced like every other call.

use crate::model::BindingId;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::scope::Scope;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The first recheck of a Service whose gates wait, and the next after any gate moved.
pub const FIRST_RECHECK: Duration = Duration::from_secs(2);
/// The longest wait between rechecks: a gate passes at most this long after its target did.
pub const MAX_RECHECK: Duration = Duration::from_secs(10);

/// What a run found of the gates: by waiting Service, whether any of its gates was set.
pub type Waiting = BTreeMap<String, bool>;

/// The Services whose gates wait, and when each is read again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateRechecks {
    services: BTreeMap<String, Recheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recheck {
    at: Instant,
    interval: Duration,
}

/// What a watcher's run says of the gates it planned: `None` when it says nothing (skipped,
/// the cluster unreadable), so that what was waiting keeps waiting. A gate moved only if it
/// was set: planned again and again but never set (a dry run, no `patch` on `pods/status`),
/// it does not keep the rechecks at their quickest.
pub fn waiting(outcomes: &[ClusterOutcome]) -> Option<Waiting> {
    let last = outcomes.last()?;
    if last.skipped.is_some() || last.plan.cluster_error.is_some() {
        return None;
    }
    let set: BTreeSet<&BindingId> = last
        .report
        .iter()
        .flat_map(|r| &r.gates_done)
        .map(|g| &g.binding)
        .collect();
    Some(
        last.plan
            .bindings
            .values()
            .filter_map(|b| {
                let waiting = b.gates_waiting.as_ref()?;
                Some((waiting.service.clone(), set.contains(&b.binding)))
            })
            .fold(Waiting::new(), |mut all, (service, moved)| {
                *all.entry(service).or_default() |= moved;
                all
            }),
    )
}

impl GateRechecks {
    /// Takes in a run over `scope`: Services it covered that no longer wait are done; those
    /// that wait are read again after [`FIRST_RECHECK`] when a gate moved or they are new. A
    /// recheck (`rechecked`) that moved nothing waits twice as long for the next, at most
    /// [`MAX_RECHECK`]; a run caused by a change leaves the pace as it was.
    pub fn after_run(
        &mut self,
        scope: &Scope,
        found: Option<Waiting>,
        rechecked: bool,
        now: Instant,
    ) {
        let Some(found) = found else {
            if rechecked {
                for recheck in self.services.values_mut() {
                    recheck.back_off(now);
                }
            }
            return;
        };
        self.services.retain(|service, _| {
            found.contains_key(service)
                || match scope {
                    Scope::Cluster => false,
                    Scope::Services(covered) => !covered.contains(service),
                    _ => true,
                }
        });
        for (service, moved) in found {
            match self.services.get_mut(&service) {
                Some(recheck) if !moved => {
                    if rechecked {
                        recheck.back_off(now);
                    }
                }
                _ => {
                    self.services.insert(
                        service,
                        Recheck {
                            at: now + FIRST_RECHECK,
                            interval: FIRST_RECHECK,
                        },
                    );
                }
            }
        }
    }

    /// When the next recheck is due; `None` when no gate waits.
    pub fn next_at(&self) -> Option<Instant> {
        self.services.values().map(|r| r.at).min()
    }

    /// The Services due at `now`. They stay scheduled a wait ahead, in case their run says
    /// nothing of them.
    pub fn take_due(&mut self, now: Instant) -> BTreeSet<String> {
        let mut due = BTreeSet::new();
        for (service, recheck) in &mut self.services {
            if recheck.at <= now {
                recheck.at = now + recheck.interval;
                due.insert(service.clone());
            }
        }
        due
    }
}

impl Recheck {
    fn back_off(&mut self, now: Instant) {
        self.interval = (self.interval * 2).min(MAX_RECHECK);
        self.at = now + self.interval;
    }
}
