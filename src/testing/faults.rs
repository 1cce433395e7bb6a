//! Faults between a run and its ports: any ports (the real adapters, a [`MemoryCloud`]) behind
//! [`Faulty`], which lets calls through until a fault strikes. Faults are counted in writes —
//! registrations, deregistrations, authorizations, revocations and batches of ownership records
//! — that reached the ports; statuses and lease calls are not writes.
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
use crate::state::ownership::{OwnershipRecord, RecordWrite};
use crate::state::status::{BindingStatus, StatusWrite};
use futures::future::BoxFuture;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What goes wrong in a faulty run, counted in writes that landed.
#[derive(Default)]
pub struct Faults<'a> {
    /// The process dies right after this many writes: the last lands, nothing after it (every
    /// later call fails).
    pub crash_after: Option<usize>,
    /// Once this many writes have landed, the run stalls right after the last of them until
    /// its lease (the last one taken through this wrapper) has lapsed, and this other run takes
    /// it (through the wrapped store): the only way a lease changes hands under a live run.
    pub steal_lease: Option<(usize, &'a LeaseTerms)>,
    /// Awaited once, right before the first write: something done out of band meanwhile (a
    /// target group deleted in the console, say).
    pub before_first_write: Option<BoxFuture<'a, ()>>,
    /// Registrations into this target group are refused, as ELB refuses an invalid target.
    pub refuse_registrations: Option<&'a str>,
    /// The record writes of this binding are left unprocessed in every batch, as DynamoDB
    /// leaves items of a BatchWriteItem it could not take; the rest of each batch lands.
    pub unprocessed_records: Option<&'a BindingId>,
}

/// `ports`, with `faults` striking between the run and them.
pub struct Faulty<'a, R, N, F, S> {
    ports: Ports<'a, R, N, F, S>,
    crash_after: Option<usize>,
    steal_lease: Option<(usize, &'a LeaseTerms)>,
    stolen: AtomicBool,
    /// The cluster and term (seconds) of the last lease taken through this wrapper.
    held: Mutex<Option<(String, u64)>>,
    /// In a mutex: a boxed future is `Send` but not `Sync`, and the ports are shared.
    before_first_write: Mutex<Option<BoxFuture<'a, ()>>>,
    refuse_registrations: Option<&'a str>,
    unprocessed_records: Option<&'a BindingId>,
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
            held: Mutex::new(None),
            before_first_write: Mutex::new(faults.before_first_write),
            refuse_registrations: faults.refuse_registrations,
            unprocessed_records: faults.unprocessed_records,
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
            Err(crashed())
        } else {
            Ok(())
        }
    }
}

impl<R, N, F, S: OwnershipStore> Faulty<'_, R, N, F, S> {
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
        self.stall_and_steal(landed).await?;
        result
    }

    /// After the write that [`Faults::steal_lease`] names: the run stalls past its lease, and
    /// the thief takes the lapsed lease.
    async fn stall_and_steal(&self, landed: usize) -> Result<()> {
        let Some((after, thief)) = self.steal_lease else {
            return Ok(());
        };
        if after != landed || self.stolen.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some((cluster, seconds)) = held else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(seconds) + Duration::from_millis(200)).await;
        let taken = self.ports.store.acquire_lease(&cluster, thief).await?;
        assert_eq!(taken, LeaseClaim::Acquired, "the lapsed lease is taken");
        Ok(())
    }
}

/// What every call answers once the process has crashed.
fn crashed() -> Error {
    Error::Config("crashed".into())
}

impl<R, N, F, S> TargetRegistry for Faulty<'_, R, N, F, S>
where
    R: TargetRegistry + Sync,
    N: Sync,
    F: Sync,
    S: OwnershipStore,
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
    S: OwnershipStore,
{
    async fn instance_clusters(&self, instance: &str) -> Result<Option<BTreeSet<String>>> {
        self.read(self.ports.network.instance_clusters(instance))
            .await
    }
    async fn network_facts(&self, instances: &[String], ips: &[Arc<str>]) -> Result<NetworkFacts> {
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
    S: OwnershipStore,
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
    async fn write_statuses(&self, cluster: &str, writes: &[StatusWrite<'_>]) -> Vec<Result<()>> {
        match self.alive() {
            Ok(()) => self.ports.store.write_statuses(cluster, writes).await,
            Err(_) => writes.iter().map(|_| Err(crashed())).collect(),
        }
    }
    async fn acquire_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<LeaseClaim> {
        let claim = self
            .read(self.ports.store.acquire_lease(cluster, terms))
            .await;
        if let Ok(LeaseClaim::Acquired) = claim {
            *self.held.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((cluster.to_string(), terms.seconds));
        }
        claim
    }
    async fn extend_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
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
    async fn write_records(&self, cluster: &str, writes: &[RecordWrite<'_>]) -> Vec<Result<()>> {
        let left_out =
            |write: &RecordWrite<'_>| Some(&write.record().binding) == self.unprocessed_records;
        let sent: Vec<RecordWrite<'_>> = writes.iter().filter(|w| !left_out(w)).copied().collect();
        // One batch, one write: it reached the store whether or not every item landed.
        let answers = self
            .write(async {
                if sent.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(self.ports.store.write_records(cluster, &sent).await)
            })
            .await;
        let mut answers = match answers {
            Ok(answers) => answers.into_iter(),
            Err(_) => return writes.iter().map(|_| Err(crashed())).collect(),
        };
        writes
            .iter()
            .map(|write| {
                if left_out(write) {
                    return Err(unprocessed(write));
                }
                answers
                    .next()
                    .unwrap_or_else(|| Err(Error::Config("the store gave no answer".into())))
            })
            .collect()
    }
}

/// The error of a record write DynamoDB left unprocessed, as the adapter reports it.
fn unprocessed(write: &RecordWrite<'_>) -> Error {
    let (table, source) = (
        "faulty".to_string(),
        "left unprocessed by BatchWriteItem".into(),
    );
    match write {
        RecordWrite::Save(record) => Error::SaveOwnership {
            table,
            binding: record.binding.clone(),
            source,
        },
        RecordWrite::Forget(record) => Error::ForgetOwnership {
            table,
            binding: record.binding.clone(),
            source,
        },
    }
}

#[cfg(test)]
mod tests;
