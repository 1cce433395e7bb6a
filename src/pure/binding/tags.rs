//! Tagged target groups: a target group whose tags name a cluster, a Service and a port is a
//! binding too, for teams that keep everything in Terraform and nothing in the cluster.
//!
//! | tag | value | required |
//! |---|---|---|
//! | `tgb-reconciler/cluster` | cluster name; several, comma-separated, make the group multi-cluster | yes |
//! | `tgb-reconciler/service` | `namespace/name` of the Service | yes |
//! | `tgb-reconciler/port` | Service port, by number or name | yes |
//! | `tgb-reconciler/multi-cluster` | `true`: only deregister what this cluster registered | no |
//! | `tgb-reconciler/node-selector` | `key=value,key2=value2` (instance targets) | no |
//! | `tgb-reconciler/allow-empty` | `true`: the brake may let the group go empty | no |
//! | `tgb-reconciler/derive-ingress` | `true`: admit the group's load balancer in the targets' security groups | no |
//! | `tgb-reconciler/ingress` | peers allowed in, comma-separated security-group ids and CIDRs (like `spec.networking`) | no |
//! | `tgb-reconciler/ingress-ports` | with `ingress`: comma-separated `tcp/80`, `udp/53`, or `tcp` (every TCP port); default every TCP port | no |

use super::declared::{Binding, ServiceRef, TargetGroupSelector};
use super::error::BindingError;
use super::keys::{ALLOW_EMPTY_KEY, DERIVE_INGRESS_KEY};
use super::networking::{Networking, NetworkingSpec};
use super::port::PortRef;
use super::selector::LabelSelector;
use crate::model::aws::TargetGroupInfo;
use crate::model::{BindingId, TargetType};

pub use super::keys::{
    CLUSTER_TAG, INGRESS_PORTS_TAG, INGRESS_TAG, MULTI_CLUSTER_TAG, NODE_SELECTOR_TAG, PORT_TAG,
    SERVICE_TAG,
};

/// The clusters a target group's tags name (empty when it carries no cluster tag).
pub fn tagged_clusters(target_group: &TargetGroupInfo) -> Vec<&str> {
    target_group
        .tags
        .get(CLUSTER_TAG)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The binding a target group's tags declare for `cluster`, if they name it.
pub fn binding_from_tags(
    target_group: &TargetGroupInfo,
    cluster: &str,
) -> Option<Result<Binding, BindingError>> {
    let clusters = tagged_clusters(target_group);
    clusters
        .contains(&cluster)
        .then(|| parse(target_group, clusters.len() > 1))
}

fn parse(target_group: &TargetGroupInfo, shared: bool) -> Result<Binding, BindingError> {
    let tag = |key: &str| {
        target_group
            .tags
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let service = tag(SERVICE_TAG).ok_or_else(|| BindingError::new(SERVICE_TAG, "is missing"))?;
    let (namespace, name) = service
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            BindingError::new(SERVICE_TAG, format!("{service:?} is not namespace/name"))
        })?;
    let port_value = tag(PORT_TAG).ok_or_else(|| BindingError::new(PORT_TAG, "is missing"))?;
    let port = match port_value.parse::<i64>() {
        Ok(number) => PortRef::Number(number),
        Err(_) => PortRef::Name(port_value.to_string()),
    };
    port.validate()
        .map_err(|m| BindingError::new(PORT_TAG, m))?;
    let multi_cluster = match tag(MULTI_CLUSTER_TAG) {
        None => shared,
        Some(value) => shared || parse_bool(MULTI_CLUSTER_TAG, value)?,
    };
    let node_selector = tag(NODE_SELECTOR_TAG).map(parse_selector).transpose()?;
    if node_selector.is_some() && target_group.target_type == Some(TargetType::Ip) {
        return Err(BindingError::new(
            NODE_SELECTOR_TAG,
            "only applies to instance target groups",
        ));
    }
    let allow_empty = match tag(ALLOW_EMPTY_KEY) {
        None => false,
        Some(value) => parse_bool(ALLOW_EMPTY_KEY, value)?,
    };
    let networking = tag(INGRESS_TAG)
        .map(|peers| parse_ingress(peers, tag(INGRESS_PORTS_TAG)))
        .transpose()?;
    if networking.is_none() && tag(INGRESS_PORTS_TAG).is_some() {
        return Err(BindingError::new(
            INGRESS_PORTS_TAG,
            format!("needs {INGRESS_TAG} to name the peers"),
        ));
    }
    let derive_ingress = match tag(DERIVE_INGRESS_KEY) {
        None => false,
        Some(value) => parse_bool(DERIVE_INGRESS_KEY, value)?,
    };
    Ok(Binding {
        id: BindingId::tags(&target_group.name),
        generation: None,
        target_group: TargetGroupSelector::Arn(target_group.arn.clone()),
        target_type: None,
        service: ServiceRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        },
        node_selector,
        ip_family: None,
        vpc_id: None,
        multi_cluster,
        assume_role: None,
        networking,
        allow_empty,
        derive_ingress,
    })
}

/// The ingress tags, as the `spec.networking` they stand for (validated the same way).
fn parse_ingress(peers: &str, ports: Option<&str>) -> Result<Networking, BindingError> {
    let from = peers
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|peer| {
            if peer.starts_with("sg-") {
                serde_json::json!({"securityGroup": {"groupID": peer}})
            } else {
                serde_json::json!({"ipBlock": {"cidr": peer}})
            }
        })
        .collect::<Vec<_>>();
    let ports = match ports {
        None => Vec::new(),
        Some(ports) => ports
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|entry| {
                let (protocol, port) = entry
                    .split_once('/')
                    .map_or((entry, None), |(p, n)| (p, Some(n)));
                let port = match port {
                    None => Ok(serde_json::Value::Null),
                    Some(n) => n.parse::<i64>().map(serde_json::Value::from).map_err(|_| {
                        BindingError::new(
                            INGRESS_PORTS_TAG,
                            format!("{entry:?} is not protocol/port"),
                        )
                    }),
                }?;
                Ok(serde_json::json!({"protocol": protocol.to_ascii_uppercase(), "port": port}))
            })
            .collect::<Result<Vec<_>, BindingError>>()?,
    };
    let spec: NetworkingSpec =
        serde_json::from_value(serde_json::json!({"ingress": [{"from": from, "ports": ports}]}))
            .map_err(|e| BindingError::new(INGRESS_TAG, e.to_string()))?;
    // Report problems against the tags, not a spec path the user never wrote.
    spec.validate("").map_err(|e| {
        let tag = if e.field.contains("ports") {
            INGRESS_PORTS_TAG
        } else {
            INGRESS_TAG
        };
        BindingError::new(tag, e.message)
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, BindingError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(BindingError::new(
            key,
            format!("{value:?} is not true or false"),
        )),
    }
}

fn parse_selector(value: &str) -> Result<LabelSelector, BindingError> {
    let mut selector = LabelSelector::default();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, label) = pair
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| {
                BindingError::new(NODE_SELECTOR_TAG, format!("{pair:?} is not key=value"))
            })?;
        selector
            .match_labels
            .insert(key.trim().to_string(), label.trim().to_string());
    }
    Ok(selector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IpFamily;
    use std::collections::BTreeMap;

    fn target_group(tags: &[(&str, &str)]) -> TargetGroupInfo {
        TargetGroupInfo {
            arn: "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/1".into(),
            name: "web".into(),
            target_type: Some(TargetType::Instance),
            raw_target_type: "instance".into(),
            ip_family: IpFamily::Ipv4,
            vpc_id: Some("vpc-1".into()),
            protocol: Some("HTTP".into()),
            port: Some(80),
            load_balancer_arns: vec![],
            health_check_protocol: None,
            health_check_port: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_target_group_tagged_for_another_cluster_is_not_a_binding_here() {
        let tg = target_group(&[
            (CLUSTER_TAG, "other"),
            (SERVICE_TAG, "default/web"),
            (PORT_TAG, "80"),
        ]);
        assert!(binding_from_tags(&tg, "prod").is_none());
        assert!(binding_from_tags(&target_group(&[]), "prod").is_none());
    }

    #[test]
    fn complete_tags_make_a_binding() {
        let tg = target_group(&[
            (CLUSTER_TAG, "prod"),
            (SERVICE_TAG, "shop/web"),
            (PORT_TAG, "http"),
            (NODE_SELECTOR_TAG, "pool=web, arch=arm64"),
            (ALLOW_EMPTY_KEY, "true"),
        ]);
        let binding = binding_from_tags(&tg, "prod")
            .expect("named")
            .expect("valid");
        assert_eq!(binding.id, BindingId::tags("web"));
        assert_eq!(binding.service.namespace, "shop");
        assert_eq!(binding.service.port, PortRef::Name("http".into()));
        assert_eq!(
            binding.node_selector.expect("selector").match_labels.len(),
            2
        );
        assert!(binding.allow_empty && !binding.multi_cluster);
    }

    #[test]
    fn naming_several_clusters_makes_the_target_group_multi_cluster() {
        let tg = target_group(&[
            (CLUSTER_TAG, "blue, green"),
            (SERVICE_TAG, "default/web"),
            (PORT_TAG, "80"),
        ]);
        let binding = binding_from_tags(&tg, "green")
            .expect("named")
            .expect("valid");
        assert!(binding.multi_cluster);
    }

    #[test]
    fn incomplete_or_malformed_tags_name_the_tag() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[(CLUSTER_TAG, "prod"), (PORT_TAG, "80")], SERVICE_TAG),
            (
                &[
                    (CLUSTER_TAG, "prod"),
                    (SERVICE_TAG, "web"),
                    (PORT_TAG, "80"),
                ],
                SERVICE_TAG,
            ),
            (
                &[(CLUSTER_TAG, "prod"), (SERVICE_TAG, "default/web")],
                PORT_TAG,
            ),
            (
                &[
                    (CLUSTER_TAG, "prod"),
                    (SERVICE_TAG, "default/web"),
                    (PORT_TAG, "99999"),
                ],
                PORT_TAG,
            ),
            (
                &[
                    (CLUSTER_TAG, "prod"),
                    (SERVICE_TAG, "default/web"),
                    (PORT_TAG, "80"),
                    (MULTI_CLUSTER_TAG, "maybe"),
                ],
                MULTI_CLUSTER_TAG,
            ),
        ];
        for (tags, field) in cases {
            let error = binding_from_tags(&target_group(tags), "prod")
                .expect("named")
                .expect_err(field);
            assert_eq!(error.field, field);
        }
    }
}

#[cfg(test)]
mod ingress_tests {
    use super::*;
    use crate::pure::binding::networking::{PortRule, Protocol};

    #[test]
    fn ingress_tags_read_like_networking_and_name_the_tag_when_wrong() {
        let networking =
            parse_ingress("sg-0abc, 10.0.0.18/16", Some("tcp/80, udp/53, tcp")).expect("valid");
        let rule = &networking.ingress[0];
        assert_eq!(rule.from.len(), 2);
        assert_eq!(
            rule.from[1],
            crate::model::Peer::Cidr("10.0.0.0/16".parse().expect("cidr"))
        );
        assert_eq!(
            rule.ports[1],
            PortRule {
                protocol: Protocol::Udp,
                port: Some(crate::pure::binding::PortRef::Number(53))
            }
        );
        assert_eq!(rule.ports[2].port, None);
        assert!(
            parse_ingress("sg-0abc", None).expect("valid").ingress[0]
                .ports
                .is_empty(),
            "every TCP port"
        );
        assert_eq!(
            parse_ingress("not-a-cidr", None)
                .expect_err("bad peer")
                .field,
            INGRESS_TAG
        );
        assert_eq!(
            parse_ingress("sg-0abc", Some("sctp/9"))
                .expect_err("bad protocol")
                .field,
            INGRESS_PORTS_TAG
        );
        assert_eq!(
            parse_ingress("sg-0abc", Some("tcp/http"))
                .expect_err("bad port")
                .field,
            INGRESS_PORTS_TAG
        );
    }
}
