//! What a watcher's narrowed runs take from an earlier read instead of reading AWS again: the
//! target groups with their tags (which bindings exist, and where; kept for a minute), and the
//! CIDRs of VPCs. Both change rarely and only on the AWS side, where events and the next sweep
//! see them; a change of endpoints then costs the target-health reads of its target groups and
//! the writes.

use crate::error::Result;
use crate::model::aws::{LoadBalancerInfo, ObservedTarget, TargetGroupInfo};
use crate::model::network::NetworkFacts;
use crate::model::{AssumeRole, Target, TargetGroupRef};
use crate::ports::{NetworkDirectory, Registration, TargetRegistry};
use crate::pure::binding::TargetGroupSelector;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long target groups and their tags are taken from an earlier read: within a burst of
/// changes, not longer, so that a long-running watcher never plans from tags (which bindings
/// exist, which Service each names) edited since; at most one read of them a minute while
/// changes come, none while idle.
const TARGET_GROUPS_KEPT_FOR: Duration = Duration::from_secs(60);

/// The facts kept from the last sweep of one watch.
#[derive(Debug, Default)]
pub struct Reused {
    /// When they were read, and what.
    target_groups: Mutex<Option<(Instant, Vec<TargetGroupInfo>)>>,
    vpc_cidrs: Mutex<BTreeMap<String, Vec<IpNet>>>,
}

/// A registry that answers the target groups from an earlier read (of at most
/// [`TARGET_GROUPS_KEPT_FOR`] ago) when `reuse` is set, and keeps what it reads otherwise.
/// Everything else goes to AWS.
pub struct ReusingRegistry<'a, R> {
    pub inner: &'a R,
    pub reused: &'a Reused,
    pub reuse: bool,
}

impl<R: TargetRegistry + Sync> TargetRegistry for ReusingRegistry<'_, R> {
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        let kept = self
            .reused
            .target_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let fresh = kept.filter(|(read_at, _)| read_at.elapsed() < TARGET_GROUPS_KEPT_FOR);
        if let Some((_, groups)) = fresh.filter(|_| self.reuse) {
            return Ok(groups);
        }
        let groups = self.inner.target_groups().await?;
        *self
            .reused
            .target_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), groups.clone()));
        Ok(groups)
    }

    async fn foreign_target_group(
        &self,
        selector: &TargetGroupSelector,
        role: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        self.inner.foreign_target_group(selector, role).await
    }

    async fn target_health(&self, target_group: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        self.inner.target_health(target_group).await
    }

    async fn load_balancers(&self, arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        self.inner.load_balancers(arns).await
    }

    async fn register_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Registration],
    ) -> Result<()> {
        self.inner.register_targets(target_group, targets).await
    }

    async fn deregister_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Target],
    ) -> Result<()> {
        self.inner.deregister_targets(target_group, targets).await
    }
}

/// A directory that answers VPC CIDRs it has read before when `reuse` is set. Everything else
/// goes to AWS.
pub struct ReusingNetwork<'a, N> {
    pub inner: &'a N,
    pub reused: &'a Reused,
    pub reuse: bool,
}

impl<N: NetworkDirectory + Sync> NetworkDirectory for ReusingNetwork<'_, N> {
    async fn network_facts(
        &self,
        instance_ids: &[String],
        ips: &[Arc<str>],
    ) -> Result<NetworkFacts> {
        self.inner.network_facts(instance_ids, ips).await
    }

    async fn subnet_cidrs(&self, subnet_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        self.inner.subnet_cidrs(subnet_ids).await
    }

    async fn instance_clusters(&self, instance_id: &str) -> Result<Option<BTreeSet<String>>> {
        self.inner.instance_clusters(instance_id).await
    }

    async fn vpc_cidrs(&self, vpc_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let kept: Option<BTreeMap<String, Vec<IpNet>>> = {
            let cache = self
                .reused
                .vpc_cidrs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            vpc_ids
                .iter()
                .map(|id| Some((id.clone(), cache.get(id)?.clone())))
                .collect()
        };
        if let Some(answer) = kept.filter(|_| self.reuse) {
            return Ok(answer);
        }
        let answer = self.inner.vpc_cidrs(vpc_ids).await?;
        self.reused
            .vpc_cidrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(answer.clone());
        Ok(answer)
    }
}
