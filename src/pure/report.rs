//! report: what apply did, for people (text) and tools (JSON), and the exit code it implies.

use crate::model::SecurityGroupId;
use crate::model::keyed::Keyed;
use crate::model::{BindingId, Permission};
use crate::pure::plan::rules::{Authorize, Revoke};
use crate::pure::plan::{GateChange, TargetAction, TargetChange};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub cluster: String,
    /// What happened to each binding apply wrote for.
    #[serde(with = "crate::model::keyed")]
    pub bindings: BTreeMap<BindingId, BindingReport>,
    pub rules_done: Vec<RuleOutcome>,
    pub rules_failed: Vec<FailedRule>,
    /// Why writing stopped part-way (the cluster's lease passed to another run), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<String>,
    /// Readiness-gate conditions set on pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates_done: Vec<GateChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates_failed: Vec<FailedGate>,
    /// Why no readiness gate could be set: the identity may not patch pod status. Targets are
    /// registered all the same, so this is told, not failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates_forbidden: Option<String>,
    /// Set when the run stopped between batches because its deadline was near: what it left
    /// for the next run. Not a failure: nothing of it was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// Where a run stopped for its deadline, and what it left. Every binding named here was left
/// whole: none of its records, targets or rules was touched, so the next run plans it afresh
/// from live state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// How long before the run's deadline it stopped, in whole seconds.
    pub seconds_before_deadline: u64,
    /// The bindings whose changes were not attempted.
    pub left: BTreeSet<BindingId>,
    /// Rules neither authorized nor revoked (stale rules stay until a run gets that far: they
    /// only admit, never cut off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rules_left: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "stopped {} s before the deadline: {}",
            self.seconds_before_deadline,
            plural(self.left.len(), "binding", "bindings")
        )?;
        if self.rules_left > 0 {
            write!(f, " and {}", plural(self.rules_left, "rule", "rules"))?;
        }
        f.write_str(" left for the next run")
    }
}

/// A pod condition that could not be set; the next run sets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedGate {
    pub change: GateChange,
    pub error: String,
}

/// What apply did for one binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingReport {
    pub binding: BindingId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<TargetChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedChange>,
    /// Ownership records that could not be written; the next run writes them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_errors: Vec<String>,
}

impl Keyed for BindingReport {
    type Key = BindingId;
    fn key(&self) -> &BindingId {
        &self.binding
    }
}

impl BindingReport {
    pub fn new(binding: &BindingId) -> Self {
        Self {
            binding: binding.clone(),
            done: Vec::new(),
            failed: Vec::new(),
            record_errors: Vec::new(),
        }
    }

    /// Whether every target change of the binding landed: only then do its old targets stop
    /// needing their old rules.
    pub fn moved(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.record_errors.is_empty()
    }

    /// Marks every change as failed, for the same reason.
    pub fn fail_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a TargetChange>, why: &str) {
        self.failed
            .extend(changes.into_iter().map(|c| FailedChange {
                change: c.clone(),
                error: why.to_string(),
            }));
    }
}

/// A security-group rule authorized or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub action: RuleAction,
    pub group: SecurityGroupId,
    pub permission: Permission,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub bindings: BTreeSet<BindingId>,
}

impl RuleOutcome {
    pub fn authorized(rule: &Authorize) -> Self {
        Self {
            action: RuleAction::Authorize,
            group: rule.group.clone(),
            permission: rule.permission.clone(),
            bindings: rule.bindings.clone(),
        }
    }

    pub fn revoked(rule: &Revoke) -> Self {
        Self {
            action: RuleAction::Revoke,
            group: rule.group.clone(),
            permission: rule.permission.clone(),
            bindings: BTreeSet::new(),
        }
    }
}

/// What was done to a rule, named by the EC2 call that did it: the name (one source,
/// [`RuleAction::as_str`], for serde and `Display`) the JSON and text reports and the logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum RuleAction {
    Authorize,
    Revoke,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "AuthorizeSecurityGroupIngress",
            Self::Revoke => "RevokeSecurityGroupIngress",
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for RuleAction {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        [Self::Authorize, Self::Revoke]
            .into_iter()
            .find(|action| action.as_str() == name)
            .ok_or_else(|| format!("{name:?} is not a rule action"))
    }
}

impl From<RuleAction> for &'static str {
    fn from(action: RuleAction) -> Self {
        action.as_str()
    }
}

/// Lets a check read like the JSON report it mirrors: `rule.action == "RevokeSecurityGroupIngress"`.
impl PartialEq<&str> for RuleAction {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRule {
    pub group: SecurityGroupId,
    pub permission: Permission,
    pub bindings: BTreeSet<BindingId>,
    pub error: String,
}

impl FailedRule {
    pub fn of(rule: &Authorize, group: &SecurityGroupId, error: String) -> Self {
        Self {
            group: group.clone(),
            permission: rule.permission.clone(),
            bindings: rule.bindings.clone(),
            error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedChange {
    pub change: TargetChange,
    pub error: String,
}

impl Report {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            ..Self::default()
        }
    }

    pub fn is_clean(&self) -> bool {
        self.bindings.values().all(BindingReport::is_clean)
            && self.rules_failed.is_empty()
            && self.lease_lost.is_none()
            && self.gates_failed.is_empty()
    }

    /// Every target change that landed, binding by binding.
    pub fn done(&self) -> Vec<&TargetChange> {
        self.bindings.values().flat_map(|b| &b.done).collect()
    }

    /// Every target change that failed, binding by binding.
    pub fn failed(&self) -> Vec<&FailedChange> {
        self.bindings.values().flat_map(|b| &b.failed).collect()
    }

    /// Every ownership record that could not be written, with its binding.
    pub fn record_errors(&self) -> Vec<(&BindingId, &str)> {
        self.bindings
            .values()
            .flat_map(|b| b.record_errors.iter().map(|e| (&b.binding, e.as_str())))
            .collect()
    }
}

impl Report {
    /// One line: what apply did to targets.
    pub fn summary(&self) -> String {
        let done = self.done();
        let count = |action| done.iter().filter(|c| c.action == action).count();
        format!(
            "Applied to {}: {} registered, {} deregistered, {} failed.",
            self.cluster,
            count(TargetAction::RegisterTargets),
            count(TargetAction::DeregisterTargets),
            self.failed().len()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for failed in self.failed() {
            writeln!(
                f,
                "  ! {} {:?} {} in {}: {}",
                failed.change.binding,
                failed.change.action,
                failed.change.target,
                failed.change.target_group.short_name(),
                failed.error
            )?;
        }
        for rule in &self.rules_done {
            writeln!(f, "  {} {} on {}", rule.action, rule.permission, rule.group)?;
        }
        for rule in &self.rules_failed {
            writeln!(
                f,
                "  ! {} on {}: {}",
                rule.permission, rule.group, rule.error
            )?;
        }
        for (binding, error) in self.record_errors() {
            writeln!(f, "  ! {binding}: ownership record: {error}")?;
        }
        if let Some(why) = &self.lease_lost {
            writeln!(f, "  ! stopped writing: {why}")?;
        }
        for gate in &self.gates_done {
            writeln!(
                f,
                "  ~ pod {} {}={}",
                gate.pod, gate.condition_type, gate.condition.status
            )?;
        }
        for failed in &self.gates_failed {
            writeln!(
                f,
                "  ! pod {} {}: {}",
                failed.change.pod, failed.change.condition_type, failed.error
            )?;
        }
        if let Some(why) = &self.gates_forbidden {
            writeln!(f, "  i readiness gates not set: {why}")?;
        }
        if let Some(stopped) = &self.stopped {
            writeln!(f, "  i {stopped}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{BindingReport, Report, RuleAction, Stopped};
    use crate::model::BindingId;

    #[test]
    fn a_run_stopped_at_its_deadline_says_what_it_left_in_one_line_and_reads_back_from_json() {
        let web = BindingId::resource("default", "web");
        let api = BindingId::resource("default", "api");
        // (case, what was left, the line)
        let cases = [
            (
                "bindings only",
                Stopped {
                    seconds_before_deadline: 40,
                    left: [web.clone(), api.clone()].into(),
                    rules_left: 0,
                },
                "  i stopped 40 s before the deadline: 2 bindings left for the next run\n",
            ),
            (
                "one binding and rules",
                Stopped {
                    seconds_before_deadline: 21,
                    left: [web.clone()].into(),
                    rules_left: 3,
                },
                "  i stopped 21 s before the deadline: 1 binding and 3 rules left for the next run\n",
            ),
        ];
        for (case, stopped, line) in cases {
            let mut report = Report::new("prod");
            report
                .bindings
                .insert(api.clone(), BindingReport::new(&api));
            report.stopped = Some(stopped);
            let text = report.to_string();
            assert!(text.ends_with(line), "{case}: {text}");
            assert!(report.is_clean(), "{case}: left is not failed");
            let json = serde_json::to_string(&report).unwrap_or_default();
            let read: Option<Report> = serde_json::from_str(&json).ok();
            assert_eq!(read.as_ref(), Some(&report), "{case}: {json}");
        }
    }

    #[test]
    fn a_rule_action_is_named_by_its_ec2_call_in_json_text_and_comparisons() {
        // (action, its name)
        let cases = [
            (RuleAction::Authorize, "AuthorizeSecurityGroupIngress"),
            (RuleAction::Revoke, "RevokeSecurityGroupIngress"),
        ];
        for (action, name) in cases {
            assert_eq!(
                serde_json::to_value(action).ok(),
                Some(serde_json::Value::from(name)),
                "{name}"
            );
            assert_eq!(action.to_string(), name);
            assert_eq!(action, name);
        }
        assert!(RuleAction::Authorize != "RevokeSecurityGroupIngress");
    }
}
