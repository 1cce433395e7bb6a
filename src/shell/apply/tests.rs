//! Apply's ordering and isolation, against a port implementation that records every call in
//! order (AWS behaviour itself is tested against moto in tests/).

use super::*;
use crate::model::aws::{ObservedTarget, TargetGroupInfo};
use crate::model::{AssumeRole, Target};
use crate::model::{Peer, Permission, PortRange, Protocol};
use crate::pure::plan::RecordChange;
use crate::pure::plan::rules::{Authorize, Revoke, RulePlan};
use crate::state::ownership::OwnershipRecord;
use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    failing_registrations: Vec<String>,
    /// How many lease renewals succeed before the lease is lost.
    renewals: Mutex<usize>,
}

impl Recorder {
    fn log(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

impl TargetRegistry for Recorder {
    async fn target_groups(&self) -> crate::Result<Vec<TargetGroupInfo>> {
        Ok(vec![])
    }
    async fn foreign_target_group(
        &self,
        _: &crate::pure::binding::TargetGroupSelector,
        _: &AssumeRole,
    ) -> crate::Result<Option<TargetGroupInfo>> {
        Ok(None)
    }
    async fn load_balancers(
        &self,
        _: &[String],
    ) -> crate::Result<Vec<crate::model::aws::LoadBalancerInfo>> {
        Ok(vec![])
    }
    async fn target_health(&self, _: &TargetGroupRef) -> crate::Result<Vec<ObservedTarget>> {
        Ok(vec![])
    }
    async fn register_targets(
        &self,
        group: &TargetGroupRef,
        targets: &[Registration],
    ) -> crate::Result<()> {
        self.log(format!("register {} x{}", group.arn, targets.len()));
        if self.failing_registrations.contains(&group.arn) {
            return Err(Error::RegisterTargets {
                target_group: group.arn.clone(),
                source: "InvalidTarget".into(),
            });
        }
        Ok(())
    }
    async fn deregister_targets(
        &self,
        group: &TargetGroupRef,
        targets: &[Target],
    ) -> crate::Result<()> {
        self.log(format!("deregister {} x{}", group.arn, targets.len()));
        if group.arn == "gone" {
            return Err(Error::TargetGroupNotFound {
                target_group: group.arn.clone(),
            });
        }
        Ok(())
    }
}

impl OwnershipStore for Recorder {
    async fn load_statuses(
        &self,
        _: &str,
    ) -> crate::Result<Vec<crate::state::status::BindingStatus>> {
        Ok(vec![])
    }
    async fn save_status(
        &self,
        _: &str,
        _: &crate::state::status::BindingStatus,
    ) -> crate::Result<()> {
        Ok(())
    }
    async fn forget_status(&self, _: &str, _: &BindingId) -> crate::Result<()> {
        Ok(())
    }
    async fn acquire_lease(
        &self,
        _: &str,
        _: &LeaseTerms,
    ) -> crate::Result<crate::state::lease::LeaseClaim> {
        Ok(crate::state::lease::LeaseClaim::Acquired)
    }
    async fn extend_lease(&self, _: &str, _: &LeaseTerms) -> crate::Result<bool> {
        let mut left = self.renewals.lock().expect("lock");
        self.log(format!("renew lease ({left} left)"));
        let held = *left > 0;
        *left = left.saturating_sub(1);
        Ok(held)
    }
    async fn release_lease(
        &self,
        _: &str,
        _: &LeaseTerms,
        _: bool,
    ) -> crate::Result<crate::state::lease::LeaseRelease> {
        Ok(crate::state::lease::LeaseRelease::Released)
    }
    async fn load(&self, _: &str) -> crate::Result<Vec<OwnershipRecord>> {
        Ok(vec![])
    }
    async fn save(&self, _: &str, record: &OwnershipRecord) -> crate::Result<()> {
        self.log(format!(
            "save {} x{}",
            record.target_group.arn,
            record.targets.len()
        ));
        Ok(())
    }
    async fn forget(&self, _: &str, record: &OwnershipRecord) -> crate::Result<()> {
        self.log(format!("forget {}", record.target_group.arn));
        Ok(())
    }
}

impl crate::ports::NetworkDirectory for Recorder {
    async fn instance_clusters(&self, _: &str) -> crate::Result<Option<BTreeSet<String>>> {
        Ok(None)
    }
    async fn network_facts(
        &self,
        _: &[String],
        _: &[String],
    ) -> crate::Result<crate::model::network::NetworkFacts> {
        Ok(Default::default())
    }
    async fn subnet_cidrs(
        &self,
        _: &[String],
    ) -> crate::Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        Ok(BTreeMap::new())
    }
    async fn vpc_cidrs(&self, _: &[String]) -> crate::Result<BTreeMap<String, Vec<ipnet::IpNet>>> {
        Ok(BTreeMap::new())
    }
}

impl FirewallRules for Recorder {
    async fn existing_groups(&self, _: &[String]) -> crate::Result<BTreeSet<String>> {
        Ok(BTreeSet::new())
    }
    async fn ingress_rules(
        &self,
        _: &[String],
    ) -> crate::Result<BTreeMap<String, Vec<crate::model::aws::ObservedRule>>> {
        Ok(BTreeMap::new())
    }
    async fn authorize_ingress(
        &self,
        group: &str,
        permissions: &[Permission],
        _: &str,
    ) -> crate::Result<()> {
        self.log(format!("authorize {group} x{}", permissions.len()));
        if self.failing_peers(permissions) {
            return Err(Error::SecurityGroupNotFound {
                group: group.into(),
                source: "InvalidGroup.NotFound".into(),
            });
        }
        Ok(())
    }
    async fn revoke_ingress(&self, group: &str, ids: &[String]) -> crate::Result<()> {
        self.log(format!("revoke {group} x{}", ids.len()));
        Ok(())
    }
}

impl Recorder {
    fn ports(&self) -> crate::ports::Ports<'_, Self, Self, Self, Self> {
        crate::ports::Ports {
            registry: self,
            network: self,
            firewall: self,
            store: self,
        }
    }

    /// A permission naming the peer `sg-gone` fails, as EC2 fails a reference to a deleted group.
    fn failing_peers(&self, permissions: &[Permission]) -> bool {
        permissions
            .iter()
            .any(|p| p.peer == crate::model::Peer::SecurityGroup("sg-gone".into()))
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

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn ownership_is_recorded_then_targets_registered_then_deregistered_then_settled() {
    let plan = Plan {
        cluster: "prod".into(),
        changes: vec![
            change(TargetAction::DeregisterTargets, "web", "tg", "10.0.0.9"),
            change(TargetAction::RegisterTargets, "web", "tg", "10.0.0.1"),
        ],
        records: vec![RecordChange {
            binding: BindingId::resource("default", "web"),
            before: Some(record("web", "tg", 2)),
            after: RecordAfter::Save(record("web", "tg", 1)),
        }],
        ..Plan::default()
    };
    let recorder = Recorder::default();
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
    assert_eq!(report.done.len(), 2);
}

#[test]
fn a_failed_registration_blocks_its_own_deregistrations_and_nothing_of_other_bindings() {
    let plan = Plan {
        cluster: "prod".into(),
        changes: vec![
            change(TargetAction::RegisterTargets, "api", "tg-api", "10.0.1.1"),
            change(TargetAction::DeregisterTargets, "api", "tg-api", "10.0.1.9"),
            change(TargetAction::RegisterTargets, "web", "tg-web", "10.0.0.1"),
            change(TargetAction::DeregisterTargets, "web", "tg-web", "10.0.0.9"),
        ],
        records: vec![RecordChange {
            binding: BindingId::resource("default", "api"),
            before: None,
            after: RecordAfter::Save(record("api", "tg-api", 1)),
        }],
        ..Plan::default()
    };
    let recorder = Recorder {
        failing_registrations: vec!["tg-api".into()],
        ..Recorder::default()
    };
    let report = block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        [
            "register tg-api x1",
            "register tg-web x1",
            "deregister tg-web x1"
        ]
    );
    assert_eq!(report.failed.len(), 2);
    assert!(
        report.failed[1].error.contains("not attempted"),
        "{}",
        report.failed[1].error
    );
    assert_eq!(report.done.len(), 2);
}

#[test]
fn targets_are_sent_in_batches_of_at_most_two_hundred() {
    let plan = Plan {
        cluster: "prod".into(),
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
        ..Plan::default()
    };
    let recorder = Recorder::default();
    block_on(apply(&plan, &recorder.ports(), None));
    assert_eq!(
        recorder.calls(),
        ["register tg x200", "register tg x200", "register tg x50"]
    );
}

#[test]
fn deregistering_from_a_deleted_target_group_counts_as_done() {
    let plan = Plan {
        cluster: "prod".into(),
        changes: vec![change(
            TargetAction::DeregisterTargets,
            "web",
            "gone",
            "10.0.0.1",
        )],
        records: vec![RecordChange {
            binding: BindingId::resource("default", "web"),
            before: None,
            after: RecordAfter::Forget(record("web", "gone", 1)),
        }],
        ..Plan::default()
    };
    let recorder = Recorder::default();
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
    let plan = Plan {
        cluster: "prod".into(),
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
        ..Plan::default()
    };
    let recorder = Recorder::default();
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
    let plan = Plan {
        cluster: "prod".into(),
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
        ..Plan::default()
    };
    let recorder = Recorder::default();
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
    let plan = Plan {
        cluster: "prod".into(),
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
        ..Plan::default()
    };
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
        let recorder = Recorder {
            renewals: Mutex::new(renewals),
            ..Recorder::default()
        };
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
    let plan = Plan {
        cluster: "prod".into(),
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
        ..Plan::default()
    };
    let recorder = Recorder {
        failing_registrations: vec!["tg".into()],
        ..Recorder::default()
    };
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
