//! The core reconcile path against moto and the Kubernetes test API server: the seed 004
//! walkthrough in ip and instance modes, and every way a run must stay safe.

mod support;

use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use serde_json::json;
use std::collections::BTreeSet;
use support::harness::Harness;
use tgb_reconciler::pure::plan::TargetAction;

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

async fn instance_walkthrough(h: &Harness) -> String {
    h.load_workload();
    h.instance_binding().await
}

fn instance_targets(h: &Harness, port: u16) -> BTreeSet<String> {
    h.world
        .instances
        .iter()
        .map(|i| format!("{}:{port}", i.id))
        .collect()
}

#[tokio::test]
async fn ip_walkthrough_registers_pods_scales_and_cleans_up_after_the_binding_is_deleted() {
    let mut h = Harness::start().await;
    // Lambda's longest lease: renewed only once less than a third of it (320 s) is left.
    h.lease_seconds = 960;
    let tg = h.ip_walkthrough().await;

    let first = h.converge().await;
    assert_eq!(
        first.plan.count(TargetAction::RegisterTargets),
        1,
        "{}",
        first.plan
    );
    let ips = h.pod_ips();
    assert_eq!(ips.len(), 1);
    assert_eq!(h.world.targets(&tg).await, set(&[format!("{}:80", ips[0])]));

    h.aws.calls.reset();
    h.kube.scale("default", "nginx-deployment", 4);
    let scaled = h.converge().await;
    // The counter sees writes when there are some: one batch of targets, the record before and
    // after (a BatchWriteItem each), and the lease: taken and let go, and not renewed, as the
    // run took far less than two-thirds of its term.
    let writes: Vec<(String, usize)> = h.mutating_calls().into_iter().collect();
    assert_eq!(
        writes
            .iter()
            .map(|(op, n)| (op.rsplit('.').next().unwrap_or_default(), *n))
            .collect::<Vec<_>>(),
        [
            ("BatchWriteItem", 2),
            ("DeleteItem", 1),
            ("PutItem", 1),
            ("RegisterTargets", 1)
        ],
        "{writes:?}"
    );
    assert_eq!(
        scaled.plan.count(TargetAction::RegisterTargets),
        3,
        "{}",
        scaled.plan
    );
    assert_eq!(
        scaled.plan.count(TargetAction::DeregisterTargets),
        0,
        "{}",
        scaled.plan
    );
    let expected: BTreeSet<String> = h.pod_ips().iter().map(|ip| format!("{ip}:80")).collect();
    assert_eq!(expected.len(), 4);
    assert_eq!(h.world.targets(&tg).await, expected);

    h.aws.calls.reset();
    let second = h.reconcile().await;
    assert!(second.plan.is_converged(), "{}", second.plan);
    assert!(
        h.mutating_calls().is_empty(),
        "a converged run wrote: {:?}",
        h.mutating_calls()
    );

    h.kube
        .delete("TargetGroupBinding", Some("default"), "my-tgb-alb-ip");
    let cleanup = h.converge().await;
    assert_eq!(
        cleanup.plan.count(TargetAction::DeregisterTargets),
        4,
        "{}",
        cleanup.plan
    );
    assert!(h.world.targets(&tg).await.is_empty());
    assert!(
        h.world.target_group_exists(&tg).await,
        "the target group stays"
    );
    assert!(
        h.world.load_balancer_exists().await,
        "the load balancer stays"
    );
    assert!(
        h.reconcile().await.plan.is_converged(),
        "the record is forgotten"
    );
}

#[tokio::test]
async fn instance_walkthrough_registers_ready_eligible_nodes_at_the_node_port() {
    let h = Harness::start().await;
    let tg = instance_walkthrough(&h).await;
    h.converge().await;
    assert_eq!(h.world.targets(&tg).await, instance_targets(&h, 30001));

    // An excluded node and a NotReady node leave; a Fargate node never joins.
    h.kube.add_node(
        support::kube_api::NodeFixture::new(
            "fargate-0",
            "i-0fa0000000000000f",
            "us-west-2a",
            "192.168.33.9",
        )
        .with_label("eks.amazonaws.com/compute-type", "fargate"),
    );
    let mut node0 = h.kube.get("Node", None, "node-0").expect("node-0");
    node0["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] =
        json!("true");
    h.kube.apply(node0);
    let excluded = h.converge().await;
    assert_eq!(
        excluded.plan.count(TargetAction::DeregisterTargets),
        1,
        "{}",
        excluded.plan
    );
    assert_eq!(
        h.world.targets(&tg).await,
        set(&[format!("{}:30001", h.world.instances[1].id)])
    );

    // The last node going NotReady would empty the group: the brake holds it.
    h.kube.set_node_ready("node-1", false);
    let braked = h.reconcile().await;
    assert_eq!(braked.plan.blocked().len(), 1, "{}", braked.plan);
    assert!(
        braked.plan.blocked()[0].reason.contains("brake"),
        "{}",
        braked.plan
    );
    assert_eq!(
        tgb_reconciler::pure::outcome::exit_code(std::slice::from_ref(&braked)),
        1
    );
    assert_eq!(
        h.world.targets(&tg).await,
        set(&[format!("{}:30001", h.world.instances[1].id)])
    );

    // Scaling to zero on purpose: the binding opts in and the group may go empty.
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "my-tgb-alb-instance")
        .expect("binding");
    binding["metadata"]["annotations"] = json!({"tgb-reconciler/allow-empty": "true"});
    h.kube.apply(binding);
    h.converge().await;
    assert!(h.world.targets(&tg).await.is_empty());
}

#[tokio::test]
async fn named_target_ports_resolve_per_endpoint_slice() {
    let h = Harness::start().await;
    let tg = h
        .world
        .target_group("tg-named", TargetTypeEnum::Ip, 80, &[])
        .await;
    let deployment = |name: &str, port: i64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "variant": name}},
                    "spec": {"containers": [{"name": "web", "image": "web",
                        "ports": [{"name": "http", "containerPort": port}]}]}}}})
    };
    h.kube.apply(deployment("web-a", 8080));
    h.kube.apply(deployment("web-b", 9090));
    h.kube.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}));
    h.kube.apply(
        json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "serviceRef": {"name": "web", "port": "web"}}}),
    );
    h.converge().await;
    let ports: BTreeSet<String> = h
        .world
        .targets(&tg)
        .await
        .iter()
        .map(|t| t.rsplit(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ports, set(&["8080".into(), "9090".into()]));
}

#[tokio::test]
async fn terminating_and_unready_endpoints_are_not_registered() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 3);
    h.converge().await;
    assert_eq!(h.world.targets(&tg).await.len(), 3);

    let pods = h.kube.pods("default");
    let name = |i: usize| {
        pods[i]["metadata"]["name"]
            .as_str()
            .expect("pod name")
            .to_string()
    };
    let ip = |i: usize| {
        pods[i]["status"]["podIP"]
            .as_str()
            .expect("pod IP")
            .to_string()
    };
    h.kube.set_pod_terminating("default", &name(0));
    h.kube.set_pod_ready("default", &name(1), false);
    let outcome = h.converge().await;
    assert_eq!(
        outcome.plan.count(TargetAction::DeregisterTargets),
        2,
        "{}",
        outcome.plan
    );
    assert_eq!(h.world.targets(&tg).await, set(&[format!("{}:80", ip(2))]));
}

#[tokio::test]
async fn host_network_pods_behind_instance_targets_register_their_instances_at_the_pod_port() {
    let h = Harness::start().await;
    let tg = h
        .world
        .target_group("tg-hostnet", TargetTypeEnum::Instance, 53, &[])
        .await;
    h.kube.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "dns"}},
            "template": {"metadata": {"labels": {"app": "dns"}},
                "spec": {"hostNetwork": true, "containers": [{"name": "dns", "image": "dns",
                    "ports": [{"containerPort": 8053}]}]}}}}));
    h.kube.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"app": "dns"}, "ports": [{"port": 53, "targetPort": 8053}]}}));
    h.kube.apply(json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "targetType": "instance", "serviceRef": {"name": "dns", "port": 53}}}));
    h.converge().await;
    let pod = &h.kube.pods("default")[0];
    let node = pod["spec"]["nodeName"].as_str().expect("scheduled");
    let index: usize = node.trim_start_matches("node-").parse().expect("node-N");
    assert_eq!(
        h.world.targets(&tg).await,
        set(&[format!("{}:8053", h.world.instances[index].id)])
    );
}

#[tokio::test]
async fn a_multi_cluster_target_group_keeps_the_targets_other_clusters_registered() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "my-tgb-alb-ip")
        .expect("binding");
    binding["spec"]["multiClusterTargetGroup"] = json!(true);
    h.kube.apply(binding);
    h.world.register(&tg, "192.168.90.7", 80).await; // another cluster's pod
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;
    assert_eq!(h.world.targets(&tg).await.len(), 3);

    h.kube.scale("default", "nginx-deployment", 1);
    let outcome = h.converge().await;
    assert_eq!(
        outcome.plan.count(TargetAction::DeregisterTargets),
        1,
        "{}",
        outcome.plan
    );
    let targets = h.world.targets(&tg).await;
    assert!(targets.contains("192.168.90.7:80"), "{targets:?}");
    assert_eq!(targets.len(), 2);
}

#[tokio::test]
async fn a_target_group_deleted_out_of_band_fails_its_binding_while_the_others_converge() {
    let h = Harness::start().await;
    let ip_tg = h.ip_walkthrough().await;
    let instance_tg = h.instance_binding().await;
    h.converge().await;

    h.world
        .elb
        .delete_target_group()
        .target_group_arn(&instance_tg)
        .send()
        .await
        .expect("delete by hand");
    h.kube.scale("default", "nginx-deployment", 2);
    let outcome = h.reconcile().await;
    assert_eq!(outcome.plan.failures().len(), 1, "{}", outcome.plan);
    assert!(
        outcome.plan.failures()[0]
            .error
            .to_string()
            .contains("not found"),
        "{}",
        outcome.plan
    );
    assert!(outcome.report.as_ref().is_some_and(|r| r.is_clean()));
    assert_eq!(h.world.targets(&ip_tg).await.len(), 2);
    assert_eq!(
        tgb_reconciler::pure::outcome::exit_code(std::slice::from_ref(&outcome)),
        1
    );
}

#[tokio::test]
async fn an_unreadable_cluster_deregisters_nothing() {
    for status in [500, 403, 401] {
        let h = Harness::start().await;
        let tg = h.ip_walkthrough().await;
        h.kube.scale("default", "nginx-deployment", 2);
        h.converge().await;
        let before = h.world.targets(&tg).await;

        h.kube.fail_with(Some(status));
        h.aws.calls.reset();
        let outcome = h.reconcile().await;
        assert!(
            outcome.plan.cluster_error.is_some(),
            "{status}: {}",
            outcome.plan
        );
        assert!(outcome.report.is_none());
        assert!(
            h.mutating_calls().is_empty(),
            "{status}: {:?}",
            h.mutating_calls()
        );
        assert_eq!(h.world.targets(&tg).await, before, "{status}");
        assert_eq!(
            tgb_reconciler::pure::outcome::exit_code(std::slice::from_ref(&outcome)),
            1
        );
    }
}

#[tokio::test]
async fn manual_edits_are_healed_by_the_next_run() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;
    let converged = h.world.targets(&tg).await;

    let ip = h.pod_ips()[0].clone();
    h.world.deregister(&tg, &ip, 80).await;
    h.world.register(&tg, "192.168.50.50", 80).await;
    let outcome = h.converge().await;
    assert_eq!(
        outcome.plan.count(TargetAction::RegisterTargets),
        1,
        "{}",
        outcome.plan
    );
    assert_eq!(
        outcome.plan.count(TargetAction::DeregisterTargets),
        1,
        "{}",
        outcome.plan
    );
    assert_eq!(h.world.targets(&tg).await, converged);
}

#[tokio::test]
async fn a_malformed_binding_fails_alone() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.apply(json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "serviceRef": {"name": "nginx-tgb-svc-alb-ip", "port": 81}}}));
    h.kube.apply(
        json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "garbled", "namespace": "default"},
        "spec": {"serviceRef": {"name": "x", "port": {"bad": true}}}}),
    );
    let outcome = h.reconcile().await;
    let mut fields: Vec<String> = outcome
        .plan
        .failures()
        .iter()
        .map(|f| f.error.field.clone())
        .collect();
    fields.sort();
    // "broken" shares the target group with the good binding and is reported for its port;
    // the conflict check never sees it because it failed first.
    assert_eq!(
        fields,
        ["spec.serviceRef.port", "spec.serviceRef.port"],
        "{}",
        outcome.plan
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);
}

#[tokio::test]
async fn a_tagged_target_group_is_a_binding_too() {
    let h = Harness::start().await;
    h.load_workload();
    h.kube.scale("default", "nginx-deployment", 2);
    let tg = h
        .world
        .target_group(
            "tg-tagged",
            TargetTypeEnum::Ip,
            80,
            &[
                ("tgb-reconciler/cluster", "demo"),
                ("tgb-reconciler/service", "default/nginx-tgb-svc-alb-ip"),
                ("tgb-reconciler/port", "80"),
            ],
        )
        .await;
    let other = h
        .world
        .target_group(
            "tg-other-cluster",
            TargetTypeEnum::Ip,
            80,
            &[
                ("tgb-reconciler/cluster", "elsewhere"),
                ("tgb-reconciler/service", "default/nginx-tgb-svc-alb-ip"),
                ("tgb-reconciler/port", "80"),
            ],
        )
        .await;
    let outcome = h.converge().await;
    assert_eq!(outcome.plan.declared(), 1, "{}", outcome.plan);
    assert_eq!(h.world.targets(&tg).await.len(), 2);
    assert!(h.world.targets(&other).await.is_empty());
}

#[tokio::test]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.aws.calls.reset();
    let outcome = h.dry_run().await;
    assert_eq!(outcome.plan.count(TargetAction::RegisterTargets), 1);
    assert!(outcome.report.is_none());
    assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
    assert!(h.world.targets(&tg).await.is_empty());
}

#[tokio::test]
async fn throttled_registrations_are_retried_with_backoff_until_they_land() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    let proxy = support::throttle::ThrottlingProxy::start(&h.moto.url, "RegisterTargets", 2).await;
    let sdk = h
        .moto
        .sdk_config()
        .await
        .into_builder()
        .endpoint_url(&proxy.url)
        .build();
    // The product's own retry configuration, on the proxy's endpoint.
    let sdk = tgb_reconciler::adapters::Aws::retrying(sdk);
    let aws = tgb_reconciler::adapters::Aws::new(sdk, support::harness::TABLE);
    let outcome = tgb_reconciler::shell::cluster_run::reconcile_cluster(
        support::harness::CLUSTER,
        h.connector
            .client(support::harness::CLUSTER)
            .await
            .map(|c| {
                tgb_reconciler::adapters::kube::KubeEndpointSource::new(
                    c,
                    support::harness::CLUSTER,
                )
            }),
        &aws.ports(),
        &Default::default(),
        &tgb_reconciler::pure::scope::Scope::Cluster,
        &Default::default(),
    )
    .await
    .remove(0);
    let report = outcome.report.expect("applied");
    assert!(report.is_clean(), "{report}");
    assert_eq!(proxy.throttled(), 2, "both throttled answers were seen");
    let registrations: usize = aws
        .calls
        .snapshot()
        .iter()
        .filter(|(operation, _)| operation.ends_with(".RegisterTargets"))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(
        registrations,
        1,
        "one operation, retried inside the SDK: {:?}",
        aws.calls.snapshot()
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);
}

#[tokio::test]
async fn a_cluster_api_that_times_out_deregisters_nothing() {
    let mut h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;
    h.connector = tgb_reconciler::adapters::eks::ClusterConnector::new(
        tgb_reconciler::adapters::eks::ClusterAccess::Kubeconfig(vec![h.kubeconfig.clone()]),
        &h.aws.sdk,
        h.aws.calls.clone(),
    )
    .with_read_timeout(std::time::Duration::from_millis(500));
    h.kube.scale("default", "nginx-deployment", 0);
    h.kube.delay(Some(std::time::Duration::from_secs(2)));
    h.aws.calls.reset();
    let outcome = h.reconcile().await;
    let error = outcome
        .plan
        .cluster_error
        .as_deref()
        .unwrap_or_else(|| panic!("{}", outcome.plan));
    assert!(error.contains("listing"), "{error}");
    assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
    assert_eq!(h.world.targets(&tg).await.len(), 2);
}

#[tokio::test]
async fn a_cross_account_target_group_is_reached_through_the_bindings_role() {
    const ROLE: &str = "arn:aws:iam::222222222222:role/tg-access";
    let h = Harness::start().await;
    h.load_workload();
    h.kube.scale("default", "nginx-deployment", 2);
    // The target group lives in another account, in a VPC this account cannot see.
    let sdk = h.moto.sdk_config().await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(ROLE)
        .session_name("test-setup")
        .external_id("tgb-x")
        .configure(&sdk)
        .build()
        .await;
    let other = sdk
        .into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    let other_ec2 = aws_sdk_ec2::Client::new(&other);
    let other_elb = aws_sdk_elasticloadbalancingv2::Client::new(&other);
    let vpc = other_ec2
        .create_vpc()
        .cidr_block("10.50.0.0/16")
        .send()
        .await
        .expect("create VPC");
    let tg = other_elb
        .create_target_group()
        .name("shared-web")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(vpc.vpc().and_then(|v| v.vpc_id()).expect("VPC id"))
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .expect("create target group in the other account");
    let tg = tg.target_groups()[0]
        .target_group_arn()
        .expect("ARN")
        .to_string();
    assert!(tg.contains(":222222222222:"), "{tg}");

    h.kube.apply(
        json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "shared", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "serviceRef": {"name": "nginx-tgb-svc-alb-ip", "port": 80},
            "iamRoleArnToAssume": ROLE, "assumeRoleExternalId": "tgb-x"}}),
    );
    let outcome = h.converge().await;
    assert_eq!(
        outcome.plan.count(TargetAction::RegisterTargets),
        2,
        "{}",
        outcome.plan
    );
    assert!(
        outcome
            .plan
            .changes()
            .iter()
            .all(|c| c.availability_zone.as_deref() == Some("all")),
        "pod IPs are outside the other account's VPC: {}",
        outcome.plan
    );
    let health = other_elb
        .describe_target_health()
        .target_group_arn(&tg)
        .send()
        .await
        .expect("read targets");
    assert_eq!(health.target_health_descriptions().len(), 2);
    assert!(h.reconcile().await.plan.is_converged());
}

#[tokio::test]
async fn an_ipv6_target_group_takes_only_ipv6_endpoints() {
    let h = Harness::start().await;
    let vpc = h
        .world
        .ec2
        .associate_vpc_cidr_block()
        .vpc_id(&h.world.vpc)
        .amazon_provided_ipv6_cidr_block(true)
        .send()
        .await
        .expect("add an IPv6 CIDR");
    let v6 = vpc
        .ipv6_cidr_block_association()
        .and_then(|a| a.ipv6_cidr_block())
        .expect("IPv6 CIDR")
        .to_string();
    let prefix = v6.split("::").next().expect("prefix").to_string();
    // Canonical form: moto's random prefix may carry leading zeros, which targets never do.
    let inside = format!("{prefix}::10")
        .parse::<std::net::Ipv6Addr>()
        .expect("an IPv6 address")
        .to_string();
    let tg = h
        .world
        .elb
        .create_target_group()
        .name("tg-v6")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&h.world.vpc)
        .target_type(TargetTypeEnum::Ip)
        .ip_address_type(aws_sdk_elasticloadbalancingv2::types::TargetGroupIpAddressTypeEnum::Ipv6)
        .send()
        .await
        .expect("create an IPv6 target group");
    let tg = tg.target_groups()[0]
        .target_group_arn()
        .expect("ARN")
        .to_string();
    h.kube.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web6", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}}));
    let slice = |name: &str, family: &str, addresses: &[&str]| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web6"}},
            "addressType": family, "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()})
    };
    h.kube
        .apply(slice("web6-v6", "IPv6", &[&inside, "2001:db8::7"]));
    h.kube.apply(slice("web6-v4", "IPv4", &["192.168.40.77"]));
    h.kube.apply(json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "web6", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "ipAddressType": "ipv6", "serviceRef": {"name": "web6", "port": 80}}}));
    let outcome = h.converge().await;
    let zones: BTreeSet<(String, Option<String>)> = outcome
        .plan
        .changes()
        .iter()
        .map(|c| (c.target.id.to_string(), c.availability_zone.clone()))
        .collect();
    assert_eq!(
        zones,
        [
            (inside.clone(), None),
            ("2001:db8::7".to_string(), Some("all".to_string()))
        ]
        .into()
    );
    assert_eq!(h.world.targets(&tg).await.len(), 2);
    assert!(
        h.reconcile().await.plan.is_converged(),
        "IPv6 ownership records read back"
    );

    // A spec that contradicts its target group's family is refused, naming the field.
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "web6")
        .expect("binding");
    binding["spec"]["ipAddressType"] = json!("ipv4");
    h.kube.apply(binding);
    let refused = h.reconcile().await;
    assert_eq!(
        refused.plan.failures()[0].error.field,
        "spec.ipAddressType",
        "{}",
        refused.plan
    );
    assert_eq!(
        h.world.targets(&tg).await.len(),
        2,
        "nothing of that binding changed"
    );
}
