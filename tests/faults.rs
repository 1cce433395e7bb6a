//! The fault suite. Each fault strikes a reconcile with work to do while a poller watches the
//! security groups and target groups; each test ends converged (the healthy bindings; a faulty
//! one reported clearly), with nothing wanted missing at any poll — no rule or target that was
//! there before the fault and is still there at the end — and prints its tally.
//!
//! - a crash after every k-th write of a mixed reconcile, healed by the next run;
//! - a run whose lease is taken mid-way stops before its next write;
//! - one in five AWS requests throttled: EC2, ELBv2 and DynamoDB, reads and writes;
//! - the cluster API down, slow, answering 401, 403 or 500, or 500 for one kind of resource:
//!   nothing deregistered or revoked;
//! - eight concurrent invocations: one writes, under the cluster's lease;
//! - a binding naming a security group that does not exist fails alone;
//! - a target group deleted between a run's look and its writes fails its binding alone;
//! - a binding whose ownership records stay unprocessed in the state table fails alone;
//! - registrations refused while a binding moves ports: its old targets keep their rule;
//! - the rule that would pass a group's quota is refused; the other bindings converge.

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::events::sample;
use support::harness::{CLUSTER, Harness};
use support::kube_api::KubeApi;
use support::throttle::{ThrottlingProxy, is_read};
use tgb_reconciler::adapters::kube::KubeEndpointSource;
use tgb_reconciler::entry::lambda::handle_event;
use tgb_reconciler::model::{BindingId, Permission, SecurityGroupId};
use tgb_reconciler::ports::{
    FirewallRules, NetworkDirectory, OwnershipStore, Ports, TargetRegistry,
};
use tgb_reconciler::pure::outcome::ClusterOutcome;
use tgb_reconciler::pure::outcome::exit_code;
use tgb_reconciler::pure::plan::TargetAction;
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::cluster_run::{RunOptions, reconcile_cluster};
use tgb_reconciler::state::lease::{LeaseRelease, LeaseTerms};
use tgb_reconciler::testing::{Faults, Faulty};

const TGB: &str = "TargetGroupBinding";
const IP_BINDING: &str = "my-tgb-alb-ip";
const INSTANCE_BINDING: &str = "my-tgb-alb-instance";
/// A well-formed security group id that names no group.
const MISSING_GROUP: &str = "sg-0123456789abcdef0";
/// Upper bounds on every loop: runs until convergence, polls, and how long a poller watches.
const MAX_RUNS: usize = 5;
const MAX_POLLS: usize = 20_000;
const MAX_WATCH: Duration = Duration::from_secs(300);

// ----- The world: two walkthrough bindings, and a change that needs every kind of write -----

/// The walkthrough's bindings, converged: their target groups and the nodes' security group.
struct Walkthrough {
    ip: String,
    instance: String,
    node_group: String,
}

impl Walkthrough {
    /// What a poller watches: the nodes' group and both target groups, plus `more`.
    fn watched(&self, more: &[&str]) -> Watched {
        let mut target_groups = vec![self.ip.clone(), self.instance.clone()];
        target_groups.extend(more.iter().map(|s| s.to_string()));
        Watched {
            groups: vec![self.node_group.clone()],
            target_groups,
        }
    }
}

/// Both walkthrough bindings converged, with two pods behind the ip one.
async fn converged_walkthrough(h: &Harness) -> Walkthrough {
    let ip = h.ip_walkthrough().await;
    let instance = h.instance_binding().await;
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;
    let node = h.world.instances[0].id.clone();
    let facts = h
        .aws
        .ec2
        .network_facts(std::slice::from_ref(&node), &[])
        .await
        .expect("facts");
    Walkthrough {
        ip,
        instance,
        node_group: facts.primary_eni[&node].groups[0].to_string(),
    }
}

/// The walkthrough converged, then a change that needs every kind of write: scale 2 → 4 with
/// the first pod terminating, and the ip binding's ports narrowed from all TCP to 8080.
async fn mixed_change(h: &Harness) -> Walkthrough {
    let walkthrough = converged_walkthrough(h).await;
    h.kube.scale("default", "nginx-deployment", 4);
    h.kube.set_pod_terminating("default", "nginx-deployment-0");
    edit_binding(h, IP_BINDING, |spec| {
        spec["networking"]["ingress"][0]["ports"] = json!([{"protocol": "TCP", "port": 8080}]);
    });
    h.place_pods().await;
    walkthrough
}

fn edit_binding(h: &Harness, name: &str, edit: impl FnOnce(&mut Value)) {
    let mut binding = h.kube.get(TGB, Some("default"), name).expect("binding");
    edit(&mut binding["spec"]);
    h.kube.apply(binding);
}

/// A new binding `name` of the ip Service's pods into a new target group `tg-<name>`,
/// admitting `ingress`; returns the target group's ARN.
async fn add_ip_binding(h: &Harness, name: &str, ingress: Value) -> String {
    let ip = aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip;
    let target_group = h
        .world
        .target_group(&format!("tg-{name}"), ip, 80, &[])
        .await;
    let mut binding = h
        .kube
        .get(TGB, Some("default"), IP_BINDING)
        .expect("binding");
    binding["metadata"] = json!({"name": name, "namespace": "default"});
    binding["spec"]["targetGroupARN"] = json!(target_group);
    binding["spec"]["networking"]["ingress"] = ingress;
    h.kube.apply(binding);
    target_group
}

/// The instance Service's NodePort moves to `port`, and its binding's rule with it.
fn move_node_port(h: &Harness, port: u16) {
    let mut service = h
        .kube
        .get("Service", Some("default"), "nginx-tgb-svc-alb-instance")
        .expect("service");
    service["spec"]["ports"][0]["nodePort"] = json!(port);
    h.kube.apply(service);
    edit_binding(h, INSTANCE_BINDING, |spec| {
        spec["networking"]["ingress"][0]["ports"][0]["port"] = json!(port);
    });
}

fn binding_id(name: &str) -> BindingId {
    BindingId::resource("default", name)
}

/// The next run applies everything it plans; the run after it writes nothing. Returns both.
async fn settles(h: &Harness, context: &str) -> (ClusterOutcome, ClusterOutcome) {
    let healed = h.converge().await;
    h.aws.calls.reset();
    let again = h.reconcile().await;
    assert!(
        again.report.as_ref().is_some_and(|r| r.is_clean()),
        "{context}: {}",
        again.plan
    );
    assert!(
        h.mutating_calls().is_empty(),
        "{context}: the run after wrote {:?}\n{}",
        h.mutating_calls(),
        again.plan
    );
    (healed, again)
}

/// One run of the cluster through `ports`, as the Lambda handler and the CLI run it.
async fn run_through<R, N, F, S>(
    h: &Harness,
    ports: &Ports<'_, R, N, F, S>,
    options: &RunOptions,
) -> ClusterOutcome
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let source = h
        .connector
        .client(CLUSTER)
        .await
        .map(|c| KubeEndpointSource::new(c, CLUSTER));
    // Boxed: a run's future is too large for a test thread's stack in a debug build.
    let run = reconcile_cluster(CLUSTER, source, ports, &h.policy, &Scope::Cluster, options);
    let mut outcomes = Box::pin(run).await;
    outcomes.pop().expect("an outcome")
}

fn leased(holder: &str) -> RunOptions {
    RunOptions {
        dry_run: false,
        lease: Some(LeaseTerms::new(holder, 60)),
        deadline: None,
    }
}

// ----- The poller -----

/// The security groups and target groups a poller looks at.
struct Watched {
    groups: Vec<String>,
    target_groups: Vec<String>,
}

/// What one look saw: every rule of the watched groups, every target of the target groups (a
/// deleted one holds none).
#[derive(Debug, Clone, PartialEq)]
struct Sight {
    rules: BTreeMap<String, Vec<Permission>>,
    targets: BTreeMap<String, BTreeSet<String>>,
}

/// A rule (`group`, permission) or a target (`target group`, `id:port`) that must stay.
#[derive(Debug)]
enum Wanted {
    Rule(String, Permission),
    Target(String, String),
}

impl Wanted {
    fn seen_in(&self, sight: &Sight) -> bool {
        match self {
            Wanted::Rule(group, wanted) => sight
                .rules
                .get(group)
                .is_some_and(|rules| rules.iter().any(|r| r.covers(wanted))),
            Wanted::Target(group, target) => sight
                .targets
                .get(group)
                .is_some_and(|targets| targets.contains(target)),
        }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wanted::Rule(group, permission) => write!(f, "rule {permission} in {group}"),
            Wanted::Target(group, target) => write!(
                f,
                "target {target} in {}",
                tgb_reconciler::model::TargetGroupArn::from(group.as_str()).short_name()
            ),
        }
    }
}

impl Watched {
    /// Reads the rules and each target group at once, so that one look spans little time.
    async fn look(&self, h: &Harness) -> Sight {
        let targets = self.target_groups.iter().map(|group| async move {
            let registered = h.world.registered(group).await.expect("poll targets");
            (group.clone(), registered)
        });
        let groups: Vec<SecurityGroupId> = self.groups.iter().map(SecurityGroupId::from).collect();
        let (rules, targets) = tokio::join!(
            h.aws.ec2.ingress_rules(&groups),
            futures::future::join_all(targets)
        );
        let rules = rules.expect("poll rules");
        let targets = targets.into_iter().collect();
        Sight {
            rules: rules
                .into_iter()
                .map(|(group, rules)| {
                    let permissions = rules.into_iter().map(|r| r.permission).collect();
                    (group.to_string(), permissions)
                })
                .collect(),
            targets,
        }
    }
}

impl Sight {
    /// Everything here, as things that could be wanted.
    fn all(&self) -> Vec<Wanted> {
        let rules = self.rules.iter().flat_map(|(group, rules)| {
            rules.iter().map(|r| Wanted::Rule(group.clone(), r.clone()))
        });
        let targets = self.targets.iter().flat_map(|(group, targets)| {
            targets
                .iter()
                .map(|t| Wanted::Target(group.clone(), t.clone()))
        });
        rules.chain(targets).collect()
    }
}

/// What a poller found: how many looks, how many things were wanted throughout, each poll's
/// miss (`poll 7: rule … missing`), and the most rules it ever saw in one group.
struct Watch {
    polls: usize,
    wanted: usize,
    missing: Vec<String>,
    most_rules: usize,
}

impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost: BTreeSet<&str> = self
            .missing
            .iter()
            .filter_map(|m| m.split_once(": ").map(|(_, what)| what))
            .collect();
        write!(
            f,
            "{} of {} wanted missing in {} polls",
            lost.len(),
            self.wanted,
            self.polls
        )
    }
}

/// Runs `faulty` — the faulty runs and those after them — while a poller looks every few
/// milliseconds; then holds every look against what was there both before and after: a target
/// in both, a rule of either side that the other side admits too. Asserts that nothing wanted
/// went missing.
async fn watching<T>(
    h: &Harness,
    watched: &Watched,
    faulty: impl Future<Output = T>,
) -> (T, Watch) {
    let before = watched.look(h).await;
    let stop = AtomicBool::new(false);
    let poll = async {
        let started = Instant::now();
        let mut sights = Vec::new();
        while sights.len() < MAX_POLLS && started.elapsed() < MAX_WATCH {
            sights.push(watched.look(h).await);
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sights
    };
    let (sights, outcome) = tokio::join!(poll, async {
        let outcome = faulty.await;
        stop.store(true, Ordering::SeqCst);
        outcome
    });
    let after = watched.look(h).await;
    // Whatever one side has that the other covers too (a wide rule before covers the narrow
    // ones after it), by name.
    let wanted: Vec<Wanted> = [(&before, &after), (&after, &before)]
        .into_iter()
        .flat_map(|(one, other)| one.all().into_iter().filter(|w| w.seen_in(other)))
        .map(|w| (w.to_string(), w))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert!(!wanted.is_empty(), "nothing wanted to watch: {before:?}");
    let missing: Vec<String> = sights
        .iter()
        .enumerate()
        .flat_map(|(i, sight)| {
            wanted
                .iter()
                .filter(|w| !w.seen_in(sight))
                .map(move |w| format!("poll {i}: {w} missing"))
        })
        .collect();
    let most_rules = sights
        .iter()
        .flat_map(|s| s.rules.values().map(Vec::len))
        .max()
        .unwrap_or(0);
    let watch = Watch {
        polls: sights.len(),
        wanted: wanted.len(),
        missing,
        most_rules,
    };
    assert!(watch.missing.is_empty(), "{watch}: {:?}", watch.missing);
    (outcome, watch)
}

// ----- The faults (struck between the product's adapters and AWS by `testing::Faulty`) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_write_is_healed_by_the_next_run_and_nothing_wanted_goes_missing() {
    // How many writes the mixed change takes when nothing crashes. Without a lease: a crashed
    // run's lease would hold the next run off until it lapses (tests/lease.rs); here every run
    // must get to write.
    let total = {
        let h = Harness::start().await;
        mixed_change(&h).await;
        let unharmed = Faulty::new(h.aws.ports(), Faults::default());
        run_through(&h, &unharmed.ports(), &RunOptions::default()).await;
        unharmed.writes()
    };
    assert!(
        total >= 6,
        "the change should need registers, deregisters, authorizes, revokes and records: {total}"
    );

    let mut tally = Vec::new();
    for k in 1..total {
        let h = Harness::start().await;
        let walkthrough = mixed_change(&h).await;
        let crash = Faults {
            crash_after: Some(k),
            ..Faults::default()
        };
        let faulty = Faulty::new(h.aws.ports(), crash);
        let (_, watch) = watching(&h, &walkthrough.watched(&[]), async {
            run_through(&h, &faulty.ports(), &RunOptions::default()).await;
            let (healed, again) = settles(&h, &format!("k={k}")).await;
            assert!(
                healed.plan.failures().is_empty() && healed.plan.rule_failures().is_empty(),
                "k={k}: {}",
                healed.plan
            );
            assert!(again.plan.is_converged(), "k={k}: {}", again.plan);
        })
        .await;
        assert_eq!(faulty.writes(), k, "the crash struck after write {k}");
        tally.push(format!("crash after write {k}/{total}: healed; {watch}"));
    }
    println!("{}", tally.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_mid_way_stops_before_its_next_write() {
    let h = Harness::start().await;
    mixed_change(&h).await;
    let thief = LeaseTerms::new("thief", 60);
    // The victim stalls right after its first write until its one-second lease has lapsed, and
    // only then does the thief take it (a live lease is never taken). Its next batch finds less
    // than a third of the lease left since its last renewal, renews, and learns it lost it.
    let stolen = Faults {
        steal_lease: Some((1, &thief)),
        ..Faults::default()
    };
    let victim = Faulty::new(h.aws.ports(), stolen);
    let options = RunOptions {
        dry_run: false,
        lease: Some(LeaseTerms::new("victim", 1)),
        deadline: None,
    };
    let outcome = run_through(&h, &victim.ports(), &options).await;
    assert_eq!(
        victim.writes(),
        1,
        "one write landed, none after the lease was lost"
    );
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
        report.failed().len() + report.rules_failed.len()
    );

    // While the thief holds it, nobody else writes; once it lets go, the next run finishes.
    assert!(h.reconcile().await.skipped.is_some());
    let released = h.aws.store.release_lease(CLUSTER, &thief, false).await;
    assert_eq!(released.expect("release"), LeaseRelease::Released);
    let (healed, again) = settles(&h, "after the thief").await;
    assert!(healed.plan.failures().is_empty(), "{}", healed.plan);
    assert!(again.plan.is_converged(), "{}", again.plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_in_five_aws_requests_throttled_are_retried_and_the_run_converges() {
    let h = Harness::start().await;
    let walkthrough = mixed_change(&h).await;
    let proxy = ThrottlingProxy::every(&h.moto.url, 5).await;
    // The product's retry configuration, which the harness's clients lack.
    let aws = h.aws_via(&proxy.url).await;
    let (runs, watch) = watching(&h, &walkthrough.watched(&[]), async {
        let mut runs = Vec::new();
        while runs.len() < MAX_RUNS {
            let outcome = run_through(&h, &aws.ports(), &leased("throttled")).await;
            let converged = outcome.plan.is_converged();
            runs.push(outcome);
            if converged {
                break;
            }
        }
        runs
    })
    .await;
    for run in &runs {
        let report = run.report.as_ref().expect("every run applied");
        assert!(report.is_clean(), "a throttled call failed:\n{report}");
    }
    let last = runs.last().expect("a run");
    assert!(
        last.plan.is_converged(),
        "{} runs: {}",
        runs.len(),
        last.plan
    );

    let throttled = proxy.throttled_by_operation();
    for service in ["ec2", "elasticloadbalancing", "dynamodb"] {
        for read in [true, false] {
            assert!(
                throttled
                    .keys()
                    .any(|op| op.starts_with(&format!("{service}.")) && is_read(op) == read),
                "no {service} {} was throttled: {throttled:?}",
                if read { "read" } else { "write" }
            );
        }
    }
    let (count, requests) = (proxy.throttled(), proxy.requests());
    assert!(5 * count >= requests, "{count} of {requests}");
    println!(
        "throttled {count} of {requests} AWS requests ({}%; {} operations of EC2, ELBv2 and DynamoDB, reads and writes): \
         no change failed, converged in {} run(s) and 1 that found nothing to do; {watch}",
        100 * count / requests,
        throttled.len(),
        runs.len() - 1
    );
}

/// A way the cluster API can be unreadable, and its end.
#[derive(Clone, Copy)]
enum ClusterFault {
    /// Connection refused.
    Down,
    /// Answers later than the client's read timeout.
    Slow,
    Status(u16),
    /// Lists bindings and Services, then answers 500 for EndpointSlices.
    PartWay,
}

impl ClusterFault {
    fn begin(self, kube: &KubeApi) {
        match self {
            ClusterFault::Down => kube.stop(),
            ClusterFault::Slow => kube.delay(Some(Duration::from_secs(2))),
            ClusterFault::Status(status) => kube.fail_with(Some(status)),
            ClusterFault::PartWay => kube.fail_path(Some(("endpointslices", 500))),
        }
    }

    async fn end(self, kube: &KubeApi) {
        match self {
            ClusterFault::Down => kube.restart().await,
            ClusterFault::Slow => kube.delay(None),
            ClusterFault::Status(_) => kube.fail_with(None),
            ClusterFault::PartWay => kube.fail_path(None),
        }
    }
}

impl ClusterFault {
    /// What the run's error must say.
    fn symptom(self) -> String {
        match self {
            ClusterFault::Down => "Connection refused".into(),
            ClusterFault::Slow => "timed out".into(),
            ClusterFault::Status(status) => format!("injected failure {status}"),
            ClusterFault::PartWay => "injected failure 500".into(),
        }
    }

    /// Which read of the cluster fails.
    fn fails_at(self) -> &'static str {
        match self {
            ClusterFault::PartWay => "listing endpointslices",
            _ => "listing targetgroupbindings",
        }
    }
}

impl fmt::Display for ClusterFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterFault::Down => f.write_str("down (connection refused)"),
            ClusterFault::Slow => f.write_str("slow (2 s, past a 500 ms read timeout)"),
            ClusterFault::Status(status) => write!(f, "answering {status}"),
            ClusterFault::PartWay => f.write_str("answering 500 for EndpointSlices only"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_api_down_slow_or_refusing_changes_nothing_and_the_run_after_it_recovers_converges()
 {
    let faults = [
        ClusterFault::Down,
        ClusterFault::Slow,
        ClusterFault::Status(401),
        ClusterFault::Status(403),
        ClusterFault::Status(500),
        ClusterFault::PartWay,
    ];
    let mut tally = Vec::new();
    for fault in faults {
        let mut h = Harness::start().await;
        h.connector = h.connector_with_read_timeout(Duration::from_millis(500));
        let walkthrough = mixed_change(&h).await;
        let watched = walkthrough.watched(&[]);
        let (error, watch) = watching(&h, &watched, async {
            let before = watched.look(&h).await;
            fault.begin(&h.kube);
            h.aws.calls.reset();
            let mut error = String::new();
            for _ in 0..2 {
                let outcome = h.reconcile().await;
                error = outcome
                    .plan
                    .cluster_error
                    .clone()
                    .unwrap_or_else(|| panic!("{fault}: planned anyway:\n{}", outcome.plan));
                assert!(
                    error.starts_with(fault.fails_at()) && error.contains(&fault.symptom()),
                    "{fault}: {error}"
                );
                assert!(outcome.report.is_none(), "{fault}: applied");
                assert_eq!(exit_code(std::slice::from_ref(&outcome)), 1, "{fault}");
            }
            assert!(
                h.mutating_calls().is_empty(),
                "{fault}: wrote {:?}",
                h.mutating_calls()
            );
            assert_eq!(watched.look(&h).await, before, "{fault}: AWS changed");
            fault.end(&h.kube).await;
            let (recovered, _) = settles(&h, &format!("{fault}, recovered")).await;
            assert!(
                recovered.plan.count(TargetAction::DeregisterTargets) > 0
                    && !recovered.plan.rules.revoke.is_empty(),
                "the change held back needed deregistrations and revocations: {}",
                recovered.plan
            );
            error
        })
        .await;
        let what = error.split(": ").next().unwrap_or_default();
        tally.push(format!(
            "cluster API {fault}: 2 runs wrote nothing ({what}: … {}); recovered: converged in 1 run; {watch}",
            fault.symptom()
        ));
    }
    println!("{}", tally.join("\n"));
}

/// RegisterTargets calls so far.
fn registrations(h: &Harness) -> usize {
    h.aws
        .calls
        .snapshot()
        .iter()
        .filter(|(name, _)| name.ends_with(".RegisterTargets"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_invocations_apply_one_at_a_time_and_converge() {
    let h = Harness::start().await;
    let walkthrough = mixed_change(&h).await;
    h.aws.calls.reset();
    let sweep = sample("scheduled-sweep.json", &[]);
    let sessions: Vec<_> = (0..8).map(|_| h.session(false)).collect();
    let (handled, watch) = watching(&h, &walkthrough.watched(&[]), async {
        let runs = sessions
            .iter()
            .map(|session| handle_event(&sweep, None, session));
        futures::future::join_all(runs).await
    })
    .await;

    let (mut writers, mut idle, mut skipped) = (Vec::new(), 0, 0);
    for outcome in handled.iter().flat_map(|h| &h.outcomes) {
        match (&outcome.report, &outcome.skipped) {
            (Some(report), None) => {
                assert!(report.is_clean(), "{report}");
                if report.done().is_empty() && report.rules_done.is_empty() {
                    idle += 1;
                } else {
                    writers.push(report);
                }
            }
            (None, Some(why)) => {
                assert!(why.contains("holds the cluster's lease"), "{why}");
                skipped += 1;
            }
            other => panic!("neither applied nor skipped: {other:?}"),
        }
    }
    assert!(skipped >= 1, "the invocations overlapped");
    // Without the lease, every invocation that looked before the first one wrote would write
    // the same changes again.
    assert_eq!(writers.len(), 1, "one run wrote");
    let batches: BTreeSet<_> = writers[0]
        .done()
        .iter()
        .filter(|c| c.action == TargetAction::RegisterTargets)
        .map(|c| (&c.binding, &c.target_group))
        .collect();
    assert_eq!(
        registrations(&h),
        batches.len(),
        "{:?}",
        h.aws.calls.snapshot()
    );
    // Every lease was let go: a new run takes it at once and finds nothing to do.
    let after = h.reconcile().await;
    assert!(
        after.skipped.is_none() && after.plan.is_converged(),
        "{}",
        after.plan
    );
    println!("8 invocations: 1 run wrote, {idle} found nothing left, {skipped} skipped; {watch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_naming_a_missing_security_group_fails_alone_and_nothing_is_revoked() {
    let h = Harness::start().await;
    let walkthrough = converged_walkthrough(&h).await;
    // Seed 001: the instance binding now admits its NodePort from a group that does not
    // exist. Beside it, the ip Service scales up and a new binding opens 8443 in the same group
    // (from a network: the ALB's group has all TCP there already).
    edit_binding(&h, INSTANCE_BINDING, |spec| {
        spec["networking"]["ingress"][0]["from"] =
            json!([{"securityGroup": {"groupID": MISSING_GROUP}}]);
    });
    let extra = add_ip_binding(
        &h,
        "extra",
        json!([{"from": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8443}]}]),
    )
    .await;
    h.kube.scale("default", "nginx-deployment", 3);
    h.place_pods().await;

    let watched = walkthrough.watched(&[&extra]);
    let before = watched.look(&h).await;
    let ((first, writes, second), watch) = watching(&h, &watched, async {
        h.aws.calls.reset();
        let first = h.reconcile().await;
        let writes = h.mutating_calls();
        h.aws.calls.reset();
        let second = h.reconcile().await;
        assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
        (first, writes, second)
    })
    .await;
    for outcome in [&first, &second] {
        let failures = &outcome.plan.rule_failures();
        assert_eq!(failures.len(), 1, "{}", outcome.plan);
        assert_eq!(failures[0].binding, binding_id(INSTANCE_BINDING));
        assert!(
            failures[0].error.message.contains(MISSING_GROUP),
            "{}",
            failures[0].error
        );
        assert!(outcome.plan.failures().is_empty(), "{}", outcome.plan);
        assert!(outcome.report.as_ref().is_some_and(|r| r.is_clean()));
        assert_eq!(exit_code(std::slice::from_ref(outcome)), 1);
    }
    assert!(
        !writes.keys().any(|op| op.contains("Revoke")),
        "nothing is revoked: {writes:?}"
    );
    let after = watched.look(&h).await;
    let rules = &after.rules[&walkthrough.node_group];
    assert!(
        before.rules[&walkthrough.node_group]
            .iter()
            .all(|r| rules.contains(r)),
        "every rule stays: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.to_string() == "tcp/8443 from 10.2.0.0/16"),
        "the new binding's rule landed: {rules:?}"
    );
    assert_eq!(after.targets[&walkthrough.ip].len(), 3);
    assert_eq!(after.targets[&extra].len(), 3);
    println!(
        "binding naming {MISSING_GROUP}: it alone failed ({}); 0 revoked, {} rule(s) and {} target(s) added for the others; the run after wrote nothing; {watch}",
        first.plan.rule_failures()[0].error,
        rules.len() - before.rules[&walkthrough.node_group].len(),
        first.plan.count(TargetAction::RegisterTargets)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_group_deleted_mid_run_fails_its_binding_alone_and_the_run_after_is_clean() {
    let h = Harness::start().await;
    let walkthrough = mixed_change(&h).await;
    // The instance binding has targets to register and deregister too.
    move_node_port(&h, 30002);
    let terminating = h
        .kube
        .get("Pod", Some("default"), "nginx-deployment-0")
        .and_then(|p| p["status"]["podIP"].as_str().map(|ip| format!("{ip}:80")))
        .expect("the terminating pod's IP");

    let (elb, instance) = (&h.world.elb, &walkthrough.instance);
    let deletion = Faults {
        before_first_write: Some(Box::pin(async move {
            let deleted = elb.delete_target_group().target_group_arn(instance);
            deleted.send().await.expect("delete the target group");
        })),
        ..Faults::default()
    };
    let faulty = Faulty::new(h.aws.ports(), deletion);
    let ((during, after), watch) = watching(&h, &walkthrough.watched(&[]), async {
        let during = run_through(&h, &faulty.ports(), &leased("deleted-mid-run")).await;
        h.aws.calls.reset();
        let after = h.reconcile().await;
        let writes = h.mutating_calls();
        assert!(
            writes.keys().all(|op| op.starts_with("DynamoDB.")),
            "the run after touched no target or rule: {writes:?}\n{}",
            after.plan
        );
        let (_, again) = settles(&h, "the run after that").await;
        assert_eq!(again.plan.failures(), after.plan.failures());
        (during, after)
    })
    .await;
    assert!(!h.world.target_group_exists(&walkthrough.instance).await);

    let report = during.report.as_ref().expect("applied");
    assert!(!report.failed().is_empty(), "{report}");
    // Its registrations fail, naming the group; its deregistrations wait for them (make before
    // break); nothing of any other binding fails.
    for failed in &report.failed() {
        assert_eq!(
            failed.change.binding,
            binding_id(INSTANCE_BINDING),
            "{report}"
        );
        let named = failed.error.contains("not found") && failed.error.contains("tg-instance");
        match failed.change.action {
            TargetAction::RegisterTargets => assert!(named, "{}", failed.error),
            TargetAction::DeregisterTargets => {
                assert!(
                    failed.error.starts_with("not attempted"),
                    "{}",
                    failed.error
                )
            }
        }
    }
    let deregistered: Vec<String> = report
        .done()
        .iter()
        .filter(|c| c.action == TargetAction::DeregisterTargets)
        .map(|c| c.target.to_string())
        .collect();
    assert_eq!(deregistered, [terminating], "no other target deregistered");
    let planned = during.plan.changes();
    let ip_changes = planned
        .iter()
        .filter(|c| c.binding == binding_id(IP_BINDING));
    assert!(
        ip_changes.clone().all(|c| report.done().contains(c)),
        "the ip binding converged: {report}"
    );
    let failures = &after.plan.failures();
    assert_eq!(failures.len(), 1, "{}", after.plan);
    assert_eq!(failures[0].binding, binding_id(INSTANCE_BINDING));
    assert!(
        failures[0].error.to_string().contains("not found"),
        "{}",
        failures[0].error
    );
    assert!(
        after.report.as_ref().is_some_and(|r| r.is_clean()),
        "{}",
        after.plan
    );
    println!(
        "tg-instance deleted before the first write: {} change(s) of its binding failed ({}); all {} of the ip binding done; the run after: only \"{}\" reported, no target or rule touched; {watch}",
        report.failed().len(),
        report.failed()[0].error,
        ip_changes.count(),
        failures[0].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_whose_records_stay_unprocessed_fails_alone_and_the_next_run_heals() {
    let h = Harness::start().await;
    let walkthrough = mixed_change(&h).await;
    // A neighbour with targets and a record of its own to write, in the same batches.
    let extra = add_ip_binding(
        &h,
        "extra",
        json!([{"from": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8443}]}]),
    )
    .await;
    let ip = binding_id(IP_BINDING);
    let unprocessed = Faults {
        unprocessed_records: Some(&ip),
        ..Faults::default()
    };
    let faulty = Faulty::new(h.aws.ports(), unprocessed);
    let (during, watch) = watching(&h, &walkthrough.watched(&[&extra]), async {
        let during = run_through(&h, &faulty.ports(), &leased("unprocessed")).await;
        let (healed, again) = settles(&h, "after the unprocessed records").await;
        assert!(healed.plan.failures().is_empty(), "{}", healed.plan);
        assert!(again.plan.is_converged(), "{}", again.plan);
        during
    })
    .await;

    let report = during.report.as_ref().expect("applied");
    let own = &report.bindings[&ip];
    // Its record before did not land: none of its targets was touched, and it says why.
    assert!(own.done.is_empty(), "{report}");
    assert!(!own.failed.is_empty(), "{report}");
    for failed in &own.failed {
        assert!(
            failed
                .error
                .starts_with("not attempted: saving the ownership record of"),
            "{}",
            failed.error
        );
    }
    assert!(!own.record_errors.is_empty(), "{report}");
    // Its neighbour, in the same batches of records, converged.
    let neighbour = &report.bindings[&binding_id("extra")];
    assert!(
        neighbour.is_clean() && !neighbour.done.is_empty(),
        "{report}"
    );
    println!(
        "records of {IP_BINDING} left unprocessed: {} of its changes not attempted, all {} of its neighbour's done, healed by the next run; {watch}",
        own.failed.len(),
        neighbour.done.len()
    );
}

/// The ip binding's rule narrowed to TCP 80 (its pods' port), converged.
async fn ip_binding_on_port_80(h: &Harness) -> Walkthrough {
    let walkthrough = converged_walkthrough(h).await;
    edit_binding(h, IP_BINDING, |spec| {
        spec["networking"]["ingress"][0]["ports"] = json!([{"protocol": "TCP", "port": 80}]);
    });
    h.converge().await;
    walkthrough
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_refused_mid_move_keeps_the_old_targets_and_the_rule_they_need() {
    let h = Harness::start().await;
    let walkthrough = ip_binding_on_port_80(&h).await;
    // A rollout moves the pods to port 8080: new pods, the Service's targetPort and the
    // binding's rule with them. ELB refuses the new targets.
    h.kube.scale("default", "nginx-deployment", 4);
    for pod in ["nginx-deployment-0", "nginx-deployment-1"] {
        h.kube.set_pod_terminating("default", pod);
    }
    let mut service = h
        .kube
        .get("Service", Some("default"), "nginx-tgb-svc-alb-ip")
        .expect("service");
    service["spec"]["ports"][0]["targetPort"] = json!(8080);
    h.kube.apply(service);
    edit_binding(&h, IP_BINDING, |spec| {
        spec["networking"]["ingress"][0]["ports"][0]["port"] = json!(8080);
    });
    h.place_pods().await;
    let refusal = Faults {
        refuse_registrations: Some(&walkthrough.ip),
        ..Faults::default()
    };
    let faulty = Faulty::new(h.aws.ports(), refusal);
    let watched = walkthrough.watched(&[]);
    let ((refused, sight), watch) = watching(&h, &watched, async {
        let refused = run_through(&h, &faulty.ports(), &leased("refused")).await;
        let sight = watched.look(&h).await;
        settles(&h, "after the refusal").await;
        (refused, sight)
    })
    .await;
    let report = refused.report.as_ref().expect("applied");
    assert!(!report.failed().is_empty(), "{report}");
    assert!(
        report
            .failed()
            .iter()
            .all(|f| f.change.binding == binding_id(IP_BINDING)),
        "{report}"
    );
    // The old targets stayed (make before break), so the rule that admits them stayed too.
    let registered = &sight.targets[&walkthrough.ip];
    assert!(
        registered.len() == 2 && registered.iter().all(|t| t.ends_with(":80")),
        "{registered:?}"
    );
    let old_port = Permission {
        protocol: tgb_reconciler::model::Protocol::Tcp,
        ports: tgb_reconciler::model::PortRange::single(80),
        peer: tgb_reconciler::model::Peer::SecurityGroup(
            h.world.alb_security_group.as_str().into(),
        ),
    };
    let rules = &sight.rules[&walkthrough.node_group];
    assert!(
        rules.iter().any(|r| r.covers(&old_port)),
        "the old targets lost their rule: {rules:?}"
    );
    let kept = report
        .rules_failed
        .iter()
        .find(|r| r.permission == old_port)
        .expect("the revocation is reported as held back");
    println!(
        "registrations refused mid-move: {} change(s) of the ip binding failed, its 2 old targets kept and {old_port} with them ({}); the next run converged; {watch}",
        report.failed().len(),
        kept.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_that_would_pass_the_quota_is_refused_and_the_other_bindings_converge() {
    let h = Harness::start().await;
    let walkthrough = converged_walkthrough(&h).await;
    let group = walkthrough.node_group.clone();
    let limit = h.policy.max_rules_per_family;
    // The healthy change: the ip Service scales up, and the instance binding admits 8443 from
    // a network as well (a rule added, none revoked).
    h.kube.scale("default", "nginx-deployment", 3);
    edit_binding(&h, INSTANCE_BINDING, |spec| {
        let ingress = spec["networking"]["ingress"]
            .as_array_mut()
            .expect("ingress");
        ingress.push(json!({"from": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8443}]}));
    });
    h.place_pods().await;
    // Foreign rules up to the limit less what that change adds: it fills the group; a new
    // binding's rule would be one too many.
    let present = h
        .aws
        .ec2
        .ingress_rules(&[group.as_str().into()])
        .await
        .expect("rules")[group.as_str()]
    .len();
    let needed = h.dry_run().await.plan.rules.authorize.len();
    assert!(needed >= 1, "the change adds rules");
    h.world
        .add_foreign_rules(&group, limit - present - needed)
        .await;
    let overflow = add_ip_binding(
        &h,
        "overflow",
        json!([{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "UDP", "port": 5000}]}]),
    )
    .await;

    let watched = walkthrough.watched(&[&overflow]);
    let ((first, second), watch) = watching(&h, &watched, async {
        let first = h.reconcile().await;
        h.aws.calls.reset();
        let second = h.reconcile().await;
        assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
        (first, second)
    })
    .await;
    for outcome in [&first, &second] {
        let blocked = &outcome.plan.rules.blocked;
        assert_eq!(blocked.len(), 1, "{}", outcome.plan);
        assert_eq!(blocked[0].binding, binding_id("overflow"));
        assert!(
            blocked[0]
                .reason
                .contains(&format!("would hold {} IPv4", limit + 1)),
            "{}",
            blocked[0].reason
        );
        assert_eq!(exit_code(std::slice::from_ref(outcome)), 1);
    }
    let report = first.report.as_ref().expect("applied");
    assert!(report.is_clean(), "{report}");
    assert!(
        report
            .rules_done
            .iter()
            .all(|r| !r.bindings.contains(&binding_id("overflow"))),
        "nothing of the refused binding was written: {report}"
    );
    assert!(
        watch.most_rules <= limit,
        "{} rules at the peak",
        watch.most_rules
    );
    let after = watched.look(&h).await;
    let rules = &after.rules[&group];
    assert!(
        rules
            .iter()
            .any(|r| r.to_string() == "tcp/8443 from 10.2.0.0/16"),
        "the instance binding's new rule landed: {rules:?}"
    );
    assert!(!rules.iter().any(|r| r.to_string().starts_with("udp/5000")));
    assert_eq!(rules.len(), limit, "the group is full");
    assert_eq!(
        after.targets[&walkthrough.ip].len(),
        3,
        "the ip binding converged"
    );
    assert_eq!(
        after.targets[&overflow].len(),
        3,
        "the refused binding's targets register"
    );
    println!(
        "quota {limit}: rule {} refused before any write ({}); the others converged, at most {} rules in the group at any poll; the run after wrote nothing and refused it again; {watch}",
        limit + 1,
        first.plan.rules.blocked[0]
            .reason
            .split(';')
            .next()
            .unwrap_or_default(),
        watch.most_rules
    );
}
