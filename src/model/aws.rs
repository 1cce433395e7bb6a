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
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`, …
    pub state: String,
    /// Why it is not healthy, as ELB puts it; none when healthy. Boxed: a run reads tens of
    /// thousands of targets, and most have nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<Box<HealthReason>>,
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
        self.state == "draining" || self.state == "unhealthy.draining"
    }

    pub fn reason(&self) -> Option<&str> {
        self.why.as_ref()?.reason.as_deref()
    }

    pub fn description(&self) -> Option<&str> {
        self.why.as_ref()?.description.as_deref()
    }

    /// Whether the load balancer sends it traffic.
    pub fn is_healthy(&self) -> bool {
        self.state == "healthy"
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
