//! The binary itself, as other tooling runs it: environment in, plan and result out, exit codes.

mod support;

use std::process::{Command, Output};
use support::harness::{CLUSTER, Harness};

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
        document["clusters"][0]["plan"]["changes"][0]["action"],
        "RegisterTargets"
    );
    assert_eq!(
        document["clusters"][0]["report"]["done"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);

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
    let cases: [(&[&str], &str); 5] = [
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
