//! Readiness gates: the condition of each gated pod, set from its target's health as read this
//! run. `True` only for a `healthy` target; `False`, with ELB's reason, for anything else; and
//! nothing at all when the health could not be read.

use super::{BindingPlan, GateChange, GatesWaiting, Note, Observation, Plan};
use crate::model::BindingId;
use crate::model::aws::ObservedTarget;
use crate::model::cluster::GateCondition;
use crate::pure::binding::ResolvedBinding;
use crate::pure::desire::{DesiredTargets, GatedTarget};
use std::sync::Arc;

/// The reason a gate gives while its target is not registered yet (none is read back).
pub const REGISTERING_REASON: &str = "Elb.RegistrationInProgress";
/// How many pods a note names before it counts the rest.
const PODS_NAMED: usize = 5;

/// Plans the binding's gate conditions from what its target group holds. Unreadable health
/// (or a binding that failed) changes no condition, but the pods still wait.
pub(super) fn plan_gates(
    binding: &ResolvedBinding,
    desired: &DesiredTargets,
    observation: Option<&Observation>,
    out: &mut BindingPlan,
) {
    if desired.gates.is_empty() {
        return;
    }
    let observed = match observation {
        Some(Observation::Targets(targets)) if out.failure.is_none() => Some(targets),
        _ => None,
    };
    let condition_type = binding.readiness_gate();
    let mut waiting = 0;
    for gated in &desired.gates {
        let Some(observed) = observed else {
            waiting += usize::from(!is_true(gated.condition.as_ref()));
            continue;
        };
        let wanted = condition_of(binding, gated, observed);
        waiting += usize::from(!is_true(Some(&wanted)));
        if gated.condition.as_ref() == Some(&wanted) {
            continue;
        }
        out.gates.push(GateChange {
            binding: binding.binding.id.clone(),
            pod: gated.pod.to_string(),
            condition_type: condition_type.clone(),
            target: gated.target.clone(),
            condition: wanted,
            previous: gated.condition.as_ref().map(|c| c.status.clone()),
        });
    }
    if waiting > 0 {
        let service = &binding.binding.service;
        out.gates_waiting = Some(GatesWaiting {
            service: format!("{}/{}", service.namespace, service.name),
            pods: waiting,
        });
    }
}

fn is_true(condition: Option<&GateCondition>) -> bool {
    condition.is_some_and(|c| c.status == "True")
}

/// The condition a gated pod's target calls for.
fn condition_of(
    binding: &ResolvedBinding,
    gated: &GatedTarget,
    observed: &[ObservedTarget],
) -> GateCondition {
    // A target deregistered and registered again may show twice: the live entry counts.
    let entry = observed
        .iter()
        .filter(|t| t.target == gated.target)
        .min_by_key(|t| t.is_draining());
    match entry {
        Some(target) if target.is_healthy() => GateCondition {
            status: "True".into(),
            reason: None,
            message: None,
        },
        Some(target) => GateCondition {
            status: "False".into(),
            reason: target.reason().map(str::to_string),
            message: Some(target.description().map_or_else(
                || {
                    format!(
                        "target {} is {} in {}",
                        gated.target,
                        target.state,
                        binding.target_group.short_name()
                    )
                },
                str::to_string,
            )),
        },
        None => GateCondition {
            status: "False".into(),
            reason: Some(REGISTERING_REASON.into()),
            message: Some(format!(
                "registering target {} in {}",
                gated.target,
                binding.target_group.short_name()
            )),
        },
    }
}

/// The note for pods that list an instance binding's gate: they are left alone.
pub(super) fn ungateable_note(binding: &ResolvedBinding, pods: &[Arc<str>]) -> Option<Note> {
    if pods.is_empty() {
        return None;
    }
    let mut named: Vec<&str> = pods.iter().take(PODS_NAMED).map(|p| &**p).collect();
    let more = pods.len().saturating_sub(PODS_NAMED);
    let and_more = format!("and {more} more");
    if more > 0 {
        named.push(&and_more);
    }
    Some(Note {
        binding: binding.binding.id.clone(),
        message: format!(
            "readiness gate {} is listed by pod(s) {}, but target group {} takes instance targets: gates need ip targets, so these pods are left alone and stay not Ready until the gate is removed from them",
            binding.readiness_gate(),
            named.join(", "),
            binding.target_group_name
        ),
    })
}

impl Plan {
    /// Notes, on each binding with gates to set, that the run's identity may not set them.
    pub fn note_gates_forbidden(&mut self, why: &str) {
        let bindings: Vec<BindingId> = self
            .bindings
            .values()
            .filter(|b| !b.gates.is_empty())
            .map(|b| b.binding.clone())
            .collect();
        self.notes.extend(bindings.into_iter().map(|binding| Note {
            binding,
            message: format!(
                "readiness gates cannot be set ({why}): grant `patch` on `pods/status`; its targets are registered all the same"
            ),
        }));
    }
}

#[cfg(test)]
#[path = "gates_tests.rs"]
mod tests;
