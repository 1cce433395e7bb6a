//! The seed 004 walkthrough, end to end on this machine: an AWS emulator (moto) with the
//! externally created ALB, security group and target groups, the Kubernetes test API server
//! with the walkthrough's manifests, and `tgb-reconciler` reconciling them through its CLI,
//! then following a scale-down in watch mode.
//! Run it with `scripts/demo`.

#[path = "../support/mod.rs"]
mod support;

use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use clap::Parser;
use std::time::Instant;
use support::harness::{CLUSTER, POD_IP_POOL, add_nodes, manifest};
use support::kube_api::KubeApi;
use support::moto::Moto;
use support::world::World;
use tgb_reconciler::entry::cli::{Cli, run};

const TABLE: &str = "tgb-demo";

fn main() {
    let started = Instant::now();
    let moto = Moto::start();
    for (key, value) in moto.env() {
        // SAFETY: single-threaded here; the async runtime starts below.
        unsafe { std::env::set_var(key, value) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(walkthrough(&moto));
    println!("demo finished in {:.1}s", started.elapsed().as_secs_f64());
    drop(moto);
    std::process::exit(code);
}

async fn walkthrough(moto: &Moto) -> i32 {
    println!("== AWS emulator (moto) at {}", moto.url);
    let world = World::create(&moto.sdk_config().await).await;
    let tg_ip = world
        .target_group("nginx-tgb-alb-ip", TargetTypeEnum::Ip, 80, &[])
        .await;
    let tg_instance = world
        .target_group("nginx-tgb-alb-instance", TargetTypeEnum::Instance, 80, &[])
        .await;
    println!(
        "   created outside the cluster: {}, ALB security group {}",
        world.load_balancer, world.alb_security_group
    );
    println!("   target groups: {tg_ip}\n                  {tg_instance}");

    let kube = KubeApi::start().await;
    kube.set_pod_ip_pool(POD_IP_POOL);
    add_nodes(&kube, &world);
    kube.apply_yaml(&manifest("seed004-workload.yaml", &[]));
    // The whole world first, pod IPs on their nodes' interfaces as the VPC CNI places them, so
    // the dry run plans exactly what the real run then applies.
    world.place_pods(&kube.pods("default")).await;
    let sg = world.alb_security_group.as_str();
    kube.apply_yaml(&manifest(
        "seed004-tgb-alb-ip.yaml",
        &[("<TG_IP_ARN>", &tg_ip), ("<ALB_SG_ID>", sg)],
    ));
    kube.apply_yaml(&manifest(
        "seed004-tgb-alb-instance.yaml",
        &[("<TG_INSTANCE_ARN>", &tg_instance), ("<ALB_SG_ID>", sg)],
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, CLUSTER);
    println!(
        "== Kubernetes API at {} with the seed 004 manifests and 2 nodes",
        kube.url()
    );

    let kubeconfig = kubeconfig.display().to_string();
    let cli = |args: &[&str]| {
        let mut argv = vec!["tgb-reconciler"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv)
    };
    let reach = [
        "--cluster",
        CLUSTER,
        "--kubeconfig",
        &kubeconfig,
        "--table",
        TABLE,
    ];
    let reconcile = [&["reconcile"][..], &reach].concat();
    let mut out = std::io::stdout();

    println!("\n$ tgb-reconciler init --table {TABLE}");
    let mut code = run(cli(&["init", "--table", TABLE]), &mut out).await;

    println!("\n$ tgb-reconciler {} --dry-run", reconcile.join(" "));
    let mut dry = Vec::new();
    code = code.max(run(cli(&[&reconcile[..], &["--dry-run"]].concat()), &mut dry).await);
    print!("{}", String::from_utf8_lossy(&dry));

    println!("$ tgb-reconciler {}", reconcile.join(" "));
    let mut real = Vec::new();
    code = code.max(run(cli(&reconcile), &mut real).await);
    print!("{}", String::from_utf8_lossy(&real));
    // The point of a dry run: what it prints is what the real run then does.
    if plan_text(&dry) == plan_text(&real) {
        println!("   (the real run planned exactly what the dry run printed)\n");
    } else {
        println!("   ! the real run planned differently from the dry run\n");
        code = code.max(1);
    }

    println!("$ kubectl scale deployment nginx-deployment --replicas 4   # (the test API server)");
    kube.scale("default", "nginx-deployment", 4);
    world.place_pods(&kube.pods("default")).await;
    println!("$ tgb-reconciler {}", reconcile.join(" "));
    code = code.max(run(cli(&reconcile), &mut out).await);

    println!(
        "$ tgb-reconciler {}   # a second run in a row",
        reconcile.join(" ")
    );
    code = code.max(run(cli(&reconcile), &mut out).await);

    // Watch mode: the cluster followed as it changes, without a sweep.
    let watch = [&["watch"][..], &reach, &["--duration", "4"]].concat();
    println!("$ tgb-reconciler {} &", watch.join(" "));
    println!("$ kubectl scale deployment nginx-deployment --replicas 2   # a second later");
    let mut watched = Vec::new();
    let watcher = run(cli(&watch), &mut watched);
    let scale_down = async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        kube.scale("default", "nginx-deployment", 2);
        let scaled = Instant::now();
        // Bounded: the watcher stops after its --duration anyway.
        while scaled.elapsed() < std::time::Duration::from_secs(3) {
            if world.targets(&tg_ip).await.len() == 2 {
                return Some(scaled.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    };
    let (watch_code, followed) = tokio::join!(watcher, scale_down);
    code = code.max(watch_code);
    print!("{}", String::from_utf8_lossy(&watched));
    match followed {
        Some(took) => println!(
            "   (the ip target group followed the scale-down in {} ms, without a sweep)\n",
            took.as_millis()
        ),
        None => {
            println!("   ! the watcher did not follow the scale-down within 3 s\n");
            code = code.max(1);
        }
    }

    println!("== registered now:");
    for (name, tg) in [("ip", &tg_ip), ("instance", &tg_instance)] {
        let targets: Vec<String> = world.targets(tg).await.into_iter().collect();
        println!("   {name:<8} {}", targets.join(", "));
    }
    i32::from(code)
}

/// A run's printed plan: everything up to and including its `Plan for …` summary line.
fn plan_text(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut plan = String::new();
    for line in text.lines() {
        plan.push_str(line);
        plan.push('\n');
        if line.starts_with("Plan for ") {
            break;
        }
    }
    plan
}
