//! Table-style tests of desired security-group rules.

use super::*;
use crate::model::{Peer, SecurityGroupId, Target};
use crate::pure::binding::fixtures;
use crate::pure::binding::networking::{IngressRule, Networking};
use crate::pure::desire::{DesiredTarget, TargetSource};
use std::sync::Arc;

fn binding(target_type: TargetType, ingress: Vec<IngressRule>) -> ResolvedBinding {
    let mut binding = fixtures::binding("web", "arn");
    binding.networking = Some(Networking { ingress });
    fixtures::resolved(binding, target_type)
}

fn alb() -> Peer {
    Peer::SecurityGroup("sg-alb".into())
}

fn targets(ids: &[(&str, u16, Option<&str>)]) -> DesiredTargets {
    DesiredTargets {
        targets: ids
            .iter()
            .map(|(id, port, pod)| {
                (
                    Target::new(*id, *port),
                    DesiredTarget {
                        availability_zone: None,
                        source: match pod {
                            Some(pod) => TargetSource::Pod(Arc::from(*pod)),
                            None => TargetSource::Slice("test".into()),
                        },
                    },
                )
            })
            .collect(),
        evidence: String::new(),
        ..DesiredTargets::default()
    }
}

fn eni(id: &str, groups: &[&str]) -> Arc<Eni> {
    Arc::new(Eni {
        id: id.into(),
        groups: groups.iter().map(|&g| g.into()).collect(),
    })
}

fn facts() -> NetworkFacts {
    NetworkFacts {
        primary_eni: [
            ("i-1".to_string(), eni("eni-1", &["sg-node"])),
            ("i-2".to_string(), eni("eni-2", &["sg-node"])),
        ]
        .into_iter()
        .collect(),
        eni_by_ip: [
            ("192.168.1.10".into(), eni("eni-1", &["sg-node"])),
            ("192.168.1.20".into(), eni("eni-branch", &["sg-pods"])),
        ]
        .into_iter()
        .collect(),
        group_tags: BTreeMap::new(),
    }
}

fn lines(rules: &[DesiredRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| format!("{} {}", r.group, r.permission))
        .collect()
}

fn port(protocol: Protocol, port: Option<PortRef>) -> PortRule {
    PortRule { protocol, port }
}

#[test]
fn rules_are_every_peer_times_every_port_in_each_targets_group() {
    let no_pods = PodPorts::new();
    let cases: Vec<(&str, ResolvedBinding, DesiredTargets, Vec<&str>)> = vec![
        (
            "instance targets share their nodes' group",
            binding(
                TargetType::Instance,
                vec![IngressRule {
                    from: vec![alb()],
                    ports: vec![port(Protocol::Tcp, Some(PortRef::Number(30001)))],
                }],
            ),
            targets(&[("i-1", 30001, None), ("i-2", 30001, None)]),
            vec!["sg-node tcp/30001 from sg-alb"],
        ),
        (
            "no ports means every TCP port",
            binding(
                TargetType::Ip,
                vec![IngressRule {
                    from: vec![alb()],
                    ports: vec![],
                }],
            ),
            targets(&[("192.168.1.10", 80, None)]),
            vec!["sg-node tcp/all from sg-alb"],
        ),
        (
            "a port without a number means the whole protocol",
            binding(
                TargetType::Ip,
                vec![IngressRule {
                    from: vec![Peer::Cidr("10.0.0.0/8".parse().expect("cidr"))],
                    ports: vec![port(Protocol::Udp, None)],
                }],
            ),
            targets(&[("192.168.1.10", 53, None)]),
            vec!["sg-node udp/all from 10.0.0.0/8"],
        ),
        (
            "a pod on a branch interface gets the rules in the branch's group",
            binding(
                TargetType::Ip,
                vec![IngressRule {
                    from: vec![alb()],
                    ports: vec![port(Protocol::Tcp, Some(PortRef::Number(80)))],
                }],
            ),
            targets(&[("192.168.1.10", 80, None), ("192.168.1.20", 80, None)]),
            vec!["sg-node tcp/80 from sg-alb", "sg-pods tcp/80 from sg-alb"],
        ),
    ];
    for (name, binding, targets, expected) in cases {
        let rules = desired_rules(&binding, &targets, &facts(), &no_pods, &[], "prod").expect(name);
        assert_eq!(lines(&rules), expected, "{name}");
    }
}

#[test]
fn named_ports_resolve_per_pod_and_open_nothing_where_a_pod_lacks_the_name() {
    let b = binding(
        TargetType::Ip,
        vec![IngressRule {
            from: vec![alb()],
            ports: vec![port(Protocol::Tcp, Some(PortRef::Name("http".into())))],
        }],
    );
    let pod_ports: PodPorts = [
        (
            "default/a".to_string(),
            [(("http".to_string(), Protocol::Tcp), 8080u16)].into(),
        ),
        (
            "default/b".to_string(),
            [(("http".to_string(), Protocol::Tcp), 9090u16)].into(),
        ),
        ("default/c".to_string(), BTreeMap::new()),
    ]
    .into();
    let mut network = facts();
    network
        .eni_by_ip
        .insert("192.168.1.30".into(), eni("eni-1", &["sg-node"]));
    let t = targets(&[
        ("192.168.1.10", 8080, Some("default/a")),
        ("192.168.1.20", 9090, Some("default/b")),
        ("192.168.1.30", 80, Some("default/c")),
    ]);
    let rules = desired_rules(&b, &t, &network, &pod_ports, &[], "prod").expect("rules");
    assert_eq!(
        lines(&rules),
        [
            "sg-node tcp/8080 from sg-alb",
            "sg-pods tcp/9090 from sg-alb"
        ]
    );
}

#[test]
fn a_named_port_no_pod_declares_for_its_protocol_fails_the_binding_naming_the_field() {
    let named = |protocol, name: &str| {
        binding(
            TargetType::Ip,
            vec![IngressRule {
                from: vec![alb()],
                ports: vec![
                    port(Protocol::Tcp, Some(PortRef::Number(80))),
                    port(protocol, Some(PortRef::Name(name.into()))),
                ],
            }],
        )
    };
    let pod_ports: PodPorts = [(
        "default/a".to_string(),
        [(("dns".to_string(), Protocol::Udp), 53u16)].into(),
    )]
    .into();
    let one_pod = targets(&[("192.168.1.10", 53, Some("default/a"))]);
    let no_pod = targets(&[]);
    let field = "spec.networking.ingress[0].ports[1].port";
    let cases = [
        (
            "a name no container declares",
            named(Protocol::Tcp, "htpp"),
            &one_pod,
            Some(field),
        ),
        (
            "a name declared for the other protocol",
            named(Protocol::Tcp, "dns"),
            &one_pod,
            Some(field),
        ),
        (
            "a name declared for its protocol",
            named(Protocol::Udp, "dns"),
            &one_pod,
            None,
        ),
        (
            "no pods yet: nothing to check",
            named(Protocol::Tcp, "htpp"),
            &no_pod,
            None,
        ),
    ];
    for (name, binding, targets, failed_field) in cases {
        let result = desired_rules(&binding, targets, &facts(), &pod_ports, &[], "prod");
        match (result, failed_field) {
            (Err(error), Some(field)) => {
                assert_eq!(error.field, field, "{name}");
                assert!(
                    error.message.contains("restartPolicy: Always"),
                    "{name}: {error}"
                );
            }
            (Ok(_), None) => {}
            (result, _) => panic!("{name}: {result:?}"),
        }
    }
}

#[test]
fn the_group_of_an_interface_with_several_is_chosen_by_tag_or_the_binding_fails() {
    let tags = |pairs: &[(&str, &str)]| -> BTreeMap<SecurityGroupId, BTreeMap<String, String>> {
        let mut tags: BTreeMap<SecurityGroupId, BTreeMap<String, String>> = BTreeMap::new();
        for (group, key) in pairs {
            tags.entry((*group).into())
                .or_default()
                .insert(key.to_string(), String::new());
        }
        tags
    };
    let two = eni("eni-1", &["sg-a", "sg-b"]);
    let cases = [
        (tags(&[("sg-b", "kubernetes.io/cluster/prod")]), Ok("sg-b")),
        (
            tags(&[
                ("sg-a", "kubernetes.io/cluster/prod"),
                ("sg-b", "kubernetes.io/cluster/prod"),
            ]),
            Err(()),
        ),
        (
            tags(&[
                ("sg-a", "kubernetes.io/cluster/prod"),
                ("sg-b", "kubernetes.io/cluster/prod"),
                ("sg-a", ENDPOINT_GROUP_TAG),
            ]),
            Ok("sg-a"),
        ),
        (tags(&[("sg-a", "kubernetes.io/cluster/other")]), Err(())),
    ];
    for (tags, expected) in cases {
        let chosen = endpoint_group(&two, &tags, "prod");
        match expected {
            Ok(group) => assert_eq!(
                chosen.as_ref().ok().map(|g| g.as_str()),
                Some(group),
                "{tags:?}"
            ),
            Err(()) => {
                let error = chosen.expect_err("ambiguous");
                assert!(
                    error.message.contains("eni-1") && error.message.contains("sg-a, sg-b"),
                    "{error}"
                );
            }
        }
    }
}

#[test]
fn a_target_with_no_known_interface_fails_the_binding_rather_than_planning_half_its_rules() {
    let b = binding(
        TargetType::Ip,
        vec![IngressRule {
            from: vec![alb()],
            ports: vec![],
        }],
    );
    let error = desired_rules(
        &b,
        &targets(&[("192.168.9.9", 80, None)]),
        &facts(),
        &PodPorts::new(),
        &[],
        "prod",
    )
    .expect_err("unknown IP");
    assert!(error.message.contains("192.168.9.9"), "{error}");
}

#[test]
fn health_checks_tcp_udp_and_derived_ingress_admit_the_load_balancer() {
    let subnets = || vec![Peer::Cidr("192.168.32.0/19".parse().expect("cidr"))];
    let clients = || IngressRule {
        from: vec![Peer::Cidr("203.0.113.0/24".parse().expect("cidr"))],
        ports: vec![port(Protocol::Udp, Some(PortRef::Number(53)))],
    };
    let with_traffic = |mut b: ResolvedBinding, protocol: &str, health_port: &str| {
        b.traffic.protocol = Some(protocol.into());
        b.traffic.health_check_port = Some(health_port.into());
        b
    };
    let mut derived = binding(TargetType::Ip, vec![]);
    derived.binding.networking = None;
    derived.binding.derive_ingress = true;
    let cases: Vec<(&str, ResolvedBinding, Vec<&str>)> = vec![
        (
            "client CIDRs on UDP: the TCP health check is admitted from the NLB's subnets",
            with_traffic(binding(TargetType::Ip, vec![clients()]), "UDP", "8080"),
            vec![
                "sg-node tcp/8080 from 192.168.32.0/19",
                "sg-node udp/53 from 203.0.113.0/24",
            ],
        ),
        (
            "a TCP_UDP target group gets both protocols; traffic-port health checks use the target's port",
            with_traffic(
                binding(TargetType::Ip, vec![clients()]),
                "TCP_UDP",
                "traffic-port",
            ),
            vec![
                "sg-node tcp/53 from 192.168.32.0/19",
                "sg-node tcp/53 from 203.0.113.0/24",
                "sg-node udp/53 from 203.0.113.0/24",
            ],
        ),
        (
            "derived ingress admits the load balancer to each target's port and health check",
            with_traffic(derived, "TCP", "traffic-port"),
            vec!["sg-node tcp/53 from 192.168.32.0/19"],
        ),
    ];
    for (name, binding, expected) in cases {
        let rules = desired_rules(
            &binding,
            &targets(&[("192.168.1.10", 53, None)]),
            &facts(),
            &PodPorts::new(),
            &subnets(),
            "prod",
        )
        .expect(name);
        assert_eq!(lines(&rules), expected, "{name}");
    }
}

#[test]
fn without_networking_nothing_is_managed_unless_derived_and_deriving_needs_a_load_balancer() {
    let mut b = binding(TargetType::Ip, vec![]);
    b.binding.networking = None;
    let t = targets(&[("192.168.1.10", 80, None)]);
    assert!(
        desired_rules(&b, &t, &facts(), &PodPorts::new(), &[alb()], "prod")
            .expect("nothing")
            .is_empty()
    );
    b.binding.derive_ingress = true;
    let error = desired_rules(&b, &t, &facts(), &PodPorts::new(), &[], "prod")
        .expect_err("no load balancer");
    assert!(error.message.contains("no load balancer"), "{error}");
}

#[test]
fn a_load_balancer_without_groups_is_reached_from_its_subnets() {
    let cidrs: BTreeMap<String, Vec<ipnet::IpNet>> = [(
        "subnet-a".to_string(),
        vec!["192.168.32.0/19".parse().expect("cidr")],
    )]
    .into();
    let nlb = LoadBalancerInfo {
        arn: "nlb".into(),
        kind: "network".into(),
        security_groups: vec![],
        subnets: vec!["subnet-a".into()],
    };
    assert_eq!(
        load_balancer_peers(&nlb, &cidrs),
        [Peer::Cidr("192.168.32.0/19".parse().expect("cidr"))]
    );
    let alb = LoadBalancerInfo {
        security_groups: vec!["sg-alb".into()],
        ..nlb
    };
    assert_eq!(
        load_balancer_peers(&alb, &cidrs),
        [Peer::SecurityGroup("sg-alb".into())]
    );
}

#[test]
fn world_open_peers_and_missing_peer_groups_fail_the_binding_naming_them() {
    let b = binding(
        TargetType::Ip,
        vec![IngressRule {
            from: vec![Peer::Cidr("0.0.0.0/0".parse().expect("cidr"))],
            ports: vec![],
        }],
    );
    let rules = desired_rules(
        &b,
        &targets(&[("192.168.1.10", 80, None)]),
        &facts(),
        &PodPorts::new(),
        &[],
        "prod",
    )
    .expect("rules");
    let refused = refuse_world_open(&b, rules.clone(), false).expect_err("refused");
    assert!(refused.message.contains("0.0.0.0/0"), "{refused}");
    assert_eq!(
        refuse_world_open(&b, rules.clone(), true).expect("allowed"),
        rules
    );

    let by_ref = vec![DesiredRule {
        group: "sg-node".into(),
        permission: Permission {
            protocol: Protocol::Tcp,
            ports: PortRange::single(80),
            peer: alb(),
        },
        binding: b.binding.id.clone(),
    }];
    let missing = require_existing_peers(by_ref.clone(), &BTreeSet::new()).expect_err("missing");
    assert!(missing.message.contains("sg-alb"), "{missing}");
    assert_eq!(
        require_existing_peers(by_ref.clone(), &[SecurityGroupId::from("sg-alb")].into())
            .expect("exists"),
        by_ref
    );
}

#[test]
fn targets_sharing_a_group_and_port_add_their_rules_once_and_each_is_still_checked() {
    let subnets = vec![Peer::Cidr("192.168.32.0/19".parse().expect("cidr"))];
    let mut derived = binding(TargetType::Instance, vec![]);
    derived.binding.networking = None;
    derived.binding.derive_ingress = true;
    // Each case: its targets, and the rules' lines or a piece of the error.
    type Case<'a> = (&'a str, DesiredTargets, Result<Vec<&'a str>, &'a str>);
    let cases: Vec<Case> = vec![
        (
            "two nodes of one group on two ports: one rule per port",
            targets(&[
                ("i-1", 30080, None),
                ("i-2", 30080, None),
                ("i-2", 30081, None),
            ]),
            Ok(vec![
                "sg-node tcp/30080 from 192.168.32.0/19",
                "sg-node tcp/30081 from 192.168.32.0/19",
            ]),
        ),
        (
            "a target with no interface fails the binding even where its group and port repeat",
            targets(&[("i-1", 30080, None), ("i-9", 30080, None)]),
            Err("no network interface found for target i-9:30080"),
        ),
    ];
    for (name, targets, expected) in cases {
        let got = desired_rules(
            &derived,
            &targets,
            &facts(),
            &PodPorts::new(),
            &subnets,
            "prod",
        );
        match (got, expected) {
            (Ok(rules), Ok(expected)) => assert_eq!(lines(&rules), expected, "{name}"),
            (Err(error), Err(expected)) => {
                assert!(
                    error.message.contains(expected),
                    "{name}: {}",
                    error.message
                )
            }
            (got, _) => panic!("{name}: unexpected {got:?}"),
        }
    }
}
