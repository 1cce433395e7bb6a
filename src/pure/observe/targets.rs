//! The targets of every target group a binding or a record points at, read fresh each run.

use crate::Error;
use crate::model::TargetGroupRef;
use crate::model::aws::ObservedTarget;
use crate::pure::plan::{BindingState, Observation};
use crate::state::ownership::OwnershipRecord;
use std::collections::BTreeSet;

/// Every target group bound by a ready binding or named by a record.
pub fn target_groups_to_read(
    records: &[OwnershipRecord],
    bindings: &[BindingState],
) -> BTreeSet<TargetGroupRef> {
    let mut groups: BTreeSet<TargetGroupRef> =
        records.iter().map(|r| r.target_group.clone()).collect();
    groups.extend(bindings.iter().filter_map(|b| match b {
        BindingState::Ready { binding, .. } => Some(binding.target_group.clone()),
        BindingState::Failed { .. } => None,
    }));
    groups
}

/// What a target-health read says: the targets, a group that is gone, or nothing known.
pub fn observation_of(read: Result<Vec<ObservedTarget>, Error>) -> Observation {
    match read {
        Ok(targets) => Observation::Targets(targets),
        Err(Error::TargetGroupNotFound { .. }) => Observation::NotFound,
        Err(error) => Observation::Unreadable(std::sync::Arc::new(error)),
    }
}
