//! Apply's ordering and isolation, against the in-memory ports, which log every write in order
//! (AWS behaviour itself is tested against moto in tests/).

use super::*;
use crate::model::aws::ObservedRule;
use crate::model::{Peer, Permission, PortRange, Protocol};
use crate::model::{Target, TargetType};
use crate::pure::plan::rules::{Authorize, Revoke, RulePlan};
use crate::pure::plan::{Presence, RecordChange, TargetAction};
use crate::state::ownership::OwnershipRecord;
use crate::testing::{MemoryCloud, block_on, target_group};
use std::collections::BTreeSet;

/// The cloud these plans run against: the target groups and security groups they name exist
/// (`gone` and `sg-gone` do not), with the rules each test revokes added by the test.
fn cloud() -> MemoryCloud {
    ["tg", "tg-api", "tg-web"]
        .into_iter()
        .fold(MemoryCloud::new(), |cloud, arn| {
            cloud.with_target_group(target_group(arn, TargetType::Ip))
        })
        .with_security_group("sg-node")
        .with_security_group("sg-alb")
}

/// One of our rules, as EC2 holds it in `sg-node`.
fn rule(id: &str, permission: Permission) -> ObservedRule {
    ObservedRule {
        rule_id: id.into(),
        permission,
        owner: Some("prod".into()),
    }
}

fn change(action: TargetAction, binding: &str, group: &str, ip: &str) -> TargetChange {
    TargetChange {
        action,
        binding: BindingId::resource("default", binding),
        target_group: TargetGroupRef::new(group),
        target: Target::new(ip, 80),
        availability_zone: None,
        reason: "test".into(),
    }
}

fn record(binding: &str, group: &str, count: usize) -> OwnershipRecord {
    OwnershipRecord {
        binding: BindingId::resource("default", binding),
        target_group: TargetGroupRef::new(group),
        multi_cluster: false,
        targets: (0..count)
            .map(|i| Target::new(format!("10.0.0.{i}"), 80))
            .collect(),
        rules: Default::default(),
    }
}

/// A plan written as flat lists, the way a test states it, filed binding by binding.
#[derive(Default)]
struct Flat {
    changes: Vec<TargetChange>,
    records: Vec<(BindingId, RecordChange)>,
    rules: RulePlan,
}

fn flat(flat: Flat) -> Plan {
    let mut plan = Plan {
        cluster: "prod".into(),
        rules: flat.rules,
        ..Plan::default()
    };
    let declared = Presence::Declared { generation: None };
    for change in flat.changes {
        let part = plan
            .bindings
            .entry(change.binding.clone())
            .or_insert_with(|| BindingPlan::new(change.binding.clone(), declared));
        match change.action {
            TargetAction::RegisterTargets => part.registrations.push(change),
            TargetAction::DeregisterTargets => part.deregistrations.push(change),
        }
    }
    for (binding, record) in flat.records {
        plan.bindings
            .entry(binding.clone())
            .or_insert_with(|| BindingPlan::new(binding, declared))
            .records
            .push(record);
    }
    plan
}

#[test]
fn ownership_is_recorded_then_targets_registered_then_deregistered_then_settled() {
    let plan = flat(Flat {
        changes: vec![
            change(TargetAction::DeregisterTargets, "web", "tg", "10.0.0.9"),
            change(TargetAction::RegisterTargets, "web", "tg", "10.0.0.1"),
        ],
        records: vec![(
            BindingId::resource("default", "web"),
            RecordChange {
                before: Some(record("web", "tg", 2)),
                after: RecordAfter::Save(record("web", "tg", 1)),
            },
        )],
        ..Flat::default()
    });
    let recorder = cloud();
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        [
            "save tg x2",
            "register tg x1",
            "deregister tg x1",
            "save tg x1"
        ]
    );
    assert!(report.is_clean());
    assert_eq!(report.done().len(), 2);
}

#[test]
fn a_failed_registration_blocks_its_own_deregistrations_and_nothing_of_other_bindings() {
    let plan = flat(Flat {
        changes: vec![
            change(TargetAction::RegisterTargets, "api", "tg-api", "10.0.1.1"),
            change(TargetAction::DeregisterTargets, "api", "tg-api", "10.0.1.9"),
            change(TargetAction::RegisterTargets, "web", "tg-web", "10.0.0.1"),
            change(TargetAction::DeregisterTargets, "web", "tg-web", "10.0.0.9"),
        ],
        records: vec![(
            BindingId::resource("default", "api"),
            RecordChange {
                before: None,
                after: RecordAfter::Save(record("api", "tg-api", 1)),
            },
        )],
        ..Flat::default()
    });
    let recorder = cloud().refusing_registrations("tg-api");
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        [
            "register tg-api x1",
            "register tg-web x1",
            "deregister tg-web x1"
        ]
    );
    assert_eq!(report.failed().len(), 2);
    assert!(
        report.failed()[1].error.contains("not attempted"),
        "{}",
        report.failed()[1].error
    );
    assert_eq!(report.done().len(), 2);
}

#[test]
fn targets_are_sent_in_batches_of_at_most_two_hundred() {
    let plan = flat(Flat {
        changes: (0..450)
            .map(|i| {
                change(
                    TargetAction::RegisterTargets,
                    "web",
                    "tg",
                    &format!("10.0.{}.{}", i / 250, i % 250),
                )
            })
            .collect(),
        ..Flat::default()
    });
    let recorder = cloud();
    block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        ["register tg x200", "register tg x200", "register tg x50"]
    );
}

#[test]
fn deregistering_from_a_deleted_target_group_counts_as_done() {
    let plan = flat(Flat {
        changes: vec![change(
            TargetAction::DeregisterTargets,
            "web",
            "gone",
            "10.0.0.1",
        )],
        records: vec![(
            BindingId::resource("default", "web"),
            RecordChange {
                before: None,
                after: RecordAfter::Forget(record("web", "gone", 1)),
            },
        )],
        ..Flat::default()
    });
    let recorder = cloud();
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert!(report.is_clean(), "{report}");
    assert_eq!(recorder.calls(), ["deregister gone x1", "forget gone"]);
}

fn tcp(port: u16, peer: &str) -> Permission {
    Permission {
        protocol: Protocol::Tcp,
        ports: PortRange::single(port),
        peer: Peer::SecurityGroup(peer.into()),
    }
}

#[test]
fn rules_are_authorized_before_targets_change_and_revoked_after() {
    let plan = flat(Flat {
        changes: vec![change(
            TargetAction::RegisterTargets,
            "web",
            "tg",
            "10.0.0.1",
        )],
        rules: RulePlan {
            authorize: vec![Authorize {
                group: "sg-node".into(),
                permission: tcp(80, "sg-alb"),
                bindings: [BindingId::resource("default", "web")].into(),
            }],
            revoke: vec![Revoke {
                group: "sg-node".into(),
                rule_id: "sgr-old".into(),
                permission: tcp(81, "sg-alb"),
                held_for: BTreeSet::new(),
            }],
            ..RulePlan::default()
        },
        ..Flat::default()
    });
    let recorder = cloud().with_rule("sg-node", rule("sgr-old", tcp(81, "sg-alb")));
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        [
            "authorize sg-node x1",
            "register tg x1",
            "revoke sg-node x1"
        ]
    );
    assert!(report.is_clean(), "{report}");
}

#[test]
fn one_bindings_bad_rule_neither_keeps_the_others_out_nor_lets_anything_be_revoked_on_that_group() {
    let web = BindingId::resource("default", "web");
    let bad = BindingId::resource("default", "bad");
    let plan = flat(Flat {
        rules: RulePlan {
            authorize: vec![
                Authorize {
                    group: "sg-node".into(),
                    permission: tcp(80, "sg-alb"),
                    bindings: [web.clone()].into(),
                },
                Authorize {
                    group: "sg-node".into(),
                    permission: tcp(81, "sg-gone"),
                    bindings: [bad.clone()].into(),
                },
            ],
            revoke: vec![Revoke {
                group: "sg-node".into(),
                rule_id: "sgr-old".into(),
                permission: tcp(82, "sg-alb"),
                held_for: BTreeSet::new(),
            }],
            ..RulePlan::default()
        },
        ..Flat::default()
    });
    let recorder = cloud().with_rule("sg-node", rule("sgr-old", tcp(82, "sg-alb")));
    let report = block_on(apply(&plan, &recorder.ports(), None));
    // The whole batch fails on the bad peer, then each binding is tried on its own.
    assert_eq!(
        recorder.calls(),
        [
            "authorize sg-node x2",
            "authorize sg-node x1",
            "authorize sg-node x1"
        ]
    );
    assert_eq!(report.rules_done.len(), 1);
    assert_eq!(report.rules_done[0].bindings, [web].into());
    let failed: Vec<&str> = report
        .rules_failed
        .iter()
        .map(|f| f.error.as_str())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed[1].starts_with("not attempted"),
        "no revoke on that group: {failed:?}"
    );
}

#[test]
fn a_run_renews_its_lease_before_every_write_and_stops_writing_once_it_is_lost() {
    let alb = Permission {
        protocol: Protocol::Tcp,
        ports: PortRange { from: 80, to: 80 },
        peer: Peer::SecurityGroup("sg-alb".into()),
    };
    let plan = flat(Flat {
        changes: vec![
            change(TargetAction::RegisterTargets, "web", "tg", "10.0.0.1"),
            change(TargetAction::DeregisterTargets, "web", "tg", "10.0.0.9"),
        ],
        rules: RulePlan {
            authorize: vec![Authorize {
                group: "sg-node".into(),
                permission: alb.clone(),
                bindings: [BindingId::resource("default", "web")].into(),
            }],
            revoke: vec![Revoke {
                group: "sg-node".into(),
                rule_id: "sgr-old".into(),
                permission: alb,
                held_for: BTreeSet::new(),
            }],
            ..RulePlan::default()
        },
        ..Flat::default()
    });
    let lease = LeaseTerms::new("test", 60);
    let cases: Vec<(&str, usize, Vec<&str>)> = vec![
        (
            "with the lease held throughout, every write is preceded by a renewal",
            usize::MAX,
            vec![
                "renew lease",
                "authorize sg-node x1",
                "renew lease",
                "register tg x1",
                "renew lease",
                "deregister tg x1",
                "renew lease",
                "revoke sg-node x1",
            ],
        ),
        (
            "a lease lost after the registration stops the deregistration and the revoke",
            2,
            vec![
                "renew lease",
                "authorize sg-node x1",
                "renew lease",
                "register tg x1",
                "renew lease",
            ],
        ),
        (
            "a lease lost before the first write writes nothing",
            0,
            vec!["renew lease"],
        ),
    ];
    for (case, renewals, expected) in cases {
        // The stale rule's id is what is revoked; EC2 holds it with another port, as it
        // cannot hold the permission authorized here twice.
        let recorder = cloud()
            .with_rule("sg-node", rule("sgr-old", tcp(8080, "sg-alb")))
            .with_lease("prod", &lease)
            .losing_lease_after_renewals(renewals);
        let report = block_on(apply(&plan, &recorder.ports(), Some(&lease)));
        let calls: Vec<String> = recorder
            .calls()
            .into_iter()
            .map(|c| match c.split_once(" (") {
                Some((call, _)) => call.to_string(),
                None => c,
            })
            .collect();
        assert_eq!(calls, expected, "{case}");
        assert_eq!(
            report.lease_lost.is_some(),
            renewals != usize::MAX,
            "{case}"
        );
    }
}

#[test]
fn a_binding_whose_new_targets_did_not_register_keeps_the_old_rule_its_old_targets_need() {
    let web = BindingId::resource("default", "web");
    let plan = flat(Flat {
        // web moves from port 30001 to 30002: new targets and rule in, old ones out.
        changes: vec![
            change(TargetAction::RegisterTargets, "web", "tg", "10.0.0.2"),
            change(TargetAction::DeregisterTargets, "web", "tg", "10.0.0.1"),
        ],
        rules: RulePlan {
            authorize: vec![Authorize {
                group: "sg-node".into(),
                permission: tcp(30002, "sg-alb"),
                bindings: [web.clone()].into(),
            }],
            revoke: vec![
                Revoke {
                    group: "sg-node".into(),
                    rule_id: "sgr-web-old".into(),
                    permission: tcp(30001, "sg-alb"),
                    held_for: [web.clone()].into(),
                },
                Revoke {
                    group: "sg-node".into(),
                    rule_id: "sgr-nobodys".into(),
                    permission: tcp(81, "sg-alb"),
                    held_for: BTreeSet::new(),
                },
            ],
            ..RulePlan::default()
        },
        ..Flat::default()
    });
    let recorder = cloud()
        .refusing_registrations("tg")
        .with_rule("sg-node", rule("sgr-web-old", tcp(30001, "sg-alb")))
        .with_rule("sg-node", rule("sgr-nobodys", tcp(81, "sg-alb")));
    let report = block_on(apply(&plan, &recorder.ports(), None));
    // The old targets stay registered, so the rule that admits them stays too; a rule no
    // binding had goes.
    assert_eq!(
        recorder.calls(),
        [
            "authorize sg-node x1",
            "register tg x1",
            "revoke sg-node x1"
        ]
    );
    let revoked: Vec<&Permission> = report
        .rules_done
        .iter()
        .filter(|r| r.action == "RevokeSecurityGroupIngress")
        .map(|r| &r.permission)
        .collect();
    assert_eq!(revoked, [&tcp(81, "sg-alb")]);
    let held = &report.rules_failed[0];
    assert_eq!(held.permission, tcp(30001, "sg-alb"));
    assert!(held.error.contains("make before break"), "{}", held.error);
}
