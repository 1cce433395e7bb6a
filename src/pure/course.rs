//! course: the turns a cluster's run takes, decided from what each step returned. A run looks
//! first without the lease; only a look with writes to make takes it; a busy lease means
//! another run is on the cluster; a lease marked dirty while held means events arrived, and
//! the run goes again.

use crate::Error;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::Plan;
use crate::pure::report::Report;
use crate::pure::scope::{self, Scope};
use crate::state::lease::{LeaseClaim, LeaseRelease};
use crate::state::ownership::OwnershipRecord;
use std::time::Duration;

/// Whether a run with a lease looks first, without it: most sweeps and events find nothing to
/// change and then need no lease at all. A watcher's runs are caused by changes, so they take
/// the lease at once and observe only once; its rechecks of readiness gates mostly find the
/// targets still checking, so they look first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    First,
    Skip,
}

/// What a look (an observation without the lease) leads to.
#[derive(Debug, Clone)]
pub enum AfterLook {
    /// Nothing to write, or nothing known: the look is the outcome.
    Done(Box<ClusterOutcome>),
    /// Writes to make: take the lease, then observe again under it.
    TakeLease(Box<ClusterOutcome>),
}

pub fn after_look(look: ClusterOutcome) -> AfterLook {
    if look.plan.cluster_error.is_some() {
        return AfterLook::Done(Box::new(look));
    }
    if !look.plan.has_writes() {
        // Converged: an empty report says so (and lets statuses be recorded).
        let report = Some(Report::new(&look.plan.cluster));
        return AfterLook::Done(Box::new(ClusterOutcome { report, ..look }));
    }
    AfterLook::TakeLease(Box::new(look))
}

/// What asking for the lease leads to: `None` when it is ours (run under it), otherwise the
/// outcome to report.
pub fn after_claim(
    look: ClusterOutcome,
    claim: Result<LeaseClaim, Error>,
) -> Option<ClusterOutcome> {
    match claim {
        Ok(LeaseClaim::Acquired) => None,
        Ok(LeaseClaim::Busy { holder }) => Some(ClusterOutcome {
            skipped: Some(format!(
                "another run ({holder}) holds the cluster's lease; it will run again"
            )),
            ..look
        }),
        Err(error) => Some(ClusterOutcome::new(
            &look.scope,
            Plan::unreadable_cluster(&look.plan.cluster, error.chain()),
            None,
        )),
    }
}

/// What letting the lease go says: whether to run again, and what to add to the outcome.
pub fn after_release(
    outcome: &mut ClusterOutcome,
    release: Option<Result<LeaseRelease, Error>>,
) -> bool {
    match release {
        None | Some(Ok(LeaseRelease::Released)) => false,
        Some(Ok(LeaseRelease::RunAgain)) => true,
        Some(Ok(LeaseRelease::Lost)) => {
            outcome.lease_error =
                Some("the lease lapsed and passed to another run before it was let go".into());
            false
        }
        Some(Err(error)) => {
            outcome.lease_error = Some(error.chain());
            false
        }
    }
}

/// Whether a run must renew its lease before its next write: once less than a third of the
/// term is left since the lease was last known to be ours (taken, renewed, or kept for another
/// run). Renewing before every write would cost a state-table write per write; a third of the
/// term is the margin a write may take and still land under the lease.
pub fn must_renew(since_renewal: Duration, term: Duration) -> bool {
    // Left = term - since < term / 3, without fractions: 3 * since > 2 * term.
    since_renewal.saturating_mul(3) > term.saturating_mul(2)
}

/// What a run keeps, at the end, for saying what it did, recording statuses and letting the
/// lease go once it stops at a deadline: no batch starts that would end inside it.
pub const STOP_RESERVE: Duration = Duration::from_secs(20);

/// The reserve of a run with `time` until its deadline: [`STOP_RESERVE`], or a quarter of the
/// time when that is less, so that a short function timeout still gets work done.
pub fn reserve_for(time: Duration) -> Duration {
    STOP_RESERVE.min(time / 4)
}

/// Whether a run with a deadline starts its next batch (a window of bindings, a pass over the
/// rules, a cluster) or stops before it, leaving the rest to the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextBatch {
    Run,
    Stop,
}

/// Decides [`NextBatch`] from plain values: `time_left` until the run must have stopped (`None`:
/// no deadline, so always run), the longest batch so far, and the `reserve` the end of the run
/// needs. The next batch is assumed to take half as long again as the longest so far, as
/// throttling can slow any one of them; it starts only if it still ends before the reserve.
/// Stopping between batches is what keeps make before break: a batch is never cut.
pub fn next_batch(
    time_left: Option<Duration>,
    longest_batch: Duration,
    reserve: Duration,
) -> NextBatch {
    let Some(left) = time_left else {
        return NextBatch::Run;
    };
    let estimate = longest_batch.saturating_add(longest_batch / 2);
    if left >= estimate.saturating_add(reserve) && !left.is_zero() {
        NextBatch::Run
    } else {
        NextBatch::Stop
    }
}

/// Whether a plan is applied: never on a dry run, never when the cluster could not be read.
pub fn applies(dry_run: bool, plan: &Plan) -> bool {
    !dry_run && plan.cluster_error.is_none()
}

/// Whether a run first reads its records to see if the event concerns it at all (a sweep
/// concerns everything).
pub fn looks_at_records_first(scope: &Scope) -> bool {
    // A watched change names Services, which the records do not index.
    matches!(scope, Scope::SecurityGroup(_) | Scope::TargetGroup(_))
}

/// When an event concerns nothing this cluster made, the outcome that says so — found from the
/// records alone, before the cluster is even connected to. `None`: the run goes ahead.
pub fn nothing_in_scope(
    cluster: &str,
    scope: &Scope,
    records: Result<Vec<OwnershipRecord>, Error>,
) -> Option<ClusterOutcome> {
    match records {
        Ok(records) => match scope::seed(scope, &records, []) {
            Some(coverage) if coverage.is_empty() => Some(ClusterOutcome::skipped(
                cluster,
                scope,
                "no binding of this cluster has recorded rules or targets there".into(),
            )),
            _ => None,
        },
        Err(error) => Some(ClusterOutcome::new(
            scope,
            Plan::unreadable_cluster(cluster, error.chain()),
            None,
        )),
    }
}

#[cfg(test)]
// The tables name their column types inline, so each case reads as one row.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::model::{BindingId, Target, TargetGroupRef};
    use crate::pure::plan::{BindingPlan, Presence, TargetAction, TargetChange};

    fn look(plan: Plan) -> ClusterOutcome {
        ClusterOutcome::new(&Scope::Cluster, plan, None)
    }

    fn with_writes() -> Plan {
        let web = BindingId::resource("default", "web");
        let part = BindingPlan {
            registrations: vec![TargetChange {
                action: TargetAction::RegisterTargets,
                binding: web.clone(),
                target_group: TargetGroupRef::new("arn:tg"),
                target: Target::new("10.0.0.1", 80),
                availability_zone: None,
                reason: "test".into(),
            }],
            ..BindingPlan::new(web.clone(), Presence::Declared { generation: None })
        };
        Plan {
            cluster: "prod".into(),
            bindings: [(web, part)].into(),
            ..Plan::default()
        }
    }

    fn converged() -> Plan {
        Plan {
            cluster: "prod".into(),
            ..Plan::default()
        }
    }

    #[test]
    fn a_look_takes_the_lease_only_when_it_has_writes_to_make() {
        let cases = [
            (
                "an unreadable cluster is the outcome",
                Plan::unreadable_cluster("prod", "down".into()),
                "done, no report",
            ),
            (
                "a converged look is the outcome, with an empty report",
                converged(),
                "done, reported",
            ),
            (
                "a look with writes takes the lease",
                with_writes(),
                "take the lease",
            ),
        ];
        for (case, plan, want) in cases {
            let got = match after_look(look(plan)) {
                AfterLook::Done(o) if o.report.is_some() => "done, reported",
                AfterLook::Done(_) => "done, no report",
                AfterLook::TakeLease(_) => "take the lease",
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn a_claimed_lease_runs_a_busy_one_skips_and_a_failed_claim_knows_nothing() {
        let cases: Vec<(&str, Result<LeaseClaim, Error>, Option<&str>)> = vec![
            ("acquired: run under it", Ok(LeaseClaim::Acquired), None),
            (
                "busy: skipped, naming the holder",
                Ok(LeaseClaim::Busy {
                    holder: "lambda/abc".into(),
                }),
                Some(
                    "skipped: another run (lambda/abc) holds the cluster's lease; it will run again",
                ),
            ),
            (
                "the claim failed: the cluster counts as unreadable",
                Err(Error::Config("table gone".into())),
                Some("unreadable: configuration: table gone"),
            ),
        ];
        for (case, claim, want) in cases {
            let got = after_claim(look(with_writes()), claim).map(|o| {
                match (o.skipped, o.plan.cluster_error) {
                    (Some(why), _) => format!("skipped: {why}"),
                    (None, Some(error)) => format!("unreadable: {error}"),
                    (None, None) => "neither".into(),
                }
            });
            assert_eq!(got.as_deref(), want, "{case}");
        }
    }

    #[test]
    fn letting_the_lease_go_says_whether_to_run_again() {
        let cases: Vec<(
            &str,
            Option<Result<LeaseRelease, Error>>,
            bool,
            Option<&str>,
        )> = vec![
            ("no lease: once", None, false, None),
            (
                "released: done",
                Some(Ok(LeaseRelease::Released)),
                false,
                None,
            ),
            (
                "dirty: once more",
                Some(Ok(LeaseRelease::RunAgain)),
                true,
                None,
            ),
            (
                "lost: done, and said",
                Some(Ok(LeaseRelease::Lost)),
                false,
                Some("the lease lapsed and passed to another run before it was let go"),
            ),
            (
                "the release failed: done, with the error",
                Some(Err(Error::Config("throttled".into()))),
                false,
                Some("configuration: throttled"),
            ),
        ];
        for (case, release, again, error) in cases {
            let mut outcome = look(converged());
            assert_eq!(after_release(&mut outcome, release), again, "{case}");
            assert_eq!(outcome.lease_error.as_deref(), error, "{case}");
        }
    }

    #[test]
    fn a_lease_is_renewed_only_once_less_than_a_third_of_its_term_is_left() {
        let secs = Duration::from_secs;
        let cases = [
            (
                "a lease just taken is not renewed",
                secs(0),
                secs(960),
                false,
            ),
            (
                "a lease with most of its term left is not renewed",
                secs(300),
                secs(960),
                false,
            ),
            (
                "a lease with exactly a third left is not renewed yet",
                secs(640),
                secs(960),
                false,
            ),
            (
                "a lease with less than a third left is renewed",
                secs(641),
                secs(960),
                true,
            ),
            (
                "a lease that may already have lapsed is renewed (and the renewal says whether it is still ours)",
                secs(1_000),
                secs(960),
                true,
            ),
            (
                "a one-second lease is renewed after 667 ms",
                Duration::from_millis(667),
                secs(1),
                true,
            ),
            (
                "a one-second lease is not renewed after 666 ms",
                Duration::from_millis(666),
                secs(1),
                false,
            ),
            (
                "a zero-second lease is renewed as soon as any time passed",
                Duration::from_millis(1),
                secs(0),
                true,
            ),
            (
                "times too large to multiply still decide",
                Duration::MAX,
                secs(960),
                true,
            ),
        ];
        for (case, since, term, want) in cases {
            assert_eq!(must_renew(since, term), want, "{case}");
        }
    }

    #[test]
    fn a_batch_starts_only_when_it_can_end_before_the_reserve_the_run_keeps_for_its_end() {
        let secs = Duration::from_secs;
        // (case, time left, longest batch so far, reserve, what the run does)
        let cases = [
            (
                "without a deadline every batch runs",
                None,
                secs(3_600),
                secs(20),
                NextBatch::Run,
            ),
            (
                "a first batch (none timed yet) runs while more than the reserve is left",
                Some(secs(21)),
                secs(0),
                secs(20),
                NextBatch::Run,
            ),
            (
                "a first batch runs with exactly the reserve left: it is assumed to take no time",
                Some(secs(20)),
                secs(0),
                secs(20),
                NextBatch::Run,
            ),
            (
                "nothing starts inside the reserve",
                Some(secs(19)),
                secs(0),
                secs(20),
                NextBatch::Stop,
            ),
            (
                "a batch runs when half as long again as the longest still ends before the reserve",
                Some(secs(35)),
                secs(10),
                secs(20),
                NextBatch::Run,
            ),
            (
                "a batch that might end inside the reserve does not start",
                Some(secs(34)),
                secs(10),
                secs(20),
                NextBatch::Stop,
            ),
            (
                "a deadline already passed stops the run",
                Some(secs(0)),
                secs(0),
                secs(20),
                NextBatch::Stop,
            ),
            (
                "with no reserve, a run with no time left still stops",
                Some(Duration::ZERO),
                Duration::ZERO,
                Duration::ZERO,
                NextBatch::Stop,
            ),
            (
                "batches too long to add up still decide",
                Some(secs(3_600)),
                Duration::MAX,
                secs(20),
                NextBatch::Stop,
            ),
        ];
        for (case, left, longest, reserve, want) in cases {
            assert_eq!(next_batch(left, longest, reserve), want, "{case}");
        }
    }

    #[test]
    fn the_reserve_is_twenty_seconds_or_a_quarter_of_a_shorter_time() {
        let secs = Duration::from_secs;
        // (case, the time until the deadline, the reserve)
        let cases = [
            ("a 15-minute function keeps 20 s", secs(900), secs(20)),
            ("80 s keep 20 s", secs(80), secs(20)),
            (
                "a 30 s function keeps 7.5 s",
                secs(30),
                Duration::from_millis(7_500),
            ),
            ("3 s keep 750 ms", secs(3), Duration::from_millis(750)),
            ("no time keeps none", Duration::ZERO, Duration::ZERO),
        ];
        for (case, time, reserve) in cases {
            assert_eq!(reserve_for(time), reserve, "{case}");
        }
    }

    #[test]
    fn a_plan_is_applied_unless_dry_or_unreadable() {
        let cases = [
            ("a plan is applied", false, with_writes(), true),
            ("a dry run applies nothing", true, with_writes(), false),
            (
                "an unreadable cluster gets nothing applied",
                false,
                Plan::unreadable_cluster("prod", "x".into()),
                false,
            ),
        ];
        for (case, dry_run, plan, want) in cases {
            assert_eq!(applies(dry_run, &plan), want, "{case}");
        }
    }

    #[test]
    fn an_event_that_concerns_nothing_recorded_is_skipped_before_connecting() {
        let record = OwnershipRecord {
            binding: BindingId::resource("default", "web"),
            target_group: TargetGroupRef::new("arn:tg"),
            multi_cluster: false,
            targets: Default::default(),
            rules: Default::default(),
        };
        let cases: Vec<(
            &str,
            Scope,
            Result<Vec<OwnershipRecord>, Error>,
            Option<&str>,
        )> = vec![
            (
                "a recorded target group goes ahead",
                Scope::TargetGroup("arn:tg".into()),
                Ok(vec![record.clone()]),
                None,
            ),
            (
                "an unrecorded target group is skipped",
                Scope::TargetGroup("arn:other".into()),
                Ok(vec![record]),
                Some("skipped"),
            ),
            (
                "unreadable records make the cluster unreadable",
                Scope::TargetGroup("arn:tg".into()),
                Err(Error::Config("down".into())),
                Some("unreadable"),
            ),
        ];
        assert!(
            !looks_at_records_first(&Scope::Cluster),
            "a sweep concerns everything"
        );
        for (case, scope, records, want) in cases {
            assert!(looks_at_records_first(&scope), "{case}");
            let got = nothing_in_scope("prod", &scope, records).map(|o| {
                if o.skipped.is_some() {
                    "skipped"
                } else {
                    "unreadable"
                }
            });
            assert_eq!(got, want, "{case}");
        }
    }
}
