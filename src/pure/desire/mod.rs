//! desire: from a resolved binding and a cluster snapshot to the exact set of targets its
//! target group should hold. Pure and synchronous.

pub mod instance;
pub mod ip;
pub mod nodes;
pub mod rules;
pub mod view;

use crate::model::cluster::{GateCondition, Service, ServicePort};
use crate::model::{Target, TargetType};
use crate::pure::binding::{BindingError, PortRef, ResolvedBinding};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use view::ClusterView;

/// The targets one binding wants, each with where it comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredTargets {
    pub targets: BTreeMap<Target, DesiredTarget>,
    /// One sentence on what was seen, for the brake and the plan (e.g. `2 endpoints, 0 ready`).
    pub evidence: String,
    /// The wanted targets whose pods wait on this binding's readiness gate, with the gate's
    /// condition now: the plan sets it from the target's health.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GatedTarget>,
    /// Pods that list this binding's gate although it registers instances: gates need ip
    /// targets, so these are left alone (and stay not Ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ungateable: Vec<Arc<str>>,
}

/// A wanted target whose pod waits on the binding's readiness gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatedTarget {
    /// `namespace/name`.
    pub pod: Arc<str>,
    pub target: Target,
    /// The gate's condition now; `None` when the pod has none of that type yet.
    pub condition: Option<GateCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTarget {
    /// `all` for IPs outside the target group's VPC.
    pub availability_zone: Option<String>,
    /// Why this target belongs, e.g. `ready endpoint of pod default/web-0`.
    #[serde(serialize_with = "serialize_shown")]
    pub source: TargetSource,
}

impl DesiredTarget {
    /// `namespace/name` of the pod behind the target, when known (named ports resolve
    /// against it).
    pub fn pod(&self) -> Option<&str> {
        match &self.source {
            TargetSource::Pod(pod) | TargetSource::GatedPod(pod) => Some(pod),
            TargetSource::HostNetwork { pod, .. } => pod.as_deref(),
            TargetSource::Slice(_) | TargetSource::NodePort { .. } => None,
        }
    }
}

/// Where a desired target comes from. Names are shared with the snapshot; the sentence is
/// written only when a change or an error is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// A ready endpoint of a pod.
    Pod(Arc<str>),
    /// The endpoint of a pod whose containers are ready, held back only by the binding's
    /// readiness gate: registered so that the gate can pass.
    GatedPod(Arc<str>),
    /// A ready endpoint that names no pod, in this EndpointSlice.
    Slice(Arc<str>),
    /// A Service's NodePort on a Ready node.
    NodePort { port: u16, node: Arc<str> },
    /// A hostNetwork pod's endpoint on its node.
    HostNetwork {
        pod: Option<Arc<str>>,
        node: Arc<str>,
    },
}

impl fmt::Display for TargetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(pod) => write!(f, "ready endpoint of pod {pod}"),
            Self::GatedPod(pod) => write!(
                f,
                "endpoint of pod {pod}, containers ready, waiting on its readiness gate"
            ),
            Self::Slice(slice) => write!(f, "ready endpoint in EndpointSlice {slice}"),
            Self::NodePort { port, node } => write!(f, "NodePort {port} on Ready node {node}"),
            Self::HostNetwork { pod, node } => write!(
                f,
                "hostNetwork endpoint {} on node {node}",
                pod.as_deref().unwrap_or("(no pod)")
            ),
        }
    }
}

fn serialize_shown<S: serde::Serializer>(
    value: &impl fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Computes the desired targets of one binding. `vpc_cidrs` are the CIDRs of the target group's
/// VPC, `None` when that VPC is not visible from here (only ip targets use them).
pub fn desire(
    binding: &ResolvedBinding,
    cluster: &ClusterView<'_>,
    vpc_cidrs: Option<&[IpNet]>,
) -> Result<DesiredTargets, BindingError> {
    let (service, port) = service_port(binding, cluster)?;
    match binding.target_type {
        TargetType::Ip => Ok(ip::ip_targets(binding, service, port, cluster, vpc_cidrs)),
        TargetType::Instance => instance::instance_targets(binding, service, port, cluster),
    }
}

/// The Service and Service port a binding points at; missing ones fail the binding.
fn service_port<'a>(
    binding: &ResolvedBinding,
    cluster: &ClusterView<'a>,
) -> Result<(&'a Service, &'a ServicePort), BindingError> {
    let wanted = &binding.binding.service;
    let service = cluster
        .service(&wanted.namespace, &wanted.name)
        .ok_or_else(|| {
            BindingError::new(
                binding.binding.service_name_field(),
                format!("Service {}/{} not found", wanted.namespace, wanted.name),
            )
        })?;
    let port = service
        .ports
        .iter()
        .find(|p| match &wanted.port {
            PortRef::Number(n) => i64::from(p.port) == *n,
            PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
        .ok_or_else(|| {
            let known: Vec<String> = service
                .ports
                .iter()
                .map(|p| match &p.name {
                    Some(name) if !name.is_empty() => format!("{} ({name})", p.port),
                    _ => p.port.to_string(),
                })
                .collect();
            BindingError::new(
                binding.binding.service_port_field(),
                format!(
                    "Service {}/{} has no port {} (ports: {})",
                    service.namespace,
                    service.name,
                    wanted.port,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
    Ok((service, port))
}

/// The slice port that carries a Service port: same name (unnamed is `""`) and protocol.
fn slice_port(slice: &crate::model::cluster::EndpointSlice, port: &ServicePort) -> Option<u16> {
    let name = port.name.as_deref().unwrap_or("");
    slice
        .ports
        .iter()
        .find(|p| {
            p.name.as_deref().unwrap_or("") == name
                && p.protocol.as_deref().unwrap_or("TCP") == port.protocol
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// Counts of what a Service's endpoints looked like, for the plan's explanations.
#[derive(Debug, Default)]
struct EndpointCounts {
    ready: usize,
    not_ready: usize,
    terminating: usize,
    /// Not ready only because they wait on the binding's readiness gate.
    gated: usize,
}

impl EndpointCounts {
    fn describe(&self, service: &Service) -> String {
        let gated = match self.gated {
            0 => String::new(),
            n => format!(" ({n} waiting on a readiness gate, registered)"),
        };
        format!(
            "Service {}/{} has {} ready endpoint(s), {} not ready{gated}, {} terminating",
            service.namespace,
            service.name,
            self.ready,
            self.not_ready + self.gated,
            self.terminating
        )
    }
}

#[cfg(test)]
mod tests;
