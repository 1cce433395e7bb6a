//! What one run of one cluster came to: its scope, its plan, and what apply did. Status,
//! report and metrics are all read from it.

use crate::pure::plan::Plan;
use crate::pure::report::{Report, Stopped};
use crate::pure::scope::Scope;

/// One run of one cluster: the plan, and what apply did (none on a dry run or when nothing
/// could be planned).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterOutcome {
    #[serde(flatten)]
    pub scope: Scope,
    pub plan: Plan,
    pub report: Option<Report>,
    /// Why this run did nothing, when that is expected: the event concerns nothing of this
    /// cluster, or another run holds the lease (and was asked to run again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The lease could not be let go after the run; it lapses on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_error: Option<String>,
    /// The statuses stored when the run observed, read with its records: what the run's own
    /// statuses are compared with, without reading the table again.
    #[serde(skip)]
    pub stored_statuses: Option<Vec<crate::state::status::BindingStatus>>,
}

impl ClusterOutcome {
    pub fn new(scope: &Scope, plan: Plan, report: Option<Report>) -> Self {
        Self {
            scope: scope.clone(),
            plan,
            report,
            skipped: None,
            lease_error: None,
            stored_statuses: None,
        }
    }

    /// Whether the deadline stopped this run with work left (or kept it from starting).
    pub fn stopped_early(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.stopped.is_some())
    }

    /// A cluster the session had no time left to start: skipped, with a report that says it
    /// stopped, so that it counts as work left rather than as nothing to do.
    pub fn not_started(cluster: &str, scope: &Scope, stopped: Stopped) -> Self {
        let why = format!(
            "not started: {} s were left before the deadline; the next run covers it",
            stopped.seconds_before_deadline
        );
        let report = Report {
            stopped: Some(stopped),
            ..Report::new(cluster)
        };
        Self {
            skipped: Some(why),
            ..Self::new(scope, Plan::empty(cluster), Some(report))
        }
    }

    pub fn skipped(cluster: &str, scope: &Scope, why: String) -> Self {
        Self {
            skipped: Some(why),
            ..Self::new(scope, Plan::empty(cluster), None)
        }
    }
}

/// Exit 0: converged or nothing to do. Exit 1: a binding failed, a change failed, or the
/// brake held something back (the run did not converge). Exit 2 is for usage errors. Exit 3:
/// nothing failed, but the deadline stopped a run (or kept a cluster from starting) with work
/// left, which the next run does; a failure elsewhere still makes it 1.
pub fn exit_code(outcomes: &[ClusterOutcome]) -> u8 {
    let failed = outcomes.iter().any(|outcome| {
        let ClusterOutcome { plan, report, .. } = outcome;
        outcome.lease_error.is_some()
            || plan.cluster_error.is_some()
            || plan
                .bindings
                .values()
                .any(|b| b.failure.is_some() || b.rule_failure.is_some() || !b.holds.is_empty())
            || !plan.rules.blocked.is_empty()
            || report.as_ref().is_some_and(|r| !r.is_clean())
    });
    if failed {
        1
    } else if outcomes.iter().any(ClusterOutcome::stopped_early) {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BindingId;
    use crate::pure::binding::BindingError;
    use crate::pure::plan::{BindingPlan, Presence};

    #[test]
    fn a_run_stopped_by_its_deadline_exits_three_unless_something_failed() {
        let web = BindingId::resource("default", "web");
        let converged = || {
            ClusterOutcome::new(
                &Scope::Cluster,
                Plan::empty("prod"),
                Some(Report::new("prod")),
            )
        };
        let stopped = || {
            let mut outcome = converged();
            if let Some(report) = outcome.report.as_mut() {
                report.stopped = Some(Stopped {
                    seconds_before_deadline: 25,
                    left: [web.clone()].into(),
                    rules_left: 0,
                });
            }
            outcome
        };
        let failed = || {
            let mut part = BindingPlan::new(web.clone(), Presence::Declared { generation: None });
            part.failure = Some(BindingError::new("spec", "bad"));
            let mut plan = Plan::empty("dev");
            plan.bindings = [(web.clone(), part)].into();
            ClusterOutcome::new(&Scope::Cluster, plan, Some(Report::new("dev")))
        };
        let not_started =
            || ClusterOutcome::not_started("later", &Scope::Cluster, Stopped::default());
        // (case, the outcomes, the exit code)
        let cases = [
            ("converged", vec![converged()], 0),
            ("stopped with work left", vec![converged(), stopped()], 3),
            ("a cluster not started", vec![converged(), not_started()], 3),
            ("a failure elsewhere wins", vec![stopped(), failed()], 1),
        ];
        for (case, outcomes, code) in cases {
            assert_eq!(exit_code(&outcomes), code, "{case}");
        }
    }
}
