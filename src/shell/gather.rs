//! gather: performs the reads the pure observe steps ask for, and hands back the answers as
//! they came — values or typed errors. A request for nothing reads nothing.

use crate::Error;
use crate::model::SecurityGroupId;
use crate::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use crate::model::network::NetworkFacts;
use crate::model::{AssumeRole, TargetGroupRef};
use crate::ports::{FirewallRules, NetworkDirectory, TargetRegistry};
use crate::pure::binding::TargetGroupSelector;
use crate::pure::observe::rules::FactsRequest;
use futures::StreamExt;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// Target-health reads in flight at once: well inside ELBv2's describe bucket (about 40 burst).
const CONCURRENT_READS: usize = 8;

type Result<T> = std::result::Result<T, Error>;

/// Each target group in another account, through its role, one after another.
pub async fn foreign_target_groups(
    registry: &impl TargetRegistry,
    lookups: &[(&TargetGroupSelector, &AssumeRole)],
) -> Vec<Result<Option<TargetGroupInfo>>> {
    let mut found = Vec::with_capacity(lookups.len());
    for (selector, role) in lookups {
        found.push(registry.foreign_target_group(selector, role).await);
    }
    found
}

/// The CIDRs of these VPCs.
pub async fn vpc_cidrs(
    network: &impl NetworkDirectory,
    vpcs: &[String],
) -> Result<BTreeMap<String, Vec<IpNet>>> {
    network.vpc_cidrs(vpcs).await
}

/// Target health of every group, read fresh, a few at a time.
pub async fn target_health(
    registry: &impl TargetRegistry,
    groups: BTreeSet<TargetGroupRef>,
) -> Vec<(TargetGroupRef, Result<Vec<ObservedTarget>>)> {
    futures::stream::iter(groups)
        .map(|group| async move {
            let read = registry.target_health(&group).await;
            (group, read)
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await
}

pub async fn network_facts(
    network: &impl NetworkDirectory,
    request: Option<&FactsRequest>,
) -> Result<NetworkFacts> {
    match request {
        Some(request) => {
            network
                .network_facts(&request.instances, &request.ips)
                .await
        }
        None => Ok(NetworkFacts::default()),
    }
}

pub async fn load_balancers(
    registry: &impl TargetRegistry,
    arns: &[String],
) -> Result<Vec<LoadBalancerInfo>> {
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    registry.load_balancers(arns).await
}

pub async fn subnet_cidrs(
    network: &impl NetworkDirectory,
    subnets: &[String],
) -> Result<BTreeMap<String, Vec<IpNet>>> {
    if subnets.is_empty() {
        return Ok(BTreeMap::new());
    }
    network.subnet_cidrs(subnets).await
}

pub async fn ingress_rules(
    firewall: &impl FirewallRules,
    groups: &[SecurityGroupId],
) -> Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>> {
    if groups.is_empty() {
        return Ok(BTreeMap::new());
    }
    firewall.ingress_rules(groups).await
}
