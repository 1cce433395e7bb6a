//! instance targets: the Service's NodePort on every eligible node, or — for hostNetwork pods
//! behind a Service without a NodePort — the instances that host ready endpoints.

use super::nodes::eligible_instance;
use super::view::ClusterView;
use super::{DesiredTarget, DesiredTargets, EndpointCounts, TargetSource, slice_port};
use crate::model::Target;
use crate::model::cluster::{Service, ServicePort};
use crate::pure::binding::selector::LabelSelector;
use crate::pure::binding::{BindingError, ResolvedBinding};
use std::sync::Arc;

pub fn instance_targets(
    binding: &ResolvedBinding,
    service: &Service,
    port: &ServicePort,
    cluster: &ClusterView<'_>,
) -> Result<DesiredTargets, BindingError> {
    let selector = binding.binding.node_selector.as_ref();
    let mut desired = match port
        .node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    {
        Some(node_port) => node_port_targets(node_port, selector, cluster),
        None => host_network_targets(binding, service, port, selector, cluster)?,
    };
    desired.ungateable = ungateable_pods(binding, service, cluster);
    Ok(desired)
}

/// The Service's pods that list this binding's readiness gate: an instance target is a node,
/// not the pod, so its health says nothing of the pod (aws-lbc leaves these alone too).
fn ungateable_pods(
    binding: &ResolvedBinding,
    service: &Service,
    cluster: &ClusterView<'_>,
) -> Vec<Arc<str>> {
    if !cluster.has_gated_pods() {
        return Vec::new();
    }
    let gate = binding.readiness_gate();
    let mut pods: Vec<Arc<str>> = cluster
        .slices_of(&service.namespace, &service.name)
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter_map(|endpoint| endpoint.pod.as_ref())
        .filter(|key| {
            cluster
                .gated_pod(key)
                .is_some_and(|pod| pod.gate(&gate).is_some())
        })
        .cloned()
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

fn node_port_targets(
    node_port: u16,
    selector: Option<&LabelSelector>,
    cluster: &ClusterView<'_>,
) -> DesiredTargets {
    let mut desired = DesiredTargets::default();
    let mut eligible = 0;
    for (node, instance) in cluster.selected(selector) {
        eligible += 1;
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
    let nodes = cluster.node_count();
    desired.evidence = format!(
        "{} of {nodes} node(s) are Ready and eligible ({} excluded, not Ready or not selected)",
        desired.targets.len(),
        nodes - eligible
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
    cluster: &ClusterView<'_>,
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
                    .is_some_and(|a| node.internal_ips.iter().any(|ip| **ip == **a))
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
