//! Pod readiness gates against moto, behind a proxy that reports a new target `initial` for a
//! while as AWS does (moto calls every target healthy at once), and the Kubernetes test API
//! server, whose pods are Ready only once their gates are True, as the kubelet's are.
//!
//! The rolling updates print their figures (`--nocapture`): health polls, the fewest healthy
//! targets seen, and how long each step waited for its gate. The deadlines only bound waits.

mod support;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::harness::{CLUSTER, Harness};
use support::health::HealthProxy;
use support::kube_api::PodFixture;
use support::watching::{wait_for, while_watching};
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::pure::outcome::{ClusterOutcome, exit_code};
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::session::reconcile_clusters;

/// The gate of the walkthrough's ip binding, `my-tgb-alb-ip`, in aws-lbc's spelling.
const GATE: &str = "target-health.elbv2.k8s.aws/my-tgb-alb-ip";
const INSTANCE_GATE: &str = "target-health.elbv2.k8s.aws/my-tgb-alb-instance";
const NODE: &str = "node-0";
/// How often the rolling updates read target health, as a load balancer would see it.
const HEALTH_POLL: Duration = Duration::from_millis(40);

/// One test's world: the harness, the health proxy, the product's clients through it, the
/// walkthrough's ip target group, and a reader of target health as AWS would report it.
struct Gated {
    h: Harness,
    proxy: HealthProxy,
    aws: Aws,
    tg: String,
    elb: elbv2::Client,
}

/// The walkthrough's ip binding with its Deployment scaled to nothing: the tests bring their
/// own pods. New targets read `initial` for `initial_for`.
async fn gated(initial_for: Duration) -> Gated {
    let h = Harness::start().await;
    let proxy = HealthProxy::start(&h.moto.url, initial_for).await;
    let aws = h.aws_via(&proxy.url).await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 0);
    let elb = elbv2::Client::new(&support::moto::sdk_config_at(&proxy.url).await);
    Gated {
        h,
        proxy,
        aws,
        tg,
        elb,
    }
}

/// A pod of the walkthrough's Services on `node-0`, its containers ready, gated by `gate`
/// (none: no gate).
fn pod(name: &str, ip: &str, gate: Option<&str>) -> Value {
    let pod = PodFixture::new("default", name, ip, NODE)
        .with_label("app", "nginx")
        .with_port(80);
    match gate {
        Some(gate) => pod.with_gate(gate),
        None => pod,
    }
    .to_object()
}

impl Gated {
    /// One sweep, as `reconcile` or a scheduled Lambda runs it, through the proxy.
    async fn run(&self) -> ClusterOutcome {
        self.h.place_pods().await;
        let session = self.h.session_on(&self.aws, false);
        reconcile_clusters(&session, &[(CLUSTER.into(), Scope::Cluster)])
            .await
            .pop()
            .expect("one outcome")
    }

    /// The pod's condition of `GATE`, whole.
    fn gate(&self, pod: &str) -> Option<Value> {
        self.h.kube.pod_condition("default", pod, GATE)
    }

    /// `(status, reason)` of the pod's gate condition.
    fn gate_status(&self, pod: &str) -> Option<(String, Option<String>)> {
        self.gate(pod).map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().map(str::to_string),
            )
        })
    }

    fn is_ready(&self, pod: &str) -> bool {
        self.h
            .kube
            .pod_condition("default", pod, "Ready")
            .is_some_and(|c| c["status"] == "True")
    }

    /// Every target's state (`ip:port` → `healthy`, `initial`, …) as the load balancer
    /// reports it now.
    async fn health(&self) -> BTreeMap<String, String> {
        let answer = self
            .elb
            .describe_target_health()
            .target_group_arn(&self.tg)
            .send()
            .await
            .expect("describe target health through the proxy");
        answer
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let target = d.target()?;
                let state = d.target_health()?.state()?.as_str().to_string();
                Some((format!("{}:{}", target.id()?, target.port()?), state))
            })
            .collect()
    }

    async fn registered(&self) -> std::collections::BTreeSet<String> {
        self.h.world.targets(&self.tg).await
    }
}

fn owned(status: &str, reason: Option<&str>) -> Option<(String, Option<String>)> {
    Some((status.to_string(), reason.map(str::to_string)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_pod_is_registered_while_not_ready_and_its_gate_passes_only_once_its_target_is_healthy()
 {
    let g = gated(Duration::from_secs(2)).await;
    g.h.kube.apply(pod("web-a", "192.168.128.201", Some(GATE)));
    assert!(
        !g.is_ready("web-a"),
        "a gate without its condition holds the pod back"
    );

    let first = g.run().await;
    assert!(
        g.registered().await.contains("192.168.128.201:80"),
        "registered although not Ready:\n{}",
        first.plan
    );
    let reason = &first.plan.changes()[0].reason;
    assert!(reason.contains("waiting on its readiness gate"), "{reason}");
    assert_eq!(
        g.gate_status("web-a"),
        owned("False", Some("Elb.RegistrationInProgress")),
        "registered this run: no health read back yet"
    );

    let second = g.run().await;
    let condition = g.gate("web-a").expect("the gate condition");
    assert_eq!(condition["status"], "False", "{}", second.plan);
    assert_eq!(condition["reason"], "Elb.InitialHealthChecking");
    assert_eq!(condition["message"], "Initial health checks in progress.");
    assert!(
        !g.is_ready("web-a"),
        "not Ready while the target is initial"
    );
    for kubelets in ["PodScheduled", "Initialized", "ContainersReady"] {
        let kept = g.h.kube.pod_condition("default", "web-a", kubelets);
        assert_eq!(
            kept.map(|c| c["status"].clone()),
            Some(Value::from("True")),
            "the kubelet's {kubelets} survives the patch"
        );
    }

    let waited = wait_for("the target's health checks pass", || async {
        g.health()
            .await
            .get("192.168.128.201:80")
            .map(String::as_str)
            == Some("healthy")
    })
    .await;
    // Until that moment every run kept the gate False.
    assert_eq!(g.gate_status("web-a").map(|s| s.0), Some("False".into()));
    let third = g.run().await;
    assert_eq!(
        g.gate_status("web-a"),
        owned("True", None),
        "{}",
        third.plan
    );
    assert!(g.is_ready("web-a"), "Ready once its gate is True");
    println!("the gate passed {waited:?} after the second run, once the target read healthy");

    let fourth = g.run().await;
    assert!(
        fourth.plan.is_converged() && fourth.plan.gate_changes().next().is_none(),
        "the run after is a no-op:\n{}",
        fourth.plan
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_turning_unhealthy_fails_its_gate_again_and_unreadable_health_changes_no_gate() {
    let g = gated(Duration::ZERO).await;
    g.h.kube.apply(pod("web-a", "192.168.128.201", Some(GATE)));
    g.run().await;
    g.run().await;
    assert_eq!(g.gate_status("web-a"), owned("True", None));

    g.proxy.set_unhealthy("192.168.128.201", 80, true);
    let unhealthy = g.run().await;
    assert_eq!(
        g.gate_status("web-a"),
        owned("False", Some("Target.FailedHealthChecks")),
        "{}",
        unhealthy.plan
    );
    assert!(!g.is_ready("web-a"));
    assert!(
        g.registered().await.contains("192.168.128.201:80"),
        "a pod held back by its gate keeps its target, so that it can pass again"
    );

    // Healthy again, but nobody can tell: the gate stays exactly as it was.
    g.proxy.set_unhealthy("192.168.128.201", 80, false);
    g.proxy.fail_target_health(true);
    let before = g.gate("web-a");
    let unreadable = g.run().await;
    assert_eq!(g.gate("web-a"), before, "{}", unreadable.plan);
    assert!(
        unreadable.plan.failures().len() == 1 && unreadable.plan.gate_changes().next().is_none(),
        "the binding fails alone and sets no gate:\n{}",
        unreadable.plan
    );
    assert!(g.registered().await.contains("192.168.128.201:80"));

    g.proxy.fail_target_health(false);
    g.run().await;
    assert_eq!(g.gate_status("web-a"), owned("True", None));
    assert!(g.is_ready("web-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_patch_on_pod_status_targets_are_registered_and_the_plan_says_gates_cannot_be_set()
{
    let g = gated(Duration::ZERO).await;
    g.h.kube.forbid_pod_status_patch(true);
    g.h.kube.apply(pod("web-a", "192.168.128.201", Some(GATE)));
    g.h.kube.apply(pod("web-b", "192.168.128.202", Some(GATE)));

    let outcome = g.run().await;
    assert_eq!(
        g.registered().await,
        ["192.168.128.201:80", "192.168.128.202:80"]
            .map(String::from)
            .into()
    );
    let report = outcome.report.as_ref().expect("applied");
    assert!(report.gates_forbidden.is_some(), "{report}");
    assert!(
        outcome
            .plan
            .notes
            .iter()
            .any(|n| n.message.contains("readiness gates cannot be set")),
        "{}",
        outcome.plan
    );
    assert_eq!(
        g.h.kube.forbidden_pod_status_writes(),
        1,
        "the first refusal stops the rest: the identity is the same for every pod"
    );
    assert_eq!(g.gate("web-a"), None);
    assert_eq!(exit_code(&[outcome]), 0, "told, not failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_naming_an_instance_binding_is_noted_and_its_pod_left_alone() {
    let g = gated(Duration::ZERO).await;
    g.h.instance_binding().await;
    g.h.kube
        .apply(pod("web-a", "192.168.128.201", Some(INSTANCE_GATE)));

    let outcome = g.run().await;
    let note = outcome
        .plan
        .notes
        .iter()
        .find(|n| n.message.contains(INSTANCE_GATE))
        .unwrap_or_else(|| panic!("a note on the gate:\n{}", outcome.plan));
    assert!(
        note.message.contains("default/web-a") && note.message.contains("instance targets"),
        "{}",
        note.message
    );
    assert_eq!(
        g.h.kube.pod_condition("default", "web-a", INSTANCE_GATE),
        None
    );
    assert_eq!(
        g.h.kube
            .requests()
            .iter()
            .filter(|r| r.contains("/status"))
            .filter(|r| r.contains("/pods/"))
            .count(),
        0,
        "the pod is left alone"
    );
}

/// What a simulated rolling update saw.
struct Rollout {
    polls: usize,
    fewest_healthy: usize,
    /// How long each step's new pod took to become Ready.
    waits: Vec<Duration>,
}

/// Replaces pod `web-0` with `web-1`, …, `web-<steps>`, one at a time, the way a Deployment
/// with maxSurge 1 and maxUnavailable 0 does: each old pod goes only once its successor is
/// Ready. Meanwhile the load balancer's view is polled: healthy targets, and that no gate is
/// True while its target is not healthy.
async fn roll(g: &Gated, gate: Option<&str>, steps: usize) -> Rollout {
    let ip = |i: usize| format!("192.168.128.{}", 201 + i);
    let done = AtomicBool::new(false);
    let rollout = async {
        let mut waits = Vec::new();
        for step in 1..=steps {
            let started = Instant::now();
            g.h.kube.apply(pod(&format!("web-{step}"), &ip(step), gate));
            g.h.place_pods().await;
            wait_for(&format!("web-{step} Ready"), || async {
                g.is_ready(&format!("web-{step}"))
            })
            .await;
            waits.push(started.elapsed());
            let old = format!("web-{}", step - 1);
            g.h.kube.set_pod_terminating("default", &old);
            let old_target = format!("{}:80", ip(step - 1));
            wait_for(&format!("{old} deregistered"), || async {
                !g.registered().await.contains(&old_target)
            })
            .await;
            g.h.kube.delete("Pod", Some("default"), &old);
        }
        done.store(true, Ordering::SeqCst);
        waits
    };
    let poller = async {
        let (mut polls, mut fewest) = (0, usize::MAX);
        while !done.load(Ordering::SeqCst) {
            // Gates first: a gate seen True was set from a healthy target, which stays healthy
            // until its pod goes.
            let passed: Vec<String> = (0..=steps)
                .filter(|i| {
                    g.gate_status(&format!("web-{i}"))
                        .is_some_and(|(status, _)| status == "True")
                })
                .map(|i| format!("{}:80", ip(i)))
                .collect();
            let health = g.health().await;
            for target in &passed {
                if let Some(state) = health.get(target) {
                    assert!(
                        state == "healthy" || state == "draining",
                        "a gate is True while its target {target} is {state}"
                    );
                }
            }
            let healthy = health.values().filter(|s| *s == "healthy").count();
            fewest = fewest.min(healthy);
            polls += 1;
            tokio::time::sleep(HEALTH_POLL).await;
        }
        (polls, fewest)
    };
    let (waits, (polls, fewest_healthy)) = tokio::join!(rollout, poller);
    Rollout {
        polls,
        fewest_healthy,
        waits,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_held_by_readiness_gates_keeps_a_healthy_target_at_every_polled_instant() {
    let g = gated(Duration::from_millis(1500)).await;
    g.h.kube.set_bookmark_interval(Duration::from_millis(200));
    g.h.kube.apply(pod("web-0", "192.168.128.201", Some(GATE)));
    let session = g.h.session_on(&g.aws, false);
    let reads_before = std::cell::Cell::new(0);
    let runs = while_watching(&session, async |_| {
        wait_for("web-0 Ready", || async { g.is_ready("web-0") }).await;
        reads_before.set(g.proxy.health_reads());
        let rollout = roll(&g, Some(GATE), 3).await;
        println!(
            "gated rolling update, 3 steps: {} health polls, at least {} healthy target(s) at every poll; \
             each step waited {:?} for its gate (targets read initial for 1.5 s)",
            rollout.polls, rollout.fewest_healthy, rollout.waits
        );
        let product_reads = g.proxy.health_reads() - reads_before.get() - rollout.polls;
        println!("the watcher read target health {product_reads} time(s) during the rollout");
        assert!(
            rollout.fewest_healthy >= 1,
            "a poll saw no healthy target ({} polls)",
            rollout.polls
        );
        assert!(
            rollout.waits.iter().all(|w| *w >= Duration::from_millis(1500)),
            "no step is Ready before its target's health checks pass: {:?}",
            rollout.waits
        );
    })
    .await;
    assert!(
        runs.iter().any(|r| r
            .causes
            .iter()
            .any(|c| c.starts_with("readiness gates waiting"))),
        "the watcher read the waiting Service's target group again by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_rolling_update_without_gates_is_seen_leaving_no_healthy_target() {
    // The counterpart that shows the poll can see an outage: without gates, a new pod is Ready
    // while its target is still initial, and its predecessor goes at once.
    let g = gated(Duration::from_millis(1500)).await;
    g.h.kube.set_bookmark_interval(Duration::from_millis(200));
    g.h.kube.apply(pod("web-0", "192.168.128.201", None));
    let session = g.h.session_on(&g.aws, false);
    while_watching(&session, async |_| {
        wait_for("web-0 healthy", || async {
            g.health().await.get("192.168.128.201:80").map(String::as_str) == Some("healthy")
        })
        .await;
        let rollout = roll(&g, None, 3).await;
        println!(
            "ungated rolling update, 3 steps: {} health polls, {} healthy target(s) at the worst poll",
            rollout.polls, rollout.fewest_healthy
        );
        assert_eq!(rollout.fewest_healthy, 0, "{} polls", rollout.polls);
    })
    .await;
}
