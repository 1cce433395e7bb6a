//! `spec.networking`: who may reach the targets. Parsed and validated here so a malformed
//! section fails its binding early; the security-group rules it implies are built elsewhere.

use super::error::BindingError;
use super::port::PortRef;
pub use crate::model::{Peer, Protocol};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `spec.networking` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingSpec {
    #[serde(default)]
    pub ingress: Vec<IngressSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default)]
    pub from: Vec<PeerSpec>,
    #[serde(default)]
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    pub ip_block: Option<IpBlockSpec>,
    pub security_group: Option<SecurityGroupSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpBlockSpec {
    pub cidr: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecurityGroupSpec {
    #[serde(rename = "groupID")]
    pub group_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortSpec {
    pub protocol: Option<String>,
    pub port: Option<PortRef>,
}

/// Validated `spec.networking`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Networking {
    pub ingress: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressRule {
    pub from: Vec<Peer>,
    /// Empty means every TCP port, as the TargetGroupBinding documentation promises.
    pub ports: Vec<PortRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRule {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
}

impl NetworkingSpec {
    /// Validates every entry; `field` is where this section sits (`spec.networking`).
    pub fn validate(&self, field: &str) -> Result<Networking, BindingError> {
        let mut ingress = Vec::with_capacity(self.ingress.len());
        for (i, rule) in self.ingress.iter().enumerate() {
            let at = format!("{field}.ingress[{i}]");
            if rule.from.is_empty() {
                return Err(BindingError::new(
                    format!("{at}.from"),
                    "needs at least one peer",
                ));
            }
            let from = rule
                .from
                .iter()
                .enumerate()
                .map(|(j, peer)| peer.validate(&format!("{at}.from[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let ports = match &rule.ports {
                None => Vec::new(),
                Some(ports) => ports
                    .iter()
                    .enumerate()
                    .map(|(j, port)| port.validate(&format!("{at}.ports[{j}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            ingress.push(IngressRule { from, ports });
        }
        Ok(Networking { ingress })
    }
}

impl PeerSpec {
    fn validate(&self, at: &str) -> Result<Peer, BindingError> {
        match (&self.ip_block, &self.security_group) {
            (Some(block), None) => parse_cidr(&block.cidr)
                .map(Peer::Cidr)
                .map_err(|message| BindingError::new(format!("{at}.ipBlock.cidr"), message)),
            (None, Some(group)) => {
                let id = group.group_id.trim();
                if id.starts_with("sg-")
                    && id.len() > 3
                    && id[3..].chars().all(|c| c.is_ascii_alphanumeric())
                {
                    Ok(Peer::SecurityGroup(id.into()))
                } else {
                    Err(BindingError::new(
                        format!("{at}.securityGroup.groupID"),
                        format!("{:?} is not a security group id (sg-…)", group.group_id),
                    ))
                }
            }
            _ => Err(BindingError::new(
                at,
                "needs exactly one of ipBlock or securityGroup",
            )),
        }
    }
}

impl PortSpec {
    fn validate(&self, at: &str) -> Result<PortRule, BindingError> {
        let protocol = match self.protocol.as_deref() {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some(other) => {
                return Err(BindingError::new(
                    format!("{at}.protocol"),
                    format!("{other:?} is not TCP or UDP"),
                ));
            }
        };
        if let Some(port) = &self.port {
            port.validate()
                .map_err(|message| BindingError::new(format!("{at}.port"), message))?;
        }
        Ok(PortRule {
            protocol,
            port: self.port.clone(),
        })
    }
}

/// Parses a CIDR and truncates host bits, so it compares equal to what EC2 will store.
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    value
        .trim()
        .parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("{value:?} is not an IPv4 or IPv6 CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(value: serde_json::Value) -> Result<Networking, BindingError> {
        let spec: NetworkingSpec = serde_json::from_value(value).expect("shape");
        spec.validate("spec.networking")
    }

    #[test]
    fn cidrs_are_canonicalized_the_way_ec2_stores_them() {
        for (written, stored) in [
            ("10.0.0.18/16", "10.0.0.0/16"),
            ("192.168.32.0/19", "192.168.32.0/19"),
            ("2001:db8::1/64", "2001:db8::/64"),
        ] {
            assert_eq!(
                parse_cidr(written).map(|n| n.to_string()),
                Ok(stored.to_string())
            );
        }
    }

    #[test]
    fn the_seed_003_udp_rule_validates() {
        let networking = validate(
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            "ports": [{"port": 53, "protocol": "UDP"}]}]}),
        )
        .expect("valid");
        assert_eq!(
            networking.ingress[0].ports,
            vec![PortRule {
                protocol: Protocol::Udp,
                port: Some(PortRef::Number(53))
            }]
        );
    }

    #[test]
    fn a_port_without_a_number_means_every_port_of_its_protocol() {
        let networking = validate(
            json!({"ingress": [{"from": [{"securityGroup": {"groupID": "sg-0abc"}}],
            "ports": [{"protocol": "TCP"}]}]}),
        )
        .expect("valid");
        assert_eq!(networking.ingress[0].ports[0].port, None);
    }

    #[test]
    fn invalid_entries_name_the_field_that_is_wrong() {
        let cases = [
            (
                json!({"ingress": [{"from": []}]}),
                "spec.networking.ingress[0].from",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
                "spec.networking.ingress[0].from[0].ipBlock.cidr",
            ),
            (
                json!({"ingress": [{"from": [{"securityGroup": {"groupID": "alb"}}]}]}),
                "spec.networking.ingress[0].from[0].securityGroup.groupID",
            ),
            (
                json!({"ingress": [{"from": [{}]}]}),
                "spec.networking.ingress[0].from[0]",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                "ports": [{"protocol": "SCTP"}]}]}),
                "spec.networking.ingress[0].ports[0].protocol",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                "ports": [{"port": 70000}]}]}),
                "spec.networking.ingress[0].ports[0].port",
            ),
        ];
        for (value, field) in cases {
            let error = validate(value.clone()).expect_err(&value.to_string());
            assert_eq!(error.field, field);
        }
    }
}
