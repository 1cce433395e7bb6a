//! Bindings: what ties a target group to a Service port. Two sources declare them —
//! `TargetGroupBinding` resources ([`resource`]) and tagged target groups ([`tags`]) — and both
//! end up as the same validated [`Binding`], later [`resolve`]d against its target group.

#[cfg(test)]
pub mod fixtures;
pub mod networking;
pub mod resolve;
pub mod resource;
pub mod selector;
pub mod tags;

use crate::model::{AssumeRole, BindingId, IpFamily, TargetType};
use selector::LabelSelector;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use networking::Networking;
pub use resolve::{ResolvedBinding, resolve};

/// The annotation (on a `TargetGroupBinding`) or tag (on a target group) that lets a binding's
/// target group be emptied; without it the brake holds back deregistering the last target.
pub const ALLOW_EMPTY_KEY: &str = "tgb-reconciler/allow-empty";

/// The annotation (or tag) that has a binding without `networking` admit its load balancer:
/// the target ports and the health check, from the load balancer's groups or subnets.
pub const DERIVE_INGRESS_KEY: &str = "tgb-reconciler/derive-ingress";

/// A validated binding, not yet checked against its target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub id: BindingId,
    /// `metadata.generation` of the resource, when there is one.
    pub generation: Option<i64>,
    pub target_group: TargetGroupSelector,
    pub target_type: Option<TargetType>,
    pub service: ServiceRef,
    pub node_selector: Option<LabelSelector>,
    pub ip_family: Option<IpFamily>,
    pub vpc_id: Option<String>,
    pub multi_cluster: bool,
    pub assume_role: Option<AssumeRole>,
    pub networking: Option<Networking>,
    pub allow_empty: bool,
    pub derive_ingress: bool,
}

/// How a binding names its target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetGroupSelector {
    Arn(String),
    Name(String),
}

impl fmt::Display for TargetGroupSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Arn(arn) => f.write_str(arn),
            Self::Name(name) => write!(f, "named {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// A port given by number or by name (Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

impl PortRef {
    /// Checks a port as written in a spec: a number in 1..=65535 or a non-empty name.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Number(n) if (1..=65535).contains(n) => Ok(()),
            Self::Number(n) => Err(format!("port {n} is outside 1..65535")),
            Self::Name(name) if name.trim().is_empty() => Err("port name is empty".into()),
            Self::Name(name) => match name.parse::<i64>() {
                // YAML `port: "80"` is a string to Kubernetes too; it names no port.
                Ok(_) => Err(format!(
                    "port \"{name}\" is a quoted number; write it unquoted"
                )),
                Err(_) => Ok(()),
            },
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// Why a binding cannot be reconciled; names the field (or the object) that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingError {
    /// A path into the binding's declaration, e.g. `spec.serviceRef.port`, or the tag key.
    pub field: String,
    pub message: String,
}

impl BindingError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for BindingError {}

impl Binding {
    /// Where this binding names its Service, for error messages.
    pub fn service_name_field(&self) -> &'static str {
        match self.id {
            BindingId::Resource { .. } => "spec.serviceRef.name",
            BindingId::Tags { .. } => tags::SERVICE_TAG,
        }
    }

    /// Where this binding names its Service port, for error messages.
    pub fn service_port_field(&self) -> &'static str {
        match self.id {
            BindingId::Resource { .. } => "spec.serviceRef.port",
            BindingId::Tags { .. } => tags::PORT_TAG,
        }
    }
}
