//! What AWS told us, as plain values. The AWS adapters fill these; plan reads them.

use crate::model::{IpFamily, Permission, SecurityGroupId, Target, TargetGroupArn, TargetType};
use serde::Serialize;
use std::collections::BTreeMap;

/// A target group as `DescribeTargetGroups` (and `DescribeTags`) describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroupInfo {
    pub arn: TargetGroupArn,
    pub name: String,
    pub target_type: Option<TargetType>,
    /// `None` for target-type values we do not bind (`lambda`, `alb`).
    pub raw_target_type: String,
    pub ip_family: IpFamily,
    pub vpc_id: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<i32>,
    pub load_balancer_arns: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// `HTTP`, `HTTPS` or `TCP`: health checks always arrive over TCP.
    pub health_check_protocol: Option<String>,
    /// A port number, or `traffic-port` (each target's own port).
    pub health_check_port: Option<String>,
}

/// A load balancer a target group is attached to, and where its traffic comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancerInfo {
    pub arn: String,
    /// `application`, `network` or `gateway`.
    pub kind: String,
    pub security_groups: Vec<SecurityGroupId>,
    pub subnets: Vec<String>,
}

/// One target as `DescribeTargetHealth` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedTarget {
    pub target: Target,
    pub availability_zone: Option<String>,
    pub state: TargetState,
    /// Why it is not healthy, as ELB puts it; none when healthy. Boxed: a run reads tens of
    /// thousands of targets, and most have nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<Box<HealthReason>>,
}

/// A target's state as ELB names it: a word, not a string, since a run reads tens of
/// thousands of targets and nearly all are in one of a few states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
    UnhealthyDraining,
    /// A state this version does not know, as ELB wrote it.
    Other(Box<str>),
}

impl TargetState {
    const KNOWN: [(Self, &'static str); 7] = [
        (Self::Initial, "initial"),
        (Self::Healthy, "healthy"),
        (Self::Unhealthy, "unhealthy"),
        (Self::Unused, "unused"),
        (Self::Draining, "draining"),
        (Self::Unavailable, "unavailable"),
        (Self::UnhealthyDraining, "unhealthy.draining"),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(text) => text,
            known => Self::KNOWN
                .iter()
                .find(|(state, _)| state == known)
                .map_or("", |(_, text)| text),
        }
    }
}

impl From<&str> for TargetState {
    fn from(text: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, known)| *known == text)
            .map_or_else(|| Self::Other(text.into()), |(state, _)| state.clone())
    }
}

impl std::fmt::Display for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TargetState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// ELB's reason for a target's state (`Elb.InitialHealthChecking`, …) and its description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReason {
    pub reason: Option<String>,
    pub description: Option<String>,
}

impl HealthReason {
    /// `None` when ELB says nothing.
    pub fn of(reason: Option<String>, description: Option<String>) -> Option<Box<Self>> {
        (reason.is_some() || description.is_some()).then(|| {
            Box::new(Self {
                reason,
                description,
            })
        })
    }
}

impl ObservedTarget {
    /// Draining targets are on their way out; they count neither as present nor as stale.
    pub fn is_draining(&self) -> bool {
        matches!(
            self.state,
            TargetState::Draining | TargetState::UnhealthyDraining
        )
    }

    pub fn reason(&self) -> Option<&str> {
        self.why.as_ref()?.reason.as_deref()
    }

    pub fn description(&self) -> Option<&str> {
        self.why.as_ref()?.description.as_deref()
    }

    /// Whether the load balancer sends it traffic.
    pub fn is_healthy(&self) -> bool {
        self.state == TargetState::Healthy
    }
}

/// A rule as EC2 reports it, one peer per rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedRule {
    pub rule_id: String,
    pub permission: Permission,
    /// The cluster named by our ownership marker; `None` for anyone else's rule.
    pub owner: Option<String>,
}
