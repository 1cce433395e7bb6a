//! Every port served from memory, so the planning benchmark measures the product's decisions
//! (resolve → desire → rules → plan → apply's bookkeeping) and no I/O. Writes change the
//! in-memory state the way AWS would, so a second run finds everything converged.

use super::layout::{Kind, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tgb_reconciler::Result;
use tgb_reconciler::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use tgb_reconciler::model::cluster::ClusterSnapshot;
use tgb_reconciler::model::network::{Eni, NetworkFacts};
use tgb_reconciler::model::{
    AssumeRole, BindingId, IpFamily, Permission, Target, TargetGroupRef, TargetType,
};
use tgb_reconciler::ports::{
    EndpointSource, FirewallRules, NetworkDirectory, OwnershipStore, Registration, TargetRegistry,
};
use tgb_reconciler::pure::binding::TargetGroupSelector;
use tgb_reconciler::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms};
use tgb_reconciler::state::ownership::OwnershipRecord;
use tgb_reconciler::state::status::BindingStatus;

pub const VPC: &str = "vpc-bench";

pub struct MemoryCloud {
    snapshot: ClusterSnapshot,
    target_groups: Vec<TargetGroupInfo>,
    facts: NetworkFacts,
    groups: BTreeSet<String>,
    targets: Mutex<BTreeMap<String, BTreeMap<Target, ObservedTarget>>>,
    rules: Mutex<BTreeMap<String, Vec<ObservedRule>>>,
    records: Mutex<BTreeMap<(BindingId, String), OwnershipRecord>>,
    statuses: Mutex<BTreeMap<BindingId, BindingStatus>>,
}

/// Made-up cloud ids for a layout that lives in memory only.
pub fn layout(scale: super::layout::Scale) -> Layout {
    let nodes = (0..scale.nodes())
        .map(|n| super::layout::NodeIds {
            instance: format!("i-{n:017x}"),
            eni: format!("eni-{n:017x}"),
            ip: format!("192.168.{}.{}", 32 + n / 250, 1 + n % 250),
            security_group: format!("sg-{n:017x}"),
        })
        .collect();
    let target_groups = (0..scale.bindings())
        .map(|b| {
            format!(
                "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/b-{b:04}/{b:016x}"
            )
        })
        .collect();
    Layout {
        scale,
        nodes,
        target_groups,
        alb_security_group: "sg-0a1b000000000a1b0".into(),
    }
}

impl MemoryCloud {
    pub fn new(layout: &Layout) -> Self {
        let target_groups = layout
            .target_groups
            .iter()
            .enumerate()
            .map(|(b, arn)| {
                let kind = match layout.kind(b) {
                    Kind::Instance => TargetType::Instance,
                    Kind::Ip => TargetType::Ip,
                };
                TargetGroupInfo {
                    arn: arn.clone(),
                    name: Layout::binding_name(b),
                    target_type: Some(kind),
                    raw_target_type: kind.to_string(),
                    ip_family: IpFamily::Ipv4,
                    vpc_id: Some(VPC.into()),
                    protocol: Some("HTTP".into()),
                    port: Some(80),
                    load_balancer_arns: Vec::new(),
                    tags: BTreeMap::new(),
                    health_check_protocol: Some("HTTP".into()),
                    health_check_port: Some("traffic-port".into()),
                }
            })
            .collect();
        let mut facts = NetworkFacts::default();
        for (n, node) in layout.nodes.iter().enumerate() {
            let eni = Eni {
                id: node.eni.clone(),
                groups: vec![node.security_group.clone()],
            };
            facts.primary_eni.insert(node.instance.clone(), eni.clone());
            for ip in layout.pod_ips_on(n).into_iter().chain([node.ip.clone()]) {
                facts.eni_by_ip.insert(ip, eni.clone());
            }
        }
        let groups = layout
            .nodes
            .iter()
            .map(|n| n.security_group.clone())
            .chain([layout.alb_security_group.clone()])
            .collect();
        Self {
            snapshot: layout.snapshot(),
            target_groups,
            facts,
            groups,
            targets: Mutex::default(),
            rules: Mutex::default(),
            records: Mutex::default(),
            statuses: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointSource for &MemoryCloud {
    async fn snapshot(&self) -> Result<ClusterSnapshot> {
        Ok(self.snapshot.clone())
    }
    async fn publish_status(&self, _status: &BindingStatus) -> Result<()> {
        Ok(())
    }
}

impl TargetRegistry for MemoryCloud {
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        Ok(self.target_groups.clone())
    }
    async fn foreign_target_group(
        &self,
        _selector: &TargetGroupSelector,
        _role: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        Ok(None)
    }
    async fn target_health(&self, tg: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        Ok(lock(&self.targets)
            .get(&tg.arn)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default())
    }
    async fn load_balancers(&self, _arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        Ok(Vec::new())
    }
    async fn register_targets(&self, tg: &TargetGroupRef, targets: &[Registration]) -> Result<()> {
        let mut all = lock(&self.targets);
        let group = all.entry(tg.arn.clone()).or_default();
        for r in targets {
            group.insert(
                r.target.clone(),
                ObservedTarget {
                    target: r.target.clone(),
                    availability_zone: r.availability_zone.clone(),
                    state: "healthy".into(),
                },
            );
        }
        Ok(())
    }
    async fn deregister_targets(&self, tg: &TargetGroupRef, targets: &[Target]) -> Result<()> {
        if let Some(group) = lock(&self.targets).get_mut(&tg.arn) {
            for t in targets {
                group.remove(t);
            }
        }
        Ok(())
    }
}

impl NetworkDirectory for MemoryCloud {
    async fn network_facts(&self, _instances: &[String], _ips: &[String]) -> Result<NetworkFacts> {
        Ok(self.facts.clone())
    }
    async fn subnet_cidrs(&self, _ids: &[String]) -> Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        Ok(BTreeMap::new())
    }
    async fn instance_clusters(&self, _instance: &str) -> Result<Option<BTreeSet<String>>> {
        Ok(None)
    }
    async fn vpc_cidrs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        let vpc: ipnet::IpNet = "192.168.0.0/16".parse().unwrap_or_default();
        Ok(ids.iter().map(|id| (id.clone(), vec![vpc])).collect())
    }
}

impl FirewallRules for MemoryCloud {
    async fn existing_groups(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        Ok(ids
            .iter()
            .filter(|id| self.groups.contains(*id))
            .cloned()
            .collect())
    }
    async fn ingress_rules(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, Vec<ObservedRule>>> {
        let rules = lock(&self.rules);
        Ok(groups
            .iter()
            .filter(|g| self.groups.contains(*g))
            .map(|g| (g.clone(), rules.get(g).cloned().unwrap_or_default()))
            .collect())
    }
    async fn authorize_ingress(
        &self,
        group: &str,
        permissions: &[Permission],
        cluster: &str,
    ) -> Result<()> {
        let mut rules = lock(&self.rules);
        let count: usize = rules.values().map(Vec::len).sum();
        let group = rules.entry(group.to_string()).or_default();
        for (i, permission) in permissions.iter().enumerate() {
            group.push(ObservedRule {
                rule_id: format!("sgr-{:017x}", count + i),
                permission: permission.clone(),
                owner: Some(cluster.to_string()),
            });
        }
        Ok(())
    }
    async fn revoke_ingress(&self, group: &str, ids: &[String]) -> Result<()> {
        if let Some(rules) = lock(&self.rules).get_mut(group) {
            rules.retain(|r| !ids.contains(&r.rule_id));
        }
        Ok(())
    }
}

impl OwnershipStore for MemoryCloud {
    async fn acquire_lease(&self, _cluster: &str, _terms: &LeaseTerms) -> Result<LeaseClaim> {
        Ok(LeaseClaim::Acquired)
    }
    async fn extend_lease(&self, _cluster: &str, _terms: &LeaseTerms) -> Result<bool> {
        Ok(true)
    }
    async fn release_lease(
        &self,
        _cluster: &str,
        _terms: &LeaseTerms,
        _may_run_again: bool,
    ) -> Result<LeaseRelease> {
        Ok(LeaseRelease::Released)
    }
    async fn load(&self, _cluster: &str) -> Result<Vec<OwnershipRecord>> {
        Ok(lock(&self.records).values().cloned().collect())
    }
    async fn save(&self, _cluster: &str, record: &OwnershipRecord) -> Result<()> {
        let key = (record.binding.clone(), record.target_group.arn.clone());
        lock(&self.records).insert(key, record.clone());
        Ok(())
    }
    async fn forget(&self, _cluster: &str, record: &OwnershipRecord) -> Result<()> {
        let key = (record.binding.clone(), record.target_group.arn.clone());
        lock(&self.records).remove(&key);
        Ok(())
    }
    async fn load_statuses(&self, _cluster: &str) -> Result<Vec<BindingStatus>> {
        Ok(lock(&self.statuses).values().cloned().collect())
    }
    async fn save_status(&self, _cluster: &str, status: &BindingStatus) -> Result<()> {
        lock(&self.statuses).insert(status.binding.clone(), status.clone());
        Ok(())
    }
    async fn forget_status(&self, _cluster: &str, binding: &BindingId) -> Result<()> {
        lock(&self.statuses).remove(binding);
        Ok(())
    }
}
