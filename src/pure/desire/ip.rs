//! ip targets: the ready endpoints of the Service port, from its EndpointSlices.

use super::view::ClusterView;
use super::{DesiredTarget, DesiredTargets, EndpointCounts, GatedTarget, TargetSource, slice_port};
use crate::model::Target;
use crate::model::cluster::{Service, ServicePort};
use crate::pure::binding::ResolvedBinding;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

/// The availability zone ELB needs for an IP outside the target group's VPC.
pub const OUTSIDE_VPC_ZONE: &str = "all";

pub fn ip_targets(
    binding: &ResolvedBinding,
    service: &Service,
    port: &ServicePort,
    cluster: &ClusterView<'_>,
    vpc_cidrs: Option<&[IpNet]>,
) -> DesiredTargets {
    let address_type = binding.ip_family.endpoint_address_type();
    let gate = cluster.has_gated_pods().then(|| binding.readiness_gate());
    let mut desired = DesiredTargets::default();
    let mut counts = EndpointCounts::default();
    for slice in cluster
        .slices_of(&service.namespace, &service.name)
        .iter()
        .filter(|s| s.address_type == address_type)
    {
        // Named target ports may resolve to different numbers per slice.
        let Some(target_port) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.is_terminating() {
                counts.terminating += 1;
                continue;
            }
            // The endpoint's pod, when it lists this binding's gate.
            let gated = gate.as_deref().and_then(|gate| {
                let key = endpoint.pod.as_ref()?;
                let pod = cluster.gated_pod(key)?;
                Some((key, pod, pod.gate(gate)?))
            });
            let ready = endpoint.is_ready();
            // A pod held back only by this binding's gate is registered: its gate passes once
            // the target is healthy. Its other conditions keep their meaning.
            let waits_on_gate =
                !ready && gated.is_some_and(|(_, pod, _)| pod.containers_ready && !pod.terminating);
            if !ready && !waits_on_gate {
                counts.not_ready += 1;
                continue;
            }
            // The EndpointSlice controller writes exactly one address per endpoint.
            let Some((address, ip)) = endpoint
                .addresses
                .first()
                .and_then(|a| Some((a, a.parse::<IpAddr>().ok()?)))
            else {
                continue;
            };
            if waits_on_gate {
                counts.gated += 1;
            } else {
                counts.ready += 1;
            }
            let outside_vpc = vpc_cidrs.is_none_or(|cidrs| !cidrs.iter().any(|c| c.contains(&ip)));
            let source = match (&endpoint.pod, waits_on_gate) {
                (Some(pod), true) => TargetSource::GatedPod(pod.clone()),
                (Some(pod), false) => TargetSource::Pod(pod.clone()),
                (None, _) => TargetSource::Slice(slice.name.clone()),
            };
            let target = Target::new(address_text(address, ip), target_port);
            if let Some((pod, _, gate)) = gated
                && !desired.targets.contains_key(&target)
            {
                desired.gates.push(GatedTarget {
                    pod: pod.clone(),
                    target: target.clone(),
                    condition: gate.condition.clone(),
                });
            }
            desired.targets.entry(target).or_insert(DesiredTarget {
                availability_zone: outside_vpc.then(|| OUTSIDE_VPC_ZONE.to_string()),
                source,
            });
        }
    }
    desired.evidence = counts.describe(service);
    desired
}

/// The target id of an endpoint address: as written (and shared) for IPv4, since the parser
/// takes only the canonical form; rewritten for IPv6 (`2001:DB8::0:1` is `2001:db8::1` to AWS).
fn address_text(address: &Arc<str>, ip: IpAddr) -> Arc<str> {
    match ip {
        IpAddr::V4(_) => Arc::clone(address),
        IpAddr::V6(v6) => Arc::from(v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_address_becomes_the_target_id_aws_would_show() {
        for (address, expected) in [
            ("10.0.0.1", "10.0.0.1"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            let ip: IpAddr = address.parse().expect("an address");
            assert_eq!(
                &*address_text(&Arc::from(address), ip),
                expected,
                "{address}"
            );
        }
    }
}
