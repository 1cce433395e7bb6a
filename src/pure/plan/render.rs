//! The human form of a plan, modelled on `terraform plan`: one block per binding, `+` for a
//! target to register, `-` for one to deregister, `!` for what is held back or failed.

use super::{Plan, RecordAfter, TargetAction};
use std::collections::BTreeSet;
use std::fmt;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster {}: {} binding(s)",
            self.cluster,
            self.declared()
        )?;
        if let Some(error) = &self.cluster_error {
            writeln!(
                f,
                "  ! cluster unreadable, nothing will be changed: {error}"
            )?;
            return Ok(());
        }
        for part in self.bindings.values().filter(|b| b.is_shown()) {
            writeln!(f)?;
            writeln!(f, "  # {}", part.binding)?;
            if let Some(error) = &part.failure {
                writeln!(f, "  ! error: {error} (nothing of this binding is changed)")?;
            }
            for change in part.changes() {
                let (sign, verb) = match change.action {
                    TargetAction::RegisterTargets => ('+', "register  "),
                    TargetAction::DeregisterTargets => ('-', "deregister"),
                };
                let zone = change
                    .availability_zone
                    .as_deref()
                    .map(|z| format!(" (zone {z})"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  {sign} {verb} {}{zone} in {}: {}",
                    change.target,
                    change.target_group.short_name(),
                    change.reason
                )?;
            }
            for blocked in &part.holds {
                let targets: Vec<String> = blocked.targets.iter().map(|t| t.to_string()).collect();
                writeln!(
                    f,
                    "  ! blocked    deregister {} in {}: {}",
                    targets.join(", "),
                    blocked.target_group.short_name(),
                    blocked.reason
                )?;
            }
            for record in &part.records {
                match &record.after {
                    RecordAfter::Forget(r) => writeln!(
                        f,
                        "  ~ forget ownership record for {}",
                        r.target_group.short_name()
                    )?,
                    RecordAfter::Save(r) => writeln!(
                        f,
                        "  ~ record ownership of {} target(s) in {}",
                        r.targets.len(),
                        r.target_group.short_name()
                    )?,
                    RecordAfter::Keep => {}
                }
            }
            for gate in &part.gates {
                let condition = &gate.condition;
                let why = match (&condition.reason, &condition.message) {
                    (Some(reason), Some(message)) => format!(" ({reason}: {message})"),
                    (Some(text), None) | (None, Some(text)) => format!(" ({text})"),
                    (None, None) => format!(" (target {} healthy)", gate.target),
                };
                writeln!(
                    f,
                    "  ~ set pod {} {}={}{why}",
                    gate.pod, gate.condition_type, condition.status
                )?;
            }
        }
        self.fmt_rules(f)?;
        if !self.notes.is_empty() {
            writeln!(f)?;
        }
        for note in &self.notes {
            writeln!(f, "  i {}: {}", note.binding, note.message)?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.summary())
    }
}

impl Plan {
    /// One line, for logs and the end of the printed plan.
    pub fn summary(&self) -> String {
        if let Some(error) = &self.cluster_error {
            return format!(
                "Plan for {}: cluster unreadable ({error}); no changes.",
                self.cluster
            );
        }
        if self.is_converged() {
            return format!(
                "Plan for {}: no changes; {} binding(s) converged.",
                self.cluster,
                self.declared()
            );
        }
        format!(
            "Plan for {}: {} to register, {} to deregister, {} blocked, {} binding(s) failed.",
            self.cluster,
            self.count(TargetAction::RegisterTargets),
            self.count(TargetAction::DeregisterTargets),
            self.blocked()
                .iter()
                .map(|b| b.targets.len())
                .sum::<usize>(),
            self.failures().len()
        ) + &self.rules_summary()
            + &self.gates_summary()
    }

    fn gates_summary(&self) -> String {
        match self.gate_changes().count() {
            0 => String::new(),
            n => format!(" {n} readiness gate condition(s) to set."),
        }
    }

    fn rules_summary(&self) -> String {
        let rules = &self.rules;
        let rule_failures = self.rule_failures().len();
        if rules.is_empty() && rule_failures == 0 {
            return String::new();
        }
        format!(
            " Rules: {} to authorize, {} to revoke, {} blocked by quota, {} binding(s) failed.",
            rules.authorize.len(),
            rules.revoke.len(),
            rules.blocked.len(),
            rule_failures
        )
    }

    /// One block per security group: `+ authorize`, `- revoke`, `! blocked`.
    fn fmt_rules(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = &self.rules;
        let mut groups: BTreeSet<&str> = rules.authorize.iter().map(|r| r.group.as_str()).collect();
        groups.extend(rules.revoke.iter().map(|r| r.group.as_str()));
        groups.extend(rules.blocked.iter().map(|r| r.group.as_str()));
        groups.extend(rules.world_open.iter().map(|r| r.group.as_str()));
        for group in groups {
            writeln!(f)?;
            writeln!(f, "  # security group {group}")?;
            for rule in rules.authorize.iter().filter(|r| r.group == group) {
                let bindings: Vec<String> = rule.bindings.iter().map(|b| b.to_string()).collect();
                writeln!(
                    f,
                    "  + authorize  {}: wanted by {}",
                    rule.permission,
                    bindings.join(", ")
                )?;
            }
            for rule in rules.revoke.iter().filter(|r| r.group == group) {
                writeln!(
                    f,
                    "  - revoke     {} ({}): ours, and no binding wants it any more",
                    rule.permission, rule.rule_id
                )?;
            }
            for open in rules.world_open.iter().filter(|r| r.group == group) {
                writeln!(
                    f,
                    "  ! world-open {} ({}) admits the whole internet to ports our bindings manage",
                    open.permission, open.rule_id
                )?;
            }
            for blocked in rules.blocked.iter().filter(|r| r.group == group) {
                writeln!(
                    f,
                    "  ! blocked    {} new rule(s) of {}: {}",
                    blocked.permissions.len(),
                    blocked.binding,
                    blocked.reason
                )?;
            }
        }
        for failure in self.rule_failures() {
            writeln!(f)?;
            writeln!(
                f,
                "  ! rules of {}: {} (its rules stay as they are)",
                failure.binding, failure.error
            )?;
        }
        if !rules.unknown_groups.is_empty() {
            writeln!(
                f,
                "  ! security groups not readable, left alone: {}",
                rules.unknown_groups.join(", ")
            )?;
        }
        Ok(())
    }
}
