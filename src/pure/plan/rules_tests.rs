//! Table-style tests of the security-group rule planner.

use super::*;

const CLUSTER: &str = "prod";

fn binding(name: &str) -> BindingId {
    BindingId::resource("default", name)
}

fn sg_peer(id: &str) -> Peer {
    Peer::SecurityGroup(id.into())
}

fn cidr(net: &str) -> Peer {
    Peer::Cidr(net.parse().expect("cidr"))
}

fn tcp(from: u16, to: u16, peer: Peer) -> Permission {
    Permission {
        protocol: Protocol::Tcp,
        ports: PortRange { from, to },
        peer,
    }
}

fn want(group: &str, name: &str, permission: Permission) -> DesiredRule {
    DesiredRule {
        group: group.into(),
        permission,
        binding: binding(name),
    }
}

fn rule(id: &str, permission: Permission, owner: Option<&str>) -> ObservedRule {
    ObservedRule {
        rule_id: id.into(),
        permission,
        owner: owner.map(str::to_string),
    }
}

fn input(desired: Vec<DesiredRule>, observed: Vec<(&str, Vec<ObservedRule>)>) -> RuleInput {
    RuleInput {
        cluster: CLUSTER.into(),
        desired,
        observed: observed.into_iter().map(|(g, r)| (g.into(), r)).collect(),
        max_rules_per_family: DEFAULT_MAX_RULES_PER_FAMILY,
        ..RuleInput::default()
    }
}

/// `+group tcp/80 from sg-alb` and `-group rule-id` lines.
fn lines(plan: &RulePlan) -> Vec<String> {
    plan.authorize
        .iter()
        .map(|a| format!("+{} {}", a.group, a.permission))
        .chain(
            plan.revoke
                .iter()
                .map(|r| format!("-{} {}", r.group, r.rule_id)),
        )
        .collect()
}

#[test]
fn rules_follow_the_difference_and_only_our_own_are_ever_revoked() {
    let alb = || sg_peer("sg-alb");
    let cases: Vec<(&str, RuleInput, Vec<&str>)> = vec![
        (
            "a missing rule is authorized and a stale one of ours revoked",
            input(
                vec![want("sg-node", "web", tcp(30001, 30001, alb()))],
                vec![(
                    "sg-node",
                    vec![rule("sgr-old", tcp(30002, 30002, alb()), Some(CLUSTER))],
                )],
            ),
            vec!["+sg-node tcp/30001 from sg-alb", "-sg-node sgr-old"],
        ),
        (
            "an identical foreign rule counts as present and is left alone",
            input(
                vec![want("sg-node", "web", tcp(80, 80, alb()))],
                vec![(
                    "sg-node",
                    vec![rule("sgr-theirs", tcp(80, 80, alb()), None)],
                )],
            ),
            vec![],
        ),
        (
            "a stale foreign rule and another cluster's rule are never revoked",
            input(
                vec![],
                vec![(
                    "sg-node",
                    vec![
                        rule("sgr-theirs", tcp(22, 22, cidr("10.0.0.0/8")), None),
                        rule("sgr-blue", tcp(80, 80, alb()), Some("blue")),
                    ],
                )],
            ),
            vec![],
        ),
        (
            "a converged group needs nothing",
            input(
                vec![want("sg-node", "web", tcp(80, 80, alb()))],
                vec![(
                    "sg-node",
                    vec![rule("sgr-1", tcp(80, 80, alb()), Some(CLUSTER))],
                )],
            ),
            vec![],
        ),
        (
            "a rule several bindings want is one rule",
            input(
                vec![
                    want("sg-node", "web", tcp(80, 80, alb())),
                    want("sg-node", "api", tcp(80, 80, alb())),
                ],
                vec![("sg-node", vec![])],
            ),
            vec!["+sg-node tcp/80 from sg-alb"],
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(lines(&plan_rules(&input)), expected, "{name}");
    }
}

#[test]
fn port_ranges_merge_only_where_no_extra_port_opens() {
    let alb = || sg_peer("sg-alb");
    let desired = vec![
        want("sg", "a", tcp(80, 80, alb())),
        want("sg", "b", tcp(81, 81, alb())),
        want("sg", "c", tcp(8000, 8010, alb())),
        want("sg", "d", tcp(8005, 8020, alb())),
        want("sg", "e", tcp(30001, 30001, alb())),
        want("sg", "f", tcp(30003, 30003, alb())),
        want("sg", "g", tcp(80, 80, cidr("10.0.0.0/16"))),
    ];
    let plan = plan_rules(&input(desired, vec![("sg", vec![])]));
    assert_eq!(
        lines(&plan),
        [
            "+sg tcp/80 from 10.0.0.0/16",
            "+sg tcp/80-81 from sg-alb",
            "+sg tcp/8000-8020 from sg-alb",
            "+sg tcp/30001 from sg-alb",
            "+sg tcp/30003 from sg-alb",
        ]
    );
    let merged = plan
        .authorize
        .iter()
        .find(|a| a.permission.ports == PortRange { from: 80, to: 81 })
        .expect("merged");
    assert_eq!(merged.bindings, [binding("a"), binding("b")].into());
}

#[test]
fn a_failed_bindings_rules_of_last_time_are_kept() {
    let mut input = input(
        vec![want("sg-node", "web", tcp(80, 80, sg_peer("sg-alb")))],
        vec![(
            "sg-node",
            vec![
                rule("sgr-web", tcp(80, 80, sg_peer("sg-alb")), Some(CLUSTER)),
                rule(
                    "sgr-api",
                    tcp(9090, 9090, cidr("192.168.32.0/19")),
                    Some(CLUSTER),
                ),
                rule(
                    "sgr-gone",
                    tcp(7000, 7000, cidr("192.168.32.0/19")),
                    Some(CLUSTER),
                ),
            ],
        )],
    );
    input.failed.insert(binding("api"));
    input.previous.insert(
        binding("api"),
        [GroupRule {
            group: "sg-node".into(),
            permission: tcp(9090, 9090, cidr("192.168.32.0/19")),
        }]
        .into(),
    );
    assert_eq!(lines(&plan_rules(&input)), ["-sg-node sgr-gone"]);
}

#[test]
fn bindings_whose_rules_would_pass_the_quota_are_blocked_before_anything_is_written() {
    let full: Vec<ObservedRule> = (0..58)
        .map(|i| {
            rule(
                &format!("sgr-{i}"),
                tcp(1000 + i * 2, 1000 + i * 2, cidr("10.0.0.0/8")),
                None,
            )
        })
        .chain([rule(
            "sgr-stale",
            tcp(9999, 9999, cidr("10.0.0.0/8")),
            Some(CLUSTER),
        )])
        .collect();
    let mut input = input(
        vec![
            want("sg", "a-fits", tcp(80, 80, cidr("10.1.0.0/16"))),
            want("sg", "b-too-many", tcp(81, 81, cidr("10.2.0.0/16"))),
            want("sg", "b-too-many", tcp(83, 83, cidr("10.2.0.0/16"))),
        ],
        vec![("sg", full)],
    );
    input.previous.insert(
        binding("b-too-many"),
        [GroupRule {
            group: "sg".into(),
            permission: tcp(9999, 9999, cidr("10.0.0.0/8")),
        }]
        .into(),
    );
    let plan = plan_rules(&input);
    assert_eq!(
        lines(&plan),
        ["+sg tcp/80 from 10.1.0.0/16"],
        "the stale rule is b's old one: kept"
    );
    assert_eq!(plan.blocked.len(), 1);
    assert_eq!(plan.blocked[0].binding, binding("b-too-many"));
    assert_eq!(plan.blocked[0].permissions.len(), 2);
    assert!(
        plan.blocked[0].reason.contains("62 IPv4"),
        "{}",
        plan.blocked[0].reason
    );
}

#[test]
fn a_security_group_reference_counts_for_both_families_and_a_cidr_for_its_own() {
    let v6_full: Vec<ObservedRule> = (0..60)
        .map(|i| rule(&format!("sgr-{i}"), tcp(i, i, cidr("2001:db8::/64")), None))
        .collect();
    let plan = plan_rules(&input(
        vec![
            want("sg", "v4", tcp(80, 80, cidr("10.0.0.0/16"))),
            want("sg", "ref", tcp(80, 80, sg_peer("sg-alb"))),
        ],
        vec![("sg", v6_full)],
    ));
    assert_eq!(lines(&plan), ["+sg tcp/80 from 10.0.0.0/16"]);
    assert_eq!(
        plan.blocked
            .iter()
            .map(|b| b.binding.clone())
            .collect::<Vec<_>>(),
        [binding("ref")]
    );
}

#[test]
fn applying_the_plan_leaves_nothing_to_do() {
    let desired = vec![
        want("sg", "web", tcp(80, 80, sg_peer("sg-alb"))),
        want("sg", "web", tcp(81, 81, sg_peer("sg-alb"))),
        want(
            "sg",
            "dns",
            Permission {
                protocol: Protocol::Udp,
                ports: PortRange::single(53),
                peer: cidr("10.0.0.0/8"),
            },
        ),
    ];
    let first = plan_rules(&input(
        desired.clone(),
        vec![(
            "sg",
            vec![rule(
                "sgr-old",
                tcp(22, 22, sg_peer("sg-alb")),
                Some(CLUSTER),
            )],
        )],
    ));
    let after: Vec<ObservedRule> = first
        .authorize
        .iter()
        .enumerate()
        .map(|(i, a)| rule(&format!("sgr-new-{i}"), a.permission.clone(), Some(CLUSTER)))
        .collect();
    let second = plan_rules(&input(desired, vec![("sg", after)]));
    assert_eq!(lines(&second), Vec::<String>::new());
    assert!(second.blocked.is_empty());
}

#[test]
fn a_group_that_was_not_observed_is_not_planned() {
    let plan = plan_rules(&input(
        vec![want("sg-missing", "web", tcp(80, 80, sg_peer("sg-alb")))],
        vec![],
    ));
    assert!(plan.authorize.is_empty() && plan.revoke.is_empty());
    assert_eq!(plan.unknown_groups, ["sg-missing"]);
}

#[test]
fn world_open_ingress_on_managed_ports_is_reported_and_revoked_only_on_opt_in() {
    let world = || cidr("0.0.0.0/0");
    let observed = vec![
        rule("sgr-open-80", tcp(80, 80, world()), None),
        rule("sgr-open-22", tcp(22, 22, world()), None),
        rule("sgr-ours", tcp(80, 80, sg_peer("sg-alb")), Some(CLUSTER)),
    ];
    let mut input = input(
        vec![want("sg", "web", tcp(80, 80, sg_peer("sg-alb")))],
        vec![("sg", observed)],
    );
    let reported = plan_rules(&input);
    assert_eq!(
        reported
            .world_open
            .iter()
            .map(|r| r.rule_id.as_str())
            .collect::<Vec<_>>(),
        ["sgr-open-80"]
    );
    assert!(reported.revoke.is_empty(), "reported, not revoked");
    input.revoke_world_open = true;
    assert_eq!(lines(&plan_rules(&input)), ["-sg sgr-open-80"]);
}
