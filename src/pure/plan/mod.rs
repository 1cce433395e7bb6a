//! plan: the pure diff of desired against observed targets. The result is a value — printable
//! like `terraform plan`, serializable, every change carrying its binding and reason — that
//! apply executes without deciding anything again.

mod brake;
pub mod gates;
mod render;
pub mod rules;
mod targets;
#[cfg(test)]
mod tests;

use crate::error::Error;
use crate::model::aws::{ObservedRule, ObservedTarget};
use crate::model::cluster::GateCondition;
use crate::model::keyed::Keyed;
use crate::model::{BindingId, GroupRule, Target, TargetGroupRef};
use crate::model::{SecurityGroupId, TargetGroupArn};
use crate::pure::binding::{BindingError, DERIVE_INGRESS_KEY, ResolvedBinding};
use crate::pure::desire::DesiredTargets;
use crate::pure::desire::rules::DesiredRule;
use crate::state::ownership::OwnershipRecord;
use foldhash::HashMap;
use rules::{DEFAULT_MAX_RULES_PER_FAMILY, RulePlan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    /// Reading failed: nothing is known of its targets.
    Unreadable(Arc<Error>),
}

/// Everything one cluster's plan is computed from.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub cluster: String,
    /// Every binding the cluster declares. Only valid when the cluster could be read.
    pub bindings: Vec<BindingState>,
    pub records: Vec<OwnershipRecord>,
    /// By target group ARN: every group a binding or a record points at.
    pub observed: BTreeMap<TargetGroupArn, Observation>,
    /// Whether the TargetGroupBinding resources could be listed. When the CRD is missing, a
    /// recorded resource binding cannot be told apart from a deleted one, so it is kept.
    pub resource_bindings_listed: bool,
    /// Desired security-group rules of every binding whose rules could be computed.
    pub desired_rules: Vec<DesiredRule>,
    /// Bindings whose rules could not be computed: their rules of last time are kept.
    pub rule_failures: Vec<BindingFailure>,
    /// By group id: the inbound rules of every group a rule is or was wanted in.
    pub observed_rules: BTreeMap<SecurityGroupId, Vec<ObservedRule>>,
    pub max_rules_per_family: usize,
    pub revoke_world_open: bool,
    /// The groups whose rules this run plans; `None` for all. A run narrowed to one event
    /// plans only that event's groups and keeps every binding's recorded rules elsewhere.
    pub rule_groups: Option<BTreeSet<SecurityGroupId>>,
    /// `metadata.generation` of each resource binding, for the statuses.
    pub generations: BTreeMap<BindingId, i64>,
}

impl PlanInput {
    fn plans_rules_of(&self, group: &str) -> bool {
        self.rule_groups.as_ref().is_none_or(|g| g.contains(group))
    }
}

/// One cluster's plan: each binding's own part, and the security-group rules (planned over
/// every binding at once, because bindings share node groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub cluster: String,
    /// Set when the cluster as a whole could not be read: nothing else is planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
    /// Every binding the cluster declares, and every one an ownership record still names.
    #[serde(with = "crate::model::keyed")]
    pub bindings: BTreeMap<BindingId, BindingPlan>,
    /// Security-group rules to authorize and revoke.
    pub rules: RulePlan,
    /// Things an operator should know that change nothing (seed 000: no rules are managed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}

/// One binding's part of the plan. Apply executes it in this order: records `before`,
/// registrations, deregistrations, records `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingPlan {
    pub binding: BindingId,
    /// Whether the cluster declares it: a binding known only from its ownership record is
    /// gone, and its plan only cleans up after it.
    pub presence: Presence,
    /// Why nothing (or, for a cleanup, not everything) of it is changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<BindingError>,
    /// Why its rules could not be planned: they stay as they are (its targets may still move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_failure: Option<BindingError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrations: Vec<TargetChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deregistrations: Vec<TargetChange>,
    /// Deregistrations the plan refuses to make.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Blocked>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordChange>,
    /// Readiness-gate conditions to set on pods, after the binding's target changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateChange>,
    /// Pods whose gate has not passed yet, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates_waiting: Option<GatesWaiting>,
}

impl Keyed for BindingPlan {
    type Key = BindingId;
    fn key(&self) -> &BindingId {
        &self.binding
    }
}

/// A pod condition to set: the gate's condition type on the pod's `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateChange {
    pub binding: BindingId,
    /// `namespace/name`.
    pub pod: String,
    pub condition_type: String,
    /// The target whose health the condition reports.
    pub target: Target,
    pub condition: GateCondition,
    /// The status it has now (`None`: no such condition yet); a new status is a transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl GateChange {
    /// Whether the status changes (and so `lastTransitionTime` with it).
    pub fn is_transition(&self) -> bool {
        self.previous.as_deref() != Some(self.condition.status.as_str())
    }
}

/// Pods of a binding whose gate has not passed yet: a watcher reads their target group again
/// soon, until every gate has settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatesWaiting {
    /// The Service the pods are behind, `namespace/name`.
    pub service: String,
    pub pods: usize,
}

/// Whether a plan speaks for a binding (and so sets its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Presence {
    /// Declared in the cluster; `generation` is its resource's `metadata.generation`.
    Declared {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<i64>,
    },
    /// Known only from an ownership record.
    Gone,
}

impl BindingPlan {
    pub fn new(binding: BindingId, presence: Presence) -> Self {
        Self {
            binding,
            presence,
            failure: None,
            rule_failure: None,
            registrations: Vec::new(),
            deregistrations: Vec::new(),
            holds: Vec::new(),
            records: Vec::new(),
            gates: Vec::new(),
            gates_waiting: None,
        }
    }

    /// A second failure (a gone binding's cleanup in two groups) joins the first.
    fn fail(&mut self, error: BindingError) {
        match &mut self.failure {
            Some(first) => {
                first.message.push_str("; ");
                first.message.push_str(&error.message);
            }
            None => self.failure = Some(error),
        }
    }

    /// Target changes, registrations first.
    pub fn changes(&self) -> impl Iterator<Item = &TargetChange> {
        self.registrations.iter().chain(&self.deregistrations)
    }

    /// Whether apply has anything of it to write, in AWS, the state table or the cluster.
    pub fn has_writes(&self) -> bool {
        self.has_aws_writes() || !self.gates.is_empty()
    }

    /// Whether apply has targets or records of it to write.
    pub fn has_aws_writes(&self) -> bool {
        !self.registrations.is_empty()
            || !self.deregistrations.is_empty()
            || !self.records.is_empty()
    }

    fn is_converged(&self) -> bool {
        self.failure.is_none()
            && self.rule_failure.is_none()
            && self.holds.is_empty()
            && !self.has_writes()
    }

    /// Whether the printed plan has a block for it.
    fn is_shown(&self) -> bool {
        self.failure.is_some() || !self.holds.is_empty() || self.has_writes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub binding: BindingId,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TargetAction {
    RegisterTargets,
    DeregisterTargets,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetChange {
    pub action: TargetAction,
    pub binding: BindingId,
    pub target_group: TargetGroupRef,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    pub reason: String,
}

/// Changes the plan refuses to make, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub action: TargetAction,
    pub binding: BindingId,
    pub target_group: TargetGroupRef,
    pub targets: Vec<Target>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingFailure {
    pub binding: BindingId,
    pub error: BindingError,
}

/// An ownership record to write around a binding's target changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChange {
    /// Written before any target of the binding is registered, so a lost response cannot leak
    /// a target nobody remembers owning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<OwnershipRecord>,
    /// Written once every change of the binding succeeded.
    pub after: RecordAfter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op", content = "record")]
pub enum RecordAfter {
    Keep,
    Save(OwnershipRecord),
    Forget(OwnershipRecord),
}

/// How much work a plan holds, for a long run's progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanWork {
    /// Bindings the plan covers.
    pub bindings: usize,
    /// Bindings with targets or records to write.
    pub writing: usize,
    /// Target changes and rules: the writes the progress line counts.
    pub writes: usize,
}

impl Plan {
    /// How much work the plan holds.
    pub fn work(&self) -> PlanWork {
        let bindings = self.bindings.values();
        PlanWork {
            bindings: self.bindings.len(),
            writing: bindings.clone().filter(|b| b.has_aws_writes()).count(),
            writes: bindings
                .map(|b| b.registrations.len() + b.deregistrations.len())
                .sum::<usize>()
                + self.rules.authorize.len()
                + self.rules.revoke.len(),
        }
    }

    /// A plan of nothing, for a cluster: what a run reports when it did not get to plan (it
    /// was skipped, or another run holds the lease it went for without looking).
    pub fn empty(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            ..Self::default()
        }
    }

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
            && self.bindings.values().all(BindingPlan::is_converged)
            && self.rules.is_empty()
    }

    /// Whether applying this plan writes anything (targets, rules or ownership records).
    pub fn has_writes(&self) -> bool {
        self.bindings.values().any(BindingPlan::has_writes)
            || !self.rules.authorize.is_empty()
            || !self.rules.revoke.is_empty()
    }

    /// How many bindings the cluster declares.
    pub fn declared(&self) -> usize {
        self.covered().count()
    }

    /// Every binding this plan speaks for, with its resource's generation.
    pub fn covered(&self) -> impl Iterator<Item = (&BindingId, Option<i64>)> {
        self.bindings.values().filter_map(|b| match b.presence {
            Presence::Declared { generation } => Some((&b.binding, generation)),
            Presence::Gone => None,
        })
    }

    /// Every target change, binding by binding, registrations first.
    pub fn changes(&self) -> Vec<&TargetChange> {
        self.bindings
            .values()
            .flat_map(BindingPlan::changes)
            .collect()
    }

    pub fn count(&self, action: TargetAction) -> usize {
        self.bindings
            .values()
            .map(|b| match action {
                TargetAction::RegisterTargets => b.registrations.len(),
                TargetAction::DeregisterTargets => b.deregistrations.len(),
            })
            .sum()
    }

    /// Every deregistration held back.
    pub fn blocked(&self) -> Vec<&Blocked> {
        self.bindings.values().flat_map(|b| &b.holds).collect()
    }

    /// Every readiness-gate condition to set.
    pub fn gate_changes(&self) -> impl Iterator<Item = &GateChange> {
        self.bindings.values().flat_map(|b| &b.gates)
    }

    /// The Services whose pods wait on a readiness gate.
    pub fn waiting_on_gates(&self) -> impl Iterator<Item = &GatesWaiting> {
        self.bindings
            .values()
            .filter_map(|b| b.gates_waiting.as_ref())
    }

    /// Every ownership record change.
    pub fn records(&self) -> Vec<&RecordChange> {
        self.bindings.values().flat_map(|b| &b.records).collect()
    }

    /// Every failed binding, with why.
    pub fn failures(&self) -> Vec<BindingFailure> {
        self.failures_of(|b| b.failure.as_ref())
    }

    /// Every binding whose rules could not be planned, with why.
    pub fn rule_failures(&self) -> Vec<BindingFailure> {
        self.failures_of(|b| b.rule_failure.as_ref())
    }

    fn failures_of(
        &self,
        which: impl Fn(&BindingPlan) -> Option<&BindingError>,
    ) -> Vec<BindingFailure> {
        self.bindings
            .values()
            .filter_map(|b| {
                which(b).map(|error| BindingFailure {
                    binding: b.binding.clone(),
                    error: error.clone(),
                })
            })
            .collect()
    }
}

/// Computes one cluster's plan.
pub fn plan(input: &PlanInput) -> Plan {
    let mut out = Plan {
        cluster: input.cluster.clone(),
        bindings: input
            .bindings
            .iter()
            .map(|b| {
                let presence = Presence::Declared {
                    generation: input.generations.get(b.id()).copied(),
                };
                (b.id().clone(), BindingPlan::new(b.id().clone(), presence))
            })
            .collect(),
        ..Plan::default()
    };
    out.rules = rules::plan_view(&rule_view(input));
    for failure in &input.rule_failures {
        out.bindings
            .entry(failure.binding.clone())
            .or_insert_with(|| BindingPlan::new(failure.binding.clone(), Presence::Gone))
            .rule_failure = Some(failure.error.clone());
    }
    let rules_kept: BTreeSet<&BindingId> = input
        .rule_failures
        .iter()
        .map(|f| &f.binding)
        .chain(out.rules.blocked.iter().map(|b| &b.binding))
        .collect();
    // Grouped once: scanning every desired rule or record for each binding is quadratic.
    let mut desired_rules: HashMap<&BindingId, Vec<&DesiredRule>> = HashMap::default();
    for rule in &input.desired_rules {
        desired_rules.entry(&rule.binding).or_default().push(rule);
    }
    let records = targets::Records::of(&input.records);
    let conflicts = targets::shared_target_group_conflicts(&input.bindings);

    for state in &input.bindings {
        let Some(part) = out.bindings.get_mut(state.id()) else {
            continue;
        };
        let (binding, desired) = match state {
            BindingState::Failed { error, .. } => {
                part.fail(error.clone());
                continue;
            }
            BindingState::Ready { binding, desired } => (binding, desired),
        };
        if let Some(error) = conflicts.get(&binding.binding.id) {
            part.fail(error.clone());
            // No gate is set, but its gated pods still wait.
            gates::plan_gates(binding, desired, None, part);
            continue;
        }
        let id = &binding.binding.id;
        let previous = records.rules_of(id, &binding.target_group.arn);
        // A binding's record holds the rules it has: new ones once they can land.
        let final_rules: BTreeSet<GroupRule> = if rules_kept.contains(id) {
            previous.cloned().unwrap_or_default()
        } else {
            let outside_scope = previous
                .into_iter()
                .flatten()
                .filter(|r| !input.plans_rules_of(&r.group))
                .cloned();
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
        targets::plan_binding(input, &records, binding, desired, final_rules, part);
        gates::plan_gates(
            binding,
            desired,
            input.observed.get(&binding.target_group.arn),
            part,
        );
        out.notes
            .extend(gates::ungateable_note(binding, &desired.ungateable));
    }
    targets::plan_stale_records(input, &mut out.bindings);
    // A moved binding deregisters from two groups: its changes read in target order.
    for part in out.bindings.values_mut() {
        part.deregistrations.sort_by(|a, b| a.target.cmp(&b.target));
    }
    out
}

/// The rule planner's input, borrowed from the plan's and narrowed to the groups it plans.
fn rule_view(input: &PlanInput) -> rules::RuleView<'_> {
    let mut previous: BTreeMap<&BindingId, Vec<&GroupRule>> = BTreeMap::new();
    for record in &input.records {
        previous.entry(&record.binding).or_default().extend(
            record
                .rules
                .iter()
                .filter(|r| input.plans_rules_of(&r.group)),
        );
    }
    let failed = input
        .bindings
        .iter()
        .filter(|b| matches!(b, BindingState::Failed { .. }))
        .map(BindingState::id)
        .chain(input.rule_failures.iter().map(|f| &f.binding))
        .collect();
    rules::RuleView {
        cluster: &input.cluster,
        desired: input
            .desired_rules
            .iter()
            .filter(|r| input.plans_rules_of(&r.group))
            .collect(),
        failed,
        previous,
        observed: input
            .observed_rules
            .iter()
            .filter(|(group, _)| input.plans_rules_of(group))
            .map(|(group, rules)| (group, rules.as_slice()))
            .collect(),
        max_rules_per_family: input.max_rules_per_family,
        revoke_world_open: input.revoke_world_open,
    }
}
