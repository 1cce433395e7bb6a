//! apply: executes a plan through the ports, binding by binding, in make-before-break order —
//! record ownership, register, then deregister — in batches ELB accepts. It never decides:
//! everything it does is in the plan, and a failure only stops the rest of its own binding.
//! Every mutating batch first renews the cluster's lease: a run that lost it stops writing.

use crate::error::Error;
use crate::model::Permission;
use crate::model::SecurityGroupId;
use crate::model::{BindingId, TargetGroupRef};
use crate::ports::{FirewallRules, OwnershipStore, Ports, Registration, TargetRegistry};
use crate::pure::plan::rules::{Authorize, Revoke};
use crate::pure::plan::{BindingPlan, Plan, RecordAfter, TargetChange};
use crate::pure::report::{BindingReport, FailedRule, Report, RuleOutcome};
use crate::state::lease::LeaseTerms;
use std::collections::{BTreeMap, BTreeSet};

mod gates;
pub use gates::set_gates;

/// The most targets one RegisterTargets or DeregisterTargets call takes.
pub const BATCH_SIZE: usize = 200;

/// Writes only while the cluster's lease is ours (always, without one: a dry run or a test).
struct Gate<'a, S> {
    store: &'a S,
    cluster: &'a str,
    lease: Option<&'a LeaseTerms>,
    /// Why writing stopped, once it has.
    closed: Option<String>,
}

impl<S: OwnershipStore> Gate<'_, S> {
    /// Renews the lease before a mutating batch; `Err(why)` when the batch must not run.
    async fn pass(&mut self) -> Result<(), String> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        let Some(terms) = self.lease else {
            return Ok(());
        };
        let why = match self.store.extend_lease(self.cluster, terms).await {
            Ok(true) => return Ok(()),
            Ok(false) => "not attempted: the cluster's lease passed to another run".to_string(),
            Err(error) => format!("not attempted: {}", error.chain()),
        };
        self.closed = Some(why.clone());
        Err(why)
    }
}

pub async fn apply<R, N, F, S>(
    plan: &Plan,
    ports: &Ports<'_, R, N, F, S>,
    lease: Option<&LeaseTerms>,
) -> Report
where
    R: TargetRegistry,
    F: FirewallRules,
    S: OwnershipStore,
{
    let mut report = Report::new(&plan.cluster);
    let mut gate = Gate {
        store: ports.store,
        cluster: &plan.cluster,
        lease,
        closed: None,
    };
    // New rules first, so new targets are reachable the moment they register.
    let authorized = authorize_rules(plan, ports.firewall, &mut gate).await;
    let rules_failed: BTreeSet<&BindingId> =
        authorized.failed.iter().flat_map(|f| &f.bindings).collect();
    // Bindings whose targets did not all move: their old targets still need their old rules.
    let mut unmoved: BTreeSet<BindingId> = BTreeSet::new();
    for part in plan.bindings.values().filter(|b| b.has_aws_writes()) {
        let result = apply_binding(
            part,
            ports.registry,
            &mut gate,
            rules_failed.contains(&part.binding),
        )
        .await;
        if !result.moved() {
            unmoved.insert(part.binding.clone());
        }
        report.bindings.insert(part.binding.clone(), result);
    }
    let revoked = revoke_rules(
        plan,
        ports.firewall,
        &authorized.incomplete,
        &unmoved,
        &mut gate,
    )
    .await;
    for rules in [authorized, revoked] {
        report.rules_done.extend(rules.done);
        report.rules_failed.extend(rules.failed);
    }
    report.lease_lost = gate.closed;
    report
}

/// What one pass over the rules did; `incomplete` names the groups where something did not
/// land (nothing is revoked there).
#[derive(Default)]
struct RuleResults {
    done: Vec<RuleOutcome>,
    failed: Vec<FailedRule>,
    incomplete: BTreeSet<SecurityGroupId>,
}

/// Authorizes each group's new rules in one call; when that fails, binding by binding, so one
/// binding's bad rule (a peer group that vanished, say) does not keep the others' out.
async fn authorize_rules<S: OwnershipStore>(
    plan: &Plan,
    firewall: &impl FirewallRules,
    gate: &mut Gate<'_, S>,
) -> RuleResults {
    let mut by_group: BTreeMap<&SecurityGroupId, Vec<&Authorize>> = BTreeMap::new();
    for rule in &plan.rules.authorize {
        by_group.entry(&rule.group).or_default().push(rule);
    }
    let mut out = RuleResults::default();
    for (group, rules) in by_group {
        if let Err(why) = gate.pass().await {
            out.incomplete.insert(group.clone());
            out.failed
                .extend(rules.iter().map(|r| FailedRule::of(r, group, why.clone())));
            continue;
        }
        let permissions: Vec<Permission> = rules.iter().map(|r| r.permission.clone()).collect();
        if firewall
            .authorize_ingress(group, &permissions, &plan.cluster)
            .await
            .is_ok()
        {
            out.done
                .extend(rules.iter().map(|r| RuleOutcome::authorized(r)));
            continue;
        }
        let bindings: BTreeSet<&BindingId> = rules.iter().flat_map(|r| r.bindings.iter()).collect();
        let mut landed: BTreeSet<&Permission> = BTreeSet::new();
        for binding in bindings {
            let own: Vec<&Authorize> = rules
                .iter()
                .copied()
                .filter(|r| r.bindings.contains(binding) && !landed.contains(&r.permission))
                .collect();
            if own.is_empty() {
                continue;
            }
            let permissions: Vec<Permission> = own.iter().map(|r| r.permission.clone()).collect();
            if let Err(why) = gate.pass().await {
                out.incomplete.insert(group.clone());
                out.failed
                    .extend(own.iter().map(|r| FailedRule::of(r, group, why.clone())));
                continue;
            }
            match firewall
                .authorize_ingress(group, &permissions, &plan.cluster)
                .await
            {
                Ok(()) => {
                    landed.extend(own.iter().map(|r| &r.permission));
                    out.done
                        .extend(own.iter().map(|r| RuleOutcome::authorized(r)));
                }
                Err(error) => {
                    out.incomplete.insert(group.clone());
                    out.failed.extend(own.iter().map(|r| FailedRule {
                        group: group.clone(),
                        permission: r.permission.clone(),
                        bindings: BTreeSet::from([binding.clone()]),
                        error: error.chain(),
                    }));
                }
            }
        }
    }
    out
}

/// Revokes our stale rules by id, group by group, where every authorization landed — but not
/// a rule that a binding in `unmoved` had last time.
async fn revoke_rules<S: OwnershipStore>(
    plan: &Plan,
    firewall: &impl FirewallRules,
    incomplete: &BTreeSet<SecurityGroupId>,
    unmoved: &BTreeSet<BindingId>,
    gate: &mut Gate<'_, S>,
) -> RuleResults {
    let mut out = RuleResults::default();
    let mut by_group: BTreeMap<&SecurityGroupId, Vec<&Revoke>> = BTreeMap::new();
    for rule in &plan.rules.revoke {
        if let Some(binding) = rule.held_for.intersection(unmoved).next() {
            out.failed.push(FailedRule {
                group: rule.group.clone(),
                permission: rule.permission.clone(),
                bindings: rule.held_for.clone(),
                error: format!(
                    "not attempted: the targets of {binding} did not all move, and its old ones need this rule (make before break)"
                ),
            });
            continue;
        }
        by_group.entry(&rule.group).or_default().push(rule);
    }
    for (group, rules) in by_group {
        if incomplete.contains(group) {
            out.failed.extend(rules.iter().map(|r| {
                FailedRule {
                    group: group.clone(),
                    permission: r.permission.clone(),
                    bindings: BTreeSet::new(),
                    error:
                        "not attempted: an authorization on this group failed (make before break)"
                            .into(),
                }
            }));
            continue;
        }
        let ids: Vec<String> = rules.iter().map(|r| r.rule_id.clone()).collect();
        let revoked = match gate.pass().await {
            Ok(()) => firewall
                .revoke_ingress(group, &ids)
                .await
                .map_err(|e| e.chain()),
            Err(why) => Err(why),
        };
        match revoked {
            Ok(()) => out
                .done
                .extend(rules.iter().map(|r| RuleOutcome::revoked(r))),
            Err(error) => out.failed.extend(rules.iter().map(|r| FailedRule {
                group: group.clone(),
                permission: r.permission.clone(),
                bindings: BTreeSet::new(),
                error: error.clone(),
            })),
        }
    }
    out
}

/// One binding's part of the plan: records before, registrations, deregistrations, records
/// after — each step only once the one before it fully landed.
async fn apply_binding<S: OwnershipStore>(
    part: &BindingPlan,
    registry: &impl TargetRegistry,
    gate: &mut Gate<'_, S>,
    rules_failed: bool,
) -> BindingReport {
    let (store, cluster) = (gate.store, gate.cluster);
    let mut out = BindingReport::new(&part.binding);

    let befores: Vec<_> = part
        .records
        .iter()
        .filter_map(|r| r.before.as_ref())
        .collect();
    if !befores.is_empty()
        && let Err(why) = gate.pass().await
    {
        out.fail_all(part.changes(), &why);
        return out;
    }
    for record in befores {
        if let Err(error) = store.save(cluster, record).await {
            let why = format!("not attempted: {}", error.chain());
            out.fail_all(part.changes(), &why);
            out.record_errors.push(error.chain());
            return out;
        }
    }

    for (group, batch) in batches(&part.registrations) {
        let targets: Vec<Registration> = batch
            .iter()
            .map(|c| Registration {
                target: c.target.clone(),
                availability_zone: c.availability_zone.clone(),
            })
            .collect();
        if let Err(why) = gate.pass().await {
            out.fail_all(batch.iter().copied(), &why);
            continue;
        }
        match registry.register_targets(group, &targets).await {
            Ok(()) => out.done.extend(batch.iter().map(|c| (*c).clone())),
            Err(error) => out.fail_all(batch.iter().copied(), &error.chain()),
        }
    }
    if !out.failed.is_empty() {
        // Make before break: never remove old targets when the new ones did not land.
        out.fail_all(
            &part.deregistrations,
            "not attempted: registering this binding's new targets failed",
        );
        return out;
    }
    for (group, batch) in batches(&part.deregistrations) {
        let targets: Vec<_> = batch.iter().map(|c| c.target.clone()).collect();
        if let Err(why) = gate.pass().await {
            out.fail_all(batch.iter().copied(), &why);
            continue;
        }
        match registry.deregister_targets(group, &targets).await {
            // A group that is gone holds no targets: the deregistration is done.
            Ok(()) | Err(Error::TargetGroupNotFound { .. }) => {
                out.done.extend(batch.iter().map(|c| (*c).clone()))
            }
            Err(error) => out.fail_all(batch.iter().copied(), &error.chain()),
        }
    }
    // The record says which rules the binding has: not the new ones if they did not land.
    if !out.failed.is_empty() || rules_failed {
        return out;
    }

    let writes_records = part
        .records
        .iter()
        .any(|r| !matches!(r.after, RecordAfter::Keep));
    if writes_records && let Err(why) = gate.pass().await {
        out.record_errors.push(why);
        return out;
    }
    for record in &part.records {
        let outcome = match &record.after {
            RecordAfter::Keep => Ok(()),
            RecordAfter::Save(r) => store.save(cluster, r).await,
            RecordAfter::Forget(r) => store.forget(cluster, r).await,
        };
        if let Err(error) = outcome {
            out.record_errors.push(error.chain());
        }
    }
    out
}

/// Changes of one action, grouped by target group and cut to [`BATCH_SIZE`].
fn batches(changes: &[TargetChange]) -> Vec<(&TargetGroupRef, Vec<&TargetChange>)> {
    let mut by_group: BTreeMap<&TargetGroupRef, Vec<&TargetChange>> = BTreeMap::new();
    for change in changes {
        by_group
            .entry(&change.target_group)
            .or_default()
            .push(change);
    }
    by_group
        .into_iter()
        .flat_map(|(group, changes)| {
            changes
                .chunks(BATCH_SIZE)
                .map(|chunk| (group, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests;
