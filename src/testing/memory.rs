//! Every port served from memory. Writes change the state the way AWS changes it — a
//! registered target is there (healthy) at the next read, an authorized rule has a fresh id and
//! our ownership marker, the lease follows the state table's conditions — so a second run
//! finds what the first one did. What AWS refuses is refused too: a target group, security
//! group or peer group that does not exist, a duplicate rule, an unknown rule id.
//!
//! Every write and lease call is logged in order ([`MemoryCloud::calls`]), for tests that
//! assert on what was done and when.

use crate::error::{Error, Result};
use crate::model::SecurityGroupId;
use crate::model::TargetGroupArn;
use crate::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use crate::model::cluster::ClusterSnapshot;
use crate::model::network::{AskedAddresses, Eni, NetworkFacts};
use crate::model::{
    AssumeRole, BindingId, IpFamily, Peer, Permission, Target, TargetGroupRef, TargetType,
};
use crate::ports::{
    EndpointSource, FirewallRules, NetworkDirectory, OwnershipStore, Ports, Registration,
    TargetRegistry,
};
use crate::pure::binding::TargetGroupSelector;
use crate::pure::plan::GateChange;
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms};
use crate::state::ownership::{OwnershipRecord, RecordWrite};
use crate::state::status::{BindingStatus, StatusWrite};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who holds a lease once [`MemoryCloud::losing_lease_after_renewals`] has taken it away.
pub const ANOTHER_RUN: &str = "another run";

/// A cloud, a cluster and a state table in memory. Built with the `with_*` methods; the
/// `refusing_*`/`losing_*` ones add failures.
pub struct MemoryCloud {
    state: Mutex<State>,
    calls: Mutex<Vec<String>>,
    log_calls: bool,
}

#[derive(Default)]
struct State {
    snapshot: Arc<ClusterSnapshot>,
    published: BTreeMap<BindingId, BindingStatus>,
    /// Every target group, this account's and those reached through a role, by ARN.
    target_groups: BTreeMap<TargetGroupArn, TargetGroup>,
    load_balancers: BTreeMap<String, LoadBalancerInfo>,
    instances: BTreeMap<String, Instance>,
    interfaces: BTreeMap<String, Interface>,
    /// Which interface holds each address: lookups by address stay logarithmic at scale.
    interface_of_ip: HashMap<String, String>,
    subnets: BTreeMap<String, Vec<IpNet>>,
    vpcs: BTreeMap<String, Vec<IpNet>>,
    security_groups: BTreeMap<SecurityGroupId, SecurityGroup>,
    rules_created: u64,
    tables: BTreeMap<String, Table>,
    /// Added to the system clock, so a test can let a lease lapse without waiting.
    clock_offset: Duration,
    refused_registrations: BTreeSet<String>,
    /// Renewals left before the lease passes to [`ANOTHER_RUN`]; `None`: never.
    renewals_before_loss: Option<usize>,
    /// How long each write of targets, rules or records takes, on tokio's clock.
    write_time: Duration,
    /// Whether a registration needs an ownership record naming the target first.
    records_before_registrations: bool,
}

struct TargetGroup {
    info: TargetGroupInfo,
    /// The role it is reached through; `None` for this account's.
    role: Option<String>,
    targets: BTreeMap<Target, ObservedTarget>,
}

#[derive(Default)]
struct Instance {
    /// Interface ids, the primary one (device index 0) first.
    interfaces: Vec<String>,
    clusters: BTreeSet<String>,
}

struct Interface {
    eni: Arc<Eni>,
    ips: Vec<String>,
}

#[derive(Default)]
struct SecurityGroup {
    tags: BTreeMap<String, String>,
    rules: BTreeMap<String, ObservedRule>,
}

/// One cluster's partition of the state table.
#[derive(Default)]
struct Table {
    records: BTreeMap<(BindingId, TargetGroupArn), OwnershipRecord>,
    statuses: BTreeMap<BindingId, BindingStatus>,
    lease: Option<Lease>,
}

struct Lease {
    holder: String,
    /// Epoch milliseconds, as the state table's `lease_until`.
    until: u64,
    dirty: bool,
}

/// A target group of this shape: HTTP on port 80, IPv4, health-checked on the traffic port,
/// in no VPC and on no load balancer; named by its ARN's `targetgroup/<name>/` part.
pub fn target_group(arn: &str, target_type: TargetType) -> TargetGroupInfo {
    let arn = TargetGroupArn::from(arn);
    let name = arn.name().unwrap_or(&arn).to_string();
    TargetGroupInfo {
        name,
        arn,
        target_type: Some(target_type),
        raw_target_type: target_type.to_string(),
        ip_family: IpFamily::Ipv4,
        vpc_id: None,
        protocol: Some("HTTP".into()),
        port: Some(80),
        load_balancer_arns: Vec::new(),
        tags: BTreeMap::new(),
        health_check_protocol: Some("HTTP".into()),
        health_check_port: Some("traffic-port".into()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked mid-call leaves plain data behind, still worth reading.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for MemoryCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCloud {
    /// An empty cloud and cluster, logging its calls.
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            calls: Mutex::default(),
            log_calls: true,
        }
    }

    /// The ports of one run, all served by this cloud.
    pub fn ports(&self) -> Ports<'_, Self, Self, Self, Self> {
        Ports {
            registry: self,
            network: self,
            firewall: self,
            store: self,
        }
    }

    /// Every write and lease call so far, in order: `register <arn> x<n>`, `deregister …`,
    /// `authorize <group> x<n>`, `revoke <group> x<n>`, a batch of records as `records: save
    /// <arn> x<targets>; forget <arn>`, a batch of statuses as `statuses: save status <binding>;
    /// forget status <binding>`, `publish status <binding>`, and `acquire lease (…)`, `renew
    /// lease (held|lost)`, `release lease (…)`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// No call log: the benchmark counts the allocations of the product alone.
    pub fn without_call_log(mut self) -> Self {
        self.log_calls = false;
        self
    }

    fn log(&self, call: impl FnOnce() -> String) {
        if self.log_calls {
            lock(&self.calls).push(call());
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Lets a write's time pass.
    async fn write_takes_time(&self) {
        let time = self.state().write_time;
        if !time.is_zero() {
            tokio::time::sleep(time).await;
        }
    }

    fn seed(self, change: impl FnOnce(&mut State)) -> Self {
        change(&mut self.state());
        self
    }

    // ---- What the world holds ----

    /// What the cluster's API answers.
    pub fn with_snapshot(self, snapshot: ClusterSnapshot) -> Self {
        self.seed(|s| s.snapshot = Arc::new(snapshot))
    }

    /// A target group of this account, with no targets.
    pub fn with_target_group(self, info: TargetGroupInfo) -> Self {
        self.seed(|s| s.add_target_group(info, None))
    }

    /// A target group of another account, found through `role_arn` only.
    pub fn with_foreign_target_group(self, role_arn: &str, info: TargetGroupInfo) -> Self {
        self.seed(|s| s.add_target_group(info, Some(role_arn.to_string())))
    }

    /// Targets already registered (healthy) in a target group added before.
    pub fn with_targets(self, arn: &str, targets: &[Target]) -> Self {
        self.seed(|s| {
            if let Some(group) = s.target_groups.get_mut(arn) {
                for target in targets {
                    group.targets.insert(target.clone(), healthy(target, None));
                }
            }
        })
    }

    pub fn with_load_balancer(self, info: LoadBalancerInfo) -> Self {
        self.seed(|s| {
            s.load_balancers.insert(info.arn.clone(), info);
        })
    }

    /// An instance whose primary interface is `primary`, holding `ips`.
    pub fn with_instance(self, instance: &str, primary: Eni, ips: Vec<String>) -> Self {
        self.seed(|s| {
            let id = primary.id.clone();
            s.add_interface(primary, ips);
            s.instances.insert(
                instance.to_string(),
                Instance {
                    interfaces: vec![id],
                    clusters: BTreeSet::new(),
                },
            );
        })
    }

    /// Tags an instance as a node of `cluster` (an instance added before).
    pub fn with_instance_cluster(self, instance: &str, cluster: &str) -> Self {
        self.seed(|s| {
            if let Some(instance) = s.instances.get_mut(instance) {
                instance.clusters.insert(cluster.to_string());
            }
        })
    }

    /// An interface on no instance (a branch interface, Fargate), holding `ips`.
    pub fn with_interface(self, eni: Eni, ips: Vec<String>) -> Self {
        self.seed(|s| s.add_interface(eni, ips))
    }

    pub fn with_subnet(self, id: &str, cidrs: Vec<IpNet>) -> Self {
        self.seed(|s| {
            s.subnets.insert(id.to_string(), cidrs);
        })
    }

    pub fn with_vpc(self, id: &str, cidrs: Vec<IpNet>) -> Self {
        self.seed(|s| {
            s.vpcs.insert(id.to_string(), cidrs);
        })
    }

    /// A security group with no rules.
    pub fn with_security_group(self, id: &str) -> Self {
        self.seed(|s| {
            s.security_groups.entry(id.into()).or_default();
        })
    }

    /// A tag on a security group (added if it is not there yet).
    pub fn with_group_tag(self, id: &str, key: &str, value: &str) -> Self {
        self.seed(|s| {
            let group = s.security_groups.entry(id.into()).or_default();
            group.tags.insert(key.to_string(), value.to_string());
        })
    }

    /// A rule already in a security group (added if it is not there yet), with its own id.
    pub fn with_rule(self, group: &str, rule: ObservedRule) -> Self {
        self.seed(|s| {
            let group = s.security_groups.entry(group.into()).or_default();
            group.rules.insert(rule.rule_id.clone(), rule);
        })
    }

    pub fn with_record(self, cluster: &str, record: OwnershipRecord) -> Self {
        self.seed(|s| {
            let key = (record.binding.clone(), record.target_group.arn.clone());
            s.table(cluster).records.insert(key, record);
        })
    }

    pub fn with_status(self, cluster: &str, status: BindingStatus) -> Self {
        self.seed(|s| {
            s.table(cluster)
                .statuses
                .insert(status.binding.clone(), status);
        })
    }

    /// The cluster's lease, already taken under `terms` (clean, for `terms.seconds`).
    pub fn with_lease(self, cluster: &str, terms: &LeaseTerms) -> Self {
        self.seed(|s| {
            let until = s.lease_until(terms);
            s.table(cluster).lease = Some(Lease {
                holder: terms.holder.clone(),
                until,
                dirty: false,
            });
        })
    }

    // ---- Failures ----

    /// Registrations into this target group fail, as ELB refuses an invalid target.
    pub fn refusing_registrations(self, arn: &str) -> Self {
        self.seed(|s| {
            s.refused_registrations.insert(arn.to_string());
        })
    }

    /// Every write of targets, rules or records takes `time` on tokio's clock (a test with a
    /// paused clock lets it pass at once), so that leases age between writes.
    pub fn taking_per_write(self, time: Duration) -> Self {
        self.seed(|s| s.write_time = time)
    }

    /// Refuses to register a target that no ownership record names for its target group yet,
    /// as a check that records are written before registrations.
    pub fn requiring_records_before_registrations(self) -> Self {
        self.seed(|s| s.records_before_registrations = true)
    }

    /// After `renewals` successful renewals, the next one finds the lease taken by
    /// [`ANOTHER_RUN`] (as if the run had stalled past it), and so does every one after.
    pub fn losing_lease_after_renewals(self, renewals: usize) -> Self {
        self.seed(|s| s.renewals_before_loss = Some(renewals))
    }

    // ---- Out of band ----

    /// Deletes a target group and its targets, as someone in the console would.
    pub fn delete_target_group(&self, arn: &str) {
        self.state().target_groups.remove(arn);
    }

    /// Moves this cloud's clock forward (leases lapse by it).
    pub fn advance_clock(&self, by: Duration) {
        self.state().clock_offset += by;
    }

    /// The holder of the cluster's lease and whether it is marked dirty, lapsed or not;
    /// `None` when the state table has no lease.
    pub fn lease(&self, cluster: &str) -> Option<(String, bool)> {
        let state = self.state();
        let lease = state.tables.get(cluster)?.lease.as_ref()?;
        Some((lease.holder.clone(), lease.dirty))
    }

    /// The statuses published on the binding resources, by binding.
    pub fn published_statuses(&self) -> Vec<BindingStatus> {
        self.state().published.values().cloned().collect()
    }
}

fn healthy(target: &Target, availability_zone: Option<String>) -> ObservedTarget {
    ObservedTarget {
        target: target.clone(),
        availability_zone,
        state: "healthy".into(),
        why: None,
    }
}

impl State {
    fn add_target_group(&mut self, info: TargetGroupInfo, role: Option<String>) {
        let group = TargetGroup {
            info,
            role,
            targets: BTreeMap::new(),
        };
        self.target_groups.insert(group.info.arn.clone(), group);
    }

    fn add_interface(&mut self, eni: Eni, ips: Vec<String>) {
        for ip in &ips {
            self.interface_of_ip.insert(ip.clone(), eni.id.clone());
        }
        self.interfaces.insert(
            eni.id.clone(),
            Interface {
                eni: Arc::new(eni),
                ips,
            },
        );
    }

    fn table(&mut self, cluster: &str) -> &mut Table {
        self.tables.entry(cluster.to_string()).or_default()
    }

    fn now_millis(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.clock_offset);
        u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
    }

    fn lease_until(&self, terms: &LeaseTerms) -> u64 {
        self.now_millis()
            .saturating_add(terms.seconds.saturating_mul(1000))
    }

    /// Whether an ownership record of any cluster names `target` in the target group `arn`.
    fn recorded(&self, arn: &TargetGroupArn, target: &Target) -> bool {
        self.tables.values().any(|table| {
            table
                .records
                .values()
                .any(|r| &r.target_group.arn == arn && r.targets.contains(target))
        })
    }

    /// A peer group a permission names that does not exist.
    fn missing_peer<'p>(&self, permissions: &'p [Permission]) -> Option<&'p str> {
        permissions.iter().find_map(|p| match &p.peer {
            Peer::SecurityGroup(id) if !self.security_groups.contains_key(id) => Some(id.as_str()),
            _ => None,
        })
    }
}

impl EndpointSource for MemoryCloud {
    async fn snapshot(&self) -> Result<Arc<ClusterSnapshot>> {
        // Shared, as a watcher's in-memory view would be: a run only reads it.
        Ok(Arc::clone(&self.state().snapshot))
    }

    async fn publish_status(&self, status: &BindingStatus) -> Result<()> {
        self.log(|| format!("publish status {}", status.binding));
        self.state()
            .published
            .insert(status.binding.clone(), status.clone());
        Ok(())
    }

    async fn set_pod_condition(&self, change: &GateChange) -> Result<()> {
        self.log(|| {
            format!(
                "set pod {} {}={}",
                change.pod, change.condition_type, change.condition.status
            )
        });
        let mut state = self.state();
        let snapshot = Arc::make_mut(&mut state.snapshot);
        let pod = snapshot
            .pods
            .iter_mut()
            .find(|p| p.key() == change.pod)
            .ok_or_else(|| Error::PodNotFound {
                pod: change.pod.clone(),
                condition_type: change.condition_type.clone(),
            })?;
        // Only gates are kept of a pod's conditions here: a condition no gate waits on changes
        // nothing a run reads.
        if let Some(gate) = pod
            .gates
            .iter_mut()
            .find(|g| g.condition_type == change.condition_type)
        {
            gate.condition = Some(change.condition.clone());
        }
        Ok(())
    }
}

/// A run takes its cluster's source by value; a borrowed cloud serves as one.
impl EndpointSource for &MemoryCloud {
    async fn snapshot(&self) -> Result<Arc<ClusterSnapshot>> {
        (**self).snapshot().await
    }

    async fn publish_status(&self, status: &BindingStatus) -> Result<()> {
        (**self).publish_status(status).await
    }

    async fn set_pod_condition(&self, change: &GateChange) -> Result<()> {
        (**self).set_pod_condition(change).await
    }
}

impl TargetRegistry for MemoryCloud {
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        Ok(self
            .state()
            .target_groups
            .values()
            .filter(|g| g.role.is_none())
            .map(|g| g.info.clone())
            .collect())
    }

    async fn foreign_target_group(
        &self,
        selector: &TargetGroupSelector,
        role: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        let state = self.state();
        let mut reachable = state
            .target_groups
            .values()
            .filter(|g| g.role.as_deref() == Some(role.role_arn.as_str()));
        Ok(reachable
            .find(|g| match selector {
                TargetGroupSelector::Arn(arn) => &g.info.arn == arn,
                TargetGroupSelector::Name(name) => &g.info.name == name,
            })
            .map(|g| g.info.clone()))
    }

    async fn target_health(&self, target_group: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        match self.state().target_groups.get(&target_group.arn) {
            Some(group) => Ok(group.targets.values().cloned().collect()),
            None => Err(Error::TargetGroupNotFound {
                target_group: target_group.arn.clone(),
            }),
        }
    }

    async fn load_balancers(&self, arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        let state = self.state();
        Ok(arns
            .iter()
            .filter_map(|arn| state.load_balancers.get(arn).cloned())
            .collect())
    }

    async fn register_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Registration],
    ) -> Result<()> {
        self.write_takes_time().await;
        self.log(|| format!("register {} x{}", target_group.arn, targets.len()));
        let mut state = self.state();
        if state
            .refused_registrations
            .contains(target_group.arn.as_str())
        {
            return Err(Error::RegisterTargets {
                target_group: target_group.arn.clone(),
                source: "InvalidTarget".into(),
            });
        }
        if state.records_before_registrations
            && let Some(unrecorded) = targets
                .iter()
                .find(|r| !state.recorded(&target_group.arn, &r.target))
        {
            return Err(Error::RegisterTargets {
                target_group: target_group.arn.clone(),
                source: format!("no ownership record names {} yet", unrecorded.target).into(),
            });
        }
        let Some(group) = state.target_groups.get_mut(&target_group.arn) else {
            return Err(Error::TargetGroupNotFound {
                target_group: target_group.arn.clone(),
            });
        };
        for r in targets {
            let observed = healthy(&r.target, r.availability_zone.clone());
            group.targets.insert(r.target.clone(), observed);
        }
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Target],
    ) -> Result<()> {
        self.write_takes_time().await;
        self.log(|| format!("deregister {} x{}", target_group.arn, targets.len()));
        let mut state = self.state();
        let Some(group) = state.target_groups.get_mut(&target_group.arn) else {
            return Err(Error::TargetGroupNotFound {
                target_group: target_group.arn.clone(),
            });
        };
        for target in targets {
            group.targets.remove(target);
        }
        Ok(())
    }
}

impl NetworkDirectory for MemoryCloud {
    async fn network_facts(
        &self,
        instance_ids: &[String],
        ips: &[Arc<str>],
    ) -> Result<NetworkFacts> {
        let state = self.state();
        let mut facts = NetworkFacts::default();
        // As the adapter does: the targets' own addresses, shared.
        let asked = AskedAddresses::new(ips);
        for id in instance_ids {
            let Some(instance) = state.instances.get(id) else {
                continue;
            };
            for (index, eni) in instance.interfaces.iter().enumerate() {
                let Some(interface) = state.interfaces.get(eni) else {
                    continue;
                };
                if index == 0 {
                    facts.primary_eni.insert(id.clone(), interface.eni.clone());
                }
                for ip in &interface.ips {
                    facts.eni_by_ip.insert(asked.key(ip), interface.eni.clone());
                }
            }
        }
        // Addresses on none of those instances are looked up by address, as EC2 is asked.
        for ip in ips {
            if facts.eni_by_ip.contains_key(&**ip) {
                continue;
            }
            let interface = state
                .interface_of_ip
                .get(&**ip)
                .and_then(|eni| state.interfaces.get(eni));
            if let Some(interface) = interface {
                facts.eni_by_ip.insert(ip.clone(), interface.eni.clone());
            }
        }
        let ambiguous: BTreeSet<&SecurityGroupId> = facts
            .primary_eni
            .values()
            .chain(facts.eni_by_ip.values())
            .filter(|eni| eni.groups.len() > 1)
            .flat_map(|eni| eni.groups.iter())
            .collect();
        let tags: Vec<(SecurityGroupId, BTreeMap<String, String>)> = ambiguous
            .into_iter()
            .filter_map(|id| {
                let group = state.security_groups.get(id)?;
                Some((id.clone(), group.tags.clone()))
            })
            .collect();
        facts.group_tags.extend(tags);
        Ok(facts)
    }

    async fn subnet_cidrs(&self, subnet_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let state = self.state();
        Ok(subnet_ids
            .iter()
            .filter_map(|id| Some((id.clone(), state.subnets.get(id)?.clone())))
            .collect())
    }

    async fn instance_clusters(&self, instance_id: &str) -> Result<Option<BTreeSet<String>>> {
        Ok(self
            .state()
            .instances
            .get(instance_id)
            .map(|i| i.clusters.clone()))
    }

    async fn vpc_cidrs(&self, vpc_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let state = self.state();
        Ok(vpc_ids
            .iter()
            .filter_map(|id| Some((id.clone(), state.vpcs.get(id)?.clone())))
            .collect())
    }
}

impl FirewallRules for MemoryCloud {
    async fn existing_groups(&self, ids: &[SecurityGroupId]) -> Result<BTreeSet<SecurityGroupId>> {
        let state = self.state();
        Ok(ids
            .iter()
            .filter(|id| state.security_groups.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn ingress_rules(
        &self,
        groups: &[SecurityGroupId],
    ) -> Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>> {
        let state = self.state();
        Ok(groups
            .iter()
            .filter_map(|id| {
                let group = state.security_groups.get(id)?;
                Some((id.clone(), group.rules.values().cloned().collect()))
            })
            .collect())
    }

    async fn authorize_ingress(
        &self,
        group: &SecurityGroupId,
        permissions: &[Permission],
        cluster: &str,
    ) -> Result<()> {
        self.write_takes_time().await;
        self.log(|| format!("authorize {group} x{}", permissions.len()));
        let mut state = self.state();
        let not_found = |missing: &str| Error::SecurityGroupNotFound {
            group: group.clone(),
            source: format!("InvalidGroup.NotFound: the security group '{missing}' does not exist")
                .into(),
        };
        if let Some(peer) = state.missing_peer(permissions) {
            return Err(not_found(peer));
        }
        let State {
            security_groups,
            rules_created,
            ..
        } = &mut *state;
        let Some(rules) = security_groups.get_mut(group).map(|g| &mut g.rules) else {
            return Err(not_found(group));
        };
        // EC2 takes all of a call's rules or none, and refuses one it holds already.
        let mut shapes: BTreeSet<&Permission> = rules.values().map(|r| &r.permission).collect();
        if let Some(duplicate) = permissions.iter().find(|p| !shapes.insert(p)) {
            return Err(Error::AuthorizeIngress {
                group: group.clone(),
                source: format!("InvalidPermission.Duplicate: {duplicate} already exists").into(),
            });
        }
        for permission in permissions {
            *rules_created += 1;
            let rule_id = format!("sgr-{rules_created:017x}");
            let rule = ObservedRule {
                rule_id: rule_id.clone(),
                permission: permission.clone(),
                owner: Some(cluster.to_string()),
            };
            rules.insert(rule_id, rule);
        }
        Ok(())
    }

    async fn revoke_ingress(&self, group: &SecurityGroupId, rule_ids: &[String]) -> Result<()> {
        self.write_takes_time().await;
        self.log(|| format!("revoke {group} x{}", rule_ids.len()));
        let mut state = self.state();
        let refused = |why: String| Error::RevokeIngress {
            group: group.clone(),
            source: why.into(),
        };
        let Some(rules) = state.security_groups.get_mut(group).map(|g| &mut g.rules) else {
            return Err(refused(format!(
                "InvalidGroup.NotFound: the security group '{group}' does not exist"
            )));
        };
        // All or nothing, as EC2 does.
        if let Some(unknown) = rule_ids.iter().find(|id| !rules.contains_key(*id)) {
            return Err(refused(format!(
                "InvalidSecurityGroupRuleId.NotFound: {unknown}"
            )));
        }
        for id in rule_ids {
            rules.remove(id);
        }
        Ok(())
    }
}

/// The state table's lease conditions, as the DynamoDB adapter writes them: a live lease is
/// busy to every run (holders are unique per invocation), renewing and letting go only
/// compare the holder.
impl OwnershipStore for MemoryCloud {
    async fn acquire_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<LeaseClaim> {
        let mut state = self.state();
        let now = state.now_millis();
        let until = state.lease_until(terms);
        let claim = match &mut state.table(cluster).lease {
            Some(lease) if lease.until >= now => {
                // Word for the holder: it runs once more before letting go.
                lease.dirty = true;
                LeaseClaim::Busy {
                    holder: lease.holder.clone(),
                }
            }
            lease => {
                *lease = Some(Lease {
                    holder: terms.holder.clone(),
                    until,
                    dirty: false,
                });
                LeaseClaim::Acquired
            }
        };
        drop(state);
        self.log(|| match claim {
            LeaseClaim::Acquired => "acquire lease (acquired)".to_string(),
            LeaseClaim::Busy { .. } => "acquire lease (busy)".to_string(),
        });
        Ok(claim)
    }

    async fn extend_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
        let mut state = self.state();
        let until = state.lease_until(terms);
        let State {
            tables,
            renewals_before_loss,
            ..
        } = &mut *state;
        let held = match tables.get_mut(cluster).and_then(|t| t.lease.as_mut()) {
            Some(lease) if lease.holder == terms.holder => match renewals_before_loss {
                Some(0) => {
                    *lease = Lease {
                        holder: ANOTHER_RUN.to_string(),
                        until,
                        dirty: false,
                    };
                    false
                }
                left => {
                    if let Some(left) = left {
                        *left -= 1;
                    }
                    lease.until = until;
                    true
                }
            },
            _ => false,
        };
        drop(state);
        self.log(|| format!("renew lease ({})", if held { "held" } else { "lost" }));
        Ok(held)
    }

    async fn release_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
        may_run_again: bool,
    ) -> Result<LeaseRelease> {
        let mut state = self.state();
        let until = state.lease_until(terms);
        let table = state.table(cluster);
        let release = match &mut table.lease {
            Some(lease) if lease.holder == terms.holder => {
                if may_run_again && lease.dirty {
                    // Kept, clean and renewed, for one more run.
                    lease.dirty = false;
                    lease.until = until;
                    LeaseRelease::RunAgain
                } else {
                    table.lease = None;
                    LeaseRelease::Released
                }
            }
            _ => LeaseRelease::Lost,
        };
        drop(state);
        self.log(|| {
            let what = match release {
                LeaseRelease::Released => "released",
                LeaseRelease::RunAgain => "run again",
                LeaseRelease::Lost => "lost",
            };
            format!("release lease ({what})")
        });
        Ok(release)
    }

    async fn load(&self, cluster: &str) -> Result<Vec<OwnershipRecord>> {
        let state = self.state();
        Ok(state
            .tables
            .get(cluster)
            .map(|t| t.records.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn write_records(&self, cluster: &str, writes: &[RecordWrite<'_>]) -> Vec<Result<()>> {
        self.write_takes_time().await;
        self.log(|| {
            let items: Vec<String> = writes
                .iter()
                .map(|write| match write {
                    RecordWrite::Save(r) => {
                        format!("save {} x{}", r.target_group.arn, r.targets.len())
                    }
                    RecordWrite::Forget(r) => format!("forget {}", r.target_group.arn),
                })
                .collect();
            format!("records: {}", items.join("; "))
        });
        let mut state = self.state();
        let records = &mut state.table(cluster).records;
        writes
            .iter()
            .map(|write| {
                let record = write.record();
                let key = (record.binding.clone(), record.target_group.arn.clone());
                match write {
                    RecordWrite::Save(_) => records.insert(key, record.clone()),
                    RecordWrite::Forget(_) => records.remove(&key),
                };
                Ok(())
            })
            .collect()
    }

    async fn load_statuses(&self, cluster: &str) -> Result<Vec<BindingStatus>> {
        let state = self.state();
        Ok(state
            .tables
            .get(cluster)
            .map(|t| t.statuses.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn write_statuses(&self, cluster: &str, writes: &[StatusWrite<'_>]) -> Vec<Result<()>> {
        self.log(|| {
            let items: Vec<String> = writes
                .iter()
                .map(|write| match write {
                    StatusWrite::Save(status) => format!("save status {}", status.binding),
                    StatusWrite::Forget(binding) => format!("forget status {binding}"),
                })
                .collect();
            format!("statuses: {}", items.join("; "))
        });
        let mut state = self.state();
        // Read back with the time it was written, as from the state table.
        let seconds = i64::try_from(state.now_millis() / 1000).unwrap_or(i64::MAX);
        let since = aws_smithy_types::DateTime::from_secs(seconds)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .ok();
        let statuses = &mut state.table(cluster).statuses;
        writes
            .iter()
            .map(|write| {
                match write {
                    StatusWrite::Save(status) => {
                        let stored = BindingStatus {
                            since: since.clone(),
                            ..(*status).clone()
                        };
                        statuses.insert(status.binding.clone(), stored);
                    }
                    StatusWrite::Forget(binding) => {
                        statuses.remove(*binding);
                    }
                }
                Ok(())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
