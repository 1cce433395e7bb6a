//! Security-group rules end to end against moto and the Kubernetes test API server: seed 001's
//! outage cannot happen, only our own rules are ever revoked, and manual edits are healed.

mod support;

use aws_sdk_ec2::types::{IpPermission, IpRange};
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use serde_json::json;
use support::harness::Harness;
use tgb_reconciler::model::aws::ObservedRule;
use tgb_reconciler::model::{Peer, Protocol, SecurityGroupId};
use tgb_reconciler::ports::FirewallRules;

/// The nodes' security group (moto gives every instance the VPC's default group).
async fn node_group(h: &Harness) -> SecurityGroupId {
    let facts = tgb_reconciler::ports::NetworkDirectory::network_facts(
        &h.aws.ec2,
        &[h.world.instances[0].id.clone()],
        &[],
    )
    .await
    .expect("facts");
    facts.primary_eni[&h.world.instances[0].id].groups[0].clone()
}

async fn rules(h: &Harness, group: &str) -> Vec<ObservedRule> {
    let mut all = h
        .aws
        .ec2
        .ingress_rules(&[group.into()])
        .await
        .expect("read rules");
    all.remove(group).unwrap_or_default()
}

/// A group's inbound rules as `tcp/80 from sg-…`.
async fn permissions(h: &Harness, group: &str) -> Vec<String> {
    let rules = rules(h, group).await;
    rules.iter().map(|r| r.permission.to_string()).collect()
}

fn binding(
    name: &str,
    tg: &str,
    service: &str,
    port: i64,
    ingress: serde_json::Value,
) -> serde_json::Value {
    json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetGroupARN": tg, "serviceRef": {"name": service, "port": port}, "networking": {"ingress": ingress}}})
}

#[tokio::test]
async fn seed_001_a_binding_naming_a_missing_group_fails_alone_and_nothing_is_revoked() {
    let h = Harness::start().await;
    h.load_workload();
    let alb = h.world.alb_security_group.clone();
    let tg_a = h
        .world
        .target_group("tg-a", TargetTypeEnum::Instance, 80, &[])
        .await;
    let tg_b = h
        .world
        .target_group("tg-b", TargetTypeEnum::Ip, 80, &[])
        .await;
    let tg_c = h
        .world
        .target_group("tg-c", TargetTypeEnum::Ip, 80, &[])
        .await;
    let from_alb = |port: i64| json!([{"from": [{"securityGroup": {"groupID": alb}}], "ports": [{"protocol": "TCP", "port": port}]}]);
    h.kube.apply(binding(
        "a",
        &tg_a,
        "nginx-tgb-svc-alb-instance",
        80,
        from_alb(30001),
    ));
    h.kube.apply(binding(
        "b",
        &tg_b,
        "nginx-tgb-svc-alb-ip",
        80,
        from_alb(80),
    ));
    h.converge().await;
    let group = node_group(&h).await;
    let before: Vec<String> = rules(&h, &group)
        .await
        .iter()
        .map(|r| r.permission.to_string())
        .collect();
    assert_eq!(before.len(), 2, "{before:?}");

    // A third binding names a group that does not exist; the healthy ones change port.
    h.kube.apply(binding("c", &tg_c, "nginx-tgb-svc-alb-ip", 80,
        json!([{"from": [{"securityGroup": {"groupID": "sg-0123456789abcdef0"}}], "ports": [{"protocol": "TCP", "port": 8080}]}])));
    h.kube.apply(binding(
        "b",
        &tg_b,
        "nginx-tgb-svc-alb-ip",
        80,
        from_alb(8443),
    ));
    let outcome = h.reconcile().await;
    assert_eq!(outcome.plan.rule_failures().len(), 1, "{}", outcome.plan);
    assert!(
        outcome.plan.rule_failures()[0]
            .error
            .message
            .contains("sg-0123456789abcdef0"),
        "{}",
        outcome.plan
    );
    let after: Vec<String> = rules(&h, &group)
        .await
        .iter()
        .map(|r| r.permission.to_string())
        .collect();
    assert!(
        after.contains(&format!("tcp/30001 from {alb}")),
        "a's rule stays: {after:?}"
    );
    assert!(
        after.contains(&format!("tcp/8443 from {alb}")),
        "b's new rule landed: {after:?}"
    );
    assert!(
        !after.contains(&format!("tcp/80 from {alb}")),
        "b's old rule went, after the new one: {after:?}"
    );
    assert!(
        h.world.targets(&tg_c).await.len() == 1,
        "c's targets do not depend on its rules"
    );
}

#[tokio::test]
async fn only_our_marked_rules_for_this_cluster_are_revoked_and_manual_edits_are_healed() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.converge().await;
    let group = node_group(&h).await;
    let alb = h.world.alb_security_group.clone();
    let ours = |rules: &[ObservedRule]| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.owner.as_deref() == Some("demo"))
            .map(|r| r.permission.to_string())
            .collect()
    };
    assert_eq!(
        ours(&rules(&h, &group).await),
        [format!("tcp/all from {alb}")]
    );

    // Someone else's identical rule, another cluster's rule, a stray rule with our marker,
    // and our own rule revoked by hand.
    let foreign = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip("10.9.0.0/16").build())
        .build();
    h.world
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(foreign)
        .send()
        .await
        .expect("foreign rule");
    h.aws
        .ec2
        .authorize_ingress(
            &group,
            &[tgb_reconciler::model::Permission {
                protocol: Protocol::Tcp,
                ports: tgb_reconciler::model::PortRange::single(9000),
                peer: Peer::SecurityGroup(alb.as_str().into()),
            }],
            "blue",
        )
        .await
        .expect("another cluster's rule");
    h.aws
        .ec2
        .authorize_ingress(
            &group,
            &[tgb_reconciler::model::Permission {
                protocol: Protocol::Udp,
                ports: tgb_reconciler::model::PortRange::single(53),
                peer: Peer::SecurityGroup(alb.as_str().into()),
            }],
            "demo",
        )
        .await
        .expect("a stray rule marked as ours");
    let mine = rules(&h, &group)
        .await
        .into_iter()
        .find(|r| r.owner.as_deref() == Some("demo") && r.permission.protocol == Protocol::Tcp)
        .expect("our rule");
    h.world
        .ec2
        .revoke_security_group_ingress()
        .group_id(&group)
        .security_group_rule_ids(&mine.rule_id)
        .send()
        .await
        .expect("revoke by hand");

    let healed = h.converge().await;
    assert_eq!(healed.plan.rules.authorize.len(), 1, "{}", healed.plan);
    assert_eq!(healed.plan.rules.revoke.len(), 1, "{}", healed.plan);
    let now = rules(&h, &group).await;
    assert_eq!(ours(&now), [format!("tcp/all from {alb}")]);
    assert!(
        now.iter().any(|r| r.owner.as_deref() == Some("blue")),
        "the other cluster's rule stays"
    );
    assert!(
        now.iter()
            .any(|r| r.owner.is_none() && r.permission.ports.from == 22),
        "the foreign rule stays"
    );

    // Deleting the binding revokes its rule, and only that.
    h.kube
        .delete("TargetGroupBinding", Some("default"), "my-tgb-alb-ip");
    h.converge().await;
    assert!(ours(&rules(&h, &group).await).is_empty());
    assert_eq!(rules(&h, &group).await.len(), now.len() - 1);
    assert!(h.world.targets(&tg).await.is_empty());

    h.aws.calls.reset();
    assert!(h.reconcile().await.plan.is_converged());
    assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
}

#[tokio::test]
async fn seed_003_world_open_peers_are_refused_unless_allowed_and_a_non_canonical_cidr_converges() {
    let mut h = Harness::start().await;
    h.load_workload();
    let tg = h
        .world
        .target_group("tg-dns", TargetTypeEnum::Ip, 53, &[])
        .await;
    let seed_003 = support::harness::manifest("seed003-networking-udp.yaml", &[]);
    let networking: serde_json::Value = serde_saphyr::from_str(&seed_003).expect("YAML");
    h.kube.apply(
        json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"targetGroupARN": tg, "serviceRef": {"name": "nginx-tgb-svc-alb-ip", "port": 80},
            "networking": networking["networking"]}}),
    );
    let refused = h.reconcile().await;
    assert!(
        refused.plan.rule_failures()[0]
            .error
            .message
            .contains("0.0.0.0/0"),
        "{}",
        refused.plan
    );
    assert_eq!(
        h.world.targets(&tg).await.len(),
        1,
        "targets do not wait for rules"
    );

    h.policy.allow_world_open = true;
    h.converge().await;
    let group = node_group(&h).await;
    assert!(
        rules(&h, &group)
            .await
            .iter()
            .any(|r| r.permission.to_string() == "udp/53 from 0.0.0.0/0")
    );

    // A CIDR as people write it: canonicalized, so the next run sees no drift.
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "dns")
        .expect("binding");
    binding["spec"]["networking"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] =
        json!("10.0.0.18/16");
    h.kube.apply(binding);
    h.converge().await;
    assert!(
        rules(&h, &group)
            .await
            .iter()
            .any(|r| r.permission.to_string() == "udp/53 from 10.0.0.0/16")
    );
    h.aws.calls.reset();
    assert!(h.reconcile().await.plan.is_converged());
    assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
}

#[tokio::test]
async fn the_rule_that_would_pass_the_quota_is_refused_before_anything_is_written_to_that_group() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    let group = node_group(&h).await;
    // Fill the group with foreign rules up to 59 (IPv4; a group reference counts for both
    // families); the walkthrough's binding takes the 60th place; the next rule is the 61st.
    let present = rules(&h, &group).await.len();
    let fillers: Vec<IpPermission> = (0..(59 - present) as i32)
        .map(|i| {
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(1000 + 2 * i)
                .to_port(1000 + 2 * i)
                .ip_ranges(IpRange::builder().cidr_ip("10.9.0.0/16").build())
                .build()
        })
        .collect();
    h.world
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .set_ip_permissions(Some(fillers))
        .send()
        .await
        .expect("foreign rules");
    let fits = h.converge().await;
    assert_eq!(fits.plan.rules.authorize.len(), 1, "{}", fits.plan);
    let tg_extra = h
        .world
        .target_group("tg-extra", TargetTypeEnum::Ip, 80, &[])
        .await;
    h.kube.apply(binding("extra", &tg_extra, "nginx-tgb-svc-alb-ip", 80,
        json!([{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "UDP", "port": 5000}]}])));
    let before = rules(&h, &group).await.len();
    let outcome = h.reconcile().await;
    assert_eq!(outcome.plan.rules.blocked.len(), 1, "{}", outcome.plan);
    assert!(
        outcome.plan.rules.blocked[0]
            .reason
            .contains("would hold 61 IPv4"),
        "{}",
        outcome.plan
    );
    assert_eq!(
        rules(&h, &group).await.len(),
        before,
        "nothing half-applied"
    );
    assert_eq!(
        tgb_reconciler::pure::outcome::exit_code(std::slice::from_ref(&outcome)),
        1
    );
    assert_eq!(h.world.targets(&tg).await.len(), 1);
    assert_eq!(
        h.world.targets(&tg_extra).await.len(),
        1,
        "its targets still register"
    );
}

#[tokio::test]
async fn seed_003_udp_through_an_nlb_admits_clients_and_the_tcp_health_check_from_its_subnets() {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum,
    };
    let h = Harness::start().await;
    h.load_workload();
    let nlb = h
        .world
        .elb
        .create_load_balancer()
        .name("dns-nlb")
        .set_subnets(Some(h.world.subnets.clone()))
        .r#type(LoadBalancerTypeEnum::Network)
        .send()
        .await
        .expect("create NLB");
    let nlb = nlb.load_balancers()[0]
        .load_balancer_arn()
        .expect("NLB ARN")
        .to_string();
    let tg = h
        .world
        .elb
        .create_target_group()
        .name("dns-udp")
        .protocol(ProtocolEnum::Udp)
        .port(53)
        .vpc_id(&h.world.vpc)
        .target_type(TargetTypeEnum::Ip)
        .health_check_protocol(ProtocolEnum::Tcp)
        .health_check_port("8080")
        .send()
        .await
        .expect("create UDP target group");
    let tg = tg.target_groups()[0]
        .target_group_arn()
        .expect("ARN")
        .to_string();
    h.world
        .elb
        .create_listener()
        .load_balancer_arn(&nlb)
        .protocol(ProtocolEnum::Udp)
        .port(53)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg)
                .build(),
        )
        .send()
        .await
        .expect("create UDP listener");
    h.kube.apply(binding("dns", &tg, "nginx-tgb-svc-alb-ip", 80,
        json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 53, "protocol": "UDP"}]}])));
    let outcome = h.converge().await;
    let group = node_group(&h).await;
    let mut ours: Vec<String> = rules(&h, &group)
        .await
        .iter()
        .filter(|r| r.owner.as_deref() == Some("demo"))
        .map(|r| r.permission.to_string())
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        [
            "tcp/8080 from 192.168.32.0/19",
            "tcp/8080 from 192.168.64.0/19",
            "udp/53 from 10.0.0.0/8"
        ],
        "{}",
        outcome.plan
    );
}

#[tokio::test]
async fn two_clusters_sharing_a_node_group_never_revoke_each_others_rules() {
    use support::kube_api::KubeApi;
    use tgb_reconciler::adapters::eks::{ClusterAccess, ClusterConnector};
    let h = Harness::start().await;
    h.ip_walkthrough().await;
    h.converge().await;
    let group = node_group(&h).await;

    // A second cluster on the same instances, binding another target group.
    let blue = KubeApi::start().await;
    blue.set_pod_ip_pool("192.168.129.0/24");
    support::harness::add_nodes(&blue, &h.world);
    blue.apply_yaml(&support::harness::manifest("seed004-workload.yaml", &[]));
    let tg_blue = h
        .world
        .target_group("tg-blue", TargetTypeEnum::Ip, 80, &[])
        .await;
    blue.apply(binding("blue", &tg_blue, "nginx-tgb-svc-alb-ip", 80,
        json!([{"from": [{"securityGroup": {"groupID": h.world.alb_security_group}}], "ports": [{"protocol": "TCP", "port": 9000}]}])));
    h.world.place_pods(&blue.pods("default")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("blue");
    blue.write_kubeconfig(&kubeconfig, "blue");
    let connector = ClusterConnector::new(
        ClusterAccess::Kubeconfig(vec![kubeconfig]),
        &h.aws.sdk,
        h.aws.calls.clone(),
    );
    let blue_session = h.session_with(connector, &["blue"], false);
    let blue_work = [(
        "blue".to_string(),
        tgb_reconciler::pure::scope::Scope::Cluster,
    )];
    let run_blue = || tgb_reconciler::shell::session::reconcile_clusters(&blue_session, &blue_work);
    let first = run_blue().await.remove(0);
    assert!(
        first.report.as_ref().is_some_and(|r| r.is_clean()),
        "{}",
        first.plan
    );

    let owners = |rules: Vec<ObservedRule>| -> Vec<(Option<String>, String)> {
        let mut owners: Vec<_> = rules
            .into_iter()
            .map(|r| (r.owner, r.permission.to_string()))
            .collect();
        owners.sort();
        owners
    };
    let alb = &h.world.alb_security_group;
    let both = owners(rules(&h, &group).await);
    assert!(
        both.contains(&(Some("blue".into()), format!("tcp/9000 from {alb}"))),
        "{both:?}"
    );
    assert!(
        both.contains(&(Some("demo".into()), format!("tcp/all from {alb}"))),
        "{both:?}"
    );

    // Each cluster's runs leave the other's rule alone, even when its own goes.
    assert!(h.reconcile().await.plan.rules.is_empty());
    h.kube
        .delete("TargetGroupBinding", Some("default"), "my-tgb-alb-ip");
    h.converge().await;
    let after = owners(rules(&h, &group).await);
    assert!(
        after.contains(&(Some("blue".into()), format!("tcp/9000 from {alb}"))),
        "{after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|(owner, _)| owner.as_deref() == Some("demo")),
        "{after:?}"
    );
    assert!(run_blue().await.remove(0).plan.is_converged());
}

#[tokio::test]
async fn a_named_port_is_served_only_by_containers_and_sidecars_and_an_undeclared_one_fails_its_binding()
 {
    let h = Harness::start().await;
    let alb = h.world.alb_security_group.clone();
    h.kube.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "None",
            "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}]}}));
    // A plain init container has exited before the pod serves; a sidecar runs beside it.
    h.kube
        .apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "initContainers": [
                    {"name": "migrate", "image": "migrate",
                        "ports": [{"name": "metrics", "containerPort": 9090}]},
                    {"name": "proxy", "image": "proxy", "restartPolicy": "Always",
                        "ports": [{"name": "admin", "containerPort": 15000}]}],
                "containers": [{"name": "web", "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 80}]}]}}}}));
    let tg_sidecar = h
        .world
        .target_group("tg-sidecar", TargetTypeEnum::Ip, 80, &[])
        .await;
    let tg_init = h
        .world
        .target_group("tg-init", TargetTypeEnum::Ip, 80, &[])
        .await;
    let named = |name: &str| json!([{"from": [{"securityGroup": {"groupID": alb}}], "ports": [{"protocol": "TCP", "port": name}]}]);
    h.kube
        .apply(binding("sidecar", &tg_sidecar, "web", 80, named("admin")));
    h.kube
        .apply(binding("init", &tg_init, "web", 80, named("metrics")));

    let outcome = h.reconcile().await;
    let failures: Vec<String> = outcome
        .plan
        .rule_failures()
        .iter()
        .map(|f| format!("{}: {}", f.binding, f.error.field))
        .collect();
    assert_eq!(
        failures,
        ["tgb/default/init: spec.networking.ingress[0].ports[0].port"],
        "{}",
        outcome.plan
    );
    let now = permissions(&h, &node_group(&h).await).await;
    assert!(
        now.contains(&format!("tcp/15000 from {alb}")),
        "the sidecar's port is open: {now:?}"
    );
    assert!(
        !now.iter().any(|r| r.starts_with("tcp/9090")),
        "nothing opened for the init container's port: {now:?}"
    );
    assert_eq!(
        h.world.targets(&tg_init).await.len(),
        1,
        "the failing binding's targets do not depend on its rules"
    );
}
