//! Watch mode against moto and the Kubernetes test API server, watches included: changes in
//! the cluster reach the target groups without a sweep, a broken watch changes nothing until
//! the cluster is listed again, and an idle watcher calls AWS not at all.
//!
//! How long each change took to land is printed (`--nocapture`); the deadlines here only bound
//! the waits, the figures are the benchmark's.

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::harness::{Harness, manifest};
use support::watching::{self, POLL, Runs, wait_for};
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::watch::{WatchOptions, WatchRun, watch_clusters};

/// Runs `body` while the harness's cluster is watched (for real, not a dry run).
async fn while_watching(h: &Harness, body: impl AsyncFnOnce(&Runs)) -> Vec<WatchRun> {
    h.kube.set_bookmark_interval(Duration::from_millis(200));
    watching::while_watching(&h.session(false), body).await
}

/// `ip:80` of every ready, not terminating pod of the namespace.
fn live_targets(h: &Harness) -> BTreeSet<String> {
    h.kube
        .pods("default")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|p| p["status"]["podIP"].as_str().map(|ip| format!("{ip}:80")))
        .collect()
}

/// Who holds the cluster's watch lease now.
async fn watcher(h: &Harness) -> Option<String> {
    h.aws
        .store
        .watch_lease_holder(support::harness::CLUSTER)
        .await
        .expect("the watch lease is readable")
        .map(|(holder, _)| holder)
}

/// Waits until the target group holds exactly the live pods; the time it took.
async fn follows(h: &Harness, tg: &str, what: &str) -> Duration {
    wait_for(what, || async {
        h.world.targets(tg).await == live_targets(h)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_from_one_to_four_to_two_is_followed_without_a_sweep() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    let runs = while_watching(&h, async |_| {
        follows(&h, &tg, "the first sweep registers the pod").await;
        for replicas in [4, 2] {
            h.kube.scale("default", "nginx-deployment", replicas);
            h.place_pods().await;
            let took = follows(&h, &tg, &format!("scale to {replicas}")).await;
            println!("scale to {replicas}: the target group followed in {took:?}");
            assert_eq!(h.world.targets(&tg).await.len(), replicas as usize);
        }
    })
    .await;

    assert_eq!(
        runs[0].causes[0], "watch started",
        "the first run is a sweep"
    );
    assert_eq!(runs[0].outcomes[0].scope, Scope::Cluster);
    let narrowed: Vec<&WatchRun> = runs[1..]
        .iter()
        .filter(|r| {
            r.outcomes
                .iter()
                .any(|o| o.report.as_ref().is_some_and(|r| !r.done().is_empty()))
        })
        .collect();
    assert!(
        !narrowed.is_empty(),
        "runs after the first applied the scaling"
    );
    for run in &narrowed {
        // Both Services of the workload select the pods, so both their slices changed.
        let expected: BTreeSet<String> = [
            "default/nginx-tgb-svc-alb-instance".to_string(),
            "default/nginx-tgb-svc-alb-ip".to_string(),
        ]
        .into();
        assert_eq!(
            run.outcomes[0].scope,
            Scope::Services(expected),
            "a change of endpoints is planned for its Services alone: {:?}",
            run.causes
        );
        assert!(
            run.causes
                .iter()
                .any(|c| c.starts_with("EndpointSlice default/")),
            "each run names the object that caused it: {:?}",
            run.causes
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_created_and_then_deleted_while_watching_registers_and_then_deregisters() {
    let h = Harness::start().await;
    h.load_workload();
    let tg = h.ip_target_group().await;
    h.place_pods().await;
    let binding = h.ip_binding(&tg);
    let runs = while_watching(&h, async |_| {
        // The first sweep finds no binding, so nothing to write.
        wait_for("the watcher is watching", || async {
            h.kube.open_watches() >= 5
        })
        .await;
        h.kube.apply_yaml(&binding);
        let took = wait_for("the new binding's pod is registered", || async {
            !h.world.targets(&tg).await.is_empty()
        })
        .await;
        println!("binding created: registered in {took:?}");
        assert_eq!(h.world.targets(&tg).await, live_targets(&h));

        h.kube
            .delete("TargetGroupBinding", Some("default"), "my-tgb-alb-ip");
        let took = wait_for("the deleted binding's targets are deregistered", || async {
            h.world.targets(&tg).await.is_empty()
        })
        .await;
        println!("binding deleted: deregistered in {took:?}");
    })
    .await;
    assert!(
        runs.iter()
            .flat_map(|r| &r.causes)
            .any(|c| c == "TargetGroupBinding default/my-tgb-alb-ip deleted"),
        "{:?}",
        runs.iter().map(|r| &r.causes).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_cluster_api_is_down_nothing_is_written_and_the_relist_after_it_is_planned_as_a_sweep()
 {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 4);
    h.place_pods().await;
    let runs = while_watching(&h, async |runs| {
        follows(&h, &tg, "the first sweep registers four pods").await;
        // Its run records statuses and lets its lease go after the last registration.
        wait_for("the first run reported", || async {
            !runs.borrow().is_empty()
        })
        .await;
        let before = h.world.targets(&tg).await;
        assert_eq!(before.len(), 4);

        h.aws.calls.reset();
        h.kube.fail_with(Some(503));
        // The outage hides a scale-down: nothing may act on what cannot be seen.
        h.kube.scale("default", "nginx-deployment", 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            h.aws.calls.mutating(),
            Default::default(),
            "no write while the cluster cannot be read"
        );
        assert_eq!(h.world.targets(&tg).await, before);

        h.kube.fail_with(None);
        let took = follows(&h, &tg, "the relist after the outage is applied").await;
        println!("API back: the scale-down hidden by the outage applied in {took:?}");
    })
    .await;
    let after_outage = runs
        .iter()
        .skip(1)
        .find(|r| r.causes.iter().any(|c| c.ends_with("watch lost")))
        .expect("a run after the outage");
    assert_eq!(
        after_outage.outcomes[0].scope,
        Scope::Cluster,
        "a relist is planned like a sweep"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_resume_and_a_too_old_version_lists_again() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    while_watching(&h, async |_| {
        follows(&h, &tg, "the first sweep").await;

        h.kube.drop_watches();
        h.kube.scale("default", "nginx-deployment", 3);
        h.place_pods().await;
        let took = follows(&h, &tg, "scale after dropped connections").await;
        println!("after dropped watches: followed in {took:?}");

        // Forget the history and cut the watches: resuming gets 410 Gone, then a fresh list.
        let lists_before = h
            .kube
            .request_count("GET /apis/discovery.k8s.io/v1/endpointslices?limit");
        h.kube.compact();
        h.kube.drop_watches();
        h.kube.scale("default", "nginx-deployment", 2);
        h.place_pods().await;
        let took = follows(&h, &tg, "scale after 410 Gone").await;
        println!("after 410 Gone: followed in {took:?}");
        assert!(
            h.kube
                .request_count("GET /apis/discovery.k8s.io/v1/endpointslices?limit")
                > lists_before,
            "410 Gone makes the watcher list again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_churn_is_followed_for_instance_targets() {
    let h = Harness::start().await;
    h.load_workload();
    let tg = h.instance_binding().await;
    h.place_pods().await;
    let registered = || async { h.world.targets(&tg).await.len() };
    while_watching(&h, async |_| {
        wait_for("both nodes registered", || async {
            registered().await == 2
        })
        .await;
        h.kube.set_node_ready("node-1", false);
        let took = wait_for("the NotReady node deregistered", || async {
            registered().await == 1
        })
        .await;
        println!("node NotReady: deregistered in {took:?}");
        h.kube.set_node_ready("node-1", true);
        let took = wait_for("the node back registered", || async {
            registered().await == 2
        })
        .await;
        println!("node Ready again: registered in {took:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_never_leaves_the_target_group_without_a_live_pod() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 3);
    h.place_pods().await;
    // The new ReplicaSet: the same pod labels, so the same Service selects it.
    let workload = manifest("seed004-workload.yaml", &[]);
    let new_version = workload
        .split("\n---")
        .find(|doc| doc.contains("kind: Deployment"))
        .expect("the Deployment")
        .replace("name: nginx-deployment", "name: nginx-v2")
        .replace("replicas: 1", "replicas: 0");
    while_watching(&h, async |_| {
        follows(&h, &tg, "three pods registered").await;
        h.kube.apply_yaml(&new_version);
        let (mut polls, mut least_live) = (0usize, usize::MAX);
        // maxSurge 1, maxUnavailable 0: a new pod, then an old one goes, 1.5 s apart (pods that
        // start in no time: a real rollout waits for each pod's readiness probe).
        let steps = [
            ("nginx-v2", 1),
            ("nginx-deployment", 2),
            ("nginx-v2", 2),
            ("nginx-deployment", 1),
            ("nginx-v2", 3),
            ("nginx-deployment", 0),
        ];
        for (deployment, replicas) in steps {
            h.kube.scale("default", deployment, replicas);
            h.place_pods().await;
            let step_ends = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < step_ends {
                let live = live_targets(&h);
                let registered_live = h.world.targets(&tg).await.intersection(&live).count();
                polls += 1;
                least_live = least_live.min(registered_live);
                assert!(
                    registered_live > 0,
                    "after {deployment}={replicas} the target group holds no live pod"
                );
                tokio::time::sleep(POLL).await;
            }
        }
        follows(&h, &tg, "the rollout's end state").await;
        println!(
            "rolling update: {polls} polls, at least {least_live} live pods registered at each"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watcher_reads_nothing_from_aws_and_only_renews_its_lease() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    h.kube.set_bookmark_interval(Duration::from_millis(200));
    let session = h.session(false);
    // Renewed every second here, so that the window below sees renewals and nothing else.
    let options = WatchOptions {
        lease: tgb_reconciler::state::lease::LeaseTerms::new("idle", 10),
        renew_every: Some(Duration::from_secs(1)),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs = RefCell::new(Vec::new());
    let report = |run: WatchRun| runs.borrow_mut().push(run);
    let body = async {
        follows(&h, &tg, "the first sweep").await;
        // Let the first sweep's run end (statuses, the lease let go), then count.
        wait_for("the first run reported", || async {
            !runs.borrow().is_empty()
        })
        .await;
        h.aws.calls.reset();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = h.aws.calls.snapshot();
        let renewals = calls
            .get("DynamoDB.UpdateItem")
            .copied()
            .unwrap_or_default();
        assert!((2..=4).contains(&renewals), "a renewal a second: {calls:?}");
        assert_eq!(
            calls.len(),
            1,
            "an idle watcher (bookmarks arriving every 200 ms) makes no call but its lease's: {calls:?}"
        );
        let _ = stop.send(true);
    };
    tokio::join!(watch_clusters(&session, &options, stopped, &report), body);
    assert_eq!(runs.into_inner().len(), 1, "only the first sweep ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_of_one_cluster_take_turns_and_the_standby_takes_over_when_the_holder_stops() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    h.kube.set_bookmark_interval(Duration::from_millis(200));
    let session = h.session(false);
    // Short leases, so that the standby asks often.
    let terms = |name: &str| WatchOptions {
        lease: tgb_reconciler::state::lease::LeaseTerms::new(name, 4),
        renew_every: Some(Duration::from_secs(1)),
    };
    let (first_options, second_options) = (terms("first"), terms("second"));
    let (stop_first, first_stopped) = tokio::sync::watch::channel(false);
    let (stop_second, second_stopped) = tokio::sync::watch::channel(false);
    let first_runs = RefCell::new(Vec::new());
    let second_runs = RefCell::new(Vec::new());
    let to_first = |run: WatchRun| first_runs.borrow_mut().push(run);
    let to_second = |run: WatchRun| second_runs.borrow_mut().push(run);
    let first_stops_at = RefCell::new(None);
    let body = async {
        follows(&h, &tg, "the first watcher's sweep").await;
        // Both watch now; only one follows.
        h.kube.scale("default", "nginx-deployment", 3);
        h.place_pods().await;
        follows(&h, &tg, "scale to 3, followed by one watcher").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(second_runs.borrow().is_empty(), "the standby ran nothing");
        let holder = watcher(&h).await.expect("held");
        assert!(holder.starts_with("first/"), "{holder}");

        let _ = stop_first.send(true);
        *first_stops_at.borrow_mut() = Some(Instant::now());
        h.kube.scale("default", "nginx-deployment", 1);
        h.place_pods().await;
        let took = follows(&h, &tg, "scale to 1, followed by the standby").await;
        println!("handover: the standby followed a change {took:?} after the holder stopped");
        let _ = stop_second.send(true);
    };
    let second = async {
        // The second starts once the first holds the lease.
        wait_for("the first watcher holds the lease", || async {
            watcher(&h).await.is_some()
        })
        .await;
        watch_clusters(&session, &second_options, second_stopped, &to_second).await;
    };
    tokio::join!(
        watch_clusters(&session, &first_options, first_stopped, &to_first),
        second,
        body
    );
    let (first_runs, second_runs) = (first_runs.into_inner(), second_runs.into_inner());
    assert!(!first_runs.is_empty());
    assert_eq!(
        second_runs[0].causes[0], "watch started",
        "the standby's first run, once it holds the lease, is a sweep"
    );
    assert_eq!(watcher(&h).await, None, "both let go when stopped");
}

/// The Lambda path: a per-cluster scheduled invocation sweeps, then watches for its period and
/// a little more; the next one, started a period later, stands by and takes over the moment the
/// first lets go. The gap between them is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_invocations_hand_the_watch_over_one_period_apart() {
    use tgb_reconciler::entry::lambda::{LambdaConfig, invoke};
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    h.kube.set_bookmark_interval(Duration::from_millis(200));
    let kubeconfig = h.kubeconfig.display().to_string();
    let config = <LambdaConfig as clap::Parser>::try_parse_from([
        "tgb-reconciler",
        "--cluster",
        support::harness::CLUSTER,
        "--kubeconfig",
        &kubeconfig,
        "--table",
        support::harness::TABLE,
    ])
    .expect("settings");
    assert!(config.watch, "watching is on unless TGB_WATCH=false");
    let period = Duration::from_secs(4);
    let payload =
        serde_json::json!({"sweep-cluster": support::harness::CLUSTER, "watch-seconds": 4});
    let deadline = || std::time::SystemTime::now() + Duration::from_secs(30);
    let first = invoke(&h.aws, &config, &payload, "first", deadline());
    let second = async {
        tokio::time::sleep(period).await;
        invoke(&h.aws, &config, &payload, "second", deadline()).await
    };
    let body = async {
        // The second invocation holds the watch from about 5 s on.
        wait_for("the second invocation watches", || async {
            watcher(&h)
                .await
                .is_some_and(|holder| holder.starts_with("lambda:second/"))
        })
        .await;
        // Its first run (a sweep from its new view) is over within the second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.kube.scale("default", "nginx-deployment", 3);
        h.place_pods().await;
        let took = follows(&h, &tg, "scale followed by the second invocation").await;
        println!("after the handover: a scale followed in {took:?}");
    };
    let (first, second, ()) = tokio::join!(first, second, body);
    let (first, second) = (first.expect("first answer"), second.expect("second answer"));
    for answer in [&first, &second] {
        assert_eq!(answer["exit_code"], 0, "{answer:#}");
        assert_eq!(answer["trigger"]["kind"], "sweep");
    }
    let ms = |v: &serde_json::Value| v.as_u64().expect("a time in ms");
    let first_stopped = ms(&first["watch"]["from_ms"]) + ms(&first["watch"]["window_ms"]);
    let second_watching = ms(&second["watch"]["first_run"]["started_ms"]);
    let second_swept = ms(&second["watch"]["first_run"]["finished_ms"]);
    println!(
        "handover: the second invocation watched {} ms after the first stopped, and had swept from its view {} ms after",
        second_watching as i64 - first_stopped as i64,
        second_swept as i64 - first_stopped as i64
    );
    assert!(
        second["watch"]["runs"].as_u64() >= Some(2),
        "the second invocation swept from its view, then followed the scale: {second:#}"
    );
    assert_eq!(
        first["watch"]["runs"], 1,
        "the first swept from its view and saw no change: {first:#}"
    );
    assert_eq!(
        watcher(&h).await,
        None,
        "the last invocation let its watch lease go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_endpoints_reads_only_its_target_groups_health_and_writes_the_difference() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 3);
    h.place_pods().await;
    while_watching(&h, async |runs| {
        follows(&h, &tg, "the first sweep").await;
        wait_for("the first run reported", || async {
            !runs.borrow().is_empty()
        })
        .await;
        h.aws.calls.reset();
        h.kube.scale("default", "nginx-deployment", 2);
        follows(&h, &tg, "the scale-down").await;
        wait_for("its run reported", || async { runs.borrow().len() >= 2 }).await;
        let aws: std::collections::BTreeMap<String, usize> = h
            .aws
            .calls
            .snapshot()
            .into_iter()
            .filter(|(operation, _)| !operation.starts_with("DynamoDB."))
            .collect();
        assert_eq!(
            aws,
            [
                ("Elastic Load Balancing v2.DeregisterTargets".to_string(), 1),
                (
                    "Elastic Load Balancing v2.DescribeTargetHealth".to_string(),
                    1
                ),
            ]
            .into(),
            "no target-group, tag, VPC or network read: those come from the watcher's sweep"
        );
    })
    .await;
}
