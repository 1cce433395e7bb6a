//! The in-memory ports answer as AWS and the state table would, so tests built on them mean
//! something.

use super::*;
use crate::model::{PortRange, Protocol, SecurityGroupId};
use crate::state::status::StatusReason;
use crate::testing::{block_on, block_on_paused};

const TG: &str = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123";

fn registration(ip: &str, zone: Option<&str>) -> Registration {
    Registration {
        target: Target::new(ip, 80),
        availability_zone: zone.map(str::to_string),
    }
}

fn tcp(port: u16, peer: &str) -> Permission {
    Permission {
        protocol: Protocol::Tcp,
        ports: PortRange::single(port),
        peer: Peer::SecurityGroup(peer.into()),
    }
}

fn eni(id: &str, groups: &[&str]) -> Eni {
    Eni {
        id: id.into(),
        groups: groups.iter().map(|&g| g.into()).collect(),
    }
}

fn ips(ips: &[&str]) -> Vec<String> {
    ips.iter().map(|ip| ip.to_string()).collect()
}

fn with_web() -> MemoryCloud {
    MemoryCloud::new().with_target_group(target_group(TG, TargetType::Ip))
}

#[test]
fn a_target_group_is_named_by_its_arn_and_described_as_given() {
    let info = target_group(TG, TargetType::Instance);
    assert_eq!(info.name, "web");
    assert_eq!(info.target_type, Some(TargetType::Instance));
    assert_eq!(info.raw_target_type, "instance");
    assert_eq!(target_group("tg", TargetType::Ip).name, "tg");
}

#[test]
fn registered_targets_read_back_healthy_in_their_zone_and_deregistered_ones_are_gone() {
    let cloud = with_web();
    let tg = TargetGroupRef::new(TG);
    block_on(async {
        let first = [
            registration("10.0.0.1", Some("all")),
            registration("10.0.0.2", None),
        ];
        cloud.register_targets(&tg, &first).await.expect("register");
        // Registering again changes nothing but the zone: AWS matches on id and port.
        let again = [registration("10.0.0.1", Some("us-west-2a"))];
        cloud.register_targets(&tg, &again).await.expect("again");
        let read = cloud.target_health(&tg).await.expect("health");
        let seen: Vec<(String, Option<&str>, &str)> = read
            .iter()
            .map(|t| {
                let zone = t.availability_zone.as_deref();
                (t.target.to_string(), zone, t.state.as_str())
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("10.0.0.1:80".to_string(), Some("us-west-2a"), "healthy"),
                ("10.0.0.2:80".to_string(), None, "healthy"),
            ]
        );
        let gone = [Target::new("10.0.0.1", 80), Target::new("10.0.0.9", 80)];
        cloud
            .deregister_targets(&tg, &gone)
            .await
            .expect("deregister");
        let left = cloud.target_health(&tg).await.expect("health");
        assert_eq!(
            left.iter()
                .map(|t| t.target.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.2:80"]
        );
    });
}

#[test]
fn every_call_on_a_target_group_that_does_not_exist_fails_as_not_found() {
    let cloud = with_web();
    cloud.delete_target_group(TG);
    let tg = TargetGroupRef::new(TG);
    let target = [Target::new("10.0.0.1", 80)];
    let calls: Vec<(&str, Result<()>)> = block_on(async {
        vec![
            ("target_health", cloud.target_health(&tg).await.map(drop)),
            (
                "register_targets",
                cloud
                    .register_targets(&tg, &[registration("10.0.0.1", None)])
                    .await,
            ),
            (
                "deregister_targets",
                cloud.deregister_targets(&tg, &target).await,
            ),
        ]
    });
    for (call, result) in calls {
        assert!(
            matches!(result, Err(Error::TargetGroupNotFound { ref target_group }) if target_group == TG),
            "{call}: {result:?}"
        );
    }
    assert!(block_on(cloud.target_groups()).expect("groups").is_empty());
}

#[test]
fn registrations_refused_for_one_target_group_land_nothing_there_and_leave_the_others_alone() {
    let other = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/api/0456";
    let cloud = with_web()
        .with_target_group(target_group(other, TargetType::Ip))
        .refusing_registrations(TG);
    let targets = [registration("10.0.0.1", None)];
    block_on(async {
        let refused = cloud
            .register_targets(&TargetGroupRef::new(TG), &targets)
            .await;
        assert!(
            matches!(refused, Err(Error::RegisterTargets { .. })),
            "{refused:?}"
        );
        let other = TargetGroupRef::new(other);
        cloud
            .register_targets(&other, &targets)
            .await
            .expect("the other group takes it");
        let web = cloud.target_health(&TargetGroupRef::new(TG)).await;
        assert!(web.expect("health").is_empty());
        assert_eq!(cloud.target_health(&other).await.expect("health").len(), 1);
    });
}

#[test]
fn a_foreign_target_group_is_found_through_its_role_by_arn_or_name_and_is_not_listed_as_ours() {
    let foreign = "arn:aws:elasticloadbalancing:us-west-2:210987654321:targetgroup/shared/0789";
    let role = |arn: &str| AssumeRole {
        role_arn: arn.into(),
        external_id: None,
    };
    let cloud = with_web().with_foreign_target_group(
        "arn:aws:iam::210987654321:role/r",
        target_group(foreign, TargetType::Ip),
    );
    let cases = [
        (
            "by ARN",
            TargetGroupSelector::Arn(foreign.into()),
            "arn:aws:iam::210987654321:role/r",
            true,
        ),
        (
            "by name",
            TargetGroupSelector::Name("shared".into()),
            "arn:aws:iam::210987654321:role/r",
            true,
        ),
        (
            "through another role",
            TargetGroupSelector::Arn(foreign.into()),
            "arn:aws:iam::210987654321:role/other",
            false,
        ),
        (
            "ours, through a role",
            TargetGroupSelector::Arn(TG.into()),
            "arn:aws:iam::210987654321:role/r",
            false,
        ),
    ];
    for (case, selector, role_arn, found) in cases {
        let answer = block_on(cloud.foreign_target_group(&selector, &role(role_arn)));
        assert_eq!(answer.expect("answer").is_some(), found, "{case}");
    }
    let ours: Vec<String> = block_on(cloud.target_groups())
        .expect("groups")
        .into_iter()
        .map(|g| g.arn.to_string())
        .collect();
    assert_eq!(ours, [TG]);
}

#[test]
fn authorized_rules_get_fresh_ids_and_our_marker_and_are_revoked_by_id_alone() {
    let foreign = ObservedRule {
        rule_id: "sgr-foreign".into(),
        permission: tcp(443, "sg-alb"),
        owner: None,
    };
    let cloud = MemoryCloud::new()
        .with_security_group("sg-alb")
        .with_rule("sg-node", foreign.clone());
    let group = [SecurityGroupId::from("sg-node")];
    block_on(async {
        let wanted = [tcp(80, "sg-alb"), tcp(81, "sg-alb")];
        cloud
            .authorize_ingress(&"sg-node".into(), &wanted, "prod")
            .await
            .expect("authorize");
        let rules = cloud.ingress_rules(&group).await.expect("rules")["sg-node"].clone();
        let ours: Vec<&ObservedRule> = rules
            .iter()
            .filter(|r| r.rule_id != "sgr-foreign")
            .collect();
        assert_eq!(ours.len(), 2, "{rules:?}");
        assert!(ours.iter().all(|r| r.owner.as_deref() == Some("prod")));
        assert_ne!(ours[0].rule_id, ours[1].rule_id);
        let shapes: BTreeSet<&Permission> = ours.iter().map(|r| &r.permission).collect();
        assert_eq!(shapes, wanted.iter().collect());

        let first = ours[0].rule_id.clone();
        cloud
            .revoke_ingress(&"sg-node".into(), std::slice::from_ref(&first))
            .await
            .expect("revoke");
        let left = cloud.ingress_rules(&group).await.expect("rules")["sg-node"].clone();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|r| r.rule_id != first));
        assert!(left.contains(&foreign), "the foreign rule stays: {left:?}");
    });
}

#[test]
fn an_authorization_ec2_would_refuse_lands_none_of_its_rules() {
    let cloud = MemoryCloud::new().with_security_group("sg-alb").with_rule(
        "sg-node",
        ObservedRule {
            rule_id: "sgr-1".into(),
            permission: tcp(80, "sg-alb"),
            owner: Some("prod".into()),
        },
    );
    // (case, group, permissions, what the error is)
    let cases: [(&str, &str, Vec<Permission>, &str); 4] = [
        (
            "a group that does not exist",
            "sg-gone",
            vec![tcp(81, "sg-alb")],
            "SecurityGroupNotFound",
        ),
        (
            "a peer group that does not exist",
            "sg-node",
            vec![tcp(81, "sg-alb"), tcp(82, "sg-gone")],
            "SecurityGroupNotFound",
        ),
        (
            "a rule the group holds",
            "sg-node",
            vec![tcp(81, "sg-alb"), tcp(80, "sg-alb")],
            "InvalidPermission.Duplicate",
        ),
        (
            "the same rule twice",
            "sg-node",
            vec![tcp(81, "sg-alb"), tcp(81, "sg-alb")],
            "InvalidPermission.Duplicate",
        ),
    ];
    for (case, group, permissions, expected) in cases {
        let refused = block_on(cloud.authorize_ingress(&group.into(), &permissions, "prod"));
        let error = refused.expect_err(case);
        let text = format!("{error:?}");
        assert!(text.contains(expected), "{case}: {text}");
        let rules = block_on(cloud.ingress_rules(&["sg-node".into()])).expect("rules");
        assert_eq!(rules["sg-node"].len(), 1, "{case}: {rules:?}");
    }
}

#[test]
fn a_revocation_naming_an_unknown_rule_or_group_revokes_nothing() {
    let rule = ObservedRule {
        rule_id: "sgr-1".into(),
        permission: tcp(80, "sg-alb"),
        owner: Some("prod".into()),
    };
    let cloud = MemoryCloud::new().with_rule("sg-node", rule);
    let cases = [
        (
            "an unknown rule beside a known one",
            "sg-node",
            ips(&["sgr-1", "sgr-2"]),
        ),
        ("a group that does not exist", "sg-gone", ips(&["sgr-1"])),
    ];
    for (case, group, ids) in cases {
        let refused = block_on(cloud.revoke_ingress(&group.into(), &ids));
        assert!(
            matches!(refused, Err(Error::RevokeIngress { .. })),
            "{case}: {refused:?}"
        );
        let rules = block_on(cloud.ingress_rules(&["sg-node".into()])).expect("rules");
        assert_eq!(rules["sg-node"].len(), 1, "{case}");
    }
}

#[test]
fn only_groups_that_exist_are_found_and_have_rules() {
    let cloud = MemoryCloud::new().with_security_group("sg-a");
    let asked: Vec<SecurityGroupId> = ["sg-a", "sg-b"].map(SecurityGroupId::from).into();
    let found = block_on(cloud.existing_groups(&asked)).expect("groups");
    assert_eq!(found, BTreeSet::from(["sg-a".into()]));
    let rules = block_on(cloud.ingress_rules(&asked)).expect("rules");
    assert_eq!(rules.keys().collect::<Vec<_>>(), ["sg-a"]);
    assert!(rules["sg-a"].is_empty());
}

#[test]
fn network_facts_answer_the_instances_asked_for_and_other_addresses_by_address() {
    let cloud = MemoryCloud::new()
        .with_instance(
            "i-1",
            eni("eni-1", &["sg-1"]),
            ips(&["10.0.0.1", "10.0.0.11"]),
        )
        .with_instance("i-2", eni("eni-2", &["sg-2", "sg-3"]), ips(&["10.0.0.2"]))
        .with_interface(eni("eni-branch", &["sg-pod"]), ips(&["10.0.1.5"]))
        .with_group_tag("sg-2", "kubernetes.io/cluster/prod", "owned")
        .with_security_group("sg-3");
    let facts = block_on(cloud.network_facts(
        &ips(&["i-1", "i-gone"]),
        &["10.0.0.11", "10.0.0.2", "10.0.1.5", "10.9.9.9"].map(Arc::from),
    ))
    .expect("facts");
    assert_eq!(facts.primary_eni.keys().collect::<Vec<_>>(), ["i-1"]);
    let mut by_ip: Vec<(&str, &str)> = facts
        .eni_by_ip
        .iter()
        .map(|(ip, eni)| (&**ip, eni.id.as_str()))
        .collect();
    by_ip.sort_unstable();
    // Every address of an instance asked for; others only when asked, found by address.
    assert_eq!(
        by_ip,
        [
            ("10.0.0.1", "eni-1"),
            ("10.0.0.11", "eni-1"),
            ("10.0.0.2", "eni-2"),
            ("10.0.1.5", "eni-branch")
        ]
    );
    // Tags only where an interface has several groups to choose from.
    assert_eq!(
        facts.group_tags.keys().collect::<Vec<_>>(),
        ["sg-2", "sg-3"]
    );
    assert_eq!(
        facts.group_tags["sg-2"]["kubernetes.io/cluster/prod"],
        "owned"
    );
}

#[test]
fn cidrs_and_clusters_are_answered_for_what_exists_and_left_out_otherwise() {
    let net = |cidr: &str| -> IpNet { cidr.parse().expect("a CIDR") };
    let cloud = MemoryCloud::new()
        .with_vpc("vpc-1", vec![net("10.0.0.0/16")])
        .with_subnet("subnet-1", vec![net("10.0.1.0/24")])
        .with_instance("i-1", eni("eni-1", &["sg-1"]), ips(&["10.0.1.4"]))
        .with_instance("i-2", eni("eni-2", &["sg-1"]), ips(&["10.0.1.5"]))
        .with_instance_cluster("i-1", "prod");
    block_on(async {
        let vpcs = cloud
            .vpc_cidrs(&ips(&["vpc-1", "vpc-2"]))
            .await
            .expect("vpcs");
        assert_eq!(
            vpcs,
            BTreeMap::from([("vpc-1".to_string(), vec![net("10.0.0.0/16")])])
        );
        let subnets = cloud.subnet_cidrs(&ips(&["subnet-2", "subnet-1"])).await;
        assert_eq!(
            subnets.expect("subnets").keys().collect::<Vec<_>>(),
            ["subnet-1"]
        );
        let cases = [
            ("i-1", Some(BTreeSet::from(["prod".to_string()]))),
            ("i-2", Some(BTreeSet::new())),
            ("i-gone", None),
        ];
        for (instance, clusters) in cases {
            let answer = cloud.instance_clusters(instance).await.expect("clusters");
            assert_eq!(answer, clusters, "{instance}");
        }
    });
}

fn terms(holder: &str) -> LeaseTerms {
    LeaseTerms {
        holder: holder.into(),
        seconds: 60,
    }
}

#[test]
fn a_free_or_lapsed_lease_is_taken_and_a_live_one_is_busy_even_to_its_holder() {
    // (case, the lease before, the time passed since, the claim)
    let cases: [(&str, Option<&str>, u64, LeaseClaim); 4] = [
        ("free", None, 0, LeaseClaim::Acquired),
        ("lapsed", Some("old"), 61, LeaseClaim::Acquired),
        (
            "held",
            Some("old"),
            0,
            LeaseClaim::Busy {
                holder: "old".into(),
            },
        ),
        (
            "held by this very run",
            Some("me"),
            0,
            LeaseClaim::Busy {
                holder: "me".into(),
            },
        ),
    ];
    for (case, before, passed, expected) in cases {
        let mut cloud = MemoryCloud::new();
        if let Some(holder) = before {
            cloud = cloud.with_lease("prod", &terms(holder));
        }
        cloud.advance_clock(Duration::from_secs(passed));
        let claim = block_on(cloud.acquire_lease("prod", &terms("me"))).expect("claim");
        assert_eq!(claim, expected, "{case}");
        let after = cloud.lease("prod").expect("a lease");
        match claim {
            LeaseClaim::Acquired => assert_eq!(after, ("me".to_string(), false), "{case}"),
            LeaseClaim::Busy { holder } => assert_eq!(after, (holder, true), "{case}"),
        }
    }
}

#[test]
fn a_lease_held_by_another_run_is_busy_and_marked_dirty() {
    let cloud = MemoryCloud::new().with_lease("prod", &terms("first"));
    let claim = block_on(cloud.acquire_lease("prod", &terms("second"))).expect("claim");
    assert_eq!(
        claim,
        LeaseClaim::Busy {
            holder: "first".into()
        }
    );
    assert_eq!(cloud.lease("prod"), Some(("first".to_string(), true)));
    // Another cluster's lease is another lease.
    let other = block_on(cloud.acquire_lease("staging", &terms("second"))).expect("claim");
    assert_eq!(other, LeaseClaim::Acquired);
}

/// A release case: its name, the lease's holder, whether it is dirty, whether the holder may
/// run again, the answer, and the lease (holder, dirty) after.
type ReleaseCase<'a> = (
    &'a str,
    &'a str,
    bool,
    bool,
    LeaseRelease,
    Option<(&'a str, bool)>,
);

#[test]
fn letting_a_lease_go_keeps_a_dirty_one_for_one_more_run_only_when_the_holder_may_run_again() {
    let cases: [ReleaseCase; 5] = [
        ("clean", "me", false, true, LeaseRelease::Released, None),
        (
            "dirty, may run again",
            "me",
            true,
            true,
            LeaseRelease::RunAgain,
            Some(("me", false)),
        ),
        (
            "dirty, last run",
            "me",
            true,
            false,
            LeaseRelease::Released,
            None,
        ),
        (
            "another's",
            "thief",
            false,
            true,
            LeaseRelease::Lost,
            Some(("thief", false)),
        ),
        (
            "another's, dirty",
            "thief",
            true,
            false,
            LeaseRelease::Lost,
            Some(("thief", true)),
        ),
    ];
    for (case, holder, dirty, may_run_again, expected, after) in cases {
        let cloud = MemoryCloud::new().with_lease("prod", &terms(holder));
        if dirty {
            let busy = block_on(cloud.acquire_lease("prod", &terms("latecomer")));
            assert!(matches!(busy, Ok(LeaseClaim::Busy { .. })), "{case}");
        }
        let released =
            block_on(cloud.release_lease("prod", &terms("me"), may_run_again)).expect("release");
        assert_eq!(released, expected, "{case}");
        let after = after.map(|(h, d)| (h.to_string(), d));
        assert_eq!(cloud.lease("prod"), after, "{case}");
    }
}

#[test]
fn a_lease_is_renewed_by_its_holder_only() {
    let cloud = MemoryCloud::new().with_lease("prod", &terms("me"));
    cloud.advance_clock(Duration::from_secs(59));
    assert!(block_on(cloud.extend_lease("prod", &terms("me"))).expect("renew"));
    // Renewed for another 60 s from now: still live 59 s later.
    cloud.advance_clock(Duration::from_secs(59));
    let late = block_on(cloud.acquire_lease("prod", &terms("other"))).expect("claim");
    assert!(matches!(late, LeaseClaim::Busy { .. }), "{late:?}");
    assert!(!block_on(cloud.extend_lease("prod", &terms("other"))).expect("renew"));
    assert!(!block_on(cloud.extend_lease("staging", &terms("me"))).expect("renew"));
}

#[test]
fn renewals_succeed_as_often_as_configured_then_the_lease_has_passed_to_another_run() {
    for renewals in [0, 1, 3] {
        let cloud = MemoryCloud::new()
            .with_lease("prod", &terms("me"))
            .losing_lease_after_renewals(renewals);
        let held: Vec<bool> = (0..renewals + 2)
            .map(|_| block_on(cloud.extend_lease("prod", &terms("me"))).expect("renew"))
            .collect();
        let mut expected = vec![true; renewals];
        expected.extend([false, false]);
        assert_eq!(held, expected, "{renewals} renewals");
        assert_eq!(cloud.lease("prod"), Some((ANOTHER_RUN.to_string(), false)));
        let released = block_on(cloud.release_lease("prod", &terms("me"), true));
        assert_eq!(released.expect("release"), LeaseRelease::Lost);
    }
}

/// The one answer of a batch of one write.
fn only(answers: Vec<Result<()>>) -> Result<()> {
    assert_eq!(answers.len(), 1, "one answer per write");
    answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::Config("no answer".into())))
}

fn record(binding: &str, arn: &str, targets: usize) -> OwnershipRecord {
    OwnershipRecord {
        binding: BindingId::resource("default", binding),
        target_group: TargetGroupRef::new(arn),
        multi_cluster: false,
        targets: (0..targets)
            .map(|i| Target::new(format!("10.0.0.{i}"), 80))
            .collect(),
        rules: BTreeSet::new(),
    }
}

fn status(binding: &str, ready: bool) -> BindingStatus {
    BindingStatus {
        binding: BindingId::resource("default", binding),
        observed_generation: Some(1),
        ready,
        reason: if ready {
            StatusReason::Converged
        } else {
            StatusReason::ApplyFailed
        },
        message: String::new(),
        since: None,
    }
}

#[test]
fn records_are_kept_per_cluster_binding_and_target_group_and_forgotten_one_by_one() {
    let cloud = MemoryCloud::new().with_record("staging", record("web", "tg-1", 1));
    block_on(async {
        for saved in [
            record("web", "tg-1", 2),
            record("web", "tg-2", 1),
            record("web", "tg-1", 3),
        ] {
            only(
                cloud
                    .write_records("prod", &[RecordWrite::Save(&saved)])
                    .await,
            )
            .expect("save");
        }
        let loaded = cloud.load("prod").await.expect("load");
        let seen: Vec<(&str, usize)> = loaded
            .iter()
            .map(|r| (r.target_group.arn.as_str(), r.targets.len()))
            .collect();
        assert_eq!(
            seen,
            [("tg-1", 3), ("tg-2", 1)],
            "the last save of each wins"
        );
        only(
            cloud
                .write_records("prod", &[RecordWrite::Forget(&record("web", "tg-1", 0))])
                .await,
        )
        .expect("forget");
        let left = cloud.load("prod").await.expect("load");
        assert_eq!(left, [record("web", "tg-2", 1)]);
        assert_eq!(cloud.load("staging").await.expect("load").len(), 1);
        assert!(cloud.load("dev").await.expect("load").is_empty());
    });
}

#[test]
fn statuses_read_back_with_when_they_were_written_and_are_forgotten_by_binding() {
    let cloud = MemoryCloud::new();
    block_on(async {
        only(
            cloud
                .write_statuses("prod", &[StatusWrite::Save(&status("web", false))])
                .await,
        )
        .expect("save");
        // In one batch, the later write of a binding wins.
        let batch = cloud
            .write_statuses(
                "prod",
                &[
                    StatusWrite::Save(&status("web", true)),
                    StatusWrite::Save(&status("api", true)),
                ],
            )
            .await;
        assert!(batch.iter().all(Result::is_ok), "{batch:?}");
        let state = cloud.load_state("prod").await.expect("state");
        assert!(state.records.is_empty());
        let read: Vec<(String, bool, bool)> = state
            .statuses
            .iter()
            .map(|s| (s.binding.to_string(), s.ready, s.since.is_some()))
            .collect();
        assert_eq!(
            read,
            [
                (
                    BindingId::resource("default", "api").to_string(),
                    true,
                    true
                ),
                (
                    BindingId::resource("default", "web").to_string(),
                    true,
                    true
                ),
            ]
        );
        let web = BindingId::resource("default", "web");
        only(
            cloud
                .write_statuses("prod", &[StatusWrite::Forget(&web)])
                .await,
        )
        .expect("forget");
        let left = cloud.load_statuses("prod").await.expect("statuses");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].binding, BindingId::resource("default", "api"));
    });
}

#[test]
fn the_cluster_answers_its_snapshot_and_keeps_what_was_published() {
    let snapshot = ClusterSnapshot {
        binding_crd_installed: true,
        ..ClusterSnapshot::default()
    };
    let cloud = MemoryCloud::new().with_snapshot(snapshot);
    let source = &cloud;
    block_on(async {
        assert!(
            source
                .snapshot()
                .await
                .expect("snapshot")
                .binding_crd_installed
        );
        source
            .publish_status(&status("web", true))
            .await
            .expect("publish");
    });
    assert_eq!(cloud.published_statuses(), [status("web", true)]);
}

#[test]
fn the_call_log_holds_every_write_and_lease_call_in_order_and_no_read() {
    let lease = terms("me");
    let logged = with_web().with_security_group("sg-alb");
    let quiet = with_web().with_security_group("sg-alb").without_call_log();
    for cloud in [&logged, &quiet] {
        block_on(async {
            let tg = TargetGroupRef::new(TG);
            cloud.acquire_lease("prod", &lease).await.expect("acquire");
            cloud.target_health(&tg).await.expect("read");
            cloud
                .authorize_ingress(&"sg-alb".into(), &[tcp(80, "sg-alb")], "prod")
                .await
                .expect("authorize");
            cloud.extend_lease("prod", &lease).await.expect("renew");
            cloud
                .register_targets(&tg, &[registration("10.0.0.1", None)])
                .await
                .expect("register");
            only(
                cloud
                    .write_records("prod", &[RecordWrite::Save(&record("web", TG, 1))])
                    .await,
            )
            .expect("save");
            only(
                cloud
                    .write_statuses("prod", &[StatusWrite::Save(&status("web", true))])
                    .await,
            )
            .expect("status");
            cloud
                .release_lease("prod", &lease, true)
                .await
                .expect("release");
        });
    }
    assert_eq!(
        logged.calls(),
        [
            "acquire lease (acquired)",
            "authorize sg-alb x1",
            "renew lease (held)",
            "register arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123 x1",
            "records: save arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123 x1",
            "statuses: save status tgb/default/web",
            "release lease (released)",
        ]
    );
    assert!(quiet.calls().is_empty());
}

#[test]
fn a_batch_of_records_answers_each_write_in_order_and_logs_as_one_call() {
    let cloud = MemoryCloud::new()
        .with_record("prod", record("old", "tg-old", 2))
        .with_record("prod", record("web", "tg-1", 1));
    let (api, web) = (record("api", "tg-1", 3), record("web", "tg-1", 2));
    let answers = block_on(cloud.write_records(
        "prod",
        &[
            RecordWrite::Save(&api),
            RecordWrite::Forget(&record("old", "tg-old", 0)),
            RecordWrite::Save(&web),
        ],
    ));
    assert_eq!(answers.len(), 3, "one answer per write");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(
        cloud.calls(),
        ["records: save tg-1 x3; forget tg-old; save tg-1 x2"]
    );
    let stored = block_on(cloud.load("prod")).expect("load");
    assert_eq!(stored, [api, web], "saved, forgotten and overwritten");
    assert!(
        block_on(cloud.write_records("prod", &[])).is_empty(),
        "an empty batch has no answers"
    );
}

#[test]
fn a_registration_can_be_made_to_require_a_record_naming_its_target_first() {
    let strict = with_web().requiring_records_before_registrations();
    let tg = TargetGroupRef::new(TG);
    block_on(async {
        let unrecorded = strict
            .register_targets(&tg, &[registration("10.0.0.0", None)])
            .await;
        assert!(
            matches!(&unrecorded, Err(Error::RegisterTargets { source, .. }) if source.to_string().contains("no ownership record names 10.0.0.0:80")),
            "{unrecorded:?}"
        );
        assert!(strict.target_health(&tg).await.expect("health").is_empty());
        only(
            strict
                .write_records("prod", &[RecordWrite::Save(&record("web", TG, 1))])
                .await,
        )
        .expect("record");
        strict
            .register_targets(&tg, &[registration("10.0.0.0", None)])
            .await
            .expect("a recorded target registers");
        // A record for another target group names nothing here.
        only(
            strict
                .write_records("prod", &[RecordWrite::Save(&record("web", "tg-2", 3))])
                .await,
        )
        .expect("record");
        let elsewhere = strict
            .register_targets(&tg, &[registration("10.0.0.2", None)])
            .await;
        assert!(elsewhere.is_err(), "{elsewhere:?}");
    });
    // Without the requirement, anything registers.
    let lax = with_web();
    let registered =
        block_on(lax.register_targets(&TargetGroupRef::new(TG), &[registration("10.0.0.7", None)]));
    assert!(registered.is_ok(), "{registered:?}");
}

#[test]
fn writes_take_the_time_they_are_given_on_tokios_clock_and_reads_none() {
    let slow = with_web()
        .with_security_group("sg-alb")
        .taking_per_write(Duration::from_secs(30));
    let tg = TargetGroupRef::new(TG);
    let took = block_on_paused(async {
        let started = tokio::time::Instant::now();
        let mut took = Vec::new();
        let mut lap = |what: &str| {
            took.push((what.to_string(), started.elapsed().as_secs()));
        };
        slow.target_health(&tg).await.expect("read");
        lap("a read");
        slow.register_targets(&tg, &[registration("10.0.0.1", None)])
            .await
            .expect("register");
        lap("a registration");
        slow.authorize_ingress(&"sg-alb".into(), &[tcp(80, "sg-alb")], "prod")
            .await
            .expect("authorize");
        lap("an authorization");
        let _ = slow
            .write_records("prod", &[RecordWrite::Save(&record("web", TG, 1))])
            .await;
        lap("a batch of records");
        slow.extend_lease("prod", &terms("me"))
            .await
            .expect("renew");
        lap("a lease call");
        took
    });
    let expected: Vec<(String, u64)> = [
        ("a read", 0),
        ("a registration", 30),
        ("an authorization", 60),
        ("a batch of records", 90),
        ("a lease call", 90),
    ]
    .into_iter()
    .map(|(what, at)| (what.to_string(), at))
    .collect();
    assert_eq!(took, expected);
}
