//! The last status of each binding, as the state table stores it (see [`crate::pure::status`]
//! for how it is worked out).

use crate::model::BindingId;
use serde::{Deserialize, Serialize};

/// One binding's standing. `ready` means everything it declares is in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingStatus {
    pub binding: BindingId,
    /// `metadata.generation` of the resource this status describes (none for tagged target
    /// groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub ready: bool,
    /// `Converged`, `BindingFailed`, `RulesFailed`, `HeldBack`, `RuleQuota` or `ApplyFailed`.
    pub reason: String,
    pub message: String,
    /// When the stored status was written (RFC 3339), as read back from the state table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}
