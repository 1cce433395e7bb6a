//! The target half of the plan: one binding's registrations, deregistrations, holds and
//! records against what its target group holds, and the cleanup after bindings that are gone
//! or moved.

use super::{
    BindingPlan, Blocked, Observation, PlanInput, Presence, RecordAfter, RecordChange,
    TargetAction, TargetChange, brake,
};
use crate::model::aws::ObservedTarget;
use crate::model::{BindingId, GroupRule, Target};
use crate::pure::binding::{BindingError, ResolvedBinding};
use crate::pure::desire::{DesiredTarget, DesiredTargets};
use crate::state::ownership::OwnershipRecord;
use std::collections::{BTreeMap, BTreeSet};

/// The ownership records, looked up by binding and by target group.
pub(super) struct Records<'a> {
    by_binding: BTreeMap<&'a BindingId, Vec<&'a OwnershipRecord>>,
    by_group: BTreeMap<&'a str, Vec<&'a OwnershipRecord>>,
}

impl<'a> Records<'a> {
    pub(super) fn of(records: &'a [OwnershipRecord]) -> Self {
        let mut by_binding: BTreeMap<&BindingId, Vec<&OwnershipRecord>> = BTreeMap::new();
        let mut by_group: BTreeMap<&str, Vec<&OwnershipRecord>> = BTreeMap::new();
        for record in records {
            by_binding.entry(&record.binding).or_default().push(record);
            by_group
                .entry(&record.target_group.arn)
                .or_default()
                .push(record);
        }
        Self {
            by_binding,
            by_group,
        }
    }

    /// The binding's record in this target group.
    fn of_binding_in(&self, binding: &BindingId, arn: &str) -> Option<&'a OwnershipRecord> {
        self.by_binding
            .get(binding)?
            .iter()
            .copied()
            .find(|r| r.target_group.arn == arn)
    }

    /// The rules the binding's record holds for this target group.
    pub(super) fn rules_of(
        &self,
        binding: &BindingId,
        arn: &str,
    ) -> Option<&'a BTreeSet<GroupRule>> {
        self.of_binding_in(binding, arn).map(|r| &r.rules)
    }

    /// Targets other bindings recorded in this target group.
    fn of_others_in(&self, binding: &BindingId, arn: &str) -> BTreeSet<&'a Target> {
        self.by_group
            .get(arn)
            .into_iter()
            .flatten()
            .filter(|r| &r.binding != binding)
            .flat_map(|r| &r.targets)
            .collect()
    }
}

pub(super) fn plan_binding(
    input: &PlanInput,
    records: &Records<'_>,
    binding: &ResolvedBinding,
    desired: &DesiredTargets,
    final_rules: BTreeSet<GroupRule>,
    out: &mut BindingPlan,
) {
    let id = &binding.binding.id;
    let group = &binding.target_group;
    let observed = match input.observed.get(&group.arn) {
        Some(Observation::Targets(targets)) => targets,
        Some(Observation::NotFound) => {
            return out.fail(BindingError::new(
                "",
                format!("target group {} not found", group.arn),
            ));
        }
        Some(Observation::Unreadable(why)) => {
            return out.fail(BindingError::new(
                "",
                format!("reading targets of {}: {}", group.arn, why.chain()),
            ));
        }
        None => {
            return out.fail(BindingError::new(
                "",
                format!("targets of {} were not read", group.arn),
            ));
        }
    };
    let record = records.of_binding_in(id, &group.arn);
    let no_targets = BTreeSet::new();
    let owned: &BTreeSet<Target> = record.map_or(&no_targets, |r| &r.targets);
    // Draining targets are leaving already: neither present nor stale.
    let mut present: Vec<&Target> = observed
        .iter()
        .filter(|t| !t.is_draining())
        .map(|t| &t.target)
        .collect();
    present.sort_unstable();
    present.dedup();

    let (to_register, not_desired) = differences(&desired.targets, &present);
    // Targets another binding recorded here (one that failed this run, say) are never ours to
    // remove: a bad binding must not lose its targets to a healthy one.
    let others = records.of_others_in(id, &group.arn);
    let mut stale: Vec<&Target> = not_desired
        .into_iter()
        .filter(|t| !others.contains(t))
        // A shared target group only loses what this cluster put there; with no record yet,
        // nothing at all.
        .filter(|t| !binding.binding.multi_cluster || owned.contains(*t))
        .collect();

    let mut held = Vec::new();
    if let Some(reason) = brake::hold_back(binding, desired, stale.len()) {
        held = std::mem::take(&mut stale);
        out.holds.push(Blocked {
            action: TargetAction::DeregisterTargets,
            binding: id.clone(),
            target_group: group.clone(),
            targets: held.iter().map(|t| (*t).clone()).collect(),
            reason,
        });
    }

    out.registrations
        .extend(to_register.iter().map(|(target, want)| TargetChange {
            action: TargetAction::RegisterTargets,
            binding: id.clone(),
            target_group: group.clone(),
            target: (*target).clone(),
            availability_zone: want.availability_zone.clone(),
            reason: format!("{}; not registered", want.source),
        }));
    out.deregistrations
        .extend(stale.iter().map(|target| TargetChange {
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
        }));

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
    // Most runs change nothing: compare with the record first, build a new one only to save it.
    let kept: Vec<&Target> = held
        .iter()
        .copied()
        .filter(|t| owned.contains(*t))
        .collect();
    let unchanged = record.is_some_and(|r| {
        r.target_group == *group
            && r.multi_cluster == binding.binding.multi_cluster
            && r.rules == final_rules
            && if kept.is_empty() {
                r.targets.iter().eq(desired.targets.keys())
            } else {
                r.targets.len() == desired.targets.len() + kept.len()
                    && desired
                        .targets
                        .keys()
                        .chain(kept.iter().copied())
                        .all(|t| r.targets.contains(t))
            }
    });
    let after = if unchanged {
        RecordAfter::Keep
    } else {
        let mut final_targets: BTreeSet<Target> = desired.targets.keys().cloned().collect();
        final_targets.extend(kept.into_iter().cloned());
        RecordAfter::Save(record_for(final_targets, final_rules))
    };
    if before.is_some() || after != RecordAfter::Keep {
        out.records.push(RecordChange { before, after });
    }
}

/// What is desired but not present, and what is present but not desired, in target order:
/// one walk over both sorted sides, where looking each up would search a tree per target.
fn differences<'a>(
    desired: &'a BTreeMap<Target, DesiredTarget>,
    present: &[&'a Target],
) -> (Vec<(&'a Target, &'a DesiredTarget)>, Vec<&'a Target>) {
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let mut present = present.iter().copied().peekable();
    for (target, want) in desired {
        while let Some(seen) = present.next_if(|p| *p < target) {
            extra.push(seen);
        }
        if present.next_if(|p| *p == target).is_none() {
            missing.push((target, want));
        }
    }
    extra.extend(present);
    (missing, extra)
}

/// Records whose binding is gone (resource deleted, tags removed) or now points at another
/// target group: their targets are deregistered, then the record is forgotten. Records of
/// bindings that failed this run are kept untouched.
pub(super) fn plan_stale_records(input: &PlanInput, out: &mut BTreeMap<BindingId, BindingPlan>) {
    let states: BTreeMap<&BindingId, &super::BindingState> =
        input.bindings.iter().map(|b| (b.id(), b)).collect();
    for record in &input.records {
        let reason = match states.get(&record.binding) {
            Some(super::BindingState::Failed { .. }) => continue,
            Some(super::BindingState::Ready { binding, .. })
                if binding.target_group.arn == record.target_group.arn =>
            {
                continue;
            }
            Some(super::BindingState::Ready { binding, .. }) => {
                // A conflicting binding failed in this run; leave its old group alone too.
                if out
                    .get(&record.binding)
                    .is_some_and(|b| b.failure.is_some())
                {
                    continue;
                }
                format!(
                    "binding moved to target group {}",
                    binding.target_group.short_name()
                )
            }
            None if record.binding.is_resource() && !input.resource_bindings_listed => {
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
                let error = BindingError::new(
                    "",
                    format!(
                        "cleaning up {}: reading its targets failed: {}",
                        record.target_group.arn,
                        why.chain()
                    ),
                );
                cleanup_of(out, &record.binding).fail(error);
                continue;
            }
            None => continue,
        };
        let part = cleanup_of(out, &record.binding);
        part.deregistrations.extend(
            present
                .iter()
                .filter(|t| record.targets.contains(&t.target))
                .map(|observed| TargetChange {
                    action: TargetAction::DeregisterTargets,
                    binding: record.binding.clone(),
                    target_group: record.target_group.clone(),
                    target: observed.target.clone(),
                    availability_zone: None,
                    reason: reason.clone(),
                }),
        );
        part.records.push(RecordChange {
            before: None,
            after: RecordAfter::Forget(record.clone()),
        });
    }
}

/// The plan of a binding with a record to clean up: its own, or a new one when it is gone.
fn cleanup_of<'a>(
    out: &'a mut BTreeMap<BindingId, BindingPlan>,
    binding: &BindingId,
) -> &'a mut BindingPlan {
    out.entry(binding.clone())
        .or_insert_with(|| BindingPlan::new(binding.clone(), Presence::Gone))
}

/// Two bindings of one cluster on one target group would fight over its targets unless all of
/// them are multi-cluster (then each only removes what it registered).
pub(super) fn shared_target_group_conflicts(
    bindings: &[super::BindingState],
) -> BTreeMap<BindingId, BindingError> {
    let mut by_group: BTreeMap<&str, Vec<&ResolvedBinding>> = BTreeMap::new();
    for state in bindings {
        if let super::BindingState::Ready { binding, .. } = state {
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
