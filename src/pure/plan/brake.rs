//! The brake: a binding whose desired targets all vanished while its target group still holds
//! some is far more often a broken rollout, a node outage or a bad read than an intent to take
//! a service offline. Emptying the group would turn a partial failure into a full outage, so
//! the last targets are held back — visibly, in the plan — unless the binding opts in with
//! [`crate::pure::binding::ALLOW_EMPTY_KEY`] (scaling to zero on purpose).

use crate::pure::binding::{ALLOW_EMPTY_KEY, ResolvedBinding};
use crate::pure::desire::DesiredTargets;

/// `Some(reason)` when the stale targets must stay.
pub(super) fn hold_back(
    binding: &ResolvedBinding,
    desired: &DesiredTargets,
    stale: usize,
) -> Option<String> {
    if stale == 0 || !desired.targets.is_empty() || binding.binding.allow_empty {
        return None;
    }
    let opt_in = if binding.binding.id.is_resource() {
        format!("annotate the TargetGroupBinding {ALLOW_EMPTY_KEY}=true")
    } else {
        format!("tag the target group {ALLOW_EMPTY_KEY}=true")
    };
    Some(format!(
        "brake: would deregister all {stale} remaining target(s) while Service {}/{} still exists ({}); to empty the target group on purpose, {opt_in}",
        binding.binding.service.namespace, binding.binding.service.name, desired.evidence
    ))
}
