//! Ownership records: which bindings exist and which targets each one registered.
//! They live in the state table so that a binding that disappears can be cleaned up, and so that a
//! multi-cluster target group only ever loses the targets this cluster put there.

use crate::model::{BindingId, GroupRule, Target, TargetGroupRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What one binding registered in one target group. A binding that moved to another target
/// group keeps its old record until the old targets are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipRecord {
    pub binding: BindingId,
    pub target_group: TargetGroupRef,
    pub multi_cluster: bool,
    pub targets: BTreeSet<Target>,
    /// The security-group rules the binding wanted when last applied: kept while it fails.
    #[serde(default)]
    pub rules: BTreeSet<GroupRule>,
}

/// One write to a cluster's ownership records, as a batch of them carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite<'a> {
    Save(&'a OwnershipRecord),
    /// Removes the record of `binding` for `target_group` (the rest of it is not compared).
    Forget(&'a OwnershipRecord),
}

impl<'a> RecordWrite<'a> {
    pub fn record(&self) -> &'a OwnershipRecord {
        match self {
            Self::Save(record) | Self::Forget(record) => record,
        }
    }
}
