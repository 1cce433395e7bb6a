//! Ports: the narrow capabilities the reconcile loop needs from the outside world.
//! Adapters implement them on the AWS SDK and on kube; the core never sees those types.

use crate::error::Result;
use crate::model::SecurityGroupId;
use crate::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use crate::model::cluster::ClusterSnapshot;
use crate::model::network::NetworkFacts;
use crate::model::{AssumeRole, Permission, Target, TargetGroupRef};
use crate::pure::binding::TargetGroupSelector;
use crate::pure::plan::GateChange;
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms, WatchClaim};
use crate::state::ownership::{OwnershipRecord, RecordWrite};
use crate::state::status::{BindingStatus, StatusWrite};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

/// Reads the bindings, Services, EndpointSlices and Nodes of one cluster.
pub trait EndpointSource {
    /// Every read fails as a whole: a partial snapshot would look like vanished endpoints.
    fn snapshot(&self) -> impl Future<Output = Result<Arc<ClusterSnapshot>>> + Send;
    /// Writes a TargetGroupBinding resource's `status` (observedGeneration and a `Ready`
    /// condition). Fails when the identity may not write it; the state table has it anyway.
    fn publish_status(&self, status: &BindingStatus) -> impl Future<Output = Result<()>> + Send;
    /// Sets one readiness-gate condition on a pod's status, leaving its other conditions as
    /// they are. [`crate::Error::PodStatusForbidden`] when the identity may not;
    /// [`crate::Error::PodNotFound`] when the pod is gone.
    fn set_pod_condition(&self, change: &GateChange) -> impl Future<Output = Result<()>> + Send;
}

/// A target to register, with the availability zone to register it in (`all` for IPs outside
/// the target group's VPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub target: Target,
    pub availability_zone: Option<String>,
}

/// ELBv2 target groups and their targets.
pub trait TargetRegistry {
    /// Every target group of the account and region, with its tags.
    fn target_groups(&self) -> impl Future<Output = Result<Vec<TargetGroupInfo>>> + Send;
    /// One target group in another account, reached through a role. `None` when it does not exist.
    fn foreign_target_group(
        &self,
        selector: &TargetGroupSelector,
        role: &AssumeRole,
    ) -> impl Future<Output = Result<Option<TargetGroupInfo>>> + Send;
    /// The registered targets, read fresh. A missing target group is [`crate::Error::TargetGroupNotFound`].
    fn target_health(
        &self,
        target_group: &TargetGroupRef,
    ) -> impl Future<Output = Result<Vec<ObservedTarget>>> + Send;
    /// The load balancers with these ARNs (missing ones are left out).
    fn load_balancers(
        &self,
        arns: &[String],
    ) -> impl Future<Output = Result<Vec<LoadBalancerInfo>>> + Send;
    /// At most [`crate::shell::apply::BATCH_SIZE`] targets per call.
    fn register_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Registration],
    ) -> impl Future<Output = Result<()>> + Send;
    fn deregister_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Target],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// EC2 networking facts.
pub trait NetworkDirectory {
    /// The interfaces of these instances (primary ones, and every private IP they hold), the
    /// interfaces holding the `ips` not found on them, and the tags of the groups of any
    /// interface with several groups.
    fn network_facts(
        &self,
        instance_ids: &[String],
        ips: &[Arc<str>],
    ) -> impl Future<Output = Result<NetworkFacts>> + Send;
    /// The IPv4 and IPv6 CIDRs of each subnet; unknown subnets are left out.
    fn subnet_cidrs(
        &self,
        subnet_ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, Vec<IpNet>>>> + Send;
    /// The EKS clusters an instance belongs to, by its tags; `None` when the instance is not
    /// found (long gone), an empty set when it belongs to none.
    fn instance_clusters(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<BTreeSet<String>>>> + Send;
    /// The IPv4 and IPv6 CIDRs of each VPC; a VPC that does not exist is absent from the map.
    fn vpc_cidrs(
        &self,
        vpc_ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, Vec<IpNet>>>> + Send;
}

/// What the state table holds for a cluster, besides its lease.
#[derive(Debug, Clone, Default)]
pub struct StoredState {
    pub records: Vec<OwnershipRecord>,
    pub statuses: Vec<BindingStatus>,
}

/// The state table: ownership records and the lease, per cluster. `Sync`, so that the provided
/// [`OwnershipStore::load_state`] may hold it across its reads.
pub trait OwnershipStore: Sync {
    /// Takes the cluster's lease when it is free or expired; otherwise marks it dirty.
    fn acquire_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
    ) -> impl Future<Output = Result<LeaseClaim>> + Send;
    /// Renews the lease for another `terms.seconds`; `false` when it is no longer ours.
    fn extend_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Lets the lease go, unless it was marked dirty and `may_run_again`: then it is kept
    /// (clean, renewed) for one more run.
    fn release_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
        may_run_again: bool,
    ) -> impl Future<Output = Result<LeaseRelease>> + Send;

    fn load(&self, cluster: &str) -> impl Future<Output = Result<Vec<OwnershipRecord>>> + Send;
    /// The records and the statuses together: a run needs both, and a store that keeps them
    /// side by side reads them at once.
    fn load_state(&self, cluster: &str) -> impl Future<Output = Result<StoredState>> + Send {
        async move {
            Ok(StoredState {
                records: self.load(cluster).await?,
                statuses: self.load_statuses(cluster).await?,
            })
        }
    }
    /// Saves and forgets records, in as few calls as the store takes (DynamoDB: 25 items a
    /// call). One answer per write, in order: a write that did not land fails alone, wherever
    /// the store can tell which one it was.
    fn write_records(
        &self,
        cluster: &str,
        writes: &[RecordWrite<'_>],
    ) -> impl Future<Output = Vec<Result<()>>> + Send;
    /// The last status of every binding (see [`crate::pure::status`]).
    fn load_statuses(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<BindingStatus>>> + Send;
    /// Saves and forgets statuses, batched and answered as [`OwnershipStore::write_records`].
    fn write_statuses(
        &self,
        cluster: &str,
        writes: &[StatusWrite<'_>],
    ) -> impl Future<Output = Vec<Result<()>>> + Send;
}

/// The watch lease of each cluster, apart from the write lease: it says who follows the
/// cluster, while the write lease still says who writes.
pub trait WatchLeases: Sync {
    /// Takes the watch lease when nobody holds it or it lapsed.
    fn claim_watch(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
    ) -> impl Future<Output = Result<WatchClaim>> + Send;
    /// Renews it for another `terms.seconds`; `false` when it is no longer ours.
    fn renew_watch(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Lets it go, if it is still ours.
    fn release_watch(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// EC2 security-group ingress rules.
pub trait FirewallRules {
    /// Which of these groups exist (one batched read, so a bad reference is found before any
    /// write).
    fn existing_groups(
        &self,
        ids: &[SecurityGroupId],
    ) -> impl Future<Output = Result<BTreeSet<SecurityGroupId>>> + Send;
    /// The inbound rules of each existing group, one peer per rule, with the cluster named by
    /// our ownership marker when a rule carries one.
    fn ingress_rules(
        &self,
        groups: &[SecurityGroupId],
    ) -> impl Future<Output = Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>>> + Send;
    /// Authorizes rules in one group, each tagged as owned by `cluster`.
    fn authorize_ingress(
        &self,
        group: &SecurityGroupId,
        permissions: &[Permission],
        cluster: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Revokes rules by id (never by shape: an identical foreign rule must survive).
    fn revoke_ingress(
        &self,
        group: &SecurityGroupId,
        rule_ids: &[String],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Everything a run talks to besides the cluster, borrowed for one run.
pub struct Ports<'a, R, N, F, S> {
    pub registry: &'a R,
    pub network: &'a N,
    pub firewall: &'a F,
    pub store: &'a S,
}
