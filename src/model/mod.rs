//! Plain values shared by every stage: targets, target types, binding identities.
//! Nothing here knows about AWS or Kubernetes client types.

pub mod aws;
pub mod cluster;
pub mod ids;
pub mod keyed;
pub mod network;
pub mod watched;

pub use ids::{BindingId, BindingSource, SecurityGroupId, TargetGroupArn};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// How a target group addresses its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Ip,
    Instance,
}

impl TargetType {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ip" => Some(Self::Ip),
            "instance" => Some(Self::Instance),
            _ => None,
        }
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ip => "ip",
            Self::Instance => "instance",
        })
    }
}

/// The address family of a target group (and of the endpoints we may register in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ipv4" => Some(Self::Ipv4),
            "ipv6" => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// The EndpointSlice `addressType` that carries this family.
    pub fn endpoint_address_type(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        })
    }
}

/// A target's identity in a target group: instance id or IP, and port.
/// The availability zone is not part of the identity (AWS matches on id and port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    /// Shared: a target is copied into the desired set, the plan, the records and the report.
    pub id: Arc<str>,
    pub port: u16,
}

impl Target {
    pub fn new(id: impl Into<Arc<str>>, port: u16) -> Self {
        Self {
            id: id.into(),
            port,
        }
    }

    /// `id:port`, or `[v6]:port` for IPv6 addresses.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Parses what [`Target::key`] writes.
    pub fn parse_key(key: &str) -> Option<Self> {
        let (id, port) = key.rsplit_once(':')?;
        let id = id
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(id);
        if id.is_empty() {
            return None;
        }
        Some(Self::new(id, port.parse().ok()?))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id.contains(':') {
            write!(f, "[{}]:{}", self.id, self.port)
        } else {
            write!(f, "{}:{}", self.id, self.port)
        }
    }
}

/// A transport protocol a security-group rule opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Any other IP protocol number (ICMP is 1), seen only on rules someone else made.
    Other(u8),
    /// EC2's `-1`: every protocol.
    All,
}

impl Protocol {
    /// EC2's `IpProtocol` value.
    pub fn as_ec2(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Other(number) => number.to_string(),
            Self::All => "-1".into(),
        }
    }

    /// Reads EC2's `IpProtocol` (a name or a number).
    pub fn from_ec2(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(Self::Tcp),
            "udp" | "17" => Some(Self::Udp),
            "-1" | "all" => Some(Self::All),
            "icmp" => Some(Self::Other(1)),
            "icmpv6" => Some(Self::Other(58)),
            other => other.parse().ok().map(Self::Other),
        }
    }
}

/// Who a security-group rule admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Canonical form, as EC2 stores it (`10.0.0.18/16` becomes `10.0.0.0/16`).
    Cidr(ipnet::IpNet),
    SecurityGroup(SecurityGroupId),
    /// A managed prefix list, seen only on rules someone else made.
    PrefixList(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::SecurityGroup(id) => f.write_str(id),
            Self::PrefixList(id) => f.write_str(id),
        }
    }
}

/// An inclusive port range; `0..=65535` is every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        from: 0,
        to: u16::MAX,
    };

    pub fn single(port: u16) -> Self {
        Self {
            from: port,
            to: port,
        }
    }

    pub fn contains(&self, other: &PortRange) -> bool {
        self.from <= other.from && other.to <= self.to
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.to) {
            (0, u16::MAX) => f.write_str("all"),
            (from, to) if from == to => write!(f, "{from}"),
            (from, to) => write!(f, "{from}-{to}"),
        }
    }
}

/// What identifies a rule within its group, the way EC2 compares rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub protocol: Protocol,
    pub ports: PortRange,
    pub peer: Peer,
}

impl Permission {
    /// Which address families' quota the rule counts against (a group reference: both).
    pub fn counts_against(&self) -> [bool; 2] {
        match &self.peer {
            // Prefix lists count by their size in EC2; one entry per family is a lower bound.
            Peer::SecurityGroup(_) | Peer::PrefixList(_) => [true, true],
            Peer::Cidr(ipnet::IpNet::V4(_)) => [true, false],
            Peer::Cidr(ipnet::IpNet::V6(_)) => [false, true],
        }
    }
}

impl Permission {
    /// Whether this rule admits everything `other` admits (same protocol and peer, wider ports).
    pub fn covers(&self, other: &Permission) -> bool {
        self.protocol == other.protocol
            && self.peer == other.peer
            && self.ports.contains(&other.ports)
    }
}

/// A rule in a particular security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupRule {
    pub group: SecurityGroupId,
    pub permission: Permission,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} from {}",
            self.protocol.as_ec2(),
            self.ports,
            self.peer
        )
    }
}

/// A role in another account through which a target group is reached (ELBv2 calls only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssumeRole {
    pub role_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Everything apply needs to address one target group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TargetGroupRef {
    pub arn: TargetGroupArn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRole>,
}

impl TargetGroupRef {
    pub fn new(arn: impl Into<TargetGroupArn>) -> Self {
        Self {
            arn: arn.into(),
            assume_role: None,
        }
    }

    /// The `targetgroup/<name>/<id>` tail of the ARN, which is what people recognise.
    pub fn short_name(&self) -> &str {
        self.arn.short_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_key_round_trips_for_ipv4_instance_and_ipv6_ids() {
        for target in [
            Target::new("10.0.0.1", 80),
            Target::new("i-0123456789abcdef0", 30001),
            Target::new("2001:db8::1", 443),
        ] {
            assert_eq!(Target::parse_key(&target.key()), Some(target.clone()));
        }
    }

    #[test]
    fn a_malformed_target_key_is_rejected() {
        for key in ["", "10.0.0.1", ":80", "10.0.0.1:http", "10.0.0.1:70000"] {
            assert_eq!(Target::parse_key(key), None, "{key}");
        }
    }
}
