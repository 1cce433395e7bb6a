//! report: what apply did, for people (text) and tools (JSON), and the exit code it implies.

use crate::model::{BindingId, Permission};
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::rules::{Authorize, Revoke};
use crate::pure::plan::{TargetAction, TargetChange};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub cluster: String,
    pub done: Vec<TargetChange>,
    pub failed: Vec<FailedChange>,
    /// Ownership records that could not be written; the next run writes them again.
    pub record_errors: Vec<(BindingId, String)>,
    pub rules_done: Vec<RuleOutcome>,
    pub rules_failed: Vec<FailedRule>,
    /// Why writing stopped part-way (the cluster's lease passed to another run), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<String>,
}

/// A security-group rule authorized or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleOutcome {
    pub action: RuleAction,
    pub group: String,
    pub permission: Permission,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRule {
    pub group: String,
    pub permission: Permission,
    pub bindings: BTreeSet<BindingId>,
    pub error: String,
}

impl FailedRule {
    pub fn of(rule: &Authorize, group: &str, error: String) -> Self {
        Self {
            group: group.to_string(),
            permission: rule.permission.clone(),
            bindings: rule.bindings.clone(),
            error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        self.failed.is_empty()
            && self.record_errors.is_empty()
            && self.rules_failed.is_empty()
            && self.lease_lost.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |action| self.done.iter().filter(|c| c.action == action).count();
        writeln!(
            f,
            "Applied to {}: {} registered, {} deregistered, {} failed.",
            self.cluster,
            count(TargetAction::RegisterTargets),
            count(TargetAction::DeregisterTargets),
            self.failed.len()
        )?;
        for failed in &self.failed {
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
        for (binding, error) in &self.record_errors {
            writeln!(f, "  ! {binding}: ownership record: {error}")?;
        }
        if let Some(why) = &self.lease_lost {
            writeln!(f, "  ! stopped writing: {why}")?;
        }
        Ok(())
    }
}

/// Exit 0: converged or nothing to do. Exit 1: a binding failed, a change failed, or the
/// brake held something back (the run did not converge). Exit 2 is for usage errors.
pub fn exit_code(outcomes: &[ClusterOutcome]) -> u8 {
    let failed = outcomes.iter().any(|outcome| {
        let ClusterOutcome { plan, report, .. } = outcome;
        outcome.lease_error.is_some()
            || plan.cluster_error.is_some()
            || !plan.failures.is_empty()
            || !plan.rule_failures.is_empty()
            || !plan.rules.blocked.is_empty()
            || !plan.blocked.is_empty()
            || report.as_ref().is_some_and(|r| !r.is_clean())
    });
    u8::from(failed)
}

#[cfg(test)]
mod tests {
    use super::RuleAction;

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
