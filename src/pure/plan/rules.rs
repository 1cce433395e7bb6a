//! The security-group half of the plan (pure): which ingress rules to authorize and which of
//! our own to revoke, group by group, computed over every binding at once because bindings
//! share node groups.
//!
//! Rules of identical shape are one rule: a foreign rule identical to a desired one counts as
//! present and is never touched. Only rules carrying this cluster's ownership marker are ever
//! revoked, and never one that a failed or quota-blocked binding had last time. Desired port
//! ranges for the same peer and protocol merge only where they overlap or touch (no port opens
//! that nobody asked for). Apply authorizes every rule of a group before revoking any, so the
//! quota is checked at that peak: rules already there plus the additions.

use crate::model::SecurityGroupId;
use crate::model::aws::ObservedRule;
use crate::model::{BindingId, GroupRule, Peer, Permission, PortRange, Protocol};
use crate::pure::desire::rules::DesiredRule;
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// EC2's default: inbound rules per security group, per address family.
pub const DEFAULT_MAX_RULES_PER_FAMILY: usize = 60;

#[derive(Debug, Clone, Default)]
pub struct RuleInput {
    pub cluster: String,
    pub desired: Vec<DesiredRule>,
    /// Bindings that failed this run: their rules of last time are kept, never revoked.
    pub failed: BTreeSet<BindingId>,
    /// Each binding's rules as recorded last time (from its ownership records).
    pub previous: BTreeMap<BindingId, BTreeSet<GroupRule>>,
    /// By group id: every group a desired rule, a previous rule or one of our rules is in.
    pub observed: BTreeMap<SecurityGroupId, Vec<ObservedRule>>,
    pub max_rules_per_family: usize,
    /// The one exception to ownership: revoke foreign world-open rules on managed ports.
    pub revoke_world_open: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePlan {
    pub authorize: Vec<Authorize>,
    pub revoke: Vec<Revoke>,
    pub blocked: Vec<QuotaBlocked>,
    /// Groups whose rules could not be planned at all (not observed).
    pub unknown_groups: Vec<SecurityGroupId>,
    /// Someone else's rules open to the whole internet on ports our bindings manage.
    pub world_open: Vec<Revoke>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorize {
    pub group: SecurityGroupId,
    pub permission: Permission,
    /// Every binding the (possibly merged) rule serves.
    pub bindings: BTreeSet<BindingId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub group: SecurityGroupId,
    pub rule_id: String,
    pub permission: Permission,
    /// Bindings whose last applied rules this one carries: while one of them cannot move its
    /// targets, its old targets still need it, so it stays (make before break).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub held_for: BTreeSet<BindingId>,
}

/// A binding whose new rules do not fit in a group: none of them is written there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaBlocked {
    pub group: SecurityGroupId,
    pub binding: BindingId,
    pub permissions: Vec<Permission>,
    pub reason: String,
}

impl RulePlan {
    /// Nothing to authorize, revoke or report.
    pub fn is_empty(&self) -> bool {
        self.authorize.is_empty()
            && self.revoke.is_empty()
            && self.blocked.is_empty()
            && self.world_open.is_empty()
    }
}

pub fn plan_rules(input: &RuleInput) -> RulePlan {
    plan_view(&RuleView {
        cluster: &input.cluster,
        desired: input.desired.iter().collect(),
        failed: input.failed.iter().collect(),
        previous: input
            .previous
            .iter()
            .map(|(binding, rules)| (binding, rules.iter().collect()))
            .collect(),
        observed: input
            .observed
            .iter()
            .map(|(group, rules)| (group, rules.as_slice()))
            .collect(),
        max_rules_per_family: input.max_rules_per_family,
        revoke_world_open: input.revoke_world_open,
    })
}

/// [`RuleInput`] borrowed: the plan hands its own rules over without copying them.
pub(super) struct RuleView<'a> {
    pub cluster: &'a str,
    pub desired: Vec<&'a DesiredRule>,
    pub failed: BTreeSet<&'a BindingId>,
    pub previous: BTreeMap<&'a BindingId, Vec<&'a GroupRule>>,
    pub observed: BTreeMap<&'a SecurityGroupId, &'a [ObservedRule]>,
    pub max_rules_per_family: usize,
    pub revoke_world_open: bool,
}

pub(super) fn plan_view(input: &RuleView<'_>) -> RulePlan {
    let mut out = RulePlan::default();
    // Hashed, then ordered once: tens of thousands of rules fall into a few hundred groups.
    let mut by_group: HashMap<&SecurityGroupId, Vec<&DesiredRule>> = HashMap::default();
    for rule in &input.desired {
        by_group.entry(&rule.group).or_default().push(rule);
    }
    let mut groups: BTreeSet<&SecurityGroupId> = by_group.keys().copied().collect();
    groups.extend(input.observed.keys());
    for group in groups {
        let Some(observed) = input.observed.get(group) else {
            out.unknown_groups.push(group.clone());
            continue;
        };
        plan_group(
            input,
            group,
            by_group.get(group).map(Vec::as_slice).unwrap_or_default(),
            observed,
            &mut out,
        );
    }
    out
}

fn plan_group(
    input: &RuleView<'_>,
    group: &SecurityGroupId,
    desired: &[&DesiredRule],
    observed: &[ObservedRule],
    out: &mut RulePlan,
) {
    let merged = merge(desired);
    let present: BTreeSet<&Permission> = observed.iter().map(|r| &r.permission).collect();
    // Only additions need to know their bindings as sets: most runs have none.
    let additions: Vec<(&Permission, BTreeSet<&BindingId>)> = merged
        .iter()
        .filter(|(p, _)| !present.contains(p))
        .map(|(p, bindings)| (p, bindings.iter().copied().collect()))
        .collect();

    // Admit bindings in a stable order while the peak (present + additions) fits.
    let mut peak = [0usize; 2];
    for rule in observed {
        add(&mut peak, &rule.permission);
    }
    let mut wants: BTreeMap<&BindingId, Vec<&Permission>> = BTreeMap::new();
    for (permission, bindings) in &additions {
        for binding in bindings {
            wants.entry(binding).or_default().push(permission);
        }
    }
    let mut admitted: BTreeSet<&Permission> = BTreeSet::new();
    let mut blocked: BTreeSet<&BindingId> = BTreeSet::new();
    for (binding, permissions) in wants {
        let mut trial = peak;
        let new: Vec<&Permission> = permissions
            .into_iter()
            .filter(|p| !admitted.contains(p))
            .collect();
        for permission in &new {
            add(&mut trial, permission);
        }
        if trial.iter().all(|n| *n <= input.max_rules_per_family) {
            peak = trial;
            admitted.extend(new);
        } else {
            blocked.insert(binding);
            out.blocked.push(QuotaBlocked {
                group: group.clone(),
                binding: binding.clone(),
                permissions: new.into_iter().cloned().collect(),
                reason: format!(
                    "security group {group} would hold {} IPv4 / {} IPv6 inbound rules, over its limit of {} per family; none of this binding's new rules is written",
                    trial[0], trial[1], input.max_rules_per_family
                ),
            });
        }
    }
    for (permission, bindings) in &additions {
        if admitted.contains(permission) {
            out.authorize.push(Authorize {
                group: group.clone(),
                permission: (*permission).clone(),
                bindings: bindings.iter().map(|b| (*b).clone()).collect(),
            });
        }
    }

    // What must stay: every desired rule, and last time's rules of bindings that failed or
    // were blocked now (their new rules did not land, so their old ones still carry traffic).
    let keep_from: BTreeSet<&BindingId> = input
        .failed
        .iter()
        .copied()
        .chain(blocked.iter().copied())
        .collect();
    let kept: Vec<&Permission> = keep_from
        .into_iter()
        .flat_map(|b| input.previous.get(b).into_iter().flatten())
        .filter(|r| &r.group == group)
        .map(|r| &r.permission)
        .collect();
    // A rule stays if it is desired, or if it carries (possibly merged) a kept rule.
    let keeps =
        |rule: &Permission| merged.contains_key(rule) || kept.iter().any(|k| rule.covers(k));
    // The guardrail: world-open ingress on ports we manage, reported, revoked only on opt-in.
    for rule in observed
        .iter()
        .filter(|r| r.owner.as_deref() != Some(input.cluster))
    {
        let world = matches!(&rule.permission.peer, Peer::Cidr(net) if net.prefix_len() == 0);
        if world && merged.keys().any(|m| overlaps(m, &rule.permission)) {
            let finding = Revoke {
                group: group.clone(),
                rule_id: rule.rule_id.clone(),
                permission: rule.permission.clone(),
                held_for: BTreeSet::new(),
            };
            if input.revoke_world_open {
                out.revoke.push(finding.clone());
            }
            out.world_open.push(finding);
        }
    }
    for rule in observed {
        if rule.owner.as_deref() == Some(input.cluster) && !keeps(&rule.permission) {
            let held_for = input
                .previous
                .iter()
                .filter(|(_, rules)| {
                    rules
                        .iter()
                        .any(|r| &r.group == group && rule.permission.covers(&r.permission))
                })
                .map(|(binding, _)| (*binding).clone())
                .collect();
            out.revoke.push(Revoke {
                group: group.clone(),
                rule_id: rule.rule_id.clone(),
                permission: rule.permission.clone(),
                held_for,
            });
        }
    }
}

/// Whether two rules admit some of the same traffic (same protocol, or all, and shared ports).
fn overlaps(a: &Permission, b: &Permission) -> bool {
    let protocols =
        a.protocol == b.protocol || a.protocol == Protocol::All || b.protocol == Protocol::All;
    protocols && a.ports.from <= b.ports.to && b.ports.from <= a.ports.to
}

fn add(count: &mut [usize; 2], permission: &Permission) {
    for (n, counts) in count.iter_mut().zip(permission.counts_against()) {
        *n += usize::from(counts);
    }
}

/// Merges the port ranges of one group's desired rules per (protocol, peer) where they overlap
/// or touch, keeping which bindings each merged rule serves (in no order, possibly repeated).
fn merge<'a>(desired: &[&'a DesiredRule]) -> BTreeMap<Permission, Vec<&'a BindingId>> {
    let mut by_key: BTreeMap<(Protocol, &Peer), Vec<(PortRange, &'a BindingId)>> = BTreeMap::new();
    for rule in desired {
        by_key
            .entry((rule.permission.protocol, &rule.permission.peer))
            .or_default()
            .push((rule.permission.ports, &rule.binding));
    }
    let mut merged = BTreeMap::new();
    for ((protocol, peer), mut ranges) in by_key {
        // Only the ranges need an order.
        ranges.sort_unstable_by_key(|(range, _)| *range);
        // Runs of ranges that overlap or touch, each with the bindings it serves.
        let mut runs: Vec<(PortRange, Vec<&BindingId>)> = Vec::new();
        for (range, binding) in ranges {
            match runs.last_mut() {
                Some((open, bindings)) if u32::from(range.from) <= u32::from(open.to) + 1 => {
                    open.to = open.to.max(range.to);
                    bindings.push(binding);
                }
                _ => runs.push((range, vec![binding])),
            }
        }
        for (ports, bindings) in runs {
            merged.insert(
                Permission {
                    protocol,
                    ports,
                    peer: peer.clone(),
                },
                bindings,
            );
        }
    }
    merged
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
