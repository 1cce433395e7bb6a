//! The EC2 security-group adapter against moto: ownership marker, revoke by id, quota and
//! missing-group errors, and a plan → apply → plan round trip that ends with nothing to do.

mod support;

use std::collections::BTreeMap;
use support::harness::Harness;
use tgb_reconciler::Error;
use tgb_reconciler::model::{BindingId, Peer, Permission, PortRange, Protocol, SecurityGroupId};
use tgb_reconciler::ports::FirewallRules;
use tgb_reconciler::pure::desire::rules::DesiredRule;
use tgb_reconciler::pure::plan::rules::{DEFAULT_MAX_RULES_PER_FAMILY, RuleInput, plan_rules};

async fn group(h: &Harness, name: &str) -> SecurityGroupId {
    let created = h
        .world
        .ec2
        .create_security_group()
        .group_name(name)
        .description(name)
        .vpc_id(&h.world.vpc)
        .send()
        .await
        .expect("create security group");
    created.group_id().expect("group id").into()
}

fn tcp(port: u16, peer: Peer) -> Permission {
    Permission {
        protocol: Protocol::Tcp,
        ports: PortRange::single(port),
        peer,
    }
}

#[tokio::test]
async fn our_rules_carry_the_cluster_marker_and_are_revoked_by_id_only() {
    let h = Harness::start().await;
    let node = group(&h, "node").await;
    let alb = h.world.alb_security_group.clone();
    let firewall = &h.aws.ec2;

    // A foreign rule identical to the one we are about to add.
    h.world
        .ec2
        .authorize_security_group_ingress()
        .group_id(&node)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(80)
                .to_port(80)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&alb)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("a rule made by hand");
    let ours = [
        tcp(80, Peer::SecurityGroup(alb.as_str().into())),
        Permission {
            protocol: Protocol::Udp,
            ports: PortRange::single(53),
            peer: Peer::Cidr("10.0.0.0/8".parse().expect("cidr")),
        },
        tcp(443, Peer::Cidr("2001:db8::/64".parse().expect("cidr"))),
    ];
    firewall
        .authorize_ingress(&node, &ours, "prod")
        .await
        .expect("authorize");

    let rules = firewall
        .ingress_rules(std::slice::from_ref(&node))
        .await
        .expect("read rules");
    let rules = &rules[&node];
    assert_eq!(rules.len(), 4, "{rules:?}");
    let owned: Vec<&Permission> = rules
        .iter()
        .filter(|r| r.owner.as_deref() == Some("prod"))
        .map(|r| &r.permission)
        .collect();
    assert_eq!(owned.len(), 3, "{rules:?}");
    assert_eq!(rules.iter().filter(|r| r.owner.is_none()).count(), 1);

    let ours_at_80 = rules
        .iter()
        .find(|r| r.owner.is_some() && r.permission == ours[0])
        .expect("our rule at 80");
    firewall
        .revoke_ingress(&node, std::slice::from_ref(&ours_at_80.rule_id))
        .await
        .expect("revoke");
    let after = firewall
        .ingress_rules(std::slice::from_ref(&node))
        .await
        .expect("read rules");
    assert!(
        after[&node]
            .iter()
            .any(|r| r.owner.is_none() && r.permission == ours[0]),
        "the identical foreign rule survives: {after:?}"
    );
    assert_eq!(after[&node].len(), 3);
}

#[tokio::test]
async fn missing_groups_and_the_rule_limit_are_reported_as_such() {
    let h = Harness::start().await;
    let node = group(&h, "node").await;
    let firewall = &h.aws.ec2;

    let existing = firewall
        .existing_groups(&[node.clone(), "sg-0123456789abcdef0".into()])
        .await
        .expect("describe");
    assert_eq!(
        existing.into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&node)
    );

    let missing_peer = [tcp(80, Peer::SecurityGroup("sg-0123456789abcdef0".into()))];
    let error = firewall
        .authorize_ingress(&node, &missing_peer, "prod")
        .await
        .expect_err("unknown peer");
    assert!(
        matches!(error, Error::SecurityGroupNotFound { .. }),
        "{}",
        error.chain()
    );

    let sixty: Vec<Permission> = (0..60)
        .map(|i| tcp(1000 + i, Peer::Cidr("10.0.0.0/8".parse().expect("cidr"))))
        .collect();
    firewall
        .authorize_ingress(&node, &sixty, "prod")
        .await
        .expect("60 rules fit");
    let error = firewall
        .authorize_ingress(
            &node,
            &[tcp(2000, Peer::Cidr("10.0.0.0/8".parse().expect("cidr")))],
            "prod",
        )
        .await
        .expect_err("the 61st rule");
    assert!(
        matches!(error, Error::RuleLimitExceeded { .. }),
        "{}",
        error.chain()
    );
}

#[tokio::test]
async fn a_planned_change_applied_leaves_nothing_to_plan_even_from_a_non_canonical_cidr() {
    let h = Harness::start().await;
    let node = group(&h, "node").await;
    let firewall = &h.aws.ec2;
    // `10.0.0.18/16` as a spec would write it; desire canonicalizes the way EC2 stores it.
    let peer = tgb_reconciler::pure::binding::networking::parse_cidr("10.0.0.18/16").expect("cidr");
    let desired = vec![
        DesiredRule {
            group: node.clone(),
            permission: tcp(9090, Peer::Cidr(peer)),
            binding: BindingId::resource("default", "web"),
        },
        DesiredRule {
            group: node.clone(),
            permission: tcp(9091, Peer::Cidr(peer)),
            binding: BindingId::resource("default", "api"),
        },
    ];
    let input = |observed| RuleInput {
        cluster: "prod".into(),
        desired: desired.clone(),
        observed,
        max_rules_per_family: DEFAULT_MAX_RULES_PER_FAMILY,
        ..RuleInput::default()
    };
    let observed = firewall
        .ingress_rules(std::slice::from_ref(&node))
        .await
        .expect("read");
    let first = plan_rules(&input(observed));
    assert_eq!(first.authorize.len(), 1, "9090 and 9091 merge: {first:?}");
    let permissions: Vec<Permission> = first
        .authorize
        .iter()
        .map(|a| a.permission.clone())
        .collect();
    firewall
        .authorize_ingress(&node, &permissions, "prod")
        .await
        .expect("authorize");

    h.aws.calls.reset();
    let observed: BTreeMap<_, _> = firewall
        .ingress_rules(std::slice::from_ref(&node))
        .await
        .expect("read");
    let second = plan_rules(&input(observed));
    assert!(
        second.authorize.is_empty() && second.revoke.is_empty(),
        "{second:?}"
    );
    assert!(h.mutating_calls().is_empty());
}

#[tokio::test]
async fn network_facts_find_instance_interfaces_and_pod_addresses_and_the_group_to_use() {
    use tgb_reconciler::ports::NetworkDirectory;
    use tgb_reconciler::pure::desire::rules::endpoint_group;
    let h = Harness::start().await;
    let a = group(&h, "node-a").await;
    let b = group(&h, "node-b").await;
    h.world
        .ec2
        .create_tags()
        .resources(&b)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("kubernetes.io/cluster/demo")
                .value("owned")
                .build(),
        )
        .send()
        .await
        .expect("tag the cluster's group");
    // A pod's branch interface: two groups, not attached to a node.
    h.world
        .ec2
        .create_network_interface()
        .subnet_id(&h.world.subnets[0])
        .private_ip_address("192.168.33.77")
        .groups(&a)
        .groups(&b)
        .send()
        .await
        .expect("create an interface");

    let instances: Vec<String> = h.world.instances.iter().map(|i| i.id.clone()).collect();
    let asked: [std::sync::Arc<str>; 2] = [
        "192.168.33.77".into(),
        h.world.instances[0].private_ip.as_str().into(),
    ];
    let facts = h
        .aws
        .ec2
        .network_facts(&instances, &asked)
        .await
        .expect("facts");
    // The addresses asked for key the answer themselves, shared rather than copied (a run asks
    // for tens of thousands).
    for ip in &asked {
        let (key, _) = facts
            .eni_by_ip
            .get_key_value(&**ip)
            .expect("an interface for each address asked");
        assert!(std::sync::Arc::ptr_eq(key, ip), "{ip} was copied");
    }
    for instance in &h.world.instances {
        let primary = facts
            .primary_eni
            .get(&instance.id)
            .expect("primary interface");
        assert_eq!(
            facts.eni_by_ip.get(instance.private_ip.as_str()),
            Some(primary)
        );
    }
    let branch = facts
        .eni_by_ip
        .get("192.168.33.77")
        .expect("found by address");
    assert_eq!(branch.groups.len(), 2);
    assert_eq!(
        *endpoint_group(branch, &facts.group_tags, "demo").expect("one cluster-tagged group"),
        b
    );
}
