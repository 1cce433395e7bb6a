//! ip targets: the ready endpoints of the Service port, from its EndpointSlices.

use super::view::ClusterView;
use super::{DesiredTarget, DesiredTargets, EndpointCounts, TargetSource, slice_port};
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
            if !endpoint.is_ready() {
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
            counts.ready += 1;
            let outside_vpc = vpc_cidrs.is_none_or(|cidrs| !cidrs.iter().any(|c| c.contains(&ip)));
            let source = match &endpoint.pod {
                Some(pod) => TargetSource::Pod(pod.clone()),
                None => TargetSource::Slice(slice.name.clone()),
            };
            desired
                .targets
                .entry(Target::new(address_text(address, ip), target_port))
                .or_insert(DesiredTarget {
                    availability_zone: outside_vpc.then(|| OUTSIDE_VPC_ZONE.to_string()),
                    source,
                });
        }
    }
    desired.evidence = counts.describe(service);
    desired
}

/// The target id of an endpoint address: as written for IPv4 (the parser takes only the
/// canonical form), rewritten for IPv6 (`2001:DB8::0:1` is `2001:db8::1` to AWS).
fn address_text(address: &str, ip: IpAddr) -> Arc<str> {
    match ip {
        IpAddr::V4(_) => Arc::from(address),
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
            assert_eq!(&*address_text(address, ip), expected, "{address}");
        }
    }
}
