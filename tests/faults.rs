//! Crash after every k-th mutating call of a mixed reconcile (targets and rules), then a fresh
//! run: it must converge, the run after it must change nothing, and a poller watching the
//! security group and the target groups throughout must never see a rule or a target missing
//! that was wanted both before and after.

mod support;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::harness::{CLUSTER, Harness};
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::adapters::kube::KubeEndpointSource;
use tgb_reconciler::binding::TargetGroupSelector;
use tgb_reconciler::desire::rules::NetworkFacts;
use tgb_reconciler::lease::{LeaseClaim, LeaseRelease, LeaseTerms};
use tgb_reconciler::model::{
    AssumeRole, Peer, Permission, PortRange, Protocol, Target, TargetGroupRef,
};
use tgb_reconciler::observe::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use tgb_reconciler::ownership::OwnershipRecord;
use tgb_reconciler::ports::{
    FirewallRules, NetworkDirectory, OwnershipStore, Ports, Registration, TargetRegistry,
};
use tgb_reconciler::reconcile::{RunOptions, reconcile_cluster};
use tgb_reconciler::scope::Scope;
use tgb_reconciler::status::BindingStatus;
use tgb_reconciler::{Error, Result};

/// A process that dies right after its k-th mutating call: that call lands, nothing after it.
struct Crash {
    after: usize,
    calls: AtomicUsize,
    dead: AtomicBool,
}

impl Crash {
    fn new(after: usize) -> Self {
        Self {
            after,
            calls: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
        }
    }

    fn alive(&self) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            Err(Error::Config("crashed".into()))
        } else {
            Ok(())
        }
    }

    /// Call before a mutation; call `after_mutation` when it returns.
    fn mutation(&self) -> Result<()> {
        self.alive()
    }

    fn after_mutation(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.after {
            self.dead.store(true, Ordering::SeqCst);
        }
    }

    fn mutations(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct Faulty<'a> {
    aws: &'a Aws,
    crash: &'a Crash,
    /// Once this many writes have landed, the next lease renewal finds the lease lapsed and
    /// taken by this other run.
    steal_lease: Option<(usize, &'a LeaseTerms)>,
}

impl TargetRegistry for Faulty<'_> {
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        self.crash.alive()?;
        self.aws.registry.target_groups().await
    }
    async fn foreign_target_group(
        &self,
        s: &TargetGroupSelector,
        r: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        self.crash.alive()?;
        self.aws.registry.foreign_target_group(s, r).await
    }
    async fn load_balancers(&self, arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        self.crash.alive()?;
        self.aws.registry.load_balancers(arns).await
    }
    async fn target_health(&self, tg: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        self.crash.alive()?;
        self.aws.registry.target_health(tg).await
    }
    async fn register_targets(&self, tg: &TargetGroupRef, targets: &[Registration]) -> Result<()> {
        self.crash.mutation()?;
        let result = self.aws.registry.register_targets(tg, targets).await;
        self.crash.after_mutation();
        result
    }
    async fn deregister_targets(&self, tg: &TargetGroupRef, targets: &[Target]) -> Result<()> {
        self.crash.mutation()?;
        let result = self.aws.registry.deregister_targets(tg, targets).await;
        self.crash.after_mutation();
        result
    }
}

impl NetworkDirectory for Faulty<'_> {
    async fn instance_clusters(&self, instance: &str) -> Result<Option<BTreeSet<String>>> {
        self.crash.alive()?;
        self.aws.ec2.instance_clusters(instance).await
    }
    async fn network_facts(&self, instances: &[String], ips: &[String]) -> Result<NetworkFacts> {
        self.crash.alive()?;
        self.aws.ec2.network_facts(instances, ips).await
    }
    async fn subnet_cidrs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        self.crash.alive()?;
        self.aws.ec2.subnet_cidrs(ids).await
    }
    async fn vpc_cidrs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        self.crash.alive()?;
        self.aws.ec2.vpc_cidrs(ids).await
    }
}

impl FirewallRules for Faulty<'_> {
    async fn existing_groups(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        self.crash.alive()?;
        self.aws.ec2.existing_groups(ids).await
    }
    async fn ingress_rules(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, Vec<ObservedRule>>> {
        self.crash.alive()?;
        self.aws.ec2.ingress_rules(groups).await
    }
    async fn authorize_ingress(
        &self,
        group: &str,
        permissions: &[Permission],
        cluster: &str,
    ) -> Result<()> {
        self.crash.mutation()?;
        let result = self
            .aws
            .ec2
            .authorize_ingress(group, permissions, cluster)
            .await;
        self.crash.after_mutation();
        result
    }
    async fn revoke_ingress(&self, group: &str, ids: &[String]) -> Result<()> {
        self.crash.mutation()?;
        let result = self.aws.ec2.revoke_ingress(group, ids).await;
        self.crash.after_mutation();
        result
    }
}

impl OwnershipStore for Faulty<'_> {
    async fn load_statuses(&self, cluster: &str) -> Result<Vec<BindingStatus>> {
        self.crash.alive()?;
        self.aws.store.load_statuses(cluster).await
    }
    async fn save_status(&self, cluster: &str, status: &BindingStatus) -> Result<()> {
        self.crash.alive()?;
        self.aws.store.save_status(cluster, status).await
    }
    async fn forget_status(
        &self,
        cluster: &str,
        binding: &tgb_reconciler::model::BindingId,
    ) -> Result<()> {
        self.crash.alive()?;
        self.aws.store.forget_status(cluster, binding).await
    }
    async fn acquire_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<LeaseClaim> {
        self.crash.alive()?;
        self.aws.store.acquire_lease(cluster, terms).await
    }
    async fn extend_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
        self.crash.alive()?;
        if let Some((after, thief)) = self.steal_lease
            && after == self.crash.mutations()
        {
            // The run stalled past its lease, and another took it.
            tokio::time::sleep(Duration::from_secs(terms.seconds) + Duration::from_millis(200))
                .await;
            let taken = self.aws.store.acquire_lease(cluster, thief).await?;
            assert_eq!(taken, LeaseClaim::Acquired, "the lapsed lease is taken");
        }
        self.aws.store.extend_lease(cluster, terms).await
    }
    async fn release_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
        may_run_again: bool,
    ) -> Result<LeaseRelease> {
        self.crash.alive()?;
        self.aws
            .store
            .release_lease(cluster, terms, may_run_again)
            .await
    }
    async fn load(&self, cluster: &str) -> Result<Vec<OwnershipRecord>> {
        self.crash.alive()?;
        self.aws.store.load(cluster).await
    }
    async fn save(&self, cluster: &str, record: &OwnershipRecord) -> Result<()> {
        self.crash.mutation()?;
        let result = self.aws.store.save(cluster, record).await;
        self.crash.after_mutation();
        result
    }
    async fn forget(&self, cluster: &str, record: &OwnershipRecord) -> Result<()> {
        self.crash.mutation()?;
        let result = self.aws.store.forget(cluster, record).await;
        self.crash.after_mutation();
        result
    }
}

/// Both walkthrough bindings converged, then a change that needs every kind of write:
/// scale 1 → 3 with the first pod terminating, and the ip binding's port narrowed to 8080.
async fn mixed_change(h: &Harness) -> (String, String) {
    let tg_ip = h.ip_walkthrough().await;
    let tg_instance = h.instance_binding().await;
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;

    h.kube.scale("default", "nginx-deployment", 4);
    h.kube.set_pod_terminating("default", "nginx-deployment-0");
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "my-tgb-alb-ip")
        .expect("binding");
    binding["spec"]["networking"]["ingress"][0]["ports"] =
        json!([{"protocol": "TCP", "port": 8080}]);
    h.kube.apply(binding);
    h.place_pods().await;
    (tg_ip, tg_instance)
}

/// Without a lease: a crashed run's lease would hold the next run off until it lapses (tested
/// in tests/lease.rs); here every run must get to write.
async fn faulty_run(h: &Harness, crash: &Crash) {
    faulty_run_with(h, crash, None, &RunOptions::default()).await;
}

async fn faulty_run_with(
    h: &Harness,
    crash: &Crash,
    steal_lease: Option<(usize, &LeaseTerms)>,
    options: &RunOptions,
) -> Vec<tgb_reconciler::reconcile::ClusterOutcome> {
    let faulty = Faulty {
        aws: &h.aws,
        crash,
        steal_lease,
    };
    let ports = Ports {
        registry: &faulty,
        network: &faulty,
        firewall: &faulty,
        store: &faulty,
    };
    let source = h
        .connector
        .client(CLUSTER)
        .await
        .map(|c| KubeEndpointSource::new(c, CLUSTER));
    reconcile_cluster(CLUSTER, source, &ports, &h.policy, &Scope::Cluster, options).await
}

/// What must hold at every instant: the instance binding's NodePort admitted from the ALB, the
/// pod that stays registered, and both nodes registered.
#[derive(Default)]
struct Violations(Vec<String>);

async fn watch(
    h: &Harness,
    group: &str,
    tg_ip: &str,
    tg_instance: &str,
    kept_pod: &str,
    stop: &AtomicBool,
) -> Violations {
    let alb = Peer::SecurityGroup(h.world.alb_security_group.clone());
    let node_port = Permission {
        protocol: Protocol::Tcp,
        ports: PortRange::single(30001),
        peer: alb,
    };
    let nodes: BTreeSet<String> = h
        .world
        .instances
        .iter()
        .map(|i| format!("{}:30001", i.id))
        .collect();
    let mut seen = Violations::default();
    for _ in 0..2_000 {
        let rules = h
            .aws
            .ec2
            .ingress_rules(&[group.to_string()])
            .await
            .expect("poll rules");
        if !rules[group].iter().any(|r| r.permission.covers(&node_port)) {
            seen.0.push("NodePort 30001 not admitted".into());
        }
        let ip_targets = h.world.targets(tg_ip).await;
        if !ip_targets.contains(&format!("{kept_pod}:80")) {
            seen.0.push(format!("{kept_pod}:80 not registered"));
        }
        if !nodes.is_subset(&h.world.targets(tg_instance).await) {
            seen.0.push("a node not registered".into());
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_write_is_healed_by_the_next_run_and_nothing_wanted_goes_missing() {
    // How many writes the mixed change takes when nothing crashes.
    let total = {
        let h = Harness::start().await;
        mixed_change(&h).await;
        let crash = Crash::new(usize::MAX);
        faulty_run(&h, &crash).await;
        crash.mutations()
    };
    assert!(
        total >= 6,
        "the change should need registers, deregisters, authorizes, revokes and records: {total}"
    );

    let mut tally = Vec::new();
    for k in 1..total {
        let h = Harness::start().await;
        let (tg_ip, tg_instance) = mixed_change(&h).await;
        let group = {
            let instance = h.world.instances[0].id.clone();
            let facts = h
                .aws
                .ec2
                .network_facts(std::slice::from_ref(&instance), &[])
                .await
                .expect("facts");
            facts.primary_eni[&instance].groups[0].clone()
        };
        let kept_pod = h.kube.pods("default")[1]["status"]["podIP"]
            .as_str()
            .expect("pod IP")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let crash = Crash::new(k);
        let (seen, ()) = tokio::join!(
            watch(&h, &group, &tg_ip, &tg_instance, &kept_pod, &stop),
            async {
                faulty_run(&h, &crash).await;
                let healed = h.converge().await;
                assert!(
                    healed.plan.failures.is_empty() && healed.plan.rule_failures.is_empty(),
                    "k={k}: {}",
                    healed.plan
                );
                h.aws.calls.reset();
                let again = h.reconcile().await;
                assert!(again.plan.is_converged(), "k={k}: {}", again.plan);
                assert!(
                    h.mutating_calls().is_empty(),
                    "k={k}: {:?}",
                    h.mutating_calls()
                );
                stop.store(true, Ordering::SeqCst);
            }
        );
        assert!(seen.0.is_empty(), "k={k}: {:?}", seen.0);
        tally.push(format!("crash after write {k}/{total}: healed, 0 missing"));
    }
    println!("{}", tally.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_mid_way_stops_before_its_next_write() {
    let h = Harness::start().await;
    mixed_change(&h).await;
    let never = Crash::new(usize::MAX);
    let options = RunOptions {
        dry_run: false,
        lease: Some(LeaseTerms::new("victim", 1)),
    };
    let thief = LeaseTerms::new("thief", 60);
    let outcomes = faulty_run_with(&h, &never, Some((1, &thief)), &options).await;
    assert_eq!(
        never.mutations(),
        1,
        "one write landed, none after the lease was lost"
    );
    let outcome = outcomes.last().expect("an outcome");
    let report = outcome.report.as_ref().expect("applied");
    let why = report
        .lease_lost
        .as_deref()
        .expect("the report says why it stopped");
    assert!(why.contains("passed to another run"), "{why}");
    assert!(
        outcome.lease_error.is_some(),
        "and it could not let go of a lease it lost"
    );
    println!(
        "lease taken after write 1: stopped; {} changes not attempted",
        report.failed.len() + report.rules_failed.len()
    );

    // While the thief holds it, nobody else writes; once it lets go, the next run finishes.
    assert!(h.reconcile().await.skipped.is_some());
    let released = h.aws.store.release_lease(CLUSTER, &thief, false).await;
    assert_eq!(released.expect("release"), LeaseRelease::Released);
    let healed = h.converge().await;
    assert!(healed.plan.failures.is_empty(), "{}", healed.plan);
    assert!(h.reconcile().await.plan.is_converged());
}
