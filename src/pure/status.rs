//! status: where each binding stands after a run, for people who ask later (`tgb-reconciler
//! status`, the TargetGroupBinding's `status`). Derived from the plan and the report (pure);
//! written only when it changed, so a steady sweep writes nothing.

use crate::model::BindingId;
use crate::pure::outcome::ClusterOutcome;
use crate::state::status::{BindingStatus, StatusReason};
use std::collections::BTreeMap;

/// What the state table (and the resources) should be told after a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusChanges {
    pub save: Vec<BindingStatus>,
    /// Bindings that no longer exist.
    pub forget: Vec<BindingId>,
}

/// The status of every binding a run planned for; `None` when the run has nothing to say: a
/// dry run (it applied nothing), an unreadable cluster (nothing is known), a skipped run.
pub fn of(outcome: &ClusterOutcome) -> Option<BTreeMap<BindingId, BindingStatus>> {
    let plan = &outcome.plan;
    let report = outcome.report.as_ref()?;
    if plan.cluster_error.is_some() || outcome.skipped.is_some() {
        return None;
    }
    let mut out: BTreeMap<BindingId, BindingStatus> = plan
        .covered()
        .map(|(id, generation)| {
            let status = BindingStatus {
                binding: id.clone(),
                observed_generation: generation,
                ready: true,
                reason: StatusReason::Converged,
                message: "every target and rule it declares is in place".into(),
                since: None,
            };
            (id.clone(), status)
        })
        .collect();
    // Checked from the most to the least severe: the first problem found is the one shown.
    let mut note = |id: &BindingId, reason: StatusReason, message: String| {
        if let Some(status) = out.get_mut(id).filter(|s| s.ready) {
            status.ready = false;
            status.reason = reason;
            status.message = message;
        }
    };
    for failure in plan.failures() {
        note(
            &failure.binding,
            StatusReason::BindingFailed,
            failure.error.to_string(),
        );
    }
    for failure in report.failed() {
        let change = &failure.change;
        note(
            &change.binding,
            StatusReason::ApplyFailed,
            format!("{:?} {}: {}", change.action, change.target, failure.error),
        );
    }
    for failed in &report.rules_failed {
        for binding in &failed.bindings {
            note(
                binding,
                StatusReason::ApplyFailed,
                format!(
                    "{} on {}: {}",
                    failed.permission, failed.group, failed.error
                ),
            );
        }
    }
    for (binding, error) in report.record_errors() {
        note(
            binding,
            StatusReason::ApplyFailed,
            format!("ownership record: {error}"),
        );
    }
    for failure in plan.rule_failures() {
        note(
            &failure.binding,
            StatusReason::RulesFailed,
            failure.error.to_string(),
        );
    }
    for blocked in plan.blocked() {
        note(
            &blocked.binding,
            StatusReason::HeldBack,
            blocked.reason.clone(),
        );
    }
    for blocked in &plan.rules.blocked {
        note(
            &blocked.binding,
            StatusReason::RuleQuota,
            blocked.reason.clone(),
        );
    }
    // A binding the run left at its deadline was not touched: it keeps the status it had (none
    // stored, none written), until a run gets to it.
    if let Some(stopped) = &report.stopped {
        let stored: BTreeMap<&BindingId, &BindingStatus> = outcome
            .stored_statuses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|s| (&s.binding, s))
            .collect();
        for id in &stopped.left {
            match stored.get(id) {
                // As worked out, not as written: unchanged, so not written again.
                Some(status) => out.insert(
                    id.clone(),
                    BindingStatus {
                        since: None,
                        ..(*status).clone()
                    },
                ),
                None => out.remove(id),
            };
        }
    }
    Some(out)
}

/// The statuses to write and forget, given what is stored. A narrowed run only speaks for the
/// bindings it covered; a full run also forgets the statuses of bindings that are gone.
pub fn changes(
    stored: &[BindingStatus],
    current: &BTreeMap<BindingId, BindingStatus>,
    full_run: bool,
) -> StatusChanges {
    let stored: BTreeMap<&BindingId, &BindingStatus> =
        stored.iter().map(|s| (&s.binding, s)).collect();
    // When it was written is not part of what it says.
    let unchanged = |now: &BindingStatus| {
        stored.get(&now.binding).is_some_and(|old| {
            let old = BindingStatus {
                since: None,
                ..(*old).clone()
            };
            &old == now
        })
    };
    StatusChanges {
        save: current
            .values()
            .filter(|now| !unchanged(now))
            .cloned()
            .collect(),
        forget: if full_run {
            stored
                .keys()
                .filter(|id| !current.contains_key(**id))
                .map(|id| (*id).clone())
                .collect()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::binding::BindingError;
    use crate::pure::plan::{BindingPlan, Blocked, Plan, Presence, TargetAction};
    use crate::pure::report::Report;
    use crate::pure::scope::Scope;

    fn id(name: &str) -> BindingId {
        BindingId::resource("default", name)
    }

    fn outcome(plan: Plan, applied: bool) -> ClusterOutcome {
        ClusterOutcome {
            scope: Scope::Cluster,
            report: applied.then(|| Report::new(&plan.cluster)),
            plan,
            skipped: None,
            lease_error: None,
            stored_statuses: None,
        }
    }

    fn plan(names: &[&str]) -> Plan {
        let declared = Presence::Declared {
            generation: Some(3),
        };
        Plan {
            cluster: "prod".into(),
            bindings: names
                .iter()
                .map(|n| (id(n), BindingPlan::new(id(n), declared)))
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn each_covered_binding_gets_the_most_telling_status_of_the_run() {
        let mut failing = plan(&["web", "api", "batch"]);
        if let Some(api) = failing.bindings.get_mut(&id("api")) {
            api.failure = Some(BindingError::new(
                "spec.serviceRef.name",
                "Service default/api not found",
            ));
        }
        let batch = failing.bindings.get_mut(&id("batch"));
        batch.expect("declared above").holds.push(Blocked {
            action: TargetAction::DeregisterTargets,
            binding: id("batch"),
            target_group: crate::model::TargetGroupRef::new("arn:tg"),
            targets: vec![],
            reason: "brake: every endpoint vanished".into(),
        });
        // (case, the run, each binding's (id, ready, reason))
        type Case = (
            &'static str,
            ClusterOutcome,
            Vec<(&'static str, bool, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "a clean run makes every binding ready",
                outcome(plan(&["web"]), true),
                vec![("tgb/default/web", true, "Converged")],
            ),
            (
                "failures and hold-backs mark only their own binding",
                outcome(failing, true),
                vec![
                    ("tgb/default/api", false, "BindingFailed"),
                    ("tgb/default/batch", false, "HeldBack"),
                    ("tgb/default/web", true, "Converged"),
                ],
            ),
        ];
        for (case, outcome, expected) in cases {
            let got: Vec<(String, bool, String)> = of(&outcome)
                .unwrap_or_default()
                .values()
                .map(|s| (s.binding.to_string(), s.ready, s.reason.to_string()))
                .collect();
            let expected: Vec<(String, bool, String)> = expected
                .into_iter()
                .map(|(b, r, why)| (b.to_string(), r, why.to_string()))
                .collect();
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn a_binding_left_at_the_deadline_keeps_the_status_it_had_and_is_not_forgotten() {
        let mut stopped = outcome(plan(&["web", "api", "new"]), true);
        let before = BindingStatus {
            binding: id("api"),
            observed_generation: Some(2),
            ready: false,
            reason: StatusReason::ApplyFailed,
            message: "RegisterTargets 10.0.0.1:80: throttled".into(),
            since: Some("2026-11-22T10:00:00Z".into()),
        };
        stopped.stored_statuses = Some(vec![before.clone()]);
        if let Some(report) = stopped.report.as_mut() {
            report.stopped = Some(crate::pure::report::Stopped {
                seconds_before_deadline: 30,
                left: [id("api"), id("new")].into(),
                rules_left: 0,
            });
        }
        let now = of(&stopped).unwrap_or_default();
        let kept = now
            .get(&id("api"))
            .map(|s| (s.ready, s.reason, s.message.as_str()));
        assert_eq!(
            kept,
            Some((false, StatusReason::ApplyFailed, before.message.as_str())),
            "api keeps its old status"
        );
        assert!(
            !now.contains_key(&id("new")),
            "new has none yet, and gets none"
        );
        assert!(now[&id("web")].ready, "web was applied: converged");
        let written = changes(&[before], &now, true);
        let saved: Vec<String> = written.save.iter().map(|s| s.binding.to_string()).collect();
        assert_eq!(saved, ["tgb/default/web"]);
        assert!(written.forget.is_empty(), "{:?}", written.forget);
    }

    #[test]
    fn a_dry_run_an_unreadable_cluster_or_a_skipped_run_has_nothing_to_say() {
        let mut skipped = outcome(plan(&["web"]), true);
        skipped.skipped = Some("another run holds the lease".into());
        let cases = [
            ("a dry run", outcome(plan(&["web"]), false)),
            (
                "an unreadable cluster",
                outcome(Plan::unreadable_cluster("prod", "401".into()), true),
            ),
            ("a skipped run", skipped),
        ];
        for (case, outcome) in cases {
            assert_eq!(of(&outcome), None, "{case}");
        }
    }

    #[test]
    fn only_changed_statuses_are_written_and_only_a_full_run_forgets() {
        let now = of(&outcome(plan(&["web", "api"]), true)).expect("a status per binding");
        let web = now[&id("web")].clone();
        let mut old_api = now[&id("api")].clone();
        old_api.observed_generation = Some(2);
        let gone = BindingStatus {
            binding: id("gone"),
            ..web.clone()
        };
        let web = BindingStatus {
            since: Some("2026-11-22T10:00:00Z".into()),
            ..web
        };
        let stored = vec![web, old_api, gone];
        let full = changes(&stored, &now, true);
        let saved: Vec<String> = full.save.iter().map(|s| s.binding.to_string()).collect();
        assert_eq!(saved, ["tgb/default/api"], "web is unchanged");
        assert_eq!(full.forget, [id("gone")]);
        assert!(changes(&stored, &now, false).forget.is_empty());
        let stored_now: Vec<BindingStatus> = now.values().cloned().collect();
        assert_eq!(changes(&stored_now, &now, true), StatusChanges::default());
    }
}
