//! What one run of one cluster came to: its scope, its plan, and what apply did. Status,
//! report and metrics are all read from it.

use crate::pure::plan::Plan;
use crate::pure::report::Report;
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

    pub fn skipped(cluster: &str, scope: &Scope, why: String) -> Self {
        Self {
            skipped: Some(why),
            ..Self::new(scope, Plan::empty(cluster), None)
        }
    }
}

/// Exit 0: converged or nothing to do. Exit 1: a binding failed, a change failed, or the
/// brake held something back (the run did not converge). Exit 2 is for usage errors.
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
    u8::from(failed)
}
