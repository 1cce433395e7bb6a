//! The last status of each binding, as the state table stores it (see [`crate::pure::status`]
//! for how it is worked out).

use crate::model::BindingId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One binding's standing. `ready` means everything it declares is in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingStatus {
    pub binding: BindingId,
    /// `metadata.generation` of the resource this status describes (none for tagged target
    /// groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub ready: bool,
    pub reason: StatusReason,
    pub message: String,
    /// When the stored status was written (RFC 3339), as read back from the state table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// One write to a cluster's stored statuses, as a batch of them carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite<'a> {
    Save(&'a BindingStatus),
    /// Removes the stored status of a binding that is gone.
    Forget(&'a BindingId),
}

impl<'a> StatusWrite<'a> {
    pub fn binding(&self) -> &'a BindingId {
        match self {
            Self::Save(status) => &status.binding,
            Self::Forget(binding) => binding,
        }
    }
}

/// Why a binding stands where it does: the Ready condition's `reason`. Its name (one source,
/// [`StatusReason::as_str`], for serde and `Display`) is what the state table stores, `status
/// --output json` prints and the resource shows, so names never change. A stored name this
/// version does not know makes that status malformed: skipped, and rewritten by the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum StatusReason {
    /// Every target and rule it declares is in place.
    Converged,
    /// The binding itself is invalid or cannot be resolved.
    BindingFailed,
    /// Its security-group rules cannot be worked out.
    RulesFailed,
    /// The brake held back a deregistration.
    HeldBack,
    /// Its rules would not fit in the security group's quota.
    RuleQuota,
    /// A change, a rule or its ownership record failed to apply.
    ApplyFailed,
}

impl StatusReason {
    pub const ALL: [Self; 6] = [
        Self::Converged,
        Self::BindingFailed,
        Self::RulesFailed,
        Self::HeldBack,
        Self::RuleQuota,
        Self::ApplyFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "Converged",
            Self::BindingFailed => "BindingFailed",
            Self::RulesFailed => "RulesFailed",
            Self::HeldBack => "HeldBack",
            Self::RuleQuota => "RuleQuota",
            Self::ApplyFailed => "ApplyFailed",
        }
    }
}

impl fmt::Display for StatusReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status reason {0:?}")]
pub struct UnknownReason(pub String);

impl From<StatusReason> for &'static str {
    fn from(reason: StatusReason) -> Self {
        reason.as_str()
    }
}

impl TryFrom<String> for StatusReason {
    type Error = UnknownReason;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl FromStr for StatusReason {
    type Err = UnknownReason;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
            .ok_or_else(|| UnknownReason(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_round_trips_through_its_stored_name_and_an_unknown_name_is_refused() {
        // (stored name, what it reads as)
        let cases: [(&str, Result<StatusReason, UnknownReason>); 9] = [
            ("Converged", Ok(StatusReason::Converged)),
            ("BindingFailed", Ok(StatusReason::BindingFailed)),
            ("RulesFailed", Ok(StatusReason::RulesFailed)),
            ("HeldBack", Ok(StatusReason::HeldBack)),
            ("RuleQuota", Ok(StatusReason::RuleQuota)),
            ("ApplyFailed", Ok(StatusReason::ApplyFailed)),
            ("Pending", Err(UnknownReason("Pending".into()))),
            ("converged", Err(UnknownReason("converged".into()))),
            ("", Err(UnknownReason(String::new()))),
        ];
        for (name, expected) in cases {
            assert_eq!(name.parse::<StatusReason>(), expected, "{name:?}");
            let json = serde_json::to_string(name).expect("a JSON string");
            let from_json = serde_json::from_str::<StatusReason>(&json);
            assert_eq!(from_json.ok(), expected.clone().ok(), "JSON {json}");
            if let Ok(reason) = expected {
                assert_eq!(reason.to_string(), name);
                assert_eq!(serde_json::to_string(&reason).ok(), Some(json));
            }
        }
    }

    #[test]
    fn a_status_document_keeps_its_shape_and_one_with_an_unknown_reason_does_not_read() {
        let status = BindingStatus {
            binding: BindingId::resource("default", "web"),
            observed_generation: Some(3),
            ready: false,
            reason: StatusReason::HeldBack,
            message: "brake".into(),
            since: None,
        };
        let document = serde_json::to_value(&status).expect("serializes");
        assert_eq!(document["reason"], "HeldBack");
        assert_eq!(
            serde_json::from_value::<BindingStatus>(document.clone()).ok(),
            Some(status)
        );
        let mut unknown = document;
        unknown["reason"] = "Pending".into();
        assert!(serde_json::from_value::<BindingStatus>(unknown).is_err());
    }
}
