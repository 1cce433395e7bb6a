use super::affected::{Affected, affected, describe};
use super::gates::{FIRST_RECHECK, GateRechecks, MAX_RECHECK, Waiting, waiting};
use super::pending::{MAX_DELAY, Pending, QUIET};
use super::view::{Effect, WatchedView};
use crate::model::cluster::{
    BindingResource, ContainerPort, Endpoint, EndpointSlice, GateCondition, Node, Pod,
    ReadinessGate, Service,
};
use crate::model::watched::{Kind, Object, Signal};
use crate::model::{BindingId, Target};
use crate::pure::course::Look;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::{BindingPlan, GateChange, GatesWaiting, Plan, Presence};
use crate::pure::report::Report;
use crate::pure::scope::Scope;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TG: &str = "arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/a/1";

fn slice(name: &str, service: Option<&str>, ips: &[&str]) -> Object {
    Object::EndpointSlice(EndpointSlice {
        namespace: "default".into(),
        name: name.into(),
        service_name: service.map(str::to_string),
        address_type: "IPv4".into(),
        ports: Vec::new(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![(*ip).into()],
                ready: Some(true),
                terminating: None,
                node_name: None,
                pod: None,
            })
            .collect(),
    })
}

fn service(name: &str) -> Object {
    Object::Service(Service {
        namespace: "default".into(),
        name: name.into(),
        service_type: "ClusterIP".into(),
        ports: Vec::new(),
    })
}

fn node(name: &str, ready: &str) -> Object {
    Object::Node(Node {
        name: name.into(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        ready: Some(ready.into()),
        provider_id: None,
        internal_ips: Vec::new(),
    })
}

fn pod(name: &str) -> Object {
    Object::Pod(Pod {
        namespace: "default".into(),
        name: name.into(),
        ..Pod::default()
    })
}

fn binding(name: &str) -> Object {
    Object::Binding(BindingResource {
        namespace: "default".into(),
        name: name.into(),
        generation: Some(1),
        annotations: BTreeMap::new(),
        spec: serde_json::json!({"serviceRef": {"name": "web", "port": 80}}),
    })
}

/// A view in which every kind was listed, with these objects.
fn listed(objects: Vec<Object>) -> WatchedView {
    let mut view = WatchedView::default();
    for kind in Kind::ALL {
        view.apply(kind, Signal::Relisting);
    }
    for object in objects {
        let kind = match &object {
            Object::Binding(_) => Kind::TargetGroupBinding,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
        };
        view.apply(kind, Signal::Listed(object));
    }
    for kind in Kind::ALL {
        view.apply(kind, Signal::ListDone);
    }
    view
}

fn slice_names(view: &WatchedView) -> Option<Vec<String>> {
    view.snapshot().map(|s| {
        s.endpoint_slices
            .iter()
            .map(|e| e.name.to_string())
            .collect()
    })
}

fn services(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("default/{n}")).collect()
}

#[test]
fn a_view_is_planned_from_only_once_every_kind_is_listed_completely() {
    let mut view = WatchedView::default();
    assert!(view.snapshot().is_none(), "nothing listed yet");
    for kind in Kind::ALL {
        view.apply(kind, Signal::Relisting);
    }
    view.apply(
        Kind::EndpointSlice,
        Signal::Listed(slice("a", Some("web"), &["10.0.0.1"])),
    );
    for kind in &Kind::ALL[..4] {
        view.apply(*kind, Signal::ListDone);
    }
    assert!(!view.is_complete(), "pods are still being listed");
    assert_eq!(view.unknown_kinds(), [Kind::Pod]);
    assert_eq!(
        view.apply(Kind::Pod, Signal::ListDone),
        Effect::Relisted(Kind::Pod)
    );
    assert_eq!(slice_names(&view), Some(vec!["a".to_string()]));
}

#[test]
fn a_partial_relist_is_never_read_as_deletions() {
    let mut view = listed(vec![
        slice("a", Some("web"), &["10.0.0.1"]),
        slice("b", Some("web"), &["10.0.0.2"]),
    ]);
    let lost = view.apply(
        Kind::EndpointSlice,
        Signal::Failed("connection refused".into()),
    );
    assert!(matches!(
        lost,
        Effect::Lost {
            kind: Kind::EndpointSlice,
            ..
        }
    ));
    assert_eq!(
        slice_names(&view),
        None,
        "a failed watch leaves nothing to plan from"
    );

    view.apply(Kind::EndpointSlice, Signal::Relisting);
    view.apply(
        Kind::EndpointSlice,
        Signal::Listed(slice("a", Some("web"), &["10.0.0.1"])),
    );
    assert_eq!(
        slice_names(&view),
        None,
        "half a list says nothing of slice b"
    );
    view.apply(Kind::EndpointSlice, Signal::ListDone);
    assert_eq!(
        slice_names(&view),
        Some(vec!["a".to_string()]),
        "only the complete list removes b"
    );
}

#[test]
fn each_signal_changes_the_view_as_the_watch_says() {
    // (case, signal on a view holding slice a, the effect, the slices after)
    let cases: Vec<(&str, Signal, Effect, Option<Vec<&str>>)> = vec![
        (
            "a new slice is added",
            Signal::Applied(slice("b", Some("web"), &["10.0.0.2"])),
            Effect::Changed {
                kind: Kind::EndpointSlice,
                key: "default/b".into(),
                before: None,
                after: Some(Box::new(slice("b", Some("web"), &["10.0.0.2"]))),
            },
            Some(vec!["a", "b"]),
        ),
        (
            "a changed slice replaces the old one",
            Signal::Applied(slice("a", Some("web"), &["10.0.0.9"])),
            Effect::Changed {
                kind: Kind::EndpointSlice,
                key: "default/a".into(),
                before: Some(Box::new(slice("a", Some("web"), &["10.0.0.1"]))),
                after: Some(Box::new(slice("a", Some("web"), &["10.0.0.9"]))),
            },
            Some(vec!["a"]),
        ),
        (
            "an update that changes nothing we read is no change",
            Signal::Applied(slice("a", Some("web"), &["10.0.0.1"])),
            Effect::None,
            Some(vec!["a"]),
        ),
        (
            "a deleted slice goes",
            Signal::Deleted(slice("a", Some("web"), &["10.0.0.1"])),
            Effect::Changed {
                kind: Kind::EndpointSlice,
                key: "default/a".into(),
                before: Some(Box::new(slice("a", Some("web"), &["10.0.0.1"]))),
                after: None,
            },
            Some(vec![]),
        ),
        (
            "deleting what the view does not hold changes nothing",
            Signal::Deleted(slice("z", Some("web"), &[])),
            Effect::None,
            Some(vec!["a"]),
        ),
        (
            "a list item outside a list is ignored",
            Signal::Listed(slice("c", Some("web"), &[])),
            Effect::None,
            Some(vec!["a"]),
        ),
        (
            "a list end without a list begun changes nothing",
            Signal::ListDone,
            Effect::None,
            Some(vec!["a"]),
        ),
    ];
    for (case, signal, effect, after) in cases {
        let mut view = listed(vec![slice("a", Some("web"), &["10.0.0.1"])]);
        assert_eq!(view.apply(Kind::EndpointSlice, signal), effect, "{case}");
        let after = after.map(|names| names.into_iter().map(str::to_string).collect());
        assert_eq!(slice_names(&view), after, "{case}");
    }
}

#[test]
fn changes_to_a_kind_that_is_not_known_are_left_to_its_next_list() {
    let mut view = listed(vec![]);
    view.apply(Kind::Node, Signal::Failed("timeout".into()));
    assert_eq!(
        view.apply(Kind::Node, Signal::Applied(node("n1", "True"))),
        Effect::None
    );
    assert!(
        view.snapshot().is_none(),
        "the kind stays unknown until listed"
    );
}

#[test]
fn a_cluster_without_the_crd_is_known_to_declare_no_resource_binding() {
    let mut view = listed(vec![]);
    assert_eq!(view.snapshot().map(|s| s.binding_crd_installed), Some(true));
    assert_eq!(
        view.apply(Kind::TargetGroupBinding, Signal::Absent),
        Effect::Relisted(Kind::TargetGroupBinding)
    );
    assert_eq!(
        view.apply(Kind::TargetGroupBinding, Signal::Absent),
        Effect::None,
        "still absent is no news"
    );
    let snapshot = view.snapshot().expect("complete");
    assert!(!snapshot.binding_crd_installed);
    assert!(snapshot.binding_resources.is_empty());
}

#[test]
fn each_change_affects_only_what_it_can() {
    let changed = |kind, before: Option<Object>, after: Option<Object>| Effect::Changed {
        kind,
        key: "k".into(),
        before: before.map(Box::new),
        after: after.map(Box::new),
    };
    // (case, effect, what it affects)
    let cases: Vec<(&str, Effect, Affected)> = vec![
        (
            "a slice's endpoints change: its Service's bindings",
            changed(
                Kind::EndpointSlice,
                Some(slice("a", Some("web"), &["10.0.0.1"])),
                Some(slice("a", Some("web"), &["10.0.0.2"])),
            ),
            Affected::Services(services(&["web"])),
        ),
        (
            "a slice relabelled to another Service: both Services",
            changed(
                Kind::EndpointSlice,
                Some(slice("a", Some("web"), &[])),
                Some(slice("a", Some("api"), &[])),
            ),
            Affected::Services(services(&["web", "api"])),
        ),
        (
            "a slice of no Service: nothing",
            changed(Kind::EndpointSlice, None, Some(slice("a", None, &[]))),
            Affected::Nothing,
        ),
        (
            "a Service deleted: its bindings",
            changed(Kind::Service, Some(service("web")), None),
            Affected::Services(services(&["web"])),
        ),
        (
            "a node turns NotReady: everything, rules included",
            changed(
                Kind::Node,
                Some(node("n1", "True")),
                Some(node("n1", "False")),
            ),
            Affected::Everything,
        ),
        (
            "a binding created: everything",
            changed(Kind::TargetGroupBinding, None, Some(binding("web"))),
            Affected::Everything,
        ),
        (
            "a pod alone: nothing (its slice tells the targets)",
            changed(Kind::Pod, None, Some(pod("web-1"))),
            Affected::Nothing,
        ),
        (
            "a kind listed again: everything",
            Effect::Relisted(Kind::Pod),
            Affected::Everything,
        ),
        (
            "a watch lost: everything, once the view is whole again",
            Effect::Lost {
                kind: Kind::Node,
                error: "timeout".into(),
            },
            Affected::Everything,
        ),
        ("no effect: nothing", Effect::None, Affected::Nothing),
    ];
    for (case, effect, expected) in cases {
        assert_eq!(
            affected(&effect, &WatchedView::default()),
            expected,
            "{case}"
        );
    }
}

#[test]
fn a_change_is_named_by_its_kind_object_and_what_happened() {
    let cases = [
        (
            Effect::Changed {
                kind: Kind::EndpointSlice,
                key: "default/web-x".into(),
                before: None,
                after: Some(Box::new(slice("web-x", Some("web"), &[]))),
            },
            Some("EndpointSlice default/web-x added"),
        ),
        (
            Effect::Changed {
                kind: Kind::Node,
                key: "n1".into(),
                before: Some(Box::new(node("n1", "True"))),
                after: None,
            },
            Some("Node n1 deleted"),
        ),
        (Effect::Relisted(Kind::Pod), Some("Pod listed")),
        (Effect::None, None),
    ];
    for (effect, expected) in cases {
        assert_eq!(describe(&effect).as_deref(), expected);
    }
}

#[test]
fn changes_arriving_together_run_once_and_soon() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let web = || Affected::Services(services(&["web"]));
    let api = || Affected::Services(services(&["api"]));
    // (case, changes at ms offsets, when the run is due, its scope)
    type Case = (
        &'static str,
        Vec<(u64, Affected)>,
        Option<Instant>,
        Option<Scope>,
    );
    let cases: Vec<Case> = vec![
        ("nothing pending: no run", vec![], None, None),
        (
            "a lone change waits a quiet spell",
            vec![(0, web())],
            Some(t0 + QUIET),
            Some(Scope::Services(services(&["web"]))),
        ),
        (
            "changes in a burst run together, after the last",
            vec![(0, web()), (30, api())],
            Some(ms(30) + QUIET),
            Some(Scope::Services(services(&["web", "api"]))),
        ),
        (
            "a steady stream still runs within the longest delay",
            (0..10).map(|i| (i * 40, web())).collect(),
            Some(t0 + MAX_DELAY),
            Some(Scope::Services(services(&["web"]))),
        ),
        (
            "one change that affects everything makes it a sweep",
            vec![(0, web()), (10, Affected::Everything)],
            Some(ms(10) + QUIET),
            Some(Scope::Cluster),
        ),
        (
            "changes that affect nothing are not pending",
            vec![(0, Affected::Nothing)],
            None,
            None,
        ),
    ];
    for (case, changes, due_at, scope) in cases {
        let mut pending = Pending::default();
        for (at, change) in changes {
            pending.add(change, Some(format!("change at {at}")), ms(at));
        }
        assert_eq!(pending.due_at(), due_at, "{case}");
        if let Some(due_at) = due_at {
            assert!(
                pending
                    .take_due(due_at - Duration::from_millis(1))
                    .is_none(),
                "{case}: not before it is due"
            );
        }
        let due = due_at.and_then(|at| pending.take_due(at));
        assert_eq!(due.as_ref().map(|d| d.scope.clone()), scope, "{case}");
        if let Some(due) = due {
            assert_eq!(due.since, t0, "{case}: counted from the first change");
            assert_eq!(pending.due_at(), None, "{case}: taken");
        }
    }
}

#[test]
fn a_runs_causes_are_kept_in_order_and_the_rest_counted() {
    let t0 = Instant::now();
    let mut pending = Pending::default();
    for i in 0..25 {
        pending.add(
            Affected::Everything,
            Some(format!("Pod default/p{i} modified")),
            t0,
        );
    }
    let due = pending.take_due(t0 + MAX_DELAY).expect("due");
    assert_eq!(due.causes.len(), 21);
    assert_eq!(due.causes[0], "Pod default/p0 modified");
    assert_eq!(due.causes[20], "and 5 more");
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn a_waiting_service_is_rechecked_soon_then_less_often_while_nothing_moves() {
    let t0 = Instant::now();
    let web = || Scope::Services(services(&["web"]));
    let found = |moved: bool| Some(Waiting::from([("default/web".to_string(), moved)]));
    let mut rechecks = GateRechecks::default();
    assert_eq!(rechecks.next_at(), None, "nothing waits yet");
    // (case, what the run over `web` found at `t0 + secs`, when the next recheck is due)
    let steps: Vec<(&str, u64, Option<Waiting>, Option<Instant>)> = vec![
        (
            "a new waiting service: soon",
            0,
            found(false),
            Some(t0 + FIRST_RECHECK),
        ),
        (
            "nothing moved: twice the wait",
            2,
            found(false),
            Some(at(t0, 2) + FIRST_RECHECK * 2),
        ),
        (
            "nothing moved again: twice again",
            6,
            found(false),
            Some(at(t0, 6) + FIRST_RECHECK * 4),
        ),
        (
            "nothing moved still: at most the longest wait",
            14,
            found(false),
            Some(at(t0, 14) + MAX_RECHECK),
        ),
        (
            "and no longer",
            24,
            found(false),
            Some(at(t0, 24) + MAX_RECHECK),
        ),
        (
            "the run said nothing: backed off, still waiting",
            34,
            None,
            Some(at(t0, 34) + MAX_RECHECK),
        ),
        (
            "a gate moved: soon again",
            44,
            found(true),
            Some(at(t0, 44) + FIRST_RECHECK),
        ),
        (
            "after a move, nothing moved: twice the first wait",
            46,
            found(false),
            Some(at(t0, 46) + FIRST_RECHECK * 2),
        ),
        ("every gate settled: done", 50, Some(Waiting::new()), None),
    ];
    for (case, secs, found, next) in steps {
        rechecks.after_run(&web(), found, true, at(t0, secs));
        assert_eq!(rechecks.next_at(), next, "{case}");
    }
    assert_eq!(
        MAX_RECHECK,
        Duration::from_secs(10),
        "the table's arithmetic"
    );
    assert_eq!(
        FIRST_RECHECK,
        Duration::from_secs(2),
        "the table's arithmetic"
    );
}

#[test]
fn a_run_caused_by_a_change_leaves_the_pace_of_rechecks_as_it_was() {
    let t0 = Instant::now();
    let mut rechecks = GateRechecks::default();
    let web = || Scope::Services(services(&["web"]));
    let web_waits = |moved| Some(Waiting::from([("default/web".to_string(), moved)]));
    rechecks.after_run(&web(), web_waits(false), true, t0);
    rechecks.after_run(&web(), web_waits(false), true, at(t0, 2));
    let paced = rechecks.next_at();
    assert_eq!(
        paced,
        Some(at(t0, 2) + FIRST_RECHECK * 2),
        "backed off once"
    );
    // A change of the cluster ran the Service meanwhile (our own patch's event, say).
    rechecks.after_run(&web(), web_waits(false), false, at(t0, 3));
    assert_eq!(
        rechecks.next_at(),
        paced,
        "not backed off by a run it did not cause"
    );
    rechecks.after_run(&web(), None, false, at(t0, 4));
    assert_eq!(
        rechecks.next_at(),
        paced,
        "nor by a change's run that said nothing"
    );
    rechecks.after_run(&web(), web_waits(true), false, at(t0, 5));
    assert_eq!(
        rechecks.next_at(),
        Some(at(t0, 5) + FIRST_RECHECK),
        "a gate set by any run brings the next recheck soon"
    );
}

#[test]
fn gates_planned_but_not_set_are_not_counted_as_moved() {
    let id = BindingId::resource("default", "web");
    let mut part = BindingPlan::new(id.clone(), Presence::Declared { generation: None });
    part.gates.push(GateChange {
        binding: id.clone(),
        pod: "default/web-1".into(),
        condition_type: "target-health.elbv2.k8s.aws/web".into(),
        target: Target::new("10.0.0.1", 80),
        condition: GateCondition {
            status: "False".into(),
            reason: Some("Elb.InitialHealthChecking".into()),
            message: None,
        },
        previous: None,
    });
    part.gates_waiting = Some(GatesWaiting {
        service: "default/web".into(),
        pods: 1,
    });
    let mut plan = Plan::empty("prod");
    plan.bindings = [(id, part)].into();
    let standing_still = Some(Waiting::from([("default/web".to_string(), false)]));
    // (case, the run's report)
    let cases = [
        (
            "the identity may not patch pods/status",
            Some(Report {
                gates_forbidden: Some("pods \"web-1\" is forbidden".into()),
                ..Report::default()
            }),
        ),
        ("a dry run: nothing applied", None),
    ];
    for (case, report) in cases {
        let outcome = ClusterOutcome::new(&Scope::Cluster, plan.clone(), report);
        assert_eq!(waiting(&[outcome]), standing_still, "{case}");
    }
}

#[test]
fn a_run_drops_only_the_waiting_services_it_covered() {
    let t0 = Instant::now();
    let both = || {
        let mut rechecks = GateRechecks::default();
        rechecks.after_run(
            &Scope::Services(services(&["web", "api"])),
            Some(Waiting::from([
                ("default/web".to_string(), false),
                ("default/api".to_string(), false),
            ])),
            true,
            t0,
        );
        rechecks
    };
    // (case, the run's scope, what it found waiting, the services still rechecked)
    let cases: Vec<(&str, Scope, Waiting, Vec<&str>)> = vec![
        (
            "a run over web that finds it settled: api stays",
            Scope::Services(services(&["web"])),
            Waiting::new(),
            vec!["api"],
        ),
        (
            "a run over another Service: both stay",
            Scope::Services(services(&["shop"])),
            Waiting::new(),
            vec!["api", "web"],
        ),
        (
            "a sweep that finds web waiting: api is done",
            Scope::Cluster,
            Waiting::from([("default/web".to_string(), false)]),
            vec!["web"],
        ),
        (
            "a sweep that finds nothing waiting: all done",
            Scope::Cluster,
            Waiting::new(),
            vec![],
        ),
        (
            "a run over one target group says nothing of the others: both stay",
            Scope::TargetGroup(TG.into()),
            Waiting::new(),
            vec!["api", "web"],
        ),
    ];
    for (case, scope, found, expected) in cases {
        let mut rechecks = both();
        rechecks.after_run(&scope, Some(found), true, at(t0, 1));
        // Far enough ahead for every recheck to be due.
        let due = rechecks.take_due(at(t0, 60));
        assert_eq!(due, services(&expected), "{case}");
    }
}

#[test]
fn only_the_due_rechecks_are_taken_and_each_is_due_again_a_wait_later() {
    let t0 = Instant::now();
    let mut rechecks = GateRechecks::default();
    let waiting = |names: &[&str]| {
        Some(
            names
                .iter()
                .map(|n| (format!("default/{n}"), false))
                .collect::<Waiting>(),
        )
    };
    rechecks.after_run(&Scope::Cluster, waiting(&["web", "api"]), true, t0);
    // api, run again with nothing moved, backs off to twice the wait; web, outside that
    // run, keeps its time.
    rechecks.after_run(
        &Scope::Services(services(&["api"])),
        waiting(&["api"]),
        true,
        t0,
    );
    assert_eq!(rechecks.next_at(), Some(t0 + FIRST_RECHECK));
    assert_eq!(rechecks.take_due(t0), BTreeSet::new(), "nothing due yet");
    let first = t0 + FIRST_RECHECK;
    assert_eq!(rechecks.take_due(first), services(&["web"]));
    assert_eq!(
        rechecks.take_due(first),
        BTreeSet::new(),
        "taken once, not twice"
    );
    assert_eq!(
        rechecks.next_at(),
        Some(first + FIRST_RECHECK),
        "web due again a wait later, should its run say nothing; api due then too"
    );
    assert_eq!(
        rechecks.take_due(first + FIRST_RECHECK),
        services(&["web", "api"])
    );
}

#[test]
fn a_runs_outcome_tells_which_services_wait_and_whether_a_gate_of_theirs_moved() {
    let part = |name: &str, service: &str, moved: bool, waiting: bool| {
        let id = BindingId::resource("default", name);
        let mut part = BindingPlan::new(id.clone(), Presence::Declared { generation: None });
        if moved {
            part.gates.push(GateChange {
                binding: id,
                pod: "default/pod-1".into(),
                condition_type: format!("target-health.elbv2.k8s.aws/{name}"),
                target: Target::new("10.0.0.1", 80),
                condition: GateCondition {
                    status: "True".into(),
                    reason: None,
                    message: None,
                },
                previous: None,
            });
        }
        part.gates_waiting = waiting.then(|| GatesWaiting {
            service: format!("default/{service}"),
            pods: 1,
        });
        part
    };
    // An applied run: every gate it planned was set.
    let outcome = |parts: Vec<BindingPlan>| {
        let mut plan = Plan::empty("prod");
        plan.bindings = parts.into_iter().map(|p| (p.binding.clone(), p)).collect();
        let report = Report {
            gates_done: plan.gate_changes().cloned().collect(),
            ..Report::default()
        };
        ClusterOutcome::new(&Scope::Cluster, plan, Some(report))
    };
    let found = |entries: &[(&str, bool)]| {
        Some(
            entries
                .iter()
                .map(|(s, moved)| (format!("default/{s}"), *moved))
                .collect::<Waiting>(),
        )
    };
    let unreadable = ClusterOutcome::new(
        &Scope::Cluster,
        Plan::unreadable_cluster("prod", "no".into()),
        None,
    );
    let cases: Vec<(&str, Vec<ClusterOutcome>, Option<Waiting>)> = vec![
        ("no run: nothing said", vec![], None),
        (
            "a skipped run: nothing said",
            vec![ClusterOutcome::skipped(
                "prod",
                &Scope::Cluster,
                "another run holds the lease".into(),
            )],
            None,
        ),
        (
            "an unreadable cluster: nothing said",
            vec![unreadable],
            None,
        ),
        (
            "nothing waits",
            vec![outcome(vec![part("web", "web", false, false)])],
            found(&[]),
        ),
        (
            "a waiting binding whose gates stand still",
            vec![outcome(vec![part("web", "web", false, true)])],
            found(&[("web", false)]),
        ),
        (
            "a waiting binding with a gate set",
            vec![outcome(vec![part("web", "web", true, true)])],
            found(&[("web", true)]),
        ),
        (
            "two bindings of one Service: moved when either moved",
            vec![outcome(vec![
                part("web", "shared", false, true),
                part("web2", "shared", true, true),
                part("api", "api", false, true),
            ])],
            found(&[("shared", true), ("api", false)]),
        ),
        (
            "the last outcome is the run's",
            vec![
                outcome(vec![part("web", "web", true, true)]),
                outcome(vec![part("web", "web", false, true)]),
            ],
            found(&[("web", false)]),
        ),
    ];
    for (case, outcomes, expected) in cases {
        assert_eq!(waiting(&outcomes), expected, "{case}");
    }
}

#[test]
fn a_run_of_rechecks_alone_is_told_apart_from_one_with_a_change() {
    let t0 = Instant::now();
    let later = t0 + MAX_DELAY;
    // (case, a change before the recheck?, the recheck's services, rechecks only?)
    type Case = (
        &'static str,
        Option<Affected>,
        Vec<&'static str>,
        Option<bool>,
    );
    let cases: Vec<Case> = vec![
        ("a recheck alone", None, vec!["web"], Some(true)),
        (
            "a recheck and a change of another Service",
            Some(Affected::Services(services(&["api"]))),
            vec!["web"],
            Some(false),
        ),
        (
            "a recheck and a sweep",
            Some(Affected::Everything),
            vec!["web"],
            Some(false),
        ),
        (
            "a recheck and a change that affects nothing",
            Some(Affected::Nothing),
            vec!["web"],
            Some(true),
        ),
        (
            "a recheck of no Service: nothing pending",
            None,
            vec![],
            None,
        ),
    ];
    for (case, change, rechecked, rechecks_only) in cases {
        let mut pending = Pending::default();
        if let Some(change) = change {
            pending.add(change, Some("a change".into()), t0);
        }
        pending.add_recheck(services(&rechecked), t0);
        let due = pending.take_due(later);
        assert_eq!(
            due.as_ref().map(|d| d.rechecks_only),
            rechecks_only,
            "{case}"
        );
        assert_eq!(
            due.as_ref().map(|d| d.look()),
            rechecks_only.map(|only| if only { Look::First } else { Look::Skip }),
            "{case}: rechecks alone look first"
        );
        if rechecked.is_empty() {
            continue;
        }
        let due = due.expect(case);
        assert!(
            due.causes
                .contains(&"readiness gates waiting in default/web".to_string()),
            "{case}: {:?}",
            due.causes
        );
        // What is taken is gone: the next run starts afresh.
        pending.add_recheck(services(&["web"]), later);
        let next = pending.take_due(later + MAX_DELAY).expect(case);
        assert!(next.rechecks_only, "{case}: the next run");
    }
}

fn gated_pod(name: &str, containers_ready: bool, ports: &[i32]) -> Object {
    Object::Pod(Pod {
        namespace: "default".into(),
        name: name.into(),
        containers_ready,
        gates: vec![ReadinessGate {
            condition_type: "target-health.elbv2.k8s.aws/web".into(),
            condition: None,
        }],
        container_ports: ports
            .iter()
            .map(|port| ContainerPort {
                name: None,
                port: *port,
                protocol: "TCP".into(),
            })
            .collect(),
        ..Pod::default()
    })
}

/// A slice of `service` listing these pods (`default/<name>`).
fn slice_of_pods(name: &str, service: &str, pods: &[&str]) -> Object {
    let Object::EndpointSlice(mut slice) = slice(name, Some(service), &[]) else {
        unreachable!("a slice")
    };
    slice.endpoints = pods
        .iter()
        .map(|pod| Endpoint {
            addresses: vec!["10.0.0.1".into()],
            ready: Some(false),
            terminating: None,
            node_name: None,
            pod: Some(format!("default/{pod}").into()),
        })
        .collect();
    Object::EndpointSlice(slice)
}

#[test]
fn a_gated_pods_change_affects_the_services_whose_slices_list_it() {
    let with = |object: Object, f: &dyn Fn(&mut Pod)| match object {
        Object::Pod(mut pod) => {
            f(&mut pod);
            Object::Pod(pod)
        }
        other => other,
    };
    let gated = || gated_pod("web-1", false, &[8080]);
    // (case, the pod before, after, what it affects)
    let cases: Vec<(&str, Option<Object>, Option<Object>, Affected)> = vec![
        (
            "its containers turn ready",
            Some(gated()),
            Some(gated_pod("web-1", true, &[8080])),
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "it starts terminating",
            Some(gated()),
            Some(with(gated(), &|p| p.terminating = true)),
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "its gate's condition changes",
            Some(gated()),
            Some(with(gated(), &|p| {
                p.gates[0].condition = Some(GateCondition {
                    status: "True".into(),
                    reason: None,
                    message: None,
                })
            })),
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "it is created",
            None,
            Some(gated()),
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "it is deleted",
            Some(gated()),
            None,
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "it loses its gates",
            Some(gated()),
            Some(with(gated(), &|p| p.gates.clear())),
            Affected::Services(services(&["web", "canary"])),
        ),
        (
            "only its container ports change: nothing",
            Some(gated()),
            Some(gated_pod("web-1", false, &[9090])),
            Affected::Nothing,
        ),
        (
            "a pod without gates whose containers turn ready: nothing",
            Some(with(gated(), &|p| p.gates.clear())),
            Some(with(gated(), &|p| {
                p.gates.clear();
                p.containers_ready = true;
            })),
            Affected::Nothing,
        ),
        (
            "a gated pod no slice lists: nothing",
            Some(gated_pod("web-9", false, &[])),
            Some(gated_pod("web-9", true, &[])),
            Affected::Nothing,
        ),
    ];
    for (case, before, after, expected) in cases {
        let mut view = WatchedView::default();
        view.apply(Kind::EndpointSlice, Signal::Relisting);
        for slice in [
            slice_of_pods("web-a", "web", &["web-1", "web-2"]),
            slice_of_pods("web-b", "web", &["web-1"]),
            slice_of_pods("canary-a", "canary", &["web-1"]),
            slice_of_pods("api-a", "api", &["api-1"]),
        ] {
            view.apply(Kind::EndpointSlice, Signal::Listed(slice));
        }
        view.apply(Kind::EndpointSlice, Signal::ListDone);
        let key = match before.as_ref().or(after.as_ref()) {
            Some(object) => object.key(),
            None => unreachable!("a pod"),
        };
        let effect = Effect::Changed {
            kind: Kind::Pod,
            key,
            before: before.map(Box::new),
            after: after.map(Box::new),
        };
        assert_eq!(affected(&effect, &view), expected, "{case}");
    }
}

#[test]
fn a_view_names_the_services_whose_slices_list_a_pod() {
    let view = listed(vec![
        slice_of_pods("web-a", "web", &["web-1", "web-2"]),
        slice_of_pods("canary-a", "canary", &["web-2"]),
        slice_of_pods("orphan", "web", &["web-3"]),
    ]);
    assert_eq!(
        view.services_listing_pod("default/web-1"),
        services(&["web"])
    );
    assert_eq!(
        view.services_listing_pod("default/web-2"),
        services(&["canary", "web"])
    );
    assert_eq!(view.services_listing_pod("default/none"), BTreeSet::new());
    assert_eq!(
        WatchedView::default().services_listing_pod("default/web-1"),
        BTreeSet::new(),
        "slices not known: none"
    );
}
