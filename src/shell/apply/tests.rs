//! Apply's ordering and isolation, against the in-memory ports, which log every write in order
//! (AWS behaviour itself is tested against moto in tests/).

use super::*;
use crate::model::aws::ObservedRule;
use crate::model::{Peer, Permission, PortRange, Protocol};
use crate::model::{Target, TargetType};
use crate::pure::plan::rules::{Authorize, Revoke, RulePlan};
use crate::pure::plan::{Presence, RecordChange, TargetAction};
use crate::state::ownership::OwnershipRecord;
use crate::state::ownership::OwnershipRecord as Record;
use crate::testing::{Faults, Faulty, MemoryCloud, block_on, block_on_paused, target_group};
use std::collections::BTreeSet;
use std::time::Duration;

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
            "records: save tg x2",
            "register tg x1",
            "deregister tg x1",
            "records: save tg x1"
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
    assert_eq!(
        recorder.calls(),
        ["deregister gone x1", "records: forget gone"]
    );
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
// The table names its column types inline, so each case reads as one row.
#[allow(clippy::type_complexity)]
fn a_run_renews_its_lease_once_a_third_of_it_is_left_and_stops_writing_once_it_is_lost() {
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
    // A 60 s lease: renewed once more than 40 s passed since it was last known to be ours.
    let lease = LeaseTerms::new("test", 60);
    let secs = Duration::from_secs;
    // (case, how long each write takes, how old the claim is at the first write, renewals
    // before the lease is lost, the calls, whether the lease was lost, when it was last
    // renewed, in seconds after the claim)
    let cases: Vec<(&str, Duration, Duration, usize, Vec<&str>, bool, u64)> = vec![
        (
            "with writes that take no time, the claim covers every write: no renewal",
            secs(0),
            secs(0),
            usize::MAX,
            vec![
                "authorize sg-node x1",
                "register tg x1",
                "deregister tg x1",
                "revoke sg-node x1",
            ],
            false,
            0,
        ),
        (
            "writes of 25 s renew the lease before the write that starts past 40 s, and count the next 40 s from that renewal",
            secs(25),
            secs(0),
            usize::MAX,
            vec![
                "authorize sg-node x1",
                "register tg x1",
                "renew lease",
                "deregister tg x1",
                "revoke sg-node x1",
            ],
            false,
            50,
        ),
        (
            "a lease lost at its renewal after the registration stops the deregistration and the revoke",
            secs(25),
            secs(0),
            0,
            vec!["authorize sg-node x1", "register tg x1", "renew lease"],
            true,
            0,
        ),
        (
            "a claim already two-thirds through is renewed before the first write, once",
            secs(0),
            secs(45),
            usize::MAX,
            vec![
                "renew lease",
                "authorize sg-node x1",
                "register tg x1",
                "deregister tg x1",
                "revoke sg-node x1",
            ],
            false,
            45,
        ),
        (
            "a lease lost before the first write writes nothing",
            secs(0),
            secs(45),
            0,
            vec!["renew lease"],
            true,
            0,
        ),
    ];
    for (case, write_time, aged, renewals, expected, lost, renewed_at) in cases {
        // The stale rule's id is what is revoked; EC2 holds it with another port, as it
        // cannot hold the permission authorized here twice.
        let recorder = cloud()
            .with_rule("sg-node", rule("sgr-old", tcp(8080, "sg-alb")))
            .with_lease("prod", &lease)
            .losing_lease_after_renewals(renewals)
            .taking_per_write(write_time);
        let (report, renewed) = block_on_paused(async {
            let claimed = tokio::time::Instant::now();
            let mut held = HeldLease::since(&lease, claimed);
            tokio::time::advance(aged).await;
            let report = apply(&plan, &recorder.ports(), Some(&mut held)).await;
            (report, (held.renewed_at - claimed).as_secs())
        });
        let calls: Vec<String> = recorder
            .calls()
            .into_iter()
            .map(|c| match c.split_once(" (") {
                Some((call, _)) => call.to_string(),
                None => c,
            })
            .collect();
        assert_eq!(calls, expected, "{case}");
        assert_eq!(report.lease_lost.is_some(), lost, "{case}");
        assert_eq!(renewed, renewed_at, "{case}: last renewed");
    }
}

/// A binding that registers one target into a target group of its own, with its record before
/// naming it and its record after.
fn registering(i: usize) -> (TargetChange, (BindingId, RecordChange)) {
    let name = format!("b{i:02}");
    let group = format!("tg-{i:02}");
    let ip = format!("10.0.{i}.1");
    let record = Record {
        targets: [Target::new(ip.as_str(), 80)].into(),
        ..record(&name, &group, 0)
    };
    let change = change(TargetAction::RegisterTargets, &name, &group, &ip);
    let records = RecordChange {
        before: Some(record.clone()),
        after: RecordAfter::Save(record),
    };
    (change, (BindingId::resource("default", &name), records))
}

#[test]
fn records_go_in_one_batch_per_window_each_way_before_and_after_the_windows_targets() {
    let count = RECORD_WINDOW + 5;
    let (changes, records) = (0..count).map(registering).unzip();
    let plan = flat(Flat {
        changes,
        records,
        ..Flat::default()
    });
    // Every registration is refused unless a record names its target already: a record before
    // written after its registration fails this test.
    let recorder = (0..count)
        .fold(cloud(), |cloud, i| {
            cloud.with_target_group(target_group(&format!("tg-{i:02}"), TargetType::Ip))
        })
        .requiring_records_before_registrations();
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.done().len(), count);

    let saves = |range: std::ops::Range<usize>| {
        let items: Vec<String> = range.map(|i| format!("save tg-{i:02} x1")).collect();
        format!("records: {}", items.join("; "))
    };
    let registers = |range: std::ops::Range<usize>| range.map(|i| format!("register tg-{i:02} x1"));
    let mut expected = vec![saves(0..RECORD_WINDOW)];
    expected.extend(registers(0..RECORD_WINDOW));
    expected.push(saves(0..RECORD_WINDOW));
    expected.push(saves(RECORD_WINDOW..count));
    expected.extend(registers(RECORD_WINDOW..count));
    expected.push(saves(RECORD_WINDOW..count));
    assert_eq!(recorder.calls(), expected);
}

#[test]
fn a_record_that_does_not_land_fails_only_its_own_binding() {
    let web = BindingId::resource("default", "web");
    let api = BindingId::resource("default", "api");
    let record_change = |binding: &str, group: &str, before: bool| RecordChange {
        before: before.then(|| record(binding, group, 1)),
        after: RecordAfter::Save(record(binding, group, 1)),
    };
    // (case, whether api writes a record before, the calls that reach the cloud, what api
    // reports)
    let cases = [
        (
            "its record before: its targets are not attempted; web's batch and targets go ahead",
            true,
            vec![
                "records: save tg-web x1",
                "register tg-web x1",
                "records: save tg-web x1",
            ],
            (0, 1, true),
        ),
        (
            "its record after: its targets moved, the record says it failed; web's is written",
            false,
            vec![
                "records: save tg-web x1",
                "register tg-api x1",
                "register tg-web x1",
                "records: save tg-web x1",
            ],
            (1, 0, true),
        ),
    ];
    for (case, before, expected, (done, failed, record_error)) in cases {
        let plan = flat(Flat {
            changes: vec![
                change(TargetAction::RegisterTargets, "api", "tg-api", "10.0.1.1"),
                change(TargetAction::RegisterTargets, "web", "tg-web", "10.0.0.1"),
            ],
            records: vec![
                (api.clone(), record_change("api", "tg-api", before)),
                (web.clone(), record_change("web", "tg-web", true)),
            ],
            ..Flat::default()
        });
        let cloud = cloud();
        let faulty = Faulty::new(
            cloud.ports(),
            Faults {
                unprocessed_records: Some(&api),
                ..Faults::default()
            },
        );
        let report = block_on(apply(&plan, &faulty.ports(), None));
        assert_eq!(cloud.calls(), expected, "{case}");
        let api_report = &report.bindings[&api];
        assert_eq!(api_report.done.len(), done, "{case}");
        assert_eq!(api_report.failed.len(), failed, "{case}");
        assert_eq!(!api_report.record_errors.is_empty(), record_error, "{case}");
        assert!(
            api_report
                .record_errors
                .iter()
                .all(|e| e.contains("ownership record of tgb/default/api")),
            "{case}: {:?}",
            api_report.record_errors
        );
        if let Some(failed) = api_report.failed.first() {
            assert!(
                failed
                    .error
                    .starts_with("not attempted: saving the ownership record"),
                "{case}: {}",
                failed.error
            );
        }
        assert!(report.bindings[&web].is_clean(), "{case}: {report}");
    }
}

#[test]
fn a_lease_lost_before_the_records_after_leaves_them_unwritten_and_says_so() {
    let web = BindingId::resource("default", "web");
    let plan = flat(Flat {
        changes: vec![change(
            TargetAction::RegisterTargets,
            "web",
            "tg",
            "10.0.0.1",
        )],
        records: vec![(
            web.clone(),
            RecordChange {
                before: Some(record("web", "tg", 1)),
                after: RecordAfter::Save(record("web", "tg", 1)),
            },
        )],
        ..Flat::default()
    });
    let lease = LeaseTerms::new("test", 60);
    // The records before at 0 s, the registration at 25 s, the records after due at 50 s: past
    // two-thirds of the lease, so renewed first, and lost.
    let recorder = cloud()
        .with_lease("prod", &lease)
        .losing_lease_after_renewals(0)
        .taking_per_write(Duration::from_secs(25));
    let report = block_on_paused(async {
        let mut held = HeldLease::since(&lease, tokio::time::Instant::now());
        apply(&plan, &recorder.ports(), Some(&mut held)).await
    });
    assert_eq!(
        recorder.calls(),
        [
            "records: save tg x1",
            "register tg x1",
            "renew lease (lost)"
        ]
    );
    let web_report = &report.bindings[&web];
    assert_eq!(web_report.done.len(), 1, "the registration landed");
    assert_eq!(web_report.record_errors.len(), 1, "{report}");
    assert!(
        web_report.record_errors[0].contains("passed to another run"),
        "{:?}",
        web_report.record_errors
    );
    assert!(report.lease_lost.is_some());
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

/// A deadline `time` from now, with the reserve of a run of a minute or more: 20 s.
fn at_least_a_minute(time: Duration) -> Deadline {
    Deadline {
        at: tokio::time::Instant::now() + time,
        reserve: crate::pure::course::STOP_RESERVE,
    }
}

/// A plan of `count` bindings, each registering one target in its own target group with its
/// records before and after, and the cloud that holds those groups.
fn registering_plan(count: usize) -> (Plan, MemoryCloud) {
    let (changes, records) = (0..count).map(registering).unzip();
    let plan = flat(Flat {
        changes,
        records,
        ..Flat::default()
    });
    let cloud = (0..count).fold(cloud(), |cloud, i| {
        cloud.with_target_group(target_group(&format!("tg-{i:02}"), TargetType::Ip))
    });
    (plan, cloud)
}

#[test]
fn a_run_near_its_deadline_stops_between_windows_never_inside_one_and_names_what_it_left() {
    // Three windows (25, 25 and 5 bindings) of one-second writes: a full window is its records
    // before, 25 registrations and its records after, 27 s. The next window is assumed to take
    // half as long again as the longest so far, and must end 20 s (the reserve) before the
    // deadline.
    let count = 2 * RECORD_WINDOW + 5;
    let secs = Duration::from_secs;
    // (case, deadline after the start, windows applied, seconds before the deadline it stopped)
    let cases = [
        ("without a deadline every window runs", None, 3, None),
        (
            "a deadline that leaves room for two windows: the third is left",
            Some(secs(100)),
            2,
            Some(46),
        ),
        (
            "a deadline that leaves room for one: the second starts no more",
            Some(secs(75)),
            1,
            Some(48),
        ),
        (
            "a deadline inside the reserve: nothing starts",
            Some(secs(15)),
            0,
            Some(15),
        ),
    ];
    for (case, deadline, windows, before) in cases {
        let (plan, recorder) = registering_plan(count);
        let recorder = recorder
            .requiring_records_before_registrations()
            .taking_per_write(secs(1));
        let report = block_on_paused(async {
            let reach = Reach {
                deadline: deadline.map(at_least_a_minute),
                progress: None,
            };
            apply_within(&plan, &recorder.ports(), None, reach).await
        });
        let applied = (windows * RECORD_WINDOW).min(count);
        // Whole windows, in order: every binding started is finished, record after included.
        let calls = recorder.calls();
        let registered = calls.iter().filter(|c| c.starts_with("register")).count();
        let record_batches = calls.iter().filter(|c| c.starts_with("records")).count();
        assert_eq!(registered, applied, "{case}");
        assert_eq!(record_batches, 2 * windows, "{case}");
        assert_eq!(report.done().len(), applied, "{case}");
        assert!(
            report.is_clean(),
            "{case}: nothing left is failed: {report}"
        );
        let left: Vec<BindingId> = (applied..count)
            .map(|i| BindingId::resource("default", &format!("b{i:02}")))
            .collect();
        match before {
            None => assert_eq!(report.stopped, None, "{case}"),
            Some(before) => {
                let stopped = report.stopped.as_ref();
                assert_eq!(
                    stopped.map(|s| s.left.iter().cloned().collect::<Vec<_>>()),
                    Some(left.clone()),
                    "{case}"
                );
                assert_eq!(
                    stopped.map(|s| s.seconds_before_deadline),
                    Some(before),
                    "{case}"
                );
            }
        }
        // No record of a left binding was written, and none of its targets registered.
        let records = block_on(recorder.load("prod")).unwrap_or_default();
        assert_eq!(records.len(), applied, "{case}");
        for id in &left {
            assert!(!records.iter().any(|r| &r.binding == id), "{case}: {id}");
            assert!(!report.bindings.contains_key(id), "{case}: {id}");
        }
    }
}

#[test]
fn a_run_stopped_by_its_deadline_leaves_stale_rules_and_revokes_nothing() {
    let web = BindingId::resource("default", "web");
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
                bindings: [web.clone()].into(),
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
    let secs = Duration::from_secs;
    // (case, deadline after the start, the calls, bindings left, rules left)
    let cases = [
        (
            "room for everything",
            secs(60),
            vec![
                "authorize sg-node x1",
                "register tg x1",
                "revoke sg-node x1",
            ],
            0,
            None,
        ),
        (
            // The authorization took 10 s: the window (assumed 15 s) ends before the reserve,
            // then the revoke (as long again) would not.
            "room for the rules and the window: the revoke waits for the next run",
            secs(46),
            vec!["authorize sg-node x1", "register tg x1"],
            0,
            Some(1),
        ),
        (
            "room for the rules only: the binding and the revoke are left",
            secs(40),
            vec!["authorize sg-node x1"],
            1,
            Some(1),
        ),
        (
            "no room at all: the binding and both rules are left",
            secs(20) - Duration::from_millis(1),
            vec![],
            1,
            Some(2),
        ),
    ];
    for (case, deadline, calls, bindings_left, rules_left) in cases {
        let recorder = cloud()
            .with_rule("sg-node", rule("sgr-old", tcp(81, "sg-alb")))
            .taking_per_write(secs(10));
        let report = block_on_paused(async {
            let reach = Reach {
                deadline: Some(at_least_a_minute(deadline)),
                progress: None,
            };
            apply_within(&plan, &recorder.ports(), None, reach).await
        });
        assert_eq!(recorder.calls(), calls, "{case}");
        let stopped = report.stopped.as_ref();
        assert_eq!(stopped.map(|s| s.rules_left), rules_left, "{case}");
        assert_eq!(stopped.map_or(0, |s| s.left.len()), bindings_left, "{case}");
        assert!(report.is_clean(), "{case}: {report}");
    }
}

#[test]
fn apply_counts_bindings_applied_and_writes_done_as_it_goes() {
    let (plan, recorder) = registering_plan(RECORD_WINDOW + 5);
    let progress = crate::shell::progress::Progress::default();
    progress.planned(crate::pure::plan::PlanWork {
        bindings: 30,
        writing: 30,
        writes: 30,
    });
    block_on(apply_within(
        &plan,
        &recorder.ports(),
        None,
        Reach {
            deadline: None,
            progress: Some(&progress),
        },
    ));
    let counts = progress.counts();
    assert_eq!((counts.applied, counts.writes_done), (30, 30));
}
