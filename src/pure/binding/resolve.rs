//! Checks a binding against the target group it names and fills in what the spec left to it
//! (target type, IP family, VPC), as the reference controller's defaulting webhook does.

use super::declared::{Binding, TargetGroupSelector};
use super::error::BindingError;
use super::networking::Networking;
use super::port::PortRef;
use crate::model::aws::TargetGroupInfo;
use crate::model::{BindingSource, IpFamily, TargetGroupRef, TargetType};
use serde::Serialize;

/// A binding whose target group exists and agrees with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedBinding {
    pub binding: Binding,
    pub target_group: TargetGroupRef,
    pub target_group_name: String,
    pub target_type: TargetType,
    pub ip_family: IpFamily,
    pub vpc_id: Option<String>,
    /// What the target group says about traffic and health checks.
    pub traffic: Traffic,
}

/// A target group's protocol, health check and load balancers: what rules must admit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// `HTTP`, `TCP`, `UDP`, `TCP_UDP`, …
    pub protocol: Option<String>,
    pub health_check_protocol: Option<String>,
    pub health_check_port: Option<String>,
    pub load_balancer_arns: Vec<String>,
}

/// The field a target-group problem is reported against.
fn target_group_field(binding: &Binding) -> &'static str {
    match (binding.id.is_resource(), &binding.target_group) {
        (false, _) => "",
        (_, TargetGroupSelector::Arn(_)) => "spec.targetGroupARN",
        (_, TargetGroupSelector::Name(_)) => "spec.targetGroupName",
    }
}

pub fn resolve(
    binding: &Binding,
    target_group: &TargetGroupInfo,
) -> Result<ResolvedBinding, BindingError> {
    let target_type = target_group.target_type.ok_or_else(|| {
        BindingError::new(
            target_group_field(binding),
            format!(
                "target group {} has target type {}; only ip and instance target groups can be bound",
                target_group.name, target_group.raw_target_type
            ),
        )
    })?;
    if let Some(wanted) = binding.target_type.filter(|t| *t != target_type) {
        return Err(BindingError::new(
            "spec.targetType",
            format!(
                "is {wanted} but target group {} has target type {target_type}",
                target_group.name
            ),
        ));
    }
    if let Some(wanted) = binding.ip_family.filter(|f| *f != target_group.ip_family) {
        return Err(BindingError::new(
            "spec.ipAddressType",
            format!(
                "is {wanted} but target group {} is {}",
                target_group.name, target_group.ip_family
            ),
        ));
    }
    if let Some(wanted) = binding
        .vpc_id
        .as_ref()
        .filter(|v| Some(*v) != target_group.vpc_id.as_ref())
    {
        return Err(BindingError::new(
            "spec.vpcID",
            format!(
                "is {wanted} but target group {} is in {}",
                target_group.name,
                target_group.vpc_id.as_deref().unwrap_or("no VPC")
            ),
        ));
    }
    if target_type == TargetType::Ip && binding.node_selector.is_some() {
        return Err(BindingError::new(
            "spec.nodeSelector",
            format!(
                "only applies to instance targets; target group {} takes ip targets",
                target_group.name
            ),
        ));
    }
    if target_type == TargetType::Instance {
        if binding.assume_role.is_some() {
            return Err(BindingError::new(
                "spec.iamRoleArnToAssume",
                "cross-account target groups take ip targets only (ELB cannot register another account's instances)",
            ));
        }
        if let Some(field) = binding.networking.as_ref().and_then(named_port_field) {
            return Err(BindingError::new(
                field,
                "a named port needs ip targets; instance targets need a port number",
            ));
        }
    }
    Ok(ResolvedBinding {
        binding: binding.clone(),
        target_group: TargetGroupRef {
            arn: target_group.arn.clone(),
            assume_role: binding.assume_role.clone(),
        },
        target_group_name: target_group.name.clone(),
        target_type,
        ip_family: target_group.ip_family,
        vpc_id: target_group.vpc_id.clone(),
        traffic: Traffic {
            protocol: target_group.protocol.clone(),
            health_check_protocol: target_group.health_check_protocol.clone(),
            health_check_port: target_group.health_check_port.clone(),
            load_balancer_arns: target_group.load_balancer_arns.clone(),
        },
    })
}

/// The condition-type prefix of a TargetGroupBinding's readiness gate: aws-lbc's, so that pod
/// templates written for it work unchanged.
pub const RESOURCE_GATE_PREFIX: &str = "target-health.elbv2.k8s.aws/";
/// The condition-type prefix of a tagged target group's readiness gate (it has no resource).
pub const TAGS_GATE_PREFIX: &str = "target-health.tgb-reconciler/";

impl ResolvedBinding {
    /// The pod condition type of this binding's readiness gate: a pod that lists it in
    /// `spec.readinessGates` is not Ready until its target is healthy in this target group.
    pub fn readiness_gate(&self) -> String {
        match self.binding.id.source() {
            BindingSource::Resource { name, .. } => format!("{RESOURCE_GATE_PREFIX}{name}"),
            BindingSource::Tags { .. } => format!("{TAGS_GATE_PREFIX}{}", self.target_group_name),
        }
    }
}

fn named_port_field(networking: &Networking) -> Option<String> {
    networking.ingress.iter().enumerate().find_map(|(i, rule)| {
        rule.ports
            .iter()
            .position(|p| matches!(p.port, Some(PortRef::Name(_))))
            .map(|j| format!("spec.networking.ingress[{i}].ports[{j}].port"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssumeRole, BindingId};
    use crate::pure::binding::networking::{IngressRule, Peer, PortRule, Protocol};
    use std::collections::BTreeMap;

    fn target_group(target_type: Option<TargetType>) -> TargetGroupInfo {
        TargetGroupInfo {
            arn: "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/1".into(),
            name: "web".into(),
            target_type,
            raw_target_type: target_type.map_or("lambda".into(), |t| t.to_string()),
            ip_family: IpFamily::Ipv4,
            vpc_id: Some("vpc-0123456789abcdef0".into()),
            protocol: Some("HTTP".into()),
            port: Some(80),
            load_balancer_arns: vec![],
            health_check_protocol: None,
            health_check_port: None,
            tags: BTreeMap::new(),
        }
    }

    fn binding() -> Binding {
        crate::pure::binding::fixtures::binding("web", "arn")
    }

    #[test]
    fn unset_type_family_and_vpc_are_taken_from_the_target_group() {
        let resolved = resolve(&binding(), &target_group(Some(TargetType::Ip))).expect("agrees");
        assert_eq!(resolved.target_type, TargetType::Ip);
        assert_eq!(resolved.ip_family, IpFamily::Ipv4);
        assert_eq!(resolved.vpc_id.as_deref(), Some("vpc-0123456789abcdef0"));
    }

    #[test]
    fn a_readiness_gate_is_named_after_the_resource_or_the_tagged_target_group() {
        let resource = resolve(&binding(), &target_group(Some(TargetType::Ip))).expect("agrees");
        assert_eq!(resource.readiness_gate(), "target-health.elbv2.k8s.aws/web");
        let mut other = binding();
        other.id = BindingId::resource("shop", "checkout-tgb");
        let other = resolve(&other, &target_group(Some(TargetType::Ip))).expect("agrees");
        assert_eq!(
            other.readiness_gate(),
            "target-health.elbv2.k8s.aws/checkout-tgb",
            "the resource's name, not its namespace nor its Service"
        );
        let mut tagged = binding();
        tagged.id = BindingId::tags("web-tg");
        let mut group = target_group(Some(TargetType::Ip));
        group.name = "web-tg".into();
        let tagged = resolve(&tagged, &group).expect("agrees");
        assert_eq!(
            tagged.readiness_gate(),
            "target-health.tgb-reconciler/web-tg",
            "the target group's name"
        );
    }

    #[test]
    fn a_spec_that_contradicts_its_target_group_names_the_field() {
        let ip = Some(TargetType::Ip);
        let instance = Some(TargetType::Instance);
        let named_port_networking = Networking {
            ingress: vec![IngressRule {
                from: vec![Peer::SecurityGroup("sg-1".into())],
                ports: vec![PortRule {
                    protocol: Protocol::Tcp,
                    port: Some(PortRef::Name("http".into())),
                }],
            }],
        };
        let cases: Vec<(Binding, Option<TargetType>, &str)> = vec![
            (
                Binding {
                    target_type: instance,
                    ..binding()
                },
                ip,
                "spec.targetType",
            ),
            (
                Binding {
                    ip_family: Some(IpFamily::Ipv6),
                    ..binding()
                },
                ip,
                "spec.ipAddressType",
            ),
            (
                Binding {
                    vpc_id: Some("vpc-11111111".into()),
                    ..binding()
                },
                ip,
                "spec.vpcID",
            ),
            (
                Binding {
                    node_selector: Some(Default::default()),
                    ..binding()
                },
                ip,
                "spec.nodeSelector",
            ),
            (
                Binding {
                    assume_role: Some(AssumeRole {
                        role_arn: "r".into(),
                        external_id: None,
                    }),
                    ..binding()
                },
                instance,
                "spec.iamRoleArnToAssume",
            ),
            (
                Binding {
                    networking: Some(named_port_networking),
                    ..binding()
                },
                instance,
                "spec.networking.ingress[0].ports[0].port",
            ),
            (binding(), None, "spec.targetGroupARN"),
        ];
        for (binding, target_type, field) in cases {
            let error = resolve(&binding, &target_group(target_type)).expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
    }
}
