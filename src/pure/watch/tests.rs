use super::affected::{Affected, affected, describe};
use super::pending::{MAX_DELAY, Pending, QUIET};
use super::view::{Effect, WatchedView};
use crate::model::cluster::{BindingResource, Endpoint, EndpointSlice, Node, Pod, Service};
use crate::model::watched::{Kind, Object, Signal};
use crate::pure::scope::Scope;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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
                addresses: vec![ip.to_string()],
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
