//! Table-style tests of the planner: each case states a situation and what the plan must say.

use super::*;
use crate::model::TargetType;
use crate::pure::binding::{Binding, fixtures};
use crate::pure::desire::{DesiredTarget, TargetSource};

const TG_A: &str = "arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/a/1";
const TG_B: &str = "arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/b/2";

fn id(name: &str) -> BindingId {
    BindingId::resource("default", name)
}

fn resolved(name: &str, arn: &str) -> ResolvedBinding {
    fixtures::resolved(fixtures::binding(name, arn), TargetType::Ip)
}

fn target(ip: &str) -> Target {
    Target::new(ip, 80)
}

fn desired(ips: &[&str]) -> DesiredTargets {
    DesiredTargets {
        targets: ips
            .iter()
            .map(|ip| {
                (
                    target(ip),
                    DesiredTarget {
                        availability_zone: None,
                        source: TargetSource::Pod(format!("default/pod-{ip}").into()),
                    },
                )
            })
            .collect(),
        evidence: format!("{} ready", ips.len()),
        ..DesiredTargets::default()
    }
}

fn ready(binding: ResolvedBinding, ips: &[&str]) -> BindingState {
    BindingState::Ready {
        binding: Box::new(binding),
        desired: desired(ips),
    }
}

fn observed(targets: &[(&str, &str)]) -> Observation {
    Observation::Targets(
        targets
            .iter()
            .map(|(ip, state)| ObservedTarget {
                target: target(ip),
                availability_zone: None,
                state: (*state).into(),
                why: None,
            })
            .collect(),
    )
}

fn healthy(ips: &[&str]) -> Observation {
    observed(&ips.iter().map(|ip| (*ip, "healthy")).collect::<Vec<_>>())
}

fn record(name: &str, arn: &str, ips: &[&str]) -> OwnershipRecord {
    OwnershipRecord {
        binding: id(name),
        target_group: TargetGroupRef::new(arn),
        multi_cluster: false,
        targets: ips.iter().map(|ip| target(ip)).collect(),
        rules: Default::default(),
    }
}

fn input(
    bindings: Vec<BindingState>,
    records: Vec<OwnershipRecord>,
    observed: Vec<(&str, Observation)>,
) -> PlanInput {
    PlanInput {
        cluster: "prod".into(),
        bindings,
        records,
        observed: observed
            .into_iter()
            .map(|(arn, o)| (arn.into(), o))
            .collect(),
        resource_bindings_listed: true,
        ..PlanInput::default()
    }
}

/// `(+|-)ip` for every change, in plan order.
fn changes(plan: &Plan) -> Vec<String> {
    plan.changes()
        .iter()
        .map(|c| {
            let sign = if c.action == TargetAction::RegisterTargets {
                '+'
            } else {
                '-'
            };
            format!("{sign}{}@{}", c.target.id, c.target_group.short_name())
        })
        .collect()
}

#[test]
fn target_changes_follow_the_difference_between_desired_and_observed() {
    let a = "targetgroup/a/1";
    let cases: Vec<(&str, PlanInput, Vec<String>)> = vec![
        (
            "missing endpoints are registered and stale ones deregistered, registrations first",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.1", "10.0.0.2"])],
                vec![record("web", TG_A, &["10.0.0.1", "10.0.0.9"])],
                vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.9"]))],
            ),
            vec![format!("+10.0.0.2@{a}"), format!("-10.0.0.9@{a}")],
        ),
        (
            "a converged target group needs nothing",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(TG_A, healthy(&["10.0.0.1"]))],
            ),
            vec![],
        ),
        (
            "a draining target is neither present nor stale",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(
                    TG_A,
                    observed(&[
                        ("10.0.0.1", "draining"),
                        ("10.0.0.7", "draining"),
                        ("10.0.0.8", "initial"),
                    ]),
                )],
            ),
            vec![format!("+10.0.0.1@{a}"), format!("-10.0.0.8@{a}")],
        ),
        (
            "a target registered by hand is removed from a single-owner target group",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(TG_A, healthy(&["10.0.0.1", "10.9.9.9"]))],
            ),
            vec![format!("-10.9.9.9@{a}")],
        ),
        (
            "a multi-cluster target group only loses what this cluster registered",
            input(
                vec![ready(Binding::multi(resolved("web", TG_A)), &["10.0.0.1"])],
                vec![OwnershipRecord {
                    multi_cluster: true,
                    ..record("web", TG_A, &["10.0.0.1", "10.0.0.2"])
                }],
                vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.2", "10.1.0.5"]))],
            ),
            vec![format!("-10.0.0.2@{a}")],
        ),
        (
            "a multi-cluster target group with no record yet loses nothing",
            input(
                vec![ready(Binding::multi(resolved("web", TG_A)), &["10.0.0.1"])],
                vec![],
                vec![(TG_A, healthy(&["10.0.0.1", "10.1.0.5"]))],
            ),
            vec![],
        ),
        (
            "a deleted binding's targets are deregistered and nothing else",
            input(
                vec![ready(resolved("api", TG_B), &["10.0.0.5"])],
                vec![
                    record("web", TG_A, &["10.0.0.1"]),
                    record("api", TG_B, &["10.0.0.5"]),
                ],
                vec![
                    (TG_A, healthy(&["10.0.0.1", "10.7.7.7"])),
                    (TG_B, healthy(&["10.0.0.5"])),
                ],
            ),
            vec![format!("-10.0.0.1@{a}")],
        ),
        (
            "a binding moved to another target group registers there before leaving the old one",
            input(
                vec![ready(resolved("web", TG_B), &["10.0.0.1"])],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(TG_A, healthy(&["10.0.0.1"])), (TG_B, healthy(&[]))],
            ),
            vec![
                "+10.0.0.1@targetgroup/b/2".to_string(),
                format!("-10.0.0.1@{a}"),
            ],
        ),
        (
            "a target another binding recorded in the group is left to that binding",
            input(
                vec![
                    ready(resolved("web", TG_A), &["10.0.0.1"]),
                    BindingState::Failed {
                        id: id("api"),
                        error: BindingError::new("spec", "bad"),
                    },
                ],
                vec![
                    record("web", TG_A, &["10.0.0.1"]),
                    record("api", TG_A, &["10.0.0.5"]),
                ],
                vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.5", "10.9.9.9"]))],
            ),
            vec![format!("-10.9.9.9@{a}")],
        ),
        (
            "targets read in any order, some twice, are compared as sets",
            input(
                vec![ready(
                    resolved("web", TG_A),
                    &["10.0.0.2", "10.0.0.4", "10.0.0.6"],
                )],
                vec![record("web", TG_A, &["10.0.0.2", "10.0.0.4", "10.0.0.6"])],
                vec![(
                    TG_A,
                    healthy(&["10.0.0.6", "10.0.0.1", "10.0.0.4", "10.0.0.1", "10.0.0.9"]),
                )],
            ),
            vec![
                format!("+10.0.0.2@{a}"),
                format!("-10.0.0.1@{a}"),
                format!("-10.0.0.9@{a}"),
            ],
        ),
        (
            "stale targets on both sides of every desired one are all found",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.5"])],
                vec![record("web", TG_A, &["10.0.0.5"])],
                vec![(TG_A, healthy(&["10.0.0.9", "10.0.0.1"]))],
            ),
            vec![
                format!("+10.0.0.5@{a}"),
                format!("-10.0.0.1@{a}"),
                format!("-10.0.0.9@{a}"),
            ],
        ),
        (
            "a failed binding keeps its targets and its record",
            input(
                vec![BindingState::Failed {
                    id: id("web"),
                    error: BindingError::new("spec", "bad"),
                }],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(TG_A, healthy(&["10.0.0.1"]))],
            ),
            vec![],
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(changes(&plan(&input)), expected, "{name}");
    }
}

#[test]
fn every_change_carries_its_binding_and_a_reason() {
    let p = plan(&input(
        vec![ready(resolved("web", TG_A), &["10.0.0.2"])],
        vec![record("web", TG_A, &["10.0.0.1"])],
        vec![(TG_A, healthy(&["10.0.0.1", "10.9.9.9"]))],
    ));
    assert_eq!(p.changes().len(), 3);
    for change in &p.changes() {
        assert_eq!(change.binding, id("web"));
        assert!(!change.reason.is_empty());
    }
    let reasons: Vec<&str> = p.changes().iter().map(|c| c.reason.as_str()).collect();
    assert!(
        reasons[0].contains("pod default/pod-10.0.0.2"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("no longer desired"), "{reasons:?}");
    assert!(reasons[2].contains("outside this binding"), "{reasons:?}");
}

#[test]
fn the_brake_holds_back_emptying_a_target_group_unless_the_binding_allows_it() {
    let braked = plan(&input(
        vec![ready(resolved("web", TG_A), &[])],
        vec![record("web", TG_A, &["10.0.0.1", "10.0.0.2"])],
        vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.2"]))],
    ));
    assert!(braked.changes().is_empty());
    assert_eq!(braked.blocked().len(), 1);
    assert_eq!(braked.blocked()[0].targets.len(), 2);
    assert!(
        braked.blocked()[0].reason.contains("allow-empty"),
        "{}",
        braked.blocked()[0].reason
    );
    assert!(
        braked.records().is_empty(),
        "the held targets stay owned: {:?}",
        braked.records()
    );

    let mut allowed = resolved("web", TG_A);
    allowed.binding.allow_empty = true;
    let scaled_to_zero = plan(&input(
        vec![ready(allowed, &[])],
        vec![record("web", TG_A, &["10.0.0.1", "10.0.0.2"])],
        vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.2"]))],
    ));
    assert_eq!(scaled_to_zero.count(TargetAction::DeregisterTargets), 2);
    assert!(scaled_to_zero.blocked().is_empty());
}

#[test]
fn the_brake_does_not_hold_back_a_partial_scale_down() {
    let p = plan(&input(
        vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
        vec![record("web", TG_A, &["10.0.0.1", "10.0.0.2", "10.0.0.3"])],
        vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]))],
    ));
    assert_eq!(p.count(TargetAction::DeregisterTargets), 2);
    assert!(p.blocked().is_empty());
}

#[test]
fn unreadable_or_missing_target_groups_fail_only_their_binding() {
    for (observation, message) in [
        (Observation::NotFound, "not found"),
        (
            Observation::Unreadable(std::sync::Arc::new(crate::error::Error::Config(
                "throttled".into(),
            ))),
            "throttled",
        ),
    ] {
        let p = plan(&input(
            vec![
                ready(resolved("web", TG_A), &["10.0.0.1"]),
                ready(resolved("api", TG_B), &["10.0.0.5"]),
            ],
            vec![record("web", TG_A, &["10.0.0.9"])],
            vec![(TG_A, observation), (TG_B, healthy(&[]))],
        ));
        assert_eq!(p.failures().len(), 1);
        assert_eq!(p.failures()[0].binding, id("web"));
        assert!(p.failures()[0].error.message.contains(message));
        assert_eq!(changes(&p), vec!["+10.0.0.5@targetgroup/b/2".to_string()]);
    }
}

#[test]
fn two_bindings_on_one_target_group_conflict_unless_all_are_multi_cluster() {
    let conflict = plan(&input(
        vec![
            ready(resolved("web", TG_A), &["10.0.0.1"]),
            ready(resolved("web2", TG_A), &["10.0.0.2"]),
        ],
        vec![],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    ));
    assert_eq!(conflict.failures().len(), 2);
    assert!(conflict.changes().is_empty());

    let shared = plan(&input(
        vec![
            ready(Binding::multi(resolved("web", TG_A)), &["10.0.0.1"]),
            ready(Binding::multi(resolved("web2", TG_A)), &["10.0.0.2"]),
        ],
        vec![],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    ));
    assert!(shared.failures().is_empty());
    assert_eq!(
        changes(&shared),
        vec!["+10.0.0.2@targetgroup/a/1".to_string()]
    );
}

#[test]
fn ownership_is_recorded_before_registering_and_settled_after() {
    let p = plan(&input(
        vec![ready(resolved("web", TG_A), &["10.0.0.1", "10.0.0.2"])],
        vec![record("web", TG_A, &["10.0.0.1", "10.0.0.9"])],
        vec![(TG_A, healthy(&["10.0.0.1", "10.0.0.9"]))],
    ));
    let change = &p.records()[0];
    let before = change.before.as_ref().expect("written before registering");
    assert_eq!(
        before.targets,
        [target("10.0.0.1"), target("10.0.0.2"), target("10.0.0.9")].into()
    );
    assert_eq!(
        change.after,
        RecordAfter::Save(record("web", TG_A, &["10.0.0.1", "10.0.0.2"]))
    );
}

#[test]
fn a_binding_moving_its_rule_claims_old_and_new_until_its_targets_have_moved() {
    use crate::model::{Peer, Permission, PortRange, Protocol};
    use crate::pure::desire::rules::DesiredRule;
    let on = |port: u16| GroupRule {
        group: "sg-nodes".into(),
        permission: Permission {
            protocol: Protocol::Tcp,
            ports: PortRange::single(port),
            peer: Peer::SecurityGroup("sg-alb".into()),
        },
    };
    let mut recorded = record("web", TG_A, &["10.0.0.1"]);
    recorded.rules = [on(30001)].into();
    let mut moved = input(
        vec![ready(resolved("web", TG_A), &["10.0.0.2"])],
        vec![recorded],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    );
    moved.desired_rules = vec![DesiredRule {
        group: "sg-nodes".into(),
        permission: on(30002).permission,
        binding: id("web"),
    }];
    let old = crate::model::aws::ObservedRule {
        rule_id: "sgr-old".into(),
        permission: on(30001).permission,
        owner: Some("prod".into()),
    };
    moved.observed_rules = [("sg-nodes".into(), vec![old])].into();
    moved.max_rules_per_family = 60;
    let p = plan(&moved);
    let before = p.records()[0]
        .before
        .as_ref()
        .expect("written before registering");
    // Should the registration fail, the binding's record still names the rule made for it: a
    // run in which the binding fails keeps it rather than revoking it as nobody's.
    assert_eq!(before.rules, [on(30001), on(30002)].into());
    // And the old rule's revocation says whose old targets it serves: apply keeps it while
    // they have not moved.
    assert_eq!(p.rules.revoke.len(), 1);
    assert_eq!(p.rules.revoke[0].held_for, [id("web")].into());
}

#[test]
fn a_deleted_bindings_record_is_forgotten_even_when_its_target_group_is_gone() {
    let p = plan(&input(
        vec![],
        vec![record("web", TG_A, &["10.0.0.1"])],
        vec![(TG_A, Observation::NotFound)],
    ));
    assert!(p.changes().is_empty());
    assert_eq!(
        p.records()[0].after,
        RecordAfter::Forget(record("web", TG_A, &["10.0.0.1"]))
    );
}

#[test]
fn the_printed_plan_reads_like_terraform() {
    let p = plan(&input(
        vec![
            ready(resolved("web", TG_A), &["10.0.0.2"]),
            BindingState::Failed {
                id: id("bad"),
                error: BindingError::new("spec.serviceRef.port", "no port 81"),
            },
        ],
        vec![record("web", TG_A, &["10.0.0.1"])],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    ));
    let text = p.to_string();
    assert!(text.contains("  # tgb/default/web"), "{text}");
    assert!(
        text.contains(
            "  + register   10.0.0.2:80 in targetgroup/a/1: ready endpoint of pod default/pod-10.0.0.2; not registered"
        ),
        "{text}"
    );
    assert!(
        text.contains("  - deregister 10.0.0.1:80 in targetgroup/a/1: no longer desired"),
        "{text}"
    );
    assert!(
        text.contains("  ! error: spec.serviceRef.port: no port 81"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Plan for prod: 1 to register, 1 to deregister, 0 blocked, 1 binding(s) failed.\n"
        ),
        "{text}"
    );
    let json = serde_json::to_value(&p).expect("serializable");
    let web = &json["bindings"][1];
    assert_eq!(web["registrations"][0]["action"], "RegisterTargets");
    assert_eq!(web["registrations"][0]["binding"]["name"], "web");
}

#[test]
fn a_plan_reads_back_from_its_json_unchanged_presence_included() {
    let mut moved = resolved("web", TG_B);
    moved.binding.allow_empty = false;
    let mut with_generations = input(
        vec![
            ready(moved, &["10.0.0.2"]),
            ready(resolved("api", TG_A), &[]),
            BindingState::Failed {
                id: id("bad"),
                error: BindingError::new("spec.serviceRef.port", "no port 81"),
            },
        ],
        vec![
            record("web", TG_A, &["10.0.0.1"]),
            record("api", TG_A, &["10.0.0.5"]),
            record("gone", TG_B, &["10.0.0.7"]),
        ],
        vec![
            (TG_A, healthy(&["10.0.0.1", "10.0.0.5"])),
            (TG_B, healthy(&["10.0.0.7"])),
        ],
    );
    with_generations.generations = [(id("web"), 4)].into();
    let p = plan(&with_generations);
    // Every part is there to survive the trip: changes, a hold, a failure, records, coverage.
    assert!(
        !p.changes().is_empty()
            && !p.blocked().is_empty()
            && !p.failures().is_empty()
            && !p.records().is_empty(),
        "{p}"
    );
    assert_eq!(p.bindings[&id("gone")].presence, Presence::Gone);
    let json = serde_json::to_string(&p).expect("serializable");
    assert!(
        json.contains(r#""presence":{"state":"declared","generation":4}"#),
        "{json}"
    );
    let read: Plan = serde_json::from_str(&json).expect("reads back");
    assert_eq!(read, p);
    assert_eq!(read.to_string(), p.to_string());
}

#[test]
fn a_plan_whose_json_lists_a_binding_twice_is_refused_naming_it() {
    let p = plan(&input(
        vec![ready(resolved("web", TG_A), &["10.0.0.2"])],
        vec![],
        vec![(TG_A, healthy(&[]))],
    ));
    let mut json = serde_json::to_value(&p).expect("serializable");
    let twice = json["bindings"][0].clone();
    if let Some(list) = json["bindings"].as_array_mut() {
        list.push(twice);
    }
    let error = serde_json::from_value::<Plan>(json).expect_err("a duplicate is refused");
    assert!(
        error
            .to_string()
            .contains("tgb/default/web is listed twice"),
        "{error}"
    );
}

impl Binding {
    fn multi(mut resolved: ResolvedBinding) -> ResolvedBinding {
        resolved.binding.multi_cluster = true;
        resolved
    }
}

#[test]
fn without_the_crd_recorded_resource_bindings_are_kept_but_vanished_tags_are_cleaned_up() {
    let tagged = OwnershipRecord {
        binding: BindingId::tags("b"),
        ..record("x", TG_B, &["10.0.0.5"])
    };
    let mut no_crd = input(
        vec![],
        vec![record("web", TG_A, &["10.0.0.1"]), tagged.clone()],
        vec![
            (TG_A, healthy(&["10.0.0.1"])),
            (TG_B, healthy(&["10.0.0.5"])),
        ],
    );
    no_crd.resource_bindings_listed = false;
    let p = plan(&no_crd);
    assert_eq!(changes(&p), vec!["-10.0.0.5@targetgroup/b/2".to_string()]);
    assert_eq!(p.records().len(), 1);
    assert_eq!(p.records()[0].after, RecordAfter::Forget(tagged));
}

#[test]
fn a_binding_without_networking_is_told_plainly_that_no_rules_are_managed() {
    let p = plan(&input(
        vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
        vec![record("web", TG_A, &["10.0.0.1"])],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    ));
    assert!(p.is_converged(), "a note changes nothing");
    assert_eq!(p.notes.len(), 1);
    assert!(
        p.to_string()
            .contains("  i tgb/default/web: no spec.networking"),
        "{p}"
    );
}

#[test]
fn a_run_narrowed_to_one_group_plans_only_that_group_and_keeps_the_recorded_rules_of_others() {
    use crate::model::aws::ObservedRule;
    use crate::model::{Peer, Permission, PortRange, Protocol};
    use crate::pure::desire::rules::DesiredRule;
    let tcp = |port: u16| Permission {
        protocol: Protocol::Tcp,
        ports: PortRange {
            from: port,
            to: port,
        },
        peer: Peer::SecurityGroup("sg-alb".into()),
    };
    let on = |group: &str, port| GroupRule {
        group: group.into(),
        permission: tcp(port),
    };
    let mut recorded = record("web", TG_A, &["10.0.0.1"]);
    recorded.rules = [on("sg-a", 80), on("sg-b", 80)].into();
    let mut narrowed = input(
        vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
        vec![recorded],
        vec![(TG_A, healthy(&["10.0.0.1"]))],
    );
    // The binding now wants port 8080 on both groups; the event was about sg-a only.
    narrowed.desired_rules = ["sg-a", "sg-b"]
        .iter()
        .map(|group| DesiredRule {
            group: (*group).into(),
            permission: tcp(8080),
            binding: id("web"),
        })
        .collect();
    let ours = |rule_id: &str| ObservedRule {
        rule_id: rule_id.into(),
        permission: tcp(80),
        owner: Some("prod".into()),
    };
    narrowed.observed_rules = [("sg-a".into(), vec![ours("sgr-a80")])].into();
    narrowed.rule_groups = Some(["sg-a".into()].into());

    narrowed.max_rules_per_family = 60;

    let p = plan(&narrowed);
    let authorized: Vec<String> = p
        .rules
        .authorize
        .iter()
        .map(|a| format!("{} {}", a.group, a.permission))
        .collect();
    let revoked: Vec<&str> = p.rules.revoke.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(authorized, [format!("sg-a {}", tcp(8080))]);
    assert_eq!(revoked, ["sgr-a80"]);
    assert!(
        p.rules.unknown_groups.is_empty(),
        "{:?}",
        p.rules.unknown_groups
    );
    let saved: Vec<&GroupRule> = p
        .records()
        .iter()
        .filter_map(|r| match &r.after {
            RecordAfter::Save(record) => Some(record.rules.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        saved,
        [&on("sg-a", 8080), &on("sg-b", 80)],
        "sg-b keeps what it had until a run covers it"
    );
}

#[test]
fn a_plans_work_counts_its_bindings_those_that_write_and_their_target_changes() {
    // (case, input, bindings, bindings writing, writes)
    let cases = [
        (
            "a converged binding is covered and writes nothing",
            input(
                vec![ready(resolved("web", TG_A), &["10.0.0.1"])],
                vec![record("web", TG_A, &["10.0.0.1"])],
                vec![(TG_A, healthy(&["10.0.0.1"]))],
            ),
            1,
            0,
            0,
        ),
        (
            "a registration and a deregistration are two writes of one binding",
            input(
                vec![
                    ready(resolved("web", TG_A), &["10.0.0.2"]),
                    ready(resolved("api", TG_B), &["10.0.0.3"]),
                ],
                vec![
                    record("web", TG_A, &["10.0.0.1", "10.0.0.2"]),
                    record("api", TG_B, &["10.0.0.3"]),
                ],
                vec![
                    (TG_A, healthy(&["10.0.0.1"])),
                    (TG_B, healthy(&["10.0.0.3"])),
                ],
            ),
            2,
            1,
            2,
        ),
    ];
    for (case, input, bindings, writing, writes) in cases {
        let work = plan(&input).work();
        assert_eq!(
            (work.bindings, work.writing, work.writes),
            (bindings, writing, writes),
            "{case}"
        );
    }
}
