//! ip targets: the ready endpoints of the Service port, from its EndpointSlices.

use super::{DesiredTarget, DesiredTargets, EndpointCounts, slice_port};
use crate::model::Target;
use crate::model::cluster::ClusterSnapshot;
use crate::model::cluster::{Service, ServicePort};
use crate::pure::binding::ResolvedBinding;
use ipnet::IpNet;
use std::net::IpAddr;

/// The availability zone ELB needs for an IP outside the target group's VPC.
pub const OUTSIDE_VPC_ZONE: &str = "all";

pub fn ip_targets(
    binding: &ResolvedBinding,
    service: &Service,
    port: &ServicePort,
    cluster: &ClusterSnapshot,
    vpc_cidrs: Option<&[IpNet]>,
) -> DesiredTargets {
    let address_type = binding.ip_family.endpoint_address_type();
    let mut desired = DesiredTargets::default();
    let mut counts = EndpointCounts::default();
    for slice in cluster
        .slices_of(&service.namespace, &service.name)
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
            if !endpoint.is_ready() {
                counts.not_ready += 1;
                continue;
            }
            // The EndpointSlice controller writes exactly one address per endpoint.
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            counts.ready += 1;
            let outside_vpc = vpc_cidrs.is_none_or(|cidrs| !cidrs.iter().any(|c| c.contains(&ip)));
            let source = match &endpoint.pod {
                Some(pod) => format!("ready endpoint of pod {pod}"),
                None => format!("ready endpoint in EndpointSlice {}", slice.name),
            };
            desired
                .targets
                .entry(Target::new(ip.to_string(), target_port))
                .or_insert(DesiredTarget {
                    availability_zone: outside_vpc.then(|| OUTSIDE_VPC_ZONE.to_string()),
                    source,
                    pod: endpoint.pod.clone(),
                });
        }
    }
    desired.evidence = counts.describe(service);
    desired
}
