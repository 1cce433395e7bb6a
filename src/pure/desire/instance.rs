//! instance targets: the Service's NodePort on every eligible node, or — for hostNetwork pods
//! behind a Service without a NodePort — the instances that host ready endpoints.

use super::{DesiredTarget, DesiredTargets, EndpointCounts, TargetSource, slice_port};
use crate::model::Target;
use crate::model::cluster::ClusterSnapshot;
use crate::model::cluster::{Node, Service, ServicePort};
use crate::pure::binding::selector::LabelSelector;
use crate::pure::binding::{BindingError, ResolvedBinding};

/// Labels and taints that take a node out of load balancing.
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const LEGACY_EXCLUDE_LABEL: &str = "alpha.service-controller.kubernetes.io/exclude-balancer";
const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";
const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
const KARPENTER_TAINT: &str = "karpenter.sh/disrupted";

pub fn instance_targets(
    binding: &ResolvedBinding,
    service: &Service,
    port: &ServicePort,
    cluster: &ClusterSnapshot,
) -> Result<DesiredTargets, BindingError> {
    let selector = binding.binding.node_selector.as_ref();
    match port
        .node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    {
        Some(node_port) => Ok(node_port_targets(node_port, selector, cluster)),
        None => host_network_targets(binding, service, port, selector, cluster),
    }
}

fn node_port_targets(
    node_port: u16,
    selector: Option<&LabelSelector>,
    cluster: &ClusterSnapshot,
) -> DesiredTargets {
    let mut desired = DesiredTargets::default();
    let mut skipped = 0;
    for node in &cluster.nodes {
        match eligible_instance(node, selector) {
            Ok(instance) => {
                desired.targets.insert(
                    Target::new(instance, node_port),
                    DesiredTarget {
                        availability_zone: None,
                        source: TargetSource::NodePort {
                            port: node_port,
                            node: node.name.clone(),
                        },
                    },
                );
            }
            Err(_) => skipped += 1,
        }
    }
    desired.evidence = format!(
        "{} of {} node(s) are Ready and eligible ({skipped} excluded, not Ready or not selected)",
        desired.targets.len(),
        cluster.nodes.len()
    );
    desired
}

/// Seed 002: hostNetwork pods serve on the node's own address, so the instance is the target
/// at the pod's port, with no NodePort hop.
fn host_network_targets(
    binding: &ResolvedBinding,
    service: &Service,
    port: &ServicePort,
    selector: Option<&LabelSelector>,
    cluster: &ClusterSnapshot,
) -> Result<DesiredTargets, BindingError> {
    let mut desired = DesiredTargets::default();
    let mut counts = EndpointCounts::default();
    let mut not_host_network = 0;
    for slice in cluster.slices_of(&service.namespace, &service.name) {
        let Some(target_port) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let node = endpoint.node_name.as_deref().and_then(|n| cluster.node(n));
            let on_node_ip = node.is_some_and(|node| {
                endpoint
                    .addresses
                    .first()
                    .is_some_and(|a| node.internal_ips.contains(a))
            });
            if !on_node_ip {
                not_host_network += 1;
                continue;
            }
            if endpoint.is_terminating() {
                counts.terminating += 1;
                continue;
            }
            if !endpoint.is_ready() {
                counts.not_ready += 1;
                continue;
            }
            counts.ready += 1;
            let Some(node) = node else { continue };
            if let Ok(instance) = eligible_instance(node, selector) {
                desired.targets.insert(
                    Target::new(instance, target_port),
                    DesiredTarget {
                        availability_zone: None,
                        source: TargetSource::HostNetwork {
                            pod: endpoint.pod.clone(),
                            node: node.name.clone(),
                        },
                    },
                );
            }
        }
    }
    if not_host_network > 0 {
        return Err(BindingError::new(
            binding.binding.service_port_field(),
            format!(
                "Service {}/{} port {} has no NodePort (type {}) and {not_host_network} of its endpoints are not hostNetwork pods; instance targets need a NodePort or hostNetwork endpoints",
                service.namespace, service.name, port.port, service.service_type
            ),
        ));
    }
    desired.evidence = format!("{} (hostNetwork, no NodePort)", counts.describe(service));
    Ok(desired)
}

/// The node's instance id if it may carry load-balancer traffic, or why not.
pub fn eligible_instance<'n>(
    node: &'n Node,
    selector: Option<&LabelSelector>,
) -> Result<&'n str, &'static str> {
    if node.ready.as_deref() != Some("True") {
        return Err("not Ready");
    }
    if node.labels.contains_key(EXCLUDE_LABEL) || node.labels.contains_key(LEGACY_EXCLUDE_LABEL) {
        return Err("excluded from external load balancers");
    }
    if node
        .labels
        .get(COMPUTE_TYPE_LABEL)
        .is_some_and(|v| v == "fargate")
    {
        return Err("Fargate");
    }
    if node
        .taints
        .iter()
        .any(|t| t.key == AUTOSCALER_TAINT || t.key == KARPENTER_TAINT)
    {
        return Err("being removed by the autoscaler");
    }
    if selector.is_some_and(|s| !s.matches(&node.labels)) {
        return Err("not selected by nodeSelector");
    }
    node.provider_id
        .as_deref()
        .and_then(instance_id)
        .ok_or("no EC2 instance id in spec.providerID")
}

/// `aws:///us-west-2a/i-0123` → `i-0123`; anything without an `i-` id is not an instance.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let id = provider_id.rsplit('/').next()?;
    (provider_id.starts_with("aws://") || !provider_id.contains('/'))
        .then_some(id)
        .filter(|id| id.starts_with("i-") && id.len() > 2)
}
