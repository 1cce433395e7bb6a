//! Table-style tests of readiness gates in the plan: which condition each gated pod is given
//! from its target's health, and how the plan tells of them.

use super::*;
use crate::model::TargetType;
use crate::model::aws::HealthReason;
use crate::model::{Target, TargetGroupRef};
use crate::pure::binding::fixtures;
use crate::pure::desire::{DesiredTarget, TargetSource};
use crate::pure::plan::{BindingState, PlanInput, plan};
use crate::state::ownership::OwnershipRecord;
use std::collections::BTreeSet;

const TG: &str = "arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/a/1";
const GATE: &str = "target-health.elbv2.k8s.aws/web";

fn target(ip: &str) -> Target {
    Target::new(ip, 80)
}

fn pod(ip: &str) -> String {
    format!("default/pod-{ip}")
}

fn condition(status: &str, reason: Option<&str>, message: Option<&str>) -> GateCondition {
    GateCondition {
        status: status.into(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
    }
}

fn passed() -> GateCondition {
    condition("True", None, None)
}

/// The `web` binding (Service `default/web`) on [`TG`], with ip targets.
fn web() -> ResolvedBinding {
    fixtures::resolved(fixtures::binding("web", TG), TargetType::Ip)
}

/// Desired targets whose pods list the binding's gate, each with its condition now.
fn gated(pods: &[(&str, Option<GateCondition>)]) -> DesiredTargets {
    DesiredTargets {
        targets: pods
            .iter()
            .map(|(ip, _)| {
                (
                    target(ip),
                    DesiredTarget {
                        availability_zone: None,
                        source: TargetSource::GatedPod(pod(ip).into()),
                    },
                )
            })
            .collect(),
        evidence: format!("{} gated", pods.len()),
        gates: pods
            .iter()
            .map(|(ip, condition)| GatedTarget {
                pod: pod(ip).into(),
                target: target(ip),
                condition: condition.clone(),
            })
            .collect(),
        ..DesiredTargets::default()
    }
}

/// What ELB says of a target: `(ip, state, reason, description)`.
type Health<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

fn health(targets: &[Health<'_>]) -> Observation {
    Observation::Targets(
        targets
            .iter()
            .map(|(ip, state, reason, description)| ObservedTarget {
                target: target(ip),
                availability_zone: None,
                state: (*state).into(),
                why: HealthReason::of(reason.map(str::to_string), description.map(str::to_string)),
            })
            .collect(),
    )
}

/// One cluster with these bindings, each recorded as owning what its target group holds.
fn input(bindings: Vec<(ResolvedBinding, DesiredTargets)>, observed: Observation) -> PlanInput {
    let held: BTreeSet<Target> = match &observed {
        Observation::Targets(targets) => targets.iter().map(|t| t.target.clone()).collect(),
        _ => BTreeSet::new(),
    };
    PlanInput {
        cluster: "prod".into(),
        records: bindings
            .iter()
            .map(|(b, _)| OwnershipRecord {
                binding: b.binding.id.clone(),
                target_group: TargetGroupRef::new(TG),
                multi_cluster: false,
                targets: held.clone(),
                rules: Default::default(),
            })
            .collect(),
        bindings: bindings
            .into_iter()
            .map(|(binding, desired)| BindingState::Ready {
                binding: Box::new(binding),
                desired,
            })
            .collect(),
        observed: [(TG.into(), observed)].into(),
        resource_bindings_listed: true,
        ..PlanInput::default()
    }
}

fn web_plan(plan: &Plan) -> &BindingPlan {
    &plan.bindings[&BindingId::resource("default", "web")]
}

const INITIAL: Option<&str> = Some("Elb.InitialHealthChecking");
const INITIAL_TEXT: Option<&str> = Some("Initial health checks in progress");
const FAILED: Option<&str> = Some("Target.FailedHealthChecks");
const FAILED_TEXT: Option<&str> = Some("Health checks failed");

#[test]
fn a_gates_condition_follows_its_targets_health() {
    // (case, what ELB says of 10.0.0.1, the pod's condition now, the condition set and the
    // status it replaces; `None`: nothing to set)
    type Case = (
        &'static str,
        Vec<Health<'static>>,
        Option<GateCondition>,
        Option<(GateCondition, Option<&'static str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "healthy, no condition yet: True, with no reason",
            vec![("10.0.0.1", "healthy", None, None)],
            None,
            Some((passed(), None)),
        ),
        (
            "initial: False, with ELB's reason and description",
            vec![("10.0.0.1", "initial", INITIAL, INITIAL_TEXT)],
            None,
            Some((condition("False", INITIAL, INITIAL_TEXT), None)),
        ),
        (
            "unhealthy: False",
            vec![("10.0.0.1", "unhealthy", FAILED, FAILED_TEXT)],
            None,
            Some((condition("False", FAILED, FAILED_TEXT), None)),
        ),
        (
            "draining: False",
            vec![(
                "10.0.0.1",
                "draining",
                Some("Target.DeregistrationInProgress"),
                Some("Target deregistration is in progress"),
            )],
            None,
            Some((
                condition(
                    "False",
                    Some("Target.DeregistrationInProgress"),
                    Some("Target deregistration is in progress"),
                ),
                None,
            )),
        ),
        (
            "unavailable: False",
            vec![(
                "10.0.0.1",
                "unavailable",
                Some("Target.HealthCheckDisabled"),
                Some("Health checks are disabled"),
            )],
            None,
            Some((
                condition(
                    "False",
                    Some("Target.HealthCheckDisabled"),
                    Some("Health checks are disabled"),
                ),
                None,
            )),
        ),
        (
            "unhealthy with no description: False, the message says so",
            vec![("10.0.0.1", "unhealthy", None, None)],
            None,
            Some((
                condition(
                    "False",
                    None,
                    Some("target 10.0.0.1:80 is unhealthy in targetgroup/a/1"),
                ),
                None,
            )),
        ),
        (
            "not in the target group yet: False, registration in progress",
            vec![],
            None,
            Some((
                condition(
                    "False",
                    Some(REGISTERING_REASON),
                    Some("registering target 10.0.0.1:80 in targetgroup/a/1"),
                ),
                None,
            )),
        ),
        (
            "healthy and already True: nothing",
            vec![("10.0.0.1", "healthy", None, None)],
            Some(passed()),
            None,
        ),
        (
            "initial and already False as ELB says: nothing",
            vec![("10.0.0.1", "initial", INITIAL, INITIAL_TEXT)],
            Some(condition("False", INITIAL, INITIAL_TEXT)),
            None,
        ),
        (
            "True, then the target turns unhealthy: False again",
            vec![("10.0.0.1", "unhealthy", FAILED, FAILED_TEXT)],
            Some(passed()),
            Some((condition("False", FAILED, FAILED_TEXT), Some("True"))),
        ),
        (
            "False for one reason, now another: False with the new reason",
            vec![("10.0.0.1", "unhealthy", FAILED, FAILED_TEXT)],
            Some(condition("False", INITIAL, INITIAL_TEXT)),
            Some((condition("False", FAILED, FAILED_TEXT), Some("False"))),
        ),
        (
            "False, then healthy: True, the reason cleared",
            vec![("10.0.0.1", "healthy", None, None)],
            Some(condition("False", INITIAL, INITIAL_TEXT)),
            Some((passed(), Some("False"))),
        ),
        (
            "deregistered and registered again: the live entry counts",
            vec![
                ("10.0.0.1", "draining", None, None),
                ("10.0.0.1", "healthy", None, None),
            ],
            None,
            Some((passed(), None)),
        ),
    ];
    for (case, targets, now, expected) in cases {
        let p = plan(&input(
            vec![(web(), gated(&[("10.0.0.1", now)]))],
            health(&targets),
        ));
        let gates = &web_plan(&p).gates;
        let Some((wanted, previous)) = expected else {
            assert_eq!(gates, &[], "{case}");
            continue;
        };
        assert_eq!(
            gates,
            &[GateChange {
                binding: BindingId::resource("default", "web"),
                pod: pod("10.0.0.1"),
                condition_type: GATE.into(),
                target: target("10.0.0.1"),
                condition: wanted.clone(),
                previous: previous.map(str::to_string),
            }],
            "{case}"
        );
        assert_eq!(
            gates[0].is_transition(),
            previous != Some(wanted.status.as_str()),
            "{case}"
        );

        // Once set, the same health calls for nothing more.
        let again = plan(&input(
            vec![(web(), gated(&[("10.0.0.1", Some(wanted))]))],
            health(&targets),
        ));
        assert_eq!(web_plan(&again).gates, [], "{case}: a second run");
    }
}

#[test]
fn a_status_that_changes_is_a_transition_and_a_reason_that_changes_is_not() {
    let change = |previous: Option<&str>, status: &str| GateChange {
        binding: BindingId::resource("default", "web"),
        pod: pod("10.0.0.1"),
        condition_type: GATE.into(),
        target: target("10.0.0.1"),
        condition: condition(status, None, None),
        previous: previous.map(str::to_string),
    };
    let cases = [
        (None, "False", true),
        (None, "True", true),
        (Some("False"), "True", true),
        (Some("True"), "False", true),
        (Some("Unknown"), "False", true),
        (Some("False"), "False", false),
        (Some("True"), "True", false),
    ];
    for (previous, status, transition) in cases {
        assert_eq!(
            change(previous, status).is_transition(),
            transition,
            "{previous:?} -> {status}"
        );
    }
}

#[test]
fn health_that_could_not_be_read_sets_no_gate_but_the_pods_still_wait() {
    let cases = [
        (
            "unreadable",
            Observation::Unreadable(Arc::new(crate::error::Error::Config("throttled".into()))),
        ),
        ("not found", Observation::NotFound),
    ];
    for (case, observation) in cases {
        let p = plan(&input(
            vec![(
                web(),
                gated(&[
                    ("10.0.0.1", None),
                    ("10.0.0.2", Some(condition("False", INITIAL, INITIAL_TEXT))),
                    ("10.0.0.3", Some(passed())),
                ]),
            )],
            observation,
        ));
        let part = web_plan(&p);
        assert_eq!(part.gates, [], "{case}");
        assert!(part.failure.is_some(), "{case}: the binding fails");
        assert_eq!(
            part.gates_waiting,
            Some(GatesWaiting {
                service: "default/web".into(),
                pods: 2,
            }),
            "{case}: the pods whose gate has not passed"
        );
    }
}

#[test]
fn the_pods_waiting_are_those_whose_gate_has_not_passed_named_by_their_service() {
    let mut frontend = web();
    frontend.binding.service.name = "frontend".into();
    let desired = gated(&[
        ("10.0.0.1", Some(passed())),
        ("10.0.0.2", None),
        ("10.0.0.3", None),
        ("10.0.0.4", Some(condition("False", INITIAL, INITIAL_TEXT))),
    ]);
    let observed = health(&[
        ("10.0.0.1", "healthy", None, None),
        ("10.0.0.2", "healthy", None, None),
        ("10.0.0.3", "initial", INITIAL, INITIAL_TEXT),
    ]);
    let p = plan(&input(vec![(frontend, desired)], observed));
    let part = web_plan(&p);
    let set: Vec<(&str, &str)> = part
        .gates
        .iter()
        .map(|g| (g.pod.as_str(), g.condition.status.as_str()))
        .collect();
    assert_eq!(
        set,
        [
            ("default/pod-10.0.0.2", "True"),
            ("default/pod-10.0.0.3", "False"),
            ("default/pod-10.0.0.4", "False"),
        ]
    );
    assert_eq!(
        part.gates_waiting,
        Some(GatesWaiting {
            service: "default/frontend".into(),
            pods: 2,
        }),
        "10.0.0.3 still checking, 10.0.0.4 not registered yet"
    );
    assert_eq!(p.waiting_on_gates().count(), 1);
    assert_eq!(p.gate_changes().count(), 3);

    let settled = plan(&input(
        vec![(web(), gated(&[("10.0.0.1", Some(passed()))]))],
        health(&[("10.0.0.1", "healthy", None, None)]),
    ));
    assert_eq!(web_plan(&settled).gates_waiting, None, "every gate passed");
    assert_eq!(
        plan(&input(vec![(web(), gated(&[]))], health(&[]))).bindings
            [&BindingId::resource("default", "web")]
            .gates_waiting,
        None,
        "no gated pod, nothing waits"
    );
}

#[test]
fn a_plan_with_gates_to_set_is_not_converged_and_one_only_waiting_is() {
    let to_set = plan(&input(
        vec![(web(), gated(&[("10.0.0.1", None)]))],
        health(&[("10.0.0.1", "healthy", None, None)]),
    ));
    assert!(to_set.changes().is_empty(), "{to_set}");
    assert!(!to_set.is_converged(), "{to_set}");
    assert!(to_set.has_writes(), "{to_set}");

    let waiting = plan(&input(
        vec![(
            web(),
            gated(&[("10.0.0.1", Some(condition("False", INITIAL, INITIAL_TEXT)))]),
        )],
        health(&[("10.0.0.1", "initial", INITIAL, INITIAL_TEXT)]),
    ));
    assert!(web_plan(&waiting).gates_waiting.is_some(), "{waiting}");
    assert!(waiting.is_converged(), "{waiting}");
    assert!(!waiting.has_writes(), "{waiting}");
}

#[test]
fn pods_listing_an_instance_bindings_gate_are_told_of_and_left_alone() {
    let instance = fixtures::resolved(fixtures::binding("web", TG), TargetType::Instance);
    let desired = |pods: usize| DesiredTargets {
        ungateable: (1..=pods)
            .map(|i| Arc::from(format!("default/web-{i}")))
            .collect(),
        ..DesiredTargets::default()
    };
    let notes = |p: &Plan| -> Vec<String> {
        p.notes
            .iter()
            .filter(|n| n.message.contains("readiness gate"))
            .map(|n| n.message.clone())
            .collect()
    };

    let two = plan(&input(vec![(instance.clone(), desired(2))], health(&[])));
    let told = notes(&two);
    assert_eq!(told.len(), 1, "{two}");
    assert!(
        told[0].starts_with(&format!(
            "readiness gate {GATE} is listed by pod(s) default/web-1, default/web-2, but target group a takes instance targets"
        )),
        "{}",
        told[0]
    );
    assert_eq!(two.notes[0].binding, BindingId::resource("default", "web"));
    assert!(web_plan(&two).gates.is_empty());
    assert!(web_plan(&two).gates_waiting.is_none());
    assert!(two.is_converged(), "a note changes nothing");
    assert!(
        two.to_string().contains(&format!(
            "  i tgb/default/web: readiness gate {GATE} is listed"
        )),
        "{two}"
    );

    let seven = plan(&input(vec![(instance.clone(), desired(7))], health(&[])));
    assert!(
        notes(&seven)[0].contains("default/web-5, and 2 more, but"),
        "{}",
        notes(&seven)[0]
    );
    assert!(!notes(&seven)[0].contains("default/web-6"));

    let none = plan(&input(vec![(instance, desired(0))], health(&[])));
    assert_eq!(notes(&none), Vec::<String>::new());
}

#[test]
fn gates_forbidden_are_noted_on_each_binding_with_gates_to_set() {
    // Multi-cluster, so that the three may share the one target group.
    let mut api = fixtures::resolved(fixtures::binding("api", TG), TargetType::Ip);
    api.binding.multi_cluster = true;
    let mut web = web();
    web.binding.multi_cluster = true;
    let mut quiet = fixtures::resolved(fixtures::binding("quiet", TG), TargetType::Ip);
    quiet.binding.multi_cluster = true;
    let mut p = plan(&input(
        vec![
            (api, gated(&[("10.0.0.1", None)])),
            (web, gated(&[("10.0.0.2", None)])),
            (quiet, gated(&[("10.0.0.3", Some(passed()))])),
        ],
        health(&[
            ("10.0.0.1", "healthy", None, None),
            ("10.0.0.2", "healthy", None, None),
            ("10.0.0.3", "healthy", None, None),
        ]),
    ));
    assert_eq!(p.gate_changes().count(), 2, "{p}");
    let before = p.notes.len();
    p.note_gates_forbidden("pods \"x\" is forbidden");
    let added: Vec<(String, &str)> = p.notes[before..]
        .iter()
        .map(|n| (n.binding.to_string(), n.message.as_str()))
        .collect();
    let message = "readiness gates cannot be set (pods \"x\" is forbidden): grant `patch` on `pods/status`; its targets are registered all the same";
    assert_eq!(
        added,
        [
            ("tgb/default/api".to_string(), message),
            ("tgb/default/web".to_string(), message),
        ]
    );
}

#[test]
fn the_printed_plan_shows_each_condition_to_set_and_counts_them() {
    let p = plan(&input(
        vec![(
            web(),
            gated(&[("10.0.0.1", None), ("10.0.0.2", None), ("10.0.0.3", None)]),
        )],
        health(&[
            ("10.0.0.1", "healthy", None, None),
            ("10.0.0.2", "initial", INITIAL, INITIAL_TEXT),
        ]),
    ));
    let text = p.to_string();
    for line in [
        format!("  ~ set pod default/pod-10.0.0.1 {GATE}=True (target 10.0.0.1:80 healthy)\n"),
        format!(
            "  ~ set pod default/pod-10.0.0.2 {GATE}=False (Elb.InitialHealthChecking: Initial health checks in progress)\n"
        ),
        format!(
            "  ~ set pod default/pod-10.0.0.3 {GATE}=False (Elb.RegistrationInProgress: registering target 10.0.0.3:80 in targetgroup/a/1)\n"
        ),
    ] {
        assert!(text.contains(&line), "{line}in\n{text}");
    }
    assert!(text.contains("  # tgb/default/web\n"), "{text}");
    assert!(
        text.ends_with(
            "Plan for prod: 1 to register, 0 to deregister, 0 blocked, 0 binding(s) failed. 3 readiness gate condition(s) to set.\n"
        ),
        "{text}"
    );
}

#[test]
fn a_plan_with_gates_reads_back_from_its_json_unchanged() {
    let p = plan(&input(
        vec![(
            web(),
            gated(&[
                ("10.0.0.1", Some(condition("False", INITIAL, INITIAL_TEXT))),
                ("10.0.0.2", None),
            ]),
        )],
        health(&[
            ("10.0.0.1", "healthy", None, None),
            ("10.0.0.2", "initial", INITIAL, INITIAL_TEXT),
        ]),
    ));
    let part = web_plan(&p);
    assert_eq!(part.gates.len(), 2, "{p}");
    assert!(part.gates_waiting.is_some(), "{p}");
    let json = serde_json::to_string(&p).expect("serializable");
    let read: Plan = serde_json::from_str(&json).expect("reads back");
    assert_eq!(read, p);
    assert_eq!(read.to_string(), p.to_string());
}

#[test]
fn a_binding_that_failed_sets_no_gate_but_its_pods_still_wait() {
    // Two single-cluster bindings on one target group conflict: both fail.
    let mut other = fixtures::resolved(fixtures::binding("web2", TG), TargetType::Ip);
    other.binding.service.name = "web".into();
    let p = plan(&input(
        vec![
            (web(), gated(&[("10.0.0.1", None)])),
            (other, gated(&[("10.0.0.2", None)])),
        ],
        health(&[
            ("10.0.0.1", "healthy", None, None),
            ("10.0.0.2", "healthy", None, None),
        ]),
    ));
    assert_eq!(p.failures().len(), 2, "{p}");
    assert_eq!(p.gate_changes().count(), 0, "{p}");
    assert_eq!(
        web_plan(&p).gates_waiting,
        Some(GatesWaiting {
            service: "default/web".into(),
            pods: 1,
        }),
        "{p}"
    );
}
