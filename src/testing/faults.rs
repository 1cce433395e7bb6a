//! Faults between a run and its ports: any ports (the real adapters, a [`MemoryCloud`]) behind
//! [`Faulty`], which lets calls through until a fault strikes. Faults are counted in writes —
//! registrations, deregistrations, authorizations, revocations and ownership records — that
//! reached the ports; statuses and lease calls are not writes.
//!
//! [`MemoryCloud`]: super::MemoryCloud

use crate::error::{Error, Result};
use crate::model::SecurityGroupId;
use crate::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use crate::model::network::NetworkFacts;
use crate::model::{AssumeRole, BindingId, Permission, Target, TargetGroupRef};
use crate::ports::{
    FirewallRules, NetworkDirectory, OwnershipStore, Ports, Registration, StoredState,
    TargetRegistry,
};
use crate::pure::binding::TargetGroupSelector;
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms};
use crate::state::ownership::OwnershipRecord;
use crate::state::status::BindingStatus;
use futures::future::BoxFuture;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// What goes wrong in a faulty run, counted in writes that landed.
#[derive(Default)]
pub struct Faults<'a> {
    /// The process dies right after this many writes: the last lands, nothing after it (every
    /// later call fails).
    pub crash_after: Option<usize>,
    /// Once this many writes have landed, the next lease renewal waits out the lease, which
    /// this other run then takes (through the wrapped store).
    pub steal_lease: Option<(usize, &'a LeaseTerms)>,
    /// Awaited once, right before the first write: something done out of band meanwhile (a
    /// target group deleted in the console, say).
    pub before_first_write: Option<BoxFuture<'a, ()>>,
    /// Registrations into this target group are refused, as ELB refuses an invalid target.
    pub refuse_registrations: Option<&'a str>,
}

/// `ports`, with `faults` striking between the run and them.
pub struct Faulty<'a, R, N, F, S> {
    ports: Ports<'a, R, N, F, S>,
    crash_after: Option<usize>,
    steal_lease: Option<(usize, &'a LeaseTerms)>,
    stolen: AtomicBool,
    /// In a mutex: a boxed future is `Send` but not `Sync`, and the ports are shared.
    before_first_write: Mutex<Option<BoxFuture<'a, ()>>>,
    refuse_registrations: Option<&'a str>,
    writes: AtomicUsize,
    dead: AtomicBool,
}

impl<'a, R, N, F, S> Faulty<'a, R, N, F, S> {
    pub fn new(ports: Ports<'a, R, N, F, S>, faults: Faults<'a>) -> Self {
        Self {
            ports,
            crash_after: faults.crash_after,
            steal_lease: faults.steal_lease,
            stolen: AtomicBool::new(false),
            before_first_write: Mutex::new(faults.before_first_write),
            refuse_registrations: faults.refuse_registrations,
            writes: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
        }
    }

    /// The ports of a run through the faults.
    pub fn ports(&self) -> Ports<'_, Self, Self, Self, Self> {
        Ports {
            registry: self,
            network: self,
            firewall: self,
            store: self,
        }
    }

    /// Writes that reached the wrapped ports (or were refused by [`Faults::refuse_registrations`]).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn alive(&self) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            Err(Error::Config("crashed".into()))
        } else {
            Ok(())
        }
    }

    async fn read<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.alive()?;
        call.await
    }

    async fn write<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.alive()?;
        let hook = self
            .before_first_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook.await;
        }
        let result = call.await;
        let landed = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_after.is_some_and(|k| landed >= k) {
            self.dead.store(true, Ordering::SeqCst);
        }
        result
    }
}

impl<R, N, F, S> TargetRegistry for Faulty<'_, R, N, F, S>
where
    R: TargetRegistry + Sync,
    N: Sync,
    F: Sync,
    S: Sync,
{
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        self.read(self.ports.registry.target_groups()).await
    }
    async fn foreign_target_group(
        &self,
        selector: &TargetGroupSelector,
        role: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        self.read(self.ports.registry.foreign_target_group(selector, role))
            .await
    }
    async fn load_balancers(&self, arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        self.read(self.ports.registry.load_balancers(arns)).await
    }
    async fn target_health(&self, tg: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        self.read(self.ports.registry.target_health(tg)).await
    }
    async fn register_targets(&self, tg: &TargetGroupRef, targets: &[Registration]) -> Result<()> {
        if self.refuse_registrations == Some(tg.arn.as_str()) {
            let refused = "InvalidTarget: the target is not in a running state".into();
            return self
                .write(async {
                    Err(Error::RegisterTargets {
                        target_group: tg.arn.clone(),
                        source: refused,
                    })
                })
                .await;
        }
        self.write(self.ports.registry.register_targets(tg, targets))
            .await
    }
    async fn deregister_targets(&self, tg: &TargetGroupRef, targets: &[Target]) -> Result<()> {
        self.write(self.ports.registry.deregister_targets(tg, targets))
            .await
    }
}

impl<R, N, F, S> NetworkDirectory for Faulty<'_, R, N, F, S>
where
    R: Sync,
    N: NetworkDirectory + Sync,
    F: Sync,
    S: Sync,
{
    async fn instance_clusters(&self, instance: &str) -> Result<Option<BTreeSet<String>>> {
        self.read(self.ports.network.instance_clusters(instance))
            .await
    }
    async fn network_facts(&self, instances: &[String], ips: &[String]) -> Result<NetworkFacts> {
        self.read(self.ports.network.network_facts(instances, ips))
            .await
    }
    async fn subnet_cidrs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        self.read(self.ports.network.subnet_cidrs(ids)).await
    }
    async fn vpc_cidrs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        self.read(self.ports.network.vpc_cidrs(ids)).await
    }
}

impl<R, N, F, S> FirewallRules for Faulty<'_, R, N, F, S>
where
    R: Sync,
    N: Sync,
    F: FirewallRules + Sync,
    S: Sync,
{
    async fn existing_groups(&self, ids: &[SecurityGroupId]) -> Result<BTreeSet<SecurityGroupId>> {
        self.read(self.ports.firewall.existing_groups(ids)).await
    }
    async fn ingress_rules(
        &self,
        groups: &[SecurityGroupId],
    ) -> Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>> {
        self.read(self.ports.firewall.ingress_rules(groups)).await
    }
    async fn authorize_ingress(
        &self,
        group: &SecurityGroupId,
        permissions: &[Permission],
        cluster: &str,
    ) -> Result<()> {
        self.write(
            self.ports
                .firewall
                .authorize_ingress(group, permissions, cluster),
        )
        .await
    }
    async fn revoke_ingress(&self, group: &SecurityGroupId, ids: &[String]) -> Result<()> {
        self.write(self.ports.firewall.revoke_ingress(group, ids))
            .await
    }
}

impl<R, N, F, S> OwnershipStore for Faulty<'_, R, N, F, S>
where
    R: Sync,
    N: Sync,
    F: Sync,
    S: OwnershipStore,
{
    async fn load_statuses(&self, cluster: &str) -> Result<Vec<BindingStatus>> {
        self.read(self.ports.store.load_statuses(cluster)).await
    }
    async fn save_status(&self, cluster: &str, status: &BindingStatus) -> Result<()> {
        self.read(self.ports.store.save_status(cluster, status))
            .await
    }
    async fn forget_status(&self, cluster: &str, binding: &BindingId) -> Result<()> {
        self.read(self.ports.store.forget_status(cluster, binding))
            .await
    }
    async fn acquire_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<LeaseClaim> {
        self.read(self.ports.store.acquire_lease(cluster, terms))
            .await
    }
    async fn extend_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
        if let Some((after, thief)) = self.steal_lease
            && after == self.writes()
            && !self.stolen.swap(true, Ordering::SeqCst)
        {
            // The run stalled past its lease, and another took it.
            tokio::time::sleep(Duration::from_secs(terms.seconds) + Duration::from_millis(200))
                .await;
            let taken = self.ports.store.acquire_lease(cluster, thief).await?;
            assert_eq!(taken, LeaseClaim::Acquired, "the lapsed lease is taken");
        }
        self.read(self.ports.store.extend_lease(cluster, terms))
            .await
    }
    async fn release_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
        may_run_again: bool,
    ) -> Result<LeaseRelease> {
        self.read(
            self.ports
                .store
                .release_lease(cluster, terms, may_run_again),
        )
        .await
    }
    async fn load(&self, cluster: &str) -> Result<Vec<OwnershipRecord>> {
        self.read(self.ports.store.load(cluster)).await
    }
    async fn load_state(&self, cluster: &str) -> Result<StoredState> {
        // The wrapped store's own way (one query, on DynamoDB), not the provided two reads.
        self.read(self.ports.store.load_state(cluster)).await
    }
    async fn save(&self, cluster: &str, record: &OwnershipRecord) -> Result<()> {
        self.write(self.ports.store.save(cluster, record)).await
    }
    async fn forget(&self, cluster: &str, record: &OwnershipRecord) -> Result<()> {
        self.write(self.ports.store.forget(cluster, record)).await
    }
}

#[cfg(test)]
mod tests;
