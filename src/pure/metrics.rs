//! metrics: an invocation's figures as CloudWatch embedded-metric-format documents (pure). One
//! document per cluster, printed as one log line; CloudWatch turns it into metrics without a
//! single API call.

use crate::pure::outcome::ClusterOutcome;
use crate::pure::watch::WatchRun;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const NAMESPACE: &str = "tgb-reconciler";

/// The figures of one cluster in one invocation (all its runs together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    /// Changes the first run found needed: drift, whoever caused it.
    pub drift_found: usize,
    pub changes_applied: usize,
    /// Held back by the brake or the rule quota.
    pub changes_blocked: usize,
    /// Failed bindings, failed changes, an unreadable cluster, a lease not let go.
    pub errors: usize,
    /// Bindings a run left untouched when its deadline came: the next run does them.
    pub bindings_left: usize,
}

impl ClusterFigures {
    pub fn of(runs: &[&ClusterOutcome]) -> Self {
        let mut figures = Self::default();
        if let Some(first) = runs.first() {
            let plan = &first.plan;
            figures.drift_found =
                plan.changes().len() + plan.rules.authorize.len() + plan.rules.revoke.len();
        }
        for outcome in runs {
            let plan = &outcome.plan;
            figures.changes_blocked += plan
                .blocked()
                .iter()
                .map(|b| b.targets.len())
                .sum::<usize>()
                + plan.rules.blocked.len();
            figures.errors += plan.failures().len()
                + plan.rule_failures().len()
                + usize::from(plan.cluster_error.is_some())
                + usize::from(outcome.lease_error.is_some());
            if let Some(report) = &outcome.report {
                figures.changes_applied += report.done().len() + report.rules_done.len();
                figures.errors += report.failed().len()
                    + report.rules_failed.len()
                    + report.record_errors().len()
                    + usize::from(report.lease_lost.is_some());
                figures.bindings_left += report.stopped.as_ref().map_or(0, |s| s.left.len());
            }
        }
        figures
    }

    fn converged(&self) -> bool {
        self.errors == 0 && self.changes_blocked == 0 && self.bindings_left == 0
    }
}

/// The embedded-metric documents of one invocation. `event_age_ms` is the time from the
/// event (its `time`) to now: reported as event-to-converged latency for clusters that
/// converged.
pub fn documents(
    outcomes: &[ClusterOutcome],
    duration_ms: u64,
    event_age_ms: Option<u64>,
    timestamp_ms: u64,
) -> Vec<Value> {
    let latency = event_age_ms.map(|age| ("EventToConvergedMs", age));
    documents_with(outcomes, duration_ms, latency, timestamp_ms)
}

/// The embedded-metric documents of one run of a watcher: its duration is from the change's
/// arrival to its last write, reported as `ChangeToAppliedMs` when the cluster converged.
pub fn watch_documents(run: &WatchRun, timestamp_ms: u64) -> Vec<Value> {
    let latency = Some(("ChangeToAppliedMs", run.change_to_applied_ms));
    documents_with(
        &run.outcomes,
        run.change_to_applied_ms,
        latency,
        timestamp_ms,
    )
}

/// The documents, with a latency metric (its name and value) for the clusters that converged.
fn documents_with(
    outcomes: &[ClusterOutcome],
    duration_ms: u64,
    latency: Option<(&'static str, u64)>,
    timestamp_ms: u64,
) -> Vec<Value> {
    let mut by_cluster: BTreeMap<&str, Vec<&ClusterOutcome>> = BTreeMap::new();
    for outcome in outcomes.iter().filter(|o| o.skipped.is_none()) {
        by_cluster
            .entry(outcome.plan.cluster.as_str())
            .or_default()
            .push(outcome);
    }
    by_cluster
        .into_iter()
        .map(|(cluster, runs)| {
            let figures = ClusterFigures::of(&runs);
            let mut metrics = vec![
                json!({"Name": "DriftFound", "Unit": "Count"}),
                json!({"Name": "ChangesApplied", "Unit": "Count"}),
                json!({"Name": "ChangesBlocked", "Unit": "Count"}),
                json!({"Name": "Errors", "Unit": "Count"}),
                json!({"Name": "BindingsLeft", "Unit": "Count"}),
                json!({"Name": "DurationMs", "Unit": "Milliseconds"}),
            ];
            let mut document = json!({
                "Cluster": cluster,
                "DriftFound": figures.drift_found,
                "ChangesApplied": figures.changes_applied,
                "ChangesBlocked": figures.changes_blocked,
                "Errors": figures.errors,
                "BindingsLeft": figures.bindings_left,
                "DurationMs": duration_ms,
            });
            if let Some((name, ms)) = latency.filter(|_| figures.converged()) {
                metrics.push(json!({"Name": name, "Unit": "Milliseconds"}));
                document[name] = json!(ms);
            }
            // Per cluster, and across clusters (the alarms use the latter).
            document["_aws"] = json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Cluster"], []],
                    "Metrics": metrics,
                }],
            });
            document
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BindingId, Target, TargetGroupRef};
    use crate::pure::plan::{BindingPlan, Plan, Presence, TargetAction, TargetChange};
    use crate::pure::report::{BindingReport, Report};
    use crate::pure::scope::Scope;

    fn change(ip: &str) -> TargetChange {
        TargetChange {
            binding: BindingId::resource("default", "web"),
            target_group: TargetGroupRef::new("arn:tg"),
            action: TargetAction::RegisterTargets,
            target: Target::new(ip, 80),
            availability_zone: None,
            reason: "new endpoint".into(),
        }
    }

    fn outcome(cluster: &str, planned: usize, applied: usize) -> ClusterOutcome {
        let web = BindingId::resource("default", "web");
        let part = BindingPlan {
            registrations: (0..planned)
                .map(|i| change(&format!("10.0.0.{i}")))
                .collect(),
            ..BindingPlan::new(web.clone(), Presence::Declared { generation: None })
        };
        let mut done = BindingReport::new(&web);
        done.done = part.registrations.iter().take(applied).cloned().collect();
        let plan = Plan {
            cluster: cluster.into(),
            bindings: [(web.clone(), part)].into(),
            ..Plan::default()
        };
        let mut report = Report::new(cluster);
        report.bindings.insert(web, done);
        ClusterOutcome {
            scope: Scope::Cluster,
            plan,
            report: Some(report),
            skipped: None,
            lease_error: None,
            stored_statuses: None,
        }
    }

    #[test]
    fn each_cluster_gets_one_document_with_its_figures_and_latency_only_when_converged() {
        let mut failed = outcome("blue", 2, 1);
        failed.plan.cluster_error = None;
        let unreadable = ClusterOutcome {
            plan: Plan::unreadable_cluster("green", "401".into()),
            report: None,
            ..outcome("green", 0, 0)
        };
        let docs = documents(
            &[outcome("prod", 3, 3), failed, unreadable],
            1_500,
            Some(4_000),
            1_700_000_000_000,
        );
        let figures: Vec<(String, u64, u64, u64, Option<u64>)> = docs
            .iter()
            .map(|d| {
                (
                    d["Cluster"].as_str().unwrap_or_default().to_string(),
                    d["DriftFound"].as_u64().unwrap_or(99),
                    d["ChangesApplied"].as_u64().unwrap_or(99),
                    d["Errors"].as_u64().unwrap_or(99),
                    d["EventToConvergedMs"].as_u64(),
                )
            })
            .collect();
        assert_eq!(
            figures,
            [
                ("blue".into(), 2, 1, 0, Some(4_000)),
                ("green".into(), 0, 0, 1, None),
                ("prod".into(), 3, 3, 0, Some(4_000)),
            ]
        );
        for doc in &docs {
            let declared = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(declared["Namespace"], NAMESPACE);
            for metric in declared["Metrics"].as_array().into_iter().flatten() {
                let name = metric["Name"].as_str().unwrap_or_default();
                assert!(doc.get(name).is_some(), "{name} is declared but missing");
            }
        }
    }

    #[test]
    fn a_watchers_run_reports_change_to_applied_only_when_it_converged() {
        let unreadable = ClusterOutcome {
            plan: Plan::unreadable_cluster("green", "timeout".into()),
            report: None,
            ..outcome("green", 0, 0)
        };
        // (case, the run's outcome, ChangeToAppliedMs reported)
        let cases = [
            ("converged", outcome("prod", 2, 2), Some(640)),
            ("unreadable", unreadable, None),
        ];
        for (case, outcome, expected) in cases {
            let run = WatchRun {
                cluster: outcome.plan.cluster.clone(),
                causes: vec!["EndpointSlice default/web-x modified".into()],
                change_to_applied_ms: 640,
                outcomes: vec![outcome],
            };
            let docs = watch_documents(&run, 1_700_000_000_000);
            assert_eq!(docs.len(), 1, "{case}");
            assert_eq!(docs[0]["ChangeToAppliedMs"].as_u64(), expected, "{case}");
            assert_eq!(docs[0]["DurationMs"], 640, "{case}");
            assert!(docs[0].get("EventToConvergedMs").is_none(), "{case}");
        }
    }

    #[test]
    fn a_run_stopped_at_its_deadline_counts_what_it_left_not_as_errors_and_not_as_converged() {
        let mut stopped = outcome("prod", 2, 1);
        if let Some(report) = stopped.report.as_mut() {
            report.stopped = Some(crate::pure::report::Stopped {
                seconds_before_deadline: 30,
                left: [BindingId::resource("default", "api")].into(),
                rules_left: 0,
            });
        }
        let docs = documents(&[stopped, outcome("dev", 1, 1)], 10, Some(4_000), 0);
        let figures: Vec<(&str, u64, u64, Option<u64>)> = docs
            .iter()
            .map(|d| {
                (
                    d["Cluster"].as_str().unwrap_or_default(),
                    d["BindingsLeft"].as_u64().unwrap_or(99),
                    d["Errors"].as_u64().unwrap_or(99),
                    d["EventToConvergedMs"].as_u64(),
                )
            })
            .collect();
        assert_eq!(figures, [("dev", 0, 0, Some(4_000)), ("prod", 1, 0, None)]);
    }

    #[test]
    fn skipped_runs_report_nothing() {
        let mut skipped = outcome("prod", 1, 0);
        skipped.skipped = Some("another run holds the lease".into());
        assert!(documents(&[skipped], 10, None, 0).is_empty());
    }
}
