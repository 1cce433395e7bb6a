//! Table-style tests of observation's pure halves: what each read is, and what its answer means.

// The tables name their column types inline, so each case reads as one row.
#![allow(clippy::type_complexity)]

use super::bindings::{self, Declared, Resolved};
use super::{desired, rules, targets};
use crate::Error;
use crate::model::SecurityGroupId;
use crate::model::aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
use crate::model::cluster::{BindingResource, ClusterSnapshot, Node, Service, ServicePort};
use crate::model::network::{Eni, NetworkFacts};
use crate::model::{
    AssumeRole, BindingId, GroupRule, IpFamily, Peer, Permission, PortRange, Protocol, Target,
    TargetGroupRef, TargetType,
};
use crate::pure::binding::networking::{IngressRule, Networking, PortRule};
use crate::pure::binding::{Binding, PortRef, ResolvedBinding, TargetGroupSelector, fixtures};
use crate::pure::desire::{DesiredTarget, DesiredTargets};
use crate::pure::plan::{BindingState, Observation};
use crate::pure::scope::Coverage;
use crate::state::ownership::OwnershipRecord;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/web/0123456789abcdef";
const OTHER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/api/fedcba9876543210";
const MISSING: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/gone/0000000000000000";

fn group(arn: &str, name: &str) -> TargetGroupInfo {
    TargetGroupInfo {
        arn: arn.into(),
        name: name.into(),
        target_type: Some(TargetType::Ip),
        raw_target_type: "ip".into(),
        ip_family: IpFamily::Ipv4,
        vpc_id: Some("vpc-1".into()),
        protocol: Some("HTTP".into()),
        port: Some(80),
        load_balancer_arns: vec![],
        tags: BTreeMap::new(),
        health_check_protocol: Some("HTTP".into()),
        health_check_port: Some("traffic-port".into()),
    }
}

fn resource(name: &str, spec: serde_json::Value) -> BindingResource {
    BindingResource {
        namespace: "default".into(),
        name: name.into(),
        generation: Some(3),
        annotations: BTreeMap::new(),
        spec,
    }
}

fn role() -> AssumeRole {
    AssumeRole {
        role_arn: "arn:aws:iam::444455556666:role/tgb".into(),
        external_id: None,
    }
}

fn foreign(name: &str, arn: &str) -> Binding {
    let mut binding = fixtures::binding(name, arn);
    binding.assume_role = Some(role());
    binding
}

fn id(name: &str) -> BindingId {
    BindingId::resource("default", name)
}

/// What a resolution came to, as a line a table can hold.
fn outcome(resolved: &Resolved) -> String {
    match resolved {
        Ok(b) => format!("{} -> {}", b.binding.id, b.target_group.arn),
        Err((id, e)) => format!("{id}: {e}"),
    }
}

fn declared_line(declared: &Declared) -> String {
    match declared {
        Declared::Resolved(r) => outcome(r),
        Declared::NeedsLookup(b) => format!("{} waits for a lookup", b.id),
    }
}

#[test]
fn declared_bindings_resolve_here_or_wait_for_a_lookup() {
    let groups = [group(OTHER, "api"), group(ARN, "web")];
    let cases: Vec<(&str, serde_json::Value, String)> = vec![
        (
            "a binding naming a target group of this account is resolved at once",
            json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": ARN}),
            format!("tgb/default/web -> {ARN}"),
        ),
        (
            "a binding naming its target group by name is resolved to that group's ARN",
            json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "web"}),
            format!("tgb/default/web -> {ARN}"),
        ),
        (
            "a binding naming a missing target group by name fails at its field",
            json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "gone"}),
            "tgb/default/web: spec.targetGroupName: target group named gone not found".to_string(),
        ),
        (
            "a binding naming a missing target group fails at its field",
            json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": MISSING}),
            format!("tgb/default/web: spec.targetGroupARN: target group {MISSING} not found"),
        ),
        (
            "a binding in another account waits for a lookup through its role",
            json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": OTHER,
                   "iamRoleArnToAssume": "arn:aws:iam::444455556666:role/tgb"}),
            "tgb/default/web waits for a lookup".to_string(),
        ),
    ];
    for (case, spec, want) in cases {
        let snapshot = ClusterSnapshot {
            binding_resources: vec![resource("web", spec)],
            binding_crd_installed: true,
            ..ClusterSnapshot::default()
        };
        let declared = bindings::declare("prod", &snapshot, &groups);
        let lines: Vec<String> = declared.iter().map(declared_line).collect();
        assert_eq!(lines, [want], "{case}");
    }
}

#[test]
fn a_lookup_in_another_account_resolves_fails_or_reports_the_read_error() {
    let cases: Vec<(&str, Result<Option<TargetGroupInfo>, Error>, String)> = vec![
        (
            "found: resolved against it",
            Ok(Some(group(OTHER, "api"))),
            format!("tgb/default/web -> {OTHER}"),
        ),
        (
            "absent: the target group is not found",
            Ok(None),
            format!("tgb/default/web: spec.targetGroupARN: target group {OTHER} not found"),
        ),
        (
            "unreadable: the read's error, at the selector's field",
            Err(Error::Config("role not assumable".into())),
            "tgb/default/web: spec.targetGroupARN: configuration: role not assumable".to_string(),
        ),
    ];
    for (case, found, want) in cases {
        let resolved = bindings::resolve_foreign(foreign("web", OTHER), found);
        assert_eq!(outcome(&resolved), want, "{case}");
    }
}

#[test]
fn a_sweep_answers_each_lookup_in_declaration_order() {
    let declared = vec![
        Declared::NeedsLookup(Box::new(foreign("a", ARN))),
        Declared::Resolved(Box::new(Err((
            id("b"),
            crate::pure::binding::BindingError::new("spec", "bad"),
        )))),
        Declared::NeedsLookup(Box::new(foreign("c", OTHER))),
    ];
    let waiting = declared.iter().filter_map(|d| match d {
        Declared::NeedsLookup(binding) => Some(binding.as_ref()),
        Declared::Resolved(_) => None,
    });
    let lookups = bindings::lookups(waiting);
    assert_eq!(lookups.len(), 2);
    let found = vec![Ok(Some(group(ARN, "web"))), Ok(None)];
    let lines: Vec<String> = bindings::resolve_all(declared, found)
        .iter()
        .map(outcome)
        .collect();
    assert_eq!(
        lines,
        [
            format!("tgb/default/a -> {ARN}"),
            "tgb/default/b: spec: bad".to_string(),
            format!("tgb/default/c: spec.targetGroupARN: target group {OTHER} not found"),
        ]
    );
}

#[test]
fn a_narrowed_run_looks_up_only_the_bindings_its_coverage_may_reach() {
    let mut by_name = foreign("by-name", "unused");
    by_name.target_group = TargetGroupSelector::Name("web".into());
    let cases: Vec<(&str, Binding, bool)> = vec![
        (
            "a binding selecting the covered ARN is looked up",
            foreign("same", ARN),
            true,
        ),
        (
            "a binding selecting the covered group's name is looked up",
            by_name,
            true,
        ),
        (
            "a binding selecting another group waits",
            foreign("other", OTHER),
            false,
        ),
    ];
    for (case, binding, reached) in cases {
        let seeded = Coverage {
            target_groups: BTreeSet::from([ARN.into()]),
            ..Coverage::default()
        };
        let name = binding.id.clone();
        let (coverage, now, waiting) = bindings::widen(seeded, &[], &[], vec![binding]);
        assert_eq!(now.len() == 1, reached, "{case}");
        assert_eq!(waiting.len() == 1, !reached, "{case}");
        assert_eq!(
            coverage.bindings.contains(&name),
            reached,
            "{case}: covered from now on"
        );
    }
}

#[test]
fn widening_follows_records_from_a_covered_binding_to_its_other_target_groups() {
    let seeded = Coverage {
        bindings: BTreeSet::from([id("web")]),
        ..Coverage::default()
    };
    let record = OwnershipRecord {
        binding: id("web"),
        target_group: TargetGroupRef::new(OTHER),
        multi_cluster: false,
        targets: BTreeSet::new(),
        rules: BTreeSet::new(),
    };
    let (coverage, now, _) = bindings::widen(seeded, &[], &[record], vec![foreign("api", OTHER)]);
    assert!(coverage.target_groups.contains(OTHER));
    assert_eq!(
        now.len(),
        1,
        "the other binding of that target group is reached"
    );
}

#[test]
fn narrowing_keeps_only_covered_bindings_and_records() {
    let coverage = Coverage {
        bindings: BTreeSet::from([id("failed")]),
        target_groups: BTreeSet::from([ARN.into()]),
        ..Coverage::default()
    };
    let resolved: Vec<Resolved> = vec![
        Ok(fixtures::resolved(
            fixtures::binding("in", ARN),
            TargetType::Ip,
        )),
        Ok(fixtures::resolved(
            fixtures::binding("out", OTHER),
            TargetType::Ip,
        )),
        Err((
            id("failed"),
            crate::pure::binding::BindingError::new("", "x"),
        )),
        Err((
            id("elsewhere"),
            crate::pure::binding::BindingError::new("", "x"),
        )),
    ];
    let record = |name: &str, arn: &str| OwnershipRecord {
        binding: id(name),
        target_group: TargetGroupRef::new(arn),
        multi_cluster: false,
        targets: BTreeSet::new(),
        rules: BTreeSet::new(),
    };
    let records = vec![record("in", ARN), record("out", OTHER)];
    let names = |resolved: &[Resolved]| -> Vec<String> {
        resolved
            .iter()
            .map(|r| match r {
                Ok(b) => b.binding.id.to_string(),
                Err((id, _)) => id.to_string(),
            })
            .collect()
    };
    // A sweep keeps everything, failed bindings included: dropping one would read as its
    // deletion, and its targets and rules would go.
    let (all, all_records) =
        bindings::narrow(&Coverage::everything(), resolved.clone(), records.clone());
    assert_eq!(
        names(&all),
        [
            "tgb/default/in",
            "tgb/default/out",
            "tgb/default/failed",
            "tgb/default/elsewhere"
        ]
    );
    assert_eq!(all_records, records);

    let (resolved, records) = bindings::narrow(&coverage, resolved, records);
    assert_eq!(names(&resolved), ["tgb/default/in", "tgb/default/failed"]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].binding, id("in"));
}

#[test]
fn generations_come_from_resource_bindings_that_have_one() {
    let mut unnumbered = resource("b", json!({}));
    unnumbered.generation = None;
    let snapshot = ClusterSnapshot {
        binding_resources: vec![resource("a", json!({})), unnumbered],
        ..ClusterSnapshot::default()
    };
    assert_eq!(
        bindings::generations(&snapshot),
        BTreeMap::from([(id("a"), 3)])
    );
}

// ----- desired: VPCs -----

fn snapshot_with_service() -> ClusterSnapshot {
    ClusterSnapshot {
        services: vec![Service {
            namespace: "default".into(),
            name: "web".into(),
            service_type: "NodePort".into(),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: "TCP".into(),
                node_port: Some(30080),
            }],
        }],
        ..ClusterSnapshot::default()
    }
}

fn ip_binding(foreign_account: bool) -> ResolvedBinding {
    let mut binding = fixtures::binding("web", ARN);
    if foreign_account {
        binding.assume_role = Some(role());
    }
    fixtures::resolved(binding, TargetType::Ip)
}

#[test]
fn only_ip_bindings_of_this_account_need_their_vpc_read_once() {
    let mut other_vpc = ip_binding(false);
    other_vpc.vpc_id = Some("vpc-2".into());
    let resolved: Vec<Resolved> = vec![
        Ok(ip_binding(false)),
        Ok(ip_binding(false)),
        Ok(other_vpc),
        Ok(ip_binding(true)),
        Ok(fixtures::resolved(
            fixtures::binding("n", ARN),
            TargetType::Instance,
        )),
    ];
    assert_eq!(desired::vpcs_to_read(&resolved), ["vpc-1", "vpc-2"]);
}

#[test]
fn an_unreadable_vpc_fails_only_the_bindings_that_need_it() {
    let failed = || Err(Error::Config("ec2 down".into()));
    let found = || {
        Ok(BTreeMap::from([(
            "vpc-1".to_string(),
            vec!["10.0.0.0/16".parse().expect("cidr")],
        )]))
    };
    let cases: Vec<(
        &str,
        ResolvedBinding,
        Result<BTreeMap<String, Vec<ipnet::IpNet>>, Error>,
        &str,
    )> = vec![
        (
            "an ip binding whose VPC was read is desired",
            ip_binding(false),
            found(),
            "ready",
        ),
        (
            "an ip binding whose VPC read failed fails with the read's error",
            ip_binding(false),
            failed(),
            "failed: reading the target group's VPC: configuration: ec2 down",
        ),
        (
            "an ip binding in another account needs no VPC",
            ip_binding(true),
            failed(),
            "ready",
        ),
        (
            "an instance binding needs no VPC",
            fixtures::resolved(fixtures::binding("web", ARN), TargetType::Instance),
            failed(),
            "ready",
        ),
    ];
    for (case, binding, vpcs, want) in cases {
        let states = desired::desire_bindings(vec![Ok(binding)], &snapshot_with_service(), &vpcs);
        let got = match &states[..] {
            [BindingState::Ready { .. }] => "ready".to_string(),
            [BindingState::Failed { error, .. }] => format!("failed: {}", error.message),
            other => format!("{} states", other.len()),
        };
        assert_eq!(got, want, "{case}");
    }
}

// ----- targets -----

#[test]
fn a_target_health_answer_means_targets_a_missing_group_or_nothing_known() {
    let target = ObservedTarget {
        target: Target::new("10.0.0.1", 80),
        availability_zone: None,
        state: "healthy".into(),
        why: None,
    };
    let cases: Vec<(&str, Result<Vec<ObservedTarget>, Error>, Observation)> = vec![
        (
            "targets read are the targets",
            Ok(vec![target.clone()]),
            Observation::Targets(vec![target]),
        ),
        (
            "a missing target group is not found",
            Err(Error::TargetGroupNotFound {
                target_group: ARN.into(),
            }),
            Observation::NotFound,
        ),
        (
            "any other error leaves the group unknown, with the error",
            Err(Error::Config("throttled".into())),
            Observation::Unreadable(std::sync::Arc::new(Error::Config("throttled".into()))),
        ),
    ];
    for (case, read, want) in cases {
        let got = targets::observation_of(read);
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{case}");
    }
}

#[test]
fn the_targets_read_are_those_of_ready_bindings_and_of_records() {
    let bindings = vec![
        BindingState::Ready {
            binding: Box::new(ip_binding(false)),
            desired: DesiredTargets::default(),
        },
        BindingState::Failed {
            id: id("bad"),
            error: crate::pure::binding::BindingError::new("", "x"),
        },
    ];
    let records = vec![OwnershipRecord {
        binding: id("old"),
        target_group: TargetGroupRef::new(OTHER),
        multi_cluster: false,
        targets: BTreeSet::new(),
        rules: BTreeSet::new(),
    }];
    let read: Vec<String> = targets::target_groups_to_read(&records, &bindings)
        .into_iter()
        .map(|g| g.arn.to_string())
        .collect();
    assert_eq!(read, [OTHER, ARN], "each once, in ARN order");
}

// ----- rules -----

fn networked(name: &str, peer: Peer) -> BindingState {
    let mut binding = fixtures::binding(name, ARN);
    binding.networking = Some(Networking {
        ingress: vec![IngressRule {
            from: vec![peer],
            ports: vec![PortRule {
                protocol: Protocol::Tcp,
                port: Some(PortRef::Number(80)),
            }],
        }],
    });
    let desired = DesiredTargets {
        targets: BTreeMap::from([(
            Target::new("192.168.1.10", 80),
            DesiredTarget {
                availability_zone: None,
                source: crate::pure::desire::TargetSource::Slice("test".into()),
            },
        )]),
        evidence: String::new(),
        ..DesiredTargets::default()
    };
    BindingState::Ready {
        binding: Box::new(fixtures::resolved(binding, TargetType::Ip)),
        desired,
    }
}

fn facts() -> NetworkFacts {
    NetworkFacts {
        eni_by_ip: foldhash::HashMap::from_iter([(
            "192.168.1.10".into(),
            std::sync::Arc::new(Eni {
                id: "eni-1".into(),
                groups: vec!["sg-node".into()],
            }),
        )]),
        ..NetworkFacts::default()
    }
}

fn node() -> Node {
    Node {
        name: "n1".into(),
        labels: BTreeMap::new(),
        taints: vec![],
        ready: Some("True".into()),
        provider_id: Some("aws:///eu-west-1a/i-0abc".into()),
        internal_ips: vec!["192.168.1.10".into()],
    }
}

fn live(group: &str) -> (SecurityGroupId, Vec<ObservedRule>) {
    (group.into(), vec![])
}

fn recorded(group: &str) -> OwnershipRecord {
    OwnershipRecord {
        binding: id("old"),
        target_group: TargetGroupRef::new(OTHER),
        multi_cluster: false,
        targets: BTreeSet::new(),
        rules: BTreeSet::from([GroupRule {
            group: group.into(),
            permission: Permission {
                protocol: Protocol::Tcp,
                ports: PortRange::single(80),
                peer: Peer::SecurityGroup("sg-alb".into()),
            },
        }]),
    }
}

#[test]
fn rule_reads_are_asked_for_only_when_rules_are_managed() {
    let snapshot = ClusterSnapshot {
        nodes: vec![node()],
        ..ClusterSnapshot::default()
    };
    let plain = vec![BindingState::Ready {
        binding: Box::new(ip_binding(false)),
        desired: DesiredTargets::default(),
    }];
    let with_rules = vec![networked("web", Peer::SecurityGroup("sg-alb".into()))];
    let none = BTreeSet::new();
    let cases: Vec<(
        &str,
        &[BindingState],
        Option<&BTreeSet<SecurityGroupId>>,
        Option<(Vec<&str>, Vec<&str>)>,
    )> = vec![
        (
            "no binding manages rules: no facts are read",
            &plain,
            None,
            None,
        ),
        (
            "a networked binding needs its nodes' and pods' interfaces",
            &with_rules,
            None,
            Some((vec!["i-0abc"], vec!["192.168.1.10"])),
        ),
        (
            "a run planning no group reads nothing",
            &with_rules,
            Some(&none),
            None,
        ),
    ];
    for (case, bindings, groups, want) in cases {
        let work = rules::work(&snapshot, bindings, &[], groups);
        let got = work
            .facts_request()
            .map(|r| (r.instances.clone(), r.ips.clone()));
        let want = want.map(|(i, p)| {
            (
                i.into_iter().map(String::from).collect::<Vec<_>>(),
                p.into_iter().map(std::sync::Arc::from).collect::<Vec<_>>(),
            )
        });
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn unreadable_network_facts_fail_every_networked_binding_but_recorded_groups_are_still_read() {
    let bindings = vec![networked("web", Peer::SecurityGroup("sg-alb".into()))];
    let records = vec![recorded("sg-old")];
    let snapshot = ClusterSnapshot::default();
    let work = rules::work(&snapshot, &bindings, &records, None);
    let facts = Err(Error::Config("ec2 down".into()));
    assert!(
        work.load_balancers_request(&facts).is_empty(),
        "no load balancer read after a failed facts read"
    );
    let wanted = work.want(
        "prod",
        false,
        &snapshot,
        &facts,
        &Ok(vec![]),
        &Ok(BTreeMap::new()),
    );
    assert_eq!(wanted.groups_to_read(), ["sg-old"]);
    let observation = work.interpret(wanted, Ok(BTreeMap::from([live("sg-old")])));
    let failures: Vec<String> = observation
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.binding, f.error))
        .collect();
    assert_eq!(
        failures,
        ["tgb/default/web: spec.networking: configuration: ec2 down"]
    );
    assert!(observation.desired.is_empty());
    assert_eq!(observation.observed.keys().collect::<Vec<_>>(), ["sg-old"]);
}

#[test]
fn live_rules_decide_which_bindings_keep_their_rules() {
    let bindings = vec![
        networked("web", Peer::SecurityGroup("sg-alb".into())),
        networked("api", Peer::SecurityGroup("sg-gone".into())),
    ];
    let snapshot = ClusterSnapshot::default();
    let records = vec![recorded("sg-old")];
    let work = rules::work(&snapshot, &bindings, &records, None);
    let wanted = || {
        work.want(
            "prod",
            false,
            &snapshot,
            &Ok(facts()),
            &Ok(vec![]),
            &Ok(BTreeMap::new()),
        )
    };
    assert_eq!(
        wanted().groups_to_read(),
        ["sg-alb", "sg-gone", "sg-node", "sg-old"],
        "desired, recorded and peer groups, once each"
    );

    let cases: Vec<(
        &str,
        Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>, Error>,
        Vec<&str>,
        Vec<&str>,
        Vec<&str>,
    )> = vec![
        (
            "a peer group that does not exist fails its binding alone",
            Ok(BTreeMap::from([
                live("sg-alb"),
                live("sg-node"),
                live("sg-old"),
                live("sg-unrelated"),
            ])),
            vec!["tgb/default/web"],
            vec!["tgb/default/api"],
            vec!["sg-node", "sg-old"],
        ),
        (
            "an unreadable answer fails every networked binding and plans no group",
            Err(Error::Config("throttled".into())),
            vec![],
            vec!["tgb/default/web", "tgb/default/api"],
            vec![],
        ),
    ];
    for (case, answer, desired, failed, observed) in cases {
        let observation = work.interpret(wanted(), answer);
        let desired_by: BTreeSet<String> = observation
            .desired
            .iter()
            .map(|r| r.binding.to_string())
            .collect();
        let failed_by: Vec<String> = observation
            .failures
            .iter()
            .map(|f| f.binding.to_string())
            .collect();
        assert_eq!(
            desired_by.into_iter().collect::<Vec<_>>(),
            desired,
            "{case}: desired"
        );
        assert_eq!(failed_by, failed, "{case}: failed");
        assert_eq!(
            observation.observed.keys().collect::<Vec<_>>(),
            observed,
            "{case}: observed"
        );
    }
}

#[test]
fn nlb_subnets_are_read_only_for_load_balancers_without_groups() {
    let lb = |arn: &str, groups: &[&str], subnets: &[&str]| LoadBalancerInfo {
        arn: arn.into(),
        kind: "network".into(),
        security_groups: groups.iter().map(|&g| g.into()).collect(),
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
    };
    let read = Ok(vec![
        lb("a", &["sg-lb"], &["subnet-1"]),
        lb("b", &[], &["subnet-2", "subnet-3"]),
    ]);
    assert_eq!(rules::subnets_to_read(&read), ["subnet-2", "subnet-3"]);
    assert!(rules::subnets_to_read(&Err(Error::Config("x".into()))).is_empty());
}
