//! plan: the pure diff of desired against observed targets. The result is a value — printable
//! like `terraform plan`, serializable, every change carrying its binding and reason — that
//! apply executes without deciding anything again.

mod brake;
mod render;
pub mod rules;
#[cfg(test)]
mod tests;

use crate::model::aws::ObservedRule;
use crate::model::aws::ObservedTarget;
use crate::model::{BindingId, GroupRule, Target, TargetGroupRef};
use crate::pure::binding::{BindingError, DERIVE_INGRESS_KEY, ResolvedBinding};
use crate::pure::desire::DesiredTargets;
use crate::pure::desire::rules::DesiredRule;
use crate::state::ownership::OwnershipRecord;
use rules::{DEFAULT_MAX_RULES_PER_FAMILY, RulePlan};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Settings that shape plans, from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Inbound rules per security group and address family.
    pub max_rules_per_family: usize,
    /// Whether `0.0.0.0/0` and `::/0` peers may be opened.
    pub allow_world_open: bool,
    /// Whether someone else's world-open rules on ports we manage are revoked (the one
    /// exception to the ownership rule), not just reported.
    pub revoke_world_open: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_rules_per_family: DEFAULT_MAX_RULES_PER_FAMILY,
            allow_world_open: false,
            revoke_world_open: false,
        }
    }
}

/// What observation found for one binding.
#[derive(Debug, Clone)]
pub enum BindingState {
    /// Resolved against its target group, with the targets it wants.
    Ready {
        binding: Box<ResolvedBinding>,
        desired: DesiredTargets,
    },
    /// Invalid, or its Service, port or target group could not be found or read.
    Failed { id: BindingId, error: BindingError },
}

impl BindingState {
    pub fn id(&self) -> &BindingId {
        match self {
            Self::Ready { binding, .. } => &binding.binding.id,
            Self::Failed { id, .. } => id,
        }
    }
}

/// The targets of one target group, read fresh this run.
#[derive(Debug, Clone)]
pub enum Observation {
    Targets(Vec<ObservedTarget>),
    NotFound,
    Unreadable(String),
}

/// Everything one cluster's plan is computed from.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub cluster: String,
    /// Every binding the cluster declares. Only valid when the cluster could be read.
    pub bindings: Vec<BindingState>,
    pub records: Vec<OwnershipRecord>,
    /// By target group ARN: every group a binding or a record points at.
    pub observed: BTreeMap<String, Observation>,
    /// Whether the TargetGroupBinding resources could be listed. When the CRD is missing, a
    /// recorded resource binding cannot be told apart from a deleted one, so it is kept.
    pub resource_bindings_listed: bool,
    /// Desired security-group rules of every binding whose rules could be computed.
    pub desired_rules: Vec<DesiredRule>,
    /// Bindings whose rules could not be computed: their rules of last time are kept.
    pub rule_failures: Vec<BindingFailure>,
    /// By group id: the inbound rules of every group a rule is or was wanted in.
    pub observed_rules: BTreeMap<String, Vec<ObservedRule>>,
    pub max_rules_per_family: usize,
    pub revoke_world_open: bool,
    /// The groups whose rules this run plans; `None` for all. A run narrowed to one event
    /// plans only that event's groups and keeps every binding's recorded rules elsewhere.
    pub rule_groups: Option<BTreeSet<String>>,
    /// `metadata.generation` of each resource binding, for the statuses.
    pub generations: BTreeMap<BindingId, i64>,
}

impl PlanInput {
    fn plans_rules_of(&self, group: &str) -> bool {
        self.rule_groups.as_ref().is_none_or(|g| g.contains(group))
    }
}

/// One cluster's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub cluster: String,
    /// Set when the cluster as a whole could not be read: nothing else is planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
    pub bindings: usize,
    pub changes: Vec<TargetChange>,
    pub blocked: Vec<Blocked>,
    pub failures: Vec<BindingFailure>,
    pub records: Vec<RecordChange>,
    /// Security-group rules to authorize and revoke.
    pub rules: RulePlan,
    /// Bindings whose rules could not be planned (their targets may still be).
    pub rule_failures: Vec<BindingFailure>,
    /// Things an operator should know that change nothing (seed 000: no rules are managed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// Every binding this plan speaks for, with its resource's generation.
    #[serde(skip)]
    pub covered: BTreeMap<BindingId, Option<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub binding: BindingId,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TargetAction {
    RegisterTargets,
    DeregisterTargets,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetChange {
    pub action: TargetAction,
    pub binding: BindingId,
    pub target_group: TargetGroupRef,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    pub reason: String,
}

/// Changes the plan refuses to make, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub action: TargetAction,
    pub binding: BindingId,
    pub target_group: TargetGroupRef,
    pub targets: Vec<Target>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingFailure {
    pub binding: BindingId,
    pub error: BindingError,
}

/// An ownership record to write around a binding's target changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordChange {
    pub binding: BindingId,
    /// Written before any target of the binding is registered, so a lost response cannot leak
    /// a target nobody remembers owning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<OwnershipRecord>,
    /// Written once every change of the binding succeeded.
    pub after: RecordAfter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op", content = "record")]
pub enum RecordAfter {
    Keep,
    Save(OwnershipRecord),
    Forget(OwnershipRecord),
}

impl Plan {
    /// A plan for a cluster that could not be read: no change at all, records untouched.
    pub fn unreadable_cluster(cluster: &str, error: String) -> Self {
        Self {
            cluster: cluster.to_string(),
            cluster_error: Some(error),
            ..Self::default()
        }
    }

    /// Nothing to change, nothing held back, nothing failed.
    pub fn is_converged(&self) -> bool {
        self.cluster_error.is_none()
            && self.changes.is_empty()
            && self.blocked.is_empty()
            && self.failures.is_empty()
            && self.records.is_empty()
            && self.rules.is_empty()
            && self.rule_failures.is_empty()
    }

    /// Whether applying this plan writes anything (targets, rules or ownership records).
    pub fn has_writes(&self) -> bool {
        !self.changes.is_empty()
            || !self.records.is_empty()
            || !self.rules.authorize.is_empty()
            || !self.rules.revoke.is_empty()
    }

    pub fn count(&self, action: TargetAction) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// The bindings that have something for apply to do, in plan order.
    pub fn bindings_with_work(&self) -> Vec<&BindingId> {
        let mut seen = BTreeSet::new();
        self.changes
            .iter()
            .map(|c| &c.binding)
            .chain(self.records.iter().map(|r| &r.binding))
            .filter(|b| seen.insert(*b))
            .collect()
    }
}

/// Computes one cluster's plan.
pub fn plan(input: &PlanInput) -> Plan {
    let mut out = Plan {
        cluster: input.cluster.clone(),
        bindings: input.bindings.len(),
        covered: input
            .bindings
            .iter()
            .map(|b| (b.id().clone(), input.generations.get(b.id()).copied()))
            .collect(),
        ..Plan::default()
    };
    let conflicts = shared_target_group_conflicts(&input.bindings);
    out.rules = rules::plan_rules(&rule_input(input));
    out.rule_failures = input.rule_failures.clone();
    let rules_kept: BTreeSet<BindingId> = input
        .rule_failures
        .iter()
        .map(|f| f.binding.clone())
        .chain(out.rules.blocked.iter().map(|b| b.binding.clone()))
        .collect();
    // Grouped once: scanning every desired rule for each binding is quadratic at scale.
    let mut desired_rules: BTreeMap<&BindingId, Vec<&DesiredRule>> = BTreeMap::new();
    for rule in &input.desired_rules {
        desired_rules.entry(&rule.binding).or_default().push(rule);
    }

    for state in &input.bindings {
        match state {
            BindingState::Failed { id, error } => out.failures.push(BindingFailure {
                binding: id.clone(),
                error: error.clone(),
            }),
            BindingState::Ready { binding, desired } => {
                if let Some(error) = conflicts.get(&binding.binding.id) {
                    out.failures.push(BindingFailure {
                        binding: binding.binding.id.clone(),
                        error: error.clone(),
                    });
                    continue;
                }
                let id = &binding.binding.id;
                // A binding's record holds the rules it has: new ones once they can land.
                let final_rules: BTreeSet<GroupRule> = if rules_kept.contains(id) {
                    previous_rules(input, binding)
                } else {
                    let outside_scope = previous_rules(input, binding)
                        .into_iter()
                        .filter(|r| !input.plans_rules_of(&r.group));
                    desired_rules
                        .get(id)
                        .into_iter()
                        .flatten()
                        .filter(|r| input.plans_rules_of(&r.group))
                        .map(|r| GroupRule {
                            group: r.group.clone(),
                            permission: r.permission.clone(),
                        })
                        .chain(outside_scope)
                        .collect()
                };
                if binding.binding.networking.is_none() && !binding.binding.derive_ingress {
                    out.notes.push(Note {
                        binding: id.clone(),
                        message: format!(
                            "no spec.networking: no security-group rule is managed for it, so traffic from the load balancer may be dropped; add networking, or set {DERIVE_INGRESS_KEY}=true to admit the load balancer",
                        ),
                    });
                }
                plan_binding(input, binding, desired, final_rules, &mut out);
            }
        }
    }
    plan_stale_records(input, &mut out);

    out.changes
        .sort_by(|a, b| (&a.binding, a.action, &a.target).cmp(&(&b.binding, b.action, &b.target)));
    out.failures.sort_by(|a, b| a.binding.cmp(&b.binding));
    out
}

fn plan_binding(
    input: &PlanInput,
    binding: &ResolvedBinding,
    desired: &DesiredTargets,
    final_rules: BTreeSet<GroupRule>,
    out: &mut Plan,
) {
    let id = &binding.binding.id;
    let group = &binding.target_group;
    let observed = match input.observed.get(&group.arn) {
        Some(Observation::Targets(targets)) => targets,
        Some(Observation::NotFound) => {
            return out.failures.push(BindingFailure {
                binding: id.clone(),
                error: BindingError::new("", format!("target group {} not found", group.arn)),
            });
        }
        Some(Observation::Unreadable(why)) => {
            return out.failures.push(BindingFailure {
                binding: id.clone(),
                error: BindingError::new("", format!("reading targets of {}: {why}", group.arn)),
            });
        }
        None => {
            return out.failures.push(BindingFailure {
                binding: id.clone(),
                error: BindingError::new("", format!("targets of {} were not read", group.arn)),
            });
        }
    };
    let record = input
        .records
        .iter()
        .find(|r| &r.binding == id && r.target_group.arn == group.arn);
    let owned: BTreeSet<Target> = record.map(|r| r.targets.clone()).unwrap_or_default();
    // Draining targets are leaving already: neither present nor stale.
    let present: BTreeSet<&Target> = observed
        .iter()
        .filter(|t| !t.is_draining())
        .map(|t| &t.target)
        .collect();

    let to_register: Vec<(&Target, &crate::pure::desire::DesiredTarget)> = desired
        .targets
        .iter()
        .filter(|(t, _)| !present.contains(t))
        .collect();
    // Targets another binding recorded here (one that failed this run, say) are never ours to
    // remove: a bad binding must not lose its targets to a healthy one.
    let others: BTreeSet<&Target> = input
        .records
        .iter()
        .filter(|r| &r.binding != id && r.target_group.arn == group.arn)
        .flat_map(|r| &r.targets)
        .collect();
    let mut stale: Vec<&Target> = present
        .iter()
        .copied()
        .filter(|t| !desired.targets.contains_key(*t) && !others.contains(t))
        // A shared target group only loses what this cluster put there; with no record yet,
        // nothing at all.
        .filter(|t| !binding.binding.multi_cluster || owned.contains(*t))
        .collect();

    let mut held = Vec::new();
    if let Some(reason) = brake::hold_back(binding, desired, stale.len()) {
        held = std::mem::take(&mut stale);
        out.blocked.push(Blocked {
            action: TargetAction::DeregisterTargets,
            binding: id.clone(),
            target_group: group.clone(),
            targets: held.iter().map(|t| (*t).clone()).collect(),
            reason,
        });
    }

    for (target, want) in &to_register {
        out.changes.push(TargetChange {
            action: TargetAction::RegisterTargets,
            binding: id.clone(),
            target_group: group.clone(),
            target: (*target).clone(),
            availability_zone: want.availability_zone.clone(),
            reason: format!("{}; not registered", want.source),
        });
    }
    for target in &stale {
        out.changes.push(TargetChange {
            action: TargetAction::DeregisterTargets,
            binding: id.clone(),
            target_group: group.clone(),
            target: (*target).clone(),
            availability_zone: None,
            reason: if owned.contains(*target) {
                format!("no longer desired: {}", desired.evidence)
            } else {
                "not desired: registered outside this binding".to_string()
            },
        });
    }

    let record_for = |targets: BTreeSet<Target>, rules: BTreeSet<GroupRule>| OwnershipRecord {
        binding: id.clone(),
        target_group: group.clone(),
        multi_cluster: binding.binding.multi_cluster,
        targets,
        rules,
    };
    // Written once the new rules are authorized, it claims them beside the old ones: when the
    // registration then fails, the next run still knows every rule made for this binding, and
    // keeps them all should the binding fail then.
    let before = (!to_register.is_empty()).then(|| {
        let mut targets = owned.clone();
        targets.extend(to_register.iter().map(|(t, _)| (*t).clone()));
        let mut rules = record.map(|r| r.rules.clone()).unwrap_or_default();
        rules.extend(final_rules.iter().cloned());
        record_for(targets, rules)
    });
    let before = before.filter(|r| Some(r) != record);
    // After convergence this binding owns what it wants, plus what the brake kept of its own.
    let mut final_targets: BTreeSet<Target> = desired.targets.keys().cloned().collect();
    final_targets.extend(
        held.iter()
            .filter(|t| owned.contains(**t))
            .map(|t| (*t).clone()),
    );
    let final_record = record_for(final_targets, final_rules);
    let after = if Some(&final_record) == record {
        RecordAfter::Keep
    } else {
        RecordAfter::Save(final_record)
    };
    if before.is_some() || after != RecordAfter::Keep {
        out.records.push(RecordChange {
            binding: id.clone(),
            before,
            after,
        });
    }
}

/// The rule planner's input, from the plan's.
fn rule_input(input: &PlanInput) -> rules::RuleInput {
    let mut previous: BTreeMap<BindingId, BTreeSet<GroupRule>> = BTreeMap::new();
    for record in &input.records {
        previous.entry(record.binding.clone()).or_default().extend(
            record
                .rules
                .iter()
                .filter(|r| input.plans_rules_of(&r.group))
                .cloned(),
        );
    }
    let failed = input
        .bindings
        .iter()
        .filter(|b| matches!(b, BindingState::Failed { .. }))
        .map(|b| b.id().clone())
        .chain(input.rule_failures.iter().map(|f| f.binding.clone()))
        .collect();
    rules::RuleInput {
        cluster: input.cluster.clone(),
        desired: input
            .desired_rules
            .iter()
            .filter(|r| input.plans_rules_of(&r.group))
            .cloned()
            .collect(),
        failed,
        previous,
        observed: input
            .observed_rules
            .iter()
            .filter(|(group, _)| input.plans_rules_of(group))
            .map(|(group, rules)| (group.clone(), rules.clone()))
            .collect(),
        max_rules_per_family: input.max_rules_per_family,
        revoke_world_open: input.revoke_world_open,
    }
}

/// The rules a binding's record holds for its current target group.
fn previous_rules(input: &PlanInput, binding: &ResolvedBinding) -> BTreeSet<GroupRule> {
    input
        .records
        .iter()
        .find(|r| r.binding == binding.binding.id && r.target_group.arn == binding.target_group.arn)
        .map(|r| r.rules.clone())
        .unwrap_or_default()
}

/// Records whose binding is gone (resource deleted, tags removed) or now points at another
/// target group: their targets are deregistered, then the record is forgotten. Records of
/// bindings that failed this run are kept untouched.
fn plan_stale_records(input: &PlanInput, out: &mut Plan) {
    for record in &input.records {
        let state = input.bindings.iter().find(|b| b.id() == &record.binding);
        let reason = match state {
            Some(BindingState::Failed { .. }) => continue,
            Some(BindingState::Ready { binding, .. })
                if binding.target_group.arn == record.target_group.arn =>
            {
                continue;
            }
            Some(BindingState::Ready { binding, .. }) => {
                // A conflicting binding failed in this run; leave its old group alone too.
                if out.failures.iter().any(|f| f.binding == record.binding) {
                    continue;
                }
                format!(
                    "binding moved to target group {}",
                    binding.target_group.short_name()
                )
            }
            None if matches!(record.binding, BindingId::Resource { .. })
                && !input.resource_bindings_listed =>
            {
                continue;
            }
            None => "binding no longer exists".to_string(),
        };
        let present: Vec<&ObservedTarget> = match input.observed.get(&record.target_group.arn) {
            Some(Observation::Targets(targets)) => {
                targets.iter().filter(|t| !t.is_draining()).collect()
            }
            Some(Observation::NotFound) => Vec::new(),
            Some(Observation::Unreadable(why)) => {
                out.failures.push(BindingFailure {
                    binding: record.binding.clone(),
                    error: BindingError::new(
                        "",
                        format!(
                            "cleaning up {}: reading its targets failed: {why}",
                            record.target_group.arn
                        ),
                    ),
                });
                continue;
            }
            None => continue,
        };
        for observed in present
            .iter()
            .filter(|t| record.targets.contains(&t.target))
        {
            out.changes.push(TargetChange {
                action: TargetAction::DeregisterTargets,
                binding: record.binding.clone(),
                target_group: record.target_group.clone(),
                target: observed.target.clone(),
                availability_zone: None,
                reason: reason.clone(),
            });
        }
        out.records.push(RecordChange {
            binding: record.binding.clone(),
            before: None,
            after: RecordAfter::Forget(record.clone()),
        });
    }
}

/// Two bindings of one cluster on one target group would fight over its targets unless all of
/// them are multi-cluster (then each only removes what it registered).
fn shared_target_group_conflicts(bindings: &[BindingState]) -> BTreeMap<BindingId, BindingError> {
    let mut by_group: BTreeMap<&str, Vec<&ResolvedBinding>> = BTreeMap::new();
    for state in bindings {
        if let BindingState::Ready { binding, .. } = state {
            by_group
                .entry(&binding.target_group.arn)
                .or_default()
                .push(binding);
        }
    }
    let mut conflicts = BTreeMap::new();
    for (arn, group) in by_group {
        if group.len() < 2 || group.iter().all(|b| b.binding.multi_cluster) {
            continue;
        }
        for binding in &group {
            let others: Vec<String> = group
                .iter()
                .filter(|o| o.binding.id != binding.binding.id)
                .map(|o| o.binding.id.to_string())
                .collect();
            conflicts.insert(
                binding.binding.id.clone(),
                BindingError::new(
                    "",
                    format!(
                        "target group {arn} is also bound by {}; set multiClusterTargetGroup on every binding that shares it",
                        others.join(", ")
                    ),
                ),
            );
        }
    }
    conflicts
}
