//! The validated binding both sources end up as.

use super::keys::{PORT_TAG, SERVICE_TAG};
use super::networking::Networking;
use super::port::PortRef;
use super::selector::LabelSelector;
use crate::model::TargetGroupArn;
use crate::model::{AssumeRole, BindingId, IpFamily, TargetType};
use serde::Serialize;
use std::fmt;

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
    Arn(TargetGroupArn),
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

impl Binding {
    /// Where this binding names its Service, for error messages.
    pub fn service_name_field(&self) -> &'static str {
        if self.id.is_resource() {
            "spec.serviceRef.name"
        } else {
            SERVICE_TAG
        }
    }

    /// Where this binding names its Service port, for error messages.
    pub fn service_port_field(&self) -> &'static str {
        if self.id.is_resource() {
            "spec.serviceRef.port"
        } else {
            PORT_TAG
        }
    }
}
