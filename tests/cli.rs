//! The binary itself, as other tooling runs it: environment in, plan and result out, exit codes.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use support::events::{TARGET_GROUP_ARN, sample};
use support::harness::{CLUSTER, Harness};
use tgb_reconciler::ports::FirewallRules;

fn tgb(h: &Harness, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tgb-reconciler"))
        .args(args)
        .envs(h.moto.env())
        .env_remove("KUBECONFIG")
        .env_remove("TGB_CLUSTERS")
        .env("TGB_TABLE", "tgb-cli")
        .output()
        .expect("run tgb-reconciler")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The attributes of the roster of pacers in the binary's table; `None` before anyone listed
/// itself.
async fn roster(h: &Harness) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let item = aws_sdk_dynamodb::Client::new(&h.aws.sdk)
        .get_item()
        .table_name("tgb-cli")
        .key("pk", AttributeValue::S("pacing".into()))
        .key("sk", AttributeValue::S("pacers".into()))
        .send()
        .await
        .expect("read the roster")
        .item()
        .cloned()?;
    let mut attributes: Vec<String> = item.into_keys().collect();
    attributes.sort();
    Some(attributes)
}

// Multi-threaded: the test API server must answer while this thread waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_initialises_reconciles_and_reports_through_its_exit_code() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    let kubeconfig = h.kubeconfig.display().to_string();

    let init = tgb(&h, &["init"]);
    assert_eq!(
        init.status.code(),
        Some(0),
        "{}{}",
        text(&init.stdout),
        text(&init.stderr)
    );
    let again = tgb(&h, &["init"]);
    assert!(
        text(&again.stdout).contains("already exists"),
        "init is idempotent: {}",
        text(&again.stdout)
    );

    let dry = tgb(
        &h,
        &[
            "reconcile",
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            &kubeconfig,
            "--dry-run",
        ],
    );
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("+ register"),
        "{}",
        text(&dry.stdout)
    );
    assert!(text(&dry.stdout).contains("Dry run: nothing was changed."));
    assert!(
        h.world.targets(&tg).await.is_empty(),
        "a dry run writes nothing"
    );
    assert_eq!(roster(&h).await, None, "not even to the roster of pacers");

    let run = tgb(
        &h,
        &[
            "reconcile",
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            &kubeconfig,
            "--output",
            "json",
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let document: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    assert_eq!(document["exit_code"], 0);
    assert_eq!(
        document["clusters"][0]["plan"]["bindings"][0]["registrations"][0]["action"],
        "RegisterTargets"
    );
    assert_eq!(
        document["clusters"][0]["report"]["bindings"][0]["done"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // What the run cost: its AWS calls by operation, the one registration among them.
    assert_eq!(
        document["aws_calls"]["Elastic Load Balancing v2.RegisterTargets"], 1,
        "{:#}",
        document["aws_calls"]
    );
    assert!(
        document["aws_calls"]["Elastic Load Balancing v2.DescribeTargetHealth"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{:#}",
        document["aws_calls"]
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);
    assert_eq!(
        roster(&h).await,
        Some(vec!["pk".to_string(), "sk".to_string()]),
        "the run listed itself among the pacers while it drew, and took itself off at the end"
    );

    let status = tgb(&h, &["status", "--cluster", CLUSTER]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let printed = text(&status.stdout);
    assert!(
        printed.starts_with("cluster demo (lease: free)")
            && printed.contains("ok tgb/default/my-tgb-alb-ip Converged (generation 1, since "),
        "{printed}"
    );

    h.kube.fail_with(Some(403));
    let forbidden = tgb(
        &h,
        &[
            "reconcile",
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    assert_eq!(forbidden.status.code(), Some(1));
    assert!(
        text(&forbidden.stdout).contains("cluster unreadable"),
        "{}",
        text(&forbidden.stdout)
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);
}

#[tokio::test]
async fn usage_errors_exit_two_and_name_the_input() {
    let h = Harness::start().await;
    let cases: [(&[&str], &str); 7] = [
        (&["reconcile"], "--cluster"),
        (
            &[
                "reconcile",
                "--cluster",
                "demo",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ],
            "/nonexistent/kubeconfig",
        ),
        (&["reconcile", "--cluster", "bad/name"], "\"bad/name\""),
        (&["reconcile", "--cluster", "demo", "--table", "x"], "\"x\""),
        (
            &["reconcile", "--cluster", "demo", "--output", "yaml"],
            "yaml",
        ),
        (&["status"], "--cluster"),
        (
            &["reconcile", "--cluster", "demo", "--lease-seconds", "0"],
            "--lease-seconds",
        ),
    ];
    for (args, named) in cases {
        let out = tgb(&h, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = text(&out.stdout) + &text(&out.stderr);
        assert!(said.contains(named), "{args:?}: {said}");
    }
}

#[test]
fn the_crd_command_prints_the_target_group_binding_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_tgb-reconciler"))
        .arg("crd")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let crd: serde_json::Value = serde_saphyr::from_str(&text(&out.stdout)).expect("YAML");
    assert_eq!(crd["metadata"]["name"], "targetgroupbindings.elbv2.k8s.aws");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1beta1");
}

#[tokio::test]
async fn own_role_and_failed_call_events_cost_no_call_while_a_manual_edit_event_is_healed() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.converge().await;
    let own_role = Some("arn:aws:iam::123456789012:role/tgb-reconciler");
    let session = h.session(false);
    let handle = |name: &str| {
        let event = sample(name, &[]);
        let session = &session;
        async move { tgb_reconciler::entry::lambda::handle_event(&event, own_role, session).await }
    };

    for name in [
        "cloudtrail-own-role-authorize.json",
        "cloudtrail-error-code-revoke.json",
    ] {
        h.aws.calls.reset();
        let kube_before = h.kube.requests().len();
        let handled = handle(name).await;
        assert!(
            matches!(
                handled.trigger,
                tgb_reconciler::pure::trigger::Trigger::Ignored { .. }
            ),
            "{name}"
        );
        assert!(
            h.aws.calls.snapshot().is_empty(),
            "{name}: {:?}",
            h.aws.calls.snapshot()
        );
        assert_eq!(
            h.kube.requests().len(),
            kube_before,
            "{name}: no cluster call either"
        );
    }

    // Someone registers a foreign target by hand; its CloudTrail event brings the reconcile.
    h.world.register(&tg, "192.168.50.50", 80).await;
    let event = sample(
        "cloudtrail-register-targets.json",
        &[(TARGET_GROUP_ARN, &tg)],
    );
    let handled = tgb_reconciler::entry::lambda::handle_event(&event, own_role, &session).await;
    assert_eq!(handled.outcomes.len(), 1);
    assert_eq!(
        handled.outcomes[0]
            .plan
            .count(tgb_reconciler::pure::plan::TargetAction::DeregisterTargets),
        1
    );
    assert!(!h.world.targets(&tg).await.contains("192.168.50.50:80"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_event_runs_the_lambda_path_on_an_event_file() {
    let h = Harness::start().await;
    h.ip_walkthrough().await;
    h.place_pods().await;
    let kubeconfig = h.kubeconfig.display().to_string();
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    let run = |file: &str| {
        let path = format!("{events}/{file}");
        let args = [
            "handle-event",
            path.as_str(),
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            kubeconfig.as_str(),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_tgb-reconciler"));
        command
            .args(args)
            .envs(h.moto.env())
            .env("TGB_TABLE", "tgb-cli")
            .env_remove("KUBECONFIG");
        command.env(
            "TGB_OWN_ROLE_ARN",
            "arn:aws:iam::123456789012:role/tgb-reconciler",
        );
        command.output().expect("run tgb-reconciler")
    };
    assert_eq!(tgb(&h, &["init"]).status.code(), Some(0));
    let ignored = run("cloudtrail-own-role-authorize.json");
    assert_eq!(ignored.status.code(), Some(0), "{}", text(&ignored.stderr));
    assert!(
        text(&ignored.stdout).starts_with("event: ignored: made by the reconciler's own role"),
        "{}",
        text(&ignored.stdout)
    );
    let sweep = run("scheduled-sweep.json");
    assert_eq!(
        sweep.status.code(),
        Some(0),
        "{}{}",
        text(&sweep.stdout),
        text(&sweep.stderr)
    );
    assert!(
        text(&sweep.stdout).contains("+ register"),
        "{}",
        text(&sweep.stdout)
    );
    let missing = run("no-such-event.json");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("no-such-event.json"),
        "{}",
        text(&missing.stderr)
    );
}

/// What a sample's event must put right.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Heals {
    /// Our rule on the nodes' group, revoked by hand.
    Rule,
    /// The pod's target, deregistered by hand.
    Target,
    /// Nothing: the event is ignored.
    Nothing,
}

// Multi-threaded: the test API server must answer while this thread waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_does_what_it_describes_through_the_binary_dry_and_for_real() {
    let expected: BTreeMap<&str, Heals> = [
        (
            "cloudtrail-authorize-security-group-ingress.json",
            Heals::Rule,
        ),
        ("cloudtrail-delete-security-group.json", Heals::Rule),
        ("cloudtrail-delete-target-group.json", Heals::Target),
        ("cloudtrail-deregister-targets.json", Heals::Target),
        ("cloudtrail-error-code-revoke.json", Heals::Nothing),
        (
            "cloudtrail-modify-network-interface-attribute.json",
            Heals::Rule,
        ),
        ("cloudtrail-modify-security-group-rules.json", Heals::Rule),
        ("cloudtrail-own-role-authorize.json", Heals::Nothing),
        ("cloudtrail-register-targets.json", Heals::Target),
        ("cloudtrail-revoke-security-group-ingress.json", Heals::Rule),
        ("ec2-instance-terminated.json", Heals::Target),
        ("scheduled-sweep.json", Heals::Target),
        ("scheduler-sweep-one-cluster.json", Heals::Rule),
        ("scheduler-sweep.json", Heals::Target),
    ]
    .into();
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    let kubeconfig = h.kubeconfig.display().to_string();
    assert_eq!(tgb(&h, &["init"]).status.code(), Some(0));
    let converge = tgb(
        &h,
        &[
            "reconcile",
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    assert_eq!(
        converge.status.code(),
        Some(0),
        "{}",
        text(&converge.stdout)
    );
    let node_group =
        tgb_reconciler::model::SecurityGroupId::from(h.world.instance_groups(0).await.remove(0));
    let (eni, instance) = (&h.world.instances[0].eni, &h.world.instances[0].id);
    let ids = [
        (support::events::SAMPLE_NODE_GROUP, node_group.as_str()),
        (
            support::events::SAMPLE_PEER_GROUP,
            h.world.alb_security_group.as_str(),
        ),
        (support::events::SAMPLE_TARGET_GROUP, tg.as_str()),
        (support::events::SAMPLE_INTERFACE, eni.as_str()),
        (support::events::SAMPLE_INSTANCE, instance.as_str()),
    ];
    let ours = || async {
        let rules = h
            .aws
            .ec2
            .ingress_rules(std::slice::from_ref(&node_group))
            .await;
        rules.expect("rules")[&node_group]
            .iter()
            .filter(|r| r.owner.as_deref() == Some(CLUSTER))
            .map(|r| r.rule_id.clone())
            .collect::<Vec<_>>()
    };
    let converged_targets = h.world.targets(&tg).await;
    let pod = converged_targets.iter().next().expect("a target").clone();
    let (ip, port) = pod.split_once(':').expect("ip:port");
    let port: i32 = port.parse().expect("port");
    let dir = tempfile::tempdir().expect("temp dir");

    let names = support::events::names();
    let listed: Vec<&str> = expected.keys().copied().collect();
    assert_eq!(names, listed, "every sample needs a line here");
    for name in &names {
        let heals = expected[name.as_str()];
        let path = dir.path().join(name);
        std::fs::write(&path, support::events::localized(name, &ids)).expect("write event");
        let path = path.display().to_string();
        let handle = |dry: bool| {
            let mut args = vec!["handle-event", path.as_str(), "--cluster", CLUSTER];
            args.extend(["--kubeconfig", kubeconfig.as_str()]);
            args.extend([
                "--own-role-arn",
                "arn:aws:iam::123456789012:role/tgb-reconciler",
            ]);
            if dry {
                args.push("--dry-run");
            }
            tgb(&h, &args)
        };
        // The drift the event is about (both, for an ignored event).
        if heals != Heals::Target {
            let revoked = ours().await;
            if !revoked.is_empty() {
                h.aws
                    .ec2
                    .revoke_ingress(&node_group, &revoked)
                    .await
                    .expect("revoke");
            }
        }
        if heals != Heals::Rule && h.world.targets(&tg).await.contains(&pod) {
            h.world.deregister(&tg, ip, port).await;
        }
        let rule_gone = ours().await.is_empty();
        let target_gone = !h.world.targets(&tg).await.contains(&pod);

        let dry = handle(true);
        assert_eq!(
            dry.status.code(),
            Some(0),
            "{name} dry: {}{}",
            text(&dry.stdout),
            text(&dry.stderr)
        );
        assert!(
            text(&dry.stdout).starts_with("event: "),
            "{name}: {}",
            text(&dry.stdout)
        );
        assert_eq!(
            ours().await.is_empty(),
            rule_gone,
            "{name}: a dry run changes nothing"
        );
        assert_eq!(
            !h.world.targets(&tg).await.contains(&pod),
            target_gone,
            "{name}: a dry run changes nothing"
        );

        let real = handle(false);
        let said = text(&real.stdout);
        assert_eq!(
            real.status.code(),
            Some(0),
            "{name}: {said}{}",
            text(&real.stderr)
        );
        match heals {
            Heals::Nothing => {
                assert!(said.starts_with("event: ignored: "), "{name}: {said}");
                assert!(
                    ours().await.is_empty() && !h.world.targets(&tg).await.contains(&pod),
                    "{name}"
                );
            }
            Heals::Rule => assert!(
                !ours().await.is_empty(),
                "{name}: rule not restored: {said}"
            ),
            Heals::Target => {
                assert_eq!(
                    h.world.targets(&tg).await,
                    converged_targets,
                    "{name}: {said}"
                )
            }
        }
        println!("{name}: {}", said.lines().next().unwrap_or_default());
    }
}

/// `watch` as a process manager runs it: it follows the cluster, `status` names it as the
/// watcher, SIGTERM stops it cleanly (exit 0, the watch lease let go), and `--duration` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_cluster_until_sigterm_and_exits_zero() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    let kubeconfig = h.kubeconfig.display().to_string();
    assert_eq!(tgb(&h, &["init"]).status.code(), Some(0));
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_tgb-reconciler"))
        .args(["watch", "--cluster", CLUSTER, "--kubeconfig", &kubeconfig])
        .envs(h.moto.env())
        .env_remove("TGB_CLUSTERS")
        .env("TGB_TABLE", "tgb-cli")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tgb-reconciler watch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let wait_targets = |n: usize| {
        let tg = tg.clone();
        let h = &h;
        async move {
            while h.world.targets(&tg).await.len() != n {
                assert!(std::time::Instant::now() < deadline, "{n} targets");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    wait_targets(1).await;
    let status = text(&tgb(&h, &["status", "--cluster", CLUSTER]).stdout);
    assert!(status.contains("\n  watched by watch/"), "{status}");
    h.kube.scale("default", "nginx-deployment", 2);
    h.place_pods().await;
    wait_targets(2).await;

    let pid = i32::try_from(watcher.id()).expect("a pid");
    // SAFETY: kill(2) with a pid this test spawned and still owns; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = watcher.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < stopped_by,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let output = watcher.wait_with_output().expect("output");
    assert_eq!(code, Some(0), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(printed.contains("watch demo: watch started"), "{printed}");
    assert!(
        printed.contains("EndpointSlice default/nginx-tgb-svc-alb-ip-"),
        "each run names what caused it: {printed}"
    );
    let status = text(&tgb(&h, &["status", "--cluster", CLUSTER]).stdout);
    assert!(
        !status.contains("watched by"),
        "the watch lease was let go: {status}"
    );

    let timed = tgb(
        &h,
        &[
            "watch",
            "--cluster",
            CLUSTER,
            "--kubeconfig",
            &kubeconfig,
            "--duration",
            "2",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert_eq!(timed.status.code(), Some(0), "{}", text(&timed.stderr));
    let first: serde_json::Value =
        serde_json::from_str(text(&timed.stdout).lines().next().expect("a run printed"))
            .expect("a JSON document a line");
    assert_eq!(first["causes"][0], "watch started");
    assert_eq!(
        first["outcomes"][0]["report"],
        serde_json::Value::Null,
        "a dry run applies nothing"
    );

    let zero = tgb(&h, &["watch", "--cluster", CLUSTER, "--duration", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        text(&zero.stderr).contains("--duration"),
        "{}",
        text(&zero.stderr)
    );
}
