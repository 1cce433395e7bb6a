//! `TargetGroupBinding` resources (`elbv2.k8s.aws/v1beta1`), in the exact format the AWS Load
//! Balancer Controller defines, so existing manifests work unchanged.

use super::declared::{Binding, ServiceRef, TargetGroupSelector};
use super::error::BindingError;
use super::keys::{ALLOW_EMPTY_KEY, DERIVE_INGRESS_KEY};
use super::networking::NetworkingSpec;
use super::port::PortRef;
use super::selector::LabelSelector;
use crate::model::cluster::BindingResource;
use crate::model::{AssumeRole, BindingId, IpFamily, TargetGroupArn, TargetType};
use serde::Deserialize;

pub const GROUP: &str = "elbv2.k8s.aws";
pub const VERSION: &str = "v1beta1";
pub const KIND: &str = "TargetGroupBinding";
pub const PLURAL: &str = "targetgroupbindings";

/// The CRD to install in clusters that do not run the AWS Load Balancer Controller.
pub const CRD_MANIFEST: &str = include_str!("targetgroupbinding.crd.yaml");

/// `spec` as written. Unknown fields are accepted (newer controller versions add some).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupBindingSpec {
    #[serde(rename = "targetGroupARN")]
    pub target_group_arn: Option<String>,
    pub target_group_name: Option<String>,
    pub target_type: Option<String>,
    pub service_ref: ServiceRefSpec,
    pub networking: Option<NetworkingSpec>,
    pub node_selector: Option<LabelSelector>,
    pub ip_address_type: Option<String>,
    #[serde(rename = "vpcID")]
    pub vpc_id: Option<String>,
    pub multi_cluster_target_group: Option<bool>,
    pub iam_role_arn_to_assume: Option<String>,
    pub assume_role_external_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceRefSpec {
    pub name: String,
    pub port: PortRef,
}

/// Validates one resource. Every error names the field, so one bad resource fails alone.
pub fn binding_from_resource(resource: &BindingResource) -> Result<Binding, BindingError> {
    let spec: TargetGroupBindingSpec =
        serde_path_to_error::deserialize(&resource.spec).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            BindingError::new(field, e.into_inner().to_string())
        })?;
    let id = BindingId::resource(&resource.namespace, &resource.name);

    let target_group = match (
        non_empty(&spec.target_group_arn),
        non_empty(&spec.target_group_name),
    ) {
        // The ARN wins when both are given, as in the reference controller.
        (Some(arn), _) => {
            let Some(arn) = TargetGroupArn::parse(arn) else {
                return Err(BindingError::new(
                    "spec.targetGroupARN",
                    format!("{arn:?} is not a target group ARN (arn:…:targetgroup/<name>/<id>)"),
                ));
            };
            TargetGroupSelector::Arn(arn)
        }
        (None, Some(name)) => TargetGroupSelector::Name(name.to_string()),
        (None, None) => {
            return Err(BindingError::new(
                "spec.targetGroupARN",
                "one of targetGroupARN or targetGroupName is required",
            ));
        }
    };

    let target_type = match non_empty(&spec.target_type) {
        None => None,
        Some(value) => Some(TargetType::parse(value).ok_or_else(|| {
            BindingError::new(
                "spec.targetType",
                format!("{value:?} is not ip or instance"),
            )
        })?),
    };

    if spec.service_ref.name.trim().is_empty() {
        return Err(BindingError::new("spec.serviceRef.name", "is empty"));
    }
    spec.service_ref
        .port
        .validate()
        .map_err(|m| BindingError::new("spec.serviceRef.port", m))?;

    if let Some(selector) = &spec.node_selector {
        selector
            .validate()
            .map_err(|(field, m)| BindingError::new(format!("spec.nodeSelector.{field}"), m))?;
        if target_type == Some(TargetType::Ip) {
            return Err(BindingError::new(
                "spec.nodeSelector",
                "only applies to instance targets; this binding has targetType ip",
            ));
        }
    }

    let ip_family = match non_empty(&spec.ip_address_type) {
        None => None,
        Some(value) => Some(IpFamily::parse(value).ok_or_else(|| {
            BindingError::new(
                "spec.ipAddressType",
                format!("{value:?} is not ipv4 or ipv6"),
            )
        })?),
    };

    let vpc_id = match non_empty(&spec.vpc_id) {
        None => None,
        Some(value) if is_vpc_id(value) => Some(value.to_string()),
        Some(value) => {
            return Err(BindingError::new(
                "spec.vpcID",
                format!("{value:?} is not a VPC id (vpc- followed by 8, 17 or 32 hex digits)"),
            ));
        }
    };

    let assume_role = match (
        non_empty(&spec.iam_role_arn_to_assume),
        non_empty(&spec.assume_role_external_id),
    ) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(BindingError::new(
                "spec.assumeRoleExternalId",
                "is set but spec.iamRoleArnToAssume is not",
            ));
        }
        (Some(role), external_id) => {
            if !(role.starts_with("arn:") && role.contains(":iam::") && role.contains(":role/")) {
                return Err(BindingError::new(
                    "spec.iamRoleArnToAssume",
                    format!("{role:?} is not an IAM role ARN"),
                ));
            }
            if target_type == Some(TargetType::Instance) {
                return Err(BindingError::new(
                    "spec.iamRoleArnToAssume",
                    "cross-account target groups take ip targets only (ELB cannot register another account's instances)",
                ));
            }
            Some(AssumeRole {
                role_arn: role.to_string(),
                external_id: external_id.map(str::to_string),
            })
        }
    };

    let networking = match &spec.networking {
        None => None,
        Some(networking) => Some(networking.validate("spec.networking")?),
    };

    Ok(Binding {
        id,
        generation: resource.generation,
        target_group,
        target_type,
        service: ServiceRef {
            namespace: resource.namespace.clone(),
            name: spec.service_ref.name.trim().to_string(),
            port: spec.service_ref.port.clone(),
        },
        node_selector: spec.node_selector.clone(),
        ip_family,
        vpc_id,
        multi_cluster: spec.multi_cluster_target_group.unwrap_or(false),
        assume_role,
        networking,
        allow_empty: resource
            .annotations
            .get(ALLOW_EMPTY_KEY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        derive_ingress: resource
            .annotations
            .get(DERIVE_INGRESS_KEY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn is_vpc_id(value: &str) -> bool {
    value.strip_prefix("vpc-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17 | 32) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    const ARN: &str =
        "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123456789abcdef";

    fn resource(spec: serde_json::Value) -> BindingResource {
        BindingResource {
            namespace: "default".into(),
            name: "web".into(),
            generation: Some(1),
            annotations: BTreeMap::new(),
            spec,
        }
    }

    fn error_field(spec: serde_json::Value) -> String {
        binding_from_resource(&resource(spec.clone()))
            .expect_err(&spec.to_string())
            .field
    }

    #[test]
    fn a_minimal_spec_becomes_a_binding_with_defaults_left_to_the_target_group() {
        let binding = binding_from_resource(&resource(json!({
            "serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN
        })))
        .expect("valid");
        assert_eq!(binding.id, BindingId::resource("default", "web"));
        assert_eq!(binding.target_group, TargetGroupSelector::Arn(ARN.into()));
        assert_eq!(binding.target_type, None);
        assert_eq!(binding.service.port, PortRef::Number(80));
        assert!(!binding.multi_cluster && !binding.allow_empty && binding.networking.is_none());
    }

    #[test]
    fn a_service_port_may_be_named_and_a_target_group_may_be_named() {
        let binding = binding_from_resource(&resource(json!({
            "serviceRef": {"name": "web", "port": "http"}, "targetGroupName": "web-tg",
            "targetType": "ip", "ipAddressType": "ipv6", "vpcID": "vpc-0123456789abcdef0",
            "multiClusterTargetGroup": true,
            "iamRoleArnToAssume": "arn:aws:iam::210987654321:role/tg-access",
            "assumeRoleExternalId": "x-1"
        })))
        .expect("valid");
        assert_eq!(binding.service.port, PortRef::Name("http".into()));
        assert_eq!(
            binding.target_group,
            TargetGroupSelector::Name("web-tg".into())
        );
        assert_eq!(binding.ip_family, Some(IpFamily::Ipv6));
        assert!(binding.multi_cluster);
        assert_eq!(
            binding.assume_role.and_then(|r| r.external_id),
            Some("x-1".into())
        );
    }

    #[test]
    fn malformed_specs_name_the_offending_field() {
        let cases = [
            (json!({"targetGroupARN": ARN}), "spec"),
            (
                json!({"serviceRef": {"name": "web", "port": 80}}),
                "spec.targetGroupARN",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": "web"}),
                "spec.targetGroupARN",
            ),
            (
                json!({"serviceRef": {"name": "", "port": 80}, "targetGroupARN": ARN}),
                "spec.serviceRef.name",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 0}, "targetGroupARN": ARN}),
                "spec.serviceRef.port",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": [80]}, "targetGroupARN": ARN}),
                "spec.serviceRef.port",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN, "targetType": "lambda"}),
                "spec.targetType",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN, "ipAddressType": "dual"}),
                "spec.ipAddressType",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN, "vpcID": "vpc-xyz"}),
                "spec.vpcID",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN, "targetType": "ip",
                "nodeSelector": {"matchLabels": {"a": "b"}}}),
                "spec.nodeSelector",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN, "targetType": "instance",
                "iamRoleArnToAssume": "arn:aws:iam::210987654321:role/x"}),
                "spec.iamRoleArnToAssume",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN,
                "assumeRoleExternalId": "x"}),
                "spec.assumeRoleExternalId",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN,
                "multiClusterTargetGroup": "yes"}),
                "spec.multiClusterTargetGroup",
            ),
            (
                json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN,
                "networking": {"ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}}),
                "spec.networking.ingress[0].from[0].ipBlock.cidr",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(error_field(spec.clone()), field, "{spec}");
        }
    }

    #[test]
    fn the_allow_empty_annotation_releases_the_brake() {
        let mut resource =
            resource(json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN}));
        resource
            .annotations
            .insert(ALLOW_EMPTY_KEY.into(), "true".into());
        assert!(binding_from_resource(&resource).expect("valid").allow_empty);
    }
}
