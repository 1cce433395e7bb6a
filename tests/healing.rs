//! Manual edits undone by the events they raise, through the Lambda path (`handle_event`),
//! against moto and the Kubernetes test API server. Each event is narrowed to what it can
//! affect: it costs a few reads, never a sweep.

mod support;

use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use std::collections::BTreeMap;
use support::events::{GROUP_ID, INSTANCE_ID, TARGET_GROUP_ARN, sample};
use support::harness::Harness;
use tgb_reconciler::entry::lambda::{HandledEvent, handle_event};
use tgb_reconciler::model::SecurityGroupId;
use tgb_reconciler::ports::FirewallRules;
use tgb_reconciler::pure::scope::Scope;

const OWN_ROLE: Option<&str> = Some("arn:aws:iam::123456789012:role/tgb-reconciler");

async fn handle(h: &Harness, name: &str, ids: &[(&str, &str)]) -> HandledEvent {
    h.aws.calls.reset();
    handle_event(&sample(name, ids), OWN_ROLE, &h.session(false)).await
}

/// Calls of one operation since the last reset.
fn calls(h: &Harness, operation: &str) -> usize {
    h.aws
        .calls
        .snapshot()
        .iter()
        .filter(|(name, _)| name.ends_with(&format!(".{operation}")))
        .map(|(_, n)| n)
        .sum()
}

/// The walkthrough's ip binding (with its ALB rule) and instance binding, converged.
async fn both_bindings(h: &Harness) -> (String, String) {
    let tg_ip = h.ip_walkthrough().await;
    let tg_instance = h.instance_binding().await;
    h.kube.scale("default", "nginx-deployment", 2);
    h.converge().await;
    (tg_ip, tg_instance)
}

fn assert_clean(handled: &HandledEvent) {
    assert!(!handled.outcomes.is_empty(), "no run");
    for outcome in &handled.outcomes {
        assert!(
            outcome.report.as_ref().is_some_and(|r| r.is_clean()),
            "{}\n{:?}",
            outcome.plan,
            outcome.report
        );
    }
}

#[tokio::test]
async fn a_deregistered_target_is_restored_and_a_foreign_one_removed_reading_only_that_target_group()
 {
    let h = Harness::start().await;
    let (tg_ip, _) = both_bindings(&h).await;
    let registered = h.world.targets(&tg_ip).await;
    let pod = registered.iter().next().expect("a pod").clone();
    let (ip, port) = pod.split_once(':').expect("ip:port");
    let port: i32 = port.parse().expect("port");

    h.world.deregister(&tg_ip, ip, port).await;
    let handled = handle(
        &h,
        "cloudtrail-deregister-targets.json",
        &[(TARGET_GROUP_ARN, &tg_ip)],
    )
    .await;
    assert_clean(&handled);
    assert_eq!(
        handled.outcomes[0].scope,
        Scope::TargetGroup(tg_ip.as_str().into())
    );
    assert_eq!(h.world.targets(&tg_ip).await, registered, "restored");
    // Only the event's target group is read (once to look, once more under the lease, as
    // every run with something to write); rules are not this event's business.
    assert_eq!(calls(&h, "DescribeTargetHealth"), 2);
    assert_eq!(calls(&h, "DescribeNetworkInterfaces"), 0);
    assert_eq!(calls(&h, "DescribeSecurityGroupRules"), 0);

    h.world.register(&tg_ip, "192.168.50.50", 80).await;
    let handled = handle(
        &h,
        "cloudtrail-register-targets.json",
        &[(TARGET_GROUP_ARN, &tg_ip)],
    )
    .await;
    assert_clean(&handled);
    assert_eq!(h.world.targets(&tg_ip).await, registered, "foreign removed");
    assert_eq!(calls(&h, "DescribeTargetHealth"), 2);
}

#[tokio::test]
async fn a_rule_revoked_by_hand_is_restored_by_its_revoke_event_and_an_unrelated_group_costs_nothing()
 {
    let h = Harness::start().await;
    let (tg_ip, tg_instance) = both_bindings(&h).await;
    let node_group = SecurityGroupId::from(h.world.instance_groups(0).await.remove(0));
    let ours =
        |rules: &BTreeMap<SecurityGroupId, Vec<tgb_reconciler::model::aws::ObservedRule>>| {
            let mut ours: Vec<String> = rules[&node_group]
                .iter()
                .filter(|r| r.owner.as_deref() == Some("demo"))
                .map(|r| r.permission.to_string())
                .collect();
            ours.sort();
            ours
        };
    let read = || h.aws.ec2.ingress_rules(std::slice::from_ref(&node_group));
    let before = read().await.expect("rules");
    let converged = ours(&before);
    assert!(!converged.is_empty());
    let victim = before[&node_group]
        .iter()
        .find(|r| r.owner.as_deref() == Some("demo"))
        .expect("one of ours");
    h.aws
        .ec2
        .revoke_ingress(&node_group, std::slice::from_ref(&victim.rule_id))
        .await
        .expect("revoke by hand");

    let handled = handle(
        &h,
        "cloudtrail-revoke-security-group-ingress.json",
        &[(GROUP_ID, node_group.as_str())],
    )
    .await;
    assert_clean(&handled);
    let outcome = &handled.outcomes[0];
    assert_eq!(outcome.scope, Scope::SecurityGroup(node_group.clone()));
    assert_eq!(outcome.plan.rules.authorize.len(), 1, "{}", outcome.plan);
    assert_eq!(ours(&read().await.expect("rules")), converged, "restored");
    // Both bindings have rules there, so both target groups are covered (and nothing else),
    // read to look and again under the lease.
    assert_eq!(
        calls(&h, "DescribeTargetHealth"),
        4,
        "{tg_ip} {tg_instance}"
    );

    // With nothing to change, what the group event costs next to a sweep, by operation.
    let extra = h
        .world
        .target_group("tg-extra", TargetTypeEnum::Ip, 80, &[])
        .await;
    h.kube.apply(serde_json::json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": {"name": "no-rules", "namespace": "default"},
        "spec": {"targetGroupARN": extra, "serviceRef": {"name": "nginx-tgb-svc-alb-ip", "port": 80}}}));
    h.converge().await;
    let steady_event = handle(
        &h,
        "cloudtrail-revoke-security-group-ingress.json",
        &[(GROUP_ID, node_group.as_str())],
    )
    .await;
    assert!(steady_event.outcomes[0].plan.is_converged());
    let event_calls = h.aws.calls.snapshot();
    let event_health_reads = calls(&h, "DescribeTargetHealth");
    h.aws.calls.reset();
    assert!(h.reconcile().await.plan.is_converged());
    let sweep_calls = h.aws.calls.snapshot();
    // EC2 and ELB calls: the rate-limited ones (the event reads the records once more, to
    // find its bindings before connecting to the cluster).
    let total = |calls: &BTreeMap<String, usize>| {
        calls
            .iter()
            .filter(|(name, _)| !name.starts_with("DynamoDB."))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    println!(
        "EC2+ELB calls of a security-group event (2 of 3 bindings): {} of {event_calls:?}",
        total(&event_calls)
    );
    println!(
        "EC2+ELB calls of a sweep (3 bindings): {} of {sweep_calls:?}",
        total(&sweep_calls)
    );
    assert!(total(&event_calls) < total(&sweep_calls));
    assert_eq!(event_health_reads, 2, "{event_calls:?}");

    // A group nobody of ours has rules on: the records say so, and nothing else is read.
    let kube_before = h.kube.requests().len();
    let alb_group = h.world.alb_security_group.clone();
    let handled = handle(
        &h,
        "cloudtrail-authorize-security-group-ingress.json",
        &[
            (GROUP_ID, &alb_group),
            (
                "/detail/responseElements/securityGroupRuleSet/items/0/groupId",
                &alb_group,
            ),
        ],
    )
    .await;
    assert!(
        handled.outcomes[0].skipped.is_some(),
        "{:?}",
        handled.outcomes[0]
    );
    let aws_calls: Vec<String> = h.aws.calls.snapshot().into_keys().collect();
    assert_eq!(aws_calls, ["DynamoDB.Query"], "only the records are read");
    assert_eq!(
        h.kube.requests().len(),
        kube_before,
        "the cluster is not read"
    );
}

#[tokio::test]
async fn a_terminated_instance_is_deregistered_when_its_state_change_arrives() {
    let h = Harness::start().await;
    let (_, tg_instance) = both_bindings(&h).await;
    assert_eq!(h.world.targets(&tg_instance).await.len(), 2);
    let gone = h.world.instances[1].id.clone();
    h.world
        .ec2
        .terminate_instances()
        .instance_ids(&gone)
        .send()
        .await
        .expect("terminate");
    h.kube
        .delete("Node", None, &support::world::World::node_name(1));

    let handled = handle(&h, "ec2-instance-terminated.json", &[(INSTANCE_ID, &gone)]).await;
    assert_clean(&handled);
    assert_eq!(handled.outcomes.len(), 1, "its cluster, found by its tags");
    let left = h.world.targets(&tg_instance).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left.iter().all(|t| !t.starts_with(&gone)), "{left:?}");
}
