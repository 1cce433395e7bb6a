//! apply: executes a plan through the ports, binding by binding, in make-before-break order —
//! record ownership, register, then deregister — in batches ELB accepts. It never decides:
//! everything it does is in the plan, and a failure only stops the rest of its own binding.

use crate::error::Error;
use crate::model::{BindingId, TargetGroupRef};
use crate::plan::{Plan, RecordAfter, TargetAction, TargetChange};
use crate::ports::{OwnershipStore, Registration, TargetRegistry};
use crate::report::{FailedChange, Report};
use std::collections::BTreeMap;

/// The most targets one RegisterTargets or DeregisterTargets call takes.
pub const BATCH_SIZE: usize = 200;

pub async fn apply(
    plan: &Plan,
    registry: &impl TargetRegistry,
    store: &impl OwnershipStore,
) -> Report {
    let mut report = Report::new(&plan.cluster);
    for binding in plan.bindings_with_work() {
        apply_binding(plan, binding, registry, store, &mut report).await;
    }
    report
}

async fn apply_binding(
    plan: &Plan,
    binding: &BindingId,
    registry: &impl TargetRegistry,
    store: &impl OwnershipStore,
    report: &mut Report,
) {
    let changes: Vec<&TargetChange> = plan
        .changes
        .iter()
        .filter(|c| &c.binding == binding)
        .collect();
    let records: Vec<_> = plan
        .records
        .iter()
        .filter(|r| &r.binding == binding)
        .collect();
    let failed_before = report.failed.len();

    for record in records.iter().filter_map(|r| r.before.as_ref()) {
        if let Err(error) = store.save(&plan.cluster, record).await {
            let why = format!("not attempted: {}", error.chain());
            report.fail_all(&changes, &why);
            report.record_errors.push((binding.clone(), error.chain()));
            return;
        }
    }

    for (group, batch) in batches(&changes, TargetAction::RegisterTargets) {
        let targets: Vec<Registration> = batch
            .iter()
            .map(|c| Registration {
                target: c.target.clone(),
                availability_zone: c.availability_zone.clone(),
            })
            .collect();
        match registry.register_targets(group, &targets).await {
            Ok(()) => report.done.extend(batch.iter().map(|c| (*c).clone())),
            Err(error) => report.fail_all(&batch, &error.chain()),
        }
    }

    let deregistrations: Vec<&TargetChange> = changes
        .iter()
        .copied()
        .filter(|c| c.action == TargetAction::DeregisterTargets)
        .collect();
    if report.failed.len() > failed_before {
        // Make before break: never remove old targets when the new ones did not land.
        report.fail_all(
            &deregistrations,
            "not attempted: registering this binding's new targets failed",
        );
        return;
    }
    for (group, batch) in batches(&changes, TargetAction::DeregisterTargets) {
        let targets: Vec<_> = batch.iter().map(|c| c.target.clone()).collect();
        match registry.deregister_targets(group, &targets).await {
            // A group that is gone holds no targets: the deregistration is done.
            Ok(()) | Err(Error::TargetGroupNotFound { .. }) => {
                report.done.extend(batch.iter().map(|c| (*c).clone()))
            }
            Err(error) => report.fail_all(&batch, &error.chain()),
        }
    }
    if report.failed.len() > failed_before {
        return;
    }

    for record in records {
        let outcome = match &record.after {
            RecordAfter::Keep => Ok(()),
            RecordAfter::Save(r) => store.save(&plan.cluster, r).await,
            RecordAfter::Forget(r) => store.forget(&plan.cluster, r).await,
        };
        if let Err(error) = outcome {
            report.record_errors.push((binding.clone(), error.chain()));
        }
    }
}

/// The binding's changes of one action, grouped by target group and cut to [`BATCH_SIZE`].
fn batches<'a>(
    changes: &[&'a TargetChange],
    action: TargetAction,
) -> Vec<(&'a TargetGroupRef, Vec<&'a TargetChange>)> {
    let mut by_group: BTreeMap<&TargetGroupRef, Vec<&TargetChange>> = BTreeMap::new();
    for change in changes.iter().filter(|c| c.action == action) {
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

impl Report {
    fn fail_all(&mut self, changes: &[&TargetChange], why: &str) {
        self.failed.extend(changes.iter().map(|c| FailedChange {
            change: (*c).clone(),
            error: why.to_string(),
        }));
    }
}

#[cfg(test)]
mod tests;
